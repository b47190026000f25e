// Drift and budget alerts end to end (migration 0045, docs/quality-alerts.md): a worker runs a model step against the
// scripted fake LLM; a baseline of valid answers, then schema-violating ones, and ballast.check_alerts is called
// after each batch: the drift alert fires only once the first-pass rate crossed the threshold with enough samples,
// never twice, and resolves when the rate is back. Budget thresholds 50/80/100 % fire exactly once each per period as
// real, priced calls add up, and again once in the next period (the SQL clock moved). NOTIFY ballast_alerts carries
// the ids; /metrics shows the gauges. The worker's own alert checks are off (alertIntervalMs 0): the test drives them.
import t from 'tap';
import pg from 'pg';
import { z } from 'zod';
import { pipeline } from '../src/pipeline/pipeline.ts';
import { prompt } from '../src/model/prompt.ts';
import { AlertChecker } from '../src/worker/alerts.ts';
import { checkAlerts, listAlerts } from '../src/db/alerts.ts';
import { startMetricsServer } from '../src/metrics.ts';
import { FakeLLM, type Reply } from './support/fake-llm.ts';
import { eventually, freshDatabase, pgError, quietLog, testWorker, waitForJob } from './helpers.ts';

const fake = await new FakeLLM().start();
t.teardown(() => fake.close());
Object.assign(process.env, { OPENAI_API_KEY: 'sk-test', OPENAI_BASE_URL: fake.baseURL });

const { url, db, pool } = await freshDatabase(t);

const Review = z.object({ sentiment: z.enum(['positive', 'negative', 'neutral']), score: z.number().min(-1).max(1) });
const rate = prompt({ name: 'alerts.rate', version: 1, system: 'You rate reviews.', user: 'Rate: {{input.text}}' });
const input = z.object({ text: z.string(), user: z.string().optional() });
const step = { prompt: rate, model: 'openai:gpt-4o-mini', output: Review, reasks: 0, default: { sentiment: 'neutral' as const, score: 0 },
  retry: { maxAttempts: 1, baseDelayMs: 0 }, callTimeoutMs: 5000 };
const drift = pipeline({ name: 'alerts.drift', version: 1, input }).modelStep('rate', step);
const spend = pipeline({ name: 'alerts.spend', version: 1, input }).modelStep('rate', step);
await testWorker(t, url, { pipelines: [drift, spend], concurrency: 4, alertIntervalMs: 0 });

const GOOD: Reply = { text: '{"sentiment":"positive","score":0.8}', usage: { input: 100, output: 10 } };
const BAD: Reply = { text: '{"sentiment":"ecstatic","score":3}', usage: { input: 100, output: 10 } };
// 1,000,000 input tokens of gpt-4o-mini at 0.15 USD per million: 0.15 USD a call.
const PRICED: Reply = { text: '{"sentiment":"positive","score":0.8}', usage: { input: 1_000_000, output: 0 } };

/** Runs `n` jobs of `p` whose single calls get `reply`; waits until all are final. */
async function batch(p: typeof drift, n: number, reply: Reply, o: { tenantId?: string; user?: string } = {}) {
  fake.script('openai', ...Array.from({ length: n }, () => reply));
  const jobs = await Promise.all(Array.from({ length: n }, (_, i) =>
    db.submitJob({ pipeline: p.name, input: { text: `review ${i}`, ...(o.user ? { user: o.user } : {}) }, tenantId: o.tenantId ?? 'default' })));
  for (const j of jobs) await waitForJob(db, j.jobId);
}

const notices: { raised: number[]; resolved: number[] }[] = [];
const listener = new pg.Client({ connectionString: url });
await listener.connect();
t.teardown(() => listener.end());
listener.on('notification', (n) => notices.push(JSON.parse(n.payload!)));
await listener.query('listen ballast_alerts');
const waitNotices = async (count: number) => {
  for (let i = 0; i < 100 && notices.length < count; i++) await new Promise((r) => setTimeout(r, 50));
  return notices.length;
};

const metrics = await startMetricsServer({ port: 0, db });
t.teardown(() => metrics.close());
const scrape = async () => (await fetch(metrics.url)).text();

