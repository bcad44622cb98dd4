// The writer's output side: a sequence of gzip members written to a Writable with backpressure.
//
// Bytes are appended to the open member; close() compresses it (node:zlib in the libuv thread
// pool, a few members in flight) and emits members strictly in order. Member offsets are only
// known once earlier members are compressed, so callers remember member *indexes* and turn them
// into offsets at the end (offsetOf). Memory: the open member plus `maxInFlight` closed ones.
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { promisify } from 'node:util';
import { gzip, type ZlibOptions } from 'node:zlib';

const gzipAsync = promisify(gzip) as (buf: Buffer, opts: ZlibOptions) => Promise<Buffer>;

/** Writes to a Writable, waiting for 'drain'; rejects once the sink errors or closes early. */
export class SinkWriter {
  private error: Error | undefined;
  private readonly onError = (e: Error): void => {
    this.error ??= e;
  };

  constructor(private readonly sink: Writable) {
    sink.on('error', this.onError);
  }

  async write(b: Buffer): Promise<void> {
    if (this.error) throw this.error;
    if (this.sink.destroyed) throw new Error('output stream was destroyed');
    if (this.sink.write(b)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        this.sink.off('drain', onDrain);
        this.sink.off('close', onClose);
        this.sink.off('error', done);
        if (err) reject(err);
        else resolve();
      };
      const onDrain = (): void => done();
      const onClose = (): void => done(this.error ?? new Error('output stream closed'));
      this.sink.on('drain', onDrain);
      this.sink.on('close', onClose);
      this.sink.on('error', done);
    });
  }

  async end(): Promise<void> {
    if (this.error) throw this.error;
    await new Promise<void>((resolve, reject) => {
      this.sink.once('error', reject);
      this.sink.end(() => {
        this.sink.off('error', reject);
        resolve();
      });
    });
    if (this.error) throw this.error;
  }

  fail(err: Error): void {
    if (!this.sink.destroyed) this.sink.destroy(err);
  }
}

export class MemberStream {
  private parts: Buffer[] = [];
  private length = 0;
  private closed = 0;
  private readonly inflight: Promise<Buffer>[] = [];
  private readonly sizes: number[] = [];
  private readonly diff = createHash('sha256');
  private readonly blob = createHash('sha256');
  uncompressedSize = 0;
  compressedSize = 0;

  constructor(
    private readonly out: SinkWriter,
    private readonly level: number,
    private readonly maxInFlight = 3,
  ) {}

  /** Index the open member will have once closed. */
  get openMember(): number {
    return this.closed;
  }

  get openLength(): number {
    return this.length;
  }

  /** Appends uncompressed bytes to the open member (and to the DiffID). */
  append(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.length += b.length;
    this.uncompressedSize += b.length;
    this.diff.update(b);
  }

  /** Ends the open member (a no-op when it is empty). */
  async close(): Promise<void> {
    if (this.length === 0) return;
    const data = Buffer.concat(this.parts, this.length);
    this.parts = [];
    this.length = 0;
    this.closed++;
    const p = gzipAsync(data, { level: this.level });
    p.catch(() => {}); // observed later, in order; avoid an unhandled rejection meanwhile
    this.inflight.push(p);
    while (this.inflight.length >= this.maxInFlight) await this.emitOne();
  }

  private async emitOne(): Promise<void> {
    const b = await (this.inflight.shift() as Promise<Buffer>);
    this.sizes.push(b.length);
    await this.raw(b);
  }

  /** Closes the open member and waits until every member is written. */
  async flush(): Promise<void> {
    await this.close();
    while (this.inflight.length > 0) await this.emitOne();
  }

  /** Writes bytes that are not part of any member (the footer). Call after flush(). */
  async raw(b: Buffer): Promise<void> {
    this.blob.update(b);
    this.compressedSize += b.length;
    await this.out.write(b);
  }

  /** Blob offset of every emitted member (plus the end of the last); call after flush(). */
  offsets(): number[] {
    const out: number[] = [];
    let off = 0;
    for (const s of this.sizes) {
      out.push(off);
      off += s;
    }
    out.push(off);
    return out;
  }

  digests(): { diffId: string; digest: string } {
    return { diffId: `sha256:${this.diff.digest('hex')}`, digest: `sha256:${this.blob.digest('hex')}` };
  }
}
