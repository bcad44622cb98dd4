// WWW-Authenticate parsing (RFC 7235 shape, lenient). undici folds repeated header lines into
// one string joined by ", ", so a new challenge starts at any bare token that is not followed by
// "=" (e.g. `Basic realm="x", Bearer realm="y"`). Unparseable bits are skipped, never thrown.

export interface Challenge {
  /** auth scheme, lowercased */
  scheme: string;
  /** auth params, keys lowercased */
  params: Record<string, string>;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const WS = /[ \t\r\n]/;

function isTchar(c: string | undefined): boolean {
  return c !== undefined && TCHAR.test(c);
}

function isWs(c: string | undefined): boolean {
  return c !== undefined && WS.test(c);
}

/** Parses one header value that may hold several challenges. */
function parseLine(s: string, out: Challenge[]): void {
  let i = 0;
  let current: Challenge | undefined;
  const skipWs = (): void => {
    while (isWs(s[i])) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (isTchar(s[i])) i++;
    return s.slice(start, i);
  };

  while (i < s.length) {
    while (isWs(s[i]) || s[i] === ',') i++;
    if (i >= s.length) break;
    const name = readToken();
    if (name === '') {
      i++; // garbage character: skip it
      continue;
    }
    skipWs();
    if (s[i] !== '=') {
      // A bare token: the scheme of a new challenge.
      current = { scheme: name.toLowerCase(), params: {} };
      out.push(current);
      continue;
    }
    i++; // '='
    skipWs();
    let value: string | undefined;
    if (s[i] === '"') {
      i++;
      let v = '';
      let closed = false;
      while (i < s.length) {
        const c = s[i++] as string;
        if (c === '\\') {
          if (i < s.length) v += s[i++];
        } else if (c === '"') {
          closed = true;
          break;
        } else {
          v += c;
        }
      }
      value = closed ? v : undefined;
    } else {
      // Unquoted: a token, leniently anything up to whitespace or a comma.
      const start = i;
      while (i < s.length && s[i] !== ',' && !isWs(s[i])) i++;
      value = s.slice(start, i);
    }
    // A parameter before any scheme (or an unterminated quote) is dropped.
    if (current !== undefined && value !== undefined) current.params[name.toLowerCase()] = value;
  }
}

export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const lines = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const line of lines) {
    if (typeof line === 'string') parseLine(line, out);
  }
  return out;
}

/** Bearer (with a realm) before Basic; unknown schemes are ignored. */
export function pickChallenge(challenges: readonly Challenge[]): Challenge | undefined {
  const bearer = challenges.find((c) => c.scheme === 'bearer' && (c.params['realm'] ?? '') !== '');
  if (bearer !== undefined) return bearer;
  return challenges.find((c) => c.scheme === 'basic');
}

/** The scopes a Bearer challenge asks for (space-separated in one `scope` param). */
export function challengeScopes(challenge: Challenge): string[] {
  const raw = challenge.params['scope'];
  if (raw === undefined) return [];
  return raw.split(/\s+/).filter((s) => s !== '');
}
