// Evals over GraphQL (migration 0044, docs/evals.md): the mutations startEvalRun, addEvalCases, promoteToDataset and
// setAutoPromotion, and the query fields evalRuns, evalCases and compareEvalRuns, each one statement of
// src/db/evals.ts (two for compareEvalRuns) run as the caller in the caller's transaction, so Postgres decides who
// may (the verbs are granted to ballast_operator, the views and comparisons to reporters too; any other token is
// FORBIDDEN).
import { context, type Step } from 'postgraphile/grafast';
import { withPgClient } from 'postgraphile/@dataplan/pg';
import { extendSchema, gql } from 'postgraphile/utils';
import type { FieldArgs } from 'postgraphile/grafast';
import * as evals from '../db/evals.ts';
import type { Queryable } from '../db/verbs.ts';
import { text, verbField } from './mutations.ts';

const typeDefs = gql`
  "An eval run to start: a dataset's cases against a pipeline's model step, a prompt version and a model."
  input StartEvalRunInput {
    "The dataset."
    dataset: String!
    "The pipeline whose model step is evaluated."
    pipeline: String!
    "The model step."
    step: String!
    "The prompt version (in ballast.prompts). Default: the step's own."
    promptVersion: Int
    "The model, provider:model (then no fallbacks). Default: the step's own models."
    model: String
    "The scorers, e.g. [{kind: exact}, {kind: numeric, path: total, tolerance: 0.01}]. Default [{kind: exact}]."
    scorers: JSON
    "The score a case needs to pass, 0 to 1. Default 0.5."
    threshold: Float
    "A free label (a commit, a PR)."
    label: String
    "The pipeline version. Default: the newest."
    pipelineVersion: Int
    "The dataset version. Default: the current."
    datasetVersion: Int
    "The tenant the eval job runs as (its budget pays). Default evals."
    tenantId: String
  }
  "What startEvalRun did."
  type StartEvalRunPayload {
    "The run (ballast.eval_runs)."
    runId: BigInt!
    "The job of ballast.eval that runs it."
    jobId: BigInt!
  }
  "Cases to add to a dataset, as one new version (created when missing)."
  input AddEvalCasesInput {
    "The dataset."
    dataset: String!
    "The cases: [{key, input: {input, deps}, reference, checks, tags, source}]; a key already there is replaced."
    cases: JSON!
  }
  "A case added."
  type AddedEvalCase {
    "Its id."
    caseId: BigInt!
    "Its key."
    caseKey: String!
    "The dataset version that has it."
    datasetVersion: Int!
  }
  "What addEvalCases did."
  type AddEvalCasesPayload {
    "The cases, in input order."
    cases: [AddedEvalCase!]!
  }
  "A production step to make a case of a dataset."
  input PromoteToDatasetInput {
    "The step (its real variables become the case's input)."
    stepId: BigInt!
    "The dataset."
    dataset: String!
    "The case key. Default <pipeline>.<step>:<step id>."
    key: String
    "The reference output. Default: the approved or edited output, else the step's output."
    reference: JSON
    "Tags of the case."
    tags: [String!]
  }
  "What promoteToDataset did."
  type PromoteToDatasetPayload {
    "The case's id."
    caseId: BigInt!
    "Its key."
    caseKey: String!
    "The dataset version that has it."
    datasetVersion: Int!
    "Where it came from: review, fallback, degraded, rejection or production."
    sourceKind: String!
  }
  "Reviews of a pipeline step that become cases of a dataset."
  input SetAutoPromotionInput {
    "The pipeline."
    pipeline: String!
    "The step."
    step: String!
    "The dataset; null turns auto-promotion of the step off."
    dataset: String
    "The review decisions promoted (approve, edit, reject). Default approve and edit."
    decisions: [String!]
  }
  "What setAutoPromotion did."
  type SetAutoPromotionPayload {
    "True."
    done: Boolean!
  }
  "A case of two eval runs side by side."
  type EvalCaseComparison {
    "The case key."
    caseKey: String!
    "The base run's score. Null: the base did not score it."
    baseScore: Float
    "The candidate's score. Null: the candidate did not score it."
    candidateScore: Float
    "candidateScore - baseScore. Null: one is missing."
    delta: Float
    "regression, improvement, same, new or missing."
    change: String!
    "Whether the base passed it. Null: not scored."
    basePassed: Boolean
    "Whether the candidate passed it. Null: not scored."
    candidatePassed: Boolean
    "The candidate's cost minus the base's, USD."
    costDeltaUsd: Float
    "The candidate's latency minus the base's, ms."
    latencyDeltaMs: Int
  }
  "Two eval runs in one row (ballast.eval_run_comparison)."
  type EvalRunComparison {
    "Cases both runs scored."
    pairedCases: Int!
    "The base's mean score over them."
    baseMean: Float
    "The candidate's mean score over them."
    candidateMean: Float
    "The mean delta."
    meanDelta: Float
    "The low end of its 95 % bootstrap interval."
    deltaCiLow: Float
    "The high end of its 95 % bootstrap interval."
    deltaCiHigh: Float
    "Cases that regressed."
    regressions: Int!
    "Cases that improved."
    improvements: Int!
    "Cases that stayed within the threshold."
    unchanged: Int!
    "Cases only the candidate scored."
    newCases: Int!
    "Cases only the base scored."
    missingCases: Int!
    "The base's pass rate."
    basePassRate: Float
    "The candidate's pass rate."
    candidatePassRate: Float
    "The cost delta, USD, summed."
    costDeltaUsd: Float
    "The latency delta per case, ms."
    latencyDeltaMs: Float
    "True when the mean delta or any case's delta is below -threshold."
    regressed: Boolean!
  }
  "Two eval runs compared."
  type EvalComparison {
    "The summary and the verdict."
    summary: EvalRunComparison!
    "The cases, regressions first."
    cases: [EvalCaseComparison!]!
  }
  extend type Mutation {
    "Start an eval run (ballast.start_eval_run). Operators."
    startEvalRun(input: StartEvalRunInput!): StartEvalRunPayload
    "Add cases to a dataset as one new version (ballast.add_eval_cases). Operators."
    addEvalCases(input: AddEvalCasesInput!): AddEvalCasesPayload
    "Make a production step a case of a dataset (ballast.promote_to_dataset). Operators."
    promoteToDataset(input: PromoteToDatasetInput!): PromoteToDatasetPayload
    "Resolved reviews of a step become cases of a dataset (ballast.set_auto_promotion). Operators."
    setAutoPromotion(input: SetAutoPromotionInput!): SetAutoPromotionPayload
  }
  "An eval run (ballast.eval_runs)."
  type EvalRunInfo {
    "The run id."
    id: BigInt!
    "The dataset."
    dataset: String!
    "The dataset version it ran."
    datasetVersion: Int!
    "The pipeline evaluated."
    pipeline: String!
    "The step evaluated."
    step: String!
    "The prompt version. Null: unknown (imported)."
    promptVersion: Int
    "The model asked for. Null: the step's own."
    model: String
    "Its label. Null: none."
    label: String
    "queued, running, completed, imported, failed or cancelled."
    status: String!
    "The ballast.eval job. Null: imported."
    jobId: BigInt
    "The mean score. Null: not finished."
    meanScore: Float
    "The fraction of cases that passed. Null: not finished."
    passRate: Float
    "Its figures (cases, scored, passed, cost_usd, latency_ms_p50, errors, by_scorer...). Null: not finished."
    summary: JSON
    "When it was started."
    createdAt: Datetime!
  }
  "A case of a dataset's current version (ballast.eval_cases)."
  type EvalCaseInfo {
    "The case id."
    id: BigInt!
    "Its key."
    caseKey: String!
    "The prompt's variables: {input, deps}."
    input: JSON!
    "The reference output. Null: none."
    reference: JSON
    "Its tags."
    tags: [String!]!
    "manual, review, fallback, degraded, rejection or production."
    sourceKind: String
    "Where it came from (job, step, pipeline, tenant...)."
    source: JSON!
    "The dataset version that added it."
    addedInVersion: Int!
  }
  extend type Query {
    "Eval runs, newest first (ballast.eval_runs). Operators and reporters."
    evalRuns(
      "Only this dataset's runs."
      dataset: String
      "At most this many (default 50, at most 1000)."
      first: Int
    ): [EvalRunInfo!]!
    "The cases of a dataset's current version, by key (ballast.eval_cases). Operators and reporters."
    evalCases(
      "The dataset."
      dataset: String!
    ): [EvalCaseInfo!]!
    "Two eval runs case by case with the verdict (ballast.compare_eval_runs, eval_run_comparison). Operators and reporters."
    compareEvalRuns(
      "The base run."
      base: BigInt!
      "The candidate run."
      candidate: BigInt!
      "The score drop a case may have before it is a regression (default 0)."
      threshold: Float
    ): EvalComparison
  }
`;

