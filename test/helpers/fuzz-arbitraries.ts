// fast-check arbitraries for what clients and upstreams send: repository names, references,
// digests, Range and Accept headers, WWW-Authenticate challenges. Each mixes values that follow
// the grammar (so the happy path is exercised), values one edit away from it, and anything at
// all (so the parsers meet garbage), plus long "pumped" strings that would expose a regular
// expression that backtracks catastrophically.
import fc from 'fast-check';

const LOWER = 'abcdefghijklmnopqrstuvwxyz0123456789';
const HEX = '0123456789abcdef';

const chars = (alphabet: string, min: number, max: number): fc.Arbitrary<string> =>
  fc.string({ unit: fc.constantFrom(...alphabet.split('')), minLength: min, maxLength: max });

/** Printable ASCII without space: what may appear raw in a request target. */
export const PATH_CHARS = Array.from({ length: 94 }, (_, i) => String.fromCharCode(33 + i)).join('');

/** A string of `unit` repeated many times, then a tail: catastrophic backtracking shows up here. */
export const pumped = (unit: fc.Arbitrary<string>): fc.Arbitrary<string> =>
  fc.tuple(fc.string({ minLength: 0, maxLength: 4 }), unit, fc.integer({ min: 100, max: 5000 }), fc.string({ maxLength: 4 })).map(([a, u, n, z]) => a + u.repeat(n) + z);

/** Any string, biased to the odd: unicode, control characters, long runs. */
export const anyString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.string({ unit: 'binary', maxLength: 80 }),
  fc.string({ unit: fc.constantFrom(...PATH_CHARS.split('')), maxLength: 80 }),
  pumped(fc.string({ minLength: 1, maxLength: 3 })),
);

// --- repository names (distribution spec: components of [a-z0-9] joined by . _ __ -+, / between)
const component: fc.Arbitrary<string> = fc
  .array(fc.tuple(chars(LOWER, 1, 6), fc.constantFrom('.', '_', '__', '-', '--')), { minLength: 0, maxLength: 3 })
  .chain((parts) => chars(LOWER, 1, 6).map((last) => parts.map(([c, s]) => c + s).join('') + last));

/** A repository name the grammar accepts (at most 255 characters). */
export const validName: fc.Arbitrary<string> = fc.array(component, { minLength: 1, maxLength: 4 }).map((cs) => cs.join('/').slice(0, 255).replace(/[^a-z0-9]+$/, '') || 'a');

/** A name that is valid, nearly valid (one bad edit) or anything. */
export const name: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: validName },
  {
    weight: 2,
    arbitrary: fc.tuple(validName, fc.nat(), fc.constantFrom('A', '/', '//', '.', '..', '_', '-', '%2F', ':', '@', '\0', ' ', 'é')).map(([n, at, bad]) => {
      const i = at % (n.length + 1);
      return n.slice(0, i) + bad + n.slice(i);
    }),
  },
  { weight: 1, arbitrary: anyString },
  { weight: 1, arbitrary: fc.constant('a'.repeat(256)) },
);

// --- digests
export const hex = (n: number): fc.Arbitrary<string> => chars(HEX, n, n);

/** A well-formed digest of some content nobody has. */
export const validDigest: fc.Arbitrary<string> = fc.oneof(hex(64).map((h) => `sha256:${h}`), hex(128).map((h) => `sha512:${h}`));

/** A digest that is valid, one edit away (length, case, algorithm, separator) or anything. */
export const digest: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: validDigest },
  {
    weight: 3,
    arbitrary: fc.oneof(
      hex(63).map((h) => `sha256:${h}`),
      hex(65).map((h) => `sha256:${h}`),
      hex(64).map((h) => `sha256:${h.toUpperCase()}`),
      hex(64).map((h) => `sha512:${h}`),
      hex(64).map((h) => `md5:${h}`),
      hex(64).map((h) => `sha256+b64:${h}`),
      hex(64).map((h) => `sha256::${h}`),
      hex(64).map((h) => `SHA256:${h}`),
      hex(64).map((h) => h),
      fc.constantFrom('sha256:', ':', 'sha256', ''),
    ),
  },
  { weight: 1, arbitrary: anyString },
);

/** A tag that is valid, too long, or anything. */
export const tag: fc.Arbitrary<string> = fc.oneof(
  fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,20}$/),
  fc.constantFrom('latest', '.hidden', '-x', 'a'.repeat(128), 'a'.repeat(129), 'v1:2', 'v1@x'),
  anyString,
);

/** A manifest reference: a tag or a digest, valid or not. */
export const reference: fc.Arbitrary<string> = fc.oneof(tag, digest);

