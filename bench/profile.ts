// The profile pass (after the timed rounds; its figures explain, they are not the verdict): one ballast throughput
// run and one bare graphile-worker run with statement and function statistics on, to count what one step (one
// job) costs: transactions (autocommit round trips), rows written, WAL bytes, statements sent by the clients
// (pg_stat_statements toplevel), statements run inside functions and triggers (nested), and time per SQL function
// (track_functions), plannings (track_planning). Then, without statistics and at concurrency 50, the ballast run as
// deployed (the `ballast` command's node flags, src/node-flags.ts), with LOG_LEVEL=warn (the price of logging), and
// without the node flags (V8's own heap sizing): how much of the peak RSS is V8 sizing its heap to the machine rather
// than memory the worker needs.
import { connect, counters, perUnit, statsSettle, type BenchServer, type Counters } from './database.ts';
import { addGwJobs, runBallast, runGw, submitBallastJobs, type RunOptions } from './scenarios/throughput.ts';

export interface StatementCost {
  query: string;
  toplevel: boolean;
  calls_per_unit: number;
  /** Plannings per unit: equal to calls when the cached plan is not reused (a custom plan every time). */
  plans_per_unit: number;
  plan_ms_per_unit: number;
  ms_per_unit: number;
}

async function prepare(server: BenchServer, name: string, statements: boolean): Promise<string> {
  const url = await server.clone(name);
  const db = `${server.template}_${name}`;
  await server.query(`alter database ${db} set track_functions = 'all'`);
  if (statements) {
    await server.query(`alter database ${db} set pg_stat_statements.track = 'all'`);
    await server.query(`alter database ${db} set pg_stat_statements.track_planning = on`);
    const c = await connect(url);
    await c.query('create extension if not exists pg_stat_statements');
    await c.end();
  }
  return url;
}

async function collect(url: string, units: number, statements: boolean, before: Counters, prefix: string) {
  await statsSettle();
  const c = await connect(url);
  try {
    const after = await counters(c);
    const { rows: fns } = await c.query<{ name: string; calls: string; self_ms: number; total_ms: number }>(
      `select schemaname || '.' || funcname as name, calls, self_time as self_ms, total_time as total_ms
         from pg_stat_user_functions order by self_time desc`);
    const functions = fns.map((f) => ({
      name: f.name, calls_per_unit: Number(f.calls) / units, self_ms_per_unit: f.self_ms / units,
      total_ms_per_unit: f.total_ms / units,
    }));
    let statementsOut: StatementCost[] = [];
    if (statements) {
      const { rows } = await c.query<{ query: string; toplevel: boolean; calls: string; plans: string; plan_ms: number; ms: number }>(
        `select regexp_replace(query, '\\s+', ' ', 'g') as query, toplevel, calls, plans, total_plan_time as plan_ms,
                total_exec_time as ms
           from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
          order by total_exec_time + total_plan_time desc`);
      statementsOut = rows.map((r) => ({
        query: r.query.slice(0, 160), toplevel: r.toplevel, calls_per_unit: Number(r.calls) / units,
        plans_per_unit: Number(r.plans) / units, plan_ms_per_unit: r.plan_ms / units, ms_per_unit: r.ms / units,
      }));
    }
    const top = statementsOut.filter((s) => s.toplevel);
    const nested = statementsOut.filter((s) => !s.toplevel);
    const sum = (xs: StatementCost[], k: 'calls_per_unit' | 'ms_per_unit' | 'plans_per_unit' | 'plan_ms_per_unit') =>
      xs.reduce((a, s) => a + s[k], 0);
    return {
      ...perUnit(before, after, units, prefix),
      [`${prefix}_client_statements`]: sum(top, 'calls_per_unit'),
      [`${prefix}_nested_statements`]: sum(nested, 'calls_per_unit'),
      [`${prefix}_client_statement_ms`]: sum(top, 'ms_per_unit'),
      [`${prefix}_plannings`]: sum(statementsOut, 'plans_per_unit'),
      [`${prefix}_planning_ms`]: sum(statementsOut, 'plan_ms_per_unit'),
      functions,
      statements: statementsOut.slice(0, 40),
    };
  } finally {
    await c.end();
  }
}

