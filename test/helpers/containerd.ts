// Runs Debian's containerd (1.6) as a child process with its own root, state and gRPC socket in a
// fresh temp dir, and drives it with `ctr`. Only what image pulls need is loaded: no CRI, no
// runtimes or task service, and the `native` snapshotter (plain copies, works without overlayfs).
// With `cri`, the CRI plugin is loaded too (it needs the task service and a runtime, which start
// nothing until a pod is run), on the native snapshotter, with its CNI directories in the temp dir
// and no cgroups or AppArmor, so that its ImageService can pull (test/helpers/cri.ts).
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { atExit, makeTempDir, removeDir, run, waitFor } from './util.js';
import type { RunResult } from './util.js';

/** Plugins CRI needs, which a pull-only containerd does without. */
const CRI_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.runtime.v1.linux',
  'io.containerd.runtime.v2.task',
  'io.containerd.monitor.v1.cgroups',
  'io.containerd.service.v1.tasks-service',
  'io.containerd.grpc.v1.tasks',
];

/** Plugins the tests never need. */
const DISABLED_PLUGINS = [
  'io.containerd.internal.v1.opt', // would create /opt/containerd
  'io.containerd.internal.v1.restart',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.overlayfs',
];

export const SNAPSHOTTER = 'native';
/** The containerd namespace the helper's ctr commands use. */
export const NAMESPACE = 'pullthrough-test';

/** Why containerd cannot be used here, or undefined when `containerd` and `ctr` both run. */
export function containerdUnavailable(): string | undefined {
  for (const cmd of ['containerd', 'ctr']) {
    const res = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (res.error) return `${cmd} is not installed (${res.error.message}); apt-get install containerd`;
    if (res.status !== 0) return `${cmd} --version failed: ${res.stderr}`;
  }
  return undefined;
}

export interface CtrImage {
  ref: string;
  mediaType: string;
  digest: string;
}

export interface PullOptions {
  /** A containerd hosts directory (`<dir>/<registry host>/hosts.toml`), passed as --hosts-dir. */
  hostsDir: string;
  /** e.g. linux/amd64 */
  platform?: string;
  /** "user:password", sent to the hosts (the mirror included) that answer with a Basic challenge (`ctr --user`) */
  user?: string;
  timeoutMs?: number;
}

export interface Containerd {
  /** The gRPC unix socket. */
  address: string;
  /** Temp dir holding config.toml, containerd.log, root/ and state/. */
  dir: string;
  /** Output of `ctr version` (client and server). */
  version: string;
  /** Runs `ctr --address <socket> --namespace <ns> <args>`. */
  ctr(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** `ctr image pull` through the hosts dir, unpacking with the native snapshotter. */
  pull(ref: string, opts: PullOptions): Promise<RunResult>;
  /** `ctr image ls`, parsed. */
  images(): Promise<CtrImage[]>;
  /** Digests in the content store (`ctr content ls -q`). */
  content(): Promise<Set<string>>;
  /** Contents of containerd.log, for debugging failures. */
  log(): Promise<string>;
  /** Stops containerd and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
atExit(() => {
  for (const child of live) child.kill('SIGKILL');
});

/** The kernel kills containerd if this process dies without running exit hooks (see registry.ts). */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/**
 * ctr/containerd read these; keep the test's settings explicit, and go through no proxy but the
 * one a test gives (`extra`, e.g. an egress trap's variables).
 */
function cleanEnv(extra?: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const drop = /^(CONTAINERD_|HTTPS?_PROXY$|ALL_PROXY$|NO_PROXY$)/i;
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.test(k))), ...(extra ?? { NO_PROXY: '*' }) };
}

async function kill(child: ChildProcess, graceMs = 5000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
  live.delete(child);
}

const toml = (s: string): string => JSON.stringify(s); // a TOML basic string is a JSON string for paths

