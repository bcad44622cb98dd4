// Manifest and index documents: the one parser that checks a body is what its media type says
// before anything reads it. Structure only: whether the referenced blobs exist is not asked.
import { RegistryError } from './errors.js';
import { tryParseDigest } from './digest.js';

export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

/** Manifests above this size are refused, as Distribution and containerd do (4 MiB). */
export const MAX_MANIFEST_BYTES = 4 << 20;

/** Deeper JSON is refused: no real manifest comes close, and re-serializing it would overflow the stack. */
const MAX_DEPTH = 64;

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

/** A content descriptor; the object keeps any fields not named here. */
export interface Descriptor {
  mediaType?: string;
  /** "algorithm:encoded" (sha256 and sha512 checked strictly); parse it with parseDigest before use */
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  artifactType?: string;
  platform?: Platform;
  urls?: string[];
}

/**
 * An image manifest (config, layers), an index (manifests) or another JSON manifest (Docker
 * schema 1, artifacts). Every field named here has been checked where present; an optional field
 * that was `null` is absent.
 */
export interface ParsedManifest {
  schemaVersion?: number;
  mediaType?: string;
  artifactType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
  manifests?: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

const REQUIRED: Record<string, readonly ('config' | 'layers' | 'manifests')[]> = {
  [OCI_MANIFEST]: ['config', 'layers'],
  [DOCKER_MANIFEST]: ['config', 'layers'],
  [OCI_INDEX]: ['manifests'],
  [DOCKER_LIST]: ['manifests'],
};

/**
 * Parses a manifest of `mediaType`, or throws MANIFEST_INVALID naming the first fault. The four
 * image manifest and index types must be schemaVersion 2 with their required fields; any
 * manifest must be a JSON object within MAX_MANIFEST_BYTES, and the descriptor fields it has
 * (config, layers, manifests, subject) must be descriptors.
 */
export function parseManifest(body: Buffer, mediaType: string): ParsedManifest {
  const doc = jsonObject(body);
  if (!doc) throw invalid(body.length > MAX_MANIFEST_BYTES ? `larger than ${MAX_MANIFEST_BYTES} bytes` : 'not a JSON object');
  const fault = depthFault(doc) ?? documentFault(doc, mediaType);
  if (fault) throw invalid(fault);
  return doc as ParsedManifest;
}

/** The media type a manifest declares in its own body, if any. */
export function declaredMediaType(body: Buffer): string | undefined {
  const mediaType = jsonObject(body)?.mediaType;
  return typeof mediaType === 'string' ? mediaType : undefined;
}

/** The body as a JSON object, or undefined: too big, not JSON, or JSON but not an object. */
function jsonObject(body: Buffer): Record<string, unknown> | undefined {
  if (body.length > MAX_MANIFEST_BYTES) return undefined;
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    return isObject(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

function documentFault(doc: Record<string, unknown>, mediaType: string): string | undefined {
  const required = REQUIRED[mediaType];
  if (required && doc.schemaVersion !== 2) return 'schemaVersion is not 2';
  for (const field of required ?? []) if (doc[field] === undefined || doc[field] === null) return `${field} is missing`;
  dropNulls(doc, ['mediaType', 'artifactType', 'config', 'layers', 'manifests', 'subject', 'annotations']);
  for (const field of ['mediaType', 'artifactType'] as const) {
    if (doc[field] !== undefined && typeof doc[field] !== 'string') return `${field} is not a string`;
  }
  for (const field of ['config', 'subject'] as const) {
    const f = doc[field] === undefined ? undefined : descriptorFault(doc[field]);
    if (f) return `${field}: ${f}`;
  }
  for (const field of ['layers', 'manifests'] as const) {
    const list = doc[field];
    if (list === undefined) continue;
    if (!Array.isArray(list)) return `${field} is not an array`;
    for (const [i, d] of list.entries()) {
      const f = descriptorFault(d);
      if (f) return `${field}[${i}]: ${f}`;
    }
  }
  return doc.annotations === undefined ? undefined : annotationsFault(doc.annotations);
}

function descriptorFault(d: unknown): string | undefined {
  if (!isObject(d)) return 'not a descriptor object';
  dropNulls(d, ['mediaType', 'annotations', 'artifactType', 'platform', 'urls']);
  if (typeof d.digest !== 'string' || !validDigest(d.digest)) return 'digest is not a valid digest';
  if (!Number.isSafeInteger(d.size) || (d.size as number) < 0) return 'size is not a non-negative integer';
  for (const field of ['mediaType', 'artifactType'] as const) {
    if (d[field] !== undefined && typeof d[field] !== 'string') return `${field} is not a string`;
  }
  if (d.urls !== undefined && !(Array.isArray(d.urls) && d.urls.every((u) => typeof u === 'string'))) return 'urls is not a list of strings';
  if (d.platform !== undefined) {
    const p = d.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string' || (p.variant !== undefined && typeof p.variant !== 'string')) {
      return 'platform needs os and architecture strings';
    }
  }
  return d.annotations === undefined ? undefined : annotationsFault(d.annotations);
}

function annotationsFault(a: unknown): string | undefined {
  return isObject(a) && Object.values(a).every((v) => typeof v === 'string') ? undefined : 'annotations is not a map of strings';
}

/** The OCI digest grammar; the registered algorithms (sha256, sha512) must also have their exact form. */
function validDigest(value: string): boolean {
  if (/^sha(256|512):/.test(value)) return tryParseDigest(value) !== undefined;
  return value.length <= 1024 && /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(value);
}

/** Nesting deeper than MAX_DEPTH, found without recursion. */
function depthFault(doc: object): string | undefined {
  const stack: [unknown, number][] = [[doc, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > MAX_DEPTH) return `nested deeper than ${MAX_DEPTH} levels`;
    for (const child of Object.values(v)) if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
  }
  return undefined;
}

/** Optional fields sent as `null` (Go marshals a nil map so) are treated as absent. */
function dropNulls(o: Record<string, unknown>, fields: readonly string[]): void {
  for (const f of fields) if (o[f] === null) delete o[f];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function invalid(reason: string): RegistryError {
  return new RegistryError('MANIFEST_INVALID', { message: `invalid manifest: ${reason}`, detail: { reason } });
}
