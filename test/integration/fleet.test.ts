// Three pullthrough replicas as one fleet: Debian's redis-server, one s3rver bucket, and a real
// docker-registry behind one counting (and throttling) hop per replica, so that each replica's
// upstream traffic is read from the hop's own log. What users rely on: a cold blob asked of every
// replica at once is fetched from the upstream once; so are a manifest by digest and a tag's
// revalidation; a holder killed mid-fill is taken over and every client still gets the right
// bytes; Redis down or stalled costs coordination, never service; the peer route is closed to
// anyone without the fleet secret.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { GetObjectCommand, HeadObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { FLEET_SECRET, logLines, startRedis, startReplica, type Replica } from '../helpers/fleet.js';
import { startHop, type Hop } from '../helpers/hop.js';
import { makeImage, pushLayout, type ImageLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { startS3rver } from '../helpers/s3rver.js';
import { fixturesDir, unpackFixture } from '../helpers/estargz-fixtures.js';
import { skopeo } from '../helpers/skopeo.js';
import { makeTempDir, removeDir, sleep, waitFor } from '../helpers/util.js';

const MiB = 1 << 20;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hexOf = (digest: string): string => digest.slice('sha256:'.length);

const work = await makeTempDir('pullthrough-fleet-test-');
t.teardown(() => removeDir(work));
const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
const images: Record<string, ImageLayout> = {};
for (const [name, bytes] of [['big', 40 * MiB], ['takeover', 24 * MiB], ['alone', 2 * MiB], ['rejoin', 2 * MiB], ['stall', 1 * MiB], ['meta', 256 << 10], ['secret', 4 * MiB]] as const) {
  images[name] = await makeImage({ layers: 1, layerBytes: bytes, seed: `fleet-${name}`, dir: join(work, name) });
  await pushLayout(images[name].dir, `${registry.host}/team/${name}:v1`);
}
if (!fixturesDir()) throw new Error('the shared eStargz fixtures are missing (../shared/fixtures/estargz)');
const esgz = await unpackFixture('busybox-esgz-prefetch-1m', work);
await skopeo(['copy', '--retry-times', '0', '--dest-tls-verify=false', '--preserve-digests', `oci:${esgz.dir}`, `docker://${registry.host}/lazy/esgz:v1`]);
const layerOf = (name: string) => images[name]!.images[0]!.layers[0]!;
const layerBytes = (name: string): Promise<Buffer> => readFile(join(images[name]!.dir, 'blobs', 'sha256', hexOf(layerOf(name).digest)));

const s3 = await startS3rver();
t.teardown(() => s3.stop());
const redis = await startRedis();
t.teardown(() => redis.stop());
const bucket = s3.client();
t.teardown(() => bucket.destroy());
const objectKey = (digest: string) => `fleet/blobs/sha256/${hexOf(digest)}`;
const inBucket = (digest: string) => bucket.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: objectKey(digest) })).then(() => true, () => false);

const hops: Hop[] = [];
const replicas: Replica[] = [];
for (let i = 0; i < 3; i++) {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  hops.push(hop);
  replicas.push(await startReplica(t, { upstream: hop.url, s3, redis, config: { cache: { tagTtl: '2s', s3: { bucket: s3.bucket, prefix: 'fleet/', endpoint: s3.endpoint, forcePathStyle: true } } } }));
}

const blobGets = (digest: string) => hops.map((h) => h.count({ method: 'GET', pathIncludes: `/blobs/${digest}` }));
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

async function getBlob(replica: Replica, name: string, range?: string): Promise<{ status: number; body: Buffer }> {
  const res = await request(`${replica.url}/v2/team/${name}/blobs/${layerOf(name).digest}`, { headers: range ? { range } : {}, bodyTimeout: 120_000, headersTimeout: 120_000 });
  return { status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) };
}

