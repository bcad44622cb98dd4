// Single files out of layers and images, without pulling them. For a layer whose index names its
// files (a LazyFormat's files facet: eStargz) only that file's units are fetched (through the lazy
// layer's sparse copy, verified against the index); a plain tar+gzip layer is fetched whole
// (verified, and cached for next time) and scanned. For an image, layers are searched from the
// top down, honouring whiteouts and opaque directories.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { BlobStore } from '../cache/blob-store.js';
import { cleanPath, whiteoutOf, type Whiteout } from '../estargz/index.js';
import { FormatRefusal, type FileIndex, type LazyFormat, type LazyIndex, type RangeSource } from '../lazy/format.js';
import { ByteReader, maybeGunzip, tarEntries, TarError, TarPathsBuilder, type RawTarEntry, type TarPathInfo } from '../tar/index.js';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import type { Descriptor } from '../oci/manifest.js';
import { MANIFEST_TYPES } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { Repository } from '../upstreams/repository.js';
import type { BlobCache } from './blob-cache.js';
import type { ManifestCache } from './manifest-cache.js';
import { SingleFlight } from '../lib/single-flight.js';

export interface LayerFile {
  layer: string;
  path: string;
  size: number;
  mode: number;
  digest: string;
  body: Readable;
}

/** What a layer says about one path: it has it, or a whiteout in it hides the path from lower layers. */
interface Probe {
  has: boolean;
  hides: boolean;
}

/** What a layer holds, for lookups; `bytes` estimates the memory it holds while cached. */
interface Listing {
  bytes: number;
  probe(path: string): Promise<Probe>;
  open(path: string): Promise<Omit<LayerFile, 'layer'>>;
}

/**
 * Listings are cached up to this many bytes in total (estimated: see tar/paths.ts,
 * WHITEOUT_BYTES and TOC_INDEX_FACTOR), least recently used out first.
 */
export const LISTINGS_MAX_BYTES = 128 << 20;
/** A listing beyond this is never cached: a plain layer is then scanned again for every lookup. */
export const LISTING_MAX_BYTES = 32 << 20;
/** Heap per whiteout beyond its characters (a Set entry and its string, measured ~160 bytes on Node 20). */
const WHITEOUT_BYTES = 160;
/** An index holds about 1.2 times its size on the heap, plus itself (measured on eStargz TOC JSON). */
const TOC_INDEX_FACTOR = 2.5;

export class LayerFiles {
  private readonly listings = new LRUCache<string, Listing>({ maxSize: LISTINGS_MAX_BYTES, sizeCalculation: (l) => Math.max(1, Math.ceil(l.bytes)) });
  private readonly building = new SingleFlight<Listing>();

  constructor(
    /** `formats`: the lazy formats whose indexes can list a layer's files, tried in this order */
    private readonly deps: { store: BlobStore; blobs: BlobCache; manifests: ManifestCache; formats: readonly LazyFormat[] },
  ) {}

  /** The index of a layer as its format's document (eStargz: the TOC JSON), verified. */
  async toc(repo: Repository, digest: Digest): Promise<Buffer> {
    const doc = (await this.layerIndex(repo, digest)).document;
    if (!doc) throw new RegistryError('BLOB_UNKNOWN', { message: 'the index of this layer is no document', detail: { digest: digest.value } });
    return doc;
  }

  async layerFile(repo: Repository, digest: Digest, rawPath: string): Promise<LayerFile> {
    const path = safePath(rawPath);
    const listing = await this.listing(repo, digest);
    if (!(await listing.probe(path)).has) throw noSuchFile(path, digest.value);
    return { layer: digest.value, ...(await listing.open(path)) };
  }

  /** A file as the image's root filesystem has it: the topmost layer wins, whiteouts hide. */
  async imageFile(repo: Repository, ref: Reference, rawPath: string, platform: string): Promise<LayerFile> {
    const path = safePath(rawPath);
    const layers = await this.layersOf(repo, ref, platform);
    for (const layer of [...layers].reverse()) {
      const listing = await this.listing(repo, layer);
      const { has, hides } = await listing.probe(path);
      if (has) return { layer: layer.value, ...(await listing.open(path)) };
      if (hides) break;
    }
    throw noSuchFile(path, referenceText(ref));
  }

