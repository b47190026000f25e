// Durability (issue 3; migrations/0006_execution.sql and 0008_operator_verbs.sql, src/worker/runner.ts): timeouts,
// cancellation, waiting for events, the side-effect ledger and audited replay, against a real Postgres.
//
// Two kinds of tests. SQL-level ones drive the functions by hand through one connection whose session sets the
// clock (`ballast.now`), with a hand-registered worker kept alive by heartbeats at each clock move; they run first,
// while no real worker (whose reaper reads the real clock) is running. Worker-level ones use in-process workers
// (test/helpers.ts testWorker, stopped at the end of each subtest) and, for cancellation across processes, a child
// worker (test/fixtures/hold-worker.ts). Timings are measured from the database's own timestamps or from the
// processes' clocks and asserted with bounds; every wait is bounded and polls for its condition.
import t from 'tap';
import pg from 'pg';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { BallastError, PermanentError, RetryableError } from '../src/errors.ts';
import type { AttemptAborted } from '../src/worker/runner.ts';
import { eventually, freshDatabase, pgError, spawnNode, testWorker, waitForJob } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);
const sql = new pg.Client({ connectionString: url });
await sql.connect();
t.teardown(() => sql.end());

const empty = z.object({});
const CLOCK_WORKER = 'clock-worker';
const DAY = 86_400_000;
const T0 = Date.parse('2035-01-01T00:00:00.000Z'); // far ahead of the real clock: real reapers never touch these rows
const iso = (ms: number) => new Date(ms).toISOString();
const ms = (d: Date | null | undefined): number => {
  if (!(d instanceof Date)) throw new Error(`expected a timestamp, got ${String(d)}`);
  return d.getTime();
};

async function rows<R extends Record<string, any> = Record<string, any>>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await sql.query(text, params)).rows as R[];
}

let registered = false;
/** Moves the SQL clock to `when` and heartbeats the hand-registered worker there, so only what a test means applies. */
async function at(when: number): Promise<void> {
  await sql.query(`select set_config('ballast.now', $1, false)`, [iso(when)]);
  if (!registered) {
    await sql.query(`select ballast.register_worker($1, 'test', $2, 1, '{}')`, [CLOCK_WORKER, process.pid]);
    registered = true;
  }
  const [hb] = await rows(`select * from ballast.heartbeat_worker($1, '{}', 60000)`, [CLOCK_WORKER]);
  if (hb?.alive !== true) throw new Error('the clock worker was declared dead');
}

async function register(p: { name: string; version: number; definition(): unknown; inputJsonSchema(): unknown }) {
  await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
}

async function submit(name: string, input: unknown = {}): Promise<string> {
  const [r] = await rows(`select job_id from ballast.submit_job($1, $2::jsonb)`, [name, JSON.stringify(input)]);
  return String(r!.job_id);
}

async function stepIds(jobId: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const r of await rows(`select id, name from ballast.steps where job_id = $1`, [jobId])) out[r.name] = String(r.id);
  return out;
}

type ClaimRow = { attempt_id: string; attempt_number: number; step_id: string; idempotency_key: string };
async function claim(stepId: string, leaseMs = 60_000): Promise<ClaimRow | undefined> {
  return (await rows<ClaimRow>(`select * from ballast.claim_step($1::bigint, $2, $3)`, [stepId, CLOCK_WORKER, leaseMs]))[0];
}

async function reap() {
  return (await rows(`select * from ballast.reap()`))[0]!;
}

async function stepRow(stepId: string) {
  return (await rows(`select * from ballast.steps where id = $1`, [stepId]))[0]!;
}

async function jobRow(jobId: string) {
  return (await rows(`select * from ballast.jobs where id = $1`, [jobId]))[0]!;
}

async function attemptRow(attemptId: string) {
  return (await rows(`select * from ballast.attempts where id = $1`, [attemptId]))[0]!;
}

async function statuses(jobId: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const r of await rows(`select name, status from ballast.steps where job_id = $1`, [jobId])) out[r.name] = r.status;
  return out;
}

