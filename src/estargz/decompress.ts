// Bounded decompression of gzip members (node:zlib, off the main thread) and zstd frames.
//
// decompress(c, input, { stopAfter }) returns the first `stopAfter` bytes and stops inflating as
// soon as it has them (a member holds a payload followed by unrelated tar bytes; ESTARGZ.md §4.1).
// decompress(c, input, { limit }) returns everything, or throws 'too-large' past `limit`.
// Invalid data is 'corrupt'; data that ends before `stopAfter` bytes is 'corrupt' too.
import { createGunzip } from 'node:zlib';
import { EstargzError, corrupt } from './errors.js';
import type { Compression } from './types.js';
import { zstdDecompress } from './zstd.js';

export interface DecompressOptions {
  /** Maximum output when reading everything (no stopAfter). */
  readonly limit: number;
  /** Return exactly this many bytes (or fail as corrupt if the data holds fewer). */
  readonly stopAfter?: number;
  /** zstd: largest window a frame may declare (default `limit`). */
  readonly maxWindow?: number;
}

function gunzip(input: Buffer, opts: DecompressOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const want = opts.stopAfter ?? Infinity;
    const parts: Buffer[] = [];
    let total = 0;
    let done = false;
    const z = createGunzip();
    const finish = (err?: EstargzError): void => {
      if (done) return;
      done = true;
      z.removeAllListeners('data');
      z.destroy();
      if (err) reject(err);
      else resolve(Buffer.concat(parts, total));
    };
    z.on('data', (chunk: Buffer) => {
      if (done) return;
      parts.push(chunk);
      total += chunk.length;
      if (total >= want) finish();
      else if (opts.stopAfter === undefined && total > opts.limit) {
        finish(new EstargzError('too-large', 'gzip: decompressed data larger than allowed', { limit: opts.limit }));
      }
    });
    z.on('error', (e: Error) => finish(corrupt('gzip: invalid compressed data', { message: e.message }, e)));
    z.on('end', () => finish());
    z.end(input);
  });
}

export async function decompress(compression: Compression, input: Buffer, opts: DecompressOptions): Promise<Buffer> {
  const out = compression === 'gzip' ? await gunzip(input, opts) : await zstdDecompress(input, opts);
  if (opts.stopAfter === undefined) return out;
  if (out.length < opts.stopAfter) {
    throw corrupt(`${compression}: compressed range holds less data than the TOC says`, { want: opts.stopAfter, got: out.length });
  }
  return out.subarray(0, opts.stopAfter);
}
