// The per-credential confirmations of core/client-access.ts over a FakeUpstream with users: one
// HEAD per credential and item within the TTL, each credential asked for itself, refusals answered
// again for a while, nothing confirmed while the upstream cannot be asked, bounded in memory.
import t from 'tap';
import { ClientAccess, CONFIRMED_TTL_MS, REFUSED_TTL_MS } from '../../src/core/client-access.js';
import { parseDigest } from '../../src/oci/digest.js';
import { anonymous, type CredentialProvider } from '../../src/upstreams/auth/credentials.js';
import { ClientCredential } from '../../src/upstreams/auth/client-credential.js';
import { Repository } from '../../src/upstreams/repository.js';
import { FakeUpstream } from '../helpers/fake-upstream.js';
import { rejection } from '../helpers/rejection.js';

const REPO = 'team/app';
const ALICE = { username: 'alice', password: 'alice-pw-8sK2' };
const BOB = { username: 'bob', password: 'bob-pw-3mQ9' };

function setup(o: { maxEntries?: number } = {}) {
  let time = 1_000_000;
  const clock = { now: () => time, advance: (ms: number) => void (time += ms) };
  const upstream = new FakeUpstream('private.test', clock.now);
  upstream.users = new Map([[ALICE.username, { password: ALICE.password }], [BOB.username, { password: BOB.password, repos: ['team/other'] }]]);
  const image = upstream.pushImage(REPO, 'v1', [Buffer.from('layer one'), Buffer.from('layer two')]);
  const access = new ClientAccess({ now: clock.now, maxEntries: o.maxEntries });
  const as = (client: CredentialProvider | undefined, name = REPO) => new Repository(upstream, name, client);
  return { upstream, image, access, clock, as, alice: () => as(new ClientCredential(ALICE)) };
}

const tag = { kind: 'manifest', ref: { kind: 'tag', tag: 'v1' } } as const;
const blob = (d: string) => ({ kind: 'blob', digest: parseDigest(d) }) as const;

t.test('a repository without a client\'s credentials: nothing to confirm, the upstream is not asked', async (t) => {
  const { upstream, access, as } = setup();
  await access.confirm(as(undefined), tag);
  t.same(upstream.calls, []);
});

t.test('one HEAD per credential and item, remembered for the TTL, asked again after it', async (t) => {
  const { upstream, image, access, clock, alice } = setup();
  await access.confirm(alice(), tag);
  t.same(upstream.calls, [{ method: 'headManifest', repo: REPO, ref: 'v1', user: 'alice' }], 'a HEAD of the tag, with alice\'s credentials');
  await access.confirm(alice(), tag);
  clock.advance(CONFIRMED_TTL_MS - 1);
  await access.confirm(alice(), tag);
  t.equal(upstream.calls.length, 1, 'within the TTL (a new handle, the same credentials): not asked again');
  await access.confirm(alice(), blob(image.layers[0]!));
  t.match(upstream.calls[1], { method: 'headBlob', ref: image.layers[0], user: 'alice' }, 'another item: asked for it');
  clock.advance(1);
  await access.confirm(alice(), tag);
  t.equal(upstream.count('headManifest'), 2, 'the TTL passed: asked again');
});

t.test('concurrent confirmations of one item: one HEAD', async (t) => {
  const { upstream, access, alice } = setup();
  upstream.fault({ delayMs: 30 }, 'headManifest');
  await Promise.all(Array.from({ length: 10 }, () => access.confirm(alice(), tag)));
  t.equal(upstream.count('headManifest'), 1);
});

t.test('each credential is confirmed for itself, and refused for itself', async (t) => {
  const { upstream, access, alice, as } = setup();
  await access.confirm(alice(), tag);
  const wrong = await rejection(access.confirm(as(new ClientCredential({ username: 'alice', password: 'not-it' })), tag));
  t.equal(wrong.code, 'UNAUTHORIZED', 'alice\'s name with a wrong password: not alice\'s confirmation, but the upstream\'s 401');
  const none = await rejection(access.confirm(as(anonymous), tag));
  t.equal(none.code, 'UNAUTHORIZED', 'no credentials: challenged');
  const bob = await rejection(access.confirm(as(new ClientCredential(BOB)), tag));
  t.equal(bob.code, 'DENIED', 'bob may not read team/app: the upstream\'s 403');
  await access.confirm(as(new ClientCredential(BOB), 'team/other'), { kind: 'manifest', ref: { kind: 'tag', tag: 'v1' } }).catch(() => undefined);
  t.same(upstream.calls.map((c) => c.user), ['alice', 'alice', undefined, 'bob', 'bob'], 'each asked with its own credentials');
});

