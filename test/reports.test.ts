// The reports of migrations/0011_reports.sql against a history written with fixed timestamps (test/support/history.ts), every
// number computed by hand; and who may read them: reporters and operators everyone's, a client its own tenant's.
import t from 'tap';
import type pg from 'pg';
import { freshDatabase, pgError } from './helpers.ts';
import { at, CALLS, HISTORY, NOW, seed } from './support/history.ts';

const { pool } = await freshDatabase(t);
const ids = await seed(pool, HISTORY, CALLS);

/** Rows with numeric and bigint columns (strings from pg) as numbers, timestamps as ISO strings. */
function plain(rows: Record<string, unknown>[]): Record<string, unknown>[] {
  return rows.map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k,
    v instanceof Date ? v.toISOString() : typeof v === 'string' && /^-?\d+(\.\d+)?$/.test(v) && k !== 'pipeline' ? Number(v) : v])));
}
const q = async (c: pg.PoolClient, sql: string, params: unknown[] = []) => plain((await c.query(sql, params)).rows);
const H10 = '2030-01-02T10:00:00.000Z';
const H11 = '2030-01-02T11:00:00.000Z';

t.test('report_pipelines: per hour and pipeline version, the jobs submitted in the last 24 hours', async (t) => {
  const rows = await at(pool, (c) => q(c, `select * from ballast.report_pipelines('24 hours', 'hour')`));
  t.same(rows.map((r) => [r.period_start, r.pipeline, r.pipeline_version, r.jobs]),
    [[H10, 'rep.a', 1, 5], [H11, 'rep.a', 1, 4], [H11, 'rep.a', 2, 2], [H11, 'rep.b', 1, 2]],
    'J0 (3 days old) is outside the window; one row per hour, pipeline and version');
  t.same(rows[0], {
    period_start: H10, pipeline: 'rep.a', pipeline_version: 1,
    jobs: 5, completed: 2, partially_completed: 0, failed: 1, cancelled: 1, unfinished: 1, pruned: 0,
    success_rate: 0.6667,                 // 2 completed of 3 finished (the cancelled one does not count)
    retry_rate: 0.25,                     // J2 retried fetch; J1..J4 ran at all
    model_attempts: 3, first_pass_rate: 0.3333, fallback_rate: 0.3333, degraded_rate: 0, review_rate: 0,
    queue_wait_p50_ms: 1000, queue_wait_p95_ms: 3400,   // waits 1,1,1,1,2,2,4 s
    run_p50_ms: 2000, run_p95_ms: 3700,                 // runs 1,1,1,2,2,3,4 s (J4's running attempt left out)
    duration_p50_ms: 9000, duration_p95_ms: 9900,       // 8, 9, 10 s (the cancelled job left out)
    cost_usd: 0.035, input_tokens: 350, output_tokens: 35,
  });
  t.match(rows[1], { pipeline_version: 1, jobs: 4, unfinished: 4, success_rate: null, retry_rate: 0,
    queue_wait_p50_ms: 0, run_p50_ms: 1000, duration_p50_ms: null, model_attempts: 0, first_pass_rate: null },
    'hour 11: nothing finished yet, a parked attempt is not a retry');
  t.match(rows[2], { pipeline_version: 2, jobs: 2, completed: 1, unfinished: 1, success_rate: 1,
    model_attempts: 2, first_pass_rate: 0, degraded_rate: 0.5, review_rate: 0.5,
    queue_wait_p50_ms: 1000, queue_wait_p95_ms: 1000, run_p50_ms: 1500, run_p95_ms: 2850, duration_p50_ms: 4000 });
  t.match(rows[3], { pipeline: 'rep.b', jobs: 2, partially_completed: 1, unfinished: 1, success_rate: 0, retry_rate: 0.5 },
    'a partially completed job is not a success; J8 retried an item; J10 has not retried yet');
});

