// Registering pipelines and submitting jobs (migrations/0005_pipelines_and_submit.sql, INSERT INTO ballast.jobs in
// 0010_public_views): definitions are validated and pinned by hash, submission validates the input in SQL, dedupes on the
// idempotency key (also under a 100-connection race), creates steps (the roots queued, carrying the job's task and
// priority: the step rows are the queue, 0006_execution) in the caller's transaction, and leaves nothing behind when it fails or rolls back.
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { freshDatabase, pgError } from './helpers.ts';
import { pipeline, type Pipeline } from '../src/pipeline/pipeline.ts';
import { BallastError, IdempotencyConflictError, InvalidInputError } from '../src/errors.ts';

const { pool, db, url } = await freshDatabase(t);

const Input = z.strictObject({
  text: z.string().min(1),
  lang: z.enum(['en', 'fr']),
  n: z.number().int().max(10),
  meta: z.object({ source: z.string() }),
  tags: z.array(z.string()).max(2),
});
const valid = { text: 'hello', lang: 'en', n: 3, meta: { source: 'test' }, tags: ['a'] };
const Done = z.object({ ok: z.boolean() });
const done = () => ({ ok: true });

// A diamond: a and b are roots, c waits for both, d for c.
const v1 = pipeline({ name: 'sub.diamond', version: 1, input: Input })
  .step('a', { output: Done }, done)
  .step('b', { output: Done }, done)
  .step('c', { after: ['a', 'b'], output: Done }, done)
  .step('d', { after: ['c'], output: Done }, done);

const register = (p: Pipeline<any, any>) => db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());

/** A raw step definition as ballast.register_pipeline reads it. */
const step = (name: string, depends_on: string[] = [], extra: Record<string, unknown> = {}) =>
  ({ name, depends_on, max_attempts: 3, backoff_base_ms: 0, backoff_cap_ms: 0, ...extra });

type SubmitRow = { job_id: string; created: boolean; status: string; pipeline_version: number };

