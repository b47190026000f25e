// Migrations must produce exactly the schema committed in test/schema.snapshot. After an intended schema change,
// regenerate it with `BALLAST_UPDATE_SNAPSHOT=1 npm test -- test/schema-snapshot.test.ts` and commit the diff.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freshDatabase } from './helpers.ts';
import { describeSchema } from './support/schema-snapshot.ts';

const file = fileURLToPath(new URL('./schema.snapshot', import.meta.url));
const { pool } = await freshDatabase(t);

t.test('migrated schema matches the committed snapshot', async (t) => {
  const actual = await describeSchema(pool);
  if (process.env.BALLAST_UPDATE_SNAPSHOT === '1') {
    writeFileSync(file, actual);
    t.comment(`wrote ${file}`);
  }
  const expected = readFileSync(file, 'utf8');
  const a = actual.split('\n');
  const e = expected.split('\n');
  const missing = e.filter((l) => !a.includes(l));
  const extra = a.filter((l) => !e.includes(l));
  t.same({ missing, extra }, { missing: [], extra: [] },
    'schema drifted from test/schema.snapshot: update the migrations or regenerate the snapshot (BALLAST_UPDATE_SNAPSHOT=1)');
  t.equal(actual, expected, 'same order too');
});

t.test('the snapshot covers the whole public surface', async (t) => {
  const expected = readFileSync(file, 'utf8');
  for (const name of ['ballast.submit_job(', 'ballast.claim_step(', 'ballast.complete_step(', 'ballast.fail_step(', 'view ballast.jobs', 'table ballast_private.events']) {
    t.ok(expected.includes(name), `snapshot mentions ${name}`);
  }
});
