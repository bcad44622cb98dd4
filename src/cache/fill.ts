// One upstream download of a blob into the cache, readable by any number of clients while it
// runs. Bytes go through a verifier into a spool file; readers tail that file, so a late joiner
// gets what is already there and then the live tail, and a slow or departed reader never holds
// up the download. The last byte is released to readers only after the whole blob verified, so
// wrong content can never look complete to a client: a failed fill aborts its readers instead.
// A reader of a range holds back the range's own last byte the same way, unless it asked for
// unverified bytes (cache.unverifiedRanges).
// A store with a streaming writer (S3) gets the bytes the same way, from one more reader of the
// spool file that ends only once the blob verified; its upload then runs at its own pace.
import { EventEmitter } from 'node:events';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash, randomUUID } from 'node:crypto';
import { PassThrough, Readable, type Writable } from 'node:stream';
import { pumpFile } from './file-pump.js';
import { writeAll } from './disk-writes.js';
import { pipeline } from 'node:stream/promises';
import { VerificationError, type Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import type { BlobStore, BlobWriter } from './blob-store.js';

const CHUNK = 1 << 20;
const DEFAULT_RESUMES = 3;
/** Bytes received but not yet written to the spool before the download waits for the disk. */
const MAX_QUEUED_BYTES = 8 << 20;
/** How long a reader at the live tail lets bytes accumulate before it takes what is there. */
const TAIL_WAIT_MS = 20;

/** Where a fill's bytes come from. */
export interface FillSource {
  /** total size, when the upstream announced it */
  size: number | undefined;
  body: Readable;
  /** reopens the download at `offset` (a ranged request), for resuming after a broken stream */
  resume?: (offset: number) => Promise<Readable>;
}

function discardBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

type State = 'running' | 'done' | 'failed';

export class Fill {
  private readonly events = new EventEmitter();
  private state: State = 'running';
  private failure: Error | undefined;
  private written = 0;
  private readers = 0;
  private fileClosed = false;
  private resumed = 0;
  /** the content hashed to the digest: readers may have every byte */
  private isVerified = false;
  private writer: BlobWriter | undefined;
  readonly done: Promise<void>;

  private constructor(
    readonly digest: Digest,
    /** total size when the upstream announced it */
    readonly size: number | undefined,
    private readonly spoolPath: string,
    private readonly file: FileHandle,
    private readonly store: BlobStore,
    private readonly maxResumes: number,
  ) {
    this.events.setMaxListeners(0);
    this.done = new Promise((resolve, reject) => {
      this.events.once('settled', () => (this.state === 'done' ? resolve() : reject(this.failure)));
    });
    this.done.catch(() => undefined); // observed through readers and callers; never unhandled
  }

  /** Starts writing `source` into the store; resolves once the spool file exists. */
  static async start(store: BlobStore, digest: Digest, source: FillSource, maxResumes = DEFAULT_RESUMES): Promise<Fill> {
    const spoolPath = join(store.spoolDir, `${digest.hex.slice(0, 16)}-${randomUUID()}`);
    let file: FileHandle;
    try {
      file = await open(spoolPath, 'wx+');
    } catch (e) {
      discardBody(source.body); // a full or read-only disk: the download must not linger unread
      throw e;
    }
    const fill = new Fill(digest, source.size, spoolPath, file, store, maxResumes);
    fill.startWriter();
    void fill.run(source);
    return fill;
  }

  /** Feeds the store's streaming writer, when it has one, from the spool file as bytes arrive. */
  private startWriter(): void {
    let writer: BlobWriter | undefined;
    try {
      writer = this.store.create?.(this.digest, this.size);
    } catch {
      writer = undefined; // the store cannot stream this one: the spool file is ingested instead
    }
    if (!writer) return;
    this.writer = writer;
    if (!writer.sink) return;
    const feed = this.reader(); // ends only once the blob verified
    // a failing writer destroys its sink, which only ends this feed; the fill and its readers go on
    pipeline(feed, writer.sink).catch(() => undefined);
  }

  /** How many times the download was resumed after a broken upstream stream. */
  get resumes(): number {
    return this.resumed;
  }

  get bytesWritten(): number {
    return this.written;
  }

  get settled(): boolean {
    return this.state !== 'running';
  }

  /** The whole blob is there and hashed to its digest (its publication may still be under way). */
  get verified(): boolean {
    return this.isVerified;
  }

  /**
   * A stream of [start, end) of the blob, following the fill as it progresses. Its last byte comes
   * only once the blob verified, so the stream never ends before that; with `unverified`, a range
   * ends as soon as its bytes are there (only the blob's own last byte waits).
   */
  reader(range?: ByteRange, unverified = false): Readable {
    if (this.fileClosed) return this.settledReader(range);
    this.readers++;
    const r = new FillReader(this, this.file, range?.start ?? 0, range?.end, unverified);
    r.once('close', () => {
      this.readers--;
      this.closeIfIdle();
    });
    return r;
  }

  /**
   * Sends [range] of the blob to `sink` as it arrives, through reused buffers (see pumpFile), its
   * last byte once the blob verified (or with `unverified`, as for readers).
   * Needs the blob's size; the fill's own descriptor serves it, as for readers.
   */
  async pipeTo(range: ByteRange | undefined, sink: Writable, unverified = false): Promise<void> {
    if (this.size === undefined) throw new Error('a fill of unknown size can only be streamed');
    if (this.fileClosed) {
      await pipeline(this.settledReader(range), sink, { end: false });
      return;
    }
    this.readers++;
    const end = range?.end ?? this.size;
    try {
      await pumpFile(this.file, range?.start ?? 0, end, sink, (pos, want) => this.waitReadable(pos, want, unverified ? Infinity : end));
    } finally {
      this.readers--;
      this.closeIfIdle();
    }
  }

  /**
   * Resolves with the readable length once it is beyond `pos`; rejects with the fill's failure.
   * A reader at the live tail waits for `want` bytes, or at most TAIL_WAIT_MS once some are
   * there: woken by every small write, 32 readers would each make a read and a socket write per
   * upstream chunk, several times the system calls of serving the same bytes from the cache.
   */
  private async waitReadable(pos: number, want: number, end: number): Promise<number> {
    const deadline = performance.now() + TAIL_WAIT_MS;
    for (;;) {
      // what was written stays readable (all but the held-back last byte) even after a failure,
      // as for stream readers; the failure surfaces once the reader has caught up
      const available = this.readable(end);
      if (available >= pos + want) return available;
      const some = available > pos;
      if (some && (this.settled || this.isVerified || performance.now() >= deadline)) return available;
      if (!some) {
        const error = this.error;
        if (error) throw error;
        if (this.settled) throw new Error('the blob is shorter than the range asked for');
      }
      await new Promise<void>((resolve) => {
        const timer = some ? setTimeout(wake, Math.max(0, deadline - performance.now())) : undefined;
        const off = this.onProgress(wake);
        function wake(): void {
          off();
          clearTimeout(timer);
          resolve();
        }
      });
    }
  }

  /**
   * Bytes readers may take: all once verified, else all but the last one, and of a range ending
   * at `end`, not its last byte either.
   */
  readable(end = Infinity): number {
    return this.isVerified ? this.written : Math.max(0, Math.min(this.written, end) - 1);
  }

  /**
   * Resolves once the byte at `pos` can be read, or the blob verified (it may end before `pos`);
   * rejects with the fill's failure. For answering with a status only once a first byte is sure.
   */
  async firstByte(pos: number): Promise<void> {
    while (this.readable() <= pos && !this.isVerified) {
      const error = this.error;
      if (error) throw error;
      await new Promise<void>((resolve) => {
        const off = this.onProgress(() => {
          off();
          resolve();
        });
      });
    }
  }

  /** Why the fill failed, for readers; once the bytes verified, a failure to store them is none of theirs. */
  get error(): Error | undefined {
    return this.state === 'failed' && !this.isVerified ? this.failure : undefined;
  }

  onProgress(listener: () => void): () => void {
    this.events.on('progress', listener);
    return () => this.events.off('progress', listener);
  }

  private async run(source: FillSource): Promise<void> {
    const hash = createHash(this.digest.algorithm);
    const spool = new BatchedWrites(this.file, (n) => {
      this.written += n;
      this.events.emit('progress');
    });
    let received = 0;
    let body = source.body;
    try {
      for (;;) {
        try {
          for await (const chunk of body as AsyncIterable<Buffer>) {
            if (this.size !== undefined && received + chunk.length > this.size) {
              throw new VerificationError(`${this.size} bytes`, `more than ${this.size} bytes`);
            }
            hash.update(chunk);
            received += chunk.length;
            await spool.add(chunk);
          }
          if (this.size !== undefined && received < this.size) throw new Error(`upstream stream ended at ${received} of ${this.size} bytes`);
          break;
        } catch (e) {
          discardBody(body);
          if (!this.canResume(e, source)) throw e;
          this.resumed++;
          body = await source.resume!(received);
        }
      }
      await spool.drain();
      const got = `${this.digest.algorithm}:${hash.digest('hex')}`;
      if (got !== this.digest.value) throw new VerificationError(this.digest.value, got);
      await this.publish();
      this.settle('done');
    } catch (e) {
      discardBody(body);
      this.failure = e instanceof Error ? e : new Error(String(e));
      await spool.drain().catch(() => undefined);
      await rm(this.spoolPath, { force: true });
      this.settle('failed');
      // the writer's feed broke off with the failure (or the writer failed): drop what it stored
      if (this.writer) void this.writer.abort(this.failure);
    }
  }

  /**
   * Makes the verified blob the store's. Without a writer, the spool file is ingested before the
   * last byte is released, as ever. With one, readers get the last byte at once (the writer's
   * feed ends with them), and the fill stays running until the writer has stored the blob.
   */
  private async publish(): Promise<void> {
    if (!this.writer) {
      await this.store.ingest(this.digest, this.spoolPath, this.written);
      this.verify();
      return;
    }
    this.verify();
    try {
      await this.writer.commit(this.spoolPath, this.written);
    } finally {
      await rm(this.spoolPath, { force: true });
    }
  }

  private verify(): void {
    this.isVerified = true;
    this.events.emit('progress');
  }

  /** A broken stream of known size resumes from the last written byte, a bounded number of times. */
  private canResume(e: unknown, source: FillSource): boolean {
    return !(e instanceof VerificationError) && source.resume !== undefined && this.size !== undefined && this.resumed < this.maxResumes;
  }

  private settle(state: State): void {
    this.state = state;
    this.events.emit('progress');
    this.events.emit('settled');
    this.closeIfIdle();
  }

  /** The spool descriptor serves every reader; it stays valid after the rename into the store. */
  private closeIfIdle(): void {
    if (this.state !== 'running' && this.readers === 0 && !this.fileClosed) {
      this.fileClosed = true;
      this.file.close().catch(() => undefined);
    }
  }

  /** A reader joining once the spool descriptor is closed: the verified blob from the store, or the failure. */
  private settledReader(range?: ByteRange): Readable {
    const out = new PassThrough({ highWaterMark: CHUNK });
    const failure = this.error;
    if (failure) {
      process.nextTick(() => out.destroy(failure));
      return out;
    }
    this.store.open(this.digest, range).then(
      (r) => {
        if (!r) out.destroy(new Error(`${this.digest.value} was evicted from the cache right after its fill`));
        else pipeline(r.stream, out).catch((e: Error) => out.destroy(e));
      },
      (e: Error) => out.destroy(e),
    );
    return out;
  }
}

/** Reads [start, end) of a fill through its shared spool descriptor with positional reads. */
class FillReader extends Readable {
  private pos: number;
  private reading = false;

  constructor(
    private readonly fill: Fill,
    private readonly handle: FileHandle,
    start: number,
    private readonly end: number | undefined,
    private readonly unverified: boolean,
  ) {
    super({ highWaterMark: CHUNK });
    this.pos = start;
  }

  override _read(): void {
    if (this.reading) return;
    this.reading = true;
    this.pump().then(
      () => (this.reading = false),
      (e: Error) => this.destroy(e),
    );
  }

  private async pump(): Promise<void> {
    const handle = this.handle;
    while (!this.destroyed) {
      const end = this.end ?? this.fill.size ?? Infinity;
      if (this.pos >= end) {
        this.push(null);
        return;
      }
      const available = this.fill.readable(this.unverified ? Infinity : end);
      if (available > this.pos) {
        const length = Math.min(CHUNK, available - this.pos, end - this.pos);
        const buf = Buffer.allocUnsafe(length);
        const { bytesRead } = await handle.read(buf, 0, length, this.pos);
        if (bytesRead === 0) throw new Error('spool file shorter than its recorded progress');
        this.pos += bytesRead;
        if (!this.push(bytesRead === length ? buf : buf.subarray(0, bytesRead))) return;
        continue;
      }
      const error = this.fill.error;
      if (error) throw error;
      if (this.fill.verified) {
        // verified and complete, but shorter than the requested range
        this.push(null);
        return;
      }
      await this.nextProgress();
    }
  }

  private nextProgress(): Promise<void> {
    return new Promise((resolve) => {
      const off = this.fill.onProgress(() => {
        off();
        resolve();
      });
    });
  }
}

/**
 * Appends to the spool file in batches: while one write is on the thread pool, chunks arriving
 * meanwhile queue up and go out together in the next writev. Waits only when too much is queued.
 */
class BatchedWrites {
  private queue: Buffer[] = [];
  private queued = 0;
  private position = 0;
  private flushing: Promise<void> | undefined;
  private failure: unknown;

  constructor(
    private readonly file: FileHandle,
    private readonly onWritten: (bytes: number) => void,
  ) {}

  async add(chunk: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    this.queue.push(chunk);
    this.queued += chunk.length;
    this.flushing ??= this.flush();
    if (this.queued > MAX_QUEUED_BYTES) await this.flushing;
  }

  /** Resolves once everything added is on disk; throws the first write error. */
  async drain(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.failure) throw this.failure;
  }

  private async flush(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue;
        const bytes = this.queued;
        this.queue = [];
        this.queued = 0;
        await writeAll(this.file, batch, bytes, this.position);
        this.position += bytes;
        this.onWritten(bytes);
      }
    } catch (e) {
      this.failure = e;
      this.queue = [];
    } finally {
      this.flushing = undefined;
    }
  }
}
