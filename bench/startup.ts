// npm run bench:startup — what a large filesystem cache costs at start-up: for caches of
// BENCH_BLOB_COUNTS synthetic blobs (100 random bytes each, named by their digest, as the store
// lays them out), the time from starting `pullthrough serve` until it answers GET /v2/ (200), the
// time until its index of the cache is built (its "cache index built" log line), and its resident
// set once the index is built, against the same process on an empty cache: bytes per cached blob.
// The caches are generated once under bench/out/startup/ and reused (the files' times are set to a
// spread of past days, as a real cache's last reads would be).
//
// Environment: BENCH_BLOB_COUNTS (10000,100000,1000000), BENCH_RUNS (3), BENCH_PULLTHROUGH_CLI,
// BENCH_RESULTS (bench/RESULTS.md; "-" for stdout only), BENCH_MAX_MINUTES (40, hard stop).
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, openSync, closeSync, utimesSync, writeFileSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, makeTempDir, removeDir, sleep, waitFor } from '../test/helpers/util.js';
import { envNum, gitDescribe, hardStop, machine, progress, pullthroughSnapshot, ROOT, writeSection } from './env.js';
import { nodeFlagsOf, readMem } from './procs.js';
import { fmt, fmtInt, max, median, min, table } from './stats.js';

const START = '<!-- bench/startup.ts: start -->';
const END = '<!-- bench/startup.ts: end -->';
const cfg = {
  counts: (process.env.BENCH_BLOB_COUNTS ?? '10000,100000,1000000').split(',').map(Number),
  runs: Math.round(envNum('BENCH_RUNS', 3)),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_MAX_MINUTES', 40),
};
const { say, loads } = progress();
hardStop('bench:startup', cfg.maxMinutes);

/** A cache directory of `n` 100-byte blobs, generated once (a marker file says it is complete). */
function cacheOf(n: number): string {
  const dir = join(ROOT, 'bench', 'out', 'startup', `blobs-${n}`);
  const marker = join(dir, 'complete');
  if (existsSync(marker)) return dir;
  say(`generating a cache of ${fmtInt(n)} blobs in ${dir}`);
  const now = Date.now();
  for (let i = 0; i < n; i++) {
    const body = randomBytes(100);
    const hex = createHash('sha256').update(body).digest('hex');
    const shard = join(dir, 'blobs', 'sha256', hex.slice(0, 2));
    if (i < 256 * 4 || !existsSync(shard)) mkdirSync(shard, { recursive: true });
    const path = join(shard, hex);
    writeFileSync(path, body);
    const t = new Date(now - ((i * 7919) % (30 * 86_400_000)));
    utimesSync(path, t, t);
    if (i > 0 && i % 100_000 === 0) say(`  ${fmtInt(i)} of ${fmtInt(n)}`);
  }
  writeFileSync(marker, '');
  return dir;
}

interface Sample {
  answerS: number;
  indexS: number;
  rssMiB: number;
  hwmMiB: number;
  blobs: number;
}

/** Starts pullthrough on a copy-free view of `dir` (its own spool under a temp dir), measures, stops it. */
async function measure(cli: string, dir: string | undefined, work: string): Promise<Sample> {
  const port = await freePort();
  const cacheDir = dir ?? join(work, `empty-${port}`);
  const logPath = join(work, `log-${port}.json`);
  const fd = openSync(logPath, 'w');
  const t0 = performance.now();
  // the upstream is never asked: nothing is pulled
  const child = spawn(process.execPath, [...nodeFlagsOf(cli), cli, 'serve', '--listen', `127.0.0.1:${port}`, '--cache-dir', cacheDir, '--max-size', '1TiB', '--upstream', 'bench=http://127.0.0.1:9', '--log-level', 'info'], { stdio: ['ignore', fd, fd] });
  closeSync(fd);
  try {
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/v2/`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined))?.status === 200, { timeoutMs: 600_000, intervalMs: 10, what: 'pullthrough to answer' });
    const answerS = (performance.now() - t0) / 1000;
    const built = await waitFor(async () => {
      const line = (await readFile(logPath, 'utf8')).split('\n').find((l) => l.includes('"cache index built"'));
      return line ? (JSON.parse(line) as { blobs: number }) : undefined;
    }, { timeoutMs: 600_000, intervalMs: 20, what: 'the cache index' });
    const indexS = (performance.now() - t0) / 1000;
    await sleep(1000); // let the scan's garbage go
    const mem = await readMem(child.pid!);
    return { answerS, indexS, rssMiB: mem?.rssMiB ?? NaN, hwmMiB: mem?.hwmMiB ?? NaN, blobs: built.blobs };
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    await rm(join(cacheDir, 'tmp'), { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const mach = await machine([]);
  const snap = await pullthroughSnapshot('startup-cli', say);
  const work = await makeTempDir('pullthrough-bench-startup-');
  const dirs = new Map(cfg.counts.map((n) => [n, cacheOf(n)]));
  const samples = new Map<number, Sample[]>([[0, []], ...cfg.counts.map((n) => [n, []] as [number, Sample[]])]);
  try {
    for (let round = 0; round < cfg.runs; round++) {
      for (const n of [0, ...cfg.counts]) {
        const s = await measure(snap.cli, n === 0 ? undefined : dirs.get(n), work);
        if (s.blobs !== n) throw new Error(`the index holds ${s.blobs} blobs, not ${n}`);
        samples.get(n)!.push(s);
        say(`round ${round + 1}: ${fmtInt(n)} blobs: answers after ${fmt(s.answerS)} s, indexed after ${fmt(s.indexS)} s, RSS ${fmt(s.rssMiB, 0)} MiB (peak ${fmt(s.hwmMiB, 0)})`);
      }
    }
  } finally {
    await removeDir(work);
  }
  const cell = (xs: number[], d = 2) => `${fmt(median(xs), d)} (${fmt(min(xs), d)}–${fmt(max(xs), d)})`;
  const empty = median(samples.get(0)!.map((s) => s.rssMiB));
  const rows = [0, ...cfg.counts].map((n) => {
    const xs = samples.get(n)!;
    const rss = median(xs.map((s) => s.rssMiB));
    return [fmtInt(n), `${cell(xs.map((s) => s.answerS))} s`, `${cell(xs.map((s) => s.indexS))} s`, `${fmt(rss, 0)} MiB (peak ${fmt(median(xs.map((s) => s.hwmMiB)), 0)})`, n === 0 ? '—' : `${fmt(((rss - empty) * 1024 * 1024) / n, 0)} B`];
  });
  const out = [
    '## Start-up with a large cache (bench/startup.ts)',
    '',
    `Command: \`npm run bench:startup\` (BENCH_BLOB_COUNTS=${cfg.counts.join(',')} BENCH_RUNS=${cfg.runs}); ${new Date().toISOString().slice(0, 10)}, ${gitDescribe(ROOT)}, ${snap.note}.`,
    `Machine: ${mach.nproc} cores, ${mach.memory}, ${mach.kernel}; load average during the run: median ${fmt(median(loads), 1)}, max ${fmt(max(loads), 1)}. Synthetic blobs of 100 bytes, in the store's own layout; each start a fresh process (page cache warm after the first round); medians of ${cfg.runs} (min–max).`,
    '',
    table(['cached blobs', 'answers GET /v2/ after', 'index built after', 'RSS once indexed', 'RSS per blob over an empty cache'], rows),
    '',
  ].join('\n');
  console.log(out);
  if (cfg.results !== '-') {
    await writeSection(cfg.results, START, END, out);
    say(`wrote ${cfg.results}`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
