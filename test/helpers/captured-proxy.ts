// Starts pullthrough in-process (like proxy.ts) with its pino log captured in memory at trace
// level (and, like proxy.ts, also written to PULLTHROUGH_TEST_LOG_DIR when set), and checks that
// secrets appear in none of: the log, the cache directory, or the bodies of error responses a
// test collected.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { loadConfig } from '../../src/config.js';
import { createApp, loggerOptions } from '../../src/main.js';
import { proxyLogFile, type Proxy, type ProxyOptions } from './proxy.js';
import { SECRETS, secretsIn } from './secrets.js';
import { makeTempDir, removeDir } from './util.js';

export interface CapturedProxy extends Proxy {
  /** every log line so far (JSON text) */
  logLines: string[];
  /** parsed log lines */
  logs(): Record<string, unknown>[];
}

/** A minimal `t` for the checks below (tap's Test satisfies it). */
interface Assert {
  ok(value: unknown, message: string): unknown;
}

export async function startCapturedProxy(opts: ProxyOptions & { configDoc: Record<string, unknown> }): Promise<CapturedProxy> {
  const cacheDir = opts.cacheDir ?? (await makeTempDir('pullthrough-cache-'));
  const configDir = await makeTempDir('pullthrough-config-');
  const configFile = join(configDir, 'config.json');
  await writeFile(configFile, JSON.stringify(opts.configDoc));
  const config = loadConfig({ ...opts, config: configFile, listen: '127.0.0.1:0', cacheDir, logLevel: 'trace' }, { ...process.env, ...opts.env });
  const logLines: string[] = [];
  let partial = '';
  const file = proxyLogFile();
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      file?.write(chunk.toString('utf8'));
      partial += chunk.toString('utf8');
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      logLines.push(...lines.filter((l) => l !== ''));
      done();
    },
  });
  const logger = { ...(loggerOptions('trace') as object), stream } as Parameters<typeof createApp>[1];
  const app = await createApp(config, logger);
  await app.server.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.server.address() as AddressInfo;
  let stopped = false;
  return {
    url: `${config.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    cacheDir,
    app,
    logLines,
    logs: () => logLines.map((l) => JSON.parse(l) as Record<string, unknown>),
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.close();
      file?.close();
      await removeDir(configDir);
      if (!opts.keepCache && !opts.cacheDir) await removeDir(cacheDir);
    },
  };
}

/** Every regular file under `dir`, recursively. */
export async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(join(e.parentPath, e.name));
  }
  return out;
}

/**
 * Asserts that no secret (in any of the forms secrets.ts searches for) occurs in the given texts
 * or in any file under the given directories. `secrets` maps a name (printed) to the secret
 * (never printed).
 */
export async function expectNoSecrets(
  t: Assert,
  secrets: Record<string, string | undefined>,
  where: { texts?: Record<string, string>; dirs?: string[] },
): Promise<void> {
  const haystacks: [string, Buffer][] = Object.entries(where.texts ?? {}).map(([name, text]) => [name, Buffer.from(text)]);
  for (const dir of where.dirs ?? []) {
    for (const file of await filesUnder(dir)) haystacks.push([file.slice(dir.length + 1), await readFile(file)]);
  }
  let found = 0;
  for (const [place, hay] of haystacks) {
    for (const name of secretsIn(hay, secrets)) {
      found++;
      t.ok(false, `${name} found in ${place}`);
    }
  }
  const count = Object.values(secrets).filter((s) => s !== undefined).length;
  t.ok(found === 0 && count > 0, `${count} secrets absent from ${haystacks.length} logs, files and bodies`);
}

/** a subtest's `t`, as far as LeakWatch needs it */
interface Teardown extends Assert {
  teardown(fn: () => unknown): void;
}

export interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** the first error of an OCI error envelope */
  error(): { code: string; message: string };
}

/**
 * Collects what a test file's proxies produced (captured logs, cache dirs, error bodies) so a
 * final subtest can check that no secret reached any of it.
 */
export class LeakWatch {
  readonly proxies: CapturedProxy[] = [];
  readonly errorBodies: Record<string, string> = {};

  /** A captured proxy, stopped at the end of `t`; its cache dir is kept until check(). */
  async proxy(t: Teardown, opts: ProxyOptions & { configDoc: Record<string, unknown> }): Promise<CapturedProxy> {
    const p = await startCapturedProxy({ ...opts, keepCache: true });
    this.proxies.push(p);
    t.teardown(() => p.stop());
    return p;
  }

  /** GET through a proxy; error bodies are remembered. */
  async get(url: string, headers: Record<string, string> = {}): Promise<Fetched> {
    const res = await fetch(url, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json', ...headers }, signal: AbortSignal.timeout(60_000) });
    const body = await res.text();
    if (res.status >= 400) this.errorBodies[`${url} → ${res.status}`] = body;
    return {
      status: res.status,
      headers: Object.fromEntries(res.headers),
      body,
      error: () => ((JSON.parse(body) as { errors: { code: string; message: string }[] }).errors[0] ?? { code: '', message: '' }),
    };
  }

  /**
   * Asserts that no test secret (SECRETS, plus `more` seen at run time) is in any captured log,
   * cache file or error body; then removes the cache dirs.
   */
  async check(t: Assert, more: Record<string, string | undefined> = {}): Promise<void> {
    await expectNoSecrets(t, { ...SECRETS, ...more }, {
      texts: { ...Object.fromEntries(this.proxies.map((p, i) => [`log of proxy ${i}`, p.logLines.join('\n')])), ...this.errorBodies },
      dirs: this.proxies.map((p) => p.cacheDir),
    });
    t.ok(this.proxies.length > 0 && this.proxies.every((p) => p.logLines.length > 0), `logs of ${this.proxies.length} proxies were captured`);
    for (const p of this.proxies) await removeDir(p.cacheDir);
  }
}
