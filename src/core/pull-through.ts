// The pull-through cache as a decorator over the local stores and an upstream: answer from cache
// when we can, fetch once when we cannot, and keep what we fetched only once it is verified. For a
// client of a passthrough upstream (its own credentials on the Repository handle), each entry
// point first has the upstream confirm that the client may read what it asks for (client-access.ts).
// With auth (`confine`), content by digest is served through a repository only when that
// repository is known to hold it (repository-contents.ts).
import type { BlobStore, MetadataStore } from '../cache/blob-store.js';
import type { Digest } from '../oci/digest.js';
import type { RangeRequest } from '../oci/range.js';
import type { Reference } from '../oci/reference.js';
import type { Logger } from '../lib/log.js';
import type { Repository } from '../upstreams/repository.js';
import type { RateLimit, TagPage, Upstream } from '../upstreams/upstream.js';
import { BlobCache, type BlobHead, type RangedParts, type ServedBlob } from './blob-cache.js';
import type { FleetBlobs } from '../fleet/fleet.js';
import { SharedClaims } from '../fleet/shared-facts.js';
import { ClientAccess, type Item } from './client-access.js';
import { LayerFiles, type LayerFile } from './layer-files.js';
import { LazyLayers } from '../lazy/layers.js';
import type { LazyFormat } from '../lazy/format.js';
import { estargzFormat } from '../lazy/formats/estargz.js';
import { ManifestCache, type ServedManifest } from './manifest-cache.js';
import { referrers, type Referrers } from './referrers.js';
import { RepositoryContents } from './repository-contents.js';

export interface PullThroughOptions {
  store: BlobStore;
  meta: MetadataStore;
  tagTtlMs: number;
  revalidateTimeoutMs: number;
  fillOnRange: boolean;
  /** answer Ranges with bytes not yet verified (cache.unverifiedRanges) */
  unverifiedRanges?: boolean | undefined;
  /** answer GETs of cached blobs with a 307 to a pre-signed URL valid this long, when the store can make one */
  redirectTtlSeconds?: number | undefined;
  /** lazy serving of eStargz layers: where their sparse copies live; absent to turn it off */
  estargz?: { sparseDir: string; prefetch: boolean; fillAfterRange?: boolean; maxSparseBytes?: number; maxIndexBytes?: number; maxTocBytes?: number } | undefined;
  /** the lazy formats, for lazy serving and the file API (default: eStargz and zstd:chunked) */
  formats?: readonly LazyFormat[] | undefined;
  /**
   * With auth: a blob, or a manifest asked for by digest, is served through a repository only when
   * that repository is known to hold it (repository-contents.ts). Off: any cached content is
   * served through any repository.
   */
  confine?: boolean | undefined;
  /** replicas sharing the bucket that fetch each blob, manifest and tag revalidation once between them (src/fleet) */
  fleet?: FleetBlobs | undefined;
  /** an upstream's rate limit as the fleet knows it (default: as this replica last saw it) */
  rateLimit?: ((up: Upstream) => RateLimit | undefined) | undefined;
  log: Logger;
  now?: () => number;
}

export interface Activity {
  /** blob downloads into the cache running now */
  fillsInFlight: number;
  /** the bytes those have received so far */
  fillBytesInFlight: number;
  /** bytes of lazy layers fetched from upstreams since start-up */
  lazyBytesFetched: number;
  /** bytes of lazy layers served to clients' ranges since start-up */
  lazyBytesServed: number;
}

export class PullThrough {
  private readonly manifests: ManifestCache;
  private readonly blobs: BlobCache;
  private readonly files: LayerFiles;
  private readonly lazy: LazyLayers | undefined;
  private readonly access: ClientAccess;
  private readonly contents: RepositoryContents | undefined;

  constructor(opts: PullThroughOptions) {
    this.access = new ClientAccess({ now: opts.now });
    const e = opts.estargz;
    const formats = opts.formats ?? [estargzFormat];
    const fleet = opts.fleet?.fleet;
    const shared = fleet && new SharedClaims(fleet);
    const lazy = e && new LazyLayers({ formats, dir: e.sparseDir, prefetch: e.prefetch, fillAfterRange: e.fillAfterRange ?? false, maxBytes: e.maxSparseBytes, maxIndexBytes: e.maxIndexBytes, maxTocBytes: e.maxTocBytes, shared, log: opts.log });
    this.lazy = lazy;
    this.manifests = new ManifestCache({ ...opts, fleet, onManifest: lazy && ((manifest, repo) => lazy.learn(manifest, repo)) });
    this.blobs = new BlobCache({ ...opts, lazy });
    this.files = new LayerFiles({ store: opts.store, blobs: this.blobs, manifests: this.manifests, formats });
    this.contents = opts.confine ? new RepositoryContents({ meta: opts.meta, log: opts.log }) : undefined;
  }

