// Properties of pullthrough in front of a lying upstream: fast-check picks a lie (the hostile
// registry's Misbehaviours: wrong lengths, ranges, bytes, resets, stalls, statuses, redirects,
// bad or huge manifests), for which requests and how often, and the requests clients send while
// it lasts. Whatever the lie: every answer comes within a bound with a status below 500 or
// 502/503/504 with an OCI body, nothing complete-looking is wrong, and once the upstream behaves
// again the truth is served and the cache holds nothing that does not hash to its name.
import t from 'tap';
import fc from 'fast-check';
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import { TOC_DIGEST_ANNOTATION } from '../../src/estargz/index.js';
import { hostileSetup, type HostileAnswer, type HostileMatch, type HostileRequest, type Misbehaviour } from '../helpers/hostile-registry.js';
import { buildTar } from '../helpers/estargz-tar.js';
import * as arb from '../helpers/fuzz-arbitraries.js';
import { checkBlob, checkStatus, crashGuard, keepAliveAgent, rssWatch, send, verifyFsStore, type FuzzRequest, type FuzzResponse } from '../helpers/fuzz-http.js';
import { checkProperty, Tally } from '../helpers/fuzz-run.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const REQUEST_BOUND_MS = 10_000;
const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

const { reg, proxy } = await hostileSetup(t, { timeouts: { connect: '1s', headers: '1s', body: '1s' } });
const agent = keepAliveAgent();
t.teardown(() => agent.destroy());
const crash = crashGuard();
t.teardown(() => crash.stop());

/** A lie, as data (so fast-check can print and shrink it); `misbehaviour` turns it into the registry's. */
type Lie =
  | Exclude<Misbehaviour, { kind: 'custom' }>
  | { kind: 'status'; status: number; headers: Record<string, string>; body: string }
  | { kind: 'ignoreRange' }
  | { kind: 'redirect'; to: 'refused' | 'other-content' | 'itself' }
  | { kind: 'chunked'; chunkSize: number; sizeLie: number; terminate: boolean }
  | { kind: 'headers'; set: Record<string, string> }
  | { kind: 'manifestBody'; body: string; digestHeader: 'true' | 'of-body' | 'absent' };

function misbehaviour(lie: Lie): Misbehaviour {
  const custom = (answer: (req: HostileRequest, honest: () => HostileAnswer) => HostileAnswer): Misbehaviour => ({ kind: 'custom', answer });
  switch (lie.kind) {
    case 'status':
      return custom(() => ({ status: lie.status, headers: lie.headers, body: lie.body }));
    case 'ignoreRange':
      return custom((req, honest) => {
        const h = honest();
        if (!('status' in h) || h.status !== 206) return h;
        const d = /\/blobs\/([^/?]+)/.exec(req.path)?.[1] ?? '';
        return { status: 200, headers: { 'Content-Type': 'application/octet-stream', 'Docker-Content-Digest': d }, body: truth.get(d) ?? Buffer.alloc(0) };
      });
    case 'redirect': {
      const to = lie.to === 'refused' ? 'http://127.0.0.1:1/x' : lie.to === 'itself' ? undefined : `${reg.url}/v2/lib/other/blobs/${otherD}`;
      return custom((req) => ({ status: 307, headers: { Location: to ?? `${reg.url}${req.path}` } }));
    }
    case 'chunked':
      return custom((req, honest) => {
        const h = honest();
        if (!('status' in h) || req.method !== 'GET') return h;
        const body = Buffer.from(h.body ?? '');
        const parts: Buffer[] = [];
        for (let i = 0; i < body.length; i += lie.chunkSize) {
          const c = body.subarray(i, i + lie.chunkSize);
          parts.push(Buffer.from(`${(c.length + (i === 0 ? lie.sizeLie : 0)).toString(16)}\r\n`), c, Buffer.from('\r\n'));
        }
        if (lie.terminate) parts.push(Buffer.from('0\r\n\r\n'));
        const headers = Object.entries({ ...h.headers, 'Transfer-Encoding': 'chunked' }).filter(([k]) => k.toLowerCase() !== 'content-length');
        const head = Buffer.from(`HTTP/1.1 ${h.status} X\r\n${headers.map(([k, v]) => `${k}: ${v}`).join('\r\n')}\r\n\r\n`);
        return { raw: Buffer.concat([head, ...parts]), close: !lie.terminate };
      });
    case 'headers':
      return custom((_req, honest) => {
        const h = honest();
        return 'status' in h ? { ...h, headers: { ...h.headers, ...lie.set } } : h;
      });
    case 'manifestBody':
      return custom((_req, honest) => {
        const h = honest();
        if (!('status' in h) || h.status !== 200) return h;
        const body = Buffer.from(lie.body);
        sentManifests.add(body.toString('latin1'));
        const headers: Record<string, string> = { 'Content-Type': h.headers?.['Content-Type'] ?? OCI_MANIFEST };
        if (lie.digestHeader === 'true') headers['Docker-Content-Digest'] = h.headers?.['Docker-Content-Digest'] ?? '';
        if (lie.digestHeader === 'of-body') headers['Docker-Content-Digest'] = sha256(body);
        return { status: 200, headers, body };
      });
    default:
      return lie;
  }
}

