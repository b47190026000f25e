// The contract ladder (issue 5): one attempt of a model step. Model output is an untrusted upstream; it
// crosses the step's zod contract before anything downstream sees it, and every crossing is recorded.
//
// Per model, in order (the step's model, then its fallbacks):
//   paid once          a stored answer to the very same request (an earlier attempt of the step, a replay's, the
//                      pipeline's cache: reuse.ts) is used instead of a call, as if it had just arrived;
//   before each call   ballast.begin_model_call: a shared cooldown in force (a 429/529 seen by any worker) skips the
//                      call (below); the tenant's budget reserves the call's highest cost or is exhausted (pause or
//                      fail);
//   the call           callModel: structured output, local JSON repair, zod;
//   after each call    ballast.record_model_call: the trace row, its cost (an answer without usage costs the
//                      reservation's estimate), the budget settled, the cooldown set; stored before the quality
//                      checks run (their verdict follows), so an answer survives a check that throws;
//   on the answer      usable -> quality rules and score; a failure moves by its class:
//     transport        retry the whole step later while attempts remain, after the later of the provider's
//                      Retry-After and the end of the cooldown a 429/529 set; on the last attempt, the next model;
//     quota, truncated, refusal                 the next model (no re-ask);
//     unparsable, schema                        re-ask the same model with what was wrong (bounded), then the next;
//     client           fail at once with the provider's message (config errors do not get better);
//     aborted          the step's signal (timeout, cancellation, shutdown): the runner records it.
// When every model failed: the declared default value (outcome `degraded`), else human review where the step says
// its blast radius is high (`needs_review`), else a permanent failure (outcome `rejected`).
//
// A model cooling down is not called. A cooldown with at most cooldownWaitMs left (by the database's clock) is
// waited out, once per call. Otherwise the skipped call is traced (class cooldown) and:
//   - no call made yet in this attempt: the next model is tried at once; when every model is cooling down, the
//     attempt is parked, not charged against max_attempts, and the step comes back when the first of their
//     cooldowns ends (ballast.pause_for_cooldown), whatever the attempt's number;
//   - calls already made (a re-ask, a fallback): they cost money, so the attempt counts: the step retries after the
//     cooldown while attempts remain; on the last attempt, the next model.
// This cannot loop for ever: a park lasts until a cooldown ends (at most 7 days), a cooldown exists only because a
// provider refused a real call (or an operator set one), and every attempt that made a call is charged.
import type { ModelMessage } from 'ai';
import { z } from 'zod';
import { callModel } from './call.ts';
import type { ModelFailure } from './failure.ts';
import { Prompt, PromptLabel, promptRef, type PromptOption } from './prompt.ts';
import { getPromptVersion, resolvePrompt } from '../db/prompts.ts';
import type { ModelCallRecord } from './record.ts';
import { countReuse, findReused, requestKey } from './reuse.ts';
import { ModelStore, type CallPermit, type ModelCallTrace, type RecordedCall, type StoredAnswer } from '../db/model-store.ts';
import type { BallastDb } from '../db/api.ts';
import type { ContractOutcome } from '../db/schema.ts';
import { BallastError, PermanentError, RetryableError, translateError } from '../errors.ts';
import type { AttemptRun, StepEnd } from '../pipeline/protocol.ts';
import { ballastMetrics } from '../metrics.ts';
import { rawOutputText } from '../worker/storable.ts';

export type { QualityRule, QualityPolicy, ModelPolicy, ModelStepSpec } from './spec.ts';
import type { QualityPolicy, ModelStepSpec } from './spec.ts';

/** A failure as the ladder sees it: a model failure, or a failed quality check, cooldown or budget. */
interface Miss {
  class: string;
  code: string;
  message: string;
}

const registered = new WeakMap<BallastDb, Map<string, Promise<string>>>();
const contracts = new WeakMap<z.ZodType, string>();

/** The output contract as the JSON Schema text sent with each call, converted once per contract. */
function contractJson(schema: z.ZodType): string {
  let json = contracts.get(schema);
  if (json === undefined) contracts.set(schema, (json = JSON.stringify(z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }))));
  return json;
}

