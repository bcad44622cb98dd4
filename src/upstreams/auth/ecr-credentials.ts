// ECR credentials: GetAuthorizationToken through the AWS SDK, turned into the Basic credentials
// `AWS:<password>` the registry expects. The token lasts 12 h; it is reused for the first half of
// that (like amazon-ecr-credential-helper) and never written anywhere. ECR Public uses the
// ecr-public API (us-east-1) and its token goes to the public.ecr.aws token realm the same way.
import { createHash } from 'node:crypto';
import { RegistryError } from '../../oci/errors.js';
import type { Credentials } from './credentials.js';
import { MintedCredentials, scrub, type Minted } from './minted.js';

export interface AwsKeys {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string | undefined;
}

export interface EcrCredentialsOptions {
  upstreamName: string;
  /** ECR Public's API instead of ECR's */
  public?: boolean;
  /** API region; undefined lets the SDK resolve it (AWS_REGION, profile) */
  region?: string | undefined;
  /** API endpoint override (tests, VPC interface endpoints) */
  endpoint?: string | undefined;
  /** explicit keys; undefined means the SDK's default credential chain */
  keys?: AwsKeys | undefined;
  /** ms clock, injectable for tests */
  now?: () => number;
  /** per API call; default 30 s */
  timeoutMs?: number;
}

const DEFAULT_LIFETIME_MS = 12 * 3600_000;

export function ecrCredentials(o: EcrCredentialsOptions): MintedCredentials {
  const now = o.now ?? Date.now;
  const who = o.keys ? createHash('sha256').update(o.keys.accessKeyId).digest('hex').slice(0, 12) : 'default-chain';
  return new MintedCredentials({
    identity: `${o.public ? 'ecr-public' : 'ecr'}:${o.region ?? 'default-region'}:${who}`,
    now,
    refreshFraction: 0.5,
    mint: () => mintEcr(o, now),
  });
}

interface AuthorizationData {
  authorizationToken?: string | undefined;
  expiresAt?: Date | undefined;
}

async function mintEcr(o: EcrCredentialsOptions, now: () => number): Promise<Minted> {
  const abortSignal = AbortSignal.timeout(o.timeoutMs ?? 30_000);
  const config = {
    ...(o.region ? { region: o.region } : {}),
    ...(o.endpoint ? { endpoint: o.endpoint } : {}),
    ...(o.keys ? { credentials: { ...o.keys } } : {}),
    maxAttempts: 2,
  };
  let data: AuthorizationData | undefined;
  try {
    if (o.public) {
      const { ECRPUBLICClient, GetAuthorizationTokenCommand } = await import('@aws-sdk/client-ecr-public');
      const client = new ECRPUBLICClient({ ...config, region: o.region ?? 'us-east-1' });
      try {
        data = (await client.send(new GetAuthorizationTokenCommand({}), { abortSignal })).authorizationData;
      } finally {
        client.destroy();
      }
    } else {
      const { ECRClient, GetAuthorizationTokenCommand } = await import('@aws-sdk/client-ecr');
      const client = new ECRClient(config);
      try {
        data = (await client.send(new GetAuthorizationTokenCommand({}), { abortSignal })).authorizationData?.[0];
      } finally {
        client.destroy();
      }
    }
  } catch (e) {
    throw awsError(o, e);
  }
  const credentials = decodeAuthorizationToken(data?.authorizationToken);
  if (credentials === undefined) {
    throw new RegistryError('UNAVAILABLE', {
      message: `upstream "${o.upstreamName}": GetAuthorizationToken returned no usable authorization token`,
      detail: { upstream: o.upstreamName },
    });
  }
  const expiresAt = data?.expiresAt instanceof Date && !Number.isNaN(data.expiresAt.getTime()) ? data.expiresAt.getTime() : now() + DEFAULT_LIFETIME_MS;
  return { credentials, expiresAt };
}

/** `base64("AWS:<password>")` → { username: 'AWS', password }. */
export function decodeAuthorizationToken(token: string | undefined): Credentials | undefined {
  if (token === undefined || token === '') return undefined;
  const decoded = Buffer.from(token, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0 || colon === decoded.length - 1) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

const REFUSED = new Set([
  'AccessDeniedException',
  'UnrecognizedClientException',
  'InvalidSignatureException',
  'SignatureDoesNotMatch',
  'IncompleteSignature',
  'ExpiredTokenException',
  'InvalidClientTokenId',
  'MissingAuthenticationToken',
  'CredentialsProviderError',
]);

/** An SDK failure as a RegistryError, naming the upstream and the IAM action, never a secret. */
function awsError(o: EcrCredentialsOptions, e: unknown): RegistryError {
  const err = (typeof e === 'object' && e !== null ? e : {}) as { name?: unknown; message?: unknown; code?: unknown; $metadata?: { httpStatusCode?: number } };
  const name = typeof err.name === 'string' ? err.name : 'Error';
  const status = err.$metadata?.httpStatusCode;
  const why = scrub(typeof err.message === 'string' ? err.message : '', [o.keys?.secretAccessKey, o.keys?.sessionToken]);
  const api = o.public ? 'ecr-public:GetAuthorizationToken' : 'ecr:GetAuthorizationToken';
  const detail = { upstream: o.upstreamName, aws: name, ...(status !== undefined ? { status } : {}) };
  if (name === 'CredentialsProviderError') {
    return new RegistryError('DENIED', {
      message: `upstream "${o.upstreamName}": no AWS credentials found; set awsAccessKeyId and awsSecretAccessKey, or provide them through the standard AWS credential chain`,
      detail,
    });
  }
  if (REFUSED.has(name) || status === 401 || status === 403) {
    return new RegistryError('DENIED', {
      message: `upstream "${o.upstreamName}": AWS refused ${api} (${name}${why ? `: ${why}` : ''}); the credentials need an IAM policy allowing ${api}${o.public ? ' and sts:GetServiceBearerToken' : ''}`,
      detail,
    });
  }
  if (name === 'ThrottlingException' || status === 429) {
    return new RegistryError('TOOMANYREQUESTS', { message: `upstream "${o.upstreamName}": AWS is throttling ${api}`, detail });
  }
  if (/region is missing/i.test(why)) {
    return new RegistryError('DENIED', {
      message: `upstream "${o.upstreamName}": no AWS region; set awsRegion (or AWS_REGION) for this upstream`,
      detail,
    });
  }
  return new RegistryError('UNAVAILABLE', {
    message: `upstream "${o.upstreamName}": ${api} failed (${name}${why ? `: ${why}` : ''})`,
    detail,
  });
}
