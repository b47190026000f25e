// The database doorway: every SQL statement the TypeScript side runs is in this file, one typed method per ballast
// verb. Everything else (worker, CLI, tests' helpers) calls these methods, so the TypeScript API, psql and GraphQL
// all go through the same SQL functions.
import pg from 'pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import type { Logger } from 'pino';
import { translateError } from '../errors.ts';
import type { Database, JobsView, StepsView, AttemptsView, EventsView, JobStatus, StepStatus } from './schema.ts';
import type { Selectable } from 'kysely';

export type Job = Selectable<JobsView>;
export type Step = Selectable<StepsView>;
export type Attempt = Selectable<AttemptsView>;
export type BallastEvent = Selectable<EventsView>;

export interface SubmitJobArgs {
  pipeline: string;
  input?: unknown;
  idempotencyKey?: string | null;
  tenantId?: string;
  priority?: number;
  pipelineVersion?: number | null;
}

export interface SubmitJobResult {
  jobId: string;
  created: boolean;
  status: JobStatus;
  pipelineVersion: number;
}

export interface Claim {
  attemptId: string;
  attemptNumber: number;
  maxAttempts: number;
  stepId: string;
  stepName: string;
  jobId: string;
  tenantId: string;
  pipeline: string;
  pipelineVersion: number;
  input: unknown;
  dependencies: Record<string, unknown>;
  idempotencyKey: string;
  timeoutMs: number | null;
  leaseExpiresAt: Date;
}

export interface StepError {
  class: string;
  message: string;
  code?: string | undefined;
  retryable?: boolean | undefined;
  retryAfterMs?: number | undefined;
}

export function createPool(connectionString: string, opts: { max?: number; applicationName?: string; log?: Logger } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'ballast',
  });
  // A connection that dies while idle (server restart, network) must not crash the process: pg emits 'error' on
  // the pool and on the client; the next checkout opens a fresh connection.
  const app = opts.applicationName ?? 'ballast';
  // Once the pool is ending, pg closes its connections without waiting; a server stopping right after is expected.
  pool.on('error', (err) => {
    if (!pool.ending) opts.log?.warn({ err: err.message, pool: app }, 'idle database connection failed; it will be replaced');
  });
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      if (!pool.ending) opts.log?.warn({ err: err.message, pool: app }, 'database connection failed');
    });
  });
  return pool;
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw translateError(err);
  }
}

export class BallastDb {
  readonly pool: pg.Pool;
  readonly db: Kysely<Database>;

  constructor(pool: pg.Pool) {
    this.pool = pool;
    this.db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  }

  async submitJob(args: SubmitJobArgs): Promise<SubmitJobResult> {
    return call(async () => {
      const { rows } = await sql<{ job_id: string; created: boolean; status: JobStatus; pipeline_version: number }>`
        select * from ballast.submit_job(${args.pipeline}, ${JSON.stringify(args.input ?? {})}::jsonb,
          ${args.idempotencyKey ?? null}, ${args.tenantId ?? 'default'}, ${args.priority ?? 0},
          ${args.pipelineVersion ?? null})`.execute(this.db);
      const row = rows[0]!;
      return { jobId: row.job_id, created: row.created, status: row.status, pipelineVersion: row.pipeline_version };
    });
  }

  async registerPipeline(name: string, version: number, definition: unknown, inputSchema: unknown): Promise<{ created: boolean; hash: string }> {
    return call(async () => {
      const { rows } = await sql<{ created: boolean; definition_hash: string }>`
        select * from ballast.register_pipeline(${name}, ${version}, ${JSON.stringify(definition)}::jsonb,
          ${JSON.stringify(inputSchema)}::jsonb)`.execute(this.db);
      return { created: rows[0]!.created, hash: rows[0]!.definition_hash };
    });
  }

  async registerWorker(args: { workerId: string; hostname: string; pid: number; concurrency: number; pipelines: string[] }): Promise<void> {
    await call(() =>
      sql`select ballast.register_worker(${args.workerId}, ${args.hostname}, ${args.pid}, ${args.concurrency},
            ${args.pipelines}::text[])`.execute(this.db),
    );
  }

