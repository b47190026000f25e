// Deadlines and expiry (migrations/0039_timing.sql, issue 15 item 10): a job given a deadline fails when it has not
// finished by then (its steps: deadline_exceeded; running attempts cancelled), one given expires_at fails when it has
// not started by then (expired); enforced by the reaper and at claim, audited. On the controllable clock in SQL, and
// with worker processes on the real clock.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { freshDatabase, pgError, registerTestWorker, spawnNode, waitForJob } from './helpers.ts';
import { timingPipelines } from './fixtures/timing-tasks.ts';
import { data, testServer, token } from './support/graphql.ts';

const { url, db, pool } = await freshDatabase(t);
for (const p of timingPipelines) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const fixture = fileURLToPath(new URL('./fixtures/timing-worker.ts', import.meta.url));
const TASKS = timingPipelines.map((p) => `ballast_step:${p.name}@${p.version}`);

const T0 = Date.parse('2031-06-01T08:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();
type TapTest = { teardown: (fn: () => unknown) => void };
async function clockAt(c: pg.PoolClient, ms: number) {
  await c.query(`select set_config('ballast.now', $1, false)`, [iso(ms)]);
}
async function onClock(t: TapTest): Promise<pg.PoolClient> {
  const c = await pool.connect();
  t.teardown(async () => {
    await c.query('reset ballast.now');
    c.release();
  });
  await clockAt(c, 0);
  return c;
}
const stepsOf = async (c: pg.PoolClient, jobId: string) =>
  (await c.query(`select name, status, error->>'class' as class from ballast.steps where job_id = $1 order by id`, [jobId])).rows;
const eventsOf = async (c: pg.PoolClient, jobId: string) =>
  (await c.query(`select type, reason from ballast.events where job_id = $1 order by id`, [jobId])).rows;
const jobOf = async (c: pg.PoolClient, jobId: string) =>
  (await c.query(`select status, error, deadline, expires_at from ballast.jobs where id = $1`, [jobId])).rows[0];

t.test('a queued job past its deadline fails at the next reap: deadline_exceeded, audited', async (t) => {
  const c = await onClock(t);
  const { job_id: jobId } = (await c.query(`select * from ballast.submit_job('timing.chain', '{"n": 1}', p_deadline => $1)`, [iso(5000)])).rows[0];
  t.equal(new Date((await jobOf(c, jobId)).deadline).toISOString(), iso(5000), 'ballast.jobs.deadline');
  await clockAt(c, 4999);
  await c.query('select * from ballast.reap(2000000000, 2000000000)');
  t.equal((await jobOf(c, jobId)).status, 'queued', 'untouched before its deadline');
  await clockAt(c, 5000);
  await c.query('select * from ballast.reap(2000000000, 2000000000)');
  const job = await jobOf(c, jobId);
  t.equal(job.status, 'failed', 'failed at its deadline');
  t.match(job.error, { step: 'first', class: 'deadline_exceeded', message: `the job did not finish by its deadline ${(await c.query(`select $1::timestamptz::text as t`, [iso(5000)])).rows[0].t}` }, 'the job error names the class and the deadline');
  t.same((await stepsOf(c, jobId)).map((s) => [s.name, s.status, s.class]), [['first', 'failed', 'deadline_exceeded'], ['second', 'skipped', null]],
    'the queued step failed, its pending dependant was skipped');
  t.same((await eventsOf(c, jobId)).map((e) => [e.type, e.reason]),
    [['job_submitted', null], ['step_failed', 'deadline passed'], ['step_skipped', 'deadline passed'], ['job_failed', 'deadline passed']], 'audited, with the reason');
});

t.test('a running job past its deadline: its attempt is cancelled, its worker told, its late result discarded', async (t) => {
  const c = await onClock(t);
  const worker = await registerTestWorker(db, 'dl-running');
  const listener = new pg.Client({ connectionString: url });
  await listener.connect();
  t.teardown(() => listener.end());
  const cancels: string[] = [];
  listener.on('notification', (m) => cancels.push(m.payload ?? ''));
  await listener.query('listen ballast_cancel');

  const { job_id: jobId } = (await c.query(`select * from ballast.submit_job('timing.slow', '{"ms": 1}', p_deadline => $1)`, [iso(10_000)])).rows[0];
  const claim = (await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', $2, 1)`, [worker, TASKS])).rows[0].claims[0];
  t.equal(claim.job_id, Number(jobId), 'claimed');
  // (Enforced here by the next claim of any worker, not by ballast.reap: a worker registered by the test holds none
  // of the locks of a live worker, and the reaper would reclaim its attempt as lost first.)
  await clockAt(c, 10_000);
  await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', $2, 1)`, [worker, TASKS]);
  t.equal((await jobOf(c, jobId)).status, 'failed', 'the job failed');
  const { rows: [att] } = await c.query(`select outcome, error_class from ballast.attempts where id = $1`, [claim.attempt_id]);
  t.same(att, { outcome: 'cancelled', error_class: 'deadline_exceeded' }, 'the running attempt was cancelled');
  await listener.query('select 1');
  await new Promise((r) => setTimeout(r, 100));
  t.ok(cancels.some((p) => JSON.parse(p).attempts.some((a: { attempt_id: number }) => a.attempt_id === claim.attempt_id)), 'its worker was told on ballast_cancel');
  const late = (await c.query(`select * from ballast.settle_and_claim($1, array[$2::bigint], array['1'::jsonb], '{}', '{}', $3, 0)`, [worker, claim.attempt_id, TASKS])).rows[0];
  t.same(late.settled, [[claim.attempt_id, 'stale']], 'the result that came after the deadline is discarded (stale)');
  t.equal((await stepsOf(c, jobId))[0].status, 'failed', 'the step stays failed');
});

t.test('expires_at: a job not started by then fails (expired); one that started is left alone', async (t) => {
  const c = await onClock(t);
  const worker = await registerTestWorker(db, 'dl-expiry');
  const idle = (await c.query(`select * from ballast.submit_job('timing.echo', '{"n": 2}', p_expires_at => $1)`, [iso(2000)])).rows[0].job_id;
  const started = (await c.query(`select * from ballast.submit_job('timing.slow', '{"ms": 3}', p_expires_at => $1)`, [iso(2000)])).rows[0].job_id;
  // Take the second one (lower priority than nothing: claim both and give the first one back untouched).
  await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', array['ballast_step:timing.slow@1'], 1)`, [worker]);
  t.equal((await jobOf(c, started)).status, 'running', 'one started before its expiry time');
  await clockAt(c, 2000);
  await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', array['ballast_step:timing.chain@1'], 1)`, [worker]);
  const expired = await jobOf(c, idle);
  t.equal(expired.status, 'failed', 'the one never started failed');
  t.match(expired.error, { class: 'expired', message: /^the job did not start by its expiry time / }, 'class expired');
  t.same((await eventsOf(c, idle)).map((e) => [e.type, e.reason]),
    [['job_submitted', null], ['step_failed', 'expired before it started'], ['job_failed', 'expired before it started']], 'audited');
  t.equal((await jobOf(c, started)).status, 'running', 'the started one runs on');
});

t.test('a scheduled job whose expiry comes before anyone claims it fails; refused at claim without a reap', async (t) => {
  const c = await onClock(t);
  const worker = await registerTestWorker(db, 'dl-claim');
  const sched = (await c.query(`select * from ballast.submit_job('timing.echo', '{"n": 4}', p_run_at => $1, p_expires_at => $2)`, [iso(1000), iso(1500)])).rows[0].job_id;
  const late = (await c.query(`select * from ballast.submit_job('timing.echo', '{"n": 5}', p_deadline => $1)`, [iso(1500)])).rows[0].job_id;
  await clockAt(c, 1500);
  // No reap: the claim itself fails both before it takes anything.
  const r = (await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', $2, 10)`, [worker, TASKS])).rows[0];
  t.same(r.claims.filter((x: { job_id: number }) => [Number(sched), Number(late)].includes(x.job_id)), [], 'neither is claimed');
  t.match(await jobOf(c, sched), { status: 'failed', error: { class: 'expired' } }, 'the scheduled job expired (scheduled -> failed)');
  t.match(await jobOf(c, late), { status: 'failed', error: { class: 'deadline_exceeded' } }, 'the queued one missed its deadline');
  t.same((await eventsOf(c, sched)).map((e) => e.type), ['job_submitted', 'step_failed', 'job_failed'], 'audited');
  for (const x of r.claims) await c.query(`select ballast.release_attempt($1, 'test cleanup')`, [x.attempt_id]).catch(() => {});
});

t.test('bad limits are refused, naming the field', async (t) => {
  const cases: [string, string, RegExp][] = [
    [`p_deadline => now() - interval '1 minute'`, 'deadline', /^deadline: .* is not later than now/],
    [`p_expires_at => now() + interval '11 years'`, 'expires_at', /^expires_at: .* is more than ten years ahead/],
    [`p_delay_ms => 60000, p_expires_at => now() + interval '30 seconds'`, 'expires_at', /^expires_at: .* is not later than run_at/],
  ];
  for (const [args, field, message] of cases) {
    const err = await pgError(() => pool.query(`select * from ballast.submit_job('timing.echo', '{"n": 1}', ${args})`));
    t.equal(err.code, 'BA002', `${args}: BA002`);
    t.match(err.message, message, `${args}: ${err.message}`);
    t.same(JSON.parse(err.detail!)[0].path, field, `${args}: the detail's path`);
  }
  const ins = await pgError(() => pool.query(`insert into ballast.jobs (pipeline, input, deadline) values ('timing.echo', '{"n": 1}', now() - interval '1 second')`));
  t.match(ins, { code: 'BA002', message: /^deadline: / }, 'INSERT INTO ballast.jobs: the same check');
});

t.test('INSERT, submit_jobs, GraphQL and the CLI take the limits', async (t) => {
  const { rows: [ins] } = await pool.query(
    `insert into ballast.jobs (pipeline, input, deadline, expires_at) values ('timing.echo', '{"n": 6}', now() + interval '1 hour', now() + interval '10 minutes') returning id, deadline, expires_at`);
  t.ok(ins.deadline && ins.expires_at, 'INSERT: stored and returned');
  const batch = (await pool.query(`select * from ballast.submit_jobs('timing.echo', array['{"n": 7}']::jsonb[], p_deadline => now() + interval '1 hour')`)).rows;
  t.ok((await pool.query(`select deadline from ballast.jobs where id = $1`, [batch[0].job_id])).rows[0].deadline, 'submit_jobs: stored');
  const server = await testServer(t, url);
  const deadline = new Date(Date.now() + 3_600_000).toISOString();
  const viaGql = (await data(server, `mutation($d: Datetime) { submitJob(input: { pipeline: "timing.echo", input: { n: 8 }, deadline: $d, expiresAt: $d }) { job { deadline expiresAt } } }`, { d: deadline }, await token('operator'))).submitJob;
  t.equal(new Date(viaGql.job.deadline).toISOString(), deadline, 'GraphQL: deadline');
  t.equal(new Date(viaGql.job.expiresAt).toISOString(), deadline, 'GraphQL: expiresAt');
  const proc = spawnNode(t, ['src/cli.ts', 'submit', 'timing.echo', '--input', '{"n": 9}', '--deadline', '2h', '--expires', '10m', '--json'],
    { env: { ...process.env, DATABASE_URL: url, LOG_LEVEL: 'silent' } });
  const { code } = await proc.wait(30_000);
  t.equal(code, 0, proc.stderr());
  const { jobId } = JSON.parse(proc.lines.join('\n')) as { jobId: string };
  const { rows: [cli] } = await pool.query(`select extract(epoch from deadline - created_at) as d, extract(epoch from expires_at - created_at) as e from ballast.jobs where id = $1`, [jobId]);
  t.ok(Math.abs(Number(cli.d) - 7200) < 60 && Math.abs(Number(cli.e) - 600) < 60, 'CLI: --deadline 2h, --expires 10m');
  // These would otherwise run under the worker processes of the next test.
  for (const id of [ins.id, batch[0].job_id, jobId]) await db.cancelJob(String(id), 'test cleanup');
  await pool.query(`select ballast.cancel_job(id, 'test cleanup') from ballast.jobs where status not in ('completed', 'failed', 'cancelled', 'partially_completed')`);
});

t.test('worker processes: a step still running at its job\'s deadline is stopped and the job fails', async (t) => {
  const procs = [0, 1].map(() => spawnNode(t, [fixture], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json' } }));
  for (const p of procs) await p.waitForLine((line) => (line.includes('worker started') ? true : undefined), 60_000);
  const slow = await db.submitJob({ pipeline: 'timing.slow', input: { ms: 20_000 }, deadline: new Date(Date.now() + 1500) });
  const quick = await db.submitJob({ pipeline: 'timing.echo', input: { n: 10 }, deadline: new Date(Date.now() + 60_000) });
  t.equal((await waitForJob(db, quick.jobId, undefined, 30_000)).status, 'completed', 'a job that finishes in time completes');
  const failed = await waitForJob(db, slow.jobId, undefined, 30_000);
  t.equal(failed.status, 'failed', 'the slow one failed at its deadline');
  t.match(failed.error, { class: 'deadline_exceeded' });
  const { rows: [att] } = await pool.query(`select outcome, error_class, finished_at - started_at < interval '10 seconds' as stopped_early from ballast.attempts where job_id = $1`, [slow.jobId]);
  t.same(att, { outcome: 'cancelled', error_class: 'deadline_exceeded', stopped_early: true }, 'its attempt was cancelled well before the step would have ended');
});
