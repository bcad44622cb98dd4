// Registry kinds: which hosts each one owns (an upstream's type follows from its URL), the names
// it goes by, its repository-name rules, and the settings only it takes.
import t from 'tap';
import { ConfigError } from '../../../src/lib/settings.js';
import { kindOf, resolveUpstream, UPSTREAM_TYPES, type UpstreamConfig } from '../../../src/upstreams/kinds/index.js';

function resolve(entry: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): UpstreamConfig {
  return resolveUpstream(entry, 'upstreams[0]', env);
}
function problem(entry: Record<string, unknown>): ConfigError {
  try {
    resolve(entry);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error(`expected a ConfigError for ${JSON.stringify(entry)}`);
}

t.test('the type is inferred from the host of the URL', async (t) => {
  const cases: [string, string][] = [
    ['https://registry-1.docker.io', 'dockerhub'],
    ['docker.io', 'dockerhub'],
    ['index.docker.io', 'dockerhub'],
    ['123456789012.dkr.ecr.eu-west-1.amazonaws.com', 'ecr'],
    ['123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com', 'ecr'],
    ['123456789012.dkr-ecr.eu-west-1.on.aws', 'ecr'],
    ['123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn', 'ecr'],
    ['public.ecr.aws', 'ecr'],
    ['ecr-public.aws.com', 'ecr'],
    ['europe-west4-docker.pkg.dev', 'gar'],
    ['us-docker.pkg.dev', 'gar'],
    ['gcr.io', 'gar'],
    ['eu.gcr.io', 'gar'],
    ['ghcr.io', 'ghcr'],
    ['quay.io', 'registry'],
    ['http://127.0.0.1:5000', 'registry'],
    // look-alikes are other registries
    ['docker.io.example.com', 'registry'],
    ['ghcr.io.example.com', 'registry'],
    ['gcr.io.example.com', 'registry'],
    ['docker.pkg.dev', 'registry'],
    ['notgcr.io', 'registry'],
  ];
  for (const [url, type] of cases) t.equal(resolve({ url }).type, type, url);
});

t.test('a given type wins over the host', async (t) => {
  t.equal(resolve({ url: 'https://ghcr.io', type: 'registry' }).type, 'registry');
  t.equal(resolve({ url: 'http://127.0.0.1:5000', type: 'ecr' }).type, 'ecr');
  t.match(problem({ url: 'quay.io', type: 'quay' }), { key: 'upstreams[0].type', message: `"quay" is not one of ${UPSTREAM_TYPES.join(', ')}` });
});

t.test('Docker Hub: its names, its API host, and its default aliases', async (t) => {
  for (const url of ['docker.io', 'index.docker.io', 'https://registry-1.docker.io', undefined]) {
    const u = resolve(url === undefined ? { type: 'dockerhub' } : { url });
    t.equal(u.url, 'https://registry-1.docker.io', `${url}: the API host`);
    t.equal(u.name, 'docker.io', `${url}: named docker.io`);
    t.same(u.aliases, ['index.docker.io', 'registry-1.docker.io'], `${url}: its other names route here`);
  }
  t.same(resolve({ url: 'docker.io', name: 'hub' }).aliases, ['docker.io', 'index.docker.io', 'registry-1.docker.io'], 'every name when the upstream has another');
  t.equal(resolve({ url: 'http://index.docker.io:8080' }).url, 'https://registry-1.docker.io', 'docker.io names mean the API host, whatever the scheme and port');
  t.same(resolve({ url: 'ghcr.io' }).aliases, [], 'other kinds have no default aliases');
  t.equal(resolve({ url: 'https://quay.io:8443/v2' }).name, 'quay.io:8443', 'other kinds are named by host:port');
});

t.test('Docker Hub credentials from REGISTRY_USERNAME and REGISTRY_PASSWORD, only when none are configured', async (t) => {
  const env = { REGISTRY_USERNAME: 'alice', REGISTRY_PASSWORD: 'dckr_pat_x' };
  t.match(resolve({ type: 'dockerhub' }, env), { username: 'alice', password: 'dckr_pat_x' });
  t.match(resolve({ type: 'dockerhub', username: 'bob', password: 'p' }, env), { username: 'bob', password: 'p' });
  for (const type of UPSTREAM_TYPES.filter((k) => k !== 'dockerhub')) {
    t.equal(resolve({ url: 'http://127.0.0.1:5000', type }, env).password, undefined, `${type}: not from the environment`);
  }
});

t.test('ghcr takes a token alone; other kinds need both credentials', async (t) => {
  t.match(resolve({ url: 'ghcr.io', password: 'ghp_x' }), { username: undefined, password: 'ghp_x' });
  t.match(problem({ url: 'quay.io', password: 'x' }), { key: 'upstreams[0].username', message: /is empty while the other credential is set/ });
  t.match(problem({ url: 'quay.io', username: 'x' }), { key: 'upstreams[0].password' });
});

t.test('repository names: Docker Hub has the implicit library/ namespace', async (t) => {
  t.equal(kindOf('dockerhub').repositoryName('alpine'), 'library/alpine');
  t.equal(kindOf('dockerhub').repositoryName('team/app'), 'team/app');
  for (const type of UPSTREAM_TYPES.filter((k) => k !== 'dockerhub')) {
    t.equal(kindOf(type).repositoryName('alpine'), 'alpine', `${type}: no implicit namespace`);
    t.equal(kindOf(type).refusesHostPrefix, false, `${type}: a host-like first component is a repository path`);
  }
  t.equal(kindOf('dockerhub').refusesHostPrefix, true, 'Docker Hub: a host-like first component names a registry, not a namespace');
});

t.test("a kind's own settings are refused on every other kind, even when empty", async (t) => {
  const own: Record<string, string> = {
    awsAccessKeyId: 'ecr',
    awsSecretAccessKey: 'ecr',
    awsSessionToken: 'ecr',
    awsRegion: 'ecr',
    awsEndpoint: 'ecr',
    ecrPublic: 'ecr',
    serviceAccountJson: 'gar',
  };
  for (const [key, kind] of Object.entries(own)) {
    t.same(Object.keys(kindOf(kind as 'ecr' | 'gar').settings).includes(key), true, `${key} belongs to ${kind}`);
    for (const type of UPSTREAM_TYPES.filter((k) => k !== kind)) {
      const e = problem({ url: 'http://127.0.0.1:5000', type, [key]: '' });
      t.equal(e.key, `upstreams[0].${key}`, `${key} on ${type}`);
      t.equal(e.message, `upstreams[0].${key}: is only for upstreams of type ${kind}`, `${key} on ${type}: the message`);
    }
  }
});

t.test('ECR: ECR Public from the host unless set; an empty key is absent', async (t) => {
  t.equal(resolve({ url: 'public.ecr.aws' }).aws?.public, true);
  t.equal(resolve({ url: 'ecr-public.aws.com' }).aws?.public, true);
  t.equal(resolve({ url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com' }).aws?.public, false);
  t.equal(resolve({ url: 'http://127.0.0.1:5000', type: 'ecr', ecrPublic: true }).aws?.public, true);
  t.same(resolve({ url: 'public.ecr.aws', awsAccessKeyId: '', awsSecretAccessKey: '', awsRegion: '', awsEndpoint: '' }).aws, {
    accessKeyId: undefined,
    secretAccessKey: undefined,
    sessionToken: undefined,
    region: undefined,
    endpoint: undefined,
    public: true,
  });
});

t.test('an upstream named docker.io is Docker Hub at any URL no other kind owns (an internal mirror)', async (t) => {
  for (const name of ['docker.io', 'index.docker.io', 'registry-1.docker.io', 'Docker.IO']) {
    const u = resolve({ name, url: 'https://hub-mirror.internal' });
    t.equal(u.type, 'dockerhub', `${name}: Docker Hub's rules`);
    t.equal(u.url, 'https://hub-mirror.internal', `${name}: at the mirror's URL, not Docker Hub's`);
    t.equal(kindOf(u.type).repositoryName('alpine'), 'library/alpine', `${name}: bare names get library/`);
  }
  t.same(resolve({ name: 'docker.io', url: 'http://127.0.0.1:5000' }).aliases, ['index.docker.io', 'registry-1.docker.io'], "Docker Hub's other names route to the mirror too");
  t.match(resolve({ name: 'docker.io', url: 'https://hub-mirror.internal' }, { REGISTRY_USERNAME: 'alice', REGISTRY_PASSWORD: 'dckr_pat_x' }), { username: 'alice' }, 'and it takes REGISTRY_USERNAME/PASSWORD like any Docker Hub upstream');
  t.equal(resolve({ name: 'hub', url: 'https://hub-mirror.internal' }).type, 'registry', 'another name: any registry');
  t.equal(resolve({ name: 'docker.io.example', url: 'https://hub-mirror.internal' }).type, 'registry', 'a look-alike name: any registry');
  t.equal(resolve({ name: 'docker.io', url: 'https://hub-mirror.internal', type: 'registry' }).type, 'registry', 'a given type wins over the name');
  t.equal(resolve({ name: 'docker.io', url: 'https://hub-mirror.internal', type: 'dockerhub' }).type, 'dockerhub');
  t.equal(resolve({ name: 'docker.io', url: '123456789012.dkr.ecr.eu-west-1.amazonaws.com' }).type, 'ecr', "a known registry's URL keeps its kind (its credentials are that registry's)");
  t.equal(resolve({ url: 'https://hub-mirror.internal', type: 'dockerhub' }).name, 'docker.io', 'type dockerhub at a mirror URL is named docker.io');
  t.equal(resolve({ url: 'https://hub-mirror.internal', type: 'dockerhub' }).url, 'https://hub-mirror.internal');
});