/** Everything a no-op must leave alone. */
async function state(jobId: string) {
  return {
    job: await jobRow(jobId),
    steps: await rows(`select * from ballast.steps where job_id = $1 order by id`, [jobId]),
    attempts: await rows(`select * from ballast.attempts where job_id = $1 order by id`, [jobId]),
    events: await rows(`select id, type, actor, reason from ballast.events where job_id = $1 order by id`, [jobId]),
    wakeups: await rows(`select id, key, run_at, locked_at from graphile_worker._private_jobs order by id`),
    effects: await rows(`select * from ballast.effects where job_id = $1 order by step_id, key`, [jobId]),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// SQL level, on the controlled clock (no real worker runs during these).

t.test('reap() times out a running attempt past its step timeout + 5 s, even with a live worker and lease', async (t) => {
  const p = pipeline({ name: 'd.sql_timeout', version: 1, input: empty })
    .step('work', { output: empty, timeoutMs: 1000, retry: { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 1000 } }, () => ({}));
  await register(p);
  const now = T0;
  await at(now);
  const jobId = await submit('d.sql_timeout');
  const { work } = await stepIds(jobId);
  const a = await claim(work!);
  t.ok(a, 'claimed by hand');

  await at(now + 6000); // started_at + timeout + 5 s: not past it yet
  t.same(await reap(), { dead_workers: [], reclaimed_attempts: [], expired_waits: [] }, 'at exactly timeout + 5 s nothing is reaped');
  t.equal((await attemptRow(a!.attempt_id)).outcome, 'running');

  await at(now + 6001);
  const att = await attemptRow(a!.attempt_id);
  t.ok(ms(att.lease_expires_at) > now + 6001, 'the lease is still valid (the heartbeat renewed it)');
  const r = await reap();
  t.same(r, { dead_workers: [], reclaimed_attempts: [a!.attempt_id], expired_waits: [] }, 'one ms later the attempt is reaped; no worker declared dead');
  t.match(await attemptRow(a!.attempt_id), {
    outcome: 'timed_out', error_class: 'timeout', error_retryable: true,
    error_message: /ran past its timeout of 1000 ms/,
  });
  t.equal(ms((await attemptRow(a!.attempt_id)).finished_at), now + 6001);
  const s = await stepRow(work!);
  t.match(s, { status: 'retrying', attempts: 1, error: { class: 'timeout', retryable: true, attempt: 1 } });
  t.ok(ms(s.next_run_at) >= now + 6001 && ms(s.next_run_at) < now + 7001, 'retried within the step\'s backoff window [0, 1000) ms');
  t.equal((await jobRow(jobId)).status, 'retrying');
  const [w] = await rows(`select stopped_at from ballast.workers where id = $1`, [CLOCK_WORKER]);
  t.equal(w!.stopped_at, null, 'the worker itself is alive: only the timeout applied');
});

t.test('cancel_job: every unfinished step cancelled at once, audited, NOTIFY for running attempts; idempotent; BA010/BA007', async (t) => {
  const p = pipeline({ name: 'd.cancel', version: 1, input: empty })
    .step('a', { output: empty, retry: { maxAttempts: 3, baseDelayMs: 60_000, maxDelayMs: 60_000 } }, () => ({}))
    .step('b', { output: empty, after: ['a'] }, () => ({}))
    .step('c', { output: empty }, () => ({}))
    .step('w', { output: empty }, () => ({}))
    .step('r', { output: empty }, () => ({}));
  await register(p);
  const now = T0 + DAY;
  await at(now);
  const jobId = await submit('d.cancel');
  const ids = await stepIds(jobId);

  const a = await claim(ids.a!);
  await rows(`select * from ballast.fail_step($1::bigint, '{"class": "http", "message": "503", "retryable": true}')`, [a!.attempt_id]);
  const w = await claim(ids.w!);
  const [parked] = await rows(`select * from ballast.wait_for_event($1::bigint, 'cancel:never', null)`, [w!.attempt_id]);
  t.same(parked, { received: false, payload: null }, 'w parks');
  const r = await claim(ids.r!);
  t.same(await statuses(jobId), { a: 'retrying', b: 'pending', c: 'queued', w: 'waiting', r: 'running' }, 'one step in each live status');

  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  t.teardown(() => listener.end());
  const notices: unknown[] = [];
  listener.on('notification', (m) => {
    if (m.channel === 'ballast_cancel') notices.push(JSON.parse(m.payload ?? 'null'));
  });
  await listener.query('listen ballast_cancel');

  await at(now + 1000);
  const eventsBefore = (await rows(`select max(id) as id from ballast.events where job_id = $1`, [jobId]))[0]!.id;
  const [c1] = await rows(`select * from ballast.cancel_job($1::bigint, 'customer asked', 'ops@example')`, [jobId]);
  t.same(c1, {
    job_id: jobId, status: 'cancelled', already_cancelled: false,
    cancelled_step_ids: [ids.a, ids.b, ids.c, ids.w, ids.r].map(Number).sort((x, y) => x - y).map(String),
  });
  t.same(await statuses(jobId), { a: 'cancelled', b: 'cancelled', c: 'cancelled', w: 'cancelled', r: 'cancelled' });
  for (const s of await rows(`select * from ballast.steps where job_id = $1`, [jobId])) {
    t.equal(ms(s.finished_at), now + 1000, `${s.name} finished at the cancellation`);
    t.match(s, { next_run_at: null, wait_key: null, wait_deadline: null }, `${s.name}: no retry or wait left`);
  }
  const job = await jobRow(jobId);
  t.match(job, { status: 'cancelled', result: null });
  t.equal(ms(job.finished_at), now + 1000);
  t.match(await attemptRow(r!.attempt_id), {
    outcome: 'cancelled', error_class: 'cancelled', error_message: 'job cancelled: customer asked', error_retryable: false,
  });
  t.equal(ms((await attemptRow(r!.attempt_id)).finished_at), now + 1000);
  t.match(await attemptRow(a!.attempt_id), { outcome: 'failed', error_class: 'http' }, 'earlier attempts keep their outcome');
  t.match(await attemptRow(w!.attempt_id), { outcome: 'parked' });

  const events = await rows(`select type, step_id, actor, reason from ballast.events where job_id = $1 and id > $2 order by id`, [jobId, eventsBefore]);
  t.same(events.filter((e) => e.type === 'step_cancelled').map((e) => String(e.step_id)).sort(),
    [ids.a, ids.b, ids.c, ids.w, ids.r].sort(), 'one step_cancelled event per step');
  t.equal(events.filter((e) => e.type === 'job_cancelled').length, 1, 'one job_cancelled event');
  t.equal(events.length, 6, 'and nothing else');
  t.ok(events.every((e) => e.actor === 'ops@example' && e.reason === 'customer asked'), 'every event carries actor and reason');

  await listener.query('select 1');
  await eventually(() => notices.length > 0, 2000);
  t.same(notices, [{ job_id: Number(jobId), attempts: [{ attempt_id: Number(r!.attempt_id), worker_id: CLOCK_WORKER }] }],
    'one ballast_cancel notification names the running attempt and its worker');

  await at(now + 120_000); // past a's retry time
  t.equal(await claim(ids.a!), undefined, 'the retry wake-up of a cancelled step runs nothing');
  t.equal(await claim(ids.c!), undefined, 'nor does the queued one');
  t.equal((await pgError(() => rows(`select * from ballast.complete_step($1::bigint, '{}')`, [r!.attempt_id]))).code, 'BA008',
    'the cancelled attempt cannot complete its step');
  t.equal((await pgError(() => rows(`select ballast.record_effect($1::bigint, 'k', '1')`, [r!.attempt_id]))).code, 'BA008',
    'nor record an effect');

  const snap = await state(jobId);
  const [c2] = await rows(`select * from ballast.cancel_job($1::bigint, 'again', 'someone-else')`, [jobId]);
  t.same(c2, { job_id: jobId, status: 'cancelled', cancelled_step_ids: [], already_cancelled: true }, 'cancelling twice is a no-op');
  t.same(await state(jobId), snap, 'and writes nothing');

  // Finished jobs: completed and failed.
  const single = pipeline({ name: 'd.cancel_single', version: 1, input: empty })
    .step('only', { output: empty }, () => ({}));
  await register(single);
  const done = await submit('d.cancel_single');
  const d = await claim((await stepIds(done)).only!);
  await rows(`select * from ballast.complete_step($1::bigint, '{}')`, [d!.attempt_id]);
  const failed = await submit('d.cancel_single');
  const f = await claim((await stepIds(failed)).only!);
  await rows(`select * from ballast.fail_step($1::bigint, '{"class": "x", "message": "y", "retryable": false}')`, [f!.attempt_id]);
  for (const [jid, status] of [[done, 'completed'], [failed, 'failed']] as const) {
    const before = await state(jid);
    const err = await pgError(() => rows(`select * from ballast.cancel_job($1::bigint, 'too late')`, [jid]));
    t.equal(err.code, 'BA010', `cancelling a ${status} job raises BA010`);
    t.match(err.message, new RegExp(`already ${status}`));
    t.same(await state(jid), before, `the ${status} job is untouched`);
  }
  const tsErr = await db.cancelJob(done, 'too late').then(() => undefined, (e: unknown) => e);
  t.ok(tsErr instanceof BallastError && tsErr.code === 'job_finished' && tsErr.sqlstate === 'BA010',
    `the TypeScript API maps BA010 to a BallastError 'job_finished' (${String(tsErr)})`);
  t.equal((await pgError(() => rows(`select * from ballast.cancel_job(999999999, 'who?')`))).code, 'BA007', 'an unknown job: BA007');
});

t.test('wait deadlines: reap() fails the step (dependants skipped) or runs it again, charged, per on_timeout', async (t) => {
  const p = pipeline({ name: 'd.deadline', version: 1, input: empty })
    .step('w', { output: empty, retry: { maxAttempts: 2, baseDelayMs: 0, maxDelayMs: 0 } }, () => ({}))
    .step('next', { output: empty, after: ['w'] }, () => ({}));
  await register(p);

  // on_timeout 'fail'
  let now = T0 + 2 * DAY;
  await at(now);
  const j1 = await submit('d.deadline');
  const s1 = await stepIds(j1);
  const a1 = await claim(s1.w!);
  const [r1] = await rows(`select * from ballast.wait_for_event($1::bigint, 'deadline:fail', 1000, 'fail')`, [a1!.attempt_id]);
  t.same(r1, { received: false, payload: null });
  t.match(await stepRow(s1.w!), { status: 'waiting', wait_key: 'deadline:fail', wait_on_timeout: 'fail', attempt_offset: 1 });
  t.equal(ms((await stepRow(s1.w!)).wait_deadline), now + 1000);
  t.equal((await jobRow(j1)).status, 'waiting');

  await at(now + 1000);
  t.same(await reap(), { dead_workers: [], reclaimed_attempts: [], expired_waits: [] }, 'at the deadline itself nothing expires');
  await at(now + 1001);
  t.same(await reap(), { dead_workers: [], reclaimed_attempts: [], expired_waits: [s1.w] }, 'past it the wait expires');
  t.match(await stepRow(s1.w!), { status: 'failed', wait_key: null, error: { class: 'deadline_exceeded', retryable: false, message: /deadline:fail/ } });
  t.equal(ms((await stepRow(s1.w!)).finished_at), now + 1001);
  t.equal((await stepRow(s1.next!)).status, 'skipped', 'its dependant is skipped');
  t.match(await jobRow(j1), { status: 'failed', error: { step: 'w', class: 'deadline_exceeded' } });
  const [late] = await rows(`select * from ballast.send_event('deadline:fail', '{"late": true}')`);
  t.same(late, { accepted: true, resumed_step_ids: [] }, 'an event after the deadline resumes nothing');
  t.equal((await stepRow(s1.w!)).status, 'failed');

  // on_timeout 'retry': the step runs again, and the attempt that waited in vain counts, so a step whose event never
  // comes ends in the dead-letter set after max_attempts instead of waiting forever.
  now = T0 + 3 * DAY;
  await at(now);
  const j2 = await submit('d.deadline');
  const s2 = await stepIds(j2);
  const b1 = await claim(s2.w!);
  t.equal(b1?.attempt_number, 1);
  await rows(`select * from ballast.wait_for_event($1::bigint, 'deadline:retry', 1000, 'retry')`, [b1!.attempt_id]);
  t.match(await stepRow(s2.w!), { status: 'waiting', wait_on_timeout: 'retry' });
  await at(now + 1001);
  t.same((await reap()).expired_waits, [s2.w]);
  t.match(await stepRow(s2.w!), { status: 'queued', wait_key: null, wait_deadline: null, error: { class: 'deadline_exceeded', retryable: true } });
  t.equal((await jobRow(j2)).status, 'running', 'the job runs on');
  t.equal((await rows(`select 1 from ballast_private.steps where id = $1 and status = 'queued' and task is not null`, [s2.w])).length, 1,
    'it is back in the queue (the step row is the queue: claimable by its task)');
  const b2 = await claim(s2.w!);
  t.ok(b2, 'it is claimed again');
  t.equal(b2?.attempt_number, 2, 'the retry is charged: attempt 2 of 2');
  await rows(`select * from ballast.wait_for_event($1::bigint, 'deadline:retry', 1000, 'retry')`, [b2!.attempt_id]);
  await at(now + 2500);
  t.same((await reap()).expired_waits, [s2.w]);
  t.match(await stepRow(s2.w!), { status: 'failed', error: { class: 'deadline_exceeded' } }, 'attempts used up: failed');
  t.equal((await stepRow(s2.next!)).status, 'skipped');
  t.equal((await jobRow(j2)).status, 'failed');
  t.same((await rows(`select outcome from ballast.attempts where step_id = $1 order by number`, [s2.w])).map((x) => x.outcome),
    ['parked', 'parked']);
});

t.test('replay refuses a step that is not finished (BA011), a skipped one (BA002), and unknown ones (BA007)', async (t) => {
  const p = pipeline({ name: 'd.replay_busy', version: 1, input: empty })
    .step('x', { output: empty }, () => ({}))
    .step('y', { output: empty, after: ['x'] }, () => ({}));
  await register(p);
  const now = T0 + 4 * DAY;
  await at(now);
  const jobId = await submit('d.replay_busy');
  const ids = await stepIds(jobId);
  const x = await claim(ids.x!);
  let snap = await state(jobId);
  let err = await pgError(() => rows(`select * from ballast.replay_step($1::bigint, 'now', p_force => true)`, [ids.x]));
  t.equal(err.code, 'BA011', 'a running step cannot be replayed, even with force');
  t.match(err.message, /is running/);
  t.equal((await pgError(() => rows(`select * from ballast.replay_job($1::bigint, 'x', 'now')`, [jobId]))).code, 'BA011',
    'nor through replay_job');
  t.equal((await pgError(() => rows(`select * from ballast.replay_step($1::bigint)`, [ids.y]))).code, 'BA011', 'nor a pending step');
  t.same(await state(jobId), snap, 'the refusals wrote nothing');

  await rows(`select * from ballast.complete_step($1::bigint, '{}')`, [x!.attempt_id]);
  const y = await claim(ids.y!);
  t.ok(y, 'y runs');
  snap = await state(jobId);
  err = await pgError(() => rows(`select * from ballast.replay_step($1::bigint, 'again', p_force => true)`, [ids.x]));
  t.equal(err.code, 'BA011', 'x has finished, but y (depending on it) is running: replaying x would run y twice');
  t.match(err.message, /depends on/);
  t.same(await state(jobId), snap, 'nothing changed');
  await rows(`select * from ballast.fail_step($1::bigint, '{"class": "x", "message": "no", "retryable": false}')`, [y!.attempt_id]);

  t.equal((await pgError(() => rows(`select * from ballast.replay_step(999999999)`))).code, 'BA007', 'an unknown step: BA007');
  t.equal((await pgError(() => rows(`select * from ballast.replay_job(999999999)`))).code, 'BA007', 'an unknown job: BA007');
  t.equal((await pgError(() => rows(`select * from ballast.replay_job($1::bigint, 'nope')`, [jobId]))).code, 'BA007',
    'an unknown step name: BA007');

  // A failed step with a skipped dependant: the skipped one is not replayed on its own.
  const j2 = await submit('d.replay_busy');
  const i2 = await stepIds(j2);
  const x2 = await claim(i2.x!);
  await rows(`select * from ballast.fail_step($1::bigint, '{"class": "x", "message": "no", "retryable": false}')`, [x2!.attempt_id]);
  t.equal((await stepRow(i2.y!)).status, 'skipped');
  snap = await state(j2);
  t.equal((await pgError(() => rows(`select * from ballast.replay_step($1::bigint, 'try')`, [i2.y]))).code, 'BA002',
    'a skipped step: BA002 (replay the failed one)');
  t.same(await state(j2), snap);
});

// ---------------------------------------------------------------------------------------------------------------
// Real workers.

t.test('timeouts: the signal fires, the attempt is timed_out, retried with backoff, and the job completes', async (t) => {
  const seen: unknown[] = [];
  const p = pipeline({ name: 'd.timeout', version: 1, input: empty })
    .step('slow', { output: z.object({ attempt: z.number() }), timeoutMs: 200, retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 20 } },
      async (ctx) => {
        if (ctx.attempt === 1) {
          await new Promise((_, reject) => {
            ctx.signal.addEventListener('abort', () => {
              seen.push((ctx.signal.reason as AttemptAborted).reason);
              reject(ctx.signal.reason);
            }, { once: true });
          });
        }
        return { attempt: ctx.attempt };
      });
  await testWorker(t, url, { pipelines: [p], concurrency: 2, pollIntervalMs: 50, abandonMs: 1000 });
  const { jobId } = await db.submitJob({ pipeline: 'd.timeout' });
  const job = await waitForJob(db, jobId, undefined, 10_000);
  t.equal(job.status, 'completed');
  t.same(job.result, { attempt: 2 }, 'attempt 2 succeeded');
  t.same(seen, ['timeout'], 'the handler saw its signal fire, for the timeout');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome, a.error_class, a.error_retryable]), [
    [1, 'timed_out', 'timeout', true],
    [2, 'succeeded', null, null],
  ]);
  t.match(attempts[0]!.error_message, /timeout of 200 ms/);
  const d1 = ms(attempts[0]!.finished_at) - ms(attempts[0]!.started_at);
  t.ok(d1 >= 199 && d1 < 1000, `attempt 1 ended at its timeout, not after the 1000 ms abandon delay (${d1} ms)`);
  const { rows: ev } = await pool.query(`select data from ballast.events where job_id = $1 and type = 'step_retrying'`, [jobId]);
  t.equal(ev.length, 1, 'one retry scheduled');
  const delay = Date.parse(ev[0]!.data.next_run_at) - ms(attempts[0]!.finished_at);
  t.ok(delay >= 0 && delay <= 20, `with the step's small backoff (${delay} ms)`);
  t.ok(ms(attempts[1]!.started_at) >= Date.parse(ev[0]!.data.next_run_at), 'attempt 2 did not start early');
  t.match((await db.getSteps(jobId))[0], { status: 'succeeded', attempts: 2, error: null });
});

