// Two tiers: a bounded local store (the filesystem cache, LRU) in front of a shared remote one
// (the S3 bucket). Reads try local disk first, then the remote; a whole blob read from the remote
// is copied to local disk on its way to the client (checked against its digest), so hot blobs
// are served locally from then on. Writes go to both: a fill streams into the remote writer and
// its verified spool file becomes the local copy.
import { createHash, randomUUID } from 'node:crypto';
import { copyFile, link, open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import type { BlobInfo, BlobReader, BlobStore, BlobWriter, StoreUsage } from './blob-store.js';
import type { Logger } from '../lib/log.js';

export class TieredBlobStore implements BlobStore {
  /** digests being copied from the remote to local disk right now */
  private readonly promoting = new Set<string>();

  constructor(
    readonly local: BlobStore,
    readonly remote: BlobStore,
    private readonly log?: Logger,
  ) {}

  get spoolDir(): string {
    return this.local.spoolDir;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    return (await this.local.stat(digest)) ?? this.remote.stat(digest);
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobReader | undefined> {
    const hit = await this.local.open(digest, range);
    if (hit) return hit;
    const reader = await this.remote.open(digest, range);
    if (!reader || range || this.promoting.has(digest.value)) return reader;
    return this.promote(digest, reader);
  }

  /** Both tiers; the remote gets a link to the file, since each store takes the file it is given. */
  async ingest(digest: Digest, file: string, size: number): Promise<void> {
    const copy = await this.linkTo(file);
    const [remote, local] = await Promise.allSettled([this.remote.ingest(digest, copy, size), this.local.ingest(digest, file, size)]);
    await rm(copy, { force: true });
    if (remote.status === 'rejected') this.log?.warn({ digest: digest.value, err: String(remote.reason) }, 'remote tier did not store the blob');
    if (local.status === 'rejected') throw local.reason;
  }

  create(digest: Digest, size: number | undefined): BlobWriter | undefined {
    const remote = this.remote.create?.(digest, size);
    if (!remote) return undefined;
    return {
      sink: remote.sink,
      commit: async (file, n) => {
        const copy = await this.linkTo(file);
        const [r, l] = await Promise.allSettled([remote.commit(copy, n), this.local.ingest(digest, file, n)]);
        await rm(copy, { force: true });
        if (l.status === 'rejected') this.log?.warn({ digest: digest.value, err: String(l.reason) }, 'local tier did not store the blob');
        // stored somewhere is stored: the fill succeeded unless both tiers failed
        if (r.status === 'rejected' && l.status === 'rejected') throw r.reason;
      },
      abort: (reason) => remote.abort(reason),
    };
  }

  presign(digest: Digest, ttlSeconds: number): Promise<string | undefined> {
    return this.remote.presign?.(digest, ttlSeconds) ?? Promise.resolve(undefined);
  }

  touch(digest: Digest): void {
    this.local.touch?.(digest);
  }

  async delete(digest: Digest): Promise<void> {
    await Promise.all([this.local.delete(digest), this.remote.delete(digest)]);
  }

  /** The local tier's: the bounded one (the bucket's size is the bucket's business). */
  usage(): StoreUsage | undefined {
    return this.local.usage?.();
  }

  async *list(): AsyncIterable<string> {
    const seen = new Set<string>();
    for (const tier of [this.remote, this.local]) {
      for await (const d of tier.list()) {
        if (seen.has(d)) continue;
        seen.add(d);
        yield d;
      }
    }
  }

  /** A second name for a spool file (a hard link: no copy of the bytes), for the other tier. */
  private async linkTo(file: string): Promise<string> {
    const copy = `${file}.${randomUUID().slice(0, 8)}`;
    try {
      await link(file, copy);
    } catch {
      await copyFile(file, copy);
    }
    return copy;
  }

  /**
   * Passes a remote blob through to the client while writing it to a local spool file; once the
   * whole blob went through and hashed to its digest, the file becomes the local copy. A client
   * that leaves early ends the copy too (the next whole read tries again).
   */
  private promote(digest: Digest, reader: BlobReader): BlobReader {
    const key = digest.value;
    this.promoting.add(key);
    const path = join(this.local.spoolDir, `promote-${digest.hex.slice(0, 16)}-${randomUUID()}`);
    const hash = createHash(digest.algorithm);
    let handle: FileHandle | undefined;
    let written = 0;
    let completed = false;
    const fileHandle = async (): Promise<FileHandle> => (handle ??= await open(path, 'wx'));
    const tee = new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _enc, cb) {
        fileHandle()
          .then((h) => h.write(chunk, 0, chunk.length, written))
          .then(() => {
            hash.update(chunk);
            written += chunk.length;
            cb(null, chunk);
          }, (e: Error) => cb(e));
      },
      flush(cb) {
        fileHandle().then(() => {
          completed = true;
          cb();
        }, (e: Error) => cb(e));
      },
    });
    reader.stream.on('error', (e) => tee.destroy(e));
    reader.stream.pipe(tee);
    tee.once('close', () => {
      reader.stream.destroy();
      void (async () => {
        await handle?.close().catch(() => undefined);
        const got = `${digest.algorithm}:${hash.digest('hex')}`;
        try {
          if (completed && written === reader.size && got === key) {
            await this.local.ingest(digest, path, written);
          } else if (completed) {
            this.log?.warn({ digest: key, got, bytes: written, size: reader.size }, 'blob from the remote tier failed its digest check; not copied to local disk');
          }
        } catch (e) {
          this.log?.warn({ digest: key, err: String(e) }, 'could not copy a blob from the remote tier to local disk');
        } finally {
          await rm(path, { force: true });
          this.promoting.delete(key);
        }
      })();
    });
    return { size: reader.size, stream: tee };
  }
}
