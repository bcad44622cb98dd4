// Composition root: config → stores and upstreams → server. No listen() here, so tests can start
// the whole proxy in-process and pick their own port.
import { join } from 'node:path';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { BlobStore, MetadataStore } from './cache/blob-store.js';
import type { Logger } from './lib/log.js';
import { FsMetadataStore } from './cache/fs-metadata.js';
import { FsBlobStore } from './cache/fs-store.js';
import type { S3Health } from './cache/s3-client.js';
import type { Config } from './config.js';
import { AccessPolicy } from './access/policy.js';
import { PullThrough } from './core/pull-through.js';
import { Router, type RoutedUpstream } from './core/routing.js';
import { registerMetrics } from './proxy/metrics.js';
import { buildServer } from './proxy/server.js';
import { createUpstream } from './upstreams/index.js';
import type { UpstreamCall } from './upstreams/registry-client.js';

export interface App {
  server: FastifyInstance;
  /** the S3 bucket's failure counters, when the cache is in S3 */
  s3Health: S3Health | undefined;
  close(): Promise<void>;
}

interface Stores {
  store: BlobStore;
  meta: MetadataStore;
  s3Health?: S3Health;
  close(): void;
}

/** The filesystem cache, or the S3 bucket (with the filesystem cache in front when localTier is set). */
export async function createStores(cache: Config['cache'], log: Logger): Promise<Stores> {
  const s3 = cache.s3;
  if (!s3) {
    return { store: await FsBlobStore.open({ dir: cache.dir, maxBytes: cache.maxSize }), meta: new FsMetadataStore(cache.dir), close() {} };
  }
  const { S3MetadataStore } = await import('./cache/s3-metadata.js');
  const { TieredBlobStore } = await import('./cache/tiered-store.js');
  const local = s3.localTier ? await FsBlobStore.open({ dir: cache.dir, maxBytes: cache.maxSize }) : undefined;
  const bucket = await openBucket(s3, local ? join(cache.dir, 'tmp', 's3') : join(cache.dir, 'tmp'), log);
  return {
    store: local ? new TieredBlobStore(local, bucket.store, log) : bucket.store,
    meta: new S3MetadataStore(bucket.location),
    s3Health: bucket.health,
    close: bucket.close,
  };
}

/**
 * The bucket's blob store, on a client of its own; `spoolDir` is emptied first (see
 * S3BlobStore.open). The AWS SDK is loaded only here: it costs memory a filesystem-only proxy
 * need not pay.
 */
export async function openBucket(s3: NonNullable<Config['cache']['s3']>, spoolDir: string, log: Logger) {
  const { createS3Client, S3Health } = await import('./cache/s3-client.js');
  const { S3BlobStore } = await import('./cache/s3-store.js');
  const client = createS3Client(s3);
  const health = new S3Health({ log });
  const location = { client, bucket: s3.bucket, prefix: s3.prefix, health };
  const store = await S3BlobStore.open({ ...location, spoolDir });
  return { store, location, health, close: () => client.destroy() };
}

/** Pino options: credentials never reach the log, whatever a request carries. */
export function loggerOptions(level: string): FastifyServerOptions['logger'] {
  return {
    level,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.password', '*.token'], censor: '[redacted]' },
  };
}

export async function createApp(config: Config, logger: FastifyServerOptions['logger'] = loggerOptions(config.logLevel)): Promise<App> {
  let server: FastifyInstance | undefined;
  const log = {
    info: (obj: object, msg?: string) => server?.log.info(obj, msg),
    warn: (obj: object, msg?: string) => server?.log.warn(obj, msg),
  };
  // with auth, an upstream whose clients bring their own credentials decides for itself what they may read
  const passthrough = config.upstreams.filter((u) => u.clientCredentials === 'passthrough').map((u) => u.name);
  const access = config.auth && (await AccessPolicy.open(config.auth, { passthrough, log }));
  const stores = await createStores(config.cache, log);
  const { store, meta } = stores;
  const onResponse = (e: UpstreamCall) => server?.log.info(e, 'upstream');
  const upstreams: RoutedUpstream[] = config.upstreams.map((u) => ({ config: u, client: createUpstream(u, config, onResponse) }));
  const fallback = upstreams.find((u) => u.config.name === config.defaultUpstream) ?? upstreams[0]!;
  const router = new Router(upstreams, fallback);
  const redirectTtlSeconds = config.cache.s3?.redirect ? config.cache.s3.redirectTtlMs / 1000 : undefined;
  const estargz = config.estargz.lazy
    ? { sparseDir: join(config.cache.dir, 'sparse'), prefetch: config.estargz.prefetch, fillAfterRange: config.estargz.fillAfterRange, maxSparseBytes: config.estargz.maxSparseSize, maxIndexBytes: config.estargz.maxIndexMemory, maxTocBytes: config.estargz.maxTocSize }
    : undefined;
  const confine = config.auth && { exempt: (upstream: string) => passthrough.includes(upstream) };
  const cache = new PullThrough({ store, meta, ...config.cache, redirectTtlSeconds, estargz, confine, log });
  server = buildServer({ router, cache, access, logger });
  registerMetrics(server, { upstreams, s3: stores.s3Health });
  return {
    server,
    s3Health: stores.s3Health,
    async close() {
      await server.close();
      await Promise.all(upstreams.map((u) => u.client.close()));
      await cache.close();
      stores.close();
    },
  };
}
