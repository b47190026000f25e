// The folded baseline and old databases (issue 14). Migrations 0001_schema .. 0030_api_descriptions were folded into
// the baseline files of migrations/; a database that ran all the old files is adopted by migrate() (its history rows
// renamed, nothing run again), one that ran only some of them is refused with the way forward, changing nothing.
// The old files are read from git at the commit before the fold (LEGACY_COMMIT) and run with node-pg-migrate exactly
// as the old migrate() did; each test has a database of its own, created empty here.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pg from 'pg';
import pino from 'pino';
import { runMigrations as runWorkerMigrations } from 'graphile-worker';
import { runner } from 'node-pg-migrate';
import { z } from 'zod';
import { BallastDb, createPool } from '../src/db/api.ts';
import { migrate, MIGRATIONS_DIR } from '../src/db/migrate.ts';
import { BASELINE_MIGRATIONS, LEGACY_COMMIT, LEGACY_MIGRATIONS } from '../src/db/legacy-migrations.ts';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { databaseUrl, repoRoot } from './helpers.ts';
import { describeSchema } from './support/schema-snapshot.ts';

const git = (...args: string[]) => execFileSync('git', args, { cwd: repoRoot, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
let oldFiles: string[] = [];
try {
  oldFiles = git('ls-tree', '--name-only', `${LEGACY_COMMIT}:migrations`).split('\n').filter((f) => f.endsWith('.sql'));
} catch {
  // A clone without that commit (shallow): the tests below are skipped.
}
const skip = oldFiles.length === 0 ? `git commit ${LEGACY_COMMIT} (the old migrations) is not in this clone` : false;

/** The old migration files up to and including `last`, written to a temporary folder. */
function oldMigrations(last: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'ballast-old-migrations-'));
  for (const f of oldFiles) {
    if (f.replace(/\.sql$/, '') > last) continue;
    writeFileSync(join(dir, f), git('show', `${LEGACY_COMMIT}:migrations/${f}`));
  }
  return dir;
}

/** An empty database of this test, dropped at its end. */
async function emptyDatabase(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const name = `ballast_t_${randomBytes(6).toString('hex')}`;
  const admin = async (sql: string) => {
    const c = new pg.Client({ connectionString: process.env.BALLAST_TEST_SERVER_URL });
    await c.connect();
    try { await c.query(sql); } finally { await c.end(); }
  };
  await admin(`create database ${name}`);
  t.teardown(() => admin(`drop database if exists ${name} with (force)`));
  return databaseUrl(name);
}

