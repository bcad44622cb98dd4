// openEstargz(): footer → TOC → verified index, over any RangeSource (ESTARGZ.md §2.5).
//
// Round trips: one speculative tail read of MAX_FOOTER_SIZE (51) bytes, or, with
// `tocOffsetHint`, one read of [hint, size) that holds TOC and footer together; then one read of
// the TOC range when the first read did not already cover it. The TOC digest (sha256 of the raw
// JSON bytes) is checked against `expectedTocDigest` before the JSON is decoded.
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { decompress } from './decompress.js';
import { buildIndex, type Layout } from './entries.js';
import { EstargzError, corrupt } from './errors.js';
import { parseFooter } from './footer.js';
import { parseTocJson, unwrapTocTar } from './toc.js';
import {
  DEFAULT_MAX_CHUNK_BYTES,
  DEFAULT_MAX_TOC_BYTES,
  MAX_FOOTER_SIZE,
  type ByteRange,
  type EstargzIndex,
  type Footer,
  type RangeSource,
} from './types.js';

export interface OpenOptions {
  /** The layer's `containerd.io/snapshot/stargz/toc.digest` annotation; mismatch → 'digest-mismatch'. */
  readonly expectedTocDigest?: string;
  /** Where the caller believes the TOC starts (e.g. from the zstd manifest-position annotation). */
  readonly tocOffsetHint?: number;
  /** Upper bound on the uncompressed TOC JSON (default 64 MiB); beyond it → 'too-large'. */
  readonly maxTocBytes?: number;
  /** Upper bound on innerOffset + size of a piece to decompress (default 64 MiB). */
  readonly maxChunkBytes?: number;
  /** For external-TOC blobs: the bytes of the matching layer of the `-esgztoc` image (tar+gzip). */
  readonly externalToc?: Uint8Array;
  /** Let pieces without any digest (legacy stargz) be returned unverified. Default false. */
  readonly allowUnverified?: boolean;
  readonly signal?: AbortSignal;
  /** Latency hooks; the package never logs. */
  readonly onTiming?: (phase: 'footer' | 'toc' | 'decode', ms: number) => void;
}

/** Reads exactly [offset, offset + length) or throws. */
export async function readExact(src: RangeSource, offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
  if (offset < 0 || length < 0 || offset + length > src.size) {
    throw corrupt('read outside the blob', { offset, length, blobSize: src.size });
  }
  if (length === 0) return Buffer.alloc(0);
  const b = await src.read(offset, length, signal);
  if (b.length !== length) throw corrupt('source returned a short read', { offset, length, got: b.length });
  return b;
}

/** A buffer that holds the bytes [start, start + bytes.length) of the blob. */
interface Held {
  start: number;
  bytes: Buffer;
}

function slice(held: Held, span: ByteRange): Buffer | undefined {
  if (span.start < held.start || span.end > held.start + held.bytes.length) return undefined;
  return held.bytes.subarray(span.start - held.start, span.end - held.start);
}

export function sha256(b: Uint8Array): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function timed<T>(opts: OpenOptions, phase: 'footer' | 'toc' | 'decode', p: Promise<T>): Promise<T> {
  if (!opts.onTiming) return p;
  const t0 = performance.now();
  return p.finally(() => opts.onTiming?.(phase, performance.now() - t0));
}

async function readTail(src: RangeSource, opts: OpenOptions, maxTocBytes: number): Promise<Held> {
  const hint = opts.tocOffsetHint;
  const hintOk = hint !== undefined && Number.isSafeInteger(hint) && hint >= 0 && hint < src.size && src.size - hint <= maxTocBytes + 1024 * 1024;
  const start = hintOk ? hint : Math.max(0, src.size - MAX_FOOTER_SIZE);
  return { start, bytes: await readExact(src, start, src.size - start, opts.signal) };
}

