// One layer served lazily: its index (of some LazyFormat, see format.ts), checked against the
// manifest's claim, and a sparse copy of the compressed bytes. A Range fetches only the
// compressed ranges that cover it, widened to whole units, verifies every unit against the index
// and keeps it in the sparse copy, so no byte is fetched twice. Only verified bytes are kept: a
// unit no digest covers by itself (the eStargz prologue: tar headers before the first chunk)
// passes through to the client that asked for it and is fetched again the next time; a layer
// with more such bytes than MAX_UNVERIFIED_BYTES is served plainly. LazyLayers (layers.ts)
// decides which layers are lazy and owns their copies; every read goes through the upstream and
// repository of the request (a FetchSpan).
import { Readable } from 'node:stream';
import { SparseBlob } from '../cache/sparse-blob.js';
import { FormatRefusal, type LayerClaim, type LazyFormat, type LazyIndex, type RangeSource } from './format.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { firstLast, type ByteRange } from '../oci/range.js';
import { discard } from '../upstreams/upstream.js';
import type { Repository } from '../upstreams/repository.js';
import type { Logger } from '../lib/log.js';

/** Upstream ranges are fetched (and held in memory for verification) in pieces up to this size, one at a time per request. */
const MAX_FETCH_BYTES = 16 << 20;
/** Unverifiable units are held in memory while they pass through; a layer with more of them is served plainly. */
const MAX_UNVERIFIED_BYTES = 4 << 20;

/** Exactly the bytes [span.start, span.end) of the blob, from one upstream and repository. */
export type FetchSpan = (span: ByteRange, signal?: AbortSignal) => Promise<Buffer>;

/** One lazily served layer, as one request (upstream and repository) sees it. */
export interface LazyLayer {
  readonly digest: Digest;
  readonly index: LazyIndex;
  readonly sparse: SparseBlob;
  /** Makes the verifiable units of [start, end) (half-open) present, fetching and verifying what is missing. */
  ensure(start: number, end: number, signal?: AbortSignal): Promise<void>;
  /** [start, end) (half-open): ensured, with the unverifiable parts fetched (unkept) before the stream is returned. */
  read(start: number, end: number, signal?: AbortSignal): Promise<Readable>;
  /** A RangeSource that reads through the sparse copy (for the file API, which reads only verifiable units). */
  source(): RangeSource;
  /** Keeps the sparse copy open (and its index counted), even if the layer is forgotten meanwhile, until the returned release is called. */
  hold(): () => void;
}

/** The upstream answered a ranged request with other bytes than asked for (or the whole blob). */
class RangeIgnored extends Error {}

/** What the upstream or the blob says contradicts the manifest's claim (size, index, digests). */
export class ClaimRefuted extends Error {}

/** Whether a failed open shows the claim wrong, or the blob absent there (served plainly, not tried again for a while), not just an upstream failing now. */
export function refutesClaim(e: unknown): boolean {
  return e instanceof FormatRefusal || e instanceof ClaimRefuted || e instanceof RangeIgnored || (e instanceof RegistryError && (e.status === 404 || e.status === 416));
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
  /** the largest index to open (LazyIndex.indexBytes); a larger one refutes the claim (the layer is served plainly) */
  maxIndexBytes: number;
  /** called once the index is verified, before any byte is kept: may refuse (throw) */
  verified(index: LazyIndex): Promise<void>;
}

export class Layer {
  private readonly inflight: { span: ByteRange; done: Promise<void> }[] = [];
  private users = 0;
  private ending: 'close' | 'remove' | undefined;
  private ended: Promise<void> | undefined;

  private constructor(
    readonly digest: Digest,
    readonly claim: LayerClaim,
    readonly index: LazyIndex,
    readonly sparse: SparseBlob,
    /** told after every read and fetch, for the budget */
    private readonly onUse: (layer: Layer) => void,
  ) {}

