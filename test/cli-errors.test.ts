// How the `ballast` command fails, as child processes: an ordinary mistake is one line with a hint and an exit code,
// never a stack trace (a missing input file, no database, a DATABASE_URL that is refused or names a missing database,
// an unknown option of any command); hints name the command-line flags, not the SQL parameters; --json errors are
// JSON; --json results have numbers as numbers; `report --limit` limits every report.
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../src/db/embedded.ts';
import { invoice, wordstats } from '../tasks/demo.ts';
import { freshDatabase, spawnNode } from './helpers.ts';

const { url, db } = await freshDatabase(t);
for (const p of [wordstats, invoice]) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const noDir = mkdtempSync(join(tmpdir(), 'ballast-nodb-'));
t.teardown(() => rmSync(noDir, { recursive: true, force: true }));

function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const e = { ...process.env };
  for (const name of ['DATABASE_URL', 'TEST_DATABASE_URL', 'BALLAST_DATA_DIR', 'LOG_LEVEL']) delete e[name];
  return { ...e, LOG_FORMAT: 'json', BALLAST_DATA_DIR: noDir, DATABASE_URL: url, ...extra };
}

async function cli(args: string[], e: NodeJS.ProcessEnv = env()) {
  const proc = spawnNode(t, ['src/cli.ts', ...args], { env: e });
  const { code } = await proc.wait(60_000);
  return { code, stdout: proc.lines.join('\n').trim(), stderr: proc.stderr().trim() };
}

/** One line, no stack trace. */
function oneLine(t: Pick<typeof import('tap').default, 'equal' | 'notMatch'>, stderr: string, what: string) {
  t.equal(stderr.split('\n').length, 1, `${what}: one line: ${stderr}`);
  t.notMatch(stderr, /^\s+at /m, `${what}: no stack trace`);
}

t.test('a missing input file', async (t) => {
  const [r, payload] = await Promise.all([cli(['submit', 'demo.wordstats', '--input', '@no-such-input.json']), cli(['send-event', 'k', '--payload', '@nope.json'])]);
  t.equal(r.code, 2);
  oneLine(t, r.stderr, 'missing file');
  t.match(r.stderr, /^ballast: --input @no-such-input\.json: no such file; pass @ and the path of a JSON file/);
  t.equal(payload.code, 2);
  t.match(payload.stderr, /^ballast: --payload @nope\.json: no such file/, 'names the flag it came from');
});

