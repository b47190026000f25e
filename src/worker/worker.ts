// A ballast worker process: registers its pipelines and itself, then runs a StepEngine (engine.ts) that claims
// runnable steps of those pipeline versions straight from the steps table in batches, runs them, and records their
// outcomes in the same batched round trips (ballast.settle_and_claim). graphile-worker runs only the cron task of
// retention, when it is configured.
//
// Around that, the durability machinery: a liveness connection holding the worker's advisory lock and listening for
// cancellations (liveness.ts), a heartbeat that extends the leases of running attempts and learns which of them were
// lost, a reaper that recovers other workers' work (reaper.ts), and a graceful stop that lets running steps finish
// for a grace period, then aborts and releases them.
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from 'pino';
import { BallastDb, createPool } from '../db/api.ts';
import type { Pipeline } from '../pipeline/pipeline.ts';
import { createLogger } from '../log.ts';
import { Liveness, type CancelNotice } from './liveness.ts';
import { Reaper } from './reaper.ts';
import { Scheduler } from './scheduler.ts';
import { AlertChecker } from './alerts.ts';
import { retentionSchedule, RETENTION_TASK } from './retention.ts';
import { runAttempt, type AbortReason, type RunningAttempt } from './runner.ts';
import { StepEngine } from './engine.ts';
import { CronRunner } from './cron-runner.ts';
import { startWatchdog, type WatchdogOptions } from './watchdog.ts';
import type { ProviderRegistry } from '../model/providers.ts';
import { WORKER_DEFAULTS } from './defaults.ts';
import { evalPipeline, type EvalOptions } from '../eval/pipeline.ts';

export { classifyError } from './runner.ts';

