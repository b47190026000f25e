// The state machines (migrations/0004_state_machines.sql): every step and job status change, legal or not, the audit
// events they append, their NOTIFY (ids only, 0004_state_machines), the append-only rules, and the derivation of a job's status from its
// steps (ballast_private.refresh_job_status). Rows in arbitrary statuses are inserted directly: only UPDATEs of
// status are checked, so no trigger needs to be bypassed.
import t from 'tap';
import pg from 'pg';
import { freshDatabase, pgError, registerTestWorker } from './helpers.ts';

const { pool, db, url } = await freshDatabase(t);

const STEP_STATUSES = ['scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review', 'succeeded', 'failed',
  'cancelled', 'skipped'] as const;
const JOB_STATUSES = ['scheduled', 'queued', 'running', 'waiting', 'retrying', 'needs_review', 'completed', 'partially_completed',
  'failed', 'cancelled'] as const;
const JOB_FINAL = ['completed', 'partially_completed', 'failed', 'cancelled'];
const JOB_LIVE = JOB_STATUSES.filter((s) => !JOB_FINAL.includes(s));

// The state machines of docs/concepts.md ("State machines"), written out independently of the tables, so an edited
// or emptied table fails here.
const STEP_EDGES = [
  'scheduled>queued', 'scheduled>cancelled', 'scheduled>failed', 'queued>failed', 'retrying>failed',
  'pending>queued', 'pending>skipped', 'pending>cancelled',
  'queued>running', 'queued>cancelled', 'queued>retrying',
  'running>succeeded', 'running>retrying', 'running>failed', 'running>waiting', 'running>needs_review',
  'running>cancelled',
  'retrying>queued', 'retrying>cancelled',
  'waiting>queued', 'waiting>failed', 'waiting>cancelled',
  'needs_review>succeeded', 'needs_review>failed', 'needs_review>cancelled',
];
const STEP_FINAL = ['succeeded', 'failed', 'cancelled', 'skipped'];
// A live job may move to any other status except back to queued or scheduled; a scheduled job (a delayed start,
// 0039) only to queued, running (queued and claimed in one round trip), cancelled or failed (its expiry or deadline);
// and a retrying job none of whose steps started (its steps were parked at claim, spending no attempt, 0037) goes
// back to queued.
const JOB_EDGES = [
  ...JOB_LIVE.filter((f) => f !== 'scheduled')
    .flatMap((f) => JOB_STATUSES.filter((to) => to !== f && to !== 'queued' && to !== 'scheduled').map((to) => `${f}>${to}`)),
  'scheduled>queued', 'scheduled>running', 'scheduled>cancelled', 'scheduled>failed', 'retrying>queued',
];

// A pipeline only so that jobs have something to reference; its steps are never used (jobs here are inserted
// directly, with hand-made steps).
await db.registerPipeline('sm.test', 1, {
  steps: [
    { name: 'a', depends_on: [], max_attempts: 3, backoff_base_ms: 0, backoff_cap_ms: 0 },
    { name: 'b', depends_on: ['a'], max_attempts: 3, backoff_base_ms: 0, backoff_cap_ms: 0 },
  ],
}, {});

// A waiting step must name what it waits for (steps.wait_key).
const hasWaitKey = (await pool.query(
  `select 1 from pg_attribute where attrelid = 'ballast_private.steps'::regclass and attname = 'wait_key'`)).rowCount === 1;

type Querier = Pick<pg.Pool, 'query'> | pg.PoolClient;

async function insertJob(q: Querier, status = 'queued'): Promise<string> {
  const { rows } = await q.query<{ id: string }>(
    `insert into ballast_private.jobs (pipeline, pipeline_version, request_hash, input, status, finished_at)
     values ('sm.test', 1, repeat('0', 64), '{}', $1::text, case when $1::text = any($2::text[]) then ballast.now() end)
     returning id`,
    [status, JOB_FINAL],
  );
  return rows[0]!.id;
}

interface StepSpec {
  name: string;
  status: string;
  depends_on?: string[];
  attempts?: number;
  output?: unknown;
  error?: unknown;
}

