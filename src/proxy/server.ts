// buildServer(deps): the Fastify instance, without listen(), so tests can inject() or listen on 0.
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { errorHandler } from './errors.js';
import type { PullThrough } from './pull-through.js';
import { registerRoutes } from './routes.js';
import type { Router } from './routing.js';

export interface ServerDeps {
  router: Router;
  cache: PullThrough;
  logger?: FastifyServerOptions['logger'];
}

const API_VERSION = 'registry/2.0';

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
  const body = JSON.stringify(new RegistryError('UNSUPPORTED', { status, message }).toBody());
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nDocker-Distribution-API-Version: ${API_VERSION}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

export function buildServer(deps: ServerDeps): FastifyInstance {
  const app = Fastify({
    logger: deps.logger ?? false,
    routerOptions: { maxParamLength: 2048 },
    bodyLimit: 1 << 20,
    // Fastify's own 503 during shutdown has no OCI envelope: the onRequest hook below answers instead
    return503OnClosing: false,
    frameworkErrors: frameworkError,
    clientErrorHandler: clientError,
  });
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
  return app;
}
