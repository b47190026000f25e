// The verdict: medians across rounds of every raw figure, the issue's keys, and the Markdown table
// (figure, value, target, ratio to its reference, pass/miss).
import { median } from './stats.ts';

export type Round = Record<string, number>;

/** Per-round ratios (both sides measured in the same round), then medians of everything. */
export function summarize(rounds: Round[]): Record<string, number> {
  const withRatios = rounds.map((r) => ({
    ...r,
    ratio_steps_vs_gw: r.ballast_steps_per_s! / r.gw_jobs_per_s!,
    gw_vs_ceiling: r.gw_jobs_per_s! / r.ceiling_jobs_per_s!,
    ballast_vs_ceiling: r.ballast_steps_per_s! / r.ceiling_jobs_per_s!,
    history_flatness: r.history_steps_per_s! / r.ballast_steps_per_s!,
    ratio_steps_vs_gw_c50: r.ballast_steps_per_s_c50! / r.gw_jobs_per_s_c50!,
    submit_vs_add_job: r.submit_per_s! / r.gw_add_job_per_s!,
    ratio_submit_batch_vs_add_jobs: r.submit_batch_per_s! / r.gw_add_jobs_batch_per_s!,
    submit_insert_batch_vs_add_jobs: r.submit_insert_batch_per_s! / r.gw_add_jobs_batch_per_s!,
    map_items_flatness: r.map_items_per_s_large! / r.map_items_per_s_small!,
    wal_step_vs_job: r.wal_bytes_per_step! / r.wal_bytes_per_job!,
    ...Object.fromEntries([2, 4].filter((k) => r[`scaling_steps_per_s_w${k}`] !== undefined)
      .map((k) => [`scaling_w${k}_vs_w1`, r[`scaling_steps_per_s_w${k}`]! / r.scaling_steps_per_s_w1!])),
  }));
  const keys = [...new Set(withRatios.flatMap((r) => Object.keys(r)))];
  return Object.fromEntries(keys.map((k) => [k, median(withRatios.map((r) => (r as Record<string, number>)[k] ?? NaN))]));
}

interface Row {
  figure: string;
  key: string;
  unit: string;
  target?: { op: '>=' | '<='; value: number; text: string };
  /** Shown in the target column of a row without a target (default —). */
  noTarget?: string;
  /** key: a ratio figure; over: value ÷ that figure (with e2e: that figure ÷ over, the end-to-end measurement). */
  ratio?: { key?: string; over?: string; e2e?: string; label: string; text?: (s: Record<string, number>) => string };
  /** Left out of the table when the run did not measure it (a scenario off by default in quick mode). */
  optional?: boolean;
}

const NO_TARGET = 'none (recorded)';

function scalingRow(k: number): Row {
  return {
    figure: `Scaling: ${k} worker process${k > 1 ? 'es' : ''} × concurrency 10`, key: `scaling_steps_per_s_w${k}`, unit: 'steps/s',
    noTarget: NO_TARGET, optional: true,
    ratio: { label: '', text: (s) => `${k > 1 ? `${fmt(s[`scaling_w${k}_vs_w1`])} × 1 process; ` : ''}${fmt(s[`scaling_steps_per_s_per_core_w${k}`])} steps/s per core (÷ all cores); ` +
      `${fmt(s[`scaling_steps_per_pg_cpu_s_w${k}`])} steps per Postgres CPU-second (Postgres ${fmt(s[`scaling_pg_cores_w${k}`])} cores busy, workers ${fmt(s[`scaling_worker_cores_w${k}`])})` },
  };
}

