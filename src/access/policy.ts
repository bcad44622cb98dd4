// The access decision for a pull, with `auth` configured: who the client is (HTTP Basic against
// the htpasswd file) and whether a rule lets them pull from the repository asked for.
//
//   upstream with clientCredentials: passthrough   allowed here: the upstream itself decides
//   upstream in auth.anonymous                      allowed, with or without credentials
//   no credentials                                  401 UNAUTHORIZED, with the Basic challenge
//   unknown user or wrong password                  401 UNAUTHORIZED
//   a user no rule lets pull from the repository    403 DENIED
//   otherwise                                       allowed
//
// The decision looks only at names, never at what is cached: what a repository may be served
// from the shared cache is the core's question (core/repository-contents.ts).
import { RegistryError } from '../oci/errors.js';
import type { Logger } from '../lib/log.js';
import type { ClientCredentials } from './basic.js';
import { Htpasswd } from './htpasswd.js';
import { Rules, type AccessRule } from './rules.js';

/** `auth` as the config resolved it (upstream names canonical, the htpasswd path absolute). */
export interface AccessConfig {
  readonly htpasswd: string | undefined;
  readonly anonymous: readonly string[];
  readonly rules: readonly AccessRule[];
}

/** What a pull is for: the routed repository (upstreams/repository.ts's Repository fits). */
export interface PullTarget {
  readonly upstream: { readonly name: string };
  /** the upstream-side repository name */
  readonly name: string;
}

export interface AccessPolicyOptions {
  htpasswd: Htpasswd | undefined;
  anonymous: readonly string[];
  rules: readonly AccessRule[];
  /** upstreams whose clients send their own upstream credentials (clientCredentials: passthrough) */
  passthrough: readonly string[];
}

export class AccessPolicy {
  private readonly anonymous: ReadonlySet<string>;
  private readonly passthrough: ReadonlySet<string>;
  private readonly rules: Rules;

  constructor(private readonly opts: AccessPolicyOptions) {
    this.anonymous = new Set(opts.anonymous);
    this.passthrough = new Set(opts.passthrough);
    this.rules = new Rules(opts.rules);
  }

  /** The policy of `auth`, its htpasswd file read (ConfigError when it cannot be). */
  static async open(auth: AccessConfig, o: { passthrough: readonly string[]; log: Logger; now?: () => number }): Promise<AccessPolicy> {
    const htpasswd = auth.htpasswd === undefined ? undefined : await Htpasswd.open({ path: auth.htpasswd, log: o.log, now: o.now });
    return new AccessPolicy({ htpasswd, anonymous: auth.anonymous, rules: auth.rules, passthrough: o.passthrough });
  }

  /**
   * GET /v2/, answered as a registry does: 401 with the challenge without credentials (so that
   * clients learn to send them), 401 for wrong ones. With a passthrough upstream, credentials the
   * htpasswd file does not know may be that upstream's: they pass here, and that upstream (or
   * authorize, for the others) checks them on the client's first request for a repository.
   */
  async ping(credentials: ClientCredentials | undefined): Promise<void> {
    if (!credentials) throw unauthorized('authentication required', undefined);
    if ((await this.verified(credentials)) || this.passthrough.size > 0) return;
    throw unauthorized('wrong user name or password', credentials);
  }

  /** Throws UNAUTHORIZED or DENIED unless the client may pull from `target`. */
  async authorize(credentials: ClientCredentials | undefined, target: PullTarget): Promise<void> {
    const upstream = target.upstream.name;
    if (this.passthrough.has(upstream) || this.anonymous.has(upstream)) return;
    const user = await this.authenticate(credentials);
    if (this.rules.allows(user, upstream, target.name)) return;
    throw new RegistryError('DENIED', {
      message: `user "${user.slice(0, 100)}" may not pull ${target.name} from ${upstream}`,
      detail: { user: user.slice(0, 100), upstream, repository: target.name },
    });
  }

  /** The client's user; 401 without credentials or with wrong ones. */
  private async authenticate(credentials: ClientCredentials | undefined): Promise<string> {
    if (!credentials) throw unauthorized('authentication required', undefined);
    if (!(await this.verified(credentials))) throw unauthorized('wrong user name or password', credentials);
    return credentials.username;
  }

  private async verified(credentials: ClientCredentials): Promise<boolean> {
    return (await this.opts.htpasswd?.verify(credentials)) ?? false;
  }
}

/** A 401; the error responder adds the Basic challenge to every UNAUTHORIZED. */
function unauthorized(message: string, credentials: ClientCredentials | undefined): RegistryError {
  return new RegistryError('UNAUTHORIZED', { message, detail: credentials ? { user: credentials.username.slice(0, 100) } : null });
}
