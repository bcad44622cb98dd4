// HTTPS at the edge: the server's certificate and key, and the CA that client certificates must
// be signed by (mTLS), read from PEM files; checked before they are used, so that a bad file is
// a config error at start and a failed reload later; and reloaded when the files change, into
// the running server (Node's setSecureContext: connections already open keep theirs).
import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync, unwatchFile, watchFile } from 'node:fs';
import type { ServerOptions } from 'node:https';
import { createSecureContext, type SecureContextOptions, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { Logger } from '../lib/log.js';

export interface TlsFiles {
  readonly cert: string;
  readonly key: string;
  /** with it, every client must present a certificate this CA signed */
  readonly clientCa?: string | undefined;
}

/** What the log says of a certificate (never anything of the key). */
export interface CertificateSummary {
  subject: string;
  issuer: string;
  serial: string;
  notAfter: string;
}

export interface TlsMaterial {
  context: SecureContextOptions & { cert: Buffer; key: Buffer; ca?: Buffer };
  certificate: CertificateSummary;
  /** of the files' bytes: a touched file with the same content is no change */
  digest: string;
}

/** A file that cannot be used, named by its setting (cert, key or clientCa). */
export class TlsFileError extends Error {
  constructor(
    readonly file: keyof TlsFiles,
    message: string,
  ) {
    super(message);
    this.name = 'TlsFileError';
  }
}

/**
 * Reads and checks the files: each readable, the certificates PEM, the key a private key that
 * belongs to the certificate. Throws TlsFileError. Node would take a clientCa that holds no
 * certificate and then refuse every client, and a key of another certificate only with an
 * OpenSSL message, so both are checked here first.
 */
export function readTls(files: TlsFiles): TlsMaterial {
  const cert = read(files, 'cert');
  const key = read(files, 'key');
  const ca = files.clientCa === undefined ? undefined : read(files, 'clientCa');
  const leaf = certificateIn(cert, files, 'cert');
  if (ca) certificateIn(ca, files, 'clientCa');
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (e) {
    throw new TlsFileError('key', `${files.key} holds no usable PEM private key (${(e as Error).message})`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new TlsFileError('key', `${files.key} is not the private key of the certificate in ${files.cert}`);
  }
  const context = { cert, key, ...(ca ? { ca } : {}) };
  try {
    createSecureContext(context);
  } catch (e) {
    throw new TlsFileError('cert', `${files.cert} cannot be served: ${(e as Error).message}`);
  }
  const digest = createHash('sha256').update(cert).update('\0').update(key).update('\0').update(ca ?? '').digest('hex');
  return { context, certificate: summary(leaf), digest };
}

function read(files: TlsFiles, which: keyof TlsFiles): Buffer {
  const path = files[which]!;
  try {
    return readFileSync(path);
  } catch (e) {
    throw new TlsFileError(which, `cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** The first certificate of a PEM file (a server's may be followed by its chain, a CA file by more CAs). */
function certificateIn(pem: Buffer, files: TlsFiles, which: 'cert' | 'clientCa'): X509Certificate {
  // X509Certificate also parses DER, which Node's TLS options do not take
  if (pem.includes('-----BEGIN CERTIFICATE-----')) {
    try {
      return new X509Certificate(pem);
    } catch {
      // reported below
    }
  }
  throw new TlsFileError(which, `${files[which]} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
}

function summary(cert: X509Certificate): CertificateSummary {
  return { subject: cert.subject.replace(/\n/g, ', '), issuer: cert.issuer.replace(/\n/g, ', '), serial: cert.serialNumber, notAfter: new Date(cert.validTo).toISOString() };
}

/** The https server's options: with a clientCa, a client without a certificate it signed is refused in the handshake. */
export function httpsOptions(material: TlsMaterial): ServerOptions {
  const mutual = material.context.ca !== undefined;
  return { ...material.context, requestCert: mutual, rejectUnauthorized: mutual };
}

/**
 * What the running server does about TLS: logs the certificate it starts with and the handshakes
 * that fail, and reloads the files when they change, until the returned function is called.
 */
export function serveTls(server: TlsServer, files: TlsFiles, material: TlsMaterial, log: Logger): () => void {
  log.info({ tls: { cert: files.cert, ...material.certificate, clientCa: files.clientCa ?? false } }, 'TLS certificate loaded');
  logHandshakeFailures(server, log);
  return reloadOnChange(server, files, material, log);
}

/**
 * A handshake that failed never becomes a request, so nothing else would log it: a client that
 * does not trust our certificate, or that has none of its own under mTLS, is told why only by
 * its own error, and the operator by this line.
 */
function logHandshakeFailures(server: TlsServer, log: Logger): void {
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    log.info({ remoteAddress: socket.remoteAddress, code: err.code, reason: handshakeProblem(err, socket) }, 'TLS handshake failed');
  });
}

/** What went wrong, in words: OpenSSL's messages carry its source file and line around the reason. */
function handshakeProblem(err: NodeJS.ErrnoException, socket: TLSSocket): string {
  // Node checks the client's certificate after the handshake and hangs up on a bad one (the
  // client sees the connection close); only the socket says why
  if (socket.authorizationError) return `the client's certificate is not signed by tls.clientCa (${String(socket.authorizationError)})`;
  if (err.code === 'ERR_SSL_HTTP_REQUEST') return 'plain HTTP on the HTTPS port';
  if (err.code === 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE') return 'the client sent no certificate, and tls.clientCa requires one';
  const reason = /:error:[0-9A-F]+:[^:]*:[^:]*:([^:]+)/.exec(err.message)?.[1] ?? err.message;
  if (err.code?.includes('_ALERT_')) return `the client ended the handshake (${reason}): does it trust the CA of this server's certificate?`;
  return reason;
}

/** How often the files are looked at, and how long after a change they are read (a key written just after its certificate is read with it). */
const POLL_MS = 1000;
const SETTLE_MS = 1000;

/**
 * Reloads the files into `server` when they change, until the returned function is called. The
 * files are polled (stat), not watched with inotify: a renewed certificate often arrives as a
 * rename or a symlink swapped over it (certbot's live/, Kubernetes' ..data), which a watch on
 * the old inode misses. A failed reload is logged and the server keeps what it has.
 */
function reloadOnChange(server: TlsServer, files: TlsFiles, initial: TlsMaterial, log: Logger): () => void {
  let current = initial;
  let timer: NodeJS.Timeout | undefined;
  let failing = false;
  const reload = (): void => {
    timer = undefined;
    let next: TlsMaterial;
    try {
      next = readTls(files);
      if (next.digest !== current.digest) server.setSecureContext(next.context);
    } catch (e) {
      const file = e instanceof TlsFileError ? e.file : 'cert';
      log.warn({ tls: { setting: `tls.${file}`, path: files[file] }, err: (e as Error).message }, 'TLS certificate reload failed; still serving the previous certificate');
      failing = true;
      return;
    }
    // the files as they were (a touch, or a failed rotation undone): nothing to reload
    if (next.digest === current.digest) {
      if (failing) log.info({ tls: { cert: files.cert, ...current.certificate } }, 'TLS files are usable again; serving the same certificate');
    } else {
      current = next;
      log.info({ tls: { cert: files.cert, ...next.certificate } }, 'TLS certificate reloaded');
    }
    failing = false;
  };
  // called when a file's stat changed (its inode, size, times; not its access time)
  const changed = (): void => {
    clearTimeout(timer);
    timer = setTimeout(reload, SETTLE_MS).unref();
  };
  const paths = [files.cert, files.key, files.clientCa].filter((p): p is string => p !== undefined);
  for (const path of paths) watchFile(path, { interval: POLL_MS, persistent: false }, changed);
  return () => {
    clearTimeout(timer);
    for (const path of paths) unwatchFile(path, changed);
  };
}
