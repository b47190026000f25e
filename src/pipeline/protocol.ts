// The runtime protocol between a step handler and the runner: the context a handler receives (StepContext and what
// it hands out), how an attempt can end other than by returning (AttemptAborted, StepParked), and what passes
// between the runner and a step kind (AttemptRun in, StepEnd out). A leaf module: the runner (worker/runner.ts), the
// pipeline DSL (pipeline.ts), the step kinds (kinds/), effects (worker/effects.ts) and model steps (model/ladder.ts)
// all import it and it imports none of them, so they do not import each other in a circle.
import type pg from 'pg';
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';
import type { ProviderRegistry } from '../model/providers.ts';

export interface WaitOptions {
  /** How long to wait before the deadline policy applies (default: no deadline). */
  timeoutMs?: number;
  /** At the deadline: 'fail' the step (default) or 'retry' it (runs again from the top, counted as an attempt). */
  onTimeout?: 'fail' | 'retry';
}

/** A child job for ctx.startChildren. */
export interface ChildJob {
  /** Names the child within the step: 1 to 400 bytes, unique among the step's children, the same on every run. */
  key: string;
  /** The pipeline of the child job (any registered pipeline). */
  pipeline: string;
  /** Its version (default: the newest registered). */
  version?: number;
  /** Its input (default {}), checked against the pipeline's input contract. */
  input?: unknown;
}

/** A child job ctx.startChildren started (or found started by an earlier run of the step). */
export interface StartedChild {
  key: string;
  jobId: string;
  /** False when an earlier run of the step already started it. */
  created: boolean;
  pipeline: string;
  status: string;
}

/** A child job as ctx.waitForChildren returns it. */
export interface ChildResult {
  key: string;
  jobId: string;
  pipeline: string;
  /** The job's status: completed, partially_completed, failed or cancelled once final; a first-n wait also returns
   *  the children still running (queued, running, waiting, ...). */
  status: string;
  /** The job's result when it completed (null otherwise). */
  result: unknown;
  /** The job's error when it failed ({ step, step_id, class, message, ... }; null otherwise). */
  error: unknown;
}

export interface WaitForChildrenOptions {
  /** The child jobs to wait for (ids from startChildren); default: every child the step started. */
  jobIds?: string[];
  /** Resume when this many of them completed (or when so many ended otherwise that it can no longer happen);
   *  default: when every one is final. */
  first?: number;
}

/** What ctx.effect passes to its fn. */
export interface EffectInfo {
  /**
   * 'ballast:<job id>:<step name>:<key>' (for an item of a map step, the item's step name): the same in every
   * attempt of the step. Pass it to external APIs that accept an idempotency key.
   */
  idempotencyKey: string;
  /** This attempt's number (as counted against max attempts). */
  attempt: number;
  /**
   * An earlier attempt started this effect and never recorded a result (its process died, it lost its step, or fn
   * threw): the effect may already have happened. Check with the other side, or rely on idempotencyKey.
   */
  previouslyStarted: boolean;
}

/** The connection ctx.transaction hands to its fn: run queries on it; ballast commits or rolls back. */
export type EffectClient = pg.ClientBase;

