// Side effects (migrations/0007_effects_and_signals.sql, src/worker/effects.ts): ctx.effect records its intent before fn runs and gives
// fn a stable idempotency key and previouslyStarted; ctx.transaction commits the step's SQL and its ledger row
// together, fenced against an attempt that lost its step. Against a real Postgres: the SQL verbs by hand first
// (while no worker runs, so no reaper touches the hand-claimed attempts), then in-process workers, then real worker
// processes (test/fixtures/effects-worker.ts) that die between an effect and its record, and a SIGKILL storm.
import t, { type Test } from 'tap';
import pg from 'pg';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { BallastError, RetryableError } from '../src/errors.ts';
import { eventually, freshDatabase, pgError, spawnNode, testWorker, waitForJob, type TestProcess } from './helpers.ts';
import { isFinalJobStatus } from '../src/statuses.ts';

// The storm test runs for a minute or two on a loaded machine.
t.setTimeout(360_000);

const fixture = fileURLToPath(new URL('./fixtures/effects-worker.ts', import.meta.url));
const { url, db, pool } = await freshDatabase(t);

await pool.query(`
  create table effect_runs (id bigserial primary key, job_id bigint not null, attempt int not null,
                            previously_started boolean not null, idempotency_key text not null,
                            intent_seen boolean not null, pid int not null);
  create table tx_rows (id bigserial primary key, job_id bigint not null, note text not null);
  create table storm_rows (id bigserial primary key, job_id bigint not null, pid int not null)`);

const empty = z.object({});
const fast = { baseDelayMs: 10, maxDelayMs: 20 };

async function rows<R extends Record<string, any> = Record<string, any>>(text: string, params: unknown[] = []): Promise<R[]> {
  return (await pool.query(text, params)).rows as R[];
}

async function stepId(jobId: string, name: string): Promise<string> {
  const [r] = await rows<{ id: string }>('select id from ballast.steps where job_id = $1 and name = $2', [jobId, name]);
  if (!r) throw new Error(`job ${jobId} has no step ${name}`);
  return r.id;
}

/** The running attempt of a step (from a handler, to end it from outside as a reclaim would). */
async function runningAttempt(step: string): Promise<string> {
  const [r] = await rows<{ id: string }>(`select id from ballast.attempts where step_id = $1 and outcome = 'running'`, [step]);
  if (!r) throw new Error(`step ${step} has no running attempt`);
  return r.id;
}

/** Ends a running attempt the way a reclaim does (retryable failure, the step retried), from another connection. */
async function reclaim(attemptId: string): Promise<void> {
  await pool.query(`select * from ballast.fail_step($1::bigint, '{"class": "reclaimed", "message": "ended by the test", "retryable": true}')`,
    [attemptId]);
}

