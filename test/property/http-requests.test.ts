// Properties of pullthrough's HTTP edge, driven by generated requests (any method, paths with
// any names, references and digests, any Range, Accept and other headers) in front of an honest
// upstream (our hostile registry, behaving). Every answer comes within a bound, with a status
// below 500 (the upstream is honest: no 502/503/504 either), every error with an OCI body, every
// complete 200/206 of content the registry holds exactly its bytes, and the cache holds nothing
// that does not hash to its name.
import t from 'tap';
import fc from 'fast-check';
import { Readable, Writable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { convertToEstargz, TOC_DIGEST_ANNOTATION } from '../../src/estargz/index.js';
import { hostileSetup } from '../helpers/hostile-registry.js';
import { buildTar } from '../helpers/estargz-tar.js';
import * as arb from '../helpers/fuzz-arbitraries.js';
import { checkBlob, checkStatus, crashGuard, keepAliveAgent, rawTarget, rssWatch, send, verifyFsStore, type FuzzRequest } from '../helpers/fuzz-http.js';
import { checkProperty, Tally } from '../helpers/fuzz-run.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const REQUEST_BOUND_MS = 10_000;

const { reg, proxy } = await hostileSetup(t, { timeouts: { connect: '1s', headers: '2s', body: '2s' } });

// --- what the registry holds: an image with a plain and an eStargz layer, behind a tag and an index
const tarBytes = buildTar([{ type: 'dir', name: 'etc' }, { type: 'file', name: 'etc/hello.txt', content: 'hello\n' }, { type: 'file', name: 'bin/big', content: Buffer.alloc(70_000, 0x5a) }]);
const plain = gzipSync(tarBytes);
const esgzParts: Buffer[] = [];
const esgz = await convertToEstargz(Readable.from([tarBytes]), new Writable({ write: (c: Buffer, _e, cb) => (esgzParts.push(c), cb()) }), { chunkSize: 16 * 1024 });
const estargz = Buffer.concat(esgzParts);
const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
const empty = Buffer.alloc(0);
const blobs = new Map<string, Buffer>();
for (const b of [plain, estargz, config, empty]) blobs.set(reg.addBlob(b), b);
const [plainD, esgzD, configD, emptyD] = [...blobs.keys()] as [string, string, string, string];
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configD, size: config.length },
    layers: [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: plainD, size: plain.length },
      { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: esgzD, size: estargz.length, annotations: { [TOC_DIGEST_ANNOTATION]: esgz.tocDigest } },
    ],
  }),
);
const REPO = 'lib/app';
const manifestD = reg.addManifest(REPO, manifest, OCI_MANIFEST, 'v1');
const index = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: manifestD, size: manifest.length, platform: { os: 'linux', architecture: 'amd64' } }] }));
const indexD = reg.addManifest(REPO, index, OCI_INDEX, 'multi');
const manifests = new Map([[manifestD, { body: manifest, type: OCI_MANIFEST }], [indexD, { body: index, type: OCI_INDEX }]]);
const tags = new Map([['v1', manifestD], ['multi', indexD]]);

