// Blobs through the cache: served from the store when present, else from the one fill of the
// blob in progress, which outlives the requests that started it. A Range is answered from the
// fill too, its last byte once the whole blob verified (a plain blob can only be verified whole).
// With unverifiedRanges, a Range far ahead of what a fill has written is answered by a ranged
// upstream request instead of waiting for the fill, and its bytes pass unverified.
import type { Readable, Writable } from 'node:stream';
import type { BlobStore } from '../cache/blob-store.js';
import { Fill } from '../cache/fill.js';
import { VerificationError, type Digest } from '../oci/digest.js';
import { coalesce, firstLast, rangeInvalid, satisfy, type ByteRange, type RangeRequest } from '../oci/range.js';
import { discard } from '../upstreams/upstream.js';
import type { Repository } from '../upstreams/repository.js';
import { RegistryError } from '../oci/errors.js';
import { diskError } from '../cache/disk-writes.js';
import { ensureAll, lazyRange, wholeFromSparse, type LazyLayer } from '../lazy/layer.js';
import type { LazyLayers } from '../lazy/layers.js';
import type { Logger } from '../lib/log.js';
import { SingleFlight } from '../lib/single-flight.js';
import type { Served } from './served.js';
import { FleetBlobSource } from '../fleet/blob-source.js';
import type { FleetBlobs } from '../fleet/fleet.js';
import { FollowerStore } from '../fleet/follower-store.js';

/** Resumes of a fleet fill: each may change where its bytes come from (a holder dying, a lease changing hands). */
const FLEET_RESUMES = 8;

/**
 * The upstream's bytes of a blob from `offset` on (a plain GET at 0). `announced`: the size the
 * fill was told, for the error when the upstream turns out to have fewer bytes.
 */
async function fromUpstream(repo: Repository, digest: Digest, offset: number, announced?: number): Promise<{ size: number | undefined; body: Readable }> {
  if (offset === 0) return repo.getBlob(digest);
  const part = await repo.getBlob(digest, { range: { start: offset, end: undefined } }).catch((e: unknown) => {
    // a 416 here means the upstream announced more bytes than it has: its fault, not the client's Range
    if (!(e instanceof RegistryError) || e.code !== 'RANGE_INVALID') throw e;
    throw new RegistryError('UNKNOWN', { status: 502, message: `upstream "${repo.upstream.name}" has fewer bytes than the ${announced ?? 'size'} it announced`, detail: { upstream: repo.upstream.name, offset, announced }, cause: e });
  });
  if (part.range?.start !== offset) {
    discard(part.body);
    throw new Error('upstream ignored the resume range');
  }
  return { size: part.size, body: part.body };
}

/** A range starting within this distance of a fill's progress waits for the fill. */
const NEAR_FILL_BYTES = 8 << 20;

export interface ServedBlob {
  size: number | undefined;
  /** the part of the blob the body holds, for a satisfiable Range */
  range: ByteRange | undefined;
  body: Readable;
  /** instead of `body`, when the store can send the bytes more cheaply (see BlobReader.pipeTo) */
  pipeTo?: ((sink: Writable) => Promise<void>) | undefined;
  served: Exclude<Served, 'stale'>;
}

/** A blob's size for a HEAD; undefined when the upstream did not say. */
export interface BlobHead {
  size: number | undefined;
  served: Exclude<Served, 'stale' | 'lazy'>;
}

export interface RangedParts {
  served: 'hit' | 'lazy';
  size: number;
  parts: { range: ByteRange; open(): Promise<Readable> }[];
  /** to call once the answer ended (or will not be sent) */
  release?: (() => void) | undefined;
}

export interface BlobCacheOptions {
  store: BlobStore;
  log: Logger;
  /** start a background fill when an uncached blob is first asked for by Range (with unverifiedRanges only) */
  fillOnRange: boolean;
  /** answer Ranges with bytes not yet verified: ranged upstream requests, a fill's bytes as they come */
  unverifiedRanges?: boolean | undefined;
  /** redirect GETs of cached blobs to pre-signed URLs valid this long (stores with presign only) */
  redirectTtlSeconds?: number | undefined;
  /** layers served lazily (eStargz); absent when lazy serving is off */
  lazy?: LazyLayers | undefined;
  /** replicas coordinating their fills (src/fleet); absent: this replica fills on its own */
  fleet?: FleetBlobs | undefined;
  now?: () => number;
}

