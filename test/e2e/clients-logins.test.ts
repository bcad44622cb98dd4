// Logging in to a pullthrough with `auth` (the README's example rules), with the real clients:
// Docker Engine (`docker login`, then a pull naming the mirror; and what it sends its
// registry-mirrors, which is Docker Hub's credentials, never the mirror's) and podman and buildah
// (`podman login`, then pulls through the registries.conf mirror with those credentials). The
// right password gets in, a wrong one is refused at login, and a user no rule allows is refused
// with our 403, whose message each client shows as the README says.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { parse as parseYaml } from 'yaml';
import { dockerUnavailable, startDockerd } from '../helpers/docker.js';
import { startMirrorFixture, type MirrorFixture } from '../helpers/mirror-fixture.js';
import { makeContainersHome, podmanUnavailable } from '../helpers/podman.js';
import { expectNoSecrets } from '../helpers/captured-proxy.js';
import { readmeCommands, readmeSnippet, substitute } from '../helpers/readme.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir, run } from '../helpers/util.js';

const PASSWORDS: Record<string, string> = { alice: SECRETS.alicePassword, bob: SECRETS.bobPassword, ci: SECRETS.ciPassword };

/** What every client said when it failed, for the final check that no password is in it. */
const failures: string[] = [];

/** The message of a client run that must fail. */
async function failure(p: Promise<unknown>): Promise<string> {
  const message = await p.then(
    () => undefined,
    (e: Error) => e.message,
  );
  if (message === undefined) throw new Error('the client succeeded, but it must have been refused');
  failures.push(message);
  return message;
}

/** `argv` with its user (the README's alice) replaced, and the password to come on stdin. */
function asUser(argv: string[], user: string): string[] {
  const i = argv.indexOf('--username');
  if (i < 0 || argv[i + 1] !== 'alice') throw new Error(`the README's login no longer names --username alice: ${argv.join(' ')}`);
  return [...argv.slice(1, i + 1), user, '--password-stdin', ...argv.slice(i + 2)];
}

