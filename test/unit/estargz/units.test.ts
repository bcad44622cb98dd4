// Table tests for the small pieces: footers, path cleaning, whiteouts, chunk lookup by file
// offset, merged reads, and segment alignment.
import t from 'tap';
import { Readable, Writable } from 'node:stream';
import {
  alignRange,
  chunksForFileRange,
  chunksInRange,
  cleanPath,
  convertToEstargz,
  estargzFooter,
  externalTocFooter,
  legacyStargzFooter,
  mergeChunkRanges,
  openEstargz,
  parseFooter,
  segments,
  segmentsFor,
  whiteoutOf,
  type Chunk,
  type Entry,
} from '../../../src/estargz/index.js';
import { bufferSource } from '../../helpers/estargz-fixtures.js';
import { estargzFooterBytes, legacyFooterBytes } from '../../helpers/estargz-build.js';
import { buildTar } from '../../helpers/estargz-tar.js';

t.test('footers', async (t) => {
  const observed = Buffer.from('1f8b08040000000000ff1a00534716003030303030303030303037323564343553544152475a010000ffff0000000000000000', 'hex');
  t.ok(estargzFooter(0x725d45).equals(observed), 'eStargz footer equals the observed bytes (ESTARGZ.md §2.1)');
  t.ok(estargzFooter(0x725d45).equals(estargzFooterBytes(0x725d45)));
  t.ok(legacyStargzFooter(1234).equals(legacyFooterBytes(1234)));
  t.equal(legacyStargzFooter(1).length, 47);
  t.equal(externalTocFooter().length, 46);
  const pad = Buffer.alloc(100);
  const cases: [string, Buffer, number, unknown][] = [
    ['eStargz', Buffer.concat([pad, estargzFooter(7)]), 151, { format: 'estargz', footerSize: 51, tocOffset: 7 }],
    ['legacy', Buffer.concat([pad, legacyStargzFooter(9)]), 147, { format: 'stargz', footerSize: 47, tocOffset: 9 }],
    ['external', Buffer.concat([pad, externalTocFooter()]), 146, { format: 'estargz-external-toc', footerSize: 46, tocOffset: -1 }],
    ['legacy seen through a 51-byte tail', Buffer.concat([pad, legacyStargzFooter(9)]).subarray(-51), 147, { format: 'stargz', footerSize: 47, tocOffset: 9 }],
    ['tail shorter than any footer', Buffer.alloc(20), 20, undefined],
    ['zeros', Buffer.alloc(51), 1000, undefined],
  ];
  for (const [name, tail, size, want] of cases) t.same(parseFooter(tail, size), want, name);
  const zstd = Buffer.alloc(48);
  zstd.writeUInt32LE(0x184d2a50, 0);
  zstd.writeUInt32LE(40, 4);
  zstd.writeBigUInt64LE(1000n, 8);
  zstd.writeBigUInt64LE(50n, 16);
  zstd.writeBigUInt64LE(400n, 24);
  zstd.writeBigUInt64LE(1n, 32);
  zstd.write('GnUlInUx', 40, 'latin1');
  t.same(parseFooter(zstd, 1098), { format: 'zstd-chunked', footerSize: 48, tocOffset: 1000, tocCompressedSize: 50, tocUncompressedSize: 400 });
  t.throws(() => parseFooter(estargzFooter(100), 120), { name: 'EstargzError', kind: 'corrupt' }, 'offset past the footer start');
});

t.test('cleanPath and whiteouts', async (t) => {
  const clean: [string, string][] = [
    ['.', ''],
    ['./', ''],
    ['./bin/sh', 'bin/sh'],
    ['etc/', 'etc'],
    ['a//b/./c', 'a/b/c'],
    ['..foo/x..', '..foo/x..'],
    ['/', ''],
    ['/abs', 'abs'],
    ['//etc/./passwd', 'etc/passwd'],
  ];
  for (const [input, want] of clean) t.equal(cleanPath(input), want, JSON.stringify(input));
  for (const bad of ['/../x', '..', 'a/..', '../a', 'a/../b', 'nul\0']) t.throws(() => cleanPath(bad), { name: 'EstargzError', kind: 'unsafe-path' }, JSON.stringify(bad));
  t.same(whiteoutOf('etc/.wh.passwd'), { kind: 'file', target: 'etc/passwd' });
  t.same(whiteoutOf('.wh.top'), { kind: 'file', target: 'top' });
  t.same(whiteoutOf('usr/lib/.wh..wh..opq'), { kind: 'opaque', dir: 'usr/lib' });
  t.same(whiteoutOf('.wh..wh..opq'), { kind: 'opaque', dir: '' });
  t.equal(whiteoutOf('etc/wh.passwd'), undefined);
});

