// A hostile upstream whose Bearer challenge names a broken token realm (a huge body, a body that
// is not JSON, a redirect, no answer): the client gets a clear OCI error, the broken challenge is
// forgotten (anonymous repositories keep working, a fixed realm works at the next request), token
// attempts stay bounded however many requests come, and credentials never follow the redirect.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { LeakWatch } from '../helpers/captured-proxy.js';
import { hostileSetup, type HostileAnswer, type HostileRegistry, startHostileRegistry } from '../helpers/hostile-registry.js';
import { startHostileToken, type HostileToken, type TokenBehaviour } from '../helpers/hostile-token.js';
import { SECRETS } from '../helpers/secrets.js';
import type { Test } from '../helpers/util.js';

/** a subtest's `t` */
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const GOOD = 'good-token';

/** Stores a small image manifest (its config blob too) under `repo:v1`. */
function addImage(reg: HostileRegistry, repo: string): void {
  const config = Buffer.from(`{"architecture":"amd64","os":"linux","repo":"${repo}"}`);
  const digest = reg.addBlob(config);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest, size: config.length },
    layers: [],
  });
  reg.addManifest(repo, manifest, MANIFEST, 'v1');
}

/**
 * Repositories under `private/` answer 401 with a Bearer challenge naming `realm()` unless the
 * request carries the good token; everything else is anonymous.
 */
function challengePrivate(reg: HostileRegistry, realm: () => string): void {
  reg.misbehave({
    kind: 'custom',
    answer: (req, honest): HostileAnswer =>
      req.headers.authorization === `Bearer ${GOOD}`
        ? honest()
        : {
            status: 401,
            headers: { 'WWW-Authenticate': `Bearer realm="${realm()}",service="hostile"`, 'Content-Type': 'application/json' },
            body: '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
          },
  }, { only: { pathIncludes: '/v2/private/' } });
}

interface Got {
  status: number;
  contentType: string | null;
  body: string;
}

