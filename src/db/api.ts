// The database doorway: every SQL statement the TypeScript side runs is in this file, one typed method per ballast
// verb. Everything else (worker, CLI, tests' helpers) calls these methods, so the TypeScript API, psql and GraphQL
// all go through the same SQL functions.
import pg from 'pg';
import { Kysely, PostgresDialect, sql } from 'kysely';
import type { Logger } from 'pino';
import { BallastError, translateError, WaitTimeoutError } from '../errors.ts';
import { isFinalJobStatus } from '../statuses.ts';
// The client verbs (submit, cancel, replay, send_event) are verbs.ts's statements, shared with the GraphQL server:
// one statement per verb, not a copy per caller.
import * as gates from './gates.ts';
import * as verbs from './verbs.ts';
import type { Database, JobsView, StepsView, AttemptsView, EventsView, JobStatus, StepStatus } from './schema.ts';
import type { Selectable } from 'kysely';

export type Job = Selectable<JobsView>;
export type Step = Selectable<StepsView>;
export type Attempt = Selectable<AttemptsView>;
export type BallastEvent = Selectable<EventsView>;

export interface SubmitJobArgs {
  pipeline: string;
  input?: unknown;
  idempotencyKey?: string | null;
  tenantId?: string;
  priority?: number;
  pipelineVersion?: number | null;
  /** Start later (migration 0039): the job is `scheduled` until this time. A time now or past starts it at once. */
  runAt?: Date | string | null;
  /** Start in this many milliseconds (by the database clock); not with runAt. */
  delayMs?: number | null;
  /** The job must finish by then: its unfinished steps fail (deadline_exceeded) and so does the job. */
  deadline?: Date | string | null;
  /** The job must start by then: still scheduled or queued, it fails (expired). */
  expiresAt?: Date | string | null;
  /**
   * One job per burst of submissions with this key (per tenant and pipeline): while the job is scheduled, a later
   * submission replaces its input and pushes its start to quietMs from now (at most maxWaitMs after the first);
   * created is false. Not with runAt/delayMs or idempotencyKey.
   */
  debounce?: { key: string; quietMs: number; maxWaitMs?: number | null } | null;
  /** At most one job per key per periodMs: a submission within the period returns the key's last job (created false). */
  throttle?: { key: string; periodMs: number } | null;
}

export interface SubmitJobResult {
  jobId: string;
  created: boolean;
  status: JobStatus;
  pipelineVersion: number;
}

export interface SubmitJobsArgs {
  pipeline: string;
  /** One input per job (undefined: {}), at most 1000 per call. */
  inputs: readonly unknown[];
  /** One key (or null) per input, in the order of `inputs`; leave out for no deduplication. */
  idempotencyKeys?: readonly (string | null)[] | null;
  tenantId?: string;
  priority?: number;
  pipelineVersion?: number | null;
  /** Start every job later (see SubmitJobArgs.runAt). */
  runAt?: Date | string | null;
  /** Start every job in this many milliseconds (see SubmitJobArgs.delayMs). */
  delayMs?: number | null;
  /** See SubmitJobArgs.deadline. */
  deadline?: Date | string | null;
  /** See SubmitJobArgs.expiresAt. */
  expiresAt?: Date | string | null;
}

/** One per input of submitJobs, in input order. */
export interface SubmitJobsResult {
  jobId: string;
  created: boolean;
  status: JobStatus;
}

export interface Claim {
  attemptId: string;
  attemptNumber: number;
  maxAttempts: number;
  stepId: string;
  stepName: string;
  jobId: string;
  tenantId: string;
  pipeline: string;
  pipelineVersion: number;
  input: unknown;
  dependencies: Record<string, unknown>;
  idempotencyKey: string;
  timeoutMs: number | null;
  leaseExpiresAt: Date;
  /** Side effects this step recorded in earlier attempts: key -> result. */
  effects: Record<string, unknown>;
  /** The pipeline step whose code runs: the step itself, or for an item of a map step the map step. */
  definitionStep: string;
  /** For an item of a map step: its index and the item; null otherwise. */
  itemIndex: number | null;
  item: unknown;
}

export interface StepError {
  class: string;
  message: string;
  code?: string | undefined;
  retryable?: boolean | undefined;
  retryAfterMs?: number | undefined;
  /** 'timed_out' when the step's timeout stopped the attempt. */
  outcome?: 'failed' | 'timed_out' | undefined;
}

