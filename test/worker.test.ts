// Real in-process workers (src/worker/worker.ts) against a real Postgres: the demo DAG, how handler errors are classified
// and retried, contracts on input and output, priority order and progress.
import t from 'tap';
import pg from 'pg';
import { listenEvents } from '../src/db/events-listener.ts';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { PermanentError, RetryableError } from '../src/errors.ts';
import { wordstats } from '../tasks/demo.ts';
import { eventually, freshDatabase, testWorker, waitForJob } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);

const empty = z.object({});

const flaky = pipeline({ name: 'w.flaky', version: 1, input: empty })
  .step('work', { output: z.object({ attempt: z.number() }), retry: { maxAttempts: 5, baseDelayMs: 10, maxDelayMs: 20 } },
    ({ attempt }) => {
      if (attempt === 1) throw new Error('boom 1');
      if (attempt === 2) throw new TypeError('boom 2');
      return { attempt };
    });

let permanentCalls = 0;
const permanent = pipeline({ name: 'w.permanent', version: 1, input: empty })
  .step('first', { output: empty, retry: { maxAttempts: 5, baseDelayMs: 10, maxDelayMs: 20 } }, () => {
    permanentCalls++;
    throw new PermanentError('account 7 is closed', { code: 'E_CLOSED' });
  })
  .step('second', { output: empty, after: ['first'] }, () => ({}))
  .step('side', { output: z.object({ ran: z.boolean() }) }, () => ({ ran: true }));

const rateLimited = pipeline({ name: 'w.ratelimited', version: 1, input: empty })
  // The backoff alone would wait up to a minute: only the Retry-After hint makes the retry come quickly.
  .step('call', { output: z.object({ attempt: z.number() }), retry: { maxAttempts: 3, baseDelayMs: 60_000, maxDelayMs: 60_000 } },
    ({ attempt }) => {
      if (attempt === 1) throw new RetryableError('429 Too Many Requests', { code: '429', retryAfterMs: 400 });
      return { attempt };
    });

let contractCalls = 0;
const badOutput = pipeline({ name: 'w.contract', version: 1, input: empty })
  .step('shape', { output: z.object({ n: z.number() }), retry: { maxAttempts: 5, baseDelayMs: 10, maxDelayMs: 20 } }, () => {
    contractCalls++;
    return { n: 'seven' } as unknown as { n: number };
  });

let evenCalls = 0;
const even = pipeline({
  name: 'w.even',
  version: 1,
  input: z.object({ n: z.number() }).refine((v) => v.n % 2 === 0, { message: 'n must be even', path: ['n'] }),
}).step('half', { output: z.object({ half: z.number() }), retry: { maxAttempts: 5, baseDelayMs: 10, maxDelayMs: 20 } },
  ({ input }) => {
    evenCalls++;
    return { half: input.n / 2 };
  });

const progress = pipeline({ name: 'w.progress', version: 1, input: empty })
  .step('work', { output: empty }, async (ctx) => {
    await ctx.progress({ pct: 50 });
    return {};
  });

await testWorker(t, url, { pipelines: [wordstats, flaky, permanent, rateLimited, badOutput, even, progress], concurrency: 4 });

const stepsByName = async (jobId: string) => Object.fromEntries((await db.getSteps(jobId)).map((s) => [s.name, s]));
const time = (d: Date | null | undefined) => {
  if (!d) throw new Error('expected a timestamp');
  return d.getTime();
};

t.test('the demo pipeline completes in DAG order and its result is the report', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'demo.wordstats', input: { text: 'b a b c a b', top: 2 } });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  const s = await stepsByName(jobId);
  t.same(Object.values(s).map((x) => `${x.name}:${x.status}:${x.attempts}`).sort(),
    ['count:succeeded:1', 'normalize:succeeded:1', 'rank:succeeded:1', 'report:succeeded:1']);
  for (const name of ['count', 'rank']) {
    t.ok(time(s[name]!.started_at) >= time(s.normalize!.finished_at), `${name} started after normalize finished`);
  }
  t.ok(time(s.report!.started_at) >= time(s.count!.finished_at), 'report started after count finished');
  t.ok(time(s.report!.started_at) >= time(s.rank!.finished_at), 'report started after rank finished');
  t.same(job.result, s.report!.output, 'the job result is the report step\'s output');
  t.same(job.result, { summary: '6 words, 3 distinct; most frequent: b, a', words: 6, top: ['b', 'a'] });
  t.same(s.count!.output, { words: 6, unique: 3 });
});

