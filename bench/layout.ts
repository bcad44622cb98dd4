// Builds large OCI image layouts for the benchmark without holding a layer in memory: each layer
// is a one-file ustar archive of an AES-256-CTR keystream (incompressible, deterministic from the
// seed), gzipped at level 0 so generation is I/O-bound, hashed and written as it streams.
// A layout is reused when <dir>/bench-layout.json says it was built with the same parameters.
import { createCipheriv, createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

export interface BenchLayout {
  dir: string;
  manifest: Descriptor;
  config: Descriptor;
  layers: Descriptor[];
  /** layer payload bytes (uncompressed, before tar framing) */
  payloadBytes: number;
}

const OCI = {
  index: 'application/vnd.oci.image.index.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

const BLOCK = 512;
const PIECE = 1 << 20;

function octal(h: Buffer, offset: number, length: number, value: number): void {
  h.write(value.toString(8).padStart(length - 1, '0') + '\0', offset, length, 'latin1');
}

/** A ustar header for one regular file (name under 100 bytes). */
function fileHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  octal(h, 100, 8, 0o644);
  octal(h, 108, 8, 0);
  octal(h, 116, 8, 0);
  octal(h, 124, 12, size);
  octal(h, 136, 12, 0);
  h.fill(0x20, 148, 156);
  h.write('0', 156, 1, 'latin1');
  h.write('ustar\0', 257, 6, 'latin1');
  h.write('00', 263, 2, 'latin1');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return h;
}

/** The tar stream of one layer: header, `bytes` of keystream, padding, end-of-archive blocks. */
function layerTar(seed: string, name: string, bytes: number): Readable {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  const zeros = Buffer.alloc(PIECE);
  async function* gen(): AsyncGenerator<Buffer> {
    yield fileHeader(name, bytes);
    for (let left = bytes; left > 0; left -= PIECE) {
      yield cipher.update(left >= PIECE ? zeros : zeros.subarray(0, left));
    }
    const pad = (BLOCK - (bytes % BLOCK)) % BLOCK;
    yield Buffer.alloc(pad + 2 * BLOCK);
  }
  return Readable.from(gen(), { objectMode: false });
}

/** Counts and hashes whatever passes. */
export class Tap extends Transform {
  readonly hash = createHash('sha256');
  bytes = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null, d?: Buffer) => void): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    cb(null, chunk);
  }
}

async function writeBlob(dir: string, mediaType: string, data: Buffer): Promise<Descriptor> {
  const hex = createHash('sha256').update(data).digest('hex');
  await writeFile(join(dir, 'blobs', 'sha256', hex), data);
  return { mediaType, digest: `sha256:${hex}`, size: data.length };
}

export interface LayoutSpec {
  dir: string;
  layers: number;
  layerBytes: number;
  seed: string;
}

/** Builds (or reuses) an OCI layout with `layers` gzip layers of `layerBytes` random payload each. */
export async function buildLayout(spec: LayoutSpec, progress?: (msg: string) => void): Promise<BenchLayout> {
  const metaPath = join(spec.dir, 'bench-layout.json');
  const key = JSON.stringify({ v: 1, layers: spec.layers, layerBytes: spec.layerBytes, seed: spec.seed });
  try {
    const meta = JSON.parse(await readFile(metaPath, 'utf8')) as { key: string; layout: BenchLayout };
    if (meta.key === key) return meta.layout;
  } catch {
    // not built yet
  }
  await rm(spec.dir, { recursive: true, force: true });
  const blobs = join(spec.dir, 'blobs', 'sha256');
  await mkdir(blobs, { recursive: true });
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (let i = 0; i < spec.layers; i++) {
    progress?.(`generating layer ${i + 1}/${spec.layers} (${spec.layerBytes >> 20} MiB) in ${spec.dir}`);
    const tmp = join(spec.dir, `layer-${i}.tmp`);
    const raw = new Tap();
    const gz = new Tap();
    await pipeline(
      layerTar(`${spec.seed}/${i}`, `layer${i}/data.bin`, spec.layerBytes),
      raw,
      createGzip({ level: 0, chunkSize: PIECE }),
      gz,
      createWriteStream(tmp, { highWaterMark: PIECE }),
    );
    const hex = gz.hash.digest('hex');
    await rename(tmp, join(blobs, hex));
    layers.push({ mediaType: OCI.layer, digest: `sha256:${hex}`, size: gz.bytes });
    diffIds.push(`sha256:${raw.hash.digest('hex')}`);
  }
  const config = await writeBlob(
    spec.dir,
    OCI.config,
    Buffer.from(
      JSON.stringify({
        created: '2024-01-01T00:00:00Z',
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/bin:/bin'], Labels: { seed: spec.seed } },
        rootfs: { type: 'layers', diff_ids: diffIds },
        history: diffIds.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `bench layer ${i}` })),
      }),
    ),
  );
  const manifest = await writeBlob(
    spec.dir,
    OCI.manifest,
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI.manifest, config, layers })),
  );
  await writeFile(join(spec.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(spec.dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI.index,
      manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'latest' } }],
    }),
  );
  const layout: BenchLayout = { dir: spec.dir, manifest, config, layers, payloadBytes: spec.layers * spec.layerBytes };
  await writeFile(metaPath, JSON.stringify({ key, layout }));
  return layout;
}
