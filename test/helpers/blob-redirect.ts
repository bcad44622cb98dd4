// A registry front that answers blob GETs the way hosted registries do: the registry behind it
// checks authorization, and instead of the bytes the client gets a 307 to a signed URL on a
// separate blob server. 'ecr' style: S3 pre-signed query strings; 'ghcr' style: short-lived
// signed URLs. The blob server refuses any request carrying Authorization (400, as S3 does) and
// answers 403 to an expired or forged signature. Everything else passes through to the registry.
import { createHmac, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type RedirectStyle = 'ecr' | 'ghcr';

export interface BlobHit {
  path: string;
  authorization: boolean;
  range: string | undefined;
  status: number;
  /** every header line, for leak checks */
  rawHeaders: string;
}

export interface RedirectFrontOptions {
  /** the registry behind the front */
  target: string;
  style: RedirectStyle;
  /** where the blob server reads a blob's bytes, by sha256 hex */
  blobFile: (hex: string) => string | undefined;
  /** hand out an already-expired URL for the first redirect of each blob (mutable) */
  expireFirst?: boolean;
  /** lifetime of signed URLs in seconds (default 300) */
  ttlSeconds?: number;
}

export interface RedirectFront {
  /** the registry URL clients use */
  url: string;
  blobUrl: string;
  blobHits: BlobHit[];
  /** 307s handed out */
  redirects: number;
  options: RedirectFrontOptions;
  close(): Promise<void>;
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)));
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

export async function startRedirectFront(options: RedirectFrontOptions): Promise<RedirectFront> {
  const key = randomBytes(32);
  const sign = (path: string, expires: number): string => createHmac('sha256', key).update(`${path}\n${expires}`).digest('hex');
  const blobHits: BlobHit[] = [];
  const seen = new Set<string>();

  const blobServer = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const hit: BlobHit = { path: url.pathname, authorization: req.headers.authorization !== undefined, range: req.headers.range, status: 0, rawHeaders: req.rawHeaders.join('\n') };
    blobHits.push(hit);
    const end = (status: number, body: string): void => {
      hit.status = status;
      res.writeHead(status, { 'content-type': 'application/xml' }).end(body);
    };
    if (hit.authorization) return end(400, '<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>');
    const ecr = options.style === 'ecr';
    const expires = Number(url.searchParams.get(ecr ? 'X-Amz-Expires-At' : 'se'));
    const sig = url.searchParams.get(ecr ? 'X-Amz-Signature' : 'sig');
    if (!sig || sig !== sign(url.pathname, expires)) return end(403, '<Error><Code>SignatureDoesNotMatch</Code></Error>');
    if (Date.now() / 1000 > expires) return end(403, '<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
    const hex = /([a-f0-9]{64})$/.exec(url.pathname)?.[1];
    const file = hex ? options.blobFile(hex) : undefined;
    if (!file) return end(404, '<Error><Code>NoSuchKey</Code></Error>');
    stat(file).then(
      (s) => {
        const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
        if (m) {
          const start = Number(m[1]);
          const last = m[2] ? Math.min(Number(m[2]), s.size - 1) : s.size - 1;
          if (start > last) return end(416, '<Error><Code>InvalidRange</Code></Error>');
          hit.status = 206;
          res.writeHead(206, { 'content-length': last - start + 1, 'content-range': `bytes ${start}-${last}/${s.size}`, 'content-type': 'application/octet-stream' });
          createReadStream(file, { start, end: last }).pipe(res);
          return;
        }
        hit.status = 200;
        res.writeHead(200, { 'content-length': s.size, 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' });
        createReadStream(file).pipe(res);
      },
      () => end(404, '<Error><Code>NoSuchKey</Code></Error>'),
    );
  });
  const blobUrl = await listen(blobServer);

  const signedUrl = (hex: string): string => {
    const first = !seen.has(hex);
    seen.add(hex);
    const ttl = options.ttlSeconds ?? 300;
    const expires = Math.floor(Date.now() / 1000) + (first && options.expireFirst ? -60 : ttl);
    if (options.style === 'ecr') {
      const path = `/prod-us-east-1-starport-layer-bucket/test/sha256/${hex}`;
      const q = new URLSearchParams({
        'X-Amz-Algorithm': 'AWS4-HMAC-SHA256',
        'X-Amz-Credential': 'ASIATESTSTORAGE/20240101/us-east-1/s3/aws4_request',
        'X-Amz-Expires-At': String(expires),
        'X-Amz-SignedHeaders': 'host',
        'X-Amz-Signature': sign(path, expires),
      });
      return `${blobUrl}${path}?${q}`;
    }
    const path = `/ghcr1/blobs/sha256/${hex}`;
    return `${blobUrl}${path}?${new URLSearchParams({ se: String(expires), sp: 'r', sig: sign(path, expires) })}`;
  };

  const relay = (req: IncomingMessage, res: ServerResponse, onResponse?: (up: IncomingMessage) => boolean): void => {
    const up = httpRequest(`${options.target}${req.url}`, { method: req.method, headers: req.headers }, (upRes) => {
      if (onResponse?.(upRes)) return;
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  };

  const front = createServer((req, res) => {
    const blob = /\/blobs\/sha256:([a-f0-9]{64})$/.exec(new URL(req.url ?? '/', 'http://x').pathname);
    if (!blob || req.method !== 'GET') return relay(req, res);
    // the registry decides whether the caller may have the blob; a 200 becomes a redirect
    relay(req, res, (upRes) => {
      if (upRes.statusCode !== 200 && upRes.statusCode !== 206) return false;
      upRes.destroy();
      state.redirects++;
      res.writeHead(307, { location: signedUrl(blob[1]!), 'content-length': 0 }).end();
      return true;
    });
  });
  const url = await listen(front);
  let closed: Promise<void> | undefined;
  const state: RedirectFront = {
    url,
    blobUrl,
    blobHits,
    redirects: 0,
    options,
    close: () => (closed ??= Promise.all([closeServer(front), closeServer(blobServer)]).then(() => undefined)),
  };
  return state;
}
