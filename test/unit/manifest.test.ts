// The manifest parser: what it refuses (with the fault named) and what it lets through.
import t from 'tap';
import { RegistryError } from '../../src/oci/errors.js';
import { DOCKER_LIST, DOCKER_MANIFEST, MAX_MANIFEST_BYTES, OCI_INDEX, OCI_MANIFEST, parseManifest } from '../../src/oci/manifest.js';

const d = (extra: object = {}) => ({ mediaType: 'x/y', digest: `sha256:${'0'.repeat(64)}`, size: 1, ...extra });
const image = (extra: object = {}) => ({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: d(), layers: [d()], ...extra });
const body = (v: unknown) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v));

function fault(v: unknown, mediaType = OCI_MANIFEST): string | undefined {
  try {
    parseManifest(body(v), mediaType);
    return undefined;
  } catch (e) {
    if (!(e instanceof RegistryError)) throw e;
    return `${e.code} ${e.status} ${(e.detail as { reason: string }).reason}`;
  }
}

t.test('refused, with the first fault named', async (t) => {
  const cases: [string, unknown, string, RegExp][] = [
    ['null', 'null', OCI_MANIFEST, /not a JSON object/],
    ['not JSON', '{"schemaVersion": 2', OCI_MANIFEST, /not a JSON object/],
    ['an array', '[]', OCI_MANIFEST, /not a JSON object/],
    ['a string', '"x"', 'application/json', /not a JSON object/],
    ['schemaVersion 1 for OCI', image({ schemaVersion: 1 }), OCI_MANIFEST, /schemaVersion/],
    ['no layers', image({ layers: undefined }), OCI_MANIFEST, /layers is missing/],
    ['layers null', image({ layers: null }), DOCKER_MANIFEST, /layers is missing/],
    ['config null', image({ config: null }), OCI_MANIFEST, /config is missing/],
    ['layers [null]', image({ layers: [null] }), OCI_MANIFEST, /layers\[0\]: not a descriptor/],
    ['layers a string', image({ layers: 'abc' }), OCI_MANIFEST, /layers is not an array/],
    ['a layer with size -1', image({ layers: [d(), d({ size: -1 })] }), OCI_MANIFEST, /layers\[1\]: size/],
    ['a layer with size 1.5', image({ layers: [d({ size: 1.5 })] }), OCI_MANIFEST, /size/],
    ['a layer with size 2^60', image({ layers: [d({ size: 2 ** 60 })] }), OCI_MANIFEST, /size/],
    ['a layer with size "1"', image({ layers: [d({ size: '1' })] }), OCI_MANIFEST, /size/],
    ['a traversal digest', image({ layers: [d({ digest: 'sha256:../../etc/passwd' })] }), OCI_MANIFEST, /digest/],
    ['a short sha256', image({ layers: [d({ digest: 'sha256:abc' })] }), OCI_MANIFEST, /digest/],
    ['no digest', image({ config: { mediaType: 'x/y', size: 1 } }), OCI_MANIFEST, /config: digest/],
    ['annotations with a number', image({ layers: [d({ annotations: { a: 1 } })] }), OCI_MANIFEST, /annotations/],
    ['mediaType a number', image({ mediaType: 3 }), 'application/json', /mediaType/],
    ['an index without manifests', { schemaVersion: 2 }, OCI_INDEX, /manifests is missing/],
    ['a list holding null', { schemaVersion: 2, manifests: [null] }, DOCKER_LIST, /manifests\[0\]/],
    ['a platform without os', { schemaVersion: 2, manifests: [d({ platform: { architecture: 'amd64' } })] }, OCI_INDEX, /platform/],
    ['subject not a descriptor', image({ subject: 'sha256:x' }), OCI_MANIFEST, /subject/],
    ['an unknown type with layers [null]', { layers: [null] }, 'application/vnd.example+json', /layers\[0\]/],
    ['nesting 100 deep', image({ annotations: undefined, x: JSON.parse('['.repeat(100) + ']'.repeat(100)) }), OCI_MANIFEST, /nested deeper/],
    ['more than the bound', image({ annotations: { pad: 'x'.repeat(MAX_MANIFEST_BYTES) } }), OCI_MANIFEST, /larger than/],
  ];
  for (const [name, v, mediaType, want] of cases) {
    const f = fault(v, mediaType);
    t.match(f, /^MANIFEST_INVALID 400 /, `${name}: MANIFEST_INVALID`);
    t.match(f, want, `${name}: ${f}`);
  }
});

t.test('accepted, nulls of optional fields read as absent', async (t) => {
  const m = parseManifest(body(image({ annotations: null, subject: null, layers: [d({ annotations: null, urls: null })] })), OCI_MANIFEST);
  t.equal(m.layers?.length, 1);
  t.notOk('annotations' in m || 'subject' in m, 'optional nulls dropped');
  t.notOk('annotations' in m.layers![0]!, 'in descriptors too');
  t.equal(m.layers![0]!.digest, `sha256:${'0'.repeat(64)}`);

  const idx = parseManifest(body({ schemaVersion: 2, manifests: [d({ platform: { os: 'linux', architecture: 'amd64' }, extra: { kept: true } })] }), OCI_INDEX);
  t.same((idx.manifests![0] as unknown as { extra: unknown }).extra, { kept: true }, 'fields not named are kept');
  t.same(parseManifest(body({ schemaVersion: 1, fsLayers: [] }), 'application/vnd.docker.distribution.manifest.v1+prettyjws'), { schemaVersion: 1, fsLayers: [] }, 'schema 1 is a JSON object, nothing more asked');
  t.ok(parseManifest(body(image({ layers: [], config: d({ digest: 'sha384+x.y:AbC-_=' }) })), OCI_MANIFEST), 'an unregistered algorithm in the digest grammar');
  t.ok(parseManifest(body(image({ annotations: { pad: 'x'.repeat(MAX_MANIFEST_BYTES - 1000) } })), OCI_MANIFEST), 'just under the bound');
});