async function insertStep(q: Querier, jobId: string, s: StepSpec): Promise<string> {
  // deps_remaining 1, a next_run_at and a wait_key satisfy the CHECKs of pending, retrying and waiting; each is
  // allowed in any status.
  const { rows } = await q.query<{ id: string }>(
    `insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, attempts, max_attempts,
                                        backoff_base_ms, backoff_cap_ms, output, error, next_run_at${hasWaitKey ? ', wait_key' : ''})
     values ($1, $2, $3, $4, 1, $5, 3, 0, 0, $6::jsonb, $7::jsonb, ballast.now()${hasWaitKey ? `, 'test-key'` : ''})
     returning id`,
    [jobId, s.name, s.status, s.depends_on ?? [], s.attempts ?? 0,
      s.output === undefined ? null : JSON.stringify(s.output), s.error === undefined ? null : JSON.stringify(s.error)],
  );
  return rows[0]!.id;
}

/**
 * Inserts a job's steps in ONE statement, as submission does: the job's counters (0004_state_machines) see them together, so its
 * status is derived once from all of them.
 */
async function insertSteps(q: Querier, jobId: string, specs: StepSpec[]): Promise<Record<string, string>> {
  const { rows } = await q.query<{ id: string; name: string }>(
    `insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, attempts, max_attempts,
                                        backoff_base_ms, backoff_cap_ms, output, error, next_run_at${hasWaitKey ? ', wait_key' : ''})
     select $1, s.name, s.status, coalesce(s.depends_on, '{}'), 1, coalesce(s.attempts, 0), 3, 0, 0, s.output, s.error,
            ballast.now()${hasWaitKey ? `, 'test-key'` : ''}
       from jsonb_to_recordset($2::jsonb) as s(name text, status text, depends_on text[], attempts int, output jsonb, error jsonb)
     returning id, name`,
    [jobId, JSON.stringify(specs)],
  );
  return Object.fromEntries(rows.map((r) => [r.name, r.id]));
}

/** Runs `fn` on one connection inside a transaction that is always rolled back. */
async function inRollback<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('begin');
    return await fn(c);
  } finally {
    await c.query('rollback').catch(() => {});
    c.release();
  }
}

/**
 * The edges of a transition table: ordinary ones, and those allowed only inside an audited replay (rows with
 * via_replay; read through to_jsonb).
 */
async function edgesOf(table: 'step_transitions' | 'job_transitions') {
  const { rows } = await pool.query<{ edge: string; via_replay: boolean; from_status: string; to_status: string }>(
    `select from_status || '>' || to_status as edge, from_status, to_status,
            coalesce((to_jsonb(t) ->> 'via_replay')::boolean, false) as via_replay
       from ballast_private.${table} t`);
  const ordinary = rows.filter((r) => !r.via_replay);
  // The hint of a refused change lists the ordinary targets, in the database's order.
  const { rows: hints } = await pool.query<{ from_status: string; targets: string }>(
    `select from_status, string_agg(to_status, ', ' order by to_status) as targets
       from ballast_private.${table} t where not coalesce((to_jsonb(t) ->> 'via_replay')::boolean, false) group by 1`);
  return {
    ordinary: ordinary.map((r) => r.edge),
    replay: rows.filter((r) => r.via_replay).map((r) => r.edge),
    allowedFrom: (from: string) => hints.find((h) => h.from_status === from)?.targets ?? 'nothing (it is final)',
  };
}

type Outcome = { ok: true; events: { type: string; status: string }[] } | { ok: false; code: string; message: string; hint: string };

async function tryChange(c: pg.PoolClient, sql: string, params: unknown[], eventsSql: string, id: string, replay = false): Promise<Outcome> {
  await c.query('savepoint change');
  try {
    if (replay) await c.query(`select set_config('ballast.replay', 'on', true)`);
    await c.query(sql, params);
  } catch (err) {
    await c.query('rollback to savepoint change');
    const e = err as pg.DatabaseError;
    return { ok: false, code: e.code ?? '', message: e.message, hint: e.hint ?? '' };
  } finally {
    if (replay) await c.query(`select set_config('ballast.replay', '', true)`);
  }
  const { rows } = await c.query<{ type: string; status: string }>(eventsSql, [id]);
  return { ok: true, events: rows };
}

