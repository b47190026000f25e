// Retries, dead letters and stale wake-ups at the SQL level (migrations/0006_execution.sql), with no worker running
// and the SQL clock under the test's control: every call below goes through one connection whose session sets
// `ballast.now`, so backoff windows are checked exactly instead of slept through.
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { freshDatabase, pgError, registerTestWorker } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);
const sql = new pg.Client({ connectionString: url });
await sql.connect();
t.teardown(() => sql.end());
const worker = await registerTestWorker(db);

const T0 = Date.parse('2030-01-01T00:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();

async function setNow(ms: number): Promise<void> {
  await sql.query(`select set_config('ballast.now', $1, false)`, [iso(ms)]);
}

async function rows<R extends Record<string, any> = Record<string, any>>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await sql.query(text, params)).rows as R[];
}

async function register(p: { name: string; version: number; definition(): unknown; inputJsonSchema(): unknown }) {
  await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
}

async function submit(name: string, input: unknown = {}): Promise<string> {
  const [r] = await rows(`select job_id from ballast.submit_job($1, $2::jsonb)`, [name, JSON.stringify(input)]);
  return r!.job_id as string;
}

async function stepIds(jobId: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const r of await rows(`select id, name from ballast.steps where job_id = $1`, [jobId])) out[r.name] = r.id;
  return out;
}

type ClaimRow = { attempt_id: string; attempt_number: number; max_attempts: number; step_id: string; lease_expires_at: Date };

async function claim(stepId: string, workerId = worker, leaseMs = 45_000): Promise<ClaimRow | undefined> {
  return (await rows<ClaimRow>(`select * from ballast.claim_step($1::bigint, $2, $3)`, [stepId, workerId, leaseMs]))[0];
}

type FailRow = { step_status: string; next_run_at: Date | null; job_status: string };

async function fail(attemptId: string, error: unknown): Promise<FailRow> {
  return (await rows<FailRow>(`select * from ballast.fail_step($1::bigint, $2::jsonb)`, [attemptId, JSON.stringify(error)]))[0]!;
}

async function complete(attemptId: string, output: unknown = {}) {
  return (await rows(`select * from ballast.complete_step($1::bigint, $2::jsonb)`, [attemptId, JSON.stringify(output)]))[0]!;
}

async function step(stepId: string) {
  return (await rows(`select * from ballast.steps where id = $1`, [stepId]))[0]!;
}

async function job(jobId: string) {
  return (await rows(`select * from ballast.jobs where id = $1`, [jobId]))[0]!;
}

/** Everything a no-op must leave alone: the job, its steps, attempts and events, and the wake-up queue. */
async function state(jobId: string) {
  return {
    job: await job(jobId),
    steps: await rows(`select * from ballast.steps where job_id = $1 order by id`, [jobId]),
    attempts: await rows(`select * from ballast.attempts where job_id = $1 order by id`, [jobId]),
    events: await rows(`select id, type from ballast.events where job_id = $1 order by id`, [jobId]),
    wakeups: await rows(`select id, key, run_at, locked_at from graphile_worker._private_jobs order by id`),
  };
}

const timeout = (message: string, extra: object = {}) => ({ class: 'timeout', code: 'ETIMEDOUT', message, retryable: true, ...extra });

