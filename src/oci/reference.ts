// Repository names and manifest references, validated by the distribution spec's grammar.
import { RegistryError } from './errors.js';
import { looksLikeDigest, tryParseDigest, type Digest } from './digest.js';

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

/**
 * A manifest reference: a digest when it has the digest grammar ("alg:encoded"), a tag otherwise.
 * One outside both grammars names no manifest that can exist, so it is MANIFEST_UNKNOWN (404), as
 * distribution-spec "Pulling manifests" and its conformance suite require, not a 400.
 */
export function parseReference(ref: string): Reference {
  const unknown = (reason: string) => new RegistryError('MANIFEST_UNKNOWN', { detail: { reference: ref.slice(0, 200), reason } });
  if (looksLikeDigest(ref)) {
    const digest = tryParseDigest(ref);
    if (!digest) throw unknown('not a sha256 or sha512 digest');
    return { kind: 'digest', digest };
  }
  if (!TAG.test(ref)) throw unknown('not a tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})');
  return { kind: 'tag', tag: ref };
}

export function referenceString(ref: Reference): string {
  return ref.kind === 'tag' ? ref.tag : ref.digest.value;
}

/** An image as clients name it: `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, e.g. `ghcr.io/org/app:v1`. */
export interface ImageReference {
  /** the registry host, when the first component names one ("ghcr.io", "127.0.0.1:5000") */
  readonly host: string | undefined;
  /** the repository path after the host ("org/app"; "alpine" for Docker Hub's library/alpine) */
  readonly path: string;
  /** what is pulled: the digest when one is given (a tag beside it is then only a label), else the tag ("latest" by default) */
  readonly reference: Reference;
}

/**
 * Parses an image reference by the grammar docker and containerd use: the first component is a
 * host when it has a dot or a port or is "localhost" and more components follow. Throws
 * NAME_INVALID with the reason.
 */
export function parseImageReference(text: string): ImageReference {
  const bad = (reason: string) => new RegistryError('NAME_INVALID', { message: `"${text.slice(0, 300)}" is not an image reference: ${reason}`, detail: { reference: text.slice(0, 300), reason } });
  const at = text.indexOf('@');
  const named = at < 0 ? text : text.slice(0, at);
  let digest: Digest | undefined;
  if (at >= 0) {
    digest = tryParseDigest(text.slice(at + 1));
    if (!digest) throw bad('what follows "@" is not a sha256 or sha512 digest');
  }
  const colon = named.lastIndexOf(':');
  const hasTag = colon > named.lastIndexOf('/');
  const name = hasTag ? named.slice(0, colon) : named;
  const tag = hasTag ? named.slice(colon + 1) : undefined;
  if (tag !== undefined && !TAG.test(tag)) throw bad(`tag "${tag.slice(0, 130)}" is not [A-Za-z0-9_][A-Za-z0-9._-]{0,127}`);
  const slash = name.indexOf('/');
  const host = slash > 0 && isHostComponent(name.slice(0, slash)) ? name.slice(0, slash) : undefined;
  const path = host === undefined ? name : name.slice(slash + 1);
  try {
    validateRepository(path);
  } catch (e) {
    throw bad(e instanceof RegistryError ? String((e.detail as { reason?: string }).reason) : 'invalid name');
  }
  return { host, path, reference: digest ? { kind: 'digest', digest } : { kind: 'tag', tag: tag ?? 'latest' } };
}
