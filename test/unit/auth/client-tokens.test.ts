// Tokens fetched with clients' own credentials (clientCredentials: passthrough): one per
// credential, cached under a keyed hash of it, never handed to another credential, never the
// configured ones; a token endpoint's refusal of them is the client's to fix (UNAUTHORIZED).
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Agent } from 'undici';
import { Authenticator } from '../../../src/upstreams/auth/authenticator.js';
import { ClientCredential } from '../../../src/upstreams/auth/client-credential.js';
import { anonymous, staticCredentials } from '../../../src/upstreams/auth/credentials.js';
import { rejection } from '../../helpers/rejection.js';
import type { Test } from '../../helpers/util.js';

const SCOPE = 'repository:team/app:pull';
const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const USERS: Record<string, string> = { alice: 'alice-pw-Qm3nV8', bob: 'bob-pw-Xk2pL7' };

/** A token endpoint that knows USERS, gives anonymous callers a token too, and says whom each token is for. */
async function tokenServer(t: Test) {
  const seen: (string | undefined)[] = [];
  let n = 0;
  const server = http.createServer((req, res) => {
    const auth = req.headers.authorization;
    seen.push(auth);
    const user = Object.keys(USERS).find((u) => auth === basic(u, USERS[u]!));
    if (auth !== undefined && user === undefined) {
      res.writeHead(req.url?.includes('forbid') ? 403 : 401).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token: `tok-${++n}-${user ?? 'anonymous'}`, expires_in: 300 }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  const { port } = server.address() as AddressInfo;
  return { seen, challenge: (path = 'token') => `Bearer realm="http://127.0.0.1:${port}/${path}",service="svc"` };
}

function make(t: Test, configured = anonymous): Authenticator {
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  return new Authenticator({ upstream: new URL('http://127.0.0.1:5000'), upstreamName: 'private', credentials: configured, dispatcher });
}

const alice = () => new ClientCredential({ username: 'alice', password: USERS.alice! });
const bob = () => new ClientCredential({ username: 'bob', password: USERS.bob! });

t.test('the identity: a keyed hash, the same for the same credentials, never the password', async (t) => {
  const a = alice();
  t.equal(a.identity, alice().identity, 'the same credentials: the same identity');
  t.not(a.identity, bob().identity, 'another user: another identity');
  t.not(a.identity, new ClientCredential({ username: 'alice', password: 'other' }).identity, 'another password: another identity');
  t.not(new ClientCredential({ username: 'a', password: 'b:c' }).identity, new ClientCredential({ username: 'a:b', password: 'c' }).identity);
  const shown = [a.identity, JSON.stringify(a), JSON.stringify({ a }), String(Object.values(a))].join(' ');
  t.notMatch(shown, USERS.alice!, 'the password is in none of identity, JSON or enumerable fields');
  t.notMatch(shown, Buffer.from(`alice:${USERS.alice}`).toString('base64').slice(8, 20));
  t.same(await a.get(), { username: 'alice', password: USERS.alice }, 'the upstream client still gets them');
});

t.test('one token per credential: fetched with its own Basic credentials, cached for it alone', async (t) => {
  const srv = await tokenServer(t);
  const auth = make(t, staticCredentials('bob', USERS.bob!));
  t.equal(await auth.challenged(srv.challenge(), SCOPE, undefined, alice()), 'Bearer tok-1-alice');
  t.equal(await auth.authorization(SCOPE, alice()), 'Bearer tok-1-alice', 'alice again (a new handle, the same credentials): cached');
  t.equal(await auth.authorization(SCOPE, bob()), 'Bearer tok-2-bob', 'bob: a token of his own');
  t.equal(await auth.authorization(SCOPE, new ClientCredential({ username: 'alice', password: 'wrong' })).catch((e: Error) => e.name), 'RegistryError', 'a wrong password gets no token of alice\'s');
  t.equal(await auth.authorization(SCOPE, anonymous), 'Bearer tok-3-anonymous', 'a client without credentials: an anonymous token');
  t.same(srv.seen, [basic('alice', USERS.alice!), basic('bob', USERS.bob!), basic('alice', 'wrong'), undefined], 'each fetched with its own credentials');
  t.equal(await auth.authorization(SCOPE), 'Bearer tok-4-bob', 'the configured credentials (bob\'s too) have a token of their own: not the client bob\'s');
  t.equal(srv.seen.length, 5);
});

t.test('concurrent requests of one credential: one token fetch; of two credentials: two', async (t) => {
  const srv = await tokenServer(t);
  const auth = make(t);
  await auth.challenged(srv.challenge(), 'repository:warmup:pull', undefined, anonymous);
  srv.seen.length = 0;
  const values = await Promise.all(Array.from({ length: 10 }, (_, i) => auth.authorization(SCOPE, i % 2 ? alice() : bob())));
  t.equal(srv.seen.length, 2, 'two fetches for ten requests');
  t.equal(new Set(values).size, 2, 'two tokens');
  t.ok(values.every((v, i) => v?.endsWith(i % 2 ? '-alice' : '-bob')), 'each request got its own credential\'s token');
});

t.test('the token endpoint refusing a client: UNAUTHORIZED (401), DENIED (403), challenged when it sent none', async (t) => {
  const srv = await tokenServer(t);
  const auth = make(t);
  const wrong = new ClientCredential({ username: 'alice', password: 'wrong-pw-Zr8' });
  const e = await rejection(auth.challenged(srv.challenge(), SCOPE, undefined, wrong));
  t.equal(e.code, 'UNAUTHORIZED');
  t.match(e.message, 'refused the credentials you sent');
  t.notMatch(JSON.stringify([e.message, e.detail]), 'wrong-pw-Zr8');
  const f = await rejection(auth.challenged(srv.challenge('forbid'), SCOPE, undefined, wrong));
  t.equal(f.code, 'DENIED', 'a 403: the credentials give no access');

  const configured = make(t, staticCredentials('alice', 'wrong-pw-Zr8'));
  t.equal((await rejection(configured.challenged(srv.challenge(), SCOPE, undefined))).code, 'DENIED', 'configured credentials refused: DENIED as before (the operator\'s to fix)');
});
