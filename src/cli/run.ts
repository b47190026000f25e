// The `ballast` commands that run until stopped: `start` (database, migrations, worker, API, demo jobs), `worker`,
// `serve`, and `migrate`. Loaded only by those commands (src/cli.ts); the worker itself (about a second of CPU to
// import) is loaded only where it runs in this process: a supervised `start` or `worker` runs it in a child.
//
// Starting and stopping: every resource (embedded Postgres, worker process, API, pools) is registered with a Lifetime
// as soon as it exists, so a failure at any point (the API's port in use, migrations refused) or a Ctrl-C during the
// start releases what was started, in reverse order, and the process exits instead of running on headless. A stop
// logs what it waits for while it waits; a second Ctrl-C (or SIGTERM) forces: the worker process exits at once (its
// running steps are released to the next worker by the reaper) and the embedded Postgres still stops.
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { BallastDb, createPool } from '../db/api.ts';
import { dataDir, openDatabase } from '../db/connection.ts';
import { portIsFree } from '../db/embedded.ts';
import { migrate, redact } from '../db/migrate.ts';
import { startMetricsServer } from '../metrics.ts';
import { SUPERVISED_ENV, superviseWorker, type Supervisor } from '../worker/supervisor.ts';
import { WORKER_DEFAULTS } from '../worker/defaults.ts';
import { intEnv } from './args.ts';
import { CliError, UsageError } from './errors.ts';

/** Worker settings from the environment (see the help). */
export function workerSettings() {
  return {
    concurrency: intEnv('BALLAST_CONCURRENCY', WORKER_DEFAULTS.concurrency),
    leaseMs: intEnv('BALLAST_LEASE_MS', WORKER_DEFAULTS.leaseMs),
    heartbeatMs: intEnv('BALLAST_HEARTBEAT_MS', WORKER_DEFAULTS.heartbeatMs),
    lostAfterMs: intEnv('BALLAST_LOST_AFTER_MS', WORKER_DEFAULTS.lostAfterMs),
    deadAfterMs: intEnv('BALLAST_DEAD_AFTER_MS', WORKER_DEFAULTS.deadAfterMs),
    shutdownGraceMs: intEnv('BALLAST_SHUTDOWN_GRACE_MS', WORKER_DEFAULTS.shutdownGraceMs),
    // 0 turns the alert checks off (intEnv takes positive numbers only).
    alertIntervalMs: process.env.BALLAST_ALERT_INTERVAL_MS?.trim() === '0' ? 0 : intEnv('BALLAST_ALERT_INTERVAL_MS', WORKER_DEFAULTS.alertIntervalMs),
    watchdog: {
      maxStallMs: intEnv('BALLAST_MAX_STALL_MS', WORKER_DEFAULTS.maxStallMs),
      quarantineAfter: intEnv('BALLAST_QUARANTINE_AFTER', WORKER_DEFAULTS.quarantineAfter),
    },
    // A supervised child runs under the id its supervisor gave it (src/worker/supervisor.ts).
    ...(process.env.BALLAST_WORKER_ID ? { workerId: process.env.BALLAST_WORKER_ID } : {}),
  };
}

/** Whether `worker` and `start` run their worker in a supervised child process (BALLAST_SUPERVISE, default yes). */
function supervised(): boolean {
  return process.env.BALLAST_SUPERVISE !== '0';
}

/** While `what` runs longer than a few seconds, says every few seconds that the stop still waits for it. */
async function waitingFor<T>(log: Logger, what: string, work: Promise<T>, everyMs = 3000): Promise<T> {
  const started = Date.now();
  const timer = setInterval(() => {
    log.info({ waiting_for: what, waited_s: Math.round((Date.now() - started) / 1000) },
      `still stopping: waiting for ${what} (${Math.round((Date.now() - started) / 1000)} s); Ctrl-C again to stop at once`);
  }, everyMs);
  try {
    return await work;
  } finally {
    clearInterval(timer);
  }
}

interface Resource {
  /** What the stop waits for while this one stops, e.g. "the embedded Postgres to shut down". */
  what: string;
  /** Stops it; `force`: at once, without waiting for work in progress (may be called while a graceful stop runs). */
  stop(force: boolean): Promise<void>;
}

/**
 * What a running command holds, stopped in reverse order on the first signal or a failure; a second signal forces
 * (stop(true) of what is left, the one stopping now included), a third exits at once.
 */
