// A provider cooldown shared through Postgres by two worker processes (test/fixtures/model-worker.ts). The fake LLM
// answers the first request with 429 and `retry-after: 4` (seconds): record_model_call stores a cooldown for
// openai/gpt-4o-mini, and while it is in force neither process calls the provider again, although both have
// runnable model steps: each skipped call is traced (error_class cooldown) and its step retries when the window ends.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { ModelStore } from '../src/db/model-store.ts';
import { FakeLLM } from './support/fake-llm.ts';
import { eventually, freshDatabase, spawnNode, waitForJob, type TestProcess } from './helpers.ts';

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
