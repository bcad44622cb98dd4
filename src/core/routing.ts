// Which upstream a repository name goes to: containerd's ?ns= parameter, a path prefix naming a
// configured upstream (or one of its aliases), or the default upstream for bare names. For an
// upstream with clientCredentials: passthrough the handle carries the client's own credentials.
import type { ClientCredentials } from '../access/basic.js';
import { RegistryError } from '../oci/errors.js';
import { anonymous, type CredentialProvider } from '../upstreams/auth/credentials.js';
import { ClientCredential } from '../upstreams/auth/client-credential.js';
import { isHostComponent, validateRepository } from '../oci/reference.js';
import { kindOf, type UpstreamConfig } from '../upstreams/kinds/index.js';
import { Repository } from '../upstreams/repository.js';
import type { Upstream } from '../upstreams/upstream.js';

export interface RoutedUpstream {
  config: UpstreamConfig;
  client: Upstream;
}

export class Router {
  private readonly byName = new Map<string, RoutedUpstream>();

  constructor(
    upstreams: readonly RoutedUpstream[],
    private readonly defaultUpstream: RoutedUpstream,
  ) {
    for (const u of upstreams) {
      for (const n of [u.config.name, ...u.config.aliases, new URL(u.config.url).host]) {
        if (!this.byName.has(n.toLowerCase())) this.byName.set(n.toLowerCase(), u);
      }
    }
  }

  /** Whether some upstream takes each client's own credentials (so /v2/ challenges clients that send none). */
  get passthrough(): boolean {
    return [...this.byName.values()].some((u) => u.config.clientCredentials === 'passthrough');
  }

  /**
   * The repository a client's name (and ns=) stands for, on its upstream. `credentials`, the
   * client's Basic credentials, ride on the handle when the upstream is passthrough, and are
   * ignored otherwise.
   */
  route(name: string, ns: string | undefined, credentials?: ClientCredentials): Repository {
    const repo = this.find(name, ns);
    if (repo.config.clientCredentials !== 'passthrough') return repoFor(repo, repo.path);
    return repoFor(repo, repo.path, credentials ? new ClientCredential(credentials) : anonymous);
  }

  private find(name: string, ns: string | undefined): RoutedUpstream & { path: string } {
    if (ns !== undefined) {
      const upstream = this.byName.get(ns.toLowerCase());
      if (!upstream) {
        throw new RegistryError('NAME_UNKNOWN', { message: `no upstream is configured for ns=${ns.slice(0, 100)}`, detail: { ns: ns.slice(0, 100) } });
      }
      return { ...upstream, path: name };
    }
    const slash = name.indexOf('/');
    const first = slash > 0 ? name.slice(0, slash) : '';
    const prefixed = first ? this.byName.get(first.toLowerCase()) : undefined;
    if (prefixed) return { ...prefixed, path: name.slice(slash + 1) };
    if (first && isHostComponent(first) && kindOf(this.defaultUpstream.config.type).refusesHostPrefix) {
      throw new RegistryError('NAME_UNKNOWN', { message: `no upstream is configured for ${first.slice(0, 100)}`, detail: { name: name.slice(0, 300) } });
    }
    return { ...this.defaultUpstream, path: name };
  }
}

/** The repository handle for a validated upstream-side path, named by its kind's rules (Docker Hub's implicit library/). */
function repoFor(upstream: RoutedUpstream, path: string, client?: CredentialProvider): Repository {
  validateRepository(path);
  return new Repository(upstream.client, kindOf(upstream.config.type).repositoryName(path), client);
}
