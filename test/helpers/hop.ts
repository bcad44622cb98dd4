// A transparent HTTP forwarding hop between a client and a registry. It logs
// every request and can inject faults, so tests can count upstream traffic
// and simulate a misbehaving upstream.
import { Agent, createServer, request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** Something the hop did to a request instead of (or besides) forwarding it faithfully. */
export type Injected = 'down' | 'status' | 'delay' | 'throttle' | 'headers' | 'reset' | 'corrupt' | 'stall';

export interface HopLogEntry {
  method: string;
  /** Path plus query string, as received. */
  path: string;
  /** Status sent to the client; 0 while pending or when the connection was dropped. */
  status: number;
  /** Response body bytes sent to the client so far (grows while the body streams). */
  bytes: number;
  /** The request's Range header, when it had one (e.g. a resume after a reset). */
  range?: string | undefined;
  /** The faults that took effect on this request, when any did. */
  injected?: Injected[] | undefined;
  /** The scheme of the request's Authorization header (`basic`, `bearer`), when it had one; never its value. */
  authScheme?: string | undefined;
}

/** Which requests faults apply to; every given field must match. */
export interface HopMatch {
  method?: string;
  pathIncludes?: string | RegExp;
  /** true: only requests with a Range header; false: only requests without one. */
  ranged?: boolean;
}

export interface HopFaults {
  /** Answer every request with this status (e.g. 503) without forwarding. */
  status?: number;
  /** Retry-After header value sent with a forced `status`. */
  retryAfter?: string;
  /** Destroy every connection immediately, as if the upstream were unreachable. */
  down: boolean;
  /** On blob GETs, reset the connection (TCP RST) after this many body bytes of each response. */
  resetAfterBytes?: number;
  /** On blob GETs, go silent after this many body bytes of each response, keeping the connection open. */
  stallAfterBytes?: number;
  /**
   * On blob GETs, flip (XOR 0xff) the byte at this offset of each response body. The offset
   * counts from the first byte of the response body, not of the blob: in a 206 response for
   * `bytes=S-` it hits blob offset S + corruptAt. Headers (Content-Length, digest) are unchanged.
   */
  corruptAt?: number;
  /** Pace every response body to about this many bytes per second. */
  throttleBytesPerSec?: number;
  /** Added to every response the hop sends (forwarded ones and forced `status` ones). */
  headers?: Record<string, string>;
  /** Wait this long before forwarding each request (cancelled if the client goes away). */
  delayMs?: number;
  /** The faults apply only to requests matching this; others are forwarded untouched. */
  only?: HopMatch;
  /**
   * The faults apply only to this many more (matching) requests, then they stop; unlimited when
   * unset. Faults are decided when a request arrives, so with `times: 1` and `resetAfterBytes`
   * the first blob GET is cut and its ranged resume goes through clean.
   */
  times?: number;
}

export interface HopCountFilter extends HopMatch {
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
  /** Mutable (use Object.assign, never replace it): applies to subsequent requests. */
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

function matches(m: HopCountFilter, e: HopLogEntry): boolean {
  return (
    (m.method === undefined || e.method === m.method.toUpperCase()) &&
    (m.status === undefined || e.status === m.status) &&
    (m.ranged === undefined || (e.range !== undefined) === m.ranged) &&
    (m.pathIncludes === undefined ||
      (typeof m.pathIncludes === 'string' ? e.path.includes(m.pathIncludes) : m.pathIncludes.test(e.path)))
  );
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Resolves when `res` can take more data, or is gone. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** The faults for one request: a snapshot taken when it arrives, consuming one of `times`. */
function planFor(faults: HopFaults, entry: HopLogEntry): HopFaults {
  if (faults.only && !matches(faults.only, entry)) return { down: false };
  if (faults.times === undefined) return { ...faults };
  if (faults.times <= 0) return { down: false };
  faults.times--;
  return { ...faults };
}

/**
 * Copies a response body to the client, applying the body faults: corruption, a reset after N
 * bytes, pacing. Honours backpressure and stops when the client goes away.
 */
async function relayBody(upRes: IncomingMessage, res: ServerResponse, entry: HopLogEntry, f: HopFaults, isBlobGet: boolean): Promise<void> {
  const note = (what: Injected): void => {
    if (!entry.injected?.includes(what)) (entry.injected ??= []).push(what);
  };
  const resetAt = isBlobGet ? f.resetAfterBytes : undefined;
  const stallAt = isBlobGet ? f.stallAfterBytes : undefined;
  const corruptAt = isBlobGet ? f.corruptAt : undefined;
  const rate = f.throttleBytesPerSec;
  // throttled bodies go out in slices of ~20 ms worth, so pacing is smooth and bytes stay current
  const slice = rate ? Math.max(4096, Math.floor(rate / 50)) : Infinity;
  const t0 = Date.now();
  try {
    for await (const received of upRes as AsyncIterable<Buffer>) {
      let chunk = received;
      if (corruptAt !== undefined && corruptAt >= entry.bytes && corruptAt < entry.bytes + chunk.length) {
        chunk = Buffer.from(chunk);
        chunk[corruptAt - entry.bytes]! ^= 0xff;
        note('corrupt');
      }
      for (let off = 0; off < chunk.length; off += slice) {
        const piece = chunk.subarray(off, off + slice);
        if (resetAt !== undefined && entry.bytes + piece.length > resetAt) {
          const part = piece.subarray(0, Math.max(0, resetAt - entry.bytes));
          entry.bytes += part.length;
          res.flushHeaders();
          if (part.length > 0) res.write(part);
          res.socket?.resetAndDestroy(); // a TCP RST right after `resetAt` body bytes
          note('reset');
          upRes.destroy();
          return;
        }
        if (stallAt !== undefined && entry.bytes + piece.length > stallAt) {
          const part = piece.subarray(0, Math.max(0, stallAt - entry.bytes));
          entry.bytes += part.length;
          res.flushHeaders();
          if (part.length > 0) res.write(part);
          note('stall');
          upRes.destroy();
          return; // nothing more is sent; the connection stays open until the client gives up
        }
        if (rate) {
          const wait = t0 + ((entry.bytes + piece.length) / rate) * 1000 - Date.now();
          if (wait > 0) await sleep(wait);
          note('throttle');
        }
        if (res.destroyed) {
          upRes.destroy();
          return;
        }
        entry.bytes += piece.length;
        if (!res.write(piece)) await drained(res);
      }
    }
    res.end();
  } catch {
    res.destroy(); // the upstream broke off: break off too
  }
}

export function startHop(target: string): Promise<Hop> {
  const upstream = new URL(target);
  const agent = new Agent({ keepAlive: true });
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const log: HopLogEntry[] = [];
  const faults: HopFaults = { down: false };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const range = req.headers.range;
    const authScheme = req.headers.authorization?.split(' ')[0]?.toLowerCase();
    const entry: HopLogEntry = { method: req.method ?? 'GET', path: req.url ?? '/', status: 0, bytes: 0, range, injected: undefined, authScheme };
    log.push(entry);
    const f = planFor(faults, entry);
    if (f.down) {
      entry.injected = ['down'];
      req.socket.destroy();
      return;
    }
    if (f.headers) entry.injected = ['headers'];
    const extraHeaders = f.headers ?? {};
    if (f.status !== undefined) {
      entry.status = f.status;
      (entry.injected ??= []).push('status');
      const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: 'injected by hop' }] });
      res.writeHead(f.status, {
        ...extraHeaders,
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
          headers: endToEnd(req.headers), // Host, Authorization and Range pass through unchanged
        },
        (upRes) => {
          entry.status = upRes.statusCode ?? 502;
          res.writeHead(entry.status, upRes.statusMessage, { ...endToEnd(upRes.headers), ...extraHeaders });
          const isBlobGet = req.method === 'GET' && BLOB_PATH.test(entry.path);
          void relayBody(upRes, res, entry, f, isBlobGet);
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
    if (f.delayMs) {
      (entry.injected ??= []).push('delay');
      const timer = setTimeout(() => {
        timers.delete(timer);
        if (!res.destroyed) forward();
      }, f.delayMs);
      timers.add(timer);
      res.on('close', () => {
        clearTimeout(timer);
        timers.delete(timer);
      });
    } else {
      forward();
    }
  };

  const server = createServer(handle);
  server.on('connection', (socket: Socket) => {
    if (faults.down && faults.times === undefined && faults.only === undefined) socket.destroy();
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
        count: (filter = {}) => log.filter((e) => matches(filter, e)).length,
        reset: () => {
          log.length = 0;
          for (const k of Object.keys(faults)) Reflect.deleteProperty(faults, k);
          faults.down = false;
        },
        close: () =>
          (closed ??= new Promise<void>((done) => {
            for (const timer of timers) clearTimeout(timer);
            timers.clear();
            server.close(() => done());
            for (const s of sockets) s.destroy();
            agent.destroy();
          })),
      });
    });
  });
}
