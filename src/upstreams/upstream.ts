// What the proxy needs from an upstream registry. One implementation (RegistryClient) speaks the
// distribution API over undici; the registry kinds (kinds/: Docker Hub, ECR, GAR, ghcr) configure it.
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { Reference } from '../oci/reference.js';

import type { ByteRange, RangeRequest } from '../oci/range.js';
import type { CredentialProvider } from './auth/credentials.js';

export interface ManifestHead {
  digest: string | undefined;
  mediaType: string | undefined;
  size: number | undefined;
}

export interface Manifest {
  digest: Digest;
  mediaType: string;
  body: Buffer;
}

export interface BlobResponse {
  /** Total size of the blob, when the upstream said. */
  size: number | undefined;
  /** The range the body holds, when the upstream answered a Range request with 206. */
  range: ByteRange | undefined;
  body: Readable;
}

export interface TagPage {
  name: string;
  tags: string[];
  /** the `last` value for the next page, when the upstream has more */
  next: { n: number | undefined; last: string } | undefined;
}

/** A registry's announced rate limit (Docker Hub's `ratelimit-limit` / `ratelimit-remaining`). */
export interface RateLimit {
  limit: number;
  remaining: number;
  windowSeconds: number;
  /** ms since the epoch when these figures were read */
  seenAt: number;
}

export interface CallOptions {
  signal?: AbortSignal | undefined;
  /**
   * A client's own credentials, instead of the configured ones (clientCredentials: passthrough;
   * the anonymous provider for a client that sent none). Refusals are then the client's:
   * UNAUTHORIZED for credentials refused or missing, DENIED for credentials without access.
   */
  credentials?: CredentialProvider | undefined;
}

export interface Upstream {
  readonly name: string;
  /** HEAD a manifest: the digest and type it currently has, without a metered GET. */
  headManifest(repo: string, ref: Reference, accept: readonly string[], o?: CallOptions): Promise<ManifestHead>;
  /** GET a manifest, bounded in size; verified against the digest when fetched by digest. */
  getManifest(repo: string, ref: Reference, accept: readonly string[], o?: CallOptions): Promise<Manifest>;
  /** The size of a blob, from a HEAD (never 0 for a blob that is not empty). */
  headBlob(repo: string, digest: Digest, o?: CallOptions): Promise<number | undefined>;
  /**
   * GET a blob (following redirects without our credentials), streamed. The answer is what was
   * asked and announced, or a 502: a 206 holds the range asked for (it may stop short at the
   * blob's end), and the body is exactly its announced length or errors. `size`, when the caller
   * knows the blob's, is checked against the upstream's figures too.
   */
  getBlob(repo: string, digest: Digest, o?: CallOptions & { range?: RangeRequest; size?: number | undefined }): Promise<BlobResponse>;
  tags(repo: string, page: { n?: number; last?: string }, o?: CallOptions): Promise<TagPage>;
  /** The referrers index, or undefined when the upstream has no referrers API. */
  referrers(repo: string, digest: Digest, artifactType: string | undefined, o?: CallOptions): Promise<Manifest | undefined>;
  /** False while the upstream has failed several requests in a row, recently. */
  healthy(): boolean;
  /** The last rate limit the upstream announced, if it does. */
  rateLimit(): RateLimit | undefined;
  close(): Promise<void>;
}

/**
 * Drops a response body we do not need, keeping the connection when the rest is small. Its error,
 * if any, is nobody's: without a listener a destroyed body's error would crash the process.
 */
export function discard(body: Readable): void {
  body.on('error', () => undefined);
  if ('dump' in body && typeof body.dump === 'function') (body.dump as () => Promise<void>)().catch(() => undefined);
  else body.destroy();
}
