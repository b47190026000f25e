// The reaper: every live worker runs ballast.reap about once a second (one at a time, the SQL function makes sure).
// It declares dead workers (liveness lock gone, or heartbeat too old), reclaims their running attempts and expired
// leases, enforces step timeouts a stuck worker could not, and expires waits past their deadline.
// After a Postgres restart it trusts neither missing locks nor old heartbeats or leases for 20 s (ballast.reap in
// migrations/0006_execution.sql, restart_grace), so a restart declares no live worker dead.
// A service with start, stop and runOnce: tests drive runOnce by hand.
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';
import { WORKER_DEFAULTS } from './defaults.ts';

export interface ReaperOptions {
  db: BallastDb;
  log: Logger;
  /** How often to run (default: WORKER_DEFAULTS.reaperIntervalMs). */
  intervalMs?: number;
  /** A worker whose heartbeat is older than this is dead, whatever its lock says (default: WORKER_DEFAULTS.deadAfterMs). */
  deadAfterMs?: number;
  /** A worker whose liveness lock is gone and whose heartbeat is older than this is dead (default: WORKER_DEFAULTS.lostAfterMs). */
  lostAfterMs?: number;
}

export class Reaper {
  private readonly options: Required<ReaperOptions>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(options: ReaperOptions) {
    this.options = {
      intervalMs: WORKER_DEFAULTS.reaperIntervalMs, deadAfterMs: WORKER_DEFAULTS.deadAfterMs, lostAfterMs: WORKER_DEFAULTS.lostAfterMs,
      ...options,
    };
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.runOnce()
        .catch((err) => this.options.log.warn({ err: (err as Error).message }, 'reaper round failed'))
        .finally(() => (this.running = undefined));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  async runOnce(): Promise<{ deadWorkers: string[]; reclaimedAttempts: string[]; expiredWaits: string[] }> {
    const r = await this.options.db.reap(this.options.deadAfterMs, this.options.lostAfterMs);
    if (r.deadWorkers.length) this.options.log.warn({ workers: r.deadWorkers }, 'declared workers dead');
    if (r.reclaimedAttempts.length) this.options.log.warn({ attempts: r.reclaimedAttempts }, 'reclaimed attempts of dead workers, expired leases or timeouts');
    if (r.expiredWaits.length) this.options.log.info({ steps: r.expiredWaits }, 'waits expired');
    return r;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
