// Hand-off in the batched core (0006_execution): the step rows are the queue, so no graphile-worker job is made for any step,
// and the round trip that records a step's success also claims the step it made runnable, for the same worker.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);
await pool.query(`
  create table wakeups (task text not null);
  create function count_wakeup() returns trigger language plpgsql as $$
    begin insert into public.wakeups values (new.task_id::text); return null; end $$;
  create trigger count_wakeup after insert on graphile_worker._private_jobs for each row execute function count_wakeup();`);

const seq = (name: string) => pipeline({ name, version: 1, input: z.object({}) })
  .step('a', { output: z.number() }, () => 1)
  .step('b', { after: ['a'], output: z.number() }, ({ deps }) => deps.a + 1)
  .step('c', { after: ['b'], output: z.number() }, ({ deps }) => deps.b + 1);

t.test('a sequence runs without any graphile-worker job, each step claimed in the round trip that settled the one before', async (t) => {
  await testWorker(t, url, { pipelines: [seq('h.seq')], concurrency: 2 });
  await pool.query('truncate wakeups');
  const { jobId } = await db.submitJob({ pipeline: 'h.seq', input: {} });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.equal(job.result, 3);
  const attempts = await db.getAttempts(jobId);
  t.equal(new Set(attempts.map((a) => a.worker_id)).size, 1, 'every step ran on the worker that finished the one before');
  // The success of a and the claim of b are one transaction: b's step_running event follows a's step_succeeded
  // with nothing of another transaction between them, and both carry the same transaction's clock (xact start).
  const { rows } = await pool.query(
    `select s.name, e.type, e.xmin::text as xid from ballast_private.events e join ballast_private.steps s on s.id = e.step_id
      where e.job_id = $1 and e.type in ('step_succeeded', 'step_running') order by e.id`, [jobId]);
  const xid = (name: string, type: string) => rows.find((r) => r.name === name && r.type === type)?.xid;
  t.equal(xid('a', 'step_succeeded'), xid('b', 'step_running'), 'a settled and b claimed in one transaction');
  t.equal(xid('b', 'step_succeeded'), xid('c', 'step_running'), 'b settled and c claimed in one transaction');
  const { rows: [w] } = await pool.query('select count(*)::int as n from wakeups');
  t.equal(w.n, 0, 'no graphile-worker job was made');
});