t.test('report_pipelines by day over a week includes the older job; a bad window is refused', async (t) => {
  const rows = await at(pool, (c) => q(c, `select period_start, pipeline, pipeline_version, jobs, completed, cost_usd
                                          from ballast.report_pipelines('7 days', 'day') where pipeline = 'rep.a'`));
  t.same(rows, [
    { period_start: '2029-12-30T00:00:00.000Z', pipeline: 'rep.a', pipeline_version: 1, jobs: 1, completed: 1, cost_usd: 0.004 },
    { period_start: '2030-01-02T00:00:00.000Z', pipeline: 'rep.a', pipeline_version: 1, jobs: 9, completed: 2, cost_usd: 0.035 },
    { period_start: '2030-01-02T00:00:00.000Z', pipeline: 'rep.a', pipeline_version: 2, jobs: 2, completed: 1, cost_usd: 0 },
  ]);
  const e = await at(pool, (c) => pgError(() => c.query(`select * from ballast.report_pipelines('-1 hour')`)));
  t.same([e.code, e.message], ['BA002', 'since: -01:00:00 is not a positive interval']);
  const p = await at(pool, (c) => pgError(() => c.query(`select * from ballast.report_steps('1 day', 'fortnight')`)));
  t.same([p.code, p.message], ['BA002', `period: 'fortnight' is not minute, hour, day, week or month`]);
});

t.test('report_steps: per step name, items of a map step under its name', async (t) => {
  const rows = await at(pool, (c) => q(c, `select * from ballast.report_steps('24 hours')`));
  const row = (hour: string, pipeline: string, version: number, name: string, item = false) =>
    rows.find((r) => r.period_start === hour && r.pipeline === pipeline && r.pipeline_version === version && r.step_name === name && r.is_item === item);
  t.same(row(H10, 'rep.a', 1, 'fetch'), {
    period_start: H10, pipeline: 'rep.a', pipeline_version: 1, step_name: 'fetch', is_item: false,
    steps: 5, succeeded: 3, failed: 0, skipped: 0, cancelled: 1, unfinished: 1, success_rate: 1, retry_rate: 0.25, attempts: 5,
    model_attempts: 0, first_pass_rate: null, fallback_rate: null, degraded_rate: null, review_rate: null,
    queue_wait_p50_ms: 1500, queue_wait_p95_ms: 3700,   // 1, 2, 4, 1 s (a retried root step waits from its creation)
    run_p50_ms: 1000, run_p95_ms: 1850,                 // 2, 1, 1, 1 s
    cost_usd: 0, input_tokens: 0, output_tokens: 0,
  });
  t.match(row(H10, 'rep.a', 1, 'rate'), { steps: 5, succeeded: 2, failed: 1, cancelled: 1, unfinished: 1, success_rate: 0.6667,
    retry_rate: 0, attempts: 3, model_attempts: 3, first_pass_rate: 0.3333, fallback_rate: 0.3333,
    queue_wait_p50_ms: 1000, queue_wait_p95_ms: 1900, run_p50_ms: 3000, run_p95_ms: 3900, cost_usd: 0.035, input_tokens: 350 });
  t.match(row(H11, 'rep.b', 1, 'split', true), { steps: 2, succeeded: 1, failed: 1, success_rate: 0.5, retry_rate: 0.5, attempts: 3,
    queue_wait_p50_ms: 1000, run_p50_ms: 1000 }, 'the two items of J8');
  t.match(row(H11, 'rep.b', 1, 'split'), { steps: 2, succeeded: 1, unfinished: 1, attempts: 2 }, 'the map steps of J8 and J10');
  t.equal(rows.filter((r) => String(r.step_name).includes('__')).length, 0, 'no row per item');
});

t.test('report_models: calls, errors by class, latency, tokens and cost per provider and model', async (t) => {
  const rows = await at(pool, (c) => q(c, `select * from ballast.report_models('24 hours')`));
  t.same(rows.map((r) => [r.period_start, r.provider, r.model]),
    [[H10, 'anthropic', 'claude-3-5-haiku'], [H10, 'openai', 'gpt-4o-mini'], [H11, 'openai', 'gpt-4o-mini']]);
  t.same(rows[1], {
    period_start: H10, provider: 'openai', model: 'gpt-4o-mini',
    calls: 3, errors: 2, error_rate: 0.6667, errors_by_class: { budget: 1, client: 1, schema: 1 }, not_made: 1,
    latency_p50_ms: 2000, latency_p95_ms: 3800,   // 1, 2, 4 s; the budget-stopped call was not made
    input_tokens: 250, output_tokens: 25, cached_input_tokens: 0, cost_usd: 0.02, unpriced: 0, usage_missing: 0,
  });
  t.match(rows[0], { calls: 1, errors: 0, error_rate: 0, errors_by_class: {}, latency_p50_ms: 2000, cost_usd: 0.015, usage_missing: 1 },
    'the anthropic answer reported no usage: charged its estimate, and counted');
  t.match(rows[2], { calls: 2, errors: 2, errors_by_class: { quality: 1, transport: 1 }, unpriced: 1 },
    'hour 11: a quality failure and globex\'s transport error (no cost: unpriced)');
});

