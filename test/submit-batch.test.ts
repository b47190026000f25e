// Set-based submission (migrations/0005_pipelines_and_submit.sql): ballast.submit_jobs submits a batch in a few statements
// with submit_job's semantics per input (results in input order, idempotency keys within the batch and against
// earlier jobs, all or nothing on a bad input, tenancy), two overlapping batches racing create one job per key
// without deadlocking, GraphQL's submitJobs and BallastDb.submitJobs go through it, and a multi-row
// INSERT INTO ballast.jobs (migrations/0005_pipelines_and_submit.sql) keeps per-row semantics while writing each table with one statement.
import t, { type Test } from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { clientLogin, freshDatabase, pgError } from './helpers.ts';
import { pipeline, type Pipeline } from '../src/pipeline/pipeline.ts';
import { IdempotencyConflictError, InvalidInputError } from '../src/errors.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';

const { name, pool, db, url } = await freshDatabase(t);

const Input = z.strictObject({ text: z.string().min(1), shard: z.string().optional() });
const Done = z.object({ ok: z.boolean() });
const done = () => ({ ok: true });

// a and b are roots (b limited per input.shard), c waits for both.
const p1 = pipeline({ name: 'batch.p', version: 1, input: Input })
  .step('a', { output: Done }, done)
  .step('b', { output: Done, concurrency: { limit: 2, key: 'input.shard' } }, done)
  .step('c', { after: ['a', 'b'], output: Done, retry: { maxAttempts: 7 }, timeoutMs: 5000 }, done);
const register = (p: Pipeline<any, any>) => db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
await register(p1);

type Row = { ord: number; job_id: string; created: boolean; status: string };

/** A new login in role ballast_client bound to `tenant`, connected; dropped when `t` ends. */
const boundLogin = (t: Test, label: string, tenant: string) => clientLogin(t, pool, name, label, tenant);

/** ballast.submit_jobs through `q` (the pool by default). */
async function submitMany(inputs: unknown[], keys: (string | null)[] | null = null,
  opts: { tenant?: string; priority?: number; version?: number | null; pipeline?: string } = {},
  q: Pick<pg.Pool, 'query'> | pg.Client = pool): Promise<Row[]> {
  const { rows } = await q.query<Row>(
    `select * from ballast.submit_jobs($1, $2::jsonb[], $3::text[], $4, $5, $6)`,
    [opts.pipeline ?? 'batch.p', inputs.map((i) => (i === null ? null : JSON.stringify(i))), keys,
      opts.tenant ?? 'default', opts.priority ?? 0, opts.version ?? null]);
  return rows;
}

/** Rows everywhere a submission writes: "nothing was written" compares two of these. */
async function rowCounts(): Promise<Record<string, number>> {
  const { rows } = await pool.query(`
    select (select count(*)::int from ballast_private.jobs) as jobs,
           (select count(*)::int from ballast_private.steps) as steps,
           (select count(*)::int from ballast_private.events) as events,
           (select count(*)::int from ballast_private.steps where status = 'queued') as wakeups`);
  return rows[0];
}

/** A job's steps, as comparable rows (no ids, no times). */
async function stepsOf(jobId: string) {
  const { rows } = await pool.query(
    `select name, status, depends_on, deps_remaining, attempts, max_attempts, backoff_base_ms, backoff_cap_ms,
            timeout_ms, concurrency_key, concurrency_limit, queued_at is not null as queued,
            queued_at = created_at and created_at = updated_at as same_times
       from ballast_private.steps where job_id = $1 order by id`, [jobId]);
  return rows;
}

/** The claimable steps of a job (the step rows are the queue, 0006_execution): queued, with the task and priority a claim reads. */
async function wakeupsOf(jobId: string) {
  const { rows } = await pool.query(
    `select s.name, s.task as task_identifier, s.priority
       from ballast_private.steps s
      where s.job_id = $1 and s.status = 'queued' order by s.id`, [jobId]);
  return rows;
}

const text = (n: number | string) => ({ text: `t${n}` });

