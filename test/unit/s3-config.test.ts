// cache.s3: the settings, their defaults and fallbacks, and one clear message per mistake.
import t from 'tap';
import { ConfigError } from '../../src/config.js';
import { configLoader } from '../helpers/config-file.js';

const load = await configLoader(t, 'pullthrough-s3-config-');

t.test('no cache.s3: the filesystem cache', async (t) => {
  t.equal((await load('cache:\n  dir: /x\n')).cache.s3, undefined);
  t.equal((await load('cache:\n  s3: null\n')).cache.s3, undefined);
});

t.test('every setting, and the prefix normalised', async (t) => {
  const c = await load(`
cache:
  dir: /var/cache/pullthrough
  s3:
    bucket: \${BUCKET}
    prefix: /fleet/pullthrough
    region: eu-west-1
    endpoint: http://127.0.0.1:9000
    forcePathStyle: true
    localTier: true
    redirect: true
    redirectTtl: 10m
`, { BUCKET: 'my-cache.bucket' });
  t.same(c.cache.s3, {
    bucket: 'my-cache.bucket',
    prefix: 'fleet/pullthrough/',
    region: 'eu-west-1',
    endpoint: 'http://127.0.0.1:9000',
    forcePathStyle: true,
    localTier: true,
    redirect: true,
    redirectTtlMs: 600_000,
  });
  t.ok(Object.isFrozen(c.cache.s3));
});

t.test('defaults; the region from the AWS environment, else us-east-1', async (t) => {
  const c = await load('cache:\n  s3:\n    bucket: b-1\n');
  t.same(c.cache.s3, { bucket: 'b-1', prefix: '', region: 'us-east-1', endpoint: undefined, forcePathStyle: false, localTier: false, redirect: false, redirectTtlMs: 300_000 });
  t.equal((await load('cache:\n  s3:\n    bucket: b-1\n', { AWS_REGION: 'ap-south-1' })).cache.s3?.region, 'ap-south-1');
  t.equal((await load('cache:\n  s3:\n    bucket: b-1\n', { AWS_DEFAULT_REGION: 'sa-east-1' })).cache.s3?.region, 'sa-east-1');
  t.equal((await load('cache:\n  s3:\n    bucket: b-1\n    prefix: a/b/\n')).cache.s3?.prefix, 'a/b/');
});

t.test('mistakes name the key', async (t) => {
  const cases: [string, string, RegExp][] = [
    ['s3: yes-please', 'cache.s3', /mapping/],
    ['s3: {}', 'cache.s3.bucket', /required/],
    ['s3: { bucket: My_Bucket }', 'cache.s3.bucket', /not an S3 bucket name/],
    ['s3: { bucket: b-1, prefix: "a/../b" }', 'cache.s3.prefix', /segments/],
    ['s3: { bucket: b-1, prefix: "a b" }', 'cache.s3.prefix', /may hold only/],
    ['s3: { bucket: b-1, endpoint: "ftp://x" }', 'cache.s3.endpoint', /http or https/],
    ['s3: { bucket: b-1, redirect: maybe }', 'cache.s3.redirect', /true or false/],
    ['s3: { bucket: b-1, redirectTtl: 30d }', 'cache.s3.redirectTtl', /7d/],
    ['s3: { bucket: b-1, accessKeyId: AKIA }', 'cache.s3.accessKeyId', /credential chain/],
  ];
  for (const [doc, key, problem] of cases) {
    const err = await load(`cache:\n  ${doc}\n`).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof ConfigError, `${doc}: a ConfigError`);
    t.equal((err as ConfigError).key, key, `${doc}: names ${key}`);
    t.match((err as ConfigError).message, problem);
  }
});
