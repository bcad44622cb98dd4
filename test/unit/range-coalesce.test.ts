// Several ranges of one blob: coalesced into ascending, disjoint, non-adjacent ranges covering
// exactly the bytes asked for, so a multi-range answer never holds a byte twice.
import fc from 'fast-check';
import t from 'tap';
import { coalesce, parseRanges, satisfy, type ByteRange } from '../../src/oci/range.js';

const bytesOf = (ranges: readonly ByteRange[]) => {
  const s = new Set<number>();
  for (const r of ranges) for (let i = r.start; i < r.end; i++) s.add(i);
  return s;
};

t.test('examples', async (t) => {
  t.same(coalesce([]), []);
  t.same(coalesce(Array.from({ length: 64 }, () => ({ start: 0, end: 1000 }))), [{ start: 0, end: 1000 }], '64 copies of the whole blob: one');
  t.same(coalesce([{ start: 500, end: 600 }, { start: 0, end: 100 }, { start: 50, end: 150 }, { start: 150, end: 200 }, { start: 900, end: 1000 }]),
    [{ start: 0, end: 200 }, { start: 500, end: 600 }, { start: 900, end: 1000 }], 'overlapping and adjacent merged, out of order sorted');
  t.same(coalesce([{ start: 10, end: 21 }, { start: 22, end: 31 }]), [{ start: 10, end: 21 }, { start: 22, end: 31 }], 'a gap of one byte stays a gap');
  t.same(coalesce([{ start: 0, end: 101 }, { start: 10, end: 21 }]), [{ start: 0, end: 101 }], 'one range inside another');
  const input = [{ start: 5, end: 10 }, { start: 0, end: 7 }];
  coalesce(input);
  t.same(input, [{ start: 5, end: 10 }, { start: 0, end: 7 }], 'the input is left as it was');
});

t.test('property: ascending, disjoint, non-adjacent, the same bytes, never more than the blob', async (t) => {
  let cases = 0;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 300 }),
      fc.array(fc.tuple(fc.nat(400), fc.option(fc.nat(400), { nil: undefined }), fc.boolean()), { minLength: 1, maxLength: 64 }),
      (size, asked) => {
        cases++;
        const satisfied = asked.flatMap(([a, b, suffix]) => {
          try {
            return [satisfy(suffix ? { suffix: a } : { start: Math.min(a, b ?? a), end: b === undefined ? undefined : Math.max(a, b) + 1 }, size)];
          } catch {
            return [];
          }
        });
        const out = coalesce(satisfied);
        for (let i = 1; i < out.length; i++) if (out[i]!.start <= out[i - 1]!.end) return false;
        if (out.some((r) => r.start >= r.end || r.start < 0 || r.end > size)) return false;
        const total = out.reduce((n, r) => n + r.end - r.start, 0);
        const want = bytesOf(satisfied);
        return total <= size && total === want.size && [...bytesOf(out)].every((b) => want.has(b));
      },
    ),
    { numRuns: 500 },
  );
  t.equal(cases, 500, `${cases} cases, invariants held`);
});

t.test('more than 64 parts are not parsed: the Range is ignored', async (t) => {
  t.equal(parseRanges(`bytes=${Array(64).fill('0-').join(',')}`)?.length, 64);
  t.equal(parseRanges(`bytes=${Array(65).fill('0-').join(',')}`), undefined);
});
