import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import type { Readable } from 'node:stream';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { FsMetadataStore } from '../../src/cache/fs-metadata.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';

async function tempDir(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-fs-store-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes bytes into the store's spool dir and ingests them as a verified blob. */
async function put(store: FsBlobStore, bytes: Buffer): Promise<Digest> {
  const digest = digestOf(bytes);
  const file = join(store.spoolDir, `test-${randomUUID()}`);
  await writeFile(file, bytes);
  await store.ingest(digest, file, bytes.length);
  return digest;
}

function blobPath(dir: string, d: Digest): string {
  return join(dir, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex);
}

async function readAll(stream: Readable): Promise<Buffer> {
  return Buffer.concat(await stream.toArray());
}

/** Every file (not directory) under dir, as paths relative to dir. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) out.push(relative(dir, join(entry.parentPath ?? entry.path, entry.name)));
  }
  return out.sort();
}


/** A store whose start-up scan has finished (it runs in the background: see the test of that below). */
async function openIndexed(o: Parameters<typeof FsBlobStore.open>[0]): Promise<FsBlobStore> {
  const store = await FsBlobStore.open(o);
  await store.indexed;
  return store;
}

t.test('ingest makes a blob visible with its size and bytes', async (t) => {
  const dir = await tempDir(t);
  const store = await openIndexed({ dir, maxBytes: 1 << 20 });
  const bytes = randomBytes(5000);
  const d = digestOf(bytes);
  t.equal(await store.stat(d), undefined, 'a miss before ingest');
  t.equal(await store.open(d), undefined, 'open misses too');
  await put(store, bytes);
  t.same(await store.stat(d), { digest: d.value, size: 5000 });
  const reader = await store.open(d);
  t.ok(reader);
  t.equal(reader?.size, 5000);
  t.ok((await readAll(reader!.stream)).equals(bytes), 'same bytes back');
  t.ok(existsSync(blobPath(dir, d)), 'stored content-addressed');
  t.same(await readdir(store.spoolDir), [], 'the spool file was moved, not copied');
  t.equal(store.usedBytes, 5000);
});

t.test('an empty blob can be stored and read', async (t) => {
  const dir = await tempDir(t);
  const store = await openIndexed({ dir, maxBytes: 1 << 20 });
  const d = await put(store, Buffer.alloc(0));
  t.same(await store.stat(d), { digest: d.value, size: 0 });
  const reader = await store.open(d);
  t.equal((await readAll(reader!.stream)).length, 0);
});

t.test('open with a range returns exactly those bytes', async (t) => {
  const dir = await tempDir(t);
  const store = await openIndexed({ dir, maxBytes: 1 << 22 });
  const bytes = randomBytes((1 << 20) * 2 + 123); // more than one read buffer
  const d = await put(store, bytes);
  const ranges: [number, number][] = [
    [0, 1],
    [0, 10],
    [5, 6],
    [100, (1 << 20) + 1],
    [(1 << 20) - 1, (1 << 20) + 2],
    [bytes.length - 3, bytes.length],
    [0, bytes.length],
  ];
  for (const [start, end] of ranges) {
    const reader = await store.open(d, { start, end });
    t.equal(reader?.size, bytes.length, `size is the whole blob's for [${start}, ${end})`);
    const got = await readAll(reader!.stream);
    t.ok(got.equals(bytes.subarray(start, end)), `bytes [${start}, ${end})`);
  }
});

t.test('delete removes a blob', async (t) => {
  const dir = await tempDir(t);
  const store = await openIndexed({ dir, maxBytes: 1 << 20 });
  const d = await put(store, randomBytes(100));
  await store.delete(d);
  t.equal(await store.stat(d), undefined);
  t.notOk(existsSync(blobPath(dir, d)));
  t.equal(store.usedBytes, 0);
});

t.test('maxBytes evicts least-recently-used files from disk', async (t) => {
  const dir = await tempDir(t);
  const evicted: string[] = [];
  const store = await openIndexed({ dir, maxBytes: 100, onEvict: (d) => evicted.push(d) });
  const a = await put(store, randomBytes(40));
  const b = await put(store, randomBytes(40));
  // reading a makes it recently used
  await readAll((await store.open(a))!.stream);
  const c = await put(store, randomBytes(40));
  t.same(evicted, [b.value], 'b was the least recently used');
  t.notOk(existsSync(blobPath(dir, b)), 'b is gone from disk');
  t.equal(await store.stat(b), undefined);
  t.ok(existsSync(blobPath(dir, a)));
  t.ok(existsSync(blobPath(dir, c)));
  t.equal(store.usedBytes, 80);
  t.ok(store.usedBytes <= 100);
  t.same(store.usage(), { bytes: 80, entries: 2, evictions: 1 }, 'usage (for /metrics): what is held, and the one eviction');
  await store.delete(a);
  t.same(store.usage(), { bytes: 40, entries: 1, evictions: 1 }, 'a delete is no eviction');
});

t.test('a blob being read is not evicted until its stream closes', async (t) => {
  const dir = await tempDir(t);
  const store = await openIndexed({ dir, maxBytes: 100 });
  const aBytes = randomBytes(40);
  const a = await put(store, aBytes);
  const b = await put(store, randomBytes(40));
  const reading = await store.open(a); // pinned from here on
  await readAll((await store.open(b))!.stream); // b is now more recent than a
  const c = await put(store, randomBytes(40));
  t.ok(existsSync(blobPath(dir, a)), 'a, the oldest but open, survives');
  t.notOk(existsSync(blobPath(dir, b)), 'b went instead');
  const closed = new Promise((r) => reading!.stream.once('close', r));
  t.ok((await readAll(reading!.stream)).equals(aBytes), 'the open reader gets all of a');
  await closed;
  t.ok(existsSync(blobPath(dir, a)), 'not over the bound after close: a stays');
  await put(store, randomBytes(40));
  t.notOk(existsSync(blobPath(dir, a)), 'unpinned, a is the oldest and goes under new pressure');
  t.ok(existsSync(blobPath(dir, c)));
});

t.test('leftovers in <dir>/tmp are removed at open()', async (t) => {
  const dir = await tempDir(t);
  await mkdir(join(dir, 'tmp', 'nested'), { recursive: true });
  await writeFile(join(dir, 'tmp', 'abcdef-1234'), 'half a blob');
  await writeFile(join(dir, 'tmp', 'nested', 'x'), 'x');
  const store = await openIndexed({ dir, maxBytes: 1 << 20 });
  t.equal(store.spoolDir, join(dir, 'tmp'));
  t.same(await readdir(store.spoolDir), [], 'spool dir exists and is empty');
});

t.test('the index is rebuilt from disk by a new store on the same dir', async (t) => {
  const dir = await tempDir(t);
  const first = await openIndexed({ dir, maxBytes: 1 << 20 });
  const aBytes = randomBytes(300);
  const bBytes = randomBytes(500);
  const a = await put(first, aBytes);
  const b = await put(first, bBytes);

  const second = await openIndexed({ dir, maxBytes: 1 << 20 });
  t.equal(second.usedBytes, 800, 'sizes are accounted');
  t.same(await second.stat(a), { digest: a.value, size: 300 });
  t.ok((await readAll((await second.open(b))!.stream)).equals(bBytes));

  // the rebuilt index enforces the bound, oldest mtime first
  const old = new Date(Date.now() - 3_600_000);
  await utimes(blobPath(dir, b), old, old);
  const now = new Date();
  await utimes(blobPath(dir, a), now, now);
  const third = await openIndexed({ dir, maxBytes: 400 });
  t.ok(existsSync(blobPath(dir, a)), 'the recently used blob stays');
  t.notOk(existsSync(blobPath(dir, b)), 'the oldest blob is evicted to fit the new bound');
  t.equal(third.usedBytes, 300);
  // and the rebuilt index keeps accounting: new content pushes out a
  await put(third, randomBytes(200));
  t.notOk(existsSync(blobPath(dir, a)), 'blobs found at start-up are evictable');
});

t.test('stray files under blobs/ are removed at start-up', async (t) => {
  const dir = await tempDir(t);
  const first = await openIndexed({ dir, maxBytes: 1 << 20 });
  const good = await put(first, randomBytes(64));
  const hex = digestOf(Buffer.from('other')).hex;
  const wrongShard = hex.startsWith('00') ? '11' : '00';
  const strays = [
    join('blobs', 'sha256', good.hex.slice(0, 2), 'not-a-digest'),
    join('blobs', 'sha256', good.hex.slice(0, 2), hex.toUpperCase()),
    join('blobs', 'sha256', wrongShard, hex),
    join('blobs', 'md5', 'ab', 'abcdef'),
    join('blobs', 'sha256', 'zz', `${hex}.partial`),
  ];
  for (const s of strays) {
    await mkdir(join(dir, s, '..'), { recursive: true });
    await writeFile(join(dir, s), 'junk');
  }
  // a directory with a blob's name is not a blob
  const dirBlob = join('blobs', 'sha256', hex.slice(0, 2), hex);
  await mkdir(join(dir, dirBlob, 'inner'), { recursive: true });
  strays.push(dirBlob);
  const second = await openIndexed({ dir, maxBytes: 1 << 20 });
  for (const s of strays) t.notOk(existsSync(join(dir, s)), `${s} removed`);
  t.same(await filesUnder(join(dir, 'blobs')), [relative(join(dir, 'blobs'), blobPath(dir, good))], 'only the real blob is left');
  t.equal(second.usedBytes, 64, 'strays are not counted');
});

t.test('stray files at the top of blobs/ do not stop start-up', async (t) => {
  const dir = await tempDir(t);
  const first = await openIndexed({ dir, maxBytes: 1 << 20 });
  const good = await put(first, randomBytes(64));
  await writeFile(join(dir, 'blobs', '.DS_Store'), 'junk');
  await writeFile(join(dir, 'blobs', 'sha256', 'README'), 'junk');
  const second = await openIndexed({ dir, maxBytes: 1 << 20 });
  t.notOk(existsSync(join(dir, 'blobs', '.DS_Store')), 'file in blobs/ removed');
  t.notOk(existsSync(join(dir, 'blobs', 'sha256', 'README')), 'file in blobs/<alg>/ removed');
  t.same(await second.stat(good), { digest: good.value, size: 64 });
});

t.test('FsMetadataStore', async (t) => {
  const tag = { digest: digestOf(Buffer.from('m')).value, mediaType: 'application/vnd.oci.image.index.v1+json', size: 1234, checkedAt: 1_700_000_000_000 };
  const manifest = { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 42 };

  t.test('tag and manifest records survive a new instance', async (t) => {
    const dir = await tempDir(t);
    const m1 = new FsMetadataStore(dir);
    const d = digestOf(Buffer.from('manifest'));
    t.equal(await m1.getTag('docker.io', 'library/alpine', 'latest'), undefined, 'miss first');
    t.equal(await m1.getManifest(d), undefined);
    await m1.putTag('docker.io', 'library/alpine', 'latest', tag);
    await m1.putManifest(d, manifest);

    const m2 = new FsMetadataStore(dir);
    t.same(await m2.getTag('docker.io', 'library/alpine', 'latest'), tag);
    t.same(await m2.getManifest(d), manifest);
    t.equal(await m2.getTag('docker.io', 'library/alpine', 'edge'), undefined, 'other tag: miss');
    t.equal(await m2.getTag('ghcr.io', 'library/alpine', 'latest'), undefined, 'other upstream: miss');
    t.equal(await m2.getTag('docker.io', 'library/alpinex', 'latest'), undefined, 'other repo: miss');

    const newer = { ...tag, checkedAt: tag.checkedAt + 1 };
    await m2.putTag('docker.io', 'library/alpine', 'latest', newer);
    t.same(await new FsMetadataStore(dir).getTag('docker.io', 'library/alpine', 'latest'), newer, 'overwrite is visible');
    t.same(await readdir(join(dir, 'tmp')), [], 'no temp files left behind');
  });

  t.test('(upstream, repo, tag) keys do not collide through separators', async (t) => {
    const dir = await tempDir(t);
    const m = new FsMetadataStore(dir);
    await m.putTag('a', 'b/c', 'd', tag);
    t.equal(await m.getTag('a/b', 'c', 'd'), undefined);
    t.equal(await m.getTag('a', 'b', 'c/d'), undefined);
  });

  t.test('corrupt or foreign records read as a miss', async (t) => {
    const dir = await tempDir(t);
    const m = new FsMetadataStore(dir);
    const d = digestOf(Buffer.from('x'));
    await m.putManifest(d, manifest);
    const path = join(dir, 'meta', 'manifests', 'sha256', `${d.hex}.json`);
    t.same(await m.getManifest(d), manifest, 'what this store wrote it reads back (from memory)');
    // what a crash or a foreign writer leaves on disk is seen by the store that opens it next
    await writeFile(path, '{"mediaType": 3');
    t.equal(await new FsMetadataStore(dir).getManifest(d), undefined, 'truncated JSON');
    await writeFile(path, '{"mediaType": 3, "size": 1}');
    t.equal(await new FsMetadataStore(dir).getManifest(d), undefined, 'wrong field types');
  });

  t.test('hostile repo and tag strings never create files outside the cache dir', async (t) => {
    const base = await tempDir(t);
    const dir = join(base, 'cache');
    const m = new FsMetadataStore(dir);
    const hostile: [string, string, string][] = [
      ['docker.io', '../../escape', 'latest'],
      ['docker.io', 'library/alpine', '../../../escape'],
      ['../..', '../../../../tmp/escape', '..'],
      ['docker.io', '/etc/passwd', '/'],
      ['docker.io', 'a\0b', 'c\0d'],
      ['docker.io', '..\\..\\escape', '..%2f..%2fescape'],
    ];
    for (const [u, r, tg] of hostile) await m.putTag(u, r, tg, tag);
    for (const [u, r, tg] of hostile) t.same(await m.getTag(u, r, tg), tag, `readable back: ${JSON.stringify([u, r, tg])}`);

    const all = await filesUnder(base);
    t.equal(all.length, hostile.length, 'one file per record');
    for (const f of all) {
      t.ok(f.startsWith(join('cache', 'meta', 'tags') + sep), `${f} is under cache/meta/tags`);
      t.notMatch(f, /escape|passwd|\.\./, `${f} has no client-supplied text`);
    }
    t.same((await readdir(base)).sort(), ['cache'], 'nothing beside the cache dir');
  });
});

t.test('the stored file is exactly what was ingested', async (t) => {
  const dir = await tempDir(t);
  const store = await openIndexed({ dir, maxBytes: 1 << 20 });
  const bytes = randomBytes(777);
  const d = await put(store, bytes);
  t.ok((await readFile(blobPath(dir, d))).equals(bytes));
  t.equal((await stat(blobPath(dir, d))).size, 777);
});

t.test('a cache answers before its start-up scan ends; what is stored meanwhile counts as newer than what the scan finds', async (t) => {
  const dir = await tempDir(t);
  const first = await openIndexed({ dir, maxBytes: 1 << 30 });
  const old: Digest[] = [];
  for (let i = 0; i < 300; i++) old.push(await put(first, randomBytes(100)));
  const past = new Date(Date.now() - 3_600_000);
  for (const d of old) await utimes(blobPath(dir, d), past, past);
  // room for 250 of the 300 old blobs and the new one
  const store = await FsBlobStore.open({ dir, maxBytes: 251 * 100 });
  let scanned = false;
  void store.indexed.then(() => (scanned = true));
  const fresh = await put(store, randomBytes(100));
  t.same(await store.stat(old[299]!), { digest: old[299]!.value, size: 100 }, 'an old blob is found on the disk');
  t.ok((await readAll((await store.open(old[0]!))!.stream)).length === 100, 'and read');
  t.notOk(scanned, 'before the scan finished');
  await store.indexed;
  t.equal(store.usage().entries, 251, 'then the bound holds');
  t.ok(existsSync(blobPath(dir, fresh)), 'the blob stored during the scan stays');
  t.ok(existsSync(blobPath(dir, old[0]!)), 'so does the old one read during the scan');
  t.equal(old.filter((d) => !existsSync(blobPath(dir, d))).length, 50, 'the 50 evicted are old ones the scan found');
});

