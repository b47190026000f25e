// ballast's public TypeScript API (`import { ... } from 'ballast'`): define pipelines, run workers, submit and read
// jobs. Only what an application uses is exported here; the rest of src/ is internal. The package ships this file
// built (dist/index.js and .d.ts, `npm run build`); the project itself runs the TypeScript directly.
//
// Importing it loads the worker runtime (graphile-worker, pg, kysely, zod, pino) but not the AI SDK: model steps,
// callModel and the provider adapters import it on first use.
import type { CallModelOptions } from './model/call.ts';
import type { ModelCallRecord } from './model/record.ts';

export { pipeline, Pipeline } from './pipeline/pipeline.ts';
export type {
  StepContext, StepOptions, RetryPolicy, ConcurrencyPolicy, WaitOptions, EffectInfo, EffectClient,
  ChildJob, StartedChild, ChildResult, WaitForChildrenOptions,
  MapOptions, ItemContext, MapResult, ModelStepOptions,
} from './pipeline/pipeline.ts';
export { startWorker } from './worker/worker.ts';
export type { BallastWorker, WorkerOptions } from './worker/worker.ts';
export type { EvalOptions } from './eval/pipeline.ts';
export type { ScorerFn, ScorerArgs } from './pipeline/definition.ts';
export { connect } from './connect.ts';
export type { ConnectOptions } from './connect.ts';
export { BallastDb, createPool } from './db/api.ts';
export type { Job, Step, Attempt, BallastEvent, SubmitJobArgs, SubmitJobResult, SubmitJobsArgs, SubmitJobsResult } from './db/api.ts';
export type { JobStatus, StepStatus, ContractOutcome } from './db/schema.ts';
export { migrate } from './db/migrate.ts';
export { loadPipelines } from './pipeline/load.ts';
export { BallastError, InvalidInputError, IdempotencyConflictError, PermanentError, RetryableError, WaitTimeoutError } from './errors.ts';
export type { BallastErrorCode, InputIssue } from './errors.ts';
export { createLogger } from './log.ts';
export type { CallModelOptions } from './model/call.ts';
export type { ModelCallRecord, ModelUsage, ModelTimings } from './model/record.ts';
export type { ModelFailure, FailureClass, FinishReason } from './model/classify.ts';
export { ProviderRegistry } from './model/providers.ts';
export type { ProviderConfig, ProviderKind } from './model/providers.ts';
export { prompt, Prompt, promptLabel, PromptLabel, storedPrompt, StoredPrompt } from './model/prompt.ts';
export type { PromptDefinition, PromptOption, PromptRef } from './model/prompt.ts';
export type { PromptLabelRow, PromptLabelHistoryRow, PromptArmRow, ResolvedPrompt } from './db/prompts.ts';
export type { ModelPolicy, QualityPolicy, QualityRule } from './model/ladder.ts';
export { ModelStore } from './db/model-store.ts';
export type { ModelCallRow, ModelCallTrace } from './db/model-store.ts';
export { Retention } from './worker/retention.ts';
export type { RetentionOptions, RetentionRun } from './worker/retention.ts';
export { AlertChecker } from './worker/alerts.ts';
export type { AlertCheckerOptions } from './worker/alerts.ts';
export type { AlertChange, AlertRow, DriftRuleArgs, BudgetAlertArgs, DriftMetric, BudgetScope } from './db/alerts.ts';

/** Calls a model once (src/model/call.ts); never throws for provider or content failures, they come back in `error`.
 * The AI SDK is imported on the first call, not with ballast. */
export async function callModel<T = unknown>(options: CallModelOptions<T>): Promise<ModelCallRecord<T>> {
  return (await import('./model/call.ts')).callModel(options);
}
