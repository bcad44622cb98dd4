// The upstream client passes on nothing beyond what was asked and announced: a 206 must hold the
// range asked for with a Content-Length that agrees, a body is exactly its announced length, and
// an empty answer for a non-empty blob is no blob. Against our hostile registry, so the lies reach
// the client on the wire as a real upstream would send them.
import t from 'tap';
import { Agent } from 'undici';
import { parseDigest, type Digest } from '../../../src/oci/digest.js';
import { isRegistryError } from '../../../src/oci/errors.js';
import type { RangeRequest } from '../../../src/oci/range.js';
import { Authenticator } from '../../../src/upstreams/auth/authenticator.js';
import { anonymous } from '../../../src/upstreams/auth/credentials.js';
import { RegistryClient } from '../../../src/upstreams/registry-client.js';
import type { BlobResponse } from '../../../src/upstreams/upstream.js';
import { startHostileRegistry, type HostileRegistry } from '../../helpers/hostile-registry.js';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const BLOB = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
const FORGED = 'HTTP/1.1 200 OK\r\nContent-Length: 6\r\nContent-Type: application/octet-stream\r\n\r\nforged';

async function setup(t: Test): Promise<{ reg: HostileRegistry; c: RegistryClient; digest: Digest }> {
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  // short timeouts, so that without the checks a lie fails its test instead of hanging it
  const dispatcher = new Agent({ headersTimeout: 5000, bodyTimeout: 5000 });
  t.teardown(() => dispatcher.destroy());
  const authenticator = new Authenticator({ upstream: new URL(reg.url), upstreamName: 'hostile', credentials: anonymous, dispatcher });
  const c = new RegistryClient({ name: 'hostile', url: reg.url, authenticator, dispatcher, retries: 0 });
  return { reg, c, digest: parseDigest(reg.addBlob(BLOB)) };
}

/** The body's bytes, and the error it ended with (if any). */
async function drain(res: BlobResponse): Promise<{ bytes: Buffer; error: unknown }> {
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of res.body) chunks.push(chunk as Buffer);
    return { bytes: Buffer.concat(chunks), error: undefined };
  } catch (e) {
    return { bytes: Buffer.concat(chunks), error: e };
  }
}

/** A 502 with an OCI body, as the proxy will answer it. */
async function rejects502(t: Test, p: Promise<unknown>, message: RegExp): Promise<void> {
  try {
    await p;
    t.fail('expected a 502');
  } catch (e) {
    t.ok(isRegistryError(e), 'a RegistryError');
    if (!isRegistryError(e)) return;
    t.equal(e.status, 502);
    t.equal(e.code, 'UNKNOWN');
    t.match(e.message, message);
    t.match(e.toBody(), { errors: [{ code: 'UNKNOWN', detail: { upstream: 'hostile' } }] });
  }
}

t.test('an honest 206 is the range asked for, exactly', async (t) => {
  const { c, digest } = await setup(t);
  const res = await c.getBlob('lib/x', digest, { range: { start: 100, end: 200 } });
  t.same(res.range, { start: 100, end: 200 });
  t.equal(res.size, BLOB.length);
  const { bytes, error } = await drain(res);
  t.equal(error, undefined);
  t.same(bytes, BLOB.subarray(100, 200));
});

t.test('a 206 may stop short at the end of the blob, and a suffix range is checked against the total', async (t) => {
  const { reg, c, digest } = await setup(t);
  const tail = await c.getBlob('lib/x', digest, { range: { start: 990, end: 5001 } });
  t.same(tail.range, { start: 990, end: 1000 });
  t.same((await drain(tail)).bytes, BLOB.subarray(990));
  reg.misbehave({ kind: 'contentRange', header: 'bytes 900-999/1000', start: 900, end: 999 }, { times: 1 });
  const suffix = await c.getBlob('lib/x', digest, { range: { suffix: 100 } });
  t.same(suffix.range, { start: 900, end: 1000 });
  t.same((await drain(suffix)).bytes, BLOB.subarray(900));
  reg.misbehave({ kind: 'contentRange', header: 'bytes 800-899/1000', start: 800, end: 899 }, { times: 1 });
  await rejects502(t, c.getBlob('lib/x', digest, { range: { suffix: 100 } }), /other than the one asked for/);
  reg.misbehave({ kind: 'contentRange', header: 'bytes 900-999/*', start: 900, end: 999 }, { times: 1 });
  await rejects502(t, c.getBlob('lib/x', digest, { range: { suffix: 100 } }), /suffix range of unknown total/);
});

