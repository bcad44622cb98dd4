// Typed configuration, loaded once: a YAML or JSON file, ${ENV} references expanded, command-line
// flags on top, validated with one clear message per problem, then frozen and handed down.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseServiceAccountKey } from './upstreams/auth/gar-credentials.js';

export const UPSTREAM_TYPES = ['registry', 'dockerhub', 'ecr', 'gar', 'ghcr'] as const;
export type UpstreamType = (typeof UPSTREAM_TYPES)[number];

export interface UpstreamConfig {
  /** the path prefix and ?ns= value that route here */
  readonly name: string;
  readonly url: string;
  readonly type: UpstreamType;
  /** other names that route here (e.g. index.docker.io) */
  readonly aliases: readonly string[];
  readonly username: string | undefined;
  readonly password: string | undefined;
  /** type ecr: how to call GetAuthorizationToken */
  readonly aws?: AwsUpstreamConfig | undefined;
  /** type gar: a service-account key file's JSON text (not a path), minted into access tokens */
  readonly serviceAccountJson?: string | undefined;
}

export interface AwsUpstreamConfig {
  /** explicit keys; without them the standard AWS credential chain is used (ECR Public: anonymous) */
  readonly accessKeyId: string | undefined;
  readonly secretAccessKey: string | undefined;
  readonly sessionToken: string | undefined;
  /** the API region; default: the region in the registry host, else the SDK's (AWS_REGION) */
  readonly region: string | undefined;
  /** GetAuthorizationToken endpoint override, for VPC interface endpoints and tests */
  readonly endpoint: string | undefined;
  /** ECR Public (public.ecr.aws): inferred from the host */
  readonly public: boolean;
}

export interface Config {
  readonly listen: { readonly host: string; readonly port: number };
  readonly cache: {
    readonly dir: string;
    readonly maxSize: number;
    /** how long a tag is served without asking the upstream again */
    readonly tagTtlMs: number;
    /** deadline for revalidating a cached tag; past it the cached manifest is served */
    readonly revalidateTimeoutMs: number;
    /** fill an uncached blob in the background when it is first asked for by Range (with unverifiedRanges) */
    readonly fillOnRange: boolean;
    /** answer a Range with bytes not yet verified against the blob's digest, for speed */
    readonly unverifiedRanges: boolean;
    /** blobs, tags and manifests in an S3 bucket shared by replicas; undefined: the filesystem cache */
    readonly s3: S3CacheConfig | undefined;
  };
  readonly upstreams: readonly UpstreamConfig[];
  readonly defaultUpstream: string;
  readonly timeouts: { readonly connectMs: number; readonly headersMs: number; readonly bodyMs: number };
  readonly retries: number;
  /**
   * eStargz layers: served lazily by range (sparse cache), with the prefetch range fetched on first
   * touch; with fillAfterRange, the first ranged read also fills the rest in the background
   */
  readonly estargz: { readonly lazy: boolean; readonly prefetch: boolean; readonly fillAfterRange: boolean; readonly maxSparseSize: number };
  readonly logLevel: string;
}

export interface S3CacheConfig {
  readonly bucket: string;
  /** "" or ending in "/" */
  readonly prefix: string;
  readonly region: string;
  /** an S3-compatible endpoint; undefined: AWS's own for the region */
  readonly endpoint: string | undefined;
  readonly forcePathStyle: boolean;
  /** keep the filesystem cache (cache.dir, bounded by cache.maxSize) in front of the bucket */
  readonly localTier: boolean;
  /** answer GETs of cached blobs with a 307 to a pre-signed bucket URL */
  readonly redirect: boolean;
  readonly redirectTtlMs: number;
}

export interface Flags {
  config?: string | undefined;
  listen?: string | undefined;
  cacheDir?: string | undefined;
  upstream?: string[] | undefined;
  maxSize?: string | undefined;
  logLevel?: string | undefined;
}

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    problem: string,
  ) {
    super(`${key}: ${problem}`);
    this.name = 'ConfigError';
  }
}

const DOCKER_HUB_URL = 'https://registry-1.docker.io';
const GHCR_URL = 'https://ghcr.io';

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'pullthrough');
}

