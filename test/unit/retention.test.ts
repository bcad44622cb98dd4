// cache.maxAge on the filesystem cache, on an injectable clock (no sleeping): what nobody read for
// longer is evicted (blobs, manifests, tag records), what was read recently stays, a blob being
// served stays past its age, the ages survive a restart, and Retention sweeps at start, then
// periodically, and stops on close.
import t from 'tap';
import { mock } from 'node:test';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { FsMetadataStore } from '../../src/cache/fs-metadata.js';
import { Retention, type Expiring } from '../../src/cache/retention.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const DAY = 86_400_000;
const MAX_AGE = 30 * DAY;

function clock() {
  let time = Date.UTC(2026, 0, 1);
  return { now: () => time, advance: (ms: number) => void (time += ms) };
}

async function tempDir(t: Test): Promise<string> {
  const dir = await makeTempDir('pullthrough-retention-');
  t.teardown(() => removeDir(dir));
  return dir;
}

async function put(store: FsBlobStore, bytes: Buffer): Promise<Digest> {
  const digest = digestOf(bytes);
  const file = join(store.spoolDir, `test-${randomUUID()}`);
  await writeFile(file, bytes);
  await store.ingest(digest, file, bytes.length);
  return digest;
}

/** A client's whole read of a blob. */
async function read(store: FsBlobStore, d: Digest): Promise<Buffer> {
  const reader = await store.open(d);
  if (!reader) throw new Error(`${d.value} is not cached`);
  return Buffer.concat(await reader.stream.toArray());
}

const blobPath = (dir: string, d: Digest) => join(dir, 'blobs', d.algorithm, d.hex.slice(0, 2), d.hex);

t.test('a blob nobody read for maxAge is evicted; one read since is kept', async (t) => {
  const dir = await tempDir(t);
  const c = clock();
  const evicted: string[] = [];
  const store = await FsBlobStore.open({ dir, maxBytes: 1 << 20, now: c.now, onEvict: (d) => evicted.push(d) });
  const unread = await put(store, randomBytes(1000));
  const wanted = await put(store, randomBytes(2000));
  c.advance(20 * DAY);
  await read(store, wanted);
  c.advance(11 * DAY);
  t.equal(await store.expire(c.now() - MAX_AGE), 1, 'one blob evicted');
  t.same(evicted, [unread.value], 'the one nobody read for 31 days');
  t.notOk(existsSync(blobPath(dir, unread)), 'its file is gone');
  t.equal(await store.stat(unread), undefined, 'and it is a miss');
  t.ok(existsSync(blobPath(dir, wanted)), 'the blob read 11 days ago stays');
  t.equal(store.usedBytes, 2000, 'the size accounting follows');
  t.equal(await store.expire(c.now() - MAX_AGE), 0, 'a second sweep finds nothing more');
});

t.test('a blob being served is kept past its age, and goes at the first sweep after its read ended', async (t) => {
  const dir = await tempDir(t);
  const c = clock();
  const store = await FsBlobStore.open({ dir, maxBytes: 1 << 20, now: c.now });
  const bytes = randomBytes(300_000);
  const d = await put(store, bytes);
  const reader = await store.open(d);
  c.advance(31 * DAY); // a very slow client
  t.equal(await store.expire(c.now() - MAX_AGE), 0, 'nothing evicted while it is served');
  t.ok(existsSync(blobPath(dir, d)), 'its file is still there');
  const body = Buffer.concat(await reader!.stream.toArray());
  t.ok(body.equals(bytes), 'the client got the whole blob');
  t.equal(await store.expire(c.now() - MAX_AGE), 1, 'released, and last opened 31 days ago: evicted');
  t.notOk(existsSync(blobPath(dir, d)));
});

