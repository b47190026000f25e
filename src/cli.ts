#!/usr/bin/env -S node --max-semi-space-size=4 --heap-growing-percent=20
// The `ballast` command. `start` is the all-in-one for development: database (DATABASE_URL, or an embedded Postgres
// in .ballast/), migrations, a worker for the pipelines in tasks/, and a demo job followed live in the log.
// The shebang's V8 flags bound the heap V8 keeps between collections (a worker's RSS); their only copy is here, and
// `npm start`, `npm run worker` and the benchmark's worker children take them from this line (src/node-flags.ts).
// `env -S` splits them (GNU coreutils 8.30+, macOS, FreeBSD; on Alpine install coreutils).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { BallastDb as BallastDbType } from './db/api.ts';
import { isFinalJobStatus } from './statuses.ts';
import { WORKER_DEFAULTS, workerSettingsHelp } from './worker-defaults.ts';

// Modules are loaded when a command needs them, not at start: `ballast --help` loads none, `submit` the database
// doorway only, `start` and `worker` the worker (whose import alone costs about a second of CPU). loadCore() and
// loadRuntime() fill these bindings; the functions below use them after their command loaded them.
let createLogger: typeof import('./log.ts').createLogger;
let migrate: typeof import('./db/migrate.ts').migrate;
let redact: typeof import('./db/migrate.ts').redact;
let dataDir: typeof import('./db/connection.ts').dataDir;
let openDatabase: typeof import('./db/connection.ts').openDatabase;
let BallastDb: typeof import('./db/api.ts').BallastDb;
let createPool: typeof import('./db/api.ts').createPool;
let loadPipelines: typeof import('./load.ts').loadPipelines;
let startWorker: typeof import('./worker.ts').startWorker;
let BallastError: typeof import('./errors.ts').BallastError | undefined;
let InvalidInputError: typeof import('./errors.ts').InvalidInputError | undefined;
let startMetricsServer: typeof import('./metrics.ts').startMetricsServer;
let CliUsageError: typeof import('./cli/ops.ts').CliUsageError | undefined;
let listJobsCommand: typeof import('./cli/ops.ts').listJobsCommand;
let reportCommand: typeof import('./cli/ops.ts').reportCommand;
let watchJob: typeof import('./cli/watch.ts').watchJob;
let listenEvents: typeof import('./db/events-listener.ts').listenEvents;
let SUPERVISED_ENV: typeof import('./supervisor.ts').SUPERVISED_ENV;
let superviseWorker: typeof import('./supervisor.ts').superviseWorker;
type BallastDb = BallastDbType;

/** What every command but help needs: logging, the database doorway, errors, the read commands. */
async function loadCore(): Promise<void> {
  const [log, connection, api, errors, ops] = await Promise.all([
    import('./log.ts'), import('./db/connection.ts'), import('./db/api.ts'), import('./errors.ts'), import('./cli/ops.ts')]);
  ({ createLogger } = log);
  ({ dataDir, openDatabase } = connection);
  ({ BallastDb, createPool } = api);
  ({ BallastError, InvalidInputError } = errors);
  ({ CliUsageError, listJobsCommand, reportCommand } = ops);
}

/** What running things needs: migrations, the worker and its supervisor, metrics, live events. */
async function loadRuntime(): Promise<void> {
  const [mig, load, worker, metrics, watch, listener, supervisor] = await Promise.all([
    import('./db/migrate.ts'), import('./load.ts'), import('./worker.ts'), import('./metrics.ts'), import('./cli/watch.ts'),
    import('./db/events-listener.ts'), import('./supervisor.ts')]);
  ({ migrate, redact } = mig);
  ({ loadPipelines } = load);
  ({ startWorker } = worker);
  ({ startMetricsServer } = metrics);
  ({ watchJob } = watch);
  ({ listenEvents } = listener);
  ({ SUPERVISED_ENV, superviseWorker } = supervisor);
}

/** The help text (the report names come from the reports module, loaded for it). */
async function helpText(): Promise<string> {
  const { reportNames } = await import('./db/report-about.ts');
  return HELP.replace('__REPORT_NAMES__', reportNames()).replace('__WORKER_SETTINGS__', workerSettingsHelp());
}

