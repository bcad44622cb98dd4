import t from 'tap';
import { LruIndex } from '../../src/cache/lru-index.js';

function make(maxBytes: number) {
  const evicted: string[] = [];
  const index = new LruIndex(maxBytes, (key) => evicted.push(key));
  return { index, evicted };
}

t.test('entries are counted and the bound is not enforced below it', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 40);
  index.add('b', 60);
  t.equal(index.bytes, 100, 'exactly at the bound is allowed');
  t.equal(index.count, 2);
  t.same(evicted, []);
  t.ok(index.has('a') && index.has('b'));
});

t.test('least recently added goes first', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 40);
  index.add('b', 40);
  index.add('c', 40);
  t.same(evicted, ['a']);
  t.equal(index.bytes, 80);
  t.notOk(index.has('a'));
  index.add('d', 40);
  t.same(evicted, ['a', 'b']);
});

t.test('touch makes an entry most recently used', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 40);
  index.add('b', 40);
  index.touch('a');
  index.add('c', 40);
  t.same(evicted, ['b'], 'b is now the oldest');
  t.ok(index.has('a'));
  index.touch('missing');
  t.equal(index.count, 2, 'touching an unknown key adds nothing');
  t.equal(index.bytes, 80);
});

t.test('re-adding refreshes recency and replaces the size', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 40);
  index.add('b', 40);
  index.add('a', 10);
  t.equal(index.bytes, 50, 'old size replaced, not added');
  t.equal(index.count, 2);
  index.add('c', 60);
  t.same(evicted, ['b'], 'a was refreshed, so b goes');
});

t.test('the bound is enforced: evicts as many as needed, oldest first', async (t) => {
  const { index, evicted } = make(100);
  for (const k of ['a', 'b', 'c', 'd', 'e']) index.add(k, 20);
  index.add('big', 70);
  t.same(evicted, ['a', 'b', 'c', 'd']);
  t.equal(index.bytes, 90);
  t.ok(index.bytes <= 100);
});

t.test('an entry larger than the bound is evicted itself', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 10);
  index.add('huge', 150);
  t.same(evicted, ['a', 'huge']);
  t.equal(index.bytes, 0);
  t.equal(index.count, 0);
});

t.test('pinned entries are never evicted', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 40);
  index.add('b', 40);
  index.pin('a');
  t.ok(index.isPinned('a'));
  index.add('c', 40);
  t.same(evicted, ['b'], 'the pinned oldest entry is skipped');
  t.ok(index.has('a'));
  index.add('d', 40);
  t.same(evicted, ['b', 'c']);
  t.ok(index.has('a'), 'still there under more pressure');
});

t.test('pinned entries over the bound are evicted once unpinned', async (t) => {
  const { index, evicted } = make(100);
  index.pin('a');
  index.pin('b');
  index.add('a', 60);
  index.add('b', 60);
  t.same(evicted, [], 'nothing can go while everything is pinned');
  t.equal(index.bytes, 120, 'over the bound while pinned');
  index.unpin('a');
  t.same(evicted, ['a'], 'the unpinned entry goes as soon as it is released');
  t.equal(index.bytes, 60);
  t.notOk(index.isPinned('a'));
  index.unpin('b');
  t.same(evicted, ['a'], 'back under the bound: nothing more goes');
});

t.test('pins are counted: two readers, two unpins', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 60);
  index.pin('a');
  index.pin('a');
  index.add('b', 60);
  t.same(evicted, ['b'], 'pinned a survives; the newcomer goes instead');
  index.pin('b');
  index.add('b', 60);
  t.same(evicted, ['b'], 'both pinned: over the bound for now');
  index.unpin('a');
  t.ok(index.isPinned('a'), 'still pinned by the second reader');
  t.same(evicted, ['b']);
  index.unpin('a');
  t.notOk(index.isPinned('a'));
  t.same(evicted, ['b', 'a'], 'evicted after the last reader is gone');
});

t.test('unpinning something never pinned is harmless', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 50);
  index.unpin('a');
  index.unpin('nope');
  t.notOk(index.isPinned('a'));
  t.same(evicted, []);
  index.pin('a');
  t.ok(index.isPinned('a'), 'a stray unpin does not make later pins negative');
});

t.test('remove drops an entry without calling evict', async (t) => {
  const { index, evicted } = make(100);
  index.add('a', 30);
  index.add('b', 30);
  index.remove('a');
  t.notOk(index.has('a'));
  t.equal(index.bytes, 30);
  t.equal(index.count, 1);
  t.same(evicted, []);
  index.remove('a');
  index.remove('never');
  t.equal(index.bytes, 30, 'removing twice or an unknown key changes nothing');
  index.add('c', 70);
  t.same(evicted, [], 'space freed by remove is reusable');
});

t.test('expire evicts the unpinned entries last used before the cutoff, whatever their order, up to a limit', async (t) => {
  let time = 1000;
  const evicted: string[] = [];
  const index = new LruIndex(Infinity, (key) => evicted.push(key), () => time);
  index.add('found-late', 10, 50); // found at start-up with an old file time, after newer entries
  index.add('old', 10, 100);
  index.add('pinned', 10, 100);
  index.pin('pinned');
  index.add('young', 10); // at 1000
  time = 2000;
  index.touch('old');
  index.add('older', 10, 10);
  t.equal(index.usedAt('old'), 2000, 'touch records the time of use');
  t.equal(index.expire(500, 1), 1, 'the limit is honoured');
  t.equal(index.expire(500), 1, 'the rest go on the next call');
  t.same(evicted.sort(), ['found-late', 'older'], 'entries used before the cutoff, wherever they sit in the order');
  t.ok(index.has('pinned'), 'a pinned entry stays past its age');
  t.ok(index.has('old') && index.has('young'), 'entries used since the cutoff stay');
  t.equal(index.bytes, 30);
  index.unpin('pinned');
  t.equal(index.expire(500), 1, 'unpinned, it goes at the next expire');
});

t.test('digest keys are kept compactly and given back as they came; other keys as they are', async (t) => {
  const { index, evicted } = make(250);
  const sha256 = `sha256:${'ab'.repeat(32)}`;
  const sha512 = `sha512:${'cd'.repeat(64)}`;
  const odd = 'x'.repeat(33); // as long as a compact key, but not one
  index.add(sha256, 100);
  index.add(sha512, 100);
  index.add(odd, 50);
  t.same([...index.keys()], [sha256, sha512, odd], 'in order, each as given');
  t.equal(index.sizeOf(sha256), 100);
  t.ok(index.has(odd), 'a key as long as a compact one is its own');
  t.notOk(index.has(`sha256:${'ab'.repeat(31)}ac`), 'a digest one byte apart is another key');
  index.pin(sha256);
  index.add('y', 100);
  t.same(evicted, [sha512], 'a pinned digest key is passed over, by the key it was pinned with');
  index.unpin(sha256);
  index.add('z', 10);
  t.same(evicted, [sha512, sha256], 'and evicted once unpinned, named as it was given');
});

t.test('slots are reused: a long-running index does not grow with churn', async (t) => {
  const { index } = make(1000);
  for (let i = 0; i < 5000; i++) index.add(`sha256:${i.toString(16).padStart(64, '0')}`, 100);
  t.equal(index.count, 10);
  t.equal(index.bytes, 1000);
  t.same([...index.keys()].slice(-1), [`sha256:${(4999).toString(16).padStart(64, '0')}`]);
});
