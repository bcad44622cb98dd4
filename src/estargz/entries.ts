// Turns a validated TOC into the index the rest of the package works on: normalized entries,
// chunk lists with their compressed ranges (ESTARGZ.md §4.2), whiteouts, landmarks and lookups.
//
// Compressed range of a piece: [offset, the next larger member start, or dataEnd). Every data
// entry's `offset` is a member start (pieces with innerOffset > 0 share the member of an earlier
// one), so "next larger offset of any data entry" equals the spec's "next entry with an offset
// and innerOffset 0", and also copes with TOCs that are not in blob order.
import { corrupt } from './errors.js';
import { cleanPath } from './toc.js';
import {
  NO_PREFETCH_LANDMARK,
  OPAQUE_WHITEOUT,
  PREFETCH_LANDMARK,
  WHITEOUT_PREFIX,
  type Chunk,
  type Entry,
  type EntryType,
  type EstargzIndex,
  type TocEntryJson,
  type TocJson,
  type Whiteout,
} from './types.js';

/** Everything about the blob that is not in the TOC. */
export type Layout = Omit<EstargzIndex, 'entries' | 'chunks' | 'landmark' | 'lookup' | 'resolve'>;

interface Piece {
  chunkOffset: number;
  size: number;
  offset: number;
  innerOffset: number;
  digest: string | undefined;
}

interface Draft {
  raw: TocEntryJson;
  path: string;
  pieces: Piece[];
}

export function whiteoutOf(path: string): Whiteout | undefined {
  const slash = path.lastIndexOf('/');
  const base = path.slice(slash + 1);
  const dir = slash < 0 ? '' : path.slice(0, slash);
  if (!base.startsWith(WHITEOUT_PREFIX)) return undefined;
  if (base === OPAQUE_WHITEOUT) return { kind: 'opaque', dir };
  const target = base.slice(WHITEOUT_PREFIX.length);
  return { kind: 'file', target: dir === '' ? target : `${dir}/${target}` };
}

function addPiece(d: Draft, e: TocEntryJson, index: number, dataEnd: number): void {
  const fileSize = d.raw.size ?? 0;
  const prev = d.pieces[d.pieces.length - 1];
  const chunkOffset = e.chunkOffset ?? 0;
  const expected = prev ? prev.chunkOffset + prev.size : 0;
  const where = { index, name: d.path.slice(0, 500) };
  if (chunkOffset !== expected) throw corrupt('TOC: chunks of a file are not contiguous', { ...where, chunkOffset, expected });
  const size = e.chunkSize ? e.chunkSize : fileSize - chunkOffset;
  if (size <= 0 || chunkOffset + size > fileSize) throw corrupt('TOC: chunk outside its file', { ...where, chunkOffset, size, fileSize });
  const offset = e.offset ?? 0;
  if (offset === 0 || offset >= dataEnd) throw corrupt('TOC: chunk offset outside the data region', { ...where, offset, dataEnd });
  let digest = e.chunkDigest || undefined;
  // A one-piece file without chunkDigest can still be checked against the file digest.
  if (digest === undefined && chunkOffset === 0 && size === fileSize) digest = d.raw.digest || undefined;
  d.pieces.push({ chunkOffset, size, offset, innerOffset: e.innerOffset ?? 0, digest });
}

function finishDraft(d: Draft | undefined): void {
  if (!d || d.raw.type !== 'reg') return;
  const size = d.raw.size ?? 0;
  const last = d.pieces[d.pieces.length - 1];
  const covered = last ? last.chunkOffset + last.size : 0;
  if (covered !== size) throw corrupt('TOC: chunks do not cover the file', { name: d.path.slice(0, 500), size, covered });
}

function collectDrafts(toc: TocJson, dataEnd: number): Draft[] {
  const drafts: Draft[] = [];
  let lastReg: Draft | undefined;
  toc.entries.forEach((e, i) => {
    if (e.type === 'chunk') {
      if (!lastReg) throw corrupt('TOC: chunk entry without a preceding regular file', { index: i });
      addPiece(lastReg, e, i, dataEnd);
      return;
    }
    finishDraft(lastReg);
    const d: Draft = { raw: e, path: cleanPath(e.name), pieces: [] };
    drafts.push(d);
    lastReg = e.type === 'reg' ? d : undefined;
    if (e.type === 'reg' && (e.size ?? 0) > 0) addPiece(d, e, i, dataEnd);
  });
  finishDraft(lastReg);
  return drafts;
}

