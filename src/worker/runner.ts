// Runs one claimed attempt: builds the step context, races the handler against its abort (timeout, cancellation,
// loss of the step, shutdown), checks the output contract, and records the outcome through the SQL functions.
// A handler that ignores its AbortSignal is abandoned `abandonMs` after the abort: its promise keeps running in the
// background, but the worker's slot is free and the attempt is recorded.
import { z } from 'zod';
import type { Logger } from 'pino';
import type { BallastDb, Claim, StepError } from '../db/api.ts';
import { BallastError, PermanentError, RetryableError } from '../errors.ts';
import type { Pipeline } from '../pipeline/pipeline.ts';
import type { StepDefinition } from '../pipeline/definition.ts';
import { kindOf } from '../pipeline/kinds/index.ts';
import type { AttemptRun, ChildJob, StepEnd, WaitForChildrenOptions, WaitOptions } from '../pipeline/protocol.ts';
import type { ProviderRegistry } from '../model/providers.ts';
import { ballastMetrics } from '../metrics.ts';
import { retryOnConnectionLoss } from '../db/retry.ts';
import { stepEffects } from './effects.ts';
import { enterAttempt, leaveAttempt } from './watchdog.ts';
import { storableError } from './storable.ts';

import { AttemptAborted, StepParked, type AbortReason } from '../pipeline/protocol.ts';
export { AttemptAborted, StepParked } from '../pipeline/protocol.ts';
export type { AbortReason } from '../pipeline/protocol.ts';

export interface RunningAttempt {
  readonly attemptId: string;
  abort(reason: AbortReason, message: string): void;
}

/** The longest Retry-After ballast.fail_step accepts (7 days); longer hints are capped, not refused. */
const MAX_RETRY_AFTER_MS = 604_800_000;

/** A readable text for anything thrown, whatever it is (a string, undefined, an object whose toString throws). */
function describeThrown(err: unknown): { message: string; code: string } {
  if (err instanceof Error) {
    let message: unknown;
    try {
      message = err.message;
    } catch {
      message = undefined;
    }
    let name = 'Error';
    try {
      name = typeof err.name === 'string' && err.name ? err.name : 'Error';
    } catch { /* a throwing getter */ }
    return { message: typeof message === 'string' && message !== '' ? message : name, code: name };
  }
  if (typeof err === 'string') return { message: err || 'an empty string was thrown', code: 'thrown_string' };
  if (err === undefined || err === null) return { message: `${String(err)} was thrown`, code: `thrown_${String(err)}` };
  let text: string;
  try {
    text = String(err);
  } catch {
    try {
      text = JSON.stringify(err) ?? typeof err;
    } catch {
      text = `an unprintable ${typeof err}`;
    }
  }
  return { message: `a ${typeof err} was thrown: ${text}`, code: `thrown_${typeof err}` };
}

/** Classifies what a step handler threw into the error ballast records (storable: see storable.ts). */
export function classifyError(err: unknown, step: StepDefinition, signal: AbortSignal): StepError {
  return storableError(classifyThrown(err, step, signal));
}

function classifyThrown(err: unknown, step: StepDefinition, signal: AbortSignal): StepError {
  const described = describeThrown(err);
  const e = err instanceof Error ? err : new Error(described.message);
  // fail_step refuses an empty message or an out-of-range delay (BA002); a handler's odd error must still be recorded.
  const message = described.message;
  if (e instanceof PermanentError) return { class: e.errorClass, code: e.errorCode, message, retryable: false };
  if (e instanceof RetryableError) {
    const after = e.retryAfterMs;
    const retryAfterMs = typeof after === 'number' && Number.isFinite(after) && after >= 0
      ? Math.min(Math.ceil(after), MAX_RETRY_AFTER_MS) : undefined;
    return { class: e.errorClass, code: e.errorCode, message, retryable: true, retryAfterMs };
  }
  if (signal.aborted) return { class: 'aborted', message: `aborted: ${message}`, retryable: true };
  let permanent = false;
  try {
    permanent = step.isPermanent?.(err) === true;
  } catch { /* a throwing isPermanent: treated as not permanent */ }
  if (permanent) return { class: 'permanent', code: described.code, message, retryable: false };
  return { class: 'error', code: described.code, message, retryable: true };
}

