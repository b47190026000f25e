// Throughput runs shared by several scenarios: queue N units first (not timed), then start one worker child and time
// it from the first unit started to the last one finished.
//   bare graphile-worker: N no-op jobs bulk-added with graphile_worker.add_jobs; timed by the child from its first
//     job:start to the moment the queue is empty (completions are written asynchronously).
//   ballast: N jobs of bench.noop3 (3 no-op steps) submitted with set-based ballast.submit_job calls; timed from the
//     database: first attempt started_at to last step finished_at of those jobs (both ballast.now(), one clock).
//     With `workers` > 1, that many worker children run the same jobs at once (scaling).
// Both report the WAL the server wrote during the run (pg_wal_lsn_diff of pg_current_wal_lsn() read before the worker
// child starts and once its last unit is done, before it stops): WAL is cluster-wide, and nothing else runs on the
// bench's server meanwhile apart from autovacuum, which is part of the cost of either queue.
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import { connect, statsSettle } from '../database.ts';
import { spawnWorker, type WorkerChild } from '../children.ts';
import { GW_TASK } from '../fixtures/pipelines.ts';

const CHUNK = 500;
const FINAL = `('completed', 'partially_completed', 'failed', 'cancelled')`;

/** Adds `n` no-op graphile-worker jobs, CHUNK per statement. */
export async function addGwJobs(url: string, n: number): Promise<void> {
  const c = await connect(url);
  try {
    for (let done = 0; done < n; done += CHUNK) {
      await c.query(
        `select count(*) from graphile_worker.add_jobs(array(
           select row($1, '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
             from generate_series(1, $2::int)))`, [GW_TASK, Math.min(CHUNK, n - done)]);
    }
    await c.query('analyze graphile_worker._private_jobs');
  } finally {
    await c.end();
  }
}

/** The server's current WAL position, in bytes from 0/0. */
export async function walLsn(c: pg.Client): Promise<number> {
  const { rows } = await c.query<{ b: string }>(`select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') as b`);
  return Number(rows[0]!.b);
}

export interface GwRun {
  perS: number;
  jobs: number;
  /** WAL written during the run. */
  walBytes: number;
  /** RSS once started (everything loaded, nothing run) and peak RSS (VmHWM) over the run. */
  readyRssMb: number;
  peakRssMb: number;
}

export async function runGw(url: string, concurrency: number, n: number, label: string): Promise<GwRun> {
  const c = await connect(url);
  const walBefore = await walLsn(c);
  const w = spawnWorker(url, { kind: 'gw', concurrency, expect: n }, label);
  try {
    const { readyRssMb } = await w.ready;
    const done = await w.next<{ firstStartMs: number; endMs: number; jobs: number }>('done', 600_000);
    const walBytes = (await walLsn(c)) - walBefore;
    const mem = await w.stop();
    return { perS: done.jobs / ((done.endMs - done.firstStartMs) / 1000), jobs: done.jobs, walBytes, readyRssMb, peakRssMb: mem.peakRssMb };
  } finally {
    await w.kill();
    await c.end();
  }
}

/** Submits `n` bench.noop3 jobs; returns the id just below the first of them. */
export async function submitBallastJobs(url: string, n: number): Promise<number> {
  const c = await connect(url);
  try {
    const { rows } = await c.query<{ id: string }>(`select coalesce(max(id), 0) as id from ballast_private.jobs`);
    for (let done = 0; done < n; done += CHUNK) {
      await c.query(`select count(*) from (select ballast.submit_job('bench.noop3', '{}'::jsonb)
                                              from generate_series(1, $1::int)) s`, [Math.min(CHUNK, n - done)]);
    }
    await c.query(`analyze ballast_private.jobs; analyze ballast_private.steps; analyze ballast_private.attempts;
                   analyze ballast_private.events; analyze graphile_worker._private_jobs`);
    return Number(rows[0]!.id);
  } finally {
    await c.end();
  }
}

