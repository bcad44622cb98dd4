// pullthrough as a child process (from src, with tsx, and the Node flags of the CLI's first line),
// for tests that measure its memory: its resident set is then its own, read from /proc.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Agent, request } from 'undici';
import { atExit, freePort, makeTempDir, removeDir, waitFor } from './util.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** The Node flags of a CLI's `#!/usr/bin/env -S node FLAGS` line (bench/procs.ts uses them too). */
export function nodeFlagsOf(cli: string): string[] {
  const first = readFileSync(cli, 'utf8').split('\n', 1)[0] ?? '';
  const m = /^#!\S*env\s+-S\s+node\s+(.*)$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/) : [];
}

export interface ChildProxy {
  url: string;
  pid: number;
}

export interface ChildProxyOptions {
  /** upstream name -> URL, in order (the first is the default) */
  upstreams: Record<string, string>;
  /** written as the config file (JSON) */
  config?: Record<string, unknown>;
  /** serve HTTPS with these files (--tls-cert, --tls-key); `ca` is what the readiness probe trusts */
  tls?: { cert: string; key: string; ca: Buffer };
}

const live = new Set<ChildProcess>();
atExit(() => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * Starts `pullthrough serve` with a fresh cache, waits for GET /v2/ = 200, and kills it (and
 * removes the cache) at `t`'s teardown. With setpriv, it also dies with the test process.
 */
export async function startChildProxy(t: { teardown(fn: () => unknown): void }, opts: ChildProxyOptions): Promise<ChildProxy> {
  const work = await makeTempDir('pullthrough-child-');
  t.teardown(() => removeDir(work));
  const port = await freePort();
  const argv = [...nodeFlagsOf(join(ROOT, 'src', 'cli.ts')), '--import', 'tsx', 'src/cli.ts', 'serve', '--listen', `127.0.0.1:${port}`, '--cache-dir', join(work, 'cache'), '--log-level', 'warn'];
  for (const [name, url] of Object.entries(opts.upstreams)) argv.push('--upstream', `${name}=${url}`);
  if (opts.config) {
    await writeFile(join(work, 'config.json'), JSON.stringify(opts.config));
    argv.push('--config', join(work, 'config.json'));
  }
  if (opts.tls) argv.push('--tls-cert', opts.tls.cert, '--tls-key', opts.tls.key);
  const [cmd, args] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...argv]] : [process.execPath, argv];
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  live.add(child);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  t.teardown(async () => {
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await new Promise((r) => child.once('exit', r));
    live.delete(child);
  });
  const url = `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  const dispatcher = opts.tls && new Agent({ connect: { ca: opts.tls.ca } });
  t.teardown(() => dispatcher?.close());
  const died = new AbortController();
  child.once('exit', (code, signal) => died.abort(new Error(`pullthrough exited (${code ?? signal}): ${stderr}`)));
  await waitFor(
    async () => {
      const res = await request(`${url}/v2/`, { signal: AbortSignal.timeout(1000), ...(dispatcher ? { dispatcher } : {}) }).catch(() => undefined);
      await res?.body.dump();
      return res?.statusCode === 200;
    },
    { timeoutMs: 30_000, intervalMs: 100, what: `pullthrough on ${url}`, signal: died.signal },
  );
  return { url, pid: child.pid! };
}

/** A process's resident set now (rss) and at its peak (VmHWM), in bytes. */
export async function memoryOf(pid: number): Promise<{ rss: number; peak: number }> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN) * 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM') };
}

/** Resets a process's VmHWM to its current resident set (clear_refs, Linux 4.0+). */
export async function resetPeak(pid: number): Promise<void> {
  await writeFile(`/proc/${pid}/clear_refs`, '5');
}
