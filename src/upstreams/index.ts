// Builds the Upstream for a configured upstream. Every kind speaks the same distribution API
// through RegistryClient; kinds differ in where their credentials come from (kinds/).
import { Authenticator } from './auth/authenticator.js';
import { anonymous } from './auth/credentials.js';
import { adapterFor, type UpstreamConfig } from './kinds/index.js';
import { RegistryClient, upstreamAgent, type UpstreamCall } from './registry-client.js';
import type { Upstream } from './upstream.js';

export interface UpstreamDeps {
  /** ms clock for token and credential lifetimes, injectable for tests */
  now?: () => number;
}

export function createUpstream(
  u: UpstreamConfig,
  config: { timeouts: Parameters<typeof upstreamAgent>[0]; retries: number },
  onResponse?: (e: UpstreamCall) => void,
  deps: UpstreamDeps = {},
): Upstream {
  const dispatcher = upstreamAgent(config.timeouts);
  const adapter = adapterFor(u, { now: deps.now, timeoutMs: config.timeouts.headersMs });
  const authenticator = new Authenticator({
    upstream: new URL(u.url),
    upstreamName: u.name,
    // passthrough: every call brings the client's own (or none): configured ones are never used
    credentials: u.clientCredentials === 'passthrough' ? anonymous : adapter.credentials,
    dispatcher,
    timeoutMs: config.timeouts.headersMs,
    deniedHint: adapter.deniedHint,
    ...(deps.now ? { now: deps.now } : {}),
  });
  return new RegistryClient({ name: u.name, url: u.url, authenticator, dispatcher, retries: config.retries, onResponse, deniedHint: adapter.deniedHint });
}
