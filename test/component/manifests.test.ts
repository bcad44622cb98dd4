// Manifests through the proxy in-process: headers as clients see them, the tag TTL and its
// revalidation, stale answers when the upstream fails, and content that is never cached.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { OCI_INDEX, OCI_MANIFEST } from '../../src/oci/manifest.js';
import { component, errorCodes } from '../helpers/component.js';

const REPO = 'team/app';
const url = (ref: string) => `/v2/${REPO}/manifests/${ref}`;

t.test('by tag and by digest: the body with its Content-Type, Docker-Content-Digest, ETag and Content-Length', async (t) => {
  const { app, upstream } = await component(t);
  const img = upstream.pushImage(REPO, 'v1', [randomBytes(100)]);
  for (const ref of ['v1', img.digest]) {
    const res = await app.inject({ url: url(ref) });
    t.equal(res.statusCode, 200, `${ref.slice(0, 12)}: 200`);
    t.same(res.rawPayload, img.body, `${ref.slice(0, 12)}: the upstream's bytes`);
    t.equal(res.headers['content-type'], OCI_MANIFEST);
    t.equal(res.headers['docker-content-digest'], img.digest);
    t.equal(res.headers.etag, `"${img.digest}"`);
    t.equal(res.headers['content-length'], String(img.body.length));
    t.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    t.equal(res.headers.warning, undefined, 'not stale');
  }
  const head = await app.inject({ method: 'HEAD', url: url('v1') });
  t.equal(head.statusCode, 200);
  t.equal(head.payload, '', 'HEAD: no body');
  t.equal(head.headers['content-length'], String(img.body.length), 'HEAD: the length of the GET');
  t.equal(head.headers['docker-content-digest'], img.digest, 'HEAD: the digest');
  t.equal(upstream.count('getManifest'), 1, 'one upstream GET for all of this: the digest was cached by the tag pull');
});

t.test('a tag within its TTL: no upstream call; past it, one HEAD, and a GET only when the tag moved', async (t) => {
  const { app, upstream, clock } = await component(t, { tagTtlMs: 10_000 });
  const first = upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  t.equal((await app.inject({ url: url('v1') })).headers['docker-content-digest'], first.digest);
  upstream.reset();

  clock.advance(9_000);
  t.equal((await app.inject({ url: url('v1') })).statusCode, 200);
  t.same(upstream.calls, [], 'within the TTL: zero upstream calls');

  clock.advance(2_000);
  t.equal((await app.inject({ url: url('v1') })).headers['docker-content-digest'], first.digest);
  t.equal(upstream.count('headManifest', 'v1'), 1, 'past the TTL: revalidated with one HEAD');
  t.equal(upstream.count('getManifest'), 0, 'unchanged: no GET');
  upstream.reset();
  t.equal((await app.inject({ url: url('v1') })).statusCode, 200);
  t.same(upstream.calls, [], 'the HEAD renewed the TTL');

  const moved = upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  clock.advance(11_000);
  const res = await app.inject({ url: url('v1') });
  t.equal(res.headers['docker-content-digest'], moved.digest, 'the moved tag is served');
  t.same(res.rawPayload, moved.body);
  t.equal(upstream.count('getManifest', 'v1'), 1, 'one GET for the moved tag');

  upstream.reset();
  clock.advance(60_000);
  for (const method of ['GET', 'HEAD'] as const) t.equal((await app.inject({ method, url: url(first.digest) })).statusCode, 200);
  t.same(upstream.calls, [], 'by digest, whatever the TTL: immutable, never asked again');
});

t.test('concurrent pulls of one uncached tag: one upstream GET', async (t) => {
  const { app, upstream } = await component(t);
  const img = upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  upstream.fault({ delayMs: 50 }, 'getManifest');
  const all = await Promise.all(Array.from({ length: 8 }, () => app.inject({ url: url('v1') })));
  t.same(all.map((r) => r.headers['docker-content-digest']), Array(8).fill(img.digest));
  t.equal(upstream.count('getManifest'), 1, 'one GET for eight clients');
});

t.test('the upstream failing past the TTL: the cached tag, marked stale (Warning: 110)', async (t) => {
  const failures = [
    ['503', { status: 503 }],
    ['unreachable', { unreachable: true }],
    ['429', { status: 429 }],
    ['slower than the revalidation deadline', { delayMs: 5_000 }],
  ] as const;
  for (const [what, fault] of failures) {
    t.test(what, async (t) => {
      const { app, upstream, clock } = await component(t, { tagTtlMs: 1_000, revalidateTimeoutMs: 50 });
      const img = upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
      t.equal((await app.inject({ url: url('v1') })).statusCode, 200);
      clock.advance(2_000);
      upstream.fault(fault);
      upstream.reset();
      const res = await app.inject({ url: url('v1') });
      t.equal(res.statusCode, 200, 'served');
      t.same(res.rawPayload, img.body, 'the cached manifest');
      t.match(res.headers.warning, /^110 /, 'marked stale');
      t.equal(upstream.count('headManifest', 'v1'), 1, 'the upstream was asked');

      upstream.fault(undefined);
      clock.advance(11_000); // past the health window, should the failures have counted
      const healed = await app.inject({ url: url('v1') });
      t.equal(healed.headers.warning, undefined, 'revalidated once the upstream answers again: fresh');
    });
  }
});

