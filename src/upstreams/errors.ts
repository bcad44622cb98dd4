// The only place an upstream's HTTP status, error envelope or transport failure becomes a
// RegistryError. An upstream 401 to our configured credentials never reaches clients as a 401:
// it becomes DENIED. One to a client's own credentials (clientCredentials: passthrough) may.
import type { Readable } from 'node:stream';
import { OCI_ERRORS, parseErrorEnvelope, RegistryError, type OciCode } from '../oci/errors.js';

export type ResourceKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'token';

const MAX_ERROR_BODY = 64 << 10;
const PASSED_THROUGH_400: readonly OciCode[] = ['NAME_INVALID', 'TAG_INVALID', 'MANIFEST_INVALID', 'DIGEST_INVALID'];
const NOT_FOUND_BY_KIND: Record<ResourceKind, OciCode> = {
  manifest: 'MANIFEST_UNKNOWN',
  blob: 'BLOB_UNKNOWN',
  tags: 'NAME_UNKNOWN',
  referrers: 'MANIFEST_UNKNOWN',
  token: 'DENIED',
};

export interface ErrorContext {
  upstream: string;
  kind: ResourceKind;
  repo?: string | undefined;
  ref?: string | undefined;
  /** what the upstream's credential needs, for DENIED messages (never a secret) */
  hint?: string | undefined;
  /** the call was made with a client's own credentials (clientCredentials: passthrough) */
  client?: { anonymous: boolean; sentBasic?: boolean | undefined } | undefined;
}

/** Reads (a bounded part of) an error response and classifies it. */
export async function errorFromResponse(
  ctx: ErrorContext,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  body: Readable,
): Promise<RegistryError> {
  const codes = await readEnvelopeCodes(body);
  const detail = { upstream: ctx.upstream, status, repository: ctx.repo, reference: ctx.ref, upstreamCodes: codes.length ? codes : undefined };
  if (status === 404) {
    const code = codes.find((c): c is OciCode => c === 'NAME_UNKNOWN' || c === 'MANIFEST_UNKNOWN' || c === 'BLOB_UNKNOWN');
    return new RegistryError(code ?? NOT_FOUND_BY_KIND[ctx.kind], { detail });
  }
  if ((status === 401 || status === 403) && ctx.client) return clientRefusal(ctx, ctx.client, status, detail);
  if (status === 401 || status === 403) {
    return new RegistryError('DENIED', {
      message: `upstream "${ctx.upstream}" denied access${ctx.repo ? ` to ${ctx.repo}` : ''}; ${ctx.hint ?? 'check the credentials configured for it'}`,
      detail,
    });
  }
  if (status === 429) {
    const retryAfter = saneRetryAfter(header(headers, 'retry-after'));
    return new RegistryError('TOOMANYREQUESTS', {
      message: `upstream "${ctx.upstream}" is rate-limiting us`,
      detail,
      headers: retryAfter ? { 'retry-after': retryAfter } : {},
    });
  }
  if (status === 416) {
    const contentRange = header(headers, 'content-range');
    return new RegistryError('RANGE_INVALID', { detail, headers: contentRange ? { 'content-range': contentRange } : {} });
  }
  if (status === 400) {
    const code = codes.find((c): c is OciCode => (PASSED_THROUGH_400 as string[]).includes(c));
    if (code) return new RegistryError(code, { detail });
  }
  if (status >= 500) {
    return new RegistryError('UNAVAILABLE', { message: `upstream "${ctx.upstream}" answered ${status}`, detail });
  }
  return new RegistryError('UNKNOWN', { status: 502, message: `upstream "${ctx.upstream}" answered ${status}`, detail });
}

/**
 * A refusal of a client's own credentials, answered as the upstream meant it: a client that sent
 * none is challenged (UNAUTHORIZED, so that it sends its own); Basic credentials the upstream
 * answered 401 are wrong (UNAUTHORIZED); otherwise the credentials were good but give no access
 * to this repository (DENIED: a token server's token without the scope, or a 403).
 */
function clientRefusal(ctx: ErrorContext, client: NonNullable<ErrorContext['client']>, status: number, detail: object): RegistryError {
  const what = ctx.repo ? ` to ${ctx.repo}` : '';
  if (client.anonymous) return new RegistryError('UNAUTHORIZED', { message: `upstream "${ctx.upstream}" requires credentials${what}; send yours`, detail });
  if (status === 401 && client.sentBasic) return new RegistryError('UNAUTHORIZED', { message: `upstream "${ctx.upstream}" refused the credentials you sent`, detail });
  return new RegistryError('DENIED', { message: `upstream "${ctx.upstream}" denied the credentials you sent access${what}`, detail });
}

/** Connection refused, reset, DNS failure, timeouts: the upstream is unavailable. */
export function errorFromTransport(ctx: ErrorContext, err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  const reason = transportReason(err);
  return new RegistryError('UNAVAILABLE', {
    message: `upstream "${ctx.upstream}" is unreachable (${reason})`,
    detail: { upstream: ctx.upstream, reason },
    cause: err,
  });
}

/** Upstream content that failed digest or size checks: never cached, reported as 502. */
export function verificationError(ctx: ErrorContext, expected: string, got: string): RegistryError {
  return new RegistryError('UNKNOWN', {
    status: 502,
    message: `upstream "${ctx.upstream}" sent content that does not match its digest`,
    detail: { upstream: ctx.upstream, expected, got },
  });
}

/**
 * An answer that contradicts itself or the request (a Content-Range not the range asked for, a
 * Content-Length that disagrees with it, a body longer or shorter than announced): nothing of it is
 * passed on, reported as 502.
 */
export function framingError(ctx: ErrorContext, problem: string, detail: Record<string, unknown> = {}): RegistryError {
  return new RegistryError('UNKNOWN', {
    status: 502,
    message: `upstream "${ctx.upstream}" ${problem}`,
    detail: { upstream: ctx.upstream, repository: ctx.repo, reference: ctx.ref, ...detail },
  });
}

/**
 * An upstream Retry-After worth passing on to clients: delay-seconds up to a day, or an HTTP date
 * in the IMF-fixdate form senders must use (RFC 9110 section 5.6.7); anything else is dropped.
 */
export function saneRetryAfter(value: string | undefined): string | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  if (/^\d{1,5}$/.test(v)) return Number(v) <= 86_400 ? v : undefined;
  // a valid date is one that prints back as itself (this also rejects Feb 30 and wrong weekdays)
  const t = Date.parse(v);
  return /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/.test(v) && Number.isFinite(t) && new Date(t).toUTCString() === v ? v : undefined;
}

/** Failures worth retrying before any byte reached the client. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof RegistryError) return err.code === 'UNAVAILABLE';
  const reason = transportReason(err);
  return reason !== 'error' && reason !== 'aborted';
}

function transportReason(err: unknown): string {
  const code = typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : '';
  if (/^(ECONNREFUSED|ECONNRESET|EPIPE|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|ENOTFOUND|EAI_AGAIN|UND_ERR_\w+)$/.test(code)) return code;
  if (err instanceof Error && err.name === 'AbortError') return 'aborted';
  if (err instanceof Error && err.name === 'TimeoutError') return 'timed out';
  return 'error';
}

async function readEnvelopeCodes(body: Readable): Promise<string[]> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= MAX_ERROR_BODY) break;
    }
  } catch {
    return [];
  } finally {
    body.on('error', () => undefined);
    body.destroy();
  }
  return parseErrorEnvelope(Buffer.concat(chunks))
    .map((e) => e.code)
    .filter((c) => c in OCI_ERRORS);
}

export function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}
