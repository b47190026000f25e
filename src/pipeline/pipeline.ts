// Defining pipelines in TypeScript. A pipeline is a name, a version, an input contract (zod) and steps added in
// order; a step may depend only on steps added before it, so every pipeline is a DAG by construction (sequence,
// fan-out, fan-in). The definition registered in Postgres (ballast.register_pipeline) is derived from this object:
// step names, dependencies, retry and concurrency policies, and the JSON Schemas of the input and of each output.
import { z } from 'zod';
import type { ModelPolicy, ModelStepSpec } from '../model/spec.ts';
import { parseModelRef } from '../model/model-ref.ts';
import type { Prompt } from '../model/prompt.ts';
import type { FinalStepStatus } from '../statuses.ts';

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

// The step context and the objects a step handler sees are the runtime protocol (src/pipeline/protocol.ts, a leaf module
// that the runner, effects and model steps share); re-exported here for pipeline authors.
export type { StepContext, EffectInfo, EffectClient, WaitOptions } from './protocol.ts';
import type { StepContext } from './protocol.ts';

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
}

export interface StepDefinition {
  name: string;
  after: readonly string[];
  output: z.ZodType;
  retry: Required<RetryPolicy>;
  timeoutMs: number | null;
  concurrency: Required<ConcurrencyPolicy> | null;
  isPermanent: ((err: unknown) => boolean) | undefined;
  /** For a map step: how to list its items, and whether failed items are acceptable. */
  map: MapDefinition | null;
  /** For a map step, runs one item (ctx.item); otherwise the step itself. */
  run: (ctx: StepContext<any, any> & Partial<ItemContext<unknown>>) => unknown;
  /** For a model step: what its definition records of the prompt, models and policy. */
  model?: Record<string, unknown>;
}

export interface ModelStepOptions<I, DS, D extends string, O> extends StepOptions<D, O>, ModelPolicy<O> {
  /** The prompt version (ballast.prompts stores it on first use). */
  prompt: Prompt;
  /** The values of the prompt's placeholders. Default { input, deps }. */
  vars?: (ctx: StepContext<I, DS>) => Record<string, unknown> | Promise<Record<string, unknown>>;
}

export interface MapDefinition {
  items: (ctx: StepContext<any, any>) => unknown[] | Promise<unknown[]>;
  partial: boolean;
  minSucceeded: number;
}

export interface ItemContext<T> {
  /** The item this run processes. */
  item: T;
  /** Its position in the list the map step returned. */
  index: number;
}

/** What a map step hands to the steps after it. */
export interface MapResult<O> {
  items: { index: number; status: FinalStepStatus; output?: O; error?: unknown }[];
  succeeded: number;
  failed: number;
}

export interface MapOptions<D extends string, T, O> extends StepOptions<D, O> {
  /** Lists the items (JSON values) to process; runs once, on the step's first attempt. */
  items: (ctx: StepContext<any, any>) => T[] | Promise<T[]>;
  /**
   * Whether the job may go on when some items failed for good: true (at least one item must succeed), or
   * { minSucceeded: n }. Default false: one failed item fails the step. A job that went on past failed items ends
   * `partially_completed`.
   */
  partial?: boolean | { minSucceeded: number };
}

const NAME = /^[a-z][a-z0-9_.-]{0,62}$/;
const STEP_NAME = /^[a-z][a-z0-9_]{0,62}$/;

function invalid(pipeline: string, message: string, fix: string): never {
  throw new Error(`pipeline ${pipeline}: ${message}. ${fix}`);
}

/** The most maxInputBytes may be (64 MiB); the default is 1 MiB (ballast_private.input_size_limit). */
export const MAX_INPUT_BYTES_LIMIT = 67_108_864;

function checkInteger(where: string, field: string, value: number, min: number, max: number): void {
  if (!Number.isInteger(value) || value < min || value > max) {
    invalid(where, `${field} ${value} is not an integer from ${min} to ${max}`, `Set ${field} within that range.`);
  }
}

export class Pipeline<I = unknown, S extends Record<string, unknown> = {}> {
  readonly name: string;
  readonly version: number;
  readonly input: z.ZodType<I>;
  readonly steps: readonly StepDefinition[];
  /** The largest input accepted, in bytes of JSON text (null: the default, 1 MiB). Checked by Postgres first. */
  readonly maxInputBytes: number | null;

  constructor(name: string, version: number, input: z.ZodType<I>, steps: readonly StepDefinition[] = [],
    maxInputBytes: number | null = null) {
    if (!NAME.test(name)) {
      throw new Error(`pipeline name "${name}" is not valid: use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".`);
    }
    checkInteger(name, 'version', version, 1, 2 ** 31 - 1);
    if (maxInputBytes !== null) checkInteger(`${name}@${version}`, 'maxInputBytes', maxInputBytes, 1, MAX_INPUT_BYTES_LIMIT);
    this.maxInputBytes = maxInputBytes;
    this.name = name;
    this.version = version;
    this.input = input;
    this.steps = steps;
  }

