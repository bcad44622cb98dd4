// What the client-configuration tests share: two small images in a real docker-registry under
// the names the README's examples pull, reached by pullthrough as two upstreams, `docker.io` (the
// default, since Docker's registry-mirrors only applies to Docker Hub images) and `ghcr.io`, each
// through a hop that records its traffic; a front hop that records what clients ask the mirror;
// pullthrough's log, captured; and an egress trap for the clients, so that a fallback to the real
// registry stays on this machine and shows.
//
//   client ──> front hop ──> pullthrough ──> hop "docker.io" ──> docker-registry  library/alpine:3.20
//          │                             └─> hop "ghcr.io"   ──┘                 org/app:v1
//          └─(fallback)──> egress trap (refuses, records the host)
import { join } from 'node:path';
import { startCapturedProxy, type CapturedProxy } from './captured-proxy.js';
import { startEgressTrap, type EgressTrap } from './egress.js';
import { startHop, type Hop, type HopLogEntry } from './hop.js';
import { makeImage, pushLayout, type ImageLayout } from './images.js';
import { README_MIRROR } from './readme.js';
import { startRegistry } from './registry.js';
import { makeTempDir, removeDir } from './util.js';

/** One upstream image the README's examples pull. */
export interface UpstreamImage {
  /** The upstream's name in pullthrough's config (and the registry host in references). */
  upstream: 'docker.io' | 'ghcr.io';
  /** Repository and tag on the upstream registry. */
  repo: string;
  tag: string;
  layout: ImageLayout;
  /** The hop in front of the registry that plays this upstream. */
  hop: Hop;
}

export interface MirrorFixture {
  proxy: CapturedProxy;
  /** Between the clients and pullthrough: what clients asked the mirror. */
  front: Hop;
  hub: UpstreamImage;
  ghcr: UpstreamImage;
  trap: EgressTrap;
  /** A temp dir for the test's files, removed at teardown. */
  work: string;
  /** The README's placeholder for the mirror's host:port and the one to use, for substitute(). */
  mirror: Record<string, string>;
  /** Log positions, taken before a pull, to pass to expectPulled(). */
  mark(): Mark;
  /**
   * Asserts what a pull since `mark` did: the client asked the mirror for `image`'s manifest and
   * for its config and layer, and pullthrough asked `image`'s upstream, and only that one.
   */
  expectPulled(t: Assert, image: UpstreamImage, mark: Mark, client: string): void;
  /**
   * pullthrough's log lines about refused requests (those with an OCI `code`) whose request
   * path contained `pathPart`.
   */
  refusals(pathPart: string): Record<string, unknown>[];
}

export interface MirrorFixtureOptions {
  /** More of pullthrough's config document (such as `auth`), over the fixture's own. */
  config?: Record<string, unknown>;
  /** More upstreams, by name, each reaching the same registry directly (for a config that names them). */
  moreUpstreams?: string[];
}

/** Lengths of the hops' logs at one moment. */
export interface Mark {
  front: number;
  hub: number;
  ghcr: number;
}

/** The part of tap's `t` that expectPulled needs. */
interface Assert {
  ok(value: unknown, message: string): unknown;
  same(found: unknown, wanted: unknown, message: string): unknown;
}

export async function startMirrorFixture(t: { teardown(fn: () => unknown): void }, opts: MirrorFixtureOptions = {}): Promise<MirrorFixture> {
  const work = await makeTempDir('pt-clients-');
  t.teardown(() => removeDir(work));
  // different content per upstream, so that a pull served from the wrong one shows as a wrong digest
  const [hubLayout, ghcrLayout] = await Promise.all([
    makeImage({ layers: 1, layerBytes: 64 << 10, seed: 'clients-hub', dir: join(work, 'hub-image') }),
    makeImage({ layers: 1, layerBytes: 48 << 10, seed: 'clients-ghcr', dir: join(work, 'ghcr-image') }),
  ]);
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  const hub = { upstream: 'docker.io', repo: 'library/alpine', tag: '3.20', layout: hubLayout, hop: await startHop(registry.url) } as const;
  t.teardown(() => hub.hop.close());
  const ghcr = { upstream: 'ghcr.io', repo: 'org/app', tag: 'v1', layout: ghcrLayout, hop: await startHop(registry.url) } as const;
  t.teardown(() => ghcr.hop.close());
  await Promise.all([hub, ghcr].map((i) => pushLayout(i.layout.dir, `${registry.host}/${i.repo}:${i.tag}`)));

  // tagTtl 0s: every client's tag request revalidates upstream, so each pull shows its routing
  const proxy = await startCapturedProxy({
    configDoc: {
      upstreams: [
        { name: 'docker.io', url: hub.hop.url },
        { name: 'ghcr.io', url: ghcr.hop.url },
        ...(opts.moreUpstreams ?? []).map((name) => ({ name, url: registry.url })),
      ],
      defaultUpstream: 'docker.io',
      cache: { tagTtl: '0s' },
      ...opts.config,
    },
  });
  t.teardown(() => proxy.stop());
  const front = await startHop(proxy.url);
  t.teardown(() => front.close());
  const trap = await startEgressTrap();
  t.teardown(() => trap.close());

  return {
    proxy,
    front,
    hub,
    ghcr,
    trap,
    work,
    mirror: { [README_MIRROR]: front.host },
    mark: () => ({ front: front.log.length, hub: hub.hop.log.length, ghcr: ghcr.hop.log.length }),
    expectPulled: (t, image, mark, client) => {
      const seen = front.log.slice(mark.front);
      const built = image.layout.images[0]!;
      const blobs = [built.config, ...built.layers].map((d) => d.digest);
      const manifestsAt = (entries: HopLogEntry[]): number => entries.filter((e) => e.path.includes(`/${image.repo}/manifests/`)).length;
      t.ok(manifestsAt(seen) > 0, `${client} asked the mirror for ${image.repo}'s manifest`);
      t.same(blobs.filter((d) => !seen.some((e) => e.method === 'GET' && e.path.includes(`/${image.repo}/blobs/${d}`))), [], `${client} fetched the config and the layer from the mirror`);
      const [own, other] = image === hub ? [hub.hop.log.slice(mark.hub), ghcr.hop.log.slice(mark.ghcr)] : [ghcr.hop.log.slice(mark.ghcr), hub.hop.log.slice(mark.hub)];
      t.ok(manifestsAt(own) > 0, `pullthrough asked upstream ${image.upstream} for it`);
      t.same(manifestsAt(other), 0, 'and not the other upstream');
    },
    refusals: (pathPart) => {
      const logs = proxy.logs();
      const ids = new Set(
        logs.filter((l) => l.msg === 'request completed' && String(l.path).includes(pathPart)).map((l) => l.reqId),
      );
      return logs.filter((l) => ids.has(l.reqId) && typeof l.code === 'string');
    },
  };
}
