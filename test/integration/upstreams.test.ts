// Several upstreams in one instance (?ns=, path prefix, default), and blob redirects to a separate
// blob server that must never see our Authorization header.
import { createReadStream } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import { request, type Dispatcher } from 'undici';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startProxy } from '../helpers/proxy.js';
import { startRegistry, type Registry } from '../helpers/registry.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const work = await makeTempDir('pullthrough-up-');
t.teardown(() => removeDir(work));
const first = await makeImage({ layers: 2, layerBytes: 64 << 10, seed: 'first', dir: join(work, 'first') });
const second = await makeImage({ layers: 2, layerBytes: 64 << 10, seed: 'second', dir: join(work, 'second') });

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

/** Two open registries, each with team/app:v1: `first` on a, `second` on b. */
async function twoRegistries(t: Test): Promise<[Registry, Registry]> {
  const a = await startRegistry({ mode: 'open' });
  t.teardown(() => a.stop());
  const b = await startRegistry({ mode: 'open' });
  t.teardown(() => b.stop());
  await pushLayout(first.dir, `${a.host}/team/app:v1`);
  await pushLayout(second.dir, `${b.host}/team/app:v1`);
  return [a, b];
}

t.test('one instance, three routes: ?ns=, path prefix and the default upstream', async (t) => {
  const [a, b] = await twoRegistries(t);
  const proxy = await startProxy({
    configDoc: {
      upstreams: [
        { name: 'first.example', url: a.url },
        { name: 'second.example', url: b.url, aliases: ['two'] },
      ],
      defaultUpstream: 'first.example',
    },
  });
  t.teardown(() => proxy.stop());

  const viaDefault = await pullImage(`${proxy.host}/team/app:v1`, join(work, 'default'));
  t.same(viaDefault.allDigests, first.allDigests, 'bare name → default upstream');
  const viaPrefix = await pullImage(`${proxy.host}/second.example/team/app:v1`, join(work, 'prefix'));
  t.same(viaPrefix.allDigests, second.allDigests, 'path prefix → named upstream');
  const viaAlias = await pullImage(`${proxy.host}/two/team/app:v1`, join(work, 'alias'));
  t.same(viaAlias.allDigests, second.allDigests, 'alias prefix → named upstream');

  for (const [ns, image] of [['second.example', second], ['first.example', first], [b.host, second]] as const) {
    const res = await request(`${proxy.url}/v2/team/app/manifests/v1?ns=${ns}`, { headers: { accept: image.top.mediaType } });
    await res.body.dump();
    t.equal(res.statusCode, 200);
    t.equal(res.headers['docker-content-digest'], image.top.digest, `?ns=${ns} → its upstream`);
  }
  const unknown = await request(`${proxy.url}/v2/team/app/manifests/v1?ns=elsewhere.example`);
  t.equal(unknown.statusCode, 404);
  t.equal(((await unknown.body.json()) as { errors: { code: string }[] }).errors[0]!.code, 'NAME_UNKNOWN');
});

