// A distribution-API client on undici: one keep-alive Agent per upstream, the token handshake
// through an Authenticator, redirects followed by hand (credentials never leave the upstream's
// origin), bounded manifest reads verified against their digest, and retries with backoff for
// requests that failed before any byte reached a client.
import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { digestOf, tryParseDigest, type Digest } from '../oci/digest.js';
import { declaredMediaType, MAX_MANIFEST_BYTES } from '../oci/media-types.js';
import { RegistryError } from '../oci/errors.js';
import { referenceString, type Reference } from '../oci/reference.js';
import type { Authenticator } from './auth/authenticator.js';
import { anonymous } from './auth/credentials.js';
import { errorFromResponse, errorFromTransport, header, isRetryable, verificationError, type ErrorContext, type ResourceKind } from './errors.js';
import { answeredRange, counted, exactly, wholeLength } from './framing.js';
import { rangeHeader, type RangeRequest } from '../oci/range.js';
import { CircuitBreaker } from '../lib/circuit-breaker.js';
import { discard, type BlobResponse, type CallOptions, type Manifest, type ManifestHead, type RateLimit, type TagPage, type Upstream } from './upstream.js';

const MAX_REDIRECTS = 5;
/** After this many consecutive failed requests the upstream counts as down... */
const DOWN_AFTER_FAILURES = 3;
/** ...until this long after the last failure (or the next success). */
const DOWN_FOR_MS = 10_000;
const USER_AGENT = 'pullthrough/0.1';

export interface RegistryClientOptions {
  name: string;
  url: string;
  authenticator: Authenticator;
  /** a keep-alive Agent shared with the authenticator (see upstreamAgent) */
  dispatcher: Agent;
  retries: number;
  /** base delay of the exponential backoff between retries */
  backoffMs?: number;
  /** called once per upstream response (after auth and redirects); the client itself never logs */
  onResponse?: (e: UpstreamCall) => void;
  /** called as body bytes of blobs (chunk by chunk) and manifests (whole) arrive */
  onBytes?: (e: UpstreamBytes) => void;
  /** what this upstream's credential needs, added to DENIED messages (see adapters.ts) */
  deniedHint?: string | undefined;
  /** the clock of the health circuit (default Date.now) */
  now?: (() => number) | undefined;
}

export interface UpstreamCall {
  upstream: string;
  /** what was asked for */
  kind: ResourceKind;
  method: string;
  path: string;
  status: number;
  ms: number;
  attempt: number;
  /** Docker Hub's ratelimit-remaining, when the upstream sent it */
  rateLimitRemaining: number | undefined;
  /** Docker Hub's ratelimit-limit, when the upstream sent it */
  rateLimitLimit?: number | undefined;
  /** true when less than a tenth of the announced limit remains */
  rateLimitLow?: boolean | undefined;
}

/** Body bytes received from an upstream. */
export interface UpstreamBytes {
  upstream: string;
  kind: 'blob' | 'manifest';
  bytes: number;
}

type Headers = Record<string, string | string[] | undefined>;
interface Sent {
  status: number;
  headers: Headers;
  body: Readable;
  /** the response came from another origin (blob storage, a CDN) after a redirect */
  offOrigin?: boolean;
  /** the request carried Basic credentials (a 401 to it refuses them) */
  sentBasic?: boolean;
}

export class RegistryClient implements Upstream {
  readonly name: string;
  readonly dispatcher: Agent;
  private readonly base: URL;
  private lastRateLimit: RateLimit | undefined;
  /** open (unhealthy) after failures in a row; requests still go, the core only stops relying on them */
  private readonly circuit: CircuitBreaker;

  constructor(private readonly opts: RegistryClientOptions) {
    this.circuit = new CircuitBreaker({ failuresToOpen: DOWN_AFTER_FAILURES, coolDownMs: DOWN_FOR_MS, now: opts.now });
    this.name = opts.name;
    this.base = new URL(opts.url);
    this.dispatcher = opts.dispatcher;
  }

  async headManifest(repo: string, ref: Reference, accept: readonly string[], o: CallOptions = {}): Promise<ManifestHead> {
    const ctx = this.ctx('manifest', o, repo, referenceString(ref));
    const res = await this.send(ctx, 'HEAD', `/v2/${repo}/manifests/${referenceString(ref)}`, { accept: accept.join(', ') }, o);
    discard(res.body);
    if (res.status !== 200) throw await this.failed(ctx, res, Readable.from([]));
    const length = Number(header(res.headers, 'content-length'));
    return {
      digest: header(res.headers, 'docker-content-digest'),
      mediaType: bareType(header(res.headers, 'content-type')),
      size: Number.isFinite(length) ? length : undefined,
    };
  }

