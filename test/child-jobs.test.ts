// Child jobs (migrations/0038_child_jobs.sql, issue 15 item 4): a step starts jobs of another pipeline
// (ctx.startChildren) and waits for them (ctx.waitForChildren: all, or the first n), parked meanwhile (waiting for
// children, no slot held). Results and errors flow up, cancellation flows down; the start is idempotent per (step,
// key), so a parent step that runs again after a SIGKILL of its worker starts no new children. Two worker processes
// run everything; the links are visible in ballast.jobs and GraphQL; the example of docs/pipelines.md runs here.
import t from 'tap';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { join } from 'node:path';
import { eventually, freshDatabase, repoRoot, spawnNode, testWorker, waitForJob, type TestProcess } from './helpers.ts';
import { childPipelines } from './fixtures/child-tasks.ts';
import { codeBlocks, pageText } from './support/doc-examples.ts';
import { data, testServer, token } from './support/graphql.ts';
import type { Pipeline } from '../src/pipeline/pipeline.ts';

const { url, db, pool } = await freshDatabase(t);
for (const p of childPipelines) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const fixture = fileURLToPath(new URL('./fixtures/child-worker.ts', import.meta.url));

async function workerProcess(): Promise<TestProcess> {
  const proc = spawnNode(t, [fixture], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json' } });
  await proc.waitForLine((line) => (line.includes('worker started') ? true : undefined), 30_000);
  return proc;
}
const procs = [await workerProcess(), await workerProcess()];

const jobRow = async (id: string) =>
  (await pool.query(`select id::text, status, parent_job_id::text, parent_step_id::text, result, error from ballast.jobs where id = $1`, [id])).rows[0];
const stepOf = async (jobId: string) =>
  (await pool.query(`select id::text, status, waiting_for, attempts, attempt_offset from ballast.steps where job_id = $1 order by id limit 1`, [jobId])).rows[0];
const childrenOf = async (jobId: string) =>
  (await pool.query(`select id::text, status, parent_step_id::text, idempotency_key from ballast.jobs where parent_job_id = $1 order by id`, [jobId])).rows;
const output = async (jobId: string) => (await jobRow(jobId)).result as {
  created: boolean[]; pid: number; children: { key: string; jobId: string; status: string; result: any; error: any }[];
};

t.test('results flow up: the parent waits (no slot, uncharged) for all its children and gets their results in order', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1, 2, 3, 4, 5] } });
  const done = await waitForJob(db, jobId, undefined, 60_000);
  t.equal(done.status, 'completed');
  const out = await output(jobId);
  t.same(out.children.map((c) => [c.key, c.status, c.result?.doubled]),
    [['c0', 'completed', 2], ['c1', 'completed', 4], ['c2', 'completed', 6], ['c3', 'completed', 8], ['c4', 'completed', 10]]);
  t.same(out.created, [false, false, false, false, false], 'the run after the wait got the same children back (created false)');
  const kids = await childrenOf(jobId);
  const step = await stepOf(jobId);
  t.equal(kids.length, 5, 'five child jobs, no more');
  t.same(kids.map((k) => k.id), out.children.map((c) => c.jobId), 'the children returned are the linked jobs');
  t.ok(kids.every((k) => k.parent_step_id === step.id), 'each child names the parent step');
  t.match(step, { status: 'succeeded', attempts: 2, attempt_offset: 1 }, 'two runs of the step, one charged');
  const { rows: waits } = await pool.query(`select count(*)::int as n from ballast.events where step_id = $1 and type = 'step_waiting'`, [step.id]);
  t.equal(waits[0].n, 1, 'the step waited once');
});

