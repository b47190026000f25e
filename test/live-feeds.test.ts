// Subscriptions as src/server/live/ serves them: documents of any shape (aliases, fragments, directives,
// __typename) rendered once per group of alike subscribers, validation and variable errors as graphql-ws errors,
// throttled progress, queries still answered over the same socket, a reused operation id refused, forged
// notifications harmless, and two API processes on one database delivering the same sequence.
import t from 'tap';
import pg from 'pg';
import WebSocket from 'ws';
import { freshDatabase, registerTestWorker } from './helpers.ts';
import { testServer, token, WsConnection } from './support/graphql.ts';

const { url, pool, db } = await freshDatabase(t);
const server = await testServer(t, url);
const TENANT = 'feeds-co';
const client = await token('client', TENANT);
const operator = await token('operator');

await db.registerPipeline('lf.p', 1, {
  steps: [{ name: 'only', depends_on: [], max_attempts: 1, backoff_base_ms: 0, backoff_cap_ms: 0 }],
}, {});
const jobId = (await db.submitJob({ pipeline: 'lf.p', input: {}, tenantId: TENANT })).jobId;

async function append(job: string, n: number, type = 'test_note'): Promise<string[]> {
  const { rows } = await pool.query<{ id: string }>(
    `insert into ballast_private.events (job_id, type, status, actor)
     select $1, $2, 'noted', 'feeds-test' from generate_series(1, $3::int) returning id::text as id`, [job, type, n]);
  return rows.map((r) => r.id);
}

t.test('documents of any shape, one rendering per group of alike subscribers', async (t) => {
  const ws = new WsConnection(server, client);
  t.teardown(() => ws.close());
  const plain = `subscription { tenantEvents { type eventId } }`;
  const fancy = `subscription Fancy($withStatus: Boolean!, $skipAt: Boolean = true) {
      feed: tenantEvents { __typename ...Ids kind: type status @include(if: $withStatus) at @skip(if: $skipAt) } }
    fragment Ids on JobChange { eventId id2: eventId jobId }`;
  const groupsBefore = server.hub.groups;
  const a = ws.subscribe(plain);
  const b = ws.subscribe(plain);
  const c = ws.subscribe(fancy, { withStatus: true });
  await until(() => server.subscriptions() >= 3);
  const [warm] = await append(jobId, 1, 'test_warm');
  for (const s of [a, b, c]) await s.until((ms) => ms.some((m) => m.eventId === warm), 10_000, 'the warm-up event');
  t.equal(server.hub.groups - groupsBefore, 2, 'two groups: the two plain subscriptions share one');
  const [id] = await append(jobId, 1, 'test_shape');
  await c.until((ms) => ms.some((m) => m.eventId === id), 10_000, 'the event');
  await a.until((ms) => ms.some((m) => m.eventId === id), 10_000, 'the event');
  t.same(a.messages.find((m) => m.eventId === id), { type: 'test_shape', eventId: id }, 'the plain shape');
  t.same(c.messages.find((m) => m.eventId === id),
    { __typename: 'JobChange', eventId: id, id2: id, jobId, kind: 'test_shape', status: 'noted' },
    'aliases, a fragment, @include and @skip, __typename: keys in selection order');
  t.same(Object.keys(c.messages.find((m) => m.eventId === id)), ['__typename', 'eventId', 'id2', 'jobId', 'kind', 'status']);
});

