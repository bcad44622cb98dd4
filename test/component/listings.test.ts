// Tags lists and referrers in-process: paging with the Link header (keeping ?ns=), paging done
// here for an upstream that ignores it, and referrers from the API or the referrers tag schema.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { OCI_INDEX, OCI_MANIFEST } from '../../src/oci/manifest.js';
import { component, errorCodes } from '../helpers/component.js';
import type { FakeUpstream } from '../helpers/fake-upstream.js';

const REPO = 'team/app';
const TAGS = ['a', 'b', 'c', 'd', 'e'];

function tagAll(upstream: FakeUpstream): void {
  const img = upstream.pushImage(REPO, undefined, [randomBytes(10)]);
  for (const tag of TAGS) upstream.putManifest(REPO, img.body, OCI_MANIFEST, tag);
}

for (const pages of [true, false]) {
  t.test(`tags list, ${pages ? 'paged by the upstream' : 'the upstream ignoring n and last'}: n, last and the Link to the next page`, async (t) => {
    const { app, upstream } = await component(t);
    upstream.pagesTags = pages;
    tagAll(upstream);
    const all = await app.inject({ url: `/v2/${REPO}/tags/list` });
    t.equal(all.statusCode, 200);
    t.match(all.headers['content-type'], /^application\/json/);
    t.same(all.json(), { name: REPO, tags: TAGS });
    t.equal(all.headers.link, undefined, 'one page: no Link');

    const first = await app.inject({ url: `/v2/${REPO}/tags/list?n=2` });
    t.same(first.json(), { name: REPO, tags: ['a', 'b'] }, '?n=2: the first two');
    t.equal(first.headers.link, `</v2/${REPO}/tags/list?n=2&last=b>; rel="next"`);
    const second = await app.inject({ url: `/v2/${REPO}/tags/list?n=2&last=b` });
    t.same(second.json().tags, ['c', 'd'], '?n=2&last=b: the next two');
    const rest = await app.inject({ url: `/v2/${REPO}/tags/list?n=2&last=d` });
    t.same(rest.json().tags, ['e'], 'the last page');
    t.equal(rest.headers.link, undefined, 'the last page: no Link');

    const ns = await app.inject({ url: `/v2/${REPO}/tags/list?n=3&ns=fake.test` });
    t.same(ns.json(), { name: REPO, tags: ['a', 'b', 'c'] });
    t.equal(ns.headers.link, `</v2/${REPO}/tags/list?n=3&last=c&ns=fake.test>; rel="next"`, 'the next page keeps ns, so it reaches the same upstream');

    const prefixed = await app.inject({ url: `/v2/alias.test/${REPO}/tags/list?n=4` });
    t.same(prefixed.json(), { name: `alias.test/${REPO}`, tags: ['a', 'b', 'c', 'd'] }, 'the name as the client wrote it');
    t.equal(prefixed.headers.link, `</v2/alias.test/${REPO}/tags/list?n=4&last=d>; rel="next"`);
  });
}

t.test('tags of an unknown repository: 404 NAME_UNKNOWN; a failing upstream: its error', async (t) => {
  const { app, upstream } = await component(t);
  tagAll(upstream);
  const res = await app.inject({ url: '/v2/team/nope/tags/list' });
  t.equal(res.statusCode, 404);
  t.same(errorCodes(res.payload), ['NAME_UNKNOWN']);
  upstream.fault({ status: 503 }, 'tags');
  const down = await app.inject({ url: `/v2/${REPO}/tags/list` });
  t.equal(down.statusCode, 503);
  t.same(errorCodes(down.payload), ['UNAVAILABLE']);
});

const SBOM = 'application/spdx+json';
const SIG = 'application/vnd.dev.cosign.artifact.sig.v1+json';

