// Test helpers. Each test file gets its own database, cloned from the template that test/run.ts migrated once
// (create database ... template ...: tens of milliseconds), so files never share state and may run in parallel.
// A database whose test failed is kept on an external server (TEST_DATABASE_URL) for inspection with psql.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { BallastDb, createPool } from '../src/db/api.ts';
import { startWorker, type BallastWorker, type WorkerOptions } from '../src/worker/worker.ts';
import { createLogger } from '../src/log.ts';
import type { JobStatus } from '../src/db/schema.ts';
import { FINAL_JOB_STATUSES } from '../src/statuses.ts';

interface TapTest {
  teardown(fn: () => unknown): void;
  passing(): boolean;
  comment(...args: unknown[]): void;
}

/** The repository root (the cwd of spawned commands). */
export const repoRoot = fileURLToPath(new URL('..', import.meta.url));

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with \`npm test\` (test/run.ts prepares the database)`);
  return value;
}

export function databaseUrl(database: string): string {
  const u = new URL(env('BALLAST_TEST_SERVER_URL'));
  u.pathname = '/' + database;
  return u.toString();
}

async function adminQuery(sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: env('BALLAST_TEST_SERVER_URL') });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

export interface TestDb {
  name: string;
  url: string;
  pool: pg.Pool;
  db: BallastDb;
}

/** A fresh migrated database for this test file; returns its pool. */
export async function testDatabase(t: TapTest): Promise<pg.Pool> {
  return (await freshDatabase(t)).pool;
}

/** A fresh migrated database with its url, pool and BallastDb doorway. */
export async function freshDatabase(t: TapTest): Promise<TestDb> {
  const name = `ballast_t_${randomBytes(6).toString('hex')}`;
  await adminQuery(`create database ${name} template ${env('BALLAST_TEST_TEMPLATE')}`);
  const url = databaseUrl(name);
  const pool = createPool(url, { max: 20 });
  const db = new BallastDb(pool);
  t.teardown(async () => {
    await db.close();
    const keep = !t.passing() && Boolean(process.env.TEST_DATABASE_URL);
    if (keep) {
      t.comment(`kept database ${name} of a failed test: psql ${url}`);
      return;
    }
    await adminQuery(`drop database if exists ${name} with (force)`);
  });
  return { name, url, pool, db };
}

export const quietLog = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent', pretty: false });

/** Starts an in-process worker; stopped when the test ends. */
export async function testWorker(t: TapTest, url: string, options: Omit<WorkerOptions, 'connectionString'>): Promise<BallastWorker> {
  const worker = await startWorker({ connectionString: url, log: quietLog, pollIntervalMs: 200, ...options });
  t.teardown(() => worker.stop());
  return worker;
}

const FINAL: readonly JobStatus[] = FINAL_JOB_STATUSES;

