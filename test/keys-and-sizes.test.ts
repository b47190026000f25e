// Limits in bytes and sizes (migrations/0005_pipelines_and_submit.sql, issue 13): tenant ids and keys at their maxima in
// 4-byte characters get BA002 naming the argument (not SQLSTATE 54000 from an index) on every way in; keys are not
// normalised (NFC and NFD are two keys); an input over its pipeline's max_input_bytes is refused before it is
// validated, per input and per batch; a long concurrency value does not break the index; and event keys belong to a
// tenant: an event reaches only its tenant's waiting steps, a client sends to its own tenant only.
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { clientLogin, freshDatabase, pgError } from './helpers.ts';
import { pipeline, type Pipeline } from '../src/pipeline/pipeline.ts';

const { name, pool, db } = await freshDatabase(t);
const register = (p: Pipeline<any, any>) => db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());

const Any = z.object({}).passthrough();
const Done = z.object({});
await register(pipeline({ name: 'ks.p', version: 1, input: Any }).step('a', { output: Done }, () => ({})));

const four = '\u{1F600}'; // 4 bytes of UTF-8, one character (two UTF-16 units)
const big = (chars: number) => four.repeat(chars);

async function counts(): Promise<{ jobs: number; steps: number }> {
  const { rows } = await pool.query(`select (select count(*)::int from ballast_private.jobs) as jobs,
                                            (select count(*)::int from ballast_private.steps) as steps`);
  return rows[0];
}

t.test('tenant ids and idempotency keys are limited in bytes: BA002 naming the argument, never 54000', async (t) => {
  const before = await counts();
  // The old limits in characters: 200 and 500 four-byte characters (800 + 2,000 bytes) overflowed the unique index.
  const tenantErr = await pgError(() => pool.query(`select * from ballast.submit_job('ks.p', '{}', $1, $2)`, [big(500), big(200)]));
  t.equal(tenantErr.code, 'BA002', `tenant at 200 four-byte characters: ${tenantErr.message}`);
  t.match(tenantErr.message, /^tenant_id: is 800 bytes of UTF-8 \(200 characters\); at most 200 bytes/);
  const keyErr = await pgError(() => pool.query(`select * from ballast.submit_job('ks.p', '{}', $1, 't1')`, [big(500)]));
  t.equal(keyErr.code, 'BA002');
  t.match(keyErr.message, /^idempotency_key: is 2000 bytes of UTF-8 \(500 characters\); at most 500 bytes/);
  t.match(keyErr.hint, /1 to 500 bytes/);
  const insertErr = await pgError(() => pool.query(
    `insert into ballast.jobs (pipeline, input, idempotency_key, tenant_id) values ('ks.p', '{}', $1, $2)`, [big(125) + 'x', 't1']));
  t.equal(insertErr.code, 'BA002', 'INSERT INTO ballast.jobs: 501 bytes');
  t.match(insertErr.message, /^idempotency_key: is 501 bytes/);
  const batchErr = await pgError(() => pool.query(`select * from ballast.submit_jobs('ks.p', array['{}', '{}']::jsonb[], $1::text[], $2)`,
    [['ok', big(126)], 't1']));
  t.equal(batchErr.code, 'BA002');
  t.match(batchErr.message, /^idempotency_keys\[2\]: is 504 bytes/);
  const batchTenant = await pgError(() => pool.query(`select * from ballast.submit_jobs('ks.p', array['{}']::jsonb[], null, $1)`, [big(51)]));
  t.match(batchTenant.message, /^tenant_id: is 204 bytes/);
  const empty = await pgError(() => pool.query(`select * from ballast.submit_job('ks.p', '{}', '', 't1')`));
  t.match(empty.message, /^idempotency_key: is empty/);
  t.same(await counts(), before, 'nothing was written');

  // At the maxima in bytes, in 4-byte characters, everything fits the indexes, on every way in.
  const tenant = big(50); // 200 bytes
  const key = big(125); // 500 bytes
  const { rows: [a] } = await pool.query(`select * from ballast.submit_job('ks.p', '{}', $1, $2)`, [key, tenant]);
  t.equal(a.created, true, 'tenant 200 bytes + key 500 bytes: submitted');
  const { rows: [again] } = await pool.query(`select * from ballast.submit_job('ks.p', '{}', $1, $2)`, [key, tenant]);
  t.same([again.job_id, again.created], [a.job_id, false], 'and found again by its key');
  const batch = await pool.query(`select * from ballast.submit_jobs('ks.p', array['{"n": 1}']::jsonb[], $1::text[], $2)`,
    [[big(124) + 'abcd'], tenant]);
  t.equal(batch.rows[0].created, true, 'submit_jobs at the maxima');
  await pool.query(`insert into ballast.jobs (pipeline, input, idempotency_key, tenant_id) values ('ks.p', '{"n": 2}', $1, $2)`,
    [big(124) + 'efgh', tenant]);
  t.equal((await pool.query(`select count(*)::int as n from ballast.jobs where tenant_id = $1`, [tenant])).rows[0].n, 3);
});

