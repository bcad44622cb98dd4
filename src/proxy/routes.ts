// The pull side of the distribution API. Repository names contain slashes, so one wildcard route
// takes every /v2/ path and this module splits it into name, endpoint and reference.
import type { Writable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { parseBasic, type ClientCredentials } from '../access/basic.js';
import { parseDigest } from '../oci/digest.js';
import { RegistryError } from '../oci/errors.js';
import { OCI_INDEX, parseAccept } from '../oci/media-types.js';
import { parseReference } from '../oci/reference.js';
import type { PullThrough } from '../core/pull-through.js';
import { contentRange, parseRange, parseRanges } from '../oci/range.js';
import { parseFileEndpoint, serveFileEndpoint } from './file-routes.js';
import { rangesBody } from './multipart.js';
import { outcome, type RouteKind } from './request-log.js';
import type { Router } from '../core/routing.js';
import type { AccessPolicy } from '../access/policy.js';
import type { Repository } from '../upstreams/repository.js';
import type { TagPage } from '../upstreams/upstream.js';

/** The Docker-Distribution-API-Version every answer carries. */
export const API_VERSION = 'registry/2.0';
const READ_METHODS = new Set(['GET', 'HEAD']);

type Endpoint =
  | { kind: 'manifests' | 'blobs' | 'referrers'; name: string; ref: string }
  | { kind: 'tags'; name: string }
  | { kind: 'uploads' };

export interface RouteDeps {
  router: Router;
  cache: PullThrough;
  /** who may pull what (auth); absent: anyone may pull anything */
  access?: AccessPolicy | undefined;
}

export function registerRoutes(app: FastifyInstance, deps: RouteDeps): void {
  app.addHook('onRequest', async (req) => {
    if (!READ_METHODS.has(req.method)) {
      throw new RegistryError('UNSUPPORTED', { message: 'this registry is a read-only pull-through cache', detail: { method: req.method } });
    }
  });

  // HEAD is routed explicitly: Fastify's automatic HEAD would recompute Content-Length from an empty body
  app.route({ method: ['GET', 'HEAD'], url: '/v2/', handler: async (req, reply) => {
    outcome(req).route = 'base';
    // Clients learn here whether to send credentials (skopeo and podman send theirs only to a
    // registry whose /v2/ challenged them). With auth they are checked here, as a registry with
    // authentication does (AccessPolicy.ping). Without it, with a passthrough upstream, a client
    // without any is challenged; its credentials are checked by that upstream, on its first
    // request for a repository.
    const credentials = parseBasic(req.headers.authorization);
    if (deps.access) await deps.access.ping(credentials);
    else if (deps.router.passthrough && !credentials) {
      throw new RegistryError('UNAUTHORIZED', { message: 'send your credentials: an upstream of this cache uses each client\'s own (clientCredentials: passthrough)' });
    }
    return reply.type('application/json').send({});
  } });

  app.route({ method: ['GET', 'HEAD'], url: '/v2/*', handler: async (req, reply) => {
    const [path, query] = splitUrl(req.url);
    const o = outcome(req);
    // checked against auth.htpasswd (AccessPolicy), or, for an upstream with clientCredentials:
    // passthrough, the upstream's own (see Router.route)
    const credentials = parseBasic(req.headers.authorization);
    if (credentials) o.user = credentials.username;
    const files = parseFileEndpoint(path.slice('/v2/'.length));
    if (files) {
      o.route = 'files';
      const repo = routed(deps.router, req, files.name, query, credentials);
      await deps.access?.authorize(credentials, repo);
      return serveFileEndpoint(deps.cache, repo, files, query, req, reply);
    }
    const endpoint = parseEndpoint(path.slice('/v2/'.length));
    if (endpoint.kind === 'uploads') throw new RegistryError('UNSUPPORTED', { message: 'uploads are not supported by a pull-through cache' });
    o.route = ROUTE_KIND[endpoint.kind];
    const repo = routed(deps.router, req, endpoint.name, query, credentials);
    await deps.access?.authorize(credentials, repo);
    const signal = abortOnClose(reply);
    switch (endpoint.kind) {
      case 'manifests':
        return manifest(deps.cache, repo, endpoint.ref, req, reply, signal);
      case 'blobs':
        return blob(deps.cache, repo, endpoint.ref, req, reply, signal);
      case 'tags':
        return tags(deps.cache, repo, endpoint.name, query, reply, signal);
      case 'referrers':
        return referrers(deps.cache, repo, endpoint.ref, query, reply, signal);
    }
  } });
}

const ROUTE_KIND: Record<'manifests' | 'blobs' | 'tags' | 'referrers', RouteKind> = { manifests: 'manifest', blobs: 'blob', tags: 'tags', referrers: 'referrers' };

/** The repository a client's name stands for (see Router.route), noted in the request's outcome. */
function routed(router: Router, req: FastifyRequest, name: string, query: URLSearchParams, credentials: ClientCredentials | undefined): Repository {
  const repo = router.route(name, query.get('ns') ?? undefined, credentials);
  Object.assign(outcome(req), { upstream: repo.upstream.name, repository: repo.name });
  return repo;
}

async function manifest(cache: PullThrough, repo: Repository, refText: string, req: FastifyRequest, reply: FastifyReply, signal: AbortSignal) {
  const ref = parseReference(refText);
  const m = await cache.manifest(repo, ref, parseAccept(req.headers.accept), signal);
  outcome(req).cache = m.served;
  reply.headers({
    'content-type': m.mediaType,
    'docker-content-digest': m.digest,
    etag: `"${m.digest}"`,
    'content-length': String(m.body.length),
  });
  if (m.served === 'stale') reply.header('warning', '110 pullthrough "Response is Stale"');
  return reply.send(req.method === 'HEAD' ? undefined : m.body);
}

async function blob(cache: PullThrough, repo: Repository, refText: string, req: FastifyRequest, reply: FastifyReply, signal: AbortSignal) {
  const digest = parseDigest(refText);
  reply.headers({ 'docker-content-digest': digest.value, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream', etag: `"${digest.value}"` });
  if (req.method === 'HEAD') {
    const head = await cache.blobSize(repo, digest, signal);
    outcome(req).cache = head.served;
    if (head.size !== undefined) reply.header('content-length', String(head.size));
    return reply.send();
  }
  const location = await cache.blobRedirect(repo, digest);
  if (location) {
    outcome(req).cache = 'hit';
    return reply.code(307).header('location', location).header('cache-control', 'no-store').send();
  }
  const ranges = parseRanges(req.headers.range);
  if (ranges && ranges.length > 1) {
    const multi = await cache.blobRanges(repo, digest, ranges);
    if (multi) {
      outcome(req).cache = multi.served;
      const body = rangesBody(multi);
      return reply.code(206).headers(body.headers).send(body.stream);
    }
  }
  const b = await cache.blob(repo, digest, parseRange(req.headers.range));
  outcome(req).cache = b.served;
  if (b.range) {
    reply.code(206).header('content-range', contentRange(b.range, b.size));
    reply.header('content-length', String(b.range.end - b.range.start));
  } else if (b.size !== undefined) {
    reply.header('content-length', String(b.size));
  }
  if (b.pipeTo) return pipeToClient(reply, b.pipeTo);
  return reply.send(b.body);
}

async function tags(cache: PullThrough, repo: Repository, clientName: string, query: URLSearchParams, reply: FastifyReply, signal: AbortSignal) {
  const n = query.get('n');
  const last = query.get('last');
  const page: { n?: number; last?: string } = {};
  const size = pageSize(n);
  if (size !== undefined) page.n = size;
  if (last !== null) page.last = last;
  const result = await cache.tags(repo, page, signal);
  const { tags, next } = result.next ? result : pageLocally(result.tags, page);
  if (next) {
    const q = new URLSearchParams();
    // the upstream's own `n` only when it is a page size (a lying upstream may send n=NaN), else
    // the client's; never 0, which would page nowhere
    const nextSize = [pageSize(next.n), page.n].find((size) => size !== undefined && size > 0);
    if (nextSize !== undefined) q.set('n', String(nextSize));
    q.set('last', next.last);
    const ns = query.get('ns');
    if (ns !== null) q.set('ns', ns); // the next page must reach the same upstream
    reply.header('link', `</v2/${clientName}/tags/list?${q}>; rel="next"`);
  }
  return reply.type('application/json').send({ name: clientName, tags: [...tags].sort() });
}

/** A page size as `n` carries it: a whole number of up to six digits; anything else is no `n`. */
function pageSize(n: string | number | null | undefined): number | undefined {
  const text = typeof n === 'number' ? String(n) : n;
  return typeof text === 'string' && /^[0-9]{1,6}$/.test(text) ? Number(text) : undefined;
}

/**
 * `n` and `last` applied here when the upstream ignored them (docker-registry 2.8 does): it sent
 * more than `n` tags, or `last` itself. Otherwise its page is taken as it is.
 */
function pageLocally(tags: string[], page: { n?: number; last?: string }): Pick<TagPage, 'tags' | 'next'> {
  const { n, last } = page;
  const ignored = (n !== undefined && tags.length > n) || (last !== undefined && tags.includes(last));
  if (!ignored) return { tags, next: undefined };
  const after = [...tags].sort().filter((t) => last === undefined || t > last);
  if (n === undefined || after.length <= n) return { tags: after, next: undefined };
  const cut = after.slice(0, n);
  return { tags: cut, next: cut.length > 0 ? { n, last: cut[cut.length - 1]! } : undefined };
}

async function referrers(cache: PullThrough, repo: Repository, refText: string, query: URLSearchParams, reply: FastifyReply, signal: AbortSignal) {
  const digest = parseDigest(refText);
  const artifactType = query.get('artifactType') ?? undefined;
  const { body, index } = await cache.referrers(repo, digest, artifactType, signal);
  reply.type(OCI_INDEX);
  if (artifactType === undefined) return reply.send(body);
  // the upstream may not have filtered, and filtering again is harmless
  reply.header('oci-filters-applied', 'artifactType');
  const kept = index.manifests.filter((m) => m.artifactType === artifactType);
  return reply.send(kept.length === index.manifests.length ? body : Buffer.from(JSON.stringify({ ...index, manifests: kept })));
}

/**
 * Sends a cached blob through the store's own pump rather than a stream. Fastify steps aside
 * (hijack), so the status, headers and the API-version header are written here.
 */
async function pipeToClient(reply: FastifyReply, pipeTo: (sink: Writable) => Promise<void>): Promise<void> {
  const res = reply.raw;
  const headers = { ...reply.getHeaders(), 'docker-distribution-api-version': API_VERSION };
  reply.hijack();
  res.writeHead(reply.statusCode, headers as Record<string, string>);
  try {
    await pipeTo(res);
    res.end();
  } catch (e) {
    reply.log.info({ err: (e as Error).message }, 'blob response ended early');
    res.destroy();
  }
}

/** Splits "<name>/<endpoint>/<ref>"; the name is whatever precedes the last endpoint segment. */
export function parseEndpoint(rest: string): Endpoint {
  if (/\/blobs\/uploads(?:\/|$)/.test(rest)) return { kind: 'uploads' };
  const tagsList = /^(.+)\/tags\/list$/.exec(rest);
  if (tagsList) return { kind: 'tags', name: tagsList[1]! };
  const m = /^(.+)\/(manifests|blobs|referrers)\/([^/]+)$/.exec(rest);
  if (!m) throw new RegistryError('NAME_UNKNOWN', { message: 'unknown API path', detail: { path: `/v2/${rest.slice(0, 300)}` } });
  return { kind: m[2] as 'manifests' | 'blobs' | 'referrers', name: m[1]!, ref: m[3]! };
}

function splitUrl(url: string): [string, URLSearchParams] {
  const q = url.indexOf('?');
  return q < 0 ? [url, new URLSearchParams()] : [url.slice(0, q), new URLSearchParams(url.slice(q + 1))];
}

/** Aborted when the client goes away before its response finished. */
function abortOnClose(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}
