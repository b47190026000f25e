// Fair sharing between tenants (migrations/0040_fair_sharing.sql, docs/flow-control.md; issue 15 item 7): a burst of
// 10,000 jobs of one tenant does not starve another tenant's single job, and weights give shares. The order is
// shown at the SQL level (claims without a worker); the lone job's wait while a 10,000-job burst drains, with a worker.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { freshDatabase, pgError, registerTestWorker, testWorker, waitForJob } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);
const noop = pipeline({ name: 'fair.noop', version: 1, input: z.object({}) })
  .step('only', { output: z.boolean() }, () => true);
const twoSteps = pipeline({ name: 'fair.two', version: 1, input: z.object({}) })
  .step('first', { output: z.boolean() }, () => true)
  .step('second', { after: ['first'], output: z.boolean() }, () => true);
for (const p of [noop, twoSteps]) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const TASKS = ['ballast_step:fair.noop@1', 'ballast_step:fair.two@1'];
const worker = await registerTestWorker(db, 'fair-claimer');

async function burst(tenantId: string, n: number, pipelineName = 'fair.noop'): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i += 1000) {
    const jobs = await db.submitJobs({ pipeline: pipelineName, inputs: Array.from({ length: Math.min(1000, n - i) }, () => ({})), tenantId });
    ids.push(...jobs.map((j) => j.jobId));
  }
  return ids;
}
const claimTenants = async (n: number): Promise<Record<string, number>> => {
  const { rows } = await pool.query<{ tenant_id: string; n: number }>(
    `select c.tenant_id, count(*)::int as n from ballast.claim_steps($1, $2, $3) c group by 1`, [worker, TASKS, n]);
  return Object.fromEntries(rows.map((r) => [r.tenant_id, r.n]));
};
async function reset(): Promise<void> {
  await pool.query(`update ballast_private.steps set status = 'cancelled', finished_at = ballast.now()
                     where status in ('queued', 'running', 'pending', 'retrying')`);
  await pool.query('select ballast.stop_fair_sharing()');
}

t.test('off (the default): first come, first served; a lone job waits behind a burst', async (t) => {
  t.teardown(reset);
  await burst('acme', 500);
  await db.submitJob({ pipeline: 'fair.noop', input: {}, tenantId: 'lone' });
  t.same(await claimTenants(100), { acme: 100 }, 'the first 100 claimed are all the burst\'s');
  t.equal((await pool.query(`select count(*)::int as n from ballast_private.steps where fair_key <> 0`)).rows[0].n, 0, 'every fair key is 0');
});

t.test('on: a lone job submitted after a burst is claimed with the next claim', async (t) => {
  t.teardown(reset);
  t.match((await pool.query(`select * from ballast.set_fair_share('*')`)).rows, [{ tenant_id: '*', weight: 1 }]);
  await burst('acme', 2000);
  t.same(await claimTenants(50), { acme: 50 }, 'the burst alone: served in order');
  const lone = await db.submitJob({ pipeline: 'fair.noop', input: {}, tenantId: 'lone' });
  const next = await claimTenants(10);
  t.equal(next.lone, 1, 'the lone job is in the next claim of 10');
  t.equal((await db.getJob(lone.jobId))?.status, 'running');
});

t.test('weights: a tenant of weight 3 gets three times the share while both have queued work', async (t) => {
  t.teardown(reset);
  await pool.query(`select ballast.set_fair_share('*'), ballast.set_fair_share('big', 3)`);
  await burst('small', 1000);
  await burst('big', 1000);
  const got = await claimTenants(400);
  t.ok(Math.abs(got.big! - 300) <= 2 && Math.abs(got.small! - 100) <= 2, `400 claimed: big ${got.big}, small ${got.small} (3:1)`);
  const shares = (await pool.query(`select tenant_id, weight from ballast.fair_shares order by tenant_id`)).rows;
  t.same(shares, [{ tenant_id: '*', weight: 1 }, { tenant_id: 'big', weight: 3 }, { tenant_id: 'small', weight: 1 }]);
});

t.test('the steps of a job share its key: a started job\'s later steps go ahead of newer jobs', async (t) => {
  t.teardown(reset);
  await pool.query(`select ballast.set_fair_share('*')`);
  const [first] = await burst('acme', 1, 'fair.two');
  await burst('acme', 200);
  const keys = (await pool.query(`select name, fair_key from ballast_private.steps where job_id = $1 order by id`, [first])).rows;
  t.equal(keys[0].fair_key, keys[1].fair_key, 'both steps of the job have its key');
  t.ok(keys[0].fair_key < (await pool.query(`select min(fair_key) as k from ballast_private.steps where job_id > $1`, [first])).rows[0].k,
    'and it is below every newer job\'s');
});

t.test('bad weights are refused, naming the field; only operators may set them', async (t) => {
  const e = await pgError(() => pool.query(`select * from ballast.set_fair_share('acme', 0)`));
  t.equal(e.code, 'BA002');
  t.match(e.message, /weight: 0 is not above 0/);
  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query('set local role ballast_client');
    t.equal((await pgError(() => c.query(`select * from ballast.set_fair_share('*')`))).code, '42501', 'a client may not');
  } finally {
    await c.query('rollback');
    c.release();
  }
});

t.test('a worker draining a 10,000-job burst: the lone job waits for a bounded number of the burst\'s', async (t) => {
  t.teardown(reset);
  await pool.query(`select ballast.set_fair_share('*')`);
  const ids = await burst('acme', 10_000);
  await testWorker(t, url, { pipelines: [noop, twoSteps], concurrency: 10 });
  const done = async () => (await pool.query(`select count(*)::int as n from ballast_private.jobs where id = any($1::bigint[]) and status = 'completed'`, [ids])).rows[0].n as number;
  while (await done() < 300) await new Promise((r) => setTimeout(r, 50));
  const before = await done();
  const submittedAt = Date.now();
  const lone = await db.submitJob({ pipeline: 'fair.noop', input: {}, tenantId: 'lone' });
  await waitForJob(db, lone.jobId, undefined, 60_000);
  const waitMs = Date.now() - submittedAt;
  const { rows } = await pool.query(
    `select count(*)::int as n from ballast_private.jobs where id = any($1::bigint[]) and finished_at < (select finished_at from ballast_private.jobs where id = $2)
       and status = 'completed'`, [ids, lone.jobId]);
  const overtaken = rows[0].n - before;
  t.comment(`lone job: waited ${waitMs} ms, while ${overtaken} jobs of the burst finished (the burst had ${10_000 - before} left)`);
  // What can still finish first: the steps the worker already holds (its local queue and the claims in flight: at
  // most 200, MAX_HELD in src/worker/engine.ts) and those finishing while the submission is sent; not the backlog.
  t.ok(overtaken <= 1000, `at most 1,000 of the burst finished before it (the worker's local queue and a claim): ${overtaken}`);
  t.ok(10_000 - before - overtaken >= 5000, 'it did not wait for the burst to drain (most of it was still queued)');
});
