// A GET read to its end, saying whether the body arrived whole: what a client would take as the
// answer. For tests that must tell a complete-looking body from one that broke off.
import type { IncomingHttpHeaders } from 'node:http';
import { request } from 'undici';

export interface Got {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  /** how the body broke off, if it did */
  error: string | undefined;
  /** the body arrived whole, as announced: a client would take it as the answer */
  complete: boolean;
}

export async function get(url: string, headers: Record<string, string> = {}): Promise<Got> {
  const res = await request(url, { headers });
  const chunks: Buffer[] = [];
  let error: string | undefined;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) chunks.push(chunk);
  } catch (e) {
    error = String(e);
  }
  const body = Buffer.concat(chunks);
  const announced = res.headers['content-length'];
  return { status: res.statusCode, headers: res.headers, body, error, complete: error === undefined && (announced === undefined || body.length === Number(announced)) };
}