t.test('a refusal is answered again for a while without asking, then asked again', async (t) => {
  const { upstream, access, clock, as } = setup();
  const wrong = () => as(new ClientCredential({ username: 'alice', password: 'not-it' }));
  const first = await rejection(access.confirm(wrong(), tag));
  const again = await rejection(access.confirm(wrong(), tag));
  t.equal(again, first, 'the same refusal');
  t.equal(upstream.count('headManifest'), 1, 'not asked again');
  clock.advance(REFUSED_TTL_MS);
  await rejection(access.confirm(wrong(), tag));
  t.equal(upstream.count('headManifest'), 2, 'after the refusal TTL: asked again');
});

t.test('an item the repository does not hold: the upstream\'s 404, not remembered', async (t) => {
  const { upstream, access, alice } = setup();
  const elsewhere = upstream.putBlob('team/secret', Buffer.from('in another repository'));
  for (let i = 0; i < 2; i++) t.equal((await rejection(access.confirm(alice(), blob(elsewhere)))).code, 'BLOB_UNKNOWN');
  t.equal(upstream.count('headBlob'), 2);
});

t.test('the upstream cannot be asked: refused (503) unless confirmed within the TTL', async (t) => {
  const { upstream, image, access, clock, alice } = setup();
  await access.confirm(alice(), tag);
  upstream.fault({ unreachable: true });
  const e = await rejection(access.confirm(alice(), blob(image.layers[0]!)));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, 'could not confirm that your credentials may read team/app');
  await access.confirm(alice(), tag);
  t.pass('confirmed within the TTL: still served while the upstream is down');
  for (let i = 0; i < 3; i++) await rejection(access.confirm(alice(), blob(image.layers[1]!)));
  t.notOk(upstream.healthy(), 'the upstream counts as down');
  const calls = upstream.calls.length;
  t.equal((await rejection(access.confirm(alice(), blob(image.config)))).code, 'UNAVAILABLE');
  t.equal(upstream.calls.length, calls, 'while it is down, not asked at all');
  clock.advance(CONFIRMED_TTL_MS);
  t.equal((await rejection(access.confirm(alice(), tag))).code, 'UNAVAILABLE', 'past the TTL: refused too');
  upstream.fault({ status: 429, retryAfter: '7' }, 'headManifest');
  upstream.fault(undefined, 'headBlob', 'getManifest');
  clock.advance(20_000);
  const limited = await rejection(access.confirm(alice(), tag));
  t.equal(limited.code, 'TOOMANYREQUESTS', 'rate limited: refused, saying so');
  t.equal(limited.headers['retry-after'], '7');
});

t.test('a confirmed manifest vouches for what it references, for that credential and repository only', async (t) => {
  const { upstream, image, access, alice, as } = setup();
  await access.confirm(alice(), tag);
  access.vouch(alice(), image.digest, JSON.parse(image.body.toString()));
  upstream.reset();
  for (const d of [image.config, ...image.layers]) await access.confirm(alice(), blob(d));
  await access.confirm(alice(), { kind: 'manifest', ref: { kind: 'digest', digest: parseDigest(image.digest) } });
  t.same(upstream.calls, [], 'its blobs and its digest: no HEAD');
  const bob = as(new ClientCredential({ username: 'bob', password: BOB.password }));
  t.equal((await rejection(access.confirm(bob, blob(image.layers[0]!)))).code, 'DENIED', 'another credential: asked for itself');
  await rejection(access.confirm(as(new ClientCredential(ALICE), 'team/other'), blob(image.layers[0]!)));
  t.match(upstream.calls.at(-1), { repo: 'team/other', user: 'alice' }, 'another repository: asked for itself');
});

t.test('bounded: the least recently used confirmation goes first, and is asked again', async (t) => {
  const { upstream, image, access, alice } = setup({ maxEntries: 2 });
  await access.confirm(alice(), blob(image.layers[0]!));
  await access.confirm(alice(), blob(image.layers[1]!));
  await access.confirm(alice(), blob(image.config));
  await access.confirm(alice(), blob(image.layers[1]!));
  t.equal(upstream.count('headBlob'), 3, 'the two latest kept');
  await access.confirm(alice(), blob(image.layers[0]!));
  t.equal(upstream.count('headBlob'), 4, 'the first was dropped: asked again');
});
