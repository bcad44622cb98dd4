// The pieces of `pullthrough warm` that need no server: image references and the routes they map
// to, platforms and their matching, the figures of its progress, and its bounded concurrency.
import t from 'tap';
import { forEachLimited } from '../../src/lib/pool.js';
import { RegistryError } from '../../src/oci/errors.js';
import type { Descriptor } from '../../src/oci/manifest.js';
import { parseImageReference, referenceString } from '../../src/oci/reference.js';
import { routeName } from '../../src/warm/plan.js';
import { choosePlatforms, parsePlatform, platformText } from '../../src/warm/platforms.js';
import { bytes, duration, shortDigest, Tally, type BlobTask } from '../../src/warm/progress.js';

const D = `sha256:${'a'.repeat(64)}`;

t.test('image references map to the routes of the proxy: a host names an upstream by path prefix', async (t) => {
  const cases: [string, string | undefined, string, string, string][] = [
    // text, host, path, reference, the name the proxy routes
    ['alpine', undefined, 'alpine', 'latest', 'alpine'],
    ['alpine:3.20', undefined, 'alpine', '3.20', 'alpine'],
    ['library/alpine:3.20', undefined, 'library/alpine', '3.20', 'library/alpine'],
    ['team/app', undefined, 'team/app', 'latest', 'team/app'],
    ['docker.io/library/alpine:3.20', 'docker.io', 'library/alpine', '3.20', 'docker.io/library/alpine'],
    ['ghcr.io/org/app:v1', 'ghcr.io', 'org/app', 'v1', 'ghcr.io/org/app'],
    ['ghcr.io/org/sub/app', 'ghcr.io', 'org/sub/app', 'latest', 'ghcr.io/org/sub/app'],
    [`127.0.0.1:5000/repo@${D}`, '127.0.0.1:5000', 'repo', D, `127.0.0.1:5000/repo`],
    [`registry.internal:5000/team/app:v1@${D}`, 'registry.internal:5000', 'team/app', D, 'registry.internal:5000/team/app'],
    ['localhost/app:dev', 'localhost', 'app', 'dev', 'localhost/app'],
    ['localhost:5000/app', 'localhost:5000', 'app', 'latest', 'localhost:5000/app'],
    // a first component without a dot or port is a namespace, not a host
    ['myhost/app', undefined, 'myhost/app', 'latest', 'myhost/app'],
    [`alpine@${D}`, undefined, 'alpine', D, 'alpine'],
  ];
  for (const [text, host, path, ref, route] of cases) {
    const r = parseImageReference(text);
    t.same({ host: r.host, path: r.path, ref: referenceString(r.reference) }, { host, path, ref }, text);
    t.equal(routeName(r), route, `${text}: routed as /v2/${route}/…`);
  }
});

t.test('what is not an image reference is NAME_INVALID with the reason', async (t) => {
  const cases: [string, RegExp][] = [
    ['Alpine:3', /component "Alpine"/],
    ['alpine:', /tag "" is not/],
    ['alpine:-x', /tag "-x" is not/],
    ['alpine@sha256:abc', /not a sha256 or sha512 digest/],
    ['alpine@md5:abc', /not a sha256 or sha512 digest/],
    ['', /empty name/],
    ['ghcr.io/', /empty|component ""/],
    ['a//b', /component ""/],
  ];
  for (const [text, reason] of cases) {
    try {
      parseImageReference(text);
      t.fail(`${text}: accepted`);
    } catch (e) {
      t.ok(e instanceof RegistryError && e.code === 'NAME_INVALID', `${text}: NAME_INVALID`);
      t.match((e as Error).message, reason, `${text}: says why`);
      t.match((e as Error).message, /is not an image reference/, `${text}: in a sentence`);
    }
  }
});

