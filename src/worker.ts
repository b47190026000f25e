// A ballast worker process: registers its pipelines and itself, then runs a graphile-worker pool whose tasks are
// the step wake-ups of those pipeline versions (one task identifier per pipeline version). Each wake-up goes
// claim -> run -> complete/fail through the SQL functions; graphile-worker only delivers the wake-ups.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { run, Logger as WorkerLogger, type Runner, type Task, type TaskList, type WorkerEvents } from 'graphile-worker';
import { z } from 'zod';
import type pg from 'pg';
import type { Logger } from 'pino';
import { BallastDb, createPool, type Claim, type StepError } from './db/api.ts';
import { PermanentError, RetryableError, BallastError } from './errors.ts';
import type { Pipeline, StepDefinition } from './pipeline.ts';
import { createLogger } from './log.ts';

export interface WorkerOptions {
  /** Postgres connection string (or pass `pool`). */
  connectionString?: string;
  pool?: pg.Pool;
  pipelines: readonly Pipeline<any, any>[];
  /** Steps run at once by this process (default 10). */
  concurrency?: number;
  /** How long a claimed attempt is leased before another worker may consider it abandoned (default 60 s). */
  leaseMs?: number;
  /** How often the worker polls for due wake-ups it may have missed a notification for (default 1000 ms). */
  pollIntervalMs?: number;
  /** How often the worker reports it is alive (default 5000 ms). */
  heartbeatMs?: number;
  workerId?: string;
  log?: Logger;
}

export interface BallastWorker {
  readonly id: string;
  readonly db: BallastDb;
  /** Resolves when the graphile-worker pool has started and its id is recorded. */
  readonly ready: Promise<void>;
  /** Stops fetching, waits for running steps, marks the worker stopped and releases what it held. */
  stop(): Promise<void>;
}

function pinoWorkerLogger(log: Logger): WorkerLogger {
  return new WorkerLogger((scope) => (level, message, meta) => {
    const fields = { ...scope, ...(meta ?? {}) };
    if (level === 'error') log.error(fields, message);
    else if (level === 'warning') log.warn(fields, message);
    else if (level === 'info') log.debug(fields, message); // graphile-worker's info lines are chatty
    else log.trace(fields, message);
  });
}

/** The longest Retry-After ballast.fail_step accepts (7 days); longer hints are capped, not refused. */
const MAX_RETRY_AFTER_MS = 604_800_000;

/** Classifies what a step handler threw into the error ballast records. */
export function classifyError(err: unknown, step: StepDefinition, signal: AbortSignal): StepError {
  const e = err instanceof Error ? err : new Error(String(err));
  // fail_step refuses an empty message or an out-of-range delay (BA002); a handler's odd error must still be recorded.
  const message = e.message || e.name || 'error';
  if (e instanceof PermanentError) return { class: 'permanent', code: e.errorCode, message, retryable: false };
  if (e instanceof RetryableError) {
    const after = e.retryAfterMs;
    const retryAfterMs = typeof after === 'number' && Number.isFinite(after) && after >= 0
      ? Math.min(Math.ceil(after), MAX_RETRY_AFTER_MS) : undefined;
    return { class: 'retryable', code: e.errorCode, message, retryable: true, retryAfterMs };
  }
  if (signal.aborted) return { class: 'aborted', message: `aborted: ${message}`, retryable: true };
  if (step.isPermanent?.(err)) return { class: 'permanent', code: e.name, message, retryable: false };
  return { class: 'error', code: e.name, message, retryable: true };
}

export async function startWorker(options: WorkerOptions): Promise<BallastWorker> {
  const log = options.log ?? createLogger();
  const concurrency = options.concurrency ?? 10;
  const leaseMs = options.leaseMs ?? 60_000;
  const workerId = options.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const ownPool = !options.pool;
  if (!options.pool && !options.connectionString) {
    throw new Error('startWorker: pass connectionString (or pool); e.g. process.env.DATABASE_URL');
  }
  const pool = options.pool ?? createPool(options.connectionString!, { max: concurrency + 4, applicationName: `ballast-worker ${workerId}`, log });
  const db = new BallastDb(pool);
  const wlog = log.child({ worker_id: workerId });

  const byTask = new Map<string, Pipeline<any, any>>();
  for (const p of options.pipelines) {
    if (byTask.has(p.taskIdentifier)) throw new Error(`pipeline ${p.ref} is listed twice`);
    byTask.set(p.taskIdentifier, p);
  }
  for (const p of options.pipelines) {
    const { created } = await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
    wlog.info({ pipeline: p.ref, created }, created ? 'registered pipeline' : 'pipeline already registered, definition unchanged');
  }
  await db.registerWorker({
    workerId,
    hostname: hostname(),
    pid: process.pid,
    concurrency,
    pipelines: options.pipelines.map((p) => p.ref),
  });

  const taskList: TaskList = {};
  for (const [identifier, p] of byTask) {
    taskList[identifier] = makeTask(p, db, workerId, leaseMs, wlog);
  }

  const events: WorkerEvents = new EventEmitter() as WorkerEvents;
  let poolId: string | undefined;
  const ready = new Promise<void>((resolve, reject) => {
    events.once('pool:create', ({ workerPool }) => {
      poolId = workerPool.id;
      db.setWorkerPool(workerId, workerPool.id).then(resolve, reject);
    });
  });

  const runner: Runner = await run({
    pgPool: pool,
    taskList,
    concurrency,
    noHandleSignals: true,
    pollInterval: options.pollIntervalMs ?? 1000,
    events,
    logger: pinoWorkerLogger(wlog),
  });
  await ready;
  wlog.info({ concurrency, pool_id: poolId, pipelines: options.pipelines.map((p) => p.ref) }, 'worker started');

  const heartbeat = setInterval(() => {
    db.heartbeatWorker(workerId).catch((err) => wlog.warn({ err: (err as Error).message }, 'heartbeat failed'));
  }, options.heartbeatMs ?? 5000);
  heartbeat.unref();

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      clearInterval(heartbeat);
      await runner.stop();
      // graphile-worker may leave a just-finished job locked when its pool stops; stop_worker marks this worker
      // stopped and unlocks its pool's jobs (force_unlock_workers) so nothing stays locked for hours.
      await db.stopWorker(workerId).catch((err) => wlog.warn({ err: (err as Error).message }, 'could not mark worker stopped'));
      if (ownPool) await pool.end();
      wlog.info('worker stopped');
    })());

  return { id: workerId, db, ready, stop };
}