t.test('one row per input, in input order; the jobs, steps and wake-ups are submit_job\'s', async (t) => {
  const before = await rowCounts();
  const inputs = [{ text: 'x', shard: 's1' }, { text: 'y', shard: 's2' }, { text: 'z' }];
  const rows = await submitMany(inputs, null, { priority: -3 });
  t.same(rows.map((r) => [r.ord, r.created, r.status]), [[1, true, 'queued'], [2, true, 'queued'], [3, true, 'queued']]);
  const ids = rows.map((r) => BigInt(r.job_id));
  t.ok(ids[0]! < ids[1]! && ids[1]! < ids[2]!, 'job ids grow with the input order');
  const { rows: jobs } = await pool.query(
    `select id, tenant_id, pipeline, pipeline_version, idempotency_key, input, status, priority
       from ballast.jobs where id = any($1::bigint[]) order by id`, [rows.map((r) => r.job_id)]);
  t.same(jobs.map((j) => j.input), inputs, 'each job has its own input');
  t.ok(jobs.every((j) => j.tenant_id === 'default' && j.pipeline_version === 1 && j.priority === -3 && j.idempotency_key === null));

  // The same input through submit_job: the step rows must be identical.
  const { rows: [single] } = await pool.query(`select * from ballast.submit_job('batch.p', $1::jsonb, null, 'default', -3)`,
    [JSON.stringify(inputs[0])]);
  const batchSteps = await stepsOf(rows[0]!.job_id);
  t.same(batchSteps, await stepsOf(single.job_id), 'the same step rows as submit_job creates');
  t.same(batchSteps.map((s) => [s.name, s.status, s.deps_remaining, s.concurrency_key]), [
    ['a', 'queued', 0, null], ['b', 'queued', 0, 'batch.p.b/s1'], ['c', 'pending', 2, null],
  ], 'roots queued, c pending, concurrency key from the input');
  t.equal((await stepsOf(rows[2]!.job_id))[1].concurrency_key, 'batch.p.b/(none)', 'a missing key field: (none), as submit_job');
  t.same(batchSteps[2], { ...batchSteps[2], max_attempts: 7, timeout_ms: 5000 }, 'the step policy is copied');
  t.same(await wakeupsOf(rows[1]!.job_id), [
    { name: 'a', task_identifier: p1.taskIdentifier, priority: -3 },
    { name: 'b', task_identifier: p1.taskIdentifier, priority: -3 },
  ], 'each root step is claimable, with the job\'s task and priority');

  const { rows: events } = await pool.query(`select job_id, type, actor from ballast.events where job_id = any($1::bigint[])`,
    [rows.map((r) => r.job_id)]);
  t.equal(events.length, 3, 'one job_submitted event per job');
  t.ok(events.every((e) => e.type === 'job_submitted' && e.actor === 'sql'), 'actor sql');
  t.same(await rowCounts(), { jobs: before.jobs! + 4, steps: before.steps! + 12, events: before.events! + 4, wakeups: before.wakeups! + 8 },
    'nothing else was written');

  t.same(await submitMany([]), [], 'an empty batch submits nothing');
  const pinned = await submitMany([text(1)], null, { version: 1 });
  t.equal(pinned[0]!.created, true, 'a pinned version');
});

