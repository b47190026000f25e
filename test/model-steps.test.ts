// Model steps end to end: a worker runs pipelines whose steps call the scripted fake LLM (OpenAI and Anthropic
// protocols) through the real adapters, and every rung of the contract ladder is checked in Postgres: the attempt's
// contract outcome, the trace rows (ballast.model_calls), cost totals, the job's and step's status, reviews.
import t from 'tap';
import { z } from 'zod';
import { pipeline, type ModelStepOptions } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { ModelStore } from '../src/db/model-store.ts';
import { FakeLLM } from './support/fake-llm.ts';
import { triage } from '../tasks/triage.ts';
import { freshDatabase, pgError, testWorker, waitForJob } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
// The provider registry is read from the environment once, at the first call.
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL, ANTHROPIC_API_KEY: 'sk-ant-test', ANTHROPIC_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const store = new ModelStore(db);

const Review = z.object({ sentiment: z.enum(['positive', 'negative', 'neutral']), score: z.number().min(-1).max(1) });
type Review = z.infer<typeof Review>;
const GOOD = '{"sentiment":"positive","score":0.8}';
const rate = prompt({ name: 'review.rate', version: 1, system: 'You rate restaurant reviews.', user: 'Rate this review: {{input.text}}' });

let n = 0;
/** A one-step pipeline around a model step with these options; returns its name. */
function modelPipeline(options: Partial<ModelStepOptions<{ text: string }, {}, never, Review>>, retry = { maxAttempts: 1, baseDelayMs: 0 }) {
  const name = `m.case${++n}`;
  const p = pipeline({ name, version: 1, input: z.object({ text: z.string() }) })
    .modelStep('rate', { prompt: rate, model: 'openai:gpt-4o-mini', output: Review, retry, callTimeoutMs: 3000, ...options });
  return p;
}

async function run(p: ReturnType<typeof modelPipeline>, text = 'great food', statuses?: Parameters<typeof waitForJob>[2]) {
  const { jobId } = await db.submitJob({ pipeline: p.name, input: { text } });
  const job = await waitForJob(db, jobId, statuses);
  const steps = await db.getSteps(jobId);
  const attempts = await db.getAttempts(jobId);
  const calls = await store.getModelCalls(jobId);
  return { job, step: steps[0]!, attempts, calls };
}

const pipelines = {
  first: modelPipeline({}),
  repaired: modelPipeline({}),
  fallback: modelPipeline({ fallbacks: ['anthropic:claude-3-5-haiku-latest'], reasks: 1 }),
  refusal: modelPipeline({ fallbacks: ['anthropic:claude-3-5-haiku-latest'] }),
  degraded: modelPipeline({ reasks: 0, default: { sentiment: 'neutral', score: 0 } }),
  review: modelPipeline({ reasks: 0, review: true }),
  client: modelPipeline({ fallbacks: ['anthropic:claude-3-5-haiku-latest'] }),
  transport: modelPipeline({}, { maxAttempts: 2, baseDelayMs: 0 }),
  lastTransport: modelPipeline({ fallbacks: ['anthropic:claude-3-5-haiku-latest'] }),
  quality: modelPipeline({ fallbacks: ['anthropic:claude-3-5-haiku-latest'], quality: { score: (o) => Math.abs(o.score), threshold: 0.5 } }),
  qualityReview: modelPipeline({ quality: { rules: [{ name: 'not_neutral', check: (o) => o.sentiment !== 'neutral' || 'neutral is not allowed here' }], onFail: 'review' } }),
  truncated: modelPipeline({ fallbacks: ['anthropic:claude-3-5-haiku-latest'] }),
  budgetFail: modelPipeline({}),
  huge: modelPipeline({ reasks: 0 }),
};
await testWorker(t, url, { pipelines: [...Object.values(pipelines), triage], concurrency: 2 });

