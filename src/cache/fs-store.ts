// The embedded filesystem cache: content-addressed files under <dir>/blobs/<alg>/<2 hex>/<hex>,
// fills spooled under <dir>/tmp and renamed into place only once verified, a size bound enforced
// by an LRU index rebuilt from file mtimes in the background at start-up, and (expire) an age
// bound on the same index.
// A blob's mtime is its last read (see ReadStamps: why mtime and not atime).
import { createReadStream, unlinkSync } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat, type FileHandle } from 'node:fs/promises';
import { LRUCache } from 'lru-cache';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { tryParseDigest } from '../oci/digest.js';
import { Readable, type Writable } from 'node:stream';
import type { ByteRange } from '../oci/range.js';
import { makeDir } from './disk-writes.js';
import { pumpFile } from './file-pump.js';
import type { BlobInfo, BlobReader, BlobStore, StoreUsage } from './blob-store.js';
import { FoundEntries, LruIndex } from './lru-index.js';
import { ReadStamps } from './read-stamps.js';
import type { Logger } from '../lib/log.js';

const READ_BUFFER = 1 << 20;
/** Files stat'ed at once by the start-up scan. */
const SCAN_STATS = 64;
/** Descriptors kept open for ranged reads, one per blob, the least recently used closed first. */
const OPEN_RANGE_HANDLES = 64;
/** Age eviction unlinks this many files at a time, then lets other work run. */
const EXPIRE_BATCH = 256;

export interface FsBlobStoreOptions {
  dir: string;
  maxBytes: number;
  onEvict?: (digest: string) => void;
  /** leave <dir>/tmp as it is (another process may be filling into it), for tools such as verify */
  keepSpool?: boolean;
  /** false: reads leave blobs' ages alone (a tool such as verify reads everything, for no client) */
  stampReads?: boolean;
  /** ms clock, injectable for tests */
  now?: () => number;
  log?: Logger | undefined;
}

export class FsBlobStore implements BlobStore {
  readonly spoolDir: string;
  private readonly blobDir: string;
  private readonly index: LruIndex;
  private readonly stamps: ReadStamps;
  private readonly handles = new SharedHandles(OPEN_RANGE_HANDLES);
  private evictions = 0;
  /** the start-up scan is running: what leaves the cache meanwhile must not come back with it */
  private scanning = true;
  private readonly removedDuringScan = new Set<string>();

  private constructor(private readonly opts: FsBlobStoreOptions) {
    this.blobDir = join(opts.dir, 'blobs');
    this.spoolDir = join(opts.dir, 'tmp');
    const now = opts.now ?? Date.now;
    this.stamps = new ReadStamps(now);
    this.index = new LruIndex(opts.maxBytes, (key) => this.evict(key), now);
  }

  /**
   * Opens (creating if needed) a cache directory: removes leftovers of interrupted fills, and
   * indexes what is there in the background (`indexed`), so that a large cache answers at once:
   * until then a blob the index does not know yet is looked for on the disk.
   */
  static async open(opts: FsBlobStoreOptions): Promise<FsBlobStore> {
    const store = new FsBlobStore(opts);
    if (!opts.keepSpool) await rm(store.spoolDir, { recursive: true, force: true });
    await mkdir(store.spoolDir, { recursive: true });
    await mkdir(store.blobDir, { recursive: true });
    store.indexed = store.scan().catch((e: Error) => {
      // a blob the index lacks is still found on the disk; only the size bound misses it
      store.scanning = false;
      opts.log?.warn({ dir: opts.dir, err: e.message }, 'the start-up scan of the cache stopped; blobs it did not reach count against no bound until read');
    });
    return store;
  }

  /** Resolves once the blobs found on the disk at start-up are all in the index (size bound and eviction order included). */
  indexed: Promise<void> = Promise.resolve();

  get usedBytes(): number {
    return this.index.bytes;
  }

  usage(): StoreUsage {
    return { bytes: this.index.bytes, entries: this.index.count, evictions: this.evictions };
  }

