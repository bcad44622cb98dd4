// Per-upstream authorization: remembers the last WWW-Authenticate challenge, answers with Basic
// credentials or a cached Bearer token, and fetches tokens (GET <realm>?service=&scope=) with a
// single flight per cache key. Secrets never reach error messages; this module does not log.
// A call may bring a client's own credentials (clientCredentials: passthrough) instead of the
// configured ones: tokens are cached under each credential's identity, never shared between them,
// and a token endpoint's 401 to them is the client's to fix (UNAUTHORIZED, not DENIED).
// A realm that fails (no answer, a redirect, a huge or malformed body, an unexpected status) is
// not trusted further: its challenge is forgotten, so the next request learns a fresh one from
// the upstream's next 401 (or needs none), and failed token fetches are bounded per upstream.
import { LRUCache } from 'lru-cache';
import { type Dispatcher, request } from 'undici';
import { RegistryError } from '../../oci/errors.js';
import { type Challenge, challengeScopes, parseChallenges, pickChallenge } from './challenge.js';
import { type CredentialProvider, basicAuthorization } from './credentials.js';
import { mayReceiveCredentials } from './realm-policy.js';
import { header, saneRetryAfter } from '../errors.js';
import { SingleFlight } from '../../lib/single-flight.js';

const MAX_BODY = 1024 * 1024;
/**
 * At most this many failed token fetches per upstream in any window of FAILURE_WINDOW_MS; beyond
 * them a challenge is answered 503 (with Retry-After) without asking the realm, so a broken realm
 * is not hammered however many requests come. A successful fetch clears the count.
 */
const MAX_FAILED_FETCHES = 5;
const FAILURE_WINDOW_MS = 10_000;

export interface AuthenticatorOptions {
  /** registry base URL */
  upstream: URL;
  upstreamName: string;
  credentials: CredentialProvider;
  /** for token requests */
  dispatcher?: Dispatcher;
  /** ms clock, injectable for tests */
  now?: () => number;
  /** refresh this long before expiry; default min(30 s, 10% of lifetime); capped at half the lifetime */
  refreshMarginMs?: number;
  /** per token request; default 30 s */
  timeoutMs?: number;
  /** token cache bound; default 10 000 */
  maxTokens?: number;
  /** what the credential needs, appended to DENIED messages (never a secret) */
  deniedHint?: string | undefined;
}

/** Whose credentials a call uses: the configured provider, or a client's own. */
interface Who {
  provider: CredentialProvider;
  /** a client's own: refusals are answered to the client as UNAUTHORIZED */
  isClient: boolean;
}

type Recorded = { scheme: 'basic' } | { scheme: 'bearer'; realm: URL; service: string | undefined };

interface Entry {
  /** full header value, `Bearer <token>` */
  value: string;
  /** use until then; after it, fetch a new one */
  refreshAt: number;
  /** hard expiry; a stale-but-unexpired token is the fallback when a refresh fails */
  expiresAt: number;
}

export class Authenticator {
  readonly #o: AuthenticatorOptions;
  readonly #now: () => number;
  readonly #tokens: LRUCache<string, Entry>;
  readonly #fetches = new SingleFlight<Entry>();
  /** token-endpoint refusals of credentials we sent (a minting provider may get a second try) */
  readonly #refused = new WeakSet<RegistryError>();
  /** failures of the realm itself (or our refusal to ask it again): they forget the challenge */
  readonly #realmFailures = new WeakSet<RegistryError>();
  /** when recent token fetches failed (ms, oldest first) */
  #failedAt: number[] = [];
  #challenge: Recorded | undefined;

  constructor(o: AuthenticatorOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#tokens = new LRUCache<string, Entry>({ max: o.maxTokens ?? 10_000 });
  }

  /**
   * The Authorization value to send up front for `scope`; undefined before any challenge.
   * `client`: a client's own credentials, used instead of the configured ones.
   */
  async authorization(scope: string, client?: CredentialProvider): Promise<string | undefined> {
    const ch = this.#challenge;
    if (ch === undefined) return undefined;
    const who = this.#who(client);
    if (ch.scheme === 'basic') return this.#basic(who, undefined);
    try {
      return await this.#bearer(who, ch.realm, ch.service, normaliseScopes([scope]), undefined);
    } catch (e) {
      this.#forgetOn(e, ch);
      throw e;
    }
  }

