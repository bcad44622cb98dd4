// The pull-through cache as a decorator over the local stores and an upstream: answer from cache
// when we can, fetch once when we cannot, and keep what we fetched only once it is verified.
import { Readable } from 'node:stream';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import type { BlobStore, MetadataStore, TagRecord } from '../cache/blob-store.js';
import { Fill } from '../cache/fill.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { accepts, MANIFEST_TYPES } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { ByteRange, Manifest, TagPage, Upstream } from '../upstreams/upstream.js';

export interface Logger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export interface PullThroughOptions {
  store: BlobStore;
  meta: MetadataStore;
  tagTtlMs: number;
  log: Logger;
  now?: () => number;
}

export interface ServedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
  /** served from cache because the upstream could not be asked */
  stale: boolean;
}

export interface ServedBlob {
  size: number | undefined;
  /** the part of the blob the body holds, for a satisfiable Range */
  range: ByteRange | undefined;
  body: Readable | undefined;
}

export class PullThrough {
  private readonly fills = new Map<string, Promise<Fill>>();
  private readonly tagLookups = new Map<string, Promise<{ record: TagRecord; stale: boolean }>>();
  private readonly now: () => number;

  constructor(private readonly opts: PullThroughOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** GET or HEAD of a manifest by tag or digest, honouring the client's Accept list. */
  async manifest(up: Upstream, repo: string, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    if (ref.kind === 'digest') {
      return { ...(await this.manifestByDigest(up, repo, ref.digest, signal)), stale: false };
    }
    const { record, stale } = await this.resolveTag(up, repo, ref.tag);
    if (!accepts(accept, record.mediaType)) return this.manifestForAccept(up, repo, ref, accept, signal);
    return { ...(await this.manifestByDigest(up, repo, parseDigest(record.digest), signal)), stale };
  }

  /** HEAD of a blob: its size, from the cache or the upstream, without starting a fill. */
  async blobSize(up: Upstream, repo: string, digest: Digest, signal?: AbortSignal): Promise<number | undefined> {
    const cached = await this.opts.store.stat(digest);
    if (cached) return cached.size;
    const fill = this.fills.get(digest.value);
    if (fill) return (await fill).size;
    return up.headBlob(repo, digest, { signal });
  }

  /**
   * A blob (or one range of it) from the cache, or from the one fill of it in progress, which
   * this call starts if needed. A range that cannot be satisfied throws RANGE_INVALID.
   */
  async blob(up: Upstream, repo: string, digest: Digest, range: RangeRequest | undefined): Promise<ServedBlob> {
    const cached = await this.opts.store.stat(digest);
    if (cached) {
      const r = range && satisfy(range, cached.size);
      const reader = await this.opts.store.open(digest, r);
      if (reader) return { size: reader.size, range: r, body: reader.stream };
      // evicted between stat and open: fetch it again
    }
    const fill = await this.fill(up, repo, digest);
    const r = range && fill.size !== undefined ? satisfy(range, fill.size) : undefined;
    return { size: fill.size, range: r, body: fill.reader(r) };
  }

  tags(up: Upstream, repo: string, page: { n?: number; last?: string }, signal?: AbortSignal): Promise<TagPage> {
    return up.tags(repo, page, { signal });
  }

  referrers(up: Upstream, repo: string, digest: Digest, artifactType: string | undefined, signal?: AbortSignal): Promise<Manifest | undefined> {
    return up.referrers(repo, digest, artifactType, { signal });
  }

  /** Joins the fill of this digest in progress, or starts one. Fills outlive the requests that started them. */
  private fill(up: Upstream, repo: string, digest: Digest): Promise<Fill> {
    const running = this.fills.get(digest.value);
    if (running) return running;
    const started = (async () => {
      const res = await up.getBlob(repo, digest);
      const size = res.size;
      const resume = async (offset: number) => {
        this.opts.log.warn({ upstream: up.name, repo, digest: digest.value, offset }, 'upstream stream broke; resuming with a ranged request');
        const part = await up.getBlob(repo, digest, { range: { start: offset, end: size! - 1 } });
        if (part.range?.start !== offset) {
          part.body.destroy();
          throw new Error('upstream ignored the resume range');
        }
        return part.body;
      };
      const fill = await Fill.start(this.opts.store, digest, { size, body: res.body, resume });
      const t0 = this.now();
      fill.done.then(
        () => this.opts.log.info({ upstream: up.name, repo, digest: digest.value, bytes: fill.bytesWritten, ms: this.now() - t0 }, 'blob cached'),
        (e: Error) => this.opts.log.warn({ upstream: up.name, repo, digest: digest.value, err: e.message }, 'blob fill failed; nothing cached'),
      );
      void fill.done.catch(() => undefined).finally(() => this.fills.delete(digest.value));
      return fill;
    })();
    this.fills.set(digest.value, started);
    started.catch(() => this.fills.delete(digest.value));
    return started;
  }

  /** The tag's record, revalidated with a HEAD at most once per TTL; stale when the upstream fails. */
  private async resolveTag(up: Upstream, repo: string, tag: string): Promise<{ record: TagRecord; stale: boolean }> {
    const cached = await this.opts.meta.getTag(up.name, repo, tag);
    if (cached && this.now() - cached.checkedAt < this.opts.tagTtlMs && (await this.haveManifest(parseDigest(cached.digest)))) {
      return { record: cached, stale: false };
    }
    const key = `${up.name}\0${repo}\0${tag}`;
    let lookup = this.tagLookups.get(key);
    if (!lookup) {
      lookup = this.refreshTag(up, repo, tag, cached).finally(() => this.tagLookups.delete(key));
      this.tagLookups.set(key, lookup);
    }
    return lookup;
  }

  private async refreshTag(up: Upstream, repo: string, tag: string, cached: TagRecord | undefined): Promise<{ record: TagRecord; stale: boolean }> {
    const ref: Reference = { kind: 'tag', tag };
    const usable = cached !== undefined && (await this.haveManifest(parseDigest(cached.digest)));
    try {
      if (usable) {
        const head = await up.headManifest(repo, ref, MANIFEST_TYPES);
        if (head.digest === cached.digest) {
          const record = { ...cached, checkedAt: this.now() };
          await this.opts.meta.putTag(up.name, repo, tag, record);
          return { record, stale: false };
        }
      }
      const m = await up.getManifest(repo, ref, MANIFEST_TYPES);
      await this.keepManifest(m);
      const record: TagRecord = { digest: m.digest.value, mediaType: m.mediaType, size: m.body.length, checkedAt: this.now() };
      await this.opts.meta.putTag(up.name, repo, tag, record);
      return { record, stale: false };
    } catch (e) {
      if (!usable || !(e instanceof RegistryError) || !isUpstreamFailure(e)) throw e;
      this.opts.log.warn({ upstream: up.name, repo, tag, code: e.code, err: e.message }, 'tag revalidation failed; serving the cached manifest');
      return { record: cached, stale: true };
    }
  }

  /** A client whose Accept excludes the tag's usual type gets what the upstream picks for that Accept. */
  private async manifestForAccept(up: Upstream, repo: string, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    const m = await up.getManifest(repo, ref, accept, { signal });
    if (!accepts(accept, m.mediaType)) {
      throw new RegistryError('MANIFEST_UNKNOWN', { message: 'no manifest of an accepted media type', detail: { accept, available: m.mediaType } });
    }
    await this.keepManifest(m);
    return { digest: m.digest.value, mediaType: m.mediaType, body: m.body, stale: false };
  }

  private async manifestByDigest(up: Upstream, repo: string, digest: Digest, signal?: AbortSignal): Promise<Omit<ServedManifest, 'stale'>> {
    const record = await this.opts.meta.getManifest(digest);
    const reader = record && (await this.opts.store.open(digest));
    if (record && reader) {
      return { digest: digest.value, mediaType: record.mediaType, body: Buffer.concat(await reader.stream.toArray()) };
    }
    const m = await up.getManifest(repo, { kind: 'digest', digest }, MANIFEST_TYPES, { signal });
    await this.keepManifest(m);
    return { digest: m.digest.value, mediaType: m.mediaType, body: m.body };
  }

  private async haveManifest(digest: Digest): Promise<boolean> {
    return (await this.opts.meta.getManifest(digest)) !== undefined && (await this.opts.store.stat(digest)) !== undefined;
  }

  /** Manifests are verified by the upstream client; they are kept as blobs plus a type record. */
  private async keepManifest(m: Manifest): Promise<void> {
    await this.opts.meta.putManifest(m.digest, { mediaType: m.mediaType, size: m.body.length });
    if (await this.opts.store.stat(m.digest)) return;
    const file = join(this.opts.store.spoolDir, `manifest-${randomUUID()}`);
    await writeFile(file, m.body);
    await this.opts.store.ingest(m.digest, file, m.body.length);
  }
}

/** A single byte range as a client asked for it: from-to, from-end, or the last N bytes. */
export type RangeRequest = { start: number; end: number | undefined } | { suffix: number };

/** Resolves a range against the blob's size, or throws RANGE_INVALID (416). */
export function satisfy(range: RangeRequest, size: number): ByteRange {
  if ('suffix' in range) {
    if (range.suffix === 0 || size === 0) throw rangeInvalid(size);
    return { start: Math.max(0, size - range.suffix), end: size - 1 };
  }
  if (range.start >= size) throw rangeInvalid(size);
  return { start: range.start, end: Math.min(range.end ?? size - 1, size - 1) };
}

function rangeInvalid(size: number): RegistryError {
  return new RegistryError('RANGE_INVALID', { detail: { size }, headers: { 'content-range': `bytes */${size}` } });
}

function isUpstreamFailure(e: RegistryError): boolean {
  return e.code === 'UNAVAILABLE' || e.code === 'TOOMANYREQUESTS' || e.status === 502;
}
