// What the cache did to answer one request: the one fact the edge turns into the request's log
// line and its metrics, so the core reports it on what it returns instead of counting anything.

/**
 * - `hit`: from the cache (a tag's manifest also when the upstream confirmed it unchanged)
 * - `miss`: from the upstream, fetched for this request (and cached as it passed)
 * - `coalesced`: from the fetch another request had started (the upstream was asked once)
 * - `lazy`: a range of a lazily served layer (only the missing parts fetched, by range)
 * - `stale`: from the cache because the upstream could not be asked (a tag not revalidated)
 */
export type Served = 'hit' | 'miss' | 'coalesced' | 'lazy' | 'stale';
