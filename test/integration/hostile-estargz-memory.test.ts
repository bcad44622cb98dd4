// Memory stays bounded however hostile the layer: pullthrough runs as a child process and its
// peak resident set (VmHWM, reset between phases through /proc/<pid>/clear_refs) is measured
// while clients read files of layers built to cost memory: one 60 MiB eStargz piece read by 16
// clients at once, two plain layers of 300,000 entries each listed, a plain layer that inflates
// to 256 MiB. The layers are made in memory and served by the hostile registry.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createGzip } from 'node:zlib';
import t from 'tap';
import { request } from 'undici';
import { addImage, estargzLayer, type BuiltLayer } from '../helpers/estargz-image.js';
import { buildTar } from '../helpers/estargz-tar.js';
import { memoryOf, resetPeak, startChildProxy } from '../helpers/child-proxy.js';
import { startHostileRegistry } from '../helpers/hostile-registry.js';
import { LISTING_MAX_BYTES, LISTINGS_MAX_BYTES } from '../../src/core/layer-files.js';
import type { Test } from '../helpers/util.js';

if (!existsSync('/proc/self/status')) throw new Error('this test reads the resident set size from /proc');

const MiB = 1 << 20;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Gzips what `write` produces, never holding more than the compressed result. */
async function gzipped(write: (push: (b: Buffer) => Promise<void>) => Promise<void>): Promise<Buffer> {
  const z = createGzip({ level: 1 });
  const out: Buffer[] = [];
  z.on('data', (b: Buffer) => out.push(b));
  const ended = new Promise((resolve) => z.on('end', resolve));
  await write(async (b) => {
    if (!z.write(b)) await new Promise((r) => z.once('drain', r));
  });
  z.end();
  await ended;
  return Buffer.concat(out);
}

const template = buildTar([{ type: 'file', name: 'x', content: '' }]).subarray(0, 512);

