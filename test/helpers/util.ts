// Small shared utilities for the integration test helpers: free ports, temp
// dirs, bounded polling, and running CLI tools with a timeout.
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type tap from 'tap';

/** A tap test, as the callback of `t.test` receives it (for helpers that take one). */
export type Test = Parameters<Parameters<typeof tap.test>[0]>[0];

/** Asks the kernel for a currently free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => (port > 0 ? resolve(port) : reject(new Error('no port assigned'))));
    });
  });
}

const exitHooks = new Set<() => void>();
process.on('exit', () => {
  for (const hook of exitHooks) {
    try {
      hook();
    } catch {
      // best effort: the process is going away anyway
    }
  }
});

/**
 * Runs `hook` synchronously if the process exits while it is registered (e.g.
 * a test failed before its teardown). Returns a function that unregisters it.
 */
export function atExit(hook: () => void): () => void {
  exitHooks.add(hook);
  return () => exitHooks.delete(hook);
}

const tempDirs = new Map<string, () => void>();

/** Creates a fresh directory under the OS temp dir, removed at exit unless removeDir'd first. */
export async function makeTempDir(prefix = 'pullthrough-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  tempDirs.set(dir, atExit(() => rmSync(dir, { recursive: true, force: true })));
  return dir;
}

/** Removes a directory tree; never throws for a missing path. */
export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  tempDirs.get(dir)?.();
  tempDirs.delete(dir);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export interface WaitForOptions {
  timeoutMs?: number;
  intervalMs?: number;
  /** Included in the timeout error. */
  what?: string;
  /** Stops waiting early, rejecting with the signal's reason. */
  signal?: AbortSignal;
}

/**
 * Polls `check` until it returns a value other than undefined/false, or throws
 * after `timeoutMs`. Errors thrown by `check` count as "not yet".
 */
export async function waitFor<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  opts: WaitForOptions = {},
): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = opts;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : '';
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  input?: string;
}

/** Runs a command (no shell), rejecting with its output on failure or timeout. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const { timeoutMs = 60_000, env = process.env } = opts;
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', env, maxBuffer: 64 << 20 },
      (err, stdout, stderr) => {
        if (err) {
          const how = err.killed ? `killed after ${timeoutMs}ms` : `exit code ${String(err.code)}`;
          reject(new Error(`${cmd} ${args.join(' ')} failed (${how})\n${stderr}${stdout}`));
        } else {
          resolve({ stdout, stderr });
        }
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}
