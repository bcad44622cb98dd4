import t from 'tap';
import { globPattern, Rules } from '../../src/access/rules.js';

t.test('globs: * within one path segment, ** across segments, the whole name', async (t) => {
  const cases: [string, string, boolean][] = [
    ['org/*', 'org/app', true],
    ['org/*', 'org/app/sub', false],
    ['org/*', 'org', false],
    ['org/*', 'other/app', false],
    ['org/*', 'xorg/app', false],
    ['org/**', 'org/app/sub/deeper', true],
    ['org/**', 'org/app', true],
    ['**/base', 'a/b/base', true],
    ['**/base', 'base', false],
    ['team-*/app', 'team-x/app', true],
    ['team-*/app', 'team-x/y/app', false],
    ['library/alpine', 'library/alpine', true],
    ['library/alpine', 'library/alpine2', false],
    ['a.b', 'axb', false], // "." is a dot, not any character
    ['*', 'app', true],
    ['*', 'org/app', false],
    ['**', 'org/app', true],
  ];
  for (const [glob, name, expected] of cases) t.equal(globPattern(glob).test(name), expected, `${glob} ${expected ? 'matches' : 'does not match'} ${name}`);
});

t.test('a rule names users, upstreams and optionally repositories; a user in no rule may pull nothing', async (t) => {
  const rules = new Rules([
    { users: ['alice', 'ci'], upstreams: ['ghcr.io', 'ecr-prod'], repositories: ['org/*'] },
    { users: ['bob'], upstreams: ['docker.io'] },
    { users: ['*'], upstreams: ['quay.io'], repositories: ['public/**'] },
  ]);
  t.ok(rules.allows('alice', 'ghcr.io', 'org/app'));
  t.ok(rules.allows('ci', 'ecr-prod', 'org/app'));
  t.notOk(rules.allows('alice', 'ghcr.io', 'other/app'), 'outside the globs');
  t.notOk(rules.allows('alice', 'docker.io', 'org/app'), 'an upstream the rule does not name');
  t.ok(rules.allows('bob', 'docker.io', 'anything/at/all'), 'no repositories: all of the upstream');
  t.notOk(rules.allows('bob', 'ghcr.io', 'org/app'));
  t.ok(rules.allows('carol', 'quay.io', 'public/a/b'), '"*" stands for any user');
  t.notOk(rules.allows('carol', 'ghcr.io', 'org/app'), 'a user in no rule');
  t.notOk(new Rules([]).allows('alice', 'ghcr.io', 'org/app'), 'no rules: nobody');
});
