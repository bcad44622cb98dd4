// What the OCI distribution-spec conformance suite checks in its Pull and Content Discovery
// workflows, asked of pullthrough in front of Debian's docker-registry. Content is pushed to
// docker-registry directly (pullthrough is read-only), the way the suite's own setup pushes it;
// every check is a request to pullthrough. Sections cited are of distribution-spec v1.1 (spec.md);
// the checks follow the suite's v1.1.1 workflows, with a few it leaves loose made exact (the page
// after `last`, n=0, the bytes of a ranged read).
import { createHash } from 'node:crypto';
import t from 'tap';
import { request } from 'undici';
import { seededBytes } from '../helpers/images.js';
import { startProxy } from '../helpers/proxy.js';
import { startRegistry } from '../helpers/registry.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_CONFIG = 'application/vnd.oci.image.config.v1+json';
const EMPTY_JSON = 'application/vnd.oci.empty.v1+json';
const SBOM = 'application/vnd.example.sbom.v1';
const SIGNATURE = 'application/vnd.example.signature.v1';
const BUNDLE = 'application/vnd.example.bundle.v1';
const NOTE = 'org.example.conformance.note';
const NAME = 'conformance/repo';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const json = (v: unknown) => Buffer.from(JSON.stringify(v, null, 2));
interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  artifactType?: string;
  annotations?: Record<string, string>;
}
const descriptorOf = (mediaType: string, body: Buffer): Descriptor => ({ mediaType, digest: sha256(body), size: body.length });

const registry = await startRegistry({ mode: 'open' });
t.teardown(() => registry.stop());
const proxy = await startProxy({ configDoc: { upstreams: [{ name: 'upstream.test', url: registry.url }], retries: 0 } });
t.teardown(() => proxy.stop());

// --- seeding docker-registry through its push API ("Push": POST then PUT, "Pushing Manifests") ---

async function pushBlob(body: Buffer): Promise<Descriptor> {
  const started = await request(`${registry.url}/v2/${NAME}/blobs/uploads/`, { method: 'POST' });
  await started.body.dump();
  if (started.statusCode !== 202) throw new Error(`upload start: ${started.statusCode}`);
  const location = new URL(String(started.headers.location), registry.url);
  location.searchParams.set('digest', sha256(body));
  const put = await request(location, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body });
  await put.body.dump();
  if (put.statusCode !== 201) throw new Error(`upload: ${put.statusCode}`);
  return descriptorOf('application/octet-stream', body);
}

async function pushManifest(reference: string, mediaType: string, body: Buffer): Promise<void> {
  const put = await request(`${registry.url}/v2/${NAME}/manifests/${reference}`, { method: 'PUT', headers: { 'content-type': mediaType }, body });
  const text = await put.body.text();
  if (put.statusCode !== 201) throw new Error(`manifest ${reference}: ${put.statusCode} ${text}`);
}

/**
 * Pushes a manifest with a `subject` as a client must to a registry without the referrers API,
 * which docker-registry 2.8 is ("Pushing Manifests with Subject", "Referrers Tag Schema"): by
 * digest, then adds its descriptor to the image index at the tag `sha256-<subject hex>`.
 */
const referrerIndexes = new Map<string, Descriptor[]>();
async function pushReferrer(mediaType: string, body: Buffer, subjectDigest: string): Promise<Descriptor> {
  await pushManifest(sha256(body), mediaType, body);
  const parsed = JSON.parse(body.toString()) as { artifactType?: string; config?: { mediaType?: string }; annotations?: Record<string, string> };
  const d: Descriptor = descriptorOf(mediaType, body);
  const artifactType = parsed.artifactType ?? (mediaType === OCI_MANIFEST ? parsed.config?.mediaType : undefined);
  if (artifactType) d.artifactType = artifactType;
  if (parsed.annotations) d.annotations = parsed.annotations;
  const list = [...(referrerIndexes.get(subjectDigest) ?? []), d];
  referrerIndexes.set(subjectDigest, list);
  await pushManifest(subjectDigest.replace(':', '-'), OCI_INDEX, json({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: list }));
  return d;
}

