// Cron schedules (migrations/0033_schedules.sql, issue 15 item 2): the cron evaluator in SQL (checked against an
// independent implementation, croner), set/pause/resume/delete with their errors, firing on the controllable clock
// (each slot once, however many schedulers fire at once; missed slots by policy), and workers firing them.
import t from 'tap';
import { z } from 'zod';
import { Cron } from 'croner';
import type pg from 'pg';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { ballastMetrics } from '../src/metrics.ts';
import { clientLogin, eventually, freshDatabase, pgError, spawnNode, testWorker } from './helpers.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';

const { url, db, pool, name } = await freshDatabase(t);
/** Each test starts without schedules: fire_schedules fires every due schedule of the database. */
const clearSchedules = () => pool.query('delete from ballast_private.schedules');
const tick = pipeline({ name: 'sched.tick', version: 1, input: z.object({ n: z.number() }) })
  .step('echo', { output: z.number() }, ({ input }) => input.n);
await db.registerPipeline(tick.name, tick.version, tick.definition(), tick.inputJsonSchema());

async function next(cron: string, tz: string, after: string | Date): Promise<Date | null> {
  return (await pool.query('select ballast_private.cron_next($1, $2, $3) as at', [cron, tz, after])).rows[0].at;
}

/** A connection whose clock (ballast.now) is set to `at`. */
async function clockAt(at: string): Promise<pg.PoolClient> {
  const c = await pool.connect();
  await c.query(`select set_config('ballast.now', $1, false)`, [at]);
  return c;
}

async function fire(at: string) {
  const c = await clockAt(at);
  try {
    return (await c.query('select schedule_name, fired, skipped, next_slot, error from ballast.fire_schedules()')).rows;
  } finally {
    await c.query(`reset ballast.now`);
    c.release();
  }
}

const jobsOf = async (name: string) =>
  (await pool.query(`select j.id, j.idempotency_key, j.input from ballast.jobs j
                      where j.idempotency_key like 'schedule:' || (select id from ballast.schedules where name = $1) || ':%' order by j.id`, [name])).rows;

t.test('cron_next: hand-checked cases (fields, names, steps, macros, day-of-month OR day-of-week, time zones)', async (t) => {
  const cases: [string, string, string, string | null][] = [
    ['*/15 9-17 * * mon-fri', 'Europe/Paris', '2026-12-05T12:00:00Z', '2026-12-07T08:00:00Z'], // Saturday -> Monday 09:00 CET
    ['0 0 29 2 *', 'UTC', '2026-12-05T12:00:00Z', '2028-02-29T00:00:00Z'],
    ['0 0 30 2 *', 'UTC', '2026-12-05T12:00:00Z', null],
    ['0 12 1 * 1', 'UTC', '2026-12-05T12:00:00Z', '2026-12-07T12:00:00Z'], // the 1st or a Monday: Monday comes first
    ['5 4 * * 7', 'UTC', '2026-12-05T12:00:00Z', '2026-12-06T04:05:00Z'], // 7 is Sunday
    ['@daily', 'UTC', '2026-12-05T12:00:00Z', '2026-12-06T00:00:00Z'],
    ['@hourly', 'Asia/Kolkata', '2026-12-05T12:10:00Z', '2026-12-05T12:30:00Z'], // +05:30: local hours start at :30 UTC
    ['0 9 * jan,jul *', 'UTC', '2026-12-05T12:00:00Z', '2027-01-01T09:00:00Z'],
    ['7/20 * * * *', 'UTC', '2026-12-05T12:28:00Z', '2026-12-05T12:47:00Z'],
    ['* * * * *', 'UTC', '2026-12-05T12:00:30Z', '2026-12-05T12:01:00Z'],
    // Clocks go forward in New York on 2026-03-08 at 02:00: the missing 02:30 fires at 03:30 EDT.
    ['30 2 * * *', 'America/New_York', '2026-03-08T05:00:00Z', '2026-03-08T07:30:00Z'],
    // Clocks go back on 2026-11-01: 01:30 exists twice and fires once.
    ['30 1 * * *', 'America/New_York', '2026-11-01T04:00:00Z', '2026-11-01T06:30:00Z'],
  ];
  for (const [cron, tz, after, want] of cases) {
    t.same((await next(cron, tz, after))?.toISOString() ?? null, want && new Date(want).toISOString(), `${cron} in ${tz} after ${after}`);
  }
  t.equal((await next('30 1 * * *', 'America/New_York', '2026-11-01T06:30:00Z'))?.toISOString(), '2026-11-02T06:30:00.000Z', 'the repeated hour fires once');
});

