// `pullthrough warm` and a fleet's shared bucket (s3rver on 127.0.0.1): warming one replica fills
// the bucket, so another replica serves a skopeo pull with no upstream blob request; warming the
// other replica, whose cached blobs are answered with 307s to pre-signed bucket URLs, follows them
// and verifies every blob from the bucket.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import t from 'tap';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startProxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { startS3rver } from '../helpers/s3rver.js';
import { makeTempDir, removeDir, waitFor } from '../helpers/util.js';
import { runWarm } from '../../src/warm/command.js';

t.setTimeout(300_000);

const work = await makeTempDir('pullthrough-warm-s3-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 3, layerBytes: 1 << 20, seed: 'warm-s3', dir: join(work, 'image') });
const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(image.dir, `${registry.host}/team/app:v1`);
const s3 = await startS3rver();
t.teardown(() => s3.stop());
Object.assign(process.env, s3.env, { AWS_EC2_METADATA_DISABLED: 'true' });
const s3Client = s3.client();
t.teardown(() => s3Client.destroy());

const UPSTREAM_BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256:' } as const;
const BUCKET_BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256/' } as const;

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

t.test('warming one replica fills the bucket the fleet shares', async (t) => {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const bucketHop = await startHop(s3.endpoint);
  t.teardown(() => bucketHop.close());
  const prefix = `p-${randomUUID().slice(0, 8)}/`;
  const replica = async () => {
    const p = await startProxy({
      configDoc: {
        upstreams: [{ name: 'upstream.test', url: hop.url }],
        retries: 0,
        cache: { s3: { bucket: s3.bucket, prefix, endpoint: bucketHop.url, forcePathStyle: true, redirect: true } },
      },
    });
    t.teardown(() => p.stop());
    return p;
  };
  const [a, b] = [await replica(), await replica()];
  const warm = async (server: string) => {
    const stdout = new Capture();
    const stderr = new Capture();
    const code = await runWarm(['--server', server, 'upstream.test/team/app:v1'], { stdout, stderr });
    return { code, stdout: stdout.text, stderr: stderr.text };
  };

  const first = await warm(a.url);
  t.equal(first.code, 0, first.stderr);
  t.equal(hop.count(UPSTREAM_BLOB_GET), 4, 'replica a fetched the config and three layers from the upstream, once each');
  // a fill's upload ends just after its last byte reached warm (README "pullthrough warm")
  const blobs = image.images.flatMap((i) => [i.config.digest, ...i.layers.map((l) => l.digest)]);
  const inBucket = (d: string) => s3Client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: `${prefix}blobs/sha256/${d.slice(7)}` })).then(() => true, () => false);
  await waitFor(async () => (await Promise.all(blobs.map(inBucket))).every(Boolean), { timeoutMs: 30_000, what: 'every blob in the bucket' });

  hop.reset();
  bucketHop.reset();
  const second = await warm(b.url);
  t.equal(second.code, 0, `replica b: ${second.stderr}`);
  t.match(second.stdout, /^warmed 1 image: 4 blobs verified/m);
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0, 'replica b asked the upstream for no blob');
  t.ok(bucketHop.count(BUCKET_BLOB_GET) >= 4, 'warm followed the 307s and read every blob from the bucket');

  hop.reset();
  const pulled = await pullImage(`${b.host}/upstream.test/team/app:v1`, join(work, 'pull'));
  t.same(pulled.allDigests, image.allDigests, 'skopeo pulls the image through replica b');
  t.equal(hop.count(UPSTREAM_BLOB_GET), 0, 'with no upstream blob request');
});
