// GET /metrics counts what operators watch: hits and misses (and Distribution's registry_proxy_*
// names for them), bytes pulled and served, upstream calls by status, stale and coalesced
// answers, lazy bytes fetched against served, the cache's size; and its series stay bounded
// however many repositories are pulled.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { component, type Component } from '../helpers/component.js';
import { estargzLayer, TOC_DIGEST } from '../helpers/estargz-image.js';
import { seriesOf, valueOf } from '../helpers/metrics.js';
import { tar } from '../helpers/tar.js';
import { waitFor } from '../helpers/util.js';
import { OCI_MANIFEST } from '../../src/oci/manifest.js';

const REPO = 'team/app';
const UP = 'fake.test';

async function scrape(c: Component): Promise<string> {
  const res = await c.app.inject({ url: '/metrics' });
  if (res.statusCode !== 200) throw new Error(`/metrics: ${res.statusCode}`);
  return res.payload;
}

t.test('a cold pull counts misses and the bytes pulled; a warm one hits', async (t) => {
  const c = await component(t);
  const layer = randomBytes(200 << 10);
  const image = c.upstream.pushImage(REPO, 'v1', [layer]);
  let m = await scrape(c);
  for (const type of ['blob', 'manifest']) {
    t.match(m, new RegExp(`^registry_proxy_requests_total\\{type="${type}"\\} 0$`, 'm'), `registry_proxy_requests_total{type="${type}"} is there from the start`);
  }

  const cold = await c.app.inject({ url: `/v2/${REPO}/manifests/v1` });
  t.equal(cold.statusCode, 200);
  const blob = await c.app.inject({ url: `/v2/${REPO}/blobs/${image.layers[0]}` });
  t.equal(blob.statusCode, 200);
  m = await scrape(c);
  t.equal(valueOf(m, 'registry_proxy_misses_total', { type: 'blob' }), 1, 'one blob miss');
  t.equal(valueOf(m, 'registry_proxy_misses_total', { type: 'manifest' }), 1, 'one manifest miss');
  t.equal(valueOf(m, 'registry_proxy_hits_total', { type: 'blob' }), 0, 'no blob hit yet');
  t.equal(valueOf(m, 'registry_proxy_pulled_bytes_total', { type: 'blob' }), layer.length, 'the blob bytes pulled');
  t.equal(valueOf(m, 'registry_proxy_pulled_bytes_total', { type: 'manifest' }), image.body.length, 'the manifest bytes pulled');
  t.equal(valueOf(m, 'pullthrough_cache_requests_total', { type: 'blob', cache: 'miss', upstream: UP }), 1);
  t.equal(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: UP, type: 'blob', method: 'GET', status: '200' }), 1, 'one upstream blob GET, 200');
  t.equal(valueOf(m, 'pullthrough_upstream_received_bytes_total', { upstream: UP, type: 'blob' }), layer.length);

  await c.fillsSettled(); // else a warm pull may join the cold fill: coalesced, not a hit
  for (let i = 0; i < 2; i++) {
    t.equal((await c.app.inject({ url: `/v2/${REPO}/blobs/${image.layers[0]}` })).statusCode, 200);
  }
  t.equal((await c.app.inject({ url: `/v2/${REPO}/manifests/${image.digest}` })).statusCode, 200);
  m = await scrape(c);
  t.equal(valueOf(m, 'registry_proxy_hits_total', { type: 'blob' }), 2, 'two warm blob pulls: two hits');
  t.equal(valueOf(m, 'registry_proxy_hits_total', { type: 'manifest' }), 1, 'the manifest by digest: a hit');
  t.equal(valueOf(m, 'registry_proxy_misses_total', { type: 'blob' }), 1, 'still one miss');
  t.equal(valueOf(m, 'registry_proxy_requests_total', { type: 'blob' }), 3);
  t.equal(valueOf(m, 'registry_proxy_pushed_bytes_total', { type: 'blob' }), 3 * layer.length, 'every client got the whole blob');
  t.equal(valueOf(m, 'registry_proxy_pulled_bytes_total', { type: 'blob' }), layer.length, 'nothing more pulled');
  t.equal(valueOf(m, 'pullthrough_cache_served_bytes_total', { type: 'blob', cache: 'hit', upstream: UP }), 2 * layer.length);
  t.equal(valueOf(m, 'pullthrough_http_requests_total', { route: 'blob', status: '200' }), 3);
  t.equal(valueOf(m, 'pullthrough_http_request_duration_seconds_count', { route: 'blob', cache: 'hit' }), 2, 'durations observed by route and outcome');
  t.equal(valueOf(m, 'pullthrough_cache_entries'), 2, 'the layer and the manifest are in the cache');
  t.equal(valueOf(m, 'pullthrough_cache_bytes'), layer.length + image.body.length, 'their bytes');
  let inFlight = NaN;
  await waitFor(async () => (inFlight = valueOf(await scrape(c), 'pullthrough_fills_in_flight')) === 0, { timeoutMs: 5000, intervalMs: 20, what: "no fill in flight" });
  t.equal(inFlight, 0, 'no fill running once the pull ended');
  t.equal(valueOf(m, 'pullthrough_upstream_healthy', { upstream: UP }), 1);
  t.match(m, /^process_cpu_user_seconds_total /m, "the process's own metrics");
  t.match(m, /^nodejs_eventloop_lag_seconds /m);
});

