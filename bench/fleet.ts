// npm run bench:fleet — a fleet of BENCH_REPLICAS pullthrough processes on one bucket (s3rver,
// with each replica's local tier) and one Redis (Debian's redis-server), BENCH_CLIENTS concurrent
// cold clients of one BENCH_SIZE_MIB blob spread over the replicas (client i to replica i mod R),
// the upstream a docker-registry behind the throttling forwarder (bench/throttle.ts, one link of
// BENCH_UPSTREAM_MIBPS shared by every connection). Each round, on a fresh bucket prefix and fresh
// processes, in an order that rotates each round:
//   - one client alone (the fleet running): the time of one cold GET, the yardstick;
//   - the fleet (fleet.redis set): time until the last client is done, upstream bytes counted at
//     the throttle, peak RSS (VmHWM) of each replica; then as many warm clients of the same
//     replicas (served from their local tiers): the time this machine needs to deliver that many
//     copies at all, the floor under the cold figure;
//   - the same replicas without fleet (what a bucket shared without Redis does: each replica
//     fetches on its own);
//   - the fleet with the lease holder killed (SIGKILL) once the upstream has sent a third of the
//     blob: the surviving replicas' clients must still all get the blob, whole and verified.
// Every client must get a 200 and exactly the blob's size; BENCH_HASH_CLIENTS per replica hash
// the body (openssl), which must equal the digest.
//
// Environment: BENCH_RUNS (3), BENCH_SIZE_MIB (1024), BENCH_CLIENTS (30), BENCH_REPLICAS (3),
// BENCH_UPSTREAM_MIBPS (100), BENCH_HASH_CLIENTS (2), BENCH_PULLTHROUGH_CLI (a built cli.js;
// default: build src/ into bench/out), BENCH_RESULTS (bench/RESULTS.md; "-" for stdout only),
// BENCH_MAX_MINUTES (45, hard stop). Its section in RESULTS.md sits between its own markers.
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedis } from '../test/helpers/fleet.js';
import { startRegistry } from '../test/helpers/registry.js';
import { startS3rver } from '../test/helpers/s3rver.js';
import { pushLayout } from '../test/helpers/skopeo.js';
import { makeTempDir, removeDir, sleep } from '../test/helpers/util.js';
import { batchOf, hashingIndices, startClient, type Batch, type ClientResult } from './clients.js';
import { envNum, gitDescribe, hardStop, machine, progress, pullthroughSnapshot, ROOT, writeSection } from './env.js';
import { buildLayout, type Descriptor } from './layout.js';
import { logProblems, readCpu, readMem, startPullthrough, type Pullthrough } from './procs.js';
import { fmt, fmtInt, max, median, min, table } from './stats.js';
import { startThrottleProcess, type ThrottleProcess } from './throttle.js';

const MiB = 1 << 20;
const START = '<!-- bench/fleet.ts: start -->';
const END = '<!-- bench/fleet.ts: end -->';
const cfg = {
  runs: Math.round(envNum('BENCH_RUNS', 3)),
  sizeMiB: Math.round(envNum('BENCH_SIZE_MIB', 1024)),
  clients: Math.round(envNum('BENCH_CLIENTS', 30)),
  replicas: Math.round(envNum('BENCH_REPLICAS', 3)),
  mibps: envNum('BENCH_UPSTREAM_MIBPS', 100),
  hashClients: Math.round(envNum('BENCH_HASH_CLIENTS', 2, true)),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_MAX_MINUTES', 45),
};
const SECRET = randomBytes(24).toString('hex');

const { say, loads } = progress();
const notes: string[] = [];
const note = (msg: string): void => {
  notes.push(msg);
  say(`NOTE: ${msg}`);
};
hardStop('bench:fleet', cfg.maxMinutes);

type Scenario = 'one client' | 'fleet' | 'no fleet' | 'fleet, holder killed';
const SCENARIOS: Scenario[] = ['one client', 'fleet', 'no fleet', 'fleet, holder killed'];

interface Sample {
  batch: Batch;
  /** upstream bytes over the blob's size */
  upstream: number;
  /** peak RSS of each replica, MiB (the killed one left out) */
  hwmMiB: number[];
  /** CPU seconds the replicas spent on the cold batch, together (the killed one left out) */
  cpuS: number;
  warm?: Batch | undefined;
  /** the killed replica's clients, which fail with it */
  lost?: number | undefined;
}

