// zstd decompression on Node 20 (whose zlib has no zstd) through fzstd, a pure-JS decoder.
//
// Before anything is handed to fzstd, the input is walked frame by frame (headers and block
// headers only) so that a hostile frame cannot make the decoder allocate a huge window, and the
// output is bounded while it is produced. Skippable frames are stepped over.
import { Decompress } from 'fzstd';
import { EstargzError, corrupt } from './errors.js';

const ZSTD_MAGIC = 0xfd2fb528;
const PUSH_SLICE = 256 * 1024;

interface FrameInfo {
  readonly start: number;
  readonly end: number;
  readonly skippable: boolean;
  readonly windowSize: number;
}

function frameAt(b: Buffer, pos: number): FrameInfo {
  if (pos + 8 <= b.length && (b.readUInt32LE(pos) & 0xfffffff0) === 0x184d2a50) {
    const end = pos + 8 + b.readUInt32LE(pos + 4);
    if (end > b.length) throw corrupt('zstd: truncated skippable frame', { at: pos });
    return { start: pos, end, skippable: true, windowSize: 0 };
  }
  if (pos + 6 > b.length || b.readUInt32LE(pos) !== ZSTD_MAGIC) throw corrupt('zstd: bad frame magic', { at: pos });
  const fhd = b[pos + 4] ?? 0;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  if (fhd & 0x08) throw corrupt('zstd: reserved frame header bit set', { at: pos });
  const dictBytes = [0, 1, 2, 4][fhd & 3] ?? 0;
  const fcsBytes = fcsFlag === 0 ? singleSegment : 1 << fcsFlag;
  let p = pos + 5;
  let windowSize = 0;
  if (!singleSegment) {
    const wd = b[p] ?? 0;
    const base = 2 ** (10 + (wd >> 3));
    windowSize = base + (base / 8) * (wd & 7);
    p += 1;
  }
  p += dictBytes;
  if (p + fcsBytes > b.length) throw corrupt('zstd: truncated frame header', { at: pos });
  if (singleSegment) {
    let fcs = 0;
    for (let i = fcsBytes - 1; i >= 0; i--) fcs = fcs * 256 + (b[p + i] ?? 0);
    windowSize = fcsBytes === 2 ? fcs + 256 : fcs;
  }
  p += fcsBytes;
  for (;;) {
    if (p + 3 > b.length) throw corrupt('zstd: truncated block header', { at: p });
    const bh = (b[p] ?? 0) | ((b[p + 1] ?? 0) << 8) | ((b[p + 2] ?? 0) << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw corrupt('zstd: reserved block type', { at: p });
    p += 3 + (type === 1 ? 1 : size);
    if (p > b.length) throw corrupt('zstd: truncated block', { at: p });
    if (last) break;
  }
  p += checksum ? 4 : 0;
  if (p > b.length) throw corrupt('zstd: truncated frame checksum', { at: p });
  return { start: pos, end: p, skippable: false, windowSize };
}

/**
 * Decompresses the zstd frames in `input`. With `stopAfter`, returns at most that many bytes and
 * stops decoding once it has them; without it, throws 'too-large' once the output exceeds `limit`.
 * A frame may ask for a window of at most `maxWindow` (default `limit`, never below 8 MiB).
 */
export async function zstdDecompress(input: Buffer, opts: { limit: number; stopAfter?: number; maxWindow?: number }): Promise<Buffer> {
  const maxWindow = Math.max(opts.maxWindow ?? opts.limit, 8 * 1024 * 1024);
  const frames: FrameInfo[] = [];
  for (let pos = 0; pos < input.length; ) {
    const f = frameAt(input, pos);
    if (f.windowSize > maxWindow) {
      throw new EstargzError('too-large', 'zstd: frame window larger than allowed', { windowSize: f.windowSize, maxWindow });
    }
    frames.push(f);
    pos = f.end;
  }
  const parts: Buffer[] = [];
  let total = 0;
  const want = opts.stopAfter ?? Infinity;
  const stop = new Error('enough output');
  for (const f of frames) {
    if (f.skippable) continue;
    const d = new Decompress((data) => {
      if (total >= want) throw stop; // one block past the goal is enough; end this frame now
      total += data.length;
      if (opts.stopAfter === undefined && total > opts.limit) {
        throw new EstargzError('too-large', 'zstd: decompressed data larger than allowed', { limit: opts.limit });
      }
      parts.push(Buffer.from(data));
    });
    try {
      for (let pos = f.start; pos < f.end && total < want; pos += PUSH_SLICE) {
        const end = Math.min(f.end, pos + PUSH_SLICE);
        d.push(input.subarray(pos, end), end === f.end);
        if (end < f.end) await new Promise<void>((resolve) => setImmediate(resolve));
      }
    } catch (e) {
      if (e === stop) break;
      if (e instanceof EstargzError) throw e;
      throw corrupt('zstd: invalid compressed data', { message: e instanceof Error ? e.message : String(e) }, e);
    }
    if (total >= want) break;
  }
  const out = Buffer.concat(parts, total);
  return opts.stopAfter === undefined ? out : out.subarray(0, Math.min(out.length, opts.stopAfter));
}
