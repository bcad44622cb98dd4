// A client's HTTP Basic credentials (RFC 7617): what `docker login`, podman, containerd's host
// credentials and skopeo --src-creds send to a registry that challenges with
// `WWW-Authenticate: Basic`. Parsed here once; what they are checked against (the htpasswd file,
// or the upstream itself for clientCredentials: passthrough) is decided by the caller.

export interface ClientCredentials {
  readonly username: string;
  readonly password: string;
}

/** The challenge a registry sends for Basic authentication. */
export const BASIC_CHALLENGE = 'Basic realm="pullthrough"';

/** Longest Authorization value looked at: longer ones are not credentials anyone sends. */
const MAX_AUTHORIZATION = 8192;

/**
 * The credentials in an Authorization header, undefined when there are none, or when the header
 * is not Basic, not base64, has no ":" or names no user (a malformed header is no credential,
 * so the caller answers with its challenge rather than an error of its own).
 */
export function parseBasic(header: string | undefined): ClientCredentials | undefined {
  if (!header || header.length > MAX_AUTHORIZATION) return undefined;
  const m = /^Basic[ \t]+([A-Za-z0-9+/]+={0,2})[ \t]*$/i.exec(header);
  if (!m) return undefined;
  const decoded = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon <= 0) return undefined;
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}
