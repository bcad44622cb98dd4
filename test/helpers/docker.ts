// Runs Debian's Docker Engine (dockerd, package docker.io) as a child process with its own data
// root, exec root, pidfile, socket and daemon.json in a fresh temp dir, and drives it with the
// docker CLI (its config dir there too, so `docker login` never writes ~/.docker). dockerd runs
// without touching the host's network (no iptables rules, no bridge, ip_forward left alone) and on
// the vfs storage driver (plain copies, no overlayfs); it starts its own containerd under the exec
// root.
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { atExit, makeTempDir, removeDir, run, waitFor } from './util.js';
import type { RunResult } from './util.js';

/** The docker CLI of the docker.io package, which matches its dockerd; else whatever is on PATH. */
const DOCKER_CLI = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';

/** Why Docker Engine cannot be used here, or undefined when dockerd and the CLI both run. */
export function dockerUnavailable(): string | undefined {
  for (const cmd of ['dockerd', DOCKER_CLI]) {
    const res = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (res.error) return `${cmd} is not installed (${res.error.message}); apt-get install docker.io`;
    if (res.status !== 0) return `${cmd} --version failed: ${res.stderr}`;
  }
  return undefined;
}

export interface DockerdOptions {
  /** daemon.json settings (e.g. the README's registry-mirrors). */
  daemonJson?: Record<string, unknown>;
  /** Extra environment for dockerd (e.g. HTTPS_PROXY, which it uses for registry traffic). */
  env?: NodeJS.ProcessEnv;
  startTimeoutMs?: number;
}

export interface Dockerd {
  /** unix:///…/docker.sock */
  host: string;
  /** Temp dir holding daemon.json, dockerd.log, root/, exec/ and the CLI's config dir. */
  dir: string;
  /** `docker version --format '{{.Server.Version}}'` */
  version: string;
  /** Runs `docker <args>` against this daemon, with a CLI config dir of its own; `input` is its stdin. */
  docker(args: readonly string[], timeoutMs?: number, input?: string): Promise<RunResult>;
  /** The CLI's config dir (config.json holds what `docker login` stored). */
  cliConfig: string;
  /** Contents of dockerd.log, for debugging failures and for what dockerd says about a pull. */
  log(): Promise<string>;
  /** Stops dockerd (which stops its containerd) and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
/** dockerd bind-mounts its data root onto itself; a graceful stop unmounts it, a kill does not. */
const mounted = new Set<string>();
atExit(() => {
  for (const child of live) child.kill('SIGKILL');
  for (const root of mounted) spawnSync('umount', ['-l', root], { timeout: 5000 });
});

/** The kernel kills dockerd if this process dies without running exit hooks (see registry.ts). */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Docker reads these; keep the test's own settings explicit. */
function cleanEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const drop = /^(DOCKER_|HTTPS?_PROXY$|ALL_PROXY$|NO_PROXY$)/i;
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.test(k))), ...extra };
}

/** dockerd's major version; 20.10 writes a trust key to /etc/docker unless told where. */
function dockerdMajor(): number {
  const out = spawnSync('dockerd', ['--version'], { encoding: 'utf8', timeout: 10_000 }).stdout ?? '';
  return Number(/version (\d+)\./.exec(out)?.[1] ?? 0);
}

function isMounted(path: string): boolean {
  try {
    return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === path);
  } catch {
    return false;
  }
}

async function kill(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
  live.delete(child);
}

export async function startDockerd(opts: DockerdOptions = {}): Promise<Dockerd> {
  const dir = await makeTempDir('pt-dkr-');
  const socket = join(dir, 'docker.sock');
  const host = `unix://${socket}`;
  const root = join(dir, 'root');
  const cliConfig = join(dir, 'cli');
  await mkdir(cliConfig);
  const daemonJson = {
    ...opts.daemonJson,
    // Docker 20.10 keeps a "trust key" in /etc/docker/key.json; this (its only) setting for the
    // path keeps it in the temp dir. Later versions dropped the key and would refuse the setting.
    ...(dockerdMajor() < 23 ? { 'deprecated-key-path': join(dir, 'key.json') } : {}),
  };
  const configFile = join(dir, 'daemon.json');
  await writeFile(configFile, JSON.stringify(daemonJson, null, 2));
  const argv = [
    'dockerd',
    '--iptables=false', '--ip6tables=false', '--ip-forward=false', '--bridge=none', '--storage-driver=vfs',
    '--data-root', root,
    '--exec-root', join(dir, 'exec'),
    '--pidfile', join(dir, 'dockerd.pid'),
    '--config-file', configFile,
    '-H', host,
  ];
  const logPath = join(dir, 'dockerd.log');
  const logFd = openSync(logPath, 'a');
  const env = cleanEnv(opts.env);
  const child = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', '--', ...argv], { cwd: dir, env, stdio: ['ignore', logFd, logFd] })
    : spawn(argv[0]!, argv.slice(1), { cwd: dir, env, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  live.add(child);
  mounted.add(root);
  const log = (): Promise<string> => readFile(logPath, 'utf8').catch(() => '');

  const cliEnv = cleanEnv({ DOCKER_HOST: host, DOCKER_CONFIG: cliConfig });
  const docker = (args: readonly string[], timeoutMs = 60_000, input?: string): Promise<RunResult> =>
    run(DOCKER_CLI, args, { env: cliEnv, timeoutMs, input });

  let version: string;
  try {
    const died = new AbortController();
    child.once('exit', (code, signal) => died.abort(new Error(`dockerd exited (${signal ?? code})`)));
    version = await waitFor(
      async () => {
        if (!existsSync(socket)) return undefined;
        return (await docker(['version', '--format', '{{.Server.Version}}'], 5000)).stdout.trim();
      },
      { timeoutMs: opts.startTimeoutMs ?? 60_000, intervalMs: 200, what: `dockerd on ${socket}`, signal: died.signal },
    );
  } catch (err) {
    await kill(child);
    const text = await log();
    await cleanUp(root, dir);
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${text.slice(-4000)}`);
  }

  let stopped: Promise<void> | undefined;
  return {
    host,
    dir,
    version,
    docker,
    cliConfig,
    log,
    stop: () =>
      (stopped ??= (async () => {
        await kill(child);
        await cleanUp(root, dir);
      })()),
  };
}

async function cleanUp(root: string, dir: string): Promise<void> {
  if (isMounted(root)) await run('umount', ['-l', root], { timeoutMs: 10_000 }).catch(() => undefined);
  mounted.delete(root);
  await removeDir(dir);
}