// --- content: a fresh blob (or manifest) per case, so every run and shrink starts uncached
const truth = new Map<string, Buffer>();
const sentManifests = new Set<string>();
let cases = 0;
const otherD = reg.addBlob('some other content entirely');
truth.set(otherD, Buffer.from('some other content entirely'));
function freshBlob(size: number): { digest: string; body: Buffer } {
  const body = Buffer.alloc(size, `case ${++cases} `);
  const digest = reg.addBlob(body);
  truth.set(digest, body);
  return { digest, body };
}

const statusLie = fc.record({
  kind: fc.constant('status' as const),
  status: fc.constantFrom(200, 204, 206, 301, 304, 400, 401, 403, 404, 405, 416, 429, 500, 502, 503, 504, 599),
  headers: fc.oneof(
    fc.constant({}),
    fc.record({ 'Retry-After': fc.constantFrom('1', 'NaN', '-5', '99999999999', 'Wed, 21 Oct 2015 07:28:00 GMT', 'soon', '1e400') }),
    fc.record({ 'WWW-Authenticate': fc.constantFrom('Bearer realm="http://127.0.0.1:1/token"', 'Basic realm="x"', 'garbage', 'Bearer') }),
    fc.record({ 'Content-Type': fc.constantFrom('application/json', 'text/html'), 'Content-Length': fc.constantFrom('0', '5', '99999', '-1', 'x') }),
  ),
  body: fc.oneof(fc.constantFrom('', '{"errors":[{"code":"DENIED","message":"no"}]}', '{"errors":[{"code":"../../x"}]}', '<html>', 'null'), fc.string({ maxLength: 40 })),
});

/** Lies about a blob of `size` bytes. */
const blobLie = (size: number): fc.Arbitrary<Lie> => {
  const at = fc.oneof(fc.nat({ max: Math.max(0, size) }), fc.constantFrom(0, Math.max(0, size - 1), size, size + 1));
  const crHeader = fc.oneof(
    fc.tuple(at, at, fc.oneof(fc.constant(size), at)).map(([a, b, n]) => `bytes ${a}-${b}/${n}`),
    fc.tuple(at, at).map(([a, b]) => `bytes ${Math.max(a, b)}-${Math.min(a, b)}/${size}`),
    fc.constantFrom(`bytes */${size}`, 'bytes 0-0/*', 'garbage', '', `bytes 0-${size * 2}/${size}`),
  );
  return fc.oneof(
    fc.record({ kind: fc.constant('contentLength' as const), announced: fc.oneof(at, fc.constantFrom(0, 2 ** 31, 2 ** 40)), bodyBytes: fc.oneof(at, fc.constant(size + 70_000)) }),
    fc.record({ kind: fc.constant('contentRange' as const), header: crHeader, start: at, end: at, contentLength: fc.option(at, { nil: undefined }) }, { requiredKeys: ['kind', 'header', 'start', 'end'] }),
    fc.record({ kind: fc.constant('trailingBytes' as const), bytes: fc.constantFrom('HTTP/1.1 200 OK\r\nContent-Length: 6\r\nDocker-Content-Digest: sha256:x\r\n\r\nforged', 'garbage after the body') }),
    fc.record({ kind: fc.constant('wrongByte' as const), offset: fc.nat({ max: Math.max(0, size - 1) }) }),
    fc.record({ kind: fc.constant('resetAfter' as const), bytes: at }),
    fc.record({ kind: fc.constant('stallAfter' as const), bytes: at }),
    statusLie,
    fc.constant({ kind: 'ignoreRange' as const }),
    fc.record({ kind: fc.constant('redirect' as const), to: fc.constantFrom('refused' as const, 'other-content' as const, 'itself' as const) }),
    fc.record({ kind: fc.constant('chunked' as const), chunkSize: fc.integer({ min: 1, max: 100_000 }), sizeLie: fc.integer({ min: -3, max: 3 }), terminate: fc.boolean() }),
    fc.record({ kind: fc.constant('headers' as const), set: fc.oneof(fc.constant({ 'Docker-Content-Digest': otherD }), fc.constant({ 'Content-Range': `bytes 0-0/${size}` }), fc.constant({ 'Content-Encoding': 'gzip' }), fc.constant({ 'Content-Length': String(size + 1), Connection: 'close' })) }),
  );
};

