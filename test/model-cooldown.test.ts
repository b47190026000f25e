// A provider cooldown shared through Postgres by two worker processes (test/fixtures/model-worker.ts). The fake LLM
// answers the first request with 429 and `retry-after: 4` (seconds): record_model_call stores a cooldown for
// openai/gpt-4o-mini, and while it is in force neither process calls the provider again, although both have
// runnable model steps: each skipped call is traced (error_class cooldown) and its step retries when the window ends.
// Then, on the SQL clock (issue 13): a 429 or 529 without Retry-After sets a 2 s cooldown that the step's own retry
// waits for, and a step that meets a cooldown before calling is parked without being charged an attempt.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { ModelStore } from '../src/db/model-store.ts';
import { BallastDb, createPool } from '../src/db/api.ts';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { ProviderRegistry } from '../src/model/providers.ts';
import { startWorker } from '../src/worker/worker.ts';
import { FakeLLM, type Protocol, type Reply } from './support/fake-llm.ts';
import { eventually, freshDatabase, quietLog, spawnNode, waitForJob, type TestProcess } from './helpers.ts';

const fixture = fileURLToPath(new URL('./fixtures/model-worker.ts', import.meta.url));
const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
const { url, db, pool } = await freshDatabase(t);
const store = new ModelStore(db);

function spawnWorker(): TestProcess {
  const proc = spawnNode(t, [fixture], {
    env: {
      ...process.env, DATABASE_URL: url, OPENAI_BASE_URL: fake.baseURL, OPENAI_API_KEY: 'sk-fake', LOG_FORMAT: 'json', LOG_LEVEL: 'info',
      // One step at a time each: the second process can only have work if it claims steps itself.
      MODEL_WORKER: JSON.stringify({ concurrency: 1, pollIntervalMs: 100 }),
    },
  });
  t.teardown(() => {
    if (!t.passing()) t.comment(`worker ${proc.child.pid}, last log lines:\n${proc.lines.slice(-15).join('\n')}\n${proc.stderr().slice(-2000)}`);
  });
  return proc;
}

async function workerId(proc: TestProcess): Promise<string> {
  return proc.waitForLine((l) => {
    try {
      const j = JSON.parse(l) as { msg?: string; worker_id?: string };
      return j.msg === 'worker started' ? String(j.worker_id) : undefined;
    } catch {
      return undefined;
    }
  }, 30_000);
}

