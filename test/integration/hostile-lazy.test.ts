// Lazy eStargz serving against hostile registries. What one upstream's manifest claims about a
// layer (its TOC digest and size) holds only for that upstream and repository: a lie about another
// upstream's layer never changes what that upstream serves, not even after a restart, and the liar
// itself gets the blob served plainly. Bytes that fail verification never reach the sparse copy.
import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import t from 'tap';
import { request } from 'undici';
import { convertToEstargz, openEstargz, TOC_DIGEST_ANNOTATION, type EstargzIndex } from '../../src/estargz/index.js';
import { bufferSource, tempDir, unpackFixture } from '../helpers/estargz-fixtures.js';
import { buildTar } from '../helpers/estargz-tar.js';
import { startHostileRegistry, type HostileRegistry } from '../helpers/hostile-registry.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

/** One eStargz layer made by our writer: a few small files and one chunked file. */
async function estargzLayer(): Promise<{ blob: Buffer; digest: string; tocDigest: string; index: EstargzIndex }> {
  const tar = buildTar([
    { type: 'dir', name: 'etc/' },
    { type: 'file', name: 'etc/hello.txt', content: 'hello, lazy world\n' },
    { type: 'file', name: 'data/random.bin', content: randomBytes(600_000) },
    { type: 'file', name: 'etc/motd', content: 'the end\n' },
  ]);
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _enc, cb) {
      parts.push(c);
      cb();
    },
  });
  const r = await convertToEstargz(Readable.from([tar]), sink, { chunkSize: 128 * 1024, compressionLevel: 1 });
  const blob = Buffer.concat(parts);
  return { blob, digest: r.digest, tocDigest: r.tocDigest, index: await openEstargz(bufferSource(blob)) };
}

const layer = await estargzLayer();
const S = layer.blob.length;
const bigChunk = layer.index.chunks.reduce((a, b) => (b.end - b.offset > a.end - a.offset ? b : a));

interface LayerDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations: Record<string, string>;
}

/** An image manifest with this one layer at <repo>:v1. */
function imageManifest(reg: HostileRegistry, repo: string, descriptor: LayerDescriptor): void {
  const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
  const body = JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: reg.addBlob(config), size: config.length }, layers: [descriptor] });
  reg.addManifest(repo, body, MANIFEST, 'v1');
}

/** A manifest naming the layer with these claims. */
function manifest(reg: HostileRegistry, repo: string, claim: { tocDigest: string; size: number }): void {
  imageManifest(reg, repo, { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: claim.size, annotations: { [TOC_DIGEST_ANNOTATION]: claim.tocDigest } });
}

async function registries(t: Test): Promise<{ a: HostileRegistry; b: HostileRegistry }> {
  const a = await startHostileRegistry();
  t.teardown(() => a.close());
  const b = await startHostileRegistry();
  t.teardown(() => b.close());
  for (const r of [a, b]) r.addBlob(layer.blob); // both hold the real blob
  manifest(b, 'app', { tocDigest: layer.tocDigest, size: S }); // the truth
  return { a, b };
}

async function proxyOver(t: Test, a: HostileRegistry, b: HostileRegistry, cacheDir: string): Promise<Proxy> {
  // unverifiedRanges: the Ranges of plain blobs go to the upstream as asked, so a test can see which layers were opened lazily
  const proxy = await startProxy({ upstream: [`a=${a.url}`, `b=${b.url}`], cacheDir, configDoc: { retries: 0, estargz: { prefetch: false }, cache: { fillOnRange: false, unverifiedRanges: true } } });
  t.teardown(() => proxy.stop());
  return proxy;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  const r = await request(url, { headers });
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
}

const blobUrl = (proxy: Proxy, path: string): string => `${proxy.url}/v2/${path}/blobs/${layer.digest}`;
const fetchManifest = async (proxy: Proxy, path: string): Promise<void> => {
  const m = await get(`${proxy.url}/v2/${path}/manifests/v1`, { accept: MANIFEST });
  if (m.status !== 200) throw new Error(`manifest ${path}: ${m.status}`);
};
/** Ranged requests to this registry widened to the start of the big chunk: lazy reads (a plain Range is passed on as asked). */
const lazyReads = (reg: HostileRegistry): number => reg.log.filter((r) => r.headers.range?.startsWith(`bytes=${bigChunk.offset}-`)).length;
/** The same, of requests through one repository of the registry. */
const lazyReadsVia = (reg: HostileRegistry, repo: string): number => reg.log.filter((r) => r.path.startsWith(`/v2/${repo}/blobs/`) && r.headers.range?.startsWith(`bytes=${bigChunk.offset}-`)).length;

