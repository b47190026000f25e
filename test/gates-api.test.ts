// The operator surfaces of pauses and limits (migration 0037): the GraphQL mutations pauseKey, resumeKey, setLimit and
// deleteLimit with the pauses, limits and gateHistory lists (operators; reporters read; a client token is refused with
// what it needs), their input errors naming the input field; and the CLI verbs pause, resume, pauses, limit set,
// limit delete, limits and gate-history, spawned as a user runs them, with their flag errors.
import t from 'tap';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { describeError, formatError } from '../src/cli/errors.ts';
import { runInProcess } from './support/cli-inproc.ts';
import { gateHistoryCommand, limitCommand, limitsCommand, pauseCommand, pausesCommand, resumeCommand } from '../src/cli/gates.ts';
import type { BallastDb } from '../src/db/api.ts';
import { freshDatabase, spawnNode, testWorker, waitForJob } from './helpers.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';

t.setTimeout(300_000); // the CLI is spawned a dozen times, on a machine that may be busy

const { url, pool, db } = await freshDatabase(t);
const clear = () => pool.query('delete from ballast_private.pauses; delete from ballast_private.limits');
/** The newest id of the (append-only) history: a test reads the entries after it. */
const lastHistoryId = async () => Number((await pool.query('select coalesce(max(id), 0) as id from ballast.gate_history')).rows[0].id);

