// The two-tier store's own rules, on in-memory tiers: what gets copied to the local tier and when
// not, and that a fill stored by either tier counts as stored. And the bucket-health bookkeeping.
import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlobWriter } from '../../src/cache/blob-store.js';
import { Fill } from '../../src/cache/fill.js';
import { MemoryBlobStore } from '../../src/cache/memory-store.js';
import { S3Health } from '../../src/cache/s3-client.js';
import { TieredBlobStore } from '../../src/cache/tiered-store.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { makeTempDir, removeDir, waitFor } from '../helpers/util.js';
import { consume, controlledSource, feed, put, readAll, settled, within } from '../contract/blob-store.suite.js';
import type { Test } from '../helpers/util.js';

async function tiers(t: Test): Promise<{ local: MemoryBlobStore; remote: MemoryBlobStore; tiered: TieredBlobStore; warnings: string[] }> {
  const dir = await makeTempDir('pullthrough-tiered-');
  t.teardown(() => removeDir(dir));
  const local = await MemoryBlobStore.open(join(dir, 'local'));
  const remote = await MemoryBlobStore.open(join(dir, 'remote'));
  const warnings: string[] = [];
  const log = { info: () => undefined, warn: (_o: object, msg?: string) => void warnings.push(msg ?? '') };
  return { local, remote, tiered: new TieredBlobStore(local, remote, log), warnings };
}

/** Puts bytes into a store under a digest they do not have (a damaged remote copy). */
async function putAs(store: MemoryBlobStore, digest: Digest, bytes: Buffer): Promise<void> {
  const file = join(store.spoolDir, `bad-${randomUUID()}`);
  await writeFile(file, bytes);
  await store.ingest(digest, file, bytes.length);
}

t.test('a remote blob whose bytes do not match its digest is served as it is but never copied to local disk', async (t) => {
  const { local, remote, tiered, warnings } = await tiers(t);
  const d = digestOf(randomBytes(64));
  const wrong = randomBytes(64);
  await putAs(remote, d, wrong);
  const r = await tiered.open(d);
  t.ok((await readAll(r!.stream)).equals(wrong));
  await waitFor(() => warnings.length > 0, { timeoutMs: 5000, what: 'the warning' });
  t.match(warnings[0], /failed its digest check/);
  t.equal(await local.stat(d), undefined);
});

t.test('a client that leaves early leaves no local copy; the next whole read makes one', async (t) => {
  const { local, remote, tiered } = await tiers(t);
  const bytes = randomBytes(3 << 20);
  const d = await put(remote, bytes);
  const r = await tiered.open(d);
  r!.stream.destroy();
  await sleep(50);
  t.equal(await local.stat(d), undefined, 'no copy from a read cut short');
  t.same(await local.list()[Symbol.asyncIterator]().next(), { done: true, value: undefined });
  const again = await tiered.open(d);
  t.ok((await readAll(again!.stream)).equals(bytes));
  await waitFor(async () => (await local.stat(d)) !== undefined, { timeoutMs: 5000, what: 'the local copy' });
});

t.test('a fill counts as stored when either tier stored it, and fails only when both did not', async (t) => {
  const { local, remote, tiered, warnings } = await tiers(t);
  const bytes = randomBytes(100_000);
  const d = digestOf(bytes);
  // the remote's writer fails at commit; the local tier still takes the verified file
  const create = remote.create.bind(remote);
  remote.create = (digest, size): BlobWriter => {
    const w = create(digest, size);
    return { ...w, commit: async () => Promise.reject(new Error('bucket said no')) };
  };
  const source = controlledSource();
  const fill = await Fill.start(tiered, d, { size: bytes.length, body: source });
  const reader = consume(fill.reader());
  await feed(source, bytes);
  source.push(null);
  t.equal(await settled(fill), undefined, 'the fill succeeded');
  t.ok((await within(reader)).bytes.equals(bytes));
  t.same(await local.stat(d), { digest: d.value, size: bytes.length }, 'the local tier has it');
  t.equal(await remote.stat(d), undefined, 'the remote does not');
  t.same(warnings, [], 'the remote tier logs its own failures');

  const local2 = local as MemoryBlobStore & { ingest: MemoryBlobStore['ingest'] };
  local2.ingest = async () => Promise.reject(new Error('disk full'));
  const other = randomBytes(5000);
  const od = digestOf(other);
  const s2 = controlledSource();
  const fill2 = await Fill.start(tiered, od, { size: other.length, body: s2 });
  const r2 = consume(fill2.reader());
  await feed(s2, other);
  s2.push(null);
  t.match((await settled(fill2))?.message, /bucket said no/, 'both tiers failed: the fill reports it');
  const got = await within(r2);
  t.ok(got.ended && got.bytes.equals(other), 'its client still got every byte');
});

