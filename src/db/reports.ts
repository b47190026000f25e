// The reports (migrations/0011_reports.sql) by name, for `ballast report <name>`: each a fixed statement over a ballast report
// function or view, with the window (`since`, an interval) and period (hour/day) as parameters.
import { sql, type RawBuilder } from 'kysely';
import type pg from 'pg';
import type { BallastDb } from './api.ts';

import { REPORT_ABOUT, type ReportName } from './report-about.ts';

export type { ReportName };

export const REPORTS: Record<ReportName, { about: string; query: (since: string, period: string, limit: number) => RawBuilder<Record<string, unknown>> }> = {
  pipelines: {
    about: REPORT_ABOUT['pipelines'],
    query: (since, period) => sql`select * from ballast.report_pipelines(${since}::interval, ${period})`,
  },
  steps: {
    about: REPORT_ABOUT['steps'],
    query: (since, period) => sql`select * from ballast.report_steps(${since}::interval, ${period})`,
  },
  models: {
    about: REPORT_ABOUT['models'],
    query: (since, period) => sql`select * from ballast.report_models(${since}::interval, ${period})`,
  },
  quality: {
    about: REPORT_ABOUT['quality'],
    query: (since, period) => sql`select * from ballast.report_quality(${since}::interval, ${period})`,
  },
  queue: {
    about: REPORT_ABOUT['queue'],
    query: () => sql`select * from ballast.queue_depth order by pipeline`,
  },
  stuck: {
    about: REPORT_ABOUT['stuck'],
    query: () => sql`select * from ballast.report_stuck()`,
  },
  'dead-letters': {
    about: REPORT_ABOUT['dead-letters'],
    query: () => sql`select * from ballast.dead_letters order by failed_at desc`,
  },
};

/**
 * The first `limit` rows of a report, in its order (every report takes the limit, as a subquery: the report functions
 * take none). The pg result keeps the column types (the CLI prints bigint and numeric columns as JSON numbers).
 */
export async function runReport(db: BallastDb, name: ReportName, o: { since: string; period: string; limit: number }): Promise<pg.QueryResult<Record<string, unknown>>> {
  const inner = REPORTS[name].query(o.since, o.period, o.limit);
  const compiled = sql`select * from (${inner}) as report limit ${o.limit}`.compile(db.db);
  return await db.pool.query({ text: compiled.sql, values: [...compiled.parameters] });
}
