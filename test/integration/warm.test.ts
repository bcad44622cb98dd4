// `pullthrough warm` against pullthrough in front of a real docker-registry (behind a counting hop):
// it fetches exactly the blobs of the platforms asked, each once, and a real client (skopeo)
// pulling afterwards makes no upstream blob request. Its output: plain lines when stdout is not a
// terminal, bars when it is (under script(1)); its exit code when an image is unknown.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { startHop, type Hop } from '../helpers/hop.js';
import { makeImage, makeMultiPlatformImage, pullImage, pushLayout, type BuiltImage } from '../helpers/images.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const BLOB_GET = { method: 'GET', pathIncludes: '/blobs/sha256:' } as const;

const work = await makeTempDir('pullthrough-warm-');
t.teardown(() => removeDir(work));
const multi = await makeMultiPlatformImage({ layers: 3, layerBytes: 300 << 10, seed: 'warm-multi', dir: join(work, 'multi') });
const single = await makeImage({ layers: 2, layerBytes: 200 << 10, seed: 'warm-single', dir: join(work, 'single') });
const [amd64, arm64] = multi.images as [BuiltImage, BuiltImage];

const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
// the registry stands in for an internal Docker Hub mirror: library/ is where bare names go
await pushLayout(multi.dir, `${registry.host}/library/app:v1`, { all: true });
await pushLayout(single.dir, `${registry.host}/team/tool:v2`);

const blobsOf = (...images: BuiltImage[]): string[] => images.flatMap((i) => [i.config.digest, ...i.layers.map((l) => l.digest)]).sort();
/** the digests of the blobs the hop saw GETs for, each as often as it was asked */
const blobGets = (hop: Hop): string[] =>
  hop.log.filter((e) => e.method === 'GET' && /\/blobs\/sha256:/.test(e.path)).map((e) => /sha256:[a-f0-9]{64}/.exec(e.path)![0]).sort();

interface Env {
  hop: Hop;
  proxy: Proxy;
}

