#!/usr/bin/env -S node --max-semi-space-size=4 --heap-growing-percent=20
// The `ballast` command. `start` is the all-in-one for development: database (DATABASE_URL, or an embedded Postgres
// in .ballast/), migrations, a worker for the pipelines in tasks/, and a demo job followed live in the log.
// The shebang's V8 flags bound the heap V8 keeps between collections (a worker's RSS); their only copy is here, and
// `npm start`, `npm run worker` and the benchmark's worker children take them from this line (src/node-flags.ts).
// `env -S` splits them (GNU coreutils 8.30+, macOS, FreeBSD; on Alpine install coreutils).
//
// Each command is a function in COMMANDS below; an ordinary failure is one line with a hint (src/cli/errors.ts).
import type { Logger } from 'pino';
import type { BallastDb as BallastDbType } from './db/api.ts';
import { isFinalJobStatus } from './statuses.ts';
import { WORKER_DEFAULTS, workerSettingsHelp } from './worker/defaults.ts';
import { actor, durationOption, jobIdArg, parseCommandArgs, readInput, timeOption, timeOrDurationOption } from './cli/args.ts';
import { describeError, formatError, formatErrorJson, UsageError } from './cli/errors.ts';

// Modules are loaded when a command needs them, not at start: `ballast --help` loads none, `submit` the database
// doorway only, `start` and `worker` src/cli/run.ts (and the worker where it runs: about a second of CPU to import).
// loadCore() and loadRuntime() fill these bindings; the functions below use them after their command loaded them.
let createLogger: typeof import('./log.ts').createLogger;
let dataDir: typeof import('./db/connection.ts').dataDir;
let openDatabase: typeof import('./db/connection.ts').openDatabase;
let connectionProblem: typeof import('./db/connection.ts').connectionProblem;
let BallastDb: typeof import('./db/api.ts').BallastDb;
let createPool: typeof import('./db/api.ts').createPool;
let withNumbers: typeof import('./cli/json.ts').withNumbers;
let listenEvents: typeof import('./db/events-listener.ts').listenEvents;
type BallastDb = BallastDbType;

/** What every command but help needs: logging, the database doorway, the JSON output. */
async function loadCore(): Promise<void> {
  const [log, connection, api, json] = await Promise.all([
    import('./log.ts'), import('./db/connection.ts'), import('./db/api.ts'), import('./cli/json.ts')]);
  ({ createLogger } = log);
  ({ dataDir, openDatabase, connectionProblem } = connection);
  ({ BallastDb, createPool } = api);
  ({ withNumbers } = json);
}

/** What running things needs: src/cli/run.ts (migrations, the supervisor, metrics, the API), live events. */
async function loadRuntime(): Promise<typeof import('./cli/run.ts')> {
  const [run, listener] = await Promise.all([import('./cli/run.ts'), import('./db/events-listener.ts')]);
  ({ listenEvents } = listener);
  return run;
}

/** The help text (the report names come from the reports module, loaded for it). */
async function helpText(): Promise<string> {
  const { reportNames } = await import('./db/report-about.ts');
  return HELP.replace('__REPORT_NAMES__', reportNames()).replace('__WORKER_SETTINGS__', workerSettingsHelp());
}

