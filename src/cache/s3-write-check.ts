// The S3 bucket's part of /readyz (see Readiness): a small object put and deleted under
// <prefix>readyz/, one key per process, so a delete that failed is undone by the next check.
// The check goes through the bucket's health like any request: its failures count towards
// pausing the bucket, and after a pause it is the probe that finds the bucket back, which is
// how a replica taken out of service (so receiving no pulls to probe with) becomes ready again.
import { randomUUID } from 'node:crypto';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { WriteCheckFailure, type WriteCheck } from './readiness.js';
import { describe, QUICK, type S3Health } from './s3-client.js';

export interface S3Location {
  client: S3Client;
  bucket: string;
  /** "" or ending in "/" */
  prefix: string;
  health: S3Health;
}

export function s3WriteCheck(o: S3Location): WriteCheck {
  const key = `${o.prefix}readyz/${randomUUID()}`;
  const paused = () => new WriteCheckFailure(`the S3 bucket is paused after ${o.health.failuresInARow} failed requests in a row`, 'S3_PAUSED');
  return {
    name: 's3',
    known: () => (o.health.paused ? paused() : undefined),
    async write() {
      if (!o.health.available()) throw paused();
      try {
        await o.client.send(new PutObjectCommand({ Bucket: o.bucket, Key: key, Body: 'ok', ContentType: 'text/plain' }), QUICK);
        await o.client.send(new DeleteObjectCommand({ Bucket: o.bucket, Key: key }), QUICK);
      } catch (e) {
        o.health.failed('readyz', { key }, e);
        const { code, status } = errorCode(e);
        throw new WriteCheckFailure(`the S3 bucket did not take a write (${[code, status].filter((x) => x !== undefined).join(', ') || 'no answer'})`, code);
      }
      o.health.succeeded();
    },
  };
}

/** S3's error name (AccessDenied, NoSuchBucket) or the network's (ECONNREFUSED), and the HTTP status when there was one. */
function errorCode(e: unknown): { code: string | undefined; status: number | undefined } {
  const { code: named, status } = describe(e);
  const errno = (e as { code?: unknown }).code;
  const code = typeof errno === 'string' ? errno : named === 'Error' ? undefined : named;
  return { code, status };
}
