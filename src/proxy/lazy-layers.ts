// eStargz layers served lazily. Manifests that pass through tell us which layers are eStargz (the
// containerd.io/snapshot/stargz/toc.digest annotation); that is noted in memory and in a small
// record beside the sparse copy (<dir>/<alg>/<hex>.layer), so it survives restarts. A Range on such
// a layer, uncached, fetches only the compressed ranges that cover it, widened to whole chunks,
// verifies every chunk against the TOC, and keeps them in a sparse per-blob copy: no byte is
// fetched twice and no whole-layer fill starts. A full GET fills the rest from that copy plus the
// missing ranges; once the blob is cached whole, the layer is forgotten (copy and record removed).
import { access, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { basename, join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { removeSparse, sparseBytes } from '../cache/sparse-blob.js';
import { TOC_DIGEST_ANNOTATION } from '../estargz/index.js';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { Upstream } from '../upstreams/upstream.js';
import { Layer, type LayerInfo, type LazyLayer } from './lazy-layer.js';
import type { Logger } from './pull-through.js';
import { SparseBudget } from './sparse-budget.js';

export interface LazyLayersOptions {
  /** where sparse copies (and the records of which layers are eStargz) live */
  dir: string;
  log: Logger;
  /** fetch the range before a .prefetch.landmark on first touch */
  prefetch: boolean;
  /** after a ranged read, fill the rest of the layer in the background (it becomes an ordinary cached blob) */
  fillAfterRange?: boolean;
  /** the bytes all sparse copies may hold together (default: no bound) */
  maxBytes?: number;
}

export class LazyLayers {
  /** layer digest → what manifests said about it (also on disk, see recordPath) */
  private readonly known = new LRUCache<string, LayerInfo>({ max: 100_000 });
  private readonly open = new Map<string, Promise<Layer>>();
  private readonly budget: SparseBudget;
  /** copies not open here being removed for the budget: opening one waits for that */
  private readonly pruning = new Map<string, Promise<void>>();
  /** the start-up scan of the copies already on disk */
  private readonly ready: Promise<void>;

  constructor(private readonly opts: LazyLayersOptions) {
    this.budget = new SparseBudget(opts.maxBytes ?? Infinity);
    this.ready = this.scan();
  }

  get fillAfterRange(): boolean {
    return this.opts.fillAfterRange ?? false;
  }

  /** Records the eStargz layers a manifest lists (called for every manifest served). */
  learn(manifest: Buffer): void {
    let parsed: unknown;
    try {
      parsed = JSON.parse(manifest.toString('utf8'));
    } catch {
      return;
    }
    const layers = (parsed as { layers?: unknown }).layers;
    if (!Array.isArray(layers)) return;
    for (const l of layers as { digest?: unknown; size?: unknown; annotations?: Record<string, unknown> }[]) {
      const toc = l.annotations?.[TOC_DIGEST_ANNOTATION];
      const digest = typeof l.digest === 'string' ? tryParseDigest(l.digest) : undefined;
      if (!digest || typeof toc !== 'string' || !Number.isSafeInteger(l.size) || !tryParseDigest(toc)) continue;
      const info = { tocDigest: toc, size: l.size as number };
      const prev = this.known.get(digest.value);
      if (prev?.tocDigest === info.tocDigest && prev.size === info.size) continue;
      this.known.set(digest.value, info);
      this.persist(digest, info).catch((e: Error) => this.opts.log.warn({ digest: digest.value, err: e.message }, 'could not record an eStargz layer'));
    }
  }

  /** The lazy layer (opening its TOC on first use), or undefined when the layer is not known eStargz. */
  async layer(up: Upstream, repo: string, digest: Digest): Promise<LazyLayer | undefined> {
    let opening = this.open.get(digest.value);
    if (!opening) {
      const info = await this.info(digest);
      if (!info) return undefined;
      opening = this.open.get(digest.value); // another request may have opened it meanwhile
      if (!opening) {
        opening = this.openLayer(up, repo, digest, info);
        this.open.set(digest.value, opening);
        opening.catch(() => this.open.delete(digest.value));
      }
    }
    return opening;
  }

  private async openLayer(up: Upstream, repo: string, digest: Digest, info: LayerInfo): Promise<Layer> {
    await this.ready;
    await this.pruning.get(digest.value);
    return Layer.open(up, repo, digest, info, this.opts, (layer) => this.used(layer));
  }

  /** Notes a read of a layer's sparse copy, and gives up the least recently used others beyond the budget. */
  private used(layer: Layer): void {
    this.budget.note(layer.digest.value, layer.sparse.cachedBytes);
    for (const victim of this.budget.over(layer.digest.value)) {
      const digest = tryParseDigest(victim)!;
      this.budget.drop(victim);
      if (this.open.has(victim)) {
        void this.discard(digest);
        continue;
      }
      const removing = removeSparse(this.opts.dir, digest)
        .catch((e: Error) => this.opts.log.warn({ digest: victim, err: e.message }, 'could not remove a sparse copy'))
        .finally(() => this.pruning.delete(victim));
      this.pruning.set(victim, removing);
    }
  }

  /**
   * Started (touched) layers only, in this run or an earlier one whose sparse copy is still on
   * disk: for a full GET to fill from what is already here.
   */
  async started(up: Upstream, repo: string, digest: Digest): Promise<LazyLayer | undefined> {
    const opening = this.open.get(digest.value) ?? ((await this.hasSparseCopy(digest)) ? this.layer(up, repo, digest) : undefined);
    return opening?.catch(() => undefined);
  }

  /** Closes the sparse copies (they stay on disk for the next start). */
  async close(): Promise<void> {
    const layers = await Promise.all([...this.open.values()].map((p) => p.catch(() => undefined)));
    this.open.clear();
    await Promise.all(layers.map((l) => l?.sparse.close()));
  }

  /** After the whole blob was cached: the sparse copy and the record are no longer needed. */
  async forget(digest: Digest): Promise<void> {
    this.known.delete(digest.value);
    await rm(recordPath(this.opts.dir, digest), { force: true }).catch(() => undefined);
    await this.discard(digest);
  }

  /**
   * Drops the sparse copy (once nobody reads it): after it failed to add up to the layer digest,
   * which only its unverifiable bytes (the tar headers before the first chunk) can make it do.
   */
  async discard(digest: Digest): Promise<void> {
    const opening = this.open.get(digest.value);
    const layer = await opening?.catch(() => undefined);
    // aside before it leaves the map: a copy opened after this gets fresh files, which the
    // deferred removal of this one (once its readers are done) cannot touch
    await layer?.sparse.moveAside();
    if (this.open.get(digest.value) === opening) this.open.delete(digest.value);
    this.budget.drop(digest.value);
    await layer?.retire();
  }

  /** What a manifest said about the layer: from memory, else from its record on disk (an earlier run). */
  private async info(digest: Digest): Promise<LayerInfo | undefined> {
    const hit = this.known.get(digest.value);
    if (hit) return hit;
    const saved = await readFile(recordPath(this.opts.dir, digest), 'utf8')
      .then((t) => JSON.parse(t) as Partial<LayerInfo> | null)
      .catch(() => undefined); // none (not eStargz, or never seen), or unreadable: not known
    if (typeof saved?.tocDigest !== 'string' || !tryParseDigest(saved.tocDigest) || !Number.isSafeInteger(saved.size)) return undefined;
    const info = { tocDigest: saved.tocDigest, size: saved.size as number };
    this.known.set(digest.value, info);
    return info;
  }

  /**
   * At start: removes the copies an earlier run moved aside (SparseBlob.moveAside) but ended
   * before removing, and notes the size and last use (mtime) of every copy for the budget.
   */
  private async scan(): Promise<void> {
    const entries = await readdir(this.opts.dir, { recursive: true, withFileTypes: true }).catch(() => []);
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
      this.budget.note(digest.value, bytes, mtime);
    }
  }

  private hasSparseCopy(digest: Digest): Promise<boolean> {
    return access(join(this.opts.dir, digest.algorithm, `${digest.hex}.ranges`)).then(() => true, () => false);
  }

  private async persist(digest: Digest, info: LayerInfo): Promise<void> {
    const path = recordPath(this.opts.dir, digest);
    await mkdir(join(this.opts.dir, digest.algorithm), { recursive: true });
    const tmp = `${path}.${randomUUID()}.tmp`;
    await writeFile(tmp, JSON.stringify(info));
    await rename(tmp, path);
  }
}

function recordPath(dir: string, digest: Digest): string {
  return join(dir, digest.algorithm, `${digest.hex}.layer`);
}
