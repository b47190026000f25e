// Recovery: two ballast worker children with default settings (liveness lock, heartbeat 1 s, reaper 1 s,
// lostAfterMs 2 s, poll 1 s; bench.hold uses the default retry policy, so up to 1 s of backoff). A job's step hangs
// on its first attempt; the worker holding it is SIGKILLed; the figure is the time from the kill (database clock,
// read just before the signal) to the second attempt's started_at on the other worker.
//
// With a backlog (recovery_backlog_s): once the hold step runs, `backlog` jobs of bench.busy (one step that sleeps
// 100 ms) are submitted in one statement, and the kill follows at once, so both workers are busy and about `backlog`
// steps of other jobs are queued at the kill and still queued when the hold step is reclaimed (both counts are
// recorded). The reclaimed step has to get past them: claim_steps takes steps that already ran (attempts > 0) before
// new ones of the same priority, so it waits only for the survivor's local queue of claims taken before it.
//
// The reaper trusts a missing liveness lock only once the server has been up past its restart grace (0006_execution: 20 s by
// default); the bench's server may be younger than that, so the run waits for it first (steady state is measured).
import { connect } from '../database.ts';
import { spawnWorker } from '../children.ts';

export async function recovery(url: string, label: string, backlog = 0): Promise<Record<string, number>> {
  const c = await connect(url);
  const workers = [0, 1].map((i) => spawnWorker(url, { kind: 'ballast', concurrency: 10 }, `${label}-${i}`));
  try {
    const ids = (await Promise.all(workers.map((w) => w.ready))).map((r) => r.workerId);
    const { rows: young } = await c.query<{ ms: number }>(
      `select greatest(0, extract(epoch from ballast_private.server_epoch() + ballast_private.restart_grace() - clock_timestamp()) * 1000)::float8 as ms`);
    if (Number(young[0]!.ms) > 0) await new Promise((r) => setTimeout(r, Number(young[0]!.ms) + 100));
    const { rows } = await c.query<{ job_id: string }>(`select job_id from ballast.submit_job('bench.hold', '{}'::jsonb)`);
    const jobId = rows[0]!.job_id;
    const attempt = async (n: number) =>
      (await c.query<{ worker_id: string; started_at: Date }>(
        `select worker_id, started_at from ballast_private.attempts where job_id = $1 and number = $2`, [jobId, n])).rows[0];
    const waitFor = async (n: number, ms: number) => {
      const until = Date.now() + ms;
      for (;;) {
        const a = await attempt(n);
        if (a) return a;
        if (Date.now() > until) throw new Error(`recovery: attempt ${n} of job ${jobId} did not start within ${ms} ms`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const first = await waitFor(1, 20_000);
    const victim = workers[ids.indexOf(first.worker_id)];
    if (!victim) throw new Error(`recovery: attempt 1 ran on unknown worker ${first.worker_id}`);
    const queued = async () => Number((await c.query<{ n: string }>(
      `select count(*) as n from ballast_private.steps where status in ('queued', 'retrying') and job_id <> $1`, [jobId])).rows[0]!.n);
    if (backlog > 0) {
      await c.query(`select count(*) from ballast.submit_jobs('bench.busy', array_fill('{}'::jsonb, array[$1::int]))`, [backlog]);
    }
    const queuedAtKill = backlog > 0 ? await queued() : 0;
    const { rows: now } = await c.query<{ ms: number }>(`select extract(epoch from clock_timestamp()) * 1000 as ms`);
    await victim.kill();
    await waitFor(2, 60_000);
    const queuedAtReclaim = backlog > 0 ? await queued() : 0;
    const { rows: r } = await c.query<{ ms: number }>(
      `select extract(epoch from started_at) * 1000 as ms from ballast_private.attempts where job_id = $1 and number = 2`, [jobId]);
    const seconds = (Number(r[0]!.ms) - Number(now[0]!.ms)) / 1000;
    if (backlog === 0) {
      const survivor = workers.find((w) => w !== victim)!;
      await survivor.stop();
      return { recovery_s: seconds };
    }
    // The survivor is killed with the rest of the backlog still queued: its database is dropped right after.
    return { recovery_backlog_s: seconds, recovery_backlog_queued_at_kill: queuedAtKill, recovery_backlog_queued_at_reclaim: queuedAtReclaim };
  } finally {
    await Promise.all(workers.map((w) => w.kill()));
    await c.end();
  }
}