export class Lifetime {
  #held: Resource[] = [];
  #current: Resource | undefined;
  #signals = 0;
  #stopping: Promise<void> | undefined;
  #forcing: Promise<void> | undefined;
  readonly #log: Logger;

  /** `child`: a supervised worker process, stopped by its parent (its signals are not a user's Ctrl-C). */
  readonly #child: boolean;

  constructor(log: Logger, opts: { child?: boolean } = {}) {
    this.#log = log;
    this.#child = opts.child ?? false;
  }

  get stopping(): boolean {
    return this.#stopping !== undefined || this.#forcing !== undefined;
  }

  /** Registers a resource; one registered while stopping (a start still under way) is stopped at once. */
  hold(what: string, stop: (force: boolean) => Promise<void>): void {
    const r = { what, stop };
    if (this.#forcing) void this.#stopOne(r, true);
    else if (this.#stopping) void this.#stopOne(r, false);
    else this.#held.push(r);
  }

  async #stopOne(r: Resource, force: boolean): Promise<void> {
    try {
      await waitingFor(this.#log, r.what, r.stop(force));
    } catch (err) {
      this.#log.warn({ err: (err as Error).message }, `could not stop cleanly: ${r.what}`);
    }
  }

  /** Stops everything, last held first (once); resolves when all is stopped. */
  stop(): Promise<void> {
    return (this.#stopping ??= (async () => {
      while (this.#held.length > 0 && !this.#forcing) {
        this.#current = this.#held.pop()!;
        await this.#stopOne(this.#current, false);
        this.#current = undefined;
      }
      if (this.#forcing) await this.#forcing;
    })());
  }

  /** Stops what is left at once: the graceful stop under way is not waited for. */
  force(): Promise<void> {
    return (this.#forcing ??= (async () => {
      const left = [...(this.#current ? [this.#current] : []), ...this.#held.reverse()];
      this.#held = [];
      for (const r of left) {
        await Promise.race([this.#stopOne(r, true), new Promise((done) => setTimeout(done, 10_000).unref())]);
      }
    })());
  }

  /** A stop signal: the first stops, the second forces, the third exits at once; `exit` gets the exit code. */
  signal(signal: NodeJS.Signals, exit: (code: number) => void): void {
    this.#signals += 1;
    if (this.#signals === 1) {
      if (this.#child) this.#log.info({ signal }, 'stopping the worker process');
      else this.#log.info({ signal, hint: 'Ctrl-C again to stop at once' }, 'shutting down');
      void this.stop().then(() => exit(0));
    } else if (this.#signals === 2) {
      this.#log.warn({ signal }, 'forced stop: running steps are not waited for (the reaper releases them to the next worker)');
      void this.force().then(() => exit(130));
    } else {
      this.#log.warn({ signal }, 'exiting now');
      exit(130);
    }
  }

  /** SIGINT and SIGTERM: see signal(). */
  onSignals(exit: (code: number) => void): void {
    process.on('SIGINT', (s) => this.signal(s, exit));
    process.on('SIGTERM', (s) => this.signal(s, exit));
  }
}

/** Times the phases of a start, for the log ("database ready", "migrated", ...: each with its ms). */
function phaseTimer() {
  let last = performance.now();
  return () => {
    const now = performance.now();
    const ms = Math.round(now - last);
    last = now;
    return ms;
  };
}

/**
 * Runs the worker under a supervisor (src/worker/supervisor.ts): resolves once the first child process started its worker.
 * Stopping sends the child SIGTERM (graceful: it finishes or releases its running steps), forcing a second SIGTERM
 * (it exits at once), and after 5 s more SIGKILL.
 */
async function superviseFromCli(url: string, log: Logger, env: Record<string, string>, life: Lifetime): Promise<Supervisor> {
  const supervisor = superviseWorker({
    connectionString: url, log, env,
    quarantineAfter: intEnv('BALLAST_QUARANTINE_AFTER', WORKER_DEFAULTS.quarantineAfter),
  });
  let graceful = false;
  life.hold('the worker process to finish its running steps (BALLAST_SHUTDOWN_GRACE_MS)', async (force) => {
    if (!force) {
      graceful = true;
      await supervisor.stop('SIGTERM');
      return;
    }
    // A second SIGTERM makes the child exit at once; without a first one, or when it does not exit, SIGKILL.
    void supervisor.stop(graceful ? 'SIGTERM' : 'SIGKILL');
    const kill = setTimeout(() => void supervisor.stop('SIGKILL'), 5000);
    await supervisor.done;
    clearTimeout(kill);
  });
  // Supervision that ends by itself once the worker ran (its child cannot be restarted) ends the command. A child that
  // dies before it started fails the start below.
  let started = false;
  void supervisor.done.then((code) => {
    if (started && !life.stopping) {
      log.error({ code }, 'the worker process ended; shutting down');
      void life.stop().then(() => process.exit(code || 1));
    }
  });
  try {
    await supervisor.ready;
  } catch (err) {
    throw new CliError(`${(err as Error).message}; its own error is above`, { code: 'worker_failed', cause: err });
  }
  started = true;
  return supervisor;
}

/** Prometheus metrics on BALLAST_METRICS_PORT, when it is set. */
async function serveMetrics(db: BallastDb, log: Logger, life?: Lifetime): Promise<void> {
  const raw = process.env.BALLAST_METRICS_PORT;
  if (!raw) return;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`BALLAST_METRICS_PORT=${raw} is not a port number`);
  let m: Awaited<ReturnType<typeof startMetricsServer>>;
  try {
    m = await startMetricsServer({ port, db, host: process.env.BALLAST_METRICS_HOST || undefined });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      throw new CliError(`port ${port} of the metrics is in use`, { code: 'port_in_use', hint: 'set BALLAST_METRICS_PORT to a free port, or unset it' });
    }
    throw err;
  }
  life?.hold('the metrics server to close', () => m.close());
  log.info({ url: m.url }, `Prometheus metrics at ${m.url}`);
}

/**
 * The GraphQL API (src/server) on `url`. Loaded on demand: the other commands do not pay for PostGraphile. In
 * development a missing BALLAST_JWT_SECRET is taken from (or, with createSecret, written to) .ballast/jwt-secret.
 */
async function startApi(url: string, log: Logger, life: Lifetime, opts: { createSecret: boolean; dev: boolean }) {
  process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === 'production' ? 'production' : 'development';
  const [{ startServer }, { resolveJwtSecret }] = await Promise.all([import('../server/index.ts'), import('../server/dev-secret.ts')]);
  const { secret, source } = resolveJwtSecret(dataDir(), opts.createSecret);
  const generated = secret !== undefined && source !== 'BALLAST_JWT_SECRET';
  if (generated && !opts.dev) {
    throw new UsageError(`refusing to serve with the generated development secret (${source}): anyone who can read it mints any token`,
      'set BALLAST_JWT_SECRET (e.g. `openssl rand -base64 48`) or BALLAST_JWKS_URL, or pass --dev on a development machine');
  }
  if (generated) {
    log.warn({ jwt_secret: source }, 'DEVELOPMENT MODE: API tokens are signed with a generated secret kept in .ballast/; never expose this server');
  }
  const api = await startServer({ connectionString: url, log, jwt: { secret } });
  life.hold('the GraphQL API to close its connections', () => api.stop());
  log.info({ url: api.url, jwt_secret: source }, `GraphQL API at ${api.url}` +
    (api.settings.graphiql ? ` (Ruru: ${api.url.replace(/\/graphql$/, '/graphiql')})` : '') +
    (secret ? '; mint a token with `npm run ballast -- token --role client --tenant default`' : ''));
  return api;
}

/** The API's port (BALLAST_GRAPHQL_PORT, default 5678), refused before anything starts when another program holds it. */
async function checkApiPort(): Promise<void> {
  const raw = process.env.BALLAST_GRAPHQL_PORT;
  const port = raw === undefined || raw === '' ? 5678 : Number(raw);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) return; // 0 (any) needs no check; a bad value is the API's to refuse
  const host = process.env.BALLAST_GRAPHQL_HOST || '127.0.0.1';
  if (!(await portIsFree(port, host))) {
    throw new CliError(`port ${port} of the GraphQL API is in use (${host}:${port}; another \`npm start\` or \`ballast serve\`?)`, {
      code: 'port_in_use', hint: 'set BALLAST_GRAPHQL_PORT to a free port (0 picks any free one), or stop the program that holds it',
    });
  }
}

/** Follows a job in the log until it ends (src/cli.ts). */
export type FollowJob = (url: string, jobId: string, log: Logger) => Promise<void>;

/** The demo jobs of `start`, one after the other, each followed in the log to its end. */
const DEMOS: { pipeline: string; input: unknown; about: string }[] = [
  {
    pipeline: 'demo.wordstats', about: '',
    input: { text: 'Ballast keeps every job in Postgres. Every step of every job is a row, and every row tells the truth.', top: 3 },
  },
  {
    // A model step on the built-in local model: traced in ballast.model_calls like a call to a real provider.
    pipeline: 'demo.triage', about: ' (model step)',
    input: { text: 'The parcel from Acme arrived two weeks late and the screen was cracked. I want a refund.' },
  },
  {
    // Fails on purpose, retries once, then lands in the dead letters: what `report dead-letters` and `replay` show.
    pipeline: 'demo.invoice', about: ' (fails on purpose: a dead letter to replay)',
    input: { customer: 'acme', amount_cents: 129_00, currency: 'XTS' },
  },
];

/**
 * Submits the demo jobs once per database (an idempotency key per demo and input): a later start finds them done and
 * says so instead of running them again (the model demo alone costs a second loading its model).
 */
async function runDemos(db: BallastDb, url: string, log: Logger, followJob: FollowJob): Promise<void> {
  if (process.env.BALLAST_DEMO === '0') return;
  // The pipelines a running worker serves (this start's worker registered its own; run in a child, its list is here).
  const { rows } = await db.pool.query<{ name: string }>(
    `select distinct split_part(ref, '@', 1) as name from ballast.workers, unnest(pipelines) as ref where stopped_at is null`);
  const registered = new Set(rows.map((r) => r.name));
  for (const demo of DEMOS) {
    if (!registered.has(demo.pipeline)) continue;
    const key = `demo:${demo.pipeline}:${createHash('sha256').update(JSON.stringify(demo.input)).digest('hex').slice(0, 12)}`;
    const { jobId, created } = await db.submitJob({ pipeline: demo.pipeline, input: demo.input, idempotencyKey: key });
    log.info({ job_id: jobId, created }, `demo job ${jobId}${demo.about} ${created ? 'submitted' : 'was submitted by an earlier start'}`);
    await followJob(url, jobId, log);
  }
}

/** `ballast start`: the all-in-one for development. Resolves once it is ready; runs until a signal. */
export async function start(log: Logger, followJob: FollowJob): Promise<void> {
  const life = new Lifetime(log);
  life.onSignals((code) => process.exit(code));
  const elapsed = phaseTimer();
  try {
    const handle = await openDatabase({ embedded: true, log, check: true });
    life.hold(handle.embedded ? 'the embedded Postgres to shut down' : 'the database', () => handle.close());
    log.info({ database: redact(handle.url), embedded: Boolean(handle.embedded), ms: elapsed() }, 'database ready');
    await checkApiPort();
    const { applied } = await migrate(handle.url, log);
    log.info({ applied: applied.length, ms: elapsed() }, applied.length ? 'migrated' : 'migrations: already up to date');

    const db = new BallastDb(createPool(handle.url, { max: 2, applicationName: 'ballast-start' }));
    life.hold('the database pool to close', (force) => (force ? Promise.resolve() : db.close()));
    // The worker and the API start side by side (each loads its own modules: together about two seconds of CPU).
    const worker = supervised()
      // The worker runs in a child process that is restarted when it crashes or its watchdog kills it; it serves the
      // metrics (its counters live there). This process keeps the database, the API and the demo.
      ? superviseFromCli(handle.url, log, { DATABASE_URL: handle.url }, life)
      : startInProcessWorker(handle.url, log, life);
    worker.catch(() => {});
    await Promise.all([
      worker.then(() => log.info({ ms: elapsed() }, 'worker ready')),
      startApi(handle.url, log, life, { createSecret: true, dev: true }),
    ]);
    log.info({ ms: elapsed() }, 'worker and API ready');
    await runDemos(db, handle.url, log, followJob);
    if (process.env.BALLAST_DEMO !== '0') log.debug({ ms: elapsed() }, 'demo jobs done');
  } catch (err) {
    if (life.stopping) return new Promise<void>(() => {}); // a signal stopped the start: the stop exits
    await life.stop();
    throw err;
  }
  // The URL holds the embedded superuser's password: it stays in .ballast/url (0600), not in a log line.
  log.info(
    `ready. Submit your own job from another terminal:\n` +
      `  npm run ballast -- submit demo.wordstats --input '{"text":"hello world"}'\n` +
      `  psql "$(npm run -s ballast -- url)" -c "select * from ballast.submit_job('demo.wordstats', '{\\"text\\": \\"hello world\\"}')"\n` +
      `See what failed: npm run ballast -- report dead-letters\n` +
      `Add pipelines in tasks/ and restart. Ctrl-C stops.`,
  );
}

/** The worker in this process (BALLAST_SUPERVISE=0, or a supervised child). */
async function startInProcessWorker(url: string, log: Logger, life: Lifetime) {
  const [{ loadPipelines }, { startWorker }] = await Promise.all([import('../pipeline/load.ts'), import('../worker/worker.ts')]);
  const pipelines = await loadPipelines(process.env.BALLAST_TASKS_DIR ?? 'tasks');
  // BALLAST_EVALS=1: this worker also runs eval runs of its pipelines' model steps (docs/evals.md).
  const worker = await startWorker({ connectionString: url, pipelines, ...workerSettings(), log, evals: process.env.BALLAST_EVALS === '1' });
  life.hold('the worker to finish its running steps (BALLAST_SHUTDOWN_GRACE_MS)', async (force) => {
    if (force) {
      await reportRunning(worker.db, worker.id, log, 'not waiting for (the reaper releases them to the next worker)');
      return;
    }
    await reportRunning(worker.db, worker.id, log, 'waiting for');
    await worker.stop();
  });
  await serveMetrics(worker.db, log, life);
  return worker;
}

/** Logs the steps this worker is running (what a stop waits for). */
async function reportRunning(db: BallastDb, workerId: string, log: Logger, what: string): Promise<void> {
  try {
    const { rows } = await db.pool.query<{ job_id: string; pipeline: string; step: string; running_s: number }>(
      `select a.job_id, j.pipeline, s.name as step, round(extract(epoch from now() - a.started_at))::int as running_s
         from ballast.attempts a join ballast.steps s on s.id = a.step_id join ballast.jobs j on j.id = a.job_id
        where a.worker_id = $1 and a.finished_at is null order by a.started_at limit 20`, [workerId]);
    if (rows.length === 0) return;
    log.info({ steps: rows }, `${what} ${rows.length} running step(s): ` +
      rows.map((r) => `job ${r.job_id} ${r.pipeline}/${r.step} (${r.running_s} s)`).join(', '));
  } catch {
    // best effort: the stop goes on without the list
  }
}

/** `ballast worker`: supervised (a child runs the worker) or in this process; runs until a signal. */
export async function worker(log: Logger): Promise<void> {
  const child = process.env[SUPERVISED_ENV] === '1';
  const life = new Lifetime(log, { child });
  if (child) {
    // The supervisor decides when this process stops: SIGTERM, a second one to force. A Ctrl-C in the terminal
    // reaches the whole process group and is the parent's to pass on.
    process.on('SIGINT', () => {});
    process.on('SIGTERM', (s) => life.signal(s, (code) => process.exit(code)));
  } else {
    life.onSignals((code) => process.exit(code));
  }
  const handle = await openDatabase({ embedded: false, log, check: !child });
  // A supervised child's parent has migrated already.
  if (!child) await migrate(handle.url, log);
  if (!child && supervised()) {
    await superviseFromCli(handle.url, log, {}, life);
    return;
  }
  const w = await startInProcessWorker(handle.url, log, life);
  if (child) {
    process.send?.({ type: 'ready', workerId: w.id });
    // The supervisor is gone (killed): stop gracefully rather than run on unsupervised.
    process.on('disconnect', () => {
      log.warn('the supervisor process is gone; stopping');
      void life.stop().then(() => process.exit(0));
    });
  }
}

/** `ballast serve`: the API alone; runs until a signal. */
export async function serve(log: Logger, dev: boolean): Promise<void> {
  const handle = await openDatabase({ embedded: false, log, check: true });
  const life = new Lifetime(log);
  life.onSignals((code) => process.exit(code));
  try {
    await startApi(handle.url, log, life, { createSecret: false, dev });
    const metricsDb = new BallastDb(createPool(handle.url, { max: 2, applicationName: 'ballast-metrics' }));
    life.hold('the metrics pool to close', (force) => (force ? Promise.resolve() : metricsDb.close()));
    await serveMetrics(metricsDb, log, life);
  } catch (err) {
    await life.stop();
    throw err;
  }
}

/** `ballast migrate`: apply migrations and exit. */
export async function migrateCommand(log: Logger): Promise<number> {
  const handle = await openDatabase({ embedded: !process.env.DATABASE_URL, log, check: true });
  try {
    const { applied } = await migrate(handle.url, log);
    log.info({ applied: applied.length }, applied.length ? 'migrated' : 'already up to date');
  } finally {
    await handle.close();
  }
  return 0;
}