t.test('timeouts: a handler that ignores its signal does not hold the slot (concurrency 1)', async (t) => {
  let ignoredStarts = 0;
  const stubborn = pipeline({ name: 'd.stubborn', version: 1, input: empty })
    .step('ignore', { output: empty, timeoutMs: 200, retry: { maxAttempts: 1 } }, async () => {
      ignoredStarts++;
      await new Promise((r) => setTimeout(r, 5000)); // never looks at ctx.signal
      return {};
    });
  // When the quick handler really started (an attempt's started_at is its claim: it may wait in the worker's local
  // queue for a slot).
  let quickStartedMs = 0;
  const quick = pipeline({ name: 'd.quick', version: 1, input: empty })
    .step('quick', { output: empty }, () => {
      quickStartedMs = Date.now();
      return {};
    });
  const abandonMs = 300;
  await testWorker(t, url, { pipelines: [stubborn, quick], concurrency: 1, pollIntervalMs: 50, abandonMs });
  const a = await db.submitJob({ pipeline: 'd.stubborn' });
  t.ok(await eventually(async () => (await db.getSteps(a.jobId))[0]?.status === 'running', 5000), 'the stubborn step is running');
  const b = await db.submitJob({ pipeline: 'd.quick' });
  t.equal((await waitForJob(db, b.jobId, undefined, 4000)).status, 'completed', 'the second job completes well before the 5 s handler would');
  const jobA = await waitForJob(db, a.jobId, undefined, 2000);
  t.match(jobA, { status: 'failed', error: { class: 'timeout', retryable: true } }, 'timed out, and no attempts left');
  const [att] = await db.getAttempts(a.jobId);
  t.match(att, { outcome: 'timed_out', error_class: 'timeout' });
  const aStart = ms(att!.started_at);
  const aEnd = ms(att!.finished_at);
  const bStart = quickStartedMs;
  t.ok(aEnd - aStart >= 200 + abandonMs - 5 && aEnd - aStart < 2500,
    `the attempt was recorded after timeout + abandonMs, not after the handler's 5 s (${aEnd - aStart} ms)`);
  t.ok(bStart >= aStart + 200 + abandonMs - 20, 'the second step waited for the slot (concurrency 1 held) until the first was abandoned');
  t.ok(bStart - aStart < 2500, `and got it soon after the timeout (${bStart - aStart} ms after the first started)`);
  t.equal(ignoredStarts, 1);
});

