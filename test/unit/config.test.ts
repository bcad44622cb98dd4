import t from 'tap';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, parseDuration, parseSize, upstreamSpec, type Config, type Flags } from '../../src/config.js';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
const GiB = 2 ** 30;

const dir = await mkdtemp(join(tmpdir(), 'pullthrough-config-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));

let n = 0;
async function file(text: string, ext = 'yml'): Promise<string> {
  const path = join(dir, `config-${n++}.${ext}`);
  await writeFile(path, text);
  return path;
}

const YAML_DOC = `
listen: 127.0.0.1:5055
cache:
  dir: /var/cache/pullthrough
  maxSize: 100GiB
  tagTtl: 2m
upstreams:
  - name: docker.io
    url: https://registry-1.docker.io
    type: dockerhub
    username: \${HUB_USER}
    password: \${HUB_PASS}
    aliases: [index.docker.io]
  - name: ghcr.io
    url: https://ghcr.io
    type: ghcr
  - name: mirror.local:5000
    url: http://mirror.local:5000
defaultUpstream: ghcr.io
timeouts: { connect: 1s, headers: 500ms, body: 1m }
retries: 3
logLevel: debug
`;

const JSON_DOC = JSON.stringify({
  listen: '127.0.0.1:5055',
  cache: { dir: '/var/cache/pullthrough', maxSize: '100GiB', tagTtl: '2m' },
  upstreams: [
    { name: 'docker.io', url: 'https://registry-1.docker.io', type: 'dockerhub', username: '${HUB_USER}', password: '${HUB_PASS}', aliases: ['index.docker.io'] },
    { name: 'ghcr.io', url: 'https://ghcr.io', type: 'ghcr' },
    { name: 'mirror.local:5000', url: 'http://mirror.local:5000' },
  ],
  defaultUpstream: 'ghcr.io',
  timeouts: { connect: '1s', headers: '500ms', body: '1m' },
  retries: 3,
  logLevel: 'debug',
});

const ENV = { HUB_USER: 'alice', HUB_PASS: 's3cret' };

function checkDocumentedShape(t: Tap, c: Config) {
  t.same(c.listen, { host: '127.0.0.1', port: 5055 });
  t.equal(c.cache.dir, '/var/cache/pullthrough');
  t.equal(c.cache.maxSize, 100 * GiB);
  t.equal(c.cache.tagTtlMs, 120_000);
  t.equal(c.upstreams.length, 3);
  t.same(c.upstreams[0], {
    name: 'docker.io',
    url: 'https://registry-1.docker.io',
    type: 'dockerhub',
    aliases: ['index.docker.io'],
    username: 'alice',
    password: 's3cret',
  });
  t.same(c.upstreams[1], { name: 'ghcr.io', url: 'https://ghcr.io', type: 'ghcr', aliases: [], username: undefined, password: undefined });
  t.same(c.upstreams[2], { name: 'mirror.local:5000', url: 'http://mirror.local:5000', type: 'registry', aliases: [], username: undefined, password: undefined });
  t.equal(c.defaultUpstream, 'ghcr.io');
  t.same(c.timeouts, { connectMs: 1000, headersMs: 500, bodyMs: 60_000 });
  t.equal(c.retries, 3);
  t.equal(c.logLevel, 'debug');
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.upstreams) && Object.isFrozen(c.upstreams[0]), 'frozen');
}
type Tap = { same: typeof t.same; equal: typeof t.equal; ok: typeof t.ok };