t.test('idempotency keys within one call and against earlier jobs', async (t) => {
  const first = await submitMany([text(1), text(2), text(1), text(3)], ['k1', 'k2', 'k1', null]);
  t.same(first.map((r) => r.created), [true, true, false, true], 'the same key twice with the same request: created once');
  t.equal(first[2]!.job_id, first[0]!.job_id, 'both uses return the same job');
  t.equal(new Set(first.map((r) => r.job_id)).size, 3, 'three jobs');
  const { rows: [{ n }] } = await pool.query(`select count(*)::int as n from ballast.jobs where idempotency_key = 'k1'`);
  t.equal(n, 1);

  const before = await rowCounts();
  const again = await submitMany([text(3), text(2), text(4), text(1)], [null, 'k2', 'k4', 'k1']);
  t.same(again.map((r) => [r.ord, r.created]), [[1, true], [2, false], [3, true], [4, false]], 'keys used before: created = false');
  t.equal(again[1]!.job_id, first[1]!.job_id);
  t.equal(again[3]!.job_id, first[0]!.job_id);
  t.same(await rowCounts(), { jobs: before.jobs! + 2, steps: before.steps! + 6, events: before.events! + 2, wakeups: before.wakeups! + 4 },
    'only the new jobs were written');

  // submit_job and submit_jobs hash a request the same way.
  const { rows: [single] } = await pool.query(`select * from ballast.submit_job('batch.p', $1::jsonb, 'k4')`, [JSON.stringify(text(4))]);
  t.same([single.job_id, single.created], [again[2]!.job_id, false], 'submit_job returns the job submit_jobs created');
  await pool.query(`select * from ballast.submit_job('batch.p', $1::jsonb, 'k5')`, [JSON.stringify(text(5))]);
  const [viaBatch] = await submitMany([text(5)], ['k5']);
  t.equal(viaBatch!.created, false, 'and the other way round');

  const mark = await rowCounts();
  const inCall = await pgError(() => submitMany([text(6), text(7), text(8)], ['k6', null, 'k6']));
  t.equal(inCall.code, 'BA003');
  t.equal(inCall.message, `inputs[3]: idempotency key 'k6' is also given to inputs[1] of this call, for a different request`);
  t.same(JSON.parse(inCall.detail!), { idempotency_key: 'k6', ord: 3, other_ord: 1 });

  const earlier = await pgError(() => submitMany([text(9), { text: 'other' }], ['k9', 'k2']));
  t.equal(earlier.code, 'BA003');
  t.equal(earlier.message, `inputs[2]: idempotency key 'k2' was already used by job ${first[1]!.job_id} for a different request`);
  t.same(JSON.parse(earlier.detail!), { job_id: Number(first[1]!.job_id), idempotency_key: 'k2', ord: 2 });
  const viaTs = await pgError(() => db.submitJobs({ pipeline: 'batch.p', inputs: [text(9), { text: 'other' }], idempotencyKeys: ['k9', 'k2'] }));
  t.ok(viaTs instanceof IdempotencyConflictError, 'IdempotencyConflictError through BallastDb');
  t.equal((viaTs as unknown as IdempotencyConflictError).jobId, first[1]!.job_id, 'carrying the existing job id');
  t.same(await rowCounts(), mark, 'a conflict writes nothing, not even the other inputs\' jobs');
  const { rowCount } = await pool.query(`select 1 from ballast.jobs where idempotency_key in ('k6', 'k9')`);
  t.equal(rowCount, 0);

  const other = await submitMany([text(1)], ['k1'], { tenant: 'acme' });
  t.equal(other[0]!.created, true, 'the same key in another tenant is another job');
});

t.test('a bad input among good ones: nothing is written, the error names each bad input and path', async (t) => {
  const before = await rowCounts();
  const inputs = [text(1), { text: '' }, text(3), { text: 'x', colour: 'red' }, 'oops', null];
  const err = await pgError(() => submitMany(inputs, ['b1', 'b2', 'b3', 'b4', 'b5', 'b6']));
  t.equal(err.code, 'BA002');
  const issues = [
    { path: 'inputs[2].text', message: 'must have at least 1 character; got 0' },
    { path: 'inputs[4].colour', message: 'unknown property (not allowed by the contract)' },
    { path: 'inputs[5]', message: 'expected object, got string' },
    { path: 'inputs[6]', message: `is null (use '{}' for an empty object)` },
  ];
  t.same(JSON.parse(err.detail!), issues, 'the detail lists every problem by input and path, in input order');
  t.equal(err.message, 'inputs do not match the contract of pipeline batch.p@1 (4 problems): '
    + issues.map((i) => `${i.path}: ${i.message}`).join('; '));
  t.match(err.hint, /nothing was written/);
  t.same(await rowCounts(), before, 'no job, step, event or wake-up was written');
  const { rowCount } = await pool.query(`select 1 from ballast.jobs where idempotency_key like 'b_'`);
  t.equal(rowCount, 0, 'not even the good inputs\' jobs');

  const viaTs = await pgError(() => db.submitJobs({ pipeline: 'batch.p', inputs: [text(1), { text: '' }] }));
  t.ok(viaTs instanceof InvalidInputError, 'InvalidInputError through BallastDb');
  t.same((viaTs as unknown as InvalidInputError).issues, [issues[0]]);

  const many = await pgError(() => submitMany(Array.from({ length: 300 }, (_, i) => ({ text: '', n: i }))));
  const listed = JSON.parse(many.detail!) as { path: string }[];
  t.equal(listed.length, 20, 'at most 20 problems are listed');
  t.same(listed.slice(0, 2).map((i) => i.path), ['inputs[1].text', 'inputs[1].n'], 'the first ones, in input order (each input in the validator\'s order)');
  t.equal(listed.at(-1)!.path, 'inputs[10].n', 'two problems per input: the 20th is the tenth input\'s second');
  t.match(many.message, /\(more than 20 problems, the first 20 listed\)/);
  t.same(await rowCounts(), before);
});