  async close(): Promise<void> {
    await this.lazy?.close();
    await this.contents?.close();
  }

  /** Resolves once `repo`'s client may be served `item` (see client-access.ts and repository-contents.ts). */
  private async confirm(repo: Repository, item: Item, signal?: AbortSignal): Promise<void> {
    await this.access.confirm(repo, item, signal);
    if (item.kind === 'blob') await this.contents?.ensure(repo, item.digest, 'blob', signal);
    // a tag is the upstream's answer for this repository; a digest may be anyone's
    else if (item.ref.kind === 'digest') await this.contents?.ensure(repo, item.ref.digest, 'manifest', signal);
  }

  /** What the cache is doing now and has done since start-up, for the metrics read at a scrape. */
  activity(): Activity {
    const fills = this.blobs.inFlight();
    const lazy = this.lazy?.bytes ?? { fetched: 0, served: 0 };
    return { fillsInFlight: fills.fills, fillBytesInFlight: fills.bytes, lazyBytesFetched: lazy.fetched, lazyBytesServed: lazy.served };
  }

  /** The TOC JSON of an eStargz layer (the index document of a lazy format). */
  async layerToc(repo: Repository, digest: Digest): Promise<Buffer> {
    await this.confirm(repo, { kind: 'blob', digest });
    return this.files.toc(repo, digest);
  }

  /** One file of one layer. */
  async layerFile(repo: Repository, digest: Digest, path: string): Promise<LayerFile> {
    await this.confirm(repo, { kind: 'blob', digest });
    return this.files.layerFile(repo, digest, path);
  }

  /**
   * One file of an image's root filesystem (platform "os/arch[/variant]" for an index). The image
   * confirmed, what it references is too (the platform's manifest and its layers).
   */
  async imageFile(repo: Repository, ref: Reference, path: string, platform: string): Promise<LayerFile> {
    await this.confirm(repo, { kind: 'manifest', ref });
    return this.files.imageFile(repo, ref, path, platform);
  }

  async manifest(repo: Repository, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    await this.confirm(repo, { kind: 'manifest', ref }, signal);
    const served = await this.manifests.get(repo, ref, accept, signal);
    this.access.vouch(repo, served.digest, served.manifest);
    this.contents?.learnManifest(repo, served.digest, served.manifest);
    return served;
  }

  async blob(repo: Repository, digest: Digest, range: RangeRequest | undefined): Promise<ServedBlob> {
    await this.confirm(repo, { kind: 'blob', digest });
    return this.blobs.get(repo, digest, range);
  }

  /** Several ranges of a cached or lazily served blob; undefined: answer with the whole blob. */
  async blobRanges(repo: Repository, digest: Digest, ranges: readonly RangeRequest[]): Promise<RangedParts | undefined> {
    await this.confirm(repo, { kind: 'blob', digest });
    return this.blobs.getRanges(repo, digest, ranges);
  }

  /** A blob for another replica of the fleet (the peer route): from the fill running here, or the store; never fetched for it. */
  peerBlob(digest: Digest, range: RangeRequest | undefined): Promise<ServedBlob | undefined> {
    return this.blobs.forPeer(digest, range);
  }

  /** Where a client can GET a cached blob directly (redirect mode), or undefined: serve it here. */
  async blobRedirect(repo: Repository, digest: Digest): Promise<string | undefined> {
    await this.confirm(repo, { kind: 'blob', digest });
    return this.blobs.redirect(digest);
  }

  async blobSize(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<BlobHead> {
    await this.confirm(repo, { kind: 'blob', digest }, signal);
    return this.blobs.size(repo, digest, signal);
  }

  tags(repo: Repository, page: { n?: number; last?: string }, signal?: AbortSignal): Promise<TagPage> {
    return repo.tags(page, { signal });
  }

  /** The referrers of a manifest, parsed (see referrers.ts); the upstream says the repository holds them. */
  async referrers(repo: Repository, digest: Digest, artifactType: string | undefined, signal?: AbortSignal): Promise<Referrers> {
    const found = await referrers(repo, digest, artifactType, signal);
    this.contents?.learn(repo, found.index.manifests.map((m) => m.digest));
    return found;
  }
}