t.test('GraphQL: an operator pauses, resumes, sets and deletes limits; the lists and the history show them', async (t) => {
  await clear();
  const server = await testServer(t, url);
  const operator = await token('operator', undefined, { subject: 'ann' });
  const PAUSE = `mutation ($input: PauseKeyInput!) { pauseKey(input: $input) { key until pause { key until reason pausedBy inForce } } }`;

  const before = Date.now();
  const paused = (await data(server, PAUSE, { input: { key: 'provider:openai', reason: '429 from the provider', forSeconds: 600 } }, operator)).pauseKey;
  t.equal(paused.key, 'provider:openai');
  const until = Date.parse(paused.until);
  t.ok(until >= before + 590_000 && until <= Date.now() + 610_000, `until is about ten minutes ahead (${paused.until})`);
  t.equal(Math.floor(Date.parse(paused.pause.until)), until, 'the pause read back ends then');
  t.match(paused.pause, { key: 'provider:openai', reason: '429 from the provider', pausedBy: 'jwt:ann', inForce: true });

  const forever = (await data(server, PAUSE, { input: { key: 'tenant:acme', reason: 'maintenance' } }, operator)).pauseKey;
  t.same(forever, { key: 'tenant:acme', until: null, pause: { key: 'tenant:acme', until: null, reason: 'maintenance', pausedBy: 'jwt:ann', inForce: true } },
    'without until or forSeconds: until resumed');
  const at = new Date(Date.now() + 3_600_000).toISOString();
  const timed = (await data(server, PAUSE, { input: { key: 'queue:emails', reason: 'mail relay down', until: at } }, operator)).pauseKey;
  t.equal(Date.parse(timed.until), Date.parse(at), 'until is kept as given');

  const listed = (await data(server, `{ pauses(orderBy: KEY_ASC) { totalCount nodes { key until reason pausedBy inForce } } }`, {}, operator)).pauses;
  t.equal(listed.totalCount, 3);
  t.same(listed.nodes.map((p: any) => p.key), ['provider:openai', 'queue:emails', 'tenant:acme']);
  t.same((await data(server, `{ pause(key: "tenant:acme") { reason } }`, {}, operator)).pause, { reason: 'maintenance' }, 'one pause by its key');

  const RESUME = `mutation ($key: String!) { resumeKey(input: { key: $key, reason: "provider back" }) { key resumed } }`;
  t.same((await data(server, RESUME, { key: 'provider:openai' }, operator)).resumeKey, { key: 'provider:openai', resumed: true });
  t.same((await data(server, RESUME, { key: 'provider:openai' }, operator)).resumeKey, { key: 'provider:openai', resumed: false }, 'a second resume finds no pause');
  t.equal((await pool.query(`select count(*)::int as n from ballast.pauses where key = 'provider:openai'`)).rows[0].n, 0, 'the pause is gone');

  const SET = `mutation ($input: SetLimitInput!) { setLimit(input: $input) {
    pattern kind limit { pattern kind amount per { seconds minutes hours } burst note setBy keysSeen } } }`;
  const rate = (await data(server, SET, { input: { pattern: 'provider:openai', kind: 'REQUESTS', amount: 100, perSeconds: 60, burst: 5, note: 'tier 2' } }, operator)).setLimit;
  t.match(rate, { pattern: 'provider:openai', kind: 'requests', limit: { pattern: 'provider:openai', kind: 'requests', amount: '100', burst: '5', note: 'tier 2', setBy: 'jwt:ann', keysSeen: '0' } });
  t.equal(rate.limit.per.minutes, 1, 'per is one minute');
  const running = (await data(server, SET, { input: { pattern: 'tenant:*', kind: 'RUNNING', amount: 4 } }, operator)).setLimit;
  t.match(running.limit, { pattern: 'tenant:*', kind: 'running', amount: '4', per: null, burst: '1' });
  const weight = (await data(server, SET, { input: { pattern: 'provider:openai', kind: 'WEIGHT', amount: 2_000_000_000_000 / 2, perSeconds: 86_400 } }, operator)).setLimit;
  t.match(weight.limit, { kind: 'weight', amount: '1000000000000' }, 'an amount past 32 bits');
  const replaced = (await data(server, SET, { input: { pattern: 'provider:openai', kind: 'REQUESTS', amount: 50, perSeconds: 0.5 } }, operator)).setLimit;
  t.match(replaced.limit, { amount: '50', burst: '1', note: null }, 'the same pattern and kind replace the limit');
  t.equal(replaced.limit.per.seconds, 0.5);

  const limits = (await data(server, `{ limits(orderBy: [PATTERN_ASC, KIND_ASC]) { nodes { pattern kind amount } } }`, {}, operator)).limits.nodes;
  t.same(limits, [
    { pattern: 'provider:openai', kind: 'requests', amount: '50' },
    { pattern: 'provider:openai', kind: 'weight', amount: '1000000000000' },
    { pattern: 'tenant:*', kind: 'running', amount: '4' },
  ]);
  t.same((await data(server, `{ limits(condition: { kind: "running" }) { nodes { pattern } } }`, {}, operator)).limits.nodes, [{ pattern: 'tenant:*' }]);

  const DELETE = `mutation ($pattern: String!, $kind: LimitKind!) { deleteLimit(input: { pattern: $pattern, kind: $kind }) { deleted } }`;
  t.same((await data(server, DELETE, { pattern: 'tenant:*', kind: 'RUNNING' }, operator)).deleteLimit, { deleted: true });
  t.same((await data(server, DELETE, { pattern: 'tenant:*', kind: 'RUNNING' }, operator)).deleteLimit, { deleted: false }, 'deleting it again finds none');

  const history = (await data(server, `{ gateHistory(condition: { key: "provider:openai" }, orderBy: ID_ASC) {
    nodes { id action key until reason data actor at } } }`, {}, operator)).gateHistory.nodes;
  t.same(history.map((h: any) => h.action), ['pause', 'resume', 'resume', 'set_limit', 'set_limit', 'set_limit']);
  t.match(history[0], { reason: '429 from the provider', actor: 'jwt:ann' });
  t.equal(Math.floor(Date.parse(history[0].until)), until, 'the history keeps the end of the pause');
  t.match(history[3], { reason: 'tier 2', data: { kind: 'requests', amount: 100, burst: 5 } });
  const deleted = (await data(server, `{ gateHistory(condition: { action: "delete_limit" }) { nodes { key data actor } } }`, {}, operator)).gateHistory.nodes;
  t.same(deleted, [{ key: 'tenant:*', data: { kind: 'running' }, actor: 'jwt:ann' }], 'the history keeps the deletion (once)');
  const entry = (await data(server, `query ($id: BigInt!) { gateHistoryEntry(id: $id) { action } }`, { id: history[1].id }, operator)).gateHistoryEntry;
  t.same(entry, { action: 'resume' }, 'one entry by its id');

  const reporter = await token('reporter');
  t.equal((await data(server, `{ pauses { totalCount } limits { totalCount } gateHistory { totalCount } }`, {}, reporter)).pauses.totalCount, 2, 'a reporter reads them');
  const reporterPause = errorOf(await gql(server, PAUSE, { input: { key: 'global', reason: 'x' } }, reporter));
  t.equal(reporterPause.code, 'FORBIDDEN', 'a reporter may not pause');
});

