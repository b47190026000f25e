// The operator commands of the `ballast` CLI that read: `jobs` (a filtered list) and `report <name>` (the SQL
// reports as tables). Each returns the process exit code.
import type { BallastDb } from '../db/api.ts';
import { REPORTS, runReport, type ReportName } from '../db/reports.ts';
import { reportNames } from '../db/report-about.ts';
import { intOption } from './args.ts';
import { UsageError } from './errors.ts';
import { numericColumns, withNumbers } from './json.ts';
import { table } from './table.ts';
import { JOB_STATUSES } from '../statuses.ts';

/** The usage error of these commands (the CLI's UsageError: exit 2). */
export const CliUsageError = UsageError;

export { reportNames };

/** A --since Postgres cannot read as an interval is a usage error, not a crash. */
async function withSince<T>(since: string | undefined, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const code = (err as { code?: string; cause?: { code?: string } }).code ?? (err as { cause?: { code?: string } }).cause?.code;
    if (since !== undefined && (code === '22007' || code === '22P02' || code === '22008' || code === '22015')) {
      throw new UsageError(`--since ${since} is not an interval; write e.g. '30 minutes', '24 hours' or '7 days'`);
    }
    throw err;
  }
}

export async function listJobsCommand(db: BallastDb, o: { status?: string; pipeline?: string; tenant?: string; since?: string; limit?: string; parent?: string; json?: boolean }): Promise<number> {
  if (o.status && !(JOB_STATUSES as readonly string[]).includes(o.status)) throw new UsageError(`--status ${o.status} is not a job status (${JOB_STATUSES.join(', ')})`);
  if (o.parent !== undefined && !/^[1-9][0-9]{0,18}$/.test(o.parent)) throw new UsageError(`--parent ${o.parent} is not a job id (a positive integer)`);
  const limit = intOption('--limit', o.limit, 20, 1000);
  const jobs = await withSince(o.since, () => db.listJobs({ status: o.status, pipeline: o.pipeline, tenantId: o.tenant, since: o.since, limit, parentJobId: o.parent }));
  if (o.json) {
    console.log(JSON.stringify(withNumbers(jobs)));
  } else {
    console.log(table(jobs.map((j) => ({
      id: j.id, pipeline: `${j.pipeline}@${j.pipeline_version}`, tenant: j.tenant_id, status: j.status, created_at: j.created_at,
      finished_at: j.finished_at, cost_usd: Number(j.cost_usd), error: (j.error as { message?: string } | null)?.message ?? null,
      ...(jobs.some((x) => x.parent_job_id) ? { parent: j.parent_job_id } : {}),
    }))));
  }
  return 0;
}

export async function reportCommand(db: BallastDb, name: string | undefined, o: { since?: string; period?: string; limit?: string; json?: boolean }): Promise<number> {
  if (!name || !(name in REPORTS)) {
    throw new UsageError(`report needs one of these names:\n${reportNames()}\ne.g. \`ballast report pipelines --since '7 days' --period day\``);
  }
  const period = o.period ?? 'hour';
  if (!['hour', 'day'].includes(period)) throw new UsageError(`--period ${period} is not hour or day`);
  const limit = intOption('--limit', o.limit, 50, 10_000);
  const result = await withSince(o.since, () => runReport(db, name as ReportName, { since: o.since ?? '24 hours', period, limit }));
  const rows = numericColumns(result);
  console.log(o.json ? JSON.stringify(rows) : table(rows, 48));
  return 0;
}
