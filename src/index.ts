// ballast's public TypeScript API: define pipelines, run workers, submit and read jobs.
export { pipeline, Pipeline } from './pipeline.ts';
export type { StepContext, StepOptions, RetryPolicy, ConcurrencyPolicy } from './pipeline.ts';
export { startWorker } from './worker.ts';
export type { BallastWorker, WorkerOptions } from './worker.ts';
export { BallastDb, createPool } from './db/api.ts';
export type { Job, Step, Attempt, BallastEvent, SubmitJobArgs, SubmitJobResult } from './db/api.ts';
export { migrate } from './db/migrate.ts';
export { loadPipelines } from './load.ts';
export { BallastError, InvalidInputError, IdempotencyConflictError, PermanentError, RetryableError } from './errors.ts';
export { createLogger } from './log.ts';
export { callModel } from './model/call.ts';
export type { CallModelOptions } from './model/call.ts';
export type { ModelCallRecord, ModelUsage, ModelTimings } from './model/record.ts';
export type { ModelFailure, FailureClass, FinishReason } from './model/classify.ts';
export { ProviderRegistry } from './model/providers.ts';
export type { ProviderConfig, ProviderKind } from './model/providers.ts';
