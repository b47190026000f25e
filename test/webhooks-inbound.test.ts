// Inbound webhooks (migration 0048, src/server/webhooks.ts) over real HTTP on 127.0.0.1: a signed delivery submits
// one job however often it is retried at once; forged, late, replayed and invalid deliveries are refused, logged, and
// write nothing else; secrets rotate without a gap; the view never shows a secret.
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { Webhook } from 'standardwebhooks';
import { freshDatabase } from './helpers.ts';
import { testServer } from './support/graphql.ts';
import { wordstats } from '../tasks/demo.ts';

const { url, pool, db } = await freshDatabase(t);
await db.registerPipeline(wordstats.name, wordstats.version, wordstats.definition(), wordstats.inputJsonSchema());
const server = await testServer(t, url);
const base = `http://127.0.0.1:${server.port}/webhooks/`;

const newSecret = () => `whsec_${randomBytes(32).toString('base64')}`;
const oldSecret = newSecret();
await pool.query(`select ballast.set_webhook_endpoint('wordstats-in', 'demo.wordstats', array[$1], array['data'])`, [oldSecret]);

async function deliver(path: string, secret: string, id: string, body: string, at = new Date()) {
  const headers = {
    'content-type': 'application/json',
    'webhook-id': id,
    'webhook-timestamp': String(Math.floor(at.getTime() / 1000)),
    'webhook-signature': new Webhook(secret).sign(id, at, body),
  };
  const res = await fetch(base + path, { method: 'POST', headers, body });
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

const count = async (sql: string, values: unknown[] = []) => Number((await pool.query(sql, values)).rows[0].n);
const jobs = () => count(`select count(*) as n from ballast.jobs`);
const refusals = (reason: string, id: string) =>
  count(`select count(*) as n from ballast.webhook_refusals where reason = $1 and webhook_id = $2`, [reason, id]);

t.test('50 concurrent retries of one delivery submit exactly one job', async (t) => {
  const body = JSON.stringify({ type: 'text.created', data: { text: 'the cat sat on the mat' } });
  const results = await Promise.all(Array.from({ length: 50 }, () => deliver('wordstats-in', oldSecret, 'msg_concurrent', body)));
  t.same(new Set(results.map((r) => r.status)), new Set([202]), 'all 202');
  const ids = new Set(results.map((r) => r.body.job_id));
  t.equal(ids.size, 1, 'all answered with the same job id');
  t.equal(results.filter((r) => r.body.created).length, 1, 'one of them created it');
  t.equal(await count(`select count(*) as n from ballast.jobs where idempotency_key = 'webhook:wordstats-in:msg_concurrent'`), 1);
  const { rows } = await pool.query(`select input from ballast.jobs where id = $1`, [[...ids][0]]);
  t.same(rows[0].input, { text: 'the cat sat on the mat' }, 'the input is the body at input_path');
});

t.test('a bad signature is refused with 401, logged, and submits nothing', async (t) => {
  const before = await jobs();
  const r = await deliver('wordstats-in', newSecret(), 'msg_forged', JSON.stringify({ data: { text: 'forged' } }));
  t.equal(r.status, 401);
  t.equal(r.body.reason, 'bad_signature');
  t.equal(await jobs(), before, 'no job');
  t.equal(await refusals('bad_signature', 'msg_forged'), 1, 'logged');
});

t.test('a timestamp 10 minutes old is refused', async (t) => {
  const before = await jobs();
  const r = await deliver('wordstats-in', oldSecret, 'msg_late', JSON.stringify({ data: { text: 'late' } }), new Date(Date.now() - 10 * 60_000));
  t.equal(r.status, 401);
  t.equal(r.body.reason, 'old_timestamp');
  t.equal(await jobs(), before, 'no job');
  t.equal(await refusals('old_timestamp', 'msg_late'), 1, 'logged');
});

t.test('the same webhook id with another body is a replay: 409, nothing written', async (t) => {
  const first = await deliver('wordstats-in', oldSecret, 'msg_replayed', JSON.stringify({ data: { text: 'original' } }));
  t.equal(first.status, 202);
  const before = await jobs();
  const r = await deliver('wordstats-in', oldSecret, 'msg_replayed', JSON.stringify({ data: { text: 'tampered' } }));
  t.equal(r.status, 409);
  t.equal(r.body.reason, 'replay');
  t.equal(await jobs(), before, 'no job');
  t.equal(await refusals('replay', 'msg_replayed'), 1, 'logged');
  const again = await deliver('wordstats-in', oldSecret, 'msg_replayed', JSON.stringify({ data: { text: 'original' } }));
  t.same([again.status, again.body.job_id, again.body.created], [202, first.body.job_id, false], 'the original retried is still fine');
});

t.test('input failing the contract gets 400 naming the field, and no job', async (t) => {
  const before = await jobs();
  const r = await deliver('wordstats-in', oldSecret, 'msg_invalid', JSON.stringify({ data: { text: '' } }));
  t.equal(r.status, 400);
  t.equal(r.body.reason, 'invalid_input');
  t.ok(r.body.issues.some((i: { path: string }) => String(i.path).includes('text')), 'the issue names text');
  const missing = await deliver('wordstats-in', oldSecret, 'msg_no_data', JSON.stringify({ text: 'no data key' }));
  t.equal(missing.status, 400);
  t.match(missing.body.error, /data: is missing from the body/);
  const notJson = await deliver('wordstats-in', oldSecret, 'msg_not_json', 'not json');
  t.equal(notJson.status, 400);
  t.equal(await jobs(), before, 'no job');
  t.equal(await refusals('invalid_input', 'msg_invalid'), 1, 'logged');
});

t.test('unknown endpoints are 404 and logged', async (t) => {
  const r = await deliver('nowhere', oldSecret, 'msg_lost', '{}');
  t.equal(r.status, 404);
  t.equal(await refusals('unknown_endpoint', 'msg_lost'), 1);
});

t.test('missing headers are 400 and a body over the limit is 413, both logged', async (t) => {
  const before = await jobs();
  const res = await fetch(base + 'wordstats-in', { method: 'POST', headers: { 'webhook-id': 'msg_unsigned' }, body: '{}' });
  t.equal(res.status, 400);
  t.equal(((await res.json()) as { reason: string }).reason, 'missing_headers');
  t.equal(await refusals('missing_headers', 'msg_unsigned'), 1);
  const big = JSON.stringify({ data: { text: 'x'.repeat(server.settings.limits.maxBodyBytes) } });
  const r = await deliver('wordstats-in', oldSecret, 'msg_big', big);
  t.equal(r.status, 413);
  t.equal(await refusals('too_large', 'msg_big'), 1);
  t.equal(await jobs(), before, 'no job');
});

t.test('rotation: old and new secrets both pass until the old one is removed', async (t) => {
  const next = newSecret();
  t.equal((await pool.query(`select ballast.rotate_webhook_secret('wordstats-in', $1) as n`, [next])).rows[0].n, 2);
  t.equal((await deliver('wordstats-in', oldSecret, 'msg_rot_old', JSON.stringify({ data: { text: 'a' } }))).status, 202, 'old secret');
  t.equal((await deliver('wordstats-in', next, 'msg_rot_new', JSON.stringify({ data: { text: 'b' } }))).status, 202, 'new secret');
  const { rows } = await pool.query(`select secret_count, secret_fingerprints from ballast.webhook_endpoints where path = 'wordstats-in'`);
  t.equal(rows[0].secret_count, 2);
  await pool.query(`select ballast.remove_webhook_secret('wordstats-in', $1)`, [rows[0].secret_fingerprints[0]]);
  t.equal((await deliver('wordstats-in', oldSecret, 'msg_rot_old2', JSON.stringify({ data: { text: 'c' } }))).status, 401, 'old secret removed');
  t.equal((await deliver('wordstats-in', next, 'msg_rot_new2', JSON.stringify({ data: { text: 'd' } }))).status, 202, 'new secret still');
  await t.rejects(pool.query(`select ballast.remove_webhook_secret('wordstats-in', $1)`, [next]), /last secret/);
});

t.test('the view never shows a secret; bad configuration is refused', async (t) => {
  const { rows } = await pool.query(`select to_jsonb(e)::text as row from ballast.webhook_endpoints e`);
  for (const r of rows) t.notMatch(r.row, /whsec_/, 'no secret in the view');
  await t.rejects(pool.query(`select ballast.set_webhook_endpoint('x', 'demo.wordstats', array['nope'])`), /secret: is not whsec_/);
  await t.rejects(pool.query(`select ballast.set_webhook_endpoint('a/b', 'demo.wordstats', array[$1])`, [newSecret()]), /path:/);
  await t.rejects(pool.query(`select ballast.set_webhook_endpoint('x', 'no.such', array[$1])`, [newSecret()]), /not registered/);
  const client = await pool.connect();
  try {
    await client.query('begin; set local role ballast_reporter');
    t.ok((await client.query('select count(*) from ballast.webhook_refusals')).rows.length, 'reporters read the refusals');
    await t.rejects(client.query('select secrets from ballast_private.webhook_endpoints'), /permission denied/, 'but no secret');
    await client.query('rollback; begin; set local role ballast_client');
    await t.rejects(client.query('select * from ballast_private.webhook_endpoint_for($1)', ['wordstats-in']), /permission denied/, 'clients cannot look secrets up');
    await client.query('rollback');
  } finally {
    client.release();
  }
  t.equal((await pool.query(`select ballast.delete_webhook_endpoint('wordstats-in') as d`)).rows[0].d, true);
});