t.test('blob redirects are followed without our Authorization', async (t) => {
  const registry = await startRegistry({ mode: 'htpasswd' });
  t.teardown(() => registry.stop());
  await pushLayout(first.dir, `${registry.host}/team/app:v1`, { creds: registry.creds! });

  // the blob server: serves layout files, refuses any request that carries Authorization (as S3 does)
  const blobHits: { path: string; authorization: boolean }[] = [];
  const blobServer = createServer((req, res) => {
    blobHits.push({ path: req.url ?? '', authorization: req.headers.authorization !== undefined });
    if (req.headers.authorization !== undefined) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('only one auth mechanism allowed');
      return;
    }
    const hex = /\/([a-f0-9]{64})$/.exec(new URL(req.url ?? '/', 'http://x').pathname)?.[1];
    const file = join(first.dir, 'blobs', 'sha256', hex ?? 'none');
    stat(file).then(
      (s) => {
        res.writeHead(200, { 'content-length': s.size, 'content-type': 'application/octet-stream' });
        createReadStream(file).pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  const blobUrl = await listen(blobServer);
  t.teardown(() => new Promise<void>((r) => blobServer.close(() => r())));

  // the registry front: blob GETs answer 307 to the blob server with a signed-looking URL; the rest is forwarded
  const front = createServer((req: IncomingMessage, res: ServerResponse) => {
    const blob = /\/blobs\/sha256:([a-f0-9]{64})$/.exec(req.url ?? '');
    if (blob && req.method === 'GET' && req.headers.authorization) {
      res.writeHead(307, { location: `${blobUrl}/storage/${blob[1]}?X-Signature=abc` }).end();
      return;
    }
    const up = httpRequest(`${registry.url}${req.url}`, { method: req.method, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  const frontUrl = await listen(front);
  t.teardown(() => new Promise<void>((r) => front.close(() => r())));

  const proxy = await startProxy({
    configDoc: { upstreams: [{ name: 'up.example', url: frontUrl, username: '${U}', password: '${P}' }] },
    env: { U: registry.username!, P: registry.password! },
  });
  t.teardown(() => proxy.stop());
  const pulled = await pullImage(`${proxy.host}/team/app:v1`, join(work, 'redirect'));
  t.same(pulled.allDigests, first.allDigests, 'every digest matches');
  t.equal(blobHits.length, 3, 'config and both layers came from the blob server');
  t.notOk(blobHits.some((h) => h.authorization), 'no Authorization header reached the blob server');
});

t.test('failures before any byte are retried with backoff; a silent upstream times out', async (t) => {
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(first.dir, `${registry.host}/team/app:v1`);
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const proxy = await startProxy({
    configDoc: { upstreams: [{ name: 'up.example', url: hop.url }], retries: 2, timeouts: { headers: '500ms' }, cache: { tagTtl: '0s' } },
  });
  t.teardown(() => proxy.stop());
  const manifest = `${proxy.url}/v2/team/app/manifests/v1`;

  Object.assign(hop.faults, { down: false, status: 503, times: 1 });
  let res = await request(manifest, { headers: { accept: first.top.mediaType } });
  await res.body.dump();
  t.equal(res.statusCode, 200, 'a 503 is retried');
  t.equal(hop.count({ pathIncludes: '/manifests/v1' }), 2, 'one failed request, one retry');

  hop.reset();
  Object.assign(hop.faults, { down: true, times: 2 });
  const layer = first.images[0]!.layers[0]!;
  res = await request(`${proxy.url}/v2/team/app/blobs/${layer.digest}`);
  const body = Buffer.from(await res.body.arrayBuffer());
  t.equal(res.statusCode, 200, 'two dropped connections are retried');
  t.equal(body.length, layer.size, 'and the blob arrives whole');

  hop.reset();
  Object.assign(hop.faults, { down: false, status: 404 });
  res = await request(`${proxy.url}/v2/team/app/blobs/sha256:${'1'.repeat(64)}`);
  await res.body.dump();
  t.equal(res.statusCode, 404);
  t.equal(hop.log.length, 1, 'a 404 is not retried');

  hop.reset();
  Object.assign(hop.faults, { down: false, delayMs: 5_000 });
  const t0 = Date.now();
  res = await request(`${proxy.url}/v2/team/other/manifests/v1`);
  await res.body.dump();
  t.equal(res.statusCode, 503, 'an upstream that never answers → 503');
  t.ok(Date.now() - t0 < 4_500, `the headers timeout bounds the wait (${Date.now() - t0} ms for 3 attempts)`);
});

/** Tags the image at `repo:v1` in `registry` (pushed from `layout`) with each of `tags` too. */
async function addTags(registryUrl: string, repo: string, layout: typeof first, tags: readonly string[]): Promise<void> {
  const body = await readFile(join(layout.dir, 'blobs', 'sha256', layout.top.digest.slice('sha256:'.length)));
  for (const tag of tags) {
    const res = await request(`${registryUrl}/v2/${repo}/manifests/${tag}`, { method: 'PUT', headers: { 'content-type': layout.top.mediaType }, body });
    await res.body.dump();
    if (res.statusCode !== 201) throw new Error(`tagging ${repo}:${tag}: ${res.statusCode}`);
  }
}

/** Follows the proxy's Link headers from `path` to the last page; every tag seen, in order. */
async function allPages(proxyUrl: string, path: string): Promise<{ tags: string[]; pages: number }> {
  const tags: string[] = [];
  let next: string | undefined = path;
  let pages = 0;
  for (; next !== undefined && pages < 20; pages++) {
    const res: Dispatcher.ResponseData = await request(new URL(next, proxyUrl));
    const body = (await res.body.json()) as { tags: string[] };
    if (res.statusCode !== 200) throw new Error(`${next}: ${res.statusCode} ${JSON.stringify(body)}`);
    tags.push(...body.tags);
    next = /^<([^>]+)>;\s*rel="next"$/.exec(String(res.headers.link ?? ''))?.[1];
  }
  return { tags, pages };
}

t.test('tags/list pages with n and last, and the Link keeps the client on its upstream (?ns=)', async (t) => {
  const [a, b] = await twoRegistries(t);
  const aTags = ['v1', 'v2', 'v3', 'v4'];
  const bTags = ['a1', 'a2', 'a3', 'a4', 'a5', 'v1'];
  await addTags(a.url, 'team/app', first, aTags.slice(1));
  await addTags(b.url, 'team/app', second, bTags.filter((x) => x !== 'v1'));
  const proxy = await startProxy({
    configDoc: { upstreams: [{ name: 'first.example', url: a.url }, { name: 'second.example', url: b.url }], defaultUpstream: 'first.example' },
  });
  t.teardown(() => proxy.stop());

  const whole = await allPages(proxy.url, '/v2/team/app/tags/list');
  t.same(whole, { tags: aTags, pages: 1 }, 'without n: every tag in one page');
  // docker-registry 2.8 ignores n and last, so pullthrough pages its answer itself
  for (const [what, query, n, want] of [
    ['default upstream', '', 1, aTags],
    ['default upstream', '', 2, aTags],
    ['?ns=second.example', 'ns=second.example&', 2, bTags],
    [`?ns=${b.host} (percent-encoded)`, `ns=${encodeURIComponent(b.host)}&`, 1, bTags],
  ] as const) {
    const got = await allPages(proxy.url, `/v2/team/app/tags/list?${query}n=${n}`);
    t.same(got, { tags: want, pages: Math.ceil(want.length / n) }, `${what}, n=${n}: following Link gives every tag of that upstream once, in order`);
  }
  const prefixed = await allPages(proxy.url, '/v2/second.example/team/app/tags/list?n=4');
  t.same(prefixed, { tags: bTags, pages: 2 }, 'a path prefix stays in the Link');
  const mid = await request(`${proxy.url}/v2/team/app/tags/list?ns=second.example&n=2&last=a2`);
  t.same(await mid.body.json(), { name: 'team/app', tags: ['a3', 'a4'] }, 'last starts the page after that tag');
  t.match(String(mid.headers.link), /^<\/v2\/team\/app\/tags\/list\?[^>]*ns=second\.example[^>]*>; rel="next"$/, 'the Link carries ?ns=');
});

const SBOM = 'application/vnd.example.sbom.v1+json';
const SIG = 'application/vnd.example.signature.v1+json';

/**
 * The smallest registry with a referrers API (docker-registry 2.8 has none): GET /v2/ and
 * GET /v2/<name>/referrers/<digest>[?artifactType=], answering with an OCI index of `referrers`.
 * With `filters`, it applies artifactType itself and says so in OCI-Filters-Applied.
 */
async function referrersRegistry(t: Test, referrers: readonly { artifactType: string; digest: string }[], filters: boolean): Promise<string> {
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/v2/') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    if (!/^\/v2\/.+\/referrers\/sha256:[a-f0-9]{64}$/.test(url.pathname)) {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NAME_UNKNOWN","message":"not here"}]}');
      return;
    }
    const wanted = url.searchParams.get('artifactType');
    const kept = filters && wanted !== null ? referrers.filter((r) => r.artifactType === wanted) : referrers;
    const manifests = kept.map((r) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 512, ...r }));
    const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests });
    res.writeHead(200, {
      'content-type': 'application/vnd.oci.image.index.v1+json',
      ...(filters && wanted !== null ? { 'oci-filters-applied': 'artifactType' } : {}),
    });
    res.end(body);
  });
  const url = await listen(server);
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return url;
}