t.test('GraphQL: a key paused through the API holds a worker\'s steps back; resumeKey lets them run at once', async (t) => {
  await clear();
  const echo = pipeline({ name: 'gapi.echo', version: 1, input: z.object({ n: z.number() }) })
    .step('echo', { output: z.number() }, ({ input }) => input.n);
  await db.registerPipeline(echo.name, echo.version, echo.definition(), echo.inputJsonSchema());
  const server = await testServer(t, url);
  const operator = await token('operator', undefined, { subject: 'ops' });
  await data(server, `mutation { pauseKey(input: { key: "pipeline:gapi.echo", reason: "hold" }) { key } }`, {}, operator);
  await testWorker(t, url, { pipelines: [echo] });
  const { jobId } = await db.submitJob({ pipeline: 'gapi.echo', input: { n: 7 } });
  // The worker claims the step and the claim parks it: retrying, no attempt spent, the pause's key in its error.
  const parked = async () => (await pool.query(`select status, attempts, error from ballast.steps where job_id = $1`, [jobId])).rows[0];
  for (let i = 0; i < 400 && (await parked()).error?.class !== 'paused'; i++) await new Promise((r) => setTimeout(r, 50));
  t.match(await parked(), { status: 'retrying', attempts: 0, error: { class: 'paused', key: 'pipeline:gapi.echo' } }, 'the step is parked by the pause');
  t.not((await db.getJob(jobId))?.status, 'completed');
  t.same((await data(server, `mutation { resumeKey(input: { key: "pipeline:gapi.echo" }) { resumed } }`, {}, operator)).resumeKey, { resumed: true });
  const job = await waitForJob(db, jobId, ['completed'], 30_000);
  t.equal(job.result, 7, 'and runs once resumed');
});

t.test('GraphQL: a client token is refused, saying which token it needs', async (t) => {
  await clear();
  const server = await testServer(t, url);
  const client = await token('client', 'acme');
  const pause = errorOf(await gql(server, `mutation { pauseKey(input: { key: "tenant:acme", reason: "mine" }) { key } }`, {}, client));
  t.equal(pause.code, 'FORBIDDEN');
  t.match(pause.message, /pauseKey needs an operator token, sent in the header "Authorization: Bearer <token>"/);
  t.same(pause.extensions.roles, ['operator']);
  const limit = errorOf(await gql(server, `mutation { setLimit(input: { pattern: "tenant:acme", kind: RUNNING, amount: 100 }) { pattern } }`, {}, client));
  t.equal(limit.code, 'FORBIDDEN');
  t.match(limit.message, /setLimit needs an operator token/);
  for (const field of ['resumeKey(input: { key: "tenant:acme" }) { resumed }', 'deleteLimit(input: { pattern: "tenant:acme", kind: RUNNING }) { deleted }']) {
    t.equal(errorOf(await gql(server, `mutation { ${field} }`, {}, client)).code, 'FORBIDDEN', field);
  }
  const read = errorOf(await gql(server, `{ pauses { nodes { key } } }`, {}, client));
  t.equal(read.code, 'FORBIDDEN');
  t.match(read.message, /pauses needs an operator or reporter token/);
  t.same(read.extensions.roles, ['operator', 'reporter']);
  t.equal(errorOf(await gql(server, `{ gateHistory { nodes { key } } }`, {}, client)).code, 'FORBIDDEN');
  t.equal((await pool.query('select count(*)::int as n from ballast_private.pauses')).rows[0].n, 0, 'nothing was paused');
  t.equal((await pool.query('select count(*)::int as n from ballast_private.limits')).rows[0].n, 0, 'no limit was set');
});

