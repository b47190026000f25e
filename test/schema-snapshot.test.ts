// Migrations must produce exactly the schema committed in docs/schema.sql (the readable current schema: definitions,
// security, privileges, policies). After an intended schema change, regenerate it with
// `BALLAST_UPDATE_SNAPSHOT=1 npm test -- test/schema-snapshot.test.ts` and commit the diff.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freshDatabase } from './helpers.ts';
import { describeSchema } from './support/schema-snapshot.ts';

const file = fileURLToPath(new URL('../docs/schema.sql', import.meta.url));
const { pool } = await freshDatabase(t);

t.test('migrated schema matches the committed snapshot', async (t) => {
  const actual = await describeSchema(pool);
  if (process.env.BALLAST_UPDATE_SNAPSHOT === '1') {
    writeFileSync(file, actual);
    t.comment(`wrote ${file}`);
  }
  const expected = readFileSync(file, 'utf8');
  const a = comparable(actual).split('\n');
  const e = comparable(expected).split('\n');
  const missing = e.filter((l) => !a.includes(l));
  const extra = a.filter((l) => !e.includes(l));
  t.same({ missing, extra }, { missing: [], extra: [] },
    'schema drifted from docs/schema.sql: update the migrations or regenerate it (BALLAST_UPDATE_SNAPSHOT=1)');
  t.equal(comparable(actual), comparable(expected), 'same order too');
});

/**
 * The snapshot as compared: view queries are Postgres's own deparsing, which qualifies columns with their table
 * name up to Postgres 15 and not for single-table views since 16 (the tests run on either), so qualifiers are
 * dropped inside the views section on both sides. Everything else is compared as written.
 */
function comparable(text: string): string {
  return text.replace(/(\n-- =+ views =+\n)([\s\S]*?)(\n-- =+ triggers)/, (_, head: string, body: string, tail: string) =>
    head + body.replace(/\b[a-z_][a-z0-9_]*\.(?=[a-z_"])/g, '') + tail);
}

t.test('the snapshot shows definitions, security and privileges, so a change to any of them fails the test above', async (t) => {
  const expected = readFileSync(file, 'utf8');
  for (const name of ['create function ballast.submit_job(', 'create function ballast.claim_steps(', 'create view ballast.jobs',
    'create table ballast_private.events']) {
    t.ok(expected.includes(name), `snapshot defines ${name}`);
  }
  t.match(expected, /create function ballast\.submit_jobs\([^)]*\) returns [^\n]+\nlanguage plpgsql volatile security definer set search_path = pg_catalog, pg_temp\nas \$fn\$/,
    'a function\'s security and search_path are shown with its body');
  t.match(expected, /\ncreate policy tenant_rows on ballast_private\.jobs as permissive for select to public using \(/, 'row-level security policies');
  t.match(expected, /\ngrant execute on function ballast\.submit_job\([^)]*\) to ballast_client, ballast_operator;/, 'function privileges');
  t.match(expected, /\ngrant insert, select on view ballast\.jobs to ballast_client, ballast_operator;/, 'view privileges');
  t.notMatch(expected, /grant execute on function ballast_private\.submit_jobs_checked_v15\([^)]*\) to (ballast_client|public)/,
    'what is revoked is not listed');

  // A privilege change shows up: grant something in a scratch copy and describe it again.
  const { pool: scratch } = await freshDatabase(t);
  await scratch.query('grant execute on function ballast.recount_job(bigint) to ballast_client');
  const changed = await describeSchema(scratch);
  t.ok(changed.split('\n').some((l) => /^grant execute on function ballast\.recount_job\(bigint\) to .*ballast_client/.test(l)),
    'a new grant appears in the description');
  t.not(changed, expected, 'so the comparison above would fail');
});
