// writeAll continues after short writes (a filling disk, an interrupted call) until every byte of
// a batch landed at its place, and fails rather than loop when the disk takes nothing.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeDir, writeAll } from '../../src/cache/disk-writes.js';

/** A file in memory whose writev takes at most `max` bytes per call (0: none). */
function shortWriter(max: number): { handle: FileHandle; data: Buffer; calls: () => number } {
  const data = Buffer.alloc(1 << 16);
  let calls = 0;
  const handle = {
    async writev(buffers: Buffer[], position: number) {
      calls++;
      let n = 0;
      for (const b of buffers) {
        const take = Math.min(b.length, max - n);
        b.copy(data, position + n, 0, take);
        n += take;
        if (n === max) break;
      }
      return { bytesWritten: n, buffers };
    },
  } as unknown as FileHandle;
  return { handle, data, calls: () => calls };
}

t.test('short writes are continued until the whole batch is written, in order, at its position', async (t) => {
  const pieces = [randomBytes(1000), randomBytes(0), randomBytes(3333), randomBytes(7)];
  const whole = Buffer.concat(pieces);
  for (const max of [1, 999, 1000, 1001, 4000]) {
    const f = shortWriter(max);
    await writeAll(f.handle, pieces, whole.length, 100);
    t.ok(f.data.subarray(100, 100 + whole.length).equals(whole), `at most ${max} bytes a call: every byte in place`);
    t.equal(f.calls(), Math.ceil(whole.length / max), `in ${f.calls()} calls`);
  }
});

t.test('a write that takes nothing is ENOSPC, not a loop', async (t) => {
  await t.rejects(writeAll(shortWriter(0).handle, [Buffer.from('x')], 1, 0), { code: 'ENOSPC' });
});

t.test('makeDir: mkdir -p; levels that exist are no error, eight at once all succeed, a file in the way is its own error', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'pullthrough-makedir-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await makeDir(join(dir, 'a', 'b', 'c'));
  t.ok((await stat(join(dir, 'a', 'b', 'c'))).isDirectory(), 'every level made');
  await Promise.all(Array.from({ length: 8 }, () => makeDir(join(dir, 'x', 'y'))));
  t.ok((await stat(join(dir, 'x', 'y'))).isDirectory(), 'eight at once: made, none failed');
  await writeFile(join(dir, 'file'), '');
  await t.rejects(makeDir(join(dir, 'file', 'sub')), { code: 'ENOTDIR' }, 'a file in the way: its own error');
});
