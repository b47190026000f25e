// Pausable keys, rate limits and layered limits (migrations/0037_pauses_and_limits.sql, docs/flow-control.md; issue 15
// items 5, 6, 8), enforced at claim. The rules are shown at the SQL level on the controllable clock (no timing
// assumptions); what several workers do together is shown with three worker processes.
import t from 'tap';
import { fileURLToPath } from 'node:url';
import { eventually, freshDatabase, pgError, spawnNode, testWorker, waitForJob } from './helpers.ts';
import { closeGatePools, GATE_PIPELINES } from './fixtures/gate-tasks.ts';
import * as gates from '../src/db/gates.ts';

const { url, db, pool } = await freshDatabase(t);
process.env.GATE_DATABASE_URL = url;
t.teardown(closeGatePools);
for (const p of GATE_PIPELINES) await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
await pool.query(`create table public.gate_runs (id bigserial primary key, job_id bigint not null, worker text not null,
                    started_at timestamptz not null, ended_at timestamptz)`);
const fixture = fileURLToPath(new URL('./fixtures/gate-worker.ts', import.meta.url));
type Test = { teardown(fn: () => unknown): void };
const TASKS = GATE_PIPELINES.map((p) => `ballast_step:${p.name}@${p.version}`);

/** A session on the controllable clock that claims like a worker (ballast.claim_steps) without running anything. */
async function claimer(t: Test, start: string) {
  const c = await pool.connect();
  t.teardown(async () => {
    await c.query(`select set_config('ballast.now', '', false)`);
    c.release();
  });
  let now = new Date(start).getTime();
  const set = () => c.query(`select set_config('ballast.now', $1, false)`, [new Date(now).toISOString()]);
  await set();
  const worker = `claimer-${Math.random().toString(36).slice(2, 8)}`;
  await c.query(`select ballast.register_worker($1, 'test', 1, 1, '{}')`, [worker]);
  return {
    c,
    /** Claims up to n steps; returns the job ids of the steps claimed, in order. */
    claim: async (n = 10): Promise<string[]> =>
      (await c.query(`select job_id::text from ballast.claim_steps($1, $2, $3)`, [worker, TASKS, n])).rows.map((r) => r.job_id),
    advance: async (ms: number) => {
      now += ms;
      await set();
    },
    now: () => new Date(now),
  };
}

const submit = async (pipeline: string, input: Record<string, unknown>, tenantId = 'default') =>
  (await db.submitJob({ pipeline, input, tenantId })).jobId;
const stepOf = async (jobId: string) =>
  (await pool.query(`select status, attempts, attempt_offset, next_run_at, error from ballast_private.steps where job_id = $1`, [jobId])).rows[0];
/** Cleans up between tests: no live steps, pauses or limits left. */
async function clean(): Promise<void> {
  await pool.query(`update ballast_private.steps set status = 'cancelled', finished_at = ballast.now()
                     where status in ('queued', 'retrying', 'running', 'pending')`);
  await pool.query(`delete from ballast_private.pauses`);
  await pool.query(`delete from ballast_private.limits`);
  await pool.query(`truncate public.gate_runs`);
}

t.test('a paused key parks its steps without an attempt; resume wakes them at once; both are in the history', async (t) => {
  t.teardown(clean);
  const k = await claimer(t, '2031-01-01T00:00:00Z');
  const held = await submit('gates.calls', { provider: 'slow' });
  const free = await submit('gates.calls', { provider: 'fast' });
  const pause = await gates.pauseKey(k.c, { key: 'api:slow', reason: 'maintenance window', forMs: 600_000, actor: 'ops' });
  t.same(pause.until, new Date(k.now().getTime() + 600_000), 'paused for ten minutes of the database clock');
  t.same(await k.claim(), [free], 'only the step without the paused key is claimed');
  const parked = await stepOf(held);
  t.match(parked, { status: 'retrying', attempts: 0, error: { class: 'paused', key: 'api:slow' } }, 'parked, no attempt spent, the reason shown');
  t.same(new Date(parked.next_run_at), pause.until, 'until the pause ends');
  t.equal((await db.getJob(held))?.status, 'retrying', 'its job shows it is held back');
  await k.advance(60_000);
  t.same(await k.claim(), [], 'still paused a minute later');

  t.equal(await gates.resumeKey(k.c, 'api:slow', 'done early', 'ops'), true, 'resume: a pause was in force');
  t.same(await k.claim(), [held], 'the parked step is claimed at once after the resume');
  t.equal((await stepOf(held)).attempts, 1, 'its first attempt');
  t.equal(await gates.resumeKey(k.c, 'api:slow', null), false, 'resuming again: none in force');

  const history = (await db.gateHistory('api:slow')).reverse();
  t.match(history.map((h) => [h.action, h.reason, h.actor]), [['pause', 'maintenance window', 'ops'], ['resume', 'done early', 'ops'], ['resume', null, null]],
    'the pause and the resumes are in the history');
  const e = await pgError(() => pool.query(`delete from ballast_private.gate_history`));
  t.equal(e.code, 'BA009', 'the history is append-only');
});

