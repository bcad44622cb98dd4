// Bad input: every failure is an EstargzError of the right kind, never a crash, a hang, or
// unverified bytes handed out.
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import {
  EstargzError,
  convertToEstargz,
  decodeChunk,
  isEstargzError,
  openEstargz,
  readFile,
  verifyRange,
  type EstargzErrorKind,
  type EstargzIndex,
  type OpenOptions,
  type RangeSource,
} from '../../../src/estargz/index.js';
import { bufferSource } from '../../helpers/estargz-fixtures.js';
import { estargzFooterBytes, tocMember, tocOf, withFooter, withToc } from '../../helpers/estargz-build.js';
import { buildTar } from '../../helpers/estargz-tar.js';

const KiB = 1024;

async function build(tar: Buffer, chunkSize = 64 * KiB): Promise<{ blob: Buffer; tocOffset: number; tocDigest: string }> {
  const parts: Buffer[] = [];
  const sink = new Writable({
    write(c: Buffer, _e, cb) {
      parts.push(c);
      cb();
    },
  });
  const r = await convertToEstargz(Readable.from([tar]), sink, { chunkSize, compressionLevel: 1 });
  return { blob: Buffer.concat(parts), tocOffset: r.tocOffset, tocDigest: r.tocDigest };
}

const big = randomBytes(200 * KiB);
const base = await build(buildTar([{ type: 'dir', name: 'etc' }, { type: 'file', name: 'etc/a.txt', content: 'hello\n' }, { type: 'file', name: 'big.bin', content: big }]));
const toc = tocOf(base.blob, base.tocOffset);

function kindOf(e: unknown): EstargzErrorKind | string {
  return isEstargzError(e) ? e.kind : `not an EstargzError: ${String(e)}`;
}

async function openKind(blob: Buffer, opts: OpenOptions = {}): Promise<EstargzErrorKind | string> {
  try {
    await openEstargz(bufferSource(blob), opts);
    return 'opened';
  } catch (e) {
    return kindOf(e);
  }
}

function editedToc(edit: (entries: Record<string, unknown>[]) => void): Buffer {
  const doc = structuredClone(toc);
  edit(doc.entries);
  return withToc(base.blob, base.tocOffset, JSON.stringify(doc, null, '\t'));
}

const entryNamed = (entries: Record<string, unknown>[], name: string): Record<string, unknown> => entries.find((e) => e['name'] === name) as Record<string, unknown>;