const scope = fc.record({
  method: fc.constantFrom(undefined, 'GET', 'HEAD'),
  ranged: fc.constantFrom(undefined, true, false),
  times: fc.constantFrom(1, 2, undefined),
});
const clientRequest = (size: number) => fc.record({ method: fc.constantFrom('GET', 'GET', 'HEAD'), range: fc.option(arb.rangeAround(size), { nil: undefined }) });

async function exchange(r: FuzzRequest, fresh = false): Promise<FuzzResponse> {
  const res = await send(proxy.url, r, fresh ? keepAliveAgentOnce() : agent, REQUEST_BOUND_MS);
  await new Promise((resolve) => setTimeout(resolve, 10)); // let a crash the request caused surface (not a timing assertion)
  crash.check();
  return res;
}
function keepAliveAgentOnce() {
  const a = keepAliveAgent();
  setTimeout(() => a.destroy(), REQUEST_BOUND_MS + 1000).unref();
  return a;
}

/** After the lie: the truth must come (a fill doomed by the lie may still be ending: a few tries). */
async function truthServed(path: string, body: Buffer, tally: Tally, range?: string): Promise<void> {
  const r: FuzzRequest = { method: 'GET', path, headers: range ? { range } : {} };
  const seen: string[] = [];
  for (let attempt = 0; attempt < 4; attempt++) {
    const res = await exchange(r);
    checkStatus(r, res);
    const held = checkBlob(r, res, body);
    if (held) {
      tally.held(`truth-after-lie${range ? '-ranged' : ''}`);
      return;
    }
    seen.push(res.kind === 'response' ? `${res.status}${res.complete ? '' : ' cut'}` : res.kind);
    await new Promise((resolve) => setTimeout(resolve, 300 * (attempt + 1)));
  }
  throw new Error(`the upstream behaves again, but ${range ? `Range ${range}` : 'a GET'} is still answered ${seen.join(', ')}`);
}

