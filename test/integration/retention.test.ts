// cache.maxAge wired into a whole pullthrough: at start-up it evicts what the files' last-read
// times say nobody read within maxAge (blobs and tag records), and keeps the rest; the store's
// own behaviour on a test clock is in test/unit/retention.test.ts.
import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { FsMetadataStore } from '../../src/cache/fs-metadata.js';
import { tagRecordKey } from '../../src/cache/blob-store.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { startProxy } from '../helpers/proxy.js';
import { makeTempDir, removeDir, waitFor } from '../helpers/util.js';

const DAY = 86_400_000;

t.test('at start-up, blobs and tag records unread for longer than cache.maxAge are evicted; the others stay', async (t) => {
  const cacheDir = await makeTempDir('pullthrough-retention-');
  t.teardown(() => removeDir(cacheDir));
  const store = await FsBlobStore.open({ dir: cacheDir, maxBytes: 1 << 30 });
  const meta = new FsMetadataStore(cacheDir);
  const put = async (bytes: Buffer): Promise<Digest> => {
    const d = digestOf(bytes);
    const file = join(store.spoolDir, `t-${randomUUID()}`);
    await writeFile(file, bytes);
    await store.ingest(d, file, bytes.length);
    return d;
  };
  const old = await put(randomBytes(1000));
  const young = await put(randomBytes(1000));
  const record = { digest: young.value, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1, checkedAt: Date.now() };
  await meta.putTag('docker.io', 'library/alpine', 'old', record);
  await meta.putTag('docker.io', 'library/alpine', 'young', record);
  await store.close();
  await meta.close();

  const blobPath = (d: Digest) => join(cacheDir, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex);
  const tagPath = (tag: string) => {
    const key = tagRecordKey('docker.io', 'library/alpine', tag);
    return join(cacheDir, 'meta', 'tags', key.slice(0, 2), `${key}.json`);
  };
  const longAgo = new Date(Date.now() - 40 * DAY);
  const lately = new Date(Date.now() - 20 * DAY);
  await utimes(blobPath(old), longAgo, longAgo);
  await utimes(tagPath('old'), longAgo, longAgo);
  await utimes(blobPath(young), lately, lately);
  await utimes(tagPath('young'), lately, lately);

  const proxy = await startProxy({ upstream: ['unused=http://127.0.0.1:9'], cacheDir, configDoc: { cache: { maxAge: '30d' } } });
  t.teardown(() => proxy.stop());
  await waitFor(() => !existsSync(blobPath(old)) && !existsSync(tagPath('old')), { timeoutMs: 10_000, what: 'the first sweep' });
  t.pass('the blob and the tag record last read 40 days ago are gone');
  t.ok(existsSync(blobPath(young)), 'the blob read 20 days ago stays');
  t.ok(existsSync(tagPath('young')), 'the tag record read 20 days ago stays');
});
