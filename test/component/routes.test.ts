// The HTTP surface in-process: /v2/, routing by prefix and ?ns=, and every request that cannot be
// answered gets an OCI error body with the right status: unknown names and paths, bad references,
// writes. None is ever a 500.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { component, errorCodes } from '../helpers/component.js';

t.test('/v2/: 200 {} with the API-version header, GET and HEAD', async (t) => {
  const { app, upstream } = await component(t);
  for (const method of ['GET', 'HEAD'] as const) {
    const res = await app.inject({ method, url: '/v2/' });
    t.equal(res.statusCode, 200, `${method}: 200`);
    t.equal(res.headers['docker-distribution-api-version'], 'registry/2.0', `${method}: the header clients probe for`);
    // (inject shows what a handler wrote even for HEAD; Node drops it on the wire, so only GET's is asserted)
    if (method === 'GET') t.equal(res.payload, '{}', 'GET: the body {}');
  }
  t.same(upstream.calls, [], 'no upstream call');
});

t.test('names route to the upstream by prefix, alias, ?ns= or default; a dockerhub upstream adds library/', async (t) => {
  const { app, upstream } = await component(t, { type: 'dockerhub' });
  const img = upstream.pushImage('library/alpine', 'v1', [randomBytes(10)]);
  for (const path of ['/v2/alpine/manifests/v1', '/v2/fake.test/alpine/manifests/v1', '/v2/alias.test/library/alpine/manifests/v1', '/v2/alpine/manifests/v1?ns=fake.test']) {
    const res = await app.inject({ url: path });
    t.equal(res.statusCode, 200, `${path}: 200`);
    t.equal(res.headers['docker-content-digest'], img.digest, `${path}: library/alpine`);
  }
  const other = await app.inject({ url: '/v2/other.example/x/manifests/v1' });
  t.equal(other.statusCode, 404, 'a host no upstream is configured for: 404');
  t.same(errorCodes(other.payload), ['NAME_UNKNOWN']);
});

t.test('requests that cannot be answered: the right status and code, an OCI body (none for HEAD), never a 500', async (t) => {
  const { app, upstream } = await component(t);
  const img = upstream.pushImage('team/app', 'v1', [randomBytes(10)]);
  const cases: [string, string, number, string][] = [
    ['GET', '/v2/team/app/manifests/nope', 404, 'MANIFEST_UNKNOWN'],
    ['GET', '/v2/team/nope/manifests/v1', 404, 'NAME_UNKNOWN'],
    ['GET', `/v2/team/app/blobs/sha256:${'0'.repeat(64)}`, 404, 'BLOB_UNKNOWN'],
    ['GET', '/v2/Team/app/manifests/v1', 400, 'NAME_INVALID'],
    ['GET', '/v2/team/app/manifests/-v1', 404, 'MANIFEST_UNKNOWN'],
    ['GET', '/v2/team/app/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/team/app/blobs/sha256:..%2f..%2fetc%2fpasswd', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/team/app/referrers/sha256:totallywrong', 400, 'DIGEST_INVALID'],
    ['GET', '/v2/nosuch.example/x/manifests/v1?ns=nosuch.example', 404, 'NAME_UNKNOWN'],
    ['GET', '/v2/%zz/manifests/v1', 400, 'NAME_INVALID'],
    ['GET', '/v2/team/app/manifests/%zz', 400, 'NAME_INVALID'],
    ['GET', `/v2/${'a/'.repeat(1500)}x/manifests/v1`, 400, 'NAME_INVALID'],
    ['GET', '/v2/team/app/nothing/v1', 404, 'NAME_UNKNOWN'],
    ['GET', '/v2/team/app', 404, 'NAME_UNKNOWN'],
    ['GET', '/nope', 404, 'NAME_UNKNOWN'],
    ['GET', '/v2/team/app/blobs/uploads/', 405, 'UNSUPPORTED'],
    ['PUT', '/v2/team/app/manifests/v1', 405, 'UNSUPPORTED'],
    ['POST', '/v2/team/app/blobs/uploads/', 405, 'UNSUPPORTED'],
    ['PATCH', '/v2/team/app/blobs/uploads/abc', 405, 'UNSUPPORTED'],
    ['DELETE', `/v2/team/app/manifests/${img.digest}`, 405, 'UNSUPPORTED'],
    ['HEAD', '/v2/team/app/manifests/nope', 404, ''],
    ['HEAD', '/v2/team/app/blobs/%zz', 400, ''],
  ];
  for (const [method, url, status, code] of cases) {
    const what = `${method} ${url.slice(0, 60)}`;
    const res = await app.inject({ method: method as 'GET', url, ...(method === 'PUT' ? { payload: '{}', headers: { 'content-type': 'application/json' } } : {}) });
    t.equal(res.statusCode, status, `${what} → ${status}`);
    if (method === 'HEAD') t.equal(res.payload, '', `${what}: no body`);
    else {
      t.same(errorCodes(res.payload), [code], `${what} → ${code}`);
      t.match(res.headers['content-type'], /^application\/json/, `${what}: JSON`);
    }
    t.equal(res.headers['docker-distribution-api-version'], 'registry/2.0', `${what}: the API-version header`);
  }
  t.ok(upstream.calls.every((c) => c.repo === 'team/app' || c.repo === 'team/nope'), 'only valid names reached the upstream');
});
