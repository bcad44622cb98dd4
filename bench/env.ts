// Small helpers every benchmark shares: numeric settings from the environment, the machine a run
// was made on, and which source it measured (a private build of src/ with its fingerprint).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../test/helpers/util.js';

/** The repository root. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** A positive (or, with allowZero, non-negative) number from the environment, else the default. */
export function envNum(name: string, dflt: number, allowZero = false): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero)) throw new Error(`${name}=${v}: expected a ${allowZero ? 'non-negative' : 'positive'} number`);
  return n;
}

/** The commit, and whether src/ had uncommitted changes. */
export function gitDescribe(root: string): string {
  try {
    const head = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { stdio: 'pipe' }).toString().trim();
    // --no-optional-locks: never write the index, not even its stat cache
    const dirty = execFileSync('git', ['-C', root, '--no-optional-locks', 'status', '--porcelain', '--', 'src'], { stdio: 'pipe' })
      .toString()
      .trim();
    return dirty ? `${head} with uncommitted changes in src/` : head;
  } catch {
    return 'unknown';
  }
}

/** sha256 over the file names and contents under `sub` (src/ by default), so a result can be tied to the code it measured. */
export async function srcFingerprint(sub = 'src'): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string): Promise<void> => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) h.update(relative(ROOT, p)).update('\0').update(await readFile(p)).update('\0');
    }
  };
  await walk(join(ROOT, sub));
  return h.digest('hex').slice(0, 12);
}

export interface Snapshot {
  /** the built cli.js */
  cli: string;
  /** what was measured, for the report */
  note: string;
  fingerprint: string;
}

/**
 * src/ built with `tsc -p tsconfig.build.json` into a benchmark's own directory under bench/out
 * (other work may rebuild dist/ while a benchmark runs), or the prebuilt CLI named by
 * BENCH_PULLTHROUGH_CLI. The snapshot is reused when src/ and the build config are what it was
 * built from; src/ is fingerprinted before and after a build, which is repeated (three tries in
 * all) when src/ changed meanwhile.
 */
export async function pullthroughSnapshot(name: string, say: (msg: string) => void): Promise<Snapshot> {
  const prebuilt = process.env.BENCH_PULLTHROUGH_CLI;
  if (prebuilt) return { cli: resolve(prebuilt), note: `prebuilt ${prebuilt}`, fingerprint: `${await srcFingerprint()} (of src/ now; the prebuilt CLI may differ)` };
  const outDir = join(ROOT, 'bench', 'out', name);
  const note = `src/ built by the bench (tsc -p tsconfig.build.json) into ${relative(ROOT, outDir)}`;
  const config = createHash('sha256')
    .update(await readFile(join(ROOT, 'tsconfig.build.json')))
    .update(await readFile(join(ROOT, 'tsconfig.json')))
    .digest('hex')
    .slice(0, 12);
  const stampPath = join(outDir, '.bench-src');
  for (let attempt = 1; attempt <= 3; attempt++) {
    const before = await srcFingerprint();
    if ((await readFile(stampPath, 'utf8').catch(() => '')) === `${before} ${config}`) {
      say(`reusing ${relative(ROOT, outDir)} (src/ ${before} unchanged since it was built)`);
      return { cli: join(outDir, 'cli.js'), note, fingerprint: before };
    }
    await rm(outDir, { recursive: true, force: true });
    say(`building src/ (fingerprint ${before}) into ${relative(ROOT, outDir)} (tsc -p tsconfig.build.json)`);
    try {
      execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', outDir], {
        cwd: ROOT,
        stdio: 'pipe',
        timeout: 300_000,
      });
    } catch (e) {
      if (attempt < 3 && (await srcFingerprint()) !== before) continue; // caught mid-edit
      throw new Error(`build failed:\n${((e as { stdout?: Buffer }).stdout?.toString() ?? '').slice(0, 4000)}`);
    }
    const after = await srcFingerprint();
    if (after === before) {
      await writeFile(stampPath, `${after} ${config}`);
      return { cli: join(outDir, 'cli.js'), note, fingerprint: after };
    }
    say(`src/ changed during the build (${before} → ${after}); building again`);
  }
  throw new Error('src/ kept changing during three builds; try again later');
}

/** The machine, and the first line of `--version` of each tool (curl's shortened to its version). */
export async function machine(tools: readonly string[]): Promise<Record<string, string>> {
  const ver = async (cmd: string, args: string[]): Promise<string> => {
    try {
      const { stdout, stderr } = await run(cmd, args, { timeoutMs: 10_000 });
      return (stdout || stderr).trim().split('\n')[0] ?? '';
    } catch {
      return 'unknown';
    }
  };
  const out: Record<string, string> = {
    nproc: (await ver('nproc', [])) || String(cpus().length),
    cpu: cpus()[0]?.model ?? 'unknown',
    memory: `${(totalmem() / 2 ** 30).toFixed(1)} GiB`,
    kernel: await ver('uname', ['-r']),
    node: process.version,
  };
  for (const tool of tools) {
    const line = await ver(tool, tool === 'openssl' ? ['version'] : ['--version']);
    out[tool] = tool === 'curl' ? line.split(' ').slice(0, 2).join(' ') : line;
  }
  return out;
}

/**
 * Progress lines stamped with the time since the start ("[mm:ss] …"). Each samples the 1-minute
 * load average into `loads`, for the report: the machine is shared with other work.
 */
export function progress(): { say(msg: string): void; loads: number[]; started: number } {
  const started = performance.now();
  const loads: number[] = [];
  const say = (msg: string): void => {
    loads.push(loadavg()[0] ?? NaN);
    const s = Math.round((performance.now() - started) / 1000);
    console.log(`[${String(Math.floor(s / 60)).padStart(2, '0')}:${String(s % 60).padStart(2, '0')}] ${msg}`);
  };
  return { say, loads, started };
}

/**
 * Replaces a benchmark's section of RESULTS.md (between its `start` and `end` markers), or
 * appends it; the rest stays as it is. The file is read right before it is written: other
 * benchmarks write their own sections of it.
 */
export async function writeSection(file: string, start: string, end: string, report: string): Promise<void> {
  const section = `${start}\n${report}\n${end}`;
  const text = await readFile(file, 'utf8').catch(() => '');
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  const next =
    a >= 0 && b > a
      ? `${text.slice(0, a)}${section}${text.slice(b + end.length)}`
      : `${text}${text && !text.endsWith('\n\n') ? (text.endsWith('\n') ? '\n' : '\n\n') : ''}${section}\n`;
  await writeFile(file, next);
}

/**
 * A benchmark's hard stop after `minutes`, and its exit on SIGINT or SIGTERM: the test helpers'
 * exit hooks then kill the registries, clients and temp dirs it started, and what runs with
 * pdeathsig or over IPC (pullthrough, the throttle) dies with it.
 */
export function hardStop(name: string, minutes: number): void {
  setTimeout(() => {
    console.error(`${name}: exceeded BENCH_MAX_MINUTES=${minutes}; aborting`);
    process.exit(3);
  }, minutes * 60_000).unref();
  for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => process.exit(130));
}
