// When a cached file was last read, kept in the file's own mtime so that it survives a restart.
// The stores stamp it (utimes) when they store a file and when they read one. The files hold
// content-addressed blobs or records that are replaced whole, never edited, so nothing else
// moves their mtime. atime would need no stamping but cannot be trusted: a noatime mount never
// updates it, relatime at most once a day, and anything that reads the files (a backup,
// `pullthrough verify`) refreshes it as if a client had.
import { readdir, rm, stat, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';

/** Stamp a file read again at most this often: ages are kept to the minute, not per request. */
const STAMP_EVERY_MS = 60_000;

export class ReadStamps {
  /** when each key was last stamped (bounded: a key forgotten here is only stamped once more) */
  private readonly stamped = new LRUCache<string, number>({ max: 100_000 });
  private readonly pending = new Set<Promise<void>>();

  constructor(private readonly now: () => number) {}

  /**
   * Sets `path`'s mtime to now, unless `key` was stamped within the last minute (`always`:
   * regardless); `path` may be given as a function, called only when the stamp is due. Never fails; a read need not wait for it (close() does), a write does.
   */
  stamp(key: string, path: string | (() => string), always = false): Promise<void> {
    const now = this.now();
    const last = this.stamped.get(key);
    if (!always && last !== undefined && now - last < STAMP_EVERY_MS) return Promise.resolve();
    this.stamped.set(key, now);
    const t = new Date(now);
    // a path that costs something to make (a hash) is made only when the stamp is due
    const done = utimes(typeof path === 'string' ? path : path(), t, t).catch(() => undefined); // a file removed meanwhile has no age to keep
    this.pending.add(done);
    void done.then(() => this.pending.delete(done));
    return done;
  }

  forget(key: string): void {
    this.stamped.delete(key);
  }

  /** Resolves once the stamps under way have landed. */
  async settled(): Promise<void> {
    await Promise.all([...this.pending]);
  }
}

/**
 * Removes the files two levels under `dir` (<dir>/<group>/<file>) last stamped before `cutoff`;
 * returns how many. A directory level at a time, so a large tree is never listed at once. A file
 * read between its stat and its removal is lost: it is then fetched again, like any evicted one.
 */
export async function removeUnreadSince(dir: string, cutoff: number): Promise<number> {
  let removed = 0;
  for (const group of await listDir(dir)) {
    for (const name of await listDir(join(dir, group))) {
      const path = join(dir, group, name);
      const s = await stat(path).catch(() => undefined);
      if (!s?.isFile() || s.mtimeMs >= cutoff) continue;
      await rm(path, { force: true });
      removed++;
    }
  }
  return removed;
}

/** The names in `dir`; none when it does not exist or is not a directory. */
async function listDir(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw e;
  }
}
