// Properties of the layer-format parsers: footers, the TOC tar and its JSON, whole eStargz blobs
// with damage anywhere, zstd frames (tar headers and streams: test/unit/tar). For any bytes at all:
// a result or an EstargzError (never another exception, a hang or a huge allocation), offsets
// that stay inside the blob, and no file content handed out that its digests did not check.
import t from 'tap';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import {
  convertToEstargz,
  estargzFooter,
  fileChunks,
  isEstargzError,
  legacyStargzFooter,
  openEstargz,
  parseFooter,
  parseTocJson,
  type EstargzIndex,
} from '../../src/estargz/index.js';
import { decompress } from '../../src/estargz/decompress.js';
import { ustarHeader } from '../../src/tar/index.js';
import { unwrapTocTar } from '../../src/estargz/toc.js';
import { bufferSource } from '../helpers/estargz-fixtures.js';
import { tocMember, tocOf, withToc } from '../helpers/estargz-build.js';
import { buildTar } from '../helpers/estargz-tar.js';
import { checkProperty, filler, Tally } from '../helpers/fuzz-run.js';

const sha256 = (b: Uint8Array): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Runs `f`; an EstargzError is an answer, anything else thrown fails the property. */
async function resultOr<T>(f: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    if (!isEstargzError(e)) throw new Error(`threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}, not an EstargzError`);
    JSON.stringify(e.detail); // detail must be JSON-safe (it reaches an OCI body)
    return undefined;
  }
}

async function build(tar: Buffer): Promise<{ blob: Buffer; tocOffset: number; tocDigest: string }> {
  const parts: Buffer[] = [];
  const sink = new Writable({ write: (c: Buffer, _e, cb) => (parts.push(c), cb()) });
  const r = await convertToEstargz(Readable.from([tar]), sink, { chunkSize: 16 * 1024, compressionLevel: 1 });
  return { blob: Buffer.concat(parts), tocOffset: r.tocOffset, tocDigest: r.tocDigest };
}

const files = { 'etc/a.txt': Buffer.from('hello\n'), 'big.bin': filler(40 * 1024, 7), 'x/y/z': filler(3000, 9) };
const tar = buildTar([{ type: 'dir', name: 'etc' }, ...Object.entries(files).map(([name, content]) => ({ type: 'file' as const, name, content })), { type: 'hardlink', name: 'x/link', target: 'x/y/z' }]);
const base = await build(tar);
const baseToc = tocOf(base.blob, base.tocOffset);

/** Positions biased to where the footer and TOC are. */
const position = (len: number): fc.Arbitrary<number> => fc.oneof(fc.nat({ max: len - 1 }), fc.nat({ max: Math.min(600, len) - 1 }).map((k) => len - 1 - k));

/** Damage to a blob: flipped bytes, a cut, inserted bytes, a new footer. */
type Damage = { flip: [number, number][] } | { cut: number } | { insert: [number, number[]] } | { footer: ['estargz' | 'legacy', number] };
const damage = (len: number): fc.Arbitrary<Damage> =>
  fc.oneof(
    fc.record({ flip: fc.array(fc.tuple(position(len), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }) }),
    fc.record({ cut: position(len) }),
    fc.record({ insert: fc.tuple(position(len), fc.array(fc.nat({ max: 255 }), { minLength: 1, maxLength: 8 })) }),
    fc.record({ footer: fc.tuple(fc.constantFrom('estargz' as const, 'legacy' as const), fc.oneof(fc.nat({ max: len + 100 }), fc.constant(2 ** 53 - 1))) }),
  );

function apply(blob: Buffer, d: Damage): Buffer {
  if ('flip' in d) {
    const b = Buffer.from(blob);
    for (const [at, x] of d.flip) b[at] = b[at]! ^ x;
    return b;
  }
  if ('cut' in d) return blob.subarray(0, d.cut);
  if ('insert' in d) return Buffer.concat([blob.subarray(0, d.insert[0]), Buffer.from(d.insert[1]), blob.subarray(d.insert[0])]);
  const [kind, offset] = d.footer;
  const size = kind === 'estargz' ? 51 : 47;
  return Buffer.concat([blob.subarray(0, -51), kind === 'estargz' ? estargzFooter(offset) : legacyStargzFooter(offset)]).subarray(0, blob.length - 51 + size);
}

/**
 * Opens `blob` and reads every regular file. Checks the index stays inside the blob and that
 * every piece handed out hashes to a digest of the TOC (or the file's digest, for one-piece files).
 */
