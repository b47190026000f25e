// Retention (migrations/0011_reports.sql, src/worker/retention.ts): ballast.prune_history clears the payloads of jobs finished long ago,
// in batches, without waiting for locked rows, and keeps the events and every number the reports show; the
// Retention service loops over batches; a worker runs it as a graphile-worker cron task when BALLAST_RETENTION says so.
import t from 'tap';
import type pg from 'pg';
import { freshDatabase, pgError, quietLog, testWorker, eventually } from './helpers.ts';
import { at, CALLS, HISTORY, seed } from './support/history.ts';
import { Retention, parseRetention, retentionSchedule, RETENTION_TASK } from '../src/worker/retention.ts';

const { pool, db, url } = await freshDatabase(t);
const ids = await seed(pool, HISTORY, CALLS);

/** Every report over the whole history, without the column that is meant to change (pruned). */
async function reports(c: pg.PoolClient) {
  const all = async (sql: string) => (await c.query(sql)).rows;
  return {
    pipelines: (await all(`select * from ballast.report_pipelines('30 days')`)).map(({ pruned, ...r }) => r),
    steps: await all(`select * from ballast.report_steps('30 days')`),
    models: await all(`select * from ballast.report_models('30 days')`),
    quality: await all(`select * from ballast.report_quality('30 days')`),
    dead: (await all(`select * from ballast.dead_letters order by step_id`)).map(({ pruned_at, ...r }) => r),
    queue: await all(`select * from ballast.queue_depth order by pipeline`),
    stuck: await all(`select * from ballast.stuck_work`),
    attempts: await all(`select id, outcome, error_class, contract_outcome, fallback_used, quality_score, cost_usd, input_tokens from ballast.attempts order by id`),
  };
}

/** The stored size of every payload retention clears, per job. */
async function payloadBytes(c: pg.PoolClient | pg.Pool): Promise<Record<string, number>> {
  const { rows } = await c.query(`
    select j.id, pg_column_size(j.input) + coalesce(pg_column_size(j.result), 0)
           + coalesce((select sum(coalesce(pg_column_size(s.output), 0) + coalesce(pg_column_size(s.progress), 0)
                                  + coalesce(pg_column_size(s.item), 0) + coalesce(pg_column_size(s.review), 0))
                         from ballast_private.steps s where s.job_id = j.id), 0)
           + coalesce((select sum(pg_column_size(a.contract_detail)) from ballast_private.attempts a where a.job_id = j.id), 0)
           + coalesce((select sum(coalesce(pg_column_size(m.raw_output), 0) + coalesce(pg_column_size(m.validation_issues), 0))
                         from ballast_private.model_calls m where m.job_id = j.id), 0) as bytes
      from ballast_private.jobs j`);
  return Object.fromEntries(rows.map((r) => [r.id, Number(r.bytes)]));
}
const events = async () => (await pool.query(`select count(*)::int as n, md5(string_agg(e::text, ',' order by e.id)) as hash from ballast_private.events e`)).rows[0];

