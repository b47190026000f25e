// Durable sleep (migrations/0034_durable_sleep.sql, issue 15 item 3): ctx.sleep parks the step (waiting for a time,
// no worker slot, no attempt charged) and it runs again when it wakes; the wake time is kept per step and key, so a
// worker SIGKILLed during the sleep changes nothing; a sleep step hands its wake time on.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { eventually, freshDatabase, spawnNode, testWorker, waitForJob } from './helpers.ts';
import { napper, paused } from './fixtures/sleep-tasks.ts';

const { url, db, pool } = await freshDatabase(t);
for (const p of [napper, paused]) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const fixture = fileURLToPath(new URL('./fixtures/sleep-worker.ts', import.meta.url));

const outputOf = async (jobId: string, name: string) =>
  (await pool.query(`select output from ballast.steps where job_id = $1 and name = $2`, [jobId, name])).rows[0]?.output;
const stepOf = async (jobId: string, name: string) =>
  (await pool.query(`select s.status, s.waiting_for, s.wait_key, s.wait_deadline, s.attempts, s.attempt_offset
                       from ballast.steps s where s.job_id = $1 and s.name = $2`, [jobId, name])).rows[0];

t.test('a sleeping step holds no slot, is not charged, and runs again when it wakes', async (t) => {
  await testWorker(t, url, { pipelines: [napper, paused], concurrency: 1 });
  const { jobId } = await db.submitJob({ pipeline: 'sleep.nap', input: { ms: 1500 } });
  t.ok(await eventually(async () => (await stepOf(jobId, 'nap'))?.status === 'waiting', 10_000), 'the step sleeps');
  const asleep = await stepOf(jobId, 'nap');
  t.match(asleep, { waiting_for: 'time', wait_key: null, attempts: 1, attempt_offset: 1 }, 'waiting for a time, the attempt not charged');
  t.equal((await db.getJob(jobId))?.status, 'waiting', 'the job waits');
  // The only slot is free: another job runs meanwhile.
  const other = await db.submitJob({ pipeline: 'sleep.nap', input: { ms: 0 } });
  t.equal((await waitForJob(db, other.jobId)).status, 'completed', 'another job ran in the slot meanwhile');
  const done = await waitForJob(db, jobId);
  t.equal(done.status, 'completed');
  const result = await outputOf(jobId, 'nap') as { until: string; attempt: number };
  t.equal(result.until, new Date(asleep.wait_deadline).toISOString(), 'ctx.sleep returned the recorded wake time');
  t.equal(result.attempt, 1, 'ctx.attempt counts charged attempts: the sleep was none');
  const s = await stepOf(jobId, 'nap');
  t.equal(s.attempts, 2, 'it ran twice: before and after the sleep');
  t.equal(s.attempts - s.attempt_offset, 1, 'one attempt charged in all');
  const { rows } = await pool.query(`select count(*)::int as n from ballast_private.step_sleeps where step_id = (select id from ballast_private.steps where job_id = $1)`, [jobId]);
  t.equal(rows[0].n, 1, 'one wake time recorded');
});

t.test('a sleep step passes its wake time on', async (t) => {
  await testWorker(t, url, { pipelines: [napper, paused] });
  const { jobId } = await db.submitJob({ pipeline: 'sleep.step', input: { ms: 800 } });
  const done = await waitForJob(db, jobId);
  t.equal(done.status, 'completed');
  const [pause, after] = [await outputOf(jobId, 'pause') as { until: string }, await outputOf(jobId, 'after') as { woke: string }];
  t.ok(pause.until, 'the sleep step output its wake time');
  t.equal(after.woke, pause.until, 'the step after it got { until }');
  const steps = await db.getSteps(jobId);
  t.same(steps.map((s) => s.name), ['before', 'pause', 'after']);
  const def = (await pool.query(`select definition from ballast.pipelines where name = 'sleep.step'`)).rows[0].definition;
  t.same(def.steps[1].sleep, { duration_ms: null, until: null }, 'its definition says it sleeps (for a computed duration)');
});

t.test('the sleep survives a SIGKILL of its worker: another worker wakes it at its time', async (t) => {
  const proc = spawnNode(t, [fixture], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json' } });
  await proc.waitForLine((line) => (line.includes('worker started') ? true : undefined), 30_000);
  const { jobId } = await db.submitJob({ pipeline: 'sleep.nap', input: { ms: 2500 } });
  t.ok(await eventually(async () => (await stepOf(jobId, 'nap'))?.status === 'waiting', 15_000), 'the step sleeps');
  const { wait_deadline: until } = await stepOf(jobId, 'nap');
  proc.child.kill('SIGKILL');
  await proc.wait(10_000);
  await testWorker(t, url, { pipelines: [napper, paused] });
  const done = await waitForJob(db, jobId, undefined, 30_000);
  t.equal(done.status, 'completed', 'the job completed after the kill');
  t.equal((await outputOf(jobId, 'nap') as { until: string }).until, new Date(until).toISOString(), 'at the wake time recorded before the kill');
  const { rows } = await pool.query(`select s.finished_at >= $2 as after_wake from ballast.steps s where s.job_id = $1 and s.name = 'nap'`, [jobId, until]);
  t.same(rows, [{ after_wake: true }], 'the step finished after its wake time, not before');
});

t.test('bad durations are refused where they are written', async (t) => {
  const base = pipeline({ name: 'sleep.bad', version: 1, input: z.object({}) });
  t.throws(() => base.sleep('s', { duration: -1 }), /duration -1 is not an integer from 0 to/);
  t.throws(() => base.sleep('s', { duration: 1.5 }), /duration 1.5 is not an integer/);
});

t.test('a sleeping job can be cancelled; it does not wake afterwards', async (t) => {
  await testWorker(t, url, { pipelines: [napper, paused] });
  const { jobId } = await db.submitJob({ pipeline: 'sleep.nap', input: { ms: 1000 } });
  t.ok(await eventually(async () => (await stepOf(jobId, 'nap'))?.waiting_for === 'time', 10_000), 'the step sleeps');
  const r = await db.cancelJob(jobId, 'not needed any more', 'test');
  t.equal(r.status, 'cancelled');
  await new Promise((resolve) => setTimeout(resolve, 2500)); // past its wake time, with the reaper running
  t.match(await stepOf(jobId, 'nap'), { status: 'cancelled', waiting_for: null }, 'still cancelled after its wake time');
  t.equal((await db.getJob(jobId))?.status, 'cancelled');
});