t.test('keys are compared byte for byte: NFC and NFD spellings are two keys (documented)', async (t) => {
  const nfc = 'caf\u00e9'.normalize('NFC');
  const nfd = 'caf\u00e9'.normalize('NFD');
  t.not(nfc, nfd);
  const { rows: [a] } = await pool.query(`select * from ballast.submit_job('ks.p', '{}', $1, 'nf')`, [nfc]);
  const { rows: [b] } = await pool.query(`select * from ballast.submit_job('ks.p', '{}', $1, 'nf')`, [nfd]);
  t.equal(a.created && b.created, true, 'two jobs');
  t.not(a.job_id, b.job_id);
});

t.test('bind_role_tenant and the table checks count bytes too', async (t) => {
  const err = await pgError(() => pool.query(`select ballast.bind_role_tenant('postgres', $1)`, [big(51)]));
  t.equal(err.code, 'BA002');
  t.match(err.message, /^tenant_id: is 204 bytes/);
  const direct = await pgError(() => pool.query(
    `insert into ballast_private.jobs (tenant_id, pipeline, pipeline_version, request_hash, input) values ($1, 'ks.p', 1, repeat('0', 64), '{}')`,
    [big(51)]));
  t.equal(direct.code, '23514', 'a direct write past the functions meets the byte check of the table');
});

