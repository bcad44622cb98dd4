// Which upstream a repository name goes to: containerd's ?ns= parameter, a path prefix naming a
// configured upstream (or one of its aliases), or the default upstream for bare names.
import type { UpstreamConfig } from '../config.js';
import { RegistryError } from '../oci/errors.js';
import { isHostComponent, validateRepository } from '../oci/reference.js';
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

  /** The repository a client's name (and ns=) stands for, on its upstream. */
  route(name: string, ns: string | undefined): Repository {
    if (ns !== undefined) {
      const upstream = this.byName.get(ns.toLowerCase());
      if (!upstream) {
        throw new RegistryError('NAME_UNKNOWN', { message: `no upstream is configured for ns=${ns.slice(0, 100)}`, detail: { ns: ns.slice(0, 100) } });
      }
      return repoFor(upstream, name);
    }
    const slash = name.indexOf('/');
    const first = slash > 0 ? name.slice(0, slash) : '';
    const prefixed = first ? this.byName.get(first.toLowerCase()) : undefined;
    if (prefixed) return repoFor(prefixed, name.slice(slash + 1));
    if (first && isHostComponent(first) && this.defaultUpstream.config.type === 'dockerhub') {
      throw new RegistryError('NAME_UNKNOWN', { message: `no upstream is configured for ${first.slice(0, 100)}`, detail: { name: name.slice(0, 300) } });
    }
    return repoFor(this.defaultUpstream, name);
  }
}

/** The repository handle for a validated upstream-side path, with Docker Hub's implicit library/ namespace. */
function repoFor(upstream: RoutedUpstream, path: string): Repository {
  validateRepository(path);
  const name = upstream.config.type === 'dockerhub' && !path.includes('/') ? `library/${path}` : path;
  return new Repository(upstream.client, name);
}