t.test('no database, a refused connection, a database that does not exist', async (t) => {
  const none = await cli(['jobs'], env({ DATABASE_URL: '' }));
  t.equal(none.code, 1);
  oneLine(t, none.stderr, 'no database');
  t.match(none.stderr, /^ballast: no database: DATABASE_URL is not set and no `npm start` runs with .*; set DATABASE_URL=/);

  const port = await freePort();
  const refusedUrl = `postgres://postgres:secret@127.0.0.1:${port}/x`;
  const runs = await Promise.all([['migrate'], ['submit', 'demo.wordstats']].map((command) => cli(command, env({ DATABASE_URL: refusedUrl }))));
  for (const [i, r] of runs.entries()) {
    const command = i === 0 ? 'migrate' : 'submit';
    t.equal(r.code, 1, `${command}: exit 1`);
    oneLine(t, r.stderr, command);
    t.match(r.stderr, `ballast: DATABASE_URL postgres://postgres:***@127.0.0.1:${port}/x: connection refused, no Postgres answers at 127.0.0.1:${port}`,
      `${command}: says the connection was refused, not that a migration failed`);
    t.notMatch(r.stderr, /secret|[Mm]igrat/, 'no password, no migration');
  }

  const missing = new URL(url);
  missing.pathname = '/ballast_no_such_database';
  const r = await cli(['migrate'], env({ DATABASE_URL: missing.toString() }));
  t.equal(r.code, 1);
  oneLine(t, r.stderr, 'unknown database');
  t.match(r.stderr, /: database "ballast_no_such_database" does not exist on [^;]+; create it \(createdb /);
});

t.test('--json: errors as JSON, numbers as numbers', async (t) => {
  const [bad, refused, missingJob] = await Promise.all([cli(['submit', 'demo.wordstats', '--input', '@missing.json', '--json']),
    cli(['submit', 'demo.wordstats', '--input', '{"text":5}', '--json']), cli(['status', '987654', '--json'])]);
  t.equal(bad.code, 2);
  t.same(JSON.parse(bad.stderr), { error: { code: 'usage', message: '--input @missing.json: no such file', exitCode: 2, hint: 'pass @ and the path of a JSON file, a JSON value, or - for stdin' } });
  t.equal(refused.code, 4);
  t.match(JSON.parse(refused.stderr), { error: { code: 'invalid_input', exitCode: 4, issues: [{ path: 'input.text', message: 'expected string, got number' }] } });
  t.equal(missingJob.code, 3);
  t.same(JSON.parse(missingJob.stderr), { error: { code: 'not_found', message: 'job 987654 does not exist', exitCode: 3 } });

  const submitted = await cli(['submit', 'demo.wordstats', '--input', '{"text":"a b"}', '--json']);
  t.equal(submitted.code, 0, submitted.stderr);
  const { jobId } = JSON.parse(submitted.stdout) as { jobId: unknown };
  t.type(jobId, 'number', 'submit --json: the job id is a number');
  const [statusRun, jobsRun, reportRun] = await Promise.all([cli(['status', String(jobId), '--json']), cli(['jobs', '--json']), cli(['report', 'pipelines', '--json'])]);
  const status = JSON.parse(statusRun.stdout) as { job: Record<string, unknown>; steps: Record<string, unknown>[] };
  t.match(status.job, { id: jobId, cost_usd: 0, input_tokens: 0 }, 'status --json: id, cost and tokens are numbers');
  t.type(status.steps[0]!.job_id, 'number');
  const listed = JSON.parse(jobsRun.stdout) as Record<string, unknown>[];
  t.type(listed[0]!.cost_usd, 'number', 'jobs --json: cost_usd is a number');
  const report = JSON.parse(reportRun.stdout) as Record<string, unknown>[];
  t.match(report, [{ pipeline: 'demo.wordstats', jobs: 1, unfinished: 1, cost_usd: 0 }], 'report --json: counts and costs are numbers');
  t.equal(typeof report[0]!.pipeline, 'string', 'text stays text');
});

t.test('hints name the CLI flags, not the SQL parameters', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'demo.wordstats', input: { text: 'queued' } });
  const submit = ['submit', 'demo.wordstats', '--input', '{"text":"x"}'];
  const [priority, tenant, key, replay] = await Promise.all([
    cli([...submit, '--priority', '5000']), cli([...submit, '--tenant', '']), cli([...submit, '--key', '']), cli(['replay', jobId])]);
  t.equal(priority.code, 4);
  t.match(priority.stderr, /--priority: 5000 is out of range/);
  t.match(tenant.stderr, /--tenant: is empty/);
  t.match(key.stderr, /--key: is empty.*Leave out --key for no deduplication/);
  t.equal(replay.code, 4);
  t.match(replay.stderr, /Name a step \(--step\)/);
  for (const r of [priority, tenant, key, replay]) oneLine(t, r.stderr, 'refused');
  for (const r of [priority, tenant, key, replay]) t.notMatch(r.stderr, /\bp_[a-z_]+|tenant_id|idempotency_key/, `no SQL names: ${r.stderr}`);
  const unknown = await cli(['cancel', jobId, '--bogus']);
  t.equal(unknown.code, 2, 'an unknown option of cancel is a usage error');
  oneLine(t, unknown.stderr, 'unknown option');
});

t.test('report --limit limits every report', async (t) => {
  await db.submitJob({ pipeline: 'demo.invoice', input: { customer: 'c', amount_cents: 1, currency: 'EUR' } });
  const { rows: [counts] } = await db.pool.query(`select (select count(*) from ballast.report_pipelines('24 hours', 'hour'))::int as pipelines,
    (select count(*) from ballast.report_steps('24 hours', 'hour'))::int as steps, (select count(*) from ballast.queue_depth)::int as queue`);
  t.ok(counts.pipelines >= 2 && counts.steps >= 2 && counts.queue >= 2, `each report has rows to limit: ${JSON.stringify(counts)}`);
  const runs = await Promise.all(['pipelines', 'steps', 'queue'].map((name) => cli(['report', name, '--limit', '1', '--json'])));
  for (const [i, r] of runs.entries()) {
    t.equal(r.code, 0, r.stderr);
    t.equal((JSON.parse(r.stdout) as unknown[]).length, 1, `${['pipelines', 'steps', 'queue'][i]} --limit 1: one row`);
  }
  const bad = await cli(['report', 'steps', '--limit', '0']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /^ballast: --limit 0 is not an integer from 1 to 10000$/);
});