t.test('valid on the first try: traced, priced, totalled', async (t) => {
  fake.script('openai', { text: GOOD, usage: { input: 1000, output: 200 }, requestId: 'req_1', model: 'gpt-4o-mini-2024-07-18' });
  const { job, attempts, calls } = await run(pipelines.first);
  t.equal(job.status, 'completed');
  t.same(job.result, { sentiment: 'positive', score: 0.8 });
  t.equal(attempts[0]!.contract_outcome, 'valid_first_try');
  t.equal(calls.length, 1);
  const c = calls[0]!;
  t.match(c, { rung: 'primary', provider: 'openai', requested_model: 'gpt-4o-mini', returned_model: 'gpt-4o-mini-2024-07-18',
    prompt_name: 'review.rate', prompt_version: 1, input_tokens: 1000, output_tokens: 200, http_status: 200, request_id: 'req_1',
    finish_reason: 'stop', error_class: null, raw_output: GOOD, price_missing: false });
  // 1000 x 0.15 + 200 x 0.60 per 1M tokens.
  t.equal(Number(c.cost_usd), 0.00027);
  t.equal(Number(job.cost_usd), 0.00027, 'job total');
  t.equal(Number(attempts[0]!.cost_usd), 0.00027, 'attempt total');
  const { rows } = await pool.query(`select content_hash from ballast.prompts where name = 'review.rate' and version = 1`);
  t.equal(rows[0].content_hash, c.prompt_hash, 'the trace names the stored prompt version by its hash');
  t.match(fake.last().body.messages, [{ role: 'system', content: 'You rate restaurant reviews.' }, { role: 'user', content: 'Rate this review: great food' }]);
});

t.test('schema violation: re-asked with the zod issues, then repaired', async (t) => {
  fake.script('openai', { text: '{"sentiment":"ecstatic","score":3}' }, { text: GOOD });
  const before = fake.requests.length;
  const { job, attempts, calls } = await run(pipelines.repaired);
  t.equal(job.status, 'completed');
  t.equal(attempts[0]!.contract_outcome, 'repaired');
  t.same(calls.map((c) => [c.rung, c.error_class]), [['primary', 'schema'], ['reask', null]]);
  t.ok(Array.isArray(calls[0]!.validation_issues) && (calls[0]!.validation_issues as unknown[]).length === 2, 'both issues recorded');
  const reask = fake.requests[before + 1]!.body.messages as { role: string; content: string }[];
  t.equal(reask.at(-2)!.role, 'assistant');
  t.match(reask.at(-1)!.content, /sentiment/);
  t.match(reask.at(-1)!.content, /score/);
});

t.test('unparsable twice on the primary, then the fallback model answers: fell_back', async (t) => {
  fake.script('openai', { text: 'I think it is positive!' }, { text: 'Still prose.' });
  fake.script('anthropic', { text: GOOD });
  const { job, attempts, calls } = await run(pipelines.fallback);
  t.equal(job.status, 'completed');
  t.equal(attempts[0]!.contract_outcome, 'fell_back');
  t.equal(attempts[0]!.fallback_used, true);
  t.same(calls.map((c) => [c.rung, c.provider, c.error_class]),
    [['primary', 'openai', 'unparsable'], ['reask', 'openai', 'unparsable'], ['fallback', 'anthropic', null]]);
});

t.test('a refusal is not re-asked: straight to the fallback', async (t) => {
  fake.script('openai', { refusal: 'I cannot help with that.' });
  fake.script('anthropic', { text: GOOD });
  const { job, calls } = await run(pipelines.refusal);
  t.equal(job.status, 'completed');
  t.same(calls.map((c) => c.error_class), ['refusal', null]);
});

t.test('truncation is not re-asked: straight to the fallback', async (t) => {
  fake.script('openai', { text: '{"sentiment":"pos', finish: 'length' });
  fake.script('anthropic', { text: GOOD });
  const { job, calls } = await run(pipelines.truncated);
  t.equal(job.status, 'completed');
  t.same(calls.map((c) => [c.error_class, c.finish_reason]), [['truncated', 'length'], [null, 'stop']]);
});

t.test('every model failed and a default is declared: degraded, visible', async (t) => {
  fake.script('openai', { text: 'nope' });
  const { job, attempts } = await run(pipelines.degraded);
  t.equal(job.status, 'completed');
  t.same(job.result, { sentiment: 'neutral', score: 0 });
  t.equal(attempts[0]!.contract_outcome, 'degraded');
  t.match(attempts[0]!.contract_detail, { reason: /every model failed/ });
});

