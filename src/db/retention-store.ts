// The database doorway for retention (migrations/0011_reports.sql): one typed method per SQL function, beside BallastDb (api.ts),
// whose pool it uses.
import { sql } from 'kysely';
import type { BallastDb } from './api.ts';
import { translateError } from '../errors.ts';

/** What one call of ballast.prune_history did. */
export interface PruneBatch {
  jobsPruned: number;
  stepsPruned: number;
  attemptsPruned: number;
  effectsPruned: number;
  modelCallsPruned: number;
  /** Stored (compressed) size of the values cleared; VACUUM makes the space reusable. */
  bytesFreedEstimate: number;
  /** Jobs left for the next round because another transaction held a row of theirs. */
  jobsBusy: number;
  /** The batch was full: more jobs may be waiting. */
  more: boolean;
}

/**
 * One batch of ballast.prune_history: clears the payloads of at most `batch` jobs that finished more than
 * `olderThan` ago (a Postgres interval, e.g. '30 days'). Never waits for a locked row.
 */
export async function pruneHistory(db: BallastDb, olderThan: string, batch: number): Promise<PruneBatch> {
  try {
    const { rows } = await sql<{
      jobs_pruned: number; steps_pruned: number; attempts_pruned: number; effects_pruned: number;
      model_calls_pruned: number; bytes_freed_estimate: string; jobs_busy: number; more: boolean;
    }>`select * from ballast.prune_history(${olderThan}::interval, ${batch})`.execute(db.db);
    const r = rows[0]!;
    return {
      jobsPruned: r.jobs_pruned, stepsPruned: r.steps_pruned, attemptsPruned: r.attempts_pruned,
      effectsPruned: r.effects_pruned, modelCallsPruned: r.model_calls_pruned,
      bytesFreedEstimate: Number(r.bytes_freed_estimate), jobsBusy: r.jobs_busy, more: r.more,
    };
  } catch (err) {
    throw translateError(err);
  }
}
