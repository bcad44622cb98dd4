// RegistryClient behaviours the adapters rely on, against small node:http servers: expired signed
// blob URLs re-resolved, a refused minted credential refreshed once, DENIED hints, rate-limit
// figures in the per-call event.
import { createHash } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { Agent } from 'undici';
import { parseDigest } from '../../../src/oci/digest.js';
import { isRegistryError } from '../../../src/oci/errors.js';
import { Authenticator } from '../../../src/upstreams/auth/authenticator.js';
import { anonymous, staticCredentials, type CredentialProvider } from '../../../src/upstreams/auth/credentials.js';
import { MintedCredentials } from '../../../src/upstreams/auth/minted.js';
import { RegistryClient, type UpstreamCall } from '../../../src/upstreams/registry-client.js';
import type { Test } from '../../helpers/util.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

const BLOB = Buffer.from('layer bytes '.repeat(100));
const DIGEST = parseDigest(`sha256:${createHash('sha256').update(BLOB).digest('hex')}`);
const MANIFEST = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }));

async function serve(t: Test, handler: Handler): Promise<{ url: string; hits: { url: string; authorization: string | undefined }[] }> {
  const hits: { url: string; authorization: string | undefined }[] = [];
  const server = http.createServer((req, res) => {
    hits.push({ url: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  }));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits };
}

function client(t: Test, url: string, credentials: CredentialProvider, events: UpstreamCall[] = [], deniedHint?: string): RegistryClient {
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  const authenticator = new Authenticator({ upstream: new URL(url), upstreamName: 'up.test', credentials, dispatcher, deniedHint });
  return new RegistryClient({ name: 'up.test', url, authenticator, dispatcher, retries: 0, onResponse: (e) => events.push(e), deniedHint });
}

const manifestReply = (res: http.ServerResponse, headers: Record<string, string> = {}) => {
  res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': MANIFEST.length, ...headers });
  res.end(MANIFEST);
};

t.test('an expired signed blob URL is re-resolved once through the registry', async (t) => {
  let storageCalls = 0;
  const storage = await serve(t, (req, res) => {
    storageCalls++;
    if (req.headers.authorization) return void res.writeHead(400).end('only one auth mechanism');
    if (storageCalls === 1) return void res.writeHead(403, { 'content-type': 'application/xml' }).end('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>');
    res.writeHead(200, { 'content-length': BLOB.length }).end(BLOB);
  });
  let n = 0;
  const registry = await serve(t, (_req, res) => {
    n++;
    res.writeHead(307, { location: `${storage.url}/blob?sig=${n}` }).end();
  });
  const c = client(t, registry.url, anonymous);
  const got = await c.getBlob('team/app', DIGEST);
  const chunks: Buffer[] = [];
  for await (const chunk of got.body) chunks.push(chunk as Buffer);
  t.same(Buffer.concat(chunks), BLOB, 'the blob arrives');
  t.equal(registry.hits.length, 2, 'the registry was asked for a fresh URL once');
  t.same(storage.hits.map((h) => h.url), ['/blob?sig=1', '/blob?sig=2']);
  t.notOk(storage.hits.some((h) => h.authorization), 'storage never saw Authorization');
});

t.test('a storage URL refused twice is an error, not a loop', async (t) => {
  const storage = await serve(t, (_req, res) => void res.writeHead(403).end());
  const registry = await serve(t, (_req, res) => void res.writeHead(307, { location: `${storage.url}/blob` }).end());
  const c = client(t, registry.url, anonymous);
  await t.rejects(c.getBlob('team/app', DIGEST), { code: 'DENIED' });
  t.equal(storage.hits.length, 2);
});

