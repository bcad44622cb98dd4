// Helpers for the estargz tests: locate and unpack the reference fixtures (OCI image-layout
// archives made by the reference converter), counting RangeSources, and extracting layers with
// the system `tar` to compare against.
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { lstat, mkdir, mkdtemp, open, readdir, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { Decompress } from 'fzstd';
import type { RangeSource } from '../../src/estargz/index.js';

const run = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

/** The fixtures folder: $ESTARGZ_FIXTURES, shared/ beside the repo, or /work/shared. */
export function fixturesDir(): string | undefined {
  const candidates = [
    process.env['ESTARGZ_FIXTURES'],
    join(repoRoot, '..', 'shared', 'fixtures', 'estargz'),
    join(repoRoot, 'shared', 'fixtures', 'estargz'),
    '/work/shared/fixtures/estargz',
  ];
  return candidates.find((c): c is string => c !== undefined && existsSync(join(c, 'FIXTURES.txt')));
}

export interface FixtureLayer {
  readonly variant: string;
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly annotations: Record<string, string>;
  /** Path of the unpacked blob. */
  readonly path: string;
}

export interface Fixture {
  readonly dir: string;
  readonly layers: FixtureLayer[];
  /** Every blob of the archive by digest (e.g. the -esgztoc image's layers). */
  readonly blobPath: (digest: string) => string;
  readonly manifests: { ref: string; layers: FixtureLayer[] }[];
}

export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `pullthrough-${prefix}-`));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** Unpacks `<name>.oci.tar` into `into` and reads its manifests; `layers` are the first manifest's. */
export async function unpackFixture(name: string, into: string): Promise<Fixture> {
  const root = fixturesDir();
  if (!root) throw new Error('estargz fixtures not found');
  const dir = join(into, name);
  await mkdir(dir, { recursive: true });
  await run('tar', ['-xf', join(root, `${name}.oci.tar`), '-C', dir]);
  const blobPath = (digest: string): string => join(dir, 'blobs', ...digest.split(':'));
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const manifests: Fixture['manifests'] = [];
  for (const m of index.manifests) {
    const doc = JSON.parse(await readFile(blobPath(m.digest), 'utf8')) as { layers: Descriptor[] };
    const ref = m.annotations?.['org.opencontainers.image.ref.name'] ?? '';
    const layers = doc.layers.map((l) => ({ variant: ref, mediaType: l.mediaType, digest: l.digest, size: l.size, annotations: l.annotations ?? {}, path: blobPath(l.digest) }));
    manifests.push({ ref, layers });
  }
  return { dir, layers: manifests[0]?.layers ?? [], blobPath, manifests };
}

export interface CountingSource extends RangeSource {
  readonly reads: { offset: number; length: number }[];
  close(): Promise<void>;
}

/** A RangeSource over a file that records every read. */
export async function fileSource(path: string): Promise<CountingSource> {
  const fh = await open(path);
  const { size } = await fh.stat();
  const reads: { offset: number; length: number }[] = [];
  return {
    size,
    reads,
    async read(offset, length, signal) {
      signal?.throwIfAborted();
      reads.push({ offset, length });
      const b = Buffer.alloc(length);
      const { bytesRead } = await fh.read(b, 0, length, offset);
      return b.subarray(0, bytesRead);
    },
    close: () => fh.close(),
  };
}

/** A RangeSource over a buffer that records every read. */
export function bufferSource(buf: Buffer): CountingSource {
  const reads: { offset: number; length: number }[] = [];
  return {
    size: buf.length,
    reads,
    async read(offset, length) {
      reads.push({ offset, length });
      return Buffer.from(buf.subarray(offset, offset + length));
    },
    close: async () => {},
  };
}

/** Decompresses a zstd blob: the system `zstd` when present, else fzstd. */
async function zstdToTar(blob: string, out: string): Promise<void> {
  try {
    await run('sh', ['-c', 'zstd -q -d -c "$1" > "$2"', 'sh', blob, out]);
    return;
  } catch {
    const parts: Uint8Array[] = [];
    new Decompress((d) => parts.push(Buffer.from(d))).push(await readFile(blob), true);
    const fh = await open(out, 'w');
    await fh.writeFile(Buffer.concat(parts));
    await fh.close();
  }
}

/**
 * Extracts a layer blob with the system tar (gzip detected by tar; zstd decompressed first).
 * Device nodes are skipped: extracting them needs privileges the comparison does not.
 */
export async function tarExtract(blob: string, dir: string, compression: 'gzip' | 'zstd' | 'none' = 'gzip'): Promise<void> {
  await mkdir(dir, { recursive: true });
  let input = blob;
  if (compression === 'zstd') {
    input = `${dir}.tar`;
    await zstdToTar(blob, input);
  }
  const args = ['-xf', input, '-C', dir, '--no-same-owner', '--no-same-permissions', '--exclude=dev/null'];
  await new Promise<void>((res, rej) => {
    const p = spawn('tar', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d: Buffer) => (err += d.toString()));
    p.on('error', rej);
    p.on('close', (code) => (code === 0 ? res() : rej(new Error(`tar ${args.join(' ')} exited ${code}: ${err}`))));
  });
  await run('chmod', ['-R', 'u+rwX', dir]); // landmark and TOC files are mode 0
}

export interface TreeNode {
  readonly type: 'file' | 'dir' | 'symlink' | 'other';
  readonly sha256?: string;
  readonly link?: string;
  readonly size?: number;
}

/** Every path under dir (relative, no leading slash) → type and content hash / link target. */
export async function hashTree(dir: string): Promise<Map<string, TreeNode>> {
  const out = new Map<string, TreeNode>();
  async function walk(d: string): Promise<void> {
    for (const name of await readdir(d)) {
      const p = join(d, name);
      const rel = relative(dir, p);
      const st = await lstat(p);
      if (st.isDirectory()) {
        out.set(rel, { type: 'dir' });
        await walk(p);
      } else if (st.isSymbolicLink()) out.set(rel, { type: 'symlink', link: await readlink(p) });
      else if (st.isFile()) out.set(rel, { type: 'file', size: st.size, sha256: createHash('sha256').update(await readFile(p)).digest('hex') });
      else out.set(rel, { type: 'other' });
    }
  }
  await walk(dir);
  return out;
}

export function sha256hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}
