// The blob as a sequence of verifiable segments, for serving arbitrary compressed byte ranges
// lazily (fetch aligned ranges upstream, verify, then cache).
//
//   prologue  [0, first member start)      gzip member(s) with only tar headers: NOT verifiable
//   data      [member start, next start)   verifiable through the chunkDigest of each piece that
//                                          starts in it (the tar headers after a payload are not)
//   toc       [dataEnd, footerOffset)      verifiable through the TOC digest
//   footer    [footerOffset, blobSize)     verifiable by re-parsing (must point at the same TOC)
//
// The segments tile [0, blobSize) without gaps. alignRange() widens a request to whole segments;
// verifyRange() checks fetched bytes segment by segment and reports what could not be verified.
import { memberPieces } from './chunks.js';
import { decompress, inflate } from './decompress.js';
import { EstargzError, corrupt } from './errors.js';
import { parseFooter } from './footer.js';
import { sha256 } from './reader.js';
import { unwrapTocTar } from './toc.js';
import { PREFETCH_LANDMARK, type ByteRange, type Chunk, type EstargzIndex } from './types.js';

export type SegmentKind = 'prologue' | 'data' | 'toc' | 'footer';

export interface Segment extends ByteRange {
  readonly kind: SegmentKind;
  /** For data segments: the pieces whose member starts here. */
  readonly chunks: readonly Chunk[];
}

const cache = new WeakMap<EstargzIndex, readonly Segment[]>();

/** All segments of the blob, in order. */
export function segments(index: EstargzIndex): readonly Segment[] {
  const hit = cache.get(index);
  if (hit) return hit;
  const out: { kind: SegmentKind; start: number; end: number; chunks: Chunk[] }[] = [];
  const push = (kind: SegmentKind, start: number, end: number, chunks: Chunk[] = []): void => {
    if (end > start) out.push({ kind, start, end, chunks });
  };
  const first = index.chunks[0];
  push('prologue', 0, first ? first.offset : index.dataEnd);
  for (const c of index.chunks) {
    const last = out[out.length - 1];
    if (last?.kind === 'data' && last.start === c.offset) last.chunks.push(c);
    else push('data', c.offset, c.end, [c]);
  }
  push('toc', index.dataEnd, index.footerOffset);
  push('footer', index.footerOffset, index.blobSize);
  const frozen: readonly Segment[] = Object.freeze(out.map((g) => Object.freeze({ ...g, chunks: Object.freeze(g.chunks) })));
  cache.set(index, frozen);
  return frozen;
}

/** The segments overlapping [start, end) (binary search). */
export function segmentsFor(index: EstargzIndex, start: number, end: number): Segment[] {
  const all = segments(index);
  let lo = 0;
  let hi = all.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((all[mid] as Segment).end <= start) lo = mid + 1;
    else hi = mid;
  }
  const out: Segment[] = [];
  for (let i = lo; i < all.length && (all[i] as Segment).start < end; i++) out.push(all[i] as Segment);
  return out;
}

/** [start, end) widened to whole segments, i.e. what to fetch so every piece in it can be verified. */
export function alignRange(index: EstargzIndex, start: number, end: number): ByteRange {
  if (!(start >= 0 && end <= index.blobSize && start < end)) throw new RangeError(`invalid range [${start}, ${end}) for a blob of ${index.blobSize} bytes`);
  const segs = segmentsFor(index, start, end);
  return { start: segs[0]?.start ?? start, end: segs[segs.length - 1]?.end ?? end };
}

/** Pieces whose compressed range overlaps [start, end). */
export function chunksInRange(index: EstargzIndex, start: number, end: number): Chunk[] {
  return segmentsFor(index, start, end).flatMap((s) => s.chunks);
}

/** The compressed range to prefetch: [0, offset of .prefetch.landmark), or undefined. */
export function prefetchRange(index: EstargzIndex): ByteRange | undefined {
  if (index.landmark !== 'prefetch') return undefined;
  const lm = index.lookup(PREFETCH_LANDMARK)?.chunks[0];
  return lm && lm.offset > 0 ? { start: 0, end: lm.offset } : undefined;
}

export interface VerifyReport {
  /** Spans whose content was checked against a digest. */
  readonly verified: ByteRange[];
  /** Spans that hold nothing to check (prologue; pieces without digests under allowUnverified). */
  readonly unverified: ByteRange[];
}

async function verifySegment(index: EstargzIndex, seg: Segment, bytes: Buffer): Promise<boolean> {
  if (seg.kind === 'prologue') return false;
  if (seg.kind === 'footer') {
    const f = parseFooter(bytes, index.blobSize);
    if (!f || f.tocOffset !== index.tocOffset || f.footerSize !== index.footerSize) throw corrupt('footer bytes differ from the opened footer');
    return true;
  }
  if (seg.kind === 'toc') {
    const compressed = index.compression === 'zstd' ? bytes.subarray(index.tocRange.start - seg.start, index.tocRange.end - seg.start) : bytes;
    const limit = index.tocJson.length + 64 * 1024;
    const raw = await decompress(index.compression, compressed, { limit });
    const json = index.compression === 'zstd' ? raw : unwrapTocTar(raw, index.tocJson.length);
    const got = sha256(json);
    if (got !== index.tocDigest) throw new EstargzError('digest-mismatch', 'TOC bytes differ from the opened TOC', { expected: index.tocDigest, got });
    return true;
  }
  const need = Math.max(...seg.chunks.map((c) => c.innerOffset + c.size));
  if (need > index.maxChunkBytes) throw new EstargzError('too-large', 'piece larger than maxChunkBytes', { need, maxChunkBytes: index.maxChunkBytes, offset: seg.start });
  // hashed as it is inflated, nothing kept: memory is a few slices however large the piece
  const inflated = inflate(index.compression, [bytes], { maxWindow: index.maxChunkBytes, maxInput: bytes.length });
  for await (const slice of memberPieces(seg.chunks, inflated)) void slice;
  return seg.chunks.every((c) => c.digest !== undefined); // legacy stargz: pieces without digests stay unverified
}

/**
 * Verifies `bytes`, the blob bytes from `start` on, which must begin and end on segment
 * boundaries (see alignRange). Throws 'digest-mismatch' / 'corrupt' on the first bad segment.
 */
export async function verifyRange(index: EstargzIndex, start: number, bytes: Buffer): Promise<VerifyReport> {
  const end = start + bytes.length;
  const aligned = bytes.length > 0 ? alignRange(index, start, end) : { start, end };
  if (aligned.start !== start || aligned.end !== end) throw new RangeError(`range [${start}, ${end}) is not aligned to segments`);
  const report: VerifyReport = { verified: [], unverified: [] };
  for (const seg of bytes.length > 0 ? segmentsFor(index, start, end) : []) {
    const ok = await verifySegment(index, seg, bytes.subarray(seg.start - start, seg.end - start));
    const list = ok ? report.verified : report.unverified;
    const prev = list[list.length - 1];
    if (prev && prev.end === seg.start) list[list.length - 1] = { start: prev.start, end: seg.end };
    else list.push({ start: seg.start, end: seg.end });
  }
  return report;
}
