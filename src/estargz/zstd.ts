// zstd decompression on Node 20 (whose zlib has no zstd) through fzstd, a pure-JS decoder.
//
// Before anything is handed to fzstd, the input is walked frame by frame (headers and block
// headers only) so that a hostile frame cannot make the decoder allocate a huge window, and it is
// pushed a few blocks at a time: a zstd block never decodes to more than 128 KiB, so the output
// held between two yields is bounded however well the frame compresses. Skippable frames are
// stepped over.
import { Decompress } from 'fzstd';
import { EstargzError, corrupt } from './errors.js';

const ZSTD_MAGIC = 0xfd2fb528;
/** Blocks pushed to the decoder at once (at most 8 × 128 KiB of output per push). */
const BLOCKS_PER_PUSH = 8;

interface FrameInfo {
  readonly start: number;
  readonly end: number;
  readonly skippable: boolean;
  readonly windowSize: number;
  /** Where every BLOCKS_PER_PUSH-th block ends (the decoder is fed up to these). */
  readonly cuts: readonly number[];
}

function frameAt(b: Buffer, pos: number): FrameInfo {
  if (pos + 8 <= b.length && (b.readUInt32LE(pos) & 0xfffffff0) === 0x184d2a50) {
    const end = pos + 8 + b.readUInt32LE(pos + 4);
    if (end > b.length) throw corrupt('zstd: truncated skippable frame', { at: pos });
    return { start: pos, end, skippable: true, windowSize: 0, cuts: [] };
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
  const cuts: number[] = [];
  for (let blocks = 1; ; blocks++) {
    if (p + 3 > b.length) throw corrupt('zstd: truncated block header', { at: p });
    const bh = (b[p] ?? 0) | ((b[p + 1] ?? 0) << 8) | ((b[p + 2] ?? 0) << 16);
    const last = bh & 1;
    const type = (bh >> 1) & 3;
    const size = bh >>> 3;
    if (type === 3) throw corrupt('zstd: reserved block type', { at: p });
    p += 3 + (type === 1 ? 1 : size);
    if (p > b.length) throw corrupt('zstd: truncated block', { at: p });
    if (last) break;
    if (blocks % BLOCKS_PER_PUSH === 0) cuts.push(p);
  }
  p += checksum ? 4 : 0;
  if (p > b.length) throw corrupt('zstd: truncated frame checksum', { at: p });
  return { start: pos, end: p, skippable: false, windowSize, cuts };
}

/**
 * Yields the decompressed bytes of the zstd frames in `input`, a few blocks at a time; stop
 * iterating to stop decoding. A frame may ask for a window of at most `maxWindow` (never below 8 MiB).
 */
export async function* zstdStream(input: Buffer, maxWindow: number): AsyncGenerator<Buffer> {
  const window = Math.max(maxWindow, 8 * 1024 * 1024);
  const frames: FrameInfo[] = [];
  for (let pos = 0; pos < input.length; ) {
    const f = frameAt(input, pos);
    if (f.windowSize > window) throw new EstargzError('too-large', 'zstd: frame window larger than allowed', { windowSize: f.windowSize, maxWindow: window });
    frames.push(f);
    pos = f.end;
  }
  for (const f of frames) {
    if (f.skippable) continue;
    let out: Buffer[] = [];
    const d = new Decompress((data) => out.push(Buffer.from(data)));
    let pos = f.start;
    for (const cut of [...f.cuts, f.end]) {
      try {
        d.push(input.subarray(pos, cut), cut === f.end);
      } catch (e) {
        throw corrupt('zstd: invalid compressed data', { message: e instanceof Error ? e.message : String(e) }, e);
      }
      pos = cut;
      const ready = out;
      out = [];
      for (const b of ready) yield b;
      await new Promise<void>((resolve) => setImmediate(resolve)); // a long frame does not hold the event loop
    }
  }
}
