// The operator surfaces of prompt labels (migration 0041): the GraphQL mutations createPromptVersion, setPromptLabel,
// setPromptCanary and clearPromptCanary with the promptLabels, promptLabelHistory and jobPrompts reads (operators
// write; reporters read; a client token is refused with what it needs and sees only its tenant's pins), input errors
// naming the input field; and the CLI `ballast prompts ...`, run in this process.
import t from 'tap';
import { runInProcess } from './support/cli-inproc.ts';
import { promptsCommand } from '../src/cli/prompts.ts';
import { freshDatabase } from './helpers.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';
import { wordstats } from '../tasks/demo.ts';

const { url, pool, db } = await freshDatabase(t);
await db.registerPipeline(wordstats.name, wordstats.version, wordstats.definition(), wordstats.inputJsonSchema());

t.test('GraphQL: an operator creates versions, labels and a canary; everyone else is refused or reads', async (t) => {
  const server = await testServer(t, url);
  const operator = await token('operator', undefined, { subject: 'ann' });
  const made = await data(server, `mutation {
    a: createPromptVersion(input: { name: "api.rate", user: "Rate: {{input.text}}" }) { name version created contentHash }
    b: createPromptVersion(input: { name: "api.rate", system: "Strict.", user: "Rate: {{input.text}}" }) { version created }
    c: createPromptVersion(input: { name: "api.rate", system: "Strict.", user: "Rate: {{input.text}}" }) { version created }
    setPromptLabel(input: { name: "api.rate", label: "production", version: 1, reason: "launch" }) { promptName label version canaryVersion }
    setPromptCanary(input: { name: "api.rate", label: "production", candidateVersion: 2, share: 0.25, reason: "try strict" }) {
      version canaryVersion canaryShare promptLabel { label version canaryVersion canaryShare updatedBy }
    }
  }`, {}, operator);
  t.match(made.a, { name: 'api.rate', version: 1, created: true });
  t.match(made.a.contentHash, /^[0-9a-f]{64}$/);
  t.same([made.b, made.c], [{ version: 2, created: true }, { version: 2, created: false }], 'the same words again: no copy');
  t.same(made.setPromptLabel, { promptName: 'api.rate', label: 'production', version: 1, canaryVersion: null });
  t.same(made.setPromptCanary, { version: 1, canaryVersion: 2, canaryShare: 0.25,
    promptLabel: { label: 'production', version: 1, canaryVersion: 2, canaryShare: 0.25, updatedBy: 'jwt:ann' } });

  const history = (await data(server, `{ promptLabelHistory(orderBy: ID_ASC, condition: { promptName: "api.rate" }) { nodes { action fromVersion toVersion canaryVersion canaryShare actor reason } } }`, {}, operator)).promptLabelHistory.nodes;
  t.same(history, [
    { action: 'set', fromVersion: null, toVersion: 1, canaryVersion: null, canaryShare: null, actor: 'jwt:ann', reason: 'launch' },
    { action: 'canary', fromVersion: 1, toVersion: 1, canaryVersion: 2, canaryShare: 0.25, actor: 'jwt:ann', reason: 'try strict' },
  ]);

  const bad = errorOf(await gql(server, `mutation { setPromptCanary(input: { name: "api.rate", label: "production", candidateVersion: 7, share: 0.1, reason: "x" }) { version } }`, {}, operator));
  t.equal(bad.code, 'INVALID_INPUT');
  t.equal(bad.message, 'candidateVersion: prompt api.rate has no version 7 (its versions: 1, 2)', 'the message names the input field');
  t.same(bad.extensions.issues, [{ path: 'candidateVersion', message: 'prompt api.rate has no version 7 (its versions: 1, 2)' }]);
  const share = errorOf(await gql(server, `mutation { setPromptCanary(input: { name: "api.rate", label: "production", candidateVersion: 2, share: 2, reason: "x" }) { version } }`, {}, operator));
  t.equal(share.message, 'share: 2 is not more than 0 and at most 1');

  const reporter = await token('reporter');
  t.same((await data(server, `{ promptLabels { nodes { promptName label version canaryVersion } } }`, {}, reporter)).promptLabels.nodes,
    [{ promptName: 'api.rate', label: 'production', version: 1, canaryVersion: 2 }], 'a reporter reads the labels');
  const refused = errorOf(await gql(server, `mutation { setPromptLabel(input: { name: "api.rate", label: "production", version: 2, reason: "x" }) { version } }`, {}, reporter));
  t.equal(refused.code, 'FORBIDDEN');
  t.match(refused.message, /setPromptLabel needs an operator token/);
  const client = await token('client', 'acme');
  t.equal(errorOf(await gql(server, `mutation { clearPromptCanary(input: { name: "api.rate", label: "production", reason: "x" }) { cleared } }`, {}, client)).code, 'FORBIDDEN');
  t.equal(errorOf(await gql(server, `{ promptLabels { nodes { label } } }`, {}, client)).code, 'FORBIDDEN', 'a client does not read the labels');

  // Pins: a client sees its own tenant's, through jobPrompts and job.prompts.
  const mine = await db.submitJob({ pipeline: wordstats.name, input: { text: 'a' }, tenantId: 'acme' });
  const theirs = await db.submitJob({ pipeline: wordstats.name, input: { text: 'b' }, tenantId: 'other' });
  for (const j of [mine, theirs]) await pool.query(`select * from ballast.resolve_prompt($1, 'api.rate', 'production')`, [j.jobId]);
  const seen = (await data(server, `{ jobPrompts { nodes { jobId tenantId promptName label version arm } } }`, {}, client)).jobPrompts.nodes;
  t.same(seen.map((p: any) => [p.jobId, p.tenantId, p.promptName]), [[mine.jobId, 'acme', 'api.rate']], 'only its tenant\'s pins');
  const viaJob = (await data(server, `query ($id: BigInt!) { job(id: $id) { prompts { nodes { label version arm } } } }`, { id: mine.jobId }, client)).job.prompts.nodes;
  t.equal(viaJob.length, 1);
  t.match(viaJob[0], { label: 'production', arm: /^(stable|canary)$/ });

  t.same((await data(server, `mutation { clearPromptCanary(input: { name: "api.rate", label: "production", reason: "done" }) { cleared } }`, {}, operator)).clearPromptCanary, { cleared: true });
});

