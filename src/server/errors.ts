// GraphQL errors the way a client can act on them. Every error leaves with `extensions.code`:
//   - ballast's SQLSTATEs (BA001..BA014, src/errors.ts) become their code in capitals with the message Postgres
//     raised: INVALID_INPUT (with `issues: [{path, message}]`), IDEMPOTENCY_CONFLICT (with `jobId`), NOT_FOUND,
//     FORBIDDEN, JOB_FINISHED, ...;
//   - Postgres refusing the role (42501) is FORBIDDEN, a bad value (class 22/23) BAD_USER_INPUT, a statement over
//     its statement_timeout TIMEOUT;
//   - a FORBIDDEN (42501 or BA014) also says what to do: which token the field needs, where it goes and how to get
//     one (guidance.ts), with `roles` (the roles that may) in its extensions. It names roles, never another tenant's
//     data: a job of another tenant stays NOT_FOUND;
//   - errors the server raises on purpose (SafeError: limits, authorization of subscriptions) keep their message
//     and extensions; PostGraphile's own SafeErrors have no code and get one: INVALID_CURSOR (a cursor it did not
//     issue), else BAD_USER_INPUT; GraphQL validation errors pass unchanged;
//   - anything else is masked: the client gets an error id, the log gets the error with the same id and a hash
//     that groups repeats.
import { createHash, randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { GraphQLError } from 'postgraphile/graphql';
import { isSafeError, SafeError } from 'postgraphile/grafast';
import { BallastError, IdempotencyConflictError, InvalidInputError, translateError } from '../errors.ts';
import type { JwtSettings } from './config.ts';
import { needOf, whatToDo } from './guidance.ts';

/** An error with a stable code that the client may see as it is. */
export function clientError(code: string, message: string, extensions: Record<string, unknown> = {}): SafeError {
  return new SafeError(message, { code, ...extensions });
}

const BY_STATUS: Record<number, string> = {
  400: 'BAD_REQUEST', 405: 'METHOD_NOT_ALLOWED', 406: 'NOT_ACCEPTABLE', 413: 'PAYLOAD_TOO_LARGE', 415: 'UNSUPPORTED_MEDIA_TYPE',
};

/** The code of a refusal that has only an HTTP status (grafserv's). */
export function codeOfStatus(status: number): string {
  return BY_STATUS[status] ?? (status >= 500 ? 'INTERNAL_SERVER_ERROR' : 'BAD_REQUEST');
}

interface PgLikeError extends Error {
  code: string;
  severity?: string;
  hint?: string;
}

function isPgError(err: unknown): err is PgLikeError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'string' && 'severity' in err;
}

/** Where an error happened, to say what to do about a refusal: the root field and the server's token settings. */
export interface ErrorSite {
  field?: string | undefined;
  jwt?: Pick<JwtSettings, 'secret' | 'jwksUrl'> | undefined;
}

const camel = (snake: string) => snake.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * A message of ballast's SQL in the GraphQL API's words: the SQL functions' parameters (p_from_step, p_inputs[n]) and
 * the argument a refusal starts with ("tenant_id: is empty ...") become the input fields a client sets (fromStep,
 * inputs[n], tenantId). The CLI does the same with its flags (src/cli/errors.ts).
 */
export function inGraphqlWords(text: string): string {
  return text.replace(/\bp_([a-z][a-z0-9_]*)/g, (_, name: string) => camel(name)).replace(/^([a-z][a-z0-9]*(?:_[a-z0-9]+)+):/, (_, name: string) => `${camel(name)}:`);
}