  private async layersOf(repo: Repository, ref: Reference, platform: string): Promise<Digest[]> {
    let { manifest } = await this.deps.manifests.get(repo, ref, MANIFEST_TYPES);
    if (manifest.manifests) {
      const images = manifest.manifests;
      const digests = fetchableDigests(images, 'manifests');
      const [os, arch, variant] = platform.split('/');
      const pick = images.findIndex((d) => d.platform?.os === os && d.platform?.architecture === arch && (!variant || d.platform?.variant === variant));
      if (pick < 0) throw new RegistryError('MANIFEST_UNKNOWN', { message: `no ${platform} image in the index`, detail: { platform } });
      ({ manifest } = await this.deps.manifests.get(repo, { kind: 'digest', digest: digests[pick]! }, MANIFEST_TYPES));
    }
    return fetchableDigests(manifest.layers ?? [], 'layers');
  }

  /** The listing of a layer as seen through one upstream and repository (what one learned never answers for another). */
  private async listing(repo: Repository, digest: Digest): Promise<Listing> {
    const key = `${repo.key}\n${digest.value}`;
    const hit = this.listings.get(key);
    if (hit) return hit;
    return this.building.run(key, async () => {
      const l = await this.buildListing(repo, digest);
      if (l.bytes <= LISTING_MAX_BYTES) this.listings.set(key, l);
      return l;
    });
  }

  /** Layers whose index names their files are listed from it; plain layers, and layers whose index cannot be used, from their tar. */
  private async buildListing(repo: Repository, digest: Digest): Promise<Listing> {
    // an index too large to list in memory is listed from the tar, which can be scanned instead
    const index = await this.layerIndex(repo, digest, LISTING_MAX_BYTES / TOC_INDEX_FACTOR).catch((e: unknown) => {
      if (e instanceof FormatRefusal) return undefined; // the blob itself is verified: its tar is the truth
      throw e;
    });
    return index?.files ? indexListing(index, index.files, () => this.currentSource(repo, digest)) : tarListing(this.deps.store, digest);
  }

  /**
   * The verified index of a layer: the lazy layer's, else of the first format that opens the
   * cached blob; FormatRefusal (eStargz: 'not-estargz' for a plain layer) when none does.
   */
  private async layerIndex(repo: Repository, digest: Digest, maxIndexBytes?: number): Promise<LazyIndex> {
    const lazy = await this.deps.blobs.lazyLayer(repo, digest);
    if (lazy) return lazy.index;
    const source = await this.cachedSource(repo, digest);
    let refusal = new FormatRefusal('', 'no lazy format reads this layer', { digest: digest.value });
    for (const format of this.deps.formats) {
      try {
        return await format.open(source, { maxIndexBytes });
      } catch (e) {
        if (!(e instanceof FormatRefusal)) throw e;
        refusal = e;
      }
    }
    throw refusal;
  }

  /**
   * Where a lazy layer's bytes come from now: the cache once it holds the blob, else the lazy
   * layer (the `prepare`d spans fetched and verified into its sparse copy, which stays open until
   * `release`), else the whole layer, fetched into the cache.
   */
  private async currentSource(repo: Repository, digest: Digest): Promise<LayerSource> {
    const lazy = await this.deps.blobs.lazyLayer(repo, digest);
    if (!lazy) return this.cachedSource(repo, digest);
    const release = lazy.hold();
    const prepare = async (start: number, end: number) => {
      try {
        await lazy.ensure(start, end);
      } catch (e) {
        release();
        throw e;
      }
    };
    return { ...lazy.source(), prepare, release };
  }

  /** The whole layer, fetched and verified if need be, as a RangeSource over the cache. */
  private async cachedSource(repo: Repository, digest: Digest): Promise<RangeSource> {
    let info = await this.deps.store.stat(digest);
    if (!info) {
      const whole = await this.deps.blobs.get(repo, digest, undefined);
      for await (const chunk of whole.body) void chunk; // a verified fill: the blob is cached once this ends
      info = await this.deps.store.stat(digest);
      if (!info) throw new RegistryError('UNAVAILABLE', { message: 'the layer could not be kept in the cache', detail: { digest: digest.value } });
    }
    const store = this.deps.store;
    return {
      size: info.size,
      async read(offset, length) {
        const r = await store.open(digest, { start: offset, end: offset + length });
        if (!r) throw new RegistryError('BLOB_UNKNOWN', { message: 'layer left the cache while being read', detail: { digest: digest.value } });
        return Buffer.concat(await r.stream.toArray());
      },
    };
  }
}