t.test('pipeline, tenant and step keys are built in; a longer pause is kept; an open-ended one lasts until resumed', async (t) => {
  t.teardown(clean);
  const k = await claimer(t, '2031-02-01T00:00:00Z');
  const a = await submit('gates.stream', {}, 'acme');
  const b = await submit('gates.stream', {}, 'beta');
  await gates.pauseKey(k.c, { key: 'tenant:acme', reason: 'tenant over its contract' });
  t.same(await k.claim(), [b], 'tenant:acme held back, beta claimed');
  t.equal((await stepOf(a)).error.message.includes('until resumed'), true, 'open-ended: says until resumed');
  await k.advance(7_200_000);
  t.same(await k.claim(), [], 'two hours later it is still held (re-parked each hour)');
  await gates.resumeKey(k.c, 'tenant:acme', null);
  t.same(await k.claim(), [a]);

  const c = await submit('gates.stream', {});
  const first = await gates.pauseKey(k.c, { key: 'pipeline:gates.stream', reason: 'deploy', forMs: 3_600_000 });
  const second = await gates.pauseKey(k.c, { key: 'pipeline:gates.stream', reason: 'deploy, shorter', forMs: 60_000 });
  t.same(second.until, first.until, 'a shorter pause does not cut a longer one short');
  t.same(await k.claim(), [], 'the pipeline is paused');
  await gates.resumeKey(k.c, 'pipeline:gates.stream', null);
  await gates.pauseKey(k.c, { key: 'step:gates.stream.work', reason: 'this step only', forMs: 1000 });
  t.same(await k.claim(), [], 'the step key holds it too');
  await k.advance(1001);
  t.same(await k.claim(), [c], 'claimed once the pause has ended by itself');
});

t.test('a rate limit per key spaces claims evenly (GCRA) and holds steps back without spending attempts', async (t) => {
  t.teardown(clean);
  const k = await claimer(t, '2031-03-01T00:00:00Z');
  await db.setLimit({ pattern: 'tenant:*', kind: 'requests', amount: 2, perMs: 60_000, note: 'two a minute per tenant' });
  const acme = [await submit('gates.calls', {}, 'acme'), await submit('gates.calls', {}, 'acme'), await submit('gates.calls', {}, 'acme')];
  const beta = await submit('gates.calls', {}, 'beta');
  t.same(await k.claim(), [acme[0], beta], 'one per tenant now (one limit per matching key)');
  const held = await stepOf(acme[1]!);
  t.match(held, { status: 'retrying', attempts: 0, error: { class: 'rate_limited', key: 'tenant:acme' } });
  t.same(new Date(held.next_run_at), new Date(k.now().getTime() + 30_000), 'until the next slot, 30 s on');
  t.same(new Date((await stepOf(acme[2]!)).next_run_at), new Date(k.now().getTime() + 60_000), 'the one after it, a slot later');
  await k.advance(29_999);
  t.same(await k.claim(), [], 'not before its slot');
  await k.advance(1);
  t.same(await k.claim(), [acme[1]], 'at its slot');
  await k.advance(30_000);
  t.same(await k.claim(), [acme[2]], 'and the next one a slot later');
  const limits = await db.listLimits();
  t.match(limits, [{ pattern: 'tenant:*', kind: 'requests', amount: '2', per: '00:01:00', burst: '1', keysSeen: '2' }]);
});

