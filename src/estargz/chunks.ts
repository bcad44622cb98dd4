// Reading file content through the TOC: decode one piece from its fetched compressed range,
// read a whole file with merged range reads, and map file offsets to pieces (ESTARGZ.md §4.2).
//
// Nothing leaves this module unverified: every piece is hashed against its chunkDigest (or, for a
// one-piece file without one, the file digest); readFile also checks the whole-file digest. Only
// an index opened with allowUnverified hands out pieces that have no digest at all.
import { decompress } from './decompress.js';
import { EstargzError } from './errors.js';
import { readExact, sha256 } from './reader.js';
import type { Chunk, Entry, EstargzIndex, RangeSource } from './types.js';

/** Decompresses the member at `chunk.offset` far enough to hold every given piece that starts in it. */
export async function inflateMember(index: EstargzIndex, chunks: readonly Chunk[], compressed: Buffer): Promise<Buffer> {
  const need = Math.max(...chunks.map((c) => c.innerOffset + c.size));
  if (need > index.maxChunkBytes) {
    throw new EstargzError('too-large', 'piece larger than maxChunkBytes', { need, maxChunkBytes: index.maxChunkBytes, path: chunks[0]?.path ?? '' });
  }
  return decompress(index.compression, compressed, { limit: need, stopAfter: need, maxWindow: index.maxChunkBytes });
}

/** The piece's bytes out of its decompressed member, hashed against its digest. */
export function pieceOf(index: EstargzIndex, chunk: Chunk, member: Buffer, fileDigestWillBeChecked = false): Buffer {
  const data = member.subarray(chunk.innerOffset, chunk.innerOffset + chunk.size);
  if (chunk.digest === undefined) {
    if (index.allowUnverified || fileDigestWillBeChecked) return data;
    throw new EstargzError('unverifiable', 'piece has no digest to verify against', { path: chunk.path, chunkOffset: chunk.chunkOffset });
  }
  const got = sha256(data);
  if (got !== chunk.digest) {
    throw new EstargzError('digest-mismatch', 'chunk digest mismatch', { path: chunk.path, chunkOffset: chunk.chunkOffset, offset: chunk.offset, expected: chunk.digest, got });
  }
  return data;
}

/**
 * Decodes one piece from fetched compressed bytes. `bytes` holds the blob from `bytesOffset` on
 * and must cover [chunk.offset, chunk.end). Returns the verified piece (innerOffset applied).
 */
export async function decodeChunk(index: EstargzIndex, chunk: Chunk, bytes: Buffer, bytesOffset = chunk.offset): Promise<Buffer> {
  const from = chunk.offset - bytesOffset;
  const to = chunk.end - bytesOffset;
  if (from < 0 || to > bytes.length) throw new RangeError(`bytes do not cover the chunk range [${chunk.offset}, ${chunk.end})`);
  const member = await inflateMember(index, [chunk], bytes.subarray(from, to));
  return pieceOf(index, chunk, member);
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

export interface ReadOptions {
  readonly signal?: AbortSignal;
  /** Largest single merged read (default 16 MiB). */
  readonly maxReadBytes?: number;
}

function regularFile(index: EstargzIndex, path: string): Entry {
  const e = index.resolve(path);
  if (!e || e.type !== 'reg') throw new EstargzError('not-found', 'no regular file at this path', { path: path.slice(0, 500) });
  return e;
}

async function* piecesOf(index: EstargzIndex, src: RangeSource, entry: Entry, opts: ReadOptions, fileDigestChecked: boolean): AsyncGenerator<{ chunk: Chunk; data: Buffer }> {
  for (const g of mergeChunkRanges(entry.chunks, opts.maxReadBytes)) {
    const bytes = await readExact(src, g.start, g.end - g.start, opts.signal);
    const byMember = new Map<number, Chunk[]>();
    for (const c of g.chunks) byMember.set(c.offset, [...(byMember.get(c.offset) ?? []), c]);
    const pieces = new Map<Chunk, Buffer>();
    for (const [offset, cs] of byMember) {
      const end = cs[0]?.end ?? offset;
      const member = await inflateMember(index, cs, bytes.subarray(offset - g.start, end - g.start));
      for (const c of cs) pieces.set(c, pieceOf(index, c, member, fileDigestChecked));
    }
    for (const c of [...g.chunks].sort((a, b) => a.chunkOffset - b.chunkOffset)) yield { chunk: c, data: pieces.get(c) as Buffer };
  }
}

/**
 * Yields the verified pieces of a file in file order, fetching adjacent ranges in one read and
 * decompressing each shared member once. Memory stays around one merged read.
 */
export function fileChunks(index: EstargzIndex, src: RangeSource, path: string, opts: ReadOptions = {}): AsyncGenerator<{ chunk: Chunk; data: Buffer }> {
  return piecesOf(index, src, regularFile(index, path), opts, false);
}

/** Reads and verifies a whole regular file (hardlinks are followed). */
export async function readFile(index: EstargzIndex, src: RangeSource, path: string, opts: ReadOptions = {}): Promise<Buffer> {
  const entry = regularFile(index, path);
  const parts: Buffer[] = new Array<Buffer>(entry.chunks.length);
  for await (const { chunk, data } of piecesOf(index, src, entry, opts, entry.digest !== undefined)) parts[chunk.index] = data;
  const out = Buffer.concat(parts, entry.size);
  if (entry.digest !== undefined) {
    const got = sha256(out);
    if (got !== entry.digest) throw new EstargzError('digest-mismatch', 'file digest mismatch', { path: entry.path, expected: entry.digest, got });
  }
  return out;
}
