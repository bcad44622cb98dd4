// Tag, manifest and holding records as small JSON files. Tag and holding files are named by a
// hash of (upstream, repository, tag or digest), so no client-supplied string ever becomes part
// of a path. Each file's mtime is its last read or write (ReadStamps), so tag and manifest records
// nobody read for a while can be removed (expire), as their blobs are; holding records are kept.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { Digest } from '../oci/digest.js';
import { holdingRecordKey, tagRecordKey, type ManifestRecord, type MetadataStore, type TagRecord } from './blob-store.js';
import { makeDir, replaceFile } from './disk-writes.js';
import { isNotFound } from './fs-store.js';
import { ReadStamps, removeUnreadSince } from './read-stamps.js';
import { LRUCache } from 'lru-cache';

/** Tag, manifest and holding records kept in memory, by an estimate of their size: tens of thousands of records. */
const RECORDS_MEMORY_BYTES = 8 << 20;

export interface FsMetadataStoreOptions {
  /** ms clock, injectable for tests */
  now?: () => number;
}

export class FsMetadataStore implements MetadataStore {
  private readonly tagDir: string;
  private readonly manifestDir: string;
  private readonly holdingDir: string;
  private readonly tmpDir: string;
  private readonly stamps: ReadStamps;
  /**
   * The records read or written lately, by path (a tag's by its names), bounded by bytes. This process is the only
   * writer of its cache directory, and every write and removal goes through here, so a record in
   * memory is the file's content; the file is still stamped on a read, for the age bound.
   */
  private readonly records = new LRUCache<string, object>({ maxSize: RECORDS_MEMORY_BYTES, sizeCalculation: (_v, id) => id.length + 256 });

  constructor(dir: string, opts: FsMetadataStoreOptions = {}) {
    this.tagDir = join(dir, 'meta', 'tags');
    this.manifestDir = join(dir, 'meta', 'manifests');
    this.holdingDir = join(dir, 'meta', 'holdings');
    this.tmpDir = join(dir, 'tmp');
    this.stamps = new ReadStamps(opts.now ?? Date.now);
  }

  async getTag(upstream: string, repo: string, tag: string): Promise<TagRecord | undefined> {
    // in memory by the names themselves: the hashed path is made only to read the file or stamp it
    const id = `${upstream}\0${repo}\0${tag}`;
    const record = await this.read(id, () => this.tagPath(upstream, repo, tag));
    return isTagRecord(record) ? record : undefined;
  }

  async putTag(upstream: string, repo: string, tag: string, record: TagRecord): Promise<void> {
    await this.write(`${upstream}\0${repo}\0${tag}`, this.tagPath(upstream, repo, tag), record);
  }

  async getManifest(digest: Digest): Promise<ManifestRecord | undefined> {
    const path = this.manifestPath(digest);
    const record = await this.read(path, path);
    return isManifestRecord(record) ? record : undefined;
  }

  async putManifest(digest: Digest, record: ManifestRecord): Promise<void> {
    const path = this.manifestPath(digest);
    await this.write(path, path, record);
  }

  async getHolding(upstream: string, repo: string, digest: string): Promise<boolean> {
    const path = this.holdingPath(upstream, repo, digest);
    const record = await this.read(path, path);
    return isHoldingRecord(record) && record.digest === digest;
  }

  async putHoldings(upstream: string, repo: string, digests: readonly string[]): Promise<void> {
    for (const digest of digests) {
      const path = this.holdingPath(upstream, repo, digest);
      await this.write(path, path, { digest });
    }
  }

  private holdingPath(upstream: string, repo: string, digest: string): string {
    const key = holdingRecordKey(upstream, repo, digest);
    return join(this.holdingDir, key.slice(0, 2), `${key}.json`);
  }

  /** Removes the tag and manifest records last read (or written) before `cutoff` (ms on the clock); returns how many. */
  async expire(cutoff: number): Promise<number> {
    const removed = (await removeUnreadSince(this.tagDir, cutoff)) + (await removeUnreadSince(this.manifestDir, cutoff));
    if (removed > 0) this.records.clear(); // which ones went is the disk's to say: read afresh
    return removed;
  }

  /** Waits for the last-read stamps under way. */
  async close(): Promise<void> {
    await this.stamps.settled();
  }

  private tagPath(upstream: string, repo: string, tag: string): string {
    const key = tagRecordKey(upstream, repo, tag);
    return join(this.tagDir, key.slice(0, 2), `${key}.json`);
  }

  private manifestPath(digest: Digest): string {
    return join(this.manifestDir, digest.algorithm, `${digest.hex}.json`);
  }

  /** The record `id` names (in memory), else read from `path`. */
  private async read(id: string, path: string | (() => string)): Promise<unknown> {
    const known = this.records.get(id);
    if (known) {
      void this.stamps.stamp(id, path);
      return known;
    }
    const file = typeof path === 'string' ? path : path();
    try {
      const record: unknown = JSON.parse(await readFile(file, 'utf8'));
      void this.stamps.stamp(id, file);
      if (typeof record === 'object' && record !== null) this.records.set(id, record);
      return record;
    } catch (e) {
      if (isNotFound(e) || e instanceof SyntaxError) return undefined;
      throw e;
    }
  }

  /** Write to a temp file and rename, so a crash never leaves a half-written record. */
  private async write(id: string, path: string, value: unknown): Promise<void> {
    await makeDir(join(path, '..'));
    await makeDir(this.tmpDir);
    this.records.delete(id); // until the file holds the new record, the old one is not its content
    await replaceFile(join(this.tmpDir, `meta-${randomUUID()}`), path, JSON.stringify(value));
    if (typeof value === 'object' && value !== null) this.records.set(id, value);
    await this.stamps.stamp(id, path, true);
  }
}

export function isTagRecord(v: unknown): v is TagRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.digest === 'string' && typeof r.mediaType === 'string' && typeof r.size === 'number' && typeof r.checkedAt === 'number';
}

export function isManifestRecord(v: unknown): v is ManifestRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.mediaType === 'string' && typeof r.size === 'number';
}

export function isHoldingRecord(v: unknown): v is { digest: string } {
  return typeof v === 'object' && v !== null && typeof (v as Record<string, unknown>).digest === 'string';
}
