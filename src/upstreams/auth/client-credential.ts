// A client's own Basic credentials, used as an upstream's (clientCredentials: passthrough). They
// ride on the request's Repository handle down to the upstream client. Their identity, which keys
// the tokens fetched with them and the confirmations of what they may read, is a keyed hash: the
// key is random per process, so the identity says nothing about the password outside this process,
// and two credentials never share an identity (nor a token). The password is held in a private
// field, so that logging or serialising the handle never shows it.
import { createHmac, randomBytes } from 'node:crypto';
import type { ClientCredentials } from '../../access/basic.js';
import type { CredentialProvider, Credentials } from './credentials.js';

/** Per process: identities are compared in memory only, never stored. */
const IDENTITY_KEY = randomBytes(32);

export class ClientCredential implements CredentialProvider {
  readonly identity: string;
  /** not a secret: for log lines */
  readonly username: string;
  readonly #credentials: Credentials;

  constructor(c: ClientCredentials) {
    this.username = c.username;
    this.#credentials = Object.freeze({ username: c.username, password: c.password });
    // the username's length first: each (username, password) pair hashes a text of its own
    const text = `${c.username.length}:${c.username}:${c.password}`;
    this.identity = `client:${createHmac('sha256', IDENTITY_KEY).update(text, 'utf8').digest('base64url')}`;
  }

  async get(): Promise<Credentials> {
    return this.#credentials;
  }

  toJSON(): { username: string } {
    return { username: this.username };
  }
}
