// pullthrough with its cache in S3 (s3rver on 127.0.0.1), pulled through with skopeo: redirects
// to pre-signed URLs (and none by default), ranges passed to the bucket, a bucket that fails or
// hangs and comes back, the local tier in front of the bucket, tag revalidation, and blobs and
// manifests that a lifecycle rule removed. Counting hops sit before the upstream registry and
// before the bucket.
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DeleteObjectCommand, HeadObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { startHop, type Hop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { startS3rver } from '../helpers/s3rver.js';
import { makeTempDir, removeDir, sleep, waitFor, type Test } from '../helpers/util.js';

// the suite's limit (package.json) also when this file is run alone: it takes over a minute
t.setTimeout(300_000);

const work = await makeTempDir('pullthrough-s3-proxy-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 3, layerBytes: 1 << 20, seed: 's3-proxy', dir: join(work, 'image') });
const blobs = image.images.flatMap((img) => [img.config.digest, ...img.layers.map((l) => l.digest)]);
const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(image.dir, `${registry.host}/team/app:v1`);
const s3 = await startS3rver();
t.teardown(() => s3.stop());
// the in-process proxies find their credentials through the standard AWS chain
Object.assign(process.env, s3.env, { AWS_EC2_METADATA_DISABLED: 'true' });
const s3Client = s3.client();
t.teardown(() => s3Client.destroy());

const UPSTREAM_BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256:' } as const;
const BUCKET_BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256/' } as const;

interface Env {
  /** before the upstream registry */
  hop: Hop;
  /** before the bucket */
  bucketHop: Hop;
  prefix: string;
  proxy: Proxy;
  start(cacheDir?: string): Promise<Proxy>;
}

async function setup(t: Test, s3Settings: Record<string, unknown> = {}, cacheSettings: Record<string, unknown> = {}): Promise<Env> {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const bucketHop = await startHop(s3.endpoint);
  t.teardown(() => bucketHop.close());
  const prefix = `p-${randomUUID().slice(0, 8)}/`;
  const start = async (cacheDir?: string) => {
    const p = await startProxy({
      ...(cacheDir ? { cacheDir } : {}),
      configDoc: {
        upstreams: [{ name: 'upstream.test', url: hop.url }],
        retries: 0,
        cache: { ...cacheSettings, s3: { bucket: s3.bucket, prefix, endpoint: bucketHop.url, forcePathStyle: true, ...s3Settings } },
      },
    });
    t.teardown(() => p.stop());
    return p;
  };
  return { hop, bucketHop, prefix, proxy: await start(), start };
}

const keyOf = (prefix: string, digest: string) => `${prefix}blobs/sha256/${digest.slice('sha256:'.length)}`;
const inBucket = (prefix: string, digest: string) =>
  s3Client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: keyOf(prefix, digest) })).then(() => true, () => false);
const everyBlobInBucket = async (prefix: string) => (await Promise.all(image.allDigests.map((d) => inBucket(prefix, d)))).every(Boolean);
/** A fill's upload completes just after its last byte went to the client. */
const allInBucket = (prefix: string) => waitFor(() => everyBlobInBucket(prefix), { timeoutMs: 30_000, what: 'every blob in the bucket' });

let pulls = 0;
const pull = (proxy: Proxy) => pullImage(`${proxy.host}/team/app:v1`, join(work, `pull-${++pulls}`));

/** Pulls until every blob is in the bucket: once the bucket is back, caching resumes by itself after the pause that follows failures. */
const cachedAgain = (proxy: Proxy, prefix: string) =>
  waitFor(
    async () => {
      await pull(proxy);
      return everyBlobInBucket(prefix);
    },
    { timeoutMs: 40_000, intervalMs: 1000, what: 'the image cached once the bucket is back' },
  );

/** Once the bucket answers again: caching resumes by itself, and the next pull takes no blob from the upstream. */
async function recovers(t: Test, { hop, bucketHop, prefix, proxy }: Pick<Env, 'hop' | 'bucketHop' | 'prefix' | 'proxy'>): Promise<void> {
  bucketHop.reset();
  await cachedAgain(proxy, prefix);
  hop.reset();
  const last = await pull(proxy);
  t.same(last.allDigests, image.allDigests);
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0, 'served from the bucket again');
}

