// A sleep step: waits a duration (or until a time) without holding a worker slot, through ctx.sleep keyed by the
// step's name: the first run records the wake time and parks the step; the run after it returns at once. Its output
// is the wake time, { until }. A kind added after the runner was written: it needed no change there.
import type { SleepStep } from '../definition.ts';
import type { StepKind } from './kind.ts';

export const sleepKind: StepKind<SleepStep> = {
  async run(step, a) {
    const duration = typeof step.duration === 'function' ? await step.duration(a.ctx) : step.duration;
    const until = await a.ctx.sleep(step.name, duration);
    return { kind: 'output', value: { until: until.toISOString() } };
  },
  definition: (step) => ({
    sleep: { duration_ms: typeof step.duration === 'number' ? step.duration : null, until: step.duration instanceof Date ? step.duration.toISOString() : null },
  }),
  startMessage: () => 'sleep step started',
};