interface Ctx {
  cli: string;
  work: string;
  throttle: ThrottleProcess;
  s3: Awaited<ReturnType<typeof startS3rver>>;
  redisUrl: string;
  redis: Redis;
  blob: Descriptor;
  problems: string[];
}

/** Waits until the throttle has carried nothing for a second (bounded); its downstream byte count. */
async function settledDown(throttle: ThrottleProcess): Promise<number> {
  let last = (await throttle.stats()).down;
  let since = performance.now();
  const deadline = performance.now() + 120_000;
  while (performance.now() < deadline) {
    await sleep(250);
    const now = (await throttle.stats()).down;
    if (now !== last) {
      last = now;
      since = performance.now();
    } else if (performance.now() - since >= 1000) return now;
  }
  note('upstream traffic had not settled after 120 s');
  return last;
}

async function startFleet(ctx: Ctx, label: string, withFleet: boolean): Promise<{ replicas: Pullthrough[]; prefix: string }> {
  const prefix = `${label.replace(/[^a-z0-9]+/g, '-')}-${randomBytes(4).toString('hex')}/`;
  const out: Pullthrough[] = [];
  for (let i = 0; i < cfg.replicas; i++) {
    const dir = join(ctx.work, `${prefix.slice(0, -1)}-${i}`);
    await mkdir(dir, { recursive: true });
    const config = {
      cache: { s3: { bucket: ctx.s3.bucket, prefix, endpoint: ctx.s3.endpoint, forcePathStyle: true, localTier: true } },
      ...(withFleet ? { fleet: { redis: ctx.redisUrl, secret: SECRET, leaseTtl: '2s' } } : {}),
    };
    await writeFile(join(dir, 'config.json'), JSON.stringify(config));
    out.push(await startPullthrough(ctx.cli, join(dir, 'cache'), ctx.throttle.url, join(dir, 'log.json'), ['--config', join(dir, 'config.json'), '--log-level', 'info']));
  }
  return { replicas: out, prefix };
}

/** `n` clients spread over the replicas; `hashClients` per replica hash their body. */
function spread(replicas: readonly Pullthrough[], n: number, blob: Descriptor, t0: number): { replica: number; result: Promise<ClientResult> }[] {
  const timeoutS = Math.ceil((4 * cfg.sizeMiB) / cfg.mibps) + 300;
  const perReplica = replicas.map((_, r) => Array.from({ length: n }, (_, i) => i).filter((i) => i % replicas.length === r));
  const hashing = new Set(perReplica.flatMap((ids) => [...hashingIndices(ids.length, cfg.hashClients)].map((k) => ids[k]!)));
  return Array.from({ length: n }, (_, i) => ({
    replica: i % replicas.length,
    result: startClient(`${replicas[i % replicas.length]!.url}/v2/one/blobs/${blob.digest}`, timeoutS, hashing.has(i), t0),
  }));
}

async function measure(ctx: Ctx, scenario: Scenario, round: number): Promise<Sample> {
  const { replicas, prefix } = await startFleet(ctx, `r${round}-${scenario}`, scenario !== 'no fleet');
  const killed = new Set<number>();
  try {
    const down0 = await settledDown(ctx.throttle);
    const cpu0 = await Promise.all(replicas.map((r) => readCpu(r.pid)));
    const n = scenario === 'one client' ? 1 : cfg.clients;
    const t0 = performance.now();
    const clients = spread(replicas, n, ctx.blob, t0);
    if (scenario === 'fleet, holder killed') {
      const holder = await holderOf(ctx, replicas, prefix, down0);
      if (holder === undefined) note(`round ${round}: no lease holder seen; nothing killed`);
      else {
        process.kill(replicas[holder]!.pid, 'SIGKILL');
        killed.add(holder);
        say(`round ${round}: killed the lease holder (replica ${holder}) after ${fmt(((await ctx.throttle.stats()).down - down0) / MiB, 0)} MiB from the upstream`);
      }
    }
    const results = await Promise.all(clients.map(async (c) => ({ replica: c.replica, r: await c.result })));
    const spawnS = 0;
    const kept = results.filter((c) => !killed.has(c.replica)).map((c) => c.r);
    const batch = batchOf(kept, ctx.blob, spawnS, kept.filter((r) => r.sha256 !== undefined).length);
    const upstream = ((await settledDown(ctx.throttle)) - down0) / ctx.blob.size;
    let cpuS = 0;
    for (const [i, r] of replicas.entries()) if (!killed.has(i)) cpuS += (await readCpu(r.pid)) - cpu0[i]!;
    const hwmMiB: number[] = [];
    for (const [i, r] of replicas.entries()) if (!killed.has(i)) hwmMiB.push((await readMem(r.pid))?.hwmMiB ?? NaN);
    let warm: Batch | undefined;
    if (scenario === 'fleet') {
      const w0 = performance.now();
      const again = spread(replicas, n, ctx.blob, w0);
      warm = batchOf(await Promise.all(again.map((c) => c.result)), ctx.blob, 0, 0);
    }
    return { batch, upstream, hwmMiB, cpuS, warm, lost: killed.size ? results.length - kept.length : undefined };
  } finally {
    for (const [i, r] of replicas.entries()) {
      if (!killed.has(i)) await r.stop();
      ctx.problems.push(...(await logProblems([r.logPath])).filter((p) => !/fleet: /.test(p) || !killed.size).map((p) => `${scenario}, round ${round}: ${p}`));
      await rm(r.cacheDir, { recursive: true, force: true });
    }
  }
}

