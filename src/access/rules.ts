// Who may pull what: the `auth.rules` of the config. A rule names users, upstreams and optionally
// globs on the upstream-side repository name (Docker Hub's "library/alpine", not the client's
// "alpine"); a user may pull from a repository when some rule names the user (or "*", any user
// the htpasswd file knows), the repository's upstream, and, when it has globs, one that matches.
//
// Globs: `*` matches any run of characters within one path segment (never a "/"), `**` any run
// of characters across segments ("/" included); every other character stands for itself, and a
// glob matches the whole name. Repository names hold only [a-z0-9._/-], so no escaping is needed:
// that is why this is a dozen lines here and not a glob library, whose braces, classes and
// extglobs would be syntax to document and get wrong.

export interface AccessRule {
  readonly users: readonly string[];
  /** upstream names, as configured (the config resolves aliases) */
  readonly upstreams: readonly string[];
  /** absent: every repository of those upstreams */
  readonly repositories?: readonly string[] | undefined;
}

/** The user entry that stands for every user the htpasswd file knows. */
export const ANY_USER = '*';

interface CompiledRule {
  users: ReadonlySet<string>;
  upstreams: ReadonlySet<string>;
  repositories: readonly RegExp[] | undefined;
}

export class Rules {
  private readonly rules: readonly CompiledRule[];

  constructor(rules: readonly AccessRule[]) {
    this.rules = rules.map((r) => ({
      users: new Set(r.users),
      upstreams: new Set(r.upstreams),
      repositories: r.repositories?.map(globPattern),
    }));
  }

  /** Whether some rule lets `user` pull from `repository` of `upstream`. */
  allows(user: string, upstream: string, repository: string): boolean {
    return this.rules.some(
      (r) =>
        (r.users.has(user) || r.users.has(ANY_USER)) &&
        r.upstreams.has(upstream) &&
        (r.repositories === undefined || r.repositories.some((glob) => glob.test(repository))),
    );
  }
}

/** A glob (see above) as an anchored regular expression. */
export function globPattern(glob: string): RegExp {
  const source = glob
    .split('**')
    .map((part) => part.split('*').map(literal).join('[^/]*'))
    .join('.*');
  return new RegExp(`^${source}$`);
}

function literal(text: string): string {
  return text.replace(/[.\\^$+?()[\]{}|]/g, '\\$&');
}