export interface WorkerOptions {
  /** Postgres connection string (or pass `pool`). */
  connectionString?: string;
  pool?: pg.Pool;
  pipelines: readonly Pipeline<any, any>[];
  /** Steps run at once by this process (default: WORKER_DEFAULTS.concurrency, defaults.ts). */
  concurrency?: number;
  /** Lease of a running attempt, renewed by every heartbeat; expired leases are reclaimed (default: WORKER_DEFAULTS.leaseMs). */
  leaseMs?: number;
  /** How often the worker polls for runnable steps (due retries, a missed notification) (default: WORKER_DEFAULTS.pollIntervalMs). */
  pollIntervalMs?: number;
  /** How often the worker reports it is alive and renews its leases (default: WORKER_DEFAULTS.heartbeatMs). */
  heartbeatMs?: number;
  /** Run the reaper that recovers dead workers' steps (default true; tests switch it off to drive it by hand). */
  reaper?: boolean;
  /** Fire the due cron schedules (ballast.schedules) every second (default true; tests switch it off to drive it by hand). */
  schedules?: boolean;
  /** How often to evaluate the drift and budget alert rules (ballast.check_alerts; default: WORKER_DEFAULTS.alertIntervalMs); 0: never. */
  alertIntervalMs?: number;
  /** A worker whose heartbeat is older than this is dead, whatever its liveness lock says (default: WORKER_DEFAULTS.deadAfterMs). */
  deadAfterMs?: number;
  /** A worker whose liveness lock is gone and whose heartbeat is older than this is dead (default: WORKER_DEFAULTS.lostAfterMs). */
  lostAfterMs?: number;
  /** On stop: how long running steps may keep running before they are aborted and released (default: WORKER_DEFAULTS.shutdownGraceMs). */
  shutdownGraceMs?: number;
  /** After an abort: how long a handler gets to settle before the worker stops waiting for it (default: WORKER_DEFAULTS.abandonMs). */
  abandonMs?: number;
  /**
   * Run eval runs (docs/evals.md): the worker also serves the built-in pipeline ballast.eval, whose runs evaluate the
   * model steps of `pipelines`; `{ scorers }` registers TypeScript scorers by name. Default off.
   */
  evals?: boolean | EvalOptions;
  /** Model providers for model steps. Default: the environment's (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...). */
  providers?: ProviderRegistry;
  /**
   * How long finished jobs keep their payloads ('30 days'; see src/worker/retention.ts), pruned by a graphile-worker cron task
   * that one worker runs every 15 minutes; false or 'off': never. Default: BALLAST_RETENTION, else off.
   */
  retention?: string | false;
  /**
   * The watchdog thread (src/worker/watchdog.ts): heartbeats while a step blocks the event loop, and kills the process when
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

export async function startWorker(given: WorkerOptions): Promise<BallastWorker> {
  const options = withEvalPipeline(given);
  const settings = workerSettings(options);
  const { workerId, concurrency, leaseMs, heartbeatMs } = settings;
  const log = options.log ?? createLogger();
  const ownPool = !options.pool;
  const pool = options.pool ?? createPool(options.connectionString!, { max: concurrency + 4, applicationName: `ballast-worker ${workerId}`, log });
  const connectionString = options.connectionString ?? poolConnectionString(pool);
  const db = new BallastDb(pool);
  const wlog = log.child({ worker_id: workerId });
  // Before anything is started: a bad BALLAST_RETENTION fails the start with nothing to clean up.
  const retention = retentionSchedule({ db, log: wlog, setting: options.retention });
  const pipelines = pipelinesByVersion(options.pipelines);

  const running = new RunningAttempts();
  let engineRef: StepEngine | undefined;
  const liveness = new Liveness({
    connectionString, workerId, log: wlog,
    onCancel: onCancelNotice({ db, workerId, log: wlog, abortAttempt: running.abort, drop: (ids) => engineRef?.drop(ids) }),
  });
  try {
    await liveness.start();
  } catch (err) {
    if (ownPool) await pool.end();
    throw err;
  }
  const registration = { workerId, hostname: hostname(), pid: process.pid, concurrency, pipelines: options.pipelines.map((p) => p.ref) };
  await registerPipelines(db, options.pipelines, wlog);
  await db.registerWorker(registration);

  // Watchdog hook (src/worker/watchdog.ts): started once the worker is registered, stopped in stop() after the last step.
  const watchdog = options.watchdog === false ? undefined : startWatchdog({
    connectionString, workerId, log: wlog, leaseMs, heartbeatMs, ...options.watchdog,
  });
  const engine = (engineRef = createEngine({ options, settings, db, log: wlog, connectionString, pipelines, running }));

  // graphile-worker carries only the retention cron task now: without retention no pool is started.
  const cron = retention ? new CronRunner({
    pool, db, workerId, taskList: { [RETENTION_TASK]: retention.task }, cron: retention.cron, concurrency,
    pollIntervalMs: settings.pollIntervalMs, log: wlog,
  }) : undefined;
  await cron?.start();
  await engine.start();
  wlog.info({ concurrency, pool_id: cron?.poolId, pipelines: registration.pipelines }, 'worker started');

  const heartbeat = startHeartbeat({
    db, workerId, leaseMs, heartbeatMs, log: wlog,
    attemptIds: () => [...running.ids(), ...engine.heldAttemptIds()],
    lost: (ids) => {
      for (const id of ids) running.abort(id, 'lost', 'the attempt no longer owns its step (cancelled or reclaimed)');
      engine.drop(ids);
    },
    // Declared dead (no heartbeat in time): its running steps were reclaimed; abort them here and register again.
    dead: async () => {
      wlog.error('this worker was declared dead (no heartbeat in time); its running steps were reclaimed; registering again');
      running.abortAll('lost', 'the worker was declared dead and its steps reclaimed');
      engine.dropAll();
      await db.registerWorker(registration);
      if (cron?.poolId) await db.setWorkerPool(workerId, cron.poolId);
    },
  });

  const reaper = options.reaper === false ? undefined : new Reaper({
    db, log: wlog,
    ...(options.deadAfterMs !== undefined ? { deadAfterMs: options.deadAfterMs } : {}),
    ...(options.lostAfterMs !== undefined ? { lostAfterMs: options.lostAfterMs } : {}),
  });
  reaper?.start();
  const scheduler = options.schedules === false ? undefined : new Scheduler({ db, log: wlog });
  scheduler?.start();
  const alerts = new AlertChecker({ db, log: wlog, intervalMs: options.alertIntervalMs ?? WORKER_DEFAULTS.alertIntervalMs });
  alerts.start();

  const parts: WorkerParts = {
    workerId, db, pool, ownPool, log: wlog, running, engine, cron, reaper, scheduler, alerts, retention, heartbeat, watchdog, liveness,
  };
  let stopping: Promise<void> | undefined;
  const stop = () => (stopping ??= stopInOrder(parts, options.shutdownGraceMs ?? WORKER_DEFAULTS.shutdownGraceMs));
  return { id: workerId, db, ready: Promise.resolve(), stop };
}

/** The options with the eval pipeline added to the pipelines when evals are on. */
function withEvalPipeline(options: WorkerOptions): WorkerOptions {
  if (!options.evals) return options;
  const evals = evalPipeline(options.pipelines, options.evals === true ? {} : options.evals);
  return { ...options, pipelines: [...options.pipelines, evals] };
}

/** The worker's numbers, its options over WORKER_DEFAULTS, and its id. */
function workerSettings(options: WorkerOptions) {
  if (!options.pool && !options.connectionString) {
    throw new Error('startWorker: pass connectionString (or pool); e.g. process.env.DATABASE_URL');
  }
  return {
    concurrency: options.concurrency ?? WORKER_DEFAULTS.concurrency,
    leaseMs: options.leaseMs ?? WORKER_DEFAULTS.leaseMs,
    heartbeatMs: options.heartbeatMs ?? WORKER_DEFAULTS.heartbeatMs,
    pollIntervalMs: options.pollIntervalMs ?? WORKER_DEFAULTS.pollIntervalMs,
    abandonMs: options.abandonMs ?? WORKER_DEFAULTS.abandonMs,
    workerId: options.workerId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
  };
}

/** The attempts this process runs, by attempt id: what cancellation, heartbeats and shutdown act on. */
class RunningAttempts {
  readonly #byId = new Map<string, RunningAttempt>();