t.test('GraphQL: bad input is INVALID_INPUT naming the input field and what to pass', async (t) => {
  await clear();
  const server = await testServer(t, url);
  const operator = await token('operator');
  const refused = async (mutation: string, input: Record<string, unknown>) =>
    errorOf(await gql(server, `mutation ($input: ${mutation[0]!.toUpperCase()}${mutation.slice(1)}Input!) { ${mutation}(input: $input) { __typename } }`, { input }, operator));
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ['setLimit', { pattern: 'tenant:acme', kind: 'RUNNING', amount: 5, perSeconds: 60 }, 'perSeconds', /^perSeconds: is given for a running limit/],
    ['setLimit', { pattern: 'tenant:acme', kind: 'REQUESTS', amount: 5 }, 'perSeconds', /^perSeconds: null is not between 1 millisecond and 31 days/],
    ['setLimit', { pattern: 'tenant:acme', kind: 'REQUESTS', amount: 5, perSeconds: 40 * 86_400 }, 'perSeconds', /^perSeconds: .* is not between 1 millisecond and 31 days/],
    ['setLimit', { pattern: 'tenant:acme', kind: 'REQUESTS', amount: 0, perSeconds: 1 }, 'amount', /^amount: 0 is not between 1 and 10\^12/],
    ['setLimit', { pattern: 'tenant:acme', kind: 'REQUESTS', amount: 2.5, perSeconds: 1 }, 'amount', /^amount: 2.5 is not a whole number/],
    ['setLimit', { pattern: 'tenant:acme', kind: 'REQUESTS', amount: 5, perSeconds: -1 }, 'perSeconds', /^perSeconds: -1 is not a positive number of seconds/],
    ['setLimit', { pattern: 'Tenant Acme', kind: 'RUNNING', amount: 5 }, 'pattern', /^pattern: /],
    ['pauseKey', { key: 'no spaces allowed', reason: 'x' }, 'key', /^key: /],
    ['pauseKey', { key: 'tenant:acme', reason: '  ' }, 'reason', /^reason: is empty/],
    ['pauseKey', { key: 'tenant:acme', reason: 'x', until: '2020-01-01T00:00:00Z' }, 'until', /^until: ends at .* which is not after now/],
    ['pauseKey', { key: 'tenant:acme', reason: 'x', forSeconds: 0 }, 'forSeconds', /^forSeconds: 0 is not a positive number of seconds/],
    ['pauseKey', { key: 'tenant:acme', reason: 'x', forSeconds: 60, until: '2099-01-01T00:00:00Z' }, 'until', /^until: is given together with forSeconds/],
    ['pauseKey', { key: 'tenant:acme', reason: 'x', until: 'tomorrow' }, 'until', /^until: "tomorrow" is not a time/],
  ];
  for (const [mutation, input, field, message] of cases) {
    const e = await refused(mutation, input);
    t.equal(e.code, 'INVALID_INPUT', `${mutation} ${JSON.stringify(input)}: ${e.message}`);
    t.match(e.message, message);
    t.same(e.extensions.issues?.map((i: any) => i.path), [field], `names ${field}`);
    t.ok(e.extensions.hint, 'says what to pass');
    t.notMatch(e.message, /\bp_|\bper:|\bfor:/, 'no SQL names');
  }
  t.equal((await pool.query('select count(*)::int as n from ballast_private.pauses')).rows[0].n, 0, 'nothing was paused');
  t.equal((await pool.query('select count(*)::int as n from ballast_private.limits')).rows[0].n, 0, 'no limit was set');
});

