// Size accounting for a bounded cache: least recently used entries go first, and an entry that
// is pinned (being served) is never chosen; it is reconsidered once it is unpinned.

export class LruIndex {
  /** Map iteration order is insertion order: the first key is the least recently used. */
  private readonly entries = new Map<string, number>();
  private readonly pins = new Map<string, number>();
  private total = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly evict: (key: string) => void,
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
    return this.entries.get(key);
  }

  /** Records an entry (or refreshes it) as the most recently used, then enforces the bound. */
  add(key: string, size: number): void {
    this.remove(key);
    this.entries.set(key, size);
    this.total += size;
    this.enforce();
  }

  touch(key: string): void {
    const size = this.entries.get(key);
    if (size === undefined) return;
    this.entries.delete(key);
    this.entries.set(key, size);
  }

  remove(key: string): void {
    const size = this.entries.get(key);
    if (size === undefined) return;
    this.entries.delete(key);
    this.total -= size;
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

  private enforce(): void {
    if (this.total <= this.maxBytes) return;
    for (const [key, size] of this.entries) {
      if (this.total <= this.maxBytes) break;
      if (this.pins.has(key)) continue;
      this.entries.delete(key);
      this.total -= size;
      this.evict(key);
    }
  }
}