const HELP = `ballast: a Postgres-native job engine

Usage: ballast <command> [options]      (from this project: npm run ballast -- <command> ...)

Commands
  start                 database + migrations + worker + API + demo jobs (development all-in-one); Ctrl-C stops
                               (it says what it waits for), a second Ctrl-C stops at once
  migrate               apply migrations (graphile-worker's, then ballast's) and exit
  worker                run a worker for the pipelines in the tasks directory
  submit <pipeline>     submit a job; prints the job id
      --input <json|@file|->   job input (default {})
      --key <text>             idempotency key (same key + same input returns the same job)
      --tenant <id>            tenant (default "default")
      --priority <n>           lower runs first (default 0)
      --version <n>            pin a pipeline version (default: newest)
      --run-at <time>          start at this time (ISO 8601): the job is scheduled until then
      --delay <duration>       start after this long (500ms, 30s, 10m, 2h, 1d), by the database clock
      --deadline <time|dur>    the job must finish by then (ISO 8601, or a duration from now): else it fails
      --expires <time|dur>     the job must start by then (ISO 8601, or a duration from now): else it fails
      --debounce <key> --quiet <duration> [--max-wait <duration>]
                               one job per burst of submissions with the key: a later one replaces its input and
                               pushes its start to --quiet from now (at most --max-wait after the first)
      --throttle <key> --period <duration>
                               at most one job per key per period (a later one returns the key's last job)
      --json                   print the result as JSON
  status <job-id>       the job, its steps, the prompt versions it is pinned to, its parent and its child jobs (--json)
  cancel <job-id>       cancel a job and its unfinished child jobs (--reason <text>)
  replay <job-id>       run failed steps again (--step <name> to replay that step and what follows; --reason <text>;
                        --fresh-calls to call model providers again instead of reusing their stored answers)
  send-event <key>      deliver an event to one tenant's steps waiting for it (--payload <json|@file|->, --tenant <id>: default 'default')
  watch <job-id>        follow a job live (each step's transitions and progress) until it ends with its result
      --timeout <seconds>      stop watching after this long (exit 124)
      --json                   JSON lines: the state, then each event, then the final job
      --tokens                 also the text streaming model steps send, as it arrives (live tokens)
  schedule set <name>   create or replace a cron schedule: each slot submits a job of the pipeline, once
      --pipeline <name> --cron '<min hour day month weekday>'|@daily|@hourly|...  (required)
      --input <json|@file|->  --tz <zone, default UTC>  --tenant <id>  --version <n>  --priority <n>
      --on-missed skip|catch_up  (missed slots: skip, or fire each, at most --max-catch-up <n>, default 10)
  schedule pause|resume|delete <name>   (--reason <text> with pause, --tenant <id>)
  schedule list         the schedules: cron, time zone, next slot, fired and skipped counts (--tenant <id>, --json)
  pause <key>           pause a key: steps with it are not started until the pause ends or \`resume\` (keys: global,
                               tenant:<id>, pipeline:<name>, step:<pipeline>.<step>, provider:<p>, model:<p>:<m>, queue:...)
      --reason <text>          why (required; kept in the history)
      --for <duration>         30s, 10m, 1h, 1d; or --until <ISO time>; neither: until resumed
  resume <key>          resume a paused key; the steps it held back are queued at once (--reason <text>)
  pauses                the paused keys: key, until, in force, reason, by (--json)
  limit set <pattern>   create or replace a limit on a key, or on each key of a prefix ending in * (tenant:*)
      --requests <n>/<period>  at most n steps per period (100/1m; periods 500ms, 30s, 1m, 1h, 1d)
      --weight <n>/<period>    at most n of the steps' weight (e.g. tokens) per period (90000/1m)
      --running <n>            at most n steps running at once
      --burst <n>              with --requests/--weight: how many may start at once after a quiet time (default 1)
      --note <text>            why the limit exists
  limit delete <pattern> <kind>   remove the limit of that kind (requests, weight or running)
  limits                the limits: pattern, kind, amount, period, burst, keys seen (--json)
  gate-history [<key>]  pauses, resumes and limit changes, newest first (of one key or pattern; --limit <n>, --json)
  fair-share on         fair sharing between tenants: tenants with queued work take turns, by weight (--weight <w>:
                               the default weight of tenants without one, default 1; above 0, at most 1000000)
  fair-share set <tenant> <weight>   a tenant's weight (3: three times the share of weight 1); turns fair sharing on
  fair-share off        turn fair sharing off: weights forgotten, first come, first served again
  fair-shares           the fair-sharing weights: tenant (* the default), weight, finish tag, set by, set at (--json)
  prompts list          prompts, their versions and labels (canaries with their share); --json
  prompts show <name>   a prompt's labels and every version's words
  prompts create <name> --user <template|@file> [--system <template|@file>]   the next version (immutable)
  prompts label <name> <label> <version> --reason <text>   point a label at a version (audited; new jobs get it)
  prompts canary <name> <label> <version> <share> --reason <text>   send a share (0.1 or 10%) of the label's new
                               jobs to a candidate version; \`off\` instead of version and share ends the canary
  prompts history [<name>]   label and canary moves, newest first (--limit <n>, --json)
  prompts arms <name> [<label>]   the label's traffic per version and arm: jobs, first-pass rate, fallback, review,
                               rejection, score, cost per success, latency (--since <ISO time>, default 7 days; --json)
  prompts compare <name> [<label>]   the canary arm against the stable arm side by side: rates, score, cost,
                               latency, deltas with 95 % intervals; exits 8 when the candidate regressed (--since,
                               --until <ISO time>, --threshold <drop>, --min-samples <n> per arm, default 20; --json)
  alerts                drift and budget alerts, newest first (--open, --kind drift|budget, --limit <n>, --json)
  alerts ack <id>       acknowledge an alert (--note <text>); it stays open until it resolves
  alerts check          evaluate every drift and budget alert rule once (workers do it every 30 s)
  eval run              start an eval run: --dataset <d> --pipeline <p> --step <s> [--prompt-version <n>] [--model <m>]
      [--scorers <json|@file>] [--threshold <0..1>] [--label <text>] [--tenant <id>] [--wait] [--json]
  eval compare <base> <candidate>   two eval runs case by case (--threshold <drop>, --all, --json); exits 8 when the
      candidate regressed (mean delta or any case below -threshold), for CI gates
  eval cases <dataset>  the cases of a dataset's current version (--json)
  eval promote <step-id> --dataset <d>   a production step becomes a case (its real input; the reviewed output as reference)
  jobs                  list jobs, newest first
      --status <status> --pipeline <name> --tenant <id> --since <interval, e.g. '1 hour'> --limit <n> --json
      --parent <job-id>        the child jobs of a job
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
  DATABASE_URL          Postgres to use; without it \`start\` runs an embedded Postgres in .ballast/ (BALLAST_DATA_DIR),
                        on the same port every start (.ballast/port) while that port is free
  BALLAST_TASKS_DIR     folder of pipeline files (default ./tasks)
  BALLAST_DEMO          0 to skip the demo jobs on start (they run once per database: demo.wordstats, demo.triage,
                        and demo.invoice, which fails on purpose to show a dead letter)
__WORKER_SETTINGS__
  BALLAST_SUPERVISE     0 to run \`worker\`/\`start\` in one process, without a supervisor that restarts a worker
                        process that crashed or was killed by its watchdog (default: supervised)
  BALLAST_ACTOR         who you are, recorded on cancel/replay/send-event events (default: cli:$USER)
  BALLAST_GRAPHQL_PORT  port of the GraphQL API (default 5678; 0 picks a free one); BALLAST_GRAPHQL_HOST to bind
  BALLAST_JWT_SECRET    HS256 secret of API tokens (development: generated into .ballast/jwt-secret)
  BALLAST_JWKS_URL      JWKS of an identity provider (RS256/ES256 tokens); BALLAST_JWT_ISSUER, BALLAST_JWT_AUDIENCE
  BALLAST_GRAPHQL_MAX_DEPTH, _MAX_COST, _MAX_PAGE, _DEFAULT_PAGE, _MAX_BODY, _STATEMENT_TIMEOUT_MS   API limits
  BALLAST_METRICS_PORT  serve Prometheus metrics at :<port>/metrics from \`worker\`, \`serve\` and \`start\` (a port of
                        its own; BALLAST_METRICS_HOST to bind, default 127.0.0.1)
  LOG_LEVEL             pino level (default info); LOG_FORMAT=json to keep JSON in a terminal

Exit codes
  0 success (watch: the job completed)   2 usage error   3 no such job
  1 failed: no database, or it refused (DATABASE_URL), a port in use, the data directory in use; or a bug (with a stack)
  4 refused by ballast (invalid input, conflict, not allowed; the message says why)
  watch: 5 partially completed, 6 failed, 7 cancelled, 124 timeout; eval compare, prompts compare: 8 the candidate regressed
  An error is one line on stderr (ballast: what was wrong; what to do). With --json it is one JSON line on stderr:
  {"error":{"code":"...","message":"...","hint":"...","exitCode":2}}; --json results print ids, counts and costs as numbers.
`;