/** pullthrough_s3_errors_total or …_skipped_total, as GET /metrics shows it. */
async function s3Metric(proxy: Proxy, name: 'errors' | 'skipped'): Promise<number> {
  const text = await (await fetch(`${proxy.url}/metrics`)).text();
  return Number(new RegExp(`^pullthrough_s3_${name}_total (\\d+)$`, 'm').exec(text)?.[1]);
}

t.test('redirect: GETs of cached blobs answer 307 to a pre-signed bucket URL; skopeo follows it', async (t) => {
  const { hop, bucketHop, prefix, proxy } = await setup(t, { redirect: true, redirectTtl: '2m' });
  const first = await pull(proxy);
  t.same(first.allDigests, image.allDigests, 'a cold pull is served by the proxy itself');
  await allInBucket(prefix);

  const layer = image.images[0]!.layers[0]!;
  const res = await fetch(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { redirect: 'manual' });
  await res.arrayBuffer();
  t.equal(res.status, 307);
  const location = res.headers.get('location') ?? '';
  t.ok(location.startsWith(`${bucketHop.url}/${s3.bucket}/${keyOf(prefix, layer.digest)}?`), 'to the blob in the bucket');
  t.match(location, /X-Amz-Signature=[0-9a-f]{64}/);
  t.match(location, /X-Amz-Expires=120/);
  const direct = await fetch(location);
  const bytes = Buffer.from(await direct.arrayBuffer());
  t.equal(direct.status, 200);
  t.equal(bytes.length, layer.size, 'the bucket serves the whole blob');
  const head = await fetch(`${proxy.url}/v2/team/app/blobs/${layer.digest}`, { method: 'HEAD', redirect: 'manual' });
  t.equal(head.status, 200, 'HEAD is answered by the proxy');
  t.equal(head.headers.get('content-length'), String(layer.size));

  hop.reset();
  bucketHop.reset();
  const second = await pull(proxy);
  t.same(second.allDigests, image.allDigests, 'a warm pull through redirects has every digest');
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0, 'no upstream blob requests');
  t.ok(bucketHop.count(BUCKET_BLOB_GET) >= blobs.length, 'the client fetched the blobs from the bucket');
});

t.test('a bucket that is down: pulls stream from the upstream, nothing is cached; caching resumes when it is back', async (t) => {
  const { hop, bucketHop, prefix, proxy } = await setup(t);
  Object.assign(bucketHop.faults, { down: true });
  const first = await pull(proxy);
  t.same(first.allDigests, image.allDigests, 'the pull works without the bucket');
  t.equal(hop.count(UPSTREAM_BLOB_GET), blobs.length, 'every blob from the upstream');
  const errors = await s3Metric(proxy, 'errors');
  t.ok(errors >= 1, `bucket failures counted in /metrics (${errors})`);
  hop.reset();
  const second = await pull(proxy);
  t.same(second.allDigests, image.allDigests);
  t.equal(hop.count(UPSTREAM_BLOB_GET), blobs.length, 'nothing was cached: the upstream again');
  for (const d of blobs) t.notOk(await inBucket(prefix, d), `${d.slice(0, 19)} not in the bucket`);

  await recovers(t, { hop, bucketHop, prefix, proxy });
});

