// A registry that lies on purpose. It speaks HTTP/1.1 itself, on raw sockets, so that it can
// send what a real server library refuses to: bodies longer or shorter than their
// Content-Length, Content-Ranges that are not the range asked for, bytes after the end of a
// response on a kept-alive connection. Content is held in memory (blobs by digest, manifests by
// repository and reference); `misbehave` switches on one lie at a time, for every request or only
// the ones it matches. Grow it with every defect found: a new lie is a new Misbehaviour.
import { createHash } from 'node:crypto';
import { createServer, type Socket } from 'node:net';
import { startProxy, type Proxy } from './proxy.js';

export interface HostileRequest {
  method: string;
  /** path plus query string */
  path: string;
  headers: Record<string, string>;
}

/** What the registry answers; `raw` bytes are written to the socket as they are, nothing added. */
export type HostileAnswer =
  | { status: number; headers?: Record<string, string>; body?: Buffer | string }
  | { raw: Buffer | string; close?: boolean }
  /** the connection is reset (RST), optionally after `after` raw bytes */
  | { reset: true; after?: Buffer | string }
  /** nothing is ever sent; the connection stays open */
  | { stall: true; after?: Buffer | string };

export type Misbehaviour =
  /** the honest answer, as a real registry would give it */
  | { kind: 'honest' }
  /** Content-Length announces `announced` bytes; the body is the honest one (cut or padded with garbage when shorter/longer) */
  | { kind: 'contentLength'; announced: number; bodyBytes?: number }
  /** a ranged GET is answered 206 with this Content-Range header and these bytes of the blob */
  | { kind: 'contentRange'; header: string; start: number; end: number; contentLength?: number }
  /** after the honest answer, these bytes follow on the same connection (a response nobody asked for) */
  | { kind: 'trailingBytes'; bytes: Buffer | string }
  /** the byte at this offset of every blob body is flipped */
  | { kind: 'wrongByte'; offset: number }
  /** the connection is reset after this many body bytes */
  | { kind: 'resetAfter'; bytes: number }
  /** the registry goes silent after this many body bytes */
  | { kind: 'stallAfter'; bytes: number }
  /**
   * a ranged GET is answered with the honest 206 and these bytes after its body, inside the
   * response: counted in its Content-Length, or (chunked) sent as one more chunk without one
   */
  | { kind: 'rangeOverrun'; bytes: Buffer | string; chunked?: boolean }
  /** every matching request is answered 429 TOOMANYREQUESTS with this Retry-After */
  | { kind: 'rateLimited'; retryAfter: string }
  /** any answer, built by the test */
  | { kind: 'custom'; answer: (req: HostileRequest, honest: () => HostileAnswer) => HostileAnswer | Promise<HostileAnswer> };

export interface HostileMatch {
  method?: string;
  pathIncludes?: string | RegExp;
  /** only requests with (true) or without (false) a Range header */
  ranged?: boolean;
}