// --- requests
const knownRepo = fc.constantFrom(REPO);
const repo = fc.oneof({ weight: 3, arbitrary: knownRepo }, { weight: 1, arbitrary: arb.name });
/** `@fresh:<size>` stands for a blob added just before the request: uncached, so every run (and shrink) of a case meets the same state. */
const FRESH = /@fresh:(\d+)/;
const blobRef = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(plainD, esgzD, configD, emptyD) },
  { weight: 2, arbitrary: fc.constantFrom(0, 1, 100, 3000, 70_000, 300_000).map((n) => `@fresh:${n}`) },
  { weight: 1, arbitrary: fc.constantFrom(manifestD) },
  { weight: 2, arbitrary: arb.digest },
);
let freshCount = 0;
/** Replaces a `@fresh:<size>` placeholder with the digest of a new blob of that size. */
function withFreshBlob(r: FuzzRequest): FuzzRequest {
  const m = FRESH.exec(r.path);
  if (!m) return r;
  const body = Buffer.alloc(Number(m[1]), `fresh ${++freshCount} `);
  const d = reg.addBlob(body);
  blobs.set(d, body);
  return { ...r, path: r.path.replace(FRESH, d) };
}
const manifestRef = fc.oneof({ weight: 3, arbitrary: fc.constantFrom('v1', 'multi', manifestD, indexD) }, { weight: 2, arbitrary: arb.reference });
const layerRef = fc.constantFrom(plainD, esgzD);
const filePath = fc.oneof(fc.constantFrom('etc/hello.txt', 'bin/big', 'etc', '/', './', '../../etc/passwd', 'nope', 'etc/hello.txt/'), fc.string({ maxLength: 12 }));
/** The endpoints by family: each family is a property of its own, so one failing family does not hide another. */
const families = {
  blobs: fc.oneof({ weight: 4, arbitrary: blobRef.map((d) => `blobs/${d}`) }, { weight: 1, arbitrary: blobRef.map((d) => `blobs/${d}/`) }),
  manifests: manifestRef.map((r) => `manifests/${r}`),
  files: fc.oneof(
    fc.tuple(layerRef, filePath).map(([d, p]) => `_estargz/${d}/files/${p}`),
    layerRef.map((d) => `_estargz/${d}/toc`),
    fc.tuple(manifestRef, filePath).map(([r, p]) => `_estargz/image/${r}/files/${p}`),
  ),
  /** the file API over blobs that are no layer (a config, an empty blob, digests nobody has) */
  'files-of-non-layers': fc.tuple(fc.oneof(fc.constantFrom(configD, emptyD, manifestD), arb.validDigest), fc.oneof(filePath, fc.constant('toc'))).map(([d, p]) => (p === 'toc' ? `_estargz/${d}/toc` : `_estargz/${d}/files/${p}`)),
  other: fc.oneof(
    fc.constantFrom('tags/list', 'blobs/uploads/', 'blobs/uploads/x', 'tags/list/', 'manifests/', 'blobs/'),
    blobRef.map((d) => `referrers/${d}`),
    arb.anyString,
  ),
};
type Family = keyof typeof families;
const query = fc.oneof(
  { weight: 4, arbitrary: fc.constant('') },
  { weight: 2, arbitrary: fc.constantFrom('?ns=hostile', '?n=2', '?n=NaN', '?n=-1', '?n=99999999', '?last=v1&n=1', '?artifactType=x', '?platform=linux/amd64', '?platform=', '?ns=nope', '?%zz', '?a=%00') },
  { weight: 1, arbitrary: fc.webQueryParameters().map((q) => `?${q}`) },
);
const pathOf = (family: Family): fc.Arbitrary<string> => {
  const endpoint = families[family];
  const paths = [
    { weight: 6, arbitrary: fc.tuple(repo, endpoint, query).map(([r, e, q]) => `/v2/hostile/${r}/${e}${q}`) },
    { weight: 1, arbitrary: fc.tuple(repo, endpoint).map(([r, e]) => `/v2/${r}/${e}?ns=hostile`) },
  ];
  if (family === 'other') {
    paths.push(
      { weight: 2, arbitrary: fc.constantFrom('/v2/', '/v2', '/', '/v2/hostile/', '/v2/hostile/%2e%2e/%2e%2e/etc/passwd', '/v2/../../etc/passwd', '//v2//hostile//lib//app', '/v2/hostile/lib/app/blobs/%73ha256:x', '/metrics', '/v2/_catalog', '*') },
      { weight: 2, arbitrary: arb.anyString.map((s) => `/v2/${s}`) },
    );
  }
  return fc.oneof(...paths);
};
const method = fc.oneof({ weight: 8, arbitrary: fc.constantFrom('GET', 'HEAD') }, { weight: 1, arbitrary: fc.constantFrom('POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'FOO') });
const headerValue = (a: fc.Arbitrary<string>): fc.Arbitrary<string> => a.map((s) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '').slice(0, 4000));
const headers = fc.record(
  {
    range: fc.oneof(headerValue(arb.rangeHeader), arb.rangeAround(plain.length), arb.rangeAround(config.length), arb.rangeAround(estargz.length)),
    accept: headerValue(arb.acceptHeader),
    expect: fc.constantFrom('100-continue'),
    'if-none-match': fc.constantFrom(`"${manifestD}"`, '*', 'garbage'),
    authorization: fc.constantFrom('Bearer x', 'Basic Zm9vOmJhcg==', 'garbage'),
    'x-forwarded-host': headerValue(fc.string({ maxLength: 20 })),
  },
  { requiredKeys: [] },
);
const requestOf = (family: Family): fc.Arbitrary<FuzzRequest> => fc.record({ method, path: pathOf(family).map(rawTarget), headers });

/** Which registry content a request names, if any (so its bytes can be checked). */
function target(r: FuzzRequest): { kind: 'blob'; body: Buffer } | { kind: 'manifest'; body: Buffer; type: string; digest: string } | undefined {
  const m = /^\/v2\/hostile\/lib\/app\/(blobs|manifests)\/([^/?]+)(\?|$)/.exec(r.path);
  if (!m) return undefined;
  if (m[1] === 'blobs') {
    const b = blobs.get(m[2]!);
    return b && { kind: 'blob', body: b };
  }
  const digest = tags.get(m[2]!) ?? m[2]!;
  const man = manifests.get(digest);
  return man && { kind: 'manifest', digest, body: man.body, type: man.type };
}

const RUNS: Record<Family, number> = { blobs: 300, manifests: 150, files: 150, 'files-of-non-layers': 50, other: 200 };

for (const family of Object.keys(families) as Family[]) {
  t.test(`generated ${family} requests against an honest upstream`, async (t) => {
    const tally = new Tally();
    const agent = keepAliveAgent();
    t.teardown(() => agent.destroy());
    const rss = rssWatch();
    t.teardown(() => rss.stop());
    const crash = crashGuard();
    t.teardown(() => crash.stop());
    await checkProperty(t, `${family}: any request → a bounded, well-formed answer; held content byte-exact; the cache verifies`, fc.asyncProperty(requestOf(family), async (generated) => {
      const r = withFreshBlob(generated);
      const res = await send(proxy.url, r, agent, REQUEST_BOUND_MS);
      await new Promise((resolve) => setTimeout(resolve, 10)); // let a crash the request caused surface (not a timing assertion)
      crash.check();
      tally.held('no-crash');
      checkStatus(r, res);
      tally.held('answered-in-bound');
      if (res.kind !== 'response') return;
      if (res.status >= 500) throw new Error(`status ${res.status} from an honest upstream`);
      tally.held('no-5xx');
      if (res.status >= 400 && r.method !== 'HEAD') tally.held('oci-error-body');
      const want = target(r);
      if (want?.kind === 'blob') {
        const held = checkBlob(r, res, want.body);
        if (held) tally.held(held);
      } else if (want?.kind === 'manifest' && res.status === 200 && res.complete) {
        if (r.method === 'GET' && !res.body.equals(want.body)) throw new Error('a complete 200 of a manifest with the wrong bytes');
        if (res.headers['docker-content-digest'] !== want.digest) throw new Error(`Docker-Content-Digest ${res.headers['docker-content-digest']}, want ${want.digest}`);
        if (res.headers['content-type'] !== want.type) throw new Error(`Content-Type ${res.headers['content-type']}, want ${want.type}`);
        tally.held('exact-manifest');
      }
      await verifyFsStore(proxy.cacheDir);
      tally.held('cache-verifies');
    }), { numRuns: RUNS[family], timeLimitMs: 10_000, caseTimeoutMs: REQUEST_BOUND_MS + 2000 }, tally);
    const growth = rss.peakGrowth();
    t.comment(`peak RSS growth over the property: ${(growth / 2 ** 20).toFixed(0)} MiB`);
    t.ok(growth < 512 * 2 ** 20, 'memory stays bounded (RSS growth under 512 MiB)');
  });
}

// issue 11 item 12: an odd Expect is answered by Node itself (417, empty body) unless the server takes it
t.test('odd Expect headers', async (t) => {
  const tally = new Tally();
  const agent = keepAliveAgent();
  t.teardown(() => agent.destroy());
  const expect = fc.oneof(fc.constantFrom('foo', '', '200-ok', '100-Continue, foo'), headerValue(fc.string({ maxLength: 20 })));
  await checkProperty(t, 'a request with any Expect header → a well-formed answer (an OCI body on errors)', fc.asyncProperty(fc.record({ method, path: pathOf('other').map(rawTarget), headers: expect.map((e) => ({ expect: e })) }), async (r) => {
    checkStatus(r, await send(proxy.url, r, agent, REQUEST_BOUND_MS));
    tally.held('well-formed');
  }), { numRuns: 100, timeLimitMs: 5000, caseTimeoutMs: REQUEST_BOUND_MS + 2000 }, tally);
});

t.test('the upstream saw only well-formed requests for names the grammar allows', async (t) => {
  // a generated name must never reach the upstream unvalidated
  for (const r of reg.log) {
    const m = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\//.exec(r.path);
    if (m && !/^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/.test(m[1]!)) {
      t.fail(`the upstream was asked for ${JSON.stringify(r.path.slice(0, 200))}`);
      return;
    }
  }
  t.pass(`${reg.log.length} upstream requests, every name valid`);
});
