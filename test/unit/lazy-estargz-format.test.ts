// The eStargz LazyFormat on the reference fixtures: claims from descriptors, open under a claim,
// units that tile the blob (only the prologue unverifiable), verify, prefetch and the files facet.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { TOC_DIGEST_ANNOTATION } from '../../src/estargz/index.js';
import { FormatRefusal, type LazyIndex, type RangeSource } from '../../src/lazy/format.js';
import { ESTARGZ, estargzFormat } from '../../src/lazy/formats/estargz.js';
import { fileSource, fixturesDir, tarExtract, hashTree, sha256hex, tempDir, unpackFixture, type FixtureLayer } from '../helpers/estargz-fixtures.js';

type Test = Parameters<Parameters<typeof t.test>[0]>[0];

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function opened(t: Test, layer: FixtureLayer): Promise<{ index: LazyIndex; blob: Buffer; src: RangeSource }> {
  const claim = estargzFormat.claim(layer);
  t.ok(claim, 'the descriptor claims eStargz');
  const src = await fileSource(layer.path);
  t.teardown(() => src.close());
  const index = await estargzFormat.open(src, { claim });
  return { index, blob: await readFile(layer.path), src };
}

if (!fixturesDir()) {
  t.plan(0, 'estargz fixtures not found (set ESTARGZ_FIXTURES)');
} else {
  t.test('claims: the TOC digest annotation and the size; nothing without a valid one', async (t) => {
    const toc = `sha256:${'ab'.repeat(32)}`;
    t.same(estargzFormat.claim({ digest: toc, size: 10, annotations: { [TOC_DIGEST_ANNOTATION]: toc } }), { format: ESTARGZ, index: toc, size: 10 });
    t.equal(estargzFormat.claim({ digest: toc, size: 10, annotations: {} }), undefined, 'no annotation');
    t.equal(estargzFormat.claim({ digest: toc, size: 10, annotations: { [TOC_DIGEST_ANNOTATION]: 'not a digest' } }), undefined, 'not a digest');
  });

  for (const name of ['busybox-esgz', 'busybox-zstdchunked']) {
    t.test(`${name}: units, align, verify`, async (t) => {
      const fx = await unpackFixture(name, await tempDir(t, 'lazy-fmt'));
      const { index, blob } = await opened(t, fx.layers[0] as FixtureLayer);
      t.equal(index.blobSize, blob.length);
      t.ok(index.document && sha256(index.document) === (fx.layers[0] as FixtureLayer).annotations[TOC_DIGEST_ANNOTATION], 'the document is the TOC the claim names');
      t.equal(index.indexBytes, index.document?.length, 'measured by its TOC JSON');
      t.equal(index.indexSpan.end, blob.length, 'the index lies at the end of the blob');

      const all = index.units({ start: 0, end: blob.length });
      t.equal(all[0]?.start, 0, 'the units start at 0');
      t.equal(all[all.length - 1]?.end, blob.length, 'and end at the blob end');
      t.ok(all.every((u, i) => i === 0 || u.start === (all[i - 1] as { end: number }).end), 'without gaps or overlaps');
      t.same(all.filter((u) => !u.verifiable).map((u) => u.start), [0], 'only the first unit (the prologue) is not verifiable');

      const mid = all[Math.floor(all.length / 2)] as { start: number; end: number };
      t.same(index.align({ start: mid.start + 1, end: mid.start + 2 }), { start: mid.start, end: mid.end }, 'a byte widens to its unit');
      t.same(index.units({ start: mid.start + 1, end: mid.start + 2 }), [{ ...mid, verifiable: true }]);

      t.same(await index.verify(mid.start, blob.subarray(mid.start, mid.end)), [{ start: mid.start, end: mid.end }], 'a unit verifies');
      const prologue = all[0] as { start: number; end: number };
      t.same(await index.verify(0, blob.subarray(0, prologue.end)), [], 'the prologue verifies nothing');
      const tail = index.align(index.indexSpan);
      t.same(await index.verify(tail.start, blob.subarray(tail.start, tail.end)), [tail], 'the TOC and footer verify');

      const bad = Buffer.from(blob.subarray(mid.start, mid.end));
      bad.writeUInt8((bad.readUInt8(bad.length >> 1) ^ 0xff), bad.length >> 1);
      const e = await index.verify(mid.start, bad).then(() => undefined, (x: unknown) => x);
      t.ok(e instanceof FormatRefusal, 'a changed byte is refused');
      t.equal((e as FormatRefusal).message, 'upstream sent eStargz content that does not match its TOC', 'with what the client is told');
    });
  }

  t.test('open: a wrong claim and a plain layer are refused as FormatRefusal', async (t) => {
    const fx = await unpackFixture('busybox-esgz', await tempDir(t, 'lazy-fmt'));
    const layer = fx.layers[0] as FixtureLayer;
    const src = await fileSource(layer.path);
    t.teardown(() => src.close());
    const wrong = { format: ESTARGZ, index: `sha256:${'00'.repeat(32)}`, size: src.size };
    await t.rejects(estargzFormat.open(src, { claim: wrong }), FormatRefusal, 'another TOC digest');
    const plain = await unpackFixture('busybox-plain', await tempDir(t, 'lazy-fmt'));
    const psrc = await fileSource((plain.layers[0] as FixtureLayer).path);
    t.teardown(() => psrc.close());
    const e = await estargzFormat.open(psrc, {}).then(() => undefined, (x: unknown) => x);
    t.ok(e instanceof FormatRefusal, 'a plain layer');
    t.equal(((e as FormatRefusal).cause as { kind?: string }).kind, 'not-estargz', 'the format\'s own error is the cause');
    await t.rejects(estargzFormat.open(src, { maxIndexBytes: 10 }), FormatRefusal, 'a TOC beyond the limit');
  });

  t.test('prefetch: up to the prefetch landmark, none without one', async (t) => {
    const fx = await unpackFixture('busybox-esgz-prefetch-1m', await tempDir(t, 'lazy-fmt'));
    t.same((await opened(t, fx.layers[0] as FixtureLayer)).index.prefetch(), { start: 0, end: 1201476 });
    const none = await unpackFixture('busybox-esgz', await tempDir(t, 'lazy-fmt'));
    t.equal((await opened(t, none.layers[0] as FixtureLayer)).index.prefetch(), undefined);
  });

  t.test('files: paths, whiteouts, regular files read through a source and checked against tar', async (t) => {
    const work = await tempDir(t, 'lazy-fmt');
    const fx = await unpackFixture('busybox-esgz', work);
    const { index, src } = await opened(t, fx.layers[0] as FixtureLayer);
    const files = index.files;
    if (!files) throw new Error('no files facet');
    t.ok([...files.paths()].includes('etc/hello.txt'));
    t.ok(files.has('etc/hello.txt') && !files.has('etc/nope'));
    t.equal(files.file('etc'), undefined, 'a directory is no regular file');
    t.equal(files.file('etc/nope'), undefined, 'nor is a missing path');
    await tarExtract((fx.layers[0] as FixtureLayer).path, `${work}/x`);
    const tree = await hashTree(`${work}/x`);
    const big = files.file('data/random-6m.bin');
    t.ok(big, 'a file of two chunks');
    t.same(big?.spans, [{ start: 1063851, end: 7357350 }], 'its compressed spans, merged');
    const parts: Buffer[] = [];
    for await (const b of big?.read(src) ?? []) parts.push(b);
    const data = Buffer.concat(parts);
    t.equal(data.length, big?.size);
    t.equal(sha256hex(data), tree.get('data/random-6m.bin')?.sha256, 'the content equals tar\'s');
    t.equal(big?.digest, `sha256:${sha256hex(data)}`, 'and the TOC\'s file digest');

    const second = await opened(t, fx.layers[1] as FixtureLayer);
    t.ok([...(second.index.files?.paths() ?? [])].includes('etc/.wh.empty.txt'), 'whiteout markers are among the paths');

    // a source that lies: the read is refused, never handed on complete
    const liar: RangeSource = { size: src.size, read: async (o, l) => Buffer.from((await src.read(o, l)).map((b) => b ^ 1)) };
    const read = async (): Promise<void> => {
      for await (const b of files.file('bin/busybox')?.read(liar) ?? []) void b;
    };
    await t.rejects(read(), FormatRefusal, 'bytes that do not match are refused');
  });
}
