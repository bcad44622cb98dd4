// Properties of the tar reader: header blocks, PAX records, whole tar streams (plain or gzip).
// For any bytes at all: a result or a TarError (never another exception, a hang or a huge
// allocation), numbers that are safe, and entry bodies that fit in the input.
import t from 'tap';
import fc from 'fast-check';
import { gzipSync } from 'node:zlib';
import { applyPax, ByteReader, isTarError, maybeGunzip, parseHeaderBlock, parsePax, tarEntries, ustarHeader } from '../../../src/tar/index.js';
import { buildTar } from '../../helpers/estargz-tar.js';
import { checkProperty, filler, Tally } from '../../helpers/fuzz-run.js';

/** Runs `f`; a TarError is an answer, anything else thrown fails the property. */
async function resultOr<T>(f: () => T | Promise<T>): Promise<T | undefined> {
  try {
    return await f();
  } catch (e) {
    if (!isTarError(e)) throw new Error(`threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}, not a TarError`);
    JSON.stringify(e.detail); // detail must be JSON-safe (it reaches an OCI body)
    return undefined;
  }
}

const files = { 'etc/a.txt': Buffer.from('hello\n'), 'big.bin': filler(40 * 1024, 7), 'x/y/z': filler(3000, 9) };
const tar = buildTar([{ type: 'dir', name: 'etc' }, ...Object.entries(files).map(([name, content]) => ({ type: 'file' as const, name, content })), { type: 'hardlink', name: 'x/link', target: 'x/y/z' }]);

/** A ustar header block with `edits` applied and the checksum made right again (so parsing gets past it). */
function editedHeader(fields: { name: string; size: number; typeflag: string }, edits: [number, number][]): Buffer {
  const b = ustarHeader({ name: fields.name, size: fields.size, typeflag: fields.typeflag });
  for (const [at, v] of edits) b[at % 512] = v;
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const v of b) sum += v;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return b;
}

t.test('tar headers and PAX records', async (t) => {
  const tally = new Tally();
  const block = fc.oneof(
    fc.uint8Array({ minLength: 512, maxLength: 512 }).map((b) => Buffer.from(b)),
    fc.tuple(
      fc.record({ name: fc.string({ maxLength: 40 }).filter((s) => Buffer.byteLength(s) <= 100), size: fc.nat({ max: 0o77777777777 }), typeflag: fc.constantFrom('0', '5', 'x', 'g', 'L', '1', '2', 'S') }),
      fc.array(fc.tuple(fc.nat({ max: 511 }), fc.nat({ max: 255 })), { maxLength: 6 }),
    ).map(([f, e]) => editedHeader(f, e)),
  );
  await checkProperty(t, 'parseHeaderBlock: any 512 bytes → a header with a safe size, or a TarError', fc.asyncProperty(block, async (b) => {
    const h = await resultOr(() => parseHeaderBlock(b));
    if (h) {
      for (const k of ['size', 'mode', 'uid', 'gid', 'mtime', 'devMajor', 'devMinor'] as const) if (!Number.isSafeInteger(h[k]) || h[k] < 0) throw new Error(`${k} = ${h[k]}`);
      tally.held('safe-numbers');
    } else tally.held('TarError');
  }), { numRuns: 3000, timeLimitMs: 5000 }, tally);

  const tally2 = new Tally();
  const record = fc.tuple(fc.string({ minLength: 1, maxLength: 12 }).filter((k) => !k.includes('=') && !k.includes('\0')), fc.string({ maxLength: 20 }));
  const paxText = (rs: [string, string][]): Buffer =>
    Buffer.concat(
      rs.map(([k, v]) => {
        const body = ` ${k}=${v}\n`;
        let len = Buffer.byteLength(body) + 1;
        while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
        return Buffer.from(`${len}${body}`);
      }),
    );
  const pax = fc.oneof(
    fc.uint8Array({ maxLength: 80 }).map((b) => ({ bytes: Buffer.from(b), records: undefined })),
    fc.uniqueArray(record, { maxLength: 4, selector: ([k]) => k }).map((rs) => ({ bytes: paxText(rs), records: rs })),
    fc.tuple(fc.uniqueArray(record, { minLength: 1, maxLength: 4, selector: ([k]) => k }), fc.nat(), fc.nat({ max: 255 })).map(([rs, at, v]) => {
      const b = paxText(rs);
      b[at % b.length] = v;
      return { bytes: b, records: undefined };
    }),
    fc.tuple(fc.constantFrom('size', 'uid', 'gid', 'mtime', 'path'), fc.oneof(fc.constantFrom('-1', '1e400', '9007199254740993', '1.5', '', 'x', '0x10', '00', '12.'), fc.string({ maxLength: 8 }))).map(([k, v]) => ({ bytes: paxText([[k, v]]), records: undefined })),
  );
  await checkProperty(t, 'parsePax/applyPax: any bytes → records (well-formed ones given back) applied as safe numbers, or a TarError', fc.asyncProperty(pax, async ({ bytes, records }) => {
    const m = await resultOr(() => parsePax(bytes));
    if (records) {
      if (!m) throw new Error('well-formed PAX records refused');
      for (const [k, v] of records) if (m.get(k)?.toString('utf8') !== v) throw new Error(`record ${k} read as ${m.get(k)?.toString('utf8')}`);
      tally2.held('round-trip');
    }
    if (!m) return tally2.held('TarError');
    const h = parseHeaderBlock(ustarHeader({ name: 'f', size: 0 }));
    await resultOr(() => applyPax(h, m));
    for (const k of ['size', 'uid', 'gid', 'mtime'] as const) if (!Number.isSafeInteger(h[k]) || h[k] < 0) throw new Error(`${k} = ${h[k]}`);
    tally2.held('safe-numbers');
  }), { numRuns: 3000, timeLimitMs: 5000 }, tally2);
});

t.test('tar streams', async (t) => {
  const tally = new Tally();
  const input = fc.oneof(
    fc.tuple(fc.constant(tar), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 3 }), fc.boolean()).map(([b, flips, gz]) => {
      const c = Buffer.from(b);
      for (const [at, x] of flips) c[at % c.length] = c[at % c.length]! ^ x;
      return gz ? gzipSync(c) : c;
    }),
    fc.tuple(fc.constant(tar), fc.nat()).map(([b, n]) => b.subarray(0, n % b.length)),
    fc.uint8Array({ maxLength: 2048 }).map((b) => Buffer.from(b)),
    fc.tuple(fc.nat({ max: 0o77777777777 }), fc.constantFrom('0', 'x', 'L', 'g')).map(([size, flag]) => Buffer.concat([ustarHeader({ name: 'f', size, typeflag: flag }), filler(700, size)])),
  );
  await checkProperty(t, 'tarEntries: any bytes (plain or gzip) → entries whose bodies fit in the input, or a TarError', fc.asyncProperty(input, async (bytes) => {
    let body = 0;
    const ok = await resultOr(async () => {
      for await (const e of tarEntries(new ByteReader(maybeGunzip((async function* () { yield bytes; })())))) {
        for (let b = await e.readBody(65536); b; b = await e.readBody(65536)) body += b.length;
      }
      return true;
    });
    if (body > bytes.length * 1100) throw new Error(`${body} body bytes from ${bytes.length} input bytes`);
    tally.held(ok ? 'entries' : 'TarError');
  }), { numRuns: 1000, timeLimitMs: 8000, caseTimeoutMs: 5000 }, tally);
});
