// Pickup and hand-off latency with idle workers, one submission at a time (default worker settings, concurrency 10).
//   pickup      ballast, from database timestamps: the job's created_at (ballast.now() as submit_job starts) -> the
//               first step's attempt started_at (inside claim_step). The verdict's figure.
//   pickup_e2e  from just before the submit statement is sent to the first step's handler starting, both read from
//               CLOCK_MONOTONIC (the same clock in the bench process and the worker child): adds the submit's own
//               execution and round trip, and claim_step's reply. Bare graphile-worker is measured this way (add_job
//               sent -> handler start: its rows keep no start time), so ratios compare pickup_e2e with gw_pickup.
//   hand-off   ballast only, from database timestamps: the previous step's finished_at (inside complete_step) -> the
//              next step's attempt started_at (inside its claim_step); and from the handlers' clock: the previous
//              handler's end -> the next handler's start (adds the complete_step and claim_step round trips).
// Bare graphile-worker is measured the same way (add_job -> handler start) as the reference for both.
// Each job is waited for to the end, then a random pause of 5-15 ms, so the worker is idle at every submission.
// Warm-up: the first job of each run (ballast and graphile-worker alike) is not a sample. It is the first statement of
// fresh connections (the bench's submitting client, the worker's pool): functions compiled, every statement planned,
// 30-40 ms end to end for ballast against about 5 for the steady state. It is reported on its own (*_cold_e2e_ms),
// so a quick run's p99 (50 samples: the worst one) measures an idle worker, not connection start-up.
import { connect } from '../database.ts';
import { spawnWorker } from '../children.ts';
import { GW_TASK, monoMs } from '../fixtures/pipelines.ts';
import { percentile } from '../stats.ts';

const pause = () => new Promise((r) => setTimeout(r, 5 + Math.random() * 10));

function summary(prefix: string, samples: number[]): Record<string, number> {
  return {
    [`${prefix}_p50_ms`]: percentile(samples, 50),
    [`${prefix}_p95_ms`]: percentile(samples, 95),
    [`${prefix}_p99_ms`]: percentile(samples, 99),
  };
}

export async function ballastPickup(url: string, samples: number, label: string): Promise<Record<string, number>> {
  const c = await connect(url);
  const w = spawnWorker(url, { kind: 'ballast', concurrency: 10, trace: true }, label);
  try {
    await w.ready;
    await new Promise((r) => setTimeout(r, 300));
    const cold0 = monoMs();
    const { rows: warm } = await c.query<{ job_id: string }>(`select job_id from ballast.submit_job('bench.noop3', '{}'::jsonb)`);
    const coldE2e = (await w.trace(warm[0]!.job_id, 'a', 10_000)).startMs - cold0;
    await w.trace(warm[0]!.job_id, 'c', 10_000);
    await pause();
    const pickupE2e: number[] = [];
    const handoffHandler: number[] = [];
    const jobs: string[] = [];
    for (let i = 0; i < samples; i++) {
      const t0 = monoMs();
      const { rows } = await c.query<{ job_id: string }>(`select job_id from ballast.submit_job('bench.noop3', '{}'::jsonb)`);
      const jobId = rows[0]!.job_id;
      const last = await w.trace(jobId, 'c', 10_000);
      const a = w.traces.get(`${jobId}/a`)!;
      const b = w.traces.get(`${jobId}/b`)!;
      pickupE2e.push(a.startMs - t0);
      handoffHandler.push(b.startMs - a.endMs, last.startMs - b.endMs);
      jobs.push(jobId);
      await pause();
    }
    await w.stop();
    // Database clock: submit -> first attempt, and each step's finished_at -> its successor's attempt started_at.
    const { rows: db } = await c.query<{ pickup: number[]; handoff: number[] }>(
      `select array(select extract(epoch from a.started_at - j.created_at) * 1000
                      from ballast_private.jobs j
                      join ballast_private.steps s on s.job_id = j.id and s.name = 'a'
                      join ballast_private.attempts a on a.step_id = s.id and a.number = 1
                     where j.id = any($1::bigint[]))::float8[] as pickup,
              array(select extract(epoch from a.started_at - p.finished_at) * 1000
                      from ballast_private.steps s
                      join ballast_private.steps p on p.job_id = s.job_id and p.name = s.depends_on[1]
                      join ballast_private.attempts a on a.step_id = s.id and a.number = 1
                     where s.job_id = any($1::bigint[]) and s.name in ('b', 'c'))::float8[] as handoff`, [jobs]);
    return {
      ...summary('pickup', db[0]!.pickup),
      ...summary('pickup_e2e', pickupE2e),
      ...summary('handoff', db[0]!.handoff),
      ...summary('handoff_handler', handoffHandler),
      pickup_cold_e2e_ms: coldE2e,
    };
  } finally {
    await w.kill();
    await c.end();
  }
}

export async function gwPickup(url: string, samples: number, label: string): Promise<Record<string, number>> {
  const c = await connect(url);
  const w = spawnWorker(url, { kind: 'gw', concurrency: 10, trace: true }, label);
  try {
    await w.ready;
    await new Promise((r) => setTimeout(r, 300));
    const cold0 = monoMs();
    await c.query(`select graphile_worker.add_job($1, json_build_object('k', -1))`, [GW_TASK]);
    const coldE2e = (await w.trace('-1', 'job', 10_000)).startMs - cold0;
    await pause();
    const pickup: number[] = [];
    for (let i = 0; i < samples; i++) {
      const t0 = monoMs();
      await c.query(`select graphile_worker.add_job($1, json_build_object('k', $2::int))`, [GW_TASK, i]);
      const t = await w.trace(String(i), 'job', 10_000);
      pickup.push(t.startMs - t0);
      await pause();
    }
    await w.stop();
    return { ...summary('gw_pickup', pickup), gw_pickup_cold_e2e_ms: coldE2e };
  } finally {
    await w.kill();
    await c.end();
  }
}
