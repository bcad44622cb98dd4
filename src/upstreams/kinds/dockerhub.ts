// Docker Hub: its API lives on registry-1.docker.io, and docker.io and index.docker.io are names
// for it; bare repository names are in the implicit library/ namespace. An upstream named by one
// of those names is Docker Hub at any URL no other kind owns (an internal mirror of it).
import { anonymous } from '../auth/credentials.js';
import { basicOrAnonymous, genericKind, type Kind } from './kind.js';

const API_URL = 'https://registry-1.docker.io';
const HOSTS = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

export const dockerHub: Kind = {
  ...genericKind,
  type: 'dockerhub',
  defaultUrl: API_URL,
  ownsHost: (host) => HOSTS.includes(host),
  ownsName: (name) => HOSTS.includes(name.toLowerCase()),
  apiUrl: (url) => (url.hostname === 'docker.io' || url.hostname === 'index.docker.io' ? new URL(API_URL) : url),
  defaultName: () => 'docker.io',
  defaultAliases: (name) => HOSTS.filter((a) => a !== name),
  /**
   * A Docker Hub upstream configured without credentials (the built-in default, --upstream, or a
   * config entry) takes REGISTRY_USERNAME and REGISTRY_PASSWORD when both are set. No other kind does.
   */
  envCredentials: ({ REGISTRY_USERNAME: username, REGISTRY_PASSWORD: password }) => (username && password ? { username, password } : undefined),
  repositoryName: (path) => (path.includes('/') ? path : `library/${path}`),
  refusesHostPrefix: true,
  /** anonymous, or a username with an access token (dckr_pat_…) as the password */
  adapter(u) {
    const credentials = basicOrAnonymous(u, undefined);
    return {
      credentials,
      deniedHint:
        credentials === anonymous
          ? 'anonymous access only reaches public images; set username and password (a Docker Hub access token with read access) for private ones'
          : 'check the Docker Hub username and that the access token is valid and has read access to the repository',
    };
  },
};

