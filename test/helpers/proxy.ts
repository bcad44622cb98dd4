// Starts pullthrough in-process on 127.0.0.1 with a config built the way the CLI builds it.
// With PULLTHROUGH_TEST_LOG_DIR set (npm test sets it), each proxy logs at trace level to a file
// of its own there, which scripts/check-secrets.ts searches for secrets after the run.
// With tlsCert and tlsKey (test/helpers/tls.ts makes them), it serves HTTPS and its url says so.
import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join, relative, resolve } from 'node:path';
import { loadConfig, type Flags } from '../../src/config.js';
import { createApp, loggerOptions, type App } from '../../src/main.js';
import { makeTempDir, removeDir } from './util.js';

export interface Proxy {
  /** http://127.0.0.1:PORT, or https:// with TLS */
  url: string;
  host: string;
  cacheDir: string;
  app: App;
  stop(): Promise<void>;
}

export interface ProxyOptions extends Omit<Flags, 'listen'> {
  /** a config document, written to a JSON file and passed as --config */
  configDoc?: Record<string, unknown>;
  /** extra environment for ${ENV} references in a config file */
  env?: NodeJS.ProcessEnv;
  /** keep the cache dir when stopping (for restart tests) */
  keepCache?: boolean;
}

export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const cacheDir = opts.cacheDir ?? (await makeTempDir('pullthrough-cache-'));
  let configFile = opts.config;
  if (opts.configDoc) {
    configFile = join(await makeTempDir('pullthrough-config-'), 'config.json');
    await writeFile(configFile, JSON.stringify(opts.configDoc));
  }
  const log = proxyLogFile();
  const config = loadConfig({ ...opts, config: configFile, listen: '127.0.0.1:0', cacheDir, logLevel: opts.logLevel ?? (log ? 'trace' : 'silent') }, { ...process.env, ...opts.env });
  const app = await createApp(config, log && ({ ...(loggerOptions(config.logLevel) as object), stream: log } as Parameters<typeof createApp>[1]));
  await app.server.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.server.address() as AddressInfo;
  let stopped = false;
  return {
    url: `${config.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    cacheDir,
    app,
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.close();
      log?.close();
      if (!opts.keepCache && !opts.cacheDir) await removeDir(cacheDir);
    },
  };
}

export interface LogFile {
  write(text: string): void;
  close(): void;
}

let logFiles = 0;

/**
 * A new file in PULLTHROUGH_TEST_LOG_DIR for one proxy's log, named after the test file; undefined
 * when that is unset. Writes are synchronous, so a test process that dies loses no line.
 */
export function proxyLogFile(): LogFile | undefined {
  const dir = process.env.PULLTHROUGH_TEST_LOG_DIR;
  if (!dir) return undefined;
  mkdirSync(resolve(dir), { recursive: true });
  const test = relative(process.cwd(), process.argv[1] ?? 'test').replace(/[^A-Za-z0-9.-]+/g, '_');
  let fd: number | undefined = openSync(join(resolve(dir), `${test}.${process.pid}.${logFiles++}.log`), 'a');
  return {
    write: (text) => void (fd !== undefined && writeSync(fd, text)),
    close: () => {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}
