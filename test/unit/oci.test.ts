import t from 'tap';
import { createHash } from 'node:crypto';
import { digestOf, parseDigest, tryParseDigest, type Digest } from '../../src/oci/digest.js';
import { RegistryError } from '../../src/oci/errors.js';
import { accepts, DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, declaredMediaType, parseAccept } from '../../src/oci/media-types.js';
import { isHostComponent, parseReference, referenceString, validateRepository } from '../../src/oci/reference.js';

const HEX256 = createHash('sha256').update('hello').digest('hex');
const HEX512 = createHash('sha512').update('hello').digest('hex');

/** Runs fn and returns the RegistryError it throws; fails the test when it does not throw one. */
function registryErrorOf(fn: () => unknown): RegistryError | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof RegistryError ? e : undefined;
  }
  return undefined;
}

t.test('parseDigest accepts sha256 and sha512 with the right length of lowercase hex', async (t) => {
  const d = parseDigest(`sha256:${HEX256}`);
  t.same(d, { algorithm: 'sha256', hex: HEX256, value: `sha256:${HEX256}` });
  const d5 = parseDigest(`sha512:${HEX512}`);
  t.same(d5, { algorithm: 'sha512', hex: HEX512, value: `sha512:${HEX512}` });
  t.equal(digestOf(Buffer.from('hello')).value, `sha256:${HEX256}`);
  t.equal(digestOf(Buffer.from('hello'), 'sha512').value, `sha512:${HEX512}`);
});

t.test('parseDigest rejects malformed digests with DIGEST_INVALID / 400', async (t) => {
  const bad: [string, string][] = [
    ['sha256 too short', `sha256:${HEX256.slice(1)}`],
    ['sha256 too long', `sha256:${HEX256}0`],
    ['sha512 with a sha256-length hex', `sha512:${HEX256}`],
    ['sha256 with a sha512-length hex', `sha256:${HEX512}`],
    ['uppercase hex', `sha256:${HEX256.toUpperCase()}`],
    ['one uppercase hex char', `sha256:${HEX256.slice(0, 63)}A`],
    ['non-hex char', `sha256:${HEX256.slice(0, 63)}g`],
    ['unknown algorithm', `md5:${HEX256.slice(0, 32)}`],
    ['uppercase algorithm', `SHA256:${HEX256}`],
    ['missing colon', `sha256${HEX256}`],
    ['bare hex', HEX256],
    ['path traversal', 'sha256:../../etc'],
    ['traversal padded to length', `sha256:../../${HEX256.slice(6)}`],
    ['empty', ''],
    ['empty hex', 'sha256:'],
    ['trailing newline', `sha256:${HEX256}\n`],
  ];
  for (const [name, value] of bad) {
    const e = registryErrorOf(() => parseDigest(value));
    t.ok(e, `${name}: throws a RegistryError`);
    t.equal(e?.code, 'DIGEST_INVALID', `${name}: code`);
    t.equal(e?.status, 400, `${name}: status`);
    t.equal(tryParseDigest(value), undefined, `${name}: tryParseDigest gives undefined`);
  }
});

t.test('validateRepository accepts names from the distribution grammar', async (t) => {
  for (const name of ['library/alpine', 'a/b/c', 'a__b', 'a--b', 'a-b', 'a.b', 'a_b', 'x0/y1.z', 'a'.repeat(255)]) {
    t.equal(validateRepository(name), name, `${name.slice(0, 40)} is valid`);
  }
});

t.test('validateRepository rejects invalid names with NAME_INVALID / 400', async (t) => {
  const bad: [string, string][] = [
    ['uppercase', 'Foo'],
    ['uppercase component', 'library/Alpine'],
    ['empty component', 'a//b'],
    ['leading dotdot', '../x'],
    ['dotdot component', 'a/../b'],
    ['dot component', 'a/./b'],
    ['percent-encoded dots', '%2e%2e'],
    ['empty', ''],
    ['256 characters', 'a'.repeat(256)],
    ['leading slash', '/a'],
    ['trailing slash', 'a/'],
    ['triple underscore', 'a___b'],
    ['leading separator', '-a'],
    ['trailing separator', 'a.'],
    ['colon', 'a:b'],
    ['backslash', 'a\\b'],
    ['space', 'a b'],
  ];
  for (const [name, value] of bad) {
    const e = registryErrorOf(() => validateRepository(value));
    t.ok(e, `${name}: throws a RegistryError`);
    t.equal(e?.code, 'NAME_INVALID', `${name}: code`);
    t.equal(e?.status, 400, `${name}: status`);
  }
});

