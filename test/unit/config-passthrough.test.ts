// The upstream key clientCredentials: passthrough: its one value, and that an upstream using each
// client's own credentials takes none of its own (a configured one would be silently unused).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { ConfigError, loadConfig } from '../../src/config.js';

const dir = await mkdtemp(join(tmpdir(), 'pullthrough-config-passthrough-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
let n = 0;
async function load(text: string, env: NodeJS.ProcessEnv = {}) {
  const path = join(dir, `config-${n++}.yml`);
  await writeFile(path, text);
  return loadConfig({ config: path }, env);
}
async function keyOf(text: string): Promise<string | undefined> {
  try {
    await load(text);
  } catch (e) {
    if (e instanceof ConfigError) return e.message;
    throw e;
  }
  return undefined;
}

t.test('passthrough on an upstream; others keep their configured credentials', async (t) => {
  const c = await load('upstreams:\n  - url: https://registry.internal\n    clientCredentials: passthrough\n  - url: https://ghcr.io\n    password: t\n');
  t.equal(c.upstreams[0]!.clientCredentials, 'passthrough');
  t.equal(c.upstreams[1]!.clientCredentials, undefined);
  t.equal(c.upstreams[1]!.password, 't');
});

t.test('Docker Hub passthrough ignores REGISTRY_USERNAME and REGISTRY_PASSWORD', async (t) => {
  const c = await load('upstreams:\n  - url: https://registry-1.docker.io\n    clientCredentials: passthrough\n', { REGISTRY_USERNAME: 'u', REGISTRY_PASSWORD: 'p' });
  t.equal(c.upstreams[0]!.username, undefined);
  t.equal(c.upstreams[0]!.password, undefined);
});

t.test('problems name the key', async (t) => {
  t.match(await keyOf('upstreams:\n  - url: https://r.example\n    clientCredentials: yes\n'), /^upstreams\[0\]\.clientCredentials: must be "passthrough"/);
  for (const extra of ['username: u\n    password: p', 'password: p']) {
    t.match(await keyOf(`upstreams:\n  - url: https://r.example\n    clientCredentials: passthrough\n    ${extra}\n`), /^upstreams\[0\]\.clientCredentials: is passthrough: .*remove username, password/, extra);
  }
  t.match(await keyOf('upstreams:\n  - url: https://1.dkr.ecr.us-east-1.amazonaws.com\n    clientCredentials: passthrough\n    awsAccessKeyId: a\n    awsSecretAccessKey: b\n'), /^upstreams\[0\]\.clientCredentials: is passthrough/);
  t.equal(await keyOf('upstreams:\n  - url: https://1.dkr.ecr.us-east-1.amazonaws.com\n    clientCredentials: passthrough\n    awsRegion: us-east-1\n'), undefined, 'ECR settings that are no credential are fine');
});
