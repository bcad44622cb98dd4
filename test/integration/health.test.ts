// /readyz of a whole pullthrough against real failures: its cache on a small real tmpfs that runs
// full (503 naming ENOSPC, 200 once space is freed) or turns read-only (EROFS), and its cache in
// an S3 bucket (s3rver) that does not exist yet (503 naming the S3 error, 200 once it does).
// /healthz stays 200 throughout: the process serves. Readiness re-checks every 5 s of real time,
// so each change is polled for, bounded.
import t from 'tap';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateBucketCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startS3rver } from '../helpers/s3rver.js';
import { mountTmpfs } from '../helpers/tmpfs.js';
import { waitFor, type Test } from '../helpers/util.js';

interface Ready {
  status: number;
  body: { status: string; checks: { check: string; ok: boolean; reason?: string; code?: string }[] };
}

async function readyz(proxy: Proxy): Promise<Ready> {
  const res = await fetch(`${proxy.url}/readyz`);
  return { status: res.status, body: (await res.json()) as Ready['body'] };
}

/** Polls /readyz until it answers `status` (a check runs at most every 5 s). */
function readyzBecomes(proxy: Proxy, status: number): Promise<Ready> {
  return waitFor(async () => {
    const r = await readyz(proxy);
    return r.status === status && r;
  }, { timeoutMs: 30_000, intervalMs: 250, what: `/readyz ${status}` });
}

const healthz = async (proxy: Proxy) => (await fetch(`${proxy.url}/healthz`)).status;

async function onTmpfs(t: Test) {
  const fs = await mountTmpfs(t, 1 << 20);
  const cacheDir = join(fs.dir, 'cache');
  // no upstream is asked: nothing is pulled
  const proxy = await startProxy({ upstream: ['unused=http://127.0.0.1:9'], cacheDir });
  t.teardown(() => proxy.stop());
  return { fs, cacheDir, proxy };
}

t.test('a full disk: /readyz 503 naming ENOSPC, no probe file left; 200 once space is freed', async (t) => {
  const { fs, cacheDir, proxy } = await onTmpfs(t);
  t.match(await readyz(proxy), { status: 200, body: { status: 'ready', checks: [{ check: 'disk', ok: true }] } }, 'ready at first');
  await fs.fill(0);
  const full = await readyzBecomes(proxy, 503);
  t.match(full.body, { status: 'unready', checks: [{ check: 'disk', ok: false, reason: 'the cache disk is full', code: 'ENOSPC' }] }, 'the reason, in JSON');
  t.equal(await healthz(proxy), 200, '/healthz: the process still serves');
  t.same(await readdir(join(cacheDir, 'tmp')), [], 'no probe file left on the full disk');
  await fs.unfill();
  const back = await readyzBecomes(proxy, 200);
  t.match(back.body, { status: 'ready', checks: [{ check: 'disk', ok: true }] }, 'space freed: ready again');
  t.same(await readdir(join(cacheDir, 'tmp')), [], 'and no probe file left');
});

t.test('a read-only disk: /readyz 503 naming EROFS; 200 once writable again', async (t) => {
  const { fs, proxy } = await onTmpfs(t);
  t.equal((await readyz(proxy)).status, 200);
  await fs.readOnly();
  const ro = await readyzBecomes(proxy, 503);
  t.match(ro.body.checks, [{ check: 'disk', ok: false, reason: 'the cache filesystem is read-only', code: 'EROFS' }]);
  await fs.readWrite();
  await readyzBecomes(proxy, 200);
});

t.test('an S3 bucket that fails writes: /readyz 503 naming the S3 error; 200 once it takes them, no probe object left', async (t) => {
  const s3 = await startS3rver();
  t.teardown(() => s3.stop());
  Object.assign(process.env, s3.env, { AWS_EC2_METADATA_DISABLED: 'true' });
  const bucket = 'created-later';
  const proxy = await startProxy({
    upstream: ['unused=http://127.0.0.1:9'],
    configDoc: { cache: { s3: { bucket, prefix: 'p/', endpoint: s3.endpoint, forcePathStyle: true } } },
  });
  t.teardown(() => proxy.stop());
  const missing = await readyz(proxy);
  t.equal(missing.status, 503);
  t.match(missing.body.checks, [{ check: 'disk', ok: true }, { check: 's3', ok: false, code: 'NoSuchBucket', reason: /did not take a write \(NoSuchBucket, 404\)/ }], 'the disk is fine; the bucket is the reason');
  const client = s3.client();
  t.teardown(() => client.destroy());
  await client.send(new CreateBucketCommand({ Bucket: bucket }));
  const back = await readyzBecomes(proxy, 200);
  t.match(back.body.checks, [{ check: 'disk', ok: true }, { check: 's3', ok: true }], 'the bucket exists now: ready (after a pause, through the check\'s own probe)');
  const left = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
  t.same(left.Contents ?? [], [], 'the probe object was deleted');
});
