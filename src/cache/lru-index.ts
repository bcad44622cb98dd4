// Size accounting for a bounded cache: least recently used entries go first, and an entry that
// is pinned (being served) is never chosen; it is reconsidered once it is unpinned. Each entry
// also knows when it was last used, so entries unused for too long can be dropped (expire).

interface Entry {
  size: number;
  /** ms on the index's clock */
  usedAt: number;
}

export class LruIndex {
  /** Map iteration order is insertion order: the first key is the least recently used. */
  private readonly entries = new Map<string, Entry>();
  private readonly pins = new Map<string, number>();
  private total = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly evict: (key: string) => void,
    private readonly now: () => number = Date.now,
  ) {}

  get bytes(): number {
    return this.total;
  }

  get count(): number {
    return this.entries.size;
  }

  /** Keys from least to most recently used. */
  keys(): IterableIterator<string> {
    return this.entries.keys();
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** The size an entry was added with; undefined when it is not in the index. */
  sizeOf(key: string): number | undefined {
    return this.entries.get(key)?.size;
  }

  /** When an entry was last used (added or touched); undefined when it is not in the index. */
  usedAt(key: string): number | undefined {
    return this.entries.get(key)?.usedAt;
  }

  /**
   * Records an entry (or refreshes it) as the most recently used, then enforces the bound.
   * `usedAt` is for entries found at start-up, whose last use is older than now.
   */
  add(key: string, size: number, usedAt = this.now()): void {
    this.remove(key);
    this.entries.set(key, { size, usedAt });
    this.total += size;
    this.enforce();
  }

  /**
   * Adds entries found at start-up (oldest first) as older than every entry already here, which
   * stay as they are (stored or touched since), then enforces the bound.
   */
  addOlder(found: readonly { key: string; size: number; mtime: number }[]): void {
    const newer = new Map(this.entries);
    this.entries.clear();
    for (const f of found) {
      if (newer.has(f.key) || this.entries.has(f.key)) continue;
      this.entries.set(f.key, { size: f.size, usedAt: f.mtime });
      this.total += f.size;
    }
    for (const [key, entry] of newer) this.entries.set(key, entry);
    this.enforce();
  }

  touch(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.entries.set(key, { size: entry.size, usedAt: this.now() });
  }

  remove(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    this.total -= entry.size;
  }

  pin(key: string): void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
  }

  unpin(key: string): void {
    const n = (this.pins.get(key) ?? 1) - 1;
    if (n > 0) this.pins.set(key, n);
    else this.pins.delete(key);
    this.enforce();
  }

  isPinned(key: string): boolean {
    return this.pins.has(key);
  }

  /**
   * Evicts up to `limit` unpinned entries last used before `cutoff`, and returns how many it
   * evicted. Every entry is looked at, not only the oldest run: entries found at start-up carry
   * their files' times, which need not be in order with those of entries added since.
   */
  expire(cutoff: number, limit = Infinity): number {
    let evicted = 0;
    for (const [key, entry] of this.entries) {
      if (evicted >= limit) break;
      if (entry.usedAt >= cutoff || this.pins.has(key)) continue;
      this.entries.delete(key);
      this.total -= entry.size;
      evicted++;
      this.evict(key);
    }
    return evicted;
  }

  private enforce(): void {
    if (this.total <= this.maxBytes) return;
    for (const [key, entry] of this.entries) {
      if (this.total <= this.maxBytes) break;
      if (this.pins.has(key)) continue;
      this.entries.delete(key);
      this.total -= entry.size;
      this.evict(key);
    }
  }
}