t.test('retryable failure: backoff window, early claim refused, retry_after_ms, then dead letter', async (t) => {
  const p = pipeline({ name: 'retry.backoff', version: 1, input: z.object({}) })
    .step('work', { output: z.object({}), retry: { maxAttempts: 4, baseDelayMs: 60_000, maxDelayMs: 90_000 } }, () => ({}));
  await register(p);
  await setNow(T0);
  const jobId = await submit('retry.backoff');
  const { work } = await stepIds(jobId);

  const a1 = await claim(work!);
  t.ok(a1, 'the queued step is claimed');
  t.equal(a1!.attempt_number, 1);
  t.equal(a1!.max_attempts, 4);
  t.equal(a1!.lease_expires_at.getTime(), T0 + 45_000, 'the lease runs from the SQL clock');

  const f1 = await fail(a1!.attempt_id, timeout('upstream took 30s'));
  t.equal(f1.step_status, 'retrying');
  t.equal(f1.job_status, 'retrying');
  const next1 = f1.next_run_at!.getTime();
  t.ok(next1 >= T0 && next1 < T0 + 60_000, `attempt 1 waits within [0, base) = [0, 60000) ms: ${next1 - T0} ms`);

  const s1 = await step(work!);
  t.equal(s1.status, 'retrying');
  t.equal(s1.next_run_at.getTime(), next1, 'the step stores next_run_at');
  t.match(s1.error, { class: 'timeout', code: 'ETIMEDOUT', message: 'upstream took 30s', retryable: true, attempt: 1 });
  const [att1] = await rows(`select * from ballast.attempts where id = $1`, [a1!.attempt_id]);
  t.match(att1, {
    outcome: 'failed', error_class: 'timeout', error_code: 'ETIMEDOUT', error_message: 'upstream took 30s', error_retryable: true,
  });
  t.equal(att1!.finished_at.getTime(), T0, 'the attempt finished at the SQL clock');
  const [gw] = await rows(`select count(*)::int as n from graphile_worker._private_jobs`);
  t.equal(gw!.n, 0, 'no graphile-worker wake-up: the step row itself is the queue (claimed when next_run_at is due)');

  await setNow(next1 - 1);
  const before = await state(jobId);
  t.equal(await claim(work!), undefined, 'a claim 1 ms before next_run_at gets nothing');
  t.same(await state(jobId), before, 'and changes nothing (no attempt, no event)');

  await setNow(next1);
  const a2 = await claim(work!);
  t.equal(a2?.attempt_number, 2, 'at next_run_at the retry is claimed as attempt 2');
  t.equal((await step(work!)).status, 'running');
  t.equal((await job(jobId)).status, 'running');

  const f2 = await fail(a2!.attempt_id, timeout('again'));
  const next2 = f2.next_run_at!.getTime();
  t.ok(next2 >= next1 && next2 < next1 + 90_000, `attempt 2 waits within [0, min(cap, 2*base)) = [0, 90000) ms: ${next2 - next1} ms`);

  await setNow(next2 + 5);
  const a3 = await claim(work!);
  t.equal(a3?.attempt_number, 3);
  const f3 = await fail(a3!.attempt_id, timeout('rate limited', { code: '429', retry_after_ms: 2500 }));
  t.equal(f3.step_status, 'retrying');
  const due3 = f3.next_run_at!.getTime();
  t.ok(due3 >= next2 + 5 + 2500 && due3 < next2 + 5 + 2500 + 625,
    `retry_after_ms wins over the backoff: never sooner, jitter under a quarter of it (${due3 - next2 - 5} ms)`);
  const [retryEvent] = await rows(
    `select data from ballast.events where step_id = $1 and type = 'step_retrying' order by id desc limit 1`, [work]);
  t.equal(Date.parse(retryEvent!.data.next_run_at), due3, 'the step_retrying event records when');

  await setNow(due3 - 1);
  t.equal(await claim(work!), undefined, 'not due 1 ms early');
  await setNow(due3);
  const a4 = await claim(work!);
  t.equal(a4?.attempt_number, 4, 'the last attempt');

  const f4 = await fail(a4!.attempt_id, timeout('still slow'));
  t.same(f4, { step_status: 'failed', next_run_at: null, job_status: 'failed' }, 'attempts exhausted: failed for good');
  const s4 = await step(work!);
  t.match(s4, { status: 'failed', attempts: 4, next_run_at: null });
  t.ok(s4.finished_at, 'finished_at is set');
  const dead = await rows(`select * from ballast.dead_letters where job_id = $1`, [jobId]);
  t.match(dead, [{ step_id: work, step_name: 'work', attempts: 4, max_attempts: 4, error_class: 'timeout', error_message: 'still slow' }]);
  const j = await job(jobId);
  t.equal(j.status, 'failed');
  t.match(j.error, { step: 'work', step_id: Number(work), class: 'timeout', message: 'still slow', attempt: 4 });
  t.ok(j.finished_at, 'the job is finished');
  t.same((await rows(`select number, outcome from ballast.attempts where step_id = $1 order by number`, [work]))
    .map((r) => `${r.number}:${r.outcome}`), ['1:failed', '2:failed', '3:failed', '4:failed']);
  t.equal(await claim(work!), undefined, 'a failed step cannot be claimed');
});