/** Compressed TOC bytes → raw JSON bytes, plus the facts that go into the Layout. */
async function loadToc(src: RangeSource, footer: Footer, held: Held, opts: OpenOptions, maxTocBytes: number) {
  const footerOffset = src.size - footer.footerSize;
  const fetch = async (span: ByteRange): Promise<Buffer> => slice(held, span) ?? readExact(src, span.start, span.end - span.start, opts.signal);
  if (footer.format === 'estargz-external-toc') {
    if (!opts.externalToc) throw new EstargzError('external-toc', 'the TOC of this layer is in a separate image', { blobSize: src.size });
    const tar = await decompress('gzip', Buffer.from(opts.externalToc), { limit: maxTocBytes + 64 * 1024 });
    const span = { start: footerOffset, end: footerOffset };
    return { json: unwrapTocTar(tar, maxTocBytes), tocRange: span, dataEnd: footerOffset, compressedDigest: undefined };
  }
  if (footer.format === 'zstd-chunked') {
    const clen = footer.tocCompressedSize ?? 0;
    const ulen = footer.tocUncompressedSize ?? 0;
    if (ulen > maxTocBytes || clen > maxTocBytes + 64 * 1024) {
      throw new EstargzError('too-large', 'TOC larger than maxTocBytes', { size: ulen, compressedSize: clen, maxTocBytes });
    }
    const tocRange = { start: footer.tocOffset, end: footer.tocOffset + clen };
    const skippable = slice(held, { start: tocRange.start - 8, end: tocRange.start });
    if (skippable && (skippable.readUInt32LE(0) !== 0x184d2a50 || skippable.readUInt32LE(4) < clen)) {
      throw corrupt('zstd:chunked: TOC is not wrapped in a skippable frame', { tocOffset: footer.tocOffset });
    }
    const compressed = await timed(opts, 'toc', fetch(tocRange));
    const json = await decompress('zstd', compressed, { limit: maxTocBytes });
    if (json.length !== ulen) throw corrupt('zstd:chunked: TOC length differs from the footer', { want: ulen, got: json.length });
    return { json, tocRange, dataEnd: footer.tocOffset - 8, compressedDigest: sha256(compressed) };
  }
  const tocRange = { start: footer.tocOffset, end: footerOffset };
  if (tocRange.end - tocRange.start > maxTocBytes + maxTocBytes / 100 + 64 * 1024) {
    throw new EstargzError('too-large', 'compressed TOC larger than maxTocBytes allows', { compressedSize: tocRange.end - tocRange.start, maxTocBytes });
  }
  const compressed = await timed(opts, 'toc', fetch(tocRange));
  const tar = await decompress('gzip', compressed, { limit: maxTocBytes + 64 * 1024 });
  return { json: unwrapTocTar(tar, maxTocBytes), tocRange, dataEnd: footer.tocOffset, compressedDigest: undefined };
}

/**
 * Opens an eStargz / stargz / zstd:chunked blob: finds the footer, fetches and verifies the TOC,
 * and returns the index. Throws EstargzError ('not-estargz' for a plain layer); errors of the
 * source itself (network, abort) pass through unchanged.
 */
export async function openEstargz(src: RangeSource, opts: OpenOptions = {}): Promise<EstargzIndex> {
  const maxTocBytes = opts.maxTocBytes ?? DEFAULT_MAX_TOC_BYTES;
  if (!Number.isSafeInteger(src.size) || src.size < 0) throw new RangeError(`invalid source size ${src.size}`);
  const held = await timed(opts, 'footer', readTail(src, opts, maxTocBytes));
  const footer = parseFooter(held.bytes, src.size);
  if (!footer) throw new EstargzError('not-estargz', 'no eStargz, stargz or zstd:chunked footer at the end of the blob', { blobSize: src.size });
  const toc = await loadToc(src, footer, held, opts, maxTocBytes);
  const tocDigest = sha256(toc.json);
  if (opts.expectedTocDigest !== undefined && opts.expectedTocDigest !== tocDigest) {
    throw new EstargzError('digest-mismatch', 'TOC digest does not match the expected digest', { expected: opts.expectedTocDigest, got: tocDigest });
  }
  const t0 = performance.now();
  const layout: Layout = {
    format: footer.format,
    compression: footer.format === 'zstd-chunked' ? 'zstd' : 'gzip',
    blobSize: src.size,
    footerSize: footer.footerSize,
    footerOffset: src.size - footer.footerSize,
    tocOffset: footer.tocOffset,
    tocRange: toc.tocRange,
    dataEnd: toc.dataEnd,
    tocDigest,
    tocVerified: opts.expectedTocDigest !== undefined,
    tocJson: Buffer.from(toc.json), // a copy, so the decompressed tar around it can be freed
    tocCompressedDigest: toc.compressedDigest,
    allowUnverified: opts.allowUnverified ?? false,
    maxChunkBytes: opts.maxChunkBytes ?? DEFAULT_MAX_CHUNK_BYTES,
  };
  const index = buildIndex(parseTocJson(toc.json), layout);
  opts.onTiming?.('decode', performance.now() - t0);
  return index;
}