const piece = (chunkOffset: number, size: number, offset: number, end: number, innerOffset = 0): Chunk => ({ path: 'f', index: 0, chunkOffset, size, offset, innerOffset, end, digest: undefined });

t.test('chunksForFileRange', async (t) => {
  const chunks = [piece(0, 100, 10, 50), piece(100, 100, 50, 90), piece(200, 50, 90, 120)];
  const entry = { chunks } as unknown as Entry;
  const cases: [number, number, number[]][] = [
    [0, 1, [0]],
    [99, 101, [0, 100]],
    [100, 200, [100]],
    [150, 250, [100, 200]],
    [0, 250, [0, 100, 200]],
    [249, 1000, [200]],
    [250, 300, []],
  ];
  for (const [a, b, want] of cases) t.same(chunksForFileRange(entry, a, b).map((c) => c.chunkOffset), want, `[${a}, ${b})`);
});

t.test('mergeChunkRanges', async (t) => {
  const adjacent = [piece(0, 1, 10, 20), piece(1, 1, 20, 30), piece(2, 1, 40, 50)];
  t.same(mergeChunkRanges(adjacent).map((g) => [g.start, g.end, g.chunks.length]), [[10, 30, 2], [40, 50, 1]], 'adjacent ranges merge, gaps split');
  t.same(mergeChunkRanges(adjacent, 15).map((g) => [g.start, g.end]), [[10, 20], [20, 30], [40, 50]], 'maxBytes splits');
  const shared = [piece(0, 5, 10, 30), piece(5, 5, 10, 30, 5)];
  t.same(mergeChunkRanges(shared, 1).map((g) => g.chunks.length), [2], 'pieces of one member stay in one read');
});

t.test('segments tile the blob; alignRange widens to them', async (t) => {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      parts.push(c);
      cb();
    },
  });
  const tar = buildTar([
    { type: 'file', name: 'a', content: 'a'.repeat(3000) },
    { type: 'dir', name: 'd' },
    { type: 'file', name: 'd/b', content: 'b'.repeat(10) },
  ]);
  await convertToEstargz(Readable.from([tar]), sink, { chunkSize: 1024 });
  const blob = Buffer.concat(parts);
  const phases: string[] = [];
  const index = await openEstargz(bufferSource(blob), { onTiming: (p) => phases.push(p) });
  t.same(phases, ['footer', 'toc', 'decode'], 'timing hooks');
  const segs = segments(index);
  t.same(segs.map((s) => s.kind), ['prologue', 'data', 'data', 'data', 'data', 'data', 'toc', 'footer']);
  segs.forEach((s, i) => t.equal(s.start, i === 0 ? 0 : segs[i - 1]?.end, `segment ${i} starts where the previous ends`));
  t.equal(segs.at(-1)?.end, blob.length);
  const d1 = segs[2] as (typeof segs)[number];
  t.same(alignRange(index, d1.start + 1, d1.start + 2), { start: d1.start, end: d1.end }, 'inside one member');
  t.same(alignRange(index, 0, 1), { start: 0, end: segs[0]?.end });
  t.same(alignRange(index, blob.length - 1, blob.length), { start: index.footerOffset, end: blob.length });
  t.same(segmentsFor(index, d1.end - 1, d1.end + 1).map((s) => s.start), [d1.start, segs[3]?.start], 'a range over a boundary takes both');
  t.same(chunksInRange(index, d1.start, d1.end).map((c) => [c.path, c.chunkOffset]), [['a', 0]], 'segment 2 is the first piece of a (after the landmark)');
  t.throws(() => alignRange(index, 5, 5), RangeError);
  t.throws(() => alignRange(index, 0, blob.length + 1), RangeError);
});
