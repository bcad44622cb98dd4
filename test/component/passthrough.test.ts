// clientCredentials: passthrough in-process: each client's Basic credentials are the upstream's,
// and what the cache holds is served to a client only once the upstream confirmed it may read it.
// The FakeUpstream checks credentials as docker-registry's htpasswd auth does, and limits a user
// to some repositories as a token server's scopes would.
import t from 'tap';
import { CONFIRMED_TTL_MS } from '../../src/core/client-access.js';
import { component, errorCodes } from '../helpers/component.js';
import type { Test } from '../helpers/util.js';

const REPO = 'team/app';
const USERS = { alice: 'alice-pw-Vb7Qx2', carol: 'carol-pw-Lm4Zt9', bob: 'bob-pw-Rw2Hy5' };
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const as = {
  alice: basic('alice', USERS.alice),
  carol: basic('carol', USERS.carol),
  bob: basic('bob', USERS.bob),
  wrong: basic('alice', 'not-alices-password'),
  none: {},
};
const CHALLENGE = 'Basic realm="pullthrough"';

async function setup(t: Test) {
  const c = await component(t, { clientCredentials: 'passthrough' });
  c.upstream.users = new Map([
    ['alice', { password: USERS.alice }],
    ['carol', { password: USERS.carol }],
    ['bob', { password: USERS.bob, repos: ['team/other'] }],
  ]);
  const image = c.upstream.pushImage(REPO, 'v1', [Buffer.from('the first layer of a private image'), Buffer.from('and its second')]);
  const blobs = [image.config, ...image.layers];
  const get = (url: string, headers: Record<string, string>, method: 'GET' | 'HEAD' = 'GET') => c.app.inject({ method, url, headers });
  /** a pull as clients make it: the tag's manifest, then every blob */
  const pull = async (headers: Record<string, string>) => [await get(`/v2/${REPO}/manifests/v1`, headers), ...(await Promise.all(blobs.map((d) => get(`/v2/${REPO}/blobs/${d}`, headers))))];
  return { ...c, image, blobs, get, pull };
}

t.test('a client with valid upstream credentials fills the cache, every call made with them', async (t) => {
  const { upstream, image, blobs, pull } = await setup(t);
  const answers = await pull(as.alice);
  t.same(answers.map((r) => r.statusCode), [200, 200, 200, 200]);
  t.equal(answers[0]!.headers['docker-content-digest'], image.digest);
  t.equal(upstream.count('getBlob'), blobs.length, 'each blob fetched once');
  t.ok(upstream.calls.every((c) => c.user === 'alice'), 'every upstream call with alice\'s credentials');
  t.equal(upstream.count('headManifest'), 1, 'one confirmation (the tag); the manifest vouches for its blobs');

  upstream.reset();
  t.same((await pull(as.alice)).map((r) => r.statusCode), [200, 200, 200, 200]);
  t.same(upstream.calls, [], 'again within the TTL: no upstream call at all');
});

t.test('wrong credentials and none are refused the same cached content: 401 with the Basic challenge, no bytes', async (t) => {
  const { upstream, image, blobs, pull, get } = await setup(t);
  await pull(as.alice);
  for (const who of ['wrong', 'none'] as const) {
    upstream.reset();
    const answers = await pull(as[who]);
    t.same(answers.map((r) => r.statusCode), [401, 401, 401, 401], `${who}: 401 for the manifest and every blob`);
    t.ok(answers.every((r) => r.headers['www-authenticate'] === CHALLENGE), `${who}: each with ${CHALLENGE}`);
    t.ok(answers.every((r) => errorCodes(r.payload).includes('UNAUTHORIZED')), `${who}: an UNAUTHORIZED envelope, not the cached bytes`);
    const head = await get(`/v2/${REPO}/blobs/${image.layers[0]}`, as[who], 'HEAD');
    t.equal(head.statusCode, 401, `${who}: HEAD too`);
    t.equal(upstream.count('getBlob') + upstream.count('getManifest'), 0, `${who}: the upstream got no GET`);
    t.ok(upstream.count('headManifest') + upstream.count('headBlob') <= blobs.length + 2, `${who}: only HEADs asking whether it may`);
  }
  const tags = await get(`/v2/${REPO}/tags/list`, as.wrong);
  t.equal(tags.statusCode, 401, 'listings go to the upstream with the client\'s credentials too');
});

