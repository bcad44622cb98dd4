// `pullthrough warm`: its arguments, the run, the summary and the exit code (0 only when every
// image was fetched and verified whole, 1 when anything failed, 2 for a usage error).
import { readFileSync } from 'node:fs';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { Agent } from 'undici';
import { httpUrl, Problem } from '../lib/settings.js';
import type { Platform } from '../oci/manifest.js';
import { RegistryError } from '../oci/errors.js';
import { parseImageReference } from '../oci/reference.js';
import { BarProgress } from './bars.js';
import { ServerClient } from './client.js';
import { CredentialsError, PASSWORD_VARIABLE, warmCredentials, type CredentialsSource } from './credentials.js';
import { LineProgress } from './lines.js';
import { parsePlatform } from './platforms.js';
import type { WarmImage } from './plan.js';
import { bytes, count, duration } from './progress.js';
import { warm, type WarmOptions } from './warm.js';

export const WARM_USAGE = `usage: pullthrough warm [--server URL] IMAGE... [--platform OS/ARCH[/VARIANT]]... [--all-platforms]
                        [--concurrency N] [--cacert FILE] [--cert FILE --key FILE] [--user NAME]

  fills a running pullthrough's cache with the images' manifests and blobs, checking each blob's
  digest and size; exit code 0 only when everything was fetched and verified

  IMAGE                     alpine:3.20, ghcr.io/org/app:v1, host:port/repo@sha256:…; a first
                            component with a dot or a port names the upstream (a path prefix)
  --server URL              the pullthrough to fill (default http://127.0.0.1:5000)
  --platform OS/ARCH[/VARIANT]
                            the platforms to take from an index; repeatable (default linux/amd64)
  --all-platforms           every image of an index
  --concurrency N           downloads at a time, 1 to 32 (default 4)
  --cacert FILE             trust this PEM CA for an https:// server (instead of the system's)
  --cert FILE --key FILE    present this PEM client certificate and key (a server with tls.clientCa)
  --user NAME               authenticate as NAME (a server with auth); the password is taken from
                            ${PASSWORD_VARIABLE}, else from the first line of stdin (not a terminal)
`;

const DEFAULT_SERVER = 'http://127.0.0.1:5000';
const DEFAULT_PLATFORM: Platform = { os: 'linux', architecture: 'amd64' };

export interface WarmIo extends Partial<CredentialsSource> {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable;
}

class UsageError extends Error {}

interface Parsed extends WarmOptions {
  server: URL;
  /** --user */
  user: string | undefined;
  /** the TLS settings of the connection to the server, read from the files given */
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer };
}

export async function runWarm(argv: string[], io: WarmIo = process): Promise<number> {
  let o: Parsed | 'help';
  let credentials;
  try {
    o = parseWarmArgs(argv);
    if (o === 'help') {
      io.stdout.write(WARM_USAGE);
      return 0;
    }
    if (o.user !== undefined) credentials = await warmCredentials(o.user, { env: io.env ?? process.env, stdin: io.stdin ?? process.stdin });
  } catch (e) {
    if (!(e instanceof UsageError || e instanceof CredentialsError)) throw e;
    io.stderr.write(`pullthrough warm: ${e.message}\n${WARM_USAGE}`);
    return 2;
  }
  const started = Date.now();
  const client = new ServerClient(o.server, new Agent({ keepAliveTimeout: 30_000, connect: o.tls }), credentials);
  const progress = io.stdout.isTTY ? new BarProgress(io.stdout) : new LineProgress(io.stdout, o.server.origin);
  // a terminal left without its cursor is worse than a lost summary: restore it, then go
  const interrupted = (): void => {
    progress.end();
    process.exit(130);
  };
  process.once('SIGINT', interrupted);
  try {
    const report = await warm(client, o, progress);
    const failed = report.images.filter((i) => i.error !== undefined);
    const t = report.tally;
    const seconds = (Date.now() - started) / 1000;
    const verified = t.count('verified');
    const blobs = verified === t.tasks.length ? count(verified, 'blob') : `${verified} of ${count(t.tasks.length, 'blob')}`;
    const images = failed.length ? `${report.images.length - failed.length} of ${count(report.images.length, 'image')}` : count(report.images.length, 'image');
    io.stdout.write(
      `warmed ${images}: ` +
        `${blobs} verified, ${bytes(t.received)} in ${duration(seconds)} (${bytes(t.received / Math.max(seconds, 0.001))}/s)\n`,
    );
    for (const f of failed) io.stderr.write(`pullthrough warm: ${f.image}: ${f.error}\n`);
    return failed.length ? 1 : 0;
  } finally {
    process.removeListener('SIGINT', interrupted);
    await client.close();
  }
}

function parseWarmArgs(argv: string[]): Parsed | 'help' {
  let values;
  let positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        server: { type: 'string' },
        platform: { type: 'string', multiple: true },
        'all-platforms': { type: 'boolean' },
        concurrency: { type: 'string' },
        cacert: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        user: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return 'help';
  if (positionals.length === 0) throw new UsageError('name at least one image');
  const server = httpUrl(values.server ?? DEFAULT_SERVER);
  if (server instanceof Problem) throw new UsageError(`--server: ${server.text}`);
  if (values['all-platforms'] && values.platform) throw new UsageError('--platform and --all-platforms exclude each other');
  const platforms = (values.platform ?? []).map((text) => parsePlatform(text) ?? badPlatform(text));
  const concurrency = Number(values.concurrency ?? 4);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 32) throw new UsageError(`--concurrency: "${values.concurrency}" is not a whole number from 1 to 32`);
  const images: WarmImage[] = positionals.map((text) => {
    try {
      return { text, ref: parseImageReference(text) };
    } catch (e) {
      if (e instanceof RegistryError) throw new UsageError(e.message);
      throw e;
    }
  });
  if ((values.cert === undefined) !== (values.key === undefined)) throw new UsageError('--cert and --key go together');
  const tls = {
    ...(values.cacert !== undefined ? { ca: readPem('--cacert', values.cacert) } : {}),
    ...(values.cert !== undefined ? { cert: readPem('--cert', values.cert) } : {}),
    ...(values.key !== undefined ? { key: readPem('--key', values.key) } : {}),
  };
  return { server, user: values.user, images, platforms: values['all-platforms'] ? 'all' : platforms.length ? platforms : [DEFAULT_PLATFORM], concurrency, tls };
}

function readPem(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UsageError(`${flag}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

function badPlatform(text: string): never {
  throw new UsageError(`--platform: "${text}" is not OS/ARCH or OS/ARCH/VARIANT, such as linux/amd64 or linux/arm64/v8`);
}
