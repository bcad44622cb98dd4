// Blobs in an S3 bucket, shared by every replica that points at it. Objects live at
// <prefix>blobs/<algorithm>/<hex>. A fill streams into a multipart upload while clients are
// served, and the upload is completed (or, for a small blob, its single PUT is sent) only after
// the fill verified the whole blob, so nothing ever appears under a digest that did not hash to
// it: an upload that breaks off is aborted instead. Reads stream, Range passed through; a
// failing bucket reads as a miss and stores nothing (see S3Health).
import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { PassThrough, Transform, type Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  type S3Client,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.js';
import { firstLast, rangeHeader, type ByteRange } from '../oci/range.js';
import type { BlobInfo, BlobReader, BlobStore, BlobWriter } from './blob-store.js';
import { isInvalidRange, isMissing, QUICK, S3Keys, type S3Health } from './s3-client.js';

const MiB = 1 << 20;
/** S3 allows at most this many parts; part sizes grow for blobs that would need more. */
const MAX_PARTS = 10_000;

export interface S3BlobStoreOptions {
  client: S3Client;
  bucket: string;
  /** "" or ending in "/" */
  prefix: string;
  /** a local directory for fills in progress (their spool files) */
  spoolDir: string;
  health: S3Health;
  /** multipart part size, at least 5 MiB (default 8 MiB) */
  partSize?: number;
  /** parts uploaded at once per blob (default 4) */
  queueSize?: number;
  listPageSize?: number;
}

export class S3BlobStore implements BlobStore {
  readonly spoolDir: string;
  readonly keys: S3Keys;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly health: S3Health;
  /**
   * Sizes of blobs seen in the bucket. Content is immutable, so only removal can make an entry
   * wrong, and a removed blob is noticed by the GET that follows (it is then fetched again).
   */
  private readonly sizes = new LRUCache<string, number>({ max: 100_000, ttl: 5 * 60_000 });

  private constructor(private readonly opts: S3BlobStoreOptions) {
    this.client = opts.client;
    this.bucket = opts.bucket;
    this.health = opts.health;
    this.keys = new S3Keys(opts.prefix);
    this.spoolDir = opts.spoolDir;
  }

  /** Prepares the local spool directory (leftovers of interrupted fills are removed). */
  static async open(opts: S3BlobStoreOptions): Promise<S3BlobStore> {
    await rm(opts.spoolDir, { recursive: true, force: true });
    await mkdir(opts.spoolDir, { recursive: true });
    return new S3BlobStore(opts);
  }

  /** A HEAD, unless this size was seen lately. */
  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const known = this.sizes.get(digest.value);
    if (known !== undefined) return { digest: digest.value, size: known };
    return this.head(digest);
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobReader | undefined> {
    return this.health.run('get', { digest: digest.value }, async () => {
      try {
        // always an explicit first-last range: suffix ranges are not served alike by every S3.
        // QUICK bounds the wait for the headers only; the body streams at the client's pace.
        const res = await this.client.send(
          new GetObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest), ...(range ? { Range: rangeHeader(range) } : {}) }),
          QUICK,
        );
        const body = res.Body as Readable;
        const size = range ? totalOf(res.ContentRange) : res.ContentLength;
        if (size === undefined) {
          body.destroy();
          throw new Error(`no size in the response for ${digest.value} (Content-Range: ${String(res.ContentRange)})`);
        }
        this.sizes.set(digest.value, size);
        return { size, stream: range ? exactRange(body, res.ContentRange, range) : body };
      } catch (e) {
        if (isMissing(e)) {
          this.sizes.delete(digest.value);
          return undefined;
        }
        if (isInvalidRange(e)) return undefined;
        throw e;
      }
    }, undefined);
  }

  /** Uploads a verified local file and removes it. A failing bucket stores nothing (logged, counted). */
  async ingest(digest: Digest, file: string, size: number): Promise<void> {
    try {
      if (await this.stat(digest)) return; // another replica was first
      await this.health.run('put', { digest: digest.value }, async () => {
        const upload = new Upload({
          client: this.client,
          params: { Bucket: this.bucket, Key: this.keys.blob(digest), Body: createReadStream(file), ContentLength: size },
          partSize: this.partSize(size),
          queueSize: this.opts.queueSize ?? 4,
        });
        await upload.done();
        this.sizes.set(digest.value, size);
      }, undefined, false);
    } finally {
      await rm(file, { force: true });
    }
  }

  /** A multipart upload fed while the fill runs; undefined while the bucket is paused after failures. */
  create(digest: Digest, size: number | undefined): BlobWriter | undefined {
    if (!this.health.available(false)) return undefined;
    return new S3BlobWriter(this.client, this.bucket, this.keys.blob(digest), digest, size, this.partSize(size), this.opts.queueSize ?? 4, this.health, this.sizes);
  }

  /** A pre-signed GET for a blob the bucket holds (checked with a fresh HEAD), else undefined. */
  async presign(digest: Digest, ttlSeconds: number): Promise<string | undefined> {
    if (!(await this.head(digest))) return undefined;
    return this.health.run(
      'presign',
      { digest: digest.value },
      () => getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest) }), { expiresIn: Math.max(1, Math.floor(ttlSeconds)) }),
      undefined,
    );
  }

  async delete(digest: Digest): Promise<void> {
    this.sizes.delete(digest.value);
    await this.health.run('delete', { digest: digest.value }, async () => {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest) }), QUICK);
    }, undefined);
  }

  /** Every blob in the bucket under the prefix, page by page. Errors are thrown (this is for maintenance). */
  async *list(): AsyncIterable<string> {
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.keys.blobs, ContinuationToken: token, MaxKeys: this.opts.listPageSize ?? 1000 }),
      );
      for (const o of page.Contents ?? []) {
        const digest = o.Key === undefined ? undefined : this.keys.digestOf(o.Key);
        if (digest) yield digest;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  private async head(digest: Digest): Promise<BlobInfo | undefined> {
    return this.health.run('head', { digest: digest.value }, async () => {
      try {
        const res = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.keys.blob(digest) }), QUICK);
        const size = res.ContentLength ?? 0;
        this.sizes.set(digest.value, size);
        return { digest: digest.value, size };
      } catch (e) {
        if (!isMissing(e)) throw e;
        this.sizes.delete(digest.value);
        return undefined;
      }
    }, undefined);
  }

  private partSize(size: number | undefined): number {
    const base = Math.max(5 * MiB, this.opts.partSize ?? 8 * MiB);
    return size === undefined ? base : Math.max(base, Math.ceil(size / MAX_PARTS));
  }
}

