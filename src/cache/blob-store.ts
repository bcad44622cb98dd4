// Where verified content lives. A blob store only ever holds bytes that hashed to their digest:
// content arrives as a finished, verified local file (see Fill) and is published atomically, or,
// for stores with a streaming writer, as bytes fed while the fill runs that become visible under
// the digest only once the fill verified them.
import { createHash } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';

export interface BlobInfo {
  digest: string;
  size: number;
}

export interface StoreUsage {
  bytes: number;
  entries: number;
  /** blobs removed to stay within the size bound, since start-up */
  evictions: number;
}

/** A cached blob opened for reading; the store keeps it from eviction until the stream closes. */
export interface BlobReader {
  size: number;
  stream: Readable;
  /** A cheaper way to send it, when the store has one (local files: reused buffers, no stream). */
  pipeTo?(sink: Writable): Promise<void>;
}

export interface BlobStore {
  /** Size of a cached blob, or undefined on a miss (a miss is normal, not an error). */
  stat(digest: Digest): Promise<BlobInfo | undefined>;
  /** Streams a cached blob (or a range of it); undefined when it is not cached. */
  open(digest: Digest, range?: ByteRange): Promise<BlobReader | undefined>;
  /**
   * Publishes a local file whose content has already been verified against `digest`. The file
   * is moved (or copied) into the store; the caller must not use it afterwards.
   */
  ingest(digest: Digest, file: string, size: number): Promise<void>;
  /**
   * Optional streaming writer, for stores that gain from receiving a fill's bytes as they arrive
   * (S3: a multipart upload that runs while clients are served). Undefined, or no method: the fill
   * ingests its spool file once verified. See BlobWriter for what a writer must guarantee.
   */
  create?(digest: Digest, size: number | undefined): BlobWriter | undefined;
  /**
   * Optional: a short-lived URL from which a client can GET the blob (or a Range of it) directly,
   * or undefined when the blob is not stored where such a URL can point.
   */
  presign?(digest: Digest, ttlSeconds: number): Promise<string | undefined>;
  /** Optional: a read of the blob served from a copy elsewhere (in memory), counted as a read for the store's LRU order and age bound. */
  touch?(digest: Digest): void;
  delete(digest: Digest): Promise<void>;
  /**
   * Optional: what a bounded store holds now and has evicted since start-up, for the metrics.
   * Undefined, or no method, for a store that cannot tell cheaply (an S3 bucket).
   */
  usage?(): StoreUsage | undefined;
  /** Every cached digest ("sha256:..."). */
  list(): AsyncIterable<string>;
  /** A directory for in-progress fills, on the same filesystem as the store when it has one. */
  readonly spoolDir: string;
}

/**
 * A blob being stored while its fill runs. The fill writes every byte to `sink` in order as it
 * arrives, before the digest is known to match, and ends `sink` only after the whole blob verified
 * (a failed fill destroys it instead). So a writer must never let anything appear under the digest
 * before `sink` ended normally, and never at all once it was destroyed or aborted.
 */
export interface BlobWriter {
  /** absent: the writer takes the blob only at commit (the fill's clients need not wait for that) */
  readonly sink?: Writable | undefined;
  /**
   * The fill verified; `file` holds the complete blob (`size` bytes), which the writer may move
   * (the fill removes whatever is left at that path afterwards). Resolves once the blob is stored;
   * rejects when it could not be (the fill's clients are unaffected: they have every byte).
   */
  commit(file: string, size: number): Promise<void>;
  /** The fill failed: discard what was written, leaving nothing under the digest. Idempotent; never rejects. */
  abort(reason: Error): Promise<void>;
}

/** Tag and manifest records: small JSON documents kept beside the blobs. */
export interface TagRecord {
  digest: string;
  mediaType: string;
  size: number;
  /** ms since the epoch when the upstream last confirmed (or gave) this digest */
  checkedAt: number;
}

export interface ManifestRecord {
  mediaType: string;
  size: number;
}

export interface MetadataStore {
  getTag(upstream: string, repo: string, tag: string): Promise<TagRecord | undefined>;
  putTag(upstream: string, repo: string, tag: string, record: TagRecord): Promise<void>;
  getManifest(digest: Digest): Promise<ManifestRecord | undefined>;
  putManifest(digest: Digest, record: ManifestRecord): Promise<void>;
  /** Whether the repository is recorded as holding the digest (see core/repository-contents.ts). */
  getHolding(upstream: string, repo: string, digest: string): Promise<boolean>;
  /** Records that the repository holds these digests ("sha256:..."); records are never removed. */
  putHoldings(upstream: string, repo: string, digests: readonly string[]): Promise<void>;
}

/** The name a tag record is kept under, in every metadata store: a hash, so any tag text makes a safe file or object name. */
export function tagRecordKey(upstream: string, repo: string, tag: string): string {
  return createHash('sha256').update(`${upstream}\0${repo}\0${tag}`).digest('hex');
}

/** The name a holding record is kept under, in every metadata store: a hash, like a tag record's. */
export function holdingRecordKey(upstream: string, repo: string, digest: string): string {
  return createHash('sha256').update(`holding\0${upstream}\0${repo}\0${digest}`).digest('hex');
}
