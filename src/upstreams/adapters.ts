// Per-kind upstream settings: where each kind's credentials come from and what a refusal means.
// Hosts and token realms need no special casing: every kind speaks the distribution API and
// names its own token realm in its challenge (auth.docker.io, ghcr.io/token, public.ecr.aws/token,
// <host>/v2/token); Docker Hub's library/ rule lives in the router.
import type { UpstreamConfig } from '../config.js';
import { anonymous, staticCredentials, type CredentialProvider } from './auth/credentials.js';
import { ecrCredentials } from './auth/ecr-credentials.js';
import { garCredentials } from './auth/gar-credentials.js';

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

export function adapterFor(u: UpstreamConfig, deps: AdapterDeps = {}): Adapter {
  switch (u.type) {
    case 'dockerhub':
      return dockerHubAdapter(u);
    case 'ecr':
      return ecrAdapter(u, deps);
    case 'gar':
      return garAdapter(u, deps);
    case 'ghcr':
      return ghcrAdapter(u);
    default:
      return { credentials: basicOrAnonymous(u, 'token'), deniedHint: undefined };
  }
}

/** Docker Hub: anonymous, or a username with an access token (dckr_pat_…) as the password. */
export function dockerHubAdapter(u: UpstreamConfig): Adapter {
  const credentials = basicOrAnonymous(u, undefined);
  return {
    credentials,
    deniedHint:
      credentials === anonymous
        ? 'anonymous access only reaches public images; set username and password (a Docker Hub access token with read access) for private ones'
        : 'check the Docker Hub username and that the access token is valid and has read access to the repository',
  };
}

/** ghcr.io: anonymous for public packages, or a token (any username) with read:packages. */
export function ghcrAdapter(u: UpstreamConfig): Adapter {
  const credentials = basicOrAnonymous(u, 'token');
  return {
    credentials,
    deniedHint:
      credentials === anonymous
        ? 'anonymous access only reaches public packages; set password to a GitHub token with read:packages for private ones'
        : 'the GitHub token needs read:packages (a classic personal access token or an Actions GITHUB_TOKEN with access to the package), and SSO authorisation for organisations that enforce SSO',
  };
}

/** ECR (private): GetAuthorizationToken → Basic AWS:<password>. ECR Public: anonymous or the same. */
export function ecrAdapter(u: UpstreamConfig, deps: AdapterDeps): Adapter {
  const aws = u.aws;
  const host = parseEcrHost(new URL(u.url).hostname);
  const isPublic = aws?.public ?? false;
  const keys = aws?.accessKeyId && aws.secretAccessKey ? { accessKeyId: aws.accessKeyId, secretAccessKey: aws.secretAccessKey, sessionToken: aws.sessionToken } : undefined;
  if (isPublic && keys === undefined) {
    return { credentials: anonymous, deniedHint: 'ECR Public serves public repositories only; anonymous pulls are rate limited more tightly than authenticated ones' };
  }
  const credentials = ecrCredentials({
    upstreamName: u.name,
    public: isPublic,
    region: aws?.region ?? (isPublic ? 'us-east-1' : host?.region),
    endpoint: aws?.endpoint,
    keys,
    ...(deps.now ? { now: deps.now } : {}),
    ...(deps.timeoutMs ? { timeoutMs: deps.timeoutMs } : {}),
  });
  return {
    credentials,
    deniedHint: isPublic
      ? 'the AWS credentials need ecr-public:GetAuthorizationToken and sts:GetServiceBearerToken'
      : 'the AWS credentials need ecr:GetAuthorizationToken, and ecr:BatchGetImage, ecr:GetDownloadUrlForLayer and ecr:BatchCheckLayerAvailability on the repository',
  };
}

/** GAR / GCR: a service-account key minted into access tokens for user oauth2accesstoken. */
export function garAdapter(u: UpstreamConfig, deps: AdapterDeps): Adapter {
  const gcr = [new URL(u.url).hostname, u.name.replace(/:\d+$/, '')].some((h) => h === 'gcr.io' || h.endsWith('.gcr.io'));
  const roles = gcr
    ? 'the service account needs "Artifact Registry Reader" (roles/artifactregistry.reader) on the gcr.io repository, or, where Container Registry still serves it, "Storage Object Viewer" (roles/storage.objectViewer) on the artifacts bucket'
    : 'the service account needs the "Artifact Registry Reader" role (roles/artifactregistry.reader) on the repository or its project';
  if (u.serviceAccountJson !== undefined) {
    const credentials = garCredentials({
      upstreamName: u.name,
      serviceAccountJson: u.serviceAccountJson,
      ...(deps.now ? { now: deps.now } : {}),
      ...(deps.timeoutMs ? { timeoutMs: deps.timeoutMs } : {}),
    });
    return { credentials, deniedHint: roles };
  }
  const credentials = basicOrAnonymous(u, undefined);
  return {
    credentials,
    deniedHint: credentials === anonymous ? 'anonymous access only reaches public repositories; set serviceAccountJson for private ones' : roles,
  };
}

function basicOrAnonymous(u: UpstreamConfig, defaultUsername: string | undefined): CredentialProvider {
  if (u.password === undefined) return anonymous;
  const username = u.username ?? defaultUsername;
  return username === undefined ? anonymous : staticCredentials(username, u.password);
}

export interface EcrHost {
  account: string;
  region: string;
  fips: boolean;
  dualStack: boolean;
}

const ECR_HOST =
  /^(\d{12})\.dkr([.-])ecr(-fips)?\.([a-z0-9-]+)\.(amazonaws\.com(?:\.cn)?|amazonaws\.eu|on\.aws|on\.amazonwebservices\.com\.cn|sc2s\.sgov\.gov|c2s\.ic\.gov|cloud\.adc-e\.uk|csp\.hci\.ic\.gov)$/;

/** `<account>.dkr.ecr[-fips].<region>.<partition suffix>` (also the dual-stack `dkr-ecr`). */
export function parseEcrHost(hostname: string): EcrHost | undefined {
  const m = ECR_HOST.exec(hostname.toLowerCase());
  if (!m) return undefined;
  return { account: m[1]!, region: m[4]!, fips: m[3] !== undefined, dualStack: m[2] === '-' };
}
