// A token realm that fails is not trusted further: its challenge is forgotten, failed fetches are
// bounded per upstream (then refused without asking the realm, with Retry-After), and the realm is
// asked again once the window has passed or an upstream's new challenge works.
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Agent } from 'undici';
import { RegistryError } from '../../../src/oci/errors.js';
import { Authenticator } from '../../../src/upstreams/auth/authenticator.js';
import { anonymous } from '../../../src/upstreams/auth/credentials.js';
import { rejection } from '../../helpers/rejection.js';
import type { Test } from '../../helpers/util.js';

/** a subtest's `t` */
const SCOPE = 'repository:team/app:pull';

/** A token endpoint whose answer the test switches; counts requests. */
async function realm(t: Test) {
  const state = { broken: true, requests: 0 };
  const server = http.createServer((_req, res) => {
    state.requests++;
    if (state.broken) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('<html>sign in</html>');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `tok-${state.requests}`, expires_in: 300 }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  }));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
  return { state, url, challenge: `Bearer realm="${url}",service="svc"` };
}

function make(t: Test, now: () => number): Authenticator {
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  return new Authenticator({ upstream: new URL('http://127.0.0.1:5000'), upstreamName: 'up', credentials: anonymous, dispatcher, now });
}

t.test('a challenge whose token fetch failed is forgotten', async (t) => {
  const r = await realm(t);
  const a = make(t, Date.now);
  const e = await rejection(a.challenged(r.challenge, SCOPE, undefined));
  t.equal(e.code, 'UNAVAILABLE');
  t.equal(await a.authorization(SCOPE), undefined, 'the next request goes without credentials');
  t.equal(r.state.requests, 1, 'and does not ask the broken realm again');
  r.state.broken = false;
  t.equal(await a.challenged(r.challenge, SCOPE, undefined), 'Bearer tok-2', 'a fresh challenge is learned from the next 401');
  t.equal(await a.authorization('repository:other:pull'), 'Bearer tok-3', 'and remembered once it works');
});

t.test('a realm that breaks after working is forgotten at its first failure', async (t) => {
  let clock = 1_000_000;
  const r = await realm(t);
  r.state.broken = false;
  const a = make(t, () => clock);
  t.equal(await a.challenged(r.challenge, SCOPE, undefined), 'Bearer tok-1');
  r.state.broken = true;
  clock += 301_000; // the token expired
  t.equal((await rejection(a.authorization(SCOPE))).code, 'UNAVAILABLE', 'the failure surfaces');
  t.equal(await a.authorization(SCOPE), undefined, 'then the challenge is forgotten');
  t.equal(r.state.requests, 2);
});

t.test('failed token fetches are bounded per window; then the realm is asked again', async (t) => {
  let clock = 5_000_000;
  const r = await realm(t);
  const a = make(t, () => clock);
  for (let i = 0; i < 5; i++) {
    clock += 100;
    t.equal((await rejection(a.challenged(r.challenge, `repository:r${i}:pull`, undefined))).code, 'UNAVAILABLE', `fetch ${i} fails`);
  }
  t.equal(r.state.requests, 5);
  r.state.broken = false; // fixed, but we are not asking yet
  let refused: RegistryError | undefined;
  for (let i = 0; i < 50; i++) refused = await rejection(a.challenged(r.challenge, SCOPE, undefined));
  t.equal(r.state.requests, 5, '50 more challenges within the window: the realm is not asked');
  t.equal(refused?.code, 'UNAVAILABLE');
  t.equal(refused?.status, 503);
  t.match(refused?.message ?? '', /token endpoint failed 5 times/);
  t.ok(Number(refused?.headers['Retry-After']) >= 1 && Number(refused?.headers['Retry-After']) <= 10, `Retry-After: ${refused?.headers['Retry-After']}`);
  t.equal(await a.authorization(SCOPE), undefined, 'nothing is remembered meanwhile');
  clock += 10_000; // the window has passed
  t.equal(await a.challenged(r.challenge, SCOPE, undefined), 'Bearer tok-6', 'asked again, and it works');
  r.state.broken = true;
  clock += 1;
  t.equal((await rejection(a.challenged(r.challenge, 'repository:again:pull', undefined))).code, 'UNAVAILABLE');
  t.equal(r.state.requests, 7, 'a success cleared the count: the next failure asked the realm');
});

t.test('concurrent challenges of a broken realm cost one fetch', async (t) => {
  const r = await realm(t);
  const a = make(t, Date.now);
  const errors = await Promise.all(Array.from({ length: 20 }, () => rejection(a.challenged(r.challenge, SCOPE, undefined))));
  t.ok(errors.every((e) => e.code === 'UNAVAILABLE'));
  t.equal(r.state.requests, 1);
});

t.test('a redirect is not followed; a huge Content-Length is not read', async (t) => {
  let followed = 0;
  const target = http.createServer((_q, res) => {
    followed++;
    res.end('{"token":"elsewhere"}');
  });
  await new Promise<void>((resolve) => target.listen(0, '127.0.0.1', resolve));
  let sent = 0;
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith('/redirect')) {
      res.writeHead(307, { location: `http://127.0.0.1:${(target.address() as AddressInfo).port}/token` }).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(1 << 30) });
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    const pump = (): void => {
      while (!res.destroyed && sent < 1 << 30) {
        sent += chunk.length;
        if (!res.write(chunk)) return void res.once('drain', pump);
      }
    };
    res.on('error', () => undefined);
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of [server, target]) {
      s.closeAllConnections();
      s.close();
    }
  });
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const a = make(t, Date.now);
  const redirected = await rejection(a.challenged(`Bearer realm="${base}/redirect"`, SCOPE, undefined));
  t.match(redirected.message, /answered 307 \(a redirect, not followed\)/);
  t.equal(followed, 0, 'the redirect target got no request');
  const huge = await rejection(a.challenged(`Bearer realm="${base}/huge"`, SCOPE, undefined));
  t.match(huge.message, /exceeds 1048576 bytes/);
  t.ok(sent < 32 << 20, `the body was not read (${sent} of ${1 << 30} bytes sent)`);
});
