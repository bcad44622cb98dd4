// The TOC document: unwrapping it from its tar entry, JSON decoding, and schema validation
// (ESTARGZ.md §3). Numbers must be non-negative safe integers, strings must be strings, digests
// must look like digests, names and hardlink targets must not contain `..`.
import { EstargzError, corrupt, fromTarError } from './errors.js';
import { BLOCK, applyPax, isZeroBlock, parseHeaderBlock, parsePax } from '../tar/index.js';
import { TOC_ENTRY_TYPES, TOC_TAR_NAME, type TocEntryJson, type TocEntryType, type TocJson } from './types.js';

/** Returns the payload of the `stargz.index.json` entry at the start of a tar stream. */
export function unwrapTocTar(tar: Buffer, maxTocBytes: number): Buffer {
  try {
    return tocEntryPayload(tar, maxTocBytes);
  } catch (e) {
    throw fromTarError(e);
  }
}

function tocEntryPayload(tar: Buffer, maxTocBytes: number): Buffer {
  let pos = 0;
  let pax = new Map<string, Buffer>();
  for (;;) {
    const block = tar.subarray(pos, pos + BLOCK);
    if (block.length < BLOCK || isZeroBlock(block)) throw corrupt('TOC: no stargz.index.json entry in the TOC tar');
    const h = parseHeaderBlock(block);
    pos += BLOCK;
    if (h.typeflag === 'x' || h.typeflag === 'g') {
      if (h.size > 1024 * 1024 || pos + h.size > tar.length) throw corrupt('TOC: bad PAX header in the TOC tar');
      pax = parsePax(tar.subarray(pos, pos + h.size));
      pos += Math.ceil(h.size / BLOCK) * BLOCK;
      continue;
    }
    applyPax(h, pax);
    if (h.name !== TOC_TAR_NAME || (h.typeflag !== '0' && h.typeflag !== '\0')) {
      throw corrupt('TOC: first tar entry is not stargz.index.json', { name: h.name.slice(0, 200) });
    }
    if (h.size > maxTocBytes) throw new EstargzError('too-large', 'TOC larger than maxTocBytes', { size: h.size, maxTocBytes });
    if (pos + h.size > tar.length) throw corrupt('TOC: tar entry truncated', { size: h.size });
    return tar.subarray(pos, pos + h.size);
  }
}

const DIGEST = /^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$/;
const NUMBER_FIELDS = ['size', 'mode', 'uid', 'gid', 'offset', 'innerOffset', 'devMajor', 'devMinor', 'chunkOffset', 'chunkSize'] as const;
const STRING_FIELDS = ['modtime', 'linkName', 'userName', 'groupName'] as const;
const TYPES = new Set<string>(TOC_ENTRY_TYPES);

/**
 * Validates a tar path and returns its clean form ("./a//b/" → "a/b", "." , "./" and "/" → "").
 * Leading slashes are dropped, as readers do (path.Clean("/" + name)): a layer's "/etc" is its
 * "etc", and umoci and the reference converter start every layer with a "/" or "./" entry.
 * A `..` segment anywhere, or a NUL byte, is 'unsafe-path'.
 */
export function cleanPath(name: string, what = 'entry name'): string {
  const parts = name.split('/');
  if (name.includes('\0') || parts.includes('..')) {
    throw new EstargzError('unsafe-path', `unsafe ${what} in TOC`, { name: name.slice(0, 500) });
  }
  return parts.filter((s) => s !== '' && s !== '.').join('/');
}

function checkEntry(raw: unknown, i: number): TocEntryJson {
  const bad = (why: string): EstargzError => corrupt(`TOC entry ${i}: ${why}`, { index: i });
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw bad('not an object');
  const e = raw as Record<string, unknown>;
  if (typeof e['name'] !== 'string') throw bad('name is not a string');
  if (typeof e['type'] !== 'string' || !TYPES.has(e['type'])) throw bad(`unknown type ${JSON.stringify(e['type'])?.slice(0, 40)}`);
  for (const k of NUMBER_FIELDS) {
    const v = e[k];
    if (v !== undefined && (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0)) throw bad(`${k} is not a non-negative integer`);
  }
  for (const k of STRING_FIELDS) if (e[k] !== undefined && typeof e[k] !== 'string') throw bad(`${k} is not a string`);
  for (const k of ['digest', 'chunkDigest'] as const) {
    const v = e[k];
    if (v !== undefined && v !== '' && (typeof v !== 'string' || !DIGEST.test(v))) throw bad(`${k} is not a digest`);
  }
  const x = e['xattrs'];
  if (x !== undefined && x !== null) {
    if (typeof x !== 'object' || Array.isArray(x)) throw bad('xattrs is not an object');
    for (const v of Object.values(x)) if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw bad('xattr value is not base64');
  }
  const entry = e as unknown as TocEntryJson;
  cleanPath(entry.name);
  if (entry.type === 'hardlink') cleanPath(entry.linkName ?? '', 'hardlink target');
  return entry;
}

/** Decodes and validates TOC JSON bytes. */
export function parseTocJson(bytes: Buffer): TocJson {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (e) {
    throw corrupt('TOC is not valid JSON', { message: e instanceof Error ? e.message : String(e) }, e);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw corrupt('TOC is not a JSON object');
  const d = doc as Record<string, unknown>;
  if (d['version'] !== 1) throw corrupt('TOC version is not 1', { version: JSON.stringify(d['version'])?.slice(0, 40) ?? null });
  const raw = d['entries'] ?? [];
  if (!Array.isArray(raw)) throw corrupt('TOC entries is not an array');
  return { version: 1, entries: raw.map((e: unknown, i) => checkEntry(e, i)) };
}

export function isDataType(t: TocEntryType): boolean {
  return t === 'reg' || t === 'chunk';
}