t.test('a 429 with retry-after cools the model down for both worker processes', async (t) => {
  const procs = [spawnWorker(), spawnWorker()];
  const ids = await Promise.all(procs.map(workerId));
  t.not(ids[0], ids[1], 'two workers');

  const JOBS = 10;
  fake.script('openai', {
    status: 429, headers: { 'retry-after': '4' },
    body: { error: { message: 'Rate limit reached for gpt-4o-mini', type: 'requests', code: 'rate_limit_exceeded' } },
  });
  for (let i = 0; i <= JOBS; i++) fake.script('openai', { text: '{"score":1}', usage: { input: 20, output: 5 } });

  // The first job meets the 429 and sets the cooldown.
  const first = (await db.submitJob({ pipeline: 'cooldown.rate', input: { text: 'first' } })).jobId;
  let until = new Date(0);
  t.ok(await eventually(async () => {
    const { rows } = await pool.query(`select until from ballast.provider_cooldowns where provider = 'openai' and model = 'gpt-4o-mini'`);
    if (rows[0]) until = rows[0].until;
    return rows.length === 1;
  }, 10_000), 'the cooldown row is in Postgres');
  const { rows: [cool] } = await pool.query(`select * from ballast.provider_cooldowns where provider = 'openai' and model = 'gpt-4o-mini'`);
  t.match(cool, { reason: 'rate_limited from openai:gpt-4o-mini (HTTP 429)', hits: 1, active: true });
  const window = until.getTime() - new Date(cool.set_at).getTime();
  t.ok(window >= 3900 && window <= 4100, `the cooldown lasts the retry-after (${window} ms)`);

  // Then more jobs than two one-slot workers can run at once, during the window: the claim parks their steps (the
  // step's only model is cooling down) until the window ends, without an attempt or a call.
  const jobs: string[] = [];
  for (let i = 0; i < JOBS; i++) jobs.push((await db.submitJob({ pipeline: 'cooldown.rate', input: { text: `job ${i}` } })).jobId);
  const parkedDuringWindow = async () => (await pool.query<{ job_id: string }>(`
    select s.job_id from ballast.steps s
     where s.job_id = any($1::bigint[]) and s.status = 'retrying' and s.error ->> 'class' = 'cooldown'
       and abs(extract(epoch from s.next_run_at - $2::timestamptz)) < 0.001 and s.attempts = 0`, [jobs, until])).rows;
  let parked = 0;
  const inTime = await eventually(async () => (parked = (await parkedDuringWindow()).length) === JOBS,
    until.getTime() - Date.now() - 300);
  t.ok(inTime, `every new job's step was parked at claim until the window ends (${parked} of ${JOBS})`);
  t.ok(Date.now() < until.getTime(), 'still inside the window');
  t.equal(fake.requests.length, 1, 'the provider has received exactly one request (the 429) so far');
  const { rows: [{ n: attemptsInWindow }] } = await pool.query(
    `select count(*)::int as n from ballast.attempts where job_id = any($1::bigint[])`, [jobs]);
  t.equal(attemptsInWindow, 0, 'no attempt was opened for them');
  const { rows: audit } = await pool.query(
    `select count(*)::int as n from ballast.events where job_id = any($1::bigint[]) and type = 'step_retrying'
        and data -> 'error' ->> 'class' = 'cooldown'`, [jobs]);
  t.same(audit, [{ n: JOBS }], 'each parking is audited');

  // After the window every job completes.
  for (const id of [first, ...jobs]) t.equal((await waitForJob(db, id, undefined, 20_000)).status, 'completed', `job ${id} completed`);
  t.equal(fake.requests.length, JOBS + 2, 'one request per job after the window, plus the 429');
  t.equal(fake.pending('openai'), 0);

  const { rows: calls } = await pool.query(`select job_id, error_class, error_code, http_status, started_at from ballast.model_calls order by id`);
  const made = calls.filter((c) => c.http_status !== null);
  t.same(made.filter((c) => c.http_status === 429).map((c) => [c.job_id, c.error_code]), [[first, 'rate_limited']], 'the only 429');
  t.ok(made.filter((c) => c.http_status === 200).every((c) => c.started_at >= until), 'every other request started after the cooldown');
  t.equal(calls.filter((c) => c.error_class === 'cooldown').length, 0, 'no call had to be skipped: the parked steps were not claimed');
  const firstCalls = await store.getModelCalls(first);
  t.same(firstCalls.map((c) => c.error_code), ['rate_limited', null], 'the first job: the 429, then its retry');

  const { rows: attempts } = await pool.query(
    `select job_id, count(*)::int as n, bool_and(outcome = 'succeeded') as ok from ballast.attempts
      where job_id = any($1::bigint[]) group by job_id`, [jobs]);
  t.ok(attempts.length === JOBS && attempts.every((a) => a.n === 1 && a.ok), 'each new job ran once, uncharged by the cooldown');

  for (const p of procs) t.match(await p.stop('SIGTERM', 15_000), { code: 0 }, 'the worker stops cleanly');
});

