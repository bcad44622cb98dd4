// GET /metrics shows what the upstreams announced about their rate limits, and their health.
import { join } from 'node:path';
import t from 'tap';
import { request } from 'undici';
import { startHop } from '../helpers/hop.js';
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
