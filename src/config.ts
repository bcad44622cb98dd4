// Typed configuration, loaded once: a YAML or JSON file, ${ENV} references expanded, command-line
// flags on top, validated by one schema (its keys, defaults and types; any other key is an error)
// with one clear message per problem, then frozen and handed down. What an upstream entry means
// depends on its registry kind, so the kinds resolve those (src/upstreams/kinds).
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { andThen, bool, ConfigError, duration, durationMs, httpUrl, list, mapping, optionalText, parseSettings, Problem, setting, size, sizeBytes, text } from './lib/settings.js';
import { DEFAULT_UPSTREAM_ENTRY, resolveUpstream, upstreamEntrySchema, type UpstreamConfig } from './upstreams/kinds/index.js';
import { readTls, TlsFileError, type TlsFiles } from './proxy/tls.js';

export { ConfigError } from './lib/settings.js';
export { UPSTREAM_TYPES, type AwsUpstreamConfig, type UpstreamConfig, type UpstreamType } from './upstreams/kinds/index.js';

export interface Flags {
  config?: string | undefined;
  listen?: string | undefined;
  cacheDir?: string | undefined;
  upstream?: string[] | undefined;
  maxSize?: string | undefined;
  logLevel?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  tlsClientCa?: string | undefined;
}

/** The flags that set one setting each; a problem with the value names the flag. */
const FLAG_SETTINGS = [
  ['listen', '--listen', ['listen']],
  ['cacheDir', '--cache-dir', ['cache', 'dir']],
  ['maxSize', '--max-size', ['cache', 'maxSize']],
  ['logLevel', '--log-level', ['logLevel']],
  ['tlsCert', '--tls-cert', ['tls', 'cert']],
  ['tlsKey', '--tls-key', ['tls', 'key']],
  ['tlsClientCa', '--tls-client-ca', ['tls', 'clientCa']],
] as const;

const listen = andThen(text, (v) => {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]*)):([0-9]{1,5})$/.exec(v) ?? /^()()([0-9]{1,5})$/.exec(v);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) return new Problem(`"${v}" is not HOST:PORT`);
  return { host: m[1] || m[2] || '0.0.0.0', port };
});

const retries = setting((v) => (typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 10 ? v : new Problem(`"${String(v)}" is not a whole number from 0 to 10`)));

const bucketName = andThen(text, (bucket) => {
  if (/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) return bucket;
  return new Problem(bucket ? `"${bucket}" is not an S3 bucket name (3-63 lowercase letters, digits, dots, dashes)` : 'is required');
});

