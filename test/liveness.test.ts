// Liveness under faults (issue 11; migrations/0006_execution.sql, src/worker/watchdog.ts, src/worker/supervisor.ts, src/db/migrate.ts), with real
// `ballast worker` processes (supervisor + worker child) and a real Postgres:
//  - concurrent migrations wait for each other instead of failing;
//  - a step that blocks the event loop for 30 s within its timeout keeps its attempt (the watchdog heartbeats);
//  - a step that spins forever is killed with its worker by the watchdog, retried, then quarantined (blocked_worker),
//    while other jobs complete and every worker process is restarted by its supervisor;
//  - a step that crashes its process is reported by the supervisor (crashed_worker) and quarantined; an external
//    SIGKILL is not counted.
// Waits are bounded and generous (a shared two-core machine); what happened is read back from the database.
import t, { type Test } from 'tap';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { migrate } from '../src/db/migrate.ts';
import { databaseUrl, eventually, freshDatabase } from './helpers.ts';
import { cliWorker, type CliWorker } from './support/cli-workers.ts';
import { quick } from './fixtures/liveness-tasks/liveness.ts';
import { FINAL_JOB_STATUSES } from '../src/statuses.ts';

t.setTimeout(600_000); // real processes, blocked for tens of seconds on purpose

t.test('8 concurrent migrations of one fresh database all succeed, and apply each migration once', async (t) => {
  const name = `ballast_t_mig_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client({ connectionString: process.env.BALLAST_TEST_SERVER_URL });
  await admin.connect();
  await admin.query(`create database ${name}`);
  t.teardown(async () => {
    await admin.query(`drop database if exists ${name} with (force)`);
    await admin.end();
  });
  const url = databaseUrl(name);
  const results = await Promise.allSettled(Array.from({ length: 8 }, () => migrate(url)));
  const failed = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
  t.same(failed, [], 'none of the 8 failed');
  const applied = results.map((r) => (r.status === 'fulfilled' ? r.value.applied.length : -1));
  t.equal(applied.filter((n) => n > 0).length, 1, `one run applied the migrations, the others found nothing to do (${applied.join(', ')})`);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const { rows } = await c.query<{ n: number; distinct_names: number }>(
      'select count(*)::int as n, count(distinct name)::int as distinct_names from ballast_private.migrations');
    t.ok(rows[0]!.n > 10 && rows[0]!.n === rows[0]!.distinct_names, `each migration recorded once (${rows[0]!.n})`);
    t.ok((await c.query(`select 1 from pg_proc where proname = 'report_worker_fault'`)).rowCount === 1, 'the schema is complete');
  } finally {
    await c.end();
  }
});

const { url, db, pool } = await freshDatabase(t);
const q = async <R extends pg.QueryResultRow>(text: string, params: unknown[] = []) => (await pool.query<R>(text, params)).rows;
const one = async <R extends pg.QueryResultRow>(text: string, params: unknown[] = []) => {
  const rows = await q<R>(text, params);
  if (rows.length !== 1) throw new Error(`expected one row from ${text}, got ${rows.length}`);
  return rows[0]!;
};
const submit = async (pipeline: string, input: unknown) => (await db.submitJob({ pipeline, input })).jobId;
const status = async (jobId: string) => (await one<{ status: string }>('select status from ballast.jobs where id = $1', [jobId])).status;
async function finished(jobIds: string[], timeoutMs: number): Promise<boolean> {
  return eventually(async () =>
    (await one<{ n: number }>('select count(*)::int as n from ballast.jobs where id = any($1) and status = any($2)', [jobIds, FINAL_JOB_STATUSES])).n === jobIds.length,
  timeoutMs);
}
const attemptsOf = (jobId: string) =>
  q<{ number: number; outcome: string; error_class: string | null; worker_id: string; error_message: string | null }>(
    'select number, outcome, error_class, worker_id, error_message from ballast.attempts where job_id = $1 order by id', [jobId]);

async function stopAll(t: Tap, workers: CliWorker[]): Promise<void> {
  for (const w of workers) {
    t.same(await w.proc.stop('SIGTERM', 30_000), { code: 0, signal: null }, `ballast worker ${w.proc.child.pid} exits 0 on SIGTERM`);
  }
}
type Tap = Test;

t.test('reap() counts heartbeat age and leases from the server start + restart grace (SQL clock)', async (t) => {
  // The session's clock (ballast.now) is set just after the server's start, as if Postgres had just restarted; the
  // session holds the worker's liveness lock, so only the heartbeat and lease rules apply.
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  t.teardown(() => c.end());
  const { rows: [e] } = await c.query<{ epoch: Date; grace_ms: number }>(
    `select ballast_private.server_epoch() as epoch, extract(epoch from ballast_private.restart_grace()) * 1000 as grace_ms`);
  t.equal(Number(e!.grace_ms), 20_000, 'the default grace is 20 s');
  const at = (ms: number) => c.query(`select set_config('ballast.now', $1, false)`, [new Date(e!.epoch.getTime() + ms).toISOString()]);
  await c.query(`select pg_advisory_lock(l.namespace, l.key) from ballast.worker_lock('restart-w') l`);
  await at(5_000);
  await c.query(`select ballast.register_worker('restart-w', 'test', 1, 1, '{}')`);
  await db.registerPipeline(quick.name, quick.version, quick.definition(), quick.inputJsonSchema());
  const jobId = await submit('liveness.quick', { ms: 1 });
  const { rows: [step] } = await c.query<{ id: string }>('select id from ballast_private.steps where job_id = $1', [jobId]);
  const { rows: [claim] } = await c.query<{ attempt_id: string }>(`select attempt_id from ballast.claim_step($1, 'restart-w', 2000)`, [step!.id]);
  t.ok(claim, 'the worker holds an attempt with a 2 s lease, heartbeat and lease stamped 5 s after the server started');
  const reap = async () => (await c.query<{ dead_workers: string[]; reclaimed_attempts: string[]; expired_waits: string[] }>(
    `select * from ballast.reap(10000, 2000)`)).rows[0]!;
  await at(19_000);
  t.same(await reap(), { dead_workers: [], reclaimed_attempts: [], expired_waits: [] },
    '14 s without a heartbeat and the lease 12 s past, but within the grace (20 s) of the start: nothing reaped');
  await at(21_000);
  t.same(await reap(), { dead_workers: [], reclaimed_attempts: [claim!.attempt_id], expired_waits: [] },
    'past the grace the lease counts (reclaimed) but the heartbeat ages from start + grace: the worker lives');
  await at(30_500);
  t.same((await reap()).dead_workers, ['restart-w'], 'past start + grace + dead_after (10 s) without a heartbeat: dead');
  await c.query(`select pg_advisory_unlock(l.namespace, l.key) from ballast.worker_lock('restart-w') l`);
  await c.query(`select set_config('ballast.now', '', false)`);
  const bad = await c.query(`set ballast.restart_grace_ms = 'soon'`).then(() => c.query('select * from ballast.reap()')).then(() => undefined, (err: Error) => err);
  t.match(bad?.message, /ballast.restart_grace_ms/, 'a malformed grace setting is refused, naming the setting');
  await c.query('reset ballast.restart_grace_ms');
});

t.test('a step that blocks the event loop for 30 s within its timeout keeps its attempt', async (t) => {
  const w = cliWorker(t, url, { BALLAST_CONCURRENCY: '2' });
  const workerId = await w.started(1, 60_000);
  const jobId = await submit('liveness.stall', { ms: 30_000 });
  t.ok(await finished([jobId], 120_000), 'the job finished');
  t.equal(await status(jobId), 'completed', 'and completed');
  t.same((await attemptsOf(jobId)).map((a) => [a.number, a.outcome, a.worker_id]), [[1, 'succeeded', workerId]],
    'one attempt, succeeded on the worker that was blocked: nothing reclaimed it');
  const stepRow = await one<{ attempts: number; crashes: number }>('select attempts, crashes from ballast_private.steps where job_id = $1', [jobId]);
  t.same([stepRow.attempts, stepRow.crashes], [1, 0], 'the step: one attempt, no crash counted');
  t.equal((await one<{ stopped_at: Date | null }>('select stopped_at from ballast.workers where id = $1', [workerId])).stopped_at, null,
    'the worker was never declared dead');
  t.same(w.workerIds(), [workerId], 'the worker process was not restarted');
  t.ok(w.said('the event loop is blocked; the watchdog heartbeats for the worker').length >= 1, 'its watchdog heartbeated for it');
  t.same(w.said(/declared dead/), [], 'the worker never learnt it was declared dead');
  await stopAll(t, [w]);
});

t.test('a CPU-spinning step is quarantined (blocked_worker); the other jobs complete; no worker stays frozen', async (t) => {
  const workers = [0, 1, 2].map(() => cliWorker(t, url, { BALLAST_CONCURRENCY: '2' }));
  await Promise.all(workers.map((w) => w.started(1, 60_000)));
  const others: string[] = [];
  for (let i = 0; i < 10; i++) others.push(await submit('liveness.quick', { ms: 30 }));
  const poison = await submit('liveness.spin', {});
  for (let i = 0; i < 30; i++) others.push(await submit('liveness.quick', { ms: 30 }));

  t.ok(await finished([poison], 120_000), 'the spinning job finished');
  const step = await one<{ status: string; crashes: number; attempts: number; error: { class: string; quarantined?: boolean; message: string } }>(
    'select status, crashes, attempts, error from ballast_private.steps where job_id = $1', [poison]);
  t.same([step.status, step.error.class, step.error.quarantined, step.crashes], ['failed', 'blocked_worker', true, 2],
    'its step failed for good: quarantined as blocked_worker after 2 blocked workers');
  t.ok(step.attempts === 2, `2 attempts of its 5 were used (${step.attempts})`);
  const attempts = await attemptsOf(poison);
  t.same(attempts.map((a) => [a.outcome, a.error_class]), [['crashed', 'blocked_worker'], ['crashed', 'blocked_worker']],
    'both attempts ended blocked_worker');
  t.not(attempts[0]!.worker_id, attempts[1]!.worker_id, 'on two different worker processes');
  t.match(attempts[0]!.error_message, /held the loop/, 'the watchdog knew which attempt held the loop');
  t.equal(await status(poison), 'failed', 'the job is failed (dead letter)');

  t.ok(await finished(others, 120_000), 'the 40 other jobs finished');
  const otherStatuses = await q<{ status: string; n: number }>(
    'select status, count(*)::int as n from ballast.jobs where id = any($1) group by status', [others]);
  t.same(otherStatuses, [{ status: 'completed', n: 40 }], 'all of them completed');
  const bystanders = await q<{ error_class: string }>(
    `select error_class from ballast.attempts where job_id = any($1) and outcome <> 'succeeded'`, [others]);
  t.ok(bystanders.every((b) => b.error_class === 'worker_lost'), `bystanders of the blocked workers were retried as worker_lost (${bystanders.length})`);
  t.equal((await one<{ n: number }>('select count(*)::int as n from ballast_private.steps where job_id = any($1) and crashes > 0', [others])).n, 0,
    'no other step was blamed');

  const restarts = () => workers.reduce((n, w) => n + w.workerIds().length - 1, 0);
  await eventually(() => restarts() >= 2, 60_000);
  t.equal(restarts(), 2, 'two worker processes were killed by their watchdog and restarted by their supervisor');
  for (const w of workers) {
    t.ok(w.said('the worker process was killed (by its watchdog, or kill -9); restarting it').length === w.workerIds().length - 1,
      `supervisor ${w.proc.child.pid} restarted each killed child once`);
  }
  // Every worker serves again: fresh jobs complete, on three live workers.
  const live = async () => (await one<{ n: number }>(`select count(*)::int as n from ballast.workers where stopped_at is null`)).n;
  await eventually(async () => (await live()) === 3, 30_000);
  t.equal(await live(), 3, 'three live workers');
  const after: string[] = [];
  for (let i = 0; i < 12; i++) after.push(await submit('liveness.quick', { ms: 200 }));
  t.ok(await finished(after, 60_000), 'jobs submitted afterwards finish');
  t.equal((await one<{ n: number }>(`select count(*)::int as n from ballast.jobs where id = any($1) and status = 'completed'`, [after])).n, 12,
    'and complete');
  await stopAll(t, workers);
});

t.test('a step that crashes its process: crashed_worker, quarantined; an external SIGKILL is not counted', async (t) => {
  const w = cliWorker(t, url, { BALLAST_CONCURRENCY: '1' });
  await w.started(1, 60_000);
  const jobId = await submit('liveness.crash', {});
  t.ok(await finished([jobId], 90_000), 'the crashing job finished');
  const step = await one<{ status: string; crashes: number; error: { class: string; quarantined?: boolean } }>(
    'select status, crashes, error from ballast_private.steps where job_id = $1', [jobId]);
  t.same([step.status, step.error.class, step.error.quarantined, step.crashes], ['failed', 'crashed_worker', true, 2],
    'quarantined as crashed_worker after 2 crashes');
  t.same((await attemptsOf(jobId)).map((a) => [a.outcome, a.error_class]), [['crashed', 'crashed_worker'], ['crashed', 'crashed_worker']],
    'two attempts, both crashed_worker');
  t.equal(w.said('the worker process crashed; reporting its running steps and restarting it').length, 2, 'the supervisor saw two crashes');

  // An operator's kill -9 of the worker child: not the step's fault.
  const current = await w.started(3, 60_000);
  const held = await submit('liveness.quick', { ms: 60_000 });
  t.ok(await eventually(async () => (await q(`select 1 from ballast.attempts where job_id = $1 and outcome = 'running'`, [held])).length === 1, 30_000),
    'a long step runs');
  const { pid } = await one<{ pid: number }>('select pid from ballast.workers where id = $1', [current]);
  process.kill(pid, 'SIGKILL');
  t.ok(await eventually(async () => (await q(`select 1 from ballast.attempts where job_id = $1 and outcome <> 'running'`, [held])).length === 1, 30_000),
    'its attempt was ended');
  t.same((await attemptsOf(held)).map((a) => [a.outcome, a.error_class]).slice(0, 1), [['crashed', 'worker_lost']],
    'as worker_lost (the reaper), not crashed_worker');
  t.equal((await one<{ crashes: number }>('select crashes from ballast_private.steps where job_id = $1', [held])).crashes, 0, 'not counted');
  await w.started(4, 60_000);
  t.ok(w.said('the worker process was killed (by its watchdog, or kill -9); restarting it').length === 1, 'the supervisor restarted the child');
  await stopAll(t, [w]);
});
