// The client side of the HTTP properties: sends one request exactly as generated (raw path,
// any method and headers) over a kept-alive connection, bounded in time and in bytes, and checks
// the answer against what is true: the status rules (never a 500; 502/503/504 and every error
// with an OCI body), and the bytes of every complete 200/206 of content the registry holds.
// Also a `pullthrough verify`-like pass over the fs store: every file must hash to its name.
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import { OCI_ERRORS } from '../../src/oci/errors.js';
import { parseRanges, satisfy, type ByteRange } from '../../src/oci/range.js';

export interface FuzzRequest {
  method: string;
  /** the request target, sent as it is */
  path: string;
  headers: Record<string, string>;
}

export type FuzzResponse =
  | { kind: 'response'; status: number; headers: Record<string, string | string[] | undefined>; body: Buffer; complete: boolean }
  /** the connection ended (or failed) before a status line: an "empty reply" */
  | { kind: 'no-response'; error: string }
  | { kind: 'timeout' };

/** A client of its own: one kept-alive connection, so a response smuggled into it shows up as the next answer. */
export function keepAliveAgent(): Agent {
  return new Agent({ keepAlive: true, maxSockets: 1 });
}

/** Sends `r`; the whole exchange (headers and body) must finish within `timeoutMs`, and the body within `maxBody` bytes. */
export function send(base: string, r: FuzzRequest, agent: Agent, timeoutMs: number, maxBody = 64 << 20): Promise<FuzzResponse> {
  const url = new URL(base);
  return new Promise((resolve) => {
    let settled = false;
    const done = (v: FuzzResponse): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(v);
    };
    const req = request({ host: url.hostname, port: url.port, method: r.method, path: r.path, headers: r.headers, agent });
    const timer = setTimeout(() => {
      req.destroy();
      done({ kind: 'timeout' });
    }, timeoutMs);
    req.on('error', (e) => done({ kind: 'no-response', error: e.message }));
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      let n = 0;
      const finish = (): void => done({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(parts), complete: res.complete });
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > maxBody) {
          // more than any answer here may hold: counted as cut, and the connection dropped
          req.destroy();
          done({ kind: 'response', status: res.statusCode ?? 0, headers: res.headers, body: Buffer.alloc(0), complete: false });
          return;
        }
        parts.push(c);
      });
      res.on('end', finish);
      res.on('error', finish);
      res.on('close', finish);
    });
    req.end();
  });
}

