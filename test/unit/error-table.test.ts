import t from 'tap';
import Fastify from 'fastify';
import { isRegistryError, OCI_ERRORS, RegistryError, type OciCode } from '../../src/oci/errors.js';
import { errorHandler, toRegistryError } from '../../src/proxy/errors.js';

const CODES = Object.keys(OCI_ERRORS) as OciCode[];

t.test('every OCI code has an error status and a message', async (t) => {
  t.ok(CODES.length >= 10, 'the table is not empty');
  for (const code of CODES) {
    const { status, message } = OCI_ERRORS[code];
    t.ok(Number.isInteger(status) && status >= 400 && status <= 599, `${code}: status ${status} is 4xx/5xx`);
    t.ok(message.length > 0, `${code}: has a message`);
    const e = new RegistryError(code);
    t.equal(e.status, status, `${code}: RegistryError takes the table's status`);
    t.equal(e.message, message, `${code}: and its message`);
  }
});

t.test('status pairings clients depend on', async (t) => {
  const want: Partial<Record<OciCode, number>> = {
    BLOB_UNKNOWN: 404,
    MANIFEST_UNKNOWN: 404,
    NAME_UNKNOWN: 404,
    NAME_INVALID: 400,
    DIGEST_INVALID: 400,
    TAG_INVALID: 400,
    RANGE_INVALID: 416,
    UNAUTHORIZED: 401,
    DENIED: 403,
    TOOMANYREQUESTS: 429,
    UNKNOWN: 500,
  };
  for (const [code, status] of Object.entries(want)) t.equal(OCI_ERRORS[code as OciCode].status, status, code);
});

t.test('RegistryError.toBody() is the OCI error envelope', async (t) => {
  const e = new RegistryError('BLOB_UNKNOWN', { detail: { digest: 'sha256:x' } });
  t.same(e.toBody(), { errors: [{ code: 'BLOB_UNKNOWN', message: OCI_ERRORS.BLOB_UNKNOWN.message, detail: { digest: 'sha256:x' } }] });
  t.same(Object.keys(e.toBody()), ['errors']);
  t.same(Object.keys(e.toBody().errors[0]!).sort(), ['code', 'detail', 'message']);

  const plain = new RegistryError('DENIED', { message: 'nope' });
  t.same(plain.toBody(), { errors: [{ code: 'DENIED', message: 'nope', detail: null }] }, 'detail defaults to null, message overridable');
  t.same(JSON.parse(JSON.stringify(plain.toBody())), plain.toBody(), 'survives JSON');

  const overridden = new RegistryError('DIGEST_INVALID', { status: 502, headers: { 'retry-after': '3' } });
  t.equal(overridden.status, 502, 'status override');
  t.same(overridden.headers, { 'retry-after': '3' });
  t.equal(overridden.toBody().errors[0]?.code, 'DIGEST_INVALID');

  const cause = new Error('root');
  t.equal(new RegistryError('UNKNOWN', { cause }).cause, cause, 'keeps the cause');
  t.ok(isRegistryError(plain));
  t.notOk(isRegistryError(new Error('x')));
});

t.test('toRegistryError', async (t) => {
  const re = new RegistryError('NAME_UNKNOWN');
  t.equal(toRegistryError(re), re, 'a RegistryError passes through unchanged');

  for (const [name, err] of [
    ['plain Error', new Error('boom')],
    ['TypeError', new TypeError('x is undefined')],
    ['string', 'boom'],
    ['undefined', undefined],
    ['null', null],
    ['object with a 5xx statusCode', Object.assign(new Error('upstream'), { statusCode: 503 })],
  ] as [string, unknown][]) {
    const e = toRegistryError(err);
    t.equal(e.code, 'UNKNOWN', `${name}: UNKNOWN`);
    t.equal(e.status, 500, `${name}: 500`);
  }
  const boom = new Error('secret internals');
  const mapped = toRegistryError(boom);
  t.equal(mapped.cause, boom, 'keeps the original as the cause');
  t.not(mapped.message, 'secret internals', 'does not expose the internal message');

  const clientError = toRegistryError(Object.assign(new Error('Unsupported Media Type'), { statusCode: 415 }));
  t.equal(clientError.status, 415, "a framework 4xx keeps its status");
  t.equal(clientError.code, 'UNSUPPORTED');
  t.equal(toRegistryError(Object.assign(new Error('too large'), { statusCode: 413 })).code, 'UNSUPPORTED');
});

t.test('errorHandler answers with the envelope, status and headers', async (t) => {
  const app = Fastify({ logger: false });
  app.setErrorHandler(errorHandler);
  app.get('/boom', async () => {
    throw new Error('internal detail');
  });
  app.get('/range', async () => {
    throw new RegistryError('RANGE_INVALID', { detail: { size: 10 }, headers: { 'content-range': 'bytes */10' } });
  });
  app.get('/auth', async () => {
    throw new RegistryError('UNAUTHORIZED');
  });
  t.teardown(() => app.close());

  const boom = await app.inject({ method: 'GET', url: '/boom' });
  t.equal(boom.statusCode, 500);
  t.match(boom.headers['content-type'], /^application\/json/);
  t.same(boom.json(), { errors: [{ code: 'UNKNOWN', message: OCI_ERRORS.UNKNOWN.message, detail: null }] });
  t.notMatch(boom.body, 'internal detail', 'internal messages stay in the log');

  const range = await app.inject({ method: 'GET', url: '/range' });
  t.equal(range.statusCode, 416);
  t.equal(range.headers['content-range'], 'bytes */10');
  t.equal(range.json().errors[0].code, 'RANGE_INVALID');

  const head = await app.inject({ method: 'HEAD', url: '/range' });
  t.equal(head.statusCode, 416);
  t.equal(head.body, '', 'HEAD has no body');

  const auth = await app.inject({ method: 'GET', url: '/auth' });
  t.equal(auth.statusCode, 401);
  t.match(auth.headers['www-authenticate'], /^Basic /);
});