export interface RunAttemptOptions {
  pipeline: Pipeline<any, any>;
  claim: Claim;
  db: BallastDb;
  log: Logger;
  /** How long a handler gets to settle after its signal fired before it is abandoned. */
  abandonMs: number;
  /** Registers the attempt with the worker (for cancellation, heartbeats and shutdown); returns the unregister. */
  track: (running: RunningAttempt) => () => void;
  /**
   * Records the attempt's success or failure. The worker's implementation queues it for the next batch
   * (ballast.settle_and_claim); the promise resolves with the step's new status once recorded, or undefined when the
   * attempt no longer owned its step (stale: nothing recorded).
   */
  settler: Settler;
  /** Called once the handler has finished (or was abandoned), before its outcome is recorded: the slot is free. */
  onHandlerDone?: () => void;
  /** Model providers for model steps (default: from the environment). */
  providers?: ProviderRegistry;
}

/** How an attempt's outcome is recorded: see RunAttemptOptions.settler. */
export interface Settler {
  complete(attemptId: string, output: unknown): Promise<{ stepStatus: string } | undefined>;
  fail(attemptId: string, error: StepError): Promise<{ stepStatus: string; nextRunAt?: Date | null } | undefined>;
}

/** Runs the attempt and records its outcome. */
export async function runAttempt(o: RunAttemptOptions): Promise<void> {
  const t0 = performance.now();
  const result: AttemptResult = { outcome: 'lost', errorClass: 'none' };
  try {
    return await runAttemptBody(o, result);
  } finally {
    const labels = { pipeline: o.pipeline.name, version: String(o.pipeline.version), step: o.claim.definitionStep };
    ballastMetrics.attempts.inc({ ...labels, outcome: result.outcome, error_class: result.errorClass });
    ballastMetrics.stepDuration.observe({ ...labels, outcome: result.outcome }, (performance.now() - t0) / 1000);
  }
}

/** How an attempt ended, for the metrics. */
interface AttemptResult {
  outcome: string;
  errorClass: string;
}

async function runAttemptBody(o: RunAttemptOptions, result: AttemptResult): Promise<void> {
  let freed = false;
  const handlerDone = () => {
    if (freed) return;
    freed = true;
    o.onHandlerDone?.();
  };
  try {
    await runAttemptInner(o, result, handlerDone);
  } finally {
    handlerDone();
  }
}

/** How the handler's run ended, before anything is recorded: its kind's StepEnd, a throw, or an abort. */
type HandlerEnd =
  | { kind: 'ended'; end: StepEnd }
  | { kind: 'threw'; error: unknown }
  | { kind: 'aborted'; aborted: AttemptAborted };

/** One attempt: the step and its input checked, the handler run, then its end recorded. */
async function runAttemptInner(o: RunAttemptOptions, result: AttemptResult, handlerDone: () => void): Promise<void> {
  const { pipeline: p, claim } = o;
  const log = o.log.child({
    job_id: claim.jobId, step_id: claim.stepId, attempt_id: claim.attemptId, pipeline: p.ref, step: claim.stepName,
  });
  const started = performance.now();
  const fail = async (error: StepError) => {
    handlerDone();
    const r = await o.settler.fail(claim.attemptId, error);
    result.errorClass = error.class;
    result.outcome = !r ? 'lost' : r.stepStatus === 'retrying' ? (error.outcome === 'timed_out' ? 'timed_out' : 'retrying') : 'failed';
    if (r) {
      const fields = { error_class: error.class, error: error.message, attempt: claim.attemptNumber };
      if (r.stepStatus === 'retrying') log.warn(fields, 'step failed; retry scheduled');
      else log.error(fields, 'step failed permanently');
    }
  };

  const step = p.stepNamed(claim.definitionStep);
  if (!step) {
    await fail({ class: 'unknown_step', message: `pipeline ${p.ref} has no step "${claim.definitionStep}" in this worker's code`, retryable: false });
    return;
  }
  const input = p.input.safeParse(claim.input);
  if (!input.success) {
    await fail({ class: 'invalid_input', message: `job input does not satisfy ${p.ref}'s contract: ${z.prettifyError(input.error)}`, retryable: false });
    return;
  }
  // An item of a map step runs as its own step, with its item (claim.item) and index.
  const item = claim.itemIndex !== null ? { value: claim.item, index: claim.itemIndex } : null;
  log.info({ attempt: claim.attemptNumber, ...(item ? { item: item.index } : {}) }, kindOf(step).startMessage(step, item));
  const controller = new AbortController();
  const end = await runHandler(o, step, input.data, item, controller, log, handlerDone);
  await recordEnd({ o, step, end, fail, result, log, started, signal: controller.signal });
}