t.test('cron_next agrees with croner on 400 random expressions (time zones without clock changes)', async (t) => {
  let seed = 42;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  const field = (lo: number, hi: number) => {
    switch (rnd(5)) {
      case 0: return '*';
      case 1: return String(lo + rnd(hi - lo + 1));
      case 2: { const a = lo + rnd(hi - lo + 1); return `${a}-${a + rnd(hi - a + 1)}`; }
      case 3: return `*/${1 + rnd(Math.min(12, hi))}`;
      default: return [lo + rnd(hi - lo + 1), lo + rnd(hi - lo + 1)].join(',');
    }
  };
  const zones = ['UTC', 'Asia/Tokyo', 'Asia/Kolkata', 'America/Bogota'];
  let compared = 0;
  for (let i = 0; i < 400; i++) {
    const cron = [field(0, 59), field(0, 23), field(1, 28), field(1, 12), field(0, 6)].join(' ');
    const tz = zones[rnd(zones.length)]!;
    const after = new Date(Date.UTC(2026, rnd(12), 1 + rnd(28), rnd(24), rnd(60)));
    const ours = await next(cron, tz, after);
    const theirs = new Cron(cron, { timezone: tz, paused: true, legacyMode: true }).nextRun(after);
    if (ours?.getTime() !== theirs?.getTime()) t.fail(`${cron} in ${tz} after ${after.toISOString()}: ${ours?.toISOString()} vs croner ${theirs?.toISOString()}`);
    else compared++;
  }
  t.equal(compared, 400, 'every expression gave the same next slot');
});

t.test('bad expressions, zones and pipelines are refused with the field and what to do', async (t) => {
  const set = (cron: string, tz = 'UTC', pipelineName = 'sched.tick') =>
    pgError(() => pool.query(`select * from ballast.set_schedule('bad', $1, $2, '{"n": 1}', $3)`, [pipelineName, cron, tz]));
  t.match(await set('* * * *'), { code: 'BA002', message: /cron: '\* \* \* \*' has 4 fields, not 5/, hint: /minute hour day-of-month month day-of-week/ });
  t.match(await set('61 * * * *'), { code: 'BA002', message: /the minute field '61' is out of range/ });
  t.match(await set('* * * foo *'), { code: 'BA002', message: /the month field 'foo'.*jan feb/ });
  t.match(await set('0 0 30 2 *'), { code: 'BA002', message: /cron: '0 0 30 2 \*' never fires/ });
  t.match(await set('@daily', 'Mars/Olympus'), { code: 'BA002', message: /time_zone: 'Mars\/Olympus' is not a time zone/ });
  t.match(await set('@daily', 'UTC', 'no.such'), { code: 'BA004', message: /pipeline no\.such is not registered/ });
  t.equal((await pool.query(`select count(*)::int as n from ballast.schedules`)).rows[0].n, 0, 'nothing was written');
});

t.test('a slot fires once, however many schedulers fire it at once; the next slot follows', async (t) => {
  await clearSchedules();
  const c = await clockAt('2026-12-07T10:00:30Z');
  await c.query(`select * from ballast.set_schedule('every-5', 'sched.tick', '*/5 * * * *', '{"n": 5}')`);
  await c.query('reset ballast.now');
  c.release();
  const [s] = (await pool.query(`select next_fire_at from ballast.schedules where name = 'every-5'`)).rows;
  t.equal(s.next_fire_at.toISOString(), '2026-12-07T10:05:00.000Z', 'the first slot comes after the creation');
  t.same(await fire('2026-12-07T10:04:59Z'), [], 'nothing is due before the slot');

  // Five schedulers at the same moment: one fires, the others skip the locked row or find nothing due.
  const results = await Promise.all(Array.from({ length: 5 }, () => fire('2026-12-07T10:05:01Z')));
  t.equal(results.flat().reduce((n, r) => n + r.fired, 0), 1, 'the slot was fired once');
  const jobs = await jobsOf('every-5');
  t.equal(jobs.length, 1);
  t.match(jobs[0], { input: { n: 5 } });
  t.equal(jobs[0].idempotency_key, `schedule:${(await pool.query(`select id from ballast.schedules where name = 'every-5'`)).rows[0].id}:${Date.parse('2026-12-07T10:05:00Z') / 1000}`);
  const [after] = (await pool.query(`select next_fire_at, last_slot, fired_count from ballast.schedules where name = 'every-5'`)).rows;
  t.same([after.next_fire_at.toISOString(), after.last_slot.toISOString(), after.fired_count], ['2026-12-07T10:10:00.000Z', '2026-12-07T10:05:00.000Z', '1']);

  // A scheduler that fired and died before it could commit leaves nothing; one that fires the same slot again (the
  // schedule row put back by hand, as after a restore) finds the job submitted before.
  await pool.query(`update ballast_private.schedules set next_fire_at = '2026-12-07T10:05:00Z' where name = 'every-5'`);
  t.match(await fire('2026-12-07T10:05:02Z'), [{ fired: 1 }]);
  t.equal((await jobsOf('every-5')).length, 1, 'the same slot submitted twice is one job');
});

