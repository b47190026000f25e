// Subscriptions: 1,000 GraphQL `tenantEvents` subscribers of one tenant on ONE API process, while jobs of the 4-step
// demo pipeline (tasks/demo.ts, demo.wordstats) are submitted for that tenant at a steady rate. Three children, each
// in a process of its own: the API (bench/fixtures/api-server.ts: its RSS is its own, and the clients do not share
// its event loop), a ballast worker running the demo pipeline, and the load client (bench/scenarios/subs-client.ts:
// the graphql-ws clients and an HTTP probe). The sequence:
//   1. every client connects (100 at a time) and subscribes with after: null;
//   2. warm-up jobs, one a second, until every client has received an event (graphql-ws has no "subscribed"
//      acknowledgement; an event proves the subscription is registered with the server's hub);
//   3. the load: `jobs` jobs at `rate` jobs/s (a fixed schedule, one submit_job each, as the database owner); meanwhile
//      the probe POSTs `{ __typename }` and GETs /health every 100 ms, and the reconnect clients each leave once and
//      come back 500 ms later with after: <the last eventId they received>;
//   4. once every job is final, the events the database holds for them (ballast.events of the tenant's jobs, with an
//      id, other than step_progress) are what every client must have received, once each, in one order: the load
//      client waits until every client has that many, or 30 s, then counts.
// Figures (see the load client for how latency is measured): delivery p50/p99 over every message of the steady
// clients, messages/s delivered, HTTP p99 (10 s for an unanswered probe), the API's peak RSS (VmHWM, read last: the
// peak of the whole run, the disconnections included) and its RSS 5 s after every client left, the correctness counters, and the load average at the start
// and end of the scenario (the machine may be shared).
import { WORKER_NODE_FLAGS } from '../../src/node-flags.ts';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import type pg from 'pg';
import { connect } from '../database.ts';
import { spawnChild, spawnWorker, type WorkerChild } from '../children.ts';
import { mintToken } from '../../src/server/auth.ts';
import type { Round } from '../report.ts';

export interface SubscriptionSizes {
  /** Steady subscribers (the figures' 1,000). */
  clients: number;
  /** Subscribers that leave mid-run and resubscribe with `after`. */
  reconnectClients: number;
  jobs: number;
  /** Jobs submitted per second. */
  rate: number;
  /** Worker concurrency. */
  concurrency: number;
}

export const SUBS_TENANT = 'bench-subs';
const PIPELINE = 'demo.wordstats';
const FINAL = `('completed', 'partially_completed', 'failed', 'cancelled')`;
/** How long the load client waits for the last messages once every job is final. */
const DRAIN_MS = 30_000;
/** How long after the clients left the API's RSS is read again. */
const SETTLE_MS = 5_000;

const TEXT = 'The quick brown fox jumps over the lazy dog while the cat sat on the mat and watched the dog sleep; '
  + 'the fox ran on, and the dog woke up to see the cat, the mat and the morning sun.';

/** VmHWM and VmRSS of another process of this machine, MB. */
function procMemoryMb(pid: number): { peakRssMb: number; rssMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { peakRssMb: kb('VmHWM') / 1024, rssMb: kb('VmRSS') / 1024 };
}