/** The ConfigError loadConfig throws, or undefined when it does not throw one. */
function configError(flags: Flags, env: NodeJS.ProcessEnv = {}): ConfigError | undefined {
  try {
    loadConfig(flags, env);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  return undefined;
}

t.test('a YAML file in the documented shape gives typed values', async (t) => {
  checkDocumentedShape(t, loadConfig({ config: await file(YAML_DOC) }, ENV));
});

t.test('the same as JSON', async (t) => {
  checkDocumentedShape(t, loadConfig({ config: await file(JSON_DOC, 'json') }, ENV));
});

t.test('flags override the file', async (t) => {
  const config = await file(YAML_DOC);
  const c = loadConfig(
    { config, listen: '[::1]:6000', cacheDir: 'rel/cache', maxSize: '2GiB', upstream: ['quay=https://quay.io', 'http://127.0.0.1:5001'], logLevel: 'warn' },
    ENV,
  );
  t.same(c.listen, { host: '::1', port: 6000 });
  t.equal(c.cache.dir, resolve('rel/cache'), 'cache dir is made absolute');
  t.equal(c.cache.maxSize, 2 * GiB);
  t.equal(c.logLevel, 'warn');
  t.same(
    c.upstreams.map((u) => [u.name, u.url, u.type]),
    [
      ['quay', 'https://quay.io', 'registry'],
      ['127.0.0.1:5001', 'http://127.0.0.1:5001', 'registry'],
    ],
    "--upstream replaces the file's upstreams",
  );
  t.equal(c.defaultUpstream, 'quay', 'the first --upstream is the default, not the file defaultUpstream');
  t.equal(c.cache.tagTtlMs, 120_000, 'unflagged file values stay');
});

t.test('--upstream forms', async (t) => {
  const cases: [string, { name: string; url: string; type: string }][] = [
    ['hub=https://registry-1.docker.io', { name: 'hub', url: 'https://registry-1.docker.io', type: 'dockerhub' }],
    ['https://ghcr.io', { name: 'ghcr.io', url: 'https://ghcr.io', type: 'ghcr' }],
    ['http://127.0.0.1:5001', { name: '127.0.0.1:5001', url: 'http://127.0.0.1:5001', type: 'registry' }],
    ['local=http://localhost:5001/', { name: 'local', url: 'http://localhost:5001', type: 'registry' }],
    ['registry.example.com', { name: 'registry.example.com', url: 'https://registry.example.com', type: 'registry' }],
    ['https://registry-1.docker.io', { name: 'docker.io', url: 'https://registry-1.docker.io', type: 'dockerhub' }],
    ['https://host.example/path?x=1', { name: 'host.example', url: 'https://host.example', type: 'registry' }],
  ];
  for (const [spec, want] of cases) {
    const c = loadConfig({ upstream: [spec] }, {});
    t.same({ name: c.upstreams[0]!.name, url: c.upstreams[0]!.url, type: c.upstreams[0]!.type }, want, spec);
    t.equal(c.defaultUpstream, want.name, `${spec}: default`);
  }
});

t.test('--upstream takes a type after a comma: [NAME=]URL[,type=TYPE]', async (t) => {
  const cases: [string, { name: string; url: string; type: string }][] = [
    ['docker.io=https://hub-mirror.internal,type=dockerhub', { name: 'docker.io', url: 'https://hub-mirror.internal', type: 'dockerhub' }],
    ['hub=https://hub-mirror.internal,type=dockerhub', { name: 'hub', url: 'https://hub-mirror.internal', type: 'dockerhub' }],
    ['https://hub-mirror.internal,type=dockerhub', { name: 'docker.io', url: 'https://hub-mirror.internal', type: 'dockerhub' }],
    ['http://127.0.0.1:5001,type=ecr', { name: '127.0.0.1:5001', url: 'http://127.0.0.1:5001', type: 'ecr' }],
    ['ghcr.io=https://ghcr.io,type=registry', { name: 'ghcr.io', url: 'https://ghcr.io', type: 'registry' }],
    // without a type, a mirror named docker.io is Docker Hub by its name
    ['docker.io=https://hub-mirror.internal', { name: 'docker.io', url: 'https://hub-mirror.internal', type: 'dockerhub' }],
    ['docker.io=http://127.0.0.1:5001/', { name: 'docker.io', url: 'http://127.0.0.1:5001', type: 'dockerhub' }],
  ];
  for (const [spec, want] of cases) {
    const u = loadConfig({ upstream: [spec] }, {}).upstreams[0]!;
    t.same({ name: u.name, url: u.url, type: u.type }, want, spec);
  }
  const bad: [string, string, RegExp][] = [
    ['docker.io=https://hub-mirror.internal,type=quay', '--upstream #1.type', /"quay" is not one of registry, dockerhub, ecr, gar, ghcr/],
    ['docker.io=https://hub-mirror.internal,type=', '--upstream #1.type', /is not one of/],
    ['docker.io=https://hub-mirror.internal,kind=dockerhub', '--upstream #1', /"kind" is not an option \(type=TYPE\)/],
    ['docker.io=https://hub-mirror.internal,type', '--upstream #1', /type needs a value \(type=TYPE\)/],
    ['docker.io=https://hub-mirror.internal,type=dockerhub,type=registry', '--upstream #1', /type is given twice/],
    ['docker.io=https://hub-mirror.internal,password=hunter2', '--upstream #1', /^--upstream #1: "password" is not an option \(type=TYPE\)$/],
    ['docker.io=https://hub-mirror.internal,name=x', '--upstream #1', /"name" is not an option/],
  ];
  for (const [spec, key, message] of bad) {
    const e = configError({ upstream: [spec] });
    t.equal(e?.key, key, `${spec}: key`);
    t.match(e?.message, message, `${spec}: message`);
  }
  t.equal(configError({ upstream: ['https://ghcr.io', 'x=https://quay.io,type=nope'] })?.key, '--upstream #2.type', 'the flag is counted');
  t.notMatch(configError({ upstream: ['https://u:hunter2@reg.example,type=x'] })?.message ?? '', 'hunter2', 'a URL with credentials is never echoed');
});

t.test('upstreamSpec writes an upstream as --upstream reads it, with its type', async (t) => {
  const c = loadConfig({ config: await file(YAML_DOC) }, ENV);
  t.same(c.upstreams.map(upstreamSpec), ['docker.io=https://registry-1.docker.io,type=dockerhub', 'ghcr.io=https://ghcr.io,type=ghcr', 'mirror.local:5000=http://mirror.local:5000,type=registry']);
  const again = loadConfig({ upstream: c.upstreams.map(upstreamSpec) }, {});
  t.same(again.upstreams.map((u) => [u.name, u.url, u.type]), c.upstreams.map((u) => [u.name, u.url, u.type]), 'read back unchanged');
});

t.test('Docker Hub is the default upstream when none is configured', async (t) => {
  for (const [name, c] of [
    ['no file, no flags', loadConfig({}, {})],
    ['file without upstreams', loadConfig({ config: await file('listen: 127.0.0.1:5000\n') }, {})],
    ['empty file', loadConfig({ config: await file('') }, {})],
  ] as const) {
    t.equal(c.upstreams.length, 1, `${name}: one upstream`);
    const hub = c.upstreams[0]!;
    t.equal(hub.name, 'docker.io', name);
    t.equal(hub.url, 'https://registry-1.docker.io', name);
    t.equal(hub.type, 'dockerhub', name);
    t.ok(hub.aliases.includes('docker.io') || hub.name === 'docker.io', `${name}: docker.io routes here`);
    t.ok(hub.aliases.includes('index.docker.io'), `${name}: index.docker.io alias`);
    t.equal(c.defaultUpstream, 'docker.io', name);
    t.equal(hub.username, undefined);
  }
  const c = loadConfig({}, {});
  t.same(c.listen, { host: '0.0.0.0', port: 5000 }, 'default listen');
  t.equal(c.cache.maxSize, 50 * GiB, 'default size bound');
  t.equal(c.cache.revalidateTimeoutMs, 3_000, 'a cached tag waits at most 3 s for its revalidation');
  t.equal(c.cache.fillOnRange, true, 'a Range on a miss fills the blob in the background');
  t.equal(c.cache.maxAgeMs, undefined, 'no age bound unless one is set');
  t.equal(c.estargz.maxSparseSize, 5 * GiB, 'sparse eStargz copies: a tenth of the size bound');
  t.equal(loadConfig({ maxSize: '10GiB' }, {}).estargz.maxSparseSize, 1 * GiB, 'which follows --max-size');
  t.equal(loadConfig({}, { XDG_CACHE_HOME: '/xdg' }).cache.dir, '/xdg/pullthrough', 'XDG_CACHE_HOME is honoured');
});

t.test('cache.maxAge: a duration of at least a minute', async (t) => {
  t.equal(loadConfig({ config: await file('cache:\n  maxAge: 30d\n') }, {}).cache.maxAgeMs, 30 * 86_400_000, '30d');
  t.equal(loadConfig({ config: await file('cache:\n  maxAge: 1m\n') }, {}).cache.maxAgeMs, 60_000, '1m, the shortest');
  t.match(configError({ config: await file('cache:\n  maxAge: 59s\n') })?.message, /^cache\.maxAge: must be at least 1m/, 'shorter: a ConfigError naming the key');
});

t.test('metrics.repositoryLabels: off unless set; a boolean', async (t) => {
  t.equal(loadConfig({}, {}).metrics.repositoryLabels, false, 'off by default: label values stay bounded');
  t.equal(loadConfig({ config: await file('metrics:\n  repositoryLabels: true\n') }, {}).metrics.repositoryLabels, true);
  t.match(configError({ config: await file('metrics:\n  repositoryLabels: lots\n') })?.message, /^metrics\.repositoryLabels: /, 'not a boolean: a ConfigError naming the key');
  t.match(configError({ config: await file('metrics:\n  port: 9090\n') })?.message, /^metrics\.port: /, 'an unknown key under metrics');
});

t.test('env references', async (t) => {
  const config = await file(`
upstreams:
  - url: \${REG_URL}
    username: \${REG_USER}
    password: pre-\${REG_PASS}-post
  - url: https://ghcr.io
    username: \${GH_USER}
    password: \${GH_TOKEN}
cache:
  dir: \${CACHE_ROOT}/pt
`);
  const c = loadConfig({ config }, { REG_URL: 'https://reg.example:8443', REG_USER: 'bob', REG_PASS: 'pw', CACHE_ROOT: '/srv' });
  t.equal(c.upstreams[0]!.url, 'https://reg.example:8443', 'in a url');
  t.equal(c.upstreams[0]!.name, 'reg.example:8443', 'the name follows the expanded url');
  t.equal(c.upstreams[0]!.username, 'bob');
  t.equal(c.upstreams[0]!.password, 'pre-pw-post', 'inside a string');
  t.equal(c.cache.dir, '/srv/pt');
  t.equal(c.upstreams[1]!.username, undefined, 'unset → absent username');
  t.equal(c.upstreams[1]!.password, undefined, 'unset → absent password');

  const anon = await file(`
upstreams:
  - url: https://registry-1.docker.io
    username: \${NOPE_USER}
    password: \${NOPE_PASS}
`);
  const a = loadConfig({ config: anon }, {});
  t.equal(a.upstreams[0]!.username, undefined, 'both unset: anonymous');
  t.equal(a.upstreams[0]!.password, undefined);
  t.notMatch(JSON.stringify(a), '${', 'no unexpanded references survive');

  const half = await file(`
upstreams:
  - url: https://registry-1.docker.io
    username: \${SET_USER}
    password: \${UNSET_PASS}
`);
  t.equal(configError({ config: half }, { SET_USER: 'x' })?.key, 'upstreams[0].password', 'a username without a password is an error');
});

t.test('bad values raise a ConfigError naming the key', async (t) => {
  const cases: [string, string, string, NodeJS.ProcessEnv?][] = [
    ['size', 'cache:\n  maxSize: lots\n', 'cache.maxSize'],
    ['zero size', 'cache:\n  maxSize: 0\n', 'cache.maxSize'],
    ['size unit', 'cache:\n  maxSize: 10 parsecs\n', 'cache.maxSize'],
    ['second url', 'upstreams:\n  - url: https://ghcr.io\n  - url: ftp://x\n', 'upstreams[1].url'],
    ['missing url', 'upstreams:\n  - name: x\n', 'upstreams[0].url'],
    ['url with credentials', 'upstreams:\n  - url: https://u:p@reg.example\n', 'upstreams[0].url'],
    ['empty url from env', 'upstreams:\n  - url: ${UNSET_URL}\n', 'upstreams[0].url'],
    ['type', 'upstreams:\n  - url: https://quay.io\n    type: quay\n', 'upstreams[0].type'],
    ['upstream not a mapping', 'upstreams:\n  - https://quay.io\n', 'upstreams[0]'],
    ['upstreams not a list', 'upstreams: https://quay.io\n', 'upstreams'],
    ['bad name', 'upstreams:\n  - url: https://quay.io\n    name: "../x"\n', 'upstreams[0].name'],
    ['duplicate name', 'upstreams:\n  - url: https://a.example\n    name: x.io\n  - url: https://b.example\n    name: x.io\n', 'upstreams[1].name'],
    ['default', 'upstreams:\n  - url: https://ghcr.io\ndefaultUpstream: quay.io\n', 'defaultUpstream'],
    ['listen', 'listen: nowhere\n', 'listen'],
    ['listen port', 'listen: 0.0.0.0:70000\n', 'listen'],
    ['cache not a mapping', 'cache: /tmp\n', 'cache'],
    ['tagTtl', 'cache:\n  tagTtl: soon\n', 'cache.tagTtl'],
    ['maxAge', 'cache:\n  maxAge: a month\n', 'cache.maxAge'],
    ['maxAge too short', 'cache:\n  maxAge: 30s\n', 'cache.maxAge'],
    ['timeout', 'timeouts:\n  body: forever\n', 'timeouts.body'],
    ['retries', 'retries: 99\n', 'retries'],
    ['not YAML', 'cache: {dir: /x\nlisten: [\n', '--config'],
    ['duplicate keys', 'listen: 1.2.3.4:5\nlisten: 1.2.3.4:6\n', '--config'],
    // a misspelt key is an error, not a silently used default
    ['unknown top-level key', 'upstream:\n  - url: https://ghcr.io\n', 'upstream'],
    ['unknown cache key', 'cache:\n  maxsize: 1GiB\n', 'cache.maxsize'],
    ['unknown upstream key', 'upstreams:\n  - url: https://ghcr.io\n    passwd: x\n', 'upstreams[0].passwd'],
    ['unknown timeouts key', 'timeouts:\n  idle: 5s\n', 'timeouts.idle'],
    ['unknown estargz key', 'estargz:\n  lazzy: false\n', 'estargz.lazzy'],
  ];
  for (const [name, text, key, env] of cases) {
    const e = configError({ config: await file(text) }, env ?? {});
    t.ok(e, `${name}: throws ConfigError`);
    t.equal(e?.key, key, `${name}: key`);
    t.ok(e?.message.startsWith(`${key}: `), `${name}: message names ${key}: ${e?.message}`);
  }
  t.equal(configError({ config: join(dir, 'missing.yml') })?.key, '--config', 'unreadable file');
  t.equal(configError({ listen: 'bad' })?.key, '--listen', 'bad --listen flag');
  t.equal(configError({ maxSize: '-1' })?.key, '--max-size', 'bad --max-size flag');
  t.equal(configError({ upstream: ['ftp://x'] })?.key, '--upstream #1.url', 'bad --upstream flag');
});

t.test('a config whose root is not a mapping is a ConfigError', async (t) => {
  for (const [name, text] of [
    ['bare string', 'just a string\n'],
    ['list', '- listen: 1.2.3.4:5\n- cache: {}\n'],
    ['number', '42\n'],
    ['JSON array', '[{"listen": "1.2.3.4:5"}]'],
  ]) {
    const e = configError({ config: await file(text!) });
    t.ok(e, `${name}: throws ConfigError`);
    t.equal(e?.key, '--config', `${name}: names --config`);
  }
});

t.test('size and duration parsing', async (t) => {
  const sizes: [unknown, number][] = [
    ['100GiB', 100 * GiB],
    ['500MB', 500e6],
    ['1.5KiB', 1536],
    ['123', 123],
    [4096, 4096],
    ['2 tb', 2e12],
  ];
  for (const [v, want] of sizes) t.equal(parseSize(v, 'k'), want, String(v));
  for (const v of ['', 'GiB', '-5', '5 XB', null, {}, -1, 0, Infinity]) t.throws(() => parseSize(v, 'k'), ConfigError, String(v));
  const durations: [unknown, number][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['1d', 86_400_000],
    [2, 2000],
  ];
  for (const [v, want] of durations) t.equal(parseDuration(v, 'k'), want, String(v));
  for (const v of ['5', '5 weeks', 'later', -1, null]) t.throws(() => parseDuration(v, 'k'), ConfigError, String(v));
});

function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolvePromise({ code, stdout, stderr });
    });
  });
}