  /** Registers a running attempt; returns its unregister. */
  track = (r: RunningAttempt): (() => void) => {
    this.#byId.set(r.attemptId, r);
    return () => this.#byId.delete(r.attemptId);
  };

  abort = (attemptId: string, reason: AbortReason, message: string): void => this.#byId.get(attemptId)?.abort(reason, message);

  abortAll(reason: AbortReason, message: string): void {
    for (const r of this.#byId.values()) r.abort(reason, message);
  }

  ids(): string[] {
    return [...this.#byId.keys()];
  }
}

/** The step engine: claims, runs (runAttempt) and settles steps in batches. */
function createEngine(o: {
  options: WorkerOptions; settings: ReturnType<typeof workerSettings>; db: BallastDb; log: Logger; connectionString: string;
  pipelines: Map<string, Pipeline<any, any>>; running: RunningAttempts;
}): StepEngine {
  const { settings, db, log } = o;
  const engine: StepEngine = new StepEngine({
    db, workerId: settings.workerId, log, leaseMs: settings.leaseMs, concurrency: settings.concurrency,
    connectionString: o.connectionString, pollIntervalMs: settings.pollIntervalMs,
    tasks: o.options.pipelines.map((p) => p.taskIdentifier),
    maxInFlight: 2,
    gatherMs: 2,
    run: (claim) => {
      let handlerDone!: () => void;
      const done = new Promise<void>((resolve) => (handlerDone = resolve));
      const settled = runAttempt({
        pipeline: o.pipelines.get(`${claim.pipeline}@${claim.pipelineVersion}`)!, claim, db, log,
        abandonMs: settings.abandonMs, providers: o.options.providers, settler: engine,
        onHandlerDone: handlerDone, track: o.running.track,
      }).finally(handlerDone);
      return { handlerDone: done, settled };
    },
  });
  return engine;
}

/** What a started worker holds, for its stop. */
interface WorkerParts {
  workerId: string; db: BallastDb; pool: pg.Pool; ownPool: boolean; log: Logger; running: RunningAttempts;
  engine: StepEngine; cron: CronRunner | undefined; reaper: Reaper | undefined; scheduler: Scheduler | undefined; alerts: AlertChecker;
  retention: ReturnType<typeof retentionSchedule>; heartbeat: NodeJS.Timeout;
  watchdog: ReturnType<typeof startWatchdog> | undefined; liveness: Liveness;
}

/**
 * The graceful stop: no more claims; running steps get the grace period, then their signals fire and they are
 * released; their outcomes are recorded; then the background services, the watchdog and the connections stop.
 */
async function stopInOrder(w: WorkerParts, shutdownGraceMs: number): Promise<void> {
  const grace = setTimeout(() => w.running.abortAll('shutdown', 'worker shutting down; released for another worker'), shutdownGraceMs);
  w.cron?.beginShutdown();
  await w.reaper?.stop();
  await w.scheduler?.stop();
  await w.alerts.stop();
  await w.retention?.service.stop();
  await w.cron?.stop();
  // No new claims; unstarted claims are given back; running steps finish (or are released after the grace period)
  // and their outcomes are recorded.
  await w.engine.stopClaiming();
  await w.engine.drain();
  await w.engine.stop();
  clearTimeout(grace);
  clearInterval(w.heartbeat);
  await w.watchdog?.stop();
  // graphile-worker may leave a just-finished job locked when its pool stops; stop_worker marks this worker stopped
  // and unlocks its pool's jobs (force_unlock_workers) so nothing stays locked for hours.
  await w.db.stopWorker(w.workerId).catch((err) => w.log.warn({ err: (err as Error).message }, 'could not mark worker stopped'));
  await w.db.unlockWorkerPools((w.cron?.poolIds ?? []).filter((id) => id !== w.cron?.poolId))
    .catch((err) => w.log.warn({ err: (err as Error).message }, 'could not unlock the jobs of earlier pools'));
  await w.liveness.stop();
  if (w.ownPool) await w.pool.end();
  w.log.info('worker stopped');
}

/** The pipelines by `name@version` (what a claim names); a version listed twice is refused. */
function pipelinesByVersion(list: readonly Pipeline<any, any>[]): Map<string, Pipeline<any, any>> {
  const byRef = new Map<string, Pipeline<any, any>>();
  for (const p of list) {
    if (byRef.has(p.ref)) throw new Error(`pipeline ${p.ref} is listed twice`);
    byRef.set(p.ref, p);
  }
  return byRef;
}

async function registerPipelines(db: BallastDb, list: readonly Pipeline<any, any>[], log: Logger): Promise<void> {
  for (const p of list) {
    const { created } = await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
    log.info({ pipeline: p.ref, created }, created ? 'registered pipeline' : 'pipeline already registered, definition unchanged');
  }
}

/**
 * What the worker does with a ballast_cancel notification. A notice is a hint: any login can NOTIFY ballast_cancel
 * with guessed ids. Only attempts of this worker that the database says are no longer running are aborted (or
 * dropped from the engine's local queue).
 */
function onCancelNotice(o: {
  db: BallastDb; workerId: string; log: Logger;
  abortAttempt: (attemptId: string, reason: AbortReason, message: string) => void;
  drop: (attemptIds: string[]) => void;
}): (notice: CancelNotice) => void {
  return (notice) => {
    const ids = notice.attempts.filter((a) => a.workerId === o.workerId).map((a) => a.attemptId);
    if (ids.length === 0) return;
    o.db.endedAttempts(ids).then((ended) => {
      for (const a of ended) {
        o.abortAttempt(a.id, a.outcome === 'cancelled' ? 'cancelled' : 'lost', a.outcome === 'cancelled'
          ? `job ${notice.jobId} was cancelled` : `the attempt ended as ${a.outcome} elsewhere`);
      }
      o.drop(ended.map((a) => a.id));
      if (ended.length < ids.length) o.log.warn({ notice_attempts: ids, ended: ended.map((a) => a.id) }, 'ignored a cancellation notice for attempts that are still running (forged or stale)');
    }, (err: unknown) => o.log.warn({ err: (err as Error).message }, 'could not check a cancellation notice; the heartbeat will find cancelled attempts'));
  };
}

/**
 * Every heartbeatMs: reports the worker alive and renews the leases of `attemptIds()`; attempts the database says
 * this worker lost go to `lost`, and a worker declared dead meanwhile to `dead`. One beat at a time.
 * Not unref'd: a started worker keeps its process alive until stop(). Every other timer of the worker is unref'd,
 * so when Postgres drops every connection at once (each loop then waits on a reconnect timer), an unref'd heartbeat
 * let the event loop run empty and the process exit 0 in the middle of a run (seen in CI).
 */
function startHeartbeat(o: {
  db: BallastDb; workerId: string; leaseMs: number; heartbeatMs: number; log: Logger;
  attemptIds: () => string[]; lost: (attemptIds: string[]) => void; dead: () => Promise<void>;
}): NodeJS.Timeout {
  let beating = false;
  return setInterval(() => {
    if (beating) return;
    beating = true;
    o.db.heartbeatWorker(o.workerId, o.attemptIds(), o.leaseMs)
      .then(async ({ alive, lostAttemptIds }) => {
        o.lost(lostAttemptIds);
        if (!alive) await o.dead();
      })
      .catch((err) => o.log.warn({ err: (err as Error).message }, 'heartbeat failed'))
      .finally(() => (beating = false));
  }, o.heartbeatMs);
}

function poolConnectionString(pool: pg.Pool): string {
  const cs = (pool as unknown as { options?: { connectionString?: string } }).options?.connectionString;
  if (!cs) throw new Error('startWorker: with `pool`, also pass `connectionString` (the liveness connection needs it)');
  return cs;
}
