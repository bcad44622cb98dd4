import t from 'tap';
import type { UpstreamConfig, UpstreamType } from '../../src/config.js';
import { RegistryError } from '../../src/oci/errors.js';
import { parseRange, satisfy, type RangeRequest } from '../../src/oci/range.js';
import { parseEndpoint } from '../../src/proxy/routes.js';
import { Router, type RoutedUpstream } from '../../src/core/routing.js';
import type { Upstream } from '../../src/upstreams/upstream.js';

function upstream(name: string, url: string, type: UpstreamType, aliases: string[] = []): RoutedUpstream {
  const config: UpstreamConfig = { name, url, type, aliases, username: undefined, password: undefined };
  // the router only reads the config; the client is passed through untouched
  const client = { name } as Upstream;
  return { config, client };
}

const hub = upstream('docker.io', 'https://registry-1.docker.io', 'dockerhub', ['index.docker.io']);
const ghcr = upstream('ghcr.io', 'https://ghcr.io', 'ghcr');
const local = upstream('127.0.0.1:5000', 'http://127.0.0.1:5000', 'registry');
const router = new Router([hub, ghcr, local], hub);

function errorOf(fn: () => unknown): RegistryError | undefined {
  try {
    fn();
  } catch (e) {
    if (e instanceof RegistryError) return e;
    throw e;
  }
  return undefined;
}

t.test('routes names to upstreams and repositories', async (t) => {
  const cases: [string, string, string | undefined, RoutedUpstream, string][] = [
    ['bare official image', 'alpine', undefined, hub, 'library/alpine'],
    ['namespaced hub image', 'team/app', undefined, hub, 'team/app'],
    ['deep hub path', 'team/sub/app', undefined, hub, 'team/sub/app'],
    ['ghcr prefix', 'ghcr.io/org/app', undefined, ghcr, 'org/app'],
    ['ghcr prefix, one component', 'ghcr.io/app', undefined, ghcr, 'app'],
    ['prefix is case-insensitive', 'GHCR.IO/org/app', undefined, ghcr, 'org/app'],
    ['hub alias prefix', 'index.docker.io/alpine', undefined, hub, 'library/alpine'],
    ['hub name prefix', 'docker.io/library/alpine', undefined, hub, 'library/alpine'],
    ['hub url host prefix', 'registry-1.docker.io/team/app', undefined, hub, 'team/app'],
    ['host:port prefix', '127.0.0.1:5000/foo/bar', undefined, local, 'foo/bar'],
    ['registry type gets no library/', '127.0.0.1:5000/foo', undefined, local, 'foo'],
    ['ns names ghcr', 'org/app', 'ghcr.io', ghcr, 'org/app'],
    ['ns is case-insensitive', 'org/app', 'GHCR.io', ghcr, 'org/app'],
    ['ns names the hub', 'alpine', 'docker.io', hub, 'library/alpine'],
    ['ns names a hub alias', 'alpine', 'index.docker.io', hub, 'library/alpine'],
    ['ns names host:port', 'foo', '127.0.0.1:5000', local, 'foo'],
  ];
  for (const [name, path, ns, want, repo] of cases) {
    const r = router.route(path, ns);
    t.equal(r.upstream, want.client, `${name}: upstream ${want.config.name}`);
    t.equal(r.name, repo, `${name}: repo`);
  }
});

t.test('unknown upstreams are NAME_UNKNOWN (404)', async (t) => {
  const cases: [string, string, string | undefined][] = [
    ['unknown ns', 'org/app', 'unknown.example'],
    ['unknown ns, even for a bare name', 'alpine', 'quay.io'],
    ['unconfigured host prefix with a dockerhub default', 'quay.io/x/y', undefined],
    ['unconfigured host:port prefix', '10.0.0.1:5000/x', undefined],
    ['localhost prefix', 'localhost/x', undefined],
  ];
  for (const [name, path, ns] of cases) {
    const e = errorOf(() => router.route(path, ns));
    t.equal(e?.code, 'NAME_UNKNOWN', `${name}: code`);
    t.equal(e?.status, 404, `${name}: status`);
  }
});

t.test('with a plain registry as default, a host-like first component is part of the repository', async (t) => {
  const r = new Router([local, ghcr], local).route('quay.io/x/y', undefined);
  t.equal(r.upstream, local.client);
  t.equal(r.name, 'quay.io/x/y');
  t.equal(new Router([local, ghcr], local).route('alpine', undefined).name, 'alpine', 'no library/ off Docker Hub');
});

t.test('invalid names are NAME_INVALID (400), wherever they route', async (t) => {
  const cases: [string, string | undefined][] = [
    ['Alpine', undefined],
    ['team//app', undefined],
    ['../etc/passwd', undefined],
    ['team/../app', undefined],
    ['ghcr.io/../x', undefined],
    ['ghcr.io/Org/app', undefined],
    ['ghcr.io/', undefined],
    ['%2e%2e/x', undefined],
    ['', undefined],
    ['a'.repeat(256), undefined],
    ['org/App', 'ghcr.io'],
    ['../x', 'ghcr.io'],
    ['', 'docker.io'],
  ];
  for (const [path, ns] of cases) {
    const e = errorOf(() => router.route(path, ns));
    t.equal(e?.code, 'NAME_INVALID', `${JSON.stringify(path.slice(0, 30))} ns=${ns}: code`);
    t.equal(e?.status, 400, `${JSON.stringify(path.slice(0, 30))} ns=${ns}: status`);
  }
});

