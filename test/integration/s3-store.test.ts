// The S3 stores against a real S3 wire-protocol server (s3rver on 127.0.0.1): fills streaming
// into multipart uploads, aborted uploads, key layout, shared metadata, pre-signed URLs, the
// local tier's copies, and a bucket that fails and comes back.
import t from 'tap';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { Fill } from '../../src/cache/fill.js';
import { S3Health } from '../../src/cache/s3-client.js';
import { S3MetadataStore } from '../../src/cache/s3-metadata.js';
import { S3BlobStore } from '../../src/cache/s3-store.js';
import { TieredBlobStore } from '../../src/cache/tiered-store.js';
import { digestOf } from '../../src/oci/digest.js';
import { startHop } from '../helpers/hop.js';
import { recordCommands, startS3rver } from '../helpers/s3rver.js';
import { makeTempDir, removeDir, waitFor } from '../helpers/util.js';
import { consume, controlledSource, feed, put, readAll, settled, within, type Test } from '../contract/blob-store.suite.js';

const MiB = 1 << 20;
const server = await startS3rver();
t.teardown(() => server.stop());

interface Setup {
  client: S3Client;
  commands: ReturnType<typeof recordCommands>;
  health: S3Health;
  prefix: string;
  store: S3BlobStore;
  meta: S3MetadataStore;
  dir: string;
}

async function setup(t: Test, opts: { endpoint?: string; prefix?: string; cooldownMs?: number } = {}): Promise<Setup> {
  const dir = await makeTempDir('pullthrough-s3-store-');
  t.teardown(() => removeDir(dir));
  const client = server.client(opts.endpoint ? { endpoint: opts.endpoint, maxAttempts: 1 } : {});
  t.teardown(() => client.destroy());
  const commands = recordCommands(client);
  const health = new S3Health({ cooldownMs: opts.cooldownMs ?? 5000 });
  const prefix = opts.prefix ?? `t-${randomUUID().slice(0, 8)}/`;
  const location = { client, bucket: server.bucket, prefix, health };
  const store = await S3BlobStore.open({ ...location, spoolDir: join(dir, 'spool'), partSize: 5 * MiB });
  return { client, commands, health, prefix, store, meta: new S3MetadataStore(location), dir };
}

/** Every key in the bucket under a prefix, read with a client of the test's own. */
async function keysUnder(prefix: string): Promise<string[]> {
  const client = server.client();
  try {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await client.send(new ListObjectsV2Command({ Bucket: server.bucket, Prefix: prefix, ContinuationToken: token }));
      keys.push(...(page.Contents ?? []).map((o) => o.Key ?? ''));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys.sort();
  } finally {
    client.destroy();
  }
}

t.test('a fill streams into a multipart upload while its clients are served, completed only once verified', async (t) => {
  const { store, commands, prefix } = await setup(t);
  const bytes = randomBytes(17 * MiB + 99);
  const d = digestOf(bytes);
  const source = controlledSource();
  const fill = await Fill.start(store, d, { size: bytes.length, body: source });
  const client = consume(fill.reader());
  await feed(source, bytes.subarray(0, 12 * MiB));
  await waitFor(() => commands.count('UploadPartCommand') >= 2, { timeoutMs: 20_000, what: 'two parts uploaded while the fill runs' });
  t.equal(commands.count('CompleteMultipartUploadCommand'), 0, 'not completed while the fill runs');
  t.same(await keysUnder(`${prefix}blobs/`), [], 'no object under the final key yet');
  t.equal(await store.stat(d), undefined);
  await feed(source, bytes.subarray(12 * MiB));
  source.push(null);
  t.equal(await settled(fill), undefined);
  const got = await within(client);
  t.ok(got.ended && got.bytes.equals(bytes), 'the client got the whole blob');
  t.equal(commands.count('CompleteMultipartUploadCommand'), 1, 'completed once, after verification');
  t.equal(commands.count('PutObjectCommand'), 0, 'streamed as parts, not re-uploaded');
  t.same(await keysUnder(`${prefix}blobs/`), [`${prefix}blobs/sha256/${d.hex}`]);
  t.ok((await readAll((await store.open(d))!.stream)).equals(bytes), 'the object is the blob');
});

/**
 * A multipart fill of 12 MiB (of `size`, as the upstream announced it) that fails once parts were
 * uploaded, as `end` makes it: its upload is aborted and no object is left.
 */
