// GET /metrics shows what the upstreams announced about their rate limits, and their health; and
// what a pull from a real registry cost upstream.
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startHop } from '../helpers/hop.js';
import { valueOf } from '../helpers/metrics.js';
import { makeImage, pushLayout } from '../helpers/images.js';
import { startProxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

t.test('rate-limit figures and upstream health in /metrics', async (t) => {
  const work = await makeTempDir('pullthrough-metrics-');
  t.teardown(() => removeDir(work));
  const image = await makeImage({ layers: 1, layerBytes: 1024, seed: 'metrics', dir: join(work, 'img') });
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  const hop = await startHop(registry.url);
  t.teardown(() => hop.close());
  const proxy = await startProxy({ configDoc: { upstreams: [{ name: 'up.test', url: hop.url }], retries: 0 } });
  t.teardown(() => proxy.stop());
  const metrics = async () => {
    const r = await request(`${proxy.url}/metrics`);
    t.equal(r.statusCode, 200);
    return r.body.text();
  };

  t.notMatch(await metrics(), /ratelimit_remaining/, 'nothing announced yet');
  Object.assign(hop.faults, { headers: { 'ratelimit-limit': '100;w=21600', 'ratelimit-remaining': '76;w=21600' } });
  const m = await request(`${proxy.url}/v2/team/app/manifests/v1`, { headers: { accept: image.top.mediaType } });
  await m.body.dump();
  const text = await metrics();
  t.match(text, 'pullthrough_upstream_ratelimit_limit{upstream="up.test"} 100');
  t.match(text, 'pullthrough_upstream_ratelimit_remaining{upstream="up.test"} 76');
  t.match(text, 'pullthrough_upstream_healthy{upstream="up.test"} 1');

  hop.reset();
  Object.assign(hop.faults, { down: true });
  for (let i = 0; i < 3; i++) {
    const r = await request(`${proxy.url}/v2/team/other${i}/manifests/v1`);
    await r.body.dump();
    t.equal(r.statusCode, 503);
  }
  t.match(await metrics(), 'pullthrough_upstream_healthy{upstream="up.test"} 0', 'three failures in a row: unhealthy');
});

t.test('a pull from a real registry: upstream calls by status, bytes pulled, a miss then a hit', async (t) => {
  const work = await makeTempDir('pullthrough-metrics-');
  t.teardown(() => removeDir(work));
  const image = await makeImage({ layers: 1, layerBytes: 300 << 10, seed: 'metrics-pull', dir: join(work, 'img') });
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  const proxy = await startProxy({ configDoc: { upstreams: [{ name: 'up.test', url: registry.url }], retries: 0 } });
  t.teardown(() => proxy.stop());
  const layer = image.images[0]!.layers[0]!;
  const get = async (path: string, accept?: string) => {
    const r = await request(`${proxy.url}${path}`, accept ? { headers: { accept } } : {});
    await r.body.dump();
    t.equal(r.statusCode, 200, path);
  };
  await get('/v2/team/app/manifests/v1', image.top.mediaType);
  for (let i = 0; i < 2; i++) await get(`/v2/team/app/blobs/${layer.digest}`);
  const missing = await request(`${proxy.url}/v2/team/app/blobs/sha256:${'0'.repeat(64)}`);
  await missing.body.dump();
  t.equal(missing.statusCode, 404);
  const m = await (await request(`${proxy.url}/metrics`)).body.text();
  t.equal(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: 'up.test', type: 'blob', method: 'GET', status: '200' }), 1, 'one blob GET upstream');
  t.equal(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: 'up.test', type: 'blob', method: 'GET', status: '404' }), 1, "the registry's 404");
  t.ok(valueOf(m, 'pullthrough_upstream_requests_total', { upstream: 'up.test', type: 'manifest', method: 'GET', status: '200' }) >= 1, 'the manifest GET');
  t.equal(valueOf(m, 'registry_proxy_pulled_bytes_total', { type: 'blob' }), layer.size, 'the layer pulled once, every byte counted');
  t.equal(valueOf(m, 'pullthrough_upstream_received_bytes_total', { upstream: 'up.test', type: 'blob' }), layer.size);
  t.equal(valueOf(m, 'registry_proxy_misses_total', { type: 'blob' }), 1);
  t.equal(valueOf(m, 'registry_proxy_hits_total', { type: 'blob' }), 1);
  t.equal(valueOf(m, 'registry_proxy_pushed_bytes_total', { type: 'blob' }), 2 * layer.size);
  t.ok(valueOf(m, 'pullthrough_cache_bytes') >= layer.size, 'the cache size');
  t.equal(valueOf(m, 'pullthrough_upstream_request_duration_seconds_count', { upstream: 'up.test', type: 'blob', method: 'GET', status: '2xx' }), 1, 'the duration of the blob GET');
  t.equal(valueOf(m, 'pullthrough_upstream_request_duration_seconds_count', { upstream: 'up.test', type: 'blob', method: 'GET', status: '4xx' }), 1, 'and of the 404');
});