t.test('backoff is exponential, capped and fully jittered', async (t) => {
  const p = pipeline({ name: 'retry.jitter', version: 1, input: z.object({}) })
    .step('work', { output: z.object({}), retry: { maxAttempts: 5, baseDelayMs: 1000, maxDelayMs: 3000 } }, () => ({}));
  await register(p);
  const start = T0 + 86_400_000;
  await setNow(start);
  const steps: string[] = [];
  for (let i = 0; i < 30; i++) steps.push((await stepIds(await submit('retry.jitter')))['work']!);
  const delays: number[][] = [];
  for (let round = 1; round <= 3; round++) {
    const now = start + round * 3_600_000; // an hour later: every earlier retry is due
    await setNow(now);
    const got: number[] = [];
    for (const id of steps) {
      const a = await claim(id);
      if (!a || a.attempt_number !== round) throw new Error(`step ${id}: expected attempt ${round}, got ${a?.attempt_number}`);
      got.push((await fail(a.attempt_id, timeout('x'))).next_run_at!.getTime() - now);
    }
    delays.push(got);
  }
  const [d1, d2, d3] = delays as [number[], number[], number[]];
  t.ok(d1.every((d) => d >= 0 && d < 1000), `attempt 1 within [0, 1000): max ${Math.max(...d1)}`);
  t.ok(d2.every((d) => d >= 0 && d < 2000), `attempt 2 within [0, 2000): max ${Math.max(...d2)}`);
  t.ok(d3.every((d) => d >= 0 && d < 3000), `attempt 3 within the cap [0, 3000), not [0, 4000): max ${Math.max(...d3)}`);
  t.ok(Math.max(...d2) >= 1000, 'attempt 2 can wait longer than attempt 1 could (exponential)');
  t.ok(new Set(d1).size > 10, `jitter: ${new Set(d1).size} distinct delays among 30`);
});

t.test('Retry-After gets a bounded jitter: steps refused together come back spread, never sooner than asked', async (t) => {
  const p = pipeline({ name: 'retry.after.jitter', version: 1, input: z.object({}) })
    .step('work', { output: z.object({}), retry: { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 3000 } }, () => ({}));
  await register(p);
  const now = T0 + 5 * 86_400_000;
  await setNow(now);
  const delays: number[] = [];
  for (let i = 0; i < 30; i++) {
    const id = (await stepIds(await submit('retry.after.jitter')))['work']!;
    const a = await claim(id);
    delays.push((await fail(a!.attempt_id, timeout('429', { code: '429', retry_after_ms: 4000 }))).next_run_at!.getTime() - now);
  }
  t.ok(delays.every((d) => d >= 4000 && d < 5000), `all within [4000, 5000): ${Math.min(...delays)}..${Math.max(...delays)}`);
  t.ok(new Set(delays).size > 10, `spread: ${new Set(delays).size} distinct delays among 30`);
  const long = (await stepIds(await submit('retry.after.jitter')))['work']!;
  const a = await claim(long);
  const d = (await fail(a!.attempt_id, timeout('529', { code: '529', retry_after_ms: 3_600_000 }))).next_run_at!.getTime() - now;
  t.ok(d >= 3_600_000 && d < 3_660_000, `an hour's Retry-After gets at most 60 s more (${d - 3_600_000} ms)`);
});

