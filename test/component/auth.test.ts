// Who may pull, in-process: the access decision (no credentials, a wrong password, an unknown
// user, a user no rule allows, rules by upstream and by repository glob, anonymous upstreams,
// passthrough upstreams, the htpasswd file reloaded), and the shared cache held to it: with auth,
// content is served through a repository only when that repository is known to hold it.
import { randomBytes } from 'node:crypto';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import type { AccessConfig } from '../../src/access/policy.js';
import { OCI_MANIFEST } from '../../src/oci/manifest.js';
import { component, errorCodes, type Component } from '../helpers/component.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const PRIVATE = 'fake.test'; // the default upstream: bare names go there
const OPEN = 'open.test';
const OTHER = 'other.test';
const PASS = 'pass.test';
const PASSWORDS: Record<string, string> = { alice: SECRETS.alicePassword, bob: SECRETS.bobPassword, ci: SECRETS.ciPassword };
const CHALLENGE = 'Basic realm="pullthrough"';

const basic = (user: string, password = PASSWORDS[user]!) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const WRONG = basic('alice', SECRETS.wrongClientPassword);

/** The rules of the tests below. */
const RULES: AccessConfig['rules'] = [
  { users: ['alice'], upstreams: [PRIVATE], repositories: ['team/*'] },
  { users: ['ci'], upstreams: [PRIVATE], repositories: ['team/app', 'deep/**'] },
  { users: ['ci', 'bob'], upstreams: [OTHER] },
  { users: ['erin'], upstreams: [PRIVATE] },
];

interface Setup extends Component {
  htpasswd: string;
  /** replaces the htpasswd file (a new file renamed over it) with these users */
  users(names: string[]): Promise<void>;
}

async function setup(t: Test, o: { auth?: boolean; passthrough?: boolean } = {}): Promise<Setup> {
  const dir = await makeTempDir('pullthrough-component-auth-');
  t.teardown(() => removeDir(dir));
  const htpasswd = join(dir, 'htpasswd');
  const users = async (names: string[]) => {
    // cost 4, the lowest: bcrypt's cost is the file's, and the test need not pay for it
    await writeFile(`${htpasswd}.new`, names.map((n) => `${n}:${bcrypt.hashSync(PASSWORDS[n] ?? SECRETS.bobPassword, 4)}\n`).join(''));
    await rename(`${htpasswd}.new`, htpasswd);
  };
  await users(['alice', 'bob', 'ci']);
  const auth = o.auth === false ? undefined : { htpasswd, anonymous: [OPEN], rules: RULES };
  const c = await component(t, { more: [OPEN, OTHER, PASS], auth, passthrough: o.passthrough ? [PASS] : [] });
  return { ...c, htpasswd, users };
}

const manifestUrl = (repo: string, ref: string) => `/v2/${repo}/manifests/${ref}`;
const blobUrl = (repo: string, digest: string) => `/v2/${repo}/blobs/${digest}`;
const ACCEPT = { accept: OCI_MANIFEST };

/** Every upstream's calls, summed. */
const callCount = (c: Component) => [...c.upstreams.values()].reduce((n, u) => n + u.calls.length, 0);
const resetAll = (c: Component) => c.upstreams.forEach((u) => u.reset());

t.test('without auth nothing changes: /v2/ is open, and any cached blob is served through any repository', async (t) => {
  const c = await setup(t, { auth: false });
  const res = await c.app.inject({ url: '/v2/' });
  t.equal(res.statusCode, 200);
  t.equal(res.headers['www-authenticate'], undefined, 'no challenge');
  const img = c.upstream.pushImage('team/secret', 'v1', [randomBytes(1000)]);
  t.equal((await c.app.inject({ url: blobUrl('team/secret', img.layers[0]!) })).statusCode, 200);
  resetAll(c);
  const other = await c.app.inject({ url: blobUrl(`${OPEN}/anything`, img.layers[0]!) });
  t.equal(other.statusCode, 200, 'the cached blob through another upstream and repository');
  t.equal(callCount(c), 0, 'straight from the cache: no upstream asked');
});

