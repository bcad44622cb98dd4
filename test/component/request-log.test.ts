// Each request's completion line says what a person following the log needs: method, path,
// status, body bytes, duration, what the cache did and the upstream; the upstream calls made for
// it carry its reqId; a client that leaves early shows as such; credentials never appear.
import { randomBytes } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { request } from 'undici';
import { Readiness } from '../../src/cache/readiness.js';
import { registerHealth } from '../../src/proxy/health.js';
import { component, type Component } from '../helpers/component.js';
import { valueOf } from '../helpers/metrics.js';
import { SECRETS } from '../helpers/secrets.js';
import { waitFor } from '../helpers/util.js';

const REPO = 'team/app';
const UP = 'fake.test';
type Line = Record<string, unknown>;

const completions = (c: Component): Line[] => c.serverLogs.filter((l) => l.msg === 'request completed');
const upstreamCalls = (c: Component, reqId: unknown): Line[] => c.serverLogs.filter((l) => l.msg === 'upstream' && l.reqId === reqId);

/** The completion line of the one request to `path` since `from` lines. */
function lineFor(c: Component, path: string, from = 0): Line {
  const lines = completions(c).slice(from).filter((l) => l.path === path);
  if (lines.length !== 1) throw new Error(`${lines.length} completion lines for ${path}`);
  return lines[0]!;
}

t.test('a completion line per request: what happened, with the upstream, and its upstream calls by reqId', async (t) => {
  const c = await component(t);
  const layer = randomBytes(100 << 10);
  const image = c.upstream.pushImage(REPO, 'v1', [layer]);
  const path = `/v2/${REPO}/blobs/${image.layers[0]}`;

  t.equal((await c.app.inject({ url: `${path}?ns=${UP}` })).statusCode, 200);
  const cold = lineFor(c, path);
  t.match(cold, { level: 30, method: 'GET', path, status: 200, bytes: layer.length, route: 'blob', cache: 'miss', upstream: UP, repository: REPO, aborted: false });
  t.type(cold.ms, 'number', 'its duration');
  t.type(cold.reqId, 'string', 'its request id');
  const calls = upstreamCalls(c, cold.reqId);
  t.equal(calls.length, 1, 'the upstream call made for it carries its reqId');
  t.match(calls[0], { upstream: UP, kind: 'blob', method: 'GET', status: 200, path: `/v2/${REPO}/blobs/${image.layers[0]}` });

  const seen = completions(c).length;
  await c.fillsSettled();
  t.equal((await c.app.inject({ url: path })).statusCode, 200);
  const warm = lineFor(c, path, seen);
  t.match(warm, { status: 200, bytes: layer.length, cache: 'hit', upstream: UP });
  t.not(warm.reqId, cold.reqId, 'a request id of its own');
  t.same(upstreamCalls(c, warm.reqId), [], 'a hit: no upstream call');

  const head = await c.app.inject({ method: 'HEAD', url: `/v2/${REPO}/manifests/v1` });
  t.equal(head.statusCode, 200);
  t.match(lineFor(c, `/v2/${REPO}/manifests/v1`), { method: 'HEAD', status: 200, bytes: 0, route: 'manifest', cache: 'miss' });
});

