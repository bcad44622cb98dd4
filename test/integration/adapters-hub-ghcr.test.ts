// Docker Hub and ghcr.io adapters against docker-registry stand-ins with token auth: a Docker
// Hub-style token service (library/ rule, docker.io names, rate-limit headers, 429), and a
// ghcr-style front whose blob redirects go to short-lived signed URLs on a separate blob server.
// Every proxy runs with a captured trace-level log that is checked for the secrets at the end.
import { join } from 'node:path';
import t from 'tap';
import { startRedirectFront } from '../helpers/blob-redirect.js';
import { expectNoSecrets, LeakWatch } from '../helpers/captured-proxy.js';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';


const work = await makeTempDir('pullthrough-adapters-hub-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 2, layerBytes: 96 << 10, seed: 'adapters-hub', dir: join(work, 'image') });
const blobFile = (hex: string) => join(image.dir, 'blobs', 'sha256', hex);

const watch = new LeakWatch();
const get = (url: string, headers?: Record<string, string>) => watch.get(url, headers);

// Docker Hub stand-in: docker-registry with a token service that gives anonymous pull tokens and
// full ones to a username + access token, as auth.docker.io does.
const HUB_PASSWORD = SECRETS.dockerHubToken;
const hub = await startRegistry({ mode: 'token', token: { anonymous: 'pull' }, password: HUB_PASSWORD });
t.teardown(() => hub.stop());
await pushLayout(image.dir, `${hub.host}/library/alpine:3.20`, { creds: hub.creds! });
const hubHop = await startHop(hub.url);
t.teardown(() => hubHop.close());

// ghcr stand-in: token service (anonymous pull; a token as password with any username), and a
// front redirecting blobs to signed URLs, the first of each already expired.
const GHCR_TOKEN = SECRETS.ghcrToken;
const ghcr = await startRegistry({ mode: 'token', token: { anonymous: 'pull' }, password: SECRETS.registryPassword });
t.teardown(() => ghcr.stop());
await pushLayout(image.dir, `${ghcr.host}/octo-org/app:v1`, { creds: ghcr.creds! });
ghcr.tokenServer!.options.verifyCredentials = (_user, password) => password === GHCR_TOKEN;
const ghcrFront = await startRedirectFront({ target: ghcr.url, style: 'ghcr', blobFile, expireFirst: true });
t.teardown(() => ghcrFront.close());

t.test('Docker Hub, anonymous: library/ rule, docker.io names, anonymous tokens', async (t) => {
  hub.tokenServer!.requests.length = 0;
  const p = await watch.proxy(t, { configDoc: { upstreams: [{ type: 'dockerhub', url: hubHop.url }] } });
  const pulled = await pullImage(`${p.host}/alpine:3.20`, join(work, 'hub-anon'));
  t.same(pulled.allDigests, image.allDigests, '`alpine` is library/alpine');
  for (const path of ['docker.io/alpine', 'docker.io/library/alpine', 'index.docker.io/library/alpine', 'registry-1.docker.io/alpine']) {
    const r = await get(`${p.url}/v2/${path}/manifests/3.20`);
    t.equal(r.status, 200, `${path} reaches Docker Hub`);
    t.equal(r.headers['docker-content-digest'], image.top.digest);
  }
  const ns = await get(`${p.url}/v2/alpine/manifests/3.20?ns=docker.io`);
  t.equal(ns.status, 200, '?ns=docker.io');
  const tokens = hub.tokenServer!.requests;
  t.ok(tokens.length >= 1, 'tokens from the token service');
  t.ok(tokens.every((r) => r.user === undefined), 'anonymous token requests: no credentials configured, none sent');
  t.ok(tokens.every((r) => r.scope === 'repository:library/alpine:pull'), 'scoped to library/alpine');
});

t.test('Docker Hub with REGISTRY_USERNAME / REGISTRY_PASSWORD (an access token)', async (t) => {
  hub.tokenServer!.requests.length = 0;
  // no credentials in the config: a Docker Hub upstream takes them from the environment
  const p = await watch.proxy(t, {
    configDoc: { upstreams: [{ type: 'dockerhub', url: hubHop.url }] },
    env: { REGISTRY_USERNAME: hub.username!, REGISTRY_PASSWORD: HUB_PASSWORD },
  });
  const pulled = await pullImage(`${p.host}/library/alpine:3.20`, join(work, 'hub-creds'));
  t.same(pulled.allDigests, image.allDigests);
  const tokens = hub.tokenServer!.requests;
  t.ok(tokens.length >= 1 && tokens.every((r) => r.user === hub.username && r.authorized), 'every token request carried the access token');

  const wrong = await watch.proxy(t, {
    configDoc: { upstreams: [{ type: 'dockerhub', url: hubHop.url, username: '${REGISTRY_USERNAME}', password: '${REGISTRY_PASSWORD}' }] },
    env: { REGISTRY_USERNAME: hub.username!, REGISTRY_PASSWORD: SECRETS.refusedDockerHubToken },
  });
  const r = await get(`${wrong.url}/v2/alpine/manifests/3.20`);
  t.equal(r.status, 403, 'a refused access token → 403');
  const err = r.error();
  t.equal(err.code, 'DENIED');
  t.match(err.message, 'upstream "docker.io" refused our credentials');
  t.match(err.message, 'access token');
  t.notOk(r.body.includes(SECRETS.refusedDockerHubToken), 'the secret is not in the error');
});

t.test('Docker Hub rate limits: 429 with Retry-After passed on; ratelimit-* headers in the log', async (t) => {
  const p = await watch.proxy(t, { configDoc: { upstreams: [{ type: 'dockerhub', url: hubHop.url }], cache: { tagTtl: '0s' } } });
  hubHop.reset();
  Object.assign(hubHop.faults, { status: 429, retryAfter: '42', only: { pathIncludes: '/manifests/' } });
  const limited = await get(`${p.url}/v2/alpine/manifests/3.20`);
  t.equal(limited.status, 429, 'uncached and rate limited: 429');
  t.equal(limited.headers['retry-after'], '42', "the upstream's Retry-After");
  t.equal(limited.error().code, 'TOOMANYREQUESTS');

  hubHop.reset();
  Object.assign(hubHop.faults, { headers: { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '4;w=21600', 'docker-ratelimit-source': '127.0.0.1' } });
  const ok = await get(`${p.url}/v2/alpine/manifests/3.20`);
  t.equal(ok.status, 200);
  const line = p.logs().find((l) => l['msg'] === 'upstream' && l['rateLimitRemaining'] === 4);
  t.match(line, { upstream: 'docker.io', rateLimitLimit: 100, rateLimitRemaining: 4, rateLimitLow: true }, 'the figures are in the upstream log line');
  const metrics = await (await fetch(`${p.url}/metrics`)).text();
  t.match(metrics, 'pullthrough_upstream_ratelimit_limit{upstream="docker.io"} 100', 'and in GET /metrics');
  t.match(metrics, 'pullthrough_upstream_ratelimit_remaining{upstream="docker.io"} 4');
  hubHop.reset();
});

t.test('ghcr anonymous: signed blob redirects followed without Authorization, expired ones re-resolved', async (t) => {
  ghcr.tokenServer!.requests.length = 0;
  const p = await watch.proxy(t, { configDoc: { upstreams: [{ name: 'ghcr.io', type: 'ghcr', url: ghcrFront.url }] } });
  const pulled = await pullImage(`${p.host}/ghcr.io/octo-org/app:v1`, join(work, 'ghcr-anon'));
  t.same(pulled.allDigests, image.allDigests, 'every digest matches');
  const blobs = image.images[0]!.layers.length + 1;
  t.equal(ghcrFront.redirects, 2 * blobs, 'each blob: an expired URL, then a fresh one');
  t.equal(ghcrFront.blobHits.filter((h) => h.status === 403).length, blobs, 'the expired URLs were refused');
  t.equal(ghcrFront.blobHits.filter((h) => h.status === 200).length, blobs, 'and the fresh ones served');
  t.notOk(ghcrFront.blobHits.some((h) => h.authorization), 'no Authorization ever reached the blob server');
  t.ok(ghcr.tokenServer!.requests.every((r) => r.user === undefined), 'anonymous tokens');
});

t.test('ghcr with a token (any username) as the password', async (t) => {
  ghcr.tokenServer!.requests.length = 0;
  ghcrFront.options.expireFirst = false;
  const p = await watch.proxy(t, {
    configDoc: { upstreams: [{ name: 'ghcr.io', type: 'ghcr', url: ghcrFront.url, password: '${GHCR_TOKEN}' }] },
    env: { GHCR_TOKEN },
  });
  const pulled = await pullImage(`${p.host}/ghcr.io/octo-org/app:v1`, join(work, 'ghcr-token'));
  t.same(pulled.allDigests, image.allDigests);
  const tokens = ghcr.tokenServer!.requests;
  t.ok(tokens.length >= 1 && tokens.every((r) => r.authorized && r.user === 'token'), 'token requests carry the token');

  const wrong = await watch.proxy(t, {
    configDoc: { upstreams: [{ name: 'ghcr.io', type: 'ghcr', url: ghcrFront.url, username: 'octocat', password: '${GHCR_TOKEN}' }] },
    env: { GHCR_TOKEN: SECRETS.refusedGhcrToken },
  });
  const r = await get(`${wrong.url}/v2/ghcr.io/octo-org/app/manifests/v1`);
  t.equal(r.status, 403);
  t.match(r.error().message, /upstream "ghcr.io" refused our credentials.*read:packages/);
});

t.test('no secret in any log, cache file, error body or request to the blob server', async (t) => {
  const tokens = [...hub.tokenServer!.requests, ...ghcr.tokenServer!.requests].flatMap((r) => (r.token ? [r.token] : []));
  t.ok(tokens.length > 0, 'registry tokens were issued');
  await watch.check(t, Object.fromEntries(tokens.map((tok, i) => [`registry token ${i}`, tok])));
  t.ok(ghcrFront.blobHits.length > 0, 'the blob server was used');
  await expectNoSecrets(t, SECRETS, { texts: Object.fromEntries(ghcrFront.blobHits.map((h, i) => [`request ${i} to the blob server`, h.rawHeaders])) });
});