t.test('report_quality: the average score per day, prompt version and model (drift)', async (t) => {
  const rows = await at(pool, (c) => q(c, `select * from ballast.report_quality('7 days')`));
  t.same(rows, [
    { period_start: '2029-12-30T00:00:00.000Z', prompt_name: 'review.rate', prompt_version: 1, provider: 'openai', model: 'gpt-4o-mini',
      scored_calls: 1, avg_score: 0.95, min_score: 0.95, max_score: 0.95, below_threshold: 0 },
    { period_start: '2030-01-02T00:00:00.000Z', prompt_name: 'review.rate', prompt_version: 1, provider: 'anthropic', model: 'claude-3-5-haiku',
      scored_calls: 1, avg_score: 0.7, min_score: 0.7, max_score: 0.7, below_threshold: 0 },
    { period_start: '2030-01-02T00:00:00.000Z', prompt_name: 'review.rate', prompt_version: 1, provider: 'openai', model: 'gpt-4o-mini',
      scored_calls: 2, avg_score: 0.7, min_score: 0.5, max_score: 0.9, below_threshold: 1 },
  ], 'openai fell from 0.95 to 0.7');
});

t.test('queue_depth: live steps per pipeline and the oldest runnable one', async (t) => {
  const rows = await at(pool, (c) => q(c, `select * from ballast.queue_depth order by pipeline`));
  t.same(rows, [
    { pipeline: 'rep.a', queued: 1, retrying_due: 1, retrying_later: 1, running: 1, waiting: 1, needs_review: 1,
      oldest_runnable_since: '2030-01-02T11:30:00.000Z', oldest_wait: { minutes: 30 } },
    { pipeline: 'rep.b', queued: 0, retrying_due: 1, retrying_later: 0, running: 0, waiting: 0, needs_review: 0,
      oldest_runnable_since: '2030-01-02T11:59:30.000Z', oldest_wait: { seconds: 30 } },
  ]);
});

t.test('stuck_work and report_stuck: what a missing reaper or worker leaves behind', async (t) => {
  const rows = await at(pool, (c) => q(c, `select kind, job_id, step_id, step_name, since, overdue, detail from ballast.stuck_work`));
  t.same(rows.map((r) => [r.kind, r.job_id, r.step_name, r.since]), [
    ['lease_expired', Number(ids.job.J4), 'fetch', '2030-01-02T10:31:00.000Z'],
    ['queued_too_long', Number(ids.job.J9), 'fetch', '2030-01-02T11:30:00.000Z'],
    ['wait_past_deadline', Number(ids.job.J11), 'fetch', '2030-01-02T11:40:00.000Z'],
    ['retry_overdue', Number(ids.job.J12), 'fetch', '2030-01-02T11:50:00.000Z'],
  ], 'J10 is due 30 s ago (within the minute of grace), J13 is not due');
  t.same(rows[0]!.overdue, { hours: 1, minutes: 29 });
  t.match(rows[0]!.detail, /attempt 1 on worker \(gone\): lease expired/);
  t.match(rows[2]!.detail, /waiting for event 'approval:11'/);
  t.match(rows[3]!.detail, /last error: timeout upstream/);
  const strict = await at(pool, (c) => q(c, `select kind, job_id from ballast.report_stuck('1 hour', '10 seconds')`));
  t.same(strict.map((r) => [r.kind, r.job_id]), [
    ['lease_expired', Number(ids.job.J4)], ['wait_past_deadline', Number(ids.job.J11)], ['retry_overdue', Number(ids.job.J12)],
    ['retry_overdue', Number(ids.job.J10)]], 'other thresholds: J9 is not queued for an hour, J10 is 30 s overdue');
});

t.test('dead_letters: the last error, the last attempt and every attempt', async (t) => {
  const rows = await at(pool, (c) => q(c, `select * from ballast.dead_letters order by step_id`));
  t.same(rows.map((r) => [r.job_id, r.step_name]), [[Number(ids.job.J3), 'rate'], [Number(ids.job.J8), 'split__1']]);
  t.match(rows[0], { error_class: 'client', error_code: 'unauthorized', error_message: 'the provider refused the key',
    error_retryable: false, job_status: 'failed', pruned_at: null, last_attempt_id: Number(ids.attempt['J3.rate.1']),
    last_attempt_outcome: 'failed', is_map_step: false, failed_at: '2030-01-02T10:20:08.000Z' });
  t.same((rows[1]!.attempt_errors as { number: number; outcome: string; error_class: string }[]).map((a) => [a.number, a.outcome, a.error_class]),
    [[1, 'failed', 'transport'], [2, 'failed', 'transport']]);
  t.match(rows[1], { job_status: 'partially_completed', last_attempt_id: Number(ids.attempt['J8.split__1.2']), error_retryable: true });
});

