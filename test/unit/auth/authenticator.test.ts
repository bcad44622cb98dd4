import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Agent } from 'undici';
import { RegistryError } from '../../../src/oci/errors.js';
import { rejection } from '../../helpers/rejection.js';
import { Authenticator, type AuthenticatorOptions } from '../../../src/upstreams/auth/authenticator.js';
import {
  anonymous,
  type CredentialProvider,
  staticCredentials,
} from '../../../src/upstreams/auth/credentials.js';
import type { Test } from '../../helpers/util.js';

/** a subtest's `t` */
type Handler = (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void;

interface Seen {
  url: URL;
  authorization: string | undefined;
}

const SCOPE = 'repository:library/alpine:pull';
const PASSWORD = 's3cret-pw';
const BASIC = `Basic ${Buffer.from(`alice:${PASSWORD}`).toString('base64')}`;

function json(res: http.ServerResponse, body: unknown, status = 200): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const defaultHandler: Handler = (_req, res, n) => json(res, { token: `tok-${n}`, expires_in: 300 });

async function tokenServer(t: Test, handler: Handler = defaultHandler, host = '127.0.0.1') {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    seen.push({ url: new URL(req.url ?? '/', `http://${host}`), authorization: req.headers.authorization });
    handler(req, res, seen.length);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { seen, port, realm: `http://${host}:${port}/token` };
}

function bearer(realm: string, extra = ',service="svc"'): string {
  return `Bearer realm="${realm}"${extra}`;
}

function make(t: Test, o: Partial<AuthenticatorOptions> = {}): Authenticator {
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  return new Authenticator({
    upstream: new URL('http://127.0.0.1:5000'),
    upstreamName: 'docker.io',
    credentials: anonymous,
    dispatcher,
    ...o,
  });
}

function noSecret(t: Test, e: RegistryError): void {
  const texts = [e.message, JSON.stringify(e.detail), String(e.stack), String(e.cause), JSON.stringify(e.toBody())];
  for (const s of texts) {
    t.notMatch(s, PASSWORD, 'password not leaked');
    t.notMatch(s, BASIC.slice(6), 'encoded credentials not leaked');
  }
}

t.test('no Authorization before any challenge', async (t) => {
  t.equal(await make(t).authorization(SCOPE), undefined);
});

t.test('anonymous token flow', async (t) => {
  const srv = await tokenServer(t);
  const a = make(t);
  t.equal(await a.challenged(bearer(srv.realm), SCOPE, undefined), 'Bearer tok-1');
  t.equal(srv.seen.length, 1);
  const seen = srv.seen[0]!;
  t.equal(seen.authorization, undefined, 'no Authorization header');
  t.equal(seen.url.pathname, '/token');
  t.equal(seen.url.searchParams.get('service'), 'svc');
  t.same(seen.url.searchParams.getAll('scope'), [SCOPE]);
  t.equal(await a.authorization(SCOPE), 'Bearer tok-1', 'cached: up-front header');
  t.equal(srv.seen.length, 1, 'second call makes no request');
});

t.test('Basic credentials go to a same-host realm (any port)', async (t) => {
  const srv = await tokenServer(t);
  const a = make(t, { credentials: staticCredentials('alice', PASSWORD) });
  t.equal(await a.challenged(bearer(srv.realm), SCOPE, undefined), 'Bearer tok-1');
  t.equal(srv.seen[0]?.authorization, BASIC);
});

t.test('credentials NOT sent to a realm on a different host', async (t) => {
  const srv = await tokenServer(t);
  const a = make(t, { upstream: new URL('http://localhost:5000'), credentials: staticCredentials('alice', PASSWORD) });
  t.equal(await a.challenged(bearer(srv.realm), SCOPE, undefined), 'Bearer tok-1');
  t.equal(srv.seen[0]?.authorization, undefined, 'anonymous token request instead');
});

t.test('credentials NOT sent over http when the upstream is https', async (t) => {
  const srv = await tokenServer(t);
  const a = make(t, { upstream: new URL('https://127.0.0.1'), credentials: staticCredentials('alice', PASSWORD) });
  await a.challenged(bearer(srv.realm), SCOPE, undefined);
  t.equal(srv.seen[0]?.authorization, undefined);
});

t.test('challenge without service (GAR) and scope union', async (t) => {
  const srv = await tokenServer(t);
  const a = make(t);
  const header = bearer(srv.realm, `,scope="repository:x/y:pull ${SCOPE}"`);
  t.equal(await a.challenged(header, SCOPE, undefined), 'Bearer tok-1');
  const url = srv.seen[0]!.url;
  t.equal(url.searchParams.has('service'), false);
  t.same(url.searchParams.getAll('scope'), [SCOPE, 'repository:x/y:pull'], 'sorted, de-duplicated, one param each');
});

t.test('access_token preferred over token', async (t) => {
  const srv = await tokenServer(t, (_q, res) => json(res, { token: 'old', access_token: 'new' }));
  t.equal(await make(t).challenged(bearer(srv.realm), SCOPE, undefined), 'Bearer new');
});

t.test('different scopes are different tokens', async (t) => {
  const srv = await tokenServer(t);
  const a = make(t);
  await a.challenged(bearer(srv.realm), SCOPE, undefined);
  t.equal(await a.authorization('repository:other:pull'), 'Bearer tok-2');
  t.equal(await a.authorization(SCOPE), 'Bearer tok-1');
  t.equal(srv.seen.length, 2);
});

t.test('expiry honoured with an injected clock', async (t) => {
  let clock = 1_000_000;
  const srv = await tokenServer(t);
  const a = make(t, { now: () => clock });
  await a.challenged(bearer(srv.realm), SCOPE, undefined);
  // expires_in 300 s, default margin min(30 s, 10%) = 30 s -> refresh at 270 s
  clock += 269_000;
  t.equal(await a.authorization(SCOPE), 'Bearer tok-1');
  clock += 2_000;
  t.equal(await a.authorization(SCOPE), 'Bearer tok-2', 'inside the margin: new fetch');
  t.equal(srv.seen.length, 2);
});

t.test('issued_at counts from the server timestamp', async (t) => {
  let clock = Date.parse('2026-01-01T00:00:00Z');
  const srv = await tokenServer(t, (_q, res, n) =>
    json(res, { token: `tok-${n}`, expires_in: 300, issued_at: new Date(clock - 100_000).toISOString() }),
  );
  const a = make(t, { now: () => clock });
  await a.challenged(bearer(srv.realm), SCOPE, undefined);
  clock += 169_000;
  t.equal(await a.authorization(SCOPE), 'Bearer tok-1');
  clock += 2_000;
  t.equal(await a.authorization(SCOPE), 'Bearer tok-2');
});

t.test('expires_in below 60 is raised to 60 (and absent means 60)', async (t) => {
  for (const body of [{ expires_in: 10 }, {}]) {
    let clock = 5_000_000;
    const srv = await tokenServer(t, (_q, res, n) => json(res, { token: `tok-${n}`, ...body }));
    const a = make(t, { now: () => clock });
    await a.challenged(bearer(srv.realm), SCOPE, undefined);
    // lifetime 60 s, margin min(30 s, 6 s) = 6 s -> refresh at 54 s
    clock += 53_000;
    t.equal(await a.authorization(SCOPE), 'Bearer tok-1', JSON.stringify(body));
    clock += 2_000;
    t.equal(await a.authorization(SCOPE), 'Bearer tok-2', JSON.stringify(body));
  }
});

t.test('a failed refresh falls back to the unexpired token', async (t) => {
  let clock = 0;
  const srv = await tokenServer(t, (_q, res, n) => (n === 1 ? json(res, { token: 'tok-1', expires_in: 300 }) : json(res, {}, 500)));
  const a = make(t, { now: () => clock });
  await a.challenged(bearer(srv.realm), SCOPE, undefined);
  clock = 290_000;
  t.equal(await a.authorization(SCOPE), 'Bearer tok-1', 'refresh failed, token still valid');
  clock = 301_000;
  t.equal((await rejection(a.authorization(SCOPE))).code, 'UNAVAILABLE', 'expired: the error surfaces');
});

t.test('20 concurrent authorization() calls -> exactly 1 token request', async (t) => {
  const srv = await tokenServer(t, (_q, res, n) => setTimeout(() => json(res, { token: `tok-${n}`, expires_in: 300 }), 50));
  const a = make(t);
  await a.challenged(bearer(srv.realm), 'repository:warmup:pull', undefined);
  const values = await Promise.all(Array.from({ length: 20 }, () => a.authorization(SCOPE)));
  t.same(new Set(values), new Set(['Bearer tok-2']));
  t.equal(srv.seen.length, 2);
});

t.test('challenged() with the failed token: one refresh for 10 concurrent callers', async (t) => {
  const srv = await tokenServer(t, (_q, res, n) => setTimeout(() => json(res, { token: `tok-${n}`, expires_in: 300 }), 30));
  const a = make(t);
  const first = await a.challenged(bearer(srv.realm), SCOPE, undefined);
  t.equal(first, 'Bearer tok-1');
  const header = bearer(srv.realm, ',service="svc",error="invalid_token"');
  const values = await Promise.all(Array.from({ length: 10 }, () => a.challenged(header, SCOPE, first)));
  t.same(new Set(values), new Set(['Bearer tok-2']));
  t.equal(srv.seen.length, 2, 'one refresh');
  t.equal(await a.challenged(header, SCOPE, first), 'Bearer tok-2', 'late caller gets the newer token, no fetch');
  t.equal(srv.seen.length, 2);
  t.equal(await a.authorization(SCOPE), 'Bearer tok-2');
});

t.test('challenged() returns undefined when the endpoint re-issues the rejected token', async (t) => {
  const srv = await tokenServer(t, (_q, res) => json(res, { token: 'same' }));
  const a = make(t);
  const v = await a.challenged(bearer(srv.realm), SCOPE, undefined);
  t.equal(await a.challenged(bearer(srv.realm), SCOPE, v), undefined);
  t.equal(srv.seen.length, 2);
});

t.test('Basic challenge', async (t) => {
  const ecr = 'Basic realm="https://123.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"';
  const withCreds = make(t, { credentials: staticCredentials('alice', PASSWORD) });
  t.equal(await withCreds.challenged(ecr, SCOPE, undefined), BASIC);
  t.equal(await withCreds.authorization(SCOPE), BASIC, 'sent up front afterwards');
  t.equal(await withCreds.challenged(ecr, SCOPE, BASIC), undefined, 'rejected static credentials: nothing better');

  const anon = make(t);
  t.equal(await anon.challenged(ecr, SCOPE, undefined), undefined, 'no credentials: nothing to try');
  t.equal(await anon.authorization(SCOPE), undefined);

  let generation = 0;
  const rotating: CredentialProvider = {
    identity: 'rotating',
    get: async () => ({ username: 'AWS', password: `pw-${generation}` }),
    invalidate: () => {
      generation++;
    },
  };
  const r = make(t, { credentials: rotating });
  const v0 = await r.challenged(ecr, SCOPE, undefined);
  const v1 = await r.challenged(ecr, SCOPE, v0);
  t.not(v1, v0, 'invalidate() lets a minting provider re-mint');
  t.equal(generation, 1);
});

t.test('unusable challenges', async (t) => {
  const a = make(t);
  t.equal(await a.challenged(undefined, SCOPE, undefined), undefined);
  t.equal(await a.challenged('Negotiate', SCOPE, undefined), undefined);
  t.equal((await rejection(a.challenged('Bearer realm="ftp://x/token"', SCOPE, undefined))).code, 'UNAVAILABLE');
  t.equal((await rejection(a.challenged('Bearer realm="http://[bad"', SCOPE, undefined))).code, 'UNAVAILABLE');
});

t.test('a failing credential provider -> UNAVAILABLE, RegistryErrors pass through', async (t) => {
  const srv = await tokenServer(t);
  const failing = (e: unknown): CredentialProvider => ({
    identity: 'failing',
    get: async () => {
      throw e;
    },
  });
  const a = make(t, { credentials: failing(new Error('sts exploded')) });
  const e = await rejection(a.challenged(bearer(srv.realm), SCOPE, undefined));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, 'could not obtain credentials for upstream "docker.io"');
  const b = make(t, { credentials: failing(new RegistryError('DENIED', { message: 'no access' })) });
  t.equal((await rejection(b.challenged(bearer(srv.realm), SCOPE, undefined))).message, 'no access');
  t.equal(srv.seen.length, 0, 'no token request without credentials');
});