function subjectAndReferrers(upstream: FakeUpstream) {
  const subject = upstream.pushImage(REPO, 'v1', [randomBytes(10)]);
  const descriptor = { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.body.length };
  const sbom = upstream.pushImage(REPO, undefined, [randomBytes(10)], { subject: descriptor, artifactType: SBOM });
  const sig = upstream.pushImage(REPO, undefined, [randomBytes(10)], { subject: descriptor, artifactType: SIG });
  return { subject, sbom, sig };
}

t.test('referrers from the upstream\'s API, all or by artifactType', async (t) => {
  const { app, upstream } = await component(t);
  const { subject, sbom, sig } = subjectAndReferrers(upstream);
  const all = await app.inject({ url: `/v2/${REPO}/referrers/${subject.digest}` });
  t.equal(all.statusCode, 200);
  t.equal(all.headers['content-type'], OCI_INDEX);
  t.same(all.json().manifests.map((m: { digest: string }) => m.digest).sort(), [sbom.digest, sig.digest].sort());
  t.equal(all.headers['oci-filters-applied'], undefined, 'no filter asked: none applied');

  const sboms = await app.inject({ url: `/v2/${REPO}/referrers/${subject.digest}?artifactType=${encodeURIComponent(SBOM)}` });
  t.same(sboms.json().manifests.map((m: { digest: string }) => m.digest), [sbom.digest], 'only that artifactType');
  t.equal(sboms.headers['oci-filters-applied'], 'artifactType');
  t.equal(upstream.count('getManifest'), 0, 'the API answered: no fallback');
});

t.test('no referrers API: the index under the referrers tag schema (<alg>-<hex>), filtered here', async (t) => {
  const { app, upstream } = await component(t);
  upstream.referrersApi = false;
  const { subject, sbom, sig } = subjectAndReferrers(upstream);
  const hex = subject.digest.slice('sha256:'.length);
  const listed = [sbom, sig].map((r, i) => ({ mediaType: OCI_MANIFEST, digest: r.digest, size: r.body.length, artifactType: [SBOM, SIG][i] }));
  upstream.putManifest(REPO, { schemaVersion: 2, mediaType: OCI_INDEX, manifests: listed }, OCI_INDEX, `sha256-${hex}`);

  const all = await app.inject({ url: `/v2/${REPO}/referrers/${subject.digest}` });
  t.equal(all.statusCode, 200);
  t.equal(all.headers['content-type'], OCI_INDEX);
  t.same(all.json().manifests, listed, 'the tag schema\'s index');
  t.equal(upstream.count('getManifest', `sha256-${hex}`), 1, 'asked for the referrers tag');

  const sigs = await app.inject({ url: `/v2/${REPO}/referrers/${subject.digest}?artifactType=${encodeURIComponent(SIG)}` });
  t.same(sigs.json().manifests, [listed[1]], 'filtered by artifactType here (the tag schema cannot)');
  t.equal(sigs.headers['oci-filters-applied'], 'artifactType');

  const other = upstream.pushImage(REPO, 'v2', [randomBytes(10)]);
  const none = await app.inject({ url: `/v2/${REPO}/referrers/${other.digest}` });
  t.equal(none.statusCode, 200, 'no API and no referrers tag: 200');
  t.same(none.json(), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] }, 'an empty index');

  // something other than an index at the referrers tag means no referrers, also from an upstream
  // that sends it to a client asking for an index only
  upstream.putManifest(REPO, other.body, OCI_MANIFEST, `sha256-${other.digest.slice(7)}`);
  for (const honoursAccept of [true, false]) {
    upstream.honoursAccept = honoursAccept;
    const notIndex = await app.inject({ url: `/v2/${REPO}/referrers/${other.digest}` });
    t.same(notIndex.json().manifests, [], `a manifest at the tag${honoursAccept ? '' : ', served despite the Accept list'}: no referrers`);
  }

  upstream.fault({ status: 503 }, 'getManifest');
  const down = await app.inject({ url: `/v2/${REPO}/referrers/${subject.digest}` });
  t.equal(down.statusCode, 503, 'the tag lookup failing other than with a 404: the upstream\'s error');
  t.same(errorCodes(down.payload), ['UNAVAILABLE']);
});
