// One eStargz layer served lazily: its TOC, verified against the manifest's annotation, and a
// sparse copy of the compressed bytes. A Range fetches only the compressed ranges that cover it,
// widened to whole chunks, verifies every chunk against the TOC and keeps it in the sparse copy,
// so no byte is fetched twice. LazyLayers (lazy-layers.ts) decides which layers are lazy and
// owns their copies.
import { Readable } from 'node:stream';
import { SparseBlob, type Span } from '../cache/sparse-blob.js';
import { openEstargz, alignRange, prefetchRange, segmentsFor, verifyRange, EstargzError, type EstargzIndex, type RangeSource } from '../estargz/index.js';
import type { Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { ByteRange } from '../oci/range.js';
import type { Upstream } from '../upstreams/upstream.js';
import type { Logger } from './pull-through.js';

/** Upstream ranges are fetched (and held in memory for verification) in pieces up to this size, one at a time per request. */
const MAX_FETCH_BYTES = 16 << 20;
const MAX_TOC_BYTES = 64 << 20;

/** What a manifest says about an eStargz layer. */
export interface LayerInfo {
  tocDigest: string;
  size: number;
}

/** One lazily served layer: its verified index and its sparse copy. */
export interface LazyLayer {
  readonly digest: Digest;
  readonly index: EstargzIndex;
  readonly sparse: SparseBlob;
  /** Makes [start, end) (half-open) present, fetching and verifying what is missing. */
  ensure(start: number, end: number, signal?: AbortSignal): Promise<void>;
  /** Streams [start, end) (half-open) of the sparse copy, which ensure() made present. */
  stream(start: number, end: number): Readable;
  /** A RangeSource that reads through the sparse copy (for the file API). */
  source(): RangeSource;
  /** Keeps the sparse copy open, even if the layer is forgotten meanwhile, until the returned release is called. */
  hold(): () => void;
}

/** The upstream answered a ranged request with other bytes than asked for (or the whole blob). */
class RangeIgnored extends Error {}

export class Layer implements LazyLayer {
  private readonly inflight: { span: Span; done: Promise<void> }[] = [];
  private users = 0;
  private retired = false;
  private removed: Promise<void> | undefined;

  private constructor(
    readonly digest: Digest,
    readonly index: EstargzIndex,
    readonly sparse: SparseBlob,
    private readonly fetchSpan: (span: Span, signal?: AbortSignal) => Promise<Buffer>,
    /** told after every read and fetch, for the budget */
    private readonly onUse: (layer: Layer) => void,
  ) {}

  static async open(up: Upstream, repo: string, digest: Digest, info: LayerInfo, opts: { dir: string; prefetch: boolean; log: Logger }, onUse: (layer: Layer) => void): Promise<Layer> {
    const sparse = await SparseBlob.open(opts.dir, digest, info.size);
    try {
      const layer = await Layer.openIndex(up, repo, digest, info, sparse, onUse);
      if (opts.prefetch) layer.prefetch(opts.log);
      return layer;
    } catch (e) {
      // nothing of it was verified: no copy (and no open file) stays behind; an earlier run's verified spans do
      await (sparse.cachedBytes === 0 ? sparse.remove() : sparse.close());
      throw openError(digest, e);
    }
  }

  private static async openIndex(up: Upstream, repo: string, digest: Digest, info: LayerInfo, sparse: SparseBlob, onUse: (layer: Layer) => void): Promise<Layer> {
    const fetchSpan = async (span: Span, signal?: AbortSignal): Promise<Buffer> => {
      const res = await up.getBlob(repo, digest, { range: { start: span.start, end: span.end - 1 }, signal });
      if (res.range?.start !== span.start || res.range.end !== span.end - 1) {
        res.body.destroy();
        throw new RangeIgnored(`upstream did not answer the range ${span.start}-${span.end - 1} of ${digest.value}`);
      }
      return Buffer.concat(await res.body.toArray());
    };
    // the footer and TOC come through a recording source; they are kept once the TOC digest matched
    const seen: { start: number; bytes: Buffer }[] = [];
    const tail: RangeSource = {
      size: info.size,
      read: async (offset, length, signal) => {
        const span = { start: offset, end: offset + length };
        const bytes = sparse.covers(span.start, span.end) ? await sparse.read(span.start, span.end) : await fetchSpan(span, signal);
        seen.push({ start: offset, bytes });
        return bytes;
      },
    };
    const index = await openEstargz(tail, { expectedTocDigest: info.tocDigest, maxTocBytes: MAX_TOC_BYTES });
    const layer = new Layer(digest, index, sparse, fetchSpan, onUse);
    await layer.keepTail(seen);
    onUse(layer);
    return layer;
  }

  source(): RangeSource {
    return {
      size: this.index.blobSize,
      read: async (offset, length, signal) => {
        await this.ensure(offset, offset + length, signal);
        return this.sparse.read(offset, offset + length);
      },
    };
  }

  stream(start: number, end: number): Readable {
    const release = this.hold();
    const s = this.sparse.stream(start, end);
    s.once('close', release);
    return s;
  }

  hold(): () => void {
    this.users++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      if (--this.users === 0 && this.retired) void this.remove();
    };
  }

  /** The layer is cached whole: remove the sparse copy once nobody reads it. */
  async retire(): Promise<void> {
    this.retired = true;
    if (this.users === 0) await this.remove();
  }

  private remove(): Promise<void> {
    return (this.removed ??= this.sparse.remove());
  }

  async ensure(start: number, end: number, signal?: AbortSignal): Promise<void> {
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
      const done = previous.then(() => this.fetchVerified(span, signal));
      previous = done;
      const entry = { span, done };
      this.inflight.push(entry);
      void done.catch(() => undefined).finally(() => this.inflight.splice(this.inflight.indexOf(entry), 1));
      return done;
    });
    await Promise.all(jobs);
    this.onUse(this);
  }

  /** A gap (segment-aligned, since only whole segments are ever kept) cut into fetchable pieces on segment boundaries. */
  private pieces(gap: Span): Span[] {
    const out: Span[] = [];
    let current: Span | undefined;
    for (const seg of segmentsFor(this.index, gap.start, gap.end)) {
      if (current && seg.end - current.start > MAX_FETCH_BYTES) {
        out.push(current);
        current = undefined;
      }
      current = current ? { start: current.start, end: seg.end } : { start: seg.start, end: seg.end };
    }
    if (current) out.push(current);
    return out;
  }

  private async fetchVerified(span: Span, signal?: AbortSignal): Promise<void> {
    try {
      const bytes = await this.fetchSpan(span, signal);
      await verifyRange(this.index, span.start, bytes); // throws on any chunk, TOC or footer mismatch
      await this.sparse.write(span.start, bytes);
    } catch (e) {
      if (!(e instanceof EstargzError || e instanceof RangeIgnored)) throw e;
      throw new RegistryError('UNKNOWN', {
        status: 502,
        message: e instanceof EstargzError ? 'upstream sent eStargz content that does not match its TOC' : e.message,
        detail: { digest: this.digest.value, start: span.start, end: span.end, ...(e instanceof EstargzError ? e.detail : {}) },
        cause: e,
      });
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

  private prefetch(log: Logger): void {
    const range = prefetchRange(this.index);
    if (!range) return;
    const release = this.hold();
    this.ensure(range.start, range.end)
      .then(
        () => log.info({ digest: this.digest.value, bytes: range.end }, 'eStargz prefetch range cached'),
        (e: Error) => log.warn({ digest: this.digest.value, err: e.message }, 'eStargz prefetch failed'),
      )
      .finally(release);
  }
}

/**
 * Why a layer announced as eStargz could not be opened. A TOC that does not match its annotation,
 * or an upstream error, is the client's answer; anything else (no footer, an upstream that ignores
 * ranges) is a plain Error, and the layer is served as a plain blob.
 */
function openError(digest: Digest, e: unknown): unknown {
  if (e instanceof EstargzError && e.kind === 'digest-mismatch') {
    return new RegistryError('UNKNOWN', {
      status: 502,
      message: "upstream eStargz TOC does not match the layer's toc.digest annotation",
      detail: { digest: digest.value, ...e.detail },
      cause: e,
    });
  }
  return e;
}

/** Streams [range.start, range.end] of a lazy layer, fetching what is missing first. */
export async function lazyRange(layer: LazyLayer, range: ByteRange, signal?: AbortSignal): Promise<Readable> {
  const release = layer.hold();
  try {
    await layer.ensure(range.start, range.end + 1, signal);
    return layer.stream(range.start, range.end + 1);
  } finally {
    release();
  }
}

/** Makes every range present, one after another: a multi-range answer fails before its headers, not midway. */
export async function ensureAll(layer: LazyLayer, ranges: readonly ByteRange[], signal?: AbortSignal): Promise<void> {
  for (const r of ranges) await layer.ensure(r.start, r.end + 1, signal);
}

/**
 * The whole blob for a fill: present spans from the sparse copy, gaps from the upstream. The fill
 * verifies the result against the layer digest like any other download.
 */
export function wholeFromSparse(layer: LazyLayer, openGap: (span: Span) => Promise<Readable>): Readable {
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

