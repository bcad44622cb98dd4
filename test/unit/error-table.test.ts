import { connect, type AddressInfo } from 'node:net';
import t from 'tap';
import Fastify from 'fastify';
import { isRegistryError, OCI_ERRORS, RegistryError, type OciCode } from '../../src/oci/errors.js';
import { errorHandler, toRegistryError } from '../../src/proxy/errors.js';
import { buildServer, type ServerDeps } from '../../src/proxy/server.js';
import { EstargzError } from '../../src/estargz/index.js';
import { TarError, type TarErrorKind } from '../../src/tar/index.js';

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

t.test('a TarError (a plain layer\'s tar) answers as the EstargzError of the same kind: 502, the kind and detail in the body', async (t) => {
  for (const kind of ['corrupt', 'too-large', 'unsupported'] as TarErrorKind[]) {
    const tar = toRegistryError(new TarError(kind, 'tar header: bad checksum', { name: 'etc/x' }));
    const estargz = toRegistryError(new EstargzError(kind, 'tar header: bad checksum', { name: 'etc/x' }));
    t.equal(tar.status, 502, `${kind}: 502`);
    t.same(tar.toBody(), estargz.toBody(), `${kind}: the same OCI body`);
    t.same(tar.toBody().errors[0]?.detail, { kind, name: 'etc/x' }, `${kind}: the body says why`);
  }
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

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Every response in what a server wrote to one socket (each with a Content-Length). */
function parseResponses(raw: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = raw;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    const length = Number(headers['content-length'] ?? 0);
    out.push({ status: Number(statusLine!.split(' ')[1]), headers, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

/** Writes `first` on a fresh connection, then what `then` returns, and collects everything until the server closes it. */
function exchange(port: number, first: string, then?: () => Promise<string>): Promise<RawResponse[]> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let raw = '';
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (raw += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(parseResponses(raw)));
    socket.write(first);
    void then?.().then((more) => socket.write(more), reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error('no answer within 10 s')));
  });
}

const codeOf = (r: RawResponse | undefined): string | undefined => (JSON.parse(r?.body || '{}') as { errors?: { code: string }[] }).errors?.[0]?.code;

/**
 * A server whose routes get no upstream or cache (the requests here never need them), plus
 * GET /slow, which answers only once released; `arrived` resolves when a request reached it.
 */
function serverWithSlowRoute(): { app: ReturnType<typeof buildServer>; arrived: Promise<void>; release: () => void } {
  const app = buildServer({ router: undefined, cache: undefined } as unknown as ServerDeps);
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let markArrived!: () => void;
  const arrived = new Promise<void>((r) => (markArrived = r));
  app.get('/slow', async () => {
    markArrived();
    await held;
    return {};
  });
  return { app, arrived, release };
}

t.test('answers Node and Fastify give before any route runs carry the envelope and the API-version header', async (t) => {
  const { app, arrived, release } = serverWithSlowRoute();
  let markClosing!: () => void;
  const closing = new Promise<void>((r) => (markClosing = r));
  app.addHook('preClose', async () => markClosing());
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  const { port } = app.server.address() as AddressInfo;

  const cases: [string, string, number][] = [
    ['malformed HTTP', 'NOT-HTTP\r\n\r\n', 400],
    ['headers over the size limit', `GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
  ];
  for (const [what, request, status] of cases) {
    const [res] = await exchange(port, request);
    t.equal(res?.status, status, `${what}: ${status}`);
    t.equal(codeOf(res), 'UNSUPPORTED', `${what}: an OCI envelope`);
    t.equal(res?.headers['docker-distribution-api-version'], 'registry/2.0', `${what}: the API-version header`);
  }

  // a request arriving on a busy keep-alive connection while the server shuts down
  const [slow, late] = await exchange(port, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n', async () => {
    await arrived;
    void app.close();
    await closing;
    setTimeout(release, 50);
    return 'GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n';
  });
  t.equal(slow?.status, 200, 'the request in flight completes');
  t.equal(late?.status, 503, 'a request during shutdown: 503');
  t.equal(codeOf(late), 'UNAVAILABLE', 'with an OCI envelope');
  t.equal(late?.headers['docker-distribution-api-version'], 'registry/2.0');
  t.equal(late?.headers.connection, 'close', 'and the connection closes, so the client goes elsewhere');
});

t.test('a shutdown waits for the response in flight, then closes its keep-alive connection at once', async (t) => {
  const { app, arrived, release } = serverWithSlowRoute();
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  const started = Date.now();
  // the client keeps its connection open after the answer; only the server can end it, and
  // without the sweep it would wait for the keep-alive timeout (72 s; the exchange gives up at 10 s)
  const [res] = await exchange(port, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n', async () => {
    await arrived;
    closed = app.close();
    setTimeout(release, 100);
    return '';
  });
  t.equal(res?.status, 200, 'the request in flight completes');
  await closed;
  t.ok(Date.now() - started < 5_000, `the server closed ${Date.now() - started} ms after shutdown began`);
});
