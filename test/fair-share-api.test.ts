// The operator surfaces of fair sharing between tenants (migration 0040): the GraphQL mutations setFairShare and
// stopFairSharing with the fairShares list (operators; reporters read; a client token is refused with what it
// needs), their input errors naming the input field; and the CLI verbs fair-share on|set|off and fair-shares, spawned
// as a user runs them (a few, at once where they are independent), with their flag errors run in this process.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { runInProcess } from './support/cli-inproc.ts';
import { fairShareCommand, fairSharesCommand } from '../src/cli/fair-share.ts';
import type { BallastDb } from '../src/db/api.ts';
import { freshDatabase, spawnNode } from './helpers.ts';
import { codeBlocks, pageText } from './support/doc-examples.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';

t.setTimeout(300_000); // the CLI is spawned a few times, on a machine that may be busy

const { url, pool, db } = await freshDatabase(t);
const off = () => pool.query('select ballast.stop_fair_sharing()');
const shares = async () => (await pool.query(`select tenant_id, weight, set_by from ballast.fair_shares order by tenant_id`)).rows;

t.test('GraphQL: an operator turns fair sharing on, sets a weight, lists the weights and turns it off', async (t) => {
  await off();
  const noop = pipeline({ name: 'fapi.noop', version: 1, input: z.object({}) }).step('only', { output: z.boolean() }, () => true);
  await db.registerPipeline(noop.name, noop.version, noop.definition(), noop.inputJsonSchema());
  const server = await testServer(t, url);
  const operator = await token('operator', undefined, { subject: 'ann' });
  const SET = `mutation ($input: SetFairShareInput!) { setFairShare(input: $input) { tenantId weight fairShare { tenantId weight finishTag setBy setAt } } }`;

  const on = (await data(server, SET, { input: { tenantId: '*' } }, operator)).setFairShare;
  t.match(on, { tenantId: '*', weight: 1, fairShare: { tenantId: '*', weight: 1, finishTag: 0, setBy: 'jwt:ann' } }, 'on, with the default weight 1');
  t.ok(Date.parse(on.fairShare.setAt) > 0, 'setAt is a time');
  const acme = (await data(server, SET, { input: { tenantId: 'acme', weight: 3 } }, operator)).setFairShare;
  t.match(acme, { tenantId: 'acme', weight: 3, fairShare: { tenantId: 'acme', weight: 3, setBy: 'jwt:ann' } });
  t.same((await data(server, SET, { input: { tenantId: 'slow', weight: 0.5 } }, operator)).setFairShare.weight, 0.5, 'a weight below 1');

  // The weights work: acme's jobs advance its finish tag by 1/3 each.
  await db.submitJobs({ pipeline: 'fapi.noop', inputs: [{}, {}, {}], tenantId: 'acme' });
  const listed = (await data(server, `{ fairShares(orderBy: TENANT_ID_ASC) { totalCount nodes { tenantId weight finishTag setBy } } }`, {}, operator)).fairShares;
  t.equal(listed.totalCount, 3);
  t.same(listed.nodes.map((s: any) => [s.tenantId, s.weight, s.setBy]), [['*', 1, 'jwt:ann'], ['acme', 3, 'jwt:ann'], ['slow', 0.5, 'jwt:ann']]);
  t.ok(Math.abs(listed.nodes[1].finishTag - 1) < 1e-9, `three jobs of weight 3 moved acme's finish tag by 1 (${listed.nodes[1].finishTag})`);
  t.same((await data(server, `{ fairShare(tenantId: "slow") { weight } }`, {}, operator)).fairShare, { weight: 0.5 }, 'one tenant by its id');
  t.same((await data(server, `{ fairShares(condition: { tenantId: "acme" }) { nodes { weight } } }`, {}, operator)).fairShares.nodes, [{ weight: 3 }]);

  const reporter = await token('reporter');
  t.equal((await data(server, `{ fairShares { totalCount } }`, {}, reporter)).fairShares.totalCount, 3, 'a reporter reads them');
  const refused = errorOf(await gql(server, `mutation { stopFairSharing { stopped } }`, {}, reporter));
  t.equal(refused.code, 'FORBIDDEN', 'a reporter may not turn it off');
  t.match(refused.message, /stopFairSharing needs an operator token/);

  const STOP = `mutation { stopFairSharing { stopped } }`;
  t.same((await data(server, STOP, {}, operator)).stopFairSharing, { stopped: true });
  t.same((await data(server, STOP, {}, operator)).stopFairSharing, { stopped: false }, 'a second stop finds it off');
  t.same(await shares(), [], 'weights forgotten');
  t.same((await data(server, `{ fairShares { totalCount } }`, {}, operator)).fairShares.totalCount, 0);

  // Setting a tenant's weight while it is off turns it on with the default weight.
  const alone = (await data(server, SET, { input: { tenantId: 'acme', weight: 2 } }, operator)).setFairShare;
  t.match(alone, { tenantId: 'acme', weight: 2 });
  t.same((await shares()).map((s) => [s.tenant_id, s.weight]), [['*', 1], ['acme', 2]], 'the switch came with it');
  await off();
});

