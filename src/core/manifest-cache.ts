// Manifests through the cache. By digest: immutable, served from the store forever. By tag: the
// tag's digest is revalidated with an upstream HEAD at most once per TTL, and fetched with a GET
// only when it changed. When the upstream fails, is slow, or is about to rate-limit us, a cached
// tag is served as it is. Every manifest is parsed before it is kept, and again when read back:
// a body that is not what its media type says is never cached, and one an older version cached
// is dropped and fetched again.
import { createHash, randomUUID } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BlobStore, MetadataStore, TagRecord } from '../cache/blob-store.js';
import { LRUCache } from 'lru-cache';
import { SingleFlight } from '../lib/single-flight.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { MAX_MANIFEST_BYTES, parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { accepts, MANIFEST_TYPES } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { Manifest, RateLimit, Upstream } from '../upstreams/upstream.js';
import type { Fleet } from '../fleet/fleet.js';
import { onceInFleet } from '../fleet/once.js';
import type { Repository } from '../upstreams/repository.js';
import type { Logger } from '../lib/log.js';
import type { Served } from './served.js';

export interface ServedManifest {
  digest: string;
  mediaType: string;
  body: Buffer;
  /** the body, parsed and checked */
  manifest: ParsedManifest;
  /** how it was served; `stale`: from cache because the upstream could not be asked */
  served: Exclude<Served, 'lazy'>;
}

export interface ManifestCacheOptions {
  store: BlobStore;
  meta: MetadataStore;
  tagTtlMs: number;
  /** deadline for revalidating a tag we hold; past it the cached manifest is served */
  revalidateTimeoutMs: number;
  log: Logger;
  /** sees every manifest served, with the upstream and repository it was served for (e.g. to learn which layers are eStargz) */
  onManifest?: ((manifest: ParsedManifest, repo: Repository) => void) | undefined;
  /** the bytes of parsed manifests kept in memory (default DEFAULT_MEMORY_BYTES) */
  memoryBytes?: number | undefined;
  /** replicas that revalidate each tag and fetch each manifest once between them (src/fleet) */
  fleet?: Fleet | undefined;
  /** the upstream's rate limit as the fleet knows it (default: as this replica last saw it) */
  rateLimit?: ((up: Upstream) => RateLimit | undefined) | undefined;
  now?: () => number;
}

type Held = Omit<ServedManifest, 'served'>;

/** Manifests in memory: about 16 MiB of bodies, some thousands of manifests. */
const DEFAULT_MEMORY_BYTES = 48 << 20;

interface Resolved {
  record: TagRecord;
  /** hit: the cached record (revalidated or not); miss: fetched; stale: the cached record, the upstream failing */
  served: ServedManifest['served'];
  /** the manifest itself, when resolving fetched it (already parsed: not read back and parsed again) */
  fetched?: Held | undefined;
}

export class ManifestCache {
  private readonly tagLookups = new SingleFlight<Resolved>();
  private readonly digestFetches = new SingleFlight<Held>();
  /**
   * Manifests read or fetched lately, parsed, by digest, bounded by bytes: a manifest is
   * immutable, so a copy in memory needs only the store's word that it still holds it, and the
   * hot path reads no file. Only over a store with a local index (one that takes `touch`: the
   * filesystem, or a local tier), whose word costs nothing and is current; a bucket alone is
   * read each time, so that an object removed from it is noticed by the next read.
   */
  private readonly memory: LRUCache<string, Held> | undefined;
  private readonly now: () => number;

  constructor(private readonly opts: ManifestCacheOptions) {
    this.now = opts.now ?? Date.now;
    // a parsed manifest takes about twice its body again
    this.memory = opts.store.touch ? new LRUCache<string, Held>({ maxSize: opts.memoryBytes ?? DEFAULT_MEMORY_BYTES, sizeCalculation: (h) => 3 * h.body.length + 256 }) : undefined;
  }

  /** GET or HEAD of a manifest by tag or digest, honouring the client's Accept list. */
  async get(repo: Repository, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    const served = await this.lookup(repo, ref, accept, signal);
    this.opts.onManifest?.(served.manifest, repo);
    return served;
  }

  private async lookup(repo: Repository, ref: Reference, accept: readonly string[], signal?: AbortSignal): Promise<ServedManifest> {
    if (ref.kind === 'digest') return this.byDigest(repo, ref.digest, signal);
    const first = await this.tagRecord(repo, ref.tag, accept);
    const held = first.fetched ?? (await this.held(parseDigest(first.record.digest)));
    if (held) return { ...held, served: first.served };
    // not held after all (evicted meanwhile, or an invalid copy `held` just dropped): resolved afresh
    const { record, served } = await this.tagRecord(repo, ref.tag, accept);
    const m = await this.byDigest(repo, parseDigest(record.digest), signal);
    return served === 'stale' ? { ...m, served } : m;
  }

