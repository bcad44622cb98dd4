// Cold and warm clients of a blob for the benchmarks: curl processes started together, each a full
// GET; some pipe the body through `openssl dgst -sha256`, which must equal the digest; every one
// must get a 200 and exactly the blob's size. A batch reports when its last client finished.
import { spawn } from 'node:child_process';
import { atExit } from '../test/helpers/util.js';
import type { Descriptor } from './layout.js';
import { fmt, max, median, min } from './stats.js';

export interface ClientResult {
  status: string;
  bytes: number;
  /** hex sha256 of the body, for hashing clients */
  sha256?: string;
  /** seconds from the start of the batch until this client finished */
  doneS: number;
  err: string;
}

export interface Batch {
  /** first start to last finish, s */
  seconds: number;
  firstS: number;
  medianS: number;
  /** time it took to start every client, s */
  spawnS: number;
  hashed: number;
  failures: string[];
}

/** process groups of running clients, killed if the bench exits while they run */
const liveClients = new Set<number>();
atExit(() => {
  for (const pgid of liveClients) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // gone
    }
  }
});

const HASHING = 'set -o pipefail; curl "$@" -o - -w "%{stderr}%{http_code} %{size_download}\\n" | openssl dgst -sha256 -r';

export function startClient(url: string, timeoutS: number, hash: boolean, t0: number): Promise<ClientResult> {
  // a client receiving under 1 KiB/s for 60 s gives up: a stall shows up as a failure, not a hang
  const curl = ['-sS', '--max-time', String(timeoutS), '--speed-limit', '1024', '--speed-time', '60', url];
  const child = hash
    ? spawn('bash', ['-c', HASHING, 'fanout-client', ...curl], { stdio: ['ignore', 'pipe', 'pipe'], detached: true })
    : spawn('curl', [...curl, '-o', '/dev/null', '-w', '%{http_code} %{size_download}\n'], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const pgid = child.pid;
  if (pgid) liveClients.add(pgid);
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => {
    const finish = (code: number | null, e?: Error): void => {
      if (pgid) liveClients.delete(pgid);
      const doneS = (performance.now() - t0) / 1000;
      const statusLine = /^(\d{3}) (\d+)\s*$/m.exec(hash ? err : out);
      const rest = (hash ? err.replace(statusLine?.[0] ?? '', '') : err).trim();
      resolve({
        status: statusLine?.[1] ?? '',
        bytes: Number(statusLine?.[2] ?? 0),
        ...(hash ? { sha256: /^([0-9a-f]{64})\b/.exec(out)?.[1] ?? '' } : {}),
        doneS,
        err: e ? e.message : code === 0 ? '' : `exit ${String(code)}${rest ? `: ${rest.slice(0, 200)}` : ''}`,
      });
    };
    child.once('error', (e) => finish(null, e));
    child.once('close', (code) => finish(code));
  });
}

/** Indices of the clients that hash their body: spread over the start order, first and last included. */
export function hashingIndices(n: number, k: number): Set<number> {
  const out = new Set<number>();
  if (k <= 0) return out;
  if (k === 1 || n === 1) return new Set([0]);
  for (let i = 0; i < Math.min(k, n); i++) out.add(Math.round((i * (n - 1)) / (Math.min(k, n) - 1)));
  return out;
}

/** `n` clients of `url` started at once, `hashing` of them (spread over the start order) hashing the body. */
export async function curlClients(url: string, n: number, blob: Descriptor, timeoutS: number, hashing: number): Promise<Batch> {
  const hashers = hashingIndices(n, n === 1 ? Math.min(1, hashing) : hashing);
  const t0 = performance.now();
  const runs: Promise<ClientResult>[] = [];
  for (let i = 0; i < n; i++) runs.push(startClient(url, timeoutS, hashers.has(i), t0));
  const spawnS = (performance.now() - t0) / 1000;
  return batchOf(await Promise.all(runs), blob, spawnS, hashers.size);
}

/** What a set of finished clients adds up to; each one's problems (status, size, digest) are failures. */
export function batchOf(results: readonly ClientResult[], blob: Descriptor, spawnS: number, hashed: number): Batch {
  const done = results.map((r) => r.doneS);
  const hex = blob.digest.slice('sha256:'.length);
  const failures: string[] = [];
  for (const r of results) {
    const problems: string[] = [];
    if (r.status !== '200') problems.push(`status ${r.status || 'none'}`);
    if (r.bytes !== blob.size) problems.push(`${r.bytes} of ${blob.size} bytes`);
    if (r.sha256 !== undefined && r.sha256 !== hex) problems.push(`body sha256 ${r.sha256 ? `${r.sha256.slice(0, 12)}…` : 'missing'}, not the digest`);
    if (r.err) problems.push(r.err);
    if (problems.length) failures.push(`after ${fmt(r.doneS, 1)} s: ${problems.join(', ')}`);
  }
  return { seconds: max(done), firstS: min(done), medianS: median(done), spawnS, hashed, failures };
}
