// Budgets and prices of model steps against a real Postgres: 40 jobs racing for a budget that fits 5 calls (through
// two in-process workers and a scripted fake LLM), 20 connections racing in ballast.begin_model_call itself, the
// 'pause' policy (the step parks until a raised limit wakes it), and how calls are priced (dated snapshots, prices
// with a later valid_from, unpriced models, cached input tokens).
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { pipeline, type ModelStepOptions } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { ProviderRegistry } from '../src/model/providers.ts';
import { ModelStore } from '../src/db/model-store.ts';
import { inputTokenBound } from '../src/model/ladder.ts';
import { FakeLLM } from './support/fake-llm.ts';
import { eventually, freshDatabase, registerTestWorker, testWorker, waitForJob } from './helpers.ts';

const fake = await new FakeLLM().start();
// The races get their own servers (providers `race`, `heavy`): replies they leave unused cannot answer other calls.
const raceFake = await new FakeLLM().start();
const heavyFake = await new FakeLLM().start();
t.teardown(() => Promise.all([fake.close(), raceFake.close(), heavyFake.close()]));
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL, ANTHROPIC_API_KEY: 'sk-ant-test', ANTHROPIC_BASE_URL: fake.baseURL });
const providers = ProviderRegistry.fromEnv([
  { name: 'race', kind: 'openai', baseURL: raceFake.baseURL, apiKey: 'sk-race' },
  { name: 'heavy', kind: 'openai', baseURL: heavyFake.baseURL, apiKey: 'sk-heavy' },
]);

const { url, db, pool } = await freshDatabase(t);
const store = new ModelStore(db);

const Answer = z.object({ n: z.number() });
const GOOD = '{"n":1}';
const count = prompt({ name: 'budget.count', version: 1, system: 'You count things.', user: 'Count: {{input.text}}' });

let n = 0;
function modelPipeline(model: string, options: Partial<ModelStepOptions<{ text: string }, {}, never, z.infer<typeof Answer>>> = {}) {
  return pipeline({ name: `b.case${++n}`, version: 1, input: z.object({ text: z.string() }) })
    .modelStep('count', { prompt: count, model, output: Answer, retry: { maxAttempts: 1, baseDelayMs: 0 }, callTimeoutMs: 5000, ...options });
}

async function run(p: { name: string }, opts: { text?: string; tenantId?: string } = {}) {
  const { jobId } = await db.submitJob({ pipeline: p.name, input: { text: opts.text ?? 'apples' }, tenantId: opts.tenantId });
  const job = await waitForJob(db, jobId);
  const calls = await store.getModelCalls(jobId);
  return { job, calls, attempts: await db.getAttempts(jobId) };
}

const pipelines = {
  race: modelPipeline('race:metered', { maxOutputTokens: 100 }),
  heavy: modelPipeline('heavy:metered', { maxOutputTokens: 50, stream: true }),
  pause: modelPipeline('openai:gpt-4o-mini'),
  snapshot: modelPipeline('openai:gpt-4o-mini-2024-07-18'),
  tiered: modelPipeline('openai:tiered'),
  unpriced: modelPipeline('openai:unpriced-model-x'),
  cached: modelPipeline('openai:gpt-4o-mini'),
  cachedNoPrice: modelPipeline('openai:nocache'),
  cachedAnthropic: modelPipeline('anthropic:claude-3-5-haiku-latest'),
  blind: modelPipeline('openai:blind', { maxOutputTokens: 100 }),
};
const usd = (v: unknown) => Number(v);