t.test('SQL verbs: begin_effect records intents and reports earlier ones; begin_transactional_effect fences and holds the step', async (t) => {
  const p = pipeline({ name: 'e.sql', version: 1, input: empty })
    .step('s', { output: empty }, async () => ({}));
  await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
  await db.registerWorker({ workerId: 'sql-worker', hostname: 'test', pid: process.pid, concurrency: 1, pipelines: [] });
  const { jobId } = await db.submitJob({ pipeline: 'e.sql' });
  const step = await stepId(jobId, 's');
  const claim = async () => {
    const [c] = await rows<{ attempt_id: string }>(`select * from ballast.claim_step($1::bigint, 'sql-worker', 60000)`, [step]);
    if (!c) throw new Error('the step could not be claimed');
    return c.attempt_id;
  };
  const begin = async (attempt: string, key: string) =>
    (await rows(`select * from ballast.begin_effect($1::bigint, $2)`, [attempt, key]))[0];
  const intents = () => rows(`select key, attempt_id, recorded from ballast.effect_intents where step_id = $1 order by key, attempt_id`, [step]);

  const a1 = await claim();
  t.same(await begin(a1, 'mail'), { done: false, result: null, earlier_attempts: 0, idempotency_key: `ballast:${jobId}:s:mail` },
    'a new effect: not done, no earlier attempts, the key names job, step and effect');
  t.same(await begin(a1, 'mail'), { done: false, result: null, earlier_attempts: 0, idempotency_key: `ballast:${jobId}:s:mail` },
    'calling it again in the same attempt (a retry after a lost connection) changes nothing');
  await begin(a1, 'sms');
  t.same(await intents(), [{ key: 'mail', attempt_id: a1, recorded: false }, { key: 'sms', attempt_id: a1, recorded: false }],
    'one intent per key and attempt, not recorded yet');

  t.same((await rows(`select ballast.record_effect($1::bigint, 'mail', '{"id": 1}') as r`, [a1]))[0], { r: { id: 1 } },
    'record_effect stores the result');
  t.same(await begin(a1, 'mail'), { done: true, result: { id: 1 }, earlier_attempts: 0, idempotency_key: `ballast:${jobId}:s:mail` },
    'a recorded effect is done, with its result');

  await pool.query(`select ballast.release_attempt($1::bigint, 'test')`, [a1]);
  t.equal((await pgError(() => begin(a1, 'late'))).code, 'BA008', 'an attempt that lost its step starts nothing (BA008)');
  t.equal((await pgError(() => pool.query(`select ballast.record_effect($1::bigint, 'sms', '{}')`, [a1]))).code, 'BA008',
    'nor records one');
  t.equal((await pgError(() => pool.query(`select * from ballast.begin_transactional_effect($1::bigint, 'late')`, [a1]))).code,
    'BA008', 'nor begins a transactional one');
  t.notOk((await intents()).some((i) => i.key === 'late'), 'the refused start left no intent');

  const a2 = await claim();
  t.same(await begin(a2, 'sms'), { done: false, result: null, earlier_attempts: 1, idempotency_key: `ballast:${jobId}:s:sms` },
    'the next attempt learns that an earlier attempt started the effect and never recorded it');
  t.same(await begin(a2, 'mail'), { done: true, result: { id: 1 }, earlier_attempts: 0, idempotency_key: `ballast:${jobId}:s:mail` },
    'and gets the recorded result of the one that was recorded');
  t.notOk((await intents()).some((i) => i.key === 'mail' && i.attempt_id === a2), 'a done effect records no new intent');

  // A transactional effect holds the step: ending the attempt meanwhile waits for its commit.
  const tx = new pg.Client({ connectionString: url });
  const other = new pg.Client({ connectionString: url });
  await Promise.all([tx.connect(), other.connect()]);
  t.teardown(() => Promise.all([tx.end(), other.end()]));
  await tx.query('begin');
  t.same((await tx.query(`select * from ballast.begin_transactional_effect($1::bigint, 'mail')`, [a2])).rows,
    [{ done: true, result: { id: 1 } }], 'a recorded key: done, with its result');
  t.same((await tx.query(`select * from ballast.begin_transactional_effect($1::bigint, 'book')`, [a2])).rows,
    [{ done: false, result: null }], 'a new key: not done');
  await tx.query(`insert into tx_rows (job_id, note) values ($1, 'in the transaction')`, [jobId]);
  await other.query(`set lock_timeout = '300ms'`);
  t.equal((await pgError(() => other.query(`select ballast.release_attempt($1::bigint, 'test')`, [a2]))).code, '55P03',
    'while the transaction is open, ending the attempt waits for the step lock');
  await tx.query(`select ballast.record_effect($1::bigint, 'book', '"booked"')`, [a2]);
  t.same(await rows(`select note from tx_rows where job_id = $1`, [jobId]), [], 'nothing is visible before the commit');
  await tx.query('commit');
  t.same(await rows(`select note from tx_rows where job_id = $1`, [jobId]), [{ note: 'in the transaction' }], 'the row committed');
  t.same(await rows(`select attempt_id, result from ballast.effects where step_id = $1 and key = 'book'`, [step]),
    [{ attempt_id: a2, result: 'booked' }], 'with its ledger row');

  t.equal((await pgError(() => begin(a2, ''))).code, 'BA002', 'an empty key is refused (BA002)');
  t.equal((await pgError(() => pool.query(`select * from ballast.begin_transactional_effect($1::bigint, repeat('k', 501))`, [a2]))).code,
    'BA002', 'a key over 500 characters is refused (BA002)');
  t.equal((await pgError(() => begin('999999999', 'k'))).code, 'BA007', 'an unknown attempt: BA007');
  await pool.query(`select ballast.release_attempt($1::bigint, 'test')`, [a2]);
  await pool.query(`select ballast.stop_worker('sql-worker')`);
});

