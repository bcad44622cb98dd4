// One eStargz layer served lazily: its TOC, verified against the manifest's annotation, and a
// sparse copy of the compressed bytes. A Range fetches only the compressed ranges that cover it,
// widened to whole chunks, verifies every chunk against the TOC and keeps it in the sparse copy,
// so no byte is fetched twice. Only verified bytes are kept: the prologue (the tar headers before
// the first chunk, which no digest covers) passes through to the client that asked for it and is
// fetched again the next time. LazyLayers (lazy-layers.ts) decides which layers are lazy and owns
// their copies; every read goes through the upstream and repository of the request (a FetchSpan).
import { Readable } from 'node:stream';
import { SparseBlob } from '../cache/sparse-blob.js';
import { openEstargz, alignRange, prefetchRange, segments, segmentsFor, verifyRange, EstargzError, type EstargzIndex, type RangeSource } from '../estargz/index.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { firstLast, type ByteRange } from '../oci/range.js';
import { discard } from '../upstreams/upstream.js';
import type { Repository } from '../upstreams/repository.js';
import type { Logger } from '../lib/log.js';

/** Upstream ranges are fetched (and held in memory for verification) in pieces up to this size, one at a time per request. */
const MAX_FETCH_BYTES = 16 << 20;
/** The unverifiable prologue is held in memory while it passes through; a layer with a longer one is served plainly. */
const MAX_PROLOGUE_BYTES = 4 << 20;

/** What a manifest says about an eStargz layer. */
export interface LayerInfo {
  tocDigest: string;
  size: number;
}

/** Exactly the bytes [span.start, span.end) of the blob, from one upstream and repository. */
export type FetchSpan = (span: ByteRange, signal?: AbortSignal) => Promise<Buffer>;

/** One lazily served layer, as one request (upstream and repository) sees it. */
export interface LazyLayer {
  readonly digest: Digest;
  readonly index: EstargzIndex;
  readonly sparse: SparseBlob;
  /** Makes the verifiable segments of [start, end) (half-open) present, fetching and verifying what is missing. */
  ensure(start: number, end: number, signal?: AbortSignal): Promise<void>;
  /** [start, end) (half-open): ensured, with the prologue part fetched (unkept) before the stream is returned. */
  read(start: number, end: number, signal?: AbortSignal): Promise<Readable>;
  /** A RangeSource that reads through the sparse copy (for the file API, which reads only chunks). */
  source(): RangeSource;
  /** Keeps the sparse copy open (and its index counted), even if the layer is forgotten meanwhile, until the returned release is called. */
  hold(): () => void;
}

/** The upstream answered a ranged request with other bytes than asked for (or the whole blob). */
class RangeIgnored extends Error {}

/** What the upstream or the blob says contradicts the manifest's claim (size, TOC, footer, chunk digests). */
export class ClaimRefuted extends Error {}

/** Whether a failed open shows the claim wrong, or the blob absent there (served plainly, not tried again for a while), not just an upstream failing now. */
export function refutesClaim(e: unknown): boolean {
  return e instanceof EstargzError || e instanceof ClaimRefuted || e instanceof RangeIgnored || (e instanceof RegistryError && (e.status === 404 || e.status === 416));
}

/** Ranged reads of `digest` through one upstream and repository; the answer must be exactly the span, of a blob of `size` bytes. */
export function upstreamSpans(repo: Repository, digest: Digest, size: number): FetchSpan {
  return async (span, signal) => {
    const res = await repo.getBlob(digest, { range: span, signal });
    if (res.size !== undefined && res.size !== size) {
      discard(res.body);
      throw new ClaimRefuted(`the upstream has ${res.size} bytes of ${digest.value}, the manifest said ${size}`);
    }
    if (res.range?.start !== span.start || res.range.end !== span.end) {
      discard(res.body);
      throw new RangeIgnored(`upstream did not answer the range ${firstLast(span)} of ${digest.value}`);
    }
    const bytes = Buffer.concat(await res.body.toArray());
    if (bytes.length !== span.end - span.start) throw new RangeIgnored(`upstream sent ${bytes.length} bytes for the range ${firstLast(span)} of ${digest.value}`);
    return bytes;
  };
}

export interface OpenOptions {
  dir: string;
  /** the largest TOC JSON to open; a larger one refutes the claim (the layer is served plainly) */
  maxTocBytes: number;
  /** called once the TOC is verified, before any byte is kept: may refuse (throw) */
  verified(index: EstargzIndex): Promise<void>;
}

export class Layer {
  private readonly inflight: { span: ByteRange; done: Promise<void> }[] = [];
  private users = 0;
  private ending: 'close' | 'remove' | undefined;
  private ended: Promise<void> | undefined;

