// buildServer(deps): the Fastify instance, without listen(), so tests can inject() or listen on 0.
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
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

export function buildServer(deps: ServerDeps): FastifyInstance {
  const app = Fastify({
    logger: deps.logger ?? false,
    routerOptions: { maxParamLength: 2048 },
    bodyLimit: 1 << 20,
    return503OnClosing: true,
  });
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('docker-distribution-api-version', 'registry/2.0');
    return payload;
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => {
    errorHandler(new RegistryError('NAME_UNKNOWN', { message: 'unknown API path', detail: { path: req.url.slice(0, 300) } }), req, reply);
  });
  registerRoutes(app, deps);
  return app;
}
