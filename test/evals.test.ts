// Evals as data end to end (migration 0044, docs/evals.md): a dataset of six cases, a worker with a model step
// pipeline and evals on, the scripted fake LLM answering by the prompt's text (prompt v1 right, v2 wrong on the two
// refund cases). Runs of v1 and v2 are compared in SQL (the regressed cases listed) and by the CLI (exit 8; 0 for
// identical runs); every scorer kind gives its score; a run on the local model; a review-edited production step
// promoted to a case (and auto-promoted by resolve_review); a scheduled eval run fired on the SQL clock.
import t, { type Test } from 'tap';
import { z } from 'zod';

import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { ModelStore } from '../src/db/model-store.ts';
import { RetryableError } from '../src/errors.ts';
import { evalCommand, REGRESSED_EXIT_CODE } from '../src/cli/eval.ts';
import { FakeLLM, type RecordedRequest } from './support/fake-llm.ts';
import { runInProcess } from './support/cli-inproc.ts';
import { freshDatabase, pgError, testWorker, waitForJob } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);
const q = async (text: string, values: unknown[] = []) => (await pool.query(text, values)).rows;

const Label = z.object({ label: z.enum(['positive', 'negative', 'neutral']), score: z.number().min(-1).max(1) });
const CASES: Record<string, { text: string; reference: z.infer<typeof Label> }> = {
  a: { text: 'I love this product', reference: { label: 'positive', score: 0.9 } },
  b: { text: 'refund my money now, terrible', reference: { label: 'negative', score: -0.8 } },
  c: { text: 'it is okay', reference: { label: 'neutral', score: 0 } },
  d: { text: 'worst refund experience ever', reference: { label: 'negative', score: -0.9 } },
  e: { text: 'great service and fast shipping', reference: { label: 'positive', score: 0.8 } },
  f: { text: 'the package arrived', reference: { label: 'neutral', score: 0.1 } },
};
const byText = new Map(Object.values(CASES).map((c) => [c.text, c.reference]));

// The fake model: prompt v1 answers the reference; v2 answers neutral on refunds; the judge grades by equality;
// the review pipeline's prompt always gets an answer outside the contract.
fake.respond = (req: RecordedRequest) => {
  const user = String(req.body.messages?.at(-1)?.content ?? '');
  if (user.startsWith('JUDGE')) {
    const same = /output=(.*) reference=(.*)$/s.exec(user);
    return { text: JSON.stringify({ score: same && same[1] === same[2] ? 1 : 0.25, reason: 'compared' }), usage: { input: 50, output: 10 } };
  }
  if (user.startsWith('RATE')) return { text: '{"label": "angry", "score": 5}' };
  if (user.startsWith('v3 ')) return { text: 'I think it is positive' };
  const m = /^(v[12]) Classify: (.*)$/s.exec(user);
  const ref = m ? byText.get(m[2]!) : undefined;
  if (!m || !ref) return { status: 400, body: { error: { message: `fake: unexpected prompt ${user}` } } };
  const answer = m[1] === 'v2' && m[2]!.includes('refund') ? { label: 'neutral', score: 0 } : ref;
  return { text: JSON.stringify(answer), usage: { input: 100, output: 20 } };
};