t.test('referrers: ?artifactType= is applied, whether or not the upstream filters', async (t) => {
  const referrers = [
    { artifactType: SBOM, digest: `sha256:${'a'.repeat(64)}` },
    { artifactType: SIG, digest: `sha256:${'b'.repeat(64)}` },
    { artifactType: SBOM, digest: `sha256:${'c'.repeat(64)}` },
  ];
  const upstreams = [
    { name: 'filters.example', url: await referrersRegistry(t, referrers, true) },
    { name: 'plain.example', url: await referrersRegistry(t, referrers, false) },
  ];
  const proxy = await startProxy({ configDoc: { upstreams, retries: 0 } });
  t.teardown(() => proxy.stop());
  const subject = `sha256:${'d'.repeat(64)}`;
  for (const { name } of upstreams) {
    const base = `${proxy.url}/v2/team/app/referrers/${subject}?ns=${name}`;
    const all = await request(base);
    const allBody = (await all.body.json()) as { manifests: { digest: string; artifactType: string }[] };
    t.equal(all.statusCode, 200);
    t.equal(all.headers['content-type'], 'application/vnd.oci.image.index.v1+json', `${name}: an OCI index`);
    t.same(allBody.manifests.map((m) => m.digest), referrers.map((r) => r.digest), `${name}: without a filter, every referrer`);
    t.equal(all.headers['oci-filters-applied'], undefined, `${name}: and no filter claimed`);

    const sboms = await request(`${base}&artifactType=${encodeURIComponent(SBOM)}`);
    const body = (await sboms.body.json()) as { mediaType: string; manifests: { digest: string; artifactType: string }[] };
    t.equal(body.mediaType, 'application/vnd.oci.image.index.v1+json');
    t.same(body.manifests.map((m) => [m.artifactType, m.digest]), referrers.filter((r) => r.artifactType === SBOM).map((r) => [r.artifactType, r.digest]), `${name}: only the SBOMs`);
    t.equal(sboms.headers['oci-filters-applied'], 'artifactType', `${name}: and the filter is claimed`);
  }
});

