// Who may pull, with real clients: skopeo (--src-creds) and containerd's ctr (--user, through a
// hosts.toml mirror) pull through pullthrough with `auth` set, in front of a real docker-registry;
// they get in with the right credentials and are refused with wrong ones (401), and an
// authenticated user no rule allows gets 403. Content docker-registry holds in one repository is
// not served through another, whoever asks. No password reaches the proxy's log or an answer.
//
//   skopeo, ctr ──> pullthrough (auth) ──> hop ──> docker-registry (open)
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { LeakWatch } from '../helpers/captured-proxy.js';
import { containerdUnavailable, startContainerd, writeHostsDir } from '../helpers/containerd.js';
import { startEgressTrap } from '../helpers/egress.js';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir, run } from '../helpers/util.js';

const UPSTREAM = 'local.test';
const ALICE = `alice:${SECRETS.alicePassword}`;
const BOB = `bob:${SECRETS.bobPassword}`;
const WRONG = `alice:${SECRETS.wrongClientPassword}`;

/** The error of a client run, its message with every password taken out (tap prints messages). */
function redacted(e: unknown): Error {
  let text = e instanceof Error ? e.message : String(e);
  for (const secret of Object.values(SECRETS)) text = text.split(secret).join('<password>');
  return new Error(text);
}
/** Runs a client; a failure is thrown with its output, passwords taken out. */
const client = <T>(p: Promise<T>): Promise<T> => p.catch((e: unknown) => Promise.reject(redacted(e)));
/** The failure of a client run that must fail (its output, passwords taken out). */
const failure = async (p: Promise<unknown>): Promise<string> => {
  try {
    await p;
  } catch (e) {
    return redacted(e).message;
  }
  throw new Error('the client succeeded, but it must have been refused');
};

const work = await makeTempDir('pullthrough-auth-it-');
t.teardown(() => removeDir(work));
const app = await makeImage({ layers: 2, layerBytes: 200 << 10, seed: 'auth-app', dir: join(work, 'app') });
const secret = await makeImage({ layers: 2, layerBytes: 150 << 10, seed: 'auth-secret', dir: join(work, 'secret') });

const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(app.dir, `${registry.host}/team/app:v1`);
await pushLayout(secret.dir, `${registry.host}/private/secret:v1`);
const hop = await startHop(registry.url);
t.teardown(() => hop.close());

// bcrypt entries as operators make them
const htpasswd = join(work, 'htpasswd');
const entries = await Promise.all(
  [['alice', SECRETS.alicePassword], ['bob', SECRETS.bobPassword]].map(async ([user, password]) => (await run('htpasswd', ['-Bbn', user!, password!])).stdout.trim()),
);
await writeFile(htpasswd, entries.join('\n') + '\n');

const watch = new LeakWatch();
const proxy = await watch.proxy(t, {
  configDoc: {
    upstreams: [{ name: UPSTREAM, url: hop.url }],
    retries: 0,
    auth: {
      htpasswd,
      rules: [
        { users: ['alice'], upstreams: [UPSTREAM], repositories: ['team/*'] },
        { users: ['bob'], upstreams: [UPSTREAM], repositories: ['private/*'] },
      ],
    },
  },
});
const ref = (repo: string) => `${proxy.host}/${repo}:v1`;

t.test('skopeo --src-creds: the right credentials pull, wrong ones get 401, a user no rule allows 403', async (t) => {
  const pulled = await client(pullImage(ref('team/app'), join(work, 'skopeo-alice'), { creds: ALICE }));
  t.same(pulled.allDigests, app.allDigests, 'alice pulls team/app: every digest as pushed');

  hop.reset();
  const none = await failure(pullImage(ref('team/app'), join(work, 'skopeo-none')));
  t.match(none, /reading manifest v1 in [^:]+:\d+\/team\/app: unauthorized/, 'no credentials: refused as unauthorized');
  const wrong = await failure(pullImage(ref('team/app'), join(work, 'skopeo-wrong'), { creds: WRONG }));
  t.match(wrong, /unauthorized: wrong user name or password/, 'a wrong password: refused as unauthorized');
  const denied = await failure(pullImage(ref('team/app'), join(work, 'skopeo-bob'), { creds: BOB }));
  t.match(denied, /denied: user \\?"bob\\?" may not pull team\/app from local\.test/, 'bob, whom no rule lets pull team/app, though it is cached: denied, with our message');
  t.notMatch(denied, /unauthorized|401/i, 'denied, not unauthorized');
  t.equal(hop.count({ pathIncludes: '/v2/team/' }), 0, 'no refused pull reached the upstream');

  const own = await client(pullImage(ref('private/secret'), join(work, 'skopeo-bob-own'), { creds: BOB }));
  t.same(own.allDigests, secret.allDigests, 'bob pulls the repository his rule names');
});

