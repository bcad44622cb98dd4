// GitHub's container registry: anonymous for public packages, or a token (any username) with
// read:packages.
import { anonymous } from '../auth/credentials.js';
import { basicOrAnonymous, genericKind, type Kind } from './kind.js';

export const ghcr: Kind = {
  ...genericKind,
  type: 'ghcr',
  defaultUrl: 'https://ghcr.io',
  ownsHost: (host) => host === 'ghcr.io',
  // the username is not checked; a token is enough
  passwordAlone: true,
  adapter(u) {
    const credentials = basicOrAnonymous(u, 'token');
    return {
      credentials,
      deniedHint:
        credentials === anonymous
          ? 'anonymous access only reaches public packages; set password to a GitHub token with read:packages for private ones'
          : 'the GitHub token needs read:packages (a classic personal access token or an Actions GITHUB_TOKEN with access to the package), and SSO authorisation for organisations that enforce SSO',
    };
  },
};