// Pull content: one config per manifest, one shared layer; manifest 0 under a tag, manifest 1
// by digest only.
const layer = await pushBlob(seededBytes('conformance-layer', 3000));
const layerDesc = { ...layer, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' };
const configs = await Promise.all(
  [0, 1, 2, 3, 4].map((i) => pushBlob(json({ architecture: 'amd64', os: 'linux', author: `conformance ${i}`, rootfs: { type: 'layers', diff_ids: [] } }))),
);
const manifests = configs.map((c) => json({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { ...c, mediaType: OCI_CONFIG }, layers: [layerDesc] }));
await pushManifest('tagtest0', OCI_MANIFEST, manifests[0]!);
await pushManifest(sha256(manifests[1]!), OCI_MANIFEST, manifests[1]!);
// a blob of an odd size, for ranged reads
const blob42 = seededBytes('conformance-blob', 42);
await pushBlob(blob42);

// Discovery content: four tags on manifest 2; manifest 4 (tagged) with five referrers, among
// them an index; one referrer whose subject (manifest 3) was never pushed.
for (const tag of ['test0', 'test1', 'test2', 'test3']) await pushManifest(tag, OCI_MANIFEST, manifests[2]!);
await pushManifest('subjecttag', OCI_MANIFEST, manifests[4]!);
const subject = descriptorOf(OCI_MANIFEST, manifests[4]!);
const absentSubject = descriptorOf(OCI_MANIFEST, manifests[3]!);
const empty = { ...(await pushBlob(Buffer.from('{}'))), mediaType: EMPTY_JSON };
const sbomBytes = await pushBlob(Buffer.from('an SBOM, in a config'));
const sigBytes = await pushBlob(Buffer.from('a signature, in a layer'));
const artifact = (fields: Record<string, unknown>) => json({ schemaVersion: 2, mediaType: OCI_MANIFEST, ...fields });
const sbomByConfig = await pushReferrer(
  OCI_MANIFEST,
  artifact({ config: { ...sbomBytes, mediaType: SBOM }, layers: [empty], subject, annotations: { [NOTE]: 'sbom by config type' } }),
  subject.digest,
);
const sbomByArtifactType = await pushReferrer(
  OCI_MANIFEST,
  artifact({ artifactType: SBOM, config: empty, layers: [{ ...sbomBytes, mediaType: SBOM }], subject, annotations: { [NOTE]: 'sbom by artifactType' } }),
  subject.digest,
);
const bundle = await pushReferrer(
  OCI_INDEX,
  json({
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    artifactType: BUNDLE,
    manifests: [sbomByConfig, sbomByArtifactType].map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
    subject,
    annotations: { [NOTE]: 'a bundle index' },
  }),
  subject.digest,
);
const sigByConfig = await pushReferrer(
  OCI_MANIFEST,
  artifact({ config: { ...sigBytes, mediaType: SIGNATURE }, layers: [empty], subject, annotations: { [NOTE]: 'signature by config type' } }),
  subject.digest,
);
const sigByArtifactType = await pushReferrer(
  OCI_MANIFEST,
  artifact({ artifactType: SIGNATURE, config: empty, layers: [{ ...sigBytes, mediaType: SIGNATURE }], subject, annotations: { [NOTE]: 'signature by artifactType' } }),
  subject.digest,
);
const orphan = await pushReferrer(OCI_MANIFEST, artifact({ artifactType: SIGNATURE, config: empty, layers: [{ ...sigBytes, mediaType: SIGNATURE }], subject: absentSubject }), absentSubject.digest);

const v2 = (path: string) => `${proxy.url}/v2/${NAME}/${path}`;
const UNKNOWN_DIGEST = sha256(Buffer.from('never pushed'));
const errorCodes = async (body: { json(): Promise<unknown> }) => ((await body.json()) as { errors?: { code?: string }[] }).errors?.map((e) => e.code);

t.test('Pull: blobs ("Pulling blobs", "Checking if content exists in the registry")', async (t) => {
  const headMissing = await request(v2(`blobs/${UNKNOWN_DIGEST}`), { method: 'HEAD' });
  await headMissing.body.dump();
  t.equal(headMissing.statusCode, 404, 'HEAD of a blob not in the repository: 404');

  const getMissing = await request(v2(`blobs/${UNKNOWN_DIGEST}`));
  t.equal(getMissing.statusCode, 404, 'GET of a blob not in the repository: 404');
  t.same(await errorCodes(getMissing.body), ['BLOB_UNKNOWN'], 'with the OCI error body ("Error Codes": code-1)');

  for (const config of configs.slice(0, 2)) {
    const head = await request(v2(`blobs/${config.digest}`), { method: 'HEAD' });
    await head.body.dump();
    t.equal(head.statusCode, 200, 'HEAD of an existing blob: 200');
    t.equal(head.headers['docker-content-digest'], config.digest, 'HEAD: Docker-Content-Digest is the blob digest');
    t.equal(head.headers['content-length'], String(config.size), 'HEAD: Content-Length is the blob size');

    const get = await request(v2(`blobs/${config.digest}`));
    const body = Buffer.from(await get.body.arrayBuffer());
    t.equal(get.statusCode, 200, 'GET of an existing blob: 200');
    t.equal(sha256(body), config.digest, 'GET: the body is the blob');
    t.equal(get.headers['docker-content-digest'], config.digest, 'GET: Docker-Content-Digest matches the body');
    t.equal(get.headers['content-length'], String(config.size), 'GET: Content-Length is the blob size');
    t.equal(get.headers['content-type'], 'application/octet-stream');
  }
});

t.test('Pull: ranged blob GET ("Pulling blobs": Range per RFC 9110)', async (t) => {
  const digest = sha256(blob42);
  for (const [first, last] of [
    [0, 21],
    [22, 41],
  ] as const) {
    const res = await request(v2(`blobs/${digest}`), { headers: { range: `bytes=${first}-${last}` } });
    const body = Buffer.from(await res.body.arrayBuffer());
    t.equal(res.statusCode, 206, `bytes=${first}-${last}: 206`);
    t.equal(res.headers['content-range'], `bytes ${first}-${last}/42`);
    t.equal(res.headers['content-length'], String(last - first + 1));
    t.same(body, blob42.subarray(first, last + 1), 'exactly the bytes asked for');
  }
});

t.test('Pull: manifests by tag and by digest ("Pulling manifests", "Checking if content exists")', async (t) => {
  const cases = [
    { ref: 'tagtest0', body: manifests[0]! },
    { ref: sha256(manifests[0]!), body: manifests[0]! },
    { ref: sha256(manifests[1]!), body: manifests[1]! },
  ];
  for (const { ref, body } of cases) {
    const what = ref.startsWith('sha256:') ? 'by digest' : 'by tag';
    const head = await request(v2(`manifests/${ref}`), { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
    await head.body.dump();
    t.equal(head.statusCode, 200, `HEAD ${what}: 200`);
    t.equal(head.headers['docker-content-digest'], sha256(body), `HEAD ${what}: Docker-Content-Digest`);
    t.equal(head.headers['content-length'], String(body.length), `HEAD ${what}: Content-Length`);
    t.equal(head.headers['content-type'], OCI_MANIFEST, `HEAD ${what}: Content-Type is the type pushed`);

    const get = await request(v2(`manifests/${ref}`), { headers: { accept: OCI_MANIFEST } });
    const got = Buffer.from(await get.body.arrayBuffer());
    t.equal(get.statusCode, 200, `GET ${what}: 200`);
    t.same(got, body, `GET ${what}: the manifest exactly as pushed`);
    t.equal(get.headers['docker-content-digest'], sha256(body), `GET ${what}: Docker-Content-Digest matches the body`);
    t.equal(get.headers['content-type'], OCI_MANIFEST, `GET ${what}: Content-Type`);
    t.equal(get.headers['content-length'], String(body.length), `GET ${what}: Content-Length`);
  }
});

t.test('Pull: a manifest that is not there, or cannot be, is 404 MANIFEST_UNKNOWN ("Pulling manifests", end-3)', async (t) => {
  // The suite asks for ".INVALID_MANIFEST_NAME" (a tag may not start with "."), expecting 404 on
  // GET and HEAD, and for "sha256:totallywrong" (400 or 404 allowed, with a listed code).
  const refs = ['nope', UNKNOWN_DIGEST, '.INVALID_MANIFEST_NAME', 'sha256:totallywrong', '-v1', 'a'.repeat(129), `md5:${'0'.repeat(32)}`, 'a:b'];
  for (const ref of refs) {
    const what = ref.slice(0, 40);
    const head = await request(v2(`manifests/${ref}`), { method: 'HEAD', headers: { accept: OCI_MANIFEST } });
    await head.body.dump();
    t.equal(head.statusCode, 404, `HEAD ${what}: 404`);
    const get = await request(v2(`manifests/${ref}`), { headers: { accept: OCI_MANIFEST } });
    t.equal(get.statusCode, 404, `GET ${what}: 404`);
    t.same(await errorCodes(get.body), ['MANIFEST_UNKNOWN'], `GET ${what}: MANIFEST_UNKNOWN ("Error Codes": code-7)`);
  }
});

t.test('Content discovery: tags list with n and last ("Listing Tags", end-8a, end-8b)', async (t) => {
  const all = await request(v2('tags/list'));
  const listed = (await all.body.json()) as { name: string; tags: string[] };
  t.equal(all.statusCode, 200);
  t.equal(listed.name, NAME);
  t.same(listed.tags, [...listed.tags].sort(), 'in lexical order');
  for (const tag of ['tagtest0', 'test0', 'test1', 'test2', 'test3', 'subjecttag']) t.ok(listed.tags.includes(tag), `lists ${tag}`);

  const half = Math.floor(listed.tags.length / 2);
  const first = await request(v2(`tags/list?n=${half}`));
  const firstPage = (await first.body.json()) as { tags: string[] };
  t.equal(first.statusCode, 200);
  t.same(firstPage.tags, listed.tags.slice(0, half), '?n=: exactly n tags, from the start');
  const last = firstPage.tags[half - 1]!;
  t.match(String(first.headers.link), new RegExp(`<[^>]*[?&]last=${last}[&>].*rel="next"`), 'a Link to the next page, after the last tag');

  const second = await request(v2(`tags/list?n=${half}&last=${last}`));
  const secondPage = (await second.body.json()) as { tags: string[] };
  t.equal(second.statusCode, 200);
  t.same(secondPage.tags, listed.tags.slice(half, 2 * half), '?n=&last=: the next n tags, `last` itself excluded');

  const zero = await request(v2('tags/list?n=0'));
  t.same(((await zero.body.json()) as { tags: string[] }).tags, [], '?n=0: an empty list');
  t.equal(zero.headers.link, undefined, '?n=0: no Link');
});

interface Index {
  mediaType?: string;
  manifests: Descriptor[];
}
async function referrers(digest: string, query = ''): Promise<{ status: number; type: unknown; filters: unknown; index: Index }> {
  const res = await request(v2(`referrers/${digest}${query}`));
  return { status: res.statusCode, type: res.headers['content-type'], filters: res.headers['oci-filters-applied'], index: (await res.body.json()) as Index };
}
const byDigest = (ds: Descriptor[]) => [...ds].sort((a, b) => a.digest.localeCompare(b.digest));

t.test('Content discovery: referrers, from the referrers tag schema when the upstream has no API ("Listing Referrers")', async (t) => {
  const none = await referrers(UNKNOWN_DIGEST);
  t.equal(none.status, 200, 'a digest nothing refers to: 200');
  t.equal(none.type, OCI_INDEX, 'Content-Type: the OCI index type');
  t.same(none.index.manifests, [], 'an empty manifest list');

  const all = await referrers(subject.digest);
  t.equal(all.status, 200);
  t.equal(all.type, OCI_INDEX);
  const expected = [sbomByConfig, sbomByArtifactType, bundle, sigByConfig, sigByArtifactType];
  t.same(byDigest(all.index.manifests), byDigest(expected), 'every referrer, with artifactType and annotations');
  t.equal(all.index.manifests.find((d) => d.digest === sbomByConfig.digest)?.artifactType, SBOM, "artifactType: the config's media type when the manifest has none");
  t.equal(all.index.manifests.find((d) => d.digest === bundle.digest)?.artifactType, BUNDLE, "an index: its own artifactType");

  const sboms = await referrers(subject.digest, `?artifactType=${encodeURIComponent(SBOM)}`);
  t.equal(sboms.status, 200);
  t.equal(sboms.type, OCI_INDEX);
  t.equal(sboms.filters, 'artifactType', 'OCI-Filters-Applied: artifactType');
  t.same(byDigest(sboms.index.manifests), byDigest([sbomByConfig, sbomByArtifactType]), 'only the referrers of that artifactType');

  const orphans = await referrers(absentSubject.digest);
  t.equal(orphans.status, 200, 'a subject that was never pushed: 200');
  t.same(orphans.index.manifests, [orphan], 'its one referrer');

  const bad = await request(v2('referrers/sha256:totallywrong'));
  t.equal(bad.statusCode, 400, 'a digest of invalid syntax: 400');
  t.ok((await errorCodes(bad.body))?.length, 'with an OCI error body');
});
