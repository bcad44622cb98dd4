// GAR/GCR credentials through the real google-auth-library against a local stand-in of Google's
// OAuth2 token endpoint (reached through the key's token_uri) that verifies the signed assertion.
import t from 'tap';
import { rejection } from '../../helpers/rejection.js';
import { garCredentials, parseServiceAccountKey } from '../../../src/upstreams/auth/gar-credentials.js';
import { CLOUD_PLATFORM, JWT_BEARER, startGoogleOAuth } from '../../helpers/google-oauth-standin.js';

const MINUTE = 60_000;
const oauth = await startGoogleOAuth();
t.teardown(() => oauth.close());
t.beforeEach(() => {
  oauth.requests.length = 0;
  oauth.options.refuse = undefined;
});

let clock = 5_000_000;
const now = () => clock;
const make = (json = oauth.serviceAccountJson) => garCredentials({ upstreamName: 'europe-docker.pkg.dev', serviceAccountJson: json, now });

t.test('the service-account key becomes an access token for user oauth2accesstoken', async (t) => {
  const p = make();
  const creds = await p.get();
  t.equal(creds.username, 'oauth2accesstoken');
  t.equal(creds.password, oauth.issued.at(-1), 'the access token the endpoint issued');
  t.equal(oauth.requests.length, 1, 'one grant, sent to the key token_uri');
  const r = oauth.requests[0]!;
  t.equal(r.grantType, JWT_BEARER);
  t.ok(r.signatureValid, "the assertion verifies against the key's public half");
  t.equal(r.iss, oauth.clientEmail);
  t.equal(r.scope, CLOUD_PLATFORM);
  t.notOk(r.body.includes('PRIVATE KEY'), 'the private key never travels');
  t.equal(p.identity, `gar:${oauth.clientEmail}`);
  const expiresAt = p.expiresAt() ?? 0;
  t.ok(expiresAt <= clock + 3600_000 && expiresAt > clock + 3540_000, 'about an hour (never more), on the injectable clock');
});

t.test('renewed after half of its hour; the held token covers a failed renewal', async (t) => {
  const p = make();
  const first = (await p.get()).password;
  clock += 29 * MINUTE;
  t.equal((await p.get()).password, first, '29 min: cached');
  clock += 2 * MINUTE;
  const second = (await p.get()).password;
  t.not(second, first, '31 min: renewed');
  t.equal(oauth.requests.length, 2);
  oauth.options.refuse = { error: 'internal_failure', description: 'try later', status: 503 };
  clock += 40 * MINUTE;
  t.equal((await p.get()).password, second, 'renewal fails, token unexpired: kept');
  clock += 30 * MINUTE;
  const e = await rejection(p.get());
  t.equal(e.code, 'UNAVAILABLE');
  t.match(e.message, `could not obtain a Google access token for ${oauth.clientEmail}`);
});

t.test('a key Google does not know: DENIED, naming the account, not the key', async (t) => {
  const e = await rejection(make(oauth.unknownKeyJson).get());
  t.equal(e.code, 'DENIED');
  t.match(e.message, 'upstream "europe-docker.pkg.dev"');
  t.match(e.message, `Google refused the service-account key of ${oauth.clientEmail}`);
  t.match(e.message, 'invalid_grant');
  const text = [e.message, JSON.stringify(e.toBody()), String(e.stack)].join('\n');
  t.notOk(text.includes('PRIVATE KEY'), 'no key material');
  t.notOk(oauth.requests.some((r) => r.signatureValid), 'the stand-in rejected the signature');
});

t.test('parseServiceAccountKey never quotes its input', async (t) => {
  const secretish = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQ';
  for (const [input, want] of [
    [`{"private_key": "${secretish}`, 'is not valid JSON'],
    [`["${secretish}"]`, 'must be a JSON object'],
    [`{"type":"authorized_user","private_key":"${secretish}"}`, 'is not a service-account key'],
    [`{"private_key":"${secretish}"}`, 'has no client_email'],
    [`{"client_email":"a@b","private_key":"${secretish}"}`, 'has no PEM private_key'],
    [`{"client_email":"a@b","private_key":"-----BEGIN PRIVATE KEY-----","token_uri":"file:///etc/passwd"}`, 'token_uri'],
  ] as const) {
    const got = parseServiceAccountKey(input);
    t.type(got, 'string');
    t.match(got, want);
    t.notOk(String(got).includes(secretish), 'the input is not echoed');
  }
  const ok = parseServiceAccountKey(oauth.serviceAccountJson);
  t.equal(typeof ok === 'object' && ok.client_email, oauth.clientEmail);
});
