// A range read from a fill in progress is never completed from unverified bytes: its last byte
// waits until the whole blob hashed to its digest, and a failed fill aborts it instead, through
// both ways of reading (a stream and pipeTo). Asked for unverified bytes, it keeps the old,
// faster behaviour. firstByte tells a caller when a status may go out.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { Fill } from '../../src/cache/fill.js';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { consume, controlledSource, within, type Outcome } from '../contract/blob-store.suite.js';
import { waitFor } from '../helpers/util.js';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const KiB = 1 << 10;

async function newStore(t: Test): Promise<FsBlobStore> {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-fill-ranges-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return FsBlobStore.open({ dir, maxBytes: 64 << 20 });
}

/** A sink that keeps what it was sent; `ended` only when it was ended. */
function sink(): { stream: Writable; got: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(Buffer.from(chunk));
      cb();
    },
  });
  return { stream, got: () => Buffer.concat(chunks) };
}

/** How one read of [start, end] went: a stream reader or pipeTo, with or without unverified bytes. */
interface Read {
  received(): number;
  outcome: Promise<Outcome>;
}

function read(fill: Fill, start: number, end: number, how: 'reader' | 'pipeTo', unverified: boolean): Read {
  if (how === 'reader') {
    let n = 0;
    const r = fill.reader({ start, end }, unverified);
    r.on('data', (c: Buffer) => (n += c.length));
    return { received: () => n, outcome: consume(r) };
  }
  const s = sink();
  const outcome = fill.pipeTo({ start, end }, s.stream, unverified).then(
    () => ({ bytes: s.got(), ended: true, error: undefined }),
    (e: Error) => ({ bytes: s.got(), ended: false, error: e }),
  );
  return { received: () => s.got().length, outcome };
}

async function started(t: Test, content: Buffer, digest: Digest = digestOf(content)) {
  const store = await newStore(t);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  return { store, source, fill };
}

for (const how of ['reader', 'pipeTo'] as const) {
  t.test(`${how}: a range the fill has passed ends only once the whole blob verified`, async (t) => {
    const content = randomBytes(300 * KiB);
    const { source, fill } = await started(t, content);
    const range = { start: 1000, end: 100_000 };
    source.push(content.subarray(0, 200 * KiB)); // the range's bytes are all there, the blob is not
    const r = read(fill, range.start, range.end, how, false);
    await waitFor(() => r.received() === range.end - range.start - 1, { timeoutMs: 5000, what: 'all but the last byte of the range' });
    let ended = false;
    void r.outcome.then(() => (ended = true));
    await new Promise((resolve) => setImmediate(resolve));
    t.notOk(ended, 'not ended while the blob is unverified');
    t.notOk(fill.verified);
    source.push(content.subarray(200 * KiB));
    source.push(null);
    const o = await within(r.outcome, 5000, how);
    t.ok(fill.verified, 'the blob verified');
    t.equal(o.error, undefined);
    t.ok(o.ended && o.bytes.equals(content.subarray(range.start, range.end)), 'then the whole range, exactly');
  });

  t.test(`${how}: a wrong byte anywhere in the blob aborts a range, even one that had fully arrived`, async (t) => {
    const content = randomBytes(300 * KiB);
    const bent = Buffer.from(content);
    bent[250 * KiB] = bent[250 * KiB]! ^ 0xff; // outside the range
    const { source, fill } = await started(t, bent, digestOf(content));
    const range = { start: 0, end: 100 };
    const r = read(fill, range.start, range.end, how, false);
    source.push(bent);
    source.push(null);
    const o = await within(r.outcome, 5000, how);
    t.ok(o.error, 'the range errors');
    t.equal(o.ended, false, 'no clean end');
    t.ok(o.bytes.length < 100, `its last byte was held back (${o.bytes.length} of 100)`);
  });

  t.test(`${how} with unverified bytes: a range ends as soon as its bytes are there`, async (t) => {
    const content = randomBytes(300 * KiB);
    const { source, fill } = await started(t, content);
    const r = read(fill, 0, 100, how, true);
    source.push(content.subarray(0, 200 * KiB));
    const o = await within(r.outcome, 5000, how);
    t.notOk(fill.verified, 'before the blob verified');
    t.ok(o.ended && o.bytes.equals(content.subarray(0, 100)), 'the range, whole');
    source.push(content.subarray(200 * KiB));
    source.push(null);
    await within(fill.done, 5000, 'fill');
  });
}

t.test('firstByte: resolves once the byte is there, or the blob verified; rejects with the failure', async (t) => {
  const content = randomBytes(100 * KiB);
  const a = await started(t, content);
  const at = a.fill.firstByte(50 * KiB);
  let resolved = false;
  void at.then(() => (resolved = true));
  a.source.push(content.subarray(0, 10 * KiB));
  await waitFor(() => a.fill.bytesWritten === 10 * KiB, { timeoutMs: 5000, what: 'the first bytes written' });
  await new Promise((resolve) => setImmediate(resolve));
  t.notOk(resolved, 'not before the byte arrived');
  a.source.push(content.subarray(10 * KiB));
  await within(at, 5000, 'firstByte');
  t.pass('resolved once it did');

  const empty = await started(t, Buffer.alloc(0));
  empty.source.push(null);
  await within(empty.fill.firstByte(0), 5000, 'firstByte of an empty blob');
  t.pass('an empty blob: resolved once verified');

  const b = await started(t, content);
  const failing = b.fill.firstByte(0);
  b.source.destroy(new Error('reset right after the headers'));
  await t.rejects(within(failing, 5000, 'firstByte'), /reset right after the headers/, 'a failure before the first byte rejects');
});
