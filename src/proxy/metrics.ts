// GET /metrics in the Prometheus text format, with prom-client. Requests and what the cache did
// for them come from each request's completion (request-log.ts), upstream calls from what the
// upstream clients report, and figures the cache and stores keep (size, fills in flight, lazy
// bytes, S3 failures, upstream health and rate limits) are read at each scrape. Distribution's
// proxy names (registry_proxy_*) are kept too, so its dashboards work. Every label value is
// bounded: route kinds, status codes, configured upstream names, fixed types and outcomes; a
// repository name only when metrics.repositoryLabels is set. One registry per app (tests run
// many apps in one process), plus one per process for the process's own figures.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FastifyInstance } from 'fastify';
import type { StoreUsage } from '../cache/blob-store.js';
import type { FleetStatus } from '../fleet/fleet.js';
import type { Activity } from '../core/pull-through.js';
import type { RoutedUpstream } from '../core/routing.js';
import type { UpstreamBytes, UpstreamCall } from '../upstreams/registry-client.js';
import { outcome, type CompletedRequest } from './request-log.js';

export interface MetricsOptions {
  /** label cache requests with the repository too (unbounded: as many series as repositories pulled) */
  repositoryLabels: boolean;
}

/** What is read at each scrape. */
export interface MetricsSources {
  upstreams: readonly RoutedUpstream[];
  s3?: { readonly errors: number; readonly skipped: number } | undefined;
  /** the blob store, when it can tell its size */
  store?: { usage?(): StoreUsage | undefined } | undefined;
  activity?: (() => Activity) | undefined;
  /** in a fleet: whether Redis answers, and how claims went */
  fleet?: (() => FleetStatus) | undefined;
}

