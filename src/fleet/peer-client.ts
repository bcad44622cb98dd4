// Reads a blob from the replica that is filling it, over the peer route (src/proxy/fleet-routes.ts),
// from an offset on: a late joiner starts where its own fill is, and a resume after a broken
// stream starts where it broke. The bytes are not trusted more than an upstream's: the reading
// replica's own fill verifies them against the digest.
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import type { Digest } from '../oci/digest.js';

/** The peer route's path for a blob. */
export const peerBlobPath = (digest: string): string => `/_fleet/v1/blobs/${digest}`;

export interface PeerBlob {
  /** the whole blob's size, when the peer knows it */
  size: number | undefined;
  /** the bytes from the offset asked for on */
  body: Readable;
}

export class PeerClient {
  // a peer that stops sending (stalled, or dead behind a half-open connection) is given up on, and the caller resumes elsewhere
  private readonly agent = new Agent({ connect: { timeout: 2000 }, headersTimeout: 10_000, bodyTimeout: 30_000 });

  constructor(private readonly secret: string) {}

  /** The blob from `offset` on, from the replica at `origin`; undefined: it has neither a fill nor the blob. */
  async blob(origin: string, digest: Digest, offset: number): Promise<PeerBlob | undefined> {
    const res = await request(`${origin}${peerBlobPath(digest.value)}`, {
      dispatcher: this.agent,
      headers: { authorization: `Bearer ${this.secret}`, ...(offset > 0 ? { range: `bytes=${offset}-` } : {}) },
    });
    const length = Number(res.headers['content-length']);
    if (res.statusCode === 200 && offset === 0) return { size: Number.isSafeInteger(length) ? length : undefined, body: res.body };
    const m = /^bytes (\d+)-\d+\/(\d+)$/.exec(String(res.headers['content-range'] ?? ''));
    if (res.statusCode === 206 && m && Number(m[1]) === offset) return { size: Number(m[2]), body: res.body };
    await res.body.dump();
    if (res.statusCode === 404) return undefined;
    throw new Error(`peer ${origin} answered ${res.statusCode} for ${digest.value} from ${offset}`);
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}
