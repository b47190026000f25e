// Live tokens that follow a step through its retries (src/server/live/tokens.ts, src/worker/token-stream.ts): one
// modelTokens subscription per step stays open through a retry after a timed-out stream and through a worker
// SIGKILLed mid-stream (a real process, test/fixtures/tokens-worker.ts), each attempt's text a new segment at the next
// offset, and completes only when the step ends, with its status (succeeded, needs_review, failed); a subscriber that
// opens between two attempts waits for the next one instead of ending. SUBSCRIBER_TOO_SLOW on a token subscription
// names the fromOffset to resume from, and resuming there loses nothing. The worker's sweep of token logs, driven by
// hand with rows aged in SQL. `ballast watch --tokens` shows the attempts.
import t from 'tap';
import WebSocket from 'ws';
import { fileURLToPath } from 'node:url';
import { FakeLLM } from './support/fake-llm.ts';
import { eventually, freshDatabase, quietLog, spawnNode, testWorker, waitForJob } from './helpers.ts';
import { testServer, token, WsConnection, type Subscription } from './support/graphql.ts';
import { crashing, reviewed, retrying, strict, tokenPipelines } from './fixtures/tokens-pipelines.ts';
import { KEEP_MS, TokenSweeper, tokenSweeper } from '../src/worker/token-stream.ts';
import { watchJob } from '../src/cli/watch.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const TENANT = 'retry-co';
const server = await testServer(t, url);
const operator = await token('operator');
const client = await token('client', TENANT);
const FIELDS = 'type stepId offset text attemptId segment rung model newSegment done replayed stepStatus';

const TEXT = JSON.stringify({ sentiment: 'positive', note: `Crème brûlée ${'was lovely and the service kind. '.repeat(4)}`.trim() });
const CHUNKS = TEXT.match(/[\s\S]{1,6}/g)!;
/** What the first attempt streams before its call stalls. */
const PARTIAL = '{"sentiment": "posi';
const cp = (s: string) => [...s].length;

async function submit(pipeline: string, text = 'great'): Promise<{ jobId: string; stepId: string }> {
  const { jobId } = await db.submitJob({ pipeline, input: { text }, tenantId: TENANT });
  const [step] = await db.getSteps(jobId);
  return { jobId: String(jobId), stepId: String(step!.id) };
}

function subscribe(bearer: string, stepId: string, fromOffset?: number): Subscription {
  const ws = new WsConnection(server, bearer);
  t.teardown(() => ws.close());
  const args = fromOffset === undefined ? `stepId: "${stepId}"` : `stepId: "${stepId}", fromOffset: ${fromOffset}`;
  return ws.subscribe(`subscription { modelTokens(${args}) { ${FIELDS} } }`);
}

const textOf = (ms: any[]) => ms.filter((m) => m.type === 'tokens').map((m) => m.text).join('');
const q = async (text: string, values: unknown[] = []) => (await pool.query(text, values)).rows;
const attemptsOf = async (stepId: string) =>
  q('select id::text as id, number, outcome, error_class from ballast.attempts where step_id = $1 order by number', [stepId]);
const rowsOf = async (stepId: string) => (await q('select count(*)::int as n from ballast.model_tokens where step_id = $1', [stepId]))[0].n as number;

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  if (!(await eventually(check, timeoutMs))) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
}

/** Every message starts where the text before it ended (no gap, nothing twice), `done` exactly once, last. */
function wellFormed(t: any, ms: any[], from = 0): void {
  let at = from;
  for (const m of ms) {
    t.equal(m.offset, at, `${m.type} at ${m.offset} follows on`);
    at += cp(m.text);
  }
  t.same(ms.filter((m) => m.done).length, 1, 'one done');
  t.equal(ms.at(-1)?.type, 'done', 'done is the last message');
}

