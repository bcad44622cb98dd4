// The disk that the sparse copies of lazily read eStargz layers may take (estargz.maxSparseSize).
// Each copy's present bytes and last use are noted; past the budget, the least recently used
// copies other than the one just used are given up. Their layers stay lazy: a later read of one
// fetches its chunks again.

export class SparseBudget {
  private readonly copies = new Map<string, { bytes: number; usedAt: number }>();
  private sum = 0;

  constructor(
    private readonly maxBytes: number,
    private readonly now: () => number = Date.now,
  ) {}

  note(digest: string, bytes: number, usedAt = this.now()): void {
    this.sum += bytes - (this.copies.get(digest)?.bytes ?? 0);
    this.copies.set(digest, { bytes, usedAt });
  }

  drop(digest: string): void {
    this.sum -= this.copies.get(digest)?.bytes ?? 0;
    this.copies.delete(digest);
  }

  get total(): number {
    return this.sum;
  }

  /** The copies to give up, least recently used first, until the rest fit; never `keep`. */
  over(keep: string): string[] {
    let total = this.total;
    if (total <= this.maxBytes) return [];
    const victims: string[] = [];
    for (const [digest, c] of [...this.copies].sort((a, b) => a[1].usedAt - b[1].usedAt)) {
      if (total <= this.maxBytes) break;
      if (digest === keep) continue;
      victims.push(digest);
      total -= c.bytes;
    }
    return victims;
  }
}
