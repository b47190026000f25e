// A model step: a prompt rendered with the step's variables, sent to a model with the output contract as structured
// output, and the answer taken through the contract ladder (re-asks, fallbacks, default, review; src/model/ladder.ts).
// The ladder, and with it the AI SDK and its providers, loads on the first model step run, not with the pipeline.
import { z } from 'zod';
import { parseModelRef } from '../../model/model-ref.ts';
import { promptRef } from '../../model/prompt.ts';
import type { ModelStepSpec } from '../../model/spec.ts';
import { checkInteger, invalid } from '../checks.ts';
import type { ModelStep } from '../definition.ts';
import type { StepKind } from './kind.ts';

export const modelKind: StepKind<ModelStep> = {
  async run(step, a) {
    const { runModelLadder } = await import('../../model/ladder.ts');
    if (!step.spec.stream) return runModelLadder(a, step.spec);
    // Live tokens (worker/token-stream.ts): only streaming model steps pay for them.
    const { streamTokens } = await import('../../worker/token-stream.ts');
    return streamTokens(a, (withTokens) => runModelLadder(withTokens, step.spec));
  },
  // Only model steps carry their prompt, models and policy, so adding them changed no existing definition hash.
  definition: ({ spec }) => ({
    model: {
      prompt: promptRef(spec.prompt).ref, model: spec.model, fallbacks: spec.fallbacks ?? [], reasks: spec.reasks ?? 2,
      max_output_tokens: spec.maxOutputTokens ?? 1024, default: Object.hasOwn(spec, 'default'), review: spec.review ?? false,
      quality: spec.quality ? {
        rules: (spec.quality.rules ?? []).map((r) => r.name), score: Boolean(spec.quality.score),
        threshold: spec.quality.threshold ?? 0.5, on_fail: spec.quality.onFail ?? 'fallback',
      } : null,
    },
  }),
  startMessage: () => 'step started',
};

/** Checks a model step's options when the pipeline is defined (`where`: 'name@version step s'). */
export function checkModelSpec(where: string, spec: ModelStepSpec<unknown>): void {
  try {
    promptRef(spec.prompt);
  } catch (err) {
    invalid(where, (err as Error).message, 'Name the prompt as prompt({...}), promptLabel(name, label) or "name@label".');
  }
  for (const m of [spec.model, ...(spec.fallbacks ?? [])]) {
    try {
      parseModelRef(m);
    } catch (err) {
      invalid(where, (err as Error).message, 'Name models as provider:model.');
    }
  }
  checkInteger(where, 'reasks', spec.reasks ?? 2, 0, 10);
  checkInteger(where, 'maxOutputTokens', spec.maxOutputTokens ?? 1024, 1, 1_000_000);
  checkInteger(where, 'callTimeoutMs', spec.callTimeoutMs ?? 60_000, 1, 2 ** 31 - 1);
  const threshold = spec.quality?.threshold;
  if (threshold !== undefined && !(threshold >= 0 && threshold <= 1)) {
    invalid(where, `quality.threshold ${threshold} is not from 0 to 1`, 'Give the lowest acceptable score, e.g. 0.7.');
  }
  if (Object.hasOwn(spec, 'default')) {
    const checked = spec.output.safeParse(spec.default);
    if (!checked.success) invalid(where, `its default value does not satisfy the output contract: ${z.prettifyError(checked.error)}`, 'Fix the default or the contract.');
  }
}
