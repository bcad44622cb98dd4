// `pullthrough warm` against a pullthrough serving HTTPS that requires client certificates
// (tls.clientCa): it trusts the server's CA with --cacert and presents --cert and --key; without
// them it exits 1 saying why it could not connect.
import { Writable } from 'node:stream';
import { join } from 'node:path';
import t from 'tap';
import { makeImage, pushLayout } from '../helpers/images.js';
import { startProxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';
import { makeTestPki } from '../helpers/tls.js';
import { makeTempDir, removeDir } from '../helpers/util.js';
import { runWarm } from '../../src/warm/command.js';

class Capture extends Writable {
  text = '';
  override _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.text += chunk.toString();
    done();
  }
}

async function warmIn(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await runWarm(args, { stdout, stderr });
  return { code, stdout: stdout.text, stderr: stderr.text };
}

t.test('mTLS: --cacert, --cert and --key', async (t) => {
  const work = await makeTempDir('pullthrough-warm-tls-');
  t.teardown(() => removeDir(work));
  const pki = await makeTestPki();
  const client = await pki.issue({ name: 'warm', usage: 'client' });
  const image = await makeImage({ layers: 1, layerBytes: 64 << 10, seed: 'warm-tls', dir: join(work, 'image') });
  const registry = await startRegistry({ mode: 'open' });
  t.teardown(() => registry.stop());
  await pushLayout(image.dir, `${registry.host}/team/app:v1`);
  const proxy = await startProxy({ upstream: [`up.test=${registry.url}`], tlsCert: pki.server.cert, tlsKey: pki.server.key, tlsClientCa: pki.caCert });
  t.teardown(() => proxy.stop());
  t.match(proxy.url, /^https:/);

  const untrusted = await warmIn(['--server', proxy.url, 'team/app:v1']);
  t.equal(untrusted.code, 1, 'a server whose CA is not trusted: exit code 1');
  t.match(untrusted.stderr, /^pullthrough warm: team\/app:v1: cannot reach the server at https:\/\/127\.0\.0\.1:\d+: .*(certificate|CERT)/);

  const anonymous = await warmIn(['--server', proxy.url, '--cacert', pki.caCert, 'team/app:v1']);
  t.equal(anonymous.code, 1, 'without a client certificate: exit code 1');
  t.match(anonymous.stderr, /cannot reach the server at https:\/\/127\.0\.0\.1:\d+: /);

  const ok = await warmIn(['--server', proxy.url, '--cacert', pki.caCert, '--cert', client.cert, '--key', client.key, 'team/app:v1']);
  t.equal(ok.code, 0, `with both: ${ok.stderr}`);
  t.match(ok.stdout, /^warmed 1 image: 2 blobs verified/m);

  const half = await warmIn(['--server', proxy.url, '--cert', client.cert, 'team/app:v1']);
  t.equal(half.code, 2, '--cert without --key is a usage error');
  t.match(half.stderr, /^pullthrough warm: --cert and --key go together/);
  const missing = await warmIn(['--server', proxy.url, '--cacert', join(work, 'nope.pem'), 'team/app:v1']);
  t.equal(missing.code, 2);
  t.match(missing.stderr, /^pullthrough warm: --cacert: cannot read .*nope\.pem: ENOENT/);
});
