// What a registry kind (Docker Hub, ECR, GAR/GCR, ghcr, any other registry) knows about itself:
// which hosts are its own, the names it goes by, its repository-name rules, the settings only it
// takes, and how its adapter (credentials and the hint for a refusal) is made. Every kind speaks
// the same distribution API and names its own token realm in its challenge, so hosts and realms
// need no special casing beyond this.
import type { z } from 'zod';
import { anonymous, staticCredentials, type CredentialProvider } from '../auth/credentials.js';

export const UPSTREAM_TYPES = ['registry', 'dockerhub', 'ecr', 'gar', 'ghcr'] as const;
export type UpstreamType = (typeof UPSTREAM_TYPES)[number];

/** A configured upstream, as the config hands it to the upstreams and the router. */
export interface UpstreamConfig {
  /** the path prefix and ?ns= value that route here */
  readonly name: string;
  readonly url: string;
  readonly type: UpstreamType;
  /** other names that route here (e.g. index.docker.io) */
  readonly aliases: readonly string[];
  readonly username: string | undefined;
  readonly password: string | undefined;
  /**
   * "passthrough": each client's own Basic credentials are this upstream's (none are configured),
   * and what the cache holds of it is served to a client once the upstream confirmed it may read it
   */
  readonly clientCredentials?: 'passthrough' | undefined;
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

/** An upstream entry as written, its values parsed by the schema, before its kind resolves it. */
export type UpstreamEntry = Readonly<Record<string, unknown>> & {
  readonly username?: string | undefined;
  readonly password?: string | undefined;
};

/** The settings only some kinds take, resolved into UpstreamConfig's aws or serviceAccountJson. */
export type KindSettings = Pick<UpstreamConfig, 'aws' | 'serviceAccountJson'>;

export interface Adapter {
  credentials: CredentialProvider;
  /** what the configured credential needs, appended to DENIED messages; never a secret */
  deniedHint: string | undefined;
}

export interface AdapterDeps {
  /** ms clock for minted credentials, injectable for tests */
  now?: (() => number) | undefined;
  /** per credential-minting call */
  timeoutMs?: number | undefined;
}

export interface Kind {
  readonly type: UpstreamType;
  /** the API URL when an entry gives only the type */
  readonly defaultUrl?: string;
  /** whether an upstream URL's host is this kind's (the type is inferred from the URL) */
  ownsHost(host: string): boolean;
  /**
   * Whether an upstream given this name is of this kind at a URL no kind owns: an internal mirror
   * named docker.io keeps Docker Hub's rules (library/, a host-like first component refused).
   */
  ownsName(name: string): boolean;
  /** the URL the API lives on, for a URL a user may write (docker.io is a name of Docker Hub) */
  apiUrl(url: URL): URL;
  /** the upstream's name when the entry gives none */
  defaultName(url: URL): string;
  /** the other names that route here when the entry gives no aliases */
  defaultAliases(name: string): string[];
  /** whether a password alone is a credential (a token, with a fixed username) */
  readonly passwordAlone: boolean;
  /** the schema of the settings only this kind takes (the entry's other keys are common to all) */
  readonly settings: z.ZodRawShape;
  /** this kind's settings resolved; throws ConfigError naming `${key}.<setting>` */
  resolveSettings(entry: UpstreamEntry, url: URL, key: string): KindSettings;
  /** credentials from the environment for an upstream configured without them */
  envCredentials(env: NodeJS.ProcessEnv): { username: string; password: string } | undefined;
  /** the upstream-side repository for a client's path (Docker Hub's implicit library/) */
  repositoryName(path: string): string;
  /**
   * As the default upstream, whether a bare name whose first component looks like a host is
   * refused: on Docker Hub "quay.io/x" is a registry the client meant, not a Hub namespace.
   */
  readonly refusesHostPrefix: boolean;
  adapter(u: UpstreamConfig, deps: AdapterDeps): Adapter;
}

/** What most kinds share; a kind module spreads it and overrides what differs. */
export const genericKind = {
  ownsName: (): boolean => false,
  apiUrl: (url: URL): URL => url,
  defaultName: (url: URL): string => url.host,
  defaultAliases: (): string[] => [],
  passwordAlone: false,
  settings: {},
  resolveSettings: (): KindSettings => ({}),
  envCredentials: (): undefined => undefined,
  repositoryName: (path: string): string => path,
  refusesHostPrefix: false,
} satisfies Partial<Kind>;

/** Static credentials when a password is configured (with a default username for tokens), else anonymous. */
export function basicOrAnonymous(u: UpstreamConfig, defaultUsername: string | undefined): CredentialProvider {
  if (u.password === undefined) return anonymous;
  const username = u.username ?? defaultUsername;
  return username === undefined ? anonymous : staticCredentials(username, u.password);
}
