// buildServer(deps): the Fastify instance, without listen(), so tests can inject() or listen on 0.
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { ServerOptions as HttpsOptions } from 'node:https';
import type { Duplex } from 'node:stream';
import Fastify, { LogController, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { bareErrorResponse, errorHandler } from './errors.js';
import type { PullThrough } from '../core/pull-through.js';
import { API_VERSION, registerRoutes } from './routes.js';
import type { Router } from '../core/routing.js';
import type { AccessPolicy } from '../access/policy.js';
import { registerMetrics, type Metrics } from './metrics.js';
import { trackRequests } from './request-log.js';
import { registerFleetRoutes } from './fleet-routes.js';

export interface ServerDeps {
  router: Router;
  cache: PullThrough;
  /** who may pull what (auth); absent: anyone may pull anything */
  access?: AccessPolicy | undefined;
  logger?: FastifyServerOptions['logger'];
  /** counts every request, and answers GET /metrics */
  metrics?: Metrics | undefined;
  /** HTTPS with these options (src/proxy/tls.ts); absent: plain HTTP */
  https?: HttpsOptions | undefined;
  /** in a fleet: the secret of the peer route (fleet-routes.ts); absent: no peer route */
  fleetSecret?: string | undefined;
}

/** What the request's URL looked like, for an error's detail (bounded: URLs can be long). */
const pathDetail = (req: FastifyRequest) => ({ path: req.url.slice(0, 300) });

/**
 * Errors Fastify finds before routing (a URL it cannot decode, a parameter over maxParamLength).
 * Hooks do not run for these, so the API-version header is set here.
 */
function frameworkError(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  reply.header('docker-distribution-api-version', API_VERSION);
  const message = BAD_URL_MESSAGES[err.code];
  errorHandler(message ? new RegistryError('NAME_INVALID', { message, detail: pathDetail(req) }) : err, req, reply);
}

const BAD_URL_MESSAGES: Record<string, string> = {
  FST_ERR_BAD_URL: 'malformed percent-encoding in the URL',
  FST_ERR_MAX_PARAM_LENGTH: 'a URL path component is too long',
};

/**
 * Requests Node's HTTP parser rejects (malformed, headers or URL over the size limit, too slow)
 * never become a request: the answer is written to the socket, then the socket is closed.
 */
function clientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] =
    err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'request URL or headers too large']
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request not received in time']
    : [400, 'malformed HTTP request'];
  if (socket.writable) socket.write(rawResponse(new RegistryError('UNSUPPORTED', { status, message })));
  socket.destroy(err);
}

/** CONNECT never reaches Fastify (Node hands over the socket, and closes it unanswered unless told otherwise). */
function connectRequest(req: IncomingMessage, socket: Duplex): void {
  socket.on('error', () => undefined);
  const e = new RegistryError('UNSUPPORTED', { message: 'CONNECT is not supported: this is a registry, not a forward proxy', detail: { method: req.method } });
  socket.end(rawResponse(e));
}

/** An Expect other than 100-continue: 417, as Node would answer it, but with the envelope. */
function unmetExpectation(req: IncomingMessage, res: ServerResponse): void {
  const expect = String(req.headers.expect ?? '').slice(0, 100);
  const e = new RegistryError('UNSUPPORTED', { status: 417, message: 'the Expect header asks for what this server does not do', detail: { expect } });
  const { status, headers, body } = bareErrorResponse(e, API_VERSION);
  res.writeHead(status, headers).end(req.method === 'HEAD' ? undefined : body);
}

function rawResponse(e: RegistryError): string {
  const { status, headers, body } = bareErrorResponse(e, API_VERSION);
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`);
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${lines.join('')}\r\n${body}`;
}

export function buildServer(deps: ServerDeps): FastifyInstance {
  // Fastify types an HTTPS instance apart from an HTTP one, but its requests and replies are the
  // same (IncomingMessage, ServerResponse), which is all the routes use
  const app = Fastify({
    ...(deps.https ? { https: deps.https } : {}),
    logger: deps.logger ?? false,
    routerOptions: { maxParamLength: 2048 },
    bodyLimit: 1 << 20,
    // Fastify's own 503 during shutdown has no OCI envelope: the onRequest hook below answers instead
    return503OnClosing: false,
    frameworkErrors: frameworkError,
    clientErrorHandler: clientError,
    // one completion line per request, with what the cache did (request-log.ts), instead of Fastify's two
    logController: new LogController({ disableRequestLogging: true }),
  }) as FastifyInstance;
  // first: every request, refused ones included, gets its completion line and its count
  trackRequests(app, (r) => deps.metrics?.request(r));
  let closing = false;
  // Fastify closes the connections that are idle when it starts closing; one whose response is
  // still finishing turns idle a moment later and would hold the close open until its keep-alive
  // timeout (72 s), so idle connections are swept until the server has closed
  let sweep: NodeJS.Timeout | undefined;
  app.addHook('preClose', async () => {
    closing = true;
    sweep = setInterval(() => app.server.closeIdleConnections(), 50).unref();
  });
  app.addHook('onClose', async () => clearInterval(sweep));
  app.addHook('onRequest', async (_req, reply) => {
    if (!closing) return;
    reply.header('connection', 'close');
    throw new RegistryError('UNAVAILABLE', { message: 'pullthrough is shutting down' });
  });
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('docker-distribution-api-version', API_VERSION);
    return payload;
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    errorHandler(new RegistryError('NAME_UNKNOWN', { message: 'unknown API path', detail: pathDetail(req) }), req, reply);
  });
  registerRoutes(app, deps);
  if (deps.fleetSecret) registerFleetRoutes(app, { cache: deps.cache, secret: deps.fleetSecret });
  if (deps.metrics) registerMetrics(app, deps.metrics);
  app.server.on('connect', connectRequest);
  app.server.on('checkExpectation', unmetExpectation);
  return app;
}