t.test('who may read the reports', async (t) => {
  const reporter = await at(pool, (c) => q(c, `select pipeline, sum(jobs) as jobs from ballast.report_pipelines('24 hours') group by 1 order by 1`),
    { role: 'ballast_reporter' });
  t.same(reporter, [{ pipeline: 'rep.a', jobs: 11 }, { pipeline: 'rep.b', jobs: 2 }], 'a reporter sees every tenant');
  const operator = await at(pool, (c) => q(c, `select count(*) from ballast.stuck_work`), { role: 'ballast_operator' });
  t.same(operator, [{ count: 4 }]);

  const acme = { role: 'ballast_client', tenant: 'acme' };
  t.same(await at(pool, (c) => q(c, `select pipeline, sum(jobs) as jobs from ballast.report_pipelines('24 hours') group by 1 order by 1`), acme),
    [{ pipeline: 'rep.a', jobs: 10 }, { pipeline: 'rep.b', jobs: 1 }], 'a client sees its tenant only (J5 and J10 are globex\'s)');
  t.same(await at(pool, (c) => q(c, `select calls, errors_by_class from ballast.report_models('24 hours') where period_start = $1 and provider = 'openai'`, [H11]), acme),
    [{ calls: 1, errors_by_class: { quality: 1 } }], 'and its own model calls');
  t.same(await at(pool, (c) => q(c, `select pipeline, retrying_due from ballast.queue_depth order by 1`), acme),
    [{ pipeline: 'rep.a', retrying_due: 1 }], 'its own queue');
  t.equal((await at(pool, (c) => q(c, `select * from ballast.report_steps('24 hours')`), { role: 'ballast_client', tenant: 'nobody' })).length, 0,
    'a tenant without jobs sees nothing');
  const prune = await at(pool, (c) => pgError(() => c.query(`select * from ballast.prune_history('1 day')`)), { role: 'ballast_reporter' });
  t.equal(prune.code, '42501', 'pruning is an operator verb');
  const replay = await at(pool, (c) => pgError(() => c.query(`select * from ballast.replay_dead_letters('why')`)), acme);
  t.equal(replay.code, '42501', 'so is replaying dead letters');
  const anon = await at(pool, (c) => pgError(() => c.query(`select * from ballast.report_pipelines()`)), { role: 'ballast_anonymous' });
  t.equal(anon.code, '42501', 'anonymous reads nothing');
});

t.test('replay_dead_letters: only the matches, audited, in one go; dry run first', async (t) => {
  await at(pool, async (c) => {
    const dry = plain((await c.query(`select * from ballast.replay_dead_letters('provider fixed', p_error_class => 'transport', p_dry_run => true)`)).rows);
    t.same(dry.map((r) => [r.step_id, r.replayed]), [[Number(ids.step['J8.split__1']), false]], 'the dry run lists and replays nothing');
    t.equal((await c.query(`select status from ballast.steps where id = $1`, [ids.step['J8.split__1']])).rows[0].status, 'failed');
    const none = await c.query(`select * from ballast.replay_dead_letters('x', p_pipeline => 'rep.a', p_error_class => 'transport')`);
    t.equal(none.rowCount, 0, 'every filter must match');
    const done = plain((await c.query(`select * from ballast.replay_dead_letters('key rotated', p_pipeline => 'rep.a', p_actor => 'ops@example.com')`)).rows);
    t.same(done.map((r) => [r.job_id, r.step_name, r.replayed, r.job_status]), [[Number(ids.job.J3), 'rate', true, 'running']]);
    const { rows: [e] } = await c.query(`select actor, reason from ballast.events where step_id = $1 and type = 'step_replayed'`, [ids.step['J3.rate']]);
    t.same(e, { actor: 'ops@example.com', reason: 'key rotated' });
    t.equal((await c.query(`select status from ballast.steps where id = $1`, [ids.step['J8.split__1']])).rows[0].status, 'failed', 'J8 was not matched');
    await c.query('savepoint s');
    const noReason = await pgError(() => c.query(`select * from ballast.replay_dead_letters('')`));
    t.same([noReason.code, noReason.message], ['BA002', 'reason: is empty']);
  });
  t.equal(NOW, '2030-01-02T12:00:00Z');
});
