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

/** The database cannot be used: none configured, or the one configured refuses (the message says which and why). */
export class DatabaseUnavailableError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  constructor(code: string, message: string, hint?: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'DatabaseUnavailableError';
    this.code = code;
    this.hint = hint;
  }
}

export function dataDir(): string {
  return resolve(process.env.BALLAST_DATA_DIR ?? '.ballast');
}

/** The connection string with its password replaced by ***, fit for logs and messages. */
function safeUrl(connectionString: string): string {
  try {
    const url = new URL(connectionString);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '(unparsable connection string)';
  }
}

/**
 * What is wrong with `url` when connecting failed with `err`: the server is not there, refuses the login, or has no
 * such database. Undefined when `err` is not a connection problem. `source` names where the URL came from.
 */
export function connectionProblem(err: unknown, url: string, source = 'DATABASE_URL'): DatabaseUnavailableError | undefined {
  const e = err as { code?: string; message?: string; address?: string; port?: number; hostname?: string } | undefined;
  if (!e || typeof e !== 'object') return undefined;
  let u: URL | undefined;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  const where = `${u.hostname}:${u.port || 5432}`;
  const user = decodeURIComponent(u.username || process.env.USER || '');
  const db = decodeURIComponent(u.pathname.slice(1)) || user;
  const at = `${source} ${safeUrl(url)}`;
  switch (e.code) {
    case 'ECONNREFUSED':
      return new DatabaseUnavailableError('database_unreachable', `${at}: connection refused, no Postgres answers at ${where}`,
        `start Postgres there, fix the host or port in ${source}, or unset it to let \`npm start\` run a local one`, err);
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new DatabaseUnavailableError('database_unreachable', `${at}: the host ${u.hostname} is not known`,
        `fix the host name in ${source}`, err);
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new DatabaseUnavailableError('database_unreachable', `${at}: Postgres at ${where} cannot be reached (${e.code})`,
        `check the host and port in ${source} and that a firewall lets you through`, err);
    case '28P01':
      return new DatabaseUnavailableError('database_login_refused', `${at}: password authentication failed for user ${user}`,
        `fix the user or password in ${source}`, err);
    case '28000':
      return new DatabaseUnavailableError('database_login_refused', `${at}: Postgres at ${where} refused the login (${e.message})`,
        `fix the user in ${source}, or allow it in the server's pg_hba.conf`, err);
    case '3D000':
      return new DatabaseUnavailableError('database_missing', `${at}: database "${db}" does not exist on ${where}`,
        `create it (createdb -h ${u.hostname} -p ${u.port || 5432} ${db}) or fix the database name in ${source}`, err);
    case '57P03':
      return new DatabaseUnavailableError('database_unreachable', `${at}: Postgres at ${where} is starting up or shutting down`,
        'try again in a moment', err);
    default:
      if (/timeout expired|Connection terminated due to connection timeout/i.test(e.message ?? '')) {
        return new DatabaseUnavailableError('database_unreachable', `${at}: Postgres at ${where} did not answer in time`,
          `check the host and port in ${source}`, err);
      }
      return undefined;
  }
}

/** Connects once to `url`: a connection problem becomes a DatabaseUnavailableError that says which. */
export async function checkDatabase(url: string, source = 'DATABASE_URL'): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, application_name: 'ballast-check' });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    throw connectionProblem(err, url, source) ?? err;
  } finally {
    await client.end().catch(() => {});
  }
}

/** The URL of the embedded Postgres that a running `ballast start` wrote, if it still runs. */
function runningEmbeddedUrl(dir: string): string | undefined {
  const owner = existsSync(join(dir, 'owner.pid')) ? Number(readFileSync(join(dir, 'owner.pid'), 'utf8')) : 0;
  const urlFile = join(dir, 'url');
  return existsSync(urlFile) && owner > 0 && isAlive(owner) ? readFileSync(urlFile, 'utf8').trim() : undefined;
}

/**
 * The database to use. `embedded`: without DATABASE_URL, start the embedded Postgres of the data directory (`start`,
 * `migrate`); otherwise the one a running `start` wrote to .ballast/url. `check`: connect once first, so a wrong
 * DATABASE_URL is reported as such rather than as whatever fails first.
 */
export async function openDatabase(opts: { embedded: boolean; log?: Logger; check?: boolean }): Promise<DatabaseHandle> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) {
    if (opts.check) await checkDatabase(fromEnv);
    return { url: fromEnv, embedded: undefined, close: async () => {} };
  }
  const dir = dataDir();
  const urlFile = join(dir, 'url');
  if (!opts.embedded) {
    const url = runningEmbeddedUrl(dir);
    if (url) return { url, embedded: undefined, close: async () => {} };
    throw new DatabaseUnavailableError('no_database', `no database: DATABASE_URL is not set and no \`npm start\` runs with ${dir}`,
      'set DATABASE_URL=postgres://user:pass@host:5432/db, or run `npm start` in another terminal (it starts a local Postgres and writes .ballast/url)');
  }
  const cluster = await startEmbeddedPostgres({ dir, ...(opts.log ? { log: opts.log } : {}) });
  try {
    const admin = new pg.Client(cluster.url('postgres'));
    await admin.connect();
    try {
      const { rowCount } = await admin.query(`select 1 from pg_database where datname = 'ballast'`);
      if (!rowCount) await admin.query('create database ballast');
    } finally {
      await admin.end();
    }
  } catch (err) {
    await cluster.stop();
    throw err;
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
