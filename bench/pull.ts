// npm run bench — pull and blob-GET benchmark of pullthrough against Debian's docker-registry
// (CNCF Distribution 2.8), all peers measured in the same run, medians of BENCH_RUNS rounds.
//
//   phase "pull":  skopeo pull of a BENCH_SIZE_MIB image (BENCH_LAYERS layers): direct from the
//                  upstream, through docker-registry's proxy mode (cold, warm), through
//                  pullthrough (cold, warm). Everything that reaches the upstream goes through a
//                  throttle (BENCH_UPSTREAM_MIBPS, BENCH_UPSTREAM_LATENCY_MS, BENCH_THROTTLE_MODE).
//   phase "get1",  warm GET of a single-layer BENCH_SIZE_MIB blob by 1 and BENCH_CLIENTS concurrent
//   phase "getN":  curl clients: pullthrough (warm cache) vs the upstream docker-registry serving
//                  the file itself (no throttle) vs docker-registry proxy (warm). Peak RSS of each.
//
// Environment: BENCH_RUNS (5), BENCH_SIZE_MIB (1024), BENCH_LAYERS (4), BENCH_CLIENTS (32),
// BENCH_UPSTREAM_MIBPS (300), BENCH_UPSTREAM_LATENCY_MS (2), BENCH_THROTTLE_MODE (aggregate |
// per-connection), BENCH_PHASES (pull,get1,getN), BENCH_PULLTHROUGH_CLI (a built cli.js; default:
// build src/ into a private snapshot under bench/out), BENCH_RESULTS (bench/RESULTS.md; "-" for
// stdout only), BENCH_MAX_MINUTES (45, hard stop).
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pushLayout } from '../test/helpers/skopeo.js';
import { startRegistry, type Registry } from '../test/helpers/registry.js';
import { makeTempDir, removeDir, run, waitFor } from '../test/helpers/util.js';
import { buildLayout, type BenchLayout } from './layout.js';
import { curlGets, logProblems, readCpu, readMem, registryPid, sampleRss, startPullthrough, timedSkopeoPull } from './procs.js';
import { fmt, fmtInt, max, median, min, ratioCell, table } from './stats.js';
import { startThrottleProcess, type ThrottleMode, type ThrottleProcess } from './throttle.js';
import { envNum, gitDescribe, machine, progress, pullthroughSnapshot, ROOT } from './env.js';

const OUT = join(ROOT, 'bench', 'out');
const MiB = 1 << 20;


const cfg = {
  runs: Math.round(envNum('BENCH_RUNS', 5)),
  sizeMiB: Math.round(envNum('BENCH_SIZE_MIB', 1024)),
  layers: Math.round(envNum('BENCH_LAYERS', 4)),
  clients: Math.round(envNum('BENCH_CLIENTS', 32)),
  mibps: envNum('BENCH_UPSTREAM_MIBPS', 300),
  latencyMs: process.env.BENCH_UPSTREAM_LATENCY_MS === '0' ? 0 : envNum('BENCH_UPSTREAM_LATENCY_MS', 2),
  mode: (process.env.BENCH_THROTTLE_MODE ?? 'aggregate') as ThrottleMode,
  phases: new Set((process.env.BENCH_PHASES ?? 'pull,get1,getN').split(',').map((s) => s.trim())),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_MAX_MINUTES', 45),
};
if (cfg.mode !== 'aggregate' && cfg.mode !== 'per-connection') throw new Error(`BENCH_THROTTLE_MODE=${String(cfg.mode)}`);
if (cfg.sizeMiB % cfg.layers !== 0) throw new Error('BENCH_SIZE_MIB must be a multiple of BENCH_LAYERS');

const { say, loads, started } = progress();

// Hard stop: exit hooks of the test helpers kill registries and remove temp dirs; pullthrough and
// the throttle die with this process (pdeathsig, IPC disconnect).
setTimeout(() => {
  console.error(`bench: exceeded BENCH_MAX_MINUTES=${cfg.maxMinutes}; aborting`);
  process.exit(3);
}, cfg.maxMinutes * 60_000).unref();

