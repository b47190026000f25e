// Crash recovery with real worker processes (test/fixtures/recovery-worker.ts) against a real Postgres: a worker
// SIGKILLed mid-step, a step that kills its worker every time, SIGTERM during a long step, an attempt its worker lost
// track of, and every connection terminated under a running worker. Everything is waited for on conditions with
// bounded timeouts; what happened is read back from the database (attempts, effects, graphile-worker's jobs) and from
// the handlers' side tables.
import t, { type Test } from 'tap';
import { fileURLToPath } from 'node:url';
import { eventually, freshDatabase, spawnNode, type TestProcess } from './helpers.ts';
import { isFinalJobStatus } from '../src/statuses.ts';

const fixture = fileURLToPath(new URL('./fixtures/recovery-worker.ts', import.meta.url));
const { url, db, pool } = await freshDatabase(t);

// The handlers' own record of what they did (see the fixture).
await pool.query(`
  create table recovery_runs (id bigserial primary key, job_id bigint not null, step text not null,
                              attempt int not null, pid int not null, at timestamptz not null default clock_timestamp());
  create table recovery_charges (id bigserial primary key, job_id bigint not null, pid int not null,
                                 at timestamptz not null default clock_timestamp())`);

type Tap = Test;

/** A query that survives the connection-loss test terminating the pool's idle connections: retried a few times. */
async function q<R extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<R[]> {
  for (let tries = 1; ; tries++) {
    try {
      return (await pool.query<R>(text, params)).rows;
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const lost = e.code === '57P01' || /terminat|Connection|ECONNRESET/i.test(e.message ?? '');
      if (!lost || tries >= 5) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function one<R extends Record<string, unknown>>(text: string, params: unknown[] = []): Promise<R> {
  const rows = await q<R>(text, params);
  if (rows.length !== 1) throw new Error(`expected one row from ${text}, got ${rows.length}`);
  return rows[0]!;
}

/** Waits for `check` (polled), throwing `what` after timeoutMs: for preconditions, not for assertions. */
async function until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  if (!(await eventually(check, timeoutMs))) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
}

interface Worker {
  proc: TestProcess;
  pid: number;
  workerId: string;
  poolId: string;
}

function parse(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function spawnWorker(t: Tap, options: Record<string, unknown> = {}): TestProcess {
  const proc = spawnNode(t, [fixture], {
    env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json', LOG_LEVEL: 'info', RECOVERY_WORKER: JSON.stringify(options) },
  });
  t.teardown(() => {
    if (!t.passing()) t.comment(`worker ${proc.child.pid}, last log lines:\n${proc.lines.slice(-15).join('\n')}\n${proc.stderr().slice(-2000)}`);
  });
  return proc;
}

async function started(proc: TestProcess): Promise<Worker> {
  const line = await proc.waitForLine((l) => {
    const j = parse(l);
    return j?.msg === 'worker started' ? j : undefined;
  }, 30_000);
  return { proc, pid: proc.child.pid!, workerId: String(line.worker_id), poolId: String(line.pool_id) };
}

const startWorker = (t: Tap, options: Record<string, unknown> = {}) => started(spawnWorker(t, options));

async function submit(pipeline: string, input: unknown): Promise<string> {
  return (await db.submitJob({ pipeline, input })).jobId;
}

async function jobStatus(jobId: string): Promise<string> {
  return (await one<{ status: string }>('select status from ballast.jobs where id = $1', [jobId])).status;
}

/** Waits for the job to reach a final status (connection-loss tolerant); throws after timeoutMs. */
async function finished(jobId: string, timeoutMs: number): Promise<string> {
  let status = '';
  await until(`job ${jobId} finishes`, async () => {
    status = await jobStatus(jobId);
    return isFinalJobStatus(status);
  }, timeoutMs);
  return status;
}

interface AttemptRow {
  id: string;
  number: number;
  worker_id: string;
  outcome: string;
  error_class: string | null;
  started_at: Date;
  finished_at: Date | null;
}

const attemptsOf = (jobId: string) =>
  q<AttemptRow & Record<string, unknown>>(
    `select id, number, worker_id, outcome, error_class, started_at, finished_at from ballast.attempts
      where job_id = $1 order by id`, [jobId]);

const lockedJobs = async (poolId?: string) =>
  (await one<{ n: number }>(
    `select count(*)::int as n from graphile_worker._private_jobs
      where locked_at is not null and ($1::text is null or locked_by = $1)`, [poolId ?? null])).n;

const runningAttempts = async () =>
  (await one<{ n: number }>(`select count(*)::int as n from ballast.attempts where outcome = 'running'`)).n;

async function stopGracefully(t: Tap, w: Worker): Promise<void> {
  t.same(await w.proc.stop('SIGTERM', 15_000), { code: 0, signal: null }, `worker ${w.pid} exits 0 on SIGTERM`);
}

t.test('SIGKILL mid-step: another worker finishes the job, the recorded effect is not repeated', async (t) => {
  // Defaults throughout: lostAfterMs 2000, reaper every 1000 ms, poll every 1000 ms; the step's backoff is at most
  // 100 ms. Worst case from the kill to the next attempt: a reaper round after lost_after, the backoff, one poll.
  const worstCaseMs = 2000 + 1000 + 100 + 1000;
  const slackMs = 3000; // scheduling on a loaded two-core machine
  const workers = await Promise.all([startWorker(t), startWorker(t)]);
  const jobId = await submit('recovery.charge', { hold_attempts: 1 });

  // The effect is recorded: the handler has charged and is now holding.
  await until('the charge effect is recorded', async () =>
    (await q('select 1 from ballast.effects where job_id = $1 and key = $2', [jobId, 'charge'])).length === 1, 20_000);
  const first = (await attemptsOf(jobId))[0]!;
  const victim = workers.find((w) => w.workerId === first.worker_id);
  const survivor = workers.find((w) => w.workerId !== first.worker_id)!;
  if (!victim) throw new Error(`attempt ran on unknown worker ${first.worker_id}`);

  const { now: killedAt } = await one<{ now: Date }>('select clock_timestamp() as now');
  victim.proc.child.kill('SIGKILL');
  t.same(await victim.proc.wait(5000), { code: null, signal: 'SIGKILL' }, 'worker A died of SIGKILL');

  t.equal(await finished(jobId, 20_000), 'completed', 'the job completed');
  const attempts = await attemptsOf(jobId);
  t.same(attempts.map((a) => [a.number, a.outcome, a.error_class, a.worker_id]), [
    [1, 'crashed', 'worker_lost', victim.workerId],
    [2, 'succeeded', null, survivor.workerId],
  ], 'first attempt crashed (worker_lost) on A, second succeeded on B');

  const recoveryMs = attempts[1]!.started_at.getTime() - killedAt.getTime();
  t.comment(`recovery time (SIGKILL -> second attempt started): ${recoveryMs} ms (worst case by configuration ${worstCaseMs} ms)`);
  t.ok(recoveryMs > 0 && recoveryMs < Math.min(10_000, worstCaseMs + slackMs),
    `recovered in ${recoveryMs} ms: under ${Math.min(10_000, worstCaseMs + slackMs)} ms`);

  const runs = await q<{ attempt: number; pid: number }>('select attempt, pid from recovery_runs where job_id = $1 order by id', [jobId]);
  t.same(runs.map((r) => [r.attempt, r.pid]), [[1, victim.pid], [2, survivor.pid]], 'the step body ran twice, once per worker');
  const charges = await q<{ pid: number }>('select pid from recovery_charges where job_id = $1', [jobId]);
  t.same(charges.map((c) => c.pid), [victim.pid], 'the effect body ran exactly once, on A');
  const job = await one<{ result: unknown }>('select result from ballast.jobs where id = $1', [jobId]);
  t.same(job.result, { charge_id: `ch_${jobId}`, charged_by: victim.pid, finished_by: survivor.pid },
    "B got A's recorded effect result from the ledger");

  t.equal(await lockedJobs(victim.poolId), 0, "no graphile-worker job is left locked by A's pool");
  const rows = await q<{ id: string; stopped_at: Date | null }>(
    'select id, stopped_at from ballast.workers where id = any($1)', [[victim.workerId, survivor.workerId]]);
  t.ok(rows.find((r) => r.id === victim.workerId)?.stopped_at, "A's worker row is marked stopped");
  t.equal(rows.find((r) => r.id === survivor.workerId)?.stopped_at, null, "B's worker row is not");

  await stopGracefully(t, survivor);
  t.equal(await lockedJobs(), 0, 'nothing is locked in graphile_worker at the end');
});

t.test('SIGKILL with 1,000 steps queued: the reclaimed step runs before the backlog, within 10 s of the kill', async (t) => {
  const workers = await Promise.all([startWorker(t, { concurrency: 4 }), startWorker(t, { concurrency: 4 })]);
  const jobId = await submit('recovery.charge', { hold_attempts: 1 });
  await until('the charge effect is recorded', async () =>
    (await q('select 1 from ballast.effects where job_id = $1 and key = $2', [jobId, 'charge'])).length === 1, 20_000);
  const first = (await attemptsOf(jobId))[0]!;
  const victim = workers.find((w) => w.workerId === first.worker_id)!;
  const survivor = workers.find((w) => w.workerId !== first.worker_id)!;

  // A backlog of 1,000 steps of 100 ms: at 8 (then 4) slots it lasts far longer than the recovery.
  const backlog = (await db.submitJobs({ pipeline: 'recovery.slow', inputs: Array.from({ length: 1000 }, () => ({ ms: 100, honour_signal: true })) }))
    .map((r) => r.jobId);
  await until('the backlog is flowing', async () =>
    (await one<{ n: number }>(`select count(*)::int as n from ballast.attempts where job_id = any($1::bigint[])`, [backlog])).n >= 8, 20_000);
  const { now: killedAt } = await one<{ now: Date }>('select clock_timestamp() as now');
  victim.proc.child.kill('SIGKILL');
  t.same(await victim.proc.wait(5000), { code: null, signal: 'SIGKILL' }, 'the worker holding the step died of SIGKILL');

  t.equal(await finished(jobId, 60_000), 'completed', 'the job completed');
  const second = (await attemptsOf(jobId))[1]!;
  t.equal(second.worker_id, survivor.workerId, 'on the surviving worker');
  const recoveryMs = second.started_at.getTime() - killedAt.getTime();
  const { n: waiting } = await one<{ n: number }>(
    `select count(*)::int as n from ballast.steps s where s.job_id = any($1::bigint[])
        and not exists (select 1 from ballast.attempts a where a.step_id = s.id and a.started_at <= $2)`, [backlog, second.started_at]);
  t.comment(`SIGKILL -> reclaimed step started: ${recoveryMs} ms, with ${waiting} backlog steps not yet started`);
  t.ok(recoveryMs > 0 && recoveryMs < 10_000, `the reclaimed step ran ${recoveryMs} ms after the kill (under 10 s)`);
  t.ok(waiting > 500, `ahead of the backlog: ${waiting} of its 1,000 steps had not started yet`);
  await stopGracefully(t, survivor);
});

t.test('a step that kills its worker every time ends failed after max attempts', async (t) => {
  // Keep two workers alive: respawn after each death (at most 6 processes in all, so a loop cannot run away).
  const deaths: { pid: number; signal: string | null }[] = [];
  const procs: TestProcess[] = [];
  let stopped = false;
  const spawn = () => {
    const proc = spawnWorker(t);
    procs.push(proc);
    void proc.exited.then(({ signal }) => {
      if (stopped) return;
      deaths.push({ pid: proc.child.pid!, signal });
      if (procs.length < 6) spawn();
    });
    return proc;
  };
  await Promise.all([started(spawn()), started(spawn())]);
  const jobId = await submit('recovery.suicide', {});

  t.equal(await finished(jobId, 30_000), 'failed', 'the job failed (dead letter), not loops');
  const step = await one<{ status: string; attempts: number; attempt_offset: number; error: { class?: string } }>(
    'select status, attempts, attempt_offset, error from ballast.steps where job_id = $1', [jobId]);
  t.same([step.status, step.attempts, step.attempt_offset, step.error.class], ['failed', 2, 0, 'worker_lost'],
    'the step failed after 2 charged attempts, both lost with their worker');
  t.same((await attemptsOf(jobId)).map((a) => [a.number, a.outcome, a.error_class]),
    [[1, 'crashed', 'worker_lost'], [2, 'crashed', 'worker_lost']], 'two attempts, both crashed');
  const runs = await q<{ pid: number }>('select pid from recovery_runs where job_id = $1 order by id', [jobId]);
  t.equal(runs.length, 2, 'the handler ran twice');

  // The wake-ups left behind (the one graphile-worker held for a dead worker, now unlocked) are consumed by a live
  // worker without running the step again.
  await until('no wake-up of the failed step is left', async () =>
    (await q(`select 1 from graphile_worker._private_jobs where key = 'ballast_step:' || $1`,
      [(await one<{ id: string }>('select id from ballast.steps where job_id = $1', [jobId])).id])).length === 0, 15_000);
  t.equal(deaths.length, 2, 'exactly two workers died');
  t.ok(deaths.every((d) => d.signal === 'SIGKILL'), 'both of SIGKILL');
  t.same(runs.map((r) => r.pid).sort(), deaths.map((d) => d.pid).sort(), 'each death was the process that ran the step');
  t.equal((await one<{ attempts: number }>('select attempts from ballast.steps where job_id = $1', [jobId])).attempts, 2,
    'no third attempt after the dead letter');

  stopped = true;
  for (const proc of procs) {
    if (proc.child.exitCode === null && proc.child.signalCode === null) {
      await started(proc); // its SIGTERM handler is installed
      t.same(await proc.stop('SIGTERM', 15_000), { code: 0, signal: null }, `surviving worker ${proc.child.pid} exits 0`);
    }
  }
  t.equal(await lockedJobs(), 0, 'nothing is locked in graphile_worker at the end');
  t.equal(await runningAttempts(), 0, 'no attempt is left running');
});

t.test('SIGTERM during long steps: released past the grace period, finished later by another worker', async (t) => {
  const a = await startWorker(t, { concurrency: 2, shutdownGraceMs: 500 });
  const honours = await submit('recovery.slow', { ms: 3000, honour_signal: true });
  const ignores = await submit('recovery.slow', { ms: 3000, honour_signal: false });
  await until('both steps run on A', async () =>
    (await q('select 1 from recovery_runs where job_id = any($1) and pid = $2', [[honours, ignores], a.pid])).length === 2, 20_000);

  const sent = Date.now();
  const exit = await a.proc.stop('SIGTERM', 10_000);
  const exitMs = Date.now() - sent;
  t.same(exit, { code: 0, signal: null }, 'A exits 0');
  t.comment(`A exited ${exitMs} ms after SIGTERM (grace 500 ms, abandon 1000 ms, steps of 3000 ms)`);
  t.equal(await lockedJobs(), 0, 'nothing is locked in graphile_worker after A exits');
  t.equal(await runningAttempts(), 0, 'no attempt is left running');
  t.ok((await one<{ stopped_at: Date | null }>('select stopped_at from ballast.workers where id = $1', [a.workerId])).stopped_at,
    "A's worker row is marked stopped");
  for (const [name, jobId] of [['honours its signal', honours], ['ignores its signal', ignores]] as const) {
    t.same((await attemptsOf(jobId)).map((x) => [x.outcome, x.error_class, x.worker_id]), [['released', 'released', a.workerId]],
      `the step that ${name}: its attempt was released`);
    const s = await one<{ status: string; attempts: number; attempt_offset: number }>(
      'select status, attempts, attempt_offset from ballast.steps where job_id = $1', [jobId]);
    t.same([s.status, s.attempts, s.attempt_offset], ['retrying', 1, 1], `the step that ${name}: retrying, the release not charged`);
  }

  const b = await startWorker(t, { concurrency: 2 });
  for (const jobId of [honours, ignores]) {
    t.equal(await finished(jobId, 20_000), 'completed', `job ${jobId} completed on B`);
    t.same((await attemptsOf(jobId)).map((x) => [x.number, x.outcome, x.worker_id]),
      [[1, 'released', a.workerId], [2, 'succeeded', b.workerId]], `job ${jobId}: released on A, succeeded on B`);
    const s = await one<{ attempts: number; attempt_offset: number; output: { pid: number } }>(
      'select attempts, attempt_offset, output from ballast.steps where job_id = $1', [jobId]);
    t.same([s.attempts, s.attempt_offset, s.output.pid], [2, 1, b.pid], `job ${jobId}: one charged attempt, output from B`);
  }
  await stopGracefully(t, b);
  t.equal(await lockedJobs(), 0, 'nothing is locked in graphile_worker at the end');
});

t.test('SIGTERM during a step that finishes within the grace period: it completes on the same worker', async (t) => {
  const a = await startWorker(t, { shutdownGraceMs: 5000 });
  const jobId = await submit('recovery.slow', { ms: 1500, honour_signal: true });
  await until('the step runs on A', async () =>
    (await q('select 1 from recovery_runs where job_id = $1 and pid = $2', [jobId, a.pid])).length === 1, 20_000);
  t.same(await a.proc.stop('SIGTERM', 10_000), { code: 0, signal: null }, 'A exits 0');
  t.equal(await jobStatus(jobId), 'completed', 'the job completed before A exited');
  t.same((await attemptsOf(jobId)).map((x) => [x.outcome, x.worker_id]), [['succeeded', a.workerId]],
    'one attempt, succeeded on A, nothing released');
  t.equal((await one<{ attempt_offset: number }>('select attempt_offset from ballast.steps where job_id = $1', [jobId])).attempt_offset, 0,
    'no release recorded on the step');
  t.equal(await lockedJobs(), 0, 'nothing is locked in graphile_worker');
});

t.test('an attempt its worker lost track of is not kept alive by heartbeats: its lease runs out and it runs again', async (t) => {
  // As when the reply to a claim is lost with the connection: the step runs under this worker's id, but the process
  // does not know it. Its heartbeats must not renew that lease; the reaper reclaims it when the lease runs out.
  const leaseMs = 2000;
  const w = await startWorker(t, { leaseMs });
  const client = await pool.connect();
  let jobId: string;
  try {
    await client.query('begin');
    jobId = String((await client.query('select job_id from ballast.submit_job($1, $2::jsonb)', ['recovery.slow', { ms: 10, honour_signal: false }])).rows[0].job_id);
    const stepId = (await client.query('select id from ballast.steps where job_id = $1', [jobId])).rows[0].id;
    await client.query('select * from ballast.claim_step($1, $2, $3)', [stepId, w.workerId, leaseMs]);
    await client.query('commit');
  } finally {
    client.release();
  }

  t.equal(await finished(jobId, 15_000), 'completed', 'the job completed');
  const attempts = await attemptsOf(jobId);
  t.same(attempts.map((a) => [a.outcome, a.error_class, a.worker_id]),
    [['crashed', 'worker_lost', w.workerId], ['succeeded', null, w.workerId]], 'the orphaned attempt was reclaimed, then the step ran');
  const heldMs = attempts[0]!.finished_at!.getTime() - attempts[0]!.started_at.getTime();
  t.comment(`the orphaned attempt was reclaimed ${heldMs} ms after it started (lease ${leaseMs} ms)`);
  t.ok(heldMs >= leaseMs && heldMs < leaseMs + 3000, `reclaimed when its lease ran out (${heldMs} ms), not renewed by heartbeats`);
  t.equal((await one<{ stopped_at: Date | null }>('select stopped_at from ballast.workers where id = $1', [w.workerId])).stopped_at, null,
    'the worker itself was not declared dead');
  await stopGracefully(t, w);
});

t.test('every connection terminated twice during a run: all jobs complete, nothing locked or running', async (t) => {
  const w = await startWorker(t, { concurrency: 5 });
  const jobs: string[] = [];
  for (let n = 0; n < 20; n++) jobs.push(await submit('recovery.chain', { n, ms: 20 }));
  const succeededSteps = async () =>
    (await one<{ n: number }>(`select count(*)::int as n from ballast.steps where job_id = any($1) and status = 'succeeded'`, [jobs])).n;

  const admin = new (await import('pg')).default.Client({ connectionString: url, application_name: 'recovery-test admin' });
  await admin.connect();
  t.teardown(() => admin.end());
  const terminate = async () =>
    (await admin.query<{ n: number }>(`
      select count(*)::int as n from (
        select pg_terminate_backend(pid) from pg_stat_activity
         where datname = current_database() and pid <> pg_backend_pid()) k`)).rows[0]!.n;

  let killed = 0;
  for (const threshold of [8, 30]) {
    await until(`${threshold} steps have succeeded`, async () => (await succeededSteps()) >= threshold, 20_000);
    killed += await terminate();
  }
  t.comment(`terminated ${killed} connections in two rounds`);
  t.ok(killed >= 4, 'connections were terminated (the worker\'s among them)');

  const began = Date.now();
  for (const jobId of jobs) t.equal(await finished(jobId, Math.max(1000, 30_000 - (Date.now() - began))), 'completed', `job ${jobId} completed`);
  t.comment(`all 20 jobs completed ${Date.now() - began} ms after the second round of terminations`);
  const results = await q<{ id: string; result: { n: number } }>('select id, result from ballast.jobs where id = any($1) order by id', [jobs]);
  t.same(results.map((r) => r.result.n), jobs.map((_, n) => (n + 1) * 2), 'every job has its own right result');
  t.equal(await runningAttempts(), 0, 'no attempt is left running');
  // Wake-ups whose task failed on a dead connection come back after graphile-worker's own backoff and find nothing
  // to do; one left locked by the live worker would stay so until it stops (or for 4 hours).
  t.ok(await eventually(async () =>
    (await one<{ n: number }>('select count(*)::int as n from graphile_worker._private_jobs')).n === 0, 15_000),
  'every wake-up was consumed while the worker still runs: none left locked');
  t.same([w.proc.child.exitCode, w.proc.child.signalCode], [null, null], 'the worker process survived');
  const said = (msg: string) => w.proc.lines.filter((l) => parse(l)?.msg === msg).length;
  t.comment(`the worker retried ${said('could not record the outcome (database connection lost); retrying')} outcome writes ` +
    `and replaced its graphile-worker pool ${said('the graphile-worker pool shut down by itself (database connection lost?); starting a new one')} times`);
  await stopGracefully(t, w);
  t.equal(await lockedJobs(), 0, 'nothing is locked in graphile_worker after it stops');
});
