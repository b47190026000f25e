// The provider layer against a scripted local server (test/support/fake-llm.ts) speaking the OpenAI chat
// completions and Anthropic messages protocols: the real AI SDK adapters make real HTTP requests, and every case of
// issue 5 §5 must come back as the right normalised record and failure class. Then the `local` provider end to end
// (real wink-nlp output), provider configuration, Retry-After parsing and local JSON repair. No Postgres needed.
import t, { type Test } from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { callModel, type CallModelOptions } from '../src/model/call.ts';
import { retryAfterMs } from '../src/model/classify.ts';
import { parseJsonOutput } from '../src/model/json-repair.ts';
import { ProviderRegistry, parseModelRef, providersFromEnv } from '../src/model/providers.ts';
import type { ModelCallRecord } from '../src/model/record.ts';
import { FakeLLM, type Protocol, type RecordedRequest, type Reply } from './support/fake-llm.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());

const env = { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL, ANTHROPIC_API_KEY: 'sk-ant-test', ANTHROPIC_BASE_URL: fake.baseURL };
const providers = ProviderRegistry.fromEnv([
  { name: 'vllm', kind: 'openai-compatible', baseURL: fake.baseURL },
  { name: 'plain', kind: 'openai-compatible', baseURL: fake.baseURL, structuredOutputs: false },
], env);

const Review = z.object({ sentiment: z.enum(['positive', 'negative', 'neutral']), score: z.number().min(-1).max(1) });
const GOOD = '{"sentiment":"positive","score":0.8}';

interface Target {
  protocol: Protocol;
  model: string;
  modelId: string;
  keyEnv: string;
  stop: string;
  length: string;
  error(type: string, message: string): unknown;
}

const targets: Target[] = [
  {
    protocol: 'openai', model: 'openai:gpt-4o-mini', modelId: 'gpt-4o-mini', keyEnv: 'OPENAI_API_KEY', stop: 'stop', length: 'length',
    error: (type, message) => ({ error: { message, type, param: null, code: type } }),
  },
  {
    protocol: 'anthropic', model: 'anthropic:claude-haiku-4-5', modelId: 'claude-haiku-4-5', keyEnv: 'ANTHROPIC_API_KEY', stop: 'end_turn', length: 'max_tokens',
    error: (type, message) => ({ type: 'error', error: { type, message } }),
  },
];

/** One scripted exchange: exactly one request reaches the server (the SDK's own retries are off). */
async function exchange(tt: Test, target: Target | string, reply: Reply, options: Partial<CallModelOptions<unknown>> = {}):
  Promise<{ record: ModelCallRecord<any>; request: RecordedRequest }> {
  const model = typeof target === 'string' ? target : target.model;
  const protocol = typeof target === 'string' ? 'openai' : target.protocol;
  const before = fake.requests.length;
  fake.script(protocol, reply);
  const record = await callModel({ model, prompt: 'Rate this review: great food.', schema: Review, timeoutMs: 3000, providers, ...options });
  tt.equal(fake.requests.length, before + 1, 'exactly one request was made');
  tt.equal(fake.pending(protocol), 0, 'the scripted reply was used');
  return { record, request: fake.last() };
}

