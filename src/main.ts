// Composition root: config → stores and upstreams → server. No listen() here, so tests can start
// the whole proxy in-process and pick their own port.
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Server as TlsServer } from 'node:tls';
import type { FastifyInstance, FastifyServerOptions } from 'fastify';
import type { BlobStore, MetadataStore } from './cache/blob-store.js';
import { HeldLogger, type Logger } from './lib/log.js';
import { FsMetadataStore } from './cache/fs-metadata.js';
import { FsBlobStore } from './cache/fs-store.js';
import { diskWriteCheck, Readiness, type WriteCheck } from './cache/readiness.js';
import { Retention, type RetentionOptions } from './cache/retention.js';
import type { S3Health } from './cache/s3-client.js';
import type { Config, FleetConfig, S3CacheConfig } from './config.js';
import type { FleetBlobs } from './fleet/fleet.js';
import { SharedRateLimits } from './fleet/shared-facts.js';
import { AccessPolicy } from './access/policy.js';
import { PullThrough } from './core/pull-through.js';
import { Router, type RoutedUpstream } from './core/routing.js';
import { registerHealth } from './proxy/health.js';
import { Metrics } from './proxy/metrics.js';
import { prettyStream } from './proxy/pretty-log.js';
import { requestLogger, upstreamObserver } from './proxy/request-log.js';
import { buildServer } from './proxy/server.js';
import { httpsOptions, readTls, serveTls } from './proxy/tls.js';
import { createUpstream } from './upstreams/index.js';

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
  /** what cache.maxAge applies to: the local disk's blobs and records (a bucket expires by its lifecycle rule) */
  expiring: RetentionOptions['targets'];
  /** what /readyz writes to */
  checks: WriteCheck[];
  /** with cache.s3: the bucket's store and the local tier's (when there is one), for a fleet */
  tiers?: { shared: BlobStore; local: BlobStore | undefined };
  close(): Promise<void>;
}

