// An upstream's Retry-After reaches clients only when a client can act on it: delay-seconds up to
// a day, or an HTTP date; anything else is dropped rather than passed on.
import { Readable } from 'node:stream';
import t from 'tap';
import { errorFromResponse, saneRetryAfter } from '../../../src/upstreams/errors.js';

t.test('delay-seconds within a day and IMF-fixdate dates are kept', async (t) => {
  for (const v of ['0', '120', '86400', 'Sun, 06 Nov 1994 08:49:37 GMT', 'Wed, 21 Oct 2015 07:28:00 GMT']) t.equal(saneRetryAfter(v), v, v);
  t.equal(saneRetryAfter(' 30 '), '30', 'surrounding blanks trimmed');
});

t.test('anything else is dropped', async (t) => {
  const insane = [
    '', '-1', '86401', '999999999999', '1e3', '1.5', '0x10', '30s', 'soon', 'NaN', 'Infinity', '5, 6',
    'Mon, 06 Nov 1994 08:49:37 GMT', // the wrong weekday
    'Sun, 31 Feb 2026 08:49:37 GMT', // no such day
    'Sun, 06 Nov 1994 25:49:37 GMT',
    'Sunday, 06-Nov-94 08:49:37 GMT', // obsolete forms: a sender must not generate them
    'Sun Nov  6 08:49:37 1994',
    '2026-12-02T10:00:00Z',
    `Sun, 06 Nov 1994 08:49:37 GMT${'x'.repeat(100)}`,
  ];
  for (const v of insane) t.equal(saneRetryAfter(v), undefined, JSON.stringify(v.slice(0, 40)));
  t.equal(saneRetryAfter(undefined), undefined);
});

t.test("an upstream 429 carries its Retry-After only when it is sane", async (t) => {
  const ctx = { upstream: 'up', kind: 'blob' as const };
  const sane = await errorFromResponse(ctx, 429, { 'retry-after': '30' }, Readable.from([]));
  t.same(sane.headers, { 'retry-after': '30' });
  const insane = await errorFromResponse(ctx, 429, { 'retry-after': '99999999' }, Readable.from([]));
  t.equal(insane.code, 'TOOMANYREQUESTS');
  t.same(insane.headers, {});
});