const ROWS: Row[] = [
  { figure: 'Ceiling: raw SKIP LOCKED dequeue', key: 'ceiling_jobs_per_s', unit: 'jobs/s', ratio: { label: 'reference' } },
  { figure: 'Bare graphile-worker', key: 'gw_jobs_per_s', unit: 'jobs/s', ratio: { key: 'gw_vs_ceiling', label: '× ceiling' } },
  { figure: 'ballast 3-step pipeline', key: 'ballast_steps_per_s', unit: 'steps/s',
    target: { op: '>=', value: 0.6, text: '≥ 0.6 × graphile-worker' }, ratio: { key: 'ratio_steps_vs_gw', label: '× graphile-worker' } },
  { figure: 'ballast at concurrency 50', key: 'ballast_steps_per_s_c50', unit: 'steps/s', ratio: { key: 'ratio_steps_vs_gw_c50', label: '× graphile-worker at 50' } },
  { figure: 'Submit, one by one', key: 'submit_per_s', unit: 'jobs/s', ratio: { key: 'submit_vs_add_job', label: '× add_job' } },
  // Target 0.1 (aim 0.2): ballast writes a job, its steps and an audit event per job where add_jobs writes one row.
  { figure: 'Submit, batches of 100 (submit_jobs)', key: 'submit_batch_per_s', unit: 'jobs/s',
    target: { op: '>=', value: 0.1, text: '≥ 0.1 × add_jobs' }, ratio: { key: 'ratio_submit_batch_vs_add_jobs', label: '× add_jobs' } },
  { figure: 'Submit, multi-row INSERT INTO ballast.jobs of 100', key: 'submit_insert_batch_per_s', unit: 'jobs/s', ratio: { key: 'submit_insert_batch_vs_add_jobs', label: '× add_jobs' } },
  { figure: 'Pickup p50 (submit → first attempt, db clock)', key: 'pickup_p50_ms', unit: 'ms', target: { op: '<=', value: 4, text: '≤ 4 ms' }, ratio: { e2e: 'pickup_e2e_p50_ms', over: 'gw_pickup_p50_ms', label: '× graphile-worker' } },
  { figure: 'Pickup p95', key: 'pickup_p95_ms', unit: 'ms', ratio: { e2e: 'pickup_e2e_p95_ms', over: 'gw_pickup_p95_ms', label: '× graphile-worker' } },
  { figure: 'Pickup p99', key: 'pickup_p99_ms', unit: 'ms', target: { op: '<=', value: 12, text: '≤ 12 ms' }, ratio: { e2e: 'pickup_e2e_p99_ms', over: 'gw_pickup_p99_ms', label: '× graphile-worker' } },
  // The first job of a run (fresh connections: functions compiled, statements planned), not one of the samples above.
  { figure: 'Pickup of the first job (cold connections, end to end)', key: 'pickup_cold_e2e_ms', unit: 'ms', ratio: { over: 'gw_pickup_cold_e2e_ms', label: '× graphile-worker' } },
  { figure: 'Hand-off p99 (finished_at → next started_at)', key: 'handoff_p99_ms', unit: 'ms', target: { op: '<=', value: 12, text: '≤ 12 ms' }, ratio: { e2e: 'handoff_handler_p99_ms', over: 'gw_pickup_p99_ms', label: '× graphile-worker pickup' } },
  { figure: 'History flatness', key: 'history_flatness', unit: '', target: { op: '>=', value: 0.9, text: '≥ 0.9' }, ratio: { label: 'history ÷ empty' } },
  { figure: 'Worker peak RSS at concurrency 50', key: 'worker_rss_mb', unit: 'MB', target: { op: '<=', value: 150, text: '≤ 150 MB' }, ratio: { over: 'gw_rss_mb', label: '× bare graphile-worker' } },
  { figure: 'Recovery after SIGKILL', key: 'recovery_s', unit: 's', target: { op: '<=', value: 10, text: '≤ 10 s' } },
  { figure: 'Recovery after SIGKILL with a backlog', key: 'recovery_backlog_s', unit: 's', target: { op: '<=', value: 10, text: '≤ 10 s' },
    ratio: { label: '', text: (s) => `${fmt(s.recovery_backlog_queued_at_kill)} steps of other jobs queued at the kill, ${fmt(s.recovery_backlog_queued_at_reclaim)} at the reclaim` } },
  { figure: 'Map step flatness (10,000 ÷ 1,000 items)', key: 'map_items_flatness', unit: '', target: { op: '>=', value: 0.8, text: '≥ 0.8' },
    ratio: { label: '', text: (s) => `${fmt(s.map_items_per_s_large)} ÷ ${fmt(s.map_items_per_s_small)} items/s` } },
  { figure: 'WAL per step (3-step pipeline)', key: 'wal_bytes_per_step', unit: 'bytes', noTarget: NO_TARGET,
    ratio: { key: 'wal_step_vs_job', label: '', text: (s) => `${fmt(s.wal_step_vs_job)} × graphile-worker's ${fmt(s.wal_bytes_per_job)} bytes per job` } },
  scalingRow(1), scalingRow(2), scalingRow(4),
  // Subscriptions (bench/scenarios/subscriptions.ts): 1,000 tenantEvents subscribers of one tenant on one API process
  // while demo.wordstats jobs arrive at 5 jobs/s.
  { figure: 'Subscriptions: delivery p50, 1,000 tenantEvents subscribers, one API process', key: 'subs_1000_p50_ms', unit: 'ms',
    ratio: { label: '', text: (s) => `${fmt(s.subs_msgs_per_s)} messages/s delivered in all; load average ${fmt(s.subs_loadavg_start)} → ${fmt(s.subs_loadavg_end)}; ` +
      `API ${fmt(s.subs_api_cpu_cores)} cores busy, ${fmt(s.subs_api_cpu_ms_per_1k_msgs)} CPU-ms per 1,000 messages; ` +
      `load client ${fmt(s.subs_client_cpu_cores)} cores busy, event loop delay p99 ${fmt(s.subs_client_loop_delay_p99_ms)} ms, longest GC pause ${fmt(s.subs_client_gc_max_ms)} ms` } },
  { figure: 'Subscriptions: delivery p99', key: 'subs_1000_p99_ms', unit: 'ms', target: { op: '<=', value: 1000, text: '≤ 1,000 ms' },
    ratio: { label: '', text: (s) => `max ${fmt(s.subs_max_ms)} ms; ${fmt(s.subs_events_per_job)} events per job; ` +
      `${fmt(s.subs_missing)} messages never received counted as lower bounds` } },
  { figure: 'Subscriptions: HTTP p99 meanwhile ({ __typename } POST, GET /health)', key: 'subs_http_p99_ms', unit: 'ms', target: { op: '<=', value: 100, text: '≤ 100 ms' },
    ratio: { label: '', text: (s) => `POST p99 ${fmt(s.subs_http_graphql_p99_ms)} ms, /health p99 ${fmt(s.subs_health_p99_ms)} ms; ` +
      `the API's event loop delay p99 ${fmt(s.subs_api_loop_delay_p99_ms)} ms, max ${fmt(s.subs_api_loop_delay_max_ms)} ms; ` +
      `${fmt(s.subs_http_timeouts)} of ${fmt(s.subs_http_samples)} unanswered in 10 s` } },
  { figure: 'Subscriptions: API peak RSS', key: 'subs_rss_mb', unit: 'MB', target: { op: '<=', value: 300, text: '≤ 300 MB' },
    ratio: { label: '', text: (s) => `${fmt(s.subs_rss_after_mb)} MB 5 s after the clients left (${fmt(s.subs_rss_end_of_load_mb)} MB at the end of the load, ${fmt(s.subs_rss_ready_mb)} MB once started); ` +
      `live heap after a GC ${fmt(s.subs_heap_after_mb)} MB once they left, ${fmt(s.subs_heap_ready_mb)} MB once started` } },
  { figure: 'Subscriptions: events missing (summed over clients)', key: 'subs_missing', unit: '', target: { op: '<=', value: 0, text: '0' },
    ratio: { label: '', text: (s) => `${fmt(s.subs_expected_events)} events expected per client; ${fmt(s.subs_clients_incomplete)} clients incomplete, ` +
      `${fmt(s.subs_errors)} subscription errors, ${fmt(s.subs_connect_failed)} connections failed` } },
  { figure: 'Subscriptions: events duplicated', key: 'subs_duplicated', unit: '', target: { op: '<=', value: 0, text: '0' } },
  { figure: 'Subscriptions: events out of order', key: 'subs_out_of_order', unit: '', target: { op: '<=', value: 0, text: '0' },
    ratio: { label: '', text: (s) => `${fmt(s.subs_clients_differing)} clients' order differs from client 0's; ` +
      (s.subs_db_order ? `client 0 against the database's commit order: ${fmt(s.subs_client0_vs_db_out_of_order)}` : 'no txid/tx column: clients compared with each other only') } },
  { figure: 'Subscriptions: reconnect with after, events missing', key: 'subs_reconnect_missing', unit: '', target: { op: '<=', value: 0, text: '0' },
    ratio: { label: '', text: (s) => `${fmt(s.subs_reconnects)} clients left and resubscribed` } },
  { figure: 'Subscriptions: reconnect with after, events duplicated', key: 'subs_reconnect_duplicated', unit: '', target: { op: '<=', value: 0, text: '0' } },
  { figure: 'Subscriptions: reconnect with after, events out of order', key: 'subs_reconnect_out_of_order', unit: '', target: { op: '<=', value: 0, text: '0' } },
];