t.test('platforms: os/arch[/variant], matched as containerd does', async (t) => {
  t.same(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64' });
  t.same(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  t.same(parsePlatform('Linux/ARM/v7'), { os: 'linux', architecture: 'arm', variant: 'v7' });
  for (const bad of ['linux', 'linux/', '/amd64', 'linux/arm/v7/x', 'linux/amd 64', '']) t.equal(parsePlatform(bad), undefined, `"${bad}" is not a platform`);
  t.equal(platformText({ os: 'linux', architecture: 'arm', variant: 'v7' }), 'linux/arm/v7');

  const m = (os: string, architecture: string, variant?: string): Descriptor => ({ digest: `sha256:${os}${architecture}${variant ?? ''}`, size: 1, platform: variant ? { os, architecture, variant } : { os, architecture } });
  const index = [m('linux', 'amd64'), m('linux', 'arm', 'v6'), m('linux', 'arm', 'v7'), m('linux', 'arm64', 'v8'), m('windows', 'amd64'), { digest: 'sha256:att', size: 1, platform: { os: 'unknown', architecture: 'unknown' } }];
  const pick = (...wanted: string[]) => choosePlatforms(index, wanted.map((w) => parsePlatform(w)!));
  t.same(pick('linux/amd64').chosen, [index[0]]);
  t.same(pick('linux/amd64/v1').chosen, [index[0]], 'amd64/v1 is amd64');
  t.same(pick('linux/x86_64').chosen, [index[0]], 'x86_64 is amd64');
  t.same(pick('linux/arm64').chosen, [index[3]], 'arm64 is arm64/v8');
  t.same(pick('linux/aarch64').chosen, [index[3]], 'aarch64 is arm64');
  t.same(pick('linux/arm').chosen, [index[2]], 'arm is arm/v7');
  t.same(pick('linux/arm/v6').chosen, [index[1]]);
  t.same(pick('windows/amd64', 'linux/amd64').chosen, [index[4], index[0]], 'several, in the order asked');
  t.same(pick('linux/amd64', 'linux/x86_64').chosen, [index[0]], 'one image once');
  t.same(pick('linux/s390x', 'linux/amd64'), { chosen: [index[0]], missing: [{ os: 'linux', architecture: 's390x' }] }, 'what the index lacks is missing');
  t.same(choosePlatforms(index, 'all').chosen, index, 'all: every manifest, attestations too');
});

t.test('progress figures: bytes, rate, ETA', async (t) => {
  t.equal(bytes(512), '512 B');
  t.equal(bytes(1536), '1.5 KiB');
  t.equal(bytes(3.4 * 2 ** 20), '3.4 MiB');
  t.equal(bytes(10 * 2 ** 30), '10.0 GiB');
  t.equal(duration(0), '0s');
  t.equal(duration(41.2), '42s');
  t.equal(duration(185), '3m05s');
  t.equal(duration(7620), '2h07m');
  t.equal(duration(undefined), '?');
  t.equal(shortDigest(D), `sha256:${'a'.repeat(12)}`);

  let now = 1_000_000;
  const task = (size: number, state: BlobTask['state'], received = 0): BlobTask => ({ descriptor: { digest: D, size }, name: 'x', label: 'x', images: ['x'], received, state });
  const tasks = [task(2 << 20, 'verified', 2 << 20), task(4 << 20, 'fetching', 1 << 20), task(6 << 20, 'waiting'), task(1 << 20, 'failed', 100)];
  const tally = new Tally(tasks, () => now);
  t.equal(tally.etaSeconds(), undefined, 'no ETA before any byte');
  now += 2000;
  tally.received = 3 << 20;
  t.equal(tally.rate(), 1.5 * 2 ** 20, 'rate: bytes since the start over the time');
  t.equal(tally.etaSeconds(), (9 << 20) / (1.5 * 2 ** 20), 'ETA: what the unfinished blobs still lack, at that rate (a failed blob is not waited for)');
  t.equal(tally.text(), '3.0 MiB of 13.0 MiB (23%), 1.5 MiB/s, ETA 6s');
  t.equal(tally.count('verified'), 1);
});

t.test('forEachLimited: every item, never more than the limit at once, the first error after all ended', async (t) => {
  let running = 0;
  let most = 0;
  const seen: number[] = [];
  await forEachLimited([...Array(20).keys()], 3, async (i) => {
    running++;
    most = Math.max(most, running);
    await new Promise((r) => setImmediate(r));
    seen.push(i);
    running--;
  });
  t.equal(most, 3, 'three at a time');
  t.same([...seen].sort((a, b) => a - b), [...Array(20).keys()], 'every item once');

  const done: number[] = [];
  await t.rejects(
    forEachLimited([1, 2, 3, 4], 2, async (i) => {
      if (i === 2) throw new Error('two');
      await new Promise((r) => setImmediate(r));
      done.push(i);
    }),
    { message: 'two' },
  );
  t.same(done.sort(), [1, 3, 4], 'the others still ran');
});
