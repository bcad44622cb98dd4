// containerd pulling through an HTTPS pullthrough: the mirror's certificate verified against a
// test CA named by `ca` in hosts.toml, and under mTLS the client certificate given by `client`.
// Without them containerd refuses the mirror (and falls back to the upstream host, which never
// resolves here, so the pull fails), and the proxy's log says why.
//
//   ctr ──TLS──> pullthrough ──> docker-registry   (first.example)
import { join } from 'node:path';
import t from 'tap';
import { LeakWatch, type CapturedProxy } from '../helpers/captured-proxy.js';
import { containerdUnavailable, startContainerd, writeHostsDir, type Containerd, type Mirror } from '../helpers/containerd.js';
import { makeImage, pushLayout, type ImageLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTestPki } from '../helpers/tls.js';
import { makeTempDir, removeDir, type Test } from '../helpers/util.js';

const HOST = 'first.example';
const REF = `${HOST}/team/app:v1`;

// `npm test` installs containerd when it is missing, so its absence is a failure, not a skip
const unavailable = containerdUnavailable();
if (unavailable !== undefined) {
  t.fail(`containerd cannot run here: ${unavailable}`);
} else {
  await main();
}

async function main(): Promise<void> {
  const work = await makeTempDir('pullthrough-ctd-tls-');
  t.teardown(() => removeDir(work));
  const image = await makeImage({ layers: 2, layerBytes: 128 << 10, seed: 'ctd-tls', dir: join(work, 'image') });
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  const pki = await makeTestPki();
  t.teardown(() => removeDir(pki.dir));
  const client = await pki.issue({ name: 'containerd', usage: 'client' });
  const watch = new LeakWatch();
  const upstreams = [{ name: HOST, url: registry.url }];

  let dirs = 0;
  const hostsDir = async (mirror: Omit<Mirror, 'host'>): Promise<string> => {
    const dir = join(work, `hosts-${dirs++}`);
    await writeHostsDir(dir, [{ host: HOST, ...mirror }]);
    return dir;
  };
  const newContainerd = async (t: Test): Promise<Containerd> => {
    const ctd = await startContainerd();
    t.teardown(() => ctd.stop());
    return ctd;
  };
  const pull = async (ctd: Containerd, dir: string): Promise<void> => {
    try {
      await ctd.pull(REF, { hostsDir: dir, platform: 'linux/amd64' });
    } catch (err) {
      throw new Error(`${(err as Error).message}\ncontainerd log:\n${(await ctd.log()).slice(-3000)}`);
    }
  };
  const checkPulled = async (t: Test, ctd: Containerd, layout: ImageLayout, proxy: CapturedProxy): Promise<void> => {
    t.equal((await ctd.images()).find((i) => i.ref === REF)?.digest, layout.top.digest, `${REF} has the digest it was built with`);
    const content = await ctd.content();
    const img = layout.images[0]!;
    t.same([img.manifest.digest, img.config.digest, ...img.layers.map((l) => l.digest)].filter((d) => !content.has(d)), [], 'every manifest and blob is in the content store');
    const served = proxy.logs().flatMap((l) => (l.msg === 'request completed' && l.method === 'GET' && l.status === 200 ? [String(l.path)] : []));
    for (const d of [img.config.digest, ...img.layers.map((l) => l.digest)]) {
      t.ok(served.includes(`/v2/team/app/blobs/${d}`), `containerd fetched ${d.slice(0, 19)} from the mirror`);
    }
  };
  const refusals = (proxy: CapturedProxy): string[] => proxy.logs().filter((l) => l.msg === 'TLS handshake failed').map((l) => String(l.reason));

  t.test('hosts.toml with ca: containerd verifies the mirror and pulls through it', async (t) => {
    const proxy = await watch.proxy(t, { configDoc: { upstreams, tls: { cert: pki.server.cert, key: pki.server.key } } });
    const ctd = await newContainerd(t);
    await pull(ctd, await hostsDir({ mirror: proxy.url, ca: pki.caCert }));
    await checkPulled(t, ctd, image, proxy);

    const untrusting = await newContainerd(t);
    await t.rejects(untrusting.pull(REF, { hostsDir: await hostsDir({ mirror: proxy.url }), platform: 'linux/amd64' }), 'without ca, containerd does not trust the mirror');
    t.match(refusals(proxy), [/does it trust the CA of this server's certificate/], 'the proxy logs the refused handshake');
  });

  t.test('mTLS: hosts.toml client = [[cert, key]] gets containerd in', async (t) => {
    const proxy = await watch.proxy(t, { configDoc: { upstreams, tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.caCert } } });
    const ctd = await newContainerd(t);
    await pull(ctd, await hostsDir({ mirror: proxy.url, ca: pki.caCert, client: { cert: client.cert, key: client.key } }));
    await checkPulled(t, ctd, image, proxy);

    const anonymous = await newContainerd(t);
    await t.rejects(anonymous.pull(REF, { hostsDir: await hostsDir({ mirror: proxy.url, ca: pki.caCert }), platform: 'linux/amd64' }), 'without a client certificate, containerd is refused');
    t.ok(refusals(proxy).includes('the client sent no certificate, and tls.clientCa requires one'), 'the proxy logs why');
  });

  t.test('no proxy log, cache file or error body holds a private key', async (t) => {
    await watch.check(t);
  });
}
