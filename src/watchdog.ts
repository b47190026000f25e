// The watchdog: a thread (worker_threads) beside a worker's event loop, for the steps that block that loop (a busy
// loop, a huge synchronous parse, a regex gone exponential). While the loop is blocked the worker can neither
// heartbeat nor enforce a timeout, so before this its attempts were reclaimed under it, and a step that never yields
// froze every worker it was retried on.
//
// The main thread stamps the time into a SharedArrayBuffer every PING_MS (250 ms). The thread reads it every
// CHECK_MS and, once no stamp came for a heartbeat period (heartbeatMs, 1 s):
//  - keeps the worker alive: ballast.watchdog_heartbeat (0016) on its own connection stamps the worker and extends
//    the leases of all its running attempts, once per heartbeat period, so a long stall (30 s) loses nothing;
//  - detects a poison step: when the loop has been stalled for at least marginMs and a running attempt is past its
//    deadline (its start + its step's timeout + marginMs; for a step without a timeout, the start of the stall +
//    maxStallMs), it reports the worker blocked (ballast.report_worker_fault, class 'blocked_worker') and kills its
//    own process (SIGKILL: the loop cannot run a graceful stop). The SQL retries each attempt, or quarantines its
//    step after `quarantineAfter` such faults. Under the supervisor (src/supervisor.ts) the worker then restarts;
//    a process embedding startWorker must restart itself.
// Blame: the step runner marks the attempt whose handler runs its first synchronous part (enterAttempt); when the
// loop is stalled inside it, only that attempt counts toward quarantine, the others of the worker end as
// 'worker_lost' like after any kill. A stall after a handler's first await cannot be attributed: then every running
// attempt of the worker is blamed.
//
// Defaults: marginMs 2000 (the reaper times an attempt out at timeout + 5 s; the watchdog must act first),
// maxStallMs 60000 (BALLAST_MAX_STALL_MS), quarantineAfter 2 (BALLAST_QUARANTINE_AFTER).
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { writeSync } from 'node:fs';
import { hostname } from 'node:os';
import pg from 'pg';
import type { Logger } from 'pino';

export interface WatchdogOptions {
  connectionString: string;
  workerId: string;
  log: Logger;
  /** Lease the watchdog's heartbeat gives the running attempts (the worker's leaseMs). */
  leaseMs: number;
  /** A stall this long makes the watchdog heartbeat for the worker, once per period (default 1000 ms). */
  heartbeatMs?: number;
  /** How far past its step's timeout a stalled attempt may get before the worker is killed (default 2000 ms). */
  marginMs?: number;
  /** The longest stall allowed while a step without a timeout runs (default 60000 ms). */
  maxStallMs?: number;
  /** Blocked or crashed attempts after which a step is quarantined (failed for good; default 2). */
  quarantineAfter?: number;
}

export interface Watchdog {
  stop(): Promise<void>;
}

export const WATCHDOG_DEFAULTS = { heartbeatMs: 1000, marginMs: 2000, maxStallMs: 60_000, quarantineAfter: 2 } as const;
const PING_MS = 250;
const CHECK_MS = 100;

interface ThreadData {
  ballastWatchdog: true;
  connectionString: string;
  workerId: string;
  leaseMs: number;
  heartbeatMs: number;
  marginMs: number;
  maxStallMs: number;
  quarantineAfter: number;
  /** [0] last ping (Date.now()); [1] the attempt whose handler's synchronous part runs (0: none). */
  shared: SharedArrayBuffer;
  level: number;
}

// One marker per process: there is one main thread, whatever the number of workers it runs.
let marker: BigInt64Array | undefined;

/** The step runner calls this right before a handler's synchronous part runs ... */
export function enterAttempt(attemptId: string): void {
  if (marker) Atomics.store(marker, 1, BigInt(attemptId));
}

/** ... and this right after it returned (or threw). */
export function leaveAttempt(): void {
  if (marker) Atomics.store(marker, 1, 0n);
}

const shared = () => {
  if (!marker) marker = new BigInt64Array(new SharedArrayBuffer(16));
  return marker;
};

/** Starts the watchdog thread of a worker and the pings from this (the main) thread. */
export function startWatchdog(options: WatchdogOptions): Watchdog {
  const cells = shared();
  const ping = () => Atomics.store(cells, 0, BigInt(Date.now()));
  ping();
  const data: ThreadData = {
    ballastWatchdog: true,
    connectionString: options.connectionString,
    workerId: options.workerId,
    leaseMs: options.leaseMs,
    heartbeatMs: options.heartbeatMs ?? WATCHDOG_DEFAULTS.heartbeatMs,
    marginMs: options.marginMs ?? WATCHDOG_DEFAULTS.marginMs,
    maxStallMs: options.maxStallMs ?? WATCHDOG_DEFAULTS.maxStallMs,
    quarantineAfter: options.quarantineAfter ?? WATCHDOG_DEFAULTS.quarantineAfter,
    shared: cells.buffer as SharedArrayBuffer,
    level: options.log.levelVal,
  };
  // A small heap: the thread holds one connection and a few numbers; without limits V8 sizes its young generation
  // like the main thread's, which showed in the worker's peak RSS (bench: worker_rss_mb).
  const thread = new Worker(new URL(import.meta.url), {
    workerData: data, stdout: false, stderr: false,
    resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 48 },
  });
  thread.unref();
  thread.on('error', (err) => options.log.error({ err: err.message }, 'the watchdog thread failed; event-loop stalls are not watched'));
  // stop() must not wait for an 'exit' that already happened (a thread that failed, or ran out of its heap).
  const exited = new Promise<void>((resolve) => thread.once('exit', () => resolve()));
  const timer = setInterval(ping, PING_MS);
  timer.unref();
  let stopping: Promise<void> | undefined;
  return {
    stop: () => (stopping ??= (async () => {
      clearInterval(timer);
      thread.postMessage('stop');
      const late = setTimeout(() => void thread.terminate(), 2000);
      await exited;
      clearTimeout(late);
    })()),
  };
}

