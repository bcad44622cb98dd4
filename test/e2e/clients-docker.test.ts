// Docker Engine as a real client, configured with the README's daemon.json (registry-mirrors)
// and pulling the README's examples through pullthrough. Then what Docker does when the mirror
// refuses: it falls back to Docker Hub (here the egress trap, so nothing leaves this machine),
// fails with Docker Hub's error, not ours, and only our log (and dockerd's) says what happened.
import t from 'tap';
import { dockerUnavailable, startDockerd } from '../helpers/docker.js';
import { startMirrorFixture } from '../helpers/mirror-fixture.js';
import { readmeCommands, readmeSnippet, substitute } from '../helpers/readme.js';

// `npm test` installs docker.io when it is missing, so its absence is a failure, not a skip
const unavailable = dockerUnavailable();
if (unavailable !== undefined) {
  t.fail(`Docker Engine cannot run here: ${unavailable}`);
} else {
  await main();
}

async function main(): Promise<void> {
  const fx = await startMirrorFixture(t);
  const daemonJson = JSON.parse(substitute(readmeSnippet('docker-daemon-json'), fx.mirror)) as Record<string, unknown>;
  const dockerd = await startDockerd({ daemonJson, env: fx.trap.env });
  t.teardown(() => dockerd.stop());
  t.comment(`dockerd ${dockerd.version}`);

  const pulls = readmeCommands('docker-pull', fx.mirror);
  t.test('the README pulls go through the mirror: a Docker Hub image, and one of another upstream', async (t) => {
    t.same(
      pulls.map((argv) => argv.slice(0, 2)),
      [['docker', 'pull'], ['docker', 'pull']],
      'the README shows two docker pulls',
    );
    const refs = [`alpine:${fx.hub.tag}`, `${fx.front.host}/ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}`];
    t.same(pulls.map((argv) => argv[2]), refs, 'of a Docker Hub image by its short name, and of a ghcr.io image through the mirror');
    for (const [i, image] of [fx.hub, fx.ghcr].entries()) {
      const mark = fx.mark();
      await dockerd.docker(pulls[i]!.slice(1), 120_000).catch(async (err: Error) => {
        throw new Error(`${err.message}\ndockerd log:\n${(await dockerd.log()).slice(-3000)}`);
      });
      const { stdout } = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', refs[i]!]);
      const digests = JSON.parse(stdout) as string[];
      t.ok(digests.some((d) => d.endsWith(`@${image.layout.top.digest}`)), `${refs[i]} has the pushed manifest's digest (${digests.join(', ')})`);
      fx.expectPulled(t, image, mark, 'dockerd');
    }
    t.same(fx.trap.attempts, [], 'Docker never went past the mirror');
  });

  t.test('a refusal: Docker falls back to Docker Hub and shows its error; our log shows ours', async (t) => {
    const missing = 'alpine:no-such-tag';
    const err = await dockerd.docker(['pull', missing], 120_000).then(
      () => undefined,
      (e: Error) => e.message,
    );
    t.ok(err, `docker pull ${missing} failed`);
    t.comment(`docker said: ${err?.split('\n').slice(1).join(' ').trim()}`);
    t.ok(fx.trap.attempts.includes('registry-1.docker.io:443'), `Docker fell back to registry-1.docker.io (${fx.trap.attempts.join(', ')})`);
    const ours = fx.refusals(`/v2/${fx.hub.repo}/manifests/no-such-tag`);
    t.ok(ours.length > 0, 'our log has the refusal');
    t.ok(ours.some((l) => l.code === 'MANIFEST_UNKNOWN' && l.status === 404), `... as MANIFEST_UNKNOWN, 404: ${JSON.stringify(ours[0])}`);
    const message = String(ours[0]?.msg ?? '');
    t.notOk(err?.includes(message), `Docker's error does not carry our message (${message})`);
    const log = await dockerd.log();
    const line = log.split('\n').find((l) => l.includes('Attempting next endpoint') && l.includes(message));
    t.ok(line, `dockerd's own log names our error: ${line ?? log.slice(-2000)}`);
  });
}
