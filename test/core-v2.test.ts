// The batched core (migrations/0006_execution.sql): the step rows are the queue, settle_and_claim answers every attempt of a batch
// per id, statement-level triggers refuse a bad multi-row change whole, and the job counters never drift from a
// recount. SQL-level, with the verbs a worker calls, so every case is deterministic.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { eventually, freshDatabase, pgError, registerTestWorker, testWorker, waitForJob } from './helpers.ts';

const { pool, db, url } = await freshDatabase(t);

const chain = pipeline({ name: 'core.chain', version: 1, input: z.object({}) })
  .step('a', { output: z.object({}), retry: { maxAttempts: 3, baseDelayMs: 60_000, maxDelayMs: 60_000 } }, () => ({}))
  .step('b', { after: ['a'], output: z.object({}) }, () => ({}));
await db.registerPipeline(chain.name, chain.version, chain.definition(), chain.inputJsonSchema());
const other = pipeline({ name: 'core.other', version: 1, input: z.object({}) }).step('x', { output: z.object({}) }, () => ({}));
await db.registerPipeline(other.name, other.version, other.definition(), other.inputJsonSchema());

const TASK = chain.taskIdentifier;
const worker = await registerTestWorker(db, 'core-worker');

interface Claim { attempt_id: number; step_id: number; job_id: number; step_name: string; attempt_number: number }
async function settleAndClaim(ok: number[], failed: number[], errors: object[], n: number, tasks = [TASK], w = worker) {
  const { rows: [r] } = await pool.query(
    `select settled, claims from ballast.settle_and_claim($1, $2::bigint[], $3::jsonb[], $4::bigint[], $5::jsonb[], $6::text[], $7, 30000)`,
    [w, ok, ok.map(() => '{"done": true}'), failed, errors.map((e) => JSON.stringify(e)), tasks, n]);
  return { settled: new Map((r.settled as [number, string][]).map(([id, s]) => [Number(id), s])), claims: r.claims as Claim[] };
}
const submit = async (name = 'core.chain', priority = 0) => (await db.submitJob({ pipeline: name, input: {}, priority })).jobId;
const jobRow = async (id: string | number) => (await pool.query('select * from ballast_private.jobs where id = $1', [id])).rows[0];

t.test('one batch mixes successes, failures, a stale attempt and a cancelled job; each is answered by id', async (t) => {
  const jobs = [await submit(), await submit(), await submit(), await submit(), await submit()];
  const { claims } = await settleAndClaim([], [], [], 10);
  t.equal(claims.length, 5, 'the five root steps are claimed in one round trip, no wake-up needed');
  const byJob = new Map(claims.map((c) => [String(c.job_id), c]));
  const [ok, retry, permanent, stale, cancelled] = jobs.map((j) => byJob.get(j)!);
  // stale: its attempt is ended from outside (as the reaper does to a dead worker's attempt).
  // With a Retry-After: the backoff alone (full jitter from 0 to 60 s) could make it due at once.
  await pool.query(`select ballast.fail_step($1, '{"class": "worker_lost", "message": "reclaimed", "retry_after_ms": 60000}')`, [stale!.attempt_id]);
  const { rows: [again] } = await pool.query(`select * from ballast.claim_step($1, $2, 30000)`, [stale!.step_id, worker]);
  t.equal(again, undefined, 'the reclaimed step is retrying (not due yet): nobody holds it');
  await db.cancelJob(jobs[4]!, 'test');

  const r = await settleAndClaim([ok!.attempt_id, stale!.attempt_id, cancelled!.attempt_id],
    [retry!.attempt_id, permanent!.attempt_id, 999_999],
    [{ class: 'timeout', message: 'slow', retryable: true }, { class: 'bad', message: 'no', retryable: false },
     { class: 'x', message: 'unknown attempt' }], 10);
  t.same(Object.fromEntries([...r.settled].map(([id, s]) => [id, s])), {
    [ok!.attempt_id]: 'succeeded', [stale!.attempt_id]: 'stale', [cancelled!.attempt_id]: 'stale',
    [retry!.attempt_id]: 'retrying', [permanent!.attempt_id]: 'failed', 999999: 'stale',
  }, 'every attempt answered by id; none failed the batch');
  t.same(r.claims.map((c) => [String(c.job_id), c.step_name]), [[jobs[0], 'b']], 'and the step the success queued was claimed in the same round trip');
  t.match(await jobRow(jobs[0]!), { status: 'running' });
  t.match(await jobRow(jobs[1]!), { status: 'retrying' });
  t.match(await jobRow(jobs[2]!), { status: 'failed', error: { step: 'a', class: 'bad' } });
  t.match(await jobRow(jobs[4]!), { status: 'cancelled' });

  const { rows: bad } = await pool.query(`select ballast.settle_steps($1, '{}', '{}', array[$2::bigint], array['{"class": 1}'::jsonb]) as r`,
    [worker, r.claims[0]!.attempt_id]);
  t.match(bad[0].r, /refused: /, 'a malformed error object is refused for that attempt alone');
  const done = await settleAndClaim([r.claims[0]!.attempt_id], [], [], 0);
  t.equal(done.settled.get(r.claims[0]!.attempt_id), 'succeeded', 'the attempt the refusal left running is settled next time');
  t.match(await jobRow(jobs[0]!), { status: 'completed', result: { done: true } });
});

