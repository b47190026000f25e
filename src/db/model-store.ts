// The database doorway for model steps (migrations/0009_model_steps_and_budgets.sql): prompts, prices, budgets, cooldowns, call traces, contract
// outcomes and reviews. One typed method per SQL function, beside BallastDb (api.ts), whose pool it uses.
import { sql } from 'kysely';
import * as verbs from './verbs.ts';
import type { BallastDb } from './api.ts';
import type { ContractOutcome, JobStatus, ModelCallsView, StepStatus } from './schema.ts';
import type { Selectable } from 'kysely';
import { translateError } from '../errors.ts';

export type ModelCallRow = Selectable<ModelCallsView>;

/** What begin_model_call decided before a provider call. */
export interface CallPermit {
  /** A shared cooldown is in force for this provider/model until then: do not call. */
  cooldownUntil: Date | null;
  cooldownReason: string | null;
  /** Milliseconds left of that cooldown by the database's clock (ballast.now(); at most 7 days); null without one. */
  cooldownMs: number | null;
  /** The budget reservation to settle with record_model_call; null without a budget (or in cooldown). */
  reservationId: string | null;
  /** USD: the most this call can cost (input estimate and max output tokens at the model's price). */
  estimateUsd: number | null;
  budgetExhausted: boolean;
  budgetMessage: string | null;
  /** When an exhausted budget renews (the next period). */
  resumeAt: Date | null;
  onExhausted: 'pause' | 'fail' | null;
}

/** One provider call as stored in ballast.model_calls (snake_case, as record_model_call reads it). */
export interface ModelCallTrace {
  rung: 'primary' | 'reask' | 'fallback';
  model_index: number;
  provider: string;
  provider_kind: string | null;
  requested_model: string;
  returned_model: string | null;
  prompt_name: string | null;
  prompt_version: number | null;
  prompt_hash: string | null;
  parameters: unknown;
  started_at: string;
  first_token_at: string | null;
  ended_at: string;
  latency_ms: number | null;
  finish_reason_raw: string | null;
  finish_reason: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  cached_input_tokens: number | null;
  cache_write_tokens: number | null;
  reasoning_tokens: number | null;
  error_class: string | null;
  error_code: string | null;
  error_message: string | null;
  retryable: boolean | null;
  retry_after_ms: number | null;
  http_status: number | null;
  request_id: string | null;
  response_id: string | null;
  raw_output: string | null;
  validation_issues: unknown;
  repair_method: string | null;
  score: number | null;
  quality: unknown;
  /**
   * An answer that did not report its input and output tokens: charged the reservation's estimate. Absent:
   * record_model_call decides from http_status (2xx) and the token counts.
   */
  usage_missing?: boolean;
  /** USD: begin_model_call's estimate, charged for missing usage when the call had no budget reservation. */
  estimate_usd?: number | null;
  /** Paid once (0042): the SHA-256 of what was asked (src/model/reuse.ts). */
  request_key?: string | null;
  /** raw_output is the whole answer exactly as received. */
  output_complete?: boolean;
  /** The stored call whose answer this attempt used instead of calling (reusable_model_call's call_id). */
  reused_from?: string | null;
}

/** A stored answer an attempt may use instead of calling its provider (ballast.reusable_model_call). */
export interface StoredAnswer {
  callId: string;
  /** retry: an earlier attempt of the step got it; replay: got before the step was replayed; cache: another job's. */
  kind: 'retry' | 'replay' | 'cache';
  rawOutput: string;
  finishReasonRaw: string | null;
  finishReason: string | null;
  returnedModel: string | null;
  providerKind: string | null;
  /** USD the original call cost (what reusing it saves); null when unpriced. */
  costUsd: number | null;
}

/** What record_model_call returns. */
export interface RecordedCall {
  callId: string;
  /** USD charged (the estimate for an answer without usage); null for an unpriced model. */
  costUsd: number | null;
  /** After a 429/529: the latest cooldown now in force for the provider/model (or the whole provider). */
  cooldownUntil: Date | null;
  /** Milliseconds left of that cooldown by the database's clock (at most 7 days); null without one. */
  cooldownMs: number | null;
  usageMissing: boolean;
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw translateError(err);
  }
}

