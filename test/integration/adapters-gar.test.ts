// GAR / GCR adapter through the real google-auth-library: a stand-in of Google's OAuth2 token
// endpoint (the key's token_uri) verifies the signed JWT assertion and issues access tokens;
// docker-registry with token auth behind it accepts Basic `oauth2accesstoken:<access token>` at
// its token service, as Artifact Registry does.
import { join } from 'node:path';
import t from 'tap';
import type { UpstreamConfig } from '../../src/config.js';
import { createUpstream } from '../../src/upstreams/index.js';
import { LeakWatch } from '../helpers/captured-proxy.js';
import { CLOUD_PLATFORM, JWT_BEARER, startGoogleOAuth } from '../helpers/google-oauth-standin.js';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const MINUTE = 60_000;
const HOST = 'europe-west4-docker.pkg.dev';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const work = await makeTempDir('pullthrough-adapters-gar-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 2, layerBytes: 96 << 10, seed: 'adapters-gar', dir: join(work, 'image') });

const oauth = await startGoogleOAuth();
t.teardown(() => oauth.close());
const registry = await startRegistry({ mode: 'token', password: SECRETS.registryPassword });
t.teardown(() => registry.stop());
for (const repo of ['proj/repo/app', 'proj/repo/other', 'proj/repo/third', 'proj/locked/app']) {
  await pushLayout(image.dir, `${registry.host}/${repo}:v1`, { creds: registry.creds! });
}
// From now on the token service takes only live Google access tokens, for user oauth2accesstoken.
registry.tokenServer!.options.verifyCredentials = (user, password) => user === 'oauth2accesstoken' && oauth.isValid(password);
const hop = await startHop(registry.url);
t.teardown(() => hop.close());

const watch = new LeakWatch();
const ENV = { SERVICE_ACCOUNT_JSON: oauth.serviceAccountJson };
const garUpstream = { name: HOST, type: 'gar', url: hop.url, serviceAccountJson: '${SERVICE_ACCOUNT_JSON}' };
t.beforeEach(() => {
  oauth.requests.length = 0;
  registry.tokenServer!.requests.length = 0;
  hop.reset();
});

t.test('GAR: the service-account key becomes an access token, sent as oauth2accesstoken', async (t) => {
  const p = await watch.proxy(t, { configDoc: { upstreams: [garUpstream] }, env: ENV });
  const pulled = await pullImage(`${p.host}/${HOST}/proj/repo/app:v1`, join(work, 'gar-1'));
  t.same(pulled.allDigests, image.allDigests, 'every digest matches');
  t.equal(oauth.requests.length, 1, 'one access token');
  const grant = oauth.requests[0]!;
  t.equal(grant.grantType, JWT_BEARER, 'the JWT-bearer grant, posted to the key token_uri');
  t.ok(grant.signatureValid, "the assertion verifies against the key's public half");
  t.equal(grant.iss, oauth.clientEmail);
  t.equal(grant.scope, CLOUD_PLATFORM);
  const tokens = registry.tokenServer!.requests;
  t.ok(tokens.length >= 1 && tokens.every((r) => r.user === 'oauth2accesstoken' && r.authorized), 'the registry token service got oauth2accesstoken:<access token>');

  oauth.revoke(oauth.issued.at(-1)!);
  const other = await pullImage(`${p.host}/${HOST}/proj/repo/other:v1`, join(work, 'gar-2'));
  t.same(other.allDigests, image.allDigests, 'a revoked access token: refused once, re-minted, retried');
  t.equal(oauth.requests.length, 2);
  t.ok(registry.tokenServer!.requests.some((r) => r.status === 401), 'the token service refused the revoked token');
});

t.test('a missing role gives a DENIED that names the role', async (t) => {
  const p = await watch.proxy(t, { configDoc: { upstreams: [garUpstream] }, env: ENV });
  Object.assign(hop.faults, { status: 403, only: { pathIncludes: '/proj/locked/' } });
  const r = await watch.get(`${p.url}/v2/${HOST}/proj/locked/app/manifests/v1`);
  t.equal(r.status, 403);
  const err = r.error();
  t.equal(err.code, 'DENIED');
  t.match(err.message, `upstream "${HOST}" denied access to proj/locked/app`);
  t.match(err.message, 'Artifact Registry Reader');
  t.match(err.message, 'roles/artifactregistry.reader');

  const gcr = await watch.proxy(t, { configDoc: { upstreams: [{ ...garUpstream, name: 'eu.gcr.io' }] }, env: ENV });
  const g = await watch.get(`${gcr.url}/v2/eu.gcr.io/proj/locked/app/manifests/v1`);
  t.equal(g.status, 403);
  t.match(g.error().message, 'Storage Object Viewer', 'gcr.io names Container Registry\'s role too');
});

t.test('a key Google refuses: DENIED naming the service account, not the key', async (t) => {
  const p = await watch.proxy(t, { configDoc: { upstreams: [garUpstream] }, env: { SERVICE_ACCOUNT_JSON: oauth.unknownKeyJson } });
  const r = await watch.get(`${p.url}/v2/${HOST}/proj/repo/app/manifests/v1`);
  t.equal(r.status, 403);
  const err = r.error();
  t.equal(err.code, 'DENIED');
  t.match(err.message, `Google refused the service-account key of ${oauth.clientEmail}`);
  t.notOk(r.body.includes('PRIVATE KEY'));
});

t.test('access-token lifecycle on an injectable clock', async (t) => {
  let clock = Date.now();
  const u: UpstreamConfig = { name: HOST, url: hop.url, type: 'gar', aliases: [], username: undefined, password: undefined, serviceAccountJson: oauth.serviceAccountJson };
  const up = createUpstream(u, { timeouts: { connectMs: 5000, headersMs: 10_000, bodyMs: 10_000 }, retries: 0 }, {}, { now: () => clock });
  t.teardown(() => up.close());
  const head = () => up.headManifest('proj/repo/third', { kind: 'tag', tag: 'v1' }, [OCI_MANIFEST]);
  t.equal((await head()).digest, image.top.digest);
  t.equal(oauth.requests.length, 1);
  clock += 20 * MINUTE;
  await head();
  t.equal(oauth.requests.length, 1, '20 min: the registry token is renewed with the cached access token');
  t.ok(registry.tokenServer!.requests.length >= 2, 'a new registry token was fetched');
  clock += 15 * MINUTE;
  await head();
  t.equal(oauth.requests.length, 2, 'past half of its hour: a new access token');
});

t.test('no secret in any log, cache file or error body', async (t) => {
  // the key (and so its JSON), and every access and registry token (by its mark) are in SECRETS
  t.ok(oauth.issued.length > 0, 'access tokens were issued');
  await watch.check(t, Object.fromEntries(oauth.issued.map((tok, i) => [`access token ${i}`, tok])));
});
