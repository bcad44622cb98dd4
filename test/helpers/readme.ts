// The client configurations the README shows, read from the README itself, so that the tests
// that run them with the real clients and the text users copy cannot drift apart. A snippet is
// the fenced code block right after a `<!-- snippet: NAME -->` line.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const README = fileURLToPath(new URL('../../README.md', import.meta.url));

/** The host:port the README's snippets name for pullthrough; tests put their proxy's there. */
export const README_MIRROR = 'mirror.internal:5000';

/** The text of the fenced block after `<!-- snippet: NAME -->` (without the fences). */
export function readmeSnippet(name: string): string {
  const lines = readFileSync(README, 'utf8').split('\n');
  const at = lines.findIndex((l) => l.trim() === `<!-- snippet: ${name} -->`);
  if (at < 0) throw new Error(`README.md has no <!-- snippet: ${name} --> marker`);
  let open = at + 1;
  while (open < lines.length && lines[open]!.trim() === '') open++;
  const fence = /^(`{3,})/.exec(lines[open] ?? '')?.[1];
  if (fence === undefined) throw new Error(`README.md: <!-- snippet: ${name} --> is not followed by a fenced block`);
  const close = lines.findIndex((l, i) => i > open && l.trimEnd() === fence);
  if (close < 0) throw new Error(`README.md: the block of snippet ${name} is not closed`);
  return lines.slice(open + 1, close).join('\n') + '\n';
}

/**
 * Replaces each key of `values` in `text` by its value, failing when one does not occur: a
 * README edit that drops a placeholder must break the test rather than be silently ignored.
 */
export function substitute(text: string, values: Record<string, string>, what = 'snippet'): string {
  let out = text;
  for (const [from, to] of Object.entries(values)) {
    if (!out.includes(from)) throw new Error(`README ${what} no longer contains ${JSON.stringify(from)}:\n${text}`);
    out = out.split(from).join(to);
  }
  return out;
}

/**
 * A snippet that is a list of shell commands (one per line, `#` comments and blank lines
 * skipped, no quoting), split into argv arrays after substitution.
 */
export function readmeCommands(name: string, values: Record<string, string> = {}): string[][] {
  return substitute(readmeSnippet(name), values, `snippet ${name}`)
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter((l) => l !== '')
    .map((l) => l.split(/\s+/));
}
