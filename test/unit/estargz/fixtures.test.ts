// The reference fixtures (made by ctr-remote / the estargz library) read by src/estargz, checked
// file by file against the system tar's extraction of the same layer blobs.
import t from 'tap';
import { readFile as readFileFs } from 'node:fs/promises';
import { join } from 'node:path';
import {
  TOC_DIGEST_ANNOTATION,
  ZSTD_MANIFEST_CHECKSUM_ANNOTATION,
  ZSTD_MANIFEST_POSITION_ANNOTATION,
  decodeChunk,
  isEstargzError,
  openEstargz,
  prefetchRange,
  readFile,
  segments,
  verifyRange,
  type EstargzIndex,
} from '../../../src/estargz/index.js';
import { bufferSource, fileSource, fixturesDir, hashTree, sha256hex, tarExtract, tempDir, unpackFixture, type FixtureLayer } from '../../helpers/estargz-fixtures.js';
import type { Test } from '../../helpers/util.js';

const root = fixturesDir();
if (!root) {
  t.plan(0, 'estargz fixtures not found (set ESTARGZ_FIXTURES)');
} else {
  const VARIANTS = ['busybox-esgz', 'busybox-esgz-prefetch-1m', 'busybox-esgz-minchunk', 'busybox-zstdchunked'];

  /** Opens a layer, then checks every file against `tar -x` of the same blob. */
  async function checkLayer(t: Test, layer: FixtureLayer, work: string, open: (src: Awaited<ReturnType<typeof fileSource>>) => Promise<EstargzIndex>): Promise<EstargzIndex> {
    const src = await fileSource(layer.path);
    t.teardown(() => src.close());
    const index = await open(src);
    t.ok(src.reads.length <= 2, `footer + TOC in at most two reads (got ${src.reads.length})`);
    t.equal(index.tocDigest, layer.annotations[TOC_DIGEST_ANNOTATION], 'TOC digest equals the toc.digest annotation');
    const variant = layer.variant.replace(/^busybox-/, '');
    const refToc = await readFileFs(join(root as string, 'toc', variant, `${layer.digest.slice(7)}.toc.json`));
    t.ok(index.tocJson.equals(refToc), 'raw TOC bytes equal the reference TOC file');

    const dir = join(work, layer.digest.slice(7, 19));
    await tarExtract(layer.path, dir, layer.mediaType.endsWith('+zstd') ? 'zstd' : 'gzip');
    const tree = await hashTree(dir);
    let files = 0;
    for (const e of index.entries) {
      const node = tree.get(e.path);
      if (e.type === 'reg') {
        const data = await readFile(index, src, e.path);
        t.equal(node?.sha256, sha256hex(data), `${e.path}: TOC content equals tar's`);
        files++;
      } else if (e.type === 'symlink') {
        t.equal(node?.link, e.linkName, `${e.path}: symlink target`);
      } else if (e.type === 'hardlink') {
        const target = index.resolve(e.path);
        t.equal(target?.type, 'reg', `${e.path}: hardlink resolves to a regular file`);
        t.equal(node?.sha256, sha256hex(await readFile(index, src, e.path)), `${e.path}: hardlink content`);
      } else if (e.type === 'dir' && e.path !== '') {
        t.equal(node?.type, 'dir', `${e.path}: directory`);
      }
    }
    const inToc = new Set(index.entries.map((e) => e.path));
    const extraFiles = [...tree].filter(([p, n]) => n.type === 'file' && !inToc.has(p)).map(([p]) => p);
    const tocInTar = index.format === 'estargz' || index.format === 'stargz';
    t.same(extraFiles, tocInTar ? ['stargz.index.json'] : [], 'tar has no regular file the TOC lacks (but the TOC file itself)');
    t.ok(files > 0, `${files} regular files compared`);

    for (const c of index.chunks) {
      const bytes = await src.read(c.offset, c.end - c.offset);
      const data = await decodeChunk(index, c, bytes);
      t.equal(`sha256:${sha256hex(data)}`, c.digest, `chunk ${c.path}@${c.chunkOffset} verifies`);
    }
    const whole = await src.read(0, src.size);
    const report = await verifyRange(index, 0, whole);
    const prologue = segments(index)[0];
    t.same(report.unverified, prologue?.kind === 'prologue' ? [{ start: 0, end: prologue.end }] : [], 'only the prologue is unverifiable');
    t.same(report.verified, [{ start: prologue?.end ?? 0, end: src.size }], 'everything else verifies');
    return index;
  }

  for (const name of VARIANTS) {
    t.test(name, async (t) => {
      const work = await tempDir(t, 'estargz-fx');
      const fx = await unpackFixture(name, work);
      t.equal(fx.layers.length, 2, 'two layers');
      for (const layer of fx.layers) {
        await t.test(layer.digest.slice(0, 19), async (t) => {
          const index = await checkLayer(t, layer, work, (src) => openEstargz(src, { expectedTocDigest: layer.annotations[TOC_DIGEST_ANNOTATION] as string }));
          t.equal(index.tocVerified, true);
          t.equal(index.format, name.includes('zstd') ? 'zstd-chunked' : 'estargz');
        });
      }
    });
  }

  t.test('busybox-esgz: ranges match the observed layout (ESTARGZ.md §4.2)', async (t) => {
    const fx = await unpackFixture('busybox-esgz', await tempDir(t, 'estargz-fx'));
    const src = await fileSource((fx.layers[0] as FixtureLayer).path);
    t.teardown(() => src.close());
    const index = await openEstargz(src);
    const ranges = (p: string): number[][] => (index.lookup(p)?.chunks ?? []).map((c) => [c.offset, c.end, c.chunkOffset, c.size]);
    t.same(ranges('.no.prefetch.landmark'), [[85, 217, 0, 1]]);
    t.same(ranges('bin/busybox'), [[217, 1063851, 0, 1982256]]);
    t.same(ranges('data/random-6m.bin'), [
      [1063851, 5259458, 0, 4194304],
      [5259458, 7357350, 4194304, 2097152],
    ]);
    t.equal(index.tocOffset, 7494981);
    t.equal(index.footerOffset, 7495993);
    t.equal(index.landmark, 'no-prefetch');
    t.equal(prefetchRange(index), undefined, 'no prefetch range with .no.prefetch.landmark');
    t.same(index.lookup('dev/null'), { ...index.lookup('dev/null'), type: 'char', devMajor: 1, devMinor: 3 });
    t.same(index.lookup('etc/xattr.txt')?.xattrs, { 'user.fixture': Buffer.from('estargz') });
    t.equal(index.lookup('/tmp/')?.mode, 0o1777, 'mode keeps the sticky bit');
    t.equal(index.lookup('etc/hello.txt')?.uid, 1000);
    const hinted = await fileSource((fx.layers[0] as FixtureLayer).path);
    t.teardown(() => hinted.close());
    await openEstargz(hinted, { tocOffsetHint: index.tocOffset });
    t.same(hinted.reads, [{ offset: index.tocOffset, length: src.size - index.tocOffset }], 'a right hint: one read for TOC and footer');
    hinted.reads.length = 0;
    await openEstargz(hinted, { tocOffsetHint: index.tocOffset + 5 });
    t.equal(hinted.reads.length, 2, 'a wrong hint costs one more read, nothing else');
    const second = await openEstargz(await fileSource((fx.layers[1] as FixtureLayer).path));
    t.same(second.lookup('etc/.wh.empty.txt')?.whiteout, { kind: 'file', target: 'etc/empty.txt' }, 'whiteout entry is exposed');
  });

  t.test('busybox-esgz-prefetch-1m: prefetch range ends at .prefetch.landmark', async (t) => {
    const fx = await unpackFixture('busybox-esgz-prefetch-1m', await tempDir(t, 'estargz-fx'));
    const src = await fileSource((fx.layers[0] as FixtureLayer).path);
    t.teardown(() => src.close());
    const index = await openEstargz(src);
    t.equal(index.landmark, 'prefetch');
    t.same(prefetchRange(index), { start: 0, end: 1201476 });
    const before = new Set(index.chunks.filter((c) => c.end <= 1201476).map((c) => c.path));
    t.same([...before].sort(), ['bin/busybox', 'data/text-3m.txt', 'etc/hello.txt'], 'the prioritized files lie in the prefetch range');
    t.equal(index.lookup('data/text-3m.txt')?.chunks.length, 4, '1 MiB chunks');
  });

  t.test('busybox-esgz-minchunk: innerOffset pieces share members', async (t) => {
    const fx = await unpackFixture('busybox-esgz-minchunk', await tempDir(t, 'estargz-fx'));
    const src = await fileSource((fx.layers[0] as FixtureLayer).path);
    t.teardown(() => src.close());
    const index = await openEstargz(src);
    const inner = index.chunks.filter((c) => c.innerOffset > 0);
    t.ok(inner.length >= 4, `${inner.length} pieces with innerOffset`);
    const busybox = index.lookup('bin/busybox')?.chunks[0];
    t.same([busybox?.offset, busybox?.innerOffset, busybox?.end], [90, 2048, 537705], 'bin/busybox piece 0 shares the landmark member');
    const hello = index.lookup('etc/hello.txt')?.chunks[0];
    t.same([hello?.offset, hello?.innerOffset], [7449137, 1051648]);
    t.equal(hello?.end, index.tocOffset, 'the last member ends at the TOC');
    t.equal((await readFile(index, src, 'etc/hello.txt')).length, 30);
  });

  t.test('busybox-zstdchunked: manifest checksum and position hint', async (t) => {
    const fx = await unpackFixture('busybox-zstdchunked', await tempDir(t, 'estargz-fx'));
    for (const layer of fx.layers) {
      const src = await fileSource(layer.path);
      t.teardown(() => src.close());
      const [offset] = (layer.annotations[ZSTD_MANIFEST_POSITION_ANNOTATION] ?? '').split(':').map(Number);
      const index = await openEstargz(src, { tocOffsetHint: offset, expectedTocDigest: layer.annotations[TOC_DIGEST_ANNOTATION] as string });
      t.equal(src.reads.length, 1, 'with the position hint, one read brings TOC and footer');
      t.equal(index.tocCompressedDigest, layer.annotations[ZSTD_MANIFEST_CHECKSUM_ANNOTATION], 'compressed TOC digest equals manifest-checksum');
      t.equal(index.dataEnd, index.tocOffset - 8, 'data ends at the skippable frame around the TOC');
    }
  });

  t.test('busybox-zstdchunked: damaged bytes only ever give EstargzErrors', async (t) => {
    const fx = await unpackFixture('busybox-zstdchunked', await tempDir(t, 'estargz-fx'));
    const layers = await Promise.all(fx.layers.map((l) => readFileFs(l.path)));
    let seed = 99;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 200; i++) {
      const blob = Buffer.from(layers[i % 2] as Buffer);
      // Damage the small layer anywhere; the big one inside its last pieces, TOC and footer.
      const from = i % 2 === 0 ? blob.length - 4096 : 0;
      for (let k = 0; k < 1 + rand(3); k++) {
        const at = from + rand(blob.length - from);
        blob.writeUInt8(blob.readUInt8(at) ^ (1 + rand(255)), at);
      }
      let outcome = 'ok';
      try {
        const src = bufferSource(blob);
        const index = await openEstargz(src);
        for (const e of index.entries) if (e.type === 'reg' && e.size < 1024 * 1024) await readFile(index, src, e.path);
      } catch (e) {
        outcome = isEstargzError(e) ? e.kind : `escaped: ${String(e)}`;
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    t.notOk([...outcomes.keys()].some((k) => k.startsWith('escaped')), `outcomes: ${JSON.stringify([...outcomes])}`);
  });

  t.test('busybox-esgz-externaltoc: TOC from the -esgztoc image', async (t) => {
    const work = await tempDir(t, 'estargz-fx');
    const fx = await unpackFixture('busybox-esgz-externaltoc', work);
    const tocImage = fx.manifests.find((m) => m.ref.endsWith('-esgztoc'));
    for (const layer of fx.layers) {
      const src = await fileSource(layer.path);
      t.teardown(() => src.close());
      await t.rejects(openEstargz(src), { name: 'EstargzError', kind: 'external-toc' }, 'without the TOC image: external-toc');
      const tocLayer = tocImage?.layers.find((l) => l.annotations['containerd.io/snapshot/stargz/layer.digest'] === layer.digest);
      t.ok(tocLayer, 'the TOC image has a layer for this blob');
      const externalToc = await readFileFs((tocLayer as FixtureLayer).path);
      await t.test(layer.digest.slice(0, 19), async (t) => {
        const index = await checkLayer(t, layer, work, (s) => openEstargz(s, { externalToc, expectedTocDigest: layer.annotations[TOC_DIGEST_ANNOTATION] as string }));
        t.equal(index.format, 'estargz-external-toc');
        t.equal(index.dataEnd, index.footerOffset);
      });
    }
  });

  t.test('busybox-plain: reported as not eStargz', async (t) => {
    const fx = await unpackFixture('busybox-plain', await tempDir(t, 'estargz-fx'));
    for (const layer of fx.layers) {
      const src = await fileSource(layer.path);
      t.teardown(() => src.close());
      const err = await openEstargz(src).catch((e: unknown) => e);
      t.ok(isEstargzError(err, 'not-estargz'), `${layer.digest.slice(0, 19)}: not-estargz`);
      t.equal(src.reads.length, 1, 'one tail read decides it');
    }
  });
}
