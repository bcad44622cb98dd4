// npm run bench:fanout — cold fan-out: BENCH_CLIENTS concurrent cold clients of one BENCH_SIZE_MIB
// blob behind a throttled upstream, pullthrough against Debian's docker-registry (CNCF
// Distribution 2.8) in proxy mode, both measured in the same run, medians of the rounds.
//
// Each round, for each peer (their order rotates each round), on fresh cache/storage every time:
//   (a) one cold client: time of one full GET of the blob;
//   (b) BENCH_CLIENTS cold clients started at once: time from the first start until the last
//       client finished, the upstream bytes counted at the throttle (until upstream traffic
//       settles, so docker-registry's background store is included), and the peak RSS (VmHWM) of
//       the proxy, which is a fresh process for every measurement;
//   (c) right after (b), BENCH_CLIENTS warm clients of the same process, now serving the blob from
//       its cache: the time this machine needs to deliver BENCH_CLIENTS copies at all, which is
//       the floor under (b) whatever the upstream does.
// The upstream is a docker-registry holding a single-layer image (bench/layout.ts); both peers
// reach it through the throttling forwarder (bench/throttle.ts). Clients are curl processes; the
// first and the last one started (BENCH_HASH_CLIENTS of them, spread over the start order) pipe
// their body through `openssl dgst -sha256`, which must equal the digest; every client must get a
// 200 and exactly the blob's size.
//
// Environment: BENCH_RUNS (5, or 3 when 5 rounds are estimated to take over 12 minutes),
// BENCH_SIZE_MIB (1024), BENCH_CLIENTS (32), BENCH_UPSTREAM_MIBPS (200), BENCH_UPSTREAM_LATENCY_MS
// (2), BENCH_THROTTLE_MODE (aggregate | per-connection), BENCH_HASH_CLIENTS (2),
// BENCH_PULLTHROUGH_CLI (a built cli.js; default: build src/ into a private snapshot under
// bench/out), BENCH_PEERS (pullthrough,docker-registry; `pullthrough` alone for upstream rates at
// which the peer, fetching once per client, would take too long), BENCH_SECTION (a name for a
// second section, e.g. `slow-link`, kept apart from the default one), BENCH_RESULTS
// (bench/RESULTS.md; "-" for stdout only), BENCH_MAX_MINUTES (30, hard stop). The section it
// writes sits between its own markers, after pull.ts's notes marker, so `npm run bench` keeps it
// and a rerun of this one with the same BENCH_SECTION replaces only it.
import { existsSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pushLayout } from '../test/helpers/skopeo.js';
import { startRegistry } from '../test/helpers/registry.js';
import { makeTempDir, removeDir, run, sleep } from '../test/helpers/util.js';
import { buildLayout, type Descriptor } from './layout.js';
import { curlClients, type Batch } from './clients.js';
import { logProblems, readCpu, readMem, registryPid, startPullthrough } from './procs.js';
import { fmt, fmtInt, max, median, min, ratioCell, table } from './stats.js';
import { startThrottleProcess, type ThrottleMode, type ThrottleProcess, type ThrottleStats } from './throttle.js';
import { envNum, gitDescribe, hardStop, machine, progress, pullthroughSnapshot, ROOT, writeSection } from './env.js';

const OUT = join(ROOT, 'bench', 'out');
const MiB = 1 << 20;
const SECTION = process.env.BENCH_SECTION ? ` ${process.env.BENCH_SECTION}` : '';
const START = `<!-- bench/fanout.ts${SECTION}: start -->`;
const END = `<!-- bench/fanout.ts${SECTION}: end -->`;
/** the runtime above which the default number of rounds drops from 5 to 3 */
const BUDGET_S = 12 * 60;