/** Ranges of the layer through `path` (single ones; with `whole`, also multi-range and a full GET, which may cache it): all must be the truth. */
async function servedRight(t: Test, proxy: Proxy, path: string, what: string, whole = false): Promise<void> {
  const spans = [[0, 99], [bigChunk.offset + 10, bigChunk.offset + 5000], [S - 51, S - 1], [1000, S - 1]] as const;
  for (const [from, to] of spans) {
    const r = await get(blobUrl(proxy, path), { range: `bytes=${from}-${to}` });
    t.equal(r.status, 206, `${what}: Range ${from}-${to} is a 206`);
    t.ok(r.body.equals(layer.blob.subarray(from, to + 1)), `${what}: with the right bytes`);
  }
  if (!whole) return;
  const multi = await get(blobUrl(proxy, path), { range: `bytes=0-9, ${S - 10}-${S - 1}` });
  t.ok(multi.status === 206 || multi.status === 200, `${what}: a multi-range request is answered (${multi.status})`);
  if (multi.status === 206) t.ok(multi.body.includes(layer.blob.subarray(0, 10)) && multi.body.includes(layer.blob.subarray(S - 10)), `${what}: its parts hold the right bytes`);
  else t.ok(multi.body.equals(layer.blob), `${what}: the whole blob, right`);
  const full = await get(blobUrl(proxy, path));
  t.equal(full.status, 200, `${what}: a full GET is a 200`);
  t.equal(sha256(full.body), layer.digest, `${what}: the whole layer`);
}

