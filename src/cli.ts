#!/usr/bin/env -S node --max-semi-space-size=2 --liftoff-only
// The Node flags above bound memory; measured in bench/RESULTS.md ("Memory"). A young generation
// of at most 2 MiB per semi-space (V8 grows it to 16 MiB under load) collects the garbage of a
// streaming server before it piles up, and keeping undici's WebAssembly HTTP parser on V8's
// baseline compiler avoids a one-time ~30 MiB spike of the optimizing one, at no measured cost
// in throughput. They only apply when this file is run as a program (`pullthrough`, `npm start`).
//
// pullthrough serve [--listen HOST:PORT] [--cache-dir DIR] [--upstream [NAME=]URL[,type=TYPE]]... [--config FILE]
//                   [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]
// pullthrough verify [--cache-dir DIR] [--config FILE]
// pullthrough warm [--server URL] IMAGE... [--platform OS/ARCH[/VARIANT]]... [--all-platforms]
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { BlobStore } from './cache/blob-store.js';
import { ConfigError, loadConfig, upstreamSpec, UPSTREAM_TYPES, type Config } from './config.js';
import { createApp, loggerOptions, openBucket } from './main.js';
import { FsBlobStore } from './cache/fs-store.js';
import { verifyStore } from './cache/verify.js';
import { runWarm } from './warm/command.js';

const USAGE = `usage: pullthrough serve [options]
       pullthrough verify [--cache-dir DIR] [--config FILE]
       pullthrough warm [--server URL] IMAGE... [--platform OS/ARCH[/VARIANT]]... [--all-platforms]

  serve                     run the proxy
  verify                    re-hash every cached blob (in the bucket too, with cache.s3); remove and
                            report the ones that do not match (exit code 1 when any did)
  warm                      fill a running instance's cache with images (pullthrough warm --help)

  --listen HOST:PORT        address to listen on (default 0.0.0.0:5000)
  --cache-dir DIR           filesystem cache directory (default ~/.cache/pullthrough)
  --max-size SIZE           cache size bound, e.g. 100GiB (default 50GiB)
  --upstream [NAME=]URL[,type=TYPE]
                            an upstream registry; repeatable; the first is the default; TYPE is
                            ${UPSTREAM_TYPES.join(', ')} (default: from the URL's host or NAME)
  --config FILE             YAML or JSON config file; flags override it
  --log-level LEVEL         fatal, error, warn, info, debug, trace (default info)
  --tls-cert FILE           serve HTTPS with this PEM certificate (and chain); reloaded when it changes
  --tls-key FILE            the certificate's PEM private key
  --tls-client-ca FILE      require client certificates signed by this PEM CA (mTLS)
`;

async function main(argv: string[]): Promise<number> {
  // warm is a client of a running instance, with arguments of its own
  if (argv[0] === 'warm') return runWarm(argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        listen: { type: 'string' },
        'cache-dir': { type: 'string' },
        'max-size': { type: 'string' },
        upstream: { type: 'string', multiple: true },
        config: { type: 'string', short: 'c' },
        'log-level': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'tls-client-ca': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (e) {
    process.stderr.write(`pullthrough: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const command = positionals[0];
  if ((command !== 'serve' && command !== 'verify') || positionals.length > 1) {
    process.stderr.write(USAGE);
    return 2;
  }
  let config;
  try {
    config = loadConfig({
      config: values.config,
      listen: values.listen,
      cacheDir: values['cache-dir'],
      maxSize: values['max-size'],
      upstream: values.upstream,
      logLevel: values['log-level'],
      tlsCert: values['tls-cert'],
      tlsKey: values['tls-key'],
      tlsClientCa: values['tls-client-ca'],
    });
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`pullthrough: config: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  if (command === 'verify') return verify(config.cache);
  // a person watching a terminal reads lines; anything else (a file, journald, a collector) gets JSON
  const app = await createApp(config, loggerOptions(config.logLevel, { pretty: process.stdout.isTTY === true }));
  const stop = async () => {
    await app.close();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
  await app.server.listen({ host: config.listen.host, port: config.listen.port });
  app.server.log.info(
    { tls: config.tls ? (config.tls.clientCa ? 'mutual' : 'on') : 'off', cacheDir: config.cache.dir, upstreams: config.upstreams.map(upstreamSpec), defaultUpstream: config.defaultUpstream },
    'pullthrough ready',
  );
  return -1;
}

/**
 * Re-hashes the filesystem cache, and the bucket when the cache is in S3 (its local tier too, when
 * it has one). Exit code 1 when a blob was bad, or when the bucket failed requests, so that the
 * check is incomplete.
 */
async function verify(cache: Config['cache']): Promise<number> {
  let failed = false;
  const check = async (store: BlobStore, where: string): Promise<void> => {
    const report = await verifyStore(store, (digest, got) => {
      process.stdout.write(`bad ${digest}: content hashes to ${got}; removed\n`);
    });
    const mib = (report.bytes / 2 ** 20).toFixed(1);
    const gone = report.unreadable ? `; ${report.unreadable} gone before they could be read` : '';
    process.stdout.write(`verified ${report.checked} blobs (${mib} MiB) in ${where}: ${report.bad.length} bad${gone}\n`);
    if (report.bad.length > 0) failed = true;
  };
  if (!cache.s3 || cache.s3.localTier) {
    // A running server may share the directory: no size bound here (this process must not evict
    // good blobs, whatever its maxSize says), and its fills in tmp/ are left alone.
    // Nor may its reads count as a client's: they would make every blob look recently used.
    await check(await FsBlobStore.open({ dir: cache.dir, maxBytes: Number.POSITIVE_INFINITY, keepSpool: true, stampReads: false }), cache.dir);
  }
  if (cache.s3) {
    // a spool directory of its own: opening a bucket store empties its spool, and a running
    // server's must be left alone
    const spoolDir = join(cache.dir, 'tmp', `verify-${process.pid}`);
    const warn = (obj: object, msg?: string): void => void process.stderr.write(`pullthrough: ${msg ?? ''} ${JSON.stringify(obj)}\n`);
    const bucket = await openBucket(cache.s3, spoolDir, { info() {}, warn });
    try {
      await check(bucket.store, `s3://${cache.s3.bucket}/${cache.s3.prefix}`);
    } finally {
      bucket.close();
      await rm(spoolDir, { recursive: true, force: true });
    }
    if (bucket.health.errors > 0) {
      process.stderr.write(`pullthrough: ${bucket.health.errors} S3 requests failed; blobs they concerned were not checked\n`);
      failed = true;
    }
  }
  return failed ? 1 : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (e: unknown) => {
    // a file the config names that cannot be read at startup (auth.htpasswd) is a config error too
    if (e instanceof ConfigError) {
      process.stderr.write(`pullthrough: config: ${e.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`pullthrough: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
