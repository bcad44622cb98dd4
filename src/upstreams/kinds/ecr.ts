// Amazon ECR, private (<account>.dkr.ecr.<region>.amazonaws.com and the other partitions) and
// public (public.ecr.aws): credentials are minted with GetAuthorizationToken (Basic AWS:<token>);
// ECR Public also serves public repositories anonymously.
import { z } from 'zod';
import { bool, ConfigError, httpUrl, Problem, text } from '../../lib/settings.js';
import { anonymous } from '../auth/credentials.js';
import { ecrCredentials } from '../auth/ecr-credentials.js';
import { genericKind, type Kind, type UpstreamEntry } from './kind.js';

const PUBLIC_HOSTS = ['public.ecr.aws', 'ecr-public.aws.com'];

// kept as written ("" too): on an upstream of another kind, even an empty one is a mistake
const settings = {
  awsAccessKeyId: text.optional(),
  awsSecretAccessKey: text.optional(),
  awsSessionToken: text.optional(),
  awsRegion: text.optional(),
  awsEndpoint: text.optional(),
  ecrPublic: bool.optional(),
};
type Settings = z.output<ReturnType<typeof z.object<typeof settings>>>;

export const ecr: Kind = {
  ...genericKind,
  type: 'ecr',
  // looser than parseEcrHost: a private registry in a partition not listed there is still ECR
  // (its region then comes from awsRegion or the SDK)
  ownsHost: (host) => /\.dkr[.-]ecr(-fips)?\./.test(host) || PUBLIC_HOSTS.includes(host),
  settings,
  resolveSettings(entry, url, key) {
    const s = entry as UpstreamEntry & Settings;
    // "" (an unset ${ENV} reference) is absent
    const accessKeyId = s.awsAccessKeyId || undefined;
    const secretAccessKey = s.awsSecretAccessKey || undefined;
    if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
      throw new ConfigError(`${key}.${accessKeyId ? 'awsSecretAccessKey' : 'awsAccessKeyId'}`, 'is empty while the other AWS key is set');
    }
    if (s.username !== undefined) {
      throw new ConfigError(`${key}.username`, 'ECR upstreams take awsAccessKeyId and awsSecretAccessKey (or the AWS credential chain), not username and password');
    }
    const endpoint = s.awsEndpoint ? httpUrl(s.awsEndpoint) : undefined;
    if (endpoint instanceof Problem) throw new ConfigError(`${key}.awsEndpoint`, endpoint.text);
    return {
      aws: {
        accessKeyId,
        secretAccessKey,
        sessionToken: s.awsSessionToken || undefined,
        region: s.awsRegion || undefined,
        endpoint: endpoint?.href,
        public: s.ecrPublic ?? PUBLIC_HOSTS.includes(url.hostname),
      },
    };
  },
  adapter(u, deps) {
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
  },
};

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