export function createPool(connectionString: string, opts: { max?: number; applicationName?: string; log?: Logger } = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 10,
    application_name: opts.applicationName ?? 'ballast',
  });
  // A connection that dies while idle (server restart, network) must not crash the process: pg emits 'error' on
  // the pool and on the client; the next checkout opens a fresh connection.
  const app = opts.applicationName ?? 'ballast';
  // Once the pool is ending, pg closes its connections without waiting; a server stopping right after is expected.
  pool.on('error', (err) => {
    if (!pool.ending) opts.log?.warn({ err: err.message, pool: app }, 'idle database connection failed; it will be replaced');
  });
  pool.on('connect', (client) => {
    client.on('error', (err) => {
      if (!pool.ending) opts.log?.warn({ err: err.message, pool: app }, 'database connection failed');
    });
  });
  return pool;
}

interface ClaimRow {
  attempt_id: string; attempt_number: number; max_attempts: number; step_id: string; step_name: string;
  job_id: string; tenant_id: string; pipeline: string; pipeline_version: number; input: unknown;
  dependencies: Record<string, unknown>; idempotency_key: string; timeout_ms: number | null;
  lease_expires_at: Date; effects: Record<string, unknown>; definition_step: string; item_index: number | null;
  item: unknown;
}

function toClaim(r: ClaimRow): Claim {
  return {
    attemptId: r.attempt_id, attemptNumber: r.attempt_number, maxAttempts: r.max_attempts, stepId: r.step_id,
    stepName: r.step_name, jobId: r.job_id, tenantId: r.tenant_id, pipeline: r.pipeline,
    pipelineVersion: r.pipeline_version, input: r.input, dependencies: r.dependencies,
    idempotencyKey: r.idempotency_key, timeoutMs: r.timeout_ms, leaseExpiresAt: r.lease_expires_at,
    effects: r.effects, definitionStep: r.definition_step, itemIndex: r.item_index, item: r.item,
  };
}

/** A claim as settle_and_claim returns it (JSON: ids are numbers, the lease a string). */
function jsonClaimRow(c: ClaimRow): ClaimRow {
  return {
    ...c, attempt_id: String(c.attempt_id), step_id: String(c.step_id), job_id: String(c.job_id),
    lease_expires_at: new Date(c.lease_expires_at),
  };
}

/** The error object ballast.fail_step takes. */
function errorPayload(error: StepError) {
  return {
    class: error.class,
    message: error.message,
    code: error.code ?? null,
    retryable: error.retryable ?? true,
    retry_after_ms: error.retryAfterMs ?? null,
    outcome: error.outcome ?? 'failed',
  };
}

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw translateError(err);
  }
}

export interface SetScheduleArgs {
  /** Unique per tenant: 1 to 128 letters, digits, _ . : - */
  name: string;
  pipeline: string;
  /** Five fields (minute hour day-of-month month day-of-week) or @hourly, @daily, @weekly, @monthly, @yearly. */
  cron: string;
  input?: unknown;
  /** Default UTC. */
  timeZone?: string;
  tenantId?: string;
  /** Default: the latest registered version at each slot. */
  pipelineVersion?: number;
  priority?: number;
  /** Slots missed while no worker ran: 'skip' (default) or 'catch_up' (at most maxCatchUp, default 10). */
  onMissed?: 'skip' | 'catch_up';
  maxCatchUp?: number;
}

/** A row of ballast.schedules. */
export interface ScheduleRow {
  id: string; tenant_id: string; name: string; pipeline: string; pipeline_version: number | null; cron: string;
  time_zone: string; on_missed: string; paused: boolean; paused_reason: string | null; next_fire_at: Date | null;
  last_fired_at: Date | null; last_job_id: string | null; last_error: string | null; fired_count: number; skipped_count: number;
}

/** What one fire of a schedule did (ballast.fire_schedules). */
export interface FiredSchedule {
  scheduleId: string;
  name: string;
  /** Slots submitted. */
  fired: number;
  /** Slots missed and not fired (the schedule's on_missed policy). */
  skipped: number;
  /** Its next slot (null: it never fires again). */
  nextSlot: Date | null;
  /** Why a slot could not be submitted, if one could not. */
  error: string | null;
}

export class BallastDb {
  readonly pool: pg.Pool;
  readonly db: Kysely<Database>;

  constructor(pool: pg.Pool) {
    this.pool = pool;
    this.db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  }

  async submitJob(args: SubmitJobArgs): Promise<SubmitJobResult> {
    return call(() => verbs.submitJob(this.pool, {
      pipeline: args.pipeline, input: args.input ?? {}, idempotencyKey: args.idempotencyKey ?? null,
      tenantId: args.tenantId ?? 'default', priority: args.priority ?? 0, pipelineVersion: args.pipelineVersion ?? null,
      runAt: args.runAt ?? null, delayMs: args.delayMs ?? null, deadline: args.deadline ?? null, expiresAt: args.expiresAt ?? null,
      debounce: args.debounce ?? null, throttle: args.throttle ?? null,
    }));
  }

