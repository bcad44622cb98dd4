// An in-memory Upstream for component tests: repositories of manifests, blobs and tags, answered
// the way RegistryClient answers them (errors classified by the client's own errorFromResponse and
// errorFromTransport, manifests verified against their digest, a 206 holding exactly the range
// asked for, tags paged with `next`, no referrers API as undefined). It counts every call and can
// be told to fail, be slow, ignore Ranges or paging, or serve bytes that do not match a digest.
// Retries are not modelled: it behaves like a client configured with `retries: 0`.
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { CircuitBreaker } from '../../src/lib/circuit-breaker.js';
import { digestOf, type Digest } from '../../src/oci/digest.js';
import type { OciCode } from '../../src/oci/errors.js';
import { OCI_INDEX, OCI_MANIFEST, type Descriptor } from '../../src/oci/manifest.js';
import { accepts } from '../../src/oci/media-types.js';
import { satisfy, type RangeRequest } from '../../src/oci/range.js';
import { referenceString, type Reference } from '../../src/oci/reference.js';
import { errorFromResponse, errorFromTransport, framingError, verificationError, type ErrorContext, type ResourceKind } from '../../src/upstreams/errors.js';
import type { BlobResponse, CallOptions, Manifest, ManifestHead, RateLimit, TagPage, Upstream } from '../../src/upstreams/upstream.js';

export type Method = 'headManifest' | 'getManifest' | 'headBlob' | 'getBlob' | 'tags' | 'referrers';
const METHODS: readonly Method[] = ['headManifest', 'getManifest', 'headBlob', 'getBlob', 'tags', 'referrers'];

export interface Call {
  method: Method;
  repo: string;
  /** the tag or digest asked for (none for tags) */
  ref: string | undefined;
  range?: RangeRequest | undefined;
  /** the username of the client credentials the call was made with (clientCredentials: passthrough) */
  user?: string | undefined;
}

/** How calls fail or slow down. `status` answers as the upstream would (with `code` in its envelope). */
export interface Fault {
  status?: number;
  code?: OciCode;
  retryAfter?: string;
  /** a transport failure (connection refused) instead of an answer */
  unreachable?: boolean;
  /** waited before answering (or failing); the caller's signal cuts it short as a timeout would */
  delayMs?: number;
}

interface StoredManifest {
  mediaType: string;
  body: Buffer;
}

interface Repo {
  manifests: Map<string, StoredManifest>;
  blobs: Map<string, Buffer>;
  tags: Map<string, string>;
}

export interface PushedImage {
  digest: string;
  body: Buffer;
  config: string;
  layers: string[];
}

/** RegistryClient's health rule: unhealthy after this many failures in a row, until this long after the latest */
const HEALTH = { failuresToOpen: 3, coolDownMs: 10_000 };
const CHUNK = 64 << 10;

export class FakeUpstream implements Upstream {
  readonly calls: Call[] = [];
  /** served as the upstream's announced rate limit */
  announced: RateLimit | undefined;
  /** false: no referrers API (a 404), so callers fall back to the referrers tag schema */
  referrersApi = true;
  /** true: every Range is ignored and the whole blob sent (a 200), as some upstreams do */
  ignoreRanges = false;
  /** false: a manifest is served whatever the Accept list says (docker-registry answers 404 instead) */
  honoursAccept = true;
  /** false: `n` and `last` are ignored and every tag listed, as docker-registry 2.8 does */
  pagesTags = true;
  /**
   * When set, every call needs the Basic credentials of one of these users, as docker-registry's
   * htpasswd auth does (a 401 without them, or with a wrong password); a user with `repos` may
   * read only those (a 403 elsewhere, as a token server's scopes or a 403 would refuse).
   */
  users: Map<string, { password: string; repos?: string[] }> | undefined;

  private readonly repos = new Map<string, Repo>();
  private readonly faults = new Map<Method, Fault>();
  /** bytes served under a digest instead of its content */
  private readonly tampered = new Map<string, Buffer>();
  private readonly circuit: CircuitBreaker;

  constructor(
    readonly name = 'fake.test',
    now: () => number = Date.now,
  ) {
    this.circuit = new CircuitBreaker({ ...HEALTH, now });
  }

  // ---- content

  putBlob(repo: string, bytes: Buffer): string {
    const digest = digestOf(bytes).value;
    this.repo(repo).blobs.set(digest, bytes);
    return digest;
  }

  /** Stores a manifest (by its digest) and points the tags at it. */
  putManifest(repo: string, doc: object | Buffer, mediaType: string, ...tags: string[]): string {
    const body = Buffer.isBuffer(doc) ? doc : Buffer.from(JSON.stringify(doc));
    const digest = digestOf(body).value;
    const r = this.repo(repo);
    r.manifests.set(digest, { mediaType, body });
    for (const tag of tags) r.tags.set(tag, digest);
    return digest;
  }

