// Properties of the parsers every request goes through: names, references, digests, Range,
// Accept, the API path, WWW-Authenticate. For any input at all: a result or a RegistryError
// with the right code (never another exception), results that say what the input said (round
// trips), and ranges that stay inside the blob.
import t from 'tap';
import fc from 'fast-check';
import { digestOf, looksLikeDigest, parseDigest, tryParseDigest } from '../../src/oci/digest.js';
import { isRegistryError, OCI_ERRORS, type OciCode } from '../../src/oci/errors.js';
import { accepts, declaredMediaType, parseAccept } from '../../src/oci/media-types.js';
import { parseRange, parseRanges, rangeHeader as formatRange, satisfy } from '../../src/oci/range.js';
import { isHostComponent, parseReference, referenceString, validateRepository } from '../../src/oci/reference.js';
import { parseEndpoint } from '../../src/proxy/routes.js';
import { parseFileEndpoint } from '../../src/proxy/file-routes.js';
import { challengeScopes, parseChallenges, pickChallenge } from '../../src/upstreams/auth/challenge.js';
import * as arb from '../helpers/fuzz-arbitraries.js';
import { checkProperty, Tally } from '../helpers/fuzz-run.js';

const BOUNDS = { numRuns: 2000, timeLimitMs: 5000 };

/** Runs `f`; a RegistryError must carry one of `codes`, anything else thrown fails the property. */
function resultOr<T>(f: () => T, codes: OciCode[]): T | undefined {
  try {
    return f();
  } catch (e) {
    if (!isRegistryError(e)) throw new Error(`threw ${String(e)}, not a RegistryError`);
    if (!codes.includes(e.code)) throw new Error(`RegistryError ${e.code}, expected one of ${codes.join(', ')}`);
    if (e.status !== OCI_ERRORS[e.code].status) throw new Error(`status ${e.status} for ${e.code}`);
    JSON.stringify(e.toBody()); // the body a client gets must serialize
    return undefined;
  }
}

t.test('digests', async (t) => {
  const tally = new Tally();
  await checkProperty(t, 'parseDigest: any string → a digest equal to it, or DIGEST_INVALID', fc.property(arb.digest, (s) => {
    const d = resultOr(() => parseDigest(s), ['DIGEST_INVALID']);
    tally.held('result-or-DIGEST_INVALID');
    if (d) {
      if (d.value !== s || `${d.algorithm}:${d.hex}` !== s) throw new Error(`parsed ${d.value}`);
      if (!looksLikeDigest(s)) throw new Error('a valid digest does not look like one');
      tally.held('round-trip');
    }
    if ((tryParseDigest(s) === undefined) !== (d === undefined)) throw new Error('tryParseDigest disagrees');
  }), BOUNDS, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'digestOf: any bytes → a digest parseDigest accepts', fc.property(fc.uint8Array({ maxLength: 256 }), fc.constantFrom('sha256' as const, 'sha512' as const), (b, alg) => {
    const d = digestOf(b, alg);
    if (parseDigest(d.value).value !== d.value) throw new Error('no round trip');
    tally2.held('round-trip');
  }), BOUNDS, tally2);
});

t.test('names and references', async (t) => {
  const tally = new Tally();
  await checkProperty(t, 'validateRepository: any string → itself or NAME_INVALID; grammar names pass', fc.property(arb.name, (s) => {
    const r = resultOr(() => validateRepository(s), ['NAME_INVALID']);
    tally.held('result-or-NAME_INVALID');
    if (r !== undefined && r !== s) throw new Error('changed the name');
    if (r !== undefined && (s.length > 255 || s.includes('//') || /[^a-z0-9._/-]/.test(s))) throw new Error(`accepted ${JSON.stringify(s)}`);
    isHostComponent(s);
  }), BOUNDS, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'validateRepository accepts every name of the grammar', fc.property(arb.validName, (s) => {
    validateRepository(s);
    tally2.held('accepted');
  }), BOUNDS, tally2);

  const tally3 = new Tally();
  await checkProperty(t, 'parseReference: any string → a reference that prints back as it, or TAG_INVALID/DIGEST_INVALID/MANIFEST_UNKNOWN (item 11: a reference that cannot exist is 404)', fc.property(arb.reference, (s) => {
    const r = resultOr(() => parseReference(s), ['TAG_INVALID', 'DIGEST_INVALID', 'MANIFEST_UNKNOWN']);
    tally3.held('result-or-error');
    if (r) {
      if (referenceString(r) !== s) throw new Error(`prints as ${referenceString(r)}`);
      if (r.kind === 'tag' && (s.length > 128 || s.includes('/') || s.includes(':'))) throw new Error(`accepted tag ${JSON.stringify(s)}`);
      tally3.held('round-trip');
    }
  }), BOUNDS, tally3);
});