/** Percent-encodes what may not appear raw in a request target (the rest is sent as generated). */
export function rawTarget(s: string): string {
  let out = '';
  for (const ch of s) {
    const c = ch.codePointAt(0)!;
    out += c >= 0x21 && c <= 0x7e ? ch : [...Buffer.from(ch, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0').toUpperCase()}`).join('');
  }
  return out;
}

/** The status rules: 5xx only as 502/503/504; every error (but HEAD's) with an OCI JSON body of a known code. */
export function checkStatus(r: FuzzRequest, res: FuzzResponse): void {
  if (res.kind === 'timeout') throw new Error('no answer within the time bound (a hang)');
  if (res.kind === 'no-response') throw new Error(`no status line at all (an empty reply): ${res.error}`);
  if (res.status >= 500 && ![502, 503, 504].includes(res.status)) throw new Error(`status ${res.status}`);
  if (res.status < 400 || r.method === 'HEAD') return;
  if (!res.complete) throw new Error(`status ${res.status} with a cut body`);
  let code: unknown;
  try {
    code = (JSON.parse(res.body.toString('utf8')) as { errors?: { code?: unknown }[] }).errors?.[0]?.code;
  } catch {
    throw new Error(`status ${res.status} without a JSON body: ${JSON.stringify(res.body.toString('utf8').slice(0, 120))}`);
  }
  if (typeof code !== 'string' || !(code in OCI_ERRORS)) throw new Error(`status ${res.status} with errors[0].code ${JSON.stringify(code)}, not one of the table`);
}

function header(res: { headers: Record<string, string | string[] | undefined> }, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

function parseContentRange(v: string | undefined, size: number): ByteRange {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(v ?? '');
  if (!m) throw new Error(`Content-Range ${JSON.stringify(v)}`);
  const range = { start: Number(m[1]), end: Number(m[2]) + 1 }; // the header names the last byte
  if (m[3] !== '*' && Number(m[3]) !== size) throw new Error(`Content-Range ${v} for a blob of ${size}`);
  if (range.start >= range.end || range.end > size) throw new Error(`Content-Range ${v} outside a blob of ${size}`);
  return range;
}

/** The resolved ranges a Range header asks of a blob of `size` (undefined: the header is ignored, a 200). */
function askedRanges(h: string | undefined, size: number): ByteRange[] | 'unsatisfiable' | undefined {
  const ranges = parseRanges(h);
  if (!ranges) return undefined;
  const ok: ByteRange[] = [];
  for (const r of ranges) {
    try {
      ok.push(satisfy(r, size));
    } catch {
      // an unsatisfiable part is left out; all of them: 416
    }
  }
  return ok.length ? ok : 'unsatisfiable';
}

const covered = (r: ByteRange, asked: readonly ByteRange[]): boolean => {
  // every byte of r is in some asked range (coalescing may join asked ranges)
  let at = r.start;
  for (const a of [...asked].sort((x, y) => x.start - y.start)) if (a.start <= at && a.end > at) at = a.end;
  return at >= r.end;
};

/** Splits a multipart/byteranges body into its parts. */
function multipartParts(body: Buffer, contentType: string | undefined): { range: string | undefined; bytes: Buffer }[] {
  const boundary = /boundary=("?)([^";]+)\1/.exec(contentType ?? '')?.[2];
  if (!boundary) throw new Error(`multipart without a boundary: ${contentType}`);
  const sep = Buffer.from(`--${boundary}`);
  const parts: { range: string | undefined; bytes: Buffer }[] = [];
  let at = body.indexOf(sep);
  while (at >= 0) {
    const afterSep = at + sep.length;
    if (body.subarray(afterSep, afterSep + 2).toString() === '--') return parts;
    const headEnd = body.indexOf('\r\n\r\n', afterSep);
    if (headEnd < 0) throw new Error('multipart part without headers');
    const head = body.subarray(afterSep, headEnd).toString('latin1');
    const range = /content-range:\s*([^\r\n]+)/i.exec(head)?.[1]?.trim();
    const m = /^bytes (\d+)-(\d+)\//.exec(range ?? '');
    const len = m ? Number(m[2]) - Number(m[1]) + 1 : 0;
    parts.push({ range, bytes: body.subarray(headEnd + 4, headEnd + 4 + len) });
    at = body.indexOf(sep, headEnd + 4 + len);
  }
  throw new Error('multipart body without its closing boundary');
}

/**
 * The body rules for a blob GET/HEAD whose true content is `blob`: a complete 200 is the blob,
 * a complete 206 is exactly the bytes its Content-Range (or each part's) names, and those lie
 * within what was asked; 416 only when nothing asked lies inside the blob. Returns what held.
 * With `headIsUpstreamsWord`, a HEAD's size is not checked: a HEAD of an uncached blob passes on
 * what the upstream announced (checking it would take fetching the whole blob), and no byte is
 * served or cached on its word.
 */
export function checkBlob(r: FuzzRequest, res: FuzzResponse, blob: Buffer, headIsUpstreamsWord = false): string | undefined {
  if (res.kind !== 'response' || !res.complete) return undefined;
  const cl = header(res, 'content-length');
  if (r.method === 'HEAD' && headIsUpstreamsWord) return res.status === 200 ? 'HEAD-upstreams-word' : undefined;
  if (r.method === 'HEAD') {
    if (res.status === 200 && cl !== undefined && Number(cl) !== blob.length) throw new Error(`HEAD says Content-Length ${cl}, the blob has ${blob.length}`);
    return res.status === 200 ? 'HEAD-size' : undefined;
  }
  if (cl !== undefined && Number(cl) !== res.body.length) throw new Error(`Content-Length ${cl}, body ${res.body.length}`);
  const asked = askedRanges(r.headers.range ?? r.headers.Range, blob.length);
  if (res.status === 200) {
    if (!res.body.equals(blob)) throw new Error(`a complete 200 of ${res.body.length} bytes that are not the blob's ${blob.length}`);
    return 'exact-200';
  }
  if (res.status === 416) {
    if (asked !== 'unsatisfiable') throw new Error(`416 for a satisfiable Range ${r.headers.range}`);
    return '416-only-unsatisfiable';
  }
  if (res.status !== 206) return undefined;
  if (asked === undefined || asked === 'unsatisfiable') throw new Error(`206 for Range ${JSON.stringify(r.headers.range)}`);
  const type = header(res, 'content-type') ?? '';
  if (type.startsWith('multipart/byteranges')) {
    const parts = multipartParts(res.body, type);
    let total = 0;
    for (const p of parts) {
      const range = parseContentRange(p.range, blob.length);
      if (!p.bytes.equals(blob.subarray(range.start, range.end))) throw new Error(`part ${p.range}: wrong bytes`);
      if (!covered(range, asked)) throw new Error(`part ${p.range} was not asked for`);
      total += p.bytes.length;
    }
    if (total > blob.length) throw new Error(`multipart of ${total} content bytes for a blob of ${blob.length}`);
    return 'exact-multipart';
  }
  const range = parseContentRange(header(res, 'content-range'), blob.length);
  if (!res.body.equals(blob.subarray(range.start, range.end))) throw new Error(`206 ${header(res, 'content-range')}: wrong bytes`);
  if (!covered(range, asked)) throw new Error(`206 ${header(res, 'content-range')} was not asked for (${r.headers.range})`);
  return 'exact-206';
}

/** Every file of the fs store (blobs/<alg>/<2 hex>/<hex>) hashes to its name; returns how many were checked. */
export async function verifyFsStore(cacheDir: string): Promise<number> {
  let n = 0;
  const root = join(cacheDir, 'blobs');
  for (const alg of await readdir(root).catch(() => [] as string[])) {
    for (const pre of await readdir(join(root, alg))) {
      for (const hex of await readdir(join(root, alg, pre))) {
        const got = createHash(alg).update(await readFile(join(root, alg, pre, hex))).digest('hex');
        if (got !== hex) throw new Error(`the cache holds ${alg}:${hex} with content ${alg}:${got}`);
        n++;
      }
    }
  }
  return n;
}

/** Samples the process's RSS while a property runs; `peak` is the largest seen above the start. */
export function rssWatch(): { peakGrowth(): number; stop(): void } {
  const start = process.memoryUsage().rss;
  let peak = start;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  timer.unref();
  return { peakGrowth: () => Math.max(peak, process.memoryUsage().rss) - start, stop: () => clearInterval(timer) };
}

/**
 * Catches what would kill a real pullthrough process (an uncaught exception or an unhandled
 * 'error' event in the in-process proxy), so a property reports it as the failure of the case
 * that caused it instead of the test process dying without a counterexample.
 */
export function crashGuard(): { check(): void; stop(): void } {
  let crash: unknown;
  const onCrash = (e: unknown): void => {
    crash ??= e;
  };
  process.on('uncaughtException', onCrash);
  process.on('unhandledRejection', onCrash);
  return {
    check() {
      if (crash === undefined) return;
      const e = crash;
      crash = undefined;
      throw new Error(`the proxy crashed (this would end the process): ${e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e)}`);
    },
    stop() {
      process.off('uncaughtException', onCrash);
      process.off('unhandledRejection', onCrash);
    },
  };
}
