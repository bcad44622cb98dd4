// Decompression of gzip members (node:zlib, off the main thread) and zstd frames, streamed.
//
// inflate(c, input) yields the output as it is produced, in slices of at most OUT_SLICE bytes
// (gzip) or a few zstd blocks, and inflates no further than the consumer reads: stop iterating
// and the inflater stops. Nothing here ever holds a whole chunk or file, so a member that inflates
// far beyond what the TOC says (a gzip bomb) costs only the bytes the caller takes.
// decompress(c, input, { limit }) collects everything (for TOCs), or throws 'too-large' past `limit`.
// Invalid data is 'corrupt'; errors of the input itself pass through.
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { EstargzError, corrupt } from './errors.js';
import type { Compression } from './types.js';
import { zstdStream } from './zstd.js';

/** Output slice of the gzip inflater. */
export const OUT_SLICE = 64 * 1024;

export interface InflateOptions {
  /** zstd: largest window a frame may declare. */
  readonly maxWindow: number;
  /** zstd: the compressed input is collected before decoding (its frames are walked first); beyond this → 'too-large'. */
  readonly maxInput: number;
}

async function* gunzipStream(input: AsyncIterable<Buffer> | Iterable<Buffer>): AsyncGenerator<Buffer> {
  const z = createGunzip({ chunkSize: OUT_SLICE });
  const feed = Readable.from(input, { objectMode: false });
  let inputError: unknown;
  feed.once('error', (e) => {
    inputError = e;
    z.destroy();
  });
  feed.pipe(z);
  try {
    for await (const out of z) yield out as Buffer;
  } catch (e) {
    if (inputError !== undefined) throw inputError;
    throw corrupt('gzip: invalid compressed data', { message: e instanceof Error ? e.message : String(e) }, e);
  } finally {
    feed.destroy();
    z.destroy();
  }
  if (inputError !== undefined) throw inputError;
}

async function collect(input: AsyncIterable<Buffer> | Iterable<Buffer>, max: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const b of input) {
    total += b.length;
    if (total > max) throw new EstargzError('too-large', 'zstd: compressed range larger than allowed', { max });
    parts.push(b);
  }
  return Buffer.concat(parts, total);
}

/** Streams the decompressed bytes of `input` (see the top of this file). */
export async function* inflate(compression: Compression, input: AsyncIterable<Buffer> | Iterable<Buffer>, opts: InflateOptions): AsyncGenerator<Buffer> {
  if (compression === 'gzip') yield* gunzipStream(input);
  else yield* zstdStream(await collect(input, opts.maxInput), opts.maxWindow);
}

/** All decompressed bytes of `input`, at most `limit` of them ('too-large' beyond). */
export async function decompress(compression: Compression, input: Buffer, opts: { limit: number; maxWindow?: number }): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  for await (const b of inflate(compression, [input], { maxWindow: Math.max(opts.maxWindow ?? opts.limit, 8 << 20), maxInput: input.length })) {
    total += b.length;
    if (total > opts.limit) throw new EstargzError('too-large', `${compression}: decompressed data larger than allowed`, { limit: opts.limit });
    parts.push(b);
  }
  return Buffer.concat(parts, total);
}