t.test('20 connections calling begin_model_call at once cannot reserve past the limit', async (t) => {
  const idle = pipeline({ name: 'b.unserved', version: 1, input: z.object({}) }).step('a', { output: z.null() }, () => null);
  await db.registerPipeline(idle.name, idle.version, idle.definition(), idle.inputJsonSchema());
  const worker = await registerTestWorker(db, 'sql-racer');
  await store.setBudget('sqlrace', 0.005, 'month', 'fail');
  const attempts: string[] = [];
  for (let i = 0; i < 21; i++) {
    const { jobId } = await db.submitJob({ pipeline: idle.name, input: {}, tenantId: 'sqlrace' });
    const [s] = await db.getSteps(jobId);
    attempts.push((await db.claimStep(s!.id, worker, 60_000))!.attemptId);
  }
  const begin = `select * from ballast.begin_model_call($1, 'openai', 'gpt-4o-mini', 1000, 1000)`;
  // The first call creates the period's usage row; 0.00075 USD each (1000 x 0.15 + 1000 x 0.60 per 1M).
  const { rows: [first] } = await pool.query(begin, [attempts[0]]);
  t.equal(usd(first.estimate_usd), 0.00075);
  t.ok(first.reservation_id);

  // Hold the usage row so that all 20 calls queue on it, then let them go at once.
  const holder = await pool.connect();
  const clients = await Promise.all(Array.from({ length: 20 }, async () => {
    const c = new pg.Client({ connectionString: url, application_name: 'budget-racer' });
    await c.connect();
    return c;
  }));
  let results: pg.QueryResult[];
  try {
    await holder.query('begin');
    await holder.query(`select * from ballast_private.budget_usage where tenant_id = 'sqlrace' for update`);
    const racing = clients.map((c, i) => c.query(begin, [attempts[i + 1]]));
    const queued = await eventually(async () => {
      const { rows: [w] } = await pool.query(`select count(*)::int as n from pg_stat_activity
        where application_name = 'budget-racer' and wait_event_type = 'Lock'`);
      return w.n === 20;
    }, 10_000);
    t.ok(queued, 'all 20 calls were waiting on the same row at once');
    await holder.query('commit');
    results = await Promise.all(racing);
  } finally {
    holder.release();
    await Promise.all(clients.map((c) => c.end()));
  }
  const rows = results.map((r) => r.rows[0]);
  const granted = rows.filter((r) => r.reservation_id !== null);
  const refused = rows.filter((r) => r.budget_exhausted);
  t.equal(granted.length, 5, '6 x 0.00075 fits in 0.005, the 7th would not: 5 of the 20 besides the first');
  t.equal(refused.length, 15);
  t.ok(refused.every((r) => /budget of tenant sqlrace exhausted/.test(r.budget_message) && r.on_exhausted === 'fail'));
  const { rows: [b] } = await pool.query(`select limit_usd, spent_usd, reserved_usd from ballast.budgets where tenant_id = 'sqlrace'`);
  t.ok(usd(b.spent_usd) + usd(b.reserved_usd) <= usd(b.limit_usd), `reserved ${b.reserved_usd} + spent ${b.spent_usd} <= limit ${b.limit_usd}`);
  t.equal(usd(b.reserved_usd), 0.0045);
  const { rows: [open] } = await pool.query(
    `select count(*)::int as n, sum(estimate_usd) as total from ballast_private.budget_reservations where tenant_id = 'sqlrace' and status = 'open'`);
  t.same([open.n, usd(open.total)], [6, 0.0045], 'the open reservations add up to what is reserved');
});

// Two workers, 5 steps at once each, started after the SQL race (the database server is shared: connections count).
let workers: Promise<unknown> | undefined;
const startWorkers = () => (workers ??= Promise.all([1, 2].map(() =>
  testWorker(t, url, { pipelines: Object.values(pipelines), concurrency: 5, providers }))));

