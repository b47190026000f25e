// How the `ballast` command reports a failure: an ordinary mistake (a wrong option, a missing file, no database, a
// port in use, a second `npm start` on the same data directory, input ballast refused) is one line that says what was
// wrong and what to do, with an exit code a script can use; only an unexpected error prints its stack. With --json the
// same report is one JSON object on stderr: {"error":{"code","message","hint","exitCode"[,"issues"]}}.
// Errors from other modules are recognised by their name and code, so this module imports nothing (the help path
// stays free of the database modules).

export interface CliErrorOptions {
  /** A stable identifier for scripts (`--json`): e.g. usage, port_in_use, database_unreachable. */
  code: string;
  /** The process exit code (see the help's "Exit codes"). */
  exitCode?: number;
  /** What to do about it, when the message does not say. */
  hint?: string;
  cause?: unknown;
}

/** An ordinary failure of the command: printed as one line, never as a stack. */
export class CliError extends Error {
  readonly code: string;
  readonly exitCode: number;
  readonly hint: string | undefined;
  constructor(message: string, opts: CliErrorOptions) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'CliError';
    this.code = opts.code;
    this.exitCode = opts.exitCode ?? 1;
    this.hint = opts.hint;
  }
}

/** A wrong command line (exit code 2). */
export class UsageError extends CliError {
  constructor(message: string, hint?: string) {
    super(message, { code: 'usage', exitCode: 2, ...(hint ? { hint } : {}) });
    this.name = 'UsageError';
  }
}

export interface ErrorReport {
  code: string;
  message: string;
  hint?: string;
  exitCode: number;
  issues?: { path: string; message: string }[];
}

// The SQL functions' parameter and column names that an error may name, and the command-line flag that sets each
// (the CLI passes them through; a user never typed p_from_step or idempotency_key).
const FLAG_OF: [RegExp, string][] = [
  [/\bp_from_step\b/g, '--step'],
  [/\bp_reason\b/g, '--reason'],
  [/\bp_priority\b|(?<![\w.])priority(?=:)/g, '--priority'],
  [/\bp_tenant_id\b|(?<![\w.])tenant_id(?=:)/g, '--tenant'],
  [/\bp_idempotency_key\b|(?<![\w.])idempotency_key(?=:)/g, '--key'],
  [/\bp_pipeline_version\b/g, '--version'],
  [/\bp_payload\b/g, '--payload'],
  [/\bp_limit\b/g, '--limit'],
  [/\bp_since\b/g, '--since'],
  [/\bp_period\b/g, '--period'],
  [/\bp_time_zone\b|(?<![\w.])time_zone(?=:)/g, '--tz'],
  [/\bp_on_missed\b|(?<![\w.])on_missed(?=:)/g, '--on-missed'],
  [/\bp_max_catch_up\b|(?<![\w.])max_catch_up(?=:)/g, '--max-catch-up'],
  [/^cron:/g, '--cron:'],
  [/^until:/g, '--until:'],
  [/^for:/g, '--for:'],
  [/Pass null for no deduplication, or a key/g, 'Leave out --key for no deduplication, or pass a key'],
  [/Pass a tenant id of 1 to 200 bytes, or leave it out/g, 'Pass --tenant with 1 to 200 bytes, or leave it out'],
];

/** An input problem's path that is an argument of the SQL function rather than a field of the job's input. */
const FLAG_OF_PATH: Record<string, string> = {
  tenant_id: '--tenant', idempotency_key: '--key', priority: '--priority', pipeline_version: '--version', pipeline: 'the pipeline name',
  time_zone: '--tz', on_missed: '--on-missed', max_catch_up: '--max-catch-up', cron: '--cron',
  until: '--until', for: '--for',
};

/** A message of ballast's SQL with the names of its parameters replaced by the CLI's flags. */
export function inCliTerms(text: string): string;
export function inCliTerms(text: string | undefined): string | undefined;
export function inCliTerms(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  return FLAG_OF.reduce((s, [re, flag]) => s.replace(re, flag), text);
}

/** The report of an error that is an ordinary failure; undefined for an unexpected one (a bug: print its stack). */
export function describeError(err: unknown): ErrorReport | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as Error & { code?: unknown; hint?: unknown; exitCode?: unknown; issues?: unknown };
  if (err instanceof CliError) {
    return { code: err.code, message: err.message, exitCode: err.exitCode, ...(err.hint ? { hint: err.hint } : {}) };
  }
  // src/errors.ts: ballast refused the request (BA SQLSTATEs). Their message ends with the hint in parentheses.
  if ((e.name === 'BallastError' || e.name === 'InvalidInputError' || e.name === 'IdempotencyConflictError') && typeof e.code === 'string') {
    const hint = typeof e.hint === 'string' ? e.hint : undefined;
    const message = hint && e.message.endsWith(` (${hint})`) ? e.message.slice(0, -(hint.length + 3)) : e.message;
    const issues = Array.isArray(e.issues) ? (e.issues as { path: string; message: string }[])
      .map((i) => ({ path: FLAG_OF_PATH[i.path] ?? i.path, message: inCliTerms(i.message) })) : undefined;
    return {
      code: e.code, message: inCliTerms(message), exitCode: 4,
      ...(hint ? { hint: inCliTerms(hint) } : {}), ...(issues?.length ? { issues } : {}),
    };
  }
  // Postgres refused the role the command connects as (e.g. a login without ballast_operator calling an operator verb).
  if (e.code === '42501') {
    return {
      code: 'permission_denied', message: e.message, exitCode: 4,
      hint: 'connect as a role that may do this (operator verbs need ballast_operator; see docs/security.md), set DATABASE_URL to such a login',
    };
  }
  // src/db/connection.ts (DatabaseUnavailableError), src/db/embedded.ts (DataDirInUseError), src/server (the
  // API's port): setup problems that carry their own code and hint.
  if ((e.name === 'DatabaseUnavailableError' || e.name === 'DataDirInUseError' || e.name === 'PortInUseError') && typeof e.code === 'string') {
    return { code: e.code, message: e.message, exitCode: 1, ...(typeof e.hint === 'string' ? { hint: e.hint } : {}) };
  }
  return undefined;
}

/** The text form: `ballast: <message>; <hint>` (a refused request also lists its input problems, one a line). */
export function formatError(r: ErrorReport): string {
  // A refusal of ballast's SQL keeps its form (code: message (hint)); the others read as one sentence: message; hint.
  const refused = r.exitCode === 4;
  const hint = r.hint ? (refused ? ` (${r.hint})` : `; ${r.hint}`) : '';
  const lines = [`ballast: ${refused ? `${r.code}: ` : ''}${r.message}${hint}`];
  // The problems one a line, unless the message already is the only one.
  const issues = r.issues ?? [];
  if (!(issues.length === 1 && r.message.includes(`${issues[0]!.path}: ${issues[0]!.message}`))) {
    for (const i of issues) lines.push(`  ${i.path}: ${i.message}`);
  }
  return lines.join('\n');
}

/** The --json form: one line of JSON. */
export function formatErrorJson(r: ErrorReport): string {
  return JSON.stringify({ error: r });
}