async function abortedFill(t: Test, size: number, end: (source: Readable) => void, failure: RegExp): Promise<void> {
  const { store, commands, prefix } = await setup(t);
  const bytes = randomBytes(12 * MiB);
  const d = digestOf(randomBytes(12 * MiB));
  const source = controlledSource();
  const fill = await Fill.start(store, d, { size, body: source });
  await feed(source, bytes);
  await waitFor(() => commands.count('UploadPartCommand') >= 2, { timeoutMs: 20_000, what: 'parts uploaded' });
  end(source);
  t.match((await settled(fill))?.message, failure);
  await waitFor(() => commands.count('AbortMultipartUploadCommand') === 1, { timeoutMs: 20_000, what: 'AbortMultipartUpload' });
  t.equal(commands.count('CompleteMultipartUploadCommand'), 0, 'never completed');
  t.same(await keysUnder(prefix), [], 'nothing at the final key, nothing else under the prefix');
}

t.test('a multipart fill that fails verification aborts its upload and leaves no object', (t) =>
  abortedFill(t, 12 * MiB, (source) => source.push(null), /verification failed/));

t.test('a multipart fill whose upstream breaks off aborts its upload and leaves no object', (t) =>
  abortedFill(t, 20 * MiB, (source) => source.destroy(new Error('upstream connection reset')), /upstream connection reset/));

t.test('a Range is passed on as one GetObject with exactly that range; stat on a fresh store is one HEAD', async (t) => {
  const { store, prefix } = await setup(t);
  const bytes = randomBytes(3000);
  const d = await put(store, bytes);
  const fresh = await setup(t, { prefix });
  t.same(await fresh.store.stat(d), { digest: d.value, size: 3000 });
  t.same(fresh.commands.names, ['HeadObjectCommand'], 'one HEAD, no GET');
  const reader = await fresh.store.open(d, { start: 100, end: 1100 });
  t.equal(reader?.size, 3000);
  t.ok((await readAll(reader!.stream)).equals(bytes.subarray(100, 1100)), 'those bytes');
  t.same(fresh.commands.inputs('GetObjectCommand').map((i) => i.Range), ['bytes=100-1099']);
});

t.test('every key is under the prefix and derived from hashes, never from request strings', async (t) => {
  const prefix = `team/${randomUUID().slice(0, 8)}/`;
  const { store, meta } = await setup(t, { prefix });
  const d = await put(store, randomBytes(100));
  const record = { digest: d.value, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 100, checkedAt: 1 };
  const hostile: [string, string, string][] = [
    ['docker.io', '../../escape', 'latest'],
    ['docker.io', 'library/alpine', '../../../escape'],
    ['x', 'a\0b', 'c?d#e'],
  ];
  for (const [u, r, tag] of hostile) await meta.putTag(u, r, tag, record);
  await meta.putManifest(d, { mediaType: record.mediaType, size: 100 });
  for (const [u, r, tag] of hostile) t.same(await meta.getTag(u, r, tag), record, `readable back: ${JSON.stringify([u, r, tag])}`);
  t.equal(await meta.getTag('docker.io', 'library/alpine', 'other'), undefined, 'another tag is a miss');
  const keys = await keysUnder('');
  const mine = keys.filter((k) => k.startsWith(prefix));
  t.equal(mine.length, hostile.length + 2, 'one object per record and blob');
  for (const k of mine) {
    t.match(k.slice(prefix.length), /^(blobs\/sha256\/[a-f0-9]{64}|meta\/tags\/[a-f0-9]{64}\.json|meta\/manifests\/sha256\/[a-f0-9]{64}\.json)$/, k);
  }
});

t.test('tag and manifest records are shared: another replica, or a restarted one, reads them', async (t) => {
  const a = await setup(t);
  const d = digestOf(Buffer.from('manifest'));
  const record = { digest: d.value, mediaType: 'application/vnd.oci.image.index.v1+json', size: 8, checkedAt: 1_700_000_000_000 };
  await a.meta.putTag('docker.io', 'library/alpine', '3.20', record);
  await a.meta.putManifest(d, { mediaType: record.mediaType, size: 8 });
  const b = await setup(t, { prefix: a.prefix });
  t.same(await b.meta.getTag('docker.io', 'library/alpine', '3.20'), record);
  t.same(await b.meta.getManifest(d), { mediaType: record.mediaType, size: 8 });
  const newer = { ...record, checkedAt: record.checkedAt + 60_000 };
  await b.meta.putTag('docker.io', 'library/alpine', '3.20', newer);
  t.same(await a.meta.getTag('docker.io', 'library/alpine', '3.20'), newer, 'a revalidation by one replica is seen by the other');
});