t.test('token endpoint 401 -> DENIED without the secret', async (t) => {
  for (const status of [401, 403]) {
    const srv = await tokenServer(t, (_q, res) => json(res, { details: 'incorrect username or password' }, status));
    const a = make(t, { credentials: staticCredentials('alice', PASSWORD) });
    const e = await rejection(a.challenged(bearer(srv.realm), SCOPE, undefined));
    t.equal(e.code, 'DENIED');
    t.equal(e.status, 403);
    t.match(e.message, 'upstream "docker.io" refused our credentials');
    t.equal(srv.seen[0]?.authorization, BASIC, 'credentials were sent');
    noSecret(t, e);
  }
});

t.test('429 -> TOOMANYREQUESTS with Retry-After', async (t) => {
  const srv = await tokenServer(t, (_q, res) => {
    res.writeHead(429, { 'retry-after': '17' });
    res.end('slow down');
  });
  const e = await rejection(make(t).challenged(bearer(srv.realm), SCOPE, undefined));
  t.equal(e.code, 'TOOMANYREQUESTS');
  t.same(e.headers, { 'Retry-After': '17' });
});

t.test('5xx -> UNAVAILABLE', async (t) => {
  const srv = await tokenServer(t, (_q, res) => json(res, {}, 502));
  const e = await rejection(make(t).challenged(bearer(srv.realm), SCOPE, undefined));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, '502');
});

