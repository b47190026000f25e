// Evals as data (migration 0044, docs/evals.md): the statements of datasets, cases, runs, results and comparisons,
// one each, shared by the eval step kind (src/pipeline/kinds/eval.ts), the CLI (src/cli/eval.ts) and the GraphQL
// mutations (src/server/eval-mutations.ts). Each takes a Queryable (a pool, PostGraphile's client inside the caller's
// transaction) and throws what Postgres raised as it is (the GraphQL and CLI error reports read its SQLSTATE). Ids
// and bigints leave as strings.
import type { Queryable } from './verbs.ts';

const json = (value: unknown) => (value === undefined ? null : JSON.stringify(value));

async function rows<R>(c: Queryable, text: string, values: readonly unknown[] = []): Promise<R[]> {
  return [...(await c.query<R>({ text, values })).rows];
}

async function one<R>(c: Queryable, text: string, values: readonly unknown[] = []): Promise<R> {
  return (await rows<R>(c, text, values))[0]!;
}

/** A scorer of a run or a case (docs/evals.md#scorers). */
export interface ScorerSpec {
  kind: 'schema' | 'exact' | 'fields' | 'numeric' | 'function' | 'judge';
  name?: string;
  weight?: number;
  fields?: string[];
  path?: string;
  tolerance?: number;
  prompt?: string;
  version?: number;
  model?: string;
}

export interface EvalCaseInput {
  key: string;
  /** The prompt's variables: { input, deps } (and item for a map item). */
  input: Record<string, unknown>;
  reference?: unknown;
  checks?: ScorerSpec[];
  tags?: string[];
  source?: Record<string, unknown>;
}

export interface AddedCase {
  caseId: string;
  caseKey: string;
  datasetVersion: number;
}

export const addEvalCases = (c: Queryable, dataset: string, cases: EvalCaseInput[], actor: string | null = null) =>
  rows<AddedCase>(c, `select case_id::text as "caseId", case_key as "caseKey", dataset_version as "datasetVersion"
                        from ballast.add_eval_cases($1, $2::jsonb, $3)`, [dataset, json(cases), actor]);

export const createDataset = (c: Queryable, name: string, description: string | null, actor: string | null = null) =>
  one<{ name: string; version: number }>(c, 'select name, version from ballast.create_dataset($1, $2, $3)', [name, description, actor]);

export interface StartEvalRunArgs {
  dataset: string;
  pipeline: string;
  step: string;
  promptVersion?: number | null;
  model?: string | null;
  scorers?: ScorerSpec[] | null;
  threshold?: number | null;
  label?: string | null;
  pipelineVersion?: number | null;
  datasetVersion?: number | null;
  tenantId?: string | null;
}

export const startEvalRun = (c: Queryable, a: StartEvalRunArgs, actor: string | null = null) =>
  one<{ runId: string; jobId: string }>(c,
    `select run_id::text as "runId", job_id::text as "jobId"
       from ballast.start_eval_run($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, coalesce($11, 'evals'), $12)`,
    [a.dataset, a.pipeline, a.step, a.promptVersion ?? null, a.model ?? null, json(a.scorers ?? undefined), a.threshold ?? null,
      a.label ?? null, a.pipelineVersion ?? null, a.datasetVersion ?? null, a.tenantId ?? null, actor]);

export const promoteToDataset = (c: Queryable, stepId: string, dataset: string,
  opts: { key?: string | null; reference?: unknown; tags?: string[] | null; actor?: string | null } = {}) =>
  one<AddedCase & { sourceKind: string }>(c,
    `select case_id::text as "caseId", case_key as "caseKey", dataset_version as "datasetVersion", source_kind as "sourceKind"
       from ballast.promote_to_dataset($1, $2, $3, $4::jsonb, coalesce($5::text[], '{}'), $6)`,
    [stepId, dataset, opts.key ?? null, json(opts.reference), opts.tags ?? null, opts.actor ?? null]);

export const setAutoPromotion = (c: Queryable, pipeline: string, step: string, dataset: string | null, decisions: string[] | null = null) =>
  rows(c, `select ballast.set_auto_promotion($1, $2, $3, coalesce($4::text[], '{approve,edit}'))`, [pipeline, step, dataset, decisions]);

/** A row of ballast.compare_eval_runs. */
export interface CaseComparison {
  caseKey: string;
  baseScore: number | null;
  candidateScore: number | null;
  delta: number | null;
  change: 'regression' | 'improvement' | 'same' | 'new' | 'missing';
  basePassed: boolean | null;
  candidatePassed: boolean | null;
  costDeltaUsd: number | null;
  latencyDeltaMs: number | null;
}

export const compareEvalRuns = (c: Queryable, base: string, candidate: string, threshold = 0) =>
  rows<CaseComparison>(c,
    `select case_key as "caseKey", base_score::float8 as "baseScore", candidate_score::float8 as "candidateScore",
            delta::float8 as delta, change, base_passed as "basePassed", candidate_passed as "candidatePassed",
            cost_delta_usd::float8 as "costDeltaUsd", latency_delta_ms as "latencyDeltaMs"
       from ballast.compare_eval_runs($1, $2, $3)`, [base, candidate, threshold]);

/** The row of ballast.eval_run_comparison. */
export interface RunComparison {
  pairedCases: number;
  baseMean: number | null;
  candidateMean: number | null;
  meanDelta: number | null;
  deltaCiLow: number | null;
  deltaCiHigh: number | null;
  regressions: number;
  improvements: number;
  unchanged: number;
  newCases: number;
  missingCases: number;
  basePassRate: number | null;
  candidatePassRate: number | null;
  costDeltaUsd: number | null;
  latencyDeltaMs: number | null;
  regressed: boolean;
}