t.test('GraphQL: the examples of docs/graphql.md "Fair sharing (operators)" do what the text says', async (t) => {
  await off();
  const server = await testServer(t, url);
  const operator = await token('operator', undefined, { subject: 'docs' });
  const section = /\n## Fair sharing \(operators\)\n([\s\S]*?)\n## /.exec(pageText('docs/graphql.md'))?.[1] ?? '';
  const [turnOn, list, stop] = codeBlocks(section, 'graphql');
  t.ok(turnOn && list && stop, 'the section has its three examples');
  t.match(await data(server, turnOn!, {}, operator), { on: { tenantId: '*', weight: 1 }, acme: { fairShare: { tenantId: 'acme', weight: 3, setBy: 'jwt:docs' } } });
  t.same((await data(server, list!, {}, operator)).fairShares.nodes.map((s: any) => [s.tenantId, s.weight]), [['*', 1], ['acme', 3]]);
  t.same(await data(server, stop!, {}, operator), { stopFairSharing: { stopped: true } });
  t.same(await shares(), [], 'off again');
});

t.test('GraphQL: a client token is refused, saying which token it needs', async (t) => {
  await off();
  const server = await testServer(t, url);
  const client = await token('client', 'acme');
  const set = errorOf(await gql(server, `mutation { setFairShare(input: { tenantId: "acme", weight: 100 }) { weight } }`, {}, client));
  t.equal(set.code, 'FORBIDDEN');
  t.match(set.message, /setFairShare needs an operator token, sent in the header "Authorization: Bearer <token>"/);
  t.same(set.extensions.roles, ['operator']);
  const stop = errorOf(await gql(server, `mutation { stopFairSharing { stopped } }`, {}, client));
  t.equal(stop.code, 'FORBIDDEN');
  t.match(stop.message, /stopFairSharing needs an operator token/);
  const read = errorOf(await gql(server, `{ fairShares { nodes { tenantId weight } } }`, {}, client));
  t.equal(read.code, 'FORBIDDEN');
  t.match(read.message, /fairShares needs an operator or reporter token/);
  t.same(read.extensions.roles, ['operator', 'reporter']);
  t.equal(errorOf(await gql(server, `{ fairShare(tenantId: "acme") { weight } }`, {}, client)).code, 'FORBIDDEN');
  t.same(await shares(), [], 'nothing was set');
});

t.test('GraphQL: a bad weight or tenant is INVALID_INPUT naming the input field and what to pass', async (t) => {
  await off();
  const server = await testServer(t, url);
  const operator = await token('operator');
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ tenantId: 'acme', weight: 0 }, 'weight', /^weight: 0 is not above 0 and at most 1000000/],
    [{ tenantId: 'acme', weight: -2 }, 'weight', /^weight: -2 is not above 0/],
    [{ tenantId: '*', weight: 2_000_000 }, 'weight', /^weight: 2000000 is not above 0 and at most 1000000/],
    [{ tenantId: '' }, 'tenantId', /^tenantId: is empty/],
  ];
  for (const [input, field, message] of cases) {
    const e = errorOf(await gql(server, `mutation ($input: SetFairShareInput!) { setFairShare(input: $input) { weight } }`, { input }, operator));
    t.equal(e.code, 'INVALID_INPUT', `${JSON.stringify(input)}: ${e.message}`);
    t.match(e.message, message);
    t.same(e.extensions.issues?.map((i: any) => i.path), [field], `names ${field}`);
    t.match(e.extensions.hint, /Pass /, 'says what to pass');
    t.notMatch(e.message, /\bp_|tenant_id/, 'no SQL names');
  }
  t.same(await shares(), [], 'nothing was set');
});

