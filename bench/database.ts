// The benchmark's Postgres: DATABASE_URL's server (a fresh database ballast_bench_<pid> and clones of it, all dropped
// afterwards) or a throwaway embedded Postgres (src/db/embedded.ts, ephemeral). Every scenario runs on the same
// server with the same settings, so ratios between scenarios are fair; the settings are recorded with the results.
//
// ballast_bench_<pid> is migrated once and holds the registered bench pipelines; each scenario run gets its own
// clone (create database ... template ..., tens of milliseconds), so no run sees another's rows.
import { mkdtempSync } from 'node:fs';
import { cpus, totalmem, tmpdir, release } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { BallastDb, createPool } from '../src/db/api.ts';
import { benchPipelines } from './fixtures/pipelines.ts';

export interface BenchServer {
  /** Where the server came from: 'embedded' or the redacted DATABASE_URL. */
  readonly source: string;
  /** The migrated template every scenario database is cloned from. */
  readonly template: string;
  url(database: string): string;
  /** A fresh database cloned from the template; dropped by close(). */
  clone(name: string): Promise<string>;
  drop(name: string): Promise<void>;
  query<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
  close(): Promise<void>;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = '/' + encodeURIComponent(database);
  return u.toString();
}

/**
 * Starts or connects to the server and prepares the template. `templateSql` (the --template-sql option) runs on the
 * template after the migrations: a way to try a schema change side by side without adding a migration.
 */
export async function openServer(log: (msg: string) => void, templateSql?: string): Promise<BenchServer> {
  let embedded: EmbeddedPostgres | undefined;
  let adminUrl = process.env.DATABASE_URL;
  let source = 'DATABASE_URL';
  if (!adminUrl) {
    log('starting an embedded Postgres (ephemeral: fsync=off, synchronous_commit=off, full_page_writes=off)');
    embedded = await startEmbeddedPostgres({
      dir: mkdtempSync(join(tmpdir(), 'ballast-bench-')),
      ephemeral: true,
      // Loaded for the profile pass only; pg_stat_statements.track stays 'none' during the timed rounds.
      settings: { shared_preload_libraries: 'pg_stat_statements', 'pg_stat_statements.track': 'none' },
    });
    adminUrl = embedded.url('postgres');
    source = 'embedded';
  }
  const prefix = `ballast_bench_${process.pid}`;
  const admin = new pg.Client({ connectionString: adminUrl, application_name: 'ballast-bench' });
  await admin.connect();
  const created: string[] = [];
  const server: BenchServer = {
    source,
    template: prefix,
    url: (db) => withDatabase(adminUrl, db),
    async clone(name) {
      const db = `${prefix}_${name}`;
      await admin.query(`drop database if exists ${db} with (force)`);
      await admin.query(`create database ${db} template ${prefix}`);
      created.push(db);
      return withDatabase(adminUrl, db);
    },
    async drop(name) {
      await admin.query(`drop database if exists ${name.startsWith(prefix) ? name : `${prefix}_${name}`} with (force)`);
    },
    query: async (sql, params) => (await admin.query(sql, params)).rows,
    async close() {
      for (const db of [...created, prefix]) await admin.query(`drop database if exists ${db} with (force)`).catch(() => {});
      await admin.end().catch(() => {});
      await embedded?.stop();
    },
  };
  try {
    await admin.query(`drop database if exists ${prefix} with (force)`);
    await admin.query(`create database ${prefix}`);
    await migrate(server.url(prefix));
    const db = new BallastDb(createPool(server.url(prefix), { max: 1 }));
    try {
      for (const p of benchPipelines) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
      if (templateSql) await db.pool.query(templateSql);
    } finally {
      await db.close();
    }
  } catch (err) {
    await server.close();
    throw err;
  }
  return server;
}

/** A connection to one scenario database, closed by the caller. */
export async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url, application_name: 'ballast-bench' });
  await c.connect();
  return c;
}

export async function machine(server: BenchServer): Promise<Record<string, unknown>> {
  const [v] = await server.query<{ version: string; server_version: string }>(
    `select version(), current_setting('server_version') as server_version`);
  return {
    cores: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memory_gb: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    os: `${process.platform} ${release()}`,
    node: process.version,
    postgres: v?.server_version,
    postgres_full: v?.version,
    server: server.source,
  };
}

export async function settings(server: BenchServer): Promise<Record<string, string>> {
  const rows = await server.query<{ name: string; setting: string; unit: string | null }>(
    `select name, setting, unit from pg_settings
      where name in ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_connections',
                     'wal_level', 'work_mem', 'max_wal_size', 'checkpoint_timeout', 'autovacuum', 'jit',
                     'shared_preload_libraries', 'pg_stat_statements.track', 'track_functions')
      order by name`);
  return Object.fromEntries(rows.map((r) => [r.name, r.unit ? `${r.setting} ${r.unit}` : r.setting]));
}

/** Database-wide counters: their difference over a run, divided by the units of work, is what one unit costs. */
export interface Counters {
  xacts: number;
  rollbacks: number;
  inserted: number;
  updated: number;
  deleted: number;
  walBytes: number;
}

export async function counters(c: pg.Client): Promise<Counters> {
  await c.query('select pg_stat_clear_snapshot()');
  const { rows } = await c.query<Record<string, string>>(
    `select xact_commit + xact_rollback as xacts, xact_rollback as rollbacks, tup_inserted as inserted, tup_updated as updated,
            tup_deleted as deleted, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0') as wal
       from pg_stat_database where datname = current_database()`);
  const r = rows[0]!;
  return { xacts: Number(r.xacts), rollbacks: Number(r.rollbacks), inserted: Number(r.inserted), updated: Number(r.updated), deleted: Number(r.deleted), walBytes: Number(r.wal) };
}

/** Per unit of work: transactions (round trips of autocommit statements), rows written, WAL bytes. */
export function perUnit(before: Counters, after: Counters, units: number, prefix: string): Record<string, number> {
  const d = (k: keyof Counters) => (after[k] - before[k]) / units;
  return {
    [`${prefix}_xacts`]: d('xacts'),
    [`${prefix}_rollbacks`]: d('rollbacks'),
    [`${prefix}_rows_inserted`]: d('inserted'),
    [`${prefix}_rows_updated`]: d('updated'),
    [`${prefix}_rows_deleted`]: d('deleted'),
    [`${prefix}_wal_bytes`]: d('walBytes'),
  };
}

/** Statistics of a database are flushed by its backends when they exit or every second: wait for that. */
export const statsSettle = () => new Promise((r) => setTimeout(r, 1100));