for (const lie of [
  { name: 'a wrong size', claim: { tocDigest: layer.tocDigest, size: S + 1_000_000 } },
  { name: 'an absurd size', claim: { tocDigest: layer.tocDigest, size: 2 ** 50 } },
  { name: 'a wrong TOC digest', claim: { tocDigest: sha256(Buffer.from('not the TOC')), size: S } },
]) {
  t.test(`upstream A's manifest claims ${lie.name} for upstream B's layer: B and A serve it right, also after a restart`, async (t) => {
    const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
    t.teardown(() => removeDir(cacheDir));
    const { a, b } = await registries(t);
    manifest(a, 'evil', lie.claim);

    let proxy = await proxyOver(t, a, b, cacheDir);
    await fetchManifest(proxy, 'a/evil'); // the lie is learned first
    const early = await get(blobUrl(proxy, 'b/app'), { range: 'bytes=100-199' });
    t.equal(early.status, 206, 'a Range through B, whose manifests claimed nothing, is not touched by the lie');
    t.ok(early.body.equals(layer.blob.subarray(100, 200)));
    t.same(b.log.filter((r) => r.path.includes('/blobs/')).map((r) => r.headers.range), ['bytes=100-199'], 'passed on as asked: no lazy open under A\'s claim');

    await fetchManifest(proxy, 'b/app');
    await servedRight(t, proxy, 'b/app', 'through B');
    t.equal(lazyReads(b), 1, 'B served it lazily (the Range widened to its chunk)');
    await servedRight(t, proxy, 'a/evil', 'through A, plainly');
    t.equal(lazyReads(a), 0, 'A was served plainly');
    const record = JSON.parse(await readFile(join(cacheDir, 'sparse', 'sha256', `${layer.digest.slice(7)}.layer`), 'utf8')) as { tocDigest?: string; size?: number; claimants?: string[] };
    t.same([record.tocDigest, record.size, record.claimants], [layer.tocDigest, S, ['b\napp']], 'on disk: only the claim the blob bore out, and who made it');

    await proxy.stop();
    proxy = await proxyOver(t, a, b, cacheDir);
    const [la, lb] = [lazyReads(a), lazyReads(b)];
    await servedRight(t, proxy, 'b/app', 'after a restart, through B');
    await servedRight(t, proxy, 'a/evil', 'after a restart, through A');
    t.same([lazyReads(a) - la, lazyReads(b) - lb], [0, 0], 'B still lazily (the chunk from its sparse copy), A plainly');
    await servedRight(t, proxy, 'a/evil', 'after a restart, through A, whole', true);
    await servedRight(t, proxy, 'b/app', 'after a restart, through B, whole', true);
  });

  t.test(`A's repository evil claims ${lie.name} for a layer A's repository app also holds: app is not touched by it`, async (t) => {
    const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
    t.teardown(() => removeDir(cacheDir));
    const { a, b } = await registries(t);
    manifest(a, 'evil', lie.claim);
    manifest(a, 'app', { tocDigest: layer.tocDigest, size: S }); // the truth, in another repository of the same upstream
    const proxy = await proxyOver(t, a, b, cacheDir);
    await fetchManifest(proxy, 'a/evil'); // the lie is learned first
    const early = await get(blobUrl(proxy, 'a/app'), { range: 'bytes=100-199' });
    t.equal(early.status, 206, 'a Range through a/app, whose manifests claimed nothing yet, is not touched by the lie');
    t.ok(early.body.equals(layer.blob.subarray(100, 200)));
    t.same(a.log.filter((r) => r.path.startsWith('/v2/app/blobs/')).map((r) => r.headers.range), ['bytes=100-199'], 'passed on as asked: no lazy open under evil\'s claim');

    await fetchManifest(proxy, 'a/app');
    await servedRight(t, proxy, 'a/app', 'through a/app');
    t.equal(lazyReadsVia(a, 'app'), 1, 'a/app served it lazily, under its own claim');
    await servedRight(t, proxy, 'a/evil', 'through a/evil, plainly', true);
    t.equal(lazyReadsVia(a, 'evil'), 0, 'a/evil was served plainly');
    await servedRight(t, proxy, 'a/app', 'through a/app, whole', true);
  });

  t.test(`upstream A claims ${lie.name} and is read lazily first: B is served right afterwards, lazily`, async (t) => {
    const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
    t.teardown(() => removeDir(cacheDir));
    const { a, b } = await registries(t);
    manifest(a, 'evil', lie.claim);
    const proxy = await proxyOver(t, a, b, cacheDir);
    await fetchManifest(proxy, 'a/evil');
    await fetchManifest(proxy, 'b/app');
    const mid = bigChunk.offset + 100;
    const viaA = await get(blobUrl(proxy, 'a/evil'), { range: `bytes=${mid}-${mid + 999}` });
    t.equal(viaA.status, 206, 'A\'s Range: the lazy open fails, and the blob is served plainly');
    t.ok(viaA.body.equals(layer.blob.subarray(mid, mid + 1000)));
    const n = a.log.length;
    await fetchManifest(proxy, 'a/evil'); // the liar repeats itself
    t.ok((await get(blobUrl(proxy, 'a/evil'), { range: `bytes=${mid}-${mid + 999}` })).body.equals(layer.blob.subarray(mid, mid + 1000)));
    t.equal(a.log.slice(n).filter((r) => r.path.includes('/blobs/')).length, 1, 'the refuted claim is not tried again: one plain ranged request');
    await servedRight(t, proxy, 'b/app', 'through B', true);
    t.equal(lazyReads(b), 1, 'B serves it lazily');
    t.equal(lazyReads(a), 0);
  });
}

t.test('A and B both claim the truth: they share the verified sparse copy, each fetching through itself', async (t) => {
  const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
  t.teardown(() => removeDir(cacheDir));
  const { a, b } = await registries(t);
  manifest(a, 'mirror', { tocDigest: layer.tocDigest, size: S });
  const proxy = await proxyOver(t, a, b, cacheDir);
  await fetchManifest(proxy, 'a/mirror');
  await fetchManifest(proxy, 'b/app');
  const c = bigChunk;
  t.ok((await get(blobUrl(proxy, 'a/mirror'), { range: `bytes=${c.offset}-${c.end - 1}` })).body.equals(layer.blob.subarray(c.offset, c.end)));
  const n = b.log.length;
  t.ok((await get(blobUrl(proxy, 'b/app'), { range: `bytes=${c.offset}-${c.end - 1}` })).body.equals(layer.blob.subarray(c.offset, c.end)), 'B reads the chunk A fetched');
  t.equal(b.log.length, n, 'from the shared copy: no request to B');
  a.misbehave({ kind: 'custom', answer: () => ({ status: 503, body: 'down' }) });
  const other = layer.index.chunks.find((x) => x.offset !== c.offset)!;
  const viaB = await get(blobUrl(proxy, 'b/app'), { range: `bytes=${other.offset}-${other.offset + 9}` });
  t.equal(viaB.status, 206, 'with A down, B still serves a chunk nobody fetched yet');
  t.ok(viaB.body.equals(layer.blob.subarray(other.offset, other.offset + 10)));
});