t.test('a bucket that hangs (takes requests, never answers): pulls go on without it, failures counted; it is used again once it answers', async (t) => {
  const { hop, bucketHop, prefix, proxy } = await setup(t);
  Object.assign(bucketHop.faults, { delayMs: 10 * 60_000 });
  const timedPulls = async (what: string, n: number) => {
    hop.reset();
    bucketHop.log.length = 0;
    const started = Date.now();
    const pulled = await Promise.all(Array.from({ length: n }, () => pull(proxy)));
    const took = Date.now() - started;
    for (const p of pulled) t.same(p.allDigests, image.allDigests, `${what} works`);
    // generous: each S3 request used to wait up to 2 minutes
    t.ok(took < 45_000, `${what} did not wait for the bucket (${took} ms)`);
    t.ok(hop.count(UPSTREAM_BLOB_GET) >= blobs.length, 'every blob from the upstream');
  };
  await timedPulls('the first pull', 1);
  const errors = await s3Metric(proxy, 'errors');
  t.ok(errors >= 3, `bucket failures counted in /metrics (${errors})`);
  await sleep(5500); // the pause that followed the failures (5 s) is over
  const skipped = await s3Metric(proxy, 'skipped');
  await timedPulls('each of three pulls at once after the pause', 3);
  // one probe (sent twice: the client retries once) while the other requests went without
  t.ok(bucketHop.log.length <= 4, `one request probed the bucket, the others did not ask it (${bucketHop.log.length} requests)`);
  t.ok((await s3Metric(proxy, 'skipped')) > skipped, 'the others skipped it');

  await recovers(t, { hop, bucketHop, prefix, proxy });
});

t.test('by default a cached blob is served by the proxy itself (no redirect), and a Range on it reads only that range from the bucket', async (t) => {
  const { bucketHop, prefix, proxy } = await setup(t);
  await pull(proxy);
  await allInBucket(prefix);
  const layer = image.images[0]!.layers[0]!;
  const url = `${proxy.url}/v2/team/app/blobs/${layer.digest}`;
  const whole = await fetch(url, { redirect: 'manual' });
  const bytes = Buffer.from(await whole.arrayBuffer());
  t.equal(whole.status, 200, 'no redirect');
  t.equal(whole.headers.get('location'), null);
  t.equal(bytes.length, layer.size);

  bucketHop.reset();
  const ranged = await fetch(url, { headers: { range: 'bytes=1000-1999' } });
  t.equal(ranged.status, 206);
  t.equal(ranged.headers.get('content-range'), `bytes 1000-1999/${layer.size}`);
  t.ok(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(1000, 2000)), 'the bytes of that range');
  const reads = bucketHop.log.filter((e) => e.method === 'GET' && e.path.includes('/blobs/sha256/'));
  t.same(reads.map((e) => [e.range, e.bytes]), [['bytes=1000-1999', 1000]], 'one ranged bucket read of 1000 bytes');
});

t.test('a stale tag is revalidated with one upstream HEAD; a manifest removed from the bucket is fetched and stored again', async (t) => {
  const { hop, prefix, proxy } = await setup(t, {}, { tagTtl: '1s' });
  await pull(proxy);
  await allInBucket(prefix);
  await sleep(1500); // the tag is now older than tagTtl
  hop.reset();
  const revalidated = await pull(proxy);
  t.same(revalidated.allDigests, image.allDigests);
  t.equal(hop.count({ method: 'HEAD', pathIncludes: '/manifests/v1' }), 1, 'one upstream HEAD of the tag');
  t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/' }), 0, 'no upstream manifest GET: unchanged');
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0);

  const manifest = image.images[0]!.manifest.digest;
  await s3Client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: keyOf(prefix, manifest) }));
  hop.reset();
  const again = await pull(proxy);
  t.same(again.allDigests, image.allDigests, 'the pull works');
  // by its tag (the tag's lookup finds the manifest gone and asks again) or by its digest: one GET
  t.equal(hop.count({ method: 'GET', pathIncludes: new RegExp(`/manifests/(v1|${manifest})$`) }), 1, 'the removed manifest came from the upstream');
  t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/' }), 1, 'and only that one');
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0);
  t.ok(await inBucket(prefix, manifest), 'the manifest is back in the bucket');
});