function fmt(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return 'n/a';
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

/** Verdict of every row with a target: true when met. */
export function verdicts(s: Record<string, number>): Record<string, boolean> {
  const out: Record<string, boolean> = {};
  for (const row of ROWS) {
    if (!row.target) continue;
    const v = row.target.op === '>=' && row.ratio?.key ? s[row.ratio.key] : s[row.key];
    out[row.key] = v !== undefined && Number.isFinite(v) && (row.target.op === '>=' ? v >= row.target.value : v <= row.target.value);
  }
  return out;
}

export function markdownTable(s: Record<string, number>): string {
  const pass = verdicts(s);
  const lines = ['| figure | value | target | ratio to its reference | verdict |', '|---|---|---|---|---|'];
  for (const row of ROWS) {
    if (row.optional && !Number.isFinite(s[row.key])) continue;
    const value = `${fmt(s[row.key])}${row.unit ? ' ' + row.unit : ''}`;
    let ratio = '';
    if (row.ratio?.text) ratio = row.ratio.text(s);
    else if (row.ratio?.key) ratio = `${fmt(s[row.ratio.key])} ${row.ratio.label}`;
    else if (row.ratio?.e2e && row.ratio.over) {
      const e2e = s[row.ratio.e2e]!;
      ratio = `end to end ${fmt(e2e)} ms = ${fmt(e2e / s[row.ratio.over]!)} ${row.ratio.label} (${fmt(s[row.ratio.over])} ms)`;
    } else if (row.ratio?.over) ratio = `${fmt(s[row.key]! / s[row.ratio.over]!)} ${row.ratio.label} (${fmt(s[row.ratio.over])} ${row.unit})`;
    else if (row.ratio) ratio = row.key === 'history_flatness' ? `${fmt(s.history_steps_per_s)} ÷ ${fmt(s.ballast_steps_per_s)} steps/s` : row.ratio.label;
    const verdict = row.target ? (pass[row.key] ? 'pass' : '**miss**') : '—';
    lines.push(`| ${row.figure} | ${value} | ${row.target?.text ?? row.noTarget ?? '—'} | ${ratio} | ${verdict} |`);
  }
  return lines.join('\n');
}

/** The Markdown report of a results object (bench/results/latest.json): header, verdict table, notes, profile. */
export function renderMarkdown(r: any): string {
  const m = r.machine;
  const lines = [
    `# ballast benchmark, ${r.mode} (${String(r.date).slice(0, 10)})`, '',
    `\`${r.command}\` · ${r.sizes.rounds} rounds, medians · concurrency ${r.sizes.concurrency} · ${m.cores} cores, ${m.memory_gb} GB · ` +
      `PostgreSQL ${m.postgres} (${m.server}; fsync ${r.settings.fsync}, synchronous_commit ${r.settings.synchronous_commit}) · ` +
      `Node ${m.node}` + (r.mode === 'quick' ? ` · history of ${r.sizes.history_jobs.toLocaleString('en-US')} jobs (quick mode)` : ''),
    '', markdownTable(r.summary), '', ...r.notes.slice(1).map((n: string) => `- ${n}`), '',
  ];
  if (r.profile) lines.push(...profileMarkdown(r.profile));
  return lines.join('\n');
}

const PER_UNIT: [string, string][] = [
  ['client_statements', 'statements sent by the clients (round trips)'],
  ['xacts', 'transactions (includes listeners woken by NOTIFY)'],
  ['nested_statements', 'statements run inside functions and triggers'],
  ['plannings', 'plannings (a cached plan not reused)'],
  ['planning_ms', 'planning time, ms'],
  ['client_statement_ms', 'statement time, ms (under load: includes waits)'],
  ['rows_inserted', 'rows inserted'],
  ['rows_updated', 'rows updated'],
  ['rows_deleted', 'rows deleted'],
  ['wal_bytes', 'WAL bytes'],
];

/** The profile pass: per step (ballast) and per job (bare graphile-worker), and the heaviest functions of a step. */
export function profileMarkdown(p: any): string[] {
  const b = p.ballast ?? {};
  const g = p.graphile_worker ?? {};
  const out = ['## Profile pass (statistics on; explains, is not the verdict)', '',
    '| per unit of work | ballast step | graphile-worker job | ratio |', '|---|---|---|---|'];
  for (const [k, label] of PER_UNIT) {
    const bv = b[`per_step_${k}`];
    const gv = g[`per_job_${k}`];
    if (bv === undefined && gv === undefined) continue;
    out.push(`| ${label} | ${fmt(bv)} | ${fmt(gv)} | ${gv >= 0.01 ? fmt(bv / gv) + '×' : '—'} |`);
  }
  if (b.steps_per_batch) {
    out.push('', `A batch (one \`ballast.settle_and_claim\` round trip of the worker) carried ${fmt(b.steps_per_batch)} steps on average; ` +
      'multiply the per-step figures below by that for the cost of one batch.');
  }
  out.push('', '| SQL function (per step) | calls | self ms | total ms |', '|---|---|---|---|');
  for (const f of (b.functions ?? []).slice(0, 10)) {
    out.push(`| ${f.name} | ${fmt(f.calls_per_unit)} | ${f.self_ms_per_unit.toFixed(3)} | ${f.total_ms_per_unit.toFixed(3)} |`);
  }
  if (b.backends_by_wait) {
    const waits = Object.entries(b.backends_by_wait as Record<string, number>).filter(([, n]) => n >= 0.05);
    out.push('', `Backends of the ballast run by state (average of pg_stat_activity samples): ${
      waits.map(([k, n]) => `${k} ${fmt(n)}`).join(', ')} (Lock:object is the lock that serialises the commits of transactions that NOTIFY).`);
  }
  const w4 = p.ballast_w4;
  if (w4?.backends_by_wait) {
    const waits = Object.entries(w4.backends_by_wait as Record<string, number>).filter(([, n]) => n >= 0.05);
    out.push('', `With 4 worker processes: ${fmt(w4.steps_per_s)} steps/s, Postgres ${fmt(w4.pg_cores)} cores busy, workers ${fmt(w4.worker_cores)}; backends by state: ${
      waits.map(([k, n]) => `${k} ${fmt(n)}`).join(', ')}.` + (w4.steps_per_batch ? ` With statistics on: ${fmt(w4.steps_per_batch)} steps per batch, ` +
      `${fmt(w4.per_step_client_statement_ms)} ms of statement time, ${fmt(w4.per_step_xacts)} transactions and ${fmt(w4.per_step_nested_statements)} nested statements per step.` : ''));
  }
  const variants = Object.entries(p).filter(([k]) => k.startsWith('c50_')) as [string, any][];
  if (variants.length) {
    out.push('', '| ballast at concurrency 50 | steps/s | RSS once started, MB | peak RSS, MB |', '|---|---|---|---|');
    for (const [k, v] of variants) out.push(`| ${k.slice(4)} | ${fmt(v.steps_per_s)} | ${fmt(v.ready_rss_mb)} | ${fmt(v.peak_rss_mb)} |`);
  }
  out.push('');
  return out;
}
