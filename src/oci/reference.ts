// Repository names and manifest references, validated by the distribution spec's grammar.
import { RegistryError } from './errors.js';
import { looksLikeDigest, parseDigest, type Digest } from './digest.js';

const COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
const MAX_NAME = 255;
/** dot-separated labels that start and end with a letter or digit, then an optional :port */
const HOST = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]+)?$/;

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

/** Checks a repository path such as "library/alpine" (the part after any upstream prefix). */
export function validateRepository(name: string): string {
  const bad = (why: string) => new RegistryError('NAME_INVALID', { detail: { name: name.slice(0, 300), reason: why } });
  if (name.length === 0) throw bad('empty name');
  if (name.length > MAX_NAME) throw bad(`longer than ${MAX_NAME} characters`);
  for (const part of name.split('/')) {
    if (!COMPONENT.test(part)) throw bad(`component "${part.slice(0, 100)}" is not [a-z0-9] separated by ".", "_", "__" or "-"`);
  }
  return name;
}

/** A path segment that is a registry host, e.g. "ghcr.io" or "127.0.0.1:5000". */
export function isHostComponent(part: string): boolean {
  return HOST.test(part) && (part.includes('.') || part.includes(':') || part === 'localhost');
}

export function parseReference(ref: string): Reference {
  if (looksLikeDigest(ref)) return { kind: 'digest', digest: parseDigest(ref) };
  if (!TAG.test(ref)) throw new RegistryError('TAG_INVALID', { message: 'invalid tag', detail: { tag: ref.slice(0, 200) } });
  return { kind: 'tag', tag: ref };
}

export function referenceString(ref: Reference): string {
  return ref.kind === 'tag' ? ref.tag : ref.digest.value;
}
