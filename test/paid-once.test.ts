// Paid once (issue 16, item 6; migrations/0042_paid_once.sql, src/model/reuse.ts): a model answer already paid for is
// not bought again. The scripted fake LLM counts the requests it gets; Postgres says which calls were reused, why
// (retry, replay, cache) and what that saved. A crash after a paid call (a real worker process SIGKILLed while its
// quality check holds, the call already stored), code after the call that throws, replays with and without fresh
// calls, the per-pipeline cache within and past its TTL (the controllable clock), and never across tenants.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { ModelStore } from '../src/db/model-store.ts';
import { requestKey } from '../src/model/reuse.ts';
import { ballastMetrics } from '../src/metrics.ts';
import { FakeLLM } from './support/fake-llm.ts';
import { data, testServer, token } from './support/graphql.ts';
import { eventually, freshDatabase, pgError, spawnNode, testWorker, waitForJob, type TestProcess } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const store = new ModelStore(db);
const fixture = fileURLToPath(new URL('./fixtures/paid-once-worker.ts', import.meta.url));

const Rating = z.object({ score: z.number() });
const GOOD = '{"score":0.8}';
const USAGE = { input: 1000, output: 200 }; // 1000 x 0.15 + 200 x 0.60 per 1M tokens: 0.00027 USD
const rate = prompt({ name: 'paid.rate', version: 1, system: 'You rate reviews.', user: 'Rate: {{input.text}}' });

