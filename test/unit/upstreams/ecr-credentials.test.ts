// ECR credentials through the real @aws-sdk/client-ecr (and client-ecr-public) against a local
// stand-in of the ECR API that verifies SigV4 signatures.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { type RegistryError } from '../../../src/oci/errors.js';
import { rejection } from '../../helpers/rejection.js';
import { decodeAuthorizationToken, ecrCredentials } from '../../../src/upstreams/auth/ecr-credentials.js';
import { parseEcrHost } from '../../../src/upstreams/kinds/ecr.js';
import { ECR_PUBLIC_TARGET, ECR_TARGET, startEcrStandIn } from '../../helpers/ecr-standin.js';
import type { Test } from '../../helpers/util.js';

const HOUR = 3600_000;
const KEY_ID = `AKIA${randomBytes(8).toString('hex').toUpperCase()}`;
const SECRET = randomBytes(30).toString('base64');
const PASSWORD = randomBytes(24).toString('hex');

let clock = Date.now();
const now = () => clock;
const standIn = await startEcrStandIn({ accessKeyId: KEY_ID, secretAccessKey: SECRET, password: PASSWORD, now });
t.teardown(() => standIn.close());
t.beforeEach(() => {
  standIn.calls.length = 0;
  standIn.options.error = undefined;
  standIn.options.password = PASSWORD;
  standIn.options.accessKeyId = KEY_ID;
  standIn.options.sessionToken = undefined;
});

const make = (o: { secret?: string; public?: boolean; sessionToken?: string } = {}) =>
  ecrCredentials({
    upstreamName: '123456789012.dkr.ecr.us-east-1.amazonaws.com',
    region: 'us-east-1',
    endpoint: standIn.url,
    keys: { accessKeyId: KEY_ID, secretAccessKey: o.secret ?? SECRET, sessionToken: o.sessionToken },
    public: o.public ?? false,
    now,
  });

function noSecret(t: Test, e: RegistryError): void {
  const text = [e.message, JSON.stringify(e.toBody()), String(e.stack)].join('\n');
  for (const s of [SECRET, PASSWORD]) t.notOk(text.includes(s), 'no secret in the error');
}

t.test('GetAuthorizationToken, SigV4-signed, becomes Basic AWS:<password>', async (t) => {
  const p = make();
  t.same(await p.get(), { username: 'AWS', password: PASSWORD });
  t.equal(standIn.calls.length, 1);
  const call = standIn.calls[0]!;
  t.equal(call.target, ECR_TARGET, 'the action is GetAuthorizationToken');
  t.equal(call.service, 'ecr');
  t.equal(call.region, 'us-east-1');
  t.equal(call.accessKeyId, KEY_ID);
  t.ok(call.signatureValid, 'the SigV4 signature verifies with the secret key');
  t.notOk(call.rawHeaders.includes(SECRET) || call.body.includes(SECRET), 'the secret key itself never travels');
  t.equal(p.expiresAt(), clock + 12 * HOUR, 'expiresAt from the API');
  t.match(p.identity, /^ecr:us-east-1:[0-9a-f]{12}$/);
  t.notOk(p.identity.includes(KEY_ID), 'the identity does not carry the key id');
});

t.test('renewed at half of the 12 h lifetime, with the injectable clock', async (t) => {
  const p = make();
  await p.get();
  clock += 5 * HOUR;
  await p.get();
  t.equal(standIn.calls.length, 1, '5 h in: cached');
  clock += 1 * HOUR + 1;
  await p.get();
  t.equal(standIn.calls.length, 2, 'past 6 h: renewed');
  standIn.options.error = { type: 'ServerException', message: 'internal', status: 500 };
  clock += 7 * HOUR;
  t.same(await p.get(), { username: 'AWS', password: PASSWORD }, 'renewal fails: the held, unexpired token is used');
  clock += 6 * HOUR;
  const e = await rejection(p.get());
  t.equal(e.code, 'UNAVAILABLE', 'expired and the API fails: UNAVAILABLE');
  t.match(e.message, 'upstream "123456789012.dkr.ecr.us-east-1.amazonaws.com"');
});

t.test('a session token is sent and signed', async (t) => {
  const token = randomBytes(40).toString('base64');
  standIn.options.sessionToken = token;
  t.same(await make({ sessionToken: token }).get(), { username: 'AWS', password: PASSWORD });
  t.ok(standIn.calls[0]!.signatureValid);
});

t.test('refusals become DENIED naming the upstream and the IAM action, never a secret', async (t) => {
  let e = await rejection(make({ secret: 'wrong-secret-key-0123456789' }).get());
  t.equal(e.code, 'DENIED', 'wrong secret key');
  t.match(e.message, /AWS refused ecr:GetAuthorizationToken \(InvalidSignatureException/);
  noSecret(t, e);

  standIn.options.error = { type: 'AccessDeniedException', message: 'User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:GetAuthorizationToken' };
  e = await rejection(make().get());
  t.equal(e.code, 'DENIED');
  t.match(e.message, 'upstream "123456789012.dkr.ecr.us-east-1.amazonaws.com"');
  t.match(e.message, 'need an IAM policy allowing ecr:GetAuthorizationToken');
  t.match(e.message, 'user/ci', "AWS's explanation is kept");
  noSecret(t, e);

  standIn.options.error = undefined;
  standIn.options.accessKeyId = 'AKIAOTHER';
  e = await rejection(make().get());
  t.equal(e.code, 'DENIED', 'unknown key id');
  t.match(e.message, 'UnrecognizedClientException');

  standIn.options.accessKeyId = KEY_ID;
  standIn.options.error = { type: 'ThrottlingException', message: 'Rate exceeded' };
  t.equal((await rejection(make().get())).code, 'TOOMANYREQUESTS', 'throttling');
});

t.test('ECR Public: the ecr-public API in us-east-1', async (t) => {
  const p = make({ public: true });
  t.same(await p.get(), { username: 'AWS', password: PASSWORD });
  const call = standIn.calls[0]!;
  t.equal(call.target, ECR_PUBLIC_TARGET);
  t.equal(call.service, 'ecr-public');
  t.ok(call.signatureValid);
  t.match(p.identity, /^ecr-public:/);
});

t.test('decodeAuthorizationToken', async (t) => {
  t.same(decodeAuthorizationToken(Buffer.from('AWS:p:w').toString('base64')), { username: 'AWS', password: 'p:w' });
  for (const bad of [undefined, '', Buffer.from('nocolon').toString('base64'), Buffer.from(':pw').toString('base64'), Buffer.from('AWS:').toString('base64')]) {
    t.equal(decodeAuthorizationToken(bad), undefined, String(bad));
  }
});

t.test('parseEcrHost', async (t) => {
  t.same(parseEcrHost('123456789012.dkr.ecr.eu-west-1.amazonaws.com'), { account: '123456789012', region: 'eu-west-1', fips: false, dualStack: false });
  t.same(parseEcrHost('123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com'), { account: '123456789012', region: 'us-gov-west-1', fips: true, dualStack: false });
  t.same(parseEcrHost('123456789012.dkr-ecr.cn-north-1.on.amazonwebservices.com.cn'), { account: '123456789012', region: 'cn-north-1', fips: false, dualStack: true });
  t.same(parseEcrHost('123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn')?.region, 'cn-north-1');
  for (const bad of ['public.ecr.aws', '12345.dkr.ecr.us-east-1.amazonaws.com', '123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.net', 'ghcr.io']) {
    t.equal(parseEcrHost(bad), undefined, bad);
  }
});
