// Drift and budget alerts (migration 0045_quality_alerts, docs/quality-alerts.md): the statements of the verbs
// (ballast.set_drift_rule, set_budget_alert, delete_*, check_alerts, ack_alert), of the alerts view and of the
// gauges read at scrape time, shared by the worker's alert service, the GraphQL mutations, the CLI and the metrics,
// one fixed statement each (like gates.ts). Ids and bigints leave as strings.
import type { Queryable } from './verbs.ts';

export type DriftMetric = 'first_pass_rate' | 'repair_rate' | 'fallback_rate' | 'degraded_rate' | 'review_rate' | 'rejection_rate'
  | 'score_mean' | 'score_p10' | 'score_p50' | 'cost_per_success' | 'latency_p50_ms' | 'latency_p95_ms';
export type BudgetScope = 'tenant' | 'pipeline' | 'model' | 'end_user';

export interface DriftRuleArgs {
  name: string;
  pipeline: string;
  metric: DriftMetric;
  /** How far the metric may move in the bad direction: in its unit (absolute) or as a fraction of the baseline (relative). */
  threshold: number;
  change?: 'absolute' | 'relative';
  /** Postgres intervals, e.g. '1 hour' and '7 days'. */
  window?: string;
  baseline?: string;
  minSamples?: number;
  stepName?: string | null;
  promptName?: string | null;
  promptVersion?: number | null;
  /** provider:model */
  model?: string | null;
  /** A fixed baseline period instead of `baseline` before the window. */
  baselineFrom?: Date | null;
  baselineUntil?: Date | null;
  actor?: string | null;
}

export interface BudgetAlertArgs {
  name: string;
  scope: BudgetScope;
  /** One tenant, pipeline, model or end user; null: each one separately. */
  scopeValue?: string | null;
  /** USD per period; null (scope tenant only, with no period): the tenant's budget. */
  limitUsd?: number | null;
  period?: 'day' | 'week' | 'month' | null;
  /** Default 50, 80, 100. */
  percents?: number[];
  actor?: string | null;
}

/** A row of ballast.alerts. */
export interface AlertRow {
  id: string;
  kind: 'drift' | 'budget';
  rule: string;
  groupKey: string;
  group: Record<string, unknown>;
  tenantId: string | null;
  metric: string;
  value: string | null;
  baseline: string | null;
  threshold: string | null;
  samples: string | null;
  periodStart: Date | null;
  percent: number | null;
  raisedAt: Date;
  resolvedAt: Date | null;
  open: boolean;
  ackedBy: string | null;
  ackedAt: Date | null;
  ackNote: string | null;
}

/** What one check raised or resolved. */
export interface AlertChange {
  alertId: string;
  kind: 'drift' | 'budget';
  change: 'raised' | 'resolved';
}

async function rows<R>(c: Queryable, text: string, values: readonly unknown[] = []): Promise<R[]> {
  return [...(await c.query<R>({ text, values })).rows];
}

/** ballast.set_drift_rule: creates or replaces the rule `name`; returns its id. */
export const setDriftRule = async (c: Queryable, a: DriftRuleArgs): Promise<string> =>
  (await rows<{ id: string }>(c, `select ballast.set_drift_rule(p_name => $1, p_pipeline => $2, p_metric => $3, p_threshold => $4,
      p_change => coalesce($5, 'absolute'), p_window => coalesce($6::interval, '1 hour'), p_baseline => coalesce($7::interval, '7 days'),
      p_min_samples => coalesce($8::int, 30), p_step_name => $9, p_prompt_name => $10, p_prompt_version => $11, p_model => $12,
      p_baseline_from => $13, p_baseline_until => $14, p_actor => $15)::text as id`,
  [a.name, a.pipeline, a.metric, a.threshold, a.change ?? null, a.window ?? null, a.baseline ?? null, a.minSamples ?? null,
    a.stepName ?? null, a.promptName ?? null, a.promptVersion ?? null, a.model ?? null, a.baselineFrom ?? null,
    a.baselineUntil ?? null, a.actor ?? null]))[0]!.id;