t.test('a plain Error is retried, and every attempt keeps its error', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'w.flaky' });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.same(job.result, { attempt: 3 }, 'succeeded on attempt 3');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome, a.error_class, a.error_code, a.error_message, a.error_retryable]), [
    [1, 'failed', 'error', 'Error', 'boom 1', true],
    [2, 'failed', 'error', 'TypeError', 'boom 2', true],
    [3, 'succeeded', null, null, null, null],
  ]);
  const step = (await db.getSteps(jobId))[0]!;
  t.match(step, { status: 'succeeded', attempts: 3, error: null });
});

t.test('PermanentError fails at once and skips dependants; independent steps still run', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'w.permanent' });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'failed');
  t.match(job.error, { step: 'first', class: 'permanent', code: 'E_CLOSED', message: 'account 7 is closed', retryable: false });
  const s = await stepsByName(jobId);
  t.match(s.first, { status: 'failed', attempts: 1, max_attempts: 5 });
  t.equal(s.second!.status, 'skipped');
  t.match(s.side, { status: 'succeeded', output: { ran: true } });
  t.equal(permanentCalls, 1, 'the handler ran once');
  const attempts = (await db.getAttempts(jobId)).filter((a) => a.step_id === s.first!.id);
  t.same(attempts.map((a) => [a.outcome, a.error_class, a.error_code, a.error_message, a.error_retryable]),
    [['failed', 'permanent', 'E_CLOSED', 'account 7 is closed', false]]);
});

t.test('RetryableError with retryAfterMs is honoured', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'w.ratelimited' });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.same(job.result, { attempt: 2 });
  const attempts = await db.getAttempts(jobId);
  t.match(attempts, [
    { number: 1, outcome: 'failed', error_class: 'retryable', error_code: '429', error_message: '429 Too Many Requests', error_retryable: true },
    { number: 2, outcome: 'succeeded' },
  ]);
  const { rows } = await pool.query<{ delay_ms: string }>(`
    select extract(epoch from ((e.data ->> 'next_run_at')::timestamptz - a.finished_at)) * 1000 as delay_ms
      from ballast.events e join ballast.attempts a on a.step_id = e.step_id and a.number = 1
     where e.job_id = $1 and e.type = 'step_retrying'`, [jobId]);
  t.equal(rows.length, 1, 'one retry was scheduled');
  // Real clock: the failure and the scheduling read it microseconds apart. The backoff alone would land anywhere in
  // [0, 60000) ms, so a 20 ms window after 400 ms is the hint's doing.
  const delay = Number(rows[0]?.delay_ms);
  t.ok(delay >= 400 && delay < 670, `400 ms after the failure plus a jitter under 250 ms, not the step's backoff (${delay} ms)`);
  t.ok(time(attempts[1]!.started_at) - time(attempts[0]!.finished_at) >= 400, 'attempt 2 did not start early');
});

t.test('output that breaks the step contract fails permanently (output_contract)', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'w.contract' });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'failed');
  t.match(job.error, { step: 'shape', class: 'output_contract', retryable: false });
  const attempts = await db.getAttempts(jobId);
  t.equal(attempts.length, 1, 'not retried');
  t.match(attempts[0], { outcome: 'failed', error_class: 'output_contract', error_retryable: false, error_message: /n/ });
  t.equal(contractCalls, 1);
  t.equal((await db.getSteps(jobId))[0]!.output, null, 'the bad output is not stored as the step output');
});