/** CPU seconds (user + system) a process of this machine has used so far, from /proc/<pid>/stat (100 ticks a second). */
function procCpuS(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Sends `msg` to a child and waits for its reply of type `reply`. */
async function ask<T = Record<string, unknown>>(child: WorkerChild, msg: Record<string, unknown>, reply: string, timeoutMs: number): Promise<T> {
  const answer = child.next<T>(reply, timeoutMs);
  child.child.send(msg);
  return answer;
}

async function submit(c: pg.Client, n: number): Promise<number> {
  const { rows } = await c.query<{ job_id: string }>(
    `select job_id from ballast.submit_job($1, $2::jsonb, p_tenant_id => $3)`, [PIPELINE, JSON.stringify({ text: `${TEXT} ${n}` }), SUBS_TENANT]);
  return Number(rows[0]!.job_id);
}

async function liveJobs(c: pg.Client, afterJobId: number): Promise<number> {
  const { rows } = await c.query<{ n: string }>(
    `select count(*) as n from ballast.jobs where tenant_id = $1 and id > $2 and status not in ${FINAL}`, [SUBS_TENANT, afterJobId]);
  return Number(rows[0]!.n);
}

/**
 * The column of ballast_private.events that records the writing transaction, when the schema has one (`txid`, or
 * `tx` as migrations/0004_state_machines.sql in progress calls it): events are delivered in (that column, id) order. Null without one.
 */
async function txColumn(c: pg.Client): Promise<string | null> {
  const { rows } = await c.query<{ column_name: string }>(
    `select column_name from information_schema.columns
      where table_schema = 'ballast_private' and table_name = 'events' and column_name in ('txid', 'tx')
      order by column_name = 'txid' desc limit 1`);
  return rows[0]?.column_name ?? null;
}

export async function subscriptions(url: string, label: string, sizes: SubscriptionSizes, log: (msg: string) => void): Promise<Round> {
  const loadStart = loadavg()[0]!;
  const secret = randomBytes(36).toString('base64url');
  const c = await connect(url);
  const children: WorkerChild[] = [];
  try {
    // --expose-gc on top of the deployed flags: the heap is measured after a collection once the clients left.
    const api = spawnChild(url, { kind: 'api', nodeFlags: [...WORKER_NODE_FLAGS, '--expose-gc'] }, `${label}-api`, {
      BALLAST_JWT_SECRET: secret, NODE_ENV: 'production', GRAPHILE_ENV: 'production',
      // Every client uses one token here (one subject); real dashboards are many users.
      BALLAST_LIVE_MAX_SOCKETS_PER_CALLER: String(sizes.clients + sizes.reconnectClients + 100),
    });
    children.push(api);
    const worker = spawnWorker(url, { kind: 'ballast', concurrency: sizes.concurrency, demo: true }, `${label}-worker`);
    children.push(worker);
    const [apiReady] = await Promise.all([api.ready, worker.ready]);
    const httpUrl = String(apiReady.message.url);
    const token = await mintToken(secret, { role: 'client', tenantId: SUBS_TENANT, subject: 'bench-subs', expiresInS: 3600 });
    // The load client runs with V8's defaults: it is not what is measured.
    const client = spawnChild(url, {
      kind: 'subs-client', nodeFlags: [], wsUrl: String(apiReady.message.wsUrl), httpUrl, healthUrl: httpUrl.replace(/\/graphql$/, '/health'),
      token, tenant: SUBS_TENANT, clients: sizes.clients, reconnectClients: sizes.reconnectClients, batch: 100,
    }, `${label}-client`);
    children.push(client);
    await client.ready;

    const conn = await ask<{ clients: number; failed: number; ms: number }>(client, { type: 'connect' }, 'connected', 300_000);
    log(`subscriptions: ${conn.clients - conn.failed}/${conn.clients} clients connected in ${(conn.ms / 1000).toFixed(1)} s`);

    // Warm-up: a job a second until every client received an event of one (its subscription is registered).
    const warmed = ask<{ seen: number; total: number; ms: number }>(client, { type: 'warm', timeoutMs: 30_000 }, 'warmed', 40_000);
    let warmDone = false;
    void warmed.finally(() => (warmDone = true)).catch(() => {});
    let lastWarmJob = 0;
    for (let i = 0; !warmDone && i < 30; i++) {
      lastWarmJob = await submit(c, -1 - i);
      for (let k = 0; k < 10 && !warmDone; k++) await sleep(100);
    }
    const warm = await warmed;
    log(`subscriptions: ${warm.seen}/${warm.total} clients received a warm-up event in ${(warm.ms / 1000).toFixed(1)} s`);
    for (const until = Date.now() + 30_000; (await liveJobs(c, 0)) > 0 && Date.now() < until;) await sleep(100);

    // The load: `jobs` jobs on a fixed schedule of `rate` per second.
    const durationMs = (sizes.jobs / sizes.rate) * 1000;
    await ask(client, { type: 'load', afterJobId: lastWarmJob, durationMs }, 'loading', 10_000);
    const apiCpuFrom = procCpuS(api.pid);
    const t0 = performance.now();
    let late = 0;
    for (let i = 0; i < sizes.jobs; i++) {
      const due = t0 + (i * 1000) / sizes.rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      else if (wait < -100) late++;
      await submit(c, i);
    }
    const submitS = (performance.now() - t0) / 1000;
    const final = performance.now();
    for (const until = Date.now() + 60_000; (await liveJobs(c, lastWarmJob)) > 0 && Date.now() < until;) await sleep(100);
    const stillLive = await liveJobs(c, lastWarmJob);
    if (stillLive > 0) log(`subscriptions: ${stillLive} jobs still live a minute after the last submit; counting what happened`);
    const finalS = (performance.now() - final) / 1000;

    // What every client must have received: the events of the run's jobs, with their `at` (epoch ms).
    const { rows } = await c.query<{ id: string; at_ms: number }>(
      `select e.id, extract(epoch from e.at)::float8 * 1000 as at_ms
         from ballast.events e join ballast.jobs j on j.id = e.job_id
        where j.tenant_id = $1 and j.id > $2 and e.id is not null and e.type <> 'step_progress'
        order by e.id`, [SUBS_TENANT, lastWarmJob]);
    const ids = rows.map((r) => Number(r.id));
    const atMs = rows.map((r) => r.at_ms);
    const tx = await txColumn(c);
    // The commit order, when the schema records it: the order every subscriber must see.
    const dbOrder = tx ? (await c.query<{ id: string }>(
      `select e.id from ballast_private.events e join ballast_private.jobs j on j.id = e.job_id
        where j.tenant_id = $1 and j.id > $2 and e.id is not null and e.type <> 'step_progress'
        order by e.${tx}, e.id`, [SUBS_TENANT, lastWarmJob])).rows.map((r) => Number(r.id)) : null;

    const result = await ask<{ figures: Round; details: Record<string, unknown> }>(
      client, { type: 'expect', ids, atMs, dbOrder, timeoutMs: DRAIN_MS }, 'result', DRAIN_MS + 60_000);
    const atEnd = procMemoryMb(api.pid);
    // The API's CPU over the load (from the first submit to the last message counted): how busy it was, and what a
    // message costs it, a figure less sensitive than latency to other work on a shared machine.
    const apiCpuS = procCpuS(api.pid) - apiCpuFrom;
    const loadWallS = (performance.now() - t0) / 1000;
    await ask(client, { type: 'close' }, 'closed', 60_000);
    await sleep(SETTLE_MS);
    // The peak over the whole run (VmHWM), disconnections included; the RSS once they are over; the live heap after
    // a collection then (what the API still holds for subscriptions that ended: the memory it returns to V8).
    const after = procMemoryMb(api.pid);
    const heap = await ask<{ heapUsedMb: number; heapReadyMb: number; loopDelayP99Ms: number; loopDelayMaxMs: number }>(api, { type: 'heap' }, 'heap', 30_000);
    const f = result.figures;
    log(`subscriptions: ${ids.length} events of ${sizes.jobs} jobs (${(ids.length / sizes.jobs).toFixed(1)} per job); delivery p50 ${f.subs_1000_p50_ms?.toFixed(1)} ms, ` +
      `p99 ${f.subs_1000_p99_ms?.toFixed(1)} ms, ${f.subs_msgs_per_s?.toFixed(0)} messages/s; HTTP p99 ${f.subs_http_p99_ms?.toFixed(1)} ms; ` +
      `API RSS peak ${after.peakRssMb.toFixed(0)} MB, ${atEnd.rssMb.toFixed(0)} MB at the end of the load, ${after.rssMb.toFixed(0)} MB after; missing ${f.subs_missing}, duplicated ${f.subs_duplicated}, ` +
      `out of order ${f.subs_out_of_order}; reconnect clients: missing ${f.subs_reconnect_missing}, duplicated ${f.subs_reconnect_duplicated}, ` +
      `out of order ${f.subs_reconnect_out_of_order}; order checked against ${tx ? `the database (${tx}, id) and ` : ''}client 0` +
      (JSON.stringify(result.details) !== '{}' ? `; details ${JSON.stringify(result.details)}` : ''));
    // A child that does not stop cleanly is killed below; the figures stand.
    const stops = await Promise.allSettled([client.stop(), api.stop(), worker.stop()]);
    for (const s of stops) if (s.status === 'rejected') log(`subscriptions: a child did not stop cleanly: ${(s.reason as Error).message}`);
    return {
      ...f,
      subs_connect_failed: conn.failed,
      subs_connect_s: conn.ms / 1000,
      subs_warm_s: warm.ms / 1000,
      subs_warm_missing: warm.total - warm.seen,
      subs_expected_events: ids.length,
      subs_events_per_job: ids.length / sizes.jobs,
      subs_submit_s: submitS,
      subs_submits_late: late,
      subs_jobs_final_s: finalS,
      subs_jobs_live_at_end: stillLive,
      subs_api_cpu_cores: apiCpuS / loadWallS,
      subs_api_cpu_ms_per_1k_msgs: (apiCpuS * 1000) / ((f.subs_messages ?? NaN) / 1000),
      subs_rss_ready_mb: apiReady.readyRssMb,
      subs_rss_mb: after.peakRssMb,
      subs_rss_end_of_load_mb: atEnd.rssMb,
      subs_rss_after_mb: after.rssMb,
      subs_heap_ready_mb: heap.heapReadyMb,
      subs_heap_after_mb: heap.heapUsedMb,
      subs_api_loop_delay_p99_ms: heap.loopDelayP99Ms,
      subs_api_loop_delay_max_ms: heap.loopDelayMaxMs,
      subs_db_order: tx ? 1 : 0,
      subs_loadavg_start: loadStart,
      subs_loadavg_end: loadavg()[0]!,
    };
  } finally {
    await Promise.all(children.map((ch) => ch.kill()));
    await c.end();
  }
}
