// Requests Node's HTTP layer keeps from Fastify (CONNECT, an Expect it cannot meet) still get an
// OCI error body. fetch cannot send CONNECT, so these speak HTTP/1.1 on raw sockets.
import { connect, type AddressInfo } from 'node:net';
import t from 'tap';
import { buildServer, type ServerDeps } from '../../src/proxy/server.js';

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** Every response the server wrote on one connection, until it closed it (or 5 s passed). */
function exchange(port: number, request: string): Promise<{ responses: RawResponse[]; closedByServer: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(request));
    let raw = '';
    let closedByServer = true;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (raw += d));
    socket.on('error', reject);
    socket.on('close', () => resolve({ responses: parse(raw), closedByServer }));
    socket.setTimeout(5_000, () => {
      closedByServer = false;
      socket.destroy();
    });
  });
}

function parse(raw: string): RawResponse[] {
  const out: RawResponse[] = [];
  let rest = raw;
  while (rest.startsWith('HTTP/1.1 ')) {
    const end = rest.indexOf('\r\n\r\n');
    const [statusLine, ...lines] = rest.slice(0, end).split('\r\n');
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
    const status = Number(statusLine!.split(' ')[1]);
    const length = status === 100 || raw.startsWith('HEAD') ? 0 : Number(headers['content-length'] ?? 0);
    out.push({ status, headers, body: rest.slice(end + 4, end + 4 + length) });
    rest = rest.slice(end + 4 + length);
  }
  return out;
}

const codeOf = (r: RawResponse | undefined) => (JSON.parse(r?.body || '{}') as { errors?: { code: string }[] }).errors?.[0]?.code;

async function server(t: { teardown(fn: () => unknown): void }): Promise<number> {
  const app = buildServer({ router: { passthrough: false }, cache: undefined } as unknown as ServerDeps);
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(() => app.close());
  return (app.server.address() as AddressInfo).port;
}

t.test('CONNECT: 405 with an OCI body, then the connection closes', async (t) => {
  const port = await server(t);
  const { responses, closedByServer } = await exchange(port, 'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
  t.equal(responses.length, 1, 'one answer, not an empty reply');
  t.equal(responses[0]?.status, 405);
  t.equal(codeOf(responses[0]), 'UNSUPPORTED');
  t.equal(responses[0]?.headers['content-type'], 'application/json; charset=utf-8');
  t.equal(responses[0]?.headers['docker-distribution-api-version'], 'registry/2.0');
  t.ok(closedByServer, 'the server closed the connection');
});

t.test('Expect: foo: 417 with an OCI body (none for HEAD)', async (t) => {
  const port = await server(t);
  const { responses } = await exchange(port, 'GET /v2/ HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n');
  t.equal(responses[0]?.status, 417);
  t.equal(codeOf(responses[0]), 'UNSUPPORTED');
  t.equal(Number(responses[0]?.headers['content-length']), responses[0]?.body.length, 'Content-Length is the body');
  t.equal(responses[0]?.headers['docker-distribution-api-version'], 'registry/2.0');

  const head = await exchange(port, 'HEAD /v2/ HTTP/1.1\r\nHost: x\r\nExpect: foo\r\n\r\n');
  t.equal(head.responses[0]?.status, 417);
  t.equal(head.responses.length, 1, 'no body after a HEAD answer');
});

t.test('Expect: 100-continue on a GET is simply answered', async (t) => {
  const port = await server(t);
  const { responses } = await exchange(port, 'GET /v2/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n');
  t.same(responses.map((r) => r.status), [100, 200]);
  t.equal(responses[1]?.body, '{}');
});