/** Runs `fn` with a database doorway; a database that cannot be reached is reported as such (one line). */
async function withDb<T>(fn: (db: BallastDb) => Promise<T>): Promise<T> {
  const handle = await openDatabase({ embedded: false });
  const db = new BallastDb(createPool(handle.url, { max: 2 }));
  try {
    return await fn(db);
  } catch (err) {
    const cause = (err as { cause?: unknown }).cause;
    const source = process.env.DATABASE_URL ? 'DATABASE_URL' : '.ballast/url';
    throw connectionProblem(err, handle.url, source) ?? connectionProblem(cause, handle.url, source) ?? err;
  } finally {
    await db.close();
  }
}

/** Prints a result of --json: ballast's numbers (ids, tokens, costs) as JSON numbers. */
function printJson(value: unknown): void {
  console.log(JSON.stringify(withNumbers(value)));
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

type Command = (args: string[], log: () => Logger) => Promise<number>;

/** Keeps running (until a signal): main leaves the exit code alone. */
const RUNNING = -1;

async function start(_args: string[], log: () => Logger): Promise<number> {
  const run = await loadRuntime();
  await run.start(log(), followJob);
  return RUNNING;
}

async function migrateCommand(_args: string[], log: () => Logger): Promise<number> {
  return (await loadRuntime()).migrateCommand(log());
}

async function worker(_args: string[], log: () => Logger): Promise<number> {
  await (await loadRuntime()).worker(log());
  return RUNNING;
}

async function serve(args: string[], log: () => Logger): Promise<number> {
  const { values } = parseCommandArgs(args, { dev: { type: 'boolean' } });
  await (await loadRuntime()).serve(log(), Boolean(values.dev));
  return RUNNING;
}

async function url(args: string[]): Promise<number> {
  parseCommandArgs(args, {});
  // The full URL, password included: for psql and scripts, never for logs.
  const handle = await openDatabase({ embedded: false });
  console.log(handle.url);
  return 0;
}

async function token(args: string[]): Promise<number> {
  const { values } = parseCommandArgs(args, {
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
    throw new UsageError(`--expires: ${(err as Error).message}`);
  }
  console.log(await mintToken(secret, {
    role: role as 'client' | 'operator' | 'reporter', expiresInS,
    tenantId: values.tenant ?? (role === 'client' ? 'default' : undefined),
    subject: values.sub ?? process.env.USER ?? 'developer',
    issuer: process.env.BALLAST_JWT_ISSUER || undefined, audience: process.env.BALLAST_JWT_AUDIENCE || undefined,
  }));
  return 0;
}

async function submit(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    input: { type: 'string' }, key: { type: 'string' }, tenant: { type: 'string' },
    priority: { type: 'string' }, version: { type: 'string' }, json: { type: 'boolean' },
    'run-at': { type: 'string' }, delay: { type: 'string' }, deadline: { type: 'string' }, expires: { type: 'string' },
    debounce: { type: 'string' }, quiet: { type: 'string' }, 'max-wait': { type: 'string' },
    throttle: { type: 'string' }, period: { type: 'string' },
  });
  const pipeline = positionals[0];
  const runAt = timeOption('--run-at', values['run-at']);
  const delayMs = durationOption('--delay', values.delay);
  if (runAt && delayMs !== undefined) throw new UsageError('--run-at and --delay cannot be combined: give one of them');
  const deadline = timeOrDurationOption('--deadline', values.deadline);
  const expiresAt = timeOrDurationOption('--expires', values.expires);
  const quietMs = durationOption('--quiet', values.quiet);
  const maxWaitMs = durationOption('--max-wait', values['max-wait']);
  const periodMs = durationOption('--period', values.period);
  if ((values.debounce === undefined) !== (quietMs === undefined)) throw new UsageError('--debounce <key> and --quiet <duration> go together');
  if (maxWaitMs !== undefined && values.debounce === undefined) throw new UsageError('--max-wait needs --debounce <key> --quiet <duration>');
  if ((values.throttle === undefined) !== (periodMs === undefined)) throw new UsageError('--throttle <key> and --period <duration> go together');
  const debounce = values.debounce === undefined ? null : { key: values.debounce, quietMs: quietMs!, maxWaitMs: maxWaitMs ?? null };
  const throttle = values.throttle === undefined ? null : { key: values.throttle, periodMs: periodMs! };
  if (!pipeline) throw new UsageError('submit needs a pipeline name, e.g. `ballast submit demo.wordstats --input \'{"text":"hi"}\'`');
  const priority = values.priority === undefined ? 0 : Number(values.priority);
  if (!Number.isInteger(priority)) throw new UsageError(`--priority ${values.priority} is not an integer (-1000..1000, lower runs first)`);
  const version = values.version === undefined ? null : Number(values.version);
  if (version !== null && !Number.isInteger(version)) throw new UsageError(`--version ${values.version} is not an integer`);
  const input = readInput(values.input);
  const result = await withDb((db) =>
    db.submitJob({ pipeline, input, idempotencyKey: values.key ?? null, tenantId: values.tenant ?? 'default', priority, pipelineVersion: version, runAt: runAt ?? null, delayMs: delayMs ?? null, deadline: deadline ?? null, expiresAt: expiresAt ?? null, debounce, throttle }),
  );
  if (values.json) printJson(result);
  else console.log(`job ${result.jobId} ${result.created ? 'submitted' : 'already existed (same idempotency key)'}: ${pipeline}@${result.pipelineVersion}, ${result.status}`);
  return 0;
}