/** Every span the sparse copy says it has, compared with the real blob. */
async function sparseIsTruth(t: Test, cacheDir: string, of: { blob: Buffer; digest: string } = layer): Promise<void> {
  const base = join(cacheDir, 'sparse', 'sha256', of.digest.slice(7));
  const spans = JSON.parse(await readFile(`${base}.ranges`, 'utf8').catch(() => '[]')) as { start: number; end: number }[];
  const data = await readFile(`${base}.data`).catch(() => Buffer.alloc(0));
  const wrong = spans.filter((s) => !data.subarray(s.start, s.end).equals(of.blob.subarray(s.start, s.end)));
  t.same(wrong, [], `every byte the sparse copy holds is the blob's (${spans.length} spans)`);
}

t.test('a flipped byte inside a chunk: 502 before any header, nothing of it kept, the next request right', async (t) => {
  const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
  t.teardown(() => removeDir(cacheDir));
  const { a, b } = await registries(t);
  const proxy = await proxyOver(t, a, b, cacheDir);
  await fetchManifest(proxy, 'b/app');
  t.equal((await get(blobUrl(proxy, 'b/app'), { range: `bytes=${S - 51}-${S - 1}` })).status, 206, 'the layer is open');
  const c = bigChunk;
  b.misbehave({ kind: 'wrongByte', offset: Math.floor((c.end - c.offset) / 2) }, { only: { ranged: true }, times: 1 });
  const bad = await get(blobUrl(proxy, 'b/app'), { range: `bytes=${c.offset}-${c.end - 1}` });
  t.equal(bad.status, 502, 'the Range over the bent chunk is a 502');
  t.equal((JSON.parse(bad.body.toString('utf8')) as { errors: { code: string }[] }).errors[0]?.code, 'UNKNOWN', 'with an OCI error body');
  await sparseIsTruth(t, cacheDir);
  const good = await get(blobUrl(proxy, 'b/app'), { range: `bytes=${c.offset}-${c.end - 1}` });
  t.equal(good.status, 206);
  t.ok(good.body.equals(layer.blob.subarray(c.offset, c.end)), 'once the upstream behaves, the right bytes');
  await sparseIsTruth(t, cacheDir);
  const full = await get(blobUrl(proxy, 'b/app'));
  t.equal(sha256(full.body), layer.digest, 'and a full GET from the sparse copy is the layer');
});

