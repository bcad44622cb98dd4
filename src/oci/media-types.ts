// Accept negotiation for manifests.
import { DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from './manifest.js';

// the manifest types and the bound live with the manifest parser; re-exported for existing importers
export { declaredMediaType, DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST } from './manifest.js';

/** What we ask upstreams for: every modern type, most capable first. */
export const MANIFEST_TYPES: readonly string[] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/** Parses an Accept header (possibly several, comma-joined) into bare media types. */
export function parseAccept(header: string | string[] | undefined): string[] {
  const raw = Array.isArray(header) ? header.join(',') : header ?? '';
  return raw
    .split(',')
    .map((s) => (s.split(';')[0] ?? '').trim().toLowerCase())
    .filter((s) => s.length > 0);
}

/** True when a client with this Accept list can take a manifest of this type. No Accept means any. */
export function accepts(accept: readonly string[], mediaType: string): boolean {
  if (accept.length === 0) return true;
  const [type] = mediaType.split('/');
  return accept.some((a) => a === mediaType || a === '*/*' || a === `${type}/*`);
}
