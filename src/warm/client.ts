// warm's HTTP client of a running pullthrough: manifests read bounded and checked against their
// digest, blobs streamed through a hash and counted against their descriptor's size, never held.
// Not the upstream RegistryClient: that one reads answers as an upstream's for the proxy's own
// clients (a 401 becomes DENIED, 5xx are retried, messages name an upstream), where warm has to
// show an operator what their server itself answered.
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { digestOf, tryParseDigest, type Digest } from '../oci/digest.js';
import { parseErrorEnvelope } from '../oci/errors.js';
import { declaredMediaType, MAX_MANIFEST_BYTES, parseManifest, type Descriptor, type ParsedManifest } from '../oci/manifest.js';
import { MANIFEST_TYPES } from '../oci/media-types.js';
import { referenceString, type Reference } from '../oci/reference.js';
import { basicAuthorization, type Credentials } from '../upstreams/auth/credentials.js';
import { header } from '../upstreams/errors.js';

const MAX_REDIRECTS = 5;
const MAX_ERROR_BODY = 64 << 10;
const USER_AGENT = 'pullthrough-warm/0.1';

/** A failure warm reports as it is: one sentence for an operator. */
export class WarmError extends Error {
  override name = 'WarmError';
}

export interface FetchedManifest {
  digest: Digest;
  mediaType: string;
  size: number;
  manifest: ParsedManifest;
}

type Headers = Record<string, string | string[] | undefined>;

export class ServerClient {
  private readonly origin: string;
  private readonly authorization: string | undefined;

  constructor(
    server: URL,
    /** its connection settings (TLS trust and client certificate) are the caller's */
    private readonly dispatcher: Agent = new Agent({ keepAliveTimeout: 30_000 }),
    /** a user of the server's `auth`: sent to the server's own origin only, never where it redirects */
    credentials?: Credentials,
  ) {
    this.origin = server.origin;
    this.authorization = credentials && basicAuthorization(credentials);
  }

  /**
   * GETs the manifest `name` has under `ref`, through the server's route for `name` (an upstream
   * prefix and repository). When it was reached from a descriptor, it must be that descriptor's
   * content (digest and size); by tag, the body must hash to the digest the server names.
   */
  async manifest(name: string, ref: Reference, from?: Descriptor): Promise<FetchedManifest> {
    const what = `manifest ${referenceString(ref)}`;
    const accept = from?.mediaType && !MANIFEST_TYPES.includes(from.mediaType) ? [...MANIFEST_TYPES, from.mediaType] : MANIFEST_TYPES;
    const res = await this.get(`/v2/${name}/manifests/${referenceString(ref)}`, { accept: accept.join(', ') }, what);
    if (res.status !== 200) throw await this.answerError(res, what);
    const body = await readBounded(res.body, MAX_MANIFEST_BYTES, what);
    const named = ref.kind === 'digest' ? ref.digest : tryParseDigest(header(res.headers, 'docker-content-digest') ?? '');
    const digest = digestOf(body, named?.algorithm ?? 'sha256');
    if (named && digest.value !== named.value) throw new WarmError(`the server sent a ${what} that hashes to ${digest.value}, not ${named.value}`);
    if (from && from.size !== body.length) throw new WarmError(`the server sent a ${what} of ${body.length} bytes; its descriptor says ${from.size}`);
    const mediaType = declaredMediaType(body) ?? bareType(header(res.headers, 'content-type')) ?? from?.mediaType;
    if (!mediaType) throw new WarmError(`the server sent a ${what} without a media type`);
    try {
      return { digest, mediaType, size: body.length, manifest: parseManifest(body, mediaType) };
    } catch (e) {
      throw new WarmError(`the server sent a ${what} that is not valid: ${(e as Error).message}`);
    }
  }