t.test('parseReference: tags', async (t) => {
  for (const tag of ['latest', 'v1.2.3', '_x', 'A-b_c.d', '3', 'a'.repeat(128)]) {
    const ref = parseReference(tag);
    t.same(ref, { kind: 'tag', tag }, `${tag.slice(0, 20)} is a tag`);
    t.equal(referenceString(ref), tag);
  }
  const bad: [string, string][] = [
    ['129 characters', 'a'.repeat(129)],
    ['leading dash', '-bad'],
    ['leading dot', '.bad'],
    ['slash', 'a/b'],
    ['space', 'a b'],
    ['empty', ''],
    ['uppercase before a colon', 'A:b'],
    ['at sign', 'a@b'],
  ];
  for (const [name, value] of bad) {
    // no manifest can have such a tag: 404 MANIFEST_UNKNOWN (distribution-spec "Pulling manifests")
    const e = registryErrorOf(() => parseReference(value));
    t.ok(e, `${name}: throws a RegistryError`);
    t.equal(e?.code, 'MANIFEST_UNKNOWN', `${name}: code`);
    t.equal(e?.status, 404, `${name}: status`);
  }
});

t.test('parseReference: digest-shaped references', async (t) => {
  const ref = parseReference(`sha256:${HEX256}`);
  t.equal(ref.kind, 'digest');
  t.equal(ref.kind === 'digest' ? ref.digest.hex : undefined, HEX256);
  t.equal(referenceString(ref), `sha256:${HEX256}`);
  const r512 = parseReference(`sha512:${HEX512}`);
  t.equal(r512.kind === 'digest' ? r512.digest.algorithm : undefined, 'sha512');

  // "alg:encoded" has the digest grammar, so it is judged as a digest (and rejected as one):
  // either way the client gets a 404 and nothing reaches the upstream or the filesystem.
  for (const value of ['a:b', `sha256:${HEX256.slice(1)}`, 'sha256:../../etc', `md5:${HEX256.slice(0, 32)}`]) {
    const e = registryErrorOf(() => parseReference(value));
    t.equal(e?.code, 'MANIFEST_UNKNOWN', `${value.slice(0, 30)}: code`);
    t.equal(e?.status, 404, `${value.slice(0, 30)}: status`);
  }
});

t.test('isHostComponent tells registry hosts from repository components', async (t) => {
  for (const h of ['ghcr.io', '127.0.0.1:5000', 'localhost', 'localhost:5000', 'Docker.IO']) t.equal(isHostComponent(h), true, h);
  for (const h of ['library', 'team', 'a_b', 'a/b', '', '..', '.', '.hidden', 'a..b', '-x.io', 'x.io-', 'x.io:', ':5000']) {
    t.equal(isHostComponent(h), false, h || '(empty)');
  }
});


t.test('parseAccept', async (t) => {
  const cases: [string, string | string[] | undefined, string[]][] = [
    ['undefined', undefined, []],
    ['empty', '', []],
    ['one type', OCI_MANIFEST, [OCI_MANIFEST]],
    ['parameters and spaces dropped, lowercased', ` ${OCI_INDEX} ; q=0.5 , Application/Vnd.Docker.Distribution.Manifest.V2+JSON`, [OCI_INDEX, DOCKER_MANIFEST]],
    ['several header lines', [OCI_INDEX, `${DOCKER_LIST}, ${OCI_MANIFEST}`], [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST]],
    ['empty items dropped', `,, ${OCI_INDEX},;q=1,`, [OCI_INDEX]],
  ];
  for (const [name, header, want] of cases) t.same(parseAccept(header), want, name);
});

t.test('accepts', async (t) => {
  const cases: [string, string[], string, boolean][] = [
    ['no Accept takes anything', [], OCI_INDEX, true],
    ['exact match', [OCI_MANIFEST], OCI_MANIFEST, true],
    ['other type only', [DOCKER_MANIFEST], OCI_INDEX, false],
    ['one of several', [DOCKER_MANIFEST, OCI_INDEX], OCI_INDEX, true],
    ['*/*', ['*/*'], DOCKER_LIST, true],
    ['application/*', ['application/*'], DOCKER_LIST, true],
    ['text/*', ['text/*'], DOCKER_LIST, false],
    ['json only', ['application/json'], OCI_INDEX, false],
    ['parsed header', parseAccept(`${DOCKER_MANIFEST};q=0.9, ${OCI_MANIFEST}`), OCI_MANIFEST, true],
  ];
  for (const [name, accept, type, want] of cases) t.equal(accepts(accept, type), want, name);
});

t.test('declaredMediaType', async (t) => {
  t.equal(declaredMediaType(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX }))), OCI_INDEX);
  t.equal(declaredMediaType(Buffer.from(JSON.stringify({ schemaVersion: 2 }))), undefined);
  t.equal(declaredMediaType(Buffer.from(JSON.stringify({ mediaType: 3 }))), undefined);
  t.equal(declaredMediaType(Buffer.from('not json')), undefined);
  t.equal(declaredMediaType(Buffer.from('null')), undefined);
});