  private constructor(
    readonly digest: Digest,
    readonly claim: LayerInfo,
    readonly index: EstargzIndex,
    readonly sparse: SparseBlob,
    /** told after every read and fetch, for the budget */
    private readonly onUse: (layer: Layer) => void,
  ) {}

  /** Opens the layer through `fetch`: footer and TOC, checked against the claim. Throws when it cannot be served lazily. */
  static async open(fetch: FetchSpan, digest: Digest, claim: LayerInfo, opts: OpenOptions, onUse: (layer: Layer) => void): Promise<Layer> {
    const sparse = await SparseBlob.open(opts.dir, digest, claim.size);
    try {
      // the footer and TOC come through a recording source; they are kept once the TOC digest matched
      const seen: { start: number; bytes: Buffer }[] = [];
      const tail: RangeSource = {
        size: claim.size,
        read: async (offset, length, signal) => {
          const span = { start: offset, end: offset + length };
          const bytes = sparse.covers(span.start, span.end) ? await sparse.read(span.start, span.end) : await fetch(span, signal);
          seen.push({ start: offset, bytes });
          return bytes;
        },
      };
      const index = await openEstargz(tail, { expectedTocDigest: claim.tocDigest, maxTocBytes: opts.maxTocBytes });
      if (index.chunks.some((c) => c.digest === undefined)) throw new ClaimRefuted('the TOC has pieces without a chunk digest: nothing to verify them against');
      const prologue = segments(index)[0];
      if (prologue?.kind === 'prologue' && prologue.end > MAX_PROLOGUE_BYTES) throw new ClaimRefuted(`the layer's unverifiable prologue is ${prologue.end} bytes long`);
      await opts.verified(index);
      const layer = new Layer(digest, claim, index, sparse, onUse);
      await layer.keepTail(seen);
      onUse(layer);
      return layer;
    } catch (e) {
      // nothing of it was verified: no copy (and no open file) stays behind; an earlier run's verified spans do
      await (sparse.cachedBytes === 0 ? sparse.remove() : sparse.close());
      throw e;
    }
  }

  /** This layer as a request through `fetch` sees it; `pin` is called on hold and returns its unpin. */
  view(fetch: FetchSpan, pin: () => () => void): LazyLayer {
    const hold = (): (() => void) => {
      const unpin = pin();
      const release = this.hold();
      return () => {
        release();
        unpin();
      };
    };
    return {
      digest: this.digest,
      index: this.index,
      sparse: this.sparse,
      ensure: (start, end, signal) => this.ensure(fetch, start, end, signal),
      read: async (start, end, signal) => {
        const release = hold();
        try {
          const body = await this.read(fetch, start, end, signal);
          body.once('close', release);
          return body;
        } catch (e) {
          release();
          throw e;
        }
      },
      source: () => ({
        size: this.index.blobSize,
        read: async (offset, length, signal) => {
          await this.ensure(fetch, offset, offset + length, signal);
          return this.sparse.read(offset, offset + length);
        },
      }),
      hold,
    };
  }

