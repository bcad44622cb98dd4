// Sends a byte range of an open file to a writable (a client's response) through two reused
// buffers: one is read into while the other is being written, and a buffer is refilled only
// after the sink reported its write done. No per-chunk allocation, so serving many clients at
// once costs neither garbage collection nor more than two buffers of memory each.
import type { FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';

const PUMP_BUFFER = 512 << 10;

/**
 * Writes [start, end) (half-open) of `file` to `sink`; rejects if the sink closes first. For a
 * file still being written, `available(pos, want)` resolves to how far it may be read once that
 * is beyond `pos`, preferably by `want` bytes (a buffer's worth), and rejects if it never will be.
 */
export async function pumpFile(
  file: FileHandle,
  start: number,
  end: number,
  sink: Writable,
  available?: (pos: number, want: number) => Promise<number>,
): Promise<void> {
  const size = Math.max(1, Math.min(PUMP_BUFFER, end - start));
  const buffers = [Buffer.allocUnsafeSlow(size), Buffer.allocUnsafeSlow(size)] as const;
  const writes: [Promise<void> | undefined, Promise<void> | undefined] = [undefined, undefined];
  // A write in flight when the sink closes rejects; the waits below need nothing else to stop.
  // (Racing every wait against one long-lived "closed" promise would pile up a reaction per
  // chunk on it until the response ends: megabytes per client on a big blob.)
  const inFlight = new Set<(e: Error) => void>();
  let closed = false;
  const onClose = (): void => {
    closed = true;
    for (const fail of inFlight) fail(new Error('the client went away'));
    inFlight.clear();
  };
  sink.once('close', onClose);
  const write = (chunk: Buffer): Promise<void> =>
    new Promise<void>((resolve, reject) => {
      if (closed) return reject(new Error('the client went away'));
      inFlight.add(reject);
      sink.write(chunk, (err) => {
        inFlight.delete(reject);
        if (err) reject(err);
        else resolve();
      });
    });
  try {
    let pos = start;
    for (let i = 0; pos < end; i ^= 1) {
      if (writes[i]) await writes[i];
      if (closed) throw new Error('the client went away');
      const buf = buffers[i]!;
      let limit = end;
      if (available) {
        try {
          limit = Math.min(end, await available(pos, Math.min(size, end - pos)));
        } catch (e) {
          // let the bytes already written reach the client before the caller aborts the response
          await Promise.allSettled(writes);
          throw e;
        }
      }
      const { bytesRead } = await file.read(buf, 0, Math.min(size, limit - pos), pos);
      if (bytesRead === 0) throw new Error('the cached file is shorter than expected');
      writes[i] = write(buf.subarray(0, bytesRead));
      writes[i]!.catch(() => undefined);
      pos += bytesRead;
    }
    await Promise.all(writes);
  } finally {
    sink.off('close', onClose);
  }
}
