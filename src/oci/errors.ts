// The one table of OCI error codes this proxy can answer with, and the error class that carries
// them. Status pairings follow the distribution spec and CNCF Distribution's register.go.

export const OCI_ERRORS = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  TAG_INVALID: { status: 400, message: 'manifest tag did not match URI' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const;

export type OciCode = keyof typeof OCI_ERRORS;

export interface RegistryErrorOptions {
  message?: string;
  detail?: unknown;
  cause?: unknown;
  /** Overrides the table's status (e.g. 502 for upstream content that failed verification). */
  status?: number;
  headers?: Record<string, string>;
}

export class RegistryError extends Error {
  readonly code: OciCode;
  readonly status: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(code: OciCode, opts: RegistryErrorOptions = {}) {
    super(opts.message ?? OCI_ERRORS[code].message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.status = opts.status ?? OCI_ERRORS[code].status;
    this.detail = opts.detail ?? null;
    this.headers = opts.headers ?? {};
  }

  /** The OCI error envelope clients parse. */
  toBody(): { errors: { code: OciCode; message: string; detail: unknown }[] } {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail }] };
  }
}

export function isRegistryError(e: unknown): e is RegistryError {
  return e instanceof RegistryError;
}

/** The errors of an OCI error envelope (`{"errors":[{"code","message"}]}`); empty for any other body. */
export function parseErrorEnvelope(body: Buffer): { code: string; message: string | undefined }[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return [];
  }
  const errors = typeof parsed === 'object' && parsed !== null ? (parsed as { errors?: unknown }).errors : undefined;
  if (!Array.isArray(errors)) return [];
  return errors.flatMap((e: unknown) => {
    if (typeof e !== 'object' || e === null) return [];
    const { code, message } = e as { code?: unknown; message?: unknown };
    return [{ code: String(code), message: typeof message === 'string' ? message : undefined }];
  });
}