t.test('cancel_job aborts a step running in another process within 2 s; nothing stays locked', async (t) => {
  const fixture = fileURLToPath(new URL('./fixtures/hold-worker.ts', import.meta.url));
  // A slow heartbeat: the abort must come from the NOTIFY path, not from the heartbeat's lost-attempt report.
  const child = spawnNode(t, [fixture], { env: { ...process.env, DATABASE_URL: url, HEARTBEAT_MS: '5000' } });
  const workerId = await child.waitForLine((l) => (l.startsWith('ready ') ? l.slice(6) : undefined), 30_000);
  const parse = (l: string) => {
    try {
      const v = JSON.parse(l) as { fixture?: string; event?: string; job_id?: string; at?: number; reason?: string };
      return v.fixture === 'hold' ? v : undefined;
    } catch {
      return undefined;
    }
  };
  const { jobId } = await db.submitJob({ pipeline: 'fixture.hold' });
  await child.waitForLine((l) => { const v = parse(l); return v?.event === 'started' && v.job_id === jobId ? v : undefined; }, 15_000);
  const [running] = await db.getAttempts(jobId);
  t.match(running, { outcome: 'running', worker_id: workerId }, 'the child runs the step');

  const before = Date.now();
  const r = await db.cancelJob(jobId, 'user gave up', 'ops@example');
  t.same(r, { status: 'cancelled', cancelledStepIds: [running!.step_id], alreadyCancelled: false });
  const seen = await child.waitForLine((l) => { const v = parse(l); return v?.event === 'aborted' && v.job_id === jobId ? v : undefined; }, 5000);
  const lag = seen.at! - before;
  t.ok(lag >= 0 && lag < 2000, `the child's AbortSignal fired ${lag} ms after cancel_job was called`);
  t.equal(seen.reason, 'cancelled', 'the signal says why');

  t.match((await db.getAttempts(jobId))[0], { outcome: 'cancelled', error_class: 'cancelled', error_message: 'job cancelled: user gave up' });
  t.equal((await db.getSteps(jobId))[0]!.status, 'cancelled');
  t.equal((await db.getJob(jobId))!.status, 'cancelled');
  const graphileIdle = async () => (await pool.query(
    `select count(*)::int as n from graphile_worker._private_jobs where locked_at is not null or task_id in
       (select id from graphile_worker._private_tasks where identifier = 'ballast_step:fixture.hold@1')`)).rows[0].n === 0;
  t.ok(await eventually(graphileIdle, 5000), 'the wake-up finished: nothing locked or left in graphile_worker');

  t.same(await child.stop('SIGTERM', 15_000), { code: 0, signal: null }, 'the child stops cleanly');
  t.ok(await graphileIdle(), 'still nothing locked after it stopped');
  const { rows: w } = await pool.query(`select stopped_at from ballast.workers where id = $1`, [workerId]);
  t.ok(w[0]?.stopped_at, 'the child marked itself stopped');
});

