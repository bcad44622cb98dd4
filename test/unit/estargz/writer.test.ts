// convertToEstargz round trips: layers built in code (and one built by the system tar) go in,
// our reader and the system `tar -xzf` must both give the source files back.
import t from 'tap';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile as readFileFs, symlink, link, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import { gunzipSync, gzipSync } from 'node:zlib';
import {
  NO_PREFETCH_LANDMARK,
  PREFETCH_LANDMARK,
  TOC_DIGEST_ANNOTATION,
  UNCOMPRESSED_SIZE_ANNOTATION,
  convertToEstargz,
  openEstargz,
  prefetchRange,
  readFile,
  segments,
  verifyRange,
  type ConvertOptions,
  type TarInput,
} from '../../../src/estargz/index.js';
import { bufferSource, hashTree, sha256hex, tarExtract, tempDir } from '../../helpers/estargz-fixtures.js';
import { buildTar, sampleLayer } from '../../helpers/estargz-tar.js';

const run = promisify(execFile);
const MiB = 1024 * 1024;

/** A Writable that keeps what it is given. */
function collector(): { sink: Writable; bytes: () => Buffer } {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      parts.push(chunk);
      cb();
    },
  });
  return { sink, bytes: () => Buffer.concat(parts) };
}

/** Feeds a buffer in uneven pieces, to cross every block boundary. */
function pieces(buf: Buffer, size = 7919): () => AsyncIterable<Uint8Array> {
  return () =>
    Readable.from(
      (function* () {
        for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
      })(),
    );
}

async function convert(input: TarInput, opts: ConvertOptions = {}) {
  const { sink, bytes } = collector();
  const result = await convertToEstargz(input, sink, opts);
  return { result, blob: bytes() };
}

const { specs, tar: sourceTar } = sampleLayer();

t.test('round trip: many small files, a multi-chunk file, links, dirs, empty files, whiteouts', async (t) => {
  const { result, blob } = await convert(pieces(sourceTar)(), { chunkSize: MiB });
  t.equal(result.digest, `sha256:${sha256hex(blob)}`, 'digest is the blob digest');
  t.equal(result.size, blob.length);
  const plain = gunzipSync(blob);
  t.equal(result.diffId, `sha256:${sha256hex(plain)}`, 'diffId is the digest of the whole uncompressed stream');
  t.equal(result.uncompressedSize, plain.length);
  t.equal(result.annotations[TOC_DIGEST_ANNOTATION], result.tocDigest);
  t.equal(result.annotations[UNCOMPRESSED_SIZE_ANNOTATION], String(plain.length));

  const src = bufferSource(blob);
  const index = await openEstargz(src, { expectedTocDigest: result.tocDigest });
  t.equal(index.format, 'estargz');
  t.equal(index.tocOffset, result.tocOffset);
  t.equal(index.entries[0]?.path, NO_PREFETCH_LANDMARK, 'landmark first');
  t.equal(index.landmark, 'no-prefetch');
  t.equal(prefetchRange(index), undefined);

  for (const s of specs) {
    const path = s.name.replace(/\/$/, '');
    const e = index.lookup(path);
    if (!t.ok(e, `${path} is in the TOC`) || !e) continue;
    if (s.type === 'file') {
      const data = await readFile(index, src, path);
      t.ok(data.equals(Buffer.from(s.content ?? '')), `${path}: content`);
      t.equal(e.mode, s.mode ?? 0o644, `${path}: mode`);
      if (s.uid !== undefined) t.same([e.uid, e.userName, e.groupName], [s.uid, s.uname, s.gname], `${path}: owner (names filled in from first occurrence)`);
    } else if (s.type === 'symlink') t.same([e.type, e.linkName], ['symlink', s.target]);
    else if (s.type === 'hardlink') t.equal(index.resolve(path)?.path, s.target);
    else t.equal(e.type, s.type, `${path}: type`);
  }
  const big = index.lookup('app/big.bin');
  t.equal(big?.chunks.length, 6, 'the 5 MiB+ file is cut into 1 MiB pieces');
  t.same(big?.chunks.map((c) => c.size), [MiB, MiB, MiB, MiB, MiB, 12345]);
  t.ok(big?.chunks.every((c) => c.innerOffset === 0 && c.digest !== undefined), 'each piece starts its own member and has a digest');
  t.same(index.lookup('etc/xattr.conf')?.xattrs, { 'user.note': Buffer.from('hello') });
  t.same(index.lookup('etc/.wh.removed.conf')?.whiteout, { kind: 'file', target: 'etc/removed.conf' });
  t.same(index.lookup('var/lib/opaque/.wh..wh..opq')?.whiteout, { kind: 'opaque', dir: 'var/lib/opaque' });
  t.equal(index.lookup('app/empty')?.digest, `sha256:${sha256hex(Buffer.alloc(0))}`);

  const report = await verifyRange(index, 0, blob);
  t.same(report.unverified, [{ start: 0, end: segments(index)[1]?.start }], 'only the prologue is unverifiable');

  const toc = JSON.parse(index.tocJson.toString()) as { entries: Record<string, unknown>[] };
  t.same(Object.keys(toc.entries.find((e) => e['name'] === 'app/big.bin') ?? {}), ['name', 'type', 'size', 'modtime', 'mode', 'offset', 'digest', 'chunkSize', 'chunkDigest'], 'reference key order, zero fields omitted');
  t.ok(index.tocJson.toString().startsWith('{\n\t"version": 1,\n\t"entries": ['), 'tab-indented like the reference');
});

