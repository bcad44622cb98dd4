// scripts/check-secrets.ts, which npm test runs after tap: it finds each test secret in proxy logs
// and tap output, raw or base64'd, names the file and the secret (never printing the secret),
// and fails when there is no proxy log to search.
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import t from 'tap';
import { SECRETS, secretsIn } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

const root = new URL('../..', import.meta.url).pathname;

async function check(files: Record<string, string>): Promise<{ code: number; out: string }> {
  const dir = await makeTempDir('pullthrough-check-secrets-');
  t.teardown(() => removeDir(dir));
  for (const [name, text] of Object.entries(files)) {
    await mkdir(join(dir, name, '..'), { recursive: true });
    await writeFile(join(dir, name), text);
  }
  const args = ['--import', 'tsx', 'scripts/check-secrets.ts', join(dir, 'logs'), join(dir, 'tap')];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { cwd: root, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number(err.code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

const b64 = (s: string) => Buffer.from(s).toString('base64');
const clean = '{"level":30,"msg":"incoming request","req":{"url":"/v2/team/app/manifests/v1"}}\n';

t.test('clean logs and tap output pass', async (t) => {
  const r = await check({ 'logs/a.log': clean, 'logs/b.log': clean, 'tap/test/x.test.ts.tap': 'ok 1 - fine\n' });
  t.equal(r.code, 0, r.out);
  t.match(r.out, /ok: \d+ secrets searched for in 2 proxy logs .* and 1 tap outputs/);
});

t.test('a secret, raw or base64d, fails the check, naming file and secret but not printing it', async (t) => {
  const serviceAccountJson = JSON.stringify({ type: 'service_account', private_key: SECRETS.googlePrivateKey });
  const r = await check({
    'logs/clean.log': clean,
    'logs/basic.log': `{"headers":{"authorization":"Basic ${b64(`alice:${SECRETS.dockerHubToken}`)}"}}\n`,
    'logs/ecr.log': `{"token":"${b64(`AWS:${SECRETS.ecrPassword}`)}"}\n`,
    'logs/key.log': `{"err":"cannot parse ${serviceAccountJson}"}\n`,
    'logs/access.log': `{"url":"/token?access_token=ya29.${SECRETS.googleAccessTokenMark}-abc"}\n`,
    'tap/test/y.test.ts.tap': `not ok 1 - should be equal\n  found: ${SECRETS.ghcrToken}\n`,
  });
  t.equal(r.code, 1, 'exit code 1');
  const expected: [string, string][] = [
    ['basic.log', 'dockerHubToken'],
    ['ecr.log', 'ecrPassword'],
    ['key.log', 'googlePrivateKey'],
    ['access.log', 'googleAccessTokenMark'],
    ['y.test.ts.tap', 'ghcrToken'],
  ];
  for (const [file, name] of expected) {
    t.match(r.out, new RegExp(`secret ${name} found in \\S*${file.replace(/\./g, '\\.')}`), `${name} in ${file}`);
  }
  t.notMatch(r.out, /clean\.log/, 'the clean log is not named');
  t.match(r.out, /FAIL: 5 leaks/);
  t.same(secretsIn(r.out), [], 'no secret in the output');
});

t.test('no proxy log at all fails: the check never passes vacuously', async (t) => {
  const r = await check({ 'tap/test/x.test.ts.tap': 'ok 1 - fine\n' });
  t.equal(r.code, 1);
  t.match(r.out, /FAIL: no proxy logs in /);
});
