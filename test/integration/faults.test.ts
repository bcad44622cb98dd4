// pullthrough in front of a real docker-registry, with a fault-injecting hop between them:
// single-flight fills and their fan-out, broken and corrupt upstream streams, Range on a miss,
// stale-if-error, rate-limit conservation, eviction under load, an upstream that is gone.
import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import type { IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startHop, type Hop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout, type Descriptor, type ImageLayout } from '../helpers/images.js';
import { startCapturedProxy } from '../helpers/captured-proxy.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTempDir, removeDir, sleep, waitFor, type Test } from '../helpers/util.js';

const MiB = 1 << 20;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const work = await makeTempDir('pullthrough-faults-');
t.teardown(() => removeDir(work));
const big = await makeImage({ layers: 1, layerBytes: 16 * MiB, seed: 'faults-big', dir: join(work, 'big') });
const medium = await makeImage({ layers: 2, layerBytes: 4 * MiB, seed: 'faults-medium', dir: join(work, 'medium') });
const small = await makeImage({ layers: 2, layerBytes: 256 << 10, seed: 'faults-small', dir: join(work, 'small') });
const evict = await makeImage({ layers: 4, layerBytes: 1 * MiB, seed: 'faults-evict', dir: join(work, 'evict') });

const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(big.dir, `${registry.host}/team/big:v1`);
await pushLayout(medium.dir, `${registry.host}/team/medium:v1`);
await pushLayout(small.dir, `${registry.host}/team/small:v1`);
await pushLayout(small.dir, `${registry.host}/team/small:v2`);
await pushLayout(evict.dir, `${registry.host}/team/evict:v1`);

const layerOf = (image: ImageLayout, i: number): Descriptor => image.images[0]!.layers[i]!;
const hexOf = (digest: string): string => digest.slice('sha256:'.length);
const blobFile = (cacheDir: string, digest: string): string => join(cacheDir, 'blobs', 'sha256', hexOf(digest).slice(0, 2), hexOf(digest));
const layerBytes = (image: ImageLayout, digest: string): Promise<Buffer> => readFile(join(image.dir, 'blobs', 'sha256', hexOf(digest)));
const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function tmpEntries(cacheDir: string): Promise<string[]> {
  return readdir(join(cacheDir, 'tmp'));
}

/** Bytes of every file under <cacheDir>/blobs (files vanishing mid-walk count as gone). */
async function blobBytes(cacheDir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(join(cacheDir, 'blobs'), { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    total += await stat(join(e.parentPath, e.name)).then(
      (s) => s.size,
      () => 0,
    );
  }
  return total;
}

interface Env<P extends Proxy = Proxy> {
  hop: Hop;
  proxy: P;
}

/** A fresh hop in front of the shared registry and a fresh pullthrough (own cache) in front of it. */
async function setup(t: Test, doc: Record<string, unknown> = {}): Promise<Env> {
  return setupWith(t, startProxy, doc);
}

async function setupWith<P extends Proxy>(t: Test, start: (o: { configDoc: Record<string, unknown> }) => Promise<P>, doc: Record<string, unknown> = {}): Promise<Env<P>> {
  const hop = await startHop(registry.url);
  const proxy = await start({ configDoc: { upstreams: [{ name: 'up.test', url: hop.url }], retries: 2, ...doc } });
  // the hop first, so upstream requests still in flight fail fast instead of holding up the proxy's close
  t.teardown(async () => {
    await hop.close();
    await proxy.stop();
  });
  return { hop, proxy };
}

interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  /** body bytes received */
  length: number;
  /** sha256 of the bytes received */
  digest: string;
  /** the body, when asked to keep it */
  body: Buffer | undefined;
  /** how the body broke off, if it did */
  error: string | undefined;
}

interface GetOptions {
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  signal?: AbortSignal;
  keep?: boolean;
  /** called after each chunk with the bytes received so far; awaiting it pauses reading */
  onChunk?: (received: number) => unknown;
}

