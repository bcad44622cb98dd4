// Manifests through the cache. By digest: immutable, served from the store forever. By tag: the
// tag's digest is revalidated with an upstream HEAD at most once per TTL, and fetched with a GET
// only when it changed. When the upstream fails, is slow, or is about to rate-limit us, a cached
// tag is served as it is.
import { randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore, MetadataStore, TagRecord } from '../cache/blob-store.js';
import { SingleFlight } from '../cache/single-flight.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { accepts, MANIFEST_TYPES } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { Manifest, Upstream } from '../upstreams/upstream.js';
import type { Logger } from './pull-through.js';

export interface ServedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
  /** served from cache because the upstream could not be asked */
  stale: boolean;
}

export interface ManifestCacheOptions {
  store: BlobStore;
  meta: MetadataStore;
  tagTtlMs: number;
  /** deadline for revalidating a tag we hold; past it the cached manifest is served */
  revalidateTimeoutMs: number;
  log: Logger;
  /** sees every manifest served, with the upstream and repository it was served for (e.g. to learn which layers are eStargz) */
  onManifest?: ((body: Buffer, up: Upstream, repo: string) => void) | undefined;
  now?: () => number;
}

interface Resolved {
  record: TagRecord;
  stale: boolean;
}

export class ManifestCache {
  private readonly tagLookups = new SingleFlight<Resolved>();
  private readonly digestFetches = new SingleFlight<Manifest>();
  private readonly now: () => number;

  constructor(private readonly opts: ManifestCacheOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** GET or HEAD of a manifest by tag or digest, honouring the client's Accept list. */
  async get(up: Upstream, repo: string, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    const served = await this.lookup(up, repo, ref, accept, signal);
    this.opts.onManifest?.(served.body, up, repo);
    return served;
  }

  private async lookup(up: Upstream, repo: string, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    if (ref.kind === 'digest') return { ...(await this.byDigest(up, repo, ref.digest, signal)), stale: false };
    let resolved = await this.resolveTag(up, repo, ref.tag, MANIFEST_TYPES);
    // A client whose Accept excludes the tag's usual type (say, only schema 2 for a manifest list)
    // gets what the upstream picks for that Accept: a tag record of its own, under the same rules.
    if (!accepts(accept, resolved.record.mediaType)) resolved = await this.resolveTag(up, repo, ref.tag, accept);
    const { record, stale } = resolved;
    return { ...(await this.byDigest(up, repo, parseDigest(record.digest), signal)), stale };
  }

  /**
   * The tag's record as the upstream answers it for `accept`, revalidated at most once per TTL,
   * one upstream lookup per tag (and Accept) at a time.
   */
  private async resolveTag(up: Upstream, repo: string, tag: string, accept: readonly string[]): Promise<Resolved> {
    const variant = accept === MANIFEST_TYPES ? tag : `${tag}\0accept=${[...accept].sort().join(',')}`;
    const cached = await this.opts.meta.getTag(up.name, repo, variant);
    const usable = cached !== undefined && (await this.have(parseDigest(cached.digest)));
    if (usable && this.now() - cached.checkedAt < this.opts.tagTtlMs) return { record: cached, stale: false };
    if (usable && !up.healthy()) {
      this.opts.log.warn({ upstream: up.name, repo, tag }, 'upstream is failing; serving the cached tag without asking it');
      return { record: cached, stale: true };
    }
    if (usable && this.conserving(up)) {
      this.opts.log.info({ upstream: up.name, repo, tag }, 'upstream rate limit is low; serving the cached tag without revalidation');
      return { record: cached, stale: false };
    }
    return this.tagLookups.run(`${up.name}\0${repo}\0${variant}`, () => this.refreshTag(up, repo, tag, variant, accept, usable ? cached : undefined));
  }

  private async refreshTag(up: Upstream, repo: string, tag: string, variant: string, accept: readonly string[], cached: TagRecord | undefined): Promise<Resolved> {
    const ref: Reference = { kind: 'tag', tag };
    // with a cached copy to fall back on, a slow upstream must not make the pull slow
    const signal = cached ? AbortSignal.timeout(this.opts.revalidateTimeoutMs) : undefined;
    try {
      if (cached) {
        const head = await up.headManifest(repo, ref, accept, { signal });
        if (head.digest === cached.digest) {
          const record = { ...cached, checkedAt: this.now() };
          await this.opts.meta.putTag(up.name, repo, variant, record);
          return { record, stale: false };
        }
      }
      const m = await up.getManifest(repo, ref, accept, { signal });
      if (!accepts(accept, m.mediaType)) {
        throw new RegistryError('MANIFEST_UNKNOWN', { message: 'no manifest of an accepted media type', detail: { accept, available: m.mediaType } });
      }
      await this.keep(m);
      const record: TagRecord = { digest: m.digest.value, mediaType: m.mediaType, size: m.body.length, checkedAt: this.now() };
      await this.opts.meta.putTag(up.name, repo, variant, record);
      return { record, stale: false };
    } catch (e) {
      if (!cached || !(e instanceof RegistryError) || !isUpstreamFailure(e)) throw e;
      this.opts.log.warn({ upstream: up.name, repo, tag, code: e.code, err: e.message }, 'tag revalidation failed; serving the cached manifest');
      return { record: cached, stale: true };
    }
  }

  /** True while the upstream's announced rate limit is nearly used up and its window has not passed. */
  private conserving(up: Upstream): boolean {
    const rl = up.rateLimit();
    if (!rl) return false;
    return rl.remaining <= Math.max(1, Math.floor(rl.limit / 10)) && this.now() < rl.seenAt + rl.windowSeconds * 1000;
  }

  private async byDigest(up: Upstream, repo: string, digest: Digest, signal?: AbortSignal): Promise<Omit<ServedManifest, 'stale'>> {
    const record = await this.opts.meta.getManifest(digest);
    const reader = record && (await this.opts.store.open(digest));
    if (record && reader) {
      return { digest: digest.value, mediaType: record.mediaType, body: Buffer.concat(await reader.stream.toArray()) };
    }
    // the fetch is shared, so it runs on no client's signal: one client leaving must not fail the rest
    const m = await this.digestFetches.run(
      digest.value,
      async () => {
        const fetched = await up.getManifest(repo, { kind: 'digest', digest }, MANIFEST_TYPES);
        await this.keep(fetched);
        return fetched;
      },
      signal,
    );
    return { digest: m.digest.value, mediaType: m.mediaType, body: m.body };
  }

  private async have(digest: Digest): Promise<boolean> {
    return (await this.opts.meta.getManifest(digest)) !== undefined && (await this.opts.store.stat(digest)) !== undefined;
  }

  /** Manifests are verified by the upstream client; they are kept as blobs plus a type record. */
  private async keep(m: Manifest): Promise<void> {
    await this.opts.meta.putManifest(m.digest, { mediaType: m.mediaType, size: m.body.length });
    if (await this.opts.store.stat(m.digest)) return;
    const file = join(this.opts.store.spoolDir, `manifest-${randomUUID()}`);
    await writeFile(file, m.body);
    await this.opts.store.ingest(m.digest, file, m.body.length);
  }
}

function isUpstreamFailure(e: RegistryError): boolean {
  return e.code === 'UNAVAILABLE' || e.code === 'TOOMANYREQUESTS' || e.status === 502;
}
