// tls in the config and the --tls-* flags: the files are read at load, so a missing, unreadable,
// non-PEM or mismatched one is a config error naming its key (exit code 2 from the CLI), and
// without tls nothing changes (plain HTTP).
import { spawn } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { ConfigError, loadConfig, type Flags } from '../../src/config.js';
import { SECRETS, secretsIn } from '../helpers/secrets.js';
import { makeTestPki } from '../helpers/tls.js';
import { removeDir } from '../helpers/util.js';

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));

const pki = await makeTestPki();
t.teardown(() => removeDir(pki.dir));
const other = await pki.issue({ name: 'other', key: SECRETS.tlsNextServerKey });
const client = await pki.issue({ name: 'client', usage: 'client' });
const missing = join(pki.dir, 'absent.pem');
const unreadable = join(pki.dir, 'unreadable.pem');
await writeFile(unreadable, 'x');
await chmod(unreadable, 0);
const running = process.getuid?.() === 0; // root reads a mode-000 file
const der = join(pki.dir, 'ca.der');
await writeFile(der, Buffer.from('30820101', 'hex'));

let n = 0;
async function configFile(doc: object): Promise<string> {
  const path = join(pki.dir, `config-${n++}.json`);
  await writeFile(path, JSON.stringify(doc));
  return path;
}

function problem(flags: Flags): ConfigError {
  try {
    loadConfig(flags, {});
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  throw new Error(`no config error for ${JSON.stringify(flags)}`);
}

t.test('without tls the config has none (plain HTTP, as before)', async (t) => {
  t.equal(loadConfig({}, {}).tls, undefined);
});

t.test('tls from the config file and from the flags: paths resolved, files checked', async (t) => {
  const fromFile = loadConfig({ config: await configFile({ tls: { cert: pki.server.cert, key: pki.server.key, clientCa: pki.caCert } }) }, {});
  t.same(fromFile.tls, { cert: pki.server.cert, key: pki.server.key, clientCa: pki.caCert });
  const fromFlags = loadConfig({ tlsCert: pki.server.cert, tlsKey: pki.server.key }, {});
  t.same(fromFlags.tls, { cert: pki.server.cert, key: pki.server.key });
  // flags override the file's files, one by one
  const mixed = loadConfig({ config: await configFile({ tls: { cert: other.cert, key: other.key } }), tlsCert: pki.server.cert, tlsKey: pki.server.key, tlsClientCa: pki.caCert }, {});
  t.same(mixed.tls, { cert: pki.server.cert, key: pki.server.key, clientCa: pki.caCert });
  const fromRelative = loadConfig({ tlsCert: relative(process.cwd(), pki.server.cert), tlsKey: pki.server.key }, {});
  t.equal(fromRelative.tls?.cert, pki.server.cert, 'a relative path is resolved against the working directory');
});

t.test('each bad tls setting is a config error naming its key', async (t) => {
  const file = async (tls: object) => ({ config: await configFile({ tls }) });
  const cases: [string, Flags, string, RegExp][] = [
    ['no key', await file({ cert: pki.server.cert }), 'tls.key', /is required: the PEM file of the certificate's private key \(--tls-key FILE\)/],
    ['--tls-cert alone', { tlsCert: pki.server.cert }, 'tls.key', /is required/],
    ['--tls-key alone', { tlsKey: pki.server.key }, 'tls.cert', /is required: the PEM file of the server certificate \(--tls-cert FILE\)/],
    ['an empty ${ENV} cert', await file({ cert: '', key: pki.server.key }), 'tls.cert', /is required/],
    ['not a mapping', await file(['a'] as unknown as object), 'tls', /must be a mapping with cert and key/],
    ['a misspelt key', await file({ cert: pki.server.cert, key: pki.server.key, clientCA: pki.caCert }), 'tls.clientCA', /is not a setting \(one of cert, key, clientCa\)/],
    ['a missing cert file', await file({ cert: missing, key: pki.server.key }), 'tls.cert', /cannot read .*absent\.pem: ENOENT/],
    ['a missing cert file, by flag', { tlsCert: missing, tlsKey: pki.server.key }, '--tls-cert', /cannot read .*absent\.pem: ENOENT/],
    ['a missing key file, by flag', { tlsCert: pki.server.cert, tlsKey: missing }, '--tls-key', /cannot read/],
    ['a key as the cert', await file({ cert: pki.server.key, key: pki.server.key }), 'tls.cert', /server\.key holds no PEM certificate/],
    ['a cert as the key', await file({ cert: pki.server.cert, key: pki.server.cert }), 'tls.key', /server\.crt holds no usable PEM private key/],
    ['the key of another certificate', await file({ cert: pki.server.cert, key: other.key }), 'tls.key', /other\.key is not the private key of the certificate in .*server\.crt/],
    ['the same, by flags', { tlsCert: other.cert, tlsKey: client.key }, '--tls-key', /client\.key is not the private key of the certificate in .*other\.crt/],
    ['a clientCa with no certificate', await file({ cert: pki.server.cert, key: pki.server.key, clientCa: pki.server.key }), 'tls.clientCa', /holds no PEM certificate/],
    ['a DER clientCa', await file({ cert: pki.server.cert, key: pki.server.key, clientCa: der }), 'tls.clientCa', /ca\.der holds no PEM certificate/],
    ['an empty ${ENV} clientCa', await file({ cert: pki.server.cert, key: pki.server.key, clientCa: '' }), 'tls.clientCa', /is empty/],
    ['a missing clientCa, by flag', { tlsCert: pki.server.cert, tlsKey: pki.server.key, tlsClientCa: missing }, '--tls-client-ca', /cannot read/],
  ];
  if (!running) cases.push(['an unreadable key file', await file({ cert: pki.server.cert, key: unreadable }), 'tls.key', /cannot read .*unreadable\.pem: EACCES/]);
  for (const [what, flags, key, message] of cases) {
    const e = problem(flags);
    t.equal(e.key, key, `${what}: names ${key}`);
    t.match(e.message, message, `${what}: says why`);
    t.same(secretsIn(e.message), [], `${what}: no key in the message`);
  }
});

function runCli(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((res, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, env: { PATH: process.env.PATH, HOME: pki.dir }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      res({ code, stderr });
    });
  });
}

t.test('the CLI exits with code 2 and one line naming the key for mismatched or unreadable files', async (t) => {
  const cases: [string[], string][] = [
    [['serve', '--tls-cert', pki.server.cert, '--tls-key', other.key], '--tls-key'],
    [['serve', '--tls-cert', missing, '--tls-key', pki.server.key], '--tls-cert'],
    [['serve', '--config', await configFile({ tls: { cert: pki.server.cert, key: pki.server.key, clientCa: missing } })], 'tls.clientCa'],
  ];
  for (const [args, key] of cases) {
    const r = await runCli(args);
    t.equal(r.code, 2, `${key}: exit code 2`);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    t.equal(lines.length, 1, `${key}: one line: ${r.stderr}`);
    t.match(lines[0], new RegExp(`^pullthrough: config: ${key.replace(/\./g, '\\.')}: `), `${key}: names the key`);
  }
});
