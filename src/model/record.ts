// The normalised record of one provider call: the same fields whatever the provider, ready to be stored as a trace
// row (issue 5 §8). Built from what the AI SDK reports plus what ballast's recording fetch saw on the wire.
import type { LanguageModelUsage } from 'ai';
import type { FinishReason, ModelFailure } from './classify.ts';
import type { ProviderKind } from './providers.ts';

export interface ModelUsage {
  inputTokens: number | null;
  outputTokens: number | null;
  /** Input tokens read from the provider's prompt cache (OpenAI cached_tokens, Anthropic cache_read_input_tokens). */
  cachedInputTokens: number | null;
  /** Input tokens written to the prompt cache (Anthropic cache_creation_input_tokens). */
  cacheWriteTokens: number | null;
  reasoningTokens: number | null;
}

export interface ModelTimings {
  startedAt: Date;
  /** When the first text arrived; null when the call was not streamed or produced no text. */
  firstTokenAt: Date | null;
  endedAt: Date;
  latencyMs: number;
}

export interface ModelCallRecord<T = unknown> {
  /** true when the call produced usable output: text, or JSON satisfying the schema when one was given. */
  ok: boolean;
  /** Provider name (the part before the colon). */
  provider: string;
  providerKind: ProviderKind | null;
  /** The model as asked for, `provider:model`. */
  model: string;
  /** The model id sent to the provider. */
  requestedModel: string;
  /** The model id the provider says answered (e.g. gpt-4o-mini-2024-07-18); null when unknown. */
  returnedModel: string | null;
  parameters: { temperature: number | null; maxOutputTokens: number | null; timeoutMs: number; stream: boolean; structured: boolean };
  /** The raw output text (for a refusal, the refusal message); null when no response arrived. */
  text: string | null;
  /** The parsed JSON when a schema was given and the text parsed (after local repair if needed). */
  json: unknown;
  /** The JSON checked (and transformed) by the schema; undefined unless `ok` and a schema was given. */
  output: T | undefined;
  /** 'json_repair' when the JSON only parsed after local repair. */
  repair: 'json_repair' | null;
  finishReasonRaw: string | null;
  finishReason: FinishReason | null;
  usage: ModelUsage;
  timings: ModelTimings;
  /** HTTP status of the response (200 on success); null when none arrived or no HTTP was involved. */
  httpStatus: number | null;
  /** The provider's request id (x-request-id / request-id header), else the response id. */
  requestId: string | null;
  /** The response id in the body (chatcmpl-..., msg_...); null when the provider sent none. */
  responseId: string | null;
  /** Warnings from the SDK and adapter (unsupported settings, unknown model limits...). */
  warnings: string[];
  providerMetadata: unknown;
  error: ModelFailure | null;
}

export const NO_USAGE: ModelUsage = { inputTokens: null, outputTokens: null, cachedInputTokens: null, cacheWriteTokens: null, reasoningTokens: null };

export function usageOf(u: LanguageModelUsage | undefined): ModelUsage {
  if (!u) return { ...NO_USAGE };
  return {
    inputTokens: u.inputTokens ?? null,
    outputTokens: u.outputTokens ?? null,
    cachedInputTokens: u.inputTokenDetails?.cacheReadTokens ?? null,
    cacheWriteTokens: u.inputTokenDetails?.cacheWriteTokens ?? null,
    reasoningTokens: u.outputTokenDetails?.reasoningTokens ?? null,
  };
}

/** The SDK invents an id (`aitxt-...`) when the provider sent none; that is not the provider's id. */
export function providerResponseId(id: string | undefined): string | null {
  return id && !id.startsWith('aitxt-') ? id : null;
}

export function warningText(w: { type: string; feature?: string; details?: string; message?: string }): string {
  return [w.type, w.feature, w.details ?? w.message].filter(Boolean).join(': ');
}