interface RunningRow {
  attempt_id: number | string;
  step_id: number | string;
  started_at: string;
  timeout_ms: number | null;
}

/** The thread's body. */
function watch(d: ThreadData): void {
  const cells = new BigInt64Array(d.shared);
  const base = { pid: process.pid, hostname: hostname(), name: 'ballast', worker_id: d.workerId, thread: 'watchdog' };
  // Written straight to fd 1: a worker thread's process.stdout goes through the (stalled) main thread.
  const log = (level: number, fields: Record<string, unknown>, msg: string) => {
    if (level < d.level) return;
    try {
      writeSync(1, JSON.stringify({ level, time: Date.now(), ...base, ...fields, msg }) + '\n');
    } catch {
      // stdout closed: nothing to tell
    }
  };
  let client: pg.Client | undefined;
  const connection = async (): Promise<pg.Client> => {
    if (client) return client;
    const c = new pg.Client({
      connectionString: d.connectionString, application_name: `ballast-watchdog ${d.workerId}`,
      connectionTimeoutMillis: 10_000, keepAlive: true,
    });
    c.on('error', () => {
      if (client === c) client = undefined;
    });
    c.on('end', () => {
      if (client === c) client = undefined;
    });
    await c.connect();
    client = c;
    return c;
  };
  const query = async <R extends pg.QueryResultRow>(text: string, params: unknown[]): Promise<R[]> => {
    const c = await connection();
    try {
      return (await c.query<R>(text, params)).rows;
    } catch (err) {
      // A broken connection is replaced on the next call; a SQL error keeps it.
      if (!(err as { code?: string }).code || /^(08|57P)/.test(String((err as { code?: string }).code))) {
        if (client === c) client = undefined;
        void c.end().catch(() => {});
      }
      throw err;
    }
  };

  let busy = false;
  let lastBeat = 0;
  let stallLogged = 0n;
  let stopped = false;

  const check = async () => {
    const lastPing = Number(Atomics.load(cells, 0));
    const now = Date.now();
    const stalled = now - lastPing;
    if (stalled < d.heartbeatMs || now - lastBeat < d.heartbeatMs) return;
    lastBeat = now;
    const [beat] = await query<{ alive: boolean; db_now: Date; running: RunningRow[] }>(
      'select alive, db_now, running from ballast.watchdog_heartbeat($1, $2)', [d.workerId, d.leaseMs]);
    if (stallLogged !== BigInt(lastPing)) {
      stallLogged = BigInt(lastPing);
      log(40, { stalled_ms: stalled, running: beat?.running.map((r) => String(r.attempt_id)) ?? [] },
        'the event loop is blocked; the watchdog heartbeats for the worker');
    }
    if (!beat?.alive) return;
    const stalledNow = Date.now() - Number(Atomics.load(cells, 0));
    if (stalledNow < d.marginMs) return;
    // Deadlines on the database clock: the stall began at db_now - stalled.
    const dbNow = new Date(beat.db_now).getTime();
    const stallStart = dbNow - stalled;
    const over = beat.running.filter((r) => {
      const deadline = r.timeout_ms !== null
        ? new Date(r.started_at).getTime() + r.timeout_ms + d.marginMs
        : stallStart + d.maxStallMs;
      return dbNow > deadline;
    });
    if (over.length === 0) return;
    const inHandler = Atomics.load(cells, 1);
    const mine = beat.running.map((r) => BigInt(r.attempt_id));
    // Blame the attempt whose synchronous handler code holds the loop when it is known; every running one if not;
    // none of ours when it is another worker's of this process (that worker's watchdog blames it).
    const blamed = inHandler === 0n ? mine : mine.filter((id) => id === inHandler);
    const first = over[0]!;
    const message = `the event loop of worker ${d.workerId} was blocked for ${stalledNow} ms, past ` +
      (first.timeout_ms !== null ? `the timeout of ${first.timeout_ms} ms of attempt ${first.attempt_id} (+ ${d.marginMs} ms)`
        : `the longest stall allowed (${d.maxStallMs} ms)`) +
      `; the process was killed${inHandler !== 0n ? ` (attempt ${inHandler} held the loop)` : ''}`;
    let reported = false;
    for (let tries = 0; tries < 5 && !reported; tries++) {
      try {
        const rows = await query<{ attempt_id: string; step_id: string; step_status: string; crashes: number }>(
          'select * from ballast.report_worker_fault($1, $2, $3::bigint[], $4, $5)',
          [d.workerId, 'blocked_worker', blamed.map(String), message, d.quarantineAfter]);
        log(50, { steps: rows }, `blocked worker: ${message}`);
        reported = true;
      } catch (err) {
        log(50, { err: (err as Error).message }, 'could not report the blocked worker; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    stopped = true;
    process.kill(process.pid, 'SIGKILL');
  };

  const timer = setInterval(() => {
    if (busy || stopped) return;
    busy = true;
    check()
      .catch((err: unknown) => log(40, { err: (err as Error).message }, 'watchdog heartbeat failed'))
      .finally(() => (busy = false));
  }, CHECK_MS);
  parentPort?.on('message', (msg) => {
    if (msg !== 'stop') return;
    stopped = true;
    clearInterval(timer);
    const c = client;
    client = undefined;
    void (c ? c.end().catch(() => {}) : Promise.resolve()).then(() => parentPort?.close());
  });
}

if (!isMainThread && (workerData as Partial<ThreadData> | null)?.ballastWatchdog) watch(workerData as ThreadData);
