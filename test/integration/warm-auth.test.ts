// `pullthrough warm --user` against a pullthrough with `auth`, in front of a real docker-registry:
// the password comes from PULLTHROUGH_PASSWORD or from stdin, never from the command line; the
// right user fills the cache (a pull by that user afterwards makes no upstream blob request), a
// wrong password exits 1 with the proxy's 401, a user no rule allows with its 403. The
// credentials go to the --server only (not where it redirects), and no password reaches warm's
// output or the proxy's log.
import { spawn } from 'node:child_process';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable, Writable } from 'node:stream';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { runWarm, type WarmIo } from '../../src/warm/command.js';
import { LeakWatch } from '../helpers/captured-proxy.js';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout, type ImageLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { SECRETS, secretsIn } from '../helpers/secrets.js';
import { makeTempDir, removeDir, run } from '../helpers/util.js';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

interface Warmed {
  code: number;
  stdout: string;
  stderr: string;
}

/** Everything warm wrote, across the file's runs: no secret may be in it (checked last). */
const outputs: string[] = [];

/** runWarm in-process, with this environment (never the test's own) and stdin. */
async function warmIn(args: string[], io: Partial<Pick<WarmIo, 'env' | 'stdin'>> = {}): Promise<Warmed> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runWarm(args, { stdout, stderr, env: io.env ?? {}, stdin: io.stdin ?? Readable.from([]) });
  outputs.push(stdout.text, stderr.text);
  return { code, stdout: stdout.text, stderr: stderr.text };
}

const blobGets = { method: 'GET', pathIncludes: '/blobs/sha256:' } as const;
const blobsOf = (l: ImageLayout): string[] => l.images.flatMap((i) => [i.config.digest, ...i.layers.map((d) => d.digest)]);

const work = await makeTempDir('pullthrough-warm-auth-');
t.teardown(() => removeDir(work));
const [app, tool] = await Promise.all([
  makeImage({ layers: 2, layerBytes: 100 << 10, seed: 'warm-auth-app', dir: join(work, 'app') }),
  makeImage({ layers: 1, layerBytes: 80 << 10, seed: 'warm-auth-tool', dir: join(work, 'tool') }),
]);
const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(app.dir, `${registry.host}/org/app:v1`);
await pushLayout(tool.dir, `${registry.host}/org/tool:v1`);
const hop = await startHop(registry.url);
t.teardown(() => hop.close());

const htpasswd = join(work, 'htpasswd');
const entries = await Promise.all(
  [['alice', SECRETS.alicePassword], ['bob', SECRETS.bobPassword]].map(async ([user, password]) => (await run('htpasswd', ['-Bbn', user!, password!])).stdout.trim()),
);
await writeFile(htpasswd, entries.join('\n') + '\n');
const watch = new LeakWatch();
// the README's rule for alice; bob is in the file and in no rule
const proxy = await watch.proxy(t, {
  configDoc: {
    upstreams: [{ name: 'ghcr.io', url: hop.url }],
    retries: 0,
    auth: { htpasswd, rules: [{ users: ['alice', 'ci'], upstreams: ['ghcr.io'], repositories: ['org/*'] }] },
  },
});
const APP = 'ghcr.io/org/app:v1';

t.test('refused: no user, a wrong password (401), a user no rule allows (403); exit code 1, the upstream never asked', async (t) => {
  const none = await warmIn(['--server', proxy.url, APP]);
  t.equal(none.code, 1, 'no --user: exit code 1');
  t.match(none.stderr, /^pullthrough warm: ghcr\.io\/org\/app:v1: the server answered 401 UNAUTHORIZED: .* for the manifest v1 \(the server wants a user: --user NAME, the password in PULLTHROUGH_PASSWORD\)$/m, 'the 401, and what to do');

  const wrong = await warmIn(['--server', proxy.url, '--user', 'alice', APP], { env: { PULLTHROUGH_PASSWORD: SECRETS.wrongClientPassword } });
  t.equal(wrong.code, 1, 'a wrong password: exit code 1');
  t.match(wrong.stderr, /^pullthrough warm: ghcr\.io\/org\/app:v1: the server answered 401 UNAUTHORIZED: wrong user name or password for the manifest v1$/m, "the proxy's 401 message");

  const bob = await warmIn(['--server', proxy.url, '--user', 'bob', APP], { env: { PULLTHROUGH_PASSWORD: SECRETS.bobPassword } });
  t.equal(bob.code, 1, 'bob: exit code 1');
  t.match(bob.stderr, /^pullthrough warm: ghcr\.io\/org\/app:v1: the server answered 403 DENIED: user "bob" may not pull org\/app from ghcr\.io for the manifest v1$/m, "the proxy's 403 message");
  t.equal(hop.count({ pathIncludes: '/v2/org/' }), 0, 'no refused warm reached the upstream');
});