t.test('high blast radius: needs_review; a contract-violating edit is refused; a valid edit completes the job', async (t) => {
  fake.script('openai', { text: '{"sentiment":"ecstatic","score":0.9}' });
  const { job, step, attempts } = await run(pipelines.review, 'great food', ['needs_review']);
  t.equal(job.status, 'needs_review');
  t.equal(step.status, 'needs_review');
  t.equal(attempts[0]!.outcome, 'needs_review');
  t.equal(attempts[0]!.contract_outcome, 'review');
  const { rows } = await pool.query('select * from ballast.reviews where step_id = $1', [step.id]);
  t.same(rows[0].proposed_output, { sentiment: 'ecstatic', score: 0.9 }, 'the reviewer sees what the model proposed');
  t.match(rows[0].reason, /every model failed/);

  const approve = await pgError(() => pool.query(`select * from ballast.resolve_review($1, 'approve', null, 'ana')`, [step.id]));
  t.equal(approve.code, 'BA002', 'approving a contract-violating proposal is refused');
  t.match(approve.message, /output\.sentiment/);
  const bad = await pgError(() => pool.query(`select * from ballast.resolve_review($1, 'edit', '{"sentiment":"great"}', 'ana')`, [step.id]));
  t.equal(bad.code, 'BA002');
  t.match(bad.message, /output does not satisfy the contract of step "rate" \(2 problems\)/);
  t.equal((await db.getJob(job.id))!.status, 'needs_review', 'nothing changed');
  const noReviewer = await pgError(() => pool.query(`select * from ballast.resolve_review($1, 'edit', $2, null)`, [step.id, GOOD]));
  t.match(noReviewer.message, /reviewer: is empty/);

  const r = await store.resolveReview(step.id, 'edit', { output: { sentiment: 'positive', score: 0.9 }, reviewer: 'ana', note: 'ecstatic means positive' });
  t.same([r.stepStatus, r.jobStatus], ['succeeded', 'completed']);
  const done = await db.getJob(job.id);
  t.same(done!.result, { sentiment: 'positive', score: 0.9 });
  const events = await db.getEvents(job.id);
  const resolved = events.find((e) => e.type === 'review_resolved');
  t.match(resolved, { actor: 'reviewer:ana', reason: 'ecstatic means positive', data: { decision: 'edit', edited: true } });
  const again = await pgError(() => pool.query(`select * from ballast.resolve_review($1, 'reject', null, 'ana')`, [step.id]));
  t.equal(again.code, 'BA013', 'a decided review cannot be decided again');
});

t.test('a rejected review fails the step', async (t) => {
  fake.script('openai', { text: 'prose' });
  const { step, job } = await run(pipelines.review, 'meh', ['needs_review']);
  const r = await store.resolveReview(step.id, 'reject', { reviewer: 'bo', note: 'the model cannot rate this' });
  t.same([r.stepStatus, r.jobStatus], ['failed', 'failed']);
  const [s] = await db.getSteps(job.id);
  t.match(s!.error, { class: 'review_rejected', message: 'rejected by bo: the model cannot rate this' });
});

t.test('401: fails fast with the provider message, no fallback', async (t) => {
  const before = fake.requests.length;
  fake.script('openai', { status: 401, body: { error: { message: 'Incorrect API key provided', type: 'invalid_request_error', code: 'invalid_api_key' } } });
  const { job, attempts, calls } = await run(pipelines.client);
  t.equal(job.status, 'failed');
  t.equal(fake.requests.length, before + 1, 'one request: the fallback was not tried');
  t.match(attempts[0], { error_class: 'client', error_code: 'unauthorized', contract_outcome: 'rejected' });
  t.match(attempts[0]!.error_message, /OPENAI_API_KEY/);
  t.equal(calls[0]!.http_status, 401);
});