/**
 * Runs the step through its kind (kinds/: the handler, a map step's items function, a model step's ladder) with its
 * context, under its timeout and the aborts the worker may send (cancellation, a lost attempt, shutdown); returns
 * how it ended. An aborted handler gets abandonMs to notice its signal; then the attempt ends without it.
 */
async function runHandler(o: RunAttemptOptions, step: StepDefinition, input: unknown, item: AttemptRun['item'],
  controller: AbortController, log: Logger, handlerDone: () => void): Promise<HandlerEnd> {
  const { claim, db } = o;
  let aborted: AttemptAborted | undefined;
  let onAbort: (() => void) | undefined;
  const abortedPromise = new Promise<never>((_, reject) => {
    onAbort = () => {
      // Give the handler abandonMs to notice its signal; then stop waiting for it.
      const t = setTimeout(() => reject(aborted), o.abandonMs);
      t.unref();
    };
  });
  abortedPromise.catch(() => {});
  const abort = (reason: AbortReason, message: string) => {
    if (aborted) return;
    aborted = new AttemptAborted(reason, message);
    controller.abort(aborted);
    onAbort?.();
  };
  const untrack = o.track({ attemptId: claim.attemptId, abort });
  const timer = step.timeoutMs
    ? setTimeout(() => abort('timeout', `step ran longer than its timeout of ${step.timeoutMs} ms`), step.timeoutMs)
    : undefined;
  const effects = stepEffects({
    db, attemptId: claim.attemptId, attempt: claim.attemptNumber, log, recorded: claim.effects, signal: controller.signal,
  });
  try {
    const ctx = {
      input,
      deps: claim.dependencies,
      signal: controller.signal,
      log,
      progress: async (value: unknown) => {
        await db.reportProgress(claim.attemptId, value);
      },
      effect: effects.effect,
      transaction: effects.transaction,
      waitForEvent: async (key: string, opts: WaitOptions = {}) => {
        const r = await db.waitForEvent(claim.attemptId, key, opts.timeoutMs ?? null, opts.onTimeout ?? 'fail');
        if (r.received) return r.payload;
        throw new StepParked(key);
      },
      sleep: async (key: string, duration: number | Date) => {
        const r = await db.sleepStep(claim.attemptId, key, duration);
        if (r.slept) return r.until;
        throw new StepParked(key, r.until);
      },
      pauseKey: async (key: string, opts: { reason: string; forMs?: number; until?: Date }) => {
        if ((opts.forMs === undefined) === (opts.until === undefined)) {
          throw new TypeError(`ctx.pauseKey(${JSON.stringify(key)}): give either forMs or until (how long the key stays closed)`);
        }
        const pause = await db.pauseKey({
          key, reason: opts.reason, until: opts.until ?? null, forMs: opts.forMs ?? null, stepId: claim.stepId,
          actor: `step ${claim.stepId} (job ${claim.jobId})`,
        });
        return pause.until!;
      },
      startChildren: async (children: ChildJob[]) => (Array.isArray(children) && children.length === 0 ? [] : db.startChildJobs(claim.attemptId, children)),
      waitForChildren: async (opts: WaitForChildrenOptions = {}) => {
        const r = await db.waitForChildren(claim.attemptId, opts.jobIds ?? null, opts.first ?? null);
        if (r.done) return r.children;
        throw new StepParked('children', undefined, r.waitingFor);
      },
      idempotencyKey: claim.idempotencyKey,
      attempt: claim.attemptNumber,
      maxAttempts: claim.maxAttempts,
      jobId: claim.jobId,
      stepId: claim.stepId,
      tenantId: claim.tenantId,
    };
    const run: AttemptRun = { ctx, db, attemptId: claim.attemptId, item, providers: o.providers };
    const kind = kindOf(step);
    const handler = Promise.resolve().then(() => {
      // Watchdog hook: a handler that blocks the event loop in its synchronous part is blamed for the block.
      enterAttempt(claim.attemptId);
      try {
        return kind.run(step, run);
      } finally {
        leaveAttempt();
      }
    });
    const end = await Promise.race([handler, abortedPromise]);
    return aborted ? { kind: 'aborted', aborted } : { kind: 'ended', end };
  } catch (error) {
    return aborted ? { kind: 'aborted', aborted } : { kind: 'threw', error };
  } finally {
    if (timer) clearTimeout(timer);
    untrack();
    handlerDone();
  }
}

