// Runs Debian's docker-registry (CNCF Distribution 2.8.2) as a child process
// on 127.0.0.1 with filesystem storage in a fresh temp dir.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createSigningKey, startTokenServer } from './token-server.js';
import type { AnonymousPolicy, KeyHeader, SigningAlg, TokenServer } from './token-server.js';
import { atExit, freePort, makeTempDir, removeDir, run, waitFor } from './util.js';

export type RegistryMode = 'open' | 'htpasswd' | 'token';

export interface RegistryOptions {
  mode: RegistryMode;
  /** Run distribution as a pull-through cache of this upstream (`proxy.remoteurl`). */
  proxyRemoteUrl?: string;
  proxyUsername?: string;
  proxyPassword?: string;
  /** Credentials for htpasswd/token modes; random when omitted. */
  username?: string;
  password?: string;
  /** htpasswd mode: more users (name to password) besides `username`. */
  users?: Record<string, string>;
  /** Token mode settings. */
  token?: { anonymous?: AnonymousPolicy; expiresIn?: number; keyHeader?: KeyHeader; alg?: SigningAlg };
  /** docker-registry log level (default 'warn'); logs go to <dir>/registry.log. */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  startTimeoutMs?: number;
}

export interface Registry {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT, for image references. */
  host: string;
  port: number;
  /** Temp dir holding config.yml, registry.log, data/ (and auth files). */
  dir: string;
  username?: string;
  password?: string;
  /** "user:pass" for skopeo --creds, when the registry has credentials. */
  creds?: string;
  tokenServer?: TokenServer;
  /** Contents of registry.log (stdout+stderr), for debugging failures. */
  log(): Promise<string>;
  /** Kills the registry (and its token server) and removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

const SERVICE = 'pullthrough-test-registry';
const ISSUER = 'pullthrough-test-issuer';

/** Child processes still running, killed if the test process exits without stopping them. */
const live = new Set<ChildProcess>();
atExit(() => {
  for (const child of live) child.kill('SIGKILL');
});

/**
 * util-linux's setpriv (Essential on Debian/Ubuntu) makes the kernel kill the
 * registry if this process dies without running exit hooks (e.g. a signal).
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));
const launch = (configPath: string): [string, string[]] =>
  SETPRIV
    ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', 'docker-registry', 'serve', configPath]]
    : ['docker-registry', ['serve', configPath]];

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

async function kill(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited(child);
    clearTimeout(timer);
  }
  live.delete(child);
}

/** Env without REGISTRY_* variables, which docker-registry would treat as config overrides. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
}

export async function startRegistry(opts: RegistryOptions): Promise<Registry> {
  const dir = await makeTempDir('pullthrough-registry-');
  let tokenServer: TokenServer | undefined;
  try {
    const username = opts.mode === 'open' ? undefined : (opts.username ?? `user-${randomBytes(4).toString('hex')}`);
    const password = opts.mode === 'open' ? undefined : (opts.password ?? randomBytes(12).toString('hex'));
    let auth: Record<string, unknown> | undefined;
    if (opts.mode === 'htpasswd' && username !== undefined && password !== undefined) {
      const lines: string[] = [];
      for (const [user, pw] of [[username, password], ...Object.entries(opts.users ?? {})] as const) {
        const { stdout } = await run('htpasswd', ['-Bbn', user, pw], { timeoutMs: 15_000 });
        lines.push(stdout.trim());
      }
      await writeFile(join(dir, 'htpasswd'), lines.join('\n') + '\n');
      auth = { htpasswd: { realm: 'pullthrough-test', path: join(dir, 'htpasswd') } };
    } else if (opts.mode === 'token') {
      const key = await createSigningKey(dir, opts.token?.alg);
      tokenServer = await startTokenServer({
        key,
        service: SERVICE,
        issuer: ISSUER,
        ...(username !== undefined && password !== undefined ? { username, password } : {}),
        ...(opts.token?.anonymous ? { anonymous: opts.token.anonymous } : {}),
        ...(opts.token?.expiresIn !== undefined ? { expiresIn: opts.token.expiresIn } : {}),
        ...(opts.token?.keyHeader ? { keyHeader: opts.token.keyHeader } : {}),
      });
      auth = { token: { realm: tokenServer.realm, service: SERVICE, issuer: ISSUER, rootcertbundle: key.certPath } };
    }
    const proxy = opts.proxyRemoteUrl
      ? {
          remoteurl: opts.proxyRemoteUrl,
          ...(opts.proxyUsername !== undefined ? { username: opts.proxyUsername } : {}),
          ...(opts.proxyPassword !== undefined ? { password: opts.proxyPassword } : {}),
        }
      : undefined;

    // The free port may be taken between probing and binding; retry a few times.
    for (let attempt = 1; ; attempt++) {
      const port = await freePort();
      const config = {
        version: '0.1',
        log: { level: opts.logLevel ?? 'warn', formatter: 'text', accesslog: { disabled: true } },
        storage: {
          filesystem: { rootdirectory: join(dir, 'data') },
          delete: { enabled: true },
          maintenance: { uploadpurging: { enabled: false } },
        },
        http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
        ...(auth ? { auth } : {}),
        ...(proxy ? { proxy } : {}),
      };
      // YAML is a superset of JSON, so JSON is a valid config.yml.
      const configPath = join(dir, 'config.yml');
      await writeFile(configPath, JSON.stringify(config, null, 2));
      const logFd = openSync(join(dir, 'registry.log'), 'a');
      const [cmd, args] = launch(configPath);
      const child = spawn(cmd, args, {
        cwd: dir,
        env: cleanEnv(),
        stdio: ['ignore', logFd, logFd],
      });
      closeSync(logFd);
      live.add(child);
      const url = `http://127.0.0.1:${port}`;
      const died = new AbortController();
      child.once('exit', (code, signal) => died.abort(new Error(`docker-registry exited (${signal ?? code})`)));
      try {
        await waitFor(
          async () => {
            const res = await fetch(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
            await res.arrayBuffer();
            return res.status === 200 || res.status === 401;
          },
          { timeoutMs: opts.startTimeoutMs ?? 15_000, intervalMs: 50, what: `docker-registry on ${url}`, signal: died.signal },
        );
      } catch (err) {
        await kill(child);
        const log = await readFile(join(dir, 'registry.log'), 'utf8').catch(() => '');
        if (attempt < 3 && log.includes('address already in use')) continue;
        throw new Error(`${err instanceof Error ? err.message : String(err)}\n${log}`);
      }
      let stopped: Promise<void> | undefined;
      const ts = tokenServer;
      return {
        url,
        host: `127.0.0.1:${port}`,
        port,
        dir,
        ...(username !== undefined && password !== undefined ? { username, password, creds: `${username}:${password}` } : {}),
        ...(ts ? { tokenServer: ts } : {}),
        log: () => readFile(join(dir, 'registry.log'), 'utf8').catch(() => ''),
        stop: () =>
          (stopped ??= (async () => {
            await kill(child);
            await ts?.close();
            await removeDir(dir);
          })()),
      };
    }
  } catch (err) {
    await tokenServer?.close();
    await removeDir(dir);
    throw err;
  }
}