t.test('40 jobs race for a budget that fits 5 calls: 5 succeed, 35 fail budget_exhausted, never overspent', async (t) => {
  await startWorkers();
  // The ladder's reservation: its bound on the input tokens (src/model/ladder.ts inputTokenBound).
  const schema = JSON.stringify(z.toJSONSchema(Answer, { io: 'output', unrepresentable: 'any' }));
  const inTokens = inputTokenBound('You count things.', [{ role: 'user', content: 'Count: apples' }], schema);
  await store.setModelPrice('race', 'metered', { inputPerMTok: 2, outputPerMTok: 8, validFrom: new Date('2020-01-01') });
  const estimate = (inTokens * 2 + 100 * 8) / 1e6;
  // Each call costs exactly its estimate, so how many fit does not depend on timing.
  const limit = Math.round(estimate * 5.5 * 1e8) / 1e8;
  await store.setBudget('racer', limit, 'month', 'fail');
  for (let i = 0; i < 40; i++) raceFake.script('openai', { text: GOOD, usage: { input: inTokens, output: 100 } });

  const ids = await Promise.all(Array.from({ length: 40 }, () =>
    db.submitJob({ pipeline: pipelines.race.name, input: { text: 'apples' }, tenantId: 'racer' }).then((r) => r.jobId)));
  const jobs = await Promise.all(ids.map((id) => waitForJob(db, id, undefined, 60_000)));
  const completed = jobs.filter((j) => j.status === 'completed');
  const failed = jobs.filter((j) => j.status === 'failed');
  t.equal(completed.length, 5, 'exactly the calls that fit succeeded');
  t.equal(failed.length, 35, 'every other job failed');
  t.equal(raceFake.requests.length, 5, 'the provider saw only the calls that fit');
  t.equal(raceFake.pending('openai'), 35);

  const { rows: reservations } = await pool.query(
    `select status, estimate_usd, actual_usd from ballast_private.budget_reservations where tenant_id = 'racer'`);
  t.equal(reservations.length, 5, 'one reservation per call made');
  t.ok(reservations.every((r) => usd(r.estimate_usd) === estimate), `each reserved the estimate ${estimate}`);
  t.same(reservations.filter((r) => r.status === 'open'), [], 'no reservation is left open');

  const { rows: [spent] } = await pool.query(`select sum(cost_usd) as total from ballast.model_calls where tenant_id = 'racer'`);
  const { rows: [budget] } = await pool.query(`select spent_usd, reserved_usd from ballast.budgets where tenant_id = 'racer'`);
  t.ok(usd(spent.total) <= limit + estimate, `traced spend ${spent.total} <= limit ${limit} + one estimate`);
  t.ok(usd(budget.spent_usd) <= limit + estimate, `budget spent ${budget.spent_usd} <= limit + one estimate`);
  t.equal(usd(budget.spent_usd), Math.round(5 * estimate * 1e8) / 1e8, 'spent is the 5 calls');
  t.equal(usd(spent.total), usd(budget.spent_usd), 'the traces and the budget agree');
  t.equal(usd(budget.reserved_usd), 0, 'nothing stays reserved');

  const { rows: failures } = await pool.query(
    `select a.error_class, a.error_message from ballast.attempts a join ballast.jobs j on j.id = a.job_id
      where j.tenant_id = 'racer' and a.outcome = 'failed'`);
  t.equal(failures.length, 35);
  t.ok(failures.every((f) => f.error_class === 'budget_exhausted'), 'every failure is budget_exhausted');
  t.ok(failures.every((f) => /budget of tenant racer exhausted/.test(f.error_message)), 'every message names the tenant');
  const { rows: [skipped] } = await pool.query(
    `select count(*)::int as n from ballast.model_calls where tenant_id = 'racer' and error_class = 'budget'`);
  t.equal(skipped.n, 35, 'each call not made is traced as class budget');
});

// The worst case a byte-level BPE tokenizer allows: every byte sent (system, user message, the output schema) is
// a token. The reservation is an upper bound of that (src/model/ladder.ts inputTokenBound), so even 10 calls in
// flight together, each billed the worst case, cannot pass the limit.
t.test('calls billed the most their input allows, in flight together, stay within the limit', async (t) => {
  await startWorkers();
  const schema = JSON.stringify(z.toJSONSchema(Answer, { io: 'output', unrepresentable: 'any' }));
  const worstIn = Buffer.byteLength('You count things.') + Buffer.byteLength('Count: apples') + Buffer.byteLength(schema);
  t.equal(inputTokenBound('You count things.', [{ role: 'user', content: 'Count: apples' }], schema), worstIn + 16 + 512, 'the bound');
  await store.setModelPrice('heavy', 'metered', { inputPerMTok: 2, outputPerMTok: 8, validFrom: new Date('2020-01-01') });
  const reserved = ((worstIn + 16 + 512) * 2 + 50 * 8) / 1e6;
  const limit = Math.round(reserved * 4.5 * 1e8) / 1e8;
  await store.setBudget('heavy', limit, 'month', 'fail');
  // Streamed slowly so that the calls overlap.
  for (let i = 0; i < 10; i++) heavyFake.script('openai', { text: GOOD, usage: { input: worstIn, output: 50 }, chunkGapMs: 300 });
  const ids = await Promise.all(Array.from({ length: 10 }, () =>
    db.submitJob({ pipeline: pipelines.heavy.name, input: { text: 'apples' }, tenantId: 'heavy' }).then((r) => r.jobId)));
  await Promise.all(ids.map((id) => waitForJob(db, id, undefined, 60_000)));
  const { rows: [b] } = await pool.query(`select spent_usd, reserved_usd from ballast.budgets where tenant_id = 'heavy'`);
  t.equal(usd(b.reserved_usd), 0);
  t.ok(heavyFake.requests.length >= 4, `4 reservations fit at once, more once calls settle: ${heavyFake.requests.length} calls`);
  t.ok(usd(b.spent_usd) <= limit, `spent ${usd(b.spent_usd)} USD in ${heavyFake.requests.length} calls; limit ${limit}`);
  const { rows: [c] } = await pool.query(`select count(*)::int as n from ballast.jobs where tenant_id = 'heavy' and status = 'completed'`);
  t.equal(c.n, heavyFake.requests.length, 'every call made completed its job');
});

