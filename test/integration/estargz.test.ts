// eStargz layers through pullthrough: lazy ranged reads fetch only the chunks they need, verified
// and kept in a sparse copy; the file API reads single files of layers and images; a full GET
// then completes the layer from what is already there. Upstream traffic is counted at a hop.
import { createHash } from 'node:crypto';
import { access, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import t from 'tap';
import { Client, request } from 'undici';
import { convertToEstargz, openEstargz } from '../../src/estargz/index.js';
import { buildTar, type EntrySpec } from '../helpers/estargz-tar.js';
import { fileSource, fixturesDir, tarExtract, unpackFixture, type Fixture } from '../helpers/estargz-fixtures.js';
import { startHop, type Hop } from '../helpers/hop.js';
import { skopeo } from '../helpers/skopeo.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTempDir, removeDir, sleep, waitFor, type Test } from '../helpers/util.js';

if (!fixturesDir()) throw new Error('the shared eStargz fixtures are missing (../shared/fixtures/estargz)');

const work = await makeTempDir('pullthrough-esgz-');
t.teardown(() => removeDir(work));
const esgz = await unpackFixture('busybox-esgz-prefetch-1m', work);
const plain = await unpackFixture('busybox-plain', work);
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
for (const [fixture, repo] of [[esgz, 'lazy/esgz'], [plain, 'lazy/plain']] as const) {
  await skopeo(['copy', '--retry-times', '0', '--dest-tls-verify=false', '--preserve-digests', `oci:${fixture.dir}`, `docker://${registry.host}/${repo}:v1`]);
}

async function setup(t: Test, doc: Record<string, unknown> = {}, cacheDir?: string, hop?: Hop): Promise<{ hop: Hop; proxy: Proxy }> {
  if (!hop) {
    hop = await startHop(registry.url);
    t.teardown(() => hop!.close());
  }
  const proxy = await startProxy({ configDoc: { upstreams: [{ name: 'up.test', url: hop.url }], ...doc }, cacheDir });
  t.teardown(() => proxy.stop());
  return { hop, proxy };
}

const big = (f: Fixture) => f.layers.reduce((a, b) => (b.size > a.size ? b : a));
const upstreamBytes = (hop: Hop, digest: string) => hop.log.filter((e) => e.path.includes(digest)).reduce((n, e) => n + e.bytes, 0);
const fullGets = (hop: Hop, digest: string) => hop.log.filter((e) => e.method === 'GET' && e.path.includes(digest) && !e.range).length;

async function fetchManifest(proxy: Proxy, repo: string) {
  const m = await request(`${proxy.url}/v2/${repo}/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  return JSON.parse(Buffer.from(await m.body.arrayBuffer()).toString('utf8')) as { layers: { digest: string; size: number }[] };
}

async function rangeGet(proxy: Proxy, repo: string, digest: string, range: string) {
  const r = await request(`${proxy.url}/v2/${repo}/blobs/${digest}`, { headers: { range } });
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
}

async function get(url: string) {
  const r = await request(url);
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
}

const errorCode = (body: Buffer) => (JSON.parse(body.toString('utf8')) as { errors: { code: string }[] }).errors[0]!.code;
const sparseData = (proxy: Proxy, digest: string) => join(proxy.cacheDir, 'sparse', 'sha256', `${digest.slice(7)}.data`);
const exists = (path: string) => access(path).then(() => true, () => false);

t.test('ranged reads of an eStargz layer fetch only what they need, verified, never twice', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false } });
  const layer = big(esgz);
  const whole = await readFile(layer.path);
  await fetchManifest(proxy, 'lazy/esgz'); // the manifest names the layer's TOC digest

  const footer = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${layer.size - 51}-${layer.size - 1}`);
  t.equal(footer.status, 206);
  t.same(footer.body, whole.subarray(layer.size - 51), 'the footer bytes');
  const mid = Math.floor(layer.size / 2);
  const part = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${mid}-${mid + 999}`);
  t.equal(part.status, 206);
  t.equal(part.headers['content-range'], `bytes ${mid}-${mid + 999}/${layer.size}`);
  t.same(part.body, whole.subarray(mid, mid + 1000), 'a range in the middle of the layer');

  t.equal(fullGets(hop, layer.digest), 0, 'no whole-layer GET upstream');
  const fetched = upstreamBytes(hop, layer.digest);
  t.ok(fetched < layer.size / 2, `only part of the layer came from upstream (${fetched} of ${layer.size} bytes)`);
  const blobs = await readdir(join(proxy.cacheDir, 'blobs', 'sha256')).catch(() => []);
  t.notOk(blobs.some((d) => layer.digest.slice(7).startsWith(d)), 'the layer is not in the blob cache');

  const before = hop.log.length;
  const again = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${mid}-${mid + 999}`);
  t.same(again.body, part.body);
  t.equal(hop.log.length, before, 'the same range again: zero upstream requests');

  // multi-range, as stargz-snapshotter asks
  const multi = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=0-99, ${mid}-${mid + 9}`);
  t.equal(multi.status, 206);
  const boundary = /boundary=(\S+)/.exec(String(multi.headers['content-type']))?.[1];
  t.ok(boundary, 'multipart/byteranges with a boundary');
  const text = multi.body.toString('latin1');
  t.match(text, `Content-Range: bytes 0-99/${layer.size}`);
  t.match(text, `Content-Range: bytes ${mid}-${mid + 9}/${layer.size}`);
  t.ok(multi.body.includes(whole.subarray(0, 100)) && multi.body.includes(whole.subarray(mid, mid + 10)), 'both parts hold the right bytes');
  t.equal(Number(multi.headers['content-length']), multi.body.length, 'Content-Length matches the multipart body');

  // a full GET completes the layer from the sparse copy plus the missing ranges
  const full = await request(`${proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  const got = Buffer.from(await full.body.arrayBuffer());
  t.equal(sha256(got), layer.digest, 'a full GET gives the whole, correct layer');
  t.ok(upstreamBytes(hop, layer.digest) <= layer.size + 64 * 1024, 'no byte fetched twice for the full GET');
  const cached = await request(`${proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`, { method: 'HEAD' });
  await cached.body.dump();
  const n = hop.log.length;
  const warm = await request(`${proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  t.equal(sha256(Buffer.from(await warm.body.arrayBuffer())), layer.digest);
  t.equal(hop.log.length, n, 'now an ordinary cached blob');
});

t.test('lazy ranges go upstream widened to whole chunks, adjacent chunks in one request', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false } });
  const layer = big(esgz);
  const whole = await readFile(layer.path);
  const src = await fileSource(layer.path);
  t.teardown(() => src.close());
  const index = await openEstargz(src);
  // member boundaries, as the TOC gives them: where each gzip member holding a chunk starts and ends (and the TOC, the footer)
  const members = [...new Map(index.chunks.map((c) => [c.offset, c.end])).entries()].sort((a, b) => a[0] - b[0]);
  const boundaries = new Set([0, index.dataEnd, index.tocOffset, index.footerOffset, layer.size, ...members.flat()]);
  const [from, to] = [members[Math.floor(members.length / 2)]!, members[Math.floor(members.length / 2) + 5]!];
  await fetchManifest(proxy, 'lazy/esgz');
  await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${layer.size - 51}-${layer.size - 1}`); // opens the layer (footer, TOC)

  const n = hop.log.length;
  const start = from[0] + 1;
  const end = to[1] - 2; // inclusive: inside the sixth member
  const got = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${start}-${end}`);
  t.same(got.body, whole.subarray(start, end + 1));
  const sent = hop.log.slice(n);
  t.equal(sent.length, 1, 'six adjacent members: one upstream request');
  t.equal(sent[0]?.range, `bytes=${from[0]}-${to[1] - 1}`, 'widened to the first member\'s start and the last one\'s end');
  for (const e of hop.log.filter((e) => e.range && e.path.includes(layer.digest))) {
    const [a, b] = e.range!.slice('bytes='.length).split('-').map(Number) as [number, number];
    t.ok(boundaries.has(a) && boundaries.has(b + 1), `${e.range} starts and ends on chunk boundaries`);
  }
});

t.test('estargz.maxSparseSize: beyond it the least recently used sparse copy is given up, and read again correctly later', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false, maxSparseSize: '1KiB' } });
  const [a, b] = [...esgz.layers].sort((x, y) => y.size - x.size) as [Fixture['layers'][0], Fixture['layers'][0]];
  const wholeA = await readFile(a.path);
  await fetchManifest(proxy, 'lazy/esgz');
  const mid = Math.floor(a.size / 2);
  const first = await rangeGet(proxy, 'lazy/esgz', a.digest, `bytes=${mid}-${mid + 999}`);
  t.same(first.body, wholeA.subarray(mid, mid + 1000), 'layer A: a range, correct');
  t.ok(await exists(sparseData(proxy, a.digest)), "A's sparse copy is kept while it is the only one, over the budget or not");

  const other = await rangeGet(proxy, 'lazy/esgz', b.digest, 'bytes=0-99');
  t.equal(other.status, 206, 'layer B: a range');
  await waitFor(async () => !(await exists(sparseData(proxy, a.digest))), { timeoutMs: 5_000, what: "A's copy to be given up" });
  t.pass('reading B gave up A, the least recently used copy, to stay within 1 KiB');
  t.ok(await exists(sparseData(proxy, b.digest)), "B's copy, just used, stays");

  hop.reset();
  const again = await rangeGet(proxy, 'lazy/esgz', a.digest, `bytes=${mid}-${mid + 999}`);
  t.same(again.body, wholeA.subarray(mid, mid + 1000), 'A read again: correct');
  t.ok(hop.log.some((e) => e.path.includes(a.digest) && e.range !== undefined), 'its chunks fetched again, by range');
  t.equal(fullGets(hop, a.digest), 0, 'and no whole-layer GET');
});

t.test('estargz.fillAfterRange: a ranged read also fills the rest of the layer in the background', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false, fillAfterRange: true } });
  const layer = big(esgz);
  const whole = await readFile(layer.path);
  await fetchManifest(proxy, 'lazy/esgz');
  const mid = Math.floor(layer.size / 2);
  const part = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${mid}-${mid + 999}`);
  t.same(part.body, whole.subarray(mid, mid + 1000), 'the range is answered at once');
  await waitFor(async () => !(await exists(sparseData(proxy, layer.digest))), { what: 'the layer to be cached whole' });
  t.equal(fullGets(hop, layer.digest), 0, 'filled from the sparse copy plus ranged requests');
  t.ok(upstreamBytes(hop, layer.digest) <= layer.size + 64 * 1024, 'no byte fetched twice');
  const n = hop.log.length;
  const full = await get(`${proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  t.equal(sha256(full.body), layer.digest);
  t.equal(hop.log.length, n, 'a full GET is then served from the cache');
});

t.test('prefetch: the range before the landmark is fetched on first touch', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = big(esgz);
  const whole = await readFile(layer.path);
  const src = await fileSource(layer.path);
  t.teardown(() => src.close());
  const first = (await openEstargz(src)).chunks[0]!.offset; // before it: the tar headers no chunk digest covers
  await fetchManifest(proxy, 'lazy/esgz');
  await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${layer.size - 51}-${layer.size - 1}`);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && !hop.log.some((e) => e.range?.startsWith(`bytes=${first}-`) && e.status === 206 && e.bytes > 1_000_000)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(hop.log.some((e) => e.range?.startsWith(`bytes=${first}-`)), 'a ranged fetch from the first chunk of the layer (the prefetch range)');
  const before = hop.log.length;
  const inside = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${first}-${first + 65535}`);
  t.same(inside.body, whole.subarray(first, first + 65536));
  t.equal(hop.log.length, before, 'reads inside the prefetch range need no upstream request');
  const head = await rangeGet(proxy, 'lazy/esgz', layer.digest, 'bytes=0-65535');
  t.same(head.body, whole.subarray(0, 65536));
  t.same(hop.log.slice(before).map((e) => e.range), [`bytes=0-${first - 1}`], 'a read from the start fetches only the unverifiable prologue, which is never kept');
});

t.test('file API: TOC, one file of a layer, one file of an image with whiteouts', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false } });
  const layer = big(esgz);
  await fetchManifest(proxy, 'lazy/esgz');
  const extracted = join(work, 'extracted');
  await tarExtract(layer.path, extracted);

  const toc = await request(`${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/toc`);
  const tocBody = Buffer.from(await toc.body.arrayBuffer());
  t.equal(toc.statusCode, 200);
  t.equal(sha256(tocBody), layer.annotations['containerd.io/snapshot/stargz/toc.digest'], 'the TOC, as its annotation names it');

  const file = await request(`${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/files/etc/hello.txt`);
  const content = Buffer.from(await file.body.arrayBuffer());
  t.equal(file.statusCode, 200);
  t.same(content, await readFile(join(extracted, 'etc/hello.txt')), 'the file equals the one tar extracts');
  t.equal(Number(file.headers['x-file-size']), content.length);
  t.match(String(file.headers['x-file-mode']), /^0[0-7]+$/);
  t.equal(file.headers['x-file-digest'], sha256(content), 'the digest header matches the content');
  t.equal(fullGets(hop, layer.digest), 0, 'no whole-layer GET for one file');
  t.ok(upstreamBytes(hop, layer.digest) < layer.size * 0.2, `a small part of the layer came from upstream (${upstreamBytes(hop, layer.digest)} bytes)`);

  const fromImage = await request(`${proxy.url}/v2/lazy/esgz/_estargz/image/v1/files/etc/hello.txt`);
  t.same(Buffer.from(await fromImage.body.arrayBuffer()), content, 'the same file through the image');
  t.equal(fromImage.headers['x-file-layer'], layer.digest, 'found in the layer that has it');
  const manifestDigest = (await request(`${proxy.url}/v2/lazy/esgz/manifests/v1`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } })).headers['docker-content-digest'];
  const byDigest = await get(`${proxy.url}/v2/lazy/esgz/_estargz/image/${String(manifestDigest)}/files/etc/hello.txt`);
  t.equal(byDigest.status, 200);
  t.same(byDigest.body, content, 'and through the image by digest');
  const top = esgz.layers[esgz.layers.length - 1]!;
  const upper = await request(`${proxy.url}/v2/lazy/esgz/_estargz/image/v1/files/etc/layer2.txt`);
  await upper.body.dump();
  t.equal(upper.statusCode, 200);
  t.equal(upper.headers['x-file-layer'], top.digest, 'a file of the upper layer');
  const hidden = await request(`${proxy.url}/v2/lazy/esgz/_estargz/image/v1/files/etc/empty.txt`);
  t.equal(hidden.statusCode, 404, 'a file whited out by the upper layer is not in the image');
  await hidden.body.dump();
  const lower = await request(`${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/files/etc/empty.txt`);
  await lower.body.dump();
  t.equal(lower.statusCode, 200, 'but it is still in the lower layer itself');

  const raw = new Client(proxy.url);
  t.teardown(() => raw.close());
  for (const path of ['etc/../../../etc/passwd', 'etc/%2e%2e/x']) {
    const bad = await raw.request({ path: `/v2/lazy/esgz/_estargz/${layer.digest}/files/${path}`, method: 'GET' });
    t.equal(bad.statusCode, 400, `${path} → 400`);
    t.equal(((await bad.body.json()) as { errors: { code: string }[] }).errors[0]!.code, 'NAME_INVALID');
  }
  const missing = await request(`${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/files/no/such/file`);
  t.equal(missing.statusCode, 404);
  await missing.body.dump();
});

t.test('file API on a plain gzip layer falls back to the whole layer, cached for next time', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = big(plain);
  await fetchManifest(proxy, 'lazy/plain');
  const extracted = join(work, 'extracted-plain');
  await tarExtract(layer.path, extracted);
  const file = await request(`${proxy.url}/v2/lazy/plain/_estargz/image/v1/files/etc/hello.txt`);
  const content = Buffer.from(await file.body.arrayBuffer());
  t.equal(file.statusCode, 200);
  t.same(content, await readFile(join(extracted, 'etc/hello.txt')));
  t.equal(file.headers['x-file-digest'], sha256(content));
  t.equal(fullGets(hop, layer.digest), 1, 'the plain layer was fetched whole, once');
  const n = hop.log.length;
  const again = await request(`${proxy.url}/v2/lazy/plain/_estargz/${layer.digest}/files/etc/hello.txt`);
  t.same(Buffer.from(await again.body.arrayBuffer()), content);
  t.equal(hop.log.length, n, 'then served from the cache');
});

t.test('a layer cached whole is read from the cache: the file API and the TOC fetch nothing more', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false } });
  const layer = big(esgz);
  await fetchManifest(proxy, 'lazy/esgz');
  const fileUrl = `${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/files/etc/hello.txt`;
  const first = await get(fileUrl);
  t.equal(first.status, 200);
  t.ok(await exists(sparseData(proxy, layer.digest)), 'the file came through a sparse copy');

  const full = await get(`${proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  t.equal(sha256(full.body), layer.digest, 'a full GET completes the layer');
  await waitFor(async () => !(await exists(sparseData(proxy, layer.digest))), { what: 'the sparse copy to be removed' });

  const n = hop.log.length;
  const again = await get(fileUrl);
  t.equal(again.status, 200, 'the file API still answers once the sparse copy is gone');
  t.same(again.body, first.body, 'with the same content');
  const toc = await get(`${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/toc`);
  t.equal(sha256(toc.body), layer.annotations['containerd.io/snapshot/stargz/toc.digest']);
  const range = await rangeGet(proxy, 'lazy/esgz', layer.digest, 'bytes=1000-1999');
  t.same(range.body, full.body.subarray(1000, 2000));
  t.equal(hop.log.length, n, 'zero upstream requests: everything from the cached blob');

  // a layer cached whole before anything touched it lazily never gets a sparse copy
  const fresh = await setup(t, { estargz: { prefetch: false } });
  await fetchManifest(fresh.proxy, 'lazy/esgz');
  const whole = await get(`${fresh.proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  t.equal(sha256(whole.body), layer.digest);
  const m = fresh.hop.log.length;
  t.equal((await get(`${fresh.proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/toc`)).status, 200);
  t.same((await get(`${fresh.proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/files/etc/hello.txt`)).body, first.body);
  t.equal(fresh.hop.log.length, m, 'TOC and file of a cached layer: zero upstream requests');
  t.notOk(await exists(sparseData(fresh.proxy, layer.digest)), 'and no sparse copy');
});

t.test('a restart keeps knowing which layers are eStargz: ranged reads stay lazy, nothing fetched twice', async (t) => {
  const cacheDir = await makeTempDir('pullthrough-esgz-restart-');
  t.teardown(() => removeDir(cacheDir));
  const doc = { estargz: { prefetch: false } };
  const layer = big(esgz);
  const whole = await readFile(layer.path);
  const mid = Math.floor(layer.size / 2);
  const before = await setup(t, doc, cacheDir);
  await fetchManifest(before.proxy, 'lazy/esgz');
  t.same((await rangeGet(before.proxy, 'lazy/esgz', layer.digest, `bytes=${mid}-${mid + 999}`)).body, whole.subarray(mid, mid + 1000));
  await before.proxy.stop();

  const { hop, proxy } = await setup(t, doc, cacheDir, before.hop); // fillOnRange is on (the default)
  hop.reset();
  const again = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${mid}-${mid + 999}`);
  t.equal(again.status, 206);
  t.same(again.body, whole.subarray(mid, mid + 1000), 'the range, without the manifest asked for again');
  t.equal(hop.log.length, 0, 'served from the sparse copy of the last run: zero upstream requests');
  const other = await rangeGet(proxy, 'lazy/esgz', layer.digest, 'bytes=100000-100999');
  t.same(other.body, whole.subarray(100000, 101000));
  t.ok(hop.log.length > 0 && hop.log.every((e) => e.range !== undefined), 'a new range: ranged upstream requests only');
  await sleep(300); // a background fill would have sent its GET by now
  t.equal(fullGets(hop, layer.digest), 0, 'no whole-layer fill started');

  await proxy.stop();

  // and a full GET first thing after a restart completes the layer from the sparse copy too
  const last = await setup(t, doc, cacheDir, hop);
  hop.reset();
  const full = await get(`${last.proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  t.equal(sha256(full.body), layer.digest, 'a full GET gives the whole layer');
  t.equal(fullGets(hop, layer.digest), 0, 'completed from the sparse copy plus ranged requests');
  t.ok(upstreamBytes(hop, layer.digest) <= layer.size - 2000, 'what earlier runs fetched is not fetched again');
  await waitFor(async () => !(await exists(sparseData(last.proxy, layer.digest))), { what: 'the sparse copy to be removed' });
});

t.test('a TOC that does not match its annotation: the layer is served plainly, and the claim is not kept', async (t) => {
  const dir = await makeTempDir('pullthrough-esgz-badtoc-');
  t.teardown(() => removeDir(dir));
  const bad = await unpackFixture('busybox-esgz-prefetch-1m', dir);
  const layer = big(bad);
  const whole = await readFile(layer.path);
  const index = JSON.parse(await readFile(join(bad.dir, 'index.json'), 'utf8')) as { manifests: { digest: string; size: number }[] };
  const manifest = JSON.parse(await readFile(bad.blobPath(index.manifests[0]!.digest), 'utf8')) as { layers: { digest: string; annotations: Record<string, string> }[] };
  manifest.layers.find((l) => l.digest === layer.digest)!.annotations['containerd.io/snapshot/stargz/toc.digest'] = sha256(Buffer.from('not the TOC'));
  const body = Buffer.from(JSON.stringify(manifest));
  await writeFile(bad.blobPath(sha256(body)), body);
  index.manifests[0] = { ...index.manifests[0]!, digest: sha256(body), size: body.length };
  await writeFile(join(bad.dir, 'index.json'), JSON.stringify(index));
  await skopeo(['copy', '--retry-times', '0', '--dest-tls-verify=false', '--preserve-digests', `oci:${bad.dir}`, `docker://${registry.host}/lazy/badtoc:v1`]);

  const { hop, proxy } = await setup(t, { estargz: { prefetch: false }, cache: { fillOnRange: false } });
  await fetchManifest(proxy, 'lazy/badtoc');
  const range = await rangeGet(proxy, 'lazy/badtoc', layer.digest, 'bytes=100000-100999');
  t.equal(range.status, 206, 'a Range is answered');
  t.same(range.body, whole.subarray(100000, 101000), 'with the right bytes, as for any blob');
  const tailReads = () => hop.log.filter((e) => e.range === `bytes=${layer.size - 51}-${layer.size - 1}`).length;
  t.equal(tailReads(), 1, 'the layer was tried once under the claim');
  await fetchManifest(proxy, 'lazy/badtoc'); // the manifest repeats the claim
  const again = await rangeGet(proxy, 'lazy/badtoc', layer.digest, 'bytes=200000-200999');
  t.same(again.body, whole.subarray(200000, 201000));
  t.equal(tailReads(), 1, 'the refuted claim is not tried again on every request');
  t.notOk(await exists(sparseData(proxy, layer.digest)), 'no sparse copy left behind');
  t.notOk(await exists(join(proxy.cacheDir, 'sparse', 'sha256', `${layer.digest.slice(7)}.layer`)), 'and no record of the claim');
  const file = await get(`${proxy.url}/v2/lazy/badtoc/_estargz/${layer.digest}/files/etc/hello.txt`);
  t.equal(file.status, 200, 'the file API serves it from the whole layer, verified by its digest');
  const full = await get(`${proxy.url}/v2/lazy/badtoc/blobs/${layer.digest}`);
  t.equal(sha256(full.body), layer.digest, 'a full GET is the layer');
});

t.test('a corrupt chunk from the upstream is an error before any header, and is not kept', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false } });
  const layer = big(esgz);
  const src = await fileSource(layer.path);
  t.teardown(() => src.close());
  const chunk = (await openEstargz(src)).lookup('etc/hello.txt')!.chunks[0]!;
  const extracted = join(work, 'extracted-corrupt');
  await tarExtract(layer.path, extracted);
  const hello = await readFile(join(extracted, 'etc/hello.txt'));
  await fetchManifest(proxy, 'lazy/esgz');
  t.equal((await get(`${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/toc`)).status, 200, 'the layer is open (TOC fetched)');
  // the next ranged fetch of the layer starts at the member of etc/hello.txt; its deflate data gets one flipped byte
  const corruptNext = () => Object.assign(hop.faults, { corruptAt: 12, only: { ranged: true, pathIncludes: layer.digest }, times: 1 });
  const fileUrl = `${proxy.url}/v2/lazy/esgz/_estargz/${layer.digest}/files/etc/hello.txt`;

  corruptNext();
  const file = await get(fileUrl);
  t.ok(hop.log.some((e) => e.injected?.includes('corrupt')), 'the upstream answer was corrupted');
  t.equal(file.status, 502, 'the file API answers 502, not a cut-off 200');
  t.equal(errorCode(file.body), 'UNKNOWN', 'with the OCI error body');

  corruptNext();
  const range = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${chunk.offset}-${chunk.offset + 9}`);
  t.equal(range.status, 502, 'a Range over the chunk answers 502');
  t.equal(errorCode(range.body), 'UNKNOWN');

  corruptNext();
  const multi = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${chunk.offset}-${chunk.offset + 9}, ${layer.size - 51}-${layer.size - 1}`);
  t.equal(multi.status, 502, 'a multi-range request over the chunk answers 502, not a cut-off 206');
  t.equal(errorCode(multi.body), 'UNKNOWN');

  const n = hop.log.length;
  const good = await get(fileUrl);
  t.equal(good.status, 200);
  t.same(good.body, hello, 'once the upstream behaves, the right content');
  t.ok(hop.log.slice(n).some((e) => e.range?.startsWith(`bytes=${chunk.offset}-`)), 'the chunk was fetched again: the bad one was never kept');
});

/** An OCI layout of one image whose layers are `layers` (bottom first), each converted to eStargz by our writer. */
async function estargzImage(dir: string, layers: EntrySpec[][]) {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const put = async (b: Buffer) => {
    await writeFile(join(dir, 'blobs', 'sha256', sha256(b).slice(7)), b);
    return { digest: sha256(b), size: b.length };
  };
  const descs = [];
  const diffIds = [];
  for (const specs of layers) {
    const parts: Buffer[] = [];
    const sink = new Writable({
      write(c: Buffer, _enc, cb) {
        parts.push(c);
        cb();
      },
    });
    const r = await convertToEstargz(Readable.from([buildTar(specs)]), sink, { compressionLevel: 1 });
    descs.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...(await put(Buffer.concat(parts))), annotations: r.annotations });
    diffIds.push(r.diffId);
  }
  const config = await put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } })));
  const manifest = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config }, layers: descs };
  const m = await put(Buffer.from(JSON.stringify(manifest)));
  await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: manifest.mediaType, ...m }] }));
  return descs;
}