t.test('24 clients of one cold 40 MiB blob over three replicas: one upstream GET, every client the right bytes, one object in the bucket', async (t) => {
  const digest = layerOf('big').digest;
  const want = await layerBytes('big');
  for (const hop of hops) Object.assign(hop.faults, { throttleBytesPerSec: 40 * MiB, only: { pathIncludes: '/blobs/' } });
  t.teardown(() => hops.forEach((h) => h.reset()));
  const clients = Array.from({ length: 24 }, (_, i) => getBlob(replicas[i % 3]!, 'big', i % 8 === 7 ? `bytes=${30 * MiB}-` : undefined));
  const got = await Promise.all(clients);
  got.forEach((g, i) => {
    const ranged = i % 8 === 7;
    const expected = ranged ? want.subarray(30 * MiB) : want;
    if (g.status !== (ranged ? 206 : 200) || !g.body.equals(expected)) t.fail(`client ${i}: status ${g.status}, ${g.body.length} bytes, not the blob's`);
  });
  t.pass('every client, whole and ranged, got the blob\'s bytes');
  t.equal(sum(blobGets(digest)), 1, `one upstream GET of the blob across the fleet (per replica: ${blobGets(digest).join(', ')})`);
  const upstreamBytes = sum(hops.map((h) => h.log.filter((e) => e.path.includes(digest)).reduce((n, e) => n + e.bytes, 0)));
  t.equal(upstreamBytes, want.length, 'the upstream sent the blob\'s bytes once');
  const followers = replicas.filter((r) => logLines(r, 'fleet: filling from another replica').length > 0);
  t.equal(followers.length, 2, 'the two other replicas read it from the one fetching it');
  await waitFor(() => inBucket(digest), { timeoutMs: 30_000, what: 'the blob in the bucket' });
  const object = await bucket.send(new GetObjectCommand({ Bucket: s3.bucket, Key: objectKey(digest) }));
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), digest, 'the bucket holds the verified blob');
  // once it is in the bucket, a replica reads it there: the upstream is not asked again
  const again = await getBlob(replicas[1]!, 'big');
  t.ok(again.body.equals(want), 'served again');
  t.equal(sum(blobGets(digest)), 1, 'still one upstream GET');
});

t.test('a manifest by digest and a tag revalidation: once across the fleet', async (t) => {
  t.teardown(() => hops.forEach((h) => h.reset()));
  const tagUrl = (r: Replica) => `${r.url}/v2/team/meta/manifests/v1`;
  const manifests = (method: string) => sum(hops.map((h) => h.count({ method, pathIncludes: '/manifests/' })));
  // by digest first, on every replica at once
  const digest = images.meta!.top.digest;
  for (const hop of hops) Object.assign(hop.faults, { delayMs: 300 });
  const byDigest = await Promise.all(replicas.map((r) => request(`${r.url}/v2/team/meta/manifests/${digest}`, { headers: { accept: OCI_MANIFEST } }).then(async (res) => ({ status: res.statusCode, body: Buffer.from(await res.body.arrayBuffer()) }))));
  for (const m of byDigest) t.equal(sha256(m.body), digest, 'each replica served the manifest');
  t.equal(manifests('GET'), 1, 'one upstream GET of the manifest by digest');
  // the tag: each replica resolves it; then, past the TTL, they all revalidate at once
  for (const r of replicas) await request(tagUrl(r), { headers: { accept: OCI_MANIFEST } }).then((res) => res.body.dump());
  hops.forEach((h) => h.log.splice(0));
  await sleep(2200);
  const revalidated = await Promise.all(replicas.map((r) => request(tagUrl(r), { headers: { accept: OCI_MANIFEST } }).then(async (res) => ({ status: res.statusCode, digest: res.headers['docker-content-digest'], body: await res.body.dump() }))));
  for (const r of revalidated) t.equal(r.digest, digest, 'each replica answered the tag');
  t.equal(manifests('HEAD'), 1, 'one upstream HEAD for the tag across the fleet, past its TTL');
  t.equal(manifests('GET'), 0, 'and no GET: the manifest is in the bucket');
});

