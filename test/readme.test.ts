// The documentation's SQL examples run as written: every ```sql block of README.md and of every docs/*.md page is
// executed, page after page in reading order, against one fresh database with the demo pipeline registered (and no
// worker, so jobs stay where the examples leave them). A block that shows `-- ERROR:  <message>` must fail with
// exactly that message. Each page named in PAGES_WITH_SQL must have SQL examples, so that moving them cannot make
// them escape this test.
import t from 'tap';
import { freshDatabase } from './helpers.ts';
import { codeBlocks, docPages, pageText, sqlStatements } from './support/doc-examples.ts';
import { wordstats } from '../tasks/demo.ts';

const PAGES_WITH_SQL = ['README.md', 'docs/sql-api.md', 'docs/pipelines.md', 'docs/operating.md', 'docs/model-steps.md', 'docs/live-updates.md', 'docs/prompts.md', 'docs/quality-alerts.md', 'docs/webhooks.md'];

const { pool, db } = await freshDatabase(t);
await db.registerPipeline(wordstats.name, wordstats.version, wordstats.definition(), wordstats.inputJsonSchema());

const normalize = (s: string) => s.replace(/\s+/g, ' ').trim();
const pages = docPages();

t.test('every page expected to have SQL examples has some', async (t) => {
  for (const page of PAGES_WITH_SQL) {
    t.ok(pages.includes(page), `${page} is a page`);
    t.ok(codeBlocks(pageText(page), 'sql').length > 0, `${page} has sql blocks`);
  }
});

let total = 0;
for (const page of pages) {
  const blocks = codeBlocks(pageText(page), 'sql');
  total += blocks.length;
  for (const [i, block] of blocks.entries()) {
    const expectedError = /-- ERROR:\s+([\s\S]*)$/.exec(block)?.[1];
    t.test(`${page} sql block ${i + 1}`, async (t) => {
      if (expectedError) {
        const sql = block.replace(/^--.*$/gm, '');
        const err = await pool.query(sql).then(() => undefined, (e: Error) => e);
        t.ok(err, 'fails');
        t.equal(normalize(err?.message ?? ''), normalize(expectedError.replace(/^--\s*/gm, '')), 'with the documented message');
      } else {
        for (const statement of sqlStatements(block)) {
          await t.resolves(pool.query(statement), statement.slice(0, 60));
        }
      }
    });
  }
}
t.ok(total >= 20, `the documentation has SQL examples (${total})`);
