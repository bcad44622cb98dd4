// One repository on one upstream: what a request is about once it is routed. The core and the
// lazy layers take this handle rather than an (upstream, repository name) pair, and ask the
// upstream through it for this repository only. For an upstream with clientCredentials:
// passthrough, the handle is the request's own: it carries the client's credentials, and every
// call through it is made with them.
import type { Digest } from '../oci/digest.js';
import type { Reference } from '../oci/reference.js';
import type { CredentialProvider } from './auth/credentials.js';
import type { CallOptions, Upstream } from './upstream.js';

export class Repository {
  constructor(
    readonly upstream: Upstream,
    /** the repository path on the upstream, e.g. "library/alpine" */
    readonly name: string,
    /**
     * clientCredentials: passthrough: the client's own credentials (the anonymous provider for a
     * client that sent none), used for every call; what the cache holds is served to this client
     * only once the upstream confirmed it may read it (core/client-access.ts). Undefined: the
     * upstream's configured credentials, shared by every client.
     */
    readonly client?: CredentialProvider | undefined,
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
    return this.upstream.headManifest(this.name, ref, accept, this.as(o));
  }

  getManifest(ref: Reference, accept: readonly string[], o?: CallOptions): ReturnType<Upstream['getManifest']> {
    return this.upstream.getManifest(this.name, ref, accept, this.as(o));
  }

  headBlob(digest: Digest, o?: CallOptions): ReturnType<Upstream['headBlob']> {
    return this.upstream.headBlob(this.name, digest, this.as(o));
  }

  getBlob(digest: Digest, o?: Parameters<Upstream['getBlob']>[2]): ReturnType<Upstream['getBlob']> {
    return this.upstream.getBlob(this.name, digest, this.as(o));
  }

  tags(page: { n?: number; last?: string }, o?: CallOptions): ReturnType<Upstream['tags']> {
    return this.upstream.tags(this.name, page, this.as(o));
  }

  referrers(digest: Digest, artifactType: string | undefined, o?: CallOptions): ReturnType<Upstream['referrers']> {
    return this.upstream.referrers(this.name, digest, artifactType, this.as(o));
  }

  /** The call's options, with the client's credentials when the handle carries them. */
  private as<O extends CallOptions>(o: O | undefined): O | undefined {
    return this.client ? ({ ...o, credentials: this.client } as O) : o;
  }
}
