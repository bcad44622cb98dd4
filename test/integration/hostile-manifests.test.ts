// Manifests a hostile upstream may send (null, wrong types, not JSON, too big) and what a client
// must see: a 502 with an OCI body, never a 500, and nothing cached that breaks that manifest later.
import { createHash } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { FsMetadataStore } from '../../src/cache/fs-metadata.js';
import { FsBlobStore } from '../../src/cache/fs-store.js';
import { parseDigest } from '../../src/oci/digest.js';
import { hostileSetup, startHostileRegistry } from '../helpers/hostile-registry.js';
import { startProxy } from '../helpers/proxy.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const HEX = 'a'.repeat(64);
const desc = (extra: object = {}) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${HEX}`, size: 10, ...extra });
const good = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc({ mediaType: 'application/vnd.oci.image.config.v1+json' }), layers: [desc()] });

async function get(url: string, method = 'GET') {
  const res = await fetch(url, { method, headers: { accept: `${OCI_MANIFEST}, ${OCI_INDEX}` } });
  const text = await res.text();
  let body: { errors?: { code: string }[] } | undefined;
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    body = undefined;
  }
  return { status: res.status, text, body, type: res.headers.get('content-type') };
}

const HOSTILE: [string, string, string][] = [
  ['a body of null', 'null', OCI_MANIFEST],
  ['layers holding null', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc(), layers: [null] }), OCI_MANIFEST],
  ['layers of the wrong type', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc(), layers: 'x' }), OCI_MANIFEST],
  ['config null', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: null, layers: [] }), OCI_MANIFEST],
  ['a layer with a negative size', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc(), layers: [desc({ size: -1 })] }), OCI_MANIFEST],
  ['a layer with a bad digest', JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc(), layers: [desc({ digest: 'sha256:../../etc' })] }), OCI_MANIFEST],
  ['an index holding null', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [null] }), OCI_INDEX],
  ['an index whose manifests is an object', JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: {} }), OCI_INDEX],
  ['not JSON', 'this is not json {', OCI_MANIFEST],
  ['a JSON array', '[1,2,3]', OCI_MANIFEST],
];

for (const [name, body, mediaType] of HOSTILE) {
  t.test(`a manifest with ${name}: 502 MANIFEST_INVALID for GET and HEAD, by tag and digest, never cached`, async (t) => {
    const { reg, proxy } = await hostileSetup(t);
    const digest = reg.addManifest('lib/x', body, mediaType, 'v1');
    for (const ref of ['v1', digest]) {
      for (const method of ['GET', 'HEAD']) {
        const res = await get(`${proxy.url}/v2/hostile/lib/x/manifests/${ref}`, method);
        t.equal(res.status, 502, `${method} ${ref.slice(0, 12)}: 502`);
        if (method === 'GET') t.equal(res.body?.errors?.[0]?.code, 'MANIFEST_INVALID', `${method} ${ref.slice(0, 12)}: an OCI body`);
      }
    }
    // the upstream now has a good manifest under the tag: served at once, nothing of the lie was kept
    const fixed = reg.addManifest('lib/x', good, OCI_MANIFEST, 'v1');
    const res = await get(`${proxy.url}/v2/hostile/lib/x/manifests/v1`);
    t.equal(res.status, 200, 'the fixed tag is served');
    t.equal(res.text, good);
    const before = reg.count({ pathIncludes: `/manifests/${digest}` });
    const again = await get(`${proxy.url}/v2/hostile/lib/x/manifests/${digest}`);
    t.equal(again.status, 502, 'the bad digest is still refused');
    t.equal(reg.count({ pathIncludes: `/manifests/${digest}` }), before + 1, 'and asked upstream again (not served from cache)');
    t.not(fixed, digest);
  });
}

t.test('valid manifests with the liberties real ones take are served as they are', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const bodies: [string, string][] = [
    // Go marshals a nil map as null; a layer list may be empty (artifacts)
    [JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc(), layers: [], annotations: null, subject: null }), OCI_MANIFEST],
    [JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [desc({ platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, annotations: { a: 'b' } })] }), OCI_INDEX],
    [JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc({ digest: `sha512:${'b'.repeat(128)}` }), layers: [desc({ digest: 'blake3:abcdef0123' })] }), OCI_MANIFEST],
    // a type we do not know is not held to the rules of one we know (fetched by digest only: we never ask for it by tag)
    [JSON.stringify({ schemaVersion: 1, name: 'lib/x', fsLayers: [{ blobSum: `sha256:${HEX}` }] }), 'application/vnd.docker.distribution.manifest.v1+json'],
  ];
  for (const [i, [body, mediaType]] of bodies.entries()) {
    const digest = reg.addManifest('lib/x', body, mediaType, `t${i}`);
    for (const ref of i === 3 ? [digest] : [`t${i}`, digest]) {
      const res = await get(`${proxy.url}/v2/hostile/lib/x/manifests/${ref}`);
      t.equal(res.status, 200, `${i} by ${ref.slice(0, 12)}: 200`);
      t.equal(res.text, body, `${i}: the body as the upstream sent it`);
    }
  }
});

t.test('a manifest over 4 MiB is refused while it is read, not buffered to its end', async (t) => {
  const { reg, proxy } = await hostileSetup(t, { timeouts: { body: '20s' } });
  const big = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: desc(), layers: [], annotations: { pad: 'x'.repeat(5 << 20) } });
  const digest = reg.addManifest('lib/x', big, OCI_MANIFEST, 'big');
  const res = await get(`${proxy.url}/v2/hostile/lib/x/manifests/${digest}`);
  t.equal(res.status, 502, 'a 5 MiB manifest: 502');
  t.match(res.text, /larger than 4194304 bytes/, 'because of its size');

  // announced as 1 GiB, 5 MiB sent, then silence: the answer comes from the bound, not a timeout
  reg.misbehave({ kind: 'custom', answer: () => ({ stall: true, after: Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: ${OCI_MANIFEST}\r\nContent-Length: ${1 << 30}\r\n\r\n`), Buffer.alloc(5 << 20, 0x20)]) }) });
  const stalled = await get(`${proxy.url}/v2/hostile/lib/x/manifests/big`);
  t.equal(stalled.status, 502);
  t.match(stalled.text, /larger than 4194304 bytes/, 'refused at the bound');
});

