// The blob-store contract: what every BlobStore (memory, filesystem, S3, tiered) must do, as one
// suite each store's test file runs against its own factory. Fills go through the real Fill, so
// stores with a streaming writer are held to "visible only once verified" the way they are used.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BlobStore } from '../../src/cache/blob-store.js';
import { Fill } from '../../src/cache/fill.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { Test } from '../helpers/util.js';

export interface StoreUnderTest {
  store: BlobStore;
  /** A second instance on the same backing (another replica), when the store can be shared. */
  peer?: BlobStore;
}

export type StoreFactory = (t: Test) => Promise<StoreUnderTest>;

const MiB = 1 << 20;

/** Writes bytes into the store's spool dir and ingests them as a verified blob. */
export async function put(store: BlobStore, bytes: Buffer): Promise<Digest> {
  const digest = digestOf(bytes);
  const file = join(store.spoolDir, `test-${randomUUID()}`);
  await writeFile(file, bytes);
  await store.ingest(digest, file, bytes.length);
  return digest;
}

export async function readAll(stream: Readable): Promise<Buffer> {
  return Buffer.concat(await stream.toArray());
}

export interface Outcome {
  bytes: Buffer;
  ended: boolean;
  error: Error | undefined;
}

/** Consumes a stream to its end or its error; never rejects. */
export function consume(stream: Readable): Promise<Outcome> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let ended = false;
    let error: Error | undefined;
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => (ended = true));
    stream.on('error', (e) => (error = e));
    stream.on('close', () => resolve({ bytes: Buffer.concat(chunks), ended, error }));
  });
}

/** Settles within the limit, or fails instead of hanging the test. */
export function within<T>(p: Promise<T>, ms = 20_000, what = 'operation'): Promise<T> {
  const timeout = sleep(ms, undefined, { ref: false }).then(() => Promise.reject(new Error(`${what} did not settle within ${ms}ms`)));
  timeout.catch(() => undefined);
  return Promise.race([p, timeout]);
}

/** An upstream body pushed by hand. */
export function controlledSource(): Readable {
  return new Readable({ read() {} });
}

export async function feed(source: Readable, bytes: Buffer, pieceBytes = 256 << 10): Promise<void> {
  for (let i = 0; i < bytes.length; i += pieceBytes) {
    source.push(bytes.subarray(i, i + pieceBytes));
    await sleep(1);
  }
}