/** The replica holding the blob's lease, once the upstream has sent a third of the blob. */
async function holderOf(ctx: Ctx, replicas: readonly Pullthrough[], prefix: string, down0: number): Promise<number | undefined> {
  const deadline = performance.now() + 120_000;
  while (performance.now() < deadline) {
    const sent = (await ctx.throttle.stats()).down - down0;
    if (sent >= ctx.blob.size / 3) {
      // the key src/main.ts and src/fleet/redis-fleet.ts make for the lease
      const value = await ctx.redis.get(`pullthrough:${ctx.s3.bucket}/${prefix}:lease:blob:${ctx.blob.digest}`);
      const origin = value?.split(' ')[0];
      const i = replicas.findIndex((r) => r.url === origin);
      return i >= 0 ? i : undefined;
    }
    await sleep(20);
  }
  return undefined;
}

async function main(): Promise<void> {
  const mach = await machine(['redis-server', 'docker-registry', 'curl']);
  const snap = await pullthroughSnapshot('fleet-cli', say);
  const layout = await buildLayout({ dir: join(ROOT, 'bench', 'out', 'layouts', `one-1x${cfg.sizeMiB}`), layers: 1, layerBytes: cfg.sizeMiB * MiB, seed: 'bench-one' }, say);
  const blob = layout.layers[0]!;
  const work = await makeTempDir('pullthrough-bench-fleet-');
  const cleanups: (() => Promise<unknown>)[] = [() => removeDir(work)];
  const samples = new Map<Scenario, Sample[]>(SCENARIOS.map((s) => [s, []]));
  const problems: string[] = [];
  try {
    say('starting docker-registry, the throttle, s3rver and redis-server');
    const upstream = await startRegistry({ mode: 'open', startTimeoutMs: 30_000 });
    cleanups.unshift(() => upstream.stop());
    await pushLayout(layout.dir, `${upstream.host}/one:latest`, { timeoutMs: 900_000 });
    const throttle = await startThrottleProcess(upstream.url, { mibps: cfg.mibps, latencyMs: 2, mode: 'aggregate' });
    cleanups.unshift(() => throttle.stop());
    const s3 = await startS3rver({ startTimeoutMs: 30_000 });
    cleanups.unshift(() => s3.stop());
    Object.assign(process.env, s3.env, { AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });
    const redisServer = await startRedis();
    cleanups.unshift(() => redisServer.stop());
    const redis = new Redis(redisServer.url);
    cleanups.unshift(async () => redis.disconnect());
    const ctx: Ctx = { cli: snap.cli, work, throttle, s3, redisUrl: redisServer.url, redis, blob, problems };
    for (let round = 0; round < cfg.runs; round++) {
      const order = SCENARIOS.map((_, i) => SCENARIOS[(i + round) % SCENARIOS.length]!);
      for (const scenario of order) {
        say(`round ${round + 1}/${cfg.runs}: ${scenario}`);
        const s = await measure(ctx, scenario, round + 1);
        samples.get(scenario)!.push(s);
        say(`  last client done ${fmt(s.batch.seconds)} s, upstream ${fmt(s.upstream, 3)}× the blob, CPU ${fmt(s.cpuS, 1)} s, peak RSS ${s.hwmMiB.map((m) => fmt(m, 0)).join('/')} MiB${s.batch.failures.length ? `, FAILURES: ${s.batch.failures.slice(0, 3).join('; ')}` : ''}`);
      }
    }
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
  }
  const report = render(samples, problems, { mach, snap, blob });
  console.log(report);
  if (cfg.results !== '-') {
    await writeSection(cfg.results, START, END, report);
    say(`wrote ${cfg.results}`);
  }
}