t.test('missed slots: skip fires only a slot at most a minute late; catch_up fires each, at most maxCatchUp', async (t) => {
  await clearSchedules();
  const create = async (name: string, onMissed: string, max = 10) => {
    const c = await clockAt('2026-12-07T11:00:30Z');
    await c.query(`select * from ballast.set_schedule($1, 'sched.tick', '* * * * *', '{"n": 1}', p_on_missed => $2, p_max_catch_up => $3)`, [name, onMissed, max]);
    await c.query('reset ballast.now');
    c.release();
  };
  await create('skipper', 'skip');
  await create('catcher', 'catch_up', 3);
  // Down from 11:01 to 11:10:30: slots 11:01 .. 11:10 (10 of them) passed.
  const rows = await fire('2026-12-07T11:10:30Z');
  const by = Object.fromEntries(rows.map((r) => [r.schedule_name, r]));
  t.match(by.skipper, { fired: 1, skipped: 9 }, 'skip: only 11:10, 30 s late, is fired');
  t.match(by.catcher, { fired: 3, skipped: 7 }, 'catch_up: the 3 most recent');
  const slots = (await jobsOf('catcher')).map((j) => Number(j.idempotency_key.split(':')[2]));
  t.same(slots, ['11:08', '11:09', '11:10'].map((m) => Date.parse(`2026-12-07T${m}:00Z`) / 1000), 'oldest first');
  t.equal(by.skipper.next_slot.toISOString(), '2026-12-07T11:11:00.000Z');
  const late = await fire('2026-12-07T11:13:00Z'); // 11:11 and 11:12 missed, 11:13 on time
  t.match(late.find((r) => r.schedule_name === 'skipper'), { fired: 1, skipped: 2 });
});

t.test('pause, resume, replace and delete; a failing submission is recorded on the schedule', async (t) => {
  await clearSchedules();
  const c = await clockAt('2026-12-07T12:00:30Z');
  await c.query(`select * from ballast.set_schedule('p', 'sched.tick', '*/10 * * * *', '{"n": 2}')`);
  const paused = (await c.query(`select * from ballast.pause_schedule('p', true, 'maintenance')`)).rows[0];
  t.match(paused, { paused: true, paused_reason: 'maintenance', next_fire_at: null });
  await c.query('reset ballast.now');
  c.release();
  t.same(await fire('2026-12-07T12:30:00Z'), [], 'a paused schedule fires nothing');
  const c2 = await clockAt('2026-12-07T12:31:00Z');
  const resumed = (await c2.query(`select * from ballast.pause_schedule('p', false)`)).rows[0];
  t.equal(resumed.next_fire_at.toISOString(), '2026-12-07T12:40:00.000Z', 'resumed: the next slot after now, nothing caught up');
  t.match(await pgError(() => c2.query(`select * from ballast.pause_schedule('nope')`)), { code: 'BA003', message: /has no schedule 'nope'/ });
  // Replaced with an input the pipeline refuses: the fire records why, and the next slot follows.
  await c2.query(`select * from ballast.set_schedule('p', 'sched.tick', '*/10 * * * *', '{"n": "two"}')`);
  await c2.query('reset ballast.now');
  c2.release();
  const [r] = await fire('2026-12-07T12:40:05Z');
  t.match(r, { fired: 0, error: /slot 2026-12-07 12:40:00\+00: input does not match/ });
  t.match((await pool.query(`select last_error, next_fire_at from ballast.schedules where name = 'p'`)).rows[0], { last_error: /input does not match/ });
  t.equal((await pool.query(`select ballast.delete_schedule('p') as d`)).rows[0].d, true);
  t.equal((await pool.query(`select ballast.delete_schedule('p') as d`)).rows[0].d, false, 'a second delete finds nothing');
});

