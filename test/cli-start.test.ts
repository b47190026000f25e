// Starting and stopping `ballast start` (npm start) with its embedded Postgres, as child processes: the API's port in
// use fails the start at once with one line and leaves no Postgres behind; a second start on the same data directory
// is refused in one line; a fresh start has a failed demo job in the dead letters; a restart keeps the port of the
// embedded Postgres (the URL in .ballast/url keeps working) and does not run the demo jobs again; a wrong password
// is reported as such; a stop says what it waits for, and a second SIGINT forces it.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { eventually, isAlive, spawnNode, type TestProcess } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'ballast-start-'));
const pidFile = join(dir, 'pgdata', 'postmaster.pid');
const postmaster = () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : 0);
const seen = new Set<number>();
t.teardown(async () => {
  // Whatever happened, leave no Postgres behind.
  for (const pid of [...seen, postmaster()]) {
    if (!isAlive(pid)) continue;
    process.kill(pid, 'SIGINT');
    if (!(await eventually(() => !isAlive(pid), 10_000))) process.kill(pid, 'SIGKILL');
  }
  rmSync(dir, { recursive: true, force: true });
});

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'BALLAST_DEMO', 'BALLAST_TASKS_DIR', 'LOG_LEVEL', 'BALLAST_SUPERVISE']) delete e[name];
  return { ...e, BALLAST_DATA_DIR: dir, LOG_FORMAT: 'json', BALLAST_GRAPHQL_PORT: '0', ...extra };
}

/** The `msg` of a JSON log line. */
function msg(line: string): string | undefined {
  try {
    const m = (JSON.parse(line) as { msg?: unknown }).msg;
    return typeof m === 'string' ? m : undefined;
  } catch {
    return undefined;
  }
}

const ready = (proc: TestProcess) => proc.waitForLine((l) => (msg(l)?.startsWith('ready.') ? true : undefined), 120_000);
const stackLines = (text: string) => text.split('\n').filter((l) => /^\s+at /.test(l));

t.test('the API port in use: one line naming BALLAST_GRAPHQL_PORT, exit 1, no Postgres left', async (t) => {
  const holder: Server = createServer();
  await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => new Promise<void>((r) => holder.close(() => r())));
  const port = (holder.address() as { port: number }).port;
  const proc = spawnNode(t, ['src/cli.ts', 'start'], { env: env({ BALLAST_GRAPHQL_PORT: String(port) }) });
  const { code } = await proc.wait(90_000);
  t.equal(code, 1, 'exits 1 instead of running on as a headless worker');
  const err = proc.stderr().trim();
  t.equal(err.split('\n').length, 1, `one line: ${err}`);
  t.match(err, new RegExp(`^ballast: port ${port} of the GraphQL API is in use.*BALLAST_GRAPHQL_PORT`));
  t.same(stackLines(err), [], 'no stack trace');
  t.notOk(existsSync(join(dir, 'url')), 'no .ballast/url of a database that is gone');
  t.notOk(isAlive(postmaster()), 'the embedded Postgres it started is stopped');
});

