// The batched core (migration 0013): the step rows are the queue, settle_and_claim answers every attempt of a batch
// per id, statement-level triggers refuse a bad multi-row change whole, and the job counters never drift from a
// recount. SQL-level, with the verbs a worker calls, so every case is deterministic.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline.ts';
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
  await pool.query(`select ballast.fail_step($1, '{"class": "worker_lost", "message": "reclaimed"}')`, [stale!.attempt_id]);
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
