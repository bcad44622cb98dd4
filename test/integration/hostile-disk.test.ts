// pullthrough with its cache on a small real tmpfs that runs full or read-only: never a wrong or
// truncated cache entry, a 503 naming the cause (ENOSPC, EROFS) when nothing was sent yet, no
// temporary file left behind, and the next request after space is freed works.
import { randomBytes } from 'node:crypto';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { SparseBlob } from '../../src/cache/sparse-blob.js';
import { parseDigest } from '../../src/oci/digest.js';
import { startHostileRegistry, type HostileRegistry } from '../helpers/hostile-registry.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { mountTmpfs, PAGE, type Tmpfs } from '../helpers/tmpfs.js';
import { waitFor, type Test } from '../helpers/util.js';
import { get, type Got } from '../helpers/whole-get.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

interface Env {
  fs: Tmpfs;
  reg: HostileRegistry;
  proxy: Proxy;
  cacheDir: string;
}

/** A hostile (here: honest) registry behind a pullthrough whose cache is on a fresh tmpfs of `bytes`. */
async function setup(t: Test, bytes = 1 << 20): Promise<Env> {
  const fs = await mountTmpfs(t, bytes);
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  const cacheDir = join(fs.dir, 'cache');
  const proxy = await startProxy({ upstream: [`hostile=${reg.url}`], cacheDir, configDoc: { retries: 0 } });
  t.teardown(() => proxy.stop());
  return { fs, reg, proxy, cacheDir };
}


/** Files anywhere under `dir` (none when it does not exist). */
async function files(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

const blobUrl = (e: Env, digest: string) => `${e.proxy.url}/v2/hostile/lib/x/blobs/${digest}`;
const ociError = (g: Got) => (JSON.parse(g.body.toString('utf8')) as { errors: { code: string; message: string; detail: { reason?: string } }[] }).errors[0];

t.test('the disk fills during the last write: nothing cached, never a complete-looking short blob; works once space is freed', async (t) => {
  const e = await setup(t);
  const leave = 64 * PAGE;
  const blob = randomBytes(leave + 1000); // all but the last write fit; that one is short
  const digest = e.reg.addBlob(blob);
  await e.fs.fill(leave);

  for (const attempt of ['first', 'second']) {
    const res = await get(blobUrl(e, digest));
    t.notOk(res.status < 300 && res.complete, `${attempt} GET: no complete-looking answer (${res.status}, ${res.body.length} of ${res.headers['content-length']} bytes, ${res.error ?? 'no error'})`);
    t.same(await files(join(e.cacheDir, 'blobs')), [], `${attempt} GET: nothing cached`);
    await waitFor(async () => (await files(join(e.cacheDir, 'tmp'))).length === 0, { timeoutMs: 5000, what: 'an empty tmp dir' });
  }

  await e.fs.unfill();
  const res = await get(blobUrl(e, digest));
  t.equal(res.status, 200, 'with space freed: 200');
  t.ok(res.complete && res.body.equals(blob), 'the whole blob, correct');
  const cached = await files(join(e.cacheDir, 'blobs'));
  t.equal(cached.length, 1, 'cached');
  t.equal((await stat(cached[0]!)).size, blob.length, 'at its full size');
});

t.test('a full disk before the first byte: 503 naming ENOSPC, no temp file; the next request after space is freed works', async (t) => {
  const e = await setup(t);
  const blob = randomBytes(100_000);
  const digest = e.reg.addBlob(blob);
  await e.fs.fill(0);
  const full = await get(blobUrl(e, digest));
  t.equal(full.status, 503, 'a status, not an empty reply');
  t.match(ociError(full), { code: 'UNAVAILABLE', message: /disk is full/, detail: { reason: 'ENOSPC' } }, 'an OCI body naming the cause');
  t.same(await files(join(e.cacheDir, 'tmp')), [], 'no spool file left');
  t.same(await files(join(e.cacheDir, 'blobs')), [], 'nothing cached');

  await e.fs.unfill();
  const res = await get(blobUrl(e, digest));
  t.equal(res.status, 200);
  t.ok(res.complete && res.body.equals(blob), 'space freed: the whole blob, correct');
});

t.test('a read-only cache: cached blobs are still served, others get 503 naming EROFS; writable again, it works', async (t) => {
  const e = await setup(t);
  const kept = randomBytes(50_000);
  const keptDigest = e.reg.addBlob(kept);
  t.ok((await get(blobUrl(e, keptDigest))).body.equals(kept), 'one blob cached while writable');
  const blob = randomBytes(50_000);
  const digest = e.reg.addBlob(blob);
  await e.fs.readOnly();

  const cached = await get(blobUrl(e, keptDigest));
  t.ok(cached.status === 200 && cached.complete && cached.body.equals(kept), 'the cached blob is served from the read-only disk');
  const res = await get(blobUrl(e, digest));
  t.equal(res.status, 503);
  t.match(ociError(res), { code: 'UNAVAILABLE', message: /read-only/, detail: { reason: 'EROFS' } }, 'an OCI body naming the cause');

  await e.fs.readWrite();
  const again = await get(blobUrl(e, digest));
  t.equal(again.status, 200);
  t.ok(again.complete && again.body.equals(blob), 'writable again: the whole blob, correct');
});

/** An image manifest with no layers at lib/x:v1 of the registry, and its URL through the proxy. */
function smallManifest(e: Env): { manifest: string; digest: string; url: string } {
  const config = Buffer.from('{}');
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: e.reg.addBlob(config), size: config.length },
    layers: [],
  });
  return { manifest, digest: e.reg.addManifest('lib/x', manifest, OCI_MANIFEST, 'v1'), url: `${e.proxy.url}/v2/hostile/lib/x/manifests/v1` };
}

