// A worker's default settings, once: startWorker (worker.ts), the reaper, the watchdog and the supervisor fall back to
// these, `ballast worker` reads their environment variables with these defaults, and its --help lists them from
// WORKER_SETTINGS. test/facts.test.ts checks them against the configuration table of the documentation and against
// the defaults of the SQL functions that take the same values (p_lease_ms, p_dead_after_ms, ...).
// No imports: the CLI reads this for `ballast --help`, which loads nothing else.

export const WORKER_DEFAULTS = {
  /** Steps run at once by one worker process. */
  concurrency: 10,
  /** Lease of a running attempt, renewed by every heartbeat; expired leases are reclaimed. */
  leaseMs: 30_000,
  /** How often the step engine polls for runnable steps (due retries, a missed notification). */
  pollIntervalMs: 1000,
  /** How often the worker reports it is alive and renews its leases. */
  heartbeatMs: 1000,
  /** How often the reaper runs. */
  reaperIntervalMs: 1000,
  /** How often a worker fires the due cron schedules. */
  scheduleIntervalMs: 1000,
  /** A worker whose heartbeat is older than this is dead, whatever its liveness lock says. */
  deadAfterMs: 10_000,
  /** A worker whose liveness lock is gone and whose heartbeat is older than this is dead. */
  lostAfterMs: 2000,
  /** On stop: how long running steps may keep running before they are aborted and released. */
  shutdownGraceMs: 10_000,
  /** After an abort: how long a handler gets to settle before the worker stops waiting for it. */
  abandonMs: 1000,
  /** Watchdog: how far past its step's timeout a stalled attempt may get before the worker is killed. */
  marginMs: 2000,
  /** Watchdog: the longest event-loop stall while a step without a timeout runs. */
  maxStallMs: 60_000,
  /** Blocked or crashed attempts after which a step is quarantined (failed for good). */
  quarantineAfter: 2,
  /** How often a worker evaluates the drift and budget alert rules (ballast.check_alerts); 0: never. */
  alertIntervalMs: 30_000,
} as const;

export type WorkerDefaults = typeof WORKER_DEFAULTS;

/** The settings `ballast worker` reads from the environment, in the order --help lists them. */
export const WORKER_SETTINGS = [
  { env: 'BALLAST_CONCURRENCY', key: 'concurrency', help: 'steps run at once per worker' },
  { env: 'BALLAST_LEASE_MS', key: 'leaseMs', help: 'lease of a running attempt, renewed by heartbeats' },
  { env: 'BALLAST_HEARTBEAT_MS', key: 'heartbeatMs', help: 'heartbeat period' },
  { env: 'BALLAST_LOST_AFTER_MS', key: 'lostAfterMs', help: 'a worker whose connection is gone is dead after this' },
  { env: 'BALLAST_DEAD_AFTER_MS', key: 'deadAfterMs', help: 'a worker without heartbeat is dead after this' },
  { env: 'BALLAST_SHUTDOWN_GRACE_MS', key: 'shutdownGraceMs', help: 'on SIGTERM, time running steps get before release' },
  {
    env: 'BALLAST_MAX_STALL_MS', key: 'maxStallMs',
    help: 'longest event-loop block allowed while a step without a timeout runs; a step with a timeout\n'
      + `may block until its timeout + ${WORKER_DEFAULTS.marginMs / 1000} s; then the watchdog kills the worker`,
  },
  { env: 'BALLAST_QUARANTINE_AFTER', key: 'quarantineAfter', help: 'a step whose attempts blocked or crashed their worker this often fails for good' },
  { env: 'BALLAST_ALERT_INTERVAL_MS', key: 'alertIntervalMs', help: 'how often drift and budget alert rules are checked (0: never)' },
] as const satisfies readonly { env: string; key: keyof WorkerDefaults; help: string }[];

/** The --help lines of WORKER_SETTINGS: the variable, what it does and its default, continuation lines indented. */
export function workerSettingsHelp(): string {
  const column = 24;
  return WORKER_SETTINGS.map(({ env, key, help }) => {
    const [first, ...rest] = `${help} (default ${WORKER_DEFAULTS[key]})`.split('\n');
    const name = `  ${env}`;
    const head = name.length + 1 <= column ? name.padEnd(column) : `${name}  `;
    return [head + first, ...rest.map((line) => ' '.repeat(column) + line)].join('\n');
  }).join('\n');
}
