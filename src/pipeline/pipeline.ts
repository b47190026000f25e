// Defining pipelines in TypeScript. A pipeline is a name, a version, an input contract (zod) and steps added in
// order; a step may depend only on steps added before it, so every pipeline is a DAG by construction (sequence,
// fan-out, fan-in). The definition registered in Postgres (ballast.register_pipeline) is derived from this object:
// step names, dependencies, retry and concurrency policies, and the JSON Schemas of the input and of each output.
import { z } from 'zod';
import type { ModelPolicy, ModelStepSpec } from '../model/spec.ts';
import type { PromptOption } from '../model/prompt.ts';
import type { FinalStepStatus } from '../statuses.ts';

// The options and the step definitions (a union by kind) are data, in definition.ts; each kind's behaviour is in
// kinds/. The step context and what a handler sees are the runtime protocol (protocol.ts). Re-exported here for
// pipeline authors.
export type { RetryPolicy, ConcurrencyPolicy, StepOptions, StepDefinition } from './definition.ts';
import type { ConcurrencyPolicy, StepDefinition, StepOptions, StepBase, MapStep, SleepStep } from './definition.ts';
export type { StepContext, EffectInfo, EffectClient, WaitOptions, ItemContext, ChildJob, StartedChild, ChildResult, WaitForChildrenOptions } from './protocol.ts';
import type { ItemContext, StepContext } from './protocol.ts';
import { checkInteger, checkKeys, checkWeight, invalid } from './checks.ts';
import { kindOf } from './kinds/index.ts';
import { checkModelSpec } from './kinds/model.ts';

export interface ModelStepOptions<I, DS, D extends string, O> extends StepOptions<D, O>, ModelPolicy<O> {
  /**
   * The prompt: prompt({...}) (a version in code, stored on first use), promptLabel(name, label) or 'name@label' (the
   * label's version, pinned per job), storedPrompt(name, n) or 'name@n' (a version stored in Postgres).
   */
  prompt: PromptOption;
  /** The values of the prompt's placeholders. Default { input, deps }. */
  vars?: (ctx: StepContext<I, DS>) => Record<string, unknown> | Promise<Record<string, unknown>>;
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

/** The longest sleep (ten years, in ms), also checked by ballast.sleep_step. */
export const MAX_SLEEP_MS = 315_576_000_000;

/** What a sleep step hands to the steps after it: the time it woke. */
const SLEEP_OUTPUT = z.object({ until: z.string() });

/** The most maxInputBytes may be (64 MiB); the default is 1 MiB (ballast_private.input_size_limit). */
export const MAX_INPUT_BYTES_LIMIT = 67_108_864;

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
    return this.add<N, O>({ ...this.base(name, options), kind: 'plain', run: run as (ctx: StepContext<any, any>) => unknown });
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
    return this.add<N, MapResult<O>>({
      ...this.base(name, options), kind: 'map', items: options.items as MapStep['items'], run: run as MapStep['run'],
      partial: partial !== false, minSucceeded,
    });
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
    const base = this.base(name, options);
    const spec = options as unknown as ModelStepSpec<unknown>;
    checkModelSpec(`${this.ref} step ${name}`, spec);
    return this.add<N, O>({ ...base, kind: 'model', spec });
  }

  /**
   * Adds a sleep step: the job's flow waits `duration` (milliseconds, or until a Date, or what a function of the
   * context gives) without holding a worker slot, durably (ctx.sleep: a crash or restart keeps the wake time). The
   * steps after it get { until }, the time it woke.
   */
  sleep<N extends string, D extends keyof S & string = never>(
    name: N,
    options: {
      after?: readonly D[];
      duration: number | Date | ((ctx: StepContext<I, { [K in D]: S[K] }>) => number | Date | Promise<number | Date>);
    },
  ): Pipeline<I, S & { [K in N]: { until: string } }> {
    if (typeof options.duration === 'number') checkInteger(`${this.ref} step ${name}`, 'duration', options.duration, 0, MAX_SLEEP_MS);
    return this.add<N, { until: string }>({
      ...this.base(name, { after: options.after, output: SLEEP_OUTPUT }), kind: 'sleep',
      duration: options.duration as SleepStep['duration'],
    });
  }

  /** Checks what every kind of step has (its name, dependencies and policies) and returns it with the defaults. */
  private base(name: string, options: StepOptions<string, unknown>): StepBase {
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
    return {
      name, after, output: options.output, retry, timeoutMs: options.timeoutMs ?? null,
      concurrency: this.concurrency(name, options.concurrency), isPermanent: options.isPermanent,
      keys: checkKeys(where, name, options.keys), weight: checkWeight(where, name, options.weight),
    };
  }

  private concurrency(name: string, c: ConcurrencyPolicy | undefined): Required<ConcurrencyPolicy> | null {
    if (!c) return null;
    const key = c.key ?? 'global';
    if (!/^(global|tenant|input(\.[A-Za-z0-9_-]+)+)$/.test(key)) {
      invalid(this.ref, `step "${name}": concurrency key "${key}" is not valid`, 'Use "global", "tenant" or "input.<field>".');
    }
    checkInteger(`${this.ref} step ${name}`, 'concurrency.limit', c.limit, 1, 100_000);
    return { limit: c.limit, key, group: c.group ?? `${this.name}.${name}` };
  }

  private add<N extends string, R>(def: StepDefinition): Pipeline<I, S & { [K in N]: R }> {
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
        // Only when set (existing definition hashes stay as they were).
        ...(s.keys !== null ? { keys: s.keys } : {}),
        ...(s.weight !== null ? { weight: s.weight } : {}),
        output_schema: z.toJSONSchema(s.output, { io: 'output', unrepresentable: 'any' }),
        // What only this kind of step has (a map's partial policy, a model step's prompt and models): plain steps add
        // nothing, so adding kinds changed no existing pipeline's definition hash.
        ...kindOf(s).definition(s),
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