for (const target of targets) {
  const { protocol } = target;
  const who = `${target.model.split(':')[0]} model ${target.modelId}`;

  t.test(`${protocol}: valid structured output is normalised`, async (t) => {
    const { record: r, request } = await exchange(t, target, {
      text: GOOD, model: `${target.modelId}-2025-01-01`, requestId: 'req_valid_1', responseId: 'resp_1', usage: { input: 12, output: 7, cached: 4, reasoning: 3 },
    }, { temperature: 0.2, maxOutputTokens: 300 });
    t.equal(r.ok, true);
    t.equal(r.error, null);
    t.same(r.output, { sentiment: 'positive', score: 0.8 });
    t.equal(r.text, GOOD);
    t.equal(r.repair, null);
    t.match(r, { provider: protocol, providerKind: protocol, model: target.model, requestedModel: target.modelId, returnedModel: `${target.modelId}-2025-01-01` });
    t.match(r, { finishReason: 'stop', finishReasonRaw: target.stop, httpStatus: 200, requestId: 'req_valid_1', responseId: 'resp_1' });
    // Anthropic counts cache reads outside input_tokens; the SDK (and so the record) reports the total.
    t.same(r.usage, { inputTokens: protocol === 'openai' ? 12 : 16, outputTokens: 7, cachedInputTokens: 4, cacheWriteTokens: protocol === 'openai' ? null : 0, reasoningTokens: 3 });
    t.same(r.parameters, { temperature: 0.2, maxOutputTokens: 300, timeoutMs: 3000, stream: false, structured: true });
    t.equal(r.timings.firstTokenAt, null, 'no first-token time without streaming');
    t.ok(r.timings.endedAt.getTime() >= r.timings.startedAt.getTime() && r.timings.latencyMs > 0, 'timings are ordered');
    // The schema went to the provider as native structured output, with the parameters.
    if (protocol === 'openai') {
      t.equal(request.body.response_format?.type, 'json_schema');
      t.same(Object.keys(request.body.response_format.json_schema.schema.properties), ['sentiment', 'score']);
      t.match(request.body, { temperature: 0.2, max_tokens: 300, model: 'gpt-4o-mini' });
    } else {
      t.equal(request.body.output_config?.format?.type, 'json_schema');
      t.match(request.body, { temperature: 0.2, max_tokens: 300, model: 'claude-haiku-4-5' });
      t.equal(request.headers['x-api-key'], 'sk-ant-test');
    }
  });

  t.test(`${protocol}: JSON in a fence with a trailing comma is repaired locally`, async (t) => {
    const { record: r } = await exchange(t, target, { text: 'Here you go:\n```json\n{"sentiment": "negative", "score": -0.5,}\n```' });
    t.equal(r.ok, true);
    t.equal(r.repair, 'json_repair');
    t.same(r.output, { sentiment: 'negative', score: -0.5 });
  });

  t.test(`${protocol}: unparsable text → unparsable, re-ask`, async (t) => {
    const { record: r } = await exchange(t, target, { text: 'I would say the review is mostly positive.', requestId: 'req_prose' });
    t.equal(r.ok, false);
    t.equal(r.text, 'I would say the review is mostly positive.', 'the raw text is kept');
    t.match(r.error, { class: 'unparsable', code: 'invalid_json', retryable: false, reask: true, fallback: true, httpStatus: 200, requestId: 'req_prose' });
    t.equal(r.json, undefined);
  });

  t.test(`${protocol}: valid JSON violating the contract → schema, re-ask with the issues`, async (t) => {
    const { record: r } = await exchange(t, target, { text: '{"sentiment":"ecstatic","score":7}' });
    t.equal(r.ok, false);
    t.same(r.json, { sentiment: 'ecstatic', score: 7 }, 'the parsed JSON is kept');
    t.equal(r.output, undefined);
    t.match(r.error, { class: 'schema', code: 'schema_violation', retryable: false, reask: true, fallback: true });
    t.same(r.error?.issues?.map((i) => i.path), ['sentiment', 'score']);
    t.match(r.error?.message, /2 problems/);
  });

  t.test(`${protocol}: refusal → refusal, no re-ask`, async (t) => {
    const { record: r } = await exchange(t, target, { refusal: "I can't help with that request." });
    t.match(r, { ok: false, finishReason: 'refusal', finishReasonRaw: protocol === 'openai' ? 'stop' : 'refusal', text: "I can't help with that request." });
    t.match(r.error, { class: 'refusal', code: 'refusal', retryable: false, reask: false, fallback: true });
    t.match(r.error?.message, `${who}: the model refused`);
  });

  t.test(`${protocol}: truncation → truncated, no re-ask`, async (t) => {
    const { record: r } = await exchange(t, target, { text: '{"sentiment":"posi', finish: 'length' }, { maxOutputTokens: 5 });
    t.match(r, { ok: false, finishReason: 'length', finishReasonRaw: target.length, text: '{"sentiment":"posi' });
    t.match(r.error, { class: 'truncated', code: 'max_tokens', retryable: false, reask: false, fallback: true });
    t.match(r.error?.message, /maxOutputTokens/);
  });

  t.test(`${protocol}: an answer cut mid-string with a normal finish → truncated, not repaired`, async (t) => {
    const { record: r } = await exchange(t, target, { text: '{"sentiment":"positive","score":0.8,"summary":"great fo', finish: 'stop' });
    t.equal(r.ok, false, 'not accepted');
    t.equal(r.output, undefined, 'no output stored as valid');
    t.match(r.error, { class: 'truncated', code: 'cut_off', retryable: false, reask: false, fallback: true });
    t.match(r.error?.message, /ends inside a string: it was cut off/);
  });

  const cases: { name: string; reply: Reply; expect: Record<string, unknown>; message?: RegExp }[] = [
    { name: '400', reply: { status: 400, body: target.error('invalid_request_error', 'response_format is invalid') },
      expect: { class: 'client', code: 'bad_request', retryable: false, fallback: false, httpStatus: 400 }, message: /HTTP 400: response_format is invalid\. Check the request parameters/ },
    { name: '401', reply: { status: 401, body: target.error('authentication_error', 'invalid x-api-key'), requestId: 'req_401' },
      expect: { class: 'client', code: 'unauthorized', retryable: false, reask: false, fallback: false, httpStatus: 401, requestId: 'req_401' },
      message: new RegExp(`^${who}: HTTP 401: invalid x-api-key\\. Check the API key in ${target.keyEnv}\\.$`) },
    { name: '404', reply: { status: 404, body: target.error('not_found_error', 'model not found') },
      expect: { class: 'client', code: 'not_found', httpStatus: 404 }, message: new RegExp(`Check the model name "${target.modelId}" and the base URL`) },
    { name: '408', reply: { status: 408, body: target.error('timeout', 'request timeout') },
      expect: { class: 'transport', code: 'request_timeout', retryable: true, reask: false, httpStatus: 408 } },
    { name: '429 with Retry-After in seconds', reply: { status: 429, body: target.error('rate_limit_error', 'slow down'), headers: { 'retry-after': '7' }, requestId: 'req_429' },
      expect: { class: 'transport', code: 'rate_limited', retryable: true, retryAfterMs: 7000, httpStatus: 429, requestId: 'req_429' } },
    { name: '500', reply: { status: 500, body: target.error('api_error', 'internal error') },
      expect: { class: 'transport', code: 'server_error', retryable: true, fallback: true, httpStatus: 500 }, message: /HTTP 500 \(server error\): internal error/ },
    protocol === 'openai'
      ? { name: '429 insufficient_quota', reply: { status: 429, headers: { 'retry-after': '20' }, body: target.error('insufficient_quota', 'You exceeded your current quota, please check your plan and billing details.') },
        expect: { class: 'quota', code: 'insufficient_quota', retryable: false, reask: false, fallback: true, httpStatus: 429, retryAfterMs: undefined } }
      : { name: '400 credit balance too low', reply: { status: 400, body: target.error('invalid_request_error', 'Your credit balance is too low to access the Anthropic API.') },
        expect: { class: 'quota', code: 'insufficient_quota', retryable: false, fallback: true, httpStatus: 400 } },
    protocol === 'openai'
      ? { name: '503', reply: { status: 503, body: target.error('server_error', 'unavailable') }, expect: { class: 'transport', code: 'server_error', retryable: true, httpStatus: 503 } }
      : { name: '529 overloaded', reply: { status: 529, body: target.error('overloaded_error', 'Overloaded') }, expect: { class: 'transport', code: 'overloaded', retryable: true, httpStatus: 529 } },
  ];
  for (const c of cases) {
    t.test(`${protocol}: HTTP ${c.name}`, async (t) => {
      const { record: r } = await exchange(t, target, c.reply);
      t.equal(r.ok, false);
      t.equal(r.text, null);
      t.equal(r.httpStatus, c.expect.httpStatus);
      t.match(r.error, c.expect);
      if ('retryAfterMs' in c.expect && c.expect.retryAfterMs === undefined) t.notOk(r.error && 'retryAfterMs' in r.error, 'no retry-after for quota');
      t.match(r.error?.message, new RegExp(`^${who}: `), 'the message names the provider and model');
      if (c.message) t.match(r.error?.message, c.message);
    });
  }

  t.test(`${protocol}: 429 with Retry-After as an HTTP date`, async (t) => {
    const at = new Date(Date.now() + 30_000);
    const { record: r } = await exchange(t, target, { status: 429, body: target.error('rate_limit_error', 'slow down'), headers: { 'retry-after': at.toUTCString() } });
    t.match(r.error, { class: 'transport', code: 'rate_limited', retryable: true });
    // toUTCString drops the milliseconds: the wait is at most 30 s and at least 30 s minus a second and the call.
    t.ok(r.error!.retryAfterMs! <= 30_000 && r.error!.retryAfterMs! > 25_000, `retryAfterMs ${r.error?.retryAfterMs} is about 30 s`);
  });

  t.test(`${protocol}: a server that never answers is aborted at timeoutMs → transport timeout`, async (t) => {
    const { record: r, request } = await exchange(t, target, { hang: 'headers' }, { timeoutMs: 400 });
    t.match(r.error, { class: 'transport', code: 'timeout', retryable: true, reask: false });
    t.match(r.error?.message, `${who}: no complete response within 400 ms`);
    t.ok(r.timings.latencyMs >= 395 && r.timings.latencyMs < 2400, `gave up at ${r.timings.latencyMs} ms (limit 400)`);
    await request.closed;
    t.equal(request.clientAborted, true, 'the server saw the request abandoned');
  });

  t.test(`${protocol}: the caller's signal aborts the call → aborted`, async (t) => {
    const controller = new AbortController();
    fake.script(protocol, { hang: 'headers' });
    const n = fake.requests.length + 1;
    const pending = callModel({ model: target.model, prompt: 'hi', timeoutMs: 10_000, signal: controller.signal, providers });
    await fake.waitForRequests(n);
    controller.abort();
    const r = await pending;
    t.match(r.error, { class: 'aborted', retryable: false, fallback: false });
    t.ok(r.timings.latencyMs < 5000, 'did not wait for the timeout');
  });

  t.test(`${protocol}: streamed output records the first token`, async (t) => {
    const { record: r, request } = await exchange(t, target, { text: GOOD, requestId: 'req_stream', chunkGapMs: 60, usage: { input: 20, output: 9 } }, { stream: true });
    t.equal(request.body.stream, true, 'the adapter streamed');
    t.match(r, { ok: true, text: GOOD, finishReason: 'stop', finishReasonRaw: target.stop, requestId: 'req_stream', httpStatus: 200 });
    t.same(r.output, { sentiment: 'positive', score: 0.8 });
    t.match(r.usage, { inputTokens: 20, outputTokens: 9 });
    // Bounded by what the server did, not by how fast this process ran: seen no earlier than the first chunk was
    // sent, and the call ended no earlier than the server ended the stream (60 ms after the first chunk).
    const first = r.timings.firstTokenAt?.getTime() ?? NaN;
    t.ok(first >= request.firstChunkAt! && first <= r.timings.endedAt.getTime(), 'first token between the first chunk and the end');
    t.ok(r.timings.endedAt.getTime() >= request.endedAt!, 'ended after the server ended the stream');
  });

  t.test(`${protocol}: a stream that stalls after the first chunk times out, keeping the partial text`, async (t) => {
    const { record: r, request } = await exchange(t, target, { text: GOOD, hang: 'after-first-chunk' }, { stream: true, timeoutMs: 400 });
    t.match(r.error, { class: 'transport', code: 'timeout', retryable: true });
    t.equal(r.text, GOOD.slice(0, 8), 'the first chunk is kept for the trace');
    // Only the first chunk ever came, so the first-token time can only be from it.
    t.ok(r.timings.firstTokenAt!.getTime() >= request.firstChunkAt!, 'first token recorded from the first chunk');
    await request.closed;
    t.equal(request.clientAborted, true);
  });
}

