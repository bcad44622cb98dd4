// A small real filesystem to run out of: a tmpfs mounted for one test (we run as root, CI too),
// with a filler file to leave exactly as many bytes free as a case needs, and a switch to
// read-only. Unmounted (lazily, so open files cannot keep it) when the test ends.
import { rm, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, removeDir, run } from './util.js';

/** tmpfs allocates whole pages: a file of n bytes takes ceil(n / PAGE) pages. */
export const PAGE = 4096;

export interface Tmpfs {
  dir: string;
  /** bytes still free */
  free(): Promise<number>;
  /** writes a filler file so that `leave` bytes (a multiple of PAGE) stay free */
  fill(leave?: number): Promise<void>;
  /** removes the filler: the space is back */
  unfill(): Promise<void>;
  readOnly(): Promise<void>;
  readWrite(): Promise<void>;
}

export async function mountTmpfs(t: { teardown(fn: () => unknown): void }, bytes: number): Promise<Tmpfs> {
  const dir = await makeTempDir('pullthrough-tmpfs-');
  await run('mount', ['-t', 'tmpfs', '-o', `size=${bytes}`, 'tmpfs', dir]);
  t.teardown(async () => {
    await run('umount', ['-l', dir]).catch(() => undefined);
    await removeDir(dir);
  });
  const filler = join(dir, 'filler');
  const free = async (): Promise<number> => {
    const s = await statfs(dir);
    return s.bavail * s.bsize;
  };
  return {
    dir,
    free,
    async fill(leave = 0) {
      if (leave % PAGE !== 0) throw new Error(`leave ${leave}: not a multiple of ${PAGE}`);
      await rm(filler, { force: true });
      await writeFile(filler, Buffer.alloc((await free()) - leave));
      if ((await free()) !== leave) throw new Error(`the filler left ${await free()} bytes free, not ${leave}`);
    },
    unfill: () => rm(filler, { force: true }),
    readOnly: () => run('mount', ['-o', 'remount,ro', dir]).then(() => undefined),
    readWrite: () => run('mount', ['-o', 'remount,rw', dir]).then(() => undefined),
  };
}
