// Manifest media types and Accept negotiation.

export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

/** What we ask upstreams for: every modern type, most capable first. */
export const MANIFEST_TYPES: readonly string[] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/** Manifests above this size are refused (containerd refuses ~4 MiB; we allow some headroom). */
export const MAX_MANIFEST_BYTES = 8 << 20;

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

/** Reads the media type a manifest declares in its own body, if any. */
export function declaredMediaType(body: Buffer): string | undefined {
  try {
    const parsed: unknown = JSON.parse(body.toString('utf8'));
    if (parsed && typeof parsed === 'object' && 'mediaType' in parsed && typeof parsed.mediaType === 'string') {
      return parsed.mediaType;
    }
  } catch {
    return undefined;
  }
  return undefined;
}
