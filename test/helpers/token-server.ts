// A Docker-token-spec auth server for tests (GET /token?service=&scope=).
// Tokens are ES256 or RS256 JWTs signed by a key generated here, with a
// self-signed certificate (made by the openssl CLI) that docker-registry
// trusts through `auth.token.rootcertbundle`.
import { X509Certificate, createHash, generateKeyPairSync, randomUUID, sign, timingSafeEqual } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { SECRETS } from './secrets.js';
import { run } from './util.js';

export type SigningAlg = 'ES256' | 'RS256';

/**
 * How the JWT header names its key. distribution 2.8.2 accepts both:
 * `x5c` (base64 DER chain, verified against rootcertbundle) or `kid`
 * (libtrust key id of a key in rootcertbundle).
 */
export type KeyHeader = 'x5c' | 'kid';

export interface SigningKey {
  alg: SigningAlg;
  privateKey: KeyObject;
  /** PEM certificate file to use as docker-registry's rootcertbundle. */
  certPath: string;
  /** Base64 DER of the certificate, for the x5c header. */
  certDer: string;
  /** libtrust-style key id ("ABCD:EFGH:..."), for the kid header. */
  kid: string;
}

/** libtrust key id: base32 of the first 240 bits of sha256(DER SPKI), in groups of 4. */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const sum = createHash('sha256').update(der).digest().subarray(0, 30);
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const byte of sum) bits += byte.toString(2).padStart(8, '0');
  let b32 = '';
  for (let i = 0; i < bits.length; i += 5) b32 += alphabet[parseInt(bits.slice(i, i + 5), 2)];
  return b32.match(/.{4}/g)?.join(':') ?? b32;
}

/** Generates a key pair and a self-signed cert for it (via openssl) in `dir`. */
export async function createSigningKey(dir: string, alg: SigningAlg = 'ES256'): Promise<SigningKey> {
  const { privateKey, publicKey } =
    alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPath = join(dir, 'token-signing.key');
  const certPath = join(dir, 'token-signing.crt');
  await writeFile(keyPath, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  await run('openssl', [
    'req', '-new', '-x509', '-sha256', '-days', '2', '-key', keyPath, '-out', certPath,
    '-subj', '/CN=pullthrough test token issuer',
  ], { timeoutMs: 15_000 });
  const cert = new X509Certificate(await readFile(certPath));
  return { alg, privateKey, certPath, certDer: cert.raw.toString('base64'), kid: libtrustKeyId(publicKey) };
}

export interface TokenRequestRecord {
  /** The scope parameter(s), space separated ('' when none). */
  scope: string;
  service: string;
  /** True when the caller presented valid credentials (or none are required). */
  authorized: boolean;
  user?: string;
  /** HTTP status the token server answered with. */
  status: number;
  /** The token issued, when one was (tests check it never leaks). */
  token?: string;
}

/**
 * What callers without credentials get when credentials are configured:
 * 'empty' = a token with no access (like Docker Hub), 'pull' = pull-only
 * access, 'reject' = 401.
 */
export type AnonymousPolicy = 'empty' | 'pull' | 'reject';

export interface TokenServerOptions {
  key: SigningKey;
  service: string;
  issuer: string;
  /** When both are set, full access requires these Basic credentials. */
  username?: string;
  password?: string;
  /**
   * When set, full access requires Basic credentials it accepts (instead of username/password),
   * e.g. short-lived passwords minted elsewhere.
   */
  verifyCredentials?: (user: string, password: string) => boolean;
  anonymous?: AnonymousPolicy;
  /**
   * When set, a caller with valid credentials gets access only to the repositories this allows
   * for its user (a token without the others, as Docker Hub gives for a private repository).
   */
  mayRead?: (user: string, repository: string) => boolean;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
  keyHeader?: KeyHeader;
  /** Port to listen on (0 = any). */
  port?: number;
}

export interface TokenServer {
  /** Realm URL, e.g. http://127.0.0.1:PORT/token */
  realm: string;
  port: number;
  service: string;
  issuer: string;
  requests: TokenRequestRecord[];
  /** Mutable settings: tests may change these between requests. */
  options: TokenServerOptions;
  /** Closes and listens again on the same port with the same key; keeps `requests` and `options`. */
  restart(): Promise<void>;
  /** Idempotent; drops keep-alive connections. */
  close(): Promise<void>;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** "repository:team/app:pull,push" → {type, name, actions}. Names may not contain ':' but hosts may. */
function parseScope(scope: string): Access | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last <= first) return undefined;
  const actions = scope.slice(last + 1).split(',').filter((a) => a.length > 0);
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions };
}