export interface HostileRegistry {
  /** http://127.0.0.1:PORT */
  url: string;
  port: number;
  /** every request received, in order */
  log: HostileRequest[];
  /** stores a blob; returns its sha256 digest */
  addBlob(body: Buffer | string): string;
  /** stores a manifest under its digest and, when given, a tag; returns its digest */
  addManifest(repo: string, body: Buffer | string, mediaType: string, tag?: string): string;
  /** switches a lie on for the matching requests (all when `only` is absent), `times` times or for good */
  misbehave(m: Misbehaviour, opts?: { only?: HostileMatch; times?: number }): void;
  /** back to honest answers (content is kept) */
  behave(): void;
  count(match?: HostileMatch): number;
  close(): Promise<void>;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

function matches(m: HostileMatch | undefined, r: HostileRequest): boolean {
  if (!m) return true;
  if (m.method !== undefined && r.method !== m.method.toUpperCase()) return false;
  if (m.ranged !== undefined && (r.headers.range !== undefined) !== m.ranged) return false;
  if (m.pathIncludes === undefined) return true;
  return typeof m.pathIncludes === 'string' ? r.path.includes(m.pathIncludes) : m.pathIncludes.test(r.path);
}

function head(status: number, headers: Record<string, string>): Buffer {
  const lines = [`HTTP/1.1 ${status} ${status < 300 ? 'OK' : 'Status'}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`);
}

function serialize(a: { status: number; headers?: Record<string, string>; body?: Buffer | string }, method: string): Buffer {
  const body = a.body === undefined ? Buffer.alloc(0) : Buffer.from(a.body);
  const headers = { ...a.headers };
  if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-length')) headers['Content-Length'] = String(body.length);
  return Buffer.concat([head(a.status, headers), method === 'HEAD' ? Buffer.alloc(0) : body]);
}

/** The whole head of an answer (its Content-Length the full body's) and the first `bytes` of its body. */
function headersAndFirst(a: { status: number; headers?: Record<string, string> }, body: Buffer, bytes: number): Buffer {
  const whole = serialize({ ...a, body }, 'GET');
  return whole.subarray(0, whole.length - body.length + bytes);
}

export async function startHostileRegistry(): Promise<HostileRegistry> {
  const blobs = new Map<string, Buffer>();
  const manifests = new Map<string, { body: Buffer; mediaType: string }>();
  const log: HostileRequest[] = [];
  let lies: { m: Misbehaviour; only?: HostileMatch | undefined; times?: number | undefined }[] = [];
  const sockets = new Set<Socket>();

  /** The answer of an honest registry. */
  function honest(req: HostileRequest): HostileAnswer {
    const path = req.path.split('?')[0]!;
    if (path === '/v2/' || path === '/v2') return { status: 200, headers: { 'Content-Type': 'application/json' }, body: '{}' };
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m) return { status: 404, headers: { 'Content-Type': 'application/json' }, body: '{"errors":[{"code":"NAME_UNKNOWN","message":"no such path"}]}' };
    const [, repo, kind, ref] = m as unknown as [string, string, string, string];
    if (kind === 'manifests') {
      const man = manifests.get(`${repo}@${ref}`);
      if (!man) return { status: 404, headers: { 'Content-Type': 'application/json' }, body: '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}' };
      return { status: 200, headers: { 'Content-Type': man.mediaType, 'Docker-Content-Digest': sha256(man.body) }, body: man.body };
    }
    const blob = blobs.get(ref);
    if (!blob) return { status: 404, headers: { 'Content-Type': 'application/json' }, body: '{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown"}]}' };
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    const base = { 'Content-Type': 'application/octet-stream', 'Docker-Content-Digest': ref, 'Accept-Ranges': 'bytes' };
    if (range) {
      const start = Number(range[1]);
      const end = Math.min(range[2] ? Number(range[2]) : blob.length - 1, blob.length - 1);
      if (start >= blob.length || end < start) return { status: 416, headers: { 'Content-Range': `bytes */${blob.length}` } };
      return { status: 206, headers: { ...base, 'Content-Range': `bytes ${start}-${end}/${blob.length}` }, body: blob.subarray(start, end + 1) };
    }
    return { status: 200, headers: base, body: blob };
  }