const HELP = `ballast: a Postgres-native job engine

Usage: ballast <command> [options]      (from this project: npm run ballast -- <command> ...)

Commands
  start                 database + migrations + worker + a demo job (development all-in-one)
  migrate               apply migrations (graphile-worker's, then ballast's) and exit
  worker                run a worker for the pipelines in the tasks directory
  submit <pipeline>     submit a job; prints the job id
      --input <json|@file|->   job input (default {})
      --key <text>             idempotency key (same key + same input returns the same job)
      --tenant <id>            tenant (default "default")
      --priority <n>           lower runs first (default 0)
      --version <n>            pin a pipeline version (default: newest)
      --json                   print the result as JSON
  status <job-id>       the job and its steps (--json for JSON)
  cancel <job-id>       cancel a job (--reason <text>)
  replay <job-id>       run failed steps again (--step <name> to replay that step and what follows; --reason <text>)
  send-event <key>      deliver an event to one tenant's steps waiting for it (--payload <json|@file|->, --tenant <id>: default 'default')
  watch <job-id>        follow a job live (each step's transitions and progress) until it ends with its result
      --timeout <seconds>      stop watching after this long (exit 124)
      --json                   JSON lines: the state, then each event, then the final job
  jobs                  list jobs, newest first
      --status <status> --pipeline <name> --tenant <id> --since <interval, e.g. '1 hour'> --limit <n> --json
  report <name>         a report from SQL as a table (--since '7 days', --period hour|day, --limit <n>, --json):
__REPORT_NAMES__
  serve                 the GraphQL API alone (http://127.0.0.1:5678/graphql; start runs it beside the worker)
      --dev                    accept tokens signed with the development secret in .ballast/jwt-secret (refused
                               otherwise: set BALLAST_JWT_SECRET or BALLAST_JWKS_URL)
  url                   print the database URL (DATABASE_URL, or the one \`start\` wrote to .ballast/url, mode 0600):
                               psql "$(npm run -s ballast -- url)"
  token                 mint a development JWT for the GraphQL API (HS256, BALLAST_JWT_SECRET or .ballast/jwt-secret)
      --role <role>            client, operator or reporter (default client)
      --tenant <id>            the tenant a client acts for (default "default")
      --sub <name>             the subject, recorded as jwt:<name> in the audit trail (default $USER)
      --expires <duration>     lifetime: 30m, 1h, 7d, or seconds (default 1h)

Environment
  DATABASE_URL          Postgres to use; without it \`start\` runs an embedded Postgres in .ballast/
  BALLAST_TASKS_DIR     folder of pipeline files (default ./tasks)
  BALLAST_DEMO          0 to skip the demo job on start
__WORKER_SETTINGS__
  BALLAST_SUPERVISE     0 to run \`worker\`/\`start\` in one process, without a supervisor that restarts a worker
                        process that crashed or was killed by its watchdog (default: supervised)
  BALLAST_ACTOR         who you are, recorded on cancel/replay/send-event events (default: $USER)
  BALLAST_GRAPHQL_PORT  port of the GraphQL API (default 5678; 0 picks a free one); BALLAST_GRAPHQL_HOST to bind
  BALLAST_JWT_SECRET    HS256 secret of API tokens (development: generated into .ballast/jwt-secret)
  BALLAST_JWKS_URL      JWKS of an identity provider (RS256/ES256 tokens); BALLAST_JWT_ISSUER, BALLAST_JWT_AUDIENCE
  BALLAST_GRAPHQL_MAX_DEPTH, _MAX_COST, _MAX_PAGE, _DEFAULT_PAGE, _MAX_BODY, _STATEMENT_TIMEOUT_MS   API limits
  BALLAST_METRICS_PORT  serve Prometheus metrics at :<port>/metrics from \`worker\`, \`serve\` and \`start\` (a port of
                        its own, to keep it on an internal interface: BALLAST_METRICS_HOST, default 0.0.0.0)
  LOG_LEVEL             pino level (default info); LOG_FORMAT=json to keep JSON in a terminal

Exit codes
  0 success (watch: the job completed)   1 unexpected error   2 usage error   3 no such job
  4 refused by ballast (invalid input, conflict, not allowed; the message says why)
  watch: 5 partially completed, 6 failed, 7 cancelled, 124 timeout
`;

class UsageError extends Error {}