t.test('429 with Retry-After while attempts remain: the step retries after it, and a shared cooldown is set', async (t) => {
  fake.script('openai', { status: 429, headers: { 'retry-after-ms': '400' }, body: { error: { message: 'Rate limit reached', type: 'requests', code: 'rate_limit_exceeded' } } }, { text: GOOD });
  const { job, attempts, calls } = await run(pipelines.transport);
  t.equal(job.status, 'completed');
  t.same(attempts.map((a) => [a.outcome, a.error_class]), [['failed', 'transport'], ['succeeded', null]]);
  t.same(calls.map((c) => c.error_code), ['rate_limited', null]);
  const gap = attempts[1]!.started_at.getTime() - attempts[0]!.finished_at!.getTime();
  t.ok(gap >= 350, `the retry waited for Retry-After (${gap} ms)`);
  const { rows } = await pool.query(`select * from ballast.provider_cooldowns where provider = 'openai' and model = 'gpt-4o-mini'`);
  t.equal(rows.length, 1, 'the cooldown is in Postgres for every worker');
  t.match(rows[0].reason, /rate_limited/);
});

t.test('transport failure on the last attempt goes to the fallback', async (t) => {
  fake.script('openai', { status: 503, body: { error: { message: 'upstream down', type: 'server_error' } } });
  fake.script('anthropic', { text: GOOD });
  const { job, attempts } = await run(pipelines.lastTransport);
  t.equal(job.status, 'completed');
  t.equal(attempts[0]!.contract_outcome, 'fell_back');
});

t.test('quality score below the threshold routes to the fallback', async (t) => {
  fake.script('openai', { text: '{"sentiment":"positive","score":0.1}' });
  fake.script('anthropic', { text: GOOD });
  const { job, attempts, calls } = await run(pipelines.quality);
  t.equal(job.status, 'completed');
  t.same(calls.map((c) => [c.error_class, c.error_code, Number(c.score)]), [['quality', 'low_score', 0.1], [null, null, 0.8]]);
  t.equal(Number(attempts[0]!.quality_score), 0.8);
});

t.test('a failed business rule routes to review with the proposed output', async (t) => {
  fake.script('openai', { text: '{"sentiment":"neutral","score":0.2}' });
  const { step } = await run(pipelines.qualityReview, 'ok', ['needs_review']);
  t.match(step.review, { reason: /not_neutral: neutral is not allowed here/, proposed: { sentiment: 'neutral', score: 0.2 } });
  const r = await store.resolveReview(step.id, 'approve', { reviewer: 'cy' });
  t.equal(r.jobStatus, 'completed', 'approving a contract-valid proposal completes the job');
});

t.test('an exhausted budget with policy fail: the step fails with a clear reason, no call made', async (t) => {
  await store.setBudget('poor', 0.000001, 'day', 'fail');
  const before = fake.requests.length;
  const { jobId } = await db.submitJob({ pipeline: pipelines.budgetFail.name, input: { text: 'x' }, tenantId: 'poor' });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'failed');
  t.equal(fake.requests.length, before, 'the provider was never called');
  const [a] = await db.getAttempts(jobId);
  t.match(a, { error_class: 'budget_exhausted', contract_outcome: 'rejected' });
  t.match(a!.error_message, /budget of tenant poor exhausted: 0 USD spent and 0 USD reserved of 0.000001 USD for the day/);
});

t.test('model step definitions are checked when defined', async (t) => {
  t.throws(() => modelPipeline({ model: 'gpt-4o' }), /not of the form provider:model/);
  t.throws(() => modelPipeline({ default: { sentiment: 'great', score: 0 } as never }), /default value does not satisfy the output contract/);
  t.throws(() => modelPipeline({ quality: { threshold: 2 } }), /quality.threshold 2 is not from 0 to 1/);
  t.throws(() => prompt({ name: 'x', version: 1, user: 'Hi {{name}}' }).render({}), /placeholder \{\{name\}\} has no value/);
});

t.test('a prompt version is immutable', async (t) => {
  await store.registerPrompt('p.fixed', 1, { system: null, user: 'one' });
  const again = await store.registerPrompt('p.fixed', 1, { system: null, user: 'one' });
  t.equal(again.created, false);
  await t.rejects(store.registerPrompt('p.fixed', 1, { system: null, user: 'two' }), { code: 'prompt_version_conflict', message: /give the changed prompt a new version/ });
});

