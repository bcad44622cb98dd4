// Our extension under a repository's path, for builders that need one file and not the image:
//   GET /v2/<name>/_estargz/<layer-digest>/toc                 the layer's TOC (eStargz layers)
//   GET /v2/<name>/_estargz/<layer-digest>/files/<path>        one file of one layer
//   GET /v2/<name>/_estargz/image/<tag|digest>/files/<path>    one file of an image (?platform=os/arch)
// "_estargz" cannot be a repository component (components never start with "_").
import type { FastifyReply, FastifyRequest } from 'fastify';
import { parseDigest } from '../oci/digest.js';
import { parseReference } from '../oci/reference.js';
import type { LayerFile } from '../core/layer-files.js';
import type { PullThrough } from '../core/pull-through.js';
import type { Repository } from '../upstreams/repository.js';

export type FileEndpoint =
  | { kind: 'toc'; name: string; digest: string }
  | { kind: 'layer-file'; name: string; digest: string; path: string }
  | { kind: 'image-file'; name: string; ref: string; path: string };

export function parseFileEndpoint(rest: string): FileEndpoint | undefined {
  const image = /^(.+?)\/_estargz\/image\/([^/]+)\/files\/(.+)$/.exec(rest);
  if (image) return { kind: 'image-file', name: image[1]!, ref: image[2]!, path: image[3]! };
  const layer = /^(.+?)\/_estargz\/([^/]+)\/(?:(toc)|files\/(.+))$/.exec(rest);
  if (!layer) return undefined;
  return layer[3] ? { kind: 'toc', name: layer[1]!, digest: layer[2]! } : { kind: 'layer-file', name: layer[1]!, digest: layer[2]!, path: layer[4]! };
}

export async function serveFileEndpoint(cache: PullThrough, repo: Repository, e: FileEndpoint, query: URLSearchParams, req: FastifyRequest, reply: FastifyReply) {
  if (e.kind === 'toc') {
    const toc = await cache.layerToc(repo, parseDigest(e.digest));
    reply.type('application/json').header('content-length', String(toc.length));
    return reply.send(req.method === 'HEAD' ? undefined : toc);
  }
  const file =
    e.kind === 'layer-file'
      ? await cache.layerFile(repo, parseDigest(e.digest), e.path)
      : await cache.imageFile(repo, parseReference(e.ref), e.path, query.get('platform') ?? 'linux/amd64');
  return sendFile(file, req, reply);
}

function sendFile(file: LayerFile, req: FastifyRequest, reply: FastifyReply) {
  reply.headers({
    'content-type': 'application/octet-stream',
    'content-length': String(file.size),
    'x-file-path': encodeURI(file.path),
    'x-file-size': String(file.size),
    'x-file-mode': `0${(file.mode & 0o7777).toString(8)}`,
    'x-file-layer': file.layer,
  });
  if (file.digest) reply.header('x-file-digest', file.digest);
  if (req.method === 'HEAD') {
    file.body.destroy();
    return reply.send();
  }
  return reply.send(file.body);
}