t.test('exhausted step: dependants skipped, independent branch runs on, job fails when all are final', async (t) => {
  // a -> b -> c -> f <- e <- d : f joins a doomed branch and a healthy one.
  const noop = () => ({});
  const out = z.object({});
  const p = pipeline({ name: 'retry.dag', version: 1, input: z.object({}) })
    .step('a', { output: out, retry: { maxAttempts: 2, baseDelayMs: 0, maxDelayMs: 0 } }, noop)
    .step('b', { output: out, after: ['a'] }, noop)
    .step('c', { output: out, after: ['b'] }, noop)
    .step('d', { output: out }, noop)
    .step('e', { output: out, after: ['d'] }, noop)
    .step('f', { output: out, after: ['c', 'e'] }, noop);
  await register(p);
  const now = T0 + 2 * 86_400_000;
  await setNow(now);
  const jobId = await submit('retry.dag');
  const ids = await stepIds(jobId);

  const a1 = await claim(ids.a!);
  t.equal((await fail(a1!.attempt_id, timeout('first'))).step_status, 'retrying');
  const a2 = await claim(ids.a!);
  t.equal(a2?.attempt_number, 2, 'backoff base 0: due at once');
  const f = await fail(a2!.attempt_id, timeout('second'));
  t.equal(f.step_status, 'failed', 'attempts exhausted');
  t.equal(f.job_status, 'running', 'the job is not final while d and e can still run');

  const status = async () =>
    Object.fromEntries((await rows(`select name, status from ballast.steps where job_id = $1`, [jobId])).map((r) => [r.name, r.status]));
  t.same(await status(), { a: 'failed', b: 'skipped', c: 'skipped', d: 'queued', e: 'pending', f: 'skipped' },
    'direct (b) and transitive (c, f) dependants are skipped; d and e are untouched');
  const skipped = await rows(`select name, finished_at from ballast.steps where job_id = $1 and status = 'skipped' order by name`, [jobId]);
  t.ok(skipped.every((s) => s.finished_at?.getTime() === now), 'skipped steps are finished at the same moment');
  t.same((await rows(`select s.name from ballast.events e join ballast.steps s on s.id = e.step_id
                       where e.job_id = $1 and e.type = 'step_skipped' order by s.name`, [jobId])).map((r) => r.name),
    ['b', 'c', 'f'], 'each skip is an event');
  t.same((await rows(`select step_name from ballast.dead_letters where job_id = $1`, [jobId])).map((r) => r.step_name), ['a'],
    'only the failed step is a dead letter');
  for (const name of ['a', 'b', 'f']) t.equal(await claim(ids[name]!), undefined, `${name} cannot be claimed`);

  const d = await claim(ids.d!);
  const cd = await complete(d!.attempt_id, {});
  t.same(cd.queued_step_ids, [ids.e], 'completing d queues e');
  t.equal(cd.job_status, 'running');
  const e = await claim(ids.e!);
  const ce = await complete(e!.attempt_id, {});
  t.same(ce.queued_step_ids, [], 'f stays skipped although e succeeded');
  t.equal(ce.job_status, 'failed', 'every step is final and one failed: the job failed');
  t.same(await status(), { a: 'failed', b: 'skipped', c: 'skipped', d: 'succeeded', e: 'succeeded', f: 'skipped' });
  const j = await job(jobId);
  t.match(j, { status: 'failed', result: null, error: { step: 'a', step_id: Number(ids.a), class: 'timeout', message: 'second', attempt: 2 } });
  t.ok(j.finished_at, 'finished_at is set');
  t.same((await rows(`select type from ballast.events where job_id = $1 and step_id is null and type = 'job_failed'`, [jobId])).length, 1,
    'job_failed is recorded once');
});

