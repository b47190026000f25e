// A small history written straight into the ballast_private tables (as the owner), with fixed timestamps, so the
// reports (migrations/0011_reports.sql) have answers computed by hand. The clock of every test that reads it is NOW
// (set ballast.now). Times are 'HH:MM:SS' on 2030-01-02 (UTC) unless a full timestamp is given.
//
//   job  pipeline  ver tenant  submitted  status               steps (attempts)
//   J0   rep.a     1   acme    12-30 10:00 completed           fetch ok, rate ok (3 days before: outside 24 hours)
//   J1   rep.a     1   acme    10:00:00   completed            fetch ok (wait 1 s, run 2 s), rate valid_first_try (wait 2 s, run 4 s)
//   J2   rep.a     1   acme    10:10:00   completed            fetch failed then ok (a retry), rate fell_back
//   J3   rep.a     1   acme    10:20:00   failed               fetch ok, rate rejected: failed (a dead letter)
//   J4   rep.a     1   acme    10:30:00   running              fetch running, lease expired at 10:31 (stuck)
//   J5   rep.a     1   globex  10:40:00   cancelled            never ran
//   J6   rep.a     2   acme    11:00:00   completed            rate degraded
//   J7   rep.a     2   acme    11:05:00   needs_review         rate review
//   J8   rep.b     1   acme    11:10:00   partially_completed  map split: item 0 ok, item 1 failed twice (a dead letter)
//   J9   rep.a     1   acme    11:30:00   queued               fetch queued since 11:30 (queued too long)
//   J10  rep.b     1   globex  11:50:00   retrying             split retrying, due 11:59:30
//   J11  rep.a     1   acme    11:20:00   waiting              fetch waiting, deadline 11:40 passed
//   J12  rep.a     1   acme    11:40:00   retrying             fetch retrying, due 11:50 (overdue)
//   J13  rep.a     1   acme    11:45:00   retrying             fetch retrying, due 12:30 (later)
import type pg from 'pg';
import { isFinalStepStatus } from '../../src/statuses.ts';

export const NOW = '2030-01-02T12:00:00Z';
const T = (t: string) => (t.includes('T') ? t : `2030-01-02T${t}Z`);

interface SeedAttempt {
  outcome: string; start: string; end?: string; lease?: string; errorClass?: string;
  contract?: string; fallback?: boolean; detail?: unknown; cost?: number; inTok?: number; outTok?: number; score?: number;
}
interface SeedStep {
  name: string; status: string; deps?: string[]; parent?: string; index?: number; item?: unknown;
  created?: string; queued?: string; attempts?: SeedAttempt[]; error?: Record<string, unknown>; nextRunAt?: string;
  waitKey?: string; waitDeadline?: string; output?: unknown; progress?: unknown; review?: unknown;
  cost?: number; inTok?: number; outTok?: number;
}
export interface SeedJob {
  key: string; tenant: string; pipeline: string; version: number; status: string; created: string; finished?: string;
  cost?: number; inTok?: number; outTok?: number; input?: unknown; result?: unknown; steps: SeedStep[];
}
export interface SeedCall {
  job: string; step: string; attempt: number; provider: string; model: string; start: string; latencyMs: number;
  errorClass?: string; cost?: number | null; inTok?: number; outTok?: number; score?: number; rawOutput?: string;
  validationIssues?: unknown; rung?: string;
  /** The answer reported no token usage: charged the reservation's estimate (0028). */
  usageMissing?: boolean;
}