/** One request through pullthrough, its body hashed as it streams in; a broken body is recorded, not thrown. */
async function get(url: string, o: GetOptions = {}): Promise<Got> {
  const res = await request(url, { method: o.method ?? 'GET', headers: o.headers ?? {}, signal: o.signal });
  const hash = createHash('sha256');
  const chunks: Buffer[] = [];
  let length = 0;
  let error: string | undefined;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      hash.update(chunk);
      length += chunk.length;
      if (o.keep) chunks.push(chunk);
      await o.onChunk?.(length);
    }
  } catch (e) {
    error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  }
  return { status: res.statusCode, headers: res.headers, length, digest: `sha256:${hash.digest('hex')}`, body: o.keep ? Buffer.concat(chunks) : undefined, error };
}

const blobUrl = (proxy: Proxy, repo: string, digest: string): string => `${proxy.url}/v2/${repo}/blobs/${digest}`;
const blobGets = (hop: Hop, digest: string, ranged?: boolean) => hop.count({ method: 'GET', pathIncludes: digest, ...(ranged === undefined ? {} : { ranged }) });
/** A response that cannot be mistaken for a complete blob. */
const aborted = (g: Got): boolean => g.error !== undefined || g.length < Number(g.headers['content-length']);

/** Rejects if `p` takes longer than `ms`: a hang fails the test instead of stalling it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

t.test('a cold blob: one upstream GET for 32 concurrent clients; late, paused and departing clients', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = layerOf(big, 0);
  const url = blobUrl(proxy, 'team/big', layer.digest);
  Object.assign(hop.faults, { throttleBytesPerSec: 12 * MiB }); // ~1.4 s for the whole layer

  // a client that reads 1 MiB, then stops reading until released
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  t.teardown(() => release()); // never leave it hanging, even when an assertion below throws
  let pausedRead = 0;
  let pausedDone = false;
  const paused = get(url, { onChunk: (n) => ((pausedRead = n) >= MiB ? gate : undefined) }).finally(() => (pausedDone = true));
  // a client that reads 1 MiB, then hangs up
  const leaving = new AbortController();
  const leaver = get(url, { signal: leaving.signal, onChunk: (n) => n >= MiB && leaving.abort() });
  const crowd = Array.from({ length: 32 }, () => get(url));

  const upstreamGet = await waitFor(() => hop.log.find((e) => e.method === 'GET' && e.path.includes(layer.digest) && e.bytes >= layer.size / 2), {
    timeoutMs: 20_000,
    intervalMs: 5,
    what: 'half of the layer to arrive upstream',
  });
  t.ok(upstreamGet.bytes < layer.size, `the late client joins mid-fill (${upstreamGet.bytes} of ${layer.size} bytes upstream)`);
  const late = get(url);

  const results = await within(Promise.all(crowd), 30_000, 'the 32 concurrent clients');
  t.equal(results.filter((r) => r.status === 200 && r.digest === layer.digest && r.length === layer.size).length, 32, '32 complete bodies, each hashing to the digest');
  const lateResult = await within(late, 30_000, 'the late client');
  t.equal(lateResult.digest, layer.digest, 'the late joiner gets the whole blob, correct');
  t.notOk(pausedDone, 'the others finished while one client was still paused');
  t.ok(pausedRead < layer.size, `the paused client had read ${pausedRead} bytes`);
  await waitFor(() => exists(blobFile(proxy.cacheDir, layer.digest)), { timeoutMs: 10_000, what: 'the blob to be cached while a client is paused' });
  t.pass('the fill completed and was cached while a client was paused');

  release();
  const pausedResult = await within(paused, 30_000, 'the released client');
  t.equal(pausedResult.digest, layer.digest, 'the paused client, released, gets the whole blob, correct');
  const leaverResult = await leaver;
  t.ok(leaverResult.error !== undefined && leaverResult.length < layer.size, 'the departing client hung up mid-way');
  t.equal(blobGets(hop, layer.digest), 1, 'exactly one upstream GET of the blob for 35 clients');

  hop.reset();
  const again = await get(url);
  t.equal(again.digest, layer.digest);
  t.equal(hop.log.length, 0, 'then served from the cache: zero upstream requests');
});

t.test('the only client of a fill disconnects: the fill completes and is cached anyway', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = layerOf(medium, 1);
  const url = blobUrl(proxy, 'team/medium', layer.digest);
  Object.assign(hop.faults, { throttleBytesPerSec: 4 * MiB }); // ~1 s
  const leaving = new AbortController();
  const gone = await get(url, { signal: leaving.signal, onChunk: (n) => n >= 512 << 10 && leaving.abort() });
  t.ok(gone.error !== undefined && gone.length < layer.size, `the client hung up after ${gone.length} bytes`);
  await waitFor(() => exists(blobFile(proxy.cacheDir, layer.digest)), { timeoutMs: 15_000, what: 'the abandoned fill to be cached' });
  t.equal(hop.log.find((e) => e.method === 'GET' && e.path.includes(layer.digest))?.bytes, layer.size, 'the upstream download ran to the end');
  hop.reset();
  const again = await get(url);
  t.equal(again.digest, layer.digest, 'served correct from the cache');
  t.equal(hop.log.length, 0, 'with zero upstream requests');
});

t.test('concurrent GETs of one uncached tag share one upstream manifest GET', async (t) => {
  const { hop, proxy } = await setup(t);
  // hold manifest requests a moment so all 16 clients are surely waiting on the same lookup
  Object.assign(hop.faults, { delayMs: 300, only: { pathIncludes: '/manifests/' } });
  const results = await Promise.all(
    Array.from({ length: 16 }, () => get(`${proxy.url}/v2/team/small/manifests/v1`, { headers: { accept: OCI_MANIFEST } })),
  );
  t.ok(results.every((r) => r.status === 200 && r.headers['docker-content-digest'] === small.top.digest && r.digest === small.top.digest), '16 correct manifests');
  t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/' }), 1, 'one upstream manifest GET');
  t.equal(hop.count({ method: 'HEAD', pathIncludes: '/manifests/' }), 0, 'and no HEAD');
});

t.test('concurrent GETs of one uncached manifest by digest: one upstream GET, and a client leaving fails no one', async (t) => {
  const { hop, proxy } = await setup(t);
  Object.assign(hop.faults, { delayMs: 400, only: { pathIncludes: '/manifests/' } });
  const url = `${proxy.url}/v2/team/medium/manifests/${medium.top.digest}`;
  // the first client hangs up while the shared upstream fetch is still waiting
  const leaving = new AbortController();
  const leaver = get(url, { headers: { accept: OCI_MANIFEST }, signal: leaving.signal }).catch((e: Error) => e);
  await sleep(50);
  const rest = Array.from({ length: 15 }, () => get(url, { headers: { accept: OCI_MANIFEST } }));
  await sleep(50);
  leaving.abort();
  t.ok((await leaver) instanceof Error, 'the first client went away');
  const results = await within(Promise.all(rest), 10_000, 'the other 15 clients');
  t.same(
    results.map((r) => `${r.status} ${r.digest}`),
    Array.from({ length: 15 }, () => `200 ${medium.top.digest}`),
    'the other 15 get the manifest, correct',
  );
  t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/' }), 1, 'one upstream manifest GET for 16 clients');
  hop.reset();
  t.equal((await get(url, { headers: { accept: OCI_MANIFEST } })).digest, medium.top.digest);
  t.equal(hop.log.length, 0, 'then cached: zero upstream requests');
});

t.test('upstream stream reset at 50%: resumed with a ranged request, then cached', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = layerOf(medium, 0);
  const url = blobUrl(proxy, 'team/medium', layer.digest);
  const half = Math.floor(layer.size / 2);
  Object.assign(hop.faults, { resetAfterBytes: half, times: 1 }); // the first request only
  const results = await Promise.all([get(url), get(url), get(url)]);
  t.ok(results.every((r) => r.status === 200 && r.digest === layer.digest && r.error === undefined), 'every client gets the whole blob, correct');
  t.equal(blobGets(hop, layer.digest, false), 1, 'one full upstream GET');
  const resumes = hop.log.filter((e) => e.method === 'GET' && e.path.includes(layer.digest) && e.range !== undefined);
  t.equal(resumes.length, 1, 'one ranged GET');
  // from the last byte the fill had written: where the stream broke, or a little before when bytes
  // still in flight were lost with the connection
  const from = Number(/^bytes=(\d+)-$/.exec(resumes[0]?.range ?? '')?.[1]);
  t.ok(from > 0 && from <= half, `resumed at ${from}, after some progress and not past the break at ${half}`);
  t.same({ status: resumes[0]?.status, bytes: resumes[0]?.bytes }, { status: 206, bytes: layer.size - from }, 'a 206 with the rest of the blob');
  t.same(hop.log.find((e) => e.range === undefined)?.injected, ['reset'], 'the full GET was the one cut');
  t.ok(await exists(blobFile(proxy.cacheDir, layer.digest)), 'cached');
  hop.reset();
  const again = await get(url);
  t.equal(again.digest, layer.digest);
  t.equal(hop.log.length, 0, 'second fetch: zero upstream requests');
});

t.test('upstream stream reset on every request: bounded resumes, an aborted response, nothing cached', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = layerOf(medium, 1);
  const url = blobUrl(proxy, 'team/medium', layer.digest);
  const cut = Math.floor(layer.size / 8); // each response gets 1/8 further: never reaches the end in 4 tries
  Object.assign(hop.faults, { resetAfterBytes: cut });
  const res = await get(url);
  t.equal(res.status, 200, 'headers were on their way before the first reset');
  t.ok(aborted(res), `the client sees an aborted response (${res.length} of ${res.headers['content-length']} bytes, ${res.error ?? 'no error'})`);
  t.not(res.digest, layer.digest);
  t.equal(blobGets(hop, layer.digest, false), 1, 'one full GET');
  const offsets = hop.log.filter((e) => e.range !== undefined).map((e) => Number(/^bytes=(\d+)-$/.exec(e.range!)?.[1]));
  t.equal(offsets.length, 3, `three ranged resumes, then it gave up (from ${offsets.join(', ')})`);
  t.ok(
    offsets.every((o, i) => o > (offsets[i - 1] ?? 0) && o <= (offsets[i - 1] ?? 0) + cut),
    'each resume starts after the previous one and no further than that response got',
  );
  t.notOk(await exists(blobFile(proxy.cacheDir, layer.digest)), 'no blob file');
  await waitFor(async () => (await tmpEntries(proxy.cacheDir)).length === 0, { timeoutMs: 5_000, what: 'an empty tmp dir' });
  t.pass('nothing left in tmp');

  hop.reset();
  Object.assign(hop.faults, { down: true });
  const head = await get(url, { method: 'HEAD' });
  t.equal(head.status, 503, 'HEAD with the upstream down: 503, so nothing was cached');
  const after = await get(url);
  t.equal(after.status, 503, 'GET with the upstream down: 503');
});

t.test('a corrupt byte upstream: an aborted response, nothing cached, a later clean fetch works', async (t) => {
  const { hop, proxy } = await setup(t);
  const layer = layerOf(medium, 0);
  const url = blobUrl(proxy, 'team/medium', layer.digest);
  Object.assign(hop.faults, { corruptAt: Math.floor(layer.size / 2) });
  const bad = await get(url);
  t.equal(bad.status, 200, 'headers were on their way');
  t.ok(aborted(bad), `the client sees an aborted response (${bad.length} of ${bad.headers['content-length']} bytes, ${bad.error ?? 'no error'})`);
  t.ok(bad.length < layer.size, `never a complete-looking response (${bad.length} of ${layer.size} bytes)`);
  t.same(hop.log.map((e) => e.injected), [['corrupt']], 'one upstream GET, corrupted; a digest mismatch is not resumed');
  t.notOk(await exists(blobFile(proxy.cacheDir, layer.digest)), 'no blob file');
  await waitFor(async () => (await tmpEntries(proxy.cacheDir)).length === 0, { timeoutMs: 5_000, what: 'an empty tmp dir' });
  t.pass('nothing left in tmp');

  hop.reset();
  const good = await get(url);
  t.equal(good.digest, layer.digest, 'a clean fetch afterwards is correct');
  t.ok(await exists(blobFile(proxy.cacheDir, layer.digest)), 'and cached');
});

t.test('Range on a miss with unverifiedRanges and fillOnRange: a ranged upstream request answers first, the fill follows', async (t) => {
  const { hop, proxy } = await setup(t, { cache: { unverifiedRanges: true, fillOnRange: true } });
  const layer = layerOf(big, 0);
  const url = blobUrl(proxy, 'team/big', layer.digest);
  const whole = await layerBytes(big, layer.digest);
  Object.assign(hop.faults, { throttleBytesPerSec: 4 * MiB }); // the whole layer takes ~4 s
  const start = layer.size - MiB;
  const tail = await get(url, { headers: { range: `bytes=${start}-` }, keep: true });
  const fullGet = hop.log.find((e) => e.method === 'GET' && e.range === undefined);
  t.equal(tail.status, 206);
  t.equal(tail.headers['content-range'], `bytes ${start}-${layer.size - 1}/${layer.size}`);
  t.ok(tail.body?.equals(whole.subarray(start)), 'exactly the last MiB');
  t.same(
    hop.log.filter((e) => e.range !== undefined).map((e) => ({ range: e.range, status: e.status })),
    [{ range: `bytes=${start}-`, status: 206 }],
    'answered from a ranged upstream request',
  );
  t.ok(fullGet !== undefined && fullGet.bytes < layer.size, `before the background fill finished (${fullGet?.bytes} of ${layer.size} bytes)`);

  await waitFor(() => exists(blobFile(proxy.cacheDir, layer.digest)), { timeoutMs: 20_000, intervalMs: 100, what: 'the background fill' });
  t.equal(blobGets(hop, layer.digest, false), 1, 'one full GET filled it');
  hop.reset();
  const again = await get(url);
  t.equal(again.digest, layer.digest);
  t.equal(hop.log.length, 0, 'then cached: zero upstream requests');
});

t.test('Range on a miss with unverifiedRanges, without fillOnRange: ranged upstream requests only, never a fill', async (t) => {
  const { hop, proxy } = await setup(t, { cache: { unverifiedRanges: true, fillOnRange: false } });
  const layer = layerOf(big, 0);
  const url = blobUrl(proxy, 'team/big', layer.digest);
  const whole = await layerBytes(big, layer.digest);
  const start = layer.size - 4096;
  const tail = await get(url, { headers: { range: `bytes=${start}-${layer.size - 1}` }, keep: true });
  t.equal(tail.status, 206);
  t.ok(tail.body?.equals(whole.subarray(start)), 'exactly the last 4 KiB');
  const head = await get(url, { headers: { range: 'bytes=0-65535' }, keep: true });
  t.equal(head.status, 206);
  t.equal(head.headers['content-range'], `bytes 0-65535/${layer.size}`);
  t.ok(head.body?.equals(whole.subarray(0, 65536)), 'exactly the first 64 KiB');
  await sleep(300);
  t.same(hop.log.map((e) => e.range), [`bytes=${start}-${layer.size - 1}`, 'bytes=0-65535'], 'one ranged upstream request each, and no full GET');
  t.notOk(await exists(blobFile(proxy.cacheDir, layer.digest)), 'nothing cached');

  hop.reset();
  const full = await get(url);
  t.equal(full.digest, layer.digest, 'a plain GET afterwards');
  t.equal(blobGets(hop, layer.digest, false), 1, 'is the one full GET');
  await waitFor(() => exists(blobFile(proxy.cacheDir, layer.digest)), { timeoutMs: 20_000, intervalMs: 100, what: 'the fill' });
  t.pass('and fills the cache');
});

t.test('Range during a running fill with unverifiedRanges: near the tail from the fill, far ahead by one ranged request', async (t) => {
  const { hop, proxy } = await setup(t, { cache: { unverifiedRanges: true, fillOnRange: true } });
  const layer = layerOf(big, 0);
  const url = blobUrl(proxy, 'team/big', layer.digest);
  const whole = await layerBytes(big, layer.digest);
  Object.assign(hop.faults, { throttleBytesPerSec: 4 * MiB }); // the whole layer takes ~4 s
  const filling = get(url);
  await waitFor(() => hop.log.find((e) => e.method === 'GET' && e.bytes >= 2 * MiB), { timeoutMs: 10_000, intervalMs: 5, what: 'the fill to get going' });

  const near = await get(url, { headers: { range: 'bytes=1048576-1114111' }, keep: true });
  t.equal(near.status, 206);
  t.ok(near.body?.equals(whole.subarray(MiB, MiB + 65536)), 'bytes the fill already has: correct');
  const farStart = layer.size - 65536;
  const far = await get(url, { headers: { range: `bytes=${farStart}-` }, keep: true });
  t.equal(far.status, 206);
  t.ok(far.body?.equals(whole.subarray(farStart)), 'bytes far ahead of the fill: correct');
  const fullGet = hop.log.find((e) => e.method === 'GET' && e.range === undefined);
  t.ok(fullGet !== undefined && fullGet.bytes < layer.size, `both answered before the fill finished (${fullGet?.bytes} of ${layer.size} bytes)`);
  t.same(hop.log.filter((e) => e.range !== undefined).map((e) => e.range), [`bytes=${farStart}-`], 'one ranged upstream request, for the far range only');

  t.equal((await within(filling, 30_000, 'the filling client')).digest, layer.digest);
  t.equal(blobGets(hop, layer.digest, false), 1, 'and still one full GET');
});

t.test('stale-if-error: a cached tag is served with Warning 110 when the upstream fails or is slow', async (t) => {
  const { hop, proxy } = await setupWith(t, startCapturedProxy, { retries: 1, cache: { tagTtl: '0s', revalidateTimeout: '500ms' } });
  /** the warnings logged so far that say a cached tag was served stale */
  const staleWarnings = () => proxy.logs().filter((l) => l.level === 40 && l.tag === 'v1' && /serving the cached (manifest|tag)/.test(String(l.msg))).length;
  const url = `${proxy.url}/v2/team/small/manifests/v1`;
  const warm = await get(url, { headers: { accept: OCI_MANIFEST } });
  t.equal(warm.status, 200);
  t.notOk(warm.headers.warning, 'fresh from upstream: no warning');

  const cases: [string, Partial<Hop['faults']>][] = [
    ['503', { status: 503 }],
    ['429', { status: 429, retryAfter: '30' }],
    ['down', { down: true }],
    ['slow (10 s)', { delayMs: 10_000 }],
  ];
  for (const [name, fault] of cases) {
    for (const method of ['GET', 'HEAD'] as const) {
      hop.reset();
      Object.assign(hop.faults, fault);
      const warned = staleWarnings();
      const t0 = Date.now();
      const res = await get(url, { method, headers: { accept: OCI_MANIFEST } });
      const ms = Date.now() - t0;
      t.equal(res.status, 200, `${name}, ${method}: 200`);
      t.equal(staleWarnings(), warned + 1, `${name}, ${method}: a warning in the log`);
      t.match(String(res.headers.warning), /^110 .*Response is Stale/, `${name}, ${method}: Warning: 110`);
      t.equal(res.headers['docker-content-digest'], small.top.digest, `${name}, ${method}: the cached manifest`);
      if (method === 'GET') t.equal(res.digest, small.top.digest, `${name}: its bytes`);
      if (fault.delayMs) t.ok(ms < 5_000, `${name}, ${method}: served stale after ${ms} ms rather than waiting for the upstream`);
      t.ok(hop.log.length >= 1 || fault.down, `${name}, ${method}: the upstream was asked`);
    }
  }
  hop.reset();
  const fresh = await get(url, { headers: { accept: OCI_MANIFEST } });
  t.equal(fresh.status, 200);
  t.notOk(fresh.headers.warning, 'upstream back: no warning');
  t.equal(hop.count({ method: 'HEAD', pathIncludes: '/manifests/v1' }), 1, 'revalidated with a HEAD');
});