t.test('invalid documents and variables are graphql-ws errors; queries still run over the socket', async (t) => {
  const ws = new WsConnection(server, client);
  t.teardown(() => ws.close());
  const unknown = ws.subscribe(`subscription { tenantEvents { nope } }`);
  await unknown.ended();
  t.match(unknown.errors[0].message, /Cannot query field "nope" on type "JobChange"/, 'an unknown field is named');
  const badVar = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { type } }`, {});
  await badVar.ended();
  t.match(badVar.errors[0].message, /\$id/, 'a missing variable is named');
  const twoFields = ws.subscribe(`subscription { tenantEvents { type } jobUpdated(jobId: "1") { type } }`);
  await twoFields.ended();
  t.match(twoFields.errors[0].message, /only one top level field/, 'a subscription has one root field');
  const badThrottle = ws.subscribe(`subscription { tenantEvents(progressEveryMs: 5) { type } }`);
  await badThrottle.ended();
  t.match(badThrottle.errors[0], { extensions: { code: 'BAD_USER_INPUT' } }, 'progressEveryMs below the minimum is refused');
  t.match(badThrottle.errors[0].message, /progressEveryMs must be 0 .* or at least 50, got 5/);
  const unknownAfter = ws.subscribe(`subscription { tenantEvents(after: "999999999") { type } }`);
  await unknownAfter.ended();
  t.match(unknownAfter.errors[0], { extensions: { code: 'NOT_FOUND' } }, 'an `after` that is no event is NOT_FOUND');
  const result = await new Promise<any>((resolve, reject) => {
    let value: any;
    ws.client.subscribe({ query: `query ($id: BigInt!) { job(id: $id) { id status } }`, variables: { id: jobId } },
      { next: (v) => (value = v), error: reject, complete: () => resolve(value) });
  });
  t.same(result.data.job, { id: jobId, status: 'queued' }, 'a query over the websocket is answered by graphql-ws');
});

t.test('a reused operation id closes the socket with 4409; a complete ends one subscription only', async (t) => {
  const sock = new WebSocket(server.wsUrl, 'graphql-transport-ws');
  const frames: any[] = [];
  sock.on('message', (m) => frames.push(JSON.parse(String(m))));
  const closed = new Promise<number>((r) => sock.once('close', (code) => r(code)));
  await new Promise((r) => sock.once('open', r));
  sock.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${client}` } }));
  await until(() => frames.some((f) => f.type === 'connection_ack'));
  const subscribe = (id: string) => sock.send(JSON.stringify({ id, type: 'subscribe', payload: { query: 'subscription { tenantEvents { eventId } }' } }));
  subscribe('x');
  subscribe('y');
  await until(() => server.subscriptions() >= 2);
  sock.send(JSON.stringify({ id: 'x', type: 'complete' }));
  const [id] = await append(jobId, 1);
  await until(() => frames.some((f) => f.id === 'y' && f.payload?.data?.tenantEvents?.eventId === id));
  t.notOk(frames.some((f) => f.id === 'x' && f.type === 'next'), 'the completed subscription got nothing more');
  subscribe('y');
  t.equal(await closed, 4409, 'subscribing again with a running id closes the socket');
  await until(() => server.subscriptions() === 0);
  t.pass('and its subscriptions are gone');
});

t.test('progress: every report by default on jobUpdated, throttled with progressEveryMs, none on tenantEvents unless asked', async (t) => {
  const ws = new WsConnection(server, client);
  t.teardown(() => ws.close());
  const pJob = (await db.submitJob({ pipeline: 'lf.p', input: {}, tenantId: TENANT })).jobId;
  const all = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { type progress } }`, { id: pJob });
  const slow = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id, progressEveryMs: 60000) { type progress } }`, { id: pJob });
  const tenantQuiet = ws.subscribe(`subscription { tenantEvents { type eventId } }`);
  const tenantProgress = ws.subscribe(`subscription { tenantEvents(progressEveryMs: 0) { type progress } }`);
  await until(() => server.subscriptions() >= 4);
  for (const s of [all, slow]) await s.until((ms) => ms.some((m) => m.type === 'snapshot'), 10_000, 'the snapshot');
  const [fence0] = await append(pJob, 1, 'test_fence');
  await tenantQuiet.until((ms) => ms.some((m) => m.eventId === fence0), 10_000, 'the fence');
  const worker = await registerTestWorker(db, 'feeds-worker');
  const [step] = await db.getSteps(pJob);
  const claim = (await db.claimStep(step!.id, worker, 60_000))!;
  for (let i = 1; i <= 10; i++) {
    await db.reportProgress(claim.attemptId, { pct: i * 10 });
    await new Promise((r) => setTimeout(r, 30));
  }
  const final = (ms: any[]) => ms.some((m) => m.type === 'step_progress' && m.progress.pct === 100);
  await all.until(final, 10_000, 'the last progress report');
  await tenantProgress.until(final, 10_000, 'the last progress report');
  const [fence] = await append(pJob, 1, 'test_fence');
  await tenantQuiet.until((ms) => ms.some((m) => m.eventId === fence), 10_000, 'the fence');
  await slow.until((ms) => ms.some((m) => m.type === 'test_fence'), 10_000, 'the fence');
  const reports = (ms: any[]) => ms.filter((m) => m.type === 'step_progress').map((m) => m.progress.pct);
  t.ok(reports(all.messages).length >= 2, `the default feed got the reports as they were read (${reports(all.messages).join(', ')})`);
  t.same(reports(slow.messages), [reports(slow.messages)[0]], `the throttled feed got one report within its minute (${reports(slow.messages).join(', ')})`);
  t.same(reports(tenantQuiet.messages), [], 'tenantEvents without progressEveryMs: no progress');
  t.equal(reports(tenantProgress.messages).at(-1), 100, 'tenantEvents with progressEveryMs: 0 gets them');
});

t.test('forged notifications deliver nothing false and break nothing', async (t) => {
  const ws = new WsConnection(server, operator);
  t.teardown(() => ws.close());
  const [zero] = await append(jobId, 1);
  const sub = ws.subscribe(`subscription ($after: BigInt) { tenantEvents(after: $after) { eventId type } }`, { after: zero });
  const [first] = await append(jobId, 1);
  await sub.until((ms) => ms.some((m) => m.eventId === first), 10_000, 'the first event');
  for (const payload of ['{"ids":[987654321]}', '{"min_id":1,"max_id":99999999,"count":5}', 'not json', '{"progress":{"job_id":1,"step_id":999999}}', '']) {
    await pool.query(`select pg_notify('ballast_events', $1)`, [payload]);
  }
  const [second] = await append(jobId, 1);
  await sub.until((ms) => ms.some((m) => m.eventId === second), 10_000, 'the next real event');
  const after = sub.messages.slice(sub.messages.findIndex((m) => m.eventId === first) + 1).map((m) => m.eventId);
  t.same(after, [second], 'nothing but the real event, once');
  t.same(sub.errors, [], 'no errors');
});

