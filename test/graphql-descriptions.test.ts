// GraphQL a newcomer can read. The schema documents itself: every type, field, argument, input field and enum value
// a client of ballast meets in Ruru's docs or in codegen has a description. Introspected as an operator (who sees
// the whole schema) from a server on the migrated database, so the descriptions of views and columns come from the
// SQL comments of the migrations (0010_public_views) and the rest from the TypeScript type definitions (mutations.ts,
// subscriptions.ts, surface.ts). A view or column added without a comment, or a new field without a description,
// fails here with its schema coordinate. And Ruru (/graphiql) opens on a ballast example that runs, with the way to
// get a token and where to put it.
import t from 'tap';
import { buildClientSchema, getIntrospectionQuery, parse, validate } from 'postgraphile/graphql';
import { defaultQuery, EXAMPLE_MUTATION, EXAMPLE_QUERY, EXAMPLE_SUBSCRIPTION, HEADERS_TEMPLATE } from '../src/server/ruru.ts';
import { freshDatabase } from './helpers.ts';
import { data, gql, testServer, token } from './support/graphql.ts';

interface Named {
  name: string;
  description: string | null;
}
interface IntrospectedField extends Named {
  args?: Named[];
}
interface IntrospectedType extends Named {
  kind: string;
  fields: IntrospectedField[] | null;
  inputFields: Named[] | null;
  enumValues: Named[] | null;
}

/**
 * Schema coordinates that may stay undocumented, each with the reason. Keep it short: an entry here is a question a
 * newcomer cannot answer from Ruru.
 */
const ALLOWED_WITHOUT_DESCRIPTION: Record<string, string> = {
  // Empty: everything has one. An entry reads `'Type.field': 'why it cannot have a description'`.
};

const { url } = await freshDatabase(t);
const server = await testServer(t, url, { graphiql: true });
const operator = await token('operator');
const introspection = await data(server, getIntrospectionQuery({ inputValueDeprecation: true }), {}, operator);
const schema = introspection.__schema as { types: IntrospectedType[] };

/** Every coordinate of the schema (Type, Type.field, Type.field(arg:), Enum.VALUE) with its description. */
function coordinates(types: IntrospectedType[]): [string, string | null][] {
  const out: [string, string | null][] = [];
  for (const type of types) {
    if (type.name.startsWith('__')) continue; // GraphQL's own introspection types
    out.push([type.name, type.description]);
    for (const field of type.fields ?? []) {
      out.push([`${type.name}.${field.name}`, field.description]);
      for (const arg of field.args ?? []) out.push([`${type.name}.${field.name}(${arg.name}:)`, arg.description]);
    }
    for (const field of type.inputFields ?? []) out.push([`${type.name}.${field.name}`, field.description]);
    for (const value of type.enumValues ?? []) out.push([`${type.name}.${value.name}`, value.description]);
  }
  return out;
}

t.test('every type, field, argument and enum value of the schema has a description', async (t) => {
  const all = coordinates(schema.types);
  t.ok(all.length > 500, `the whole schema was read (${all.length} coordinates)`);
  const missing = all.filter(([coord, description]) => !description?.trim() && !(coord in ALLOWED_WITHOUT_DESCRIPTION)).map(([c]) => c);
  t.same(missing, [], 'undocumented: add a COMMENT ON (views, columns) in a migration or a description in src/server/*.ts');
  const stale = Object.keys(ALLOWED_WITHOUT_DESCRIPTION).filter((coord) => !all.some(([c, d]) => c === coord && !d?.trim()));
  t.same(stale, [], 'every allow-list entry is still needed (remove the ones that now have a description)');
});

t.test('descriptions come from the SQL comments and say what a user needs', async (t) => {
  const type = (name: string) => schema.types.find((ty) => ty.name === name)!;
  const field = (typeName: string, name: string) => type(typeName).fields!.find((f) => f.name === name)!;
  t.match(type('Job').description, /job/i, 'Job: the comment on view ballast.jobs');
  t.match(field('Job', 'status').description, /queued.*running.*completed.*partially_completed.*failed.*cancelled/s, 'Job.status lists its values');
  t.match(field('Job', 'costUsd').description, /US dollars/, 'costs say their unit');
  t.match(field('Attempt', 'durationMs').description, /millisecond/i, 'durations say their unit');
  t.match(field('Job', 'finishedAt').description, /null/i, 'a nullable column says what null means');
  t.match(field('Mutation', 'replayJob').description, /operator/i, 'a mutation says who may call it');
});

t.test('Ruru opens on a ballast example that runs, with how to get a token and where to put it', async (t) => {
  const res = await fetch(server.url.replace(/\/graphql$/, '/graphiql'), { headers: { accept: 'text/html' } });
  t.equal(res.status, 200);
  const html = await res.text();
  t.match(html, '<title>ballast GraphQL API (Ruru)</title>');
  const config = /const RURU_CONFIG = (\{[\s\S]*?\});\s*<\/script>/.exec(html);
  t.ok(config, 'the page carries its Ruru configuration');
  const { defaultQuery: query, defaultHeaders } = JSON.parse(config![1]!) as { defaultQuery: string; defaultHeaders: string };
  t.equal(query, defaultQuery({ secret: 'x' }), 'the editor opens on the ballast example');
  t.match(query, '#      npm run -s ballast -- token --role operator', 'the command that mints a token');
  t.match(query, `Headers pane (below this editor), in place of <token>:\n#      {"Authorization": "Bearer <token>"}`, 'where the token goes');
  t.equal(defaultHeaders, HEADERS_TEMPLATE, 'the headers pane holds the header to fill in');
  t.same(JSON.parse(defaultHeaders), { Authorization: 'Bearer <token>' }, 'as JSON, as Ruru needs it');
  t.ok(query.includes(EXAMPLE_QUERY), 'the latest jobs with their steps');
  t.match(query, '# mutation SubmitOne {', 'a mutation, commented out');
  t.match(query, '# subscription FollowJob {', 'a subscription, commented out');

  const client = buildClientSchema(introspection);
  for (const [name, text] of [['the page', query], ['the mutation', EXAMPLE_MUTATION], ['the subscription', EXAMPLE_SUBSCRIPTION]] as const) {
    t.same(validate(client, parse(text)).map((e) => e.message), [], `${name}: valid against the schema`);
  }
  const ran = await gql(server, query, {}, operator);
  t.same(ran.body.errors, undefined, 'the page as it opens runs without errors with an operator token');
  t.equal(ran.body.data?.jobs.totalCount, 0, 'and lists the jobs (none in a fresh database)');
  const anonymous = await gql(server, query, {}, '<token>');
  t.match(anonymous.body.errors?.[0]?.message, /mint one with `npm run -s ballast -- token/, 'run with the placeholder left in, the answer says how to get a token');

  t.match(defaultQuery({ jwksUrl: 'https://idp.example/jwks' }), 'Get a token from your identity provider', 'with JWKS only, the identity provider');
  t.notMatch(defaultQuery({ jwksUrl: 'https://idp.example/jwks' }), 'npm run', 'and no mint command that would not work there');
});
