// The log for a person at a terminal: pino's JSON lines through pino-pretty, one line per event.
// A request's completion line and its upstream calls are summed up first ("GET /v2/… 200 3.4 MB
// 412 ms miss docker.io"), so that a pull reads as a few lines instead of a screen of fields.
import { prettyFactory } from 'pino-pretty';

type Line = Record<string, unknown>;

/** The fields a summary says, left out of the fields printed after it. */
const SUMMED: Record<string, readonly string[]> = {
  'request completed': ['method', 'path', 'status', 'bytes', 'ms', 'route', 'cache', 'upstream', 'repository', 'aborted'],
  upstream: ['upstream', 'kind', 'method', 'path', 'status', 'ms', 'attempt'],
};

function size(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const [unit, div] = bytes < 1e6 ? ['kB', 1e3] : bytes < 1e9 ? ['MB', 1e6] : ['GB', 1e9];
  return `${(bytes / (div as number)).toFixed(1)} ${unit}`;
}

/** The line with a one-line summary as its message, when it is a request's or an upstream call's. */
export function summarize(line: Line): Line {
  const summed = typeof line.msg === 'string' ? SUMMED[line.msg] : undefined;
  if (!summed) return line;
  const f = line as Record<string, string | number | boolean | undefined>;
  const msg =
    line.msg === 'upstream'
      ? `  upstream ${f.upstream} ${f.method} ${f.path} ${f.status} ${f.ms} ms${f.attempt ? ` (retry ${f.attempt})` : ''}`
      : [f.method, f.path, f.status, size(Number(f.bytes)), `${f.ms} ms`, f.cache, f.upstream, f.aborted ? '(client left)' : undefined].filter((p) => p !== undefined).join(' ');
  const rest = Object.fromEntries(Object.entries(line).filter(([k]) => !summed.includes(k)));
  return { ...rest, msg };
}

/** A pino destination writing lines for a person to stdout, synchronously (a terminal's writes are). */
export function prettyStream(out: { write(text: string): unknown } = process.stdout): { write(line: string): void } {
  const pretty = prettyFactory({ colorize: true, singleLine: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname' });
  return {
    write(line: string) {
      let parsed: Line;
      try {
        parsed = JSON.parse(line) as Line;
      } catch {
        out.write(line);
        return;
      }
      out.write(pretty(summarize(parsed)));
    },
  };
}