/** Loads the config file (if any), applies flags and validates. Throws ConfigError. */
export function loadConfig(flags: Flags, env: NodeJS.ProcessEnv = process.env): Config {
  const raw = flags.config ? readConfigFile(flags.config) : {};
  const doc = expandEnv(raw, env, '') as Record<string, unknown>;
  onlyKeys(doc, '', ['listen', 'cache', 'upstreams', 'defaultUpstream', 'timeouts', 'retries', 'estargz', 'logLevel']);
  const cache = objectAt(doc, 'cache');
  onlyKeys(cache, 'cache.', ['dir', 'maxSize', 'tagTtl', 'revalidateTimeout', 'fillOnRange', 'unverifiedRanges', 's3']);
  const timeouts = objectAt(doc, 'timeouts');
  onlyKeys(timeouts, 'timeouts.', ['connect', 'headers', 'body']);
  const estargz = objectAt(doc, 'estargz');
  onlyKeys(estargz, 'estargz.', ['lazy', 'prefetch', 'fillAfterRange', 'maxSparseSize']);

  const upstreams = flags.upstream?.length
    ? flags.upstream.map((spec, i) => upstreamFromFlag(spec, i))
    : arrayAt(doc, 'upstreams').map((u, i) => upstreamFromDoc(u, `upstreams[${i}]`));
  if (upstreams.length === 0) upstreams.push(dockerHub());
  const names = new Set<string>();
  upstreams.forEach((u, i) => {
    for (const n of [u.name, ...u.aliases]) {
      if (names.has(n)) throw new ConfigError(`upstreams[${i}].name`, `"${n}" is used by two upstreams`);
      names.add(n);
    }
  });

  const defaultUpstream = flags.upstream?.length
    ? upstreams[0]!.name
    : optionalString(doc.defaultUpstream, 'defaultUpstream') ?? upstreams[0]!.name;
  if (!upstreams.some((u) => u.name === defaultUpstream)) {
    throw new ConfigError('defaultUpstream', `"${defaultUpstream}" is not the name of a configured upstream`);
  }

  const maxSize = parseSize(flags.maxSize ?? cache.maxSize ?? '50GiB', flags.maxSize ? '--max-size' : 'cache.maxSize');
  const config: Config = {
    listen: parseListen(flags.listen ?? optionalString(doc.listen, 'listen') ?? '0.0.0.0:5000', flags.listen ? '--listen' : 'listen'),
    cache: {
      dir: resolve(flags.cacheDir ?? optionalString(cache.dir, 'cache.dir') ?? defaultCacheDir(env)),
      maxSize,
      tagTtlMs: parseDuration(cache.tagTtl ?? '5m', 'cache.tagTtl'),
      revalidateTimeoutMs: parseDuration(cache.revalidateTimeout ?? '3s', 'cache.revalidateTimeout'),
      fillOnRange: parseBoolean(cache.fillOnRange ?? true, 'cache.fillOnRange'),
      unverifiedRanges: parseBoolean(cache.unverifiedRanges ?? false, 'cache.unverifiedRanges'),
      s3: s3FromDoc(cache.s3, env),
    },
    upstreams: upstreams.map((u) => withDockerHubEnvCredentials(u, env)),
    defaultUpstream,
    timeouts: {
      connectMs: parseDuration(timeouts.connect ?? '10s', 'timeouts.connect'),
      headersMs: parseDuration(timeouts.headers ?? '30s', 'timeouts.headers'),
      bodyMs: parseDuration(timeouts.body ?? '60s', 'timeouts.body'),
    },
    retries: parseCount(doc.retries ?? 2, 'retries'),
    estargz: {
      lazy: parseBoolean(estargz.lazy ?? true, 'estargz.lazy'),
      prefetch: parseBoolean(estargz.prefetch ?? true, 'estargz.prefetch'),
      fillAfterRange: parseBoolean(estargz.fillAfterRange ?? false, 'estargz.fillAfterRange'),
      // the sparse copies of lazily read layers: a tenth of the cache's size bound unless set
      maxSparseSize: parseSize(estargz.maxSparseSize ?? Math.max(1, Math.floor(maxSize / 10)), 'estargz.maxSparseSize'),
    },
    logLevel: flags.logLevel ?? optionalString(doc.logLevel, 'logLevel') ?? 'info',
  };
  return deepFreeze(config);
}

