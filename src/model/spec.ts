// What a model step declares (its model, fallbacks, re-asks, quality rules, review): the options of
// pipeline().modelStep(), read by the contract ladder (ladder.ts). Types only, so the pipeline DSL can name them
// without loading the ladder and the AI SDK.
import type { z } from 'zod';
import type { PromptOption } from './prompt.ts';
import type { StepContext } from '../pipeline/protocol.ts';

export interface QualityRule<O> {
  name: string;
  /** true when the output passes; false or a text saying what is wrong when it does not. */
  check: (output: O) => boolean | string;
}

export interface QualityPolicy<O> {
  /** Business rules on contract-valid output. */
  rules?: QualityRule<O>[];
  /** A score from 0 to 1 (e.g. a heuristic, a classifier, a judge model's verdict). */
  score?: (output: O) => number | Promise<number>;
  /** Outputs scoring below this fail the check. Default 0.5. */
  threshold?: number;
  /** Where a failed check goes: the next model ('fallback', default) or a person ('review'). */
  onFail?: 'fallback' | 'review';
}

export interface ModelPolicy<O> {
  /** `provider:model`, e.g. openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest, ollama:llama3.1, local:wink. */
  model: string;
  /** Tried in order when the model's answers stay unusable. */
  fallbacks?: string[];
  /** Re-asks per model after an unparsable or contract-violating answer. Default 2. */
  reasks?: number;
  /** Per call; also the bound of the budget estimate. Default 1024. */
  maxOutputTokens?: number;
  temperature?: number;
  /** Per call, first byte to last. Default 60000. */
  callTimeoutMs?: number;
  /** Stream responses (records the time of the first token). Default false. */
  stream?: boolean;
  /** Used when every model failed: the step succeeds with it, outcome `degraded` (visible in metrics). */
  default?: O;
  /** High blast radius: when every model failed, a person decides (needs_review) instead of a failure. */
  review?: boolean;
  quality?: QualityPolicy<O>;
  /** A shared cooldown shorter than this is waited out; a longer one counts as a transport failure. Default 1000. */
  cooldownWaitMs?: number;
}

export interface ModelStepSpec<O> extends ModelPolicy<O> {
  /** prompt({...}) (a version in code), promptLabel(name, label) or 'name@label', storedPrompt(name, n) or 'name@n'. */
  prompt: PromptOption;
  /** The values of the prompt's placeholders. Default { input, deps }. */
  vars?: (ctx: StepContext<any, any>) => Record<string, unknown> | Promise<Record<string, unknown>>;
  output: z.ZodType<O>;
}
