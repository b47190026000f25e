// Submit: jobs/s through one connection, ballast.submit_job (bench.noop3: a job row, three step rows, an audit event
// and the first step's graphile-worker wake-up) against graphile_worker's own add_job / add_jobs (one row).
//   one by one  one autocommit statement per job, waiting for each reply (a web request submitting a job)
//   batched     BATCH jobs per statement: ballast.submit_jobs with an array of BATCH inputs (each validated against
//               the input contract, as one by one), and graphile_worker.add_jobs with an array of BATCH specs
//   insert      BATCH jobs per statement: INSERT INTO ballast.jobs ... SELECT of BATCH rows (migrations/0005_pipelines_and_submit.sql)
// The five measurements run in an order that changes from round to round.
import { connect } from '../database.ts';
import { GW_TASK } from '../fixtures/pipelines.ts';

export const BATCH = 100;

export async function submit(url: string, one: number, batches: number, round: number): Promise<Record<string, number>> {
  const c = await connect(url);
  const rate = async (units: number, fn: () => Promise<unknown>, times: number) => {
    const start = performance.now();
    for (let i = 0; i < times; i++) await fn();
    return units / ((performance.now() - start) / 1000);
  };
  const runs: [string, () => Promise<number>][] = [
    ['submit_per_s', () => rate(one, () => c.query(`select job_id from ballast.submit_job('bench.noop3', '{}'::jsonb)`), one)],
    ['gw_add_job_per_s', () => rate(one, () => c.query(`select id from graphile_worker.add_job('${GW_TASK}', '{}'::json)`), one)],
    ['submit_batch_per_s', () => rate(batches * BATCH, () => c.query(
      `select count(*) from ballast.submit_jobs('bench.noop3', array_fill('{}'::jsonb, array[${BATCH}]))`), batches)],
    ['submit_insert_batch_per_s', () => rate(batches * BATCH, () => c.query(
      `insert into ballast.jobs (pipeline, input) select 'bench.noop3', '{}'::jsonb from generate_series(1, ${BATCH})`), batches)],
    ['gw_add_jobs_batch_per_s', () => rate(batches * BATCH, () => c.query(
      `select count(*) from graphile_worker.add_jobs(array(
         select row('${GW_TASK}', '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
           from generate_series(1, ${BATCH})))`), batches)],
  ];
  try {
    // Warm up the plans and caches of all five (a few calls each), then measure in a rotating order.
    for (const sql of [`select ballast.submit_job('bench.noop3', '{}'::jsonb) from generate_series(1, 20)`,
                       `insert into ballast.jobs (pipeline, input) select 'bench.noop3', '{}'::jsonb from generate_series(1, 20)`,
                       `select count(*) from ballast.submit_jobs('bench.noop3', array_fill('{}'::jsonb, array[20]))`,
                       `select graphile_worker.add_job('${GW_TASK}', '{}'::json) from generate_series(1, 20)`]) {
      await c.query(sql);
    }
    const out: Record<string, number> = {};
    for (let i = 0; i < runs.length; i++) {
      const [key, fn] = runs[(i + round) % runs.length]!;
      out[key] = await fn();
    }
    return out;
  } finally {
    await c.end();
  }
}
