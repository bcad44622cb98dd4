// Retention by age (cache.maxAge): what nobody read for that long is evicted, once at start-up
// and then periodically, beside the size bound that evicts as content arrives. Each store keeps
// its own last-read times and knows what it is serving; this only says when, and how old is too old.
import type { Logger } from '../lib/log.js';

/** A store whose entries can be evicted by age. */
export interface Expiring {
  /**
   * Evicts the entries last read before `cutoff` (ms on the clock), never one being served;
   * resolves to how many it evicted.
   */
  expire(cutoff: number): Promise<number>;
}

export interface RetentionOptions {
  maxAgeMs: number;
  /** what to sweep, each named for the log */
  targets: readonly { name: string; store: Expiring }[];
  log: Logger;
  /** ms clock, injectable for tests */
  now?: (() => number) | undefined;
  /** time between sweeps; default a tenth of maxAge, from 1 min to 1 h */
  intervalMs?: number | undefined;
}

export class Retention {
  private readonly now: () => number;
  private readonly intervalMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private closed = false;

  /** Starts the first sweep at once (without waiting for it: serving need not wait) and schedules the next ones. */
  static start(opts: RetentionOptions): Retention {
    const r = new Retention(opts);
    r.run();
    return r;
  }

  private constructor(private readonly opts: RetentionOptions) {
    this.now = opts.now ?? Date.now;
    this.intervalMs = opts.intervalMs ?? Math.min(3_600_000, Math.max(60_000, opts.maxAgeMs / 10));
  }

  /** Resolves once the sweep under way (if any) has ended. */
  async idle(): Promise<void> {
    await this.running;
  }

  /** Stops the sweeps: none is scheduled any more, and the one under way is waited for. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    await this.running;
  }

  /** One sweep, then the next one is scheduled after it ended: sweeps never overlap. */
  private run(): void {
    this.running = this.sweep().finally(() => {
      this.running = undefined;
      if (this.closed) return;
      // unref'd: a pending sweep never keeps the process alive
      this.timer = setTimeout(() => this.run(), this.intervalMs).unref();
    });
  }

  private async sweep(): Promise<void> {
    const cutoff = this.now() - this.opts.maxAgeMs;
    for (const { name, store } of this.opts.targets) {
      if (this.closed) return;
      try {
        const evicted = await store.expire(cutoff);
        if (evicted > 0) this.opts.log.info({ what: name, evicted, maxAgeMs: this.opts.maxAgeMs }, 'evicted cache entries nobody read within cache.maxAge');
      } catch (e) {
        this.opts.log.warn({ what: name, err: e instanceof Error ? e.message : String(e) }, 'age eviction failed; it is tried again at the next sweep');
      }
    }
  }
}