t.test('the transition tables hold the documented state machines', async (t) => {
  const steps = await edgesOf('step_transitions');
  t.same(STEP_EDGES.filter((e) => !steps.ordinary.includes(e)), [], 'every step edge of the documented state machine is in step_transitions');
  t.same(steps.ordinary.filter((e) => STEP_FINAL.includes(e.split('>')[0]!)), [],
    'no ordinary edge leaves a final step status');
  const jobs = await edgesOf('job_transitions');
  t.same(JOB_EDGES.filter((e) => !jobs.ordinary.includes(e)), [], 'every live job status may move to any other but queued (scheduled: see above)');
  t.same(jobs.ordinary.filter((e) => JOB_FINAL.includes(e.split('>')[0]!)
      || (e.endsWith('>queued') && e !== 'scheduled>queued' && e !== 'retrying>queued') || e.endsWith('>scheduled')), [],
    'no ordinary edge leaves a final job status, returns to queued (but from scheduled, or retrying before any start) or goes to scheduled');
  t.same(jobs.ordinary.filter((e) => e.startsWith('scheduled>')).sort(), JOB_EDGES.filter((e) => e.startsWith('scheduled>')).sort(),
    'a scheduled job goes to queued, running, cancelled or failed only');
});

t.test('every step status change: legal pairs succeed with an event, all others fail with BA001', async (t) => {
  const { ordinary, replay, allowedFrom } = await edgesOf('step_transitions');
  let succeeded = 0;
  let replayed = 0;
  await inRollback(async (c) => {
    const jobId = await insertJob(c);
    for (const from of STEP_STATUSES) {
      for (const to of STEP_STATUSES) {
        if (from === to) continue;
        const stepId = await insertStep(c, jobId, { name: `s_${from}_${to}`, status: from });
        const change = (replay: boolean) => tryChange(c, 'update ballast_private.steps set status = $2 where id = $1',
          [stepId, to], 'select type, status from ballast_private.events where step_id = $1 order by id', stepId, replay);
        const outcome = await change(false);
        const pair = `${from} -> ${to}`;
        if (outcome.ok) succeeded++;
        if (ordinary.includes(`${from}>${to}`)) {
          t.same(outcome, { ok: true, events: [{ type: `step_${to}`, status: to }] }, `${pair} is allowed and recorded`);
          continue;
        }
        t.match(outcome, {
          ok: false,
          code: 'BA001',
          message: `step ${stepId} ("s_${from}_${to}" of job ${jobId}) cannot go from ${from} to ${to}`,
          hint: `From ${from} a step may go to: ${allowedFrom(from)}`,
        }, `${pair} is refused`);
        if (replay.includes(`${from}>${to}`)) {
          const again = await change(true);
          if (again.ok) replayed++;
          t.same(again, { ok: true, events: [{ type: `step_${to}`, status: to }] }, `${pair} is allowed in a replay`);
        }
      }
    }
  });
  t.equal(succeeded, ordinary.length, 'as many pairs succeeded as step_transitions has ordinary rows');
  t.equal(replayed, replay.length, 'and as many in a replay as it has replay rows');
});

t.test('setting a step or job to the status it already has is a no-op without an event', async (t) => {
  await inRollback(async (c) => {
    const jobId = await insertJob(c, 'completed');
    const stepId = await insertStep(c, jobId, { name: 'done', status: 'succeeded' });
    await c.query(`update ballast_private.steps set status = 'succeeded' where id = $1`, [stepId]);
    await c.query(`update ballast_private.jobs set status = 'completed' where id = $1`, [jobId]);
    const { rows } = await c.query('select type from ballast_private.events where job_id = $1', [jobId]);
    t.same(rows, [{ type: 'job_submitted' }], 'only the insert of the job wrote an event');
  });
});

