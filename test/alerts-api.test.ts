// The operator surfaces of drift and budget alerts (migration 0045): the GraphQL mutations setDriftRule,
// setBudgetAlert and ackAlert (operators; any other token FORBIDDEN), their input errors naming the input field, the
// alerts query under each token (a client sees its tenant's budget alerts only); and the CLI verbs alerts [--open],
// alerts ack and alerts check, run in this process. The alerts here are rows written as the owner: what raises them
// is test/alerts.test.ts.
import t from 'tap';
import { runInProcess } from './support/cli-inproc.ts';
import { alertsCommand } from '../src/cli/alerts.ts';
import { freshDatabase, pgError } from './helpers.ts';
import { data, errorOf, gql, testServer, token } from './support/graphql.ts';

const { url, pool, db } = await freshDatabase(t);
const server = await testServer(t, url);
const operator = await token('operator', undefined, { subject: 'ann' });

const { rows: inserted } = await pool.query(`
  insert into ballast_private.alerts (kind, rule_id, rule_name, group_key, group_value, tenant_id, metric, value, baseline, threshold, period_start, percent)
  values ('drift', 1, 'first-pass', 'p/s/pr@1/openai:m', '{}', null, 'first_pass_rate', 0.5, 0.9, 0.2, null, null),
         ('budget', 1, 'daily', 'acme', '{"period": "day"}', 'acme', 'spend_usd', 5, null, 4, date_trunc('day', now()), 80),
         ('budget', 1, 'daily', 'zeta', '{"period": "day"}', 'zeta', 'spend_usd', 9, null, 8, date_trunc('day', now()), 80)
  returning id::text`);
const [driftId, acmeId] = inserted.map((r) => r.id as string);

t.test('GraphQL: an operator sets a drift rule and a budget alert; bad input names the field', async (t) => {
  const drift = (await data(server, `mutation { setDriftRule(input: { name: "first-pass", pipeline: "demo.triage", metric: "first_pass_rate",
      threshold: 0.2, change: ABSOLUTE, window: "30 minutes", baseline: "1 day", minSamples: 20 }) { ruleId name } }`, {}, operator)).setDriftRule;
  t.match(drift, { name: 'first-pass' });
  const { rows: [rule] } = await pool.query(`select pipeline, metric, direction, threshold::float8, window_size::text, baseline_size::text, min_samples, set_by from ballast.drift_rules where id = $1`, [drift.ruleId]);
  t.same(rule, { pipeline: 'demo.triage', metric: 'first_pass_rate', direction: 'drop', threshold: 0.2, window_size: '00:30:00', baseline_size: '1 day', min_samples: 20, set_by: 'jwt:ann' });

  const budget = (await data(server, `mutation { setBudgetAlert(input: { name: "acme-monthly", scope: "tenant", scopeValue: "acme", limitUsd: 100,
      period: "month", percents: [80, 50, 100] }) { ruleId name } }`, {}, operator)).setBudgetAlert;
  const { rows: [b] } = await pool.query(`select scope, scope_value, limit_usd::float8, period, percents from ballast.budget_alert_rules where id = $1`, [budget.ruleId]);
  t.same(b, { scope: 'tenant', scope_value: 'acme', limit_usd: 100, period: 'month', percents: [50, 80, 100] });

  const bad = errorOf(await gql(server, `mutation { setDriftRule(input: { name: "x", pipeline: "p", metric: "first_pass_rate", threshold: 0.1, minSamples: 0 }) { ruleId } }`, {}, operator));
  t.match(bad, { code: 'INVALID_INPUT', message: /^minSamples: 0 is not at least 1/ });
  const noLimit = errorOf(await gql(server, `mutation { setBudgetAlert(input: { name: "x", scope: "model" }) { ruleId } }`, {}, operator));
  t.match(noLimit, { code: 'INVALID_INPUT', message: /^limitUsd: is missing/ });
});