async function submitSql(args: { input?: unknown; key?: string | null; tenant?: string; priority?: number; version?: number | null; pipeline?: string }, q: Pick<pg.Pool, 'query'> | pg.Client = pool): Promise<SubmitRow> {
  const { rows } = await q.query<SubmitRow>('select * from ballast.submit_job($1, $2::jsonb, $3, $4, $5, $6)', [
    args.pipeline ?? 'sub.diamond', JSON.stringify(args.input ?? valid), args.key ?? null, args.tenant ?? 'default',
    args.priority ?? 0, args.version ?? null,
  ]);
  return rows[0]!;
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

async function stepsOf(jobId: string) {
  const { rows } = await pool.query(
    `select id, name, status, depends_on, deps_remaining, max_attempts, queued_at is not null as queued
       from ballast_private.steps where job_id = $1 order by id`, [jobId]);
  return rows as { id: string; name: string; status: string; depends_on: string[]; deps_remaining: number; max_attempts: number; queued: boolean }[];
}

/** The claimable steps of a job (the step rows are the queue, 0006_execution): queued, with the task and priority a claim reads. */
async function wakeupsOf(jobId: string) {
  const { rows } = await pool.query(
    `select s.task as task_identifier, 'step:' || s.id as key, s.priority
       from ballast_private.steps s
      where s.job_id = $1 and s.status = 'queued' order by s.id`, [jobId]);
  return rows as { task_identifier: string; key: string; priority: number }[];
}

t.test('registering a pipeline version', async (t) => {
  const first = await register(v1);
  t.equal(first.created, true, 'first registration creates it');
  t.match(first.hash, /^[0-9a-f]{64}$/);
  t.same(await register(v1), { created: false, hash: first.hash }, 'the identical definition again: created = false');
  const { rows } = await pool.query(`select definition, input_schema from ballast.pipelines where name = 'sub.diamond'`);
  t.same(rows, [{ definition: v1.definition(), input_schema: v1.inputJsonSchema() }], 'stored as given');

  const changed = pipeline({ name: 'sub.diamond', version: 1, input: Input })
    .step('a', { output: Done, retry: { maxAttempts: 2 } }, done);
  const err = await pgError(() => pool.query('select * from ballast.register_pipeline($1, $2, $3::jsonb, $4::jsonb)',
    ['sub.diamond', 1, JSON.stringify(changed.definition()), JSON.stringify(changed.inputJsonSchema())]));
  t.equal(err.code, 'BA005');
  t.equal(err.message, 'pipeline sub.diamond version 1 is already registered with a different definition');
  t.match(err.hint, /new version \(2\)/, 'the hint says to bump the version');
  t.match(err.detail, new RegExp(`registered hash ${first.hash}, new hash [0-9a-f]{64}`));

  const viaTs = await pgError(() => db.registerPipeline('sub.diamond', 1, v1.definition(), { type: 'object' }));
  t.ok(viaTs instanceof BallastError, 'a BallastError through BallastDb');
  t.equal((viaTs as unknown as BallastError).code, 'pipeline_version_conflict', 'another input contract is another definition');
  const { rows: count } = await pool.query(`select count(*)::int as n from ballast.pipelines where name = 'sub.diamond'`);
  t.equal(count[0].n, 1, 'still one version');
});

t.test('malformed definitions are refused with BA006', async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['unknown dependency', { steps: [step('a'), step('b', ['nope'])] },
      /step b depends on 'nope', which is not a step of this pipeline/],
    ['self-dependency', { steps: [step('a', ['a'])] }, /step a depends on 'a', which is itself/],
    ['cycle', { steps: [step('root'), step('x', ['root', 'z']), step('y', ['x']), step('z', ['y'])] },
      /steps x, y, z depend on each other in a cycle/],
    ['duplicate step name', { steps: [step('a'), step('a')] }, /step 'a' is defined twice/],
    ['bad step name', { steps: [step('Fetch-Page')] }, /step name 'Fetch-Page' is not valid/],
    ['max_attempts 0', { steps: [step('a', [], { max_attempts: 0 })] }, /step a: max_attempts 0 must be an integer from 1 to 1000/],
    ['no steps', { steps: [] }, /definition.steps must be a non-empty array/],
    // Each of these used to register fine and then fail every submission (or never finish a job).
    ['a dependency listed twice', { steps: [step('a'), step('b', ['a', 'a'])] }, /step b lists 'a' twice in depends_on/],
    ['timeout_ms beyond the column', { steps: [step('a', [], { timeout_ms: 3_000_000_000 })] },
      /step a: timeout_ms must be a positive integer/],
    ['concurrency limit beyond the column', { steps: [step('a', [], { concurrency: { group: 'g', key: 'global', limit: 1e10 } })] },
      /step a: concurrency .* is not valid/],
  ];
  for (const [what, definition, message] of cases) {
    const err = await pgError(() => pool.query(`select * from ballast.register_pipeline('sub.bad', 1, $1::jsonb, '{}')`,
      [JSON.stringify(definition)]));
    t.equal(err.code, 'BA006', `${what}: BA006`);
    t.match(err.message, message, `${what}: message`);
  }
  const { rows } = await pool.query(`select count(*)::int as n from ballast.pipelines where name = 'sub.bad'`);
  t.equal(rows[0].n, 0, 'nothing was registered');
});

t.test('submit_job creates the job, its steps and one wake-up per root step', async (t) => {
  const before = await rowCounts();
  const row = await submitSql({ priority: -5 });
  t.match(row, { job_id: /^\d+$/, created: true, status: 'queued', pipeline_version: 1 });
  const { rows: [job] } = await pool.query(
    'select tenant_id, pipeline, pipeline_version, idempotency_key, input, status, priority from ballast.jobs where id = $1', [row.job_id]);
  t.same(job, { tenant_id: 'default', pipeline: 'sub.diamond', pipeline_version: 1, idempotency_key: null, input: valid,
    status: 'queued', priority: -5 });

  const steps = await stepsOf(row.job_id);
  t.same(steps.map(({ id: _, ...s }) => s), [
    { name: 'a', status: 'queued', depends_on: [], deps_remaining: 0, max_attempts: 5, queued: true },
    { name: 'b', status: 'queued', depends_on: [], deps_remaining: 0, max_attempts: 5, queued: true },
    { name: 'c', status: 'pending', depends_on: ['a', 'b'], deps_remaining: 2, max_attempts: 5, queued: false },
    { name: 'd', status: 'pending', depends_on: ['c'], deps_remaining: 1, max_attempts: 5, queued: false },
  ], 'roots queued, the rest pending with their dependency counts');

  const { rows: [{ task }] } = await pool.query(`select ballast.task_identifier('sub.diamond', 1) as task`);
  t.equal(task, v1.taskIdentifier, 'SQL and TypeScript agree on the task identifier');
  t.same(await wakeupsOf(row.job_id), [
    { task_identifier: task, key: `step:${steps[0]!.id}`, priority: -5 },
    { task_identifier: task, key: `step:${steps[1]!.id}`, priority: -5 },
  ], 'each root step is claimable, with the job\'s task and priority');
  const { rows: [gw] } = await pool.query(`select count(*)::int as n from graphile_worker.jobs`);
  t.equal(gw.n, 0, 'and no graphile-worker job is made per step');

  const { rows: events } = await pool.query('select type, status, actor, step_id from ballast.events where job_id = $1', [row.job_id]);
  t.same(events, [{ type: 'job_submitted', status: 'queued', actor: 'sql', step_id: null }], 'one event, actor sql');
  t.same(await rowCounts(), { jobs: before.jobs! + 1, steps: before.steps! + 4, events: before.events! + 1, wakeups: before.wakeups! + 2 },
    'nothing else was written');

  const viaTs = await db.submitJob({ pipeline: 'sub.diamond', input: valid });
  t.match(viaTs, { jobId: /^\d+$/, created: true, status: 'queued', pipelineVersion: 1 }, 'BallastDb.submitJob');
  t.not(viaTs.jobId, row.job_id, 'no key: every submission is a new job');
});

