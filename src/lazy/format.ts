// A lazy format: what src/lazy needs to know about one layer format to serve its compressed
// bytes by range without having the whole blob. The core (layer.ts, layers.ts) and the file API
// know formats only through this interface; the set of formats is handed in by the composition.
//
//   LazyFormat  claim(descriptor)      what a manifest's layer descriptor says (eStargz: the TOC
//                                      digest annotation and the size), or undefined: not this format
//               open(source, options)  reads the layer's index through a RangeSource and checks it
//                                      against the claim → LazyIndex, or throws FormatRefusal
//   LazyIndex   a lazy index over one layer, cut into units that tile [0, blobSize):
//               align(span)            the span widened to whole units (what to fetch)
//               units(span)            the units overlapping it, each verifiable on its own or not
//               verify(start, bytes)   which of the fetched (aligned) bytes are now verified
//               prefetch()             what to fetch in the background on first touch
//               files                  the files the layer names, read through a RangeSource
//
// A unit is the smallest span the format can check: an eStargz gzip member or zstd frame (its
// pieces' chunk digests), the TOC (its digest), the footer. A unit may not be verifiable on its
// own: the eStargz prologue (tar headers no digest covers), or, in a plain gzip layer indexed by
// decompression checkpoints, every unit (nothing but the layer digest covers any byte). The core
// keeps only verified bytes; unverifiable ones pass through to the client that asked for them,
// and a layer with too many of them is served plainly.
//
// Errors: what a format concludes from a layer's bytes (not this format, corrupt, a digest or a
// limit broken) is a FormatRefusal, the format's own error as its cause; errors of the source
// (network, abort, an upstream status) pass through unchanged. Ranges are half-open ByteRanges
// of the compressed blob.
import type { Descriptor } from '../oci/manifest.js';
import type { ByteRange } from '../oci/range.js';

/** Random access to a blob of known size: ranged upstream GETs, a sparse copy, a cached blob. */
export interface RangeSource {
  readonly size: number;
  /** Exactly `length` bytes from `offset`. */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
}

/**
 * What a manifest claims about a layer for one format. Two claims are the same when all three
 * fields are: a sparse copy is only ever read under the claim its bytes were verified under.
 */
export interface LayerClaim {
  /** LazyFormat.name */
  readonly format: string;
  /** The layer's size as the manifest says it. */
  readonly size: number;
  /** What the layer's index must be, compared verbatim (eStargz: the TOC digest); '' when the manifest names none. */
  readonly index: string;
}

export interface OpenIndexOptions {
  /** Check the index against this claim; without one (a blob cached whole, verified by its digest) only the format is checked. */
  readonly claim?: LayerClaim | undefined;
  /** The largest index to read, in the format's own measure (indexBytes); a larger one is refused. */
  readonly maxIndexBytes?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface LazyFormat {
  /** Names the format in claims and records ('estargz'). */
  readonly name: string;
  /** The claim a manifest's layer descriptor (its size a positive integer) makes for this format. */
  claim(layer: Descriptor): LayerClaim | undefined;
  /**
   * The index of the layer `source` holds. Throws FormatRefusal when the layer is not of this
   * format, contradicts the claim, or has units this format refuses to serve lazily.
   */
  open(source: RangeSource, opts: OpenIndexOptions): Promise<LazyIndex>;
}

export interface Unit extends ByteRange {
  /** Whether the unit's bytes can be checked by themselves (verify() reports them verified). */
  readonly verifiable: boolean;
}

export interface LazyIndex {
  readonly blobSize: number;
  /** The size of the index as the format reads it (eStargz: the TOC JSON); memory estimates scale with it. */
  readonly indexBytes: number;
  /** The index as a document, for the formats that have one to serve (eStargz: the TOC JSON). */
  readonly document: Buffer | undefined;
  /** Where the index itself lies (eStargz: TOC and footer); open() verified it, so what it read there may be kept. */
  readonly indexSpan: ByteRange;
  /** [start, end) widened to whole units. */
  align(span: ByteRange): ByteRange;
  /** The units overlapping [start, end), in order. */
  units(span: ByteRange): Unit[];
  /**
   * Checks `bytes`, the blob from `start` on, which begin and end on unit boundaries; returns the
   * spans now verified (the verifiable units among them). Throws FormatRefusal, whose message is
   * fit for the client, when any unit contradicts the index.
   */
  verify(start: number, bytes: Buffer): Promise<ByteRange[]>;
  /** The span the layer asks to have fetched first (eStargz: before the prefetch landmark), or undefined. */
  prefetch(): ByteRange | undefined;
  /** The files the layer names, for the file API; undefined when the index names none. */
  readonly files: FileIndex | undefined;
}

/** A regular file of a layer, ready to be read. */
export interface IndexedFile {
  readonly size: number;
  readonly mode: number;
  /** The file's content digest when the index names one. */
  readonly digest: string | undefined;
  /** The compressed spans a read of the file touches, in order (to make them present first). */
  readonly spans: readonly ByteRange[];
  /** The file's bytes out of `source`, each verified before it is handed on (FormatRefusal when one is not). */
  read(source: RangeSource): AsyncIterable<Buffer>;
}

export interface FileIndex {
  /** Every path the layer names, whiteout markers included (cleaned: no leading slash, root ''). */
  paths(): Iterable<string>;
  has(path: string): boolean;
  /**
   * The regular file at `path` (a hardlink is followed), or undefined when there is none. Throws
   * FormatRefusal when the file's content cannot be served (too large, nothing to verify it by).
   */
  file(path: string): IndexedFile | undefined;
}

/** What a format concluded from a layer's bytes; `cause` is the format's own error. */
export class FormatRefusal extends Error {
  constructor(
    readonly format: string,
    message: string,
    readonly detail: Readonly<Record<string, unknown>> = {},
    cause?: unknown,
  ) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'FormatRefusal';
  }
}
