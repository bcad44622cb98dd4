// podman, buildah and skopeo (the containers/image family, Debian's packages) with a private
// world in a fresh temp dir: their own registries.conf (CONTAINERS_REGISTRIES_CONF), storage
// (vfs driver, graph root and run root there, CONTAINERS_STORAGE_CONF), containers.conf, signature
// policy, auth file, HOME and TMPDIR. Nothing under /etc, /var/lib/containers or /run is used
// for state, and no daemon runs: each command is a process of its own.
import { spawnSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTempDir, removeDir, run } from './util.js';
import type { RunResult } from './util.js';

/** Why podman or buildah cannot be used here, or undefined when both run. */
export function podmanUnavailable(): string | undefined {
  for (const [cmd, pkg] of [['podman', 'podman'], ['buildah', 'buildah']] as const) {
    const res = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (res.error) return `${cmd} is not installed (${res.error.message}); apt-get install ${pkg}`;
    if (res.status !== 0) return `${cmd} --version failed: ${res.stderr}`;
  }
  return undefined;
}

export interface ContainersHomeOptions {
  /** The registries.conf text (e.g. the README's mirrors); empty when omitted. */
  registriesConf?: string;
  /** Extra environment for every command (e.g. HTTPS_PROXY). */
  env?: NodeJS.ProcessEnv;
}

export type Tool = 'podman' | 'buildah' | 'skopeo';

export interface ContainersHome {
  /** The temp dir holding the configuration files, storage/ and home/. */
  dir: string;
  /** Runs `<tool> <args>` in this world; a `pull` (podman, buildah) or `copy` (skopeo) gets its policy; `input` is its stdin. */
  run(tool: Tool, args: readonly string[], timeoutMs?: number, input?: string): Promise<RunResult>;
  /** The auth file (REGISTRY_AUTH_FILE) that `podman login` and `buildah login` write. */
  authFile: string;
  /** Removes the storage and the configuration. Idempotent. */
  remove(): Promise<void>;
}

const toml = (s: string): string => JSON.stringify(s); // a TOML basic string is a JSON string for paths

/** Proxy and containers variables are the test's to set, not the caller's environment's. */
function cleanEnv(extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const drop = /^(CONTAINERS_|REGISTRY_AUTH_FILE$|BUILDAH_|STORAGE_|HTTPS?_PROXY$|ALL_PROXY$|NO_PROXY$)/i;
  return { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !drop.test(k))), ...extra };
}

export async function makeContainersHome(opts: ContainersHomeOptions = {}): Promise<ContainersHome> {
  const dir = await makeTempDir('pt-ctrs-');
  const path = (name: string): string => join(dir, name);
  for (const d of ['home', 'tmp', 'net']) await mkdir(path(d));
  await writeFile(path('registries.conf'), opts.registriesConf ?? '');
  await writeFile(path('storage.conf'), ['[storage]', 'driver = "vfs"', `graphroot = ${toml(path('storage/root'))}`, `runroot = ${toml(path('storage/run'))}`, ''].join('\n'));
  await writeFile(
    path('containers.conf'),
    [
      '[engine]',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "none"',
      `tmp_dir = ${toml(path('libpod'))}`,
      `volume_path = ${toml(path('volumes'))}`,
      '[network]',
      // podman 4's netavark backend keeps its state in /run/containers/networks; CNI's stays here
      'network_backend = "cni"',
      `network_config_dir = ${toml(path('net'))}`,
      '',
    ].join('\n'),
  );
  await writeFile(path('policy.json'), JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  await writeFile(path('auth.json'), JSON.stringify({ auths: {} }));
  const env = cleanEnv({
    ...opts.env,
    HOME: path('home'),
    TMPDIR: path('tmp'),
    CONTAINERS_REGISTRIES_CONF: path('registries.conf'),
    CONTAINERS_STORAGE_CONF: path('storage.conf'),
    CONTAINERS_CONF: path('containers.conf'),
    REGISTRY_AUTH_FILE: path('auth.json'),
  });
  const policy = path('policy.json');

  let removed: Promise<void> | undefined;
  return {
    dir,
    authFile: path('auth.json'),
    run: (tool, args, timeoutMs = 60_000, input) => {
      // The signature policy is a global flag of skopeo's and a pull flag of podman's and buildah's.
      // skopeo 1.9 ignores CONTAINERS_REGISTRIES_CONF (it reads /etc/containers/registries.conf)
      // and takes the file as a (hidden) flag.
      let argv = [...args];
      if (tool === 'skopeo') argv = ['--policy', policy, '--registries-conf', path('registries.conf'), '--tmpdir', path('tmp'), ...argv];
      else if (argv[0] === 'pull') argv = ['pull', '--signature-policy', policy, ...argv.slice(1)];
      return run(tool, argv, { env, timeoutMs, input });
    },
    remove: () => (removed ??= removeDir(dir)),
  };
}
