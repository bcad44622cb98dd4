// The image file API and lazy eStargz serving over content a real producer makes (root entries
// "/" and "./") and content an attacker makes (paths out of the root, TOCs with impossible
// offsets and sizes, overlapping pieces, gzip bombs, manifests that are not manifests): valid
// content is served, hostile content is a 4xx or 502 with an OCI body, never a 500.
import { createGzip, gzipSync } from 'node:zlib';
import t from 'tap';
import { request } from 'undici';
import { estargzFooterBytes, tocMember, tocOf, withToc } from '../helpers/estargz-build.js';
import { addImage, estargzLayer, type BuiltLayer } from '../helpers/estargz-image.js';
import { buildTar, type EntrySpec } from '../helpers/estargz-tar.js';
import { hostileSetup } from '../helpers/hostile-registry.js';
import { createHash } from 'node:crypto';

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function get(url: string, headers: Record<string, string> = {}) {
  const r = await request(url, { headers });
  return { status: r.statusCode, headers: r.headers, body: Buffer.from(await r.body.arrayBuffer()) };
}

/** The OCI error body's first error, or undefined when the body is not one. */
function ociError(body: Buffer): { code: string; message: string; detail: Record<string, unknown> } | undefined {
  try {
    return (JSON.parse(body.toString('utf8')) as { errors: { code: string; message: string; detail: Record<string, unknown> }[] }).errors[0];
  } catch {
    return undefined;
  }
}

const plainLayer = (tar: Buffer): BuiltLayer => {
  const blob = gzipSync(tar);
  return { blob, digest: sha256(blob) };
};

const hello = 'hello from the layer\n';
/** What umoci and the reference converter write: a root entry first, names with "./" or "/". */
const rooted: EntrySpec[] = [
  { type: 'dir', name: '/' },
  { type: 'dir', name: './' },
  { type: 'dir', name: './etc' },
  { type: 'file', name: './etc/hello.txt', content: hello },
  { type: 'file', name: '/etc/abs.txt', content: 'absolute\n' },
  { type: 'hardlink', name: './etc/hard.txt', target: '/etc/hello.txt' },
];

t.test('root entries "/" and "./" are valid: files are served, and an eStargz layer stays lazy', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const esgz = await estargzLayer(buildTar(rooted));
  addImage(reg, 'lib/esgz', 'v1', [esgz]);
  const base = `${proxy.url}/v2/hostile/lib/esgz/_estargz`;
  for (const [path, want] of [['etc/hello.txt', hello], ['etc/abs.txt', 'absolute\n'], ['etc/hard.txt', hello]] as const) {
    const r = await get(`${base}/image/v1/files/${path}`);
    t.equal(r.status, 200, `${path}: 200 (${r.body.toString('utf8').slice(0, 200)})`);
    t.equal(r.body.toString('utf8'), want, `${path}: its content`);
  }
  t.equal((await get(`${base}/${esgz.digest}/toc`)).status, 200, 'the TOC is served');
  const range = await get(`${proxy.url}/v2/hostile/lib/esgz/blobs/${esgz.digest}`, { range: 'bytes=0-99' });
  t.equal(range.status, 206);
  t.same(range.body, esgz.blob.subarray(0, 100));
  t.equal(reg.count({ method: 'GET', pathIncludes: esgz.digest, ranged: false }), 0, 'the layer was read lazily: never fetched whole');

  const plain = plainLayer(buildTar(rooted));
  addImage(reg, 'lib/plain', 'v1', [plain]);
  for (const [path, want] of [['etc/hello.txt', hello], ['etc/abs.txt', 'absolute\n'], ['etc/hard.txt', hello]] as const) {
    const r = await get(`${proxy.url}/v2/hostile/lib/plain/_estargz/image/v1/files/${path}`);
    t.equal(r.status, 200, `plain layer, ${path}: 200 (${r.body.toString('utf8').slice(0, 200)})`);
    t.equal(r.body.toString('utf8'), want, `plain layer, ${path}: its content`);
  }
});