t.test('a used-up pause budget: the claim parks the step, with no attempt and no call; raising the limit wakes it', async (t) => {
  await startWorkers();
  await store.setBudget('spent', 0, 'month', 'pause');
  const before = fake.requests.length;
  const { jobId } = await db.submitJob({ pipeline: pipelines.pause.name, input: { text: 'plums' }, tenantId: 'spent' });
  t.ok(await eventually(async () => (await db.getSteps(jobId))[0]?.status === 'retrying', 10_000), 'the step is retrying');
  const [step] = await db.getSteps(jobId);
  t.match(step!.error, { class: 'budget_exhausted', message: /tenant 'spent' has used its budget of 0/ });
  const now = new Date();
  t.equal(step!.next_run_at?.getTime(), Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1), 'due at the start of next month (UTC)');
  t.equal(step!.attempts, 0, 'no attempt was opened');
  t.same(await db.getAttempts(jobId), []);
  t.equal(fake.requests.length, before, 'no provider request was made');

  fake.script('openai', { text: GOOD, usage: { input: 100, output: 10 } });
  await store.setBudget('spent', 1, 'month', 'pause');
  t.equal((await waitForJob(db, jobId)).status, 'completed', 'the raised limit woke it');
  t.same((await db.getAttempts(jobId)).map((a) => a.outcome), ['succeeded']);
});

t.test('policy pause: the step parks until the next period, uncharged; raising the limit wakes it', async (t) => {
  await startWorkers();
  // Not used up (the claim takes the step), but too small for the call's reservation: the ladder pauses it.
  await store.setBudget('pauser', 0.000001, 'month', 'pause');
  const before = fake.requests.length;
  const { jobId } = await db.submitJob({ pipeline: pipelines.pause.name, input: { text: 'pears' }, tenantId: 'pauser' });
  t.ok(await eventually(async () => (await db.getSteps(jobId))[0]?.status === 'retrying', 10_000), 'the step is retrying');
  const [step] = await db.getSteps(jobId);
  t.match(step!.error, { class: 'budget_exhausted', code: 'budget_exhausted', message: /budget of tenant pauser exhausted.*paused until/ });
  const now = new Date();
  t.equal(step!.next_run_at?.getTime(), Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1), 'due at the start of next month (UTC)');
  t.equal(step!.attempt_offset, 1, 'the parked attempt is not charged');
  const [parked] = await db.getAttempts(jobId);
  t.equal(parked!.outcome, 'parked');
  t.equal(fake.requests.length, before, 'no provider request was made');
  t.same((await store.getModelCalls(jobId)).map((c) => c.error_class), ['budget'], 'the skipped call is traced');

  fake.script('openai', { text: GOOD, usage: { input: 100, output: 10 } });
  await store.setBudget('pauser', 1, 'month', 'pause');
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed', 'completed although maxAttempts is 1: the parked attempt did not count');
  t.same((await db.getAttempts(jobId)).map((a) => a.outcome), ['parked', 'succeeded']);
  t.equal(fake.requests.length, before + 1);
});