t.test('prune_history: batch by batch, oldest first; payloads cleared, events and report numbers kept', async (t) => {
  const before = await at(pool, reports);
  const bytesBefore = await payloadBytes(pool);
  const eventsBefore = await events();

  // Finished before 11:00 (NOW - 1 hour): J0 (Dec 30), J1, J2, J3 and J5; J6 finished at 11:00:04.
  const batches = await at(pool, async (c) => {
    const out = [];
    for (let i = 0; i < 4; i++) out.push((await c.query(`select * from ballast.prune_history('1 hour', 2)`)).rows[0]);
    await c.query('commit');
    return out;
  });
  t.same(batches.map((b) => [b.jobs_pruned, b.more]), [[2, true], [2, true], [1, false], [0, false]], 'batches of 2, then none left');
  const pruned = (await pool.query(`select id from ballast.jobs where pruned_at is not null order by finished_at`)).rows.map((r) => r.id);
  t.same(pruned, ['J0', 'J1', 'J2', 'J3', 'J5'].map((k) => ids.job[k]), 'the five jobs finished before the cutoff, oldest first');
  t.same(batches.slice(0, 2).map((b) => b.jobs_busy), [0, 0]);
  t.same(batches.reduce((n, b) => n + b.model_calls_pruned, 0), 4, 'the calls of J0, J1 and J2 (two) had raw outputs or validation issues; J3\'s none');

  const after = await at(pool, reports);
  t.same(after, before, 'every report gives the same numbers');
  const { rows: pr } = await at(pool, (c) => c.query(`select pipeline, pipeline_version, sum(pruned)::int as pruned from ballast.report_pipelines('30 days') group by 1, 2 order by 1, 2`));
  t.same(pr, [{ pipeline: 'rep.a', pipeline_version: 1, pruned: 5 }, { pipeline: 'rep.a', pipeline_version: 2, pruned: 0 }, { pipeline: 'rep.b', pipeline_version: 1, pruned: 0 }],
    'and reports can tell how many jobs were pruned');
  t.same(await events(), eventsBefore, 'the audit trail is untouched');

  const { rows: [j1] } = await pool.query(`select input, result, status, cost_usd, finished_at from ballast.jobs where id = $1`, [ids.job.J1]);
  t.same(j1, { input: { pruned: true }, result: null, status: 'completed', cost_usd: '0.01000000', finished_at: new Date('2030-01-02T10:00:09Z') });
  const { rows: steps } = await pool.query(`select name, status, output, progress, error, attempts from ballast.steps where job_id = $1 order by id`, [ids.job.J3]);
  t.same(steps, [
    { name: 'fetch', status: 'succeeded', output: null, progress: null, error: null, attempts: 1 },
    { name: 'rate', status: 'failed', output: null, progress: null, attempts: 1,
      error: { class: 'client', code: 'unauthorized', message: 'the provider refused the key', retryable: false, attempt: 1 } },
  ], 'outputs gone; statuses, errors and attempts kept');
  const { rows: calls } = await pool.query(`select raw_output, validation_issues, error_class, cost_usd, latency_ms, score from ballast.model_calls where job_id = $1 order by id`, [ids.job.J2]);
  t.same(calls, [
    { raw_output: null, validation_issues: null, error_class: 'schema', cost_usd: '0.00500000', latency_ms: '1000.0', score: null },
    { raw_output: null, validation_issues: null, error_class: null, cost_usd: '0.01500000', latency_ms: '2000.0', score: '0.70000' },
  ]);
  t.equal((await pool.query(`select contract_detail from ballast.attempts where job_id = $1 and contract_outcome is not null`, [ids.job.J2])).rows[0].contract_detail, null);

  const bytesAfter = await payloadBytes(pool);
  const freed = batches.reduce((n, b) => n + Number(b.bytes_freed_estimate), 0);
  const measured = Object.keys(bytesBefore).reduce((n, id) => n + bytesBefore[id]! - bytesAfter[id]!, 0);
  t.equal(freed, measured, `bytes_freed_estimate is what the payload columns lost (${freed} bytes)`);
  t.ok(bytesBefore[ids.job.J1!]! > 800 && bytesAfter[ids.job.J1!]! < 100, `J1 went from ${bytesBefore[ids.job.J1!]} to ${bytesAfter[ids.job.J1!]} bytes`);
  for (const key of ['J4', 'J6', 'J7', 'J8', 'J9', 'J10', 'J11', 'J12', 'J13']) {
    t.equal(bytesAfter[ids.job[key]!], bytesBefore[ids.job[key]!], `${key} (unfinished or recent) is untouched`);
  }
  const { rows: [j7] } = await pool.query(`select review from ballast.steps where id = $1`, [ids.step['J7.rate']]);
  t.same(j7.review.proposed, { label: 'maybe' }, 'a step waiting for review keeps its proposal');
});

