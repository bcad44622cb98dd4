// TarPaths: the compact path listing of a plain layer (sorted names, typed arrays beside them).
import t from 'tap';
import { PATH_BYTES, TarPathsBuilder } from '../../../src/tar/index.js';

const REG = '0'.charCodeAt(0);
const DIR = '5'.charCodeAt(0);
const LINK = '1'.charCodeAt(0);

t.test('lookups by exact path, in any input order', async (t) => {
  const b = new TarPathsBuilder();
  b.add('usr/bin/z', { ordinal: 0, type: REG, mode: 0o755 });
  b.add('etc', { ordinal: 1, type: DIR, mode: 0o755 });
  b.add('etc/passwd', { ordinal: 2, type: REG, mode: 0o644 });
  b.add('a', { ordinal: 3, type: 0, mode: 0o600 });
  const paths = b.build();
  t.same(paths.get('etc/passwd'), { ordinal: 2, type: REG, mode: 0o644, link: undefined });
  t.same(paths.get('etc'), { ordinal: 1, type: DIR, mode: 0o755, link: undefined });
  t.same(paths.get('a'), { ordinal: 3, type: 0, mode: 0o600, link: undefined }, 'a NUL typeflag is type 0');
  t.same(paths.get('usr/bin/z'), { ordinal: 0, type: REG, mode: 0o755, link: undefined });
  for (const missing of ['', 'etc/', 'usr', 'usr/bin', 'b', 'zz']) {
    t.equal(paths.has(missing), false, `no ${JSON.stringify(missing)}`);
    t.equal(paths.get(missing), undefined);
  }
  t.equal(paths.has('usr/bin/z'), true);
});

t.test('a later entry of the same path wins, as in extraction', async (t) => {
  const b = new TarPathsBuilder();
  b.add('f', { ordinal: 0, type: REG, mode: 0o644 });
  b.add('g', { ordinal: 1, type: REG, mode: 0o644 });
  b.add('f', { ordinal: 2, type: DIR, mode: 0o700 });
  const paths = b.build();
  t.same(paths.get('f'), { ordinal: 2, type: DIR, mode: 0o700, link: undefined });
  t.same(paths.get('g'), { ordinal: 1, type: REG, mode: 0o644, link: undefined });
});

t.test('hardlinks keep their target; modes keep their 12 permission bits only', async (t) => {
  const b = new TarPathsBuilder();
  b.add('bin/sh', { ordinal: 0, type: REG, mode: 0o104755 });
  b.add('bin/ash', { ordinal: 1, type: LINK, mode: 0o755, link: 'bin/sh' });
  const paths = b.build();
  t.same(paths.get('bin/ash'), { ordinal: 1, type: LINK, mode: 0o755, link: 'bin/sh' });
  t.equal(paths.get('bin/sh')?.mode, 0o4755, 'setuid kept, file-type bits dropped');
});

t.test('bytes grow with the paths held (the listing cache weighs them)', async (t) => {
  const b = new TarPathsBuilder();
  t.equal(b.bytes, 0);
  b.add('abc', { ordinal: 0, type: REG, mode: 0 });
  t.equal(b.bytes, PATH_BYTES + 3);
  b.add('l', { ordinal: 1, type: LINK, mode: 0, link: 'abc' });
  t.equal(b.bytes, PATH_BYTES + 3 + PATH_BYTES + 1 + 2 * PATH_BYTES + 3, 'a hardlink also holds its target');
});