const D = `sha256:${'a'.repeat(64)}`;

t.test('parseEndpoint', async (t) => {
  t.same(parseEndpoint('a/b/manifests/v1'), { kind: 'manifests', name: 'a/b', ref: 'v1' });
  t.same(parseEndpoint(`a/b/manifests/${D}`), { kind: 'manifests', name: 'a/b', ref: D });
  t.same(parseEndpoint(`a/blobs/${D}`), { kind: 'blobs', name: 'a', ref: D });
  t.same(parseEndpoint('ghcr.io/org/app/blobs/sha256:x'), { kind: 'blobs', name: 'ghcr.io/org/app', ref: 'sha256:x' }, 'ref is validated later');
  t.same(parseEndpoint('a/b/tags/list'), { kind: 'tags', name: 'a/b' });
  t.same(parseEndpoint(`a/referrers/${D}`), { kind: 'referrers', name: 'a', ref: D });
  t.same(parseEndpoint('a/blobs/uploads/'), { kind: 'uploads' });
  t.same(parseEndpoint('a/b/blobs/uploads'), { kind: 'uploads' });
  t.same(parseEndpoint('a/blobs/uploads/0f1e-uuid'), { kind: 'uploads' });
  t.same(parseEndpoint('manifests/manifests/v1'), { kind: 'manifests', name: 'manifests', ref: 'v1' }, 'the last endpoint segment wins');
  t.same(parseEndpoint('a/manifests/b/manifests/v1'), { kind: 'manifests', name: 'a/manifests/b', ref: 'v1' });

  for (const junk of ['', 'a', 'a/b', 'a/manifests', 'a/manifests/', 'manifests/v1', 'a/manifests/v1/extra', 'a/tags', 'a/tags/list/x', 'a/b/catalog', '_catalog', 'a/blob/x']) {
    const e = errorOf(() => parseEndpoint(junk));
    t.equal(e?.code, 'NAME_UNKNOWN', `${JSON.stringify(junk)}: NAME_UNKNOWN`);
    t.equal(e?.status, 404, `${JSON.stringify(junk)}: 404`);
  }
});

t.test('parseRange', async (t) => {
  const cases: [string | undefined, RangeRequest | undefined][] = [
    [undefined, undefined],
    ['', undefined],
    ['bytes=0-9', { start: 0, end: 10 }],
    ['bytes=5-', { start: 5, end: undefined }],
    ['bytes=-3', { suffix: 3 }],
    ['bytes=7-7', { start: 7, end: 8 }],
    [' bytes=1-2 ', { start: 1, end: 3 }],
    ['bytes=10-5', undefined],
    ['bytes=0-1,3-4', undefined],
    ['bytes=0-1, 3-4', undefined],
    ['bytes=-', undefined],
    ['bytes=a-b', undefined],
    ['items=0-9', undefined],
    ['bytes 0-9', undefined],
    ['bytes=-1-2', undefined],
  ];
  for (const [header, want] of cases) t.same(parseRange(header), want, JSON.stringify(header));
});

t.test('satisfy', async (t) => {
  const size = 100;
  const ok: [string, RangeRequest, { start: number; end: number }][] = [
    ['bytes=0-9', { start: 0, end: 10 }, { start: 0, end: 10 }],
    ['bytes=5-', { start: 5, end: undefined }, { start: 5, end: 100 }],
    ['bytes=-3', { suffix: 3 }, { start: 97, end: 100 }],
    ['end clamped to the size', { start: 90, end: 1001 }, { start: 90, end: 100 }],
    ['last byte', { start: 99, end: 100 }, { start: 99, end: 100 }],
    ['suffix larger than size → whole blob', { suffix: 500 }, { start: 0, end: 100 }],
    ['suffix equal to size', { suffix: 100 }, { start: 0, end: 100 }],
  ];
  for (const [name, range, want] of ok) t.same(satisfy(range, size), want, name);

  const bad: [string, RangeRequest, number][] = [
    ['start at size', { start: 100, end: undefined }, 100],
    ['start beyond size', { start: 150, end: 201 }, 100],
    ['zero suffix', { suffix: 0 }, 100],
    ['any range of an empty blob', { start: 0, end: undefined }, 0],
    ['suffix of an empty blob', { suffix: 5 }, 0],
  ];
  for (const [name, range, n] of bad) {
    const e = errorOf(() => satisfy(range, n));
    t.equal(e?.code, 'RANGE_INVALID', `${name}: RANGE_INVALID`);
    t.equal(e?.status, 416, `${name}: 416`);
    t.same(e?.headers, { 'content-range': `bytes */${n}` }, `${name}: content-range bytes */${n}`);
  }
});

t.test('parseRange then satisfy, as a request goes', async (t) => {
  const serve = (header: string, size: number) => {
    const r = parseRange(header);
    return r && satisfy(r, size);
  };
  t.same(serve('bytes=0-9', 5), { start: 0, end: 5 });
  t.equal(serve('bytes=10-5', 50), undefined, 'an inverted range is ignored: the whole blob is served');
  t.equal(serve('bytes=0-1,5-6', 50), undefined, 'multi-range is ignored');
  t.equal(errorOf(() => serve('bytes=50-', 50))?.headers['content-range'], 'bytes */50');
});
