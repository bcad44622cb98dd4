// eStargz layers served lazily. Manifests that pass through tell us which layers are eStargz (the
// containerd.io/snapshot/stargz/toc.digest annotation). A Range on such a layer, uncached, fetches
// only the compressed ranges that cover it, widened to whole chunks, verifies every chunk against
// the TOC, and keeps them in a sparse per-blob copy: no byte is fetched twice and no whole-layer
// fill starts. A full GET fills the rest from that copy plus the missing ranges.
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import { SparseBlob, type Span } from '../cache/sparse-blob.js';
import { openEstargz, alignRange, prefetchRange, segmentsFor, verifyRange, TOC_DIGEST_ANNOTATION, type EstargzIndex, type RangeSource } from '../estargz/index.js';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import type { Upstream } from '../upstreams/upstream.js';
import type { Logger } from './pull-through.js';

/** Upstream ranges are fetched (and held in memory for verification) in pieces up to this size. */
const MAX_FETCH_BYTES = 16 << 20;
const MAX_TOC_BYTES = 64 << 20;

interface LayerInfo {
  tocDigest: string;
  size: number;
}

/** One lazily served layer: its verified index and its sparse copy. */
export interface LazyLayer {
  readonly digest: Digest;
  readonly index: EstargzIndex;
  readonly sparse: SparseBlob;
  /** Makes [start, end) (half-open) present, fetching what is missing. */
  ensure(start: number, end: number, signal?: AbortSignal): Promise<void>;
  /** A RangeSource that reads through the sparse copy (for the file API). */
  source(): RangeSource;
}

export interface LazyLayersOptions {
  /** where sparse copies live */
  dir: string;
  log: Logger;
  /** fetch the range before a .prefetch.landmark on first touch */
  prefetch: boolean;
}

export class LazyLayers {
  /** layer digest → what manifests said about it */
  private readonly known = new LRUCache<string, LayerInfo>({ max: 100_000 });
  private readonly open = new Map<string, Promise<Layer>>();

  constructor(private readonly opts: LazyLayersOptions) {}

  /** Records the eStargz layers a manifest lists (called for every manifest served). */
  learn(manifest: Buffer): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(manifest.toString('utf8'));
    } catch {
      return;
    }
    const layers = (parsed as { layers?: unknown }).layers;
    if (!Array.isArray(layers)) return;
    for (const l of layers as { digest?: unknown; size?: unknown; annotations?: Record<string, unknown> }[]) {
      const toc = l.annotations?.[TOC_DIGEST_ANNOTATION];
      if (typeof l.digest === 'string' && typeof toc === 'string' && Number.isSafeInteger(l.size) && tryParseDigest(l.digest) && tryParseDigest(toc)) {
        this.known.set(l.digest, { tocDigest: toc, size: l.size as number });
      }
    }
  }

  isLazy(digest: Digest): boolean {
    return this.known.has(digest.value);
  }

  /** The lazy layer (opening its TOC on first use), or undefined when the layer is not known eStargz. */
  async layer(up: Upstream, repo: string, digest: Digest): Promise<LazyLayer | undefined> {
    const info = this.known.get(digest.value);
    if (!info) return undefined;
    let opening = this.open.get(digest.value);
    if (!opening) {
      opening = Layer.open(up, repo, digest, info, this.opts);
      this.open.set(digest.value, opening);
      opening.catch(() => this.open.delete(digest.value));
    }
    return opening;
  }

  /** Started (touched) layers only: for a full GET to fill from what is already here. */
  async started(digest: Digest): Promise<LazyLayer | undefined> {
    return this.open.get(digest.value)?.catch(() => undefined);
  }

  /** Closes the sparse copies (they stay on disk for the next start). */
  async close(): Promise<void> {
    const layers = await Promise.all([...this.open.values()].map((p) => p.catch(() => undefined)));
    this.open.clear();
    await Promise.all(layers.map((l) => l?.sparse.close()));
  }

  /** After the whole blob was cached: the sparse copy is no longer needed. */
  async forget(digest: Digest): Promise<void> {
    const opening = this.open.get(digest.value);
    this.open.delete(digest.value);
    const layer = await opening?.catch(() => undefined);
    await layer?.sparse.remove();
  }
}

class Layer implements LazyLayer {
  private readonly inflight: { span: Span; done: Promise<void> }[] = [];

  private constructor(
    readonly digest: Digest,
    readonly index: EstargzIndex,
    readonly sparse: SparseBlob,
    private readonly fetchSpan: (span: Span, signal?: AbortSignal) => Promise<Buffer>,
  ) {}

  static async open(up: Upstream, repo: string, digest: Digest, info: LayerInfo, opts: LazyLayersOptions): Promise<Layer> {
    const sparse = await SparseBlob.open(opts.dir, digest, info.size);
    const fetchSpan = async (span: Span, signal?: AbortSignal): Promise<Buffer> => {
      const res = await up.getBlob(repo, digest, { range: { start: span.start, end: span.end - 1 }, signal });
      if (res.range?.start !== span.start || res.range.end !== span.end - 1) {
        res.body.destroy();
        throw new Error(`upstream did not answer the range ${span.start}-${span.end - 1} of ${digest.value}`);
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
    const layer = new Layer(digest, index, sparse, fetchSpan);
    await layer.keepTail(seen);
    if (opts.prefetch) layer.prefetch(opts.log);
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

  async ensure(start: number, end: number, signal?: AbortSignal): Promise<void> {
    if (end <= start) return;
    const aligned = alignRange(this.index, start, end);
    for (;;) {
      const overlapping = this.inflight.filter((f) => f.span.start < aligned.end && f.span.end > aligned.start);
      if (overlapping.length === 0) break;
      await Promise.allSettled(overlapping.map((f) => f.done));
    }
    const gaps = this.sparse.missing(aligned.start, aligned.end).flatMap((g) => this.pieces(g));
    const jobs = gaps.map((span) => {
      const done = this.fetchVerified(span, signal);
      const entry = { span, done };
      this.inflight.push(entry);
      void done.catch(() => undefined).finally(() => this.inflight.splice(this.inflight.indexOf(entry), 1));
      return done;
    });
    await Promise.all(jobs);
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
    const bytes = await this.fetchSpan(span, signal);
    await verifyRange(this.index, span.start, bytes); // throws on any chunk, TOC or footer mismatch
    await this.sparse.write(span.start, bytes);
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
    this.ensure(range.start, range.end).then(
      () => log.info({ digest: this.digest.value, bytes: range.end }, 'eStargz prefetch range cached'),
      (e: Error) => log.warn({ digest: this.digest.value, err: e.message }, 'eStargz prefetch failed'),
    );
  }
}

/** Streams [range.start, range.end] of a lazy layer, fetching what is missing first. */
export async function lazyRange(layer: LazyLayer, range: ByteRange, signal?: AbortSignal): Promise<Readable> {
  await layer.ensure(range.start, range.end + 1, signal);
  return layer.sparse.stream(range.start, range.end + 1);
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

