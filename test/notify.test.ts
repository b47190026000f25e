// NOTIFY ballast_events (migrations/0004_state_machines.sql): one notification per statement that appends events, carrying ids only
// ({"ids":[...]} or, past 7,500 bytes, {"min_id","max_id","count"}; progress: {"progress":{"job_id","step_id"}}), and
// the consumers, which treat a notification as a hint and read the events by position (event-stream.ts, 0004_state_machines):
// listenEvents (CLI watch, start demo; the GraphQL hub reads the same stream, test/live-order.test.ts). Events are appended directly as the owner (the audit trail refuses updates and
// deletes, not inserts), so one statement can append any number of them.
import t from 'tap';
import pg from 'pg';
import { randomBytes } from 'node:crypto';
import { freshDatabase, registerTestWorker } from './helpers.ts';
import { listenEvents, type LiveEvent } from '../src/db/events-listener.ts';

const { pool, db, url } = await freshDatabase(t);

const TENANT = 'tenant-zebra';
await db.registerPipeline('nt.p', 1, {
  steps: [{ name: 'secret_step_name', depends_on: [], max_attempts: 1, backoff_base_ms: 0, backoff_cap_ms: 0 }],
}, {});
const jobId = (await db.submitJob({ pipeline: 'nt.p', input: {}, tenantId: TENANT })).jobId;
const otherJobId = (await db.submitJob({ pipeline: 'nt.p', input: {}, tenantId: 'tenant-yak' })).jobId;

/** Appends `n` events to `job` in ONE statement (on `c`, default the pool); returns their ids, ascending. */
async function appendEvents(n: number, job = jobId, c: pg.Pool | pg.PoolClient = pool): Promise<number[]> {
  const { rows } = await c.query<{ id: string }>(
    `insert into ballast_private.events (job_id, type, status, actor)
     select $1, 'test_note', 'noted', 'notify-test' from generate_series(1, $2::int) returning id`, [job, n]);
  return rows.map((r) => Number(r.id)).sort((a, b) => a - b);
}

/** Raw LISTEN: every payload on ballast_events. drain() returns those that arrived before a fence sent after the work. */
async function rawListener(t: { teardown(fn: () => unknown): void }) {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query('listen ballast_events');
  t.teardown(() => client.end());
  let received: string[] = [];
  let fences = 0;
  let onFence: ((n: number) => void) | undefined;
  client.on('notification', (msg) => {
    const text = msg.payload ?? '';
    const fence = (JSON.parse(text) as { fence?: number }).fence;
    if (fence !== undefined) onFence?.(fence);
    else received.push(text);
  });
  return {
    async drain(): Promise<string[]> {
      const fence = ++fences;
      const seen = new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`fence ${fence} did not arrive within 20 s`)), 20_000);
        onFence = (n) => {
          if (n === fence) {
            clearTimeout(timer);
            resolve();
          }
        };
      });
      await pool.query(`select pg_notify('ballast_events', $1)`, [JSON.stringify({ fence })]);
      await seen;
      const out = received;
      received = [];
      return out;
    },
  };
}