t.test('a valid credential without access to the repository: 403 DENIED, not the cached content', async (t) => {
  const { upstream, pull } = await setup(t);
  await pull(as.alice);
  upstream.reset();
  const answers = await pull(as.bob);
  t.same(answers.map((r) => r.statusCode), [403, 403, 403, 403]);
  t.ok(answers.every((r) => errorCodes(r.payload).includes('DENIED')));
  t.equal(upstream.count('getBlob'), 0);
});

t.test('another valid user is confirmed separately, then served from the cache', async (t) => {
  const { upstream, blobs, pull } = await setup(t);
  await pull(as.alice);
  upstream.reset();
  const answers = await pull(as.carol);
  t.same(answers.map((r) => r.statusCode), [200, 200, 200, 200]);
  t.same(answers.slice(1).map((r) => r.rawPayload.length > 0), blobs.map(() => true), 'the bytes');
  t.same(upstream.calls.map((c) => [c.method, c.user]), [['headManifest', 'carol']], 'one HEAD with carol\'s credentials, no GET');
});

t.test('knowing a digest is not enough: a cached blob through a repository that does not hold it is the upstream\'s 404', async (t) => {
  const { upstream, image, pull, get } = await setup(t);
  await pull(as.alice);
  upstream.pushImage('team/other', 'v1', [Buffer.from('something else')]);
  const res = await get(`/v2/team/other/blobs/${image.layers[0]}`, as.bob);
  t.equal(res.statusCode, 404);
  t.same(errorCodes(res.payload), ['BLOB_UNKNOWN']);
  t.match(upstream.calls.at(-1), { method: 'headBlob', repo: 'team/other', user: 'bob' });
});

t.test('the upstream down: served only what the credential was confirmed for within the TTL, else 503', async (t) => {
  const { upstream, clock, pull } = await setup(t);
  await pull(as.alice);
  upstream.fault({ unreachable: true });
  t.same((await pull(as.alice)).map((r) => r.statusCode), [200, 200, 200, 200], 'alice, confirmed within the TTL: served from the cache');
  const carol = await pull(as.carol);
  t.same(carol.map((r) => r.statusCode), [503, 503, 503, 503], 'carol, never confirmed: refused');
  t.match(JSON.parse(carol[0]!.payload), { errors: [{ code: 'UNAVAILABLE', message: /could not confirm that your credentials may read team\/app/ }] });
  clock.advance(CONFIRMED_TTL_MS);
  t.same((await pull(as.alice)).map((r) => r.statusCode), [503, 503, 503, 503], 'alice past the TTL: refused too');
  upstream.fault(undefined);
  clock.advance(10_000);
  t.same((await pull(as.alice)).map((r) => r.statusCode), [200, 200, 200, 200], 'the upstream back: confirmed again');
});

t.test('/v2/ challenges a client without credentials, so that it sends its own', async (t) => {
  const { get } = await setup(t);
  const none = await get('/v2/', as.none);
  t.equal(none.statusCode, 401);
  t.equal(none.headers['www-authenticate'], CHALLENGE);
  t.equal((await get('/v2/', as.alice)).statusCode, 200, 'with credentials: 200 (the upstream checks them)');
});

t.test('an upstream with configured credentials: client credentials are not used, /v2/ does not challenge', async (t) => {
  const { app, upstream } = await component(t);
  upstream.pushImage(REPO, 'v1', [Buffer.from('public')]);
  const res = await app.inject({ url: `/v2/${REPO}/manifests/v1`, headers: as.alice });
  t.equal(res.statusCode, 200);
  t.ok(upstream.calls.length > 0 && upstream.calls.every((c) => c.user === undefined), 'no call with the client\'s credentials');
  t.equal((await app.inject({ url: '/v2/' })).statusCode, 200);
});