/** A ustar header for an empty file (or one of `size` bytes), checksum included. */
function header(name: string, size = 0): Buffer {
  const b = Buffer.from(template);
  b.fill(0, 0, 100);
  b.write(name, 0, 100, 'utf8');
  b.write(`${size.toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
  b.fill(' ', 148, 156);
  let sum = 0;
  for (const v of b) sum += v;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return b;
}

/** A tar+gzip layer of `entries` empty files (and one small real one), built in slices. */
async function manyEntries(salt: string, entries: number): Promise<BuiltLayer> {
  const blob = await gzipped(async (push) => {
    const batch: Buffer[] = [];
    for (let i = 0; i < entries; i++) {
      batch.push(header(`usr/share/${salt}/d${i % 1000}/file-${i}.txt`));
      if (batch.length === 2048) await push(Buffer.concat(batch.splice(0)));
    }
    await push(Buffer.concat([...batch, buildTar([{ type: 'file', name: `etc/${salt}.txt`, content: `${salt}\n` }])]));
  });
  return { blob, digest: sha256(blob) };
}

/** A tar+gzip layer whose first file is `size` zeros (a "bomb": tiny compressed), then etc/after.txt. */
async function inflatesTo(size: number): Promise<BuiltLayer> {
  const blob = await gzipped(async (push) => {
    await push(header('big/zeros', size));
    const zeros = Buffer.alloc(MiB);
    for (let left = size; left > 0; left -= MiB) await push(zeros.subarray(0, Math.min(MiB, left)));
    await push(buildTar([{ type: 'file', name: 'etc/after.txt', content: 'after\n' }]));
  });
  return { blob, digest: sha256(blob) };
}

/** GET `url`, hashing the body as it streams (nothing held). */
async function getHashed(url: string): Promise<{ status: number; digest: string; bytes: number }> {
  const r = await request(url);
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of r.body) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { status: r.statusCode, digest: `sha256:${hash.digest('hex')}`, bytes };
}

// the layers, built before the proxy starts
const pieceSize = 60 * MiB;
const pattern = Buffer.alloc(251).map((_, i) => (i * 7 + 3) & 0xff);
const content = Buffer.alloc(pieceSize, pattern); // compresses well: the blob is small, its one piece is not
const onePiece = await estargzLayer(buildTar([{ type: 'file', name: 'data/big.bin', content }]), 64 * MiB);
const contentDigest = sha256(content);
const many = await Promise.all(Array.from({ length: 2 }, (_, i) => manyEntries(`layer${i}`, 300_000)));
const bomb = await inflatesTo(256 * MiB);

const reg = await startHostileRegistry();
t.teardown(() => reg.close());
addImage(reg, 'lib/piece', 'v1', [onePiece]);
addImage(reg, 'lib/many', 'v1', many);
addImage(reg, 'lib/bomb', 'v1', [bomb]);
addImage(reg, 'lib/small', 'v1', [await estargzLayer(buildTar([{ type: 'file', name: 'etc/hello.txt', content: 'hello\n' }]))]);
const small = (url: string) => `${url}/v2/hostile/lib/small/_estargz/image/v1/files/etc/hello.txt`;

/**
 * Runs `load` against a fresh pullthrough (so phases do not share heap) and checks that its
 * resident set grew by less than `boundMiB` at its peak.
 */
async function phase(t: Test, what: string, boundMiB: number, load: (files: (repo: string, path: string) => string) => Promise<void>): Promise<void> {
  const proxy = await startChildProxy(t, { upstreams: { hostile: reg.url } });
  t.equal((await getHashed(small(proxy.url))).status, 200, 'warm-up: the code paths are loaded');
  const before = await memoryOf(proxy.pid);
  await resetPeak(proxy.pid);
  await load((repo, path) => `${proxy.url}/v2/hostile/${repo}/_estargz/image/v1/files/${path}`);
  const after = await memoryOf(proxy.pid);
  const grewMiB = (after.peak - before.rss) / MiB;
  t.ok(grewMiB < boundMiB, `${what}: peak RSS grew by ${grewMiB.toFixed(0)} MiB (bound ${boundMiB} MiB; ${(before.rss / MiB).toFixed(0)} MiB before)`);
}

t.test('16 concurrent reads of a file in one 60 MiB piece', async (t) => {
  // Bound: each read holds a 1 MiB compressed slice, zlib's window and 64 KiB output slices, and
  // its socket buffers: a few MiB, 16 of them well under 100 MiB; 300 MiB leaves room for the
  // allocator. Measured: +60 MiB; inflating each piece into one buffer (before 41d5d4c): +1926 MiB.
  await phase(t, '16 readers of a 60 MiB piece', 300, async (files) => {
    const reads = await Promise.all(Array.from({ length: 16 }, () => getHashed(files('lib/piece', 'data/big.bin'))));
    for (const r of reads) {
      t.equal(r.status, 200);
      t.equal(r.digest, contentDigest, 'the whole file, verified');
    }
  });
  t.equal(reg.count({ method: 'GET', pathIncludes: onePiece.digest, ranged: false }), 0, 'read lazily, never fetched whole');
});

t.test('listings of two 300,000-entry layers', async (t) => {
  // Bound: a listing is held compactly (~25 MiB for 300,000 paths, src/tar/paths.ts), built one layer
  // at a time per request; all listings together are kept up to LISTINGS_MAX_BYTES (estimated), and
  // each of the two scans in flight holds at most LISTING_MAX_BYTES before it gives up caching. On
  // top of that V8 lets the garbage of scanning pile up until a major GC: measured +95 MiB mostly,
  // but +217 and +231 MiB under CI's load, so 64 MiB of slack is added to what may be held, not to
  // the typical figure. Before 0b3c26e, +112 MiB: this guards against a regression (a listing held
  // per request, or unbounded in count) more than it tells the two apart.
  const boundMiB = (LISTINGS_MAX_BYTES + 2 * LISTING_MAX_BYTES) / MiB + 64;
  await phase(t, 'two 300,000-entry listings', boundMiB, async (files) => {
    const missing = await Promise.all([0, 1].map(() => getHashed(files('lib/many', 'no/such/file'))));
    for (const r of missing) t.equal(r.status, 404, 'a path in no layer: every layer listed');
    const bottom = await getHashed(files('lib/many', 'etc/layer0.txt'));
    t.equal(bottom.status, 200, 'a file of the bottom layer');
    t.equal(bottom.digest, sha256(Buffer.from('layer0\n')));
  });
});

t.test('a plain layer that inflates to 256 MiB', async (t) => {
  // Bound: the tar is scanned as a stream; nothing of the 256 MiB is held (measured: +11 MiB,
  // and +10 MiB before these fixes: a guard, not a fix's test).
  await phase(t, 'a 256 MiB inflation', 150, async (files) => {
    const r = await getHashed(files('lib/bomb', 'etc/after.txt'));
    t.equal(r.status, 200);
    t.equal(r.digest, sha256(Buffer.from('after\n')));
  });
});
