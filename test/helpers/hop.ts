// A transparent HTTP forwarding hop between a client and a registry. It logs
// every request and can inject faults, so tests can count upstream traffic
// and simulate a misbehaving upstream.
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export interface HopLogEntry {
  method: string;
  /** Path plus query string, as received. */
  path: string;
  /** Status sent to the client; 0 while pending or when the connection was dropped. */
  status: number;
  /** Response body bytes sent to the client. */
  bytes: number;
}

export interface HopFaults {
  /** Answer every request with this status (e.g. 503) without forwarding. */
  status?: number;
  /** Retry-After header value sent with a forced `status`. */
  retryAfter?: string;
  /** Destroy every connection immediately, as if the upstream were unreachable. */
  down: boolean;
  /** On blob GETs, cut the connection after this many body bytes. */
  resetAfterBytes?: number;
  /** Wait this long before forwarding each request. */
  delayMs?: number;
  /** The faults above apply only to this many more requests (then they stop); unlimited when unset. */
  times?: number;
}

export interface HopCountFilter {
  method?: string;
  pathIncludes?: string | RegExp;
  status?: number;
}

export interface Hop {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  host: string;
  port: number;
  target: string;
  log: HopLogEntry[];
  /** Mutable: change at any time to inject faults into subsequent requests. */
  faults: HopFaults;
  count(filter?: HopCountFilter): number;
  /** Clears the log and all faults. */
  reset(): void;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer', 'expect']);
const BLOB_PATH = /\/blobs\/[a-z0-9]+:[a-f0-9]+/;

function endToEnd(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !HOP_BY_HOP.has(k.toLowerCase())));
}

export function startHop(target: string): Promise<Hop> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  const log: HopLogEntry[] = [];
  const faults: HopFaults = { down: false };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const entry: HopLogEntry = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, bytes: 0 };
    log.push(entry);
    let f: HopFaults = { ...faults };
    if (faults.times !== undefined) {
      if (faults.times > 0) faults.times--;
      else f = { down: false };
    }
    if (f.down) {
      req.socket.destroy();
      return;
    }
    if (f.status !== undefined) {
      entry.status = f.status;
      const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected by hop' }] });
      res.writeHead(f.status, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
        ...(f.retryAfter !== undefined ? { 'retry-after': f.retryAfter } : {}),
      });
      res.end(req.method === 'HEAD' ? undefined : body);
      req.resume();
      return;
    }
    const forward = (): void => {
      const up = httpRequest(
        {
          agent,
          protocol: upstream.protocol,
          hostname: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: endToEnd(req.headers), // Host and Authorization pass through unchanged
        },
        (upRes) => {
          entry.status = upRes.statusCode ?? 502;
          res.writeHead(entry.status, upRes.statusMessage, endToEnd(upRes.headers));
          const limit = req.method === 'GET' && BLOB_PATH.test(entry.path) ? f.resetAfterBytes : undefined;
          upRes.on('data', (chunk: Buffer) => {
            if (limit !== undefined && entry.bytes + chunk.length > limit) {
              const part = chunk.subarray(0, Math.max(0, limit - entry.bytes));
              entry.bytes += part.length;
              res.flushHeaders();
              if (part.length > 0) res.write(part);
              res.socket?.end(); // FIN right after exactly `limit` body bytes
              upRes.destroy();
              return;
            }
            entry.bytes += chunk.length;
            if (!res.write(chunk)) upRes.pause();
          });
          res.on('drain', () => upRes.resume());
          upRes.on('end', () => res.end());
          upRes.on('error', () => res.destroy());
        },
      );
      up.on('error', () => {
        if (res.headersSent) {
          res.destroy();
        } else {
          entry.status = 502;
          res.writeHead(502, { 'content-type': 'text/plain' }).end('hop: upstream unreachable');
        }
      });
      res.on('close', () => {
        if (!res.writableFinished) up.destroy();
      });
      req.pipe(up);
    };
    if (f.delayMs) setTimeout(forward, f.delayMs);
    else forward();
  };

  const server = createServer(handle);
  server.on('connection', (socket: Socket) => {
    if (faults.down && faults.times === undefined) socket.destroy();
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      let closed: Promise<void> | undefined;
      resolve({
        url: `http://127.0.0.1:${port}`,
        host: `127.0.0.1:${port}`,
        port,
        target,
        log,
        faults,
        count: (filter = {}) =>
          log.filter(
            (e) =>
              (filter.method === undefined || e.method === filter.method.toUpperCase()) &&
              (filter.status === undefined || e.status === filter.status) &&
              (filter.pathIncludes === undefined ||
                (typeof filter.pathIncludes === 'string'
                  ? e.path.includes(filter.pathIncludes)
                  : filter.pathIncludes.test(e.path))),
          ).length,
        reset: () => {
          log.length = 0;
          for (const k of Object.keys(faults)) Reflect.deleteProperty(faults, k);
          faults.down = false;
        },
        close: () =>
          (closed ??= new Promise<void>((done) => {
            server.close(() => done());
            for (const s of sockets) s.destroy();
            agent.destroy();
          })),
      });
    });
  });
}
