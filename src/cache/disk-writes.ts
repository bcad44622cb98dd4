// Writes that either land whole or fail, and leave nothing behind when they fail. A write to a
// filling disk can be short (the kernel writes what fits and reports how much); taken as whole,
// it would make a file shorter than what was hashed, and such a file must never become visible.
import { mkdir, rename, rm, stat, writeFile, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { RegistryError } from '../oci/errors.js';

/** Writes `bytes` bytes of `buffers` at `position`, continuing after short writes; throws ENOSPC when the disk takes none. */
export async function writeAll(file: FileHandle, buffers: Buffer[], bytes: number, position: number): Promise<void> {
  let done = 0;
  let rest = buffers;
  while (done < bytes) {
    const { bytesWritten } = await file.writev(rest, position + done);
    if (bytesWritten === 0) throw diskFull('a write took no bytes');
    done += bytesWritten;
    if (done < bytes) rest = skip(rest, bytesWritten);
  }
}

/** `buffers` without their first `n` bytes. */
function skip(buffers: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (n >= buffers[i]!.length) n -= buffers[i++]!.length;
  return [buffers[i]!.subarray(n), ...buffers.slice(i + 1)];
}

function diskFull(why: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`no space left on device (${why})`), { code: 'ENOSPC' });
}

/**
 * Writes `data` to `tmp` and renames it to `path`, so a crash never leaves a half-written file;
 * on any failure `tmp` is removed. (fs.writeFile already continues after short writes.)
 */
export async function replaceFile(tmp: string, path: string, data: string | Buffer): Promise<void> {
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * mkdir -p that names the real cause. Node's recursive mkdir reports ENOENT when a level cannot be
 * made on a read-only or full filesystem; then the first missing level is made alone, which fails
 * with EROFS or ENOSPC (that is what diskError turns into a 503).
 */
export async function makeDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    let missing = dir;
    while (dirname(missing) !== missing && !(await exists(dirname(missing)))) missing = dirname(missing);
    // throws the cause; made meanwhile (EEXIST) or made now, the rest follows
    await mkdir(missing).catch((m: NodeJS.ErrnoException) => {
      if (m.code !== 'EEXIST') throw m;
    });
    await mkdir(dir, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

const DISK_FAILURES = new Map([
  ['ENOSPC', 'the cache disk is full'],
  ['EDQUOT', 'the cache disk quota is used up'],
  ['EROFS', 'the cache filesystem is read-only'],
]);

/** A full or read-only cache disk: 503, naming the cause (never a path). Undefined for other errors. */
export function diskError(err: unknown): RegistryError | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  const message = typeof code === 'string' ? DISK_FAILURES.get(code) : undefined;
  return message ? new RegistryError('UNAVAILABLE', { message, detail: { reason: code }, cause: err }) : undefined;
}