export interface BallastRun {
  steps: number;
  stepsPerS: number;
  /** WAL written during the run. */
  walBytes: number;
  /** From the first attempt's start to the last step's end (database clock). */
  seconds: number;
  /** With cpu: CPU seconds of the server's processes and of the worker children over the polling loop. */
  serverCpuS?: number;
  workerCpuS?: number;
  /** The wall-clock time over which those were measured (from all workers ready to the last job final). */
  cpuWallS?: number;
  /** With workers > 1: the largest child's. */
  readyRssMb: number;
  peakRssMb: number;
  /** With scans: rows read by sequential scans of each of ballast's tables, per step (history must not be scanned). */
  seqRowsPerStep?: Record<string, number>;
  /** With waits: the average number of this database's client backends in each state or wait event while it ran. */
  waits?: Record<string, number>;
}

export interface RunOptions {
  env?: NodeJS.ProcessEnv;
  /** Node flags of the worker child (default: the deployed command's, WORKER_NODE_FLAGS). */
  nodeFlags?: readonly string[];
  /** Count rows read by sequential scans of ballast's tables (costs two 1 s pauses for the statistics). */
  scans?: boolean;
  /** Sample pg_stat_activity at every poll (50 ms): what the backends were doing (CPU, waiting for a lock...). */
  waits?: boolean;
  /** Worker children running at once (default 1), each at `concurrency`. */
  workers?: number;
  /** Measure the CPU time of the server's processes and of the worker children during the run (local server only). */
  cpu?: boolean;
}

/** CPU seconds (user + system) of a process from /proc/<pid>/stat; with children: plus its waited-for children's. */
function procCpuS(pid: number, children = false): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // Fields after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14), in clock ticks.
  const ticks = Number(f[11]) + Number(f[12]) + (children ? Number(f[13]) + Number(f[14]) : 0);
  return ticks / CLK_TCK;
}
/** Clock ticks per second of /proc's times (sysconf(_SC_CLK_TCK)): 100 on every Linux build in use. */
const CLK_TCK = 100;

/**
 * The postmaster of the server `c` talks to, when it runs on this machine and /proc shows it: the parent of the
 * connection's backend, named postgres. Otherwise undefined (a remote server: no CPU figures).
 */
