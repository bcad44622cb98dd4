// The pull-through cache as a decorator over the local stores and an upstream: answer from cache
// when we can, fetch once when we cannot, and keep what we fetched only once it is verified.
import type { BlobStore, MetadataStore } from '../cache/blob-store.js';
import type { Digest } from '../oci/digest.js';
import type { RangeRequest } from '../oci/range.js';
import type { Reference } from '../oci/reference.js';
import type { Manifest, TagPage, Upstream } from '../upstreams/upstream.js';
import { BlobCache, type ServedBlob } from './blob-cache.js';
import { ManifestCache, type ServedManifest } from './manifest-cache.js';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface PullThroughOptions {
  store: BlobStore;
  meta: MetadataStore;
  tagTtlMs: number;
  revalidateTimeoutMs: number;
  fillOnRange: boolean;
  log: Logger;
  now?: () => number;
}

export class PullThrough {
  private readonly manifests: ManifestCache;
  private readonly blobs: BlobCache;

  constructor(opts: PullThroughOptions) {
    this.manifests = new ManifestCache(opts);
    this.blobs = new BlobCache(opts);
  }

  manifest(up: Upstream, repo: string, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    return this.manifests.get(up, repo, ref, accept, signal);
  }

  blob(up: Upstream, repo: string, digest: Digest, range: RangeRequest | undefined): Promise<ServedBlob> {
    return this.blobs.get(up, repo, digest, range);
  }

  blobSize(up: Upstream, repo: string, digest: Digest, signal?: AbortSignal): Promise<number | undefined> {
    return this.blobs.size(up, repo, digest, signal);
  }

  tags(up: Upstream, repo: string, page: { n?: number; last?: string }, signal?: AbortSignal): Promise<TagPage> {
    return up.tags(repo, page, { signal });
  }

  referrers(up: Upstream, repo: string, digest: Digest, artifactType: string | undefined, signal?: AbortSignal): Promise<Manifest | undefined> {
    return up.referrers(repo, digest, artifactType, { signal });
  }
}