t.test('stale-if-error: an upstream that refuses connections', async (t) => {
  const { hop, proxy } = await setup(t, { cache: { tagTtl: '0s' } });
  const url = `${proxy.url}/v2/team/small/manifests/v1`;
  t.equal((await get(url, { headers: { accept: OCI_MANIFEST } })).status, 200, 'warm');
  await hop.close(); // nothing listens on the upstream's port any more: ECONNREFUSED
  for (const method of ['GET', 'HEAD'] as const) {
    const res = await within(get(url, { method, headers: { accept: OCI_MANIFEST } }), 5_000, `${method} with the upstream refusing`);
    t.equal(res.status, 200, `${method}: 200`);
    t.match(String(res.headers.warning), /^110 /, `${method}: marked stale`);
    t.equal(res.headers['docker-content-digest'], small.top.digest, `${method}: the cached manifest`);
  }
});

t.test('stale-if-error: a revalidation deadline that passes during retry backoff still serves the cached tag', async (t) => {
  const { hop, proxy } = await setup(t, { retries: 5, cache: { tagTtl: '0s', revalidateTimeout: '300ms' } });
  const url = `${proxy.url}/v2/team/small/manifests/v2`;
  t.equal((await get(url, { headers: { accept: OCI_MANIFEST } })).status, 200, 'warm');
  hop.reset();
  Object.assign(hop.faults, { down: true }); // every attempt fails at once; the backoff outlasts the deadline
  const res = await within(get(url, { headers: { accept: OCI_MANIFEST } }), 5_000, 'the stale answer');
  t.equal(res.status, 200, 'served, not an error');
  t.match(String(res.headers.warning), /^110 /, 'marked stale');
  t.equal(res.digest, small.top.digest, 'the cached manifest');
});