t.test('a 206 whose Content-Length overruns its Content-Range (a response planted after it) is a 502', async (t) => {
  const { reg, c, digest } = await setup(t);
  reg.misbehave({ kind: 'rangeOverrun', bytes: FORGED });
  await rejects502(t, c.getBlob('lib/x', digest, { range: { start: 100, end: 110 } }), /Content-Length \(\d+\) other than its Content-Range's/);
});

t.test('a chunked 206 that overruns its Content-Range never passes on more, nor looks complete', async (t) => {
  const { reg, c, digest } = await setup(t);
  reg.misbehave({ kind: 'rangeOverrun', bytes: FORGED, chunked: true });
  const res = await c.getBlob('lib/x', digest, { range: { start: 100, end: 110 } });
  t.same(res.range, { start: 100, end: 110 });
  const { bytes, error } = await drain(res);
  t.ok(bytes.length < 10, `${bytes.length} of the 10 bytes passed on, not all of them`);
  t.same(bytes, BLOB.subarray(100, 100 + bytes.length), 'and those are the honest ones');
  t.match(error, { status: 502, message: /sent more than the 10 bytes it announced/ });
});

t.test('a chunked 206 that ends short of its Content-Range is an error, not a complete body', async (t) => {
  const { reg, c, digest } = await setup(t);
  reg.misbehave({
    kind: 'custom',
    answer: () => ({ raw: 'HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-99/1000\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' }),
  });
  const res = await c.getBlob('lib/x', digest, { range: { start: 0, end: 100 } });
  const { bytes, error } = await drain(res);
  t.ok(bytes.length < 5, 'the last byte is held back');
  t.match(error, { status: 502, message: /ended its body at 5 of the 100 bytes/ });
});

const lyingRanges: { name: string; asked: RangeRequest; header: string; start: number; end: number; contentLength?: number; message: RegExp; size?: number }[] = [
  { name: 'inverted', asked: { start: 100, end: 200 }, header: 'bytes 100-5/1000', start: 100, end: 199, message: /inverted/ },
  { name: 'another start', asked: { start: 100, end: 200 }, header: 'bytes 0-99/1000', start: 0, end: 99, message: /other than the one asked for/ },
  { name: 'an end beyond the asked', asked: { start: 100, end: 200 }, header: 'bytes 100-299/1000', start: 100, end: 299, message: /other than the one asked for/ },
  { name: 'an end beyond its own total', asked: { start: 100, end: undefined }, header: 'bytes 100-1999/1000', start: 100, end: 999, contentLength: 1900, message: /beyond the blob/ },
  { name: 'a total other than the known size', asked: { start: 100, end: 200 }, header: 'bytes 100-199/5000', start: 100, end: 199, size: 1000, message: /total other than the blob's size/ },
  { name: 'unparsable', asked: { start: 100, end: 200 }, header: 'bytes=100-199', start: 100, end: 199, message: /unusable Content-Range/ },
  { name: 'a figure too large to be exact', asked: { start: 100, end: undefined }, header: 'bytes 100-99999999999999999999/*', start: 100, end: 199, message: /unusable Content-Range/ },
  { name: 'zero length', asked: { start: 100, end: 200 }, header: 'bytes 100-199/1000', start: 100, end: 199, contentLength: 0, message: /Content-Length \(0\)/ },
];
for (const lie of lyingRanges) {
  t.test(`a 206 with ${lie.name} Content-Range is a 502 (${lie.header})`, async (t) => {
    const { reg, c, digest } = await setup(t);
    reg.misbehave({ kind: 'contentRange', header: lie.header, start: lie.start, end: lie.end, ...(lie.contentLength === undefined ? {} : { contentLength: lie.contentLength }) });
    await rejects502(t, c.getBlob('lib/x', digest, { range: lie.asked, size: lie.size }), lie.message);
    // the lying connection is not reused: an honest answer comes next
    reg.behave();
    const res = await c.getBlob('lib/x', digest, { range: lie.asked });
    t.equal((await drain(res)).error, undefined);
  });
}

t.test('an empty answer for a blob that is not empty is a 502, by GET and by HEAD; the empty blob is fine', async (t) => {
  const { reg, c, digest } = await setup(t);
  reg.misbehave({ kind: 'contentLength', announced: 0, bodyBytes: 0 });
  await rejects502(t, c.getBlob('lib/x', digest), /empty body for a blob that is not empty/);
  await rejects502(t, c.headBlob('lib/x', digest), /empty body for a blob that is not empty/);
  const empty = parseDigest(reg.addBlob(''));
  const res = await c.getBlob('lib/x', empty);
  t.equal(res.size, 0);
  t.same(await drain(res), { bytes: Buffer.alloc(0), error: undefined });
  t.equal(await c.headBlob('lib/x', empty), 0);
});

t.test('a whole blob of another length than the known size is a 502', async (t) => {
  const { c, digest } = await setup(t);
  await rejects502(t, c.getBlob('lib/x', digest, { size: 999 }), /sent 1000 bytes for a blob of 999/);
});

t.test('a whole blob sent chunked is held to the known size', async (t) => {
  const { reg, c, digest } = await setup(t);
  const chunked = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(BLOB.length + 6).toString(16)}\r\n`;
  reg.misbehave({ kind: 'custom', answer: () => ({ raw: Buffer.concat([Buffer.from(chunked), BLOB, Buffer.from('forged\r\n0\r\n\r\n')]) }) });
  const res = await c.getBlob('lib/x', digest, { size: BLOB.length });
  const { bytes, error } = await drain(res);
  t.ok(bytes.length < BLOB.length, 'never the whole length from a body that overran it');
  t.match(error, { status: 502 });
});
