// What a step is, as data: the options a pipeline author gives (StepOptions and the policies), and the definition the
// DSL (pipeline.ts) builds from them, a union discriminated by `kind`. Each kind's behaviour lives in one module of
// kinds/ (how an attempt of it runs, what its registered definition records); the runner dispatches on `kind` and
// knows none of them. Types only: the DSL, the kinds and the runner import this without importing each other.
import type { z } from 'zod';
import type { ModelStepSpec } from '../model/spec.ts';
import type { ItemContext, StepContext } from './protocol.ts';

export interface RetryPolicy {
  /** Attempts in all, the first included (default 5). */
  maxAttempts?: number;
  /** Backoff base: attempt n waits random(0, min(maxDelayMs, baseDelayMs * 2^(n-1))) ("full jitter"). Default 1000. */
  baseDelayMs?: number;
  /** Cap of the backoff (default 300000, five minutes). */
  maxDelayMs?: number;
}

export interface ConcurrencyPolicy {
  /** At most this many steps of the group run at once, across all workers. */
  limit: number;
  /**
   * What splits the group: 'global' (one group), 'tenant' (one per tenant), or 'input.<path>' (one per value of
   * that input field, e.g. 'input.provider'). Default 'global'.
   */
  key?: 'global' | 'tenant' | `input.${string}`;
  /** Group name; steps of different pipelines that name the same group share the limit. Default '<pipeline>.<step>'. */
  group?: string;
}

export interface StepOptions<D extends string, O> {
  /** Steps that must succeed first; their outputs arrive in ctx.deps. */
  after?: readonly D[];
  /** Output contract: the returned value is checked (and transformed) by it before the step counts as succeeded. */
  output: z.ZodType<O>;
  retry?: RetryPolicy;
  /** Per-attempt time limit: the signal fires and the attempt ends `timed_out` (retried while attempts remain). */
  timeoutMs?: number;
  concurrency?: ConcurrencyPolicy;
  /** Errors for which retrying is pointless (besides PermanentError). */
  isPermanent?: (err: unknown) => boolean;
  /**
   * Keys the step belongs to besides its built-in ones (global, tenant:<id>, pipeline:<name>, step:<pipeline>.<step>,
   * and for model steps provider:<p>, model:<p>:<m>): pauses and limits on any of them hold it back
   * (docs/flow-control.md). Placeholders {tenant}, {input.<path>}, {item}, {item.<path>} take the job's values.
   */
  keys?: readonly string[];
  /** What the step counts for in `weight` limits (e.g. the tokens it will use): a number, or 'input.<path>' / 'item.<path>'. Default 1. */
  weight?: number | `input.${string}` | `item.${string}`;
}

/** What every kind of step has: its place in the DAG and the policies of its attempts. */
export interface StepBase {
  name: string;
  after: readonly string[];
  output: z.ZodType;
  retry: Required<RetryPolicy>;
  timeoutMs: number | null;
  concurrency: Required<ConcurrencyPolicy> | null;
  isPermanent: ((err: unknown) => boolean) | undefined;
  keys: readonly string[] | null;
  weight: number | string | null;
}

/** A step that runs its handler once per job (with retries). */
export interface PlainStep extends StepBase {
  kind: 'plain';
  run: (ctx: StepContext<any, any>) => unknown;
}

/** A map step: its first run lists items; each item then runs as a step of its own. */
export interface MapStep extends StepBase {
  kind: 'map';
  items: (ctx: StepContext<any, any>) => unknown[] | Promise<unknown[]>;
  /** Runs one item. */
  run: (item: unknown, ctx: StepContext<any, any> & ItemContext<unknown>) => unknown;
  /** Whether the job may go on when some items failed for good, and how many must succeed then. */
  partial: boolean;
  minSucceeded: number;
}

/** A model step: a prompt sent to a model, its answer taken through the contract ladder (src/model/ladder.ts). */
export interface ModelStep extends StepBase {
  kind: 'model';
  spec: ModelStepSpec<unknown>;
}

/** A sleep step: parks the job's flow for a duration or until a time (ctx.sleep), holding no worker slot. */
export interface SleepStep extends StepBase {
  kind: 'sleep';
  /** Milliseconds, a time, or a function of the step's context giving either (called on each run; the first wins). */
  duration: number | Date | ((ctx: StepContext<any, any>) => number | Date | Promise<number | Date>);
}

/** What a TypeScript scorer of an eval run gets (docs/evals.md#scorers). */
export interface ScorerArgs {
  /** What the step answered (contract-valid). */
  output: unknown;
  /** The case's reference output (undefined: none). */
  reference: unknown;
  /** The case's variables ({ input, deps }). */
  input: Record<string, unknown>;
  /** The case key and tags. */
  key: string;
  tags: string[];
}

/** A TypeScript scorer: a score from 0 to 1 (true counts 1, false 0). */
export type ScorerFn = (args: ScorerArgs) => number | boolean | Promise<number | boolean>;

/** What the eval kind needs from its worker: the model steps it may evaluate, and the scorers registered by name. */
export interface EvalTargets {
  modelStep(pipeline: string, version: number, step: string): ModelStep | undefined;
  scorers: ReadonlyMap<string, ScorerFn>;
}

/**
 * A step of the built-in eval pipeline (src/eval/pipeline.ts): `cases` is a map step with one item per case (each
 * runs the target model step and scores its answer), `summary` writes the run's figures.
 */
export interface EvalStep extends StepBase {
  kind: 'eval';
  role: 'cases' | 'summary';
  targets: EvalTargets;
}

/** A step of a pipeline, as data: the runner dispatches on `kind` (kinds/index.ts). */
export type StepDefinition = PlainStep | MapStep | ModelStep | SleepStep | EvalStep;

export type StepKindName = StepDefinition['kind'];