/** Records how the handler's run ended: an abort, a failure (classified), a park, a settled end, items, or output. */
async function recordEnd(x: {
  o: RunAttemptOptions; step: StepDefinition; end: HandlerEnd; fail: (error: StepError) => Promise<void>;
  result: AttemptResult; log: Logger; started: number; signal: AbortSignal;
}): Promise<void> {
  const { o, step, end, fail, result, log } = x;
  const { claim, db } = o;
  if (end.kind === 'aborted') {
    await recordAbort(o, end.aborted, fail, result, log);
    return;
  }
  if (end.kind === 'threw') {
    if (end.error instanceof StepParked) {
      result.outcome = 'parked';
      if (end.error.children) log.info({ children: end.error.children }, 'step waiting for its child jobs');
      else if (end.error.until) log.info({ key: end.error.key, until: end.error.until.toISOString() }, 'step sleeping');
      else log.info({ key: end.error.key }, 'step waiting for an event');
      return;
    }
    await fail(classifyError(end.error, step, x.signal));
    return;
  }
  const ended = end.end;
  switch (ended.kind) {
    case 'settled':
      result.outcome = ended.stepStatus === 'needs_review' ? 'needs_review' : 'parked';
      log.warn({ step_status: ended.stepStatus }, ended.message);
      return;
    case 'items': {
      const items = ended.items;
      if (!Array.isArray(items)) {
        await fail({ class: 'invalid_items', message: `the items function of map step "${step.name}" returned ${typeof items}, not an array`, retryable: false });
        return;
      }
      const n = await settle(() => db.expandItems(claim.attemptId, items as unknown[]), log);
      if (n !== undefined) result.outcome = 'succeeded';
      if (n !== undefined) log.info({ items: n }, 'map step listed its items');
      return;
    }
    case 'output': {
      const checked = step.output.safeParse(ended.value);
      if (!checked.success) {
        await fail({ class: 'output_contract', message: `step output does not satisfy its contract: ${z.prettifyError(checked.error)}`, retryable: false });
        return;
      }
      const ms = Math.round(performance.now() - x.started);
      const done = await o.settler.complete(claim.attemptId, checked.data);
      if (done) result.outcome = 'succeeded';
      if (done) log.info({ ms }, 'step succeeded');
    }
  }
}

/** An aborted attempt: a timeout fails it (retried while attempts remain), a shutdown releases the step for
 * another worker, a cancellation or a lost step already ended it in the database. */
async function recordAbort(o: RunAttemptOptions, aborted: AttemptAborted, fail: (error: StepError) => Promise<void>,
  result: AttemptResult, log: Logger): Promise<void> {
  switch (aborted.reason) {
    case 'timeout':
      await fail({ class: 'timeout', message: aborted.message, retryable: true, outcome: 'timed_out' });
      return;
    case 'shutdown': {
      result.outcome = 'released';
      const status = await settle(() => o.db.releaseAttempt(o.claim.attemptId, aborted.message), log);
      if (status) log.warn({ step_status: status }, 'step released for another worker (shutdown)');
      return;
    }
    default:
      // cancelled or lost: nothing to record.
      result.outcome = aborted.reason;
      log.warn({ reason: aborted.reason }, `step stopped: ${aborted.message}`);
  }
}

/**
 * Records an outcome; an attempt that lost its step in the meantime (BA008) is logged, not retried. A lost
 * connection is retried for a while: the work is done and only its record is missing (left unrecorded, the attempt
 * would wait for its lease to run out and be charged as crashed). If the lost try did commit, the retry finds the
 * attempt finished (BA008) and stops there.
 */
export async function settle<T>(fn: () => Promise<T>, log: Logger): Promise<T | undefined> {
  try {
    return await retryOnConnectionLoss(fn, log, 'record the outcome');
  } catch (err) {
    if (err instanceof BallastError && err.code === 'stale_attempt') {
      log.warn({ err: err.message }, 'result discarded: the attempt no longer owns its step');
      return undefined;
    }
    throw err;
  }
}
