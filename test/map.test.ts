// Map steps (migrations/0006_execution.sql): one step fanned out over items that fail independently; partial completion; per-item
// outcomes in ballast.step_items; replaying a failed item.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { PermanentError } from '../src/errors.ts';
import { eventually, freshDatabase, testWorker, waitForJob, pgError } from './helpers.ts';

const { url, db, pool } = await freshDatabase(t);

// Items whose text is 'bad' fail for good, unless fixed is set (to replay them later).
let fixed = false;
const itemRuns = new Map<string, number>();
const docs = z.object({ docs: z.array(z.string()) });

function build(name: string, partial: boolean | { minSucceeded: number }) {
  return pipeline({ name, version: 1, input: docs })
    .step('split', { output: z.array(z.string()) }, ({ input }) => input.docs)
    .map('summarize', {
      after: ['split'],
      items: ({ deps }) => (deps as { split: string[] }).split,
      output: z.object({ words: z.number() }),
      retry: { maxAttempts: 2, baseDelayMs: 10, maxDelayMs: 20 },
      partial,
    }, (doc, { index, jobId }) => {
      itemRuns.set(`${jobId}:${index}`, (itemRuns.get(`${jobId}:${index}`) ?? 0) + 1);
      if (doc === 'bad' && !fixed) throw new PermanentError(`document ${index} is unreadable`);
      return { words: doc.split(' ').length };
    })
    .step('report', { after: ['summarize'], output: z.object({ ok: z.number(), failed: z.number() }) },
      ({ deps }) => ({ ok: deps.summarize.succeeded, failed: deps.summarize.failed }));
}

const lenient = build('m.lenient', true);
const strict = build('m.strict', false);
const demanding = build('m.demanding', { minSucceeded: 3 });
await testWorker(t, url, { pipelines: [lenient, strict, demanding], concurrency: 4 });

t.test('partial success accepted: the job ends partially_completed with per-item outcomes', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'm.lenient', input: { docs: ['one two', 'bad', 'three four five'] } });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'partially_completed');
  t.same(job.result, { ok: 2, failed: 1 }, 'the step after the map ran with the outcome');
  const { rows } = await pool.query(
    `select item_index, status, output, error->>'class' as class, attempts from ballast.step_items where job_id = $1 order by item_index`, [jobId]);
  t.same(rows.map((r) => [r.item_index, r.status, r.output, r.class]), [
    [0, 'succeeded', { words: 2 }, null],
    [1, 'failed', null, 'permanent'],
    [2, 'succeeded', { words: 3 }, null],
  ]);
  t.equal(itemRuns.get(`${jobId}:1`), 1, 'a permanent failure is not retried');
  const map = (await db.getSteps(jobId)).find((s) => s.name === 'summarize')!;
  t.equal(map.status, 'succeeded');
  t.match(map.output, { succeeded: 2, failed: 1, items: [{ index: 0, status: 'succeeded' }, { index: 1, status: 'failed' }, { index: 2 }] });
});

t.test('partial success not accepted: the map step fails and what follows is skipped', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'm.strict', input: { docs: ['a', 'bad', 'c'] } });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'failed');
  const steps = Object.fromEntries((await db.getSteps(jobId)).map((s) => [s.name, s]));
  t.equal(steps.summarize!.status, 'failed');
  t.match(steps.summarize!.error, { class: 'items_failed', message: /1 of 3 items failed/ });
  t.equal(steps.report!.status, 'skipped');
  t.equal(steps.summarize__0!.status, 'succeeded', 'the other items still ran');
  t.equal(steps.summarize__2!.status, 'succeeded');
  t.match(job.error, { step: 'summarize', class: 'items_failed' });
});

t.test('minSucceeded: too few successes fail the map step', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'm.demanding', input: { docs: ['a', 'bad', 'c'] } });
  t.equal((await waitForJob(db, jobId)).status, 'failed', '2 of 3 succeeded, 3 were required');
  const ok = await db.submitJob({ pipeline: 'm.demanding', input: { docs: ['a', 'b', 'c', 'bad'] } });
  t.equal((await waitForJob(db, ok.jobId)).status, 'partially_completed', '3 of 4 succeeded');
});

t.test('no items: the map step succeeds at once', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'm.strict', input: { docs: [] } });
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  t.same(job.result, { ok: 0, failed: 0 });
});