/** Registers the prompt version once per process and database; returns its content hash. */
async function promptHash(store: ModelStore, db: BallastDb, prompt: Prompt): Promise<string> {
  let cache = registered.get(db);
  if (!cache) registered.set(db, (cache = new Map()));
  let hash = cache.get(prompt.ref);
  if (!hash) {
    hash = store.registerPrompt(prompt.name, prompt.version, prompt.template()).then((r) => r.hash);
    cache.set(prompt.ref, hash);
    hash.catch(() => cache.delete(prompt.ref));
  }
  try {
    return await hash;
  } catch (err) {
    if (err instanceof BallastError && err.code === 'prompt_version_conflict') {
      throw new PermanentError(err.message, { errorClass: 'prompt', code: err.code, cause: err });
    }
    throw err;
  }
}

/** A model step's spec with its prompt resolved to the version this attempt uses. */
type PinnedSpec<O> = ModelStepSpec<O> & { prompt: Prompt };

/**
 * The prompt version this attempt uses and its hash. A version in code is registered once per process; a label is
 * resolved by ballast.resolve_prompt, which pins the version for the job at its first call (every later step, retry
 * and replay of the job gets the same one); a stored version is read from ballast.prompts.
 */
async function promptFor(store: ModelStore, run: AttemptRun, option: PromptOption): Promise<{ prompt: Prompt; hash: string }> {
  const ref = promptRef(option);
  if (ref instanceof Prompt) return { prompt: ref, hash: await promptHash(store, run.db, ref) };
  let stored;
  try {
    stored = ref instanceof PromptLabel
      ? await resolvePrompt(run.db.pool, run.ctx.jobId, ref.name, ref.label)
      : await getPromptVersion(run.db.pool, ref.name, ref.version);
  } catch (err) {
    const e = translateError(err);
    // A label that does not exist (or a bad name) will not appear by retrying the step: fail it, saying what to do.
    if (e instanceof BallastError && e.code === 'invalid_input') throw new PermanentError(e.message, { errorClass: 'prompt', code: 'unknown_label', cause: e });
    throw e;
  }
  if (!stored) {
    throw new PermanentError(`prompt ${ref.ref} is not stored: create it (ballast.create_prompt_version) or name an existing version`,
      { errorClass: 'prompt', code: 'unknown_prompt' });
  }
  const prompt = new Prompt({ name: ref.name, version: stored.version, system: stored.template.system ?? undefined, user: stored.template.user });
  if ('arm' in stored) run.ctx.log.debug({ prompt: prompt.ref, label: ref.ref, arm: stored.arm }, 'prompt label resolved');
  return { prompt, hash: stored.contentHash };
}

/**
 * An upper bound on a call's input tokens, so a budget reservation covers the call's real cost: byte-level BPE
 * tokenizers (OpenAI's, Anthropic's) never spend less than one byte of text per token, so the UTF-8 bytes of
 * everything sent (system prompt, messages, the output contract's JSON Schema) bound the text's tokens; 16 a message
 * and 512 in all cover the framing (roles, structured-output or tool-use preambles). For English that is about four
 * times the real count: reservations err on the side of the budget, and each is replaced by the actual cost as soon
 * as the call returns.
 */
export function inputTokenBound(system: string | undefined, messages: ModelMessage[], schemaJson: string): number {
  let bytes = Buffer.byteLength(system ?? '') + Buffer.byteLength(schemaJson);
  for (const m of messages) bytes += Buffer.byteLength(typeof m.content === 'string' ? m.content : JSON.stringify(m.content));
  return bytes + 16 * messages.length + 512;
}

function reaskText(f: ModelFailure): string {
  if (f.class === 'schema' && f.issues?.length) {
    return `Your previous answer did not satisfy the required JSON contract:\n${f.issues.map((i) => `- ${i.path}: ${i.message}`).join('\n')}\n` +
      'Answer again with one JSON value that fixes every problem listed, and nothing else.';
  }
  return `Your previous answer was not valid JSON (${f.message}). Answer again with one JSON value only, no prose and no code fence.`;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => { signal.removeEventListener('abort', onAbort); resolve(); }, ms);
    const onAbort = () => { clearTimeout(t); reject(signal.reason); };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

interface TraceMeta {
  rung: ModelCallTrace['rung'];
  /** begin_model_call's estimate: what an answer without usage is charged. */
  estimateUsd?: number | null;
  modelIndex: number;
  prompt: Prompt;
  hash: string;
  score?: number | null;
  quality?: unknown;
  miss?: Miss | null;
  /** Paid once: the request's key, and the stored answer used instead of a call (src/model/reuse.ts). */
  requestKey?: string;
  reused?: StoredAnswer;
}

