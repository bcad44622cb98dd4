// The peer route of a fleet (src/fleet): another replica reads a blob this one is filling, from
// its in-progress fill (or from the store once it is done), by Range, so that a late joiner or a
// resume starts where it needs to. Only replicas that present the fleet's shared secret get in;
// the route never starts a fill, so it cannot be used to make this replica fetch anything.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import type { PullThrough } from '../core/pull-through.js';
import { parseDigest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { contentRange, parseRange } from '../oci/range.js';
import { outcome } from './request-log.js';

const hashed = (s: string): Buffer => createHash('sha256').update(s).digest();

/** Whether the Authorization header carries the secret (compared in constant time). */
function presents(header: string | undefined, secret: string): boolean {
  const m = /^Bearer (.+)$/.exec(header ?? '');
  return m !== null && timingSafeEqual(hashed(m[1]!), hashed(secret));
}

export function registerFleetRoutes(app: FastifyInstance, deps: { cache: PullThrough; secret: string }): void {
  app.route({ method: ['GET', 'HEAD'], url: '/_fleet/v1/blobs/:digest', handler: async (req, reply) => {
    outcome(req).route = 'fleet';
    if (!presents(req.headers.authorization, deps.secret)) {
      // not a registry's challenge: no client of the cache has any business here
      throw new RegistryError('DENIED', { message: 'the fleet route is for the replicas of this fleet (the fleet secret is missing or wrong)' });
    }
    const digest = parseDigest((req.params as { digest: string }).digest);
    const b = await deps.cache.peerBlob(digest, parseRange(req.headers.range));
    if (!b) throw new RegistryError('BLOB_UNKNOWN', { message: 'this replica is neither filling nor holding the blob', detail: { digest: digest.value } });
    outcome(req).cache = b.served;
    reply.headers({ 'docker-content-digest': digest.value, 'content-type': 'application/octet-stream', 'accept-ranges': 'bytes' });
    if (b.range) reply.code(206).headers({ 'content-range': contentRange(b.range, b.size), 'content-length': String(b.range.end - b.range.start) });
    else if (b.size !== undefined) reply.header('content-length', String(b.size));
    if (req.method === 'HEAD') {
      b.body.destroy();
      return reply.send();
    }
    return reply.send(b.body);
  } });
}
