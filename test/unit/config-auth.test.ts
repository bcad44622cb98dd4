// The auth keys of the config: parsed, upstream names made canonical, every mistake a ConfigError
// naming the key (the CLI exits with code 2).
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const dir = await makeTempDir('pullthrough-config-auth-');
t.teardown(() => removeDir(dir));
let n = 0;

const UPSTREAMS = [
  { name: 'ghcr.io', url: 'https://ghcr.io' },
  { name: 'ecr-prod', url: 'https://123456789012.dkr.ecr.eu-west-1.amazonaws.com', aliases: ['ecr.internal'] },
  { url: 'https://registry-1.docker.io' },
];

async function load(auth: unknown) {
  const path = join(dir, `config-${n++}.json`);
  await writeFile(path, JSON.stringify({ upstreams: UPSTREAMS, auth }));
  return loadConfig({ config: path }, {});
}

async function problem(auth: unknown): Promise<string | undefined> {
  try {
    await load(auth);
    return undefined;
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
}

t.test('the keys as the issue gives them', async (t) => {
  const c = await load({
    htpasswd: 'etc/htpasswd',
    anonymous: ['docker.io'],
    rules: [{ users: ['alice', 'ci'], upstreams: ['ghcr.io', 'ecr-prod'], repositories: ['org/*'] }],
  });
  t.same(c.auth, {
    htpasswd: resolve('etc/htpasswd'),
    anonymous: ['docker.io'],
    rules: [{ users: ['alice', 'ci'], upstreams: ['ghcr.io', 'ecr-prod'], repositories: ['org/*'] }],
  });
});

t.test('without auth, there is none; aliases stand for their upstream', async (t) => {
  t.equal((await load(undefined)).auth, undefined);
  const c = await load({ htpasswd: '/h', anonymous: ['index.docker.io', 'GHCR.IO'], rules: [{ users: ['*'], upstreams: ['ecr.internal'] }] });
  t.same(c.auth?.anonymous, ['docker.io', 'ghcr.io'], 'Docker Hub by its alias, ghcr.io whatever its case');
  t.same(c.auth?.rules[0], { users: ['*'], upstreams: ['ecr-prod'] }, 'no repositories: the whole upstream');
  t.same((await load({})).auth, { htpasswd: undefined, anonymous: [], rules: [] }, 'auth: {} locks everything down');
});

t.test('mistakes name their key', async (t) => {
  const cases: [unknown, RegExp][] = [
    [{ anonymous: ['quay.io'] }, /^auth\.anonymous\[0\]: "quay\.io" is not the name or an alias of a configured upstream \(ghcr\.io, ecr-prod, docker\.io\)/],
    [{ htpasswd: '/h', rules: [{ users: ['a'], upstreams: ['ghcr.io', 'nope'] }] }, /^auth\.rules\[0\]\.upstreams\[1\]: "nope" is not/],
    [{ rules: [{ users: ['a'], upstreams: ['ghcr.io'] }] }, /^auth\.htpasswd: is required when auth\.rules are given/],
    [{ htpasswd: '/h', rules: [{ upstreams: ['ghcr.io'] }] }, /^auth\.rules\[0\]\.users: must be a list of user names/],
    [{ htpasswd: '/h', rules: [{ users: [], upstreams: ['ghcr.io'] }] }, /^auth\.rules\[0\]\.users: must name at least one user/],
    [{ htpasswd: '/h', rules: [{ users: ['a'], upstreams: [] }] }, /^auth\.rules\[0\]\.upstreams: must name at least one upstream/],
    [{ htpasswd: '/h', rules: [{ users: ['a:b'], upstreams: ['ghcr.io'] }] }, /^auth\.rules\[0\]\.users\[0\]: "a:b" is not a user name/],
    [{ htpasswd: '/h', rules: [{ users: ['a'], upstreams: ['ghcr.io'], repositories: ['Org/*'] }] }, /^auth\.rules\[0\]\.repositories\[0\]: "Org\/\*" is not a repository glob/],
    [{ htpasswd: '/h', rules: [{ users: ['a'], upstreams: ['ghcr.io'], repositories: ['org/***'] }] }, /^auth\.rules\[0\]\.repositories\[0\]: .*\*\*\* means nothing more/],
    [{ htpasswd: '/h', rules: [{ users: ['a'], upstreams: ['ghcr.io'], repos: ['x'] }] }, /^auth\.rules\[0\]\.repos: is not a setting \(one of users, upstreams, repositories\)/],
    [{ htpasswd: '/h', users: ['a'] }, /^auth\.users: is not a setting \(one of htpasswd, anonymous, rules\)/],
    [{ anonymous: 'docker.io' }, /^auth\.anonymous: must be a list of upstream names/],
    [['docker.io'], /^auth: must be a mapping/],
  ];
  for (const [auth, expected] of cases) t.match(await problem(auth), expected, JSON.stringify(auth));
});