function traceOf(rec: ModelCallRecord, m: TraceMeta): ModelCallTrace {
  const err = rec.error;
  const raw = rawOutputText(rec.text);
  return {
    rung: m.rung, model_index: m.modelIndex, provider: rec.provider, provider_kind: rec.providerKind,
    requested_model: rec.requestedModel, returned_model: rec.returnedModel,
    prompt_name: m.prompt.name, prompt_version: m.prompt.version, prompt_hash: m.hash, parameters: rec.parameters,
    started_at: rec.timings.startedAt.toISOString(), first_token_at: rec.timings.firstTokenAt?.toISOString() ?? null,
    ended_at: rec.timings.endedAt.toISOString(), latency_ms: rec.timings.latencyMs,
    finish_reason_raw: rec.finishReasonRaw, finish_reason: rec.finishReason,
    input_tokens: rec.usage.inputTokens, output_tokens: rec.usage.outputTokens, cached_input_tokens: rec.usage.cachedInputTokens,
    cache_write_tokens: rec.usage.cacheWriteTokens, reasoning_tokens: rec.usage.reasoningTokens,
    error_class: err?.class ?? m.miss?.class ?? null, error_code: err?.code ?? m.miss?.code ?? null,
    error_message: err?.message ?? m.miss?.message ?? null, retryable: err ? err.retryable : null,
    retry_after_ms: err?.retryAfterMs ?? null, http_status: rec.httpStatus, request_id: rec.requestId, response_id: rec.responseId,
    raw_output: raw, validation_issues: err?.issues ?? null, repair_method: rec.repair, score: m.score ?? null,
    quality: m.quality ?? null, usage_missing: !m.reused && usageMissing(rec), estimate_usd: m.estimateUsd ?? null,
    request_key: m.requestKey ?? null, output_complete: raw !== null && raw === rec.text, reused_from: m.reused?.callId ?? null,
  };
}

/**
 * An answer came back (HTTP 2xx, or text from a provider without HTTP) without saying how many tokens it used: the
 * provider may bill it, so it is charged the reservation's estimate. A call that got no answer (an HTTP error, no
 * connection, a timeout before the response began) is not.
 */
function usageMissing(rec: ModelCallRecord): boolean {
  const answered = rec.httpStatus !== null ? rec.httpStatus >= 200 && rec.httpStatus < 300 : rec.text !== null;
  return answered && (rec.usage.inputTokens === null || rec.usage.outputTokens === null);
}

/** The later of two waits in ms; undefined when neither is known. */
function laterOf(a: number | null | undefined, b: number | null | undefined): number | undefined {
  if (a == null) return b ?? undefined;
  return b == null ? a : Math.max(a, b);
}

/** A call that was not made (cooldown, budget): still a row, so nothing is silent. */
function skippedTrace(model: string, miss: Miss, m: Omit<TraceMeta, 'miss'>): ModelCallTrace {
  const colon = model.indexOf(':');
  const now = new Date().toISOString();
  return {
    rung: m.rung, model_index: m.modelIndex, provider: model.slice(0, colon), provider_kind: null,
    requested_model: model.slice(colon + 1), returned_model: null, prompt_name: m.prompt.name,
    prompt_version: m.prompt.version, prompt_hash: m.hash, parameters: null, started_at: now, first_token_at: null,
    ended_at: now, latency_ms: 0, finish_reason_raw: null, finish_reason: null, input_tokens: null, output_tokens: null,
    cached_input_tokens: null, cache_write_tokens: null, reasoning_tokens: null, error_class: miss.class,
    error_code: miss.code, error_message: miss.message, retryable: miss.class === 'cooldown', retry_after_ms: null,
    http_status: null, request_id: null, response_id: null, raw_output: null, validation_issues: null,
    repair_method: null, score: null, quality: null, usage_missing: false,
  };
}

