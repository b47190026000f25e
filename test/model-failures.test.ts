// The contract ladder's route for each provider failure class (src/model/failure.ts, src/model/http-failure.ts) not
// covered by test/model-steps.test.ts, end to end: an in-process worker runs one-model-step pipelines against the
// scripted fake LLM through the real OpenAI and Anthropic adapters. Quota goes straight to the fallback model;
// client errors (400, 403, 404, 422) fail at once; transport errors (408, 500, Anthropic 529, a call that hangs past
// callTimeoutMs) retry the step; a content filter falls back; a streamed call records its first token.
import t from 'tap';
import { z } from 'zod';
import { pipeline, type ModelStepOptions } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { ModelStore } from '../src/db/model-store.ts';
import { FakeLLM, type Reply } from './support/fake-llm.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL, ANTHROPIC_API_KEY: 'sk-ant-test', ANTHROPIC_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const store = new ModelStore(db);

const Label = z.object({ label: z.enum(['spam', 'ham']) });
const GOOD = '{"label":"ham"}';
const classify = prompt({ name: 'mail.classify', version: 1, system: 'You classify mail.', user: 'Classify: {{input.text}}' });
const FALLBACK = 'anthropic:claude-3-5-haiku-latest';

let n = 0;
function modelPipeline(options: Partial<ModelStepOptions<{ text: string }, {}, never, z.infer<typeof Label>>>, maxAttempts = 3) {
  return pipeline({ name: `f.case${++n}`, version: 1, input: z.object({ text: z.string() }) })
    .modelStep('classify', { prompt: classify, model: 'openai:gpt-4o-mini', output: Label, retry: { maxAttempts, baseDelayMs: 0 }, callTimeoutMs: 3000, ...options });
}

async function run(p: { name: string }) {
  const before = fake.requests.length;
  const { jobId } = await db.submitJob({ pipeline: p.name, input: { text: 'win a prize' } });
  const job = await waitForJob(db, jobId);
  const [step] = await db.getSteps(jobId);
  return { job, step: step!, attempts: await db.getAttempts(jobId), calls: await store.getModelCalls(jobId), requests: fake.requests.length - before };
}

const httpError = (status: number, message: string, extra: Partial<Reply> = {}): Reply =>
  ({ status, body: { error: { message, type: 'invalid_request_error' } }, ...extra });

const clientCases = [
  { status: 400, code: 'bad_request', message: "Invalid schema for response_format 'x'", hint: /Check the request parameters/ },
  { status: 403, code: 'forbidden', message: 'Project does not have access to model gpt-4o-mini', hint: /OPENAI_API_KEY may use model "gpt-4o-mini"/ },
  { status: 404, code: 'not_found', message: 'The model gpt-4o-mini does not exist', hint: /Check the model name "gpt-4o-mini" and the base URL/ },
  { status: 422, code: 'unprocessable', message: 'Unprocessable entity', hint: /Check the request parameters/ },
];
const transportCases = [
  { status: 408, code: 'request_timeout' },
  { status: 500, code: 'server_error' },
];

const pipelines = {
  quota429: modelPipeline({ fallbacks: [FALLBACK] }),
  quota400: modelPipeline({ model: 'anthropic:claude-3-5-haiku-latest', fallbacks: ['openai:gpt-4o-mini'] }),
  client: clientCases.map(() => modelPipeline({ fallbacks: [FALLBACK] })),
  transport: transportCases.map(() => modelPipeline({ fallbacks: [FALLBACK] })),
  // Their own model ids: an overload sets a shared cooldown on the model.
  overloaded: modelPipeline({ model: 'anthropic:claude-overloaded-test' }),
  overloadedStream: modelPipeline({ model: 'anthropic:claude-overloaded-stream', stream: true }),
  filtered: modelPipeline({ fallbacks: [FALLBACK] }),
  hang: modelPipeline({ callTimeoutMs: 500 }, 2),
  hangStream: modelPipeline({ callTimeoutMs: 500, stream: true }, 2),
  streamOpenai: modelPipeline({ stream: true }),
  streamAnthropic: modelPipeline({ model: FALLBACK, stream: true }),
};
await testWorker(t, url, { pipelines: Object.values(pipelines).flat(), concurrency: 2 });

const cooldowns = async () => (await pool.query(`select provider, model, reason from ballast.provider_cooldowns order by provider, model`)).rows;