/** The `ballast` command, spawned as a user runs it. */
async function cli(t: Parameters<typeof spawnNode>[0], ...args: string[]) {
  const proc = spawnNode(t, ['src/cli.ts', ...args], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json', BALLAST_ACTOR: 'cli:tester' } });
  const { code } = await proc.wait(120_000);
  return { code, stdout: proc.lines.join('\n').trim(), stderr: proc.stderr().trim() };
}

t.test('the CLI, spawned: fair-share on, set, fair-shares, fair-share off; a bad flag; the help', async (t) => {
  await off();
  const ok = (r: { code: number | null; stdout: string; stderr: string }, what: string) => {
    t.equal(r.code, 0, `${what}: ${r.stderr}`);
    return r.stdout;
  };
  // Independent commands run at once (spawning is most of the time).
  const [on, badWeight, help] = await Promise.all([
    cli(t, 'fair-share', 'on', '--weight', '2', '--json'),
    cli(t, 'fair-share', 'on', '--weight', 'lots'),
    cli(t, 'fair-share', '--help'),
  ]);
  t.same(JSON.parse(ok(on, 'fair-share on --json')), { tenantId: '*', weight: 2 });
  t.equal(badWeight.code, 2, 'a bad flag exits 2');
  t.equal(badWeight.stderr, 'ballast: --weight lots is not a number above 0 and at most 1000000; pass a relative share, e.g. --weight 2 (3 gets three times the share of 1)',
    'in one line naming the flag and what to pass');
  const helpText = ok(help, 'fair-share --help');
  t.match(helpText, /^Usage: ballast fair-share on /);
  t.match(helpText, /fair-share set <tenant> <weight>/);
  t.match(helpText, /fair-share off/);
  t.notMatch(helpText, /fair-shares/, 'its own blocks, not those of fair-shares');

  t.equal(ok(await cli(t, 'fair-share', 'set', 'acme', '3'), 'fair-share set'), 'tenant acme has weight 3 (fair sharing is on)');
  t.same(await shares(), [{ tenant_id: '*', weight: 2, set_by: 'cli:tester' }, { tenant_id: 'acme', weight: 3, set_by: 'cli:tester' }], 'written as the CLI said');

  const table = ok(await cli(t, 'fair-shares'), 'fair-shares').split('\n');
  t.match(table[0], /^tenant\s+weight\s+finish tag\s+set by\s+set at$/, 'the table: tenant, weight, finish tag, set by, set at');
  t.match(table[2], /^\*\s+2\s+0\s+cli:tester\s+20\d\d-/, 'the switch first, with the default weight');
  t.match(table[3], /^acme\s+3\s+0\s+cli:tester\s+20\d\d-/);
  t.equal(table.length, 4, 'a header, a rule and two rows');

  t.same(JSON.parse(ok(await cli(t, 'fair-share', 'off', '--json'), 'fair-share off --json')), { stopped: true });
  t.same(await shares(), [], 'off: weights forgotten');
});

/** Runs a command of src/cli/fair-share.ts in this process (test/support/cli-inproc.ts). */
const run = (command: (db: BallastDb, args: string[]) => Promise<number>, ...args: string[]) => runInProcess(db, command, ...args);

t.test('the CLI commands: on, set, off and the list, in words and --json', async (t) => {
  await off();
  process.env.BALLAST_ACTOR = 'cli:inproc';
  t.teardown(() => { delete process.env.BALLAST_ACTOR; });
  t.same(await run(fairSharesCommand), { code: 0, stdout: 'fair sharing is off (first come, first served); turn it on with `ballast fair-share on`' });
  t.same(JSON.parse((await run(fairSharesCommand, '--json')).stdout), []);
  t.same(await run(fairShareCommand, 'set', 'beta', '--weight', '1.5'), { code: 0, stdout: 'tenant beta has weight 1.5 (fair sharing is on)' }, '--weight in set');
  t.same(await run(fairShareCommand, 'on'), { code: 0, stdout: 'fair sharing on: tenants without a weight of their own have weight 1' });
  t.same(await run(fairShareCommand, 'set', '*', '4'), { code: 0, stdout: 'fair sharing on: tenants without a weight of their own have weight 4' });
  t.same(JSON.parse((await run(fairShareCommand, 'set', 'acme', '1e-3', '--json')).stdout), { tenantId: 'acme', weight: 0.001 });
  const listed = JSON.parse((await run(fairSharesCommand, '--json')).stdout);
  t.same(listed.map((s: any) => [s.tenantId, s.weight, s.finishTag, s.setBy]), [['*', 4, 0, 'cli:inproc'], ['acme', 0.001, 0, 'cli:inproc'], ['beta', 1.5, 0, 'cli:inproc']]);
  t.ok(listed.every((s: any) => Date.parse(s.setAt) > 0), 'setAt is a time');
  t.same(await run(fairShareCommand, 'off'), { code: 0, stdout: 'fair sharing off: weights forgotten, first come, first served' });
  t.same(await run(fairShareCommand, 'off'), { code: 0, stdout: 'fair sharing was off; nothing changed' }, 'off again: nothing to do, not an error');
});

t.test('the CLI commands: each bad flag is one line naming it and what to pass (exit 2); nothing is written', async (t) => {
  await off();
  const usage: [(db: BallastDb, args: string[]) => Promise<number>, string[], string][] = [
    [fairShareCommand, ['on', '--weight', '0'], 'ballast: --weight 0 is not a number above 0 and at most 1000000; pass a relative share, e.g. --weight 2 (3 gets three times the share of 1)'],
    [fairShareCommand, ['on', '--weight', '-1'], 'ballast: --weight -1 is not a number above 0 and at most 1000000; pass a relative share, e.g. --weight 2 (3 gets three times the share of 1)'],
    [fairShareCommand, ['on', '--weight', '2000000'], 'ballast: --weight 2000000 is not a number above 0 and at most 1000000; pass a relative share, e.g. --weight 2 (3 gets three times the share of 1)'],
    [fairShareCommand, ['on', 'acme'], "ballast: fair-share on takes no argument (got acme); pass the default weight as --weight <w>, e.g. `ballast fair-share on --weight 2`, or a tenant's with `ballast fair-share set <tenant> <weight>`"],
    [fairShareCommand, ['set', 'acme'], 'ballast: fair-share set needs a tenant and a weight; e.g. `ballast fair-share set acme 3` (acme gets three times the share of a weight-1 tenant)'],
    [fairShareCommand, ['set'], 'ballast: fair-share set needs a tenant and a weight; e.g. `ballast fair-share set acme 3` (acme gets three times the share of a weight-1 tenant)'],
    [fairShareCommand, ['set', 'acme', 'three'], 'ballast: <weight> three is not a number above 0 and at most 1000000; pass a relative share, e.g. `ballast fair-share set acme 3` (3 gets three times the share of 1)'],
    [fairShareCommand, ['set', 'acme', '0x10'], 'ballast: <weight> 0x10 is not a number above 0 and at most 1000000; pass a relative share, e.g. `ballast fair-share set acme 3` (3 gets three times the share of 1)'],
    [fairShareCommand, ['set', 'acme', '3', '--weight', '2'], 'ballast: fair-share set takes the weight once; pass it as the second argument, e.g. `ballast fair-share set acme 3`, not also as --weight'],
    [fairShareCommand, ['off', '--weight', '2'], 'ballast: fair-share off takes no argument (got --weight); run `ballast fair-share off` alone: it turns fair sharing off for every tenant'],
    [fairShareCommand, ['enable'], 'ballast: unknown fair-share command "enable"; use fair-share on [--weight <w>], fair-share set <tenant> <weight>, or fair-share off'],
    [fairShareCommand, [], 'ballast: unknown fair-share command ""; use fair-share on [--weight <w>], fair-share set <tenant> <weight>, or fair-share off'],
  ];
  for (const [command, args, line] of usage) {
    const r = await run(command, ...args);
    t.equal(r.code, 2, `${command.name} ${args.join(' ')}: exit 2`);
    t.equal(r.stderr, line, line);
  }
  const typo = await run(fairShareCommand, 'on', '--weigth', '2');
  t.equal(typo.code, 2, 'an unknown flag: exit 2');
  t.match(typo.stderr, /^ballast: Unknown option '--weigth'.*; run `ballast help` for the options$/, 'naming it, in one line');
  t.same(await shares(), [], 'nothing was set');
});