  /**
   * Submits one job per input in one statement (ballast.submit_jobs): all or nothing, results in input order.
   * Throws InvalidInputError listing the bad inputs by path (inputs[n] counts from 1), IdempotencyConflictError.
   */
  async submitJobs(args: SubmitJobsArgs): Promise<SubmitJobsResult[]> {
    return call(async () => {
      const rows = await verbs.submitJobs(this.pool, {
        pipeline: args.pipeline, inputs: args.inputs.map((i) => i ?? {}), idempotencyKeys: args.idempotencyKeys ?? null,
        tenantId: args.tenantId ?? 'default', priority: args.priority ?? 0, pipelineVersion: args.pipelineVersion ?? null,
        runAt: args.runAt ?? null, delayMs: args.delayMs ?? null, deadline: args.deadline ?? null, expiresAt: args.expiresAt ?? null,
      });
      return rows.map((r) => ({ jobId: r.jobId, created: r.created, status: r.status as JobStatus }));
    });
  }

  async registerPipeline(name: string, version: number, definition: unknown, inputSchema: unknown): Promise<{ created: boolean; hash: string }> {
    return call(async () => {
      const { rows } = await sql<{ created: boolean; definition_hash: string }>`
        select * from ballast.register_pipeline(${name}, ${version}, ${JSON.stringify(definition)}::jsonb,
          ${JSON.stringify(inputSchema)}::jsonb)`.execute(this.db);
      return { created: rows[0]!.created, hash: rows[0]!.definition_hash };
    });
  }

  async registerWorker(args: { workerId: string; hostname: string; pid: number; concurrency: number; pipelines: string[] }): Promise<void> {
    await call(() =>
      sql`select ballast.register_worker(${args.workerId}, ${args.hostname}, ${args.pid}, ${args.concurrency},
            ${args.pipelines}::text[])`.execute(this.db),
    );
  }

  async setWorkerPool(workerId: string, poolId: string): Promise<void> {
    await call(() => sql`select ballast.set_worker_pool(${workerId}, ${poolId})`.execute(this.db));
  }

  /** Stamps the heartbeat, extends the leases of the worker's running attempts, and reports which of `running` are lost. */
  async heartbeatWorker(workerId: string, running: string[] = [], leaseMs = 30_000): Promise<{ alive: boolean; lostAttemptIds: string[] }> {
    return call(async () => {
      const { rows } = await sql<{ alive: boolean; lost_attempt_ids: string[] }>`
        select * from ballast.heartbeat_worker(${workerId}, ${running}::bigint[], ${leaseMs})`.execute(this.db);
      return { alive: rows[0]!.alive, lostAttemptIds: rows[0]!.lost_attempt_ids };
    });
  }

  /**
   * Which of `attemptIds` are no longer running, with their outcome: what a worker checks before it acts on a
   * cancellation notice (any login can send one; the database says what really happened).
   */
  async endedAttempts(attemptIds: string[]): Promise<{ id: string; outcome: string }[]> {
    if (attemptIds.length === 0) return [];
    return call(async () => (await sql<{ id: string; outcome: string }>`
      select a.id::text as id, a.outcome from ballast.attempts a
       where a.id = any(${attemptIds}::bigint[]) and a.outcome <> 'running'`.execute(this.db)).rows);
  }

  async reap(deadAfterMs: number, lostAfterMs: number): Promise<{ deadWorkers: string[]; reclaimedAttempts: string[]; expiredWaits: string[] }> {
    return call(async () => {
      const { rows } = await sql<{ dead_workers: string[]; reclaimed_attempts: string[]; expired_waits: string[] }>`
        select * from ballast.reap(${deadAfterMs}, ${lostAfterMs})`.execute(this.db);
      const r = rows[0]!;
      return { deadWorkers: r.dead_workers, reclaimedAttempts: r.reclaimed_attempts, expiredWaits: r.expired_waits };
    });
  }

  /** Fires the due cron schedules (ballast.fire_schedules, migration 0033): each due slot submits its job once. */
  async fireSchedules(limit = 100): Promise<FiredSchedule[]> {
    return call(async () => (await sql<{ schedule_id: string; schedule_name: string; fired: number; skipped: number; next_slot: Date | null; error: string | null }>`
      select * from ballast.fire_schedules(${limit})`.execute(this.db)).rows.map((r) => ({
      scheduleId: r.schedule_id, name: r.schedule_name, fired: r.fired, skipped: r.skipped, nextSlot: r.next_slot, error: r.error,
    })));
  }