t.test('presign: a short-lived URL for a stored blob that serves it and its ranges; none for a missing one', async (t) => {
  const { store } = await setup(t);
  const bytes = randomBytes(3000);
  const d = await put(store, bytes);
  const url = await store.presign(d, 60);
  t.ok(url?.startsWith(`${server.endpoint}/`), 'points at the bucket');
  t.match(url, /X-Amz-Expires=60/);
  const res = await fetch(url!);
  t.equal(res.status, 200);
  t.ok(Buffer.from(await res.arrayBuffer()).equals(bytes));
  const ranged = await fetch(url!, { headers: { range: 'bytes=100-199' } });
  t.equal(ranged.status, 206);
  t.ok(Buffer.from(await ranged.arrayBuffer()).equals(bytes.subarray(100, 200)));
  t.equal(await store.presign(digestOf(randomBytes(8)), 60), undefined);
});

t.test('the local tier keeps a checked copy of a whole blob read from the bucket, and serves it from then on', async (t) => {
  const { store: remote, commands, dir } = await setup(t);
  const local = await FsBlobStore.open({ dir: join(dir, 'local'), maxBytes: 1 << 30 });
  const tiered = new TieredBlobStore(local, remote);
  const bytes = randomBytes(3 * MiB + 1);
  const d = await put(remote, bytes);
  const ranged = await tiered.open(d, { start: 10, end: 20 });
  t.ok((await readAll(ranged!.stream)).equals(bytes.subarray(10, 20)), 'a range is served from the bucket');
  t.equal(await local.stat(d), undefined, 'a range is not copied');
  const first = await tiered.open(d);
  t.ok((await readAll(first!.stream)).equals(bytes), 'the first whole read comes from the bucket');
  await waitFor(async () => (await local.stat(d)) !== undefined, { timeoutMs: 10_000, what: 'the local copy' });
  const gets = commands.count('GetObjectCommand');
  const second = await tiered.open(d);
  t.ok((await readAll(second!.stream)).equals(bytes));
  t.equal(commands.count('GetObjectCommand'), gets, 'the second read never touched the bucket');
  t.same((await readAll((await local.open(d))!.stream)).equals(bytes), true, 'the local copy is the blob');
});

t.test('a failing bucket reads as a miss and stores nothing, without failing fills; it recovers by itself', async (t) => {
  const hop = await startHop(server.endpoint);
  t.teardown(() => hop.close());
  const { store, meta, health } = await setup(t, { endpoint: hop.url, cooldownMs: 300 });
  const stored = await put(store, randomBytes(50));
  t.ok(await store.stat(stored), 'healthy at first');

  Object.assign(hop.faults, { down: true });
  const d = digestOf(randomBytes(10));
  t.equal(await store.stat(digestOf(randomBytes(20))), undefined, 'stat: a miss');
  t.equal(await store.open(stored, { start: 0, end: 10 }), undefined, 'open: a miss');
  t.equal(await meta.getTag('u', 'r', 'latest'), undefined, 'tag: a miss');
  await meta.putTag('u', 'r', 'latest', { digest: d.value, mediaType: 'x', size: 1, checkedAt: 1 });
  const bytes = randomBytes(6 * MiB);
  const bd = digestOf(bytes);
  const source = controlledSource();
  const fill = await Fill.start(store, bd, { size: bytes.length, body: source });
  const client = consume(fill.reader());
  await feed(source, bytes);
  source.push(null);
  await settled(fill);
  const got = await within(client);
  t.ok(got.ended && got.bytes.equals(bytes), 'the fill still served its client every byte');
  t.ok(health.errors >= 3, `failures counted (${health.errors})`);

  hop.reset();
  await waitFor(
    async () => {
      await put(store, bytes);
      return (await store.stat(bd)) !== undefined;
    },
    { timeoutMs: 15_000, intervalMs: 200, what: 'the bucket to be used again' },
  );
  t.ok((await readAll((await store.open(bd))!.stream)).equals(bytes), 'stored once the bucket is back');
  await meta.putTag('u', 'r', 'latest', { digest: d.value, mediaType: 'x', size: 1, checkedAt: 2 });
  t.equal((await meta.getTag('u', 'r', 'latest'))?.checkedAt, 2, 'records too');
});

t.test('the bucket is left alone for a cooldown after failures in a row', async (t) => {
  const hop = await startHop(server.endpoint);
  t.teardown(() => hop.close());
  const { store, health } = await setup(t, { endpoint: hop.url, cooldownMs: 60_000 });
  Object.assign(hop.faults, { status: 503 });
  for (let i = 0; i < 3; i++) t.equal(await store.stat(digestOf(randomBytes(8))), undefined);
  const sent = hop.log.length;
  t.equal(health.errors, 3);
  t.equal(await store.stat(digestOf(randomBytes(8))), undefined, 'paused: a miss');
  t.equal(store.create(digestOf(randomBytes(8)), 10), undefined, 'paused: no writer, the fill ingests its file instead');
  await sleep(50);
  t.equal(hop.log.length, sent, 'and nothing was sent');
  t.ok(health.skipped >= 2);
});
