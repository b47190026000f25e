// One model call through the AI SDK, returned as a normalised record with a classified failure instead of a thrown
// error. ballast owns retries (maxRetries: 0), the timeout (its own timer, so a timeout is told apart from the
// caller's abort) and parsing: the schema goes to the provider as structured output (json_schema, Anthropic's
// output format or JSON tool), but the SDK does not parse it; callModel parses, repairs locally and validates with
// zod itself, so an unparsable or contract-violating answer still yields its text, tokens and timings.
import { generateText, streamText, Output, type ModelMessage, type OutputInterface, type JSONValue } from 'ai';
import { z } from 'zod';
import { classifyFinish, classifyThrown, failure, normalizeFinish, requestIdFrom, type ModelFailure } from './classify.ts';
import { parseJsonOutput } from './json-repair.ts';
import { ProviderRegistry, type FetchFunction, type ResolvedModel } from './providers.ts';
import { NO_USAGE, providerResponseId, usageOf, warningText, type ModelCallRecord, type ModelUsage } from './record.ts';

export interface CallModelOptions<T = unknown> {
  /** `provider:model`, e.g. openai:gpt-4o-mini. */
  model: string;
  system?: string;
  /** The user prompt; or give `messages`. */
  prompt?: string;
  messages?: ModelMessage[];
  /** Output contract: asks for structured output and validates the answer. Without it the text is the output. */
  schema?: z.ZodType<T>;
  schemaName?: string;
  schemaDescription?: string;
  temperature?: number;
  maxOutputTokens?: number;
  /** The whole call, first byte to last, must finish within this; then it is aborted (transport/timeout). */
  timeoutMs: number;
  /** The caller's signal (a step's ctx.signal): aborts the call (class `aborted`). */
  signal?: AbortSignal;
  /** Stream the response (records the first-token time). Default false. */
  stream?: boolean;
  /** Streaming only: called with each text delta as it arrives (live tokens). A hook that throws is ignored. */
  onText?: (delta: string) => void;
  /** Passed to the adapter as is, e.g. { openai: { strictJsonSchema: false } }. */
  providerOptions?: Record<string, Record<string, JSONValue>>;
  headers?: Record<string, string>;
  /** Default: the providers of the environment (read once). */
  providers?: ProviderRegistry;
}

let envProviders: ProviderRegistry | undefined;

/** What the adapter's HTTP exchange looked like: the last response's status and headers. */
interface Wire {
  status?: number;
  headers?: Record<string, string>;
}

function recordingFetch(wire: Wire): FetchFunction {
  return async (input, init) => {
    const res = await globalThis.fetch(input, init);
    wire.status = res.status;
    wire.headers = Object.fromEntries(res.headers.entries());
    return res;
  };
}

/**
 * The output spec: the provider gets the schema; the text comes back unparsed (callModel parses it). The partial
 * "parse" returns the text so far: streamText only forwards text deltas whose partial output parses.
 */
function rawJsonOutput(schema: z.ZodType, name?: string, description?: string): OutputInterface<string, string, never> {
  return {
    name: 'ballast-json',
    responseFormat: Output.object({ schema, name, description }).responseFormat,
    parseCompleteOutput: async ({ text }) => text,
    parsePartialOutput: async ({ text }) => ({ partial: text }),
    createElementStreamTransform: () => undefined,
  };
}

interface Answer {
  text: string;
  finishReason: string;
  rawFinishReason: string | undefined;
  usage: ModelUsage;
  response: { id?: string; modelId?: string; headers?: Record<string, string> };
  providerMetadata: unknown;
  warnings: string[];
  firstTokenAt: Date | null;
}

type SdkArgs = Parameters<typeof generateText>[0];

function emptyAnswer(): Answer {
  return { text: '', finishReason: 'other', rawFinishReason: undefined, usage: { ...NO_USAGE }, response: {}, providerMetadata: undefined, warnings: [], firstTokenAt: null };
}

async function generate(args: SdkArgs, answer: Answer): Promise<void> {
  const r = await generateText(args);
  Object.assign(answer, {
    text: r.text, finishReason: r.finishReason, rawFinishReason: r.rawFinishReason, usage: usageOf(r.usage),
    response: r.response, providerMetadata: r.providerMetadata, warnings: (r.warnings ?? []).map(warningText),
  });
}

