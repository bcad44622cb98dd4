// Credentials go only to a realm on the upstream's own registrable domain, by the Public Suffix
// List with its private section: tenants of shared hosting are different domains.
import t from 'tap';
import { mayReceiveCredentials, registrableDomain } from '../../../src/upstreams/auth/realm-policy.js';

const may = (upstream: string, realm: string): boolean => mayReceiveCredentials(new URL(upstream), new URL(realm));

t.test('another tenant of shared hosting gets nothing', async (t) => {
  const cases: [string, string][] = [
    ['https://myreg.run.app', 'https://attacker.run.app/token'],
    ['https://myreg-abc123-uc.a.run.app', 'https://attacker-abc123-uc.a.run.app/token'],
    ['https://team.gitlab.io', 'https://attacker.gitlab.io/token'],
    ['https://myreg.onrender.com', 'https://attacker.onrender.com/token'],
    ['https://registry.myreg.me.uk', 'https://auth.attacker.me.uk/token'],
  ];
  for (const [u, r] of cases) t.equal(may(u, r), false, `${u} -> ${r}`);
  for (const [u] of cases) t.equal(may(u, `${u}/token`), true, `${u} -> its own host`);
  t.equal(may('https://registry.myreg.me.uk', 'https://auth.myreg.me.uk/token'), true, 'same tenant under me.uk');
  t.equal(registrableDomain('myreg.run.app'), undefined, 'run.app hosts are public suffixes themselves');
  t.equal(registrableDomain('a.team.gitlab.io'), 'team.gitlab.io');
  t.equal(registrableDomain('x.myreg.onrender.com'), 'myreg.onrender.com');
  t.equal(registrableDomain('registry.myreg.me.uk'), 'myreg.me.uk');
});

t.test('the realms of the registries we speak to keep their credentials', async (t) => {
  const yes: [string, string][] = [
    ['https://registry-1.docker.io', 'https://auth.docker.io/token'],
    ['https://ghcr.io', 'https://ghcr.io/token'],
    ['https://123456789012.dkr.ecr.us-east-1.amazonaws.com', 'https://123456789012.dkr.ecr.us-east-1.amazonaws.com/'],
    ['https://public.ecr.aws', 'https://public.ecr.aws/token'],
    ['https://us-docker.pkg.dev', 'https://us-docker.pkg.dev/v2/token'],
    ['https://europe-west4-docker.pkg.dev', 'https://europe-west4-docker.pkg.dev/v2/token'],
    ['https://gcr.io', 'https://gcr.io/v2/token'],
    ['https://us.gcr.io', 'https://gcr.io/v2/token'],
    ['http://127.0.0.1:5000', 'http://127.0.0.1:6000/token'],
    ['http://localhost:5000', 'http://localhost:6000/token'],
    ['http://registry:5000', 'http://registry:5001/token'],
  ];
  for (const [u, r] of yes) t.equal(may(u, r), true, `${u} -> ${r}`);
  const no: [string, string][] = [
    // another AWS account's registry, or anyone's bucket: one PSL domain, different tenants
    ['https://123456789012.dkr.ecr.us-east-1.amazonaws.com', 'https://999999999999.dkr.ecr.us-east-1.amazonaws.com/'],
    ['https://123456789012.dkr.ecr.us-east-1.amazonaws.com', 'https://bucket.s3.amazonaws.com/token'],
    // Google's OAuth endpoints are not registry realms (GAR credentials are minted there directly)
    ['https://us-docker.pkg.dev', 'https://oauth2.googleapis.com/token'],
    ['https://gcr.io', 'https://accounts.google.com/o/oauth2/token'],
    ['http://127.0.0.1:5000', 'http://127.0.0.2:5000/token'],
    ['http://127.0.0.1:5000', 'http://localhost:5000/token'],
    ['http://registry:5000', 'http://other:5000/token'],
    ['https://ghcr.io', 'https://ghcr.io.evil.net/token'],
  ];
  for (const [u, r] of no) t.equal(may(u, r), false, `${u} -> ${r}`);
  t.equal(registrableDomain('auth.docker.io'), 'docker.io');
  t.equal(registrableDomain('us.gcr.io'), 'gcr.io');
  t.equal(registrableDomain('127.0.0.1'), undefined);
  t.equal(registrableDomain('registry'), undefined);
});