t.test('inputs over the pipeline\'s max_input_bytes are refused before validation, on every way in', async (t) => {
  // A contract that would list a problem per item: the size check must come first (and cheaply).
  await register(pipeline({ name: 'ks.size', version: 1, input: z.object({ items: z.array(z.number()) }) })
    .step('a', { output: Done }, () => ({})));
  await register(pipeline({ name: 'ks.size', version: 2, input: z.object({ items: z.array(z.number()) }), maxInputBytes: 3_000_000 })
    .step('a', { output: Done }, () => ({})));
  const before = await counts();
  const over = JSON.stringify({ items: Array.from({ length: 250_000 }, () => 'x') }); // ~1.25 MB, every item wrong
  const err = await pgError(() => pool.query(`select * from ballast.submit_job('ks.size', $1::jsonb, null, 'default', 0, 1)`, [over]));
  t.equal(err.code, 'BA002');
  t.match(err.message, /^input: is \d+ bytes of JSON; at most 1048576 are accepted \(pipeline ks\.size@1\)$/);
  t.match(err.hint, /maxInputBytes/);
  const viaInsert = await pgError(() => pool.query(`insert into ballast.jobs (pipeline, pipeline_version, input) values ('ks.size', 1, $1::jsonb)`, [over]));
  t.match(viaInsert.message, /^input: is \d+ bytes of JSON/);
  const viaBatch = await pgError(() => pool.query(`select * from ballast.submit_jobs('ks.size', array['{"items": []}', $1]::jsonb[], null, 'default', 0, 1)`, [over]));
  t.match(viaBatch.message, /^inputs\[2\]: is \d+ bytes of JSON; at most 1048576 are accepted \(pipeline ks\.size@1\)$/);

  // Version 2 raised its limit: the same input is accepted for size, then validated (and refused for content).
  const v2 = await pgError(() => pool.query(`select * from ballast.submit_job('ks.size', $1::jsonb, null, 'default', 0, 2)`, [over]));
  t.match(v2.message, /^input does not match the contract of pipeline ks\.size@2 \(more than 100 problems, the first 100 listed\): input\.items\[0\]: /);
  const listed = JSON.parse(v2.detail!) as { path: string }[];
  t.equal(listed.length, 100, 'the detail lists the first 100 (validation stopped there)');
  t.equal(listed[99]!.path, 'input.items[99]');
  const fine = JSON.stringify({ items: Array.from({ length: 200_000 }, (_, i) => i) });
  const { rows: [ok] } = await pool.query(`select * from ballast.submit_job('ks.size', $1::jsonb, null, 'default', 0, 2)`, [fine]);
  t.equal(ok.created, true, 'a valid 1.3 MB input is accepted by the version that allows 3 MB');

  // A batch adds up: 8 inputs of 2.5 MB (each under version 2's limit) are 20 MB, over the 16 MiB per call.
  const chunk = JSON.stringify({ items: Array.from({ length: 850_000 }, (_, i) => i % 10) });
  const many = await pgError(() => pool.query(`select * from ballast.submit_jobs('ks.size', $1::jsonb[], null, 'default', 0, 2)`,
    [Array.from({ length: 8 }, () => chunk)]));
  t.match(many.message, /^inputs: hold \d+ bytes of JSON in all; one call accepts at most 16777216/);

  // 20 MB: refused for its size, without validating (the adversary's input held a backend for minutes).
  const huge = JSON.stringify({ items: Array.from({ length: 2_500_000 }, () => 'xxxxx') });
  const started = Date.now();
  const hugeErr = await pgError(() => pool.query(`select * from ballast.submit_job('ks.size', $1::jsonb)`, [huge]));
  t.match(hugeErr.message, /^input: is (more than 3000000|\d+) bytes of JSON; at most 3000000 are accepted \(pipeline ks\.size@2\)$/);
  t.ok(Date.now() - started < 30_000, `refused in ${Date.now() - started} ms (a generous bound: the machine is shared)`);
  t.same(await counts(), { jobs: before.jobs + 1, steps: before.steps + 1 }, 'only the valid job was written');
  const { rows: [n] } = await pool.query(`select count(*)::int as n from ballast.jobs where pipeline = 'ks.size'`);
  t.equal(n.n, 1);

  // Numbers Postgres would print in full: 1e131071 is 8 bytes of input and 131,072 digits of text.
  for (const [what, json] of [['huge', '[1e131071]'], ['negative huge', '{"a": [-1e400]}'], ['tiny', '[1e-16000]']] as const) {
    const bomb = await pgError(() => pool.query(`select * from ballast.submit_job('ks.p', $1::jsonb)`, [json]));
    t.match(bomb.message, /^input: holds a number outside the range of a 64-bit float/, `${what}: refused`);
    const inBatch = await pgError(() => pool.query(`select * from ballast.submit_jobs('ks.p', array['{}', $1]::jsonb[])`, [json]));
    t.match(inBatch.message, /^inputs\[2\]: holds a number outside the range/);
  }
  const bombs = '[' + Array.from({ length: 1000 }, () => '1e131071').join(',') + ']';
  const bombErr = await pgError(() => pool.query(`select * from ballast.submit_job('ks.p', $1::jsonb)`, [bombs]));
  t.match(bombErr.message, /outside the range/, 'a 9 kB input that would print as 131 MB is refused');
  const { rows: [edge] } = await pool.query(`select * from ballast.submit_job('ks.p', '{"max": 1.7976931348623157e308, "min": -1e307, "zero": 0, "small": 1e-300}')`);
  t.equal(edge.created, true, 'numbers a double can hold are fine');

  t.throws(() => pipeline({ name: 'ks.bad', version: 1, input: Any, maxInputBytes: 100_000_000 }), /maxInputBytes 100000000 is not an integer from 1 to 67108864/);
  const raw = await pgError(() => db.registerPipeline('ks.raw', 1, { steps: [{ name: 'a', depends_on: [], max_attempts: 1, backoff_base_ms: 0, backoff_cap_ms: 0, timeout_ms: null, concurrency: null }], max_input_bytes: 0 }, {}));
  t.match(String(raw.message), /pipeline_max_input_bytes/, 'a definition registered by hand with a bad max_input_bytes is refused');
});

t.test('a concurrency key from a long input value is hashed, not refused by the index', async (t) => {
  await register(pipeline({ name: 'ks.conc', version: 1, input: z.object({ shard: z.string() }) })
    .step('a', { output: Done, concurrency: { limit: 1, key: 'input.shard' } }, () => ({})));
  const long = 'k'.repeat(10_000);
  const r1 = await pool.query(`select * from ballast.submit_job('ks.conc', $1::jsonb)`, [JSON.stringify({ shard: long })]);
  const r2 = await pool.query(`select * from ballast.submit_jobs('ks.conc', array[$1]::jsonb[])`, [JSON.stringify({ shard: long })]);
  const r3 = await pool.query(`select * from ballast.submit_job('ks.conc', $1::jsonb)`, [JSON.stringify({ shard: 'short' })]);
  const { rows } = await pool.query(`select job_id, concurrency_key from ballast.steps where job_id = any($1::bigint[]) order by job_id`,
    [[r1.rows[0].job_id, r2.rows[0].job_id, r3.rows[0].job_id]]);
  t.match(rows[0].concurrency_key, /^ks\.conc\.a\/sha256:[0-9a-f]{64}$/);
  t.equal(rows[1].concurrency_key, rows[0].concurrency_key, 'equal values share one group');
  t.equal(rows[2].concurrency_key, 'ks.conc.a/short', 'short values are kept as they are');
});

