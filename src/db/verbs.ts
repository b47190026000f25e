// The client verbs, one statement each, for every TypeScript caller: BallastDb runs them on its pool (src/db/api.ts),
// the GraphQL server through PostGraphile's client, inside the transaction that carries the caller's role, tenant and
// actor (pgSettings), so row-level security and the functions' own checks (migrations/0001_foundations.sql) apply exactly
// as they do to a psql user with that role. One statement per verb, not a copy per caller. Also what subscriptions
// read to authorize and catch up. Ids (bigint) leave as strings, like GraphQL's BigInt. `actor` null: the session's
// ballast.actor (the API sets it from the token), else the function's own default.

import type { JobStatus, StepStatus } from '../statuses.ts';

/** The part of a pg client these statements need (PostGraphile's PgClient and pg's Client both fit). */
export interface Queryable {
  query<R>(opts: { text: string; values?: readonly unknown[] }): Promise<{ rows: readonly R[] }>;
}

async function one<R>(client: Queryable, text: string, values: readonly unknown[]): Promise<R> {
  const { rows } = await client.query<R>({ text, values });
  return rows[0]!;
}

const json = (value: unknown) => (value === undefined ? null : JSON.stringify(value));

/** $2, a JSON array, as the jsonb[] of its elements (ballast.submit_jobs' p_inputs). */
export const INPUTS_ARRAY = `(select coalesce(array_agg(x.e order by x.n), '{}') from jsonb_array_elements($2::jsonb) with ordinality x(e, n))`;

/**
 * When a job starts and its limits (migration 0039): a time (runAt) or milliseconds from the database's now
 * (delayMs), not both; the time by which it must finish (deadline) and start (expiresAt).
 */
export interface StartArgs {
  runAt?: Date | string | null | undefined; delayMs?: number | null | undefined;
  deadline?: Date | string | null | undefined; expiresAt?: Date | string | null | undefined;
}
const time = (v: Date | string | null | undefined) => (v instanceof Date ? v.toISOString() : (v ?? null));
const startValues = (a: StartArgs) => [time(a.runAt), a.delayMs ?? null, time(a.deadline), time(a.expiresAt)];

/** Debounce (one job per burst of a key) and throttle (one job per key per period) of submit_job (migration 0039). */
export interface Debounce { key: string; quietMs: number; maxWaitMs?: number | null | undefined }
export interface Throttle { key: string; periodMs: number }
const debounceJson = (d: Debounce | null | undefined) =>
  (d == null ? null : JSON.stringify({ key: d.key, quiet_ms: d.quietMs, ...(d.maxWaitMs == null ? {} : { max_wait_ms: d.maxWaitMs }) }));
const throttleJson = (d: Throttle | null | undefined) => (d == null ? null : JSON.stringify({ key: d.key, period_ms: d.periodMs }));

export interface SubmitArgs extends StartArgs {
  pipeline: string; input: unknown; idempotencyKey: string | null; tenantId: string; priority: number; pipelineVersion: number | null;
  debounce?: Debounce | null | undefined; throttle?: Throttle | null | undefined;
}
export const submitJob = (c: Queryable, a: SubmitArgs) =>
  one<{ jobId: string; created: boolean; status: JobStatus; pipelineVersion: number }>(c,
    `select job_id::text as "jobId", created, status, pipeline_version as "pipelineVersion"
       from ballast.submit_job($1, coalesce($2::jsonb, '{}'), $3, $4, $5, $6, $7::timestamptz, $8::float8, $9::timestamptz, $10::timestamptz,
                               $11::jsonb, $12::jsonb)`,
    [a.pipeline, json(a.input), a.idempotencyKey, a.tenantId, a.priority, a.pipelineVersion, ...startValues(a),
      debounceJson(a.debounce), throttleJson(a.throttle)]);

export interface SubmitManyArgs extends StartArgs {
  pipeline: string; inputs: readonly unknown[]; idempotencyKeys: readonly (string | null)[] | null; tenantId: string;
  priority: number; pipelineVersion: number | null;
}
/** ballast.submit_jobs: one row per input, in input order. The inputs travel as one JSON array (jsonb[] in SQL). */
export const submitJobs = async (c: Queryable, a: SubmitManyArgs) =>
  (await c.query<{ jobId: string; created: boolean; status: JobStatus }>({
    text: `select s.job_id::text as "jobId", s.created, s.status
             from ballast.submit_jobs($1, ${INPUTS_ARRAY}, $3::text[], $4, $5, $6, $7::timestamptz, $8::float8, $9::timestamptz, $10::timestamptz) s order by s.ord`,
    values: [a.pipeline, JSON.stringify(a.inputs), a.idempotencyKeys, a.tenantId, a.priority, a.pipelineVersion, ...startValues(a)],
  })).rows;