t.test('CLI: ballast prompts create, label, canary, list, show, history, arms; mistakes are one line naming the argument', async (t) => {
  const run = (...args: string[]) => runInProcess(db, promptsCommand, ...args);
  t.match(await run('create', 'cli.rate', '--user', 'Rate: {{input.text}}'), { code: 0, stdout: /^created cli\.rate@1 / });
  t.match(await run('create', 'cli.rate', '--system', 'Strict.', '--user', 'Rate: {{input.text}}'), { code: 0, stdout: /^created cli\.rate@2 / });
  t.match(await run('label', 'cli.rate', 'production', '1', '--reason', 'launch'), { code: 0, stdout: 'cli.rate@production -> version 1' });
  t.match(await run('canary', 'cli.rate', 'production', '2', '10%', '--reason', 'try'), { code: 0, stdout: 'cli.rate@production: version 1, canary 2 on 10 % of new jobs' });
  t.match(await run('list'), { code: 0, stdout: /cli\.rate\s+2\s+2\s+production=1 \(canary 2 at 10 %\)/ });
  t.match(await run('show', 'cli.rate'), { code: 0, stdout: /cli\.rate@2 {2}[0-9a-f]{12}[\s\S]*system: Strict\./ });
  t.match(await run('canary', 'cli.rate', 'production', 'off', '--reason', 'enough'), { code: 0, stdout: 'canary of cli.rate@production ended' });
  const history = await run('history', 'cli.rate', '--json');
  t.same(JSON.parse(history.stdout).map((h: any) => h.action), ['clear_canary', 'canary', 'set'], 'newest first');
  t.equal(JSON.parse(history.stdout)[2].actor, process.env.BALLAST_ACTOR || `cli:${process.env.USER ?? 'unknown'}`, 'the CLI names its user');
  t.match(await run('arms', 'cli.rate', 'production', '--json'), { code: 0, stdout: '[]' });

  t.match(await run('label', 'cli.rate', 'production', '2'), { code: 2, stderr: /--reason is required/ });
  t.match(await run('label', 'cli.rate', 'production', 'two', '--reason', 'x'), { code: 2, stderr: /<version> two is not a version number/ });
  t.match(await run('canary', 'cli.rate', 'production', '2', '150%', '--reason', 'x'), { code: 2, stderr: /<share> 150% is not more than 0 and at most 1/ });
  t.match(await run('label', 'cli.rate', 'production', '9', '--reason', 'x'), { code: 4, stderr: /version: prompt cli\.rate has no version 9 \(its versions: 1, 2\)/ });
  t.match(await run('show', 'nothing.here'), { code: 2, stderr: /prompt nothing\.here has no versions/ });
  t.match(await run('frobnicate'), { code: 2, stderr: /unknown prompts command "frobnicate"/ });
});
