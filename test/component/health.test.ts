// /healthz and /readyz in-process: outside /v2/, GET and HEAD, a JSON answer; readiness makes a
// real write at most once per interval however often it is probed, leaves no file behind, says
// why in a 503 when the cache cannot be written, and turns ready again once it can. An S3 bucket
// that is unreachable fails it, and once paused after failures, says so.
import t from 'tap';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { component } from '../helpers/component.js';
import { diskWriteCheck, Readiness, WriteCheckFailure, type WriteCheck } from '../../src/cache/readiness.js';
import { S3Health } from '../../src/cache/s3-client.js';
import { s3WriteCheck } from '../../src/cache/s3-write-check.js';
import { registerHealth } from '../../src/proxy/health.js';
import { S3Client } from '@aws-sdk/client-s3';
import { freePort, makeTempDir, removeDir, type Test } from '../helpers/util.js';

interface Body {
  status: string;
  checks: { check: string; ok: boolean; reason?: string; code?: string; checkedAt?: string }[];
}

/** A check whose writes are counted and whose outcome the test sets. */
function scripted(name = 'disk') {
  const check = {
    name,
    writes: 0,
    failure: undefined as WriteCheckFailure | undefined,
    async write() {
      check.writes++;
      if (check.failure) throw check.failure;
    },
  };
  return check;
}

async function serve(t: Test, checks: WriteCheck[], opts: ConstructorParameters<typeof Readiness>[1] = {}) {
  const c = await component(t);
  registerHealth(c.app, new Readiness(checks, { now: c.clock.now, ...opts }));
  const probe = async (url = '/readyz', method: 'GET' | 'HEAD' = 'GET') => {
    const res = await c.app.inject({ method, url });
    return { status: res.statusCode, headers: res.headers, body: method === 'GET' ? (JSON.parse(res.payload) as Body) : undefined, raw: res.payload };
  };
  return { ...c, probe };
}

t.test('/healthz: 200 for GET and HEAD, no upstream call, no cache work', async (t) => {
  const check = scripted();
  const { probe, upstream } = await serve(t, [check]);
  const get = await probe('/healthz');
  t.equal(get.status, 200);
  t.same(get.body, { status: 'ok' });
  t.match(get.headers['content-type'], /^application\/json/);
  t.equal(get.headers['cache-control'], 'no-store', 'never cached by anything in between');
  t.equal((await probe('/healthz', 'HEAD')).status, 200, 'HEAD too');
  t.equal(check.writes, 0, 'the process answering is all it tells');
  t.same(upstream.calls, []);
});

t.test('/readyz with a real disk: 200 and the check, a write at most once per interval, no file left behind', async (t) => {
  const dir = await makeTempDir('pullthrough-readyz-');
  t.teardown(() => removeDir(dir));
  const disk = diskWriteCheck(dir);
  let writes = 0;
  const counted: WriteCheck = { name: disk.name, write: () => (writes++, disk.write()) };
  const { probe, clock } = await serve(t, [counted]);
  const first = await probe();
  t.equal(first.status, 200);
  t.match(first.body, { status: 'ready', checks: [{ check: 'disk', ok: true, checkedAt: new Date(clock.now()).toISOString() }] });
  const many = await Promise.all(Array.from({ length: 20 }, () => probe()));
  t.ok(many.every((r) => r.status === 200), 'twenty probes at once: all ready');
  clock.advance(4999);
  t.equal((await probe()).status, 200);
  t.equal(writes, 1, 'one real write for all of them within the interval');
  clock.advance(1);
  await probe();
  t.equal(writes, 2, 'the next write once the interval has passed');
  const head = await probe('/readyz', 'HEAD');
  t.equal(head.status, 200, 'HEAD works');
  t.same(await readdir(dir), [], 'the probe files are gone');
});

t.test('/readyz: 503 with the reason when the cache cannot be written, 200 again once it can', async (t) => {
  const check = scripted();
  const { probe, clock } = await serve(t, [check, scripted('s3')]);
  t.equal((await probe()).status, 200);
  check.failure = new WriteCheckFailure('the cache disk is full', 'ENOSPC');
  clock.advance(5000);
  const full = await probe();
  t.equal(full.status, 503);
  t.same(full.body?.status, 'unready');
  t.match(full.body?.checks, [{ check: 'disk', ok: false, reason: 'the cache disk is full', code: 'ENOSPC' }, { check: 's3', ok: true }], 'which check failed, and why');
  t.equal((await probe('/readyz', 'HEAD')).status, 503, 'HEAD: 503 too');
  check.failure = undefined;
  t.equal((await probe()).status, 503, 'within the interval the last answer stands');
  clock.advance(5000);
  t.equal((await probe()).status, 200, 'space freed: ready again at the next check');
});

