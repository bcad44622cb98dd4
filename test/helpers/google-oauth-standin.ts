// A stand-in for Google's OAuth2 token endpoint on 127.0.0.1. It writes a service-account key
// JSON (the RSA key from secrets.ts) naming this server as token_uri, accepts the JWT-bearer grant
// google-auth-library posts, verifies the assertion's RS256 signature against the key's public
// half and its claims, and issues opaque access tokens (marked, see secrets.ts) it can revoke.
import { createPublicKey, randomBytes, verify, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SECRETS } from './secrets.js';

export const JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const CLOUD_PLATFORM = 'https://www.googleapis.com/auth/cloud-platform';

export interface OAuthRequest {
  grantType: string;
  /** the assertion's signature verified against the service account's public key */
  signatureValid: boolean;
  iss?: string | undefined;
  aud?: string | undefined;
  scope?: string | undefined;
  status: number;
  /** the form body as received (for leak checks: it must never hold the private key) */
  body: string;
}

export interface GoogleOAuthOptions {
  /** access token lifetime in seconds (default 3600, as Google) */
  expiresIn: number;
  /** refuse every grant with this OAuth error */
  refuse?: { error: string; description: string; status?: number } | undefined;
}

export interface GoogleOAuth {
  /** the token_uri */
  url: string;
  clientEmail: string;
  /** the key file's JSON text, token_uri pointing here */
  serviceAccountJson: string;
  /** the PEM private key (a secret tests grep for) */
  privateKeyPem: string;
  /** the same account with a key Google does not know (signature check fails) */
  unknownKeyJson: string;
  requests: OAuthRequest[];
  /** access tokens issued, oldest first */
  issued: string[];
  options: GoogleOAuthOptions;
  /** true for an issued, unrevoked access token */
  isValid(accessToken: string): boolean;
  revoke(accessToken: string): void;
  close(): Promise<void>;
}

function keyJson(email: string, privateKeyPem: string, tokenUri: string): string {
  return JSON.stringify({
    type: 'service_account',
    project_id: 'pullthrough-test',
    private_key_id: randomBytes(20).toString('hex'),
    private_key: `${privateKeyPem}\n`,
    client_email: email,
    client_id: '100000000000000000001',
    auth_uri: 'https://accounts.google.com/o/oauth2/auth',
    token_uri: tokenUri,
  });
}

function decodeJwt(jwt: string, publicKey: KeyObject): { valid: boolean; claims: Record<string, unknown> } {
  const parts = jwt.split('.');
  if (parts.length !== 3) return { valid: false, claims: {} };
  const [head, payload, sig] = parts as [string, string, string];
  let header: Record<string, unknown>;
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(Buffer.from(head, 'base64url').toString('utf8')) as Record<string, unknown>;
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    return { valid: false, claims: {} };
  }
  const valid = header['alg'] === 'RS256' && verify('sha256', Buffer.from(`${head}.${payload}`), publicKey, Buffer.from(sig, 'base64url'));
  return { valid, claims };
}

export async function startGoogleOAuth(opts: Partial<GoogleOAuthOptions> = {}): Promise<GoogleOAuth> {
  const publicKey = createPublicKey(SECRETS.googlePrivateKey);
  const clientEmail = 'puller@pullthrough-test.iam.gserviceaccount.com';
  const requests: OAuthRequest[] = [];
  const issued: string[] = [];
  const valid = new Set<string>();

  const handle = (req: IncomingMessage, res: ServerResponse, body: string): void => {
    const form = new URLSearchParams(body);
    const record: OAuthRequest = { grantType: form.get('grant_type') ?? '', signatureValid: false, status: 200, body };
    requests.push(record);
    const reply = (status: number, payload: unknown): void => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
      res.end(JSON.stringify(payload));
    };
    if (req.method !== 'POST' || new URL(req.url ?? '/', 'http://x').pathname !== '/token') return reply(404, { error: 'not_found' });
    if (record.grantType !== JWT_BEARER) return reply(400, { error: 'unsupported_grant_type', error_description: 'Invalid grant_type' });
    const { valid: signatureValid, claims } = decodeJwt(form.get('assertion') ?? '', publicKey);
    record.signatureValid = signatureValid;
    record.iss = typeof claims['iss'] === 'string' ? claims['iss'] : undefined;
    record.aud = typeof claims['aud'] === 'string' ? claims['aud'] : undefined;
    record.scope = typeof claims['scope'] === 'string' ? claims['scope'] : undefined;
    if (!signatureValid) return reply(400, { error: 'invalid_grant', error_description: 'Invalid JWT Signature.' });
    const now = Math.floor(Date.now() / 1000);
    const exp = typeof claims['exp'] === 'number' ? claims['exp'] : 0;
    const iat = typeof claims['iat'] === 'number' ? claims['iat'] : Infinity;
    if (record.iss !== clientEmail) return reply(400, { error: 'invalid_grant', error_description: 'Invalid issuer.' });
    if (record.aud !== 'https://oauth2.googleapis.com/token' && record.aud !== state.url) {
      return reply(400, { error: 'invalid_grant', error_description: 'Invalid JWT: audience' });
    }
    if (exp <= now || iat > now + 60 || exp - iat > 3600) return reply(400, { error: 'invalid_grant', error_description: 'Invalid JWT: Token must be a short-lived token' });
    if (!record.scope?.split(' ').includes(CLOUD_PLATFORM)) return reply(400, { error: 'invalid_scope', error_description: 'scope missing' });
    const refuse = state.options.refuse;
    if (refuse) return reply(refuse.status ?? 400, { error: refuse.error, error_description: refuse.description });
    const token = `ya29.${SECRETS.googleAccessTokenMark}-${randomBytes(12).toString('base64url')}`;
    issued.push(token);
    valid.add(token);
    reply(200, { access_token: token, expires_in: state.options.expiresIn, token_type: 'Bearer' });
  };

  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => {
      if (body.length < 1 << 20) body += c;
    });
    req.on('end', () => handle(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}/token`;
  let closed: Promise<void> | undefined;
  const state: GoogleOAuth = {
    url,
    clientEmail,
    serviceAccountJson: keyJson(clientEmail, SECRETS.googlePrivateKey, url),
    privateKeyPem: SECRETS.googlePrivateKey,
    unknownKeyJson: keyJson(clientEmail, SECRETS.googleUnknownPrivateKey, url),
    requests,
    issued,
    options: { expiresIn: opts.expiresIn ?? 3600, refuse: opts.refuse },
    isValid: (t) => valid.has(t),
    revoke: (t) => void valid.delete(t),
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
  return state;
}
