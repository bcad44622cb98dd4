// Medians, ranges and ratio formatting for the benchmark report.

export function median(xs: readonly number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export const min = (xs: readonly number[]): number => (xs.length ? Math.min(...xs) : NaN);
export const max = (xs: readonly number[]): number => (xs.length ? Math.max(...xs) : NaN);

/** Per-round ratios a[i]/b[i] of two paired series. */
export function pairedRatios(a: readonly number[], b: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 0; i < Math.min(a.length, b.length); i++) out.push(a[i]! / b[i]!);
  return out;
}

export function fmt(x: number, digits = 2): string {
  if (!Number.isFinite(x)) return 'n/a';
  return x.toFixed(digits);
}

export function fmtInt(x: number): string {
  if (!Number.isFinite(x)) return 'n/a';
  return Math.round(x).toLocaleString('en-US');
}

/** "0.97 (0.91–1.03)": ratio of medians, then the range of the per-round ratios. */
export function ratioCell(a: readonly number[], b: readonly number[]): string {
  const r = median(a) / median(b);
  const per = pairedRatios(a, b);
  return per.length > 1 ? `${fmt(r)} (${fmt(min(per))}–${fmt(max(per))})` : fmt(r);
}

export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]): string => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}
