// Live tokens (migrations/0043_live_tokens.sql, src/worker/token-stream.ts, src/server/live/tokens.ts): a worker runs
// a streaming model step against the fake LLM (its answer in many SSE chunks with gaps); GraphQL subscribers receive
// the text live, batched, before the step completes; a subscriber that joins mid-stream or after the end gets the
// whole text from offset 0, one that resumes from an offset gets the rest; a re-ask starts a new segment; another
// tenant sees nothing; only the final output stays once the token log is pruned; `ballast watch --tokens` prints it.
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { watchJob } from '../src/cli/watch.ts';
import { FakeLLM } from './support/fake-llm.ts';
import { freshDatabase, testWorker, waitForJob } from './helpers.ts';
import { testServer, token, WsConnection, type Subscription } from './support/graphql.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const TENANT = 'tokens-co';
const Answer = z.object({ sentiment: z.enum(['positive', 'negative', 'neutral']), note: z.string() });
const rate = prompt({ name: 'tokens.rate', version: 1, system: 'You rate reviews.', user: 'Rate: {{input.text}}' });
const streaming = pipeline({ name: 'tokens.stream', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: rate, model: 'openai:gpt-4o-mini', output: Answer, stream: true, reasks: 1, callTimeoutMs: 20_000, retry: { maxAttempts: 1 } });
await testWorker(t, url, { pipelines: [streaming], concurrency: 2 });
const server = await testServer(t, url);
const operator = await token('operator');
const client = await token('client', TENANT);
const stranger = await token('client', 'someone-else');

/** A JSON answer of about 300 characters (with a non-ASCII letter), and the 60 chunks it is streamed in. */
const TEXT = JSON.stringify({ sentiment: 'positive', note: `Crème brûlée ${'was lovely and the service kind. '.repeat(9)}`.trim() });
const CHUNKS = TEXT.match(/[\s\S]{1,5}/g)!;
const FIELDS = 'type stepId offset text attemptId segment rung model newSegment done replayed stepStatus';

