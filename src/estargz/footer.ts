// Footers: the fixed-size trailer that says where the TOC starts (ESTARGZ.md §2).
//
//   eStargz   51 bytes: empty gzip member, FEXTRA with RFC 1952 subfield 'S''G' (LEN 22) holding
//             "%016x" TOC offset + "STARGZ"
//   stargz    47 bytes: same, but the extra field (XLEN 22) is the raw 16 hex digits + "STARGZ"
//   external  46 bytes: subfield 'S''G' (LEN 17) holding "STARGZEXTERNALTOC"; no TOC in the blob
//   zstd      48 bytes: skippable frame (magic 0x184D2A50, size 40) holding LE64 TOC offset,
//             LE64 compressed TOC length, LE64 uncompressed TOC length, LE64 type (1), "GnUlInUx"
//
// parseFooter() tries them in that order on the tail of the blob. The gzip footers are checked
// strictly (header, extra field, the empty stored block and the zero CRC/ISIZE trailer).
import { EstargzError, corrupt } from './errors.js';
import {
  ESTARGZ_FOOTER_SIZE,
  EXTERNAL_TOC_FOOTER_SIZE,
  LEGACY_FOOTER_SIZE,
  ZSTD_FOOTER_SIZE,
  type Footer,
} from './types.js';

const GZIP_HEAD = [0x1f, 0x8b, 0x08, 0x04]; // magic, deflate, FLG = FEXTRA
const EMPTY_STORED_BLOCK = [0x01, 0x00, 0x00, 0xff, 0xff];
const STARGZ = Buffer.from('STARGZ', 'latin1');
const EXTERNAL = Buffer.from('STARGZEXTERNALTOC', 'latin1');
const ZSTD_SKIPPABLE_MAGIC = 0x184d2a50;
const ZSTD_FOOTER_MAGIC = Buffer.from('GnUlInUx', 'latin1');
const ZSTD_MANIFEST_TYPE_CRFS = 1n;

function hasBytes(buf: Buffer, at: number, bytes: readonly number[] | Buffer): boolean {
  for (let i = 0; i < bytes.length; i++) if (buf[at + i] !== bytes[i]) return false;
  return true;
}

/** The gzip frame around an extra field of `xlen` bytes: header at 0, stored block + trailer after. */
function isEmptyGzipMember(f: Buffer, xlen: number): boolean {
  if (f.length !== 12 + xlen + 13 || !hasBytes(f, 0, GZIP_HEAD) || f.readUInt16LE(10) !== xlen) return false;
  const tail = 12 + xlen;
  return hasBytes(f, tail, EMPTY_STORED_BLOCK) && f.readUInt32LE(tail + 5) === 0 && f.readUInt32LE(tail + 9) === 0;
}

function parseHexOffset(hex: Buffer, what: string): number {
  const s = hex.toString('latin1');
  if (!/^[0-9a-fA-F]{16}$/.test(s)) throw corrupt(`${what} footer: TOC offset is not 16 hex digits`, { offset: s });
  const n = BigInt(`0x${s}`);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`${what} footer: TOC offset out of range`, { offset: s });
  return Number(n);
}

function tryEstargz(f: Buffer): number | undefined {
  if (!isEmptyGzipMember(f, 26)) return undefined;
  if (f[12] !== 0x53 || f[13] !== 0x47 || f.readUInt16LE(14) !== 22 || !hasBytes(f, 32, STARGZ)) return undefined;
  return parseHexOffset(f.subarray(16, 32), 'eStargz');
}

function tryLegacy(f: Buffer): number | undefined {
  if (!isEmptyGzipMember(f, 22) || !hasBytes(f, 28, STARGZ)) return undefined;
  return parseHexOffset(f.subarray(12, 28), 'stargz');
}

function isExternal(f: Buffer): boolean {
  return isEmptyGzipMember(f, 21) && f[12] === 0x53 && f[13] === 0x47 && f.readUInt16LE(14) === 17 && hasBytes(f, 16, EXTERNAL);
}

