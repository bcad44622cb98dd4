// Config → adapter: which credential provider and hints each upstream type gets, and the config
// keys the kinds take.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig, type UpstreamConfig } from '../../../src/config.js';
import { adapterFor } from '../../../src/upstreams/kinds/index.js';
import { anonymous } from '../../../src/upstreams/auth/credentials.js';
import { MintedCredentials } from '../../../src/upstreams/auth/minted.js';
import { makeTempDir, removeDir } from '../../helpers/util.js';

const dir = await makeTempDir('pullthrough-adapters-');
t.teardown(() => removeDir(dir));
let n = 0;
async function upstreams(doc: unknown, env: NodeJS.ProcessEnv = {}): Promise<readonly UpstreamConfig[]> {
  const file = join(dir, `c${n++}.json`);
  await writeFile(file, JSON.stringify({ upstreams: doc }));
  return loadConfig({ config: file }, env).upstreams;
}
async function configError(doc: unknown, env: NodeJS.ProcessEnv = {}): Promise<ConfigError> {
  try {
    await upstreams(doc, env);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

const SA = JSON.stringify({ type: 'service_account', client_email: 'puller@p.iam.gserviceaccount.com', private_key: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' });

t.test('Docker Hub: default URL, docker.io names, anonymous or user + access token', async (t) => {
  const [bare, named, withCreds] = await upstreams(
    [
      { type: 'dockerhub' },
      { url: 'docker.io', name: 'hub', aliases: [] },
      { type: 'dockerhub', name: 'hub2', aliases: [], url: 'index.docker.io', username: '${REGISTRY_USERNAME}', password: '${REGISTRY_PASSWORD}' },
    ],
    { REGISTRY_USERNAME: 'alice', REGISTRY_PASSWORD: 'dckr_pat_x' },
  );
  t.equal(bare!.url, 'https://registry-1.docker.io', 'type alone gives the API host');
  t.equal(bare!.name, 'docker.io');
  t.same(bare!.aliases, ['index.docker.io', 'registry-1.docker.io']);
  t.equal(named!.type, 'dockerhub');
  t.equal(named!.url, 'https://registry-1.docker.io', 'docker.io is a name; the API is registry-1');
  t.equal(withCreds!.url, 'https://registry-1.docker.io');
  const a = adapterFor(withCreds!);
  t.equal(a.credentials.identity, 'basic:alice');
  t.same(await a.credentials.get(), { username: 'alice', password: 'dckr_pat_x' });
  t.match(a.deniedHint, 'access token');
});

t.test('Docker Hub without configured credentials: REGISTRY_USERNAME / REGISTRY_PASSWORD, for Docker Hub only', async (t) => {
  const env = { REGISTRY_USERNAME: 'alice', REGISTRY_PASSWORD: 'dckr_pat_env' };
  const fromEnv = { username: 'alice', password: 'dckr_pat_env' };
  t.same(await adapterFor(loadConfig({}, env).upstreams[0]!).credentials.get(), fromEnv, 'the built-in default upstream');
  t.same(await adapterFor(loadConfig({ upstream: ['docker.io=https://registry-1.docker.io'] }, env).upstreams[0]!).credentials.get(), fromEnv, '--upstream docker.io=…');
  const [bare, explicit, ghcr, plain, ecr] = await upstreams(
    [
      { type: 'dockerhub' },
      { type: 'dockerhub', name: 'hub2', aliases: [], username: 'bob', password: 'dckr_pat_config' },
      { type: 'ghcr' },
      { url: 'https://registry.example.com' },
      { url: 'public.ecr.aws' },
    ],
    env,
  );
  t.same(await adapterFor(bare!).credentials.get(), fromEnv, 'a config entry of type dockerhub');
  t.same(await adapterFor(explicit!).credentials.get(), { username: 'bob', password: 'dckr_pat_config' }, 'configured credentials win');
  for (const u of [ghcr!, plain!, ecr!]) {
    t.equal(adapterFor(u).credentials, anonymous, `${u.type} ${u.name} never gets them`);
    t.equal(u.password, undefined);
  }
  for (const partial of [{ REGISTRY_USERNAME: 'alice' }, { REGISTRY_PASSWORD: 'dckr_pat_env' }, { REGISTRY_USERNAME: '', REGISTRY_PASSWORD: 'dckr_pat_env' }, {}]) {
    t.equal(adapterFor(loadConfig({}, partial).upstreams[0]!).credentials, anonymous, `anonymous with ${JSON.stringify(Object.keys(partial))}`);
  }
});

t.test('ghcr: default URL, anonymous, or a token with any username', async (t) => {
  const [anon, token, named] = await upstreams(
    [{ type: 'ghcr' }, { type: 'ghcr', name: 'gh2', password: '${GHCR_TOKEN}' }, { url: 'https://ghcr.io', name: 'gh3', username: 'octocat', password: 'ghp_y' }],
    { GHCR_TOKEN: 'ghp_x' },
  );
  t.equal(anon!.url, 'https://ghcr.io');
  t.equal(adapterFor(anon!).credentials, anonymous);
  t.same(await adapterFor(token!).credentials.get(), { username: 'token', password: 'ghp_x' });
  t.same(await adapterFor(named!).credentials.get(), { username: 'octocat', password: 'ghp_y' });
  t.match(adapterFor(token!).deniedHint, 'read:packages');
});

t.test('ECR: keys, region from the host, endpoint override; ECR Public anonymous without keys', async (t) => {
  const env = { AWS_ACCESS_KEY_ID: 'AKIAX', AWS_SECRET_ACCESS_KEY: 'shh', AWS_REGION: '' };
  const [priv, chain, pub, pubAuth] = await upstreams(
    [
      { url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com', awsAccessKeyId: '${AWS_ACCESS_KEY_ID}', awsSecretAccessKey: '${AWS_SECRET_ACCESS_KEY}', awsRegion: '${AWS_REGION}', awsEndpoint: 'http://127.0.0.1:9/' },
      { url: '123456789012.dkr.ecr.us-east-2.amazonaws.com' },
      { url: 'public.ecr.aws' },
      { url: 'http://127.0.0.1:5000', type: 'ecr', ecrPublic: true, awsAccessKeyId: 'AKIAY', awsSecretAccessKey: 'shh2' },
    ],
    env,
  );
  t.equal(priv!.type, 'ecr', 'inferred from the host');
  t.same(priv!.aws, { accessKeyId: 'AKIAX', secretAccessKey: 'shh', sessionToken: undefined, region: undefined, endpoint: 'http://127.0.0.1:9/', public: false });
  const a = adapterFor(priv!);
  t.ok(a.credentials instanceof MintedCredentials);
  t.match(a.credentials.identity, /^ecr:eu-west-1:/, 'region from the registry host');
  t.match(a.deniedHint, 'ecr:BatchGetImage');
  t.match(adapterFor(chain!).credentials.identity, /^ecr:us-east-2:default-chain$/, 'no keys: the AWS credential chain');
  t.equal(pub!.aws?.public, true, 'public.ecr.aws is ECR Public');
  t.equal(adapterFor(pub!).credentials, anonymous, 'ECR Public without keys is anonymous');
  t.match(adapterFor(pubAuth!).credentials.identity, /^ecr-public:us-east-1:/);
});

t.test('GAR/GCR: a service-account key, static credentials, or anonymous; hints name the roles', async (t) => {
  const [gar, gcr, anon] = await upstreams(
    [
      { url: 'europe-west4-docker.pkg.dev', serviceAccountJson: '${SERVICE_ACCOUNT_JSON}' },
      { url: 'eu.gcr.io', username: '_json_key', password: '${SERVICE_ACCOUNT_JSON}' },
      { url: 'us-docker.pkg.dev' },
    ],
    { SERVICE_ACCOUNT_JSON: SA },
  );
  t.equal(gar!.type, 'gar');
  t.equal(gar!.serviceAccountJson, SA);
  const a = adapterFor(gar!);
  t.equal(a.credentials.identity, 'gar:puller@p.iam.gserviceaccount.com');
  t.match(a.deniedHint, 'Artifact Registry Reader');
  t.match(a.deniedHint, 'roles/artifactregistry.reader');
  t.equal(gcr!.type, 'gar');
  t.match(adapterFor(gcr!).deniedHint, 'Storage Object Viewer');
  t.equal(adapterFor(anon!).credentials, anonymous);
});

t.test('an unset ${ENV} credential means anonymous or the default chain', async (t) => {
  const [gar, ecr] = await upstreams([
    { url: 'europe-west4-docker.pkg.dev', serviceAccountJson: '${NOPE}' },
    { url: 'public.ecr.aws', awsAccessKeyId: '${NOPE}', awsSecretAccessKey: '${NOPE2}' },
  ]);
  t.equal(gar!.serviceAccountJson, undefined);
  t.equal(adapterFor(gar!).credentials, anonymous);
  t.equal(adapterFor(ecr!).credentials, anonymous);
});

t.test('config errors name the key and never quote a secret', async (t) => {
  const secret = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASC';
  const cases: [unknown, NodeJS.ProcessEnv, string, RegExp][] = [
    [[{ url: 'ghcr.io', serviceAccountJson: 'x' }], {}, 'upstreams[0].serviceAccountJson', /only for upstreams of type gar/],
    [[{ url: 'ghcr.io', awsRegion: 'us-east-1' }], {}, 'upstreams[0].awsRegion', /only for upstreams of type ecr/],
    [[{ url: 'us-docker.pkg.dev', serviceAccountJson: '${SA}' }], { SA: `{"private_key":"${secret}` }, 'upstreams[0].serviceAccountJson', /not valid JSON/],
    [[{ url: 'us-docker.pkg.dev', serviceAccountJson: '${SA}' }], { SA: `{"private_key":"${secret}"}` }, 'upstreams[0].serviceAccountJson', /client_email/],
    [[{ url: 'us-docker.pkg.dev', serviceAccountJson: SA, username: 'u', password: 'p' }], {}, 'upstreams[0].serviceAccountJson', /use one/],
    [[{ url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com', awsAccessKeyId: 'AKIA' }], {}, 'upstreams[0].awsSecretAccessKey', /other AWS key/],
    [[{ url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com', awsSecretAccessKey: secret }], {}, 'upstreams[0].awsAccessKeyId', /other AWS key/],
    [[{ url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com', username: 'AWS', password: secret }], {}, 'upstreams[0].username', /awsAccessKeyId/],
    [[{ url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com', awsEndpoint: 'ftp://x' }], {}, 'upstreams[0].awsEndpoint', /http or https/],
    [[{ url: 'public.ecr.aws', ecrPublic: 'maybe' }], {}, 'upstreams[0].ecrPublic', /true or false/],
  ];
  for (const [doc, env, key, problem] of cases) {
    const e = await configError(doc, env);
    t.equal(e.key, key, key);
    t.match(e.message, problem);
    t.notOk(e.message.includes(secret), 'the secret is not quoted');
  }
});