t.test('a fresh start, a second start refused, a wrong password, a restart on the same port', async (t) => {
  const first = spawnNode(t, ['src/cli.ts', 'start'], { env: env() });
  await ready(first);
  const pid1 = postmaster();
  seen.add(pid1);
  const url = readFileSync(join(dir, 'url'), 'utf8').trim();
  const demos = first.lines.map(msg).filter((m): m is string => Boolean(m && /^demo job \d+ (completed|failed)$/.test(m)));
  t.match(demos, [/completed$/, /completed$/, /failed$/], 'the demo jobs: two completed, then one failed');

  const client = new pg.Client({ connectionString: url });
  client.on('error', () => {});
  await client.connect();
  const { rows: dead } = await client.query(`select pipeline, step_name, error_code from ballast.dead_letters`);
  t.same(dead, [{ pipeline: 'demo.invoice', step_name: 'convert', error_code: 'unknown_currency' }], 'the failed demo step is a dead letter');
  await client.end();

  const second = spawnNode(t, ['src/cli.ts', 'start'], { env: env() });
  const { code } = await second.wait(60_000);
  t.equal(code, 1, 'a second start on the same data directory exits 1');
  const err = second.stderr().trim();
  t.equal(err.split('\n').length, 1, `one line: ${err}`);
  t.match(err, new RegExp(`^ballast: the embedded Postgres in .* is in use by process ${first.child.pid}`));
  t.same(stackLines(err), [], 'no stack trace');
  t.ok(isAlive(pid1), 'the first one still runs');

  const wrong = new URL(url);
  wrong.password = 'not-the-password';
  const refused = spawnNode(t, ['src/cli.ts', 'jobs'], { env: env({ DATABASE_URL: wrong.toString() }) });
  t.equal((await refused.wait(30_000)).code, 1);
  t.match(refused.stderr().trim(), /^ballast: DATABASE_URL postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/ballast: password authentication failed for user postgres; fix the user or password in DATABASE_URL$/,
    'a wrong password says so, without the password');

  const reports = spawnNode(t, ['src/cli.ts', 'report', 'dead-letters', '--json'], { env: env() });
  t.equal((await reports.wait(30_000)).code, 0, reports.stderr());
  const rows = JSON.parse(reports.lines.join('')) as { pipeline: string; attempts: unknown }[];
  t.match(rows, [{ pipeline: 'demo.invoice' }], '`report dead-letters` shows it on a fresh start');

  t.same(await first.stop('SIGTERM', 30_000), { code: 0, signal: null }, 'SIGTERM: exit 0');
  t.notOk(isAlive(pid1), 'its Postgres stopped');

  const again = spawnNode(t, ['src/cli.ts', 'start'], { env: env() });
  await ready(again);
  seen.add(postmaster());
  t.equal(readFileSync(join(dir, 'url'), 'utf8').trim(), url, 'the restart writes the same URL: same port, same password');
  const c2 = new pg.Client({ connectionString: url });
  await c2.connect();
  const { rows: jobs } = await c2.query(`select count(*)::int as n from ballast.jobs`);
  await c2.end();
  t.equal(jobs[0].n, 3, 'the URL from the first run reaches the restarted Postgres; the demo jobs did not run again');
  t.ok(again.lines.some((l) => /^demo job \d+ was submitted by an earlier start$/.test(msg(l) ?? '')), 'the log says the demo jobs ran before');
  t.same(await again.stop('SIGTERM', 30_000), { code: 0, signal: null });
});

t.test('a stop says what it waits for; a second SIGINT forces it, and the embedded Postgres stops', async (t) => {
  const proc = spawnNode(t, ['src/cli.ts', 'start'], {
    env: env({ BALLAST_TASKS_DIR: 'test/fixtures/slow-tasks', BALLAST_SHUTDOWN_GRACE_MS: '120000', BALLAST_DEMO: '0' }),
  });
  await ready(proc);
  const pid = postmaster();
  seen.add(pid);
  const client = new pg.Client({ connectionString: readFileSync(join(dir, 'url'), 'utf8').trim() });
  await client.connect();
  const { rows: [job] } = await client.query(`select job_id::text from ballast.submit_job('test.slow', '{}')`);
  t.ok(await eventually(async () => (await client.query(`select 1 from ballast.steps where job_id = $1 and status = 'running'`, [job.job_id])).rowCount === 1, 30_000),
    'the slow step runs');
  await client.end();

  proc.child.kill('SIGINT');
  const waiting = await proc.waitForLine((l) => {
    const m = msg(l);
    return m && /running step\(s\): job \d+ test\.slow\/nap/.test(m) ? m : undefined;
  }, 30_000);
  t.match(waiting, /^waiting for 1 running step\(s\)/, `the stop says which step it waits for: ${waiting}`);
  await proc.waitForLine((l) => (msg(l)?.startsWith('still stopping: waiting for the worker process') ? true : undefined), 30_000);
  t.pass('and keeps saying it while it waits');
  proc.child.kill('SIGINT');
  const { code } = await proc.wait(30_000);
  t.equal(code, 130, 'the second SIGINT forces the exit (130), long before the grace period ends');
  t.ok(proc.lines.some((l) => msg(l)?.startsWith('forced stop')), 'and says so');
  t.ok(await eventually(() => !isAlive(pid), 10_000), 'the embedded Postgres is stopped, not orphaned');
  t.notOk(existsSync(pidFile), 'no postmaster.pid left');
});