// --- Range headers
const bigNumber = fc.oneof(
  fc.nat({ max: 300_000 }).map(String),
  fc.constantFrom('0', '00', '9007199254740991', '9007199254740992', '9007199254740993', '18446744073709551616', '1e3', '0x10', '-1', '+1', ' 1'),
  chars('0123456789', 17, 400),
);
const rangeSpec = fc.oneof(
  fc.tuple(bigNumber, bigNumber).map(([a, b]) => `${a}-${b}`),
  bigNumber.map((a) => `${a}-`),
  bigNumber.map((b) => `-${b}`),
  fc.constantFrom('-', '', '1-2-3', 'a-b', '5-1', ' 0 - 1 '),
);

/** A Range header value: single, multiple, malformed, other units, or anything. */
export const rangeHeader: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.array(rangeSpec, { minLength: 1, maxLength: 4 }).map((specs) => `bytes=${specs.join(',')}`) },
  { weight: 1, arbitrary: fc.integer({ min: 60, max: 70 }).map((n) => `bytes=${Array.from({ length: n }, () => '0-').join(',')}`) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('Bytes=', 'bytes =', 'items=', 'bytes:', ' bytes=', 'bytes='), rangeSpec).map(([u, s]) => u + s) },
  { weight: 1, arbitrary: anyString },
);

/** A Range header whose numbers fall around a blob of `size` bytes (so most are satisfiable). */
export const rangeAround = (size: number): fc.Arbitrary<string> => {
  const at = fc.oneof(fc.nat({ max: Math.max(0, size + 1) }), fc.constantFrom(0, 1, Math.max(0, size - 1), size, size + 1)).map(String);
  const spec = fc.oneof(fc.tuple(at, at).map(([a, b]) => (Number(a) <= Number(b) ? `${a}-${b}` : `${b}-${a}`)), at.map((a) => `${a}-`), at.map((b) => `-${b}`));
  return fc.oneof({ weight: 3, arbitrary: spec.map((x) => `bytes=${x}`) }, { weight: 1, arbitrary: fc.array(spec, { minLength: 2, maxLength: 5 }).map((xs) => `bytes=${xs.join(', ')}`) });
};

// --- Accept headers
export const MANIFEST_MEDIA_TYPES = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
];
const mediaRange = fc.oneof(
  fc.constantFrom(...MANIFEST_MEDIA_TYPES, '*/*', 'application/*', 'application/json', 'text/html', '*', '/', ''),
  fc.tuple(fc.constantFrom(...MANIFEST_MEDIA_TYPES), fc.constantFrom(';q=0.5', ';q=0', '; charset=utf-8', ';', ';;q=1')).map(([m, p]) => m + p),
  fc.constantFrom(...MANIFEST_MEDIA_TYPES).map((m) => m.toUpperCase()),
  fc.string({ maxLength: 30 }),
);

/** An Accept header value (comma-joined media ranges with parameters, or anything). */
export const acceptHeader: fc.Arbitrary<string> = fc.oneof(
  fc.array(mediaRange, { maxLength: 6 }).map((ms) => ms.join(', ')),
  anyString,
);

// --- WWW-Authenticate
const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}$/);
const quoted = fc.string({ maxLength: 30 });
export interface ChallengeSpec {
  scheme: string;
  params: [string, string][];
}

/** A challenge made of valid tokens and arbitrary (quoted) values. */
export const challengeSpec: fc.Arbitrary<ChallengeSpec> = fc.record({
  scheme: fc.oneof(fc.constantFrom('Bearer', 'Basic', 'bearer', 'Digest'), token),
  params: fc.uniqueArray(fc.tuple(fc.oneof(fc.constantFrom('realm', 'service', 'scope', 'error'), token), quoted), { maxLength: 4, selector: ([k]) => k.toLowerCase() }),
});

/** The header text of a challenge, with every value quoted and escaped. */
export function challengeText(c: ChallengeSpec): string {
  const params = c.params.map(([k, v]) => `${k}="${v.replace(/[\\"]/g, (ch) => `\\${ch}`)}"`);
  return params.length ? `${c.scheme} ${params.join(', ')}` : c.scheme;
}

/** A WWW-Authenticate value: well-formed challenges, broken ones, or anything. */
export const wwwAuthenticate: fc.Arbitrary<string> = fc.oneof(
  fc.array(challengeSpec, { minLength: 1, maxLength: 3 }).map((cs) => cs.map(challengeText).join(', ')),
  fc.constantFrom('Bearer realm="x', 'Bearer realm=', 'Bearer =', '=,=,=', 'Bearer realm="a\\', ',,,,', 'Bearer realm="https://auth",service=reg,scope="a b"'),
  pumped(fc.constantFrom('a=', 'a="', '\\"', ', ', 'Bearer ', 'a=b ')),
  anyString,
);