/** ballast.set_budget_alert: creates or replaces the rule `name`; returns its id. */
export const setBudgetAlert = async (c: Queryable, a: BudgetAlertArgs): Promise<string> =>
  (await rows<{ id: string }>(c, `select ballast.set_budget_alert(p_name => $1, p_scope => $2, p_scope_value => $3, p_limit_usd => $4,
      p_period => $5, p_percents => coalesce($6::int[], '{50,80,100}'), p_actor => $7)::text as id`,
  [a.name, a.scope, a.scopeValue ?? null, a.limitUsd ?? null, a.period ?? null, a.percents ?? null, a.actor ?? null]))[0]!.id;

export const deleteDriftRule = async (c: Queryable, name: string): Promise<boolean> =>
  (await rows<{ deleted: boolean }>(c, 'select ballast.delete_drift_rule($1) as deleted', [name]))[0]!.deleted;

export const deleteBudgetAlert = async (c: Queryable, name: string): Promise<boolean> =>
  (await rows<{ deleted: boolean }>(c, 'select ballast.delete_budget_alert($1) as deleted', [name]))[0]!.deleted;

/**
 * ballast.check_alerts: evaluates every rule once; what it raised and resolved. Nothing when another check runs, or
 * (with minIntervalMs) when one ran less than that long ago.
 */
export const checkAlerts = (c: Queryable, minIntervalMs: number | null = null): Promise<AlertChange[]> =>
  rows<AlertChange>(c, `select alert_id::text as "alertId", kind, change
                          from ballast.check_alerts(case when $1::float8 is null then null else make_interval(secs => $1::float8 / 1000) end)`,
  [minIntervalMs]);

/** ballast.ack_alert: who acknowledged it and when (BA007 for an unknown id). */
export const ackAlert = async (c: Queryable, id: string, actor: string | null, note: string | null): Promise<{ alertId: string; ackedBy: string; ackedAt: Date }> =>
  (await rows<{ alertId: string; ackedBy: string; ackedAt: Date }>(c,
    'select alert_id::text as "alertId", acked_by as "ackedBy", acked_at as "ackedAt" from ballast.ack_alert($1::bigint, $2, $3)', [id, actor, note]))[0]!;

/** ballast.alerts, newest first: only open ones with `open`, of one kind with `kind`, at most `limit`. */
export const listAlerts = (c: Queryable, o: { open?: boolean; kind?: 'drift' | 'budget'; limit?: number } = {}): Promise<AlertRow[]> =>
  rows<AlertRow>(c, `select id::text, kind, rule, group_key as "groupKey", "group", tenant_id as "tenantId", metric, value::text,
                            baseline::text, threshold::text, samples::text, period_start as "periodStart", percent, raised_at as "raisedAt",
                            resolved_at as "resolvedAt", open, acked_by as "ackedBy", acked_at as "ackedAt", ack_note as "ackNote"
                       from ballast.alerts a
                      where ($1::boolean is not true or a.open) and ($2::text is null or a.kind = $2)
                      order by a.id desc limit $3`, [o.open ?? false, o.kind ?? null, o.limit ?? 100]);

/** What the alert gauges show (src/metrics.ts), read at scrape time. */
export interface AlertGauges {
  open: { kind: string; rule: string; alerts: number }[];
  raised: { kind: string; alerts: number }[];
  spend: { rule: string; scope: string; scopeValue: string; ratio: number }[];
}

/**
 * Open alerts by kind and rule (index alerts_open), alerts raised by kind, and the spend ratio of every budget alert
 * scope with spend in its period as of the last check (budget_spend_checked: a small table, not the period's calls).
 */
export async function alertGauges(c: Queryable): Promise<AlertGauges> {
  const [open, raised, spend] = await Promise.all([
    rows<{ kind: string; rule: string; alerts: number }>(c,
      'select kind, rule_name as rule, count(*)::int as alerts from ballast_private.alerts where resolved_at is null group by 1, 2'),
    rows<{ kind: string; alerts: number }>(c, 'select kind, count(*)::int as alerts from ballast_private.alerts group by 1'),
    rows<{ rule: string; scope: string; scopeValue: string; ratio: number }>(c,
      'select rule_name as rule, scope, scope_key as "scopeValue", (spent_usd / limit_usd)::float8 as ratio from ballast_private.budget_spend_checked'),
  ]);
  return { open, raised, spend };
}
