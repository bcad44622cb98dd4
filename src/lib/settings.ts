// The building blocks of the config schema (zod): each setting kind parses the value a user
// wrote and, when it cannot, says what it expected; a failed parse becomes one ConfigError naming
// the key path ("upstreams[1].url") and the problem.
import { z } from 'zod';

export class ConfigError extends Error {
  constructor(
    readonly key: string,
    problem: string,
  ) {
    super(`${key}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** What a parser returns instead of a value: the problem, without the key (the schema knows it). */
export class Problem {
  constructor(readonly text: string) {}
}

/** A setting parsed by a plain function; its Problem becomes a zod issue at the setting's path. */
export function setting<T>(parse: (value: unknown) => T | Problem) {
  return z.unknown().transform(reporting(parse));
}

/** A setting parsed further once `schema` has parsed it. */
export function andThen<In, T>(schema: z.ZodType<In>, parse: (value: In) => T | Problem) {
  return schema.transform(reporting(parse));
}

function reporting<In, T>(parse: (value: In) => T | Problem) {
  return (value: In, ctx: z.RefinementCtx): T => {
    const parsed = parse(value);
    if (!(parsed instanceof Problem)) return parsed;
    ctx.addIssue({ code: 'custom', message: parsed.text });
    return z.NEVER;
  };
}

/**
 * A mapping of settings; any other key is an error (a misspelt key would otherwise be silently
 * ignored and its default used).
 */
export function mapping<Shape extends z.ZodRawShape>(shape: Shape, notAMapping = 'must be a mapping', hint = '') {
  return z.strictObject(shape, {
    error: (issue) => {
      if (issue.code === 'unrecognized_keys') return `is not a setting (one of ${Object.keys(shape).join(', ')})${hint}`;
      if (issue.code === 'invalid_type') return notAMapping;
      return undefined;
    },
  });
}

export function list<Item extends z.ZodType>(item: Item, notAList = 'must be a list') {
  return z.array(item, { error: notAList });
}

/** Runs a schema; the first problem is thrown as a ConfigError whose key is `prefix` + the path. */
export function parseSettings<S extends z.ZodType>(schema: S, value: unknown, keyOf: (path: string) => string = (p) => p): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  // an unknown key is reported at the key itself, not at the mapping that holds it
  const path = issue.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue.path;
  throw new ConfigError(keyOf(keyPath(path)), issue.message);
}

function keyPath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/** A string; a YAML number (a port, a bare name) is taken as its text. */
export const text = setting((v) => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : new Problem('must be a string')));

/** A string where "" (an unset ${ENV} reference) means absent. */
export const optionalText = text.transform((v) => v || undefined).optional();

export const bool = setting((v) => {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  return new Problem(`"${String(v)}" is not true or false`);
});

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40,
};

/** Bytes from "100GiB", "500MB", "1.5KiB" or a byte count. */
export function sizeBytes(value: unknown): number | Problem {
  if (typeof value === 'number' && Number.isFinite(value) && value > 0) return Math.floor(value);
  const m = typeof value === 'string' ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(value) : null;
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined || Number(m[1]) <= 0) return new Problem(`"${String(value)}" is not a size such as 100GiB, 500MB or a byte count`);
  return Math.floor(Number(m[1]) * unit);
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Milliseconds from "500ms", "30s", "5m", "1h", "1d" or a number of seconds. */
export function durationMs(value: unknown): number | Problem {
  if (typeof value === 'number' && Number.isFinite(value) && value >= 0) return value * 1000;
  const m = typeof value === 'string' ? /^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*$/.exec(value) : null;
  if (!m) return new Problem(`"${String(value)}" is not a duration such as 500ms, 30s, 5m or 1h`);
  return Number(m[1]) * DURATION_UNITS[m[2]!]!;
}

export const size = setting(sizeBytes);
export const duration = setting(durationMs);

/** An http or https URL; a bare host means https. Credentials belong in their own settings. */
export function httpUrl(value: unknown): URL | Problem {
  if (typeof value !== 'string' || value === '') return new Problem('is required (an http or https URL)');
  const withScheme = /^[a-z]+:\/\//i.test(value) ? value : `https://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    return new Problem(`"${value}" is not a URL`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return new Problem(`"${value}" must be http or https`);
  if (url.username || url.password) return new Problem('must not embed credentials; use username and password with ${ENV} references');
  return url;
}

/** A registry host name as clients write it in image references: the name of an upstream or an alias. */
export function hostName(value: unknown): string | Problem {
  const name = typeof value === 'number' ? String(value) : value;
  if (typeof name !== 'string') return new Problem('must be a string');
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]+)?$/.test(name)) {
    return new Problem(`"${name}" is not a registry host name (letters, digits, dots, dashes, optional :port)`);
  }
  return name;
}