/** Runs the quality rules and score on contract-valid output; returns the miss, if any, and the score. */
async function checkQuality<O>(q: QualityPolicy<O> | undefined, output: O): Promise<{ miss: Miss | null; score: number | null; results: unknown }> {
  if (!q) return { miss: null, score: null, results: null };
  const failed: { rule: string; problem: string }[] = [];
  for (const rule of q.rules ?? []) {
    const r = rule.check(output);
    if (r !== true) failed.push({ rule: rule.name, problem: typeof r === 'string' ? r : 'failed' });
  }
  let score: number | null = null;
  if (q.score) {
    score = await q.score(output);
    if (typeof score !== 'number' || !Number.isFinite(score) || score < 0 || score > 1) {
      throw new PermanentError(`quality score function returned ${String(score)}, not a number from 0 to 1`, { errorClass: 'quality', code: 'bad_score' });
    }
  }
  const threshold = q.threshold ?? 0.5;
  const results = { rules: failed, score, threshold: q.score ? threshold : null };
  if (failed.length) {
    return { miss: { class: 'quality', code: 'rule_failed', message: `quality rules failed: ${failed.map((f) => `${f.rule}: ${f.problem}`).join('; ')}` }, score, results };
  }
  if (score !== null && score < threshold) {
    return { miss: { class: 'quality', code: 'low_score', message: `quality score ${score} is below the threshold ${threshold}` }, score, results };
  }
  return { miss: null, score, results };
}

/** Stores the trace of a call and counts it in this process's metrics. */
async function recordCall(store: ModelStore, attemptId: string, reservationId: string | null, trace: ModelCallTrace): Promise<RecordedCall> {
  const r = await store.recordModelCall(attemptId, reservationId, trace);
  countCall(trace, r);
  return r;
}

/** Counts a recorded call in this process's metrics (a reused answer as a reuse: no call, no latency, no tokens). */
function countCall(trace: ModelCallTrace, r: RecordedCall, reused?: StoredAnswer): void {
  if (reused) return countReuse(trace.provider, trace.requested_model, reused);
  const labels = { provider: trace.provider, model: trace.requested_model };
  ballastMetrics.modelCalls.inc({ ...labels, error_class: trace.error_class ?? 'none' });
  if (trace.error_class !== 'cooldown' && trace.error_class !== 'budget') {
    ballastMetrics.modelLatency.observe(labels, (trace.latency_ms ?? 0) / 1000);
  }
  if (r.costUsd) ballastMetrics.modelCost.inc(labels, r.costUsd);
  const cached = trace.cached_input_tokens ?? 0;
  if (trace.input_tokens) ballastMetrics.modelTokens.inc({ ...labels, direction: 'input' }, Math.max(trace.input_tokens - cached, 0));
  if (cached) ballastMetrics.modelTokens.inc({ ...labels, direction: 'cached_input' }, cached);
  if (trace.output_tokens) ballastMetrics.modelTokens.inc({ ...labels, direction: 'output' }, trace.output_tokens);
}

/**
 * One attempt of a model step (the model kind's run, src/pipeline/kinds/model.ts): returns the output for the runner
 * to complete the step with, or that the attempt was settled here (sent to review, paused for a budget or a
 * cooldown); throws a failure for the runner to record.
 */
export async function runModelLadder<O>(run: AttemptRun, given: ModelStepSpec<O>): Promise<StepEnd> {
  const store = new ModelStore(run.db);
  const { prompt, hash } = await promptFor(store, run, given.prompt);
  const spec: PinnedSpec<O> = { ...given, prompt };
  let rendered: { system: string | undefined; user: string };
  try {
    rendered = prompt.render(spec.vars ? await spec.vars(run.ctx) : { input: run.ctx.input, deps: run.ctx.deps });
  } catch (err) {
    throw new PermanentError((err as Error).message, { errorClass: 'prompt', code: 'missing_variable' });
  }
  const ladder = new Ladder(run, spec, store, hash, rendered);
  for (let mi = 0; mi < ladder.models.length; mi++) {
    const end = await ladder.tryModel(mi);
    if (end) return end;
  }
  return ladder.everyModelFailed();
}

/** What one answer leads to: the step's end, a re-ask of the same model, or the next model. */
type AfterAnswer = StepEnd | 'reask' | 'next';

/** begin_model_call's answer for a call not made because a stored answer is reused: no cooldown, no reservation. */
const NO_PERMIT: CallPermit = {
  cooldownUntil: null, cooldownReason: null, cooldownMs: null, reservationId: null, estimateUsd: null,
  budgetExhausted: false, budgetMessage: null, resumeAt: null, onExhausted: null,
};

