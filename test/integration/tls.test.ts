// HTTPS with real clients verifying against a test CA made here with openssl (test/helpers/tls.ts):
// curl with and without --cacert, skopeo with --src-cert-dir; the certificate replaced under a
// running proxy and picked up by new handshakes while an open connection carries on; a failed
// reload that keeps the old certificate; mTLS, where a client without a certificate signed by
// clientCa is refused in the handshake. No proxy log holds a private key.
//
//   curl / skopeo / Node ──TLS──> pullthrough ──> docker-registry
import { copyFile, mkdir, readFile, rename, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { Client } from 'undici';
import { LeakWatch, type CapturedProxy } from '../helpers/captured-proxy.js';
import { startChildProxy } from '../helpers/child-proxy.js';
import { curl } from '../helpers/curl.js';
import { makeImage, MEDIA, pullImage, pushLayout } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTestPki, peerCertificate, type Issued } from '../helpers/tls.js';
import { makeTempDir, removeDir, waitFor, type Test } from '../helpers/util.js';

const work = await makeTempDir('pullthrough-tls-');
t.teardown(() => removeDir(work));
const image = await makeImage({ layers: 2, layerBytes: 128 << 10, seed: 'tls', dir: join(work, 'image') });
const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
await pushLayout(image.dir, `${registry.host}/team/app:v1`);

const pki = await makeTestPki();
t.teardown(() => removeDir(pki.dir));
// a CA the proxy does not know: its certificates must not get in
const rogue = await makeTestPki({ caKey: SECRETS.tlsOtherCaKey, caName: 'not the proxy CA' });
t.teardown(() => removeDir(rogue.dir));
const ca = await readFile(pki.caCert);

const watch = new LeakWatch();
const upstreams = [{ name: 'registry', url: registry.url }];
const portOf = (proxy: CapturedProxy): number => Number(new URL(proxy.url).port);
const logged = (proxy: CapturedProxy, msg: string) => proxy.logs().filter((l) => l.msg === msg);

async function tlsProxy(t: Test, tls: Record<string, string>): Promise<CapturedProxy> {
  return watch.proxy(t, { configDoc: { upstreams, tls } });
}