  /**
   * GETs a blob and checks it as it streams: no more and no fewer bytes than its descriptor's
   * size, hashing to its digest. `onBytes` hears of every chunk (for progress); no chunk is kept.
   */
  async blob(name: string, d: Descriptor, onBytes: (n: number) => void): Promise<void> {
    const digest = tryParseDigest(d.digest);
    if (!digest) throw new WarmError(`blob ${d.digest.slice(0, 80)} has a digest this client cannot check (sha256 and sha512 only)`);
    const res = await this.get(`/v2/${name}/blobs/${digest.value}`, {}, `blob ${digest.value}`);
    if (res.status !== 200) throw await this.answerError(res, `blob ${digest.value}`);
    const announced = header(res.headers, 'content-length');
    if (announced !== undefined && Number(announced) !== d.size) {
      destroy(res.body);
      throw new WarmError(`the server announced ${announced} bytes; the blob's descriptor says ${d.size}`);
    }
    const hash = createHash(digest.algorithm);
    let received = 0;
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        received += chunk.length;
        if (received > d.size) throw new WarmError(`the server sent more than the ${d.size} bytes of the blob's descriptor`);
        hash.update(chunk);
        onBytes(chunk.length);
      }
    } catch (e) {
      destroy(res.body);
      if (e instanceof WarmError) throw e;
      // pullthrough breaks a download off this way when the upstream's bytes failed its check
      throw new WarmError(`the download broke off after ${received} of ${d.size} bytes (${reasonOf(e)}); the server's log says why`);
    }
    if (received < d.size) throw new WarmError(`the server ended the blob after ${received} of its ${d.size} bytes`);
    const got = `${digest.algorithm}:${hash.digest('hex')}`;
    if (got !== digest.value) throw new WarmError(`the blob's content hashes to ${got}`);
  }

  close(): Promise<void> {
    return this.dispatcher.close();
  }

  /** One GET, redirects followed (a server keeping blobs in S3 sends pre-signed bucket URLs). */
  private async get(path: string, headers: Record<string, string>, what: string): Promise<{ status: number; headers: Headers; body: Readable }> {
    let url = new URL(path, this.origin);
    for (let hop = 0; ; hop++) {
      let res;
      // sent before any challenge: the server is ours, and a redirect elsewhere (a bucket's
      // pre-signed URL) gets no credentials
      const auth = this.authorization !== undefined && url.origin === this.origin ? { authorization: this.authorization } : {};
      try {
        res = await request(url, { method: 'GET', headers: { 'user-agent': USER_AGENT, ...headers, ...auth }, dispatcher: this.dispatcher });
      } catch (e) {
        const where = url.origin === this.origin ? `the server at ${this.origin}` : `${url.origin} (where the server redirected the ${what})`;
        throw new WarmError(`cannot reach ${where}: ${reasonOf(e)}`);
      }
      const location = header(res.headers, 'location');
      if (res.statusCode >= 300 && res.statusCode < 400 && location && hop < MAX_REDIRECTS) {
        destroy(res.body);
        url = new URL(location, url);
        continue;
      }
      return { status: res.statusCode, headers: res.headers, body: res.body };
    }
  }

  /** What the server answered instead, with its OCI error code and message when it sent them. */
  private async answerError(res: { status: number; body: Readable }, what: string): Promise<WarmError> {
    let body: Buffer = Buffer.alloc(0);
    try {
      body = await readBounded(res.body, MAX_ERROR_BODY, what);
    } catch {
      // the status alone says enough
    }
    const [first] = parseErrorEnvelope(body);
    const said = first ? ` ${first.code}${first.message ? `: ${first.message}` : ''}` : '';
    const hint = res.status === 401 && this.authorization === undefined ? ' (the server wants a user: --user NAME, the password in PULLTHROUGH_PASSWORD)' : '';
    return new WarmError(`the server answered ${res.status}${said.slice(0, 500)} for the ${what}${hint}`);
  }
}

async function readBounded(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > limit) throw new WarmError(`the server sent a ${what} larger than ${limit} bytes`);
      chunks.push(chunk);
    }
  } catch (e) {
    destroy(body);
    if (e instanceof WarmError) throw e;
    throw new WarmError(`the ${what} broke off (${reasonOf(e)})`);
  }
  return Buffer.concat(chunks);
}

function destroy(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

function bareType(contentType: string | undefined): string | undefined {
  return contentType?.split(';')[0]?.trim().toLowerCase() || undefined;
}

function reasonOf(e: unknown): string {
  const code = typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : '';
  const message = e instanceof Error ? e.message : String(e);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}