const classifyV1 = prompt({ name: 'ev.classify', version: 1, user: 'v1 Classify: {{input.text}}' });
const classify = pipeline({ name: 'ev.classify', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('classify', { prompt: classifyV1, model: 'openai:gpt-4o-mini', output: Label, reasks: 0, retry: { maxAttempts: 2, baseDelayMs: 0 } });
const rate = pipeline({ name: 'ev.rate', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('rate', { prompt: prompt({ name: 'ev.rate', version: 1, user: 'RATE {{input.text}}' }), model: 'openai:gpt-4o-mini', output: Label, reasks: 0, review: true, retry: { maxAttempts: 1 } });

await q(`select ballast.register_prompt('ev.classify', 1, '{"system": null, "user": "v1 Classify: {{input.text}}"}')`);
await q(`select ballast.register_prompt('ev.classify', 2, '{"system": null, "user": "v2 Classify: {{input.text}}"}')`);
await q(`select ballast.register_prompt('ev.classify', 3, '{"system": null, "user": "v3 Classify: {{input.text}}"}')`);
await q(`select ballast.register_prompt('ev.judge', 1, '{"user": "JUDGE output={{output}} reference={{reference}}"}')`);
await q(`select ballast.add_eval_cases('ev.sentiment', $1::jsonb)`, [JSON.stringify(Object.entries(CASES).map(([key, c]) => ({
  key, input: { input: { text: c.text } }, reference: c.reference, tags: c.text.includes('refund') ? ['refund'] : [],
})))]);

// A step that names its prompt by label (prompts.md): an eval run without a version runs the label's version.
const labelled = pipeline({ name: 'ev.labelled', version: 1, input: z.object({ text: z.string() }) })
  .modelStep('classify', { prompt: 'ev.classify@production', model: 'openai:gpt-4o-mini', output: Label, reasks: 0, retry: { maxAttempts: 2, baseDelayMs: 0 } });
await q(`select ballast.set_prompt_label('ev.classify', 'production', 2, 'eval test')`);

await testWorker(t, url, {
  pipelines: [classify, rate, labelled], concurrency: 4,
  evals: { scorers: {
    label_ok: ({ output, reference }) => (output as { label: string }).label === (reference as { label: string }).label,
    // Throws a retryable error the first time it scores each case: the item is retried.
    flaky: ({ key }) => {
      if (flaked.has(key)) return true;
      flaked.add(key);
      throw new RetryableError(`flaky scorer: first try on ${key}`);
    },
  } },
});

const flaked = new Set<string>();
const SCORERS = [{ kind: 'exact' }, { kind: 'fields' }, { kind: 'numeric', path: 'score', tolerance: 0.1 }, { kind: 'schema' },
  { kind: 'function', name: 'label_ok' }];

async function evalRun(t: Test, params: string, values: unknown[]): Promise<{ runId: string; jobId: string }> {
  const [r] = await q(`select run_id::text as "runId", job_id::text as "jobId" from ballast.start_eval_run(${params})`, values);
  const job = await waitForJob(db, r.jobId, undefined, 60_000);
  t.equal(job.status, 'completed', `eval job ${r.jobId} completed`);
  return r;
}

let v1: string;
let v2: string;

t.test('prompt v2 against v1: the regressed cases are listed in SQL', async (t) => {
  v1 = (await evalRun(t, `'ev.sentiment', 'ev.classify', 'classify', p_prompt_version => 1, p_scorers => $1::jsonb, p_label => 'v1'`, [JSON.stringify(SCORERS)])).runId;
  v2 = (await evalRun(t, `'ev.sentiment', 'ev.classify', 'classify', p_prompt_version => 2, p_scorers => $1::jsonb, p_label => 'v2'`, [JSON.stringify(SCORERS)])).runId;
  const [run1] = await q(`select status, dataset_version, prompt_version, mean_score::float8, pass_rate::float8, summary from ballast.eval_runs where id = $1`, [v1]);
  t.match(run1, { status: 'completed', dataset_version: 1, prompt_version: 1, mean_score: 1, pass_rate: 1 });
  t.equal(run1.summary.scored, 6);
  const results = await q(`select case_key, score::float8, passed, scores, cost_usd::float8, contract_outcome, cardinality(model_call_ids) as calls
                             from ballast.eval_results where run_id = $1 order by case_key`, [v2]);
  t.equal(results.length, 6);
  const b = results.find((r) => r.case_key === 'b');
  t.match(b, { score: 0.2, passed: false, contract_outcome: 'valid_first_try', calls: 1 });
  t.same(b.scores, { exact: 0, fields: 0, 'numeric:score': 0, schema: 1, label_ok: 0 }, 'each scorer by name');
  t.ok(b.cost_usd > 0, 'the case carries its model call\'s cost');
  t.match(results.find((r) => r.case_key === 'a'), { score: 1, passed: true });
  // The calls were made with the v2 prompt text, traced under its name and version.
  const [traced] = await q(`select count(*)::int as n from ballast.model_calls m join ballast.eval_runs r on r.job_id = m.job_id
                             where r.id = $1 and m.prompt_name = 'ev.classify' and m.prompt_version = 2`, [v2]);
  t.equal(traced.n, 6, 'six calls traced with prompt ev.classify@2');

  const cmp = await q(`select case_key, base_score::float8, candidate_score::float8, delta::float8, change from ballast.compare_eval_runs($1, $2)`, [v1, v2]);
  t.same(cmp.filter((r) => r.change === 'regression').map((r) => r.case_key).sort(), ['b', 'd'], 'b and d regressed');
  t.same(cmp[0], { case_key: 'b', base_score: 1, candidate_score: 0.2, delta: -0.8, change: 'regression' }, 'regressions first');
  t.equal(cmp.filter((r) => r.change === 'same').length, 4);
  const [summary] = await q(`select paired_cases, mean_delta::float8, delta_ci_low::float8, delta_ci_high::float8, regressions, regressed
                               from ballast.eval_run_comparison($1, $2)`, [v1, v2]);
  t.match(summary, { paired_cases: 6, regressions: 2, regressed: true });
  t.ok(Math.abs(summary.mean_delta - (-1.6 / 6)) < 1e-3, `mean delta ${summary.mean_delta}`);
  t.ok(summary.delta_ci_low <= summary.mean_delta && summary.mean_delta <= summary.delta_ci_high, 'the interval holds the mean');
  const [again] = await q(`select delta_ci_low::float8, delta_ci_high::float8 from ballast.eval_run_comparison($1, $2)`, [v1, v2]);
  t.same([again.delta_ci_low, again.delta_ci_high], [summary.delta_ci_low, summary.delta_ci_high], 'the bootstrap is deterministic');
  const [loose] = await q(`select regressed from ballast.eval_run_comparison($1, $2, 0.9)`, [v1, v2]);
  t.equal(loose.regressed, false, 'a threshold above the drop lets it pass');
});

t.test('the CLI exits 8 on a regression and 0 for identical runs', async (t) => {
  const worse = await runInProcess(db, evalCommand, 'compare', v1, v2);
  t.equal(worse.code, REGRESSED_EXIT_CODE);
  t.match(worse.stdout, /b\s+regression/);
  t.match(worse.stdout, /REGRESSED/);
  const same = await runInProcess(db, evalCommand, 'compare', v1, v1);
  t.equal(same.code, 0);
  t.match(same.stdout, /^6 cases: .* 0 regressed/m);
  const improved = await runInProcess(db, evalCommand, 'compare', v2, v1);
  t.equal(improved.code, 0, 'v1 as candidate improves on v2');
  const json = await runInProcess(db, evalCommand, 'compare', v1, v2, '--json');
  t.match(JSON.parse(json.stdout), { summary: { regressed: true, regressions: 2 } });
  t.match(await runInProcess(db, evalCommand, 'compare', v1), { code: 2 });
  t.match(await runInProcess(db, evalCommand, 'compare', v1, '999999'), { code: 3 });
  t.match(await runInProcess(db, evalCommand, 'run', '--dataset', 'ev.sentiment', '--pipeline', 'ev.classify', '--step', 'nope'),
    { code: 4, stderr: /step: 'nope' is not a step of ev.classify@1/ }, 'a refusal is one line, exit 4');
  const cases = await runInProcess(db, evalCommand, 'cases', 'ev.sentiment');
  t.match(cases.stdout, /refund/);
});

t.test('a model-graded scorer: the judge runs through the ladder, traced and priced apart', async (t) => {
  const r = await evalRun(t, `'ev.sentiment', 'ev.classify', 'classify', p_prompt_version => 2,
    p_scorers => '[{"kind": "judge", "prompt": "ev.judge", "version": 1, "model": "openai:gpt-4o-mini"}]'`, []);
  const rows = await q(`select case_key, score::float8, scores, cost_usd::float8, judge_cost_usd::float8, cardinality(model_call_ids) as calls
                          from ballast.eval_results where run_id = $1 order by case_key`, [r.runId]);
  t.match(rows.find((x) => x.case_key === 'a'), { score: 1, calls: 2 });
  const b = rows.find((x) => x.case_key === 'b');
  t.equal(b.score, 0.25);
  t.equal(b.scores['judge:ev.judge@1:reason'], 'compared');
  t.ok(b.judge_cost_usd > 0 && b.cost_usd > 0 && b.judge_cost_usd !== b.cost_usd, 'the judge\'s cost is apart from the step\'s');
  const [outcomes] = await q(`select count(*) filter (where a.contract_outcome = 'valid_first_try')::int as ok from ballast.eval_results e
                                join ballast.attempts a on a.id = e.attempt_id where e.run_id = $1`, [r.runId]);
  t.equal(outcomes.ok, 6, 'the attempts keep the target\'s contract outcome');
});

t.test('the local model (local:wink, no network) in a run', async (t) => {
  const requests = fake.requests.length;
  const r = await evalRun(t, `'ev.sentiment', 'ev.classify', 'classify', p_model => 'local:wink', p_scorers => '[{"kind": "schema"}, {"kind": "fields", "fields": ["label"]}]'`, []);
  const rows = await q(`select case_key, output, scores, error from ballast.eval_results where run_id = $1 order by case_key`, [r.runId]);
  t.equal(rows.length, 6);
  for (const row of rows) t.equal(row.scores.schema ?? 0, row.error ? 0 : 1, `${row.case_key}: answered within the contract or recorded its error`);
  t.ok(rows.some((x) => x.error === null), 'local:wink answered');
  t.equal(fake.requests.length, requests, 'no call left the process');
  const [calls] = await q(`select count(*)::int as n from ballast.model_calls m join ballast.eval_runs r on r.job_id = m.job_id where r.id = $1 and m.provider = 'local'`, [r.runId]);
  t.ok(calls.n >= 6, 'traced as local calls');
});

t.test('a case the step fails for good scores 0 with its error; the run goes on; eval run --wait from the CLI', async (t) => {
  const cli = await runInProcess(db, evalCommand, 'run', '--dataset', 'ev.sentiment', '--pipeline', 'ev.classify', '--step', 'classify',
    '--prompt-version', '3', '--scorers', '[{"kind": "schema"}]', '--label', 'v3', '--wait', '--json');
  t.equal(cli.code, 0, cli.stderr ?? '');
  const run = JSON.parse(cli.stdout);
  t.match(run, { status: 'completed', promptVersion: 3, meanScore: 0, passRate: 0, summary: { scored: 6, errors: 6 } });
  const rows = await q(`select score::float8, passed, error, contract_outcome, output from ballast.eval_results where run_id = $1`, [run.id]);
  t.equal(rows.length, 6);
  for (const r of rows) t.match(r, { score: 0, passed: false, contract_outcome: 'rejected', output: null, error: { class: 'unparsable' } });
  const [cmp] = await q(`select regressions, regressed from ballast.eval_run_comparison($1, $2)`, [v1, run.id]);
  t.match(cmp, { regressions: 6, regressed: true });
});

t.test('a retried item reuses its answer (paid once) and its result still counts what the answer cost', async (t) => {
  const before = fake.requests.length;
  const r = await evalRun(t, `'ev.sentiment', 'ev.classify', 'classify', p_prompt_version => 1, p_scorers => '[{"kind": "function", "name": "flaky"}]'`, []);
  t.equal(fake.requests.length - before, 6, 'one provider call per case, none bought again');
  const rows = await q(`select e.case_key, e.score::float8, e.cost_usd::float8, a.number as attempt,
                               (select count(*)::int from ballast.model_calls m where m.id = any (e.model_call_ids) and m.reused_from is not null) as reused
                          from ballast.eval_results e join ballast.attempts a on a.id = e.attempt_id where e.run_id = $1`, [r.runId]);
  t.equal(rows.length, 6);
  for (const row of rows) {
    t.match(row, { score: 1, attempt: 2, reused: 1 }, `${row.case_key}: scored on the second attempt with the first one's answer`);
    t.ok(row.cost_usd > 0, `${row.case_key}: the original call's cost (${row.cost_usd})`);
  }
});

t.test('bad parameters are refused naming the parameter, and nothing is submitted', async (t) => {
  const [before] = await q(`select count(*)::int as n from ballast.jobs where pipeline = 'ballast.eval'`);
  t.match(await pgError(() => q(`select * from ballast.start_eval_run('ev.sentiment', 'ev.classify', 'nope')`)), { code: 'BA002', message: /step: 'nope' is not a step of ev.classify@1/ });
  t.match(await pgError(() => q(`select * from ballast.start_eval_run('ev.sentiment', 'ev.classify', 'classify', p_prompt_version => 9)`)), { code: 'BA002', message: /prompt_version: prompt ev.classify@9/ });
  t.match(await pgError(() => q(`select * from ballast.start_eval_run('nope', 'ev.classify', 'classify')`)), { code: 'BA007' });
  t.match(await pgError(() => q(`select * from ballast.start_eval_run('ev.sentiment', 'ev.classify', 'classify', p_scorers => '[{"kind": "numeric"}]')`)), { code: 'BA002', message: /scorers\[1\]/ });
  const [after] = await q(`select count(*)::int as n from ballast.jobs where pipeline = 'ballast.eval'`);
  t.equal(after.n, before.n);
});

async function reviewedStep(text: string): Promise<{ stepId: string; jobId: string }> {
  const { jobId } = await db.submitJob({ pipeline: 'ev.rate', input: { text } });
  await waitForJob(db, jobId, ['needs_review']);
  const [s] = await q(`select id::text from ballast.steps where job_id = $1 and name = 'rate'`, [jobId]);
  return { stepId: s.id, jobId };
}

t.test('a review-edited production step becomes a case: its real input, the edited output as reference', async (t) => {
  const { stepId, jobId } = await reviewedStep('the soup was cold');
  const edited = { label: 'negative', score: -0.6 };
  await new ModelStore(db).resolveReview(stepId, 'edit', { output: edited, reviewer: 'ana' });
  const [c] = await q(`select * from ballast.promote_to_dataset($1, 'ev.sentiment')`, [stepId]);
  t.match(c, { case_key: `ev.rate.rate:${stepId}`, dataset_version: 2, source_kind: 'review' });
  const [row] = await q(`select input, reference, source from ballast.eval_cases where id = $1`, [c.case_id]);
  t.same(row.input, { input: { text: 'the soup was cold' }, deps: {} }, 'the input is the step\'s real variables');
  t.same(row.reference, edited, 'the reference is the edited output');
  t.match(row.source, { kind: 'review', job_id: Number(jobId), step_id: Number(stepId), decision: 'edit', reviewer: 'ana', pipeline: 'ev.rate' });
  const cli = await runInProcess(db, evalCommand, 'promote', stepId, '--dataset', 'ev.sentiment', '--key', 'cold-soup');
  t.match(cli, { code: 0, stdout: /case cold-soup \(review\)/ });
});

t.test('auto-promotion: resolve_review adds the case in the decision\'s transaction', async (t) => {
  await q(`select ballast.create_dataset('ev.reviews', 'every reviewed rating')`);
  await q(`select ballast.set_auto_promotion('ev.rate', 'rate', 'ev.reviews')`);
  const { stepId } = await reviewedStep('loud but tasty');
  await new ModelStore(db).resolveReview(stepId, 'edit', { output: { label: 'positive', score: 0.4 }, reviewer: 'bo' });
  const rows = await q(`select case_key, reference, source_kind, input from ballast.eval_cases where dataset = 'ev.reviews'`);
  t.match(rows, [{ case_key: `ev.rate.rate:${stepId}`, reference: { label: 'positive', score: 0.4 }, source_kind: 'review', input: { input: { text: 'loud but tasty' } } }]);
  // A rejection is not among the decisions promoted by default.
  const other = await reviewedStep('no opinion');
  await new ModelStore(db).resolveReview(other.stepId, 'reject', { reviewer: 'bo' });
  const [n] = await q(`select count(*)::int as n from ballast.eval_cases where dataset = 'ev.reviews'`);
  t.equal(n.n, 1);
});

t.test('a scheduled eval run fires on the SQL clock and shows in the trend', async (t) => {
  await q(`select ballast.set_schedule('ev-nightly', 'ballast.eval', '0 3 * * *', $1::jsonb, p_tenant_id => 'evals')`,
    [JSON.stringify({ dataset: 'ev.sentiment', dataset_version: 1, pipeline: 'ev.classify', step: 'classify', prompt_version: 1, label: 'nightly' })]);
  const c = await pool.connect();
  try {
    const [slot] = await q(`select next_fire_at + interval '10 seconds' as at from ballast.schedules where name = 'ev-nightly'`);
    await c.query(`select set_config('ballast.now', $1, false)`, [slot.at.toISOString()]);
    const fired = (await c.query(`select schedule_name, fired from ballast.fire_schedules() where schedule_name = 'ev-nightly'`)).rows;
    t.match(fired, [{ fired: 1 }]);
  } finally {
    await c.query('reset ballast.now');
    c.release();
  }
  const [job] = await q(`select id::text from ballast.jobs where pipeline = 'ballast.eval' and input ->> 'label' = 'nightly'`);
  t.equal((await waitForJob(db, job.id, undefined, 60_000)).status, 'completed');
  const [run] = await q(`select id::text, created_by, mean_score::float8, dataset_version from ballast.eval_runs where job_id = $1`, [job.id]);
  t.match(run, { created_by: `job:${job.id}`, mean_score: 1, dataset_version: 1 });
  const trend = await q(`select run_id::text, prompt_version, mean_score::float8, delta_vs_previous::float8, returned_models
                           from ballast.eval_trend where dataset = 'ev.sentiment' and dataset_version = 1 order by created_at, run_id`);
  t.same(trend.map((r) => r.run_id).slice(0, 2), [v1, v2]);
  t.equal(trend.at(-1).run_id, run.id);
  t.same(trend.at(-1).returned_models, ['openai:gpt-4o-mini']);
  t.ok(trend.at(-1).delta_vs_previous !== null, 'the change since the previous run on the same dataset version');
});

t.test('a step that names a prompt label: the run uses the version the label points at', async (t) => {
  const { runId } = await evalRun(t, `'ev.sentiment', 'ev.labelled', 'classify', p_scorers => $1::jsonb`, [JSON.stringify(SCORERS)]);
  const [run] = await q(`select prompt_name, prompt_version from ballast.eval_runs where id = $1`, [runId]);
  t.same(run, { prompt_name: 'ev.classify', prompt_version: 2 }, 'production -> version 2');
  const cmp = await q(`select case_key from ballast.compare_eval_runs($1, $2) where change = 'regression' order by 1`, [v1, runId]);
  t.same(cmp.map((r) => r.case_key), ['b', 'd'], 'answered with the v2 words');
});
