// A token endpoint (the `realm` of a Bearer challenge) that lies on purpose: a body too big to
// hold, a body that is not JSON, a redirect elsewhere, no answer at all. `behave` switches what it
// does for the next requests; every request is logged (with its Authorization header, so tests can
// check where credentials went). Pair it with test/helpers/hostile-registry.ts, whose `custom`
// misbehaviour answers 401 with `Bearer realm="<this url>/token"`.
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type TokenBehaviour =
  /** the honest answer: `{"token": ..., "expires_in": ...}` */
  | { kind: 'token'; token: string; expiresIn?: number }
  /** 200 with a JSON-looking body of this many bytes (announced), streamed as it is read */
  | { kind: 'huge'; bytes: number }
  /** 200, application/json, but the body is HTML */
  | { kind: 'nonJson' }
  /** a redirect to this URL */
  | { kind: 'redirect'; location: string; status?: number }
  /** the request is read and never answered */
  | { kind: 'stall' }
  /** the headers of a 200 are sent, then nothing */
  | { kind: 'stallBody' };

export interface TokenRequest {
  path: string;
  authorization: string | undefined;
}

export interface HostileToken {
  /** http://127.0.0.1:PORT */
  url: string;
  /** `${url}/token`, for a challenge's realm */
  realm: string;
  log: TokenRequest[];
  /** body bytes written by `huge` answers, in total */
  hugeBytesSent: number;
  behave(b: TokenBehaviour): void;
  close(): Promise<void>;
}

const CHUNK = Buffer.alloc(64 * 1024, 0x20); // JSON whitespace

/** Writes `total` bytes (`{"token":"x"` + spaces), honouring back-pressure, until done or closed. */
function stream(res: ServerResponse, total: number, sent: (n: number) => void): void {
  const head = Buffer.from('{"token":"x",');
  res.write(head);
  sent(head.length);
  let left = total - head.length;
  const pump = (): void => {
    while (left > 0 && !res.destroyed) {
      const part = left >= CHUNK.length ? CHUNK : CHUNK.subarray(0, left);
      left -= part.length;
      sent(part.length);
      if (!res.write(part)) {
        res.once('drain', pump);
        return;
      }
    }
    if (left <= 0) res.end();
  };
  pump();
}

export async function startHostileToken(initial: TokenBehaviour = { kind: 'token', token: 'good-token' }): Promise<HostileToken> {
  let behaviour = initial;
  const log: TokenRequest[] = [];
  const self: HostileToken = {
    url: '',
    realm: '',
    log,
    hugeBytesSent: 0,
    behave(b) {
      behaviour = b;
    },
    close: async () => undefined,
  };
  const server = createServer((req, res) => {
    log.push({ path: req.url ?? '', authorization: req.headers.authorization });
    res.on('error', () => undefined);
    const b = behaviour;
    switch (b.kind) {
      case 'token':
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: b.token, expires_in: b.expiresIn ?? 300 }));
        return;
      case 'huge':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(b.bytes) });
        stream(res, b.bytes, (n) => void (self.hugeBytesSent += n));
        return;
      case 'nonJson':
        res.writeHead(200, { 'content-type': 'application/json' }).end('<html><body>Sign in to continue</body></html>');
        return;
      case 'redirect':
        res.writeHead(b.status ?? 302, { location: b.location }).end();
        return;
      case 'stall':
        return;
      case 'stallBody':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '1000' });
        res.flushHeaders();
        return;
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  self.url = `http://127.0.0.1:${port}`;
  self.realm = `${self.url}/token`;
  self.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return self;
}
