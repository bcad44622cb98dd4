// A hostile upstream names a token realm on another host: whatever the upstream kind and however
// its credentials are held (static, minted by AWS, minted by Google), no credential reaches that
// realm, and nothing is even minted for it.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { expectNoSecrets, LeakWatch } from '../helpers/captured-proxy.js';
import { startEcrStandIn } from '../helpers/ecr-standin.js';
import { startGoogleOAuth } from '../helpers/google-oauth-standin.js';
import { AWS_ACCESS_KEY_ID as KEY_ID, SECRETS } from '../helpers/secrets.js';

interface Seen {
  url: string;
  authorization: string | undefined;
  raw: string;
}

function record(req: IncomingMessage): Seen {
  return { url: req.url ?? '', authorization: req.headers.authorization, raw: `${req.method} ${req.url}\n${req.rawHeaders.join('\n')}` };
}

async function listen(t: { teardown(fn: () => unknown): void }, server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  }));
  return (server.address() as AddressInfo).port;
}

const { registryPassword: PASSWORD, dockerHubToken: HUB_TOKEN, ghcrToken: GHCR_TOKEN, awsSecretAccessKey: SECRET, ecrPassword: ECR_PASSWORD } = SECRETS;

const oauth = await startGoogleOAuth();
t.teardown(() => oauth.close());
const api = await startEcrStandIn({ accessKeyId: KEY_ID, secretAccessKey: SECRET, password: ECR_PASSWORD });
t.teardown(() => api.close());

// The evil realm: 127.0.0.1, but named as localhost, a different host than the upstream's.
const evilSeen: Seen[] = [];
const evilPort = await listen(t, createServer((req, res) => {
  evilSeen.push(record(req));
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'evil-token', expires_in: 300 }));
}));
const evilRealm = `http://localhost:${evilPort}/token`;

// The hostile upstream: sends everyone to the evil realm, takes its tokens.
const upstreamSeen: Seen[] = [];
const upstreamPort = await listen(t, createServer((req, res) => {
  upstreamSeen.push(record(req));
  if (req.headers.authorization === 'Bearer evil-token') {
    res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'nope' }] }));
    return;
  }
  res.writeHead(401, { 'www-authenticate': `Bearer realm="${evilRealm}",service="evil"`, 'content-type': 'application/json' });
  res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED' }] }));
}));
const url = `http://127.0.0.1:${upstreamPort}`;

t.test('no credential of any kind reaches a token realm on another host', async (t) => {
  const watch = new LeakWatch();
  const p = await watch.proxy(t, {
    configDoc: {
      upstreams: [
        { name: 'plain.test', url, username: 'alice', password: '${PASSWORD}' },
        { name: 'hub.test', type: 'dockerhub', url, aliases: [], username: 'alice', password: '${HUB_TOKEN}' },
        { name: 'ghcr.test', type: 'ghcr', url, password: '${GHCR_TOKEN}' },
        { name: 'gar.test', type: 'gar', url, serviceAccountJson: '${SERVICE_ACCOUNT_JSON}' },
        { name: 'ecr.test', type: 'ecr', url, awsAccessKeyId: '${AWS_ACCESS_KEY_ID}', awsSecretAccessKey: '${AWS_SECRET_ACCESS_KEY}', awsRegion: 'us-east-1', awsEndpoint: api.url },
      ],
    },
    env: { PASSWORD, HUB_TOKEN, GHCR_TOKEN, SERVICE_ACCOUNT_JSON: oauth.serviceAccountJson, AWS_ACCESS_KEY_ID: KEY_ID, AWS_SECRET_ACCESS_KEY: SECRET },
  });
  for (const name of ['plain.test', 'hub.test', 'ghcr.test', 'gar.test', 'ecr.test']) {
    const r = await watch.get(`${p.url}/v2/${name}/team/app/manifests/v1`);
    t.equal(r.status, 404, `${name}: the evil token was used anonymously, as the upstream's own answer shows`);
  }
  t.equal(evilSeen.length, 5, 'the evil realm was asked for a token once per upstream');
  t.notOk(evilSeen.some((s) => s.authorization !== undefined), 'no Authorization header reached it');
  t.equal(oauth.requests.length, 0, 'no Google access token was minted for it');
  t.equal(api.calls.length, 0, 'no ECR token was minted for it');
  t.notOk(upstreamSeen.some((s) => s.authorization !== undefined && s.authorization !== 'Bearer evil-token'), 'the upstream only ever saw the evil token');
  await watch.check(t);
  await expectNoSecrets(t, SECRETS, { texts: Object.fromEntries(evilSeen.map((s, i) => [`request ${i} to the evil realm`, s.raw])) });
});
