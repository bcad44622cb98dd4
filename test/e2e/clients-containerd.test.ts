// containerd as a real client, configured with the README's hosts.toml files (docker.io and
// ghcr.io, both naming the one mirror), pulling with the README's `ctr --hosts-dir` commands, and
// through the CRI plugin with the README's `config_path` (the pull the kubelet asks for, made here
// with CRI's gRPC ImageService). Then what containerd does when the mirror refuses: it goes on to
// the registry itself (here the egress trap) and reports that error, not ours.
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import t from 'tap';
import { containerdUnavailable, SNAPSHOTTER, startContainerd } from '../helpers/containerd.js';
import { CriError, criPullImage } from '../helpers/cri.js';
import { startMirrorFixture, type UpstreamImage } from '../helpers/mirror-fixture.js';
import { readmeCommands, readmeSnippet, substitute } from '../helpers/readme.js';

const README_HOSTS_DIR = '/etc/containerd/certs.d';

// `npm test` installs containerd when it is missing, so its absence is a failure, not a skip
const unavailable = containerdUnavailable();
if (unavailable !== undefined) {
  t.fail(`containerd cannot run here: ${unavailable}`);
} else {
  await main();
}

async function main(): Promise<void> {
  const fx = await startMirrorFixture(t);
  const hostsDir = join(fx.work, 'certs.d');
  const paths = { [README_HOSTS_DIR]: hostsDir };
  for (const name of ['containerd-hosts-docker', 'containerd-hosts-ghcr']) {
    const text = substitute(readmeSnippet(name), fx.mirror, `snippet ${name}`);
    // the snippet's first line names its file: `# /etc/containerd/certs.d/<host>/hosts.toml`
    const file = substitute(/^# (\S+)/.exec(text)?.[1] ?? '', paths, `snippet ${name}'s file name`);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, text);
  }
  const criConfig = substitute(readmeSnippet('containerd-cri'), paths, 'snippet containerd-cri');
  // two daemons: containerd shares content between namespaces, so CRI's pull would find ctr's
  const [ctd, cri] = await Promise.all([startContainerd({ env: fx.trap.env }), startContainerd({ cri: criConfig, env: fx.trap.env })]);
  t.teardown(() => ctd.stop());
  t.teardown(() => cri.stop());
  t.comment(ctd.version.replace(/\s+/g, ' ').trim());
  const imageOf = (ref: string): UpstreamImage => (ref.startsWith('ghcr.io/') ? fx.ghcr : fx.hub);
  const failure = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => '',
      (e: Error) => e.message,
    );

  t.test('the README ctr pulls go through the mirror, routed by ?ns=, with --hosts-dir', async (t) => {
    const pulls = readmeCommands('containerd-ctr', paths);
    const refs = [`docker.io/${fx.hub.repo}:${fx.hub.tag}`, `ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}`];
    t.same(pulls, refs.map((ref) => ['ctr', 'images', 'pull', '--hosts-dir', hostsDir, ref]), 'the README pulls both images with ctr --hosts-dir');
    for (const argv of pulls) {
      const ref = argv.at(-1)!;
      const image = imageOf(ref);
      const mark = fx.mark();
      // the test's containerd has only the native snapshotter
      await ctd.ctr([argv[1]!, argv[2]!, '--snapshotter', SNAPSHOTTER, ...argv.slice(3)], 60_000).catch(async (err: Error) => {
        throw new Error(`${err.message}\ncontainerd log:\n${(await ctd.log()).slice(-3000)}`);
      });
      t.equal((await ctd.images()).find((i) => i.ref === ref)?.digest, image.layout.top.digest, `ctr pulled ${ref} with the pushed manifest's digest`);
      fx.expectPulled(t, image, mark, 'ctr');
      const asked = fx.front.log.slice(mark.front).filter((e) => e.path.startsWith('/v2/') && e.path !== '/v2/');
      t.same(asked.filter((e) => !e.path.endsWith(`?ns=${ref.slice(0, ref.indexOf('/'))}`)).map((e) => e.path), [], 'each request named its upstream with ?ns=');
    }
    t.same(fx.trap.attempts, [], 'ctr never went past the mirror');
  });

  t.test("CRI's PullImage, with the README's config_path, goes through the mirror", async (t) => {
    const ref = `docker.io/${fx.hub.repo}:${fx.hub.tag}`;
    const mark = fx.mark();
    const imageId = await criPullImage(cri.address, ref, 60_000).catch(async (err: Error) => {
      throw new Error(`${err.message}\ncontainerd log:\n${(await cri.log()).slice(-3000)}`);
    });
    t.equal(imageId, fx.hub.layout.images[0]!.config.digest, `CRI pulled ${ref}: its image id is the pushed config's digest`);
    fx.expectPulled(t, fx.hub, mark, 'CRI');
    t.same(fx.trap.attempts, [], 'containerd never went past the mirror');
  });

  t.test('a refusal: containerd goes on to the registry and reports its error, not ours', async (t) => {
    const missing = `docker.io/${fx.hub.repo}:no-such-tag`;
    const ctrErr = await failure(ctd.ctr(['images', 'pull', '--snapshotter', SNAPSHOTTER, '--hosts-dir', hostsDir, missing], 60_000));
    t.ok(ctrErr, `ctr pull ${missing} failed`);
    t.comment(`ctr said: ${ctrErr.split('\n').slice(1).join(' ').trim()}`);
    const ours = fx.refusals(`/v2/${fx.hub.repo}/manifests/no-such-tag`);
    t.ok(ours.some((l) => l.code === 'MANIFEST_UNKNOWN' && l.status === 404), `our log has the refusal: ${JSON.stringify(ours[0])}`);
    const message = String(ours[0]?.msg);
    t.notOk(ctrErr.includes(message), `ctr's error does not carry our message (${message})`);
    t.ok(fx.trap.attempts.includes('registry-1.docker.io:443'), `ctr went on to registry-1.docker.io (${fx.trap.attempts.join(', ')})`);

    const trapBefore = fx.trap.attempts.length;
    const criErr = await criPullImage(cri.address, missing, 60_000).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(criErr instanceof CriError, 'CRI PullImage failed with a gRPC status');
    t.comment(`CRI said: ${String((criErr as Error | undefined)?.message)}`);
    t.notOk((criErr as Error | undefined)?.message.includes(message), "CRI's error does not carry our message");
    t.ok(fx.trap.attempts.slice(trapBefore).includes('registry-1.docker.io:443'), 'containerd went on to registry-1.docker.io');
  });

  t.test('a failure other than 404: ctr reports the mirror\'s status, still not our message', async (t) => {
    Object.assign(fx.hub.hop.faults, { down: true });
    t.teardown(() => void Object.assign(fx.hub.hop.faults, { down: false }));
    const uncached = `docker.io/${fx.hub.repo}:not-cached`;
    const err = await failure(ctd.ctr(['images', 'pull', '--snapshotter', SNAPSHOTTER, '--hosts-dir', hostsDir, uncached], 60_000));
    t.comment(`ctr said: ${err.split('\n').slice(1).join(' ').trim()}`);
    const ours = fx.refusals(`/v2/${fx.hub.repo}/manifests/not-cached`);
    t.ok(ours.some((l) => l.code === 'UNAVAILABLE' && l.status === 503), `our log has the failure: ${JSON.stringify(ours[0])}`);
    t.ok(err.includes(`pulling from host ${fx.front.host} failed with status code [manifests not-cached]: 503 Service Unavailable`), "ctr's error names the mirror and its status");
    t.notOk(err.includes(String(ours[0]?.msg)), `but not our message (${String(ours[0]?.msg)})`);
  });
}