t.test('a pruned job cannot run again', async (t) => {
  const e = await at(pool, (c) => pgError(() => c.query(`select * from ballast.replay_job($1, p_reason => 'again')`, [ids.job.J3])));
  t.equal(e.code, 'BA001');
  t.match(e.message, new RegExp(`^job ${ids.job.J3} cannot go from failed to running: its history was pruned at`));
  t.equal((await pool.query(`select status from ballast.steps where id = $1`, [ids.step['J3.rate']])).rows[0].status, 'failed', 'nothing changed');
  const d = await at(pool, (c) => c.query(`select * from ballast.replay_dead_letters('again', p_pipeline => 'rep.a', p_dry_run => true)`));
  t.equal(d.rowCount, 0, 'replay_dead_letters leaves pruned jobs out');
});

t.test('rows locked by another transaction are skipped, not waited for', async (t) => {
  // J6 (finished 11:00:04) and J8 (11:10:09) are prunable with a 1-minute period. Hold J8's item and J6's job row.
  const holder = await pool.connect();
  t.teardown(() => holder.release());
  await holder.query('begin');
  await holder.query(`select 1 from ballast_private.steps where id = $1 for update`, [ids.step['J8.split__0']]);
  await holder.query(`select 1 from ballast_private.jobs where id = $1 for no key update`, [ids.job.J6]);
  const started = Date.now();
  const [busy] = await at(pool, async (c) => {
    const r = (await c.query(`select * from ballast.prune_history('1 minute')`)).rows;
    await c.query('commit');
    return r;
  });
  const took = Date.now() - started;
  t.ok(took < 2000, `returned at once (${took} ms), lock_timeout is 5 s`);
  t.match(busy, { jobs_pruned: 0, jobs_busy: 1, more: false }, 'J8 is busy (a step locked), J6 invisible (its row locked)');
  t.same((await pool.query(`select id from ballast.jobs where id in ($1, $2) and pruned_at is not null`, [ids.job.J6, ids.job.J8])).rows, []);
  const { rows: [raw] } = await pool.query(`select item from ballast_private.steps where id = $1`, [ids.step['J8.split__1']]);
  t.same(raw.item, { doc: 'second' }, 'no step of a busy job is touched');
  await holder.query('rollback');
  const [next] = await at(pool, async (c) => {
    const r = (await c.query(`select * from ballast.prune_history('1 minute')`)).rows;
    await c.query('commit');
    return r;
  });
  t.match(next, { jobs_pruned: 2, jobs_busy: 0 }, 'released, both are pruned');
  const { rows: [after] } = await pool.query(`select item from ballast_private.steps where id = $1`, [ids.step['J8.split__1']]);
  t.equal(after.item, null);
});

t.test('bad arguments', async (t) => {
  const e = await pgError(() => pool.query(`select * from ballast.prune_history('0 days')`));
  t.same([e.code, e.message], ['BA002', 'older_than: 00:00:00 is not a positive interval']);
  const b = await pgError(() => pool.query(`select * from ballast.prune_history('1 day', 0)`));
  t.same([b.code, b.message], ['BA002', 'batch: 0 is not between 1 and 100000']);
});

t.test('parseRetention and the switch', async (t) => {
  t.equal(parseRetention('30 days'), '30 days');
  t.equal(parseRetention(' 1 Week '), '1 week');
  t.equal(parseRetention('12hours'), '12 hours');
  for (const off of [undefined, '', 'off', 'OFF', 'false', '0']) t.equal(parseRetention(off), undefined, `${JSON.stringify(off)} is off`);
  for (const bad of ['30', 'a month', '0 days', '30 fortnights', '-1 day']) {
    t.throws(() => parseRetention(bad), { message: `BALLAST_RETENTION=${JSON.stringify(bad)} is not a retention period: use e.g. '30 days', '12 hours' or 'off'` });
  }
  const saved = process.env.BALLAST_RETENTION;
  t.teardown(() => { if (saved === undefined) delete process.env.BALLAST_RETENTION; else process.env.BALLAST_RETENTION = saved; });
  delete process.env.BALLAST_RETENTION;
  t.equal(retentionSchedule({ db, log: quietLog }), undefined, 'unset: off');
  process.env.BALLAST_RETENTION = '30 days';
  t.ok(retentionSchedule({ db, log: quietLog }), 'the environment switches it on');
  t.equal(retentionSchedule({ db, log: quietLog, setting: false }), undefined, 'an explicit false wins over the environment');
  process.env.BALLAST_RETENTION = 'forever';
  t.throws(() => retentionSchedule({ db, log: quietLog }), /BALLAST_RETENTION="forever" is not a retention period/);
});

