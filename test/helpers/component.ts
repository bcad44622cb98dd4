// The proxy in-process for component tests: the real PullThrough, Router and Fastify server over a
// FakeUpstream and memory stores, driven through `app.inject()`: no process, no socket, no registry.
// The clock is the test's: `clock.advance(ms)` moves the tag TTL and the upstream's health window.
// The edge is wired as main.ts wires it: metrics (GET /metrics), the upstream's calls observed, and
// the server's log lines (pino JSON, with main.ts's redaction) recorded.
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { MemoryBlobStore, MemoryMetadataStore } from '../../src/cache/memory-store.js';
import type { UpstreamConfig, UpstreamType } from '../../src/config.js';
import { AccessPolicy, type AccessConfig } from '../../src/access/policy.js';
import { PullThrough, type PullThroughOptions } from '../../src/core/pull-through.js';
import { Router } from '../../src/core/routing.js';
import { loggerOptions } from '../../src/main.js';
import { Metrics } from '../../src/proxy/metrics.js';
import { upstreamObserver } from '../../src/proxy/request-log.js';
import { buildServer } from '../../src/proxy/server.js';
import { FakeUpstream } from './fake-upstream.js';
import { makeTempDir, removeDir, waitFor, type Test } from './util.js';

export interface Clock {
  now(): number;
  advance(ms: number): void;
}

export interface LogLine {
  level: 'info' | 'warn';
  obj: object;
  msg: string | undefined;
}

export interface Component {
  app: FastifyInstance;
  upstream: FakeUpstream;
  /** every upstream by name: `upstream` and those of `more` */
  upstreams: Map<string, FakeUpstream>;
  store: MemoryBlobStore;
  meta: MemoryMetadataStore;
  clock: Clock;
  /** what the core logged */
  logs: LogLine[];
  /** what the server logged (request completions, upstream calls, errors), each line parsed */
  serverLogs: Record<string, unknown>[];
  metrics: Metrics;
  /**
   * Resolves once no fill is in flight. A whole GET's client has every byte once the digest is
   * verified and the fill commits just after: a request before that joins the fill (coalesced),
   * so a test that means "now cached" waits for this first.
   */
  fillsSettled(): Promise<void>;
}

export interface ComponentOptions extends Partial<Pick<PullThroughOptions, 'tagTtlMs' | 'revalidateTimeoutMs' | 'fillOnRange' | 'unverifiedRanges'>> {
  /** the fake's type as configured (dockerhub adds library/ to bare names); default "registry" */
  type?: UpstreamType;
  /** metrics.repositoryLabels */
  repositoryLabels?: boolean;
  /** serve eStargz layers lazily (sparse copies in the spool directory, no prefetch) */
  estargz?: boolean;
  /** more upstreams, by name (routed by that name as a path prefix); `upstream` stays the default */
  more?: string[];
  /** auth as the config resolves it (the htpasswd file's changes are looked for on the test's clock) */
  auth?: AccessConfig;
  /** "passthrough": the clients' own credentials are the fake's (see FakeUpstream.users) */
  clientCredentials?: 'passthrough';
  /** those of `more` configured with clientCredentials: passthrough */
  passthrough?: string[];
}

export async function component(t: Test, o: ComponentOptions = {}): Promise<Component> {
  let time = Date.UTC(2026, 0, 1);
  const clock: Clock = { now: () => time, advance: (ms) => void (time += ms) };
  const upstream = new FakeUpstream('fake.test', clock.now);
  const config: UpstreamConfig = { name: upstream.name, url: `https://${upstream.name}`, type: o.type ?? 'registry', aliases: ['alias.test'], username: undefined, password: undefined, clientCredentials: o.clientCredentials };
  const routed = { config, client: upstream };
  const others = (o.more ?? []).map((name) => {
    const client = new FakeUpstream(name, clock.now);
    const clientCredentials = o.passthrough?.includes(name) ? ('passthrough' as const) : undefined;
    return { config: { name, url: `https://${name}`, type: 'registry' as const, aliases: [], username: undefined, password: undefined, clientCredentials }, client };
  });
  const spool = await makeTempDir('pullthrough-component-');
  const store = await MemoryBlobStore.open(spool);
  const meta = new MemoryMetadataStore();
  const logs: LogLine[] = [];
  const log = {
    info: (obj: object, msg?: string) => void logs.push({ level: 'info', obj, msg }),
    warn: (obj: object, msg?: string) => void logs.push({ level: 'warn', obj, msg }),
  };
  const cache = new PullThrough({
    store,
    meta,
    tagTtlMs: o.tagTtlMs ?? 60_000,
    revalidateTimeoutMs: o.revalidateTimeoutMs ?? 1_000,
    fillOnRange: o.fillOnRange ?? false,
    unverifiedRanges: o.unverifiedRanges,
    estargz: o.estargz ? { sparseDir: join(spool, 'sparse'), prefetch: false } : undefined,
    confine: o.auth !== undefined,
    log,
    now: clock.now,
  });
  const passthrough = [routed, ...others].filter((u) => u.config.clientCredentials === 'passthrough').map((u) => u.config.name);
  const access = o.auth && (await AccessPolicy.open(o.auth, { passthrough, log, now: clock.now }));
  const serverLogs: Record<string, unknown>[] = [];
  const logger = { ...(loggerOptions('debug') as object), stream: { write: (line: string) => void serverLogs.push(JSON.parse(line) as Record<string, unknown>) } };
  const metrics = new Metrics({ repositoryLabels: o.repositoryLabels ?? false });
  const app = buildServer({ router: new Router([routed, ...others], routed), cache, access, logger, metrics });
  const observer = upstreamObserver(metrics, () => app.log);
  for (const u of [routed, ...others]) u.client.observer = observer;
  metrics.watch({ upstreams: [routed, ...others], store, activity: () => cache.activity() });
  t.teardown(async () => {
    await app.close();
    await cache.close();
    await removeDir(spool);
  });
  const upstreams = new Map([routed, ...others].map((u) => [u.config.name, u.client]));
  const fillsSettled = async () => {
    await waitFor(() => cache.activity().fillsInFlight === 0, { timeoutMs: 5000, intervalMs: 5, what: 'no fill in flight' });
  };
  return { app, upstream, upstreams, store, meta, clock, logs, serverLogs, metrics, fillsSettled };
}

/** The OCI error codes of an answer's body (empty when it has none). */
export function errorCodes(body: string): string[] {
  try {
    return ((JSON.parse(body) as { errors?: { code: string }[] }).errors ?? []).map((e) => e.code);
  } catch {
    return [];
  }
}