t.test('GET /v2/ as registries answer it: 401 and the Basic challenge until the client sends good credentials', async (t) => {
  const { app } = await setup(t);
  for (const [what, headers] of [
    ['no credentials', {}],
    ['a wrong password', WRONG],
    ['an unknown user', basic('mallory', SECRETS.alicePassword)],
    ['a Bearer token', { authorization: 'Bearer abc.def.ghi' }],
    ['malformed Basic', { authorization: 'Basic !!!' }],
  ] as const) {
    for (const method of ['GET', 'HEAD'] as const) {
      const res = await app.inject({ method, url: '/v2/', headers });
      t.equal(res.statusCode, 401, `${method}, ${what}: 401`);
      t.equal(res.headers['www-authenticate'], CHALLENGE, `${method}, ${what}: the challenge`);
      if (method === 'GET') t.same(errorCodes(res.payload), ['UNAUTHORIZED'], `${what}: UNAUTHORIZED`);
      else t.equal(res.payload, '', 'HEAD: no body');
    }
  }
  const ok = await app.inject({ url: '/v2/', headers: basic('bob') });
  t.equal(ok.statusCode, 200, 'good credentials: 200, whatever the rules let the user pull');
  t.same(ok.json(), {});
});

t.test('GET /v2/ with a passthrough upstream: credentials the htpasswd file does not know may be that upstream\'s', async (t) => {
  const { app } = await setup(t, { passthrough: true });
  const none = await app.inject({ url: '/v2/' });
  t.equal(none.statusCode, 401, 'no credentials: 401');
  t.equal(none.headers['www-authenticate'], CHALLENGE);
  t.equal((await app.inject({ url: '/v2/', headers: basic('mallory', SECRETS.passthroughAlicePassword) })).statusCode, 200, 'unknown here: they pass, for the upstream to check');
  t.equal((await app.inject({ url: '/v2/', headers: basic('alice') })).statusCode, 200);
});

