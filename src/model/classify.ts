// Classifies the outcome of a model call into the failure classes of failure.ts (table and policies there): errors
// thrown by or around the AI SDK call (timeouts, aborts, configuration, HTTP errors), and completed responses whose
// finish reason makes them unusable (truncated, refused, filtered). Content checks (unparsable, schema) are in
// call.ts, which owns parsing. The one import for callers: it re-exports the failure types and HTTP helpers.
import { classifyHttp, isHttpErrorLike } from './http-failure.ts';
import { failure, ModelConfigError, type CallTarget, type ModelFailure } from './failure.ts';

export { failure, ModelConfigError } from './failure.ts';
export type { CallTarget, ContractIssue, FailureClass, ModelFailure } from './failure.ts';
export { retryAfterMs, requestIdFrom } from './http-failure.ts';

export interface ThrownContext {
  /** Our own timer fired (the call's timeoutMs). */
  timedOut: boolean;
  timeoutMs: number;
  /** The caller's signal fired. */
  aborted: boolean;
  now?: number;
}

/** Classifies an error thrown by (or around) the AI SDK call. */
export function classifyThrown(err: unknown, target: CallTarget, ctx: ThrownContext): ModelFailure {
  const who = `${target.provider} model ${target.modelId}`;
  if (ctx.timedOut) {
    return failure('transport', 'timeout', `${who}: no complete response within ${ctx.timeoutMs} ms; the request was aborted`);
  }
  if (ctx.aborted) return failure('aborted', 'aborted', `${who}: the call was aborted by its caller`);
  if (err instanceof ModelConfigError) return failure('client', err.code, err.message);
  if (isHttpErrorLike(err)) return classifyHttp(err, target, ctx.now ?? Date.now());
  const e = err instanceof Error ? err : new Error(String(err));
  if (e.name === 'AI_NoSuchModelError') {
    return failure('client', 'unknown_model', `${who}: no such model: ${e.message}. Check the model name.`);
  }
  if (e.name === 'AI_LoadAPIKeyError') return failure('client', 'missing_api_key', `${who}: ${e.message}`);
  if (e.name === 'AI_InvalidResponseDataError' || e.name === 'AI_JSONParseError' || e.name === 'AI_TypeValidationError' || e.name === 'AI_NoContentGeneratedError') {
    return failure('transport', 'invalid_response', `${who}: the response could not be read: ${e.message}`);
  }
  if (e.name === 'AI_NoOutputGeneratedError') {
    return failure('transport', 'interrupted', `${who}: the response stream ended without output: ${e.message}`);
  }
  // Anything else is a fault on our side of the call (a bad argument, a bug): retrying will not fix it.
  return failure('client', 'call_error', `${who}: the call failed before reaching the provider: ${e.name}: ${e.message}`);
}

/** Normalised finish reasons (raw ones are kept beside them). */
export type FinishReason = 'stop' | 'length' | 'content_filter' | 'tool_calls' | 'refusal' | 'error' | 'other';

/**
 * Maps the SDK's unified finish reason and the provider's raw one to ballast's. A refusal is told apart from a
 * content filter by the raw reason: Anthropic says `refusal`; OpenAI finishes a refusal with `stop` (its `refusal`
 * field set), which the SDK reports as content-filter.
 */
export function normalizeFinish(unified: string | undefined, raw: string | undefined): FinishReason {
  if (raw === 'refusal') return 'refusal';
  switch (unified) {
    case 'stop': return 'stop';
    case 'length': return 'length';
    case 'content-filter': return raw === 'stop' ? 'refusal' : 'content_filter';
    case 'tool-calls': return 'tool_calls';
    case 'error': case 'interrupted': return 'error';
    default: return 'other';
  }
}

/** Classifies a completed response by its finish reason; undefined when the finish is no failure. */
export function classifyFinish(finish: FinishReason, raw: string | undefined, text: string, target: CallTarget): ModelFailure | undefined {
  const who = `${target.provider} model ${target.modelId}`;
  const excerpt = text.length > 200 ? `${text.slice(0, 200)}…` : text;
  switch (finish) {
    case 'length':
      return failure('truncated', 'max_tokens',
        `${who}: the output was cut off at the token limit (finish reason ${raw ?? 'length'}); raise maxOutputTokens or shorten the task`);
    case 'refusal':
      return failure('refusal', 'refusal', `${who}: the model refused${excerpt ? `: "${excerpt}"` : ''}`);
    case 'content_filter':
      return failure('refusal', 'content_filter', `${who}: the provider's content filter stopped the output (finish reason ${raw ?? 'content_filter'})`);
    case 'error':
      return failure('transport', 'interrupted', `${who}: the response ended abnormally (finish reason ${raw ?? 'error'})`);
    default:
      return undefined;
  }
}