t.test('idempotency keys', async (t) => {
  const first = await submitSql({ key: 'order-1' });
  t.equal(first.created, true);
  const before = await rowCounts();
  const again = await submitSql({ key: 'order-1' });
  t.same(again, { ...first, created: false }, 'same key, same request: the same job, created = false');
  t.same(await rowCounts(), before, 'and nothing was written');
  t.same(await db.submitJob({ pipeline: 'sub.diamond', input: valid, idempotencyKey: 'order-1' }),
    { jobId: first.job_id, created: false, status: 'queued', pipelineVersion: 1 }, 'the same through BallastDb');

  const conflict = await pgError(() => submitSql({ key: 'order-1', input: { ...valid, text: 'other' } }));
  t.equal(conflict.code, 'BA003');
  t.equal(conflict.message, `idempotency key 'order-1' was already used by job ${first.job_id} for a different request`);
  t.same(JSON.parse(conflict.detail!), { job_id: Number(first.job_id), idempotency_key: 'order-1' });
  const viaTs = await pgError(() => db.submitJob({ pipeline: 'sub.diamond', input: { ...valid, n: 4 }, idempotencyKey: 'order-1' }));
  t.ok(viaTs instanceof IdempotencyConflictError, 'IdempotencyConflictError through BallastDb');
  t.equal((viaTs as unknown as IdempotencyConflictError).jobId, first.job_id, 'carrying the existing job id');
  t.same(await rowCounts(), before, 'conflicts write nothing');

  const other = await submitSql({ key: 'order-1', tenant: 'acme' });
  t.equal(other.created, true, 'the same key in another tenant is another job');
  t.not(other.job_id, first.job_id);
  const { rows } = await pool.query(`select tenant_id from ballast.jobs where idempotency_key = 'order-1' order by id`);
  t.same(rows, [{ tenant_id: 'default' }, { tenant_id: 'acme' }]);
});

t.test('100 concurrent submissions with one key create one job', async (t) => {
  // Every connection this test opens must fit into the server next to the ones already open (a local server with
  // max_connections = 100 gets fewer racers; the embedded test server allows 400).
  const { rows: [room] } = await pool.query<{ free: number }>(
    `select current_setting('max_connections')::int - (select count(*)::int from pg_stat_activity) - 10 as free`);
  const n = Math.min(100, room!.free);
  if (n < 100) t.comment(`only ${n} connections are free on this server: racing ${n} submissions`);
  t.ok(n >= 20, `enough connections to race (${n})`);
  const clients = await Promise.all(Array.from({ length: n }, async () => {
    const c = new pg.Client({ connectionString: url, application_name: 'ballast-race' });
    await c.connect();
    return c;
  }));
  t.teardown(() => Promise.all(clients.map((c) => c.end())));

  const before = await rowCounts();
  const results = await Promise.all(clients.map((c) => submitSql({ key: 'race-1' }, c)));
  t.equal(new Set(results.map((r) => r.job_id)).size, 1, 'every call returned the same job');
  t.equal(results.filter((r) => r.created).length, 1, 'exactly one created it');
  t.same(await rowCounts(), { jobs: before.jobs! + 1, steps: before.steps! + 4, events: before.events! + 1, wakeups: before.wakeups! + 2 },
    'one job, its four steps, one event, two wake-ups');

  // The same with the winner held open: all others must wait for it on the key (seen in pg_stat_activity), then
  // return its job once it commits.
  const [holder, ...others] = clients;
  await holder!.query('begin');
  const won = await submitSql({ key: 'race-2' }, holder);
  t.equal(won.created, true, 'the holder created the job (not yet committed)');
  const pending = Promise.all(others.map((c) => submitSql({ key: 'race-2' }, c)));
  const deadline = Date.now() + 20_000;
  let waiting = 0;
  while (waiting < others.length && Date.now() < deadline) {
    const { rows } = await pool.query<{ n: number }>(
      `select count(*)::int as n from pg_stat_activity
        where datname = current_database() and application_name = 'ballast-race' and wait_event_type = 'Lock'`);
    waiting = rows[0]!.n;
    if (waiting < others.length) await new Promise((r) => setTimeout(r, 20));
  }
  t.equal(waiting, others.length, 'every other submission waits on the uncommitted key');
  await holder!.query('commit');
  const late = await pending;
  t.ok(late.every((r) => r.job_id === won.job_id && !r.created), 'after the commit they all return that job, created = false');
});

