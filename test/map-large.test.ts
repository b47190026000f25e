// A large map step (issue 11): 10,000 items run to completion with a real worker. Every item succeeds, the map
// step's output lists all 10,000 outcomes in index order, a step after the map receives them, and the job's counters
// (0004_state_machines: kept per statement from deltas, items_open on the map step) agree with a recount of its steps.
// Generous bounds: the machine is shared.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';

const N = 10_000;
t.setTimeout(600_000); // 10,000 items take about 20 s on an idle 2-core machine; much longer when it is shared
const { url, db, pool } = await freshDatabase(t);

const ran = new Set<number>();
const big = pipeline({ name: 'm.large', version: 1, input: z.object({ n: z.number().int() }) })
  .map('each', {
    items: ({ input }) => Array.from({ length: (input as { n: number }).n }, (_, i) => i),
    output: z.object({}),
  }, (item: number) => {
    ran.add(item);
    return {};
  })
  .step('after', { after: ['each'], output: z.object({ succeeded: z.number(), listed: z.number() }) },
    ({ deps }) => ({ succeeded: deps.each.succeeded, listed: deps.each.items.length }));

await testWorker(t, url, { pipelines: [big], concurrency: 10 });

t.test(`a map step of ${N.toLocaleString('en-US')} items completes`, async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'm.large', input: { n: N } });
  const job = await waitForJob(db, jobId, undefined, 540_000);
  t.equal(job.status, 'completed', 'the job completed');
  t.same(job.result, { succeeded: N, listed: N }, 'the step after the map received every outcome');
  t.equal(ran.size, N, 'the handler ran for every item');

  const { rows: [items] } = await pool.query<{ n: string; ok: string; extra_attempts: string }>(
    `select count(*) as n, count(*) filter (where status = 'succeeded') as ok,
            coalesce(sum(attempts - 1), 0) as extra_attempts
       from ballast.step_items where job_id = $1`, [jobId]);
  t.equal(Number(items!.n), N, 'one item step per item');
  t.equal(Number(items!.ok), N, 'every item succeeded');
  t.equal(Number(items!.extra_attempts), 0, 'no item needed a second attempt');

  const { rows: [map] } = await pool.query<{ status: string; items_open: number; listed: number; succeeded: number; failed: number; in_order: boolean; all_ok: boolean }>(
    `select s.status, s.items_open, jsonb_array_length(s.output -> 'items') as listed,
            (s.output ->> 'succeeded')::int as succeeded, (s.output ->> 'failed')::int as failed,
            (select bool_and((e.value ->> 'index')::int = e.ordinality - 1) from jsonb_array_elements(s.output -> 'items') with ordinality e) as in_order,
            (select bool_and(e.value ->> 'status' = 'succeeded') from jsonb_array_elements(s.output -> 'items') e) as all_ok
       from ballast_private.steps s where s.job_id = $1 and s.name = 'each'`, [jobId]);
  t.equal(map!.status, 'succeeded');
  t.equal(map!.items_open, 0, 'no item left open');
  t.equal(map!.listed, N, `the map step's output lists ${N} items`);
  t.equal(map!.succeeded, N);
  t.equal(map!.failed, 0);
  t.ok(map!.in_order, 'the items are listed in index order');
  t.ok(map!.all_ok, 'every listed item succeeded');

  const { rows: [counters] } = await pool.query<{ n_total: number; n_final: number; n_running: number; n_item_bad: number }>(
    `select n_total, n_final, n_running, n_item_bad from ballast_private.jobs where id = $1`, [jobId]);
  t.same(counters, { n_total: N + 2, n_final: N + 2, n_running: 0, n_item_bad: 0 }, 'counters: the map step, the step after it and the items, all final');
  const { rows: [drift] } = await pool.query<{ drifted: boolean }>(`select ballast.recount_job($1) as drifted`, [jobId]);
  t.equal(drift!.drifted, false, 'the job counters match a recount of its steps (no drift)');
});
