// What a client of an upstream with clientCredentials: passthrough may be served of what the cache
// holds. The cache is shared by every client, so a manifest or blob it holds (or is fetching) is
// served to such a client only once the upstream has confirmed, with that client's own
// credentials, that it may read that item in that repository: a HEAD of it, remembered per
// credential for CONFIRMED_TTL_MS. The same HEAD answers 404 for an item the repository does not
// hold, so knowing a digest the cache holds for another repository gets a client nothing.
//
// A manifest the upstream confirmed vouches for what it references (its layers, its config, an
// index's manifests): the registry holds those in the same repository, so a pull costs one HEAD
// per credential and tag, not one per blob.
//
// Refusals (UNAUTHORIZED, DENIED) are remembered for REFUSED_TTL_MS, so a client retrying with
// wrong credentials does not make us ask the upstream at its pace. When the upstream cannot be
// asked (unreachable, failing, rate limiting), nothing is confirmed: a client is served only what
// its credential was confirmed for within the TTL, and refused the rest (503), because a cache
// that served private content to anyone while its upstream is down would be a way around the
// upstream's access rules.
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../oci/errors.js';
import type { ParsedManifest } from '../oci/manifest.js';
import { MANIFEST_TYPES } from '../oci/media-types.js';
import { referenceString, type Reference } from '../oci/reference.js';
import type { Digest } from '../oci/digest.js';
import { SingleFlight } from '../lib/single-flight.js';
import type { Repository } from '../upstreams/repository.js';

/** How long a confirmation is trusted: also how long a revoked credential may still read what it was confirmed for. */
export const CONFIRMED_TTL_MS = 60_000;
/** How long a refusal is answered without asking again. */
export const REFUSED_TTL_MS = 10_000;
/** Confirmations and refusals remembered at most (the least recently used go first: they are asked again). */
const MAX_ENTRIES = 20_000;

/** What a client asks to be served: a manifest by tag or digest, or a blob. */
export type Item = { kind: 'manifest'; ref: Reference } | { kind: 'blob'; digest: Digest };

export interface ClientAccessOptions {
  ttlMs?: number | undefined;
  refusedTtlMs?: number | undefined;
  maxEntries?: number | undefined;
  now?: (() => number) | undefined;
}

interface Entry {
  at: number;
  /** the upstream's refusal, answered again while it is fresh */
  refusal?: RegistryError | undefined;
}

export class ClientAccess {
  readonly #ttlMs: number;
  readonly #refusedTtlMs: number;
  readonly #now: () => number;
  /** by credential identity (a keyed hash), repository and item: in memory only */
  readonly #entries: LRUCache<string, Entry>;
  readonly #asking = new SingleFlight<void>();

  constructor(o: ClientAccessOptions = {}) {
    this.#ttlMs = o.ttlMs ?? CONFIRMED_TTL_MS;
    this.#refusedTtlMs = o.refusedTtlMs ?? REFUSED_TTL_MS;
    this.#now = o.now ?? Date.now;
    this.#entries = new LRUCache({ max: o.maxEntries ?? MAX_ENTRIES });
  }

  /**
   * Resolves once `repo`'s client may be served `item`; throws the upstream's refusal
   * (UNAUTHORIZED, DENIED, a 404) or UNAVAILABLE when it cannot be asked. A repository without a
   * client's credentials (the upstream's configured ones serve everyone) resolves at once.
   */
  async confirm(repo: Repository, item: Item, signal?: AbortSignal): Promise<void> {
    const key = this.#key(repo, itemKey(item));
    if (key === undefined) return;
    const known = this.#fresh(key);
    if (known?.refusal) throw known.refusal;
    if (known) return;
    if (!repo.upstream.healthy()) throw cannotConfirm(repo, undefined);
    await this.#asking.run(key, () => this.#ask(repo, item, key), { signal });
  }

  /** Remembers that `repo`'s client may read what `manifest` (served to it after confirm) references. */
  vouch(repo: Repository, digest: string, manifest: ParsedManifest): void {
    if (this.#key(repo, '') === undefined) return;
    const at = this.#now();
    const items = [
      `manifest ${digest}`,
      ...(manifest.manifests ?? []).map((d) => `manifest ${d.digest}`),
      ...[manifest.config, ...(manifest.layers ?? [])].flatMap((d) => (d ? [`blob ${d.digest}`] : [])),
    ];
    for (const item of items) {
      const key = this.#key(repo, item)!;
      if (!this.#fresh(key)?.refusal) this.#entries.set(key, { at });
    }
  }

  async #ask(repo: Repository, item: Item, key: string): Promise<void> {
    try {
      if (item.kind === 'manifest') await repo.headManifest(item.ref, MANIFEST_TYPES);
      else await repo.headBlob(item.digest);
    } catch (e) {
      if (!(e instanceof RegistryError)) throw e;
      if (e.code === 'UNAUTHORIZED' || e.code === 'DENIED') {
        this.#entries.set(key, { at: this.#now(), refusal: e });
        throw e;
      }
      if (e.status === 404) throw e;
      throw cannotConfirm(repo, e);
    }
    this.#entries.set(key, { at: this.#now() });
  }

  /** The entry while it holds: a confirmation for the TTL, a refusal for its shorter one. */
  #fresh(key: string): Entry | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    const age = this.#now() - e.at;
    if (age >= 0 && age < (e.refusal ? this.#refusedTtlMs : this.#ttlMs)) return e;
    this.#entries.delete(key);
    return undefined;
  }

  #key(repo: Repository, item: string): string | undefined {
    return repo.client && `${repo.client.identity}\n${repo.key}\n${item}`;
  }
}

function itemKey(item: Item): string {
  return item.kind === 'manifest' ? `manifest ${referenceString(item.ref)}` : `blob ${item.digest.value}`;
}

function cannotConfirm(repo: Repository, cause: RegistryError | undefined): RegistryError {
  const name = repo.upstream.name;
  const why = cause ? cause.message : `upstream "${name}" is failing`;
  return new RegistryError(cause?.code === 'TOOMANYREQUESTS' ? 'TOOMANYREQUESTS' : 'UNAVAILABLE', {
    message: `${why}; it could not confirm that your credentials may read ${repo.name}, and what pullthrough caches of it is served only once it does`,
    detail: { upstream: name, repository: repo.name },
    headers: cause?.headers ?? {},
    cause,
  });
}