t.test('every job status change: legal pairs succeed with an event, all others fail with BA001', async (t) => {
  const { ordinary, replay, allowedFrom } = await edgesOf('job_transitions');
  let succeeded = 0;
  let replayed = 0;
  await inRollback(async (c) => {
    for (const from of JOB_STATUSES) {
      for (const to of JOB_STATUSES) {
        if (from === to) continue;
        const jobId = await insertJob(c, from);
        const change = (replay: boolean) => tryChange(c,
          `update ballast_private.jobs
              set status = $2::text, finished_at = case when $2::text = any($3::text[]) then ballast.now() end
            where id = $1`, [jobId, to, JOB_FINAL],
          `select type, status from ballast_private.events where job_id = $1 and type <> 'job_submitted' order by id`,
          jobId, replay);
        const outcome = await change(false);
        const pair = `${from} -> ${to}`;
        if (outcome.ok) succeeded++;
        if (ordinary.includes(`${from}>${to}`)) {
          t.same(outcome, { ok: true, events: [{ type: `job_${to}`, status: to }] }, `${pair} is allowed and recorded`);
          continue;
        }
        t.match(outcome, {
          ok: false,
          code: 'BA001',
          message: `job ${jobId} cannot go from ${from} to ${to}`,
          hint: `From ${from} a job may go to: ${allowedFrom(from)}`,
        }, `${pair} is refused`);
        if (replay.includes(`${from}>${to}`)) {
          const again = await change(true);
          if (again.ok) replayed++;
          t.same(again, { ok: true, events: [{ type: `job_${to}`, status: to }] }, `${pair} is allowed in a replay`);
        }
      }
    }
  });
  t.equal(succeeded, ordinary.length, 'as many pairs succeeded as job_transitions has ordinary rows');
  t.equal(replayed, replay.length, 'and as many in a replay as it has replay rows');
});

t.test('a final job refuses every transition and says it is final', async (t) => {
  await inRollback(async (c) => {
    for (const from of JOB_FINAL) {
      for (const to of JOB_STATUSES.filter((s) => s !== from)) {
        const jobId = await insertJob(c, from);
        const outcome = await tryChange(c, 'update ballast_private.jobs set status = $2 where id = $1', [jobId, to],
          'select type, status from ballast_private.events where job_id = $1', jobId);
        t.match(outcome, { ok: false, code: 'BA001', hint: `From ${from} a job may go to: nothing (it is final)` }, `${from} -> ${to}`);
      }
    }
  });
});

t.test('a status change records actor and reason from the transaction settings', async (t) => {
  const c = await pool.connect();
  try {
    const jobId = await insertJob(c);
    const stepId = await insertStep(c, jobId, { name: 'a', status: 'queued' });
    await c.query('begin');
    await c.query(`select set_config('ballast.actor', 'alice', true), set_config('ballast.reason', 'manual fix', true)`);
    await c.query(`update ballast_private.steps set status = 'running', attempts = 1 where id = $1`, [stepId]);
    // The job follows its steps by itself (counters, 0004_state_machines): this is a no-op, and records nothing.
    await c.query(`update ballast_private.jobs set status = 'running' where id = $1`, [jobId]);
    await c.query('commit');
    // Outside that transaction the settings are gone: the default actor, no reason.
    await c.query(`update ballast_private.steps set status = 'succeeded' where id = $1`, [stepId]);

    const { rows } = await c.query(
      `select job_id, step_id, type, status, actor, reason, data from ballast.events where job_id = $1 order by id`, [jobId]);
    t.same(rows, [
      { job_id: jobId, step_id: null, type: 'job_submitted', status: 'queued', actor: 'system', reason: null,
        data: { pipeline: 'sm.test', version: 1, tenant_id: 'default', priority: 0 } },
      { job_id: jobId, step_id: stepId, type: 'step_running', status: 'running', actor: 'alice', reason: 'manual fix',
        data: { attempt: 1 } },
      { job_id: jobId, step_id: null, type: 'job_running', status: 'running', actor: 'alice', reason: 'manual fix', data: null },
      { job_id: jobId, step_id: stepId, type: 'step_succeeded', status: 'succeeded', actor: 'system', reason: null, data: null },
      { job_id: jobId, step_id: null, type: 'job_completed', status: 'completed', actor: 'system', reason: null, data: null },
    ]);
  } finally {
    c.release();
  }
});