  /** The honest answer bent by `m`. */
  async function lie(m: Misbehaviour, req: HostileRequest): Promise<HostileAnswer> {
    const truth = honest(req);
    const isBody = 'status' in truth && truth.status < 300 && req.method === 'GET';
    const body = 'status' in truth && truth.body !== undefined ? Buffer.from(truth.body) : Buffer.alloc(0);
    const headers = 'status' in truth ? truth.headers ?? {} : {};
    switch (m.kind) {
      case 'honest':
        return truth;
      case 'custom':
        return m.answer(req, () => truth);
      case 'contentLength': {
        const n = m.bodyBytes ?? body.length;
        const sent = n <= body.length ? body.subarray(0, n) : Buffer.concat([body, Buffer.alloc(n - body.length, 0x41)]);
        return { raw: Buffer.concat([head((truth as { status: number }).status, { ...headers, 'Content-Length': String(m.announced) }), req.method === 'HEAD' ? Buffer.alloc(0) : sent]) };
      }
      case 'contentRange': {
        const digest = /\/blobs\/([^/?]+)/.exec(req.path)?.[1] ?? '';
        const blob = blobs.get(digest) ?? Buffer.alloc(0);
        const part = blob.subarray(m.start, m.end + 1);
        return { raw: Buffer.concat([head(206, { 'Content-Type': 'application/octet-stream', 'Content-Range': m.header, 'Content-Length': String(m.contentLength ?? part.length) }), part]) };
      }
      case 'trailingBytes':
        return { raw: Buffer.concat([serialize(truth as { status: number }, req.method), Buffer.from(m.bytes)]) };
      case 'rangeOverrun': {
        if (!('status' in truth) || truth.status !== 206) return truth;
        const extra = Buffer.from(m.bytes);
        if (!m.chunked) return { ...truth, headers: { ...headers, 'Content-Length': String(body.length + extra.length) }, body: Buffer.concat([body, extra]) };
        const chunk = (b: Buffer) => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);
        return { raw: Buffer.concat([head(206, { ...headers, 'Transfer-Encoding': 'chunked' }), chunk(body), chunk(extra), Buffer.from('0\r\n\r\n')]) };
      }
      case 'rateLimited':
        return {
          status: 429,
          headers: { 'Content-Type': 'application/json', 'Retry-After': m.retryAfter },
          body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
        };
      case 'wrongByte': {
        if (!isBody || m.offset >= body.length) return truth;
        const bent = Buffer.from(body);
        bent[m.offset] = bent[m.offset]! ^ 0xff;
        return { ...(truth as { status: number }), body: bent };
      }
      case 'resetAfter':
        if (!isBody) return truth;
        return { reset: true, after: headersAndFirst(truth as { status: number }, body, m.bytes) };
      case 'stallAfter':
        if (!isBody) return truth;
        return { stall: true, after: headersAndFirst(truth as { status: number }, body, m.bytes) };
    }
  }

  async function answer(req: HostileRequest): Promise<HostileAnswer> {
    const i = lies.findIndex((l) => matches(l.only, req));
    if (i < 0) return honest(req);
    const l = lies[i]!;
    if (l.times !== undefined && --l.times <= 0) lies.splice(i, 1);
    return lie(l.m, req);
  }

  function send(socket: Socket, a: HostileAnswer, method: string): boolean {
    if ('raw' in a) {
      socket.write(a.raw);
      if (a.close) socket.end();
      return !a.close;
    }
    if ('reset' in a) {
      if (a.after) socket.write(a.after, () => socket.resetAndDestroy());
      else socket.resetAndDestroy();
      return false;
    }
    if ('stall' in a) {
      if (a.after) socket.write(a.after);
      return false;
    }
    socket.write(serialize(a, method));
    return true;
  }

  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = Buffer.alloc(0);
    let busy = false;
    let open = true;
    const next = async (): Promise<void> => {
      if (busy || !open) return;
      const end = buffered.indexOf('\r\n\r\n');
      if (end < 0) return;
      const text = buffered.subarray(0, end).toString('latin1');
      buffered = buffered.subarray(end + 4); // pull requests carry no body
      const [requestLine, ...lines] = text.split('\r\n');
      const [method = '', path = ''] = (requestLine ?? '').split(' ');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const colon = line.indexOf(':');
        if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
      }
      const req: HostileRequest = { method, path, headers };
      log.push(req);
      busy = true;
      const a = await answer(req).catch((e: Error) => ({ status: 500, body: e.message }) as HostileAnswer);
      busy = false;
      open = send(socket, a, method) && open;
      if (open) void next();
    };
    socket.on('data', (d: Buffer) => {
      buffered = Buffer.concat([buffered, d]);
      if (buffered.length > 1 << 20) socket.destroy();
      void next();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    log,
    addBlob(body) {
      const b = Buffer.from(body);
      const d = sha256(b);
      blobs.set(d, b);
      return d;
    },
    addManifest(repo, body, mediaType, tag) {
      const b = Buffer.from(body);
      const d = sha256(b);
      manifests.set(`${repo}@${d}`, { body: b, mediaType });
      if (tag) manifests.set(`${repo}@${tag}`, { body: b, mediaType });
      return d;
    },
    misbehave(m, opts = {}) {
      lies.push({ m, only: opts.only, times: opts.times });
    },
    behave() {
      lies = [];
    },
    count(match) {
      return log.filter((r) => matches(match, r)).length;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A hostile registry behind a pullthrough of its own, as upstream "hostile" (no retries unless
 * the config says otherwise); both stop with the test.
 */
export async function hostileSetup(
  t: { teardown(fn: () => unknown): void },
  configDoc: Record<string, unknown> = {},
): Promise<{ reg: HostileRegistry; proxy: Proxy }> {
  const reg = await startHostileRegistry();
  t.teardown(() => reg.close());
  const proxy = await startProxy({ upstream: [`hostile=${reg.url}`], configDoc: { retries: 0, ...configDoc } });
  t.teardown(() => proxy.stop());
  return { reg, proxy };
}