/** Polls the job until it reaches one of `statuses` (default: any final status); fails after timeoutMs. */
export async function waitForJob(db: BallastDb, jobId: string, statuses: readonly JobStatus[] = FINAL, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const job = await db.getJob(jobId);
    if (job && statuses.includes(job.status)) return job;
    if (Date.now() > until) throw new Error(`job ${jobId} did not reach ${statuses.join('/')} within ${timeoutMs} ms (it is ${job?.status})`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Registers a worker row so SQL-level tests can claim steps without a running worker. */
export async function registerTestWorker(db: BallastDb, workerId = 'test-worker'): Promise<string> {
  await db.registerWorker({ workerId, hostname: 'test', pid: process.pid, concurrency: 1, pipelines: [] });
  return workerId;
}

/** Runs `sql` expecting a Postgres error; returns it (fails when the statement succeeds). */
export async function pgError(run: () => Promise<unknown>): Promise<pg.DatabaseError & Error> {
  try {
    await run();
  } catch (err) {
    return err as pg.DatabaseError & Error;
  }
  throw new Error('expected the statement to fail, but it succeeded');
}

export interface TestProcess {
  readonly child: ChildProcess;
  /** stdout so far, line by line. */
  readonly lines: string[];
  /** stderr so far. */
  stderr(): string;
  /** Resolves when the process exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The first stdout line (seen so far or to come) for which `match` returns a value; fails after timeoutMs or on exit. */
  waitForLine<T>(match: (line: string) => T | undefined, timeoutMs: number): Promise<T>;
  /** Waits (at most timeoutMs) for the exit. */
  wait(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Sends `signal` and waits (at most timeoutMs) for the exit. */
  stop(signal: NodeJS.Signals, timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawns `node <args>`; SIGKILLed at the end of the test if it is still running. */
export function spawnNode(t: TapTest, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): TestProcess {
  const child = spawn(process.execPath, args, { cwd: opts.cwd ?? repoRoot, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let err = '';
  let partial = '';
  const waiters = new Set<(line: string | null) => void>();
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      lines.push(line);
      for (const w of [...waiters]) w(line);
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      for (const w of [...waiters]) w(null);
      resolve({ code, signal });
    });
  });
  const running = () => child.exitCode === null && child.signalCode === null;
  const describe = () => `pid ${child.pid}, args ${args.join(' ')}\nstdout (last lines):\n${lines.slice(-20).join('\n')}\nstderr:\n${err.slice(-3000)}`;
  const proc: TestProcess = {
    child,
    lines,
    stderr: () => err,
    exited,
    waitForLine<T>(match: (line: string) => T | undefined, timeoutMs: number): Promise<T> {
      for (const line of lines) {
        const found = match(line);
        if (found !== undefined) return Promise.resolve(found);
      }
      return new Promise<T>((resolve, reject) => {
        const done = (fn: () => void) => {
          waiters.delete(waiter);
          clearTimeout(timer);
          fn();
        };
        const waiter = (line: string | null) => {
          if (line === null) return done(() => reject(new Error(`the process exited before the expected line\n${describe()}`)));
          const found = match(line);
          if (found !== undefined) done(() => resolve(found));
        };
        const timer = setTimeout(() => done(() => reject(new Error(`no expected line within ${timeoutMs} ms\n${describe()}`))), timeoutMs);
        if (!running()) return done(() => reject(new Error(`the process had exited\n${describe()}`)));
        waiters.add(waiter);
      });
    },
    async wait(timeoutMs: number) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms\n${describe()}`)), timeoutMs);
      });
      try {
        return await Promise.race([exited, timeout]);
      } finally {
        clearTimeout(timer);
      }
    },
    stop(signal: NodeJS.Signals, timeoutMs: number) {
      if (running()) child.kill(signal);
      return proc.wait(timeoutMs);
    },
  };
  t.teardown(async () => {
    if (running()) {
      child.kill('SIGKILL');
      await exited;
    }
  });
  return proc;
}

export { isAlive } from '../src/db/embedded.ts';

/** Polls `check` every 50 ms until it returns true; false after timeoutMs. */
export async function eventually(check: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * A new login with role ballast_client in database `dbName`, bound to `tenant` (none: left unbound), connected as
 * `c`; the login and its binding are dropped when `t` ends.
 */
export async function clientLogin(t: { teardown(fn: () => unknown): void }, admin: Pick<pg.Pool, 'query'>, dbName: string, label: string,
  tenant: string | null): Promise<{ login: string; c: pg.Client }> {
  const login = `ballast_t_${label}_${randomBytes(4).toString('hex')}`;
  await admin.query(`create role ${login} login password 'pw' in role ballast_client`);
  t.teardown(async () => {
    await admin.query(`delete from ballast_private.role_tenants where role_name = $1`, [login]);
    await admin.query(`drop owned by ${login}`).catch(() => {});
    await admin.query(`drop role if exists ${login}`);
  });
  if (tenant !== null) await admin.query('select ballast.bind_role_tenant($1, $2)', [login, tenant]);
  const u = new URL(databaseUrl(dbName));
  u.username = login;
  u.password = 'pw';
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  t.teardown(() => c.end());
  return { login, c };
}