t.test('a cached minted Basic credential the registry refuses is re-minted once and retried', async (t) => {
  const registry = await serve(t, (req, res) => {
    if (req.headers.authorization === `Basic ${Buffer.from('AWS:fresh').toString('base64')}`) return manifestReply(res);
    res.writeHead(401, { 'www-authenticate': 'Basic realm="https://123456789012.dkr.ecr.us-east-1.amazonaws.com/",service="ecr.amazonaws.com"' }).end('Not Authorized');
  });
  const passwords = ['stale', 'fresh'];
  const minted = new MintedCredentials({
    identity: 'ecr:test',
    mint: async () => ({ credentials: { username: 'AWS', password: passwords.shift() ?? 'fresh' }, expiresAt: Date.now() + 3600_000 }),
  });
  const c = client(t, registry.url, minted);
  const m = await c.getManifest('team/app', { kind: 'tag', tag: 'v1' }, ['application/vnd.oci.image.manifest.v1+json']);
  t.same(m.body, MANIFEST);
  t.equal(minted.mints, 2, 'minted, refused, re-minted');
  t.same(registry.hits.map((h) => h.authorization === undefined ? 'none' : Buffer.from(h.authorization.slice(6), 'base64').toString()), ['none', 'AWS:stale', 'AWS:fresh']);
});

t.test('static credentials the registry refuses: DENIED with the hint, after no extra request', async (t) => {
  const registry = await serve(t, (_req, res) => void res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end());
  const c = client(t, registry.url, staticCredentials('alice', 'wrong-password-123'), [], 'check the access token');
  try {
    await c.getManifest('team/app', { kind: 'tag', tag: 'v1' }, ['application/vnd.oci.image.manifest.v1+json']);
    t.fail('expected DENIED');
  } catch (e) {
    t.ok(isRegistryError(e));
    if (!isRegistryError(e)) return;
    t.equal(e.code, 'DENIED');
    t.equal(e.message, 'upstream "up.test" denied access to team/app; check the access token');
    t.notOk(JSON.stringify(e.toBody()).includes('wrong-password-123'));
  }
  t.equal(registry.hits.length, 2, 'anonymous, then the credentials; refused credentials are not re-sent');
});

t.test('rate-limit figures reach the per-call event', async (t) => {
  const registry = await serve(t, (_req, res) => manifestReply(res, { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '7;w=21600' }));
  const events: UpstreamCall[] = [];
  const c = client(t, registry.url, anonymous, events);
  await c.headManifest('library/alpine', { kind: 'tag', tag: '3' }, ['application/vnd.oci.image.manifest.v1+json']);
  t.match(events[0], { upstream: 'up.test', method: 'HEAD', status: 200, rateLimitLimit: 100, rateLimitRemaining: 7, rateLimitLow: true });
  t.match(c.rateLimit(), { limit: 100, remaining: 7, windowSeconds: 21600 });
});

t.test('a token realm that refuses a minted credential gets one re-minted credential', async (t) => {
  const accepted = `Basic ${Buffer.from('oauth2accesstoken:ya29.second').toString('base64')}`;
  const realm = await serve(t, (req, res) => {
    if (req.headers.authorization !== accepted) return void res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: 'registry-token', expires_in: 300 }));
  });
  const registry = await serve(t, (req, res) => {
    if (req.headers.authorization === 'Bearer registry-token') return manifestReply(res);
    res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm.url}/v2/token",service="gar"` }).end();
  });
  const tokens = ['ya29.first', 'ya29.second'];
  const minted = new MintedCredentials({
    identity: 'gar:test',
    mint: async () => ({ credentials: { username: 'oauth2accesstoken', password: tokens.shift() ?? 'ya29.never' }, expiresAt: Date.now() + 3600_000 }),
  });
  const c = client(t, registry.url, minted);
  const m = await c.getManifest('p/r/app', { kind: 'tag', tag: 'v1' }, ['application/vnd.oci.image.manifest.v1+json']);
  t.same(m.body, MANIFEST);
  t.equal(minted.mints, 2);
  t.equal(realm.hits.length, 2, 'one refused token request, one retry');

  const refusing = await serve(t, (_req, res) => void res.writeHead(403).end());
  const registry2 = await serve(t, (_req, res) => void res.writeHead(401, { 'www-authenticate': `Bearer realm="${refusing.url}/token"` }).end());
  const minted2 = new MintedCredentials({ identity: 'gar:x', mint: async () => ({ credentials: { username: 'oauth2accesstoken', password: 'ya29.bad' }, expiresAt: Date.now() + 3600_000 }) });
  const c2 = client(t, registry2.url, minted2, [], 'the service account needs the "Artifact Registry Reader" role');
  await t.rejects(c2.getManifest('p/r/app', { kind: 'tag', tag: 'v1' }, ['application/vnd.oci.image.manifest.v1+json']), {
    code: 'DENIED',
    message: /upstream "up.test" refused our credentials \(token endpoint answered 403\); the service account needs the "Artifact Registry Reader" role/,
  });
  t.equal(refusing.hits.length, 2, 'refused twice, then DENIED');
});

