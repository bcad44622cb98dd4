// fleet: the settings as the README shows them, their defaults, and one clear message per mistake.
import t from 'tap';
import { ConfigError } from '../../src/config.js';
import { configLoader } from '../helpers/config-file.js';
import { readmeSnippet } from '../helpers/readme.js';

const load = await configLoader(t, 'pullthrough-fleet-config-');
const S3 = 'cache:\n  s3: { bucket: my-cache }\n';

t.test("the README's fleet config", async (t) => {
  const c = await load(readmeSnippet('fleet-config'), { FLEET_SECRET: 'a-secret-of-some-length' });
  t.same(c.fleet, { redis: 'redis://redis.internal:6379', advertise: 'http://10.0.3.7:5000', secret: 'a-secret-of-some-length', leaseTtlMs: 5000 });
  t.equal(c.cache.s3?.bucket, 'my-registry-cache');
});

t.test('defaults: the lease TTL, and no advertise (the --listen address)', async (t) => {
  const c = await load(`${S3}fleet:\n  redis: rediss://:pw@r:6380/2\n  secret: 0123456789abcdef\n`);
  t.same(c.fleet, { redis: 'rediss://:pw@r:6380/2', secret: '0123456789abcdef', leaseTtlMs: 5000 });
  t.equal(c.fleet?.advertise, undefined);
  t.equal((await load(S3)).fleet, undefined, 'no fleet: nothing coordinates');
});

t.test('mistakes name the key', async (t) => {
  const cases: [string, RegExp][] = [
    [`${S3}fleet:\n  secret: 0123456789abcdef\n`, /fleet\.redis: is required/],
    [`${S3}fleet:\n  redis: http://r:6379\n  secret: 0123456789abcdef\n`, /fleet\.redis: "http:" must be redis: or rediss:/],
    [`${S3}fleet:\n  redis: not a url\n  secret: 0123456789abcdef\n`, /fleet\.redis: "not a url" is not a URL/],
    [`${S3}fleet:\n  redis: redis://r\n`, /fleet\.secret: is required/],
    [`${S3}fleet:\n  redis: redis://r\n  secret: \${UNSET}\n`, /fleet\.secret: is required/],
    [`${S3}fleet:\n  redis: redis://r\n  secret: short\n`, /fleet\.secret: must be at least 16 characters/],
    [`${S3}fleet:\n  redis: redis://r\n  secret: 0123456789abcdef\n  advertise: http://h:1/path\n`, /fleet\.advertise: .* must be only a scheme, host and port/],
    [`${S3}fleet:\n  redis: redis://r\n  secret: 0123456789abcdef\n  leaseTtl: 100ms\n`, /fleet\.leaseTtl: must be from 1s to 60s/],
    [`${S3}fleet:\n  redis: redis://r\n  secret: 0123456789abcdef\n  lease: 5s\n`, /fleet\.lease/],
    ['fleet:\n  redis: redis://r\n  secret: 0123456789abcdef\n', /fleet: needs cache\.s3/],
  ];
  for (const [yaml, message] of cases) {
    const e = await load(yaml).then(() => undefined, (err: unknown) => err);
    t.ok(e instanceof ConfigError, `${message}: a ConfigError`);
    t.match(String((e as Error).message), message);
  }
});

t.test('the secret is never in a config error', async (t) => {
  const e = await load(`${S3}fleet:\n  redis: ftp://r\n  secret: the-real-secret-value-123\n`).catch((err: Error) => err);
  t.notMatch(String((e as Error).message), /the-real-secret-value-123/);
});
