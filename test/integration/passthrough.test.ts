// clientCredentials: passthrough against the real docker-registry (htpasswd, and token auth with
// a token server), pulled with skopeo --src-creds: each client's own credentials are the
// upstream's, and what the cache holds is served to a client only once the upstream confirmed, with
// that client's credentials, that it may read it. A hop in front of the registry counts what the
// upstream was asked.
import { join } from 'node:path';
import t from 'tap';
import { LeakWatch } from '../helpers/captured-proxy.js';
import { startHop, type Hop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const { passthroughAlicePassword: ALICE, passthroughCarolPassword: CAROL, passthroughDavePassword: DAVE, passthroughWrongPassword: WRONG } = SECRETS;
const creds = { alice: `alice:${ALICE}`, carol: `carol:${CAROL}`, dave: `dave:${DAVE}`, wrong: `alice:${WRONG}` };
const header = (c: string) => ({ authorization: `Basic ${Buffer.from(c).toString('base64')}` });
const CHALLENGE = 'Basic realm="pullthrough"';

const work = await makeTempDir('pullthrough-passthrough-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 2, layerBytes: 64 << 10, seed: 'passthrough', dir: join(work, 'image') });
const layer = image.images[0]!.layers[0]!.digest;
const watch = new LeakWatch();

/** A pull that must fail: its error text, with the credentials it was given taken out. */
async function refusedPull(ref: string, dest: string, c?: string): Promise<string> {
  try {
    await pullImage(ref, join(work, dest), c ? { creds: c } : {});
  } catch (e) {
    return c ? String((e as Error).message).split(c).join('<creds>') : String((e as Error).message);
  }
  throw new Error('the pull succeeded');
}

const blobGets = (hop: Hop) => hop.count({ method: 'GET', pathIncludes: '/blobs/' });

t.test('htpasswd upstream', async (t) => {
  const registry = await startRegistry({ mode: 'htpasswd', username: 'alice', password: ALICE, users: { carol: CAROL, dave: DAVE } });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`, { creds: creds.alice });
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const p = await watch.proxy(t, { configDoc: { upstreams: [{ name: 'private.test', url: hop.url, clientCredentials: 'passthrough' }] } });
  const ref = `${p.host}/team/app:v1`;

  await t.test('a client with valid upstream credentials fills the cache', async (t) => {
    const pulled = await pullImage(ref, join(work, 'alice'), { creds: creds.alice });
    t.same(pulled.allDigests, image.allDigests, 'every digest matches');
    t.ok(blobGets(hop) >= image.allDigests.length - 1, 'the blobs came from the upstream');
  });

  await t.test('a client with wrong credentials is refused the same cached content', async (t) => {
    hop.reset();
    const err = await refusedPull(ref, 'wrong', creds.wrong);
    t.match(err, /unauthorized|authentication required|401/i, 'skopeo reports the refusal');
    const blob = await watch.get(`${p.url}/v2/team/app/blobs/${layer}`, header(creds.wrong));
    t.equal(blob.status, 401, 'a cached blob asked for directly: 401');
    t.equal(blob.headers['www-authenticate'], CHALLENGE);
    t.equal(blob.error().code, 'UNAUTHORIZED', 'an error envelope, not the blob\'s bytes');
    t.equal(blobGets(hop), 0, 'the upstream got no blob GET');
    t.equal(hop.count({ method: 'GET', pathIncludes: '/manifests/' }), 0, 'nor a manifest GET: only HEADs asking whether it may');
  });

  await t.test('a client without credentials gets 401 with the Basic challenge', async (t) => {
    const v2 = await watch.get(`${p.url}/v2/`);
    t.equal(v2.status, 401);
    t.equal(v2.headers['www-authenticate'], CHALLENGE, '/v2/ challenges, so that real clients send theirs');
    const manifest = await watch.get(`${p.url}/v2/team/app/manifests/v1`);
    t.equal(manifest.status, 401);
    t.equal(manifest.headers['www-authenticate'], CHALLENGE);
    t.match(await refusedPull(ref, 'anonymous'), /unauthorized|authentication required|401/i, 'skopeo without credentials is refused');
  });

  await t.test('another valid user is confirmed separately, then served from the cache', async (t) => {
    hop.reset();
    const pulled = await pullImage(ref, join(work, 'carol'), { creds: creds.carol });
    t.same(pulled.allDigests, image.allDigests);
    t.ok(hop.count({ method: 'HEAD' }) >= 1, 'the upstream was asked (a HEAD with carol\'s credentials)');
    t.equal(blobGets(hop), 0, 'no blob GET: the bytes came from the cache');
  });

  await t.test('the upstream down: a credential confirmed within the TTL is served, another is refused', async (t) => {
    await pullImage(ref, join(work, 'alice-again'), { creds: creds.alice });
    hop.reset();
    Object.assign(hop.faults, { down: true });
    const pulled = await pullImage(ref, join(work, 'alice-down'), { creds: creds.alice });
    t.same(pulled.allDigests, image.allDigests, 'alice, confirmed just now: served from the cache');
    const dave = await watch.get(`${p.url}/v2/team/app/manifests/v1`, header(creds.dave));
    t.equal(dave.status, 503, 'dave, valid but never confirmed: refused');
    t.match(dave.error().message, 'could not confirm that your credentials may read team/app');
    hop.reset();
  });
});

t.test('token upstream', async (t) => {
  const users: Record<string, string> = { alice: ALICE, carol: CAROL, dave: DAVE };
  const registry = await startRegistry({ mode: 'token', username: 'alice', password: ALICE });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`, { creds: creds.alice });
  const tokens = registry.tokenServer!;
  tokens.options.verifyCredentials = (u, pw) => users[u] === pw;
  tokens.options.mayRead = (u, repo) => u !== 'carol' || repo !== 'team/app';
  tokens.requests.length = 0;
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const p = await watch.proxy(t, { configDoc: { upstreams: [{ name: 'private.test', url: hop.url, clientCredentials: 'passthrough' }] } });
  const ref = `${p.host}/team/app:v1`;

  const pulled = await pullImage(ref, join(work, 'token-alice'), { creds: creds.alice });
  t.same(pulled.allDigests, image.allDigests, 'alice fills the cache');
  t.ok(tokens.requests.length > 0 && tokens.requests.every((r) => r.user === 'alice' && r.status === 200), 'every token fetched with alice\'s own credentials');

  hop.reset();
  tokens.requests.length = 0;
  t.match(await refusedPull(ref, 'token-wrong', creds.wrong), /unauthorized|authentication required|401/i, 'a wrong password: refused');
  const wrong = await watch.get(`${p.url}/v2/team/app/blobs/${layer}`, header(creds.wrong));
  t.equal(wrong.status, 401, 'the token endpoint refused it: 401 to the client');
  t.equal(wrong.headers['www-authenticate'], CHALLENGE);
  const carol = await watch.get(`${p.url}/v2/team/app/blobs/${layer}`, header(creds.carol));
  t.equal(carol.status, 403, 'carol, valid but without access to team/app: 403');
  t.equal(carol.error().code, 'DENIED');
  const anonymous = await watch.get(`${p.url}/v2/team/app/blobs/${layer}`);
  t.equal(anonymous.status, 401, 'no credentials: challenged');
  t.equal(blobGets(hop), 0, 'the upstream got no blob GET for any of them');
  t.ok(tokens.requests.some((r) => r.user === 'carol') && tokens.requests.some((r) => r.status === 401), 'each asked for a token with its own credentials');

  // refusals are answers, not failures: however many, the upstream does not count as down
  for (let i = 0; i < 5; i++) t.equal((await watch.get(`${p.url}/v2/team/app/manifests/v1`, header(`alice:${WRONG}-${i}`))).status, 401);
  const dave = await pullImage(ref, join(work, 'token-dave'), { creds: creds.dave });
  t.same(dave.allDigests, image.allDigests, 'after five refused passwords a new valid user is still confirmed and served');
});

t.test('no secret in any log, cache file or error body', async (t) => {
  await watch.check(t);
});