/** Streams into `answer`, so a stream cut short (timeout, error event) still leaves its partial text and first token. */
async function stream(args: SdkArgs, signal: AbortSignal, answer: Answer, onText?: (delta: string) => void): Promise<void> {
  // onError: errors arrive as stream parts and are classified; without it the SDK also prints them to stderr.
  const r = streamText({ ...(args as Parameters<typeof streamText>[0]), onError: () => {} });
  for await (const part of r.fullStream) {
    if (part.type === 'text-delta') {
      if (part.text && !answer.firstTokenAt) answer.firstTokenAt = new Date();
      answer.text += part.text;
      if (onText && part.text) {
        try {
          onText(part.text);
        } catch { /* live tokens never fail the call */ }
      }
    } else if (part.type === 'error') {
      throw part.error;
    } else if (part.type === 'finish-step') {
      answer.finishReason = part.finishReason;
      answer.rawFinishReason = part.rawFinishReason;
      answer.usage = usageOf(part.usage);
      answer.response = part.response;
      answer.providerMetadata = part.providerMetadata;
    }
  }
  if (signal.aborted) throw signal.reason;
  answer.warnings = ((await r.warnings) ?? []).map(warningText);
}

/** The system prompt, plus the JSON Schema in words for servers without native structured output. */
function systemPrompt(options: CallModelOptions<unknown>, resolved: ResolvedModel): string | undefined {
  if (!options.schema || resolved.config.kind !== 'openai-compatible' || resolved.config.structuredOutputs !== false) return options.system;
  const schema = JSON.stringify(z.toJSONSchema(options.schema, { io: 'output', unrepresentable: 'any' }));
  return `${options.system ? `${options.system}\n\n` : ''}Answer with one JSON value only, no prose, matching this JSON Schema: ${schema}`;
}

