// What a kind of step is to the rest of ballast: how one attempt of it runs, and what its registered definition
// records. The runner (worker/runner.ts) calls these and nothing else of a kind; the DSL (pipeline.ts) builds the
// step's definition. Adding a kind (sleep, child jobs, evals, webhooks) is a module here, its entry in index.ts and
// the DSL method that builds it: the runner does not change.
import type { StepDefinition } from '../definition.ts';
import type { AttemptRun, StepEnd } from '../protocol.ts';

export interface StepKind<D extends StepDefinition> {
  /**
   * Runs one attempt: the handler (or the kind's own work) with the attempt's context, and says how it ended. What
   * the handler throws is thrown on (the runner classifies it); its synchronous part runs before the first await, so
   * the watchdog can blame a handler that blocks the event loop.
   */
  run(step: D, attempt: AttemptRun): Promise<StepEnd>;
  /** What ballast.register_pipeline stores of the step beyond the fields every step has (keys only this kind has). */
  definition(step: D): Record<string, unknown>;
  /** The log message when an attempt starts. */
  startMessage(step: D, item: AttemptRun['item']): string;
}
