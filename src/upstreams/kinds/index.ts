// The registry kinds, and what is decided by asking them: an upstream entry's kind (given, or
// inferred from its URL's host), its URL, names and kind-specific settings, and its adapter.
import { z } from 'zod';
import { ConfigError, hostName, httpUrl, mapping, optionalText, Problem, setting, text } from '../../lib/settings.js';
import { dockerHub } from './dockerhub.js';
import { ecr } from './ecr.js';
import { gar } from './gar.js';
import { ghcr } from './ghcr.js';
import { UPSTREAM_TYPES, type Adapter, type AdapterDeps, type Kind, type UpstreamConfig, type UpstreamEntry, type UpstreamType } from './kind.js';
import { registry } from './registry.js';

export { UPSTREAM_TYPES, type Adapter, type AdapterDeps, type AwsUpstreamConfig, type Kind, type UpstreamConfig, type UpstreamType } from './kind.js';

/** In the order a URL's host is matched against them. */
const KINDS: readonly Kind[] = [dockerHub, ecr, gar, ghcr, registry];

export function kindOf(type: UpstreamType): Kind {
  return KINDS.find((k) => k.type === type)!;
}

/**
 * The kind of an entry without a type: the one whose host the URL names; else the one the name
 * claims (docker.io at an internal Hub mirror's URL); else any registry. A URL of another known
 * registry (an ECR pull-through cache named docker.io) keeps that registry's kind, since its
 * credentials are that registry's.
 */
function inferKind(url: URL, name: string | undefined): Kind {
  return KINDS.find((k) => k.ownsHost(url.hostname)) ?? (name === undefined ? undefined : KINDS.find((k) => k.ownsName(name))) ?? registry;
}

const clientCredentials = setting((v) => (v === 'passthrough' ? v : new Problem('must be "passthrough" (the client\'s own credentials are the upstream\'s), or absent')));

const stringList = setting((v) => (Array.isArray(v) && v.every((s) => typeof s === 'string') ? (v as string[]) : new Problem('must be a list of strings')));

/** each alias is a host name, reported at aliases[i] */
const aliases = stringList.transform((names, ctx) => {
  names.forEach((n, i) => {
    const name = hostName(n);
    if (name instanceof Problem) ctx.addIssue({ code: 'custom', message: name.text, path: [i] });
  });
  return names;
});

/** An upstream entry's settings: those every kind takes, then each kind's own. */
export const upstreamEntrySchema = mapping(
  {
    name: setting(hostName).optional(),
    /** default: the kind's API URL (Docker Hub, ghcr) */
    url: z.unknown().optional(),
    /** default: inferred from the URL's host */
    type: text.optional(),
    aliases: aliases.optional(),
    username: optionalText,
    password: optionalText,
    /** "passthrough": the client's own credentials instead of configured ones */
    clientCredentials: clientCredentials.optional(),
    ...(Object.assign({}, ...KINDS.map((k) => k.settings)) as z.ZodRawShape),
  },
  'must be a mapping with at least url',
);

/** The entry used when none is configured: Docker Hub. */
export const DEFAULT_UPSTREAM_ENTRY: UpstreamEntry = { type: dockerHub.type };

/** Resolves a parsed entry with its kind's rules; throws ConfigError naming `${key}.<setting>`. */
export function resolveUpstream(entry: UpstreamEntry, key: string, env: NodeJS.ProcessEnv): UpstreamConfig {
  const givenType = entry.type as string | undefined;
  const givenKind = KINDS.find((k) => k.type === givenType);
  const url = httpUrl(entry.url ?? givenKind?.defaultUrl);
  if (url instanceof Problem) throw new ConfigError(`${key}.url`, url.text);
  if (givenType !== undefined && givenKind === undefined) {
    throw new ConfigError(`${key}.type`, `"${givenType}" is not one of ${UPSTREAM_TYPES.join(', ')}`);
  }
  const kind = givenKind ?? inferKind(url, entry.name as string | undefined);
  const apiUrl = kind.apiUrl(url);
  const name = (entry.name as string | undefined) ?? kind.defaultName(apiUrl);
  const aliases = (entry.aliases as string[] | undefined) ?? kind.defaultAliases(name);
  const { username, password } = entry;
  const passthrough = entry.clientCredentials === 'passthrough';
  const passthroughTakesNone = () =>
    new ConfigError(`${key}.clientCredentials`, 'is passthrough: each client\'s own credentials are used, so the upstream takes none of its own (remove username, password, awsAccessKeyId or serviceAccountJson)');
  if (passthrough && (username !== undefined || password !== undefined)) throw passthroughTakesNone();
  if ((username === undefined) !== (password === undefined) && !kind.passwordAlone) {
    throw new ConfigError(`${key}.${username ? 'password' : 'username'}`, 'is empty while the other credential is set');
  }
  for (const other of KINDS) {
    if (other === kind) continue;
    for (const k of Object.keys(other.settings)) {
      if (entry[k] !== undefined) throw new ConfigError(`${key}.${k}`, `is only for upstreams of type ${other.type}`);
    }
  }
  const settings = kind.resolveSettings(entry, apiUrl, key);
  if (passthrough && (settings.serviceAccountJson !== undefined || settings.aws?.accessKeyId !== undefined)) throw passthroughTakesNone();
  // the environment's credentials are for upstreams that use configured ones
  const credentials = password === undefined && !passthrough ? kind.envCredentials(env) : undefined;
  return { name, url: apiUrl.origin, type: kind.type, aliases, username, password, ...(passthrough ? { clientCredentials: 'passthrough' as const } : {}), ...credentials, ...settings };
}

export function adapterFor(u: UpstreamConfig, deps: AdapterDeps = {}): Adapter {
  return kindOf(u.type).adapter(u, deps);
}
