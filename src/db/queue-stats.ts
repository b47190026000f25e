// Queue depth and age by pipeline, for the metrics gauges (src/metrics.ts). One statement at scrape time.
import { sql } from 'kysely';
import type { BallastDb } from './api.ts';

export interface QueueStats {
  depth: { pipeline: string; status: string; steps: number }[];
  age: { pipeline: string; oldestSeconds: number }[];
}

export async function queueStats(db: BallastDb): Promise<QueueStats> {
  // Reads only unfinished steps, through the partial index on live statuses (steps_live_idx, 0001; pending steps are left out for that reason), so its cost follows
  // the queue, not the history. Age: how long the longest-waiting runnable step has waited (a queued one since it was queued, a retrying one
  // since its retry fell due).
  const { rows } = await sql<{ pipeline: string; status: string; steps: number; oldest_s: number | null }>`
    select j.pipeline, s.status, count(*)::int as steps,
           extract(epoch from ballast.now() - min(case when s.status = 'queued' then coalesce(s.queued_at, s.created_at)
                                                       when s.status = 'retrying' and s.next_run_at <= ballast.now() then s.next_run_at end))::float8 as oldest_s
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status in ('queued', 'running', 'retrying', 'waiting', 'needs_review')
     group by j.pipeline, s.status`.execute(db.db);
  const age = new Map<string, number>();
  for (const r of rows) {
    if (r.oldest_s !== null) age.set(r.pipeline, Math.max(age.get(r.pipeline) ?? 0, r.oldest_s));
  }
  return {
    depth: rows.map((r) => ({ pipeline: r.pipeline, status: r.status, steps: r.steps })),
    age: [...age].map(([pipeline, oldestSeconds]) => ({ pipeline, oldestSeconds })),
  };
}