t.test('openai: content filter → refusal class, code content_filter', async (t) => {
  const { record: r } = await exchange(t, targets[0]!, { text: '', finish: 'content_filter' });
  t.match(r, { ok: false, finishReason: 'content_filter', finishReasonRaw: 'content_filter' });
  t.match(r.error, { class: 'refusal', code: 'content_filter', retryable: false, reask: false, fallback: true });
});

t.test('anthropic: an overloaded_error event inside the stream → transport overloaded', async (t) => {
  const { record: r } = await exchange(t, targets[1]!, { text: GOOD, streamError: { type: 'overloaded_error', message: 'Overloaded' } }, { stream: true });
  t.match(r.error, { class: 'transport', code: 'overloaded', retryable: true, httpStatus: 529 });
});

t.test('anthropic: older models get the schema as a forced JSON tool, answered by tool_use', async (t) => {
  const { record: r, request } = await exchange(t, { ...targets[1]!, model: 'anthropic:claude-3-haiku-20240307' }, { text: GOOD });
  t.equal(request.body.tools?.[0]?.name, 'json', 'the adapter used the JSON tool');
  t.match(r, { ok: true, finishReasonRaw: 'tool_use', finishReason: 'stop' });
  t.same(r.output, { sentiment: 'positive', score: 0.8 });
});