async function cancel(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { reason: { type: 'string' }, json: { type: 'boolean' } });
  const jobId = jobIdArg(positionals[0], 'cancel');
  const r = await withDb((db) => db.cancelJob(jobId, values.reason, actor()));
  if (values.json) printJson(r);
  else console.log(r.alreadyCancelled ? `job ${jobId} was already cancelled` : `job ${jobId} cancelled (${r.cancelledStepIds.length} steps stopped)`);
  return 0;
}

async function replay(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { step: { type: 'string' }, reason: { type: 'string' }, 'fresh-calls': { type: 'boolean' }, json: { type: 'boolean' } });
  const jobId = jobIdArg(positionals[0], 'replay');
  const r = await withDb((db) => db.replayJob(jobId, { ...(values.step ? { fromStep: values.step } : {}), ...(values.reason ? { reason: values.reason } : {}), actor: actor(),
    freshCalls: values['fresh-calls'] === true }));
  if (values.json) printJson(r);
  else console.log(`job ${jobId} replaying ${r.replayedStepIds.length} step(s); now ${r.jobStatus}`);
  return 0;
}

async function sendEvent(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { payload: { type: 'string' }, tenant: { type: 'string' }, json: { type: 'boolean' } });
  const key = positionals[0];
  if (!key) throw new UsageError('send-event needs a key, e.g. `ballast send-event approval:42 --payload \'{"ok":true}\' --tenant acme`');
  const payload = values.payload === undefined ? null : readInput(values.payload, '--payload');
  const r = await withDb((db) => db.sendEvent(key, payload, actor(), values.tenant));
  if (values.json) printJson(r);
  else console.log(r.accepted ? `event ${key} delivered; resumed ${r.resumedStepIds.length} step(s)` : `event ${key} was already delivered; nothing changed`);
  return 0;
}