t.test('waitForEvent: the step parks, send_event resumes it with the payload once; an early event is delivered at once', async (t) => {
  const runs = new Map<string, unknown[]>();
  const p = pipeline({ name: 'd.wait', version: 1, input: z.object({ order: z.number() }) })
    .step('await_order', { output: z.object({ got: z.object({ ok: z.boolean() }) }) }, async (ctx) => {
      const log = runs.get(ctx.jobId) ?? [];
      runs.set(ctx.jobId, log);
      log.push(`start ${ctx.attempt}`);
      const got = await ctx.waitForEvent(`order:${ctx.input.order}`, { timeoutMs: 60_000 });
      log.push(got);
      return { got: got as { ok: boolean } };
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 2, pollIntervalMs: 50 });

  const { jobId } = await db.submitJob({ pipeline: 'd.wait', input: { order: 42 } });
  t.equal((await waitForJob(db, jobId, ['waiting'], 10_000)).status, 'waiting', 'the job is waiting');
  const { rows: [s] } = await pool.query(`select * from ballast.steps where job_id = $1`, [jobId]);
  t.match(s, { status: 'waiting', wait_key: 'order:42', wait_on_timeout: 'fail', attempts: 1, attempt_offset: 1 });
  const [parked] = await db.getAttempts(jobId);
  t.match(parked, { number: 1, outcome: 'parked', error_class: null });
  t.equal(ms(s.wait_deadline) - ms(parked!.finished_at), 60_000, 'the deadline is 60 s after the step parked');
  t.same(runs.get(jobId), ['start 1'], 'the handler stopped at the wait');

  const { rows: [sent] } = await pool.query(`select * from ballast.send_event('order:42', '{"ok":true}')`);
  t.same(sent, { accepted: true, resumed_step_ids: [s.id] }, 'send_event resumes the waiting step');
  const job = await waitForJob(db, jobId, undefined, 10_000);
  t.equal(job.status, 'completed');
  t.same(job.result, { got: { ok: true } }, 'the job completes with the payload');
  t.same(runs.get(jobId), ['start 1', 'start 1', { ok: true }],
    'the handler ran again from the top and got the payload (the parked attempt is not charged: attempt 1 again)');
  t.same((await db.getAttempts(jobId)).map((a) => [a.number, a.outcome]), [[1, 'parked'], [2, 'succeeded']]);
  const { rows: [s2] } = await pool.query(`select * from ballast.steps where job_id = $1`, [jobId]);
  t.match(s2, { status: 'succeeded', attempts: 2, attempt_offset: 1, wait_key: null, wait_deadline: null });
  const types = (await db.getEvents(jobId)).map((e) => e.type);
  t.ok(types.includes('step_waiting') && types.includes('job_waiting'), 'step and job went through waiting');

  const snap = await state(jobId);
  const { rows: [again] } = await pool.query(`select * from ballast.send_event('order:42', '{"ok":false}')`);
  t.same(again, { accepted: false, resumed_step_ids: [] }, 'a second send of the same key is refused as a duplicate');
  t.same(await state(jobId), snap, 'and resumes or wakes nothing');
  const { rows: sig } = await pool.query(`select payload from ballast.signals where key = 'order:42'`);
  t.same(sig, [{ payload: { ok: true } }], 'the first payload is kept');

  const { rows: [early] } = await pool.query(`select * from ballast.send_event('order:43', '{"ok":true}', 'webhook')`);
  t.same(early, { accepted: true, resumed_step_ids: [] }, 'an event nobody waits for yet is stored');
  const j43 = await db.submitJob({ pipeline: 'd.wait', input: { order: 43 } });
  const done = await waitForJob(db, j43.jobId, undefined, 10_000);
  t.match(done, { status: 'completed', result: { got: { ok: true } } });
  t.same(runs.get(j43.jobId), ['start 1', { ok: true }], 'delivered at once: the handler ran through');
  t.same((await db.getAttempts(j43.jobId)).map((a) => a.outcome), ['succeeded'], 'one attempt, never parked');
  t.notOk((await db.getEvents(j43.jobId)).some((e) => e.type === 'step_waiting'), 'the step never waited');
});