/** Writes the jobs, steps, attempts and calls; returns job ids by key and step ids by 'key.step'. */
export async function seed(pool: pg.Pool, jobs: SeedJob[], calls: SeedCall[]): Promise<{ job: Record<string, string>; step: Record<string, string>; attempt: Record<string, string> }> {
  const ids = { job: {} as Record<string, string>, step: {} as Record<string, string>, attempt: {} as Record<string, string> };
  for (const pipeline of new Set(jobs.map((j) => `${j.pipeline}@${j.version}`))) {
    const [name, version] = pipeline.split('@');
    await pool.query(`insert into ballast_private.pipelines (name, version, definition, input_schema, definition_hash)
                      values ($1, $2, '{"steps": []}', 'true', repeat('0', 64)) on conflict do nothing`, [name, version]);
  }
  for (const j of jobs) {
    const firstStart = j.steps.flatMap((s) => s.attempts ?? []).map((a) => T(a.start)).sort()[0] ?? null;
    const { rows: [job] } = await pool.query(
      `insert into ballast_private.jobs (tenant_id, pipeline, pipeline_version, request_hash, input, status, result,
                                         created_at, started_at, finished_at, updated_at, cost_usd, input_tokens, output_tokens)
       values ($1, $2, $3, 'h', $4, $5, $6, $7, $8, $9, $7, $10, $11, $12) returning id`,
      [j.tenant, j.pipeline, j.version, JSON.stringify(j.input ?? { text: `input of ${j.key}` }), j.status,
       j.result === undefined ? null : JSON.stringify(j.result), T(j.created), firstStart, j.finished ? T(j.finished) : null,
       j.cost ?? 0, j.inTok ?? 0, j.outTok ?? 0]);
    ids.job[j.key] = job.id;
    // All the job's steps in ONE statement (ids taken from the identity's sequence first, so items can name their
    // map step): the job's counters (0004_state_machines) then see them together and derive the status the job was written with.
    const { rows: newIds } = await pool.query<{ id: string }>(
      `select nextval(pg_get_serial_sequence('ballast_private.steps', 'id'))::text as id from generate_series(1, $1)`, [j.steps.length]);
    j.steps.forEach((s, i) => (ids.step[`${j.key}.${s.name}`] = newIds[i]!.id));
    const rows = j.steps.map((s) => {
      const attempts = s.attempts ?? [];
      const created = T(s.created ?? j.created);
      const queued = s.queued ? T(s.queued) : (s.status === 'pending' ? null : created);
      const last = attempts.at(-1);
      const finished = isFinalStepStatus(s.status) ? T(last?.end ?? j.finished ?? j.created) : null;
      return {
        id: ids.step[`${j.key}.${s.name}`], name: s.name, status: s.status, depends_on: s.deps ?? [],
        deps_remaining: s.status === 'pending' ? (s.deps ?? []).length : 0, attempts: attempts.length,
        attempt_offset: attempts.filter((a) => a.outcome === 'parked').length,
        output: s.output === undefined ? null : s.output, error: s.error ?? null,
        progress: s.progress === undefined ? null : s.progress, next_run_at: s.nextRunAt ? T(s.nextRunAt) : null,
        created_at: created, queued_at: queued, started_at: attempts[0] ? T(attempts[0].start) : null, finished_at: finished,
        wait_key: s.waitKey ?? null, wait_deadline: s.waitDeadline ? T(s.waitDeadline) : null, wait_on_timeout: s.waitKey ? 'fail' : null,
        parent_step_id: s.parent ? ids.step[`${j.key}.${s.parent}`] : null, item_index: s.index ?? null,
        item: s.item === undefined ? null : s.item, review: s.review === undefined ? null : s.review,
        cost_usd: s.cost ?? 0, input_tokens: s.inTok ?? 0, output_tokens: s.outTok ?? 0,
      };
    });
    await pool.query(
      `insert into ballast_private.steps (id, job_id, name, status, depends_on, deps_remaining, attempts, attempt_offset, max_attempts,
                                          backoff_base_ms, backoff_cap_ms, output, error, progress, next_run_at, created_at, queued_at,
                                          started_at, finished_at, wait_key, wait_deadline, wait_on_timeout, parent_step_id,
                                          item_index, item, review, cost_usd, input_tokens, output_tokens)
       overriding system value
       select r.id, $1, r.name, r.status, r.depends_on, r.deps_remaining, r.attempts, r.attempt_offset, 3, 1000, 60000,
              r.output, r.error, r.progress, r.next_run_at, r.created_at, r.queued_at, r.started_at, r.finished_at, r.wait_key,
              r.wait_deadline, r.wait_on_timeout, r.parent_step_id, r.item_index, r.item, r.review, r.cost_usd, r.input_tokens,
              r.output_tokens
         from jsonb_to_recordset($2::jsonb) as r(id bigint, name text, status text, depends_on text[], deps_remaining int,
              attempts int, attempt_offset int, output jsonb, error jsonb, progress jsonb, next_run_at timestamptz,
              created_at timestamptz, queued_at timestamptz, started_at timestamptz, finished_at timestamptz, wait_key text,
              wait_deadline timestamptz, wait_on_timeout text, parent_step_id bigint, item_index int, item jsonb, review jsonb,
              cost_usd numeric, input_tokens int, output_tokens int)`,
      [job.id, JSON.stringify(rows)]);
    for (const s of j.steps) {
      const attempts = s.attempts ?? [];
      const step = { id: ids.step[`${j.key}.${s.name}`]! };
      for (const [i, a] of attempts.entries()) {
        const { rows: [attempt] } = await pool.query(
          `insert into ballast_private.attempts (step_id, job_id, number, outcome, started_at, lease_expires_at, finished_at,
                                                 error_class, error_message, contract_outcome, contract_detail, fallback_used,
                                                 quality_score, cost_usd, input_tokens, output_tokens)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) returning id`,
          [step.id, job.id, i + 1, a.outcome, T(a.start), T(a.lease ?? a.end ?? a.start), a.end ? T(a.end) : null,
           a.errorClass ?? null, a.errorClass ? `${a.errorClass} error` : null, a.contract ?? null,
           a.contract ? JSON.stringify(a.detail ?? { reason: `the ladder said ${a.contract}`, model: 'openai:gpt-4o-mini' }) : null,
           a.contract ? a.fallback ?? false : null, a.score ?? null, a.cost ?? 0, a.inTok ?? 0, a.outTok ?? 0]);
        ids.attempt[`${j.key}.${s.name}.${i + 1}`] = attempt.id;
      }
    }
  }
  for (const c of calls) {
    const start = new Date(T(c.start));
    await pool.query(
      `insert into ballast_private.model_calls (attempt_id, step_id, job_id, tenant_id, rung, provider, requested_model,
                                                prompt_name, prompt_version, started_at, ended_at, latency_ms, input_tokens,
                                                output_tokens, cost_usd, error_class, raw_output, validation_issues, score, usage_missing)
       select a.id, a.step_id, a.job_id, j.tenant_id, $2, $3, $4, 'review.rate', 1, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15
         from ballast_private.attempts a join ballast_private.jobs j on j.id = a.job_id where a.id = $1`,
      [ids.attempt[`${c.job}.${c.step}.${c.attempt}`], c.rung ?? 'primary', c.provider, c.model, start.toISOString(),
       new Date(start.getTime() + c.latencyMs).toISOString(), c.latencyMs, c.inTok ?? null, c.outTok ?? null,
       c.cost === undefined ? null : c.cost, c.errorClass ?? null, c.rawOutput ?? null,
       c.validationIssues === undefined ? null : JSON.stringify(c.validationIssues), c.score ?? null, c.usageMissing ?? false]);
  }
  return ids;
}

