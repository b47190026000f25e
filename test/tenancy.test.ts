// Tenants and roles in Postgres (migrations/0001_foundations.sql): what ballast_client, ballast_operator, ballast_reporter and
// ballast_anonymous may read and do, through the same views and functions GraphQL and other systems' SQL use; and a
// login bound to a tenant, which cannot talk itself into another tenant.
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { clientLogin, freshDatabase, pgError } from './helpers.ts';

const { name, db, pool } = await freshDatabase(t);
const p = pipeline({ name: 'ten.p', version: 1, input: z.object({ n: z.number() }) }).step('a', { output: z.number() }, () => 1);
await db.registerPipeline(p.name, p.version, p.definition(), p.inputJsonSchema());
const acmeJob = (await db.submitJob({ pipeline: 'ten.p', input: { n: 1 }, tenantId: 'acme' })).jobId;
const globexJob = (await db.submitJob({ pipeline: 'ten.p', input: { n: 2 }, tenantId: 'globex' })).jobId;

/** Runs `fn` in a transaction as `role` (SET ROLE, as the API does), with `tenant` in ballast.tenant_id; rolls back. */
async function as<T>(role: string, tenant: string | null, fn: (c: pg.PoolClient) => Promise<T>, actor?: string): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('begin');
    await c.query(`select set_config('role', $1, true), set_config('ballast.tenant_id', $2, true), set_config('ballast.actor', $3, true)`,
      [role, tenant ?? '', actor ?? '']);
    return await fn(c);
  } finally {
    await c.query('rollback').catch(() => {});
    c.release();
  }
}
const ids = (rows: { id: string }[]) => rows.map((r) => r.id).sort();

t.test('a client sees only its tenant, in every view', async (t) => {
  await as('ballast_client', 'acme', async (c) => {
    t.same(ids((await c.query('select id from ballast.jobs')).rows), [acmeJob]);
    const steps = (await c.query('select job_id from ballast.steps')).rows;
    t.same([...new Set(steps.map((s) => s.job_id))], [acmeJob], 'steps');
    const events = (await c.query('select distinct job_id from ballast.events')).rows;
    t.same(events.map((e) => e.job_id), [acmeJob], 'events');
    t.equal((await c.query('select * from ballast.jobs where id = $1', [globexJob])).rowCount, 0, 'a probe by id finds nothing');
    t.equal((await c.query('select * from ballast_private.jobs where id = $1', [globexJob])).rowCount, 0, 'nor does the table behind the view');
  });
});

t.test('a client submits and cancels for its own tenant only', async (t) => {
  await as('ballast_client', 'acme', async (c) => {
    const { rows: [r] } = await c.query(`select * from ballast.submit_job('ten.p', '{"n": 3}')`);
    const { rows: [j] } = await c.query('select tenant_id from ballast.jobs where id = $1', [r.job_id]);
    t.equal(j.tenant_id, 'acme', 'submitted for the tenant of the caller');
    const { rows: [e] } = await c.query(`select actor from ballast.events where job_id = $1 and type = 'job_submitted'`, [r.job_id]);
    t.equal(e.actor, 'jwt:alice', 'the audit trail names the caller');
    await c.query('savepoint s');
    const other = await pgError(() => c.query(`select * from ballast.submit_job('ten.p', '{"n": 3}', null, 'globex')`));
    t.equal(other.code, 'BA014');
    t.equal(other.message, 'tenant acme cannot submit jobs for tenant globex');
    await c.query('rollback to s');
    const cancel = await pgError(() => c.query('select * from ballast.cancel_job($1)', [globexJob]));
    t.same([cancel.code, cancel.message], ['BA007', `job ${globexJob} does not exist`], 'another tenant\'s job does not exist for it');
    await c.query('rollback to s');
    const { rows: [k] } = await c.query('select status from ballast.cancel_job($1)', [acmeJob]);
    t.equal(k.status, 'cancelled', 'its own job it can cancel');
    await c.query('rollback to s');
    const { rows: [ins] } = await c.query(`insert into ballast.jobs (pipeline, input) values ('ten.p', '{"n": 4}') returning tenant_id, status`);
    t.same(ins, { tenant_id: 'acme', status: 'queued' }, 'INSERT INTO ballast.jobs submits for its tenant too');
    await c.query('rollback to s');
    const replay = await pgError(() => c.query('select * from ballast.replay_job($1)', [acmeJob]));
    t.equal(replay.code, '42501', 'replay is an operator verb');
    await c.query('rollback to s');
    const internal = await pgError(() => c.query(`select * from ballast.claim_step(1, 'w')`));
    t.equal(internal.code, '42501', 'worker verbs are not for clients');
    await c.query('rollback to s');
    const write = await pgError(() => c.query(`update ballast_private.jobs set priority = 5`));
    t.equal(write.code, '42501', 'no direct writes');
  }, 'jwt:alice');
});

t.test('a client without a tenant sees nothing and may not submit', async (t) => {
  await as('ballast_client', null, async (c) => {
    t.equal((await c.query('select * from ballast.jobs')).rowCount, 0);
    const e = await pgError(() => c.query(`select * from ballast.submit_job('ten.p', '{"n": 1}')`));
    t.equal(e.code, 'BA014');
    t.match(e.message, /acts for no tenant/);
  });
});

t.test('anonymous may do nothing', async (t) => {
  await as('ballast_anonymous', 'acme', async (c) => {
    const e = await pgError(() => c.query('select * from ballast.jobs'));
    t.equal(e.code, '42501');
  });
});