t.test('a cached tag whose upstream turns to sending an invalid manifest is served stale, not broken', async (t) => {
  const { reg, proxy } = await hostileSetup(t, { cache: { tagTtl: '0s' } });
  reg.addManifest('lib/x', good, OCI_MANIFEST, 'v1');
  t.equal((await get(`${proxy.url}/v2/hostile/lib/x/manifests/v1`)).status, 200);
  reg.addManifest('lib/x', 'null', OCI_MANIFEST, 'v1');
  const res = await fetch(`${proxy.url}/v2/hostile/lib/x/manifests/v1`, { headers: { accept: OCI_MANIFEST } });
  t.equal(res.status, 200, 'the cached manifest');
  t.equal(await res.text(), good);
  t.match(res.headers.get('warning') ?? '', /^110 /, 'marked stale');
});

t.test('a manifest an older version cached without checking (null on disk) is dropped and fetched again', async (t) => {
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  const cacheDir = await makeTempDir('pullthrough-cache-');
  t.teardown(() => removeDir(cacheDir));
  // what an older pullthrough left: the body `null` under its digest, a manifest record, and tag v1 pointing at it
  const nullDigest = parseDigest(sha256('null'));
  const store = await FsBlobStore.open({ dir: cacheDir, maxBytes: 1 << 30 });
  const spooled = join(store.spoolDir, 'legacy');
  await writeFile(spooled, 'null');
  await store.ingest(nullDigest, spooled, 4);
  const meta = new FsMetadataStore(cacheDir);
  await meta.putManifest(nullDigest, { mediaType: OCI_MANIFEST, size: 4 });
  await meta.putTag('hostile', 'lib/x', 'v1', { digest: nullDigest.value, mediaType: OCI_MANIFEST, size: 4, checkedAt: Date.now() });

  const proxy = await startProxy({ upstream: [`hostile=${reg.url}`], cacheDir, configDoc: { retries: 0 } });
  t.teardown(() => proxy.stop());
  reg.addManifest('lib/x', good, OCI_MANIFEST, 'v1');
  for (const method of ['HEAD', 'GET']) {
    const res = await get(`${proxy.url}/v2/hostile/lib/x/manifests/v1`, method);
    t.equal(res.status, 200, `${method} of the tag: 200 from the upstream's current manifest`);
    if (method === 'GET') t.equal(res.text, good);
  }
  const byDigest = await get(`${proxy.url}/v2/hostile/lib/x/manifests/${nullDigest.value}`);
  t.equal(byDigest.status, 404, 'by digest: asked upstream, which does not have it');
  t.equal(byDigest.body?.errors?.[0]?.code, 'MANIFEST_UNKNOWN');
  t.equal(reg.count({ pathIncludes: `/manifests/${nullDigest.value}` }), 1, 'the old copy was not served');
});
