// The schema documents itself: every type, field, argument, input field and enum value a client of ballast meets in
// Ruru's docs or in codegen has a description. Introspected as an operator (who sees the whole schema) from a server
// on the migrated database, so the descriptions of views and columns come from the SQL comments of the migrations
// (0030) and the rest from the TypeScript type definitions (mutations.ts, subscriptions.ts, surface.ts). A view or
// column added without a comment, or a new field without a description, fails here with its schema coordinate.
import t from 'tap';
import { getIntrospectionQuery } from 'postgraphile/graphql';
import { freshDatabase } from './helpers.ts';
import { data, testServer, token } from './support/graphql.ts';

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
const server = await testServer(t, url);
const operator = await token('operator');
const schema = (await data(server, getIntrospectionQuery({ inputValueDeprecation: true }), {}, operator)).__schema as {
  types: IntrospectedType[];
};

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