t.test('retries and reclaimed steps are claimed straight from their rows, before new work of the same priority', async (t) => {
  await pool.query(`update ballast_private.steps set status = 'cancelled' where status in ('queued', 'pending')`);
  const fresh = await submit();
  const retried = await submit();
  const { claims } = await settleAndClaim([], [], [], 1);
  t.equal(String(claims[0]!.job_id), fresh, 'oldest first among new work');
  const { claims: [c2] } = await settleAndClaim([], [], [], 1);
  t.equal(String(c2!.job_id), retried);
  await pool.query(`select ballast.fail_step($1, '{"class": "transport", "message": "reset", "retry_after_ms": 0}')`, [c2!.attempt_id]);
  const newer = await submit();
  // No graphile-worker job exists for any of this: the retry is due at once, and the claim promotes it.
  t.equal((await pool.query('select count(*)::int as n from graphile_worker._private_jobs')).rows[0].n, 0, 'no wake-up row anywhere');
  const { claims: next } = await settleAndClaim([], [], [], 1);
  t.same([String(next[0]!.job_id), next[0]!.attempt_number], [retried, 2], 'the retry runs before the newer job');
  const { claims: last } = await settleAndClaim([claims[0]!.attempt_id], [], [], 5);
  t.ok(last.some((c) => String(c.job_id) === newer), 'then the new work');
  const urgent = await submit('core.chain', -10);
  await pool.query(`update ballast_private.steps set status = 'cancelled' where status in ('queued', 'pending') and job_id <> $1`, [urgent]);
  t.same((await settleAndClaim([], [], [], 5)).claims.map((c) => String(c.job_id)), [urgent], 'priority first');
});

t.test('a worker takes only the pipeline versions it has code for', async (t) => {
  const x = await submit('core.other');
  t.same((await settleAndClaim([], [], [], 10)).claims.filter((c) => String(c.job_id) === x), [], 'core.chain\'s worker leaves core.other alone');
  const { claims } = await settleAndClaim([], [], [], 10, [other.taskIdentifier]);
  t.same(claims.map((c) => String(c.job_id)), [x], 'a worker of core.other takes it');
});

t.test('a multi-row UPDATE that breaks the state machine for one row is refused whole', async (t) => {
  const a = await submit();
  const b = await submit();
  const { rows: steps } = await pool.query(
    `select id, status from ballast_private.steps where job_id in ($1, $2) order by id`, [a, b]);
  const before = (await pool.query('select count(*)::int as n from ballast_private.events')).rows[0].n;
  // queued -> cancelled is allowed, pending -> succeeded is not: one statement, both rows.
  const err = await pgError(() => pool.query(
    `update ballast_private.steps set status = case when status = 'queued' then 'cancelled' else 'succeeded' end
      where job_id in ($1, $2)`, [a, b]));
  t.equal(err.code, 'BA001');
  t.match(err.message, /cannot go from pending to succeeded/);
  const { rows: after } = await pool.query(`select id, status from ballast_private.steps where job_id in ($1, $2) order by id`, [a, b]);
  t.same(after, steps, 'no row changed');
  t.equal((await pool.query('select count(*)::int as n from ballast_private.events')).rows[0].n, before, 'no event was written');
});