/** Resolves once `events` holds an event with id `id` (delivery is in order, so everything before it has arrived). */
async function until(events: { id?: number | string | null }[], id: number, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!events.some((e) => Number(e.id) === id)) {
    if (Date.now() > deadline) throw new Error(`${what}: event ${id} was not delivered within 20 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Polls `sql` (as the owner) until it returns a row; throws `message` after 20 s. */
async function waitFor(sql: string, message: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while ((await pool.query(sql)).rows.length === 0) {
    if (Date.now() > deadline) throw new Error(message);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Counts deliveries per id. */
const counts = (events: { id?: number | string | null }[]) => {
  const m = new Map<number, number>();
  for (const e of events) if (e.id !== undefined && e.id !== null) m.set(Number(e.id), (m.get(Number(e.id)) ?? 0) + 1);
  return m;
};

t.test('one statement appending many events sends one notification with all their ids, ascending', async (t) => {
  const raw = await rawListener(t);
  const ids = await appendEvents(50);
  const payloads = await raw.drain();
  t.equal(payloads.length, 1, 'exactly one notification');
  t.same(JSON.parse(payloads[0]!), { ids }, 'carrying every id, ascending, and nothing else');

  await pool.query(`insert into ballast_private.events (job_id, type, actor) select $1, 'test_note', 'x' where false`, [jobId]);
  t.same(await raw.drain(), [], 'a statement that appended no event sends nothing');
});

t.test('a statement too large for an id list sends its range and count; the listener delivers every event once, in (tx, id) order', async (t) => {
  const raw = await rawListener(t);
  const live: LiveEvent[] = [];
  const errors: Error[] = [];
  const listener = await listenEvents(url, (e) => live.push(e), (err) => errors.push(err));
  t.teardown(() => listener.close());

  // Interleave two other transactions' events into the big statement's id range: the big insert stops halfway on
  // an advisory lock this test holds; meanwhile `early` appends and commits (announced before the big one) and
  // `late` appends but commits only after the big one.
  const big = 1500;
  const lockKey = 7_014_001;
  const holder = await pool.connect();
  const early = await pool.connect();
  const late = await pool.connect();
  const inserter = await pool.connect();
  t.teardown(() => { holder.release(); early.release(); late.release(); inserter.release(); });
  await holder.query('select pg_advisory_lock($1)', [lockKey]);
  const bigIds = inserter.query<{ id: string }>(
    `insert into ballast_private.events (job_id, type, status, actor, reason)
     select $1, 'test_bulk', 'noted', 'notify-test', case when g = $2 / 2 then pg_advisory_lock($3)::text end
       from generate_series(1, $2::int) g returning id`, [jobId, big, lockKey]);
  await waitFor(`select 1 from pg_locks where locktype = 'advisory' and not granted and objid = ${lockKey}
                  and database = (select oid from pg_database where datname = current_database())`,
    'the big insert never waited on the advisory lock');
  const [earlyId] = await appendEvents(1, jobId, early);
  await late.query('begin');
  const [lateId] = await appendEvents(1, jobId, late);
  await holder.query('select pg_advisory_unlock($1)', [lockKey]);
  const bulk = (await bigIds).rows.map((r) => Number(r.id)).sort((a, b) => a - b);
  await inserter.query('select pg_advisory_unlock_all()');
  await late.query('commit');
  const [fence] = await appendEvents(1);

  t.ok(earlyId! > bulk[0]! && earlyId! < bulk.at(-1)!, 'the early event\'s id lies inside the big statement\'s range');
  t.ok(lateId! > bulk[0]! && lateId! < bulk.at(-1)!, 'so does the late one\'s');
  const payloads = (await raw.drain()).map((p) => JSON.parse(p) as Record<string, unknown>);
  t.same(payloads, [{ ids: [earlyId] }, { min_id: bulk[0], max_id: bulk.at(-1), count: big }, { ids: [lateId] }, { ids: [fence] }],
    'the big statement is announced by its range and count, in commit order with the others');

  // The big statement's transaction took its id first, so its events come first, although `early` committed
  // before it: `early`'s event waited (not final) until the big transaction ended.
  const expected = [...bulk, earlyId!, lateId!, fence!];
  await until(live, fence!, 'listenEvents');
  // A listener started "now" begins at the oldest transaction still open on the server: events that committed just
  // before it started may come too when another database of the cluster holds an older transaction open (seen when
  // test runs shared a server). Events older than this test's are not what it checks.
  const mine = live.filter((e) => e.id !== null && e.id >= Math.min(...expected));
  const c = counts(mine);
  t.same([...c.values()].filter((n) => n !== 1), [], 'each event exactly once');
  t.same(mine.map((e) => e.id), expected, 'every event, in (tx, id) order: the big transaction\'s, then early, late, fence');
  const sample = live.find((e) => e.id === bulk[0])!;
  t.match(sample, { id: bulk[0], job_id: Number(jobId), step_id: null, type: 'test_bulk', status: 'noted', tenant_id: TENANT, step_name: null },
    'an event is delivered as a row: ids, type, status, tenant');
  t.type(sample.at, 'string', 'with its time');
  t.same(errors, [], 'no errors');
});

t.test('payloads carry ids only: no tenant, step name, status or progress value', async (t) => {
  const raw = await rawListener(t);
  const live: LiveEvent[] = [];
  const listener = await listenEvents(url, (e) => live.push(e));
  t.teardown(() => listener.close());

  const worker = await registerTestWorker(db, `notify-worker-${randomBytes(3).toString('hex')}`);
  const [step] = await db.getSteps(jobId);
  const claim = await db.claimStep(step!.id, worker, 60_000);
  t.ok(claim, 'the step was claimed');
  t.ok(await db.reportProgress(claim!.attemptId, { done: 3, secret: 'progress-value-zz' }), 'progress stored');
  const [fence] = await appendEvents(1);
  const payloads = await raw.drain();
  const text = payloads.join('\n');
  for (const word of [TENANT, 'secret_step_name', 'progress-value-zz', 'running', 'step_running', 'tenant']) {
    t.notOk(text.includes(word), `no payload mentions ${word}`);
  }
  const parsed = payloads.map((p) => JSON.parse(p) as Record<string, unknown>);
  t.ok(parsed.length >= 2, 'the claim\'s events and the progress report were announced');
  for (const p of parsed) t.ok('ids' in p || 'progress' in p, `payload ${JSON.stringify(p)} is an id list or a progress report`);
  t.same(parsed.find((p) => 'progress' in p), { progress: { job_id: Number(jobId), step_id: Number(step!.id) } },
    'a progress report names its job and step');

  await until(live, fence!, 'listenEvents');
  // Progress reports are outside the event order: the report may be read in the round trip after the fence's.
  const deadline = Date.now() + 10_000;
  while (!live.some((e) => e.type === 'step_progress') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const progress = live.filter((e) => e.type === 'step_progress');
  t.same(progress, [{ id: null, tx: null, job_id: Number(jobId), step_id: Number(step!.id), type: 'step_progress', status: 'running',
    tenant_id: TENANT, step_name: 'secret_step_name', at: null, progress: { done: 3, secret: 'progress-value-zz' } }],
    'the listener reads the progress value from the step');
  t.ok(live.some((e) => e.type === 'step_running' && e.step_name === 'secret_step_name'), 'and the claim\'s events as rows');
});

t.test('a login bound to a tenant resolves only its own tenant\'s events', async (t) => {
  const login = `ballast_t_login_${randomBytes(4).toString('hex')}`;
  await pool.query(`create role ${login} login password 'pw' in role ballast_client`);
  t.teardown(async () => {
    await pool.query(`delete from ballast_private.role_tenants where role_name = $1`, [login]);
    await pool.query(`drop owned by ${login}`).catch(() => {});
    await pool.query(`drop role if exists ${login}`);
  });
  await pool.query('select ballast.bind_role_tenant($1, $2)', [login, TENANT]);
  const loginUrl = new URL(url);
  loginUrl.username = login;
  loginUrl.password = 'pw';
  const live: LiveEvent[] = [];
  const errors: Error[] = [];
  const listener = await listenEvents(loginUrl.toString(), (e) => live.push(e), (err) => errors.push(err));
  t.teardown(() => listener.close());

  const theirs = await appendEvents(3, otherJobId);
  const ours = await appendEvents(2);
  await until(live, ours.at(-1)!, 'tenant login');
  t.same(live.map((e) => e.id), ours, 'only its tenant\'s events, not another tenant\'s');
  t.notOk(live.some((e) => theirs.includes(e.id!)), 'none of the other tenant\'s');
  t.same(errors, [], 'no errors');
});