t.test('a plain layer with a name or hardlink out of its root is a 502 with an OCI body', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const cases: [string, EntrySpec][] = [
    ['name ../x', { type: 'file', name: '../x', content: 'x' }],
    ['name /../x', { type: 'file', name: '/../x', content: 'x' }],
    ['name a/../../x', { type: 'file', name: 'a/../../x', content: 'x' }],
    ['hardlink to ../../etc/passwd', { type: 'hardlink', name: 'etc/pw', target: '../../etc/passwd' }],
    ['hardlink to /../x', { type: 'hardlink', name: 'etc/pw', target: '/../x' }],
  ];
  for (const [i, [name, bad]] of cases.entries()) {
    const layer = plainLayer(buildTar([{ type: 'file', name: 'etc/hello.txt', content: hello }, bad]));
    addImage(reg, `lib/bad${i}`, 'v1', [layer]);
    for (const url of [`${proxy.url}/v2/hostile/lib/bad${i}/_estargz/image/v1/files/etc/hello.txt`, `${proxy.url}/v2/hostile/lib/bad${i}/_estargz/${layer.digest}/files/etc/pw`]) {
      const r = await get(url);
      t.equal(r.status, 502, `${name}: 502`);
      t.equal(ociError(r.body)?.detail['kind'], 'unsafe-path', `${name}: the OCI body says why`);
    }
  }
});

t.test('hostile TOCs: the TOC endpoint answers 502, files come from the verified tar, ranges from the blob', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const base = await estargzLayer(buildTar([{ type: 'dir', name: 'etc' }, { type: 'file', name: 'etc/hello.txt', content: hello }, { type: 'file', name: 'etc/other.txt', content: 'other file\n'.repeat(100) }]));
  const toc = tocOf(base.blob, base.tocOffset!);
  const named = (es: Record<string, unknown>[], name: string) => es.find((e) => e['name'] === name) as Record<string, unknown>;
  const edited = (edit: (es: Record<string, unknown>[]) => void, text = (s: string) => s): BuiltLayer => {
    const doc = structuredClone(toc);
    edit(doc.entries);
    const json = text(JSON.stringify(doc, null, '\t'));
    const blob = withToc(base.blob, base.tocOffset!, json);
    return { blob, digest: sha256(blob), tocDigest: sha256(Buffer.from(json)) };
  };
  const cases: [string, BuiltLayer, string][] = [
    ['name ../x', edited((es) => (named(es, 'etc/other.txt')['name'] = '../x')), 'unsafe-path'],
    ['hardlink out of the root', edited((es) => es.push({ name: 'etc/pw', type: 'hardlink', linkName: '/../etc/shadow' })), 'unsafe-path'],
    ['offset beyond the blob', edited((es) => (named(es, 'etc/other.txt')['offset'] = base.blob.length + 1000)), 'corrupt'],
    ['offset beyond 2^53', edited((es) => (named(es, 'etc/other.txt')['offset'] = 1), (s) => s.replace(/"offset": 1\b/, '"offset": 9007199254740993')), 'corrupt'],
    ['negative size', edited((es) => (named(es, 'etc/other.txt')['size'] = -1)), 'corrupt'],
    ['absurd size', edited((es) => (named(es, 'etc/other.txt')['size'] = 1e300)), 'corrupt'],
    ['size NaN', edited((es) => (named(es, 'etc/other.txt')['size'] = 12345), (s) => s.replace('12345', 'NaN')), 'corrupt'],
    ['overlapping pieces', edited((es) => (named(es, 'etc/other.txt')['offset'] = named(es, 'etc/hello.txt')['offset'])), 'corrupt'],
  ];
  for (const [i, [name, layer, kind]] of cases.entries()) {
    addImage(reg, `lib/toc${i}`, 'v1', [layer]);
    const url = `${proxy.url}/v2/hostile/lib/toc${i}`;
    const tocRes = await get(`${url}/_estargz/${layer.digest}/toc`);
    t.equal(tocRes.status, 502, `${name}: the TOC endpoint answers 502`);
    t.equal(ociError(tocRes.body)?.detail['kind'], kind, `${name}: the OCI body says why`);
    const file = await get(`${url}/_estargz/image/v1/files/etc/hello.txt`);
    t.equal(file.status, 200, `${name}: the file is read from the verified tar (${file.body.toString('utf8').slice(0, 200)})`);
    t.equal(file.body.toString('utf8'), hello);
    const range = await get(`${url}/blobs/${layer.digest}`, { range: 'bytes=10-2000' });
    t.equal(range.status, 206, `${name}: a Range is served plainly`);
    t.same(range.body, layer.blob.subarray(10, 2001));
  }
});

