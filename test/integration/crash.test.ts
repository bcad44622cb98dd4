// pullthrough as a separate process (the CLI, run from src with tsx): killed with SIGKILL in the
// middle of fills, restarted on the same cache directory; then `pullthrough verify` against a
// blob corrupted on disk.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { request } from 'undici';
import { startHop } from '../helpers/hop.js';
import { makeImage, pullImage, pushLayout, type Descriptor } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { atExit, freePort, makeTempDir, removeDir, waitFor } from '../helpers/util.js';

const MiB = 1 << 20;
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The kernel kills the child if this test process dies first (see helpers/registry.ts). */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

const work = await makeTempDir('pullthrough-crash-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 3, layerBytes: 6 * MiB, seed: 'crash', dir: join(work, 'image') });
const layers = image.images[0]!.layers;
const other = await makeImage({ layers: 1, layerBytes: 4 * MiB, seed: 'crash-other', dir: join(work, 'other') });

const hexOf = (digest: string): string => digest.slice('sha256:'.length);
const blobFile = (cacheDir: string, digest: string): string => join(cacheDir, 'blobs', 'sha256', hexOf(digest).slice(0, 2), hexOf(digest));
const sha256 = (data: Buffer): string => `sha256:${createHash('sha256').update(data).digest('hex')}`;
const exists = (path: string): Promise<boolean> => stat(path).then(() => true, () => false);

/** Every file under <cacheDir>/blobs, with what it hashes to. */
async function cachedBlobs(cacheDir: string): Promise<{ name: string; digest: string }[]> {
  const out: { name: string; digest: string }[] = [];
  for (const e of await readdir(join(cacheDir, 'blobs'), { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.push({ name: `sha256:${e.name}`, digest: sha256(await readFile(join(e.parentPath, e.name))) });
  }
  return out;
}

const live = new Set<ChildProcess>();
atExit(() => {
  for (const child of live) child.kill('SIGKILL');
});

/** Runs `node --import tsx src/cli.ts <args>` from the repository root. */
function cli(args: string[]): ChildProcess {
  const argv = ['--import', 'tsx', 'src/cli.ts', ...args];
  const [cmd, cmdArgs] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'SIGKILL', '--', process.execPath, ...argv]] : [process.execPath, argv];
  const child = spawn(cmd, cmdArgs, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  child.once('exit', () => live.delete(child));
  return child;
}

function exited(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

/** A one-shot CLI command: exit code and output, killed after `timeoutMs`. */
async function runCli(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = cli(args);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await exited(child);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

interface Server {
  url: string;
  host: string;
  child: ChildProcess;
  output(): string;
  kill(signal: NodeJS.Signals): Promise<void>;
}

/** `pullthrough serve` on a free port, resolved once /v2/ answers. */
async function serve(cacheDir: string, upstream: string): Promise<Server> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const child = cli(['serve', '--listen', `127.0.0.1:${port}`, '--cache-dir', cacheDir, '--upstream', `up.test=${upstream}`, '--log-level', 'warn']);
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const died = new AbortController();
    child.once('exit', (code, signal) => died.abort(new Error(`pullthrough exited (${signal ?? code})`)));
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor(
        async () => {
          const res = await request(`${url}/v2/`, { signal: AbortSignal.timeout(1000) });
          await res.body.dump();
          return res.statusCode === 200;
        },
        { timeoutMs: 30_000, intervalMs: 100, what: `pullthrough on ${url}`, signal: died.signal },
      );
    } catch (e) {
      child.kill('SIGKILL');
      await exited(child);
      if (attempt < 3 && output.includes('EADDRINUSE')) continue;
      throw new Error(`${e instanceof Error ? e.message : String(e)}\n${output}`);
    }
    return {
      url,
      host: `127.0.0.1:${port}`,
      child,
      output: () => output,
      kill: async (signal) => {
        child.kill(signal);
        await exited(child);
      },
    };
  }
}

/** Rejects if `p` takes longer than `ms`: a hang fails the test instead of stalling it. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** GETs a blob, hashing the body; a broken body is reported, not thrown. */
async function fetchBlob(url: string): Promise<{ status: number; digest: string; length: number; error?: string }> {
  try {
    const res = await request(url);
    const hash = createHash('sha256');
    let length = 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        length += chunk.length;
      }
    } catch (e) {
      return { status: res.statusCode, digest: '', length, error: (e as Error).message };
    }
    return { status: res.statusCode, digest: `sha256:${hash.digest('hex')}`, length };
  } catch (e) {
    return { status: 0, digest: '', length: 0, error: (e as Error).message };
  }
}

const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(image.dir, `${registry.host}/team/app:v1`);
await pushLayout(other.dir, `${registry.host}/team/other:v1`);