t.test('INSERT INTO ballast.jobs submits in the inserting transaction', async (t) => {
  const c = await pool.connect();
  t.teardown(() => c.release());
  await c.query('begin');
  const { rows: [inserted] } = await c.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key) values ('sub.diamond', $1, 'ins-1')
     returning id, status, tenant_id, pipeline_version, priority`, [JSON.stringify(valid)]);
  t.match(inserted, { id: /^\d+$/, status: 'queued', tenant_id: 'default', pipeline_version: 1, priority: 0 });
  const { rows: inside } = await c.query(
    `select (select count(*)::int from ballast_private.steps where job_id = $1) as steps,
            (select count(*)::int from ballast_private.steps where job_id = $1 and status = 'queued') as wakeups`, [inserted.id]);
  t.same(inside[0], { steps: 4, wakeups: 2 }, 'steps and wake-ups exist inside the transaction');
  const outside = await pool.query('select 1 from ballast.jobs where id = $1', [inserted.id]);
  t.equal(outside.rowCount, 0, 'and are not visible outside it before the commit');
  await c.query('commit');

  const { rows: [again] } = await pool.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key) values ('sub.diamond', $1, 'ins-1') returning id, status`,
    [JSON.stringify(valid)]);
  t.same(again, { id: inserted.id, status: 'queued' }, 'inserting the same row again returns the same job');
  t.equal((await stepsOf(inserted.id)).length, 4, 'without a second set of steps');
  t.equal((await wakeupsOf(inserted.id)).length, 2, 'or of wake-ups');
  const { rows: events } = await pool.query('select type, actor from ballast.events where job_id = $1', [inserted.id]);
  t.same(events, [{ type: 'job_submitted', actor: 'sql_insert' }]);

  const before = await rowCounts();
  await c.query('begin');
  const { rows: [rolled] } = await c.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key, tenant_id) values ('sub.diamond', $1, 'ins-2', 't2')
     returning id`, [JSON.stringify(valid)]);
  t.ok(rolled.id, 'inserted inside a transaction');
  await c.query('rollback');
  t.same(await rowCounts(), before, 'after the rollback: no job, step, event or wake-up is left');
  const { rowCount } = await pool.query(`select 1 from ballast_private.jobs where id = $1 or idempotency_key = 'ins-2'`, [rolled.id]);
  t.equal(rowCount, 0, 'the rolled-back job is gone');
});

t.test('invalid input is refused in SQL with every violation by path, and nothing is written', async (t) => {
  const bad = { text: '', lang: 'de', n: 11, meta: {}, tags: [1, 'b', 'c'], extra: true };
  t.equal(Input.safeParse(bad).success, false, 'zod refuses it too');
  const expected = [
    { path: 'input.extra', message: 'unknown property (not allowed by the contract)' },
    { path: 'input.lang', message: 'must be one of "en", "fr"; got "de"' },
    { path: 'input.meta.source', message: 'required property is missing' },
    { path: 'input.n', message: 'must be <= 10; got 11' },
    { path: 'input.tags', message: 'must have at most 2 item(s); got 3' },
    { path: 'input.tags[0]', message: 'expected string, got number' },
    { path: 'input.text', message: 'must have at least 1 character; got 0' },
  ];
  const byPath = (a: { path: string }, b: { path: string }) => a.path.localeCompare(b.path);
  const before = await rowCounts();

  const err = await pgError(() => submitSql({ input: bad, key: 'bad-1' }));
  t.equal(err.code, 'BA002');
  t.same((JSON.parse(err.detail!) as typeof expected).sort(byPath), expected, 'the detail lists every violation by path');
  t.match(err.message, /^input does not match the contract of pipeline sub\.diamond@1 \(7 problems\): /);
  for (const e of expected) t.ok(err.message.includes(`${e.path}: ${e.message}`), `the message names ${e.path}`);

  const viaTs = await pgError(() => db.submitJob({ pipeline: 'sub.diamond', input: bad }));
  t.ok(viaTs instanceof InvalidInputError, 'InvalidInputError through BallastDb');
  t.same([...(viaTs as unknown as InvalidInputError).issues].sort(byPath), expected, 'its issues');

  const viaInsert = await pgError(() => pool.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key) values ('sub.diamond', $1, 'bad-2') returning id`,
    [JSON.stringify(bad)]));
  t.equal(viaInsert.code, 'BA002', 'INSERT INTO ballast.jobs refuses it the same way');
  t.same((JSON.parse(viaInsert.detail!) as typeof expected).sort(byPath), expected);

  t.same(await rowCounts(), before, 'no job, step, event or wake-up was written');
});