/** A fresh pullthrough (empty cache) whose upstreams docker.io and ghcr.io are the hop to the registry. */
async function setup(t: Test): Promise<Env> {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  // named docker.io, the mirror gets Docker Hub's rules; ghcr.io at this URL is a plain registry
  const proxy = await startProxy({ upstream: [`docker.io=${hop.url}`, `ghcr.io=${hop.url}`], configDoc: { retries: 0 } });
  t.teardown(() => proxy.stop());
  return { hop, proxy };
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `pullthrough warm ARGS` as the CLI, its stdout a pipe; with `tty`, under script(1), whose pty is its stdout. */
function warmCli(args: string[], o: { tty?: boolean } = {}): Promise<Run> {
  const argv = [process.execPath, '--import', 'tsx', 'src/cli.ts', 'warm', ...args];
  const [cmd, cmdArgs] = o.tty ? ['script', ['-qefc', argv.map(shellQuote).join(' '), '/dev/null']] : [argv[0]!, argv.slice(1)];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, cmdArgs, { cwd: ROOT, env: { PATH: process.env.PATH, HOME: work, TERM: 'xterm', COLUMNS: '160' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

t.test('warm fetches the asked platform of each image once; a skopeo pull afterwards makes no upstream blob request', async (t) => {
  const { hop, proxy } = await setup(t);
  const r = await warmCli(['--server', proxy.url, 'app:v1', 'ghcr.io/team/tool:v2']);
  t.equal(r.code, 0, `exit code 0: ${r.stderr}`);
  t.equal(r.stderr, '', 'nothing on stderr');
  t.same(blobGets(hop), blobsOf(amd64, ...single.images), 'linux/amd64 (the default) and the single image: each blob fetched upstream once, no arm64 blob');

  const lines = r.stdout.trimEnd().split('\n');
  const resolvedLines = [
    `app:v1: index ${multi.index!.digest} → linux/amd64 ${amd64.manifest.digest}; 4 blobs, `,
    `ghcr.io/team/tool:v2: ${single.images[0]!.manifest.digest}; 3 blobs, `,
    'fetching 7 blobs (',
  ];
  for (const want of resolvedLines) t.ok(lines.some((l) => l.startsWith(want)), `a line: ${want}`);
  for (const d of blobsOf(amd64, ...single.images)) {
    t.ok(lines.some((l) => l.startsWith(`verified ${d.slice(0, 19)} `)), `a verified line for ${d.slice(0, 19)}`);
  }
  const last = lines.at(-1)!;
  t.match(last, /^warmed 2 images: 7 blobs verified, [0-9.]+ (KiB|MiB) in \d+s \([0-9.]+ (B|KiB|MiB)\/s\)$/, 'the summary');
  t.match(lines.find((l) => l.startsWith('verified'))!, /^verified sha256:[a-f0-9]{12} [0-9.]+ (B|KiB|MiB) (app:v1 linux\/amd64|ghcr\.io\/team\/tool:v2) (config|layer \d\/\d) \[1\/7 blobs, [0-9.]+ \w+ of [0-9.]+ MiB \(\d+%\), [0-9.]+ \w+\/s, ETA \S+\]$/, 'a progress line: bytes, rate, ETA');
  t.notOk(r.stdout.includes('\x1b['), 'no terminal control sequences in plain output');

  hop.reset();
  const pulled = await pullImage(`${proxy.host}/app:v1`, join(work, 'pull-amd64'), { platform: { os: 'linux', architecture: 'amd64' } });
  t.same(pulled.images.map((i) => i.manifest.digest), [amd64.manifest.digest], 'skopeo pulls the amd64 image');
  const tool = await pullImage(`${proxy.host}/ghcr.io/team/tool:v2`, join(work, 'pull-tool'));
  t.same(tool.allDigests, single.allDigests, 'and the single image, every digest as pushed');
  t.equal(hop.count(BLOB_GET), 0, 'no upstream blob request after warm');

  // the host:port/repo@digest form: the hop's own host routes to the upstream at that URL
  hop.reset();
  const byDigest = await warmCli(['--server', proxy.url, `${hop.host}/library/app@${arm64.manifest.digest}`]);
  t.equal(byDigest.code, 0, `by digest: exit code 0: ${byDigest.stderr}`);
  t.same(blobGets(hop), blobsOf(arm64), 'by digest: exactly the arm64 image');
  hop.reset();
  const all = await pullImage(`${proxy.host}/app:v1`, join(work, 'pull-all'), { all: true });
  t.same(all.allDigests, multi.allDigests, 'skopeo --all gets every digest');
  t.equal(hop.count(BLOB_GET), 0, 'with no upstream blob request');
});

t.test('--all-platforms warms every image of the index; --platform picks among them', async (t) => {
  const { hop, proxy } = await setup(t);
  const r = await warmCli(['--server', proxy.url, 'docker.io/library/app:v1', '--platform', 'linux/arm64/v8']);
  t.equal(r.code, 0, r.stderr);
  t.same(blobGets(hop), blobsOf(arm64), 'linux/arm64/v8 is the index entry for linux/arm64');
  hop.reset();
  const all = await warmCli(['--server', proxy.url, 'app:v1', '--all-platforms']);
  t.equal(all.code, 0, all.stderr);
  t.same(blobGets(hop), blobsOf(amd64), 'all platforms: only the amd64 blobs were still missing');
  t.match(all.stdout, /warmed 1 image: 8 blobs verified/, 'and all 8 of both images were verified');
  hop.reset();
  await pullImage(`${proxy.host}/app:v1`, join(work, 'pull-all-2'), { all: true });
  t.equal(hop.count(BLOB_GET), 0, 'a pull of every platform makes no upstream blob request');
});

t.test('an unknown image, a missing platform or an unreachable server: exit code 1 with a message each; the rest is warmed', async (t) => {
  const { hop, proxy } = await setup(t);
  const r = await warmCli(['--server', proxy.url, 'nope:v1', 'ghcr.io/team/tool:v2', 'app:v1', '--platform', 'linux/s390x']);
  t.equal(r.code, 1, 'exit code 1');
  const errors = r.stderr.trimEnd().split('\n');
  t.match(errors, [
    /^pullthrough warm: nope:v1: the server answered 404 MANIFEST_UNKNOWN: .* for the manifest v1$/,
    new RegExp(`^pullthrough warm: app:v1: its index ${multi.index!.digest} has no image for linux/s390x \\(it has linux/amd64, linux/arm64\\)$`),
  ]);
  t.equal(errors.length, 2, 'one line per failed image');
  t.match(r.stdout, /^warmed 1 of 3 images: 3 blobs verified/m, 'the summary counts what was warmed');
  t.same(blobGets(hop), blobsOf(...single.images), 'the image that exists was warmed');

  const down = await warmCli(['--server', 'http://127.0.0.1:9', 'alpine:3.20']);
  t.equal(down.code, 1);
  t.match(down.stderr, /^pullthrough warm: alpine:3.20: cannot reach the server at http:\/\/127\.0\.0\.1:9: .*ECONNREFUSED/);
});

t.test('usage errors exit with code 2', async (t) => {
  for (const args of [[], ['--platform', 'linux', 'alpine'], ['Alpine:3'], ['alpine', '--all-platforms', '--platform', 'linux/amd64'], ['alpine', '--concurrency', '0'], ['alpine', '--server', 'ftp://x'], ['alpine', '--bogus']]) {
    const r = await warmCli(args);
    t.equal(r.code, 2, `${args.join(' ')}: exit code 2`);
    t.match(r.stderr, /^pullthrough warm: .+\nusage: pullthrough warm/, `${args.join(' ')}: a message, then the usage`);
  }
});

t.test('on a terminal: a bar per layer and a total, then the summary', async (t) => {
  const { proxy } = await setup(t);
  const r = await warmCli(['--server', proxy.url, 'app:v1', '--concurrency', '2'], { tty: true });
  t.equal(r.code, 0, r.stdout);
  const text = r.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
  t.match(text, /total \(\d\/4 blobs\)\s+[█░]{24}\s+\d+%/, 'a total bar');
  t.match(text, /sha256:[a-f0-9]{12} app:v1 linux\/amd64 (config|layer \d\/3)\s+[█░]{24}/, 'a bar for a blob');
  t.match(text, new RegExp(`✓ ${amd64.layers[0]!.digest.slice(0, 19)} [0-9.]+ KiB app:v1 linux/amd64 layer 1/3`), 'a line per verified blob');
  t.match(text, /warmed 1 image: 4 blobs verified/, 'the summary');
  t.ok(r.stdout.includes('\x1b[?25l') && r.stdout.includes('\x1b[?25h'), 'the cursor is hidden while bars run, and shown again');
});

