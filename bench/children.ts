// Worker child processes of the benchmark (bench/fixtures/ballast-worker.ts, gw-worker.mjs): spawned with IPC, stdout logged to a file
// under bench/results/logs/, stderr kept for error messages. Every child still running when the benchmark exits
// is SIGKILLed. Both kinds run with the node flags of the deployed `ballast` command (WORKER_NODE_FLAGS, read from
// src/cli.ts's shebang), not with the benchmark's own: the ballast worker is measured as deployed, and bare
// graphile-worker under the same V8 heap settings, so the memory ratio compares the code, not the flags.
// The subscriptions scenario's other children are spawned the same way (spawnChild) and speak the same messages
// (ready, stop/stopped): the GraphQL API (bench/fixtures/api-server.ts, with the deployed flags too: `ballast serve`
// runs from the same shebang) and its load client (bench/scenarios/subs-client.ts, with V8's defaults).
import { fork, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdirSync, openSync, closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WORKER_NODE_FLAGS } from '../src/node-flags.ts';

const fixtures = {
  ballast: fileURLToPath(new URL('./fixtures/ballast-worker.ts', import.meta.url)),
  gw: fileURLToPath(new URL('./fixtures/gw-worker.mjs', import.meta.url)),
  api: fileURLToPath(new URL('./fixtures/api-server.ts', import.meta.url)),
  'subs-client': fileURLToPath(new URL('./scenarios/subs-client.ts', import.meta.url)),
};
export const logDir = fileURLToPath(new URL('./results/logs/', import.meta.url));

export interface WorkerSpec {
  kind: 'ballast' | 'gw';
  concurrency: number;
  trace?: boolean;
  /** gw only: report `done` once this many jobs completed and the queue is empty. */
  expect?: number;
  /** Node flags of the child (default WORKER_NODE_FLAGS; [] for V8's defaults). */
  nodeFlags?: readonly string[];
  /** ballast only: also run the demo pipeline of tasks/demo.ts (demo.wordstats), registered when the worker starts. */
  demo?: boolean;
}

/** Another child of the benchmark; the whole spec reaches it as BENCH_WORKER (JSON), as a worker's does. */
export interface ChildSpec {
  kind: 'api' | 'subs-client';
  /** Node flags of the child (default WORKER_NODE_FLAGS; [] for V8's defaults). */
  nodeFlags?: readonly string[];
  [option: string]: unknown;
}

export interface Trace {
  jobId: string;
  step: string;
  startMs: number;
  endMs: number;
}

export interface WorkerChild {
  readonly child: ChildProcess;
  readonly pid: number;
  /**
   * Resolves once the pool runs, with the worker id and the RSS at that moment (everything loaded, nothing run);
   * `message` is the whole ready message (other children put more in it, e.g. the API's URLs).
   */
  readonly ready: Promise<{ workerId: string; readyRssMb: number; message: Record<string, unknown> }>;
  /** Traces received so far, by `${jobId}/${step}`. */
  readonly traces: Map<string, Trace>;
  /** Resolves with the first message of this type. */
  next<T = Record<string, unknown>>(type: string, timeoutMs: number): Promise<T>;
  /** Resolves when a trace for this job and step has arrived. */
  trace(jobId: string, step: string, timeoutMs: number): Promise<Trace>;
  /** Graceful stop; resolves with the child's memory figures after it exited. */
  stop(timeoutMs?: number): Promise<{ peakRssMb: number; rssMb: number }>;
  kill(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export function spawnWorker(url: string, spec: WorkerSpec, label: string, env: NodeJS.ProcessEnv = {}): WorkerChild {
  return spawnChild(url, spec, label, env);
}

export function spawnChild(url: string, spec: WorkerSpec | ChildSpec, label: string, env: NodeJS.ProcessEnv = {}): WorkerChild {
  mkdirSync(logDir, { recursive: true });
  const out = openSync(`${logDir}${label}.log`, 'w');
  const child = fork(fixtures[spec.kind], [], {
    execArgv: [...(spec.nodeFlags ?? WORKER_NODE_FLAGS)],
    env: { ...process.env, ...env, DATABASE_URL: url, BENCH_WORKER: JSON.stringify(spec), LOG_FORMAT: 'json' },
    stdio: ['ignore', out, 'pipe', 'ipc'],
  });
  closeSync(out);
  live.add(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => {
    live.delete(child);
    // What the child wrote to stderr (the last 4,000 characters; BALLAST_ENGINE_STATS=1 prints there) ends its log.
    if (stderr) appendFileSync(`${logDir}${label}.log`, stderr);
    resolve();
  }));
  const traces = new Map<string, Trace>();
  const waiters = new Set<(msg: Record<string, unknown> | null) => void>();
  child.on('message', (msg: Record<string, unknown>) => {
    if (msg.type === 'trace') {
      const t = msg as unknown as Trace;
      traces.set(`${t.jobId}/${t.step}`, t);
    }
    for (const w of [...waiters]) w(msg);
  });
  void exited.then(() => {
    for (const w of [...waiters]) w(null);
  });
  const fail = (what: string) =>
    new Error(`bench ${spec.kind === 'ballast' || spec.kind === 'gw' ? 'worker' : spec.kind} ${label} (pid ${child.pid}): ${what}; see ${logDir}${label}.log\n${stderr}`);
  const wait = <T>(match: (msg: Record<string, unknown>) => T | undefined, what: string, timeoutMs: number) =>
    new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => done(() => reject(fail(`no ${what} within ${timeoutMs} ms`))), timeoutMs);
      const done = (fn: () => void) => {
        clearTimeout(timer);
        waiters.delete(waiter);
        fn();
      };
      const waiter = (msg: Record<string, unknown> | null) => {
        if (msg === null) return done(() => reject(fail(`exited before ${what}`)));
        const found = match(msg);
        if (found !== undefined) done(() => resolve(found));
      };
      waiters.add(waiter);
      if (child.exitCode !== null || child.signalCode !== null) waiter(null);
    });
  const handle: WorkerChild = {
    child,
    pid: child.pid!,
    ready: wait((m) => (m.type === 'ready' ? { workerId: String(m.workerId), readyRssMb: Number(m.readyRssMb), message: m } : undefined),
      'ready message', 60_000),
    traces,
    next: <T>(type: string, timeoutMs: number) => wait((m) => (m.type === type ? (m as T) : undefined), `${type} message`, timeoutMs),
    trace: (jobId, step, timeoutMs) => {
      const have = traces.get(`${jobId}/${step}`);
      if (have) return Promise.resolve(have);
      return wait((m) => (m.type === 'trace' && m.jobId === jobId && m.step === step ? (m as unknown as Trace) : undefined),
        `trace of job ${jobId} step ${step}`, timeoutMs);
    },
    async stop(timeoutMs = 30_000) {
      const stopped = handle.next<{ peakRssMb: number; rssMb: number }>('stopped', timeoutMs);
      child.send({ type: 'stop' });
      const mem = await stopped;
      await exited;
      return { peakRssMb: mem.peakRssMb, rssMb: mem.rssMb };
    },
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
  };
  handle.ready.catch(() => {});
  return handle;
}