function tryZstd(f: Buffer): { tocOffset: number; compressed: number; uncompressed: number } | undefined {
  if (f.length !== ZSTD_FOOTER_SIZE || f.readUInt32LE(0) !== ZSTD_SKIPPABLE_MAGIC || f.readUInt32LE(4) !== 40) return undefined;
  if (!hasBytes(f, 40, ZSTD_FOOTER_MAGIC)) return undefined;
  const nums = [f.readBigUInt64LE(8), f.readBigUInt64LE(16), f.readBigUInt64LE(24)];
  if (f.readBigUInt64LE(32) !== ZSTD_MANIFEST_TYPE_CRFS) {
    throw new EstargzError('unsupported', 'zstd:chunked footer: unknown manifest type', { type: f.readBigUInt64LE(32).toString() });
  }
  if (nums.some((n) => n > BigInt(Number.MAX_SAFE_INTEGER))) throw corrupt('zstd:chunked footer: value out of range');
  const [tocOffset, compressed, uncompressed] = nums.map(Number) as [number, number, number];
  return { tocOffset, compressed, uncompressed };
}

/**
 * Parses the footer from `tail`, the last `tail.length` bytes of a blob of `blobSize` bytes.
 * Returns undefined when no known footer is there (a plain layer); throws 'corrupt' when a footer
 * is recognised but points outside the blob.
 */
export function parseFooter(tail: Buffer, blobSize: number): Footer | undefined {
  const suffix = (n: number): Buffer | undefined => (tail.length >= n ? tail.subarray(tail.length - n) : undefined);
  const gz = (format: 'estargz' | 'stargz', size: number, parse: (f: Buffer) => number | undefined): Footer | undefined => {
    const f = suffix(size);
    const tocOffset = f && parse(f);
    if (tocOffset === undefined) return undefined;
    if (tocOffset >= blobSize - size) {
      throw corrupt(`${format} footer: TOC offset beyond the blob`, { tocOffset, blobSize, footerSize: size });
    }
    return { format, footerSize: size, tocOffset };
  };
  const found = gz('estargz', ESTARGZ_FOOTER_SIZE, tryEstargz) ?? gz('stargz', LEGACY_FOOTER_SIZE, tryLegacy);
  if (found) return found;
  const z = suffix(ZSTD_FOOTER_SIZE);
  const zf = z && tryZstd(z);
  if (zf) {
    const { tocOffset, compressed, uncompressed } = zf;
    if (tocOffset < 8 || compressed === 0 || tocOffset + compressed > blobSize - ZSTD_FOOTER_SIZE) {
      throw corrupt('zstd:chunked footer: TOC range outside the blob', { tocOffset, compressed, blobSize });
    }
    return { format: 'zstd-chunked', footerSize: ZSTD_FOOTER_SIZE, tocOffset, tocCompressedSize: compressed, tocUncompressedSize: uncompressed };
  }
  const x = suffix(EXTERNAL_TOC_FOOTER_SIZE);
  if (x && isExternal(x)) return { format: 'estargz-external-toc', footerSize: EXTERNAL_TOC_FOOTER_SIZE, tocOffset: -1 };
  return undefined;
}

function gzipFrame(extra: Buffer): Buffer {
  const head = Buffer.from([...GZIP_HEAD, 0, 0, 0, 0, 0x00, 0xff, 0, 0]);
  head.writeUInt16LE(extra.length, 10);
  return Buffer.concat([head, extra, Buffer.from(EMPTY_STORED_BLOCK), Buffer.alloc(8)]);
}

function hex16(tocOffset: number): Buffer {
  if (!Number.isSafeInteger(tocOffset) || tocOffset < 0) throw new RangeError(`invalid TOC offset ${tocOffset}`);
  return Buffer.from(tocOffset.toString(16).padStart(16, '0'), 'latin1');
}

/** The 51-byte eStargz footer for a TOC member starting at `tocOffset`. */
export function estargzFooter(tocOffset: number): Buffer {
  const sub = Buffer.from([0x53, 0x47, 22, 0]);
  return gzipFrame(Buffer.concat([sub, hex16(tocOffset), STARGZ]));
}

/** The 47-byte legacy (CRFS) stargz footer. */
export function legacyStargzFooter(tocOffset: number): Buffer {
  return gzipFrame(Buffer.concat([hex16(tocOffset), STARGZ]));
}

/** The 46-byte footer of an eStargz blob whose TOC is kept in a separate image. */
export function externalTocFooter(): Buffer {
  return gzipFrame(Buffer.concat([Buffer.from([0x53, 0x47, 17, 0]), EXTERNAL]));
}
