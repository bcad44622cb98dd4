// Which token realms may receive our upstream credentials. The realm is chosen by the upstream, so
// without a check a hostile or compromised registry could have our secret sent anywhere. Like
// distribution's proxy: the upstream's own host (any port), or a host on the same registrable
// domain (eTLD+1) by the Public Suffix List (tldts), private section included, so that tenants of
// shared hosting (run.app, gitlab.io, onrender.com, me.uk, ...) are told apart.
import { isIP } from 'node:net';
import { getDomain } from 'tldts';

/**
 * Registrable domains by the PSL whose hosts still belong to different tenants: every ECR
 * account's registry is <account>.dkr.ecr.<region>.amazonaws.com, one PSL domain per region.
 * Under these only an exact host match counts.
 */
const TENANT_HOSTS = /(^|\.)amazonaws\.com(\.cn)?$/;

function normaliseHost(hostname: string): string {
  let h = hostname.toLowerCase();
  if (h.startsWith('[') && h.endsWith(']')) h = h.slice(1, -1);
  if (h.endsWith('.')) h = h.slice(0, -1);
  return h;
}

function isLocalOrIp(host: string): boolean {
  return isIP(host) !== 0 || host === 'localhost' || host.endsWith('.localhost');
}

/** eTLD+1 by the Public Suffix List, or undefined when only the exact host may count. */
export function registrableDomain(hostname: string): string | undefined {
  const host = normaliseHost(hostname);
  // IPs, localhost and single-label hosts (a compose service name) match only themselves.
  if (host === '' || isLocalOrIp(host) || !host.includes('.')) return undefined;
  const domain = getDomain(host, { allowPrivateDomains: true, detectIp: true });
  if (domain === null || domain === '' || TENANT_HOSTS.test(domain)) return undefined;
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