/** "" or ending in "/"; a leading "/" is dropped */
const keyPrefix = andThen(text, (v) => {
  const p = v.replace(/^\/+/, '');
  if (!/^[A-Za-z0-9!_.*'()/-]*$/.test(p) || p.split('/').some((seg) => seg === '.' || seg === '..')) {
    return new Problem(`"${p}" may hold only letters, digits, / and !_.*'()- (and no . or .. segments)`);
  }
  return p === '' || p.endsWith('/') ? p : `${p}/`;
});

/** "" (an unset ${ENV} reference) is absent */
const origin = andThen(text, (v) => {
  if (v === '') return undefined;
  const url = httpUrl(v);
  return url instanceof Problem ? url : url.origin;
}).optional();

const redirectTtl = andThen(duration, (ms) => (ms >= 1000 && ms <= 7 * 86_400_000 ? ms : new Problem('must be from 1s to 7d (the longest a pre-signed URL may live)')));

/** cache.s3: blobs, tags and manifests in an S3 bucket shared by replicas */
const s3Schema = mapping(
  {
    bucket: bucketName.prefault(''),
    prefix: keyPrefix.prefault(''),
    /** default: AWS_REGION, AWS_DEFAULT_REGION, then us-east-1 */
    region: optionalText,
    /** an S3-compatible endpoint; absent: AWS's own for the region */
    endpoint: origin,
    forcePathStyle: bool.prefault(false),
    /** keep the filesystem cache (cache.dir, bounded by cache.maxSize) in front of the bucket */
    localTier: bool.prefault(false),
    /** answer GETs of cached blobs with a 307 to a pre-signed bucket URL */
    redirect: bool.prefault(false),
    redirectTtl: redirectTtl.prefault('5m'),
  },
  'must be a mapping with at least bucket',
  '; credentials come from the AWS credential chain',
).transform(({ redirectTtl, endpoint, ...s3 }) => ({ ...s3, endpoint, redirectTtlMs: redirectTtl }));

/** at least a minute: shorter would evict an image's layers between its manifest and their pulls */
const maxAge = andThen(duration, (ms) => (ms >= 60_000 ? ms : new Problem('must be at least 1m (or absent: no age bound)')));

const cacheSchema = mapping({
  /** default: $XDG_CACHE_HOME/pullthrough */
  dir: text.optional(),
  maxSize: size.prefault('50GiB'),
  /** evict blobs, manifests and tag records nobody read for this long (the filesystem cache and the local tier); absent: no age bound */
  maxAge: maxAge.optional(),
  /** how long a tag is served without asking the upstream again */
  tagTtl: duration.prefault('5m'),
  /** deadline for revalidating a cached tag; past it the cached manifest is served */
  revalidateTimeout: duration.prefault('3s'),
  /** fill an uncached blob in the background when it is first asked for by Range (with unverifiedRanges) */
  fillOnRange: bool.prefault(true),
  /** answer a Range with bytes not yet verified against the blob's digest, for speed */
  unverifiedRanges: bool.prefault(false),
  /** false or absent: the filesystem cache */
  s3: z.preprocess((v) => (v === false ? undefined : v), s3Schema.optional()),
}).transform(({ tagTtl, revalidateTimeout, maxAge, ...cache }) => ({ ...cache, maxAgeMs: maxAge, tagTtlMs: tagTtl, revalidateTimeoutMs: revalidateTimeout }));

const timeoutsSchema = mapping({
  connect: duration.prefault('10s'),
  headers: duration.prefault('30s'),
  body: duration.prefault('60s'),
}).transform((t) => ({ connectMs: t.connect, headersMs: t.headers, bodyMs: t.body }));

/**
 * eStargz layers: served lazily by range (sparse cache), with the prefetch range fetched on first
 * touch; with fillAfterRange, the first ranged read also fills the rest in the background
 */
const estargzSchema = mapping({
  lazy: bool.prefault(true),
  prefetch: bool.prefault(true),
  fillAfterRange: bool.prefault(false),
  /** the sparse copies of lazily read layers; default: a tenth of cache.maxSize */
  maxSparseSize: size.optional(),
  /** the memory the open layers' indexes may take together (estimated) */
  maxIndexMemory: size.prefault('256MiB'),
  /** the largest TOC served lazily */
  maxTocSize: size.prefault('16MiB'),
});

/** GET /metrics */
const metricsSchema = mapping({
  /** label cache requests with the repository name: one series per repository pulled (off: bounded) */
  repositoryLabels: bool.prefault(false),
});

/** A user name as htpasswd files and Basic credentials carry it ("*": any user of the file). */
const userName = andThen(text, (v) => {
  if (v === '' || v.includes(':') || /[\x00-\x1f\x7f]/.test(v)) return new Problem(`"${v.slice(0, 100)}" is not a user name (not empty, no ":" or control characters)`);
  return v;
});

/** Globs on upstream-side repository names (see access/rules.ts): `*` within a segment, `**` across. */
const repositoryGlob = andThen(text, (v) => {
  if (!/^[a-z0-9._/*-]+$/.test(v)) return new Problem(`"${v.slice(0, 100)}" is not a repository glob (lowercase letters, digits, . _ - and /, with * or **)`);
  if (v.includes('***')) return new Problem(`"${v.slice(0, 100)}": * matches within one path segment and ** across them; *** means nothing more`);
  return v;
});

/** One of auth.rules: users may pull from these upstreams (and, with repositories, only those). */
const ruleSchema = mapping(
  {
    users: list(userName, 'must be a list of user names').min(1, 'must name at least one user'),
    upstreams: list(text, 'must be a list of upstream names').min(1, 'must name at least one upstream'),
    repositories: list(repositoryGlob, 'must be a list of repository globs').optional(),
  },
  'must be a mapping with users and upstreams',
);

/** auth: client authentication (HTTP Basic, an htpasswd file) and who may pull what */
const authSchema = mapping(
  {
    /** bcrypt entries (htpasswd -B), reloaded when the file changes */
    htpasswd: optionalText,
    /** upstreams anyone may pull from without credentials */
    anonymous: list(text, 'must be a list of upstream names').prefault([]),
    rules: list(ruleSchema).prefault([]),
  },
  'must be a mapping (htpasswd, anonymous, rules)',
);

/** A file's path, resolved against the working directory. */
const pemFile = (what: string, flag: string) =>
  andThen(text.optional(), (v) => (v ? resolve(v) : new Problem(`is required: the PEM file of ${what} (${flag} FILE)`)));

/**
 * tls: HTTPS instead of plain HTTP, with this certificate (its chain may follow it) and key; with
 * clientCa, clients must present a certificate that CA signed. The files are reloaded when they
 * change (src/proxy/tls.ts); they are read here too, so that a bad one stops the start.
 */
const tlsSchema = mapping(
  {
    cert: pemFile('the server certificate', '--tls-cert'),
    key: pemFile("the certificate's private key", '--tls-key'),
    // "" (an unset ${ENV}) is not taken for absent here, as elsewhere: it would let in every client
    clientCa: andThen(text, (v) => (v ? resolve(v) : new Problem('is empty: the PEM file of the CA that signs client certificates (leave the key out to take clients without one)'))).optional(),
  },
  'must be a mapping with cert and key (PEM files)',
);

const redisUrl = andThen(text, (v) => {
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    return new Problem(v ? `"${v.slice(0, 100)}" is not a URL (redis://host:6379)` : 'is required (redis://host:6379)');
  }
  return url.protocol === 'redis:' || url.protocol === 'rediss:' ? v : new Problem(`"${url.protocol}" must be redis: or rediss:`);
});

const fleetAddress = andThen(text, (v) => {
  const url = httpUrl(v);
  if (url instanceof Problem) return url;
  return url.pathname === '/' && !url.search ? url.origin : new Problem(`"${v.slice(0, 100)}" must be only a scheme, host and port (http://host:port)`);
});

/** The shared secret replicas send each other: long enough that guessing it is no way in. */
const fleetSecret = andThen(text, (v) => (v.length >= 16 ? v : new Problem(v ? 'must be at least 16 characters' : 'is required: the secret replicas present to each other (${FLEET_SECRET})')));

/** A lease must outlive a few renewals (one every third of it), and a dead holder must not stall the fleet for long. */
const leaseTtl = andThen(duration, (ms) => (ms >= 1000 && ms <= 60_000 ? ms : new Problem('must be from 1s to 60s')));

/**
 * fleet: replicas sharing one cache.s3 bucket coordinate through Redis (src/fleet): one upstream
 * fetch per blob, per manifest by digest and per tag revalidation across the fleet
 */
const fleetSchema = mapping(
  {
    redis: redisUrl.prefault(''),
    /** how the other replicas reach this one; default: the --listen address (this host's name for 0.0.0.0) */
    advertise: fleetAddress.optional(),
    secret: fleetSecret.prefault(''),
    /** how long a lease outlives a holder that stopped renewing it (one that died) */
    leaseTtl: leaseTtl.prefault('5s'),
  },
  'must be a mapping with redis and secret',
).transform(({ leaseTtl, ...fleet }) => ({ ...fleet, leaseTtlMs: leaseTtl }));

/** The config file: every setting, its type and its default. */
const configSchema = mapping({
  listen: listen.prefault('0.0.0.0:5000'),
  cache: cacheSchema.prefault({}),
  upstreams: list(upstreamEntrySchema).optional(),
  /** default: the first upstream */
  defaultUpstream: text.optional(),
  timeouts: timeoutsSchema.prefault({}),
  retries: retries.prefault(2),
  estargz: estargzSchema.prefault({}),
  metrics: metricsSchema.prefault({}),
  logLevel: text.prefault('info'),
  /** absent: anyone who reaches the port may pull anything */
  auth: authSchema.optional(),
  tls: tlsSchema.optional(),
  /** absent: this replica coordinates with nobody */
  fleet: fleetSchema.optional(),
});

export type Config = ReturnType<typeof loadConfig>;
export type S3CacheConfig = NonNullable<Config['cache']['s3']>;
export type FleetConfig = NonNullable<Config['fleet']>;

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'pullthrough');
}

/** Loads the config file (if any), applies flags and validates. Throws ConfigError. */
export function loadConfig(flags: Flags, env: NodeJS.ProcessEnv = process.env) {
  const file = flags.config ? readConfigFile(flags.config) : {};
  const keyOf = flagKeys(flags);
  const doc = parseSettings(configSchema, withFlags(expandEnv(file, env) as Record<string, unknown>, flags), keyOf);

  const upstreams = (doc.upstreams?.length ? doc.upstreams : [DEFAULT_UPSTREAM_ENTRY]).map((u, i) => resolveUpstream(u, keyOf(`upstreams[${i}]`), env));
  const names = new Set<string>();
  upstreams.forEach((u, i) => {
    for (const n of [u.name, ...u.aliases]) {
      if (names.has(n)) throw new ConfigError(`upstreams[${i}].name`, `"${n}" is used by two upstreams`);
      names.add(n);
    }
  });
  const defaultUpstream = doc.defaultUpstream ?? upstreams[0]!.name;
  if (!upstreams.some((u) => u.name === defaultUpstream)) {
    throw new ConfigError('defaultUpstream', `"${defaultUpstream}" is not the name of a configured upstream`);
  }

  const auth = doc.auth && resolveAuth(doc.auth, upstreams);
  if (doc.fleet && !doc.cache.s3) throw new ConfigError('fleet', 'needs cache.s3: the replicas of a fleet share one bucket');
  checkTlsFiles(doc.tls, keyOf);

  const { cache, estargz } = doc;
  const s3 = cache.s3 && { ...cache.s3, region: cache.s3.region || env.AWS_REGION || env.AWS_DEFAULT_REGION || 'us-east-1' };
  return deepFreeze({
    ...doc,
    cache: { ...cache, dir: resolve(cache.dir ?? defaultCacheDir(env)), s3 },
    upstreams,
    defaultUpstream,
    auth,
    estargz: { ...estargz, maxSparseSize: estargz.maxSparseSize ?? Math.max(1, Math.floor(cache.maxSize / 10)) },
  });
}

/** Reads the TLS files once, so that a missing, unreadable or mismatched one is a config error naming its key. */
function checkTlsFiles(tls: TlsFiles | undefined, keyOf: (key: string) => string): void {
  if (!tls) return;
  try {
    readTls(tls);
  } catch (e) {
    if (e instanceof TlsFileError) throw new ConfigError(keyOf(`tls.${e.file}`), e.message);
    throw e;
  }
}

/**
 * auth with its upstream names made canonical (an alias stands for its upstream) and the htpasswd
 * path absolute. Users are not checked: the htpasswd file may gain them later.
 */
function resolveAuth(auth: z.output<typeof authSchema>, upstreams: readonly UpstreamConfig[]) {
  const byName = new Map(upstreams.flatMap((u) => [u.name, ...u.aliases].map((n) => [n.toLowerCase(), u.name] as const)));
  const canonical = (name: string, key: string): string => {
    const found = byName.get(name.toLowerCase());
    if (found === undefined) throw new ConfigError(key, `"${name}" is not the name or an alias of a configured upstream (${upstreams.map((u) => u.name).join(', ')})`);
    return found;
  };
  if (auth.rules.length > 0 && auth.htpasswd === undefined) throw new ConfigError('auth.htpasswd', 'is required when auth.rules are given (the users they name are in it)');
  return {
    htpasswd: auth.htpasswd === undefined ? undefined : resolve(auth.htpasswd),
    anonymous: auth.anonymous.map((n, i) => canonical(n, `auth.anonymous[${i}]`)),
    rules: auth.rules.map((r, i) => ({ ...r, upstreams: r.upstreams.map((n, j) => canonical(n, `auth.rules[${i}].upstreams[${j}]`)) })),
  };
}

/**
 * The flags written into the document at their settings' places, so that the schema checks them
 * too. --upstream replaces the file's upstreams, and the first of them is the default.
 */
function withFlags(doc: Record<string, unknown>, flags: Flags): Record<string, unknown> {
  for (const [flag, , path] of FLAG_SETTINGS) {
    const value = flags[flag];
    if (value === undefined) continue;
    let at = doc;
    for (const k of path.slice(0, -1)) {
      at[k] ??= {};
      // a file's non-mapping here is reported by the schema
      if (typeof at[k] !== 'object' || Array.isArray(at[k])) break;
      at = at[k] as Record<string, unknown>;
    }
    at[path[path.length - 1]!] = value;
  }
  if (flags.upstream?.length) {
    doc.upstreams = flags.upstream.map((spec, i) => upstreamFromFlag(spec, i));
    delete doc.defaultUpstream;
  }
  return doc;
}

/** What `--upstream` may set after the URL; credentials never (a command line is visible to every user). */
const FLAG_OPTIONS = ['type'] as const;

/**
 * `[NAME=]URL[,type=TYPE]`. Options follow the first comma: an upstream URL counts only for its
 * origin (scheme, host, port), where no comma can be, so none is cut short. A "=" after a "/" is
 * part of the URL.
 */
function upstreamFromFlag(spec: string, i: number): Record<string, unknown> {
  const [head = '', ...options] = spec.split(',');
  const eq = head.indexOf('=');
  const hasName = eq > 0 && !head.slice(0, eq).includes('/');
  const entry: Record<string, unknown> = hasName ? { name: head.slice(0, eq), url: head.slice(eq + 1) } : { url: head };
  for (const option of options) {
    // only the option's key is echoed, never a value (someone may try ,password=…) nor the spec
    const [key = '', value] = option.split(/=(.*)/s);
    if (!(FLAG_OPTIONS as readonly string[]).includes(key)) {
      throw new ConfigError(`--upstream #${i + 1}`, `"${key.slice(0, 40)}" is not an option (${FLAG_OPTIONS.map((o) => `${o}=TYPE`).join(', ')})`);
    }
    if (value === undefined) throw new ConfigError(`--upstream #${i + 1}`, `${key} needs a value (${key}=TYPE)`);
    if (key in entry) throw new ConfigError(`--upstream #${i + 1}`, `${key} is given twice`);
    entry[key] = value;
  }
  return entry;
}

/** An upstream as `--upstream` writes it, with its type: the ready log line names upstreams so. */
export function upstreamSpec(u: Pick<UpstreamConfig, 'name' | 'url' | 'type'>): string {
  return `${u.name}=${u.url},type=${u.type}`;
}

/** The key a problem is reported under: the flag's name when a flag gave the value. */
function flagKeys(flags: Flags): (key: string) => string {
  return (key) => {
    for (const [flag, name, path] of FLAG_SETTINGS) {
      if (flags[flag] !== undefined && key === path.join('.')) return name;
    }
    if (flags.upstream?.length) return key.replace(/^upstreams\[(\d+)\]/, (_m, i: string) => `--upstream #${Number(i) + 1}`);
    return key;
  };
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

/**
 * Replaces ${VAR} in every string; an unset variable becomes empty (an absent credential). A key
 * set to null (`cache:` with nothing under it) is absent.
 */
function expandEnv(value: unknown, env: NodeJS.ProcessEnv): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? '');
  }
  if (Array.isArray(value)) return value.map((v) => expandEnv(v, env));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).flatMap(([k, v]) => (v === null ? [] : [[k, expandEnv(v, env)]])));
  }
  return value;
}

/** Throws ConfigError naming `key`. */
export function parseSize(value: unknown, key: string): number {
  return orThrow(sizeBytes(value), key);
}

/** Throws ConfigError naming `key`. */
export function parseDuration(value: unknown, key: string): number {
  return orThrow(durationMs(value), key);
}

function orThrow<T>(parsed: T | Problem, key: string): T {
  if (parsed instanceof Problem) throw new ConfigError(key, parsed.text);
  return parsed;
}

type DeepReadonly<T> = T extends readonly (infer U)[] ? readonly DeepReadonly<U>[] : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

function deepFreeze<T>(value: T): DeepReadonly<T> {
  if (value && typeof value === 'object') {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value as DeepReadonly<T>;
}
