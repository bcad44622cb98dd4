// Runs s3rver (an S3 wire-protocol server from npm) as a child process on 127.0.0.1 with a fresh
// temp directory, for the S3 store tests. A child process keeps two things contained: s3rver's
// ListObjectsV2 continuation tokens use DES, which Node's OpenSSL 3 only offers with
// --openssl-legacy-provider, and that flag then applies to s3rver alone, not to the tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { atExit, makeTempDir, removeDir } from './util.js';

/** s3rver's built-in account. */
export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;
export const S3RVER_REGION = 'us-east-1';

export interface S3rver {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  /** the bucket created at start-up */
  bucket: string;
  /** s3rver's data directory */
  dir: string;
  /** Environment for a process that should reach this server through the standard AWS chain. */
  env: Record<string, string>;
  /** A client for the tests' own checks (path-style, checksums only when required). */
  client(overrides?: S3ClientConfig): S3Client;
  /** Kills the server and removes its directory. Idempotent. */
  stop(): Promise<void>;
}

// the SDK's notice about its future Node versions is noise in test output
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const require = createRequire(import.meta.url);
const BIN = require.resolve('s3rver/bin/s3rver.js');
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

const live = new Set<ChildProcess>();
atExit(() => {
  for (const child of live) child.kill('SIGKILL');
});

/** Records every command a client sends (lib-storage's uploads included): names, and inputs by name. */
export function recordCommands(client: S3Client): { names: string[]; count(name: string): number; inputs(name: string): Record<string, unknown>[] } {
  const sent: { name: string; input: Record<string, unknown> }[] = [];
  client.middlewareStack.add(
    (next, context) => async (args) => {
      sent.push({ name: context.commandName ?? 'unknown', input: args.input as Record<string, unknown> });
      return next(args);
    },
    { step: 'initialize', name: 'pullthroughTestRecorder' },
  );
  return {
    get names() {
      return sent.map((c) => c.name);
    },
    count: (name) => sent.filter((c) => c.name === name).length,
    inputs: (name) => sent.filter((c) => c.name === name).map((c) => c.input),
  };
}

export async function startS3rver(opts: { bucket?: string; startTimeoutMs?: number } = {}): Promise<S3rver> {
  const bucket = opts.bucket ?? 'pullthrough-test';
  const dir = await makeTempDir('pullthrough-s3rver-');
  const args = [
    '--openssl-legacy-provider', BIN,
    '--directory', dir, '--address', '127.0.0.1', '--port', '0', '--silent', '--no-vhost-buckets',
    '--configure-bucket', bucket,
  ];
  // setpriv makes the kernel kill s3rver if this process dies without running exit hooks
  const [cmd, argv] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...args]] : [process.execPath, args];
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } });
  live.add(child);
  let output = '';
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within ${opts.startTimeoutMs ?? 15_000}ms\n${output}`)), opts.startTimeoutMs ?? 15_000);
    const onData = (b: Buffer): void => {
      output += b.toString();
      const m = /listening on 127\.0\.0\.1:(\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(Number(m[1]));
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited (${signal ?? code})\n${output}`));
    });
  }).catch(async (e: unknown) => {
    child.kill('SIGKILL');
    live.delete(child);
    await removeDir(dir);
    throw e;
  });
  // keep draining its output so a chatty server never blocks on a full pipe
  child.stdout!.resume();
  child.stderr!.resume();
  const endpoint = `http://127.0.0.1:${port}`;
  let stopped: Promise<void> | undefined;
  return {
    endpoint,
    port,
    bucket,
    dir,
    env: {
      AWS_ACCESS_KEY_ID: S3RVER_CREDENTIALS.accessKeyId,
      AWS_SECRET_ACCESS_KEY: S3RVER_CREDENTIALS.secretAccessKey,
      AWS_REGION: S3RVER_REGION,
    },
    client: (overrides = {}) =>
      new S3Client({
        endpoint,
        region: S3RVER_REGION,
        forcePathStyle: true,
        credentials: S3RVER_CREDENTIALS,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        ...overrides,
      }),
    stop: () =>
      (stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
          await exited;
          clearTimeout(timer);
        }
        live.delete(child);
        await removeDir(dir);
      })()),
  };
}
