// Single files out of layers and images, without pulling them. For an eStargz layer only that
// file's chunks are fetched (through the lazy layer's sparse copy, verified against the TOC); a
// plain tar+gzip layer is fetched whole (verified, and cached for next time) and scanned. For an
// image, layers are searched from the top down, honouring whiteouts and opaque directories.
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { BlobStore } from '../cache/blob-store.js';
import { cleanPath, EstargzError, fileChunks, mergeChunkRanges, openEstargz, whiteoutOf, type EstargzIndex, type RangeSource } from '../estargz/index.js';
import { ByteReader, maybeGunzip, tarEntries } from '../estargz/tar-stream.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { MANIFEST_TYPES } from '../oci/media-types.js';
import type { Reference } from '../oci/reference.js';
import type { Upstream } from '../upstreams/upstream.js';
import type { BlobCache } from './blob-cache.js';
import type { ManifestCache } from './manifest-cache.js';

export interface LayerFile {
  layer: string;
  path: string;
  size: number;
  mode: number;
  digest: string;
  body: Readable;
}

/** What a layer holds at the paths that matter for lookups: entries and whiteouts. */
interface Listing {
  kind: 'estargz' | 'tar';
  has(path: string): boolean;
  whiteouts: { files: Set<string>; opaqueDirs: Set<string> };
  open(path: string): Promise<Omit<LayerFile, 'layer'>>;
}

export class LayerFiles {
  private readonly listings = new LRUCache<string, Promise<Listing>>({ max: 256 });

  constructor(
    private readonly deps: { store: BlobStore; blobs: BlobCache; manifests: ManifestCache },
  ) {}

  /** The TOC of an eStargz layer, as JSON bytes (verified). */
  async toc(up: Upstream, repo: string, digest: Digest): Promise<Buffer> {
    const index = await this.estargzIndex(up, repo, digest);
    if (!index) throw new RegistryError('BLOB_UNKNOWN', { message: 'layer is not eStargz', detail: { digest: digest.value } });
    return index.tocJson;
  }

  async layerFile(up: Upstream, repo: string, digest: Digest, rawPath: string): Promise<LayerFile> {
    const path = safePath(rawPath);
    const listing = await this.listing(up, repo, digest);
    if (!listing.has(path)) throw noSuchFile(path, digest.value);
    return { layer: digest.value, ...(await listing.open(path)) };
  }

  /** A file as the image's root filesystem has it: the topmost layer wins, whiteouts hide. */
  async imageFile(up: Upstream, repo: string, ref: Reference, rawPath: string, platform: string): Promise<LayerFile> {
    const path = safePath(rawPath);
    const layers = await this.layersOf(up, repo, ref, platform);
    const ancestors = ancestorsOf(path);
    for (const layer of [...layers].reverse()) {
      const listing = await this.listing(up, repo, layer);
      if (listing.has(path)) return { layer: layer.value, ...(await listing.open(path)) };
      const { files, opaqueDirs } = listing.whiteouts;
      if (files.has(path) || ancestors.some((a) => files.has(a))) break;
      if ([...ancestors, ''].some((a) => opaqueDirs.has(a))) break;
    }
    throw noSuchFile(path, referenceText(ref));
  }

  private async layersOf(up: Upstream, repo: string, ref: Reference, platform: string): Promise<Digest[]> {
    let m = await this.deps.manifests.get(up, repo, ref, MANIFEST_TYPES);
    let doc = JSON.parse(m.body.toString('utf8')) as ManifestJson;
    if (Array.isArray(doc.manifests)) {
      const [os, arch, variant] = platform.split('/');
      const pick = doc.manifests.find((d) => d.platform?.os === os && d.platform?.architecture === arch && (!variant || d.platform?.variant === variant));
      if (!pick) throw new RegistryError('MANIFEST_UNKNOWN', { message: `no ${platform} image in the index`, detail: { platform } });
      m = await this.deps.manifests.get(up, repo, { kind: 'digest', digest: parseDigest(pick.digest) }, MANIFEST_TYPES);
      doc = JSON.parse(m.body.toString('utf8')) as ManifestJson;
    }
    return (doc.layers ?? []).map((l) => parseDigest(l.digest));
  }

  private listing(up: Upstream, repo: string, digest: Digest): Promise<Listing> {
    let l = this.listings.get(digest.value);
    if (!l) {
      l = this.buildListing(up, repo, digest);
      this.listings.set(digest.value, l);
      l.catch(() => this.listings.delete(digest.value));
    }
    return l;
  }

  private async buildListing(up: Upstream, repo: string, digest: Digest): Promise<Listing> {
    const index = await this.estargzIndex(up, repo, digest, ['not-estargz', 'external-toc', 'unverifiable']);
    return index ? estargzListing(index, () => this.currentSource(up, repo, digest)) : tarListing(this.deps.store, digest);
  }