t.test("rate-limit conservation from the upstream's ratelimit-remaining", async (t) => {
  const { hop, proxy } = await setup(t, { cache: { tagTtl: '0s' } });
  const url = `${proxy.url}/v2/team/small/manifests/v1`;
  const accept = { accept: OCI_MANIFEST };
  const rateLimit = (remaining: string) => Object.assign(hop.faults, { headers: { 'ratelimit-limit': '100;w=60', 'ratelimit-remaining': remaining } });
  /** an upstream response that carries the current headers without touching tag v1: HEAD of an uncached blob */
  const announce = async () => {
    const r = await get(blobUrl(proxy, 'team/small', layerOf(small, 0).digest), { method: 'HEAD' });
    t.equal(r.status, 200);
  };

  rateLimit('2;w=60');
  const first = await get(url, { headers: accept });
  t.equal(first.status, 200);
  t.same(hop.log.find((e) => e.method === 'GET')?.injected, ['headers'], 'the upstream manifest response carried ratelimit-remaining: 2');
  hop.reset();
  for (let i = 0; i < 3; i++) {
    const res = await get(url, { headers: accept });
    t.equal(res.digest, small.top.digest, `pull ${i + 1} while conserving: the cached manifest`);
    t.notOk(res.headers.warning, 'served as fresh, without a warning');
  }
  t.equal(hop.log.length, 0, 'tagTtl 0s, yet zero upstream requests while the limit is nearly used up');

  rateLimit('90;w=60');
  await announce();
  hop.reset();
  const revalidated = await get(url, { headers: accept });
  t.equal(revalidated.digest, small.top.digest);
  t.equal(hop.count({ method: 'HEAD', pathIncludes: '/manifests/v1' }), 1, 'with plenty remaining: revalidated as usual');

  // a low figure only holds for its window
  rateLimit('2;w=2');
  await announce();
  hop.reset();
  await get(url, { headers: accept });
  t.equal(hop.log.length, 0, 'low again: no upstream request');
  await sleep(2_200);
  await get(url, { headers: accept });
  t.equal(hop.count({ method: 'HEAD', pathIncludes: '/manifests/v1' }), 1, 'once the announced window passed: revalidated');
});

