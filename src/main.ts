// Composition root: config → stores and upstreams → server. No listen() here, so tests can start
// the whole proxy in-process and pick their own port.
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import { FsMetadataStore } from './cache/fs-metadata.js';
import { FsBlobStore } from './cache/fs-store.js';
import type { Config } from './config.js';
import { PullThrough } from './proxy/pull-through.js';
import { Router, type RoutedUpstream } from './proxy/routing.js';
import { buildServer } from './proxy/server.js';
import { createUpstream } from './upstreams/index.js';
import type { UpstreamCall } from './upstreams/registry-client.js';

export interface App {
  server: FastifyInstance;
  close(): Promise<void>;
}

/** Pino options: credentials never reach the log, whatever a request carries. */
export function loggerOptions(level: string): FastifyServerOptions['logger'] {
  return {
    level,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.password', '*.token'], censor: '[redacted]' },
  };
}

export async function createApp(config: Config, logger: FastifyServerOptions['logger'] = loggerOptions(config.logLevel)): Promise<App> {
  const store = await FsBlobStore.open({ dir: config.cache.dir, maxBytes: config.cache.maxSize });
  const meta = new FsMetadataStore(config.cache.dir);
  let server: FastifyInstance | undefined;
  const onResponse = (e: UpstreamCall) => server?.log.info(e, 'upstream');
  const upstreams: RoutedUpstream[] = config.upstreams.map((u) => ({ config: u, client: createUpstream(u, config, onResponse) }));
  const fallback = upstreams.find((u) => u.config.name === config.defaultUpstream) ?? upstreams[0]!;
  const router = new Router(upstreams, fallback);
  const log = {
    info: (obj: object, msg?: string) => server?.log.info(obj, msg),
    warn: (obj: object, msg?: string) => server?.log.warn(obj, msg),
  };
  const cache = new PullThrough({ store, meta, ...config.cache, log });
  server = buildServer({ router, cache, logger });
  return {
    server,
    async close() {
      await server.close();
      await Promise.all(upstreams.map((u) => u.client.close()));
    },
  };
}
