// The watchdog: a thread (worker_threads) beside a worker's event loop, for the steps that block that loop (a busy
// loop, a huge synchronous parse, a regex gone exponential). While the loop is blocked the worker can neither
// heartbeat nor enforce a timeout, so before this its attempts were reclaimed under it, and a step that never yields
// froze every worker it was retried on.
//
// The main thread stamps the time into a SharedArrayBuffer every PING_MS (250 ms). The thread reads it every
// CHECK_MS and, once no stamp came for a heartbeat period (heartbeatMs, 1 s):
//  - keeps the worker alive: ballast.watchdog_heartbeat (0006_execution) on its own connection stamps the worker and extends
//    the leases of all its running attempts, once per heartbeat period, so a long stall (30 s) loses nothing;
//  - detects a poison step: when the loop has been stalled for at least marginMs and a running attempt is past its
//    deadline (its start + its step's timeout + marginMs; for a step without a timeout, the start of the stall +
//    maxStallMs), it reports the worker blocked (ballast.report_worker_fault, class 'blocked_worker') and kills its
//    own process (SIGKILL: the loop cannot run a graceful stop). The SQL retries each attempt, or quarantines its
//    step after `quarantineAfter` such faults. Under the supervisor (src/worker/supervisor.ts) the worker then restarts;
//    a process embedding startWorker must restart itself.
// Blame: the step runner marks the attempt whose handler runs its first synchronous part (enterAttempt); when the
// loop is stalled inside it, only that attempt counts toward quarantine, the others of the worker end as
// 'worker_lost' like after any kill. A stall after a handler's first await cannot be attributed: then every running
// attempt of the worker is blamed.
//
// Defaults: marginMs 2000 (the reaper times an attempt out at timeout + 5 s; the watchdog must act first),
// maxStallMs 60000 (BALLAST_MAX_STALL_MS), quarantineAfter 2 (BALLAST_QUARANTINE_AFTER).
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { WORKER_DEFAULTS } from './defaults.ts';

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

export const WATCHDOG_DEFAULTS = {
  heartbeatMs: WORKER_DEFAULTS.heartbeatMs, marginMs: WORKER_DEFAULTS.marginMs, maxStallMs: WORKER_DEFAULTS.maxStallMs,
  quarantineAfter: WORKER_DEFAULTS.quarantineAfter,
} as const;
const PING_MS = 250;

/** What the thread (watchdog-thread.mjs) gets as workerData. */
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
  // The thread's code is plain JavaScript (watchdog-thread.mjs): a thread that loads a .ts module pays for Node's
  // type stripper in its own isolate, 16 MB of the worker's RSS measured (33 MB for the thread with it, 17 without).
  // A small heap too: the thread holds one connection and a few numbers.
  const thread = new Worker(new URL('./watchdog-thread.mjs', import.meta.url), {
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
