// What one lying upstream can do to a client through pullthrough, on the client's own kept-alive
// connection: nothing past the bytes asked for, no response planted for the client's next request
// (to another upstream), no empty 200 for a blob, no Retry-After a client could trip on.
import { connect, type Socket } from 'node:net';
import t from 'tap';
import { hostileSetup, startHostileRegistry } from '../helpers/hostile-registry.js';
import { startProxy } from '../helpers/proxy.js';
import type { Test } from '../helpers/util.js';

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/**
 * One kept-alive client connection, written by hand so that we see exactly the bytes on it:
 * `ask` sends a request and reads the next response, framed by its Content-Length; undefined
 * when the proxy closed the connection first.
 */
async function keptAlive(t: Test, url: string): Promise<{ ask(path: string, headers?: Record<string, string>): Promise<Answer | undefined>; rest(): Buffer }> {
  const u = new URL(url);
  const socket: Socket = connect(Number(u.port), u.hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  t.teardown(() => socket.destroy());
  let buffered = Buffer.alloc(0);
  let closed = false;
  let wake: () => void = () => undefined;
  socket.on('data', (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    wake();
  });
  socket.on('close', () => {
    closed = true;
    wake();
  });
  socket.on('error', () => undefined);
  const parse = (): Answer | undefined => {
    const end = buffered.indexOf('\r\n\r\n');
    if (end < 0) return undefined;
    const [statusLine, ...lines] = buffered.subarray(0, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of lines) headers[line.slice(0, line.indexOf(':')).toLowerCase()] = line.slice(line.indexOf(':') + 1).trim();
    const length = Number(headers['content-length'] ?? 0);
    if (buffered.length < end + 4 + length) return undefined;
    const body = buffered.subarray(end + 4, end + 4 + length);
    buffered = buffered.subarray(end + 4 + length);
    return { status: Number(statusLine!.split(' ')[1]), headers, body };
  };
  return {
    async ask(path, headers = {}) {
      if (closed) return undefined;
      const lines = [`GET ${path} HTTP/1.1`, `Host: ${u.host}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      for (;;) {
        const answer = parse();
        if (answer) return answer;
        if (closed) return undefined;
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
    rest: () => buffered,
  };
}

const FORGED = 'HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 18\r\n\r\nforged by upstream';

/** Hostile upstream `a` and honest upstream `b` behind one pullthrough whose Ranges on uncached blobs go to the upstream. */
async function twoUpstreams(t: Test) {
  const a = await startHostileRegistry();
  t.teardown(() => a.close());
  const b = await startHostileRegistry();
  t.teardown(() => b.close());
  // cache.unverifiedRanges (with fillOnRange off) sends a Range on an uncached blob to the upstream, as it comes
  const proxy = await startProxy({ upstream: [`a=${a.url}`, `b=${b.url}`], configDoc: { retries: 0, cache: { fillOnRange: false, unverifiedRanges: true } } });
  t.teardown(() => proxy.stop());
  const blobA = Buffer.from(Array.from({ length: 4000 }, (_, i) => i % 253));
  const blobB = Buffer.from('the true blob of upstream b, the same length');
  return { a, b, proxy, blobA, blobB, digestA: a.addBlob(blobA), digestB: b.addBlob(blobB) };
}

t.test('a 206 whose body carries a planted response never answers the next request, for another upstream', async (t) => {
  const { a, proxy, blobA, blobB, digestA, digestB } = await twoUpstreams(t);
  a.misbehave({ kind: 'rangeOverrun', bytes: FORGED }, { only: { ranged: true } });
  const client = await keptAlive(t, proxy.url);
  const first = await client.ask(`/v2/a/lib/x/blobs/${digestA}`, { range: 'bytes=1000-1009' });
  t.ok(first, 'the ranged request is answered');
  if (first?.status === 206) t.same(first.body, blobA.subarray(1000, 1010), 'a 206 of exactly the bytes asked for');
  else {
    t.equal(first?.status, 502);
    t.match(JSON.parse(first?.body.toString() ?? '{}'), { errors: [{ code: 'UNKNOWN', detail: { upstream: 'a' } }] }, 'with an OCI body');
  }
  const second = await client.ask(`/v2/b/lib/y/blobs/${digestB}`);
  t.equal(second?.status, 200, 'the next request on the same connection is answered by upstream b');
  t.same(second?.body, blobB, "with b's true blob");
  t.equal(client.rest().length, 0, 'and nothing else is on the connection');
});

t.test('a chunked 206 that runs past its range passes on nothing beyond it, and plants nothing', async (t) => {
  const { a, proxy, blobA, blobB, digestA, digestB } = await twoUpstreams(t);
  a.misbehave({ kind: 'rangeOverrun', bytes: FORGED, chunked: true }, { only: { ranged: true } });
  const client = await keptAlive(t, proxy.url);
  const first = await client.ask(`/v2/a/lib/x/blobs/${digestA}`, { range: 'bytes=1000-1009' });
  // the 206 headers went out before the overrun could show: the answer breaks off short instead
  t.equal(first, undefined, 'the connection is closed before the 206 looks complete');
  t.notOk(client.rest().includes('forged'), 'no planted byte reached the client');
  t.notOk(blobA.subarray(1000, 1010).equals(client.rest().subarray(-10)), 'not the whole range');
  const next = await keptAlive(t, proxy.url);
  const second = await next.ask(`/v2/b/lib/y/blobs/${digestB}`);
  t.same(second?.body, blobB, "upstream b's true blob on the next connection");
});

t.test('an inverted Content-Range is a 502 with an OCI body, not a negative Content-Length', async (t) => {
  const { a, proxy, digestA, digestB, blobB } = await twoUpstreams(t);
  a.misbehave({ kind: 'contentRange', header: 'bytes 100-5/4000', start: 100, end: 199 }, { only: { ranged: true } });
  const client = await keptAlive(t, proxy.url);
  const first = await client.ask(`/v2/a/lib/x/blobs/${digestA}`, { range: 'bytes=100-199' });
  t.equal(first?.status, 502);
  t.notMatch(first?.headers['content-length'] ?? '', /^-/);
  t.match(JSON.parse(first?.body.toString() ?? '{}'), { errors: [{ code: 'UNKNOWN', message: /inverted Content-Range/ }] });
  const second = await client.ask(`/v2/b/lib/y/blobs/${digestB}`);
  t.same(second?.body, blobB);
});

t.test('an upstream Content-Length: 0 for a blob that is not empty is a 502, not an empty 200, and is not cached', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const blob = Buffer.from('not empty at all');
  const digest = reg.addBlob(blob);
  reg.misbehave({ kind: 'contentLength', announced: 0, bodyBytes: 0 }, { only: { pathIncludes: '/blobs/' }, times: 2 });
  const get = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`);
  t.equal(get.status, 502);
  t.match(await get.json(), { errors: [{ code: 'UNKNOWN', message: /empty body for a blob that is not empty/ }] });
  const head = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`, { method: 'HEAD' });
  t.equal(head.status, 502, 'a HEAD too');
  const good = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`);
  t.equal(good.status, 200);
  t.same(Buffer.from(await good.arrayBuffer()), blob, 'the truth, once the upstream tells it');
});

t.test("an upstream's Retry-After reaches the client only when it is sane, from the registry and from its token realm", async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const digest = reg.addBlob('rate limited');
  const retryAfter = async (): Promise<string | null> => {
    const res = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`);
    t.equal(res.status, 429);
    t.match(await res.json(), { errors: [{ code: 'TOOMANYREQUESTS' }] });
    return res.headers.get('retry-after');
  };
  for (const [sent, passed] of [['30', '30'], ['Wed, 21 Oct 2015 07:28:00 GMT', 'Wed, 21 Oct 2015 07:28:00 GMT'], ['99999999', null], ['soon', null], ['-5', null]] as const) {
    reg.misbehave({ kind: 'rateLimited', retryAfter: sent }, { times: 1 });
    t.equal(await retryAfter(), passed, `registry sent ${sent}`);
  }
  // the same through the token handshake: the registry asks for a token, the realm rate-limits
  const realm = `${reg.url}/token`;
  const challenge = { status: 401, headers: { 'WWW-Authenticate': `Bearer realm="${realm}",service="hostile"`, 'Content-Type': 'application/json' }, body: '{"errors":[{"code":"UNAUTHORIZED"}]}' };
  reg.misbehave({ kind: 'custom', answer: () => challenge }, { only: { pathIncludes: '/v2/' } });
  reg.misbehave({ kind: 'rateLimited', retryAfter: '1e9' }, { only: { pathIncludes: '/token' }, times: 1 });
  t.equal(await retryAfter(), null, 'realm sent 1e9');
  reg.misbehave({ kind: 'rateLimited', retryAfter: '60' }, { only: { pathIncludes: '/token' }, times: 1 });
  t.equal(await retryAfter(), '60', 'realm sent 60');
});
