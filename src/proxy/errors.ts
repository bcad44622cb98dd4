// The one place an error becomes a response: an OCI envelope with the table's status, any headers
// the error carries (Retry-After, Content-Range), no body for HEAD, logged once.
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../oci/errors.js';
import { EstargzError } from '../estargz/index.js';
import { TarError } from '../tar/index.js';
import { layerErrorToRegistryError } from './layer-errors.js';
import { FormatRefusal } from '../lazy/format.js';
import { diskError } from '../cache/disk-writes.js';
import { BASIC_CHALLENGE } from '../access/basic.js';

export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  const disk = diskError(err);
  if (disk) return disk;
  // a lazy format's refusal is answered as the format's own error it wraps
  const format = err instanceof FormatRefusal ? err.cause : err;
  if (format instanceof EstargzError || format instanceof TarError) return layerErrorToRegistryError(format);
  const status = (err as FastifyError | undefined)?.statusCode;
  if (status === 413) return new RegistryError('UNSUPPORTED', { message: 'request body too large' });
  if (status !== undefined && status >= 400 && status < 500) {
    return new RegistryError('UNSUPPORTED', { message: (err as Error).message, status });
  }
  return new RegistryError('UNKNOWN', { cause: err });
}

/**
 * An error answered outside Fastify (to a request Node's HTTP layer keeps from it: malformed,
 * CONNECT, an unmet Expect): status, headers and the OCI envelope, closing the connection.
 */
export function bareErrorResponse(e: RegistryError, apiVersion: string): { status: number; headers: Record<string, string>; body: string } {
  const body = JSON.stringify(e.toBody());
  const headers = { ...e.headers, 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(body)), 'docker-distribution-api-version': apiVersion, connection: 'close' };
  return { status: e.status, headers, body };
}

export function errorHandler(err: unknown, req: FastifyRequest, reply: FastifyReply): void {
  const e = toRegistryError(err);
  const fields = { code: e.code, status: e.status, detail: e.detail };
  if (e.status >= 500 && e.code === 'UNKNOWN') req.log.error({ ...fields, err }, e.message);
  else if (diskError(err)) req.log.warn(fields, e.message);
  else req.log.info(fields, e.message);
  if (reply.sent || reply.raw.headersSent) {
    reply.raw.destroy();
    return;
  }
  reply.code(e.status).headers(e.headers);
  if (e.code === 'UNAUTHORIZED') reply.header('www-authenticate', BASIC_CHALLENGE);
  if (req.method === 'HEAD') {
    reply.header('content-type', 'application/json; charset=utf-8').send();
    return;
  }
  reply.type('application/json; charset=utf-8').send(e.toBody());
}
