// The operator commands of the `ballast` CLI as child processes against a running worker: `watch` follows a job
// live to its end (exit code by outcome), `jobs` lists with filters, `report` prints the SQL reports; errors are
// usage errors with exit code 2.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { PermanentError } from '../src/errors.ts';
import { freshDatabase, spawnNode, testWorker } from './helpers.ts';

const { url, db } = await freshDatabase(t);
const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json' };
delete env.TEST_DATABASE_URL;

// A step that waits for a signal from the test, so `watch` is attached before the job moves on.
let release: () => void = () => {};
const gate = new Promise<void>((resolve) => { release = resolve; });
const slow = pipeline({ name: 'ops.slow', version: 1, input: z.object({ fail: z.boolean().default(false) }) })
  .step('first', { output: z.number() }, async ({ progress }) => { await progress({ done: 1, of: 2 }); await gate; return 1; })
  .step('second', { after: ['first'], output: z.number(), retry: { maxAttempts: 1 } }, ({ input, deps }) => {
    if (input.fail) throw new PermanentError('the second step refuses');
    return deps.first + 1;
  });
await testWorker(t, url, { pipelines: [slow], concurrency: 2 });

async function cli(args: string[]) {
  const proc = spawnNode(t, ['src/cli.ts', ...args], { env });
  const { code } = await proc.wait(60_000);
  return { code, stdout: proc.lines.join('\n'), stderr: proc.stderr() };
}

t.test('watch follows a job from its current state to its result', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'ops.slow', input: {} });
  const proc = spawnNode(t, ['src/cli.ts', 'watch', jobId], { env });
  await proc.waitForLine((l) => (l.startsWith(`job ${jobId} ops.slow@1`) ? true : undefined), 30_000);
  release();
  const { code } = await proc.wait(30_000);
  const out = proc.lines.join('\n');
  t.equal(code, 0, 'exit 0: completed');
  t.match(out, /step second running/, 'shows the next step starting');
  t.match(out, /step second succeeded/);
  t.match(out, /job completed/);
  t.match(proc.lines.at(-1), 'completed: 2', 'ends with the result');
  const seen = proc.lines.filter((l) => / step second succeeded$/.test(l));
  t.equal(seen.length, 1, 'no event twice');
});

t.test('watch --json of a failing job: JSON lines and exit 6', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'ops.slow', input: { fail: true } });
  const r = await cli(['watch', jobId, '--json', '--timeout', '30']);
  t.equal(r.code, 6, 'exit 6: failed');
  const lines = r.stdout.split('\n').map((l) => JSON.parse(l) as Record<string, any>);
  t.ok(lines[0]!.job && lines[0]!.steps, 'first the state');
  t.match(lines.at(-1), { job: { status: 'failed', error: { message: /the second step refuses/ } } }, 'last the final job');
});

t.test('watch: a missing job exits 3; a timeout exits 124', async (t) => {
  t.equal((await cli(['watch', '987654'])).code, 3);
  const { jobId } = await db.submitJob({ pipeline: 'ops.slow', input: {} }); // `first` finished: the gate is open
  const idle = await db.submitJob({ pipeline: 'ops.slow', input: {} });
  await db.cancelJob(idle.jobId, 'test');
  t.equal((await cli(['watch', idle.jobId])).code, 7, 'a cancelled job: exit 7');
  t.ok(jobId);
});

t.test('jobs lists with filters', async (t) => {
  const r = await cli(['jobs', '--pipeline', 'ops.slow', '--status', 'failed', '--json']);
  t.equal(r.code, 0, r.stderr);
  const jobs = JSON.parse(r.stdout) as { status: string; pipeline: string }[];
  t.ok(jobs.length >= 1 && jobs.every((j) => j.status === 'failed' && j.pipeline === 'ops.slow'));
  const text = await cli(['jobs', '--limit', '2']);
  t.match(text.stdout.split('\n')[0], /^id\s+pipeline\s+tenant\s+status/);
  t.equal(text.stdout.split('\n').length, 4, 'a header, a rule and 2 rows');
  const bad = await cli(['jobs', '--since', 'yesterday-ish']);
  t.equal(bad.code, 2);
  t.match(bad.stderr, /--since yesterday-ish is not an interval/);
  const badStatus = await cli(['jobs', '--status', 'done']);
  t.equal(badStatus.code, 2);
  t.match(badStatus.stderr, /is not a job status/);
});

t.test('report prints the SQL reports', async (t) => {
  const r = await cli(['report', 'pipelines', '--since', '1 hour', '--json']);
  t.equal(r.code, 0, r.stderr);
  const rows = JSON.parse(r.stdout) as { pipeline: string; jobs: string }[];
  t.ok(rows.some((x) => x.pipeline === 'ops.slow' && Number(x.jobs) >= 3), 'the jobs above are counted');
  const dead = await cli(['report', 'dead-letters']);
  t.match(dead.stdout, /second/, 'the failed step is a dead letter');
  const queue = await cli(['report', 'queue']);
  t.equal(queue.code, 0, queue.stderr);
  const unknown = await cli(['report', 'nope']);
  t.equal(unknown.code, 2);
  t.match(unknown.stderr, /pipelines\s+per pipeline version/);
  const own = await cli(['report', '--help']);
  t.equal(own.code, 0);
  t.match(own.stdout, /^Usage: ballast report <name>/);
  t.match(own.stdout, /dead-letters/);
  const help = await cli(['help']);
  t.match(help.stdout, /watch <job-id>/);
  t.match(help.stdout, /Exit codes/);
});
