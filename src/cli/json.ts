// The CLI's --json output: numbers as JSON numbers. pg returns bigint and numeric columns as strings (exact, and
// safe beyond 2^53); on the command line a count, an id, a cost or a rate is printed as a number, so `jq '.jobs > 3'`
// works. A bigint beyond 2^53 stays a string rather than lose digits.
import type pg from 'pg';

const INT8 = 20;
const NUMERIC = 1700;

/** `text` as a number when it is one and loses nothing an operator reads (an integer beyond 2^53 stays text). */
export function asNumber(text: unknown): unknown {
  if (typeof text !== 'string' || !/^-?\d+(\.\d+)?(e[+-]?\d+)?$/i.test(text)) return text;
  const n = Number(text);
  if (!Number.isFinite(n)) return text;
  if (/^-?\d+$/.test(text) && !Number.isSafeInteger(n)) return text;
  return n;
}

/** Rows of a query with their int8 and numeric columns as numbers (by the result's column types). */
export function numericColumns(result: pg.QueryResult): Record<string, unknown>[] {
  const numeric = result.fields.filter((f) => f.dataTypeID === INT8 || f.dataTypeID === NUMERIC).map((f) => f.name);
  if (numeric.length === 0) return result.rows;
  return result.rows.map((row: Record<string, unknown>) => {
    const out = { ...row };
    for (const name of numeric) out[name] = asNumber(out[name]);
    return out;
  });
}

// The fields of ballast's rows and results (jobs, steps, attempts, the verbs' results) that are numbers kept as
// strings; their values inside (input, result, output, error, payload) are the user's own and left alone.
const NUMBER_FIELDS = new Set([
  'id', 'job_id', 'step_id', 'attempt_id', 'parent_step_id', 'parent_job_id', 'input_tokens', 'output_tokens', 'cached_input_tokens',
  'cost_usd', 'duration_ms', 'latency_ms', 'first_token_ms', 'quality_score', 'score',
  'jobId', 'stepId', 'attemptId', 'scheduleId', 'last_job_id',
  'amount', 'burst', 'keysSeen',
]);
const NUMBER_LIST_FIELDS = /^[a-z]+(StepIds|JobIds|_ids)$/;

/** A ballast row or result with its number fields as numbers, for --json (one level deep: `{ job, steps }`). */
export function withNumbers(value: unknown, depth = 0): unknown {
  if (Array.isArray(value)) return value.map((v) => withNumbers(v, depth));
  if (value === null || typeof value !== 'object' || value instanceof Date || depth > 1) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    if (NUMBER_FIELDS.has(k)) out[k] = asNumber(v);
    else if (NUMBER_LIST_FIELDS.test(k) && Array.isArray(v)) out[k] = v.map(asNumber);
    else if (k === 'job' || k === 'steps' || k === 'jobs' || k === 'children') out[k] = withNumbers(v, depth + 1);
    else out[k] = v;
  }
  return out;
}