  /** `name@version`, as jobs and logs show it. */
  get ref(): string {
    return `${this.name}@${this.version}`;
  }

  /** The graphile-worker task that runs this version's steps (same as SQL ballast.task_identifier). */
  get taskIdentifier(): string {
    return `ballast_step:${this.name}@${this.version}`;
  }

  /** Adds a step that runs once per job (with retries). */
  step<N extends string, O, D extends keyof S & string = never>(
    name: N,
    options: StepOptions<D, O>,
    run: (ctx: StepContext<I, { [K in D]: S[K] }>) => O | Promise<O>,
  ): Pipeline<I, S & { [K in N]: O }> {
    return this.add<N, O, O>(name, options, run as StepDefinition["run"], null);
  }

  /**
   * Adds a map step: `items` lists the work (on the step's first run), then `run` processes each item as its own
   * unit with its own attempts, retries and timeout, in parallel across workers. The output contract applies to
   * each item's result; the steps after it receive a MapResult with every item's outcome.
   */
  map<N extends string, T, O, D extends keyof S & string = never>(
    name: N,
    options: MapOptions<D, T, O>,
    run: (item: T, ctx: StepContext<I, { [K in D]: S[K] }> & ItemContext<T>) => O | Promise<O>,
  ): Pipeline<I, S & { [K in N]: MapResult<O> }> {
    if (name.length > 50) invalid(this.ref, `map step name "${name}" is longer than 50 characters`, 'Shorten it (items are named <step>__<index>).');
    const partial = options.partial ?? false;
    const minSucceeded = typeof partial === 'object' ? partial.minSucceeded : 1;
    checkInteger(`${this.ref} step ${name}`, 'partial.minSucceeded', minSucceeded, 0, 1_000_000);
    const map: MapDefinition = { items: options.items as MapDefinition['items'], partial: partial !== false, minSucceeded };
    return this.add<N, O, MapResult<O>>(name, options, ((ctx: StepContext<any, any> & ItemContext<T>) => run(ctx.item, ctx)) as StepDefinition["run"], map);
  }

  /**
   * Adds a model step: the prompt rendered with vars(ctx), sent to `model` with the output contract as structured
   * output, and the answer taken through the contract ladder (re-ask, fallbacks, default, review; src/model/ladder.ts).
   * Every provider call is traced, priced and counted against the tenant's budget.
   */
  modelStep<N extends string, O, D extends keyof S & string = never>(
    name: N,
    options: ModelStepOptions<I, { [K in D]: S[K] }, D, O>,
  ): Pipeline<I, S & { [K in N]: O }> {
    const where = `${this.ref} step ${name}`;
    for (const m of [options.model, ...(options.fallbacks ?? [])]) {
      try {
        parseModelRef(m);
      } catch (err) {
        invalid(where, (err as Error).message, 'Name models as provider:model.');
      }
    }
    checkInteger(where, 'reasks', options.reasks ?? 2, 0, 10);
    checkInteger(where, 'maxOutputTokens', options.maxOutputTokens ?? 1024, 1, 1_000_000);
    checkInteger(where, 'callTimeoutMs', options.callTimeoutMs ?? 60_000, 1, 2 ** 31 - 1);
    const threshold = options.quality?.threshold;
    if (threshold !== undefined && !(threshold >= 0 && threshold <= 1)) {
      invalid(where, `quality.threshold ${threshold} is not from 0 to 1`, 'Give the lowest acceptable score, e.g. 0.7.');
    }
    const hasDefault = Object.hasOwn(options, 'default');
    if (hasDefault) {
      const checked = options.output.safeParse(options.default);
      if (!checked.success) invalid(where, `its default value does not satisfy the output contract: ${z.prettifyError(checked.error)}`, 'Fix the default or the contract.');
    }
    const spec = options as ModelStepSpec<O>;
    // The ladder (and with it the AI SDK and its providers) loads on the first model step run, not with the pipeline.
    const run = (async (ctx: StepContext<any, any>) => (await import('../model/ladder.ts')).runModelLadder(ctx, spec)) as StepDefinition['run'];
    const model = {
      prompt: options.prompt.ref, model: options.model, fallbacks: options.fallbacks ?? [], reasks: options.reasks ?? 2,
      max_output_tokens: options.maxOutputTokens ?? 1024, default: hasDefault, review: options.review ?? false,
      quality: options.quality ? { rules: (options.quality.rules ?? []).map((r) => r.name), score: Boolean(options.quality.score), threshold: options.quality.threshold ?? 0.5, on_fail: options.quality.onFail ?? 'fallback' } : null,
    };
    return this.add<N, O, O>(name, options, run, null, model);
  }

