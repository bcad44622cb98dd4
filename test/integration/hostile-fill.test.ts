// pullthrough in front of the hostile registry, for what clients see of a blob download that goes
// wrong: a Range is never completed from unverified bytes unless cache.unverifiedRanges says so,
// and a download that fails before its first byte is a 502 with an OCI body, not an empty reply.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { hostileSetup } from '../helpers/hostile-registry.js';
import { get, type Got } from '../helpers/whole-get.js';

const MiB = 1 << 20;


const ociError = (g: Got) => (JSON.parse(g.body.toString('utf8')) as { errors: { code: string; message: string; detail: unknown }[] }).errors[0];
const describe = (g: Got) => `${g.status}, ${g.body.length} of ${g.headers['content-length']} bytes, ${g.error ?? 'no error'}`;

t.test('a Range over a wrong byte, served from the fill it starts: aborted, never a clean 206', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const blob = randomBytes(512 << 10);
  const digest = reg.addBlob(blob);
  reg.misbehave({ kind: 'wrongByte', offset: 50 }, { times: 1 });
  const url = `${proxy.url}/v2/hostile/lib/x/blobs/${digest}`;
  const res = await get(url, { range: 'bytes=0-99' });
  t.notOk(res.complete && res.status === 206, `no complete-looking 206 of the lie (${describe(res)})`);
  const good = await get(url, { range: 'bytes=0-99' });
  t.ok(good.status === 206 && good.complete && good.body.equals(blob.subarray(0, 100)), 'the next request gets the truth');
});

t.test('a far Range on an uncached blob: from the blob\'s verified fill, not a ranged pass-through', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const blob = randomBytes(9 * MiB);
  const digest = reg.addBlob(blob);
  const url = `${proxy.url}/v2/hostile/lib/x/blobs/${digest}`;
  const start = 9 * MiB - 4096;

  reg.misbehave({ kind: 'wrongByte', offset: 10 }); // byte 10 of every body: of the blob, or of any range
  const bad = await get(url, { range: `bytes=${start}-` });
  t.notOk(bad.complete && bad.status === 206, `a lying upstream: no complete-looking 206 (${describe(bad)})`);
  t.equal(reg.count({ ranged: true }), 0, 'no ranged upstream request');

  reg.behave();
  const good = await get(url, { range: `bytes=${start}-` });
  t.equal(good.status, 206);
  t.equal(good.headers['content-range'], `bytes ${start}-${blob.length - 1}/${blob.length}`);
  t.ok(good.complete && good.body.equals(blob.subarray(start)), 'an honest one: exactly the range');
  t.equal(reg.count({ ranged: true }), 0, 'still no ranged upstream request');
  t.equal(reg.count({ method: 'GET', pathIncludes: digest, ranged: false }), 2, 'one full GET each (the first one failed)');
  const again = await get(url);
  t.ok(again.complete && again.body.equals(blob), 'and the blob was cached whole');
  t.equal(reg.count({ method: 'GET', pathIncludes: digest }), 2, 'served from the cache');
});

t.test('cache.unverifiedRanges: a far Range is a ranged upstream request, passed through as it comes', async (t) => {
  const { reg, proxy } = await hostileSetup(t, { cache: { unverifiedRanges: true, fillOnRange: false } });
  const blob = randomBytes(9 * MiB);
  const digest = reg.addBlob(blob);
  const start = 9 * MiB - 4096;
  const res = await get(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`, { range: `bytes=${start}-` });
  t.ok(res.status === 206 && res.complete && res.body.equals(blob.subarray(start)), 'the range');
  t.same(reg.log.filter((r) => r.path.includes('/blobs/')).map((r) => r.headers.range), [`bytes=${start}-`], 'from one ranged upstream request, no fill');
});

t.test('a download that fails before its first byte: 502 with an OCI body, not an empty reply', async (t) => {
  const cases = [
    ['the upstream resets right after its headers', { kind: 'resetAfter', bytes: 0 }, {}],
    ['the upstream goes silent right after its headers', { kind: 'stallAfter', bytes: 0 }, { timeouts: { body: '300ms' } }],
  ] as const;
  for (const [name, lie, doc] of cases) {
    const { reg, proxy } = await hostileSetup(t, doc);
    const blob = randomBytes(100_000);
    const digest = reg.addBlob(blob);
    reg.misbehave(lie);
    const url = `${proxy.url}/v2/hostile/lib/x/blobs/${digest}`;
    for (const range of [undefined, 'bytes=1000-1999']) {
      const what = `${name}${range ? ', a Range' : ''}`;
      const res = await get(url, range ? { range } : {});
      t.equal(res.status, 502, `${what}: 502 (${describe(res)})`);
      t.match(ociError(res), { code: 'UNKNOWN', message: /upstream "hostile"/ }, `${what}: an OCI body`);
    }
    reg.behave();
    const good = await get(url);
    t.ok(good.status === 200 && good.complete && good.body.equals(blob), `${name}: an honest upstream afterwards gets the blob`);
  }
});