// The SQL clock for a whole worker: every connection of its pool sets `ballast.now` to `clock` when it is checked
// out (the query is queued on the connection before the caller's), so the database's time stands still until the
// test moves it. The worker's wake-ups (graphile-worker, on the real clock) never fall due at that time; its poll
// claims the retries the moved clock made due. No reaper and no watchdog: both would judge leases by another clock.
t.test('429/529 without Retry-After, on the SQL clock: the retry waits for the cooldown; a step meeting it uses its fallback at once', async (t) => {
  const edge = await new FakeLLM().start();
  t.teardown(() => edge.close());
  const d = await freshDatabase(t);
  let clock = Date.parse('2031-03-03T10:00:00.000Z');
  const clocked = createPool(d.url, { max: 8, applicationName: 'clocked-worker' });
  clocked.on('acquire', (client) => {
    client.query(`select set_config('ballast.now', $1, false)`, [new Date(clock).toISOString()]).catch(() => {});
  });
  const cdb = new BallastDb(clocked);
  const providers = new ProviderRegistry([
    { name: 'openai', kind: 'openai', baseURL: edge.baseURL, apiKey: 'sk-edge' },
    { name: 'anthropic', kind: 'anthropic', baseURL: edge.baseURL, apiKey: 'sk-ant-edge' },
  ]);
  const Score = z.object({ score: z.number() });
  const ask = prompt({ name: 'edge.score', version: 1, user: 'Score: {{input.text}}' });
  const cases: { protocol: Protocol; status: number; code: string; model: string; spare: string; refusal: Reply }[] = [
    { protocol: 'openai', status: 429, code: 'rate_limited', model: 'openai:edge-429', spare: 'anthropic:edge-spare',
      refusal: { status: 429, body: { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } } } },
    { protocol: 'anthropic', status: 529, code: 'overloaded', model: 'anthropic:edge-529', spare: 'openai:edge-spare',
      refusal: { status: 529, body: { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } } } },
  ];
  // Per case: `retried` may retry once (its attempt after the refusal is its last), `parked` may not retry at all.
  // Each has a fallback that is not cooling down, so the claim does not park them: the ladder meets the cooldown and,
  // having spent nothing, moves to the fallback at once (a step whose models all cool down is parked by the claim,
  // without an attempt: test/model-budget.test.ts and the claim gate of 0006_execution).
  const pipelines = cases.map((c) => {
    const step = (name: string, maxAttempts: number) => pipeline({ name, version: 1, input: z.object({ text: z.string() }) })
      .modelStep('score', { prompt: ask, model: c.model, fallbacks: [c.spare], output: Score, retry: { maxAttempts, baseDelayMs: 0 }, callTimeoutMs: 5000 });
    return { retried: step(`edge.retried.${c.status}`, 2), parked: step(`edge.parked.${c.status}`, 1) };
  });
  const worker = await startWorker({
    pool: clocked, pipelines: pipelines.flatMap((p) => [p.retried, p.parked]), concurrency: 2, pollIntervalMs: 100,
    reaper: false, watchdog: false, providers, log: quietLog,
  });
  // Stopped before its pool is ended.
  t.teardown(() => worker.stop().finally(() => clocked.end()));

  const stepOf = async (jobId: string) => (await d.pool.query(`select * from ballast.steps where job_id = $1`, [jobId])).rows[0];
  const attemptsOf = async (jobId: string) => (await d.pool.query(
    `select outcome, error_class, error_code from ballast.attempts where job_id = $1 order by id`, [jobId])).rows;
  const callsOf = async (jobId: string) => (await d.pool.query(
    `select error_class, error_code, http_status, cost_usd from ballast.model_calls where job_id = $1 order by id`, [jobId])).rows;

  for (const [i, c] of cases.entries()) {
    await t.test(`HTTP ${c.status} (${c.protocol})`, async (t) => {
      const modelId = c.model.slice(c.model.indexOf(':') + 1);
      const requestsTo = (id: string) => edge.requests.filter((r) => r.body.model === id).length;
      edge.script(c.protocol, c.refusal, { text: '{"score":1}' });
      const t0 = clock;
      const spare0 = requestsTo('edge-spare');

      // The refusal, on the step's first attempt: a 2 s cooldown by the database's clock, and a retry after it.
      const retried = (await cdb.submitJob({ pipeline: pipelines[i]!.retried.name, input: { text: 'a' } })).jobId;
      t.ok(await eventually(async () => (await stepOf(retried))?.status === 'retrying', 15_000), 'the step is retrying');
      const { rows: [cool] } = await d.pool.query(`select until, reason from ballast.provider_cooldowns where model = $1`, [modelId]);
      t.equal(cool.until.getTime(), t0 + 2000, 'no Retry-After: a 2 s cooldown from the refusal');
      const s1 = await stepOf(retried);
      const due = s1.next_run_at.getTime();
      t.ok(due >= t0 + 2000 && due < t0 + 2500, `the retry is due after the cooldown ends, plus at most 500 ms of jitter (+${due - t0} ms)`);
      t.match(s1, { attempts: 1, attempt_offset: 0, error: { class: 'transport', code: c.code } });

      // A step that meets the cooldown before calling, on its only attempt: its fallback answers at once.
      edge.script(c.protocol === 'openai' ? 'anthropic' : 'openai', { text: '{"score":3}' });
      const parked = (await cdb.submitJob({ pipeline: pipelines[i]!.parked.name, input: { text: 'b' } })).jobId;
      t.equal((await waitForJob(d.db, parked, undefined, 20_000)).status, 'completed', 'completed on its fallback');
      t.same(await attemptsOf(parked), [{ outcome: 'succeeded', error_class: null, error_code: null }], 'on its first and only attempt');
      t.same((await callsOf(parked)).map((x) => [x.error_class, x.http_status]), [['cooldown', null], [null, 200]],
        'the skipped call is recorded, then the fallback\'s call');
      t.equal((await callsOf(parked))[0].cost_usd, null, 'the skipped call cost nothing');
      t.equal(requestsTo(modelId), 1, 'the cooling provider has seen only the refused request');
      t.equal(requestsTo('edge-spare') - spare0, 1, 'the fallback answered');

      // The provider is ready once the cooldown is over: both steps complete on their own model.
      clock = t0 + 3000;
      t.equal((await waitForJob(d.db, retried, undefined, 20_000)).status, 'completed', `job ${retried} completed`);
      t.same(await attemptsOf(retried), [{ outcome: 'failed', error_class: 'transport', error_code: c.code }, { outcome: 'succeeded', error_class: null, error_code: null }]);
      t.same((await callsOf(retried)).map((x) => [x.error_code, x.http_status]), [[c.code, c.status], [null, 200]]);
      t.equal(requestsTo(modelId), 2, 'the refusal, then the retry after the cooldown');
      t.equal(requestsTo('edge-spare') - spare0, 1, 'the retried step needed no fallback');
      t.equal(edge.pending('openai') + edge.pending('anthropic'), 0, 'every scripted answer was used');
      clock += 1000;
    });
  }
});