t.test('many children ending at once on two worker processes: every parent is woken once its last child ends', async (t) => {
  const ns = Array.from({ length: 15 }, (_, i) => i);
  const parents = await Promise.all(Array.from({ length: 6 }, () => db.submitJob({ pipeline: 'child.parent', input: { ns } })));
  for (const { jobId } of parents) {
    t.equal((await waitForJob(db, jobId, undefined, 120_000)).status, 'completed', `parent ${jobId} completed`);
    const out = await output(jobId);
    t.same(out.children.map((c) => c.result?.doubled), ns.map((n) => n * 2), 'with all of its children\'s results');
  }
  const { rows } = await pool.query(`select count(distinct (c.result ->> 'pid'))::int as pids from ballast.jobs j
    join ballast.jobs c on c.parent_job_id = j.id where j.id = any($1::bigint[])`, [parents.map((p) => p.jobId)]);
  t.comment(`the children ran in ${rows[0].pids} worker process(es)`);
});

t.test('a failing child flows up as its error; the parent decides (here: completes)', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1, 2, 3], failAt: 1 } });
  t.equal((await waitForJob(db, jobId, undefined, 60_000)).status, 'completed', 'the child failure did not fail the parent');
  const out = await output(jobId);
  t.same(out.children.map((c) => c.status), ['completed', 'failed', 'completed']);
  t.match(out.children[1]!.error, { step: 'work', message: /child 2 was told to fail/ }, 'the child job\'s error');
});

t.test('first n: resumes with the first completed child while the others run, and with the errors when n cannot complete', async (t) => {
  // c0 fails at once, c1 and c2 run until cancelled.
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1, 2, 3], first: 3, failAt: 0, block: true } });
  t.equal((await waitForJob(db, jobId, undefined, 60_000)).status, 'completed', 'three can no longer complete: the parent resumed');
  const out = await output(jobId);
  t.same(out.children[0]!.status, 'failed', 'the failed child, with its error');
  t.ok(out.children.slice(1).every((c) => !['completed', 'failed', 'cancelled'].includes(c.status)), 'the others still unfinished');
  for (const c of out.children.slice(1)) await db.cancelJob(c.jobId, 'test over');
  // One child: first 1 resumes when it completed.
  const { jobId: j2 } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1], first: 1 } });
  t.equal((await waitForJob(db, j2, undefined, 60_000)).status, 'completed');
  t.same((await output(j2)).children.map((c) => c.status), ['completed']);
});

t.test('a wait for some of the children (jobIds) resumes when those ended; no children: no wait', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1, 2], blockAt: 1, only: [0] } });
  t.equal((await waitForJob(db, jobId, undefined, 60_000)).status, 'completed');
  const out = await output(jobId);
  t.same(out.children.map((c) => [c.key, c.status]), [['c0', 'completed']], 'only the child waited for');
  const kids = await childrenOf(jobId);
  t.equal(kids.length, 2);
  t.notOk(['completed', 'failed', 'cancelled'].includes(kids[1]!.status), 'the other still runs');
  await db.cancelJob(kids[1]!.id, 'test over');
  const { jobId: none } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [] } });
  t.equal((await waitForJob(db, none, undefined, 60_000)).status, 'completed');
  t.same((await output(none)).children, [], 'no children: the wait returned at once with none');
  t.match(await stepOf(none), { attempts: 1, attempt_offset: 0 }, 'one run, no wait');
});

t.test('cancelling a child flows up as a cancelled result; the parent goes on', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1, 2], block: true } });
  t.ok(await eventually(async () => (await stepOf(jobId))?.waiting_for === 'children', 30_000), 'the parent waits for its children');
  t.equal((await db.getJob(jobId))?.status, 'waiting', 'the parent job is waiting');
  const kids = await childrenOf(jobId);
  for (const k of kids) await db.cancelJob(k.id, 'not needed');
  t.equal((await waitForJob(db, jobId, undefined, 60_000)).status, 'completed');
  t.same((await output(jobId)).children.map((c) => c.status), ['cancelled', 'cancelled']);
});

