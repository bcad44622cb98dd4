// GET/HEAD /healthz and /readyz, outside /v2/ (and so outside client authentication), for
// orchestrators and load balancers. /healthz: the process answers HTTP. /readyz: the cache can be
// written (see Readiness); 503 with each check's result as JSON when it cannot. While the server
// shuts down both are 503 (server.ts answers every request so), which takes it out of service.
import type { FastifyInstance } from 'fastify';
import type { Readiness } from '../cache/readiness.js';

export function registerHealth(app: FastifyInstance, readiness: Readiness): void {
  // HEAD is routed explicitly: Fastify's automatic HEAD would recompute Content-Length from an empty body
  app.route({
    method: ['GET', 'HEAD'],
    url: '/healthz',
    handler: async (_req, reply) => reply.header('cache-control', 'no-store').type('application/json').send({ status: 'ok' }),
  });
  app.route({
    method: ['GET', 'HEAD'],
    url: '/readyz',
    handler: async (_req, reply) => {
      const report = await readiness.report();
      return reply
        .code(report.ready ? 200 : 503)
        .header('cache-control', 'no-store')
        .type('application/json')
        .send({ status: report.ready ? 'ready' : 'unready', checks: report.checks });
    },
  });
}
