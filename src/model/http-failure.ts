// HTTP-level failures of a provider call (the request failed, or the provider reported an error inside its stream)
// mapped to failure classes by status code and error body, with the provider's Retry-After and request id.
import { APICallError } from 'ai';
import { failure, type CallTarget, type ModelFailure } from './failure.ts';

function header(headers: Record<string, string> | undefined, name: string): string | undefined {
  if (!headers) return undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  return key === undefined ? undefined : headers[key];
}

/**
 * The wait the provider asked for, in ms: `retry-after-ms` (OpenAI; milliseconds), else `retry-after` as seconds
 * or as an HTTP date (RFC 9110 §10.2.3). A date in the past means "now" (0). undefined when absent or unreadable.
 */
export function retryAfterMs(headers: Record<string, string> | undefined, now = Date.now()): number | undefined {
  const ms = header(headers, 'retry-after-ms');
  if (ms !== undefined && /^\s*\d+(\.\d+)?\s*$/.test(ms)) return Math.ceil(Number(ms));
  const after = header(headers, 'retry-after')?.trim();
  if (!after) return undefined;
  if (/^\d+(\.\d+)?$/.test(after)) return Math.ceil(Number(after) * 1000);
  const at = Date.parse(after);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** The provider's request id: OpenAI sends `x-request-id`, Anthropic `request-id`. */
export function requestIdFrom(headers: Record<string, string> | undefined): string | undefined {
  return header(headers, 'x-request-id') ?? header(headers, 'request-id');
}

const QUOTA = /insufficient_quota|billing|credit balance|quota exceeded|exceeded your current quota|payment required/i;

/** The provider's own error message from an error body (OpenAI and Anthropic both use { error: { message } }). */
function providerMessage(body: string | undefined, fallback: string): string {
  if (body) {
    try {
      const parsed = JSON.parse(body) as { error?: { message?: unknown } | string; message?: unknown };
      const m = typeof parsed.error === 'object' ? parsed.error?.message : parsed.error ?? parsed.message;
      if (typeof m === 'string' && m) return m;
    } catch {
      // not JSON: the SDK's message is the best we have
    }
  }
  return fallback;
}

function clientHint(status: number, target: CallTarget): string {
  const key = target.apiKeyEnv ? `the API key in ${target.apiKeyEnv}` : 'the API key';
  switch (status) {
    case 401: return `Check ${key}.`;
    case 403: return `Check that ${key} may use model "${target.modelId}" (organisation, project, region).`;
    case 404: return `Check the model name "${target.modelId}" and the base URL${target.baseURL ? ` ${target.baseURL}` : ''}.`;
    case 413: return 'The request is too large: shorten the prompt.';
    default: return 'Check the request parameters (model options, output schema, prompt) against what this provider accepts.';
  }
}

const CLIENT_CODES: Record<number, string> = {
  400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 413: 'too_large', 422: 'unprocessable',
};

interface HttpErrorLike {
  message: string;
  statusCode?: number;
  responseHeaders?: Record<string, string>;
  responseBody?: string;
  isRetryable?: boolean;
  /** StreamProviderError: the provider's error type, e.g. overloaded_error. */
  type?: string;
  data?: unknown;
}

/** Classifies an HTTP-level failure (APICallError before the stream, StreamProviderError within it). */
export function classifyHttp(e: HttpErrorLike, target: CallTarget, now: number): ModelFailure {
  const who = `${target.provider} model ${target.modelId}`;
  const status = e.statusCode;
  const requestId = requestIdFrom(e.responseHeaders) ?? bodyRequestId(e.responseBody);
  const body = e.responseBody ?? (e.data === undefined ? undefined : JSON.stringify(e.data));
  const said = providerMessage(body, e.message);
  const extra = { httpStatus: status, requestId, retryAfterMs: retryAfterMs(e.responseHeaders, now) };
  if (status === undefined) {
    // No response at all: refused, reset, DNS, TLS. The SDK marks these retryable.
    const where = target.baseURL ? ` at ${target.baseURL}` : '';
    return failure('transport', 'connection', `${who}: could not reach the provider${where}: ${e.message}`, extra);
  }
  if ((status === 429 || status === 402 || status === 400 || status === 403) && QUOTA.test(body ?? e.message)) {
    return failure('quota', 'insufficient_quota',
      `${who}: HTTP ${status}, quota or credit exhausted: ${said}. Retrying will not help: top up the account or fall back to another provider.`,
      { ...extra, retryAfterMs: undefined });
  }
  if (status === 408 || status === 409 || status === 429 || status >= 500) {
    const code = status === 408 ? 'request_timeout' : status === 409 ? 'conflict' : status === 429 ? 'rate_limited'
      : status === 529 || e.type === 'overloaded_error' ? 'overloaded' : 'server_error';
    return failure('transport', code, `${who}: HTTP ${status} (${code.replace('_', ' ')}): ${said}`, extra);
  }
  if (status >= 400) {
    return failure('client', CLIENT_CODES[status] ?? `http_${status}`, `${who}: HTTP ${status}: ${said}. ${clientHint(status, target)}`, extra);
  }
  // A 2xx whose body the adapter could not read: a broken proxy or an incompatible server. Worth one more try.
  return failure('transport', 'invalid_response', `${who}: HTTP ${status} with a response the adapter could not read: ${e.message}`, extra);
}

function bodyRequestId(body: string | undefined): string | undefined {
  if (!body) return undefined;
  try {
    const id = (JSON.parse(body) as { request_id?: unknown }).request_id;
    return typeof id === 'string' ? id : undefined;
  } catch {
    return undefined;
  }
}

export function isHttpErrorLike(err: unknown): err is HttpErrorLike {
  if (APICallError.isInstance(err)) return true;
  // StreamProviderError (an error event inside an SSE stream) carries statusCode and isRetryable the same way.
  const e = err as { name?: unknown; isRetryable?: unknown } | null;
  return typeof e === 'object' && e !== null && typeof e.isRetryable === 'boolean' && typeof e.name === 'string' && /ProviderError|APICallError/.test(e.name);
}