t.test('two transactions settling steps of one job at once: neither one\'s counter deltas are lost', async (t) => {
  const pair = pipeline({ name: 'core.pair', version: 1, input: z.object({}) })
    .step('a', { output: z.object({}) }, () => ({}))
    .step('b', { output: z.object({}) }, () => ({}));
  await db.registerPipeline(pair.name, pair.version, pair.definition(), pair.inputJsonSchema());
  const job = await submit('core.pair');
  const { claims } = await settleAndClaim([], [], [], 2, [pair.taskIdentifier]);
  t.equal(claims.length, 2, 'both root steps are running');
  const first = await pool.connect();
  const second = await pool.connect();
  t.teardown(() => {
    first.release();
    second.release();
  });
  // The first settles step a and keeps its transaction (and the job's row lock) open; the second settles step b,
  // reading the job after the first took its snapshot, and waits for the lock.
  await first.query('begin');
  await first.query(`select * from ballast.settle_steps($1, array[$2::bigint], array['{}'::jsonb])`, [worker, claims[0]!.attempt_id]);
  await second.query('begin');
  const waiting = second.query(`select * from ballast.settle_steps($1, array[$2::bigint], array['{}'::jsonb])`, [worker, claims[1]!.attempt_id]);
  t.ok(await eventually(async () => (await pool.query(
    `select 1 from pg_stat_activity where pid = $1 and wait_event_type = 'Lock'`, [(second as unknown as { processID: number }).processID])).rowCount === 1, 5000),
    'the second waits for the first one\'s lock on the job');
  await first.query('commit');
  await waiting;
  await second.query('commit');
  t.match(await jobRow(job), { status: 'completed', n_total: 2, n_final: 2, n_running: 0 }, 'both successes counted: the job completed');
  const { rows: [{ drift }] } = await pool.query('select ballast.recount_job($1) as drift', [job]);
  t.equal(drift, false, 'the counters match a recount');
});

t.test('budgets and cooldowns apply in the claim: gated model steps are parked, not claimed, and no attempt is charged', async (t) => {
  await db.registerPipeline('core.gated', 1, {
    steps: [
      { name: 'plain', depends_on: [], max_attempts: 3, backoff_base_ms: 0, backoff_cap_ms: 0 },
      { name: 'm', depends_on: [], max_attempts: 3, backoff_base_ms: 0, backoff_cap_ms: 0,
        model: { prompt: 'p@1', model: 'gateprov:priced', fallbacks: ['otherprov:free'], reasks: 0 } },
    ],
  }, {});
  const task = 'ballast_step:core.gated@1';
  await pool.query(`select ballast.set_model_price('gateprov', 'priced', 1, 2)`);
  await pool.query(`select ballast.set_budget('gated', 0, 'day', 'pause')`);
  const stepOf = async (job: string, name: string) =>
    (await pool.query('select status, attempts, next_run_at, error from ballast_private.steps where job_id = $1 and name = $2', [job, name])).rows[0];

  const job = (await db.submitJob({ pipeline: 'core.gated', input: {}, tenantId: 'gated' })).jobId;
  const first = await settleAndClaim([], [], [], 10, [task]);
  t.same(first.claims.map((c) => c.step_name), ['plain'], 'only the plain step is claimed');
  const parked = await stepOf(job, 'm');
  t.match(parked, { status: 'retrying', attempts: 0, error: { class: 'budget_exhausted', message: /tenant 'gated' has used its budget of 0/ } },
    'the model step of the tenant with a used-up budget is parked, with the reason, and no attempt');
  const { rows: [{ end }] } = await pool.query(`select ballast_private.budget_period_start('day', ballast.now()) + interval '1 day' as end`);
  t.equal(parked.next_run_at.getTime(), end.getTime(), 'until the end of the budget period');
  t.same((await pool.query(`select count(*)::int as n from ballast_private.attempts a join ballast_private.steps s on s.id = a.step_id
                              where s.job_id = $1 and s.name = 'm'`, [job])).rows[0], { n: 0 }, 'no attempt row');

  await pool.query(`select ballast.set_budget('gated', 100, 'day', 'pause')`);
  const woken = await settleAndClaim([first.claims[0]!.attempt_id], [], [], 10, [task]);
  t.same(woken.claims.map((c) => c.step_name), ['m'], 'a raised limit wakes it and the claim takes it');
  await settleAndClaim([woken.claims[0]!.attempt_id], [], [], 0, [task]);
  t.match(await jobRow(job), { status: 'completed' });

  // Cooldowns: every model of the step cooling down parks it until the earliest end; one model free lets it run.
  await pool.query(`select ballast.set_provider_cooldown('gateprov', 'priced', ballast.now() + interval '10 minutes', '429')`);
  const second = (await db.submitJob({ pipeline: 'core.gated', input: { n: 2 }, tenantId: 'gated' })).jobId;
  const c2 = await settleAndClaim([], [], [], 10, [task]);
  t.same(c2.claims.map((c) => c.step_name).sort(), ['m', 'plain'], 'its fallback is not cooling down: the step is claimed');
  await settleAndClaim(c2.claims.map((c) => c.attempt_id), [], [], 0, [task]);
  await pool.query(`select ballast.set_provider_cooldown('otherprov', '*', ballast.now() + interval '5 minutes', 'overloaded')`);
  const third = (await db.submitJob({ pipeline: 'core.gated', input: { n: 3 }, tenantId: 'gated' })).jobId;
  const c3 = await settleAndClaim([], [], [], 10, [task]);
  t.same(c3.claims.map((c) => c.step_name), ['plain'], 'all its models cooling down: only the plain step is claimed');
  const cooled = await stepOf(third, 'm');
  t.match(cooled, { status: 'retrying', attempts: 0, error: { class: 'cooldown', message: /every model of the step is cooling down/ } });
  const { rows: [{ soonest }] } = await pool.query(`select until as soonest from ballast_private.provider_cooldowns where provider = 'otherprov'`);
  t.equal(cooled.next_run_at.getTime(), soonest.getTime(), 'until the earliest cooldown ends');
  t.match(await jobRow(third), { status: 'running' }, 'the job runs its other step meanwhile');
  const { rows: events } = await pool.query(
    `select type, data -> 'error' ->> 'class' as class from ballast_private.events e join ballast_private.steps s on s.id = e.step_id
      where s.job_id = $1 and s.name = 'm'`, [third]);
  t.same(events, [{ type: 'step_retrying', class: 'cooldown' }], 'the parking is audited');
  await settleAndClaim(c3.claims.map((c) => c.attempt_id), [], [], 0, [task]);
  await pool.query(`delete from ballast_private.provider_cooldowns`);
  await pool.query(`select ballast.set_budget('gated', null)`);
  void second;
});