t.test('a drift alert fires when first-pass validity drops past the threshold with enough samples, once, and resolves', async (t) => {
  const checker = new AlertChecker({ db, log: quietLog, intervalMs: 0 });
  // The baseline: 10 valid answers, then aged two hours (before the 1-hour window, inside the day before it).
  await batch(drift, 10, GOOD);
  await pool.query(`update ballast_private.model_calls set started_at = started_at - interval '2 hours', ended_at = ended_at - interval '2 hours'`);
  await pool.query(`select ballast.set_drift_rule('drift-first-pass', 'alerts.drift', 'first_pass_rate', 0.25,
                      p_window => '1 hour', p_baseline => '1 day', p_min_samples => 10)`);
  t.same(await checker.runOnce(), [], 'an empty window raises nothing');

  await batch(drift, 2, BAD);
  const { rows: [few] } = await pool.query(`select attempts::int, first_pass_rate::float8 from ballast.quality_stats(ballast.now() - interval '1 hour') where pipeline = 'alerts.drift'`);
  t.same(few, { attempts: 2, first_pass_rate: 0 }, 'the window holds 2 attempts, none valid on the first try');
  t.same(await checker.runOnce(), [], '2 samples are fewer than min_samples: no alert');

  await batch(drift, 10, GOOD);
  t.same(await checker.runOnce(), [], '10/12 = 0.83 against 1.0: a drop of 0.17, within 0.25');

  await batch(drift, 4, BAD);
  const raised = await checker.runOnce();
  t.equal(raised.length, 1, '10/16 = 0.625: a drop of 0.375, one alert');
  t.match(raised[0], { kind: 'drift', change: 'raised' });
  const [alert] = await listAlerts(pool, { open: true });
  t.match(alert, { id: raised[0]!.alertId, kind: 'drift', rule: 'drift-first-pass', metric: 'first_pass_rate', value: '0.6250',
    baseline: '1.0000', threshold: '0.25', samples: '16', open: true,
    groupKey: 'alerts.drift/rate/alerts.rate@1/openai:gpt-4o-mini',
    group: { pipeline: 'alerts.drift', step: 'rate', prompt_name: 'alerts.rate', prompt_version: 1, model: 'openai:gpt-4o-mini' } });
  t.equal(await waitNotices(1), 1);
  t.same(notices[0], { raised: [Number(alert!.id)], resolved: [] }, 'NOTIFY ballast_alerts with the id only');

  // Again, and two at once: still one alert (one open alert per rule and group).
  const again = await Promise.all([checkAlerts(pool), checkAlerts(pool), checker.runOnce()]);
  t.same(again.flat(), [], 'not raised twice');
  const { rows: [{ n }] } = await pool.query(`select count(*)::int as n from ballast.alerts where kind = 'drift'`);
  t.equal(n, 1);
  t.match(await scrape(), /ballast_alerts_open\{kind="drift",rule="drift-first-pass"\} 1/);
  t.match(await scrape(), /ballast_alerts_raised\{kind="drift"\} 1/);

  const acked = await pool.query(`select * from ballast.ack_alert($1, 'ana', 'looking at the prompt')`, [alert!.id]);
  t.match(acked.rows[0], { alert_id: alert!.id, acked_by: 'ana' });
  t.equal((await listAlerts(pool, { open: true }))[0]!.ackNote, 'looking at the prompt', 'acknowledged, still open');
  t.equal((await pgError(() => pool.query(`select * from ballast.ack_alert(999999, 'ana')`))).code, 'BA007');

  await batch(drift, 14, GOOD);
  const resolved = await checker.runOnce();
  t.same(resolved, [{ alertId: alert!.id, kind: 'drift', change: 'resolved' }], '24/30 = 0.8: back within the threshold');
  t.equal(await waitNotices(2), 2);
  t.same(notices[1], { raised: [], resolved: [Number(alert!.id)] });
  t.same(await listAlerts(pool, { open: true }), []);
  t.notMatch(await scrape(), /ballast_alerts_open\{kind="drift"/, 'no open drift alert left');
  t.equal(await pool.query(`select ballast.delete_drift_rule('drift-first-pass') as d`).then((r) => r.rows[0].d), true);
});

t.test('budget thresholds fire exactly once per period as spend grows, and again in the next period', async (t) => {
  notices.length = 0;
  // The checks run at the time of the last call (so that a run near midnight UTC stays in one day), then a day later.
  const clock = new pg.Client({ connectionString: url });
  await clock.connect();
  t.teardown(() => clock.end());
  const check = async (shift = '0', minIntervalMs: number | null = null) => {
    await clock.query(`select set_config('ballast.now', ((select max(started_at) from ballast_private.model_calls where tenant_id = 'acme')
                                                        + interval '1 second' + $1::interval)::text, false)`, [`${shift} days`]);
    return (await checkAlerts(clock, minIntervalMs)).map((c) => `${c.kind} ${c.change}`);
  };
  const budgetAlerts = async () => (await listAlerts(pool, { kind: 'budget', limit: 1000 }))
    .map((a) => `${a.rule} ${a.groupKey} ${a.percent}${a.open ? '' : ' resolved'}`).sort();

  await pool.query(`select ballast.set_budget_alert('acme-daily', 'tenant', 'acme', 1.00, 'day')`);
  await pool.query(`select ballast.set_budget_alert('per-user', 'end_user', null, 0.50, 'day', '{100}')`);
  await pool.query(`select ballast.set_end_user_path('alerts.spend', 'user')`);
  await pool.query(`select ballast.set_budget_alert('spend-pipeline', 'pipeline', 'alerts.spend', 10, 'month', '{90}')`);

  await batch(spend, 3, PRICED, { tenantId: 'acme', user: 'u1' });
  t.same(await check(), [], '0.45 USD: under 50 %');
  await batch(spend, 1, PRICED, { tenantId: 'acme', user: 'u1' });
  t.same(await check(), ['budget raised', 'budget raised'], '0.60 USD: 50 % of the tenant, 100 % of the user');
  t.same(await check(), [], 'not again');
  await batch(spend, 2, PRICED, { tenantId: 'acme', user: 'u1' });
  t.same(await check('0', 3_600_000), [], 'a worker\'s check within its minimum interval of the last one does nothing');
  t.same(await check(), ['budget raised'], '0.90 USD: 80 %');
  await batch(spend, 2, PRICED, { tenantId: 'acme', user: 'u1' });
  t.same(await check(), ['budget raised'], '1.20 USD: 100 %');
  t.same(await check(), [], 'nothing more this period');
  t.same(await budgetAlerts(), ['acme-daily acme 100', 'acme-daily acme 50', 'acme-daily acme 80', 'per-user acme/u1 100']);
  const [hundred] = await listAlerts(pool, { kind: 'budget' });
  t.match(hundred, { rule: 'acme-daily', tenantId: 'acme', metric: 'spend_usd', value: '1.20000000', threshold: '1.00000000', percent: 100 });

  const body = await scrape();
  t.match(body, /ballast_alerts_open\{kind="budget",rule="acme-daily"\} 3/);
  t.match(body, /ballast_budget_spend_ratio\{rule="acme-daily",scope="tenant",scope_value="acme"\} 1\.2/);
  t.match(body, /ballast_budget_spend_ratio\{rule="per-user",scope="end_user",scope_value="acme\/u1"\} 2\.4/);

  // The next day: the spend of the new period (the calls moved into it) reaches every threshold again, once.
  await pool.query(`update ballast_private.model_calls set started_at = started_at + interval '1 day' where tenant_id = 'acme'`);
  const next = await check('0');
  t.equal(next.filter((c) => c === 'budget raised').length, 4, 'each threshold once in the new period');
  t.equal(next.filter((c) => c === 'budget resolved').length, 4, 'the alerts of the day before are resolved (their period ended)');
  t.same(await check('0'), [], 'not twice');
  // A tenant rule without a limit uses the tenant's budget: 1.20 USD is 50 % of 2.40.
  await pool.query(`select ballast.set_budget('acme', 2.40, 'day', 'fail')`);
  await pool.query(`select ballast.set_budget_alert('acme-budget', 'tenant', 'acme', p_percents => '{50,100}')`);
  t.same(await check('0'), ['budget raised'], 'the tenant\'s budget gives the limit and the period');
  t.match((await listAlerts(pool, { kind: 'budget' }))[0], { rule: 'acme-budget', percent: 50, threshold: '1.20000000', group: { period: 'day', limit_usd: 2.4 } });
  const all = await listAlerts(pool, { kind: 'budget', limit: 1000 });
  t.equal(new Set(all.map((a) => a.periodStart!.toISOString())).size, 2, 'two periods');
  await pool.query(`select ballast.set_budget('acme', null)`);
  t.equal(all.filter((a) => a.rule === 'spend-pipeline').length, 0, '1.20 USD is not 90 % of 10 USD a month');
  t.ok(notices.length >= 4, 'each check that changed something notified');
});

t.test('a worker checks on its own every alertIntervalMs', async (t) => {
  // The drift jobs' calls cost a little each (110 tokens): 50 % of 0.0001 USD a day is long reached.
  await pool.query(`select ballast.set_budget_alert('auto', 'pipeline', 'alerts.drift', 0.0001, 'day', '{50}')`);
  const worker = await testWorker(t, url, { pipelines: [], alertIntervalMs: 200, reaper: false, schedules: false, watchdog: false });
  t.ok(worker.id);
  const found = await eventually(async () => (await listAlerts(pool, { kind: 'budget' })).some((a) => a.rule === 'auto'), 15_000);
  t.ok(found, 'the worker\'s alert checker raised it');
});

t.test('bad rules are refused naming the argument', async (t) => {
  const e1 = await pgError(() => pool.query(`select ballast.set_drift_rule('r', 'p', 'accuracy', 0.1)`));
  t.match(e1, { code: 'BA002', message: /^metric: 'accuracy' is not a metric/ });
  const e2 = await pgError(() => pool.query(`select ballast.set_budget_alert('b', 'pipeline', 'p')`));
  t.match(e2, { code: 'BA002', message: /^limit_usd: is missing/ });
  const e3 = await pgError(() => pool.query(`select ballast.set_budget_alert('b', 'tenant', 'acme', 5, 'day', '{0,50}')`));
  t.match(e3, { code: 'BA002', message: /^percents: / });
  const e4 = await pgError(() => pool.query(`select ballast.set_drift_rule('r', 'p', 'first_pass_rate', 0.1, p_baseline_from => now())`));
  t.match(e4, { code: 'BA002', message: /^baseline_until: / });
});
