// A `multipart/byteranges` body (RFC 9110 §14.6) for a request with several ranges, as
// stargz-snapshotter sends. Parts are opened one after another, so memory stays bounded.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { RangedParts } from './blob-cache.js';

export function multipartRanges(ranged: RangedParts): { contentType: string; length: number; stream: Readable } {
  const boundary = `pullthrough-${randomBytes(12).toString('hex')}`;
  const heads = ranged.parts.map(
    (p, i) =>
      Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes ${p.range.start}-${p.range.end}/${ranged.size}\r\n\r\n`),
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const length = heads.reduce((n, h, i) => n + h.length + ranged.parts[i]!.range.end - ranged.parts[i]!.range.start + 1, tail.length);
  const stream = Readable.from(
    (async function* () {
      for (const [i, part] of ranged.parts.entries()) {
        yield heads[i]!;
        yield* await part.open();
      }
      yield tail;
    })(),
    { objectMode: false },
  );
  if (ranged.release) stream.once('close', ranged.release);
  return { contentType: `multipart/byteranges; boundary=${boundary}`, length, stream };
}