/** A job that finished at `finished` (real time), with a payload. */
async function oldJob(key: string, finished: string) {
  const s = await seed(pool, [{ key, tenant: 'acme', pipeline: 'rep.a', version: 1, status: 'completed', created: finished, finished,
    result: { big: 'x'.repeat(500) }, steps: [{ name: 'fetch', status: 'succeeded', output: { page: 'y'.repeat(500) }, attempts: [{ outcome: 'succeeded', start: finished, end: finished }] }] }], []);
  return s.job[key]!;
}

t.test('the Retention service loops over batches until none is left, and stops', async (t) => {
  const jobs = [];
  for (let i = 0; i < 5; i++) jobs.push(await oldJob(`R${i}`, `2020-01-0${i + 1}T00:00:00Z`));
  const service = new Retention({ db, log: quietLog, olderThan: '30 days', batchSize: 2, pauseMs: 1 });
  const run = await service.runOnce();
  t.match(run, { batches: 3, jobsPruned: 5, jobsBusy: 0, more: false });
  t.ok(run.bytesFreedEstimate > 5 * 1000, `freed about ${run.bytesFreedEstimate} bytes`);
  t.same(await service.runOnce(), { batches: 1, jobsPruned: 0, bytesFreedEstimate: 0, jobsBusy: 0, more: false }, 'nothing left');
  await oldJob('R9', '2020-02-01T00:00:00Z');
  const aborted = new AbortController();
  aborted.abort();
  t.match(await service.runOnce(aborted.signal), { batches: 0, jobsPruned: 0 }, 'an aborted run does nothing');
  await service.stop();
  t.match(await service.runOnce(), { batches: 0 }, 'a stopped service does nothing');
  const limited = new Retention({ db, log: quietLog, olderThan: '30 days', batchSize: 1, pauseMs: 1, maxBatches: 1 });
  t.match(await limited.runOnce(), { batches: 1, jobsPruned: 1, more: true }, 'R9 alone, in a full batch of one: maybe more');
  t.match(await limited.runOnce(), { batches: 1, jobsPruned: 0, more: false }, 'no more');
});

t.test('a worker with retention on runs it as a graphile-worker cron task', async (t) => {
  const job = await oldJob('W1', '2021-06-01T00:00:00Z');
  await testWorker(t, url, { pipelines: [], retention: '7 days', reaper: false });
  const known = async () => (await pool.query(`select identifier from graphile_worker._private_known_crontabs`)).rows.map((r) => r.identifier);
  t.ok(await eventually(async () => (await known()).includes(RETENTION_TASK), 5000), 'the schedule is registered (every 15 minutes, one worker per tick)');
  // Rather than wait for the quarter hour, queue the task the cron would.
  await pool.query(`select graphile_worker.add_job($1)`, [RETENTION_TASK]);
  t.ok(await eventually(async () => (await pool.query(`select pruned_at from ballast.jobs where id = $1`, [job])).rows[0].pruned_at !== null, 10_000),
    'the task pruned the old job');
  const { rows: [j] } = await pool.query(`select input, result from ballast.jobs where id = $1`, [job]);
  t.same(j, { input: { pruned: true }, result: null });
});