t.test('the decision table', async (t) => {
  const c = await setup(t, { passthrough: true });
  for (const [upstream, repo] of [[PRIVATE, 'team/app'], [PRIVATE, 'team/app/sub'], [PRIVATE, 'other/app'], [PRIVATE, 'deep/a/b'], [OTHER, 'team/app'], [OPEN, 'library/base'], [PASS, 'x/y']] as const) {
    c.upstreams.get(upstream)!.pushImage(repo, 'v1', [randomBytes(500)]);
  }
  const cases: [string, string, Record<string, string>, number, string][] = [
    ['no credentials', 'team/app', {}, 401, 'UNAUTHORIZED'],
    ['a wrong password', 'team/app', WRONG, 401, 'UNAUTHORIZED'],
    ['an unknown user', 'team/app', basic('mallory', SECRETS.alicePassword), 401, 'UNAUTHORIZED'],
    ['a user no rule lets pull here', 'team/app', basic('bob'), 403, 'DENIED'],
    ['alice in her glob team/*', 'team/app', basic('alice'), 200, ''],
    ['alice: * stays within one segment', 'team/app/sub', basic('alice'), 403, 'DENIED'],
    ['alice outside her glob', 'other/app', basic('alice'), 403, 'DENIED'],
    ['ci: a glob that names the repository', 'team/app', basic('ci'), 200, ''],
    ['ci: ** across segments', 'deep/a/b', basic('ci'), 200, ''],
    ['ci outside his globs', 'other/app', basic('ci'), 403, 'DENIED'],
    ['by upstream: bob on other.test', `${OTHER}/team/app`, basic('bob'), 200, ''],
    ['by upstream: alice has no rule for other.test', `${OTHER}/team/app`, basic('alice'), 403, 'DENIED'],
    ['an anonymous upstream without credentials', `${OPEN}/library/base`, {}, 200, ''],
    ['an anonymous upstream with wrong credentials: anyone may pull', `${OPEN}/library/base`, WRONG, 200, ''],
    ['an upstream with clientCredentials: passthrough is left to decide (it serves anyone)', `${PASS}/x/y`, {}, 200, ''],
    ['passthrough: credentials htpasswd does not know are the upstream\'s to check', `${PASS}/x/y`, basic('mallory', SECRETS.passthroughAlicePassword), 200, ''],
  ];
  for (const [what, name, headers, status, code] of cases) {
    for (const method of ['GET', 'HEAD'] as const) {
      const res = await c.app.inject({ method, url: manifestUrl(name, 'v1'), headers: { ...ACCEPT, ...headers } });
      t.equal(res.statusCode, status, `${method} ${what}: ${status}`);
      if (status === 401) t.equal(res.headers['www-authenticate'], CHALLENGE, `${method} ${what}: the challenge`);
      else t.equal(res.headers['www-authenticate'], undefined, `${method} ${what}: no challenge`);
      if (method === 'GET' && code) t.same(errorCodes(res.payload), [code], `${what}: ${code}`);
    }
  }
  const denied = await c.app.inject({ url: manifestUrl('other/app', 'v1'), headers: { ...ACCEPT, ...basic('alice') } });
  t.same(denied.json().errors[0].detail, { user: 'alice', upstream: PRIVATE, repository: 'other/app' }, 'DENIED says who and what');
  const refusedRepos = new Set(['team/app/sub', 'other/app']);
  t.equal(c.upstream.calls.filter((call) => refusedRepos.has(call.repo)).length, 0, 'the upstream is never asked for what was refused');
  t.equal(c.upstreams.get(OTHER)!.calls.length, 1, 'other.test: asked once, for bob (then cached)');

  // containerd names the upstream with ?ns= instead of a path prefix: the same rules
  const ns = await c.app.inject({ url: `${manifestUrl('team/app', 'v1')}?ns=${OTHER}`, headers: { ...ACCEPT, ...basic('alice') } });
  t.equal(ns.statusCode, 403, '?ns=other.test: alice has no rule for it');
  const nsOk = await c.app.inject({ url: `${manifestUrl('team/app', 'v1')}?ns=${OTHER}`, headers: { ...ACCEPT, ...basic('bob') } });
  t.equal(nsOk.statusCode, 200, '?ns=other.test: bob has');
});

t.test('every /v2/ endpoint is held to the rules: blobs, tags, referrers, the file API', async (t) => {
  const c = await setup(t);
  const img = c.upstream.pushImage('team/app', 'v1', [randomBytes(500)]);
  const urls = [
    blobUrl('team/app', img.layers[0]!),
    '/v2/team/app/tags/list',
    `/v2/team/app/referrers/${img.digest}`,
    `/v2/team/app/_estargz/${img.layers[0]}/toc`,
    `/v2/team/app/_estargz/image/v1/files/etc/hostname`,
  ];
  for (const url of urls) {
    const none = await c.app.inject({ url });
    t.equal(none.statusCode, 401, `${url}: 401 without credentials`);
    t.equal(none.headers['www-authenticate'], CHALLENGE);
    t.equal((await c.app.inject({ url, headers: basic('bob') })).statusCode, 403, `${url}: 403 for bob`);
  }
  t.equal(callCount(c), 0, 'nothing asked of the upstream for refused requests');
  t.equal((await c.app.inject({ url: urls[0]!, headers: basic('alice') })).statusCode, 200, 'alice: the blob');
  t.equal((await c.app.inject({ url: urls[1]!, headers: basic('alice') })).statusCode, 200, 'alice: the tags');
});

