// Row types of ballast's public views (schema ballast), for kysely. bigint ids arrive as strings (pg's default for
// int8), timestamps as Date. Written by hand; test/facts.test.ts checks every interface named in Database against
// its view's columns (names and types), so a migration that changes a view fails there until this file follows.
import type { ColumnType } from 'kysely';

type Timestamp = ColumnType<Date, never, never>;
type Json = unknown;

import type { JobStatus, StepStatus } from '../statuses.ts';

export type { JobStatus, StepStatus };

export interface JobsView {
  id: ColumnType<string, never, never>;
  tenant_id: string;
  pipeline: string;
  pipeline_version: number | null;
  idempotency_key: string | null;
  input: Json;
  status: ColumnType<JobStatus, never, never>;
  priority: number;
  result: ColumnType<Json, never, never>;
  error: ColumnType<Json, never, never>;
  created_at: Timestamp;
  started_at: ColumnType<Date | null, never, never>;
  finished_at: ColumnType<Date | null, never, never>;
  updated_at: Timestamp;
  input_tokens: ColumnType<string, never, never>;
  output_tokens: ColumnType<string, never, never>;
  /** numeric: a decimal string, exact. */
  cost_usd: ColumnType<string, never, never>;
  /** When retention pruned the job's payloads (src/worker/retention.ts); null while they are kept. */
  pruned_at: ColumnType<Date | null, never, never>;
  /** The job whose step started this one (ctx.startChildren); null for a job submitted otherwise. */
  parent_job_id: ColumnType<string | null, never, never>;
  /** The step that started this one as a child job; null for a job submitted otherwise. */
  parent_step_id: ColumnType<string | null, never, never>;
  /** The start time it was submitted with, when later than its submission: scheduled until then (an INSERT may set it). */
  run_at: ColumnType<Date | null, Date | string | null | undefined, never>;
  /** When it must have finished (else it fails: deadline_exceeded); an INSERT may set it. */
  deadline: ColumnType<Date | null, Date | string | null | undefined, never>;
  /** When it must have started (else it fails: expired); an INSERT may set it. */
  expires_at: ColumnType<Date | null, Date | string | null | undefined, never>;
}

export interface StepsView {
  id: string;
  job_id: string;
  name: string;
  status: StepStatus;
  depends_on: string[];
  attempts: number;
  max_attempts: number;
  output: Json;
  error: Json;
  progress: Json;
  next_run_at: Date | null;
  concurrency_key: string | null;
  concurrency_limit: number | null;
  timeout_ms: number | null;
  created_at: Date;
  queued_at: Date | null;
  started_at: Date | null;
  finished_at: Date | null;
  updated_at: Date;
  attempt_offset: number;
  wait_key: string | null;
  wait_deadline: Date | null;
  wait_on_timeout: 'fail' | 'retry' | 'resume' | null;
  input_tokens: string;
  output_tokens: string;
  cost_usd: string;
  review: Json;
  /** Null unless waiting: 'event' (wait_key), 'time' (a sleep until wait_deadline), 'children' (its child jobs) or
   *  'items' (a map step). */
  waiting_for: 'event' | 'time' | 'children' | 'items' | null;
}

export interface AttemptsView {
  id: string;
  step_id: string;
  job_id: string;
  number: number;
  worker_id: string | null;
  outcome: string;
  started_at: Date;
  lease_expires_at: Date;
  finished_at: Date | null;
  error_class: string | null;
  error_code: string | null;
  error_message: string | null;
  error_retryable: boolean | null;
  duration_ms: string | null;
  contract_outcome: ContractOutcome | null;
  contract_detail: Json;
  model: string | null;
  prompt_ref: string | null;
  fallback_used: boolean | null;
  quality_score: string | null;
  model_calls: number;
  input_tokens: string;
  output_tokens: string;
  cost_usd: string;
}

export type ContractOutcome = 'valid_first_try' | 'repaired' | 'fell_back' | 'degraded' | 'rejected' | 'review';

export interface ModelCallsView {
  id: string;
  attempt_id: string;
  step_id: string;
  job_id: string;
  tenant_id: string;
  rung: 'primary' | 'reask' | 'fallback';
  model_index: number;
  provider: string;
  provider_kind: string | null;
  requested_model: string;
  returned_model: string | null;
  prompt_name: string | null;
  prompt_version: number | null;
  prompt_hash: string | null;
  parameters: Json;
  started_at: Date;
  first_token_at: Date | null;
  ended_at: Date;
  latency_ms: string | null;
  first_token_ms: string | null;
  finish_reason_raw: string | null;
  finish_reason: string | null;
  input_tokens: number | null;
  output_tokens: number | null;
  cached_input_tokens: number | null;
  cache_write_tokens: number | null;
  reasoning_tokens: number | null;
  cost_usd: string | null;
  price_valid_from: Date | null;
  price_missing: boolean;
  error_class: string | null;
  error_code: string | null;
  error_message: string | null;
  retryable: boolean | null;
  http_status: number | null;
  request_id: string | null;
  response_id: string | null;
  raw_output: string | null;
  validation_issues: Json;
  repair_method: string | null;
  score: string | null;
  quality: Json;
  /** The provider's answer carried no token usage: charged at the reservation's estimate (migrations/0009_model_steps_and_budgets.sql). */
  usage_missing: boolean;
  /** Paid once (migrations/0042_paid_once.sql): the SHA-256 of what was asked; null before 0042. */
  request_key: string | null;
  /** raw_output is the whole answer exactly as received (so it can be reused). */
  output_complete: boolean;
  /** The call whose stored answer this one reused instead of calling the provider; null for a real call. */
  reused_from: string | null;
  reuse_kind: 'retry' | 'replay' | 'cache' | null;
  /** What the reused answer's original call cost (USD), not spent again. */
  cost_saved_usd: string | null;
}

export interface EventsView {
  id: string;
  job_id: string;
  step_id: string | null;
  attempt_id: string | null;
  type: string;
  status: string | null;
  actor: string;
  reason: string | null;
  data: Json;
  at: Date;
}

export interface PipelinesView {
  name: string;
  version: number;
  definition: Json;
  input_schema: Json;
  definition_hash: string;
  registered_at: Date;
}

export interface Database {
  'ballast.jobs': JobsView;
  'ballast.steps': StepsView;
  'ballast.attempts': AttemptsView;
  'ballast.events': EventsView;
  'ballast.pipelines': PipelinesView;
  'ballast.model_calls': ModelCallsView;
}
