// TOC entries as the converter builds them, and their serialization in the reference style:
// tab-indented JSON, keys in the reference struct order, zero values omitted (ESTARGZ.md §3).
// Data offsets are recorded as member indexes and resolved to blob offsets at the end.
import type { TarHeader } from '../tar/index.js';
import type { TocEntryJson, TocEntryType } from './types.js';

export interface DraftEntry extends Omit<TocEntryJson, 'offset'> {
  /** Index of the gzip member holding this entry's payload (resolved to `offset` later). */
  member?: number;
}

const TYPE_BY_FLAG: Record<string, TocEntryType> = {
  '0': 'reg',
  '\0': 'reg',
  '7': 'reg',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

/** Go's time.Time RFC 3339 form at whole seconds, UTC. */
function rfc3339(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Emits userName/groupName only at the first occurrence of a uid/gid, as the reference does. */
export class OwnerNames {
  private readonly users = new Set<number>();
  private readonly groups = new Set<number>();

  apply(e: DraftEntry, h: TarHeader): void {
    if (h.userName !== '' && !this.users.has(h.uid)) {
      this.users.add(h.uid);
      e.userName = h.userName;
    }
    if (h.groupName !== '' && !this.groups.has(h.gid)) {
      this.groups.add(h.gid);
      e.groupName = h.groupName;
    }
  }
}

/** The TOC entry for a tar header (content fields are filled in by the writer). */
export function draftFromHeader(h: TarHeader, owners: OwnerNames): DraftEntry {
  const type = TYPE_BY_FLAG[h.typeflag] ?? 'reg';
  const e: DraftEntry = { name: h.name, type };
  if (type === 'reg') e.size = h.size;
  if (h.mtime > 0) e.modtime = rfc3339(h.mtime);
  if (type === 'symlink' || type === 'hardlink') e.linkName = h.linkName;
  e.mode = h.mode;
  e.uid = h.uid;
  e.gid = h.gid;
  owners.apply(e, h);
  if (type === 'char' || type === 'block') {
    e.devMajor = h.devMajor;
    e.devMinor = h.devMinor;
  }
  const names = Object.keys(h.xattrs);
  if (names.length > 0) e.xattrs = Object.fromEntries(names.map((k) => [k, (h.xattrs[k] as Buffer).toString('base64')]));
  return e;
}

const KEY_ORDER = [
  'name',
  'type',
  'size',
  'modtime',
  'linkName',
  'mode',
  'uid',
  'gid',
  'userName',
  'groupName',
  'offset',
  'innerOffset',
  'devMajor',
  'devMinor',
  'xattrs',
  'digest',
  'chunkOffset',
  'chunkSize',
  'chunkDigest',
] as const;

/** Serializes the TOC; `offsets[member]` is the blob offset of each gzip member. */
export function serializeToc(drafts: readonly DraftEntry[], offsets: readonly number[]): Buffer {
  const entries = drafts.map((d) => {
    const src: Record<string, unknown> = { ...d, offset: d.member === undefined ? undefined : offsets[d.member] };
    const out: Record<string, unknown> = {};
    for (const k of KEY_ORDER) {
      const v = src[k];
      const zero = v === undefined || v === 0 || v === '' || (typeof v === 'object' && v !== null && Object.keys(v).length === 0);
      if (!zero || k === 'name' || k === 'type') out[k] = v;
    }
    return out;
  });
  return Buffer.from(JSON.stringify({ version: 1, entries }, null, '\t'), 'utf8');
}