t.test('replaying a failed item runs only that item, then what follows the map', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'm.strict', input: { docs: ['x', 'bad', 'z'] } });
  t.equal((await waitForJob(db, jobId)).status, 'failed');
  const steps = Object.fromEntries((await db.getSteps(jobId)).map((s) => [s.name, s]));
  const mapErr = await pgError(() => pool.query('select * from ballast.replay_step($1)', [steps.summarize!.id]));
  t.equal(mapErr.code, 'BA011', 'a map step that ran its items is replayed through its items');
  fixed = true;
  try {
    const r = await db.replayStep(steps.summarize__1!.id, { reason: 'document repaired', actor: 'ops' });
    t.same(r.replayedStepIds.map(String).sort(), [steps.summarize!.id, steps.report!.id, steps.summarize__1!.id].map(String).sort());
    const job = await waitForJob(db, jobId);
    t.equal(job.status, 'completed');
    t.same(job.result, { ok: 3, failed: 0 });
    t.equal(itemRuns.get(`${jobId}:0`), 1, 'item 0 did not run again');
    t.equal(itemRuns.get(`${jobId}:1`), 2, 'item 1 ran again');
    const events = await db.getEvents(jobId);
    t.ok(events.some((e) => e.type === 'step_replayed' && e.actor === 'ops' && e.reason === 'document repaired'));
  } finally {
    fixed = false;
  }
});

t.test('cancelling a job cancels its items', async (t) => {
  const slow = pipeline({ name: 'm.slow', version: 1, input: z.object({}) })
    .map('wait', { items: () => [1, 2, 3], output: z.number() }, async (n, { signal }) => {
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
      return n;
    });
  await testWorker(t, url, { pipelines: [slow], concurrency: 3 });
  const { jobId } = await db.submitJob({ pipeline: 'm.slow', input: {} });
  await waitForJob(db, jobId, ['running']);
  // Cancel once the items exist (the job is running as soon as the map step's listing is claimed).
  t.ok(await eventually(async () => (await pool.query(`select 1 from ballast.step_items where job_id = $1`, [jobId])).rowCount === 3, 10_000),
    'the items were listed');
  await db.cancelJob(jobId, 'no longer needed');
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'cancelled');
  const { rows } = await pool.query(`select status from ballast.step_items where job_id = $1`, [jobId]);
  t.ok(rows.length === 3 && rows.every((r) => r.status === 'cancelled'), 'every item cancelled');
});

t.test('what a map step waits for: waiting_for is items while its items run (wait_key null), event while its items function waits for an event', async (t) => {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => { release = resolve; });
  const p = pipeline({ name: 'm.waits', version: 1, input: z.object({}) })
    .map('fan', {
      items: async (ctx) => (await ctx.waitForEvent(`m.waits:${ctx.jobId}`, { timeoutMs: 60_000 })) as number[],
      output: z.number(),
    }, async (n) => {
      await released;
      return n * 2;
    });
  await testWorker(t, url, { pipelines: [p], concurrency: 3, pollIntervalMs: 50 });
  const { jobId } = await db.submitJob({ pipeline: 'm.waits', input: {} });
  const row = async () => (await pool.query(
    `select status, wait_key, waiting_for from ballast_private.steps where job_id = $1 and name = 'fan'`, [jobId])).rows[0];

  t.equal((await waitForJob(db, jobId, ['waiting'], 10_000)).status, 'waiting', 'the job waits for the event');
  t.same(await row(), { status: 'waiting', wait_key: `m.waits:${jobId}`, waiting_for: 'event' },
    'the items function waits for an event: waiting_for is event, wait_key its key');

  await db.sendEvent(`m.waits:${jobId}`, [1, 2]);
  t.ok(await eventually(async () => (await row())?.waiting_for === 'items', 10_000), 'the items were listed');
  t.same(await row(), { status: 'waiting', wait_key: null, waiting_for: 'items' },
    'the map step waits for its items: waiting_for is items, wait_key null');
  t.equal((await db.getJob(jobId))?.status, 'running', 'a job whose map step waits for its items is running, not waiting');
  const { rows: [{ id: fanId }] } = await pool.query(`select id from ballast.steps where job_id = $1 and name = 'fan'`, [jobId]);
  const sent = await db.sendEvent(`ballast:items:${fanId}`, null);
  t.same(sent.resumedStepIds, [], 'an event with the key map steps used to wait under (before 0031) wakes nothing');
  t.equal((await row())?.waiting_for, 'items', 'the map step still waits for its items');
  const { rows: [{ drift }] } = await pool.query(`select ballast.recount_job($1) as drift`, [jobId]);
  t.equal(drift, false, 'the counters agree with the steps');

  release();
  const job = await waitForJob(db, jobId, undefined, 10_000);
  t.equal(job.status, 'completed');
  t.same(await row(), { status: 'succeeded', wait_key: null, waiting_for: null }, 'not waiting: waiting_for is null');
  const { rows: leftovers } = await pool.query(
    `select id from ballast_private.steps where wait_key like 'ballast:items:%' or (status = 'waiting') <> (waiting_for is not null)`);
  t.same(leftovers, [], 'no step anywhere holds an items key, and waiting_for is set exactly while waiting');
});
