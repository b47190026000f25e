// History flatness: the ballast throughput run on a database that already holds `jobs` finished bench.noop3 jobs,
// each with its 3 steps, 3 attempts and 11 audit events (what the real run leaves behind), against the same run on
// an empty database. The history is generated once with set-based INSERT ... SELECT generate_series, rows in id
// order, with triggers off (session_replication_role = replica: no audit events or NOTIFYs from the triggers, no
// foreign-key checks; that needs a superuser), then VACUUM ANALYZE. The rounds reuse that database (each run adds
// its own few thousand jobs to the history).
import type pg from 'pg';
import { connect } from '../database.ts';

// One row per event of a finished job: k (1..11), the step it belongs to (0 for the job), type, status, data.
const EVENTS = `(values
  (1, 0, 'job_submitted', 'queued', '{"pipeline": "bench.noop3", "version": 1, "tenant_id": "default", "priority": 0}'::jsonb),
  (2, 1, 'step_running', 'running', '{"attempt": 1}'), (3, 0, 'job_running', 'running', null),
  (4, 1, 'step_succeeded', 'succeeded', null), (5, 2, 'step_queued', 'queued', null),
  (6, 2, 'step_running', 'running', '{"attempt": 1}'), (7, 2, 'step_succeeded', 'succeeded', null),
  (8, 3, 'step_queued', 'queued', null), (9, 3, 'step_running', 'running', '{"attempt": 1}'),
  (10, 3, 'step_succeeded', 'succeeded', null), (11, 0, 'job_completed', 'completed', null))`;

async function sql(c: pg.Client, text: string, params: unknown[] = []): Promise<void> {
  await c.query(text, params);
}

/** Fills an empty scenario database (cloned from the template) with `jobs` finished jobs. */
export async function generateHistory(url: string, jobs: number, log: (msg: string) => void): Promise<void> {
  const c = await connect(url);
  try {
    try {
      await sql(c, 'set session_replication_role = replica');
    } catch (err) {
      throw new Error(`history: generating ${jobs} finished jobs needs a superuser (session_replication_role = replica ` +
        `skips the audit triggers); ${(err as Error).message}. Run the benchmark on the embedded Postgres (unset DATABASE_URL).`,
      { cause: err });
    }
    const started = performance.now();
    // Job g was submitted 2 s after job g-1, its steps ran 3 ms apart, the whole job took 10 ms.
    await sql(c, `
      insert into ballast_private.jobs (id, tenant_id, pipeline, pipeline_version, request_hash, input, status, priority,
                                        result, created_at, started_at, finished_at, updated_at)
      overriding system value
      select g, 'default', 'bench.noop3', 1, md5(g::text) || md5((-g)::text), '{}', 'completed', 0, '{}',
             t, t + interval '1 ms', t + interval '10 ms', t + interval '10 ms'
        from generate_series(1, $1::int) g, lateral (select now() - ($1::int - g) * interval '2 s' as t) x`, [jobs]);
    await sql(c, `
      insert into ballast_private.steps (id, job_id, name, status, depends_on, deps_remaining, attempts, max_attempts,
                                         backoff_base_ms, backoff_cap_ms, output, created_at, queued_at, started_at,
                                         finished_at, updated_at)
      overriding system value
      select (g - 1) * 3 + k, g, n, 'succeeded', d, 0, 1, 5, 1000, 300000, '{}', t, q, q + interval '1 ms',
             q + interval '2 ms', q + interval '2 ms'
        from generate_series(1, $1::int) g,
             lateral (select now() - ($1::int - g) * interval '2 s' as t) x,
             lateral (values (1, 'a', '{}'::text[]), (2, 'b', '{a}'), (3, 'c', '{b}')) v(k, n, d),
             lateral (select t + (k - 1) * interval '3 ms' as q) y`, [jobs]);
    await sql(c, `
      insert into ballast_private.attempts (id, step_id, job_id, number, worker_id, outcome, started_at,
                                            lease_expires_at, finished_at)
      overriding system value
      select id, id, job_id, 1, null, 'succeeded', started_at, started_at + interval '30 s', finished_at
        from ballast_private.steps order by id`);
    await sql(c, `
      insert into ballast_private.events (id, job_id, step_id, type, status, actor, data, at)
      overriding system value
      select (g - 1) * 11 + e.k, g, case when e.step > 0 then (g - 1) * 3 + e.step end, e.type, e.status,
             case when e.k = 1 then 'sql' else 'system' end, e.data, t + e.k * interval '1 ms'
        from generate_series(1, $1::int) g,
             lateral (select now() - ($1::int - g) * interval '2 s' as t) x,
             lateral ${EVENTS} e(k, step, type, status, data)`, [jobs]);
    for (const [table, rows] of [['jobs', jobs], ['steps', jobs * 3], ['attempts', jobs * 3], ['events', jobs * 11]] as const) {
      await sql(c, `select setval(pg_get_serial_sequence('ballast_private.${table}', 'id'), $1::bigint)`, [rows]);
    }
    await sql(c, 'set session_replication_role = origin');
    log(`history: inserted ${jobs} jobs, ${jobs * 3} steps and attempts, ${jobs * 11} events in ` +
      `${((performance.now() - started) / 1000).toFixed(1)} s; vacuum analyze`);
    await sql(c, 'vacuum analyze');
  } finally {
    await c.end();
  }
}

/** Sizes of the history tables (for the record). */
export async function historySize(url: string): Promise<Record<string, number>> {
  const c = await connect(url);
  try {
    const { rows } = await c.query<{ mb: number }>(`select pg_database_size(current_database()) / 1048576.0 as mb`);
    return { history_db_mb: Math.round(Number(rows[0]!.mb)) };
  } finally {
    await c.end();
  }
}
