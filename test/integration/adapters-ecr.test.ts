// ECR adapters through the real @aws-sdk clients: an ECR API stand-in on 127.0.0.1 (SigV4
// verified) mints `AWS:<password>`; docker-registry behind an ECR-style front checks it as Basic
// auth (htpasswd, like ECR's Basic challenge) and blobs redirect to S3-style pre-signed URLs on a
// blob server that rejects any Authorization. ECR Public: docker-registry with token auth.
import { join } from 'node:path';
import t from 'tap';
import type { UpstreamConfig } from '../../src/config.js';
import { rejection } from '../helpers/rejection.js';
import { createUpstream } from '../../src/upstreams/index.js';
import { startRedirectFront } from '../helpers/blob-redirect.js';
import { expectNoSecrets, LeakWatch } from '../helpers/captured-proxy.js';
import { ECR_PUBLIC_TARGET, ECR_TARGET, startEcrStandIn } from '../helpers/ecr-standin.js';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { AWS_ACCESS_KEY_ID as KEY_ID, SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const HOUR = 3600_000;
const HOST = '123456789012.dkr.ecr.us-east-1.amazonaws.com';
const { awsSecretAccessKey: SECRET, ecrPassword: PASSWORD, staleEcrPassword: STALE, refusedEcrPassword: WRONG } = SECRETS;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

const work = await makeTempDir('pullthrough-adapters-ecr-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 2, layerBytes: 96 << 10, seed: 'adapters-ecr', dir: join(work, 'image') });
const blobs = image.images[0]!.layers.length + 1;

const api = await startEcrStandIn({ accessKeyId: KEY_ID, secretAccessKey: SECRET, password: PASSWORD });
t.teardown(() => api.close());
const registry = await startRegistry({ mode: 'htpasswd', username: 'AWS', password: PASSWORD });
t.teardown(() => registry.stop());
await pushLayout(image.dir, `${registry.host}/team/app:v1`, { creds: registry.creds! });
await pushLayout(image.dir, `${registry.host}/team/other:v1`, { creds: registry.creds! });
const front = await startRedirectFront({ target: registry.url, style: 'ecr', blobFile: (hex) => join(image.dir, 'blobs', 'sha256', hex) });
t.teardown(() => front.close());

const watch = new LeakWatch();
const publicTokens: string[] = [];
const ENV = { AWS_ACCESS_KEY_ID: KEY_ID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_REGION: 'us-east-1' };
const ecrUpstream = (extra: Record<string, unknown> = {}) => ({
  name: HOST,
  type: 'ecr',
  url: front.url,
  awsAccessKeyId: '${AWS_ACCESS_KEY_ID}',
  awsSecretAccessKey: '${AWS_SECRET_ACCESS_KEY}',
  awsRegion: '${AWS_REGION}',
  awsEndpoint: api.url,
  ...extra,
});
t.beforeEach(() => {
  api.calls.length = 0;
  api.options.password = PASSWORD;
  api.options.error = undefined;
  api.options.now = undefined;
});

t.test('ECR: GetAuthorizationToken via the SDK, Basic AWS:<password>, pre-signed blob URLs without our Authorization', async (t) => {
  const p = await watch.proxy(t, { configDoc: { upstreams: [ecrUpstream()] }, env: ENV });
  const pulled = await pullImage(`${p.host}/${HOST}/team/app:v1`, join(work, 'ecr-1'));
  t.same(pulled.allDigests, image.allDigests, 'every digest matches');
  t.equal(api.calls.length, 1, 'one GetAuthorizationToken call');
  const call = api.calls[0]!;
  t.equal(call.target, ECR_TARGET);
  t.ok(call.signatureValid, 'SigV4-signed with the secret key');
  t.equal(call.region, 'us-east-1');
  t.equal(front.redirects, blobs, 'every blob GET was redirected');
  t.ok(front.blobHits.length === blobs && front.blobHits.every((h) => h.status === 200), 'and served by the blob server');
  t.notOk(front.blobHits.some((h) => h.authorization), 'no Authorization reached the pre-signed URLs');

  const other = await pullImage(`${p.host}/${HOST}/team/other:v1`, join(work, 'ecr-2'));
  t.same(other.allDigests, image.allDigests);
  t.equal(api.calls.length, 1, 'the token covers other repositories: no second call');
});

t.test('the standard AWS credential chain: no keys in the config, AWS_* in the environment', async (t) => {
  const chain = { AWS_ACCESS_KEY_ID: KEY_ID, AWS_SECRET_ACCESS_KEY: SECRET, AWS_REGION: 'us-east-1', AWS_EC2_METADATA_DISABLED: 'true' };
  const saved = Object.fromEntries(Object.keys(chain).map((k) => [k, process.env[k]]));
  t.teardown(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
  Object.assign(process.env, chain);
  const p = await watch.proxy(t, { configDoc: { upstreams: [{ name: HOST, type: 'ecr', url: front.url, awsEndpoint: api.url }] } });
  const pulled = await pullImage(`${p.host}/${HOST}/team/app:v1`, join(work, 'ecr-chain'));
  t.same(pulled.allDigests, image.allDigests, 'the pull succeeds');
  t.equal(api.calls.length, 1, 'one GetAuthorizationToken call');
  t.match(api.calls[0], { target: ECR_TARGET, accessKeyId: KEY_ID, region: 'us-east-1', signatureValid: true }, 'signed with the keys from the environment, region from AWS_REGION');
});

t.test('token lifecycle on an injectable clock: half-life renewal, fallback, expiry', async (t) => {
  let clock = Date.now();
  api.options.now = () => clock;
  const u: UpstreamConfig = {
    name: HOST,
    url: front.url,
    type: 'ecr',
    aliases: [],
    username: undefined,
    password: undefined,
    aws: { accessKeyId: KEY_ID, secretAccessKey: SECRET, sessionToken: undefined, region: 'us-east-1', endpoint: api.url, public: false },
  };
  const up = createUpstream(u, { timeouts: { connectMs: 5000, headersMs: 10_000, bodyMs: 10_000 }, retries: 0 }, {}, { now: () => clock });
  t.teardown(() => up.close());
  const head = () => up.headManifest('team/app', { kind: 'tag', tag: 'v1' }, [OCI_MANIFEST]);

  t.equal((await head()).digest, image.top.digest);
  t.equal(api.calls.length, 1, 'minted');
  clock += 5 * HOUR;
  await head();
  t.equal(api.calls.length, 1, '5 h later: still cached');
  clock += 1 * HOUR + 60_000;
  await head();
  t.equal(api.calls.length, 2, 'past half of 12 h: renewed');

  api.options.error = { type: 'ServerException', message: 'internal failure', status: 500 };
  clock += 7 * HOUR;
  t.equal((await head()).digest, image.top.digest, 'renewal fails: the held token (5 h left) is used');
  t.ok(api.calls.length > 2, 'renewal was attempted');
  clock += 6 * HOUR;
  const e = await rejection(head());
  t.equal(e.code, 'UNAVAILABLE', 'expired and the API fails');
  t.match(e.message, `upstream "${HOST}": ecr:GetAuthorizationToken failed`);
  api.options.error = undefined;
  t.equal((await head()).digest, image.top.digest, 'recovers when the API answers');
});

t.test('a 401 on a cached token triggers one renewal and one retry', async (t) => {
  api.options.nextPasswords = [STALE];
  const p = await watch.proxy(t, { configDoc: { upstreams: [ecrUpstream()] }, env: ENV });
  const r = await watch.get(`${p.url}/v2/${HOST}/team/app/manifests/v1`);
  t.equal(r.status, 200, 'the retry with a fresh token succeeds');
  t.equal(api.calls.length, 2, 'refused token, one renewal');
});

t.test('a credential the upstream refuses: DENIED naming the upstream and the IAM actions', async (t) => {
  api.options.password = WRONG;
  const p = await watch.proxy(t, { configDoc: { upstreams: [ecrUpstream()] }, env: ENV });
  const r = await watch.get(`${p.url}/v2/${HOST}/team/app/manifests/v1`);
  t.equal(r.status, 403);
  const err = r.error();
  t.equal(err.code, 'DENIED');
  t.match(err.message, `upstream "${HOST}" denied access to team/app`);
  t.match(err.message, 'ecr:BatchGetImage');
  t.equal(api.calls.length, 2, 'one renewal, no more');

  api.options.password = PASSWORD;
  api.options.error = { type: 'AccessDeniedException', message: 'User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:GetAuthorizationToken' };
  const q = await watch.proxy(t, { configDoc: { upstreams: [ecrUpstream()] }, env: ENV });
  const r2 = await watch.get(`${q.url}/v2/${HOST}/team/app/manifests/v1`);
  t.equal(r2.status, 403);
  t.match(r2.error().message, `upstream "${HOST}": AWS refused ecr:GetAuthorizationToken (AccessDeniedException`);

  const w = await watch.proxy(t, { configDoc: { upstreams: [ecrUpstream()] }, env: { ...ENV, AWS_SECRET_ACCESS_KEY: SECRETS.wrongAwsSecretAccessKey } });
  const r3 = await watch.get(`${w.url}/v2/${HOST}/team/app/manifests/v1`);
  t.equal(r3.status, 403);
  t.match(r3.error().message, 'InvalidSignatureException');
});

t.test('ECR Public: anonymous token flow, or authenticated through ecr-public', async (t) => {
  const pub = await startRegistry({ mode: 'token', token: { anonymous: 'pull' }, password: SECRETS.registryPassword });
  t.teardown(() => pub.stop());
  await pushLayout(image.dir, `${pub.host}/docker/library/alpine:3`, { creds: pub.creds! });
  pub.tokenServer!.options.verifyCredentials = (u, pw) => u === 'AWS' && pw === PASSWORD;
  pub.tokenServer!.requests.length = 0;
  const hop = await startHop(pub.url);
  t.teardown(() => hop.close());

  const anon = await watch.proxy(t, { configDoc: { upstreams: [{ name: 'public.ecr.aws', type: 'ecr', ecrPublic: true, url: hop.url }] } });
  const a = await pullImage(`${anon.host}/public.ecr.aws/docker/library/alpine:3`, join(work, 'pub-anon'));
  t.same(a.allDigests, image.allDigests);
  t.equal(api.calls.length, 0, 'anonymous: no AWS call');
  t.ok(pub.tokenServer!.requests.every((r) => r.user === undefined), 'anonymous tokens');

  pub.tokenServer!.requests.length = 0;
  const authed = await watch.proxy(t, {
    configDoc: { upstreams: [{ name: 'public.ecr.aws', type: 'ecr', ecrPublic: true, url: hop.url, awsAccessKeyId: '${AWS_ACCESS_KEY_ID}', awsSecretAccessKey: '${AWS_SECRET_ACCESS_KEY}', awsEndpoint: api.url }] },
    env: ENV,
  });
  const b = await pullImage(`${authed.host}/public.ecr.aws/docker/library/alpine:3`, join(work, 'pub-auth'));
  t.same(b.allDigests, image.allDigests);
  t.equal(api.calls.length, 1);
  t.equal(api.calls[0]!.target, ECR_PUBLIC_TARGET, 'ecr-public GetAuthorizationToken');
  t.equal(api.calls[0]!.region, 'us-east-1');
  t.ok(api.calls[0]!.signatureValid);
  const tokens = pub.tokenServer!.requests;
  t.ok(tokens.length >= 1 && tokens.every((r) => r.user === 'AWS' && r.authorized), 'the token realm got AWS:<password>');
  for (const r of tokens) if (r.token) publicTokens.push(r.token);
});

t.test('no secret in any log, cache file, error body or request to the blob server', async (t) => {
  t.ok(api.issued.length > 0 && publicTokens.length > 0, 'tokens were issued');
  // ECR authorization tokens are base64("AWS:" + password): found through the password
  await watch.check(t, Object.fromEntries(publicTokens.map((tok, i) => [`ECR Public registry token ${i}`, tok])));
  t.ok(front.blobHits.length > 0, 'the blob server was used');
  await expectNoSecrets(t, SECRETS, { texts: Object.fromEntries(front.blobHits.map((h, i) => [`request ${i} to the blob server`, h.rawHeaders])) });
});