t.test('the demo triage pipeline runs a model step on the local provider, no network', async (t) => {
  const before = fake.requests.length;
  const { jobId } = await db.submitJob({ pipeline: 'demo.triage', input: { text: 'The delivery from Acme in Berlin was late again and the box was broken. I am very disappointed.' } });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.equal(fake.requests.length, before, 'no HTTP request');
  const [analyse, route] = await db.getSteps(jobId);
  t.equal((analyse!.output as { sentiment: string }).sentiment, 'negative');
  t.match(route!.output, { queue: /urgent|support/ });
  const [call] = await store.getModelCalls(jobId);
  t.match(call, { provider: 'local', provider_kind: 'local', returned_model: 'wink-eng-lite-web-model', error_class: null, price_missing: false });
  t.equal(Number(call!.cost_usd), 0, 'the local model is priced at 0');
  t.ok(call!.input_tokens! > 10, 'tokens are counted');
  const [a] = await db.getAttempts(jobId);
  t.equal(a!.contract_outcome, 'valid_first_try');
});

t.test('a reservation whose attempt ended without settling it expires, counted as spent', async (t) => {
  const idle = pipeline({ name: 'm.unserved', version: 1, input: z.object({}) }).step('a', { output: z.null() }, () => null);
  await db.registerPipeline(idle.name, idle.version, idle.definition(), idle.inputJsonSchema());
  await db.registerWorker({ workerId: 'sql-worker', hostname: 'test', pid: process.pid, concurrency: 1, pipelines: [] });
  await store.setBudget('crashy', 1, 'month', 'fail');
  const attempt = async () => {
    const { jobId } = await db.submitJob({ pipeline: 'm.unserved', input: {}, tenantId: 'crashy' });
    const [s] = await db.getSteps(jobId);
    return (await db.claimStep(s!.id, 'sql-worker', 30_000))!.attemptId;
  };
  const first = await attempt();
  const p1 = await store.beginModelCall(first, 'openai', 'gpt-4o-mini', 1000, 1000);
  t.ok(p1.reservationId, 'reserved');
  t.equal(p1.estimateUsd, 0.00075, '1000 x 0.15 + 1000 x 0.60 per 1M');
  await db.failStep(first, { class: 'crash', message: 'worker died mid-call', retryable: false });
  const second = await attempt();
  const p2 = await store.beginModelCall(second, 'openai', 'gpt-4o-mini', 1000, 1000);
  t.ok(p2.reservationId);
  const { rows: [r1] } = await pool.query('select status, actual_usd from ballast_private.budget_reservations where id = $1', [p1.reservationId]);
  t.same(r1, { status: 'expired', actual_usd: '0.00075000' });
  const { rows: [b] } = await pool.query(`select spent_usd, reserved_usd from ballast.budgets where tenant_id = 'crashy'`);
  t.same([Number(b.spent_usd), Number(b.reserved_usd)], [0.00075, 0.00075], 'the expired estimate is spent; the open one reserved');
});

t.test('INSERT INTO ballast.jobs returns the whole row, totals included', async (t) => {
  const { rows: [job] } = await pool.query(`insert into ballast.jobs (pipeline, input) values ('m.unserved', '{}') returning *`);
  t.match(job, { status: 'queued', cost_usd: '0.00000000', input_tokens: '0' });
});

t.test('a huge answer (with a NUL in it) is traced, cut to 65,536 characters with its length and SHA-256', async (t) => {
  const { createHash } = await import('node:crypto');
  const text = `Here is my long answer \u0000 ${'blah '.repeat(40_000)}`;
  fake.script('openai', { text, usage: { input: 10, output: 50_000 } });
  const { job, calls } = await run(pipelines.huge);
  t.equal(job.status, 'failed', 'prose is not the contract');
  const raw = calls[0]!.raw_output!;
  t.ok(raw.length <= 65_536, `raw_output kept ${raw.length} characters, not ${text.length}`);
  t.match(raw, new RegExp(`\\(cut: ${text.length} characters, sha256 ${createHash('sha256').update(text).digest('hex')}\\)$`), 'with the whole length and hash');
  t.ok(raw.startsWith('Here is my long answer \\u0000'), 'the NUL is shown escaped, not lost with the row');
});