t.test('footer and TOC errors', async (t) => {
  const cases: [string, Buffer, EstargzErrorKind | 'opened', OpenOptions?][] = [
    ['empty blob', Buffer.alloc(0), 'not-estargz'],
    ['ten bytes', Buffer.from('0123456789'), 'not-estargz'],
    ['random bytes', randomBytes(4096), 'not-estargz'],
    ['plain tar+gzip', gzipSync(buildTar([{ type: 'file', name: 'x', content: 'x' }])), 'not-estargz'],
    ['truncated footer (last byte cut)', base.blob.subarray(0, base.blob.length - 1), 'not-estargz'],
    ['truncated footer (half of it)', base.blob.subarray(0, base.blob.length - 25), 'not-estargz'],
    ['footer magic damaged', Buffer.concat([base.blob.subarray(0, -19), Buffer.from('STARGX'), base.blob.subarray(-13)]), 'not-estargz'],
    ['footer offset not hex', Buffer.concat([base.blob.subarray(0, -35), Buffer.from('zzzzzzzzzzzzzzzz'), base.blob.subarray(-19)]), 'corrupt'],
    ['TOC offset beyond the blob', withFooter(base.blob.subarray(0, base.tocOffset), base.blob.length * 2), 'corrupt'],
    ['TOC offset at the footer', withFooter(base.blob.subarray(0, base.tocOffset), base.tocOffset), 'corrupt'],
    ['TOC offset in the middle of a member', withFooter(base.blob.subarray(0, -51), base.tocOffset + 3), 'corrupt'],
    ['TOC offset at a data member', withFooter(base.blob.subarray(0, -51), 0), 'corrupt'],
    ['TOC not valid JSON', withToc(base.blob, base.tocOffset, '{"version": 1, "entries": ['), 'corrupt'],
    ['TOC is JSON but not an object', withToc(base.blob, base.tocOffset, '[1,2,3]'), 'corrupt'],
    ['TOC version 2', withToc(base.blob, base.tocOffset, '{"version": 2, "entries": []}'), 'corrupt'],
    ['TOC tar entry has another name', Buffer.concat([base.blob.subarray(0, base.tocOffset), tocMember('{}', 'other.json'), estargzFooterBytes(base.tocOffset)]), 'corrupt'],
    ['TOC larger than maxTocBytes', base.blob, 'too-large', { maxTocBytes: 100 }],
    ['TOC member is a gzip bomb', withToc(base.blob, base.tocOffset, Buffer.alloc(80 * 1024 * 1024, 0x20)), 'too-large'],
    ['TOC digest differs from the annotation', base.blob, 'digest-mismatch', { expectedTocDigest: `sha256:${'0'.repeat(64)}` }],
    ['entry type unknown', editedToc((es) => (entryNamed(es, 'etc/a.txt')['type'] = 'socket')), 'corrupt'],
    ['negative size', editedToc((es) => (entryNamed(es, 'etc/a.txt')['size'] = -1)), 'corrupt'],
    ['fractional offset', editedToc((es) => (entryNamed(es, 'etc/a.txt')['offset'] = 1.5)), 'corrupt'],
    ['size as a string', editedToc((es) => (entryNamed(es, 'etc/a.txt')['size'] = '6')), 'corrupt'],
    ['digest malformed', editedToc((es) => (entryNamed(es, 'etc/a.txt')['chunkDigest'] = 'sha256:xyz')), 'corrupt'],
    ['offset beyond the data', editedToc((es) => (entryNamed(es, 'etc/a.txt')['offset'] = base.tocOffset + 10)), 'corrupt'],
    ['regular file without offset', editedToc((es) => delete entryNamed(es, 'etc/a.txt')['offset']), 'corrupt'],
    ['chunk without a file', editedToc((es) => es.unshift({ name: 'x', type: 'chunk', offset: 10, chunkOffset: 0 })), 'corrupt'],
    ['chunks with a gap', editedToc((es) => (es.find((e) => e['type'] === 'chunk') as Record<string, unknown>)['chunkOffset'] = 1), 'corrupt'],
    ['chunks beyond the file size', editedToc((es) => (entryNamed(es, 'big.bin')['size'] = 100 * KiB)), 'corrupt'],
    ['chunks short of the file size', editedToc((es) => (es.filter((e) => e['type'] === 'chunk').at(-1) as Record<string, unknown>)['chunkSize'] = 1), 'corrupt'],
    ['name with ..', editedToc((es) => (entryNamed(es, 'etc/a.txt')['name'] = '../../etc/passwd')), 'unsafe-path'],
    ['name with .. in the middle', editedToc((es) => (entryNamed(es, 'etc/a.txt')['name'] = 'etc/../../x')), 'unsafe-path'],
    ['name escaping through the root', editedToc((es) => (entryNamed(es, 'etc/a.txt')['name'] = '/../x')), 'unsafe-path'],
    ['hardlink out of the layer', editedToc((es) => es.push({ name: 'h', type: 'hardlink', linkName: '/../etc/shadow' })), 'unsafe-path'],
    ['absolute name (the layer\'s own /etc/passwd)', editedToc((es) => (entryNamed(es, 'etc/a.txt')['name'] = '/etc/passwd')), 'opened'],
    ['root entries "/" and "./"', editedToc((es) => es.unshift({ name: '/', type: 'dir', mode: 493 }, { name: './', type: 'dir', mode: 493 })), 'opened'],
    ['name with NUL', editedToc((es) => (entryNamed(es, 'etc/a.txt')['name'] = 'a\u0000b')), 'unsafe-path'],
    ['untouched blob opens', base.blob, 'opened', { expectedTocDigest: base.tocDigest }],
  ];
  for (const [name, blob, kind, opts] of cases) t.equal(await openKind(blob, opts), kind, name);
});

