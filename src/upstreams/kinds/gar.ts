// Google Artifact Registry (<region>-docker.pkg.dev) and Container Registry (gcr.io and its
// regional hosts): a service-account key minted into access tokens for user oauth2accesstoken,
// or static credentials (_json_key), or anonymous.
import { ConfigError, text } from '../../lib/settings.js';
import { anonymous } from '../auth/credentials.js';
import { garCredentials, parseServiceAccountKey } from '../auth/gar-credentials.js';
import { basicOrAnonymous, genericKind, type Kind } from './kind.js';

const isGcrHost = (host: string): boolean => host === 'gcr.io' || host.endsWith('.gcr.io');

export const gar: Kind = {
  ...genericKind,
  type: 'gar',
  ownsHost: (host) => host.endsWith('-docker.pkg.dev') || isGcrHost(host),
  // kept as written ("" too): on an upstream of another kind, even an empty one is a mistake
  settings: { serviceAccountJson: text.optional() },
  resolveSettings(entry, _url, key) {
    // "" (an unset ${ENV} reference) is absent
    const json = (entry.serviceAccountJson as string | undefined) || undefined;
    if (json === undefined) return {};
    if (entry.username !== undefined) throw new ConfigError(`${key}.serviceAccountJson`, 'cannot be combined with username and password; use one');
    const parsed = parseServiceAccountKey(json);
    if (typeof parsed === 'string') throw new ConfigError(`${key}.serviceAccountJson`, parsed);
    return { serviceAccountJson: json };
  },
  adapter(u, deps) {
    const gcr = [new URL(u.url).hostname, u.name.replace(/:\d+$/, '')].some(isGcrHost);
    const roles = gcr
      ? 'the service account needs "Artifact Registry Reader" (roles/artifactregistry.reader) on the gcr.io repository, or, where Container Registry still serves it, "Storage Object Viewer" (roles/storage.objectViewer) on the artifacts bucket'
      : 'the service account needs the "Artifact Registry Reader" role (roles/artifactregistry.reader) on the repository or its project';
    if (u.serviceAccountJson !== undefined) {
      const credentials = garCredentials({
        upstreamName: u.name,
        serviceAccountJson: u.serviceAccountJson,
        ...(deps.now ? { now: deps.now } : {}),
        ...(deps.timeoutMs ? { timeoutMs: deps.timeoutMs } : {}),
      });
      return { credentials, deniedHint: roles };
    }
    const credentials = basicOrAnonymous(u, undefined);
    return {
      credentials,
      deniedHint: credentials === anonymous ? 'anonymous access only reaches public repositories; set serviceAccountJson for private ones' : roles,
    };
  },
};