export const cancelJob = (c: Queryable, jobId: string, reason: string | null, actor: string | null = null) =>
  one<{ jobId: string; status: JobStatus; cancelledStepIds: string[]; alreadyCancelled: boolean }>(c,
    `select job_id::text as "jobId", status, cancelled_step_ids::text[] as "cancelledStepIds", already_cancelled as "alreadyCancelled"
       from ballast.cancel_job($1, $2, $3)`, [jobId, reason, actor]);

export interface ReplayResult { jobId: string; replayedStepIds: string[]; jobStatus: JobStatus }
export const replayStep = (c: Queryable, stepId: string, reason: string | null, force: boolean, actor: string | null = null, freshCalls = false) =>
  one<ReplayResult>(c,
    `select job_id::text as "jobId", replayed_step_ids::text[] as "replayedStepIds", job_status as "jobStatus"
       from ballast.replay_step($1, $2, $3, $4, $5)`, [stepId, reason, force, actor, freshCalls]);

export const replayJob = (c: Queryable, jobId: string, fromStep: string | null, reason: string | null, actor: string | null = null, freshCalls = false) =>
  one<ReplayResult>(c,
    `select job_id::text as "jobId", replayed_step_ids::text[] as "replayedStepIds", job_status as "jobStatus"
       from ballast.replay_job($1, $2, $3, $4, $5)`, [jobId, fromStep, reason, actor, freshCalls]);

export const sendEvent = (c: Queryable, key: string, payload: unknown, tenantId: string | null = null, actor: string | null = null) =>
  one<{ accepted: boolean; resumedStepIds: string[] }>(c,
    `select accepted, resumed_step_ids::text[] as "resumedStepIds" from ballast.send_event($1, $2::jsonb, $4, $3)`,
    [key, json(payload), tenantId, actor]);

export const resolveReview = (c: Queryable, stepId: string, decision: string, output: unknown, reviewer: string, note: string | null) =>
  one<{ stepId: string; jobId: string; stepStatus: StepStatus; jobStatus: JobStatus; queuedStepIds: string[] }>(c,
    `select $1::bigint::text as "stepId", (select s.job_id::text from ballast.steps s where s.id = $1) as "jobId",
            r.step_status as "stepStatus", r.job_status as "jobStatus", r.queued_step_ids::text[] as "queuedStepIds"
       from ballast.resolve_review($1, $2, $3::jsonb, $4, $5) r`, [stepId, decision, json(output), reviewer, note]);

export interface ScheduleArgs {
  name: string; pipeline: string; cron: string; input: unknown; timeZone: string | null; tenantId: string | null;
  pipelineVersion: number | null; priority: number | null; onMissed: string | null; maxCatchUp: number | null;
}
/** ballast.set_schedule (migration 0033): creates or replaces a cron schedule; returns its id. */
export const setSchedule = (c: Queryable, a: ScheduleArgs, actor: string | null = null) =>
  one<{ scheduleId: string; nextFireAt: Date | null }>(c,
    `select id::text as "scheduleId", next_fire_at as "nextFireAt"
       from ballast.set_schedule($1, $2, $3, coalesce($4::jsonb, '{}'), coalesce($5, 'UTC'), $6, $7, coalesce($8, 0),
                                 coalesce($9, 'skip'), coalesce($10, 10), $11)`,
    [a.name, a.pipeline, a.cron, json(a.input), a.timeZone, a.tenantId, a.pipelineVersion, a.priority, a.onMissed, a.maxCatchUp, actor]);

/** ballast.pause_schedule: pauses (paused true) or resumes a schedule; returns its id. */
export const pauseSchedule = (c: Queryable, name: string, paused: boolean, reason: string | null, tenantId: string | null, actor: string | null = null) =>
  one<{ scheduleId: string; nextFireAt: Date | null }>(c,
    `select id::text as "scheduleId", next_fire_at as "nextFireAt" from ballast.pause_schedule($1, $2, $3, $4, $5)`,
    [name, paused, reason, tenantId, actor]);

