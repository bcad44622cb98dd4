// Blobs through the proxy in-process: headers, HEAD, one upstream GET however many clients ask,
// Ranges (206, 416, multipart) and a blob that does not match its digest, never cached.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { component, errorCodes } from '../helpers/component.js';

const REPO = 'team/app';
const url = (digest: string) => `/v2/${REPO}/blobs/${digest}`;
const BLOB_HEADERS = (digest: string) => ({ 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes', 'docker-content-digest': digest, etag: `"${digest}"` });
const blobHeaders = (h: Record<string, unknown>) => Object.fromEntries(['content-type', 'accept-ranges', 'docker-content-digest', 'etag'].map((k) => [k, h[k]]));

t.test('a blob: its bytes and headers, once from the upstream, then from the cache', async (t) => {
  const { app, upstream, store } = await component(t);
  const bytes = randomBytes(300 << 10);
  const digest = upstream.putBlob(REPO, bytes);
  for (const when of ['cold', 'warm']) {
    const res = await app.inject({ url: url(digest) });
    t.equal(res.statusCode, 200, `${when}: 200`);
    t.same(res.rawPayload, bytes, `${when}: the bytes`);
    t.same(blobHeaders(res.headers), BLOB_HEADERS(digest), `${when}: the blob headers`);
    t.equal(res.headers['content-length'], String(bytes.length), `${when}: Content-Length`);
  }
  t.equal(upstream.count('getBlob', digest), 1, 'one upstream GET');
  t.ok(await store.stat({ algorithm: 'sha256', hex: digest.slice(7), value: digest }), 'kept in the store');

  upstream.reset();
  const head = await app.inject({ method: 'HEAD', url: url(digest) });
  t.equal(head.statusCode, 200);
  t.equal(head.payload, '', 'HEAD: no body');
  t.same(blobHeaders(head.headers), BLOB_HEADERS(digest), 'HEAD: the blob headers');
  t.equal(head.headers['content-length'], String(bytes.length), 'HEAD: the size');
  t.same(upstream.calls, [], 'HEAD of a cached blob: no upstream call');
});

t.test('HEAD of an uncached blob: the size from an upstream HEAD, without fetching it', async (t) => {
  const { app, upstream } = await component(t);
  const bytes = randomBytes(1000);
  const digest = upstream.putBlob(REPO, bytes);
  const head = await app.inject({ method: 'HEAD', url: url(digest) });
  t.equal(head.statusCode, 200);
  t.equal(head.headers['content-length'], '1000');
  t.equal(upstream.count('headBlob', digest), 1);
  t.equal(upstream.count('getBlob'), 0, 'no GET');
});

t.test('concurrent pulls of one uncached blob: one upstream GET, every client the whole blob', async (t) => {
  const { app, upstream } = await component(t);
  const bytes = randomBytes(1 << 20);
  const digest = upstream.putBlob(REPO, bytes);
  upstream.fault({ delayMs: 50 }, 'getBlob');
  const all = await Promise.all(Array.from({ length: 8 }, () => app.inject({ url: url(digest) })));
  for (const [i, res] of all.entries()) {
    t.equal(res.statusCode, 200, `client ${i}: 200`);
    t.ok(res.rawPayload.equals(bytes), `client ${i}: the whole blob`);
  }
  t.equal(upstream.count('getBlob', digest), 1, 'one upstream GET for eight clients');
});

t.test('Range: 206 with Content-Range and exactly the bytes, cold and warm; suffix ranges', async (t) => {
  const { app, upstream } = await component(t);
  const bytes = randomBytes(5000);
  const digest = upstream.putBlob(REPO, bytes);
  for (const when of ['cold', 'warm']) {
    const res = await app.inject({ url: url(digest), headers: { range: 'bytes=10-99' } });
    t.equal(res.statusCode, 206, `${when}: 206`);
    t.equal(res.headers['content-range'], 'bytes 10-99/5000', `${when}: Content-Range`);
    t.equal(res.headers['content-length'], '90', `${when}: Content-Length`);
    t.same(res.rawPayload, bytes.subarray(10, 100), `${when}: exactly the bytes asked for`);
    t.same(blobHeaders(res.headers), BLOB_HEADERS(digest), `${when}: the blob headers`);
  }
  const suffix = await app.inject({ url: url(digest), headers: { range: 'bytes=-16' } });
  t.equal(suffix.headers['content-range'], 'bytes 4984-4999/5000');
  t.same(suffix.rawPayload, bytes.subarray(5000 - 16), 'suffix range');
  const open = await app.inject({ url: url(digest), headers: { range: 'bytes=4990-' } });
  t.same(open.rawPayload, bytes.subarray(4990), 'open-ended range');
  t.equal(upstream.count('getBlob', digest), 1, 'the blob was fetched once, whole');
});

t.test('an unsatisfiable Range: 416 RANGE_INVALID with Content-Range bytes */size, cold and warm', async (t) => {
  const { app, upstream } = await component(t);
  const bytes = randomBytes(1000);
  const digest = upstream.putBlob(REPO, bytes);
  for (const when of ['cold', 'warm']) {
    const res = await app.inject({ url: url(digest), headers: { range: 'bytes=1000-' } });
    t.equal(res.statusCode, 416, `${when}: 416`);
    t.equal(res.headers['content-range'], 'bytes */1000', `${when}: the size`);
    t.same(errorCodes(res.payload), ['RANGE_INVALID'], `${when}: an OCI body`);
    if (when === 'cold') t.equal((await app.inject({ url: url(digest) })).statusCode, 200, 'cached by a whole GET');
  }
});

t.test('several ranges of a cached blob: multipart/byteranges, merged and ascending', async (t) => {
  const { app, upstream, fillsSettled } = await component(t);
  const bytes = randomBytes(1000);
  const digest = upstream.putBlob(REPO, bytes);
  t.equal((await app.inject({ url: url(digest) })).statusCode, 200);
  await fillsSettled(); // during the fill, several ranges are answered with the whole blob (200)
  const res = await app.inject({ url: url(digest), headers: { range: 'bytes=900-, 500-599, 0-99, 50-149, 150-199, 550-560, -50' } });
  t.equal(res.statusCode, 206);
  const boundary = /^multipart\/byteranges; boundary=(\S+)$/.exec(String(res.headers['content-type']))?.[1];
  t.ok(boundary, 'multipart/byteranges with a boundary');
  t.equal(Number(res.headers['content-length']), res.rawPayload.length, 'Content-Length is the body');
  const text = res.rawPayload.toString('latin1');
  const parts = [...text.matchAll(/Content-Range: bytes (\d+)-(\d+)\/1000\r\n\r\n/g)].map((m) => [Number(m[1]), Number(m[2]), m.index + m[0].length] as const);
  t.same(parts.map(([s, e]) => [s, e]), [[0, 199], [500, 599], [900, 999]], 'three parts, ascending');
  for (const [s, e, at] of parts) t.same(res.rawPayload.subarray(at, at + e - s + 1), bytes.subarray(s, e + 1), `bytes ${s}-${e}`);
  t.ok(text.endsWith(`\r\n--${boundary}--\r\n`), 'closed by the final boundary');

  const one = await app.inject({ url: url(digest), headers: { range: 'bytes=0-, 0-, 10-20' } });
  t.equal(one.statusCode, 206);
  t.equal(one.headers['content-type'], 'application/octet-stream', 'ranges that merge into one: a plain 206');
  t.equal(one.headers['content-range'], 'bytes 0-999/1000');
  t.same(one.rawPayload, bytes);

  const none = await app.inject({ url: url(digest), headers: { range: 'bytes=2000-, 3000-3001' } });
  t.equal(none.statusCode, 416, 'no part satisfiable: 416');
  t.same(errorCodes(none.payload), ['RANGE_INVALID']);

  const many = await app.inject({ url: url(digest), headers: { range: `bytes=${Array.from({ length: 65 }, (_, i) => `${i * 10}-${i * 10 + 5}`).join(',')}` } });
  t.equal(many.statusCode, 200, 'more than 64 parts: the Range is ignored');
  t.same(many.rawPayload, bytes);
  t.equal(upstream.count('getBlob'), 1, 'all from the cache');
});

t.test('an upstream that ignores Ranges: the range is still answered, from the whole blob', async (t) => {
  const { app, upstream } = await component(t, { unverifiedRanges: true });
  upstream.ignoreRanges = true;
  const bytes = randomBytes(3000);
  const digest = upstream.putBlob(REPO, bytes);
  const res = await app.inject({ url: url(digest), headers: { range: 'bytes=100-199' } });
  t.equal(res.statusCode, 206);
  t.equal(res.headers['content-range'], 'bytes 100-199/3000');
  t.same(res.rawPayload, bytes.subarray(100, 200));
});

t.test('with unverifiedRanges, a Range on an uncached blob is one ranged upstream GET', async (t) => {
  const { app, upstream } = await component(t, { unverifiedRanges: true });
  const bytes = randomBytes(3000);
  const digest = upstream.putBlob(REPO, bytes);
  const res = await app.inject({ url: url(digest), headers: { range: 'bytes=100-199' } });
  t.equal(res.statusCode, 206);
  t.same(res.rawPayload, bytes.subarray(100, 200));
  t.same(upstream.calls.map((c) => [c.method, c.range]), [['getBlob', { start: 100, end: 200 }]], 'the range (bytes [100, 200)), asked of the upstream');
});

t.test('a blob that does not match its digest: never served complete, never cached, fetched again next time', async (t) => {
  const { app, upstream, store } = await component(t);
  const bytes = randomBytes(200 << 10);
  const digest = upstream.putBlob(REPO, bytes);
  const corrupt = Buffer.from(bytes);
  corrupt[corrupt.length >> 1]! ^= 0xff;
  upstream.tamper(digest, corrupt);
  for (let i = 0; i < 2; i++) {
    const res = await app.inject({ url: url(digest) }).then(
      (r) => ({ ok: true as const, status: r.statusCode, body: r.rawPayload }),
      (e: Error) => ({ ok: false as const, error: e.message }),
    );
    t.notOk(res.ok && res.status === 200 && res.body.length === bytes.length, `attempt ${i}: never a complete-looking corrupt blob`);
  }
  t.equal(upstream.count('getBlob', digest), 2, 'each request asked the upstream again');
  t.equal(await store.stat({ algorithm: 'sha256', hex: digest.slice(7), value: digest }), undefined, 'nothing cached');

  const tiny = Buffer.from('x');
  const tinyDigest = upstream.putBlob(REPO, tiny);
  upstream.tamper(tinyDigest, Buffer.from('y'));
  const res = await app.inject({ url: url(tinyDigest) });
  t.equal(res.statusCode, 502, 'a mismatch found before the first byte went out: 502');
  t.same(errorCodes(res.payload), ['UNKNOWN'], 'with an OCI body');

  upstream.tamper(digest, undefined);
  const healed = await app.inject({ url: url(digest) });
  t.equal(healed.statusCode, 200);
  t.ok(healed.rawPayload.equals(bytes), 'served and cached once the upstream sends the real bytes');
});

t.test('blob errors: unknown, failing upstream, as OCI bodies', async (t) => {
  const { app, upstream } = await component(t);
  const missing = `sha256:${'0'.repeat(64)}`;
  upstream.putBlob(REPO, randomBytes(10));
  const unknown = await app.inject({ url: url(missing) });
  t.equal(unknown.statusCode, 404);
  t.same(errorCodes(unknown.payload), ['BLOB_UNKNOWN']);
  const head = await app.inject({ method: 'HEAD', url: url(missing) });
  t.equal(head.statusCode, 404, 'HEAD: 404');
  t.equal(head.payload, '', 'HEAD: no body');
  upstream.fault({ status: 503 });
  const down = await app.inject({ url: url(missing) });
  t.equal(down.statusCode, 503);
  t.same(errorCodes(down.payload), ['UNAVAILABLE']);
});