t.test('content errors when reading', async (t) => {
  const src = bufferSource(base.blob);
  const index = await openEstargz(src, { expectedTocDigest: base.tocDigest });
  const readKind = (i: EstargzIndex, path: string, s: RangeSource = src): Promise<string> => readFile(i, s, path).then(() => 'read', kindOf);

  const wrongDigest = editedToc((es) => (entryNamed(es, 'etc/a.txt')['chunkDigest'] = `sha256:${'1'.repeat(64)}`));
  t.equal(await readKind(await openEstargz(bufferSource(wrongDigest)), 'etc/a.txt', bufferSource(wrongDigest)), 'digest-mismatch', 'chunk digest differs');

  const chunk = index.lookup('big.bin')?.chunks[1];
  if (!chunk) throw new Error('no chunk');
  const flipped = Buffer.from(base.blob);
  const at = chunk.offset + Math.floor((chunk.end - chunk.offset) / 2);
  flipped.writeUInt8(flipped.readUInt8(at) ^ 0xff, at);
  const flippedKind = await readKind(index, 'big.bin', bufferSource(flipped));
  t.ok(flippedKind === 'digest-mismatch' || flippedKind === 'corrupt', `a flipped data byte is caught (${flippedKind})`);
  t.equal(await decodeChunk(index, chunk, flipped.subarray(chunk.offset, chunk.end)).then(() => 'read', kindOf), flippedKind, 'decodeChunk too');
  t.equal(await verifyRange(index, 0, flipped).then(() => 'verified', kindOf), flippedKind, 'verifyRange too');

  const shortSource: RangeSource = { size: base.blob.length, read: async (o, n) => base.blob.subarray(o, o + n - 1) };
  t.equal(await readKind(index, 'big.bin', shortSource), 'corrupt', 'a short read from the source');
  t.equal(await readKind(index, 'nope'), 'not-found', 'missing path');
  t.equal(await readKind(index, 'etc'), 'not-found', 'a directory is not a regular file');
  const small = await openEstargz(src, { maxChunkBytes: 1000 });
  t.equal(await readKind(small, 'big.bin'), 'too-large', 'piece above maxChunkBytes');
  await t.rejects(decodeChunk(index, chunk, base.blob.subarray(chunk.offset, chunk.end - 1)), RangeError, 'bytes that do not cover the chunk are a caller error');
});

t.test('legacy stargz without digests is unverifiable unless allowed', async (t) => {
  const doc = structuredClone(toc);
  for (const e of doc.entries) {
    delete e['digest'];
    delete e['chunkDigest'];
  }
  const legacy = withToc(base.blob, base.tocOffset, JSON.stringify(doc), 'legacy');
  const src = bufferSource(legacy);
  const index = await openEstargz(src);
  t.equal(index.format, 'stargz');
  t.equal(index.footerSize, 47);
  t.equal(await readFile(index, src, 'etc/a.txt').then(() => 'read', kindOf), 'unverifiable');
  const chunk = index.lookup('big.bin')?.chunks[0];
  t.equal(await decodeChunk(index, chunk as NonNullable<typeof chunk>, legacy.subarray(chunk?.offset, chunk?.end)).then(() => 'read', kindOf), 'unverifiable');
  const report = await verifyRange(index, 0, legacy);
  t.ok(report.unverified.length > 0 && report.verified.length > 0, 'verifyRange reports the unverifiable pieces instead of throwing');
  const loose = await openEstargz(src, { allowUnverified: true });
  t.ok((await readFile(loose, src, 'big.bin')).equals(big), 'allowUnverified reads legacy content');
  const withDigests = withToc(base.blob, base.tocOffset, JSON.stringify(toc), 'legacy');
  const verified = await openEstargz(bufferSource(withDigests));
  t.ok((await readFile(verified, bufferSource(withDigests), 'big.bin')).equals(big), 'legacy footer with digests reads verified');
});

t.test('zstd:chunked damage', async (t) => {
  // A zstd:chunked footer whose TOC range falls outside the blob.
  const footer = Buffer.alloc(48);
  footer.writeUInt32LE(0x184d2a50, 0);
  footer.writeUInt32LE(40, 4);
  footer.writeBigUInt64LE(10n, 8);
  footer.writeBigUInt64LE(10_000n, 16);
  footer.writeBigUInt64LE(10n, 24);
  footer.writeBigUInt64LE(1n, 32);
  footer.write('GnUlInUx', 40, 'latin1');
  t.equal(await openKind(Buffer.concat([Buffer.alloc(100), footer])), 'corrupt', 'TOC range outside the blob');
  footer.writeBigUInt64LE(20n, 16);
  const garbage = Buffer.concat([Buffer.alloc(2), Buffer.from([0x50, 0x2a, 0x4d, 0x18, 20, 0, 0, 0]), randomBytes(20), footer]);
  t.equal(await openKind(garbage), 'corrupt', 'TOC frame is not zstd');
  footer.writeBigUInt64LE(2n, 32);
  t.equal(await openKind(Buffer.concat([Buffer.alloc(100), footer])), 'unsupported', 'unknown manifest type');
});