t.test('manifests are blobs too: an unread manifest blob and its record go, a read one stays', async (t) => {
  const dir = await tempDir(t);
  const c = clock();
  const store = await FsBlobStore.open({ dir, maxBytes: 1 << 20, now: c.now });
  const meta = new FsMetadataStore(dir, { now: c.now });
  const record = { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 0 };
  const [old, used] = [Buffer.from('{"schemaVersion":2,"old":1}'), Buffer.from('{"schemaVersion":2,"used":1}')];
  const oldD = await put(store, old);
  const usedD = await put(store, used);
  await meta.putManifest(oldD, { ...record, size: old.length });
  await meta.putManifest(usedD, { ...record, size: used.length });
  c.advance(25 * DAY);
  // what the manifest cache does to serve one: its record, then its bytes
  t.ok(await meta.getManifest(usedD));
  await read(store, usedD);
  c.advance(6 * DAY);
  await store.expire(c.now() - MAX_AGE);
  await meta.expire(c.now() - MAX_AGE);
  t.equal(await store.stat(oldD), undefined, 'the unread manifest blob is evicted');
  t.equal(await meta.getManifest(oldD), undefined, 'and its record removed');
  t.ok(await store.stat(usedD), 'the manifest read 6 days ago stays');
  t.same(await meta.getManifest(usedD), { ...record, size: used.length }, 'with its record');
});

t.test('tag records nobody read for maxAge are removed; read or revalidated ones stay', async (t) => {
  const dir = await tempDir(t);
  const c = clock();
  const meta = new FsMetadataStore(dir, { now: c.now });
  const tag = { digest: digestOf(Buffer.from('m')).value, mediaType: 'application/vnd.oci.image.index.v1+json', size: 10, checkedAt: c.now() };
  await meta.putTag('docker.io', 'library/alpine', 'old', tag);
  await meta.putTag('docker.io', 'library/alpine', 'read', tag);
  await meta.putTag('docker.io', 'library/alpine', 'revalidated', tag);
  c.advance(29 * DAY);
  t.ok(await meta.getTag('docker.io', 'library/alpine', 'read'));
  await meta.putTag('docker.io', 'library/alpine', 'revalidated', { ...tag, checkedAt: c.now() });
  c.advance(2 * DAY);
  t.equal(await meta.expire(c.now() - MAX_AGE), 1, 'one record removed');
  t.equal(await meta.getTag('docker.io', 'library/alpine', 'old'), undefined, 'the tag nobody read for 31 days');
  t.ok(await meta.getTag('docker.io', 'library/alpine', 'read'), 'a tag read 2 days ago stays');
  t.ok(await meta.getTag('docker.io', 'library/alpine', 'revalidated'), 'a tag written 2 days ago stays');
  t.same(await readdir(join(dir, 'tmp')), [], 'no temporary file left');
});

t.test('last-read times survive a restart: kept in the files, not in memory', async (t) => {
  const dir = await tempDir(t);
  const c = clock();
  const start = c.now();
  const first = await FsBlobStore.open({ dir, maxBytes: 1 << 20, now: c.now });
  const firstMeta = new FsMetadataStore(dir, { now: c.now });
  const unread = await put(first, randomBytes(100));
  const wanted = await put(first, randomBytes(100));
  const tag = { digest: wanted.value, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100, checkedAt: start };
  await firstMeta.putTag('ghcr.io', 'org/app', 'unread', tag);
  await firstMeta.putTag('ghcr.io', 'org/app', 'wanted', tag);
  c.advance(20 * DAY);
  await read(first, wanted);
  await firstMeta.getTag('ghcr.io', 'org/app', 'wanted');
  await first.close();
  await firstMeta.close();
  t.equal((await stat(blobPath(dir, wanted))).mtimeMs, start + 20 * DAY, 'the read is stamped in the blob file');
  t.equal((await stat(blobPath(dir, unread))).mtimeMs, start, 'the unread blob keeps the time it was stored');

  // a tool that reads everything (pullthrough verify) must not make blobs young again
  const verifier = await FsBlobStore.open({ dir, maxBytes: Infinity, keepSpool: true, stampReads: false, now: c.now });
  await read(verifier, unread);
  await verifier.close();
  t.equal((await stat(blobPath(dir, unread))).mtimeMs, start, 'a read with stampReads: false leaves the age alone');

  c.advance(11 * DAY);
  const second = await FsBlobStore.open({ dir, maxBytes: 1 << 20, now: c.now });
  const secondMeta = new FsMetadataStore(dir, { now: c.now });
  t.equal(await second.expire(c.now() - MAX_AGE), 1, 'after the restart, one blob is past its age');
  t.equal(await second.stat(unread), undefined, 'the one unread for 31 days');
  t.ok(await second.stat(wanted), 'the one read 11 days ago stays');
  t.equal(await secondMeta.expire(c.now() - MAX_AGE), 1, 'one tag record past its age');
  t.equal(await secondMeta.getTag('ghcr.io', 'org/app', 'unread'), undefined);
  t.ok(await secondMeta.getTag('ghcr.io', 'org/app', 'wanted'));
});

