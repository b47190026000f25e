// A per-tenant concurrency limit held across two worker processes (test/fixtures/limited-worker.ts: limit 2 per
// tenant, each process willing to run 4 steps at once). The overlap is measured afterwards from the attempts' own
// start and finish times, so the test checks what happened, not what a process believed.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { freshDatabase, spawnNode, waitForJob } from './helpers.ts';

const fixture = fileURLToPath(new URL('./fixtures/limited-worker.ts', import.meta.url));
const { url, db, pool } = await freshDatabase(t);

t.test('limit 2 per tenant across two processes; throttled claims burn no attempts', async (t) => {
  const env = { ...process.env, DATABASE_URL: url };
  const workers = [spawnNode(t, [fixture], { env }), spawnNode(t, [fixture], { env })];
  for (const w of workers) await w.waitForLine((l) => (l.startsWith('ready ') ? l : undefined), 30_000);

  const jobs: string[] = [];
  for (let n = 0; n < 12; n++) jobs.push((await db.submitJob({ pipeline: 'fixture.limited', input: { n }, tenantId: 'a' })).jobId);
  for (let n = 0; n < 4; n++) jobs.push((await db.submitJob({ pipeline: 'fixture.limited', input: { n }, tenantId: 'b' })).jobId);
  for (const id of jobs) t.equal((await waitForJob(db, id, undefined, 30_000)).status, 'completed', `job ${id} completed`);

  // For each attempt, how many attempts of the same tenant were running at the moment it started (itself included).
  const { rows } = await pool.query<{ tenant_id: string; max_overlap: number; attempts: number; workers: number }>(`
    with a as (
      select a.id, a.worker_id, j.tenant_id, a.started_at, a.finished_at
        from ballast.attempts a join ballast.jobs j on j.id = a.job_id
       where j.pipeline = 'fixture.limited')
    select a.tenant_id,
           max((select count(*) from a b
                 where b.tenant_id = a.tenant_id and b.started_at <= a.started_at and b.finished_at > a.started_at))::int
             as max_overlap,
           count(*)::int as attempts,
           count(distinct a.worker_id)::int as workers
      from a group by a.tenant_id order by a.tenant_id`);
  t.same(rows.map((r) => [r.tenant_id, r.attempts]), [['a', 12], ['b', 4]], 'one attempt per job');
  for (const r of rows) t.ok(r.max_overlap <= 2, `tenant ${r.tenant_id}: at most 2 running at once (saw ${r.max_overlap})`);
  t.ok(rows.some((r) => r.max_overlap > 1), 'two did run at once: the limit, not luck, kept it at 2');
  const { rows: used } = await pool.query<{ n: number }>(`select count(distinct worker_id)::int as n from ballast.attempts`);
  t.equal(used[0]?.n, 2, 'both processes ran steps');
  const { rows: steps } = await pool.query<{ attempts: number; n: number }>(
    `select attempts, count(*)::int as n from ballast.steps group by attempts`);
  t.same(steps, [{ attempts: 1, n: 16 }], 'every step ran exactly once: waiting for a slot uses no attempt');

  for (const w of workers) t.same(await w.stop('SIGTERM', 15_000), { code: 0, signal: null }, 'a worker stops on SIGTERM');
  const { rows: locked } = await pool.query<{ n: number }>(
    `select count(*)::int as n from graphile_worker._private_jobs where locked_at is not null`);
  t.equal(locked[0]?.n, 0, 'nothing is left locked in graphile_worker');
});
