// Memory under hostile eStargz layers: a dozen small layers whose TOCs are several MiB each, read
// lazily and concurrently, must not grow the proxy by their TOCs' parsed size (about six times
// the JSON each, see INDEX_BYTES_PER_TOC_BYTE); open indexes are bounded in bytes by
// estargz.maxIndexMemory, and a TOC beyond estargz.maxTocSize is never parsed (served plainly).
// The proxy runs as a child process with the Node flags of the CLI, and its resident set is read
// from /proc: VmHWM (the peak, after resetting it through clear_refs) and VmRSS.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { Readable, Writable } from 'node:stream';
import t from 'tap';
import { request } from 'undici';
import { convertToEstargz, TOC_DIGEST_ANNOTATION } from '../../src/estargz/index.js';
import { tocOf, withToc } from '../helpers/estargz-build.js';
import { buildTar } from '../helpers/estargz-tar.js';
import { memoryOf, resetPeak, startChildProxy, type ChildProxy } from '../helpers/child-proxy.js';
import { startHostileRegistry } from '../helpers/hostile-registry.js';
import type { Test } from '../helpers/util.js';

if (!existsSync('/proc/self/status')) throw new Error('this test reads the resident set size from /proc');

const MiB = 1 << 20;
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const LAYERS = 24;
const TOC_BYTES = 4 * MiB;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** An eStargz layer of one small file whose TOC is padded to about `tocBytes` of JSON with directory entries. */
async function bloatedLayer(seed: number, tocBytes: number): Promise<{ blob: Buffer; tocDigest: string; file: Buffer; offset: number }> {
  const file = Buffer.from(`layer ${seed}: ${'content '.repeat(2000)}\n`);
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _enc, cb) {
      parts.push(c);
      cb();
    },
  });
  const r = await convertToEstargz(Readable.from([buildTar([{ type: 'file', name: 'f.txt', content: file }])]), sink, { compressionLevel: 1 });
  const small = Buffer.concat(parts);
  const toc = tocOf(small, r.tocOffset);
  const offset = toc.entries.find((e) => e['name'] === 'f.txt')!['offset'] as number;
  const name = `d/${seed}/${'x'.repeat(180)}`;
  for (let i = 0; JSON.stringify(toc).length < tocBytes; i++) {
    for (let j = 0; j < 1000; j++) toc.entries.push({ name: `${name}${i * 1000 + j}/`, type: 'dir', mode: 493 });
  }
  const json = Buffer.from(JSON.stringify(toc, null, '\t'));
  return { blob: withToc(small, r.tocOffset, json), tocDigest: sha256(json), file, offset };
}

const reg = await startHostileRegistry();
t.teardown(() => reg.close());
const layers = await Promise.all(Array.from({ length: LAYERS }, (_, i) => bloatedLayer(i, TOC_BYTES)));
const warm = await bloatedLayer(-1, 0); // an ordinary small layer, read before measuring: the code paths are loaded
const descs = [...layers, warm].map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: reg.addBlob(l.blob), size: l.blob.length, annotations: { [TOC_DIGEST_ANNOTATION]: l.tocDigest } }));
const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
reg.addManifest('big/toc', JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: reg.addBlob(config), size: config.length }, layers: descs }), MANIFEST, 'v1');

/** `pullthrough serve` as a child process over the hostile registry, with these estargz settings. */
function serve(t: Test, estargz: Record<string, unknown>): Promise<ChildProxy> {
  return startChildProxy(t, { upstreams: { h: reg.url }, config: { retries: 0, cache: { fillOnRange: false }, estargz: { prefetch: false, ...estargz } } });
}

/** Two rounds of one Range per layer, all layers at once; every answer must be the truth. */
async function readAll(t: Test, url: string): Promise<void> {
  const m = await request(`${url}/v2/h/big/toc/manifests/v1`, { headers: { accept: MANIFEST } });
  await m.body.dump();
  for (let round = 0; round < 2; round++) {
    const answers = await Promise.all(
      layers.map(async (l, i) => {
        const from = l.offset;
        const to = l.offset + 99;
        const r = await request(`${url}/v2/h/big/toc/blobs/${descs[i]!.digest}`, { headers: { range: `bytes=${from}-${to}` } });
        const body = Buffer.from(await r.body.arrayBuffer());
        return r.statusCode === 206 && body.equals(l.blob.subarray(from, to + 1)) ? undefined : `layer ${i}: ${r.statusCode} ${body.subarray(0, 200).toString('latin1')}`;
      }),
    );
    t.same(answers.filter(Boolean), [], `round ${round + 1}: all ${LAYERS} Ranges answered 206 with the right bytes`);
  }
}

/** Peak and final growth of the child's resident set over its idle state, while readAll runs. */
async function growth(t: Test, estargz: Record<string, unknown>): Promise<{ peak: number; after: number }> {
  const { url, pid } = await serve(t, estargz);
  const w = await request(`${url}/v2/h/big/toc/blobs/${descs[LAYERS]!.digest}`, { headers: { range: `bytes=${warm.offset}-${warm.offset + 99}` } });
  await w.body.dump();
  const idle = await memoryOf(pid);
  await resetPeak(pid);
  await readAll(t, url);
  const end = await memoryOf(pid);
  return { peak: end.peak - idle.rss, after: end.rss - idle.rss };
}

const tocTotal = LAYERS * TOC_BYTES;

t.test(`${LAYERS} layers with ${TOC_BYTES / MiB} MiB TOCs, read concurrently: the proxy grows by the index bound, not by the TOCs`, async (t) => {
  const g = await growth(t, { maxIndexMemory: '48MiB' });
  // Unbounded, the parsed TOCs alone would hold about 24 x 6 x 4 MiB = 576 MiB (measured: a
  // peak of 502 MiB, still climbing when the reads ended). Bounded, what may grow is the 48 MiB of
  // indexes, the two TOCs being parsed at a time (about 8 x their 4 MiB each while decompressed,
  // copied and parsed) and the garbage V8 lets pile up between collections of a heap that keeps
  // replacing indexes (measured: the resident set saws between +110 and +215 MiB). 288 MiB tells
  // the two apart.
  const bound = 288 * MiB;
  t.ok(g.peak < bound, `peak growth ${(g.peak / MiB).toFixed(0)} MiB < ${(bound / MiB).toFixed(0)} MiB (the TOCs hold ${(tocTotal / MiB).toFixed(0)} MiB of JSON)`);
  t.ok(g.after < bound, `growth after the reads ${(g.after / MiB).toFixed(0)} MiB < ${(bound / MiB).toFixed(0)} MiB`);
});

t.test('a TOC beyond estargz.maxTocSize is never parsed: the layers are served plainly, and the proxy barely grows', async (t) => {
  const g = await growth(t, { maxTocSize: '1MiB' });
  const bound = 96 * MiB; // no index is held; what is left is serving ranged requests and the garbage of refusing 12 TOCs
  t.ok(g.peak < bound, `peak growth ${(g.peak / MiB).toFixed(0)} MiB < ${(bound / MiB).toFixed(0)} MiB`);
});
