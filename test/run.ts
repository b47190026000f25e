// `npm test`: prepares a Postgres, migrates a template database once, runs every test file with tap (each file
// clones the template into its own database, so files can run in parallel), then prints `N passed, N failed`.
// Postgres: TEST_DATABASE_URL or DATABASE_URL when set (a server where this user may create databases); otherwise a
// throwaway embedded Postgres in the system temp folder, removed afterwards.
// Extra arguments go to tap, e.g. `npm test -- test/submit.test.ts`.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../src/db/embedded.ts';
import { migrate } from '../src/db/migrate.ts';
import { countTap } from './support/tap-count.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
// One folder per run: two runs at once in one checkout must not count each other's results.
const outputDir = join(root, '.tap', `raw-${process.pid}`);

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = '/' + encodeURIComponent(database);
  return u.toString();
}

async function admin(url: string, sql: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(sql);
  } finally {
    await client.end();
  }
}

async function main(): Promise<number> {
  const external = process.env.TEST_DATABASE_URL || process.env.DATABASE_URL;
  let cluster: EmbeddedPostgres | undefined;
  let serverUrl: string;
  if (external) {
    serverUrl = external;
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'ballast-test-'));
    cluster = await startEmbeddedPostgres({ dir, ephemeral: true });
    serverUrl = cluster.url('postgres');
  }
  const template = `ballast_tpl_${process.pid}`;
  let code = 1;
  try {
    await admin(serverUrl, `drop database if exists ${template}`);
    await admin(serverUrl, `create database ${template}`);
    await migrate(withDatabase(serverUrl, template));

    rmSync(outputDir, { recursive: true, force: true });
    const args = process.argv.slice(2);
    const files = args.some((a) => !a.startsWith('-')) ? [] : ['test/**/*.test.ts'];
    const tapBin = join(root, 'node_modules', 'tap', 'dist', 'esm', 'run.mjs');
    const tapEntry = existsOr(tapBin, join(root, 'node_modules', '.bin', 'tap'));
    code = await new Promise<number>((resolve) => {
      const child = spawn(process.execPath, [tapEntry, '--disable-coverage', `--output-dir=${outputDir}`, ...args, ...files], {
        cwd: root,
        stdio: 'inherit',
        env: {
          ...process.env,
          PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
          BALLAST_TEST_SERVER_URL: serverUrl,
          BALLAST_TEST_TEMPLATE: template,
        },
      });
      child.on('exit', (c, signal) => resolve(c ?? (signal ? 1 : 0)));
    });
  } finally {
    await admin(serverUrl, `drop database if exists ${template} with (force)`).catch(() => {});
    await cluster?.stop();
  }
  const { passed, failed, skipped } = countTap(outputDir);
  rmSync(outputDir, { recursive: true, force: true });
  const failedShown = code !== 0 && failed === 0 ? 1 : failed;
  console.log(`${passed} passed, ${failedShown} failed${skipped ? `, ${skipped} skipped` : ''}`);
  return code;
}

function existsOr(path: string, fallback: string): string {
  try {
    statSync(path);
    return path;
  } catch {
    return fallback;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    console.log('0 passed, 1 failed');
    process.exit(1);
  },
);
