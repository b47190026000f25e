// The reports (migration 0012) by name, for `ballast report <name>`: each a fixed statement over a ballast report
// function or view, with the window (`since`, an interval) and period (hour/day) as parameters.
import { sql, type RawBuilder } from 'kysely';
import type { BallastDb } from './api.ts';

export type ReportName = 'pipelines' | 'steps' | 'models' | 'quality' | 'queue' | 'stuck' | 'dead-letters';

export const REPORTS: Record<ReportName, { about: string; query: (since: string, period: string, limit: number) => RawBuilder<Record<string, unknown>> }> = {
  pipelines: {
    about: 'per pipeline version and period: jobs, success/retry/fallback/first-pass rates, latency p50/p95, cost',
    query: (since, period) => sql`select * from ballast.report_pipelines(${since}::interval, ${period})`,
  },
  steps: {
    about: 'the same per step',
    query: (since, period) => sql`select * from ballast.report_steps(${since}::interval, ${period})`,
  },
  models: {
    about: 'per provider/model and period: calls, errors by class, latency p50/p95, tokens, cost',
    query: (since, period) => sql`select * from ballast.report_models(${since}::interval, ${period})`,
  },
  quality: {
    about: 'quality scores by prompt version and model over time (drift)',
    query: (since, period) => sql`select * from ballast.report_quality(${since}::interval, ${period})`,
  },
  queue: {
    about: 'queue depth and age by pipeline',
    query: () => sql`select * from ballast.queue_depth order by pipeline`,
  },
  stuck: {
    about: 'waits past their deadline, expired leases, overdue retries, long-queued steps',
    query: () => sql`select * from ballast.report_stuck()`,
  },
  'dead-letters': {
    about: 'failed steps with their last error and attempts, newest first',
    query: (_since, _period, limit) => sql`select * from ballast.dead_letters order by failed_at desc limit ${limit}`,
  },
};

export async function runReport(db: BallastDb, name: ReportName, o: { since: string; period: string; limit: number }): Promise<Record<string, unknown>[]> {
  const { rows } = await REPORTS[name].query(o.since, o.period, o.limit).execute(db.db);
  return rows;
}