function render(samples: Map<Scenario, Sample[]>, problems: string[], x: { mach: Record<string, string>; snap: { note: string; fingerprint: string }; blob: Descriptor }): string {
  const of = (s: Scenario, f: (x: Sample) => number) => samples.get(s)!.map(f);
  const cell = (ys: number[], d = 2) => (ys.length > 1 ? `${fmt(median(ys), d)} (${fmt(min(ys), d)}–${fmt(max(ys), d)})` : fmt(ys[0] ?? NaN, d));
  const secs = (s: Sample) => s.batch.seconds;
  const one = median(of('one client', secs));
  const failures = [...samples.entries()].flatMap(([s, xs]) => xs.flatMap((x, i) => x.batch.failures.map((f) => `${s}, round ${i + 1}: ${f}`)));
  const rows = (['fleet', 'no fleet', 'fleet, holder killed'] as const).map((s) => [
    s,
    `${cell(of(s, (x) => x.upstream), 3)} ×`,
    `${cell(of(s, secs))} s`,
    `${fmt(median(of(s, secs)) / one)} ×`,
    `${fmt(max(samples.get(s)!.flatMap((x) => x.hwmMiB)), 0)} MiB`,
    `${cell(of(s, (x) => x.cpuS), 1)} s`,
  ]);
  const warm = of('fleet', (x) => x.warm?.seconds ?? NaN);
  const out: string[] = [];
  out.push(`## Fleet: ${cfg.replicas} replicas, ${cfg.clients} cold clients of one ${fmtInt(x.blob.size)}-byte blob (bench/fleet.ts)`);
  out.push('');
  out.push(`Command: \`npm run bench:fleet\` (BENCH_RUNS=${cfg.runs} BENCH_SIZE_MIB=${cfg.sizeMiB} BENCH_CLIENTS=${cfg.clients} BENCH_REPLICAS=${cfg.replicas} BENCH_UPSTREAM_MIBPS=${cfg.mibps}); ${new Date().toISOString().slice(0, 10)}, ${gitDescribe(ROOT)}, ${x.snap.note}.`);
  out.push(`Machine: ${x.mach.nproc} cores, ${x.mach.memory}; load average during the run: median ${fmt(median(loads), 1)}, max ${fmt(max(loads), 1)}. Upstream: docker-registry behind one ${cfg.mibps} MiB/s link (bench/throttle.ts, aggregate); bucket: s3rver; Redis: ${x.mach['redis-server'] ?? 'redis-server'}; each replica with its local tier; lease TTL 2 s. Medians of ${cfg.runs} rounds (min–max); each measurement on fresh processes and a fresh bucket prefix.`);
  out.push('');
  out.push(table(['', 'upstream bytes ÷ blob', `last of ${cfg.clients} clients done`, 'that ÷ one client alone', 'peak RSS, any replica', 'CPU of the replicas, together'], rows));
  out.push('');
  out.push(`One client alone (a fleet of ${cfg.replicas} running): ${cell(of('one client', secs))} s, i.e. ${fmt(x.blob.size / MiB / one, 0)} MiB/s against the ${cfg.mibps} MiB/s link. ` +
    `${cfg.clients} warm clients of the same fleet (from the replicas' local tiers) took ${cell(warm)} s: ${fmt(median(warm) / one)}× one cold client, the floor this machine puts under any ${cfg.clients}-client figure.`);
  const lost = of('fleet, holder killed', (x) => x.lost ?? 0);
  out.push(`With the holder killed at a third of the blob: its own ${fmt(median(lost), 0)} clients fail with it; the figures are those of the other replicas' clients, every one of which got the whole blob${failures.some((f) => f.startsWith('fleet, holder')) ? ' (except the failures below)' : ''}.`);
  out.push('');
  if (failures.length) out.push(`Client failures:\n${failures.map((f) => `- ${f}`).join('\n')}\n`);
  if (problems.length) out.push(`Warnings in the replicas' logs (${problems.length}):\n${problems.slice(0, 12).map((p) => `- ${p}`).join('\n')}\n`);
  if (notes.length) out.push(`Notes:\n${notes.map((n) => `- ${n}`).join('\n')}\n`);
  return out.join('\n');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
