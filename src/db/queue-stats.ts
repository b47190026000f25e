// Queue depth and age by pipeline, for the metrics gauges (src/metrics.ts): the view ballast.queue_depth (0011_reports),
// read at scrape time. It reads only unfinished steps, through the partial index on live statuses, so its cost
// follows the queue, not the history.
import { sql } from 'kysely';
import type { BallastDb } from './api.ts';

export interface QueueStats {
  depth: { pipeline: string; status: string; steps: number }[];
  age: { pipeline: string; oldestSeconds: number }[];
}

export async function queueStats(db: BallastDb): Promise<QueueStats> {
  const { rows } = await sql<{
    pipeline: string; queued: number; retrying: number; running: number; waiting: number; needs_review: number; oldest_s: number | null;
  }>`
    select pipeline, queued::int, (retrying_due + retrying_later)::int as retrying, running::int, waiting::int,
           needs_review::int, extract(epoch from oldest_wait)::float8 as oldest_s
      from ballast.queue_depth`.execute(db.db);
  const statuses = ['queued', 'retrying', 'running', 'waiting', 'needs_review'] as const;
  return {
    depth: rows.flatMap((r) => statuses.filter((s) => r[s] > 0).map((status) => ({ pipeline: r.pipeline, status, steps: r[status] }))),
    age: rows.filter((r) => r.oldest_s !== null).map((r) => ({ pipeline: r.pipeline, oldestSeconds: r.oldest_s! })),
  };
}
