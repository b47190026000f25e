// Live updates have one order, and a resume from any point of it returns exactly the rest (migrations/0004_state_machines.sql,
// src/db/event-stream.ts, src/server/live/). Transactions are made to commit in another order than they took their
// event ids, with events held back by an open transaction while subscribers connect and reconnect, and every
// subscriber (live from the start, resumed at every position, jobUpdated, jobsOnly) must see the same sequence as
// `order by tx, id` in the database, none missing, none twice. Then backpressure: a client that stops reading gets
// SUBSCRIBER_TOO_SLOW with the point to resume from, and resuming there loses nothing.
import t from 'tap';
import WebSocket from 'ws';
import { freshDatabase } from './helpers.ts';
import { testServer, token, WsConnection, type Subscription } from './support/graphql.ts';

const { url, pool, db } = await freshDatabase(t);
const server = await testServer(t, url);
const TENANT = 'order-co';
const client = await token('client', TENANT);

await db.registerPipeline('lo.p', 1, {
  steps: [{ name: 'only', depends_on: [], max_attempts: 1, backoff_base_ms: 0, backoff_cap_ms: 0 }],
}, {});
const jobA = (await db.submitJob({ pipeline: 'lo.p', input: {}, tenantId: TENANT })).jobId;
const jobB = (await db.submitJob({ pipeline: 'lo.p', input: {}, tenantId: TENANT })).jobId;
const [stepA] = await db.getSteps(jobA);

const FIELDS = 'type eventId jobId stepId status replayed';
const TENANT_SUB = `subscription ($after: BigInt, $jobsOnly: Boolean) { tenantEvents(after: $after, jobsOnly: $jobsOnly) { ${FIELDS} } }`;
const JOB_SUB = `subscription ($id: BigInt!, $after: BigInt) { jobUpdated(jobId: $id, after: $after) { ${FIELDS} } }`;

/** Appends events (as the owner, on `c`) in one statement; returns their ids. */
async function append(c: { query: typeof pool.query }, job: string, n: number, type = 'test_note', step: string | null = null): Promise<string[]> {
  const { rows } = await c.query<{ id: string }>(
    `insert into ballast_private.events (job_id, step_id, type, status, actor)
     select $1, $2, $3, 'noted', 'order-test' from generate_series(1, $4::int) returning id::text as id`, [job, step, type, n]);
  return rows.map((r) => r.id);
}

/** The tenant's events after event `after` (0: all) in the database's delivery order. */
async function dbOrder(after: string, job: string | null = null, jobsOnly = false): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>(
    `with p as (select coalesce((select x.tx from ballast_private.events x where x.id = $2), '0'::xid8) as tx,
                       coalesce((select x.id from ballast_private.events x where x.id = $2), 0) as id)
     select e.id::text as id from ballast_private.events e join ballast.jobs j on j.id = e.job_id, p
      where j.tenant_id = $1 and (e.tx, e.id) > (p.tx, p.id)
        and ($3::bigint is null or e.job_id = $3) and (not $4 or e.step_id is null)
      order by e.tx, e.id`, [TENANT, after, job, jobsOnly]);
  return rows.map((r) => r.id);
}

const ids = (s: Subscription) => s.messages.filter((m) => m.type !== 'snapshot' && m.eventId !== null).map((m) => m.eventId as string);
const has = (id: string) => (ms: any[]) => ms.some((m) => m.eventId === id);

