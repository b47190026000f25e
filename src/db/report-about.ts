// The reports' names and what each shows: the one list `ballast help` prints and reports.ts builds on, kept apart
// so that printing the help loads no query builder.
export type ReportName = 'pipelines' | 'steps' | 'models' | 'quality' | 'queue' | 'stuck' | 'dead-letters';

export const REPORT_ABOUT: Record<ReportName, string> = {
  pipelines: 'per pipeline version and period: jobs, success/retry/fallback/first-pass rates, latency p50/p95, cost',
  steps: 'the same per step',
  models: 'per provider/model and period: calls, errors by class, latency p50/p95, tokens, cost',
  quality: 'quality scores by prompt version and model over time (drift)',
  queue: 'queue depth and age by pipeline',
  stuck: 'waits past their deadline, expired leases, overdue retries, long-queued steps',
  'dead-letters': 'failed steps with their last error and attempts, newest first',
};

/** The help's list of reports, one indented line each. */
export function reportNames(): string {
  return Object.entries(REPORT_ABOUT).map(([name, about]) => `    ${name.padEnd(14)} ${about}`).join('\n');
}