t.test('two API processes on one database each deliver the same sequence', async (t) => {
  const other = await testServer(t, url);
  const ws1 = new WsConnection(server, operator);
  const ws2 = new WsConnection(other, operator);
  t.teardown(() => Promise.all([ws1.close(), ws2.close()]));
  const [start] = await append(jobId, 1, 'test_start');
  const one = ws1.subscribe(`subscription ($after: BigInt) { tenantEvents(tenantId: "${TENANT}", after: $after) { eventId } }`, { after: start });
  const two = ws2.subscribe(`subscription ($after: BigInt) { tenantEvents(tenantId: "${TENANT}", after: $after) { eventId } }`, { after: start });
  // Concurrent writers so that commits interleave.
  const writers = Array.from({ length: 4 }, async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    try {
      for (let i = 0; i < 10; i++) await c.query(`insert into ballast_private.events (job_id, type, actor) select $1, 'test_par', 'w' from generate_series(1, 3)`, [jobId]);
    } finally {
      await c.end();
    }
  });
  await Promise.all(writers);
  const [fence] = await append(jobId, 1, 'test_fence');
  for (const s of [one, two]) await s.until((ms) => ms.some((m) => m.eventId === fence), 15_000, 'the fence');
  const expected = (await pool.query<{ id: string }>(
    `select e.id::text as id from ballast_private.events e where e.job_id = $1 and (e.tx, e.id) > (select tx, id from ballast_private.events where id = $2)
      order by e.tx, e.id`, [jobId, start])).rows.map((r) => r.id);
  t.equal(expected.length, 121, '120 concurrent events and the fence after the start');
  t.same(one.messages.map((m) => m.eventId), expected, 'the first process: the database order');
  if (one.messages.map((m) => m.eventId).join() !== expected.join()) t.comment(JSON.stringify({ got: one.messages.map((m) => m.eventId), expected }));
  t.same(two.messages.map((m) => m.eventId), expected, 'the second process: the same');
});

async function until(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

t.test('limits: subscriptions per socket, sockets per caller; a token valid for 30 days keeps its socket', async (t) => {
  const small = await testServer(t, url, { limits: { liveMaxSocketsPerCaller: 2 }, liveLimits: { maxSubscriptions: 2 } });
  const alice = await token('client', TENANT, { subject: 'alice' });
  const ws = new WsConnection(small, alice);
  t.teardown(() => ws.close());
  const [zero] = await append(jobId, 1);
  const subs = [1, 2, 3].map(() => ws.subscribe(`subscription ($after: BigInt) { tenantEvents(after: $after) { eventId } }`, { after: zero }));
  await subs[2]!.ended();
  t.match(subs[2]!.errors[0], { extensions: { code: 'TOO_MANY_SUBSCRIPTIONS', maxSubscriptions: 2 } }, 'the third subscription is refused');
  const [id] = await append(jobId, 1);
  for (const s of subs.slice(0, 2)) await s.until((ms) => ms.some((m) => m.eventId === id), 10_000, 'the event');
  t.pass('the first two keep working');

  const second = new WsConnection(small, alice);
  t.teardown(() => second.close());
  const ok = second.subscribe(`subscription { tenantEvents { eventId } }`);
  await until(() => small.subscriptions() === 3);
  const third = new WsConnection(small, alice);
  t.teardown(() => third.close());
  third.subscribe(`subscription { tenantEvents { eventId } }`);
  t.equal((await third.closed).code, 4429, 'a third socket of the same caller is closed with 4429');
  const bob = new WsConnection(small, await token('client', TENANT, { subject: 'bob' }));
  t.teardown(() => bob.close());
  const bobs = bob.subscribe(`subscription { tenantEvents { eventId } }`);
  await until(() => small.subscriptions() === 4);
  t.equal(bobs.errors.length + ok.errors.length, 0, 'another caller is counted apart');

  const longLived = new WsConnection(server, await token('client', TENANT, { expiresInS: 30 * 86_400 }));
  t.teardown(() => longLived.close());
  const [z2] = await append(jobId, 1);
  const s = longLived.subscribe(`subscription ($after: BigInt) { tenantEvents(after: $after) { eventId } }`, { after: z2 });
  await new Promise((r) => setTimeout(r, 300));
  const [id2] = await append(jobId, 1);
  await s.until((ms) => ms.some((m) => m.eventId === id2), 10_000, 'an event on the 30-day token\'s socket');
  t.same(s.errors, [], 'a token valid for longer than 24.8 days (the longest timer) does not close its socket at once');
});