t.test('endpoint down -> UNAVAILABLE', async (t) => {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  const a = make(t, { credentials: staticCredentials('alice', PASSWORD) });
  const e = await rejection(a.challenged(bearer(`http://127.0.0.1:${port}/token`), SCOPE, undefined));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, 'unreachable');
  noSecret(t, e);
});

t.test('timeout -> UNAVAILABLE', async (t) => {
  const srv = await tokenServer(t, () => undefined);
  const e = await rejection(make(t, { timeoutMs: 200 }).challenged(bearer(srv.realm), SCOPE, undefined));
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, 'timed out');
});

t.test('malformed responses -> UNAVAILABLE', async (t) => {
  const bodies: [string, (res: http.ServerResponse) => void][] = [
    ['not json', (res) => res.end('<html>')],
    ['no token', (res) => json(res, { expires_in: 300 })],
    ['empty token', (res) => json(res, { token: '' })],
    ['not an object', (res) => json(res, 'tok')],
    ['header-unsafe token', (res) => json(res, { token: 'a\r\nX-Evil: 1' })],
    ['over 1 MiB', (res) => json(res, { token: 'x', pad: 'y'.repeat(1024 * 1024) })],
  ];
  for (const [name, send] of bodies) {
    const srv = await tokenServer(t, (_q, res) => send(res));
    const e = await rejection(make(t).challenged(bearer(srv.realm), SCOPE, undefined));
    t.equal(e.code, 'UNAVAILABLE', name);
    t.match(e.message, /malformed|exceeds/, name);
  }
});
