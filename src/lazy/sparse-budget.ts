// The disk that the sparse copies of lazily read layers may take (estargz.maxSparseSize). Each
// copy's present bytes are noted as it is used, in an LruIndex that keeps them in order of use;
// past the budget, the least recently used copies other than the one just used are given up.
// Their layers stay lazy: a later read of one fetches its units again.
import { LruIndex } from '../cache/lru-index.js';

export class SparseBudget {
  /** Unbounded itself: the budget never evicts on its own, over() says what to give up. */
  private readonly copies = new LruIndex(Infinity, () => undefined);

  constructor(private readonly maxBytes: number) {}

  /** A copy used now holds `bytes`: it becomes the most recently used. */
  note(digest: string, bytes: number): void {
    this.copies.add(digest, bytes);
  }

  drop(digest: string): void {
    this.copies.remove(digest);
  }

  get total(): number {
    return this.copies.bytes;
  }

  /** The copies to give up, least recently used first, until the rest fit; never `keep`. */
  over(keep: string): string[] {
    let total = this.total;
    const victims: string[] = [];
    for (const digest of this.copies.keys()) {
      if (total <= this.maxBytes) break;
      if (digest === keep) continue;
      victims.push(digest);
      total -= this.copies.sizeOf(digest) ?? 0;
    }
    return victims;
  }
}