t.test('HTTPS: curl and skopeo verify the certificate against the test CA', async (t) => {
  const proxy = await tlsProxy(t, { cert: pki.server.cert, key: pki.server.key });
  t.match(proxy.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  const port = portOf(proxy);

  const trusted = await curl(['--cacert', pki.caCert, `https://127.0.0.1:${port}/v2/`]);
  t.equal(trusted.code, 0, `curl --cacert: ${trusted.stderr}`);
  t.equal(trusted.stdout, '{}', 'GET /v2/ answers');
  const byName = await curl(['--cacert', pki.caCert, '--output', '/dev/null', '--write-out', '%{http_code}', `https://localhost:${port}/v2/`]);
  t.equal(byName.stdout, '200', 'the certificate names localhost too');

  const manifest = await curl(['--cacert', pki.caCert, '--header', `accept: ${MEDIA.oci.manifest}`, '--dump-header', '-', '--output', '/dev/null', `https://127.0.0.1:${port}/v2/team/app/manifests/v1`]);
  t.equal(manifest.code, 0, manifest.stderr);
  t.match(manifest.stdout, /^HTTP\/1\.1 200/, 'HTTP/1.1 over TLS');
  t.match(manifest.stdout, new RegExp(`docker-content-digest: ${image.top.digest}`, 'i'), 'the manifest, through the proxy');

  const untrusted = await curl([`https://127.0.0.1:${port}/v2/`]);
  t.equal(untrusted.code, 60, 'curl without --cacert does not trust the certificate (exit code 60)');
  t.match(untrusted.stderr, /certificate/i);
  const plain = await curl([`http://127.0.0.1:${port}/v2/`]);
  t.not(plain.code, 0, 'plain HTTP is not served on the TLS port');

  const pulled = await pullImage(`${proxy.host}/team/app:v1`, join(work, 'skopeo-ca'), { certDir: await pki.certDir() });
  t.same(pulled.allDigests, image.allDigests, 'skopeo --src-cert-dir pulls every blob, verified');
  await t.rejects(pullImage(`${proxy.host}/team/app:v1`, join(work, 'skopeo-rogue'), { certDir: await rogue.certDir() }), /x509|certificate/, 'skopeo trusting another CA refuses the proxy');

  const refusals = logged(proxy, 'TLS handshake failed').map((l) => l.reason);
  t.match(refusals, [/unknown ca.*does it trust the CA of this server's certificate/], 'the curl that did not trust the certificate is logged');
  t.ok(refusals.includes('plain HTTP on the HTTPS port'), 'and the plain HTTP request');
  t.match(logged(proxy, 'TLS certificate loaded')[0], { tls: { cert: pki.server.cert, serial: pki.server.serial, subject: 'CN=localhost', clientCa: false } }, 'the certificate is logged at start');
});

/** Writes the files as a renewal tool does: each to a temp name, then renamed over the old one. */
async function replaceByRename(from: Issued, to: { cert: string; key: string }): Promise<void> {
  await writeFile(`${to.key}.new`, await readFile(from.key), { mode: 0o600 });
  await writeFile(`${to.cert}.new`, await readFile(from.cert));
  await rename(`${to.key}.new`, to.key);
  await rename(`${to.cert}.new`, to.cert);
}

t.test('replaced certificate files are reloaded: new handshakes see the new one, an open connection carries on', async (t) => {
  const served = await pki.issue({ name: 'rotating' });
  const files = { cert: served.cert, key: served.key };
  const proxy = await tlsProxy(t, files);
  const port = portOf(proxy);
  const serialNow = async (): Promise<string> => (await peerCertificate(port, ca)).serialNumber;
  t.equal(await serialNow(), served.serial, 'the first certificate is served');

  // one connection, kept open across the reload
  let connects = 0;
  const client = new Client(proxy.url, { connect: { ca }, keepAliveTimeout: 60_000, pipelining: 1 });
  t.teardown(() => client.close());
  client.on('connect', () => connects++);
  const v2 = async (): Promise<number> => {
    const res = await client.request({ path: '/v2/', method: 'GET' });
    await res.body.dump();
    return res.statusCode;
  };
  t.equal(await v2(), 200);

  const next = await pki.issue({ name: 'next', key: SECRETS.tlsNextServerKey });
  await replaceByRename(next, files);
  await waitFor(async () => (await serialNow()) === next.serial, { timeoutMs: 20_000, intervalMs: 200, what: 'the new certificate' });
  t.pass('a new handshake gets the new certificate (and its new key)');
  t.match(logged(proxy, 'TLS certificate reloaded'), [{ level: 30, tls: { cert: served.cert, serial: next.serial } }], 'one reload, logged with the new serial');
  t.equal(await v2(), 200, 'the connection opened before the reload still answers');
  t.equal(connects, 1, 'on the same connection');

  // a key that is not the certificate's: the reload fails and the served certificate stays
  await writeFile(files.key, `${SECRETS.tlsClientKey}\n`);
  const failed = await waitFor(() => logged(proxy, 'TLS certificate reload failed; still serving the previous certificate')[0], { timeoutMs: 20_000, intervalMs: 200, what: 'the failed reload' });
  t.match(failed, { level: 40, tls: { setting: 'tls.key', path: files.key }, err: /is not the private key of the certificate/ }, 'the failed reload names the file and why');
  t.equal(await serialNow(), next.serial, 'the previous certificate is still served');
  t.equal(await v2(), 200);
  // the botched rotation undone: said so, and nothing reloaded
  await writeFile(files.key, await readFile(next.key));
  await waitFor(() => logged(proxy, 'TLS files are usable again; serving the same certificate')[0], { timeoutMs: 20_000, intervalMs: 200, what: 'the files usable again' });
  t.equal(logged(proxy, 'TLS certificate reloaded').length, 1, 'no second reload for the same files');

  // fixed in place (written over, not renamed): reloaded again
  const third = await pki.issue({ name: 'third' });
  await writeFile(files.key, await readFile(third.key));
  await writeFile(files.cert, await readFile(third.cert));
  await waitFor(async () => (await serialNow()) === third.serial, { timeoutMs: 20_000, intervalMs: 200, what: 'the third certificate' });
  t.pass('a file written in place is reloaded too');
  t.equal(connects, 1, 'no reconnect along the way');
});

t.test('a Kubernetes-style secret update (the ..data symlink swapped to a new directory) is reloaded', async (t) => {
  // tls.crt -> ..data/tls.crt, ..data -> ..v1: the update writes ..v2 and renames a new ..data over the old
  const secret = join(work, 'secret');
  const version = async (name: string, from: Issued): Promise<void> => {
    await mkdir(join(secret, name), { recursive: true });
    await copyFile(from.cert, join(secret, name, 'tls.crt'));
    await copyFile(from.key, join(secret, name, 'tls.key'));
  };
  await version('..v1', await pki.issue({ name: 'k8s-v1' }));
  await symlink('..v1', join(secret, '..data'));
  for (const f of ['tls.crt', 'tls.key']) await symlink(join('..data', f), join(secret, f));
  const proxy = await tlsProxy(t, { cert: join(secret, 'tls.crt'), key: join(secret, 'tls.key') });
  const port = portOf(proxy);
  const v2 = await pki.issue({ name: 'k8s-v2', key: SECRETS.tlsNextServerKey });
  await version('..v2', v2);
  await symlink('..v2', join(secret, '..data_tmp'));
  await rename(join(secret, '..data_tmp'), join(secret, '..data'));
  await waitFor(async () => (await peerCertificate(port, ca)).serialNumber === v2.serial, { timeoutMs: 20_000, intervalMs: 200, what: 'the certificate behind the new symlink' });
  t.pass('the certificate behind the swapped symlink is served');
});

t.test('mTLS: clientCa requires a client certificate it signed', async (t) => {
  const proxy = await tlsProxy(t, { cert: pki.server.cert, key: pki.server.key, clientCa: pki.caCert });
  const url = `${proxy.url}/v2/`;
  const client = await pki.issue({ name: 'client', usage: 'client' });
  const outsider = await rogue.issue({ name: 'outsider', usage: 'client' });

  const none = await curl(['--cacert', pki.caCert, url]);
  t.not(none.code, 0, 'curl without a client certificate is refused');
  t.match(none.stderr, /alert|certificate|handshake/i, none.stderr);
  const signed = await curl(['--cacert', pki.caCert, '--cert', client.cert, '--key', client.key, url]);
  t.equal(signed.code, 0, `curl with a certificate signed by clientCa: ${signed.stderr}`);
  t.equal(signed.stdout, '{}');
  const foreign = await curl(['--cacert', pki.caCert, '--cert', outsider.cert, '--key', outsider.key, url]);
  t.not(foreign.code, 0, 'curl with a certificate of another CA is refused');

  const pulled = await pullImage(`${proxy.host}/team/app:v1`, join(work, 'skopeo-mtls'), { certDir: await pki.certDir(client) });
  t.same(pulled.allDigests, image.allDigests, 'skopeo with client.cert and client.key in its cert dir pulls');
  await t.rejects(pullImage(`${proxy.host}/team/app:v1`, join(work, 'skopeo-no-client'), { certDir: await pki.certDir() }), 'skopeo without a client certificate is refused');

  const res = await fetch(url, { dispatcher: pki.agent(client) } as RequestInit);
  t.equal(res.status, 200, 'Node with the client certificate');
  const refusals = logged(proxy, 'TLS handshake failed').map((l) => l.reason);
  t.ok(refusals.includes('the client sent no certificate, and tls.clientCa requires one'), 'a client without a certificate is logged');
  t.ok(refusals.some((r) => /^the client's certificate is not signed by tls\.clientCa \([A-Z_]+\)$/.test(String(r))), 'so is one whose certificate another CA signed');
  t.match(logged(proxy, 'TLS certificate loaded')[0], { tls: { clientCa: pki.caCert } });
});

t.test('pullthrough serve --tls-cert FILE --tls-key FILE serves HTTPS', async (t) => {
  const child = await startChildProxy(t, { upstreams: { registry: registry.url }, tls: { cert: pki.server.cert, key: pki.server.key, ca } });
  t.match(child.url, /^https:/);
  const r = await curl(['--cacert', pki.caCert, `${child.url}/v2/`]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout, '{}');
  t.equal((await peerCertificate(Number(new URL(child.url).port), ca)).serialNumber, pki.server.serial);
});

t.test('no proxy log, cache file or error body holds a private key', async (t) => {
  await watch.check(t);
});