t.test('a blob docker-registry holds in one repository is not served through another', async (t) => {
  const layer = app.images[0]!.layers[0]!.digest; // cached since alice pulled team/app
  const auth = (creds: string) => ({ authorization: `Basic ${Buffer.from(creds).toString('base64')}` });
  hop.reset();
  const through = await watch.get(`${proxy.url}/v2/private/secret/blobs/${layer}`, auth(BOB));
  t.equal(through.status, 404, 'bob may pull private/secret, but it does not hold team/app\'s layer');
  t.equal(through.error().code, 'BLOB_UNKNOWN');
  t.equal(hop.count({ method: 'HEAD', pathIncludes: `/v2/private/secret/blobs/${layer}` }), 1, 'docker-registry was asked, for that repository');
  t.equal(hop.count({ method: 'GET' }), 0, 'no content fetched');
  const ownLayer = secret.images[0]!.layers[0]!.digest;
  const own = await watch.get(`${proxy.url}/v2/private/secret/blobs/${ownLayer}`, auth(BOB));
  t.equal(own.status, 200, 'his own repository\'s layer is served');
});

t.test('ctr --user through a hosts.toml mirror: the right credentials pull, wrong ones do not', async (t) => {
  const unavailable = containerdUnavailable();
  if (unavailable !== undefined) {
    t.fail(`containerd cannot run here: ${unavailable}`);
    return;
  }
  const hostsDir = join(work, 'hosts.d');
  await writeHostsDir(hostsDir, [{ host: UPSTREAM, mirror: proxy.url }]);
  // containerd tries the registry itself after a refusing mirror: the trap keeps it on 127.0.0.1
  const trap = await startEgressTrap();
  t.teardown(() => trap.close());
  const ctd = await startContainerd({ env: trap.env });
  t.teardown(() => ctd.stop());
  const image = `${UPSTREAM}/team/app:v1`;
  const wrong = await failure(ctd.pull(image, { hostsDir, user: WRONG, platform: 'linux/amd64' }));
  t.match(wrong, /failed with status code \[manifests v1\]: 401 Unauthorized/, 'a wrong password: refused');
  const none = await failure(ctd.pull(image, { hostsDir, platform: 'linux/amd64' }));
  t.match(none, /failed with status code \[manifests v1\]: 401 Unauthorized/, 'no credentials: refused');
  const denied = await failure(ctd.pull(image, { hostsDir, user: BOB, platform: 'linux/amd64' }));
  t.match(denied, /failed with status code \[manifests v1\]: 403 Forbidden/, 'bob: denied');
  t.same(trap.attempts, [`${UPSTREAM}:443`, `${UPSTREAM}:443`, `${UPSTREAM}:443`], 'after each refusal containerd tried the registry itself (caught by the trap)');
  t.same(await ctd.images(), [], 'nothing pulled');

  await client(ctd.pull(image, { hostsDir, user: ALICE, platform: 'linux/amd64' }));
  const images = await ctd.images();
  t.same(images.map((i) => [i.ref, i.digest]), [[image, app.top.digest]], 'alice: the image, by its digest');
  const content = await ctd.content();
  for (const d of app.allDigests) t.ok(content.has(d), `${d.slice(0, 19)} in containerd's content store`);
});

t.test('no password in the log, the cache or an error body', async (t) => {
  t.ok(proxy.logLines.some((l) => l.includes('"code":"DENIED"')), 'the refusals were logged');
  await watch.check(t);
});
