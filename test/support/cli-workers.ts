// Real `ballast worker` processes (each a supervisor and its worker child, src/worker/supervisor.ts) serving the pipelines of
// test/fixtures/liveness-tasks, for test/liveness.test.ts and test/pg-restart.test.ts.
import { fileURLToPath } from 'node:url';
import { spawnNode, type TestProcess } from '../helpers.ts';

export const livenessTasks = fileURLToPath(new URL('../fixtures/liveness-tasks', import.meta.url));

interface TapTest {
  teardown(fn: () => unknown): void;
  passing(): boolean;
  comment(...args: unknown[]): void;
}

export function parseLine(line: string): Record<string, unknown> | undefined {
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

export interface CliWorker {
  proc: TestProcess;
  /** Ids of the worker children started so far, in order (from their `worker started` lines). */
  workerIds(): string[];
  /** Log lines whose msg matches. */
  said(msg: string | RegExp): Record<string, unknown>[];
  /** Waits until `n` worker children have started in all. */
  started(n: number, timeoutMs: number): Promise<string>;
}

/** Spawns `ballast worker` (supervised) on `url`; SIGKILLed at the end of the test if still running. */
export function cliWorker(t: TapTest, url: string, env: Record<string, string> = {}): CliWorker {
  const base = { ...process.env };
  for (const name of ['BALLAST_METRICS_PORT', 'BALLAST_DATA_DIR', 'LOG_LEVEL', 'BALLAST_SUPERVISE']) delete base[name];
  const proc = spawnNode(t, ['src/cli.ts', 'worker'], {
    env: { ...base, DATABASE_URL: url, BALLAST_TASKS_DIR: livenessTasks, LOG_FORMAT: 'json', LOG_LEVEL: 'info', ...env },
  });
  t.teardown(() => {
    if (!t.passing()) t.comment(`ballast worker ${proc.child.pid}, last log lines:\n${proc.lines.slice(-25).join('\n')}\n${proc.stderr().slice(-3000)}`);
  });
  const lines = () => proc.lines.map(parseLine).filter((l): l is Record<string, unknown> => l !== undefined);
  const said = (msg: string | RegExp) =>
    lines().filter((l) => typeof l.msg === 'string' && (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg)));
  const workerIds = () => said('worker started').map((l) => String(l.worker_id));
  return {
    proc,
    said,
    workerIds,
    started: async (n, timeoutMs) =>
      proc.waitForLine((line) => {
        const l = parseLine(line);
        return l?.msg === 'worker started' && workerIds().length >= n ? String(l.worker_id) : undefined;
      }, timeoutMs),
  };
}