export async function profile(server: BenchServer, jobs: number, gwJobs: number, concurrency: number,
                              log: (msg: string) => void): Promise<Record<string, unknown>> {
  const [preload] = await server.query<{ on: boolean }>(
    `select current_setting('shared_preload_libraries') like '%pg_stat_statements%' as on`);
  const statements = preload?.on === true;
  if (!statements) log('profile: pg_stat_statements is not loaded on this server; statement counts are left out');
  const out: Record<string, unknown> = { pg_stat_statements: statements };

  let url = await prepare(server, 'profile_ballast', statements);
  let after = await submitBallastJobs(url, jobs);
  let c = await connect(url);
  await statsSettle();
  if (statements) await c.query('select pg_stat_statements_reset()');
  await c.query('select pg_stat_reset()');
  let before = await counters(c);
  await c.end();
  const b = await runBallast(url, concurrency, after, 'profile-ballast');
  const costs = await collect(url, b.steps, statements, before, 'per_step');
  // A batch is one ballast.settle_and_claim call (the worker's one round trip: outcomes recorded, next steps claimed).
  const batchCalls = costs.functions.find((f) => f.name === 'ballast.settle_and_claim')?.calls_per_unit;
  out.ballast = {
    steps: b.steps, steps_per_s_with_statistics: b.stepsPerS,
    ...(batchCalls ? { steps_per_batch: 1 / batchCalls } : {}),
    ...costs,
  };
  await server.drop('profile_ballast');

  // What the backends wait for, sampled from pg_stat_activity in a run without statistics (they slow every statement).
  url = await server.clone('profile_waits');
  after = await submitBallastJobs(url, jobs);
  const w = await runBallast(url, concurrency, after, 'profile-waits', { waits: true });
  (out.ballast as Record<string, unknown>).backends_by_wait = w.waits;
  await server.drop('profile_waits');
  // The same with 4 worker processes on the one server (scaling): what the extra backends wait for, and (statistics
  // on) what a step costs then.
  url = await server.clone('profile_waits_w4');
  after = await submitBallastJobs(url, jobs);
  const w4 = await runBallast(url, concurrency, after, 'profile-waits-w4', { waits: true, workers: 4, cpu: true });
  await server.drop('profile_waits_w4');
  url = await prepare(server, 'profile_w4', statements);
  after = await submitBallastJobs(url, jobs);
  c = await connect(url);
  await statsSettle();
  if (statements) await c.query('select pg_stat_statements_reset()');
  await c.query('select pg_stat_reset()');
  before = await counters(c);
  await c.end();
  const s4 = await runBallast(url, concurrency, after, 'profile-w4', { workers: 4 });
  const costs4 = await collect(url, s4.steps, statements, before, 'per_step');
  await server.drop('profile_w4');
  const batchCalls4 = costs4.functions.find((f) => f.name === 'ballast.settle_and_claim')?.calls_per_unit;
  out.ballast_w4 = {
    steps_per_s: w4.stepsPerS, backends_by_wait: w4.waits,
    pg_cores: w4.serverCpuS! / w4.cpuWallS!, worker_cores: w4.workerCpuS! / w4.cpuWallS!,
    steps_per_s_with_statistics: s4.stepsPerS,
    ...(batchCalls4 ? { steps_per_batch: 1 / batchCalls4 } : {}),
    ...Object.fromEntries(Object.entries(costs4).filter(([k]) => k.startsWith('per_step_'))),
    functions: costs4.functions.slice(0, 10),
  };

  url = await prepare(server, 'profile_gw', statements);
  await addGwJobs(url, gwJobs);
  c = await connect(url);
  await statsSettle();
  if (statements) await c.query('select pg_stat_statements_reset()');
  await c.query('select pg_stat_reset()');
  before = await counters(c);
  await c.end();
  const g = await runGw(url, concurrency, gwJobs, 'profile-gw');
  out.graphile_worker = { jobs: gwJobs, jobs_per_s_with_statistics: g.perS, ...(await collect(url, gwJobs, statements, before, 'per_job')) };
  await server.drop('profile_gw');

  // The worker's logging (2 info lines per step) and V8's heap sizing (without the flags: young generation up to
  // 2 x 64 MB, old generation left to fill with garbage), back to back at concurrency 50.
  const variants: [string, RunOptions][] = [
    ['as_deployed', {}],
    ['log_warn', { env: { LOG_LEVEL: 'warn' } }],
    ['no_node_flags', { nodeFlags: [] }],
  ];
  for (const [name, options] of variants) {
    url = await server.clone(`profile_${name}`);
    after = await submitBallastJobs(url, jobs);
    const r = await runBallast(url, 50, after, `profile-c50-${name}`, options);
    out[`c50_${name}`] = { steps_per_s: r.stepsPerS, ready_rss_mb: r.readyRssMb, peak_rss_mb: r.peakRssMb };
    await server.drop(`profile_${name}`);
  }
  return out;
}