t.test('bad arguments name the field', async (t) => {
  const before = await rowCounts();
  const cases: [string, () => Promise<unknown>, string, string][] = [
    ['keys shorter than inputs', () => submitMany([text(1), text(2)], ['a']), 'idempotency_keys', 'idempotency_keys: has 1 entries for 2 inputs'],
    ['keys longer than inputs', () => submitMany([text(1)], ['a', 'b']), 'idempotency_keys', 'idempotency_keys: has 2 entries for 1 inputs'],
    ['an empty key', () => submitMany([text(1), text(2)], ['a', '']), 'idempotency_keys[2]', 'idempotency_keys[2]: is empty; it must be 1 to 500 bytes of UTF-8'],
    ['too many inputs', () => submitMany(Array.from({ length: 1001 }, () => text(1))), 'inputs', 'inputs: holds 1001 inputs, more than 1000 per call'],
    ['inputs null', () => pool.query(`select * from ballast.submit_jobs('batch.p', null)`), 'inputs', 'inputs: is null'],
    ['two dimensions', () => pool.query(`select * from ballast.submit_jobs('batch.p', array[['{}', '{}']]::jsonb[])`), 'inputs', 'inputs: has 2 dimensions'],
    ['priority', () => submitMany([text(1)], null, { priority: 5000 }), 'priority', 'priority: 5000 is out of range'],
    ['tenant', () => submitMany([text(1)], null, { tenant: '' }), 'tenant_id', 'tenant_id: is empty; it must be 1 to 200 bytes of UTF-8'],
    ['pipeline', () => submitMany([text(1)], null, { pipeline: '' }), 'pipeline', 'pipeline: is missing'],
  ];
  for (const [what, run, field, message] of cases) {
    const e = await pgError(run);
    t.equal(e.code, 'BA002', `${what}: BA002`);
    t.equal(e.message, message, `${what}: the message`);
    t.equal((JSON.parse(e.detail!) as { path: string }[])[0]?.path, field, `${what}: the detail's path`);
  }
  const unknown = await pgError(() => submitMany([text(1)], null, { pipeline: 'no.such' }));
  t.same([unknown.code, unknown.message], ['BA004', `pipeline 'no.such' is not registered`]);
  const version = await pgError(() => submitMany([], null, { version: 9 }));
  t.same([version.code, version.message], ['BA004', `pipeline 'batch.p' has no version 9`], 'checked even for an empty batch');
  t.same(await rowCounts(), before, 'nothing was written');
  const full = await submitMany(Array.from({ length: 1000 }, (_, i) => text(i)));
  t.equal(full.length, 1000, '1000 inputs are accepted');
  t.same(full.map((r) => r.ord), Array.from({ length: 1000 }, (_, i) => i + 1));
});