t.test('eviction under load: the size bound holds, every response is correct, evicted blobs come back', async (t) => {
  const layers = evict.images[0]!.layers;
  const largest = Math.max(...layers.map((l) => l.size));
  const maxSize = Math.floor(largest * 1.5);
  const { hop, proxy } = await setup(t, { cache: { maxSize } });
  const url = (l: Descriptor) => blobUrl(proxy, 'team/evict', l.digest);

  let peak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await blobBytes(proxy.cacheDir));
      await sleep(20);
    }
  })();
  const results: { layer: Descriptor; got: Got }[] = [];
  for (let round = 0; round < 6; round++) {
    // every layer twice per round, in a different order each round
    const order = [...layers, ...layers].sort(() => Math.random() - 0.5);
    results.push(...(await within(Promise.all(order.map(async (layer) => ({ layer, got: await get(url(layer)) }))), 30_000, `round ${round + 1}`)));
  }
  sampling = false;
  await sampler;

  const wrong = results.filter(({ layer, got }) => got.status !== 200 || got.digest !== layer.digest || got.error !== undefined);
  t.same(wrong.map(({ layer, got }) => ({ digest: layer.digest, status: got.status, error: got.error })), [], `all ${results.length} responses correct`);
  const upstreamGets = hop.count({ method: 'GET', pathIncludes: '/blobs/' });
  t.ok(upstreamGets > layers.length, `evicted blobs were fetched again (${upstreamGets} upstream GETs for ${layers.length} blobs)`);
  await waitFor(async () => (await tmpEntries(proxy.cacheDir)).length === 0, { timeoutMs: 5_000, what: 'fills to settle' });
  const idle = await blobBytes(proxy.cacheDir);
  t.ok(idle <= maxSize, `once idle the cache holds ${idle} bytes ≤ maxSize ${maxSize}`);
  // under load the bound may be passed by one blob, between a new blob's arrival and the eviction it causes
  t.ok(peak <= maxSize + largest, `under load it held at most ${peak} bytes ≤ maxSize + one blob (${maxSize + largest})`);

  const present = await Promise.all(layers.map((l) => exists(blobFile(proxy.cacheDir, l.digest))));
  const gone = layers.find((_, i) => !present[i])!;
  t.ok(gone, 'at least one layer was evicted');
  hop.reset();
  const back = await get(url(gone));
  t.equal(back.digest, gone.digest, 'an evicted blob is fetched again, correct');
  t.equal(blobGets(hop, gone.digest), 1, 'with one upstream GET');
  t.ok(await exists(blobFile(proxy.cacheDir, gone.digest)), 'and cached again');
  t.ok((await blobBytes(proxy.cacheDir)) <= maxSize, 'still within maxSize');
});

