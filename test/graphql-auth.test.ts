// Who may do what through GraphQL: tokens that are refused (expired, forged, unsigned, unknown role) over HTTP and
// websocket; anonymous callers see nothing; a client of one tenant probing another's jobs by query, mutation and
// subscription gets nothing or an authorization error; operators and reporters see all tenants, only operators
// replay, deliver events and resolve reviews, and the audit trail names the token's subject.
import t from 'tap';
import { z } from 'zod';
import { SignJWT } from 'jose';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { PermanentError } from '../src/errors.ts';
import { prompt } from '../src/model/prompt.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';
import { data, errorOf, gql, JOB_CHANGE, SECRET, testServer, token, WsConnection } from './support/graphql.ts';

const { url, db, pool } = await freshDatabase(t);

let failures = 1;
const simple = pipeline({ name: 'auth.p', version: 1, input: z.object({ n: z.number() }) })
  .step('a', { output: z.number() }, ({ input }) => input.n);
// Fails permanently the first time, succeeds when replayed.
const flaky = pipeline({ name: 'auth.flaky', version: 1, input: z.object({}) })
  .step('once', { output: z.string(), retry: { maxAttempts: 1 } }, () => {
    if (failures-- > 0) throw new PermanentError('first time fails');
    return 'ok';
  });