t.test('quota exhausted (429 insufficient_quota): no retry, no cooldown, straight to the fallback model', async (t) => {
  fake.script('openai', httpError(429, 'You exceeded your current quota, please check your plan and billing details.', {
    body: { error: { message: 'You exceeded your current quota, please check your plan and billing details.', type: 'insufficient_quota', code: 'insufficient_quota' } },
  }));
  fake.script('anthropic', { text: GOOD });
  const { job, attempts, calls, requests } = await run(pipelines.quota429);
  t.equal(job.status, 'completed');
  t.equal(attempts.length, 1, 'the step was not retried although 3 attempts were allowed');
  t.equal(attempts[0]!.contract_outcome, 'fell_back');
  t.same(calls.map((c) => [c.rung, c.provider, c.error_class, c.error_code, c.http_status]),
    [['primary', 'openai', 'quota', 'insufficient_quota', 429], ['fallback', 'anthropic', null, null, 200]]);
  t.match(calls[0]!.error_message, /HTTP 429, quota or credit exhausted: You exceeded your current quota.*Retrying will not help/);
  t.equal(requests, 2);
  t.same(await cooldowns(), [], 'a quota 429 is not a rate limit: no shared cooldown');
});

t.test('quota exhausted (Anthropic 400 credit balance): straight to the fallback model', async (t) => {
  fake.script('anthropic', { status: 400, body: { type: 'error', error: { type: 'invalid_request_error', message: 'Your credit balance is too low to access the Anthropic API.' } } });
  fake.script('openai', { text: GOOD });
  const { job, attempts, calls } = await run(pipelines.quota400);
  t.equal(job.status, 'completed');
  t.equal(attempts.length, 1);
  t.same(calls.map((c) => [c.provider, c.error_class, c.error_code, c.http_status]),
    [['anthropic', 'quota', 'insufficient_quota', 400], ['openai', null, null, 200]]);
});

t.test('client errors fail fast: no retry, no fallback, the status and provider message in the error', async (t) => {
  for (const [i, c] of clientCases.entries()) {
    await t.test(`HTTP ${c.status}`, async (t) => {
      fake.script('openai', httpError(c.status, c.message));
      const { job, step, attempts, calls, requests } = await run(pipelines.client[i]!);
      t.equal(job.status, 'failed');
      t.equal(requests, 1, 'one request: neither retried nor the fallback tried');
      t.equal(attempts.length, 1, 'one attempt of 3');
      t.match(attempts[0], { outcome: 'failed', error_class: 'client', error_code: c.code, error_retryable: false, contract_outcome: 'rejected' });
      t.match(attempts[0]!.error_message, `openai model gpt-4o-mini: HTTP ${c.status}: ${c.message}.`);
      t.match(attempts[0]!.error_message, c.hint);
      t.match(step.error, { class: 'client', code: c.code });
      t.same(calls.map((x) => [x.error_class, x.error_code, x.http_status]), [['client', c.code, c.status]]);
    });
  }
});

t.test('transport errors (408, 500) are retried while attempts remain', async (t) => {
  for (const [i, c] of transportCases.entries()) {
    await t.test(`HTTP ${c.status}`, async (t) => {
      fake.script('openai', httpError(c.status, 'try again later'), { text: GOOD });
      const { job, attempts, calls, requests } = await run(pipelines.transport[i]!);
      t.equal(job.status, 'completed');
      t.same(attempts.map((a) => [a.outcome, a.error_class, a.error_code]), [['failed', 'transport', c.code], ['succeeded', null, null]]);
      t.equal(attempts[1]!.contract_outcome, 'valid_first_try', 'the retry used the same model, not the fallback');
      t.same(calls.map((x) => [x.provider, x.error_code, x.http_status]), [['openai', c.code, c.status], ['openai', null, 200]]);
      t.match(calls[0]!.error_message, `HTTP ${c.status} (${c.code.replace('_', ' ')}): try again later`);
      t.equal(requests, 2);
    });
  }
});