async function main(): Promise<void> {
  const fx = await startFixture();
  const daemonJson = JSON.parse(substitute(readmeSnippet('docker-daemon-json'), fx.mirror)) as Record<string, unknown>;
  const dockerd = await startDockerd({ daemonJson, env: fx.trap.env });
  t.teardown(() => dockerd.stop());
  t.comment(`dockerd ${dockerd.version}`);
  const [login, pull] = readmeCommands('docker-login', fx.mirror) as [string[], string[]];
  const mirror = fx.front.host;

  t.test('docker login: the right password is stored, a wrong one refused with a 401', async (t) => {
    t.same([login.slice(0, 2), pull.slice(0, 2)], [['docker', 'login'], ['docker', 'pull']], 'the README logs in, then pulls');
    t.equal(login.at(-1), mirror, 'to the mirror');
    const wrong = await failure(dockerd.docker(asUser(login, 'alice'), 60_000, `${SECRETS.wrongClientPassword}\n`));
    t.match(wrong, new RegExp(`Error response from daemon: login attempt to http://${mirror}/v2/ failed with status: 401 Unauthorized`), 'what Docker shows for a wrong password');
    t.ok(fx.proxy.logs().some((l) => l.code === 'UNAUTHORIZED' && (l.detail as { user?: string } | null)?.user === 'alice'), 'our log: a 401 for alice');
    const { stdout } = await dockerd.docker(asUser(login, 'alice'), 60_000, `${SECRETS.alicePassword}\n`);
    t.match(stdout, /Login Succeeded/, 'the right password: Login Succeeded');
    const config = JSON.parse(await readFile(join(dockerd.cliConfig, 'config.json'), 'utf8')) as { auths: Record<string, unknown> };
    t.same(Object.keys(config.auths), [mirror], "the credentials are stored for the mirror's host");
  });

  t.test("registry-mirrors: Docker sends the mirror its Docker Hub credentials, never the mirror's own", async (t) => {
    const image = `alpine:${fx.hub.tag}`;
    const before = fx.mark();
    const refused = await failure(dockerd.docker(['pull', image], 120_000));
    t.ok(fx.trap.attempts.includes('registry-1.docker.io:443'), `logged in to the mirror only, Docker went to Docker Hub itself (${refused.split('\n')[1] ?? ''})`);
    t.equal(fx.front.log.slice(before.front).filter((e) => e.path.includes(`/${fx.hub.repo}/`)).length, 0, 'and asked the mirror for nothing of the image, though docker.io is anonymous');
    const log = await dockerd.log();
    t.ok(log.includes(`Attempting next endpoint for pull after error: Head \\"http://${mirror}/v2/${fx.hub.repo}/manifests/${fx.hub.tag}\\": no basic auth credentials`), "dockerd's log says why");

    // what `docker login` with no server stores: a Docker Hub account's credentials
    const config = join(dockerd.cliConfig, 'config.json');
    const stored = JSON.parse(await readFile(config, 'utf8')) as { auths: Record<string, unknown> };
    const hub = { auth: Buffer.from(`someone:${SECRETS.dockerHubToken}`).toString('base64') };
    await writeFile(config, JSON.stringify({ auths: { ...stored.auths, 'https://index.docker.io/v1/': hub } }));
    const trapped = fx.trap.attempts.length;
    const mark = fx.mark();
    await dockerd.docker(['pull', image], 120_000);
    fx.expectPulled(t, fx.hub, mark, 'dockerd');
    const asked = fx.front.log.slice(mark.front).filter((e) => e.path.includes(`/${fx.hub.repo}/`));
    t.ok(asked.length > 0 && asked.every((e) => e.authScheme === 'basic'), 'with Docker Hub credentials stored, every request to the mirror carried them');
    t.same(fx.hub.hop.log.slice(mark.hub).filter((e) => e.authScheme !== undefined), [], 'and pullthrough passed none of them upstream');
    t.equal(fx.trap.attempts.length, trapped, 'and Docker went no further');
  });

  t.test('docker pull naming the mirror: alice pulls; bob, whom no rule allows, gets our 403; logged out, nothing is sent', async (t) => {
    const ref = `${mirror}/ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}`;
    t.same(pull.slice(2), [ref], 'the README pulls ghcr.io/org/app through the mirror');
    const mark = fx.mark();
    await dockerd.docker(pull.slice(1), 120_000);
    const digests = JSON.parse((await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', ref])).stdout) as string[];
    t.ok(digests.some((d) => d.endsWith(`@${fx.ghcr.layout.top.digest}`)), `alice pulled ${ref} with the pushed manifest's digest`);
    fx.expectPulled(t, fx.ghcr, mark, 'dockerd');

    await dockerd.docker(asUser(login, 'bob'), 60_000, `${SECRETS.bobPassword}\n`);
    const denied = await failure(dockerd.docker(pull.slice(1), 120_000));
    t.match(denied, `Error response from daemon: pull access denied for ${mirror}/ghcr.io/${fx.ghcr.repo}, repository does not exist or may require 'docker login': denied: user "bob" may not pull ${fx.ghcr.repo} from ghcr.io`, 'bob: our 403 message, though the image is cached');
    t.ok(fx.refusals(`/v2/ghcr.io/${fx.ghcr.repo}/manifests/`).some((l) => l.code === 'DENIED' && l.status === 403), 'our log: DENIED, 403');

    await dockerd.docker(['logout', mirror]);
    const none = await failure(dockerd.docker(pull.slice(1), 120_000));
    t.match(none, `Error response from daemon: Head "http://${mirror}/v2/ghcr.io/${fx.ghcr.repo}/manifests/${fx.ghcr.tag}": no basic auth credentials`, 'logged out: Docker sends nothing');
    const anonymous = await failure(dockerd.docker(['pull', `${mirror}/${fx.hub.repo}:${fx.hub.tag}`], 120_000));
    t.match(anonymous, 'no basic auth credentials', 'not even for the anonymous docker.io');
    t.same(fx.trap.attempts.filter((a) => !a.startsWith('registry-1.docker.io')), [], 'a reference naming the mirror never went past it');
  });

  t.test('podman login, then podman and buildah pull through the registries.conf mirror with those credentials', async (t) => {
    const registriesConf = substitute(readmeSnippet('registries-conf'), fx.mirror);
    const home = await makeContainersHome({ registriesConf, env: fx.trap.env });
    t.teardown(() => home.remove());
    const commands = readmeCommands('podman-login', fx.mirror);
    const ref = `ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}`;
    t.same(commands.slice(1), [['podman', 'pull', ref], ['buildah', 'pull', ref]], 'the README pulls by the upstream name with podman and buildah');
    const podmanLogin = commands[0]!;
    t.same([podmanLogin.slice(0, 2), podmanLogin.at(-1)], [['podman', 'login'], mirror], 'after logging in to the mirror');

    const anonymous = fx.mark();
    await home.run('podman', ['pull', `docker.io/${fx.hub.repo}:${fx.hub.tag}`], 120_000);
    fx.expectPulled(t, fx.hub, anonymous, 'podman, not logged in, from the anonymous docker.io');

    const none = await failure(home.run('podman', ['pull', ref], 120_000));
    t.match(none, `(Mirrors also failed: [${mirror}/ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}: reading manifest ${fx.ghcr.tag} in ${mirror}/ghcr.io/${fx.ghcr.repo}: unauthorized`, 'not logged in: the mirror said unauthorized');
    t.ok(fx.trap.attempts.includes('ghcr.io:443'), 'and podman tried ghcr.io itself');
    const wrong = await failure(home.run('podman', asUser(podmanLogin, 'alice'), 60_000, `${SECRETS.wrongClientPassword}\n`));
    t.match(wrong, `Error: logging into "${mirror}": invalid username/password`, 'a wrong password: refused at login');
    await home.run('podman', asUser(podmanLogin, 'bob'), 60_000, `${SECRETS.bobPassword}\n`);
    const denied = await failure(home.run('podman', ['pull', ref], 120_000));
    t.match(denied, `(Mirrors also failed: [${mirror}/ghcr.io/${fx.ghcr.repo}:${fx.ghcr.tag}: reading manifest ${fx.ghcr.tag} in ${mirror}/ghcr.io/${fx.ghcr.repo}: denied: user "bob" may not pull ${fx.ghcr.repo} from ghcr.io])`, 'bob: our 403 message among the mirrors\' answers');

    await home.run('podman', asUser(podmanLogin, 'alice'), 60_000, `${SECRETS.alicePassword}\n`);
    const stored = JSON.parse(await readFile(home.authFile, 'utf8')) as { auths: Record<string, unknown> };
    t.same(Object.keys(stored.auths), [mirror], "the credentials are stored for the mirror's host");
    for (const [tool] of commands.slice(1) as ['podman' | 'buildah', string, string][]) {
      // one storage: the image podman pulled is removed, so that buildah fetches it again
      if (tool === 'buildah') await home.run('podman', ['rmi', ref]);
      const mark = fx.mark();
      await home.run(tool, ['pull', ref], 120_000);
      fx.expectPulled(t, fx.ghcr, mark, tool);
      const asked = fx.front.log.slice(mark.front).filter((e) => e.path.includes(`/${fx.ghcr.repo}/`));
      t.ok(asked.length > 0 && asked.every((e) => e.authScheme === 'basic'), `${tool} sent the credentials with each request`);
    }
  });

  t.test('no password in our log or a client\'s error', async (t) => {
    await expectNoSecrets(t, { ...SECRETS }, { texts: { 'our log': fx.proxy.logLines.join('\n'), "the clients' errors": failures.join('\n') } });
  });
}

/** The mirror fixture with the README's `auth` block, its htpasswd file made with `htpasswd -B`. */
async function startFixture(): Promise<MirrorFixture> {
  const dir = await makeTempDir('pt-logins-');
  t.teardown(() => removeDir(dir));
  const htpasswd = join(dir, 'htpasswd');
  // -i: the password on stdin, so that no command line (nor a failure's message) holds it
  const lines = await Promise.all(Object.entries(PASSWORDS).map(async ([user, password]) => (await run('htpasswd', ['-Bin', user], { input: password })).stdout.trim()));
  await writeFile(htpasswd, lines.join('\n') + '\n');
  const config = parseYaml(substitute(readmeSnippet('auth-config'), { '/etc/pullthrough/htpasswd': htpasswd })) as Record<string, unknown>;
  // the README's rules name these upstreams too
  return startMirrorFixture(t, { config, moreUpstreams: ['ecr-prod', 'quay.io'] });
}

// `npm test` installs docker.io, podman and buildah when they are missing: their absence is a failure
const unavailable = dockerUnavailable() ?? podmanUnavailable();
if (unavailable !== undefined) {
  t.fail(`a client cannot run here: ${unavailable}`);
} else {
  await main();
}
