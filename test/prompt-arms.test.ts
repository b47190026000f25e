// A prompt canary's arms compared on production traffic (migration 0046, docs/prompts.md#comparing-the-arms): a real
// worker runs jobs of steps that name a label with a 50 % canary, against the scripted fake LLM whose answers depend
// on the prompt's words: version 1 answers valid JSON with a good score; version 2 answers outside the contract on
// the first call of every other job (a re-ask repairs it) and with scores 0.3 lower; version 3 behaves like version
// 1. Then ballast.compare_prompt_arms, the CLI (`prompts compare`, exit 8 on a regression) and GraphQL
// (comparePromptArms) give the verdict: regressed for 1 -> 2, not for 1 -> 3, no verdict on 6 jobs.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { promptLabel } from '../src/model/prompt.ts';
import * as prompts from '../src/db/prompts.ts';
import { promptsCommand } from '../src/cli/prompts.ts';
import { REGRESSED_EXIT_CODE } from '../src/cli/eval.ts';
import { FakeLLM, type RecordedRequest } from './support/fake-llm.ts';
import { runInProcess } from './support/cli-inproc.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';
import { freshDatabase, pgError, testWorker, waitForJob } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);

// The fake model reads the version from the words of the user message ("T<version> ticket <n>").
fake.respond = (req: RecordedRequest) => {
  const messages: { role: string; content: unknown }[] = req.body.messages ?? [];
  const first = String(messages.find((m) => m.role === 'user')?.content ?? '');
  const m = /^T([123]) ticket (\d+)$/.exec(first);
  if (!m) return { status: 400, body: { error: { message: `fake: unexpected prompt ${first}` } } };
  const [version, n] = [Number(m[1]), Number(m[2])];
  const reask = messages.filter((x) => x.role === 'user').length > 1;
  const usage = { input: 100, output: 10 };
  if (version === 2 && !reask && n % 2 === 0) return { text: '{"priority": "urgent?", "confidence": 2}', usage };
  const confidence = (version === 2 ? 0.2 : 0.5) + (n % 5) / 10;
  return { text: JSON.stringify({ priority: n % 3 === 0 ? 'high' : 'low', confidence }), usage };
};

for (const v of [1, 2, 3]) await prompts.createPromptVersion(pool, 'ticket.triage', null, `T${v} ticket {{input.n}}`, 'alice');

const Triage = z.object({ priority: z.enum(['low', 'high']), confidence: z.number().min(0).max(1) });
const triage = (label: string) => pipeline({ name: `arms.${label}`, version: 1, input: z.object({ n: z.number().int() }) })
  .modelStep('triage', { prompt: promptLabel('ticket.triage', label), model: 'openai:gpt-4o-mini', output: Triage, reasks: 1,
    quality: { score: (o) => o.confidence, threshold: 0.1, onFail: 'fallback' }, retry: { maxAttempts: 2, baseDelayMs: 0 }, callTimeoutMs: 5000 });
const labels = { production: [2, 60], steady: [3, 40], small: [2, 6] } as const;
const pipelines = Object.keys(labels).map(triage);
await testWorker(t, url, { pipelines, concurrency: 8 });

const since = (await pool.query(`select ballast.now() as now`)).rows[0].now as Date;
t.test('the worker runs each label\'s jobs, half of them on the canary', async (t) => {
  for (const [label, [candidate, jobs]] of Object.entries(labels)) {
    await prompts.setPromptLabel(pool, 'ticket.triage', label, 1, 'stable', 'alice');
    await prompts.setPromptCanary(pool, 'ticket.triage', label, candidate, 0.5, `half on v${candidate}`, 'alice');
    const submitted = await db.submitJobs({ pipeline: `arms.${label}`, inputs: Array.from({ length: jobs }, (_, n) => ({ n })) });
    const statuses = new Set<string>();
    for (const j of submitted) statuses.add((await waitForJob(db, j.jobId)).status);
    t.same([...statuses], ['completed'], `${label}: ${jobs} jobs completed`);
  }
});
const cli = (...args: string[]) => runInProcess(db, promptsCommand, 'compare', 'ticket.triage', ...args);