t.test('GraphQL: alerts by token; a client sees its tenant\'s budget alerts; an operator acknowledges', async (t) => {
  const ids = async (bearer: string) => (await data(server, `{ alerts(orderBy: ID_ASC) { nodes { id kind rule tenantId open } } }`, {}, bearer)).alerts.nodes.map((a: any) => a.id);
  t.equal((await ids(await token('reporter'))).length, 3, 'a reporter sees every alert');
  t.same(await ids(await token('client', 'acme')), [acmeId], 'a client sees its tenant\'s budget alert only');
  t.same(await ids(await token('client', 'nobody')), []);

  const ack = (await data(server, `mutation ($id: BigInt!) { ackAlert(input: { id: $id, note: "on it" }) { alertId ackedBy ackedAt alert { ackedBy ackNote open } } }`,
    { id: driftId }, operator)).ackAlert;
  t.match(ack, { alertId: driftId, ackedBy: 'jwt:ann', alert: { ackedBy: 'jwt:ann', ackNote: 'on it', open: true } });
  t.ok(Date.parse(ack.ackedAt) > 0);
  const unknown = errorOf(await gql(server, `mutation { ackAlert(input: { id: "999999" }) { alertId } }`, {}, operator));
  t.equal(unknown.code, 'NOT_FOUND');
  for (const bearer of [await token('client', 'acme'), await token('reporter')]) {
    const refused = errorOf(await gql(server, `mutation ($id: BigInt!) { ackAlert(input: { id: $id }) { alertId } }`, { id: acmeId }, bearer));
    t.equal(refused.code, 'FORBIDDEN', 'only operators acknowledge');
    const set = errorOf(await gql(server, `mutation { setDriftRule(input: { name: "y", pipeline: "p", metric: "review_rate", threshold: 0.1 }) { ruleId } }`, {}, bearer));
    t.equal(set.code, 'FORBIDDEN', 'only operators set rules');
  }
});

t.test('SQL roles: reporters read rules and spend; a client reads its tenant\'s alerts and may not set rules', async (t) => {
  const as = async (role: string, sql: string, tenant?: string) => {
    const c = await pool.connect();
    try {
      await c.query('begin');
      if (tenant) await c.query(`select set_config('ballast.tenant_id', $1, true)`, [tenant]);
      await c.query(`set local role ${role}`);
      return (await c.query(sql)).rows;
    } finally {
      await c.query('rollback');
      c.release();
    }
  };
  t.ok(Array.isArray(await as('ballast_reporter', 'select * from ballast.budget_spend')), 'a reporter reads the spend');
  t.ok((await as('ballast_reporter', 'select * from ballast.drift_rules')).length >= 1, 'and the rules');
  t.same((await as('ballast_client', 'select id::text from ballast.alerts', 'acme')).map((r) => r.id), [acmeId], 'a client: its budget alert');
  t.equal((await pgError(() => as('ballast_client', `select ballast.set_drift_rule('c', 'p', 'review_rate', 0.1)`, 'acme'))).code, '42501');
  t.equal((await pgError(() => as('ballast_reporter', 'select * from ballast.check_alerts()'))).code, '42501', 'checks are for operators and workers');
});

t.test('one open drift alert per rule and group, one budget alert per rule, value, period and percentage: by constraint', async (t) => {
  const again = await pgError(() => pool.query(`insert into ballast_private.alerts (kind, rule_id, rule_name, group_key, group_value, metric)
                                                values ('drift', 1, 'first-pass', 'p/s/pr@1/openai:m', '{}', 'first_pass_rate')`));
  t.equal(again.code, '23505', 'a second open drift alert for the rule and group is refused');
  const twice = await pgError(() => pool.query(`insert into ballast_private.alerts (kind, rule_id, rule_name, group_key, group_value, tenant_id, metric, period_start, percent)
                                                values ('budget', 1, 'daily', 'acme', '{}', 'acme', 'spend_usd', date_trunc('day', now()), 80)`));
  t.equal(twice.code, '23505', 'a budget threshold fires once per period');
});

t.test('CLI: alerts, alerts --open, alerts ack, alerts check', async (t) => {
  const listed = await runInProcess(db, alertsCommand, '--json');
  t.equal(listed.code, 0);
  t.same(JSON.parse(listed.stdout).map((a: any) => a.id), inserted.map((r) => Number(r.id)).reverse(), 'newest first');
  await pool.query(`update ballast_private.alerts set resolved_at = now() where id = $1`, [acmeId]);
  const open = await runInProcess(db, alertsCommand, '--open');
  t.match(open.stdout, /first-pass/);
  t.match(open.stdout, /zeta/);
  t.notMatch(open.stdout, /\bacme\b/, 'the resolved alert is not listed with --open');
  const ack = await runInProcess(db, alertsCommand, 'ack', acmeId!, '--note', 'paid');
  t.match(ack, { code: 0, stdout: `alert ${acmeId} acknowledged by cli:${process.env.USER ?? 'unknown'}` });
  const check = await runInProcess(db, alertsCommand, 'check');
  t.match(check, { code: 0, stdout: /^checked: 0 alert\(s\) raised, 0 resolved$/ });
  t.match(await runInProcess(db, alertsCommand, 'ack', 'x'), { code: 2, stderr: /alerts ack needs one alert id/ });
  t.match(await runInProcess(db, alertsCommand, '--kind', 'quality'), { code: 2, stderr: /--kind quality is not drift or budget/ });
  t.match(await runInProcess(db, alertsCommand, 'ack', '424242'), { code: 4, stderr: /alert 424242 does not exist/ });
});