const cfg = {
  sizeMiB: Math.round(envNum('BENCH_SIZE_MIB', 1024)),
  clients: Math.round(envNum('BENCH_CLIENTS', 32)),
  mibps: envNum('BENCH_UPSTREAM_MIBPS', 200),
  latencyMs: envNum('BENCH_UPSTREAM_LATENCY_MS', 2, true),
  mode: (process.env.BENCH_THROTTLE_MODE ?? 'aggregate') as ThrottleMode,
  hashClients: Math.round(envNum('BENCH_HASH_CLIENTS', 2, true)),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_MAX_MINUTES', 30),
  peers: (process.env.BENCH_PEERS ?? 'pullthrough,docker-registry').split(',').map((p) => p.trim()),
};
for (const p of cfg.peers) if (p !== 'pullthrough' && p !== 'docker-registry') throw new Error(`BENCH_PEERS: unknown peer ${p}`);
if (cfg.mode !== 'aggregate' && cfg.mode !== 'per-connection') throw new Error(`BENCH_THROTTLE_MODE=${String(cfg.mode)}`);

/**
 * A lower-bound estimate of a run: per round the upstream must carry 1 + 1 blobs for pullthrough
 * and 2 + (clients + 1) for docker-registry's proxy (it fetches once per client plus once to store,
 * see PERF.md), and pullthrough must deliver clients × blob over loopback (≈800 MiB/s warm at 32
 * clients, RESULTS.md); plus ≈20 s of process starts and settling per round and ≈60 s of setup.
 */
function estimateSeconds(runs: number): number {
  const mode = cfg.mode === 'aggregate' ? 1 : cfg.clients + 1; // per-connection: every connection gets the full rate
  const peer = cfg.peers.includes('docker-registry') ? 2 + (cfg.clients + 1) / mode : 0;
  const upstream = ((2 + peer) * cfg.sizeMiB) / cfg.mibps;
  const delivery = (cfg.peers.length * 2 * cfg.clients * cfg.sizeMiB) / 800; // cold, then warm
  return 60 + runs * (upstream + delivery + 20);
}
const runsFromEnv = process.env.BENCH_RUNS !== undefined && process.env.BENCH_RUNS !== '';
const runs = runsFromEnv ? Math.round(envNum('BENCH_RUNS', 5)) : estimateSeconds(5) <= BUDGET_S ? 5 : 3;
const runsNote = runsFromEnv
  ? `BENCH_RUNS=${runs} (set by the caller)`
  : runs === 5
    ? '5 rounds (estimated runtime within 12 minutes)'
    : `3 rounds, not 5: 5 rounds were estimated at ≥ ${fmt(estimateSeconds(5) / 60, 0)} min (over the 12-minute budget), 3 at ≥ ${fmt(estimateSeconds(3) / 60, 0)} min; PERF.md asks for medians of ≥ 5, so these medians are weaker than usual`;

const { say, loads, started } = progress();
const odd: string[] = [];
const note = (msg: string): void => {
  odd.push(msg);
  say(`NOTE: ${msg}`);
};

hardStop('bench:fanout', cfg.maxMinutes);

/** BENCH_CLIENTS curl clients of `url`, BENCH_HASH_CLIENTS of them hashing (see bench/clients.ts). */
const clients = (url: string, n: number, blob: Descriptor, timeoutS: number): Promise<Batch> => curlClients(url, n, blob, timeoutS, cfg.hashClients);

// ---------------------------------------------------------------------------------------------
// one cold measurement of one peer

interface Sample {
  batch: Batch;
  upBytes: number;
  upConnections: number;
  hwmMiB: number;
  cpuS: number;
  /** docker-registry: seconds after the last client until its background store finished */
  storeLagS?: number;
  /** seconds from the start of the clients until the upstream transfer ended */
  upstreamEndS: number;
  /** the same number of clients again right after, served from the proxy's cache */
  warm?: Batch;
}

const ALL_PEERS = ['pullthrough', 'docker-registry proxy'] as const;
type Peer = (typeof ALL_PEERS)[number];
const PEERS = ALL_PEERS.filter((p) => cfg.peers.includes(p.split(' ')[0]!));

/** Waits until the throttle has carried nothing for a second (bounded), and returns its counters. */
async function settled(throttle: ThrottleProcess, what: string, timeoutMs = 180_000): Promise<ThrottleStats> {
  let last = await throttle.stats();
  let since = performance.now();
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    await sleep(250);
    const s = await throttle.stats();
    if (s.down !== last.down || s.up !== last.up) {
      last = s;
      since = performance.now();
    } else if (performance.now() - since >= 1000) {
      return s;
    }
  }
  note(`upstream traffic had not settled ${timeoutMs / 1000} s after ${what}`);
  return last;
}