// A model step the local model cannot satisfy (it knows no `verdict`): it waits for a person.
const reviewed = pipeline({ name: 'auth.review', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('judge', {
    prompt: prompt({ name: 'auth.judge', version: 1, system: 'Judge.', user: 'Judge this:\n{{input.text}}' }),
    model: 'local:wink', output: z.object({ verdict: z.enum(['keep', 'drop']) }), reasks: 0, review: true, retry: { maxAttempts: 1 },
  });
await testWorker(t, url, { pipelines: [simple, flaky, reviewed], concurrency: 4 });
const server = await testServer(t, url);

const acme = await token('client', 'acme', { subject: 'alice' });
const globex = await token('client', 'globex', { subject: 'gus' });
const operator = await token('operator', undefined, { subject: 'ops' });
const reporter = await token('reporter', undefined, { subject: 'rita' });

const SUBMIT = `mutation ($input: SubmitJobInput!) { submitJob(input: $input) { jobId } }`;
const submit = async (bearer: string, input: Record<string, unknown>) => (await data(server, SUBMIT, { input }, bearer)).submitJob.jobId as string;
const acmeJob = await submit(acme, { pipeline: 'auth.p', input: { n: 1 } });
const globexJob = await submit(globex, { pipeline: 'auth.p', input: { n: 2 } });
await waitForJob(db, acmeJob);
await waitForJob(db, globexJob);

t.test('expired, forged, unsigned and role-less tokens are refused over HTTP (401) and websocket (4403)', async (t) => {
  const enc = new TextEncoder();
  const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const bad: Record<string, string> = {
    expired: await token('client', 'acme', { expiresInS: -60 }),
    forged: await token('operator', undefined, { secret: 'another-secret-of-sufficient-length-0123456789' }),
    unsigned: `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ role: 'operator', exp: Math.floor(Date.now() / 1000) + 600 })}.`,
    'unknown role': await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(enc.encode(SECRET)),
    'client without tenant': await new SignJWT({ role: 'client' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1h').sign(enc.encode(SECRET)),
    'no expiry': await new SignJWT({ role: 'operator' }).setProtectedHeader({ alg: 'HS256' }).sign(enc.encode(SECRET)),
    'not a JWT': 'hello',
  };
  const reasons: Record<string, RegExp> = {
    expired: /expired/, forged: /signature/, unsigned: /not accepted/, 'unknown role': /role claim/, 'client without tenant': /tenant_id/,
    'no expiry': /exp/, 'not a JWT': /not a JWT/,
  };
  for (const [name, jwt] of Object.entries(bad)) {
    const r = await gql(server, '{ jobs { totalCount } }', {}, jwt);
    t.equal(r.status, 401, `${name}: 401`);
    t.equal(r.body.data, undefined, `${name}: nothing ran`);
    t.equal(errorOf(r).code, 'UNAUTHENTICATED', `${name}: UNAUTHENTICATED`);
    t.match(errorOf(r).message, reasons[name]!, `${name}: says why`);
    t.match(errorOf(r).message, /Send a valid token in the header "Authorization: Bearer <token>".*mint one with `npm run -s ballast -- token --role/,
      `${name}: and what to do (the header, the command that mints a token)`);
  }
  for (const name of ['expired', 'forged']) {
    const ws = new WsConnection(server, bad[name]);
    const sub = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { type } }`, { id: acmeJob });
    const closed = await ws.closed;
    t.equal(closed.code, 4403, `${name}: the websocket is closed as forbidden`);
    t.match(closed.reason, reasons[name]!, `${name}: with the reason`);
    t.same(sub.messages, [], `${name}: no message was delivered`);
  }
  const good = await gql(server, '{ jobs { totalCount } }', {}, acme);
  t.equal(good.status, 200, 'a valid token of the same kind is accepted (control)');
});

t.test('a websocket is closed when its token expires', async (t) => {
  const ws = new WsConnection(server, await token('client', 'acme', { expiresInS: 2 }));
  const sub = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { type } }`, { id: acmeJob });
  await sub.until((ms) => ms.length > 0, 5000, 'the snapshot while the token is valid');
  const timeout = new Promise((resolve) => setTimeout(() => resolve('still open after 10 s'), 10_000).unref());
  t.same(await Promise.race([ws.closed, timeout]), { code: 4403, reason: 'Forbidden: the token expired; reconnect with a new one (`ballast token` mints one)' });
});

t.test('anonymous callers see nothing and can do nothing', async (t) => {
  const list = await gql(server, '{ jobs { nodes { id } } }');
  t.equal(list.body.data?.jobs, null, 'no jobs');
  t.equal(errorOf(list).code, 'FORBIDDEN');
  t.match(errorOf(list).message, /^not allowed with this token \(or without one\): permission denied for [a-z]+ [a-z_.]+\. jobs needs a token: a client token reads its own tenant, an operator or reporter token every tenant, sent in the header "Authorization: Bearer <token>"/,
    'the refusal names what is needed and where it goes');
  t.match(errorOf(list).message, /mint one with `npm run -s ballast -- token --role client --tenant <tenant>`/, 'and the command that mints one');
  t.same(errorOf(list).extensions.roles, ['client', 'operator', 'reporter'], 'extensions.roles: the roles that may');
  const one = await gql(server, 'query ($id: BigInt!) { job(id: $id) { id } }', { id: acmeJob });
  t.equal(one.body.data?.job, null);
  t.equal(errorOf(await gql(server, SUBMIT, { input: { pipeline: 'auth.p', input: { n: 3 } } })).code, 'FORBIDDEN', 'cannot submit');
  const ws = new WsConnection(server);
  t.teardown(() => ws.close());
  const sub = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { type } }`, { id: acmeJob });
  t.same(await ws.closed, { code: 4403, reason: 'Forbidden: a websocket needs a token: connectionParams { authorization: "Bearer <token>" } (`ballast token` mints one)' },
    'no websocket without a token');
  t.same(sub.messages, [], 'and nothing was sent');
});

t.test('a client probing another tenant by query finds nothing', async (t) => {
  const q = await data(server, `query ($id: BigInt!) {
      job(id: $id) { id }
      jobs { totalCount nodes { id tenantId } }
      steps(condition: { jobId: $id }) { totalCount }
      attempts(condition: { jobId: $id }) { totalCount }
      events(condition: { jobId: $id }) { totalCount }
      modelCalls(condition: { jobId: $id }) { totalCount }
    }`, { id: acmeJob }, globex);
  t.equal(q.job, null, 'job(id) of another tenant is null');
  t.ok(q.jobs.nodes.length > 0 && q.jobs.nodes.every((j: any) => j.tenantId === 'globex'), 'jobs lists its own tenant only');
  t.notOk(q.jobs.nodes.some((j: any) => j.id === acmeJob));
  t.same([q.steps.totalCount, q.attempts.totalCount, q.events.totalCount, q.modelCalls.totalCount], [0, 0, 0, 0], 'no rows of its steps, attempts, events, traces');
  const own = await data(server, `query ($id: BigInt!) { job(id: $id) { id steps { totalCount } events { totalCount } } }`, { id: acmeJob }, acme);
  t.equal(own.job.id, acmeJob, 'its own tenant reads it (control)');
  t.ok(own.job.steps.totalCount > 0 && own.job.events.totalCount > 0);
});

t.test('a client acting on another tenant by mutation is refused', async (t) => {
  const running = await submit(acme, { pipeline: 'auth.review', input: { text: 'pending' } });
  await waitForJob(db, running, ['needs_review']);
  const cancel = errorOf(await gql(server, 'mutation ($id: BigInt!) { cancelJob(input: { jobId: $id }) { status } }', { id: running }, globex));
  t.equal(cancel.code, 'NOT_FOUND', 'cancelling another tenant\'s job: it does not exist for this client');
  t.equal((await db.getJob(running))!.status, 'needs_review', 'and it was not cancelled');
  const foreign = errorOf(await gql(server, SUBMIT, { input: { pipeline: 'auth.p', input: { n: 4 }, tenantId: 'acme' } }, globex));
  t.same([foreign.code, foreign.extensions.sqlstate], ['FORBIDDEN', 'BA014'], 'submitting into another tenant is forbidden');
  t.match(foreign.message, /^tenant globex cannot submit jobs for tenant acme\. Leave the tenant out: jobs are submitted for your own tenant\. Otherwise submitJob needs a client token of the tenant it submits for, or an operator token/,
    'saying what to do: stay in its own tenant, or which token may');
  t.same(foreign.extensions.roles, ['client', 'operator']);
  for (const [name, mutation] of [
    ['replayJob', `mutation { replayJob(input: { jobId: "${globexJob}" }) { jobStatus } }`],
    ['resolveReview', `mutation { resolveReview(input: { stepId: "1", decision: REJECT }) { stepStatus } }`],
  ] as const) {
    const refused = errorOf(await gql(server, mutation, {}, globex));
    t.equal(refused.code, 'FORBIDDEN', `a client cannot ${name}, even in its own tenant`);
    t.match(refused.message, new RegExp(`${name} needs an operator token, sent in the header "Authorization: Bearer <token>".*\`npm run -s ballast -- token --role operator\``),
      `${name}: the message names the operator token and how to mint one`);
    t.same(refused.extensions.roles, ['operator']);
  }
  const event = errorOf(await gql(server, `mutation { sendEvent(input: { key: "k", tenantId: "acme" }) { accepted } }`, {}, globex));
  t.same([event.code, event.extensions.sqlstate], ['FORBIDDEN', 'BA014'], 'sending an event to another tenant is forbidden');
  const own = await data(server, `mutation { sendEvent(input: { key: "auth:own" }) { accepted } }`, {}, globex);
  t.equal(own.sendEvent.accepted, true, 'a client sends events to its own tenant (event keys are per tenant)');
  const mine = await gql(server, 'mutation ($id: BigInt!) { cancelJob(input: { jobId: $id }) { status job { status } } }', { id: running }, acme);
  t.equal(mine.body.data?.cancelJob.status, 'cancelled', 'its own tenant cancels it (control)');
});

t.test('a client subscribing to another tenant gets an authorization error, and its feed carries only its own tenant', async (t) => {
  const ws = new WsConnection(server, globex);
  t.teardown(() => ws.close());
  const probe = ws.subscribe(`subscription ($id: BigInt!) { jobUpdated(jobId: $id) { type } }`, { id: acmeJob });
  await probe.ended();
  t.same(probe.messages, [], 'no message about the other tenant\'s job');
  t.equal(probe.errors[0]?.extensions?.code, 'NOT_FOUND');
  const other = ws.subscribe(`subscription { tenantEvents(tenantId: "acme") { type } }`);
  await other.ended();
  t.equal(other.errors[0]?.extensions?.code, 'FORBIDDEN', 'following another tenant is forbidden');
  t.match(other.errors[0]?.message, /leave tenantId out to follow your own tenant; following another needs an operator or reporter token/, 'saying what to do');

  const feed = ws.subscribe(`subscription { tenantEvents { ${JOB_CHANGE} } }`);
  const caughtUp = ws.subscribe(`subscription { tenantEvents(after: "0") { ${JOB_CHANGE} } }`);
  await caughtUp.until((ms) => ms.some((m) => m.jobId === globexJob && m.type === 'job_completed'), 10_000, 'the replay of its own job');
  t.ok(caughtUp.messages.every((m) => m.tenantId === 'globex'), 'the replay holds only its own tenant');
  const acmeLater = await submit(acme, { pipeline: 'auth.p', input: { n: 5 } });
  const globexLater = await submit(globex, { pipeline: 'auth.p', input: { n: 6 } });
  await feed.until((ms) => ms.some((m) => m.jobId === globexLater && m.type === 'job_completed'), 10_000, 'its own new job completing');
  await waitForJob(db, acmeLater);
  t.ok(feed.messages.length > 0 && feed.messages.every((m) => m.tenantId === 'globex' && m.jobId !== acmeLater), 'nothing of the other tenant arrived');
});

t.test('operators and reporters see every tenant; operators replay, deliver events and resolve reviews as themselves', async (t) => {
  for (const [name, bearer] of [['operator', operator], ['reporter', reporter]] as const) {
    const q = await data(server, `{ jobs(first: 100) { nodes { id tenantId } } }`, {}, bearer);
    const tenants = new Set(q.jobs.nodes.map((j: any) => j.tenantId));
    t.ok(tenants.has('acme') && tenants.has('globex'), `${name} reads both tenants`);
  }
  const readOnly = errorOf(await gql(server, `mutation ($input: SubmitJobInput!) { mine: submitJob(input: $input) { jobId } }`, { input: { pipeline: 'auth.p', input: { n: 7 } } }, reporter));
  t.equal(readOnly.code, 'FORBIDDEN', 'a reporter is read-only');
  t.match(readOnly.message, /submitJob needs a client token of the tenant it submits for, or an operator token/, 'the field is named by its name, not its alias');

  const failed = await submit(acme, { pipeline: 'auth.flaky', input: {} });
  t.equal((await waitForJob(db, failed)).status, 'failed');
  const replay = await data(server, `mutation ($id: BigInt!) { replayJob(input: { jobId: $id, reason: "fixed" }) { jobStatus replayedStepIds job { id } } }`, { id: failed }, operator);
  t.equal(replay.replayJob.replayedStepIds.length, 1);
  t.equal((await waitForJob(db, failed)).status, 'completed', 'the replayed job completes');
  const { rows: [ev] } = await pool.query(`select actor, reason from ballast.events where job_id = $1 and type = 'step_replayed'`, [failed]);
  t.same(ev, { actor: 'jwt:ops', reason: 'fixed' }, 'the audit trail names the operator from the token');

  const sent = await data(server, `mutation { sendEvent(input: { key: "auth:k1", payload: { ok: true } }) { accepted } }`, {}, operator);
  t.equal(sent.sendEvent.accepted, true);

  const review = await submit(acme, { pipeline: 'auth.review', input: { text: 'judge me' } });
  await waitForJob(db, review, ['needs_review']);
  const { pendingReview } = (await data(server, `query ($id: BigInt!) { job(id: $id) { steps { nodes { id pendingReview { reason } } } } }`,
    { id: review }, operator)).job.steps.nodes[0];
  t.ok(pendingReview?.reason, 'the pending review is readable');
  const stepId = (await db.getSteps(review))[0]!.id;
  const RESOLVE = `mutation ($in: ResolveReviewInput!) { resolveReview(input: $in) { stepStatus jobStatus step { id status } job { id } } }`;
  const invalid = errorOf(await gql(server, RESOLVE, { in: { stepId, decision: 'EDIT', output: { verdict: 'maybe' } } }, operator));
  t.equal(invalid.code, 'INVALID_INPUT', 'an edit violating the output contract is refused');
  t.ok(invalid.extensions.issues.some((i: any) => i.path.includes('verdict')), 'naming the path');
  t.equal(errorOf(await gql(server, RESOLVE, { in: { stepId, decision: 'APPROVE' } }, acme)).code, 'FORBIDDEN', 'a client cannot resolve');
  const ok = (await data(server, RESOLVE, { in: { stepId, decision: 'EDIT', output: { verdict: 'keep' }, note: 'fine' } }, operator)).resolveReview;
  t.match(ok, { stepStatus: 'succeeded', step: { id: stepId, status: 'succeeded' }, job: { id: review } });
  const { rows: [rv] } = await pool.query(`select actor from ballast.events where step_id = $1 and type = 'review_resolved'`, [stepId]);
  t.equal(rv.actor, 'reviewer:jwt:ops', 'the reviewer is the token\'s subject');
});
