// Runs a fast-check property inside a tap test, bounded by count and by time, with a fixed seed,
// and writes one summary line per property (cases run, checks that held) for the closing note.
// A failure fails the test with fast-check's report: the shrunk counterexample plus the seed and
// path that replay it (FUZZ_SEED=<seed> FUZZ_PATH=<path> npx tap <file>).
//
//   FUZZ_SEED   replay with this seed (default: a fixed one, so every run is the same)
//   FUZZ_PATH   with FUZZ_SEED, replay one counterexample exactly
//   FUZZ_SCALE  multiplies every property's numRuns and time limit (e.g. 10 for a long soak)
import fc from 'fast-check';
import type { Test } from './util.js';

/** The seed every property starts from unless FUZZ_SEED says otherwise. */
export const FUZZ_SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : 0x11_0d_13;
const SCALE = Number(process.env.FUZZ_SCALE ?? 1) || 1;

/** Counts how often each invariant was checked and held, for the summary line. */
export class Tally {
  private readonly counts = new Map<string, number>();
  held(invariant: string): void {
    this.counts.set(invariant, (this.counts.get(invariant) ?? 0) + 1);
  }
  toString(): string {
    return [...this.counts].map(([k, n]) => `${k} ×${n}`).join(', ') || 'none';
  }
}

export interface Bounds {
  /** cases to try */
  numRuns: number;
  /** stop generating new cases (and shrinking) after this long; what ran until then counts */
  timeLimitMs: number;
  /** one case (async properties only) fails if it takes longer than this: a hang */
  caseTimeoutMs?: number;
}

/**
 * Checks `property` and reports it on `t`. `tally` is the one the property's predicate writes
 * to. Shrinking stays inside the time limit too, so a failure reports the smallest counterexample
 * found by then.
 */
export async function checkProperty<Ts>(
  t: Test,
  name: string,
  property: fc.IProperty<Ts> | fc.IAsyncProperty<Ts>,
  bounds: Bounds,
  tally: Tally,
): Promise<fc.RunDetails<Ts>> {
  const plugins: fc.UniversalPlugin[] = [fc.interruptAfterTimeLimit(bounds.timeLimitMs * SCALE)];
  if (bounds.caseTimeoutMs !== undefined) plugins.push(fc.timeout(bounds.caseTimeoutMs));
  const params: fc.Parameters<Ts> = { seed: FUZZ_SEED, numRuns: Math.round(bounds.numRuns * SCALE), plugins, includeErrorInReport: true };
  if (process.env.FUZZ_PATH) params.path = process.env.FUZZ_PATH;
  const started = Date.now();
  const details = await fc.check(property as fc.IAsyncProperty<Ts>, params);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  const runs = `${details.numRuns} cases${details.interrupted ? ' (time limit reached)' : ''} in ${secs}s, seed ${details.seed}`;
  if (details.failed) {
    t.comment(`property "${name}": FAILED after ${runs}; checks that held before: ${tally}`);
    t.fail(`property "${name}" failed`, { diagnostic: true, report: (await fc.asyncDefaultReportMessage(details)) ?? 'no report' });
  } else {
    t.comment(`property "${name}": ${runs}; held: ${tally}`);
    t.pass(`property "${name}" held`);
  }
  return details;
}

/** Deterministic filler bytes (a fixed seed must replay the same input). */
export function filler(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
