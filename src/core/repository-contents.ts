// What each repository is known to hold. The cache is content-addressed and shared by every
// upstream and repository; with `auth`, that must not let a client who may pull from one
// repository read what another holds by naming its digest. So a blob, or a manifest asked for by
// digest, is served through a repository only when that repository is known to hold it: a
// manifest this cache served for that repository references it, or the upstream answered for that
// repository (a HEAD, asked when nothing is known yet; its refusal, a 404 most often, is the
// client's answer). A manifest's `subject` does not count: a registry accepts a referrer whose
// subject it does not hold.
//
// The knowledge is kept in the MetadataStore, so that it survives a restart and replicas sharing
// an S3 cache share it, with a bounded LRU in front so that a pull's blob requests cost no store
// read. New knowledge is written in the background: a manifest's answer does not wait for it, and
// what was lost to a crash is simply asked of the upstream again.
import { LRUCache } from 'lru-cache';
import type { MetadataStore } from '../cache/blob-store.js';
import type { Logger } from '../lib/log.js';
import { SingleFlight } from '../lib/single-flight.js';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { ParsedManifest } from '../oci/manifest.js';
import { MANIFEST_TYPES } from '../oci/media-types.js';
import type { Repository } from '../upstreams/repository.js';

/** Entries remembered in memory: at about 300 bytes each, some 6 MB. */
const REMEMBERED = 20_000;

export interface RepositoryContentsOptions {
  meta: MetadataStore;
  log: Logger;
}

export class RepositoryContents {
  private readonly known = new LRUCache<string, true>({ max: REMEMBERED });
  private readonly asks = new SingleFlight<void>();
  private readonly writes = new Set<Promise<void>>();

  constructor(private readonly opts: RepositoryContentsOptions) {}

  /**
   * Resolves when `repo` is known to hold `digest` (a blob, or a manifest); otherwise asks the
   * upstream for that repository, and throws its refusal.
   */
  async ensure(repo: Repository, digest: Digest, kind: 'blob' | 'manifest', signal?: AbortSignal): Promise<void> {
    if (exempt(repo)) return;
    const key = keyOf(repo, digest.value);
    if (this.known.has(key)) return;
    await this.asks.run(
      key,
      async () => {
        if (await this.opts.meta.getHolding(repo.upstream.name, repo.name, digest.value)) {
          this.known.set(key, true);
          return;
        }
        if (kind === 'blob') await repo.headBlob(digest);
        else await repo.headManifest({ kind: 'digest', digest }, MANIFEST_TYPES);
        this.learn(repo, [digest.value]);
      },
      { signal },
    );
  }

  /** A manifest served for `repo`: it holds the manifest and every blob and manifest it references. */
  learnManifest(repo: Repository, digest: string, manifest: ParsedManifest): void {
    const referenced = [manifest.config, ...(manifest.layers ?? []), ...(manifest.manifests ?? [])];
    this.learn(repo, [digest, ...referenced.flatMap((d) => (d ? [d.digest] : []))]);
  }

  /** Records that `repo` holds these digests (those that are not digests are skipped). */
  learn(repo: Repository, digests: readonly string[]): void {
    if (exempt(repo)) return;
    const parsed = digests.flatMap((d) => tryParseDigest(d)?.value ?? []);
    const fresh = [...new Set(parsed)].filter((d) => {
      const key = keyOf(repo, d);
      if (this.known.has(key)) return false;
      this.known.set(key, true);
      return true;
    });
    if (fresh.length === 0) return;
    const write = this.opts.meta.putHoldings(repo.upstream.name, repo.name, fresh).catch((e: Error) => {
      this.opts.log.warn({ ...repo.where, err: e.message }, 'could not record what a repository holds; it will be asked of the upstream');
    });
    this.writes.add(write);
    void write.finally(() => this.writes.delete(write));
  }

  /** Waits for the records being written. */
  async close(): Promise<void> {
    await Promise.all(this.writes);
  }
}

/**
 * A repository handle with the client's own credentials (clientCredentials: passthrough): its
 * upstream confirms, with them, each item served (client-access.ts), which answers this too.
 */
function exempt(repo: Repository): boolean {
  return repo.client !== undefined;
}

function keyOf(repo: Repository, digest: string): string {
  return `${repo.key}\n${digest}`;
}
