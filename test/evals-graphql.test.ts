// Evals over GraphQL (src/server/eval-mutations.ts): an operator adds cases, starts an eval run (its job waits for a
// worker with evals), promotes a step and compares two runs with the verdict; a reporter compares; a client token is
// FORBIDDEN; an input mistake is INVALID_INPUT naming the field.
import t from 'tap';
import { freshDatabase } from './helpers.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';
import { wordstats } from '../tasks/demo.ts';

const { url, pool, db } = await freshDatabase(t);
await db.registerPipeline(wordstats.name, wordstats.version, wordstats.definition(), wordstats.inputJsonSchema());
const server = await testServer(t, url);
const operator = await token('operator', undefined, { subject: 'ann' });
const reporter = await token('reporter');
const client = await token('client', 'acme');

const ADD = `mutation ($input: AddEvalCasesInput!) { addEvalCases(input: $input) { cases { caseId caseKey datasetVersion } } }`;
const COMPARE = `query ($base: BigInt!, $candidate: BigInt!, $threshold: Float) { compareEvalRuns(base: $base, candidate: $candidate, threshold: $threshold) {
  summary { pairedCases meanDelta deltaCiLow deltaCiHigh regressions improvements regressed }
  cases { caseKey baseScore candidateScore delta change } } }`;

t.test('an operator adds cases, compares two runs, promotes a step', async (t) => {
  const added = (await data(server, ADD, { input: { dataset: 'gql.ds', cases: [
    { key: 'a', input: { input: { text: 'one' } }, reference: { n: 1 } },
    { key: 'b', input: { input: { text: 'two' } }, reference: { n: 2 } },
  ] } }, operator)).addEvalCases;
  t.match(added.cases, [{ caseKey: 'a', datasetVersion: 1 }, { caseKey: 'b', datasetVersion: 1 }]);
  const [r1] = (await pool.query(`select ballast.import_eval_run('gql.ds', '[{"key": "a", "score": 1}, {"key": "b", "score": 1}]', 'base') as id`)).rows;
  const [r2] = (await pool.query(`select ballast.import_eval_run('gql.ds', '[{"key": "a", "score": 1}, {"key": "b", "score": 0}]', 'cand') as id`)).rows;
  const cmp = (await data(server, COMPARE, { base: String(r1.id), candidate: String(r2.id) }, operator)).compareEvalRuns;
  t.match(cmp.summary, { pairedCases: 2, meanDelta: -0.5, regressions: 1, regressed: true });
  t.same(cmp.cases[0], { caseKey: 'b', baseScore: 1, candidateScore: 0, delta: -1, change: 'regression' });
  const byReporter = (await data(server, COMPARE, { base: String(r1.id), candidate: String(r1.id) }, reporter)).compareEvalRuns;
  t.match(byReporter.summary, { regressed: false, regressions: 0 });

  const { jobId } = await db.submitJob({ pipeline: 'demo.wordstats', input: { text: 'a b' } });
  const [step] = (await pool.query(`select id::text from ballast.steps where job_id = $1 and name = 'normalize'`, [jobId])).rows;
  const promoted = (await data(server, `mutation ($input: PromoteToDatasetInput!) { promoteToDataset(input: $input) { caseKey datasetVersion sourceKind } }`,
    { input: { stepId: step.id, dataset: 'gql.ds', reference: { words: ['a', 'b'] } } }, operator)).promoteToDataset;
  t.match(promoted, { caseKey: `demo.wordstats.normalize:${step.id}`, datasetVersion: 2, sourceKind: 'production' });
  const runs = (await data(server, `{ evalRuns(dataset: "gql.ds") { id label status meanScore passRate summary createdAt } }`, {}, reporter)).evalRuns;
  t.match(runs, [{ id: String(r2.id), label: 'cand', status: 'imported', meanScore: 0.5, passRate: 0.5, summary: { scored: 2 } },
    { id: String(r1.id), label: 'base', meanScore: 1 }], 'newest first, as a reporter');
  const cases = (await data(server, `{ evalCases(dataset: "gql.ds") { caseKey input reference tags sourceKind source addedInVersion } }`, {}, operator)).evalCases;
  t.equal(cases.length, 3);
  t.match(cases.find((c: any) => c.sourceKind === 'production'), { input: { input: { text: 'a b' }, deps: {} }, reference: { words: ['a', 'b'] }, source: { step: 'normalize' } });
  t.equal(errorOf(await gql(server, `{ evalCases(dataset: "gql.ds") { caseKey } }`, {}, client)).code, 'FORBIDDEN', 'clients see no eval data');
  const auto = (await data(server, `mutation { setAutoPromotion(input: { pipeline: "demo.wordstats", step: "normalize", dataset: "gql.ds" }) { done } }`, {}, operator)).setAutoPromotion;
  t.same(auto, { done: true });
});

t.test('startEvalRun submits the eval job; mistakes name the field', async (t) => {
  const START = `mutation ($input: StartEvalRunInput!) { startEvalRun(input: $input) { runId jobId } }`;
  const bad = errorOf(await gql(server, START, { input: { dataset: 'gql.ds', pipeline: 'demo.wordstats', step: 'count' } }, operator));
  t.equal(bad.code, 'INVALID_INPUT', JSON.stringify(bad));
  t.match(bad.message, /step: count of demo.wordstats@1 is not a model step/);
  const unknown = errorOf(await gql(server, START, { input: { dataset: 'nope', pipeline: 'demo.wordstats', step: 'count' } }, operator));
  t.equal(unknown.code, 'NOT_FOUND');
  const forbidden = errorOf(await gql(server, START, { input: { dataset: 'gql.ds', pipeline: 'demo.wordstats', step: 'count' } }, client));
  t.equal(forbidden.code, 'FORBIDDEN');
  const cmp = errorOf(await gql(server, COMPARE, { base: '1', candidate: '2' }, client));
  t.equal(cmp.code, 'FORBIDDEN');
});