/** The quality score function of `throwsOnce`: throws the first time it runs (code after the paid call failing). */
let scoreRuns = 0;
let reaskScoreRuns = 0;
const pipelines = {
  throwsOnce: pipeline({ name: 'paid.throws', version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', {
      prompt: rate, model: 'openai:gpt-4o-mini', output: Rating, callTimeoutMs: 3000, retry: { maxAttempts: 3, baseDelayMs: 0 },
      quality: { score: (o) => { if (scoreRuns++ === 0) throw new Error('the scoring service is down'); return o.score; } },
    }),
  // The first answer violates the contract, the re-ask is valid, then the score function throws once.
  reaskThrows: pipeline({ name: 'paid.reask-throws', version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', {
      prompt: rate, model: 'openai:gpt-4o-mini', output: Rating, callTimeoutMs: 3000, reasks: 1, retry: { maxAttempts: 3, baseDelayMs: 0 },
      quality: { score: (o) => { if (reaskScoreRuns++ === 0) throw new Error('the scoring service is down'); return o.score; } },
    }),
  replayed: pipeline({ name: 'paid.replayed', version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', { prompt: rate, model: 'openai:gpt-4o-mini', output: Rating, callTimeoutMs: 3000 }),
  cached: pipeline({ name: 'paid.cached', version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', { prompt: rate, model: 'openai:gpt-4o-mini', output: Rating, callTimeoutMs: 3000 }),
  uncached: pipeline({ name: 'paid.uncached', version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', { prompt: rate, model: 'openai:gpt-4o-mini', output: Rating, callTimeoutMs: 3000 }),
  transport: pipeline({ name: 'paid.transport', version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', { prompt: rate, model: 'openai:gpt-4o-mini', output: Rating, callTimeoutMs: 3000, retry: { maxAttempts: 2, baseDelayMs: 0 } }),
};
await testWorker(t, url, { pipelines: Object.values(pipelines), concurrency: 2 });

async function run(pipelineName: string, text: string, tenantId = 'default') {
  const { jobId } = await db.submitJob({ pipeline: pipelineName, input: { text }, tenantId });
  const job = await waitForJob(db, jobId);
  return { job, jobId, attempts: await db.getAttempts(jobId), calls: await store.getModelCalls(jobId) };
}

const requests = () => fake.requests.length;
/** The SQLSTATE of a ModelStore error (a BallastError keeps it). */
const sqlstate = (e: unknown) => (e as { sqlstate?: string }).sqlstate;

t.test('the request key: the same request gives the same key; anything that changes the answer changes it', async (t) => {
  const base = { model: 'openai:gpt-4o-mini', system: 's', messages: [{ role: 'user' as const, content: 'u' }], schemaJson: '{}', temperature: 0, maxOutputTokens: 100 };
  const k = requestKey(base);
  t.match(k, /^[0-9a-f]{64}$/);
  t.equal(requestKey({ ...base, messages: [{ role: 'user', content: 'u' }] }), k, 'equal requests, equal keys');
  for (const [what, change] of Object.entries({
    model: { model: 'openai:gpt-4o' }, system: { system: 't' }, messages: { messages: [{ role: 'user' as const, content: 'v' }] },
    schema: { schemaJson: '{"type":"object"}' }, temperature: { temperature: 0.5 }, maxOutputTokens: { maxOutputTokens: 101 },
    structured: { schemaJson: null },
  })) t.not(requestKey({ ...base, ...change }), k, `${what} changes the key`);
});

t.test('code after the paid call throws: the retry reuses the stored answer, the provider is called once', async (t) => {
  fake.script('openai', { text: GOOD, usage: USAGE });
  const before = requests();
  const { job, attempts, calls } = await run(pipelines.throwsOnce.name, 'the soup was cold');
  t.equal(job.status, 'completed');
  t.same(job.result, { score: 0.8 });
  t.equal(requests() - before, 1, 'one request reached the provider');
  t.same(attempts.map((a) => a.outcome).slice(-1), ['succeeded'], 'the second attempt succeeded');
  t.equal(attempts.length, 2, 'two attempts');
  t.equal(attempts[0]!.error_class, 'error', 'attempt 1 failed on the score function');
  t.match(attempts[0]!.error_message, /scoring service is down/);
  t.equal(attempts[1]!.contract_outcome, 'valid_first_try', 'the reused answer is checked as usual: valid on the first try');
  t.equal(calls.length, 2);
  const [paid, reused] = calls;
  t.match(paid, { attempt_id: attempts[0]!.id, reused_from: null, reuse_kind: null, output_complete: true, input_tokens: 1000, error_class: null, score: null });
  t.equal(Number(paid!.cost_usd), 0.00027);
  t.match(reused, { attempt_id: attempts[1]!.id, reused_from: paid!.id, reuse_kind: 'retry', request_key: paid!.request_key,
    raw_output: GOOD, input_tokens: null, output_tokens: null, usage_missing: false, error_class: null, score: '0.80000' });
  t.equal(Number(reused!.cost_usd), 0, 'the reuse costs nothing');
  t.equal(Number(reused!.cost_saved_usd), 0.00027, 'and saves what the original cost');
  t.equal(Number(job.cost_usd), 0.00027, 'the job paid once');
});

t.test('the whole ladder is paid once: a contract-violating answer and its re-ask are both reused on retry', async (t) => {
  fake.script('openai', { text: '{"score":"high"}', usage: USAGE }, { text: GOOD, usage: USAGE });
  const before = requests();
  const { job, attempts, calls } = await run(pipelines.reaskThrows.name, 'the bread was stale');
  t.equal(job.status, 'completed');
  t.same(job.result, { score: 0.8 });
  t.equal(requests() - before, 2, 'two requests reached the provider: the first answer and the re-ask, once each');
  t.same(attempts.map((a) => a.outcome), ['failed', 'succeeded']);
  t.equal(attempts[1]!.contract_outcome, 'repaired', 'the retry went down the same rungs: repaired by the re-ask');
  t.same(calls.map((c) => [c.attempt_id, c.rung, c.error_class, c.reuse_kind]), [
    [attempts[0]!.id, 'primary', 'schema', null], [attempts[0]!.id, 'reask', null, null],
    [attempts[1]!.id, 'primary', 'schema', 'retry'], [attempts[1]!.id, 'reask', null, 'retry'],
  ], 'the retry reused the failed answer, then the re-ask');
  t.equal(calls[2]!.reused_from, calls[0]!.id);
  t.equal(calls[3]!.reused_from, calls[1]!.id);
  t.equal(Number(job.cost_usd), 0.00054, 'the job paid for two answers, once each');
});

t.test('a worker SIGKILLed after the paid call: the next worker reuses it, the provider is called once', async (t) => {
  const spawnWorker = (hang: boolean): TestProcess => {
    const proc = spawnNode(t, [fixture], {
      env: { ...process.env, DATABASE_URL: url, OPENAI_BASE_URL: fake.baseURL, OPENAI_API_KEY: 'sk-fake', LOG_FORMAT: 'json', LOG_LEVEL: 'info',
        PAID_ONCE_HANG: hang ? '1' : '0' },
    });
    t.teardown(() => {
      if (!t.passing()) t.comment(`worker ${proc.child.pid}, last log lines:\n${proc.lines.slice(-15).join('\n')}\n${proc.stderr().slice(-2000)}`);
    });
    return proc;
  };
  const started = (p: TestProcess) => p.waitForLine((l) => (l.includes('"worker started"') ? true : undefined), 30_000);
  const victim = spawnWorker(true);
  await started(victim);
  fake.script('openai', { text: '{"score":0.9}', usage: USAGE });
  const before = requests();
  const { jobId } = await db.submitJob({ pipeline: 'paidonce.crash', input: { text: 'crash after the call' } });
  // The call is stored; the worker holds in the quality score function, before the step can complete.
  t.ok(await eventually(async () => (await store.getModelCalls(jobId)).length === 1, 20_000), 'the paid call is recorded');
  victim.child.kill('SIGKILL');
  t.same(await victim.wait(5000), { code: null, signal: 'SIGKILL' }, 'the worker died of SIGKILL');

  const survivor = spawnWorker(false);
  await started(survivor);
  const job = await waitForJob(db, jobId, undefined, 30_000);
  t.equal(job.status, 'completed');
  t.same(job.result, { score: 0.9 });
  t.equal(requests() - before, 1, 'one request reached the provider');
  const attempts = await db.getAttempts(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome]), [[1, 'crashed'], [2, 'succeeded']]);
  const calls = await store.getModelCalls(jobId);
  t.same(calls.map((c) => [c.attempt_id, c.reused_from, c.reuse_kind]), [[attempts[0]!.id, null, null], [attempts[1]!.id, calls[0]!.id, 'retry']]);
  t.equal(Number(job.cost_usd), 0.00027, 'paid once');
  await survivor.stop('SIGTERM', 15_000);
});

t.test('a failed call is not reused: after a 503 the retry calls again', async (t) => {
  fake.script('openai', { status: 503, body: { error: { message: 'overloaded' } } }, { text: GOOD, usage: USAGE });
  const before = requests();
  const { job, calls } = await run(pipelines.transport.name, 'a transport failure');
  t.equal(job.status, 'completed');
  t.equal(requests() - before, 2);
  t.same(calls.map((c) => [c.error_class, c.reused_from]), [['transport', null], [null, null]]);
});

t.test('replay reuses the stored answers by default; fresh calls call the provider again', async (t) => {
  fake.script('openai', { text: GOOD, usage: USAGE });
  const before = requests();
  const { jobId, calls } = await run(pipelines.replayed.name, 'replay me');
  t.equal(calls.length, 1);
  const stepId = calls[0]!.step_id;

  await db.replayStep(stepId, { force: true, reason: 'downstream bug fixed' });
  let job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.equal(requests() - before, 1, 'the default replay called no provider');
  let all = await store.getModelCalls(jobId);
  t.same(all.map((c) => [c.reused_from, c.reuse_kind]), [[null, null], [calls[0]!.id, 'replay']]);

  fake.script('openai', { text: '{"score":0.4}', usage: USAGE });
  await db.replayStep(stepId, { force: true, reason: 'the model was updated', freshCalls: true });
  job = await waitForJob(db, jobId);
  t.equal(requests() - before, 2, 'the replay with fresh calls called the provider');
  t.same(job.result, { score: 0.4 }, 'with the new answer');
  all = await store.getModelCalls(jobId);
  t.same(all.map((c) => [c.reused_from, c.reuse_kind]), [[null, null], [calls[0]!.id, 'replay'], [null, null]]);
  const { rows: [ev] } = await pool.query(`select data from ballast.events where job_id = $1 and type = 'step_replayed' order by id desc limit 1`, [jobId]);
  t.equal(ev.data.fresh_calls, true, 'the event says so');

  await db.replayJob(jobId, { fromStep: 'rate' });
  job = await waitForJob(db, jobId);
  t.equal(requests() - before, 2, 'a later default replay reuses the fresh answer, not the old one');
  t.same(job.result, { score: 0.4 });
  all = await store.getModelCalls(jobId);
  t.same(all.at(-1)!.reused_from, all[2]!.id);
});

t.test('fresh calls from GraphQL (replayStep freshCalls) and the CLI (replay --fresh-calls)', async (t) => {
  fake.script('openai', { text: GOOD, usage: USAGE });
  const before = requests();
  const { jobId, calls } = await run(pipelines.replayed.name, 'replay from the surfaces');
  const server = await testServer(t, url);
  const operator = await token('operator');
  const replay = `mutation ($id: BigInt!, $fresh: Boolean) { replayStep(input: { stepId: $id, force: true, freshCalls: $fresh }) { jobStatus } }`;
  await data(server, replay, { id: calls[0]!.step_id, fresh: false }, operator);
  await waitForJob(db, jobId);
  t.equal(requests() - before, 1, 'GraphQL replay without freshCalls: reused');
  fake.script('openai', { text: GOOD, usage: USAGE });
  await data(server, replay, { id: calls[0]!.step_id, fresh: true }, operator);
  await waitForJob(db, jobId);
  t.equal(requests() - before, 2, 'GraphQL replay with freshCalls: called');

  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json' };
  delete env.TEST_DATABASE_URL;
  const cli = async (...args: string[]) => {
    const proc = spawnNode(t, ['src/cli.ts', 'replay', jobId, '--step', 'rate', ...args], { env });
    t.same(await proc.wait(30_000), { code: 0, signal: null }, `ballast replay ${args.join(' ')} exits 0`);
    await waitForJob(db, jobId);
  };
  await cli();
  t.equal(requests() - before, 2, 'ballast replay: reused');
  fake.script('openai', { text: GOOD, usage: USAGE });
  await cli('--fresh-calls');
  t.equal(requests() - before, 3, 'ballast replay --fresh-calls: called');
  const all = await store.getModelCalls(jobId);
  t.same(all.map((c) => c.reuse_kind), [null, 'replay', null, 'replay', null]);
});

t.test('the per-pipeline cache: reused across jobs of a tenant within its TTL, never across tenants', async (t) => {
  t.equal(sqlstate(await pgError(() => store.setModelCache('paid.nope', '1 hour'))), 'BA004', 'an unknown pipeline');
  const bad = await pgError(() => store.setModelCache(pipelines.cached.name, '0 seconds'));
  t.equal(sqlstate(bad), 'BA002');
  t.match(bad.message, /ttl/);
  await store.setModelCache(pipelines.cached.name, '1 hour', 'test');
  const { rows: settings } = await pool.query(`select pipeline, ttl::text, set_by from ballast.model_cache_settings`);
  t.same(settings, [{ pipeline: 'paid.cached', ttl: '01:00:00', set_by: 'test' }]);

  fake.script('openai', { text: GOOD, usage: USAGE });
  const before = requests();
  const a = await run(pipelines.cached.name, 'cache me', 'acme');
  const b = await run(pipelines.cached.name, 'cache me', 'acme');
  t.equal(requests() - before, 1, 'the second job of the tenant reused the first one\'s answer');
  t.same(b.job.result, { score: 0.8 });
  t.match(b.calls, [{ reused_from: a.calls[0]!.id, reuse_kind: 'cache' }]);
  t.equal(b.attempts[0]!.contract_outcome, 'valid_first_try');

  fake.script('openai', { text: GOOD, usage: USAGE }, { text: GOOD, usage: USAGE }, { text: GOOD, usage: USAGE });
  const other = await run(pipelines.cached.name, 'cache me', 'globex');
  t.match(other.calls, [{ reused_from: null }], 'another tenant never gets it');
  const uncached = await run(pipelines.uncached.name, 'cache me', 'acme');
  t.match(uncached.calls, [{ reused_from: null }], 'a pipeline without the cache calls');
  const differs = await run(pipelines.cached.name, 'another text', 'acme');
  t.match(differs.calls, [{ reused_from: null }], 'another request calls');
  t.equal(requests() - before, 4);

  // Past the TTL by the controllable clock: the lookup the worker makes finds nothing.
  const c = await pool.connect();
  try {
    const key = a.calls[0]!.request_key;
    const find = async () => (await c.query(`select call_id::text, reuse_kind from ballast.reusable_model_call($1, $2)`, [b.attempts[0]!.id, key])).rows;
    t.same(await find(), [{ call_id: a.calls[0]!.id, reuse_kind: 'cache' }], 'within the TTL');
    await c.query(`select set_config('ballast.now', $1, false)`, [new Date(Date.now() + 59 * 60_000).toISOString()]);
    t.equal((await find()).length, 1, '59 minutes later: still');
    await c.query(`select set_config('ballast.now', $1, false)`, [new Date(Date.now() + 61 * 60_000).toISOString()]);
    t.same(await find(), [], '61 minutes later: expired');
    await c.query('reset ballast.now');
  } finally {
    c.release();
  }
  t.equal(await store.stopModelCache(pipelines.cached.name), true);
  fake.script('openai', { text: GOOD, usage: USAGE });
  const off = await run(pipelines.cached.name, 'cache me', 'acme');
  t.match(off.calls, [{ reused_from: null }], 'cache off: called');
});

t.test('what was saved: ballast.model_call_savings and the metrics', async (t) => {
  const { rows } = await pool.query(`select pipeline, tenant_id, provider, model, reuse_kind, reused_calls::int, cost_saved_usd::float8
    from ballast.model_call_savings order by pipeline, reuse_kind`);
  t.same(rows, [
    { pipeline: 'paid.cached', tenant_id: 'acme', provider: 'openai', model: 'gpt-4o-mini', reuse_kind: 'cache', reused_calls: 1, cost_saved_usd: 0.00027 },
    { pipeline: 'paid.reask-throws', tenant_id: 'default', provider: 'openai', model: 'gpt-4o-mini', reuse_kind: 'retry', reused_calls: 2, cost_saved_usd: 0.00054 },
    { pipeline: 'paid.replayed', tenant_id: 'default', provider: 'openai', model: 'gpt-4o-mini', reuse_kind: 'replay', reused_calls: 4, cost_saved_usd: 0.00108 },
    { pipeline: 'paid.throws', tenant_id: 'default', provider: 'openai', model: 'gpt-4o-mini', reuse_kind: 'retry', reused_calls: 1, cost_saved_usd: 0.00027 },
    { pipeline: 'paidonce.crash', tenant_id: 'default', provider: 'openai', model: 'gpt-4o-mini', reuse_kind: 'retry', reused_calls: 1, cost_saved_usd: 0.00027 },
  ]);
  // A client reads its own tenant's savings only (the view runs with the caller's rights: row-level security).
  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query(`select set_config('role', 'ballast_client', true), set_config('ballast.tenant_id', 'acme', true)`);
    const { rows: mine } = await c.query(`select pipeline, tenant_id, reused_calls::int from ballast.model_call_savings`);
    t.same(mine, [{ pipeline: 'paid.cached', tenant_id: 'acme', reused_calls: 1 }], 'tenant acme sees its own savings only');
  } finally {
    await c.query('rollback');
    c.release();
  }
  // This process's worker made the reuses of the first four (the SIGKILL test's ran in the fixture's process).
  const saved = await ballastMetrics.registry.getSingleMetric('ballast_model_cost_saved_usd_total')!.get();
  const byKind = Object.fromEntries(saved.values.map((v) => [v.labels.kind, Number(v.value.toFixed(8))]));
  t.same(byKind, { retry: 0.00081, replay: 0.00108, cache: 0.00027 });
  const reused = await ballastMetrics.registry.getSingleMetric('ballast_model_calls_reused_total')!.get();
  t.equal(reused.values.reduce((n, v) => n + v.value, 0), 8);
});

t.test('record_model_call refuses a reuse of another tenant\'s answer', async (t) => {
  const { rows: [other] } = await pool.query(`select id::text, request_key from ballast.model_calls where tenant_id = 'globex' limit 1`);
  const { rows: [mine] } = await pool.query(`select attempt_id::text from ballast.model_calls where tenant_id = 'acme' limit 1`);
  const now = new Date().toISOString();
  const err = await pgError(() => store.recordModelCall(mine.attempt_id, null, {
    rung: 'primary', model_index: 0, provider: 'openai', provider_kind: null, requested_model: 'gpt-4o-mini', returned_model: null,
    prompt_name: null, prompt_version: null, prompt_hash: null, parameters: null, started_at: now, first_token_at: null, ended_at: now,
    latency_ms: 0, finish_reason_raw: null, finish_reason: null, input_tokens: null, output_tokens: null, cached_input_tokens: null,
    cache_write_tokens: null, reasoning_tokens: null, error_class: null, error_code: null, error_message: null, retryable: null,
    retry_after_ms: null, http_status: null, request_id: null, response_id: null, raw_output: GOOD, validation_issues: null,
    repair_method: null, score: null, quality: null, request_key: other.request_key, reused_from: other.id,
  }));
  t.equal(sqlstate(err), 'BA002');
  t.match(err.message, /not a stored answer of tenant acme/);
});
