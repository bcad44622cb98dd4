// Constants and shapes of the eStargz family of layer formats (see docs/ESTARGZ.md in shared/).
//
// Offsets in this package are absolute byte offsets in the compressed blob unless the name says
// otherwise; every range is half-open, [start, end): the project's one ByteRange, re-exported here.
import type { ByteRange } from '../oci/range.js';

export type { ByteRange };

/** Random access to a blob of known size: a cached file, a partly cached one, or ranged GETs. */
export interface RangeSource {
  readonly size: number;
  /** Must resolve to exactly `length` bytes starting at `offset` (a shorter answer is treated as corrupt). */
  read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer>;
}

export const ESTARGZ_FOOTER_SIZE = 51;
export const LEGACY_FOOTER_SIZE = 47;
export const EXTERNAL_TOC_FOOTER_SIZE = 46;
/** 8-byte skippable-frame header + 40-byte payload. */
export const ZSTD_FOOTER_SIZE = 48;
/** The one speculative tail read covers every known footer. */
export const MAX_FOOTER_SIZE = ESTARGZ_FOOTER_SIZE;

export const TOC_TAR_NAME = 'stargz.index.json';
export const TOC_DIGEST_ANNOTATION = 'containerd.io/snapshot/stargz/toc.digest';
export const UNCOMPRESSED_SIZE_ANNOTATION = 'io.containers.estargz.uncompressed-size';
export const ZSTD_MANIFEST_CHECKSUM_ANNOTATION = 'io.containers.zstd-chunked.manifest-checksum';
export const ZSTD_MANIFEST_POSITION_ANNOTATION = 'io.containers.zstd-chunked.manifest-position';

export const PREFETCH_LANDMARK = '.prefetch.landmark';
export const NO_PREFETCH_LANDMARK = '.no.prefetch.landmark';
/** Landmark files hold this one byte. */
export const LANDMARK_CONTENT = 0x0f;

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_WHITEOUT = '.wh..wh..opq';

const MiB = 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 4 * MiB;
export const DEFAULT_MAX_TOC_BYTES = 64 * MiB;
export const DEFAULT_MAX_CHUNK_BYTES = 64 * MiB;

export type Format = 'estargz' | 'stargz' | 'zstd-chunked' | 'estargz-external-toc';
export type Compression = 'gzip' | 'zstd';

/** What the footer says. `tocOffset` is -1 for an external TOC. */
export interface Footer {
  readonly format: Format;
  readonly footerSize: number;
  readonly tocOffset: number;
  /** zstd:chunked only: compressed and uncompressed TOC lengths from the footer. */
  readonly tocCompressedSize?: number;
  readonly tocUncompressedSize?: number;
}

export type TocEntryType = 'dir' | 'reg' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo' | 'chunk';
export const TOC_ENTRY_TYPES: readonly TocEntryType[] = ['dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk'];

/** One TOC entry as serialized (JSON keys; every field but name/type may be omitted when zero). */
export interface TocEntryJson {
  name: string;
  type: TocEntryType;
  size?: number;
  modtime?: string;
  linkName?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  userName?: string;
  groupName?: string;
  offset?: number;
  innerOffset?: number;
  devMajor?: number;
  devMinor?: number;
  /** Values are base64. */
  xattrs?: Record<string, string>;
  digest?: string;
  chunkOffset?: number;
  chunkSize?: number;
  chunkDigest?: string;
}

export interface TocJson {
  version: number;
  entries: TocEntryJson[];
}

