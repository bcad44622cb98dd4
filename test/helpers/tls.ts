// A test CA and the certificates it signs, made with openssl for each test: a server certificate
// for 127.0.0.1 and localhost (what a TLS proxy in a test serves), client certificates for mTLS,
// and the files each client wants (skopeo's cert dir, curl's and Node's CA). The private keys are
// the fixed test keys of secrets.ts, so that the secrets checks know them; certificates, serials
// and validity are made here, at run time.
//
//   const pki = await makeTestPki();
//   const proxy = await startProxy({ ..., tlsCert: pki.server.cert, tlsKey: pki.server.key });
//   await fetch(`${proxy.url}/v2/`, { dispatcher: pki.agent() });
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, type PeerCertificate } from 'node:tls';
import { Agent } from 'undici';
import { SECRETS } from './secrets.js';
import { makeTempDir, run } from './util.js';

export interface Issued {
  /** PEM files */
  cert: string;
  key: string;
  /** as Node reports it (X509Certificate.serialNumber, getPeerCertificate().serialNumber) */
  serial: string;
}

export interface IssueOptions {
  /** the files' base name, unique in the PKI's directory */
  name: string;
  /** a private key (PEM) of secrets.ts; default tlsServerKey, or tlsClientKey for a client */
  key?: string;
  /** default: server (127.0.0.1 and localhost) */
  usage?: 'server' | 'client';
  commonName?: string;
}

export interface TestPki {
  dir: string;
  /** the CA's certificate (PEM file): what clients trust, and what an mTLS proxy takes as clientCa */
  caCert: string;
  /** a server certificate for 127.0.0.1 and localhost */
  server: Issued;
  /** another certificate signed by this CA */
  issue(opts: IssueOptions): Promise<Issued>;
  /** an undici dispatcher that trusts this CA (and presents `client`, when given) */
  agent(client?: Issued): Agent;
  /**
   * A directory as skopeo's --src-cert-dir and containers' certs.d take it: the CA as ca.crt, and
   * `client` as client.cert and client.key.
   */
  certDir(client?: Issued): Promise<string>;
}

const DAY_COUNT = '2';

/** A new CA (signing with `caKey`, default tlsCaKey) in a temp directory, and a server certificate. */
export async function makeTestPki(opts: { caKey?: string; caName?: string } = {}): Promise<TestPki> {
  const dir = await makeTempDir('pullthrough-pki-');
  const caKey = join(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  await writeFile(caKey, `${opts.caKey ?? SECRETS.tlsCaKey}\n`, { mode: 0o600 });
  await openssl([
    'req', '-x509', '-new', '-key', caKey, '-subj', `/CN=${opts.caName ?? 'pullthrough test CA'}`, '-days', DAY_COUNT, '-out', caCert,
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  let serial = 0x1001;
  const issue = async (o: IssueOptions): Promise<Issued> => {
    const usage = o.usage ?? 'server';
    const key = join(dir, `${o.name}.key`);
    const cert = join(dir, `${o.name}.crt`);
    const csr = join(dir, `${o.name}.csr`);
    const ext = join(dir, `${o.name}.ext`);
    await writeFile(key, `${o.key ?? (usage === 'server' ? SECRETS.tlsServerKey : SECRETS.tlsClientKey)}\n`, { mode: 0o600 });
    await writeFile(
      ext,
      usage === 'server'
        ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature\n'
        : 'extendedKeyUsage=clientAuth\nkeyUsage=critical,digitalSignature\n',
    );
    await openssl(['req', '-new', '-key', key, '-subj', `/CN=${o.commonName ?? (usage === 'server' ? 'localhost' : o.name)}`, '-out', csr]);
    await openssl(['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-set_serial', String(serial++), '-days', DAY_COUNT, '-extfile', ext, '-out', cert]);
    return { cert, key, serial: serialOf(await readFile(cert)) };
  };
  const server = await issue({ name: 'server' });
  let dirs = 0;
  return {
    dir,
    caCert,
    server,
    issue,
    agent: (client) => new Agent({ connect: { ca: readFileSync(caCert), ...(client ? { cert: readFileSync(client.cert), key: readFileSync(client.key) } : {}) } }),
    async certDir(client) {
      const d = join(dir, `certs-${dirs++}`);
      await mkdir(d);
      await copyFile(caCert, join(d, 'ca.crt'));
      if (client) {
        await copyFile(client.cert, join(d, 'client.cert'));
        await copyFile(client.key, join(d, 'client.key'));
      }
      return d;
    },
  };
}

async function openssl(args: string[]): Promise<void> {
  await run('openssl', args, { timeoutMs: 30_000 });
}

export const serialOf = (pem: string | Buffer): string => new X509Certificate(pem).serialNumber;

/**
 * The certificate a TLS server on `port` presents now, by a fresh handshake that trusts `ca`;
 * rejects when the handshake fails.
 */
export function peerCertificate(port: number, ca: Buffer | string, opts: { servername?: string; client?: { cert: Buffer; key: Buffer } } = {}): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, ca, servername: opts.servername ?? 'localhost', ...opts.client, timeout: 10_000 });
    socket.once('secureConnect', () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert);
    });
    socket.once('timeout', () => socket.destroy(new Error('TLS handshake timed out')));
    socket.once('error', reject);
  });
}