export const evalRunComparison = (c: Queryable, base: string, candidate: string, threshold = 0) =>
  one<RunComparison>(c,
    `select paired_cases as "pairedCases", base_mean::float8 as "baseMean", candidate_mean::float8 as "candidateMean",
            mean_delta::float8 as "meanDelta", delta_ci_low::float8 as "deltaCiLow", delta_ci_high::float8 as "deltaCiHigh",
            regressions, improvements, unchanged, new_cases as "newCases", missing_cases as "missingCases",
            base_pass_rate::float8 as "basePassRate", candidate_pass_rate::float8 as "candidatePassRate",
            cost_delta_usd::float8 as "costDeltaUsd", latency_delta_ms::float8 as "latencyDeltaMs", regressed
       from ballast.eval_run_comparison($1, $2, $3)`, [base, candidate, threshold]);

export interface EvalRunRow {
  id: string;
  dataset: string;
  datasetVersion: number;
  pipeline: string;
  step: string;
  promptVersion: number | null;
  model: string | null;
  label: string | null;
  status: string;
  jobId: string | null;
  meanScore: number | null;
  passRate: number | null;
  summary: Record<string, unknown> | null;
  createdAt: Date;
}

const RUN_COLUMNS = `id::text, dataset, dataset_version as "datasetVersion", pipeline, step, prompt_version as "promptVersion", model,
  label, status, job_id::text as "jobId", mean_score::float8 as "meanScore", pass_rate::float8 as "passRate", summary, created_at as "createdAt"`;

export const getEvalRun = (c: Queryable, id: string) =>
  one<EvalRunRow | undefined>(c, `select ${RUN_COLUMNS} from ballast.eval_runs where id = $1`, [id]);

/** Runs, newest first (of one dataset, or every one). */
export const listEvalRuns = (c: Queryable, dataset: string | null, limit: number) =>
  rows<EvalRunRow>(c, `select ${RUN_COLUMNS} from ballast.eval_runs where $1::text is null or dataset = $1 order by id desc limit $2`, [dataset, limit]);

export interface EvalCaseRow {
  id: string;
  caseKey: string;
  input: unknown;
  reference: unknown;
  tags: string[];
  sourceKind: string;
  source: unknown;
  addedInVersion: number;
}

/** The cases of a dataset's current version, by key. */
export const listEvalCases = (c: Queryable, dataset: string) =>
  rows<EvalCaseRow>(c,
    `select id::text, case_key as "caseKey", input, reference, tags, source_kind as "sourceKind", source, added_in_version as "addedInVersion"
       from ballast.eval_cases where dataset = $1 and in_current_version order by case_key`, [dataset]);

// ---- the worker's statements (the eval step kind) ----------------------------------------------------------------

/** The cases of the eval job's run (creating the run of a scheduled job); marks it running. */
export const evalRunCases = (c: Queryable, jobId: string) =>
  rows<{ runId: string; caseId: string }>(c,
    'select run_id::text as "runId", case_id::text as "caseId" from ballast_private.eval_run_cases($1)', [jobId]);

/** The run and the case an item evaluates (rows of ballast_private.eval_runs and eval_cases, as JSON). */
export interface EvalItemData {
  run: {
    id: number; dataset: string; pipeline: string; pipeline_version: number; step: string; prompt_name: string | null;
    prompt_version: number | null; model: string | null; scorers: ScorerSpec[]; threshold: number | string;
  };
  case: { id: number; case_key: string; input: Record<string, unknown>; reference: unknown; checks: ScorerSpec[]; tags: string[] };
}

export const evalItem = (c: Queryable, runId: string, caseId: string) =>
  one<{ item: EvalItemData | null }>(c, 'select ballast_private.eval_item($1, $2) as item', [runId, caseId]).then((r) => r.item);

/** A prompt version's templates from ballast.prompts (null when it is not stored). */
export const storedPrompt = (c: Queryable, name: string, version: number) =>
  one<{ template: { system: string | null; user: string } } | undefined>(c,
    'select template from ballast.prompts where name = $1 and version = $2', [name, version]).then((r) => r?.template ?? null);

/** What the ladder recorded on an attempt: { outcome, detail }. */
export const attemptContract = (c: Queryable, attemptId: string) =>
  one<{ contract: { outcome: string | null; detail: unknown } }>(c, 'select ballast_private.attempt_contract($1) as contract', [attemptId])
    .then((r) => r.contract);

export interface EvalResultInput {
  output: unknown;
  scores: Record<string, unknown>;
  score: number;
  passed: boolean;
  error: { class: string; code?: string; message: string } | null;
  contract_outcome: string | null;
  contract_detail: unknown;
}

export const recordEvalResult = (c: Queryable, runId: string, caseId: string, attemptId: string, result: EvalResultInput) =>
  rows(c, 'select ballast_private.record_eval_result($1, $2, $3, $4::jsonb)', [runId, caseId, attemptId, json(result)]);

export const finishEvalRun = (c: Queryable, runId: string) =>
  one<{ summary: Record<string, unknown> }>(c, 'select ballast_private.finish_eval_run($1) as summary', [runId]).then((r) => r.summary);

/** The run of an eval job. */
export const runOfJob = (c: Queryable, jobId: string) =>
  one<{ id: string } | undefined>(c, 'select id::text from ballast_private.eval_runs where job_id = $1', [jobId]).then((r) => r?.id ?? null);
