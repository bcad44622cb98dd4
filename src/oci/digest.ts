// Content digests: parsing and hashing.
import { createHash } from 'node:crypto';
import { RegistryError } from './errors.js';

export type Algorithm = 'sha256' | 'sha512';

export interface Digest {
  readonly algorithm: Algorithm;
  readonly hex: string;
  /** "sha256:<hex>" */
  readonly value: string;
}

const HEX_LENGTH: Record<Algorithm, number> = { sha256: 64, sha512: 128 };

/** Parses "sha256:<64 hex>" or "sha512:<128 hex>"; anything else is DIGEST_INVALID. */
export function parseDigest(value: string): Digest {
  const d = tryParseDigest(value);
  if (!d) throw new RegistryError('DIGEST_INVALID', { message: 'invalid digest', detail: { digest: value.slice(0, 200) } });
  return d;
}

export function tryParseDigest(value: string): Digest | undefined {
  const colon = value.indexOf(':');
  if (colon < 0) return undefined;
  const algorithm = value.slice(0, colon);
  const hex = value.slice(colon + 1);
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return undefined;
  if (hex.length !== HEX_LENGTH[algorithm] || !/^[a-f0-9]+$/.test(hex)) return undefined;
  return { algorithm, hex, value };
}

export function looksLikeDigest(value: string): boolean {
  return /^[a-z0-9]+(?:[+._-][a-z0-9]+)*:/.test(value);
}

export function digestOf(bytes: Uint8Array, algorithm: Algorithm = 'sha256'): Digest {
  const hex = createHash(algorithm).update(bytes).digest('hex');
  return { algorithm, hex, value: `${algorithm}:${hex}` };
}

/** Raised when streamed content does not hash to the expected digest or size. */
export class VerificationError extends Error {
  constructor(
    readonly expected: string,
    readonly got: string,
  ) {
    super(`content verification failed: expected ${expected}, got ${got}`);
    this.name = 'VerificationError';
  }
}
