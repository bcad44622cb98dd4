// Processes the benchmark drives: pullthrough from a built CLI, curl clients, skopeo pulls, and
// /proc readers for memory (VmHWM, VmRSS) of any of them.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { freePort, sleep, waitFor } from '../test/helpers/util.js';
import { skopeo } from '../test/helpers/skopeo.js';
import { nodeFlagsOf } from '../test/helpers/child-proxy.js';

export { nodeFlagsOf }; // the Node flags of the CLI's first line, as `pullthrough` runs with

const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Memory figures of a process, in MiB. */
export interface Mem {
  rssMiB: number;
  hwmMiB: number;
}

export async function readMem(pid: number): Promise<Mem | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const kib = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
    return { rssMiB: kib('VmRSS') / 1024, hwmMiB: kib('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** CPU time (user + system) a process has used so far, in seconds. */
export async function readCpu(pid: number): Promise<number> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/** Samples VmRSS of `pid` every `everyMs` until stopped; returns the largest sample, MiB. */
export function sampleRss(pid: number, everyMs = 50): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const m = await readMem(pid);
      if (m && m.rssMiB > peak) peak = m.rssMiB;
      await sleep(everyMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      const m = await readMem(pid);
      if (m && m.rssMiB > peak) peak = m.rssMiB;
      return peak;
    },
  };
}

/** The pid of the docker-registry serving `<dir>/config.yml` (the test helper does not expose it). */
export async function registryPid(dir: string): Promise<number | undefined> {
  const want = join(dir, 'config.yml');
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const argv = (await readFile(`/proc/${name}/cmdline`, 'utf8')).split('\0');
      if (argv.some((a) => a.endsWith('docker-registry')) && argv.includes(want)) return Number(name);
    } catch {
      // gone
    }
  }
  return undefined;
}

export interface Pullthrough {
  url: string;
  host: string;
  pid: number;
  cacheDir: string;
  logPath: string;
  stop(): Promise<void>;
}

/** Starts `<cli> serve [extraArgs]` as its own process and waits for GET /v2/ = 200. */
export async function startPullthrough(cli: string, cacheDir: string, upstreamUrl: string, logPath: string, extraArgs: readonly string[] = []): Promise<Pullthrough> {
  const port = await freePort();
  const args = [...nodeFlagsOf(cli), cli, 'serve', '--listen', `127.0.0.1:${port}`, '--cache-dir', cacheDir, '--upstream', `bench=${upstreamUrl}`, '--log-level', 'warn', ...extraArgs];
  const logFd = openSync(logPath, 'a');
  const child: ChildProcess = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...args], { stdio: ['ignore', logFd, logFd] })
    : spawn(process.execPath, args, { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  };
  try {
    await waitFor(
      async () => {
        if (child.exitCode !== null) throw new Error(`pullthrough exited with ${child.exitCode}`);
        const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        return res.status === 200;
      },
      { timeoutMs: 20_000, intervalMs: 50, what: `pullthrough on ${url}` },
    );
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}; log: ${(await readFile(logPath, 'utf8').catch(() => '')).slice(-2000)}`);
  }
  return { url, host: `127.0.0.1:${port}`, pid: child.pid ?? 0, cacheDir, logPath, stop };
}

export interface GetResult {
  /** aggregate MiB/s: all bytes over the wall time from the first start to the last finish */
  mibps: number;
  seconds: number;
  bytes: number;
  /** clients that did not get a 200 with the full body */
  failures: string[];
}

/** `clients` concurrent `curl` processes, each a full GET of `url` to /dev/null. */
export async function curlGets(url: string, clients: number, expectBytes: number, timeoutS: number): Promise<GetResult> {
  const t0 = performance.now();
  const runs = Array.from({ length: clients }, () =>
    new Promise<{ code: string; bytes: number; err: string }>((resolve) => {
      const child = spawn('curl', ['-s', '-o', '/dev/null', '--max-time', String(timeoutS), '-w', '%{http_code} %{size_download}', url], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('close', (code) => {
        const [status = '', size = '0'] = out.trim().split(' ');
        resolve({ code: status, bytes: Number(size), err: code === 0 ? '' : `curl exit ${String(code)} ${err.trim()}` });
      });
    }),
  );
  const results = await Promise.all(runs);
  const seconds = (performance.now() - t0) / 1000;
  const bytes = results.reduce((a, r) => a + r.bytes, 0);
  const failures = results
    .filter((r) => r.code !== '200' || r.bytes !== expectBytes || r.err)
    .map((r) => `status ${r.code}, ${r.bytes} bytes ${r.err}`.trim());
  return { mibps: bytes / (1 << 20) / seconds, seconds, bytes, failures };
}

/** Times `skopeo copy docker://ref dir:dest` (isolated config, plain HTTP); seconds. */
export async function timedSkopeoPull(ref: string, dest: string, timeoutMs: number): Promise<number> {
  const t0 = performance.now();
  await skopeo(['copy', '--retry-times', '0', '--src-tls-verify=false', '--quiet', '--preserve-digests', `docker://${ref}`, `dir:${dest}`], timeoutMs);
  return (performance.now() - t0) / 1000;
}

/** The lines at warn and above in pullthrough's JSON logs (and any line that is not JSON), shortened. */
export async function logProblems(paths: readonly string[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    for (const line of (await readFile(p, 'utf8').catch(() => '')).split('\n')) {
      if (!line.trim()) continue;
      try {
        const j = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
        if ((j.level ?? 0) >= 40) out.push(`${j.level === 40 ? 'warn' : 'error'}: ${j.msg ?? ''} ${JSON.stringify(j.err ?? '')}`.slice(0, 300));
      } catch {
        out.push(line.slice(0, 300));
      }
    }
  }
  return out;
}