/** Worker settings from the environment (see HELP). */
function workerSettings() {
  return {
    concurrency: intEnv('BALLAST_CONCURRENCY', WORKER_DEFAULTS.concurrency),
    leaseMs: intEnv('BALLAST_LEASE_MS', WORKER_DEFAULTS.leaseMs),
    heartbeatMs: intEnv('BALLAST_HEARTBEAT_MS', WORKER_DEFAULTS.heartbeatMs),
    lostAfterMs: intEnv('BALLAST_LOST_AFTER_MS', WORKER_DEFAULTS.lostAfterMs),
    deadAfterMs: intEnv('BALLAST_DEAD_AFTER_MS', WORKER_DEFAULTS.deadAfterMs),
    shutdownGraceMs: intEnv('BALLAST_SHUTDOWN_GRACE_MS', WORKER_DEFAULTS.shutdownGraceMs),
    watchdog: {
      maxStallMs: intEnv('BALLAST_MAX_STALL_MS', WORKER_DEFAULTS.maxStallMs),
      quarantineAfter: intEnv('BALLAST_QUARANTINE_AFTER', WORKER_DEFAULTS.quarantineAfter),
    },
    // A supervised child runs under the id its supervisor gave it (src/supervisor.ts).
    ...(process.env.BALLAST_WORKER_ID ? { workerId: process.env.BALLAST_WORKER_ID } : {}),
  };
}

/** Whether `worker` and `start` run their worker in a supervised child process (BALLAST_SUPERVISE, default yes). */
function supervised(): boolean {
  return process.env.BALLAST_SUPERVISE !== '0';
}

/**
 * Runs the worker under a supervisor (src/supervisor.ts): resolves once the first child process started its worker;
 * SIGINT/SIGTERM stop the child gracefully, then `onStopped` runs.
 */
async function superviseFromCli(url: string, log: Logger, env: Record<string, string>, onStopped: (code: number) => Promise<void>) {
  const supervisor = superviseWorker({
    connectionString: url, log, env,
    quarantineAfter: intEnv('BALLAST_QUARANTINE_AFTER', WORKER_DEFAULTS.quarantineAfter),
  });
  const stop = (signal: NodeJS.Signals) => {
    log.info({ signal }, 'stopping the worker process');
    void supervisor.stop(signal);
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  void supervisor.done.then(onStopped);
  await supervisor.ready;
  return supervisor;
}

function actor(): string {
  return process.env.BALLAST_ACTOR || `cli:${process.env.USER ?? 'unknown'}`;
}

function jobIdArg(value: string | undefined, command: string): string {
  if (!value || !/^\d+$/.test(value)) throw new UsageError(`${command} needs a job id (a number), e.g. \`ballast ${command} 42\``);
  return value;
}

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name}=${raw} is not a positive integer; unset it or set e.g. ${name}=${fallback}`);
  return n;
}

function readInput(value: string | undefined): unknown {
  if (value === undefined) return {};
  const text = value === '-' ? readFileSync(0, 'utf8') : value.startsWith('@') ? readFileSync(value.slice(1), 'utf8') : value;
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`--input is not valid JSON (${(err as Error).message}); pass a JSON value, @file.json or - for stdin`);
  }
}

/**
 * node:util parseArgs, with two fixes for a command line: a value that starts with "-" (`--priority -5`) is taken as
 * the value of the option before it instead of refused, and a parse error is a usage error (exit 2), not a crash.
 */
function parseCommandArgs<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O) {
  const takesValue = new Set(Object.entries(options).filter(([, o]) => o.type === 'string').map(([name]) => `--${name}`));
  const joined: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const next = args[i + 1];
    if (takesValue.has(arg) && next !== undefined && next.startsWith('-') && next !== '-' && !next.startsWith('--')) {
      joined.push(`${arg}=${next}`);
      i++;
    } else {
      joined.push(arg);
    }
  }
  try {
    return parseArgs({ args: joined, allowPositionals: true, options });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; run \`ballast help\` for the options`);
  }
}

async function withDb<T>(fn: (db: BallastDb) => Promise<T>): Promise<T> {
  const handle = await openDatabase({ embedded: false });
  const db = new BallastDb(createPool(handle.url, { max: 2 }));
  try {
    return await fn(db);
  } finally {
    await db.close();
  }
}

