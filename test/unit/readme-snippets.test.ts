// Every snippet the README marks is read by a test that runs it: a client's with the real client
// (test/e2e/clients-*.test.ts), a config's through the config loader (test/unit/*-config.test.ts),
// so no snippet can be added or renamed without one; and the snippet reader finds what it should
// and refuses what it should not.
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { README_MIRROR, readmeCommands, readmeSnippet, substitute } from '../helpers/readme.js';

const root = (p: string): string => fileURLToPath(new URL(`../../${p}`, import.meta.url));
const markers = [...readFileSync(root('README.md'), 'utf8').matchAll(/^<!-- snippet: (\S+) -->$/gm)].map((m) => m[1]!);
const readers = [
  ...readdirSync(root('test/e2e')).filter((f) => /^clients-.*\.test\.ts$/.test(f)).map((f) => `test/e2e/${f}`),
  ...readdirSync(root('test/unit')).filter((f) => /-config\.test\.ts$/.test(f)).map((f) => `test/unit/${f}`),
];
const readerText = readers.map((f) => readFileSync(root(f), 'utf8')).join('\n');

t.ok(markers.length >= 9, `the README marks its client snippets (${markers.join(', ')})`);
t.same(markers.filter((m) => !readerText.includes(`'${m}'`)), [], 'each is read by a clients-*.test.ts or a *-config.test.ts');
t.same(markers.filter((m, i) => markers.indexOf(m) !== i), [], 'no marker is used twice');

t.test('readmeSnippet returns the block after the marker, without its fences', async (t) => {
  const json = readmeSnippet('docker-daemon-json');
  t.notOk(json.includes('```'), 'no fence');
  t.ok(json.includes(README_MIRROR), 'the mirror placeholder is in it');
  t.type(JSON.parse(json), 'object', 'it is the JSON document');
  t.throws(() => readmeSnippet('no-such-snippet'), /no <!-- snippet: no-such-snippet --> marker/);
});

t.test('substitute replaces every occurrence and refuses a missing placeholder', async (t) => {
  t.equal(substitute('a x b x', { x: 'y' }), 'a y b y');
  t.throws(() => substitute('a b', { x: 'y' }), /no longer contains "x"/);
});

t.test('readmeCommands splits a shell block into argv arrays, dropping comments', async (t) => {
  const pulls = readmeCommands('docker-pull', { [README_MIRROR]: '127.0.0.1:1' });
  t.equal(pulls.length, 2);
  t.same(pulls[1], ['docker', 'pull', '127.0.0.1:1/ghcr.io/org/app:v1'], 'the comment after the command is gone');
});