/** Migrates `url` the way ballast did before the fold, through the old files up to `last`. */
async function migrateOld(url: string, last: string): Promise<void> {
  const dir = oldMigrations(last);
  const pool = createPool(url, { max: 2 });
  try {
    await runWorkerMigrations({ pgPool: pool, logger: undefined });
    const client = await pool.connect();
    try {
      await client.query('create schema if not exists ballast_private');
      await runner({
        dbClient: client, dir, migrationsTable: 'migrations', migrationsSchema: 'ballast_private', direction: 'up',
        checkOrder: true, log: () => {}, verbose: false,
      });
    } finally {
      client.release();
    }
  } finally {
    await pool.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function history(pool: pg.Pool): Promise<{ id: number; name: string; run_on: Date }[]> {
  return (await pool.query('select id, name, run_on from ballast_private.migrations order by run_on, id')).rows;
}

/** As test/schema-snapshot.test.ts compares: view queries without column qualifiers (they differ across versions). */
function comparable(text: string): string {
  return text.replace(/(\n-- =+ views =+\n)([\s\S]*?)(\n-- =+ triggers)/, (_, head: string, body: string, tail: string) =>
    head + body.replace(/\b[a-z_][a-z0-9_]*\.(?=[a-z_"])/g, '') + tail);
}

t.test('the baseline and the old names are disjoint, and the baseline is what migrations/ holds first', { skip }, async (t) => {
  t.equal(LEGACY_MIGRATIONS.length, 29);
  t.same(LEGACY_MIGRATIONS, oldFiles.map((f) => f.replace(/\.sql$/, '')), 'the old names are the files at the old commit');
  t.same(BASELINE_MIGRATIONS.filter((n) => LEGACY_MIGRATIONS.includes(n)), [], 'no name in both lists');
  const files = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql')).map((f) => f.replace(/\.sql$/, '')).sort();
  t.same(files.slice(0, BASELINE_MIGRATIONS.length), BASELINE_MIGRATIONS, `the baseline files in ${MIGRATIONS_DIR}`);
  t.ok(files.slice(BASELINE_MIGRATIONS.length).every((f) => f >= '0031'), 'later migrations are numbered from 0031');
});

t.test('a database migrated through all the old files is adopted: same schema, the history renamed, jobs still submit', { skip }, async (t) => {
  const url = await emptyDatabase(t);
  await migrateOld(url, '0030_api_descriptions');
  const pool = createPool(url, { max: 4 });
  t.teardown(() => pool.end());
  const before = await history(pool);
  t.same(before.map((r) => r.name), LEGACY_MIGRATIONS, 'the old history');
  const oldSchema = await describeSchema(pool);

  const lines: string[] = [];
  const log = pino({ level: 'info' }, new Writable({ write(chunk, _enc, done) { lines.push(String(chunk)); done(); } }));
  const { applied } = await migrate(url, log);
  t.same(applied.filter((n) => n < '0031'), [], 'nothing of the baseline ran again');
  const after = await history(pool);
  t.same(after.map((r) => r.name).slice(0, BASELINE_MIGRATIONS.length), BASELINE_MIGRATIONS, 'the history names the baseline');
  t.notOk(after.some((r) => LEGACY_MIGRATIONS.includes(r.name)), 'and none of the old names');
  const adopted = lines.map((l) => JSON.parse(l) as { msg: string }).filter((l) => /adopted .* as baseline/.test(l.msg));
  t.equal(adopted.length, 1, 'one info line says so');
  t.match(adopted[0]?.msg, /^adopted the migrations 0001_schema \.\. 0030_api_descriptions as baseline 0001_foundations \.\. 0011_reports$/);

  // Only the migrations after the baseline ran; with them the schema is the current one.
  const later = readdirSync(MIGRATIONS_DIR).filter((f) => f.endsWith('.sql') && f >= '0031').map((f) => f.replace(/\.sql$/, '')).sort();
  t.same([...applied].sort(), later, 'the migrations after the baseline ran, and only they');
  if (later.length === 0) t.equal(comparable(await describeSchema(pool)), comparable(oldSchema), 'the schema did not change');
  const schema = await describeSchema(pool);
  const expected = readFileSync(join(repoRoot, 'docs', 'schema.sql'), 'utf8');
  t.equal(comparable(schema), comparable(expected), 'it is the one in docs/schema.sql');

  const db = new BallastDb(pool);
  const p = pipeline({ name: 'baseline.adopted', version: 1, input: z.object({ n: z.number() }) })
    .step('a', { output: z.object({}) }, () => ({}));
  await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
  const job = await db.submitJob({ pipeline: p.name, input: { n: 1 } });
  t.equal(job.created, true, 'a job submits');
  const { rows } = await pool.query('select status from ballast.steps where job_id = $1', [job.jobId]);
  t.same(rows, [{ status: 'queued' }], 'with its step queued');

  const again = await migrate(url);
  t.same(again.applied, [], 'migrating again does nothing');
  t.same((await history(pool)).map((r) => r.name), after.map((r) => r.name), 'and keeps the history');
});

t.test('a database migrated through only some of the old files is refused, and nothing is changed', { skip }, async (t) => {
  const url = await emptyDatabase(t);
  await migrateOld(url, '0017_effects');
  const pool = createPool(url, { max: 4 });
  t.teardown(() => pool.end());
  const before = await history(pool);
  t.equal(before.at(-1)?.name, '0017_effects');
  const schemaBefore = await describeSchema(pool);
  const workerSchema = async () => (await pool.query(
    "select count(*)::int as n from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'graphile_worker'")).rows[0];
  const workerBefore = await workerSchema();

  const err = await migrate(url).then(() => null, (e: Error) => e);
  t.ok(err, 'migrate() rejects');
  {
    const message = err?.message ?? '';
    t.match(message, /history stops at 0017_effects \(16 of the 29 migrations 0001_schema \.\. 0030_api_descriptions\)/);
    t.match(message, /starts from a folded baseline .* equal to the old 0030_api_descriptions/);
    t.match(message, /git checkout db4e03d && npm run migrate/);
    t.match(message, /remove \.ballast\/ to start fresh/);
    t.notMatch(message, /postgres:\/\/[^@/]*:(?!\*\*\*@)[^@/]*@/, 'no password in the message (redacted when there is one)');
  }
  t.same(await history(pool), before, 'the history is unchanged');
  t.equal(await describeSchema(pool), schemaBefore, 'the schema is unchanged');
  t.same(await workerSchema(), workerBefore, 'graphile-worker\'s schema is unchanged');
});