t.test('an upstream that goes silent mid-blob: the download resumes, or fails, within the body timeout', async (t) => {
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(first.dir, `${registry.host}/team/app:v1`);
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const proxy = await startProxy({ configDoc: { upstreams: [{ name: 'up.example', url: hop.url }], retries: 0, timeouts: { body: '500ms' } } });
  t.teardown(() => proxy.stop());
  const fetchBlob = async (digest: string) => {
    const t0 = Date.now();
    // the client's own bound only keeps a hanging proxy from hanging the test
    const res = await request(`${proxy.url}/v2/team/app/blobs/${digest}`, { signal: AbortSignal.timeout(20_000) });
    const body = await res.body.arrayBuffer().then((b) => Buffer.from(b), () => undefined);
    return { status: res.statusCode, body, ms: Date.now() - t0 };
  };
  const [once, always] = first.images[0]!.layers;
  const bytesOf = (d: string) => readFile(join(first.dir, 'blobs', 'sha256', d.slice('sha256:'.length)));

  Object.assign(hop.faults, { stallAfterBytes: once!.size >> 1, times: 1 });
  const resumed = await fetchBlob(once!.digest);
  t.ok(resumed.body?.equals(await bytesOf(once!.digest)), 'silent once: the client still gets the whole blob');
  t.ok(resumed.ms < 10_000, `in ${resumed.ms} ms with a 500 ms body timeout`);
  t.same(
    hop.log.map((e) => [e.range === undefined ? 'whole' : 'ranged', e.injected ?? []]),
    [['whole', ['stall']], ['ranged', []]],
    'the stalled GET was given up and resumed from where it stopped',
  );

  hop.reset();
  Object.assign(hop.faults, { stallAfterBytes: 1000 });
  const failed = await fetchBlob(always!.digest);
  t.equal(failed.status, 200, 'headers were on their way');
  t.ok(failed.body === undefined || failed.body.length < always!.size, `silent every time: an aborted response (${failed.body?.length ?? 'an error'} of ${always!.size} bytes)`);
  t.ok(failed.ms < 15_000, `in ${failed.ms} ms, not a hang`);
  hop.reset();
  const after = await fetchBlob(always!.digest);
  t.ok(after.body?.equals(await bytesOf(always!.digest)), 'a later fetch gets the whole blob');
  t.equal(hop.count({ method: 'GET', ranged: false }), 1, 'from the upstream: nothing was kept from the failed download');
});