const TYPES = ['blob', 'manifest'] as const;
type ContentType = (typeof TYPES)[number];
const REQUEST_SECONDS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
const UPSTREAM_SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The process's own figures (CPU, memory, event-loop lag, GC, handles) are the same for every app
 * in a process, and prom-client's collector cannot be stopped once started: one registry per
 * process, created on first use (not prom-client's global default, which apps would share).
 */
let processRegistry: Registry | undefined;
function processMetrics(): Registry {
  if (!processRegistry) {
    processRegistry = new Registry();
    collectDefaultMetrics({ register: processRegistry });
  }
  return processRegistry;
}

export class Metrics {
  readonly registry = new Registry();
  private sources: MetricsSources = { upstreams: [] };
  private readonly httpRequests: Counter;
  private readonly httpSeconds: Histogram;
  private readonly cacheRequests: Counter;
  private readonly servedBytes: Counter;
  private readonly upstreamRequests: Counter;
  private readonly upstreamSeconds: Histogram;
  private readonly upstreamReceived: Counter;
  private readonly proxy: Record<'requests' | 'hits' | 'misses' | 'pulledBytes' | 'pushedBytes', Counter>;
  private rateLimitGauges = false;

  constructor(private readonly opts: MetricsOptions) {
    const registers = [this.registry];
    const cacheLabels = ['type', 'cache', 'upstream', ...(opts.repositoryLabels ? ['repository'] : [])];
    this.httpRequests = new Counter({ name: 'pullthrough_http_requests_total', help: 'Requests answered, by route kind and status code (499: the client left before the answer).', labelNames: ['route', 'status'], registers });
    this.httpSeconds = new Histogram({ name: 'pullthrough_http_request_duration_seconds', help: 'Time from a request to the end of its response, by route kind and what the cache did.', labelNames: ['route', 'cache'], buckets: REQUEST_SECONDS, registers });
    this.cacheRequests = new Counter({ name: 'pullthrough_cache_requests_total', help: 'Manifests and blobs served, by what the cache did: hit, miss, coalesced (joined a fetch in flight), lazy, stale.', labelNames: cacheLabels, registers });
    this.servedBytes = new Counter({ name: 'pullthrough_cache_served_bytes_total', help: 'Body bytes of manifests and blobs sent to clients, by what the cache did.', labelNames: cacheLabels, registers });
    this.upstreamRequests = new Counter({ name: 'pullthrough_upstream_requests_total', help: 'Upstream responses (after auth and redirects, each retry counted), by upstream, what was asked for, method and status.', labelNames: ['upstream', 'type', 'method', 'status'], registers });
    this.upstreamSeconds = new Histogram({ name: 'pullthrough_upstream_request_duration_seconds', help: 'Time from an upstream request to its response headers, by status class (2xx, 4xx, 5xx).', labelNames: ['upstream', 'type', 'method', 'status'], buckets: UPSTREAM_SECONDS, registers });
    this.upstreamReceived = new Counter({ name: 'pullthrough_upstream_received_bytes_total', help: 'Body bytes of blobs and manifests received from upstreams.', labelNames: ['upstream', 'type'], registers });
    const proxy = (name: string, help: string) => new Counter({ name: `registry_proxy_${name}_total`, help, labelNames: ['type'], registers });
    this.proxy = {
      requests: proxy('requests', 'Manifest and blob requests served (as CNCF Distribution counts them).'),
      hits: proxy('hits', 'Requests served from the cache, stale tags included.'),
      misses: proxy('misses', 'Requests served by fetching from the upstream (coalesced and lazy requests are neither hits nor misses).'),
      pulledBytes: proxy('pulled_bytes', 'Body bytes received from upstreams.'),
      pushedBytes: proxy('pushed_bytes', 'Body bytes sent to clients.'),
    };
    // Distribution's series exist from the start at 0, so a dashboard's rate() has a baseline
    for (const c of Object.values(this.proxy)) for (const type of TYPES) c.inc({ type }, 0);
    this.gauges();
  }

  /** Where the figures read at a scrape come from: set once, when the app's parts exist. */
  watch(sources: MetricsSources): void {
    this.sources = sources;
    if (sources.s3) {
      const s3 = sources.s3;
      this.counter('pullthrough_s3_errors_total', 'S3 requests that failed.', () => s3.errors);
      this.counter('pullthrough_s3_skipped_total', 'S3 requests not sent while the bucket was paused.', () => s3.skipped);
    }
    const fleet = sources.fleet;
    if (fleet) {
      this.gauge('pullthrough_fleet_coordinated', '1 while the fleet\'s Redis answers; 0 while this replica fetches on its own.', () => (fleet().coordinated ? 1 : 0));
      this.counter('pullthrough_fleet_uncoordinated_total', 'Fetches this replica made on its own because the fleet\'s Redis could not be asked.', () => fleet().uncoordinated);
      this.counter('pullthrough_fleet_leases_taken_total', 'Leases this replica took: fetches it made for the fleet.', () => fleet().claims.mine);
      this.counter('pullthrough_fleet_leases_held_elsewhere_total', 'Claims that found another replica fetching (read from it or the bucket instead).', () => fleet().claims.held);
    }
    const store = sources.store;
    if (store?.usage?.()) {
      const usage = () => store.usage?.() ?? { bytes: 0, entries: 0, evictions: 0 };
      this.gauge('pullthrough_cache_bytes', 'Bytes of blobs and manifests in the (local) cache.', () => usage().bytes);
      this.gauge('pullthrough_cache_entries', 'Blobs and manifests in the (local) cache.', () => usage().entries);
      this.counter('pullthrough_cache_evictions_total', 'Blobs removed from the (local) cache to stay within cache.maxSize or cache.maxAge.', () => usage().evictions);
    }
  }

  /** A request's completion (see request-log.ts). */
  request(r: CompletedRequest): void {
    this.httpRequests.inc({ route: r.route, status: String(r.status) });
    this.httpSeconds.observe(r.cache ? { route: r.route, cache: r.cache } : { route: r.route }, r.ms / 1000);
    if ((r.route !== 'manifest' && r.route !== 'blob') || !r.cache) return;
    const type: ContentType = r.route;
    const labels = { type, cache: r.cache, upstream: r.upstream ?? '', ...(this.opts.repositoryLabels ? { repository: r.repository ?? '' } : {}) };
    this.cacheRequests.inc(labels);
    this.servedBytes.inc(labels, r.bytes);
    this.proxy.requests.inc({ type });
    this.proxy.pushedBytes.inc({ type }, r.bytes);
    if (r.cache === 'hit' || r.cache === 'stale') this.proxy.hits.inc({ type });
    if (r.cache === 'miss') this.proxy.misses.inc({ type });
  }

  upstreamCall(e: UpstreamCall): void {
    this.upstreamRequests.inc({ upstream: e.upstream, type: e.kind, method: e.method, status: String(e.status) });
    this.upstreamSeconds.observe({ upstream: e.upstream, type: e.kind, method: e.method, status: `${Math.floor(e.status / 100)}xx` }, e.ms / 1000);
  }

  upstreamBytes(e: UpstreamBytes): void {
    this.upstreamReceived.inc({ upstream: e.upstream, type: e.kind }, e.bytes);
    this.proxy.pulledBytes.inc({ type: e.kind }, e.bytes);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text of a scrape: this app's series, then the process's. */
  async text(): Promise<string> {
    this.rateLimits();
    return `${await this.registry.metrics()}\n${await processMetrics().metrics()}`;
  }

  private gauges(): void {
    const up = () => this.sources.upstreams;
    const activity = () => this.sources.activity?.();
    this.labelled('pullthrough_upstream_healthy', '1 unless the upstream failed several requests in a row recently.', () => up().map((u) => [u.config.name, u.client.healthy() ? 1 : 0]));
    this.gauge('pullthrough_fills_in_flight', 'Blob downloads into the cache running now.', () => activity()?.fillsInFlight ?? 0);
    this.gauge('pullthrough_fill_bytes_in_flight', 'Bytes the running blob downloads have received so far.', () => activity()?.fillBytesInFlight ?? 0);
    this.counter('pullthrough_lazy_fetched_bytes_total', 'Bytes of lazily served layers fetched from upstreams (indexes, ranges, prefetches).', () => activity()?.lazyBytesFetched ?? 0);
    this.counter('pullthrough_lazy_served_bytes_total', 'Bytes of lazily served layers sent to clients in answer to ranges.', () => activity()?.lazyBytesServed ?? 0);
  }

  /** The rate-limit gauges, from the first scrape after an upstream announced a limit (none before, as before prom-client). */
  private rateLimits(): void {
    if (this.rateLimitGauges || !this.sources.upstreams.some((u) => u.client.rateLimit())) return;
    this.rateLimitGauges = true;
    const announced = () => this.sources.upstreams.flatMap((u) => {
      const rl = u.client.rateLimit();
      return rl ? [{ name: u.config.name, rl }] : [];
    });
    this.labelled('pullthrough_upstream_ratelimit_limit', 'Requests allowed per window, as the upstream last announced (ratelimit-limit).', () => announced().map(({ name, rl }) => [name, rl.limit]));
    this.labelled('pullthrough_upstream_ratelimit_remaining', 'Requests left in the window, as the upstream last announced (ratelimit-remaining).', () => announced().map(({ name, rl }) => [name, rl.remaining]));
  }

  private gauge(name: string, help: string, read: () => number): void {
    new Gauge({ name, help, registers: [this.registry], collect() { this.set(read()); } });
  }

  /** A gauge by upstream. */
  private labelled(name: string, help: string, read: () => [string, number][]): void {
    new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const [upstream, value] of read()) this.set({ upstream }, value);
      },
    });
  }

  /** A counter someone else keeps (a store, the S3 client), read at each scrape. */
  private counter(name: string, help: string, read: () => number): void {
    new Counter({
      name,
      help,
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  }
}

export function registerMetrics(app: FastifyInstance, metrics: Metrics): void {
  app.get('/metrics', async (req, reply) => {
    outcome(req).route = 'metrics';
    return reply.type(metrics.contentType).send(await metrics.text());
  });
}
