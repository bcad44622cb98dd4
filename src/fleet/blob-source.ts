// Where a replica of a fleet reads a blob it has to fill, from an offset on: from the shared
// store once the blob is there; else from the upstream when it holds the blob's lease (or the
// fleet cannot be asked); else from the replica holding the lease, through its in-progress fill.
// A holder that dies stops renewing its lease; until the lease lapses, reads from it fail and are
// tried again a little later, after which this replica takes the lease and resumes from the
// upstream where its bytes stopped. So a fill of this replica's goes on, whoever feeds it; and
// when the holder can be read from by nobody for several lease TTLs, this replica fetches it too.
import type { Readable } from 'node:stream';
import type { BlobStore } from '../cache/blob-store.js';
import type { Digest } from '../oci/digest.js';
import type { Logger } from '../lib/log.js';
import { pause, type Fleet, type Lease } from './fleet.js';
import type { PeerClient } from './peer-client.js';

export interface Opened {
  size: number | undefined;
  body: Readable;
  from: 'upstream' | 'peer' | 'store';
}

export interface BlobSourceOptions {
  fleet: Fleet;
  peers: PeerClient;
  /** the shared store (the bucket): where a blob the fleet finished is read */
  shared: BlobStore;
  digest: Digest;
  /** the upstream's bytes from an offset on (a ranged request past 0) */
  fromUpstream: (offset: number) => Promise<{ size: number | undefined; body: Readable }>;
  log: Logger;
  where: Record<string, unknown>;
}

export class FleetBlobSource {
  private lease: Lease | undefined;
  private alone = false;

  constructor(private readonly o: BlobSourceOptions) {}

  /** This replica fetches from the upstream: it holds the lease, or the fleet could not be asked. */
  get fetching(): boolean {
    return this.lease !== undefined || this.alone;
  }

  /** The blob from `offset` on. */
  async open(offset: number): Promise<Opened> {
    const { fleet, digest } = this.o;
    const key = `blob:${digest.value}`;
    // a dead holder's lease lapses within its TTL; past a few of those something else is wrong
    const deadline = Date.now() + 3 * fleet.leaseTtlMs + 5000;
    for (let attempt = 0; ; attempt++) {
      const stored = await this.stored(offset);
      if (stored) return stored;
      if (this.fetching) return this.upstream(offset);
      const claim = await fleet.claim(key);
      if (claim.kind === 'alone') {
        this.alone = true;
        return this.upstream(offset);
      }
      if (claim.kind === 'mine') {
        this.lease = claim.lease;
        // the holder before us may have stored it and let go just now
        const again = await this.stored(offset);
        if (again) {
          this.release();
          return again;
        }
        return this.upstream(offset);
      }
      if (!claim.self) {
        const got = await this.o.peers.blob(claim.holder, digest, offset).catch((e: Error) => {
          this.o.log.info({ ...this.o.where, peer: claim.holder, offset, err: e.message }, 'fleet: the replica filling this blob did not answer; trying again');
          return undefined;
        });
        if (got) return { ...got, from: 'peer' };
      }
      if (Date.now() > deadline) {
        // a holder that answers nobody yet keeps its lease (a wrong secret, a partition): fetch rather than fail the pull
        this.o.log.warn({ ...this.o.where, peer: claim.holder, offset }, 'fleet: the replica holding this blob\'s lease cannot be read from; fetching it here');
        this.alone = true;
        return this.upstream(offset);
      }
      await pause(Math.min(100 * (attempt + 1), 1000));
    }
  }

  /**
   * Whether this replica should store the blob it verified in the shared store: yes when it
   * fetched from the upstream, or when nobody holds the lease any more (the holder it read from
   * died after its last byte); no while the holder is still at work (it stores the blob itself).
   */
  async mayStore(): Promise<boolean> {
    if (this.fetching) return true;
    const claim = await this.o.fleet.claim(`blob:${this.o.digest.value}`);
    if (claim.kind === 'held') return false;
    if (claim.kind === 'mine') this.lease = claim.lease;
    return true;
  }

  /** Gives the lease up, if this source holds it. */
  release(): void {
    this.lease?.release();
    this.lease = undefined;
  }

  private async stored(offset: number): Promise<Opened | undefined> {
    const info = await this.o.shared.stat(this.o.digest);
    if (!info || offset > info.size) return undefined;
    const reader = await this.o.shared.open(this.o.digest, offset > 0 ? { start: offset, end: info.size } : undefined);
    return reader && { size: info.size, body: reader.stream, from: 'store' };
  }

  private async upstream(offset: number): Promise<Opened> {
    return { ...(await this.o.fromUpstream(offset)), from: 'upstream' };
  }
}