t.test('403 whether or not the content is cached', async (t) => {
  const c = await setup(t);
  const img = c.upstream.pushImage('team/app', 'v1', [randomBytes(2000)]);
  t.equal((await c.app.inject({ url: manifestUrl('team/app', 'v1'), headers: { ...ACCEPT, ...basic('alice') } })).statusCode, 200);
  t.equal((await c.app.inject({ url: blobUrl('team/app', img.layers[0]!), headers: basic('alice') })).statusCode, 200);
  resetAll(c);
  for (const url of [manifestUrl('team/app', 'v1'), manifestUrl('team/app', img.digest), blobUrl('team/app', img.layers[0]!)]) {
    const res = await c.app.inject({ url, headers: { ...ACCEPT, ...basic('bob') } });
    t.equal(res.statusCode, 403, `cached ${url.split('/').slice(-2).join('/').slice(0, 30)}: 403 for bob`);
    t.same(errorCodes(res.payload), ['DENIED']);
    t.equal((await c.app.inject({ url, headers: ACCEPT })).statusCode, 401, 'and 401 without credentials');
  }
  t.equal(callCount(c), 0);
});

t.test('the shared cache is no way around the rules: content by digest only through a repository known to hold it', async (t) => {
  const c = await setup(t);
  const shared = randomBytes(3000);
  const secret = c.upstream.pushImage('team/secret', 'v1', [randomBytes(4000), shared]);
  const app = c.upstream.pushImage('team/app', 'v1', [randomBytes(5000), shared]);
  // alice pulls team/secret: its manifest and layers are cached
  t.equal((await c.app.inject({ url: manifestUrl('team/secret', 'v1'), headers: { ...ACCEPT, ...basic('alice') } })).statusCode, 200);
  for (const d of secret.layers) t.equal((await c.app.inject({ url: blobUrl('team/secret', d), headers: basic('alice') })).statusCode, 200);
  t.equal(c.upstream.count('headBlob'), 0, 'blobs a served manifest references: no upstream HEAD');
  resetAll(c);

  const [secretLayer, sharedLayer] = secret.layers as [string, string];
  const refused: [string, Record<string, string>][] = [
    [blobUrl('team/app', secretLayer), basic('ci')], // the same upstream, a repository ci may pull
    [blobUrl(`${OTHER}/anything`, secretLayer), basic('bob')], // another upstream bob may pull
    [blobUrl(`${OPEN}/library/base`, secretLayer), {}], // an anonymous upstream
    [manifestUrl(`${OPEN}/library/base`, secret.digest), ACCEPT],
    [manifestUrl('team/app', secret.digest), { ...ACCEPT, ...basic('ci') }],
  ];
  for (const [url, headers] of refused) {
    for (const method of ['GET', 'HEAD'] as const) {
      const res = await c.app.inject({ method, url, headers });
      t.equal(res.statusCode, 404, `${method} ${url.slice(0, 40)}…: 404, as the upstream answers for that repository`);
      if (method === 'GET') t.ok(['BLOB_UNKNOWN', 'MANIFEST_UNKNOWN', 'NAME_UNKNOWN'].includes(errorCodes(res.payload)[0]!), 'an unknown-content code');
    }
    const ranged = await c.app.inject({ url, headers: { ...headers, range: 'bytes=0-9' } });
    t.equal(ranged.statusCode, 404, 'a Range too');
  }
  const gets = [...c.upstreams.values()].reduce((n, u) => n + u.count('getBlob') + u.count('getManifest'), 0);
  t.equal(gets, 0, 'no content fetched for them');
  t.ok(c.upstream.count('headBlob', secretLayer) >= 1, 'the upstream was asked (HEAD) for the repository named');

  // a repository that does hold the digest, though nothing told this cache: the upstream says so, once
  resetAll(c);
  for (let i = 0; i < 3; i++) {
    const res = await c.app.inject({ url: blobUrl('team/app', sharedLayer), headers: basic('ci') });
    t.equal(res.statusCode, 200, `team/app holds the shared layer too (${i})`);
    t.ok(res.rawPayload.equals(shared));
  }
  t.equal(c.upstream.count('headBlob', sharedLayer), 1, 'one upstream HEAD, remembered');
  t.equal(c.upstream.count('getBlob'), 0, 'served from the cache');

  // once team/app's manifest is served, what it references is known
  resetAll(c);
  t.equal((await c.app.inject({ url: manifestUrl('team/app', 'v1'), headers: { ...ACCEPT, ...basic('ci') } })).statusCode, 200);
  t.equal((await c.app.inject({ url: blobUrl('team/app', app.layers[0]!), headers: basic('ci') })).statusCode, 200);
  t.equal((await c.app.inject({ url: manifestUrl('team/app', app.digest), headers: { ...ACCEPT, ...basic('ci') } })).statusCode, 200);
  t.equal(c.upstream.count('headBlob') + c.upstream.count('headManifest', app.digest), 0, 'no HEAD for what the manifest references, nor for the manifest by digest');

  // known content is served with the upstream down; unknown content is not
  c.upstream.fault({ unreachable: true });
  t.equal((await c.app.inject({ url: blobUrl('team/secret', secretLayer), headers: basic('alice') })).statusCode, 200, 'upstream down: known content still served');
  t.equal((await c.app.inject({ url: manifestUrl('team/secret', secret.digest), headers: { ...ACCEPT, ...basic('alice') } })).statusCode, 200, 'and the manifest by digest');
  const down = await c.app.inject({ url: blobUrl('team/app', secretLayer), headers: basic('ci') });
  t.ok(down.statusCode >= 500, `upstream down: unknown content is refused (${down.statusCode}), not served`);
  t.equal(errorCodes(down.payload).length, 1, 'an error envelope, no layer bytes');
});