/** The client-facing shape (message and extensions) of an error from Postgres, or undefined to mask it. */
export function describePgError(err: PgLikeError, site: ErrorSite = {}): { message: string; extensions: Record<string, unknown> } | undefined {
  const translated = translateError(err);
  if (translated instanceof BallastError) {
    const extensions: Record<string, unknown> = { code: translated.code.toUpperCase(), sqlstate: translated.sqlstate };
    const hint = translated.hint ? inGraphqlWords(translated.hint) : undefined;
    if (hint) extensions.hint = hint;
    if (translated instanceof InvalidInputError) {
      // A refused argument (its path is the argument's name, which starts the message) is named as its input field;
      // the paths into a job's input (input.text, [0].qty) are the client's own JSON and stay as they are.
      const argument = /^([a-z][a-z0-9_]*):/.exec(err.message)?.[1];
      extensions.issues = translated.issues.map((i) => (i.path === argument ? { ...i, path: camel(i.path) } : i));
    }
    if (translated instanceof IdempotencyConflictError && translated.jobId !== undefined) extensions.jobId = translated.jobId;
    if (translated.code === 'forbidden') {
      // A tenant the caller may not act for: the hint says how to stay in its own; the rest, which token may.
      extensions.roles = needOf(site.field).roles;
      return { message: `${inGraphqlWords(err.message)}.${hint ? ` ${hint}` : ''} Otherwise ${whatToDo(site.field, site.jwt)}`, extensions };
    }
    // The message without the hint appended: the hint has its own field.
    return { message: inGraphqlWords(err.message), extensions };
  }
  if (err.code === '42501') {
    return {
      message: `not allowed with this token (or without one): ${err.message}. ${whatToDo(site.field, site.jwt)}`,
      extensions: { code: 'FORBIDDEN', sqlstate: err.code, roles: needOf(site.field).roles },
    };
  }
  if (err.code === '57014') {
    return { message: 'the query took longer than the statement timeout and was cancelled', extensions: { code: 'TIMEOUT', sqlstate: err.code } };
  }
  if (err.code.startsWith('22') || err.code.startsWith('23')) {
    return { message: err.message, extensions: { code: 'BAD_USER_INPUT', sqlstate: err.code } };
  }
  return undefined;
}

export type MaskError = (error: GraphQLError) => GraphQLError;

/** The root field an error belongs to (its real name, not an alias, when the error is on the root field itself). */
function rootField(error: GraphQLError): string | undefined {
  const node = error.nodes?.[0] as { kind?: string; name?: { value?: string } } | undefined;
  if (error.path?.length === 1 && node?.kind === 'Field' && node.name?.value) return node.name.value;
  return typeof error.path?.[0] === 'string' ? error.path[0] : undefined;
}

export function makeMaskError(log: Logger, jwt?: Pick<JwtSettings, 'secret' | 'jwksUrl'>): MaskError {
  return function maskError(error: GraphQLError): GraphQLError {
    const original = error.originalError;
    const rebuild = (message: string, extensions: Record<string, unknown>) =>
      new GraphQLError(message, { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, originalError: original, extensions });
    if (original === undefined || original === null || original instanceof GraphQLError) {
      // Validation, parse, variable and "cannot return null" errors: GraphQL's own, safe to show. Over HTTP the
      // refusals get their code in request-checks.ts; over the websocket they come only through here.
      if (typeof error.extensions?.code === 'string') return error;
      return rebuild(error.message, { ...error.extensions, code: error.path ? 'INTERNAL_SERVER_ERROR' : 'GRAPHQL_VALIDATION_FAILED' });
    }
    if (isSafeError(original)) {
      // grafserv's and PostGraphile's own safe errors (a body that is not a request, a cursor it cannot decode) come
      // without a code: one is given here, the HTTP status's if they have one.
      const extensions = { ...(original.extensions ?? {}) };
      if (typeof extensions.code !== 'string') {
        extensions.code = typeof extensions.statusCode === 'number' ? codeOfStatus(extensions.statusCode)
          : /cursor/i.test(original.message) ? 'INVALID_CURSOR' : 'BAD_USER_INPUT';
      }
      return rebuild(original.message, extensions);
    }
    if (isPgError(original)) {
      const described = describePgError(original, { field: rootField(error), jwt });
      if (described) return rebuild(described.message, described.extensions);
    }
    const errorId = randomBytes(6).toString('hex');
    const hash = createHash('sha1').update(String(original)).digest('base64url').slice(0, 12);
    log.error({ err: original, errorId, hash, path: error.path }, 'unexpected error in a GraphQL request (masked for the client)');
    return rebuild(`An unexpected error occurred (logged as ${errorId})`, { code: 'INTERNAL_SERVER_ERROR', errorId });
  };
}