  private async tagRecord(repo: Repository, tag: string, accept: readonly string[]): Promise<Resolved> {
    const resolved = await this.resolveTag(repo, tag, MANIFEST_TYPES);
    // A client whose Accept excludes the tag's usual type (say, only schema 2 for a manifest list)
    // gets what the upstream picks for that Accept: a tag record of its own, under the same rules.
    return accepts(accept, resolved.record.mediaType) ? resolved : this.resolveTag(repo, tag, accept);
  }


  /**
   * The tag's record as the upstream answers it for `accept`, revalidated at most once per TTL,
   * one upstream lookup per tag (and Accept) at a time.
   */
  private async resolveTag(repo: Repository, tag: string, accept: readonly string[]): Promise<Resolved> {
    const variant = accept === MANIFEST_TYPES ? tag : `${tag}\0accept=${[...accept].sort().join(',')}`;
    const cached = await this.opts.meta.getTag(repo.upstream.name, repo.name, variant);
    const usable = cached !== undefined && (await this.have(parseDigest(cached.digest)));
    if (usable && this.now() - cached.checkedAt < this.opts.tagTtlMs) return { record: cached, served: 'hit' };
    if (usable && !repo.upstream.healthy()) {
      this.opts.log.warn({ ...repo.where, tag }, 'upstream is failing; serving the cached tag without asking it');
      return { record: cached, served: 'stale' };
    }
    if (usable && this.conserving(repo.upstream)) {
      this.opts.log.info({ ...repo.where, tag }, 'upstream rate limit is low; serving the cached tag without revalidation');
      return { record: cached, served: 'hit' };
    }
    const key = `${repo.key}\0${variant}`;
    const joined = this.tagLookups.peek(key) !== undefined;
    const ours = usable ? cached : undefined;
    // across a fleet too, one revalidation per tag: the others read the record it leaves
    const resolved = await this.tagLookups.run(key, () =>
      onceInFleet(this.opts.fleet, `tag:${hashKey(key)}`, {
        found: () => this.freshTag(repo, variant),
        work: () => this.refreshTag(repo, tag, variant, accept, ours),
        // with a copy to serve, nobody waits longer on the fleet than on the upstream itself
        waitMs: ours ? this.opts.revalidateTimeoutMs : undefined,
        gaveUp: ours && (async () => ({ record: ours, served: 'stale' as const })),
      }),
    );
    return joined && resolved.served === 'miss' ? { ...resolved, served: 'coalesced' } : resolved;
  }

  /** The tag's record when it was checked within the TTL (by any replica) and its manifest is held. */
  private async freshTag(repo: Repository, variant: string): Promise<Resolved | undefined> {
    const record = await this.opts.meta.getTag(repo.upstream.name, repo.name, variant);
    if (!record || this.now() - record.checkedAt >= this.opts.tagTtlMs || !(await this.have(parseDigest(record.digest)))) return undefined;
    return { record, served: 'hit' };
  }

  private async refreshTag(repo: Repository, tag: string, variant: string, accept: readonly string[], cached: TagRecord | undefined): Promise<Resolved> {
    const ref: Reference = { kind: 'tag', tag };
    // with a cached copy to fall back on, a slow upstream must not make the pull slow
    const signal = cached ? AbortSignal.timeout(this.opts.revalidateTimeoutMs) : undefined;
    try {
      if (cached) {
        const head = await repo.headManifest(ref, accept, { signal });
        if (head.digest === cached.digest) {
          const record = { ...cached, checkedAt: this.now() };
          await this.opts.meta.putTag(repo.upstream.name, repo.name, variant, record);
          return { record, served: 'hit' };
        }
      }
      const m = await repo.getManifest(ref, accept, { signal });
      if (!accepts(accept, m.mediaType)) {
        throw new RegistryError('MANIFEST_UNKNOWN', { message: 'no manifest of an accepted media type', detail: { accept, available: m.mediaType } });
      }
      const manifest = await this.keep(repo, m);
      const record: TagRecord = { digest: m.digest.value, mediaType: m.mediaType, size: m.body.length, checkedAt: this.now() };
      await this.opts.meta.putTag(repo.upstream.name, repo.name, variant, record);
      return { record, served: 'miss', fetched: { digest: m.digest.value, mediaType: m.mediaType, body: m.body, manifest } };
    } catch (e) {
      if (!cached || !(e instanceof RegistryError) || !isUpstreamFailure(e)) throw e;
      this.opts.log.warn({ ...repo.where, tag, code: e.code, err: e.message }, 'tag revalidation failed; serving the cached manifest');
      return { record: cached, served: 'stale' };
    }
  }

