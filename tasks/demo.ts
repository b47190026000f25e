// The built-in demo pipeline that `npm start` runs: word statistics of a text, in four steps that show a sequence,
// a fan-out (count and rank run in parallel after normalize) and a fan-in (report waits for both).
// No network, no model: plain TypeScript, so it runs anywhere. `demo.invoice` (below) shows a failure.
import { z } from 'zod';
import { PermanentError } from '../src/errors.ts';
import { pipeline } from '../src/pipeline/pipeline.ts';

export const wordstats = pipeline({
  name: 'demo.wordstats',
  version: 1,
  input: z.strictObject({
    text: z.string().min(1).max(100_000),
    top: z.number().int().min(1).max(50).default(5),
  }),
})
  .step('normalize', { output: z.object({ words: z.array(z.string()) }) }, async ({ input }) => ({
    words: input.text.toLowerCase().match(/[\p{L}\p{N}']+/gu) ?? [],
  }))
  .step(
    'count',
    { after: ['normalize'], output: z.object({ words: z.number().int(), unique: z.number().int() }) },
    async ({ deps }) => ({ words: deps.normalize.words.length, unique: new Set(deps.normalize.words).size }),
  )
  .step(
    'rank',
    { after: ['normalize'], output: z.array(z.object({ word: z.string(), count: z.number().int() })) },
    async ({ deps, input }) => {
      const counts = new Map<string, number>();
      for (const w of deps.normalize.words) counts.set(w, (counts.get(w) ?? 0) + 1);
      return [...counts]
        .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
        .slice(0, input.top)
        .map(([word, count]) => ({ word, count }));
    },
  )
  .step(
    'report',
    { after: ['count', 'rank'], output: z.object({ summary: z.string(), words: z.number().int(), top: z.array(z.string()) }) },
    async ({ deps }) => ({
      summary: `${deps.count.words} words, ${deps.count.unique} distinct; most frequent: ${deps.rank.map((r) => r.word).join(', ') || '(none)'}`,
      words: deps.count.words,
      top: deps.rank.map((r) => r.word),
    }),
  );

export default wordstats;

// The demo of failure: `demo.invoice` converts an amount to euros and fails for good on a currency it has no rate for.
// `npm start` submits one with XTS (the ISO code reserved for tests), so a fresh start has a failed job and a dead
// letter to look at: `npm run ballast -- report dead-letters`, `npm run ballast -- status <id>`, and a replay (which
// fails again: the input is the same; replay is for failures whose cause was fixed, e.g. a rate added and deployed).
const EUR_PER_UNIT: Record<string, number> = { EUR: 1, USD: 0.92, GBP: 1.17, CHF: 1.05 };

export const invoice = pipeline({
  name: 'demo.invoice',
  version: 1,
  input: z.strictObject({
    customer: z.string().min(1).max(200),
    amount_cents: z.number().int().min(1),
    currency: z.string().regex(/^[A-Z]{3}$/),
  }),
})
  .step('convert', { output: z.object({ eur_cents: z.number().int() }) }, async ({ input }) => {
    const rate = EUR_PER_UNIT[input.currency];
    if (rate === undefined) {
      // Retrying cannot help: fail now, with a code a dead-letter query can filter on.
      throw new PermanentError(`no exchange rate for ${input.currency} (known: ${Object.keys(EUR_PER_UNIT).join(', ')})`, { code: 'unknown_currency' });
    }
    return { eur_cents: Math.round(input.amount_cents * rate) };
  })
  .step(
    'render',
    { after: ['convert'], output: z.object({ line: z.string() }) },
    async ({ input, deps }) => ({ line: `${input.customer}: EUR ${(deps.convert.eur_cents / 100).toFixed(2)}` }),
  );