/** A RangeSource for one file's read, with what the read must do first and last (lazy layers). */
interface LayerSource extends RangeSource {
  prepare?(start: number, end: number): Promise<void>;
  release?(): void;
}

function whiteoutHides(w: Whiteout, path: string): boolean {
  if (w.kind === 'opaque') return w.dir === '' || path.startsWith(`${w.dir}/`);
  return path === w.target || path.startsWith(`${w.target}/`);
}

/** Whiteouts of one layer, and whether they hide a path. */
class Whiteouts {
  readonly files = new Set<string>();
  readonly opaqueDirs = new Set<string>();
  bytes = 0;

  /** Records `path` if it is a whiteout; true when it was one. */
  add(path: string): boolean {
    const w = whiteoutOf(path);
    if (w?.kind === 'file') this.files.add(w.target);
    else if (w?.kind === 'opaque') this.opaqueDirs.add(w.dir);
    else return false;
    this.bytes += WHITEOUT_BYTES + 2 * path.length;
    return true;
  }

  hides(path: string): boolean {
    const ancestors = ancestorsOf(path);
    return this.files.has(path) || ancestors.some((a) => this.files.has(a)) || [...ancestors, ''].some((a) => this.opaqueDirs.has(a));
  }
}

function indexListing(index: LazyIndex, files: FileIndex, current: () => Promise<LayerSource>): Listing {
  const whiteouts = new Whiteouts();
  for (const path of files.paths()) whiteouts.add(path);
  return {
    bytes: index.indexBytes * TOC_INDEX_FACTOR + whiteouts.bytes,
    probe: async (path) => ({ has: files.has(path) && !whiteoutOf(path), hides: whiteouts.hides(path) }),
    async open(path) {
      const file = files.file(path); // a piece too large or without a digest is an error response, not a cut-off 200
      if (!file) throw notRegular(path);
      const src = await current();
      // every unit is fetched and verified before the headers go out, so a bad one is an error response, not a cut-off 200
      for (const g of file.spans) await src.prepare?.(g.start, g.end);
      // streamed: each slice is read when the client is ready for it, and handed on only once verified
      const body = Readable.from(file.read(src));
      if (src.release) body.once('close', src.release);
      return { path, size: file.size, mode: file.mode, digest: file.digest ?? '', body };
    },
  };
}

const HARDLINK = '1'.charCodeAt(0);
const REGULAR = new Set(['0', '\0', ''].map((t) => t.charCodeAt(0) || 0));

function infoOf(e: RawTarEntry): TarPathInfo {
  const type = e.header.typeflag.charCodeAt(0) || 0;
  return { ordinal: e.ordinal, type, mode: e.header.mode, link: type === HARDLINK ? cleanPath(e.header.linkName, 'hardlink target') : undefined };
}

/**
 * One pass over a cached plain layer collects its paths (compactly, see tar/paths.ts) and
 * whiteouts. Beyond LISTING_MAX_BYTES the pass stops and the layer is listed by scanning it again
 * for every lookup instead.
 */
async function tarListing(store: BlobStore, digest: Digest): Promise<Listing> {
  const paths = new TarPathsBuilder();
  const whiteouts = new Whiteouts();
  try {
    for await (const e of scan(store, digest)) {
      const path = cleanPath(e.header.name);
      if (whiteouts.add(path)) continue;
      paths.add(path, infoOf(e));
      if (paths.bytes + whiteouts.bytes > LISTING_MAX_BYTES) return scanningTarListing(store, digest);
    }
  } catch (e) {
    // the blob hashed to its digest, so the upstream did not lie: what was asked for is no tar layer
    if (e instanceof TarError && e.kind === 'corrupt') throw notALayer(digest, e.message);
    throw e;
  }
  const bytes = paths.bytes + whiteouts.bytes;
  const list = paths.build();
  return {
    bytes,
    probe: async (path) => ({ has: list.has(path), hides: whiteouts.hides(path) }),
    open: (path) => openTarFile(store, digest, path, async (p) => list.get(p)),
  };
}

