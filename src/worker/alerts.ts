// The alert checker: every alertIntervalMs a worker calls ballast.check_alerts (migration 0045_quality_alerts), which
// evaluates every drift and budget alert rule, raises and resolves alerts and NOTIFYs ballast_alerts. Every worker
// runs it, passing half its interval as the minimum time since the last check: with N workers the work is done about
// once or twice per interval, not N times. One check works at a time (the SQL function takes a transaction advisory
// lock and a second caller returns at once), and the unique indexes on alerts keep a raised alert single regardless.
// A service with start, stop and runOnce (like reaper.ts): tests switch it off (alertIntervalMs 0) and call runOnce.
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';
import { checkAlerts, type AlertChange } from '../db/alerts.ts';
import { translateError } from '../errors.ts';
import { WORKER_DEFAULTS } from './defaults.ts';

export interface AlertCheckerOptions {
  db: BallastDb;
  log: Logger;
  /** How often to check (default: WORKER_DEFAULTS.alertIntervalMs); 0: never on its own (runOnce still works). */
  intervalMs?: number;
}

export class AlertChecker {
  private readonly options: Required<AlertCheckerOptions>;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;

  constructor(options: AlertCheckerOptions) {
    this.options = { intervalMs: WORKER_DEFAULTS.alertIntervalMs, ...options };
  }

  start(): void {
    if (this.timer || this.options.intervalMs <= 0) return;
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = this.runOnce({ minIntervalMs: this.options.intervalMs / 2 })
        .catch((err) => this.options.log.warn({ err: (err as Error).message }, 'alert check failed'))
        .finally(() => (this.running = undefined));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  /** One check: what it raised and resolved (on its timer: nothing when another worker checked within half the interval). */
  async runOnce(o: { minIntervalMs?: number } = {}): Promise<AlertChange[]> {
    let changes: AlertChange[];
    try {
      changes = await checkAlerts(this.options.db.pool, o.minIntervalMs ?? null);
    } catch (err) {
      throw translateError(err);
    }
    const raised = changes.filter((c) => c.change === 'raised').map((c) => c.alertId);
    const resolved = changes.filter((c) => c.change === 'resolved').map((c) => c.alertId);
    if (raised.length) this.options.log.warn({ alerts: raised }, 'alerts raised (see ballast.alerts)');
    if (resolved.length) this.options.log.info({ alerts: resolved }, 'alerts resolved');
    return changes;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