t.test('the source is never read outside the blob, and its errors pass through', async (t) => {
  const ac = new AbortController();
  ac.abort();
  const src: RangeSource = {
    size: base.blob.length,
    read: async (o, n, signal) => {
      signal?.throwIfAborted();
      return base.blob.subarray(o, o + n);
    },
  };
  await t.rejects(openEstargz(src, { signal: ac.signal }), { name: 'AbortError' });
  const boom: RangeSource = { size: 100, read: async () => Promise.reject(new Error('network down')) };
  await t.rejects(openEstargz(boom), { message: 'network down' });
});

t.test('random damage never escapes as anything but an EstargzError', async (t) => {
  let seed = 12345;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  const json = Buffer.from(JSON.stringify(toc, null, '\t'));
  const kinds = new Map<string, number>();
  for (let i = 0; i < 300; i++) {
    let blob: Buffer;
    if (i % 2 === 0) {
      const mutated = Buffer.from(json);
      for (let k = 0; k < 1 + rand(4); k++) mutated[rand(mutated.length)] = [0x22, 0x2d, 0x2e, 0x30, 0x39, 0x7b, 0x5d, 0x2f][rand(8)] as number;
      blob = withToc(base.blob, base.tocOffset, mutated);
    } else {
      blob = Buffer.from(base.blob);
      for (let k = 0; k < 1 + rand(3); k++) {
        const at = rand(blob.length);
        blob.writeUInt8(blob.readUInt8(at) ^ (1 + rand(255)), at);
      }
    }
    let outcome: string;
    try {
      const src = bufferSource(blob);
      const index = await openEstargz(src);
      for (const e of index.entries) if (e.type === 'reg') await readFile(index, src, e.path);
      outcome = 'ok';
    } catch (e) {
      outcome = e instanceof EstargzError ? e.kind : `escaped: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`;
    }
    kinds.set(outcome, (kinds.get(outcome) ?? 0) + 1);
  }
  t.notOk([...kinds.keys()].some((k) => k.startsWith('escaped')), `outcomes: ${JSON.stringify([...kinds])}`);
});

t.test('converter input errors', async (t) => {
  const convertKind = async (input: Buffer): Promise<string> => {
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    try {
      await convertToEstargz(Readable.from([input]), sink, {});
      return 'converted';
    } catch (e) {
      t.ok(sink.destroyed, 'the sink is destroyed on failure');
      return kindOf(e);
    }
  };
  const good = buildTar([{ type: 'file', name: 'a', content: 'x'.repeat(2000) }]);
  const sparse = Buffer.from(good);
  sparse[156] = 0x53; // 'S'
  let sum = 0;
  sparse.fill(' ', 148, 156);
  for (let i = 0; i < 512; i++) sum += sparse[i] as number;
  sparse.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  const cases: [string, Buffer, string][] = [
    ['good', good, 'converted'],
    ['truncated tar', good.subarray(0, 1000), 'corrupt'],
    ['bad header checksum', Buffer.concat([Buffer.from('x'), good.subarray(1)]), 'corrupt'],
    ['truncated gzip', gzipSync(good).subarray(0, 30), 'corrupt'],
    ['sparse file', sparse, 'unsupported'],
    ['absolute name (kept, read as relative)', buildTar([{ type: 'file', name: '/etc/passwd', content: 'x' }]), 'converted'],
    ['root entry "./"', buildTar([{ type: 'dir', name: './' }, { type: 'file', name: './etc/passwd', content: 'x' }]), 'converted'],
    ['name escaping through the root', buildTar([{ type: 'file', name: '/../b', content: 'x' }]), 'unsafe-path'],
    ['.. in a name', buildTar([{ type: 'file', name: 'a/../../b', content: 'x' }]), 'unsafe-path'],
    ['hardlink out of the layer', buildTar([{ type: 'hardlink', name: 'h', target: '../x' }]), 'unsafe-path'],
  ];
  for (const [name, input, kind] of cases) t.equal(await convertKind(input), kind, name);
});