const num = (v: string | number | null | undefined): number | null => (v === null || v === undefined ? null : Number(v));

export class ModelStore {
  readonly #db: BallastDb;

  constructor(db: BallastDb) {
    this.#db = db;
  }

  async registerPrompt(name: string, version: number, template: { system: string | null; user: string }): Promise<{ created: boolean; hash: string }> {
    return call(async () => {
      const { rows } = await sql<{ created: boolean; content_hash: string }>`
        select * from ballast.register_prompt(${name}, ${version}, ${JSON.stringify(template)}::jsonb)`.execute(this.#db.db);
      return { created: rows[0]!.created, hash: rows[0]!.content_hash };
    });
  }

  async beginModelCall(attemptId: string, provider: string, model: string, inputTokensEstimate: number, maxOutputTokens: number): Promise<CallPermit> {
    return call(async () => {
      const { rows } = await sql<{
        cooldown_until: Date | null; cooldown_reason: string | null; reservation_id: string | null; estimate_usd: string | null;
        budget_exhausted: boolean; budget_message: string | null; resume_at: Date | null; on_exhausted: 'pause' | 'fail' | null;
        cooldown_ms: number | null;
      }>`select * from ballast.begin_model_call(${attemptId}::bigint, ${provider}, ${model}, ${inputTokensEstimate}, ${maxOutputTokens})`.execute(this.#db.db);
      const r = rows[0]!;
      return {
        cooldownUntil: r.cooldown_until, cooldownReason: r.cooldown_reason, cooldownMs: r.cooldown_ms, reservationId: r.reservation_id,
        estimateUsd: num(r.estimate_usd), budgetExhausted: r.budget_exhausted, budgetMessage: r.budget_message,
        resumeAt: r.resume_at, onExhausted: r.on_exhausted,
      };
    });
  }

  async recordModelCall(attemptId: string, reservationId: string | null, trace: ModelCallTrace): Promise<RecordedCall> {
    return call(async () => {
      const { rows } = await sql<{ call_id: string; cost_usd: string | null; cooldown_until: Date | null; cooldown_ms: number | null; usage_missing: boolean }>`
        select * from ballast.record_model_call(${attemptId}::bigint, ${reservationId}::bigint, ${JSON.stringify(trace)}::jsonb)`.execute(this.#db.db);
      const r = rows[0]!;
      return { callId: r.call_id, costUsd: num(r.cost_usd), cooldownUntil: r.cooldown_until, cooldownMs: r.cooldown_ms, usageMissing: r.usage_missing };
    });
  }

  /** The stored answer to this request the attempt may reuse, or null (paid once, migrations/0042_paid_once.sql). */
  async findReusableCall(attemptId: string, requestKey: string): Promise<StoredAnswer | null> {
    return call(async () => {
      const { rows } = await sql<{
        call_id: string; reuse_kind: StoredAnswer['kind']; raw_output: string; finish_reason_raw: string | null; finish_reason: string | null;
        returned_model: string | null; provider_kind: string | null; cost_usd: string | null;
      }>`select * from ballast.reusable_model_call(${attemptId}::bigint, ${requestKey})`.execute(this.#db.db);
      const r = rows[0];
      return r ? {
        callId: r.call_id, kind: r.reuse_kind, rawOutput: r.raw_output, finishReasonRaw: r.finish_reason_raw, finishReason: r.finish_reason,
        returnedModel: r.returned_model, providerKind: r.provider_kind, costUsd: num(r.cost_usd),
      } : null;
    });
  }

  /** The quality checks' verdict on a call recorded before they ran. */
  async recordCallQuality(callId: string, score: number | null, quality: unknown, miss: { class: string; code: string; message: string } | null): Promise<void> {
    await call(() => sql`select ballast.record_call_quality(${callId}::bigint, ${score}::numeric, ${JSON.stringify(quality ?? null)}::jsonb,
      ${miss ? JSON.stringify(miss) : null}::jsonb)`.execute(this.#db.db));
  }

  /** Reuse model answers across the jobs of a pipeline (same tenant) for ttl (a Postgres interval, e.g. '1 day'). */
  async setModelCache(pipeline: string, ttl: string, actor?: string): Promise<void> {
    await call(() => sql`select * from ballast.set_model_cache(${pipeline}, ${ttl}::interval, ${actor ?? null})`.execute(this.#db.db));
  }

  /** Turns a pipeline's answer cache off; returns whether it was on. */
  async stopModelCache(pipeline: string): Promise<boolean> {
    return call(async () => {
      const { rows } = await sql<{ on: boolean }>`select ballast.stop_model_cache(${pipeline}) as on`.execute(this.#db.db);
      return rows[0]!.on;
    });
  }

  async recordContractOutcome(attemptId: string, outcome: ContractOutcome, detail: Record<string, unknown>): Promise<void> {
    await call(() => sql`select ballast.record_contract_outcome(${attemptId}::bigint, ${outcome}, ${JSON.stringify(detail)}::jsonb)`.execute(this.#db.db));
  }

  async pauseForBudget(attemptId: string, resumeAt: Date, message: string): Promise<StepStatus> {
    return call(async () => {
      const { rows } = await sql<{ status: StepStatus }>`
        select ballast.pause_for_budget(${attemptId}::bigint, ${resumeAt}, ${message}) as status`.execute(this.#db.db);
      return rows[0]!.status;
    });
  }

  /**
   * The attempt met a cooldown before making any call: it ends parked (not charged against max_attempts) and the
   * step retries when the cooldown ends (plus a bounded jitter). Returns the step's status and when it runs again.
   */
  async pauseForCooldown(attemptId: string, provider: string, model: string, message: string): Promise<{ stepStatus: StepStatus; nextRunAt: Date }> {
    return call(async () => {
      const { rows } = await sql<{ step_status: StepStatus; next_run_at: Date }>`
        select * from ballast.pause_for_cooldown(${attemptId}::bigint, ${provider}, ${model}, ${message})`.execute(this.#db.db);
      return { stepStatus: rows[0]!.step_status, nextRunAt: rows[0]!.next_run_at };
    });
  }

  async requestReview(attemptId: string, proposed: unknown, reason: string, detail: unknown): Promise<{ stepStatus: StepStatus; jobStatus: JobStatus }> {
    return call(async () => {
      const { rows } = await sql<{ step_status: StepStatus; job_status: JobStatus }>`
        select * from ballast.request_review(${attemptId}::bigint,
          ${proposed === undefined ? null : JSON.stringify(proposed)}::jsonb, ${reason}, ${JSON.stringify(detail ?? null)}::jsonb)`.execute(this.#db.db);
      return { stepStatus: rows[0]!.step_status, jobStatus: rows[0]!.job_status };
    });
  }

  async resolveReview(stepId: string, decision: 'approve' | 'edit' | 'reject', opts: { output?: unknown; reviewer: string; note?: string }): Promise<{ stepStatus: StepStatus; jobStatus: JobStatus; queuedStepIds: string[] }> {
    return call(() => verbs.resolveReview(this.#db.pool, stepId, decision, opts.output, opts.reviewer, opts.note ?? null));
  }

  async setBudget(tenantId: string, limitUsd: number | null, period: 'day' | 'week' | 'month' = 'month', onExhausted: 'pause' | 'fail' = 'pause', actor?: string): Promise<void> {
    await call(() => sql`select ballast.set_budget(${tenantId}, ${limitUsd}::numeric, ${period}, ${onExhausted}, ${actor ?? null})`.execute(this.#db.db));
  }

  async setModelPrice(provider: string, model: string, price: { inputPerMTok: number; outputPerMTok: number; cachedInputPerMTok?: number | null; validFrom?: Date; source?: string }): Promise<void> {
    await call(() => sql`
      select ballast.set_model_price(${provider}, ${model}, ${price.inputPerMTok}::numeric, ${price.outputPerMTok}::numeric,
        ${price.cachedInputPerMTok ?? null}::numeric, ${price.validFrom ?? new Date()}, ${price.source ?? 'operator'})`.execute(this.#db.db));
  }

  async getModelCalls(jobId: string): Promise<ModelCallRow[]> {
    return this.#db.db.selectFrom('ballast.model_calls').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }
}