  async releaseAttempt(attemptId: string, reason: string): Promise<StepStatus> {
    return call(async () => {
      const { rows } = await sql<{ status: StepStatus }>`
        select ballast.release_attempt(${attemptId}::bigint, ${reason}) as status`.execute(this.db);
      return rows[0]!.status;
    });
  }

  /** First run of a map step: creates one item per element of `items` and parks the map step until they finish. */
  async expandItems(attemptId: string, items: unknown[]): Promise<number> {
    return call(async () => {
      const { rows } = await sql<{ n: number }>`
        select ballast.expand_items(${attemptId}::bigint, ${JSON.stringify(items)}::jsonb) as n`.execute(this.db);
      return rows[0]!.n;
    });
  }

  async recordEffect(attemptId: string, key: string, result: unknown): Promise<unknown> {
    return call(async () => {
      const { rows } = await sql<{ result: unknown }>`
        select ballast.record_effect(${attemptId}::bigint, ${key}, ${JSON.stringify(result ?? null)}::jsonb) as result`.execute(this.db);
      return rows[0]!.result;
    });
  }

  /**
   * Before an effect's fn runs: records the intent (fenced: BA008 when the attempt lost its step) and returns whether
   * the step already recorded `key` (then with its result), how many other attempts started it without recording
   * it, and the effect's idempotency key (stable across attempts).
   */
  async beginEffect(attemptId: string, key: string): Promise<{ done: boolean; result: unknown; earlierAttempts: number; idempotencyKey: string }> {
    return call(async () => {
      const { rows } = await sql<{ done: boolean; result: unknown; earlier_attempts: number; idempotency_key: string }>`
        select * from ballast.begin_effect(${attemptId}::bigint, ${key})`.execute(this.db);
      const r = rows[0]!;
      return { done: r.done, result: r.result, earlierAttempts: r.earlier_attempts, idempotencyKey: r.idempotency_key };
    });
  }