/** Checks the text against the schema: parse, local repair, zod (also for a stored answer reused, src/model/reuse.ts). */
export function checkOutput<T>(text: string, schema: z.ZodType<T>, who: string): { json?: unknown; output?: T; repaired: boolean; error?: ModelFailure } {
  const parsed = parseJsonOutput(text);
  if (!parsed.ok) {
    return { repaired: false, error: parsed.truncated
      ? failure('truncated', 'cut_off', `${who}: ${parsed.reason}`)
      : failure('unparsable', 'invalid_json', `${who}: the output is not JSON: ${parsed.reason}`) };
  }
  const checked = schema.safeParse(parsed.value);
  if (checked.success) return { json: parsed.value, output: checked.data, repaired: parsed.repaired };
  const issues = checked.error.issues.map((i) => ({ path: i.path.length ? i.path.join('.') : '(root)', message: i.message }));
  return {
    json: parsed.value,
    repaired: parsed.repaired,
    error: failure('schema', 'schema_violation',
      `${who}: the output does not satisfy the contract (${issues.length} problem${issues.length === 1 ? '' : 's'}): ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
      { issues }),
  };
}

/** Calls a model once. Never throws for provider or content failures: they come back classified in `error`. */
export async function callModel<T = unknown>(options: CallModelOptions<T>): Promise<ModelCallRecord<T>> {
  if ((options.prompt === undefined) === (options.messages === undefined)) throw new TypeError('callModel: give exactly one of prompt or messages');
  if (!Number.isInteger(options.timeoutMs) || options.timeoutMs < 1) throw new TypeError(`callModel: timeoutMs must be a positive integer, got ${options.timeoutMs}`);
  // Warnings are returned in the record (and logged by the caller with job context), not printed by the SDK.
  globalThis.AI_SDK_LOG_WARNINGS ??= false;
  const providers = options.providers ?? (envProviders ??= ProviderRegistry.fromEnv());
  await providers.load(options.model); // the adapter's first import is not part of the call's latency
  const startedAt = new Date();
  const t0 = performance.now();
  const wire: Wire = {};
  const timer = new AbortController();
  const timeout = setTimeout(() => timer.abort(new DOMException(`model call exceeded ${options.timeoutMs} ms`, 'TimeoutError')), options.timeoutMs);
  const signal = options.signal ? AbortSignal.any([options.signal, timer.signal]) : timer.signal;
  const colon = options.model.indexOf(':');
  const record: ModelCallRecord<T> = {
    ok: false, provider: colon > 0 ? options.model.slice(0, colon) : options.model, providerKind: null, model: options.model,
    requestedModel: colon > 0 ? options.model.slice(colon + 1) : '', returnedModel: null,
    parameters: { temperature: options.temperature ?? null, maxOutputTokens: options.maxOutputTokens ?? null, timeoutMs: options.timeoutMs, stream: options.stream ?? false, structured: Boolean(options.schema) },
    text: null, json: undefined, output: undefined, repair: null, finishReasonRaw: null, finishReason: null, usage: { ...NO_USAGE },
    timings: { startedAt, firstTokenAt: null, endedAt: startedAt, latencyMs: 0 },
    httpStatus: null, requestId: null, responseId: null, warnings: [], providerMetadata: undefined, error: null,
  };
  let resolved: ResolvedModel | undefined;
  const answer = emptyAnswer();
  try {
    resolved = await providers.resolve(options.model, recordingFetch(wire));
    record.providerKind = resolved.config.kind;
    const base = {
      model: resolved.model, system: systemPrompt(options, resolved), temperature: options.temperature, maxOutputTokens: options.maxOutputTokens,
      maxRetries: 0, abortSignal: signal, providerOptions: options.providerOptions, headers: options.headers,
      ...(options.schema ? { output: rawJsonOutput(options.schema, options.schemaName, options.schemaDescription) } : {}),
    };
    const args = (options.messages ? { ...base, messages: options.messages } : { ...base, prompt: options.prompt! }) as SdkArgs;
    await (options.stream ? stream(args, signal, answer, options.onText) : generate(args, answer));
    const target = { provider: record.provider, modelId: resolved.modelId };
    const headers = wire.headers ?? answer.response.headers;
    Object.assign(record, {
      text: answer.text, finishReasonRaw: answer.rawFinishReason ?? null, finishReason: normalizeFinish(answer.finishReason, answer.rawFinishReason),
      usage: answer.usage, returnedModel: answer.response.modelId ?? null, responseId: providerResponseId(answer.response.id),
      providerMetadata: answer.providerMetadata, warnings: answer.warnings, httpStatus: wire.status ?? null,
    });
    record.requestId = requestIdFrom(headers) ?? record.responseId;
    record.timings.firstTokenAt = answer.firstTokenAt;
    record.error = classifyFinish(record.finishReason!, answer.rawFinishReason, answer.text, target) ?? null;
    if (!record.error && options.schema) {
      const checked = checkOutput(answer.text, options.schema, `${record.provider} model ${resolved.modelId}`);
      record.json = checked.json;
      record.repair = checked.repaired ? 'json_repair' : null;
      record.output = checked.output;
      record.error = checked.error ?? null;
    }
    if (record.error) {
      record.error.httpStatus ??= record.httpStatus ?? undefined;
      record.error.requestId ??= record.requestId ?? undefined;
    }
    record.ok = !record.error;
  } catch (err) {
    const target = { provider: record.provider, modelId: resolved?.modelId ?? record.requestedModel, apiKeyEnv: resolved?.config.apiKeyEnv, baseURL: resolved?.config.baseURL };
    record.error = classifyThrown(err, target, { timedOut: timer.signal.aborted, timeoutMs: options.timeoutMs, aborted: Boolean(options.signal?.aborted) });
    record.httpStatus = record.error.httpStatus ?? wire.status ?? null;
    record.requestId = record.error.requestId ?? requestIdFrom(wire.headers) ?? null;
    if (record.requestId) record.error.requestId = record.requestId;
    // What a stream delivered before it failed, for the trace.
    if (answer.text) record.text = answer.text;
    record.timings.firstTokenAt = answer.firstTokenAt;
  } finally {
    clearTimeout(timeout);
    record.timings.endedAt = new Date();
    record.timings.latencyMs = Math.round((performance.now() - t0) * 10) / 10;
  }
  return record;
}
