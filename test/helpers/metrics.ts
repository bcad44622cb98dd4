// Reading a /metrics answer (the Prometheus text format) in tests.
import { waitFor } from './util.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample line of a scrape. */
export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const [, k, v] of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * The value of the one series of `name` whose labels are exactly `labels`; 0 when there is none
 * (a counter that never moved). Throws when the labels match more than one.
 */
export function valueOf(text: string, name: string, labels: Record<string, string> = {}): number {
  const want = Object.entries(labels).sort().join('|');
  const hits = samples(text).filter((s) => s.name === name && Object.entries(s.labels).sort().join('|') === want);
  if (hits.length > 1) throw new Error(`${name} ${want}: ${hits.length} series`);
  return hits[0]?.value ?? 0;
}

/** The series (name and labels) of the samples whose names start with one of `prefixes`. */
export function seriesOf(text: string, prefixes: readonly string[]): string[] {
  return samples(text)
    .filter((s) => prefixes.some((p) => s.name.startsWith(p)))
    .map((s) => `${s.name}{${Object.entries(s.labels).sort().map(([k, v]) => `${k}="${v}"`).join(',')}}`);
}

/**
 * Resolves once the proxy at `baseUrl` has no fill in flight (its /metrics says so). A whole GET's
 * client has every byte once the digest is verified, and the fill commits just after: a request
 * before that joins the fill, so a test that means "now cached" waits for this first.
 */
export async function fillsSettled(baseUrl: string): Promise<void> {
  await waitFor(async () => {
    const text = await (await fetch(`${baseUrl}/metrics`)).text();
    return text.includes('pullthrough_fills_in_flight') && valueOf(text, 'pullthrough_fills_in_flight') === 0;
  }, { timeoutMs: 5000, intervalMs: 10, what: `${baseUrl}: no fill in flight` });
}
