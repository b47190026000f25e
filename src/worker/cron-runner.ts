// The graphile-worker pool a ballast worker keeps for cron tasks (today only retention's prune, src/worker/retention.ts):
// steps do not go through graphile-worker any more (src/worker/engine.ts), so without retention no pool is started.
//
// graphile-worker ends its pool when it cannot record a wake-up's completion or failure (the connection died under
// it: Postgres restarted, connections terminated). Its release writes go through its batcher (delay 0) so that such a
// failure shuts the pool down through its own events, not through a rejected promise nobody awaits (which kills the
// process). The runner then unlocks the old pool's jobs (force_unlock_workers: a wake-up of a step still running in
// the old pool finds nothing to claim, so unlocking early is harmless) and starts a new pool, retrying with backoff.
// The old pool's promise is not awaited: after a failed batch graphile-worker 0.18's batcher miscounts its pending
// calls and the pool never finishes terminating.
import { EventEmitter } from 'node:events';
import { run, Logger as WorkerLogger, type Runner, type TaskList, type WorkerEvents } from 'graphile-worker';
import type { ParsedCronItem } from 'graphile-worker';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';

export interface CronRunnerOptions {
  pool: pg.Pool;
  db: BallastDb;
  workerId: string;
  taskList: TaskList;
  cron: ParsedCronItem[];
  concurrency: number;
  pollIntervalMs: number;
  log: Logger;
}

export class CronRunner {
  /** The current graphile-worker pool's id (recorded on the worker row: the reaper unlocks it if the worker dies). */
  poolId: string | undefined;
  /** Every pool this worker started, the current one last. */
  readonly poolIds: string[] = [];
  readonly #o: CronRunnerOptions;
  #runner: Runner | undefined;
  #replacing: Promise<void> | undefined;
  #shuttingDown = false;

  constructor(options: CronRunnerOptions) {
    this.#o = options;
  }

  /** Starts a pool and records it on the worker row; throws when it cannot. */
  async start(): Promise<void> {
    const { pool, db, workerId, taskList, cron, concurrency, pollIntervalMs, log } = this.#o;
    const events: WorkerEvents = new EventEmitter() as WorkerEvents;
    const created = new Promise<string>((resolve) => events.once('pool:create', ({ workerPool }) => resolve(workerPool.id)));
    const r = await run({
      pgPool: pool,
      taskList,
      concurrency,
      noHandleSignals: true,
      pollInterval: pollIntervalMs,
      events,
      logger: pinoWorkerLogger(log),
      preset: { worker: { completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
      parsedCronItems: cron,
    });
    const id = await created;
    this.poolIds.push(id);
    let down = false;
    events.once('pool:gracefulShutdown', ({ message }) => {
      down = true;
      if (this.#runner === r) this.#replace(id, message);
    });
    r.promise.catch((err: unknown) => log.warn({ err: (err as Error).message, pool_id: id }, 'graphile-worker pool ended with an error'));
    try {
      await db.setWorkerPool(workerId, id);
      if (down) throw new Error('the new graphile-worker pool stopped at once');
    } catch (err) {
      if (!down) await r.stop().catch(() => {});
      throw err;
    }
    this.#runner = r;
    this.poolId = id;
  }

  /** No pool is replaced from now on (call first when stopping). */
  beginShutdown(): void {
    this.#shuttingDown = true;
  }

  /** Stops the current pool, after a replacement under way has ended. */
  async stop(): Promise<void> {
    this.#shuttingDown = true;
    await this.#replacing;
    await this.#runner?.stop().catch((err: unknown) => this.#o.log.warn({ err: (err as Error).message }, 'graphile-worker pool stopped with an error'));
  }

  #replace(oldPoolId: string, reason: string): void {
    const { db, log } = this.#o;
    if (this.#shuttingDown || this.#replacing) return;
    log.error({ reason, pool_id: oldPoolId }, 'the graphile-worker pool shut down by itself (database connection lost?); starting a new one');
    this.#runner = undefined;
    this.#replacing = (async () => {
      let unlocked = false;
      for (let delay = 250; !this.#shuttingDown; delay = Math.min(delay * 2, 5000)) {
        try {
          if (!unlocked) await db.unlockWorkerPools([oldPoolId]);
          unlocked = true;
          await this.start();
          log.info({ pool_id: this.poolId }, 'new graphile-worker pool started');
          return;
        } catch (err) {
          log.warn({ err: (err as Error).message, retry_ms: delay }, 'could not replace the graphile-worker pool yet; retrying');
          await new Promise((resolve) => setTimeout(resolve, delay));
        }
      }
    })().finally(() => (this.#replacing = undefined));
  }
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