// A provider answer without token counts (an OpenAI-compatible server that leaves `usage` out) would otherwise cost
// $0 whatever it used: it is flagged and charged the most it could have cost, the reservation's estimate.
t.test('an answer without usage: flagged usage_missing, charged the reservation estimate, and such calls exhaust the budget', async (t) => {
  await startWorkers();
  const schema = JSON.stringify(z.toJSONSchema(Answer, { io: 'output', unrepresentable: 'any' }));
  const inTokens = inputTokenBound('You count things.', [{ role: 'user', content: 'Count: apples' }], schema);
  await store.setModelPrice('openai', 'blind', { inputPerMTok: 2, outputPerMTok: 8, validFrom: new Date('2020-01-01') });
  const estimate = Math.round((inTokens * 2 + 100 * 8) / 1e6 * 1e8) / 1e8;
  await store.setBudget('blind', Math.round(estimate * 2.5 * 1e8) / 1e8, 'month', 'fail');
  const noUsage = {
    status: 200,
    body: { id: 'chatcmpl-blind', object: 'chat.completion', created: 1, model: 'blind',
      choices: [{ index: 0, message: { role: 'assistant', content: GOOD }, finish_reason: 'stop' }] },
  };
  const traced = async (jobId: string) => (await pool.query(
    `select error_class, usage_missing, input_tokens, output_tokens, cost_usd::float8 as cost_usd, price_missing
       from ballast.model_calls where job_id = $1 order by id`, [jobId])).rows;
  const budget = async () => (await pool.query(
    `select spent_usd::float8 as spent, reserved_usd::float8 as reserved from ballast.budgets where tenant_id = 'blind'`)).rows[0];
  fake.script('openai', noUsage, noUsage, noUsage);
  const before = fake.requests.length;

  const first = await run(pipelines.blind, { tenantId: 'blind' });
  t.equal(first.job.status, 'completed', 'the answer itself is fine');
  t.same(await traced(first.job.id), [{ error_class: null, usage_missing: true, input_tokens: null, output_tokens: null, cost_usd: estimate, price_missing: false }],
    'flagged, and priced at the estimate');
  t.same(await budget(), { spent: estimate, reserved: 0 }, 'the budget is charged the estimate');
  t.equal(usd(first.job.cost_usd), estimate, 'so is the job');

  const second = await run(pipelines.blind, { tenantId: 'blind' });
  t.equal(second.job.status, 'completed');
  t.same(await budget(), { spent: Math.round(2 * estimate * 1e8) / 1e8, reserved: 0 });

  const third = await run(pipelines.blind, { tenantId: 'blind' });
  t.equal(third.job.status, 'failed', 'a third estimate does not fit in the limit (2.5 estimates)');
  t.match(third.attempts, [{ error_class: 'budget_exhausted', error_message: /budget of tenant blind exhausted/ }]);
  t.same((await traced(third.job.id)).map((c) => c.error_class), ['budget'], 'the call was not made');
  t.equal(fake.requests.length, before + 2, 'the provider saw two calls');

  // Without a budget there is no reservation: the estimate begin_model_call priced is charged all the same.
  const unbudgeted = await run(pipelines.blind);
  t.equal(unbudgeted.job.status, 'completed');
  t.match(await traced(unbudgeted.job.id), [{ usage_missing: true, cost_usd: estimate }]);
  t.equal(fake.pending('openai'), 0);
});

t.test('a dated snapshot takes the price of its longest priced prefix', async (t) => {
  await startWorkers();
  const price = async (provider: string, model: string) =>
    (await pool.query(`select model from ballast.model_price($1, $2)`, [provider, model])).rows.map((r) => r.model);
  t.same(await price('openai', 'gpt-4o-mini-2024-07-18'), ['gpt-4o-mini'], 'not gpt-4o, a shorter prefix');
  t.same(await price('openai', 'gpt-4o-2024-08-06'), ['gpt-4o']);
  t.same(await price('openai', 'gpt-4omni'), [], 'a prefix must be followed by "-"');
  t.same(await price('local', 'anything'), ['*'], "the provider's * row");

  fake.script('openai', { text: GOOD, usage: { input: 1000, output: 200 }, model: 'gpt-4o-mini-2024-07-18' });
  const { job, calls } = await run(pipelines.snapshot);
  t.equal(job.status, 'completed');
  t.equal(usd(calls[0]!.cost_usd), 0.00027, '1000 x 0.15 + 200 x 0.60 per 1M');
  t.same(calls[0]!.price_valid_from, new Date('2024-07-18T00:00:00Z'));
  const { rows: [flag] } = await pool.query(`select usage_missing from ballast.model_calls where id = $1`, [calls[0]!.id]);
  t.equal(flag.usage_missing, false, 'an answer with usage is priced from it, not flagged');
});

