// Where verified content lives. A blob store only ever holds bytes that hashed to their digest:
// content arrives as a finished, verified local file (see Fill) and is published atomically.
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';

export interface BlobInfo {
  digest: string;
  size: number;
}

/** A cached blob opened for reading; the store keeps it from eviction until the stream closes. */
export interface BlobReader {
  size: number;
  stream: Readable;
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
  delete(digest: Digest): Promise<void>;
  /** Every cached digest ("sha256:..."). */
  list(): AsyncIterable<string>;
  /** A directory for in-progress fills, on the same filesystem as the store when it has one. */
  readonly spoolDir: string;
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
}
