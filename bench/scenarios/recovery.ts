// Recovery: two ballast worker children with default settings (liveness lock, heartbeat 1 s, reaper 1 s,
// lostAfterMs 2 s, poll 1 s; bench.hold uses the default retry policy, so up to 1 s of backoff). A job's step hangs
// on its first attempt; the worker holding it is SIGKILLed; the figure is the time from the kill (database clock,
// read just before the signal) to the second attempt's started_at on the other worker.
import { connect } from '../database.ts';
import { spawnWorker } from '../children.ts';

export async function recovery(url: string, label: string): Promise<{ recovery_s: number }> {
  const c = await connect(url);
  const workers = [0, 1].map((i) => spawnWorker(url, { kind: 'ballast', concurrency: 10 }, `${label}-${i}`));
  try {
    const ids = (await Promise.all(workers.map((w) => w.ready))).map((r) => r.workerId);
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
    const { rows: now } = await c.query<{ ms: number }>(`select extract(epoch from clock_timestamp()) * 1000 as ms`);
    await victim.kill();
    await waitFor(2, 30_000);
    const { rows: r } = await c.query<{ ms: number }>(
      `select extract(epoch from started_at) * 1000 as ms from ballast_private.attempts where job_id = $1 and number = 2`, [jobId]);
    const survivor = workers.find((w) => w !== victim)!;
    await survivor.stop();
    return { recovery_s: (Number(r[0]!.ms) - Number(now[0]!.ms)) / 1000 };
  } finally {
    await Promise.all(workers.map((w) => w.kill()));
    await c.end();
  }
}