function makeTask(p: Pipeline<any, any>, db: BallastDb, workerId: string, leaseMs: number, log: Logger): Task {
  return async (payload, helpers) => {
    const stepId = (payload as { step_id?: unknown } | null)?.step_id;
    if (typeof stepId !== 'number' && typeof stepId !== 'string') {
      log.error({ payload }, 'wake-up without a step_id; ignored');
      return;
    }
    const claim = await db.claimStep(stepId, workerId, leaseMs);
    if (!claim) {
      log.debug({ step_id: String(stepId) }, 'wake-up found nothing to run (duplicate, stale, not due, or throttled)');
      return;
    }
    await runClaim(p, claim, db, helpers.abortSignal ?? new AbortController().signal, log);
  };
}

async function runClaim(p: Pipeline<any, any>, claim: Claim, db: BallastDb, signal: AbortSignal, baseLog: Logger): Promise<void> {
  const log = baseLog.child({
    job_id: claim.jobId, step_id: claim.stepId, attempt_id: claim.attemptId, pipeline: p.ref, step: claim.stepName,
  });
  const started = performance.now();
  const fail = async (error: StepError) => {
    const r = await settle(() => db.failStep(claim.attemptId, error), log);
    if (r) {
      const fields = { error_class: error.class, error: error.message, attempt: claim.attemptNumber, job_status: r.jobStatus };
      if (r.stepStatus === 'retrying') log.warn({ ...fields, next_run_at: r.nextRunAt }, 'step failed; retry scheduled');
      else log.error(fields, 'step failed permanently');
    }
  };

  const step = p.stepNamed(claim.stepName);
  if (!step) {
    await fail({ class: 'unknown_step', message: `pipeline ${p.ref} has no step "${claim.stepName}" in this worker's code`, retryable: false });
    return;
  }
  const input = p.input.safeParse(claim.input);
  if (!input.success) {
    await fail({ class: 'invalid_input', message: `job input does not satisfy ${p.ref}'s contract: ${z.prettifyError(input.error)}`, retryable: false });
    return;
  }

  log.info({ attempt: claim.attemptNumber }, 'step started');
  let output: unknown;
  try {
    output = await step.run({
      input: input.data,
      deps: claim.dependencies,
      signal,
      log,
      progress: async (value: unknown) => {
        await db.reportProgress(claim.attemptId, value);
      },
      idempotencyKey: claim.idempotencyKey,
      attempt: claim.attemptNumber,
      maxAttempts: claim.maxAttempts,
      jobId: claim.jobId,
      stepId: claim.stepId,
      tenantId: claim.tenantId,
    });
  } catch (err) {
    await fail(classifyError(err, step, signal));
    return;
  }
  const checked = step.output.safeParse(output);
  if (!checked.success) {
    await fail({ class: 'output_contract', message: `step output does not satisfy its contract: ${z.prettifyError(checked.error)}`, retryable: false });
    return;
  }
  const done = await settle(() => db.completeStep(claim.attemptId, checked.data), log);
  if (done) {
    log.info({ ms: Math.round(performance.now() - started), job_status: done.jobStatus }, 'step succeeded');
  }
}

/** Records an outcome; an attempt that lost its step in the meantime (BA008) is logged, not retried. */
async function settle<T>(fn: () => Promise<T>, log: Logger): Promise<T | undefined> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof BallastError && err.code === 'stale_attempt') {
      log.warn({ err: err.message }, 'result discarded: the attempt no longer owns its step');
      return undefined;
    }
    throw err;
  }
}
