import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { Htpasswd, parseHtpasswd } from '../../src/access/htpasswd.js';
import { ConfigError } from '../../src/lib/settings.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir, run, type Test } from '../helpers/util.js';

const ALICE = SECRETS.alicePassword;
const BOB = SECRETS.bobPassword;
const WRONG = SECRETS.wrongClientPassword;
// the lowest cost, so the test is quick; the file's own cost is what bcrypt uses
const entry = (user: string, password: string) => `${user}:${bcrypt.hashSync(password, 4)}`;

async function setup(t: Test, lines: string[]) {
  const dir = await makeTempDir('pullthrough-htpasswd-');
  t.teardown(() => removeDir(dir));
  const path = join(dir, 'htpasswd');
  await writeFile(path, lines.join('\n') + '\n');
  let time = 0;
  const clock = { now: () => time, advance: (ms: number) => void (time += ms) };
  let compares = 0;
  const logs: string[] = [];
  const log = { info: (o: object, m?: string) => void logs.push(JSON.stringify([o, m])), warn: (o: object, m?: string) => void logs.push(JSON.stringify([o, m])) };
  const h = await Htpasswd.open({ path, log, now: clock.now, compare: (p, hash) => (compares++, bcrypt.compare(p, hash)) });
  /** replaces the file as editors and config managers do: a new file renamed over it */
  const replace = async (next: string[]) => {
    await writeFile(`${path}.new`, next.join('\n') + '\n');
    await rename(`${path}.new`, path);
  };
  return { h, path, clock, compares: () => compares, logs, replace };
}

t.test('parsing: bcrypt entries only, the first entry of a user counts', async (t) => {
  const hash = bcrypt.hashSync('x', 4);
  const text = ['# users', '', `alice:${hash}`, 'md5user:$apr1$abcdefgh$0123456789abcdefghijkl', 'plain:secret', `alice:${bcrypt.hashSync('y', 4)}`, ':nouser', `crlf:${hash}\r`, '  '].join('\n');
  const { entries, ignored } = parseHtpasswd(text);
  t.same([...entries.keys()], ['alice', 'crlf']);
  t.equal(entries.get('alice'), hash, 'the first entry of alice');
  t.same(ignored, [4, 5, 6, 7], 'line numbers of what is not a bcrypt entry or repeats a user');
});

t.test('verify: the right password, a wrong one, an unknown user; htpasswd -B entries ($2y$) work', async (t) => {
  const { stdout } = await run('htpasswd', ['-Bbn', 'ci', SECRETS.ciPassword]);
  const { h, logs } = await setup(t, [entry('alice', ALICE), stdout.trim()]);
  t.equal(await h.verify({ username: 'alice', password: ALICE }), true);
  t.equal(await h.verify({ username: 'ci', password: SECRETS.ciPassword }), true, 'an entry htpasswd -B wrote');
  t.equal(await h.verify({ username: 'alice', password: WRONG }), false);
  t.equal(await h.verify({ username: 'mallory', password: ALICE }), false);
  t.equal(await h.verify({ username: 'Alice', password: ALICE }), false, 'user names are case-sensitive');
  t.equal(await h.verify({ username: 'alice', password: '' }), false);
  t.notOk(logs.some((l) => l.includes(ALICE) || l.includes(WRONG) || l.includes(SECRETS.ciPassword)), 'no password in the log');
});

t.test('an answer is remembered until the file changes: bcrypt runs once per user and password', async (t) => {
  const { h, compares } = await setup(t, [entry('alice', ALICE)]);
  const many = await Promise.all(Array.from({ length: 20 }, () => h.verify({ username: 'alice', password: ALICE })));
  t.ok(many.every(Boolean), '20 concurrent requests of a pull get in');
  t.equal(compares(), 1, 'one bcrypt comparison for them all');
  for (let i = 0; i < 5; i++) t.equal(await h.verify({ username: 'alice', password: WRONG }), false);
  t.equal(compares(), 2, 'a refused password is remembered too');
  t.equal(await h.verify({ username: 'alice', password: BOB }), false);
  t.equal(compares(), 3, 'another password is compared');
});

t.test('the file is reloaded when it changes, looked at most once a second', async (t) => {
  const { h, path, clock, compares, replace, logs } = await setup(t, [entry('alice', ALICE)]);
  t.equal(await h.verify({ username: 'alice', password: ALICE }), true);
  await replace([entry('bob', BOB)]);
  t.equal(await h.verify({ username: 'alice', password: ALICE }), true, 'within the second: the file is not looked at');
  clock.advance(1000);
  t.equal(await h.verify({ username: 'bob', password: BOB }), true, 'a user added to the file gets in');
  const before = compares();
  t.equal(await h.verify({ username: 'alice', password: ALICE }), false, 'a user removed from the file is out, though remembered before');
  t.equal(compares(), before + 1, 'remembered answers were dropped with the old file');

  // edited in place (same inode)
  await writeFile(path, [entry('alice', BOB)].join('\n'));
  clock.advance(1000);
  t.equal(await h.verify({ username: 'alice', password: BOB }), true, 'an edit in place is seen');
  t.equal(await h.verify({ username: 'bob', password: BOB }), false);

  await rm(path);
  clock.advance(1000);
  t.equal(await h.verify({ username: 'alice', password: BOB }), false, 'a file that cannot be read lets nobody in');
  t.ok(logs.some((l) => l.includes('cannot read the htpasswd file')), 'and says so in the log');
  await replace([entry('alice', ALICE)]);
  clock.advance(1000);
  t.equal(await h.verify({ username: 'alice', password: ALICE }), true, 'readable again: back');
  t.notOk(logs.some((l) => l.includes(ALICE) || l.includes(BOB)), 'no password in the log');
});

t.test('a file that cannot be read at startup is a config error naming auth.htpasswd', async (t) => {
  const log = { info: () => undefined, warn: () => undefined };
  const err = await Htpasswd.open({ path: '/nonexistent/htpasswd', log }).catch((e: unknown) => e);
  t.ok(err instanceof ConfigError, 'a ConfigError (exit code 2)');
  t.match((err as Error).message, /^auth\.htpasswd: cannot read \/nonexistent\/htpasswd/);
});
