// A stand-in for the ECR (and ECR Public) API on 127.0.0.1, answering GetAuthorizationToken in the
// AWS JSON 1.1 protocol the real SDK speaks. It verifies the SigV4 signature of every call against
// the configured secret key (so a test proves the SDK signed with it, and that the secret itself
// never travelled), and hands out `base64("AWS:" + password)` tokens.
import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const ECR_TARGET = 'AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken';
export const ECR_PUBLIC_TARGET = 'SpencerFrontendService.GetAuthorizationToken';

export interface EcrStandInOptions {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** the password handed out; change it to simulate a rotated or refused credential */
  password: string;
  /** handed out (and removed) before `password`, one per call: e.g. a stale password first */
  nextPasswords?: string[];
  /** token lifetime in ms (default 12 h, as ECR) */
  lifetimeMs?: number;
  /** ms clock for expiresAt (default Date.now) */
  now?: () => number;
  /** answer every call with this AWS error instead */
  error?: { type: string; message: string; status?: number };
}

export interface EcrCall {
  /** X-Amz-Target */
  target: string;
  /** from the credential scope: 'ecr' or 'ecr-public' */
  service: string;
  region: string;
  accessKeyId: string;
  /** the SigV4 signature matched one computed with the secret key */
  signatureValid: boolean;
  status: number;
  /** every request header, for leak checks */
  rawHeaders: string;
  body: string;
}

export interface EcrStandIn {
  /** http://127.0.0.1:PORT, the endpoint override */
  url: string;
  calls: EcrCall[];
  /** mutable */
  options: EcrStandInOptions;
  /** the authorizationToken values handed out */
  issued: string[];
  close(): Promise<void>;
}

const sha256hex = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
const hmac = (key: Buffer | string, data: string): Buffer => createHmac('sha256', key).update(data).digest();

function headerValue(req: IncomingMessage, name: string): string {
  const v = req.headers[name];
  return (Array.isArray(v) ? v.join(',') : (v ?? '')).trim().replace(/\s+/g, ' ');
}

/** Recomputes the SigV4 signature of `req` (AWS4-HMAC-SHA256, header-signed). */
function sigv4Valid(req: IncomingMessage, body: Buffer, secret: string, auth: RegExpExecArray): boolean {
  const [, , date, region, service, signedHeaders, signature] = auth as unknown as string[];
  const amzDate = headerValue(req, 'x-amz-date');
  if (!amzDate.startsWith(date!)) return false;
  const url = new URL(req.url ?? '/', 'http://x');
  const query = [...url.searchParams].map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).sort().join('&');
  const names = signedHeaders!.split(';');
  const canonical = [
    req.method ?? 'POST',
    url.pathname,
    query,
    names.map((n) => `${n}:${headerValue(req, n)}\n`).join(''),
    signedHeaders,
    sha256hex(body),
  ].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonical)].join('\n');
  const key = hmac(hmac(hmac(hmac(`AWS4${secret}`, date!), region!), service!), 'aws4_request');
  const expected = hmac(key, toSign).toString('hex');
  return expected.length === signature!.length && timingSafeEqual(Buffer.from(expected), Buffer.from(signature!));
}

const AUTH = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

export async function startEcrStandIn(options: EcrStandInOptions): Promise<EcrStandIn> {
  const calls: EcrCall[] = [];
  const issued: string[] = [];

  const handle = (req: IncomingMessage, res: ServerResponse, body: Buffer): void => {
    const o = state.options;
    const target = headerValue(req, 'x-amz-target');
    const auth = AUTH.exec(headerValue(req, 'authorization'));
    const call: EcrCall = {
      target,
      service: auth?.[4] ?? '',
      region: auth?.[3] ?? '',
      accessKeyId: auth?.[1] ?? '',
      signatureValid: false,
      status: 200,
      rawHeaders: req.rawHeaders.join('\n'),
      body: body.toString('utf8'),
    };
    calls.push(call);
    const reply = (status: number, payload: unknown, headers: Record<string, string> = {}): void => {
      call.status = status;
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomUUID(), ...headers });
      res.end(JSON.stringify(payload));
    };
    const fail = (type: string, message: string, status = 400): void => reply(status, { __type: type, message }, { 'x-amzn-errortype': type });
    if (req.method !== 'POST' || new URL(req.url ?? '/', 'http://x').pathname !== '/') return fail('UnknownOperationException', 'POST / only', 404);
    if (!auth) return fail('MissingAuthenticationTokenException', 'Missing Authentication Token', 403);
    if (auth[1] !== o.accessKeyId) return fail('UnrecognizedClientException', 'The security token included in the request is invalid.');
    if (o.sessionToken !== undefined && headerValue(req, 'x-amz-security-token') !== o.sessionToken) {
      return fail('UnrecognizedClientException', 'The security token included in the request is invalid.');
    }
    call.signatureValid = sigv4Valid(req, body, o.secretAccessKey, auth);
    if (!call.signatureValid) {
      return fail('InvalidSignatureException', 'The request signature we calculated does not match the signature you provided.');
    }
    const isPublic = target === ECR_PUBLIC_TARGET;
    if (target !== ECR_TARGET && !isPublic) return fail('UnknownOperationException', `unknown target ${target}`);
    if (auth[4] !== (isPublic ? 'ecr-public' : 'ecr')) return fail('InvalidSignatureException', 'Credential should be scoped to correct service.');
    if (o.error) return fail(o.error.type, o.error.message, o.error.status ?? 400);
    const token = Buffer.from(`AWS:${o.nextPasswords?.shift() ?? o.password}`).toString('base64');
    issued.push(token);
    const expiresAt = ((o.now ?? Date.now)() + (o.lifetimeMs ?? 12 * 3600_000)) / 1000;
    const data = { authorizationToken: token, expiresAt };
    reply(200, isPublic ? { authorizationData: data } : { authorizationData: [{ ...data, proxyEndpoint: 'https://123456789012.dkr.ecr.us-east-1.amazonaws.com' }] });
  };

  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= 1 << 20) chunks.push(c);
    });
    req.on('end', () => handle(req, res, Buffer.concat(chunks)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  const state: EcrStandIn = {
    url: `http://127.0.0.1:${port}`,
    calls,
    options,
    issued,
    close: () =>
      (closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      })),
  };
  return state;
}