async function watch(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { timeout: { type: 'string' }, json: { type: 'boolean' }, tokens: { type: 'boolean' } });
  const jobId = jobIdArg(positionals[0], 'watch');
  const timeoutS = values.timeout === undefined ? null : Number(values.timeout);
  if (timeoutS !== null && !(timeoutS > 0)) throw new UsageError(`--timeout ${values.timeout} is not a positive number of seconds`);
  const [{ watchJob }, handle] = await Promise.all([import('./cli/watch.ts'), openDatabase({ embedded: false })]);
  return withDb((db) => watchJob({ url: handle.url, db, jobId, json: Boolean(values.json), tokens: Boolean(values.tokens), timeoutMs: timeoutS === null ? null : timeoutS * 1000 }));
}

async function jobs(args: string[]): Promise<number> {
  const { values } = parseCommandArgs(args, {
    status: { type: 'string' }, pipeline: { type: 'string' }, tenant: { type: 'string' }, since: { type: 'string' },
    limit: { type: 'string' }, parent: { type: 'string' }, json: { type: 'boolean' },
  });
  const { listJobsCommand } = await import('./cli/ops.ts');
  return withDb((db) => listJobsCommand(db, values));
}

async function schedule(args: string[]): Promise<number> {
  const { scheduleCommand } = await import('./cli/schedule.ts');
  return withDb((db) => scheduleCommand(db, args));
}

