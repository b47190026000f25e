// The GraphQL API end to end: a real HTTP client (fetch) and a real graphql-ws client against a server started on a
// free port, with an in-process worker running the jobs. Submit, follow every step live, refresh mid-job without a
// gap, input errors by path, idempotent resubmission, and what the schema exposes.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { eventually, freshDatabase, testWorker, waitForJob } from './helpers.ts';
import { data, errorOf, gate, gql, JOB_CHANGE, testServer, token, WsConnection } from './support/graphql.ts';

const { url, pool, db } = await freshDatabase(t);

const trio = pipeline({ name: 'gql.trio', version: 1, input: z.strictObject({ text: z.string().min(1), top: z.number().int().max(10).optional() }) })
  .step('split', { output: z.array(z.string()) }, ({ input }) => input.text.split(' '))
  .step('count', { after: ['split'], output: z.number() }, ({ deps }) => deps.split.length)
  .step('report', { after: ['count'], output: z.string() }, ({ deps }) => `${deps.count} words`);

// Two gates per run (input.run): `wait` blocks until the test opens the first, `finish` until it opens the second.
const gates = new Map<string, { first: ReturnType<typeof gate>; second: ReturnType<typeof gate> }>();
const gatesOf = (run: string) => {
  if (!gates.has(run)) gates.set(run, { first: gate(), second: gate() });
  return gates.get(run)!;
};
const gated = pipeline({ name: 'gql.gated', version: 1, input: z.object({ run: z.string() }) })
  .step('start', { output: z.boolean() }, () => true)
  .step('wait', { after: ['start'], output: z.boolean() }, async ({ input }) => (await gatesOf(input.run).first.promise, true))
  .step('finish', { after: ['wait'], output: z.string() }, async ({ input }) => (await gatesOf(input.run).second.promise, 'done'));

await testWorker(t, url, { pipelines: [trio, gated], concurrency: 4 });
const server = await testServer(t, url);
const acme = await token('client', 'acme', { subject: 'alice' });

const SUBMIT = `mutation ($input: SubmitJobInput!) { submitJob(input: $input) { jobId created status pipelineVersion job { id tenantId pipeline status } } }`;
const stepRunning = (name: string) => (ms: any[]) =>
  ms.some((m) => (m.stepName === name && m.status === 'running') || m.job?.steps.some((s: any) => s.name === name && s.status === 'running'));
const eventIds = async (jobId: string) =>
  // In the order subscribers get them: by writing transaction, then id (migrations/0004_state_machines.sql). That differs from id order
  // when a worker's transaction took its id before the submission's and wrote its step events after it committed.
  (await pool.query<{ id: string }>('select e.id::text as id from ballast_private.events e where e.job_id = $1 order by e.tx, e.id', [jobId])).rows.map((r) => r.id);
/** The events of `all` (in delivery order) after event `id`. */
const eventsAfter = (all: string[], id: string) => all.slice(all.indexOf(id) + 1);

