// `npm run bench` (full) and `npm run bench -- --quick` (under 2 minutes on 2 cores): ballast's overhead against bare
// graphile-worker and a raw SKIP LOCKED loop, measured side by side on one Postgres. Every scenario runs once per
// round, in an order that rotates from round to round; the verdict is the median across rounds (ratios are taken
// within a round first). Writes bench/results/latest.json (raw figures, machine, settings) and latest.md (the table).
// Options: --quick, --rounds N, --history N (finished jobs of the history scenario), --memory-jobs N (jobs of the
// memory scenario: a longer run shows whether the peak RSS still grows), --only a,b (scenarios, for development),
// --subs-rate N (jobs/s of the subscriptions scenario, default 5), --profile / --no-profile (the statistics pass; on by default in full mode), --template-sql FILE (SQL run on the
// template after migrating: try a schema change side by side; recorded in the results), --scaling / --no-scaling
// (throughput with 1, 2 and 4 worker processes; on by default in full mode).
// The subscriptions scenario (--only subscriptions) runs 1,000 GraphQL tenantEvents subscribers against one API
// process while demo jobs are submitted (bench/scenarios/subscriptions.ts); when it fails outright (an API that does
// not start, a client that stops answering), the round records subs_failed and its figures show as misses.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { openServer, machine, settings, type BenchServer } from './database.ts';
import { ceiling } from './scenarios/ceiling.ts';
import { addGwJobs, runBallast, runGw, submitBallastJobs } from './scenarios/throughput.ts';
import { submit, BATCH } from './scenarios/submit.ts';
import { ballastPickup, gwPickup } from './scenarios/pickup.ts';
import { generateHistory, historySize } from './scenarios/history.ts';
import { recovery } from './scenarios/recovery.ts';
import { mapRun } from './scenarios/map.ts';
import { subscriptions } from './scenarios/subscriptions.ts';
import { profile } from './profile.ts';
import { WORKER_NODE_FLAGS } from '../src/node-flags.ts';
import { renderMarkdown, summarize, verdicts, type Round } from './report.ts';

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    history: { type: 'string' },
    'memory-jobs': { type: 'string' },
    'subs-rate': { type: 'string' },
    only: { type: 'string' },
    profile: { type: 'boolean' },
    'no-profile': { type: 'boolean' },
    'template-sql': { type: 'string' },
    scaling: { type: 'boolean' },
    'no-scaling': { type: 'boolean' },
  },
});
const quick = args.quick === true;
const CONCURRENCY = 10;
const sizes = {
  rounds: Number(args.rounds ?? (quick ? 3 : 5)),
  concurrency: CONCURRENCY,
  memory_concurrency: 50,
  ceiling_jobs: quick ? 5000 : 30_000,
  gw_jobs: quick ? 5000 : 30_000,
  ballast_jobs: quick ? 400 : 2000,
  submit_one_by_one: quick ? 300 : 2000,
  submit_batches: quick ? 5 : 30,
  submit_batch_size: BATCH,
  pickup_samples: quick ? 50 : 300,
  memory_jobs: Number(args['memory-jobs'] ?? (quick ? 400 : 1500)),
  history_jobs: Number(args.history ?? (quick ? 100_000 : 1_000_000)),
  map_small: 1000,
  map_large: 10_000,
  recovery_backlog: 1000,
  scaling_workers: [1, 2, 4],
  scaling_jobs: quick ? 1000 : 2000,
  subs_clients: 1000,
  subs_reconnect_clients: 20,
  subs_jobs: quick ? 60 : 200,
  subs_jobs_per_s: Number(args['subs-rate'] ?? 5),
};
const doScaling = args['no-scaling'] ? false : (args.scaling ?? !quick);
const doProfile = args['no-profile'] ? false : (args.profile ?? !quick);
const log = (msg: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

type Scenario = { name: string; run: (round: number) => Promise<Round> };

/** Rounds in which the subscriptions scenario failed outright, with the error (in the results' notes). */
const subsFailures: string[] = [];

function scenarios(server: BenchServer, historyUrl: string): Scenario[] {
  // Each run gets its own clone of the template, dropped right after.
  const fresh = async <T>(name: string, round: number, fn: (url: string, label: string) => Promise<T>): Promise<T> => {
    const label = `r${round}_${name}`;
    const url = await server.clone(label);
    try {
      return await fn(url, label);
    } finally {
      await server.drop(label);
    }
  };
  return [
    { name: 'ceiling', run: (r) => fresh('ceiling', r, (url) => ceiling(url, sizes.ceiling_jobs, CONCURRENCY)) },
    { name: 'graphile-worker', run: (r) => fresh('gw', r, async (url, label) => {
      await addGwJobs(url, sizes.gw_jobs);
      const g = await runGw(url, CONCURRENCY, sizes.gw_jobs, label);
      return { gw_jobs_per_s: g.perS, gw_rss_mb_c10: g.peakRssMb, wal_bytes_per_job: g.walBytes / g.jobs };
    }) },
    { name: 'ballast', run: (r) => fresh('ballast', r, async (url, label) => {
      const after = await submitBallastJobs(url, sizes.ballast_jobs);
      const b = await runBallast(url, CONCURRENCY, after, label);
      return { ballast_steps_per_s: b.stepsPerS, ballast_rss_mb_c10: b.peakRssMb, wal_bytes_per_step: b.walBytes / b.steps };
    }) },
    { name: 'history', run: async (r) => {
      const after = await submitBallastJobs(historyUrl, sizes.ballast_jobs);
      const b = await runBallast(historyUrl, CONCURRENCY, after, `r${r}_history`, { scans: true });
      // Rows read by sequential scans per step: over the tables that hold the history (must stay ~0), and per table.
      const scans = b.seqRowsPerStep!;
      const history = ['jobs', 'steps', 'attempts', 'events', 'effects'].reduce((a, t) => a + (scans[t] ?? 0), 0);
      return {
        history_steps_per_s: b.stepsPerS, history_seq_rows_per_step: history,
        ...Object.fromEntries(Object.entries(scans).filter(([, n]) => n > 0).map(([t, n]) => [`history_seq_rows_per_step_${t}`, n])),
      };
    } },
    { name: 'submit', run: (r) => fresh('submit', r, (url) => submit(url, sizes.submit_one_by_one, sizes.submit_batches, r)) },
    { name: 'pickup', run: async (r) => ({
      ...(await fresh('pickup', r, (url, label) => ballastPickup(url, sizes.pickup_samples, label))),
      ...(await fresh('gw_pickup', r, (url, label) => gwPickup(url, sizes.pickup_samples, label))),
    }) },
    { name: 'memory', run: async (r) => {
      const b = await fresh('memory', r, async (url, label) =>
        runBallast(url, sizes.memory_concurrency, await submitBallastJobs(url, sizes.memory_jobs), label));
      const g = await fresh('gw_memory', r, async (url, label) => {
        await addGwJobs(url, sizes.memory_jobs * 3);
        return runGw(url, sizes.memory_concurrency, sizes.memory_jobs * 3, label);
      });
      return {
        worker_rss_mb: b.peakRssMb, worker_ready_rss_mb: b.readyRssMb, ballast_steps_per_s_c50: b.stepsPerS,
        gw_rss_mb: g.peakRssMb, gw_ready_rss_mb: g.readyRssMb, gw_jobs_per_s_c50: g.perS,
      };
    } },
    { name: 'recovery', run: (r) => fresh('recovery', r, (url, label) => recovery(url, label)) },
    { name: 'recovery_backlog', run: (r) => fresh('recovery_backlog', r, (url, label) => recovery(url, label, sizes.recovery_backlog)) },
    { name: 'map', run: async (r) => {
      // Both sizes on fresh clones, the order alternating by round.
      const out: Round = {};
      const order = r % 2 === 0 ? [sizes.map_small, sizes.map_large] : [sizes.map_large, sizes.map_small];
      for (const n of order) {
        const m = await fresh(`map_${n}`, r, (url, label) => mapRun(url, n, label));
        out[n === sizes.map_small ? 'map_items_per_s_small' : 'map_items_per_s_large'] = m.itemsPerS;
      }
      return out;
    } },
    { name: 'subscriptions', run: (r) => fresh('subs', r, async (url, label) => {
      const loadStart = loadavg()[0]!;
      try {
        return await subscriptions(url, label, {
          clients: sizes.subs_clients, reconnectClients: sizes.subs_reconnect_clients, jobs: sizes.subs_jobs,
          rate: sizes.subs_jobs_per_s, concurrency: CONCURRENCY,
        }, log);
      } catch (err) {
        // The API is the subject here, not the harness: a server that cannot take the load is a miss, not a crash.
        log(`subscriptions failed in round ${r + 1}: ${(err as Error).stack ?? String(err)}`);
        subsFailures.push(`round ${r + 1}: ${(err as Error).message ?? String(err)}`.slice(0, 500));
        return { subs_failed: 1, subs_loadavg_start: loadStart, subs_loadavg_end: loadavg()[0]! };
      }
    }) },
    ...(doScaling ? [{ name: 'scaling', run: async (r: number) => {
      // 1, 2 and 4 worker processes (concurrency 10 each) on the same jobs, each on a fresh clone, order rotating.
      const out: Round = {};
      const ks = sizes.scaling_workers;
      for (const k of [...ks.slice(r % ks.length), ...ks.slice(0, r % ks.length)]) {
        const b = await fresh(`scaling_w${k}`, r, async (url, label) =>
          runBallast(url, CONCURRENCY, await submitBallastJobs(url, sizes.scaling_jobs), label, { workers: k, cpu: true }));
        out[`scaling_steps_per_s_w${k}`] = b.stepsPerS;
        out[`scaling_steps_per_s_per_core_w${k}`] = b.stepsPerS / cpus().length;
        out[`scaling_pg_cores_w${k}`] = b.serverCpuS! / b.cpuWallS!;
        out[`scaling_steps_per_pg_cpu_s_w${k}`] = b.steps / b.serverCpuS!;
        out[`scaling_worker_cores_w${k}`] = b.workerCpuS! / b.cpuWallS!;
      }
      return out;
    } }] : []),
  ];
}

async function main(): Promise<void> {
  const began = Date.now();
  const templateSql = args['template-sql'] ? readFileSync(args['template-sql'], 'utf8') : undefined;
  if (templateSql) log(`applying ${args['template-sql']} to the template (an experiment: say so when you quote the figures)`);
  const server = await openServer(log, templateSql);
  let closing = false;
  const close = async () => {
    if (closing) return;
    closing = true;
    await server.close();
  };
  process.once('SIGINT', () => void close().finally(() => process.exit(130)));
  try {
    const only = args.only?.split(',');
    const wanted = (name: string) => !only || only.includes(name);
    let historyUrl = '';
    const record: Record<string, unknown> = {};
    if (wanted('history')) {
      log(`history: generating ${sizes.history_jobs.toLocaleString('en-US')} finished jobs${quick ? ' (quick mode: a smaller history than the full 1,000,000)' : ''}`);
      historyUrl = await server.clone('history');
      await generateHistory(historyUrl, sizes.history_jobs, log);
      Object.assign(record, await historySize(historyUrl));
    }
    const list = scenarios(server, historyUrl).filter((s) => wanted(s.name));
    const rounds: { round: number; order: string[]; seconds: Record<string, number>; load: number; figures: Round }[] = [];
    for (let r = 0; r < sizes.rounds; r++) {
      const order = [...list.slice(r % list.length), ...list.slice(0, r % list.length)];
      const figures: Round = {};
      const seconds: Record<string, number> = {};
      for (const s of order) {
        const t = Date.now();
        Object.assign(figures, await s.run(r));
        seconds[s.name] = (Date.now() - t) / 1000;
        log(`round ${r + 1}/${sizes.rounds} ${s.name} (${seconds[s.name]!.toFixed(1)} s)`);
      }
      // The machine's 1-minute load average after the round: above the core count, other work competed with the bench.
      rounds.push({ round: r + 1, order: order.map((s) => s.name), seconds, load: loadavg()[0]!, figures });
    }
    const summary = summarize(rounds.map((r) => r.figures));
    const prof = doProfile ? (log('profile pass (statistics on; not part of the verdict)'), await profile(server, sizes.ballast_jobs, sizes.gw_jobs, CONCURRENCY, log)) : undefined;

    const date = new Date().toISOString();
    const command = `npm run bench${quick ? ' -- --quick' : ''}`;
    const keys = ['ceiling_jobs_per_s', 'gw_jobs_per_s', 'ballast_steps_per_s', 'ratio_steps_vs_gw', 'submit_per_s',
      'submit_batch_per_s', 'ratio_submit_batch_vs_add_jobs',
      'pickup_p50_ms', 'pickup_p99_ms', 'handoff_p99_ms', 'history_flatness', 'worker_rss_mb', 'recovery_s',
      'recovery_backlog_s', 'map_items_flatness', 'map_items_per_s_small', 'map_items_per_s_large',
      'wal_bytes_per_step', 'wal_bytes_per_job',
      'subs_1000_p50_ms', 'subs_1000_p99_ms', 'subs_msgs_per_s', 'subs_http_p99_ms', 'subs_rss_mb', 'subs_rss_after_mb', 'subs_heap_ready_mb', 'subs_heap_after_mb',
      'subs_missing', 'subs_duplicated', 'subs_out_of_order', 'subs_reconnect_missing', 'subs_reconnect_duplicated',
      'subs_reconnect_out_of_order', 'subs_loadavg_start', 'subs_loadavg_end',
      ...sizes.scaling_workers.flatMap((k) => doScaling ? [`scaling_steps_per_s_w${k}`, `scaling_steps_per_pg_cpu_s_w${k}`] : [])];
    const result = {
      date, command, mode: quick ? 'quick' : 'full', duration_s: Math.round((Date.now() - began) / 1000),
      ...Object.fromEntries(keys.map((k) => [k, summary[k] ?? null])),
      verdict: verdicts(summary),
      machine: await machine(server),
      settings: await settings(server),
      sizes, ...record,
      template_sql: args['template-sql'] ?? null,
      worker_node_flags: WORKER_NODE_FLAGS,
      load_average_per_round: rounds.map((r) => Math.round(r.load * 100) / 100),
      notes: [
        'Every figure is the median across rounds; ratios are taken within each round first.',
        quick ? `Quick mode: history of ${sizes.history_jobs.toLocaleString('en-US')} finished jobs instead of 1,000,000, and fewer jobs per run. ` +
          `Its memory run is short (${sizes.memory_jobs * 3} steps) and the peak RSS still grows a little over the first few thousand steps, so the full run ` +
          `is the reference for worker_rss_mb; its p99s come from ${sizes.pickup_samples} samples per round. ` +
          `The map scenario uses the full sizes (${sizes.map_small.toLocaleString('en-US')} and ${sizes.map_large.toLocaleString('en-US')} items); ` +
          `the scaling scenario is left out unless --scaling is given.` : undefined,
        `Worker children (ballast and bare graphile-worker alike) run with the node flags of the deployed \`ballast\` command: ${WORKER_NODE_FLAGS.join(' ') || '(none)'}.`,
        'Pickup and hand-off: database clock (submit_job start -> first attempt started_at; finished_at -> next attempt started_at). pickup_e2e_*: submit statement sent -> first handler start (CLOCK_MONOTONIC in both processes), the way bare graphile-worker is measured.',
        `Map flatness: items/s of one map step (no-op items, one worker at concurrency 10) at ${sizes.map_large.toLocaleString('en-US')} items ÷ at ${sizes.map_small.toLocaleString('en-US')}, database clock from the listing attempt's finished_at to the map step's finished_at.`,
        'WAL: pg_wal_lsn_diff of pg_current_wal_lsn() from before the worker child starts to its last unit done, ÷ steps (ballast throughput run) or jobs (bare graphile-worker run). Recorded, no target. ' +
          'The server\'s full_page_writes setting (in settings) changes it: off on the embedded server.',
        `Recovery with a backlog: as recovery_s, with ${sizes.recovery_backlog.toLocaleString('en-US')} bench.busy jobs (one 100 ms step each) submitted just before the kill; the queued steps at the kill and at the reclaim are recorded (recovery_backlog_queued_at_*).`,
        doScaling ? `Scaling: ${sizes.scaling_jobs.toLocaleString('en-US')} bench.noop3 jobs run by ${sizes.scaling_workers.join(', ')} worker children at concurrency 10 each; steps/s on the database clock. ` +
          'Postgres CPU: the CPU time of the server\'s processes (the postmaster, its live children and its exited children, from /proc) over the run; ' +
          'scaling_steps_per_pg_cpu_s_w* = steps ÷ those CPU seconds (steps/s per fully busy Postgres core), scaling_pg_cores_w* = CPU seconds ÷ wall seconds, scaling_worker_cores_w* the same for the worker children.' : undefined,
        wanted('subscriptions') ? `Subscriptions: ${sizes.subs_clients.toLocaleString('en-US')} graphql-ws clients (one load-client process) subscribed to tenantEvents of one tenant on one API process ` +
          `(its own process, NODE_ENV=production, the deployed node flags), ${sizes.subs_jobs} demo.wordstats jobs (4 steps) submitted at ${sizes.subs_jobs_per_s} jobs/s, one worker at concurrency ${CONCURRENCY}. ` +
          'Latency of a message: received by the client (wall clock) − the event\'s `at` (the database\'s clock_timestamp() when the event row was written, same machine); p50/p99 over every message of every client, a message never received counting with its latency when the wait for the last ones (at most 30 s after the last job finished) ended, a lower bound. ' +
          'HTTP: `{ __typename }` POSTs and GET /health every 100 ms from the load client while the messages flow, an unanswered probe counting 10,000 ms. ' +
          'RSS: the API\'s VmHWM (the peak of the whole run, disconnections included), and its VmRSS 5 s after every client disconnected. ' +
          'Missing/duplicated: each client\'s eventIds against the events ballast.events holds for the run\'s jobs (summed over clients); out of order: events a client received after one that comes later in the reference order ' +
          '(client 0\'s order for the others; for client 0 the database\'s (txid, id) order when ballast_private.events records the writing transaction (a txid or tx column): subs_db_order = 1). ' +
          `Reconnect: ${sizes.subs_reconnect_clients} more clients each leave once during the load and resubscribe 500 ms later with after: <the last eventId they received>; their whole sequence is checked the same way. ` +
          'Everything shares the machine: subs_client_cpu_cores, subs_client_loop_delay_p99_ms and subs_client_gc_max_ms say how busy the load client was (a busy client inflates the latencies), ' +
          'subs_api_cpu_cores how busy the API was, and subs_api_cpu_ms_per_1k_msgs what 1,000 delivered messages cost the API in CPU time (less sensitive to other load than the latencies).' : undefined,
        subsFailures.length ? `The subscriptions scenario failed outright (figures missing): ${subsFailures.join('; ')}` : undefined,
        Math.max(...rounds.map((r) => r.load)) > cpus().length ? `The load average exceeded the core count (${rounds.map((r) => r.load.toFixed(1)).join(', ')}): other processes competed with the benchmark; absolute figures are noisy, ratios less so.` : undefined,
        args['template-sql'] ? `Experiment: ${args['template-sql']} was applied to the template.` : undefined,
      ].filter(Boolean),
      subs_failures: subsFailures,
      summary, rounds, profile: prof,
    };
    const dir = fileURLToPath(new URL('./results/', import.meta.url));
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}latest.json`, JSON.stringify(result, null, 2) + '\n');
    const md = renderMarkdown(result);
    writeFileSync(`${dir}latest.md`, md);
    console.log(md);
    log(`wrote bench/results/latest.json and latest.md in ${result.duration_s} s`);
  } finally {
    await close();
  }
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