t.test('a Bearer token the registry refuses: one new token, one retry, then DENIED or success', async (t) => {
  const setup = async (registryAccepts: (token: string) => boolean) => {
    let issued = 0;
    const realm = await serve(t, (_req, res) => {
      issued++;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token: `tok-${issued}`, expires_in: 300 }));
    });
    const registry = await serve(t, (req, res) => {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (token !== undefined && registryAccepts(token)) return manifestReply(res);
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm.url}/token",service="reg"` }).end();
    });
    return { realm, registry, c: client(t, registry.url, anonymous) };
  };
  const get = (c: RegistryClient) => c.getManifest('team/app', { kind: 'tag', tag: 'v1' }, ['application/vnd.oci.image.manifest.v1+json']);

  const refused = await setup(() => false);
  await t.rejects(get(refused.c), { code: 'DENIED' }, 'warm-up: tok-1 refused');
  const [realmBefore, registryBefore] = [refused.realm.hits.length, refused.registry.hits.length];
  await t.rejects(get(refused.c), { code: 'DENIED', message: /^upstream "up\.test" denied access to team\/app/ });
  t.equal(refused.realm.hits.length - realmBefore, 1, 'exactly one token refresh');
  t.equal(refused.registry.hits.length - registryBefore, 2, 'the cached token, then the refreshed one: no third request');
  t.same(refused.registry.hits.slice(registryBefore).map((h) => h.authorization), ['Bearer tok-1', 'Bearer tok-2']);

  let valid = 'tok-1';
  const revoked = await setup((tok) => tok === valid);
  t.same((await get(revoked.c)).body, MANIFEST, 'warm-up with tok-1');
  valid = 'tok-2'; // the registry revokes tok-1
  const [realmAt, registryAt] = [revoked.realm.hits.length, revoked.registry.hits.length];
  t.same((await get(revoked.c)).body, MANIFEST, 'succeeds with the refreshed token');
  t.equal(revoked.realm.hits.length - realmAt, 1, 'one refresh');
  t.same(revoked.registry.hits.slice(registryAt).map((h) => h.authorization), ['Bearer tok-1', 'Bearer tok-2'], 'exactly one retry');
});

t.test('health: down after three failures in a row, on the clock given; tried again after the cool-down; a success starts the count anew', async (t) => {
  let failing = true;
  const registry = await serve(t, (_req, res) => (failing ? void res.writeHead(500).end() : void res.writeHead(200, { 'content-length': BLOB.length }).end(BLOB)));
  let time = 1_000_000;
  const dispatcher = new Agent();
  t.teardown(() => dispatcher.close());
  const authenticator = new Authenticator({ upstream: new URL(registry.url), upstreamName: 'up.test', credentials: anonymous, dispatcher });
  const c = new RegistryClient({ name: 'up.test', url: registry.url, authenticator, dispatcher, retries: 0, now: () => time });
  for (let i = 0; i < 3; i++) {
    t.ok(c.healthy(), `healthy before failure ${i + 1}`);
    await t.rejects(c.headBlob('repo', DIGEST));
  }
  t.notOk(c.healthy(), 'three failures in a row: down');
  time += 9_999;
  t.notOk(c.healthy(), 'still down within the cool-down, by the given clock');
  time += 2;
  t.ok(c.healthy(), 'after the cool-down: tried again');
  await t.rejects(c.headBlob('repo', DIGEST));
  t.notOk(c.healthy(), 'a failure then: down again at once (still failing in a row)');
  time += 10_001;
  failing = false;
  t.equal(await c.headBlob('repo', DIGEST), BLOB.length);
  failing = true;
  await t.rejects(c.headBlob('repo', DIGEST));
  t.ok(c.healthy(), 'after a success, one failure is not three in a row: still up');
});