  /** The verified index of an eStargz layer; undefined when opening it failed with one of `plainKinds` (all, by default). */
  private async estargzIndex(up: Upstream, repo: string, digest: Digest, plainKinds?: readonly string[]): Promise<EstargzIndex | undefined> {
    const lazy = await this.deps.blobs.lazyLayer(up, repo, digest);
    if (lazy) return lazy.index;
    return openEstargz(await this.cachedSource(up, repo, digest)).catch((e: unknown) => {
      if (e instanceof EstargzError && (!plainKinds || plainKinds.includes(e.kind))) return undefined;
      throw e;
    });
  }

  /**
   * Where an eStargz layer's bytes come from now: the cache once it holds the blob, else the lazy
   * layer (the `prepare`d spans fetched and verified into its sparse copy, which stays open until
   * `release`), else the whole layer, fetched into the cache.
   */
  private async currentSource(up: Upstream, repo: string, digest: Digest): Promise<LayerSource> {
    const lazy = await this.deps.blobs.lazyLayer(up, repo, digest);
    if (!lazy) return this.cachedSource(up, repo, digest);
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
  private async cachedSource(up: Upstream, repo: string, digest: Digest): Promise<RangeSource> {
    let info = await this.deps.store.stat(digest);
    if (!info) {
      const whole = await this.deps.blobs.get(up, repo, digest, undefined);
      for await (const chunk of whole.body) void chunk; // a verified fill: the blob is cached once this ends
      info = await this.deps.store.stat(digest);
      if (!info) throw new RegistryError('UNAVAILABLE', { message: 'the layer could not be kept in the cache', detail: { digest: digest.value } });
    }
    const store = this.deps.store;
    return {
      size: info.size,
      async read(offset, length) {
        const r = await store.open(digest, { start: offset, end: offset + length - 1 });
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

function estargzListing(index: EstargzIndex, current: () => Promise<LayerSource>): Listing {
  const files = new Set<string>();
  const opaqueDirs = new Set<string>();
  for (const e of index.entries) {
    if (e.whiteout?.kind === 'file') files.add(e.whiteout.target);
    else if (e.whiteout?.kind === 'opaque') opaqueDirs.add(e.whiteout.dir);
  }
  return {
    kind: 'estargz',
    has: (path) => index.lookup(path) !== undefined && !whiteoutOf(path),
    whiteouts: { files, opaqueDirs },
    async open(path) {
      const entry = index.resolve(path);
      if (!entry || entry.type !== 'reg') throw notRegular(path);
      const src = await current();
      // every chunk is fetched and verified before the headers go out, so a bad one is an error response, not a cut-off 200
      for (const g of mergeChunkRanges(entry.chunks)) await src.prepare?.(g.start, g.end);
      const chunks = fileChunks(index, src, entry.path);
      const body = Readable.from((async function* () {
        for await (const { data } of chunks) yield data;
      })());
      if (src.release) body.once('close', src.release);
      return { path, size: entry.size, mode: entry.mode, digest: entry.digest ?? '', body };
    },
  };
}

/** One pass over a cached plain layer collects its paths and whiteouts. */
async function tarListing(store: BlobStore, digest: Digest): Promise<Listing> {
  const paths = new Map<string, { type: string; linkName: string; mode: number }>();
  const files = new Set<string>();
  const opaqueDirs = new Set<string>();
  for await (const e of scan(store, digest)) {
    const path = cleanPath(e.header.name);
    const w = whiteoutOf(path);
    if (w?.kind === 'file') files.add(w.target);
    else if (w?.kind === 'opaque') opaqueDirs.add(w.dir);
    else paths.set(path, { type: e.header.typeflag, linkName: e.header.linkName, mode: e.header.mode });
  }
  return {
    kind: 'tar',
    has: (path) => paths.has(path),
    whiteouts: { files, opaqueDirs },
    async open(path) {
      let target = path;
      const meta = paths.get(path);
      if (meta?.type === '1') target = cleanPath(meta.linkName); // hardlink: the content is at its target
      const found = paths.get(target);
      if (!found || !(found.type === '0' || found.type === '\0' || found.type === '')) throw notRegular(path);
      // first pass hashes the content (local reads), so the digest can go in the headers
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of contentOf(store, digest, target)) {
        hash.update(chunk);
        size += chunk.length;
      }
      return { path, size, mode: meta?.mode ?? found.mode, digest: `sha256:${hash.digest('hex')}`, body: Readable.from(contentOf(store, digest, target)) };
    },
  };
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

async function* contentOf(store: BlobStore, digest: Digest, path: string): AsyncGenerator<Buffer> {
  for await (const e of scan(store, digest)) {
    if (cleanPath(e.header.name) !== path) continue;
    for (let b = await e.readBody(1 << 20); b; b = await e.readBody(1 << 20)) yield b;
    return;
  }
}

interface ManifestJson {
  manifests?: { digest: string; platform?: { os?: string; architecture?: string; variant?: string } }[];
  layers?: { digest: string }[];
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

function notRegular(path: string): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', { message: 'not a regular file', detail: { path } });
}