  /**
   * A transactional effect, in one transaction on one pool connection: ballast.begin_transactional_effect (locks the
   * step, fences the attempt: BA008, returns the recorded result if `key` is recorded; then fn is not called), fn
   * with the connection, ballast.record_effect of fn's result, commit. Any error rolls everything back and is
   * thrown; `ran` says whether fn ran in the committed transaction. When `signal` fires before the commit (the
   * attempt timed out, was cancelled or lost, or the worker is shutting down), the transaction's backend is
   * terminated: it rolls back and releases the step lock at once, so recording the attempt's end never waits for a
   * slow or stuck fn.
   */
  async transactionalEffect(attemptId: string, key: string, fn: (client: pg.PoolClient) => Promise<unknown>,
    signal?: AbortSignal): Promise<{ ran: boolean; result: unknown }> {
    signal?.throwIfAborted();
    const client = await call(() => this.pool.connect());
    let broken: Error | undefined;
    let pid: number | undefined;
    let open = true;
    const onAbort = () => {
      if (open && pid !== undefined) this.pool.query('select pg_terminate_backend($1)', [pid]).catch(() => {});
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    // A checked-out client has no error listener of the pool's: a backend terminated while fn is busy elsewhere
    // (above, on abort) must not become an uncaught 'error' event. The dead client goes back to the pool (which
    // discards it) at once, not when fn returns: fn may never return, and pool.end() waits for checked-out clients.
    let released = false;
    const release = (err?: Error) => {
      if (released) return;
      released = true;
      client.release(err);
    };
    const onError = (e: Error) => {
      broken = e;
      release(e);
    };
    client.on('error', onError);
    try {
      await client.query('begin');
      const begun = await client.query<{ done: boolean; result: unknown; pid: number }>(
        'select done, result, pg_backend_pid() as pid from ballast.begin_transactional_effect($1::bigint, $2)', [attemptId, key]);
      pid = begun.rows[0]!.pid;
      if (signal?.aborted) onAbort();
      if (begun.rows[0]!.done) {
        await client.query('commit');
        return { ran: false, result: begun.rows[0]!.result };
      }
      const value = await fn(client);
      const recorded = await client.query<{ result: unknown }>(
        'select ballast.record_effect($1::bigint, $2, $3::jsonb) as result', [attemptId, key, JSON.stringify(value ?? null)]);
      await client.query('commit');
      return { ran: true, result: recorded.rows[0]!.result };
    } catch (err) {
      // A connection that cannot even roll back is closed rather than handed to the next user of the pool.
      await client.query('rollback').catch((e: unknown) => { broken = e instanceof Error ? e : new Error(String(e)); });
      throw translateError(err);
    } finally {
      open = false;
      signal?.removeEventListener('abort', onAbort);
      client.removeListener('error', onError);
      release(broken);
    }
  }

  /**
   * Durable sleep (ballast.sleep_step, migration 0034): the wake time of (step, key) is recorded on the first call
   * (`duration` ms from the database's now, or the Date given); slept is true once it has passed. Otherwise the step
   * has parked until then (the attempt is over).
   */
  async sleepStep(attemptId: string, key: string, duration: number | Date): Promise<{ slept: boolean; until: Date }> {
    const ms = typeof duration === 'number' ? duration : null;
    const until = duration instanceof Date ? duration.toISOString() : null;
    return call(async () => (await sql<{ slept: boolean; until: Date }>`
      select slept, until from ballast.sleep_step(${attemptId}::bigint, ${key}, ${ms}::double precision, ${until}::timestamptz)`.execute(this.db)).rows[0]!);
  }

  /**
   * Starts child jobs of the attempt's step (ballast.start_child_jobs, migration 0038), idempotently per (step, key):
   * one row per child, in order; created is false for a child an earlier run of the step started.
   */
  async startChildJobs(attemptId: string, children: { key: string; pipeline: string; version?: number; input?: unknown }[]): Promise<{ key: string; jobId: string; created: boolean; pipeline: string; status: string }[]> {
    if (!Array.isArray(children)) throw new BallastError('invalid_input', 'children: is not an array; pass one {key, pipeline, version?, input?} per child job');
    const payload = JSON.stringify(children.map((c) => ({ key: c.key, pipeline: c.pipeline, version: c.version ?? null, input: c.input ?? {} })));
    return call(async () => (await sql<{ key: string; jobId: string; created: boolean; pipeline: string; status: string }>`
      select key, job_id::text as "jobId", created, pipeline, status
        from ballast.start_child_jobs(${attemptId}::bigint, ${payload}::jsonb) order by ord`.execute(this.db)).rows);
  }

  /**
   * Waits for child jobs of the attempt's step (ballast.wait_for_children, migration 0038): `jobIds` (null: all the
   * step started), all of them or the first `first` to complete. done: their results; otherwise the step parked.
   */
  async waitForChildren(attemptId: string, jobIds: string[] | null, first: number | null): Promise<{ done: boolean; children: { key: string; jobId: string; pipeline: string; status: string; result: unknown; error: unknown }[]; waitingFor: string[] }> {
    return call(async () => {
      const { rows } = await sql<{ done: boolean; children: { key: string; job_id: string; pipeline: string; status: string; result: unknown; error: unknown }[] | null }>`
        select done, children from ballast.wait_for_children(${attemptId}::bigint, ${jobIds}::bigint[], ${first}::int)`.execute(this.db);
      const r = rows[0]!;
      const children = (r.children ?? []).map((c) => ({ key: c.key, jobId: c.job_id, pipeline: c.pipeline, status: c.status, result: c.result, error: c.error }));
      return { done: r.done, children, waitingFor: r.done ? [] : (jobIds ?? []) };
    });
  }

  async waitForEvent(attemptId: string, key: string, timeoutMs: number | null, onTimeout: 'fail' | 'retry'): Promise<{ received: boolean; payload: unknown }> {
    return call(async () => {
      const { rows } = await sql<{ received: boolean; payload: unknown }>`
        select * from ballast.wait_for_event(${attemptId}::bigint, ${key}, ${timeoutMs}, ${onTimeout})`.execute(this.db);
      return rows[0]!;
    });
  }

  /**
   * Delivers event `key` to the steps of one tenant waiting for it (ballast.send_event): `tenantId`, else the
   * connection's bound tenant, else 'default'.
   */
  async sendEvent(key: string, payload: unknown, actor?: string, tenantId?: string): Promise<{ accepted: boolean; resumedStepIds: string[] }> {
    return call(() => verbs.sendEvent(this.pool, key, payload ?? null, tenantId ?? null, actor ?? null));
  }

  /**
   * Creates or replaces a cron schedule (ballast.set_schedule, migration 0033): each slot of `cron` in `timeZone`
   * (default UTC) submits a job of `pipeline` with `input`, once, whichever worker fires it.
   */
  async setSchedule(args: SetScheduleArgs, actor?: string): Promise<{ scheduleId: string; nextFireAt: Date | null }> {
    return call(() => verbs.setSchedule(this.pool, {
      name: args.name, pipeline: args.pipeline, cron: args.cron, input: args.input ?? {}, timeZone: args.timeZone ?? null,
      tenantId: args.tenantId ?? null, pipelineVersion: args.pipelineVersion ?? null, priority: args.priority ?? null,
      onMissed: args.onMissed ?? null, maxCatchUp: args.maxCatchUp ?? null,
    }, actor ?? null));
  }

  /** Pauses (paused true) or resumes a schedule; a resumed one fires next at its first slot after now. */
  async pauseSchedule(name: string, paused: boolean, opts: { reason?: string; tenantId?: string; actor?: string } = {}): Promise<{ scheduleId: string; nextFireAt: Date | null }> {
    return call(() => verbs.pauseSchedule(this.pool, name, paused, opts.reason ?? null, opts.tenantId ?? null, opts.actor ?? null));
  }

  /** Deletes a schedule (the jobs it submitted stay); false when there was none of that name. */
  async deleteSchedule(name: string, tenantId?: string): Promise<boolean> {
    return call(async () => (await verbs.deleteSchedule(this.pool, name, tenantId ?? null)).deleted);
  }

  /** The schedules (of one tenant, or all), by name. */
  async listSchedules(tenantId?: string): Promise<ScheduleRow[]> {
    return call(async () => (await sql<ScheduleRow>`
      select id::text as id, tenant_id, name, pipeline, pipeline_version, cron, time_zone, on_missed, paused, paused_reason,
             next_fire_at, last_fired_at, last_job_id::text as last_job_id, last_error, fired_count::int as fired_count,
             skipped_count::int as skipped_count
        from ballast.schedules where ${tenantId ?? null}::text is null or tenant_id = ${tenantId ?? null}
       order by tenant_id, name`.execute(this.db)).rows);
  }

  /**
   * Closes a key (ballast.pause_key, migration 0037): steps with it are not started until `until` (or for `forMs`;
   * neither: until resumed); every worker respects it within a second. Recorded in ballast.gate_history.
   */
  async pauseKey(args: gates.PauseKeyArgs): Promise<gates.PauseRow> {
    return call(() => gates.pauseKey(this.pool, args));
  }

  /** Opens a key again and wakes the steps it held; false when no pause was in force. */
  async resumeKey(key: string, reason?: string, actor?: string): Promise<boolean> {
    return call(() => gates.resumeKey(this.pool, key, reason ?? null, actor ?? null));
  }

  /** Creates or replaces a rate or concurrency limit on a key pattern (ballast.set_limit), enforced at claim. */
  async setLimit(args: gates.SetLimitArgs): Promise<gates.LimitRow> {
    return call(() => gates.setLimit(this.pool, args));
  }

  /** Removes a limit; false when there was none. */
  async deleteLimit(pattern: string, kind: gates.LimitKind, actor?: string): Promise<boolean> {
    return call(() => gates.deleteLimit(this.pool, pattern, kind, actor ?? null));
  }

  /** The paused keys, the limits, and their history (newest first). */
  async listPauses(): Promise<gates.PauseRow[]> {
    return call(() => gates.listPauses(this.pool));
  }

  async listLimits(): Promise<gates.LimitRow[]> {
    return call(() => gates.listLimits(this.pool));
  }

  async gateHistory(key?: string, limit?: number): Promise<gates.GateHistoryRow[]> {
    return call(() => gates.gateHistory(this.pool, key ?? null, limit ?? 100));
  }

  /**
   * Fair sharing between tenants (ballast.set_fair_share, migration 0040): tenantId '*' turns it on with a default
   * weight; a tenant's weight is its relative share while several tenants have queued work.
   */
  async setFairShare(tenantId: string, weight = 1, actor?: string): Promise<{ tenantId: string; weight: number }> {
    return call(() => gates.setFairShare(this.pool, tenantId, weight, actor ?? null));
  }

  /** Turns fair sharing off (first come, first served again); false when it was off. */
  async stopFairSharing(): Promise<boolean> {
    return call(() => gates.stopFairSharing(this.pool));
  }

  async listFairShares(): Promise<gates.FairShareRow[]> {
    return call(() => gates.listFairShares(this.pool));
  }

  async cancelJob(jobId: string, reason?: string, actor?: string): Promise<{ status: JobStatus; cancelledStepIds: string[]; alreadyCancelled: boolean }> {
    return call(async () => {
      const { status, cancelledStepIds, alreadyCancelled } = await verbs.cancelJob(this.pool, jobId, reason ?? null, actor ?? null);
      return { status, cancelledStepIds, alreadyCancelled };
    });
  }

  /** freshCalls: call the model providers again instead of reusing the answers stored before (paid once). */
  async replayStep(stepId: string, opts: { reason?: string; force?: boolean; actor?: string; freshCalls?: boolean } = {}): Promise<{ jobId: string; replayedStepIds: string[]; jobStatus: JobStatus }> {
    return call(() => verbs.replayStep(this.pool, stepId, opts.reason ?? null, opts.force ?? false, opts.actor ?? null, opts.freshCalls ?? false));
  }

  async replayJob(jobId: string, opts: { fromStep?: string; reason?: string; actor?: string; freshCalls?: boolean } = {}): Promise<{ jobId: string; replayedStepIds: string[]; jobStatus: JobStatus }> {
    return call(() => verbs.replayJob(this.pool, jobId, opts.fromStep ?? null, opts.reason ?? null, opts.actor ?? null, opts.freshCalls ?? false));
  }

  /**
   * A worker blocked (watchdog) or crashed (supervisor): ends its running attempts, counts the blamed ones (all when
   * `blamed` is undefined) toward quarantine, marks it stopped (ballast.report_worker_fault, 0006_execution). The watchdog
   * thread runs the same statement on its own connection (src/worker/watchdog.ts).
   */
  async reportWorkerFault(workerId: string, errorClass: 'blocked_worker' | 'crashed_worker',
    opts: { blamed?: string[]; message?: string; quarantineAfter?: number } = {},
  ): Promise<{ attemptId: string; stepId: string; stepStatus: StepStatus; crashes: number; blamed: boolean }[]> {
    return call(async () => {
      const { rows } = await sql<{ attempt_id: string; step_id: string; step_status: StepStatus; crashes: number; blamed: boolean }>`
        select * from ballast.report_worker_fault(${workerId}, ${errorClass}, ${opts.blamed ?? null}::bigint[],
          ${opts.message ?? null}, ${opts.quarantineAfter ?? 2})`.execute(this.db);
      return rows.map((r) => ({ attemptId: r.attempt_id, stepId: r.step_id, stepStatus: r.step_status, crashes: r.crashes, blamed: r.blamed }));
    });
  }

  async stopWorker(workerId: string): Promise<void> {
    await call(() => sql`select ballast.stop_worker(${workerId})`.execute(this.db));
  }

  /** Unlocks the graphile-worker jobs still locked by these pools (of this process, ended). */
  async unlockWorkerPools(poolIds: string[]): Promise<void> {
    if (poolIds.length === 0) return;
    await call(() => sql`select graphile_worker.force_unlock_workers(${poolIds}::text[])`.execute(this.db));
  }

  /**
   * The worker's batch round trip (ballast.settle_and_claim): records the outcomes and claims up to n steps of
   * `tasks`. settled: [attempt_id, step_status] per outcome ('succeeded', 'retrying', 'failed', 'stale', 'refused: ...').
   * `outputs` are JSON texts (the worker checks that Postgres can store them first). nextDueMs: when fewer than n
   * were claimed, in how many ms the next scheduled step of `tasks` falls due (null: none is scheduled).
   */
  async settleAndClaim(a: {
    workerId: string; ok: string[]; outputs: string[]; failed: string[]; errors: StepError[]; tasks: string[]; n: number;
    leaseMs: number;
  }): Promise<{ settled: [string | number, string][]; claims: Claim[]; nextDueMs: number | null }> {
    const { rows } = await this.pool.query<{ settled: [string | number, string][]; claims: ClaimRow[]; next_due_ms: number | null }>({
      name: 'ballast_settle_and_claim',
      text: 'select settled, claims, next_due_ms from ballast.settle_and_claim($1, $2::bigint[], $3::jsonb[], $4::bigint[], $5::jsonb[], $6::text[], $7, $8)',
      values: [a.workerId, a.ok, a.outputs, a.failed, a.errors.map((e) => JSON.stringify(errorPayload(e))), a.tasks, a.n, a.leaseMs],
    }).catch((err: unknown) => {
      throw translateError(err);
    });
    const r = rows[0]!;
    return { settled: r.settled, claims: r.claims.map((c) => toClaim(jsonClaimRow(c))), nextDueMs: r.next_due_ms };
  }

  /** Gives back claims a worker holds but has not started (ballast.release_attempts): uncharged, retried at once. */
  async releaseAttempts(workerId: string, attemptIds: string[], reason: string): Promise<number> {
    return call(async () => {
      const { rows } = await sql<{ n: number }>`
        select ballast.release_attempts(${workerId}, ${attemptIds}::bigint[], ${reason}) as n`.execute(this.db);
      return rows[0]!.n;
    });
  }

  async claimStep(stepId: string | number, workerId: string, leaseMs: number): Promise<Claim | undefined> {
    return call(async () => {
      const { rows } = await sql<ClaimRow>`
        select * from ballast.claim_step(${String(stepId)}::bigint, ${workerId}, ${leaseMs})`.execute(this.db);
      return rows[0] ? toClaim(rows[0]) : undefined;
    });
  }

  async completeStep(attemptId: string, output: unknown): Promise<{ jobStatus: JobStatus; queuedStepIds: string[] }> {
    return call(async () => {
      const { rows } = await sql<{ job_status: JobStatus; queued_step_ids: string[] }>`
        select * from ballast.complete_step(${attemptId}::bigint, ${JSON.stringify(output ?? null)}::jsonb)`.execute(this.db);
      return { jobStatus: rows[0]!.job_status, queuedStepIds: rows[0]!.queued_step_ids };
    });
  }

  async failStep(attemptId: string, error: StepError): Promise<{ stepStatus: StepStatus; nextRunAt: Date | null; jobStatus: JobStatus }> {
    const payload = errorPayload(error);
    return call(async () => {
      const { rows } = await sql<{ step_status: StepStatus; next_run_at: Date | null; job_status: JobStatus }>`
        select * from ballast.fail_step(${attemptId}::bigint, ${JSON.stringify(payload)}::jsonb)`.execute(this.db);
      const r = rows[0]!;
      return { stepStatus: r.step_status, nextRunAt: r.next_run_at, jobStatus: r.job_status };
    });
  }

  async reportProgress(attemptId: string, progress: unknown): Promise<boolean> {
    return call(async () => {
      const { rows } = await sql<{ ok: boolean }>`
        select ballast.report_progress(${attemptId}::bigint, ${JSON.stringify(progress ?? null)}::jsonb) as ok`.execute(this.db);
      return rows[0]!.ok;
    });
  }

  async getJob(jobId: string): Promise<Job | undefined> {
    return this.db.selectFrom('ballast.jobs').selectAll().where('id', '=', jobId as never).executeTakeFirst();
  }

  /**
   * Resolves with the job once it is final (completed, partially_completed, failed or cancelled): the result of a
   * job you submitted, Temporal's `handle.result()`. Reads the job every `pollMs` at first, backing off to 1 s while
   * it runs; rejects with BallastError 'not_found' for an unknown job (or another tenant's), with WaitTimeoutError
   * after `timeoutMs`, or with the signal's reason when `signal` aborts. Holds no connection between reads.
   */
  async waitForJob(jobId: string, opts: { timeoutMs?: number; signal?: AbortSignal; pollMs?: number } = {}): Promise<Job> {
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let delay = opts.pollMs ?? 50;
    for (;;) {
      opts.signal?.throwIfAborted();
      const job = await this.getJob(jobId);
      if (!job) throw new BallastError('not_found', `job ${jobId} does not exist (or belongs to another tenant)`);
      if (isFinalJobStatus(job.status)) return job;
      const left = deadline - Date.now();
      if (left <= 0) throw new WaitTimeoutError(jobId, job.status, opts.timeoutMs!);
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => { clearTimeout(timer); reject(opts.signal!.reason); };
        const timer = setTimeout(() => { opts.signal?.removeEventListener('abort', onAbort); resolve(); }, Math.min(delay, left));
        opts.signal?.addEventListener('abort', onAbort, { once: true });
      });
      delay = Math.min(delay * 1.5, 1000);
    }
  }

  async getSteps(jobId: string): Promise<Step[]> {
    return this.db.selectFrom('ballast.steps').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }

  async getAttempts(jobId: string): Promise<Attempt[]> {
    return this.db.selectFrom('ballast.attempts').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }

  /** Jobs, newest first, filtered; `since` is an interval ('1 hour', '7 days') back from now. */
  async listJobs(f: { status?: string; pipeline?: string; tenantId?: string; since?: string; limit?: number; parentJobId?: string } = {}): Promise<Job[]> {
    return call(() => {
      let q = this.db.selectFrom('ballast.jobs').selectAll().orderBy('id', 'desc').limit(f.limit ?? 20);
      if (f.status) q = q.where('status', '=', f.status as never);
      if (f.parentJobId) q = q.where('parent_job_id', '=', f.parentJobId as never);
      if (f.pipeline) q = q.where('pipeline', '=', f.pipeline);
      if (f.tenantId) q = q.where('tenant_id', '=', f.tenantId);
      if (f.since) q = q.where('created_at', '>=', sql<Date>`ballast.now() - ${f.since}::interval` as never);
      return q.execute();
    });
  }

  /** The child jobs a job's steps started (ctx.startChildren), oldest first. */
  async getChildJobs(jobId: string): Promise<Job[]> {
    return call(() => this.db.selectFrom('ballast.jobs').selectAll().where('parent_job_id', '=', jobId as never).orderBy('id').execute());
  }

  async getEvents(jobId: string): Promise<BallastEvent[]> {
    return this.db.selectFrom('ballast.events').selectAll().where('job_id', '=', jobId).orderBy('id').execute();
  }

  async close(): Promise<void> {
    await this.db.destroy(); // ends the pool too
  }
}