// ---------------------------------------------------------------------------------------------

const rotate = <T>(xs: readonly T[], k: number): T[] => xs.map((_, i) => xs[(i + k) % xs.length]!);

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += (await stat(join(e.parentPath, e.name))).size;
  }
  return total;
}

/** Waits until docker-registry's proxy has committed every digest to its own storage. */
async function waitStored(reg: Registry, digests: readonly string[], timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  await waitFor(
    () => digests.every((d) => existsSync(join(reg.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256', d.slice(7, 9), d.slice(7), 'data'))),
    { timeoutMs, intervalMs: 100, what: 'docker-registry proxy to store the blobs' },
  );
  return (performance.now() - t0) / 1000;
}

// ---------------------------------------------------------------------------------------------

interface PullSamples {
  direct: number[];
  drCold: number[];
  drWarm: number[];
  ptCold: number[];
  ptWarm: number[];
  up: Record<'direct' | 'drCold' | 'drWarm' | 'ptCold' | 'ptWarm', number[]>;
  drStoreLag: number[];
  ptHwm: number[];
  /** CPU seconds of the proxy process per pull */
  cpu: Record<'drCold' | 'drWarm' | 'ptCold' | 'ptWarm', number[]>;
}

interface GetSamples {
  pt: number[];
  drDirect: number[];
  drProxy: number[];
  rss: Record<'pt' | 'drDirect' | 'drProxy', number[]>;
  /** CPU seconds of the serving process per GiB served */
  cpu: Record<'pt' | 'drDirect' | 'drProxy', number[]>;
  ptHwm: number[];
  ptIdleRss: number[];
  failures: string[];
}

const emptyGet = (): GetSamples => ({
  pt: [],
  drDirect: [],
  drProxy: [],
  rss: { pt: [], drDirect: [], drProxy: [] },
  cpu: { pt: [], drDirect: [], drProxy: [] },
  ptHwm: [],
  ptIdleRss: [],
  failures: [],
});

async function main(): Promise<void> {
  say(`config: ${JSON.stringify({ ...cfg, phases: [...cfg.phases] })}`);
  await mkdir(OUT, { recursive: true });
  const { cli, note: cliNote, fingerprint } = await pullthroughSnapshot('dist-snapshot', say);
  const git = gitDescribe(ROOT);
  const mach = await machine(['docker-registry', 'skopeo', 'curl']);
  const date = new Date().toISOString();

  const layerMiB = cfg.sizeMiB / cfg.layers;
  const big = await buildLayout({ dir: join(OUT, 'layouts', `big-${cfg.layers}x${layerMiB}`), layers: cfg.layers, layerBytes: layerMiB * MiB, seed: 'bench-big' }, say);
  const one = await buildLayout({ dir: join(OUT, 'layouts', `one-1x${cfg.sizeMiB}`), layers: 1, layerBytes: cfg.sizeMiB * MiB, seed: 'bench-one' }, say);
  const blob = one.layers[0]!;
  const bigBytes = big.layers.reduce((a, l) => a + l.size, 0) + big.config.size + big.manifest.size;

  const work = await makeTempDir('pullthrough-bench-');
  const logs: string[] = [];
  const cleanups: (() => Promise<void>)[] = [];
  const pull: PullSamples = {
    direct: [], drCold: [], drWarm: [], ptCold: [], ptWarm: [],
    up: { direct: [], drCold: [], drWarm: [], ptCold: [], ptWarm: [] },
    drStoreLag: [], ptHwm: [],
    cpu: { drCold: [], drWarm: [], ptCold: [], ptWarm: [] },
  };
  const get1 = emptyGet();
  const getN = emptyGet();
  let warmupNotes: string[] = [];

  try {
    say('starting the upstream docker-registry and pushing both images');
    const upstream = await startRegistry({ mode: 'open', startTimeoutMs: 30_000 });
    cleanups.push(() => upstream.stop());
    await pushLayout(big.dir, `${upstream.host}/big:latest`, { timeoutMs: 900_000 });
    await pushLayout(one.dir, `${upstream.host}/one:latest`, { timeoutMs: 900_000 });
    const upstreamPid = await registryPid(upstream.dir);
    const throttle: ThrottleProcess = await startThrottleProcess(upstream.url, { mibps: cfg.mibps, latencyMs: cfg.latencyMs, mode: cfg.mode });
    cleanups.push(() => throttle.stop());
    say(`upstream ${upstream.url} (pid ${upstreamPid ?? '?'}), throttle ${throttle.url} at ${cfg.mibps} MiB/s ${cfg.mode}, +${cfg.latencyMs} ms`);
    const upBytes = async (): Promise<number> => (await throttle.stats()).down;
    let nlog = 0;
    const logPath = (): string => {
      const p = join(work, `pullthrough-${++nlog}.log`);
      logs.push(p);
      return p;
    };
    const pullTimeout = 600_000;

    // ---------------------------------------------------------------- phase: pull
    if (cfg.phases.has('pull')) {
      const dest = (): string => join(work, `pull-${Math.random().toString(36).slice(2)}`);
      const timed = async (ref: string, pid?: number): Promise<{ s: number; up: number; cpu: number }> => {
        const d = dest();
        const u0 = await upBytes();
        const c0 = pid ? await readCpu(pid) : NaN;
        try {
          const s = await timedSkopeoPull(ref, d, pullTimeout);
          const cpu = pid ? (await readCpu(pid)) - c0 : NaN;
          const got = await dirBytes(d);
          if (got < bigBytes) throw new Error(`pull of ${ref} wrote ${got} bytes, expected at least ${bigBytes}`);
          return { s, up: (await upBytes()) - u0, cpu };
        } finally {
          await rm(d, { recursive: true, force: true });
        }
      };
      const units: Record<string, () => Promise<void>> = {
        direct: async () => {
          const r = await timed(`${throttle.host}/big:latest`);
          pull.direct.push(r.s);
          pull.up.direct.push(r.up);
          say(`  direct: ${fmt(r.s)} s`);
        },
        pullthrough: async () => {
          const cache = join(work, `pt-cache-${Math.random().toString(36).slice(2)}`);
          const pt = await startPullthrough(cli, cache, throttle.url, logPath());
          try {
            const c = await timed(`${pt.host}/big:latest`, pt.pid);
            const w = await timed(`${pt.host}/big:latest`, pt.pid);
            pull.cpu.ptCold.push(c.cpu);
            pull.cpu.ptWarm.push(w.cpu);
            pull.ptCold.push(c.s);
            pull.ptWarm.push(w.s);
            pull.up.ptCold.push(c.up);
            pull.up.ptWarm.push(w.up);
            pull.ptHwm.push((await readMem(pt.pid))?.hwmMiB ?? NaN);
            say(`  pullthrough: cold ${fmt(c.s)} s, warm ${fmt(w.s)} s`);
          } finally {
            await pt.stop();
            await rm(cache, { recursive: true, force: true });
          }
        },
        'docker-registry proxy': async () => {
          const reg = await startRegistry({ mode: 'open', proxyRemoteUrl: throttle.url, startTimeoutMs: 30_000 });
          try {
            const pid = await registryPid(reg.dir);
            const cpu0 = pid ? await readCpu(pid) : NaN;
            const c = await timed(`${reg.host}/big:latest`, pid);
            // its proxy stores blobs in the background, with a second upstream GET; the warm pull
            // is only warm once that finished (CPU and upstream bytes of the cold pull include it)
            const u0 = await upBytes();
            const lag = await waitStored(reg, big.layers.map((l) => l.digest), 300_000);
            const storeUp = (await upBytes()) - u0;
            pull.cpu.drCold.push(pid ? (await readCpu(pid)) - cpu0 : NaN);
            const w = await timed(`${reg.host}/big:latest`, pid);
            pull.cpu.drWarm.push(w.cpu);
            pull.drCold.push(c.s);
            pull.drWarm.push(w.s);
            pull.up.drCold.push(c.up + storeUp);
            pull.up.drWarm.push(w.up);
            pull.drStoreLag.push(lag);
            say(`  docker-registry proxy: cold ${fmt(c.s)} s (stored ${fmt(lag)} s later), warm ${fmt(w.s)} s`);
          } finally {
            await reg.stop();
          }
        },
      };
      for (let r = 0; r < cfg.runs; r++) {
        say(`pull round ${r + 1}/${cfg.runs}`);
        for (const name of rotate(Object.keys(units), r)) await units[name]!();
      }
    }

    // ---------------------------------------------------------------- phases: get1, getN
    if (cfg.phases.has('get1') || cfg.phases.has('getN')) {
      say(`warming pullthrough's cache and docker-registry's proxy with the ${cfg.sizeMiB} MiB blob`);
      const path = `/v2/one/blobs/${blob.digest}`;
      const ptCache = join(work, 'pt-warm-cache');
      {
        const pt = await startPullthrough(cli, ptCache, throttle.url, logPath());
        try {
          const w = await curlGets(pt.url + path, 1, blob.size, 600);
          if (w.failures.length) throw new Error(`pullthrough warm-up GET failed: ${w.failures.join('; ')}`);
          warmupNotes.push(`pullthrough cold fill of the ${cfg.sizeMiB} MiB blob via the throttle: ${fmt(w.mibps, 0)} MiB/s`);
        } finally {
          await pt.stop();
        }
        const cached = join(ptCache, 'blobs', 'sha256', blob.digest.slice(7, 9), blob.digest.slice(7));
        if ((await stat(cached)).size !== blob.size) throw new Error('pullthrough did not cache the blob');
      }
      const proxy = await startRegistry({ mode: 'open', proxyRemoteUrl: throttle.url, startTimeoutMs: 30_000 });
      cleanups.push(() => proxy.stop());
      {
        const w = await curlGets(proxy.url + path, 1, blob.size, 600);
        if (w.failures.length) throw new Error(`docker-registry proxy warm-up GET failed: ${w.failures.join('; ')}`);
        const lag = await waitStored(proxy, [blob.digest], 300_000);
        warmupNotes.push(`docker-registry proxy cold GET of the blob via the throttle: ${fmt(w.mibps, 0)} MiB/s (stored ${fmt(lag)} s after)`);
      }
      const proxyPid = await registryPid(proxy.dir);

      const getPhase = async (clients: number, out: GetSamples): Promise<void> => {
        const timeoutS = 900;
        const measure = async (pid: number | undefined, url: string): Promise<{ mibps: number; rss: number; cpuPerGiB: number }> => {
          const sampler = pid ? sampleRss(pid) : undefined;
          const c0 = pid ? await readCpu(pid) : NaN;
          const g = await curlGets(url, clients, blob.size, timeoutS);
          const cpu = pid ? (await readCpu(pid)) - c0 : NaN;
          const rss = (await sampler?.stop()) ?? NaN;
          out.failures.push(...g.failures);
          return { mibps: g.mibps, rss, cpuPerGiB: cpu / (g.bytes / 2 ** 30) };
        };
        const peers: Record<string, () => Promise<void>> = {
          pullthrough: async () => {
            // a fresh process per run, so VmHWM is this run's peak
            const pt = await startPullthrough(cli, ptCache, throttle.url, logPath());
            try {
              await run('curl', ['-s', '-f', '-o', '/dev/null', '-I', pt.url + path], { timeoutMs: 10_000 }); // warm-up: routes, store
              out.ptIdleRss.push((await readMem(pt.pid))?.rssMiB ?? NaN);
              const m = await measure(pt.pid, pt.url + path);
              out.pt.push(m.mibps);
              out.rss.pt.push(m.rss);
              out.cpu.pt.push(m.cpuPerGiB);
              out.ptHwm.push((await readMem(pt.pid))?.hwmMiB ?? NaN);
              say(`  pullthrough: ${fmt(m.mibps, 0)} MiB/s, VmHWM ${fmt(out.ptHwm.at(-1)!, 0)} MiB`);
            } finally {
              await pt.stop();
            }
          },
          'docker-registry': async () => {
            const m = await measure(upstreamPid, upstream.url + path);
            out.drDirect.push(m.mibps);
            out.rss.drDirect.push(m.rss);
            out.cpu.drDirect.push(m.cpuPerGiB);
            say(`  docker-registry: ${fmt(m.mibps, 0)} MiB/s`);
          },
          'docker-registry proxy': async () => {
            const m = await measure(proxyPid, proxy.url + path);
            out.drProxy.push(m.mibps);
            out.rss.drProxy.push(m.rss);
            out.cpu.drProxy.push(m.cpuPerGiB);
            say(`  docker-registry proxy: ${fmt(m.mibps, 0)} MiB/s`);
          },
        };
        for (let r = 0; r < cfg.runs; r++) {
          say(`GET ×${clients} round ${r + 1}/${cfg.runs}`);
          for (const name of rotate(Object.keys(peers), r)) await peers[name]!();
        }
      };
      if (cfg.phases.has('get1')) await getPhase(1, get1);
      if (cfg.phases.has('getN')) await getPhase(cfg.clients, getN);
    }
  } finally {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => say(`cleanup: ${String(e)}`));
  }
  const problems = await logProblems(logs);
  await removeDir(work);
  const runtime = (performance.now() - started) / 1000;

  const report = render({ date, mach, cliNote, fingerprint, git, big, one, pull, get1, getN, problems, runtime, warmupNotes });
  console.log('\n' + report);
  if (cfg.results !== '-') {
    // keep hand-written notes that follow the marker in an existing results file
    const previous = await readFile(cfg.results, 'utf8').catch(() => '');
    const at = previous.indexOf(NOTES_MARKER);
    await writeFile(cfg.results, at >= 0 ? `${report}\n${previous.slice(at)}` : report);
    say(`wrote ${relative(process.cwd(), cfg.results) || cfg.results}`);
  }
}

// ---------------------------------------------------------------------------------------------

const NOTES_MARKER = '<!-- notes: everything below this line is kept when bench/pull.ts rewrites this file -->';

interface ReportInput {
  date: string;
  mach: Record<string, string>;
  cliNote: string;
  fingerprint: string;
  git: string;
  big: BenchLayout;
  one: BenchLayout;
  pull: PullSamples;
  get1: GetSamples;
  getN: GetSamples;
  problems: string[];
  runtime: number;
  warmupNotes: string[];
}

const verdict = (ok: boolean | undefined): string => (ok === undefined ? 'not measured' : ok ? '**met**' : '**NOT met**');

function render(x: ReportInput): string {
  const { pull, get1, getN } = x;
  const out: string[] = [];
  const bigMiB = x.big.layers.reduce((a, l) => a + l.size, 0) / MiB;
  out.push('# Benchmark results: pull and warm blob GET');
  out.push('');
  out.push('Generated by `npm run bench` (bench/pull.ts). Every figure is a median over rounds run in this one');
  out.push('invocation, peers interleaved (their order rotates each round); ratios are pullthrough ÷ peer of');
  out.push('the medians, with the range of the per-round ratios in brackets.');
  out.push('');
  out.push(`- date: ${x.date}; total bench runtime ${fmt(x.runtime / 60, 1)} min`);
  out.push(`- machine: ${Object.entries(x.mach).map(([k, v]) => `${k} ${v}`).join('; ')}`);
  out.push(`- 1-minute load average during the run (sampled at each progress line): median ${fmt(median(loads), 1)}, max ${fmt(max(loads), 1)} on ${x.mach.nproc} cores`);
  out.push(`- pullthrough: ${x.cliNote}; git ${x.git}; src fingerprint ${x.fingerprint}`);
  out.push(`- settings: BENCH_RUNS=${cfg.runs} BENCH_SIZE_MIB=${cfg.sizeMiB} BENCH_LAYERS=${cfg.layers} BENCH_CLIENTS=${cfg.clients} BENCH_UPSTREAM_MIBPS=${cfg.mibps} BENCH_UPSTREAM_LATENCY_MS=${cfg.latencyMs} BENCH_THROTTLE_MODE=${cfg.mode}`);
  out.push(`- images: \`big\` = ${x.big.layers.length} gzip layers, ${fmt(bigMiB, 1)} MiB in all (random payload, gzip level 0); \`one\` = 1 layer blob of ${fmt(x.one.layers[0]!.size / MiB, 1)} MiB (${x.one.layers[0]!.digest.slice(0, 19)}…)`);
  out.push('- upstream: docker-registry (open, filesystem storage). Cold traffic to it passes a throttling TCP forwarder (bench/throttle.ts, its own process);');
  out.push(`  \`${cfg.mode}\` means one token bucket shared by all connections, like one network link.`);
  out.push('');

  if (pull.direct.length) {
    out.push(`## skopeo pull of the ${fmt(bigMiB, 0)} MiB image (seconds, lower is better)`);
    out.push('');
    out.push(`\`skopeo copy docker://… dir:…\`. Direct and both proxies reach the upstream through the same throttle (${cfg.mibps} MiB/s, +${cfg.latencyMs} ms per request). Cold = fresh cache or storage each round; warm = the same proxy process right after. Proxy CPU s = user + system CPU of the proxy process during the pull (for docker-registry's cold pull, until its background store finished).`);
    out.push('');
    const row = (name: string, xs: number[], up: number[], cpu: number[] | undefined, ratio: string): string[] => [
      name, fmt(median(xs)), fmt(min(xs)), fmt(max(xs)), fmtInt(bigMiB / median(xs)), fmtInt(median(up) / MiB), cpu ? fmt(median(cpu), 1) : '—', ratio,
    ];
    out.push(
      table(
        ['peer', 'median s', 'min s', 'max s', 'MiB/s', 'upstream MiB per pull', 'proxy CPU s', 'pullthrough ÷ peer (time; < 1 = pullthrough faster)'],
        [
          row('skopeo direct (throttled)', pull.direct, pull.up.direct, undefined, `cold ${ratioCell(pull.ptCold, pull.direct)}; warm ${ratioCell(pull.ptWarm, pull.direct)}`),
          row('docker-registry proxy, cold', pull.drCold, pull.up.drCold, pull.cpu.drCold, `cold ${ratioCell(pull.ptCold, pull.drCold)}`),
          row('docker-registry proxy, warm', pull.drWarm, pull.up.drWarm, pull.cpu.drWarm, `warm ${ratioCell(pull.ptWarm, pull.drWarm)}`),
          row('pullthrough, cold', pull.ptCold, pull.up.ptCold, pull.cpu.ptCold, '—'),
          row('pullthrough, warm', pull.ptWarm, pull.up.ptWarm, pull.cpu.ptWarm, '—'),
        ],
      ),
    );
    out.push('');
    out.push(`docker-registry's proxy finished storing the layers a median ${fmt(median(pull.drStoreLag))} s after its cold pull ended (its upstream MiB include that background fetch). pullthrough VmHWM over a cold + warm pull: median ${fmt(median(pull.ptHwm), 0)} MiB, max ${fmt(max(pull.ptHwm), 0)} MiB.`);
    out.push('');
  }

  const getTable = (g: GetSamples, clients: number): void => {
    if (!g.pt.length) return;
    out.push(`## Warm GET of the ${fmt(x.one.layers[0]!.size / MiB, 0)} MiB blob, ${clients} concurrent client${clients > 1 ? 's' : ''} (aggregate MiB/s, higher is better)`);
    out.push('');
    out.push(`Each client is a \`curl -s -o /dev/null\` process doing a full GET; aggregate = all bytes ÷ wall time from the first start to the last finish. docker-registry = the upstream serving its own file (no throttle). Peak RSS = largest VmRSS sampled every 50 ms during the run, max over rounds. Server CPU = user + system CPU of the serving process per GiB delivered (2 cores in all, shared with the curl clients).`);
    out.push('');
    const row = (name: string, xs: number[], rss: number[], cpu: number[], ratio: string): string[] => [
      name, fmtInt(median(xs)), fmtInt(min(xs)), fmtInt(max(xs)), fmt(max(rss), 0), fmt(median(cpu), 2), ratio,
    ];
    out.push(
      table(
        ['peer', 'median MiB/s', 'min', 'max', 'peak RSS MiB', 'server CPU s per GiB', 'pullthrough ÷ peer (throughput; > 1 = pullthrough faster)'],
        [
          row('docker-registry (serving the file)', g.drDirect, g.rss.drDirect, g.cpu.drDirect, ratioCell(g.pt, g.drDirect)),
          row('docker-registry proxy, warm', g.drProxy, g.rss.drProxy, g.cpu.drProxy, ratioCell(g.pt, g.drProxy)),
          row('pullthrough, warm', g.pt, g.rss.pt, g.cpu.pt, '—'),
        ],
      ),
    );
    out.push('');
    out.push(`pullthrough memory: a fresh process per round on the warm cache, one HEAD of the blob as warm-up, then only this run; VmHWM (/proc/<pid>/status) median ${fmt(median(g.ptHwm), 0)} MiB, min ${fmt(min(g.ptHwm), 0)}, max ${fmt(max(g.ptHwm), 0)} MiB; VmRSS after warm-up ${fmt(median(g.ptIdleRss), 0)} MiB.`);
    if (g.failures.length) out.push(`\n**${g.failures.length} client(s) failed**: ${[...new Set(g.failures)].slice(0, 5).join('; ')}`);
    out.push('');
  };
  getTable(get1, 1);
  getTable(getN, cfg.clients);
  if (x.warmupNotes.length) {
    out.push(`Warm-up (not part of the medians): ${x.warmupNotes.join('; ')}.`);
    out.push('');
  }

  const r1 = get1.pt.length ? median(get1.pt) / median(get1.drDirect) : undefined;
  const rN = getN.pt.length ? median(getN.pt) / median(getN.drDirect) : undefined;
  const rc = pull.ptCold.length ? median(pull.ptCold) / median(pull.drCold) : undefined;
  const hwm = getN.ptHwm.length ? max(getN.ptHwm) : undefined;
  out.push('## Targets');
  out.push('');
  out.push(
    table(
      ['target', 'measured', 'verdict'],
      [
        ['warm GET throughput ≥ docker-registry serving the same file, 1 client', r1 === undefined ? '—' : `${ratioCell(get1.pt, get1.drDirect)} ×`, verdict(r1 === undefined ? undefined : r1 >= 1)],
        [`warm GET throughput ≥ docker-registry serving the same file, ${cfg.clients} clients`, rN === undefined ? '—' : `${ratioCell(getN.pt, getN.drDirect)} ×`, verdict(rN === undefined ? undefined : rN >= 1)],
        ['cold pull through pullthrough no slower than through docker-registry proxy', rc === undefined ? '—' : `time ratio ${ratioCell(pull.ptCold, pull.drCold)}`, verdict(rc === undefined ? undefined : rc <= 1)],
        [`pullthrough peak RSS < 150 MiB, ${cfg.clients} clients on the ${fmt(x.one.layers[0]!.size / MiB, 0)} MiB blob`, hwm === undefined ? '—' : `VmHWM max ${fmt(hwm, 0)} MiB (median ${fmt(median(getN.ptHwm), 0)})`, verdict(hwm === undefined ? undefined : hwm < 150)],
      ],
    ),
  );
  out.push('');
  out.push(`pullthrough log (level warn and above): ${x.problems.length ? `${x.problems.length} line(s), e.g. ${x.problems.slice(0, 3).join(' | ')}` : 'nothing'}.`);
  out.push('');
  return out.join('\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    console.error(`bench failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