t.test('what a repository holds survives a restart (the MetadataStore keeps it)', async (t) => {
  const c = await setup(t);
  const img = c.upstream.pushImage('team/app', 'v1', [randomBytes(1000)]);
  t.equal((await c.app.inject({ url: manifestUrl('team/app', 'v1'), headers: { ...ACCEPT, ...basic('alice') } })).statusCode, 200);
  await new Promise((r) => setImmediate(r)); // the records are written in the background
  const { RepositoryContents } = await import('../../src/core/repository-contents.js');
  const { Repository } = await import('../../src/upstreams/repository.js');
  const fresh = new RepositoryContents({ meta: c.meta, log: { info() {}, warn() {} } });
  resetAll(c);
  c.upstream.fault({ unreachable: true });
  await fresh.ensure(new Repository(c.upstream, 'team/app'), { algorithm: 'sha256', hex: img.layers[0]!.slice(7), value: img.layers[0]! }, 'blob');
  t.pass('a new process knows team/app holds the layer');
  t.equal(c.upstream.calls.length, 0, 'without asking the upstream');
});

t.test('the htpasswd file is reloaded when it changes', async (t) => {
  const c = await setup(t);
  c.upstream.pushImage('team/app', 'v1', [randomBytes(500)]);
  const pull = (user: string, password?: string) => c.app.inject({ url: manifestUrl('team/app', 'v1'), headers: { ...ACCEPT, ...basic(user, password) } });
  t.equal((await pull('alice')).statusCode, 200);
  t.equal((await pull('erin', SECRETS.bobPassword)).statusCode, 401, 'erin has a rule but is not in the file');
  await c.users(['erin', 'bob']);
  t.equal((await pull('alice')).statusCode, 200, 'within a second, the file is not looked at again');
  c.clock.advance(1000);
  t.equal((await pull('erin', SECRETS.bobPassword)).statusCode, 200, 'erin added: in');
  t.equal((await pull('alice')).statusCode, 401, 'alice removed: out, though she was in a moment ago');
  t.equal((await pull('bob')).statusCode, 403, 'bob: in the file, in no rule for this repository');
});

t.test('no password reaches the log', async (t) => {
  const c = await setup(t);
  c.upstream.pushImage('team/app', 'v1', [randomBytes(500)]);
  for (const h of [basic('alice'), WRONG, basic('bob'), basic('ci')]) await c.app.inject({ url: manifestUrl('team/app', 'v1'), headers: { ...ACCEPT, ...h } });
  const text = JSON.stringify(c.logs);
  t.ok(text.includes('htpasswd loaded'), 'the log was collected');
  for (const [name, secret] of Object.entries(SECRETS)) t.notOk(text.includes(secret), `${name} is not in the log`);
});
