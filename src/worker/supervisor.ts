// The supervisor of `ballast worker` and `ballast start` (npm start): the worker runs in a child process, which the
// CLI process (the parent) restarts when it dies, so a worker restarts itself after its watchdog killed it (a step
// blocked its event loop: src/worker/watchdog.ts) or after a crash (an uncaught exception, an out-of-memory abort).
//
// Each child gets a fresh worker id (BALLAST_WORKER_ID) so the parent knows whose attempts were cut short. When a
// child dies abnormally (exit code other than 0, or a signal other than SIGKILL, SIGTERM and SIGINT) the parent
// reports it through ballast.report_worker_fault(..., 'crashed_worker'): its running attempts end, counted toward
// their steps' quarantine (BALLAST_QUARANTINE_AFTER, default 2). A SIGKILL is not reported: the watchdog has already
// reported its own kill, and an operator's `kill -9` is no fault of the steps (the reaper reclaims those attempts
// as 'worker_lost' and retries them). A child that dies before it started (bad configuration, unreachable database)
// is not restarted: the parent exits with its code.
//
// Restarts back off: 1 s, doubling to 30 s, back to 1 s once a child has run a minute. SIGINT/SIGTERM to the parent
// are passed to the child (graceful stop); the parent exits with the child's code once it is gone. A child whose
// parent dies (IPC channel closed) stops gracefully by itself (cli.ts).
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { BallastDb, createPool } from '../db/api.ts';
import { CLI_URL, WORKER_NODE_FLAGS } from '../node-flags.ts';
import { WORKER_DEFAULTS } from './defaults.ts';

