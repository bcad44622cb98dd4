// Bounded concurrency over a fixed list: `limit` workers take the next item until none is left.
// Small enough to keep here rather than add a dependency (p-limit and p-map are only tap's); the
// list is known up front, so nothing needs a queue that grows.

/** Runs `work` on every item, at most `limit` at a time; rejects with the first error once all ended. */
export async function forEachLimited<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const errors: unknown[] = [];
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const item = items[next++]!;
      try {
        await work(item);
      } catch (e) {
        errors.push(e);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (errors.length > 0) throw errors[0];
}