t.test('blob lies', async (t) => {
  const tally = new Tally();
  const rss = rssWatch();
  t.teardown(() => rss.stop());
  const caseArb = fc.constantFrom(0, 1, 1000, 70_000, 300_000).chain((size) =>
    fc.record({ size: fc.constant(size), lie: blobLie(size), scope, requests: fc.array(clientRequest(size), { minLength: 1, maxLength: 3 }), concurrent: fc.boolean(), after: fc.option(arb.rangeAround(size), { nil: undefined }) }),
  );
  await checkProperty(t, 'any blob lie → bounded, well-formed answers, nothing complete-looking wrong; afterwards the truth, and a cache that verifies', fc.asyncProperty(caseArb, async (c) => {
    const { digest, body } = freshBlob(c.size);
    const path = `/v2/hostile/lib/x/blobs/${digest}`;
    const only: HostileMatch = { pathIncludes: digest };
    if (c.scope.method) only.method = c.scope.method;
    if (c.scope.ranged !== undefined) only.ranged = c.scope.ranged;
    reg.misbehave(misbehaviour(c.lie), c.scope.times === undefined ? { only } : { only, times: c.scope.times });
    try {
      const reqs: FuzzRequest[] = c.requests.map((q): FuzzRequest => ({ method: q.method, path, headers: q.range ? { range: q.range } : {} }));
      const answers = c.concurrent ? await Promise.all(reqs.map((r) => exchange(r, true))) : await reqs.reduce(async (acc, r) => [...(await acc), await exchange(r)], Promise.resolve([] as FuzzResponse[]));
      answers.forEach((res, i) => {
        checkStatus(reqs[i]!, res);
        tally.held('bounded-well-formed');
        const held = checkBlob(reqs[i]!, res, body, true); // while the upstream lies, an uncached HEAD carries its word
        tally.held(held ?? 'no-complete-wrong-body');
      });
    } finally {
      reg.behave();
    }
    await truthServed(path, body, tally);
    if (c.after) await truthServed(path.replace('/lib/x/', '/lib/y/'), body, tally, c.after);
    await verifyFsStore(proxy.cacheDir);
    tally.held('cache-verifies');
  }), { numRuns: 150, timeLimitMs: 25_000, caseTimeoutMs: 20_000 }, tally);
  t.comment(`peak RSS growth: ${(rss.peakGrowth() / 2 ** 20).toFixed(0)} MiB`);
  t.ok(rss.peakGrowth() < 512 * 2 ** 20, 'memory stays bounded (RSS growth under 512 MiB)');
});

// --- manifests
const layerBody = gzipSync(buildTar([{ type: 'file', name: 'a.txt', content: 'shared layer\n' }]));
const sharedLayer = reg.addBlob(layerBody);
truth.set(sharedLayer, layerBody);

function freshManifest(): { digest: string; body: Buffer; tag: string; repo: string } {
  const n = ++cases;
  const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: otherD, size: 27 }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sharedLayer, size: layerBody.length }], annotations: { case: String(n) } }));
  const repo = `lib/m${n}`;
  return { digest: reg.addManifest(repo, body, OCI_MANIFEST, 'v1'), body, tag: 'v1', repo };
}

const poison = JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: otherD, size: 27 }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sharedLayer, size: layerBody.length, annotations: { [TOC_DIGEST_ANNOTATION]: `sha256:${'ab'.repeat(32)}`, 'io.containers.estargz.uncompressed-size': '99999999' } }] });
const manifestLie: fc.Arbitrary<Lie> = fc.oneof(
  fc.record({
    kind: fc.constant('manifestBody' as const),
    body: fc.oneof(
      fc.constantFrom('null', '', '{"layers":[null]}', '{"schemaVersion":2,"layers":null}', '[]', '{}', '{"manifests":[null]}', `{"schemaVersion":2,"mediaType":"${OCI_MANIFEST}","layers":[{"digest":"../../etc/passwd"}]}`, poison, 'not json at all'),
      fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v) ?? 'null'),
      fc.constant(`{"pad":"${'x'.repeat(9 << 20)}"}`),
    ),
    digestHeader: fc.constantFrom('true' as const, 'of-body' as const, 'absent' as const),
  }),
  fc.record({ kind: fc.constant('contentLength' as const), announced: fc.constantFrom(0, 1, 2 ** 31, 9 << 20), bodyBytes: fc.option(fc.constantFrom(0, 10, 100_000), { nil: undefined }) }, { requiredKeys: ['kind', 'announced'] }),
  fc.record({ kind: fc.constant('resetAfter' as const), bytes: fc.nat({ max: 200 }) }),
  fc.record({ kind: fc.constant('stallAfter' as const), bytes: fc.nat({ max: 200 }) }),
  fc.record({ kind: fc.constant('headers' as const), set: fc.oneof(fc.constant({ 'Docker-Content-Digest': otherD }), fc.constant({ 'Content-Type': 'text/html' }), fc.constant({ 'Content-Type': '' }), fc.constant({ 'Content-Type': 'application/vnd.oci.image.index.v1+json' })) }),
  statusLie,
  fc.record({ kind: fc.constant('chunked' as const), chunkSize: fc.integer({ min: 1, max: 400 }), sizeLie: fc.integer({ min: -3, max: 3 }), terminate: fc.boolean() }),
);