t.test('out-of-order commits: live and resumed subscribers all see (tx, id) order, none missing or twice', async (t) => {
  const ws = new WsConnection(server, client);
  t.teardown(() => ws.close());
  const [start] = await append(pool, jobA, 1, 'test_start');
  const live = ws.subscribe(TENANT_SUB, {});
  const fromStart = ws.subscribe(TENANT_SUB, { after: start });
  const jobsOnly = ws.subscribe(TENANT_SUB, { after: start, jobsOnly: true });
  const jobFeed = ws.subscribe(JOB_SUB, { id: jobA, after: start });
  await jobFeed.until((ms) => ms.some((m) => m.type === 'snapshot'), 10_000, 'the snapshot');
  // A fence shows the live subscriber is registered: it receives it.
  const [fence0] = await append(pool, jobB, 1, 'test_fence');
  await live.until(has(fence0!), 10_000, 'the first fence');

  // Three transactions: `a` takes its transaction id first (one event), `b` appends and commits, `a` appends more
  // (higher ids than b's) and commits, `c` appends inside a savepoint (its tx is still the top-level one).
  // Three events committed one by one before the out-of-order part: positions to resume from while it is open.
  for (const job of [jobA, jobB, jobA]) await append(pool, job, 1);
  const a = await pool.connect();
  const b = await pool.connect();
  const c = await pool.connect();
  t.teardown(() => { a.release(); b.release(); c.release(); });
  await a.query('begin');
  const a1 = await append(a, jobA, 1, 'step_note', stepA!.id);
  await b.query('begin');
  const b1 = await append(b, jobB, 3);
  await c.query('begin');
  await c.query('savepoint s');
  const c1 = await append(c, jobA, 2);
  await c.query('release savepoint s');
  await b.query('commit');
  const a2 = await append(a, jobA, 2);
  await c.query('commit');
  // b and c have committed, a has not: their events wait. Reconnect now at every position seen so far.
  await new Promise((r) => setTimeout(r, 300));
  server.hub.poke();
  await server.hub.idle();
  const heldIds = [...b1, ...c1];
  t.notOk(ids(live).some((id) => heldIds.includes(id)), 'events of transactions that committed after a began are held while a is open');
  const seenMidway = ids(live);
  t.equal(seenMidway.slice(seenMidway.indexOf(fence0!)).length, 4, 'the live subscriber has the fence and the three events committed before a began');
  const resumedMidway = seenMidway.map((after) => ({ after, sub: ws.subscribe(TENANT_SUB, { after }) }));
  await a.query('commit');
  const [fence] = await append(pool, jobB, 1, 'test_fence');

  const expectAll = await dbOrder(start!);
  t.ok(expectAll.indexOf(a2[0]!) < expectAll.indexOf(b1[0]!), 'the order is by transaction: a\'s later ids come before b\'s');
  t.not(expectAll.join(), [...expectAll].sort((x, y) => Number(x) - Number(y)).join(), 'so it differs from id order');

  for (const [name, sub] of [['live', live], ['resumed from the start', fromStart]] as const) {
    await sub.until(has(fence!), 10_000, `${name}: the fence`);
    t.same(sub.errors, [], `${name}: no errors`);
  }
  const liveIds = ids(live);
  // Live from when it registered: `start` or the event after it, depending on whether the stream had read `start` yet.
  const fromZero = await dbOrder('0');
  t.same(liveIds, fromZero.slice(fromZero.indexOf(liveIds[0]!)), 'live: the database order from its first event, none missing or twice');
  t.ok(liveIds[0] === start || liveIds[0] === expectAll[0], 'live starts at the start event or the one after it');
  t.same(ids(fromStart), expectAll, 'resumed from the start: the whole sequence');
  for (const { after, sub } of resumedMidway) {
    await sub.until(has(fence!), 10_000, `resumed after ${after}: the fence`);
    t.same(ids(sub), await dbOrder(after), `resumed after ${after} while a was open: exactly what followed it`);
  }
  // Reconnect at every position of the final sequence.
  const everywhere = expectAll.map((after) => ({ after, sub: ws.subscribe(TENANT_SUB, { after }) }));
  for (const { after, sub } of everywhere) {
    await sub.until((ms) => after === fence || has(fence!)(ms), 10_000, `resumed after ${after}: the fence`);
    await server.hub.idle();
    t.same(ids(sub), expectAll.slice(expectAll.indexOf(after) + 1), `resumed after ${after}: the rest of the sequence`);
  }
  await jobsOnly.until(has(fence!), 10_000, 'jobsOnly: the fence');
  t.same(ids(jobsOnly), await dbOrder(start!, null, true), 'jobsOnly: the job-level events in the same order, no step events');
  t.notOk(ids(jobsOnly).includes(a1[0]!), 'jobsOnly: the step event is left out');
  const [jobFence] = await append(pool, jobA, 1, 'test_fence');
  await jobFeed.until(has(jobFence!), 10_000, 'jobUpdated: its fence');
  const jobIds = jobFeed.messages.filter((m) => m.eventId !== null && m.type !== 'snapshot').map((m) => m.eventId);
  t.same(jobIds, await dbOrder(start!, jobA), 'jobUpdated: the job\'s events in the same order, none twice');
});

