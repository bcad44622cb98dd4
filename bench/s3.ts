// npm run bench:s3 — warm blob GET throughput of pullthrough with its cache in S3 (s3rver on
// 127.0.0.1), from the S3 tier (cache.s3 alone) and from the local tier (cache.s3.localTier),
// against the filesystem-only cache, all three in the same run, medians of BENCH_S3_RUNS rounds
// (the order of the three rotates each round). For reference, the bucket itself: curl on a
// pre-signed URL straight to s3rver, which is what redirect mode hands clients.
//
// Environment: BENCH_S3_RUNS (5), BENCH_S3_SIZE_MIB (256), BENCH_S3_CLIENTS (16),
// BENCH_RESULTS (bench/RESULTS.md; "-" for stdout only), BENCH_S3_MAX_MINUTES (20, hard stop).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { startRegistry } from '../test/helpers/registry.js';
import { startS3rver, type S3rver } from '../test/helpers/s3rver.js';
import { pushLayout } from '../test/helpers/skopeo.js';
import { makeTempDir, removeDir, waitFor } from '../test/helpers/util.js';
import { buildLayout } from './layout.js';
import { curlGets, nodeFlagsOf, readCpu, sampleRss } from './procs.js';
import { fmt, max, median, min, ratioCell, table } from './stats.js';
import { envNum } from './env.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const OUT = join(ROOT, 'bench', 'out');
const MiB = 1 << 20;
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
const START = '<!-- bench/s3.ts: start -->';
const END = '<!-- bench/s3.ts: end -->';


const cfg = {
  runs: Math.round(envNum('BENCH_S3_RUNS', 5)),
  sizeMiB: Math.round(envNum('BENCH_S3_SIZE_MIB', 256)),
  clients: Math.round(envNum('BENCH_S3_CLIENTS', 16)),
  results: process.env.BENCH_RESULTS ?? join(ROOT, 'bench', 'RESULTS.md'),
  maxMinutes: envNum('BENCH_S3_MAX_MINUTES', 20),
};
const say = (msg: string): void => void process.stderr.write(`[bench:s3] ${msg}\n`);
setTimeout(() => {
  say(`BENCH_S3_MAX_MINUTES=${cfg.maxMinutes} reached; stopping`);
  process.exit(3);
}, cfg.maxMinutes * 60_000).unref();