t.test('manifest lies', async (t) => {
  const tally = new Tally();
  const rss = rssWatch();
  t.teardown(() => rss.stop());
  const caseArb = fc.record({
    lie: manifestLie,
    scope,
    requests: fc.array(fc.record({ method: fc.constantFrom('GET', 'HEAD'), byDigest: fc.boolean(), accept: fc.option(arb.acceptHeader.map((s) => s.replace(/[^\t\x20-\x7e]/g, '')), { nil: undefined }) }), { minLength: 1, maxLength: 3 }),
  });
  await checkProperty(t, 'any manifest lie → bounded, well-formed answers, no wrong manifest by digest; afterwards GET and HEAD by digest give the truth', fc.asyncProperty(caseArb, async (c) => {
    const m = freshManifest();
    const only: HostileMatch = { pathIncludes: `/${m.repo}/manifests/` };
    if (c.scope.method) only.method = c.scope.method;
    reg.misbehave(misbehaviour(c.lie), c.scope.times === undefined ? { only } : { only, times: c.scope.times });
    try {
      for (const q of c.requests) {
        const r: FuzzRequest = { method: q.method, path: `/v2/hostile/${m.repo}/manifests/${q.byDigest ? m.digest : m.tag}`, headers: q.accept ? { accept: q.accept } : {} };
        const res = await exchange(r);
        checkStatus(r, res);
        tally.held('bounded-well-formed');
        if (res.kind !== 'response' || res.status !== 200 || !res.complete || q.method === 'HEAD') continue;
        const said = res.headers['docker-content-digest'];
        if (said !== sha256(res.body)) throw new Error(`a complete 200 whose Docker-Content-Digest ${said} is not its body's ${sha256(res.body)}`);
        if (q.byDigest && !res.body.equals(m.body)) throw new Error('a complete 200 by digest that is not the manifest');
        if (!res.body.equals(m.body) && !sentManifests.has(res.body.toString('latin1'))) throw new Error('a manifest the upstream never sent');
        tally.held('self-consistent-manifest');
      }
    } finally {
      reg.behave();
    }
    for (const method of ['GET', 'HEAD']) {
      const r: FuzzRequest = { method, path: `/v2/hostile/${m.repo}/manifests/${m.digest}`, headers: {} };
      let res = await exchange(r);
      for (let i = 0; i < 3 && !(res.kind === 'response' && res.status === 200); i++) {
        await new Promise((resolve) => setTimeout(resolve, 300 * (i + 1)));
        res = await exchange(r);
      }
      checkStatus(r, res);
      if (res.kind !== 'response' || res.status !== 200) throw new Error(`after the lie, ${method} by digest is answered ${res.kind === 'response' ? res.status : res.kind}`);
      if (method === 'GET' && !res.body.equals(m.body)) throw new Error('after the lie, GET by digest is not the manifest');
      if (res.headers['docker-content-digest'] !== m.digest || Number(res.headers['content-length']) !== m.body.length) throw new Error(`after the lie, ${method} by digest says ${res.headers['docker-content-digest']} / ${res.headers['content-length']}`);
      tally.held(`truth-after-lie-${method}`);
    }
    // what a lying manifest declared about a layer must not change how that layer is served elsewhere (item 5)
    await truthServed(`/v2/hostile/lib/elsewhere/blobs/${sharedLayer}`, layerBody, tally, 'bytes=1-20');
    await verifyFsStore(proxy.cacheDir);
    tally.held('cache-verifies');
  }), { numRuns: 120, timeLimitMs: 20_000, caseTimeoutMs: 20_000 }, tally);
  t.comment(`peak RSS growth: ${(rss.peakGrowth() / 2 ** 20).toFixed(0)} MiB`);
  t.ok(rss.peakGrowth() < 512 * 2 ** 20, 'memory stays bounded (RSS growth under 512 MiB)');
});
