import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { Fill } from '../../src/cache/fill.js';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import { consume, controlledSource, type Outcome } from '../contract/blob-store.suite.js';

const MiB = 1 << 20;

async function newStore(t: { teardown(fn: () => unknown): void }, maxBytes = 64 * MiB): Promise<FsBlobStore> {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-fill-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return FsBlobStore.open({ dir, maxBytes });
}


function split(buf: Buffer, pieces: number): Buffer[] {
  const out: Buffer[] = [];
  const step = Math.ceil(buf.length / pieces);
  for (let i = 0; i < buf.length; i += step) out.push(buf.subarray(i, i + step));
  return out;
}


/** Settles within the time limit, or fails the test instead of hanging it. */
function within<T>(p: Promise<T>, ms = 5000, what = 'operation'): Promise<T> {
  const timeout = sleep(ms, undefined, { ref: false }).then(() => Promise.reject(new Error(`${what} did not settle within ${ms}ms`)));
  timeout.catch(() => undefined);
  return Promise.race([p, timeout]);
}

async function feed(source: Readable, chunks: Buffer[], delayMs = 5, between?: (i: number) => Promise<void> | void) {
  for (let i = 0; i < chunks.length; i++) {
    source.push(chunks[i]);
    await sleep(delayMs);
    await between?.(i);
  }
  source.push(null);
}

async function settled(fill: Fill): Promise<Error | undefined> {
  try {
    await within(fill.done, 10_000, 'fill');
    return undefined;
  } catch (e) {
    return e as Error;
  }
}

async function assertNothingCached(t: Tap, store: FsBlobStore, digest: Digest) {
  t.equal(await store.stat(digest), undefined, 'nothing ingested');
  t.equal(await store.open(digest), undefined, 'nothing to open');
  t.same(await readdir(store.spoolDir), [], 'spool dir is empty');
  t.equal(store.usedBytes, 0, 'no bytes accounted');
}

type Tap = { equal: typeof t.equal; same: typeof t.same };

for (const declared of [true, false]) {
  t.test(`readers before, during and after the fill get the full content (size ${declared ? 'declared' : 'unknown'})`, async (t) => {
    const store = await newStore(t);
    const content = randomBytes(3 * MiB + 4321);
    const digest = digestOf(content);
    const source = controlledSource();
    const fill = await Fill.start(store, digest, { size: declared ? content.length : undefined, body: source });

    const early = consume(fill.reader());
    let middle: Promise<Outcome> | undefined;
    let middleRange: Promise<Outcome> | undefined;
    await feed(source, split(content, 8), 5, (i) => {
      if (i === 3) {
        middle = consume(fill.reader());
        middleRange = consume(fill.reader({ start: 10, end: 2 * MiB + 8 }));
      }
    });
    t.equal(await settled(fill), undefined, 'fill succeeds');
    const late = consume(fill.reader());
    const lateRange = consume(fill.reader({ start: content.length - 5, end: content.length }));

    for (const [name, p] of [['early', early], ['middle', middle!], ['late', late]] as const) {
      const o = await within(p, 5000, `${name} reader`);
      t.equal(o.error, undefined, `${name}: no error`);
      t.equal(o.ended, true, `${name}: ends cleanly`);
      t.equal(o.bytes.length, content.length, `${name}: full length`);
      t.ok(o.bytes.equals(content), `${name}: exactly the content`);
    }
    const mr = await within(middleRange!, 5000, 'middle range reader');
    t.ok(mr.ended && mr.bytes.equals(content.subarray(10, 2 * MiB + 8)), 'range joined mid-fill gets exactly its range');
    const lr = await within(lateRange, 5000, 'late range reader');
    t.ok(lr.ended && lr.bytes.equals(content.subarray(content.length - 5)), 'range after completion gets exactly its range');

    t.same(await store.stat(digest), { digest: digest.value, size: content.length }, 'ingested');
    t.equal(fill.bytesWritten, content.length);
    t.same(await readdir(store.spoolDir), [], 'the spool file was moved into the store');
  });
}