t.test('openai-compatible servers by config: native json_schema, or the schema in the system prompt', async (t) => {
  const native = await exchange(t, 'vllm:qwen2.5-7b', { text: GOOD });
  t.match(native.record, { ok: true, provider: 'vllm', providerKind: 'openai-compatible', requestedModel: 'qwen2.5-7b' });
  t.equal(native.request.body.response_format?.type, 'json_schema');
  const plain = await exchange(t, 'plain:llama3.1:8b', { text: GOOD });
  t.match(plain.record, { ok: true, requestedModel: 'llama3.1:8b' });
  t.equal(plain.request.body.response_format?.type, 'json_object');
  t.match(plain.request.body.messages?.[0], { role: 'system', content: /matching this JSON Schema: .*"sentiment"/ });
});

t.test('configuration failures are client errors that name what to set, before any request', async (t) => {
  const before = fake.requests.length;
  const noKey = ProviderRegistry.fromEnv([], { OPENAI_BASE_URL: fake.baseURL });
  const r1 = await callModel({ model: 'openai:gpt-4o-mini', prompt: 'hi', timeoutMs: 1000, providers: noKey });
  t.match(r1.error, { class: 'client', code: 'missing_api_key', retryable: false, message: /set OPENAI_API_KEY/ });
  const r2 = await callModel({ model: 'mistral:large', prompt: 'hi', timeoutMs: 1000, providers });
  t.match(r2.error, { class: 'client', code: 'unknown_provider', message: /no provider named "mistral"/ });
  const r3 = await callModel({ model: 'gpt-4o', prompt: 'hi', timeoutMs: 1000, providers });
  t.match(r3.error, { class: 'client', code: 'invalid_model_ref', message: /provider:model/ });
  t.equal(fake.requests.length, before, 'no request was made');
});