t.test('ctx.effect: the intent is recorded before fn runs; fn gets a stable key; fn() without parameters still works', async (t) => {
  const seen: { info: unknown; intents: unknown[] }[] = [];
  const p = pipeline({ name: 'e.intent', version: 1, input: empty })
    .step('send', { output: z.object({ plain: z.number() }) }, async (ctx) => {
      await ctx.effect('mail', async (info) => {
        const intents = await rows(
          `select i.key, a.number, a.outcome, i.recorded from ballast.effect_intents i join ballast.attempts a on a.id = i.attempt_id
            where i.step_id = $1`, [ctx.stepId]);
        seen.push({ info, intents });
        return { sent: true };
      });
      const plain = await ctx.effect('plain', () => 42);
      return { plain };
    });
  const m = pipeline({ name: 'e.map', version: 1, input: empty })
    .map('fan', { items: () => ['x', 'y'], output: z.object({ key: z.string() }) }, async (_item, ctx) =>
      ({ key: await ctx.effect('k', (info) => info.idempotencyKey) }));
  await testWorker(t, url, { pipelines: [p, m], concurrency: 2, pollIntervalMs: 50 });

  const { jobId } = await db.submitJob({ pipeline: 'e.intent' });
  t.match(await waitForJob(db, jobId), { status: 'completed', result: { plain: 42 } }, 'fn() without parameters works');
  t.same(seen, [{
    info: { idempotencyKey: `ballast:${jobId}:send:mail`, attempt: 1, previouslyStarted: false },
    intents: [{ key: 'mail', number: 1, outcome: 'running', recorded: false }],
  }], 'fn ran once; when it started, its intent was already committed (visible from another connection), not recorded');
  t.same(await rows(`select key, recorded from ballast.effect_intents where job_id = $1 order by key`, [jobId]),
    [{ key: 'mail', recorded: true }, { key: 'plain', recorded: true }], 'afterwards both effects are recorded');

  const map = await db.submitJob({ pipeline: 'e.map' });
  const done = await waitForJob(db, map.jobId);
  t.match(done, { status: 'completed' }, 'the map job completed');
  const keys = (done.result as { items: { output: { key: string } }[] }).items.map((i) => i.output.key);
  t.same(keys, [`ballast:${map.jobId}:fan__0:k`, `ballast:${map.jobId}:fan__1:k`], 'each item of a map step has its own key');
});