t.test('cancelling a job cancels its running and queued children and grandchildren, audited', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.grand', input: { ns: [1, 2, 3], block: true } });
  let mid: string | undefined;
  t.ok(await eventually(async () => {
    mid = (await childrenOf(jobId))[0]?.id;
    if (!mid) return false;
    const kids = await childrenOf(mid);
    return kids.length === 3 && (await pool.query(`select count(*)::int as n from ballast.steps where job_id = any($1::bigint[]) and status = 'running'`,
      [kids.map((k) => k.id)])).rows[0].n >= 1;
  }, 30_000), 'the grandchildren run');
  const grandkids = (await childrenOf(mid!)).map((k) => k.id);
  const r = await db.cancelJob(jobId, 'customer left', 'ops@example.com');
  t.equal(r.status, 'cancelled');
  for (const id of [mid!, ...grandkids]) t.equal((await jobRow(id)).status, 'cancelled', `descendant job ${id} cancelled`);
  const { rows: steps } = await pool.query(`select status, count(*)::int as n from ballast.steps where job_id = any($1::bigint[]) group by status`, [[mid!, ...grandkids]]);
  t.same(steps, [{ status: 'cancelled', n: 4 }], 'every step of every descendant is cancelled');
  const { rows: events } = await pool.query(
    `select job_id::text, actor, reason from ballast.events where type = 'job_cancelled' and job_id = any($1::bigint[]) order by job_id`,
    [[jobId, mid!, ...grandkids]]);
  t.equal(events.length, 5, 'one job_cancelled event per job');
  t.ok(events.every((e) => e.actor === 'ops@example.com' && e.reason === 'customer left'), 'with the actor and reason');
  const { rows: att } = await pool.query(`select count(*)::int as n from ballast.attempts where job_id = any($1::bigint[]) and outcome = 'running'`, [grandkids]);
  t.equal(att[0].n, 0, 'no attempt of a grandchild is left running');
});

t.test('idempotent: a parent step whose worker is SIGKILLed after starting its children starts none again', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [1, 2, 3], hang: true } });
  let pid: number | undefined;
  t.ok(await eventually(async () => {
    const { rows } = await pool.query(
      `select w.pid from ballast_private.attempts a join ballast_private.workers w on w.id = a.worker_id
        where a.job_id = $1 and a.outcome = 'running'`, [jobId]);
    pid = rows[0]?.pid;
    return pid !== undefined && (await childrenOf(jobId)).length === 3;
  }, 30_000), 'the parent step started its children and hangs');
  const before = (await childrenOf(jobId)).map((k) => k.id);
  const victim = procs.find((p) => p.child.pid === pid);
  t.ok(victim, 'it runs in one of the worker processes');
  victim!.child.kill('SIGKILL');
  await victim!.wait(10_000);
  procs.splice(procs.indexOf(victim!), 1, await workerProcess());
  t.equal((await waitForJob(db, jobId, undefined, 90_000)).status, 'completed', 'another worker ran the parent step again');
  const out = await output(jobId);
  t.same(out.created, [false, false, false], 'the second run got the children of the first');
  t.same((await childrenOf(jobId)).map((k) => k.id), before, 'no new child job');
  t.same(out.children.map((c) => c.result?.doubled), [2, 4, 6]);
});

t.test('links are visible in SQL and GraphQL', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [7] } });
  await waitForJob(db, jobId, undefined, 60_000);
  const [kid] = await childrenOf(jobId);
  t.match(await jobRow(kid!.id), { parent_job_id: jobId }, 'ballast.jobs shows the parent');
  t.match(kid!.idempotency_key, /^ballast-child:\d+:c0$/, 'keyed by the parent step and the child key');
  const { rows: submitted } = await pool.query(`select actor from ballast.events where job_id = $1 and type = 'job_submitted'`, [kid!.id]);
  t.same(submitted, [{ actor: `job ${jobId}` }], 'its job_submitted event names the parent job as the actor');
  const server = await testServer(t, url);
  const d = await data(server, `query($id: BigInt!) { job(id: $id) { id childJobs { nodes { id parentJobId parentJob { id } parentStep { name } } } } }`,
    { id: jobId }, await token('operator'));
  t.same(d.job.childJobs.nodes, [{ id: kid!.id, parentJobId: jobId, parentJob: { id: jobId }, parentStep: { name: 'fan' } }]);
});