t.test('a refused connection → transport connection, retryable', async (t) => {
  const closed = createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as AddressInfo).port;
  await new Promise<void>((r) => closed.close(() => r()));
  const dead = new ProviderRegistry([{ name: 'dead', kind: 'openai-compatible', baseURL: `http://127.0.0.1:${port}/v1` }]);
  const r = await callModel({ model: 'dead:m', prompt: 'hi', timeoutMs: 2000, providers: dead });
  t.match(r.error, { class: 'transport', code: 'connection', retryable: true, message: new RegExp(`could not reach the provider at http://127.0.0.1:${port}/v1`) });
  t.equal(r.httpStatus, null);
});

const ARTICLE = 'Extract the entities, sentiment and a summary from this text:\n' +
  'Marie Curie arrived in Paris on 4 July 1906 and was thrilled with the wonderful new laboratory. It cost $500. The reviews were glowing.';
const Extraction = z.object({
  entities: z.array(z.object({ type: z.string(), value: z.string() })),
  sentiment: z.object({ score: z.number().min(-1).max(1), label: z.enum(['positive', 'negative', 'neutral']) }),
  summary: z.string(),
});

t.test('local provider: real wink-nlp analysis through the same call path', async (t) => {
  const r = await callModel({ model: 'local:wink', prompt: ARTICLE, schema: Extraction, timeoutMs: 10_000 });
  t.equal(r.ok, true, r.error?.message ?? 'ok');
  t.match(r, { provider: 'local', providerKind: 'local', returnedModel: 'wink-eng-lite-web-model', finishReason: 'stop', httpStatus: null });
  t.ok(r.output!.entities.some((e) => e.type === 'DATE' && e.value === '4 July 1906'), 'finds the date');
  t.ok(r.output!.entities.some((e) => e.type === 'MONEY' && e.value === '$500'), 'finds the amount');
  t.ok(r.output!.entities.some((e) => e.type === 'PROPER_NOUN' && e.value === 'Marie Curie'), 'finds the name as a proper noun');
  t.equal(r.output!.sentiment.label, 'positive');
  t.ok(r.output!.sentiment.score > 0, `sentiment ${r.output!.sentiment.score} > 0`);
  t.equal(r.output!.summary, 'Marie Curie arrived in Paris on 4 July 1906 and was thrilled with the wonderful new laboratory.');
  t.ok(r.usage.inputTokens! > 20 && r.usage.outputTokens! > 10, 'usage counts wink tokens');
  const again = await callModel({ model: 'local:wink', prompt: ARTICLE, schema: Extraction, timeoutMs: 10_000 });
  t.equal(again.text, r.text, 'deterministic');
});