/** Follows one job through LISTEN ballast_events and logs each transition until it finishes. */
async function followJob(url: string, jobId: string, log: Logger): Promise<void> {
  let resolve: () => void = () => {};
  const finished = new Promise<void>((r) => { resolve = r; });
  const listener = await listenEvents(url, (e) => {
    if (String(e.job_id) !== jobId || e.type === 'step_progress') return;
    log.info({ job_id: jobId, event: e.type, status: e.status }, `demo job ${jobId}: ${e.type}`);
    if (e.step_id === null && isFinalJobStatus(e.status)) resolve();
  });
  const db = new BallastDb(createPool(url, { max: 1 }));
  try {
    const job = await db.getJob(jobId);
    if (job && !isFinalJobStatus(job.status)) await finished;
    const final = await db.getJob(jobId);
    log.info({ job_id: jobId, status: final?.status, result: final?.result, error: final?.error }, `demo job ${jobId} ${final?.status}`);
  } finally {
    await listener.close();
    await db.close();
  }
}

/**
 * The GraphQL API (src/server) on `url`. Loaded on demand: the other commands do not pay for PostGraphile. In
 * development a missing BALLAST_JWT_SECRET is taken from (or, with createSecret, written to) .ballast/jwt-secret.
 */
async function startApi(url: string, log: Logger, opts: { createSecret: boolean; dev: boolean }) {
  process.env.GRAPHILE_ENV ??= process.env.NODE_ENV === 'production' ? 'production' : 'development';
  const [{ startServer }, { resolveJwtSecret }] = await Promise.all([import('./server/index.ts'), import('./server/dev-secret.ts')]);
  const { secret, source } = resolveJwtSecret(dataDir(), opts.createSecret);
  const generated = secret !== undefined && source !== 'BALLAST_JWT_SECRET';
  if (generated && !opts.dev) {
    throw new UsageError(`refusing to serve with the generated development secret (${source}): anyone who can read it mints any token. ` +
      'Set BALLAST_JWT_SECRET (e.g. `openssl rand -base64 48`) or BALLAST_JWKS_URL, or pass --dev on a development machine.');
  }
  if (generated) {
    log.warn({ jwt_secret: source }, 'DEVELOPMENT MODE: API tokens are signed with a generated secret kept in .ballast/; never expose this server');
  }
  const api = await startServer({ connectionString: url, log, jwt: { secret } });
  log.info({ url: api.url, jwt_secret: source }, `GraphQL API at ${api.url}` +
    (api.settings.graphiql ? ` (Ruru: ${api.url.replace(/\/graphql$/, '/graphiql')})` : '') +
    (secret ? '; mint a token with `npm run ballast -- token --role client --tenant default`' : ''));
  return api;
}

/** Prometheus metrics on BALLAST_METRICS_PORT, when it is set. */
async function serveMetrics(db: BallastDb, log: Logger): Promise<void> {
  const raw = process.env.BALLAST_METRICS_PORT;
  if (!raw) return;
  const port = Number(raw);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`BALLAST_METRICS_PORT=${raw} is not a port number`);
  const m = await startMetricsServer({ port, db, host: process.env.BALLAST_METRICS_HOST || undefined });
  log.info({ url: m.url }, `Prometheus metrics at ${m.url}`);
}