t.test('retryable=false fails at once, whatever attempts are left', async (t) => {
  const p = pipeline({ name: 'retry.permanent', version: 1, input: z.object({}) })
    .step('work', { output: z.object({}), retry: { maxAttempts: 5 } }, () => ({}))
    .step('after_work', { output: z.object({}), after: ['work'] }, () => ({}));
  await register(p);
  await setNow(T0 + 3 * 86_400_000);
  const jobId = await submit('retry.permanent');
  const ids = await stepIds(jobId);
  const a = await claim(ids.work!);
  const f = await fail(a!.attempt_id, { class: 'http', code: '400', message: 'bad request', retryable: false, retry_after_ms: 10 });
  t.same(f, { step_status: 'failed', next_run_at: null, job_status: 'failed' });
  t.match(await step(ids.work!), { status: 'failed', attempts: 1, max_attempts: 5, next_run_at: null,
    error: { class: 'http', code: '400', retryable: false, attempt: 1 } });
  t.equal((await step(ids.after_work!)).status, 'skipped');
  const [att] = await rows(`select * from ballast.attempts where id = $1`, [a!.attempt_id]);
  t.match(att, { outcome: 'failed', error_class: 'http', error_code: '400', error_message: 'bad request', error_retryable: false });
  t.equal((await rows(`select 1 from ballast.dead_letters where step_id = $1`, [ids.work])).length, 1, 'a dead letter');
  t.match((await job(jobId)).error, { step: 'work', class: 'http', retryable: false });
});

t.test('stale and duplicate wake-ups are no-ops; stale results raise BA008', async (t) => {
  const p = pipeline({ name: 'retry.stale', version: 1, input: z.object({}) })
    .step('first', { output: z.object({ n: z.number() }) }, () => ({ n: 1 }))
    .step('second', { output: z.object({}), after: ['first'], retry: { maxAttempts: 3, baseDelayMs: 1000, maxDelayMs: 1000 } }, () => ({}));
  await register(p);
  const now = T0 + 4 * 86_400_000;
  await setNow(now);
  const jobId = await submit('retry.stale');
  const ids = await stepIds(jobId);

  let snap = await state(jobId);
  t.equal(await claim('999999999'), undefined, 'an unknown step: nothing');
  t.equal(await claim(ids.second!), undefined, 'a pending step: nothing');
  t.same(await state(jobId), snap, 'no attempt, no event, no wake-up');
  t.equal((await pgError(() => claim(ids.first!, 'nobody'))).code, 'BA007', 'an unregistered worker is refused (BA007)');
  t.same(await state(jobId), snap, 'and the refusal changes nothing');

  const first = await claim(ids.first!);
  t.ok(first, 'first claimed');
  snap = await state(jobId);
  t.equal(await claim(ids.first!), undefined, 'a running step: nothing');
  t.same(await state(jobId), snap, 'the duplicate wake-up changed nothing');

  await complete(first!.attempt_id, { n: 1 });
  snap = await state(jobId);
  t.equal(await claim(ids.first!), undefined, 'a succeeded step: nothing');
  for (const [what, run] of [
    ['complete_step', () => complete(first!.attempt_id, { n: 2 })],
    ['fail_step', () => fail(first!.attempt_id, timeout('late'))],
  ] as const) {
    const err = await pgError(run);
    t.equal(err.code, 'BA008', `${what} on a finished attempt raises BA008`);
    t.match(err.message, /no longer running/);
  }
  t.same(await state(jobId), snap, 'the succeeded step, its output and the job are untouched');
  t.same((await step(ids.first!)).output, { n: 1 });

  const s1 = await claim(ids.second!);
  await fail(s1!.attempt_id, timeout('flaky'));
  snap = await state(jobId);
  t.equal((await pgError(() => complete(s1!.attempt_id))).code, 'BA008', 'complete_step on a failed attempt of a retrying step: BA008');
  t.equal((await pgError(() => fail(s1!.attempt_id, timeout('twice')))).code, 'BA008', 'fail_step on it: BA008');
  t.same(await state(jobId), snap, 'nothing changed');

  await setNow(now + 1000);
  const s2 = await claim(ids.second!);
  t.equal(s2?.attempt_number, 2);
  snap = await state(jobId);
  t.equal((await pgError(() => complete(s1!.attempt_id))).code, 'BA008', 'the old attempt cannot complete the step now run by attempt 2');
  t.equal((await pgError(() => fail(s1!.attempt_id, timeout('old')))).code, 'BA008', 'nor fail it');
  t.same(await state(jobId), snap, 'attempt 2 still owns the step');
  t.equal((await pgError(() => complete('999999999'))).code, 'BA007', 'an unknown attempt: BA007');

  const done = await complete(s2!.attempt_id, {});
  t.equal(done.job_status, 'completed');
  t.same((await job(jobId)).result, {}, 'the result is the final step\'s output');
});

