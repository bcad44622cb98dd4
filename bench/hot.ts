// npm run bench:hot — the hot paths of a warm cache against the limit of our stack, side by side
// in one run: `wrk` (Debian) against
//   - a bare Fastify server (bench/bare-fastify.ts): the manifest from memory, a HEAD from a known
//     size, a Range by one pread on a descriptor opened once: what Node and Fastify cost at least;
//   - docker-registry (CNCF Distribution 2.8) serving the same image itself;
//   - pullthrough with that image cached (from that docker-registry), at its default log level
//     (info: one line per request), and again at `warn` for the manifest paths (what logging costs).
// Requests: a manifest GET by tag and by digest, a HEAD of the cached blob (by ab, see below), and
// 4 KiB and 64 KiB Range GETs at random offsets of it (a Lua script picks each offset), with 10 and 100
// connections, BENCH_SECONDS each. Rounds interleave the peers (their order rotating) so that a
// change in the machine's load touches all of them alike; medians of BENCH_RUNS rounds. Any
// answer that is not 2xx is reported. Peak RSS (VmHWM) of pullthrough over the whole run.
//
// Environment: BENCH_RUNS (3), BENCH_SECONDS (4), BENCH_SIZE_MIB (64, the blob), BENCH_CONNECTIONS
// (10,100), BENCH_PULLTHROUGH_CLI (a built cli.js; default: build src/ into bench/out),
// BENCH_RESULTS (bench/RESULTS.md; "-" for stdout only), BENCH_MAX_MINUTES (30, hard stop).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startRegistry } from '../test/helpers/registry.js';
import { pushLayout } from '../test/helpers/skopeo.js';
import { freePort, makeTempDir, removeDir, run, waitFor } from '../test/helpers/util.js';
import { envNum, gitDescribe, hardStop, machine, progress, pullthroughSnapshot, ROOT, writeSection } from './env.js';
import { buildLayout } from './layout.js';
import { logProblems, readMem, startPullthrough, type Pullthrough } from './procs.js';
import { fmt, fmtInt, max, median, min, table } from './stats.js';

const MiB = 1 << 20;
const START = '<!-- bench/hot.ts: start -->';
const END = '<!-- bench/hot.ts: end -->';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const cfg = {
  runs: Math.round(envNum('BENCH_RUNS', 3)),
  seconds: Math.round(envNum('BENCH_SECONDS', 4)),
  sizeMiB: Math.round(envNum('BENCH_SIZE_MIB', 64)),
  connections: (process.env.BENCH_CONNECTIONS ?? '10,100').split(',').map(Number),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_MAX_MINUTES', 30),
};
const { say, loads } = progress();
hardStop('bench:hot', cfg.maxMinutes);

const KINDS = ['manifest by tag', 'manifest by digest', 'HEAD of a blob', '4 KiB Range', '64 KiB Range'] as const;
type Kind = (typeof KINDS)[number];
const PEERS = ['bare Fastify', 'docker-registry', 'pullthrough', 'pullthrough, log at warn'] as const;
type Peer = (typeof PEERS)[number];
/** the peers each kind is measured on: logging's cost only where it is largest, on the manifest paths */
const peersOf = (k: Kind): readonly Peer[] => (k.startsWith('manifest') ? PEERS : PEERS.slice(0, 3));

interface Target {
  base: string;
  /** the path of each kind on this peer */
  path: Record<Kind, string>;
}

interface Run {
  rps: number;
  non2xx: number;
}

/**
 * HEADs by ApacheBench (`ab -k -i`, from apache2-utils): wrk waits for the body a HEAD answer's
 * Content-Length announces, and stalls. ab is one thread, so its figures are lower than wrk's
 * would be, for every peer alike.
 */
async function ab(url: string, conns: number): Promise<Run> {
  const { stdout } = await run('ab', ['-q', '-k', '-i', '-c', String(conns), '-t', String(cfg.seconds), '-n', '10000000', url], { timeoutMs: (cfg.seconds + 30) * 1000 });
  const rps = Number(/Requests per second:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
  const non2xx = Number(/Non-2xx responses:\s+(\d+)/.exec(stdout)?.[1] ?? 0) + Number(/Failed requests:\s+(\d+)/.exec(stdout)?.[1] ?? 0);
  return { rps, non2xx };
}

/** One wrk run; the Lua script sets the method, the Accept header and (for Ranges) a random offset per request. */
async function wrk(work: string, url: string, kind: Kind, conns: number, blobSize: number): Promise<Run> {
  if (kind === 'HEAD of a blob') return ab(url, conns);
  const len = kind === '4 KiB Range' ? 4096 : kind === '64 KiB Range' ? 65536 : 0;
  const lua = [
    'wrk.method = "GET"',
    `wrk.headers["Accept"] = "${OCI_MANIFEST}"`,
    len
      ? `request = function() local off = math.random(0, ${blobSize - len}); return wrk.format(nil, nil, { ["Range"] = "bytes=" .. off .. "-" .. (off + ${len - 1}) }) end`
      : '',
    'done = function(summary, latency, requests) io.write(string.format("NON2XX %d\\n", summary.errors.status)) end',
  ].join('\n');
  const script = join(work, `wrk-${kind.replace(/\W+/g, '-')}.lua`);
  await writeFile(script, lua);
  const { stdout } = await run('wrk', ['-t2', `-c${conns}`, `-d${cfg.seconds}s`, '--latency', '-s', script, url], { timeoutMs: (cfg.seconds + 30) * 1000 });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? NaN);
  const non2xx = Number(/NON2XX (\d+)/.exec(stdout)?.[1] ?? 0);
  return { rps, non2xx };
}

