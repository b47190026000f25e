// Row types of ballast's public views (schema ballast), for kysely. bigint ids arrive as strings (pg's default for
// int8), timestamps as Date.
import type { ColumnType } from 'kysely';

type Timestamp = ColumnType<Date, never, never>;
type Json = unknown;

export type JobStatus =
  | 'queued' | 'running' | 'waiting' | 'retrying' | 'needs_review'
  | 'completed' | 'partially_completed' | 'failed' | 'cancelled';

export type StepStatus =
  | 'pending' | 'queued' | 'running' | 'retrying' | 'waiting' | 'needs_review'
  | 'succeeded' | 'failed' | 'cancelled' | 'skipped';

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
  wait_on_timeout: 'fail' | 'retry' | null;
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
}
