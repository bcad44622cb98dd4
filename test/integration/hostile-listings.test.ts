// Tag lists and referrers from a hostile upstream: a Link never carries n=NaN, and a referrers
// answer that is no index is a 502 with an OCI body, never passed on as an index.
import t from 'tap';
import { hostileSetup, type HostileRegistry } from '../helpers/hostile-registry.js';

const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DIGEST = `sha256:${'c'.repeat(64)}`;

function tagsAnswer(reg: HostileRegistry, link: string): void {
  reg.misbehave(
    { kind: 'custom', answer: () => ({ status: 200, headers: { 'Content-Type': 'application/json', Link: link }, body: JSON.stringify({ name: 'lib/x', tags: ['a', 'b'] }) }) },
    { only: { pathIncludes: '/tags/list' } },
  );
}

t.test('an upstream Link with n=NaN, negative or absurd: never in our Link', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  for (const n of ['NaN', '-5', '1e400', '1.5', '99999999', '']) {
    reg.behave();
    tagsAnswer(reg, `</v2/lib/x/tags/list?n=${n}&last=b>; rel="next"`);
    for (const [asked, want] of [['?n=2', 'n=2&'], ['?n=NaN', ''], ['', '']] as const) {
      const res = await fetch(`${proxy.url}/v2/hostile/lib/x/tags/list${asked}`);
      t.equal(res.status, 200, `upstream n=${n}, client ${asked || 'no n'}: 200`);
      const link = res.headers.get('link') ?? '';
      t.equal(link, `</v2/hostile/lib/x/tags/list?${want}last=b>; rel="next"`, `upstream n=${n}, client ${asked || 'no n'}: ${link}`);
      t.same(await res.json(), { name: 'hostile/lib/x', tags: ['a', 'b'] });
    }
  }
  reg.behave();
  tagsAnswer(reg, '</v2/lib/x/tags/list?n=7&last=b>; rel="next"');
  const res = await fetch(`${proxy.url}/v2/hostile/lib/x/tags/list?n=2`);
  t.equal(res.headers.get('link'), '</v2/hostile/lib/x/tags/list?n=7&last=b>; rel="next"', "a sane upstream n is passed on as it is");
});

t.test('a referrers answer that is not an index: 502 with an OCI body', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const bodies = ['not json at all', 'null', '[]', '{"schemaVersion":2}', '{"schemaVersion":2,"manifests":[null]}', '{"manifests":"x"}'];
  for (const body of bodies) {
    reg.behave();
    reg.misbehave({ kind: 'custom', answer: () => ({ status: 200, headers: { 'Content-Type': OCI_INDEX }, body }) }, { only: { pathIncludes: '/referrers/' } });
    for (const q of ['', '?artifactType=application/example']) {
      const res = await fetch(`${proxy.url}/v2/hostile/lib/x/referrers/${DIGEST}${q}`);
      const text = await res.text();
      t.equal(res.status, 502, `${body} ${q}: 502`);
      t.equal((JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code, 'MANIFEST_INVALID', `${body} ${q}: an OCI body`);
    }
  }
});

t.test('a referrers index is passed on, filtered by artifactType', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  const d = (artifactType: string) => ({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'d'.repeat(64)}`, size: 10, artifactType });
  const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [d('application/a'), d('application/b')] });
  reg.misbehave({ kind: 'custom', answer: () => ({ status: 200, headers: { 'Content-Type': OCI_INDEX }, body: index }) }, { only: { pathIncludes: '/referrers/' } });
  const all = await fetch(`${proxy.url}/v2/hostile/lib/x/referrers/${DIGEST}`);
  t.equal(all.status, 200);
  t.equal(await all.text(), index, 'as the upstream sent it');
  const some = await fetch(`${proxy.url}/v2/hostile/lib/x/referrers/${DIGEST}?artifactType=application/b`);
  t.equal(some.headers.get('oci-filters-applied'), 'artifactType');
  t.same(((await some.json()) as { manifests: unknown[] }).manifests, [d('application/b')]);
});

t.test('a referrers-tag fallback that is not an index: 502 with an OCI body', async (t) => {
  const { reg, proxy } = await hostileSetup(t);
  reg.misbehave({ kind: 'custom', answer: () => ({ status: 404, headers: { 'Content-Type': 'application/json' }, body: '{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}' }) }, { only: { pathIncludes: '/referrers/' } });
  reg.misbehave({ kind: 'custom', answer: () => ({ status: 200, headers: { 'Content-Type': OCI_INDEX }, body: 'not json at all' }) }, { only: { pathIncludes: `/manifests/sha256-` } });
  const res = await fetch(`${proxy.url}/v2/hostile/lib/x/referrers/${DIGEST}`);
  const text = await res.text();
  t.equal(res.status, 502, 'a 502');
  t.ok((JSON.parse(text) as { errors: { code: string }[] }).errors[0]?.code, 'an OCI body');
});
