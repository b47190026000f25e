// Prompts rolled out like code (migration 0041, docs/prompts.md): versions created from SQL, labels and canaries
// moved with an audit trail, and the version a job got pinned for its later steps, retries and replays. The SQL
// resolver is checked directly over 1,000 jobs (a 10 % canary routes 10 % +- 5 %), and end to end with a worker and
// the scripted fake LLM: which words each job's calls really sent.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { promptLabel, promptRef, storedPrompt } from '../src/model/prompt.ts';
import { ModelStore } from '../src/db/model-store.ts';
import * as prompts from '../src/db/prompts.ts';
import { FakeLLM } from './support/fake-llm.ts';
import { freshDatabase, pgError, testWorker, waitForJob, eventually } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const store = new ModelStore(db);

const Review = z.object({ sentiment: z.enum(['positive', 'negative', 'neutral']), score: z.number().min(-1).max(1) });
const GOOD = '{"sentiment":"positive","score":0.8}';
const SYSTEM = ['You rate restaurant reviews.', 'You rate restaurant reviews. Be strict.', 'You rate restaurant reviews. Be kind.'];

// Versions 1 to 3 of review.rate, created from SQL (as an operator would, without a deploy).
for (const system of SYSTEM) await prompts.createPromptVersion(pool, 'review.rate', system, 'Rate this review: {{input.text}}', 'alice');

const labelled = pipeline({ name: 'p.labelled', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: promptLabel('review.rate', 'production'), model: 'openai:gpt-4o-mini', output: Review,
    retry: { maxAttempts: 2, baseDelayMs: 0 }, callTimeoutMs: 2500 })
  .modelStep('again', { prompt: 'review.rate@production', model: 'openai:gpt-4o-mini', output: Review, after: ['rate'],
    retry: { maxAttempts: 1, baseDelayMs: 0 }, callTimeoutMs: 5000 });
const stored = pipeline({ name: 'p.stored', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: 'review.rate@3', model: 'openai:gpt-4o-mini', output: Review, retry: { maxAttempts: 1, baseDelayMs: 0 }, callTimeoutMs: 5000 });
const canary = pipeline({ name: 'p.canary', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: promptLabel('review.rate', 'canary-e2e'), model: 'openai:gpt-4o-mini', output: Review,
    retry: { maxAttempts: 1, baseDelayMs: 0 }, callTimeoutMs: 5000 });
const ghost = pipeline({ name: 'p.ghost', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: 'review.rate@ghost', model: 'openai:gpt-4o-mini', output: Review, retry: { maxAttempts: 3, baseDelayMs: 0 } });
// Registered but served by no worker: its jobs stay queued while the resolver is called for them directly.
const idle = pipeline({ name: 'p.idle', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: promptLabel('review.rate', 'bulk'), model: 'openai:gpt-4o-mini', output: Review });
await db.registerPipeline(idle.name, idle.version, idle.definition(), idle.inputJsonSchema());

await testWorker(t, url, { pipelines: [labelled, stored, canary, ghost], concurrency: 4 });

/** The system prompt the fake received for each call of a job, in order (read from the trace's prompt version). */
async function versionsOf(jobId: string): Promise<number[]> {
  return (await store.getModelCalls(jobId)).map((c) => c.prompt_version!);
}

t.test('the DSL: a label, a stored version and a version in code name themselves', async (t) => {
  t.equal(promptRef('review.rate@production').ref, 'review.rate@production');
  t.equal(promptRef('review.rate@3').constructor.name, 'StoredPrompt');
  t.equal(storedPrompt('review.rate', 2).ref, 'review.rate@2');
  t.throws(() => promptRef('review.rate'), /names no label or version: write "review.rate@production"/);
  t.throws(() => promptLabel('review.rate', 'Prod'), /label "Prod" is not valid/);
  t.throws(() => pipeline({ name: 'p.bad', version: 1, input: z.object({}) })
    .modelStep('x', { prompt: 'nope', model: 'openai:gpt-4o-mini', output: Review }), /names no label or version/);
  t.equal((labelled.definition() as any).steps[0].model.prompt, 'review.rate@production', 'the definition names the label');
});

