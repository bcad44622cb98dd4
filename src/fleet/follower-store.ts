// The store a fleet fill publishes through when its bytes may have come from another replica:
// no streaming upload while it runs (the holder's own upload is under way), and once verified,
// the blob goes to the shared store only if nobody else stores it (FleetBlobSource.mayStore);
// the local tier, when there is one, keeps its copy either way.
import type { Digest } from '../oci/digest.js';
import type { ByteRange } from '../oci/range.js';
import type { BlobInfo, BlobReader, BlobStore, BlobWriter, StoreUsage } from '../cache/blob-store.js';

export class FollowerStore implements BlobStore {
  constructor(
    /** the store as a whole (both tiers, when there are two) */
    private readonly store: BlobStore,
    /** the bucket */
    private readonly shared: BlobStore,
    /** the local tier, if any */
    private readonly local: BlobStore | undefined,
    /** asked once the blob verified: store it in the bucket too? */
    private readonly mayStore: () => Promise<boolean>,
  ) {}

  get spoolDir(): string {
    return this.store.spoolDir;
  }

  stat(digest: Digest): Promise<BlobInfo | undefined> {
    return this.store.stat(digest);
  }

  open(digest: Digest, range?: ByteRange): Promise<BlobReader | undefined> {
    return this.store.open(digest, range);
  }

  async ingest(digest: Digest, file: string, size: number): Promise<void> {
    if ((await this.shared.stat(digest)) === undefined && (await this.mayStore())) return this.store.ingest(digest, file, size);
    await this.local?.ingest(digest, file, size);
  }

  /** A writer without a sink: the fill's clients get the last byte as soon as it verified, and the blob is stored after. */
  create(digest: Digest): BlobWriter {
    return { commit: (file, size) => this.ingest(digest, file, size), abort: async () => undefined };
  }

  delete(digest: Digest): Promise<void> {
    return this.store.delete(digest);
  }

  usage(): StoreUsage | undefined {
    return this.store.usage?.();
  }

  list(): AsyncIterable<string> {
    return this.store.list();
  }
}
