// What a replica of a fleet asks of the others (src/fleet/redis-fleet.ts keeps it in Redis):
// who fetches a blob, a manifest or a tag revalidation now (a lease), and what is worth knowing
// fleet-wide (shared facts). The lease is one of efficiency only: two holders at once waste a
// fetch, never a byte, since every replica verifies what it keeps. So whenever the fleet cannot
// answer (Redis down or stalled), a replica is told to go `alone`, as it would without a fleet.

import type { BlobStore } from '../cache/blob-store.js';
import type { PeerClient } from './peer-client.js';

export type Claim =
  /** nobody else is fetching this: fetch it, keep the lease renewed, release it once the result is stored */
  | { kind: 'mine'; lease: Lease }
  /** another replica is fetching it: read it from that one (`holder`, its advertised origin) or wait for the store */
  | { kind: 'held'; holder: string; self: boolean }
  /** no coordination now: fetch on your own (with this replica's own single flight) */
  | { kind: 'alone' };

export interface Lease {
  /** Gives the lease up (once; later calls do nothing). Never rejects. */
  release(): void;
}

export interface Fleet {
  /** this replica's origin as the others reach it (http://host:port) */
  readonly self: string;
  /** the secret every replica sends on the peer route, and checks */
  readonly secret: string;
  /** how long a lease outlives a holder that stopped renewing it */
  readonly leaseTtlMs: number;
  /** Takes the lease on `key`, or says who holds it. */
  claim(key: string): Promise<Claim>;
  /** A fact another replica shared, or undefined (unknown, or the fleet unreachable). */
  fact(key: string): Promise<string | undefined>;
  /** Shares a fact for `ttlMs`; best effort (dropped when the fleet is unreachable). */
  share(key: string, value: string, ttlMs: number): void;
  status(): FleetStatus;
  close(): Promise<void>;
}

export interface FleetStatus {
  /** Redis answers: the fleet coordinates */
  coordinated: boolean;
  /** claims answered `alone` because Redis could not be asked, since start-up */
  uncoordinated: number;
  /** claims by outcome since start-up */
  claims: { mine: number; held: number };
}

/** What a replica's blob fills work with in a fleet (core/blob-cache.ts). */
export interface FleetBlobs {
  fleet: Fleet;
  peers: PeerClient;
  /** the bucket */
  shared: BlobStore;
  /** the local tier in front of it, if any */
  local?: BlobStore | undefined;
}

/** Waits `ms`. */
export function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