t.test('events are append-only (BA009) and the public views refuse writes (BA009)', async (t) => {
  const jobId = await insertJob(pool);
  const stepId = await insertStep(pool, jobId, { name: 'a', status: 'queued' });
  await pool.query(`update ballast_private.steps set status = 'running' where id = $1`, [stepId]);
  const before = (await pool.query('select * from ballast_private.events where job_id = $1 order by id', [jobId])).rows;
  t.same(before.map((e) => e.type), ['job_submitted', 'step_running', 'job_running'], 'job_submitted, step_running and the derived job_running');
  const eventId = before[1].id as string;
  const { rows: [transitionCounts] } = await pool.query(
    `select (select count(*)::int from ballast_private.step_transitions) as steps,
            (select count(*)::int from ballast_private.job_transitions) as jobs`);

  const refused = async (sql: string, params: unknown[], what: RegExp) => {
    const err = await pgError(() => pool.query(sql, params));
    t.equal(err.code, 'BA009', sql);
    t.match(err.message, what, `${sql}: message`);
  };
  await refused(`update ballast_private.events set reason = 'rewritten' where id = $1`, [eventId], /append-only: update is not allowed/);
  await refused('delete from ballast_private.events where id = $1', [eventId], /append-only: delete is not allowed/);
  await refused('truncate ballast_private.events', [], /append-only: truncate is not allowed/);
  await refused('truncate ballast_private.jobs cascade', [], /append-only: truncate is not allowed/);

  await refused(`update ballast.events set reason = 'rewritten' where id = $1`, [eventId], /ballast\.events is read-only: update/);
  await refused('delete from ballast.events where id = $1', [eventId], /ballast\.events is read-only: delete/);
  await refused(`insert into ballast.events (job_id, type) values ($1, 'forged')`, [jobId], /ballast\.events is read-only: insert/);
  await refused(`update ballast.steps set status = 'succeeded' where id = $1`, [stepId], /ballast\.steps is read-only: update/);
  await refused('delete from ballast.steps where id = $1', [stepId], /ballast\.steps is read-only: delete/);
  await refused(`insert into ballast.steps (job_id, name, status) values ($1, 'forged', 'queued')`, [jobId], /ballast\.steps is read-only: insert/);
  await refused(`update ballast.jobs set status = 'completed' where id = $1`, [jobId], /ballast\.jobs is read-only: update/);
  await refused('delete from ballast.jobs where id = $1', [jobId], /ballast\.jobs is read-only: delete/);
  // The state machines and the error catalogue are data too: through the public views they must not change.
  await refused(`insert into ballast.step_transitions values ('succeeded', 'queued', 'forged')`, [], /ballast\.step_transitions is read-only: insert/);
  await refused(`delete from ballast.step_transitions where from_status = 'running'`, [], /ballast\.step_transitions is read-only: delete/);
  await refused(`update ballast.job_transitions set to_status = 'queued' where from_status = 'running'`, [], /ballast\.job_transitions is read-only: update/);
  await refused(`delete from ballast.error_codes where sqlstate = 'BA001'`, [], /ballast\.error_codes is read-only: delete/);

  const after = (await pool.query('select * from ballast_private.events where job_id = $1 order by id', [jobId])).rows;
  t.same(after, before, 'the events are unchanged');
  const { rows: [step] } = await pool.query('select status from ballast_private.steps where id = $1', [stepId]);
  t.equal(step.status, 'running', 'the step is unchanged');
  const { rows: [counts] } = await pool.query(
    `select (select count(*)::int from ballast_private.step_transitions) as steps,
            (select count(*)::int from ballast_private.job_transitions) as jobs`);
  t.same(counts, transitionCounts, 'the transition tables are unchanged');
});

/** A raw ballast_events payload (0004_state_machines: ids only). */
type Payload = Record<string, unknown>;

