// Layers served lazily, in any of the LazyFormats handed in (format.ts). A manifest that passes
// through claims which of its layers a format can serve (eStargz: the
// containerd.io/snapshot/stargz/toc.digest annotation, and the layer's size); the claim holds
// for that upstream and repository only. A Range on such a layer, uncached, opens it under the
// claim of the requesting upstream and repository: the index must match the claim, the size the
// blob's, else the layer is served plainly and the claim is set aside for a while. A verified
// layer's claim is recorded beside its sparse copy (<dir>/<alg>/<hex>.layer, with the upstreams
// and repositories that made it), so a restart keeps serving it lazily to them; another claim
// about the same blob (a different index) never reads that copy and is served plainly. Open
// layers' indexes are bounded by their estimated memory in total (estargz.maxIndexMemory),
// sparse copies by their bytes on disk (estargz.maxSparseSize). Once the blob is cached whole,
// the layer is forgotten.
import { access, readdir, readFile, rm, stat } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { basename, join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { SingleFlight } from '../lib/single-flight.js';
import { makeDir, replaceFile } from '../cache/disk-writes.js';
import { LruIndex } from '../cache/lru-index.js';
import { removeSparse, sparseBytes } from '../cache/sparse-blob.js';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { ParsedManifest } from '../oci/manifest.js';
import type { Repository } from '../upstreams/repository.js';
import type { LayerClaim, LazyFormat, LazyIndex } from './format.js';
import { ClaimRefuted, Layer, refutesClaim, upstreamSpans, type FetchSpan, type LazyLayer } from './layer.js';
import type { Logger } from '../lib/log.js';
import { SparseBudget } from './sparse-budget.js';

/** An open index costs about this many bytes of memory per byte of index (eStargz: parsed entries, lookups, the raw TOC JSON; measured on large TOCs: 4-6). */
export const INDEX_BYTES_PER_TOC_BYTE = 6;
export const DEFAULT_MAX_INDEX_BYTES = 256 << 20;
export const DEFAULT_MAX_TOC_BYTES = 16 << 20;
/** TOCs being read and parsed at once (each briefly costs several times its size) */
const OPENS_AT_ONCE = 2;
/** a refuted claim is not tried again for this long, even when a manifest repeats it */
const REFUTED_MS = 10 * 60_000;
const MAX_CLAIMANTS = 64;

export interface LazyLayersOptions {
  /** the formats layers may be served lazily in, tried in this order (none: nothing is lazy) */
  formats?: readonly LazyFormat[];
  /** where sparse copies (and the records of which layers are lazy) live */
  dir: string;
  log: Logger;
  /** fetch the range before a .prefetch.landmark on first touch */
  prefetch: boolean;
  /** after a ranged read, fill the rest of the layer in the background (it becomes an ordinary cached blob) */
  fillAfterRange?: boolean;
  /** the bytes all sparse copies may hold together (default: no bound) */
  maxBytes?: number;
  /** the memory the indexes of open layers may take together, estimated (INDEX_BYTES_PER_TOC_BYTE) */
  maxIndexBytes?: number;
  /** the largest index (eStargz: TOC JSON) a lazily served layer may have */
  maxTocBytes?: number;
  /** claims shared with other replicas (src/fleet/shared-facts.ts), by upstream and repository (`who`) and layer digest */
  shared?: {
    share(who: string, digest: string, claim: LayerClaim): void;
    get(who: string, digest: string): Promise<LayerClaim | undefined>;
  } | undefined;
}

/**
 * What the record beside a sparse copy says: the claim its bytes were verified under, and who
 * made it. The claim's index is stored as `tocDigest`, as before there were formats; a record
 * without `format` is of the first format.
 */
interface LayerRecord {
  format?: string;
  tocDigest: string;
  size: number;
  claimants: string[];
}

interface OpenLayer {
  claim: LayerClaim;
  layer: Promise<Layer>;
  /** upstream and repository pairs whose claim this layer is (also in the record) */
  claimants: Set<string>;
}

/** Not now: the layers' indexes fill estargz.maxIndexMemory and are all in use. */
class MemoryFull extends Error {}

const sameClaim = (a: LayerClaim, b: LayerClaim): boolean => a.format === b.format && a.index === b.index && a.size === b.size;
const claimId = (who: string, digest: Digest, c: LayerClaim): string => `${who}\n${digest.value}\n${c.format}\n${c.index}\n${c.size}`;

export class LazyLayers {
  /** upstream, repository and layer digest → what that repository's manifests said about the layer */
  private readonly claims = new LRUCache<string, LayerClaim>({ max: 100_000 });
  /** claims whose layer failed to open: served plainly, not tried again for a while */
  private readonly refuted = new LRUCache<string, true>({ max: 10_000, ttl: REFUTED_MS });
  /** by layer digest: one open layer (one sparse copy) per blob */
  private readonly open = new Map<string, OpenLayer>();
  /** estimated index memory of the open layers, by digest; pinned while a request holds one */
  private readonly memory: LruIndex;
  private readonly maxIndexBytes: number;
  private readonly budget: SparseBudget;
  /** copies not open here being removed for the budget: opening one waits for that */
  private readonly pruning = new SingleFlight<void>();
  /** the start-up scan of the copies already on disk */
  private readonly ready: Promise<void>;
  private opening = 0;
  private readonly waiting: (() => void)[] = [];
  private readonly formats: ReadonlyMap<string, LazyFormat>;
  private fetchedBytes = 0;
  private servedBytes = 0;

  constructor(private readonly opts: LazyLayersOptions) {
    this.formats = new Map((opts.formats ?? []).map((f) => [f.name, f]));
    this.budget = new SparseBudget(opts.maxBytes ?? Infinity);
    this.maxIndexBytes = opts.maxIndexBytes ?? DEFAULT_MAX_INDEX_BYTES;
    this.memory = new LruIndex(this.maxIndexBytes, (digest) => this.unload(digest));
    this.ready = this.scan();
  }

  get fillAfterRange(): boolean {
    return this.opts.fillAfterRange ?? false;
  }

  /** Bytes of lazy layers fetched from upstreams (indexes, ranges, prefetches) and served to clients' ranges, since start-up. */
  get bytes(): { fetched: number; served: number } {
    return { fetched: this.fetchedBytes, served: this.servedBytes };
  }

  /** Notes the layers a manifest served for `repo` claims a format for (called for every manifest served). */
  learn(manifest: ParsedManifest, repo: Repository): void {
    const who = repo.key;
    for (const layer of manifest.layers ?? []) {
      const digest = tryParseDigest(layer.digest);
      if (!digest || !Number.isSafeInteger(layer.size) || layer.size <= 0) continue;
      for (const format of this.formats.values()) {
        const claim = format.claim(layer);
        if (!claim) continue;
        if (!this.refuted.has(claimId(who, digest, claim))) {
          this.claims.set(`${who}\n${digest.value}`, claim);
          this.opts.shared?.share(who, digest.value, claim);
        }
        break;
      }
    }
  }

  /**
   * The lazy layer as `repo` (an upstream and repository) sees it (opening its index on first use), or undefined: not
   * claimed lazy there, or not servable lazily under that claim (then it is served plainly).
   */
  async layer(repo: Repository, digest: Digest): Promise<LazyLayer | undefined> {
    const who = repo.key;
    for (let turn = 0; turn < 2; turn++) {
      const claim = await this.claimOf(who, digest);
      if (!claim) return undefined;
      const entry = this.open.get(digest.value) ?? this.startOpen(repo, digest, claim);
      const layer = await entry.layer.catch(() => undefined);
      if (layer) {
        if (!sameClaim(layer.claim, claim)) return undefined; // its copy holds bytes verified under another claim
        this.join(entry, layer, who);
        // the caller holds it before any I/O of its own: an eviction cannot close it in between
        return layer.view(this.counted(upstreamSpans(repo, digest, claim.size)), () => this.pin(digest.value), (n) => void (this.servedBytes += n));
      }
      if (sameClaim(entry.claim, claim)) return undefined; // this claim failed to open (the opener logged why)
      // another claim failed to open: this one gets its turn
    }
    return undefined;
  }

  /**
   * Started (touched) layers only, in this run or an earlier one whose sparse copy is still on
   * disk: for a full GET to fill from what is already here.
   */
  async started(repo: Repository, digest: Digest): Promise<LazyLayer | undefined> {
    if (!this.open.has(digest.value) && !(await this.hasSparseCopy(digest))) return undefined;
    return this.layer(repo, digest);
  }

  /** Closes the sparse copies (they stay on disk for the next start). */
  async close(): Promise<void> {
    const layers = await Promise.all([...this.open.values()].map((e) => e.layer.catch(() => undefined)));
    this.open.clear();
    await Promise.all(layers.map((l) => l?.sparse.close()));
  }

  /** After the whole blob was cached: the sparse copy and the record are no longer needed. */
  async forget(digest: Digest): Promise<void> {
    await rm(recordPath(this.opts.dir, digest), { force: true }).catch(() => undefined);
    await this.discard(digest);
  }

  /**
   * Drops the sparse copy (once nobody reads it): for the budget, or after it failed to add up to
   * the layer digest, which only bytes no chunk digest covers can make it do.
   */
  async discard(digest: Digest): Promise<void> {
    const entry = this.open.get(digest.value);
    const layer = await entry?.layer.catch(() => undefined);
    // aside before it leaves the map: a copy opened after this gets fresh files, which the
    // deferred removal of this one (once its readers are done) cannot touch
    await layer?.sparse.moveAside();
    if (this.open.get(digest.value) === entry) this.open.delete(digest.value);
    this.budget.drop(digest.value);
    this.memory.remove(digest.value);
    await layer?.end('remove');
  }

  /** The claim of `who` about the layer: from a manifest it served, else from the record of a copy verified under its claim. */
  private async claimOf(who: string, digest: Digest): Promise<LayerClaim | undefined> {
    const claim = this.claims.get(`${who}\n${digest.value}`) ?? (await this.recordedClaim(who, digest)) ?? (await this.sharedClaim(who, digest));
    return claim && !this.refuted.has(claimId(who, digest, claim)) ? claim : undefined;
  }

  /** A claim another replica of the fleet learned from a manifest this one never served. */
  private async sharedClaim(who: string, digest: Digest): Promise<LayerClaim | undefined> {
    const claim = await this.opts.shared?.get(who, digest.value);
    if (claim && this.formats.has(claim.format)) {
      this.claims.set(`${who}\n${digest.value}`, claim);
      return claim;
    }
    return undefined;
  }

  private async recordedClaim(who: string, digest: Digest): Promise<LayerClaim | undefined> {
    const entry = this.open.get(digest.value);
    if (entry?.claimants.has(who)) return entry.claim;
    const record = await this.readRecord(digest);
    return record?.claimants.includes(who) ? claimOfRecord(record, this.opts.formats?.[0]?.name) : undefined;
  }

  private startOpen(repo: Repository, digest: Digest, claim: LayerClaim): OpenLayer {
    const entry: OpenLayer = { claim, layer: undefined as unknown as Promise<Layer>, claimants: new Set([repo.key]) };
    entry.layer = this.openLayer(repo, digest, entry);
    this.open.set(digest.value, entry);
    entry.layer.catch((e: unknown) => {
      if (this.open.get(digest.value) === entry) {
        this.open.delete(digest.value);
        this.memory.remove(digest.value);
      }
      const where = { ...repo.where, digest: digest.value, format: claim.format, index: claim.index, size: claim.size, err: (e as Error).message };
      if (refutesClaim(e)) {
        this.refuted.set(claimId(repo.key, digest, claim), true);
        this.claims.delete(`${repo.key}\n${digest.value}`);
        this.opts.log.warn(where, 'lazy claim of a manifest does not hold; serving the layer plainly');
      } else {
        this.opts.log.warn(where, 'lazy layer could not be opened now; serving it plainly');
      }
    });
    return entry;
  }

  private async openLayer(repo: Repository, digest: Digest, entry: OpenLayer): Promise<Layer> {
    await this.ready;
    await this.pruning.peek(digest.value);
    const [record, copy] = await Promise.all([this.readRecord(digest), this.hasSparseCopy(digest)]);
    const recorded = record && claimOfRecord(record, this.opts.formats?.[0]?.name);
    if (copy && recorded && !sameClaim(recorded, entry.claim)) throw new ClaimRefuted('the sparse copy of this layer was verified under another claim (index or size)');
    if (copy && !record) await this.dropCopy(digest); // a copy that no record vouches for (only a crash leaves one)
    if (record && recorded && sameClaim(recorded, entry.claim)) for (const c of record.claimants) entry.claimants.add(c);
    const format = this.formats.get(entry.claim.format);
    if (!format) throw new ClaimRefuted(`no lazy format ${entry.claim.format}`);
    const fetch = this.counted(upstreamSpans(repo, digest, entry.claim.size));
    await this.turn();
    let pinned = false;
    try {
      if (this.pinnedBytes() >= this.maxIndexBytes) throw new MemoryFull('the indexes of the layers in use fill estargz.maxIndexMemory'); // before parsing a TOC for nothing
      const layer = await Layer.open(fetch, format, digest, entry.claim, {
        dir: this.opts.dir,
        maxIndexBytes: this.opts.maxTocBytes ?? DEFAULT_MAX_TOC_BYTES,
        verified: async (index) => {
          this.reserve(digest.value, index);
          pinned = true;
          // recorded before any byte is kept: no copy without the claim it was verified under
          await this.persist(digest, entry);
        },
      }, (l) => this.used(l));
      if (this.opts.prefetch) layer.prefetch(fetch, this.opts.log);
      return layer;
    } finally {
      if (pinned) this.memory.unpin(digest.value);
      this.endTurn();
    }
  }

  /** Counts a verified index against estargz.maxIndexMemory (pinned until the open ends), giving up unused others. */
  private reserve(digest: string, index: LazyIndex): void {
    const bytes = index.indexBytes * INDEX_BYTES_PER_TOC_BYTE;
    if (bytes > this.maxIndexBytes) throw new ClaimRefuted(`its index would take about ${bytes} bytes of memory, more than estargz.maxIndexMemory`);
    this.memory.pin(digest);
    this.memory.add(digest, bytes);
    if (this.memory.bytes > this.maxIndexBytes) {
      this.memory.remove(digest);
      this.memory.unpin(digest);
      throw new MemoryFull('the indexes of the layers in use fill estargz.maxIndexMemory');
    }
  }

  /** The estimated memory of the indexes requests hold now (none of them can be given up). */
  private pinnedBytes(): number {
    let n = 0;
    for (const digest of this.memory.keys()) if (this.memory.isPinned(digest)) n += this.memory.sizeOf(digest) ?? 0;
    return n;
  }

  /** `fetch`, its bytes counted as fetched. */
  private counted(fetch: FetchSpan): FetchSpan {
    return async (span, signal) => {
      const bytes = await fetch(span, signal);
      this.fetchedBytes += bytes.length;
      return bytes;
    };
  }

  /** Pins a layer's index while a request holds it; returns the unpin. */
  private pin(digest: string): () => void {
    this.memory.pin(digest);
    return () => this.memory.unpin(digest);
  }

  /** Given up for memory (unused): its sparse copy stays on disk, and the next read opens it again from there. */
  private unload(digest: string): void {
    const entry = this.open.get(digest);
    if (!entry) return;
    this.open.delete(digest);
    void entry.layer.then((l) => l.end('close'), () => undefined);
  }

  /** One of OPENS_AT_ONCE turns to read and parse an index (a hand-rolled semaphore: p-limit is not a dependency). */
  private async turn(): Promise<void> {
    if (this.opening >= OPENS_AT_ONCE) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.opening++;
  }

  private endTurn(): void {
    this.opening--;
    this.waiting.shift()?.();
  }

  /** Another upstream or repository whose claim is this layer's: it joins the record. */
  private join(entry: OpenLayer, layer: Layer, who: string): void {
    if (entry.claimants.has(who)) return;
    entry.claimants.add(who);
    this.persist(layer.digest, entry).catch((e: Error) => this.opts.log.warn({ digest: layer.digest.value, err: e.message }, 'could not record a lazy layer'));
  }

  /** Notes a read of a layer's sparse copy, and gives up the least recently used others beyond the budget. */
  private used(layer: Layer): void {
    this.memory.touch(layer.digest.value);
    this.budget.note(layer.digest.value, layer.sparse.cachedBytes);
    for (const victim of this.budget.over(layer.digest.value)) {
      const digest = tryParseDigest(victim)!;
      this.budget.drop(victim);
      if (this.open.has(victim)) {
        void this.discard(digest);
        continue;
      }
      void this.pruning.run(victim, () => removeSparse(this.opts.dir, digest).catch((e: Error) => this.opts.log.warn({ digest: victim, err: e.message }, 'could not remove a sparse copy')));
    }
  }

  private async dropCopy(digest: Digest): Promise<void> {
    this.budget.drop(digest.value);
    await removeSparse(this.opts.dir, digest);
  }

  private async readRecord(digest: Digest): Promise<LayerRecord | undefined> {
    const saved = await readFile(recordPath(this.opts.dir, digest), 'utf8')
      .then((t) => JSON.parse(t) as Partial<LayerRecord> | null)
      .catch(() => undefined); // none (not lazy, or never opened), or unreadable: not known
    if (typeof saved?.tocDigest !== 'string' || !tryParseDigest(saved.tocDigest) || !Number.isSafeInteger(saved.size)) return undefined;
    const claimants = Array.isArray(saved.claimants) ? saved.claimants.filter((c): c is string => typeof c === 'string') : [];
    return { ...(typeof saved.format === 'string' ? { format: saved.format } : {}), tocDigest: saved.tocDigest, size: saved.size as number, claimants };
  }

  /**
   * At start: removes the copies an earlier run moved aside (SparseBlob.moveAside) but ended
   * before removing, and notes the size of every copy for the budget, in the order of their last
   * use (mtime).
   */
  private async scan(): Promise<void> {
    const entries = await readdir(this.opts.dir, { recursive: true, withFileTypes: true }).catch(() => []);
    const copies: { digest: string; bytes: number; mtime: number }[] = [];
    for (const e of entries) {
      if (!e.isFile()) continue;
      const path = join(e.parentPath, e.name);
      if (e.name.includes('.retired-')) {
        await rm(path, { force: true }).catch(() => undefined);
        continue;
      }
      const hex = /^([a-f0-9]+)\.ranges$/.exec(e.name)?.[1];
      const digest = hex && tryParseDigest(`${basename(e.parentPath)}:${hex}`);
      if (!digest) continue;
      const [bytes, mtime] = await Promise.all([sparseBytes(this.opts.dir, digest), stat(path).then((s) => s.mtimeMs, () => 0)]);
      copies.push({ digest: digest.value, bytes, mtime });
    }
    for (const c of copies.sort((a, b) => a.mtime - b.mtime)) this.budget.note(c.digest, c.bytes);
  }

  private hasSparseCopy(digest: Digest): Promise<boolean> {
    return access(join(this.opts.dir, digest.algorithm, `${digest.hex}.ranges`)).then(() => true, () => false);
  }

  private async persist(digest: Digest, entry: OpenLayer): Promise<void> {
    const { format, index, size } = entry.claim;
    const record: LayerRecord = { format, tocDigest: index, size, claimants: [...entry.claimants].slice(-MAX_CLAIMANTS) };
    const path = recordPath(this.opts.dir, digest);
    await makeDir(join(this.opts.dir, digest.algorithm));
    await replaceFile(`${path}.${randomUUID()}.tmp`, path, JSON.stringify(record));
  }
}

function recordPath(dir: string, digest: Digest): string {
  return join(dir, digest.algorithm, `${digest.hex}.layer`);
}

/** The claim a record holds; `first` names the format of records written before formats had names. */
function claimOfRecord(record: LayerRecord, first: string | undefined): LayerClaim | undefined {
  const format = record.format ?? first;
  return format === undefined ? undefined : { format, index: record.tocDigest, size: record.size };
}
