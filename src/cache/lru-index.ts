// Size accounting for a bounded cache: least recently used entries go first, and an entry that
// is pinned (being served) is never chosen; it is reconsidered once it is unpinned. Each entry
// also knows when it was last used, so entries unused for too long can be dropped (expire).
//
// A cache holds up to millions of blobs, so an entry costs under 100 bytes (see bench/startup.ts):
// a sha256 key is kept as its 32 bytes in a one-byte string, not its 71 characters, and the map
// holds a slot number whose size and last use live in two typed columns, rather than an object
// per entry (197 bytes an entry in the first version, 93 now). lru-cache keeps an object per
// entry and its own key, so it would cost as much as that first version.

const SHA256_KEY = /^sha256:[0-9a-f]{64}$/;

/** The key as the map holds it: a NUL and the 32 bytes of a sha256 digest, the key itself otherwise (no key starts with NUL). */
function compact(key: string): string {
  if (!SHA256_KEY.test(key)) return key;
  // written into one buffer: a concatenation would be a rope of two strings, twice the memory
  const b = Buffer.allocUnsafe(33);
  b[0] = 0;
  b.write(key.slice(7), 1, 'hex');
  return b.toString('latin1');
}

function expand(k: string): string {
  return k.length === 33 && k.charCodeAt(0) === 0 ? `sha256:${Buffer.from(k.slice(1), 'latin1').toString('hex')}` : k;
}

export class LruIndex {
  /** compact key → slot; Map iteration order is insertion order: the first key is the least recently used */
  private readonly entries = new Map<string, number>();
  private sizes = new Float64Array(1024);
  private used = new Float64Array(1024);
  /** slots given back, for reuse */
  private free: number[] = [];
  private next = 0;
  /** by the caller's key: few at a time */
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
  *keys(): IterableIterator<string> {
    for (const k of this.entries.keys()) yield expand(k);
  }

  has(key: string): boolean {
    return this.entries.has(compact(key));
  }

  /** The size an entry was added with; undefined when it is not in the index. */
  sizeOf(key: string): number | undefined {
    const slot = this.entries.get(compact(key));
    return slot === undefined ? undefined : this.sizes[slot];
  }

  /** When an entry was last used (added or touched); undefined when it is not in the index. */
  usedAt(key: string): number | undefined {
    const slot = this.entries.get(compact(key));
    return slot === undefined ? undefined : this.used[slot];
  }

  /**
   * Records an entry (or refreshes it) as the most recently used, then enforces the bound.
   * `usedAt` is for entries found at start-up, whose last use is older than now.
   */
  add(key: string, size: number, usedAt = this.now()): void {
    const k = compact(key);
    this.drop(k);
    this.put(k, size, usedAt);
    this.enforce();
  }

  /**
   * Adds entries found at start-up as older than every entry already here, which stay as they
   * are (stored, read or removed since: `skip`), oldest first, then enforces the bound.
   */
  addOlder(found: FoundEntries, skip: (key: string) => boolean = () => false): void {
    const newer = [...this.entries.entries()];
    this.entries.clear();
    const present = new Set(newer.map(([k]) => k));
    for (const i of found.byAge()) {
      const k = found.keys[i]!;
      if (present.has(k) || this.entries.has(k) || skip(expand(k))) continue;
      this.put(k, found.sizes[i]!, found.mtimes[i]!);
    }
    for (const [k, slot] of newer) this.entries.set(k, slot);
    this.enforce();
  }

  touch(key: string): void {
    const k = compact(key);
    const slot = this.entries.get(k);
    if (slot === undefined) return;
    this.entries.delete(k);
    this.entries.set(k, slot);
    this.used[slot] = this.now();
  }

  remove(key: string): void {
    this.drop(compact(key));
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
    for (const [k, slot] of this.entries) {
      if (evicted >= limit) break;
      if (this.used[slot]! >= cutoff) continue;
      const key = expand(k);
      if (this.pins.has(key)) continue;
      this.drop(k);
      evicted++;
      this.evict(key);
    }
    return evicted;
  }

  private put(k: string, size: number, usedAt: number): void {
    const slot = this.free.pop() ?? this.grow();
    this.sizes[slot] = size;
    this.used[slot] = usedAt;
    this.entries.set(k, slot);
    this.total += size;
  }

  private drop(k: string): void {
    const slot = this.entries.get(k);
    if (slot === undefined) return;
    this.entries.delete(k);
    this.total -= this.sizes[slot]!;
    this.free.push(slot);
  }

  /** A new slot at the end of the columns, which double when full. */
  private grow(): number {
    if (this.next === this.sizes.length) {
      const sizes = new Float64Array(this.sizes.length * 2);
      sizes.set(this.sizes);
      this.sizes = sizes;
      const used = new Float64Array(this.used.length * 2);
      used.set(this.used);
      this.used = used;
    }
    return this.next++;
  }

  private enforce(): void {
    if (this.total <= this.maxBytes) return;
    for (const [k] of this.entries) {
      if (this.total <= this.maxBytes) break;
      const key = expand(k);
      if (this.pins.has(key)) continue;
      this.drop(k);
      this.evict(key);
    }
  }
}

/**
 * What a start-up scan found, kept as compactly as the index keeps it: a million blobs must not
 * cost a million objects on the way in (the keys are the index's own, not copies).
 */
export class FoundEntries {
  readonly keys: string[] = [];
  sizes = new Float64Array(1024);
  mtimes = new Float64Array(1024);

  get length(): number {
    return this.keys.length;
  }

  push(key: string, size: number, mtime: number): void {
    const i = this.keys.length;
    if (i === this.sizes.length) {
      const sizes = new Float64Array(i * 2);
      sizes.set(this.sizes);
      this.sizes = sizes;
      const mtimes = new Float64Array(i * 2);
      mtimes.set(this.mtimes);
      this.mtimes = mtimes;
    }
    this.keys.push(compact(key));
    this.sizes[i] = size;
    this.mtimes[i] = mtime;
  }

  /** Their positions, oldest first. */
  byAge(): Uint32Array {
    const order = new Uint32Array(this.keys.length);
    for (let i = 0; i < order.length; i++) order[i] = i;
    const m = this.mtimes;
    return order.sort((a, b) => m[a]! - m[b]!);
  }
}