// With no page free, the metadata record's temp file fails; with one, the record is written and
// the manifest's own temp file fails. Neither may stay behind.
for (const [which, leave] of [['metadata', 0], ['manifest', PAGE]] as const) {
  t.test(`a full disk while keeping a manifest: 503 naming ENOSPC, no ${which} temp file left; works once space is freed`, async (t) => {
    const e = await setup(t);
    const { manifest, digest, url } = smallManifest(e);
    await e.fs.fill(leave);
    const res = await get(url, { accept: OCI_MANIFEST });
    t.equal(res.status, 503);
    t.match(ociError(res), { code: 'UNAVAILABLE', detail: { reason: 'ENOSPC' } }, 'an OCI body naming the cause');
    t.same(await files(join(e.cacheDir, 'tmp')), [], 'no temp file left');

    await e.fs.unfill();
    const ok = await get(url, { accept: OCI_MANIFEST });
    t.equal(ok.status, 200);
    t.equal(ok.headers['docker-content-digest'], digest);
    t.equal(ok.body.toString(), manifest, 'space freed: the manifest');
  });
}

t.test('a read-only cache while keeping a manifest: 503 naming EROFS, nothing left; writable again, it works', async (t) => {
  const e = await setup(t);
  const { manifest, digest, url } = smallManifest(e);
  t.equal((await get(`${e.proxy.url}/v2/`)).status, 200, 'the cache directory is made while writable');
  await e.fs.readOnly();
  for (const ref of ['v1', digest]) {
    const res = await get(`${e.proxy.url}/v2/hostile/lib/x/manifests/${ref}`, { accept: OCI_MANIFEST });
    t.equal(res.status, 503, `by ${ref === 'v1' ? 'tag' : 'digest'}: 503`);
    t.match(ociError(res), { code: 'UNAVAILABLE', message: /read-only/, detail: { reason: 'EROFS' } }, 'an OCI body naming the cause');
  }
  await e.fs.readWrite();
  t.same(await files(join(e.cacheDir, 'tmp')), [], 'no temp file left');
  const ok = await get(url, { accept: OCI_MANIFEST });
  t.equal(ok.status, 200);
  t.equal(ok.headers['docker-content-digest'], digest);
  t.equal(ok.body.toString(), manifest, 'writable again: the manifest');
});

t.test('a sparse copy on a full disk: a short write never counts as present, no temp file left', async (t) => {
  const fs = await mountTmpfs(t, 1 << 20);
  const digest = parseDigest(`sha256:${'cd'.repeat(32)}`);
  const sparse = await SparseBlob.open(fs.dir, digest, 4 << 20);
  t.teardown(() => sparse.close());
  await sparse.write(0, Buffer.from('present'));
  await fs.fill(16 * PAGE);
  const start = 1 << 20;
  const bytes = randomBytes(32 * PAGE); // twice what is left: the write is short
  await t.rejects(sparse.write(start, bytes), { code: 'ENOSPC' }, 'the write fails');
  t.notOk(sparse.covers(start, start + bytes.length), 'and its range is not present');
  t.same(sparse.missing(start, start + bytes.length), [{ start, end: start + bytes.length }], 'not even in part');
  t.ok(sparse.covers(0, 7), 'what was there stays');
  const left = (await files(fs.dir)).filter((f) => f.endsWith('.tmp'));
  t.same(left, [], 'no temp file of the range list');
});
