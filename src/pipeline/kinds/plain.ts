// A plain step: its handler runs once per job (with retries); what it returns is the step's output.
import type { PlainStep } from '../definition.ts';
import type { StepKind } from './kind.ts';

export const plainKind: StepKind<PlainStep> = {
  async run(step, a) {
    return { kind: 'output', value: await step.run(a.ctx) };
  },
  definition: () => ({}),
  startMessage: () => 'step started',
};