t.test('Anthropic overloaded (HTTP 529, or an overloaded_error inside the stream): retried after the shared cooldown it set', async (t) => {
  const overloaded = { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } };
  const cases = [
    { name: 'HTTP 529', p: pipelines.overloaded, model: 'claude-overloaded-test', reply: { status: 529, body: overloaded } },
    { name: 'stream error event', p: pipelines.overloadedStream, model: 'claude-overloaded-stream', reply: { text: GOOD, streamError: overloaded.error } },
  ];
  for (const c of cases) {
    await t.test(c.name, async (t) => {
      fake.script('anthropic', c.reply, { text: GOOD });
      const { job, attempts, calls, requests } = await run(c.p);
      t.equal(job.status, 'completed');
      t.equal(requests, 2, 'the provider was called twice');
      t.match(calls[0], { error_class: 'transport', error_code: 'overloaded', retryable: true, error_message: /\(overloaded\): Overloaded/ });
      t.match(calls.at(-1), { error_class: null, http_status: 200 });
      t.ok(calls.slice(1, -1).every((x) => x.error_class === 'cooldown'), 'calls in between were skipped for the cooldown');
      t.ok(attempts.slice(0, -1).every((a) => a.outcome === 'failed' && a.error_class === 'transport'), 'retried as transport failures');
      t.equal(attempts.at(-1)!.outcome, 'succeeded');
      const { rows } = await pool.query(`select reason from ballast.provider_cooldowns where provider = 'anthropic' and model = $1`, [c.model]);
      t.same(rows, [{ reason: `overloaded from anthropic:${c.model} (HTTP 529)` }], 'the cooldown is shared through Postgres');
    });
  }
});

t.test('a content filter is not re-asked: straight to the fallback', async (t) => {
  fake.script('openai', { text: '', finish: 'content_filter' });
  fake.script('anthropic', { text: GOOD });
  const { job, attempts, calls, requests } = await run(pipelines.filtered);
  t.equal(job.status, 'completed');
  t.equal(attempts[0]!.contract_outcome, 'fell_back');
  t.same(calls.map((c) => [c.rung, c.error_class, c.error_code, c.finish_reason]),
    [['primary', 'refusal', 'content_filter', 'content_filter'], ['fallback', null, null, 'stop']]);
  t.match(calls[0]!.error_message, /content filter stopped the output/);
  t.equal(requests, 2);
});

t.test('a provider that hangs past callTimeoutMs: transport timeout, the step retried', async (t) => {
  fake.script('openai', { hang: 'headers' }, { text: GOOD });
  const before = fake.requests.length;
  const { job, attempts, calls } = await run(pipelines.hang);
  t.equal(job.status, 'completed');
  t.same(attempts.map((a) => [a.outcome, a.error_class, a.error_code]), [['failed', 'transport', 'timeout'], ['succeeded', null, null]]);
  t.match(calls[0], { error_class: 'transport', error_code: 'timeout', http_status: null, error_message: /no complete response within 500 ms/ });
  t.ok(Number(calls[0]!.latency_ms) >= 490, `the call was given its 500 ms (${calls[0]!.latency_ms})`);
  const hung = fake.requests[before]!;
  await hung.closed;
  t.equal(hung.clientAborted, true, 'the client hung up on the request');
});

t.test('a stream that stops after its first chunk: timeout, with the partial text and first token traced', async (t) => {
  fake.script('openai', { text: GOOD, hang: 'after-first-chunk' }, { text: GOOD });
  const { job, attempts, calls } = await run(pipelines.hangStream);
  t.equal(job.status, 'completed');
  t.same(attempts.map((a) => [a.outcome, a.error_code]), [['failed', 'timeout'], ['succeeded', null]]);
  t.match(calls[0], { error_class: 'transport', error_code: 'timeout', http_status: 200, raw_output: GOOD.slice(0, 8) });
  t.ok(calls[0]!.first_token_at, 'the first token of the cut stream is recorded');
});

t.test('streaming records the first token time (OpenAI and Anthropic)', async (t) => {
  for (const [protocol, p] of [['openai', pipelines.streamOpenai], ['anthropic', pipelines.streamAnthropic]] as const) {
    await t.test(protocol, async (t) => {
      fake.script(protocol, { text: GOOD, chunkGapMs: 300, usage: { input: 30, output: 8 } });
      const { job, calls } = await run(p);
      t.equal(job.status, 'completed');
      t.same(job.result, { label: 'ham' });
      t.equal(fake.last().body.stream, true, 'the request asked for a stream');
      const c = calls[0]!;
      t.ok(c.first_token_at, 'first_token_at is recorded');
      t.ok(c.first_token_at! >= c.started_at && c.first_token_at! <= c.ended_at, 'between the start and the end of the call');
      const tail = c.ended_at.getTime() - c.first_token_at!.getTime();
      t.ok(tail >= 250, `the first token came before the 300 ms pause, not at the end (${tail} ms before the end)`);
      t.ok(Number(c.first_token_ms) >= 0 && Number(c.first_token_ms) < Number(c.latency_ms), 'first_token_ms < latency_ms');
      t.match(c, { input_tokens: 30, output_tokens: 8, finish_reason: 'stop' });
    });
  }
});