t.test('a candidate that fails the contract more often and scores lower: regressed, the CLI exits 8', async (t) => {
  const r = await prompts.comparePromptArms(pool, 'ticket.triage', 'production', { since, minSamples: 10 });
  t.same([r.base.versions, r.candidate.versions], [[1], [2]]);
  t.equal(r.base.jobs + r.candidate.jobs, 60);
  t.ok(r.base.jobs >= 10 && r.candidate.jobs >= 10, `the 50 % canary split 60 jobs ${r.base.jobs} / ${r.candidate.jobs}`);
  t.same([r.base.attempts, r.candidate.attempts], [r.base.jobs, r.candidate.jobs], 'one attempt per job');
  t.equal(r.base.firstPassRate, 1);
  const { rows: [odd] } = await pool.query(`select count(*) filter (where (j.input ->> 'n')::int % 2 = 1)::float8 / count(*) as rate
      from ballast.job_prompts jp join ballast.jobs j on j.id = jp.job_id where jp.label = 'production' and jp.arm = 'canary'`);
  t.equal(r.candidate.firstPassRate, Math.round(odd.rate * 10000) / 10000, `candidate first-pass rate ${r.candidate.firstPassRate}: its jobs of odd n (the even ones were re-asked)`);
  t.ok(r.firstPassDeltaCiLow! < r.firstPassDelta! && r.firstPassDelta! < r.firstPassDeltaCiHigh! && r.firstPassDeltaCiHigh! < 0,
    `first-pass delta ${r.firstPassDelta} in [${r.firstPassDeltaCiLow}, ${r.firstPassDeltaCiHigh}], entirely below 0`);
  t.same([r.base.fallbackRate, r.candidate.fallbackRate, r.base.rejectionRate, r.candidate.rejectionRate, r.reviewDelta], [0, 0, 0, 0, 0]);
  t.same([r.base.scoredCalls, r.candidate.scoredCalls], [r.base.jobs, r.candidate.jobs], 'the invalid answers have no score');
  t.ok(Math.abs(r.scoreDelta! + 0.3) < 0.1, `score delta ${r.scoreDelta} (about -0.3)`);
  t.ok(r.scoreDeltaCiLow! < r.scoreDelta! && r.scoreDelta! < r.scoreDeltaCiHigh! && r.scoreDeltaCiHigh! < 0, `score interval [${r.scoreDeltaCiLow}, ${r.scoreDeltaCiHigh}]`);
  t.ok(r.candidate.costPerSuccess! > r.base.costPerSuccess!, 'a re-ask costs a second call: the candidate costs more per success');
  t.ok(r.costPerSuccessDelta! > 0);
  t.ok(r.base.latencyP50Ms !== null && r.candidate.latencyP95Ms !== null && r.latencyP95DeltaMs !== null, 'latency per arm and its deltas');
  t.same([r.enoughData, r.regressed], [true, true]);

  const arms = await prompts.promptArms(pool, 'ticket.triage', 'production', since);
  t.same(arms.map((a) => [a.arm, a.jobs, a.firstPassRate, a.meanScore]),
    [['stable', r.base.jobs, r.base.firstPassRate, r.base.meanScore], ['canary', r.candidate.jobs, r.candidate.firstPassRate, r.candidate.meanScore]],
    'the same numbers as prompt_arms');
  const again = await prompts.comparePromptArms(pool, 'ticket.triage', 'production', { since, minSamples: 10 });
  t.same({ ...again, until: r.until }, r, 'the intervals are the same on every call (until defaults to now)');

  const lenient = await prompts.comparePromptArms(pool, 'ticket.triage', 'production', { since, minSamples: 10, threshold: 0.9 });
  t.equal(lenient.regressed, false, 'a threshold of 0.9 tolerates the drop');

  const out = await cli('production', '--since', since.toISOString(), '--min-samples', '10');
  t.equal(out.code, REGRESSED_EXIT_CODE, 'exit 8');
  t.match(out.stdout, /first pass rate\s+1\s+0\.\d+\s+-0\.\d+\s+-0\.\d+ to -0\.\d+/);
  t.match(out.stdout, /REGRESSED/);
  const json = await cli('production', '--since', since.toISOString(), '--min-samples', '10', '--json');
  t.equal(json.code, 8);
  t.match(JSON.parse(json.stdout), { regressed: true, enoughData: true, base: { versions: [1], firstPassRate: 1 }, candidate: { versions: [2] } });
});

t.test('a candidate that behaves like the stable version: not regressed, exit 0', async (t) => {
  // The scores vary by job (0.5 to 0.9) in both arms, so the arms' means differ by chance; a threshold of 0.05 is
  // the tolerance a CI gate would set (the chance of an interval wholly below -0.05 here is about 0.1 %).
  const r = await prompts.comparePromptArms(pool, 'ticket.triage', 'steady', { since, minSamples: 10, threshold: 0.05 });
  t.same([r.base.versions, r.candidate.versions, r.base.jobs + r.candidate.jobs], [[1], [3], 40]);
  t.same([r.base.firstPassRate, r.candidate.firstPassRate, r.firstPassDelta], [1, 1, 0]);
  t.ok(r.firstPassDeltaCiLow! < 0 && r.firstPassDeltaCiHigh! > 0, 'the interval of no change straddles 0');
  t.ok(r.scoreDeltaCiLow! <= r.scoreDelta! && r.scoreDelta! <= r.scoreDeltaCiHigh!);
  t.same([r.enoughData, r.regressed], [true, false]);
  const out = await cli('steady', '--since', since.toISOString(), '--min-samples', '10', '--threshold', '0.05');
  t.equal(out.code, 0);
  t.match(out.stdout, /ok: the candidate does not regress/);
});

