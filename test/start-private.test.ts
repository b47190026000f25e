// `ballast start` (npm start) from a checkout that only root can enter (root's home, a mktemp -d folder), as root:
// the embedded Postgres runs as the `postgres` user, which cannot reach such a folder, so initdb could not read the
// password file and start failed (issue 13). Now the cluster lives in a folder of its own that postgres can reach
// (src/db/embedded.ts, clusterHome), and .ballast/cluster-dir says where. Only meaningful as root (skipped otherwise).
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { eventually, isAlive, spawnNode } from './helpers.ts';

const root = process.getuid?.() === 0;

t.test('start from a folder only root can enter', { skip: root ? false : 'needs root (Postgres runs as the postgres user only then)' }, async (t) => {
  const priv = mkdtempSync(join(tmpdir(), 'ballast-private-')); // 0700, owned by root
  t.equal(statSync(priv).mode & 0o777, 0o700);
  const dataDir = join(priv, 'checkout', '.ballast');
  mkdirSync(dataDir, { recursive: true });
  t.not(spawnSync('su', ['-s', '/bin/sh', 'postgres', '-c', `test -x ${dataDir}`]).status, 0,
    'the postgres user cannot enter the data directory (the case that failed)');
  let home = '';
  const postmaster = () => {
    const pidFile = join(home, 'pgdata', 'postmaster.pid');
    return home && existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : 0;
  };
  t.teardown(async () => {
    const pid = postmaster();
    if (isAlive(pid)) {
      process.kill(pid, 'SIGINT');
      if (!(await eventually(() => !isAlive(pid), 10_000))) process.kill(pid, 'SIGKILL');
    }
    rmSync(priv, { recursive: true, force: true });
    if (home) rmSync(home, { recursive: true, force: true });
  });

  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'BALLAST_DEMO', 'BALLAST_TASKS_DIR', 'LOG_LEVEL']) delete env[name];
  Object.assign(env, { BALLAST_DATA_DIR: dataDir, LOG_FORMAT: 'json', BALLAST_GRAPHQL_PORT: '0' });
  const proc = spawnNode(t, ['src/cli.ts', 'start'], { env });
  const demo = await proc.waitForLine((line) => /"msg":"demo job (\d+) (completed|failed)"/.exec(line)?.[2], 90_000);
  t.equal(demo, 'completed', 'the demo job completed on the embedded Postgres');

  home = readFileSync(join(dataDir, 'cluster-dir'), 'utf8').trim();
  t.notOk(home.startsWith(priv), `the cluster lives outside the private folder (${home})`);
  t.ok(existsSync(join(home, 'pgdata', 'PG_VERSION')), 'an initialised cluster is there');
  t.equal(statSync(home).uid, 0, 'in a folder made by root');
  t.equal(statSync(join(home, 'password')).mode & 0o777, 0o600, 'its password file is 0600');
  t.ok(isAlive(postmaster()), 'its Postgres runs');
  t.ok(proc.lines.some((l) => l.includes('keeping the embedded cluster in a folder it can reach')), 'the log says where and why');

  const client = new pg.Client({ connectionString: readFileSync(join(dataDir, 'url'), 'utf8').trim() });
  await client.connect();
  const { rows } = await client.query(`select count(*)::int as n from ballast.jobs where status = 'completed'`);
  await client.end();
  t.ok(rows[0].n >= 1, 'the URL in .ballast/url reaches it');

  t.same(await proc.stop('SIGTERM', 30_000), { code: 0, signal: null }, 'SIGTERM: exit code 0');
});