t.test('system tar reads our output as a normal layer, equal to the source', async (t) => {
  const dir = await tempDir(t, 'estargz-w');
  const { blob } = await convert(pieces(sourceTar)(), { chunkSize: MiB });
  await writeFile(join(dir, 'source.tar'), sourceTar);
  await writeFile(join(dir, 'out.tar.gz'), blob);
  await tarExtract(join(dir, 'source.tar'), join(dir, 'a'), 'none');
  await run('sh', ['-c', 'mkdir -p "$1" && tar -xzf "$2" -C "$1" --no-same-owner && chmod -R u+rwX "$1"', 'sh', join(dir, 'b'), join(dir, 'out.tar.gz')]);
  const a = await hashTree(join(dir, 'a'));
  const b = await hashTree(join(dir, 'b'));
  t.same(b.get(NO_PREFETCH_LANDMARK), { type: 'file', size: 1, sha256: sha256hex(Buffer.of(0x0f)) }, 'landmark file');
  t.equal(b.get('stargz.index.json')?.type, 'file', 'TOC file');
  b.delete(NO_PREFETCH_LANDMARK);
  b.delete('stargz.index.json');
  t.same([...b].sort(), [...a].sort(), 'same tree, same contents');
});

t.test('tar+gzip input gives the same blob as plain tar input', async (t) => {
  const plain = await convert(pieces(sourceTar)(), { chunkSize: MiB, compressionLevel: 6 });
  const gz = await convert(pieces(gzipSync(sourceTar), 1000)(), { chunkSize: MiB, compressionLevel: 6 });
  t.equal(gz.result.digest, plain.result.digest);
  t.equal(gz.result.diffId, plain.result.diffId);
});

t.test('default chunk size is 4 MiB', async (t) => {
  const { result, blob } = await convert(pieces(sourceTar)(), { compressionLevel: 1 });
  const index = await openEstargz(bufferSource(blob), { expectedTocDigest: result.tocDigest });
  t.same(index.lookup('app/big.bin')?.chunks.map((c) => c.size), [4 * MiB, MiB + 12345]);
});

t.test('prioritized files go before .prefetch.landmark', async (t) => {
  const input = pieces(sourceTar);
  const { result, blob } = await convert(input, { chunkSize: MiB, prioritizedFiles: ['/etc/xattr.conf', 'app/small/f3.txt'] });
  const src = bufferSource(blob);
  const index = await openEstargz(src, { expectedTocDigest: result.tocDigest });
  t.same(index.entries.slice(0, 6).map((e) => e.path), ['app', 'app/small', 'app/small/f3.txt', 'etc', 'etc/xattr.conf', PREFETCH_LANDMARK], 'parents come along, input order kept');
  t.equal(index.landmark, 'prefetch');
  const range = prefetchRange(index);
  t.equal(range?.end, index.lookup(PREFETCH_LANDMARK)?.chunks[0]?.offset);
  const inRange = new Set(index.chunks.filter((c) => c.end <= (range?.end ?? 0)).map((c) => c.path));
  t.same([...inRange].sort(), ['app/small/f3.txt', 'etc/xattr.conf']);
  t.equal(index.entries.filter((e) => e.path === 'app/small/f3.txt').length, 1, 'prioritized entries are not written twice');
  t.ok((await readFile(index, src, 'app/big.bin')).equals(Buffer.from((specs.find((s) => s.name === 'app/big.bin') as { content: Buffer }).content)));
  await t.rejects(convert(Readable.from([sourceTar]), { prioritizedFiles: ['etc/xattr.conf'] }), TypeError, 'a one-shot input cannot be read twice');
  const linked = await convert(input, { chunkSize: MiB, compressionLevel: 1, prioritizedFiles: ['app/big-hard'] });
  const linkedIndex = await openEstargz(bufferSource(linked.blob));
  const order = linkedIndex.entries.map((e) => e.path);
  t.ok(order.indexOf('app/big-hard') > order.indexOf('app/big.bin'), 'a prioritized hardlink never comes before its target');
  const none = await convert(input, { prioritizedFiles: ['does/not/exist'] });
  t.equal((await openEstargz(bufferSource(none.blob))).landmark, 'no-prefetch', 'nothing matched: .no.prefetch.landmark');
});