export class BlobCache {
  /** fills in progress, by digest, until they settle (not just until they start) */
  private readonly fills = new SingleFlight<Fill>();
  /** the fills downloading now (until they settle), for inFlight() */
  private readonly running = new Set<Fill>();
  private readonly now: () => number;

  constructor(private readonly opts: BlobCacheOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** The fills downloading now, and the bytes they have written so far. */
  inFlight(): { fills: number; bytes: number } {
    let bytes = 0;
    for (const fill of this.running) bytes += fill.bytesWritten;
    return { fills: this.running.size, bytes };
  }

  /** HEAD of a blob: its size, from the cache, a fill or the upstream, without starting a fill. */
  async size(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<BlobHead> {
    const cached = await this.opts.store.stat(digest);
    if (cached) return { size: cached.size, served: 'hit' };
    const fill = this.fills.peek(digest.value);
    if (fill) return { size: (await fill).size, served: 'coalesced' };
    return { size: await repo.headBlob(digest, { signal }), served: 'miss' };
  }

  /** A pre-signed URL for a cached blob, in redirect mode; undefined otherwise or when it is not cached. */
  async redirect(digest: Digest): Promise<string | undefined> {
    const ttl = this.opts.redirectTtlSeconds;
    if (!ttl || !this.opts.store.presign) return undefined;
    return this.opts.store.presign(digest, ttl);
  }

  /**
   * Several ranges of a blob that is cached or served lazily (eStargz), for a multipart answer.
   * Undefined when the blob is neither: the caller answers with the whole blob instead.
   */
  async getRanges(repo: Repository, digest: Digest, ranges: readonly RangeRequest[]): Promise<RangedParts | undefined> {
    const cached = await this.opts.store.stat(digest);
    const lazy = cached ? undefined : await this.lazyLayer(repo, digest);
    const size = cached?.size ?? lazy?.index.blobSize;
    if (size === undefined) return undefined;
    const satisfiable = coalesce(ranges.flatMap((r) => {
      try {
        return [satisfy(r, size)];
      } catch {
        return [];
      }
    }));
    if (satisfiable.length === 0) throw rangeInvalid(size);
    const release = lazy?.hold(); // the sparse copy stays readable until the answer ends
    try {
      if (lazy) await ensureAll(lazy, satisfiable); // fetched and verified before any header is sent
    } catch (e) {
      release?.();
      throw e;
    }
    if (lazy) this.fillAfterLazyRead(repo, digest);
    const store = this.opts.store;
    const open = async (r: ByteRange): Promise<Readable> => {
      if (lazy) return lazyRange(lazy, r);
      const reader = await store.open(digest, r);
      if (!reader) throw new Error(`${digest.value} left the cache while being served`);
      return reader.stream;
    };
    return { served: lazy ? 'lazy' : 'hit', size, parts: satisfiable.map((range) => ({ range, open: () => open(range) })), release };
  }

  /** A blob or one range of it. A range that cannot be satisfied throws RANGE_INVALID. */
  async get(repo: Repository, digest: Digest, range: RangeRequest | undefined): Promise<ServedBlob> {
    const cached = await this.opts.store.stat(digest);
    if (cached) {
      const r = range && satisfy(range, cached.size);
      const reader = await this.opts.store.open(digest, r);
      if (reader) return { served: 'hit', size: reader.size, range: r, get body() { return reader.stream; }, pipeTo: reader.pipeTo };
      // evicted between stat and open: fetch it again
    }
    if (range) {
      const lazy = await this.lazyLayer(repo, digest);
      if (lazy) {
        const r = satisfy(range, lazy.index.blobSize);
        const body = await lazyRange(lazy, r);
        this.fillAfterLazyRead(repo, digest);
        return { served: 'lazy', size: lazy.index.blobSize, range: r, body };
      }
      const ranged = this.opts.unverifiedRanges ? await this.rangeOnMiss(repo, digest, range) : undefined;
      if (ranged) return ranged;
    }
    const joined = this.fills.peek(digest.value) !== undefined;
    const fill = await this.fill(repo, digest);
    const r = range && fill.size !== undefined ? satisfy(range, fill.size) : undefined;
    await this.firstByte(repo, fill, r?.start ?? 0);
    const unverified = this.opts.unverifiedRanges === true;
    const pipeTo = fill.size === undefined ? undefined : (sink: Writable) => fill.pipeTo(r, sink, unverified);
    return { served: joined ? 'coalesced' : 'miss', size: fill.size, range: r, get body() { return fill.reader(r, unverified); }, pipeTo };
  }

  /**
   * Waits until the fill has the byte at `pos` (or verified), so that a status goes out only once
   * there is a body to follow it: a fill that fails first is an error answer, not an empty reply.
   */
  private async firstByte(repo: Repository, fill: Fill, pos: number): Promise<void> {
    try {
      await fill.firstByte(pos);
    } catch (e) {
      if (e instanceof RegistryError || diskError(e)) throw e;
      const reason = (e as Error).message;
      throw new RegistryError('UNKNOWN', { status: 502, message: `the download of this blob from upstream "${repo.upstream.name}" failed`, detail: { upstream: repo.upstream.name, reason }, cause: e });
    }
  }

  /**
   * With unverifiedRanges, a Range on an uncached blob: from a fill when the fill is (nearly) there, else by a ranged
   * upstream request, starting a background fill when configured (fillOnRange). Without
   * fillOnRange a Range never starts a fill. Undefined: use the fill.
   */
  private async rangeOnMiss(repo: Repository, digest: Digest, range: RangeRequest): Promise<ServedBlob | undefined> {
    const running = this.fills.peek(digest.value);
    const fill = running && (await running.catch(() => undefined));
    if (fill && !fill.settled && fill.size !== undefined) {
      const r = satisfy(range, fill.size);
      if (r.start <= fill.bytesWritten + NEAR_FILL_BYTES) {
        await this.firstByte(repo, fill, r.start);
        return { served: 'coalesced', size: fill.size, range: r, body: fill.reader(r, true) };
      }
    } else if (!fill && this.opts.fillOnRange && 'start' in range && range.start < NEAR_FILL_BYTES) {
      return undefined; // the head of the blob: the fill we start now gets there first
    }
    const part = await repo.getBlob(digest, { range });
    if (!part.range) {
      discard(part.body); // the upstream ignored the Range: the fill will serve it
      return undefined;
    }
    if (!running && this.opts.fillOnRange) {
      this.fill(repo, digest).catch((e: Error) => this.opts.log.warn({ ...repo.where, digest: digest.value, err: e.message }, 'background fill failed to start'));
    }
    return { served: 'miss', size: part.size, range: part.range, body: part.body };
  }

  /** Joins the fill of this digest in progress, or starts one. */
  private fill(repo: Repository, digest: Digest): Promise<Fill> {
    return this.fills.run(digest.value, () => this.startFill(repo, digest), { holdUntil: (fill) => fill.done });
  }

  /**
   * The lazy view of an uncached layer, or undefined: cached (use the blob), not claimed lazy
   * (eStargz) by this upstream and repository, or not servable lazily under that claim (then the
   * blob is served plainly, like any other).
   */
  async lazyLayer(repo: Repository, digest: Digest): Promise<LazyLayer | undefined> {
    const lazy = this.opts.lazy;
    if (!lazy || (await this.opts.store.stat(digest))) return undefined;
    return lazy.layer(repo, digest);
  }

  /** With estargz.fillAfterRange: the rest of a lazily read layer is filled in the background (from its sparse copy). */
  private fillAfterLazyRead(repo: Repository, digest: Digest): void {
    if (!this.opts.lazy?.fillAfterRange || this.fills.peek(digest.value)) return;
    this.fill(repo, digest).catch((e: Error) => this.opts.log.warn({ ...repo.where, digest: digest.value, err: e.message }, 'background fill failed to start'));
  }

  /** Counts the fill in inFlight() until it settles. */
  private track(fill: Fill): Fill {
    this.running.add(fill);
    void fill.done.catch(() => undefined).finally(() => this.running.delete(fill));
    return fill;
  }

  private async startFill(repo: Repository, digest: Digest): Promise<Fill> {
    const started = await this.opts.lazy?.started(repo, digest);
    if (started) return this.fillFromSparse(repo, digest, started);
    if (this.opts.fleet) return this.fleetFill(repo, digest, this.opts.fleet);
    const res = await repo.getBlob(digest);
    const resume = (offset: number) => {
      this.opts.log.warn({ ...repo.where, digest: digest.value, offset }, 'upstream stream broke; resuming with a ranged request');
      return fromUpstream(repo, digest, offset, res.size).then((part) => part.body);
    };
    return this.logged(repo, digest, this.track(await Fill.start(this.opts.store, digest, { size: res.size, body: res.body, resume })));
  }

  /**
   * A fill in a fleet (src/fleet): from the upstream under this replica's lease, else from the
   * replica holding it (or the bucket, once the blob is there), resuming wherever the bytes went on.
   */
  private async fleetFill(repo: Repository, digest: Digest, f: FleetBlobs): Promise<Fill> {
    const where = { ...repo.where, digest: digest.value };
    const source = new FleetBlobSource({ ...f, digest, fromUpstream: (offset) => fromUpstream(repo, digest, offset), log: this.opts.log, where });
    let fill: Fill;
    try {
      const first = await source.open(0);
      // a fill that fetches from the upstream from its first byte streams into the bucket as ever; one fed by another replica must not
      const store = first.from === 'upstream' ? this.opts.store : new FollowerStore(this.opts.store, f.shared, f.local, () => source.mayStore());
      const resume = async (offset: number) => {
        const next = await source.open(offset);
        this.opts.log.warn({ ...where, offset, from: next.from }, 'fleet: the stream of this blob broke; resumed');
        return next.body;
      };
      if (first.from !== 'upstream') this.opts.log.info({ ...where, from: first.from }, 'fleet: filling from another replica');
      fill = this.track(await Fill.start(store, digest, { size: first.size, body: first.body, resume }, FLEET_RESUMES));
    } catch (e) {
      source.release();
      throw e;
    }
    void fill.done.catch(() => undefined).finally(() => source.release());
    return this.logged(repo, digest, fill);
  }

  /** Logs the fill's outcome once it settles. */
  private logged(repo: Repository, digest: Digest, fill: Fill): Fill {
    const t0 = this.now();
    fill.done.then(
      () => this.opts.log.info({ ...repo.where, digest: digest.value, bytes: fill.bytesWritten, resumes: fill.resumes, ms: this.now() - t0 }, 'blob cached'),
      (e: Error) => this.opts.log.warn({ ...repo.where, digest: digest.value, err: e.message }, 'blob fill failed; nothing cached'),
    );
    return fill;
  }

  /**
   * For the peer route (src/proxy/fleet-routes.ts): the blob from the fill of it running here, or
   * from the store; undefined when it is in neither. Never starts a fill. The bytes of a fill pass
   * as they come (all but the last, which waits for verification): the peer verifies them too.
   */
  async forPeer(digest: Digest, range: RangeRequest | undefined): Promise<ServedBlob | undefined> {
    const fill = await this.fills.peek(digest.value)?.catch(() => undefined);
    if (fill && !fill.error && fill.size !== undefined) {
      const r = range && satisfy(range, fill.size);
      return { served: 'coalesced', size: fill.size, range: r, body: fill.reader(r, true) };
    }
    const cached = await this.opts.store.stat(digest);
    if (!cached) return undefined;
    const r = range && satisfy(range, cached.size);
    const reader = await this.opts.store.open(digest, r);
    return reader && { served: 'hit', size: cached.size, range: r, body: reader.stream };
  }

  /** A full GET of a lazily touched layer: what the sparse copy holds plus the missing ranges, verified whole. */
  private async fillFromSparse(repo: Repository, digest: Digest, layer: LazyLayer): Promise<Fill> {
    const openGap = async (gap: ByteRange) => {
      const part = await repo.getBlob(digest, { range: gap });
      if (part.range?.start !== gap.start || part.range.end !== gap.end) {
        discard(part.body);
        throw new Error(`upstream did not answer the range ${firstLast(gap)}`);
      }
      return part.body;
    };
    // held while the fill reads the sparse copy: an eviction for the index budget meanwhile must not close it under the fill
    const release = layer.hold();
    let fill: Fill;
    try {
      fill = this.track(await Fill.start(this.opts.store, digest, { size: layer.index.blobSize, body: wholeFromSparse(layer, openGap) }));
    } catch (e) {
      release();
      throw e;
    }
    void fill.done.catch(() => undefined).finally(release);
    fill.done.then(
      () => {
        this.opts.log.info({ ...repo.where, digest: digest.value, fromSparse: layer.sparse.cachedBytes }, 'lazy layer cached whole');
        void this.opts.lazy?.forget(digest);
      },
      (e: Error) => {
        this.opts.log.warn({ ...repo.where, digest: digest.value, err: e.message }, 'lazy layer fill failed; nothing cached');
        if (e instanceof VerificationError) void this.opts.lazy?.discard(digest); // the next fill starts afresh
      },
    );
    return fill;
  }
}
