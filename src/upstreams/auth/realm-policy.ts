// Which token realms may receive our upstream credentials. The realm is chosen by the upstream, so
// without a check a hostile or compromised registry could have our secret sent anywhere. Like
// distribution's proxy: the upstream's own host (any port), or a host on the same registrable
// domain (eTLD+1). No public-suffix list is available, so eTLD+1 is approximated.
import { isIP } from 'node:net';

/** Second-level labels that act as public suffixes under a ccTLD (co.uk, com.au, ac.jp, ...). */
const SECOND_LEVEL = new Set(['co', 'com', 'net', 'org', 'gov', 'edu', 'ac', 'mil', 'or', 'ne', 'go']);

/**
 * Domains where different subdomains belong to different tenants (the public-suffix list's
 * "private" section). Under these only an exact host match counts, so e.g. an ECR upstream can
 * never send its secret to someone's `*.s3.amazonaws.com` bucket.
 */
const SHARED_DOMAINS = new Set([
  'amazonaws.com',
  'cloudfront.net',
  'googleapis.com',
  'appspot.com',
  'cloudflarestorage.com',
  'windows.net',
  'azurewebsites.net',
  'github.io',
  'githubusercontent.com',
  'herokuapp.com',
  'pages.dev',
  'workers.dev',
  'r2.dev',
  'vercel.app',
  'netlify.app',
  'fly.dev',
]);

function normaliseHost(hostname: string): string {
  let h = hostname.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

function isLocalOrIp(host: string): boolean {
  return isIP(host) !== 0 || host === 'localhost' || host.endsWith('.localhost');
}

/** Approximate eTLD+1, or undefined when the host is itself (close to) a public suffix. */
export function registrableDomain(hostname: string): string | undefined {
  const host = normaliseHost(hostname);
  if (host === '' || isLocalOrIp(host)) return undefined;
  const labels = host.split('.');
  if (labels.length < 2 || labels.some((l) => l === '')) return undefined;
  const secondLast = labels[labels.length - 2] as string;
  const n = SECOND_LEVEL.has(secondLast) ? 3 : 2;
  if (labels.length < n) return undefined;
  const domain = labels.slice(-n).join('.');
  if (SHARED_DOMAINS.has(domain)) return undefined;
  return domain;
}

export function mayReceiveCredentials(upstream: URL, realm: URL): boolean {
  if (realm.protocol !== 'https:') {
    // Plain http only when the upstream itself is spoken to over http (local test registries).
    if (!(realm.protocol === 'http:' && upstream.protocol === 'http:')) return false;
  }
  if (realm.username !== '' || realm.password !== '') return false;
  const u = normaliseHost(upstream.hostname);
  const r = normaliseHost(realm.hostname);
  if (u === '' || r === '') return false;
  if (u === r) return true;
  if (isLocalOrIp(u) || isLocalOrIp(r)) return false;
  const ud = registrableDomain(u);
  return ud !== undefined && ud === registrableDomain(r);
}
