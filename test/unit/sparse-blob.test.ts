// The sparse copy of a lazily read blob: positional writes, a saved list of present ranges, and
// moving a retired copy aside so that a new copy of the same blob never shares its files.
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { SparseBlob } from '../../src/cache/sparse-blob.js';
import { parseDigest } from '../../src/oci/digest.js';
import { LazyLayers } from '../../src/lazy/layers.js';
import type { Logger } from '../../src/lib/log.js';
import { tempDir } from '../helpers/estargz-fixtures.js';
import { waitFor } from '../helpers/util.js';

const digest = parseDigest(`sha256:${'ab'.repeat(32)}`);
const SIZE = 1 << 20;

t.test('present ranges survive reopening; missing() lists the rest', async (t) => {
  const dir = await tempDir(t, 'sparse');
  const a = await SparseBlob.open(dir, digest, SIZE);
  await a.write(100, Buffer.from('hello'));
  await a.close();
  const b = await SparseBlob.open(dir, digest, SIZE);
  t.teardown(() => b.close());
  t.equal(b.cachedBytes, 5);
  t.same(b.missing(0, 200), [{ start: 0, end: 100 }, { start: 105, end: 200 }]);
  t.equal((await b.read(100, 105)).toString(), 'hello');
});

t.test('a copy moved aside keeps its bytes; a new copy at the usual paths starts empty; removing the old one leaves the new one', async (t) => {
  const dir = await tempDir(t, 'sparse');
  const old = await SparseBlob.open(dir, digest, SIZE);
  await old.write(0, Buffer.from('old bytes'));
  await old.moveAside();
  await old.write(9, Buffer.from('!')); // a reader finishing its fetch after the move

  const fresh = await SparseBlob.open(dir, digest, SIZE);
  t.teardown(() => fresh.close());
  t.equal(fresh.cachedBytes, 0, 'the new copy sees none of the old one');
  await fresh.write(0, Buffer.from('new'));
  t.equal((await old.read(0, 10)).toString(), 'old bytes!', 'the old copy still reads its own bytes');

  await old.remove();
  t.equal((await fresh.read(0, 3)).toString(), 'new', 'the new copy is untouched by the old one being removed');
  const files = (await readdir(join(dir, 'sha256'))).sort();
  t.same(files, [`${digest.hex}.data`, `${digest.hex}.ranges`], 'only the new copy is left on disk');
  const reopened = await SparseBlob.open(dir, digest, SIZE);
  t.teardown(() => reopened.close());
  t.equal(reopened.cachedBytes, 3, "the new copy's range list was not overwritten by the old one");
});

t.test('copies moved aside and left behind by an earlier run are removed at start-up; live copies stay', async (t) => {
  const dir = await tempDir(t, 'sparse');
  const live = await SparseBlob.open(dir, digest, SIZE);
  await live.write(0, Buffer.from('live'));
  await live.close();
  const gone = await SparseBlob.open(dir, parseDigest(`sha256:${'cd'.repeat(32)}`), SIZE);
  await gone.write(0, Buffer.from('retired'));
  await gone.moveAside();
  await gone.close(); // the process "ended" before removing it
  t.equal((await readdir(join(dir, 'sha256'))).filter((f) => f.includes('.retired-')).length, 2, 'two retired files on disk');

  new LazyLayers({ dir, prefetch: false, log: { info() {}, warn() {}, error() {}, debug() {} } as unknown as Logger });
  await waitFor(async () => (await readdir(join(dir, 'sha256'))).every((f) => !f.includes('.retired-')), { timeoutMs: 5_000, what: 'the sweep' });
  t.same((await readdir(join(dir, 'sha256'))).sort(), [`${digest.hex}.data`, `${digest.hex}.ranges`], 'the live copy is left');
});