  /**
   * After a 401: record the challenge and return a value to retry with, or undefined when there
   * is nothing better to try. `failed` is the Authorization value the upstream just rejected.
   */
  async challenged(
    wwwAuthenticate: string | string[] | undefined,
    scope: string,
    failed: string | undefined,
    client?: CredentialProvider,
  ): Promise<string | undefined> {
    const picked = pickChallenge(parseChallenges(wwwAuthenticate));
    if (picked === undefined) return undefined;
    const ch = this.#record(picked);
    const who = this.#who(client);
    if (ch.scheme === 'basic') return this.#basic(who, failed);
    const scopes = normaliseScopes([scope, ...challengeScopes(picked)]);
    let value: string;
    try {
      value = await this.#bearer(who, ch.realm, ch.service, scopes, failed);
    } catch (e) {
      this.#forgetOn(e, ch);
      throw e;
    }
    return value === failed ? undefined : value;
  }

  /**
   * After a failure of the realm itself, forgets `ch` (unless a newer challenge replaced it): the
   * next request goes without, and learns the realm to use from the upstream's next 401.
   */
  #forgetOn(e: unknown, ch: Recorded): void {
    if (e instanceof RegistryError && this.#realmFailures.has(e) && this.#challenge === ch) this.#challenge = undefined;
  }

  #who(client: CredentialProvider | undefined): Who {
    return client ? { provider: client, isClient: true } : { provider: this.#o.credentials, isClient: false };
  }

  #record(c: Challenge): Recorded {
    if (c.scheme === 'basic') {
      this.#challenge = { scheme: 'basic' };
      return this.#challenge;
    }
    const raw = c.params['realm'] ?? '';
    const realm = URL.canParse(raw, this.#o.upstream) ? new URL(raw, this.#o.upstream) : undefined;
    if (realm === undefined || (realm.protocol !== 'https:' && realm.protocol !== 'http:')) {
      throw new RegistryError('UNAVAILABLE', {
        message: `upstream "${this.#o.upstreamName}" sent an unusable token realm`,
        detail: { upstream: this.#o.upstreamName },
      });
    }
    const service = c.params['service'];
    this.#challenge = { scheme: 'bearer', realm, service: service === '' ? undefined : service };
    return this.#challenge;
  }

  async #basic(who: Who, failed: string | undefined): Promise<string | undefined> {
    const { provider } = who;
    let creds = await provider.get();
    if (creds === undefined) return undefined;
    let value = basicAuthorization(creds);
    if (failed === undefined || value !== failed) return value;
    // The upstream rejected exactly these credentials: let a minting provider try again.
    if (provider.invalidate === undefined) return undefined;
    provider.invalidate();
    creds = await provider.get();
    if (creds === undefined) return undefined;
    value = basicAuthorization(creds);
    return value === failed ? undefined : value;
  }

  async #bearer(who: Who, realm: URL, service: string | undefined, scopes: string[], failed: string | undefined): Promise<string> {
    // per credential: a client's identity is a keyed hash of its credentials (client-credential.ts)
    const key = [realm.href, service ?? '', who.provider.identity, scopes.join(' ')].join('\n');
    let cached = this.#tokens.get(key);
    if (cached !== undefined && cached.value === failed) {
      this.#tokens.delete(key); // rejected upstream: never hand it out again
      cached = undefined;
    }
    if (cached !== undefined && this.#now() < cached.refreshAt) return cached.value;
    try {
      return (await this.#fetchShared(who, key, realm, service, scopes)).value;
    } catch (e) {
      // The refresh failed but the old token has not expired yet: keep using it.
      if (cached !== undefined && this.#now() < cached.expiresAt) return cached.value;
      throw e;
    }
  }

  #fetchShared(who: Who, key: string, realm: URL, service: string | undefined, scopes: string[]): Promise<Entry> {
    // checked before joining, not inside the flight: a refusal is not itself a failed fetch
    if (this.#fetches.peek(key) === undefined) this.#checkFailureBudget(realm);
    return this.#fetches.run(key, () => this.#fetch(who, realm, service, scopes).then((entry) => {
      this.#tokens.set(key, entry);
      this.#failedAt = [];
      return entry;
    }, (e: unknown) => {
      if (e instanceof RegistryError && this.#realmFailures.has(e)) this.#failedAt.push(this.#now());
      throw e;
    }));
  }

