// The README's GraphQL examples work as written: every ```graphql block of its "GraphQL" section runs against a
// server (queries and mutations over HTTP, subscriptions over graphql-ws) with an operator token and a worker, and
// the error shown for an invalid input is the error the server sends.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { wordstats } from '../tasks/demo.ts';
import { freshDatabase, testWorker } from './helpers.ts';
import { gql, testServer, token, WsConnection } from './support/graphql.ts';

const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8');
const section = /\n## GraphQL\n([\s\S]*?)\n## /.exec(readme)?.[1] ?? '';
const blocks = [...section.matchAll(/```graphql\n([\s\S]*?)```/g)].map((m) => m[1]!);
const { url } = await freshDatabase(t);
await testWorker(t, url, { pipelines: [wordstats] });
const server = await testServer(t, url);
const operator = await token('operator', undefined, { subject: 'readme' });

t.ok(blocks.length >= 3, `the GraphQL section has examples (${blocks.length})`);
for (const [i, block] of blocks.entries()) {
  t.test(`README graphql block ${i + 1}`, async (t) => {
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

t.test('the README\'s error example is what the server sends', async (t) => {
  const shown = JSON.parse(/```json\n([\s\S]*?)```/.exec(section)![1]!) as { errors: Record<string, unknown>[] };
  const r = await gql(server, `mutation { submitJob(input: { pipeline: "demo.wordstats", input: { text: "" } }) { jobId } }`, {}, operator);
  const { locations: _locations, ...actual } = r.body.errors![0] as Record<string, unknown>;
  t.same(actual, shown.errors[0]);
});