t.test('stale, coalesced and failed requests say so', async (t) => {
  const c = await component(t, { tagTtlMs: 10_000 });
  const image = c.upstream.pushImage(REPO, 'v1', [randomBytes(64 << 10)]);
  const path = `/v2/${REPO}/blobs/${image.layers[0]}`;
  c.upstream.fault({ delayMs: 100 }, 'getBlob');
  await Promise.all([0, 1].map(() => c.app.inject({ url: path })));
  const both = completions(c).filter((l) => l.path === path).map((l) => l.cache).sort();
  t.same(both, ['coalesced', 'miss'], 'two concurrent cold requests: one miss, one coalesced');

  t.equal((await c.app.inject({ url: `/v2/${REPO}/manifests/v1` })).statusCode, 200);
  c.clock.advance(11_000);
  c.upstream.fault({ status: 503, code: 'UNAVAILABLE' });
  const seen = completions(c).length;
  t.equal((await c.app.inject({ url: `/v2/${REPO}/manifests/v1` })).statusCode, 200);
  const stale = lineFor(c, `/v2/${REPO}/manifests/v1`, seen);
  t.match(stale, { status: 200, cache: 'stale', upstream: UP });
  t.match(upstreamCalls(c, stale.reqId), [{ method: 'HEAD', status: 503 }], 'the failed revalidation, under the same reqId');

  const missing = `/v2/${REPO}/manifests/v2`;
  t.equal((await c.app.inject({ url: missing })).statusCode, 503);
  const failed = lineFor(c, missing);
  t.match(failed, { status: 503, route: 'manifest', upstream: UP });
  t.equal(failed.cache, undefined, 'an error served nothing from the cache');
});

t.test('a client that leaves before the answer: status 499, aborted', async (t) => {
  const c = await component(t);
  c.upstream.pushImage(REPO, 'v1', [randomBytes(100)]);
  c.upstream.fault({ delayMs: 1000 }, 'getManifest');
  await c.app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = c.app.server.address() as AddressInfo;
  const path = `/v2/${REPO}/manifests/v1`;
  const leave = new AbortController();
  const pending = request(`http://127.0.0.1:${port}${path}`, { signal: leave.signal });
  // the client leaves once its request is being served (waiting on the upstream)
  await waitFor(() => c.upstream.count('getManifest') > 0, { timeoutMs: 5000, intervalMs: 10, what: 'the upstream call' });
  leave.abort();
  await t.rejects(pending);
  const line = await waitFor(() => completions(c).find((l) => l.path === path), { timeoutMs: 5000, intervalMs: 20, what: 'the completion line' });
  t.match(line, { status: 499, aborted: true, bytes: 0, route: 'manifest' });
});

t.test('credentials a client sends never reach the log', async (t) => {
  const c = await component(t);
  const image = c.upstream.pushImage(REPO, 'v1', [randomBytes(100)]);
  const basic = `Basic ${Buffer.from(`alice:${SECRETS.registryPassword}`).toString('base64')}`;
  for (const url of [`/v2/${REPO}/manifests/v1`, `/v2/${REPO}/blobs/${image.layers[0]}`, '/v2/nothing/here', '/metrics']) {
    await c.app.inject({ url, headers: { authorization: basic } });
  }
  const text = JSON.stringify(c.serverLogs);
  t.ok(completions(c).length >= 4, 'the requests were logged');
  t.match(lineFor(c, `/v2/${REPO}/manifests/v1`), { user: 'alice', status: 200 }, "the client's user name, not its password");
  t.notMatch(text, SECRETS.registryPassword);
  t.notMatch(text, basic.slice('Basic '.length));
});

t.test('scrapes and health probes: counted under their route kind, logged at debug only', async (t) => {
  const c = await component(t);
  registerHealth(c.app, new Readiness([]));
  for (const url of ['/healthz', '/readyz', '/metrics', '/nothing']) await c.app.inject({ url });
  const levels = Object.fromEntries(completions(c).map((l) => [l.path, l.level]));
  t.same(levels, { '/healthz': 20, '/readyz': 20, '/metrics': 20, '/nothing': 30 }, 'a 2xx outside /v2/ at debug; a 404 at info');
  const m = (await c.app.inject({ url: '/metrics' })).payload;
  t.equal(valueOf(m, 'pullthrough_http_requests_total', { route: 'health', status: '200' }), 2);
  t.equal(valueOf(m, 'pullthrough_http_requests_total', { route: 'metrics', status: '200' }), 1);
  t.equal(valueOf(m, 'pullthrough_http_requests_total', { route: 'other', status: '404' }), 1);
});