export interface ContainerdOptions {
  startTimeoutMs?: number;
  /**
   * Load the CRI plugin, with this TOML appended to config.toml (e.g. the README's
   * `[plugins."io.containerd.grpc.v1.cri".registry]` table); '' for CRI's defaults.
   */
  cri?: string;
  /** The environment's proxy settings for containerd and ctr (default: no proxy at all). */
  env?: NodeJS.ProcessEnv;
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<Containerd> {
  const dir = await makeTempDir('pt-ctd-');
  const address = join(dir, 'containerd.sock');
  if (Buffer.byteLength(`${address}.ttrpc`) > 107) {
    await removeDir(dir);
    throw new Error(`socket path ${address} is too long for a unix socket; set TMPDIR to a shorter directory`);
  }
  const configPath = join(dir, 'config.toml');
  await writeFile(
    configPath,
    [
      'version = 2',
      `root = ${toml(join(dir, 'root'))}`,
      `state = ${toml(join(dir, 'state'))}`,
      `disabled_plugins = [${[...DISABLED_PLUGINS, ...(opts.cri === undefined ? CRI_PLUGINS : [])].map(toml).join(', ')}]`,
      '',
      '[grpc]',
      `  address = ${toml(address)}`,
      '',
      '[debug]',
      '  level = "info"',
      '',
      ...(opts.cri === undefined
        ? []
        : [
            '[plugins."io.containerd.grpc.v1.cri"]',
            '  disable_cgroup = true',
            '  disable_apparmor = true',
            '  restrict_oom_score_adj = true',
            '[plugins."io.containerd.grpc.v1.cri".containerd]',
            `  snapshotter = ${toml(SNAPSHOTTER)}`,
            '[plugins."io.containerd.grpc.v1.cri".cni]', // its default conf_dir would be created in /etc
            `  bin_dir = ${toml(join(dir, 'cni', 'bin'))}`,
            `  conf_dir = ${toml(join(dir, 'cni', 'net.d'))}`,
            '',
            opts.cri,
          ]),
    ].join('\n'),
  );
  const logFd = openSync(join(dir, 'containerd.log'), 'a');
  const argv = ['containerd', '--config', configPath];
  const env = cleanEnv(opts.env);
  const child = SETPRIV
    ? spawn(SETPRIV, ['--pdeathsig', 'SIGKILL', '--', ...argv], { cwd: dir, env, stdio: ['ignore', logFd, logFd] })
    : spawn(argv[0]!, argv.slice(1), { cwd: dir, env, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  live.add(child);
  const log = (): Promise<string> => readFile(join(dir, 'containerd.log'), 'utf8').catch(() => '');

  const ctr = (args: readonly string[], timeoutMs = 30_000): Promise<RunResult> =>
    run('ctr', ['--address', address, '--namespace', NAMESPACE, '--timeout', `${Math.ceil(timeoutMs / 1000)}s`, ...args], {
      env,
      timeoutMs: timeoutMs + 5000,
    });

  let version: string;
  try {
    const died = new AbortController();
    child.once('exit', (code, signal) => died.abort(new Error(`containerd exited (${signal ?? code})`)));
    version = await waitFor(
      async () => {
        if (!existsSync(address)) return undefined;
        return (await ctr(['version'], 2000)).stdout;
      },
      { timeoutMs: opts.startTimeoutMs ?? 20_000, intervalMs: 100, what: `containerd on ${address}`, signal: died.signal },
    );
  } catch (err) {
    await kill(child);
    const text = await log();
    await removeDir(dir);
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${text}`);
  }

  let stopped: Promise<void> | undefined;
  return {
    address,
    dir,
    version,
    ctr,
    pull: (ref, p) =>
      ctr(
        [
          'image', 'pull',
          '--hosts-dir', p.hostsDir,
          '--snapshotter', SNAPSHOTTER,
          ...(p.platform !== undefined ? ['--platform', p.platform] : []),
          ...(p.user !== undefined ? ['--user', p.user] : []),
          ref,
        ],
        p.timeoutMs ?? 30_000,
      ),
    images: async () => {
      const { stdout } = await ctr(['image', 'ls']);
      return stdout
        .split('\n')
        .slice(1)
        .map((line) => line.trim().split(/\s+/))
        .filter((cols) => cols.length >= 3 && cols[0] !== '')
        .map(([ref, mediaType, digest]) => ({ ref: ref!, mediaType: mediaType!, digest: digest! }));
    },
    content: async () => {
      const { stdout } = await ctr(['content', 'ls', '-q']);
      return new Set(stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('sha256:')));
    },
    log,
    stop: () =>
      (stopped ??= (async () => {
        await kill(child);
        await removeDir(dir);
      })()),
  };
}

export interface Mirror {
  /** The registry host that image references name, e.g. first.example */
  host: string;
  /** The mirror's base URL, e.g. http://127.0.0.1:PORT */
  mirror: string;
  /** For an https mirror: the CA (PEM file) its certificate is verified against */
  ca?: string;
  /** For an mTLS mirror: the client certificate and key (PEM files) */
  client?: { cert: string; key: string };
}

/**
 * Writes `<dir>/<host>/hosts.toml` for each registry host: the mirror (plain http or https, from
 * its URL scheme; with its `ca` and `client` certificate when given) with pull and resolve
 * capabilities, in front of `server = "https://<host>"`.
 */
export async function writeHostsDir(dir: string, mirrors: readonly Mirror[]): Promise<void> {
  for (const { host, mirror, ca, client } of mirrors) {
    await mkdir(join(dir, host), { recursive: true });
    const lines = [`server = ${toml(`https://${host}`)}`, '', `[host.${toml(mirror)}]`, '  capabilities = ["pull", "resolve"]'];
    if (ca !== undefined) lines.push(`  ca = ${toml(ca)}`);
    if (client !== undefined) lines.push(`  client = [[${toml(client.cert)}, ${toml(client.key)}]]`);
    await writeFile(join(dir, host, 'hosts.toml'), [...lines, ''].join('\n'));
  }
}
