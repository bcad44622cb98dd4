// Streaming tar input: plain tar or tar+gzip (detected by its magic bytes), read entry by entry
// with bounded memory. Each entry keeps its raw header blocks (including PAX / GNU long-name
// extension blocks) so the eStargz converter can pass them through byte for byte; the file API
// reads plain layers with it too.
import { Readable, pipeline } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { TarError, corrupt } from './errors.js';
import { BLOCK, applyPax, isZeroBlock, padTo512, parseHeaderBlock, parsePax, type TarHeader } from './header.js';

const EMPTY = Buffer.alloc(0);
const MAX_EXTENSION_BYTES = 1024 * 1024;
/** Typeflags whose size field carries no content (as Go's archive/tar treats them). */
const HEADER_ONLY = new Set(['1', '2', '3', '4', '5', '6']);
const SUPPORTED = new Set(['0', '\0', '7', ...HEADER_ONLY]);

/** Pulls exact byte counts out of an async iterable of chunks. */
export class ByteReader {
  private buf: Buffer = EMPTY;
  private done = false;
  private readonly it: AsyncIterator<Uint8Array>;

  constructor(src: AsyncIterable<Uint8Array>) {
    this.it = src[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    while (this.buf.length === 0 && !this.done) {
      const r = await this.it.next();
      if (r.done) this.done = true;
      else this.buf = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
    }
    return this.buf.length > 0;
  }

  /** Up to n bytes (at least one), or undefined at the end of the input. */
  async readUpTo(n: number): Promise<Buffer | undefined> {
    if (!(await this.fill())) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(out.length);
    return out;
  }

  /** Exactly n bytes; undefined if the input ends before the first byte; corrupt if it ends midway. */
  async readExact(n: number): Promise<Buffer | undefined> {
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      const b = await this.readUpTo(n - got);
      if (!b) {
        if (got === 0) return undefined;
        throw corrupt('tar input truncated', { want: n, got });
      }
      parts.push(b);
      got += b.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, n);
  }

  async close(): Promise<void> {
    await this.it.return?.();
  }
}

/** Wraps the input so that tar+gzip is gunzipped on the fly; plain tar passes through. */
export async function* maybeGunzip(src: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  const it = src[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done) return;
  const rest: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => it };
  const head = first.value;
  if (head[0] !== 0x1f || head[1] !== 0x8b) {
    yield head;
    yield* rest;
    return;
  }
  async function* all(): AsyncGenerator<Uint8Array> {
    yield head;
    yield* rest;
  }
  const gunzip = createGunzip();
  pipeline(Readable.from(all(), { objectMode: false }), gunzip, () => {}); // errors surface on gunzip
  try {
    for await (const chunk of gunzip) yield chunk as Buffer;
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code.startsWith('Z_')) {
      throw corrupt('tar+gzip input: invalid gzip data', { message: (e as Error).message }, e);
    }
    throw e; // the input's own error (network, abort) passes through
  }
}

export interface RawTarEntry {
  /** Position of the entry in the input (0-based, extension headers not counted). */
  readonly ordinal: number;
  /** The header block and any extension blocks before it, exactly as read. */
  readonly raw: Buffer;
  /** The effective header (PAX and GNU long names applied). */
  readonly header: TarHeader;
  /** Content bytes that follow (0 for header-only types). */
  readonly bodySize: number;
  /** Reads the next up-to-n content bytes; undefined once the content is exhausted. */
  readBody(n: number): Promise<Buffer | undefined>;
}

/**
 * Iterates the entries of a tar stream, stopping at the end-of-archive marker (or a clean end of
 * input). Unread content of an entry is skipped when the iteration moves on.
 */
export async function* tarEntries(reader: ByteReader): AsyncGenerator<RawTarEntry> {
  let globalPax = new Map<string, Buffer>();
  for (let ordinal = 0; ; ordinal++) {
    const raw: Buffer[] = [];
    let pax = new Map<string, Buffer>();
    let longName: string | undefined;
    let longLink: string | undefined;
    let h: TarHeader;
    for (;;) {
      const block = await reader.readExact(BLOCK);
      if (!block || isZeroBlock(block)) return;
      h = parseHeaderBlock(block);
      raw.push(block);
      if (!['x', 'g', 'L', 'K'].includes(h.typeflag)) break;
      if (h.size > MAX_EXTENSION_BYTES) throw new TarError('too-large', 'tar extension header too large', { size: h.size });
      const data = (await reader.readExact(h.size + padTo512(h.size))) ?? EMPTY;
      if (data.length < h.size) throw corrupt('tar input truncated');
      raw.push(data);
      const payload = data.subarray(0, h.size);
      if (h.typeflag === 'x') pax = parsePax(payload);
      else if (h.typeflag === 'g') globalPax = new Map([...globalPax, ...parsePax(payload)]);
      else if (h.typeflag === 'L') longName = payload.toString('utf8').replace(/\0+$/, '');
      else longLink = payload.toString('utf8').replace(/\0+$/, '');
    }
    if (longName !== undefined) h.name = longName;
    if (longLink !== undefined) h.linkName = longLink;
    applyPax(h, new Map([...globalPax, ...pax]));
    if (!SUPPORTED.has(h.typeflag) || [...pax.keys()].some((k) => k.startsWith('GNU.sparse.'))) {
      throw new TarError('unsupported', 'unsupported tar entry type', { name: h.name.slice(0, 500), typeflag: h.typeflag });
    }
    const bodySize = HEADER_ONLY.has(h.typeflag) ? 0 : h.size;
    let left = bodySize;
    const entry: RawTarEntry = {
      ordinal,
      raw: Buffer.concat(raw),
      header: h,
      bodySize,
      readBody: async (n) => {
        if (left === 0) return undefined;
        const b = await reader.readUpTo(Math.min(n, left));
        if (!b) throw corrupt('tar input truncated', { name: h.name.slice(0, 500) });
        left -= b.length;
        return b;
      },
    };
    yield entry;
    while (left > 0) await entry.readBody(BLOCK * 128);
    if (bodySize > 0 && (await reader.readExact(padTo512(bodySize))) === undefined && padTo512(bodySize) > 0) {
      throw corrupt('tar input truncated', { name: h.name.slice(0, 500) });
    }
  }
}