t.test('ctx.effect: a recorded effect is reused, not re-run; one key used twice at once runs once', async (t) => {
  let calls = 0;
  const results: unknown[] = [];
  const p = pipeline({ name: 'e.reuse', version: 1, input: empty })
    .step('s', { output: z.object({ n: z.number() }), retry: { maxAttempts: 3, ...fast } }, async (ctx) => {
      const [a, b] = await Promise.all([
        ctx.effect('count', () => ({ n: ++calls })),
        ctx.effect('count', () => ({ n: ++calls })),
      ]);
      results.push([ctx.attempt, a, b]);
      if (ctx.attempt === 1) throw new RetryableError('failed after the effect');
      return a;
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 1, pollIntervalMs: 50 });
  const { jobId } = await db.submitJob({ pipeline: 'e.reuse' });
  t.match(await waitForJob(db, jobId), { status: 'completed', result: { n: 1 } }, 'the job completed with the first result');
  t.equal(calls, 1, 'fn ran once in all');
  t.same(results, [[1, { n: 1 }, { n: 1 }], [2, { n: 1 }, { n: 1 }]], 'both calls of both attempts got the recorded result');
  const attempts = await db.getAttempts(jobId);
  t.same(await rows(`select attempt_id from ballast.effect_intents where job_id = $1`, [jobId]), [{ attempt_id: attempts[0]!.id }],
    'the retry did not even start it (the claim handed it the ledger)');
});

t.test('ctx.effect: an attempt that lost its step cannot record (BA008); the next attempt gets previouslyStarted', async (t) => {
  const infos: unknown[] = [];
  const errors: unknown[] = [];
  const p = pipeline({ name: 'e.stale', version: 1, input: empty })
    .step('s', { output: z.object({ by: z.number() }), retry: { maxAttempts: 3, ...fast } }, async (ctx) => {
      try {
        return await ctx.effect('charge', async (info) => {
          infos.push(info);
          if (info.attempt === 1) await reclaim(await runningAttempt(ctx.stepId));
          return { by: info.attempt };
        });
      } catch (err) {
        errors.push(err instanceof BallastError ? err.code : String(err));
        throw err;
      }
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 1, pollIntervalMs: 50 });
  const { jobId } = await db.submitJob({ pipeline: 'e.stale' });
  t.match(await waitForJob(db, jobId), { status: 'completed', result: { by: 2 } }, 'the job completed with the second run result');
  const key = `ballast:${jobId}:s:charge`;
  t.same(infos, [{ idempotencyKey: key, attempt: 1, previouslyStarted: false }, { idempotencyKey: key, attempt: 2, previouslyStarted: true }],
    'the second run knows the first may have happened, and has the same key');
  t.same(errors, ['stale_attempt'], 'the first attempt could not record its result: stale_attempt (BA008)');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome, a.error_class]), [[1, 'failed', 'reclaimed'], [2, 'succeeded', null]],
    'attempt 1 ended by the test (as a reclaim would), attempt 2 succeeded');
  t.same(await rows(`select attempt_id, result from ballast.effects where job_id = $1`, [jobId]),
    [{ attempt_id: attempts[1]!.id, result: { by: 2 } }], 'only the attempt that owned the step recorded');
});

t.test('ctx.transaction: user rows and ledger commit together; a failed transaction leaves nothing; a retry after it does not repeat it', async (t) => {
  const calls: { attempt: number; inside: unknown }[] = [];
  const p = pipeline({ name: 'e.tx', version: 1, input: empty })
    .step('s', { output: z.object({ row: z.string() }), retry: { maxAttempts: 4, ...fast } }, async (ctx) => {
      const booked = await ctx.transaction('book', async (client) => {
        const { rows: [r] } = await client.query<{ id: string }>(
          'insert into tx_rows (job_id, note) values ($1, $2) returning id', [ctx.jobId, `attempt ${ctx.attempt}`]);
        const outside = await rows(`select (select count(*)::int from tx_rows where job_id = $1) as rows,
                                           (select count(*)::int from ballast.effects where job_id = $1) as ledger`, [ctx.jobId]);
        calls.push({ attempt: ctx.attempt, inside: outside[0] });
        if (ctx.attempt === 1) throw new Error('failed inside the transaction');
        return { row: r!.id };
      });
      if (ctx.attempt === 2) throw new RetryableError('failed after the transaction committed');
      return booked;
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 1, pollIntervalMs: 50 });
  const { jobId } = await db.submitJob({ pipeline: 'e.tx' });
  const job = await waitForJob(db, jobId);
  t.match(job, { status: 'completed' }, 'the job completed');
  t.same(calls, [{ attempt: 1, inside: { rows: 0, ledger: 0 } }, { attempt: 2, inside: { rows: 0, ledger: 0 } }],
    'fn ran in attempts 1 and 2 only, its rows invisible outside until the commit; attempt 3 reused the result');
  const written = await rows<{ id: string; note: string }>(`select id, note from tx_rows where job_id = $1`, [jobId]);
  t.same(written.map((r) => r.note), ['attempt 2'], 'the failed transaction left no row; the committed one left exactly one');
  t.same(job.result, { row: written[0]!.id }, 'the step returned the recorded result');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome]), [[1, 'failed'], [2, 'failed'], [3, 'succeeded']], 'three attempts');
  t.same(await rows(`select attempt_id, result from ballast.effects where job_id = $1`, [jobId]),
    [{ attempt_id: attempts[1]!.id, result: { row: written[0]!.id } }], 'one ledger row, written by attempt 2 with its rows');
});

