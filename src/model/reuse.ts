// Paid once (issue 16; migrations/0042_paid_once.sql): a model answer already paid for is not bought again. Before a
// provider call the ladder computes the request's key and asks Postgres for a stored answer to it (the step's own
// earlier attempts, or with the pipeline's cache on, its tenant's other jobs); a found one comes back as the record a
// fresh call would have made, parsed and checked against the contract again, and is traced as a reuse (cost 0, the
// original's cost saved) with no budget reserved.
import { createHash } from 'node:crypto';
import type { ModelMessage } from 'ai';
import type { z } from 'zod';
import { checkOutput } from './call.ts';
import { classifyFinish, type FinishReason } from './classify.ts';
import type { ProviderKind } from './providers.ts';
import { NO_USAGE, type ModelCallRecord } from './record.ts';
import type { ModelStore, StoredAnswer } from '../db/model-store.ts';
import { ballastMetrics } from '../metrics.ts';

/** What a call asks: everything that can change the answer (not the timeout, not streaming). */
export interface ModelRequest {
  /** `provider:model`. */
  model: string;
  system: string | undefined;
  messages: ModelMessage[];
  /** The output contract's JSON Schema text (null without one). */
  schemaJson: string | null;
  temperature: number | undefined;
  maxOutputTokens: number;
}

/**
 * The request key: the SHA-256 of the request as JSON, in a fixed order. Structured mode is the presence of a
 * schema; the version tag changes if what goes into the key ever does, so old keys stop matching rather than
 * matching wrongly.
 */
export function requestKey(r: ModelRequest): string {
  const canonical = JSON.stringify(['ballast.request/1', r.model, r.system ?? null, r.messages, r.schemaJson,
    r.temperature ?? null, r.maxOutputTokens, r.schemaJson !== null]);
  return createHash('sha256').update(canonical).digest('hex');
}

/**
 * A stored answer as the record of a call that returned it just now: finish reason classified, text parsed, repaired
 * locally and checked against `schema` as callModel does. No usage (nothing was consumed), no HTTP exchange.
 */
export function reusedRecord<O>(stored: StoredAnswer, model: string, schema: z.ZodType<O>, parameters: ModelCallRecord['parameters']): ModelCallRecord<O> {
  const colon = model.indexOf(':');
  const provider = model.slice(0, colon);
  const requestedModel = model.slice(colon + 1);
  const now = new Date();
  const finish = (stored.finishReason ?? 'stop') as FinishReason;
  const rec: ModelCallRecord<O> = {
    ok: false, provider, providerKind: stored.providerKind as ProviderKind | null, model, requestedModel, returnedModel: stored.returnedModel,
    parameters, text: stored.rawOutput, json: undefined, output: undefined, repair: null, finishReasonRaw: stored.finishReasonRaw,
    finishReason: finish, usage: { ...NO_USAGE }, timings: { startedAt: now, firstTokenAt: null, endedAt: now, latencyMs: 0 },
    httpStatus: null, requestId: null, responseId: null, warnings: [], providerMetadata: undefined, error: null,
  };
  rec.error = classifyFinish(finish, stored.finishReasonRaw ?? undefined, stored.rawOutput, { provider, modelId: requestedModel }) ?? null;
  if (!rec.error) {
    const checked = checkOutput(stored.rawOutput, schema, `${provider} model ${requestedModel}`);
    rec.json = checked.json;
    rec.output = checked.output;
    rec.repair = checked.repaired ? 'json_repair' : null;
    rec.error = checked.error ?? null;
  }
  rec.ok = !rec.error;
  return rec;
}

/** The stored answer to `key` this attempt may use, as a call record; null when the provider must be called. */
export async function findReused<O>(store: ModelStore, attemptId: string, key: string, model: string, schema: z.ZodType<O>,
  parameters: ModelCallRecord['parameters']): Promise<{ stored: StoredAnswer; record: ModelCallRecord<O> } | null> {
  const stored = await store.findReusableCall(attemptId, key);
  return stored ? { stored, record: reusedRecord(stored, model, schema, parameters) } : null;
}

/** Counts a reuse in this process's metrics: a call not made, and what it would have cost. */
export function countReuse(provider: string, model: string, stored: StoredAnswer): void {
  const labels = { provider, model, kind: stored.kind };
  ballastMetrics.modelReused.inc(labels);
  if (stored.costUsd) ballastMetrics.modelCostSaved.inc(labels, stored.costUsd);
}
