// Where upstream credentials come from. Static ones are fixed; later providers (ECR, GAR) mint
// short-lived ones and may implement `invalidate` so a rejected secret is re-minted.

export interface Credentials {
  username: string;
  password: string;
}

export interface CredentialProvider {
  /** Non-secret identifier, safe for cache keys and logs: 'anonymous', 'basic:<username>', ... */
  readonly identity: string;
  /** The credentials to use now, or undefined for anonymous access. */
  get(signal?: AbortSignal): Promise<Credentials | undefined>;
  /** Drop any cached secret (called when the upstream rejected it); the next get() re-mints. */
  invalidate?(): void;
}

export const anonymous: CredentialProvider = Object.freeze({
  identity: 'anonymous',
  get: async (): Promise<Credentials | undefined> => undefined,
});

export function staticCredentials(username: string, password: string): CredentialProvider {
  const creds: Credentials = Object.freeze({ username, password });
  return Object.freeze({
    identity: `basic:${username}`,
    get: async (): Promise<Credentials | undefined> => creds,
  });
}

/** `Basic base64(user:pass)` */
export function basicAuthorization(c: Credentials): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}