/** The messages' shape: [type, attempt, newSegment] per message, text left out. */
const shape = (ms: any[], attempts: Record<string, string>) =>
  ms.map((m) => m.type === 'done' ? ['done', m.stepStatus] : [m.type, attempts[m.attemptId] ?? m.attemptId, m.newSegment]);

t.test('a retry after a stalled stream: one subscription, two segments, done when the step succeeds', async (t) => {
  const worker = await testWorker(t, url, { pipelines: tokenPipelines, concurrency: 2 });
  fake.script('openai', { chunks: [PARTIAL], hang: 'after-first-chunk' }, { text: TEXT, chunks: CHUNKS, everyChunkGapMs: 5 });
  const { jobId, stepId } = await submit(retrying.name);
  const early = subscribe(client, stepId);
  // Another subscriber opens once the first attempt is over, during the 1 s backoff (on a slow machine perhaps
  // later: what it must receive is the same either way): the first attempt's end row is then the log's last.
  await until('the first attempt is over', async () => (await attemptsOf(stepId))[0]?.outcome === 'failed');
  const gap = subscribe(operator, stepId);
  await gap.until((ms) => ms.some((m) => m.type === 'attempt_end'), 10_000, 'the first attempt\'s end in the backlog');
  const { status } = (await q('select status from ballast.steps where id = $1', [stepId]))[0];
  t.comment(`the gap subscriber had its backlog while the step was ${status}`);

  t.equal((await waitForJob(db, jobId)).status, 'completed');
  await early.ended(10_000);
  await gap.ended(10_000);
  const attempts = await attemptsOf(stepId);
  t.same(attempts.map((a) => [a.number, a.outcome, a.error_class]), [[1, 'failed', 'transport'], [2, 'succeeded', null]],
    'the first call timed out (a retryable transport failure), the retry answered');
  const names = Object.fromEntries(attempts.map((a) => [a.id, `attempt ${a.number}`]));
  for (const [who, sub] of [['from the start', early], ['opened between the attempts', gap]] as const) {
    t.same(sub.errors, [], `${who}: no errors`);
    t.equal(textOf(sub.messages), PARTIAL + TEXT, `${who}: both attempts' text, once, in order`);
    wellFormed(t, sub.messages);
    const s = shape(sub.messages, names);
    t.same(s[0], ['tokens', 'attempt 1', true], `${who}: attempt 1 starts a segment`);
    t.same(s.filter((m) => m[0] !== 'tokens' || m[2]), [
      ['tokens', 'attempt 1', true], ['attempt_end', 'attempt 1', false],
      ['tokens', 'attempt 2', true], ['attempt_end', 'attempt 2', false], ['done', 'succeeded'],
    ], `${who}: segments and ends in order, done with the step's status`);
    const second = sub.messages.find((m) => m.attemptId === attempts[1]!.id);
    t.match(second, { offset: cp(PARTIAL), segment: 1, rung: 'primary', newSegment: true }, `${who}: the retry's text continues the offsets`);
    t.ok(sub.done, `${who}: completed`);
  }
  t.ok(gap.messages.find((m) => m.type === 'attempt_end').replayed, 'the gap subscriber got the first attempt as its backlog');

  t.test('a resume from the first attempt\'s end gets the retry only', async (t) => {
    const resumed = subscribe(client, stepId, cp(PARTIAL));
    await resumed.ended();
    t.equal(textOf(resumed.messages), TEXT);
    wellFormed(t, resumed.messages, cp(PARTIAL));
    t.match(resumed.messages.at(-1), { type: 'done', stepStatus: 'succeeded' });
  });

  t.test('ballast watch --tokens shows both attempts and where the first ended', async (t) => {
    const lines: string[] = [];
    t.equal(await watchJob({ url, db, jobId, json: false, tokens: true, timeoutMs: 10_000, out: (l) => lines.push(l) }), 0);
    const text = lines.join('\n');
    t.match(text, /step rate tokens \(attempt 1, primary openai:gpt-4o-mini, call 1\) "/);
    t.match(text, /step rate tokens end of attempt 1\n[^\n]*step rate tokens \(attempt 2, primary openai:gpt-4o-mini, call 1\) "/, 'the end of attempt 1, then attempt 2');
    const json: any[] = [];
    await watchJob({ url, db, jobId, json: true, tokens: true, timeoutMs: 10_000, out: (l) => json.push(JSON.parse(l)) });
    t.same(json.filter((j) => j.type === 'tokens_attempt_end' || j.new_segment).map((j) => [j.type, j.attempt, j.offset]),
      [['tokens', 1, 0], ['tokens_attempt_end', 1, cp(PARTIAL)], ['tokens', 2, cp(PARTIAL)], ['tokens_attempt_end', 2, cp(PARTIAL + TEXT)]]);
  });

  t.test('the worker armed its sweep; driven by hand it keeps the log for a minute, then deletes it', async (t) => {
    const sweeper = tokenSweeper(worker.db, quietLog);
    t.ok(sweeper.scheduled, 'a sweep is armed once a stream ended');
    const rows = await rowsOf(stepId);
    t.ok(rows >= 4, `${rows} rows in the log`);
    t.equal(await sweeper.runOnce(), 0, 'a final step\'s log younger than a minute is kept');
    t.equal(await rowsOf(stepId), rows);
    await pool.query(`update ballast_private.token_chunks set at = at - make_interval(secs => $2::float8 / 1000 + 1) where step_id = $1`, [stepId, KEEP_MS]);
    t.equal(await sweeper.runOnce(), rows, 'older than a minute: deleted');
    t.equal(await rowsOf(stepId), 0);
    t.same((await db.getSteps(jobId))[0]!.output, JSON.parse(TEXT), 'the step\'s output stays');
    const late = subscribe(client, stepId);
    await late.ended();
    t.match(late.messages, [{ type: 'done', stepStatus: 'succeeded', offset: 0 }], 'a subscriber after the sweep gets done at once');
  });
});

t.test('a worker SIGKILLed mid-stream: the next attempt streams on as a new segment, done when the step ends', async (t) => {
  const fixture = fileURLToPath(new URL('./fixtures/tokens-worker.ts', import.meta.url));
  const proc = spawnNode(t, [fixture], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json', LOG_LEVEL: 'info' } });
  t.teardown(() => {
    if (!t.passing()) t.comment(`worker ${proc.child.pid}, last log lines:\n${proc.lines.slice(-15).join('\n')}\n${proc.stderr().slice(-2000)}`);
  });
  await proc.waitForLine((l) => (l.includes('"worker started"') ? true : undefined), 30_000);
  fake.script('openai', { chunks: [PARTIAL], hang: 'after-first-chunk' }, { text: TEXT, chunks: CHUNKS, everyChunkGapMs: 5 });
  const { jobId, stepId } = await submit(crashing.name, 'crash');
  const early = subscribe(client, stepId);
  await until('the first batch is in the log', async () => (await rowsOf(stepId)) >= 1);
  proc.child.kill('SIGKILL');
  t.same(await proc.wait(5000), { code: null, signal: 'SIGKILL' }, 'the worker died of SIGKILL mid-stream');
  await early.until((ms) => textOf(ms) === PARTIAL, 10_000, 'the first attempt\'s text');

  // Opened while the dead worker's attempt still counts as running: the backlog, then it waits.
  const gap = subscribe(operator, stepId);
  await gap.until((ms) => textOf(ms) === PARTIAL, 10_000, 'the backlog');
  t.notOk(gap.done, 'the subscription stays open while the step has no live attempt');
  t.equal((await q('select count(*)::int as n from ballast.model_tokens where step_id = $1 and done', [stepId]))[0].n, 0,
    'the dead attempt wrote no end row');

  // A worker that reclaims the step (its lease is lost after ~2 s) and runs it again.
  await testWorker(t, url, { pipelines: tokenPipelines });
  t.equal((await waitForJob(db, jobId, undefined, 30_000)).status, 'completed');
  await early.ended(10_000);
  await gap.ended(10_000);
  const attempts = await attemptsOf(stepId);
  t.same(attempts.map((a) => [a.number, a.outcome, a.error_class]), [[1, 'crashed', 'worker_lost'], [2, 'succeeded', null]]);
  const names = Object.fromEntries(attempts.map((a) => [a.id, `attempt ${a.number}`]));
  for (const [who, sub] of [['from the start', early], ['opened after the kill', gap]] as const) {
    t.same(sub.errors, [], `${who}: no errors`);
    t.equal(textOf(sub.messages), PARTIAL + TEXT, `${who}: the dead attempt's text, then the new one's`);
    wellFormed(t, sub.messages);
    t.same(shape(sub.messages, names).filter((m) => m[0] !== 'tokens' || m[2]), [
      ['tokens', 'attempt 1', true], ['tokens', 'attempt 2', true], ['attempt_end', 'attempt 2', false], ['done', 'succeeded'],
    ], `${who}: no end for the dead attempt; the next one is a new segment; done with the step's status`);
  }
});

/** The step left in needs_review (its log outlives the minute: the step is not final). */
let inReview: string | undefined;

t.test('a step that goes to review or fails ends its subscription with that status', async (t) => {
  await testWorker(t, url, { pipelines: [reviewed, strict] });
  fake.script('openai', { text: 'I think it is positive.', chunks: ['I think ', 'it is ', 'positive.'], everyChunkGapMs: 5 });
  const review = await submit(reviewed.name, 'review me');
  inReview = review.stepId;
  const live = subscribe(client, review.stepId);
  await live.ended(20_000);
  t.equal((await waitForJob(db, review.jobId, ['needs_review'])).status, 'needs_review');
  t.same(live.errors, []);
  t.equal(textOf(live.messages), 'I think it is positive.');
  wellFormed(t, live.messages);
  t.match(live.messages.at(-1), { type: 'done', stepStatus: 'needs_review' }, 'needs_review ends it: no model runs until a person decides');
  const after = subscribe(client, review.stepId);
  await after.ended();
  t.match(after.messages.map((m) => [m.type, m.stepStatus]), [['tokens', null], ['attempt_end', null], ['done', 'needs_review']], 'a later subscriber: the backlog, then done');

  fake.script('openai', { text: 'not json', chunks: ['not ', 'json'], everyChunkGapMs: 5 });
  const failing = await submit(strict.name, 'fail me');
  const sub = subscribe(client, failing.stepId);
  await sub.ended(20_000);
  t.equal((await waitForJob(db, failing.jobId)).status, 'failed');
  t.equal(textOf(sub.messages), 'not json');
  t.match(sub.messages.at(-1), { type: 'done', stepStatus: 'failed' });
});

t.test('SUBSCRIBER_TOO_SLOW on a token subscription names the fromOffset to resume from; resuming there loses nothing', async (t) => {
  await testWorker(t, url, { pipelines: [crashing] });
  const slow = await testServer(t, url, { liveLimits: { maxBufferedBytes: 64 * 1024 } });
  fake.script('openai', { chunks: [PARTIAL], hang: 'after-first-chunk' });
  const { jobId, stepId } = await submit(crashing.name, 'flood');
  await until('the first batch is in the log', async () => (await rowsOf(stepId)) >= 1);
  const [{ id: attemptId }] = await attemptsOf(stepId);

  const sock = new WebSocket(slow.wsUrl, 'graphql-transport-ws');
  t.teardown(() => sock.terminate());
  const frames: any[] = [];
  sock.on('message', (m) => frames.push(JSON.parse(String(m))));
  await new Promise((r) => sock.once('open', r));
  sock.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${client}` } }));
  await until('connection_ack', async () => frames.some((f) => f.type === 'connection_ack'), 10_000);
  sock.send(JSON.stringify({ id: 's1', type: 'subscribe', payload: { query: `subscription { modelTokens(stepId: "${stepId}") { ${FIELDS} } }` } }));
  await until('the backlog', async () => frames.some((f) => f.payload?.data?.modelTokens?.text === PARTIAL), 10_000);

  const raw = sock as unknown as { _socket: { pause(): void; resume(): void } };
  raw._socket.pause();
  // About 8 MB of text in 40 batches, written as the worker writes them: far more than the socket and 64 KiB hold.
  for (let i = 0; i < 40; i++) {
    await pool.query(`select ballast_private.append_tokens($1, 1, 'primary', 'openai:gpt-4o-mini', repeat(chr(97 + $2 % 26), 200000), false, false)`, [attemptId, i]);
  }
  await new Promise((r) => setTimeout(r, 1500));
  raw._socket.resume();
  await until('the SUBSCRIBER_TOO_SLOW error', async () => frames.some((f) => f.type === 'error'), 30_000);
  const error = frames.find((f) => f.type === 'error');
  t.equal(error.id, 's1');
  const { extensions, message } = error.payload[0];
  t.equal(extensions.code, 'SUBSCRIBER_TOO_SLOW');
  const received = frames.filter((f) => f.type === 'next').map((f) => f.payload.data.modelTokens);
  const last = received.at(-1);
  const resumeAt = last.offset + cp(last.text);
  t.equal(extensions.resumeFromOffset, resumeAt, 'resumeFromOffset: the end of the last batch received');
  t.equal(extensions.resumeAfter, undefined, 'no resumeAfter: event ids do not apply');
  t.match(message, `fromOffset: ${resumeAt}`, 'the message names fromOffset');
  t.notMatch(message, /`after`/);

  const resumed = subscribe(client, stepId, resumeAt);
  const logText = (await q(`select string_agg(text, '' order by seq) as t from ballast.model_tokens where step_id = $1`, [stepId]))[0].t as string;
  await resumed.until((ms) => textOf(ms).length === logText.length - resumeAt, 30_000, 'the rest of the log');
  t.equal(textOf(received) + textOf(resumed.messages), logText, 'what was received plus the resume is the whole log, nothing twice');
  await db.cancelJob(jobId, 'test');
  await resumed.ended(10_000);
  t.match(resumed.messages.at(-1), { type: 'done', stepStatus: 'cancelled' });
});

t.test('the sweep: an unfinished step\'s log is kept past the minute, deleted after an hour; the timer runs the sweep', async (t) => {
  const sweeper = new TokenSweeper(db, quietLog, { delayMs: 10 });
  const step = inReview!;
  t.equal((await q('select status from ballast.steps where id = $1', [step]))[0].status, 'needs_review');
  await pool.query(`update ballast_private.token_chunks set at = at - interval '2 minutes' where step_id = $1`, [step]);
  const before = await rowsOf(step);
  t.ok(before > 0);
  await sweeper.runOnce();
  t.equal(await rowsOf(step), before, 'a step that is not final (needs_review) keeps its log past the minute');
  await pool.query(`update ballast_private.token_chunks set at = at - interval '1 hour' where step_id = $1`, [step]);
  await sweeper.runOnce();
  t.equal(await rowsOf(step), 0, '...and loses it after an hour (as a stream whose worker died does)');
  await pool.query(`update ballast_private.token_chunks set at = at - interval '2 minutes'`);
  const runs = sweeper.runs;
  sweeper.schedule();
  t.ok(sweeper.scheduled);
  t.ok(await eventually(() => sweeper.runs === runs + 1, 10_000), 'the armed sweep ran');
  t.notOk(sweeper.scheduled, 'and is no longer armed');
  t.equal((await q(`select count(*)::int as n from ballast.model_tokens c join ballast.steps s on s.id = c.step_id
     where s.status in ('succeeded', 'failed', 'cancelled', 'skipped')`))[0].n, 0, 'every final step\'s old log is gone');
});
