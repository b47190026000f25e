// Eager hand-off: when a step succeeds and makes the next one runnable, the same worker claims it in the same
// transaction (ballast.complete_step_and_claim) instead of waking it through graphile-worker. Counted with a trigger
// on graphile-worker's job table: a 3-step sequence needs one wake-up with hand-off, three without.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline.ts';
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

async function wakeups(run: () => Promise<void>): Promise<number> {
  await pool.query('truncate wakeups');
  await run();
  const { rows } = await pool.query('select count(*)::int as n from wakeups');
  return rows[0].n;
}

t.test('with eager hand-off one wake-up serves the whole sequence, on one worker', async (t) => {
  await testWorker(t, url, { pipelines: [seq('h.eager')], concurrency: 2 });
  const n = await wakeups(async () => {
    const { jobId } = await db.submitJob({ pipeline: 'h.eager', input: {} });
    const job = await waitForJob(db, jobId);
    t.equal(job.status, 'completed');
    t.equal(job.result, 3);
    const attempts = await db.getAttempts(jobId);
    t.equal(new Set(attempts.map((a) => a.worker_id)).size, 1, 'every step ran on the worker that finished the one before');
  });
  t.equal(n, 1, 'only the first step was woken through graphile-worker');
});

t.test('without it every step is a wake-up', async (t) => {
  await testWorker(t, url, { pipelines: [seq('h.queued')], concurrency: 2, eagerHandOff: false });
  const n = await wakeups(async () => {
    const { jobId } = await db.submitJob({ pipeline: 'h.queued', input: {} });
    t.equal((await waitForJob(db, jobId)).status, 'completed');
  });
  t.equal(n, 3);
});
