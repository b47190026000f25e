// An eval step (the built-in pipeline ballast.eval, src/eval/pipeline.ts; docs/evals.md). `cases` works like a map
// step: its first run lists the run's cases (creating the run of a scheduled job) and each case becomes an item of
// its own, with its own attempts; an item runs the target model step through the contract ladder and scores the
// answer (src/eval/runner.ts). `summary` runs after every item ended and writes the run's figures. The runner, the
// ladder and the scorers load on the first eval step run, not with the worker.
import type { EvalStep } from '../definition.ts';
import type { StepKind } from './kind.ts';

export const evalKind: StepKind<EvalStep> = {
  async run(step, a) {
    const runner = await import('../../eval/runner.ts');
    if (step.role === 'summary') return runner.summarizeRun(a);
    if (a.item === null) return runner.listCases(a);
    return runner.runCase(step.targets, a);
  },
  // Partial with no minimum: a case that fails for good (its item's attempts spent) does not stop the run's summary.
  definition: (step) => ({
    ...(step.role === 'cases' ? { map: { partial: true, min_succeeded: 0 } } : {}),
    eval: { role: step.role },
  }),
  startMessage: (step, item) => (step.role === 'summary' ? 'eval run summary' : item === null ? 'eval run: listing cases' : 'eval case started'),
};
