// Small helpers every benchmark shares: numeric settings from the environment, and which source
// a run measured.
import { execFileSync } from 'node:child_process';

/** A positive (or, with allowZero, non-negative) number from the environment, else the default. */
export function envNum(name: string, dflt: number, allowZero = false): number {
  const v = process.env[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero)) throw new Error(`${name}=${v}: expected a ${allowZero ? 'non-negative' : 'positive'} number`);
  return n;
}

/** The commit, and whether src/ had uncommitted changes. */
export function gitDescribe(root: string): string {
  try {
    const head = execFileSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { stdio: 'pipe' }).toString().trim();
    // --no-optional-locks: never write the index, not even its stat cache
    const dirty = execFileSync('git', ['-C', root, '--no-optional-locks', 'status', '--porcelain', '--', 'src'], { stdio: 'pipe' })
      .toString()
      .trim();
    return dirty ? `${head} with uncommitted changes in src/` : head;
  } catch {
    return 'unknown';
  }
}
