// What the proxy logs while it starts, before its server exists (the htpasswd file read, the
// stores opened), reaches its log: createApp holds those lines until the server's logger exists.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import t from 'tap';
import { expectNoSecrets, startCapturedProxy } from '../helpers/captured-proxy.js';
import { SECRETS } from '../helpers/secrets.js';
import { makeTempDir, removeDir } from '../helpers/util.js';

t.test('the htpasswd file read at startup is logged: how many users, and which lines were ignored', async (t) => {
  const dir = await makeTempDir('pullthrough-startup-log-');
  t.teardown(() => removeDir(dir));
  const htpasswd = join(dir, 'htpasswd');
  // line 2 is a password in clear (not htpasswd -B): ignored, and named by its number only
  await writeFile(htpasswd, [`alice:${bcrypt.hashSync(SECRETS.alicePassword, 4)}`, `carol:${SECRETS.htpasswdClearPassword}`, `bob:${bcrypt.hashSync(SECRETS.bobPassword, 4)}`, ''].join('\n'));
  const proxy = await startCapturedProxy({
    configDoc: {
      // never asked: the test makes no request
      upstreams: [{ name: 'ghcr.io', url: 'http://127.0.0.1:9' }],
      auth: { htpasswd, rules: [{ users: ['alice'], upstreams: ['ghcr.io'] }] },
    },
  });
  t.teardown(() => proxy.stop());
  const logs = proxy.logs();
  const loaded = logs.find((l) => l.msg === 'htpasswd loaded');
  t.match(loaded, { level: 30, path: htpasswd, users: 2 }, 'info: the file and its users');
  const ignored = logs.find((l) => String(l.msg).startsWith('htpasswd lines ignored'));
  t.match(ignored, { level: 40, path: htpasswd, lines: [2] }, 'warn: the line that is not a bcrypt entry, by number');
  await expectNoSecrets(t, { htpasswdClearPassword: SECRETS.htpasswdClearPassword }, { texts: { log: proxy.logLines.join('\n') } });
});
