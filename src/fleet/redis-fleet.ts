// The fleet kept in Redis (ioredis). A lease is a key set with SET NX PX to this replica's token
// (its origin and a per-process id), renewed every third of its TTL while the work runs, deleted
// on release only if it is still ours (a script compares first). A holder killed with SIGKILL
// stops renewing, so its leases lapse within one TTL and the next claimant takes over.
// Redis that is down or stalled must never stall a pull: commands fail fast (no offline queue,
// a short command timeout), a circuit breaker skips Redis for a while after failures in a row,
// and every claim meanwhile is answered `alone`. The change of state is logged once each way.
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { CircuitBreaker } from '../lib/circuit-breaker.js';
import type { Logger } from '../lib/log.js';
import type { Claim, Fleet, FleetStatus, Lease } from './fleet.js';

/** How long one Redis command may take before the fleet counts as stalled. */
const COMMAND_TIMEOUT_MS = 500;

const RENEW = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`;
const RELEASE = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`;

export interface RedisFleetOptions {
  redis: string;
  /** this replica's origin; a function, since with port 0 it is known only once listening */
  self: () => string;
  secret: string;
  leaseTtlMs: number;
  log: Logger;
  /** key prefix, so that several fleets can share one Redis */
  prefix: string;
}

export class RedisFleet implements Fleet {
  private readonly redis: Redis;
  private readonly circuit = new CircuitBreaker({ failuresToOpen: 1, coolDownMs: 1000 });
  private readonly id = randomUUID().slice(0, 12);
  private readonly prefix: string;
  private readonly renewals = new Set<NodeJS.Timeout>();
  private coordinated = true;
  private readonly counts = { uncoordinated: 0, mine: 0, held: 0 };

  constructor(private readonly opts: RedisFleetOptions) {
    this.prefix = opts.prefix;
    this.redis = new Redis(opts.redis, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      commandTimeout: COMMAND_TIMEOUT_MS,
      connectTimeout: 2000,
      // keep trying to reconnect, at most a second apart: the fleet rejoins as soon as Redis is back
      retryStrategy: (times) => Math.min(times * 100, 1000),
      lazyConnect: false,
    });
    this.redis.on('error', (e: Error) => this.lost(e));
    this.redis.on('ready', () => this.circuit.succeeded());
  }

  /** Resolves once connected, or after `ms` (then claims go `alone` until Redis answers). */
  async ready(ms: number): Promise<void> {
    if (this.redis.status === 'ready') return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      this.redis.once('ready', done);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  get self(): string {
    return this.opts.self();
  }

  get secret(): string {
    return this.opts.secret;
  }

  get leaseTtlMs(): number {
    return this.opts.leaseTtlMs;
  }

  async claim(key: string): Promise<Claim> {
    const k = `${this.prefix}lease:${key}`;
    const token = `${this.self} ${this.id}`;
    const ttl = this.opts.leaseTtlMs;
    for (let tries = 0; tries < 3; tries++) {
      const taken = await this.command((r) => r.set(k, token, 'PX', ttl, 'NX'));
      if (taken === failed) return this.alone();
      if (taken === 'OK') {
        this.counts.mine++;
        return { kind: 'mine', lease: this.lease(k, token) };
      }
      const holder = await this.command((r) => r.get(k));
      if (holder === failed) return this.alone();
      if (holder === null) continue; // lapsed in between: try again
      if (holder === token) return { kind: 'mine', lease: this.lease(k, token) }; // ours already (a fill resuming)
      this.counts.held++;
      const origin = holder.split(' ')[0] ?? '';
      return { kind: 'held', holder: origin, self: origin === this.self };
    }
    return this.alone();
  }

  async fact(key: string): Promise<string | undefined> {
    const v = await this.command((r) => r.get(`${this.prefix}fact:${key}`));
    return v === failed || v === null ? undefined : v;
  }

  share(key: string, value: string, ttlMs: number): void {
    void this.command((r) => r.set(`${this.prefix}fact:${key}`, value, 'PX', Math.max(1, Math.round(ttlMs))));
  }

  status(): FleetStatus {
    return { coordinated: this.coordinated, uncoordinated: this.counts.uncoordinated, claims: { mine: this.counts.mine, held: this.counts.held } };
  }

  async close(): Promise<void> {
    for (const t of this.renewals) clearInterval(t);
    this.renewals.clear();
    this.redis.disconnect();
  }

  /** A held lease: renewed every third of its TTL until released. */
  private lease(key: string, token: string): Lease {
    const ttl = this.opts.leaseTtlMs;
    const timer = setInterval(() => void this.command((r) => r.eval(RENEW, 1, key, token, ttl)), Math.max(100, Math.floor(ttl / 3)));
    timer.unref();
    this.renewals.add(timer);
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        clearInterval(timer);
        this.renewals.delete(timer);
        void this.command((r) => r.eval(RELEASE, 1, key, token));
      },
    };
  }

  private alone(): Claim {
    this.counts.uncoordinated++;
    return { kind: 'alone' };
  }

  /** Runs one command, or gives `failed` at once while Redis is known to be failing. */
  private async command<T>(fn: (r: Redis) => Promise<T>): Promise<T | typeof failed> {
    if (this.redis.status !== 'ready' || !this.circuit.probe()) {
      this.lost();
      return failed;
    }
    try {
      const v = await fn(this.redis);
      this.circuit.succeeded();
      if (!this.coordinated) {
        this.coordinated = true;
        this.opts.log.info({ redis: redactUrl(this.opts.redis) }, 'fleet: Redis answers again; coordinating with the other replicas');
      }
      return v;
    } catch (e) {
      this.circuit.failed();
      this.lost(e as Error);
      return failed;
    }
  }

  private lost(e?: Error): void {
    if (!this.coordinated) return;
    this.coordinated = false;
    this.opts.log.warn({ redis: redactUrl(this.opts.redis), err: e?.message ?? `connection ${this.redis.status}` }, 'fleet: Redis is unreachable; this replica fetches on its own until it is back');
  }
}

const failed = Symbol('failed');

/** The Redis URL without its password, for the log. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = 'redacted';
    return u.toString();
  } catch {
    return 'redis';
  }
}