/** The filesystem cache, or the S3 bucket (with the filesystem cache in front when localTier is set). */
export async function createStores(cache: Config['cache'], log: Logger): Promise<Stores> {
  const s3 = cache.s3;
  if (!s3) {
    const store = await FsBlobStore.open({ dir: cache.dir, maxBytes: cache.maxSize, log });
    const meta = new FsMetadataStore(cache.dir);
    return {
      store,
      meta,
      expiring: [{ name: 'blobs', store }, { name: 'tag and manifest records', store: meta }],
      checks: [diskWriteCheck(store.spoolDir)],
      close: async () => void (await Promise.all([store.close(), meta.close()])),
    };
  }
  const { S3MetadataStore } = await import('./cache/s3-metadata.js');
  const { TieredBlobStore } = await import('./cache/tiered-store.js');
  const local = s3.localTier ? await FsBlobStore.open({ dir: cache.dir, maxBytes: cache.maxSize, log }) : undefined;
  const bucket = await openBucket(s3, local ? join(cache.dir, 'tmp', 's3') : join(cache.dir, 'tmp'), log);
  return {
    store: local ? new TieredBlobStore(local, bucket.store, log) : bucket.store,
    meta: new S3MetadataStore(bucket.location),
    s3Health: bucket.health,
    tiers: { shared: bucket.store, local },
    expiring: local ? [{ name: 'local tier blobs', store: local }] : [],
    // fills spool to local disk whatever the tier
    checks: [diskWriteCheck(local?.spoolDir ?? bucket.store.spoolDir), bucket.writeCheck],
    close: async () => {
      await local?.close();
      bucket.close();
    },
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
  const { s3WriteCheck } = await import('./cache/s3-write-check.js');
  const client = createS3Client(s3);
  const health = new S3Health({ log });
  const location = { client, bucket: s3.bucket, prefix: s3.prefix, health };
  const store = await S3BlobStore.open({ ...location, spoolDir });
  return { store, location, health, writeCheck: s3WriteCheck(location), close: () => client.destroy() };
}

/** Connects to the fleet's Redis (waiting briefly, so the first pulls already coordinate); a Redis that is down is no reason not to serve. */
async function joinFleet(config: FleetConfig, s3: S3CacheConfig, tiers: NonNullable<Stores['tiers']>, self: () => string, log: Logger): Promise<FleetBlobs> {
  const { RedisFleet } = await import('./fleet/redis-fleet.js');
  const { PeerClient } = await import('./fleet/peer-client.js');
  // the fleet is its bucket: two fleets on one Redis never see each other's leases
  const prefix = `pullthrough:${s3.bucket}/${s3.prefix}:`;
  const fleet = new RedisFleet({ redis: config.redis, self, secret: config.secret, leaseTtlMs: config.leaseTtlMs, prefix, log });
  await fleet.ready(2000);
  return { fleet, peers: new PeerClient(config.secret), shared: tiers.shared, local: tiers.local };
}

/** How the other replicas reach this one: fleet.advertise, else the address it listens on (this host's name for a wildcard). */
function advertised(config: Config, server: FastifyInstance | undefined): string {
  if (config.fleet?.advertise) return config.fleet.advertise;
  const scheme = config.tls ? 'https' : 'http';
  const address = server?.server.address();
  const port = address && typeof address === 'object' ? address.port : config.listen.port;
  const host = ['0.0.0.0', '::', ''].includes(config.listen.host) ? hostname() : config.listen.host;
  return `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** Age eviction (cache.maxAge), when set: at once, then periodically. Started once the server (so the log) exists. */
function startRetention(maxAgeMs: number | undefined, targets: Stores['expiring'], log: Logger): Retention | undefined {
  if (maxAgeMs === undefined) return undefined;
  if (targets.length === 0) {
    log.warn({ maxAgeMs }, 'cache.maxAge bounds the local disk, and this cache has none (cache.s3 without localTier): expire the bucket with a lifecycle rule');
    return undefined;
  }
  return Retention.start({ maxAgeMs, targets, log });
}

/**
 * Pino options: credentials never reach the log, whatever a request carries. JSON lines, one per
 * event, for log collectors; `pretty` (the CLI sets it when stdout is a terminal): one coloured
 * line per event for a person (proxy/pretty-log.ts), written in this thread, so nothing is lost
 * when the process exits. The redaction applies before either.
 */
export function loggerOptions(level: string, o: { pretty?: boolean } = {}): FastifyServerOptions['logger'] {
  return {
    level,
    redact: { paths: ['req.headers.authorization', 'headers.authorization', '*.password', '*.token'], censor: '[redacted]' },
    ...(o.pretty ? { stream: prettyStream() } : {}),
  };
}

export async function createApp(config: Config, logger: FastifyServerOptions['logger'] = loggerOptions(config.logLevel)): Promise<App> {
  // what the htpasswd file and the stores log while they open is held until the server's logger exists
  const held = new HeldLogger();
  // what the core logs while serving a request carries that request's id (request-log.ts)
  const log: Logger = {
    info: (obj, msg) => (requestLogger() ?? held).info(obj, msg),
    warn: (obj, msg) => (requestLogger() ?? held).warn(obj, msg),
  };
  // with auth, an upstream whose clients bring their own credentials decides for itself what they may read
  const passthrough = config.upstreams.filter((u) => u.clientCredentials === 'passthrough').map((u) => u.name);
  const access = config.auth && (await AccessPolicy.open(config.auth, { passthrough, log }));
  const stores = await createStores(config.cache, log);
  const { store, meta } = stores;
  const metrics = new Metrics(config.metrics);
  const observer = upstreamObserver(metrics, () => held);
  const upstreams: RoutedUpstream[] = config.upstreams.map((u) => ({ config: u, client: createUpstream(u, config, observer) }));
  const fallback = upstreams.find((u) => u.config.name === config.defaultUpstream) ?? upstreams[0]!;
  const router = new Router(upstreams, fallback);
  const redirectTtlSeconds = config.cache.s3?.redirect ? config.cache.s3.redirectTtlMs / 1000 : undefined;
  const estargz = config.estargz.lazy
    ? { sparseDir: join(config.cache.dir, 'sparse'), prefetch: config.estargz.prefetch, fillAfterRange: config.estargz.fillAfterRange, maxSparseBytes: config.estargz.maxSparseSize, maxIndexBytes: config.estargz.maxIndexMemory, maxTocBytes: config.estargz.maxTocSize }
    : undefined;
  const tls = config.tls && { files: config.tls, material: readTls(config.tls) };
  // the fleet learns this replica's address once it listens (the --listen port may be 0)
  let server: FastifyInstance | undefined;
  const fleet = config.fleet && config.cache.s3 && stores.tiers && (await joinFleet(config.fleet, config.cache.s3, stores.tiers, () => advertised(config, server), log));
  const rateLimits = fleet && new SharedRateLimits(fleet.fleet, upstreams.map((u) => u.client));
  const cache = new PullThrough({ store, meta, ...config.cache, redirectTtlSeconds, estargz, confine: config.auth !== undefined, fleet, rateLimit: rateLimits && ((up) => rateLimits.view(up)), log });
  server = buildServer({ router, cache, access, logger, metrics, https: tls && httpsOptions(tls.material), fleetSecret: fleet?.fleet.secret });
  held.attach(server.log);
  // Fastify types the server as HTTP's; with the https option it is Node's https.Server
  const stopTls = tls ? serveTls(server.server as unknown as TlsServer, tls.files, tls.material, log) : () => undefined;
  metrics.watch({ upstreams, s3: stores.s3Health, store, activity: () => cache.activity(), fleet: fleet && (() => fleet.fleet.status()) });
  registerHealth(server, new Readiness(stores.checks));
  const retention = startRetention(config.cache.maxAgeMs, stores.expiring, log);
  return {
    server,
    s3Health: stores.s3Health,
    async close() {
      stopTls();
      await server.close();
      await Promise.all(upstreams.map((u) => u.client.close()));
      await cache.close();
      rateLimits?.close();
      await fleet?.fleet.close();
      await fleet?.peers.close();
      await retention?.close();
      await stores.close();
    },
  };
}
