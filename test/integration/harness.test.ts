// Proves the integration helpers work, directly against docker-registry (no
// proxy): push with skopeo, pull back through a Hop, compare every digest.
import { access } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startHop } from '../helpers/hop.js';
import type { Hop } from '../helpers/hop.js';
import { makeImage, makeMultiPlatformImage, pullImage, pushLayout } from '../helpers/images.js';
import type { ImageLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import type { Registry, RegistryMode } from '../helpers/registry.js';
import { createSigningKey, signJwt } from '../helpers/token-server.js';
import { makeTempDir, removeDir, waitFor, type Test } from '../helpers/util.js';

const BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256:', status: 200 } as const;

const work = await makeTempDir('pullthrough-harness-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 3, layerBytes: 256 << 10, seed: 'harness', dir: join(work, 'image') });
const multi = await makeMultiPlatformImage({ layers: 2, layerBytes: 128 << 10, seed: 'harness', dir: join(work, 'multi') });

async function setup(t: Test, mode: RegistryMode): Promise<{ registry: Registry; hop: Hop }> {
  const registry = await startRegistry({ mode });
  t.teardown(() => registry.stop());
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  return { registry, hop };
}

/** Blob digests (configs + layers) a full pull must fetch. */
const blobDigests = (layout: ImageLayout): string[] =>
  layout.images.flatMap((img) => [img.config.digest, ...img.layers.map((l) => l.digest)]);

for (const mode of ['open', 'htpasswd', 'token'] as const) {
  t.test(`${mode} registry: push, then pull through a hop`, async (t) => {
    const { registry, hop } = await setup(t, mode);
    const creds = registry.creds;
    t.equal(creds === undefined, mode === 'open', 'credentials exist unless open');
    const auth = creds ? { creds } : {};

    await pushLayout(image.dir, `${registry.host}/team/app:v1`, auth);
    await pushLayout(multi.dir, `${registry.host}/team/multi:v1`, { ...auth, all: true });

    const single = await pullImage(`${hop.host}/team/app:v1`, join(work, mode, 'app'), auth);
    t.same(single.top, image.top, 'manifest descriptor matches the built one');
    t.same(single.allDigests, image.allDigests, 'every digest of the single image matches');
    t.same(single.images[0]?.platform, { os: 'linux', architecture: 'amd64' });
    t.equal(hop.count(BLOB_GET), 4, 'config + 3 layers fetched through the hop');
    for (const digest of blobDigests(image)) {
      t.equal(hop.count({ ...BLOB_GET, pathIncludes: digest }), 1, `blob ${digest.slice(0, 19)} fetched once`);
    }
    t.ok(hop.count({ method: 'GET', pathIncludes: '/manifests/v1' }) >= 1, 'manifest fetched through the hop');

    hop.reset();
    const all = await pullImage(`${hop.host}/team/multi:v1`, join(work, mode, 'multi'), { ...auth, all: true });
    t.same(all.index, multi.index, 'index descriptor matches');
    t.same(all.allDigests, multi.allDigests, 'every digest of the multi-platform image matches');
    t.same(all.images.map((i) => i.platform.architecture), ['amd64', 'arm64']);
    t.equal(hop.count(BLOB_GET), blobDigests(multi).length, '2 configs + 4 layers fetched through the hop');

    hop.reset();
    const arm = await pullImage(`${hop.host}/team/multi:v1`, join(work, mode, 'arm'), {
      ...auth,
      platform: { os: 'linux', architecture: 'arm64' },
    });
    t.same(arm.top, multi.images[1]?.manifest, 'platform selection picks the arm64 manifest');
    t.equal(hop.count(BLOB_GET), 3, 'arm64 config + 2 layers only');

    if (mode !== 'open') {
      await t.rejects(pullImage(`${hop.host}/team/app:v1`, join(work, mode, 'anon')), 'anonymous pull is refused');
    }
    if (mode === 'token') {
      const requests = registry.tokenServer?.requests ?? [];
      t.ok(requests.some((r) => r.authorized && r.scope.includes('repository:team/app:pull')), 'token issued for pull');
      t.ok(requests.some((r) => r.authorized && r.scope.includes('push')), 'token issued for push');
      t.ok(requests.some((r) => !r.authorized), 'anonymous token request recorded');
    }
  });
}

t.test('docker v2s2 manifest and manifest list round-trip', async (t) => {
  const { registry, hop } = await setup(t, 'open');
  const dimage = await makeImage({ layers: 2, layerBytes: 64 << 10, format: 'docker', dir: join(work, 'dimage') });
  const dlist = await makeMultiPlatformImage({ layers: 1, layerBytes: 64 << 10, format: 'docker', dir: join(work, 'dlist') });
  t.equal(dlist.top.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
  await pushLayout(dimage.dir, `${registry.host}/docker/app:v1`);
  await pushLayout(dlist.dir, `${registry.host}/docker/list:v1`, { all: true });

  const single = await pullImage(`${hop.host}/docker/app:v1`, join(work, 'docker-app'));
  t.same(single.top, dimage.top, 'Docker manifest kept as is');
  t.same(single.allDigests, dimage.allDigests);
  // An OCI layout cannot hold a Docker manifest list unconverted, hence 'dir'.
  const list = await pullImage(`${hop.host}/docker/list:v1`, join(work, 'docker-list'), { all: true, transport: 'dir' });
  t.same(list.index, dlist.index, 'Docker manifest list kept as is');
  t.same(list.allDigests, dlist.allDigests);

  await pushLayout(image.dir, `${registry.host}/docker/converted:v1`, { format: 'v2s2' });
  const converted = await pullImage(`${registry.host}/docker/converted:v1`, join(work, 'converted'));
  t.equal(converted.top.mediaType, 'application/vnd.docker.distribution.manifest.v2+json', 'format: v2s2 converts');
  t.same(converted.images[0]?.layers.map((l) => l.digest), image.images[0]?.layers.map((l) => l.digest));
});

t.test('token variants: kid header, RS256, untrusted key', async (t) => {
  const registry = await startRegistry({ mode: 'token', token: { keyHeader: 'kid', alg: 'RS256' } });
  t.teardown(() => registry.stop());
  const ts = registry.tokenServer;
  if (!ts) throw new Error('token mode without token server');
  const basic = `Basic ${Buffer.from(registry.creds ?? '').toString('base64')}`;
  const tokenRes = await fetch(`${ts.realm}?service=${ts.service}&scope=repository:team/app:pull`, {
    headers: { authorization: basic },
  });
  const body = (await tokenRes.json()) as { token: string; access_token: string; expires_in: number; issued_at: string };
  t.equal(body.access_token, body.token);
  t.equal(body.expires_in, 300);
  const header = JSON.parse(Buffer.from(body.token.split('.')[0] ?? '', 'base64url').toString()) as Record<string, unknown>;
  t.match(header, { alg: 'RS256', kid: /^[A-Z2-7]{4}(:[A-Z2-7]{4}){11}$/ });

  const tags = (token: string): Promise<number> =>
    fetch(`${registry.url}/v2/team/app/tags/list`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
  t.equal(await tags(body.token), 404, 'kid/RS256 token accepted (repository just does not exist)');

  const rogue = await createSigningKey(work, 'RS256');
  const now = Math.floor(Date.now() / 1000);
  const claims = { iss: ts.issuer, sub: 'x', aud: ts.service, exp: now + 60, nbf: now, iat: now, jti: 'j',
    access: [{ type: 'repository', name: 'team/app', actions: ['pull'] }] };
  t.equal(await tags(signJwt(rogue, 'x5c', claims)), 401, 'token from an untrusted key is refused');
  t.equal(await tags(signJwt({ ...rogue, kid: ts.options.key.kid }, 'kid', claims)), 401, 'forged kid is refused');

  const anon = await fetch(`${ts.realm}?service=${ts.service}&scope=repository:team/app:pull`);
  const anonToken = ((await anon.json()) as { token: string }).token;
  t.equal(await tags(anonToken), 401, 'anonymous token carries no access');

  ts.options.anonymous = 'reject';
  t.equal((await fetch(`${ts.realm}?service=${ts.service}`)).status, 401, "anonymous: 'reject' answers 401");
  const wrong = await fetch(ts.realm, { headers: { authorization: `Basic ${Buffer.from('a:b').toString('base64')}` } });
  t.equal(wrong.status, 401, 'wrong credentials answer 401');
  await ts.restart();
  t.equal((await fetch(ts.realm, { headers: { authorization: basic } })).status, 200, 'restarts on the same port');
});

t.test('distribution pull-through mode against a token upstream', async (t) => {
  const { registry: upstream, hop } = await setup(t, 'token');
  await pushLayout(image.dir, `${upstream.host}/library/app:v1`, { creds: upstream.creds ?? '' });
  const mirror = await startRegistry({
    mode: 'open',
    proxyRemoteUrl: hop.url,
    ...(upstream.username !== undefined ? { proxyUsername: upstream.username } : {}),
    ...(upstream.password !== undefined ? { proxyPassword: upstream.password } : {}),
  });
  t.teardown(() => mirror.stop());
  const first = await pullImage(`${mirror.host}/library/app:v1`, join(work, 'mirror-1'));
  t.same(first.allDigests, image.allDigests, 'pulled through distribution proxy');
  for (const digest of blobDigests(image)) {
    // distribution 2.8.2 GETs a cold blob twice upstream: once to serve it, once to store it.
    t.ok(hop.count({ ...BLOB_GET, pathIncludes: digest }) >= 1, `mirror fetched ${digest.slice(0, 19)} upstream`);
  }
  // The store happens in the background; wait until every blob landed in the mirror's storage.
  const stored = (d: string): string =>
    join(mirror.dir, 'data/docker/registry/v2/blobs/sha256', d.slice(7, 9), d.slice(7), 'data');
  await waitFor(async () => (await Promise.all(blobDigests(image).map((d) => access(stored(d)).then(() => true)))).every(Boolean), {
    timeoutMs: 10_000,
    what: 'mirror to store blobs',
  });
  hop.reset();
  const second = await pullImage(`${mirror.host}/library/app:v1`, join(work, 'mirror-2'));
  t.same(second.allDigests, image.allDigests);
  t.equal(hop.count(BLOB_GET), 0, 'second pull served from the mirror cache');
});

t.test('hop faults', async (t) => {
  const { hop } = await setup(t, 'open');
  await pushLayout(image.dir, `${hop.host}/team/app:v1`);
  t.ok(hop.count({ method: 'PUT', pathIncludes: '/manifests/v1', status: 201 }) === 1, 'push works through the hop');
  hop.reset();
  const layer = image.images[0]?.layers[0];
  if (!layer) throw new Error('no layer');
  const blobUrl = `${hop.url}/v2/team/app/blobs/${layer.digest}`;

  hop.faults.status = 503;
  hop.faults.retryAfter = '7';
  const unavailable = await fetch(`${hop.url}/v2/`);
  t.equal(unavailable.status, 503);
  t.equal(unavailable.headers.get('retry-after'), '7');
  await unavailable.arrayBuffer();

  hop.reset();
  hop.faults.resetAfterBytes = 1000;
  const cut = await fetch(blobUrl);
  t.equal(cut.status, 200);
  t.equal(cut.headers.get('content-length'), String(layer.size), 'headers announce the full body');
  await t.rejects(cut.arrayBuffer(), 'body is cut short');
  t.equal(hop.log[0]?.bytes, 1000);

  hop.reset();
  hop.faults.down = true;
  await t.rejects(fetch(`${hop.url}/v2/`), 'connection dropped while down');

  hop.reset();
  const whole = await fetch(blobUrl);
  t.equal((await whole.arrayBuffer()).byteLength, layer.size, 'full blob after reset');
  t.same(hop.log, [{ method: 'GET', path: `/v2/team/app/blobs/${layer.digest}`, status: 200, bytes: layer.size }]);
});