t.test('event keys belong to a tenant', async (t) => {
  await register(pipeline({ name: 'ks.wait', version: 1, input: Any }).step('w', { output: Done }, () => ({})));
  const sql = new pg.Client({ connectionString: (pool as any).options.connectionString });
  await sql.connect();
  t.teardown(() => sql.end());
  await sql.query(`select ballast.register_worker('ks-worker', 'test', $1, 1, '{}')`, [process.pid]);
  /** A job of `tenant` whose step waits for `key`; returns its step id. */
  async function waiting(tenant: string, key: string): Promise<string> {
    const { rows: [j] } = await sql.query(`select job_id from ballast.submit_job('ks.wait', '{}', null, $1)`, [tenant]);
    const { rows: [s] } = await sql.query(`select id from ballast.steps where job_id = $1`, [j.job_id]);
    const { rows: [a] } = await sql.query(`select * from ballast.claim_step($1::bigint, 'ks-worker', 60000)`, [s.id]);
    const { rows: [w] } = await sql.query(`select * from ballast.wait_for_event($1::bigint, $2)`, [a.attempt_id, key]);
    t.same(w, { received: false, payload: null });
    return String(s.id);
  }
  const stepA = await waiting('tenant-a', 'order:1');
  const stepB = await waiting('tenant-b', 'order:1');
  const stepD = await waiting('default', 'order:1');

  const { rows: [toA] } = await sql.query(`select * from ballast.send_event('order:1', '{"for": "a"}', 'op', 'tenant-a')`);
  t.same(toA, { accepted: true, resumed_step_ids: [stepA] }, 'an operator naming tenant-a resumes only its step');
  const { rows: [toDefault] } = await sql.query(`select * from ballast.send_event('order:1', '{"for": "default"}')`);
  t.same(toDefault, { accepted: true, resumed_step_ids: [stepD] }, 'without a tenant: the tenant default');
  const status = async (id: string) => (await sql.query(`select status from ballast.steps where id = $1`, [id])).rows[0].status;
  t.equal(await status(stepB), 'waiting', 'tenant-b\'s step still waits');

  // A client of tenant-b sends to its own tenant; naming another is refused; an unbound one may send nothing.
  const { c: clientB } = await clientLogin(t, pool, name, 'evb', 'tenant-b');
  const refused = await pgError(() => clientB.query(`select * from ballast.send_event('order:1', '{}', null, 'tenant-a')`));
  t.equal(refused.code, 'BA014');
  t.match(refused.message, /tenant tenant-b cannot send events to tenant tenant-a/);
  const { rows: [toB] } = await clientB.query(`select * from ballast.send_event('order:1', '{"for": "b"}')`);
  t.same(toB, { accepted: true, resumed_step_ids: [stepB] });
  const { rows: seen } = await clientB.query(`select tenant_id, key, payload, actor from ballast.signals order by tenant_id`);
  t.same(seen.map((r) => [r.tenant_id, r.payload]), [['tenant-b', { for: 'b' }]], 'a client reads its own tenant\'s signals only');
  t.match(seen[0].actor, /^ballast_t_evb_/, 'and is named by its login in the audit trail');
  const { c: unbound } = await clientLogin(t, pool, name, 'evu', null);
  t.equal((await pgError(() => unbound.query(`select * from ballast.send_event('order:1', '{}')`))).code, 'BA014');

  // Each step, run again, gets its own tenant's payload; a second send to a tenant is a no-op.
  for (const [step, tenantPayload] of [[stepA, { for: 'a' }], [stepB, { for: 'b' }], [stepD, { for: 'default' }]] as const) {
    const { rows: [a] } = await sql.query(`select * from ballast.claim_step($1::bigint, 'ks-worker', 60000)`, [step]);
    const { rows: [w] } = await sql.query(`select * from ballast.wait_for_event($1::bigint, 'order:1')`, [a.attempt_id]);
    t.same(w, { received: true, payload: tenantPayload }, `step ${step} receives its tenant's payload`);
  }
  const { rows: [twice] } = await sql.query(`select * from ballast.send_event('order:1', '{"for": "a2"}', null, 'tenant-a')`);
  t.same(twice, { accepted: false, resumed_step_ids: [] });
  const long = await pgError(() => sql.query(`select * from ballast.send_event($1, '{}')`, [big(126)]));
  t.match(long.message, /^key: is 504 bytes of UTF-8/);
});