t.test('submit, subscribe, every step transition, completed', async (t) => {
  const ws = new WsConnection(server, acme);
  t.teardown(() => ws.close());
  // The tenant feed is open before the job exists: everything arrives live.
  const feed = ws.subscribe(`subscription { tenantEvents { ${JOB_CHANGE} } }`);
  await t.resolves(waitForSubscribers(1), 'the tenant feed is registered');

  const started = Date.now();
  const submitted = (await data(server, SUBMIT, { input: { pipeline: 'gql.trio', input: { text: 'the cat sat' } } }, acme)).submitJob;
  t.match(submitted, { created: true, status: 'queued', pipelineVersion: 1, job: { id: submitted.jobId, tenantId: 'acme', pipeline: 'gql.trio' } });
  const jobId: string = submitted.jobId;

  // jobUpdated subscribed after the submit, from the beginning (after: "0"): the events so far are replayed.
  const job = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id, after: "0") { ${JOB_CHANGE} } }`, { id: jobId });
  const done = (ms: any[]) => ms.some((m) => m.type === 'job_completed');
  const live = await feed.until(done, 15_000, 'job_completed on the tenant feed');
  const followed = await job.until(done, 15_000, 'job_completed on jobUpdated');
  t.ok(Date.now() - started < 15_000, 'completed within the bound');

  const ofJob = live.filter((m) => m.jobId === jobId);
  t.ok(ofJob.every((m) => m.replayed === false && m.tenantId === 'acme'), 'the feed carries live events of the tenant');
  for (const step of ['split', 'count', 'report']) {
    const statuses = ofJob.filter((m) => m.stepName === step).map((m) => m.status);
    t.ok(statuses.indexOf('running') >= 0 && statuses.indexOf('running') < statuses.indexOf('succeeded'), `${step}: running, then succeeded (${statuses})`);
  }
  t.same(ofJob.map((m) => m.eventId), await eventIds(jobId), 'the tenant feed delivered every stored event of the job once, in order');

  const events = followed.filter((m) => m.type !== 'snapshot');
  t.same(events.map((m) => m.eventId), await eventIds(jobId), 'jobUpdated: replay + live = every event once, in order');
  const snapshot = followed.find((m) => m.type === 'snapshot');
  t.ok(snapshot, 'jobUpdated sends a snapshot');
  t.equal(snapshot.job.steps.length, 3, 'the snapshot lists the steps');
  t.ok(followed.indexOf(snapshot) === followed.findIndex((m) => !m.replayed), 'the snapshot follows the replayed events');
  t.ok(followed.filter((m) => m.replayed).every((m) => m.type !== 'snapshot' && m.eventId), 'replayed messages are stored events');
  // (The snapshot may come last: when the job finished before the subscription read it, everything was replayed.)
  t.equal(events.at(-1).type, 'job_completed');
  t.equal(events.at(-1).status, 'completed', 'the message carries the new state');
  feed.stop();
  job.stop();
});

t.test('refresh mid-job: a new connection reads the state, then follows the rest without a gap', async (t) => {
  const run = 'refresh-1';
  const { jobId } = (await data(server, SUBMIT, { input: { pipeline: 'gql.gated', input: { run } } }, acme)).submitJob;

  // First page load: follow until `wait` runs (it blocks on the first gate), then the tab is closed.
  const first = new WsConnection(server, acme);
  const before = first.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { ${JOB_CHANGE} } }`, { id: jobId });
  await before.until(stepRunning('wait'), 15_000, '"wait" running');
  t.equal(before.messages[0].type, 'snapshot', 'without `after` the first message is the snapshot');
  // The snapshot stands for every event up to its eventId; each later message for itself.
  const lastSeen: string = before.messages.map((m) => m.eventId).filter((id) => id !== null).at(-1);
  await first.close();

  // While nobody listens: `wait` finishes and `finish` starts (and blocks on the second gate).
  gatesOf(run).first.open();
  const finishRunning = async () =>
    (await pool.query(`select status from ballast.steps where job_id = $1 and name = 'finish'`, [jobId])).rows[0]?.status === 'running';
  t.ok(await eventually(finishRunning, 15_000), '"finish" started while disconnected');

  // The refreshed page: query the current state, then subscribe after the newest event it read.
  const state = (await data(server, `query ($id: BigInt!) { job(id: $id) { status steps { nodes { name status } }
      events(last: 1) { nodes { id type } } } }`, { id: jobId }, acme)).job;
  t.same(state.steps.nodes.map((s: any) => [s.name, s.status]), [['start', 'succeeded'], ['wait', 'succeeded'], ['finish', 'running']],
    'the query shows what happened while disconnected');
  const second = new WsConnection(server, acme);
  t.teardown(() => second.close());
  const after = second.subscribe(`subscription ($id: BigInt!, $after: BigInt) { jobUpdated(jobId: $id, after: $after) { ${JOB_CHANGE} } }`,
    { id: jobId, after: state.events.nodes[0].id });
  // And a client that kept its last eventId from before the refresh gets exactly what it missed.
  const resumed = second.subscribe(`subscription ($id: BigInt!, $after: BigInt) { jobUpdated(jobId: $id, after: $after) { ${JOB_CHANGE} } }`,
    { id: jobId, after: lastSeen });
  const snapshotIn = (ms: any[]) => ms.some((m) => m.type === 'snapshot');
  await after.until(snapshotIn, 10_000, 'the snapshot');
  await resumed.until(snapshotIn, 10_000, 'the snapshot');
  t.equal(after.messages[0].type, 'snapshot', 'nothing to replay after the newest event: the snapshot comes first');
  t.same(after.messages[0].job.steps.map((s: any) => s.status), ['succeeded', 'succeeded', 'running'], 'the snapshot is the current state');

  gatesOf(run).second.open();
  const completed = (ms: any[]) => ms.some((m) => m.type === 'job_completed');
  await after.until(completed, 15_000, 'job_completed after the refresh');
  await resumed.until(completed, 15_000, 'job_completed on the resumed subscription');

  const all = await eventIds(jobId);
  const replayed = resumed.messages.filter((m) => m.replayed).map((m) => m.eventId);
  t.same(replayed, eventsAfter(all, lastSeen).slice(0, replayed.length), 'the replay is exactly the events after the last one seen');
  t.ok(replayed.length >= 2, `the events missed while disconnected were replayed (${replayed.length})`);
  const resumedIds = resumed.messages.filter((m) => m.type !== 'snapshot').map((m) => m.eventId);
  const coveredBefore = all.slice(0, all.indexOf(lastSeen) + 1);
  t.same([...coveredBefore, ...resumedIds], all, 'before the refresh + after it = every event once: no gap, no duplicate');
  const live = after.messages.filter((m) => m.type !== 'snapshot');
  t.ok(live.every((m) => BigInt(m.eventId) > BigInt(state.events.nodes[0].id)), 'after the snapshot only newer events');
  t.same(live.filter((m) => m.stepName === 'finish').map((m) => m.status), ['succeeded'], 'the rest of the job, live');
});