export interface StepContext<I, D> {
  /** The job's input, parsed by the pipeline's input contract. */
  input: I;
  /** Outputs of the steps named in `after`, keyed by step name. */
  deps: D;
  /** Fires on the step's timeout, on cancellation of the job, when the step was reclaimed, and at shutdown after the
   *  grace period. Pass it to fetch() and model calls. */
  signal: AbortSignal;
  /** pino logger carrying job_id, step_id, attempt_id. */
  log: Logger;
  /** Stores the step's latest progress (any JSON) and notifies live listeners. */
  progress(value: unknown): Promise<void>;
  /**
   * Runs a side effect and records its result (JSON) under `key` in the step's ledger; once recorded, every later
   * attempt of the step (retry, crash recovery, replay) gets the recorded result and fn is not called again.
   * At least once, not exactly once: the start is recorded before fn runs, and if the process dies after fn and
   * before its result is recorded, the next attempt calls fn again with `previouslyStarted: true` and the same
   * `idempotencyKey`. Pass that key to the other side (payment, email, webhook APIs) so it can drop the repeat.
   * For SQL in ballast's own database, use transaction() instead: that one is exactly once.
   */
  effect<T>(key: string, fn: (info: EffectInfo) => T | Promise<T>): Promise<T>;
  /**
   * A transactional effect, exactly once: runs fn's SQL through `client` in one transaction with the ledger row for
   * `key`, fenced so that an attempt that lost its step (crashed and reclaimed, cancelled) writes nothing (BA008,
   * thrown as BallastError 'stale_attempt'). If `key` is already recorded, returns the recorded result without
   * calling fn. fn must only use `client` for the work that has to be exactly once, must not commit, roll back or
   * release it, and must not call other ctx methods while it runs (the step row is locked until the commit); keep
   * it short. When the step's signal fires before the commit, the transaction is rolled back at once (its connection
   * is terminated). fn may be called again if the connection is lost before the commit is confirmed (the earlier try
   * then rolled back, or had committed and its recorded result is returned). Keys are shared with effect().
   */
  transaction<T>(key: string, fn: (client: EffectClient) => Promise<T>): Promise<T>;
  /**
   * Waits for ballast.send_event(key, payload): returns the payload if it already arrived; otherwise the step parks
   * (status `waiting`, the worker's slot is freed) and runs again from the top when the event arrives, this time
   * getting the payload. Use effect() for work before the wait that must not repeat.
   */
  waitForEvent(key: string, options?: WaitOptions): Promise<unknown>;
  /**
   * Durable sleep: the first call with `key` records when the step wakes (`duration` ms from now by the database's
   * clock, or the Date given), and the step parks (status `waiting`, no worker slot held, not counted as an attempt)
   * until then; it then runs again from the top, and this time sleep(key) returns the wake time at once. The wake time
   * is kept per step and key, so a retry, a crash or a restart of every worker keeps it. Use effect() for work before
   * the sleep that must not repeat.
   */
  sleep(key: string, duration: number | Date): Promise<Date>;
  /**
   * Closes `key` for every worker (ballast.pause_key, docs/flow-control.md): no step with that key starts until the
   * pause ends (`until`, or `forMs` from now), e.g. after a 429 with Retry-After from an API many steps call. Recorded
   * in ballast.gate_history with this step as its origin. Resolves with when the pause ends (a longer pause already
   * in force is kept). The step itself goes on; throw a retryable error after it to be retried once the key opens.
   */
  pauseKey(key: string, options: { reason: string; forMs?: number; until?: Date }): Promise<Date>;
  /**
   * Starts child jobs (any pipeline, in this job's tenant and at its priority), idempotently: each child's key names
   * it within the step, so a run of the step after a retry, a crash or a replay gets the same jobs back (created
   * false) instead of starting new ones. The children run on their own; cancelling this job cancels them. An empty
   * list starts nothing.
   */
  startChildren(children: ChildJob[]): Promise<StartedChild[]>;
  /**
   * Waits for this step's child jobs: all of them (default) or the first n to complete. When the wait is satisfied
   * it returns each child's status, result and error, in the order the children were started (or of `jobIds`);
   * otherwise the step parks (status `waiting`, waiting for children, no worker slot held, not counted as an
   * attempt) and runs again from the top when it is satisfied. A child that failed or was cancelled does not fail
   * this step: look at its status.
   */
  waitForChildren(options?: WaitForChildrenOptions): Promise<ChildResult[]>;
  /** Stable across this step's attempts: pass it to external APIs that accept an idempotency key. */
  idempotencyKey: string;
  attempt: number;
  maxAttempts: number;
  jobId: string;
  stepId: string;
  tenantId: string;
}

/** Why a running attempt was aborted. */
export type AbortReason = 'timeout' | 'cancelled' | 'lost' | 'shutdown';

export class AttemptAborted extends Error {
  readonly reason: AbortReason;
  constructor(reason: AbortReason, message: string) {
    super(message);
    this.name = 'AttemptAborted';
    this.reason = reason;
  }
}

/** Thrown by ctx.waitForEvent, ctx.sleep and ctx.waitForChildren when the step parked: the attempt ends there and
 *  the step waits. */
export class StepParked extends Error {
  readonly key: string;
  /** For a sleep: when the step wakes. */
  readonly until: Date | undefined;
  /** For a wait for child jobs: their ids. */
  readonly children: string[] | undefined;
  constructor(key: string, until?: Date, children?: string[]) {
    super(children ? `step is waiting for its child jobs${children.length > 0 ? ` (${children.join(', ')})` : ''}`
      : until ? `step sleeps (${key}) until ${until.toISOString()}` : `step is waiting for event "${key}"`);
    this.name = 'StepParked';
    this.key = key;
    this.until = until;
    this.children = children;
  }
}

/** What a map step's item run sees besides the step context. */
export interface ItemContext<T> {
  /** The item this run processes. */
  item: T;
  /** Its position in the list the map step returned. */
  index: number;
}

/**
 * What the runner hands a step kind (kinds/) for one attempt: the handler's context, and what ballast's own kinds
 * need beyond it (the database, to record model calls; the attempt; the model providers). Passed as an argument,
 * never reachable from the public context.
 */
export interface AttemptRun {
  ctx: StepContext<any, any>;
  db: BallastDb;
  attemptId: string;
  /** For an item of a map step: the item and its index; null for every other step and for a map step's first run. */
  item: { value: unknown; index: number } | null;
  /** The model providers (default: the environment's). */
  providers: ProviderRegistry | undefined;
  /** Live tokens of a streaming model step (worker/token-stream.ts); absent for every other step. */
  tokens?: TokenSink;
}

/** Where a streaming model call's text goes while it arrives: each call opens a segment and feeds it its deltas. */
export interface TokenSink {
  segment(rung: string, model: string): (delta: string) => void;
  /**
   * Ends the attempt's streaming: what is pending, then its end row. A model step that settles its attempt itself
   * (review, a pause) calls it first, while the attempt still runs (afterwards its rows would be refused). Idempotent.
   */
  close(): Promise<void>;
}

/**
 * How a step kind's run ended when it did not throw (a throw is the handler's failure, classified by the runner):
 *   output   the value to check against the step's output contract and complete the step with;
 *   items    a map step's first run listed its items: they become steps;
 *   settled  the kind already recorded how the attempt ended (a model step sent to review, or paused for its
 *            tenant's budget or a provider's cooldown): the runner records nothing more.
 */
export type StepEnd =
  | { kind: 'output'; value: unknown }
  | { kind: 'items'; items: unknown }
  | { kind: 'settled'; stepStatus: string; message: string };