async function startBare(manifestFile: string, blobFile: string): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'bench', 'bare-fastify.ts'), String(port), manifestFile, blobFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  await waitFor(() => out.includes('listening') || undefined, { timeoutMs: 20_000, what: 'bare Fastify' });
  return { url: `http://127.0.0.1:${port}`, child };
}

async function main(): Promise<void> {
  const mach = await machine(['docker-registry']);
  // `wrk -v` prints its version and exits with 1
  const wrkVersion = spawnSync('wrk', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0]!.trim() || 'wrk';
  const snap = await pullthroughSnapshot('hot-cli', say);
  const layout = await buildLayout({ dir: join(ROOT, 'bench', 'out', 'layouts', `hot-1x${cfg.sizeMiB}`), layers: 1, layerBytes: cfg.sizeMiB * MiB, seed: 'bench-hot' }, say);
  const blob = layout.layers[0]!;
  const hex = (d: string) => d.slice('sha256:'.length);
  const work = await makeTempDir('pullthrough-bench-hot-');
  const cleanups: (() => Promise<unknown>)[] = [() => removeDir(work)];
  const results = new Map<string, Run[]>();
  const problems: string[] = [];
  let hwm = NaN;
  let rssAfter = NaN;
  try {
    const registry = await startRegistry({ mode: 'open', startTimeoutMs: 30_000 });
    cleanups.unshift(() => registry.stop());
    await pushLayout(layout.dir, `${registry.host}/one:latest`, { timeoutMs: 600_000 });
    const bare = await startBare(join(layout.dir, 'blobs', 'sha256', hex(layout.manifest.digest)), join(layout.dir, 'blobs', 'sha256', hex(blob.digest)));
    cleanups.unshift(async () => void bare.child.kill('SIGKILL'));
    const pts: Partial<Record<Peer, Pullthrough>> = {};
    for (const [peer, level] of [['pullthrough', 'info'], ['pullthrough, log at warn', 'warn']] as const) {
      const pt = await startPullthrough(snap.cli, join(work, `cache-${level}`), registry.url, join(work, `pt-${level}.log`), ['--log-level', level]);
      cleanups.unshift(() => pt.stop());
      pts[peer] = pt;
      // warm: the tag, the manifest and the blob in its cache
      for (const path of ['/v2/one/manifests/latest', `/v2/one/manifests/${layout.manifest.digest}`, `/v2/one/blobs/${blob.digest}`]) {
        const res = await fetch(pt.url + path, { headers: { accept: OCI_MANIFEST } });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`warming ${peer}: ${path} answered ${res.status}`);
      }
    }
    const registryPaths: Record<Kind, string> = {
      'manifest by tag': '/v2/one/manifests/latest',
      'manifest by digest': `/v2/one/manifests/${layout.manifest.digest}`,
      'HEAD of a blob': `/v2/one/blobs/${blob.digest}`,
      '4 KiB Range': `/v2/one/blobs/${blob.digest}`,
      '64 KiB Range': `/v2/one/blobs/${blob.digest}`,
    };
    const targets: Record<Peer, Target> = {
      'bare Fastify': { base: bare.url, path: { 'manifest by tag': '/manifest', 'manifest by digest': '/manifest', 'HEAD of a blob': '/blob', '4 KiB Range': '/blob', '64 KiB Range': '/blob' } },
      'docker-registry': { base: registry.url, path: registryPaths },
      pullthrough: { base: pts.pullthrough!.url, path: registryPaths },
      'pullthrough, log at warn': { base: pts['pullthrough, log at warn']!.url, path: registryPaths },
    };
    for (let round = 0; round < cfg.runs; round++) {
      say(`round ${round + 1}/${cfg.runs}`);
      for (const kind of KINDS) {
        for (const conns of cfg.connections) {
          const peers = peersOf(kind);
          for (let i = 0; i < peers.length; i++) {
            const peer = peers[(i + round) % peers.length]!;
            const t = targets[peer];
            const r = await wrk(work, t.base + t.path[kind], kind, conns, blob.size);
            const key = `${kind}\n${conns}\n${peer}`;
            results.set(key, [...(results.get(key) ?? []), r]);
            if (r.non2xx) problems.push(`${peer}, ${kind}, ${conns} connections, round ${round + 1}: ${r.non2xx} answers not 2xx`);
          }
          say(`  ${kind}, ${conns} connections: ${peers.map((p) => `${p} ${fmtInt(results.get(`${kind}\n${conns}\n${p}`)!.at(-1)!.rps)}`).join(', ')} req/s`);
        }
      }
    }
    const mem = await readMem(pts.pullthrough!.pid);
    hwm = mem?.hwmMiB ?? NaN;
    rssAfter = mem?.rssMiB ?? NaN;
    problems.push(...(await logProblems([pts.pullthrough!.logPath, pts['pullthrough, log at warn']!.logPath])).slice(0, 10));
  } finally {
    for (const c of cleanups) await c().catch(() => undefined);
  }

  const rps = (kind: Kind, conns: number, peer: Peer) => (results.get(`${kind}\n${conns}\n${peer}`) ?? []).map((r) => r.rps);
  const cell = (xs: number[]) => (xs.length > 1 ? `${fmtInt(median(xs))} (${fmtInt(min(xs))}–${fmtInt(max(xs))})` : fmtInt(xs[0] ?? NaN));
  const rows: string[][] = [];
  const ratios: number[] = [];
  for (const kind of KINDS) {
    for (const conns of cfg.connections) {
      const limit = median(rps(kind, conns, 'bare Fastify'));
      const ours = median(rps(kind, conns, 'pullthrough'));
      ratios.push(ours / limit);
      rows.push([
        kind,
        String(conns),
        cell(rps(kind, conns, 'bare Fastify')),
        `${cell(rps(kind, conns, 'docker-registry'))} (${fmt(median(rps(kind, conns, 'docker-registry')) / limit)}×)`,
        `${cell(rps(kind, conns, 'pullthrough'))} (**${fmt(ours / limit)}×**)`,
      ]);
    }
  }
  const logRows = (['manifest by tag', 'manifest by digest'] as const).flatMap((kind) =>
    cfg.connections.map((conns) => {
      const info = median(rps(kind, conns, 'pullthrough'));
      const warn = median(rps(kind, conns, 'pullthrough, log at warn'));
      return [kind, String(conns), fmtInt(info), fmtInt(warn), `${fmt((1 - info / warn) * 100, 1)} %`];
    }),
  );
  const out: string[] = [];
  out.push(`## Hot paths against the limit of the stack (bench/hot.ts)`);
  out.push('');
  out.push(`Command: \`npm run bench:hot\` (BENCH_RUNS=${cfg.runs} BENCH_SECONDS=${cfg.seconds} BENCH_SIZE_MIB=${cfg.sizeMiB} BENCH_CONNECTIONS=${cfg.connections.join(',')}); ${new Date().toISOString().slice(0, 10)}, ${gitDescribe(ROOT)}, ${snap.note}.`);
  out.push(`Machine: ${mach.nproc} cores, ${mach.memory}; ${wrkVersion}; ${mach['docker-registry']}; load average during the run: median ${fmt(median(loads), 1)}, max ${fmt(max(loads), 1)}. wrk with 2 threads, ${cfg.seconds} s a run, medians of ${cfg.runs} interleaved rounds (min–max), requests per second; the ratio is to the bare Fastify limit of the same row.`);
  out.push('');
  out.push(table(['request', 'connections', 'bare Fastify (the limit)', 'docker-registry', 'pullthrough (log at info)'], rows));
  out.push('');
  out.push(`Target ≥ 0.5× the limit on every row: ${ratios.every((r) => r >= 0.5) ? 'met' : `**not met** (lowest ${fmt(min(ratios))}×)`}. pullthrough's peak RSS over the run: ${fmt(hwm, 0)} MiB (target < 150 MiB: ${hwm < 150 ? 'met' : '**not met**'}); ${fmt(rssAfter, 0)} MiB at the end.`);
  out.push('');
  out.push('What the request log costs (the same requests, a second pullthrough process at `--log-level warn`):');
  out.push('');
  out.push(table(['request', 'connections', 'log at info, req/s', 'log at warn, req/s', 'cost of info'], logRows));
  out.push('');
  if (problems.length) out.push(`Problems:\n${problems.map((p) => `- ${p}`).join('\n')}\n`);
  const report = out.join('\n');
  console.log(report);
  if (cfg.results !== '-') {
    await writeSection(cfg.results, START, END, report);
    say(`wrote ${cfg.results}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