t.test('a lost LISTEN connection: subscriptions stay open and miss nothing; resubscribing with `after` replays the same', async (t) => {
  const run = 'interrupt-1';
  const { jobId } = (await data(server, SUBMIT, { input: { pipeline: 'gql.gated', input: { run } } }, acme)).submitJob;
  const ws = new WsConnection(server, acme);
  t.teardown(() => ws.close());
  const sub = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { ${JOB_CHANGE} } }`, { id: jobId });
  await sub.until(stepRunning('wait'), 15_000, '"wait" running');
  const lastSeen: string = sub.messages.filter((m) => m.eventId !== null).at(-1).eventId;

  const { rowCount } = await pool.query(`select pg_terminate_backend(pid) from pg_stat_activity
    where application_name = 'ballast-graphql-listen' and datname = current_database()`);
  t.equal(rowCount, 1, 'the server\'s LISTEN connection was killed');
  // The job goes on while the server is reconnecting: its events are read from the stream's position afterwards.
  gatesOf(run).first.open();
  gatesOf(run).second.open();
  await waitForJob(db, jobId);
  await sub.until((ms) => ms.some((m) => m.type === 'job_completed'), 15_000, 'job_completed after the reconnect');
  t.same(sub.errors, [], 'the subscription did not end');
  const live = sub.messages.filter((m) => m.type !== 'snapshot').map((m) => m.eventId);
  t.same(live, sub.messages[0].eventId ? eventsAfter(await eventIds(jobId), sub.messages[0].eventId) : await eventIds(jobId),
    'every event after the snapshot, once each');

  const health = () => fetch(server.url.replace('/graphql', '/health')).then((r) => r.status === 200);
  t.ok(await eventually(health, 10_000), 'the server listens again (health 200)');
  const again = ws.subscribe(`subscription ($id: BigInt!, $after: BigInt) { jobUpdated(jobId: $id, after: $after) { ${JOB_CHANGE} } }`,
    { id: jobId, after: lastSeen });
  await again.until((ms) => ms.some((m) => m.type === 'snapshot'), 10_000, 'the snapshot');
  const i = live.indexOf(lastSeen);
  t.same(again.messages.filter((m) => m.replayed).map((m) => m.eventId), live.slice(i + 1),
    'the replay after the last event seen is what the live subscription received after it');
  t.equal(again.messages.find((m) => m.type === 'snapshot').status, 'completed');
});

t.test('input errors are reported per path with a code', async (t) => {
  const r = await gql(server, SUBMIT, { input: { pipeline: 'gql.trio', input: { text: '', top: 99, colour: 'red' } } }, acme);
  const e = errorOf(r);
  t.equal(e.code, 'INVALID_INPUT');
  t.equal(e.extensions.sqlstate, 'BA002');
  t.same(e.extensions.issues.map((i: any) => i.path).sort(), ['input.colour', 'input.text', 'input.top']);
  t.ok(e.extensions.issues.every((i: any) => typeof i.message === 'string' && i.message.length > 0), 'each issue says what is wrong');
  t.same(r.body.errors![0]!.path, ['submitJob']);
  t.equal((await pool.query(`select count(*)::int as n from ballast.jobs where pipeline = 'gql.trio' and input ->> 'text' = ''`)).rows[0].n, 0, 'nothing was written');

  const unknown = errorOf(await gql(server, SUBMIT, { input: { pipeline: 'no.such.pipeline' } }, acme));
  t.same([unknown.code, unknown.extensions.sqlstate], ['UNKNOWN_PIPELINE', 'BA004']);
  const shape = await gql(server, SUBMIT, { input: { input: {} } }, acme);
  t.match(errorOf(shape).message, /pipeline/, 'a missing required field is a GraphQL validation error naming it');
});

t.test("errors name the API's input fields, not the SQL parameters behind them", async (t) => {
  const empty = errorOf(await gql(server, SUBMIT, { input: { pipeline: 'gql.trio', input: { text: 'x' }, idempotencyKey: '' } }, acme));
  t.equal(empty.code, 'INVALID_INPUT');
  t.match(empty.message, /^idempotencyKey: is empty/, 'the refused argument is named as the input field');
  t.same(empty.extensions.issues.map((i: any) => i.path), ['idempotencyKey']);
  t.notMatch(JSON.stringify(empty), /idempotency_key|p_idempotency/);

  const submitted = (await data(server, SUBMIT, { input: { pipeline: 'gql.trio', input: { text: 'the cat' } } }, acme)).submitJob;
  await waitForJob(db, submitted.jobId);
  const operator = await token('operator');
  const replay = errorOf(await gql(server, `mutation ($id: BigInt!) { replayJob(input: { jobId: $id }) { jobId } }`, { id: submitted.jobId }, operator));
  t.equal(replay.code, 'STEP_BUSY');
  t.match(replay.extensions.hint, /Name a step \(fromStep\)/, 'the hint names the GraphQL field');
  t.notMatch(JSON.stringify(replay), /p_from_step/);
});

t.test('idempotent resubmission: same key, same job; another request, IDEMPOTENCY_CONFLICT', async (t) => {
  const input = { pipeline: 'gql.trio', input: { text: 'once only' }, idempotencyKey: 'order-42' };
  const first = (await data(server, SUBMIT, { input }, acme)).submitJob;
  const again = (await data(server, SUBMIT, { input }, acme)).submitJob;
  t.equal(first.created, true);
  t.equal(again.created, false, 'the second call created nothing');
  t.equal(again.jobId, first.jobId, 'and returned the same job');
  const conflict = errorOf(await gql(server, SUBMIT, { input: { ...input, input: { text: 'something else' } } }, acme));
  t.equal(conflict.code, 'IDEMPOTENCY_CONFLICT');
  t.equal(conflict.extensions.jobId, first.jobId, 'the conflict names the existing job');
  const n = await pool.query(`select count(*)::int as n from ballast.jobs where idempotency_key = 'order-42'`);
  t.equal(n.rows[0].n, 1);
});

t.test('the schema exposes the public surface only', async (t) => {
  const operator = await token('operator');
  const schema = (await data(server, `{ __schema { types { name } mutationType { fields { name } } subscriptionType { fields { name } }
      queryType { fields { name } } } }`, {}, operator)).__schema;
  t.same(schema.mutationType.fields.map((f: any) => f.name).sort(),
    ['cancelJob', 'deleteSchedule', 'pauseSchedule', 'replayJob', 'replayStep', 'resolveReview', 'resumeSchedule', 'sendEvent',
      'setSchedule', 'submitJob', 'submitJobs',
      'deleteLimit', 'pauseKey', 'resumeKey', 'setLimit',
      'setFairShare', 'stopFairSharing',
      'clearPromptCanary', 'createPromptVersion', 'setPromptCanary', 'setPromptLabel',
      'setDriftRule', 'setBudgetAlert', 'ackAlert',
      'startEvalRun', 'addEvalCases', 'promoteToDataset', 'setAutoPromotion'].sort());
  t.same(schema.subscriptionType.fields.map((f: any) => f.name).sort(), ['jobUpdated', 'modelTokens', 'tenantEvents']);
  const names = schema.types.map((x: any) => x.name).join(' ');
  // Prompt labels and pins are public (0041); the prompts' texts are not.
  t.notOk(schema.types.some((x: any) => x.name === 'Prompt' || x.name === 'PromptsConnection'), 'no Prompt type');
  for (const hidden of ['Worker', 'Signal', 'Effect', 'ModelPrice', 'ProviderCooldown', 'Transition', 'ErrorCode', 'Graphile', 'Private', 'StepItem']) {
    t.notMatch(names, new RegExp(`\\b\\w*${hidden}\\w*\\b`), `no ${hidden} type`);
  }
  const query = schema.queryType.fields.map((f: any) => f.name);
  for (const hidden of ['claimStep', 'completeStep', 'failStep', 'heartbeatWorker', 'reap', 'jsonSchemaErrors', 'registerPipeline', 'createJob', 'workers']) {
    t.notOk(query.includes(hidden), `no ${hidden} field`);
  }
  t.notOk(schema.mutationType.fields.some((f: any) => f.name === 'fireSchedules'), 'firing schedules is for workers');
  t.ok(query.includes('jobs') && query.includes('job') && query.includes('modelCalls'), 'the read surface is there');
});

/** The server has registered n subscriptions with its LISTEN hub (a feed without `after` sends nothing first). */
async function waitForSubscribers(n: number): Promise<void> {
  if (!(await eventually(() => server.subscriptions() >= n, 5000))) throw new Error(`${server.subscriptions()} subscriptions registered, expected ${n}`);
}
