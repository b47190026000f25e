// Debounce and throttle of submissions by key (migrations/0039_timing.sql, issue 15 item 9): a burst of submissions
// with one debounce key makes one scheduled job, whose input is the newest and whose start is pushed to a quiet period
// after the last (bounded by max_wait_ms); a throttle key lets one job through per period. Concurrency-safe, audited.
// On the controllable clock in SQL, and with worker processes on the real clock.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { freshDatabase, pgError, registerTestWorker, spawnNode, waitForJob } from './helpers.ts';
import { timingPipelines } from './fixtures/timing-tasks.ts';
import { data, testServer, token } from './support/graphql.ts';

const { url, db, pool } = await freshDatabase(t);
for (const p of timingPipelines) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const fixture = fileURLToPath(new URL('./fixtures/timing-worker.ts', import.meta.url));
const TASKS = timingPipelines.map((p) => `ballast_step:${p.name}@${p.version}`);

const T0 = Date.parse('2031-09-01T10:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();
type TapTest = { teardown: (fn: () => unknown) => void };
async function clockAt(c: pg.PoolClient, ms: number) {
  await c.query(`select set_config('ballast.now', $1, false)`, [iso(ms)]);
}
async function onClock(t: TapTest, ms = 0): Promise<pg.PoolClient> {
  const c = await pool.connect();
  t.teardown(async () => {
    await c.query('reset ballast.now');
    c.release();
  });
  await clockAt(c, ms);
  return c;
}
const debounced = async (c: pg.PoolClient, key: string, n: number, opts: Record<string, unknown> = {}) =>
  (await c.query(`select * from ballast.submit_job('timing.echo', $1::jsonb, p_debounce => $2::jsonb)`,
    [JSON.stringify({ n }), JSON.stringify({ key, quiet_ms: 1000, ...opts })])).rows[0];
const jobOf = async (c: pg.PoolClient, jobId: string) =>
  (await c.query(`select status, input, run_at from ballast.jobs where id = $1`, [jobId])).rows[0];

t.test('a burst with one debounce key makes one job, with the last input, a quiet period after the last', async (t) => {
  const c = await onClock(t);
  const worker = await registerTestWorker(db, 'db-burst');
  const first = await debounced(c, 'doc:1', 1);
  t.match(first, { created: true, status: 'scheduled' }, 'the first submission makes a scheduled job');
  t.equal(new Date((await jobOf(c, first.job_id)).run_at).toISOString(), iso(1000), 'due a quiet period later');
  const other = await debounced(c, 'doc:2', 10);
  t.not(other.job_id, first.job_id, 'another key: another job');
  for (const [at, n] of [[300, 2], [700, 3]] as const) {
    await clockAt(c, at);
    const again = await debounced(c, 'doc:1', n);
    t.same([again.job_id, again.created, again.status], [first.job_id, false, 'scheduled'], `at +${at} ms: the same job`);
  }
  const job = await jobOf(c, first.job_id);
  t.same(job.input, { n: 3 }, 'its input is the newest');
  t.equal(new Date(job.run_at).toISOString(), iso(1700), 'its start moved to a quiet period after the last');
  const { rows: steps } = await c.query(`select next_run_at from ballast.steps where job_id = $1`, [first.job_id]);
  t.equal(new Date(steps[0].next_run_at).toISOString(), iso(1700), 'and its step\'s');
  const { rows: events } = await c.query(`select type, status, data from ballast.events where job_id = $1 and type = 'job_debounced' order by id`, [first.job_id]);
  t.same(events.map((e) => [e.data.debounce_key, e.data.submissions, new Date(e.data.run_at).toISOString()]),
    [['doc:1', 2, iso(1300)], ['doc:1', 3, iso(1700)]], 'each replacement is audited (job_debounced: key, count, new start)');

  // At +1000 (the first start) nothing runs; at +1700 it does, once, with the last input.
  await clockAt(c, 1000);
  let r = (await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', $2, 10)`, [worker, TASKS])).rows[0];
  t.same(r.claims.filter((x: { job_id: number }) => x.job_id === Number(first.job_id)), [], 'not at the first start time');
  await clockAt(c, 1700);
  r = (await c.query(`select * from ballast.settle_and_claim($1, '{}', '{}', '{}', '{}', $2, 10)`, [worker, TASKS])).rows[0];
  const mine = r.claims.filter((x: { job_id: number }) => x.job_id === Number(first.job_id));
  t.equal(mine.length, 1, 'claimed at the pushed start');
  t.same(mine[0].input, { n: 3 }, 'with the last input');

  // Started: the next submission makes a new job.
  const after = await debounced(c, 'doc:1', 4);
  t.equal(after.created, true, 'a submission after the start makes a new job');
  t.not(after.job_id, first.job_id);
  for (const x of r.claims) await c.query(`select ballast.release_attempt($1, 'test cleanup')`, [x.attempt_id]).catch(() => {});
  await db.cancelJob(String(after.job_id), 'test cleanup');
  await db.cancelJob(String(other.job_id), 'test cleanup');
  await db.cancelJob(String(first.job_id), 'test cleanup');
});

t.test('max_wait_ms bounds how far a burst can push the start', async (t) => {
  const c = await onClock(t, 10_000);
  const first = await debounced(c, 'doc:max', 1, { max_wait_ms: 2500 });
  for (const at of [900, 1800, 2400]) {
    await clockAt(c, 10_000 + at);
    await debounced(c, 'doc:max', at, { max_wait_ms: 2500 });
  }
  t.equal(new Date((await jobOf(c, first.job_id)).run_at).toISOString(), iso(12_500), 'the start stops at the first submission + max_wait_ms');
  await db.cancelJob(String(first.job_id), 'test cleanup');
});

t.test('two sessions debouncing one key at once: one job', async (t) => {
  const a = await onClock(t, 20_000);
  const b = await onClock(t, 20_000);
  await a.query('begin');
  await b.query('begin');
  const first = await debounced(a, 'doc:race', 1);
  const second = debounced(b, 'doc:race', 2); // waits for a's lock
  await new Promise((r) => setTimeout(r, 200));
  await a.query('commit');
  const got = await second;
  await b.query('commit');
  t.equal(got.job_id, first.job_id, 'the second session found the first one\'s job');
  t.same((await jobOf(a, first.job_id)).input, { n: 2 }, 'with its input');
  const { rows } = await pool.query(`select count(*)::int as n from ballast_private.jobs where debounce_key = 'doc:race'`);
  t.equal(rows[0].n, 1, 'one job for the key');
  await db.cancelJob(String(first.job_id), 'test cleanup');
});

t.test('throttle: one job per key per period, later ones dropped (audited) and returned', async (t) => {
  const c = await onClock(t, 30_000);
  const throttled = async (n: number) =>
    (await c.query(`select * from ballast.submit_job('timing.echo', $1::jsonb, p_throttle => '{"key": "feed:7", "period_ms": 1000}')`,
      [JSON.stringify({ n })])).rows[0];
  const first = await throttled(1);
  t.match(first, { created: true, status: 'queued' }, 'the first one is a job, queued at once');
  await clockAt(c, 30_999);
  const dropped = await throttled(2);
  t.same([dropped.job_id, dropped.created], [first.job_id, false], 'within the period: dropped, the first job returned');
  t.same((await jobOf(c, first.job_id)).input, { n: 1 }, 'the first job keeps its input');
  const { rows: ev } = await c.query(`select data from ballast.events where job_id = $1 and type = 'job_throttled'`, [first.job_id]);
  t.same(ev.map((e) => [e.data.throttle_key, new Date(e.data.next_allowed_at).toISOString()]), [['feed:7', iso(31_000)]], 'audited (job_throttled)');
  await clockAt(c, 31_000);
  const next = await throttled(3);
  t.equal(next.created, true, 'after the period: a new job');
  for (const j of [first, next]) await db.cancelJob(String(j.job_id), 'test cleanup');
});

t.test('bad options are refused, naming the field', async (t) => {
  const cases: [string, RegExp][] = [
    [`p_debounce => '{"quiet_ms": 100}'`, /^debounce\.key: is missing or not a string/],
    [`p_debounce => '{"key": "", "quiet_ms": 100}'`, /^debounce\.key: is empty/],
    [`p_debounce => '{"key": "k", "quiet_ms": -1}'`, /^debounce\.quiet_ms: -1 is not a number of milliseconds/],
    [`p_debounce => '{"key": "k", "quiet_ms": 100, "max_wait_ms": 50}'`, /^debounce\.max_wait_ms: 50 is not a number of milliseconds from quiet_ms/],
    [`p_debounce => '{"key": "k", "quiet_ms": 100, "later": 1}'`, /^debounce\.later: is not an option of debounce/],
    [`p_debounce => '{"key": "k", "quiet_ms": 100}', p_delay_ms => 5`, /^debounce: is given with run_at or delay_ms/],
    [`p_debounce => '{"key": "k", "quiet_ms": 100}', p_throttle => '{"key": "k", "period_ms": 1}'`, /^debounce: is given with throttle/],
    [`p_throttle => '{"key": "k", "period_ms": 1}', p_idempotency_key => 'x'`, /^throttle: is given with idempotency_key/],
    [`p_throttle => '[]'`, /^throttle: is array, not an object/],
  ];
  for (const [args, message] of cases) {
    const err = await pgError(() => pool.query(`select * from ballast.submit_job('timing.echo', '{"n": 1}', ${args})`));
    t.equal(err.code, 'BA002', `${args}: BA002`);
    t.match(err.message, message, `${args}: ${err.message}`);
  }
  const viaApi = await pgError(() => db.submitJob({ pipeline: 'timing.echo', input: { n: 1 }, debounce: { key: 'k', quietMs: -5 } }));
  t.match(viaApi, { name: 'InvalidInputError', message: /^debounce\.quiet_ms: / }, 'BallastDb.submitJob: the same error');
});

t.test('GraphQL and the CLI take debounce and throttle', async (t) => {
  const server = await testServer(t, url);
  const bearer = await token('client', 'acme');
  const m = `mutation($n: Int!) { submitJob(input: { pipeline: "timing.echo", input: { n: $n }, debounce: { key: "doc:gql", quietMs: 600000 } }) { jobId created status } }`;
  const one = (await data(server, m, { n: 1 }, bearer)).submitJob;
  const two = (await data(server, m, { n: 2 }, bearer)).submitJob;
  t.same([two.jobId, two.created, two.status], [one.jobId, false, 'scheduled'], 'GraphQL debounce: the same job');
  const th = `mutation { submitJob(input: { pipeline: "timing.echo", input: { n: 3 }, throttle: { key: "feed:gql", periodMs: 600000 } }) { jobId created } }`;
  const t1 = (await data(server, th, {}, bearer)).submitJob;
  const t2 = (await data(server, th, {}, bearer)).submitJob;
  t.same([t2.jobId, t2.created], [t1.jobId, false], 'GraphQL throttle: the same job');

  const env = { ...process.env, DATABASE_URL: url, LOG_LEVEL: 'silent' };
  const run = async (n: number) => {
    const proc = spawnNode(t, ['src/cli.ts', 'submit', 'timing.echo', '--input', JSON.stringify({ n }), '--debounce', 'doc:cli', '--quiet', '10m', '--max-wait', '1h', '--json'], { env });
    const { code } = await proc.wait(30_000);
    t.equal(code, 0, proc.stderr());
    return JSON.parse(proc.lines.join('\n')) as { jobId: string; created: boolean };
  };
  const c1 = await run(1);
  const c2 = await run(2);
  t.same([c2.jobId, c2.created], [c1.jobId, false], 'CLI --debounce: the same job');
  const proc = spawnNode(t, ['src/cli.ts', 'submit', 'timing.echo', '--input', '{"n": 4}', '--throttle', 'feed:cli', '--period', '1h', '--json'], { env });
  t.equal((await proc.wait(30_000)).code, 0, proc.stderr());
  const { rows } = await pool.query(`select id from ballast.jobs where status not in ('completed', 'failed', 'cancelled', 'partially_completed')`);
  for (const r of rows) await db.cancelJob(String(r.id), 'test cleanup');
});

t.test('worker processes: a burst of updates to one document runs once, with the last input', async (t) => {
  const procs = [0, 1].map(() => spawnNode(t, [fixture], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json' } }));
  for (const p of procs) await p.waitForLine((line) => (line.includes('worker started') ? true : undefined), 60_000);
  const ids = new Set<string>();
  for (let n = 1; n <= 6; n++) {
    ids.add((await db.submitJob({ pipeline: 'timing.echo', input: { n, doc: 'readme' }, debounce: { key: 'doc:readme', quietMs: 800 } })).jobId);
    await new Promise((r) => setTimeout(r, 100));
  }
  t.equal(ids.size, 1, 'six submissions, one job');
  const [jobId] = [...ids];
  const done = await waitForJob(db, jobId!, undefined, 30_000);
  t.equal(done.status, 'completed');
  t.same(done.result, { n: 6, doc: 'readme' }, 'it ran with the last input');
  const { rows } = await pool.query(`select count(*)::int as n from ballast.attempts where job_id = $1`, [jobId]);
  t.equal(rows[0].n, 1, 'once');
});
