// A fleet as the tests run it: Debian's redis-server on a free port (stoppable, pausable with
// SIGSTOP to stall it), and pullthrough replicas as child processes (the CLI from src) sharing
// one s3rver bucket and that Redis. Each replica listens on a port of its own that survives a
// restart, so a replica killed with SIGKILL comes back at the same address.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import type { S3rver } from './s3rver.js';
import { atExit, freePort, makeTempDir, removeDir, waitFor } from './util.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
export const FLEET_SECRET = 'fleet-secret-for-tests-0123456789';

const live = new Set<ChildProcess>();
atExit(() => {
  for (const c of live) c.kill('SIGKILL');
});

function spawnChild(cmd: string, args: string[], env?: NodeJS.ProcessEnv): ChildProcess {
  const [c, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', cmd, ...args]] : [cmd, args];
  const child = spawn(c, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

async function ended(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export interface RedisServer {
  url: string;
  port: number;
  /** SIGSTOP: connections stay open, nothing answers */
  pause(): void;
  resume(): void;
  stop(): Promise<void>;
  /** starts it again on the same port (after stop) */
  start(): Promise<void>;
}

export async function startRedis(): Promise<RedisServer> {
  const port = await freePort();
  const dir = await makeTempDir('pullthrough-redis-');
  let child: ChildProcess | undefined;
  const start = async () => {
    const c = spawnChild('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir]);
    child = c;
    let out = '';
    c.stdout!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
    c.stderr!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-4000)));
    await waitFor(() => /Ready to accept connections/.test(out) || undefined, { timeoutMs: 15_000, intervalMs: 20, what: `redis-server on ${port}: ${out}` });
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    pause: () => child?.kill('SIGSTOP'),
    resume: () => child?.kill('SIGCONT'),
    start,
    stop: async () => {
      if (!child) return;
      child.kill('SIGCONT');
      await ended(child, 'SIGTERM');
      child = undefined;
    },
  };
}

export interface Replica {
  /** 127.0.0.1:PORT */
  host: string;
  url: string;
  pid(): number;
  output(): string;
  /** kill -9, as a crash would */
  kill(): Promise<void>;
  stop(): Promise<void>;
  /** starts it again on the same port and cache directory (after kill or stop) */
  start(): Promise<void>;
}

export interface ReplicaOptions {
  /** the upstream every replica uses (a hop before the registry, to count its requests) */
  upstream: string;
  s3: S3rver;
  redis: RedisServer;
  /** merged into the config file */
  config?: Record<string, unknown>;
  logLevel?: string;
  /** flags for Node before the script (the CLI's own by default: none here) */
  nodeFlags?: string[];
}

/** One replica of a fleet (see the file's comment); stopped at `t`'s teardown. */
export async function startReplica(t: { teardown(fn: () => unknown): void }, o: ReplicaOptions): Promise<Replica> {
  const dir = await makeTempDir('pullthrough-fleet-');
  t.teardown(() => removeDir(dir));
  const port = await freePort();
  const config = {
    upstreams: [{ name: 'upstream.test', url: o.upstream }],
    retries: 0,
    cache: { s3: { bucket: o.s3.bucket, prefix: 'fleet/', endpoint: o.s3.endpoint, forcePathStyle: true } },
    fleet: { redis: o.redis.url, secret: FLEET_SECRET, leaseTtl: '2s' },
    ...o.config,
  };
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
  let child: ChildProcess | undefined;
  let out = '';
  const url = `http://127.0.0.1:${port}`;
  const start = async () => {
    const args = [...(o.nodeFlags ?? []), '--import', 'tsx', 'src/cli.ts', 'serve', '--config', join(dir, 'config.json'), '--listen', `127.0.0.1:${port}`, '--cache-dir', join(dir, 'cache'), '--log-level', o.logLevel ?? 'info'];
    const c = spawnChild(process.execPath, args, { ...process.env, ...o.s3.env, AWS_EC2_METADATA_DISABLED: 'true', AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' });
    child = c;
    c.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    c.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const died = new AbortController();
    c.once('exit', (code, signal) => died.abort(new Error(`replica ${port} exited (${signal ?? code})\n${out.slice(-3000)}`)));
    await waitFor(
      async () => {
        const res = await request(`${url}/v2/`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
        await res?.body.dump();
        return res?.statusCode === 200;
      },
      { timeoutMs: 30_000, intervalMs: 100, what: `replica on ${url}`, signal: died.signal },
    );
  };
  const replica: Replica = {
    host: `127.0.0.1:${port}`,
    url,
    pid: () => child?.pid ?? 0,
    output: () => out,
    kill: async () => {
      if (child) await ended(child, 'SIGKILL');
      child = undefined;
    },
    stop: async () => {
      if (child) await ended(child, 'SIGTERM');
      child = undefined;
    },
    start,
  };
  t.teardown(() => replica.kill());
  await start();
  return replica;
}

/** The JSON log lines of a replica with this message (from offset `since` of its output on; a line cut there is left out). */
export function logLines(replica: Replica, msg: string, since = 0): Record<string, unknown>[] {
  return replica
    .output()
    .slice(since)
    .split('\n')
    .flatMap((l) => {
      try {
        return l.startsWith('{') ? [JSON.parse(l) as Record<string, unknown>] : [];
      } catch {
        return [];
      }
    })
    .filter((l) => l.msg === msg);
}