/**
 * Polls the throttle's downstream counter every 250 ms from now on; stop() gives the seconds from
 * now until the counter last moved, i.e. when the upstream transfer ended (±0.25 s).
 */
function watchUpstream(throttle: ThrottleProcess): { stop(): Promise<number> } {
  const t0 = performance.now();
  let running = true;
  let lastDown = -1;
  let lastChange = 0;
  const loop = (async () => {
    while (running) {
      const s = await throttle.stats().catch(() => undefined);
      if (s && s.down !== lastDown) {
        if (lastDown >= 0) lastChange = (performance.now() - t0) / 1000;
        lastDown = s.down;
      }
      await sleep(250);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return lastChange;
    },
  };
}

interface Ctx {
  cli: string;
  work: string;
  throttle: ThrottleProcess;
  blob: Descriptor;
  path: string;
  ptProblems: string[];
  drProblems: string[];
}

function clientTimeoutS(n: number): number {
  // docker-registry's proxy pulls n + 1 copies through the throttle; allow three times that
  return Math.ceil((3 * (n + 1) * cfg.sizeMiB) / cfg.mibps) + 120;
}

async function coldPullthrough(ctx: Ctx, n: number, label: string): Promise<Sample> {
  const cache = join(ctx.work, `pt-cache-${Math.random().toString(36).slice(2)}`);
  const logPath = join(ctx.work, `pullthrough-${Math.random().toString(36).slice(2)}.log`);
  const pt = await startPullthrough(ctx.cli, cache, ctx.throttle.url, logPath);
  try {
    const u0 = await settled(ctx.throttle, `pullthrough start (${label})`);
    const c0 = await readCpu(pt.pid);
    const watch = watchUpstream(ctx.throttle);
    const batch = await clients(pt.url + ctx.path, n, ctx.blob, clientTimeoutS(n));
    const u1 = await settled(ctx.throttle, `pullthrough ${label}`);
    const upstreamEndS = await watch.stop();
    const cpuS = (await readCpu(pt.pid)) - c0;
    const hwmMiB = (await readMem(pt.pid))?.hwmMiB ?? NaN;
    const hex = ctx.blob.digest.slice(7);
    const cached = await stat(join(cache, 'blobs', 'sha256', hex.slice(0, 2), hex)).catch(() => undefined);
    if (cached?.size !== ctx.blob.size) note(`pullthrough ${label}: the blob is not in its cache afterwards (at blobs/sha256/${hex.slice(0, 2)}/…)`);
    const warm = n > 1 ? await clients(pt.url + ctx.path, n, ctx.blob, clientTimeoutS(n)) : undefined;
    return { batch, upBytes: u1.down - u0.down, upConnections: u1.connections - u0.connections, hwmMiB, cpuS, upstreamEndS, ...(warm ? { warm } : {}) };
  } finally {
    await pt.stop();
    ctx.ptProblems.push(...(await logProblems([logPath])).map((p) => `${label}: ${p}`));
    await rm(cache, { recursive: true, force: true });
  }
}

async function coldRegistry(ctx: Ctx, n: number, label: string): Promise<Sample> {
  const reg = await startRegistry({ mode: 'open', proxyRemoteUrl: ctx.throttle.url, startTimeoutMs: 30_000 });
  try {
    const pid = await registryPid(reg.dir);
    if (!pid) note(`docker-registry proxy ${label}: pid not found; no CPU or VmHWM figure`);
    const u0 = await settled(ctx.throttle, `docker-registry start (${label})`);
    const c0 = pid ? await readCpu(pid) : NaN;
    const watch = watchUpstream(ctx.throttle);
    const batch = await clients(reg.url + ctx.path, n, ctx.blob, clientTimeoutS(n));
    // its proxy stores the blob in the background, with one more upstream GET: wait for that
    const hex = ctx.blob.digest.slice(7);
    const data = join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    const t0 = performance.now();
    let storeLagS: number | undefined;
    for (let i = 0; i < 1800 && storeLagS === undefined; i++) {
      if (existsSync(data)) storeLagS = (performance.now() - t0) / 1000;
      else await sleep(100);
    }
    if (storeLagS === undefined) note(`docker-registry proxy ${label}: blob not stored 180 s after the last client`);
    const u1 = await settled(ctx.throttle, `docker-registry ${label}`);
    const upstreamEndS = await watch.stop();
    const cpuS = pid ? (await readCpu(pid)) - c0 : NaN;
    const hwmMiB = pid ? ((await readMem(pid))?.hwmMiB ?? NaN) : NaN;
    const warm = n > 1 && storeLagS !== undefined ? await clients(reg.url + ctx.path, n, ctx.blob, clientTimeoutS(n)) : undefined;
    const log = await reg.log();
    for (const line of log.split('\n')) {
      // its start-up warning about the filesystem driver ("does not implement RempositoryRemover") is no problem here
      if (/level=(warn|warning|error|fatal|panic)/.test(line) && !line.includes('RempositoryRemover')) ctx.drProblems.push(`${label}: ${line.slice(0, 300)}`);
    }
    return {
      batch,
      upBytes: u1.down - u0.down,
      upConnections: u1.connections - u0.connections,
      hwmMiB,
      cpuS,
      upstreamEndS,
      ...(storeLagS !== undefined ? { storeLagS } : {}),
      ...(warm ? { warm } : {}),
    };
  } finally {
    await reg.stop();
  }
}

// ---------------------------------------------------------------------------------------------

type Samples = Record<Peer, { one: Sample[]; many: Sample[] }>;

async function main(): Promise<void> {
  say(`config: ${JSON.stringify({ ...cfg, runs })}; ${runsNote}`);
  say(`estimated runtime ≥ ${fmt(estimateSeconds(runs) / 60, 1)} min`);
  await mkdir(OUT, { recursive: true });
  const date = new Date().toISOString();
  const mach = await machine(['docker-registry', 'curl', 'openssl']);
  const git = gitDescribe(ROOT);
  const { cli, note: cliNote, fingerprint } = await pullthroughSnapshot('dist-snapshot-fanout', say);
  const layout = await buildLayout({ dir: join(OUT, 'layouts', `one-1x${cfg.sizeMiB}`), layers: 1, layerBytes: cfg.sizeMiB * MiB, seed: 'bench-one' }, say);
  const blob = layout.layers[0]!;

  const work = await makeTempDir('pullthrough-bench-fanout-');
  const cleanups: (() => Promise<void>)[] = [];
  const samples: Samples = { pullthrough: { one: [], many: [] }, 'docker-registry proxy': { one: [], many: [] } };
  const ptProblems: string[] = [];
  const drProblems: string[] = [];
  try {
    say('starting the upstream docker-registry and pushing the single-layer image');
    const upstream = await startRegistry({ mode: 'open', startTimeoutMs: 30_000 });
    cleanups.push(() => upstream.stop());
    await pushLayout(layout.dir, `${upstream.host}/one:latest`, { timeoutMs: 900_000 });
    const throttle = await startThrottleProcess(upstream.url, { mibps: cfg.mibps, latencyMs: cfg.latencyMs, mode: cfg.mode });
    cleanups.push(() => throttle.stop());
    say(`upstream ${upstream.url}, throttle ${throttle.url} at ${cfg.mibps} MiB/s ${cfg.mode}, +${cfg.latencyMs} ms; blob ${blob.digest.slice(0, 19)}… ${fmtInt(blob.size)} bytes`);
    const ctx: Ctx = { cli, work, throttle, blob, path: `/v2/one/blobs/${blob.digest}`, ptProblems, drProblems };

    for (let r = 0; r < runs; r++) {
      const order = PEERS.map((_, i) => PEERS[(i + r) % PEERS.length]!);
      say(`round ${r + 1}/${runs}: ${order.join(', then ')}`);
      for (const peer of order) {
        const cold = peer === 'pullthrough' ? coldPullthrough : coldRegistry;
        const one = await cold(ctx, 1, `round ${r + 1}, 1 client`);
        samples[peer].one.push(one);
        say(`  ${peer}, 1 cold client: ${fmt(one.batch.seconds)} s, upstream ${fmt(one.upBytes / blob.size)}× blob, VmHWM ${fmt(one.hwmMiB, 0)} MiB${one.batch.failures.length ? `, FAILED: ${one.batch.failures.join('; ')}` : ''}`);
        const many = await cold(ctx, cfg.clients, `round ${r + 1}, ${cfg.clients} clients`);
        samples[peer].many.push(many);
        say(
          `  ${peer}, ${cfg.clients} cold clients: last done ${fmt(many.batch.seconds)} s (first ${fmt(many.batch.firstS)} s), upstream ${fmt(many.upBytes / blob.size)}× blob over ${many.upConnections} connection(s), ended at ${fmt(many.upstreamEndS, 1)} s, VmHWM ${fmt(many.hwmMiB, 0)} MiB, CPU ${fmt(many.cpuS, 1)} s` +
            (many.warm ? `; then ${cfg.clients} warm clients: ${fmt(many.warm.seconds)} s` : '') +
            (many.batch.failures.length ? `, ${many.batch.failures.length} FAILED: ${many.batch.failures.slice(0, 3).join('; ')}` : '') +
            (many.warm?.failures.length ? `, ${many.warm.failures.length} warm FAILED: ${many.warm.failures.slice(0, 3).join('; ')}` : ''),
        );
      }
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => say(`cleanup: ${String(e)}`));
    await removeDir(work);
  }
  const runtime = (performance.now() - started) / 1000;
  const report = render({ date, mach, git, cliNote, fingerprint, blob, samples, runtime, ptProblems, drProblems });
  console.log(`\n${report}`);
  if (cfg.results !== '-') {
    await writeSection(cfg.results, START, END, report);
    say(`wrote the fan-out section of ${relative(process.cwd(), cfg.results) || cfg.results}`);
  }
}

// ---------------------------------------------------------------------------------------------
// report

interface ReportInput {
  date: string;
  mach: Record<string, string>;
  git: string;
  cliNote: string;
  fingerprint: string;
  blob: Descriptor;
  samples: Samples;
  runtime: number;
  ptProblems: string[];
  drProblems: string[];
}

const cell = (xs: readonly number[], digits = 2): string => {
  const ys = xs.filter((x) => Number.isFinite(x));
  if (!ys.length) return 'n/a';
  return ys.length > 1 ? `${fmt(median(ys), digits)} (${fmt(min(ys), digits)}–${fmt(max(ys), digits)})` : fmt(ys[0]!, digits);
};
const verdict = (ok: boolean): string => (ok ? '**met**' : '**NOT met**');

function sizeLabel(mib: number): string {
  return mib % 1024 === 0 ? `${mib / 1024} GiB` : `${mib} MiB`;
}

function render(x: ReportInput): string {
  const pt = x.samples.pullthrough;
  const dr = x.samples['docker-registry proxy'];
  const blob = x.blob.size;
  const N = cfg.clients;
  const of = (xs: readonly Sample[], f: (s: Sample) => number): number[] => xs.map(f);
  const secs = (s: Sample): number => s.batch.seconds;
  const up = (s: Sample): number => s.upBytes / blob;
  const delivered = (s: Sample): number => (N * blob) / MiB / s.batch.seconds;
  const perRound = (peer: { one: Sample[]; many: Sample[] }): number[] => peer.many.map((m, i) => m.batch.seconds / (peer.one[i]?.batch.seconds ?? NaN));
  const warmSecs = (s: Sample): number => s.warm?.seconds ?? NaN;
  const overFloor = (s: Sample): number => s.batch.seconds / warmSecs(s);
  const withPeer = dr.many.length > 0;
  /** drops the docker-registry columns when it was not measured (BENCH_PEERS) */
  const cols = (row: string[]): string[] => (withPeer ? row : row.slice(0, 2));

  const out: string[] = [];
  out.push(`## Fan-out: ${N} cold clients of one ${sizeLabel(cfg.sizeMiB)} blob, upstream at ${cfg.mibps} MiB/s`);
  out.push('');
  out.push('Generated by `npm run bench:fanout` (bench/fanout.ts); this section is replaced when it runs again. Every figure is');
  out.push(
    withPeer
      ? 'median (min–max) over the rounds of this one invocation; in each round the two peers take turns (the order rotates),'
      : 'median (min–max) over the rounds of this one invocation, pullthrough only (BENCH_PEERS=pullthrough),',
  );
  out.push('each on a fresh cache or storage and a fresh process for every measurement. Ratios: of the medians, with the range');
  out.push('of the per-round ratios in brackets.');
  out.push('');
  const envSet = [runsFromEnv ? `BENCH_RUNS=${runs}` : '', ...['BENCH_UPSTREAM_MIBPS', 'BENCH_THROTTLE_MODE', 'BENCH_PEERS', 'BENCH_SECTION'].filter((k) => process.env[k]).map((k) => `${k}=${process.env[k]}`)].filter(Boolean);
  out.push(`- command: \`${envSet.length ? `${envSet.join(' ')} ` : ''}npm run bench:fanout\`; date: ${x.date}; total runtime ${fmt(x.runtime / 60, 1)} min`);
  out.push(`- rounds: ${runsNote}`);
  out.push(`- machine: ${Object.entries(x.mach).map(([k, v]) => `${k} ${v}`).join('; ')}`);
  out.push(`- 1-minute load average during the run (sampled at each progress line): median ${fmt(median(loads), 1)}, max ${fmt(max(loads), 1)} on ${x.mach.nproc} cores`);
  out.push(`- pullthrough: ${x.cliNote}; git ${x.git}; src fingerprint ${x.fingerprint}`);
  out.push(`- settings: BENCH_SIZE_MIB=${cfg.sizeMiB} BENCH_CLIENTS=${N} BENCH_UPSTREAM_MIBPS=${cfg.mibps} BENCH_UPSTREAM_LATENCY_MS=${cfg.latencyMs} BENCH_THROTTLE_MODE=${cfg.mode} BENCH_HASH_CLIENTS=${cfg.hashClients}`);
  out.push(`- blob: the single gzip layer of bench/layout.ts's \`one\` image, ${fmtInt(blob)} bytes (${x.blob.digest.slice(0, 19)}…), random payload`);
  out.push(`- upstream: docker-registry (open, filesystem storage) behind the throttling TCP forwarder (bench/throttle.ts, its own process) at ${cfg.mibps} MiB/s${cfg.mode === 'aggregate' ? ' shared by all connections (one link)' : ' per connection'}, +${cfg.latencyMs} ms per request; upstream bytes = bytes it carried towards the proxy, until upstream traffic had been quiet for 1 s (so docker-registry's background store is included)`);
  out.push(`- clients: curl processes started together; time = from the first start to the last finish. ${Math.min(cfg.hashClients, N)} of each ${N} (the first and the last started) and every single client hash the body with \`openssl dgst -sha256\`, which must equal the digest; all must get a 200 and exactly ${fmtInt(blob)} bytes`);
  out.push('- peak RSS: VmHWM (/proc/<pid>/status) of the proxy process, fresh for every measurement, read after the last cold client finished');
  out.push(`- warm floor: right after the ${N} cold clients, ${N} more clients of the same proxy process, which now serves the blob from its cache: how long this machine takes to deliver ${N} copies at all, with no upstream involved`);
  out.push('');
  out.push(
    table(
      cols(['', 'pullthrough', 'docker-registry proxy', 'pullthrough ÷ docker-registry']),
      [
        ['1 cold client: time, s', cell(of(pt.one, secs)), cell(of(dr.one, secs)), ratioCell(of(pt.one, secs), of(dr.one, secs))],
        ['1 cold client: upstream bytes ÷ blob', cell(of(pt.one, up)), cell(of(dr.one, up)), ratioCell(of(pt.one, up), of(dr.one, up))],
        ['1 cold client: upstream transfer ended, s after the start', cell(of(pt.one, (s) => s.upstreamEndS)), cell(of(dr.one, (s) => s.upstreamEndS)), '—'],
        ['1 cold client: VmHWM, MiB', cell(of(pt.one, (s) => s.hwmMiB), 0), cell(of(dr.one, (s) => s.hwmMiB), 0), ratioCell(of(pt.one, (s) => s.hwmMiB), of(dr.one, (s) => s.hwmMiB))],
        [`${N} cold clients: last client done, s`, cell(of(pt.many, secs)), cell(of(dr.many, secs)), ratioCell(of(pt.many, secs), of(dr.many, secs))],
        [`${N} cold clients: first / median client done, s`, `${cell(of(pt.many, (s) => s.batch.firstS))} / ${fmt(median(of(pt.many, (s) => s.batch.medianS)))}`, `${cell(of(dr.many, (s) => s.batch.firstS))} / ${fmt(median(of(dr.many, (s) => s.batch.medianS)))}`, '—'],
        [`${N} cold clients: last done ÷ 1 client (same peer)`, `${fmt(median(of(pt.many, secs)) / median(of(pt.one, secs)))} (${fmt(min(perRound(pt)))}–${fmt(max(perRound(pt)))})`, `${fmt(median(of(dr.many, secs)) / median(of(dr.one, secs)))} (${fmt(min(perRound(dr)))}–${fmt(max(perRound(dr)))})`, '—'],
        [`${N} cold clients: delivered MiB/s (${N} × blob ÷ last done)`, cell(of(pt.many, delivered), 0), cell(of(dr.many, delivered), 0), ratioCell(of(pt.many, delivered), of(dr.many, delivered))],
        [`${N} cold clients: upstream bytes ÷ blob`, cell(of(pt.many, up)), cell(of(dr.many, up)), ratioCell(of(pt.many, up), of(dr.many, up))],
        [`${N} cold clients: upstream transfer ended, s after the start`, cell(of(pt.many, (s) => s.upstreamEndS)), cell(of(dr.many, (s) => s.upstreamEndS)), '—'],
        [`${N} cold clients: upstream TCP connections`, cell(of(pt.many, (s) => s.upConnections), 0), cell(of(dr.many, (s) => s.upConnections), 0), '—'],
        [`${N} cold clients: VmHWM, MiB`, cell(of(pt.many, (s) => s.hwmMiB), 0), cell(of(dr.many, (s) => s.hwmMiB), 0), ratioCell(of(pt.many, (s) => s.hwmMiB), of(dr.many, (s) => s.hwmMiB))],
        [`${N} cold clients: proxy CPU (user + system), s`, cell(of(pt.many, (s) => s.cpuS), 1), cell(of(dr.many, (s) => s.cpuS), 1), ratioCell(of(pt.many, (s) => s.cpuS), of(dr.many, (s) => s.cpuS))],
        [`warm floor: ${N} warm clients of the same process, last done, s`, cell(of(pt.many, warmSecs)), cell(of(dr.many, warmSecs)), ratioCell(of(pt.many, warmSecs), of(dr.many, warmSecs))],
        [`${N} cold clients: last done ÷ warm floor (same process)`, cell(of(pt.many, overFloor)), cell(of(dr.many, overFloor)), '—'],
      ].map(cols),
    ),
  );
  out.push('');
  const lags = dr.many.map((s) => s.storeLagS).filter((v): v is number => v !== undefined);
  if (lags.length) out.push(`docker-registry's proxy finished storing the blob a median ${fmt(median(lags))} s (max ${fmt(max(lags))} s) after its last client of ${N}; its upstream bytes include that fetch.`);
  const clientsTotal = (p: { one: Sample[]; many: Sample[] }): number => p.one.length + p.many.length * N;
  const hashedTotal = (p: { one: Sample[]; many: Sample[] }): number => [...p.one, ...p.many].reduce((a, s) => a + s.batch.hashed, 0);
  const failed = (p: { one: Sample[]; many: Sample[] }): string[] => [...p.one, ...p.many].flatMap((s) => [...s.batch.failures, ...(s.warm?.failures ?? [])]);
  for (const [name, p] of ([['pullthrough', pt], ['docker-registry proxy', dr]] as const).filter(([, p]) => p.one.length > 0)) {
    const f = failed(p);
    out.push(
      f.length
        ? `**${name}: ${f.length} of ${clientsTotal(p)} client(s) failed**: ${[...new Set(f)].slice(0, 5).join('; ')}.`
        : `${name}: all ${clientsTotal(p)} clients got a 200 and all ${fmtInt(blob)} bytes; ${hashedTotal(p)} bodies hashed in full, all equal to the digest.`,
    );
  }
  const spawn = [...pt.many, ...dr.many].map((s) => s.batch.spawnS);
  out.push(`Starting ${N} clients took a median ${fmt(median(spawn) * 1000, 0)} ms (max ${fmt(max(spawn) * 1000, 0)} ms).`);
  out.push('');

  // targets (for pullthrough; docker-registry's figures for reference)
  const ptUp = of(pt.many, up);
  const drUp = of(dr.many, up);
  const ptRatio = median(of(pt.many, secs)) / median(of(pt.one, secs));
  const drRatio = median(of(dr.many, secs)) / median(of(dr.one, secs));
  const ptHwm = of(pt.many, (s) => s.hwmMiB);
  const drHwm = of(dr.many, (s) => s.hwmMiB);
  const ptFailed = failed(pt).length > 0;
  const ptFloor = median(of(pt.many, overFloor));
  const floorVsOne = median(of(pt.many, warmSecs)) / median(of(pt.one, secs));
  out.push(`### Targets (issue 3, item 9)`);
  out.push('');
  out.push(
    table(
      ['target', 'pullthrough', 'verdict', 'docker-registry proxy (reference)'].slice(0, withPeer ? 4 : 3),
      [
        [
          `upstream bytes = 1× the blob, ${N} cold clients (met: < 1.01× in every round; HTTP headers are the rest)`,
          `${cell(ptUp, 3)} ×`,
          verdict(ptUp.length > 0 && max(ptUp) < 1.01),
          `${cell(drUp, 2)} × (${verdict(drUp.length > 0 && max(drUp) < 1.01).replace(/\*/g, '')})`,
        ],
        [
          `last of ${N} cold clients done within 1.2× a single cold client's time (ratio of the medians)`,
          `${fmt(ptRatio)} × (rounds ${fmt(min(perRound(pt)))}–${fmt(max(perRound(pt)))})`,
          verdict(Number.isFinite(ptRatio) && ptRatio <= 1.2 && !ptFailed),
          `${fmt(drRatio)} × (${verdict(drRatio <= 1.2).replace(/\*/g, '')})`,
        ],
        [
          `peak RSS < 150 MiB, ${N} cold clients (VmHWM, max over rounds)`,
          `${fmt(max(ptHwm), 0)} MiB (median ${fmt(median(ptHwm), 0)})`,
          verdict(ptHwm.length > 0 && max(ptHwm) < 150),
          `${fmt(max(drHwm), 0)} MiB (median ${fmt(median(drHwm), 0)}) (${verdict(drHwm.length > 0 && max(drHwm) < 150).replace(/\*/g, '')})`,
        ],
      ].map((row) => (withPeer ? row : row.slice(0, 3))),
    ),
  );
  out.push('');
  out.push(
    floorVsOne > 1
      ? `Where the time goes: ${N} warm clients served from the cache of the same process took ${fmt(floorVsOne)}× a single cold client's time, ` +
          `so no proxy on this machine could bring ${N} cold clients under ${fmt(floorVsOne)}× at this upstream rate; ` +
          `pullthrough's ${N} cold clients took ${fmt(ptFloor)}× that warm floor: following the live fill added ${fmt((ptFloor - 1) * 100, 0)} % to the machine's own delivery time.`
      : `Where the time goes: ${N} warm clients served from the cache of the same process took ${fmt(floorVsOne)}× a single cold client's time, ` +
          `so at this upstream rate the link, not the machine, sets the pace: ${N} cold clients can at best finish with the one upstream transfer, ` +
          `and pullthrough's last one did at ${fmt(ptRatio)}× a single client's time.`,
  );
  out.push('');
  out.push(`pullthrough log (level warn and above): ${x.ptProblems.length ? `${x.ptProblems.length} line(s), e.g. ${x.ptProblems.slice(0, 3).join(' | ')}` : 'nothing'}. docker-registry proxy log (warn and above): ${x.drProblems.length ? `${x.drProblems.length} line(s), e.g. ${x.drProblems.slice(0, 3).join(' | ')}` : 'nothing'}.`);
  if (odd.length) out.push(`\nNoted during the run: ${odd.slice(0, 10).join('; ')}.`);
  return out.join('\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench:fanout failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
