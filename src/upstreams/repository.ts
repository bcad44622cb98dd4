// One repository on one upstream: what a request is about once it is routed. The core and the
// lazy layers take this handle rather than an (upstream, repository name) pair, and ask the
// upstream through it for this repository only.
import type { Digest } from '../oci/digest.js';
import type { Reference } from '../oci/reference.js';
import type { CallOptions, Upstream } from './upstream.js';

export class Repository {
  constructor(
    readonly upstream: Upstream,
    /** the repository path on the upstream, e.g. "library/alpine" */
    readonly name: string,
  ) {}

  /** Unique to this upstream and repository: for what is kept per repository (claims, listings, in-flight lookups). */
  get key(): string {
    return `${this.upstream.name}\n${this.name}`;
  }

  /** The fields that name it in a log line. */
  get where(): { upstream: string; repo: string } {
    return { upstream: this.upstream.name, repo: this.name };
  }

  headManifest(ref: Reference, accept: readonly string[], o?: CallOptions): ReturnType<Upstream['headManifest']> {
    return this.upstream.headManifest(this.name, ref, accept, o);
  }

  getManifest(ref: Reference, accept: readonly string[], o?: CallOptions): ReturnType<Upstream['getManifest']> {
    return this.upstream.getManifest(this.name, ref, accept, o);
  }

  headBlob(digest: Digest, o?: CallOptions): ReturnType<Upstream['headBlob']> {
    return this.upstream.headBlob(this.name, digest, o);
  }

  getBlob(digest: Digest, o?: Parameters<Upstream['getBlob']>[2]): ReturnType<Upstream['getBlob']> {
    return this.upstream.getBlob(this.name, digest, o);
  }

  tags(page: { n?: number; last?: string }, o?: CallOptions): ReturnType<Upstream['tags']> {
    return this.upstream.tags(this.name, page, o);
  }

  referrers(digest: Digest, artifactType: string | undefined, o?: CallOptions): ReturnType<Upstream['referrers']> {
    return this.upstream.referrers(this.name, digest, artifactType, o);
  }
}
