// The scheduler: every live worker fires the due cron schedules (ballast.fire_schedules, migration 0033) about once a
// second. The SQL function makes two workers safe together: it takes schedules FOR UPDATE SKIP LOCKED and submits
// each slot with an idempotency key of the schedule and the slot, so a slot is submitted once whoever fires it, and
// a worker that dies mid-fire leaves nothing half-done (one transaction).
// A service with start, stop and runOnce: tests drive runOnce by hand (WorkerOptions.schedules false).
import type { Logger } from 'pino';
import type { BallastDb, FiredSchedule } from '../db/api.ts';
import { WORKER_DEFAULTS } from './defaults.ts';
import { ballastMetrics } from '../metrics.ts';

export interface SchedulerOptions {
  db: BallastDb;
  log: Logger;
  /** How often to fire due schedules (default: WORKER_DEFAULTS.scheduleIntervalMs). */
  intervalMs?: number;
}

export class Scheduler {
  readonly #db: BallastDb;
  readonly #log: Logger;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<unknown> | undefined;

  constructor(options: SchedulerOptions) {
    this.#db = options.db;
    this.#log = options.log;
    this.#intervalMs = options.intervalMs ?? WORKER_DEFAULTS.scheduleIntervalMs;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      if (this.#running) return;
      this.#running = this.runOnce()
        .catch((err) => this.#log.warn({ err: (err as Error).message }, 'firing schedules failed'))
        .finally(() => (this.#running = undefined));
    }, this.#intervalMs);
    this.#timer.unref();
  }

  /** Fires what is due now; returns what each schedule did. */
  async runOnce(): Promise<FiredSchedule[]> {
    const fired = await this.#db.fireSchedules();
    for (const f of fired) {
      if (f.fired) ballastMetrics.scheduleSlots.inc({ schedule: f.name, outcome: 'fired' }, f.fired);
      if (f.skipped) ballastMetrics.scheduleSlots.inc({ schedule: f.name, outcome: 'skipped' }, f.skipped);
      if (f.error) ballastMetrics.scheduleSlots.inc({ schedule: f.name, outcome: 'failed' });
      const fields = { schedule: f.name, fired: f.fired, skipped: f.skipped, next_slot: f.nextSlot?.toISOString() ?? null };
      if (f.error) this.#log.warn({ ...fields, err: f.error }, 'a schedule could not submit a slot');
      else if (f.skipped) this.#log.warn(fields, 'a schedule skipped missed slots');
      else this.#log.info(fields, 'schedule fired');
    }
    return fired;
  }

  async stop(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#running;
  }
}