  /** Throws, without asking the realm, while too many token fetches failed recently. */
  #checkFailureBudget(realm: URL): void {
    const now = this.#now();
    this.#failedAt = this.#failedAt.filter((at) => at <= now && now - at < FAILURE_WINDOW_MS);
    if (this.#failedAt.length < MAX_FAILED_FETCHES) return;
    const waitS = Math.max(1, Math.ceil((this.#failedAt[0]! + FAILURE_WINDOW_MS - now) / 1000));
    const name = this.#o.upstreamName;
    const e = new RegistryError('UNAVAILABLE', {
      message: `upstream "${name}" token endpoint failed ${this.#failedAt.length} times in the last ${FAILURE_WINDOW_MS / 1000} s; not asking it again for ${waitS} s`,
      detail: { upstream: name, realm: realm.origin + realm.pathname },
      headers: { 'Retry-After': String(waitS) },
    });
    this.#realmFailures.add(e);
    throw e;
  }

  async #fetch(who: Who, realm: URL, service: string | undefined, scopes: string[]): Promise<Entry> {
    const t = await this.#request(who, realm, service, scopes);
    const now = this.#now();
    const lifetimeMs = t.expiresInS * 1000;
    let issuedAt = t.issuedAt ?? now;
    // Guard against clock skew: never in the future, and not already expired on arrival.
    if (issuedAt > now || issuedAt + lifetimeMs <= now) issuedAt = now;
    const margin = Math.min(this.#o.refreshMarginMs ?? Math.min(30_000, lifetimeMs * 0.1), lifetimeMs / 2);
    const expiresAt = issuedAt + lifetimeMs;
    return { value: `Bearer ${t.token}`, refreshAt: expiresAt - Math.max(0, margin), expiresAt };
  }

  /**
   * GET <realm>?service=&scope=... When the realm refuses credentials that a minting provider
   * (ECR, GAR) gave us, they are re-minted and the request is made once more.
   */
  async #request(who: Who, realm: URL, service: string | undefined, scopes: string[]): Promise<TokenResponse> {
    try {
      return await this.#requestOnce(who, realm, service, scopes);
    } catch (e) {
      if (!(e instanceof RegistryError) || !this.#refused.has(e) || who.provider.invalidate === undefined) throw e;
      return this.#requestOnce(who, realm, service, scopes);
    }
  }

  /** One token request; Basic only to a realm the policy allows. */
  async #requestOnce(who: Who, realm: URL, service: string | undefined, scopes: string[]): Promise<TokenResponse> {
    const { upstream, upstreamName: name } = this.#o;
    const credentials = who.provider;
    const fail = (code: 'UNAUTHORIZED' | 'DENIED' | 'TOOMANYREQUESTS' | 'UNAVAILABLE', message: string, extra: object = {}) =>
      new RegistryError(code, { message, detail: { upstream: name, realm: realm.origin + realm.pathname }, ...extra });
    /** the realm itself is broken: no answer, a redirect, an unexpected status, a bad body */
    const broken = (message: string, extra: object = {}): RegistryError => {
      const e = fail('UNAVAILABLE', message, extra);
      this.#realmFailures.add(e);
      return e;
    };
    const url = new URL(realm.href);
    if (service !== undefined) url.searchParams.append('service', service);
    for (const s of scopes) url.searchParams.append('scope', s);
    const signal = AbortSignal.timeout(this.#o.timeoutMs ?? 30_000);
    const headers: Record<string, string> = { accept: 'application/json' };
    let sentCredentials = false;
    if (mayReceiveCredentials(upstream, realm)) {
      let creds;
      try {
        creds = await credentials.get(signal);
      } catch (cause) {
        if (cause instanceof RegistryError) throw cause;
        throw fail('UNAVAILABLE', `could not obtain credentials for upstream "${name}"`, { cause });
      }
      if (creds !== undefined) {
        headers['authorization'] = basicAuthorization(creds);
        sentCredentials = true;
      }
    }
    let text: string;
    try {
      const res = await request(url, { method: 'GET', headers, signal, dispatcher: this.#o.dispatcher });
      if (res.statusCode !== 200) {
        await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
        const st = res.statusCode;
        if (who.isClient && (st === 401 || st === 403)) {
          // the client's own credentials were refused, or it sent none where some are needed: a
          // client without any is challenged, so that it sends its own
          if (!sentCredentials) throw fail('UNAUTHORIZED', `upstream "${name}" refused an anonymous token (token endpoint answered ${st}); send your credentials for it`);
          throw fail(st === 401 ? 'UNAUTHORIZED' : 'DENIED', `upstream "${name}" refused the credentials you sent (token endpoint answered ${st})`);
        }
        if (st === 401 || st === 403) {
          if (sentCredentials) credentials.invalidate?.();
          const hint = this.#o.deniedHint ? `; ${this.#o.deniedHint}` : '';
          const refused = fail('DENIED', sentCredentials
            ? `upstream "${name}" refused our credentials (token endpoint answered ${st})${hint}`
            : `upstream "${name}" refused an anonymous token (token endpoint answered ${st})${hint}`);
          if (sentCredentials) this.#refused.add(refused);
          throw refused;
        }
        if (st === 429) {
          const retryAfter = saneRetryAfter(header(res.headers, 'retry-after'));
          throw fail('TOOMANYREQUESTS', `upstream "${name}" token endpoint is rate limiting us`,
            retryAfter === undefined ? {} : { headers: { 'Retry-After': retryAfter } });
        }
        // Redirects are not followed: a realm is where the upstream says, and nowhere else.
        throw broken(st >= 300 && st < 400
          ? `upstream "${name}" token endpoint answered ${st} (a redirect, not followed)`
          : `upstream "${name}" token endpoint answered ${st}`);
      }
      const tooBig = () => broken(`upstream "${name}" token response exceeds ${MAX_BODY} bytes`);
      if (Number(res.headers['content-length']) > MAX_BODY) {
        res.body.destroy();
        throw tooBig();
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > MAX_BODY) {
          res.body.destroy();
          throw tooBig();
        }
        chunks.push(chunk as Buffer);
      }
      text = Buffer.concat(chunks).toString('utf8');
    } catch (e) {
      if (e instanceof RegistryError) throw e;
      const timedOut = signal.aborted;
      throw broken(timedOut
        ? `upstream "${name}" token endpoint timed out`
        : `upstream "${name}" token endpoint unreachable`, { cause: e });
    }
    return parseTokenResponse(text, () => broken(`upstream "${name}" sent a malformed token response`));
  }
}

interface TokenResponse {
  token: string;
  expiresInS: number;
  issuedAt: number | undefined;
}

function parseTokenResponse(text: string, malformed: () => RegistryError): TokenResponse {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw malformed();
  }
  if (typeof json !== 'object' || json === null) throw malformed();
  const o = json as Record<string, unknown>;
  const pick = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
  const token = pick(o['access_token']) ?? pick(o['token']);
  // Must be usable as a header value.
  if (token === undefined || !/^[\x21-\x7e]+$/.test(token)) throw malformed();
  const exp = typeof o['expires_in'] === 'number' && Number.isFinite(o['expires_in']) ? o['expires_in'] : 60;
  const issued = typeof o['issued_at'] === 'string' ? Date.parse(o['issued_at']) : Number.NaN;
  return { token, expiresInS: Math.max(60, exp), issuedAt: Number.isNaN(issued) ? undefined : issued };
}

function normaliseScopes(scopes: string[]): string[] {
  return [...new Set(scopes.map((s) => s.trim()).filter((s) => s !== ''))].sort();
}