t.test('the prologue (tar headers no chunk digest covers) passes through but is never kept', async (t) => {
  const { hop, proxy } = await setup(t, { estargz: { prefetch: false } });
  const layer = big(esgz);
  const whole = await readFile(layer.path);
  const src = await fileSource(layer.path);
  t.teardown(() => src.close());
  const first = (await openEstargz(src)).chunks[0]!.offset;
  await fetchManifest(proxy, 'lazy/esgz');
  await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${layer.size - 51}-${layer.size - 1}`); // opens the layer
  await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${first}-${first + 99}`); // the first chunk, verified and kept
  Object.assign(hop.faults, { corruptAt: 20, only: { ranged: true, pathIncludes: layer.digest }, times: 1 });
  const head = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=0-${first + 99}`);
  t.equal(head.status, 206);
  t.ok(hop.log.some((e) => e.injected?.includes('corrupt')), 'the upstream answer was corrupted');
  t.not(head.body[20], whole[20], 'the flipped byte passed through: nothing could verify it yet');
  t.same(head.body.subarray(first), whole.subarray(first, first + 100), 'the verified chunk after it is right');
  const again = await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=0-${first + 99}`);
  t.same(again.body, whole.subarray(0, first + 100), 'the same range again is right: the bad byte was not kept');
  const full = await get(`${proxy.url}/v2/lazy/esgz/blobs/${layer.digest}`);
  t.equal(sha256(full.body), layer.digest, 'and the full GET completed from the sparse copy is the layer');
});

