// Tar header blocks: parsing (ustar, GNU, PAX records, base-256 numbers) and a minimal ustar
// encoder. eStargz uses them to unwrap its TOC (`stargz.index.json`) and to write the landmark and
// TOC headers; everything else reads whole archives through stream.ts.
import { corrupt } from './errors.js';

export const BLOCK = 512;

export interface TarHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  typeflag: string;
  linkName: string;
  userName: string;
  groupName: string;
  devMajor: number;
  devMinor: number;
  /** From PAX `SCHILY.xattr.*` records. */
  xattrs: Record<string, Buffer>;
}

export function padTo512(n: number): number {
  return (BLOCK - (n % BLOCK)) % BLOCK;
}

function cstring(b: Buffer, start: number, len: number): string {
  const field = b.subarray(start, start + len);
  const nul = field.indexOf(0);
  return field.subarray(0, nul < 0 ? len : nul).toString('utf8');
}

/** Octal (space/NUL padded) or GNU base-256 number; throws corrupt on garbage. */
function num(b: Buffer, start: number, len: number, field: string): number {
  const f = b.subarray(start, start + len);
  if (f[0] !== undefined && (f[0] & 0x80) !== 0) {
    if (f[0] === 0xff) throw corrupt(`tar header: negative ${field}`);
    let v = BigInt(f[0] & 0x7f);
    for (let i = 1; i < f.length; i++) v = (v << 8n) | BigInt(f[i] ?? 0);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw corrupt(`tar header: ${field} out of range`);
    return Number(v);
  }
  const s = f.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '');
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw corrupt(`tar header: ${field} is not octal`, { value: s.slice(0, 20) });
  return parseInt(s, 8);
}

export function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

function checksumOk(b: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 0x20 : (b[i] ?? 0);
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const want = num(b, 148, 8, 'checksum');
  return want === unsigned || want === signed;
}

/** Parses one 512-byte header block (not a zero block). PAX/GNU extensions are applied by the caller. */
export function parseHeaderBlock(b: Buffer): TarHeader {
  if (b.length < BLOCK) throw corrupt('tar header: short block');
  if (!checksumOk(b)) throw corrupt('tar header: bad checksum');
  const magic = b.subarray(257, 263).toString('latin1');
  let name = cstring(b, 0, 100);
  if (magic === 'ustar\0') {
    const prefix = cstring(b, 345, 155);
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  return {
    name,
    mode: num(b, 100, 8, 'mode'),
    uid: num(b, 108, 8, 'uid'),
    gid: num(b, 116, 8, 'gid'),
    size: num(b, 124, 12, 'size'),
    mtime: num(b, 136, 12, 'mtime'),
    typeflag: String.fromCharCode(b[156] ?? 0),
    linkName: cstring(b, 157, 100),
    userName: cstring(b, 265, 32),
    groupName: cstring(b, 297, 32),
    devMajor: magic.startsWith('ustar') ? num(b, 329, 8, 'devmajor') : 0,
    devMinor: magic.startsWith('ustar') ? num(b, 337, 8, 'devminor') : 0,
    xattrs: {},
  };
}

/** Parses PAX extended-header records ("<len> <key>=<value>\n"). */
export function parsePax(data: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // some writers NUL-pad the record area
    const sp = data.indexOf(0x20, pos);
    const len = sp < 0 ? NaN : Number(data.subarray(pos, sp).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= sp - pos + 1 || pos + len > data.length || data[pos + len - 1] !== 0x0a) {
      throw corrupt('tar: malformed PAX record', { at: pos });
    }
    const rec = data.subarray(sp + 1, pos + len - 1);
    const eq = rec.indexOf(0x3d);
    if (eq < 0) throw corrupt('tar: malformed PAX record', { at: pos });
    out.set(rec.subarray(0, eq).toString('utf8'), Buffer.from(rec.subarray(eq + 1)));
    pos += len;
  }
  return out;
}

/** Applies PAX records to a header (the PAX value wins over the ustar field). */
export function applyPax(h: TarHeader, pax: ReadonlyMap<string, Buffer>): void {
  const numeric = (key: string, set: (n: number) => void): void => {
    const v = pax.get(key);
    if (v === undefined) return;
    const s = v.toString('latin1');
    const n = key === 'mtime' ? Math.floor(Number(s)) : Number(s);
    if (!/^-?[0-9]+(\.[0-9]*)?$/.test(s) || !Number.isSafeInteger(n) || n < 0) throw corrupt(`tar: bad PAX ${key}`, { value: s.slice(0, 40) });
    set(n);
  };
  for (const [key, value] of pax) {
    if (key === 'path') h.name = value.toString('utf8');
    else if (key === 'linkpath') h.linkName = value.toString('utf8');
    else if (key === 'uname') h.userName = value.toString('utf8');
    else if (key === 'gname') h.groupName = value.toString('utf8');
    else if (key.startsWith('SCHILY.xattr.')) h.xattrs[key.slice('SCHILY.xattr.'.length)] = value;
  }
  numeric('size', (n) => (h.size = n));
  numeric('uid', (n) => (h.uid = n));
  numeric('gid', (n) => (h.gid = n));
  numeric('mtime', (n) => (h.mtime = n));
}

function put(b: Buffer, at: number, len: number, s: string): void {
  const bytes = Buffer.from(s, 'utf8');
  if (bytes.length > len) throw new RangeError(`tar field too long: ${s}`);
  bytes.copy(b, at);
}

function putOctal(b: Buffer, at: number, len: number, v: number): void {
  put(b, at, len, `${v.toString(8).padStart(len - 1, '0')}\0`);
}

/** A plain ustar header for a short name (used for landmarks and the TOC entry). */
export function ustarHeader(h: { name: string; size: number; mode?: number; typeflag?: string; mtime?: number }): Buffer {
  const b = Buffer.alloc(BLOCK);
  put(b, 0, 100, h.name);
  putOctal(b, 100, 8, h.mode ?? 0);
  putOctal(b, 108, 8, 0);
  putOctal(b, 116, 8, 0);
  putOctal(b, 124, 12, h.size);
  putOctal(b, 136, 12, h.mtime ?? 0);
  b.fill(0x20, 148, 156);
  put(b, 156, 1, h.typeflag ?? '0');
  put(b, 257, 8, 'ustar\x0000');
  let sum = 0;
  for (const v of b) sum += v;
  put(b, 148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return b;
}
