import t from 'tap';
import { RegistryError } from '../../../src/oci/errors.js';
import { MintedCredentials, scrub, type Minted } from '../../../src/upstreams/auth/minted.js';

const HOUR = 3600_000;

function provider(mintImpl: (n: number) => Promise<Minted> | Minted) {
  let clock = 1_000_000;
  let n = 0;
  const p = new MintedCredentials({ identity: 'test', now: () => clock, mint: async () => mintImpl(++n) });
  return { p, advance: (ms: number) => (clock += ms), now: () => clock, mints: () => n };
}

t.test('a minted secret is reused for the first half of its life, then replaced', async (t) => {
  let clockRef = () => 0;
  const env = provider((n) => ({ credentials: { username: 'AWS', password: `pw-${n}` }, expiresAt: clockRef() + 12 * HOUR }));
  clockRef = env.now;
  t.equal((await env.p.get()).password, 'pw-1');
  env.advance(6 * HOUR - 1);
  t.equal((await env.p.get()).password, 'pw-1', 'still fresh just before half-life');
  t.equal(env.mints(), 1);
  env.advance(1);
  t.equal((await env.p.get()).password, 'pw-2', 'renewed at half-life');
  t.equal(env.mints(), 2);
  t.equal(env.p.expiresAt(), env.now() + 12 * HOUR);
});

t.test('concurrent callers share one mint', async (t) => {
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const env = provider(async (n) => {
    await gate;
    return { credentials: { username: 'u', password: `pw-${n}` }, expiresAt: Number.MAX_SAFE_INTEGER };
  });
  const all = Promise.all(Array.from({ length: 20 }, () => env.p.get()));
  release();
  const got = await all;
  t.equal(env.mints(), 1, 'one mint for twenty callers');
  t.ok(got.every((c) => c.password === 'pw-1'));
});

t.test('a failed renewal falls back to the held secret until it expires', async (t) => {
  let fail = false;
  let clockRef = () => 0;
  const env = provider((n) => {
    if (fail) throw new RegistryError('UNAVAILABLE', { message: 'api down' });
    return { credentials: { username: 'AWS', password: `pw-${n}` }, expiresAt: clockRef() + 12 * HOUR };
  });
  clockRef = env.now;
  await env.p.get();
  fail = true;
  env.advance(7 * HOUR);
  t.equal((await env.p.get()).password, 'pw-1', 'past half-life, renewal fails: the unexpired secret is used');
  t.equal(env.mints(), 2, 'renewal was attempted');
  env.advance(5 * HOUR);
  await t.rejects(env.p.get(), { code: 'UNAVAILABLE', message: 'api down' }, 'expired and renewal fails: the error');
  fail = false;
  t.equal((await env.p.get()).password, 'pw-4', 'recovers once the API answers');
});

t.test('invalidate drops the secret: the next get mints', async (t) => {
  const env = provider((n) => ({ credentials: { username: 'u', password: `pw-${n}` }, expiresAt: Number.MAX_SAFE_INTEGER }));
  await env.p.get();
  env.p.invalidate();
  t.equal((await env.p.get()).password, 'pw-2');
  t.equal(env.p.identity, 'test');
});

t.test('a secret that arrives already expired is used once and re-minted next time', async (t) => {
  let clockRef = () => 0;
  const env = provider((n) => ({ credentials: { username: 'u', password: `pw-${n}` }, expiresAt: clockRef() - 1 }));
  clockRef = env.now;
  t.equal((await env.p.get()).password, 'pw-1');
  t.equal((await env.p.get()).password, 'pw-2');
});

t.test('scrub removes secrets from third-party messages and bounds them', async (t) => {
  t.equal(scrub('bad key abcdef123 in  request\n', ['abcdef123']), 'bad key [redacted] in request');
  t.equal(scrub('x'.repeat(400), []).length, 301);
  t.equal(scrub('short ab', ['ab']), 'short ab', 'secrets under 4 characters are not treated as secrets');
});