t.test('ctx.transaction: an attempt reclaimed meanwhile writes nothing; while the transaction runs the attempt cannot be ended', async (t) => {
  const ran: number[] = [];
  const errors: unknown[] = [];
  let endDuring: string | undefined;
  const p = pipeline({ name: 'e.txstale', version: 1, input: empty })
    .step('s', { output: z.object({ ok: z.boolean() }), retry: { maxAttempts: 3, ...fast } }, async (ctx) => {
      const me = await runningAttempt(ctx.stepId);
      if (ctx.attempt === 1) await reclaim(me);
      try {
        return await ctx.transaction('book', async (client) => {
          ran.push(ctx.attempt);
          await client.query(`insert into tx_rows (job_id, note) values ($1, $2)`, [ctx.jobId, `attempt ${ctx.attempt}`]);
          // From another connection, try to end this attempt while its transaction is open.
          const other = await pool.connect();
          try {
            await other.query(`set lock_timeout = '300ms'`);
            endDuring = (await pgError(() => other.query(
              `select * from ballast.fail_step($1::bigint, '{"class": "x", "message": "ended by the test"}')`, [me]))).code;
          } finally {
            other.release(true);
          }
          return { ok: true };
        });
      } catch (err) {
        errors.push(err instanceof BallastError ? err.code : String(err));
        throw err;
      }
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 1, pollIntervalMs: 50 });
  const { jobId } = await db.submitJob({ pipeline: 'e.txstale' });
  t.match(await waitForJob(db, jobId), { status: 'completed' }, 'the job completed');
  t.same(errors, ['stale_attempt'], 'the reclaimed attempt was refused at the fence (stale_attempt, BA008)');
  t.same(ran, [2], 'its fn never ran; the next attempt ran it');
  t.same((await rows(`select note from tx_rows where job_id = $1`, [jobId])).map((r) => r.note), ['attempt 2'],
    'the reclaimed attempt wrote nothing');
  t.equal(endDuring, '55P03', 'ending the attempt during its transaction waited for the step lock (lock_timeout)');
  t.same((await db.getAttempts(jobId)).map((a) => [a.number, a.outcome]), [[1, 'failed'], [2, 'succeeded']],
    'and the attempt that held it succeeded');
});