/** One attempt's way down the ladder, and what it has seen so far. */
class Ladder<O> {
  readonly models: string[];
  readonly #run: AttemptRun;
  readonly #spec: PinnedSpec<O>;
  readonly #store: ModelStore;
  readonly #hash: string;
  readonly #rendered: { system: string | undefined; user: string };
  readonly #schemaJson: string;
  readonly #lastAttempt: boolean;
  readonly #maxOut: number;
  /** Calls traced in this attempt (also the ones a cooldown skipped); `made`: provider calls really made. */
  #calls = 0;
  #made = 0;
  #reasked = 0;
  #last: Miss | null = null;
  /** The best candidate for a reviewer: the last contract-valid output that failed a quality check, else the last
   * parsed JSON. */
  #proposed: unknown = undefined;
  #lastScore: number | null = null;
  /** Of the models skipped for a cooldown before any call was made: the one whose cooldown ends first. */
  #soonest: { provider: string; modelId: string; waitMs: number } | null = null;

  constructor(run: AttemptRun, spec: PinnedSpec<O>, store: ModelStore, hash: string, rendered: { system: string | undefined; user: string }) {
    this.#run = run;
    this.#spec = spec;
    this.#store = store;
    this.#hash = hash;
    this.#rendered = rendered;
    this.models = [spec.model, ...(spec.fallbacks ?? [])];
    this.#schemaJson = contractJson(spec.output);
    this.#lastAttempt = run.ctx.attempt >= run.ctx.maxAttempts;
    this.#maxOut = spec.maxOutputTokens ?? 1024;
  }

  #detail(extra: Record<string, unknown>) {
    return { prompt: this.#spec.prompt.ref, prompt_hash: this.#hash, calls: this.#calls, reasks: this.#reasked, ...extra };
  }