/** One piece of a regular file's content and where its compressed bytes are. */
export interface Chunk {
  /** Normalized path of the file this piece belongs to. */
  readonly path: string;
  /** Position of this piece in the file's chunk list. */
  readonly index: number;
  /** Offset of the piece inside the decompressed file. */
  readonly chunkOffset: number;
  /** Decompressed length of the piece (> 0). */
  readonly size: number;
  /** Blob offset of the gzip member / zstd frame to start decompressing at. */
  readonly offset: number;
  /** Decompressed bytes to skip inside that member before the piece starts. */
  readonly innerOffset: number;
  /** Exclusive end of the compressed range to fetch: the next member start, or the data end. */
  readonly end: number;
  /** `sha256:<hex>` of the piece; undefined only for legacy stargz. */
  readonly digest: string | undefined;
}

export type EntryType = Exclude<TocEntryType, 'chunk'>;

export type Whiteout =
  /** `dir/.wh.name`: hides `dir/name` of lower layers. */
  | { readonly kind: 'file'; readonly target: string }
  /** `dir/.wh..wh..opq`: hides every lower-layer child of `dir`. */
  | { readonly kind: 'opaque'; readonly dir: string };

/** A TOC entry other than `chunk`, normalized. */
export interface Entry {
  /** `path.posix` clean of the name, no leading or trailing slash; the root is "". */
  readonly path: string;
  /** The name exactly as the TOC has it. */
  readonly name: string;
  readonly type: EntryType;
  /** Logical size; 0 for everything but `reg`. */
  readonly size: number;
  /** Permission bits only (masked with 0o7777); the file type is `type`. */
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
  readonly userName: string;
  readonly groupName: string;
  readonly modtime: string | undefined;
  /** Symlink target (verbatim) or hardlink target (normalized path). */
  readonly linkName: string;
  readonly devMajor: number;
  readonly devMinor: number;
  readonly xattrs: Readonly<Record<string, Buffer>>;
  /** Whole-file digest (`reg` only, when the producer wrote one). */
  readonly digest: string | undefined;
  /** Pieces in file order; empty for empty files and non-`reg` entries. */
  readonly chunks: readonly Chunk[];
  /** Set when the entry is an OCI whiteout or opaque marker; the caller applies it across layers. */
  readonly whiteout: Whiteout | undefined;
}

/** The parsed, validated TOC of one layer, plus where things are in the blob. */
export interface EstargzIndex {
  readonly format: Format;
  readonly compression: Compression;
  readonly blobSize: number;
  readonly footerSize: number;
  /** blobSize - footerSize. */
  readonly footerOffset: number;
  /** Start of the TOC member/frame; -1 for an external TOC. */
  readonly tocOffset: number;
  /** Compressed bytes of the TOC inside this blob (empty span for an external TOC). */
  readonly tocRange: ByteRange;
  /** End of the data region: no chunk range reaches past it. */
  readonly dataEnd: number;
  /** `sha256:<hex>` of the raw TOC JSON (the value of the toc.digest annotation). */
  readonly tocDigest: string;
  /** True when an expected TOC digest was given and matched. */
  readonly tocVerified: boolean;
  /** The raw TOC JSON bytes, to be stored and served verbatim. */
  readonly tocJson: Buffer;
  /** zstd:chunked: sha256 of the compressed TOC frame (the manifest-checksum annotation). */
  readonly tocCompressedDigest: string | undefined;
  /** Non-chunk entries in TOC order (duplicates kept; lookup returns the last). */
  readonly entries: readonly Entry[];
  /** Every piece of every file, sorted by (offset, innerOffset). */
  readonly chunks: readonly Chunk[];
  /** Which landmark the layer has at its root, if any. */
  readonly landmark: 'prefetch' | 'no-prefetch' | undefined;
  /** Whether pieces without a digest may be returned (legacy stargz with allowUnverified). */
  readonly allowUnverified: boolean;
  /** Largest piece (plus innerOffset) that will be decompressed. */
  readonly maxChunkBytes: number;
  /** The entry at a path ("./a/b", "/a/b/" and "a/b" are the same); undefined when absent. */
  lookup(path: string): Entry | undefined;
  /** Like lookup, but follows hardlinks to the entry holding the content. */
  resolve(path: string): Entry | undefined;
}