async function start(log: Logger): Promise<void> {
  const handle = await openDatabase({ embedded: true, log });
  log.info({ database: redact(handle.url), embedded: Boolean(handle.embedded) }, 'database ready');
  await migrate(handle.url, log);
  const pipelines = await loadPipelines(process.env.BALLAST_TASKS_DIR ?? 'tasks');
  let api: Awaited<ReturnType<typeof startApi>> | undefined;
  let db: BallastDb | undefined;
  if (supervised()) {
    // The worker runs in a child process that is restarted when it crashes or its watchdog kills it; it serves the
    // metrics (its counters live there). This process keeps the database, the API and the demo.
    await superviseFromCli(handle.url, log, { DATABASE_URL: handle.url }, async (code) => {
      log.info('shutting down');
      await api?.stop();
      await db?.close();
      await handle.close();
      process.exit(code);
    });
    db = new BallastDb(createPool(handle.url, { max: 2, applicationName: 'ballast-start' }));
    api = await startApi(handle.url, log, { createSecret: true, dev: true });
  } else {
    const worker = await startWorker({ connectionString: handle.url, pipelines, ...workerSettings(), log });
    db = worker.db;
    api = await startApi(handle.url, log, { createSecret: true, dev: true });
    await serveMetrics(worker.db, log);
    let stopping = false;
    const shutdown = async (signal: string) => {
      if (stopping) return;
      stopping = true;
      log.info({ signal }, 'shutting down');
      await api?.stop();
      await worker.stop();
      await handle.close();
      process.exit(0);
    };
    process.on('SIGINT', () => void shutdown('SIGINT'));
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
  }
  const worker = { db: db! };

  if (process.env.BALLAST_DEMO !== '0' && pipelines.some((p) => p.name === 'demo.wordstats')) {
    const { jobId } = await worker.db.submitJob({
      pipeline: 'demo.wordstats',
      input: { text: 'Ballast keeps every job in Postgres. Every step of every job is a row, and every row tells the truth.', top: 3 },
    });
    log.info({ job_id: jobId }, `demo job ${jobId} submitted`);
    await followJob(handle.url, jobId, log);
  }
  if (process.env.BALLAST_DEMO !== '0' && pipelines.some((p) => p.name === 'demo.triage')) {
    // A model step on the built-in local model: traced in ballast.model_calls like a call to a real provider.
    const { jobId } = await worker.db.submitJob({
      pipeline: 'demo.triage',
      input: { text: 'The parcel from Acme arrived two weeks late and the screen was cracked. I want a refund.' },
    });
    log.info({ job_id: jobId }, `demo job ${jobId} (model step) submitted`);
    await followJob(handle.url, jobId, log);
  }
  // The URL holds the embedded superuser's password: it stays in .ballast/url (0600), not in a log line.
  log.info(
    `ready. Submit your own job from another terminal:\n` +
      `  npm run ballast -- submit demo.wordstats --input '{"text":"hello world"}'\n` +
      `  psql "$(npm run -s ballast -- url)" -c "select * from ballast.submit_job('demo.wordstats', '{\\"text\\": \\"hello world\\"}')"\n` +
      `Add pipelines in tasks/ and restart. Ctrl-C stops.`,
  );
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    console.log(await helpText());
    return command === undefined ? 2 : 0;
  }
  if (command && (rest.includes('--help') || rest.includes('-h'))) {
    // `ballast <command> --help`: the command's part of the help.
    const lines = (await helpText()).split('\n');
    const at = lines.findIndex((l) => new RegExp(`^  ${command.replace(/[^a-z-]/g, '')}\\b`).test(l));
    if (at < 0) throw new UsageError(`unknown command "${command}"; run \`ballast help\` for the list`);
    let end = at + 1;
    while (end < lines.length && /^ {4,}/.test(lines[end]!)) end++;
    console.log(`Usage: ballast ${lines.slice(at, end).join('\n').trim()}\n\nballast help lists every command, the environment and the exit codes.`);
    return 0;
  }
  await loadCore();
  // Commands that run things (or follow them live) load the runtime; the others stay quick.
  if (['start', 'migrate', 'worker', 'serve', 'watch', 'url'].includes(command)) await loadRuntime();
  const log = createLogger();
  switch (command) {
    case 'start':
      await start(log);
      return -1; // keep running until a signal
    case 'migrate': {
      const handle = await openDatabase({ embedded: !process.env.DATABASE_URL, log });
      try {
        const { applied } = await migrate(handle.url, log);
        log.info({ applied: applied.length }, applied.length ? 'migrated' : 'already up to date');
      } finally {
        await handle.close();
      }
      return 0;
    }
    case 'worker': {
      const handle = await openDatabase({ embedded: false, log });
      const child = process.env[SUPERVISED_ENV] === '1';
      // A supervised child's parent has migrated already.
      if (!child) await migrate(handle.url, log);
      if (!child && supervised()) {
        await superviseFromCli(handle.url, log, {}, async (code) => process.exit(code));
        return -1;
      }
      const pipelines = await loadPipelines(process.env.BALLAST_TASKS_DIR ?? 'tasks');
      const worker = await startWorker({ connectionString: handle.url, pipelines, ...workerSettings(), log });
      await serveMetrics(worker.db, log);
      const stop = () => void worker.stop().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      if (child) {
        process.send?.({ type: 'ready', workerId: worker.id });
        // The supervisor is gone (killed): stop gracefully rather than run on unsupervised.
        process.on('disconnect', () => {
          log.warn('the supervisor process is gone; stopping');
          stop();
        });
      }
      return -1;
    }
    case 'serve': {
      const handle = await openDatabase({ embedded: false, log });
      const dev = rest.includes('--dev');
      const api = await startApi(handle.url, log, { createSecret: false, dev });
      const metricsDb = new BallastDb(createPool(handle.url, { max: 2, applicationName: 'ballast-metrics' }));
      await serveMetrics(metricsDb, log);
      const stop = () => void api.stop().then(() => process.exit(0));
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      return -1;
    }
    case 'url': {
      // The full URL, password included: for psql and scripts, never for logs.
      const handle = await openDatabase({ embedded: false });
      console.log(handle.url);
      return 0;
    }
    case 'token': {
      const { values } = parseCommandArgs(rest, {
        role: { type: 'string' }, tenant: { type: 'string' }, sub: { type: 'string' }, expires: { type: 'string' },
      });
      const role = values.role ?? 'client';
      if (!['client', 'operator', 'reporter'].includes(role)) throw new UsageError(`--role ${role} is not client, operator or reporter`);
      const [{ mintToken, parseDuration }, { resolveJwtSecret }] = await Promise.all([import('./server/auth.ts'), import('./server/dev-secret.ts')]);
      const { secret } = resolveJwtSecret(dataDir(), true);
      if (!secret) throw new UsageError('no secret to sign with: set BALLAST_JWT_SECRET (in production tokens come from your identity provider)');
      let expiresInS: number;
      try {
        expiresInS = parseDuration(values.expires ?? '1h');
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      console.log(await mintToken(secret, {
        role: role as 'client' | 'operator' | 'reporter', expiresInS,
        tenantId: values.tenant ?? (role === 'client' ? 'default' : undefined),
        subject: values.sub ?? process.env.USER ?? 'developer',
        issuer: process.env.BALLAST_JWT_ISSUER || undefined, audience: process.env.BALLAST_JWT_AUDIENCE || undefined,
      }));
      return 0;
    }
    case 'submit': {
      const { values, positionals } = parseCommandArgs(rest, {
        input: { type: 'string' }, key: { type: 'string' }, tenant: { type: 'string' },
        priority: { type: 'string' }, version: { type: 'string' }, json: { type: 'boolean' },
      });
      const pipeline = positionals[0];
      if (!pipeline) throw new UsageError('submit needs a pipeline name, e.g. `ballast submit demo.wordstats --input \'{"text":"hi"}\'`');
      const priority = values.priority === undefined ? 0 : Number(values.priority);
      if (!Number.isInteger(priority)) throw new UsageError(`--priority ${values.priority} is not an integer (-1000..1000, lower runs first)`);
      const version = values.version === undefined ? null : Number(values.version);
      if (version !== null && !Number.isInteger(version)) throw new UsageError(`--version ${values.version} is not an integer`);
      const input = readInput(values.input);
      const result = await withDb((db) =>
        db.submitJob({ pipeline, input, idempotencyKey: values.key ?? null, tenantId: values.tenant ?? 'default', priority, pipelineVersion: version }),
      );
      if (values.json) console.log(JSON.stringify(result));
      else console.log(`job ${result.jobId} ${result.created ? 'submitted' : 'already existed (same idempotency key)'}: ${pipeline}@${result.pipelineVersion}, ${result.status}`);
      return 0;
    }
    case 'cancel': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { reason: { type: 'string' }, json: { type: 'boolean' } } });
      const jobId = jobIdArg(positionals[0], 'cancel');
      const r = await withDb((db) => db.cancelJob(jobId, values.reason, actor()));
      if (values.json) console.log(JSON.stringify(r));
      else console.log(r.alreadyCancelled ? `job ${jobId} was already cancelled` : `job ${jobId} cancelled (${r.cancelledStepIds.length} steps stopped)`);
      return 0;
    }
    case 'replay': {
      const { values, positionals } = parseArgs({
        args: rest, allowPositionals: true,
        options: { step: { type: 'string' }, reason: { type: 'string' }, json: { type: 'boolean' } },
      });
      const jobId = jobIdArg(positionals[0], 'replay');
      const r = await withDb((db) => db.replayJob(jobId, { ...(values.step ? { fromStep: values.step } : {}), ...(values.reason ? { reason: values.reason } : {}), actor: actor() }));
      if (values.json) console.log(JSON.stringify(r));
      else console.log(`job ${jobId} replaying ${r.replayedStepIds.length} step(s); now ${r.jobStatus}`);
      return 0;
    }
    case 'send-event': {
      const { values, positionals } = parseArgs({ args: rest, allowPositionals: true, options: { payload: { type: 'string' }, tenant: { type: 'string' }, json: { type: 'boolean' } } });
      const key = positionals[0];
      if (!key) throw new UsageError('send-event needs a key, e.g. `ballast send-event approval:42 --payload \'{"ok":true}\' --tenant acme`');
      const payload = values.payload === undefined ? null : readInput(values.payload);
      const r = await withDb((db) => db.sendEvent(key, payload, actor(), values.tenant));
      if (values.json) console.log(JSON.stringify(r));
      else console.log(r.accepted ? `event ${key} delivered; resumed ${r.resumedStepIds.length} step(s)` : `event ${key} was already delivered; nothing changed`);
      return 0;
    }
    case 'watch': {
      const { values, positionals } = parseCommandArgs(rest, { timeout: { type: 'string' }, json: { type: 'boolean' } });
      const jobId = jobIdArg(positionals[0], 'watch');
      const timeoutS = values.timeout === undefined ? null : Number(values.timeout);
      if (timeoutS !== null && !(timeoutS > 0)) throw new UsageError(`--timeout ${values.timeout} is not a positive number of seconds`);
      const handle = await openDatabase({ embedded: false });
      return withDb((db) => watchJob({ url: handle.url, db, jobId, json: Boolean(values.json), timeoutMs: timeoutS === null ? null : timeoutS * 1000 }));
    }
    case 'jobs': {
      const { values } = parseCommandArgs(rest, {
        status: { type: 'string' }, pipeline: { type: 'string' }, tenant: { type: 'string' }, since: { type: 'string' },
        limit: { type: 'string' }, json: { type: 'boolean' },
      });
      return withDb((db) => listJobsCommand(db, values));
    }
    case 'report': {
      const { values, positionals } = parseCommandArgs(rest, {
        since: { type: 'string' }, period: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' },
      });
      return withDb((db) => reportCommand(db, positionals[0], values));
    }
    case 'status': {
      const { values, positionals } = parseCommandArgs(rest, { json: { type: 'boolean' } });
      const jobId = positionals[0];
      if (!jobId || !/^\d+$/.test(jobId)) throw new UsageError('status needs a job id (a number), e.g. `ballast status 42`');
      const found = await withDb(async (db) => ({ job: await db.getJob(jobId), steps: await db.getSteps(jobId) }));
      if (!found.job) {
        console.error(`job ${jobId} does not exist`);
        return 3;
      }
      if (values.json) {
        console.log(JSON.stringify(found));
      } else {
        const j = found.job;
        console.log(`job ${j.id} ${j.pipeline}@${j.pipeline_version} ${j.status}`);
        for (const s of found.steps) console.log(`  ${s.name.padEnd(24)} ${s.status.padEnd(12)} attempts ${s.attempts}/${s.max_attempts}`);
        if (j.result !== null) console.log(`result: ${JSON.stringify(j.result)}`);
        if (j.error !== null) console.log(`error: ${JSON.stringify(j.error)}`);
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown command "${command}"; run \`ballast help\` for the list`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError || (CliUsageError && err instanceof CliUsageError)) {
      console.error(`ballast: ${(err as Error).message}`);
      process.exitCode = 2;
    } else if (InvalidInputError && err instanceof InvalidInputError) {
      console.error(`ballast: ${err.message}`);
      for (const issue of err.issues) console.error(`  ${issue.path}: ${issue.message}`);
      process.exitCode = 4;
    } else if (BallastError && err instanceof BallastError) {
      console.error(`ballast: ${err.code}: ${err.message}`);
      process.exitCode = 4;
    } else {
      console.error(`ballast: ${(err as Error).stack ?? String(err)}`);
      process.exitCode = 1;
    }
  },
);
