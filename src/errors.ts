// The one place where Postgres errors become typed TypeScript errors. ballast's SQL raises SQLSTATEs of class BA
// (catalogue: ballast.error_codes); each maps to a class here with a stable `code` that the CLI and GraphQL reuse.
import type { DatabaseError } from 'pg';

/**
 * ballast's SQLSTATEs and their codes: the one TypeScript list. test/facts.test.ts checks it against the database's
 * catalogue (ballast.error_codes), the documentation's table of errors and the GraphQL mapping (src/server/errors.ts).
 */
export const SQLSTATE_CODES = {
  BA001: 'invalid_transition',
  BA002: 'invalid_input',
  BA003: 'idempotency_conflict',
  BA004: 'unknown_pipeline',
  BA005: 'pipeline_version_conflict',
  BA006: 'invalid_pipeline',
  BA007: 'not_found',
  BA008: 'stale_attempt',
  BA009: 'read_only',
  BA010: 'job_finished',
  BA011: 'step_busy',
  BA012: 'prompt_version_conflict',
  BA013: 'not_in_review',
  BA014: 'forbidden',
} as const;

export type BallastSqlstate = keyof typeof SQLSTATE_CODES;
export type BallastErrorCode = (typeof SQLSTATE_CODES)[BallastSqlstate];

/** The code of one of ballast's SQLSTATEs; undefined for any other SQLSTATE. */
export function codeOfSqlstate(sqlstate: string | undefined): BallastErrorCode | undefined {
  return sqlstate !== undefined && Object.hasOwn(SQLSTATE_CODES, sqlstate) ? SQLSTATE_CODES[sqlstate as BallastSqlstate] : undefined;
}

export interface InputIssue {
  path: string;
  message: string;
}

export class BallastError extends Error {
  readonly code: BallastErrorCode;
  readonly sqlstate: string | undefined;
  readonly hint: string | undefined;
  readonly detail: string | undefined;

  constructor(code: BallastErrorCode, message: string, opts: { sqlstate?: string; hint?: string; detail?: string; cause?: unknown } = {}) {
    super(opts.hint ? `${message} (${opts.hint})` : message, { cause: opts.cause });
    this.name = 'BallastError';
    this.code = code;
    this.sqlstate = opts.sqlstate;
    this.hint = opts.hint;
    this.detail = opts.detail;
  }
}

/** db.waitForJob gave up: the job was not final after its timeoutMs (it goes on; wait again or read it later). */
export class WaitTimeoutError extends Error {
  readonly jobId: string;
  readonly status: string;
  constructor(jobId: string, status: string, timeoutMs: number) {
    super(`job ${jobId} is still ${status} after ${timeoutMs} ms; it goes on: wait again, or read it later with getJob`);
    this.name = 'WaitTimeoutError';
    this.jobId = jobId;
    this.status = status;
  }
}

/** Input that does not satisfy its contract; `issues` lists every problem by path. */
export class InvalidInputError extends BallastError {
  readonly issues: InputIssue[];
  constructor(message: string, issues: InputIssue[], opts: { sqlstate?: string; hint?: string; detail?: string; cause?: unknown } = {}) {
    super('invalid_input', message, opts);
    this.name = 'InvalidInputError';
    this.issues = issues;
  }
}

/** The same idempotency key was used earlier for a different request. */
export class IdempotencyConflictError extends BallastError {
  readonly jobId: string | undefined;
  constructor(message: string, jobId: string | undefined, opts: { sqlstate?: string; hint?: string; detail?: string; cause?: unknown } = {}) {
    super('idempotency_conflict', message, opts);
    this.name = 'IdempotencyConflictError';
    this.jobId = jobId;
  }
}

function isDatabaseError(err: unknown): err is DatabaseError {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string' && 'severity' in err;
}

function parseJson(text: string | undefined): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Turns a pg error raised by ballast's SQL into a BallastError; returns anything else unchanged. */
export function translateError(err: unknown): unknown {
  if (!isDatabaseError(err)) return err;
  const code = codeOfSqlstate(err.code);
  if (!code) return err;
  const opts = { sqlstate: err.code, hint: err.hint, detail: err.detail, cause: err };
  if (code === 'invalid_input') {
    const parsed = parseJson(err.detail);
    const issues = Array.isArray(parsed) ? (parsed as InputIssue[]) : [];
    return new InvalidInputError(err.message, issues, opts);
  }
  if (code === 'idempotency_conflict') {
    const parsed = parseJson(err.detail) as { job_id?: number | string } | undefined;
    return new IdempotencyConflictError(err.message, parsed?.job_id === undefined ? undefined : String(parsed.job_id), opts);
  }
  return new BallastError(code, err.message, opts);
}

/**
 * Thrown by a step handler: the failure will not get better by retrying (bad request, missing record, ...).
 * `errorClass` (default 'permanent') is recorded as the attempt's error class, e.g. a model failure class.
 */
export class PermanentError extends Error {
  readonly errorCode: string | undefined;
  readonly errorClass: string;
  constructor(message: string, opts: { code?: string; errorClass?: string; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'PermanentError';
    this.errorCode = opts.code;
    this.errorClass = opts.errorClass ?? 'permanent';
  }
}

/** Thrown by a step handler: try again, after `retryAfterMs` when the upstream said so (Retry-After). */
export class RetryableError extends Error {
  readonly errorCode: string | undefined;
  readonly errorClass: string;
  readonly retryAfterMs: number | undefined;
  constructor(message: string, opts: { code?: string; errorClass?: string; retryAfterMs?: number; cause?: unknown } = {}) {
    super(message, { cause: opts.cause });
    this.name = 'RetryableError';
    this.errorCode = opts.code;
    this.errorClass = opts.errorClass ?? 'retryable';
    this.retryAfterMs = opts.retryAfterMs;
  }
}