const ok = (start: string, end: string, more: Partial<SeedAttempt> = {}): SeedAttempt => ({ outcome: 'succeeded', start, end, ...more });

/** The history of the table above. */
export const HISTORY: SeedJob[] = [
  { key: 'J0', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'completed', created: '2029-12-30T10:00:00Z', finished: '2029-12-30T10:00:05Z',
    cost: 0.004, inTok: 40, outTok: 4, result: { label: 'old' }, steps: [
      { name: 'fetch', status: 'succeeded', output: { text: 'old page' }, attempts: [ok('2029-12-30T10:00:01Z', '2029-12-30T10:00:02Z')] },
      { name: 'rate', status: 'succeeded', deps: ['fetch'], queued: '2029-12-30T10:00:02Z', output: { label: 'old' }, cost: 0.004, inTok: 40, outTok: 4,
        attempts: [ok('2029-12-30T10:00:03Z', '2029-12-30T10:00:05Z', { contract: 'valid_first_try', cost: 0.004, inTok: 40, outTok: 4, score: 0.95 })] },
    ] },
  { key: 'J1', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'completed', created: '10:00:00', finished: '10:00:09',
    cost: 0.01, inTok: 100, outTok: 10, result: { label: 'good' }, steps: [
      { name: 'fetch', status: 'succeeded', output: { text: 'a page of text '.repeat(50) }, progress: { done: 1 }, attempts: [ok('10:00:01', '10:00:03')] },
      { name: 'rate', status: 'succeeded', deps: ['fetch'], queued: '10:00:03', output: { label: 'good' }, cost: 0.01, inTok: 100, outTok: 10,
        attempts: [ok('10:00:05', '10:00:09', { contract: 'valid_first_try', cost: 0.01, inTok: 100, outTok: 10, score: 0.9 })] },
    ] },
  { key: 'J2', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'completed', created: '10:10:00', finished: '10:10:10',
    cost: 0.02, inTok: 200, outTok: 20, result: { label: 'fine' }, steps: [
      { name: 'fetch', status: 'succeeded', queued: '10:10:05', output: { text: 'page two' },
        attempts: [{ outcome: 'failed', start: '10:10:02', end: '10:10:03', errorClass: 'transport' }, ok('10:10:05', '10:10:06')] },
      { name: 'rate', status: 'succeeded', deps: ['fetch'], queued: '10:10:06', output: { label: 'fine' }, cost: 0.02, inTok: 200, outTok: 20,
        attempts: [ok('10:10:07', '10:10:10', { contract: 'fell_back', fallback: true, cost: 0.02, inTok: 200, outTok: 20, score: 0.7 })] },
    ] },
  { key: 'J3', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'failed', created: '10:20:00', finished: '10:20:08',
    cost: 0.005, inTok: 50, outTok: 5, steps: [
      { name: 'fetch', status: 'succeeded', output: { text: 'page three' }, attempts: [ok('10:20:04', '10:20:05')] },
      { name: 'rate', status: 'failed', deps: ['fetch'], queued: '10:20:05', cost: 0.005, inTok: 50, outTok: 5,
        error: { class: 'client', code: 'unauthorized', message: 'the provider refused the key', retryable: false, attempt: 1 },
        attempts: [{ outcome: 'failed', start: '10:20:06', end: '10:20:08', errorClass: 'client', contract: 'rejected', cost: 0.005, inTok: 50, outTok: 5 }] },
    ] },
  { key: 'J4', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'running', created: '10:30:00', steps: [
      { name: 'fetch', status: 'running', attempts: [{ outcome: 'running', start: '10:30:01', lease: '10:31:00' }] },
      { name: 'rate', status: 'pending', deps: ['fetch'] },
    ] },
  { key: 'J5', tenant: 'globex', pipeline: 'rep.a', version: 1, status: 'cancelled', created: '10:40:00', finished: '10:41:00', steps: [
      { name: 'fetch', status: 'cancelled' },
      { name: 'rate', status: 'cancelled', deps: ['fetch'] },
    ] },
  { key: 'J6', tenant: 'acme', pipeline: 'rep.a', version: 2, status: 'completed', created: '11:00:00', finished: '11:00:04',
    result: { label: 'neutral' }, steps: [
      { name: 'fetch', status: 'succeeded', output: { text: 'p6' }, attempts: [ok('11:00:01', '11:00:02')] },
      { name: 'rate', status: 'succeeded', deps: ['fetch'], queued: '11:00:02', output: { label: 'neutral' },
        attempts: [ok('11:00:02', '11:00:04', { contract: 'degraded', score: 0.5 })] },
    ] },
  { key: 'J7', tenant: 'acme', pipeline: 'rep.a', version: 2, status: 'needs_review', created: '11:05:00', steps: [
      { name: 'fetch', status: 'succeeded', output: { text: 'p7' }, attempts: [ok('11:05:01', '11:05:02')] },
      { name: 'rate', status: 'needs_review', deps: ['fetch'], queued: '11:05:02',
        review: { reason: 'quality below 0.7', proposed: { label: 'maybe' }, detail: { score: 0.4 }, requested_at: T('11:05:06') },
        attempts: [{ outcome: 'needs_review', start: '11:05:03', end: '11:05:06', contract: 'review' }] },
    ] },
  { key: 'J8', tenant: 'acme', pipeline: 'rep.b', version: 1, status: 'partially_completed', created: '11:10:00', finished: '11:10:09',
    result: { succeeded: 1, failed: 1 }, steps: [
      { name: 'split', status: 'succeeded', output: { succeeded: 1, failed: 1 }, attempts: [ok('11:10:01', '11:10:02')] },
      { name: 'split__0', status: 'succeeded', parent: 'split', index: 0, item: { doc: 'first' }, created: '11:10:02', output: { words: 2 },
        attempts: [ok('11:10:03', '11:10:04')] },
      { name: 'split__1', status: 'failed', parent: 'split', index: 1, item: { doc: 'second' }, created: '11:10:02', queued: '11:10:07',
        error: { class: 'transport', message: 'upstream down', retryable: true, attempt: 2 },
        attempts: [{ outcome: 'failed', start: '11:10:03', end: '11:10:05', errorClass: 'transport' },
                   { outcome: 'failed', start: '11:10:07', end: '11:10:08', errorClass: 'transport' }] },
    ] },
  { key: 'J9', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'queued', created: '11:30:00', steps: [
      { name: 'fetch', status: 'queued' },
      { name: 'rate', status: 'pending', deps: ['fetch'] },
    ] },
  { key: 'J10', tenant: 'globex', pipeline: 'rep.b', version: 1, status: 'retrying', created: '11:50:00', steps: [
      { name: 'split', status: 'retrying', nextRunAt: '11:59:30', error: { class: 'transport', message: 'reset', retryable: true, attempt: 1 },
        attempts: [{ outcome: 'failed', start: '11:50:01', end: '11:50:02', errorClass: 'transport' }] },
    ] },
  { key: 'J11', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'waiting', created: '11:20:00', steps: [
      { name: 'fetch', status: 'waiting', waitKey: 'approval:11', waitDeadline: '11:40:00', attempts: [{ outcome: 'parked', start: '11:20:01', end: '11:20:02' }] },
      { name: 'rate', status: 'pending', deps: ['fetch'] },
    ] },
  { key: 'J12', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'retrying', created: '11:40:00', steps: [
      { name: 'fetch', status: 'retrying', nextRunAt: '11:50:00', error: { class: 'transport', message: 'timeout upstream', retryable: true, attempt: 1 },
        attempts: [{ outcome: 'failed', start: '11:40:00', end: '11:40:01', errorClass: 'transport' }] },
      { name: 'rate', status: 'pending', deps: ['fetch'] },
    ] },
  { key: 'J13', tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'retrying', created: '11:45:00', steps: [
      { name: 'fetch', status: 'retrying', nextRunAt: '12:30:00', error: { class: 'transport', message: 'slow down', retryable: true, attempt: 1 },
        attempts: [{ outcome: 'failed', start: '11:45:00', end: '11:45:01', errorClass: 'transport' }] },
      { name: 'rate', status: 'pending', deps: ['fetch'] },
    ] },
];

