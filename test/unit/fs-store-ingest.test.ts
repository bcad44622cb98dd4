// The filesystem store renames a file into place only at the size it was told: a file a short
// write left shorter (or a longer one) never becomes a blob, and nothing of it stays behind.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { digestOf } from '../../src/oci/digest.js';

t.test('ingest of a file whose size is not the one given: rejected, nothing visible, the file removed', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-fs-ingest-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = await FsBlobStore.open({ dir, maxBytes: 1 << 20 });
  const bytes = randomBytes(5000);
  const d = digestOf(bytes);
  for (const [what, onDisk] of [['shorter', bytes.subarray(0, 4096)], ['longer', Buffer.concat([bytes, Buffer.from('x')])]] as const) {
    const file = join(store.spoolDir, `spool-${what}`);
    await writeFile(file, onDisk);
    await t.rejects(store.ingest(d, file, bytes.length), /holds \d+ of its 5000 bytes/, `${what}: rejected`);
    t.equal(await store.stat(d), undefined, `${what}: not a blob`);
    t.equal(store.usedBytes, 0, `${what}: no bytes accounted`);
    t.same(await readdir(store.spoolDir), [], `${what}: the file is gone`);
  }
});