export async function postmasterPid(c: pg.Client): Promise<number | undefined> {
  try {
    const { rows } = await c.query<{ pid: number }>('select pg_backend_pid() as pid');
    const stat = readFileSync(`/proc/${rows[0]!.pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return readFileSync(`/proc/${ppid}/comm`, 'utf8').trim().startsWith('postgres') ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds used so far by the server: the postmaster, its live children (backends, autovacuum, checkpointer...)
 * and its exited children (the postmaster waits for them, so their time is in its cutime/cstime). The difference of
 * two readings is the server's CPU time in between, backends that came and went included.
 */
export function serverCpuS(postmaster: number): number {
  let total = procCpuS(postmaster, true);
  const children = readFileSync(`/proc/${postmaster}/task/${postmaster}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  for (const pid of children) {
    try {
      total += procCpuS(Number(pid));
    } catch {
      // exited meanwhile: counted in the postmaster's cutime from now on (a reading taken on either side of its exit)
    }
  }
  return total;
}

const WAITS = `select coalesce(wait_event_type || ':' || wait_event, case when state = 'active' then 'running' else state end) as w,
                      count(*)::int as n
                 from pg_stat_activity
                where datname = current_database() and backend_type = 'client backend' and pid <> pg_backend_pid()
                group by 1`;

/** Rows read by sequential scans of each of ballast's tables so far (statistics flushed: see statsSettle). */
async function seqRows(c: pg.Client): Promise<Map<string, number>> {
  await statsSettle();
  await c.query('select pg_stat_clear_snapshot()');
  const { rows } = await c.query<{ t: string; n: string }>(
    `select relname as t, coalesce(seq_tup_read, 0) as n from pg_stat_user_tables where schemaname = 'ballast_private'`);
  return new Map(rows.map((r) => [r.t, Number(r.n)]));
}

/** Runs the jobs above `afterJobId` with one worker child; polls the live-jobs index until none is left. */
export async function runBallast(url: string, concurrency: number, afterJobId: number, label: string,
                                 options: RunOptions = {}): Promise<BallastRun> {
  const c = await connect(url);
  const scannedBefore = options.scans ? await seqRows(c) : new Map<string, number>();
  const postmaster = options.cpu ? await postmasterPid(c) : undefined;
  const walBefore = await walLsn(c);
  const n = options.workers ?? 1;
  const ws: WorkerChild[] = Array.from({ length: n }, (_, i) =>
    spawnWorker(url, { kind: 'ballast', concurrency, ...(options.nodeFlags ? { nodeFlags: options.nodeFlags } : {}) },
      n === 1 ? label : `${label}-${i}`, options.env));
  const waits = new Map<string, number>();
  let samples = 0;
  try {
    const readyRssMb = Math.max(...(await Promise.all(ws.map((w) => w.ready))).map((r) => r.readyRssMb));
    const cpuBefore = postmaster ? serverCpuS(postmaster) : NaN;
    const workerCpuBefore = options.cpu ? ws.reduce((a, w) => a + procCpuS(w.pid), 0) : NaN;
    const cpuFrom = performance.now();
    const until = Date.now() + 600_000;
    for (;;) {
      if (options.waits) {
        samples++;
        for (const r of (await c.query<{ w: string; n: number }>(WAITS)).rows) waits.set(r.w, (waits.get(r.w) ?? 0) + r.n);
      }
      const { rows } = await c.query<{ n: string }>(
        `select count(*) as n from ballast_private.jobs where status not in ${FINAL} and id > $1`, [afterJobId]);
      if (Number(rows[0]!.n) === 0) break;
      if (Date.now() > until) throw new Error(`ballast run ${label}: jobs still live after 10 minutes`);
      if (ws.some((w) => w.child.exitCode !== null)) throw new Error(`ballast run ${label}: a worker exited`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const walBytes = (await walLsn(c)) - walBefore;
    const cpu = options.cpu ? {
      serverCpuS: postmaster ? serverCpuS(postmaster) - cpuBefore : NaN,
      workerCpuS: ws.reduce((a, w) => a + procCpuS(w.pid), 0) - workerCpuBefore,
      cpuWallS: (performance.now() - cpuFrom) / 1000,
    } : undefined;
    const mem = { peakRssMb: Math.max(...(await Promise.all(ws.map((w) => w.stop()))).map((m) => m.peakRssMb)) };
    const scannedAfter = options.scans ? await seqRows(c) : new Map<string, number>();
    const { rows } = await c.query<{ steps: string; failed: string; seconds: number }>(
      `select count(*) as steps, count(*) filter (where s.status <> 'succeeded') as failed,
              extract(epoch from max(s.finished_at) - (select min(a.started_at) from ballast_private.attempts a
                                                         where a.job_id > $1))::float8 as seconds
         from ballast_private.steps s where s.job_id > $1`, [afterJobId]);
    const r = rows[0]!;
    if (Number(r.failed) > 0) throw new Error(`ballast run ${label}: ${r.failed} steps did not succeed`);
    const steps = Number(r.steps);
    return {
      steps, stepsPerS: steps / r.seconds, seconds: r.seconds, walBytes, readyRssMb, peakRssMb: mem.peakRssMb,
      ...(cpu ? cpu : {}),
      ...(options.scans ? {
        seqRowsPerStep: Object.fromEntries([...scannedAfter].map(([t, n]) => [t, (n - (scannedBefore.get(t) ?? 0)) / steps])),
      } : {}),
      ...(options.waits ? { waits: Object.fromEntries([...waits].sort((a, b) => b[1] - a[1]).map(([k, n]) => [k, n / samples])) } : {}),
    };
  } finally {
    await Promise.all(ws.map((w) => w.kill()));
    await c.end();
  }
}
