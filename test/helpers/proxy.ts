// Starts pullthrough in-process on 127.0.0.1 with a config built the way the CLI builds it.
import { writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { loadConfig, type Flags } from '../../src/config.js';
import { createApp, type App } from '../../src/main.js';
import { makeTempDir, removeDir } from './util.js';

export interface Proxy {
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
  const config = loadConfig({ ...opts, config: configFile, listen: '127.0.0.1:0', cacheDir, logLevel: opts.logLevel ?? 'silent' }, { ...process.env, ...opts.env });
  const app = await createApp(config);
  await app.server.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.server.address() as AddressInfo;
  let stopped = false;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    cacheDir,
    app,
    async stop() {
      if (stopped) return;
      stopped = true;
      await app.close();
      if (!opts.keepCache && !opts.cacheDir) await removeDir(cacheDir);
    },
  };
}
