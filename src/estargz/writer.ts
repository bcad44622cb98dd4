// convertToEstargz(): plain tar or tar+gzip in, eStargz out (ESTARGZ.md §1, §4.1, §6).
//
// Layout produced: the landmark first (`.no.prefetch.landmark`), or the prioritized files, then
// `.prefetch.landmark`, then the rest; every non-empty regular-file piece starts a new gzip member
// (pieces of at most `chunkSize` bytes); tar headers and padding go into whatever member is open;
// then the TOC member (`stargz.index.json` + end-of-archive) and the 51-byte footer.
// Input tar headers (PAX and GNU extension blocks included) are copied byte for byte, so
// `gunzip | tar -x` of the output gives back the input's files plus the landmark and the TOC file.
//
// Memory stays bounded: input is streamed entry by entry, payload pieces are ≤ chunkSize, and a
// member holding only headers is closed once it reaches chunkSize. Prioritized files need the
// input twice (pass 1 emits them, pass 2 the rest), so `input` must then be a factory.
import { createHash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { constants } from 'node:zlib';
import { EstargzError, fromTarError } from './errors.js';
import { estargzFooter } from './footer.js';
import { MemberStream, SinkWriter } from './members.js';
import { BLOCK, ByteReader, maybeGunzip, padTo512, tarEntries, ustarHeader, type RawTarEntry } from '../tar/index.js';
import { cleanPath } from './toc.js';
import { OwnerNames, draftFromHeader, serializeToc, type DraftEntry } from './toc-writer.js';
import {
  DEFAULT_CHUNK_SIZE,
  LANDMARK_CONTENT,
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  TOC_DIGEST_ANNOTATION,
  TOC_TAR_NAME,
  UNCOMPRESSED_SIZE_ANNOTATION,
} from './types.js';

/** Tar or tar+gzip bytes; a factory when the input must be read twice (prioritizedFiles). */
export type TarInput = AsyncIterable<Uint8Array> | (() => AsyncIterable<Uint8Array>);

export interface ConvertOptions {
  /** Largest piece of a regular file per gzip member (default 4 MiB, like the reference). */
  readonly chunkSize?: number;
  /** gzip level 0-9 (default 9, like the reference). */
  readonly compressionLevel?: number;
  /**
   * Paths to put first, before `.prefetch.landmark`, in input order; their parent directories come
   * along; a hardlink among them is moved only if its target is too.
   */
  readonly prioritizedFiles?: readonly string[];
  readonly signal?: AbortSignal;
}

export interface ConvertResult {
  /** `sha256:` of the blob written to the sink (the layer digest). */
  readonly digest: string;
  readonly size: number;
  /** `sha256:` of the TOC JSON: the value for the toc.digest annotation. */
  readonly tocDigest: string;
  /** `sha256:` of the whole uncompressed tar stream: the image config's rootfs.diff_ids entry. */
  readonly diffId: string;
  readonly uncompressedSize: number;
  readonly tocOffset: number;
  /** The layer descriptor annotations the reference converter sets. */
  readonly annotations: Readonly<Record<string, string>>;
}

const sha256hex = (): ReturnType<typeof createHash> => createHash('sha256');
const EMPTY_DIGEST = `sha256:${sha256hex().digest('hex')}`;
const SKIPPED = new Set([PREFETCH_LANDMARK, NO_PREFETCH_LANDMARK, TOC_TAR_NAME]);

class Converter {
  readonly drafts: DraftEntry[] = [];
  private readonly owners = new OwnerNames();

  constructor(
    readonly out: MemberStream,
    private readonly chunkSize: number,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Headers and padding go into the open member; an over-full header-only member is closed. */
  private async appendMeta(b: Buffer): Promise<void> {
    this.out.append(b);
    if (this.out.openLength >= this.chunkSize) await this.out.close();
  }

  async landmark(name: string): Promise<void> {
    await this.appendMeta(ustarHeader({ name, size: 1 }));
    await this.out.close();
    const digest = `sha256:${sha256hex().update(Buffer.of(LANDMARK_CONTENT)).digest('hex')}`;
    this.drafts.push({ name, type: 'reg', size: 1, member: this.out.openMember, digest, chunkDigest: digest });
    this.out.append(Buffer.of(LANDMARK_CONTENT));
    await this.appendMeta(Buffer.alloc(BLOCK - 1));
  }

  async entry(e: RawTarEntry): Promise<void> {
    this.signal?.throwIfAborted();
    const h = e.header;
    cleanPath(h.name);
    if (h.typeflag === '1') cleanPath(h.linkName, 'hardlink target');
    const draft = draftFromHeader(h, this.owners);
    this.drafts.push(draft);
    await this.appendMeta(e.raw);
    if (draft.type !== 'reg') return;
    if (e.bodySize === 0) {
      draft.digest = EMPTY_DIGEST;
      return;
    }
    const file = sha256hex();
    for (let chunkOffset = 0; chunkOffset < e.bodySize; ) {
      this.signal?.throwIfAborted();
      const n = Math.min(this.chunkSize, e.bodySize - chunkOffset);
      await this.out.close(); // every payload piece starts a member of its own
      const piece: DraftEntry = chunkOffset === 0 ? draft : { name: h.name, type: 'chunk', chunkOffset };
      if (piece !== draft) this.drafts.push(piece);
      piece.member = this.out.openMember;
      if (n === this.chunkSize) piece.chunkSize = n;
      const hash = sha256hex();
      for (let left = n; left > 0; ) {
        const b = await e.readBody(Math.min(left, 1024 * 1024));
        if (!b) throw new EstargzError('corrupt', 'tar input truncated', { name: h.name.slice(0, 500) });
        hash.update(b);
        file.update(b);
        this.out.append(b);
        left -= b.length;
      }
      piece.chunkDigest = `sha256:${hash.digest('hex')}`;
      chunkOffset += n;
    }
    draft.digest = `sha256:${file.digest('hex')}`;
    await this.appendMeta(Buffer.alloc(padTo512(e.bodySize)));
  }

  /** Feeds one pass over the input; `take` decides which entries this pass emits. */
  async pass(input: AsyncIterable<Uint8Array>, take: (e: RawTarEntry, path: string) => boolean): Promise<void> {
    const reader = new ByteReader(maybeGunzip(input));
    try {
      for await (const e of tarEntries(reader)) {
        const path = cleanPath(e.header.name);
        if (!SKIPPED.has(path) && take(e, path)) await this.entry(e);
      }
    } catch (e) {
      throw fromTarError(e); // the input's tar problems (a read of an entry's body included) are the converter's
    } finally {
      await reader.close();
    }
  }
}

function ancestorsOf(paths: readonly string[]): Set<string> {
  const out = new Set<string>();
  for (const p of paths) {
    const parts = p.split('/');
    for (let i = 0; i <= parts.length - 1; i++) out.add(parts.slice(0, i).join('/'));
  }
  return out;
}

async function convert(input: TarInput, out: MemberStream, opts: ConvertOptions): Promise<ConvertResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const c = new Converter(out, chunkSize, opts.signal);
  const open = (): AsyncIterable<Uint8Array> => (typeof input === 'function' ? input() : input);
  const wanted = (opts.prioritizedFiles ?? []).map((p) => cleanPath(p.replace(/^\/+/, ''), 'prioritized path'));
  if (wanted.length === 0) {
    await c.landmark(NO_PREFETCH_LANDMARK);
    await c.pass(open(), () => true);
  } else {
    if (typeof input !== 'function') throw new TypeError('prioritizedFiles needs the input as a factory (it is read twice)');
    const files = new Set(wanted);
    const parents = ancestorsOf(wanted);
    const first = new Map<number, string>();
    const taken = new Set<string>();
    await c.pass(open(), (e, path) => {
      let take = files.has(path) || (e.header.typeflag === '5' && parents.has(path));
      // A hardlink must follow its target; one whose target stays behind waits for pass 2.
      if (take && e.header.typeflag === '1') take = taken.has(cleanPath(e.header.linkName, 'hardlink target'));
      if (take) {
        first.set(e.ordinal, path);
        taken.add(path);
      }
      return take;
    });
    await c.landmark(first.size > 0 ? PREFETCH_LANDMARK : NO_PREFETCH_LANDMARK);
    await c.pass(open(), (e, path) => {
      const seen = first.get(e.ordinal);
      if (seen !== undefined && seen !== path) throw new EstargzError('corrupt', 'input changed between the two passes', { ordinal: e.ordinal });
      return seen === undefined;
    });
  }
  await out.close();
  const tocMember = out.openMember;
  const pending = c.drafts;
  // The TOC needs every member offset, so compress everything before serializing it.
  await out.flush();
  const toc = serializeToc(pending, out.offsets());
  out.append(Buffer.concat([ustarHeader({ name: TOC_TAR_NAME, size: toc.length }), toc, Buffer.alloc(padTo512(toc.length) + 2 * BLOCK)]));
  await out.flush();
  const tocOffset = out.offsets()[tocMember] ?? 0;
  await out.raw(estargzFooter(tocOffset));
  const { digest, diffId } = out.digests();
  const tocDigest = `sha256:${createHash('sha256').update(toc).digest('hex')}`;
  return {
    digest,
    size: out.compressedSize,
    tocDigest,
    diffId,
    uncompressedSize: out.uncompressedSize,
    tocOffset,
    annotations: { [TOC_DIGEST_ANNOTATION]: tocDigest, [UNCOMPRESSED_SIZE_ANNOTATION]: String(out.uncompressedSize) },
  };
}

/**
 * Converts a tar or tar+gzip layer to eStargz, writing the blob to `sink` (which is ended on
 * success and destroyed on failure). Resolves to the digests the manifest and config need.
 */
export async function convertToEstargz(input: TarInput, sink: Writable, opts: ConvertOptions = {}): Promise<ConvertResult> {
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const level = opts.compressionLevel ?? constants.Z_BEST_COMPRESSION;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) throw new RangeError(`invalid chunkSize ${chunkSize}`);
  if (!Number.isInteger(level) || level < 0 || level > 9) throw new RangeError(`invalid compressionLevel ${level}`);
  const w = new SinkWriter(sink);
  try {
    const result = await convert(input, new MemberStream(w, level), opts);
    await w.end();
    return result;
  } catch (e) {
    w.fail(e instanceof Error ? e : new Error(String(e)));
    throw e;
  }
}
