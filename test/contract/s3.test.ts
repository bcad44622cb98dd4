// The blob-store contract against S3 (a real S3 wire-protocol server, s3rver, on 127.0.0.1), alone
// and as the remote tier behind a local filesystem tier. Each test gets its own key prefix and
// a second store instance on the same bucket, as another replica would have.
import t from 'tap';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { S3Health } from '../../src/cache/s3-client.js';
import { S3BlobStore } from '../../src/cache/s3-store.js';
import { TieredBlobStore } from '../../src/cache/tiered-store.js';
import { startS3rver } from '../helpers/s3rver.js';
import { makeTempDir, removeDir } from '../helpers/util.js';
import { blobStoreContract } from './blob-store.suite.js';
import type { Test } from '../helpers/util.js';

const MiB = 1 << 20;
const server = await startS3rver();
t.teardown(() => server.stop());

async function s3Store(t: Test, prefix: string, spoolDir: string): Promise<S3BlobStore> {
  const client = server.client();
  t.teardown(() => client.destroy());
  // the smallest part size S3 allows, so multipart uploads happen with small test blobs; two
  // keys a page, so listing pages
  return S3BlobStore.open({ client, bucket: server.bucket, prefix, spoolDir, health: new S3Health(), partSize: 5 * MiB, listPageSize: 2 });
}

blobStoreContract(t, 's3', async (t) => {
  const dir = await makeTempDir('pullthrough-contract-s3-');
  t.teardown(() => removeDir(dir));
  const prefix = `contract-${randomUUID().slice(0, 8)}/`;
  return { store: await s3Store(t, prefix, join(dir, 'a')), peer: await s3Store(t, prefix, join(dir, 'b')) };
});

blobStoreContract(t, 'fs in front of s3', async (t) => {
  const dir = await makeTempDir('pullthrough-contract-tiered-');
  t.teardown(() => removeDir(dir));
  const prefix = `tiered-${randomUUID().slice(0, 8)}/`;
  const tiered = async (name: string) =>
    new TieredBlobStore(await FsBlobStore.open({ dir: join(dir, name), maxBytes: 1 << 30 }), await s3Store(t, prefix, join(dir, `${name}-s3`)));
  return { store: await tiered('a'), peer: await tiered('b') };
});