  /** True while the upstream's announced rate limit is nearly used up and its window has not passed. */
  private conserving(up: Upstream): boolean {
    const rl = this.opts.rateLimit ? this.opts.rateLimit(up) : up.rateLimit();
    if (!rl) return false;
    return rl.remaining <= Math.max(1, Math.floor(rl.limit / 10)) && this.now() < rl.seenAt + rl.windowSeconds * 1000;
  }

  private async byDigest(repo: Repository, digest: Digest, signal?: AbortSignal): Promise<ServedManifest> {
    const held = await this.held(digest);
    if (held) return { ...held, served: 'hit' };
    const joined = this.digestFetches.peek(digest.value) !== undefined;
    // the fetch is shared, so it runs on no client's signal: one client leaving must not fail the rest
    const fetched = await this.digestFetches.run(
      digest.value,
      () =>
        onceInFleet(this.opts.fleet, `manifest:${digest.value}`, {
          found: () => this.held(digest),
          work: async () => {
            const m = await repo.getManifest({ kind: 'digest', digest }, MANIFEST_TYPES);
            return { digest: m.digest.value, mediaType: m.mediaType, body: m.body, manifest: await this.keep(repo, m) };
          },
        }),
      { signal },
    );
    return { ...fetched, served: joined ? 'coalesced' : 'miss' };
  }

  /**
   * The cached manifest, parsed; undefined when it is not cached. A copy that does not parse
   * (kept by a version that did not check) is deleted and counts as not cached.
   */
  private async held(digest: Digest): Promise<Held | undefined> {
    const known = this.memory?.get(digest.value);
    if (known) {
      if (await this.opts.store.stat(digest)) {
        this.opts.store.touch?.(digest); // read from memory, it still counts as read for the store's LRU and age bound
        return known;
      }
      this.memory!.delete(digest.value); // evicted from the store: fetched again, like any evicted manifest
      return undefined;
    }
    const held = await this.fromStore(digest);
    if (held) this.memory?.set(digest.value, held);
    return held;
  }

  /** The cached manifest as the store holds it, parsed (see held). */
  private async fromStore(digest: Digest): Promise<Held | undefined> {
    const record = await this.opts.meta.getManifest(digest);
    const reader = record && (await this.opts.store.open(digest));
    if (!record || !reader) return undefined;
    if (reader.size > MAX_MANIFEST_BYTES) {
      reader.stream.destroy();
      return this.drop(digest, `larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    const body = Buffer.concat(await reader.stream.toArray());
    try {
      return { digest: digest.value, mediaType: record.mediaType, body, manifest: parseManifest(body, record.mediaType) };
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      return this.drop(digest, e.message);
    }
  }

  private async have(digest: Digest): Promise<boolean> {
    const recorded = this.memory?.has(digest.value) || (await this.opts.meta.getManifest(digest)) !== undefined;
    return recorded && (await this.opts.store.stat(digest)) !== undefined;
  }

  private async drop(digest: Digest, why: string): Promise<undefined> {
    this.memory?.delete(digest.value);
    this.opts.log.warn({ digest: digest.value, err: why }, 'dropping a cached manifest that is not valid; it will be fetched again');
    await this.opts.store.delete(digest).catch((e: Error) => this.opts.log.warn({ digest: digest.value, err: e.message }, 'could not delete an invalid cached manifest'));
    return undefined;
  }

  /**
   * Manifests are verified against their digest by the upstream client and parsed here; they are
   * kept as blobs plus a type record. One that does not parse is refused (502), and not kept.
   */
  private async keep(repo: Repository, m: Manifest): Promise<ParsedManifest> {
    let manifest: ParsedManifest;
    try {
      manifest = parseManifest(m.body, m.mediaType);
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      throw new RegistryError('MANIFEST_INVALID', {
        status: 502,
        message: `upstream "${repo.upstream.name}" sent an ${e.message}`,
        detail: { upstream: repo.upstream.name, digest: m.digest.value, mediaType: m.mediaType, ...(e.detail as object) },
      });
    }
    await this.opts.meta.putManifest(m.digest, { mediaType: m.mediaType, size: m.body.length });
    this.memory?.set(m.digest.value, { digest: m.digest.value, mediaType: m.mediaType, body: m.body, manifest });
    if (await this.opts.store.stat(m.digest)) return manifest;
    const file = join(this.opts.store.spoolDir, `manifest-${randomUUID()}`);
    try {
      await writeFile(file, m.body);
      await this.opts.store.ingest(m.digest, file, m.body.length);
    } finally {
      await rm(file, { force: true }); // gone already unless the write or the ingest failed (a full disk)
    }
    return manifest;
  }
}

function isUpstreamFailure(e: RegistryError): boolean {
  return e.code === 'UNAVAILABLE' || e.code === 'TOOMANYREQUESTS' || e.status === 502;
}

/** A fixed-length name for a lookup key (which holds repository names and Accept lists) in the fleet's store. */
function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 32);
}
