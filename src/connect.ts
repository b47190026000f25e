// connect(): the short way for an application to get a BallastDb (submit, read, cancel, replay jobs) on a pool of
// its own, checked at once: a wrong URL or a database that was never migrated fails here with a plain message
// instead of at the first submit.
import type { Logger } from 'pino';
import { BallastDb, createPool } from './db/api.ts';
import { redact } from './db/migrate.ts';

export interface ConnectOptions {
  /** Connections in the pool (default 10). */
  max?: number;
  /** application_name of the connections, seen in pg_stat_activity (default 'ballast'). */
  applicationName?: string;
  /** Where failing idle connections are reported. */
  log?: Logger;
}

/**
 * Opens a pool on `connectionString`, checks that the database holds ballast's schema (run migrate() or
 * `ballast migrate` first) and returns a BallastDb on it. `close()` ends the pool.
 */
export async function connect(connectionString: string, options: ConnectOptions = {}): Promise<BallastDb> {
  const db = new BallastDb(createPool(connectionString, options));
  try {
    const { rows } = await db.pool.query<{ migrated: boolean }>(`select to_regclass('ballast.jobs') is not null as migrated`);
    if (!rows[0]?.migrated) {
      throw new Error(`${redact(connectionString)} has no ballast schema: run migrate(url) or \`ballast migrate\` first`);
    }
    return db;
  } catch (err) {
    await db.close().catch(() => {});
    throw err;
  }
}