async function get(url: string): Promise<Got> {
  const res = await fetch(url, { headers: { accept: MANIFEST }, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, contentType: res.headers.get('content-type'), body: await res.text() };
}

/** A clear OCI error: 502 or 503, a JSON envelope with a code and a message. */
function isOciError(t: Test, r: Got, what: string): void {
  t.ok(r.status === 502 || r.status === 503, `${what}: 502 or 503, not ${r.status}`);
  t.match(r.contentType ?? '', /json/, `${what}: a JSON body`);
  const e = (JSON.parse(r.body) as { errors?: { code?: unknown; message?: unknown }[] }).errors?.[0];
  t.ok(typeof e?.code === 'string' && typeof e.message === 'string' && e.message !== '', `${what}: ${String(e?.code)} "${String(e?.message)}"`);
}

async function tokenEndpoint(t: Test, b: TokenBehaviour): Promise<HostileToken> {
  const tok = await startHostileToken(b);
  t.teardown(() => tok.close());
  return tok;
}

/** A server that records whoever a redirect sends to it. */
async function capture(t: Test): Promise<{ url: string; seen: (string | undefined)[] }> {
  const seen: (string | undefined)[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: GOOD }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  // named as localhost: another host than the upstream's 127.0.0.1
  return { url: `http://localhost:${(server.address() as AddressInfo).port}/token`, seen };
}

const HUGE = 256 * 1024 * 1024;

const broken: [string, (t: Test) => Promise<TokenBehaviour>][] = [
  ['a huge body', async () => ({ kind: 'huge', bytes: HUGE })],
  ['a body that is not JSON', async () => ({ kind: 'nonJson' })],
  ['a redirect', async (t) => ({ kind: 'redirect', location: (await capture(t)).url })],
  ['no answer', async () => ({ kind: 'stall' })],
  ['headers and then no body', async () => ({ kind: 'stallBody' })],
];

for (const [name, behaviour] of broken) {
  t.test(`a realm that answers with ${name} does not stick`, async (t) => {
    const bad = await tokenEndpoint(t, await behaviour(t));
    const good = await tokenEndpoint(t, { kind: 'token', token: GOOD });
    const { reg, proxy } = await hostileSetup(t, { timeouts: { headers: '1s' } });
    addImage(reg, 'private/a');
    addImage(reg, 'private/b');
    addImage(reg, 'public/a');
    addImage(reg, 'public/b');
    let realm = bad.realm;
    challengePrivate(reg, () => realm);

    isOciError(t, await get(`${proxy.url}/v2/hostile/private/a/manifests/v1`), 'the request that met the broken realm');
    t.equal(bad.log.length, 1, 'one token attempt');
    t.equal((await get(`${proxy.url}/v2/hostile/public/a/manifests/v1`)).status, 200, 'an anonymous repository still works');
    isOciError(t, await get(`${proxy.url}/v2/hostile/private/a/manifests/v1`), 'the realm is still broken');

    realm = good.realm; // the upstream's challenge now names a working realm
    t.equal((await get(`${proxy.url}/v2/hostile/private/a/manifests/v1`)).status, 200, 'the next request learns the new realm and succeeds');
    t.equal((await get(`${proxy.url}/v2/hostile/private/b/manifests/v1`)).status, 200, 'and so does another repository');
    t.equal((await get(`${proxy.url}/v2/hostile/public/b/manifests/v1`)).status, 200, 'anonymous still works');
    if (name === 'a huge body') t.ok(bad.hugeBytesSent < 32 * 1024 * 1024, `the huge body was not read (${bad.hugeBytesSent} of ${HUGE} bytes sent)`);
  });
}

t.test('token attempts against a broken realm are bounded, however many requests come', async (t) => {
  const bad = await tokenEndpoint(t, { kind: 'nonJson' });
  // with a retry: every failed request would be tried twice
  const { reg, proxy } = await hostileSetup(t, { retries: 1 });
  addImage(reg, 'private/a');
  addImage(reg, 'public/a');
  challengePrivate(reg, () => bad.realm);
  const N = 10;
  const started = Date.now();
  for (let i = 0; i < N; i++) {
    const r = await get(`${proxy.url}/v2/hostile/private/a/manifests/v1`);
    isOciError(t, r, `request ${i}`);
  }
  const elapsed = Date.now() - started;
  t.equal((await get(`${proxy.url}/v2/hostile/public/a/manifests/v1`)).status, 200, 'an anonymous repository works all along');
  // the authenticator allows 5 failed token fetches in any 10 s per upstream
  const bound = 5 * (1 + Math.floor(elapsed / 10_000));
  t.ok(bad.log.length <= bound, `${bad.log.length} token attempts for ${N} requests (bound ${bound})`);
  t.ok(bad.log.length >= 1, 'the realm was tried');
});

t.test('upstream credentials never follow a redirect of the token endpoint', async (t) => {
  const watch = new LeakWatch();
  const elsewhere = await capture(t);
  const bad = await tokenEndpoint(t, { kind: 'redirect', location: elsewhere.url });
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  addImage(reg, 'private/a');
  challengePrivate(reg, () => bad.realm);
  const p = await watch.proxy(t, {
    configDoc: { retries: 0, upstreams: [{ name: 'hostile', url: reg.url, username: 'alice', password: '${PASSWORD}' }] },
    env: { PASSWORD: SECRETS.registryPassword },
  });
  for (const status of [301, 302, 307, 308]) {
    bad.behave({ kind: 'redirect', location: elsewhere.url, status });
    const r = await watch.get(`${p.url}/v2/hostile/private/a/manifests/v1`);
    t.ok(r.status === 502 || r.status === 503, `${status}: answered ${r.status}`);
    t.match(r.error().message, /token endpoint/, `${status}: the message names the token endpoint`);
  }
  t.ok(bad.log.length >= 4 && bad.log.every((r) => r.authorization?.startsWith('Basic ')), 'the realm on the upstream host got the credentials');
  t.same(elsewhere.seen, [], 'the host it redirected to got no request at all');
  await watch.check(t);
});