t.test('a blob being served from the cache is not evicted until its response ends', async (t) => {
  const a = layerOf(big, 0);
  const b = layerOf(medium, 0);
  const maxSize = a.size + MiB; // room for A, not for A and B
  const { proxy } = await setup(t, { cache: { maxSize } });
  const aUrl = blobUrl(proxy, 'team/big', a.digest);
  t.equal((await get(aUrl)).digest, a.digest, 'A cached');

  // a client reading A from the cache stops after 256 KiB; A's read stream on the server stays open
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  t.teardown(() => release());
  let read = 0;
  const slow = get(aUrl, { onChunk: (n) => ((read = n) >= 256 << 10 ? gate : undefined) });
  await waitFor(() => read >= 256 << 10, { timeoutMs: 10_000, what: 'the slow client to start reading' });

  const fetched = await get(blobUrl(proxy, 'team/medium', b.digest));
  t.equal(fetched.digest, b.digest, 'B, filled meanwhile, is served whole and correct');
  t.ok(await exists(blobFile(proxy.cacheDir, a.digest)), 'A, least recently used but being served, is still on disk');
  t.ok((await blobBytes(proxy.cacheDir)) <= maxSize, 'and the bound holds: B gave way instead');

  release();
  const done = await within(slow, 30_000, 'the released client');
  t.equal(done.digest, a.digest, 'the slow client gets all of A, correct');
  t.ok((await blobBytes(proxy.cacheDir)) <= maxSize, 'within maxSize once idle');
});

t.test('upstream stopped: cached tags and blobs still pull with skopeo', async (t) => {
  const { hop, proxy } = await setup(t, { cache: { tagTtl: '0s' } });
  const first = await pullImage(`${proxy.host}/team/small:v1`, join(work, 'down', '1'));
  t.same(first.allDigests, small.allDigests, 'warm pull');
  hop.reset();
  Object.assign(hop.faults, { down: true });
  const second = await pullImage(`${proxy.host}/team/small:v1`, join(work, 'down', '2'));
  t.same(second.allDigests, small.allDigests, 'the same image with the upstream down');
  t.equal(hop.log.filter((e) => e.status !== 0).length, 0, 'the upstream answered nothing');
});