/** `bytes` zeros, gzipped as they are made (never held whole). */
async function gzippedZeros(prefix: Buffer, bytes: number): Promise<Buffer> {
  const z = createGzip({ level: 1 });
  const out: Buffer[] = [];
  z.on('data', (b: Buffer) => out.push(b));
  const done = new Promise((resolve) => z.on('end', resolve));
  z.write(prefix);
  const zeros = Buffer.alloc(1 << 20);
  for (let left = bytes; left > 0; left -= zeros.length) if (!z.write(zeros.subarray(0, Math.min(left, zeros.length)))) await new Promise((r) => z.once('drain', r));
  z.end();
  await done;
  return Buffer.concat(out);
}

t.test('a gzip bomb in a piece costs only the bytes the TOC declares', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const base = await estargzLayer(buildTar([{ type: 'file', name: 'etc/hello.txt', content: hello }, { type: 'file', name: 'zz/bomb', content: Buffer.alloc(16) }]));
  const toc = tocOf(base.blob, base.tocOffset!);
  const bombEntry = toc.entries.find((e) => e['name'] === 'zz/bomb') as { offset: number };
  // the last piece's member, replaced by one that inflates to 16 zeros and then 512 MiB more
  const member = await gzippedZeros(Buffer.alloc(16), 512 << 20);
  const json = JSON.stringify(toc, null, '\t');
  const tocOffset = bombEntry.offset + member.length;
  const blob = Buffer.concat([base.blob.subarray(0, bombEntry.offset), member, tocMember(json), estargzFooterBytes(tocOffset)]);
  const layer = { blob, digest: sha256(blob), tocDigest: sha256(Buffer.from(json)) };
  addImage(reg, 'lib/bomb', 'v1', [layer]);
  const reads = await Promise.all(Array.from({ length: 8 }, () => get(`${proxy.url}/v2/hostile/lib/bomb/_estargz/image/v1/files/zz/bomb`)));
  for (const r of reads) {
    t.equal(r.status, 200);
    t.same(r.body, Buffer.alloc(16), 'the 16 declared bytes, verified');
  }
  t.equal(reg.count({ method: 'GET', pathIncludes: layer.digest, ranged: false }), 0, 'read lazily');
});

t.test('a manifest that is not one is a 4xx or 502 with an OCI body, never a 500', async (t) => {
  // lazy off: what the lazy layers learn from manifests (lazy-layers.ts) is not this test's subject
  const { reg, proxy } = await hostileSetup(t, { estargz: { lazy: false } });
  const type = 'application/vnd.oci.image.manifest.v1+json';
  const bodies: [string, string][] = [
    ['null', 'null'],
    ['layers holds null', '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[null]}'],
    ['layers is a string', '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":"x"}'],
    ['a layer digest that is not one', '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[{"digest":"md5:x"}]}'],
    ['not JSON', 'this is not JSON'],
  ];
  for (const [i, [name, body]] of bodies.entries()) {
    reg.addManifest(`lib/m${i}`, body, type, 'v1');
    const r = await get(`${proxy.url}/v2/hostile/lib/m${i}/_estargz/image/v1/files/etc/hello.txt`);
    t.ok((r.status >= 400 && r.status < 500) || r.status === 502, `${name}: ${r.status}`);
    t.ok(ociError(r.body)?.code, `${name}: an OCI error body`);
  }
});
