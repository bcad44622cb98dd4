// The one error class of the tar reader. Every failure that comes from the bytes of the archive
// (rather than from the input stream, whose own errors pass through untouched) is a TarError with
// a kind the caller can switch on:
//
//   corrupt      structurally invalid: bad header checksum or number field, malformed PAX record,
//                input that ends inside an entry, bad gzip data
//   too-large    an extension header (PAX, GNU long name) beyond the reader's limit
//   unsupported  an entry the reader does not represent (a sparse file, a tar volume header, …)
//
// The kinds are named as the eStargz package names the same problems, so a layer format built on
// this reader can pass them on unchanged. This package imports nothing of the project.

export type TarErrorKind = 'corrupt' | 'too-large' | 'unsupported';

export class TarError extends Error {
  readonly kind: TarErrorKind;
  /** Machine-readable facts (offsets, sizes, entry names); always JSON-safe. */
  readonly detail: Readonly<Record<string, unknown>>;

  constructor(kind: TarErrorKind, message: string, detail: Record<string, unknown> = {}, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'TarError';
    this.kind = kind;
    this.detail = detail;
  }
}

export function isTarError(e: unknown, kind?: TarErrorKind): e is TarError {
  return e instanceof TarError && (kind === undefined || e.kind === kind);
}

export function corrupt(message: string, detail?: Record<string, unknown>, cause?: unknown): TarError {
  return new TarError('corrupt', message, detail, cause);
}
