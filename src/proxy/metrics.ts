// GET /metrics: a few gauges and counters in the Prometheus text format, for the figures
// operators watch: each upstream's announced rate limit and health, and the S3 bucket's failures.
import type { FastifyInstance } from 'fastify';
import type { RoutedUpstream } from '../core/routing.js';

export interface MetricsSources {
  upstreams: readonly RoutedUpstream[];
  s3?: { readonly errors: number; readonly skipped: number } | undefined;
}

export function registerMetrics(app: FastifyInstance, sources: MetricsSources): void {
  app.get('/metrics', async (_req, reply) => reply.type('text/plain; version=0.0.4').send(renderMetrics(sources)));
}

export function renderMetrics(sources: MetricsSources): string {
  const lines: string[] = [];
  const gauge = (name: string, help: string, rows: [string, number][]) => {
    if (rows.length === 0) return;
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`);
    for (const [labels, value] of rows) lines.push(`${name}${labels} ${value}`);
  };
  const label = (u: RoutedUpstream) => `{upstream="${u.config.name.replace(/["\\\n]/g, '_')}"}`;
  const limited = sources.upstreams.flatMap((u) => {
    const rl = u.client.rateLimit();
    return rl ? [{ u, rl }] : [];
  });
  gauge('pullthrough_upstream_ratelimit_limit', 'Requests allowed per window, as the upstream last announced (ratelimit-limit).', limited.map(({ u, rl }) => [label(u), rl.limit]));
  gauge('pullthrough_upstream_ratelimit_remaining', 'Requests left in the window, as the upstream last announced (ratelimit-remaining).', limited.map(({ u, rl }) => [label(u), rl.remaining]));
  gauge('pullthrough_upstream_healthy', '1 unless the upstream failed several requests in a row recently.', sources.upstreams.map((u) => [label(u), u.client.healthy() ? 1 : 0]));
  if (sources.s3) {
    lines.push('# HELP pullthrough_s3_errors_total S3 requests that failed.', '# TYPE pullthrough_s3_errors_total counter', `pullthrough_s3_errors_total ${sources.s3.errors}`);
    lines.push('# HELP pullthrough_s3_skipped_total S3 requests not sent while the bucket was paused.', '# TYPE pullthrough_s3_skipped_total counter', `pullthrough_s3_skipped_total ${sources.s3.skipped}`);
  }
  return `${lines.join('\n')}\n`;
}
