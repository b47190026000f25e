// The alert mutations (migration 0045, docs/quality-alerts.md): setDriftRule, setBudgetAlert and ackAlert, each one
// statement of src/db/alerts.ts run as the caller in the caller's transaction, so Postgres decides who may (operators
// only: the SQL functions are granted to ballast_operator alone; any other token is FORBIDDEN). The alerts are read
// through the `alerts` query (surface.ts): row-level security shows a client its tenant's budget alerts, operators
// and reporters every alert. Errors name the input fields (errors.ts turns min_samples into minSamples).
import { access, type Step } from 'postgraphile/grafast';
import { extendSchema, gql } from 'postgraphile/utils';
import { ackAlert, setBudgetAlert, setDriftRule, type BudgetScope, type DriftMetric } from '../db/alerts.ts';
import { text, verbField } from './mutations.ts';

const typeDefs = gql`
  "A drift rule to create, or to replace (same name): a metric of a pipeline's model steps, per step, prompt version and model, in a window against a baseline."
  input SetDriftRuleInput {
    "The rule's name: 1 to 128 letters, digits, _ . : -"
    name: String!
    "The pipeline whose model steps it watches."
    pipeline: String!
    "A column of ballast.quality_stats: first_pass_rate, repair_rate, fallback_rate, degraded_rate, review_rate, rejection_rate, score_mean, score_p10, score_p50, cost_per_success, latency_p50_ms or latency_p95_ms."
    metric: String!
    "How far the metric may move in the bad direction (a drop of first_pass_rate and the scores, a rise of the others) before it alerts: in the metric's unit (ABSOLUTE, 0.2 = 20 points of a rate) or a fraction of the baseline (RELATIVE)."
    threshold: Float!
    "ABSOLUTE (default) or RELATIVE."
    change: DriftChange
    "The window ending now, a Postgres interval (default '1 hour')."
    window: String
    "The baseline: this interval before the window (default '7 days'), unless baselineFrom and baselineUntil fix it."
    baseline: String
    "A fixed baseline period: its start."
    baselineFrom: Datetime
    "A fixed baseline period: its end."
    baselineUntil: Datetime
    "Attempts the window and the baseline need before the rule may alert (default 30)."
    minSamples: Int
    "Only this step (null: every model step of the pipeline)."
    stepName: String
    "Only this prompt name."
    promptName: String
    "Only this prompt version."
    promptVersion: Int
    "Only this model, as provider:model."
    model: String
  }
  "How a drift rule's threshold is measured."
  enum DriftChange {
    "In the metric's unit."
    ABSOLUTE
    "As a fraction of the baseline."
    RELATIVE
  }
  "What setDriftRule did."
  type SetDriftRulePayload {
    "The rule's id."
    ruleId: BigInt!
    "Its name."
    name: String!
  }
  "A budget alert to create, or to replace (same name): the period's spend of a scope reaching percentages of a limit, raised once per period each."
  input SetBudgetAlertInput {
    "The rule's name: 1 to 128 letters, digits, _ . : -"
    name: String!
    "tenant, pipeline, model (provider:model) or end_user (the job input path set by ballast.set_end_user_path)."
    scope: String!
    "One tenant, pipeline, model or end user; null: each of them separately."
    scopeValue: String
    "The limit in USD per period; null for scope tenant: the tenant's budget (ballast.budgets), with its period."
    limitUsd: Float
    "day, week or month (UTC); required with limitUsd."
    period: String
    "Percentages of the limit that raise an alert, 1 to 1000 (default [50, 80, 100])."
    percents: [Int!]
  }
  "What setBudgetAlert did."
  type SetBudgetAlertPayload {
    "The rule's id."
    ruleId: BigInt!
    "Its name."
    name: String!
  }
  "An alert to acknowledge: someone looks at it (it stays open until it resolves)."
  input AckAlertInput {
    "The alert's id."
    id: BigInt!
    "A note, kept with it."
    note: String
  }
  "What ackAlert did."
  type AckAlertPayload {
    "The alert's id."
    alertId: BigInt!
    "Who acknowledged it (the token's subject)."
    ackedBy: String!
    "When."
    ackedAt: Datetime!
    "The alert, read back under the caller's rights."
    alert: Alert
  }
  extend type Mutation {
    "Create or replace a drift rule (ballast.set_drift_rule). Operators."
    setDriftRule(input: SetDriftRuleInput!): SetDriftRulePayload
    "Create or replace a budget alert (ballast.set_budget_alert). Operators."
    setBudgetAlert(input: SetBudgetAlertInput!): SetBudgetAlertPayload
    "Acknowledge an alert (ballast.ack_alert). Operators."
    ackAlert(input: AckAlertInput!): AckAlertPayload
  }
`;

const num = (v: unknown) => (typeof v === 'number' ? v : null);
const time = (v: unknown) => (v === undefined || v === null ? null : new Date(String(v)));

export const AlertMutationsPlugin = extendSchema((build) => {
  const { alerts } = build.input.pgRegistry.pgResources as Record<string, { get(spec: Record<string, Step>): Step }>;
  const verb = verbField(build);
  return {
    typeDefs,
    enums: { DriftChange: { values: { ABSOLUTE: 'absolute', RELATIVE: 'relative' } } },
    objects: {
      Mutation: {
        plans: {
          setDriftRule: verb(async (c, i) => ({
            name: String(i.name),
            ruleId: await setDriftRule(c, {
              name: String(i.name), pipeline: String(i.pipeline), metric: String(i.metric) as DriftMetric, threshold: Number(i.threshold),
              change: (text(i.change) ?? 'absolute') as 'absolute' | 'relative', window: text(i.window) ?? undefined,
              baseline: text(i.baseline) ?? undefined, baselineFrom: time(i.baselineFrom), baselineUntil: time(i.baselineUntil),
              minSamples: num(i.minSamples) ?? undefined, stepName: text(i.stepName), promptName: text(i.promptName),
              promptVersion: num(i.promptVersion), model: text(i.model),
            }),
          })),
          setBudgetAlert: verb(async (c, i) => ({
            name: String(i.name),
            ruleId: await setBudgetAlert(c, {
              name: String(i.name), scope: String(i.scope) as BudgetScope, scopeValue: text(i.scopeValue), limitUsd: num(i.limitUsd),
              period: text(i.period) as 'day' | 'week' | 'month' | null, ...(Array.isArray(i.percents) ? { percents: i.percents as number[] } : {}),
            }),
          })),
          ackAlert: verb(async (c, i) => {
            const r = await ackAlert(c, String(i.id), null, text(i.note));
            // A Date would leave as its toString (seconds only): the ISO text keeps the milliseconds.
            return { ...r, ackedAt: r.ackedAt.toISOString() };
          }),
        },
      },
      AckAlertPayload: { plans: { alert: ($p: Step) => alerts!.get({ id: access($p, 'alertId') }) } },
    },
  };
}, 'BallastAlertMutationsPlugin');