export interface SupervisorOptions {
  connectionString: string;
  log: Logger;
  /** Extra environment of the children. */
  env?: Record<string, string>;
  /** Blocked or crashed attempts after which a step is quarantined (default 2). */
  quarantineAfter?: number;
  /** First and longest delay before a restart (default 1000 and 30000 ms). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export interface Supervisor {
  /** Resolves when the first child has started its worker; rejects when it died before. */
  readonly ready: Promise<void>;
  /** Resolves with the exit code for the CLI once supervision ends (after stop(), or a child that failed to start). */
  readonly done: Promise<number>;
  /** Passes the signal to the child and ends supervision once it exits. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

/** Environment that tells `ballast worker` it is a supervised child. */
export const SUPERVISED_ENV = 'BALLAST_SUPERVISED';

const CLI = fileURLToPath(CLI_URL);
/** Signals after which a child's death is not the fault of the steps it ran. */
const NOT_A_CRASH = new Set(['SIGKILL', 'SIGTERM', 'SIGINT']);
/** A child that ran this long restarts after the shortest delay again. */
const STABLE_MS = 60_000;

/** Whether a child's exit is a crash (reported as crashed_worker). */
export function isCrash(code: number | null, signal: NodeJS.Signals | null): boolean {
  if (signal) return !NOT_A_CRASH.has(signal);
  return code !== 0 && code !== null;
}

export function superviseWorker(options: SupervisorOptions): Supervisor {
  const log = options.log.child({ supervisor: process.pid });
  const minBackoff = options.minBackoffMs ?? 1000;
  const maxBackoff = options.maxBackoffMs ?? 30_000;
  let backoff = minBackoff;
  let stopping = false;
  let child: ChildProcess | undefined;
  let restartTimer: NodeJS.Timeout | undefined;
  let generation = 0;
  let db: BallastDb | undefined;
  const reporter = () => (db ??= new BallastDb(createPool(options.connectionString, { max: 1, applicationName: 'ballast-supervisor', log })));

  let resolveReady!: () => void;
  let rejectReady!: (err: Error) => void;
  const ready = new Promise<void>((res, rej) => { resolveReady = res; rejectReady = rej; });
  ready.catch(() => {});
  let finish!: (code: number) => void;
  const done = new Promise<number>((res) => (finish = res)).then(async (code) => {
    await db?.close().catch(() => {});
    return code;
  });
  let everReady = false;

  const spawnChild = () => {
    restartTimer = undefined;
    if (stopping) return finish(0);
    generation += 1;
    const workerId = `${hostname()}-${process.pid}-${generation}-${randomUUID().slice(0, 8)}`;
    const execArgv = [...process.execArgv.filter((a) => !a.startsWith('--inspect')),
      ...WORKER_NODE_FLAGS.filter((f) => !process.execArgv.includes(f))];
    const started = Date.now();
    let childReady = false;
    const c = fork(CLI, ['worker'], {
      execArgv,
      env: { ...process.env, ...options.env, [SUPERVISED_ENV]: '1', BALLAST_WORKER_ID: workerId },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    child = c;
    c.on('message', (msg) => {
      if ((msg as { type?: unknown } | null)?.type !== 'ready') return;
      childReady = true;
      everReady = true;
      resolveReady();
    });
    c.once('exit', (code, signal) => {
      child = undefined;
      void onExit(workerId, c.pid, code, signal, childReady, Date.now() - started);
    });
  };

  const onExit = async (workerId: string, pid: number | undefined, code: number | null, signal: NodeJS.Signals | null,
    childReady: boolean, ranMs: number) => {
    if (stopping) return finish(code ?? 0);
    if (!childReady) {
      // Died before its worker started: configuration or database trouble that a restart would only repeat.
      const err = new Error(`the worker process exited before it started (code ${code}, signal ${signal})`);
      if (!everReady) {
        rejectReady(err);
        return finish(code || 1);
      }
      log.error({ worker_pid: pid, code, signal }, `${err.message}; restarting it`);
    } else if (isCrash(code, signal)) {
      log.error({ worker_id: workerId, worker_pid: pid, code, signal }, 'the worker process crashed; reporting its running steps and restarting it');
      await report(workerId, code, signal);
    } else {
      log.warn({ worker_id: workerId, worker_pid: pid, code, signal },
        signal === 'SIGKILL' ? 'the worker process was killed (by its watchdog, or kill -9); restarting it'
          : 'the worker process exited; restarting it');
    }
    if (ranMs >= STABLE_MS) backoff = minBackoff;
    const delay = backoff;
    backoff = Math.min(backoff * 2, maxBackoff);
    log.info({ delay_ms: delay }, 'restarting the worker process');
    restartTimer = setTimeout(spawnChild, delay);
  };

  const report = async (workerId: string, code: number | null, signal: NodeJS.Signals | null) => {
    const message = `worker ${workerId} crashed while running this step (${signal ? `signal ${signal}` : `exit code ${code}`})`;
    for (let tries = 1; tries <= 5; tries++) {
      try {
        const steps = await reporter().reportWorkerFault(workerId, 'crashed_worker', { message, quarantineAfter: options.quarantineAfter ?? WORKER_DEFAULTS.quarantineAfter });
        if (steps.length) log.warn({ worker_id: workerId, steps }, 'recorded the crashed worker\'s running steps (crashed_worker)');
        return;
      } catch (err) {
        if ((err as { code?: string }).code === 'not_found') return; // never registered: nothing ran
        log.warn({ err: (err as Error).message, try: tries }, 'could not report the crashed worker yet');
        await new Promise((r) => setTimeout(r, 1000 * tries));
      }
    }
  };

  const stop = (signal: NodeJS.Signals = 'SIGTERM') => {
    if (!stopping) {
      stopping = true;
      if (restartTimer) {
        clearTimeout(restartTimer);
        restartTimer = undefined;
        finish(0);
      } else if (child) {
        child.kill(signal);
      } else {
        finish(0);
      }
    } else if (child) {
      child.kill(signal); // a second Ctrl-C goes through as well
    }
    return done;
  };

  spawnChild();
  return { ready, done, stop };
}