async function openAndRead(blob: Buffer, tally: Tally, expectedTocDigest?: string): Promise<EstargzIndex | undefined> {
  const src = bufferSource(blob);
  const index = await resultOr(() => openEstargz(src, expectedTocDigest ? { expectedTocDigest } : {}));
  for (const r of src.reads) if (r.offset < 0 || r.length < 0 || r.offset + r.length > blob.length) throw new Error(`read outside the blob: ${JSON.stringify(r)}`);
  if (!index) {
    tally.held('EstargzError');
    return undefined;
  }
  tally.held('opened');
  for (const e of index.entries) {
    if (e.path.startsWith('/') || e.path.split('/').includes('..')) throw new Error(`unsafe path ${e.path}`);
    for (const c of e.chunks) {
      if (!(c.offset > 0 && c.offset < c.end && c.end <= index.dataEnd && index.dataEnd <= blob.length)) throw new Error(`chunk outside the data: ${JSON.stringify(c)}`);
      if (!(c.size > 0 && c.chunkOffset + c.size <= e.size)) throw new Error(`chunk outside its file: ${JSON.stringify(c)}`);
    }
  }
  tally.held('index-inside-the-blob');
  for (const e of index.entries.filter((x) => x.type === 'reg')) {
    const pieces: Buffer[] = [];
    const ok = await resultOr(async () => {
      for await (const { chunk, data } of fileChunks(index, src, e.path)) {
        const digest = chunk.digest ?? (e.chunks.length === 1 ? e.digest : undefined);
        if (digest === undefined) throw new Error(`unverified piece handed out: ${e.path}#${chunk.index}`);
        if (sha256(data) !== digest) throw new Error(`piece of ${e.path} does not hash to its digest`);
        pieces.push(data);
      }
      return true;
    });
    if (ok) {
      const whole = Buffer.concat(pieces);
      if (whole.length !== e.size) throw new Error(`${e.path}: ${whole.length} bytes, TOC says ${e.size}`);
      const truth = (files as Record<string, Buffer>)[e.path];
      if (expectedTocDigest && truth && !whole.equals(truth)) throw new Error(`${e.path}: wrong bytes under the verified TOC`);
      tally.held('verified-bytes');
    }
  }
  return index;
}

t.test('footers', async (t) => {
  const tally = new Tally();
  const tail = fc.oneof(
    fc.uint8Array({ maxLength: 60 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.constantFrom(estargzFooter(10), legacyStargzFooter(10), estargzFooter(2 ** 40)), fc.nat({ max: 50 }), fc.integer({ min: 1, max: 255 })).map(([f, at, x]) => {
      const b = Buffer.from(f);
      b[at % b.length] = b[at % b.length]! ^ x;
      return b;
    }),
    fc.tuple(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }), fc.constantFrom(1n, 0n, 2n)).map(([a, b, c, type]) => {
      const f = Buffer.alloc(48);
      f.writeUInt32LE(0x184d2a50, 0);
      f.writeUInt32LE(40, 4);
      f.writeBigUInt64LE(a, 8);
      f.writeBigUInt64LE(b, 16);
      f.writeBigUInt64LE(c, 24);
      f.writeBigUInt64LE(type, 32);
      f.write('GnUlInUx', 40, 'latin1');
      return f;
    }),
  );
  await checkProperty(t, 'parseFooter: any tail, any size → undefined, a footer whose TOC lies inside the blob, or an EstargzError', fc.asyncProperty(tail, fc.oneof(fc.nat({ max: 200 }), fc.nat()), async (b, size) => {
    const f = await resultOr(() => parseFooter(b, size));
    if (f && f.format !== 'estargz-external-toc') {
      if (!(Number.isSafeInteger(f.tocOffset) && f.tocOffset >= 0 && f.tocOffset < size - f.footerSize)) throw new Error(`TOC offset ${f.tocOffset} outside a blob of ${size}`);
      if (f.tocCompressedSize !== undefined && f.tocOffset + f.tocCompressedSize > size - f.footerSize) throw new Error('zstd TOC beyond the footer');
      tally.held('toc-inside-the-blob');
    } else tally.held(f ? 'external' : 'no-footer-or-error');
  }), { numRuns: 3000, timeLimitMs: 5000 }, tally);
});