t.test('too few jobs: enough_data false, no verdict, exit 0', async (t) => {
  const r = await prompts.comparePromptArms(pool, 'ticket.triage', 'small', { since });
  t.equal(r.base.jobs + r.candidate.jobs, 6);
  t.same([r.enoughData, r.regressed], [false, false], 'a worse candidate on 6 jobs gets no verdict (default: 20 attempts per arm)');
  const out = await cli('small', '--since', since.toISOString());
  t.equal(out.code, 0);
  t.match(out.stdout, /not enough data/);
  const none = await prompts.comparePromptArms(pool, 'ticket.triage', 'nolabel');
  t.match(none, { base: { jobs: 0, attempts: 0, firstPassRate: null, versions: [] }, candidate: { jobs: 0 }, enoughData: false, regressed: false },
    'a label without traffic: one row, counts 0');
});

t.test('bad arguments name the parameter (BA002); the CLI says which flag', async (t) => {
  const cases: [string, string][] = [
    [`select * from ballast.compare_prompt_arms('ticket.triage', 'production', null, null, 1.5)`, 'threshold: 1.5 is not from 0 to 1'],
    [`select * from ballast.compare_prompt_arms('ticket.triage', 'production', null, null, -0.1)`, 'threshold: -0.1 is not from 0 to 1'],
    [`select * from ballast.compare_prompt_arms('ticket.triage', 'production', null, null, 0, 0)`, 'min_samples: 0 is not a positive number'],
    [`select * from ballast.compare_prompt_arms('ticket.triage', 'production', null, null, 0, 20, 0)`, 'resamples: 0 is not from 1 to 100000'],
    [`select * from ballast.compare_prompt_arms('Ticket', 'production')`, `name: 'Ticket' is not a valid prompt name`],
    [`select * from ballast.compare_prompt_arms('ticket.triage', 'Prod')`, `label: 'Prod' is not a valid label`],
  ];
  for (const [statement, message] of cases) {
    const err = await pgError(() => pool.query(statement));
    t.equal(err.code, 'BA002', statement);
    t.equal(err.message, message);
    t.ok(err.hint, 'with a hint');
  }
  const window = await pgError(() => pool.query(`select * from ballast.compare_prompt_arms('ticket.triage', 'production', '2026-12-02', '2026-12-01')`));
  t.equal(window.code, 'BA002');
  t.match(window.message, /^until: .* is not after since/);
  t.match(await cli('production', '--threshold', '2'), { code: 2, stderr: /--threshold 2 is not a number from 0 to 1/ });
  t.match(await cli('production', '--min-samples', '0'), { code: 2, stderr: /--min-samples 0 is not an integer/ });
  t.match(await cli('production', '--since', 'yesterday'), { code: 2, stderr: /--since yesterday is not a time/ });
  t.match(await cli('Prod'), { code: 4, stderr: /label: 'Prod' is not a valid label/ }, 'a refusal of Postgres: exit 4');
});

t.test('GraphQL: comparePromptArms for operators and reporters; a client is FORBIDDEN; a bad threshold names it', async (t) => {
  const server = await testServer(t, url);
  const QUERY = `query ($label: String, $since: Datetime, $threshold: Float, $minSamples: Int) {
    comparePromptArms(name: "ticket.triage", label: $label, since: $since, threshold: $threshold, minSamples: $minSamples) {
      promptName label base { versions jobs firstPassRate meanScore } candidate { versions jobs firstPassRate meanScore }
      firstPassDelta firstPassDeltaCiHigh scoreDelta scoreDeltaCiLow scoreDeltaCiHigh enoughData regressed } }`;
  const vars = { label: 'production', since: since.toISOString(), minSamples: 10 };
  const expected = await prompts.comparePromptArms(pool, 'ticket.triage', 'production', { since, minSamples: 10 });
  for (const role of ['operator', 'reporter'] as const) {
    const r = (await data(server, QUERY, vars, await token(role))).comparePromptArms;
    t.match(r, { promptName: 'ticket.triage', label: 'production', base: { versions: [1], jobs: expected.base.jobs, firstPassRate: 1 },
      candidate: { versions: [2], jobs: expected.candidate.jobs }, scoreDeltaCiHigh: expected.scoreDeltaCiHigh, enoughData: true, regressed: true }, role);
  }
  const forbidden = errorOf(await gql(server, QUERY, vars, await token('client', 'acme')));
  t.equal(forbidden.code, 'FORBIDDEN');
  t.match(forbidden.message, /comparePromptArms needs an operator or reporter token/);
  const bad = errorOf(await gql(server, QUERY, { ...vars, threshold: 3 }, await token('operator')));
  t.equal(bad.code, 'INVALID_INPUT');
  t.match(bad.message, /threshold: 3 is not from 0 to 1/);
});