t.test('a reader with a range gets exactly that range', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(2 * MiB + 17);
  const digest = digestOf(content);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  const ranges: [number, number][] = [
    [0, 1],
    [0, 100],
    [5, 6],
    [MiB - 1, MiB + 2],
    [content.length - 1, content.length],
    [1000, content.length],
  ];
  const outcomes = ranges.map(([start, end]) => consume(fill.reader({ start, end })));
  await feed(source, split(content, 5));
  t.equal(await settled(fill), undefined);
  for (let i = 0; i < ranges.length; i++) {
    const [start, end] = ranges[i]!;
    const o = await within(outcomes[i]!, 5000, `range [${start}, ${end})`);
    t.equal(o.error, undefined, `[${start}, ${end}): no error`);
    t.ok(o.ended, `[${start}, ${end}): ends`);
    t.ok(o.bytes.equals(content.subarray(start, end)), `[${start}, ${end}): exact bytes (${o.bytes.length})`);
  }
});

t.test('a slow (paused) reader does not hold up the fill', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(6 * MiB);
  const digest = digestOf(content);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  const slow = fill.reader();
  slow.pause();
  const feeding = feed(source, split(content, 12), 1);
  t.equal(await settled(fill), undefined, 'fill completes while the reader reads nothing');
  await feeding;
  t.same(await store.stat(digest), { digest: digest.value, size: content.length }, 'and is ingested');
  const o = await within(consume(slow.resume()), 5000, 'slow reader');
  t.ok(o.ended && o.bytes.equals(content), 'the slow reader still gets everything afterwards');
});

t.test('destroying a reader does not stop the fill', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(3 * MiB);
  const digest = digestOf(content);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  const quitter = fill.reader();
  const stayer = consume(fill.reader());
  let got = 0;
  quitter.on('data', (c: Buffer) => {
    got += c.length;
    quitter.destroy();
  });
  await feed(source, split(content, 6));
  t.equal(await settled(fill), undefined, 'fill completes');
  t.ok(got > 0, 'the quitter had started reading');
  t.equal(quitter.destroyed, true);
  t.same(await store.stat(digest), { digest: digest.value, size: content.length }, 'ingested');
  const o = await within(stayer, 5000, 'other reader');
  t.ok(o.ended && o.bytes.equals(content), 'another reader is unaffected');
});

for (const declared of [true, false]) {
  t.test(`wrong bytes: every reader errors, the last byte is withheld, nothing is cached (size ${declared ? 'declared' : 'unknown'})`, async (t) => {
    const store = await newStore(t);
    const content = randomBytes(2 * MiB + 99);
    const digest = digestOf(content);
    const wrong = Buffer.from(content);
    wrong[wrong.length - 1] = wrong[wrong.length - 1]! ^ 0xff; // only the very last byte differs
    const source = controlledSource();
    const fill = await Fill.start(store, digest, { size: declared ? content.length : undefined, body: source });

    const readers = [consume(fill.reader()), consume(fill.reader({ start: 100, end: content.length }))];
    await feed(source, split(wrong, 4), 5, (i) => {
      if (i === 1) readers.push(consume(fill.reader()));
    });
    const failure = await settled(fill);
    t.ok(failure, 'fill fails');
    t.match(failure?.message, /verification failed/);
    readers.push(consume(fill.reader())); // joins after the failure

    for (const [i, p] of readers.entries()) {
      const o = await within(p, 5000, `reader ${i}`);
      t.ok(o.error, `reader ${i}: errors`);
      t.equal(o.ended, false, `reader ${i}: never ends cleanly`);
      const start = i === 1 ? 100 : 0;
      t.ok(o.bytes.length < content.length - start, `reader ${i}: never receives the last byte (${o.bytes.length})`);
      t.ok(o.bytes.equals(wrong.subarray(start, start + o.bytes.length)), `reader ${i}: what it got is in order`);
    }
    t.not(fill.error, undefined, 'fill.error is set');
    await assertNothingCached(t, store, digest);
  });
}

t.test('a source that errors mid-way fails its readers and caches nothing', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(2 * MiB);
  const digest = digestOf(content);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  const readers = [consume(fill.reader()), consume(fill.reader({ start: 0, end: 11 })), consume(fill.reader({ start: 0, end: 11 }, true))];
  const chunks = split(content, 4);
  source.push(chunks[0]);
  await sleep(10);
  readers.push(consume(fill.reader()));
  source.push(chunks[1]);
  await sleep(10);
  source.destroy(new Error('connection reset by upstream'));
  const failure = await settled(fill);
  t.ok(failure, 'fill fails');
  const [full, small, unverified, joined] = await within(Promise.all(readers), 5000, 'readers');
  for (const [name, o] of [['first', full!], ['joined', joined!]] as const) {
    t.ok(o.error, `${name}: errors`);
    t.equal(o.ended, false, `${name}: no clean end`);
    t.ok(o.bytes.length < content.length, `${name}: incomplete`);
  }
  t.ok(!small!.ended && small!.error && small!.bytes.equals(content.subarray(0, 10)), 'a range that had fully arrived is aborted: its last byte waited for the whole blob');
  t.ok(unverified!.ended && unverified!.bytes.equals(content.subarray(0, 11)), 'an unverified range that had fully arrived was already served');
  await assertNothingCached(t, store, digest);
});

