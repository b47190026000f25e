// The `ballast` command end to end, as child processes: `start` against a given database and with its own embedded
// Postgres (including recovery from a SIGKILLed run that left its Postgres behind), `submit` and `status`.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { wordstats } from '../tasks/demo.ts';
import { eventually, freshDatabase, isAlive, spawnNode, type TestProcess } from './helpers.ts';

/** The environment of a CLI run: nothing inherited that would pick another database or change what start does. */
function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'BALLAST_DATA_DIR', 'BALLAST_DEMO', 'BALLAST_TASKS_DIR',
    'BALLAST_CONCURRENCY', 'LOG_LEVEL']) delete env[name];
  return { ...env, LOG_FORMAT: 'json', BALLAST_GRAPHQL_PORT: '0', ...extra };
}

/** Waits for `start`'s final line about its demo job ("demo job N completed"); returns the job id and status. */
function demoFinished(proc: TestProcess, timeoutMs: number, after?: string): Promise<{ jobId: string; status: string }> {
  return proc.waitForLine((line) => {
    let msg: unknown;
    try {
      msg = (JSON.parse(line) as { msg?: unknown }).msg;
    } catch {
      return undefined;
    }
    const m = typeof msg === 'string' ? /^demo job (\d+) (completed|failed|cancelled|partially_completed)$/.exec(msg) : null;
    return m && m[1] !== after ? { jobId: m[1]!, status: m[2]! } : undefined;
  }, timeoutMs);
}

async function cli(t: Parameters<typeof spawnNode>[0], args: string[], env: NodeJS.ProcessEnv) {
  const proc = spawnNode(t, ['src/cli.ts', ...args], { env });
  const { code } = await proc.wait(30_000);
  return { code, stdout: proc.lines.join('\n'), stderr: proc.stderr() };
}

t.test('start with DATABASE_URL runs the demo, stops cleanly on SIGTERM', async (t) => {
  const { url, pool } = await freshDatabase(t);
  const proc = spawnNode(t, ['src/cli.ts', 'start'], { env: cliEnv({ DATABASE_URL: url }) });
  const demo = await demoFinished(proc, 60_000);
  t.equal(demo.status, 'completed', `the log says demo job ${demo.jobId} completed`);
  const { rows: [job] } = await pool.query(`select status, result from ballast.jobs where id = $1`, [demo.jobId]);
  t.equal(job?.status, 'completed', 'and so does the database');
  t.match(job?.result, { words: 20, top: ['every', 'job', 'row'] });
  const triage = await demoFinished(proc, 60_000, demo.jobId);
  t.equal(triage.status, 'completed', 'then the model-step demo (demo.triage on the local model) completed');
  const { rows: calls } = await pool.query(`select provider, error_class from ballast.model_calls where job_id = $1`, [triage.jobId]);
  t.same(calls, [{ provider: 'local', error_class: null }], 'its model call is traced');

  t.same(await proc.stop('SIGTERM', 20_000), { code: 0, signal: null }, 'SIGTERM: exit code 0');
  const notJson = proc.lines.filter((l) => {
    try {
      return typeof (JSON.parse(l) as { msg?: unknown }).msg !== 'string';
    } catch {
      return true;
    }
  });
  t.same(notJson, [], 'with LOG_FORMAT=json every stdout line is a JSON log record');
  t.ok(proc.lines.some((l) => l.includes('"msg":"shutting down"')), 'it logged the shutdown');

  const { rows: [locked] } = await pool.query(`select count(*)::int as n from graphile_worker._private_jobs where locked_at is not null`);
  t.equal(locked?.n, 0, 'nothing is left locked in graphile_worker');
  const { rows: workers } = await pool.query(`select id, stopped_at from ballast.workers`);
  t.equal(workers.length, 1, 'one worker registered');
  t.ok(workers[0]?.stopped_at, 'and marked stopped');
});

