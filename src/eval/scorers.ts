// The scorers of an eval run (docs/evals.md#scorers): each gives a case's answer a score from 0 to 1; the case's
// score is their weighted mean. schema, exact, fields and numeric are computed here; `function` calls a TypeScript
// scorer registered in the worker; `judge` asks a model (through the contract ladder, by the caller: runner.ts).
import type { z } from 'zod';
import { PermanentError } from '../errors.ts';
import type { ScorerFn } from '../pipeline/definition.ts';
import type { ScorerSpec } from '../db/evals.ts';

/** A JSON value as text with object keys sorted: two values are equal as JSON when their texts are. */
export function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => `${JSON.stringify(k)}:${canonical(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

function at(value: unknown, path: string): unknown {
  let v = value;
  for (const key of path.split('.')) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, key)) return undefined;
    v = (v as Record<string, unknown>)[key];
  }
  return v;
}

/** A scorer's name in the result's scores: its own name, else a function's name, else its kind. */
export function scorerName(s: ScorerSpec): string {
  return s.name ?? (s.kind === 'numeric' ? `numeric:${s.path}` : s.kind === 'judge' ? `judge:${s.prompt}@${s.version}` : s.kind);
}

export interface CaseToScore {
  output: unknown;
  reference: unknown;
  input: Record<string, unknown>;
  key: string;
  tags: string[];
  /** The target step's output contract (the schema scorer). */
  contract: z.ZodType;
  functions: ReadonlyMap<string, ScorerFn>;
  /** Runs a judge scorer: its verdict. */
  judge: (s: ScorerSpec) => Promise<{ score: number; reason: string }>;
}

/** One scorer's score of one case. */
async function scoreOne(s: ScorerSpec, c: CaseToScore): Promise<{ score: number; reason?: string }> {
  switch (s.kind) {
    case 'schema':
      return { score: c.contract.safeParse(c.output).success ? 1 : 0 };
    case 'exact':
      return { score: canonical(c.output) === canonical(c.reference) ? 1 : 0 };
    case 'fields': {
      const ref = c.reference;
      if (ref === null || typeof ref !== 'object' || Array.isArray(ref)) return { score: canonical(c.output) === canonical(ref) ? 1 : 0 };
      const fields = s.fields ?? Object.keys(ref);
      if (fields.length === 0) return { score: 1 };
      const same = fields.filter((f) => canonical(at(c.output, f)) === canonical(at(ref, f))).length;
      return { score: same / fields.length };
    }
    case 'numeric': {
      const got = at(c.output, s.path!);
      const want = at(c.reference, s.path!);
      return { score: typeof got === 'number' && typeof want === 'number' && Math.abs(got - want) <= s.tolerance! ? 1 : 0 };
    }
    case 'function': {
      const fn = c.functions.get(s.name!);
      if (!fn) {
        throw new PermanentError(`eval scorer "${s.name}" is not registered in this worker: pass it as startWorker({ evals: { scorers: { ${s.name}: fn } } })`,
          { errorClass: 'eval', code: 'unknown_scorer' });
      }
      const r = await fn({ output: c.output, reference: c.reference, input: c.input, key: c.key, tags: c.tags });
      const score = typeof r === 'boolean' ? (r ? 1 : 0) : r;
      if (typeof score !== 'number' || !(score >= 0 && score <= 1)) {
        throw new PermanentError(`eval scorer "${s.name}" returned ${String(r)}, not a number from 0 to 1 or a boolean`, { errorClass: 'eval', code: 'bad_score' });
      }
      return { score };
    }
    case 'judge':
      return c.judge(s);
  }
}

/** Every scorer's score (by name; a judge's reason as "<name>:reason") and the weighted mean; no scorer: 1. */
export async function scoreCase(scorers: ScorerSpec[], c: CaseToScore): Promise<{ scores: Record<string, number | string>; score: number }> {
  const scores: Record<string, number | string> = {};
  let sum = 0;
  let weights = 0;
  for (const s of scorers) {
    const r = await scoreOne(s, c);
    const name = scorerName(s);
    scores[name] = r.score;
    if (r.reason !== undefined) scores[`${name}:reason`] = r.reason;
    const w = s.weight ?? 1;
    sum += w * r.score;
    weights += w;
  }
  return { scores, score: weights === 0 ? 1 : Math.round((sum / weights) * 1e6) / 1e6 };
}