/** A plain layer too large to list in memory: every lookup is a pass over its tar. */
function scanningTarListing(store: BlobStore, digest: Digest): Listing {
  const find = async (path: string): Promise<TarPathInfo | undefined> => {
    let found: TarPathInfo | undefined;
    for await (const e of scan(store, digest)) if (cleanPath(e.header.name) === path) found = infoOf(e);
    return found;
  };
  return {
    bytes: 0,
    async probe(path) {
      let has = false;
      let hides = false;
      for await (const e of scan(store, digest)) {
        const p = cleanPath(e.header.name);
        const w = whiteoutOf(p);
        if (w) hides ||= whiteoutHides(w, path);
        else if (p === path) has = true;
      }
      return { has, hides };
    },
    open: (path) => openTarFile(store, digest, path, find),
  };
}

async function openTarFile(store: BlobStore, digest: Digest, path: string, find: (path: string) => Promise<TarPathInfo | undefined>): Promise<Omit<LayerFile, 'layer'>> {
  const meta = await find(path);
  const found = meta?.link !== undefined ? await find(meta.link) : meta; // hardlink: the content is at its target
  if (!meta || !found || !REGULAR.has(found.type)) throw notRegular(path);
  // first pass hashes the content (local reads), so the digest can go in the headers
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of contentOf(store, digest, found.ordinal)) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { path, size, mode: meta.mode, digest: `sha256:${hash.digest('hex')}`, body: Readable.from(contentOf(store, digest, found.ordinal)) };
}

async function* scan(store: BlobStore, digest: Digest) {
  const r = await store.open(digest);
  if (!r) throw new RegistryError('BLOB_UNKNOWN', { message: 'layer left the cache while being read', detail: { digest: digest.value } });
  try {
    yield* tarEntries(new ByteReader(maybeGunzip(r.stream)));
  } finally {
    r.stream.destroy(); // a caller that stops early must not leave the descriptor (and the eviction pin) behind
  }
}

async function* contentOf(store: BlobStore, digest: Digest, ordinal: number): AsyncGenerator<Buffer> {
  for await (const e of scan(store, digest)) {
    if (e.ordinal !== ordinal) continue;
    for (let b = await e.readBody(1 << 20); b; b = await e.readBody(1 << 20)) yield b;
    return;
  }
}

/**
 * The digests of a manifest's descriptors, each one this proxy can fetch by (the manifest model
 * admits any algorithm of the OCI grammar); one it cannot is the upstream's fault (502).
 */
function fetchableDigests(descriptors: readonly Descriptor[], list: 'manifests' | 'layers'): Digest[] {
  return descriptors.map((d) => {
    const digest = tryParseDigest(d.digest);
    if (!digest) throw new RegistryError('MANIFEST_INVALID', { status: 502, message: `upstream manifest is not usable: ${list} holds an entry without a valid digest` });
    return digest;
  });
}

/** A path inside a layer: relative, no "..", no NUL; percent-escapes decoded. */
function safePath(raw: string): string {
  let decoded: string;
  try {
    decoded = raw.split('/').map(decodeURIComponent).join('/');
  } catch {
    throw badPath(raw);
  }
  if (decoded.includes('\0') || decoded.split('/').includes('..')) throw badPath(raw);
  const clean = decoded.split('/').filter((s) => s !== '' && s !== '.').join('/');
  if (!clean) throw badPath(raw);
  return clean;
}

function ancestorsOf(path: string): string[] {
  const parts = path.split('/');
  return parts.slice(0, -1).map((_, i) => parts.slice(0, i + 1).join('/'));
}

function referenceText(ref: Reference): string {
  return ref.kind === 'tag' ? ref.tag : ref.digest.value;
}

function badPath(raw: string): RegistryError {
  return new RegistryError('NAME_INVALID', { message: 'invalid file path', detail: { path: raw.slice(0, 300) } });
}

function noSuchFile(path: string, where: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', { message: 'no such file', detail: { path, in: where } });
}

function notALayer(digest: Digest, why: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', { message: 'this blob is not a layer (no tar archive in it)', detail: { digest: digest.value, reason: why.slice(0, 200) } });
}

function notRegular(path: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', { message: 'not a regular file', detail: { path } });
}