t.test('the CLI rejects bad configs with exit code 2 and one line naming the key', async (t) => {
  const cases: [string, string][] = [
    ['cache:\n  maxSize: lots\n', 'cache.maxSize'],
    ['upstreams:\n  - url: https://ghcr.io\n  - url: ftp://x\n', 'upstreams[1].url'],
    ['- not\n- a mapping\n', '--config'],
  ];
  for (const [text, key] of cases) {
    const r = await runCli(['serve', '--config', await file(text)]);
    t.equal(r.code, 2, `${key}: exit code 2`);
    const lines = r.stderr.split('\n').filter((l) => l.length > 0);
    t.equal(lines.length, 1, `${key}: one stderr line: ${JSON.stringify(r.stderr)}`);
    t.match(lines[0], new RegExp(`^pullthrough: config: ${key.replace(/[[\].]/g, '\\$&')}: `), `${key}: names the key`);
    t.equal(r.stdout, '', `${key}: nothing on stdout`);
  }
});

/** Starts `pullthrough serve` with `args` and resolves with its 'pullthrough ready' log line, then stops it. */
function readyLine(args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'serve', '--listen', '127.0.0.1:0', '--cache-dir', join(dir, 'ready-cache'), ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH, HOME: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => l.includes('"pullthrough ready"'));
      if (line) {
        child.kill('SIGKILL');
        resolvePromise(JSON.parse(line) as Record<string, unknown>);
      }
    });
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      reject(new Error(`no ready line: ${out}${err}`));
    });
  });
}

t.test("the ready log line shows each upstream's type, in --upstream's syntax", async (t) => {
  const ready = await readyLine(['--upstream', 'docker.io=http://127.0.0.1:9', '--upstream', 'ghcr.io=https://ghcr.io', '--upstream', 'mirror=https://ghcr.io,type=registry', '--upstream', 'quay.io']);
  t.same(ready.upstreams, [
    'docker.io=http://127.0.0.1:9,type=dockerhub',
    'ghcr.io=https://ghcr.io,type=ghcr',
    'mirror=https://ghcr.io,type=registry',
    'quay.io=https://quay.io,type=registry',
  ]);
  t.equal(ready.defaultUpstream, 'docker.io');
});