t.test('the right user, the password in PULLTHROUGH_PASSWORD: the cache is filled, and a pull afterwards makes no upstream blob request', async (t) => {
  hop.reset();
  const r = await warmIn(['--server', proxy.url, '--user', 'alice', APP], { env: { PULLTHROUGH_PASSWORD: SECRETS.alicePassword } });
  t.equal(r.code, 0, `exit code 0: ${r.stderr}`);
  t.match(r.stdout, /^warmed 1 image: 3 blobs verified/m);
  t.same(hop.log.filter((e) => e.method === 'GET' && e.path.includes('/blobs/')).map((e) => /sha256:[a-f0-9]{64}/.exec(e.path)![0]).sort(), blobsOf(app).sort(), 'each blob fetched upstream once');
  hop.reset();
  const pulled = await pullImage(`${proxy.host}/ghcr.io/org/app:v1`, join(work, 'pull-app'), { creds: `alice:${SECRETS.alicePassword}` });
  t.same(pulled.allDigests, app.allDigests, 'skopeo as alice: every digest as pushed');
  t.equal(hop.count(blobGets), 0, 'no upstream blob request after warm');
});

t.test('the password from stdin when PULLTHROUGH_PASSWORD is unset (its first line); never from the command line or a terminal', async (t) => {
  hop.reset();
  const piped = await warmIn(['--server', proxy.url, '--user', 'alice', 'ghcr.io/org/tool:v1'], { stdin: Readable.from([`${SECRETS.alicePassword}\n`, 'ignored second line\n']) });
  t.equal(piped.code, 0, `from stdin: exit code 0: ${piped.stderr}`);
  t.equal(hop.count(blobGets), blobsOf(tool).length, 'its blobs fetched');

  const inline = await warmIn(['--server', proxy.url, '--user', `alice:${SECRETS.alicePassword}`, APP]);
  t.equal(inline.code, 2, 'a password on the command line: a usage error');
  t.match(inline.stderr, /^pullthrough warm: --user takes a user name \(no ":"\); the password goes in PULLTHROUGH_PASSWORD or on stdin\n/);
  const terminal = await warmIn(['--server', proxy.url, '--user', 'alice', APP], { stdin: Object.assign(Readable.from([]), { isTTY: true }) });
  t.equal(terminal.code, 2, 'no variable, stdin a terminal: a usage error');
  t.match(terminal.stderr, /^pullthrough warm: --user alice: set PULLTHROUGH_PASSWORD, or pipe the password on stdin \(a terminal is not read from\)\n/);
  const empty = await warmIn(['--server', proxy.url, '--user', 'alice', APP]);
  t.equal(empty.code, 2, 'nothing on stdin: a usage error');
  t.match(empty.stderr, /^pullthrough warm: --user alice: no password in PULLTHROUGH_PASSWORD nor on stdin\n/);
});

t.test('the CLI reads the password piped to it', async (t) => {
  const argv = ['--import', 'tsx', 'src/cli.ts', 'warm', '--server', proxy.url, '--user', 'alice', APP];
  const r = await new Promise<Warmed>((resolve, reject) => {
    // no PULLTHROUGH_PASSWORD in its environment: the password comes through the pipe
    const child = spawn(process.execPath, argv, { cwd: fileURLToPath(new URL('../..', import.meta.url)), env: { PATH: process.env.PATH, HOME: work }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
    child.stdin.end(`${SECRETS.alicePassword}\n`);
  });
  outputs.push(r.stdout, r.stderr);
  t.equal(r.code, 0, `exit code 0: ${r.stderr}`);
  t.match(r.stdout, /^warmed 1 image: 3 blobs verified/m, 'let in as alice (the proxy refuses anyone else)');
});

t.test('the credentials go to the --server only: where it redirects gets none', async (t) => {
  const seen: { server: IncomingHttpHeaders[]; elsewhere: IncomingHttpHeaders[] } = { server: [], elsewhere: [] };
  const elsewhere = createServer((req, res) => {
    seen.elsewhere.push(req.headers);
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"not here"}]}');
  });
  await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => elsewhere.close(resolve)));
  const elsewhereUrl = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}`;
  const server = createServer((req, res) => {
    seen.server.push(req.headers);
    res.writeHead(307, { location: `${elsewhereUrl}/presigned${req.url}` }).end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const serverUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const r = await warmIn(['--server', serverUrl, '--user', 'alice', APP], { env: { PULLTHROUGH_PASSWORD: SECRETS.alicePassword } });
  t.equal(r.code, 1, 'the redirect target has no such manifest: exit code 1');
  t.match(r.stderr, /404 MANIFEST_UNKNOWN: not here/, 'warm followed the redirect');
  const basic = `Basic ${Buffer.from(`alice:${SECRETS.alicePassword}`).toString('base64')}`;
  t.same(seen.server.map((h) => h.authorization), [basic], 'the server got the credentials');
  t.same(seen.elsewhere.map((h) => h.authorization), [undefined], 'the redirect target did not');
});

t.test("no password in warm's output, the proxy's log, its cache or an error body", async (t) => {
  t.same(secretsIn(outputs.join('\n')), [], `no secret in the ${outputs.length} outputs of warm`);
  await watch.check(t);
});
