// The holding records of every MetadataStore (what a repository is known to hold, see
// core/repository-contents.ts): kept across a restart (a new store on the same directory) and
// shared by replicas (a second S3 store on the same bucket and prefix).
import { randomUUID } from 'node:crypto';
import { join, relative } from 'node:path';
import t from 'tap';
import type { MetadataStore } from '../../src/cache/blob-store.js';
import { FsMetadataStore } from '../../src/cache/fs-metadata.js';
import { MemoryMetadataStore } from '../../src/cache/memory-store.js';
import { S3Health } from '../../src/cache/s3-client.js';
import { S3MetadataStore } from '../../src/cache/s3-metadata.js';
import { filesUnder } from '../helpers/captured-proxy.js';
import { startS3rver } from '../helpers/s3rver.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const C = `sha512:${'c'.repeat(128)}`;

/** A store and another one that must see what the first wrote (after a restart, or a replica). */
type Open = (t: Test) => Promise<{ store: MetadataStore; peer: MetadataStore }>;

function contract(name: string, open: Open): void {
  t.test(`${name}: a repository holds what was recorded for it, and nothing else`, async (t) => {
    const { store, peer } = await open(t);
    t.equal(await store.getHolding('ghcr.io', 'org/app', A), false, 'nothing recorded: a miss, not an error');
    await store.putHoldings('ghcr.io', 'org/app', [A, C]);
    await store.putHoldings('ghcr.io', 'org/app', [A]); // again: harmless
    for (const s of [store, peer]) {
      const which = s === store ? 'the store' : 'its peer';
      t.equal(await s.getHolding('ghcr.io', 'org/app', A), true, `${which}: recorded`);
      t.equal(await s.getHolding('ghcr.io', 'org/app', C), true, `${which}: sha512 too`);
      t.equal(await s.getHolding('ghcr.io', 'org/app', B), false, `${which}: another digest`);
      t.equal(await s.getHolding('ghcr.io', 'org/other', A), false, `${which}: another repository`);
      t.equal(await s.getHolding('docker.io', 'org/app', A), false, `${which}: the same name on another upstream`);
    }
    await store.putHoldings('ghcr.io', 'org/app', []);
  });
}

contract('memory', async () => {
  const store = new MemoryMetadataStore();
  return { store, peer: store };
});

contract('fs', async (t) => {
  const dir = await makeTempDir('pullthrough-holdings-fs-');
  t.teardown(() => removeDir(dir));
  return { store: new FsMetadataStore(dir), peer: new FsMetadataStore(dir) };
});

t.test('fs: hostile upstream and repository strings never name a path', async (t) => {
  const dir = await makeTempDir('pullthrough-holdings-fs-');
  t.teardown(() => removeDir(dir));
  const store = new FsMetadataStore(join(dir, 'cache'));
  await store.putHoldings('../../up', '../../../etc/passwd', [A]);
  await store.putHoldings('x\0y', 'a/../../b', [B]);
  t.equal(await store.getHolding('../../up', '../../../etc/passwd', A), true);
  const files = (await filesUnder(dir)).map((f) => relative(dir, f));
  t.equal(files.length, 2);
  for (const f of files) t.match(f, /^cache\/meta\/holdings\/[0-9a-f]{2}\/[0-9a-f]{64}\.json$/, f);
});

const server = await startS3rver();
t.teardown(() => server.stop());
contract('s3', async (t) => {
  const prefix = `holdings-${randomUUID().slice(0, 8)}/`;
  const replica = () => {
    const client = server.client();
    t.teardown(() => client.destroy());
    return new S3MetadataStore({ client, bucket: server.bucket, prefix, health: new S3Health() });
  };
  return { store: replica(), peer: replica() };
});