t.test('a layer made by the system tar (GNU headers, long names, hardlinks, fifo)', async (t) => {
  const dir = await tempDir(t, 'estargz-w');
  const root = join(dir, 'root');
  const long = `${'x'.repeat(90)}/${'y'.repeat(90)}`;
  await mkdir(join(root, 'usr/bin'), { recursive: true });
  await mkdir(join(root, long), { recursive: true });
  await writeFile(join(root, 'usr/bin/tool'), Buffer.alloc(3 * MiB + 7, 0x61));
  await writeFile(join(root, long, 'file.txt'), 'deep\n');
  await writeFile(join(root, 'usr/.wh.gone'), '');
  await writeFile(join(root, 'empty'), '');
  await link(join(root, 'usr/bin/tool'), join(root, 'usr/bin/tool2'));
  await symlink('tool', join(root, 'usr/bin/alias'));
  await run('mkfifo', [join(root, 'pipe')]);
  for (const format of ['gnu', 'posix']) {
    await t.test(format, async (t) => {
      await run('tar', [`--format=${format}`, '-C', root, '-czf', join(dir, `${format}.tgz`), '.']);
      const { result, blob } = await convert(pieces(await readFileFs(join(dir, `${format}.tgz`)), 65536)(), { chunkSize: MiB, compressionLevel: 1 });
      const src = bufferSource(blob);
      const index = await openEstargz(src, { expectedTocDigest: result.tocDigest });
      t.equal(index.lookup(`${long}/file.txt`)?.size, 5, 'long name');
      const links = ['usr/bin/tool', 'usr/bin/tool2'].map((p) => index.lookup(p)?.type).sort();
      t.same(links, ['hardlink', 'reg'], 'one of the two names is a hardlink to the other');
      t.equal(index.lookup('pipe')?.type, 'fifo');
      const tool = await readFile(index, src, './usr/bin/tool2');
      t.equal(sha256hex(tool), createHash('sha256').update(Buffer.alloc(3 * MiB + 7, 0x61)).digest('hex'), 'hardlink read resolves to the target content');
      await writeFile(join(dir, `${format}-out.tgz`), blob);
      await tarExtract(join(dir, `${format}-out.tgz`), join(dir, `${format}-x`));
      const tree = await hashTree(join(dir, `${format}-x`));
      const orig = await hashTree(root);
      tree.delete(NO_PREFETCH_LANDMARK);
      tree.delete('stargz.index.json');
      t.same([...tree].sort(), [...orig].sort(), 'tar -x of our output equals the source tree');
    });
  }
});

t.test('memory stays bounded on a large streamed layer', async (t) => {
  const total = 256 * MiB;
  const text = Buffer.from('the quick brown fox jumps over the lazy dog 0123456789\n');
  const block = Buffer.alloc(MiB);
  for (let i = 0; i < block.length; i++) block[i] = text[(i * 7 + (i >> 10)) % text.length] as number;
  // One huge file streamed from a generator: a header from our builder with the size patched in.
  const header = Buffer.from(buildTar([{ type: 'file', name: 'huge.bin', content: '' }]).subarray(0, 512));
  header.write(`${total.toString(8).padStart(11, '0')}\0`, 124, 12, 'latin1');
  header.fill(' ', 148, 156);
  let sum = 0;
  for (const v of header) sum += v;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  async function* input(): AsyncGenerator<Buffer> {
    yield header;
    for (let i = 0; i < total / MiB; i++) yield block;
    yield Buffer.alloc(1024);
  }
  let peak = 0;
  const base = process.memoryUsage().rss;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss - base)), 10);
  let size = 0;
  const sink = new Writable({
    write(chunk: Buffer, _e, cb) {
      size += chunk.length;
      cb();
    },
  });
  const result = await convertToEstargz(input(), sink, { compressionLevel: 1 });
  clearInterval(timer);
  t.ok(result.uncompressedSize > total);
  t.equal(result.size, size);
  t.ok(peak < 96 * MiB, `RSS grew by ${(peak / MiB).toFixed(1)} MiB while converting ${total / MiB} MiB`);
});