t.test('the TOC', async (t) => {
  const tally = new Tally();
  const tarOf = fc.oneof(
    fc.uint8Array({ maxLength: 1600 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.nat({ max: 2000 }), fc.array(fc.tuple(fc.nat({ max: 1535 }), fc.nat({ max: 255 })), { maxLength: 4 })).map(([len, edits]) => {
      const b = Buffer.concat([ustarHeader({ name: 'stargz.index.json', size: len }), filler(1024, len)]);
      for (const [at, v] of edits) b[at] = v;
      return b;
    }),
  );
  await checkProperty(t, 'unwrapTocTar: any bytes → at most maxTocBytes of JSON, or an EstargzError', fc.asyncProperty(tarOf, fc.nat({ max: 2048 }), async (b, max) => {
    const json = await resultOr(() => unwrapTocTar(b, max));
    if (json && json.length > max) throw new Error(`${json.length} bytes > ${max}`);
    tally.held(json ? 'bounded' : 'EstargzError');
  }), { numRuns: 2000, timeLimitMs: 5000 }, tally);

  const num = fc.oneof(fc.nat({ max: 200_000 }), fc.integer({ min: -3, max: -1 }), fc.double(), fc.constantFrom(2 ** 53, 1e300, 0), fc.string({ maxLength: 3 }));
  const pathish = fc.oneof(
    fc.constantFrom('etc/a.txt', 'big.bin', 'x/y/z', './etc', 'etc/', '/', './', '.', '', '..', '../x', 'a/../../b', '/etc/passwd', 'a\0b', 'a//b'),
    fc.string({ maxLength: 12 }),
  );
  const entry = fc.record(
    {
      name: fc.oneof({ weight: 5, arbitrary: pathish }, { weight: 1, arbitrary: fc.jsonValue() }),
      type: fc.oneof({ weight: 5, arbitrary: fc.constantFrom('dir', 'reg', 'symlink', 'hardlink', 'char', 'block', 'fifo', 'chunk') }, { weight: 1, arbitrary: fc.jsonValue() }),
      size: num,
      offset: num,
      chunkOffset: num,
      chunkSize: num,
      innerOffset: num,
      linkName: pathish,
      digest: fc.oneof(fc.constantFrom(baseToc.entries.find((e) => e['digest'])?.['digest'] as string), fc.string({ maxLength: 5 })),
      chunkDigest: fc.oneof(fc.constantFrom(...baseToc.entries.map((e) => e['chunkDigest'] as string).filter(Boolean)), fc.string({ maxLength: 5 })),
      mode: num,
      xattrs: fc.oneof(fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.base64String({ maxLength: 8 }), fc.string({ maxLength: 4 }))), fc.jsonValue()),
    },
    { requiredKeys: ['name', 'type'] },
  );
  /** The writer's TOC with entries replaced, mutated or added. */
  const doc = fc.oneof(
    fc.array(entry, { maxLength: 6 }).map((entries) => ({ version: 1, entries })),
    fc.tuple(fc.nat(), fc.constantFrom('name', 'type', 'size', 'offset', 'chunkOffset', 'chunkSize', 'innerOffset', 'digest', 'chunkDigest', 'linkName'), fc.jsonValue()).map(([i, k, v]) => {
      const d = structuredClone(baseToc);
      const e = d.entries[i % d.entries.length]!;
      e[k] = v;
      return d;
    }),
    fc.jsonValue().map((v) => ({ version: 1, entries: v })),
    fc.jsonValue(),
  );
  const tally2 = new Tally();
  await checkProperty(t, 'any TOC document → an index inside the blob whose every handed-out byte is verified, or an EstargzError', fc.asyncProperty(doc, async (d) => {
    await resultOr(() => parseTocJson(Buffer.from(JSON.stringify(d) ?? 'null')));
    await openAndRead(withToc(base.blob, base.tocOffset, JSON.stringify(d) ?? 'null'), tally2);
  }), { numRuns: 600, timeLimitMs: 10_000, caseTimeoutMs: 5000 }, tally2);

  // issue 11 item 8: umoci and the reference converter start layers with an entry named "/" or "./"
  const tally3 = new Tally();
  await checkProperty(t, 'a TOC whose root directory entry is named "/", "./" or "." opens, and its files read', fc.asyncProperty(fc.constantFrom('/', './', '.'), async (root) => {
    const d = structuredClone(baseToc);
    d.entries.unshift({ name: root, type: 'dir', mode: 0o755 });
    const index = await openAndRead(withToc(base.blob, base.tocOffset, JSON.stringify(d)), new Tally());
    if (!index) throw new Error(`the TOC with a "${root}" entry does not open`);
    tally3.held('opened');
  }), { numRuns: 3, timeLimitMs: 5000 }, tally3);
});

