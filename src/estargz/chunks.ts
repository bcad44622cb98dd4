// Reading file content through the TOC: decode pieces from their compressed ranges, stream a
// whole file, and map file offsets to pieces (ESTARGZ.md §4.2).
//
// Everything is streamed: compressed bytes are read in slices, inflated as they arrive, hashed as
// they pass, and handed on in slices of at most 64 KiB, so memory per read is a few slices however
// large the piece. The last slice of every piece is held back until the piece's digest matched;
// a mismatch throws instead, so a consumer never sees a piece complete that was not verified.
// Pieces without a digest (legacy stargz) are only handed out when the index allows unverified
// reads, or when readFile checks the whole-file digest.
import { createHash, type Hash } from 'node:crypto';
import { inflate } from './decompress.js';
import { EstargzError, corrupt } from './errors.js';
import { readExact } from './reader.js';
import type { Chunk, Entry, EstargzIndex, RangeSource } from './types.js';

/** Compressed bytes are read from the source in slices of this size. */
const READ_SLICE = 1 << 20;

export interface ReadOptions {
  readonly signal?: AbortSignal;
  /** Size of each read from the source (default 1 MiB). */
  readonly maxReadBytes?: number;
}

/** A slice of a piece's bytes; `last` on the final slice of the piece, which was verified. */
export interface PieceSlice {
  readonly chunk: Chunk;
  readonly data: Buffer;
  readonly last: boolean;
}

/** Throws before anything is read when a piece cannot be served: too large, or nothing to verify it against. */
export function checkPieces(index: EstargzIndex, chunks: readonly Chunk[], fileDigestWillBeChecked = false): void {
  for (const c of chunks) {
    if (c.innerOffset + c.size > index.maxChunkBytes) {
      throw new EstargzError('too-large', 'piece larger than maxChunkBytes', { need: c.innerOffset + c.size, maxChunkBytes: index.maxChunkBytes, path: c.path.slice(0, 500) });
    }
    if (c.digest === undefined && !index.allowUnverified && !fileDigestWillBeChecked) {
      throw new EstargzError('unverifiable', 'piece has no digest to verify against', { path: c.path.slice(0, 500), chunkOffset: c.chunkOffset });
    }
  }
}

async function* compressedSlices(src: RangeSource, start: number, end: number, opts: ReadOptions): AsyncGenerator<Buffer> {
  const slice = opts.maxReadBytes ?? READ_SLICE;
  for (let pos = start; pos < end; pos += slice) yield await readExact(src, pos, Math.min(slice, end - pos), opts.signal);
}

function verify(chunk: Chunk, hash: Hash | undefined): void {
  if (!hash || chunk.digest === undefined) return;
  const got = `sha256:${hash.digest('hex')}`;
  if (got !== chunk.digest) {
    throw new EstargzError('digest-mismatch', 'chunk digest mismatch', { path: chunk.path.slice(0, 500), chunkOffset: chunk.chunkOffset, offset: chunk.offset, expected: chunk.digest, got });
  }
}

/**
 * The slices of `pieces` (one member's, ascending and not overlapping) out of that member's
 * inflated bytes, each piece's last slice after its digest matched. Stops inflating after the last.
 */
export async function* memberPieces(pieces: readonly Chunk[], inflated: AsyncIterable<Buffer>): AsyncGenerator<PieceSlice> {
  let i = 0;
  let pos = 0; // offset in the inflated member of the first byte of `b`
  let hash: Hash | undefined;
  let held: Buffer | undefined;
  if (pieces.length === 0) return;
  for await (const b of inflated) {
    const bEnd = pos + b.length;
    while (i < pieces.length) {
      const p = pieces[i] as Chunk;
      const start = p.innerOffset;
      const end = p.innerOffset + p.size;
      if (start >= bEnd) break;
      const take = b.subarray(Math.max(start - pos, 0), Math.min(end - pos, b.length));
      if (take.length > 0) {
        hash ??= p.digest === undefined ? undefined : createHash('sha256');
        hash?.update(take);
        if (held) yield { chunk: p, data: held, last: false };
        held = take;
      }
      if (end > bEnd) break;
      verify(p, hash);
      yield { chunk: p, data: held ?? Buffer.alloc(0), last: true };
      held = undefined;
      hash = undefined;
      i++;
    }
    pos = bEnd;
    if (i === pieces.length) return;
  }
  throw corrupt('compressed range holds less data than the TOC says', { path: pieces[i]?.path.slice(0, 500), want: (pieces[i]?.innerOffset ?? 0) + (pieces[i]?.size ?? 0), got: pos });
}

/** Runs of pieces that can come out of one pass over one member (same offset, ascending innerOffset). */
function memberRuns(pieces: readonly Chunk[]): Chunk[][] {
  const runs: Chunk[][] = [];
  for (const c of pieces) {
    const run = runs[runs.length - 1];
    const prev = run?.[run.length - 1];
    if (run && prev && prev.offset === c.offset && prev.innerOffset + prev.size <= c.innerOffset) run.push(c);
    else runs.push([c]);
  }
  return runs;
}

