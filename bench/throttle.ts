// A throttling TCP forwarder standing in for the network between a registry client and the
// upstream: downstream bytes (upstream -> client) pass a token bucket, shared by every connection
// ('aggregate', one link) or per connection; bytes towards the upstream are delayed by a fixed
// one-way latency. It runs in its own process (see startThrottleProcess) so its pacing is not
// disturbed by the benchmark driver, and reports the bytes it carried.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

export type ThrottleMode = 'aggregate' | 'per-connection';

export interface ThrottleOptions {
  targetHost: string;
  targetPort: number;
  /** downstream rate, MiB/s */
  mibps: number;
  /** one-way delay added to bytes sent towards the target (so one request costs about this much more) */
  latencyMs: number;
  mode: ThrottleMode;
}

export interface ThrottleStats {
  /** bytes carried target -> clients */
  down: number;
  /** bytes carried clients -> target */
  up: number;
  connections: number;
}

/** Virtual-time token bucket (GCRA): take(n) resolves when n more bytes fit the rate. */
class Pacer {
  private tat = 0;
  private readonly burstMs: number;
  constructor(private readonly bytesPerMs: number, burstMs = 8) {
    this.burstMs = burstMs;
  }
  async take(n: number): Promise<void> {
    const now = performance.now();
    this.tat = Math.max(now, this.tat) + n / this.bytesPerMs;
    const wait = this.tat - this.burstMs - now;
    if (wait > 0) await sleep(wait);
  }
}

/** Resolves on 'drain' or 'close', removing both listeners either way. */
function drained(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      s.off('drain', done);
      s.off('close', done);
      resolve();
    };
    s.on('drain', done);
    s.on('close', done);
  });
}

export function startThrottle(opts: ThrottleOptions): Promise<{ server: Server; port: number; stats: ThrottleStats }> {
  const stats: ThrottleStats = { down: 0, up: 0, connections: 0 };
  const bytesPerMs = (opts.mibps * 1024 * 1024) / 1000;
  const shared = new Pacer(bytesPerMs);
  const SLICE = 64 * 1024;

  async function pump(from: Socket, to: Socket, pacer: Pacer): Promise<void> {
    for await (const chunk of from as AsyncIterable<Buffer>) {
      for (let off = 0; off < chunk.length; off += SLICE) {
        const piece = chunk.subarray(off, Math.min(chunk.length, off + SLICE));
        await pacer.take(piece.length);
        if (to.destroyed) return;
        stats.down += piece.length;
        if (!to.write(piece)) await drained(to);
      }
    }
    to.end();
  }

  const server = createServer((client) => {
    stats.connections++;
    const upstream = createConnection({ host: opts.targetHost, port: opts.targetPort });
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const kill = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', kill);
    upstream.on('error', kill);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    // towards the target: a fixed delay per chunk keeps order (same delay, FIFO timers)
    let inFlight = 0;
    client.on('data', (chunk: Buffer) => {
      stats.up += chunk.length;
      inFlight += chunk.length;
      if (inFlight > 4 << 20) client.pause();
      const send = (): void => {
        inFlight -= chunk.length;
        if (!upstream.destroyed) upstream.write(chunk);
        if (inFlight <= 4 << 20) client.resume();
      };
      if (opts.latencyMs > 0) setTimeout(send, opts.latencyMs);
      else send();
    });
    client.on('end', () => setTimeout(() => upstream.end(), opts.latencyMs));
    const pacer = opts.mode === 'aggregate' ? shared : new Pacer(bytesPerMs);
    pump(upstream, client, pacer).catch(kill);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === 'object' && addr ? addr.port : 0, stats });
    });
  });
}

// ---- child-process side ----

type Request = { type: 'stats'; id: number };
type Reply = { type: 'ready'; port: number } | { type: 'stats'; id: number; stats: ThrottleStats };

export interface ThrottleProcess {
  url: string;
  host: string;
  port: number;
  pid: number;
  stats(): Promise<ThrottleStats>;
  stop(): Promise<void>;
}

/** Forks this module as a throttle process in front of `target` (http://127.0.0.1:PORT). */
export async function startThrottleProcess(target: string, opts: Omit<ThrottleOptions, 'targetHost' | 'targetPort'>): Promise<ThrottleProcess> {
  const u = new URL(target);
  const config: ThrottleOptions = { ...opts, targetHost: u.hostname, targetPort: Number(u.port) };
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--throttle-child', JSON.stringify(config)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending = new Map<number, (s: ThrottleStats) => void>();
  let nextId = 1;
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('throttle did not start within 20s')), 20_000);
    child.once('exit', (code) => reject(new Error(`throttle exited with ${String(code)}`)));
    child.on('message', (m: Reply) => {
      if (m.type === 'ready') {
        clearTimeout(timer);
        resolve(m.port);
      } else if (m.type === 'stats') {
        pending.get(m.id)?.(m.stats);
        pending.delete(m.id);
      }
    });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    pid: child.pid ?? 0,
    stats: () =>
      new Promise<ThrottleStats>((resolve, reject) => {
        const id = nextId++;
        const timer = setTimeout(() => reject(new Error('throttle stats timed out')), 5000);
        pending.set(id, (s) => {
          clearTimeout(timer);
          resolve(s);
        });
        child.send({ type: 'stats', id } satisfies Request);
      }),
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    },
  };
}

if (process.argv[2] === '--throttle-child' && process.send) {
  const config = JSON.parse(process.argv[3] ?? '{}') as ThrottleOptions;
  const { port, stats } = await startThrottle(config);
  process.on('message', (m: Request) => {
    if (m.type === 'stats') process.send?.({ type: 'stats', id: m.id, stats: { ...stats } } satisfies Reply);
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => process.exit(0));
  process.send({ type: 'ready', port } satisfies Reply);
}
