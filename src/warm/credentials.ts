// warm's user of a server with `auth`: the name from --user, the password from the environment or
// from stdin, never from the command line (where `ps` and shell histories show it).
import type { Readable } from 'node:stream';
import type { Credentials } from '../upstreams/auth/credentials.js';

export const PASSWORD_VARIABLE = 'PULLTHROUGH_PASSWORD';

/** The longest password line read from stdin; a longer one is no password anyone typed. */
const MAX_PASSWORD_LINE = 4096;

/** A reason the credentials cannot be had (a usage error); it never holds the password. */
export class CredentialsError extends Error {}

export interface CredentialsSource {
  env: NodeJS.ProcessEnv;
  stdin: Readable & { isTTY?: boolean };
}

/**
 * `user` with the password from PULLTHROUGH_PASSWORD or, when that is unset, the first line of
 * stdin (a pipe or a file: `warm --user ci … < /run/secrets/pullthrough`). A terminal is not read
 * from: a prompt would echo what is typed.
 */
export async function warmCredentials(user: string, from: CredentialsSource): Promise<Credentials> {
  // Basic's user:password has no way to hold a ":" in the user; one here is most likely a password
  if (user === '' || user.includes(':')) throw new CredentialsError(`--user takes a user name (no ":"); the password goes in ${PASSWORD_VARIABLE} or on stdin`);
  const fromEnv = from.env[PASSWORD_VARIABLE];
  if (fromEnv !== undefined && fromEnv !== '') return { username: user, password: fromEnv };
  if (from.stdin.isTTY) throw new CredentialsError(`--user ${user}: set ${PASSWORD_VARIABLE}, or pipe the password on stdin (a terminal is not read from)`);
  const line = await firstLine(from.stdin);
  if (line === '') throw new CredentialsError(`--user ${user}: no password in ${PASSWORD_VARIABLE} nor on stdin`);
  return { username: user, password: line };
}

/** The first line of `input` (without its line ending), read as soon as it is there. */
async function firstLine(input: Readable): Promise<string> {
  let text = '';
  for await (const chunk of input as AsyncIterable<Buffer | string>) {
    text += chunk.toString();
    if (text.includes('\n') || text.length > MAX_PASSWORD_LINE) break;
  }
  const line = text.split('\n')[0]!.replace(/\r$/, '');
  if (line.length > MAX_PASSWORD_LINE) throw new CredentialsError(`the first line on stdin is longer than ${MAX_PASSWORD_LINE} characters: not a password`);
  return line;
}
