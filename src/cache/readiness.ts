// Can the cache be written? What /readyz answers. Each check makes a real write (a disk: a small
// file in the spool directory, written, synced and removed; an S3 bucket: an object put and
// deleted), at most once per interval per check: a kubelet probing every few seconds, or many
// callers at once, costs one write per interval. Probes read the last result and start a fresh
// check in the background when it has aged; they wait for that check only briefly, so a hanging
// disk or bucket never makes a probe hang (a write that does not finish in time is a failure).
import { randomUUID } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { diskError, writeAll } from './disk-writes.js';

/** One way the cache could fail to take a write. */
export interface WriteCheck {
  /** named in the answer: "disk", "s3" */
  readonly name: string;
  /** Resolves once a real write worked; rejects with a WriteCheckFailure (or any error) when it did not. */
  write(): Promise<void>;
  /** A reason known without writing (an S3 bucket paused after failures), asked at every probe. */
  known?(): WriteCheckFailure | undefined;
}

/** Why a write check failed, in words fit for a public answer (no paths, no credentials). */
export class WriteCheckFailure extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
  }
}

export interface CheckResult {
  check: string;
  ok: boolean;
  reason?: string;
  code?: string;
  /** when the write behind this result was made (ISO 8601) */
  checkedAt?: string;
}

export interface ReadinessReport {
  ready: boolean;
  checks: CheckResult[];
}

export interface ReadinessOptions {
  /** a real write at most this often per check (default 5 s) */
  intervalMs?: number;
  /** a write that takes longer fails the check (default 10 s) */
  timeoutMs?: number;
  /** how long a probe waits for a check under way before answering with the last result (default 500 ms) */
  answerWithinMs?: number;
  /** ms clock, injectable for tests */
  now?: () => number;
}

interface CheckState {
  readonly check: WriteCheck;
  result?: CheckResult | undefined;
  /** ms on the clock when `result` was made */
  at: number;
  running?: Promise<void> | undefined;
}

export class Readiness {
  private readonly states: CheckState[];
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly answerWithinMs: number;
  private readonly now: () => number;

  constructor(checks: readonly WriteCheck[], opts: ReadinessOptions = {}) {
    this.states = checks.map((check) => ({ check, at: -Infinity }));
    this.intervalMs = opts.intervalMs ?? 5000;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.answerWithinMs = opts.answerWithinMs ?? 500;
    this.now = opts.now ?? Date.now;
  }

  async report(): Promise<ReadinessReport> {
    const checks = await Promise.all(this.states.map((s) => this.resultOf(s)));
    return { ready: checks.every((c) => c.ok), checks };
  }

  private async resultOf(s: CheckState): Promise<CheckResult> {
    if (!s.running && this.now() - s.at >= this.intervalMs) s.running = this.run(s);
    if (s.running) await waitAtMost(s.running, this.answerWithinMs);
    // asked after the write: the write may have changed it (a bucket's probe that succeeded)
    const known = s.check.known?.();
    if (known) return failed(s.check.name, known);
    return s.result ?? { check: s.check.name, ok: false, reason: 'the first write check has not finished yet' };
  }

  private async run(s: CheckState): Promise<void> {
    const at = this.now();
    const checkedAt = new Date(at).toISOString();
    try {
      await withTimeout(s.check.write(), this.timeoutMs);
      s.result = { check: s.check.name, ok: true, checkedAt };
    } catch (e) {
      s.result = { ...failed(s.check.name, e), checkedAt };
    } finally {
      s.at = at;
      s.running = undefined;
    }
  }
}

function failed(check: string, e: unknown): CheckResult {
  if (e instanceof WriteCheckFailure) return { check, ok: false, reason: e.message, ...(e.code ? { code: e.code } : {}) };
  return { check, ok: false, reason: 'the write check failed' };
}

/** Resolves when `p` settles or `ms` passed, whichever comes first (a probe is waiting: the timer is not unref'd). */
async function waitAtMost(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

async function withTimeout(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new WriteCheckFailure(`a write did not finish within ${ms / 1000} s`, 'TIMEOUT')), ms).unref();
  });
  p.catch(() => undefined); // a write that fails after the timeout has nobody to tell
  try {
    await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A page: the least a filesystem allocates, so a disk with no page left fails it. */
const PROBE_BYTES = 4096;

/**
 * The disk the fills spool to: a small file created in `dir`, written, synced (a filesystem that
 * reports a full disk only on sync, such as NFS, fails here too) and removed.
 */
export function diskWriteCheck(dir: string): WriteCheck {
  return {
    name: 'disk',
    async write() {
      const path = join(dir, `readyz-${randomUUID()}`);
      try {
        const file = await open(path, 'wx');
        try {
          await writeAll(file, [Buffer.alloc(PROBE_BYTES)], PROBE_BYTES, 0);
          await file.datasync();
        } finally {
          await file.close();
        }
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        const disk = diskError(e);
        throw new WriteCheckFailure(disk?.message ?? 'cannot write to the cache directory', typeof code === 'string' ? code : undefined);
      } finally {
        await rm(path, { force: true }).catch(() => undefined); // left only on a read-only disk; start-up empties the spool
      }
    },
  };
}