t.test('clients manage their own tenant\'s schedules only', async (t) => {
  await clearSchedules();
  const { c } = await clientLogin(t, pool, name, 'sched', 'acme');
  const own = (await c.query(`select * from ballast.set_schedule('mine', 'sched.tick', '@daily', '{"n": 3}')`)).rows[0];
  t.equal(own.tenant_id, 'acme', 'a client\'s schedule is its tenant\'s');
  t.match(await pgError(() => c.query(`select * from ballast.set_schedule('theirs', 'sched.tick', '@daily', '{"n": 3}', p_tenant_id => 'other')`)),
    { code: 'BA014', message: /tenant acme cannot manage the schedules of tenant other/ });
  t.match(await pgError(() => c.query(`select * from ballast.fire_schedules()`)), { code: '42501' }, 'firing is for workers and operators');
  await pool.query(`select * from ballast.set_schedule('theirs', 'sched.tick', '@daily', '{"n": 3}', p_tenant_id => 'other')`);
  t.same((await c.query(`select tenant_id, name from ballast.schedules`)).rows, [{ tenant_id: 'acme', name: 'mine' }], 'it sees its own schedules only');
  t.equal((await c.query(`select ballast.delete_schedule('theirs') as d`)).rows[0].d, false, 'and cannot delete another tenant\'s');
});

t.test('running workers fire a due schedule once between them', async (t) => {
  await clearSchedules();
  await pool.query(`select * from ballast.set_schedule('live', 'sched.tick', '@yearly', '{"n": 7}')`);
  const workers = [await testWorker(t, url, { pipelines: [tick] }), await testWorker(t, url, { pipelines: [tick] })];
  t.equal(workers.length, 2);
  // Make it due now (its real first slot is next new year).
  await pool.query(`update ballast_private.schedules set next_fire_at = ballast.now() where name = 'live'`);
  t.ok(await eventually(async () => (await jobsOf('live')).length === 1, 10_000), 'a worker fired the schedule');
  const [job] = await jobsOf('live');
  t.ok(await eventually(async () => (await db.getJob(String(job.id)))?.status === 'completed', 10_000), 'its job ran');
  await new Promise((r) => setTimeout(r, 1500)); // both schedulers ran again meanwhile
  t.equal((await jobsOf('live')).length, 1, 'fired once');
  const [s] = (await pool.query(`select fired_count, next_fire_at from ballast.schedules where name = 'live'`)).rows;
  t.equal(s.fired_count, '1');
  t.equal(new Date(s.next_fire_at).getUTCMonth(), 0, 'then the next new year');
  const [event] = (await pool.query(`select actor from ballast.events where job_id = $1 and type = 'job_submitted'`, [job.id])).rows;
  t.equal(event.actor, 'schedule:live', 'the job\'s submission names the schedule');
  const fired = (await ballastMetrics.scheduleSlots.get()).values.find((v) => v.labels.schedule === 'live' && v.labels.outcome === 'fired');
  t.equal(fired?.value, 1, 'ballast_schedule_slots_total counts the fired slot once (both workers share this process)');
});

