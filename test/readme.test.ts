// The README's SQL examples run as written: every ```sql block is executed in order against a fresh database with
// the demo pipeline registered. A block that shows `-- ERROR:  <message>` must fail with exactly that message.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freshDatabase } from './helpers.ts';
import { wordstats } from '../tasks/demo.ts';

const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
const blocks = [...readme.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1]!);
const { pool, db } = await freshDatabase(t);
await db.registerPipeline(wordstats.name, wordstats.version, wordstats.definition(), wordstats.inputJsonSchema());

const normalize = (s: string) => s.replace(/\s+/g, ' ').trim();

t.ok(blocks.length >= 4, 'the README has SQL examples');

for (const [i, block] of blocks.entries()) {
  const expectedError = /-- ERROR:\s+([\s\S]*)$/.exec(block)?.[1];
  const sql = block.replace(/^--.*$/gm, '');
  t.test(`README sql block ${i + 1}`, async (t) => {
    if (expectedError) {
      const err = await pool.query(sql).then(() => undefined, (e: Error) => e);
      t.ok(err, 'fails');
      t.equal(normalize(err?.message ?? ''), normalize(expectedError.replace(/^--\s*/gm, '')), 'with the documented message');
    } else {
      for (const statement of sql.split(/;\s*\n/).map((s) => s.trim()).filter(Boolean)) {
        await t.resolves(pool.query(statement), statement.slice(0, 60));
      }
    }
  });
}
