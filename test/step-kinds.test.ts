// Step kinds as data (issue 14, item 1): a step definition carries its kind, each kind's behaviour is one module of
// src/pipeline/kinds/, and the runner dispatches on it without knowing any kind. These checks need no database:
// the kinds' own runs are called with a context of plain values (the database-backed runs of every kind are in
// worker.test.ts, map.test.ts and model-steps.test.ts).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import pino from 'pino';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { kindOf } from '../src/pipeline/kinds/index.ts';
import type { AttemptRun, StepContext } from '../src/pipeline/protocol.ts';
import type { BallastDb } from '../src/db/api.ts';
import type { PlainStep } from '../src/pipeline/definition.ts';

const p = pipeline({ name: 'kinds.demo', version: 1, input: z.object({ n: z.number() }) })
  .step('plain', { output: z.number() }, ({ input }) => input.n + 1)
  .map('fan', { after: ['plain'], items: ({ deps }) => Array.from({ length: deps.plain }, (_, i) => i), output: z.number() },
    (item, ctx) => item * 10 + ctx.index)
  .modelStep('ask', {
    prompt: prompt({ name: 'kinds.ask', version: 1, user: 'Say {{input.n}}' }), model: 'local:shape', output: z.object({ said: z.string() }),
  });

t.test('each step carries its kind', async (t) => {
  t.same(p.steps.map((s) => [s.name, s.kind]), [['plain', 'plain'], ['fan', 'map'], ['ask', 'model']]);
});

t.test("a kind adds only its own keys to the registered definition (plain steps none: existing hashes stay)", async (t) => {
  const common = ['name', 'depends_on', 'max_attempts', 'backoff_base_ms', 'backoff_cap_ms', 'timeout_ms', 'concurrency', 'output_schema'];
  const steps = p.definition().steps as Record<string, unknown>[];
  t.same(Object.keys(steps[0]!).sort(), [...common].sort());
  t.same(Object.keys(steps[1]!).sort(), [...common, 'map'].sort());
  t.same(steps[1]!.map, { partial: false, min_succeeded: 1 });
  t.same(Object.keys(steps[2]!).sort(), [...common, 'model'].sort());
  t.match(steps[2]!.model, { prompt: 'kinds.ask@1', model: 'local:shape', fallbacks: [], reasks: 2, default: false, review: false });
});

function attempt(item: AttemptRun['item'], deps: Record<string, unknown> = {}): AttemptRun {
  const ctx = { input: { n: 2 }, deps, log: pino({ level: 'silent' }), signal: new AbortController().signal } as unknown as StepContext<any, any>;
  return { ctx, db: undefined as unknown as BallastDb, attemptId: '1', item, providers: undefined };
}

t.test("the runner's view of a kind: run gives a StepEnd", async (t) => {
  const [plain, fan] = [p.stepNamed('plain')!, p.stepNamed('fan')!];
  t.same(await kindOf(plain).run(plain, attempt(null)), { kind: 'output', value: 3 });
  t.same(await kindOf(fan).run(fan, attempt(null, { plain: 3 })), { kind: 'items', items: [0, 1, 2] }, 'a map step first lists its items');
  t.same(await kindOf(fan).run(fan, attempt({ value: 4, index: 1 })), { kind: 'output', value: 41 }, 'then runs one item with ctx.item and ctx.index');
  t.equal(kindOf(fan).startMessage(fan, null), 'map step started: listing items');
  const throwing: PlainStep = { ...(plain as PlainStep), run: () => { throw new Error('boom'); } };
  await t.rejects(kindOf(throwing).run(throwing, attempt(null)), /boom/, 'a throw is passed on for the runner to classify');
});

t.test('the runner and the engine name no kind: a new kind does not change them', async (t) => {
  for (const file of ['src/worker/runner.ts', 'src/worker/engine.ts', 'src/worker/worker.ts']) {
    const text = readFileSync(new URL(`../${file}`, import.meta.url), 'utf8').replace(/^\s*(\/\/|\*|\/\*\*).*$/gm, '');
    t.notMatch(text, /['"](plain|map|model)['"]|\.spec\b|\.items\(|ladder|runModelLadder|\.partial\b/, `${file} dispatches through kindOf only`);
  }
});