for (const [name, body] of [
  ['fewer', (c: Buffer) => c.subarray(0, c.length - 10)],
  ['more', (c: Buffer) => Buffer.concat([c, Buffer.from('trailing garbage')])],
] as const) {
  t.test(`declared size but the source sends ${name} bytes: failure, nothing cached`, async (t) => {
    const store = await newStore(t);
    const content = randomBytes(MiB + 5);
    const sent = body(content);
    // the digest of what is sent: only the size can catch the mismatch
    const digest = digestOf(sent);
    const source = controlledSource();
    const fill = await Fill.start(store, digest, { size: content.length, body: source });
    const reader = consume(fill.reader());
    await feed(source, split(sent, 3));
    const failure = await settled(fill);
    t.ok(failure, 'fill fails');
    t.match(failure?.message, /bytes/);
    const o = await within(reader, 5000, 'reader');
    t.ok(o.error, 'reader errors');
    t.equal(o.ended, false, 'reader does not end cleanly');
    t.ok(o.bytes.length < content.length, 'reader never gets a full-size body');
    await assertNothingCached(t, store, digest);
  });
}

t.test('an empty blob fills and reads', async (t) => {
  const store = await newStore(t);
  const digest = digestOf(Buffer.alloc(0));
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: 0, body: source });
  const early = consume(fill.reader());
  source.push(null);
  t.equal(await settled(fill), undefined);
  const o = await within(early, 5000, 'reader');
  t.ok(o.ended && o.bytes.length === 0);
  t.same(await store.stat(digest), { digest: digest.value, size: 0 });
});

t.test('a reader that arrives after a fill nobody was reading gets the full content', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(MiB + 3);
  const digest = digestOf(content);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  await feed(source, split(content, 3));
  t.equal(await settled(fill), undefined, 'fill succeeds');
  await sleep(20); // nobody joined in time; the fill is idle
  const whole = await within(consume(fill.reader()), 5000, 'late reader');
  t.equal(whole.error, undefined, 'no error');
  t.ok(whole.ended && whole.bytes.equals(content), 'exactly the content');
  const part = await within(consume(fill.reader({ start: 7, end: 21 })), 5000, 'late range reader');
  t.ok(part.ended && part.bytes.equals(content.subarray(7, 21)), 'exactly the range');
});

t.test('a reader that arrives after a failed fill nobody was reading errors', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(1000);
  const source = controlledSource();
  const fill = await Fill.start(store, digestOf(content), { size: content.length, body: source });
  source.push(content.subarray(0, 500));
  await sleep(5);
  source.destroy(new Error('upstream went away'));
  t.ok(await settled(fill), 'fill fails');
  await sleep(20);
  const o = await within(consume(fill.reader()), 5000, 'late reader');
  t.ok(o.error, 'errors');
  t.equal(o.ended, false, 'no clean end');
  t.match(o.error?.message, /upstream went away/, 'with the fill failure as the reason');
});

t.test('pipeTo follows a trickling download: bytes reach the client long before a buffer fills', async (t) => {
  const store = await newStore(t);
  const content = randomBytes(256 * 1024); // well under the pump's 512 KiB buffer
  const digest = digestOf(content);
  const source = controlledSource();
  const fill = await Fill.start(store, digest, { size: content.length, body: source });
  const got: Buffer[] = [];
  const client = new Writable({
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk));
      cb();
    },
  });
  const piped = fill.pipeTo(undefined, client);
  let midway = -1;
  await feed(source, split(content, 64), 5, (i) => {
    if (i === 32) midway = Buffer.concat(got).length;
  });
  await within(piped, 5000, 'pipeTo');
  t.ok(midway > 0, `half-way through the download the client already had bytes (${midway})`);
  t.ok(midway < content.length, 'and not the bytes that had not arrived yet');
  t.ok(got.length > 2, `they came in several pieces as the download went on (${got.length})`);
  t.ok(Buffer.concat(got).equals(content), 'exactly the content');
  t.equal(await settled(fill), undefined);
});