t.test('GraphQL: set, read, pause, resume and delete a schedule; errors name the field', async (t) => {
  await clearSchedules();
  const server = await testServer(t, url);
  const acme = await token('client', 'acme', { subject: 'ann' });
  const SET = `mutation ($input: SetScheduleInput!) { setSchedule(input: $input) {
    scheduleId nextFireAt schedule { id tenantId name pipeline cron timeZone onMissed paused input } } }`;
  const set = (await data(server, SET, { input: { name: 'nightly', pipeline: 'sched.tick', cron: '0 3 * * *', timeZone: 'Europe/Paris', input: { n: 9 }, onMissed: 'CATCH_UP' } }, acme)).setSchedule;
  t.match(set.schedule, { tenantId: 'acme', name: 'nightly', cron: '0 3 * * *', timeZone: 'Europe/Paris', onMissed: 'catch_up', paused: false, input: { n: 9 } });
  t.match(new Date(set.nextFireAt).toLocaleString('en-GB', { timeZone: 'Europe/Paris' }), /03:00:00$/, 'the next slot is 03:00 in Paris');

  const listed = (await data(server, `{ schedules(condition: { name: "nightly" }) { nodes { id name nextFireAt firedCount } } }`, {}, acme)).schedules.nodes;
  t.equal(listed.length, 1);
  t.equal(listed[0].id, set.scheduleId);

  const paused = (await data(server, `mutation { pauseSchedule(input: { name: "nightly", reason: "holidays" }) { nextFireAt schedule { paused pausedReason } } }`, {}, acme)).pauseSchedule;
  t.same(paused, { nextFireAt: null, schedule: { paused: true, pausedReason: 'holidays' } });
  const resumed = (await data(server, `mutation { resumeSchedule(input: { name: "nightly" }) { nextFireAt schedule { paused } } }`, {}, acme)).resumeSchedule;
  t.equal(resumed.schedule.paused, false);
  t.ok(resumed.nextFireAt, 'resumed with a next slot');

  const bad = errorOf(await gql(server, SET, { input: { name: 'bad', pipeline: 'sched.tick', cron: '0 25 * * *' } }, acme));
  t.equal(bad.code, 'INVALID_INPUT');
  t.match(bad.message, /the hour field '25' is out of range/);
  t.same(bad.extensions.issues.map((i: any) => i.path), ['cron']);
  const tz = errorOf(await gql(server, SET, { input: { name: 'bad', pipeline: 'sched.tick', cron: '@daily', timeZone: 'Nowhere' } }, acme));
  t.match(tz.message, /^timeZone: 'Nowhere' is not a time zone/, 'the argument is named as the input field');
  const reporter = await token('reporter');
  const refused = errorOf(await gql(server, `mutation { deleteSchedule(input: { name: "nightly" }) { deleted } }`, {}, reporter));
  t.equal(refused.code, 'FORBIDDEN');
  t.match(refused.message, /deleteSchedule needs a client token of the schedule's tenant, or an operator token/);

  const deleted = (await data(server, `mutation { deleteSchedule(input: { name: "nightly" }) { deleted } }`, {}, acme)).deleteSchedule;
  t.same(deleted, { deleted: true });
  t.equal((await pool.query(`select count(*)::int as n from ballast.schedules`)).rows[0].n, 0);
});

t.test('the CLI: schedule set, list, pause, resume, delete; a bad flag value is one line naming the flag', async (t) => {
  await clearSchedules();
  const env = { ...process.env, DATABASE_URL: url, LOG_FORMAT: 'json', BALLAST_ACTOR: 'cli:tester' };
  const cli = async (...args: string[]) => {
    const proc = spawnNode(t, ['src/cli.ts', 'schedule', ...args], { env });
    const { code } = await proc.wait(60_000);
    return { code, stdout: proc.lines.join('\n').trim(), stderr: proc.stderr().trim() };
  };
  const set = await cli('set', 'hourly', '--pipeline', 'sched.tick', '--cron', '@hourly', '--input', '{"n": 4}', '--tz', 'Asia/Kolkata', '--json');
  t.equal(set.code, 0, set.stderr);
  const made = JSON.parse(set.stdout);
  t.equal(typeof made.scheduleId, 'number', '--json prints the id as a number');
  t.equal(new Date(made.nextFireAt).getUTCMinutes(), 30, 'Kolkata hours start at :30 UTC');
  const listed = JSON.parse((await cli('list', '--json')).stdout);
  t.match(listed, [{ name: 'hourly', pipeline: 'sched.tick', cron: '@hourly', time_zone: 'Asia/Kolkata', paused: false, fired_count: 0 }]);
  t.match((await cli('pause', 'hourly', '--reason', 'deploy')).stdout, /schedule hourly paused/);
  t.match((await pool.query(`select paused_reason, updated_by from ballast.schedules where name = 'hourly'`)).rows[0], { paused_reason: 'deploy', updated_by: 'cli:tester' });
  t.match((await cli('resume', 'hourly')).stdout, /schedule hourly resumed; next slot 20\d\d-/);
  const bad = await cli('set', 'x', '--pipeline', 'sched.tick', '--cron', '0 9 * * funday');
  t.equal(bad.code, 4);
  t.equal(bad.stderr.split('\n')[0], "ballast: invalid_input: --cron: the day-of-week field 'funday' is out of range or unknown (allowed: 0 to 7, or sun mon tue wed thu fri sat) (Fix that field of the expression: minute hour day-of-month month day-of-week.)");
  const missing = await cli('set', 'x', '--pipeline', 'sched.tick');
  t.equal(missing.code, 2);
  t.match(missing.stderr, /schedule set needs --cron/);
  t.equal((await cli('delete', 'hourly')).code, 0);
  t.equal((await cli('delete', 'hourly')).code, 3, 'deleting what is not there exits 3');
});
