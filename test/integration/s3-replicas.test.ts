// Two pullthrough processes sharing one bucket (s3rver on 127.0.0.1), as a fleet behind a load
// balancer would: an image pulled with skopeo through the first (its large layer stored by a
// multipart upload) is served whole by the second with the upstream stopped, and the upstream
// never saw a request from the second.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { startS3rver, type S3rver } from '../helpers/s3rver.js';
import { atExit, makeTempDir, removeDir, waitFor } from '../helpers/util.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

interface ProxyProcess {
  host: string;
  output(): string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
atExit(() => {
  for (const c of live) c.kill('SIGKILL');
});

/** `pullthrough serve` as a child process on 127.0.0.1, an ephemeral port read from its log. */
async function startProxyProcess(configDoc: Record<string, unknown>, s3: S3rver, dir: string): Promise<ProxyProcess> {
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify(configDoc));
  const args = ['--import', 'tsx', 'src/cli.ts', 'serve', '--config', config, '--listen', '127.0.0.1:0', '--cache-dir', join(dir, 'cache'), '--log-level', 'info'];
  const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, argv, {
    cwd: ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
    // credentials reach it through the standard AWS chain (environment variables here)
    env: { ...process.env, ...s3.env, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
  });
  live.add(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const died = new AbortController();
  child.once('exit', (code, signal) => died.abort(new Error(`pullthrough exited (${signal ?? code})\n${out}`)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    live.delete(child);
  };
  try {
    const host = await waitFor(() => /"msg":"Server listening at http:\/\/(127\.0\.0\.1:\d+)"/.exec(out)?.[1], {
      timeoutMs: 30_000,
      intervalMs: 50,
      what: 'pullthrough to listen',
      signal: died.signal,
    });
    return { host, output: () => out, stop };
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${out}`);
  }
}

t.test('two pullthrough processes on one bucket: the second serves what the first pulled, the upstream stopped', async (t) => {
  const work = await makeTempDir('pullthrough-replicas-');
  t.teardown(() => removeDir(work));
  // one layer over the 8 MiB part size, so the fill streams into a real multipart upload
  const image = await makeImage({ layers: 1, layerBytes: 11 << 20, seed: 's3-replicas', dir: join(work, 'image') });
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  const s3 = await startS3rver();
  t.teardown(() => s3.stop());
  // one counting hop per replica, so each one's upstream traffic is seen apart
  const hopA = await startHop(registry.url);
  t.teardown(() => hopA.close());
  const hopB = await startHop(registry.url);
  t.teardown(() => hopB.close());
  // and one before the bucket for the first replica, to see its uploads
  const bucketHopA = await startHop(s3.endpoint);
  t.teardown(() => bucketHopA.close());

  const doc = (hopUrl: string, endpoint = s3.endpoint) => ({
    upstreams: [{ name: 'upstream.test', url: hopUrl }],
    retries: 0,
    cache: { s3: { bucket: s3.bucket, prefix: 'fleet/', endpoint, forcePathStyle: true } },
  });
  const a = await startProxyProcess(doc(hopA.url, bucketHopA.url), s3, join(work, 'a'));
  t.teardown(() => a.stop());
  const b = await startProxyProcess(doc(hopB.url), s3, join(work, 'b'));
  t.teardown(() => b.stop());

  const first = await pullImage(`${a.host}/team/app:v1`, join(work, 'pull-a'));
  t.same(first.allDigests, image.allDigests, 'the first replica served every digest');
  t.equal(hopA.count({ method: 'GET', pathIncludes: '/blobs/' }), 2, 'the config and the layer from the upstream');

  // a fill's upload completes just after its last byte went to the client: wait until every blob is in
  const client = s3.client();
  t.teardown(() => client.destroy());
  const inBucket = async (digest: string) =>
    client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: `fleet/blobs/sha256/${digest.slice('sha256:'.length)}` })).then(() => true, () => false);
  await waitFor(async () => (await Promise.all(image.allDigests.map(inBucket))).every(Boolean), { timeoutMs: 30_000, what: 'every blob in the bucket' });
  t.equal(bucketHopA.count({ method: 'PUT', pathIncludes: 'partNumber=' }), 2, 'the layer went up as a multipart upload of two parts');

  await registry.stop();
  const second = await pullImage(`${b.host}/team/app:v1`, join(work, 'pull-b'));
  t.same(second.allDigests, image.allDigests, 'the second replica served every digest, the upstream stopped');
  t.same(second.top, first.top, 'the same manifest');
  t.equal(hopB.log.length, 0, 'the upstream saw no request from the second replica');
  t.notMatch(b.output(), /"level":50/, 'no errors in the second replica\'s log');
});