t.test('effects: fn runs once across attempts, the result is reused, the idempotency key is stable', async (t) => {
  const sends = new Map<string, number>();
  const seen = new Map<string, { attempt: number; result: unknown; key: string }[]>();
  const p = pipeline({ name: 'd.effect', version: 1, input: empty })
    .step('notify', { output: z.object({ messageId: z.string() }), retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 20 } },
      async (ctx) => {
        const result = await ctx.effect('send-email', async () => {
          const n = (sends.get(ctx.jobId) ?? 0) + 1;
          sends.set(ctx.jobId, n);
          return { messageId: `msg-${ctx.jobId}-${n}` };
        });
        const log = seen.get(ctx.jobId) ?? [];
        seen.set(ctx.jobId, log);
        log.push({ attempt: ctx.attempt, result, key: ctx.idempotencyKey });
        if (ctx.attempt === 1) throw new RetryableError('SMTP connection reset after the message was accepted');
        return result;
      });
  await testWorker(t, url, { pipelines: [p], concurrency: 2, pollIntervalMs: 50 });
  const jobs = [(await db.submitJob({ pipeline: 'd.effect' })).jobId, (await db.submitJob({ pipeline: 'd.effect' })).jobId];
  const keys: string[] = [];
  for (const jobId of jobs) {
    const job = await waitForJob(db, jobId, undefined, 10_000);
    t.match(job, { status: 'completed', result: { messageId: `msg-${jobId}-1` } });
    t.equal(sends.get(jobId), 1, 'the effect ran once');
    const log = seen.get(jobId)!;
    t.same(log.map((x) => [x.attempt, x.result]), [[1, { messageId: `msg-${jobId}-1` }], [2, { messageId: `msg-${jobId}-1` }]],
      'both attempts saw the same result');
    t.equal(log[0]!.key, log[1]!.key, 'the idempotency key is the same on both attempts');
    keys.push(log[0]!.key);
    const attempts = await db.getAttempts(jobId);
    t.same(attempts.map((a) => [a.number, a.outcome]), [[1, 'failed'], [2, 'succeeded']]);
    const { rows: effects } = await pool.query(`select key, attempt_id, result from ballast.effects where job_id = $1`, [jobId]);
    t.same(effects, [{ key: 'send-email', attempt_id: attempts[0]!.id, result: { messageId: `msg-${jobId}-1` } }],
      'one ledger row, written by attempt 1');

    for (const a of attempts) {
      const err = await pgError(() => pool.query(`select ballast.record_effect($1::bigint, 'late', '{}')`, [a.id]));
      t.equal(err.code, 'BA008', `record_effect on the ${a.outcome} attempt ${a.number}: BA008`);
    }
    const { rows: after } = await pool.query(`select count(*)::int as n from ballast.effects where job_id = $1`, [jobId]);
    t.equal(after[0].n, 1, 'the refused calls recorded nothing');
  }
  t.not(keys[0], keys[1], 'different jobs get different idempotency keys');
  t.equal((await pgError(() => pool.query(`select ballast.record_effect(999999999, 'k', '{}')`))).code, 'BA007', 'an unknown attempt: BA007');
});