  async getManifest(repo: string, ref: Reference, accept: readonly string[], o: CallOptions = {}): Promise<Manifest> {
    const ctx = this.ctx('manifest', o, repo, referenceString(ref));
    const res = await this.send(ctx, 'GET', `/v2/${repo}/manifests/${referenceString(ref)}`, { accept: accept.join(', ') }, o);
    if (res.status !== 200) throw await this.failed(ctx, res);
    const body = await readBounded(res.body, MAX_MANIFEST_BYTES, ctx);
    this.opts.onBytes?.({ upstream: this.name, kind: 'manifest', bytes: body.length });
    const expected = ref.kind === 'digest' ? ref.digest : tryParseDigest(header(res.headers, 'docker-content-digest') ?? '');
    const digest = digestOf(body, expected?.algorithm ?? 'sha256');
    if (expected && digest.value !== expected.value) throw verificationError(ctx, expected.value, digest.value);
    const declared = declaredMediaType(body);
    const mediaType = bareType(header(res.headers, 'content-type')) ?? declared;
    if (!mediaType || (declared && declared !== mediaType && mediaType !== 'application/json')) {
      throw new RegistryError('UNKNOWN', {
        status: 502,
        message: `upstream "${this.name}" sent a manifest whose media type is missing or contradicts its body`,
        detail: { upstream: this.name, contentType: mediaType ?? null, declared: declared ?? null },
      });
    }
    return { digest, mediaType: declared ?? mediaType, body };
  }

  async headBlob(repo: string, digest: Digest, o: CallOptions = {}): Promise<number | undefined> {
    const ctx = this.ctx('blob', o, repo, digest.value);
    const res = await this.send(ctx, 'HEAD', `/v2/${repo}/blobs/${digest.value}`, {}, o);
    discard(res.body);
    if (res.status !== 200) throw await this.failed(ctx, res, Readable.from([]));
    return wholeLength(ctx, res.headers, digest, undefined);
  }

  async getBlob(repo: string, digest: Digest, o: CallOptions & { range?: RangeRequest; size?: number | undefined } = {}): Promise<BlobResponse> {
    const ctx = this.ctx('blob', o, repo, digest.value);
    const headers: Record<string, string> = o.range ? { range: rangeHeader(o.range) } : {};
    const res = await this.send(ctx, 'GET', `/v2/${repo}/blobs/${digest.value}`, headers, o);
    if (res.status !== 200 && !(res.status === 206 && o.range)) throw await this.failed(ctx, res);
    const onBytes = this.opts.onBytes;
    const received = onBytes && ((bytes: number) => onBytes({ upstream: this.name, kind: 'blob', bytes }));
    try {
      if (res.status === 200) {
        // also when the upstream ignored a Range: `range` stays undefined and the body is whole
        const length = wholeLength(ctx, res.headers, digest, o.size) ?? o.size;
        if (length !== undefined) return { size: length, range: undefined, body: exactly(ctx, res.body, length, received) };
        return { size: length, range: undefined, body: received ? counted(res.body, received) : res.body };
      }
      const { range, total } = answeredRange(ctx, res.headers, o.range!, o.size);
      return { size: total ?? o.size, range, body: exactly(ctx, res.body, range.end - range.start, received) };
    } catch (e) {
      res.body.on('error', () => undefined);
      res.body.destroy(); // never reuse a connection that lied about a length
      throw e;
    }
  }

  async tags(repo: string, page: { n?: number; last?: string }, o: CallOptions = {}): Promise<TagPage> {
    const ctx = this.ctx('tags', o, repo);
    const q = new URLSearchParams();
    if (page.n !== undefined) q.set('n', String(page.n));
    if (page.last !== undefined) q.set('last', page.last);
    const qs = q.size ? `?${q}` : '';
    const res = await this.send(ctx, 'GET', `/v2/${repo}/tags/list${qs}`, {}, o);
    if (res.status !== 200) throw await this.failed(ctx, res);
    const parsed = parseJson(await readBounded(res.body, MAX_MANIFEST_BYTES, ctx)) as { name?: unknown; tags?: unknown } | undefined;
    const tags = Array.isArray(parsed?.tags) ? parsed.tags.filter((t): t is string => typeof t === 'string') : [];
    return { name: repo, tags, next: parseNextLink(header(res.headers, 'link')) };
  }

