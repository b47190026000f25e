// The job and step statuses, once for the TypeScript side. The database holds the same facts as data: the state
// machines ballast.job_transitions and ballast.step_transitions (migrations/0002_tables.sql), where a final status is one that
// is left only through a replay (via_replay). test/facts.test.ts checks these lists against those tables, and every
// hand-written status list in the SQL functions and views against these lists.

export const JOB_STATUSES = [
  'scheduled', 'queued', 'running', 'waiting', 'retrying', 'needs_review',
  'completed', 'partially_completed', 'failed', 'cancelled',
] as const;

export const STEP_STATUSES = [
  'scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review',
  'succeeded', 'failed', 'cancelled', 'skipped',
] as const;

export type JobStatus = (typeof JOB_STATUSES)[number];
export type StepStatus = (typeof STEP_STATUSES)[number];

/** A job in one of these has finished: it changes again only through an audited replay. */
export const FINAL_JOB_STATUSES = ['completed', 'partially_completed', 'failed', 'cancelled'] as const satisfies readonly JobStatus[];

/** A step in one of these has finished: it changes again only through an audited replay. */
export const FINAL_STEP_STATUSES = ['succeeded', 'failed', 'cancelled', 'skipped'] as const satisfies readonly StepStatus[];

export type FinalJobStatus = (typeof FINAL_JOB_STATUSES)[number];
export type FinalStepStatus = (typeof FINAL_STEP_STATUSES)[number];

const finalJob: ReadonlySet<string> = new Set(FINAL_JOB_STATUSES);
const finalStep: ReadonlySet<string> = new Set(FINAL_STEP_STATUSES);

/** Whether a job status (any string: a notification's, a row's) is final. */
export function isFinalJobStatus(status: string | null | undefined): status is FinalJobStatus {
  return status != null && finalJob.has(status);
}

/** Whether a step status is final. */
export function isFinalStepStatus(status: string | null | undefined): status is FinalStepStatus {
  return status != null && finalStep.has(status);
}