const int = (v: unknown) => (typeof v === 'number' ? v : null);

export const EvalMutationsPlugin = extendSchema((build) => {
  const executor = build.input.pgRegistry.pgExecutors.main!;
  const verb = verbField(build);
  return {
    typeDefs,
    objects: {
      Mutation: {
        plans: {
          startEvalRun: verb((c, i) => evals.startEvalRun(c, {
            dataset: String(i.dataset), pipeline: String(i.pipeline), step: String(i.step), promptVersion: int(i.promptVersion),
            model: text(i.model), scorers: (i.scorers as evals.ScorerSpec[] | null | undefined) ?? null, threshold: int(i.threshold),
            label: text(i.label), pipelineVersion: int(i.pipelineVersion), datasetVersion: int(i.datasetVersion), tenantId: text(i.tenantId),
          })),
          addEvalCases: verb(async (c, i) => ({ cases: await evals.addEvalCases(c, String(i.dataset), i.cases as evals.EvalCaseInput[]) })),
          promoteToDataset: verb((c, i) => evals.promoteToDataset(c, String(i.stepId), String(i.dataset), {
            key: text(i.key), reference: i.reference ?? undefined, tags: (i.tags as string[] | null | undefined) ?? null,
          })),
          setAutoPromotion: verb(async (c, i) => {
            await evals.setAutoPromotion(c, String(i.pipeline), String(i.step), text(i.dataset), (i.decisions as string[] | null | undefined) ?? null);
            return { done: true };
          }),
        },
      },
      Query: {
        plans: {
          evalRuns: (_: Step, args: FieldArgs) => withPgClient(executor,
            { dataset: args.getRaw('dataset'), first: args.getRaw('first'), caller: context().get('ballastCaller') } as never,
            (client, a: { dataset: string | null; first: number | null }) =>
              evals.listEvalRuns(client as unknown as Queryable, a.dataset ?? null, Math.min(Math.max(a.first ?? 50, 0), 1000))),
          evalCases: (_: Step, args: FieldArgs) => withPgClient(executor,
            { dataset: args.getRaw('dataset'), caller: context().get('ballastCaller') } as never,
            (client, a: { dataset: string }) => evals.listEvalCases(client as unknown as Queryable, String(a.dataset))),
          compareEvalRuns: (_: Step, args: FieldArgs) => withPgClient(executor,
            { base: args.getRaw('base'), candidate: args.getRaw('candidate'), threshold: args.getRaw('threshold'), caller: context().get('ballastCaller') } as never,
            async (client, a: { base: string; candidate: string; threshold: number | null }) => {
              const c = client as unknown as Queryable;
              const threshold = a.threshold ?? 0;
              return {
                summary: await evals.evalRunComparison(c, String(a.base), String(a.candidate), threshold),
                cases: await evals.compareEvalRuns(c, String(a.base), String(a.candidate), threshold),
              };
            }),
        },
      },
    },
  };
}, 'BallastEvalMutationsPlugin');