t.test('racing claims of one step: exactly one wins', async (t) => {
  const p = pipeline({ name: 'retry.race', version: 1, input: z.object({}) })
    .step('work', { output: z.object({}) }, () => ({}));
  await register(p);
  const jobId = (await db.submitJob({ pipeline: 'retry.race' })).jobId;
  const id = (await db.getSteps(jobId))[0]!.id;
  // Separate connections (the pool), so the claims really overlap.
  const results = await Promise.all(Array.from({ length: 8 }, () =>
    pool.query(`select * from ballast.claim_step($1::bigint, $2)`, [id, worker])));
  t.equal(results.filter((r) => r.rowCount === 1).length, 1, 'one claim got the step');
  t.equal((await db.getAttempts(jobId)).length, 1, 'one attempt');
  t.equal((await db.getSteps(jobId))[0]!.attempts, 1);
});

t.test('fail_step rejects a malformed error object (BA002) and records nothing', async (t) => {
  const p = pipeline({ name: 'retry.malformed', version: 1, input: z.object({}) })
    .step('work', { output: z.object({}) }, () => ({}));
  await register(p);
  await setNow(T0 + 5 * 86_400_000);
  const jobId = await submit('retry.malformed');
  const a = await claim((await stepIds(jobId)).work!);
  const snap = await state(jobId);
  const bad: [string, unknown][] = [
    ['null', null],
    ['a string', 'timeout'],
    ['an array', [{ class: 'x', message: 'y' }]],
    ['no class', { message: 'y' }],
    ['no message', { class: 'x' }],
    ['an empty class', { class: '', message: 'y' }],
    ['a class that is not text', { class: 5, message: 'y' }],
    ['a message that is not text', { class: 'x', message: { text: 'y' } }],
    ['retryable not a boolean', { class: 'x', message: 'y', retryable: 'maybe' }],
    ['retryable as text', { class: 'x', message: 'y', retryable: 'false' }],
    ['a negative retry_after_ms', { class: 'x', message: 'y', retry_after_ms: -1 }],
    ['retry_after_ms as text', { class: 'x', message: 'y', retry_after_ms: 'soon' }],
    ['an absurd retry_after_ms', { class: 'x', message: 'y', retry_after_ms: 1e30 }],
  ];
  for (const [what, error] of bad) {
    const err = await pgError(() => rows(`select * from ballast.fail_step($1::bigint, $2::jsonb)`,
      [a!.attempt_id, error === null ? null : JSON.stringify(error)])).catch((e: Error) => e as Error & { code?: string });
    t.equal(err.code, 'BA002', `${what}: BA002 (${err.message})`);
  }
  t.same(await state(jobId), snap, 'the attempt is still running; nothing was recorded');
  const ok = await fail(a!.attempt_id, { class: 'x', message: 'y', retryable: false });
  t.equal(ok.step_status, 'failed', 'a well-formed error is then accepted');
});
