// Builds the Upstream for a configured upstream. Every kind speaks the same distribution API
// through RegistryClient; kinds differ in where their credentials come from.
import type { Config, UpstreamConfig } from '../config.js';
import { Authenticator } from './auth/authenticator.js';
import { anonymous, staticCredentials, type CredentialProvider } from './auth/credentials.js';
import { RegistryClient, upstreamAgent, type UpstreamCall } from './registry-client.js';
import type { Upstream } from './upstream.js';

export function createUpstream(u: UpstreamConfig, config: Pick<Config, 'timeouts' | 'retries'>, onResponse?: (e: UpstreamCall) => void): Upstream {
  const dispatcher = upstreamAgent(config.timeouts);
  const authenticator = new Authenticator({
    upstream: new URL(u.url),
    upstreamName: u.name,
    credentials: credentialsFor(u),
    dispatcher,
    timeoutMs: config.timeouts.headersMs,
  });
  return new RegistryClient({ name: u.name, url: u.url, authenticator, dispatcher, retries: config.retries, onResponse });
}

function credentialsFor(u: UpstreamConfig): CredentialProvider {
  if (u.username !== undefined && u.password !== undefined) return staticCredentials(u.username, u.password);
  if (u.password !== undefined) return staticCredentials('token', u.password);
  return anonymous;
}
