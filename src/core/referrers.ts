// The referrers of a manifest: the upstream's referrers index; when it has no referrers API, the
// index that pushing clients keep under the referrers tag schema instead (distribution-spec 1.1
// "Unavailable Referrers API": a client whose referrers request gets a 404 MUST fall back to that
// tag). The answer is parsed here, once, and held to an index's structure before it is passed on.
import type { Digest } from '../oci/digest.js';
import { isRegistryError, RegistryError } from '../oci/errors.js';
import { parseManifest, type Descriptor, type ParsedManifest } from '../oci/manifest.js';
import { OCI_INDEX } from '../oci/media-types.js';
import type { Repository } from '../upstreams/repository.js';
import type { Manifest } from '../upstreams/upstream.js';

/** A referrers answer: its bytes as the upstream sent them (or an empty index), and what they parse to. */
export interface Referrers {
  body: Buffer;
  index: ParsedManifest & { manifests: Descriptor[] };
}

const EMPTY_INDEX = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }));

/** The referrers of `digest`; an empty index when neither the API nor the tag has any. */
export async function referrers(repo: Repository, digest: Digest, artifactType: string | undefined, signal?: AbortSignal): Promise<Referrers> {
  const found = (await repo.referrers(digest, artifactType, { signal })) ?? (await referrersTag(repo, digest, signal));
  const body = found?.body ?? EMPTY_INDEX;
  return { body, index: referrersIndex(repo.upstream.name, body) };
}

/**
 * The image index at the referrers tag schema's tag, `<alg>-<ref>` with `<ref>` cut to 64
 * characters. Anything there but an image index means no referrers, as the spec says; failures
 * other than a 404 are the upstream's and go to the client.
 */
async function referrersTag(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<Manifest | undefined> {
  const tag = `${digest.algorithm}-${digest.hex.slice(0, 64)}`;
  try {
    const index = await repo.getManifest({ kind: 'tag', tag }, [OCI_INDEX], { signal });
    return index.mediaType === OCI_INDEX ? index : undefined;
  } catch (e) {
    if (isRegistryError(e) && e.status === 404) return undefined;
    throw e;
  }
}

/** The upstream's referrers answer as an index, or a 502: anything else is not passed on as one. */
function referrersIndex(upstream: string, body: Buffer): Referrers['index'] {
  let doc: ParsedManifest;
  try {
    // held to an index's structure (manifests, each a descriptor), which is all a client reads of it
    doc = parseManifest(body, 'application/json');
  } catch (e) {
    if (!(e instanceof RegistryError)) throw e;
    throw notAnIndex(upstream, (e.detail as { reason: string }).reason);
  }
  if (!doc.manifests) throw notAnIndex(upstream, 'manifests is missing');
  return doc as Referrers['index'];
}

function notAnIndex(upstream: string, reason: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', {
    status: 502,
    message: `upstream "${upstream}" sent a referrers answer that is not an image index: ${reason}`,
    detail: { upstream, reason },
  });
}