export const deleteSchedule = (c: Queryable, name: string, tenantId: string | null) =>
  one<{ deleted: boolean }>(c, 'select ballast.delete_schedule($1, $2) as deleted', [name, tenantId]);

/** An event as replayed to a subscriber: ballast.events_after's row (migrations/0004_state_machines.sql), ids as text. */
export interface ReplayedEvent {
  id: string;
  tx: string;
  job_id: string;
  step_id: string | null;
  type: string;
  status: string | null;
  tenant_id: string | null;
  step_name: string | null;
  at: string | null;
}

// One replayed event over r (a row of ballast.events_after), in the shape live events have (event-stream.ts).
const REPLAY_JSON = `json_build_object('id', r.id::text, 'tx', r.tx::text, 'job_id', r.job_id::text, 'step_id', r.step_id::text,
  'type', r.type, 'status', r.status, 'tenant_id', r.tenant_id, 'step_name', r.step_name, 'at', r.at)`;

export interface JobSnapshotRow {
  /** pg_snapshot_xmin of the statement: the snapshot reflects every event below it (and maybe some above). */
  watermark: string;
  /** The transaction of event `after` (null without one): live delivery starts after (afterTx, after) at the earliest. */
  afterTx: string | null;
  job: Record<string, unknown> | null;
  steps: Record<string, unknown>[];
  replay: ReplayedEvent[];
  /** The job's last event below the watermark in delivery order: where a resume after this snapshot starts. */
  lastEventId: string | null;
}

/**
 * One statement, so one snapshot: the job and its steps as the caller may see them (no row: unknown or another
 * tenant's), the job's events after `after` in delivery order (ballast.events_after: at most `limit`; none when
 * `after` is null; BA007 when `after` is no event the caller can see), the watermark, and the transaction of
 * `after`. Events the snapshot reflects that were not final yet follow it live (they are after its eventId).
 */
export const jobSnapshot = (c: Queryable, jobId: string, after: string | null, limit: number) =>
  one<JobSnapshotRow>(c, `
    with w as (select pg_snapshot_xmin(pg_current_snapshot()) as mark)
    select w.mark::text as watermark,
           (select e.tx::text from ballast_private.events e where e.id = $2) as "afterTx",
           (select json_build_object('id', j.id::text, 'tenantId', j.tenant_id, 'pipeline', j.pipeline,
                   'pipelineVersion', j.pipeline_version, 'status', j.status, 'result', j.result, 'error', j.error,
                   'createdAt', j.created_at, 'updatedAt', j.updated_at, 'finishedAt', j.finished_at)
              from ballast.jobs j where j.id = $1) as job,
           (select coalesce(json_agg(json_build_object('id', s.id::text, 'name', s.name, 'status', s.status,
                   'attemptCount', s.attempts, 'maxAttempts', s.max_attempts, 'progress', s.progress,
                   'updatedAt', s.updated_at) order by s.id), '[]')
              from ballast.steps s where s.job_id = $1) as steps,
           (select coalesce(json_agg(${REPLAY_JSON} order by r.tx, r.id), '[]')
              from ballast.events_after($2, null, $1, $3) r where $2::bigint is not null) as replay,
           (select e.id::text from ballast_private.events e where e.job_id = $1 and e.tx < w.mark
             order by e.tx desc, e.id desc limit 1) as "lastEventId"
      from w`,
    [jobId, after, limit]);

/**
 * The events after `after` in delivery order (oldest first, at most `limit`) of one tenant, or of every tenant the
 * caller sees, with the watermark of the statement (every final event below it after `after` is in the list, unless
 * `limit` cut it) and the transaction of `after` itself. BA007 when `after` is no event the caller can see.
 */
export const eventsAfter = (c: Queryable, after: string, tenantId: string | null, limit: number) =>
  one<{ watermark: string; afterTx: string | null; events: ReplayedEvent[] }>(c, `
    with w as (select pg_snapshot_xmin(pg_current_snapshot()) as mark)
    select w.mark::text as watermark,
           (select e.tx::text from ballast_private.events e where e.id = $1) as "afterTx",
           (select coalesce(json_agg(${REPLAY_JSON} order by r.tx, r.id), '[]')
              from ballast.events_after($1, $2, null, $3) r) as events
      from w`,
    [after, tenantId, limit]);

/** A cheap liveness check for the health endpoint. */
export const ping = (c: Queryable) => one<{ ok: number }>(c, 'select 1 as ok', []);
