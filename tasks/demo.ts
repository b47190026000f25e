// The built-in demo pipeline that `npm start` runs: word statistics of a text, in four steps that show a sequence,
// a fan-out (count and rank run in parallel after normalize) and a fan-in (report waits for both).
// No network, no model: plain TypeScript, so it runs anywhere.
import { z } from 'zod';
import { pipeline } from '../src/pipeline.ts';

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