t.test('ctx.transaction: a step that times out inside its transaction rolls it back at once and frees its slot', async (t) => {
  const p = pipeline({ name: 'e.txtimeout', version: 1, input: empty })
    .step('s', { output: z.object({ ok: z.boolean() }), timeoutMs: 500, retry: { maxAttempts: 3, ...fast } }, async (ctx) =>
      ctx.transaction('book', async (client) => {
        await client.query(`insert into tx_rows (job_id, note) values ($1, $2)`, [ctx.jobId, `attempt ${ctx.attempt}`]);
        // Attempt 1 ignores its signal and would hold the transaction (and the step lock) for a minute.
        if (ctx.attempt === 1) await new Promise((r) => setTimeout(r, 60_000).unref());
        return { ok: true };
      }));
  await testWorker(t, url, { pipelines: [p], concurrency: 1, pollIntervalMs: 50 });
  const { jobId } = await db.submitJob({ pipeline: 'e.txtimeout' });
  t.match(await waitForJob(db, jobId, undefined, 30_000), { status: 'completed' }, 'the job completed long before the held transaction would have ended');
  t.same((await db.getAttempts(jobId)).map((a) => [a.number, a.outcome]), [[1, 'timed_out'], [2, 'succeeded']],
    'attempt 1 timed out, attempt 2 succeeded on the same single slot');
  t.same((await rows(`select note from tx_rows where job_id = $1`, [jobId])).map((r) => r.note), ['attempt 2'],
    'the timed-out transaction was rolled back');
  t.same(await rows(`select count(*)::int as n from pg_stat_activity where datname = current_database() and state like 'idle in transaction%'`),
    [{ n: 0 }], 'no transaction is left open');
});

// ---- real worker processes ----

function parse(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function spawnWorker(t: Test, options: Record<string, unknown> = {}): TestProcess {
  const proc = spawnNode(t, [fixture], {
    env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json', LOG_LEVEL: 'info', EFFECTS_WORKER: JSON.stringify(options) },
  });
  t.teardown(() => {
    if (!t.passing()) t.comment(`worker ${proc.child.pid}, last log lines:\n${proc.lines.slice(-15).join('\n')}\n${proc.stderr().slice(-2000)}`);
  });
  return proc;
}

const started = (proc: TestProcess) => proc.waitForLine((l) => (parse(l)?.msg === 'worker started' ? true : undefined), 60_000);

async function finalStatus(jobId: string, timeoutMs: number): Promise<string> {
  let status = '';
  const ok = await eventually(async () => {
    status = (await rows<{ status: string }>('select status from ballast.jobs where id = $1', [jobId]))[0]!.status;
    return isFinalJobStatus(status);
  }, timeoutMs);
  if (!ok) throw new Error(`job ${jobId} did not finish within ${timeoutMs} ms (it is ${status})`);
  return status;
}

t.test('a worker killed between an external effect and its record: the next attempt runs it with previouslyStarted and the same key', async (t) => {
  const first = spawnWorker(t);
  await started(first);
  const { jobId } = await db.submitJob({ pipeline: 'effects.crash' });
  t.same(await first.wait(30_000), { code: null, signal: 'SIGKILL' }, 'the worker died inside the effect, after its body ran');
  t.same(await rows(`select count(*)::int as n from ballast.effects where job_id = $1`, [jobId]), [{ n: 0 }],
    'nothing was recorded');
  const second = spawnWorker(t);
  await started(second);
  t.equal(await finalStatus(jobId, 30_000), 'completed', 'another worker finished the job');
  const runs = await rows(`select attempt, previously_started, idempotency_key, intent_seen from effect_runs where job_id = $1 order by id`, [jobId]);
  const key = `ballast:${jobId}:pay:charge`;
  t.same(runs, [
    { attempt: 1, previously_started: false, idempotency_key: key, intent_seen: true },
    { attempt: 2, previously_started: true, idempotency_key: key, intent_seen: true },
  ], 'the effect ran twice (at least once), the second time told it may have happened, with the same key');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome]), [[1, 'crashed'], [2, 'succeeded']], 'attempt 1 crashed, attempt 2 succeeded');
  t.same(await rows(`select attempt_id, recorded from ballast.effect_intents where job_id = $1 order by attempt_id`, [jobId]),
    [{ attempt_id: attempts[0]!.id, recorded: true }, { attempt_id: attempts[1]!.id, recorded: true }],
    'both starts are on record; the crashed one is the evidence');
  t.same(await rows(`select attempt_id, result from ballast.effects where job_id = $1`, [jobId]),
    [{ attempt_id: attempts[1]!.id, result: { attempt: 2 } }], 'the ledger holds the result of the run that was recorded');
  t.same(await second.stop('SIGTERM', 20_000), { code: 0, signal: null }, 'the second worker stops gracefully');
});

