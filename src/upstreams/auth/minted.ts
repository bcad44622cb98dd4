// A CredentialProvider for secrets that are minted from longer-lived ones (ECR's
// GetAuthorizationToken, a Google access token from a service-account key). The minted secret is
// kept in memory only, reused until a fraction of its lifetime has passed (half, like the ECR
// credential helper), minted once at a time however many callers wait, and, when minting fails,
// the previous secret is used for as long as it has not expired.
import type { CredentialProvider, Credentials } from './credentials.js';
import { SingleFlight } from '../../lib/single-flight.js';

export interface Minted {
  credentials: Credentials;
  /** ms since the epoch, on the provider's clock */
  expiresAt: number;
}

export interface MintedOptions {
  /** non-secret, stable: used in token cache keys */
  identity: string;
  /** obtains fresh credentials; throws RegistryError on failure */
  mint: () => Promise<Minted>;
  /** ms clock, injectable for tests */
  now?: () => number;
  /** reuse a secret until this fraction of its lifetime has passed; default 0.5 */
  refreshFraction?: number;
}

interface Entry {
  credentials: Credentials;
  refreshAt: number;
  expiresAt: number;
}

export class MintedCredentials implements CredentialProvider {
  readonly identity: string;
  readonly #mint: () => Promise<Minted>;
  readonly #now: () => number;
  readonly #fraction: number;
  #entry: Entry | undefined;
  readonly #minting = new SingleFlight<Entry>();
  /** how many times mint() was called (for tests and logs; not secret) */
  mints = 0;

  constructor(o: MintedOptions) {
    this.identity = o.identity;
    this.#mint = o.mint;
    this.#now = o.now ?? Date.now;
    this.#fraction = Math.min(1, Math.max(0, o.refreshFraction ?? 0.5));
  }

  async get(): Promise<Credentials> {
    const cached = this.#entry;
    if (cached !== undefined && this.#now() < cached.refreshAt) return cached.credentials;
    try {
      return (await this.#shared()).credentials;
    } catch (e) {
      // Minting failed, but the secret we hold has not expired: keep using it.
      const still = this.#entry ?? cached;
      if (still !== undefined && this.#now() < still.expiresAt) return still.credentials;
      throw e;
    }
  }

  invalidate(): void {
    this.#entry = undefined;
  }

  /** When the current secret expires (ms on the provider's clock), if one is held. */
  expiresAt(): number | undefined {
    return this.#entry?.expiresAt;
  }

  #shared(): Promise<Entry> {
    return this.#minting.run('mint', () => {
      const started = this.#now();
      this.mints++;
      return this.#mint().then((m) => {
        const lifetime = Math.max(0, m.expiresAt - started);
        const entry: Entry = { credentials: m.credentials, expiresAt: m.expiresAt, refreshAt: started + lifetime * this.#fraction };
        this.#entry = entry;
        return entry;
      });
    });
  }
}

/** Replaces every occurrence of each secret in `text` (for third-party error messages). */
export function scrub(text: string, secrets: readonly (string | undefined)[], max = 300): string {
  let out = text;
  for (const s of secrets) {
    if (s !== undefined && s.length >= 4) out = out.split(s).join('[redacted]');
  }
  out = out.replace(/\s+/g, ' ').trim();
  return out.length > max ? `${out.slice(0, max)}…` : out;
}
