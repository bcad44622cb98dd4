// What an upstream announces about a blob body, checked before any of it is passed on. Clients get
// their Content-Length from what we return here (a 206's from its Content-Range), so a range that
// is not the one asked for, a Content-Length that disagrees with it, or a body longer than its
// length would let an upstream write past the end of our answer, into the client's next one on a
// kept-alive connection. undici frames a body by its Content-Length but not a chunked one, and it
// cannot know the length we announce: holding the body to it is ours.
import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import { digestOf, type Digest } from '../oci/digest.js';
import { satisfy, type ByteRange, type RangeRequest } from '../oci/range.js';
import { framingError, header, type ErrorContext } from './errors.js';

type Headers = Record<string, string | string[] | undefined>;

/** A decimal Content-Length or Content-Range figure; beyond 2^53 it would not be exact. */
const FIGURE = /^\d{1,15}$/;

/** The announced Content-Length, undefined when there is none (a chunked body). */
export function contentLength(ctx: ErrorContext, headers: Headers): number | undefined {
  const v = header(headers, 'content-length')?.trim();
  if (v === undefined) return undefined;
  if (!FIGURE.test(v)) throw framingError(ctx, `sent an unusable Content-Length "${v.slice(0, 40)}"`);
  return Number(v);
}

/** The length of a whole blob (a 200), checked: only the empty blob may be empty. */
export function wholeLength(ctx: ErrorContext, headers: Headers, digest: Digest, knownSize: number | undefined): number | undefined {
  const length = contentLength(ctx, headers);
  if (length === 0 && digestOf(Buffer.alloc(0), digest.algorithm).value !== digest.value) {
    throw framingError(ctx, 'sent an empty body for a blob that is not empty', { contentLength: 0 });
  }
  if (length !== undefined && knownSize !== undefined && length !== knownSize) {
    throw framingError(ctx, `sent ${length} bytes for a blob of ${knownSize}`, { contentLength: length, size: knownSize });
  }
  return length;
}

/**
 * The range a 206 holds, when it is the range asked for: the same start, no further than the end
 * asked (it may stop short, at the blob's end), inside its total, with a Content-Length (if any)
 * of exactly its length. A suffix range can only be checked against a total, so one is required.
 */
export function answeredRange(ctx: ErrorContext, headers: Headers, asked: RangeRequest, knownSize: number | undefined): { range: ByteRange; total: number | undefined } {
  const text = header(headers, 'content-range')?.trim() ?? '';
  const fault = (problem: string) => framingError(ctx, `answered a Range with ${problem}`, { contentRange: text.slice(0, 100), asked: asHttpWrites(asked) });
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(text);
  if (!m || !FIGURE.test(m[1]!) || !FIGURE.test(m[2]!) || (m[3] !== '*' && !FIGURE.test(m[3]!))) throw fault('an unusable Content-Range');
  const range = { start: Number(m[1]), end: Number(m[2]) + 1 }; // the header names the last byte
  const total = m[3] === '*' ? undefined : Number(m[3]);
  if (range.end <= range.start) throw fault('an inverted Content-Range');
  if (total !== undefined && knownSize !== undefined && total !== knownSize) throw fault(`a total other than the blob's size (${knownSize})`);
  const size = total ?? knownSize;
  if (size !== undefined && range.end > size) throw fault('a Content-Range beyond the blob');
  let expected: { start: number; end: number | undefined };
  if ('suffix' in asked) {
    if (size === undefined) throw fault('a suffix range of unknown total');
    try {
      expected = satisfy(asked, size);
    } catch {
      throw fault('a range it should have refused');
    }
  } else expected = asked;
  if (range.start !== expected.start || (expected.end !== undefined && range.end > expected.end)) throw fault('a range other than the one asked for');
  const length = contentLength(ctx, headers);
  if (length !== undefined && length !== range.end - range.start) throw fault(`a Content-Length (${length}) other than its Content-Range's`);
  return { range, total };
}

/** The range asked, in an error's detail, with its last byte as the Range header named it. */
function asHttpWrites(asked: RangeRequest): { start: number; end: number | undefined } | { suffix: number } {
  return 'suffix' in asked || asked.end === undefined ? asked : { start: asked.start, end: asked.end - 1 };
}

/**
 * The body, held to exactly `length` bytes: nothing past them is ever passed on, and the last byte
 * is held back until the upstream's body ended, so that a body longer or shorter than announced
 * errors instead of looking complete. `onBytes` is told of every chunk received.
 */
export function exactly(ctx: ErrorContext, body: Readable, length: number, onBytes?: (bytes: number) => void): Readable {
  let received = 0;
  let last: Buffer | undefined;
  const cut = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      received += chunk.length;
      onBytes?.(chunk.length);
      if (received > length) return done(framingError(ctx, `sent more than the ${length} bytes it announced`, { length }));
      if (received === length && chunk.length > 0) {
        last = chunk.subarray(chunk.length - 1);
        chunk = chunk.subarray(0, chunk.length - 1);
      }
      done(null, chunk);
    },
    flush(done: TransformCallback) {
      if (received < length) return done(framingError(ctx, `ended its body at ${received} of the ${length} bytes it announced`, { length, received }));
      done(null, last);
    },
  });
  return pipeline(body, cut, () => undefined); // errors reach the reader through `cut`
}

/** The body as it is, `onBytes` told of every chunk received (for a body of no announced length). */
export function counted(body: Readable, onBytes: (bytes: number) => void): Readable {
  const count = new Transform({
    transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback) {
      onBytes(chunk.length);
      done(null, chunk);
    },
  });
  return pipeline(body, count, () => undefined);
}