t.test('layered limits: every limit of every key must admit a step, and a refused step consumes none', async (t) => {
  t.teardown(clean);
  const k = await claimer(t, '2031-04-01T00:00:00Z');
  // 100 weight units per minute per provider (e.g. tokens; a burst of 50), 2 running per provider, 3 per minute overall.
  await db.setLimit({ pattern: 'api:*', kind: 'weight', amount: 100, perMs: 60_000, burst: 50 });
  await db.setLimit({ pattern: 'api:*', kind: 'running', amount: 2 });
  await db.setLimit({ pattern: 'global', kind: 'requests', amount: 3, perMs: 60_000, burst: 3 });
  const big = await submit('gates.calls', { provider: 'x', tokens: 60 });
  const next = await submit('gates.calls', { provider: 'x', tokens: 10 });
  const other = await submit('gates.calls', { provider: 'y', tokens: 1 });
  const again = await submit('gates.calls', { provider: 'y', tokens: 1 });
  const fourth = await submit('gates.calls', { provider: 'y', tokens: 1 });
  t.same(await k.claim(), [big, other, again], 'global burst of 3: big (api:x) and two of api:y');
  t.match(await stepOf(next), { status: 'retrying', error: { class: 'rate_limited', key: 'api:x' } },
    'the weight limit holds api:x back: big spent 60 (36 s of its rate), 6.6 s more than its burst of 50 allows');
  t.same(new Date((await stepOf(next)).next_run_at), new Date(k.now().getTime() + 6_600));
  t.match(await stepOf(fourth), { status: 'retrying', error: { class: 'rate_limited', key: 'global' } },
    'the global rate holds the fourth back (its burst of 3 is spent)');
  t.same((await pool.query(`select gate_keys from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id where j.id = $1`, [other])).rows[0].gate_keys,
    ['global', 'tenant:default', 'pipeline:gates.calls', 'step:gates.calls.call', 'api:y'], 'a step admitted under a running limit records its keys');
  await k.advance(60_000);
  t.same(await k.claim(), [next], 'a minute later: api:x has weight left; api:y still runs two (its running limit)');
  t.match(await stepOf(fourth), { error: { class: 'concurrency_limited', key: 'api:y' } });
  await pool.query(`update ballast_private.steps set status = 'succeeded', output = 'true', finished_at = ballast.now()
                     where job_id = $1`, [other]);
  await k.advance(1000);
  t.same(await k.claim(), [fourth], 'once one of api:y finishes, the fourth runs');
});

t.test('a claim that picks again after parking counts what its earlier rounds admitted', async (t) => {
  t.teardown(clean);
  const k = await claimer(t, '2031-05-01T00:00:00Z');
  await db.setLimit({ pattern: 'api:*', kind: 'running', amount: 2 });
  await gates.pauseKey(k.c, { key: 'queue:stream', reason: 'hold the head of the queue' });
  for (let i = 0; i < 3; i++) await submit('gates.stream', {});
  const calls = [];
  for (let i = 0; i < 4; i++) calls.push(await submit('gates.calls', { provider: 'z' }));
  // Round 1 picks the three paused steps and the first call (parks three, admits one); round 2 picks three more calls.
  t.same(await k.claim(4), calls.slice(0, 2), 'two calls in all: the running limit of 2 counts the first round\'s');
});

t.test('claiming one given step (claim_step, the hand-off of complete_step_and_claim) passes the same gates', async (t) => {
  t.teardown(clean);
  const k = await claimer(t, '2031-06-01T00:00:00Z');
  const job = await submit('gates.calls', { provider: 'solo' });
  await gates.pauseKey(k.c, { key: 'api:solo', reason: 'closed', forMs: 60_000 });
  const { rows: [step] } = await pool.query(`select id from ballast_private.steps where job_id = $1`, [job]);
  const worker = (await k.c.query(`select id from ballast_private.workers where id like 'claimer-%' order by started_at desc limit 1`)).rows[0].id;
  t.same((await k.c.query(`select * from ballast.claim_step($1, $2)`, [step.id, worker])).rows, [], 'not claimed');
  t.match(await stepOf(job), { status: 'retrying', attempts: 0, error: { class: 'paused' } }, 'parked like claim_steps parks it');
});