t.test('a reporter reads every tenant and changes nothing', async (t) => {
  await as('ballast_reporter', null, async (c) => {
    t.same(ids((await c.query('select id from ballast.jobs')).rows), [acmeJob, globexJob].sort());
    t.ok((await c.query('select * from ballast.workers')).rowCount! >= 0, 'workers are readable');
    const e = await pgError(() => c.query(`select * from ballast.submit_job('ten.p', '{"n": 1}')`));
    t.equal(e.code, '42501');
  });
});

t.test('an operator reads every tenant, replays and decides, named in the audit trail', async (t) => {
  await as('ballast_operator', null, async (c) => {
    t.same(ids((await c.query('select id from ballast.jobs')).rows), [acmeJob, globexJob].sort());
    await c.query('select * from ballast.cancel_job($1)', [globexJob]);
    const { rows: [r] } = await c.query('select * from ballast.replay_job($1)', [globexJob]);
    t.equal(r.job_id, globexJob);
    const { rows: [e] } = await c.query(`select actor from ballast.events where job_id = $1 and type = 'step_replayed'`, [globexJob]);
    t.equal(e.actor, 'jwt:olga');
    await c.query(`select ballast.set_budget('acme', 10, 'month', 'pause')`);
  }, 'jwt:olga');
});

t.test('a login bound to a tenant acts for it whatever it sets', async (t) => {
  const { login, c } = await clientLogin(t, pool, name, 'login', 'globex');
  await c.query(`set ballast.tenant_id = 'acme'`);
  t.same(ids((await c.query('select id from ballast.jobs')).rows), [globexJob], 'it sees its bound tenant, not the one it set');
  const { rows: [r] } = await c.query(`select * from ballast.submit_job('ten.p', '{"n": 9}')`);
  const { rows: [j] } = await pool.query('select tenant_id from ballast.jobs where id = $1', [r.job_id]);
  t.equal(j.tenant_id, 'globex');
  const { rows: [e] } = await pool.query(`select actor from ballast.events where job_id = $1 and type = 'job_submitted'`, [r.job_id]);
  t.equal(e.actor, login, 'named by its login');
  const bind = await pgError(() => c.query(`select ballast.bind_role_tenant($1, 'acme')`, [login]));
  t.equal(bind.code, '42501', 'it cannot rebind itself');
});

t.test('a login with ballast_client but no tenant can see and change nothing; nobody but the owner moves the clock', async (t) => {
  const { login, c } = await clientLogin(t, pool, name, 'unbound', null);
  // Everything a session can set to talk itself into something.
  await c.query(`set ballast.tenant_id = 'acme'`);
  await c.query(`set ballast.actor = 'the-ceo'`);
  await c.query(`set ballast.now = '2100-01-01T00:00:00Z'`);
  const target = (await db.submitJob({ pipeline: 'ten.p', input: { n: 5 }, tenantId: 'acme' })).jobId;
  t.equal((await c.query('select id from ballast.jobs')).rowCount, 0, 'unbound: no job is visible');
  const cancel = await pgError(() => c.query(`select * from ballast.cancel_job($1, 'probe', 'the-ceo')`, [target]));
  t.same([cancel.code, /acts for no tenant/.test(cancel.message)], ['BA014', true], 'unbound: cancel refused for want of a tenant');
  const finished = await pgError(() => c.query(`select * from ballast.cancel_job($1, 'probe', null)`, [globexJob]));
  t.equal(finished.code, 'BA014', 'the same error whatever the job\'s state: nothing is learned about it');
  t.equal((await db.getJob(target))!.status, 'queued', 'the job was not cancelled');

  await pool.query('select ballast.bind_role_tenant($1, $2)', [login, 'globex']);
  const other = await pgError(() => c.query(`select * from ballast.cancel_job($1, 'probe', null)`, [target]));
  t.equal(other.code, 'BA007', 'bound to another tenant: the job does not exist for it');
  const { rows: [mine] } = await c.query(`select job_id::text from ballast.submit_job('ten.p', '{"n": 6}')`);
  const { rows: [created] } = await pool.query(`select created_at from ballast.jobs where id = $1`, [mine.job_id]);
  t.ok(created.created_at.getFullYear() < 2100, `the clock it set is ignored (created ${created.created_at.toISOString()})`);
  await c.query(`select * from ballast.cancel_job($1, 'mine', 'the-ceo')`, [mine.job_id]);
  const { rows: [ev] } = await pool.query(`select actor, at from ballast.events where job_id = $1 and type = 'job_cancelled'`, [mine.job_id]);
  t.equal(ev.actor, login, 'the audit trail names its login, not the actor it claimed');
  t.ok(ev.at.getFullYear() < 2100, 'and the event\'s time is the real one');
  const owner = await pool.connect();
  try {
    await owner.query('begin');
    await owner.query(`select set_config('ballast.now', '2031-05-05T00:00:00Z', true)`);
    t.equal((await owner.query(`select ballast.now() as now`)).rows[0].now.toISOString(), '2031-05-05T00:00:00.000Z', 'the owner still moves the clock (tests)');
  } finally {
    await owner.query('rollback');
    owner.release();
  }
});

t.test('functions are not executable by PUBLIC, including ones created later by the migrating user', async (t) => {
  const { rows } = await pool.query(`
    select p.oid::regprocedure::text as fn from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname in ('ballast', 'ballast_private') and has_function_privilege('public', p.oid, 'execute')`);
  t.same(rows, [], 'no ballast function is executable by PUBLIC');
  await pool.query(`create function ballast.tenancy_probe() returns int language sql as 'select 1'`);
  t.teardown(() => pool.query('drop function ballast.tenancy_probe()'));
  const { rows: [r] } = await pool.query(`select has_function_privilege('ballast_client', 'ballast.tenancy_probe()', 'execute') as can`);
  t.equal(r.can, false, 'a new function starts closed');
});
