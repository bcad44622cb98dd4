// What one replica learned that the others can use, kept in the fleet's store with a lifetime:
// each upstream's announced rate limit (so that the fleet conserves Docker Hub's limit together:
// a replica that did not ask the upstream lately still knows the budget is low), and which layers
// a manifest declared lazy (eStargz and its TOC digest), so that a Range reaching a replica that
// never served the manifest is still answered lazily. Neither can make a wrong byte: a rate
// limit only decides whether to revalidate, and a lazy claim is checked as a manifest's is.
import { LRUCache } from 'lru-cache';
import type { LayerClaim } from '../lazy/format.js';
import type { RateLimit, Upstream } from '../upstreams/upstream.js';
import type { Fleet } from './fleet.js';

/** How often a replica shares its upstreams' rate limits and reads the fleet's. */
const RATE_LIMIT_SYNC_MS = 1000;
/** How long a lazy claim is kept in the fleet's store (a manifest served again renews it). */
const CLAIM_TTL_MS = 7 * 86_400_000;

export class SharedRateLimits {
  private readonly theirs = new Map<string, RateLimit>();
  private readonly shared = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  /** Shares this replica's figures as they change and reads the fleet's, once a second. */
  constructor(
    private readonly fleet: Fleet,
    private readonly upstreams: readonly Upstream[],
  ) {
    this.timer = setInterval(() => void this.sync(), RATE_LIMIT_SYNC_MS);
    this.timer.unref();
  }

  /** The newer of what this replica saw last and what the fleet last heard. */
  view(up: Upstream): RateLimit | undefined {
    const ours = up.rateLimit();
    const theirs = this.theirs.get(up.name);
    if (!theirs) return ours;
    return !ours || theirs.seenAt > ours.seenAt ? theirs : ours;
  }

  close(): void {
    clearInterval(this.timer);
  }

  private async sync(): Promise<void> {
    for (const up of this.upstreams) {
      const key = `ratelimit:${up.name}`;
      const ours = up.rateLimit();
      if (ours && this.shared.get(up.name) !== ours.seenAt) {
        this.shared.set(up.name, ours.seenAt);
        // the figures last as long as their window (Docker Hub's is 6 hours)
        this.fleet.share(key, JSON.stringify(ours), ours.seenAt + ours.windowSeconds * 1000 - Date.now());
      }
      const v = await this.fleet.fact(key);
      const rl = v === undefined ? undefined : asRateLimit(v);
      if (rl) this.theirs.set(up.name, rl);
    }
  }
}

function asRateLimit(text: string): RateLimit | undefined {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    const n = (k: string) => (typeof v[k] === 'number' && Number.isFinite(v[k]) ? (v[k] as number) : undefined);
    const [limit, remaining, windowSeconds, seenAt] = [n('limit'), n('remaining'), n('windowSeconds'), n('seenAt')];
    if (limit === undefined || remaining === undefined || windowSeconds === undefined || seenAt === undefined) return undefined;
    return { limit, remaining, windowSeconds, seenAt };
  } catch {
    return undefined;
  }
}

/** Lazy claims (see src/lazy/layers.ts) by upstream, repository and layer digest. */
export class SharedClaims {
  /** what was looked up lately and found nowhere: a plain layer is not asked about on every Range */
  private readonly unknown = new LRUCache<string, true>({ max: 10_000, ttl: 10_000 });
  /** what this replica shared lately: a manifest served again does not write the same claim again */
  private readonly sent = new LRUCache<string, true>({ max: 10_000, ttl: 3_600_000 });

  constructor(private readonly fleet: Fleet) {}

  share(who: string, digest: string, claim: LayerClaim): void {
    const key = `claim:${who}\n${digest}`;
    const value = JSON.stringify({ format: claim.format, size: claim.size, index: claim.index });
    if (this.sent.has(`${key}\n${value}`)) return;
    this.sent.set(`${key}\n${value}`, true);
    this.unknown.delete(key);
    this.fleet.share(key, value, CLAIM_TTL_MS);
  }

  async get(who: string, digest: string): Promise<LayerClaim | undefined> {
    const key = `claim:${who}\n${digest}`;
    if (this.unknown.has(key)) return undefined;
    const v = await this.fleet.fact(key);
    const claim = v === undefined ? undefined : asClaim(v);
    if (!claim) this.unknown.set(key, true);
    return claim;
  }
}

function asClaim(text: string): LayerClaim | undefined {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    if (typeof v.format !== 'string' || typeof v.index !== 'string' || typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size <= 0) return undefined;
    return { format: v.format, index: v.index, size: v.size };
  } catch {
    return undefined;
  }
}