  /** From the index when it knows the blob (a file removed behind its back is noticed by open()), else from the disk. */
  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const known = this.index.sizeOf(digest.value);
    if (known !== undefined) return { digest: digest.value, size: known };
    try {
      const s = await stat(this.pathOf(digest));
      return { digest: digest.value, size: s.size };
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * A reader of the blob or of a range of it. A range is read through a descriptor kept open for
   * the next ranges of the same blob (SharedHandles): lazy pullers read small ranges by the
   * thousand, and an open, an fstat and a close per range cost more than the read.
   */
  async open(digest: Digest, range?: ByteRange): Promise<BlobReader | undefined> {
    const path = this.pathOf(digest);
    const key = digest.value;
    let file: { handle: FileHandle; size: number; done: () => Promise<void> } | undefined;
    try {
      file = range ? await this.handles.acquire(key, path) : await openOwn(path);
    } catch (e) {
      if (!isNotFound(e)) throw e;
      this.forgetFile(key); // removed behind the index's back (`pullthrough verify`, a person): stat must not vouch for it
      return undefined;
    }
    const { handle, size } = file;
    this.index.pin(key);
    // a blob the start-up scan has not reached yet joins the index now, as just read
    if (this.index.has(key)) this.index.touch(key);
    else this.index.add(key, size);
    const start = range?.start ?? 0;
    const end = range?.end ?? size;
    let released = false;
    const release = () => {
      if (released) return Promise.resolve();
      released = true;
      this.index.unpin(key);
      return file.done();
    };
    let stream: Readable | undefined;
    if (this.opts.stampReads !== false) void this.stamps.stamp(key, path);
    // exactly one of `stream` or `pipeTo` is used; either one releases the pin and the descriptor
    return {
      size,
      get stream(): Readable {
        if (!stream) {
          // a shared descriptor must outlive the stream: it is read positionally, never closed by it
          stream = range ? positionalReader(handle, start, end) : createReadStream('', { fd: handle, start, end: Math.max(start, end - 1), highWaterMark: READ_BUFFER });
          stream.once('close', () => void release());
        }
        return stream;
      },
      pipeTo: (sink: Writable) => pumpFile(handle, start, end, sink).finally(release),
    };
  }

  /** A read of the blob served from a copy elsewhere (in memory): it counts for the LRU order and the age bound as a read here would. */
  touch(digest: Digest): void {
    const key = digest.value;
    if (!this.index.has(key)) return;
    this.index.touch(key);
    if (this.opts.stampReads !== false) void this.stamps.stamp(key, this.pathOf(digest));
  }

  /** The file becomes visible only at its full size: a short write on a full disk must not pass as a blob. */
  async ingest(digest: Digest, file: string, size: number): Promise<void> {
    const path = this.pathOf(digest);
    try {
      const onDisk = (await stat(file)).size;
      if (onDisk !== size) throw new Error(`${digest.value}: the file to cache holds ${onDisk} of its ${size} bytes`);
      await makeDir(join(path, '..'));
      await rename(file, path);
    } catch (e) {
      await rm(file, { force: true });
      throw e;
    }
    this.index.add(digest.value, size);
    this.removedDuringScan.delete(digest.value);
    await this.stamps.stamp(digest.value, path, true);
  }

  /**
   * Evicts the blobs last read (or stored) before `cutoff` (ms on the store's clock), except those
   * being served; returns how many. In batches, so that a large first sweep does not hold up
   * requests.
   */
  async expire(cutoff: number): Promise<number> {
    await this.indexed;
    let evicted = 0;
    for (;;) {
      const n = this.index.expire(cutoff, EXPIRE_BATCH);
      evicted += n;
      if (n < EXPIRE_BATCH) return evicted;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /** Waits for the last-read stamps under way, so that a store opened next on the directory sees them; closes the kept descriptors. */
  async close(): Promise<void> {
    this.handles.clear();
    await this.stamps.settled();
  }

  async *list(): AsyncIterable<string> {
    await this.indexed;
    yield* [...this.index.keys()];
  }

  async delete(digest: Digest): Promise<void> {
    this.forgetFile(digest.value);
    this.stamps.forget(digest.value);
    await rm(this.pathOf(digest), { force: true });
  }

  /** One file of the start-up scan: a blob found, or a stray removed. */
  private async scanOne(algorithm: string, shard: string, hex: string, found: FoundEntries): Promise<unknown> {
    const key = `${algorithm}:${hex}`;
    const path = join(this.blobDir, algorithm, shard, hex);
    if (!tryParseDigest(key) || !hex.startsWith(shard)) return rm(path, { recursive: true, force: true });
    const s = await stat(path).catch((e: unknown) => {
      if (isNotFound(e)) return undefined; // removed since the listing (an eviction, a delete)
      throw e;
    });
    if (!s) return;
    if (!s.isFile()) return rm(path, { recursive: true, force: true });
    found.push(key, s.size, s.mtimeMs);
  }

  /** The blob's file is gone (or going): out of the index, its descriptor retired, and not brought back by the start-up scan. */
  private forgetFile(key: string): void {
    this.index.remove(key);
    this.handles.retire(key);
    if (this.scanning) this.removedDuringScan.add(key);
  }

  /** The only place a digest becomes a path; parseDigest already limits it to [a-f0-9]. */
  private pathOf(digest: Digest): string {
    return join(this.blobDir, digest.algorithm, digest.hex.slice(0, 2), digest.hex);
  }

  private evict(key: string): void {
    const digest = tryParseDigest(key);
    if (!digest) return;
    // Synchronous on purpose: a fill of the same digest may rename a new file into place right
    // after, and an unlink queued on the thread pool could then remove the new file.
    try {
      unlinkSync(this.pathOf(digest));
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    this.stamps.forget(key);
    this.forgetFile(key); // the index has let it go already; its descriptor and the scan have not
    this.evictions++;
    this.opts.onEvict?.(key);
  }

  /**
   * Indexes the blobs on the disk: a shard directory at a time, its files stat'ed SCAN_STATS at a
   * time, requests served in between. What was stored or removed meanwhile is the index's already;
   * the blobs found join it as older than those (LruIndex.addOlder), oldest first.
   */
  private async scan(): Promise<void> {
    const t0 = performance.now();
    const found = new FoundEntries();
    for (const algorithm of await readdirSafe(this.blobDir)) {
      for (const shard of await readdirSafe(join(this.blobDir, algorithm))) {
        const names = await readdirSafe(join(this.blobDir, algorithm, shard));
        for (let i = 0; i < names.length; i += SCAN_STATS) {
          await Promise.all(names.slice(i, i + SCAN_STATS).map((hex) => this.scanOne(algorithm, shard, hex, found)));
        }
      }
    }
    this.index.addOlder(found, (key) => this.removedDuringScan.has(key));
    this.removedDuringScan.clear();
    this.scanning = false;
    this.opts.log?.info({ dir: this.opts.dir, blobs: this.index.count, bytes: this.index.bytes, ms: Math.round(performance.now() - t0) }, 'cache index built');
  }
}

async function readdirSafe(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch (e) {
    if (isNotFound(e)) return [];
    // a stray file where a directory belongs (blobs/<file>, blobs/<alg>/<file>): remove it
    if (typeof e === 'object' && e !== null && (e as { code?: unknown }).code === 'ENOTDIR') {
      await rm(dir, { force: true });
      return [];
    }
    throw e;
  }
}

export function isNotFound(e: unknown): boolean {
  return typeof e === 'object' && e !== null && 'code' in e && (e as { code: unknown }).code === 'ENOENT';
}

/** [start, end) of an open file as a stream of positional reads; the file stays open. */
function positionalReader(handle: FileHandle, start: number, end: number): Readable {
  let pos = start;
  return new Readable({
    highWaterMark: READ_BUFFER,
    read(want) {
      const length = Math.min(Math.max(want, 64 << 10), READ_BUFFER, end - pos);
      if (length <= 0) {
        this.push(null);
        return;
      }
      handle.read(Buffer.allocUnsafe(length), 0, length, pos).then(
        ({ bytesRead, buffer }) => {
          if (bytesRead === 0) return void this.destroy(new Error('the cached file is shorter than its recorded size'));
          pos += bytesRead;
          this.push(bytesRead === length ? buffer : buffer.subarray(0, bytesRead));
        },
        (e: Error) => this.destroy(e),
      );
    },
  });
}

/** A descriptor of this request's own, closed when its reader is done. */
async function openOwn(path: string): Promise<{ handle: FileHandle; size: number; done: () => Promise<void> }> {
  const handle = await open(path, 'r');
  try {
    const size = (await handle.stat()).size;
    return { handle, size, done: () => handle.close().catch(() => undefined) };
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw e;
  }
}

/**
 * Descriptors shared by the ranged reads of a blob, bounded in number. One leaves the set when it
 * is the least recently used one over the bound, or when its blob is evicted or deleted, and is
 * closed once the last read through it is done: a read never loses its descriptor, and a blob
 * unlinked from the cache is not held open for longer than its readers need.
 */
class SharedHandles {
  private readonly open: LRUCache<string, Shared>;
  /** opens under way, so that concurrent first reads of a blob share one */
  private readonly opening = new Map<string, Promise<Shared>>();

  constructor(max: number) {
    this.open = new LRUCache<string, Shared>({ max, dispose: (s) => s.retire() });
  }

  async acquire(key: string, path: string): Promise<{ handle: FileHandle; size: number; done: () => Promise<void> }> {
    let shared = this.open.get(key);
    if (!shared) {
      let opening = this.opening.get(key);
      if (!opening) {
        opening = openOwn(path).then((f) => new Shared(f.handle, f.size));
        this.opening.set(key, opening);
        opening.then(
          (s) => {
            if (this.opening.get(key) === opening) this.opening.delete(key);
            this.open.set(key, s);
          },
          () => this.opening.delete(key),
        );
      }
      shared = await opening;
      // pushed out of the set (and closed) between its open and now, by 64 other blobs' ranges: open one of our own
      if (shared.closed) return openOwn(path);
    }
    shared.users++;
    const s = shared;
    return { handle: s.handle, size: s.size, done: async () => s.release() };
  }

  /** The blob left the cache: its descriptor closes once its readers are done. */
  retire(key: string): void {
    this.opening.delete(key);
    this.open.delete(key);
  }

  clear(): void {
    this.open.clear();
  }
}

class Shared {
  users = 0;
  closed = false;
  private retired = false;

  constructor(
    readonly handle: FileHandle,
    readonly size: number,
  ) {}

  release(): void {
    this.users--;
    if (this.retired && this.users === 0) this.close();
  }

  retire(): void {
    this.retired = true;
    if (this.users === 0) this.close();
  }

  private close(): void {
    this.closed = true;
    void this.handle.close().catch(() => undefined);
  }
}