t.test('submit and status', async (t) => {
  const { url, db, pool } = await freshDatabase(t);
  await db.registerPipeline(wordstats.name, wordstats.version, wordstats.definition(), wordstats.inputJsonSchema());
  const env = cliEnv({ DATABASE_URL: url });

  const plain = await cli(t, ['submit', 'demo.wordstats', '--input', '{"text":"hello world"}'], env);
  t.equal(plain.code, 0, plain.stderr);
  const m = /^job (\d+) submitted: demo\.wordstats@1, queued$/.exec(plain.stdout);
  t.ok(m, `prints the job id: ${plain.stdout}`);
  const jobId = m?.[1] ?? '0';
  t.same((await db.getJob(jobId))?.input, { text: 'hello world' }, 'the job exists with that input');

  const json = await cli(t, ['submit', 'demo.wordstats', '--input', '{"text":"again"}', '--key', 'k-1', '--priority', '-3', '--json'], env);
  t.equal(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { jobId: string; created: boolean; status: string; pipelineVersion: number };
  t.match(parsed, { created: true, status: 'queued', pipelineVersion: 1 });
  t.match(await db.getJob(parsed.jobId), { idempotency_key: 'k-1', priority: -3 });
  const again = await cli(t, ['submit', 'demo.wordstats', '--input', '{"text":"again"}', '--key', 'k-1', '--priority', '-3', '--json'], env);
  t.same(JSON.parse(again.stdout), { ...parsed, created: false }, 'same key and request: the same job, created false');

  const before = (await pool.query(`select count(*)::int as n from ballast.jobs`)).rows[0]?.n;
  const invalid = await cli(t, ['submit', 'demo.wordstats', '--input', '{"text":5,"extra":true}'], env);
  t.equal(invalid.code, 4, 'invalid input exits with code 4');
  t.match(invalid.stderr, /^ {2}input\.text: expected string, got number$/m, 'names the wrong field');
  t.match(invalid.stderr, /^ {2}input\.extra: unknown property/m, 'and the unknown one');
  t.equal((await pool.query(`select count(*)::int as n from ballast.jobs`)).rows[0]?.n, before, 'no job was created');

  const usage = await cli(t, ['submit', 'demo.wordstats', '--prio', '1'], env);
  t.equal(usage.code, 2, 'an unknown option is a usage error (exit code 2)');
  t.match(usage.stderr, /^ballast: Unknown option '--prio'/);

  const unknown = await cli(t, ['submit', 'no.such.pipeline'], env);
  t.equal(unknown.code, 4, 'an unknown pipeline exits with code 4');
  t.match(unknown.stderr, /unknown_pipeline/);

  const status = await cli(t, ['status', jobId], env);
  t.equal(status.code, 0, status.stderr);
  const lines = status.stdout.split('\n');
  t.equal(lines[0], `job ${jobId} demo.wordstats@1 queued`);
  t.match(lines.slice(1).join('\n'), /normalize\s+queued\s+attempts 0\/5/);
  t.match(lines.slice(1).join('\n'), /report\s+pending\s+attempts 0\/5/);
  const statusJson = await cli(t, ['status', jobId, '--json'], env);
  const doc = JSON.parse(statusJson.stdout) as { job: { id: string; status: string }; steps: { name: string }[] };
  t.match(doc.job, { id: jobId, status: 'queued' });
  t.same(doc.steps.map((s) => s.name), ['normalize', 'count', 'rank', 'report']);
  // A job pinned to a prompt label (prompts.md) shows the version it got.
  await pool.query(`select ballast.create_prompt_version('cli.status', null, 'Rate: {{input.text}}')`);
  await pool.query(`select ballast.set_prompt_label('cli.status', 'production', 1, 'cli test')`);
  await pool.query(`select ballast.resolve_prompt($1, 'cli.status', 'production')`, [jobId]);
  const pinned = await cli(t, ['status', jobId], env);
  t.match(pinned.stdout, /^prompt cli\.status@production -> version 1 \(stable, pinned \d{4}-/m, 'status shows the pin');
  const pinnedJson = JSON.parse((await cli(t, ['status', jobId, '--json'], env)).stdout) as { prompts: unknown[] };
  t.match(pinnedJson.prompts, [{ promptName: 'cli.status', label: 'production', version: 1, arm: 'stable' }]);
  const missing = await cli(t, ['status', '987654321'], env);
  t.equal(missing.code, 3, 'a job that does not exist: exit code 3');
  t.match(missing.stderr, /job 987654321 does not exist/);
});

t.test('start without DATABASE_URL: embedded Postgres, and recovery after SIGKILL', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'ballast-cli-'));
  const pidFile = join(dir, 'pgdata', 'postmaster.pid');
  const postmaster = () => (existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').split('\n')[0]) : 0);
  const started: number[] = [];
  t.teardown(async () => {
    // Whatever happened above, leave no Postgres behind (children are SIGKILLed first: teardowns run last-in first).
    for (const pid of [...started, postmaster()]) {
      if (!isAlive(pid)) continue;
      process.kill(pid, 'SIGINT');
      if (!(await eventually(() => !isAlive(pid), 10_000))) process.kill(pid, 'SIGKILL');
    }
    rmSync(dir, { recursive: true, force: true });
  });
  const env = cliEnv({ BALLAST_DATA_DIR: dir });

  const first = spawnNode(t, ['src/cli.ts', 'start'], { env });
  const demo1 = await demoFinished(first, 90_000);
  t.equal(demo1.status, 'completed', 'the first run completes the demo on its own Postgres');
  const pid1 = postmaster();
  started.push(pid1);
  t.ok(isAlive(pid1), `its Postgres runs (pid ${pid1})`);
  first.child.kill('SIGKILL');
  t.equal((await first.exited).signal, 'SIGKILL');
  t.ok(isAlive(pid1), 'after SIGKILL of ballast its Postgres is still running (an orphan)');

  const second = spawnNode(t, ['src/cli.ts', 'start'], { env });
  const demo2 = await demoFinished(second, 90_000);
  t.equal(demo2.status, 'completed', 'the second run finds the demo job completed');
  t.equal(demo2.jobId, demo1.jobId, `the same job (${demo1.jobId}): a restart does not run the demo jobs again`);
  t.ok(second.lines.some((l) => l.includes('stopping a Postgres left running')), 'it said it stopped the orphan');
  t.ok(await eventually(() => !isAlive(pid1), 5_000), 'the orphan is gone');
  const pid2 = postmaster();
  started.push(pid2);
  t.not(pid2, pid1, 'a new Postgres serves the second run');

  const client = new pg.Client({ connectionString: readFileSync(join(dir, 'url'), 'utf8').trim() });
  await client.connect();
  const { rows } = await client.query(`select id::text, status from ballast.jobs where pipeline = 'demo.wordstats' order by id`);
  await client.end();
  t.same(rows, [{ id: demo1.jobId, status: 'completed' }], 'the demo job of the first run is there: the data survived the kill');

  t.same(await second.stop('SIGTERM', 30_000), { code: 0, signal: null }, 'SIGTERM: exit code 0');
  t.notOk(isAlive(pid2), 'its Postgres stopped with it');
  t.notOk(existsSync(pidFile), 'no postmaster.pid is left');
});
