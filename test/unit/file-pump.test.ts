import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { pumpFile } from '../../src/cache/file-pump.js';

const MiB = 1 << 20;

async function fileWith(t: { teardown(fn: () => unknown): void }, content: Buffer) {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-pump-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const path = join(dir, 'blob');
  await writeFile(path, content);
  const handle = await open(path, 'r');
  t.teardown(() => handle.close());
  return handle;
}

/** A client that takes each chunk after `delayMs`, keeping copies of what it got. */
function slowClient(delayMs: number): Writable & { got: Buffer[] } {
  const got: Buffer[] = [];
  const w = new Writable({
    highWaterMark: 1,
    write(chunk: Buffer, _enc, cb) {
      got.push(Buffer.from(chunk)); // the pump reuses its buffers: copy what arrived
      setTimeout(cb, delayMs);
    },
  });
  return Object.assign(w, { got });
}

t.test('sends the exact range, through reused buffers, and leaves no listener behind', async (t) => {
  const content = randomBytes(5 * MiB + 123);
  const file = await fileWith(t, content);
  const client = slowClient(1);
  await pumpFile(file, 1000, content.length - 7, client);
  t.ok(Buffer.concat(client.got).equals(content.subarray(1000, content.length - 7)), 'the bytes of [start, end)');
  t.equal(client.listenerCount('close'), 0, 'its close listener is removed when it is done');
});

t.test('a client that goes away mid-range ends the pump with an error, not a hang', async (t) => {
  const content = randomBytes(8 * MiB);
  const file = await fileWith(t, content);
  const client = slowClient(20);
  setTimeout(() => client.destroy(), 50);
  await t.rejects(pumpFile(file, 0, content.length, client), /went away|destroyed/);
  t.ok(Buffer.concat(client.got).length < content.length, 'stopped before the end');
});

t.test('follows a file that is still being written, and flushes what it wrote before a failure', async (t) => {
  const content = randomBytes(3 * MiB);
  const file = await fileWith(t, content);
  const client = slowClient(5);
  let calls = 0;
  const available = async (pos: number): Promise<number> => {
    calls++;
    await sleep(2);
    if (pos >= 2 * MiB) throw new Error('the upstream broke off');
    return Math.min(pos + 256 * 1024, 2 * MiB);
  };
  await t.rejects(pumpFile(file, 0, content.length, client, available), /broke off/);
  t.ok(calls > 8, 'waited for the file to grow, piece by piece');
  t.ok(Buffer.concat(client.got).equals(content.subarray(0, 2 * MiB)), 'every byte made available reached the client first');
});
