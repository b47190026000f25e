// Schema migrations: graphile-worker's own schema first (ballast's SQL calls graphile_worker.add_job), then
// ballast's numbered, forward-only SQL files in migrations/ through node-pg-migrate. Both take advisory locks, so
// several processes starting at once migrate once.
import { fileURLToPath } from 'node:url';
import { runMigrations as runWorkerMigrations } from 'graphile-worker';
import { runner } from 'node-pg-migrate';
import type { Logger } from 'pino';
import { createPool } from './api.ts';

export const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations', import.meta.url));

export async function migrate(connectionString: string, log?: Logger): Promise<{ applied: string[] }> {
  const pool = createPool(connectionString, { max: 2, applicationName: 'ballast-migrate', ...(log ? { log } : {}) });
  try {
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
    throw new Error(
      `Migrating ${redact(connectionString)} failed: ${(err as Error).message}. Nothing of the failed migration ` +
        'was kept (each file runs in one transaction); fix the cause and run `npm run migrate` again.',
      { cause: err },
    );
  } finally {
    await pool.end();
  }
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