t.test('two connections racing overlapping keys: one job per key, no deadlock', async (t) => {
  const clients = await Promise.all([0, 1, 2, 3].map(async () => {
    const c = new pg.Client({ connectionString: url, application_name: 'ballast-batch-race' });
    await c.connect();
    return c;
  }));
  t.teardown(() => Promise.all(clients.map((c) => c.end())));
  const before = await rowCounts();
  // Keys 0..59 and 30..89, each call in its own order (one reversed), several rounds at once.
  const keysA = Array.from({ length: 60 }, (_, i) => `race-${i}`);
  const keysB = Array.from({ length: 60 }, (_, i) => `race-${i + 30}`).reverse();
  const inputOf = (k: string) => ({ text: k });
  const call = (c: pg.Client, keys: string[]) => submitMany(keys.map(inputOf), keys, {}, c);
  const results = await Promise.all([call(clients[0]!, keysA), call(clients[1]!, keysB), call(clients[2]!, keysB), call(clients[3]!, keysA)]);
  const byKey = new Map<string, Set<string>>();
  let created = 0;
  for (const [i, rows] of results.entries()) {
    const keys = i === 0 || i === 3 ? keysA : keysB;
    t.equal(rows.length, 60, `call ${i + 1}: one row per input`);
    for (const r of rows) {
      const key = keys[r.ord - 1]!;
      if (!byKey.has(key)) byKey.set(key, new Set());
      byKey.get(key)!.add(r.job_id);
      if (r.created) created++;
    }
  }
  t.equal(byKey.size, 90, '90 distinct keys');
  t.ok([...byKey.values()].every((ids) => ids.size === 1), 'every call returned the same job for a key');
  t.equal(created, 90, 'each key created exactly once');
  const { rows } = await pool.query(`select idempotency_key, count(*)::int as n from ballast.jobs
                                      where idempotency_key like 'race-%' group by 1 having count(*) > 1`);
  t.same(rows, [], 'no key has two jobs');
  t.same(await rowCounts(), { jobs: before.jobs! + 90, steps: before.steps! + 270, events: before.events! + 90, wakeups: before.wakeups! + 180 });

  // With the first batch held open, the second waits on the shared keys, then returns the first batch's jobs.
  const [holder, other] = clients;
  await holder!.query('begin');
  const held = await submitMany([text('h1'), text('h2')], ['held-1', 'held-2'], {}, holder);
  const pending = submitMany([text('h3'), text('h2')], ['held-3', 'held-2'], {}, other);
  let waiting = false;
  for (let i = 0; i < 400 && !waiting; i++) {
    const { rows: w } = await pool.query(`select 1 from pg_stat_activity where datname = current_database()
                                           and application_name = 'ballast-batch-race' and wait_event_type = 'Lock'`);
    waiting = w.length > 0;
    if (!waiting) await new Promise((r) => setTimeout(r, 25));
  }
  t.ok(waiting, 'the second batch waits on the uncommitted key');
  await holder!.query('commit');
  const late = await pending;
  t.same(late.map((r) => r.created), [true, false], 'then creates its new key and returns the committed job for the shared one');
  t.equal(late[1]!.job_id, held[1]!.job_id);

  // Under REPEATABLE READ the committed job is not in the snapshot: 40001, retry.
  await holder!.query('begin');
  await submitMany([text('r1')], ['rr-1'], {}, holder);
  await other!.query('begin isolation level repeatable read');
  await other!.query('select 1');
  const rr = pgError(() => submitMany([text('r1')], ['rr-1'], {}, other));
  await new Promise((r) => setTimeout(r, 200));
  await holder!.query('commit');
  t.equal((await rr).code, '40001', 'a concurrent key not visible to the snapshot: serialization failure');
  await other!.query('rollback');
  const [retried] = await submitMany([text('r1')], ['rr-1'], {}, other);
  t.equal(retried!.created, false, 'the retry returns the job');
});

