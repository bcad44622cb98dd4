// Blobs and records in memory: the reference implementation of the store contracts, for tests.
// Fills still spool to disk, so it takes a spool directory like the other stores.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { finished } from 'node:stream/promises';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import type { BlobInfo, BlobReader, BlobStore, BlobWriter, ManifestRecord, MetadataStore, StoreUsage, TagRecord } from './blob-store.js';

export class MemoryBlobStore implements BlobStore {
  private readonly blobs = new Map<string, Buffer>();

  private constructor(readonly spoolDir: string) {}

  static async open(spoolDir: string): Promise<MemoryBlobStore> {
    await mkdir(spoolDir, { recursive: true });
    return new MemoryBlobStore(spoolDir);
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const b = this.blobs.get(digest.value);
    return b && { digest: digest.value, size: b.length };
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobReader | undefined> {
    const b = this.blobs.get(digest.value);
    if (!b) return undefined;
    const part = range ? b.subarray(range.start, range.end) : b;
    return { size: b.length, stream: Readable.from(part.length > 0 ? [part] : []) };
  }

  async ingest(digest: Digest, file: string, _size: number): Promise<void> {
    const bytes = await readFile(file);
    await rm(file, { force: true });
    this.blobs.set(digest.value, bytes);
  }

  /** Collects the bytes; they become the blob once the sink ended normally and commit() is called. */
  create(digest: Digest, _size: number | undefined): BlobWriter {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        chunks.push(chunk);
        cb();
      },
    });
    const ended = finished(sink);
    ended.catch(() => undefined);
    return {
      sink,
      commit: async () => {
        await ended; // rejects when the sink was destroyed instead of ended
        this.blobs.set(digest.value, Buffer.concat(chunks));
      },
      abort: async () => {
        sink.destroy();
        chunks.length = 0;
      },
    };
  }

  async delete(digest: Digest): Promise<void> {
    this.blobs.delete(digest.value);
  }

  /** Unbounded: it never evicts. */
  usage(): StoreUsage {
    let bytes = 0;
    for (const b of this.blobs.values()) bytes += b.length;
    return { bytes, entries: this.blobs.size, evictions: 0 };
  }

  async *list(): AsyncIterable<string> {
    yield* [...this.blobs.keys()];
  }
}

export class MemoryMetadataStore implements MetadataStore {
  private readonly tags = new Map<string, TagRecord>();
  private readonly manifests = new Map<string, ManifestRecord>();
  private readonly holdings = new Set<string>();

  async getTag(upstream: string, repo: string, tag: string): Promise<TagRecord | undefined> {
    return this.tags.get(JSON.stringify([upstream, repo, tag]));
  }

  async putTag(upstream: string, repo: string, tag: string, record: TagRecord): Promise<void> {
    this.tags.set(JSON.stringify([upstream, repo, tag]), { ...record });
  }

  async getManifest(digest: Digest): Promise<ManifestRecord | undefined> {
    return this.manifests.get(digest.value);
  }

  async putManifest(digest: Digest, record: ManifestRecord): Promise<void> {
    this.manifests.set(digest.value, { ...record });
  }

  async getHolding(upstream: string, repo: string, digest: string): Promise<boolean> {
    return this.holdings.has(JSON.stringify([upstream, repo, digest]));
  }

  async putHoldings(upstream: string, repo: string, digests: readonly string[]): Promise<void> {
    for (const digest of digests) this.holdings.add(JSON.stringify([upstream, repo, digest]));
  }
}