async function submit(text = 'great'): Promise<{ jobId: string; stepId: string }> {
  const { jobId } = await db.submitJob({ pipeline: streaming.name, input: { text }, tenantId: TENANT });
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
const cp = (s: string) => [...s].length;

/** Every batch starts where the previous one ended: no gap, nothing twice. */
function contiguous(t: any, ms: any[], from = 0): void {
  let at = from;
  for (const m of ms) {
    t.equal(m.offset, at, `batch at ${m.offset} follows on`);
    at += cp(m.text);
  }
}

/** The step's token log rows, and ballast_tokens notifications seen for it (counted by a LISTEN of the test's own). */
const listener = new pg.Client({ connectionString: url });
await listener.connect();
t.teardown(() => listener.end());
const notices: string[] = [];
listener.on('notification', (m) => notices.push(JSON.parse(m.payload!).step_id.toString()));
await listener.query('listen ballast_tokens');

t.test('live batches before the step completes, a mid-stream joiner, batching, the durable record', async (t) => {
  fake.script('openai', { text: TEXT, chunks: CHUNKS, everyChunkGapMs: 30 });
  const { jobId, stepId } = await submit();
  const early = subscribe(client, stepId);
  const firstAt: number[] = [];
  early.until((ms) => ms.length > 0 && firstAt.push(Date.now()) > 0, 20_000, "a first batch").catch(() => {});
  // A second subscriber joins once part of the text is in the log: it gets that part first, then the rest live.
  const deadline = Date.now() + 20_000;
  for (;;) {
    const { rows } = await pool.query('select count(*)::int as n from ballast_private.token_chunks where step_id = $1', [stepId]);
    if (rows[0].n >= 2) break;
    if (Date.now() > deadline) throw new Error('no batch of tokens was written');
    await new Promise((r) => setTimeout(r, 10));
  }
  const late = subscribe(operator, stepId);
  await early.ended(20_000);
  await late.ended(20_000);
  const job = await waitForJob(db, jobId);
  t.equal(job.status, 'completed');
  const request = fake.requests.at(-1)!;
  t.ok(request.body.stream, 'the call streamed');
  t.ok(firstAt[0]! < request.endedAt!, `the first batch arrived ${request.endedAt! - firstAt[0]!} ms before the model's stream ended`);

  for (const [who, sub] of [['early', early], ['mid-stream', late]] as const) {
    t.same(sub.errors, [], `${who}: no errors`);
    t.equal(textOf(sub.messages), TEXT, `${who}: the whole text, once`);
    contiguous(t, sub.messages);
    t.match(sub.messages.slice(-2), [{ type: 'attempt_end', done: false, offset: cp(TEXT), text: '' },
      { type: 'done', done: true, offset: cp(TEXT), text: '', stepStatus: 'succeeded' }], `${who}: the attempt's end, then done with the step's status`);
    t.match(sub.messages[0], { offset: 0, newSegment: true, segment: 1, rung: 'primary', model: 'openai:gpt-4o-mini' });
    t.ok(sub.done, `${who}: the subscription completed`);
  }
  t.ok(late.messages[0].replayed, 'the mid-stream joiner got the text so far as its backlog');
  t.ok(late.messages.some((m) => m.type === 'tokens' && !m.replayed), '...then live batches');
  t.notOk(early.messages[0].replayed, 'the early subscriber got everything live');

  const { rows } = await pool.query(`select text, first, done, start_offset, end_offset from ballast.model_tokens where step_id = $1 order by seq`, [stepId]);
  const mine = notices.filter((s) => s === stepId).length;
  t.ok(rows.length >= 3 && rows.length <= CHUNKS.length / 2, `${rows.length} rows (flushes) for ${CHUNKS.length} chunks of tokens`);
  t.equal(mine, rows.length, 'one NOTIFY per flush');
  t.equal(rows.map((r) => r.text).join(''), TEXT);
  t.same(rows.at(-1), { text: '', first: false, done: true, start_offset: cp(TEXT), end_offset: cp(TEXT) }, 'the attempt\'s end row');
  t.equal(early.messages.filter((m) => m.type === 'tokens').length, rows.length - 1, 'a live subscriber gets one message per flush');

  const [call] = (await pool.query('select raw_output from ballast.model_calls where step_id = $1', [stepId])).rows;
  t.equal(call.raw_output, TEXT, 'the durable record: the call\'s raw output');
  const [step] = await db.getSteps(jobId);
  t.same(step!.output, JSON.parse(TEXT), 'and the step\'s output');

  t.test('a subscriber after the end gets the whole stream, and one that resumes gets the rest', async (t) => {
    const after = subscribe(client, stepId);
    await after.ended();
    t.equal(textOf(after.messages), TEXT);
    t.ok(after.messages.slice(0, -1).every((m) => m.replayed), 'all of the text replayed (done is the subscription\'s own)');
    t.match(after.messages.slice(-2), [{ type: 'attempt_end', replayed: true }, { type: 'done', done: true, stepStatus: 'succeeded' }]);
    t.ok(after.messages.filter((m) => m.type === 'tokens').length < rows.length - 1, 'the backlog is merged per call');
    const resumed = subscribe(client, stepId, 20);
    await resumed.ended();
    t.equal(textOf(resumed.messages), [...TEXT].slice(20).join(''), 'from offset 20');
    contiguous(t, resumed.messages, 20);
    t.equal(resumed.messages[0].newSegment, false, 'a resume mid-call does not start a segment');
    const past = subscribe(client, stepId, 10_000);
    await past.ended();
    t.same(past.messages.map((m) => m.type), ['done'], 'past the end: only done');
    t.equal(past.messages[0].offset, 10_000, 'at the offset asked');
  });

  t.test('another tenant cannot follow it; a step that does not exist is NOT_FOUND', async (t) => {
    const other = subscribe(stranger, stepId);
    await other.ended();
    t.equal(other.errors[0]?.extensions?.code, 'NOT_FOUND');
    t.same(other.messages, []);
    const none = subscribe(operator, '999999');
    await none.ended();
    t.equal(none.errors[0]?.extensions?.code, 'NOT_FOUND');
    const negative = subscribe(operator, stepId, -1);
    await negative.ended();
    t.equal(negative.errors[0]?.extensions?.code, 'BAD_USER_INPUT');
    t.match(negative.errors[0]?.message, /fromOffset must be 0 or more/);
  });

  t.test('pruning: the token log goes, the final output stays', async (t) => {
    const kept = (await pool.query('select ballast.prune_token_chunks() as n')).rows[0].n;
    t.equal(kept, 0, 'kept for a minute after the step finished (late subscribers)');
    const n = (await pool.query(`select ballast.prune_token_chunks('0 seconds') as n`)).rows[0].n;
    t.equal(n, rows.length, 'then deleted');
    t.equal((await pool.query('select count(*)::int as n from ballast_private.token_chunks where step_id = $1', [stepId])).rows[0].n, 0);
    t.equal((await pool.query('select raw_output from ballast.model_calls where step_id = $1', [stepId])).rows[0].raw_output, TEXT);
    t.same((await db.getSteps(jobId))[0]!.output, JSON.parse(TEXT));
    const gone = subscribe(client, stepId);
    await gone.ended();
    t.same(gone.messages.map((m) => m.type), ['done'], 'a subscriber after pruning gets done at once');
  });
});

t.test('a re-ask starts a new segment', async (t) => {
  fake.script('openai', { text: 'Sure! Here it is', chunks: ['Sure! ', 'Here ', 'it is'], everyChunkGapMs: 20 },
    { text: TEXT, chunks: CHUNKS.slice(0, 1).concat(TEXT.slice(CHUNKS[0]!.length)), everyChunkGapMs: 20 });
  const { jobId, stepId } = await submit('again');
  const sub = subscribe(operator, stepId);
  await sub.ended(20_000);
  t.equal((await waitForJob(db, jobId)).status, 'completed');
  t.equal(textOf(sub.messages), `Sure! Here it is${TEXT}`, 'both answers, in order');
  contiguous(t, sub.messages);
  const starts = sub.messages.filter((m) => m.newSegment);
  t.match(starts, [{ segment: 1, rung: 'primary', offset: 0 }, { segment: 2, rung: 'reask', offset: 16 }], 'two segments, told apart');
});

t.test('a step that ends without streaming ends its subscribers with done (seen in the event stream)', async (t) => {
  const { jobId } = await db.submitJob({ pipeline: streaming.name, input: { text: 'later' }, tenantId: TENANT, delayMs: 3_600_000 });
  const [step] = await db.getSteps(String(jobId));
  const sub = subscribe(client, String(step!.id));
  await new Promise((r) => setTimeout(r, 300));
  t.same(sub.messages, [], 'nothing while the step waits to start');
  t.notOk(sub.done, 'still open');
  await db.cancelJob(String(jobId), 'test');
  await sub.ended(10_000);
  t.same(sub.errors, []);
  t.match(sub.messages, [{ type: 'done', done: true, offset: 0, text: '', attemptId: null, replayed: false, stepStatus: 'cancelled' }], 'done once the step is cancelled');
});

t.test('a model step without stream writes no tokens', async (t) => {
  const { rows } = await pool.query(`select count(*)::int as n from ballast_private.token_chunks c
     join ballast_private.steps s on s.id = c.step_id join ballast_private.jobs j on j.id = s.job_id where j.pipeline <> 'tokens.stream'`);
  t.equal(rows[0].n, 0);
});

t.test('ballast watch --tokens prints the text as it arrives, then the result', async (t) => {
  fake.script('openai', { text: TEXT, chunks: CHUNKS, everyChunkGapMs: 15 });
  const { jobId } = await submit('watch me');
  const lines: string[] = [];
  const code = await watchJob({ url, db, jobId, json: true, tokens: true, timeoutMs: 30_000, out: (l) => lines.push(l) });
  t.equal(code, 0);
  const parsed = lines.map((l) => JSON.parse(l));
  const tokens = parsed.filter((p) => p.type === 'tokens');
  t.equal(tokens.map((p) => p.text).join(''), TEXT, 'the whole text, once');
  const end = parsed.findIndex((p) => p.type === 'tokens_attempt_end');
  t.ok(end > 0 && end < parsed.length - 1, 'the end of the attempt\'s streaming before the final job');
  t.match(parsed[end], { attempt: 1, text: '' });
  t.match(tokens[0], { attempt: 1, new_segment: true, rung: 'primary' });
  t.ok(parsed.at(-1).job, 'the final job last');
  const text: string[] = [];
  const plain = await watchJob({ url, db, jobId, json: false, tokens: true, timeoutMs: 30_000, out: (l) => text.push(l) });
  t.equal(plain, 0);
  t.match(text.join('\n'), /step rate tokens \(attempt 1, primary openai:gpt-4o-mini, call 1\) "/, 'text mode names the attempt and the call');
  t.match(text.join('\n'), /step rate tokens end of attempt 1/, '...and the end of the attempt\'s streaming');
  const without: string[] = [];
  await watchJob({ url, db, jobId, json: false, timeoutMs: 30_000, out: (l) => without.push(l) });
  t.notOk(without.some((l) => / tokens /.test(l)), 'without --tokens the output is as before');
});
