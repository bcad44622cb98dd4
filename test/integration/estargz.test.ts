// eStargz layers through pullthrough: lazy ranged reads fetch only the chunks they need, verified
// and kept in a sparse copy; the file API reads single files of layers and images; a full GET
// then completes the layer from what is already there. Upstream traffic is counted at a hop.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Client, request } from 'undici';
import { fixturesDir, tarExtract, unpackFixture, type Fixture } from '../helpers/estargz-fixtures.js';
import { startHop, type Hop } from '../helpers/hop.js';
import { skopeo } from '../helpers/skopeo.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

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

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

async function setup(t: Test, doc: Record<string, unknown> = {}): Promise<{ hop: Hop; proxy: Proxy }> {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const proxy = await startProxy({ configDoc: { upstreams: [{ name: 'up.test', url: hop.url }], ...doc } });
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

t.test('prefetch: the range before the landmark is fetched on first touch', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = big(esgz);
  await fetchManifest(proxy, 'lazy/esgz');
  await rangeGet(proxy, 'lazy/esgz', layer.digest, `bytes=${layer.size - 51}-${layer.size - 1}`);
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline && !hop.log.some((e) => e.range?.startsWith('bytes=0-') && e.status === 206 && e.bytes > 1_000_000)) {
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(hop.log.some((e) => e.range?.startsWith('bytes=0-')), 'a ranged fetch from the start of the layer (the prefetch range)');
  const before = hop.log.length;
  const head = await rangeGet(proxy, 'lazy/esgz', layer.digest, 'bytes=0-65535');
  t.same(head.body, (await readFile(layer.path)).subarray(0, 65536));
  t.equal(hop.log.length, before, 'reads inside the prefetch range need no upstream request');
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
