// Schema migrations: graphile-worker's own schema first (ballast's SQL calls graphile_worker.add_job), then
// ballast's numbered, forward-only SQL files in migrations/ through node-pg-migrate: the baseline 0001_foundations ..
// 0011_reports, then later migrations from 0031 on.
//
// Old databases: migrations 0001_schema .. 0030_api_descriptions were folded into that baseline, which equals their
// end state (src/db/legacy-migrations.ts). Before node-pg-migrate runs, a history that holds all of the old names is
// adopted (their rows replaced by the baseline's names, in one transaction, nothing run again); a history that holds
// only some of them is refused with the way forward, before anything is changed.
//
// Concurrency: several processes may migrate at once (`ballast migrate` in a deploy script while workers start, each
// `ballast worker` migrating before it runs). They take turns: each first waits for a session advisory lock of its
// own (MIGRATE_LOCK) held on a dedicated connection for the whole run, so graphile-worker's installer and the
// `create schema` below never race either; node-pg-migrate's own lock is set to wait (advisoryLockMode 'wait')
// instead of failing with "Another migration is already running", for tools that migrate without ballast's lock.
// The one who comes second finds nothing left to apply. A process that dies while migrating loses its connection
// and with it the lock; its transaction (one per file) is rolled back.
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { runMigrations as runWorkerMigrations } from 'graphile-worker';
import { runner } from 'node-pg-migrate';
import type { Logger } from 'pino';
import { createPool } from './api.ts';
import { BASELINE_MIGRATIONS, LEGACY_MIGRATIONS, PartialLegacyHistoryError } from './legacy-migrations.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));

/** The session advisory lock that serialises ballast's migrations (a namespace of its own: 0006_execution uses
 * 1650551916 for workers and the reaper, 0007_effects_and_signals 1650551917 for event keys; the key spells 'migr'). */
const MIGRATE_LOCK = [1650551918, 1835624306];

export async function migrate(connectionString: string, log?: Logger): Promise<{ applied: string[] }> {
  const pool = createPool(connectionString, { max: 2, applicationName: 'ballast-migrate', ...(log ? { log } : {}) });
  const lock = new pg.Client({ connectionString, application_name: 'ballast-migrate lock' });
  lock.on('error', () => {}); // a lost lock connection fails the run through its queries below
  try {
    await lock.connect();
    // Wait for our turn; report a wait that takes long (a migration of a big table, or a stuck session).
    const waiting = setTimeout(() => log?.info('waiting for another process to finish migrating'), 2000);
    try {
      await lock.query('select pg_advisory_lock($1, $2)', MIGRATE_LOCK);
    } finally {
      clearTimeout(waiting);
    }
    await adoptLegacyHistory(lock, log);
    await runWorkerMigrations({ pgPool: pool, logger: undefined });
    const client = await pool.connect();
    try {
      await client.query('create schema if not exists ballast_private');
      const applied = await runner({
        dbClient: client,
        dir: MIGRATIONS_DIR,
        migrationsTable: 'migrations',
        migrationsSchema: 'ballast_private',
        direction: 'up',
        checkOrder: true,
        advisoryLockMode: 'wait',
        log: (msg: string) => log?.debug(msg),
        verbose: false,
      });
      const names = applied.map((m) => m.name);
      if (names.length > 0) log?.info({ migrations: names }, 'applied ballast migrations');
      return { applied: names };
    } finally {
      client.release();
    }
  } catch (err) {
    if (err instanceof PartialLegacyHistoryError) {
      throw new PartialLegacyHistoryError(err.lastApplied, err.appliedCount, `Migrating ${redact(connectionString)} failed: `);
    }
    throw new Error(
      `Migrating ${redact(connectionString)} failed: ${(err as Error).message}. Nothing of the failed migration ` +
        'was kept (each file runs in one transaction); fix the cause and run `npm run migrate` again.',
      { cause: err },
    );
  } finally {
    await pool.end();
    // Ending the session releases the lock.
    await lock.end().catch(() => {});
  }
}

/**
 * A database migrated before the fold has the 29 old names in ballast_private.migrations (node-pg-migrate's table).
 * All of them: replace them by the baseline's names in one transaction (run_on: the first old run, so that names
 * unknown here keep their place after the baseline) and log it. Some of them: refuse (PartialLegacyHistoryError),
 * changing nothing. None (a new database, or one already adopted): nothing to do. Names unknown here are left to
 * node-pg-migrate. Runs on the lock's connection, inside the advisory lock.
 */
async function adoptLegacyHistory(client: pg.Client, log?: Logger): Promise<void> {
  const { rows: [table] } = await client.query<{ exists: boolean }>(
    "select to_regclass('ballast_private.migrations') is not null as exists");
  if (!table?.exists) return;
  const { rows } = await client.query<{ name: string }>(
    'select name from ballast_private.migrations where name = any($1) order by run_on, id', [LEGACY_MIGRATIONS]);
  if (rows.length === 0) return;
  if (rows.length < LEGACY_MIGRATIONS.length) throw new PartialLegacyHistoryError(rows.at(-1)!.name, rows.length);
  await client.query('begin');
  try {
    const { rows: [first] } = await client.query<{ run_on: Date }>(
      `with old as (delete from ballast_private.migrations where name = any($1) returning run_on)
       select min(run_on) as run_on from old`, [LEGACY_MIGRATIONS]);
    await client.query(`
      insert into ballast_private.migrations (name, run_on)
      select b.name, $2 from unnest($1::text[]) with ordinality as b(name, ord)
       where not exists (select 1 from ballast_private.migrations m where m.name = b.name)
       order by b.ord`, [BASELINE_MIGRATIONS, first!.run_on]);
    await client.query('commit');
  } catch (err) {
    await client.query('rollback').catch(() => {});
    throw err;
  }
  log?.info({ replaced: LEGACY_MIGRATIONS, baseline: BASELINE_MIGRATIONS },
    `adopted the migrations ${LEGACY_MIGRATIONS[0]} .. ${LEGACY_MIGRATIONS.at(-1)} as baseline ` +
      `${BASELINE_MIGRATIONS[0]} .. ${BASELINE_MIGRATIONS.at(-1)}`);
}

/** A connection string fit for logs: the password replaced by ***. */
export function redact(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '(unparsable connection string)';
  }
}
