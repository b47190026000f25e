// Failure classes of a model call (issue 5 §5), each with the policy the contract ladder applies to it. A provider
// call fails in one of two ways: the HTTP exchange failed (transport, quota, client/config), or it succeeded and the
// content is unusable (truncated, refused or filtered, unparsable, violating the contract). Every failure becomes
// one ModelFailure with flags the ladder acts on:
//
// | class      | codes                                                                                 | retryable | reask | fallback |
// |------------|---------------------------------------------------------------------------------------|-----------|-------|----------|
// | transport  | timeout, connection, interrupted, invalid_response, request_timeout (408), conflict    | yes       | no    | yes (*)  |
// |            | (409), rate_limited (429), server_error (5xx), overloaded (529)                        |           |       |          |
// | quota      | insufficient_quota (429/402/400 whose body says quota, billing or credit)              | no        | no    | yes      |
// | client     | bad_request (400), unauthorized (401), forbidden (403), not_found (404), too_large     | no        | no    | no       |
// |            | (413), unprocessable (422), http_4xx, missing_api_key, invalid_model_ref,              |           |       |          |
// |            | unknown_provider, unknown_model, call_error (a bad argument before any request)        |           |       |          |
// | truncated  | max_tokens (finish reason length / max_tokens), cut_off (the text ends inside a string |           |       |          |
// |            | or with brackets open, whatever the finish reason: never completed by repair)          | no        | no    | yes      |
// | refusal    | refusal, content_filter                                                               | no        | no    | yes (**) |
// | unparsable | invalid_json (not JSON even after local repair)                                        | no        | yes   | yes (*)  |
// | schema     | schema_violation (valid JSON failing the zod contract; `issues` lists why)             | no        | yes   | yes (*)  |
// | aborted    | aborted (the caller's signal: cancellation, shutdown)                                  | no        | no    | no       |
//
// retryable: the same request again may succeed (after retryAfterMs when the provider said so). reask: ask the model
// again with what was wrong (the issues). fallback: the next model in the step's fallback list is a sensible next
// move. (*) once retries or re-asks are used up. (**) or human review, where the step's blast radius is high.
export type FailureClass = 'transport' | 'quota' | 'client' | 'truncated' | 'refusal' | 'unparsable' | 'schema' | 'aborted';

export interface ContractIssue {
  path: string;
  message: string;
}

export interface ModelFailure {
  class: FailureClass;
  /** Finer cause within the class (see the table above). */
  code: string;
  /** What went wrong, naming the provider, model and status, and what to check. */
  message: string;
  retryable: boolean;
  /** The provider's own wait (retry-after-ms / retry-after, seconds or HTTP date), when it sent one. */
  retryAfterMs?: number;
  reask: boolean;
  fallback: boolean;
  httpStatus?: number;
  requestId?: string;
  /** schema: the contract violations, for the re-ask prompt. */
  issues?: ContractIssue[];
}

/** Who was called: used in every message. */
export interface CallTarget {
  /** Provider name as configured (the prefix of `provider:model`). */
  provider: string;
  /** Model id without the provider prefix. */
  modelId: string;
  /** Env var holding the API key, named in 401/403 messages. */
  apiKeyEnv?: string;
  /** Base URL, named in connection and 404 messages. */
  baseURL?: string;
}

const POLICY: Record<FailureClass, { retryable: boolean; reask: boolean; fallback: boolean }> = {
  transport: { retryable: true, reask: false, fallback: true },
  quota: { retryable: false, reask: false, fallback: true },
  client: { retryable: false, reask: false, fallback: false },
  truncated: { retryable: false, reask: false, fallback: true },
  refusal: { retryable: false, reask: false, fallback: true },
  unparsable: { retryable: false, reask: true, fallback: true },
  schema: { retryable: false, reask: true, fallback: true },
  aborted: { retryable: false, reask: false, fallback: false },
};

/** Builds a failure of `cls` with its policy flags. */
export function failure(cls: FailureClass, code: string, message: string, extra: Partial<ModelFailure> = {}): ModelFailure {
  const out: ModelFailure = { class: cls, code, message, ...POLICY[cls] };
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) (out as unknown as Record<string, unknown>)[k] = v;
  return out;
}

/** A configuration problem found before any request (unknown provider, missing key): a client failure. */
export class ModelConfigError extends Error {
  readonly code: 'invalid_model_ref' | 'unknown_provider' | 'unknown_model' | 'missing_api_key';
  constructor(code: ModelConfigError['code'], message: string) {
    super(message);
    this.name = 'ModelConfigError';
    this.code = code;
  }
}