t.test('an upstream that failed several times in a row is not asked: the cached tag is served stale at once', async (t) => {
  const { app, upstream, clock } = await component(t, { tagTtlMs: 1_000 });
  upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  upstream.pushImage(REPO, 'v2', [randomBytes(10)]);
  for (const tag of ['v1', 'v2']) t.equal((await app.inject({ url: url(tag) })).statusCode, 200);
  clock.advance(2_000);
  upstream.fault({ status: 503 });
  for (let i = 0; i < 3; i++) await app.inject({ url: url(`missing-${i}`) });
  upstream.reset();
  const res = await app.inject({ url: url('v1') });
  t.match(res.headers.warning, /^110 /, 'stale');
  t.same(upstream.calls, [], 'the failing upstream was not asked');
});

t.test('a low rate limit: the cached tag is served without revalidation, and not marked stale', async (t) => {
  const { app, upstream, clock } = await component(t, { tagTtlMs: 1_000 });
  upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  t.equal((await app.inject({ url: url('v1') })).statusCode, 200);
  clock.advance(2_000);
  upstream.announced = { limit: 100, remaining: 5, windowSeconds: 3600, seenAt: clock.now() };
  upstream.reset();
  const res = await app.inject({ url: url('v1') });
  t.equal(res.statusCode, 200);
  t.equal(res.headers.warning, undefined);
  t.same(upstream.calls, [], 'no upstream call while the limit is low');
});

t.test('nothing cached and the upstream failing: its error, as an OCI body', async (t) => {
  const { app, upstream } = await component(t);
  upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  const cases = [
    [{ status: 503 }, 503, 'UNAVAILABLE'],
    [{ unreachable: true }, 503, 'UNAVAILABLE'],
    [{ status: 429, retryAfter: '42' }, 429, 'TOOMANYREQUESTS'],
    [{ status: 401 }, 403, 'DENIED'],
    [{ status: 404, code: 'MANIFEST_UNKNOWN' }, 404, 'MANIFEST_UNKNOWN'],
    [{ status: 418 }, 502, 'UNKNOWN'],
    [{ status: 500 }, 503, 'UNAVAILABLE'],
  ] as const;
  for (const [fault, status, code] of cases) {
    upstream.fault(fault);
    const res = await app.inject({ url: url('v1') });
    t.equal(res.statusCode, status, `${JSON.stringify(fault)} → ${status}`);
    t.same(errorCodes(res.payload), [code], `→ ${code}`);
    t.match(res.headers['content-type'], /^application\/json/);
    if ('retryAfter' in fault) t.equal(res.headers['retry-after'], '42', 'Retry-After passed on');
  }
  upstream.fault(undefined);
  const missing = await app.inject({ url: url('nope') });
  t.equal(missing.statusCode, 404);
  t.same(errorCodes(missing.payload), ['MANIFEST_UNKNOWN']);
  const head = await app.inject({ method: 'HEAD', url: url('nope') });
  t.equal(head.statusCode, 404);
  t.equal(head.payload, '', 'HEAD of an error: no body');
});

t.test('a manifest that does not match its digest: 502, never cached, asked again next time', async (t) => {
  const { app, upstream } = await component(t);
  const img = upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  upstream.tamper(img.digest, Buffer.from(img.body.toString().replace('amd64', 'arm64').replace('"size"', ' "size"')));
  for (const ref of ['v1', img.digest]) {
    upstream.reset();
    for (let i = 0; i < 2; i++) {
      const res = await app.inject({ url: url(ref) });
      t.equal(res.statusCode, 502, `${ref.slice(0, 12)}: 502`);
      t.same(errorCodes(res.payload), ['UNKNOWN'], 'an OCI error body');
      t.match(res.payload, /does not match its digest/);
    }
    t.equal(upstream.count('getManifest'), 2, `${ref.slice(0, 12)}: each request asked the upstream again (nothing was cached)`);
  }
  upstream.tamper(img.digest, undefined);
  const res = await app.inject({ url: url('v1') });
  t.equal(res.statusCode, 200, 'served once the upstream sends the real bytes');
  t.same(res.rawPayload, img.body);
});

t.test('a manifest that is not what its media type says: 502 MANIFEST_INVALID, never cached', async (t) => {
  const { app, upstream } = await component(t);
  upstream.putManifest(REPO, { schemaVersion: 2, mediaType: OCI_INDEX }, OCI_INDEX, 'broken');
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ url: url('broken') });
    t.equal(res.statusCode, 502);
    t.same(errorCodes(res.payload), ['MANIFEST_INVALID']);
  }
  t.equal(upstream.count('getManifest'), 2, 'asked again: nothing was cached');
});

t.test('Accept: a client that does not take the tag\'s type gets the upstream\'s answer for its Accept, never the cached type', async (t) => {
  const { app, upstream } = await component(t);
  const child = upstream.pushImage(REPO, undefined, [randomBytes(10)]);
  const index = upstream.putManifest(REPO, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: child.digest, size: child.body.length }] }, OCI_INDEX, 'multi');
  const any = await app.inject({ url: url('multi') });
  t.equal(any.headers['docker-content-digest'], index);
  const only = await app.inject({ url: url('multi'), headers: { accept: OCI_MANIFEST } });
  t.equal(only.statusCode, 404, 'the upstream has no manifest of that type for the tag');
  t.same(errorCodes(only.payload), ['MANIFEST_UNKNOWN']);
});
