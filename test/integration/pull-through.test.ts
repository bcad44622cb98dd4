// skopeo pulls through pullthrough from a real docker-registry (open, htpasswd, token auth), with a
// counting hop between pullthrough and the registry so upstream traffic is counted independently.
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Client, request } from 'undici';
import { startHop, type Hop } from '../helpers/hop.js';
import { makeImage, makeMultiPlatformImage, pullImage, pushLayout, type ImageLayout } from '../helpers/images.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startRegistry, type Registry, type RegistryMode } from '../helpers/registry.js';
import { makeTempDir, removeDir, sleep, type Test } from '../helpers/util.js';

const BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256:' } as const;
/** The headers every blob answer carries (GET, 206, HEAD); content-length varies. */
const BLOB_HEADERS = (digest: string) => ({ 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'docker-content-digest': digest });
const blobHeaders = (h: Record<string, string | string[] | undefined>) =>
  Object.fromEntries(['content-type', 'accept-ranges', 'docker-content-digest', 'content-length'].map((k) => [k, h[k]]));

const work = await makeTempDir('pullthrough-it-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 3, layerBytes: 300 << 10, seed: 'it-single', dir: join(work, 'image') });
const multi = await makeMultiPlatformImage({ layers: 2, layerBytes: 200 << 10, seed: 'it-multi', dir: join(work, 'multi') });
const docker = await makeMultiPlatformImage({ layers: 2, layerBytes: 100 << 10, seed: 'it-docker', format: 'docker', dir: join(work, 'docker') });

interface Env {
  registry: Registry;
  hop: Hop;
  proxy: Proxy;
}

async function setup(t: Test, mode: RegistryMode, proxyDoc: Record<string, unknown> = {}, withCreds = true): Promise<Env> {
  const registry = await startRegistry({ mode });
  t.teardown(() => registry.stop());
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const upstream: Record<string, unknown> = { name: 'upstream.test', url: hop.url };
  if (withCreds && registry.username) {
    upstream.username = '${IT_USER}';
    upstream.password = '${IT_PASS}';
  }
  const proxy = await startProxy({
    configDoc: { upstreams: [upstream], retries: 0, ...proxyDoc },
    env: { IT_USER: registry.username ?? '', IT_PASS: registry.password ?? '' },
  });
  t.teardown(() => proxy.stop());
  return { registry, hop, proxy };
}

const auth = (r: Registry) => (r.creds ? { creds: r.creds } : {});
const blobDigests = (layout: ImageLayout): string[] => layout.images.flatMap((img) => [img.config.digest, ...img.layers.map((l) => l.digest)]);

for (const mode of ['open', 'htpasswd', 'token'] as const) {
  t.test(`${mode} upstream: skopeo pulls through pullthrough, second pull never touches upstream blobs`, async (t) => {
    const { registry, hop, proxy } = await setup(t, mode);
    await pushLayout(image.dir, `${registry.host}/team/app:v1`, auth(registry));
    await pushLayout(multi.dir, `${registry.host}/team/multi:v1`, { ...auth(registry), all: true });

    const first = await pullImage(`${proxy.host}/team/app:v1`, join(work, mode, 'a1'));
    t.same(first.allDigests, image.allDigests, 'every digest matches the upstream image');
    for (const d of blobDigests(image)) t.equal(hop.count({ ...BLOB_GET, pathIncludes: d }), 1, `${d.slice(0, 15)} fetched once`);

    hop.reset();
    const second = await pullImage(`${proxy.host}/team/app:v1`, join(work, mode, 'a2'));
    t.same(second.allDigests, image.allDigests, 'second pull has the same digests');
    t.equal(hop.count(BLOB_GET), 0, 'second pull: zero upstream blob requests');
    t.equal(hop.count({ pathIncludes: '/manifests/' }), 0, 'second pull within the tag TTL: zero manifest requests');

    const all = await pullImage(`${proxy.host}/team/multi:v1`, join(work, mode, 'm1'), { all: true });
    t.same(all.index, multi.index, 'index descriptor matches');
    t.same(all.allDigests, multi.allDigests, 'every digest of the multi-platform index matches');
    t.same(all.images.map((i) => i.platform.architecture).sort(), ['amd64', 'arm64']);
    hop.reset();
    const allAgain = await pullImage(`${proxy.host}/team/multi:v1`, join(work, mode, 'm2'), { all: true });
    t.same(allAgain.allDigests, multi.allDigests);
    t.equal(hop.count(BLOB_GET), 0, 'second --all pull: zero upstream blob requests');
    if (mode === 'token') {
      const tokens = registry.tokenServer!.requests.length;
      t.ok(tokens >= 1 && tokens <= 6, `tokens are cached per scope (${tokens} token requests for 2 repositories)`);
      t.ok(registry.tokenServer!.requests.every((r) => r.authorized), 'every token request carried our credentials');
    }
  });
}

t.test('Docker schema 2 manifests and manifest lists pass through unchanged', async (t) => {
  const { registry, proxy } = await setup(t, 'open');
  await pushLayout(docker.dir, `${registry.host}/team/docker:v1`, { all: true });
  const res = await request(`${proxy.url}/v2/team/docker/manifests/v1`, { headers: { accept: 'application/vnd.docker.distribution.manifest.list.v2+json' } });
  const body = Buffer.from(await res.body.arrayBuffer());
  t.equal(res.statusCode, 200);
  t.equal(res.headers['content-type'], 'application/vnd.docker.distribution.manifest.list.v2+json');
  t.equal(res.headers['docker-content-digest'], docker.index!.digest, 'digest of the manifest list');
  t.equal(`sha256:${createHash('sha256').update(body).digest('hex')}`, docker.index!.digest, 'bytes are the upstream bytes');
  // a client that only takes schema 2 gets the upstream's pick for that Accept: the linux/amd64 image
  const v2 = await request(`${proxy.url}/v2/team/docker/manifests/v1`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  await v2.body.dump();
  t.equal(v2.statusCode, 200);
  t.equal(v2.headers['content-type'], 'application/vnd.docker.distribution.manifest.v2+json', 'Accept is honoured');
  t.equal(v2.headers['docker-content-digest'], docker.images.find((i) => i.platform.architecture === 'amd64')!.manifest.digest);
  const pulled = await pullImage(`${proxy.host}/team/docker:v1`, join(work, 'docker-pull'), { all: true, transport: 'dir' });
  t.same(pulled.allDigests, docker.allDigests, 'every digest matches');
});

t.test('a client that only takes schema 2 gets its pick cached like any tag: fresh within the TTL, stale when the upstream is down', async (t) => {
  const { registry, hop, proxy } = await setup(t, 'open', { cache: { tagTtl: '1s' } });
  await pushLayout(docker.dir, `${registry.host}/team/docker:v1`, { all: true });
  const amd64 = docker.images.find((i) => i.platform.architecture === 'amd64')!.manifest.digest;
  const schema2 = async () => {
    const res = await request(`${proxy.url}/v2/team/docker/manifests/v1`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
    await res.body.dump();
    return res;
  };
  t.equal((await schema2()).headers['docker-content-digest'], amd64, 'the linux/amd64 image');
  hop.reset();
  const again = await schema2();
  t.equal(again.headers['docker-content-digest'], amd64);
  t.equal(hop.log.length, 0, 'within the tag TTL: zero upstream requests');

  await sleep(1_100);
  Object.assign(hop.faults, { down: true });
  const stale = await schema2();
  t.equal(stale.statusCode, 200, 'the upstream down once the TTL passed: still served');
  t.equal(stale.headers['docker-content-digest'], amd64, 'the cached pick');
  t.match(String(stale.headers.warning), /^110 /, 'marked stale');
});

t.test('HTTP surface: headers, HEAD, Accept, Range, errors', async (t) => {
  const { registry, hop, proxy } = await setup(t, 'open');
  await pushLayout(multi.dir, `${registry.host}/team/multi:v1`, { all: true });
  const amd64 = multi.images.find((i) => i.platform.architecture === 'amd64')!;
  const layer = amd64.layers[0]!;

  for (const method of ['GET', 'HEAD'] as const) {
    const base = await request(`${proxy.url}/v2/`, { method });
    const text = await base.body.text();
    t.equal(base.statusCode, 200, `${method} /v2/ → 200`);
    t.equal(base.headers['docker-distribution-api-version'], 'registry/2.0', `${method} /v2/: the API-version header clients probe for`);
    if (method === 'GET') t.same(JSON.parse(text), {}, 'GET /v2/: body {}');
  }

  const m = await request(`${proxy.url}/v2/team/multi/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } });
  const mBody = Buffer.from(await m.body.arrayBuffer());
  t.equal(m.statusCode, 200);
  t.equal(m.headers['docker-distribution-api-version'], 'registry/2.0');
  t.equal(m.headers['content-type'], 'application/vnd.oci.image.index.v1+json');
  t.equal(m.headers['docker-content-digest'], multi.index!.digest);
  t.equal(Number(m.headers['content-length']), mBody.length);

  const head = await request(`${proxy.url}/v2/team/multi/manifests/v1`, { method: 'HEAD' });
  await head.body.dump();
  t.equal(head.statusCode, 200);
  t.equal(head.headers['docker-content-digest'], multi.index!.digest, 'HEAD gives the digest');
  t.equal(Number(head.headers['content-length']), mBody.length, 'HEAD gives the length');

  // a client that takes no index type: the upstream's answer for that Accept (docker-registry has no
  // platform fallback for OCI indexes, so it is a 404), not the cached index
  const only = await request(`${proxy.url}/v2/team/multi/manifests/v1`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
  t.equal(only.statusCode, 404, 'an index is never served to a client that does not accept indexes');
  t.equal(((await only.body.json()) as { errors: { code: string }[] }).errors[0]!.code, 'MANIFEST_UNKNOWN');

  const byDigest = await request(`${proxy.url}/v2/team/multi/manifests/${amd64.manifest.digest}`);
  await byDigest.body.dump();
  t.equal(byDigest.statusCode, 200);
  t.equal(byDigest.headers['docker-content-digest'], amd64.manifest.digest);

  // Range on an uncached blob, then on the cached one
  const full = await readFile(join(multi.dir, 'blobs', 'sha256', layer.digest.slice(7)));
  for (const when of ['cold', 'warm']) {
    const r = await request(`${proxy.url}/v2/team/multi/blobs/${layer.digest}`, { headers: { range: 'bytes=10-99' } });
    const part = Buffer.from(await r.body.arrayBuffer());
    t.equal(r.statusCode, 206, `${when}: 206`);
    t.equal(r.headers['content-range'], `bytes 10-99/${layer.size}`, `${when}: Content-Range`);
    t.same(part, full.subarray(10, 100), `${when}: exactly the requested bytes`);
    t.same(blobHeaders(r.headers), { ...BLOB_HEADERS(layer.digest), 'content-length': '90' }, `${when}: the blob headers`);
    await new Promise((r) => setTimeout(r, 200)); // let the fill finish
  }
  const suffix = await request(`${proxy.url}/v2/team/multi/blobs/${layer.digest}`, { headers: { range: 'bytes=-16' } });
  t.same(Buffer.from(await suffix.body.arrayBuffer()), full.subarray(full.length - 16), 'suffix range');
  const bad = await request(`${proxy.url}/v2/team/multi/blobs/${layer.digest}`, { headers: { range: `bytes=${layer.size}-` } });
  t.equal(bad.statusCode, 416);
  t.equal(bad.headers['content-range'], `bytes */${layer.size}`);
  t.equal(((await bad.body.json()) as { errors: { code: string }[] }).errors[0]!.code, 'RANGE_INVALID');

  const blob = await request(`${proxy.url}/v2/team/multi/blobs/${layer.digest}`);
  t.same(Buffer.from(await blob.body.arrayBuffer()), full, 'whole blob');
  t.equal(blob.headers['accept-ranges'], 'bytes');
  t.equal(blob.headers['docker-content-digest'], layer.digest);
  t.equal(Number(blob.headers['content-length']), layer.size);
  t.equal(hop.count({ ...BLOB_GET, pathIncludes: layer.digest }), 1, 'the layer was fetched upstream once for all of this');

  const blobHead = await request(`${proxy.url}/v2/team/multi/blobs/${layer.digest}`, { method: 'HEAD' });
  await blobHead.body.dump();
  t.equal(blobHead.statusCode, 200);
  t.same(blobHeaders(blobHead.headers), { ...BLOB_HEADERS(layer.digest), 'content-length': String(layer.size) }, 'blob HEAD: the blob headers, with the size');

  const tags = await request(`${proxy.url}/v2/team/multi/tags/list`);
  t.same(await tags.body.json(), { name: 'team/multi', tags: ['v1'] });
  const refs = await request(`${proxy.url}/v2/team/multi/referrers/${multi.index!.digest}`);
  t.equal(refs.headers['content-type'], 'application/vnd.oci.image.index.v1+json');
  t.same(await refs.body.json(), { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }, 'empty index without a referrers API');

  const cases: [string, string, number, string, Record<string, string>?][] = [
    ['GET', '/v2/team/multi/manifests/nope', 404, 'MANIFEST_UNKNOWN'],
    ['GET', `/v2/team/multi/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
    ['GET', '/v2/Team/multi/manifests/v1', 400, 'NAME_INVALID'],
    ['GET', '/v2/team/../etc/manifests/v1', 400, 'NAME_INVALID'],
    ['GET', '/v2/team/multi/manifests/-v1', 404, 'MANIFEST_UNKNOWN'],
    ['GET', '/v2/team/multi/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/team/multi/blobs/sha256:..%2f..%2fetc%2fpasswd', 400, 'DIGEST_INVALID'],
    ['PUT', '/v2/team/multi/manifests/v1', 405, 'UNSUPPORTED', { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }],
    ['POST', '/v2/team/multi/blobs/uploads/', 405, 'UNSUPPORTED'],
    ['PATCH', '/v2/team/multi/blobs/uploads/abc', 405, 'UNSUPPORTED'],
    ['DELETE', `/v2/team/multi/manifests/${multi.index!.digest}`, 405, 'UNSUPPORTED'],
    ['GET', '/v2/nosuch.example/x/manifests/v1?ns=nosuch.example', 404, 'NAME_UNKNOWN'],
    ['GET', '/v2/%zz/manifests/v1', 400, 'NAME_INVALID'],
    ['GET', '/v2/team/multi/manifests/%zz', 400, 'NAME_INVALID'],
    ['HEAD', '/v2/team/multi/blobs/%zz', 400, ''],
    ['GET', `/v2/${'a/'.repeat(1500)}x/manifests/v1`, 400, 'NAME_INVALID'],
    ['PUT', '/v2/team/multi/blobs/uploads/abc?digest=sha256:1', 405, 'UNSUPPORTED', { 'content-type': 'application/octet-stream' }],
    ['DELETE', `/v2/team/multi/blobs/${layer.digest}`, 405, 'UNSUPPORTED'],
    ['GET', '/nope', 404, 'NAME_UNKNOWN'],
  ];
  const raw = new Client(proxy.url);
  t.teardown(() => raw.close());
  for (const [method, path, status, code, headers] of cases) {
    // a Client sends `path` as written (a URL would resolve "..")
    const r = await raw.request({ path, method: method as 'GET', headers, body: method === 'PUT' ? '{}' : undefined });
    const what = `${method} ${path.slice(0, 60)}`;
    t.equal(r.statusCode, status, `${what} → ${status}`);
    const text = await r.body.text();
    if (method === 'HEAD') t.equal(text, '', `${what}: no body`);
    else t.equal((JSON.parse(text) as { errors?: { code: string }[] }).errors?.[0]?.code, code, `${what} → ${code}`);
    t.equal(r.headers['docker-distribution-api-version'], 'registry/2.0', `${what}: the API-version header`);
  }
});

t.test('tags are revalidated with HEAD once the TTL passed; a GET only when the digest changed', async (t) => {
  const { registry, hop, proxy } = await setup(t, 'open', { cache: { tagTtl: '0s' } });
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  await pullImage(`${proxy.host}/team/app:v1`, join(work, 'ttl', '1'));
  // a manifest by digest is immutable: the cache answers it whatever the tag TTL says
  hop.reset();
  for (const method of ['GET', 'HEAD'] as const) {
    const res = await request(`${proxy.url}/v2/team/app/manifests/${image.top.digest}`, { method, headers: { accept: image.top.mediaType } });
    await res.body.dump();
    t.equal(res.statusCode, 200, `${method} by digest → 200`);
    t.equal(res.headers['docker-content-digest'], image.top.digest);
  }
  t.equal(hop.log.length, 0, 'by digest, past the tag TTL: zero upstream requests');
  hop.reset();
  await pullImage(`${proxy.host}/team/app:v1`, join(work, 'ttl', '2'));
  t.ok(hop.count({ method: 'HEAD', pathIncludes: '/manifests/v1' }) >= 1, 'revalidated with HEAD');
  t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/' }), 0, 'no manifest GET when the digest is unchanged');

  // the tag moves upstream: the next pull fetches the new manifest
  await pushLayout(multi.dir, `${registry.host}/team/app:v1`, { all: true });
  hop.reset();
  const moved = await pullImage(`${proxy.host}/team/app:v1`, join(work, 'ttl', '3'), { all: true });
  t.same(moved.allDigests, multi.allDigests, 'the moved tag is served');
  t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/v1' }), 1, 'one GET for the changed tag');
});

t.test('upstream down, rate-limited or corrupt', async (t) => {
  const { registry, hop, proxy } = await setup(t, 'open', { cache: { tagTtl: '0s' } });
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  await pullImage(`${proxy.host}/team/app:v1`, join(work, 'down', '1'));

  hop.faults.down = true;
  const stale = await pullImage(`${proxy.host}/team/app:v1`, join(work, 'down', '2'));
  t.same(stale.allDigests, image.allDigests, 'a cached tag still pulls with the upstream down');
  const m = await request(`${proxy.url}/v2/team/app/manifests/v1`);
  await m.body.dump();
  t.equal(m.statusCode, 200);
  t.match(String(m.headers.warning), /110/, 'served stale, and says so');

  const cold = await request(`${proxy.url}/v2/team/other/manifests/v1`);
  t.equal(cold.statusCode, 503, 'nothing cached + upstream down → 503');
  t.equal(((await cold.body.json()) as { errors: { code: string }[] }).errors[0]!.code, 'UNAVAILABLE');

  hop.faults.down = false;
  hop.faults.status = 429;
  hop.faults.retryAfter = '42';
  const limited = await request(`${proxy.url}/v2/team/other/manifests/v1`);
  t.equal(limited.statusCode, 429, 'upstream 429 with nothing cached → 429');
  t.equal(limited.headers['retry-after'], '42', 'Retry-After passed through');
  t.equal(((await limited.body.json()) as { errors: { code: string }[] }).errors[0]!.code, 'TOOMANYREQUESTS');
  hop.faults.status = undefined;

  // corrupt one byte of a layer in the registry's own storage: the registry serves it as is
  const victim = image.images[0]!.layers[1]!;
  const dataFile = join(registry.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', victim.digest.slice(7, 9), victim.digest.slice(7), 'data');
  const bytes = await readFile(dataFile);
  const mid = bytes.length >> 1;
  bytes[mid] = bytes[mid]! ^ 0xff;
  await writeFile(dataFile, bytes);
  const fresh = await startProxy({ configDoc: { upstreams: [{ name: 'upstream.test', url: hop.url }], retries: 0 } });
  t.teardown(() => fresh.stop());
  const res = await request(`${fresh.url}/v2/team/app/blobs/${victim.digest}`);
  t.equal(res.statusCode, 200, 'headers were already on their way');
  const got = await res.body.arrayBuffer().then(
    (b) => ({ ok: true as const, length: b.byteLength }),
    (e: Error) => ({ ok: false as const, error: e.message }),
  );
  t.notOk(got.ok && got.length === victim.size, 'the client never receives a complete-looking corrupt blob');
  const again = await request(`${fresh.url}/v2/team/app/blobs/${victim.digest}`, { method: 'HEAD' });
  await again.body.dump();
  hop.faults.down = true;
  const afterDown = await request(`${fresh.url}/v2/team/app/blobs/${victim.digest}`);
  await afterDown.body.dump();
  t.equal(afterDown.statusCode, 503, 'nothing was cached from the corrupt download');
});

t.test('tag and manifest metadata survive a restart; cached content pulls with the upstream gone', async (t) => {
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  const cacheDir = await makeTempDir('pullthrough-restart-');
  t.teardown(() => removeDir(cacheDir));
  const configDoc = { upstreams: [{ name: 'upstream.test', url: hop.url }], retries: 0, cache: { tagTtl: '1h' } };
  const first = await startProxy({ configDoc, cacheDir });
  await pullImage(`${first.host}/team/app:v1`, join(work, 'restart', '1'));
  await first.stop();

  hop.faults.down = true;
  hop.reset();
  hop.faults.down = true;
  const second = await startProxy({ configDoc, cacheDir });
  t.teardown(() => second.stop());
  const pulled = await pullImage(`${second.host}/team/app:v1`, join(work, 'restart', '2'));
  t.same(pulled.allDigests, image.allDigests, 'pulled from the cache alone after a restart');
  t.equal(hop.log.length, 0, 'the upstream saw no request');
});

t.test('an upstream that refuses our credentials gives DENIED, never 401', async (t) => {
  const { registry, proxy } = await setup(t, 'htpasswd', {}, false);
  await pushLayout(image.dir, `${registry.host}/team/app:v1`, auth(registry));
  const res = await request(`${proxy.url}/v2/team/app/manifests/v1`);
  t.equal(res.statusCode, 403);
  const body = (await res.body.json()) as { errors: { code: string; message: string }[] };
  t.equal(body.errors[0]!.code, 'DENIED');
  t.match(body.errors[0]!.message, /upstream\.test/, 'the message names the upstream');
});