interface Target {
  name: string;
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** `pullthrough serve` from src/ (through tsx, like the tests, with the Node flags of its first line) with a config file, on a port read from its log. */
async function startProxy(name: string, dir: string, doc: Record<string, unknown>, s3: S3rver): Promise<Target> {
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'config.json');
  await writeFile(config, JSON.stringify({ logLevel: 'info', ...doc, cache: { dir: join(dir, 'cache'), maxSize: '64GiB', ...(doc.cache as object) } }));
  const logPath = join(dir, 'pullthrough.log');
  const args = [...nodeFlagsOf(join(ROOT, 'src', 'cli.ts')), '--import', 'tsx', 'src/cli.ts', 'serve', '--config', config, '--listen', '127.0.0.1:0'];
  const fd = openSync(logPath, 'w');
  const env = { ...process.env, ...s3.env, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' };
  const child: ChildProcess = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...args], { cwd: ROOT, env, stdio: ['ignore', fd, fd] })
    : spawn(process.execPath, args, { cwd: ROOT, env, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    const host = await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`exited with ${child.exitCode}`);
        return /"msg":"Server listening at http:\/\/(127\.0\.0\.1:\d+)"/.exec(await readFile(logPath, 'utf8'))?.[1];
      },
      { timeoutMs: 30_000, what: `pullthrough (${name})` },
    );
    return { name, url: `http://${host}`, pid: child.pid ?? 0, stop };
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${(await readFile(logPath, 'utf8').catch(() => '')).slice(-2000)}`);
  }
}

interface Figures {
  one: number[];
  many: number[];
  rssMiB: number[];
  /** the proxy's CPU seconds per GiB served, over both measurements: load on the machine barely moves it */
  cpuPerGiB: number[];
}

async function measure(url: string, bytes: number, pid: number | undefined, f: Figures): Promise<void> {
  const timeoutS = Math.max(120, (bytes / MiB) * cfg.clients / 10);
  const cpu0 = pid ? await readCpu(pid) : NaN;
  const one = await curlGets(url, 1, bytes, timeoutS);
  const rss = pid ? sampleRss(pid) : undefined;
  const many = await curlGets(url, cfg.clients, bytes, timeoutS);
  const peak = await rss?.stop();
  const cpu = pid ? (await readCpu(pid)) - cpu0 : NaN;
  const failures = [...one.failures, ...many.failures];
  if (failures.length) throw new Error(`${url}: ${failures.slice(0, 3).join('; ')}`);
  f.one.push(one.mibps);
  f.many.push(many.mibps);
  if (peak !== undefined) f.rssMiB.push(peak);
  if (Number.isFinite(cpu)) f.cpuPerGiB.push(cpu / ((one.bytes + many.bytes) / 2 ** 30));
}

const cell = (xs: number[]): string => `${fmt(median(xs), 0)} (${fmt(min(xs), 0)}–${fmt(max(xs), 0)})`;

async function main(): Promise<void> {
  const work = await makeTempDir('pullthrough-bench-s3-');
  const cleanups: (() => Promise<void>)[] = [() => removeDir(work)];
  try {
    const layout = await buildLayout({ dir: join(OUT, 'layouts', `one-1x${cfg.sizeMiB}`), layers: 1, layerBytes: cfg.sizeMiB * MiB, seed: 'bench-one' }, say);
    const layer = layout.layers[0]!;
    const registry = await startRegistry({ mode: 'open' });
    cleanups.push(() => registry.stop());
    say(`pushing a ${cfg.sizeMiB} MiB single-layer image`);
    await pushLayout(layout.dir, `${registry.host}/one:latest`, { timeoutMs: 900_000 });
    const s3 = await startS3rver({ bucket: 'bench' });
    cleanups.push(() => s3.stop());
    const upstreams = [{ name: 'bench', url: registry.url }];
    const s3Doc = (prefix: string, extra: Record<string, unknown> = {}) => ({
      upstreams,
      cache: { s3: { bucket: s3.bucket, prefix, endpoint: s3.endpoint, forcePathStyle: true, ...extra } },
    });
    const targets = [
      await startProxy('filesystem cache', join(work, 'fs'), { upstreams }, s3),
      await startProxy('S3 tier (cache.s3)', join(work, 's3'), s3Doc('s3/'), s3),
      await startProxy('local tier (cache.s3.localTier)', join(work, 'tier'), s3Doc('tier/', { localTier: true }), s3),
    ];
    for (const t of targets) cleanups.push(() => t.stop());

    // warm-up: one GET fills each cache; wait until both bucket copies are complete
    const client = s3.client();
    cleanups.push(async () => client.destroy());
    const path = `/v2/one/blobs/${layer.digest}`;
    for (const t of targets) {
      say(`warming ${t.name}`);
      await measure(`${t.url}${path}`, layer.size, undefined, { one: [], many: [], rssMiB: [], cpuPerGiB: [] });
    }
    const hex = layer.digest.slice('sha256:'.length);
    for (const prefix of ['s3/', 'tier/']) {
      await waitFor(() => client.send(new HeadObjectCommand({ Bucket: s3.bucket, Key: `${prefix}blobs/sha256/${hex}` })).then(() => true, () => false), {
        timeoutMs: 120_000,
        what: `the blob under ${prefix} in the bucket`,
      });
    }
    const direct = await getSignedUrl(client, new GetObjectCommand({ Bucket: s3.bucket, Key: `s3/blobs/sha256/${hex}` }), { expiresIn: 3600 });

    const rows = [...targets.map((t) => t.name), 'the bucket itself (pre-signed URL, no proxy)'];
    const figures = new Map<string, Figures>(rows.map((r) => [r, { one: [], many: [], rssMiB: [], cpuPerGiB: [] }]));
    for (let round = 0; round < cfg.runs; round++) {
      const order = [...targets.slice(round % 3), ...targets.slice(0, round % 3)];
      for (const t of order) {
        say(`round ${round + 1}/${cfg.runs}: ${t.name}`);
        await measure(`${t.url}${path}`, layer.size, t.pid, figures.get(t.name)!);
      }
      say(`round ${round + 1}/${cfg.runs}: the bucket itself`);
      await measure(direct, layer.size, undefined, figures.get(rows[3]!)!);
    }

    const fs = figures.get(targets[0]!.name)!;
    const report = [
      `Warm GET of one ${cfg.sizeMiB} MiB blob (${fmt(layer.size / MiB, 1)} MiB gzip) with curl, ${cfg.runs} rounds, median (min–max);`,
      `aggregate MiB/s over all clients. Ratio: against the filesystem cache in the same round. s3rver 3.7 on`,
      `127.0.0.1 plays the bucket (one Node process, files on the same disk); ${cpus().length} cores, ${fmt(totalmem() / 2 ** 30, 0)} GiB,`,
      `Node ${process.version}. \`npm run bench:s3\`, ${new Date().toISOString().slice(0, 10)}.`,
      '',
      table(
        ['cache', '1 client MiB/s', `${cfg.clients} clients MiB/s`, 'ratio to fs (1 / N)', 'proxy CPU s per GiB', `peak RSS MiB (${cfg.clients} clients)`],
        rows.map((r) => {
          const f = figures.get(r)!;
          const ratio = r === targets[0]!.name ? '1' : `${ratioCell(f.one, fs.one)} / ${ratioCell(f.many, fs.many)}`;
          const cpu = f.cpuPerGiB.length ? fmt(median(f.cpuPerGiB), 2) : 'n/a';
          return [r, cell(f.one), cell(f.many), ratio, cpu, f.rssMiB.length ? fmt(median(f.rssMiB), 0) : 'n/a'];
        }),
      ),
    ].join('\n');
    process.stdout.write(`${report}\n`);
    if (cfg.results !== '-') await writeSection(cfg.results, report);
  } finally {
    for (const c of cleanups.reverse()) await c().catch((e: unknown) => say(`cleanup: ${String(e)}`));
  }
}

/** bench/pull.ts keeps what follows this line when it rewrites RESULTS.md. */
const PULL_NOTES_MARKER = '<!-- notes: everything below this line is kept when bench/pull.ts rewrites this file -->';

/**
 * Replaces this benchmark's section of RESULTS.md (between its markers), leaving the rest as it
 * is; a new section goes at the end, below bench/pull.ts's notes marker, so its rewrites keep it.
 */
async function writeSection(file: string, report: string): Promise<void> {
  const section = `${START}\n## Warm blob GETs with the cache in S3 (bench/s3.ts)\n\n${report}\n${END}`;
  const text = await readFile(file, 'utf8').catch(() => '');
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  let next: string;
  if (a >= 0 && b > a) {
    next = `${text.slice(0, a)}${section}${text.slice(b + END.length)}`;
  } else {
    const head = text.includes(PULL_NOTES_MARKER) ? text : `${text}${text ? '\n' : ''}${PULL_NOTES_MARKER}\n`;
    next = `${head.replace(/\n*$/, '\n\n')}${section}\n`;
  }
  await writeFile(file, next);
  say(`wrote the S3 section of ${relative(ROOT, file)}`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    say(`failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
    process.exit(1);
  },
);
