// What the S3 blob and metadata stores share: the client, the object keys, the reading of S3
// errors, and the bucket's health. A bucket that fails is carried on without: reads become misses
// and writes are skipped, each failure logged and counted, and after a few failures in a row the
// bucket is left alone for a cooldown, so a dead bucket never makes a pull slow. After the
// cooldown one quick request at a time probes it while the others still go without; a probe's
// success is the recovery. Requests a pull waits on are quick: a bucket that takes them and never
// answers fails them within seconds (QUICK).
import { holdingRecordKey, tagRecordKey } from './blob-store.js';
import { S3Client } from '@aws-sdk/client-s3';
import { tryParseDigest, type Digest } from '../oci/digest.js';
import type { Logger } from '../lib/log.js';
import { CircuitBreaker } from '../lib/circuit-breaker.js';

export interface S3ClientSettings {
  region: string;
  endpoint?: string | undefined;
  forcePathStyle?: boolean | undefined;
}

/** Credentials come from the standard AWS chain (environment, profile, web identity, instance role). */
export function createS3Client(s: S3ClientSettings): S3Client {
  return new S3Client({
    region: s.region,
    ...(s.endpoint ? { endpoint: s.endpoint } : {}),
    forcePathStyle: s.forcePathStyle ?? false,
    // checksums only where S3 demands them: a streamed body is then sent as it is, not re-framed
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    // the cache has a fallback for every failure; a long retry chain would only delay it
    maxAttempts: 2,
    requestHandler: {
      connectionTimeout: 3000,
      // until the response headers, for uploads (an 8 MiB part included); quick requests pass
      // QUICK instead. A body that follows may idle as long as a slow client holds it back.
      requestTimeout: 60_000,
      throwOnRequestTimeout: true,
      httpAgent: { keepAlive: true, maxSockets: 256 },
      httpsAgent: { keepAlive: true, maxSockets: 256 },
    },
  });
}

/**
 * Options for a request a pull waits on (a HEAD, a record, the headers of a GET): an S3 bucket
 * answers those in milliseconds, so one that has not answered within a few seconds is failing.
 * Per attempt: with the client's retry, a hanging bucket costs a request about 6 s.
 */
export const QUICK = { requestTimeout: 3000 } as const;

/** Object keys under the configured prefix. Every key is derived from a digest or a hash, never from a client's string. */
export class S3Keys {
  readonly blobs: string;

  constructor(readonly prefix: string) {
    this.blobs = `${prefix}blobs/`;
  }

  blob(d: Digest): string {
    return `${this.blobs}${d.algorithm}/${d.hex}`;
  }

  /** "sha256:<hex>" for a blob key, undefined for anything else. */
  digestOf(key: string): string | undefined {
    const m = /^([a-z0-9]+)\/([a-f0-9]+)$/.exec(key.slice(this.blobs.length));
    return key.startsWith(this.blobs) && m ? tryParseDigest(`${m[1]}:${m[2]}`)?.value : undefined;
  }

  tag(upstream: string, repo: string, tag: string): string {
    const h = tagRecordKey(upstream, repo, tag);
    return `${this.prefix}meta/tags/${h}.json`;
  }

  manifest(d: Digest): string {
    return `${this.prefix}meta/manifests/${d.algorithm}/${d.hex}.json`;
  }

  holding(upstream: string, repo: string, digest: string): string {
    return `${this.prefix}meta/holdings/${holdingRecordKey(upstream, repo, digest)}.json`;
  }
}

interface S3ErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

const shape = (e: unknown): S3ErrorShape => (typeof e === 'object' && e !== null ? (e as S3ErrorShape) : {});

/** An absent object: a normal miss, not a fault. (A missing bucket is a fault.) */
export function isMissing(e: unknown): boolean {
  const s = shape(e);
  if (s.name === 'NoSuchBucket') return false;
  return s.name === 'NotFound' || s.name === 'NoSuchKey' || s.$metadata?.httpStatusCode === 404;
}

export function isInvalidRange(e: unknown): boolean {
  const s = shape(e);
  return s.name === 'InvalidRange' || s.$metadata?.httpStatusCode === 416;
}

/** A short description of an S3 or network error for the log. */
export function describe(e: unknown): { err: string; code: string | undefined; status: number | undefined } {
  const s = shape(e);
  return { err: s.message ?? String(e), code: s.name ?? s.code, status: s.$metadata?.httpStatusCode };
}

export interface S3HealthOptions {
  log?: Logger | undefined;
  /** failures in a row that make the bucket be left alone for a cooldown (default 3) */
  failuresToPause?: number;
  /** default 5 s */
  cooldownMs?: number;
  /** how long a probe may stay out before another one is let through (default 30 s) */
  probeMs?: number;
  now?: () => number;
}

/** The bucket's health, shared by every store on it: counts failures, pauses after several in a row. */
export class S3Health {
  private failures = 0;
  private skips = 0;
  private readonly circuit: CircuitBreaker;
  private readonly cooldownMs: number;

  constructor(private readonly opts: S3HealthOptions = {}) {
    this.cooldownMs = opts.cooldownMs ?? 5000;
    this.circuit = new CircuitBreaker({
      failuresToOpen: opts.failuresToPause ?? 3,
      coolDownMs: this.cooldownMs,
      probeMs: opts.probeMs ?? 30_000,
      now: opts.now,
    });
  }

  /** S3 requests that failed since start-up. */
  get errors(): number {
    return this.failures;
  }

  /** True while the bucket is left alone after failures in a row, until a probe succeeds. */
  get paused(): boolean {
    return this.circuit.state() !== 'closed';
  }

  /** Failures in a row (0 after a success). */
  get failuresInARow(): number {
    return this.circuit.failuresInARow;
  }

  /** Requests not sent because the bucket was paused. */
  get skipped(): number {
    return this.skips;
  }

  /**
   * False while the bucket is paused after failures in a row; a caller then acts as on a failure.
   * Once the pause is over, the next quick request (`probe`) is let through and the pause goes on
   * for the others until it reports succeeded() or failed(). Long requests (uploads) never probe.
   */
  available(probe = true): boolean {
    const go = probe ? this.circuit.probe() : this.circuit.state() === 'closed';
    if (!go) this.skips++;
    return go;
  }

  succeeded(): void {
    if (this.circuit.state() !== 'closed') {
      this.opts.log?.info({ s3Errors: this.failures, s3Skipped: this.skips }, 'S3 bucket reachable again');
    }
    this.circuit.succeeded();
  }

  failed(op: string, fields: Record<string, unknown>, e: unknown): void {
    this.failures++;
    this.circuit.failed();
    const pausing = this.circuit.state() !== 'closed';
    this.opts.log?.warn(
      { op, ...fields, ...describe(e), s3Errors: this.failures, inARow: this.circuit.failuresInARow, ...(pausing ? { pausedMs: this.cooldownMs } : {}) },
      'S3 request failed; carrying on without the bucket (reads miss, writes are skipped)',
    );
  }

  /**
   * Runs one S3 operation: `fallback` when the bucket is paused or the operation failed. `fn` turns
   * expected outcomes (an absent object) into values itself; whatever it throws is a failure.
   * `probe`: false for long operations, which must not be the one request that probes the bucket.
   */
  async run<T>(op: string, fields: Record<string, unknown>, fn: () => Promise<T>, fallback: T, probe = true): Promise<T> {
    if (!this.available(probe)) return fallback;
    try {
      const value = await fn();
      this.succeeded();
      return value;
    } catch (e) {
      this.failed(op, fields, e);
      return fallback;
    }
  }
}
