// containerd as a real client: a private containerd (own root, state and socket) pulls with
// `ctr image pull --hosts-dir` through pullthrough configured as the mirror of two upstream hosts
// in hosts.toml. containerd routes with `?ns=<host>`; the hosts names never resolve, so every
// byte comes through the mirror. Then both upstreams go down and cached images still pull, fast,
// with ctr (into a fresh containerd) and with skopeo.
//
//   ctr ──> front hop ──> pullthrough ──> hopA ──> docker-registry A   (first.example)
//                                     └─> hopB ──> docker-registry B   (second.example)
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { containerdUnavailable, startContainerd, writeHostsDir, type Containerd } from '../helpers/containerd.js';
import { startHop, type Hop } from '../helpers/hop.js';
import { LINUX_AMD64, makeImage, makeMultiPlatformImage, pullImage, pushLayout, type ImageLayout } from '../helpers/images.js';
import { startProxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const FIRST = 'first.example';
const SECOND = 'second.example';
const PLATFORM = 'linux/amd64';
// below the 3 s revalidation deadline: a pull that waited on a dead upstream even once would fail
const FAST_MS = 2500;

// `npm test` installs containerd when it is missing, so its absence is a failure, not a skip
const unavailable = containerdUnavailable();
if (unavailable !== undefined) {
  t.fail(`containerd cannot run here: ${unavailable}`);
} else {
  await main();
}

async function main(): Promise<void> {
  const work = await makeTempDir('pullthrough-ctd-e2e-');
  t.teardown(() => removeDir(work));

  // The same repository and tag on both upstreams with different content, so a pull that reached
  // the wrong upstream would show up as a wrong digest.
  const appA = await makeImage({ layers: 2, layerBytes: 256 << 10, seed: 'ctd-first', dir: join(work, 'app-a') });
  const appB = await makeImage({ layers: 2, layerBytes: 192 << 10, seed: 'ctd-second', format: 'docker', dir: join(work, 'app-b') });
  const multi = await makeMultiPlatformImage({ layers: 2, layerBytes: 128 << 10, seed: 'ctd-multi', dir: join(work, 'multi') });
  const amd64 = multi.images.find((i) => i.platform.architecture === 'amd64')!;
  const arm64 = multi.images.find((i) => i.platform.architecture === 'arm64')!;

  const [regA, regB] = await Promise.all([startRegistry({ mode: 'open' }), startRegistry({ mode: 'open' })]);
  t.teardown(() => regA.stop());
  t.teardown(() => regB.stop());
  await Promise.all([
    pushLayout(appA.dir, `${regA.host}/team/app:v1`),
    pushLayout(appB.dir, `${regB.host}/team/app:v1`),
    pushLayout(multi.dir, `${regB.host}/team/multi:v1`, { all: true }),
  ]);
  const hopA = await startHop(regA.url);
  t.teardown(() => hopA.close());
  const hopB = await startHop(regB.url);
  t.teardown(() => hopB.close());

  // tagTtl 0s: every tag request revalidates upstream, so the outage below exercises the stale path.
  const proxy = await startProxy({
    configDoc: {
      upstreams: [
        { name: FIRST, url: hopA.url },
        { name: SECOND, url: hopB.url },
      ],
      defaultUpstream: FIRST,
      cache: { tagTtl: '0s' },
    },
  });
  t.teardown(() => proxy.stop());
  const front = await startHop(proxy.url);
  t.teardown(() => front.close());

  const hostsDir = join(work, 'hosts.d');
  await writeHostsDir(hostsDir, [
    { host: FIRST, mirror: front.url },
    { host: SECOND, mirror: front.url },
  ]);

  const containerds: Containerd[] = [];
  const newContainerd = async (t: Test): Promise<Containerd> => {
    const ctd = await startContainerd();
    containerds.push(ctd);
    t.teardown(() => ctd.stop());
    return ctd;
  };
  /** Runs a pull; on failure, the containerd log and the front hop's log go into the error. */
  const ctrPull = async (ctd: Containerd, ref: string): Promise<number> => {
    const started = performance.now();
    try {
      await ctd.pull(ref, { hostsDir, platform: PLATFORM });
    } catch (err) {
      const requests = front.log.map((e) => `${e.method} ${e.path} -> ${e.status}`).join('\n');
      throw new Error(`${(err as Error).message}\nfront hop:\n${requests}\ncontainerd log:\n${(await ctd.log()).slice(-4000)}`);
    }
    return performance.now() - started;
  };
  const imageDigests = (layout: ImageLayout, arch = 'amd64'): string[] => {
    const img = layout.images.find((i) => i.platform.architecture === arch)!;
    return [...(layout.index ? [layout.index.digest] : []), img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)];
  };
  const blobDigests = (layout: ImageLayout, arch = 'amd64'): string[] => {
    const img = layout.images.find((i) => i.platform.architecture === arch)!;
    return [img.config.digest, ...img.layers.map((l) => l.digest)];
  };
  const checkImage = async (t: Test, ctd: Containerd, ref: string, layout: ImageLayout): Promise<void> => {
    const listed = (await ctd.images()).find((i) => i.ref === ref);
    t.ok(listed, `ctr image ls lists ${ref}`);
    t.equal(listed?.digest, layout.top.digest, `${ref} has the digest it was built with`);
    t.equal(listed?.mediaType, layout.top.mediaType, `${ref} has the media type it was built with`);
    const content = await ctd.content();
    const missing = imageDigests(layout).filter((d) => !content.has(d));
    t.same(missing, [], `every ${PLATFORM} manifest and blob of ${ref} is in the content store`);
  };

  /** What ctr sent to the mirror since `front.reset()`: image requests, all with ?ns=<host>, all 2xx. */
  const checkMirrorLog = (t: Test, host: string): void => {
    const image = front.log.filter((e) => e.path !== '/v2/' && e.path.startsWith('/v2/'));
    t.ok(image.length >= 4, `ctr sent its requests to the mirror (${image.length})`);
    t.same(image.filter((e) => !e.path.endsWith(`?ns=${host}`)).map((e) => e.path), [], `every request carried ?ns=${host}`);
    t.same(front.log.filter((e) => e.status < 200 || e.status > 299).map((e) => `${e.method} ${e.path} -> ${e.status}`), [], 'the mirror answered every request with 2xx');
  };

  t.test('ctr pulls through pullthrough as the mirror of two upstreams, routed by ?ns=', async (t) => {
    const ctd = await newContainerd(t);
    t.comment(ctd.version.replace(/\s+/g, ' ').trim());
    for (const [host, layout, hop, other] of [
      [FIRST, appA, hopA, hopB],
      [SECOND, appB, hopB, hopA],
    ] as const) {
      front.reset();
      const otherBefore = other.log.length;
      const ref = `${host}/team/app:v1`;
      const ms = await ctrPull(ctd, ref);
      t.comment(`ctr pull ${ref} (cold cache): ${ms.toFixed(0)} ms`);
      await checkImage(t, ctd, ref, layout);

      checkMirrorLog(t, host);
      for (const d of blobDigests(layout)) {
        t.equal(hop.count({ method: 'GET', pathIncludes: `/blobs/${d}` }), 1, `${d.slice(0, 19)} fetched from ${host} once`);
      }
      t.equal(other.log.length, otherBefore, `the other upstream saw nothing for ${host}`);
    }
  });

  t.test('ctr pulls one platform of a multi-platform index', async (t) => {
    const ctd = await newContainerd(t);
    front.reset();
    const hopBefore = hopB.log.length;
    const ref = `${SECOND}/team/multi:v1`;
    const ms = await ctrPull(ctd, ref);
    t.comment(`ctr pull --platform ${PLATFORM} ${ref} (cold cache): ${ms.toFixed(0)} ms`);
    await checkImage(t, ctd, ref, multi);
    checkMirrorLog(t, SECOND);
    t.equal((await ctd.images()).find((i) => i.ref === ref)?.digest, multi.index!.digest, 'the image is the index');
    t.ok(front.log.some((e) => e.path.includes(`/manifests/${amd64.manifest.digest}?ns=${SECOND}`)), 'the amd64 manifest was fetched by digest');

    const content = await ctd.content();
    const arm = [arm64.manifest.digest, ...blobDigests(multi, 'arm64')];
    t.same(arm.filter((d) => content.has(d)), [], 'no arm64 manifest, config or layer in the content store');
    const upstream = hopB.log.slice(hopBefore);
    t.same(upstream.filter((e) => arm.some((d) => e.path.includes(d))).map((e) => e.path), [], 'nothing of arm64 was fetched upstream');
    for (const d of blobDigests(multi)) {
      t.equal(hopB.count({ method: 'GET', pathIncludes: `/blobs/${d}` }), 1, `${d.slice(0, 19)} fetched upstream once`);
    }
  });

  t.test('both upstreams down: cached tags and blobs still pull with ctr and skopeo, fast', async (t) => {
    // Only after the pulls above: the cache holds everything these pulls need.
    for (const c of containerds) await c.stop();
    Object.assign(hopA.faults, { down: true });
    Object.assign(hopB.faults, { down: true });
    hopA.log.length = 0;
    hopB.log.length = 0;

    const ctd = await newContainerd(t); // a fresh root: nothing in its content store
    t.equal((await ctd.content()).size, 0, 'the fresh containerd has no content');
    for (const [ref, layout] of [
      [`${FIRST}/team/app:v1`, appA],
      [`${SECOND}/team/app:v1`, appB],
      [`${SECOND}/team/multi:v1`, multi],
    ] as const) {
      front.reset();
      const ms = await ctrPull(ctd, ref);
      t.comment(`upstreams down: ctr pull ${ref}: ${ms.toFixed(0)} ms`);
      t.ok(ms < FAST_MS, `ctr pull ${ref} from the cache took ${ms.toFixed(0)} ms (< ${FAST_MS})`);
      await checkImage(t, ctd, ref, layout);
      checkMirrorLog(t, ref.slice(0, ref.indexOf('/')));
    }

    for (const [ref, layout, dir] of [
      [`${proxy.host}/team/app:v1`, appA, 'skopeo-a'], // the default upstream
      [`${proxy.host}/${SECOND}/team/app:v1`, appB, 'skopeo-b'], // path prefix: same cache entry as ?ns=
      [`${proxy.host}/${SECOND}/team/multi:v1`, multi, 'skopeo-multi'],
    ] as const) {
      const started = performance.now();
      const pulled = await pullImage(ref, join(work, dir), { platform: LINUX_AMD64 });
      const ms = performance.now() - started;
      t.comment(`upstreams down: skopeo copy ${ref}: ${ms.toFixed(0)} ms`);
      t.ok(ms < FAST_MS, `skopeo pull ${ref} from the cache took ${ms.toFixed(0)} ms (< ${FAST_MS})`);
      const img = layout.images.find((i) => i.platform.architecture === 'amd64')!;
      t.same(pulled.images[0]?.manifest.digest, img.manifest.digest, `${ref}: the amd64 manifest`);
      t.same(pulled.allDigests, [img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)].sort(), `${ref}: every blob`);
    }
    // what the tag lookups above got: the cached manifest, marked stale
    for (const [host, repo, layout] of [[FIRST, 'app', appA], [SECOND, 'multi', multi]] as const) {
      const started = performance.now();
      const res = await request(`${proxy.url}/v2/team/${repo}/manifests/v1?ns=${host}`, { method: 'HEAD', headers: { accept: layout.top.mediaType } });
      await res.body.dump();
      const ms = performance.now() - started;
      t.comment(`upstreams down: HEAD /v2/team/${repo}/manifests/v1?ns=${host}: ${res.statusCode} in ${ms.toFixed(0)} ms`);
      t.equal(res.statusCode, 200, `${host}: the cached tag is served`);
      t.equal(res.headers['docker-content-digest'], layout.top.digest, `${host}: with the cached digest`);
      t.match(String(res.headers.warning), /^110 /, `${host}: marked stale (Warning: 110)`);
    }
    const served = (h: Hop) => h.log.filter((e) => e.status !== 0).length;
    t.equal(served(hopA) + served(hopB), 0, 'no upstream answered anything during the outage');
  });
}
