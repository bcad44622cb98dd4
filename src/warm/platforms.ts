// Which images of an index warm fetches: the platforms asked for (`os/arch[/variant]`), matched
// the way containerd matches them, after normalising the names that mean the same platform
// (aarch64 is arm64, arm64/v8 is arm64, arm is arm/v7, amd64/v1 is amd64).
import type { Descriptor, Platform } from '../oci/manifest.js';

const ARCH_ALIASES: Record<string, string> = { x86_64: 'amd64', 'x86-64': 'amd64', aarch64: 'arm64', i386: '386' };
/** the variant an architecture has when none is written */
const DEFAULT_VARIANT: Record<string, string> = { arm64: 'v8', arm: 'v7', amd64: 'v1' };

const PART = /^[a-z0-9][a-z0-9._-]*$/;

/** `os/arch[/variant]`, or undefined when the text is not one. */
export function parsePlatform(text: string): Platform | undefined {
  const parts = text.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || !parts.every((p) => PART.test(p))) return undefined;
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

export function platformText(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter((s) => s !== undefined && s !== '').join('/');
}

function normalized(p: Platform): string {
  const architecture = ARCH_ALIASES[p.architecture] ?? p.architecture;
  const variant = p.variant || DEFAULT_VARIANT[architecture] || '';
  return `${p.os}/${architecture}/${variant}`;
}

export function samePlatform(a: Platform, b: Platform): boolean {
  return normalized(a) === normalized(b);
}

/**
 * For each platform asked, the first of an index's manifests that is that platform; the asked
 * platforms none is for are `missing`. With `all`, every manifest (attestations too: a client
 * copying all platforms copies them).
 */
export function choosePlatforms(manifests: readonly Descriptor[], wanted: readonly Platform[] | 'all'): { chosen: Descriptor[]; missing: Platform[] } {
  if (wanted === 'all') return { chosen: [...manifests], missing: [] };
  const chosen: Descriptor[] = [];
  const missing: Platform[] = [];
  for (const p of wanted) {
    const match = manifests.find((m) => m.platform !== undefined && samePlatform(m.platform, p));
    if (!match) missing.push(p);
    else if (!chosen.includes(match)) chosen.push(match);
  }
  return { chosen, missing };
}