  private hold(): () => void {
    this.users++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.users === 0 && this.ending) void this.end(this.ending);
    };
  }

  /**
   * Ends the layer once nobody reads it: 'close' keeps the sparse copy on disk (the layer is only
   * dropped from memory), 'remove' deletes it (the layer is cached whole, or the copy was bad).
   */
  end(mode: 'close' | 'remove'): Promise<void> {
    if (this.ending !== 'remove') this.ending = mode;
    if (this.users > 0) return Promise.resolve();
    return (this.ended ??= this.ending === 'remove' ? this.sparse.remove() : this.sparse.close());
  }

  async ensure(fetch: FetchSpan, start: number, end: number, signal?: AbortSignal): Promise<void> {
    if (end <= start) return;
    const aligned = alignRange(this.index, start, end);
    for (;;) {
      const overlapping = this.inflight.filter((f) => f.span.start < aligned.end && f.span.end > aligned.start);
      if (overlapping.length === 0) break;
      await Promise.allSettled(overlapping.map((f) => f.done));
    }
    // pieces go one after another (each is held in memory while it is verified), all registered at once
    let previous: Promise<void> = Promise.resolve();
    const jobs = this.sparse.missing(aligned.start, aligned.end).flatMap((g) => this.pieces(g)).map((span) => {
      const done = previous.then(() => this.fetchVerified(fetch, span, signal));
      previous = done;
      const entry = { span, done };
      this.inflight.push(entry);
      void done.catch(() => undefined).finally(() => this.inflight.splice(this.inflight.indexOf(entry), 1));
      return done;
    });
    await Promise.all(jobs);
    this.onUse(this);
  }

  /** [start, end): the verified part from the sparse copy, the prologue part fetched now and passed through, never kept. */
  private async read(fetch: FetchSpan, start: number, end: number, signal?: AbortSignal): Promise<Readable> {
    await this.ensure(fetch, start, end, signal);
    const first = segments(this.index)[0];
    const prologueEnd = first?.kind === 'prologue' ? first.end : 0;
    const head = start < prologueEnd ? await this.fetchChecked(fetch, { start, end: Math.min(end, prologueEnd) }, signal) : undefined;
    const sparse = this.sparse;
    const from = Math.max(start, prologueEnd);
    return Readable.from(
      (async function* () {
        if (head) yield head;
        if (from < end) yield* sparse.stream(from, end);
      })(),
      { objectMode: false },
    );
  }

  /** A gap (segment-aligned, since only whole segments are ever kept) cut into fetchable pieces on segment boundaries; the prologue is never fetched to be kept. */
  private pieces(gap: ByteRange): ByteRange[] {
    const out: ByteRange[] = [];
    let current: ByteRange | undefined;
    for (const seg of segmentsFor(this.index, gap.start, gap.end)) {
      if (current && (seg.kind === 'prologue' || seg.end - current.start > MAX_FETCH_BYTES)) {
        out.push(current);
        current = undefined;
      }
      if (seg.kind === 'prologue') continue;
      current = current ? { start: current.start, end: seg.end } : { start: seg.start, end: seg.end };
    }
    if (current) out.push(current);
    return out;
  }

  private async fetchVerified(fetch: FetchSpan, span: ByteRange, signal?: AbortSignal): Promise<void> {
    const bytes = await this.fetchChecked(fetch, span, signal);
    try {
      const report = await verifyRange(this.index, span.start, bytes); // throws on any chunk, TOC or footer mismatch
      // only what was checked is kept (pieces() leaves the prologue out, and open() refuses pieces without digests)
      for (const v of report.verified) await this.sparse.write(v.start, bytes.subarray(v.start - span.start, v.end - span.start));
    } catch (e) {
      if (!(e instanceof EstargzError)) throw e;
      throw new RegistryError('UNKNOWN', {
        status: 502,
        message: 'upstream sent eStargz content that does not match its TOC',
        detail: { digest: this.digest.value, start: span.start, end: span.end, ...e.detail },
        cause: e,
      });
    }
  }

  /** The span from the upstream; an answer of other bytes than asked for is a 502. */
  private async fetchChecked(fetch: FetchSpan, span: ByteRange, signal?: AbortSignal): Promise<Buffer> {
    try {
      return await fetch(span, signal);
    } catch (e) {
      if (!(e instanceof RangeIgnored || e instanceof ClaimRefuted)) throw e;
      throw new RegistryError('UNKNOWN', { status: 502, message: e.message, detail: { digest: this.digest.value, start: span.start, end: span.end }, cause: e });
    }
  }

  /** Keeps the verified TOC and footer bytes that opening the layer fetched. */
  private async keepTail(seen: { start: number; bytes: Buffer }[]): Promise<void> {
    const from = this.index.dataEnd;
    for (const { start, bytes } of seen) {
      const a = Math.max(start, from);
      const b = start + bytes.length;
      if (b > a && !this.sparse.covers(a, b)) await this.sparse.write(a, bytes.subarray(a - start));
    }
  }

  /** Fetches the range before the .prefetch.landmark in the background, through `fetch`. */
  prefetch(fetch: FetchSpan, log: Logger): void {
    const range = prefetchRange(this.index);
    if (!range) return;
    const release = this.hold();
    this.ensure(fetch, range.start, range.end)
      .then(
        () => log.info({ digest: this.digest.value, bytes: range.end }, 'eStargz prefetch range cached'),
        (e: Error) => log.warn({ digest: this.digest.value, err: e.message }, 'eStargz prefetch failed'),
      )
      .finally(release);
  }
}

/** Streams [range.start, range.end) of a lazy layer, fetching what is missing first. */
export function lazyRange(layer: LazyLayer, range: ByteRange, signal?: AbortSignal): Promise<Readable> {
  return layer.read(range.start, range.end, signal);
}

/** Makes every range present, one after another: a multi-range answer fails before its headers, not midway. */
export async function ensureAll(layer: LazyLayer, ranges: readonly ByteRange[], signal?: AbortSignal): Promise<void> {
  for (const r of ranges) await layer.ensure(r.start, r.end, signal);
}

/**
 * The whole blob for a fill: present spans from the sparse copy, gaps from the upstream. The fill
 * verifies the result against the layer digest like any other download.
 */
export function wholeFromSparse(layer: LazyLayer, openGap: (span: ByteRange) => Promise<Readable>): Readable {
  const size = layer.index.blobSize;
  return Readable.from(
    (async function* () {
      let pos = 0;
      for (const gap of [...layer.sparse.missing(0, size), { start: size, end: size }]) {
        if (gap.start > pos) yield* layer.sparse.stream(pos, gap.start);
        if (gap.end > gap.start) yield* await openGap(gap);
        pos = gap.end;
      }
    })(),
    { objectMode: false },
  );
}