t.test('/readyz: a real failure to write (the directory is gone) is a 503 naming the code, not a path', async (t) => {
  const dir = await makeTempDir('pullthrough-readyz-');
  await removeDir(dir);
  const { probe } = await serve(t, [diskWriteCheck(join(dir, 'tmp'))]);
  const res = await probe();
  t.equal(res.status, 503);
  t.match(res.body?.checks, [{ check: 'disk', ok: false, reason: 'cannot write to the cache directory', code: 'ENOENT' }]);
  t.notMatch(res.raw, dir, 'no path in the answer');
});

t.test('/readyz: a write that hangs never makes a probe hang; past the timeout it is a failure', async (t) => {
  let release: (() => void) | undefined;
  const hanging: WriteCheck = { name: 'disk', write: () => new Promise<void>((resolve) => (release = resolve)) };
  const { probe } = await serve(t, [hanging], { answerWithinMs: 10, timeoutMs: 50 });
  const first = await probe();
  t.equal(first.status, 503, 'answered while the first write is still out');
  t.match(first.body?.checks, [{ ok: false, reason: /not finished/ }]);
  // the timeout is real time: poll for it, bounded
  let later = first;
  for (let i = 0; i < 100 && later.body?.checks[0]?.code !== 'TIMEOUT'; i++) {
    await new Promise((r) => setTimeout(r, 20));
    later = await probe();
  }
  t.match(later.body?.checks, [{ ok: false, code: 'TIMEOUT', reason: /did not finish within/ }], 'a write past the timeout fails the check');
  release?.();
});

t.test('/readyz with an S3 bucket nobody answers for: 503, then paused after failures in a row, and recovers through its own probe', async (t) => {
  const port = await freePort(); // nothing listens there
  const client = new S3Client({ endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: 'x', secretAccessKey: 'y' }, maxAttempts: 1 });
  t.teardown(() => client.destroy());
  let time = Date.UTC(2026, 0, 1);
  const health = new S3Health({ now: () => time, cooldownMs: 5000 });
  const check = s3WriteCheck({ client, bucket: 'pullthrough-test', prefix: 'p/', health });
  const readiness = new Readiness([check], { now: () => time, intervalMs: 1000, answerWithinMs: 5000 });
  const down = await readiness.report();
  t.match(down, { ready: false, checks: [{ check: 's3', ok: false, reason: /did not take a write/ }] });
  t.equal(health.errors, 1, 'the failed write counts as a bucket failure');
  for (let i = 0; i < 2; i++) {
    time += 1000;
    await readiness.report();
  }
  t.ok(health.paused, 'three failures in a row: the bucket is paused');
  const paused = await readiness.report();
  t.match(paused.checks, [{ ok: false, code: 'S3_PAUSED', reason: /paused after 3 failed requests in a row/ }], 'the answer says the bucket is paused');
  t.equal(health.errors, 3, 'and sends nothing while paused');

  // the bucket comes back: a server that takes the PUT and the DELETE
  const { createServer } = await import('node:http');
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    req.resume().on('end', () => res.writeHead(req.method === 'DELETE' ? 204 : 200).end());
  });
  await new Promise<void>((r) => server.listen(port, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => server.close(r)));
  time += 5000;
  const back = await readiness.report();
  t.match(back, { ready: true, checks: [{ check: 's3', ok: true }] }, 'after the cooldown the check is the probe that finds the bucket back');
  t.notOk(health.paused, 'and the bucket is no longer paused');
  t.equal(seen.length, 2, 'one PUT and one DELETE');
  t.match(seen, [/^PUT \/pullthrough-test\/p\/readyz\//, /^DELETE \/pullthrough-test\/p\/readyz\//], 'under <prefix>readyz/, deleted again');
});

t.test('/readyz is outside /v2/: writes to it are refused like any write', async (t) => {
  const { app } = await serve(t, [scripted()]);
  const res = await app.inject({ method: 'POST', url: '/readyz' });
  t.equal(res.statusCode, 405);
});