/** LISTENs on ballast_events; drain() returns what arrived since the last drain, in order. */
async function listenEvents(): Promise<{ drain(): Promise<Payload[]>; close(): Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('listen ballast_events');
  let received: Payload[] = [];
  let fences = 0;
  let onFence: ((n: number) => void) | undefined;
  client.on('notification', (msg) => {
    const payload = JSON.parse(msg.payload ?? 'null') as Payload & { fence?: number };
    if (payload.fence !== undefined) onFence?.(payload.fence);
    else received.push(payload);
  });
  return {
    // Notifications reach a listener in commit order: once a marker sent after the work arrives, everything the
    // work committed has arrived too. No waiting on a clock.
    async drain() {
      const fence = ++fences;
      const seen = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`fence ${fence} did not arrive within 10 s`)), 10_000);
        onFence = (n) => {
          if (n === fence) {
            clearTimeout(timer);
            resolve();
          }
        };
      });
      await pool.query(`select pg_notify('ballast_events', $1)`, [JSON.stringify({ fence })]);
      await seen;
      const out = received;
      received = [];
      return out;
    },
    close: () => client.end(),
  };
}

t.test('every statement that appends events NOTIFYs ballast_events with their ids, and nothing else', async (t) => {
  await db.registerPipeline('sm.notify', 1, {
    steps: [
      { name: 'first', depends_on: [], max_attempts: 2, backoff_base_ms: 0, backoff_cap_ms: 0 },
      { name: 'second', depends_on: ['first'], max_attempts: 2, backoff_base_ms: 0, backoff_cap_ms: 0 },
    ],
  }, {});
  const listener = await listenEvents();
  t.teardown(() => listener.close());
  const eventIds = async (jobId: string) =>
    (await pool.query<{ id: string }>('select id from ballast.events where job_id = $1 order by id', [jobId])).rows.map((r) => Number(r.id));
  // Each payload is {"ids": [...]}, ascending; the ids of all payloads, in order, are the events in order.
  const announced = (payloads: Payload[]) => {
    for (const p of payloads) {
      t.same(Object.keys(p), ['ids'], `payload ${JSON.stringify(p)} has only ids`);
      const ids = p.ids as number[];
      t.same(ids, [...ids].sort((a, b) => a - b), 'ids ascending');
    }
    return payloads.flatMap((p) => p.ids as number[]);
  };

  const { jobId } = await db.submitJob({ pipeline: 'sm.notify', input: {} });
  const [submitted] = await eventIds(jobId);
  t.same(await listener.drain(), [{ ids: [submitted] }], 'submitting announces job_submitted by id alone');

  const worker = await registerTestWorker(db);
  const [first] = await db.getSteps(jobId);
  const claim = await db.claimStep(first!.id, worker, 60_000);
  t.ok(claim, 'the root step was claimed');
  const [, stepRunning, jobRunning] = await eventIds(jobId);
  const payloads = await listener.drain();
  t.same(announced(payloads), [stepRunning, jobRunning], 'claiming announces the step\'s event and then the job\'s, by id');
  t.ok(payloads.length <= 2, 'at most one notification per statement that appended events');
  t.notMatch(JSON.stringify(payloads), /default|first|running|tenant/, 'no tenant, step name or status in a payload');

  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query(`select * from ballast.submit_job('sm.notify')`);
    await c.query('rollback');
  } finally {
    c.release();
  }
  t.same(await listener.drain(), [], 'a rolled-back submission announces nothing');
});

