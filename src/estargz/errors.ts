// The one error class of the estargz package. Every failure that comes from the bytes of a layer
// (rather than from the RangeSource, whose own errors pass through untouched) is an EstargzError
// with a kind the caller can switch on:
//
//   not-estargz      no known footer at the end of the blob: a plain layer, serve it whole
//   external-toc     eStargz whose TOC lives in a separate "-esgztoc" image; pass it as externalToc
//   corrupt          structurally invalid: bad footer fields, TOC offset beyond the blob, bad gzip or
//                    zstd data, bad tar header, TOC that is not valid JSON or breaks the schema
//   digest-mismatch  TOC digest differs from the expected one, or a chunk/file from its TOC digest
//   too-large        a size limit (maxTocBytes, maxChunkBytes, …) would be exceeded
//   unsafe-path      an entry name (or hardlink target) contains a `..` segment or a NUL byte
//   unverifiable     content has no digest to check against (legacy stargz), and the caller did not
//                    allow unverified reads
//   not-found        readFile on a path that is not in the TOC, or not a regular file
//   unsupported      input the converter cannot represent (e.g. a sparse file, a tar volume header)
//
// A TarError from the tar reader (the TOC's tar entry, the converter's input) becomes the
// EstargzError of the same kind, message and detail at this package's boundary (fromTarError), so
// callers see one error class. The HTTP edge maps these to registry errors; this package never
// imports that table.
import { TarError } from '../tar/index.js';

export type EstargzErrorKind =
  | 'not-estargz'
  | 'external-toc'
  | 'corrupt'
  | 'digest-mismatch'
  | 'too-large'
  | 'unsafe-path'
  | 'unverifiable'
  | 'not-found'
  | 'unsupported';

export class EstargzError extends Error {
  readonly kind: EstargzErrorKind;
  /** Machine-readable facts (offsets, expected/got digests, entry names); always JSON-safe. */
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(kind: EstargzErrorKind, message: string, detail: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'EstargzError';
    this.kind = kind;
    this.detail = detail;
  }
}

export function isEstargzError(e: unknown, kind?: EstargzErrorKind): e is EstargzError {
  return e instanceof EstargzError && (kind === undefined || e.kind === kind);
}

export function corrupt(message: string, detail?: Record<string, unknown>, cause?: unknown): EstargzError {
  return new EstargzError('corrupt', message, detail, cause);
}

/** A tar problem inside a layer is a problem of the layer: a TarError becomes the EstargzError of the same kind; anything else passes through. */
export function fromTarError(e: unknown): unknown {
  return e instanceof TarError ? new EstargzError(e.kind, e.message, { ...e.detail }, e) : e;
}