export function signJwt(key: SigningKey, header: KeyHeader, claims: Record<string, unknown>): string {
  const head = { typ: 'JWT', alg: key.alg, ...(header === 'x5c' ? { x5c: [key.certDer] } : { kid: key.kid }) };
  const input = `${b64url(JSON.stringify(head))}.${b64url(JSON.stringify(claims))}`;
  const sig =
    key.alg === 'ES256'
      ? sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
      : sign('sha256', Buffer.from(input), key.privateKey);
  return `${input}.${b64url(sig)}`;
}

function parseBasic(req: IncomingMessage): { user: string; password: string } | undefined {
  const m = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
  if (!m?.[1]) return undefined;
  const decoded = Buffer.from(m[1], 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon < 0 ? undefined : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

const same = (a: string, b: string): boolean =>
  a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));

export async function startTokenServer(options: TokenServerOptions): Promise<TokenServer> {
  const requests: TokenRequestRecord[] = [];
  let server: Server | undefined;
  let port = options.port ?? 0;

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const o = state.options;
    const service = url.searchParams.get('service') ?? '';
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s.length > 0);
    const record: TokenRequestRecord = { scope: scopes.join(' '), service, authorized: false, status: 200 };
    requests.push(record);
    const reply = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
      record.status = status;
      // No keep-alive: a client never holds a socket that restart() would cut.
      res.writeHead(status, { 'content-type': 'application/json', connection: 'close', ...headers });
      res.end(JSON.stringify(body));
    };
    if (req.method !== 'GET' || url.pathname !== '/token') {
      reply(404, { errors: [{ code: 'NOT_FOUND', message: 'only GET /token' }] });
      return;
    }
    const creds = parseBasic(req);
    const needCreds = o.verifyCredentials !== undefined || (o.username !== undefined && o.password !== undefined);
    if (creds) record.user = creds.user;
    const valid = (c: { user: string; password: string }): boolean =>
      o.verifyCredentials ? o.verifyCredentials(c.user, c.password) : same(c.user, o.username ?? '') && same(c.password, o.password ?? '');
    if (needCreds && creds && !valid(creds)) {
      reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }, { 'www-authenticate': 'Basic realm="token"' });
      return;
    }
    record.authorized = !needCreds || creds !== undefined;
    const anonymous = o.anonymous ?? 'empty';
    if (!record.authorized && anonymous === 'reject') {
      reply(401, { errors: [{ code: 'UNAUTHORIZED', message: 'credentials required' }] }, { 'www-authenticate': 'Basic realm="token"' });
      return;
    }
    const access: Access[] = [];
    for (const s of scopes) {
      const a = parseScope(s);
      if (!a) continue;
      if (!record.authorized) a.actions = anonymous === 'pull' ? a.actions.filter((x) => x === 'pull') : [];
      else if (creds && o.mayRead && !o.mayRead(creds.user, a.name)) a.actions = [];
      if (a.actions.length > 0) access.push(a);
    }
    const now = Math.floor(Date.now() / 1000);
    const expiresIn = o.expiresIn ?? 300;
    const token = signJwt(o.key, o.keyHeader ?? 'x5c', {
      iss: o.issuer,
      sub: record.user ?? '',
      aud: service,
      exp: now + expiresIn,
      nbf: now - 1,
      iat: now,
      jti: `${SECRETS.registryTokenMark}.${randomUUID()}`, // a leaked token is found by its mark
      access,
    });
    record.token = token;
    reply(200, { token, access_token: token, expires_in: expiresIn, issued_at: new Date(now * 1000).toISOString() });
  };

  const listen = (): Promise<void> =>
    new Promise((resolve, reject) => {
      const srv = createServer(handle);
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', () => {
        const addr = srv.address();
        if (typeof addr === 'object' && addr !== null) port = addr.port;
        server = srv;
        resolve();
      });
    });

  const close = (): Promise<void> =>
    new Promise((resolve) => {
      const srv = server;
      server = undefined;
      if (!srv) return resolve();
      srv.close(() => resolve());
      srv.closeAllConnections();
    });

  await listen();
  const state: TokenServer = {
    realm: `http://127.0.0.1:${port}/token`,
    port,
    service: options.service,
    issuer: options.issuer,
    requests,
    options,
    restart: async () => {
      await close();
      await listen();
    },
    close,
  };
  return state;
}