t.test('a price with a later valid_from applies only to calls started after it', async (t) => {
  await startWorkers();
  await store.setModelPrice('openai', 'tiered', { inputPerMTok: 1, outputPerMTok: 2, validFrom: new Date('2020-01-01') });
  await store.setModelPrice('openai', 'tiered', { inputPerMTok: 100, outputPerMTok: 200, validFrom: new Date(Date.now() + 3_600_000) });
  const usage = { input: 1000, output: 1000 };
  fake.script('openai', { text: GOOD, usage });
  const first = await run(pipelines.tiered);
  t.equal(usd(first.calls[0]!.cost_usd), 0.003, 'the current price, not the future one');

  await pool.query(`select ballast.set_model_price('openai', 'tiered', 10, 20, null, ballast.now())`);
  fake.script('openai', { text: GOOD, usage });
  const second = await run(pipelines.tiered);
  t.equal(usd(second.calls[0]!.cost_usd), 0.03, 'the call after the change pays the new price');
  t.ok(second.calls[0]!.price_valid_from! > first.calls[0]!.price_valid_from!);

  const { rows: [again] } = await pool.query(`select cost_usd, price_valid_from from ballast.model_calls where id = $1`, [first.calls[0]!.id]);
  t.same([usd(again.cost_usd), again.price_valid_from], [0.003, new Date('2020-01-01T00:00:00Z')], 'the earlier call keeps its price');
  const { rows: [then] } = await pool.query(`select input_per_mtok from ballast.model_price('openai', 'tiered', $1)`, [first.calls[0]!.started_at]);
  t.equal(usd(then.input_per_mtok), 1, 'model_price at the first call start is the old price');
});

t.test('an unpriced model: cost null and price_missing', async (t) => {
  await startWorkers();
  fake.script('openai', { text: GOOD, usage: { input: 500, output: 50 } });
  const { job, calls } = await run(pipelines.unpriced);
  t.equal(job.status, 'completed');
  t.match(calls[0], { cost_usd: null, price_missing: true, price_valid_from: null, input_tokens: 500, output_tokens: 50 });
  t.equal(usd(job.cost_usd), 0, 'the job total adds nothing for it');
  t.equal(Number(job.input_tokens), 500, 'its tokens are still counted');
});

t.test('cached input tokens are charged at the cached price (or the input price without one)', async (t) => {
  await startWorkers();
  const usage = { input: 1000, output: 100, cached: 400 };
  fake.script('openai', { text: GOOD, usage });
  const cached = await run(pipelines.cached);
  t.equal(cached.calls[0]!.cached_input_tokens, 400);
  t.equal(usd(cached.calls[0]!.cost_usd), 0.00018, '600 x 0.15 + 400 x 0.075 + 100 x 0.60 per 1M');

  await store.setModelPrice('openai', 'nocache', { inputPerMTok: 1, outputPerMTok: 2, cachedInputPerMTok: null, validFrom: new Date('2020-01-01') });
  fake.script('openai', { text: GOOD, usage });
  const plain = await run(pipelines.cachedNoPrice);
  t.equal(usd(plain.calls[0]!.cost_usd), 0.0012, '1000 x 1 + 100 x 2 per 1M: cached tokens at the input price');

  // Anthropic reports cache reads beside input_tokens (not within them): 1000 uncached + 400 cached input tokens.
  fake.script('anthropic', { text: GOOD, usage });
  const anthropic = await run(pipelines.cachedAnthropic);
  t.match(anthropic.calls[0], { input_tokens: 1400, cached_input_tokens: 400 }, 'input_tokens counts the cached ones too');
  t.equal(usd(anthropic.calls[0]!.cost_usd), 0.001232, '1000 x 0.80 + 400 x 0.08 + 100 x 4.00 per 1M');
});