function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError('--config', `cannot read ${path}: ${(e as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (e) {
    throw new ConfigError('--config', `${path} is not valid YAML or JSON: ${(e as Error).message.split('\n')[0]}`);
  }
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError('--config', `${path} must hold a mapping of settings at the top level, not ${Array.isArray(doc) ? 'a list' : `a ${typeof doc}`}`);
  }
  return doc;
}

/** Replaces ${VAR} in every string; an unset variable becomes empty (an absent credential). */
function expandEnv(value: unknown, env: NodeJS.ProcessEnv, key: string): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? '');
  }
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, `${key}[${i}]`));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, expandEnv(v, env, key ? `${key}.${k}` : k)]));
  }
  if (value === null && key === '') return {};
  return value;
}

function upstreamFromDoc(value: unknown, key: string): UpstreamConfig {
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new ConfigError(key, 'must be a mapping with at least url');
  const u = value as Record<string, unknown>;
  onlyKeys(u, `${key}.`, ['name', 'url', 'type', 'aliases', 'username', 'password', 'serviceAccountJson', ...AWS_KEYS]);
  const givenType = optionalString(u.type, `${key}.type`);
  const defaultUrl = givenType === 'dockerhub' ? DOCKER_HUB_URL : givenType === 'ghcr' ? GHCR_URL : undefined;
  let url = parseUrl(u.url ?? defaultUrl, `${key}.url`);
  const type = givenType ?? inferType(url);
  if (!(UPSTREAM_TYPES as readonly string[]).includes(type)) {
    throw new ConfigError(`${key}.type`, `"${type}" is not one of ${UPSTREAM_TYPES.join(', ')}`);
  }
  // docker.io and index.docker.io are names of Docker Hub; its API lives on registry-1.docker.io
  if (type === 'dockerhub' && (url.hostname === 'docker.io' || url.hostname === 'index.docker.io')) url = new URL(DOCKER_HUB_URL);
  const name = optionalString(u.name, `${key}.name`) ?? defaultName(url, type as UpstreamType);
  validateName(name, `${key}.name`);
  const aliases = u.aliases === undefined ? defaultAliases(type as UpstreamType, name) : arrayOfStrings(u.aliases, `${key}.aliases`);
  aliases.forEach((a, i) => validateName(a, `${key}.aliases[${i}]`));
  const username = optionalString(u.username, `${key}.username`) || undefined;
  const password = optionalString(u.password, `${key}.password`) || undefined;
  if ((username === undefined) !== (password === undefined) && type !== 'ghcr') {
    throw new ConfigError(`${key}.${username ? 'password' : 'username'}`, 'is empty while the other credential is set');
  }
  const kind = kindSettings(u, type as UpstreamType, url, key, username !== undefined);
  return { name, url: url.origin, type: type as UpstreamType, aliases, username, password, ...kind };
}

const AWS_KEYS = ['awsAccessKeyId', 'awsSecretAccessKey', 'awsSessionToken', 'awsRegion', 'awsEndpoint', 'ecrPublic'] as const;

/** The settings only some upstream types take: AWS for ecr, a service-account key for gar. */
function kindSettings(u: Record<string, unknown>, type: UpstreamType, url: URL, key: string, hasBasic: boolean): Pick<UpstreamConfig, 'aws' | 'serviceAccountJson'> {
  const text = (k: string) => optionalString(u[k], `${key}.${k}`) || undefined;
  for (const k of AWS_KEYS) {
    if (type !== 'ecr' && u[k] !== undefined) throw new ConfigError(`${key}.${k}`, 'is only for upstreams of type ecr');
  }
  if (type !== 'gar' && u.serviceAccountJson !== undefined) throw new ConfigError(`${key}.serviceAccountJson`, 'is only for upstreams of type gar');
  if (type === 'gar') {
    const json = text('serviceAccountJson');
    if (json === undefined) return {};
    if (hasBasic) throw new ConfigError(`${key}.serviceAccountJson`, 'cannot be combined with username and password; use one');
    const parsed = parseServiceAccountKey(json);
    if (typeof parsed === 'string') throw new ConfigError(`${key}.serviceAccountJson`, parsed);
    return { serviceAccountJson: json };
  }
  if (type !== 'ecr') return {};
  const accessKeyId = text('awsAccessKeyId');
  const secretAccessKey = text('awsSecretAccessKey');
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw new ConfigError(`${key}.${accessKeyId ? 'awsSecretAccessKey' : 'awsAccessKeyId'}`, 'is empty while the other AWS key is set');
  }
  if (hasBasic) throw new ConfigError(`${key}.username`, 'ECR upstreams take awsAccessKeyId and awsSecretAccessKey (or the AWS credential chain), not username and password');
  const endpoint = text('awsEndpoint');
  const host = url.hostname;
  return {
    aws: {
      accessKeyId,
      secretAccessKey,
      sessionToken: text('awsSessionToken'),
      region: text('awsRegion'),
      endpoint: endpoint === undefined ? undefined : parseUrl(endpoint, `${key}.awsEndpoint`).href,
      public: parseBoolean(u.ecrPublic ?? (host === 'public.ecr.aws' || host === 'ecr-public.aws.com'), `${key}.ecrPublic`),
    },
  };
}

function upstreamFromFlag(spec: string, i: number): UpstreamConfig {
  const eq = spec.indexOf('=');
  const hasName = eq > 0 && !spec.slice(0, eq).includes('/');
  const doc: Record<string, unknown> = { url: hasName ? spec.slice(eq + 1) : spec };
  if (hasName) doc.name = spec.slice(0, eq);
  return upstreamFromDoc(doc, `--upstream #${i + 1}`);
}