t.test('a worker killed inside a transactional effect, then one killed after its commit: the row exists once, the effect is not repeated', async (t) => {
  const first = spawnWorker(t);
  await started(first);
  const { jobId } = await db.submitJob({ pipeline: 'effects.txcrash' });
  t.same(await first.wait(30_000), { code: null, signal: 'SIGKILL' }, 'the first worker died inside the transaction');
  t.same(await rows(`select count(*)::int as n from storm_rows where job_id = $1`, [jobId]), [{ n: 0 }],
    'its row died with its transaction');
  const second = spawnWorker(t);
  await started(second);
  t.same(await second.wait(30_000), { code: null, signal: 'SIGKILL' }, 'the second worker died after the commit, before completing the step');
  const third = spawnWorker(t);
  await started(third);
  t.equal(await finalStatus(jobId, 30_000), 'completed', 'a third worker finished the job');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome]), [[1, 'crashed'], [2, 'crashed'], [3, 'succeeded']], 'two crashes, then success');
  t.same(await rows(`select pid from storm_rows where job_id = $1`, [jobId]), [{ pid: second.child.pid }],
    "exactly one row, the second worker's");
  t.same(await rows(`select attempt_id from ballast.effects where job_id = $1`, [jobId]), [{ attempt_id: attempts[1]!.id }],
    'its ledger row committed with it');
  t.match((await db.getJob(jobId))!.result, { booked_by: second.child.pid }, 'attempt 3 returned the recorded result');
  t.same(await third.stop('SIGTERM', 20_000), { code: 0, signal: null }, 'the third worker stops gracefully');
});