/** fair-share, fair-shares: src/cli/fair-share.ts (fair sharing between tenants). */
const fair = (name: 'fairShareCommand' | 'fairSharesCommand'): Command =>
  async (args) => {
    const commands = await import('./cli/fair-share.ts');
    return withDb((db) => commands[name](db, args));
  };

/** eval run|compare|cases|promote: src/cli/eval.ts (evals as data). */
async function evalCli(args: string[]): Promise<number> {
  const { evalCommand } = await import('./cli/eval.ts');
  return withDb((db) => evalCommand(db, args));
}

/** alerts [--open], alerts ack <id>, alerts check: src/cli/alerts.ts (drift and budget alerts). */
async function alerts(args: string[]): Promise<number> {
  const { alertsCommand } = await import('./cli/alerts.ts');
  return withDb((db) => alertsCommand(db, args));
}

/** pause, resume, pauses, limit, limits, gate-history: src/cli/gates.ts (pauses and limits on keys). */
const gates = (name: 'pauseCommand' | 'resumeCommand' | 'pausesCommand' | 'limitCommand' | 'limitsCommand' | 'gateHistoryCommand'): Command =>
  async (args) => {
    const commands = await import('./cli/gates.ts');
    return withDb((db) => commands[name](db, args));
  };

async function report(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, {
    since: { type: 'string' }, period: { type: 'string' }, limit: { type: 'string' }, json: { type: 'boolean' },
  });
  const { reportCommand } = await import('./cli/ops.ts');
  return withDb((db) => reportCommand(db, positionals[0], values));
}