t.test('whole blobs with damage anywhere', async (t) => {
  const tally = new Tally();
  await checkProperty(t, 'openEstargz + reading every file of a damaged blob: verified bytes (the true ones under the expected TOC digest), or an EstargzError', fc.asyncProperty(fc.array(damage(base.blob.length), { minLength: 1, maxLength: 2 }), fc.boolean(), async (ds, expect) => {
    const blob = ds.reduce(apply, base.blob);
    await openAndRead(blob, tally, expect ? base.tocDigest : undefined);
  }), { numRuns: 800, timeLimitMs: 12_000, caseTimeoutMs: 5000 }, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'the undamaged blob opens and every file reads back true (the property above can tell)', fc.asyncProperty(fc.boolean(), async (expect) => {
    const index = await openAndRead(base.blob, tally2, expect ? base.tocDigest : undefined);
    if (!index || tally2.toString().includes('verified-bytes') === false) throw new Error('the honest blob does not read');
  }), { numRuns: 2, timeLimitMs: 5000 }, tally2);
});

/** A zstd frame of raw, RLE or "compressed" (random) blocks, with an arbitrary frame header. */
const zstdFrame = fc
  .tuple(
    fc.nat({ max: 255 }),
    fc.uint8Array({ minLength: 0, maxLength: 8 }),
    fc.array(fc.tuple(fc.constantFrom(0, 1, 2), fc.uint8Array({ maxLength: 64 })), { minLength: 1, maxLength: 3 }),
  )
  .map(([fhd, header, blocks]) => {
    const parts: Buffer[] = [Buffer.from([0x28, 0xb5, 0x2f, 0xfd, fhd & ~0x08]), Buffer.from(header)];
    blocks.forEach(([type, data], i) => {
      const size = type === 1 ? 1 + (data[0] ?? 0) * 4096 : data.length;
      const bh = ((i === blocks.length - 1 ? 1 : 0) | (type << 1) | (size << 3)) >>> 0;
      parts.push(Buffer.from([bh & 0xff, (bh >> 8) & 0xff, (bh >> 16) & 0xff]), type === 1 ? Buffer.from([data[1] ?? 0]) : Buffer.from(data));
    });
    return Buffer.concat(parts);
  });

t.test('zstd frames', async (t) => {
  const tally = new Tally();
  const limit = 256 * 1024;
  await checkProperty(t, 'zstd decompress: any frames → at most `limit` bytes, or an EstargzError', fc.asyncProperty(fc.oneof(zstdFrame, fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b))), fc.option(fc.nat({ max: 100_000 }), { nil: undefined }), async (input, maxWindow) => {
    const before = process.memoryUsage().arrayBuffers;
    const out = await resultOr(() => decompress('zstd', input, maxWindow === undefined ? { limit } : { limit, maxWindow }));
    if (out && out.length > limit) throw new Error(`${out.length} bytes out`);
    if (process.memoryUsage().arrayBuffers - before > 512 << 20) throw new Error('more than 512 MiB allocated for one frame');
    tally.held(out ? 'bounded' : 'EstargzError');
  }), { numRuns: 2000, timeLimitMs: 8000, caseTimeoutMs: 5000 }, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'a zstd:chunked footer over any frames → an index or an EstargzError', fc.asyncProperty(zstdFrame, fc.nat({ max: 400 }), fc.nat({ max: 2 ** 31 }), async (frame, pad, ulen) => {
    const skippable = Buffer.alloc(8);
    skippable.writeUInt32LE(0x184d2a50, 0);
    skippable.writeUInt32LE(frame.length, 4);
    const tocOffset = pad + 8;
    const footer = Buffer.alloc(48);
    footer.writeUInt32LE(0x184d2a50, 0);
    footer.writeUInt32LE(40, 4);
    footer.writeBigUInt64LE(BigInt(tocOffset), 8);
    footer.writeBigUInt64LE(BigInt(frame.length), 16);
    footer.writeBigUInt64LE(BigInt(ulen), 24);
    footer.writeBigUInt64LE(1n, 32);
    footer.write('GnUlInUx', 40, 'latin1');
    const blob = Buffer.concat([filler(pad, pad + 1), skippable, frame, footer]);
    await openAndRead(blob, tally2);
  }), { numRuns: 1000, timeLimitMs: 8000, caseTimeoutMs: 5000 }, tally2);
});

t.test('the TOC member stays a gzip of a tar', async (t) => {
  // guards the blob surgery above: a TOC swapped in by withToc is what openEstargz reads
  const index = await openEstargz(bufferSource(withToc(base.blob, base.tocOffset, JSON.stringify(baseToc))));
  t.equal(index.entries.length, baseToc.entries.filter((e) => e['type'] !== 'chunk').length);
  t.ok(tocMember('{}').length > 0);
});
