// Multi-range GETs of a cached blob: overlapping and out-of-order parts are coalesced, so the
// answer never holds more than the blob plus the part headers; one range left is a plain 206.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { hostileSetup } from '../helpers/hostile-registry.js';
import { fillsSettled } from '../helpers/metrics.js';
import type { Test } from '../helpers/util.js';

async function cachedBlob(t: Test, size: number) {
  const { reg, proxy } = await hostileSetup(t);
  const blob = randomBytes(size);
  const digest = reg.addBlob(blob);
  const url = `${proxy.url}/v2/hostile/lib/x/blobs/${digest}`;
  const full = await fetch(url);
  t.same(Buffer.from(await full.arrayBuffer()), blob, 'cached by a full GET');
  await fillsSettled(proxy.url); // during the fill, several ranges are answered with the whole blob
  return { blob, url };
}

async function ranged(url: string, range: string) {
  const res = await fetch(url, { headers: { range } });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

t.test('64 overlapping "0-" parts: one plain 206 of the blob, not 64 copies', async (t) => {
  const { blob, url } = await cachedBlob(t, 100_000);
  const res = await ranged(url, `bytes=${Array(64).fill('0-').join(', ')}`);
  t.equal(res.status, 206);
  t.equal(res.headers.get('content-range'), `bytes 0-${blob.length - 1}/${blob.length}`);
  t.equal(res.headers.get('content-type'), 'application/octet-stream', 'no multipart for one part');
  t.equal(Number(res.headers.get('content-length')), blob.length);
  t.same(res.body, blob);
});

t.test('overlapping, adjacent and out-of-order parts: merged, ascending, each byte once', async (t) => {
  const { blob, url } = await cachedBlob(t, 1000);
  const res = await ranged(url, 'bytes=900-, 500-599, 0-99, 50-149, 150-199, 550-560, -50');
  t.equal(res.status, 206);
  const boundary = /boundary=(\S+)/.exec(res.headers.get('content-type') ?? '')?.[1];
  t.ok(boundary, 'multipart/byteranges');
  t.equal(Number(res.headers.get('content-length')), res.body.length, 'Content-Length is the body');
  const text = res.body.toString('latin1');
  const parts = [...text.matchAll(/Content-Range: bytes (\d+)-(\d+)\/1000\r\n\r\n/g)].map((m) => [Number(m[1]), Number(m[2]), m.index! + m[0].length] as const);
  t.same(parts.map(([s, e]) => [s, e]), [[0, 199], [500, 599], [900, 999]], 'three parts, in ascending order');
  for (const [s, e, at] of parts) t.same(res.body.subarray(at, at + e - s + 1), blob.subarray(s, e + 1), `bytes ${s}-${e}`);
  t.ok(res.body.length < 400 + 3 * 200, `the answer (${res.body.length} bytes) is the 400 bytes asked for plus three part headers`);
});

t.test('more than 64 parts: the Range is ignored and the blob sent whole (200)', async (t) => {
  const { blob, url } = await cachedBlob(t, 5000);
  const res = await ranged(url, `bytes=${Array.from({ length: 65 }, (_, i) => `${i * 10}-${i * 10 + 5}`).join(',')}`);
  t.equal(res.status, 200);
  t.same(res.body, blob);
});
