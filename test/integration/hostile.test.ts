// pullthrough in front of our own hostile registry: what an upstream's lies must never do to a
// client. Each misbehaviour of test/helpers/hostile-registry.ts has a case here or in the test
// of the fix it drove.
import t from 'tap';
import { hostileSetup } from '../helpers/hostile-registry.js';

t.test('an honest hostile registry is served as it is', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const blob = Buffer.from('hello, hostile world');
  const digest = reg.addBlob(blob);
  const res = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`);
  t.equal(res.status, 200);
  t.same(Buffer.from(await res.arrayBuffer()), blob);
  t.equal(reg.count({ pathIncludes: '/blobs/' }), 1);
});

t.test('a flipped byte is never served complete, nor cached', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const blob = Buffer.alloc(200_000, 7);
  const digest = reg.addBlob(blob);
  reg.misbehave({ kind: 'wrongByte', offset: 100 }, { times: 1 });
  const bad = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`).then(async (r) => Buffer.from(await r.arrayBuffer())).catch(() => undefined);
  t.not(bad?.equals(blob), true, 'no complete body of the lie');
  const good = await fetch(`${proxy.url}/v2/hostile/lib/x/blobs/${digest}`);
  t.same(Buffer.from(await good.arrayBuffer()), blob, 'the next request gets the truth');
});
