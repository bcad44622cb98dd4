// The blob-store contract against the filesystem cache (no streaming writer: fills ingest their spool file).
import t from 'tap';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { makeTempDir, removeDir } from '../helpers/util.js';
import { blobStoreContract } from './blob-store.suite.js';

blobStoreContract(t, 'fs', async (t) => {
  const dir = await makeTempDir('pullthrough-contract-fs-');
  t.teardown(() => removeDir(dir));
  return { store: await FsBlobStore.open({ dir, maxBytes: 1 << 30 }) };
});
