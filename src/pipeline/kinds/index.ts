// The step kinds, by name: the one table the runner dispatches on (worker/runner.ts) and the DSL asks for a step's
// registered definition (pipeline.ts). A new kind is added here.
import type { StepDefinition, StepKindName } from '../definition.ts';
import type { StepKind } from './kind.ts';
import { evalKind } from './eval.ts';
import { mapKind } from './map.ts';
import { modelKind } from './model.ts';
import { plainKind } from './plain.ts';
import { sleepKind } from './sleep.ts';

export type { StepKind } from './kind.ts';

const STEP_KINDS: { [K in StepKindName]: StepKind<Extract<StepDefinition, { kind: K }>> } = {
  plain: plainKind,
  map: mapKind,
  model: modelKind,
  sleep: sleepKind,
  eval: evalKind,
};

/** The kind of a step: how its attempts run and what its definition records. */
export function kindOf<D extends StepDefinition>(step: D): StepKind<D> {
  return STEP_KINDS[step.kind] as unknown as StepKind<D>;
}