t.test('S3Health: pauses after failures in a row, tries again after the cooldown, recovers on success', async (t) => {
  let now = 1000;
  const logs: string[] = [];
  const health = new S3Health({ now: () => now, cooldownMs: 5000, failuresToPause: 3, log: { info: (_o, m) => void logs.push(`info ${m}`), warn: (_o, m) => void logs.push(`warn ${m}`) } });
  const fail = () => health.run('op', {}, () => Promise.reject(new Error('boom')), 'fallback');
  t.equal(await fail(), 'fallback');
  t.equal(await health.run('op', {}, async () => 'ok', 'fallback'), 'ok', 'a success between failures resets the count');
  for (let i = 0; i < 3; i++) await fail();
  t.equal(health.errors, 4);
  let called = false;
  t.equal(await health.run('op', {}, async () => ((called = true), 'ok'), 'fallback'), 'fallback', 'paused');
  t.notOk(called, 'nothing sent while paused');
  t.equal(health.skipped, 1);
  now += 5000;
  t.equal(await health.run('op', {}, async () => 'ok', 'fallback'), 'ok', 'tried again after the cooldown');
  t.match(logs.at(-1), /^info S3 bucket reachable again/);
  t.equal(logs.filter((l) => l.startsWith('warn')).length, 4, 'each failure logged');
});

t.test('S3Health: after the cooldown one request at a time probes the bucket, the others go on without it', async (t) => {
  let now = 0;
  const health = new S3Health({ now: () => now, cooldownMs: 5000, failuresToPause: 1, probeMs: 30_000 });
  const fail = () => health.run('op', {}, () => Promise.reject(new Error('boom')), 'fallback');
  let sent = 0;
  const ok = () => health.run('op', {}, async () => (sent++, 'ok'), 'fallback');
  await fail();
  now += 5000;
  t.equal(health.available(false), false, 'an upload is never the probe');
  let answer!: (v: string) => void;
  const probe = health.run('op', {}, () => new Promise<string>((r) => (answer = r)), 'fallback');
  t.equal(await ok(), 'fallback', 'while the probe is out, another request goes without');
  now += 29_999;
  t.equal(await ok(), 'fallback', 'however long it stays out (up to probeMs)');
  t.equal(sent, 0);
  now += 1;
  await fail();
  t.equal(await ok(), 'fallback', 'a probe that failed: paused again');
  now += 5000;
  t.equal(await ok(), 'ok', 'the next probe succeeds');
  t.equal(await ok(), 'ok', 'and every request is sent again');
  t.equal(health.available(false), true, 'uploads too');
  answer('late');
  t.equal(await probe, 'late', 'a late probe still gets its answer');
});

t.test("usage (for /metrics) is the local tier's: the bounded one", async (t) => {
  const { remote, tiered } = await tiers(t);
  const bytes = randomBytes(100);
  const d = digestOf(bytes);
  await putAs(remote, d, bytes);
  t.same(tiered.usage(), { bytes: 0, entries: 0, evictions: 0 }, 'a blob only in the bucket is not counted');
  const file = join(tiered.spoolDir, `in-${randomUUID()}`);
  await writeFile(file, bytes);
  await tiered.ingest(d, file, bytes.length);
  t.same(tiered.usage(), { bytes: 100, entries: 1, evictions: 0 }, 'stored in both: counted once');
});