t.test('upstream requests counted by status; a failed request counted by its status', async (t) => {
  const c = await component(t);
  const digest = `sha256:${'a'.repeat(64)}`;
  c.upstream.putBlob(REPO, Buffer.from('x'));
  const res = await c.app.inject({ url: `/v2/${REPO}/blobs/${digest}` });
  t.equal(res.statusCode, 404);
  c.upstream.fault({ status: 503, code: 'UNAVAILABLE' }, 'getManifest');
  t.equal((await c.app.inject({ url: `/v2/${REPO}/manifests/v1` })).statusCode, 503);
  const m = await scrape(c);
  t.equal(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: UP, type: 'blob', method: 'GET', status: '404' }), 1, 'the upstream 404');
  t.equal(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: UP, type: 'manifest', method: 'GET', status: '503' }), 1, 'the upstream 503');
  t.equal(valueOf(m, 'pullthrough_http_requests_total', { route: 'blob', status: '404' }), 1, 'our 404');
  t.equal(valueOf(m, 'pullthrough_http_requests_total', { route: 'manifest', status: '503' }), 1, 'our 503');
  t.equal(valueOf(m, 'registry_proxy_requests_total', { type: 'blob' }), 0, 'an error is no request served');
  t.equal(valueOf(m, 'registry_proxy_misses_total', { type: 'blob' }), 0);
});

t.test('a stale answer counts as stale (and as a hit for Distribution\'s dashboards)', async (t) => {
  const c = await component(t, { tagTtlMs: 10_000 });
  c.upstream.pushImage(REPO, 'v1', [randomBytes(100)]);
  t.equal((await c.app.inject({ url: `/v2/${REPO}/manifests/v1` })).statusCode, 200);
  c.clock.advance(11_000);
  c.upstream.fault({ status: 503, code: 'UNAVAILABLE' });
  const res = await c.app.inject({ url: `/v2/${REPO}/manifests/v1` });
  t.equal(res.statusCode, 200);
  t.match(res.headers.warning, /^110 /);
  const m = await scrape(c);
  t.equal(valueOf(m, 'pullthrough_cache_requests_total', { type: 'manifest', cache: 'stale', upstream: UP }), 1, 'one stale manifest');
  t.equal(valueOf(m, 'pullthrough_cache_requests_total', { type: 'manifest', cache: 'miss', upstream: UP }), 1, 'the first pull: a miss');
  t.equal(valueOf(m, 'registry_proxy_hits_total', { type: 'manifest' }), 1);
  t.equal(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: UP, type: 'manifest', method: 'HEAD', status: '503' }), 1, 'the revalidation that failed');
});

