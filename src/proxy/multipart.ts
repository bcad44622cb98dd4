// The 206 answer to a request with several ranges, as stargz-snapshotter sends: a
// `multipart/byteranges` body (RFC 9110 §14.6), or a plain ranged body when the ranges were
// coalesced into one (the RFC allows either; one part needs no multipart for the client to parse).
// Parts are opened one after another, so memory stays bounded.
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { RangedParts } from '../core/blob-cache.js';
import { contentRange } from '../oci/range.js';

export function rangesBody(ranged: RangedParts): { headers: Record<string, string>; stream: Readable } {
  const { parts, size } = ranged;
  if (parts.length === 1) {
    const { range, open } = parts[0]!;
    const headers = { 'content-range': contentRange(range, size), 'content-length': String(range.end - range.start) };
    return { headers, stream: released(ranged, (async function* () { yield* await open(); })()) };
  }
  const boundary = `pullthrough-${randomBytes(12).toString('hex')}`;
  const heads = parts.map(
    (p, i) =>
      Buffer.from(`${i === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: ${contentRange(p.range, size)}\r\n\r\n`),
  );
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  const length = heads.reduce((n, h, i) => n + h.length + parts[i]!.range.end - parts[i]!.range.start, tail.length);
  const body = (async function* () {
    for (const [i, part] of parts.entries()) {
      yield heads[i]!;
      yield* await part.open();
    }
    yield tail;
  })();
  return { headers: { 'content-type': `multipart/byteranges; boundary=${boundary}`, 'content-length': String(length) }, stream: released(ranged, body) };
}

function released(ranged: RangedParts, chunks: AsyncIterable<Buffer>): Readable {
  const stream = Readable.from(chunks, { objectMode: false });
  if (ranged.release) stream.once('close', ranged.release);
  return stream;
}
