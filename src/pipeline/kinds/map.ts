// A map step: its first run lists the items (step.items); ballast.expand_items makes each item a step of its own
// (named <step>__<index>, with its own attempts, retries and timeout), and each of those runs step.run with
// ctx.item and ctx.index. The parent waits for its items (ballast_private.steps.waiting_for) and then hands a
// MapResult to the steps after it (ballast_private.finish_map).
import type { MapStep } from '../definition.ts';
import type { StepKind } from './kind.ts';

export const mapKind: StepKind<MapStep> = {
  async run(step, a) {
    if (a.item === null) return { kind: 'items', items: await step.items(a.ctx) };
    const { value, index } = a.item;
    return { kind: 'output', value: await step.run(value, { ...a.ctx, item: value, index }) };
  },
  // Only map steps carry the key, so adding map steps changed no existing pipeline's definition hash.
  definition: (step) => ({ map: { partial: step.partial, min_succeeded: step.minSucceeded } }),
  startMessage: (_step, item) => (item === null ? 'map step started: listing items' : 'step started'),
};