t.test('job status is derived from the step statuses', async (t) => {
  const derive = async (steps: StepSpec[]) => {
    const jobId = await insertJob(pool);
    const ids = await insertSteps(pool, jobId, steps);
    const { rows: [r] } = await pool.query<{ status: string }>('select ballast_private.refresh_job_status($1) as status', [jobId]);
    const job = (await pool.query(
      `select status, result, error, started_at is not null as started, finished_at is not null as finished
         from ballast_private.jobs where id = $1`, [jobId])).rows[0];
    const events = (await pool.query<{ type: string }>(
      `select type from ballast_private.events where job_id = $1 and type <> 'job_submitted' order by id`, [jobId])).rows.map((e) => e.type);
    return { returned: r!.status, job, events, ids, jobId };
  };

  let d = await derive([{ name: 'a', status: 'running', attempts: 1 }, { name: 'b', status: 'pending', depends_on: ['a'] }]);
  t.same([d.returned, d.job, d.events], ['running', { status: 'running', result: null, error: null, started: true, finished: false }, ['job_running']],
    'one running step -> running');

  d = await derive([
    { name: 'a', status: 'succeeded', attempts: 1, output: { n: 1 } },
    { name: 'b', status: 'succeeded', attempts: 1, output: { n: 2 }, depends_on: ['a'] },
    { name: 'c', status: 'succeeded', attempts: 2, output: { words: 3 }, depends_on: ['b'] },
  ]);
  t.same([d.returned, d.job, d.events], ['completed', { status: 'completed', result: { words: 3 }, error: null, started: true, finished: true }, ['job_completed']],
    'all succeeded -> completed, result = the final step\'s output');

  d = await derive([
    { name: 'a', status: 'succeeded', attempts: 1, output: 'x' },
    { name: 'left', status: 'succeeded', attempts: 1, output: { l: 1 }, depends_on: ['a'] },
    { name: 'right', status: 'succeeded', attempts: 1, output: [2], depends_on: ['a'] },
  ]);
  t.same(d.job.result, { left: { l: 1 }, right: [2] }, 'several final steps -> their outputs keyed by name');

  d = await derive([
    { name: 'a', status: 'succeeded', attempts: 1, output: 1 },
    { name: 'b', status: 'failed', attempts: 3, depends_on: ['a'], error: { class: 'timeout', message: 'too slow', retryable: true } },
    { name: 'c', status: 'skipped', depends_on: ['b'] },
  ]);
  t.same([d.returned, d.job, d.events], ['failed', {
    status: 'failed', result: null, started: true, finished: true,
    error: { step: 'b', step_id: Number(d.ids.b), class: 'timeout', message: 'too slow', retryable: true },
  }, ['job_failed']], 'one failed, the rest final -> failed, error names the step');

  d = await derive([{ name: 'a', status: 'failed', attempts: 1 }, { name: 'b', status: 'running', attempts: 1 }]);
  t.equal(d.returned, 'running', 'a failed step while another still runs -> running');

  d = await derive([{ name: 'a', status: 'retrying', attempts: 1 }, { name: 'b', status: 'pending', depends_on: ['a'] }]);
  t.same([d.returned, d.job.status, d.events], ['retrying', 'retrying', ['job_retrying']], 'retrying only -> retrying');

  d = await derive([{ name: 'a', status: 'queued' }, { name: 'b', status: 'pending', depends_on: ['a'] }]);
  t.same([d.returned, d.job, d.events], ['queued', { status: 'queued', result: null, error: null, started: false, finished: false }, []],
    'queued, none started -> queued, nothing written');

  d = await derive([{ name: 'a', status: 'queued', attempts: 1 }, { name: 'b', status: 'pending', depends_on: ['a'] }]);
  t.equal(d.returned, 'running', 'queued again after an attempt -> running');

  d = await derive([{ name: 'a', status: 'needs_review', attempts: 1 }, { name: 'b', status: 'waiting', attempts: 1 }, { name: 'c', status: 'retrying', attempts: 1 }]);
  t.equal(d.returned, 'needs_review', 'needs_review before waiting before retrying');
  d = await derive([{ name: 'a', status: 'waiting', attempts: 1 }, { name: 'c', status: 'retrying', attempts: 1 }]);
  t.equal(d.returned, 'waiting', 'waiting before retrying');
  d = await derive([{ name: 'a', status: 'running', attempts: 1 }, { name: 'b', status: 'needs_review', attempts: 1 }]);
  t.equal(d.returned, 'running', 'running before needs_review');

  d = await derive([{ name: 'a', status: 'failed', attempts: 1 }, { name: 'b', status: 'cancelled' }]);
  t.same([d.returned, d.job.finished], ['cancelled', true], 'all final with one cancelled -> cancelled (before failed)');

  const again = await pool.query<{ status: string }>('select ballast_private.refresh_job_status($1) as status', [d.jobId]);
  t.equal(again.rows[0]!.status, 'cancelled', 'refreshing again returns the same status');
  const { rows } = await pool.query(`select count(*)::int as n from ballast_private.events where job_id = $1`, [d.jobId]);
  t.equal(rows[0].n, 2, 'and writes no second event');

  const missing = await pgError(() => pool.query('select ballast_private.refresh_job_status(-1)'));
  t.equal(missing.code, 'BA007', 'an unknown job is BA007');
});
