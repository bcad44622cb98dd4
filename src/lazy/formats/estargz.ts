// eStargz, legacy stargz and zstd:chunked as a LazyFormat (see ../format.ts), over the pure
// format package src/estargz. Its units are the package's segments: the prologue (tar headers no
// digest covers: not verifiable), one unit per gzip member / zstd frame (its pieces' chunk
// digests), the TOC (the TOC digest) and the footer (re-parsed). Opening reads the footer and
// the TOC from the end of the blob, so the index lies in [dataEnd, blobSize).
import {
  alignRange,
  checkPieces,
  EstargzError,
  fileChunks,
  mergeChunkRanges,
  openEstargz,
  prefetchRange,
  segmentsFor,
  TOC_DIGEST_ANNOTATION,
  verifyRange,
  type EstargzIndex,
  type Segment,
} from '../../estargz/index.js';
import { tryParseDigest } from '../../oci/digest.js';
import { FormatRefusal, type FileIndex, type IndexedFile, type LazyFormat, type LazyIndex, type Unit } from '../format.js';

export const ESTARGZ = 'estargz';

export const estargzFormat: LazyFormat = {
  name: ESTARGZ,

  claim(layer) {
    const toc = layer.annotations?.[TOC_DIGEST_ANNOTATION];
    return typeof toc === 'string' && tryParseDigest(toc) ? { format: ESTARGZ, index: toc, size: layer.size } : undefined;
  },

  async open(source, opts) {
    const index = await refused(() => openEstargz(source, { expectedTocDigest: opts.claim?.index, maxTocBytes: opts.maxIndexBytes, signal: opts.signal }));
    // served lazily, a piece is kept only once verified: legacy pieces without a digest cannot be
    // (a blob cached whole is verified by its digest: its pieces are refused one file at a time)
    if (opts.claim && index.chunks.some((c) => c.digest === undefined)) throw new FormatRefusal(ESTARGZ, 'the TOC has pieces without a chunk digest: nothing to verify them against');
    return lazyIndex(index);
  },
};

function lazyIndex(index: EstargzIndex): LazyIndex {
  return {
    blobSize: index.blobSize,
    indexBytes: index.tocJson.length,
    document: index.tocJson,
    indexSpan: { start: index.dataEnd, end: index.blobSize },
    align: (span) => alignRange(index, span.start, span.end),
    units: (span) => segmentsFor(index, span.start, span.end).map(unitOf),
    // throws on any chunk, TOC or footer mismatch, with what the client is told
    verify: async (start, bytes) => (await refused(() => verifyRange(index, start, bytes), 'upstream sent eStargz content that does not match its TOC')).verified,
    prefetch: () => prefetchRange(index),
    files: filesOf(index),
  };
}

function unitOf(seg: Segment): Unit {
  return { start: seg.start, end: seg.end, verifiable: seg.kind !== 'prologue' && seg.chunks.every((c) => c.digest !== undefined) };
}

function filesOf(index: EstargzIndex): FileIndex {
  return {
    paths: () => index.entries.map((e) => e.path),
    has: (path) => index.lookup(path) !== undefined,
    file(path): IndexedFile | undefined {
      const entry = index.resolve(path);
      if (!entry || entry.type !== 'reg') return undefined;
      refusedNow(() => checkPieces(index, entry.chunks));
      return {
        size: entry.size,
        mode: entry.mode,
        digest: entry.digest,
        spans: mergeChunkRanges(entry.chunks).map((g) => ({ start: g.start, end: g.end })),
        async *read(source) {
          // streamed: each slice is inflated when the reader wants it; a piece's end only once it is verified
          try {
            for await (const { data } of fileChunks(index, source, entry.path)) yield data;
          } catch (e) {
            throw refusal(e);
          }
        },
      };
    },
  };
}

/** The package's own errors as FormatRefusal (their detail kept, the error itself the cause); others pass through. */
function refusal(e: unknown, message?: string): unknown {
  return e instanceof EstargzError ? new FormatRefusal(ESTARGZ, message ?? e.message, e.detail, e) : e;
}

async function refused<T>(run: () => Promise<T>, message?: string): Promise<T> {
  try {
    return await run();
  } catch (e) {
    throw refusal(e, message);
  }
}

function refusedNow<T>(run: () => T): T {
  try {
    return run();
  } catch (e) {
    throw refusal(e);
  }
}