  async referrers(repo: string, digest: Digest, artifactType: string | undefined, o: CallOptions = {}): Promise<Manifest | undefined> {
    const ctx = this.ctx('referrers', o, repo, digest.value);
    const qs = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
    const res = await this.send(ctx, 'GET', `/v2/${repo}/referrers/${digest.value}${qs}`, { accept: 'application/vnd.oci.image.index.v1+json' }, o);
    if (res.status === 404 || res.status === 405 || res.status === 400) {
      discard(res.body);
      return undefined;
    }
    if (res.status !== 200) throw await this.failed(ctx, res);
    const body = await readBounded(res.body, MAX_MANIFEST_BYTES, ctx);
    return { digest: digestOf(body), mediaType: bareType(header(res.headers, 'content-type')) ?? 'application/vnd.oci.image.index.v1+json', body };
  }

  healthy(): boolean {
    return this.circuit.state() !== 'open';
  }

  rateLimit(): RateLimit | undefined {
    return this.lastRateLimit;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private ctx(kind: ResourceKind, o: CallOptions, repo?: string, ref?: string): ErrorContext {
    const client = o.credentials && { anonymous: o.credentials.identity === anonymous.identity };
    return { upstream: this.name, kind, repo, ref, hint: this.opts.deniedHint, client };
  }

  /** An error answer classified (errors.ts); for a client's own credentials, with what they were sent as. */
  private failed(ctx: ErrorContext, res: Sent, body: Readable = res.body): Promise<RegistryError> {
    const c = ctx.client && { ...ctx, client: { ...ctx.client, sentBasic: res.sentBasic } };
    return errorFromResponse(c ?? ctx, res.status, res.headers, body);
  }

  /**
   * Sends one request with auth, redirects and retries. Returns any final response (the caller
   * classifies non-2xx); throws RegistryError for transport failures after the retries.
   */
  private async send(ctx: ErrorContext, method: 'GET' | 'HEAD', path: string, extra: Record<string, string>, o: CallOptions): Promise<Sent> {
    const signal = o.signal;
    for (let attempt = 0; ; attempt++) {
      const t0 = performance.now();
      try {
        const res = await this.sendOnce(ctx, method, path, extra, o);
        const rateLimit = parseRateLimit(res.headers);
        if (rateLimit) this.lastRateLimit = rateLimit;
        this.opts.onResponse?.({
          upstream: this.name,
          kind: ctx.kind,
          method,
          path,
          status: res.status,
          ms: Math.round(performance.now() - t0),
          attempt,
          rateLimitRemaining: rateLimit?.remaining,
          ...(rateLimit ? { rateLimitLimit: rateLimit.limit, rateLimitLow: rateLimit.remaining < rateLimit.limit / 10 } : {}),
        });
        if (res.status >= 502 && res.status <= 504 && attempt < this.opts.retries) {
          discard(res.body);
          await this.pause(ctx, attempt, signal);
          continue;
        }
        this.recordOutcome(res.status < 500);
        return res;
      } catch (e) {
        if (signal?.aborted || !isRetryable(e) || attempt >= this.opts.retries) {
          // a token endpoint's refusal is an answer, as the registry's own 401 is: the upstream works
          if (!signal?.aborted && !isRefusal(e)) this.recordOutcome(false);
          throw errorFromTransport(ctx, e);
        }
        await this.pause(ctx, attempt, signal);
      }
    }
  }

  /** The wait before a retry; the caller's deadline firing during it is a transport failure too. */
  private async pause(ctx: ErrorContext, attempt: number, signal?: AbortSignal): Promise<void> {
    try {
      await sleep(this.backoff(attempt), undefined, { signal });
    } catch (e) {
      throw errorFromTransport(ctx, e);
    }
  }

  private recordOutcome(ok: boolean): void {
    if (ok) this.circuit.succeeded();
    else this.circuit.failed();
  }

  private backoff(attempt: number): number {
    const base = this.opts.backoffMs ?? 200;
    return base * 2 ** attempt * (0.5 + Math.random() / 2);
  }

  private async sendOnce(ctx: ErrorContext, method: 'GET' | 'HEAD', path: string, extra: Record<string, string>, o: CallOptions): Promise<Sent> {
    const { signal, credentials: client } = o;
    const scope = ctx.repo ? `repository:${ctx.repo}:pull` : '';
    const auth = this.opts.authenticator;
    let authorization = scope ? await auth.authorization(scope, client) : undefined;
    let res = await this.follow(method, new URL(path, this.base), extra, authorization, signal);
    // A 401 gets one refresh and one retry. A request that went out without credentials first
    // learns the challenge; if the Basic credentials it then sends (possibly a cached, minted
    // ECR password) are refused too, they get their one refresh.
    const rounds = authorization === undefined ? 2 : 1;
    for (let round = 0; res.status === 401 && scope && round < rounds; round++) {
      if (round > 0 && !authorization?.startsWith('Basic ')) break;
      discard(res.body);
      const retry = await auth.challenged(res.headers['www-authenticate'], scope, authorization, client);
      if (retry === undefined) return { ...res, body: Readable.from([]), sentBasic: authorization?.startsWith('Basic ') === true };
      authorization = retry;
      res = await this.follow(method, new URL(path, this.base), extra, authorization, signal);
    }
    if (res.offOrigin && (res.status === 400 || res.status === 401 || res.status === 403)) {
      // A signed storage URL that expired (or was refused) before we used it: ask the registry
      // for a fresh one, once.
      discard(res.body);
      res = await this.follow(method, new URL(path, this.base), extra, authorization, signal);
    }
    return { ...res, sentBasic: authorization?.startsWith('Basic ') === true };
  }

  /** Follows redirects itself: Authorization only ever goes to the upstream's own origin. */
  private async follow(method: 'GET' | 'HEAD', url: URL, extra: Record<string, string>, authorization: string | undefined, signal?: AbortSignal): Promise<Sent> {
    for (let hop = 0; ; hop++) {
      const sameOrigin = url.origin === this.base.origin;
      const headers: Record<string, string> = { 'user-agent': USER_AGENT, ...extra };
      if (authorization && sameOrigin) headers.authorization = authorization;
      const res = await request(url, { method, headers, signal, dispatcher: this.dispatcher });
      const location = header(res.headers, 'location');
      if (res.statusCode >= 300 && res.statusCode < 400 && location && hop < MAX_REDIRECTS) {
        discard(res.body);
        url = new URL(location, url);
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body, offOrigin: !sameOrigin };
    }
  }
}

/** One keep-alive connection pool per upstream, with connect, header and idle-body timeouts. */
export function upstreamAgent(timeouts: { connectMs: number; headersMs: number; bodyMs: number }): Agent {
  return new Agent({
    connectTimeout: timeouts.connectMs,
    headersTimeout: timeouts.headersMs,
    bodyTimeout: timeouts.bodyMs,
    keepAliveTimeout: 30_000,
  });
}


/** Reads `ratelimit-limit: 100;w=21600` and `ratelimit-remaining: 76;w=21600`. */
export function parseRateLimit(headers: Headers, now = Date.now()): RateLimit | undefined {
  const limit = /^\s*(\d+)\s*(?:;\s*w=(\d+))?/.exec(header(headers, 'ratelimit-limit') ?? '');
  const remaining = /^\s*(\d+)\s*(?:;\s*w=(\d+))?/.exec(header(headers, 'ratelimit-remaining') ?? '');
  if (!limit || !remaining) return undefined;
  const window = Number(remaining[2] ?? limit[2] ?? 21600);
  return { limit: Number(limit[1]), remaining: Number(remaining[1]), windowSeconds: window, seenAt: now };
}

function isRefusal(e: unknown): boolean {
  return e instanceof RegistryError && (e.code === 'UNAUTHORIZED' || e.code === 'DENIED');
}

function bareType(contentType: string | undefined): string | undefined {
  const t = contentType?.split(';')[0]?.trim().toLowerCase();
  return t ? t : undefined;
}

async function readBounded(body: Readable, limit: number, ctx: ErrorContext): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  body.on('error', () => undefined); // surfaced by the iterator; this only keeps an early exit quiet
  try {
    for await (const chunk of body) {
      size += chunk.length;
      if (size > limit) {
        throw new RegistryError('UNKNOWN', {
          status: 502,
          message: `upstream "${ctx.upstream}" sent a ${ctx.kind} larger than ${limit} bytes`,
          detail: { upstream: ctx.upstream, limit },
        });
      }
      chunks.push(chunk);
    }
  } catch (e) {
    throw errorFromTransport(ctx, e);
  }
  return Buffer.concat(chunks);
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8'));
  } catch {
    return undefined;
  }
}

/** Reads `last` and `n` out of a `Link: </v2/...?last=x&n=y>; rel="next"` header. */
function parseNextLink(link: string | undefined): TagPage['next'] {
  const m = link ? /<([^>]*)>\s*;\s*rel="?next"?/.exec(link) : null;
  if (!m) return undefined;
  const q = new URL(m[1]!, 'http://x').searchParams;
  const last = q.get('last');
  if (last === null) return undefined;
  const n = q.get('n');
  return { n: n === null ? undefined : Number(n), last };
}