function dockerHub(): UpstreamConfig {
  return upstreamFromDoc({ url: DOCKER_HUB_URL }, 'upstreams[0]');
}

/**
 * A Docker Hub upstream configured without credentials (the built-in default, --upstream, or a
 * config entry) takes REGISTRY_USERNAME and REGISTRY_PASSWORD when both are set. No other kind does.
 */
function withDockerHubEnvCredentials(u: UpstreamConfig, env: NodeJS.ProcessEnv): UpstreamConfig {
  const { REGISTRY_USERNAME: username, REGISTRY_PASSWORD: password } = env;
  if (u.type !== 'dockerhub' || u.password !== undefined || !username || !password) return u;
  return { ...u, username, password };
}

function inferType(url: URL): UpstreamType {
  const host = url.hostname;
  if (host === 'registry-1.docker.io' || host === 'index.docker.io' || host === 'docker.io') return 'dockerhub';
  if (/\.dkr[.-]ecr(-fips)?\./.test(host) || host === 'public.ecr.aws' || host === 'ecr-public.aws.com') return 'ecr';
  if (host.endsWith('-docker.pkg.dev') || host === 'gcr.io' || host.endsWith('.gcr.io')) return 'gar';
  if (host === 'ghcr.io') return 'ghcr';
  return 'registry';
}

function defaultName(url: URL, type: UpstreamType): string {
  return type === 'dockerhub' ? 'docker.io' : url.host;
}

function defaultAliases(type: UpstreamType, name: string): string[] {
  if (type !== 'dockerhub') return [];
  return ['docker.io', 'index.docker.io', 'registry-1.docker.io'].filter((a) => a !== name);
}

function validateName(name: string, key: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]+)?$/.test(name)) {
    throw new ConfigError(key, `"${name}" is not a registry host name (letters, digits, dots, dashes, optional :port)`);
  }
}