t.test('tenancy: a client submits for its own tenant only', async (t) => {
  /** In a transaction as `role` with `tenant` in ballast.tenant_id (as the API does); rolled back. */
  async function as<T>(role: string, tenant: string | null, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await pool.connect();
    try {
      await c.query('begin');
      await c.query(`select set_config('role', $1, true), set_config('ballast.tenant_id', $2, true), set_config('ballast.actor', 'jwt:alice', true)`,
        [role, tenant ?? '']);
      return await fn(c);
    } finally {
      await c.query('rollback').catch(() => {});
      c.release();
    }
  }
  await as('ballast_client', 'acme', async (c) => {
    const rows = await submitMany([text(1), text(2)], ['ten-1', null], {}, c);
    const { rows: jobs } = await c.query('select tenant_id from ballast.jobs where id = any($1::bigint[])', [rows.map((r) => r.job_id)]);
    t.same(jobs.map((j) => j.tenant_id), ['acme', 'acme'], 'submitted for the caller\'s tenant');
    const { rows: events } = await c.query(`select distinct actor from ballast.events where job_id = any($1::bigint[])`, [rows.map((r) => r.job_id)]);
    t.same(events, [{ actor: 'jwt:alice' }], 'the audit trail names the caller');
    await c.query('savepoint s');
    const other = await pgError(() => submitMany([text(1)], null, { tenant: 'globex' }, c));
    t.same([other.code, other.message], ['BA014', 'tenant acme cannot submit jobs for tenant globex']);
    await c.query('rollback to s');
    const named = await submitMany([text(3)], null, { tenant: 'acme' }, c);
    t.equal(named[0]!.created, true, 'naming its own tenant is fine');
  });
  await as('ballast_client', null, async (c) => {
    const e = await pgError(() => submitMany([text(1)], null, {}, c));
    t.same([e.code, e.message], ['BA014', 'role ballast_client acts for no tenant: it cannot submit jobs']);
  });
  await as('ballast_reporter', null, async (c) => {
    t.equal((await pgError(() => submitMany([text(1)], null, {}, c))).code, '42501', 'reporters may not submit');
  });
  await as('ballast_operator', null, async (c) => {
    const rows = await submitMany([text(1)], null, { tenant: 'globex' }, c);
    const { rows: [j] } = await c.query('select tenant_id from ballast.jobs where id = $1', [rows[0]!.job_id]);
    t.equal(j.tenant_id, 'globex', 'operators submit for any tenant');
  });

  const { login, c } = await boundLogin(t, 'batch', 'globex');
  await c.query(`set ballast.tenant_id = 'acme'`);
  const e = await pgError(() => submitMany([text(1)], null, { tenant: 'acme' }, c));
  t.same([e.code, e.message], ['BA014', 'tenant globex cannot submit jobs for tenant acme'], 'a bound login cannot submit for another tenant');
  const rows = await submitMany([text(1)], null, {}, c);
  const { rows: [j] } = await pool.query('select j.tenant_id, e.actor from ballast.jobs j join ballast.events e on e.job_id = j.id where j.id = $1', [rows[0]!.job_id]);
  t.same(j, { tenant_id: 'globex', actor: login }, 'it submits for its bound tenant, named by its login');
});