t.test('job counters match a recount after mixed work (batches, cancels, replays, psql updates)', async (t) => {
  const { rows: [{ ids }] } = await pool.query(`select coalesce(array_agg(id), '{}') as ids from ballast_private.jobs`);
  for (const id of ids as string[]) {
    const { rows: [{ drift }] } = await pool.query('select ballast.recount_job($1) as drift', [id]);
    t.equal(drift, false, `job ${id}: the counters had not drifted`);
  }
});

t.test('an output Postgres cannot store fails its attempt at once, with the reason, and the worker goes on', async (t) => {
  const odd = pipeline({ name: 'core.odd', version: 1, input: z.object({ kind: z.string() }) })
    .step('emit', { output: z.any() }, ({ input }) => (input.kind === 'nul' ? { text: 'a\u0000b' } : { fine: true }));
  await testWorker(t, url, { pipelines: [odd], concurrency: 2 });
  const bad = await db.submitJob({ pipeline: 'core.odd', input: { kind: 'nul' } });
  const good = await db.submitJob({ pipeline: 'core.odd', input: { kind: 'ok' } });
  const job = await waitForJob(db, bad.jobId, undefined, 10_000);
  t.match(job, { status: 'failed', error: { class: 'unstorable_output', retryable: false } });
  t.match((await db.getAttempts(bad.jobId))[0], { outcome: 'failed', error_class: 'unstorable_output', error_message: /u0000/ });
  t.equal((await waitForJob(db, good.jobId, undefined, 10_000)).status, 'completed', 'the other job was not held up');
});

t.test('ballast.oldest_transactions names an open transaction', async (t) => {
  const c = await pool.connect();
  t.teardown(() => c.release());
  await c.query('begin');
  await c.query(`select set_config('application_name', 'core-v2-idle', false)`);
  await c.query('select count(*) from ballast_private.jobs');
  t.ok(await eventually(async () => (await pool.query(
    `select 1 from ballast.oldest_transactions where application_name = 'core-v2-idle' and state = 'idle in transaction'
        and xact_start is not null`)).rowCount === 1, 5000), 'listed, idle in transaction');
  await c.query('rollback');
});