t.test('SIGKILL storm: 3 workers, one killed every 2-4 s for 30 s; every job completes and its transactional row exists exactly once', async (t) => {
  const STORM_MS = 30_000;
  const options = { concurrency: 4 };
  const workers: TestProcess[] = [];
  for (let i = 0; i < 3; i++) workers.push(spawnWorker(t, options));
  await Promise.all(workers.map(started));

  const jobs: string[] = [];
  let kills = 0;
  const stormEnds = Date.now() + STORM_MS;
  const submitting = (async () => {
    while (Date.now() < stormEnds) {
      for (let i = 0; i < 4; i++) jobs.push((await db.submitJob({ pipeline: 'effects.storm' })).jobId);
      await new Promise((r) => setTimeout(r, 500));
    }
  })();
  const killed: { pid: number; at: Date }[] = [];
  while (Date.now() < stormEnds) {
    await new Promise((r) => setTimeout(r, 2000 + Math.random() * 2000));
    const i = Math.floor(Math.random() * workers.length);
    const victim = workers[i]!;
    killed.push({ pid: victim.child.pid!, at: (await rows<{ now: Date }>('select clock_timestamp() as now'))[0]!.now });
    victim.child.kill('SIGKILL');
    await victim.wait(10_000);
    kills++;
    const replacement = spawnWorker(t, options);
    workers[i] = replacement;
    void started(replacement).catch(() => {}); // it starts while the storm goes on
  }
  await submitting;
  await Promise.all(workers.map(started));
  t.comment(`${jobs.length} jobs submitted, ${kills} workers killed`);

  const statuses = new Map<string, number>();
  for (const jobId of jobs) {
    const s = await finalStatus(jobId, 180_000);
    statuses.set(s, (statuses.get(s) ?? 0) + 1);
  }
  t.same([...statuses], [['completed', jobs.length]], 'every job completed');

  // Each step a kill took from its worker ran again within 10 s of that kill.
  const reclaim = await rows<{ pid: number; step_id: string; delay_ms: number }>(
    `select k.pid, a.step_id, extract(epoch from (select min(n.started_at) from ballast.attempts n
                                                    where n.step_id = a.step_id and n.number > a.number) - k.at) * 1000 as delay_ms
       from unnest($1::int[], $2::timestamptz[]) k(pid, at)
       join ballast.workers w on w.pid = k.pid and w.started_at < k.at
       join ballast.attempts a on a.worker_id = w.id and a.outcome = 'crashed'
      where a.job_id = any($3::bigint[])`, [killed.map((k) => k.pid), killed.map((k) => k.at), jobs]);
  const slowest = Math.max(0, ...reclaim.map((r) => Number(r.delay_ms)));
  t.comment(`${reclaim.length} steps taken by the kills; the slowest ran again ${Math.round(slowest)} ms after its kill`);
  t.ok(reclaim.length > 0 && reclaim.every((r) => Number(r.delay_ms) > 0 && Number(r.delay_ms) < 10_000),
    `every step a kill took ran again within 10 s of the kill (slowest ${Math.round(slowest)} ms)`);

  const counts = await rows<{ job_id: string; n: number }>(
    `select j.id as job_id, count(r.id)::int as n from ballast.jobs j left join storm_rows r on r.job_id = j.id
      where j.pipeline = 'effects.storm' group by j.id having count(r.id) <> 1`);
  t.same(counts, [], "every job's transactional row exists exactly once");
  const [ledger] = await rows<{ n: number }>(
    `select count(*)::int as n from ballast.effects e where e.key = 'book' and e.job_id = any($1::bigint[])`, [jobs]);
  t.equal(ledger!.n, jobs.length, 'with one ledger row each');

  const [crashed] = await rows<{ n: number; after_commit: number; during: number }>(
    `select count(*)::int as n,
            count(*) filter (where s.name = 'b' and exists (select 1 from ballast.effects e where e.step_id = s.id and e.attempt_id = a.id))::int as after_commit,
            count(*) filter (where s.name = 'b' and exists (select 1 from ballast.effects e where e.step_id = s.id and e.attempt_id <> a.id and e.created_at > a.started_at))::int as during
       from ballast.attempts a join ballast.steps s on s.id = a.step_id
      where a.outcome = 'crashed' and s.job_id = any($1::bigint[])`, [jobs]);
  t.ok(crashed!.n > 0, `the storm crashed attempts (${crashed!.n})`);
  t.comment(`crashed attempts: ${crashed!.n}; of step b after its transaction committed: ${crashed!.after_commit}; ` +
    `of step b before it committed (another attempt committed later): ${crashed!.during}`);

  // External effects (step a): at least once, with a stable key; every repeat was told it may have happened.
  const external = await rows<{ job_id: string; runs: number; first_unwarned: boolean; warned_after_first: boolean; keys: number; key_ok: boolean; intents_seen: boolean }>(
    `select job_id, count(*)::int as runs,
            count(*) filter (where not previously_started) <= 1 as first_unwarned,
            bool_and(previously_started or id = (select min(id) from effect_runs f where f.job_id = r.job_id)) as warned_after_first,
            count(distinct idempotency_key)::int as keys,
            bool_and(idempotency_key = 'ballast:' || job_id || ':a:notify') as key_ok,
            bool_and(intent_seen) as intents_seen
       from effect_runs r where job_id = any($1::bigint[]) group by job_id`, [jobs]);
  t.equal(external.length, jobs.length, 'every job ran its external effect');
  t.same(external.filter((e) => !(e.first_unwarned && e.warned_after_first && e.keys === 1 && e.key_ok && e.intents_seen)), [],
    'each ran with its own stable key, its intent recorded first, and every repeat had previouslyStarted = true');
  t.comment(`external effects run more than once: ${external.filter((e) => e.runs > 1).length} of ${jobs.length}`);

  for (const w of workers) t.same(await w.stop('SIGTERM', 20_000), { code: 0, signal: null }, 'a worker stops gracefully');
});
