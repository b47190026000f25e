// Checks of a GraphQL request that no validation rule can make, and the codes grafserv leaves out.
//   - variables: a number JSON.parse turned into Infinity (1e400) would be stored as null, and values nested deeper
//     than MAX_VARIABLE_DEPTH end in a Postgres stack overflow: both refused as BAD_USER_INPUT, naming the path.
//   - every error leaves with extensions.code: grafserv's own refusals carry only a statusCode (a body that is not
//     JSON: BAD_REQUEST; 405 METHOD_NOT_ALLOWED; 406 NOT_ACCEPTABLE; 413 PAYLOAD_TOO_LARGE; 415
//     UNSUPPORTED_MEDIA_TYPE) and validation errors none (GRAPHQL_VALIDATION_FAILED).
//   - a body that is not valid UTF-8 is refused (INVALID_UTF8, HTTP 400, naming the first bad byte's offset) instead
//     of being decoded with U+FFFD in place of the bad bytes (grafserv's Buffer#toString) and stored that way.
import type { RequestDigest } from 'postgraphile/grafserv';
import { clientError, codeOfStatus } from './errors.ts';
import { decodeUtf8, InvalidUtf8Error } from './utf8.ts';

/** Deepest nesting of arrays and objects accepted in a request's variables. */
export const MAX_VARIABLE_DEPTH = 1000;

const shortPath = (path: string) => (path.length > 80 ? `${path.slice(0, 77)}...` : path);

/** Throws BAD_USER_INPUT (HTTP 400) for a non-finite number or nesting deeper than MAX_VARIABLE_DEPTH in `variables`. */
export function checkVariables(variables: unknown): void {
  if (variables === null || typeof variables !== 'object') return;
  const stack: [unknown, string, number][] = [[variables, 'variables', 0]];
  while (stack.length > 0) {
    const [value, path, depth] = stack.pop()!;
    if (typeof value === 'number' && !Number.isFinite(value)) {
      throw clientError('BAD_USER_INPUT', `${shortPath(path)} is not a finite number (JSON numbers beyond ±1.8e308 cannot be stored); send it as a string`, { path: shortPath(path), statusCode: 400 });
    }
    if (value === null || typeof value !== 'object') continue;
    if (depth >= MAX_VARIABLE_DEPTH) {
      throw clientError('BAD_USER_INPUT', `${shortPath(path)} is nested deeper than ${MAX_VARIABLE_DEPTH} levels; flatten the value`, { path: shortPath(path), maxDepth: MAX_VARIABLE_DEPTH, statusCode: 400 });
    }
    if (Array.isArray(value)) value.forEach((v, i) => stack.push([v, `${path}[${i}]`, depth + 1]));
    else for (const [k, v] of Object.entries(value)) stack.push([v, `${path}.${k}`, depth + 1]);
  }
}

/**
 * Makes `digest.getBody()` decode the body as strict UTF-8: grafserv then parses text (JSON or a GraphQL document)
 * that is exactly what was sent. A body that is not UTF-8 throws INVALID_UTF8 (HTTP 400), which grafserv answers
 * like its own refusals; the 413 of a body over maxRequestLength, thrown while reading, passes unchanged.
 */
export function strictUtf8Body(digest: RequestDigest): void {
  const getBody = digest.getBody.bind(digest);
  digest.getBody = async () => {
    const body = await getBody();
    if (body.type !== 'buffer') return body;
    try {
      return { type: 'text', text: decodeUtf8(body.buffer, 'the request body') };
    } catch (err) {
      if (!(err instanceof InvalidUtf8Error)) throw err;
      throw clientError('INVALID_UTF8', err.message, { offset: err.offset, byte: err.byte, statusCode: 400 });
    }
  };
}

interface FormattedError {
  message: string;
  extensions?: Record<string, unknown>;
  [key: string]: unknown;
}

/**
 * `error` with an extensions.code: its own, the one of its HTTP status (its own, else the response's when that is a
 * refusal other than 400: grafserv's 405 and 406 errors carry no status), or GRAPHQL_VALIDATION_FAILED.
 */
export function withCode(error: FormattedError, responseStatus?: number): FormattedError {
  const ext = error.extensions ?? {};
  if (typeof ext.code === 'string') return error;
  const status = typeof ext.statusCode === 'number' ? ext.statusCode
    : responseStatus !== undefined && responseStatus > 400 ? responseStatus : undefined;
  const code = status !== undefined ? codeOfStatus(status) : 'GRAPHQL_VALIDATION_FAILED';
  return { ...error, extensions: { ...ext, code } };
}

type AnyResult = { type: string; statusCode?: number; buffer?: Buffer; json?: unknown; headers?: Record<string, string> } | null | undefined;

/**
 * A grafserv result whose errors all carry extensions.code. Only responses that are errors alone are touched
 * (`{"errors": ...}` without data: refusals and validation failures); execution errors have their code from
 * maskError already.
 */
export function addErrorCodes<R>(result: R): R {
  const r = result as AnyResult;
  if (!r) return result;
  if (r.type === 'json' && r.json && typeof r.json === 'object' && Array.isArray((r.json as { errors?: unknown }).errors)) {
    const j = r.json as { errors: FormattedError[] };
    r.json = { ...j, errors: j.errors.map((e) => withCode(e, r.statusCode)) };
  } else if (r.type === 'buffer' && r.buffer && r.buffer.subarray(0, 11).toString('latin1') === '{"errors":[') {
    let body: { errors: FormattedError[]; data?: unknown };
    try {
      body = JSON.parse(r.buffer.toString('utf8')) as typeof body;
    } catch {
      return result;
    }
    if (!body.errors.some((e) => typeof e.extensions?.code !== 'string')) return result;
    r.buffer = Buffer.from(JSON.stringify({ ...body, errors: body.errors.map((e) => withCode(e, r.statusCode)) }));
    if (r.headers) for (const k of Object.keys(r.headers)) if (k.toLowerCase() === 'content-length') r.headers[k] = String(r.buffer.length);
  }
  return result;
}