t.test('the CLI shows the links: status lists the child jobs and names the parent, jobs --parent lists them', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: 'child.parent', input: { ns: [3, 4] } });
  await waitForJob(db, jobId, undefined, 60_000);
  const kids = await childrenOf(jobId);
  const cli = async (args: string[]) => {
    const proc = spawnNode(t, ['src/cli.ts', ...args], { env: { ...process.env, DATABASE_URL: url } });
    const { code } = await proc.wait(60_000);
    return { code, out: proc.lines.join('\n') };
  };
  const parentStatus = await cli(['status', jobId]);
  t.equal(parentStatus.code, 0);
  t.match(parentStatus.out, /child jobs \(2\):/, 'status lists the children');
  for (const k of kids) t.match(parentStatus.out, new RegExp(`job ${k.id} +child\\.work@1 +completed`));
  const childStatus = await cli(['status', kids[0]!.id]);
  t.match(childStatus.out, new RegExp(`job ${kids[0]!.id} child\\.work@1 completed \\(child of job ${jobId}, step \\d+\\)`), 'a child names its parent');
  const listed = await cli(['jobs', '--parent', jobId, '--json']);
  t.same((JSON.parse(listed.out) as { id: number; parent_job_id: number }[]).map((j) => [String(j.id), String(j.parent_job_id)]).sort(),
    kids.map((k) => [k.id, jobId]).sort(), 'jobs --parent lists the children');
  const bad = await cli(['jobs', '--parent', 'x']);
  t.equal(bad.code, 2, 'a bad --parent is a usage error');
});

t.test('bad children are refused naming the field', async (t) => {
  const { pipeline } = await import('../src/pipeline/pipeline.ts');
  const { z } = await import('zod');
  const bad = pipeline({ name: 'child.bad', version: 1, input: z.object({ which: z.string() }) })
    .step('s', { output: z.null() }, async (ctx) => {
      if (ctx.input.which === 'twice') await ctx.startChildren([{ key: 'a', pipeline: 'child.work', input: { n: 1 } }, { key: 'a', pipeline: 'child.work', input: { n: 2 } }]);
      if (ctx.input.which === 'input') await ctx.startChildren([{ key: 'a', pipeline: 'child.work', input: { n: 'x' } }]);
      if (ctx.input.which === 'ids') await ctx.waitForChildren({ jobIds: ['1'] });
      return null;
    });
  await db.registerPipeline(bad.name, bad.version, bad.definition(), bad.inputJsonSchema());
  await testWorker(t, url, { pipelines: [bad as Pipeline<any, any>] });
  const errorOf = async (which: string) => {
    const { jobId } = await db.submitJob({ pipeline: 'child.bad', input: { which } });
    return (await waitForJob(db, jobId, undefined, 30_000)).error as { message: string };
  };
  t.match((await errorOf('twice')).message, /children\[1\]: key 'a' is given twice/);
  t.match((await errorOf('input')).message, /children\[0\]\.input/);
  t.match((await errorOf('ids')).message, /job_ids: job 1 is not a child job of step/);
});

t.test('the example of docs/pipelines.md runs', async (t) => {
  const page = pageText('docs/pipelines.md');
  const section = page.slice(page.indexOf('## Child jobs'));
  const block = codeBlocks(section, 'ts')[0]!;
  t.match(block, /startChildren/, 'the child jobs example');
  const dir = join(repoRoot, 'test', '.tmp-doc-examples');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `child-jobs-${process.pid}.ts`);
  writeFileSync(file, block.replace(/from 'ballast'/g, `from '${pathToFileURL(join(repoRoot, 'src', 'index.ts')).href}'`));
  t.teardown(() => rmSync(file, { force: true }));
  const mod = await import(pathToFileURL(file).href) as Record<string, Pipeline<any, any>>;
  const pipes = Object.values(mod);
  for (const p of pipes) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
  await testWorker(t, url, { pipelines: pipes });
  const { jobId } = await db.submitJob({ pipeline: 'gallery.build', input: { urls: ['https://example.com/a.png', 'https://example.com/b.png'] } });
  const done = await waitForJob(db, jobId, undefined, 60_000);
  t.equal(done.status, 'completed');
  t.same(done.result, ['https://example.com/a.png?w=200', 'https://example.com/b.png?w=200']);
  t.equal((await childrenOf(jobId)).length, 2);
});