t.test('jobUpdated while events are held: what the snapshot shows but was not final follows it, as a resume would return', async (t) => {
  const ws = new WsConnection(server, client);
  t.teardown(() => ws.close());
  const [before] = await append(pool, jobA, 1, 'test_before');
  const old = await pool.connect();
  t.teardown(() => old.release());
  await old.query('begin');
  await append(old, jobB, 1, 'test_old'); // an older writing transaction, still open: holds what commits after it
  const held = await append(pool, jobA, 2, 'test_held');
  const sub = ws.subscribe(JOB_SUB, { id: jobA, after: before });
  const snap = await sub.until((ms) => ms.some((m) => m.type === 'snapshot'), 10_000, 'the snapshot');
  t.notOk(snap.some((m) => held.includes(m.eventId)), 'the held events are not replayed before the snapshot');
  await old.query('commit');
  await sub.until((ms) => held.every((id) => ms.some((m) => m.eventId === id)), 10_000, 'the held events');
  const afterSnapshot = sub.messages.slice(sub.messages.findIndex((m) => m.type === 'snapshot') + 1).map((m) => m.eventId);
  const snapshotId = sub.messages.find((m) => m.type === 'snapshot').eventId as string;
  t.same(afterSnapshot, await dbOrder(snapshotId, jobA), 'after the snapshot: exactly what a resume from its eventId returns');
  t.same(afterSnapshot, held, 'the two held events, once each');
});

t.test('a client that stops reading gets SUBSCRIBER_TOO_SLOW with its resume point, and loses nothing by resuming', async (t) => {
  const slow = await testServer(t, url, { liveLimits: { maxBufferedBytes: 64 * 1024 } });
  const [start] = await append(pool, jobB, 1, 'test_start');
  // A raw graphql-ws client that can stop reading its socket.
  const sock = new WebSocket(slow.wsUrl, 'graphql-transport-ws');
  t.teardown(() => sock.terminate());
  const frames: any[] = [];
  sock.on('message', (m) => frames.push(JSON.parse(String(m))));
  await new Promise((r) => sock.once('open', r));
  sock.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${client}` } }));
  await waitFor(() => frames.some((f) => f.type === 'connection_ack'), 'connection_ack');
  sock.send(JSON.stringify({ id: 's1', type: 'subscribe', payload: { query: TENANT_SUB, variables: { after: start } } }));
  const [probe] = await append(pool, jobB, 1, 'test_probe');
  await waitFor(() => frames.some((f) => f.payload?.data?.tenantEvents?.eventId === probe), 'the first live message');

  (sock as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
  // About 8 MB of messages, in 20 statements: far more than the socket buffers and the 64 KiB limit hold.
  for (let i = 0; i < 20; i++) await append(pool, jobB, 2000, 'test_flood');
  const [last] = await append(pool, jobB, 1, 'test_last');
  await new Promise((r) => setTimeout(r, 1500));
  (sock as unknown as { _socket: { pause(): void; resume(): void } })._socket.resume();
  await waitFor(() => frames.some((f) => f.type === 'error'), 'the SUBSCRIBER_TOO_SLOW error', 30_000);
  const error = frames.find((f) => f.type === 'error');
  t.equal(error.id, 's1');
  t.equal(error.payload[0].extensions.code, 'SUBSCRIBER_TOO_SLOW');
  const got = frames.filter((f) => f.type === 'next').map((f) => f.payload.data.tenantEvents.eventId as string);
  t.equal(error.payload[0].extensions.resumeAfter, got.at(-1), 'resumeAfter is the last event the client received');
  t.ok(frames.indexOf(error) === frames.length - 1 || frames.slice(frames.indexOf(error) + 1).every((f) => f.id !== 's1'), 'nothing follows the error');
  const memory = process.memoryUsage().rss;
  t.ok(got.length < 40_001, `the client got ${got.length} messages before being cut off`);

  // Resume where it said: the rest arrives, and the whole is the database order.
  sock.send(JSON.stringify({ id: 's2', type: 'subscribe', payload: { query: TENANT_SUB, variables: { after: error.payload[0].extensions.resumeAfter } } }));
  await waitFor(() => frames.some((f) => f.type === 'error' && f.id === 's2') ||
    frames.some((f) => f.id === 's2' && f.payload?.data?.tenantEvents?.eventId === last), 'the resumed subscription to reach the last event', 30_000);
  const resumedError = frames.find((f) => f.type === 'error' && f.id === 's2');
  if (resumedError) {
    // More than the replay limit happened after the resume point: the server says so instead of sending a part.
    t.equal(resumedError.payload[0].extensions.code, 'REPLAY_TOO_LARGE', 'a resume beyond the replay limit is refused with a code');
  } else {
    const rest = frames.filter((f) => f.id === 's2' && f.type === 'next').map((f) => f.payload.data.tenantEvents.eventId as string);
    t.same([...got, ...rest], await dbOrder(start!), 'received before the cut plus the resume: every event once, in order');
  }
  t.comment(`test process RSS ${Math.round(memory / 1e6)} MB`);
});

async function waitFor(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