  /** Opens the layer through `fetch`: its index, checked against the claim. Throws when it cannot be served lazily. */
  static async open(fetch: FetchSpan, format: LazyFormat, digest: Digest, claim: LayerClaim, opts: OpenOptions, onUse: (layer: Layer) => void): Promise<Layer> {
    const sparse = await SparseBlob.open(opts.dir, digest, claim.size);
    try {
      // the index comes through a recording source; what it read is kept once the index matched the claim
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
      const index = await format.open(tail, { claim, maxIndexBytes: opts.maxIndexBytes });
      const unverified = index.units({ start: 0, end: index.blobSize }).reduce((n, u) => (u.verifiable ? n : n + u.end - u.start), 0);
      if (unverified > MAX_UNVERIFIED_BYTES) throw new ClaimRefuted(`the layer has ${unverified} bytes no digest covers on their own`);
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

  /**
   * This layer as a request through `fetch` sees it; `pin` is called on hold and returns its
   * unpin; `served` is told the bytes each read hands to its stream.
   */
  view(fetch: FetchSpan, pin: () => () => void, served: (bytes: number) => void = () => undefined): LazyLayer {
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
          const body = await this.read(fetch, start, end, served, signal);
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
    const aligned = this.index.align({ start, end });
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

  /**
   * [start, end): the verified parts from the sparse copy, the unverifiable ones fetched now
   * (before the stream is returned, so a failure is an error answer) and passed through, never kept.
   */
  private async read(fetch: FetchSpan, start: number, end: number, served: (bytes: number) => void, signal?: AbortSignal): Promise<Readable> {
    await this.ensure(fetch, start, end, signal);
    const parts: (ByteRange | Buffer)[] = [];
    for (const run of runs(this.index.units({ start, end }), start, end)) {
      parts.push(run.verifiable ? run : await this.fetchChecked(fetch, run, signal));
    }
    const sparse = this.sparse;
    return Readable.from(
      (async function* () {
        for (const p of parts) {
          if (Buffer.isBuffer(p)) {
            served(p.length);
            yield p;
            continue;
          }
          for await (const chunk of sparse.stream(p.start, p.end) as AsyncIterable<Buffer>) {
            served(chunk.length);
            yield chunk;
          }
        }
      })(),
      { objectMode: false },
    );
  }

  /** A gap (unit-aligned, since only whole units are ever kept) cut into fetchable pieces on unit boundaries; unverifiable units are never fetched to be kept. */
  private pieces(gap: ByteRange): ByteRange[] {
    const out: ByteRange[] = [];
    let current: ByteRange | undefined;
    for (const unit of this.index.units(gap)) {
      if (current && (!unit.verifiable || unit.end - current.start > MAX_FETCH_BYTES)) {
        out.push(current);
        current = undefined;
      }
      if (!unit.verifiable) continue;
      current = current ? { start: current.start, end: unit.end } : { start: unit.start, end: unit.end };
    }
    if (current) out.push(current);
    return out;
  }

  private async fetchVerified(fetch: FetchSpan, span: ByteRange, signal?: AbortSignal): Promise<void> {
    const bytes = await this.fetchChecked(fetch, span, signal);
    try {
      const verified = await this.index.verify(span.start, bytes); // throws on any unit that contradicts the index
      // only what was checked is kept (pieces() leaves unverifiable units out)
      for (const v of verified) await this.sparse.write(v.start, bytes.subarray(v.start - span.start, v.end - span.start));
    } catch (e) {
      if (!(e instanceof FormatRefusal)) throw e;
      throw new RegistryError('UNKNOWN', {
        status: 502,
        message: e.message,
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

  /** Keeps the bytes of the verified index that opening the layer fetched. */
  private async keepTail(seen: { start: number; bytes: Buffer }[]): Promise<void> {
    const { start: from, end: to } = this.index.indexSpan;
    for (const { start, bytes } of seen) {
      const a = Math.max(start, from);
      const b = Math.min(start + bytes.length, to);
      if (b > a && !this.sparse.covers(a, b)) await this.sparse.write(a, bytes.subarray(a - start, b - start));
    }
  }

  /** Fetches the range the layer asks to have first (eStargz: before the .prefetch.landmark) in the background, through `fetch`. */
  prefetch(fetch: FetchSpan, log: Logger): void {
    const range = this.index.prefetch();
    if (!range) return;
    const release = this.hold();
    this.ensure(fetch, range.start, range.end)
      .then(
        () => log.info({ digest: this.digest.value, format: this.claim.format, bytes: range.end }, 'lazy layer prefetch range cached'),
        (e: Error) => log.warn({ digest: this.digest.value, format: this.claim.format, err: e.message }, 'lazy layer prefetch failed'),
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

/** The units clipped to [start, end), neighbours of the same kind joined. */
function runs(units: readonly { start: number; end: number; verifiable: boolean }[], start: number, end: number): { start: number; end: number; verifiable: boolean }[] {
  const out: { start: number; end: number; verifiable: boolean }[] = [];
  for (const u of units) {
    const a = Math.max(u.start, start);
    const b = Math.min(u.end, end);
    if (b <= a) continue;
    const last = out[out.length - 1];
    if (last && last.verifiable === u.verifiable && last.end === a) last.end = b;
    else out.push({ start: a, end: b, verifiable: u.verifiable });
  }
  return out;
}