t.test('local provider: streaming, limits and contracts it cannot meet', async (t) => {
  const streamed = await callModel({ model: 'local:wink', prompt: '<text>The service was terrible.</text>', timeoutMs: 10_000, stream: true });
  t.equal(streamed.ok, true);
  t.ok(streamed.timings.firstTokenAt, 'first token recorded');
  t.match(JSON.parse(streamed.text!), { sentiment: { label: 'negative' }, summary: 'The service was terrible.' });
  const cut = await callModel({ model: 'local:wink', prompt: ARTICLE, schema: Extraction, maxOutputTokens: 5, timeoutMs: 10_000 });
  t.match(cut.error, { class: 'truncated', code: 'max_tokens' });
  const author = await callModel({ model: 'local:wink', prompt: ARTICLE, schema: z.object({ author: z.string(), summary: z.string() }), timeoutMs: 10_000 });
  t.match(author.error, { class: 'schema', code: 'schema_violation' });
  t.same(author.error?.issues?.map((i) => i.path), ['author'], 'it leaves out what it cannot know instead of inventing it');
  const unknown = await callModel({ model: 'local:gpt-5', prompt: 'hi', timeoutMs: 1000 });
  t.match(unknown.error, { class: 'client', code: 'unknown_model', message: /local has no model "gpt-5"/ });
});

t.test('provider configuration from the environment', async (t) => {
  t.same(parseModelRef('ollama:llama3.1:8b'), { provider: 'ollama', modelId: 'llama3.1:8b' });
  t.throws(() => parseModelRef('gpt-4o'), /not of the form provider:model/);
  const list = providersFromEnv({ OPENAI_API_KEY: 'k', BALLAST_OPENAI_COMPATIBLE_URL: 'http://gpu-1:8000/v1', BALLAST_OPENAI_COMPATIBLE_NAME: 'vllm',
    BALLAST_OPENAI_COMPATIBLE_API_KEY: 'vk', BALLAST_OPENAI_COMPATIBLE_STRUCTURED_OUTPUTS: '0', OLLAMA_BASE_URL: 'http://box:11434/v1' });
  t.same(list.map((p) => `${p.name}:${p.kind}`), ['openai:openai', 'anthropic:anthropic', 'ollama:openai-compatible', 'local:local', 'vllm:openai-compatible']);
  t.match(list.find((p) => p.name === 'vllm'), { baseURL: 'http://gpu-1:8000/v1', apiKey: 'vk', structuredOutputs: false });
  t.match(list.find((p) => p.name === 'ollama'), { baseURL: 'http://box:11434/v1' });
  t.equal(list.find((p) => p.name === 'anthropic')?.apiKey, undefined);
  t.throws(() => new ProviderRegistry([{ name: 'x', kind: 'openai-compatible' }]), /needs a baseURL/);
});

t.test('Retry-After: milliseconds, seconds, HTTP dates', async (t) => {
  const now = Date.parse('2030-01-01T00:00:00Z');
  t.equal(retryAfterMs({ 'retry-after-ms': '1500', 'retry-after': '9' }, now), 1500, 'retry-after-ms wins');
  t.equal(retryAfterMs({ 'Retry-After': '2.5' }, now), 2500);
  t.equal(retryAfterMs({ 'retry-after': 'Tue, 01 Jan 2030 00:00:42 GMT' }, now), 42_000);
  t.equal(retryAfterMs({ 'retry-after': 'Mon, 31 Dec 2029 23:59:00 GMT' }, now), 0, 'a past date means now');
  t.equal(retryAfterMs({ 'retry-after': 'soon' }, now), undefined);
  t.equal(retryAfterMs({}, now), undefined);
});

t.test('local JSON repair', async (t) => {
  t.match(parseJsonOutput('{"a": 1}'), { ok: true, value: { a: 1 }, repaired: false });
  t.match(parseJsonOutput('```json\n{"a": [1, 2,],}\n```'), { ok: true, value: { a: [1, 2] }, repaired: true });
  t.match(parseJsonOutput('Sure! {"a": "b"} Hope this helps.'), { ok: true, value: { a: 'b' }, repaired: true });
  t.match(parseJsonOutput('{"a": {"b": "unterminated'), { ok: false, truncated: true, reason: /ends inside a string/ },
    'an answer cut mid-string is truncated, not repaired into a shorter value');
  t.match(parseJsonOutput('{"a": [1, 2'), { ok: false, truncated: true, reason: /open array or object/ }, 'cut with brackets open: truncated');
  t.match(parseJsonOutput('```json\n{"a": "}"}\n```'), { ok: true, value: { a: '}' } }, 'a bracket inside a string is not an open one');
  t.match(parseJsonOutput("{'a': True, b: None}"), { ok: true, value: { a: true, b: null } });
  t.match(parseJsonOutput('I cannot help with that.'), { ok: false, reason: /no JSON object or array/ });
  t.match(parseJsonOutput(''), { ok: false });
});