t.test('bad arguments are refused, naming the field and what to pass; only operators may pause or limit', async (t) => {
  t.teardown(clean);
  const cases: [string, string, unknown[], RegExp][] = [
    ['key', `select * from ballast.pause_key($1, 'x')`, ['Tenant:acme'], /key: 'Tenant:acme' is not a key/],
    ['reason', `select * from ballast.pause_key('tenant:a', $1)`, [' '], /reason: is empty/],
    ['until', `select * from ballast.pause_key('tenant:a', 'x', $1)`, ['2000-01-01T00:00:00Z'], /until: ends at .* which is not after now/],
    ['kind', `select * from ballast.set_limit('tenant:*', $1, 5, '1 minute')`, ['tokens'], /kind: 'tokens' is not requests, weight or running/],
    ['per', `select * from ballast.set_limit('tenant:*', 'running', 5, $1)`, ['1 minute'], /per: is given for a running limit/],
    ['per', `select * from ballast.set_limit('tenant:*', 'requests', 5, $1)`, [null], /per: null is not between/],
    ['amount', `select * from ballast.set_limit('tenant:*', 'requests', $1, '1 minute')`, [0], /amount: 0 is not between 1/],
    ['pattern', `select * from ballast.set_limit($1, 'requests', 1, '1 minute')`, ['*'], /pattern: '\*' is not a key pattern/],
  ];
  for (const [field, text, values, message] of cases) {
    const e = await pgError(() => pool.query(text, values));
    t.equal(e.code, 'BA002', `${field}: BA002`);
    t.match(e.message, message, `${field}: ${e.message}`);
    t.ok(e.hint, `${field}: a hint says what to pass`);
  }
  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query('set local role ballast_client');
    const e = await pgError(() => c.query(`select * from ballast.pause_key('tenant:a', 'x')`));
    t.equal(e.code, '42501', 'a client may not pause keys');
  } finally {
    await c.query('rollback');
    c.release();
  }
});

t.test('in the DSL, keys and weights are checked when the pipeline is defined', async (t) => {
  const { pipeline } = await import('../src/pipeline/pipeline.ts');
  const { z } = await import('zod');
  const p = () => pipeline({ name: 'gates.bad', version: 1, input: z.object({}) });
  t.throws(() => p().step('a', { output: z.null(), keys: ['Queue:x'] }, () => null), /key "Queue:x" is not valid/);
  t.throws(() => p().step('a', { output: z.null(), keys: ['customer:{input}'] }, () => null), /has the placeholder \{input\}/);
  t.throws(() => p().step('a', { output: z.null(), weight: 'tokens' as never }, () => null), /weight "tokens" is not valid/);
  const ok = p().step('a', { output: z.null() }, () => null).definition() as { steps: Record<string, unknown>[] };
  t.notOk('keys' in ok.steps[0]! || 'weight' in ok.steps[0]!, 'a step without keys records none (its definition hash is unchanged)');
});

/** Starts three worker processes; resolves when all three run. */
async function threeWorkers(t: Parameters<typeof spawnNode>[0], concurrency: number): Promise<void> {
  const procs = ['w1', 'w2', 'w3'].map((name) => spawnNode(t, [fixture], {
    env: { ...process.env, DATABASE_URL: url, GATE_WORKER: name, GATE_CONCURRENCY: String(concurrency), LOG_FORMAT: 'json' },
  }));
  await Promise.all(procs.map((p) => p.waitForLine((line) => (line.includes('worker started') ? true : undefined), 60_000)));
}

t.test('a rate limit holds across three workers: at most the limit + 1 starts in any window', async (t) => {
  t.teardown(clean);
  await db.setLimit({ pattern: 'api:*', kind: 'requests', amount: 5, perMs: 1000 });
  await threeWorkers(t, 4);
  const jobs = await db.submitJobs({ pipeline: 'gates.calls', inputs: Array.from({ length: 30 }, () => ({ provider: 'shared' })) });
  for (const j of jobs) t.equal((await waitForJob(db, j.jobId, undefined, 60_000)).status, 'completed');
  const starts = (await pool.query<{ ms: number; worker: string }>(
    `select extract(epoch from a.started_at) * 1000 as ms, a.worker_id as worker from ballast_private.attempts a
      where a.job_id = any($1::bigint[]) and a.outcome is distinct from 'released' order by a.started_at`,
    [jobs.map((j) => j.jobId)])).rows;
  t.equal(starts.length, 30, 'each step started once (held back steps spent no attempt)');
  let most = 0;
  for (let i = 0; i < starts.length; i++) {
    let n = 0;
    while (i + n < starts.length && starts[i + n]!.ms - starts[i]!.ms < 1000) n++;
    most = Math.max(most, n);
  }
  t.ok(most <= 6, `at most 5 + 1 starts within any second (most: ${most})`);
  t.ok(starts.at(-1)!.ms - starts[0]!.ms >= 29 * 200 - 1, 'spaced 200 ms apart on average, as 5 per second means');
  t.ok(new Set(starts.map((s) => s.worker)).size >= 2, 'the starts came from several workers');
});

