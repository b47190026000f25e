// Side effects of a step: ctx.effect (anything, at least once with a stable key) and ctx.transaction (SQL in the
// same Postgres, exactly once). Both are keyed per step in the ledger ballast_private.effects (0002_tables, 0007_effects_and_signals): a key
// recorded by any attempt of the step is never run again; its recorded result is returned instead.
//
// ctx.effect(key, fn):
//   1. ballast.begin_effect records the intent (step, key, attempt) before fn runs, fenced (BA008 when the attempt
//      lost its step), and says whether earlier attempts started the effect without recording it.
//   2. fn runs with { idempotencyKey, attempt, previouslyStarted }.
//   3. ballast.record_effect stores fn's result, retried while the connection is lost (src/db/retry.ts).
//   A process that dies between 2 and 3 leaves the intent: the next attempt runs fn again with previouslyStarted =
//   true and the same idempotencyKey, which the other side uses to recognise the repeat. That is the honest promise
//   for anything outside this Postgres: at least once, with a stable key.
//
// ctx.transaction(key, fn): BEGIN; ballast.begin_transactional_effect (locks the step, fences the attempt, returns
// a recorded result); fn(client); ballast.record_effect; COMMIT, on one pool connection. fn's SQL and the ledger row
// commit together or not at all, and the step cannot change hands in between: exactly once. A connection lost
// before the commit was confirmed is retried from the top; if the commit did happen, the retry finds the key
// recorded and returns its result without calling fn. When the attempt's signal fires (timeout, cancellation, lost
// step, shutdown) before the commit, the transaction's backend is terminated: it rolls back and frees the step, so
// a slow fn cannot hold up recording the attempt's end (and the worker slot with it).
import type { Logger } from 'pino';
import type { BallastDb } from '../db/api.ts';
import { retryOnConnectionLoss } from '../db/retry.ts';
import type { EffectInfo, EffectClient } from '../pipeline/protocol.ts';

export interface EffectScope {
  db: BallastDb;
  attemptId: string;
  /** The attempt's number, as counted against max attempts. */
  attempt: number;
  log: Logger;
  /** Effects the step recorded before this attempt (the claim's key -> result). */
  recorded: Record<string, unknown>;
  /** The attempt's signal: when it fires, an uncommitted transactional effect is rolled back at once. */
  signal?: AbortSignal;
}

export interface StepEffects {
  effect<T>(key: string, fn: (info: EffectInfo) => T | Promise<T>): Promise<T>;
  transaction<T>(key: string, fn: (client: EffectClient) => Promise<T>): Promise<T>;
}

/** The effect members of one attempt's step context. */
export function stepEffects(scope: EffectScope): StepEffects {
  const { db, attemptId, log } = scope;
  const recorded = new Map<string, unknown>(Object.entries(scope.recorded));
  // Two calls with one key in the same attempt (e.g. under Promise.all) share one run.
  const running = new Map<string, Promise<unknown>>();

  const once = async <T>(key: string, run: () => Promise<unknown>): Promise<T> => {
    if (recorded.has(key)) {
      log.debug({ effect: key }, 'effect already recorded; reusing its result');
      return recorded.get(key) as T;
    }
    let p = running.get(key);
    if (!p) {
      p = run().then((result) => {
        recorded.set(key, result);
        return result;
      }).finally(() => running.delete(key));
      running.set(key, p);
    }
    return (await p) as T;
  };

  return {
    effect: <T>(key: string, fn: (info: EffectInfo) => T | Promise<T>) => once<T>(key, async () => {
      const begun = await retryOnConnectionLoss(() => db.beginEffect(attemptId, key), log, 'record the start of an effect');
      if (begun.done) {
        log.debug({ effect: key }, 'effect already recorded; reusing its result');
        return begun.result;
      }
      const previouslyStarted = begun.earlierAttempts > 0;
      if (previouslyStarted) {
        log.warn({ effect: key, earlier_attempts: begun.earlierAttempts, idempotency_key: begun.idempotencyKey },
          'effect was started by an earlier attempt that never recorded its result; running it again with the same idempotency key');
      }
      const value = await fn({ idempotencyKey: begun.idempotencyKey, attempt: scope.attempt, previouslyStarted });
      // fn's work is done: its record must not be lost to a dropped connection (the next attempt would repeat fn).
      return retryOnConnectionLoss(() => db.recordEffect(attemptId, key, value), log, 'record an effect');
    }),

    transaction: <T>(key: string, fn: (client: EffectClient) => Promise<T>) => once<T>(key, async () => {
      const r = await retryOnConnectionLoss(() => db.transactionalEffect(attemptId, key, fn, scope.signal), log, 'commit a transactional effect');
      log.debug({ effect: key, ran: r.ran }, r.ran ? 'transactional effect committed' : 'transactional effect already recorded; reusing its result');
      return r.result;
    }),
  };
}
