// `pullthrough warm` in a hostile world: an upstream that lies about a digest (through pullthrough,
// which refuses the content and breaks the download off), and a server that lies to warm itself
// (the hostile registry as --server): warm's own checks of digest and size. Each ends with exit
// code 1 and a message naming the image and the blob.
import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import t from 'tap';
import { hostileSetup, startHostileRegistry, type HostileRegistry } from '../helpers/hostile-registry.js';
import { runWarm } from '../../src/warm/command.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const sha256 = (b: Buffer | string): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Image {
  manifest: string;
  config: { digest: string; size: number };
  layer: { digest: string; size: number };
}

/** One image (a config and a layer of random bytes) in `repo` under `tag`; `layerSize` overrides what its descriptor says. */
function addImage(reg: HostileRegistry, repo: string, tag: string, o: { layerSize?: number } = {}): Image {
  const configBody = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } });
  const layerBody = randomBytes(64 << 10);
  const config = { mediaType: 'application/vnd.oci.image.config.v1+json', digest: reg.addBlob(configBody), size: configBody.length };
  const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: reg.addBlob(layerBody), size: o.layerSize ?? layerBody.length };
  const body = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config, layers: [layer] });
  return { manifest: reg.addManifest(repo, body, OCI_MANIFEST, tag), config, layer };
}

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

t.test('through pullthrough: an upstream that flips a byte of a layer fails that image, and nothing of it is cached', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const bad = addImage(reg, 'team/app', 'v1');
  const good = addImage(reg, 'team/other', 'v1');
  reg.misbehave({ kind: 'wrongByte', offset: 1000 }, { only: { pathIncludes: bad.layer.digest } });
  const r = await warmIn(['--server', proxy.url, 'team/app:v1', 'team/other:v1']);
  t.equal(r.code, 1, 'exit code 1');
  t.match(r.stderr, new RegExp(`^pullthrough warm: team/app:v1: blob ${bad.layer.digest} \\(team/app:v1 layer 1/1\\): the download broke off after \\d+ of ${bad.layer.size} bytes .*the server's log says why\\n$`), 'one message, naming the image and the blob');
  t.match(r.stdout, new RegExp(`^failed ${bad.layer.digest.slice(0, 19)} team/app:v1 layer 1/1: the download broke off`, 'm'), 'and a progress line for it');
  // the two images share their config: it is fetched once
  t.match(r.stdout, /^warmed 1 of 2 images: 2 of 3 blobs verified/m, 'the other image was warmed');

  reg.behave();
  const before = reg.count({ method: 'GET', pathIncludes: bad.layer.digest });
  const again = await warmIn(['--server', proxy.url, 'team/app:v1']);
  t.equal(again.code, 0, `once the upstream is honest, warm succeeds: ${again.stderr}`);
  t.equal(reg.count({ method: 'GET', pathIncludes: bad.layer.digest }), before + 1, 'fetching the layer from the upstream again: the bad copy was not kept');
});

t.test('through pullthrough: an upstream whose manifest is not the digest it names fails with the server\'s answer', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  addImage(reg, 'team/app', 'v1');
  const other = sha256('something else');
  reg.misbehave({ kind: 'custom', answer: (_req, honest) => {
    const a = honest();
    return 'status' in a ? { ...a, headers: { ...a.headers, 'Docker-Content-Digest': other } } : a;
  } }, { only: { pathIncludes: '/manifests/v1' } });
  const r = await warmIn(['--server', proxy.url, 'team/app:v1']);
  t.equal(r.code, 1);
  t.match(r.stderr, /^pullthrough warm: team\/app:v1: the server answered 502 UNKNOWN: .*digest.* for the manifest v1\n$/);
  t.match(r.stdout, /^warmed 0 of 1 image: 0 blobs verified/m);
});

t.test("a server that lies to warm itself: warm's own digest and size checks", async (t) => {
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  const img = addImage(reg, 'team/app', 'v1');
  const short = addImage(reg, 'team/short', 'v1', { layerSize: (64 << 10) + 1 });

  const lie = async (m: Parameters<HostileRegistry['misbehave']>[0], path: string, image = 'team/app:v1'): Promise<string> => {
    reg.behave();
    reg.misbehave(m, { only: { pathIncludes: path } });
    const r = await warmIn(['--server', reg.url, image]);
    t.equal(r.code, 1, `${m.kind}: exit code 1`);
    return r.stderr;
  };
  t.match(await lie({ kind: 'wrongByte', offset: 5 }, img.layer.digest), new RegExp(`blob ${img.layer.digest} \\(team/app:v1 layer 1/1\\): the blob's content hashes to sha256:[a-f0-9]{64}\\n$`), 'a wrong byte');
  t.match(await lie({ kind: 'contentLength', announced: img.layer.size + 10 }, img.layer.digest), /the server announced 65546 bytes; the blob's descriptor says 65536/, 'a longer Content-Length');
  const chunked = (extra: number) => ({ kind: 'custom' as const, answer: () => {
    const body = Buffer.concat([randomBytes(img.layer.size + extra)]);
    return { raw: Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) };
  } });
  t.match(await lie(chunked(10), img.layer.digest), /the server sent more than the 65536 bytes of the blob's descriptor/, 'a chunked body longer than the descriptor');
  t.match(await lie(chunked(-10), img.layer.digest), /the server ended the blob after 65526 of its 65536 bytes/, 'a chunked body shorter');
  t.match(await lie({ kind: 'honest' }, 'nothing', 'team/short:v1'), new RegExp(`blob ${short.layer.digest} .*: the server announced 65536 bytes; the blob's descriptor says ${short.layer.size}`), 'a descriptor the blob does not fill');
  const other = sha256('x');
  t.match(
    await lie({ kind: 'custom', answer: (_r, honest) => {
      const a = honest();
      return 'status' in a ? { ...a, headers: { ...a.headers, 'Docker-Content-Digest': other } } : a;
    } }, '/manifests/v1'),
    new RegExp(`the server sent a manifest v1 that hashes to ${img.manifest}, not ${other}`),
    'a manifest that is not the digest named',
  );

  // an index whose descriptor says a size its manifest does not have
  reg.behave();
  const manifestBody = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: img.config, layers: [img.layer] });
  const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: img.manifest, size: manifestBody.length + 1, platform: { os: 'linux', architecture: 'amd64' } }] });
  reg.addManifest('team/app', index, OCI_INDEX, 'multi');
  const r = await warmIn(['--server', reg.url, 'team/app:multi']);
  t.equal(r.code, 1);
  t.match(r.stderr, new RegExp(`team/app:multi: the server sent a manifest ${img.manifest} of ${manifestBody.length} bytes; its descriptor says ${manifestBody.length + 1}`));
});
