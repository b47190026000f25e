// A ballast worker process: registers its pipelines and itself, then runs a StepEngine (step-engine.ts) that claims
// runnable steps of those pipeline versions straight from the steps table in batches, runs them, and records their
// outcomes in the same batched round trips (ballast.settle_and_claim). graphile-worker runs only the cron task of
// retention, when it is configured.
//
// Around that, the durability machinery: a liveness connection holding the worker's advisory lock and listening for
// cancellations (liveness.ts), a heartbeat that extends the leases of running attempts and learns which of them were
// lost, a reaper that recovers other workers' work (reaper.ts), and a graceful stop that lets running steps finish
// for a grace period, then aborts and releases them.
import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { run, Logger as WorkerLogger, type Runner, type Task, type TaskList, type WorkerEvents } from 'graphile-worker';
import type pg from 'pg';
import type { Logger } from 'pino';
import { BallastDb, createPool } from './db/api.ts';
import type { Pipeline } from './pipeline.ts';
import { createLogger } from './log.ts';
import { Liveness, type CancelNotice } from './liveness.ts';
import { Reaper } from './reaper.ts';
import { retentionSchedule, RETENTION_TASK } from './retention.ts';
import { runAttempt, type AbortReason, type RunningAttempt } from './step-runner.ts';
import { StepEngine } from './step-engine.ts';
import { startWatchdog, type WatchdogOptions } from './watchdog.ts';
import type { ProviderRegistry } from './model/providers.ts';
import { WORKER_DEFAULTS } from './worker-defaults.ts';

export { classifyError } from './step-runner.ts';

export interface WorkerOptions {
  /** Postgres connection string (or pass `pool`). */
  connectionString?: string;
  pool?: pg.Pool;
  pipelines: readonly Pipeline<any, any>[];
  /** Steps run at once by this process (default: WORKER_DEFAULTS.concurrency, worker-defaults.ts). */
  concurrency?: number;
  /** Lease of a running attempt, renewed by every heartbeat; expired leases are reclaimed (default: WORKER_DEFAULTS.leaseMs). */
  leaseMs?: number;
  /** How often the worker polls for runnable steps (due retries, a missed notification) (default: WORKER_DEFAULTS.pollIntervalMs). */
  pollIntervalMs?: number;
  /** How often the worker reports it is alive and renews its leases (default: WORKER_DEFAULTS.heartbeatMs). */
  heartbeatMs?: number;
  /** Run the reaper that recovers dead workers' steps (default true; tests switch it off to drive it by hand). */
  reaper?: boolean;
  /** A worker whose heartbeat is older than this is dead, whatever its liveness lock says (default: WORKER_DEFAULTS.deadAfterMs). */
  deadAfterMs?: number;
  /** A worker whose liveness lock is gone and whose heartbeat is older than this is dead (default: WORKER_DEFAULTS.lostAfterMs). */
  lostAfterMs?: number;
  /** On stop: how long running steps may keep running before they are aborted and released (default: WORKER_DEFAULTS.shutdownGraceMs). */
  shutdownGraceMs?: number;
  /** After an abort: how long a handler gets to settle before the worker stops waiting for it (default: WORKER_DEFAULTS.abandonMs). */
  abandonMs?: number;
  /** Model providers for model steps. Default: the environment's (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...). */
  providers?: ProviderRegistry;
  /**
   * How long finished jobs keep their payloads ('30 days'; see src/retention.ts), pruned by a graphile-worker cron task
   * that one worker runs every 15 minutes; false or 'off': never. Default: BALLAST_RETENTION, else off.
   */
  retention?: string | false;
  /**
   * The watchdog thread (src/watchdog.ts): heartbeats while a step blocks the event loop, and kills the process when
   * the block outlasts a step's timeout (+ marginMs) or maxStallMs, after reporting it (the step is retried, then
   * quarantined after quarantineAfter such faults). Default on; false turns it off. A process embedding startWorker
   * gets the watchdog but no supervisor: it must restart itself after such a kill (`ballast worker` does).
   */
  watchdog?: false | Pick<WatchdogOptions, 'marginMs' | 'maxStallMs' | 'quarantineAfter'>;
  workerId?: string;
  log?: Logger;
}

