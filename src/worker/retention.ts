// Retention: clears the payloads of jobs that finished longer ago than a period (ballast.prune_history, migration
// 0011_reports) batch after batch, with a pause between batches so the hot tables never see a long burst of writes. Statuses,
// timings, errors, tokens, costs, scores and the audit trail stay, so the reports give the same numbers afterwards.
// A service with start, stop and runOnce: tests drive runOnce by hand. A worker runs it as a graphile-worker cron
// task (retentionSchedule below): with many workers, each tick runs on one of them.
import { parseCronItems, type ParsedCronItem, type Task } from 'graphile-worker';
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';
import { pruneHistory } from '../db/retention-store.ts';
import { pruneTokenChunks } from '../db/token-stream.ts';

export interface RetentionOptions {
  db: BallastDb;
  log: Logger;
  /** How long a finished job keeps its payloads: a Postgres interval such as '30 days' (see parseRetention). */
  olderThan: string;
  /** Jobs per batch, each batch one short transaction (default 1000). */
  batchSize?: number;
  /** Pause between batches (default 200 ms). */
  pauseMs?: number;
  /** Batches per run at most (default 1000); the next run carries on. */
  maxBatches?: number;
  /** How often start() runs it (default 15 minutes). */
  intervalMs?: number;
}

/** What one run (several batches) did. */
export interface RetentionRun {
  batches: number;
  jobsPruned: number;
  bytesFreedEstimate: number;
  /** Jobs skipped because another transaction held them; the next run tries again. */
  jobsBusy: number;
  /** The run stopped (maxBatches, stop() or abort) while jobs were still waiting. */
  more: boolean;
}

export class Retention {
  private readonly options: Required<RetentionOptions>;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly stopping = new AbortController();

  constructor(options: RetentionOptions) {
    this.options = { batchSize: 1000, pauseMs: 200, maxBatches: 1000, intervalMs: 15 * 60_000, ...options };
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.ticking) return;
      this.ticking = true;
      this.runOnce()
        .catch((err) => this.options.log.warn({ err: (err as Error).message }, 'retention run failed'))
        .finally(() => (this.ticking = false));
    }, this.options.intervalMs);
    this.timer.unref();
  }

  /** Prunes batch after batch until none is left, maxBatches is reached, stop() is called or `signal` fires. */
  runOnce(signal?: AbortSignal): Promise<RetentionRun> {
    const run = this.prune(signal);
    this.inflight.add(run);
    const forget = () => this.inflight.delete(run);
    run.then(forget, forget);
    return run;
  }

  private async prune(signal: AbortSignal | undefined): Promise<RetentionRun> {
    const o = this.options;
    const run: RetentionRun = { batches: 0, jobsPruned: 0, bytesFreedEstimate: 0, jobsBusy: 0, more: false };
    const halted = () => this.stopping.signal.aborted || signal?.aborted === true;
    while (!halted() && run.batches < o.maxBatches) {
      const b = await pruneHistory(o.db, o.olderThan, o.batchSize);
      run.batches++;
      run.jobsPruned += b.jobsPruned;
      run.bytesFreedEstimate += b.bytesFreedEstimate;
      run.jobsBusy += b.jobsBusy;
      run.more = b.more;
      if (!b.more) break;
      await pause(o.pauseMs, [this.stopping.signal, ...(signal ? [signal] : [])]);
    }
    // Live tokens (0043) of final steps, also those a dead worker left: unlogged rows, not history.
    await pruneTokenChunks(o.db).catch((err: Error) => o.log.warn({ err: err.message }, 'retention: pruning live tokens failed'));
    if (run.jobsPruned > 0 || run.jobsBusy > 0) {
      o.log.info({ older_than: o.olderThan, ...run }, 'retention: pruned the payloads of finished jobs');
    }
    return run;
  }

  /** Stops the timer and any run in progress (after its batch in flight) and waits for them; final. */
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.stopping.abort();
    await Promise.allSettled([...this.inflight]);
  }
}

function pause(ms: number, signals: AbortSignal[]): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const s of signals) s.addEventListener('abort', done, { once: true });
  });
}

const UNITS = ['second', 'minute', 'hour', 'day', 'week', 'month', 'year'];

/**
 * Reads a retention setting (BALLAST_RETENTION): unset, '', 'off', 'false' or '0' switch retention off (undefined);
 * otherwise '<n> <unit>' with unit second, minute, hour, day, week, month or year (plural allowed), e.g. '30 days'.
 * Throws with the value and an example for anything else.
 */
export function parseRetention(value: string | undefined): string | undefined {
  const v = (value ?? '').trim().toLowerCase();
  if (v === '' || v === 'off' || v === 'false' || v === '0') return undefined;
  const m = /^(\d+)\s*([a-z]+?)s?$/.exec(v);
  if (!m || !UNITS.includes(m[2]!) || Number(m[1]) === 0) {
    throw new Error(`BALLAST_RETENTION=${JSON.stringify(value)} is not a retention period: use e.g. '30 days', '12 hours' or 'off'`);
  }
  return `${Number(m[1])} ${m[2]}${Number(m[1]) === 1 ? '' : 's'}`;
}

/** The graphile-worker task that runs retention, and its schedule (every 15 minutes, one worker per tick). */
export const RETENTION_TASK = 'ballast_retention';
export const RETENTION_CRONTAB = '*/15 * * * *';

export interface RetentionSchedule {
  service: Retention;
  /** Add to the worker's task list under RETENTION_TASK. */
  task: Task;
  /** Pass to graphile-worker's run() as parsedCronItems. */
  cron: ParsedCronItem[];
}

/**
 * For a worker: the retention service, its graphile-worker task and cron item, or undefined when retention is off.
 * `setting`: a period ('30 days'), false or 'off'; undefined reads BALLAST_RETENTION (unset: off).
 */
export function retentionSchedule(args: {
  db: BallastDb; log: Logger; setting?: string | false | undefined; options?: Partial<Omit<RetentionOptions, 'db' | 'log' | 'olderThan'>>;
}): RetentionSchedule | undefined {
  const olderThan = args.setting === false ? undefined : parseRetention(args.setting ?? process.env.BALLAST_RETENTION);
  if (!olderThan) return undefined;
  const service = new Retention({ db: args.db, log: args.log, olderThan, ...args.options });
  // max: 1, no retries: a failed run is simply the next tick's work; the job key keeps one run queued at a time.
  const cron = parseCronItems([{
    task: RETENTION_TASK, match: RETENTION_CRONTAB, identifier: RETENTION_TASK,
    options: { backfillPeriod: 0, maxAttempts: 1, jobKey: RETENTION_TASK },
  }]);
  const task: Task = async (_payload, helpers) => {
    await service.runOnce(helpers.abortSignal);
  };
  args.log.info({ older_than: olderThan, schedule: RETENTION_CRONTAB }, 'retention is on: finished jobs keep their payloads for this long');
  return { service, task, cron };
}