t.test('local tier: hot blobs come from local disk; a new replica fills its disk from the bucket, not the upstream', async (t) => {
  const { hop, bucketHop, prefix, proxy, start } = await setup(t, { localTier: true });
  await pull(proxy);
  await allInBucket(prefix);
  hop.reset();
  bucketHop.reset();
  const warm = await pull(proxy);
  t.same(warm.allDigests, image.allDigests);
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0, 'no upstream blob requests');
  t.equal(bucketHop.count(BUCKET_BLOB_GET), 0, 'no bucket blob requests: local disk');

  const fresh = await start(await makeTempDir('pullthrough-s3-local-'));
  hop.reset();
  bucketHop.reset();
  const viaBucket = await pull(fresh);
  t.same(viaBucket.allDigests, image.allDigests, 'a replica with an empty disk');
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0, 'took nothing from the upstream');
  t.ok(bucketHop.count(BUCKET_BLOB_GET) >= blobs.length, 'but the blobs from the bucket');
  const localPath = (d: string) => join(fresh.cacheDir, 'blobs', 'sha256', d.slice(7, 9), d.slice(7));
  await waitFor(() => blobs.every((d) => existsSync(localPath(d))), { timeoutMs: 10_000, what: 'local copies' });
  bucketHop.reset();
  const hot = await pull(fresh);
  t.same(hot.allDigests, image.allDigests);
  t.equal(bucketHop.count(BUCKET_BLOB_GET), 0, 'and from its own disk after that');
});

t.test('a blob removed from the bucket (a lifecycle rule) is fetched again and stored again', async (t) => {
  const { hop, prefix, proxy } = await setup(t);
  await pull(proxy);
  await allInBucket(prefix);
  const gone = image.images[0]!.layers[1]!.digest;
  await s3Client.send(new DeleteObjectCommand({ Bucket: s3.bucket, Key: keyOf(prefix, gone) }));
  hop.reset();
  const again = await pull(proxy);
  t.same(again.allDigests, image.allDigests, 'the pull works');
  t.equal(hop.count({ ...UPSTREAM_BLOB_GET, pathIncludes: gone }), 1, 'the removed blob came from the upstream');
  t.equal(hop.count(UPSTREAM_BLOB_GET), 1, 'and only that one');
  await waitFor(() => inBucket(prefix, gone), { timeoutMs: 20_000, what: 'the blob back in the bucket' });
});

/** `pullthrough <args>` run from src/ as its own process: exit code and output. */
function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const root = resolve(fileURLToPath(import.meta.url), '../../..');
  return new Promise((done) => {
    execFile(process.execPath, ['--import', 'tsx', join(root, 'src', 'cli.ts'), ...args], { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      done({ code: err ? Number((err as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

t.test('verify re-hashes the bucket: a corrupted object is reported and removed, the good ones are kept', async (t) => {
  const { prefix, proxy } = await setup(t);
  await pull(proxy);
  await allInBucket(prefix);
  const victim = image.images[0]!.layers[1]!.digest;
  // what bit rot, or a hand edit, does to an object: same key, other bytes
  await s3Client.send(new PutObjectCommand({ Bucket: s3.bucket, Key: keyOf(prefix, victim), Body: Buffer.alloc(1 << 20, 7) }));

  const dir = await makeTempDir('pullthrough-s3-verify-');
  t.teardown(() => removeDir(dir));
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ cache: { dir: join(dir, 'cache'), s3: { bucket: s3.bucket, prefix, endpoint: s3.endpoint, forcePathStyle: true } } }));
  const first = await runCli(['verify', '--config', config]);
  t.equal(first.code, 1, `exit code 1 when a blob is bad\n${first.stderr}`);
  t.match(first.stdout, `bad ${victim}: content hashes to sha256:`, 'names the bad blob');
  t.match(first.stdout, new RegExp(`verified ${image.allDigests.length} blobs .* in s3://${s3.bucket}/${prefix}: 1 bad`), 'checked every blob in the bucket');
  t.equal(await inBucket(prefix, victim), false, 'the bad object is removed');
  const kept = await Promise.all(image.allDigests.filter((d) => d !== victim).map((d) => inBucket(prefix, d)));
  t.ok(kept.length > 0 && kept.every(Boolean), 'every good object is kept');

  const again = await runCli(['verify', '--config', config]);
  t.equal(again.code, 0, `a second verify exits 0\n${again.stderr}`);
  t.match(again.stdout, ': 0 bad');
});