t.test('a paused key stops every worker within a second; a step can pause a key for everyone', async (t) => {
  t.teardown(clean);
  await threeWorkers(t, 4);
  const jobs = await db.submitJobs({ pipeline: 'gates.stream', inputs: Array.from({ length: 400 }, () => ({ ms: 40 })) });
  t.ok(await eventually(async () => (await pool.query(`select count(distinct worker)::int as n from public.gate_runs`)).rows[0].n === 3, 30_000),
    'all three workers run steps of queue:stream');
  const pause = await db.pauseKey({ key: 'queue:stream', reason: 'test: stop the stream', actor: 'test' });
  await new Promise((r) => setTimeout(r, 2500));
  const { rows } = await pool.query(`select count(*)::int as n, max(started_at) as last from public.gate_runs where started_at > $1::timestamptz + interval '1 second'`,
    [pause.pausedAt]);
  t.equal(rows[0].n, 0, `no step started later than a second after the pause (last start ${rows[0].last})`);
  const left = (await pool.query(`select count(*)::int as n from ballast_private.steps s where s.job_id = any($1::bigint[]) and s.status <> 'succeeded'`,
    [jobs.map((j) => j.jobId)])).rows[0].n;
  t.ok(left > 0, `steps are held back (${left} not done)`);
  await db.resumeKey('queue:stream', 'test: go on');
  for (const j of jobs) t.equal((await waitForJob(db, j.jobId, undefined, 60_000)).status, 'completed');

  // A step that meets a 429 closes its provider's key for every worker; the others wait, nobody spends attempts on it.
  await pool.query('truncate public.gate_runs');
  const first = await submit('gates.polite', { provider: 'p429', ms: 1500 });
  t.ok(await eventually(async () => (await db.listPauses()).some((p) => p.key === 'api:p429' && p.inForce), 20_000), 'the step paused api:p429');
  const others = await db.submitJobs({ pipeline: 'gates.calls', inputs: [{ provider: 'p429' }, { provider: 'p429' }] });
  for (const j of [first, ...others.map((o) => o.jobId)]) t.equal((await waitForJob(db, j, undefined, 30_000)).status, 'completed');
  const p = (await db.gateHistory('api:p429'))[0]!;
  t.match(p, { action: 'pause', reason: '429 from the provider, Retry-After' }, 'the pause is in the history');
  t.ok(p.stepId && p.actor?.startsWith('step '), 'with the step that paused it');
  const { rows: late } = await pool.query(`select count(*)::int as n from public.gate_runs where started_at < $1::timestamptz`, [p.until]);
  t.equal(late[0].n, 1, 'nothing else ran on api:p429 until the pause ended (only the first attempt)');
});

t.test('with an in-process worker: a running limit per provider holds at its number', async (t) => {
  t.teardown(clean);
  await db.setLimit({ pattern: 'api:*', kind: 'running', amount: 2 });
  await testWorker(t, url, { pipelines: GATE_PIPELINES, concurrency: 10 });
  const jobs = await db.submitJobs({ pipeline: 'gates.calls', inputs: Array.from({ length: 12 }, (_, i) => ({ provider: i % 2 ? 'a' : 'b', ms: 150 })) });
  for (const j of jobs) t.equal((await waitForJob(db, j.jobId, undefined, 60_000)).status, 'completed');
  const overlap = (await pool.query<{ provider: string; most: number }>(
    `select j.input ->> 'provider' as provider,
            max((select count(*) from public.gate_runs r2 join ballast_private.jobs j2 on j2.id = r2.job_id
                  where j2.input ->> 'provider' = j.input ->> 'provider'
                    and r2.started_at <= r.started_at and r2.ended_at > r.started_at))::int as most
       from public.gate_runs r join ballast_private.jobs j on j.id = r.job_id group by 1 order by 1`)).rows;
  t.same(overlap, [{ provider: 'a', most: 2 }, { provider: 'b', most: 2 }], 'at most two of each provider ran at once, and two did');
});
