// tar: the tar reader, a leaf (it imports nothing of the project). Plain tar or tar+gzip, read with
// bounded memory; ustar, GNU (long names, base-256 numbers) and PAX (local and global) headers.
//
//   const reader = new ByteReader(maybeGunzip(chunks));      // chunks: AsyncIterable<Uint8Array>
//   try {
//     for await (const e of tarEntries(reader)) {            // stops at the end-of-archive marker
//       e.header.name, e.header.typeflag, e.header.mode, …   // PAX and GNU long names applied
//       e.raw                                                // the header blocks exactly as read
//       for (let b = await e.readBody(n); b; b = await e.readBody(n)) …   // unread content is skipped
//     }
//   } finally {
//     await reader.close();
//   }
//
// Single header blocks: parseHeaderBlock, parsePax, applyPax; ustarHeader encodes a short one.
// TarPathsBuilder / TarPaths hold the paths of an archive compactly, for lookups.
//
// Errors: TarError with `kind` 'corrupt' | 'too-large' | 'unsupported' (see errors.ts). Errors of
// the input stream pass through.

export { TarError, isTarError, type TarErrorKind } from './errors.js';
export { BLOCK, padTo512, isZeroBlock, parseHeaderBlock, parsePax, applyPax, ustarHeader, type TarHeader } from './header.js';
export { ByteReader, maybeGunzip, tarEntries, type RawTarEntry } from './stream.js';
export { PATH_BYTES, TarPathsBuilder, TarPaths, type TarPathInfo } from './paths.js';