t.test('SIGKILL mid-fill, restart on the same cache dir; then verify finds a blob corrupted on disk', async (t) => {
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const cacheDir = await makeTempDir('pullthrough-crash-cache-');
  t.teardown(() => removeDir(cacheDir));
  const blobUrl = (server: Server, l: Descriptor) => `${server.url}/v2/team/app/blobs/${l.digest}`;

  // 1. fills of every layer, throttled upstream so they are all mid-way when the process dies
  const first = await serve(cacheDir, hop.url);
  t.teardown(() => first.kill('SIGKILL'));
  Object.assign(hop.faults, { throttleBytesPerSec: 2 * MiB }); // ~3 s per layer
  const targets = [...layers, layers[0]!]; // a second client joins the first layer's fill
  const clients = targets.map((l) => fetchBlob(blobUrl(first, l)));
  await waitFor(() => layers.every((l) => hop.log.some((e) => e.path.includes(l.digest) && e.bytes >= MiB)), {
    timeoutMs: 15_000,
    what: 'every layer 1 MiB into its fill',
  });
  const spooled = await waitFor(
    async () => {
      const names = await readdir(join(cacheDir, 'tmp'));
      const sizes = await Promise.all(names.map((n) => stat(join(cacheDir, 'tmp', n)).then((s) => s.size)));
      return sizes.filter((s) => s > 0).length >= layers.length && names;
    },
    { timeoutMs: 5_000, what: 'spool files with data' },
  );
  await first.kill('SIGKILL');
  t.equal(first.child.signalCode, 'SIGKILL', 'killed with SIGKILL mid-fill');
  const broken = await Promise.all(clients);
  t.ok(broken.every((c, i) => c.digest !== targets[i]!.digest), 'no client got a complete blob from the killed process');
  t.ok(layers.every((l) => hop.log.some((e) => e.path.includes(l.digest) && e.bytes < l.size)), 'every fill was cut short');

  const leftovers = await readdir(join(cacheDir, 'tmp'));
  t.ok(leftovers.length >= layers.length, `the kill left ${leftovers.length} spool files in tmp (${spooled.length} seen before)`);
  for (const l of layers) t.notOk(await exists(blobFile(cacheDir, l.digest)), `no blob file for ${l.digest.slice(0, 19)}`);

  // 2. restart on the same directory
  hop.reset(); // no throttle from here on
  const second = await serve(cacheDir, hop.url);
  t.teardown(() => second.kill('SIGTERM'));
  t.same(await readdir(join(cacheDir, 'tmp')), [], 'leftovers removed at start-up');
  const onDisk = await cachedBlobs(cacheDir);
  t.same(onDisk.filter((b) => b.name !== b.digest), [], 'every blob file in the cache hashes to its name');
  for (const l of layers) t.notOk(await exists(blobFile(cacheDir, l.digest)), `still no partial file for ${l.digest.slice(0, 19)}`);

  const pulled = await pullImage(`${second.host}/team/app:v1`, join(work, 'pull'));
  t.same(pulled.allDigests, image.allDigests, 'the pull completes, every digest correct');
  for (const l of layers) {
    t.equal(hop.count({ method: 'GET', pathIncludes: l.digest }), 1, `${l.digest.slice(0, 19)} fetched once, whole`);
    t.ok(await exists(blobFile(cacheDir, l.digest)), `${l.digest.slice(0, 19)} now cached`);
  }
  t.same(await readdir(join(cacheDir, 'tmp')), [], 'tmp is empty once the fills settled');

  // 3. a blob corrupted on disk; verify runs against the live cache while the server has a fill
  // under way, and with a size bound far below what the cache holds (as when serve gets a larger
  // maxSize from its config file than verify does): it removes the bad blob and nothing else
  const victim = layers[1]!;
  const file = blobFile(cacheDir, victim.digest);
  const bytes = await readFile(file);
  bytes[bytes.length >> 1]! ^= 0x01;
  await writeFile(file, bytes);
  const cached = (await cachedBlobs(cacheDir)).map((b) => b.name);
  const otherLayer = other.images[0]!.layers[0]!;
  Object.assign(hop.faults, { throttleBytesPerSec: 384 << 10 }); // ~11 s, so the fill outlasts verify
  const filling = fetchBlob(`${second.url}/v2/team/other/blobs/${otherLayer.digest}`);
  const otherGet = await waitFor(() => hop.log.find((e) => e.path.includes(otherLayer.digest) && e.bytes >= 256 << 10), {
    timeoutMs: 10_000,
    what: 'a fill to be under way',
  });

  const bad = await runCli(['verify', '--cache-dir', cacheDir, '--max-size', '1MB']);
  t.ok(otherGet.bytes < otherLayer.size, `a fill was under way all through verify (${otherGet.bytes} of ${otherLayer.size} bytes when it ended)`);
  t.equal(bad.code, 1, `verify exits 1 when a blob is bad\n${bad.stderr}`);
  t.match(bad.stdout, `bad ${victim.digest}`, 'the output names the bad digest');
  t.match(bad.stdout, new RegExp(`verified ${cached.length} blobs .*: 1 bad`), 'every cached blob was checked, one was bad');
  t.notMatch(bad.stdout, layers[0]!.digest, 'good blobs are not named');
  t.notOk(await exists(file), 'the bad file is removed');
  const missing: string[] = [];
  for (const name of cached) if (name !== victim.digest && !(await exists(blobFile(cacheDir, name)))) missing.push(name);
  t.same(missing, [], 'every good blob is kept (verify does not evict)');

  const clean = await runCli(['verify', '--cache-dir', cacheDir]);
  t.equal(clean.code, 0, `a second verify exits 0\n${clean.stderr}`);
  t.match(clean.stdout, /: 0 bad/);

  const filled = await within(filling, 30_000, 'the fill under way during verify');
  t.equal(filled.digest, otherLayer.digest, `the fill under way during verify completed, correct${filled.error ? ` (${filled.error})` : ''}`);
  t.ok(await exists(blobFile(cacheDir, otherLayer.digest)), 'and was cached: verify left its spool file alone');

  hop.reset();
  const again = await fetchBlob(blobUrl(second, victim));
  t.equal(again.digest, victim.digest, 'the removed blob is fetched again, correct');
  t.equal(hop.count({ method: 'GET', pathIncludes: victim.digest }), 1, 'from the upstream, once');
  t.ok(await exists(file), 'and cached again');
  await second.kill('SIGTERM');
  t.equal(second.child.exitCode, 0, 'SIGTERM: a clean exit');
});