/**
 * One blob's upload, fed by its fill. The body ends only when the fill verified the blob, and only
 * then does the upload send CompleteMultipartUpload (or, under one part size, its single PUT): a
 * multipart upload is invisible until completed. A body that breaks off (the fill failed, or
 * abort()) makes the upload fail, and lib-storage then aborts the multipart upload.
 */
class S3BlobWriter implements BlobWriter {
  readonly sink = new PassThrough({ highWaterMark: MiB });
  private readonly uploaded: Promise<Error | undefined>;
  private aborting = false;

  constructor(
    client: S3Client,
    bucket: string,
    key: string,
    private readonly digest: Digest,
    size: number | undefined,
    partSize: number,
    queueSize: number,
    private readonly health: S3Health,
    private readonly sizes: LRUCache<string, number>,
  ) {
    const upload = new Upload({
      client,
      params: { Bucket: bucket, Key: key, Body: this.sink, ...(size !== undefined ? { ContentLength: size } : {}) },
      partSize,
      queueSize,
    });
    this.uploaded = upload.done().then(
      () => undefined,
      (e: unknown) => {
        const err = e instanceof Error ? e : new Error(String(e));
        if (!this.aborting) {
          this.health.failed('upload', { digest: digest.value }, err);
          this.sink.destroy(err); // stop the feed: nothing reads the body any more
        }
        return err;
      },
    );
  }

  async commit(_file: string, size: number): Promise<void> {
    const err = await this.uploaded;
    if (err) throw err;
    this.health.succeeded();
    this.sizes.set(this.digest.value, size);
  }

  async abort(reason: Error): Promise<void> {
    this.aborting = true;
    this.sink.destroy(reason);
    await this.uploaded;
  }
}

/** The total size from "bytes first-last/total". */
function totalOf(contentRange: string | undefined): number | undefined {
  const m = contentRange ? /\/(\d+)\s*$/.exec(contentRange) : null;
  return m ? Number(m[1]) : undefined;
}

/**
 * The body of a ranged GET, held to exactly the bytes asked for: some S3 implementations answer a
 * one-byte range at offset 0 with the whole object. A body starting elsewhere is an error.
 */
function exactRange(body: Readable, contentRange: string | undefined, want: ByteRange): Readable {
  const m = contentRange ? /^bytes (\d+)-(\d+)\//.exec(contentRange.trim()) : null;
  if (m && Number(m[1]) === want.start && Number(m[2]) + 1 === want.end) return body; // the header names the last byte
  if (!m || Number(m[1]) !== want.start) {
    body.destroy();
    throw new Error(`asked for bytes ${firstLast(want)}, got Content-Range ${String(contentRange)}`);
  }
  let left = want.end - want.start;
  const limit = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      if (left <= 0) return cb();
      const part = chunk.length <= left ? chunk : chunk.subarray(0, left);
      left -= part.length;
      cb(null, part);
      if (left <= 0) {
        body.unpipe(limit);
        body.destroy();
        limit.end();
      }
    },
  });
  body.on('error', (e) => limit.destroy(e));
  limit.once('close', () => body.destroy());
  return body.pipe(limit);
}
