// Builds test images offline as OCI image layout directories, and pushes/pulls
// them with skopeo. Content is pseudo-random but deterministic from a seed, so
// digests are stable across runs.
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { tar } from './tar.js';
import { makeTempDir, removeDir, run } from './util.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** 'oci' uses OCI media types; 'docker' uses Docker schema 2 / manifest list types. */
export type ImageFormat = 'oci' | 'docker';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface BuiltImage {
  platform: Platform;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  /** sha256 of each uncompressed layer tar (config rootfs.diff_ids). */
  diffIds: string[];
}

export interface ImageLayout {
  /** OCI image layout directory (pass to pushLayout). */
  dir: string;
  format: ImageFormat;
  /** What index.json points at: the index/list for multi-platform, else the manifest. */
  top: Descriptor;
  /** The image index / manifest list, for multi-platform layouts. */
  index?: Descriptor;
  images: BuiltImage[];
  /** Every blob digest (index, manifests, configs, layers), sorted and unique. */
  allDigests: string[];
  /** Deletes the layout directory. */
  remove(): Promise<void>;
}

export const MEDIA = {
  oci: {
    index: 'application/vnd.oci.image.index.v1+json',
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
  docker: {
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
} as const;

export const LINUX_AMD64: Platform = { os: 'linux', architecture: 'amd64' };
export const LINUX_ARM64: Platform = { os: 'linux', architecture: 'arm64' };

const sha256 = (data: Buffer | string): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

/** Deterministic pseudo-random bytes: AES-256-CTR keystream keyed by the seed. */
export function seededBytes(seed: string, length: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(length)), cipher.final()]);
}

/** Writes blobs into <dir>/blobs/sha256 and returns their descriptors. */
class LayoutWriter {
  constructor(readonly dir: string) {}

  async blob(mediaType: string, data: Buffer): Promise<Descriptor> {
    const digest = sha256(data);
    await writeFile(join(this.dir, 'blobs', 'sha256', digest.slice('sha256:'.length)), data);
    return { mediaType, digest, size: data.length };
  }

  json(mediaType: string, value: unknown): Promise<Descriptor> {
    return this.blob(mediaType, Buffer.from(JSON.stringify(value)));
  }
}

interface ImageSpec {
  layers: number;
  /** Size of the random payload in each (uncompressed) layer. */
  layerBytes: number;
  seed?: string;
  format?: ImageFormat;
  /** Directory for the layout; a fresh temp dir if omitted. */
  dir?: string;
}

export interface MakeImageOptions extends ImageSpec {
  platform?: Platform;
}

export interface MakeIndexOptions extends ImageSpec {
  platforms?: Platform[];
}

async function buildImage(w: LayoutWriter, spec: ImageSpec, platform: Platform): Promise<BuiltImage> {
  const media = MEDIA[spec.format ?? 'oci'];
  const seed = `${spec.seed ?? 'pullthrough'}/${platform.os}/${platform.architecture}/${platform.variant ?? ''}`;
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < spec.layers; i++) {
    const layerTar = tar([
      { name: `layer${i}`, type: 'dir' },
      { name: `layer${i}/README`, content: `layer ${i} of ${seed}\n` },
      { name: `layer${i}/data.bin`, content: seededBytes(`${seed}/${i}`, spec.layerBytes) },
      { name: `layer${i}/run.sh`, content: '#!/bin/sh\nexit 0\n', mode: 0o755 },
    ]);
    diffIds.push(sha256(layerTar));
    layers.push(await w.blob(media.layer, gzipSync(layerTar)));
  }
  const config = await w.json(media.config, {
    created: '2024-01-01T00:00:00Z',
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
    config: { Env: ['PATH=/usr/local/bin:/usr/bin:/bin'], Cmd: ['/layer0/run.sh'], Labels: { seed } },
    rootfs: { type: 'layers', diff_ids: diffIds },
    history: diffIds.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `test layer ${i}` })),
  });
  const manifest = await w.json(media.manifest, {
    schemaVersion: 2,
    mediaType: media.manifest,
    config,
    layers,
  });
  return { platform, manifest, config, layers, diffIds };
}

async function writeLayout(
  spec: ImageSpec,
  build: (w: LayoutWriter) => Promise<{ top: Descriptor; index?: Descriptor; images: BuiltImage[] }>,
): Promise<ImageLayout> {
  const dir = spec.dir ?? (await makeTempDir('pullthrough-image-'));
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const { top, index, images } = await build(new LayoutWriter(dir));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA.oci.index,
      manifests: [{ ...top, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  );
  const digests = new Set<string>(index ? [index.digest] : []);
  for (const img of images) {
    for (const d of [img.manifest, img.config, ...img.layers]) digests.add(d.digest);
  }
  return {
    dir,
    format: spec.format ?? 'oci',
    top,
    ...(index ? { index } : {}),
    images,
    allDigests: [...digests].sort(),
    remove: () => removeDir(dir),
  };
}

/** A single-platform image: one manifest, one config, `layers` gzip layers. */
export function makeImage(opts: MakeImageOptions): Promise<ImageLayout> {
  return writeLayout(opts, async (w) => {
    const image = await buildImage(w, opts, opts.platform ?? LINUX_AMD64);
    return { top: image.manifest, images: [image] };
  });
}

/** A multi-platform image: an index (or Docker manifest list) over one image per platform. */
export function makeMultiPlatformImage(opts: MakeIndexOptions): Promise<ImageLayout> {
  const media = MEDIA[opts.format ?? 'oci'];
  return writeLayout(opts, async (w) => {
    const images: BuiltImage[] = [];
    for (const p of opts.platforms ?? [LINUX_AMD64, LINUX_ARM64]) images.push(await buildImage(w, opts, p));
    const index = await w.json(media.index, {
      schemaVersion: 2,
      mediaType: media.index,
      manifests: images.map((img) => ({ ...img.manifest, platform: img.platform })),
    });
    return { top: index, index, images };
  });
}

export { pullImage, pushLayout, skopeo } from './skopeo.js';
export type { PullOptions, PullResult, PulledImage, PushOptions } from './skopeo.js';
