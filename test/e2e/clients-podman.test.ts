// podman, buildah and skopeo as real clients, configured with the README's registries.conf
// (a mirror of docker.io, and one of ghcr.io as `host:port/ghcr.io`) and running the README's
// commands through pullthrough. Then what they show when the mirror refuses: podman (like
// buildah, the same library) tries the registry itself after its mirrors and reports every
// attempt, so our message is in its error; skopeo, pointed at the mirror, shows ours alone.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { startMirrorFixture, type UpstreamImage } from '../helpers/mirror-fixture.js';
import { makeContainersHome, podmanUnavailable, type ContainersHome, type Tool } from '../helpers/podman.js';
import { readmeCommands, readmeSnippet, substitute } from '../helpers/readme.js';
import type { Test } from '../helpers/util.js';

// `npm test` installs podman and buildah when they are missing, so their absence is a failure
const unavailable = podmanUnavailable();
if (unavailable !== undefined) {
  t.fail(`podman or buildah cannot run here: ${unavailable}`);
} else {
  await main();
}

async function main(): Promise<void> {
  const fx = await startMirrorFixture(t);
  const registriesConf = substitute(readmeSnippet('registries-conf'), fx.mirror);
  const homes = new Map<Tool, ContainersHome>();
  /** One storage per tool, so that no pull finds its layers already there from another tool's. */
  const home = async (tool: Tool): Promise<ContainersHome> => {
    let h = homes.get(tool);
    if (!h) {
      h = await makeContainersHome({ registriesConf, env: fx.trap.env });
      homes.set(tool, h);
      t.teardown(() => h!.remove());
    }
    return h;
  };
  const imageOf = (ref: string): UpstreamImage => (ref.includes(`ghcr.io/${fx.ghcr.repo}:`) ? fx.ghcr : fx.hub);
  const runLogged = async (tool: Tool, args: readonly string[]): Promise<string> => {
    const { stdout } = await (await home(tool)).run(tool, args, 120_000);
    return stdout.trim();
  };

  t.test('the README pulls go through the mirrors of registries.conf, docker.io and ghcr.io', async (t) => {
    const pulls = readmeCommands('containers-pull');
    const refs = [`docker.io/${fx.hub.repo}:${fx.hub.tag}`, `ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}`];
    t.same(
      pulls,
      (['podman', 'buildah'] as const).flatMap((tool) => refs.map((ref) => [tool, 'pull', ref])),
      'the README pulls both images with podman and with buildah',
    );
    for (const [tool, , ref] of pulls as [Tool, string, string][]) {
      const image = imageOf(ref);
      const mark = fx.mark();
      await runLogged(tool, ['pull', ref]);
      const digest =
        tool === 'podman'
          ? await runLogged('podman', ['image', 'inspect', '--format', '{{.Digest}}', ref])
          : (JSON.parse(await runLogged('buildah', ['inspect', '--type', 'image', ref])) as { FromImageDigest: string }).FromImageDigest;
      t.equal(digest, image.layout.top.digest, `${tool} pulled ${ref} with the pushed manifest's digest`);
      fx.expectPulled(t, image, mark, tool);
    }
    t.same(fx.trap.attempts, [], 'no client went past the mirror');
  });

  t.test('the README skopeo copies: through registries.conf, and naming the mirror', async (t) => {
    const copies = readmeCommands('skopeo', { ...fx.mirror, 'oci:/tmp/': `oci:${fx.work}/` });
    t.equal(copies.length, 2, 'the README shows two skopeo copies');
    for (const argv of copies) {
      t.same(argv.slice(0, 2), ['skopeo', 'copy'], `${argv.join(' ')} is a skopeo copy`);
      const src = argv.find((a) => a.startsWith('docker://'))!;
      const dest = argv.at(-1)!;
      const image = imageOf(src);
      const mark = fx.mark();
      await runLogged('skopeo', argv.slice(1));
      const layout = dest.slice('oci:'.length, dest.lastIndexOf(':'));
      const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: { digest: string }[] };
      t.equal(index.manifests[0]?.digest, image.layout.top.digest, `${src} copied with the pushed manifest's digest`);
      fx.expectPulled(t, image, mark, 'skopeo');
    }
    t.same(fx.trap.attempts, [], 'skopeo never went past the mirror');
  });

  t.test('a refusal: podman reports the mirror\'s error beside the registry\'s; skopeo ours alone', async (t: Test) => {
    const missing = `docker.io/${fx.hub.repo}:no-such-tag`;
    const err = await (await home('podman')).run('podman', ['pull', missing], 120_000).then(
      () => '',
      (e: Error) => e.message,
    );
    t.ok(err, `podman pull ${missing} failed`);
    t.comment(`podman said: ${err.split('\n').slice(1).join(' ').trim()}`);
    const ours = fx.refusals(`/v2/${fx.hub.repo}/manifests/no-such-tag`);
    t.ok(ours.some((l) => l.code === 'MANIFEST_UNKNOWN' && l.status === 404), `our log has the refusal: ${JSON.stringify(ours[0])}`);
    const message = String(ours[0]?.msg);
    t.ok(err.includes('Mirrors also failed') && err.includes(message), `podman's error carries the mirror's answer (${message})`);
    t.ok(fx.trap.attempts.includes('registry-1.docker.io:443'), `podman then tried docker.io itself (${fx.trap.attempts.join(', ')})`);

    const direct = `docker://${fx.front.host}/ghcr.io/${fx.ghcr.repo}:no-such-tag`;
    const trapBefore = fx.trap.attempts.length;
    const skopeoErr = await (await home('skopeo')).run('skopeo', ['inspect', '--tls-verify=false', direct], 60_000).then(
      () => '',
      (e: Error) => e.message,
    );
    t.comment(`skopeo said: ${skopeoErr.split('\n').slice(1).join(' ').trim()}`);
    const skopeoOurs = fx.refusals(`/v2/ghcr.io/${fx.ghcr.repo}/manifests/no-such-tag`);
    t.ok(skopeoOurs.some((l) => l.code === 'MANIFEST_UNKNOWN'), 'our log has the refusal');
    t.ok(skopeoErr.includes(String(skopeoOurs[0]?.msg)), `skopeo shows our message (${String(skopeoOurs[0]?.msg)})`);
    t.equal(fx.trap.attempts.length, trapBefore, 'and tried nothing else');
  });
}