t.test('two concurrent cold requests: one miss and one coalesced, one upstream fetch', async (t) => {
  const c = await component(t);
  const layer = randomBytes(300 << 10);
  const image = c.upstream.pushImage(REPO, 'v1', [layer]);
  c.upstream.fault({ delayMs: 100 }, 'getBlob', 'getManifest');
  const blobs = await Promise.all([0, 1].map(() => c.app.inject({ url: `/v2/${REPO}/blobs/${image.layers[0]}` })));
  const manifests = await Promise.all([0, 1].map(() => c.app.inject({ url: `/v2/${REPO}/manifests/${image.digest}` })));
  for (const res of [...blobs, ...manifests]) t.equal(res.statusCode, 200);
  t.equal(c.upstream.count('getBlob'), 1, 'one blob fetch');
  t.equal(c.upstream.count('getManifest'), 1, 'one manifest fetch');
  const m = await scrape(c);
  for (const type of ['blob', 'manifest']) {
    t.equal(valueOf(m, 'pullthrough_cache_requests_total', { type, cache: 'miss', upstream: UP }), 1, `${type}: one miss`);
    t.equal(valueOf(m, 'pullthrough_cache_requests_total', { type, cache: 'coalesced', upstream: UP }), 1, `${type}: one coalesced`);
    t.equal(valueOf(m, 'registry_proxy_misses_total', { type }), 1, `${type}: Distribution's misses count the one fetch`);
  }
  t.equal(valueOf(m, 'registry_proxy_pulled_bytes_total', { type: 'blob' }), layer.length, 'the blob pulled once');
  t.equal(valueOf(m, 'pullthrough_cache_served_bytes_total', { type: 'blob', cache: 'coalesced', upstream: UP }), layer.length, 'the second client got the whole blob too');
});

t.test('lazy layers: bytes fetched from the upstream against bytes served', async (t) => {
  const c = await component(t, { estargz: true });
  const files = Array.from({ length: 16 }, (_, i) => ({ name: `data/f${i}.bin`, content: randomBytes(64 << 10) }));
  const built = await estargzLayer(tar(files));
  const digest = c.upstream.putBlob(REPO, built.blob);
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: c.upstream.putBlob(REPO, Buffer.from('{}')), size: 2 },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: built.blob.length, annotations: { [TOC_DIGEST]: built.tocDigest! } }],
  };
  c.upstream.putManifest(REPO, manifest, OCI_MANIFEST, 'v1');
  t.equal((await c.app.inject({ url: `/v2/${REPO}/manifests/v1` })).statusCode, 200);
  const ranges = [[0, 999], [100_000, 100_999]];
  for (const [first, last] of ranges) {
    const res = await c.app.inject({ url: `/v2/${REPO}/blobs/${digest}`, headers: { range: `bytes=${first}-${last}` } });
    t.equal(res.statusCode, 206);
    t.same(res.rawPayload, built.blob.subarray(first!, last! + 1), 'the bytes asked for');
  }
  const m = await scrape(c);
  t.equal(valueOf(m, 'pullthrough_cache_requests_total', { type: 'blob', cache: 'lazy', upstream: UP }), 2, 'two lazy answers');
  t.equal(valueOf(m, 'pullthrough_lazy_served_bytes_total'), 2000, 'the bytes of the two ranges served');
  const fetched = valueOf(m, 'pullthrough_lazy_fetched_bytes_total');
  t.ok(fetched >= 2000, `fetched (${fetched}) covers what was served`);
  t.ok(fetched < built.blob.length, `fetched (${fetched}) less than the layer (${built.blob.length})`);
  t.equal(valueOf(m, 'registry_proxy_pulled_bytes_total', { type: 'blob' }), fetched, 'every byte fetched for the lazy layer came through the upstream');
  t.equal(c.upstream.calls.filter((call) => call.method === 'getBlob' && !call.range).length, 0, 'no whole-layer GET');
});

t.test('many repositories do not grow the series; metrics.repositoryLabels does', async (t) => {
  const pullAll = async (c: Component, from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const repo = `team/app${i}`;
      const image = c.upstream.pushImage(repo, 'v1', [Buffer.from(`layer ${i}`)]);
      t.equal((await c.app.inject({ url: `/v2/${repo}/manifests/v1` })).statusCode, 200);
      t.equal((await c.app.inject({ url: `/v2/${repo}/blobs/${image.layers[0]}` })).statusCode, 200);
    }
    return seriesOf(await scrape(c), ['pullthrough_', 'registry_']);
  };
  const bounded = await component(t);
  await scrape(bounded); // a scrape counts itself once it ended
  const after2 = await pullAll(bounded, 0, 2);
  const after40 = await pullAll(bounded, 2, 40);
  t.same(after40, after2, '38 more repositories: the same series as after 2');
  t.notMatch(after40.join('\n'), /app\d/, 'no repository name in any label');

  const labelled = await component(t, { repositoryLabels: true });
  const named = await pullAll(labelled, 0, 5);
  t.ok(named.some((s) => s.includes('repository="team/app4"')), 'with repositoryLabels: a series names the repository');
});