  private add<N extends string, O, R>(name: N, options: StepOptions<string, O>, run: StepDefinition['run'], map: MapDefinition | null, model?: Record<string, unknown>): Pipeline<I, S & { [K in N]: R }> {
    const where = this.ref;
    if (!STEP_NAME.test(name)) {
      invalid(where, `step name "${name}" is not valid`, 'Use lower_snake_case: a letter, then letters, digits or "_".');
    }
    if (this.steps.some((s) => s.name === name)) invalid(where, `step "${name}" is defined twice`, 'Give each step its own name.');
    const after = [...new Set(options.after ?? [])]; // a dependency named twice is one dependency
    for (const dep of after) {
      if (!this.steps.some((s) => s.name === dep)) {
        invalid(where, `step "${name}" runs after "${dep}", which is not defined before it`, 'Add steps in dependency order.');
      }
    }
    const retry = {
      maxAttempts: options.retry?.maxAttempts ?? 5,
      baseDelayMs: options.retry?.baseDelayMs ?? 1000,
      maxDelayMs: options.retry?.maxDelayMs ?? 300_000,
    };
    checkInteger(`${where} step ${name}`, 'retry.maxAttempts', retry.maxAttempts, 1, 1000);
    checkInteger(`${where} step ${name}`, 'retry.baseDelayMs', retry.baseDelayMs, 0, 86_400_000);
    checkInteger(`${where} step ${name}`, 'retry.maxDelayMs', retry.maxDelayMs, 0, 604_800_000);
    if (options.timeoutMs !== undefined) checkInteger(`${where} step ${name}`, 'timeoutMs', options.timeoutMs, 1, 2 ** 31 - 1);
    let concurrency: Required<ConcurrencyPolicy> | null = null;
    if (options.concurrency) {
      const key = options.concurrency.key ?? 'global';
      if (!/^(global|tenant|input(\.[A-Za-z0-9_-]+)+)$/.test(key)) {
        invalid(where, `step "${name}": concurrency key "${key}" is not valid`, 'Use "global", "tenant" or "input.<field>".');
      }
      checkInteger(`${where} step ${name}`, 'concurrency.limit', options.concurrency.limit, 1, 100_000);
      concurrency = { limit: options.concurrency.limit, key, group: options.concurrency.group ?? `${this.name}.${name}` };
    }
    const def: StepDefinition = {
      name,
      after,
      output: options.output,
      retry,
      timeoutMs: options.timeoutMs ?? null,
      concurrency,
      isPermanent: options.isPermanent,
      map,
      run,
      ...(model ? { model } : {}),
    };
    return new Pipeline<I, S & { [K in N]: R }>(this.name, this.version, this.input, [...this.steps, def], this.maxInputBytes);
  }

  stepNamed(name: string): StepDefinition | undefined {
    return this.steps.find((s) => s.name === name);
  }

  /** JSON Schema of the input, as Postgres validates it. Refinements JSON Schema cannot express are re-checked by zod in the worker. */
  inputJsonSchema(): unknown {
    return z.toJSONSchema(this.input, { io: 'input', unrepresentable: 'any' });
  }

  /** The definition stored by ballast.register_pipeline (its hash pins the version). */
  definition(): { steps: unknown[]; max_input_bytes?: number } {
    if (this.steps.length === 0) invalid(this.ref, 'has no steps', 'Add at least one step with .step(name, options, run).');
    return {
      // Only when set, so that pipelines without it kept their definition hash.
      ...(this.maxInputBytes !== null ? { max_input_bytes: this.maxInputBytes } : {}),
      steps: this.steps.map((s) => ({
        name: s.name,
        depends_on: s.after,
        max_attempts: s.retry.maxAttempts,
        backoff_base_ms: s.retry.baseDelayMs,
        backoff_cap_ms: s.retry.maxDelayMs,
        timeout_ms: s.timeoutMs,
        concurrency: s.concurrency,
        output_schema: z.toJSONSchema(s.output, { io: 'output', unrepresentable: 'any' }),
        // Only map steps carry the key, so adding map steps changed no existing pipeline's definition hash.
        ...(s.map ? { map: { partial: s.map.partial, min_succeeded: s.map.minSucceeded } } : {}),
        // Likewise only model steps carry their prompt, models and policy.
        ...(s.model ? { model: s.model } : {}),
      })),
    };
  }
}

/** Starts a pipeline definition: `pipeline({ name, version, input }).step(...).step(...)`. */
export function pipeline<I>(options: {
  name: string;
  version: number;
  input: z.ZodType<I>;
  /**
   * The largest input a job of this version accepts, in bytes of its JSON text (1 to 64 MiB; default 1 MiB). Postgres
   * refuses a larger one (BA002) before validating it, on every way in (SQL, INSERT, GraphQL).
   */
  maxInputBytes?: number;
}): Pipeline<I, {}> {
  return new Pipeline<I, {}>(options.name, options.version, options.input, [], options.maxInputBytes ?? null);
}

export function isPipeline(value: unknown): value is Pipeline<any, any> {
  return value instanceof Pipeline;
}