/** The `ballast` command, spawned as a user runs it. */
async function cli(t: Parameters<typeof spawnNode>[0], ...args: string[]) {
  const proc = spawnNode(t, ['src/cli.ts', ...args], { env: { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json', BALLAST_ACTOR: 'cli:tester' } });
  const { code } = await proc.wait(120_000);
  return { code, stdout: proc.lines.join('\n').trim(), stderr: proc.stderr().trim() };
}

t.test('the CLI, spawned: pause, pauses, resume, limit set, limits, limit delete, gate-history; a bad flag', async (t) => {
  await clear();
  const start = await lastHistoryId();
  const ok = (r: { code: number | null; stdout: string; stderr: string }, what: string) => {
    t.equal(r.code, 0, `${what}: ${r.stderr}`);
    return r.stdout;
  };
  // Independent commands run at once (spawning is most of the time).
  const before = Date.now();
  const [paused, forever, rate, running, badFor] = await Promise.all([
    cli(t, 'pause', 'provider:openai', '--for', '10m', '--reason', '429 from the provider', '--json'),
    cli(t, 'pause', 'tenant:acme', '--reason', 'maintenance'),
    cli(t, 'limit', 'set', 'provider:openai', '--requests', '100/1m', '--burst', '5', '--note', 'tier 2'),
    cli(t, 'limit', 'set', 'tenant:*', '--running', '4'),
    cli(t, 'pause', 'k:1', '--reason', 'x', '--for', '10'),
  ]);
  const pause = JSON.parse(ok(paused, 'pause --json'));
  t.match(pause, { key: 'provider:openai', reason: '429 from the provider', pausedBy: 'cli:tester', inForce: true, stepId: null });
  const until = Date.parse(pause.until);
  t.ok(until >= before + 590_000 && until <= Date.now() + 610_000, `--for 10m: ten minutes (${pause.until})`);
  t.equal(ok(forever, 'pause'), 'key tenant:acme paused until resumed: maintenance');
  t.equal(ok(rate, 'limit set --requests'), 'limit requests on provider:openai set: 100 per 1m (burst 5)');
  t.equal(ok(running, 'limit set --running'), 'limit running on tenant:* set: at most 4 running at once');
  t.equal(badFor.code, 2, 'a bad flag exits 2');
  t.equal(badFor.stderr, 'ballast: --for 10 is not a duration; pass a number and a unit: ms, s, m, h or d, e.g. --for 10m (or 30s, 1h, 1d)', 'in one line naming the flag');
  t.same((await pool.query(`select pattern, kind, amount::int, extract(epoch from per)::float8 as per_s, burst::int, note, set_by
                              from ballast.limits order by pattern, kind`)).rows, [
    { pattern: 'provider:openai', kind: 'requests', amount: 100, per_s: 60, burst: 5, note: 'tier 2', set_by: 'cli:tester' },
    { pattern: 'tenant:*', kind: 'running', amount: 4, per_s: null, burst: 1, note: null, set_by: 'cli:tester' },
  ], 'the limits were set');

  const [pauses, limits, resumed, deleted, past] = await Promise.all([
    cli(t, 'pauses'), cli(t, 'limits'), cli(t, 'resume', 'provider:openai', '--reason', 'provider back'),
    cli(t, 'limit', 'delete', 'tenant:*', 'running'), cli(t, 'pause', 'k:1', '--until', '2020-01-01T00:00:00Z', '--reason', 'x'),
  ]);
  const table = ok(pauses, 'pauses').split('\n');
  t.match(table[0], /^key\s+until\s+in force\s+reason\s+by$/, 'the pauses table: key, until, in force, reason, by');
  t.match(table.find((l) => l.startsWith('tenant:acme')), /^tenant:acme\s+resumed\s+yes\s+maintenance\s+cli:tester$/);
  const limitTable = ok(limits, 'limits').split('\n');
  t.match(limitTable[0], /^pattern\s+kind\s+amount\s+per\s+burst\s+keys seen\s+note\s+set by\s+set at$/);
  t.match(limitTable.find((l) => l.startsWith('provider:openai')), /^provider:openai\s+requests\s+100\s+1m\s+5\s+0\s+tier 2\s+cli:tester\s+20\d\d-/);
  t.match(ok(resumed, 'resume'), /^key provider:openai resumed; the steps it held back are queued again$/);
  t.equal(ok(deleted, 'limit delete'), 'limit running on tenant:* deleted');
  t.equal(past.code, 4, 'what SQL refuses exits 4');
  t.match(past.stderr, /^ballast: invalid_input: --until: ends at 2020-01-01 00:00:00\+00, which is not after now \(.*\) \(Pass a time in the future, or a positive duration\.\)$/,
    'naming the flag');
  t.same((await pool.query(`select key from ballast.pauses order by key`)).rows.map((r) => r.key), ['tenant:acme']);

  const history = JSON.parse(ok(await cli(t, 'gate-history', 'provider:openai', '--json'), 'gate-history')).filter((h: any) => h.id > start);
  t.same(history.map((h: any) => h.action), ['resume', 'set_limit', 'pause'], 'newest first');
  t.match(history, [{ reason: 'provider back', actor: 'cli:tester' }, { reason: 'tier 2', data: { kind: 'requests', amount: 100, burst: 5 } },
    { reason: '429 from the provider', actor: 'cli:tester' }]);
});

/** Runs a command of src/cli/gates.ts in this process (test/support/cli-inproc.ts). */
const run = (command: (db: BallastDb, args: string[]) => Promise<number>, ...args: string[]) => runInProcess(db, command, ...args);

t.test('the CLI commands: durations and periods, --json, repeated resume and delete, the history in order', async (t) => {
  await clear();
  const start = await lastHistoryId();
  process.env.BALLAST_ACTOR = 'cli:inproc';
  t.teardown(() => { delete process.env.BALLAST_ACTOR; });
  t.equal((await run(pauseCommand, 'queue:emails', '--until', '2099-01-01T00:00:00Z', '--reason', 'relay down')).stdout,
    'key queue:emails paused until 2099-01-01T00:00:00.000Z: relay down');
  t.equal((await run(pauseCommand, 'queue:emails', '--for', '1h', '--reason', 'shorter')).stdout,
    'key queue:emails paused until 2099-01-01T00:00:00.000Z: shorter', 'a longer pause in force is kept');
  t.equal((await run(pauseCommand, 'global', '--reason', 'freeze')).stdout, 'key global paused until resumed: freeze');
  const listed = JSON.parse((await run(pausesCommand, '--json')).stdout);
  t.same(listed.map((p: any) => [p.key, p.inForce, p.pausedBy]), [['global', true, 'cli:inproc'], ['queue:emails', true, 'cli:inproc']]);
  t.same(JSON.parse((await run(resumeCommand, 'global', '--json')).stdout), { key: 'global', resumed: true });
  t.same(await run(resumeCommand, 'global'), { code: 0, stdout: 'key global was not paused; nothing held back' }, 'a second resume finds no pause');

  const weight = await run(limitCommand, 'set', 'provider:openai', '--weight', '90000/minute', '--json');
  t.match(JSON.parse(weight.stdout), { pattern: 'provider:openai', kind: 'weight', amount: 90000, per: '00:01:00', burst: 1, keysSeen: 0, setBy: 'cli:inproc' },
    '--json prints numbers');
  const periods: [string, string, number][] = [['2/500ms', '2 per 500ms', 0.5], ['3/30s', '3 per 30s', 30], ['4/1.5h', '4 per 1.5h', 5400], ['5/day', '5 per 1d', 86_400],
    ['6/2 days', '6 per 2d', 172_800], ['1000000000000/31d', '1000000000000 per 31d', 31 * 86_400]];
  for (const [given, shown, seconds] of periods) {
    const r = await run(limitCommand, 'set', 'step:demo.count', '--requests', given);
    t.equal(r.stdout, `limit requests on step:demo.count set: ${shown}`, given);
    t.equal((await pool.query(`select extract(epoch from per)::float8 as s from ballast.limits where pattern = 'step:demo.count'`)).rows[0].s, seconds, `${given}: ${seconds} s`);
  }
  t.equal((await run(limitCommand, 'set', 'model:openai:gpt-4o', '--requests', '10/1s', '--burst', '20')).stdout,
    'limit requests on model:openai:gpt-4o set: 10 per 1s (burst 20)');
  const table = (await run(limitsCommand)).stdout.split('\n');
  t.equal(table.length, 2 + 3, 'a header, a rule and three limits');
  t.match(table.find((l) => l.startsWith('model:')), /^model:openai:gpt-4o\s+requests\s+10\s+1s\s+20\s+0\s+cli:inproc/);
  t.same(await run(limitCommand, 'delete', 'provider:openai', 'weight'), { code: 0, stdout: 'limit weight on provider:openai deleted' });
  t.same(await run(limitCommand, 'delete', 'provider:openai', 'weight'), { code: 3, stdout: 'no weight limit on provider:openai; nothing deleted' },
    'deleting what is not there exits 3');

  const history = JSON.parse((await run(gateHistoryCommand, '--json')).stdout).filter((h: any) => h.id > start);
  t.equal(history.length, 14, 'every change: 3 pauses, 2 resumes, 8 limits set, 1 deleted');
  t.ok(history.every((h: any, i: number) => i === 0 || h.id < history[i - 1].id), 'newest first, by id as a number');
  t.equal(history[0].action, 'delete_limit');
  t.equal(JSON.parse((await run(gateHistoryCommand, 'global', '--limit', '2', '--json')).stdout).map((h: any) => h.action).join(), 'resume,resume', '--limit, of one key');
  t.match((await run(gateHistoryCommand, 'global')).stdout.split('\n')[0], /^at\s+action\s+key\s+until\s+reason\s+data\s+by$/);
});

t.test('the CLI commands: each bad flag is one line naming it and what to pass (exit 2); nothing is written', async (t) => {
  await clear();
  const count = async () => (await pool.query('select count(*)::int as n from ballast_private.gate_history')).rows[0].n;
  const n = await count();
  const usage: [(db: BallastDb, args: string[]) => Promise<number>, string[], string][] = [
    [pauseCommand, ['k:1', '--for', '10m'], "ballast: pause needs --reason <text>; say why (kept in the history), e.g. --reason 'maintenance'"],
    [pauseCommand, ['k:1', '--reason', ' '], "ballast: pause needs --reason <text>; say why (kept in the history), e.g. --reason 'maintenance'"],
    [pauseCommand, ['--reason', 'x'], "ballast: pause needs a key; e.g. `ballast pause provider:openai --for 10m --reason '429 from the provider'`"],
    [pauseCommand, ['k:1', '--reason', 'x', '--for', '0s'], 'ballast: --for 0s is not more than 0; pass a positive duration, e.g. --for 10m (or 30s, 1h, 1d)'],
    [pauseCommand, ['k:1', '--reason', 'x', '--for', '1m', '--until', '2099-01-01T00:00:00Z'],
      'ballast: pause takes --for or --until, not both; pass --for <duration> (e.g. 10m), --until <time> (e.g. 2026-12-24T18:00:00Z), or neither: until resumed'],
    [pauseCommand, ['k:1', '--reason', 'x', '--until', 'tomorrow'], 'ballast: --until tomorrow is not a time; pass an ISO 8601 time, e.g. --until 2026-12-24T18:00:00Z (or --for 10m)'],
    [resumeCommand, [], "ballast: resume needs a key; e.g. `ballast resume provider:openai --reason 'provider back'`"],
    [limitCommand, ['set', 'k:1', '--requests', '100'], 'ballast: --requests 100 has no period; pass <amount>/<period>, e.g. --requests 100/1m (100 steps per minute)'],
    [limitCommand, ['set', 'k:1', '--requests', '1.5/1m'], 'ballast: --requests 1.5/1m: 1.5 is not a whole number from 1 to 10^12; pass e.g. --requests 100/1m (100 steps per minute)'],
    [limitCommand, ['set', 'k:1', '--weight', '/1m'], 'ballast: --weight /1m: no amount; pass e.g. --weight 90000/1m (weight, e.g. tokens, per minute)'],
    [limitCommand, ['set', 'k:1', '--weight', '10/fortnight'], 'ballast: --weight fortnight is not a duration; pass a number and a unit: ms, s, m, h or d, e.g. --weight 90000/1m (weight, e.g. tokens, per minute)'],
    [limitCommand, ['set', 'k:1', '--requests', '10/40d'], 'ballast: --requests 10/40d: the period is longer than 31 days; pass a period from 1ms to 31d, e.g. --requests 100/1m (100 steps per minute)'],
    [limitCommand, ['set', 'k:1', '--running', '0'], 'ballast: --running 0: 0 is not a whole number from 1 to 10^12; pass e.g. --running 10 (at most 10 at once)'],
    [limitCommand, ['set', 'k:1', '--running', '2', '--burst', '3'], 'ballast: --burst is for --requests and --weight; a --running limit counts steps at once: leave --burst out'],
    [limitCommand, ['set', 'k:1', '--requests', '2/1s', '--burst', '0'], 'ballast: --burst 0 is not an integer from 1 to 1000000000000'],
    [limitCommand, ['set', 'k:1'], 'ballast: limit set needs exactly one of --requests, --weight and --running; pass --requests <n>/<period> (steps per period, e.g. 100/1m), --weight <n>/<period> (weight per period, e.g. 90000/1m) or --running <n> (at once)'],
    [limitCommand, ['set', 'k:1', '--requests', '2/1s', '--running', '2'], 'ballast: limit set needs exactly one of --requests, --weight and --running (got --requests and --running); pass --requests <n>/<period> (steps per period, e.g. 100/1m), --weight <n>/<period> (weight per period, e.g. 90000/1m) or --running <n> (at once)'],
    [limitCommand, ['delete', 'k:1', 'bogus'], 'ballast: limit delete k:1 needs a kind: bogus is not one; pass requests, weight or running, e.g. `ballast limit delete k:1 requests`'],
    [limitCommand, ['delete', 'k:1'], 'ballast: limit delete k:1 needs a kind; pass requests, weight or running, e.g. `ballast limit delete k:1 requests`'],
    [limitCommand, ['raise', 'k:1'], 'ballast: unknown limit command "raise"; use limit set <pattern> --requests <n>/<period> | --weight <n>/<period> | --running <n> [--burst <n>] [--note <text>], or limit delete <pattern> <kind>'],
    [gateHistoryCommand, ['--limit', '0'], 'ballast: --limit 0 is not an integer from 1 to 10000'],
  ];
  for (const [command, args, line] of usage) {
    const r = await run(command, ...args);
    t.equal(r.code, 2, `${command.name} ${args.join(' ')}: exit 2`);
    t.equal(r.stderr, line, line);
  }
  const badKey = await run(pauseCommand, 'Bad Key', '--reason', 'x');
  t.equal(badKey.code, 4, 'a key SQL refuses: exit 4');
  t.match(badKey.stderr, /^ballast: invalid_input: key: 'Bad Key' is not a key \(Use a key such as global, /);
  t.equal(await count(), n, 'nothing was recorded');
});

t.test('the CLI reports a role Postgres refuses as one line, not a stack', async (t) => {
  const report = describeError(Object.assign(new Error('permission denied for function pause_key'), { code: '42501' }));
  t.match(report, { code: 'permission_denied', exitCode: 4, hint: /ballast_operator/ });
  t.match(formatError(report!), /^ballast: permission_denied: permission denied for function pause_key \(connect as a role/);
});