async function status(args: string[]): Promise<number> {
  const { values, positionals } = parseCommandArgs(args, { json: { type: 'boolean' } });
  const jobId = jobIdArg(positionals[0], 'status');
  const { jobPrompts } = await import('./db/prompts.ts');
  const found = await withDb(async (db) => ({
    job: await db.getJob(jobId), steps: await db.getSteps(jobId), children: await db.getChildJobs(jobId), prompts: await jobPrompts(db.pool, jobId),
  }));
  if (!found.job) {
    if (values.json) console.error(formatErrorJson({ code: 'not_found', message: `job ${jobId} does not exist`, exitCode: 3 }));
    else console.error(`ballast: job ${jobId} does not exist`);
    return 3;
  }
  if (values.json) {
    printJson(found);
  } else {
    const j = found.job;
    console.log(`job ${j.id} ${j.pipeline}@${j.pipeline_version} ${j.status}${j.parent_job_id ? ` (child of job ${j.parent_job_id}, step ${j.parent_step_id})` : ''}`);
    for (const s of found.steps) console.log(`  ${s.name.padEnd(24)} ${s.status.padEnd(12)} attempts ${s.attempts}/${s.max_attempts}`);
    // Prompt labels (prompts.md): the version the job got for each label it resolved, and from which arm.
    for (const p of found.prompts) console.log(`prompt ${p.promptName}@${p.label} -> version ${p.version} (${p.arm}, pinned ${p.pinnedAt.toISOString()})`);
    if (found.children.length > 0) console.log(`child jobs (${found.children.length}):`);
    for (const c of found.children) console.log(`  job ${String(c.id).padEnd(19)} ${`${c.pipeline}@${c.pipeline_version}`.padEnd(24)} ${c.status}`);
    if (j.result !== null) console.log(`result: ${JSON.stringify(j.result)}`);
    if (j.error !== null) console.log(`error: ${JSON.stringify(j.error)}`);
  }
  return 0;
}

/** The commands by name (the help lists them). */
const COMMANDS: Record<string, Command> = {
  start, migrate: migrateCommand, worker, serve, url, token, submit, status, cancel, replay, 'send-event': sendEvent, watch, schedule, jobs, report,
  pause: gates('pauseCommand'), resume: gates('resumeCommand'), pauses: gates('pausesCommand'), limit: gates('limitCommand'),
  limits: gates('limitsCommand'), 'gate-history': gates('gateHistoryCommand'),
  'fair-share': fair('fairShareCommand'), 'fair-shares': fair('fairSharesCommand'), alerts, eval: evalCli,
  prompts: async (args) => {
    const { promptsCommand } = await import('./cli/prompts.ts');
    return withDb((db) => promptsCommand(db, args));
  },
};

/** `ballast <command> --help`: the command's part of the help. */
async function commandHelp(command: string): Promise<number> {
  const lines = (await helpText()).split('\n');
  const head = new RegExp(`^  ${command.replace(/[^a-z-]/g, '')}\\b`);
  // Every block of the command (schedule has several): its first line and the indented lines under it.
  const picked: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!head.test(lines[i]!)) continue;
    picked.push(lines[i]!);
    while (i + 1 < lines.length && /^ {4,}/.test(lines[i + 1]!)) picked.push(lines[++i]!);
  }
  if (picked.length === 0) throw new UsageError(`unknown command "${command}"; run \`ballast help\` for the list`);
  console.log(`Usage: ballast ${picked.join('\n').trim()}\n\nballast help lists every command, the environment and the exit codes.`);
  return 0;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    console.log(await helpText());
    return command === undefined ? 2 : 0;
  }
  if (rest.includes('--help') || rest.includes('-h')) return commandHelp(command);
  const run = Object.hasOwn(COMMANDS, command) ? COMMANDS[command] : undefined;
  if (!run) throw new UsageError(`unknown command "${command}"; run \`ballast help\` for the list`);
  await loadCore();
  let log: Logger | undefined;
  return run(rest, () => (log ??= createLogger()));
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (err: unknown) => {
    const report = describeError(err);
    const json = argv.includes('--json');
    if (report) {
      console.error(json ? formatErrorJson(report) : formatError(report));
      process.exitCode = report.exitCode;
    } else {
      const message = (err as Error).stack ?? String(err);
      console.error(json ? formatErrorJson({ code: 'unexpected', message: String((err as Error).message ?? err), exitCode: 1 }) : `ballast: ${message}`);
      process.exitCode = 1;
    }
  },
);
