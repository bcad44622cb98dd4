import t from 'tap';
import { mayReceiveCredentials, registrableDomain } from '../../../src/upstreams/auth/realm-policy.js';

const table: [string, string, boolean][] = [
  ['https://registry-1.docker.io', 'https://auth.docker.io/token', true],
  ['https://docker.io', 'https://auth.docker.io/token', true],
  ['https://ghcr.io', 'https://ghcr.io/token', true],
  ['https://ghcr.io', 'https://ghcr.io:8443/token', true],
  ['https://123456789012.dkr.ecr.us-east-1.amazonaws.com', 'https://123456789012.dkr.ecr.us-east-1.amazonaws.com/', true],
  ['https://123456789012.dkr.ecr.us-east-1.amazonaws.com', 'https://evil.com/token', false],
  ['https://123456789012.dkr.ecr.us-east-1.amazonaws.com', 'https://bucket.s3.amazonaws.com/token', false],
  ['https://us-docker.pkg.dev', 'https://us-docker.pkg.dev/v2/token', true],
  ['https://registry.example.co.uk', 'https://auth.example.co.uk/token', true],
  ['https://example.co.uk', 'https://other.co.uk/token', false],
  ['https://registry.example.com.au', 'https://auth.other.com.au/token', false],
  ['https://registry.example.com', 'https://example.com.evil.net/token', false],
  ['https://REGISTRY.Example.com.', 'https://auth.example.com/token', true],
  ['http://127.0.0.1:5000', 'http://127.0.0.1:6000/token', true],
  ['http://127.0.0.1', 'http://127.0.0.2/token', false],
  ['http://localhost:5000', 'http://127.0.0.1:5000/token', false],
  ['http://localhost:5000', 'http://localhost:6000/token', true],
  ['http://a.localhost', 'http://b.localhost/token', false],
  ['http://[::1]:5000', 'http://[::1]:6000/token', true],
  ['https://ghcr.io', 'http://ghcr.io/token', false],
  ['https://registry-1.docker.io', 'http://auth.docker.io/token', false],
  ['http://registry.test', 'https://registry.test/token', true],
  ['https://ghcr.io', 'ftp://ghcr.io/token', false],
  ['https://ghcr.io', 'https://user:pw@ghcr.io/token', false],
  ['https://io', 'https://other.io/token', false],
];

t.test('mayReceiveCredentials table', async (t) => {
  for (const [u, r, want] of table) t.equal(mayReceiveCredentials(new URL(u), new URL(r)), want, `${u} -> ${r}`);
});

t.test('registrableDomain', async (t) => {
  t.equal(registrableDomain('auth.docker.io'), 'docker.io');
  t.equal(registrableDomain('a.b.example.co.uk'), 'example.co.uk');
  t.equal(registrableDomain('co.uk'), undefined);
  t.equal(registrableDomain('localhost'), undefined);
  t.equal(registrableDomain('10.0.0.1'), undefined);
  t.equal(registrableDomain('x.dkr.ecr.us-east-1.amazonaws.com'), undefined, 'shared domains: exact host only');
});