/** A target that records the cutoffs it was swept with. */
function target(evictions = 0): Expiring & { cutoffs: number[] } {
  const cutoffs: number[] = [];
  return {
    cutoffs,
    async expire(cutoff) {
      cutoffs.push(cutoff);
      return evictions;
    },
  };
}

t.test('Retention sweeps at start, then once per interval, and not after close', async (t) => {
  mock.timers.enable({ apis: ['setTimeout'] });
  t.teardown(() => mock.timers.reset());
  const c = clock();
  const logs: { obj: object; msg: string | undefined }[] = [];
  const log = { info: (obj: object, msg?: string) => void logs.push({ obj, msg }), warn: (obj: object, msg?: string) => void logs.push({ obj, msg }) };
  const blobs = target(3);
  const records = target(0);
  const r = Retention.start({ maxAgeMs: MAX_AGE, targets: [{ name: 'blobs', store: blobs }, { name: 'records', store: records }], log, now: c.now });
  await r.idle();
  t.same(blobs.cutoffs, [c.now() - MAX_AGE], 'swept at start, with now - maxAge as the cutoff');
  t.same(records.cutoffs, [c.now() - MAX_AGE], 'every target');
  t.match(logs, [{ obj: { what: 'blobs', evicted: 3 }, msg: /cache\.maxAge/ }], 'evictions are logged; a sweep that evicted nothing is not');

  c.advance(3_600_000 - 1);
  mock.timers.tick(3_600_000 - 1);
  await r.idle();
  t.equal(blobs.cutoffs.length, 1, 'no sweep before the interval (for 30d: an hour)');
  c.advance(1);
  mock.timers.tick(1);
  await r.idle();
  t.same(blobs.cutoffs.slice(1), [c.now() - MAX_AGE], 'the next sweep, an hour later, with the cutoff moved on');

  await r.close();
  mock.timers.tick(10 * 3_600_000);
  await r.idle();
  t.equal(blobs.cutoffs.length, 2, 'no sweep after close');
});

t.test('a sweep that fails is logged and the next one still runs', async (t) => {
  mock.timers.enable({ apis: ['setTimeout'] });
  t.teardown(() => mock.timers.reset());
  const warnings: object[] = [];
  let calls = 0;
  const failing: Expiring = {
    async expire() {
      calls++;
      throw new Error('EIO: i/o error');
    },
  };
  const r = Retention.start({ maxAgeMs: 10 * 60_000, targets: [{ name: 'blobs', store: failing }], log: { info() {}, warn: (obj) => void warnings.push(obj) } });
  t.teardown(() => r.close());
  await r.idle();
  t.match(warnings, [{ what: 'blobs', err: 'EIO: i/o error' }], 'the failure is logged');
  mock.timers.tick(60_000); // a tenth of 10m
  await r.idle();
  t.equal(calls, 2, 'and the next sweep runs a tenth of maxAge later');
});
