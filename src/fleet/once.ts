// One replica of a fleet at a time does a piece of work whose result lands in the shared store
// (a manifest fetched by digest, a tag revalidated): the holder of the lease does it, the others
// look for its result until it is there, the lease lapses, or they have waited long enough.
import { pause, type Fleet } from './fleet.js';

export interface OnceInFleet<T> {
  /** the result, when some replica (this one included) already stored it */
  found: () => Promise<T | undefined>;
  /** the work itself, which stores its result */
  work: () => Promise<T>;
  /** how long to wait for another replica's result (default: two lease TTLs) */
  waitMs?: number | undefined;
  /** past waitMs: what to answer instead of doing the work here (default: the work) */
  gaveUp?: (() => Promise<T>) | undefined;
}

export async function onceInFleet<T>(fleet: Fleet | undefined, key: string, o: OnceInFleet<T>): Promise<T> {
  if (!fleet) return o.work();
  const deadline = Date.now() + (o.waitMs ?? 2 * fleet.leaseTtlMs);
  for (let attempt = 0; ; attempt++) {
    const claim = await fleet.claim(key);
    if (claim.kind === 'alone') return o.work();
    if (claim.kind === 'mine') {
      try {
        return (await o.found()) ?? (await o.work());
      } finally {
        claim.lease.release();
      }
    }
    const left = deadline - Date.now();
    if (left <= 0) return (o.gaveUp ?? o.work)();
    await pause(Math.min(25 * 2 ** attempt, 400, left));
    const got = await o.found();
    if (got !== undefined) return got;
  }
}
