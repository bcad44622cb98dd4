// Each request's completion line, and the same facts for the metrics, gathered at the edge: the
// route kind and upstream (set by the routes once they know them), what the cache did (from what
// the core returned, see core/served.ts), the status, the body bytes written and the time taken.
// Upstream calls made for a request are logged with that request's id.
import { AsyncLocalStorage } from 'node:async_hooks';
import type { ServerResponse } from 'node:http';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import type { Served } from '../core/served.js';
import type { Logger } from '../lib/log.js';
import type { UpstreamObserver } from '../upstreams/index.js';
import type { UpstreamBytes, UpstreamCall } from '../upstreams/registry-client.js';

export type RouteKind = 'base' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'files' | 'metrics' | 'health' | 'fleet' | 'other';

/** What the routes learn about a request while serving it. */
export interface Outcome {
  route: RouteKind;
  /** the upstream the request was routed to */
  upstream?: string | undefined;
  /** the repository on that upstream */
  repository?: string | undefined;
  /** what the cache did, for a manifest or blob it served */
  cache?: Served | undefined;
  /** the user name of the client's Basic credentials, when it sent some (never the password) */
  user?: string | undefined;
}

export interface CompletedRequest extends Outcome {
  method: string;
  /** without the query */
  path: string;
  /** as sent; 499 when the client left before any answer was sent (nginx's convention) */
  status: number;
  /** body bytes written to the client */
  bytes: number;
  ms: number;
  /** the client went away before the response ended */
  aborted: boolean;
}

/** nginx's "client closed request": the client left before the status was sent. */
const CLIENT_CLOSED = 499;

const outcomes = new WeakMap<FastifyRequest, Outcome>();

/**
 * The logger of the request being served, in whatever the core calls on its behalf. The core and
 * the upstream clients take no request, logger or id through their many signatures, and should
 * not: the id is a concern of the log line only, and threading it down would put an edge concern
 * in every layer. So the edge runs each request in an async context holding its logger, and an
 * upstream call (or a core log line) from inside it finds the request there. Work one request
 * starts and others join (a fill) stays in the context of the one that started it. The cost:
 * Node 20's AsyncLocalStorage tracks every promise (measured: some 5-10 µs of CPU on a warm 1 kB
 * blob GET that costs about 110 µs in all, client included; a noisy machine).
 */
const current = new AsyncLocalStorage<FastifyBaseLogger>();

/** The request's outcome record, for the routes to fill in. */
export function outcome(req: FastifyRequest): Outcome {
  let o = outcomes.get(req);
  if (!o) outcomes.set(req, (o = { route: 'other' }));
  return o;
}

/** The logger of the request this code runs for (its lines carry the reqId), if any. */
export function requestLogger(): FastifyBaseLogger | undefined {
  return current.getStore();
}

/**
 * Runs every request in its own async context, counts the body bytes written, and once the
 * response closed (sent, or the client gone) logs its completion line and hands it to `done`.
 * A 2xx outside /v2/ (scrapes of /metrics, health probes: every few seconds, saying nothing new)
 * is logged at debug level.
 */
export function trackRequests(app: FastifyInstance, done: (r: CompletedRequest) => void): void {
  app.addHook('onRequest', (req, reply, next) => {
    const t0 = performance.now();
    const res = reply.raw;
    const body = countBody(res);
    let finished = false;
    res.once('finish', () => (finished = true));
    res.once('close', () => {
      const o = outcome(req);
      const path = req.url.split('?', 1)[0]!.slice(0, 300);
      const r: CompletedRequest = {
        method: req.method,
        path,
        status: res.headersSent ? res.statusCode : CLIENT_CLOSED,
        bytes: body.bytes,
        ms: Math.round((performance.now() - t0) * 10) / 10,
        ...o,
        aborted: !finished,
      };
      const quiet = !path.startsWith('/v2/') && r.status < 300;
      req.log[quiet ? 'debug' : 'info'](r, 'request completed');
      done(r);
    });
    current.run(req.log, next);
  });
}

/**
 * Counts the body bytes a response writes. Node has no such count (the socket's includes headers
 * and every other response on the connection), so write() and end() are wrapped; inject()'s
 * response writes its end() chunk through write(), which must not count twice.
 */
function countBody(res: ServerResponse): { bytes: number } {
  const count = { bytes: 0 };
  let ending = false;
  const length = (chunk: unknown, encoding?: unknown): number => {
    if (typeof chunk === 'string') return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    return chunk instanceof Uint8Array ? chunk.byteLength : 0;
  };
  const write = res.write;
  const end = res.end;
  res.write = function (this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    if (!ending) count.bytes += length(chunk, rest[0]);
    return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as ServerResponse['write'];
  res.end = function (this: ServerResponse, chunk?: unknown, ...rest: unknown[]) {
    if (typeof chunk !== 'function') count.bytes += length(chunk, rest[0]);
    ending = true;
    return (end as (...a: unknown[]) => ServerResponse).call(this, chunk, ...rest);
  } as ServerResponse['end'];
  return count;
}

/** Where upstream traffic is counted (Metrics). */
export interface UpstreamMeter {
  upstreamCall(e: UpstreamCall): void;
  upstreamBytes(e: UpstreamBytes): void;
}

/**
 * What an upstream client reports, as log lines under the request the call was made for (else
 * under `fallback`, for work no request waits on) and as metrics.
 */
export function upstreamObserver(metrics: UpstreamMeter | undefined, fallback: () => Logger | undefined): UpstreamObserver {
  return {
    onResponse: (e) => {
      (requestLogger() ?? fallback())?.info(e, 'upstream');
      metrics?.upstreamCall(e);
    },
    onBytes: metrics && ((e) => metrics.upstreamBytes(e)),
  };
}
