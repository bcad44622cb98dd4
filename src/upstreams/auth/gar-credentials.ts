// Google Artifact Registry / Container Registry credentials: a service-account key (the JSON,
// held in memory) is exchanged by google-auth-library for an OAuth2 access token, presented to the
// registry's token endpoint as Basic `oauth2accesstoken:<access token>`. Access tokens last about
// an hour; one is reused for the first half of its life and then replaced.
import { RegistryError } from '../../oci/errors.js';
import { MintedCredentials, scrub, type Minted } from './minted.js';

export const GOOGLE_TOKEN_URL = 'https://oauth2.googleapis.com/token';
export const GAR_SCOPES = ['https://www.googleapis.com/auth/cloud-platform'] as const;
export const GAR_USERNAME = 'oauth2accesstoken';

export interface ServiceAccountKey {
  client_email: string;
  private_key: string;
  private_key_id?: string | undefined;
  token_uri?: string | undefined;
}

export interface GarCredentialsOptions {
  upstreamName: string;
  /** the key file's JSON text (not a path) */
  serviceAccountJson: string;
  /** ms clock, injectable for tests */
  now?: () => number;
  /** per token request; default 30 s */
  timeoutMs?: number;
}

/**
 * Parses a service-account key. The error never quotes the input (JSON.parse messages do, so
 * they are dropped): it is a private key.
 */
export function parseServiceAccountKey(json: string): ServiceAccountKey | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch {
    return 'is not valid JSON (it must be the key file content, not a path)';
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'must be a JSON object';
  const o = parsed as Record<string, unknown>;
  if (o['type'] !== undefined && o['type'] !== 'service_account') return 'is not a service-account key (type must be "service_account")';
  if (typeof o['client_email'] !== 'string' || o['client_email'] === '') return 'has no client_email';
  if (typeof o['private_key'] !== 'string' || !o['private_key'].includes('PRIVATE KEY')) return 'has no PEM private_key';
  const tokenUri = o['token_uri'];
  if (tokenUri !== undefined && (typeof tokenUri !== 'string' || !/^https?:\/\//.test(tokenUri) || !URL.canParse(tokenUri))) {
    return 'has a token_uri that is not an http(s) URL';
  }
  return {
    client_email: o['client_email'],
    private_key: o['private_key'],
    private_key_id: typeof o['private_key_id'] === 'string' ? o['private_key_id'] : undefined,
    token_uri: typeof tokenUri === 'string' ? tokenUri : undefined,
  };
}

export function garCredentials(o: GarCredentialsOptions): MintedCredentials {
  const key = parseServiceAccountKey(o.serviceAccountJson);
  if (typeof key === 'string') throw new Error(`serviceAccountJson ${key}`);
  const now = o.now ?? Date.now;
  return new MintedCredentials({
    identity: `gar:${key.client_email}`,
    now,
    refreshFraction: 0.5,
    mint: () => mintGoogle(o, key, now),
  });
}

async function mintGoogle(o: GarCredentialsOptions, key: ServiceAccountKey, now: () => number): Promise<Minted> {
  const { JWT } = await import('google-auth-library');
  // A new client per mint: google-auth-library keeps its own token cache on the real clock, and
  // ours (on an injectable clock) decides when a new token is due.
  const jwt = new JWT({
    email: key.client_email,
    key: key.private_key,
    ...(key.private_key_id ? { keyId: key.private_key_id } : {}),
    scopes: [...GAR_SCOPES],
    transporterOptions: { timeout: o.timeoutMs ?? 30_000 },
  });
  // google-auth-library posts the JWT-bearer grant to Google's default endpoint; a key that names
  // another token_uri (private or test endpoints) gets its grant sent there instead.
  const tokenUri = key.token_uri;
  if (tokenUri !== undefined && tokenUri !== GOOGLE_TOKEN_URL) {
    jwt.transporter.interceptors.request.add({
      resolved: async (req) => {
        if (String(req.url) === GOOGLE_TOKEN_URL) req.url = new URL(tokenUri);
        return req;
      },
    });
  }
  let tokens: { access_token?: string | null; expiry_date?: number | null };
  try {
    tokens = await jwt.authorize();
  } catch (e) {
    throw googleError(o, key, e);
  }
  const accessToken = tokens.access_token;
  if (typeof accessToken !== 'string' || !/^[\x21-\x7e]+$/.test(accessToken)) {
    throw new RegistryError('UNAVAILABLE', {
      message: `upstream "${o.upstreamName}": Google's token endpoint returned no usable access token`,
      detail: { upstream: o.upstreamName },
    });
  }
  // expiry_date is on the real clock; carry the remaining lifetime over to ours
  const lifetime = typeof tokens.expiry_date === 'number' ? Math.max(0, tokens.expiry_date - Date.now()) : 3600_000;
  return { credentials: { username: GAR_USERNAME, password: accessToken }, expiresAt: now() + lifetime };
}

function googleError(o: GarCredentialsOptions, key: ServiceAccountKey, e: unknown): RegistryError {
  const err = (typeof e === 'object' && e !== null ? e : {}) as { message?: unknown; status?: unknown; code?: unknown; response?: { status?: unknown } };
  const status = typeof err.response?.status === 'number' ? err.response.status : typeof err.status === 'number' ? err.status : undefined;
  const why = scrub(typeof err.message === 'string' ? err.message : '', [key.private_key]);
  const detail = { upstream: o.upstreamName, serviceAccount: key.client_email, ...(status !== undefined ? { status } : {}) };
  if (status === 400 || status === 401 || status === 403) {
    return new RegistryError('DENIED', {
      message: `upstream "${o.upstreamName}": Google refused the service-account key of ${key.client_email} (${why || status}); the key may be deleted, disabled or malformed`,
      detail,
    });
  }
  if (status === 429) {
    return new RegistryError('TOOMANYREQUESTS', { message: `upstream "${o.upstreamName}": Google's token endpoint is rate limiting us`, detail });
  }
  return new RegistryError('UNAVAILABLE', {
    message: `upstream "${o.upstreamName}": could not obtain a Google access token for ${key.client_email}${why ? ` (${why})` : ''}`,
    detail,
  });
}