function parseListen(value: string, key: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]*)):([0-9]{1,5})$/.exec(value) ?? /^()()([0-9]{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(key, `"${value}" is not HOST:PORT`);
  return { host: m[1] || m[2] || '0.0.0.0', port };
}

function parseUrl(value: unknown, key: string): URL {
  if (typeof value !== 'string' || value === '') throw new ConfigError(key, 'is required (an http or https URL)');
  const withScheme = /^[a-z]+:\/\//i.test(value) ? value : `https://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new ConfigError(key, `"${value}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(key, `"${value}" must be http or https`);
  if (url.username || url.password) throw new ConfigError(key, 'must not embed credentials; use username and password with ${ENV} references');
  return url;
}

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

export function parseSize(value: unknown, key: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return Math.floor(value);
  const m = typeof value === 'string' ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(value) : null;
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined || Number(m[1]) <= 0) {
    throw new ConfigError(key, `"${String(value)}" is not a size such as 100GiB, 500MB or a byte count`);
  }
  return Math.floor(Number(m[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

export function parseDuration(value: unknown, key: string): number {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value * 1000;
  const m = typeof value === 'string' ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$/.exec(value) : null;
  if (!m) throw new ConfigError(key, `"${String(value)}" is not a duration such as 500ms, 30s, 5m or 1h`);
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

function parseCount(value: unknown, key: string): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 10) return value;
  throw new ConfigError(key, `"${String(value)}" is not a whole number from 0 to 10`);
}

function parseBoolean(value: unknown, key: string): boolean {
  if (typeof value === 'boolean') return value;
  if (value === 'true' || value === 'false') return value === 'true';
  throw new ConfigError(key, `"${String(value)}" is not true or false`);
}

function optionalString(value: unknown, key: string): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number') return String(value);
  if (typeof value !== 'string') throw new ConfigError(key, 'must be a string');
  return value;
}

/** A misspelt key would otherwise be silently ignored and its default used. */
function onlyKeys(doc: Record<string, unknown>, prefix: string, known: readonly string[], hint = ''): void {
  for (const k of Object.keys(doc)) {
    if (!known.includes(k)) throw new ConfigError(`${prefix}${k}`, `is not a setting (one of ${known.join(', ')})${hint}`);
  }
}

function objectAt(doc: Record<string, unknown>, key: string): Record<string, unknown> {
  const v = doc[key];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(key, 'must be a mapping');
  return v as Record<string, unknown>;
}

function arrayAt(doc: Record<string, unknown>, key: string): unknown[] {
  const v = doc[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError(key, 'must be a list');
  return v;
}

function arrayOfStrings(value: unknown, key: string): string[] {
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new ConfigError(key, 'must be a list of strings');
  return value;
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** cache.s3: the bucket is required; region falls back to AWS_REGION, AWS_DEFAULT_REGION, then us-east-1. */
function s3FromDoc(value: unknown, env: NodeJS.ProcessEnv): S3CacheConfig | undefined {
  if (value === undefined || value === null || value === false) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw new ConfigError('cache.s3', 'must be a mapping with at least bucket');
  const s = value as Record<string, unknown>;
  onlyKeys(s, 'cache.s3.', ['bucket', 'prefix', 'region', 'endpoint', 'forcePathStyle', 'localTier', 'redirect', 'redirectTtl'], '; credentials come from the AWS credential chain');
  const bucket = optionalString(s.bucket, 'cache.s3.bucket') ?? '';
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    throw new ConfigError('cache.s3.bucket', bucket ? `"${bucket}" is not an S3 bucket name (3-63 lowercase letters, digits, dots, dashes)` : 'is required');
  }
  const rawPrefix = (optionalString(s.prefix, 'cache.s3.prefix') ?? '').replace(/^\/+/, '');
  if (!/^[A-Za-z0-9!_.*'()/-]*$/.test(rawPrefix) || rawPrefix.split('/').some((seg) => seg === '.' || seg === '..')) {
    throw new ConfigError('cache.s3.prefix', `"${rawPrefix}" may hold only letters, digits, / and !_.*'()- (and no . or .. segments)`);
  }
  const prefix = rawPrefix === '' || rawPrefix.endsWith('/') ? rawPrefix : `${rawPrefix}/`;
  const region = optionalString(s.region, 'cache.s3.region') || env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1';
  const endpoint = optionalString(s.endpoint, 'cache.s3.endpoint') || undefined;
  const redirectTtlMs = parseDuration(s.redirectTtl ?? '5m', 'cache.s3.redirectTtl');
  if (redirectTtlMs < 1000 || redirectTtlMs > 7 * 86_400_000) throw new ConfigError('cache.s3.redirectTtl', 'must be from 1s to 7d (the longest a pre-signed URL may live)');
  return {
    bucket,
    prefix,
    region,
    endpoint: endpoint === undefined ? undefined : parseUrl(endpoint, 'cache.s3.endpoint').origin,
    forcePathStyle: parseBoolean(s.forcePathStyle ?? false, 'cache.s3.forcePathStyle'),
    localTier: parseBoolean(s.localTier ?? false, 'cache.s3.localTier'),
    redirect: parseBoolean(s.redirect ?? false, 'cache.s3.redirect'),
    redirectTtlMs,
  };
}
