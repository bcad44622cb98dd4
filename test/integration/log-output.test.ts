// `pullthrough serve` logs JSON lines when its stdout is not a terminal (a pipe, a file, journald)
// and lines for a person (pino-pretty) when it is one (a pseudo-terminal from script(1)).
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { nodeFlagsOf } from '../helpers/child-proxy.js';
import { atExit, freePort, makeTempDir, removeDir, waitFor, type Test } from '../helpers/util.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const live = new Set<ChildProcess>();
atExit(() => {
  for (const child of live) if (child.pid) process.kill(-child.pid, 'SIGKILL');
});

interface Served {
  url: string;
  output(): string;
}

/**
 * Starts the CLI in a process group of its own (so that script(1) and its child stop together),
 * its upstream a port nothing listens on; stopped at `t`'s teardown.
 */
async function serve(t: Test, tty: boolean): Promise<Served> {
  const work = await makeTempDir('pullthrough-logs-');
  t.teardown(() => removeDir(work));
  const port = await freePort();
  const dead = await freePort();
  const argv = [...nodeFlagsOf(join(ROOT, 'src', 'cli.ts')), '--import', 'tsx', 'src/cli.ts', 'serve', '--listen', `127.0.0.1:${port}`, '--cache-dir', join(work, 'cache'), '--upstream', `up.test=http://127.0.0.1:${dead}`, '--log-level', 'info'];
  const command = [process.execPath, ...argv];
  const quoted = command.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const [cmd, args] = tty ? ['script', ['-qfec', quoted, '/dev/null']] : [command[0]!, command.slice(1)];
  const env = { ...process.env };
  delete env.NO_COLOR;
  delete env.FORCE_COLOR;
  const child = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true, env });
  live.add(child);
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(-child.pid!, 'SIGKILL');
      await exited;
    }
    live.delete(child);
  });
  await waitFor(() => out.includes('pullthrough ready'), { timeoutMs: 30_000, intervalMs: 100, what: `pullthrough ready (${tty ? 'tty' : 'pipe'})` });
  return { url: `http://127.0.0.1:${port}`, output: () => out };
}

async function requests(url: string): Promise<void> {
  for (const path of ['/v2/', '/v2/team/app/manifests/v1']) {
    const res = await request(`${url}${path}`);
    await res.body.dump();
  }
}

t.test('stdout not a terminal: one JSON object per line, the completion line with its fields', async (t) => {
  const s = await serve(t, false);
  await requests(s.url);
  const line = await waitFor(() => s.output().split('\n').find((l) => l.includes('/v2/team/app/manifests/v1') && l.includes('request completed')), { timeoutMs: 10_000, what: 'the completion line' });
  const lines = s.output().split('\n').filter((l) => l.trim() !== '');
  for (const l of lines) t.doesNotThrow(() => JSON.parse(l), `JSON: ${l.slice(0, 80)}`);
  const done = JSON.parse(line) as Record<string, unknown>;
  t.match(done, { level: 30, msg: 'request completed', method: 'GET', path: '/v2/team/app/manifests/v1', route: 'manifest', upstream: 'up.test', aborted: false });
  t.ok(typeof done.status === 'number' && done.status >= 500, `an upstream nothing listens on: a 5xx (${String(done.status)})`);
  t.type(done.bytes, 'number');
  t.type(done.ms, 'number');
  t.type(done.reqId, 'string');
});

t.test('stdout a terminal: lines for a person (pino-pretty), not JSON', async (t) => {
  const s = await serve(t, true);
  await requests(s.url);
  await waitFor(() => s.output().includes('GET /v2/team/app/manifests/v1'), { timeoutMs: 10_000, what: 'the completion line' });
  const plain = s.output().replace(/\x1b\[[0-9;]*m/g, '');
  const lines = plain.split(/\r?\n/).filter((l) => / INFO: GET \/v2\//.test(l));
  t.equal(lines.length, 2, 'a line per request');
  for (const l of lines) t.throws(() => JSON.parse(l), `not JSON: ${l.slice(0, 80)}`);
  t.match(s.output(), /\x1b\[[0-9;]*m/, 'coloured');
  t.match(plain, /INFO: GET \/v2\/ 200 2 B [\d.]+ ms \{"reqId":"req-1"\}/, 'the base request: method, path, status, bytes, duration, its id');
  t.match(plain, /INFO: GET \/v2\/team\/app\/manifests\/v1 50\d \d+ B [\d.]+ ms up\.test \{"reqId":"req-2"\}/, 'the manifest request: and its upstream');
});