t.test('unknown pipelines and bad arguments', async (t) => {
  let err = await pgError(() => submitSql({ pipeline: 'no.such' }));
  t.equal(err.code, 'BA004');
  t.equal(err.message, `pipeline 'no.such' is not registered`);
  t.match(err.hint, /sub\.diamond@1/, 'the hint lists what is registered');
  err = await pgError(() => submitSql({ version: 9 }));
  t.equal(err.code, 'BA004');
  t.equal(err.message, `pipeline 'sub.diamond' has no version 9`);
  const viaTs = await pgError(() => db.submitJob({ pipeline: 'no.such' }));
  t.equal((viaTs as unknown as BallastError).code, 'unknown_pipeline', 'BallastError unknown_pipeline through BallastDb');

  const before = await rowCounts();
  const bad: [string, Parameters<typeof submitSql>[0], string][] = [
    ['priority', { priority: 5000 }, 'priority: 5000 is out of range'],
    ['tenant_id', { tenant: '' }, 'tenant_id: is empty; it must be 1 to 200 bytes of UTF-8'],
    ['idempotency_key', { key: '' }, 'idempotency_key: is empty; it must be 1 to 500 bytes of UTF-8'],
  ];
  for (const [field, args, message] of bad) {
    const e = await pgError(() => submitSql(args));
    t.equal(e.code, 'BA002', `${field}: BA002`);
    t.equal(e.message, message, `${field}: the message names the field`);
    t.equal((JSON.parse(e.detail!) as { path: string }[])[0]?.path, field, `${field}: the detail's path`);
  }
  const nullInput = await pgError(() => pool.query(`select * from ballast.submit_job('sub.diamond', null)`));
  t.same([nullInput.code, nullInput.message], ['BA002', 'input: is null']);
  t.same(await rowCounts(), before, 'nothing was written');
});

t.test('jobs are pinned to the version they were submitted for', async (t) => {
  const v2 = pipeline({ name: 'sub.diamond', version: 2, input: Input })
    .step('a', { output: Done }, done)
    .step('e', { after: ['a'], output: Done }, done);
  t.equal((await register(v2)).created, true);

  const latest = await submitSql({});
  t.equal(latest.pipeline_version, 2, 'without a version: the newest');
  t.same((await stepsOf(latest.job_id)).map((s) => s.name), ['a', 'e'], 'with version 2\'s steps');
  t.same((await wakeupsOf(latest.job_id)).map((w) => w.task_identifier), [v2.taskIdentifier], 'woken for version 2\'s task');

  const pinned = await submitSql({ version: 1 });
  t.equal(pinned.pipeline_version, 1, 'pipeline_version 1 keeps 1');
  t.same((await stepsOf(pinned.job_id)).map((s) => s.name), ['a', 'b', 'c', 'd'], 'with version 1\'s steps');
  t.same((await wakeupsOf(pinned.job_id)).map((w) => w.task_identifier), [v1.taskIdentifier, v1.taskIdentifier],
    'woken for version 1\'s task');

  const { rows: [inserted] } = await pool.query(
    `insert into ballast.jobs (pipeline, input, pipeline_version) values ('sub.diamond', $1, 1) returning pipeline_version`,
    [JSON.stringify(valid)]);
  t.equal(inserted.pipeline_version, 1, 'INSERT with pipeline_version 1 keeps 1');

  const { rows } = await pool.query(`select pipeline_version from ballast.jobs where idempotency_key = 'order-1' and tenant_id = 'default'`);
  t.same(rows, [{ pipeline_version: 1 }], 'a job submitted before version 2 stays on version 1');
});