t.test('ranges', async (t) => {
  const size = fc.oneof(fc.nat({ max: 1000 }), fc.constant(0), fc.nat({ max: 2 ** 40 }), fc.constant(Number.MAX_SAFE_INTEGER));
  const tally = new Tally();
  await checkProperty(t, 'parseRanges/satisfy: any header, any size → ranges inside the blob, or RANGE_INVALID', fc.property(arb.rangeHeader, size, (h, n) => {
    const ranges = parseRanges(h);
    const one = parseRange(h);
    if (ranges === undefined) {
      if (one !== undefined) throw new Error('parseRange found a range parseRanges did not');
      tally.held('ignored');
      return;
    }
    if (ranges.length === 0 || ranges.length > 64) throw new Error(`${ranges.length} ranges`);
    if ((ranges.length === 1) !== (one !== undefined)) throw new Error('parseRange disagrees with parseRanges');
    for (const r of ranges) {
      const got = resultOr(() => satisfy(r, n), ['RANGE_INVALID']);
      if (got) {
        if (!Number.isSafeInteger(got.start) || !Number.isSafeInteger(got.end)) throw new Error(`non-integer range ${JSON.stringify(got)}`);
        if (got.start < 0 || got.start >= got.end || got.end > n) throw new Error(`range [${got.start}, ${got.end}) outside a blob of ${n}`);
        tally.held('inside-the-blob');
      } else tally.held('RANGE_INVALID');
    }
  }), BOUNDS, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'rangeHeader(parseRange(h)) parses back to the same range (what is forwarded upstream is what was asked)', fc.property(arb.rangeHeader, (h) => {
    const r = parseRange(h);
    if (r === undefined) return;
    const again = parseRange(formatRange(r));
    if (JSON.stringify(again) !== JSON.stringify(r)) throw new Error(`${JSON.stringify(h)} → ${formatRange(r)} → ${JSON.stringify(again)}`);
    tally2.held('round-trip');
  }), BOUNDS, tally2);
});

t.test('Accept', async (t) => {
  const tally = new Tally();
  const header = fc.oneof(arb.acceptHeader, fc.array(arb.acceptHeader, { maxLength: 3 }));
  await checkProperty(t, 'parseAccept: any header → bare, lowercased media types; accepts() never throws', fc.property(header, fc.constantFrom(...arb.MANIFEST_MEDIA_TYPES), (h, type) => {
    const list = parseAccept(h);
    for (const m of list) {
      if (m === '' || m !== m.trim() || m !== m.toLowerCase() || m.includes(',') || m.includes(';')) throw new Error(`media type ${JSON.stringify(m)}`);
    }
    tally.held('bare-types');
    const ok = accepts(list, type);
    if (list.includes(type) && !ok) throw new Error(`lists ${type} but does not accept it`);
    if (list.length === 0 && !ok) throw new Error('no Accept must accept anything');
    tally.held('accepts-consistent');
  }), BOUNDS, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'declaredMediaType: any bytes or JSON → a string or undefined', fc.property(fc.oneof(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null'))), (b) => {
    const m = declaredMediaType(b);
    if (m !== undefined && typeof m !== 'string') throw new Error(`got ${typeof m}`);
    tally2.held('string-or-undefined');
  }), BOUNDS, tally2);
});

t.test('API paths', async (t) => {
  const kind = fc.constantFrom('manifests', 'blobs', 'referrers');
  const tally = new Tally();
  await checkProperty(t, 'parseEndpoint: any path → an endpoint or NAME_UNKNOWN; <name>/<kind>/<ref> splits back into its parts', fc.property(
    fc.oneof(
      fc.tuple(arb.validName, kind, arb.reference.filter((r) => r !== '' && !r.includes('/'))).map(([n, k, r]) => ({ path: `${n}/${k}/${r}`, want: { n, k, r } })),
      fc.tuple(arb.name, fc.constantFrom('manifests', 'blobs', 'referrers', 'tags', 'tags/list', 'blobs/uploads', '_estargz', ''), arb.reference).map(([n, k, r]) => ({ path: `${n}/${k}/${r}`, want: undefined })),
      arb.anyString.map((path) => ({ path, want: undefined })),
    ),
    ({ path, want }) => {
      const e = resultOr(() => parseEndpoint(path), ['NAME_UNKNOWN']);
      tally.held('result-or-NAME_UNKNOWN');
      parseFileEndpoint(path);
      if (!want) return;
      if (!e || e.kind !== want.k || e.name !== want.n || e.ref !== want.r) throw new Error(`split as ${JSON.stringify(e)}`);
      tally.held('round-trip');
    },
  ), BOUNDS, tally);
});

t.test('WWW-Authenticate', async (t) => {
  const tally = new Tally();
  await checkProperty(t, 'parseChallenges: any header → challenges with lowercased token schemes and keys, never a throw', fc.property(fc.oneof(arb.wwwAuthenticate, fc.array(arb.wwwAuthenticate, { maxLength: 3 })), (h) => {
    const cs = parseChallenges(h);
    for (const c of cs) {
      if (!/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(c.scheme)) throw new Error(`scheme ${JSON.stringify(c.scheme)}`);
      for (const k of Object.keys(c.params)) if (!/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(k)) throw new Error(`param ${JSON.stringify(k)}`);
      challengeScopes(c);
    }
    pickChallenge(cs);
    tally.held('well-formed');
  }), BOUNDS, tally);

  const tally2 = new Tally();
  await checkProperty(t, 'parseChallenges gives back the scheme and every (quoted, escaped) parameter of well-formed challenges', fc.property(fc.array(arb.challengeSpec, { minLength: 1, maxLength: 3 }), (specs) => {
    const cs = parseChallenges(specs.map(arb.challengeText).join(', '));
    const want = specs.map((s) => ({ scheme: s.scheme.toLowerCase(), params: Object.fromEntries(s.params.map(([k, v]) => [k.toLowerCase(), v])) }));
    if (JSON.stringify(cs) !== JSON.stringify(want)) throw new Error(`parsed ${JSON.stringify(cs)}`);
    tally2.held('round-trip');
  }), BOUNDS, tally2);
});