t.test('create_prompt_version: the next version, immutable; the same words again return the newest', async (t) => {
  const again = await prompts.createPromptVersion(pool, 'review.rate', SYSTEM[2]!, 'Rate this review: {{input.text}}');
  t.same({ version: again.version, created: again.created }, { version: 3, created: false });
  const { rows } = await pool.query(`select version, template, created_by from ballast_private.prompts where name = 'review.rate' order by version`);
  t.same(rows.map((r) => [r.version, r.template.system, r.created_by]), SYSTEM.map((s, i) => [i + 1, s, 'alice']));
  const err = await pgError(() => pool.query(`select * from ballast.create_prompt_version('review.rate', null, '  ')`));
  t.equal(err.code, 'BA002');
  t.equal(err.message, 'user: is empty');
});

t.test('labels and canaries: every move audited; errors name the field, the problem and the fix', async (t) => {
  const set = await prompts.setPromptLabel(pool, 'review.rate', 'staging', 1, 'first cut', 'alice');
  t.same(set, { promptName: 'review.rate', label: 'staging', version: 1, canaryVersion: null, canaryShare: null });
  await prompts.setPromptCanary(pool, 'review.rate', 'staging', 2, 0.25, 'try strict', 'bob');
  await prompts.setPromptLabel(pool, 'review.rate', 'staging', 2, 'strict won', 'carol');
  const [label] = await prompts.listPromptLabels(pool, 'review.rate');
  t.match(label, { label: 'staging', version: 2, canaryVersion: null, canaryShare: null, updatedBy: 'carol' }, 'moving the label to the candidate promotes it: the canary ends');
  await prompts.setPromptCanary(pool, 'review.rate', 'staging', 3, 0.5, 'try kind', 'bob');
  t.equal(await prompts.clearPromptCanary(pool, 'review.rate', 'staging', 'kind was worse', 'bob'), true);
  t.equal(await prompts.clearPromptCanary(pool, 'review.rate', 'staging', 'again'), false, 'no canary: nothing to clear, nothing recorded');
  const history = (await prompts.promptLabelHistory(pool, 'review.rate')).reverse().filter((h) => h.label === 'staging');
  t.same(history.map((h) => [h.action, h.fromVersion, h.toVersion, h.canaryVersion, h.canaryShare, h.actor, h.reason]), [
    ['set', null, 1, null, null, 'alice', 'first cut'],
    ['canary', 1, 1, 2, 0.25, 'bob', 'try strict'],
    ['set', 1, 2, null, null, 'carol', 'strict won'],
    ['canary', 2, 2, 3, 0.5, 'bob', 'try kind'],
    ['clear_canary', 2, 2, 3, 0.5, 'bob', 'kind was worse'],
  ]);
  const refused = await pgError(() => pool.query(`delete from ballast_private.prompt_label_history`));
  t.equal(refused.code, 'BA009', 'the history is append-only');

  const errors: [string, string, RegExp][] = [
    [`select ballast.set_prompt_label('review.rate', 'staging', 9, 'x')`, 'version: prompt review.rate has no version 9 (its versions: 1, 2, 3)', /create_prompt_version/],
    [`select ballast.set_prompt_label('nope', 'staging', 1, 'x')`, 'version: prompt nope has no versions', /create_prompt_version/],
    [`select ballast.set_prompt_label('review.rate', 'Prod', 1, 'x')`, `label: 'Prod' is not a valid label`, /lower-case letter/],
    [`select ballast.set_prompt_label('review.rate', 'staging', 1, ' ')`, 'reason: is empty', /Say why/],
    [`select ballast.set_prompt_canary('review.rate', 'staging', 3, 1.5, 'x')`, 'share: 1.5 is not more than 0 and at most 1', /0\.1 for 10 %/],
    [`select ballast.set_prompt_canary('review.rate', 'staging', 3, 0, 'x')`, 'share: 0 is not more than 0 and at most 1', /clear_prompt_canary/],
    [`select ballast.set_prompt_canary('review.rate', 'staging', 2, 0.1, 'x')`, 'candidate_version: 2 is the version the label already points at', /move the label/],
    [`select ballast.set_prompt_canary('review.rate', 'staging', 7, 0.1, 'x')`, 'candidate_version: prompt review.rate has no version 7 (its versions: 1, 2, 3)', /create_prompt_version/],
    [`select ballast.set_prompt_canary('review.rate', 'qa', 2, 0.1, 'x')`, 'label: prompt review.rate has no label qa', /set_prompt_label\('review\.rate', 'qa'/],
  ];
  for (const [statement, message, hint] of errors) {
    const err = await pgError(() => pool.query(statement));
    t.equal(err.code, 'BA002', statement);
    t.equal(err.message, message);
    t.match(err.hint, hint);
  }
  t.equal((await prompts.promptLabelHistory(pool, 'review.rate')).filter((h) => h.label === 'staging').length, 5, 'refused moves leave no row');
});

t.test('resolve_prompt: a 10 % canary over 1,000 jobs routes 10 % +- 5 %, each job pinned once', async (t) => {
  await prompts.setPromptLabel(pool, 'review.rate', 'bulk', 1, 'stable');
  await prompts.setPromptCanary(pool, 'review.rate', 'bulk', 2, 0.1, 'canary v2 on 10 %');
  const jobs = await db.submitJobs({ pipeline: idle.name, inputs: Array.from({ length: 1000 }, (_, i) => ({ text: `review ${i}` })) });
  t.equal(jobs.length, 1000);
  const { rows } = await pool.query<{ arm: string; version: number; n: number }>(`
    select r.arm, r.version, count(*)::int as n
      from unnest($1::bigint[]) j(id), ballast.resolve_prompt(j.id, 'review.rate', 'bulk') r
     group by r.arm, r.version order by r.arm`, [jobs.map((j) => j.jobId)]);
  const canaryJobs = rows.find((r) => r.arm === 'canary');
  t.match(rows, [{ arm: 'canary', version: 2 }, { arm: 'stable', version: 1 }]);
  t.ok(canaryJobs!.n >= 50 && canaryJobs!.n <= 150, `${canaryJobs!.n} of 1000 jobs in the canary`);

  // The label moves and the canary grows: pinned jobs keep what they got; only new jobs see the change.
  await prompts.setPromptLabel(pool, 'review.rate', 'bulk', 3, 'v3 everywhere');
  await prompts.setPromptCanary(pool, 'review.rate', 'bulk', 2, 0.5, 'more canary');
  const again = await pool.query<{ arm: string; version: number; n: number }>(`
    select r.arm, r.version, count(*)::int as n
      from unnest($1::bigint[]) j(id), ballast.resolve_prompt(j.id, 'review.rate', 'bulk') r
     group by r.arm, r.version order by r.arm`, [jobs.map((j) => j.jobId)]);
  t.same(again.rows, rows, 'every job resolves to the version it was pinned to');
  const pins = await pool.query(`select count(*)::int as n from ballast.job_prompts where label = 'bulk'`);
  t.equal(pins.rows[0].n, 1000, 'one pin per job');

  const [fresh] = await db.submitJobs({ pipeline: idle.name, inputs: [{ text: 'new' }] });
  const r = await prompts.resolvePrompt(pool, fresh!.jobId, 'review.rate', 'bulk');
  const { rows: [bucket] } = await pool.query(`select ballast_private.prompt_bucket($1, 'review.rate') < 0.5 as canary`, [fresh!.jobId]);
  t.same([r.version, r.arm], bucket.canary ? [2, 'canary'] : [3, 'stable'], 'a new job gets the moved label (or the canary, by its bucket)');
  t.equal(r.template.system, SYSTEM[r.version - 1], 'with the version\'s words');
});

t.test('resolve_prompt: concurrent steps of one job agree on one pin', async (t) => {
  await prompts.setPromptLabel(pool, 'review.rate', 'race', 1, 'stable');
  await prompts.setPromptCanary(pool, 'review.rate', 'race', 2, 0.5, 'half');
  const ids = (await db.submitJobs({ pipeline: idle.name, inputs: Array.from({ length: 10 }, () => ({ text: 'x' })) })).map((j) => j.jobId);
  const results = await Promise.all(ids.flatMap((id) => Array.from({ length: 4 }, () => prompts.resolvePrompt(pool, id, 'review.rate', 'race').then((r) => ({ id, ...r })))));
  for (const id of ids) {
    const mine = results.filter((r) => r.id === id);
    t.equal(new Set(mine.map((r) => `${r.version}/${r.arm}`)).size, 1, `job ${id}: 4 racing resolutions, one answer`);
  }
  const { rows } = await pool.query(`select count(*)::int as n from ballast.job_prompts where label = 'race'`);
  t.equal(rows[0].n, 10);
  const err = await pgError(() => pool.query(`select * from ballast.resolve_prompt($1, 'review.rate', 'nolabel')`, [ids[0]]));
  t.equal(err.message, 'label: prompt review.rate has no label nolabel');
  const missing = await pgError(() => pool.query(`select * from ballast.resolve_prompt(-1, 'review.rate', 'race')`));
  t.equal(missing.code, 'BA007');
});

t.test('end to end: a label move reaches new jobs, while a job started before keeps its version across a retry, a later step and a replay', async (t) => {
  await prompts.setPromptLabel(pool, 'review.rate', 'production', 1, 'launch', 'alice');
  // Job A: its first call hangs until it times out (a retryable transport failure); the label moves meanwhile, after
  // the job was pinned and before its retry can start.
  fake.script('openai', { hang: 'headers' });
  const a = await db.submitJob({ pipeline: labelled.name, input: { text: 'great food' } });
  t.ok(await eventually(async () => (await pool.query(`select 1 from ballast.job_prompts where job_id = $1`, [a.jobId])).rowCount === 1, 10_000),
    'job A is pinned');
  await prompts.setPromptLabel(pool, 'review.rate', 'production', 2, 'strict is better', 'bob');
  const { rows: [moved] } = await pool.query(`select max(at) as at from ballast.prompt_label_history where label = 'production'`);
  fake.script('openai', { text: GOOD }, { text: GOOD });
  const jobA = await waitForJob(db, a.jobId);
  t.equal(jobA.status, 'completed');
  const attemptsA = await db.getAttempts(a.jobId);
  t.same(attemptsA.slice(0, 2).map((x) => [x.number, x.outcome, x.error_code]), [[1, 'failed', 'timeout'], [2, 'succeeded', null]], 'rate: a timeout, then a retry');
  t.ok(attemptsA[1]!.started_at.getTime() > moved.at.getTime(), 'the retry started after the label moved');
  t.same(await versionsOf(a.jobId), [1, 1, 1], 'the failed call, the retry and the next step: all version 1');
  t.ok(attemptsA.filter((x) => x.contract_outcome).every((x) => x.prompt_ref === 'review.rate@1'));

  // Job B, submitted after the move: version 2, and the fake received version 2's words.
  fake.script('openai', { text: GOOD }, { text: GOOD });
  const sent = fake.requests.length;
  const b = await db.submitJob({ pipeline: labelled.name, input: { text: 'bland food' } });
  t.equal((await waitForJob(db, b.jobId)).status, 'completed');
  t.same(await versionsOf(b.jobId), [2, 2]);
  t.same(fake.requests.slice(sent).map((r) => r.body.messages[0].content), [SYSTEM[1], SYSTEM[1]]);
  const pins = await pool.query(`select job_id::text, version, arm from ballast.job_prompts where label = 'production' order by job_id`);
  t.same(pins.rows, [{ job_id: a.jobId, version: 1, arm: 'stable' }, { job_id: b.jobId, version: 2, arm: 'stable' }]);

  // A replay of job A, after the move: its pinned version 1 again.
  fake.script('openai', { text: GOOD }, { text: GOOD });
  await db.replayJob(a.jobId, { fromStep: 'rate', reason: 'reproduce' });
  t.equal((await waitForJob(db, a.jobId)).status, 'completed');
  t.same(await versionsOf(a.jobId), [1, 1, 1, 1, 1], 'the replay used version 1');
});

t.test('end to end: a stored version named as name@3 is read from Postgres', async (t) => {
  fake.script('openai', { text: GOOD });
  const sent = fake.requests.length;
  const j = await db.submitJob({ pipeline: stored.name, input: { text: 'ok food' } });
  t.equal((await waitForJob(db, j.jobId)).status, 'completed');
  t.same(await versionsOf(j.jobId), [3]);
  t.equal(fake.requests[sent]!.body.messages[0].content, SYSTEM[2]);
});

t.test('end to end: a canary splits real jobs as the resolver says, and prompt_arms compares the arms', async (t) => {
  const since = (await pool.query(`select ballast.now() as now`)).rows[0].now;
  await prompts.setPromptLabel(pool, 'review.rate', 'canary-e2e', 1, 'stable');
  await prompts.setPromptCanary(pool, 'review.rate', 'canary-e2e', 3, 0.3, '30 % on kind');
  const n = 30;
  fake.script('openai', ...Array.from({ length: n }, () => ({ text: GOOD, usage: { input: 100, output: 10 } })));
  const jobs = await db.submitJobs({ pipeline: canary.name, inputs: Array.from({ length: n }, (_, i) => ({ text: `r${i}` })) });
  for (const j of jobs) t.equal((await waitForJob(db, j.jobId)).status, 'completed');
  const { rows } = await pool.query<{ job_id: string; version: number; arm: string; canary: boolean }>(`
    select jp.job_id::text, jp.version, jp.arm, ballast_private.prompt_bucket(jp.job_id, 'review.rate') < 0.3 as canary
      from ballast.job_prompts jp where jp.label = 'canary-e2e'`);
  t.equal(rows.length, n, 'every job pinned');
  for (const r of rows) {
    t.equal(r.arm, r.canary ? 'canary' : 'stable', `job ${r.job_id}: the arm its bucket says`);
    t.same(await versionsOf(r.job_id), [r.canary ? 3 : 1], `job ${r.job_id}: its call used its pinned version`);
  }
  const canaryJobs = rows.filter((r) => r.arm === 'canary').length;
  const arms = await prompts.promptArms(pool, 'review.rate', 'canary-e2e', since);
  t.same(arms.map((a) => [a.version, a.arm, a.jobs, a.attempts, a.firstPassRate, a.calls]),
    [[1, 'stable', n - canaryJobs, n - canaryJobs, 1, n - canaryJobs], [3, 'canary', canaryJobs, canaryJobs, 1, canaryJobs]].filter((r) => r[2] !== 0));
  for (const a of arms) {
    t.equal(a.fallbackRate, 0);
    t.equal(a.rejectionRate, 0);
    t.ok(a.costUsd > 0 && a.costPerSuccess! > 0 && a.meanLatencyMs !== null, `arm ${a.arm}: cost and latency`);
  }
});

t.test('end to end: a step naming a label that does not exist fails at once, saying how to create it', async (t) => {
  const sent = fake.requests.length;
  const j = await db.submitJob({ pipeline: ghost.name, input: { text: 'x' } });
  t.equal((await waitForJob(db, j.jobId)).status, 'failed');
  const attempts = await db.getAttempts(j.jobId);
  t.equal(attempts.length, 1, 'not retried: a retry would not create the label');
  t.match(attempts[0], { error_class: 'prompt', error_code: 'unknown_label', error_message: /label: prompt review\.rate has no label ghost \(Point it at a version: select ballast\.set_prompt_label/ });
  t.equal(fake.requests.length, sent, 'no model call');
});
