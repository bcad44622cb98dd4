// The users of `auth.htpasswd`: an Apache htpasswd file of bcrypt entries (`htpasswd -B`), as
// Distribution reads it. The file is looked at again at most once a second, when a request needs
// it, and reloaded when its inode, size or times changed, so an edit (in place or by rename) takes
// effect without a restart. A file that cannot be read then lets nobody in (the startup read must
// succeed). bcrypt is slow by design and a pull makes dozens of requests, so each answer is kept
// until the file changes, under an HMAC of the user and password with a key of this process's
// own: the plain password is never kept, and what is kept cannot be turned back into one.
import { createHmac, randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import { ConfigError } from '../lib/settings.js';
import type { Logger } from '../lib/log.js';
import { SingleFlight } from '../lib/single-flight.js';
import type { ClientCredentials } from './basic.js';

export interface HtpasswdOptions {
  path: string;
  log: Logger;
  /** ms clock, injectable for tests */
  now?: (() => number) | undefined;
  /** the file is looked at for changes at most this often (default 1 s) */
  checkIntervalMs?: number | undefined;
  /** bcrypt's comparison (bcryptjs's async one); tests count its calls */
  compare?: ((password: string, hash: string) => Promise<boolean>) | undefined;
}

/** A bcrypt hash as htpasswd -B writes it ($2y$) or other tools do ($2a$, $2b$). */
const BCRYPT = /^\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}$/;

/** How many verified answers are kept (each way: refusals cannot push out users who got in). */
const REMEMBERED = 1000;

export interface ParsedHtpasswd {
  /** user → bcrypt hash; the first entry of a user counts, as in Apache */
  entries: Map<string, string>;
  /** 1-based numbers of the lines that are not a bcrypt entry (or repeat a user) */
  ignored: number[];
}

/** Parses htpasswd text. Blank lines and lines starting with "#" are skipped. */
export function parseHtpasswd(text: string): ParsedHtpasswd {
  const entries = new Map<string, string>();
  const ignored: number[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon <= 0 || !BCRYPT.test(hash) || entries.has(user)) ignored.push(i + 1);
    else entries.set(user, hash);
  });
  return { entries, ignored };
}

export class Htpasswd {
  private entries: ReadonlyMap<string, string> = new Map();
  /** the file's identity and times when it was read; undefined: not read (or unreadable) */
  private version: string | undefined;
  private generation = 0;
  private checkedAt = -Infinity;
  private readonly checks = new SingleFlight<void>();
  private readonly compares = new SingleFlight<boolean>();
  private readonly accepted = new LRUCache<string, true>({ max: REMEMBERED });
  private readonly refused = new LRUCache<string, true>({ max: REMEMBERED });
  private readonly key = randomBytes(32);
  private readonly now: () => number;
  private readonly interval: number;
  private readonly bcrypt: (password: string, hash: string) => Promise<boolean>;

  private constructor(private readonly opts: HtpasswdOptions) {
    this.now = opts.now ?? Date.now;
    this.interval = opts.checkIntervalMs ?? 1000;
    this.bcrypt = opts.compare ?? ((password, hash) => bcrypt.compare(password, hash));
  }

  /** Reads the file; throws ConfigError naming auth.htpasswd when it cannot be read. */
  static async open(opts: HtpasswdOptions): Promise<Htpasswd> {
    const h = new Htpasswd(opts);
    try {
      h.load(await stat(opts.path), await readFile(opts.path, 'utf8'));
    } catch (e) {
      throw new ConfigError('auth.htpasswd', `cannot read ${opts.path}: ${(e as Error).message}`);
    }
    h.checkedAt = h.now();
    return h;
  }

  /** Whether the file holds this user with this password. */
  async verify(c: ClientCredentials): Promise<boolean> {
    await this.current();
    // JSON keeps the pair unambiguous: no user and password run together into another pair
    const key = createHmac('sha256', this.key).update(JSON.stringify([c.username, c.password])).digest('base64');
    if (this.accepted.has(key)) return true;
    if (this.refused.has(key)) return false;
    const generation = this.generation;
    const ok = await this.compares.run(`${generation}\0${key}`, () => this.compare(c));
    if (generation === this.generation) (ok ? this.accepted : this.refused).set(key, true);
    return ok;
  }

  private async compare(c: ClientCredentials): Promise<boolean> {
    const hash = this.entries.get(c.username);
    if (hash !== undefined) return this.bcrypt(c.password, hash);
    // an unknown user costs what a known one does, so the answer's timing does not say who exists
    const decoy = this.entries.values().next().value;
    if (decoy !== undefined) await this.bcrypt(c.password, decoy);
    return false;
  }

  /** Reloads the file when it changed, looking at most once per interval. */
  private async current(): Promise<void> {
    if (this.now() - this.checkedAt < this.interval) return;
    await this.checks.run('file', async () => {
      this.checkedAt = this.now();
      try {
        const st = await stat(this.opts.path);
        if (versionOf(st) !== this.version) this.load(st, await readFile(this.opts.path, 'utf8'));
      } catch (e) {
        if (this.version === undefined && this.entries.size === 0) return;
        this.opts.log.warn({ path: this.opts.path, err: (e as Error).message }, 'cannot read the htpasswd file; nobody can authenticate until it can be read');
        this.replace(new Map(), undefined);
      }
    });
  }

  private load(st: FileVersion, text: string): void {
    const { entries, ignored } = parseHtpasswd(text);
    this.replace(entries, versionOf(st));
    // line numbers only: a line that is not a bcrypt entry may hold a password in clear
    if (ignored.length > 0) this.opts.log.warn({ path: this.opts.path, lines: ignored.slice(0, 20) }, 'htpasswd lines ignored: not a bcrypt entry (htpasswd -B), or a user named twice');
    this.opts.log.info({ path: this.opts.path, users: entries.size }, 'htpasswd loaded');
  }

  private replace(entries: ReadonlyMap<string, string>, version: string | undefined): void {
    this.entries = entries;
    this.version = version;
    this.generation++;
    this.accepted.clear();
    this.refused.clear();
  }
}

type FileVersion = { ino: number; size: number; mtimeMs: number; ctimeMs: number };

function versionOf(st: FileVersion): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
}
