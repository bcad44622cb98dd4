// estargz: the eStargz / legacy stargz / zstd:chunked layer formats, read and written.
// A pure format package: no HTTP, no cache, no logging. It reads through a RangeSource (cached
// blob, partly cached blob or ranged upstream GETs all look the same) and writes to a Writable.
//
// Reading (what the serving layer does):
//
//   const index = await openEstargz(src, { expectedTocDigest: desc.annotations[TOC_DIGEST_ANNOTATION],
//                                          tocOffsetHint, maxTocBytes });
//     // 1 tail read (51 bytes, or [hint, size)) + at most 1 TOC read; TOC digest checked first.
//     // index.entries / index.lookup(path) / index.resolve(path) (follows hardlinks)
//     // entry.chunks[i] = { chunkOffset, size, offset, innerOffset, end, digest }
//     //   fetch [offset, end) compressed, then decodeChunk() → verified bytes
//   const bytes = await readFile(index, src, 'etc/hello.txt');   // whole file in memory, verified
//   for await (const { chunk, data, last } of fileChunks(index, src, path)) …   // streamed in ≤ 64 KiB
//     // slices; a piece's last slice only after its digest matched (memory: a few slices)
//   chunksForFileRange(entry, from, to)                          // file bytes → pieces
//   prefetchRange(index)                                         // [0, .prefetch.landmark offset) or undefined
//
// Lazy serving of compressed byte ranges: the blob is tiled by segments (prologue, one data
// segment per gzip member / zstd frame, toc, footer). alignRange(index, a, b) widens a request
// to whole segments; after fetching those bytes, verifyRange(index, start, bytes) checks every
// piece's chunkDigest (and the TOC and footer) before anything is cached, and lists the spans it
// could not check (the prologue's tar headers; pieces without digests in legacy stargz). Note
// that a chunkDigest covers a piece's payload, not the tar headers that share its member: only the
// layer digest, once the whole blob is present, covers every byte.
//
// Whiteouts are not applied here (that is a cross-layer job), but every entry carries
// `whiteout`: { kind: 'file', target } for `.wh.<name>`, { kind: 'opaque', dir } for
// `.wh..wh..opq`.
//
// Writing: convertToEstargz(tarOrTarGz, sink, { chunkSize, prioritizedFiles, compressionLevel })
// → { digest, size, tocDigest, diffId, uncompressedSize, tocOffset, annotations }.
//
// Errors: EstargzError with `kind` (see errors.ts). Source and sink errors pass through.

export { EstargzError, isEstargzError, type EstargzErrorKind } from './errors.js';
export * from './types.js';
export { parseFooter, estargzFooter, legacyStargzFooter, externalTocFooter } from './footer.js';
export { parseTocJson, cleanPath } from './toc.js';
export { whiteoutOf } from './entries.js';
export { openEstargz, type OpenOptions } from './reader.js';
export { checkPieces, decodeChunk, readFile, fileChunks, streamPieces, chunksForFileRange, mergeChunkRanges, type PieceSlice, type ReadOptions } from './chunks.js';
export {
  segments,
  segmentsFor,
  alignRange,
  chunksInRange,
  prefetchRange,
  verifyRange,
  type Segment,
  type SegmentKind,
  type VerifyReport,
} from './segments.js';
export { convertToEstargz, type ConvertOptions, type ConvertResult, type TarInput } from './writer.js';