t.test('a multi-row INSERT writes its jobs, steps and events with one statement each, and returns them as stored', async (t) => {
  const { rows } = await pool.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key, priority)
     select 'batch.p', jsonb_build_object('text', 'set-' || n, 'shard', 's' || (n % 3)), 'set-' || n, n % 5
       from generate_series(1, 200) n
     returning *`);
  t.equal(rows.length, 200);
  const ids = rows.map((r) => r.id);
  const { rows: stored } = await pool.query('select * from ballast.jobs where id = any($1::bigint[]) order by id', [ids]);
  t.same(stored, [...rows].sort((a, b) => Number(a.id) - Number(b.id)), 'RETURNING * is the job as stored, column for column');
  // Rows written by one statement share its command id (cmin) within the transaction.
  const { rows: [cmds] } = await pool.query(
    `select (select count(distinct cmin::text)::int from ballast_private.jobs where id = any($1::bigint[])) as jobs,
            (select count(distinct cmin::text)::int from ballast_private.steps where job_id = any($1::bigint[])) as steps,
            (select count(*)::int from ballast_private.steps where job_id = any($1::bigint[])) as step_rows,
            (select count(distinct cmin::text)::int from ballast_private.events where job_id = any($1::bigint[])) as events,
            (select count(*)::int from ballast_private.events where job_id = any($1::bigint[])) as event_rows`, [ids]);
  t.same(cmds, { jobs: 1, steps: 1, step_rows: 600, events: 1, event_rows: 200 }, 'one INSERT per table');
  const { rows: drift } = await pool.query('select id from ballast_private.jobs where id = any($1::bigint[]) and ballast.recount_job(id)', [ids]);
  t.same(drift, [], 'the job counters match their steps');
  const { rows: shards } = await pool.query(
    `select s.concurrency_key, s.priority, s.task from ballast_private.steps s where s.job_id = $1 and s.name = 'b'`, [rows[4].id]);
  t.same(shards, [{ concurrency_key: 'batch.p.b/s2', priority: 0, task: 'ballast_step:batch.p@1' }], 'the step rows are those submit_job makes');
});

t.test('INSERT INTO ballast.jobs: concurrent inserts of one key wait for each other and return one job', async (t) => {
  const a = await pool.connect();
  const b = await pool.connect();
  t.teardown(() => {
    a.release();
    b.release();
  });
  await a.query('begin');
  const { rows: [first] } = await a.query(`insert into ballast.jobs (pipeline, input, idempotency_key) values ('batch.p', '{"text": "race"}', 'insert-race') returning id`);
  await b.query('begin');
  const second = b.query(`insert into ballast.jobs (pipeline, input, idempotency_key) values ('batch.p', '{"text": "race"}', 'insert-race') returning id`);
  const bPid = (b as unknown as { processID: number }).processID;
  const waited = await (async () => {
    for (let i = 0; i < 50; i++) {
      const { rows } = await pool.query(`select wait_event_type from pg_stat_activity where pid = $1`, [bPid]);
      if (rows[0]?.wait_event_type === 'Lock') return true;
      await new Promise((r) => setTimeout(r, 100));
    }
    return false;
  })();
  t.ok(waited, 'the second waits for the first one\'s key');
  await a.query('commit');
  const { rows: [again] } = await second;
  await b.query('commit');
  t.equal(again.id, first.id, 'and then returns its job');
  const viaSubmit = await db.submitJob({ pipeline: 'batch.p', input: { text: 'race' }, idempotencyKey: 'insert-race' });
  t.same([viaSubmit.jobId, viaSubmit.created], [String(first.id), false], 'submit_job agrees');
  const { rows: [{ n }] } = await pool.query(`select count(*)::int as n from ballast.jobs where idempotency_key = 'insert-race'`);
  t.equal(n, 1, 'one job');
});

t.test('INSERT INTO ballast.jobs refuses a note table planted by the session', async (t) => {
  const { c } = await boundLogin(t, 'plant', 'acme');
  await c.query(`begin`);
  await c.query(`create temporary table ballast_job_inserts (
    id bigint primary key, tenant_id text not null, pipeline text not null, pipeline_version integer not null,
    idempotency_key text, request_hash text not null, input jsonb not null, priority integer not null,
    created_at timestamptz not null, steps integer not null) on commit delete rows`);
  await c.query(`insert into pg_temp.ballast_job_inserts values (987654321, 'globex', 'batch.p', 1, null, 'x', '{}', 0, now(), 0)`);
  const e = await pgError(() => c.query(`insert into ballast.jobs (pipeline, input) values ('batch.p', '{"text": "planted"}')`));
  t.equal(e.code, '42501', 'refused');
  t.match(e.message, /ballast_job_inserts of this session was not created by ballast/);
  await c.query('rollback');
  const { rows } = await pool.query(`select id from ballast.jobs where tenant_id = 'globex' and input = '{}'::jsonb`);
  t.same(rows, [], 'no job for another tenant was written');
});

t.test('BallastDb.submitJobs', async (t) => {
  const rows = await db.submitJobs({ pipeline: 'batch.p', inputs: [text('d1'), [1, 2], text('d1')], idempotencyKeys: ['db-1', null, 'db-1'] })
    .catch((e: unknown) => e);
  t.ok(rows instanceof InvalidInputError, 'an array input is one JSON value, checked as such');
  t.same((rows as InvalidInputError).issues, [{ path: 'inputs[2]', message: 'expected object, got array' }]);
  const ok = await db.submitJobs({ pipeline: 'batch.p', inputs: [text('d1'), text('d2'), text('d1')], idempotencyKeys: ['db-1', null, 'db-1'], tenantId: 'initech', priority: 4 });
  t.same(ok.map((r) => [r.created, r.status]), [[true, 'queued'], [true, 'queued'], [false, 'queued']]);
  t.equal(ok[2]!.jobId, ok[0]!.jobId);
  const { rows: [j] } = await pool.query('select tenant_id, priority from ballast.jobs where id = $1', [ok[1]!.jobId]);
  t.same(j, { tenant_id: 'initech', priority: 4 });
  t.same(await db.submitJobs({ pipeline: 'batch.p', inputs: [] }), []);
});

t.test('GraphQL submitJobs', async (t) => {
  const server = await testServer(t, url);
  const acme = await token('client', 'acme', { subject: 'alice' });
  const SUBMIT_MANY = `mutation ($input: SubmitJobsInput!) { submitJobs(input: $input) { jobs { jobId created status job { id tenantId input } } } }`;
  const input = { pipeline: 'batch.p', inputs: [text('g1'), text('g2'), text('g1')], idempotencyKeys: ['gql-1', null, 'gql-1'] };
  const { jobs } = (await data(server, SUBMIT_MANY, { input }, acme)).submitJobs;
  t.same(jobs.map((j: any) => [j.created, j.status, j.job.tenantId, j.job.input]),
    [[true, 'queued', 'acme', text('g1')], [true, 'queued', 'acme', text('g2')], [false, 'queued', 'acme', text('g1')]],
    'one result per input, in order, with the job read back');
  t.equal(jobs[2].jobId, jobs[0].jobId);
  t.ok(jobs.every((j: any) => j.job.id === j.jobId));

  const again = (await data(server, SUBMIT_MANY, { input }, acme)).submitJobs.jobs;
  t.same(again.map((j: any) => j.created), [false, true, false], 'keyed inputs return their jobs, the unkeyed one is new');

  const bad = await gql(server, SUBMIT_MANY, { input: { pipeline: 'batch.p', inputs: [text('ok'), { text: '' }] } }, acme);
  const e = errorOf(bad);
  t.same([e.code, e.extensions.sqlstate], ['INVALID_INPUT', 'BA002']);
  t.same(e.extensions.issues, [{ path: 'inputs[2].text', message: 'must have at least 1 character; got 0' }]);
  t.same(bad.body.errors![0]!.path, ['submitJobs']);

  const conflict = errorOf(await gql(server, SUBMIT_MANY, { input: { ...input, inputs: [text('other'), text('g2'), text('other')] } }, acme));
  t.equal(conflict.code, 'IDEMPOTENCY_CONFLICT');
  t.equal(conflict.extensions.jobId, jobs[0].jobId, 'naming the existing job');
  t.match(conflict.message, /^inputs\[1\]: idempotency key 'gql-1'/);

  const other = errorOf(await gql(server, SUBMIT_MANY, { input: { ...input, tenantId: 'globex' } }, acme));
  t.equal(other.code, 'FORBIDDEN', 'a client cannot submit for another tenant');
  const operator = await token('operator');
  const forGlobex = (await data(server, SUBMIT_MANY, { input: { pipeline: 'batch.p', inputs: [text('op')], tenantId: 'globex', priority: 2 } }, operator)).submitJobs.jobs;
  t.equal(forGlobex[0].job.tenantId, 'globex', 'an operator names the tenant');
  const nullItem = errorOf(await gql(server, SUBMIT_MANY, { input: { pipeline: 'batch.p', inputs: [null] } }, acme));
  t.match(nullItem.message, /null/, 'a null input is refused by GraphQL validation');
});

t.test('a multi-row INSERT INTO ballast.jobs has per-row semantics', async (t) => {
  const { rows } = await pool.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key)
     values ('batch.p', '{"text": "i1"}', 'ins-1'), ('batch.p', '{"text": "i2"}', null), ('batch.p', '{"text": "i1"}', 'ins-1')
     returning id, status, input`);
  t.equal(rows.length, 3, 'a row per inserted row');
  t.equal(rows[2].id, rows[0].id, 'the same key and input twice in one statement: one job');
  t.not(rows[1].id, rows[0].id);
  const { rows: [{ n }] } = await pool.query(`select count(*)::int as n from ballast.jobs where idempotency_key = 'ins-1'`);
  t.equal(n, 1);
  t.equal((await stepsOf(rows[0].id)).length, 3, 'its steps once');

  const before = await rowCounts();
  const conflict = await pgError(() => pool.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key)
     values ('batch.p', '{"text": "i3"}', 'ins-3'), ('batch.p', '{"text": "i4"}', 'ins-3')`));
  t.equal(conflict.code, 'BA003', 'the same key with another input in one statement: BA003');
  t.match(conflict.message, /idempotency key 'ins-3' was already used by job \d+ for a different request/);
  t.same(await rowCounts(), before, 'and nothing of the statement is written');

  const invalid = await pgError(() => pool.query(
    `insert into ballast.jobs (pipeline, input) values ('batch.p', '{"text": "i5"}'), ('batch.p', '{"text": ""}')`));
  t.equal(invalid.code, 'BA002');
  t.same(await rowCounts(), before, 'a bad row writes nothing either');
});