  /** Calls model `mi`, re-asking it while its answers can be fixed; returns the step's end, or null for the next model. */
  async tryModel(mi: number): Promise<StepEnd | null> {
    const { ctx, attemptId } = this.#run;
    const model = this.models[mi]!;
    const colon = model.indexOf(':');
    const provider = model.slice(0, colon);
    const modelId = model.slice(colon + 1);
    let messages: ModelMessage[] = [{ role: 'user', content: this.#rendered.user }];
    // A cooldown is waited out inline at most once per call: one extended meanwhile is handled as a long one.
    let waited = false;
    for (let ask = 0; ; ) {
      const request = { model, system: this.#rendered.system, messages, temperature: this.#spec.temperature, maxOutputTokens: this.#maxOut };
      const key = requestKey({ ...request, schemaJson: this.#schemaJson });
      const meta = { rung: (ask > 0 ? 'reask' : mi > 0 ? 'fallback' : 'primary') as ModelCallTrace['rung'], modelIndex: mi, prompt: this.#spec.prompt, hash: this.#hash, requestKey: key };
      const timeoutMs = this.#spec.callTimeoutMs ?? 60_000;
      // Paid once: an answer to this very request already stored (an earlier attempt, a replay, the cache) is used
      // instead of a call: no cooldown or budget applies to it, and it does not count as a call made.
      const reused = await findReused(this.#store, attemptId, key, model, this.#spec.output,
        { temperature: request.temperature ?? null, maxOutputTokens: this.#maxOut, timeoutMs, stream: this.#spec.stream ?? false, structured: true });
      const permit = reused ? NO_PERMIT : await this.#store.beginModelCall(attemptId, provider, modelId, inputTokenBound(this.#rendered.system, messages, this.#schemaJson), this.#maxOut);
      if (permit.cooldownUntil) {
        // Time left by the database's clock (the one that set the cooldown), never this process's.
        const waitMs = permit.cooldownMs ?? 0;
        if (!waited && waitMs <= (this.#spec.cooldownWaitMs ?? 1000)) {
          waited = true;
          await sleep(waitMs + 5, ctx.signal);
          continue;
        }
        return this.#coolingDown(model, mi, permit, waitMs, meta);
      }
      if (permit.budgetExhausted) return this.#budgetExhausted(model, permit, meta);
      // A streaming step's subscribers see the answer either way: a reused answer arrives as one batch.
      const onText = this.#spec.stream ? this.#run.tokens?.segment(meta.rung, model) : undefined;
      if (reused && onText && reused.record.text) onText(reused.record.text);
      const rec = reused ? reused.record : await callModel<O>({
        ...request, schema: this.#spec.output, timeoutMs, signal: ctx.signal, stream: this.#spec.stream, providers: this.#run.providers, onText,
      });
      this.#calls++;
      if (!reused) this.#made++;
      waited = false;
      const next = await this.#onAnswer(rec, permit, { ...meta, reused: reused?.stored }, model, mi, ask);
      if (next === 'next') return null;
      if (next !== 'reask') return next;
      ask++;
      this.#reasked++;
      messages = [...messages, { role: 'assistant', content: rec.text ?? '' }, { role: 'user', content: reaskText(rec.error!) }];
    }
  }

  /**
   * The model is cooling down for longer than is worth waiting: traced as a skipped call. Nothing spent yet: the next
   * model, or when every model is cooling down, the attempt parks uncharged until the first cooldown ends. Calls
   * already made: the step retries after the cooldown while attempts remain; on the last attempt, the next model.
   */
  async #coolingDown(model: string, mi: number, permit: CallPermit, waitMs: number, meta: Omit<TraceMeta, 'miss'>): Promise<StepEnd | null> {
    const { attemptId } = this.#run;
    const miss = { class: 'cooldown', code: 'cooldown', message: `${model} is cooling down until ${permit.cooldownUntil!.toISOString()}: ${permit.cooldownReason}` };
    await recordCall(this.#store, attemptId, null, skippedTrace(model, miss, meta));
    this.#calls++;
    if (this.#made === 0 && (!this.#soonest || waitMs < this.#soonest.waitMs)) {
      const colon = model.indexOf(':');
      this.#soonest = { provider: model.slice(0, colon), modelId: model.slice(colon + 1), waitMs };
    }
    if (this.#made === 0 && mi < this.models.length - 1) {
      // Nothing spent yet and another model to try: that is what fallbacks are for.
      this.#last = miss;
      return null;
    }
    if (this.#made === 0) {
      // Every model is cooling down and nothing was spent: the attempt does not count, and the step comes back when
      // the first of their cooldowns ends.
      const soonest = this.#soonest!;
      await this.#run.tokens?.close();
      const parked = await this.#store.pauseForCooldown(attemptId, soonest.provider, soonest.modelId,
        `${miss.message}; the step waits for it (not counted as an attempt)`);
      this.#run.ctx.log.warn({ model, next_run_at: parked.nextRunAt.toISOString() }, 'model step parked for a provider cooldown');
      return { kind: 'settled', stepStatus: parked.stepStatus, message: `model step parked: ${miss.message}` };
    }
    if (!this.#lastAttempt) throw new RetryableError(miss.message, { errorClass: 'transport', code: 'cooldown', retryAfterMs: waitMs });
    this.#last = miss;
    return null;
  }

  /** The tenant's budget cannot cover the call: the step pauses until the budget allows it, or fails. */
  async #budgetExhausted(model: string, permit: CallPermit, meta: Omit<TraceMeta, 'miss'>): Promise<StepEnd> {
    const { attemptId } = this.#run;
    const miss = { class: 'budget', code: 'budget_exhausted', message: permit.budgetMessage ?? 'budget exhausted' };
    await recordCall(this.#store, attemptId, null, skippedTrace(model, miss, meta));
    if (permit.onExhausted === 'pause' && permit.resumeAt) {
      await this.#run.tokens?.close();
      const status = await this.#store.pauseForBudget(attemptId, permit.resumeAt, `${miss.message}; paused until ${permit.resumeAt.toISOString()} or a raised limit`);
      return { kind: 'settled', stepStatus: status, message: `model step paused: ${miss.message}` };
    }
    await this.#store.recordContractOutcome(attemptId, 'rejected', this.#detail({ model, reason: miss.message }));
    throw new PermanentError(miss.message, { errorClass: 'budget_exhausted', code: 'budget_exhausted' });
  }

  /** Traces an answer and decides what it leads to: accepted, review, a re-ask, the next model, or a failure. */
  async #onAnswer(rec: ModelCallRecord, permit: CallPermit, meta: Omit<TraceMeta, 'miss'>, model: string, mi: number, ask: number): Promise<AfterAnswer> {
    const { ctx, attemptId } = this.#run;
    // Paid once: the answer is stored before any code of the step (its quality checks) runs, so that a check that
    // throws, or a worker that dies meanwhile, does not lose it: the retry reuses it. The verdict is added after.
    const trace = traceOf(rec, { ...meta, estimateUsd: permit.estimateUsd });
    const recorded = await this.#store.recordModelCall(attemptId, permit.reservationId, trace);
    let q: Awaited<ReturnType<typeof checkQuality<O>>> = { miss: null, score: null, results: null };
    try {
      if (rec.ok) q = await checkQuality(this.#spec.quality, rec.output as O);
      if (q.results !== null) await this.#store.recordCallQuality(recorded.callId, q.score, q.results, q.miss);
    } finally {
      countCall({ ...trace, error_class: trace.error_class ?? q.miss?.class ?? null }, recorded, meta.reused);
    }
    if (recorded.usageMissing) {
      ctx.log.warn({ model, http_status: rec.httpStatus, charged_usd: recorded.costUsd },
        'the provider reported no token usage: the call is charged its reservation estimate');
    }
    if (rec.ok && !q.miss) {
      const outcome: ContractOutcome = mi > 0 ? 'fell_back' : ask > 0 || rec.repair ? 'repaired' : 'valid_first_try';
      await this.#store.recordContractOutcome(attemptId, outcome, this.#detail({ model, fallback_used: mi > 0, score: q.score, repair: rec.repair }));
      ctx.log.info({ model, outcome, calls: this.#calls, score: q.score }, 'model output accepted');
      return { kind: 'output', value: rec.json };
    }
    if (rec.ok && q.miss) {
      this.#proposed = rec.json;
      this.#lastScore = q.score;
      if (this.#spec.quality?.onFail === 'review') return this.#review(q.miss, rec.json, model, mi);
      this.#last = q.miss;
      return 'next';
    }
    const err = rec.error;
    if (!err) throw new Error('unreachable: a call that is not ok has an error');
    ctx.log.warn({ model, error_class: err.class, error_code: err.code, http_status: rec.httpStatus }, `model call failed: ${err.message}`);
    if (err.class === 'aborted') throw ctx.signal.reason ?? new Error(err.message);
    if (err.class === 'client') {
      await this.#store.recordContractOutcome(attemptId, 'rejected', this.#detail({ model, reason: err.message }));
      throw new PermanentError(err.message, { errorClass: 'client', code: err.code });
    }
    if (err.class === 'transport' && !this.#lastAttempt) {
      // A 429/529 set a shared cooldown (2 s without Retry-After): retrying before it ends would only meet it.
      throw new RetryableError(err.message, { errorClass: 'transport', code: err.code, retryAfterMs: laterOf(err.retryAfterMs, recorded.cooldownMs) });
    }
    if (rec.json !== undefined) this.#proposed = rec.json;
    this.#last = { class: err.class, code: err.code, message: err.message };
    return err.reask && ask < (this.#spec.reasks ?? 2) ? 'reask' : 'next';
  }

  /** Every model failed: the default value (degraded), else a person (review), else a permanent failure. */
  async everyModelFailed(): Promise<StepEnd> {
    const { ctx, attemptId } = this.#run;
    const models = this.models;
    const reason = `every model failed (${models.join(', ')}); last: ${this.#last?.message ?? 'no answer'}`;
    if (Object.hasOwn(this.#spec, 'default')) {
      await this.#store.recordContractOutcome(attemptId, 'degraded', this.#detail({ model: null, fallback_used: models.length > 1, reason }));
      ctx.log.warn({ reason }, 'model step degraded to its default value');
      return { kind: 'output', value: this.#spec.default };
    }
    if (this.#spec.review) return this.#review(this.#last ?? { class: 'unknown', code: 'unknown', message: reason }, this.#proposed, null, models.length - 1, reason);
    await this.#store.recordContractOutcome(attemptId, 'rejected', this.#detail({ model: null, fallback_used: models.length > 1, reason }));
    throw new PermanentError(`model step rejected: ${reason}`, { errorClass: this.#last?.class ?? 'model', code: this.#last?.code });
  }

  async #review(miss: Miss, candidate: unknown, model: string | null, mi: number, why = miss.message): Promise<StepEnd> {
    const { attemptId } = this.#run;
    await this.#store.recordContractOutcome(attemptId, 'review', this.#detail({ model, fallback_used: mi > 0, score: this.#lastScore, reason: why }));
    await this.#run.tokens?.close();
    const r = await this.#store.requestReview(attemptId, candidate ?? null, why, { class: miss.class, code: miss.code, score: this.#lastScore });
    return { kind: 'settled', stepStatus: r.stepStatus, message: `model step waits for a review: ${why}` };
  }
}