export async function settled(fill: Fill): Promise<Error | undefined> {
  try {
    await within(fill.done, 30_000, 'fill');
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function listAll(store: BlobStore): Promise<string[]> {
  const out: string[] = [];
  for await (const d of store.list()) out.push(d);
  return out.sort();
}

async function spoolLeft(store: BlobStore): Promise<string[]> {
  return (await readdir(store.spoolDir)).filter((f) => !f.startsWith('.'));
}

export function blobStoreContract(t: Test, name: string, make: StoreFactory): void {
  t.test(`${name}: a miss is undefined, never an error`, async (t) => {
    const { store } = await make(t);
    const d = digestOf(randomBytes(32));
    t.equal(await store.stat(d), undefined);
    t.equal(await store.open(d), undefined);
    t.equal(await store.open(d, { start: 0, end: 10 }), undefined);
  });

  t.test(`${name}: ingest makes a blob visible with its size and bytes, and takes the file`, async (t) => {
    const { store } = await make(t);
    const bytes = randomBytes(5000);
    const d = await put(store, bytes);
    t.same(await store.stat(d), { digest: d.value, size: 5000 });
    const reader = await store.open(d);
    t.equal(reader?.size, 5000);
    t.ok((await readAll(reader!.stream)).equals(bytes), 'same bytes back');
    t.same(await spoolLeft(store), [], 'nothing left in the spool dir');
  });

  t.test(`${name}: an empty blob can be stored and read`, async (t) => {
    const { store } = await make(t);
    const d = await put(store, Buffer.alloc(0));
    t.same(await store.stat(d), { digest: d.value, size: 0 });
    const reader = await store.open(d);
    t.equal(reader?.size, 0);
    t.equal((await readAll(reader!.stream)).length, 0);
  });

  t.test(`${name}: open with a range returns exactly those bytes and the whole size`, async (t) => {
    const { store } = await make(t);
    const bytes = randomBytes(2 * MiB + 123);
    const d = await put(store, bytes);
    const ranges: [number, number][] = [
      [0, 1],
      [0, 10],
      [5, 6],
      [100, MiB + 1],
      [MiB - 1, MiB + 2],
      [bytes.length - 3, bytes.length],
      [bytes.length - 1, bytes.length],
      [0, bytes.length],
    ];
    for (const [start, end] of ranges) {
      const reader = await store.open(d, { start, end });
      t.equal(reader?.size, bytes.length, `size of the whole blob for [${start}, ${end})`);
      const got = await readAll(reader!.stream);
      t.ok(got.equals(bytes.subarray(start, end)), `bytes [${start}, ${end}) (${got.length} bytes)`);
    }
  });

  t.test(`${name}: delete removes a blob; deleting a missing one is fine`, async (t) => {
    const { store } = await make(t);
    const d = await put(store, randomBytes(100));
    await store.delete(d);
    t.equal(await store.stat(d), undefined);
    t.equal(await store.open(d), undefined);
    await store.delete(d);
    t.notOk((await listAll(store)).includes(d.value));
  });

  t.test(`${name}: list yields every stored digest once`, async (t) => {
    const { store } = await make(t);
    const digests: string[] = [];
    for (let i = 0; i < 5; i++) digests.push((await put(store, randomBytes(10 + i))).value);
    t.same(await listAll(store), digests.sort());
  });

  t.test(`${name}: a fill stores the blob; its readers get every byte while it runs`, async (t) => {
    const { store } = await make(t);
    const bytes = randomBytes(6 * MiB + 17);
    const d = digestOf(bytes);
    const source = controlledSource();
    const fill = await Fill.start(store, d, { size: bytes.length, body: source });
    const early = consume(fill.reader());
    await feed(source, bytes.subarray(0, 3 * MiB));
    const mid = consume(fill.reader({ start: MiB, end: 4 * MiB + 1 }));
    await feed(source, bytes.subarray(3 * MiB));
    source.push(null);
    t.equal(await settled(fill), undefined, 'the fill succeeded');
    const a = await within(early, 20_000, 'early reader');
    const b = await within(mid, 20_000, 'mid reader');
    t.ok(a.ended && a.bytes.equals(bytes), 'a reader from the start gets the whole blob');
    t.ok(b.ended && b.bytes.equals(bytes.subarray(MiB, 4 * MiB + 1)), 'a ranged reader gets its range');
    t.same(await store.stat(d), { digest: d.value, size: bytes.length });
    t.equal(sha256(await readAll((await store.open(d))!.stream)), d.value, 'the stored bytes hash to the digest');
    t.same(await spoolLeft(store), [], 'no spool file left');
  });

  t.test(`${name}: nothing is visible under the digest before the fill verified`, async (t) => {
    const { store, peer } = await make(t);
    const bytes = randomBytes(6 * MiB + 5);
    const d = digestOf(bytes);
    const source = controlledSource();
    const fill = await Fill.start(store, d, { size: bytes.length, body: source });
    const reader = consume(fill.reader());
    await feed(source, bytes); // every byte is there, but the stream has not ended: not verified yet
    await sleep(300);
    t.equal(await store.stat(d), undefined, 'no blob while the fill runs');
    if (peer) t.equal(await peer.stat(d), undefined, 'another replica sees none either');
    t.notOk((await listAll(store)).includes(d.value), 'not listed');
    source.push(null);
    t.equal(await settled(fill), undefined);
    t.ok((await within(reader)).bytes.equals(bytes));
    t.same(await store.stat(d), { digest: d.value, size: bytes.length }, 'visible once verified');
    if (peer) t.same(await peer.stat(d), { digest: d.value, size: bytes.length }, 'and to another replica');
  });

  for (const [what, size] of [['small', 1000], ['multipart-sized', 11 * MiB]] as const) {
    t.test(`${name}: a ${what} fill whose content does not match its digest stores nothing`, async (t) => {
      const { store, peer } = await make(t);
      const bytes = randomBytes(size);
      const d = digestOf(randomBytes(size)); // some other content's digest
      const source = controlledSource();
      const fill = await Fill.start(store, d, { size, body: source });
      const reader = consume(fill.reader());
      await feed(source, bytes);
      source.push(null);
      const err = await settled(fill);
      t.match(err?.message, /verification failed/, 'the fill failed verification');
      const r = await within(reader);
      t.ok(r.error, 'its reader saw an error');
      t.ok(r.bytes.length < size, 'and never the last byte');
      t.equal(await store.stat(d), undefined, 'nothing stored');
      if (peer) t.equal(await peer.stat(d), undefined);
      t.notOk((await listAll(store)).includes(d.value), 'nothing listed');
      await sleep(100);
      t.same(await spoolLeft(store), [], 'no spool file left');
    });
  }

  t.test(`${name}: sha512 blobs: a fill stores one under its digest, a mismatch stores nothing`, async (t) => {
    const { store } = await make(t);
    const bytes = randomBytes(3 * MiB + 7);
    const d = digestOf(bytes, 'sha512');
    const source = controlledSource();
    const fill = await Fill.start(store, d, { size: bytes.length, body: source });
    const reader = consume(fill.reader());
    await feed(source, bytes);
    source.push(null);
    t.equal(await settled(fill), undefined, 'the fill succeeded');
    t.ok((await within(reader)).bytes.equals(bytes), 'its reader got every byte');
    t.same(await store.stat(d), { digest: d.value, size: bytes.length }, 'stored under the sha512 digest');
    t.ok((await readAll((await store.open(d))!.stream)).equals(bytes), 'same bytes back');
    t.ok((await listAll(store)).includes(d.value), 'listed');
    t.equal(await store.stat(digestOf(bytes)), undefined, 'and not under its sha256');

    const wrong = digestOf(randomBytes(1000), 'sha512');
    const bad = controlledSource();
    const badFill = await Fill.start(store, wrong, { size: 1000, body: bad });
    const badReader = consume(badFill.reader());
    await feed(bad, randomBytes(1000));
    bad.push(null);
    t.match((await settled(badFill))?.message, /verification failed/, 'a sha512 mismatch fails verification');
    t.ok((await within(badReader)).error, 'its reader saw an error');
    t.equal(await store.stat(wrong), undefined, 'nothing stored');
    t.notOk((await listAll(store)).includes(wrong.value), 'nothing listed');
    await sleep(100);
    t.same(await spoolLeft(store), [], 'no spool file left');
  });

  t.test(`${name}: a fill whose upstream breaks off stores nothing`, async (t) => {
    const { store } = await make(t);
    const bytes = randomBytes(7 * MiB);
    const d = digestOf(bytes);
    const source = controlledSource();
    const fill = await Fill.start(store, d, { size: bytes.length, body: source }, 0);
    await feed(source, bytes.subarray(0, 6 * MiB));
    source.destroy(new Error('connection reset'));
    t.match((await settled(fill))?.message, /connection reset/);
    t.equal(await store.stat(d), undefined);
    t.notOk((await listAll(store)).includes(d.value));
  });

  t.test(`${name}: two fills of one blob at the same moment end with one correct blob`, async (t) => {
    const { store, peer } = await make(t);
    const other = peer ?? store;
    const bytes = randomBytes(9 * MiB + 3);
    const d = digestOf(bytes);
    const sources = [controlledSource(), controlledSource()];
    const fills = [await Fill.start(store, d, { size: bytes.length, body: sources[0]! }), await Fill.start(other, d, { size: bytes.length, body: sources[1]! })];
    await Promise.all(sources.map((s) => feed(s, bytes)));
    for (const s of sources) s.push(null);
    const errors = await Promise.all(fills.map(settled));
    t.same(errors, [undefined, undefined], 'both fills succeeded');
    for (const s of [store, other]) {
      t.same(await s.stat(d), { digest: d.value, size: bytes.length });
      t.equal(sha256(await readAll((await s.open(d))!.stream)), d.value, 'the one blob is correct');
    }
    t.same((await listAll(store)).filter((x) => x === d.value), [d.value], 'listed once');
  });

  t.test(`${name}: a streaming writer that is aborted leaves nothing`, async (t) => {
    const { store } = await make(t);
    const bytes = randomBytes(6 * MiB);
    const d = digestOf(bytes);
    const writer = store.create?.(d, bytes.length);
    if (!writer?.sink) {
      t.pass('this store has no streaming writer');
      return;
    }
    writer.sink.on('error', () => undefined);
    writer.sink.write(bytes.subarray(0, 3 * MiB));
    await sleep(50);
    await within(writer.abort(new Error('fill failed')), 20_000, 'abort');
    await within(writer.abort(new Error('again')), 20_000, 'a second abort');
    t.equal(await store.stat(d), undefined);
    t.notOk((await listAll(store)).includes(d.value));
  });
}
