#!/usr/bin/env node
// Makes sure the CLI tools the integration tests drive are installed:
// docker-registry, skopeo, htpasswd, openssl, curl, containerd with ctr, Docker Engine (dockerd),
// podman and buildah. Installs missing ones with apt-get (via sudo when not root), or exits nonzero
// explaining what to do.
import { spawnSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';

/** tool on PATH -> Debian/Ubuntu package providing it */
const TOOLS = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  htpasswd: 'apache2-utils',
  openssl: 'openssl',
  curl: 'curl',
  containerd: 'containerd',
  ctr: 'containerd',
  dockerd: 'docker.io',
  podman: 'podman',
  buildah: 'buildah',
  'redis-server': 'redis-server',
};

function which(cmd) {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return join(dir, cmd);
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

const missingTools = () => Object.keys(TOOLS).filter((tool) => !which(tool));

function fail(message) {
  console.error(`ensure-test-deps: ${message}`);
  process.exit(1);
}

function sh(argv) {
  console.log(`ensure-test-deps: running: ${argv.join(' ')}`);
  const res = spawnSync(argv[0], argv.slice(1), { stdio: 'inherit', timeout: 15 * 60_000 });
  if (res.error) console.error(`ensure-test-deps: ${res.error.message}`);
  return res.status === 0;
}

const missing = missingTools();
if (missing.length === 0) process.exit(0);

const packages = [...new Set(missing.map((tool) => TOOLS[tool]))];
const manual = `install them manually: apt-get install ${packages.join(' ')}`;
console.log(`ensure-test-deps: missing ${missing.join(', ')}; need package(s) ${packages.join(', ')}`);

if (process.platform !== 'linux' || !which('apt-get')) fail(`apt-get is not available; ${manual}`);

let prefix = [];
if (typeof process.getuid === 'function' && process.getuid() !== 0) {
  if (!which('sudo')) fail(`not root and sudo is not available; ${manual}`);
  // Without a terminal sudo cannot ask for a password, so make it fail fast instead of hanging.
  prefix = process.stdin.isTTY ? ['sudo'] : ['sudo', '-n'];
}
const aptGet = [...prefix, 'env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get'];
const install = [...aptGet, 'install', '-y', '--no-install-recommends', ...packages];

if (!sh(install)) {
  console.log('ensure-test-deps: install failed; refreshing package lists and retrying');
  if (!sh([...aptGet, 'update']) || !sh(install)) fail(`could not install ${packages.join(' ')}; ${manual}`);
}

const still = missingTools();
if (still.length > 0) fail(`still missing after install: ${still.join(', ')}; ${manual}`);
console.log(`ensure-test-deps: installed ${packages.join(', ')}`);
