// A model-step demo that needs no network: `demo.triage` reads a customer message with the built-in `local` model
// (wink-nlp's English model running in the worker: sentiment, named entities, keywords; not an LLM), takes its
// answer through the contract ladder (zod contract, a quality rule, a declared default), then routes the message
// with plain code. Point `model` at openai:gpt-4o-mini, anthropic:claude-3-5-haiku-latest or ollama:llama3.1 and
// the same step calls a real model, traced and priced the same way.
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';

const analyse = prompt({
  name: 'demo.triage.analyse',
  version: 1,
  system: 'You triage customer messages. Answer with JSON only.',
  user: 'Give the sentiment (positive, negative or neutral) and a score from -1 to 1, the named entities and up to '
    + 'five keywords of this message:\n{{input.text}}',
});

const Analysis = z.object({
  sentiment: z.enum(['positive', 'negative', 'neutral']),
  score: z.number().min(-1).max(1),
  entities: z.array(z.object({ type: z.string(), value: z.string() })),
  keywords: z.array(z.string()).max(5),
});

export const triage = pipeline({
  name: 'demo.triage',
  version: 1,
  input: z.strictObject({ text: z.string().min(1).max(20_000) }),
})
  .modelStep('analyse', {
    prompt: analyse,
    model: 'local:wink',
    output: Analysis,
    reasks: 1,
    // A sentiment label that contradicts the score's sign is not trusted.
    quality: {
      rules: [{
        name: 'label_matches_score',
        check: (a) => a.sentiment === 'neutral' || (a.sentiment === 'positive') === (a.score > 0) || `${a.sentiment} with score ${a.score}`,
      }],
    },
    default: { sentiment: 'neutral', score: 0, entities: [], keywords: [] },
    retry: { maxAttempts: 3, baseDelayMs: 1000 },
  })
  .step(
    'route',
    { after: ['analyse'], output: z.object({ queue: z.enum(['urgent', 'support', 'archive']), reason: z.string() }) },
    ({ deps }) => {
      const a = deps.analyse;
      if (a.score <= -0.5) return { queue: 'urgent' as const, reason: `strongly negative (${a.score})` };
      if (a.sentiment === 'negative') return { queue: 'support' as const, reason: `negative (${a.score})` };
      return { queue: 'archive' as const, reason: `${a.sentiment}; keywords: ${a.keywords.join(', ') || 'none'}` };
    },
  );

export default triage;
