// Tag, manifest and holding records as small JSON objects in the bucket, so every replica, a
// restarted one or a new one, knows what the fleet has cached. Keys are hashes and digests
// (<prefix>meta/tags/<sha256>.json, <prefix>meta/manifests/<alg>/<hex>.json,
// <prefix>meta/holdings/<sha256>.json), never client strings. A record that cannot be read is a miss and one that cannot be written is skipped,
// both logged and counted (see S3Health): the tag is then simply asked of the upstream.
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.js';
import type { ManifestRecord, MetadataStore, TagRecord } from './blob-store.js';
import { isHoldingRecord, isManifestRecord, isTagRecord } from './fs-metadata.js';
import { isMissing, QUICK, S3Keys, type S3Health } from './s3-client.js';

/** Holding records written at once, per call. */
const HOLDING_WRITES = 8;

export interface S3MetadataStoreOptions {
  client: S3Client;
  bucket: string;
  prefix: string;
  health: S3Health;
}

export class S3MetadataStore implements MetadataStore {
  private readonly keys: S3Keys;
  /** Manifest records never change for a digest, so a replica reads each once. */
  private readonly manifests = new LRUCache<string, ManifestRecord>({ max: 10_000 });

  constructor(private readonly opts: S3MetadataStoreOptions) {
    this.keys = new S3Keys(opts.prefix);
  }

  /** Always read from the bucket: another replica may have revalidated or moved the tag. */
  async getTag(upstream: string, repo: string, tag: string): Promise<TagRecord | undefined> {
    const record = await this.read('getTag', this.keys.tag(upstream, repo, tag));
    return isTagRecord(record) ? record : undefined;
  }

  async putTag(upstream: string, repo: string, tag: string, record: TagRecord): Promise<void> {
    await this.write('putTag', this.keys.tag(upstream, repo, tag), record);
  }

  async getManifest(digest: Digest): Promise<ManifestRecord | undefined> {
    const known = this.manifests.get(digest.value);
    if (known) return known;
    const record = await this.read('getManifest', this.keys.manifest(digest));
    if (!isManifestRecord(record)) return undefined;
    this.manifests.set(digest.value, record);
    return record;
  }

  async putManifest(digest: Digest, record: ManifestRecord): Promise<void> {
    this.manifests.set(digest.value, record);
    await this.write('putManifest', this.keys.manifest(digest), record);
  }

  async getHolding(upstream: string, repo: string, digest: string): Promise<boolean> {
    const record = await this.read('getHolding', this.keys.holding(upstream, repo, digest));
    return isHoldingRecord(record) && record.digest === digest;
  }

  /** A few at a time: a manifest served for the first time can name a hundred digests. */
  async putHoldings(upstream: string, repo: string, digests: readonly string[]): Promise<void> {
    for (let i = 0; i < digests.length; i += HOLDING_WRITES) {
      await Promise.all(digests.slice(i, i + HOLDING_WRITES).map((digest) => this.write('putHolding', this.keys.holding(upstream, repo, digest), { digest })));
    }
  }

  private read(op: string, key: string): Promise<unknown> {
    return this.opts.health.run(op, { key }, async () => {
      try {
        const res = await this.opts.client.send(new GetObjectCommand({ Bucket: this.opts.bucket, Key: key }), QUICK);
        const text = (await res.Body?.transformToString('utf8')) ?? '';
        try {
          return JSON.parse(text) as unknown;
        } catch {
          return undefined; // a damaged or foreign record: a miss
        }
      } catch (e) {
        if (isMissing(e)) return undefined;
        throw e;
      }
    }, undefined);
  }

  private async write(op: string, key: string, value: unknown): Promise<void> {
    await this.opts.health.run(op, { key }, async () => {
      await this.opts.client.send(
        new PutObjectCommand({ Bucket: this.opts.bucket, Key: key, Body: JSON.stringify(value), ContentType: 'application/json' }),
        QUICK,
      );
    }, undefined);
  }
}