/** Streams the verified slices of `pieces` in the given order, reading each member once per run. */
export async function* streamPieces(index: EstargzIndex, src: RangeSource, pieces: readonly Chunk[], opts: ReadOptions = {}): AsyncGenerator<PieceSlice> {
  const maxInput = index.maxChunkBytes + (1 << 20); // zstd collects its frame; no honest frame is much larger than its content
  for (const run of memberRuns(pieces)) {
    const first = run[0] as Chunk;
    yield* memberPieces(run, inflate(index.compression, compressedSlices(src, first.offset, first.end, opts), { maxWindow: index.maxChunkBytes, maxInput }));
  }
}

/**
 * Decodes one piece from fetched compressed bytes. `bytes` holds the blob from `bytesOffset` on
 * and must cover [chunk.offset, chunk.end). Returns the verified piece (innerOffset applied).
 * Holds the piece in memory: for tests and small pieces; servers use streamPieces.
 */
export async function decodeChunk(index: EstargzIndex, chunk: Chunk, bytes: Buffer, bytesOffset = chunk.offset): Promise<Buffer> {
  const from = chunk.offset - bytesOffset;
  const to = chunk.end - bytesOffset;
  if (from < 0 || to > bytes.length) throw new RangeError(`bytes do not cover the chunk range [${chunk.offset}, ${chunk.end})`);
  checkPieces(index, [chunk]);
  const parts: Buffer[] = [];
  const inflated = inflate(index.compression, [bytes.subarray(from, to)], { maxWindow: index.maxChunkBytes, maxInput: to - from });
  for await (const s of memberPieces([chunk], inflated)) parts.push(s.data);
  return Buffer.concat(parts, chunk.size);
}

/** Pieces of `entry` that overlap the file bytes [start, end) (binary search on chunkOffset). */
export function chunksForFileRange(entry: Entry, start: number, end: number): Chunk[] {
  const cs = entry.chunks;
  let lo = 0;
  let hi = cs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const c = cs[mid] as Chunk;
    if (c.chunkOffset + c.size <= start) lo = mid + 1;
    else hi = mid;
  }
  const out: Chunk[] = [];
  for (let i = lo; i < cs.length; i++) {
    const c = cs[i] as Chunk;
    if (c.chunkOffset >= end) break;
    out.push(c);
  }
  return out;
}

/** Groups pieces (sorted by offset) into reads of adjacent compressed ranges, each ≤ maxBytes when possible. */
export function mergeChunkRanges(chunks: readonly Chunk[], maxBytes = 16 * 1024 * 1024): { start: number; end: number; chunks: Chunk[] }[] {
  const sorted = [...chunks].sort((a, b) => a.offset - b.offset || a.innerOffset - b.innerOffset);
  const groups: { start: number; end: number; chunks: Chunk[] }[] = [];
  for (const c of sorted) {
    const g = groups[groups.length - 1];
    if (g && c.offset <= g.end && (c.offset === g.chunks[g.chunks.length - 1]?.offset || Math.max(g.end, c.end) - g.start <= maxBytes)) {
      g.end = Math.max(g.end, c.end);
      g.chunks.push(c);
    } else {
      groups.push({ start: c.offset, end: c.end, chunks: [c] });
    }
  }
  return groups;
}

function regularFile(index: EstargzIndex, path: string): Entry {
  const e = index.resolve(path);
  if (!e || e.type !== 'reg') throw new EstargzError('not-found', 'no regular file at this path', { path: path.slice(0, 500) });
  return e;
}

/**
 * Streams the verified content of a file in file order, in slices (see the top of this file).
 * Throws at once, before reading anything, for a missing file or pieces that cannot be served.
 */
export function fileChunks(index: EstargzIndex, src: RangeSource, path: string, opts: ReadOptions = {}): AsyncGenerator<PieceSlice> {
  const entry = regularFile(index, path);
  checkPieces(index, entry.chunks);
  return streamPieces(index, src, entry.chunks, opts);
}

/** Reads and verifies a whole regular file (hardlinks are followed); holds it in memory. */
export async function readFile(index: EstargzIndex, src: RangeSource, path: string, opts: ReadOptions = {}): Promise<Buffer> {
  const entry = regularFile(index, path);
  checkPieces(index, entry.chunks, entry.digest !== undefined);
  const parts: Buffer[] = [];
  const hash = createHash('sha256');
  for await (const { data } of streamPieces(index, src, entry.chunks, opts)) {
    parts.push(data);
    hash.update(data);
  }
  const got = `sha256:${hash.digest('hex')}`;
  if (entry.digest !== undefined && got !== entry.digest) throw new EstargzError('digest-mismatch', 'file digest mismatch', { path: entry.path, expected: entry.digest, got });
  return Buffer.concat(parts, entry.size);
}
