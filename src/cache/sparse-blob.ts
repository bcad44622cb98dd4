// A partly cached blob: verified byte ranges written at their offsets into a sparse file, with the
// list of ranges held beside it (<dir>/<alg>/<hex>.data and .ranges). Used for eStargz layers that
// clients read lazily, so no byte is fetched from the upstream twice and no whole-layer fill starts.
import { open, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import { makeDir, replaceFile, writeAll } from './disk-writes.js';
import { isNotFound } from './fs-store.js';

const READ_CHUNK = 1 << 20;

/** Sorted, non-overlapping, non-adjacent ranges. */
export class SpanSet {
  private spans: ByteRange[] = [];

  constructor(initial: readonly ByteRange[] = []) {
    for (const s of initial) this.add(s);
  }

  get list(): readonly ByteRange[] {
    return this.spans;
  }

  get bytes(): number {
    return this.spans.reduce((n, s) => n + s.end - s.start, 0);
  }

  add(span: ByteRange): void {
    if (span.end <= span.start) return;
    const out: ByteRange[] = [];
    let merged = { ...span };
    for (const s of this.spans) {
      if (s.end < merged.start || s.start > merged.end) out.push(s);
      else merged = { start: Math.min(s.start, merged.start), end: Math.max(s.end, merged.end) };
    }
    out.push(merged);
    out.sort((a, b) => a.start - b.start);
    this.spans = out;
  }

  /** The parts of [start, end) not in the set. */
  missing(start: number, end: number): ByteRange[] {
    const gaps: ByteRange[] = [];
    let pos = start;
    for (const s of this.spans) {
      if (s.end <= pos) continue;
      if (s.start >= end) break;
      if (s.start > pos) gaps.push({ start: pos, end: s.start });
      pos = Math.max(pos, s.end);
      if (pos >= end) break;
    }
    if (pos < end) gaps.push({ start: pos, end });
    return gaps;
  }

  covers(start: number, end: number): boolean {
    return this.missing(start, end).length === 0;
  }
}

export class SparseBlob {
  private constructor(
    readonly digest: Digest,
    readonly size: number,
    private dataPath: string,
    private rangesPath: string,
    private readonly handle: FileHandle,
    private readonly present: SpanSet,
  ) {}

  /** Opens (or creates) the sparse copy of a blob under `dir`. */
  static async open(dir: string, digest: Digest, size: number): Promise<SparseBlob> {
    const base = join(dir, digest.algorithm);
    await makeDir(base);
    const dataPath = join(base, `${digest.hex}.data`);
    const rangesPath = join(base, `${digest.hex}.ranges`);
    const spans = (await readSpans(rangesPath)).filter((s) => s.end <= size);
    // not 'a+': O_APPEND would turn positional writes into appends
    const handle = await open(dataPath, 'r+').catch((e: unknown) => {
      if (isNotFound(e)) return open(dataPath, 'w+');
      throw e;
    });
    return new SparseBlob(digest, size, dataPath, rangesPath, handle, new SpanSet(spans));
  }

  get cachedBytes(): number {
    return this.present.bytes;
  }

  missing(start: number, end: number): ByteRange[] {
    return this.present.missing(start, end);
  }

  covers(start: number, end: number): boolean {
    return this.present.covers(start, end);
  }

  /** Writes verified bytes at `start`; they count as present once the range list is saved. */
  async write(start: number, bytes: Buffer): Promise<void> {
    await writeAll(this.handle, [bytes], bytes.length, start); // a short write would leave a hole that reads as zeros
    this.present.add({ start, end: start + bytes.length });
    await replaceFile(`${this.rangesPath}.${randomUUID()}.tmp`, this.rangesPath, JSON.stringify(this.present.list));
  }

  async read(start: number, end: number): Promise<Buffer> {
    const buf = Buffer.alloc(end - start);
    const { bytesRead } = await this.handle.read(buf, 0, buf.length, start);
    if (bytesRead !== buf.length) throw new Error(`sparse copy of ${this.digest.value} is shorter than its range list`);
    return buf;
  }

  /** Streams [start, end) (half-open), which must be present. */
  stream(start: number, end: number): Readable {
    const self = this;
    return Readable.from(
      (async function* () {
        for (let pos = start; pos < end; pos += READ_CHUNK) yield await self.read(pos, Math.min(end, pos + READ_CHUNK));
      })(),
      { objectMode: false },
    );
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }

  /**
   * Moves the copy's files aside under a unique name and keeps using them there, so that a new
   * copy of the same blob can be opened at the usual paths while this one is still being read;
   * remove() then deletes only the moved files.
   */
  async moveAside(): Promise<void> {
    const suffix = `.retired-${randomUUID()}`;
    for (const key of ['dataPath', 'rangesPath'] as const) {
      await rename(this[key], `${this[key]}${suffix}`).catch((e: unknown) => {
        if (!isNotFound(e)) throw e;
      });
      this[key] = `${this[key]}${suffix}`;
    }
  }

  async remove(): Promise<void> {
    await this.close();
    await rm(this.dataPath, { force: true });
    await rm(this.rangesPath, { force: true });
  }
}

/** The bytes present in the sparse copy of `digest` under `dir` (0 when there is none). */
export async function sparseBytes(dir: string, digest: Digest): Promise<number> {
  return new SpanSet(await readSpans(join(dir, digest.algorithm, `${digest.hex}.ranges`))).bytes;
}

/** Deletes the sparse copy of `digest` under `dir`; only for a copy no SparseBlob has open. */
export async function removeSparse(dir: string, digest: Digest): Promise<void> {
  const base = join(dir, digest.algorithm, digest.hex);
  await rm(`${base}.data`, { force: true });
  await rm(`${base}.ranges`, { force: true });
}

async function readSpans(rangesPath: string): Promise<ByteRange[]> {
  try {
    const parsed: unknown = JSON.parse(await readFile(rangesPath, 'utf8'));
    return Array.isArray(parsed) ? parsed.filter(isSpan) : [];
  } catch (e) {
    if (isNotFound(e) || e instanceof SyntaxError) return [];
    throw e;
  }
}

function isSpan(v: unknown): v is ByteRange {
  if (typeof v !== 'object' || v === null) return false;
  const s = v as Record<string, unknown>;
  return Number.isSafeInteger(s.start) && Number.isSafeInteger(s.end) && (s.start as number) >= 0 && (s.end as number) > (s.start as number);
}