t.test('zstd:chunked (the reference converter\'s busybox): a flipped byte inside a frame is a 502 before any header, never kept', async (t) => {
  const fixture = (await unpackFixture('busybox-zstdchunked', await tempDir(t, 'hostile-zstd'))).layers[0]!;
  t.equal(fixture.mediaType, 'application/vnd.oci.image.layer.v1.tar+zstd');
  const blob = await readFile(fixture.path);
  const index = await openEstargz(bufferSource(blob));
  const zs = { blob, digest: fixture.digest };
  const chunk = index.chunks.filter((c) => c.digest !== undefined).reduce((a, b) => (b.end - b.offset > a.end - a.offset ? b : a));
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  reg.addBlob(blob);
  imageManifest(reg, 'busybox', { mediaType: fixture.mediaType, digest: fixture.digest, size: fixture.size, annotations: fixture.annotations });
  const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
  t.teardown(() => removeDir(cacheDir));
  const proxy = await startProxy({ upstream: [`z=${reg.url}`], cacheDir, configDoc: { retries: 0, estargz: { prefetch: false }, cache: { fillOnRange: false } } });
  t.teardown(() => proxy.stop());
  const url = `${proxy.url}/v2/z/busybox/blobs/${fixture.digest}`;
  await fetchManifest(proxy, 'z/busybox');
  t.equal((await get(url, { range: `bytes=${blob.length - 100}-${blob.length - 1}` })).status, 206, 'the layer is open');
  t.ok(reg.log.some((r) => r.headers.range !== undefined && r.headers.range !== `bytes=${blob.length - 100}-${blob.length - 1}`), 'lazily: the footer Range went upstream widened');

  reg.misbehave({ kind: 'wrongByte', offset: Math.floor((chunk.end - chunk.offset) / 2) }, { only: { ranged: true }, times: 1 });
  const bad = await get(url, { range: `bytes=${chunk.offset}-${chunk.end - 1}` });
  t.equal(bad.status, 502, 'the Range over the bent frame is a 502');
  t.equal((JSON.parse(bad.body.toString('utf8')) as { errors: { code: string }[] }).errors[0]?.code, 'UNKNOWN', 'with an OCI error body');
  await sparseIsTruth(t, cacheDir, zs);
  const good = await get(url, { range: `bytes=${chunk.offset}-${chunk.end - 1}` });
  t.equal(good.status, 206);
  t.ok(good.body.equals(blob.subarray(chunk.offset, chunk.end)), 'once the upstream behaves, the right bytes');
  await sparseIsTruth(t, cacheDir, zs);
  const full = await get(url);
  t.equal(sha256(full.body), fixture.digest, 'and a full GET is the layer');
});

t.test('a flipped byte in the prologue (no chunk digest covers it) passes through, but is never kept', async (t) => {
  const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
  t.teardown(() => removeDir(cacheDir));
  const { a, b } = await registries(t);
  const proxy = await proxyOver(t, a, b, cacheDir);
  await fetchManifest(proxy, 'b/app');
  const first = layer.index.chunks[0]!.offset;
  t.ok(first > 20, `the layer starts with ${first} bytes of tar headers no chunk digest covers`);
  t.equal((await get(blobUrl(proxy, 'b/app'), { range: `bytes=${first}-${first + 99}` })).status, 206, 'the layer is open, its first chunk kept');
  b.misbehave({ kind: 'wrongByte', offset: 10 }, { only: { ranged: true }, times: 1 });
  const bent = await get(blobUrl(proxy, 'b/app'), { range: `bytes=0-${first + 99}` });
  t.equal(bent.status, 206);
  t.not(bent.body[10], layer.blob[10], 'the flipped byte passed through: nothing can verify it before the whole layer is here');
  t.ok(bent.body.subarray(first).equals(layer.blob.subarray(first, first + 100)), 'the verified chunk after it is right');
  await sparseIsTruth(t, cacheDir);
  const again = await get(blobUrl(proxy, 'b/app'), { range: `bytes=0-${first + 99}` });
  t.ok(again.body.equals(layer.blob.subarray(0, first + 100)), 'the same Range again is right: the bent byte was not kept');
  const full = await get(blobUrl(proxy, 'b/app'));
  t.equal(sha256(full.body), layer.digest, 'and a full GET from the sparse copy is the layer');
});

t.test('a bent footer: the lazy open fails, the layer is served plainly and right', async (t) => {
  const cacheDir = await makeTempDir('pullthrough-hostile-lazy-');
  t.teardown(() => removeDir(cacheDir));
  const { a, b } = await registries(t);
  const proxy = await proxyOver(t, a, b, cacheDir);
  await fetchManifest(proxy, 'b/app');
  b.misbehave({ kind: 'wrongByte', offset: 20 }, { only: { ranged: true }, times: 1 });
  const mid = bigChunk.offset + 100;
  const r = await get(blobUrl(proxy, 'b/app'), { range: `bytes=${mid}-${mid + 999}` });
  t.equal(r.status, 206, 'served plainly');
  t.ok(r.body.equals(layer.blob.subarray(mid, mid + 1000)), 'with the right bytes');
  t.equal(lazyReads(b), 0, 'not lazily');
  await sparseIsTruth(t, cacheDir);
  const full = await get(blobUrl(proxy, 'b/app'));
  t.equal(sha256(full.body), layer.digest);
});
