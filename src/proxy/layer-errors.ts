// The one table from a layer format error's kind (an EstargzError, or a TarError from a plain
// layer's tar) to a registry error. A layer's bytes come from an upstream, so content that breaks
// the format, its own digests or our limits is the upstream's fault: 502, with what was wrong in
// the detail. What is simply absent is a 404. A TarError's kinds are EstargzError kinds, so a tar
// problem gets the same answer whether it was met in an eStargz layer or a plain one.
import type { EstargzError, EstargzErrorKind } from '../estargz/index.js';
import type { TarError } from '../tar/index.js';
import { RegistryError, type OciCode } from '../oci/errors.js';

const BY_KIND: Record<EstargzErrorKind, { code: OciCode; status?: number; message: string }> = {
  'not-estargz': { code: 'BLOB_UNKNOWN', message: 'layer is not eStargz' },
  'external-toc': { code: 'BLOB_UNKNOWN', message: 'the TOC of this eStargz layer is in a separate image' },
  'not-found': { code: 'BLOB_UNKNOWN', message: 'no such file in the layer' },
  corrupt: { code: 'UNKNOWN', status: 502, message: 'upstream layer is malformed' },
  'digest-mismatch': { code: 'UNKNOWN', status: 502, message: 'upstream layer content does not match its digests' },
  'unsafe-path': { code: 'UNKNOWN', status: 502, message: 'upstream layer has a path outside its root' },
  'too-large': { code: 'UNKNOWN', status: 502, message: 'upstream layer exceeds a limit of this proxy' },
  unverifiable: { code: 'UNKNOWN', status: 502, message: 'upstream layer content cannot be verified' },
  unsupported: { code: 'UNKNOWN', status: 502, message: 'upstream layer uses a tar feature this proxy does not read' },
};

export function layerErrorToRegistryError(e: EstargzError | TarError): RegistryError {
  const m = BY_KIND[e.kind];
  return new RegistryError(m.code, { status: m.status, message: `${m.message}: ${e.message}`, detail: { kind: e.kind, ...e.detail }, cause: e });
}