  async setWorkerPool(workerId: string, poolId: string): Promise<void> {
    await call(() => sql`select ballast.set_worker_pool(${workerId}, ${poolId})`.execute(this.db));
  }

  async heartbeatWorker(workerId: string): Promise<boolean> {
    return call(async () => {
      const { rows } = await sql<{ alive: boolean }>`select ballast.heartbeat_worker(${workerId}) as alive`.execute(this.db);
      return rows[0]!.alive;
    });
  }

  async stopWorker(workerId: string): Promise<void> {
    await call(() => sql`select ballast.stop_worker(${workerId})`.execute(this.db));
  }

  async claimStep(stepId: string | number, workerId: string, leaseMs: number): Promise<Claim | undefined> {
    return call(async () => {
      const { rows } = await sql<{
        attempt_id: string; attempt_number: number; max_attempts: number; step_id: string; step_name: string;
        job_id: string; tenant_id: string; pipeline: string; pipeline_version: number; input: unknown;
        dependencies: Record<string, unknown>; idempotency_key: string; timeout_ms: number | null;
        lease_expires_at: Date;
      }>`select * from ballast.claim_step(${String(stepId)}::bigint, ${workerId}, ${leaseMs})`.execute(this.db);
      const r = rows[0];
      if (!r) return undefined;
      return {
        attemptId: r.attempt_id, attemptNumber: r.attempt_number, maxAttempts: r.max_attempts, stepId: r.step_id,
        stepName: r.step_name, jobId: r.job_id, tenantId: r.tenant_id, pipeline: r.pipeline,
        pipelineVersion: r.pipeline_version, input: r.input, dependencies: r.dependencies,
        idempotencyKey: r.idempotency_key, timeoutMs: r.timeout_ms, leaseExpiresAt: r.lease_expires_at,
      };
    });
  }

  async completeStep(attemptId: string, output: unknown): Promise<{ jobStatus: JobStatus; queuedStepIds: string[] }> {
    return call(async () => {
      const { rows } = await sql<{ job_status: JobStatus; queued_step_ids: string[] }>`
        select * from ballast.complete_step(${attemptId}::bigint, ${JSON.stringify(output ?? null)}::jsonb)`.execute(this.db);
      return { jobStatus: rows[0]!.job_status, queuedStepIds: rows[0]!.queued_step_ids };
    });
  }

  async failStep(attemptId: string, error: StepError): Promise<{ stepStatus: StepStatus; nextRunAt: Date | null; jobStatus: JobStatus }> {
    const payload = {
      class: error.class,
      message: error.message,
      code: error.code ?? null,
      retryable: error.retryable ?? true,
      retry_after_ms: error.retryAfterMs ?? null,
    };
    return call(async () => {
      const { rows } = await sql<{ step_status: StepStatus; next_run_at: Date | null; job_status: JobStatus }>`
        select * from ballast.fail_step(${attemptId}::bigint, ${JSON.stringify(payload)}::jsonb)`.execute(this.db);
      const r = rows[0]!;
      return { stepStatus: r.step_status, nextRunAt: r.next_run_at, jobStatus: r.job_status };
    });
  }

  async reportProgress(attemptId: string, progress: unknown): Promise<boolean> {
    return call(async () => {
      const { rows } = await sql<{ ok: boolean }>`
        select ballast.report_progress(${attemptId}::bigint, ${JSON.stringify(progress ?? null)}::jsonb) as ok`.execute(this.db);
      return rows[0]!.ok;
    });
  }

  async getJob(jobId: string): Promise<Job | undefined> {
    return this.db.selectFrom('ballast.jobs').selectAll().where('id', '=', jobId as never).executeTakeFirst();
  }

  async getSteps(jobId: string): Promise<Step[]> {
    return this.db.selectFrom('ballast.steps').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }

  async getAttempts(jobId: string): Promise<Attempt[]> {
    return this.db.selectFrom('ballast.attempts').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }

  async getEvents(jobId: string): Promise<BallastEvent[]> {
    return this.db.selectFrom('ballast.events').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }

  async close(): Promise<void> {
    await this.db.destroy(); // ends the pool too
  }
}