/** Provider calls of the history: hour 10 on openai/gpt-4o-mini and anthropic, hour 11, and one of globex. */
export const CALLS: SeedCall[] = [
  { job: 'J0', step: 'rate', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '2029-12-30T10:00:03Z', latencyMs: 1500, cost: 0.004, inTok: 40, outTok: 4, score: 0.95, rawOutput: '{"label":"old"}' },
  { job: 'J1', step: 'rate', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '10:00:05', latencyMs: 4000, cost: 0.01, inTok: 100, outTok: 10, score: 0.9, rawOutput: '{"label":"good"}' },
  { job: 'J2', step: 'rate', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '10:10:07', latencyMs: 1000, errorClass: 'schema', cost: 0.005, inTok: 100, outTok: 10,
    rawOutput: '{"label": 42, "note": "' + 'x'.repeat(300) + '"}', validationIssues: [{ path: 'label', message: 'expected string' }] },
  { job: 'J2', step: 'rate', attempt: 1, provider: 'anthropic', model: 'claude-3-5-haiku', start: '10:10:08', latencyMs: 2000, cost: 0.015, inTok: 100, outTok: 10, score: 0.7, rung: 'fallback', rawOutput: '{"label":"fine"}', usageMissing: true },
  { job: 'J3', step: 'rate', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '10:20:06', latencyMs: 2000, errorClass: 'client', cost: 0.005, inTok: 50, outTok: 5 },
  { job: 'J3', step: 'rate', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '10:20:07', latencyMs: 0, errorClass: 'budget' },
  { job: 'J6', step: 'rate', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '11:00:02', latencyMs: 1500, errorClass: 'quality', cost: 0, inTok: 10, outTok: 2, score: 0.5, rawOutput: '{"label":"neutral"}' },
  { job: 'J10', step: 'split', attempt: 1, provider: 'openai', model: 'gpt-4o-mini', start: '11:50:01', latencyMs: 800, errorClass: 'transport' },
];

/** Runs `fn` with the session clock at NOW (and as `role` acting for `tenant`, when given), in a rolled-back transaction. */
export async function at<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>, role?: { role: string; tenant?: string }): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query(`select set_config('ballast.now', $1, true)`, [NOW]);
    if (role) {
      await c.query(`select set_config('role', $1, true), set_config('ballast.tenant_id', $2, true)`, [role.role, role.tenant ?? '']);
    }
    return await fn(c);
  } finally {
    await c.query('rollback').catch(() => {});
    c.release();
  }
}
