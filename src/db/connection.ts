// Which Postgres to use. DATABASE_URL wins. Without it, `ballast start` runs its own embedded Postgres in
// .ballast/ (BALLAST_DATA_DIR) and writes the connection string to .ballast/url, so the other commands run in
// another terminal (submit, worker, migrate) find the same database while it runs.
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { isAlive, startEmbeddedPostgres, type EmbeddedPostgres } from './embedded.ts';

export interface DatabaseHandle {
  url: string;
  embedded: EmbeddedPostgres | undefined;
  close(): Promise<void>;
}

export function dataDir(): string {
  return resolve(process.env.BALLAST_DATA_DIR ?? '.ballast');
}

export async function openDatabase(opts: { embedded: boolean; log?: Logger }): Promise<DatabaseHandle> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return { url: fromEnv, embedded: undefined, close: async () => {} };
  const dir = dataDir();
  const urlFile = join(dir, 'url');
  if (!opts.embedded) {
    const owner = existsSync(join(dir, 'owner.pid')) ? Number(readFileSync(join(dir, 'owner.pid'), 'utf8')) : 0;
    if (existsSync(urlFile) && owner > 0 && isAlive(owner)) {
      return { url: readFileSync(urlFile, 'utf8').trim(), embedded: undefined, close: async () => {} };
    }
    throw new Error('No database: set DATABASE_URL=postgres://user:pass@host:5432/db, or run `npm start` in another terminal (it starts a local Postgres and writes .ballast/url).');
  }
  const cluster = await startEmbeddedPostgres({ dir, ...(opts.log ? { log: opts.log } : {}) });
  const admin = new pg.Client(cluster.url('postgres'));
  await admin.connect();
  try {
    const { rowCount } = await admin.query(`select 1 from pg_database where datname = 'ballast'`);
    if (!rowCount) await admin.query('create database ballast');
  } finally {
    await admin.end();
  }
  const url = cluster.url('ballast');
  writeFileSync(urlFile, url + '\n', { mode: 0o600 });
  return {
    url,
    embedded: cluster,
    close: async () => {
      rmSync(urlFile, { force: true });
      await cluster.stop();
    },
  };
}
