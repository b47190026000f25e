// The documentation's GraphQL examples work as written: every ```graphql block of README.md and of every docs/*.md
// page (docs/graphql.md above all) runs against a server (queries and mutations over HTTP, subscriptions over
// graphql-ws) with an operator token and a worker, and the error shown for an invalid input is the error the server
// sends. Before them, the SQL examples that submit jobs run in the same database, as they would for a reader who
// tries the pages in order: a GraphQL example that reused an SQL example's idempotency key with another input would
// get IDEMPOTENCY_CONFLICT here.
import t from 'tap';
import { wordstats } from '../tasks/demo.ts';
import { freshDatabase, testWorker } from './helpers.ts';
import { codeBlocks, docPages, pageText, sqlStatements } from './support/doc-examples.ts';
import { gql, testServer, token, WsConnection } from './support/graphql.ts';

const PAGES_WITH_GRAPHQL = ['README.md', 'docs/graphql.md'];

const { url, pool } = await freshDatabase(t);
await testWorker(t, url, { pipelines: [wordstats] });
const server = await testServer(t, url);
const operator = await token('operator', undefined, { subject: 'readme' });
const pages = docPages();

t.test('every page expected to have GraphQL examples has some', async (t) => {
  for (const page of PAGES_WITH_GRAPHQL) t.ok(codeBlocks(pageText(page), 'graphql').length > 0, `${page} has graphql blocks`);
});

t.test('the SQL examples that submit jobs, first, in the same database', async (t) => {
  const submits = pages.flatMap((page) => codeBlocks(pageText(page), 'sql'))
    .filter((b) => !/-- ERROR:/.test(b) && /ballast\.submit_jobs?\(|insert into ballast\.jobs/i.test(b));
  t.ok(submits.length >= 4, `SQL submission examples (${submits.length})`);
  for (const statement of submits.flatMap(sqlStatements)) await t.resolves(pool.query(statement), statement.slice(0, 60));
});

for (const page of pages) {
  for (const [i, block] of codeBlocks(pageText(page), 'graphql').entries()) {
    t.test(`${page} graphql block ${i + 1}`, async (t) => {
      if (block.trimStart().startsWith('subscription')) {
        const ws = new WsConnection(server, operator);
        t.teardown(() => ws.close());
        const sub = ws.subscribe(block);
        const [first] = await sub.until((ms) => ms.length > 0, 10_000, 'a first message');
        t.same(sub.errors, [], 'no errors');
        t.ok(first.type, `a message (${first.type})`);
      } else {
        const r = await gql(server, block, {}, operator);
        t.same(r.body.errors, undefined, 'no errors');
        t.ok(r.body.data, 'data');
      }
    });
  }
}

t.test('the error example of docs/graphql.md is what the server sends', async (t) => {
  const [json] = codeBlocks(pageText('docs/graphql.md'), 'json');
  t.ok(json, 'docs/graphql.md shows an error');
  const shown = JSON.parse(json!) as { errors: Record<string, unknown>[] };
  const r = await gql(server, `mutation { submitJob(input: { pipeline: "demo.wordstats", input: { text: "" } }) { jobId } }`, {}, operator);
  const { locations: _locations, ...actual } = r.body.errors![0] as Record<string, unknown>;
  t.same(actual, shown.errors[0]);
});