  /** An OCI image of these layers (and a config blob), tagged; with a subject it is a referrer. */
  pushImage(repo: string, tag: string | undefined, layers: Buffer[], o: { subject?: Descriptor; artifactType?: string } = {}): PushedImage {
    const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
    const config = this.putBlob(repo, configBytes);
    const descriptors = layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: this.putBlob(repo, l), size: l.length }));
    const doc = {
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      ...(o.artifactType ? { artifactType: o.artifactType } : {}),
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: configBytes.length },
      layers: descriptors,
      ...(o.subject ? { subject: o.subject } : {}),
    };
    const body = Buffer.from(JSON.stringify(doc));
    const digest = this.putManifest(repo, body, OCI_MANIFEST, ...(tag === undefined ? [] : [tag]));
    return { digest, body, config, layers: descriptors.map((d) => d.digest) };
  }

  /** Serves `bytes` under `digest` from now on (a corrupt upstream); undefined restores it. */
  tamper(digest: string, bytes: Buffer | undefined): void {
    if (bytes) this.tampered.set(digest, bytes);
    else this.tampered.delete(digest);
  }

  // ---- faults and counts

  /** Makes the methods (all when none are named) fail or slow down; undefined heals them. */
  fault(fault: Fault | undefined, ...methods: Method[]): void {
    for (const m of methods.length ? methods : METHODS) {
      if (fault) this.faults.set(m, fault);
      else this.faults.delete(m);
    }
  }

  /** Calls of a method, for one tag or digest when `ref` is given. */
  count(method: Method, ref?: string): number {
    return this.calls.filter((c) => c.method === method && (ref === undefined || c.ref === ref)).length;
  }

  reset(): void {
    this.calls.length = 0;
  }

  // ---- Upstream

  async headManifest(repo: string, ref: Reference, accept: readonly string[], o: CallOptions = {}): Promise<ManifestHead> {
    const ctx = await this.enter('headManifest', 'manifest', repo, referenceString(ref), o);
    const found = this.manifest(repo, ref, accept);
    if (!found) throw await errorFromResponse(ctx, 404, {}, Readable.from([])); // a HEAD has no envelope
    return { digest: found.digest, mediaType: found.mediaType, size: found.body.length };
  }

  async getManifest(repo: string, ref: Reference, accept: readonly string[], o: CallOptions = {}): Promise<Manifest> {
    const ctx = await this.enter('getManifest', 'manifest', repo, referenceString(ref), o);
    const found = this.manifest(repo, ref, accept);
    if (!found) throw await this.notFound(ctx, repo, 'MANIFEST_UNKNOWN');
    const digest = digestOf(found.body);
    // the client checks the body against the digest asked for, or the one the upstream announced
    if (digest.value !== found.digest) throw verificationError(ctx, found.digest, digest.value);
    return { digest, mediaType: found.mediaType, body: found.body };
  }

  async headBlob(repo: string, digest: Digest, o: CallOptions = {}): Promise<number | undefined> {
    const ctx = await this.enter('headBlob', 'blob', repo, digest.value, o);
    const bytes = this.blob(repo, digest);
    if (!bytes) throw await errorFromResponse(ctx, 404, {}, Readable.from([]));
    return bytes.length;
  }

  async getBlob(repo: string, digest: Digest, o: CallOptions & { range?: RangeRequest; size?: number | undefined } = {}): Promise<BlobResponse> {
    const ctx = await this.enter('getBlob', 'blob', repo, digest.value, o, o.range);
    const bytes = this.blob(repo, digest);
    if (!bytes) throw await this.notFound(ctx, repo, 'BLOB_UNKNOWN');
    if (o.size !== undefined && o.size !== bytes.length) {
      throw framingError(ctx, `sent ${bytes.length} bytes for a blob of ${o.size}`);
    }
    if (!o.range || this.ignoreRanges) return { size: bytes.length, range: undefined, body: chunked(bytes) };
    let range;
    try {
      range = satisfy(o.range, bytes.length);
    } catch {
      throw await errorFromResponse(ctx, 416, { 'content-range': `bytes */${bytes.length}` }, Readable.from([]));
    }
    return { size: bytes.length, range, body: chunked(bytes.subarray(range.start, range.end)) };
  }

  async tags(repo: string, page: { n?: number; last?: string }, o: CallOptions = {}): Promise<TagPage> {
    const ctx = await this.enter('tags', 'tags', repo, undefined, o);
    const r = this.repos.get(repo);
    if (!r) throw await this.notFound(ctx, repo, 'NAME_UNKNOWN');
    const all = [...r.tags.keys()].sort();
    if (!this.pagesTags) return { name: repo, tags: all, next: undefined };
    const after = all.filter((t) => page.last === undefined || t > page.last);
    const n = page.n ?? after.length;
    const tags = after.slice(0, n);
    const more = tags.length > 0 && tags.length < after.length;
    return { name: repo, tags, next: more ? { n: page.n, last: tags[tags.length - 1]! } : undefined };
  }

  async referrers(repo: string, digest: Digest, artifactType: string | undefined, o: CallOptions = {}): Promise<Manifest | undefined> {
    await this.enter('referrers', 'referrers', repo, digest.value, o);
    if (!this.referrersApi) return undefined;
    const manifests = [...(this.repos.get(repo)?.manifests ?? new Map<string, StoredManifest>())].flatMap(([d, m]) => {
      const doc = JSON.parse(m.body.toString()) as { subject?: Descriptor; artifactType?: string; config?: Descriptor };
      const type = doc.artifactType ?? doc.config?.mediaType;
      if (doc.subject?.digest !== digest.value || (artifactType !== undefined && type !== artifactType)) return [];
      return [{ mediaType: m.mediaType, digest: d, size: m.body.length, ...(type ? { artifactType: type } : {}) }];
    });
    const body = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests }));
    return { digest: digestOf(body), mediaType: OCI_INDEX, body };
  }

  healthy(): boolean {
    return this.circuit.state() !== 'open';
  }

  rateLimit(): RateLimit | undefined {
    return this.announced;
  }

  async close(): Promise<void> {}

  // ---- inside

  /** Records the call, then applies its method's fault: a delay, a failure, or neither. */
  private async enter(method: Method, kind: ResourceKind, repo: string, ref: string | undefined, o: CallOptions, range?: RangeRequest): Promise<ErrorContext> {
    const creds = await o.credentials?.get();
    this.calls.push({ method, repo, ref, ...(range ? { range } : {}), ...(creds ? { user: creds.username } : {}) });
    const ctx: ErrorContext = { upstream: this.name, kind, repo, ref, client: o.credentials && { anonymous: creds === undefined, sentBasic: creds !== undefined } };
    const fault = this.faults.get(method);
    try {
      if (fault?.delayMs) await sleep(fault.delayMs, undefined, { signal: o.signal });
      if (fault?.unreachable) throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    } catch (e) {
      if (!o.signal?.aborted) this.outcome(false); // the caller giving up is not the upstream failing
      throw errorFromTransport(ctx, e);
    }
    if (fault?.status !== undefined) {
      this.outcome(fault.status < 500);
      const headers = fault.retryAfter ? { 'retry-after': fault.retryAfter } : {};
      throw await errorFromResponse(ctx, fault.status, headers, envelope(fault.code));
    }
    this.outcome(true);
    if (this.users) {
      const user = creds && this.users.get(creds.username);
      if (!user || user.password !== creds.password) throw await errorFromResponse(ctx, 401, {}, envelope('UNAUTHORIZED'));
      if (user.repos && !user.repos.includes(repo)) throw await errorFromResponse(ctx, 403, {}, envelope('DENIED'));
    }
    return ctx;
  }

  private outcome(ok: boolean): void {
    if (ok) this.circuit.succeeded();
    else this.circuit.failed();
  }

  private notFound(ctx: ErrorContext, repo: string, code: OciCode) {
    return errorFromResponse(ctx, 404, {}, envelope(this.repos.has(repo) ? code : 'NAME_UNKNOWN'));
  }

  private repo(name: string): Repo {
    let r = this.repos.get(name);
    if (!r) this.repos.set(name, (r = { manifests: new Map(), blobs: new Map(), tags: new Map() }));
    return r;
  }

  /** The manifest a tag or digest names, if the Accept list takes its type (docker-registry has no fallback) or is not honoured. */
  private manifest(repo: string, ref: Reference, accept: readonly string[]): (StoredManifest & { digest: string }) | undefined {
    const r = this.repos.get(repo);
    const digest = ref.kind === 'digest' ? ref.digest.value : r?.tags.get(ref.tag);
    const m = digest === undefined ? undefined : r?.manifests.get(digest);
    if (!m || !digest || (this.honoursAccept && !accepts(accept, m.mediaType))) return undefined;
    return { digest, mediaType: m.mediaType, body: this.tampered.get(digest) ?? m.body };
  }

  private blob(repo: string, digest: Digest): Buffer | undefined {
    const bytes = this.repos.get(repo)?.blobs.get(digest.value);
    return bytes && (this.tampered.get(digest.value) ?? bytes);
  }
}

function envelope(code: OciCode | undefined): Readable {
  return Readable.from(code ? [Buffer.from(JSON.stringify({ errors: [{ code, message: code }] }))] : []);
}

/** A body in chunks, as it would arrive off a socket. */
function chunked(bytes: Buffer): Readable {
  const chunks: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += CHUNK) chunks.push(bytes.subarray(at, at + CHUNK));
  return Readable.from(chunks);
}
