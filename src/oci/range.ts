// Byte ranges: what a client asked for, and what it resolves to against a blob's size. Every range
// in the code is half-open, [start, end), so its length is end - start and ranges that touch share
// a boundary; only HTTP writes the last byte instead of the end, and that form lives in the
// parsers and formatters of Range and Content-Range (here, and where a response is framed).
import { RegistryError } from './errors.js';

/** The bytes [start, end) of a blob. */
export interface ByteRange {
  readonly start: number;
  readonly end: number;
}

/** A single byte range as asked for: [start, end), from `start` on (`end` undefined), or the last N bytes. */
export type RangeRequest = { start: number; end: number | undefined } | { suffix: number };

/** Resolves a range against the blob's size, or throws RANGE_INVALID (416). */
export function satisfy(range: RangeRequest, size: number): ByteRange {
  if ('suffix' in range) {
    if (range.suffix === 0 || size === 0) throw rangeInvalid(size);
    return { start: Math.max(0, size - range.suffix), end: size };
  }
  if (range.start >= size) throw rangeInvalid(size);
  return { start: range.start, end: Math.min(range.end ?? size, size) };
}

/**
 * Satisfied ranges in ascending order, overlapping and adjacent ones merged (RFC 9110 §15.3.7
 * allows it whatever order they were asked in), so an answer never holds a byte twice.
 */
export function coalesce(ranges: readonly ByteRange[]): ByteRange[] {
  const out: ByteRange[] = [];
  for (const r of [...ranges].sort((a, b) => a.start - b.start)) {
    const last = out[out.length - 1];
    if (last && r.start <= last.end) out[out.length - 1] = { start: last.start, end: Math.max(last.end, r.end) };
    else out.push({ start: r.start, end: r.end });
  }
  return out;
}

/** `first-last`, the positions of a range's first and last byte, as HTTP writes them. */
export function firstLast(range: ByteRange): string {
  return `${range.start}-${range.end - 1}`;
}

/** The `Content-Range` header value of a part of a blob of `size` bytes (`*`: unknown). */
export function contentRange(range: ByteRange, size: number | undefined): string {
  return `bytes ${firstLast(range)}/${size ?? '*'}`;
}

/** The `Range` header value for a request. */
export function rangeHeader(range: RangeRequest): string {
  if ('suffix' in range) return `bytes=-${range.suffix}`;
  return `bytes=${range.start}-${range.end === undefined ? '' : range.end - 1}`;
}

/** Parses a single-range `Range: bytes=...` header; anything else is ignored, as RFC 9110 allows. */
export function parseRange(header: string | undefined): RangeRequest | undefined {
  const ranges = parseRanges(header);
  return ranges?.length === 1 ? ranges[0] : undefined;
}

/**
 * Parses `Range: bytes=a-b, c-, -n`; undefined when any part is malformed, or for more than 64
 * parts: such a Range is ignored and the whole blob sent (200), as RFC 9110 §14.2 allows for
 * signs of a broken or hostile client, rather than a 416 that would call the ranges unsatisfiable.
 */
export function parseRanges(header: string | undefined): RangeRequest[] | undefined {
  const m = header ? /^bytes=(.+)$/.exec(header.trim()) : null;
  if (!m) return undefined;
  const parts = m[1]!.split(',');
  if (parts.length > 64) return undefined;
  const out: RangeRequest[] = [];
  for (const part of parts) {
    const r = /^\s*(\d*)-(\d*)\s*$/.exec(part);
    if (!r || (r[1] === '' && r[2] === '')) return undefined;
    if (r[1] === '') {
      out.push({ suffix: position(r[2]!) });
      continue;
    }
    if (r[2] !== '' && BigInt(r[2]!) < BigInt(r[1]!)) return undefined;
    out.push({ start: position(r[1]!), end: r[2] === '' ? undefined : position(r[2]!) + 1 });
  }
  return out;
}

/**
 * A byte position as a safe integer: longer digit strings are capped, which answers them the same
 * against any real size and keeps `rangeHeader` printing digits (not "2e+21") upstream.
 */
function position(digits: string): number {
  return Math.min(Number(digits), Number.MAX_SAFE_INTEGER);
}

export function rangeInvalid(size: number | undefined): RegistryError {
  return new RegistryError('RANGE_INVALID', { detail: { size: size ?? null }, headers: size === undefined ? {} : { 'content-range': `bytes */${size}` } });
}
