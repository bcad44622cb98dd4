// The blob-store contract against the in-memory reference store (which has a streaming writer).
import t from 'tap';
import { join } from 'node:path';
import { MemoryBlobStore } from '../../src/cache/memory-store.js';
import { makeTempDir, removeDir } from '../helpers/util.js';
import { blobStoreContract } from './blob-store.suite.js';

blobStoreContract(t, 'memory', async (t) => {
  const dir = await makeTempDir('pullthrough-contract-mem-');
  t.teardown(() => removeDir(dir));
  return { store: await MemoryBlobStore.open(join(dir, 'spool')) };
});