t.test('image file API: an opaque directory in an upper layer hides the lower layers\' copy of it', async (t) => {
  const dir = await makeTempDir('pullthrough-esgz-opaque-');
  t.teardown(() => removeDir(dir));
  const [lower, upper] = await estargzImage(dir, [
    [{ type: 'dir', name: 'app/' }, { type: 'file', name: 'app/old.txt', content: 'old\n' }, { type: 'file', name: 'keep.txt', content: 'kept\n' }],
    [{ type: 'dir', name: 'app/' }, { type: 'file', name: 'app/.wh..wh..opq' }, { type: 'file', name: 'app/new.txt', content: 'new\n' }],
  ]);
  await skopeo(['copy', '--retry-times', '0', '--dest-tls-verify=false', '--preserve-digests', `oci:${dir}`, `docker://${registry.host}/lazy/opaque:v1`]);
  const { proxy } = await setup(t, { estargz: { prefetch: false } });
  await fetchManifest(proxy, 'lazy/opaque');
  const image = (path: string) => get(`${proxy.url}/v2/lazy/opaque/_estargz/image/v1/files/${path}`);

  const hidden = await image('app/old.txt');
  t.equal(hidden.status, 404, 'a file under the opaque directory, from a lower layer, is not in the image');
  t.equal(errorCode(hidden.body), 'BLOB_UNKNOWN');
  const added = await image('app/new.txt');
  t.equal(added.status, 200);
  t.equal(added.body.toString(), 'new\n', 'the upper layer\'s own file in it is');
  t.equal(added.headers['x-file-layer'], upper!.digest);
  const kept = await image('keep.txt');
  t.equal(kept.body.toString(), 'kept\n', 'files outside the opaque directory still come from the lower layer');
  t.equal(kept.headers['x-file-layer'], lower!.digest);
  const inLower = await get(`${proxy.url}/v2/lazy/opaque/_estargz/${lower!.digest}/files/app/old.txt`);
  t.equal(inLower.body.toString(), 'old\n', 'the lower layer itself still has it');
});