t.test('shared knowledge: a layer one replica learned is eStargz is lazy on the others; a low rate limit one replica saw makes every one conserve', async (t) => {
  t.teardown(() => hops.forEach((h) => h.reset()));
  const layer = esgz.layers.reduce((a, b) => (b.size > a.size ? b : a));
  const whole = await readFile(layer.path);
  const manifest = (r: Replica, repo: string, tag: string) => request(`${r.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: OCI_MANIFEST } }).then(async (res) => ({ status: res.statusCode, digest: res.headers['docker-content-digest'], body: await res.body.dump() }));
  t.equal((await manifest(replicas[0]!, 'lazy/esgz', 'v1')).status, 200, 'replica 0 served the eStargz image\'s manifest');
  await sleep(1000); // its claims are shared without waiting (one SET each)
  const mid = Math.floor(layer.size / 2);
  const res = await request(`${replicas[1]!.url}/v2/lazy/esgz/blobs/${layer.digest}`, { headers: { range: `bytes=${mid}-${mid + 999}` } });
  t.equal(res.statusCode, 206, 'replica 1, which never served the manifest, answers a Range of the layer');
  t.same(Buffer.from(await res.body.arrayBuffer()), whole.subarray(mid, mid + 1000), 'with the right bytes');
  t.equal(hops.reduce((n, h) => n + h.log.filter((e) => e.method === 'GET' && e.path.includes(layer.digest) && !e.range).length, 0), 0, 'lazily: no replica fetched the whole layer');
  t.ok(hops[1]!.count({ method: 'GET', pathIncludes: layer.digest, ranged: true }) > 0, 'replica 1 fetched only ranges of it');
  const lazyMetrics = await request(`${replicas[1]!.url}/metrics`).then((r) => r.body.text());
  t.match(lazyMetrics, /^pullthrough_lazy_served_bytes_total [1-9]\d*$/m, 'and counts them as lazily served');

  // the rate limit: every replica holds the tag; replica 0's upstream says the budget is nearly spent
  for (const r of replicas) await manifest(r, 'team/meta', 'v1');
  await sleep(2200);
  hops.forEach((h) => h.log.splice(0));
  Object.assign(hops[0]!.faults, { headers: { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '3;w=21600' } });
  t.equal((await manifest(replicas[0]!, 'team/meta', 'v1')).status, 200, 'replica 0 revalidated the tag');
  t.equal(hops[0]!.count({ method: 'HEAD', pathIncludes: '/manifests/' }), 1, 'with a HEAD, which announced 3 of 100 left');
  await sleep(3000); // past the TTL again, and past a sync of the fleet's facts on both sides (each once a second)
  for (const r of replicas.slice(1)) {
    const m = await manifest(r, 'team/meta', 'v1');
    t.equal(m.digest, images.meta!.top.digest, 'the other replicas serve the tag');
  }
  t.equal(hops[1]!.count({ method: 'HEAD' }) + hops[2]!.count({ method: 'HEAD' }), 0, 'without revalidating it: the fleet\'s budget is low, though their own upstream never said so');
  t.ok(logLines(replicas[1]!, 'upstream rate limit is low; serving the cached tag without revalidation').length > 0, 'and replica 1 says why');
});

t.test('the peer route: only with the fleet secret, and it never makes a replica fetch', async (t) => {
  t.teardown(() => hops.forEach((h) => h.reset()));
  const cached = layerOf('big').digest;
  const uncached = layerOf('meta').digest;
  const peer = (digest: string, auth?: string) =>
    request(`${replicas[0]!.url}/_fleet/v1/blobs/${digest}`, { headers: auth ? { authorization: auth } : {} }).then(async (res) => ({ status: res.statusCode, type: res.headers['content-type'], body: Buffer.from(await res.body.arrayBuffer()) }));
  for (const [what, auth] of [['no credentials', undefined], ['a wrong secret', 'Bearer not-the-fleet-secret-at-all'], ['Basic credentials', `Basic ${Buffer.from(`x:${FLEET_SECRET}`).toString('base64')}`]] as const) {
    const res = await peer(cached, auth);
    t.equal(res.status, 403, `${what}: refused`);
    t.match(JSON.parse(res.body.toString()), { errors: [{ code: 'DENIED' }] }, `${what}: with an OCI error`);
  }
  const ok = await peer(cached, `Bearer ${FLEET_SECRET}`);
  t.equal(ok.status, 200, 'the secret: served');
  t.equal(sha256(ok.body), cached, 'the blob');
  const none = await peer(uncached, `Bearer ${FLEET_SECRET}`);
  t.equal(none.status, 404, 'a blob the replica neither holds nor fills: 404');
  t.equal(sum(hops.map((h) => h.log.length)), 0, 'and the upstream was never asked');
});

t.test('the holder killed with SIGKILL mid-fill: its lease lapses, another replica resumes, every surviving client gets the right bytes, nothing partial in the bucket', async (t) => {
  const digest = layerOf('takeover').digest;
  const want = await layerBytes('takeover');
  for (const hop of hops) Object.assign(hop.faults, { throttleBytesPerSec: 6 * MiB, only: { pathIncludes: '/blobs/' } });
  t.teardown(() => hops.forEach((h) => h.reset()));
  const clients = replicas.map((r) => Array.from({ length: 3 }, () => getBlob(r, 'takeover').catch((e: Error) => ({ status: 0, body: Buffer.from(e.message) }))));
  const holder = await waitFor(() => {
    const i = hops.findIndex((h) => h.log.some((e) => e.path.includes(digest) && e.bytes > 6 * MiB));
    return i >= 0 ? i : undefined;
  }, { timeoutMs: 30_000, intervalMs: 20, what: 'a replica fetching the blob' });
  await replicas[holder]!.kill();
  const t0 = Date.now();
  t.notOk(await inBucket(digest), 'nothing in the bucket under the digest after the holder died');
  for (const [i, list] of clients.entries()) {
    if (i === holder) continue;
    for (const c of list) {
      const g = await c;
      t.ok(g.status === 200 && g.body.equals(want), `a client of replica ${i} got the whole blob (status ${g.status}, ${g.body.length} bytes)`);
    }
  }
  t.ok(Date.now() - t0 < 20_000, `taken over within seconds (${Date.now() - t0} ms after the kill)`);
  const gets = blobGets(digest);
  const resumed = hops.flatMap((h, i) => (i === holder ? [] : h.log.filter((e) => e.path.includes(digest) && e.range?.startsWith('bytes=') && e.range !== 'bytes=0-')));
  t.equal(gets[holder], 1, 'the holder made the one full GET');
  t.equal(resumed.length, 1, `one survivor resumed with one ranged GET (${resumed.map((e) => e.range).join(', ')})`);
  t.equal(sum(gets), 2, 'two upstream GETs in all');
  const upstreamBytes = sum(hops.map((h) => h.log.filter((e) => e.path.includes(digest)).reduce((n, e) => n + e.bytes, 0)));
  t.ok(upstreamBytes < want.length * 1.5, `the upstream sent ${(upstreamBytes / want.length).toFixed(2)}x the blob (the holder's last bytes again, at most)`);
  await waitFor(() => inBucket(digest), { timeoutMs: 30_000, what: 'the blob in the bucket' });
  const object = await bucket.send(new GetObjectCommand({ Bucket: s3.bucket, Key: objectKey(digest) }));
  t.equal(sha256(Buffer.from(await object.Body!.transformToByteArray())), digest, 'the object the new holder stored is the verified blob');
  // the killed replica comes back on the same address and serves the blob from the bucket
  hops.forEach((h) => h.log.splice(0));
  await replicas[holder]!.start();
  const back = await getBlob(replicas[holder]!, 'takeover');
  t.ok(back.body.equals(want), 'the restarted replica serves it');
  t.equal(sum(blobGets(digest)), 0, 'from the bucket: no upstream GET');
});

t.test('Redis down: every replica serves on its own, logs it once, counts it; back: one fetch per blob again', async (t) => {
  t.teardown(() => hops.forEach((h) => h.reset()));
  // what the replicas log from here on (a moment of load earlier may have cost a command its timeout, and been logged)
  const since = replicas.map((r) => r.output().length);
  await redis.stop();
  const want = await layerBytes('alone');
  const got = await Promise.all(replicas.flatMap((r) => [getBlob(r, 'alone'), getBlob(r, 'alone')]));
  for (const g of got) t.ok(g.status === 200 && g.body.equals(want), 'right bytes with Redis down');
  t.same(blobGets(layerOf('alone').digest), [1, 1, 1], 'each replica fetched it once, on its own single flight');
  for (const [i, r] of replicas.entries()) {
    t.equal(logLines(r, 'fleet: Redis is unreachable; this replica fetches on its own until it is back', since[i]).length, 1, `replica ${i} logged the outage once`);
    const metrics = await request(`${r.url}/metrics`).then((res) => res.body.text());
    t.match(metrics, /^pullthrough_fleet_coordinated 0$/m, `replica ${i}: /metrics says it is not coordinated`);
    t.match(metrics, /^pullthrough_fleet_uncoordinated_total [1-9]\d*$/m, `replica ${i}: and counts the fetches made alone`);
  }
  await redis.start();
  const want2 = await layerBytes('rejoin');
  // the replicas reconnect within a second or so
  await waitFor(async () => {
    const m = await Promise.all(replicas.map((r) => request(`${r.url}/metrics`).then((res) => res.body.text())));
    // a scrape alone does not ask Redis; the first claim after it is back does
    return m.every((x) => /pullthrough_fleet_coordinated/.test(x)) || undefined;
  }, { timeoutMs: 10_000, what: 'metrics' });
  await sleep(1500);
  const got2 = await Promise.all(replicas.flatMap((r) => [getBlob(r, 'rejoin'), getBlob(r, 'rejoin')]));
  for (const g of got2) t.ok(g.status === 200 && g.body.equals(want2), 'right bytes once Redis is back');
  t.equal(sum(blobGets(layerOf('rejoin').digest)), 1, 'one upstream GET across the fleet again');
  for (const [i, r] of replicas.entries()) {
    t.equal(logLines(r, 'fleet: Redis answers again; coordinating with the other replicas', since[i]).length, 1, `replica ${i} logged that it rejoined`);
  }
});

t.test('Redis stalled (SIGSTOP): pulls go on within a second or two, on each replica alone', async (t) => {
  t.teardown(() => {
    redis.resume();
    hops.forEach((h) => h.reset());
  });
  redis.pause();
  const want = await layerBytes('stall');
  const t0 = Date.now();
  const got = await Promise.all(replicas.map((r) => getBlob(r, 'stall')));
  const ms = Date.now() - t0;
  for (const g of got) t.ok(g.status === 200 && g.body.equals(want), 'right bytes with Redis stalled');
  t.ok(ms < 5000, `served in ${ms} ms, not held up by the stalled Redis`);
  redis.resume();
});

t.test('a replica whose secret the others do not share: they cannot read its fill, so after a few lease TTLs they fetch the blob themselves, and still serve it', async (t) => {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  t.teardown(() => hops.forEach((h) => h.reset()));
  const odd = await startReplica(t, { upstream: hop.url, s3, redis, config: { fleet: { redis: redis.url, secret: 'another-secret-altogether-42', leaseTtl: '2s' } } });
  const want = await layerBytes('secret');
  Object.assign(hop.faults, { throttleBytesPerSec: 256 << 10, only: { pathIncludes: '/blobs/' } });
  const first = getBlob(odd, 'secret');
  await waitFor(() => hop.log.some((e) => e.path.includes(layerOf('secret').digest)) || undefined, { timeoutMs: 10_000, what: 'the odd replica fetching' });
  const second = await getBlob(replicas[0]!, 'secret');
  t.ok(second.status === 200 && second.body.equals(want), 'the replica with the fleet\'s secret served the blob');
  t.ok(logLines(replicas[0]!, "fleet: the replica holding this blob's lease cannot be read from; fetching it here").length > 0, 'after saying it could not read from the holder');
  t.equal(hops[0]!.count({ method: 'GET', pathIncludes: layerOf('secret').digest }), 1, 'and fetching it itself');
  t.ok((await first).body.equals(want), 'the odd replica served it too');
});

t.test('nothing partial in the bucket: every blob object there hashes to its name', async (t) => {
  const listed = await bucket.send(new ListObjectsV2Command({ Bucket: s3.bucket, Prefix: 'fleet/blobs/' }));
  const keys = (listed.Contents ?? []).map((o) => o.Key!);
  t.ok(keys.length >= 6, `${keys.length} blobs in the bucket`);
  for (const key of keys) {
    const object = await bucket.send(new GetObjectCommand({ Bucket: s3.bucket, Key: key }));
    const got = sha256(Buffer.from(await object.Body!.transformToByteArray()));
    if (got !== `sha256:${key.split('/').pop()}`) t.fail(`${key} holds ${got}`);
  }
  t.pass('each object is the blob its key names');
});