function memberEnds(drafts: readonly Draft[], dataEnd: number): (offset: number) => number {
  const starts = [...new Set(drafts.flatMap((d) => d.pieces.map((p) => p.offset)))].sort((a, b) => a - b);
  const next = new Map<number, number>();
  starts.forEach((s, i) => next.set(s, starts[i + 1] ?? dataEnd));
  return (offset) => next.get(offset) ?? dataEnd;
}

function toEntry(d: Draft, endOf: (offset: number) => number, names: { user: Map<number, string>; group: Map<number, string> }): Entry {
  const e = d.raw;
  const uid = e.uid ?? 0;
  const gid = e.gid ?? 0;
  if (e.userName && !names.user.has(uid)) names.user.set(uid, e.userName);
  if (e.groupName && !names.group.has(gid)) names.group.set(gid, e.groupName);
  const xattrs: Record<string, Buffer> = {};
  for (const [k, v] of Object.entries(e.xattrs ?? {})) xattrs[k] = Buffer.from(v, 'base64');
  const chunks: Chunk[] = d.pieces.map((p, index) =>
    Object.freeze({ path: d.path, index, chunkOffset: p.chunkOffset, size: p.size, offset: p.offset, innerOffset: p.innerOffset, end: endOf(p.offset), digest: p.digest }),
  );
  const type = e.type as EntryType;
  return Object.freeze({
    path: d.path,
    name: e.name,
    type,
    size: type === 'reg' ? (e.size ?? 0) : 0,
    mode: (e.mode ?? 0) & 0o7777,
    uid,
    gid,
    userName: e.userName || names.user.get(uid) || '',
    groupName: e.groupName || names.group.get(gid) || '',
    modtime: e.modtime || undefined,
    linkName: type === 'hardlink' ? cleanPath(e.linkName ?? '', 'hardlink target') : (e.linkName ?? ''),
    devMajor: e.devMajor ?? 0,
    devMinor: e.devMinor ?? 0,
    xattrs: Object.freeze(xattrs),
    digest: type === 'reg' ? e.digest || undefined : undefined,
    chunks: Object.freeze(chunks),
    whiteout: whiteoutOf(d.path),
  });
}

/**
 * Pieces that share a member must not overlap: a writer never emits that, and a hostile TOC
 * could otherwise point many files at one large piece, each read inflating it again.
 */
function noOverlaps(sorted: readonly Chunk[]): void {
  for (let i = 1; i < sorted.length; i++) {
    const a = sorted[i - 1] as Chunk;
    const b = sorted[i] as Chunk;
    if (a.offset === b.offset && b.innerOffset < a.innerOffset + a.size) {
      throw corrupt('TOC: pieces overlap', { offset: b.offset, innerOffset: b.innerOffset, names: [a.path.slice(0, 200), b.path.slice(0, 200)] });
    }
  }
}

/** Builds the index; throws 'corrupt' or 'unsafe-path' on inconsistent TOCs. */
export function buildIndex(toc: TocJson, layout: Layout): EstargzIndex {
  const drafts = collectDrafts(toc, layout.dataEnd);
  const endOf = memberEnds(drafts, layout.dataEnd);
  const names = { user: new Map<number, string>(), group: new Map<number, string>() };
  const entries = Object.freeze(drafts.map((d) => toEntry(d, endOf, names)));
  const byPath = new Map<string, Entry>();
  for (const e of entries) byPath.set(e.path, e);
  const chunks = Object.freeze(entries.flatMap((e) => e.chunks).sort((a, b) => a.offset - b.offset || a.innerOffset - b.innerOffset));
  noOverlaps(chunks);
  const landmark = byPath.get(NO_PREFETCH_LANDMARK)?.type === 'reg' ? 'no-prefetch' : byPath.get(PREFETCH_LANDMARK)?.type === 'reg' ? 'prefetch' : undefined;
  const lookup = (path: string): Entry | undefined => {
    try {
      return byPath.get(cleanPath(path, 'path'));
    } catch {
      return undefined;
    }
  };
  const resolve = (path: string): Entry | undefined => {
    let e = lookup(path);
    for (let hops = 0; e?.type === 'hardlink' && hops < 32; hops++) e = byPath.get(e.linkName);
    return e?.type === 'hardlink' ? undefined : e;
  };
  return Object.freeze({ ...layout, entries, chunks, landmark, lookup, resolve });
}