t.test('replay: replay_step / replay_job rerun a step and its dependants, reuse upstream outputs, and are audited', async (t) => {
  let fixed = false;
  const runs = new Map<string, { a: number; b: number; c: number }>();
  const count = (jobId: string) => {
    const r = runs.get(jobId) ?? { a: 0, b: 0, c: 0 };
    runs.set(jobId, r);
    return r;
  };
  const bSaw: unknown[] = [];
  const p = pipeline({ name: 'd.replay', version: 1, input: empty })
    // a's output changes every time it runs, so a reused output is told apart from a recomputed one.
    .step('a', { output: z.object({ n: z.number() }) }, (ctx) => ({ n: ++count(ctx.jobId).a * 10 }))
    .step('b', { output: z.object({ m: z.number() }), after: ['a'], retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 20 } },
      (ctx) => {
        count(ctx.jobId).b++;
        bSaw.push(ctx.deps.a);
        if (!fixed) throw new PermanentError('upstream sent a malformed record', { code: 'E_RECORD' });
        return { m: ctx.deps.a.n + 1 };
      })
    .step('c', { output: z.object({ k: z.number() }), after: ['b'] }, (ctx) => {
      count(ctx.jobId).c++;
      return { k: ctx.deps.b.m * 2 };
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 2, pollIntervalMs: 50 });
  const steps = async (jobId: string) => Object.fromEntries((await pool.query(
    `select name, status, attempts, attempt_offset, output from ballast.steps where job_id = $1`, [jobId])).rows.map((s) => [s.name, s]));

  const { jobId } = await db.submitJob({ pipeline: 'd.replay' });
  t.match(await waitForJob(db, jobId, undefined, 10_000), { status: 'failed', error: { step: 'b', code: 'E_RECORD' } });
  let s = await steps(jobId);
  t.match(s, { a: { status: 'succeeded', attempts: 1 }, b: { status: 'failed', attempts: 1 }, c: { status: 'skipped', attempts: 0 } });
  const ids = await stepIds(jobId);

  fixed = true;
  const { rows: [r1] } = await pool.query(
    `select * from ballast.replay_step($1::bigint, 'fixed upstream', p_actor => 'ops@example')`, [ids.b]);
  t.same(r1.replayed_step_ids, [ids.b, ids.c], 'b and what depends on it');
  let job = await waitForJob(db, jobId, undefined, 10_000);
  t.match(job, { status: 'completed', result: { k: 22 }, error: null });
  s = await steps(jobId);
  t.match(s, {
    a: { status: 'succeeded', attempts: 1, output: { n: 10 } },
    b: { status: 'succeeded', attempts: 2, attempt_offset: 1, output: { m: 11 } },
    c: { status: 'succeeded', attempts: 1, output: { k: 22 } },
  });
  t.same(runs.get(jobId), { a: 1, b: 2, c: 1 }, 'a did not run again');
  t.same(bSaw.at(-1), { n: 10 }, 'b got a\'s recorded output');
  t.same((await pool.query(`select number, outcome, error_code from ballast.attempts where step_id = $1 order by number`, [ids.b])).rows,
    [{ number: 1, outcome: 'failed', error_code: 'E_RECORD' }, { number: 2, outcome: 'succeeded', error_code: null }],
    'the failed attempt stays in history');
  const replayed = async (stepId: string) => (await pool.query(
    `select actor, reason, data from ballast.events where step_id = $1 and type = 'step_replayed' order by id`, [stepId])).rows;
  t.match(await replayed(ids.b!), [{ actor: 'ops@example', reason: 'fixed upstream', data: { previous_status: 'failed', force: false } }]);
  const jobEvents = (await db.getEvents(jobId)).filter((e) => e.step_id === null).map((e) => `${e.type}:${e.actor}`);
  t.same(jobEvents.slice(-3), ['job_failed:system', 'job_running:ops@example', 'job_completed:system'], 'the job went failed -> running -> completed');

  // A succeeded step: only with force.
  let snap = await state(jobId);
  const err = await pgError(() => pool.query(`select * from ballast.replay_step($1::bigint, 'again')`, [ids.a]));
  t.equal(err.code, 'BA002', 'replaying a succeeded step without force: BA002');
  t.match(err.message, /succeeded/);
  t.same(await state(jobId), snap, 'and nothing changed');
  const { rows: [r2] } = await pool.query(`select * from ballast.replay_step($1::bigint, 'recompute', p_force => true)`, [ids.a]);
  t.same(r2.replayed_step_ids, [ids.a, ids.b, ids.c]);
  job = await waitForJob(db, jobId, undefined, 10_000);
  t.match(job, { status: 'completed', result: { k: 42 } }, 'a ran again (n = 20) and b, c followed');
  t.same(runs.get(jobId), { a: 2, b: 3, c: 2 });
  t.match(await replayed(ids.a!), [{ reason: 'recompute', actor: 'sql', data: { previous_status: 'succeeded', force: true } }]);

  // replay_job from a named step: forced, upstream reused.
  const { rows: [r3] } = await pool.query(`select * from ballast.replay_job($1::bigint, 'b', 'rerun b')`, [jobId]);
  t.same(r3.replayed_step_ids, [ids.b, ids.c]);
  job = await waitForJob(db, jobId, undefined, 10_000);
  t.match(job, { status: 'completed', result: { k: 42 } });
  t.same(runs.get(jobId), { a: 2, b: 4, c: 3 }, 'a not run again');
  t.match(await replayed(ids.b!), [{ reason: 'fixed upstream' }, { reason: 'rerun b', data: { previous_status: 'succeeded', force: true } }]);

  // Nothing failed: replay_job without a step has nothing to do.
  snap = await state(jobId);
  t.equal((await pgError(() => pool.query(`select * from ballast.replay_job($1::bigint)`, [jobId]))).code, 'BA011',
    'replay_job on a job with nothing failed: BA011');
  t.same(await state(jobId), snap);

  // Only replay moves a finished job or step back.
  const jobUpdate = await pgError(() => pool.query(`update ballast_private.jobs set status = 'running' where id = $1`, [jobId]));
  t.equal(jobUpdate.code, 'BA001', 'a plain UPDATE of a completed job: BA001');
  t.match(jobUpdate.hint, /replay_job/);
  const stepUpdate = await pgError(() => pool.query(`update ballast_private.steps set status = 'queued' where id = $1`, [ids.c]));
  t.equal(stepUpdate.code, 'BA001', 'a plain UPDATE of a succeeded step: BA001');
  t.same(await state(jobId), snap, 'still completed');

  // replay_job without a step: replays what failed.
  fixed = false;
  const j2 = (await db.submitJob({ pipeline: 'd.replay' })).jobId;
  t.equal((await waitForJob(db, j2, undefined, 10_000)).status, 'failed');
  fixed = true;
  const { rows: [r4] } = await pool.query(`select * from ballast.replay_job($1::bigint, p_reason => 'replay failures', p_actor => 'ops@example')`, [j2]);
  const ids2 = await stepIds(j2);
  t.same(r4.replayed_step_ids, [ids2.b, ids2.c]);
  t.match(await waitForJob(db, j2, undefined, 10_000), { status: 'completed', result: { k: 22 } });
  t.same(runs.get(j2), { a: 1, b: 2, c: 1 }, 'a not run again');
  t.match(await replayed(ids2.b!), [{ actor: 'ops@example', reason: 'replay failures' }]);
});