t.test('input that passes the JSON Schema but fails a zod refinement fails the job (invalid_input)', async (t) => {
  const odd = await db.submitJob({ pipeline: 'w.even', input: { n: 3 } });
  t.equal(odd.created, true, 'Postgres accepted the input (the refinement is not in the JSON Schema)');
  const job = await waitForJob(db, odd.jobId);
  t.equal(job.status, 'failed');
  t.match(job.error, { step: 'half', class: 'invalid_input', retryable: false, message: /n must be even/ });
  const attempts = await db.getAttempts(odd.jobId);
  t.equal(attempts.length, 1, 'not retried');
  t.match(attempts[0], { error_class: 'invalid_input', error_retryable: false });
  t.equal(evenCalls, 0, 'the handler never ran');

  const ok = await db.submitJob({ pipeline: 'w.even', input: { n: 4 } });
  t.same((await waitForJob(db, ok.jobId)).result, { half: 2 }, 'valid input still runs');
  t.equal(evenCalls, 1);
});

t.test('ctx.progress stores the step progress and notifies it (ids only; the listener reads the value)', async (t) => {
  const raw = new pg.Client({ connectionString: url });
  await raw.connect();
  t.teardown(() => raw.end());
  const payloads: string[] = [];
  raw.on('notification', (msg) => payloads.push(msg.payload ?? ''));
  await raw.query('listen ballast_events');
  const seen: unknown[] = [];
  const listener = await listenEvents(url, (e) => {
    if (e.type === 'step_progress') seen.push(e.progress);
  });
  t.teardown(() => listener.close());
  const { jobId } = await db.submitJob({ pipeline: 'w.progress' });
  t.equal((await waitForJob(db, jobId)).status, 'completed');
  t.same((await db.getSteps(jobId))[0]!.progress, { pct: 50 });
  t.ok(await eventually(async () => seen.length > 0, 5000), 'the progress report arrived');
  t.same(seen, [{ pct: 50 }], 'one step_progress notification, resolved to the stored value');
  t.notOk(payloads.some((p) => p.includes('pct')), 'no payload carries the progress value itself');
});

t.test('steps are claimed in priority order (lower first)', async (t) => {
  const prio = pipeline({ name: 'w.priority', version: 1, input: z.object({ p: z.number() }) })
    .step('work', { output: empty }, () => ({}));
  await db.registerPipeline(prio.name, prio.version, prio.definition(), prio.inputJsonSchema());
  const priorities = [5, -5, 0, 10, -10];
  const jobs: string[] = [];
  for (const p of priorities) jobs.push((await db.submitJob({ pipeline: 'w.priority', input: { p }, priority: p })).jobId);
  const w = await testWorker(t, url, { pipelines: [prio], concurrency: 1 });
  for (const id of jobs) t.equal((await waitForJob(db, id)).status, 'completed');
  await w.stop();
  const { rows } = await pool.query<{ priority: number }>(`
    select j.priority from ballast.attempts a join ballast.jobs j on j.id = a.job_id
     where j.pipeline = 'w.priority' order by a.id`);
  t.same(rows.map((r) => r.priority), [-10, -5, 0, 5, 10]);
});

t.test('a forged cancellation notice aborts nothing: the worker checks the database first', async (t) => {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let aborted = false;
  const slow = pipeline({ name: 'w.forged', version: 1, input: empty })
    .step('wait', { output: z.object({ done: z.boolean() }) }, async ({ signal }) => {
      signal.addEventListener('abort', () => (aborted = true));
      await released;
      return { done: true };
    });
  const w = await testWorker(t, url, { pipelines: [slow], concurrency: 2 });
  const { jobId } = await db.submitJob({ pipeline: 'w.forged' });
  t.ok(await eventually(async () => (await db.getAttempts(jobId)).some((a) => a.outcome === 'running'), 10_000), 'the step runs');
  const [attempt] = await db.getAttempts(jobId);
  // Any login can send this: the attempt id and the worker id (visible in application_name) are easy to learn.
  const forger = new pg.Client({ connectionString: url });
  await forger.connect();
  await forger.query(`select pg_notify('ballast_cancel', $1)`,
    [JSON.stringify({ job_id: Number(jobId), attempts: [{ attempt_id: Number(attempt!.id), worker_id: attempt!.worker_id }] })]);
  await forger.query(`select pg_notify('ballast_cancel', 'not json')`);
  await forger.end();
  await new Promise((r) => setTimeout(r, 500));
  t.equal(aborted, false, 'the handler was not aborted');
  release();
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.same((await db.getAttempts(jobId)).map((a) => [a.number, a.outcome]), [[1, 'succeeded']], 'one attempt, not charged a crash');
  await w.stop();
});