export interface BallastWorker {
  readonly id: string;
  readonly db: BallastDb;
  /** Resolves when the worker has started (kept for callers of earlier versions: startWorker already waits). */
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

export async function startWorker(options: WorkerOptions): Promise<BallastWorker> {
  const log = options.log ?? createLogger();
  const concurrency = options.concurrency ?? WORKER_DEFAULTS.concurrency;
  const leaseMs = options.leaseMs ?? WORKER_DEFAULTS.leaseMs;
  const abandonMs = options.abandonMs ?? WORKER_DEFAULTS.abandonMs;
  const heartbeatMs = options.heartbeatMs ?? WORKER_DEFAULTS.heartbeatMs;
  const pollIntervalMs = options.pollIntervalMs ?? WORKER_DEFAULTS.pollIntervalMs;
  const workerId = options.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const ownPool = !options.pool;
  if (!options.pool && !options.connectionString) {
    throw new Error('startWorker: pass connectionString (or pool); e.g. process.env.DATABASE_URL');
  }
  const pool = options.pool ?? createPool(options.connectionString!, { max: concurrency + 4, applicationName: `ballast-worker ${workerId}`, log });
  const db = new BallastDb(pool);
  const wlog = log.child({ worker_id: workerId });
  // Before anything is started: a bad BALLAST_RETENTION fails the start with nothing to clean up.
  const retention = retentionSchedule({ db, log: wlog, setting: options.retention });

  const byTask = new Map<string, Pipeline<any, any>>();
  for (const p of options.pipelines) {
    if (byTask.has(p.taskIdentifier)) throw new Error(`pipeline ${p.ref} is listed twice`);
    byTask.set(p.taskIdentifier, p);
  }
  // Running attempts of this process, by attempt id: what cancellation, heartbeats and shutdown act on.
  const running = new Map<string, RunningAttempt>();
  const abortAttempt = (attemptId: string, reason: AbortReason, message: string) => running.get(attemptId)?.abort(reason, message);
  let engineRef: StepEngine | undefined;
  const liveness = new Liveness({
    connectionString: options.connectionString ?? poolConnectionString(pool),
    workerId,
    log: wlog,
    // A cancellation notice is a hint: any login can NOTIFY ballast_cancel with guessed ids. Only attempts of this
    // worker that the database says are no longer running are aborted (or dropped from the local queue).
    onCancel: (notice: CancelNotice) => {
      const ids = notice.attempts.filter((a) => a.workerId === workerId).map((a) => a.attemptId);
      if (ids.length === 0) return;
      db.endedAttempts(ids).then((ended) => {
        for (const a of ended) {
          abortAttempt(a.id, a.outcome === 'cancelled' ? 'cancelled' : 'lost', a.outcome === 'cancelled'
            ? `job ${notice.jobId} was cancelled` : `the attempt ended as ${a.outcome} elsewhere`);
        }
        engineRef?.drop(ended.map((a) => a.id));
        if (ended.length < ids.length) wlog.warn({ notice_attempts: ids, ended: ended.map((a) => a.id) }, 'ignored a cancellation notice for attempts that are still running (forged or stale)');
      }, (err: unknown) => wlog.warn({ err: (err as Error).message }, 'could not check a cancellation notice; the heartbeat will find cancelled attempts'));
    },
  });
  try {
    await liveness.start();
  } catch (err) {
    if (ownPool) await pool.end();
    throw err;
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

  // Watchdog hook (src/watchdog.ts): started once the worker is registered, stopped in stop() after the last step.
  const watchdog = options.watchdog === false ? undefined : startWatchdog({
    connectionString: options.connectionString ?? poolConnectionString(pool), workerId, log: wlog, leaseMs,
    heartbeatMs, ...options.watchdog,
  });

  // The step engine: claims, runs and settles steps in batches.
  const byRef = new Map<string, Pipeline<any, any>>();
  for (const p of options.pipelines) byRef.set(`${p.name}@${p.version}`, p);
  const engine: StepEngine = new StepEngine({
    db, workerId, log: wlog, leaseMs, concurrency,
    connectionString: options.connectionString ?? poolConnectionString(pool),
    tasks: [...byTask.keys()],
    pollIntervalMs,
    maxInFlight: 2,
    gatherMs: 2,
    run: (claim) => {
      const p = byRef.get(`${claim.pipeline}@${claim.pipelineVersion}`)!;
      let handlerDone!: () => void;
      const done = new Promise<void>((resolve) => (handlerDone = resolve));
      const settled = runAttempt({
        pipeline: p, claim, db, log: wlog, abandonMs, providers: options.providers, settler: engine,
        onHandlerDone: handlerDone,
        track: (r) => {
          running.set(r.attemptId, r);
          return () => running.delete(r.attemptId);
        },
      }).finally(handlerDone);
      return { handlerDone: done, settled };
    },
  });
  engineRef = engine;
  const taskList: TaskList = {};
  if (retention) taskList[RETENTION_TASK] = retention.task;

  // graphile-worker ends its pool when it cannot record a wake-up's completion or failure (the connection died under
  // it: Postgres restarted, connections terminated). Its release writes go through its batcher (delay 0) so that such
  // a failure shuts the pool down through its own events, not through a rejected promise nobody awaits (which kills
  // the process). The worker then unlocks the old pool's jobs (force_unlock_workers: a wake-up of a step still running
  // in the old pool finds nothing to claim, so unlocking early is harmless) and starts a new pool. The old pool's
  // promise is not awaited: after a failed batch graphile-worker 0.18's batcher miscounts its pending calls and the
  // pool never finishes terminating.
  let shuttingDown = false;
  let runner: Runner | undefined;
  let poolId: string | undefined;
  const poolIds: string[] = [];
  let replacing: Promise<void> | undefined;
  const startRunner = async (): Promise<void> => {
    const events: WorkerEvents = new EventEmitter() as WorkerEvents;
    const created = new Promise<string>((resolve) => events.once('pool:create', ({ workerPool }) => resolve(workerPool.id)));
    const r = await run({
      pgPool: pool,
      taskList,
      concurrency,
      noHandleSignals: true,
      pollInterval: pollIntervalMs,
      events,
      logger: pinoWorkerLogger(wlog),
      preset: { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
      ...(retention ? { parsedCronItems: retention.cron } : {}),
    });
    const id = await created;
    poolIds.push(id);
    let down = false;
    events.once('pool:gracefulShutdown', ({ message }) => {
      down = true;
      if (runner === r) replaceRunner(id, message);
    });
    r.promise.catch((err: unknown) => wlog.warn({ err: (err as Error).message, pool_id: id }, 'graphile-worker pool ended with an error'));
    try {
      await db.setWorkerPool(workerId, id);
      if (down) throw new Error('the new graphile-worker pool stopped at once');
    } catch (err) {
      if (!down) await r.stop().catch(() => {});
      throw err;
    }
    runner = r;
    poolId = id;
  };
  const replaceRunner = (oldPoolId: string, reason: string) => {
    if (shuttingDown || replacing) return;
    wlog.error({ reason, pool_id: oldPoolId }, 'the graphile-worker pool shut down by itself (database connection lost?); starting a new one');
    runner = undefined;
    replacing = (async () => {
      let unlocked = false;
      for (let delay = 250; !shuttingDown; delay = Math.min(delay * 2, 5000)) {
        try {
          if (!unlocked) await db.unlockWorkerPools([oldPoolId]);
          unlocked = true;
          await startRunner();
          wlog.info({ pool_id: poolId }, 'new graphile-worker pool started');
          return;
        } catch (err) {
          wlog.warn({ err: (err as Error).message, retry_ms: delay }, 'could not replace the graphile-worker pool yet; retrying');
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      }
    })().finally(() => (replacing = undefined));
  };

  // graphile-worker carries only the retention cron task now: without retention no pool is started.
  if (retention) await startRunner();
  await engine.start();
  const ready = Promise.resolve();
  wlog.info({ concurrency, pool_id: poolId, pipelines: options.pipelines.map((p) => p.ref) }, 'worker started');

  const registerAgain = async () => {
    wlog.error('this worker was declared dead (no heartbeat in time); its running steps were reclaimed; registering again');
    for (const r of running.values()) r.abort('lost', 'the worker was declared dead and its steps reclaimed');
    engine.dropAll();
    await db.registerWorker({ workerId, hostname: hostname(), pid: process.pid, concurrency, pipelines: options.pipelines.map((p) => p.ref) });
    if (poolId) await db.setWorkerPool(workerId, poolId);
  };
  let beating = false;
  const heartbeat = setInterval(() => {
    if (beating) return;
    beating = true;
    db.heartbeatWorker(workerId, [...running.keys(), ...engine.heldAttemptIds()], leaseMs)
      .then(async ({ alive, lostAttemptIds }) => {
        for (const id of lostAttemptIds) abortAttempt(id, 'lost', 'the attempt no longer owns its step (cancelled or reclaimed)');
        engine.drop(lostAttemptIds);
        if (!alive) await registerAgain();
      })
      .catch((err) => wlog.warn({ err: (err as Error).message }, 'heartbeat failed'))
      .finally(() => (beating = false));
  }, heartbeatMs);
  // Not unref'd: a started worker keeps its process alive until stop(). Every other timer of the worker is unref'd,
  // so when Postgres drops every connection at once (each loop then waits on a reconnect timer), an unref'd
  // heartbeat let the event loop run empty and the process exit 0 in the middle of a run (seen in CI).

  const reaper = options.reaper === false ? undefined : new Reaper({
    db, log: wlog,
    ...(options.deadAfterMs !== undefined ? { deadAfterMs: options.deadAfterMs } : {}),
    ...(options.lostAfterMs !== undefined ? { lostAfterMs: options.lostAfterMs } : {}),
  });
  reaper?.start();

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // Stop fetching; running steps get the grace period, then their signals fire and they are released.
      const grace = setTimeout(() => {
        for (const r of running.values()) r.abort('shutdown', 'worker shutting down; released for another worker');
      }, options.shutdownGraceMs ?? WORKER_DEFAULTS.shutdownGraceMs);
      shuttingDown = true;
      await reaper?.stop();
      await retention?.service.stop();
      await replacing;
      await runner?.stop().catch((err: unknown) => wlog.warn({ err: (err as Error).message }, 'graphile-worker pool stopped with an error'));
      // No new claims; unstarted claims are given back; running steps finish (or are released after the grace
      // period) and their outcomes are recorded.
      await engine.stopClaiming();
      await engine.drain();
      await engine.stop();
      clearTimeout(grace);
      clearInterval(heartbeat);
      await watchdog?.stop();
      // graphile-worker may leave a just-finished job locked when its pool stops; stop_worker marks this worker
      // stopped and unlocks its pool's jobs (force_unlock_workers) so nothing stays locked for hours.
      await db.stopWorker(workerId).catch((err) => wlog.warn({ err: (err as Error).message }, 'could not mark worker stopped'));
      await db.unlockWorkerPools(poolIds.filter((id) => id !== poolId))
        .catch((err) => wlog.warn({ err: (err as Error).message }, 'could not unlock the jobs of earlier pools'));
      await liveness.stop();
      if (ownPool) await pool.end();
      wlog.info('worker stopped');
    })());

  return { id: workerId, db, ready, stop };
}

/** The connection string of a pool passed in by the caller (for the worker's liveness connection). */
function poolConnectionString(pool: pg.Pool): string {
  const cs = (pool as unknown as { options?: { connectionString?: string } }).options?.connectionString;
  if (!cs) throw new Error('startWorker: with `pool`, also pass `connectionString` (the liveness connection needs it)');
  return cs;
}
