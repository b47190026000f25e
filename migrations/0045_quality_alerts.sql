-- Up Migration
-- Quality drift and budget alerts (issue 16, items 4 and 8): model output quality per pipeline step, prompt version
-- and model over a window against a baseline, rules that raise alerts when it drifts, and spend thresholds per
-- tenant, pipeline, model or end user raised once per period. docs/quality-alerts.md is the user's page.
--
-- Map:
--   ballast.quality_stats(since, until, pipeline)  per (pipeline, step, prompt@version, model): attempts, first-pass
--                                                  validity, repair, fallback, degraded, review and rejection rates,
--                                                  score mean and p10/p50/p90, cost per success, latency p50/p95.
--   ballast_private.drift_rules                    a metric of a pipeline's groups, a window, a baseline (the period
--                                                  before the window, or a fixed one), a threshold (absolute or
--                                                  relative change in the bad direction), a minimum sample size.
--   ballast_private.budget_alert_rules             a scope (tenant, pipeline, model, end_user; one value or each),
--                                                  a limit (or the tenant's budget), a period, percentages.
--   ballast_private.end_user_paths                 per pipeline, the path in the job input naming its end user.
--   ballast_private.alerts                         one row per raised alert; ballast.alerts shows them.
--   ballast.check_alerts()                         evaluates every rule, one statement per kind of rule: raises, resolves,
--                                                  NOTIFY ballast_alerts with ids only. Workers call it every 30 s.
--
-- Lifecycle of a drift alert: raised when a group has at least min_samples attempts in the window and in the
-- baseline and its metric moved past the threshold in the bad direction; it stays open (one open alert per rule and
-- group: a unique partial index, so concurrent checks cannot raise it twice) until a check finds the group, again
-- with enough samples, back within the threshold: then resolved_at is set. A later breach raises a new alert. A
-- group that stops having traffic keeps its alert open (nothing says it recovered). A budget alert is raised once per
-- (rule, scope value, period, percentage) (a unique index) and resolved when its period ends.
--
-- Cost: nothing on the call path (no trigger on model_calls or attempts). The windows are read through the existing
-- index model_calls_started: the primary calls started in the window, then their attempts, steps and jobs. Measured
-- on the shared 2-core machine with 200,000 model calls (and jobs, steps, attempts) over 30 days: quality_stats over
-- a 7-day baseline (47,000 attempts) takes 0.4-0.9 s, over a 1-hour window 5-15 ms; a monthly budget rule over
-- 153,000 calls ~0.45 s. Workers check every 30 s and skip a check when another ran within half that
-- (alert_checks), so this is paid once per interval, not once per worker. An index on (started_at) including the
-- grouped columns would save the heap visits but cost every model call one more index entry: not added. The map
-- item's step name is looked up only for items (a correlated subquery), not by joining every step: the join made the
-- planner hash the whole steps table (200,000 rows: +70 ms per call).

-- ballast.quality_stats(since, until, pipeline) -> one row per (pipeline, step, prompt name, prompt version, model)
-- for the attempts of model steps whose first call on their primary model started in [since, until) and that have a
-- contract outcome (a transport failure that retried the step has none). model is provider:requested model of that
-- first call; the step of a map item is its map step. Rates are fractions of attempts (4 decimals): first_pass_rate
-- (valid_first_try), repair_rate (repaired), fallback_rate (fell_back), degraded_rate (degraded), review_rate
-- (review), rejection_rate (rejected). Scores: the attempts' quality scores (null without a quality check).
-- successes: valid_first_try, repaired or fell_back; cost_per_success: the cost of all the attempts (failures
-- included) over successes (null without one). Latency: of the first call, in ms. Read as the caller (row-level
-- security: a client sees its tenant's). Raises nothing.
create function ballast.quality_stats(
  p_since timestamp with time zone,
  p_until timestamp with time zone default 'infinity',
  p_pipeline text default null
) returns table (
  pipeline text, step_name text, prompt_name text, prompt_version integer, model text, attempts bigint,
  first_pass_rate numeric, repair_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric,
  rejection_rate numeric, score_mean numeric, score_p10 numeric, score_p50 numeric, score_p90 numeric,
  successes bigint, cost_usd numeric, cost_per_success numeric, latency_p50_ms numeric, latency_p95_ms numeric)
language sql stable
as $fn$
  with firsts as (
    select distinct on (c.attempt_id) c.attempt_id, c.step_id, c.job_id, c.provider || ':' || c.requested_model as model,
           c.prompt_name, c.prompt_version, c.latency_ms
      from ballast_private.model_calls c
     where c.started_at >= p_since and c.started_at < p_until and c.rung = 'primary' and c.model_index = 0
     order by c.attempt_id, c.id
  )
  select j.pipeline,
         case when s.parent_step_id is null then s.name
              else (select p.name from ballast_private.steps p where p.id = s.parent_step_id) end,
         f.prompt_name, f.prompt_version, f.model, count(*),
         round(count(*) filter (where a.contract_outcome = 'valid_first_try')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'repaired')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'fell_back')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'degraded')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'review')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'rejected')::numeric / count(*), 4),
         round(avg(a.quality_score), 4),
         round((percentile_cont(0.1) within group (order by a.quality_score))::numeric, 4),
         round((percentile_cont(0.5) within group (order by a.quality_score))::numeric, 4),
         round((percentile_cont(0.9) within group (order by a.quality_score))::numeric, 4),
         count(*) filter (where a.contract_outcome in ('valid_first_try', 'repaired', 'fell_back')),
         sum(a.cost_usd),
         round(sum(a.cost_usd) / nullif(count(*) filter (where a.contract_outcome in ('valid_first_try', 'repaired', 'fell_back')), 0), 8),
         round((percentile_cont(0.5) within group (order by f.latency_ms))::numeric, 1),
         round((percentile_cont(0.95) within group (order by f.latency_ms))::numeric, 1)
    from firsts f
    join ballast_private.attempts a on a.id = f.attempt_id
    join ballast_private.steps s on s.id = f.step_id
    join ballast_private.jobs j on j.id = f.job_id
   where a.contract_outcome is not null and (p_pipeline is null or j.pipeline = p_pipeline)
   group by 1, 2, 3, 4, 5
   order by 1, 2, 3, 4, 5
$fn$;
grant execute on function ballast.quality_stats(timestamptz, timestamptz, text) to ballast_client, ballast_operator, ballast_reporter;

-- The metrics a drift rule can watch (columns of quality_stats) and the direction that is bad for each.
create function ballast_private.drift_direction(p_metric text) returns text
language sql immutable
as $fn$
  select case when p_metric in ('first_pass_rate', 'score_mean', 'score_p10', 'score_p50') then 'drop'
              when p_metric in ('repair_rate', 'fallback_rate', 'degraded_rate', 'review_rate', 'rejection_rate',
                                'cost_per_success', 'latency_p50_ms', 'latency_p95_ms') then 'rise' end
$fn$;

-- drift_breached(direction, change, threshold, value, baseline): whether value moved from baseline by at least
-- threshold in the bad direction; change 'absolute' (in the metric's unit) or 'relative' (a fraction of the
-- baseline; from a baseline of 0 any move in the bad direction is a breach). Null when either value is null.
create function ballast_private.drift_breached(p_direction text, p_change text, p_threshold numeric, p_value numeric, p_baseline numeric)
returns boolean
language sql immutable
as $fn$
  select case when p_value is null or p_baseline is null then null
              when p_change = 'absolute' then
                (case when p_direction = 'drop' then p_baseline - p_value else p_value - p_baseline end) >= p_threshold
              when p_baseline = 0 then (case when p_direction = 'drop' then p_value < 0 else p_value > 0 end)
              else (case when p_direction = 'drop' then p_baseline - p_value else p_value - p_baseline end) / abs(p_baseline) >= p_threshold end
$fn$;

create table ballast_private.drift_rules (
  id bigint generated always as identity primary key,
  name text not null unique,
  pipeline text not null,
  -- Filters: null matches every step, prompt, prompt version, model (provider:model) of the pipeline.
  step_name text,
  prompt_name text,
  prompt_version integer,
  model text,
  metric text not null,
  direction text not null,
  change text not null default 'absolute',
  threshold numeric not null,
  window_size interval not null default '1 hour',
  -- The baseline: the baseline_size before the window, or the fixed period [baseline_from, baseline_until).
  baseline_size interval,
  baseline_from timestamptz,
  baseline_until timestamptz,
  min_samples integer not null default 30,
  set_by text,
  set_at timestamptz not null default ballast.now(),
  constraint drift_metric_known check (ballast_private.drift_direction(metric) is not null),
  constraint drift_direction_matches check (direction = ballast_private.drift_direction(metric)),
  constraint drift_change_known check (change in ('absolute', 'relative')),
  constraint drift_threshold_positive check (threshold > 0),
  constraint drift_window_positive check (window_size > '0'::interval),
  constraint drift_baseline_one check ((baseline_size is not null) <> (baseline_from is not null and baseline_until is not null)
                                       and (baseline_from is null) = (baseline_until is null)),
  constraint drift_baseline_positive check (baseline_size > '0'::interval or baseline_until > baseline_from),
  constraint drift_min_samples_positive check (min_samples >= 1)
);
comment on table ballast_private.drift_rules is 'Drift rules (0045): a metric of quality_stats watched per group of a pipeline against a baseline.';

create table ballast_private.budget_alert_rules (
  id bigint generated always as identity primary key,
  name text not null unique,
  scope text not null,
  -- null: every value of the scope (each tenant, pipeline, model, end user) separately.
  scope_value text,
  -- null (scope tenant only): the tenant's budget limit and period (ballast.budgets).
  limit_usd numeric(14,6),
  period text,
  percents integer[] not null default '{50,80,100}',
  set_by text,
  set_at timestamptz not null default ballast.now(),
  constraint budget_alert_scope_known check (scope in ('tenant', 'pipeline', 'model', 'end_user')),
  constraint budget_alert_period_known check (period in ('day', 'week', 'month')),
  constraint budget_alert_limit check (limit_usd > 0 or (limit_usd is null and scope = 'tenant' and period is null)),
  constraint budget_alert_period_given check (period is not null or limit_usd is null),
  constraint budget_alert_percents check (cardinality(percents) between 1 and 20 and 1 <= all(percents) and 1000 >= all(percents))
);
comment on table ballast_private.budget_alert_rules is 'Budget alerts (0045): spend thresholds per scope and period.';

create table ballast_private.end_user_paths (
  pipeline text primary key,
  path text[] not null,
  set_by text,
  set_at timestamptz not null default ballast.now(),
  constraint end_user_path_nonempty check (cardinality(path) between 1 and 20)
);
comment on table ballast_private.end_user_paths is 'Per pipeline, where its job input names the end user (0045); read by end_user budget alerts.';

create table ballast_private.alerts (
  id bigint generated always as identity primary key,
  kind text not null,
  rule_id bigint not null,
  rule_name text not null,
  group_key text not null,
  group_value jsonb not null,
  -- The tenant a budget alert of scope tenant or end_user belongs to (its clients see it); null otherwise.
  tenant_id text,
  metric text not null,
  value numeric,
  baseline numeric,
  threshold numeric,
  samples bigint,
  baseline_samples bigint,
  period_start timestamptz,
  percent integer,
  raised_at timestamptz not null default ballast.now(),
  resolved_at timestamptz,
  acked_by text,
  acked_at timestamptz,
  ack_note text,
  constraint alert_kind_known check (kind in ('drift', 'budget')),
  constraint alert_budget_period check ((kind = 'budget') = (period_start is not null and percent is not null))
);
-- One open drift alert per rule and group; one budget alert per rule, scope value, period and percentage. The checks
-- insert with ON CONFLICT DO NOTHING against these, so two checks running at once cannot raise one twice.
create unique index alerts_drift_open on ballast_private.alerts (rule_id, group_key) where kind = 'drift' and resolved_at is null;
create unique index alerts_budget_once on ballast_private.alerts (rule_id, group_key, period_start, percent) where kind = 'budget';
-- Open alerts (the metric, the CLI's --open, the resolution of drift alerts) without reading the history.
create index alerts_open on ballast_private.alerts (kind, rule_id) where resolved_at is null;
create index alerts_raised on ballast_private.alerts (raised_at);
alter table ballast_private.alerts enable row level security;
create policy tenant_rows on ballast_private.alerts for select
  using ((select ballast_private.caller_unrestricted())
         or (kind = 'budget' and tenant_id = (select ballast_private.caller_tenant())));
comment on table ballast_private.alerts is 'Alerts raised by ballast.check_alerts (0045).';

-- Checks a rule name: 1 to 128 letters, digits, _ . : -
create function ballast_private.check_rule_name(p_name text) returns void
language plpgsql immutable
as $fn$
begin
  if p_name is null or p_name !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    perform ballast_private.bad_argument('name', format('%s is not 1 to 128 letters, digits, _ . : or -', coalesce(quote_literal(p_name), 'null')),
      'Name the rule, e.g. ''triage-first-pass''.');
  end if;
end
$fn$;

-- set_drift_rule(name, pipeline, metric, threshold, ...) -> the rule's id. Creates or replaces (by name) a drift
-- rule. metric: first_pass_rate | repair_rate | fallback_rate | degraded_rate | review_rate | rejection_rate |
-- score_mean | score_p10 | score_p50 | cost_per_success | latency_p50_ms | latency_p95_ms (a drop of first_pass_rate
-- and the scores is bad, a rise of the others); change: 'absolute' (threshold in the metric's unit: 0.2 = 20 points of
-- a rate) or 'relative' (0.5 = 50 % of the baseline); the window (default 1 hour, ending now) against the
-- baseline_size before it (default 7 days) or the fixed period [baseline_from, baseline_until); min_samples attempts
-- needed in the window and in the baseline. Filters (step, prompt name and version, model as provider:model) narrow
-- the groups. Operators. Raises BA002 naming the argument.
create function ballast.set_drift_rule(
  p_name text,
  p_pipeline text,
  p_metric text,
  p_threshold numeric,
  p_change text default 'absolute',
  p_window interval default '1 hour',
  p_baseline interval default '7 days',
  p_min_samples integer default 30,
  p_step_name text default null,
  p_prompt_name text default null,
  p_prompt_version integer default null,
  p_model text default null,
  p_baseline_from timestamptz default null,
  p_baseline_until timestamptz default null,
  p_actor text default null
) returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
  v_fixed boolean := p_baseline_from is not null or p_baseline_until is not null;
begin
  perform ballast_private.check_rule_name(p_name);
  if coalesce(p_pipeline, '') = '' then
    perform ballast_private.bad_argument('pipeline', 'is empty', 'Name the pipeline whose model steps the rule watches.');
  end if;
  if ballast_private.drift_direction(p_metric) is null then
    perform ballast_private.bad_argument('metric', format('%s is not a metric', coalesce(quote_literal(p_metric), 'null')),
      'Pass first_pass_rate, repair_rate, fallback_rate, degraded_rate, review_rate, rejection_rate, score_mean, score_p10, score_p50, cost_per_success, latency_p50_ms or latency_p95_ms.');
  end if;
  if p_change is null or p_change not in ('absolute', 'relative') then
    perform ballast_private.bad_argument('change', format('%s is not absolute or relative', coalesce(quote_literal(p_change), 'null')),
      'Pass absolute (the threshold in the metric''s unit) or relative (a fraction of the baseline).');
  end if;
  if p_threshold is null or p_threshold <= 0 then
    perform ballast_private.bad_argument('threshold', format('%s is not above 0', coalesce(p_threshold::text, 'null')),
      'Pass how far the metric may move in the bad direction before it alerts, e.g. 0.2 (20 points of a rate).');
  end if;
  if p_window is null or p_window <= '0'::interval then
    perform ballast_private.bad_argument('window', format('%s is not a positive interval', coalesce(p_window::text, 'null')), 'Pass e.g. ''1 hour''.');
  end if;
  if v_fixed and (p_baseline_from is null or p_baseline_until is null or p_baseline_until <= p_baseline_from) then
    perform ballast_private.bad_argument('baseline_until', 'a fixed baseline needs baseline_from before baseline_until',
      'Pass both ends of the baseline period, or neither and a baseline interval before the window.');
  end if;
  if not v_fixed and (p_baseline is null or p_baseline <= '0'::interval) then
    perform ballast_private.bad_argument('baseline', format('%s is not a positive interval', coalesce(p_baseline::text, 'null')),
      'Pass the period before the window to compare with, e.g. ''7 days'', or a fixed baseline_from and baseline_until.');
  end if;
  if p_min_samples is null or p_min_samples < 1 then
    perform ballast_private.bad_argument('min_samples', format('%s is not at least 1', coalesce(p_min_samples::text, 'null')),
      'Pass how many attempts the window and the baseline need before the rule may alert, e.g. 30.');
  end if;
  insert into ballast_private.drift_rules as r (name, pipeline, step_name, prompt_name, prompt_version, model, metric, direction,
    change, threshold, window_size, baseline_size, baseline_from, baseline_until, min_samples, set_by, set_at)
  values (p_name, p_pipeline, p_step_name, p_prompt_name, p_prompt_version, p_model, p_metric,
    ballast_private.drift_direction(p_metric), p_change, p_threshold, p_window, case when v_fixed then null else p_baseline end,
    p_baseline_from, p_baseline_until, p_min_samples, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (name) do update set pipeline = excluded.pipeline, step_name = excluded.step_name,
    prompt_name = excluded.prompt_name, prompt_version = excluded.prompt_version, model = excluded.model,
    metric = excluded.metric, direction = excluded.direction, change = excluded.change, threshold = excluded.threshold,
    window_size = excluded.window_size, baseline_size = excluded.baseline_size, baseline_from = excluded.baseline_from,
    baseline_until = excluded.baseline_until, min_samples = excluded.min_samples, set_by = excluded.set_by, set_at = excluded.set_at
  returning r.id into v_id;
  return v_id;
end
$fn$;

-- set_budget_alert(name, scope, scope_value, limit_usd, period, percents) -> the rule's id. Creates or replaces (by
-- name) a spend alert: scope tenant | pipeline | model (provider:model) | end_user (see set_end_user_path), for one
-- scope_value or (null) each value separately; limit_usd per period (day, week or month, UTC); for scope tenant a
-- null limit and period take the tenant's budget (ballast.budgets). An alert is raised when the period's spend
-- reaches each percentage of the limit, once per period. Operators. Raises BA002 naming the argument.
create function ballast.set_budget_alert(
  p_name text,
  p_scope text,
  p_scope_value text default null,
  p_limit_usd numeric default null,
  p_period text default null,
  p_percents integer[] default '{50,80,100}',
  p_actor text default null
) returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
  v_percents integer[] := array(select distinct x from unnest(p_percents) x order by x);
begin
  perform ballast_private.check_rule_name(p_name);
  if p_scope is null or p_scope not in ('tenant', 'pipeline', 'model', 'end_user') then
    perform ballast_private.bad_argument('scope', format('%s is not a scope', coalesce(quote_literal(p_scope), 'null')),
      'Pass tenant, pipeline, model or end_user.');
  end if;
  if p_scope_value = '' then
    perform ballast_private.bad_argument('scope_value', 'is empty', 'Pass one tenant, pipeline, model (provider:model) or end user, or null for each of them.');
  end if;
  if p_limit_usd is null and p_scope <> 'tenant' then
    perform ballast_private.bad_argument('limit_usd', 'is missing', 'Pass the spend limit in USD; only scope tenant may use the tenant''s budget instead.');
  end if;
  if p_limit_usd <= 0 then
    perform ballast_private.bad_argument('limit_usd', format('%s is not above 0', p_limit_usd), 'Pass the spend limit in USD, e.g. 100.');
  end if;
  if p_period is not null and p_period not in ('day', 'week', 'month') or p_period is null and p_limit_usd is not null then
    perform ballast_private.bad_argument('period', format('%s is not day, week or month', coalesce(quote_literal(p_period), 'null')),
      'Pass day, week or month (UTC), the period the limit is for; leave both limit_usd and period out to use the tenant''s budget.');
  end if;
  if p_limit_usd is null and p_period is not null then
    perform ballast_private.bad_argument('period', 'is given without limit_usd', 'Leave it out: the tenant''s budget gives the period too.');
  end if;
  if coalesce(cardinality(v_percents), 0) not between 1 and 20 or exists (select 1 from unnest(p_percents) x where x is null or x < 1 or x > 1000) then
    perform ballast_private.bad_argument('percents', format('%s is not 1 to 20 percentages from 1 to 1000', coalesce(p_percents::text, 'null')),
      'Pass e.g. {50,80,100}.');
  end if;
  insert into ballast_private.budget_alert_rules as r (name, scope, scope_value, limit_usd, period, percents, set_by, set_at)
  values (p_name, p_scope, p_scope_value, p_limit_usd, p_period, v_percents, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (name) do update set scope = excluded.scope, scope_value = excluded.scope_value, limit_usd = excluded.limit_usd,
    period = excluded.period, percents = excluded.percents, set_by = excluded.set_by, set_at = excluded.set_at
  returning r.id into v_id;
  return v_id;
end
$fn$;

-- set_end_user_path(pipeline, path) -> void. Where the jobs of a pipeline name their end user: a dotted path in the
-- job input ('user.id' reads input.user.id as text); null forgets it. Read at check time (nothing is added to
-- submission). Operators. Raises BA002 for an empty pipeline or path.
create function ballast.set_end_user_path(p_pipeline text, p_path text, p_actor text default null) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if coalesce(p_pipeline, '') = '' then
    perform ballast_private.bad_argument('pipeline', 'is empty', 'Name the pipeline whose inputs name their end user.');
  end if;
  if p_path is null then
    delete from ballast_private.end_user_paths where pipeline = p_pipeline;
    return;
  end if;
  if p_path !~ '^[^.]+(\.[^.]+){0,19}$' then
    perform ballast_private.bad_argument('path', format('%L is not a dotted path of 1 to 20 keys', p_path), 'Pass e.g. ''user.id'' for input.user.id.');
  end if;
  insert into ballast_private.end_user_paths as u (pipeline, path, set_by, set_at)
  values (p_pipeline, string_to_array(p_path, '.'), ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (pipeline) do update set path = excluded.path, set_by = excluded.set_by, set_at = excluded.set_at;
end
$fn$;

-- delete_drift_rule(name) / delete_budget_alert(name) -> whether it existed. The rule's open alerts are resolved.
-- Operators.
create function ballast.delete_drift_rule(p_name text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
begin
  delete from ballast_private.drift_rules r where r.name = p_name returning r.id into v_id;
  update ballast_private.alerts a set resolved_at = ballast.now()
   where a.kind = 'drift' and a.rule_id = v_id and a.resolved_at is null;
  return v_id is not null;
end
$fn$;

create function ballast.delete_budget_alert(p_name text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
begin
  delete from ballast_private.budget_alert_rules r where r.name = p_name returning r.id into v_id;
  delete from ballast_private.budget_spend_checked c where c.rule_id = v_id;
  update ballast_private.alerts a set resolved_at = ballast.now()
   where a.kind = 'budget' and a.rule_id = v_id and a.resolved_at is null;
  return v_id is not null;
end
$fn$;

-- budget_spend(at) -> per budget alert rule and scope value (and tenant, for scopes tenant and end_user) with spend
-- in the period holding `at`: scope_key (the value; tenant/value for an end user), the period's start, the USD spent (cost_usd of the model calls started in the period;
-- unpriced calls count 0), the limit and the percentages. Scope values: tenant the call's tenant, pipeline the job's,
-- model provider:requested_model, end_user the job input at the pipeline's end-user path (calls of jobs without one
-- do not count). A tenant-scope rule without a limit uses the tenant's budget (a tenant without one: no row). One
-- scan of the calls since the earliest period start (index model_calls_started), joined to their jobs.
create function ballast_private.budget_spend(p_at timestamptz)
returns table (rule_id bigint, rule_name text, scope text, scope_value text, tenant_id text, scope_key text, period text,
               period_start timestamptz, spent_usd numeric, limit_usd numeric, percents integer[])
language sql stable
as $fn$
  with calls as (
    select c.started_at, c.cost_usd, c.tenant_id, c.provider || ':' || c.requested_model as model, j.pipeline,
           j.input #>> u.path as end_user
      from ballast_private.model_calls c
      join ballast_private.jobs j on j.id = c.job_id
      left join ballast_private.end_user_paths u on u.pipeline = j.pipeline
     where c.started_at >= least(ballast_private.budget_period_start('month', p_at), ballast_private.budget_period_start('week', p_at))
       and c.cost_usd > 0
       and exists (select 1 from ballast_private.budget_alert_rules)
  ), matched as (
    select r.id, r.name, r.scope, v.value, v.tenant, coalesce(r.period, b.period) as period,
           coalesce(r.limit_usd, b.limit_usd) as limit_usd, r.percents, c.started_at, c.cost_usd
      from ballast_private.budget_alert_rules r
      join calls c on true
      cross join lateral (select case r.scope when 'tenant' then c.tenant_id when 'pipeline' then c.pipeline
                                              when 'model' then c.model else c.end_user end as value,
                                 case when r.scope in ('tenant', 'end_user') then c.tenant_id end as tenant) v
      left join ballast_private.budgets b on r.limit_usd is null and b.tenant_id = v.value
     where v.value is not null and (r.scope_value is null or v.value = r.scope_value)
  )
  select m.id, m.name, m.scope, m.value, m.tenant, coalesce(case when m.scope = 'end_user' then m.tenant || '/' end, '') || m.value,
         m.period, ballast_private.budget_period_start(m.period, p_at),
         sum(m.cost_usd), m.limit_usd, m.percents
    from matched m
   where m.limit_usd is not null
     and m.started_at >= ballast_private.budget_period_start(m.period, p_at)
     and m.started_at < ballast_private.budget_period_start(m.period, p_at) + ('1 ' || m.period)::interval
   group by m.id, m.name, m.scope, m.value, m.tenant, m.period, m.limit_usd, m.percents
$fn$;

-- The spend per budget alert rule and scope value as of the last check (check_alerts replaces the rows each time):
-- what the metric ballast_budget_spend_ratio reads, so that a scrape costs a read of a small table, not a scan of the
-- period's model calls (ballast.budget_spend computes the same live).
create table ballast_private.budget_spend_checked (
  rule_id bigint not null,
  rule_name text not null,
  scope text not null,
  scope_key text not null,
  tenant_id text,
  period_start timestamptz not null,
  spent_usd numeric not null,
  limit_usd numeric not null,
  checked_at timestamptz not null,
  primary key (rule_id, scope_key)
);

-- When the last check ran (one row): check_alerts(min_interval) skips when one ran more recently than that, so that
-- N workers checking every 30 s do the work about once per 30 s, not N times.
create table ballast_private.alert_checks (
  id integer primary key default 1,
  last_at timestamptz not null,
  constraint alert_checks_one_row check (id = 1)
);

-- check_alerts(min_interval) -> one row per alert raised or resolved by this call (alert_id, kind, change 'raised' |
-- 'resolved'). Evaluates every drift rule in one statement (its window and baseline through quality_stats, per
-- group) and every budget alert rule in another (budget_spend), at ballast.now():
--   drift: a group with min_samples attempts in the window and in the baseline whose metric breached the threshold
--          gets an alert unless one is open for the rule and group; an open alert whose group is back within the
--          threshold (with enough samples) is resolved;
--   budget: each percentage reached by the period's spend raises one alert per rule, scope value and period; alerts
--          of periods that have ended are resolved.
-- Then NOTIFY ballast_alerts '{"raised":[ids],"resolved":[ids]}' (ids only) when anything changed. One caller at a
-- time does the work (a transaction advisory lock: a second caller returns at once with no row), and with
-- min_interval (workers pass half their interval) none when a check ran less than min_interval ago; the unique
-- indexes make it correct without either. Runs as the owner (every tenant's rows). Operators and workers.
create function ballast.check_alerts(p_min_interval interval default null)
returns table (alert_id bigint, kind text, change text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_now timestamptz := ballast.now();
  v_drift_raised bigint[] := '{}';
  v_drift_resolved bigint[] := '{}';
  v_budget_raised bigint[] := '{}';
  v_budget_resolved bigint[] := '{}';
begin
  if not pg_try_advisory_xact_lock(hashtextextended('ballast.check_alerts', 0)) then
    return;
  end if;
  if p_min_interval is not null
     and exists (select 1 from ballast_private.alert_checks c where c.last_at > v_now - p_min_interval and c.last_at <= v_now) then
    return;
  end if;
  insert into ballast_private.alert_checks as c (id, last_at) values (1, v_now)
  on conflict (id) do update set last_at = excluded.last_at;

  if exists (select 1 from ballast_private.drift_rules) then
    with rules as (
      select r.*, v_now - r.window_size as w_from,
             coalesce(r.baseline_from, v_now - r.window_size - r.baseline_size) as b_from,
             coalesce(r.baseline_until, v_now - r.window_size) as b_until
        from ballast_private.drift_rules r
    ), win as (
      select r.id as rule_id, s.pipeline, s.step_name, s.prompt_name, s.prompt_version, s.model, s.attempts,
             (to_jsonb(s) ->> r.metric)::numeric as value
        from rules r cross join lateral ballast.quality_stats(r.w_from, v_now, r.pipeline) s
       where (r.step_name is null or s.step_name = r.step_name) and (r.prompt_name is null or s.prompt_name = r.prompt_name)
         and (r.prompt_version is null or s.prompt_version = r.prompt_version) and (r.model is null or s.model = r.model)
    ), base as (
      select r.id as rule_id, s.step_name, s.prompt_name, s.prompt_version, s.model, s.attempts,
             (to_jsonb(s) ->> r.metric)::numeric as value
        from rules r cross join lateral ballast.quality_stats(r.b_from, r.b_until, r.pipeline) s
       where (r.step_name is null or s.step_name = r.step_name) and (r.prompt_name is null or s.prompt_name = r.prompt_name)
         and (r.prompt_version is null or s.prompt_version = r.prompt_version) and (r.model is null or s.model = r.model)
    ), eval as (
      select r.id as rule_id, r.name, r.metric, r.threshold, w.attempts, b.attempts as b_attempts, w.value, b.value as baseline,
             w.pipeline || '/' || w.step_name || '/' || coalesce(w.prompt_name || '@' || w.prompt_version, '-') || '/' || w.model as group_key,
             jsonb_build_object('pipeline', w.pipeline, 'step', w.step_name, 'prompt_name', w.prompt_name,
                                'prompt_version', w.prompt_version, 'model', w.model) as group_value,
             ballast_private.drift_breached(r.direction, r.change, r.threshold, w.value, b.value) as breached
        from rules r
        join win w on w.rule_id = r.id
        join base b on b.rule_id = r.id and b.step_name = w.step_name and b.model = w.model
                   and b.prompt_name is not distinct from w.prompt_name and b.prompt_version is not distinct from w.prompt_version
       where w.attempts >= r.min_samples and b.attempts >= r.min_samples
    ), raised as (
      insert into ballast_private.alerts as a (kind, rule_id, rule_name, group_key, group_value, metric, value, baseline,
                                               threshold, samples, baseline_samples, raised_at)
      select 'drift', e.rule_id, e.name, e.group_key, e.group_value, e.metric, e.value, e.baseline, e.threshold,
             e.attempts, e.b_attempts, v_now
        from eval e where e.breached
      on conflict (rule_id, group_key) where kind = 'drift' and resolved_at is null do nothing
      returning a.id
    ), resolved as (
      update ballast_private.alerts a set resolved_at = v_now
        from eval e
       where a.kind = 'drift' and a.resolved_at is null and a.rule_id = e.rule_id and a.group_key = e.group_key
         and e.breached = false
      returning a.id
    )
    select array(select id from raised order by id), array(select id from resolved order by id)
      into v_drift_raised, v_drift_resolved;
  end if;

  if exists (select 1 from ballast_private.budget_alert_rules)
     or exists (select 1 from ballast_private.alerts a where a.kind = 'budget' and a.resolved_at is null) then
    -- (Its own statement: the CTEs of one statement run in no set order, and the inserts below would meet these rows.)
    delete from ballast_private.budget_spend_checked;
    with spend as materialized (
      select * from ballast_private.budget_spend(v_now)
    ), seen as (
      insert into ballast_private.budget_spend_checked (rule_id, rule_name, scope, scope_key, tenant_id, period_start,
                                                        spent_usd, limit_usd, checked_at)
      select s.rule_id, s.rule_name, s.scope, s.scope_key, s.tenant_id, s.period_start, s.spent_usd, s.limit_usd, v_now
        from spend s
    ), raised as (
      insert into ballast_private.alerts as a (kind, rule_id, rule_name, group_key, group_value, tenant_id, metric, value,
                                               threshold, period_start, percent, raised_at)
      select 'budget', s.rule_id, s.rule_name, s.scope_key,
             jsonb_build_object('scope', s.scope, 'value', s.scope_value, 'tenant_id', s.tenant_id, 'period', s.period,
                                'limit_usd', s.limit_usd),
             s.tenant_id, 'spend_usd', s.spent_usd, round(s.limit_usd * p.pct / 100.0, 8), s.period_start, p.pct, v_now
        from spend s cross join lateral unnest(s.percents) p(pct)
       where s.spent_usd >= s.limit_usd * p.pct / 100.0
      on conflict (rule_id, group_key, period_start, percent) where kind = 'budget' do nothing
      returning a.id
    ), ended as (
      update ballast_private.alerts a set resolved_at = v_now
       where a.kind = 'budget' and a.resolved_at is null
         and a.period_start + ('1 ' || (a.group_value ->> 'period'))::interval <= v_now
      returning a.id
    )
    select array(select id from raised order by id), array(select id from ended order by id)
      into v_budget_raised, v_budget_resolved;
  end if;

  if cardinality(v_drift_raised || v_drift_resolved || v_budget_raised || v_budget_resolved) > 0 then
    perform pg_notify('ballast_alerts', json_build_object(
      'raised', to_json(array(select x from unnest(v_drift_raised || v_budget_raised) x order by x)),
      'resolved', to_json(array(select x from unnest(v_drift_resolved || v_budget_resolved) x order by x)))::text);
  end if;
  return query
  select x, 'drift', 'raised' from unnest(v_drift_raised) x
  union all select x, 'drift', 'resolved' from unnest(v_drift_resolved) x
  union all select x, 'budget', 'raised' from unnest(v_budget_raised) x
  union all select x, 'budget', 'resolved' from unnest(v_budget_resolved) x;
end
$fn$;

-- ack_alert(id, actor, note) -> the alert's id, who acknowledged it and when. Acknowledging says someone looks at it;
-- it does not resolve it (a drift alert resolves when its metric is back, a budget alert when its period ends). A
-- second acknowledgement replaces the first. Operators. Raises BA007 for an unknown alert.
create function ballast.ack_alert(p_id bigint, p_actor text default null, p_note text default null)
returns table (alert_id bigint, acked_by text, acked_at timestamptz)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
begin
  return query
  update ballast_private.alerts a set acked_by = coalesce(ballast_private.caller_actor(p_actor), session_user::text),
         acked_at = ballast.now(), ack_note = p_note
   where a.id = p_id
  returning a.id, a.acked_by, a.acked_at;
  if not found then
    raise exception using errcode = 'BA007', message = format('alert %s does not exist', coalesce(p_id::text, 'null')),
      hint = 'List the alerts with select * from ballast.alerts.';
  end if;
end
$fn$;

create view ballast.alerts with (security_invoker = true) as
  select a.id, a.kind, a.rule_name as rule, a.rule_id, a.group_key, a.group_value as "group", a.tenant_id, a.metric,
         a.value, a.baseline, a.threshold, a.samples, a.baseline_samples, a.period_start, a.percent, a.raised_at,
         a.resolved_at, a.resolved_at is null as open, a.acked_by, a.acked_at, a.ack_note
    from ballast_private.alerts a;
comment on view ballast.alerts is 'Drift and budget alerts raised by ballast.check_alerts (docs/quality-alerts.md). Clients see their tenant''s budget alerts; operators and reporters see all.';
comment on column ballast.alerts.id is 'The alert''s id (ballast.ack_alert takes it).';
comment on column ballast.alerts.kind is 'drift or budget.';
comment on column ballast.alerts.rule is 'The name of the rule that raised it.';
comment on column ballast.alerts.rule_id is 'The id of that rule (a rule deleted and set again gets a new one).';
comment on column ballast.alerts.group_key is 'What it is about, as text: pipeline/step/prompt@version/provider:model (drift), [tenant/]scope value (budget).';
comment on column ballast.alerts."group" is 'What it is about, as JSON: pipeline, step, prompt_name, prompt_version, model (drift); scope, value, tenant_id, period, limit_usd (budget).';
comment on column ballast.alerts.tenant_id is 'The tenant of a budget alert of scope tenant or end_user (its clients see it); null otherwise.';
comment on column ballast.alerts.metric is 'The metric watched (a column of ballast.quality_stats), or spend_usd.';
comment on column ballast.alerts.value is 'The metric in the window when raised, or the period''s spend in USD.';
comment on column ballast.alerts.baseline is 'The metric in the baseline when raised (drift).';
comment on column ballast.alerts.threshold is 'The rule''s threshold (drift), or the USD amount of the percentage (budget).';
comment on column ballast.alerts.samples is 'Attempts in the window when raised (drift).';
comment on column ballast.alerts.baseline_samples is 'Attempts in the baseline when raised (drift).';
comment on column ballast.alerts.period_start is 'The start of the budget period (UTC).';
comment on column ballast.alerts.percent is 'The percentage of the limit reached (budget).';
comment on column ballast.alerts.raised_at is 'When it was raised.';
comment on column ballast.alerts.resolved_at is 'When it was resolved: the metric back within the threshold, the period over, or the rule deleted; null while open.';
comment on column ballast.alerts.open is 'Not resolved yet.';
comment on column ballast.alerts.acked_by is 'Who acknowledged it (ballast.ack_alert), if anyone.';
comment on column ballast.alerts.acked_at is 'When.';
comment on column ballast.alerts.ack_note is 'Their note.';
create trigger refuse_write instead of insert or update or delete on ballast.alerts
  for each row execute function ballast_private.refuse_view_write();

create view ballast.drift_rules with (security_invoker = true) as
  select r.id, r.name, r.pipeline, r.step_name, r.prompt_name, r.prompt_version, r.model, r.metric, r.direction, r.change,
         r.threshold, r.window_size, r.baseline_size, r.baseline_from, r.baseline_until, r.min_samples, r.set_by, r.set_at
    from ballast_private.drift_rules r;
comment on view ballast.drift_rules is 'Drift rules (ballast.set_drift_rule).';
create trigger refuse_write instead of insert or update or delete on ballast.drift_rules
  for each row execute function ballast_private.refuse_view_write();

create view ballast.budget_alert_rules with (security_invoker = true) as
  select r.id, r.name, r.scope, r.scope_value, r.limit_usd, r.period, r.percents, r.set_by, r.set_at
    from ballast_private.budget_alert_rules r;
comment on view ballast.budget_alert_rules is 'Budget alert rules (ballast.set_budget_alert); null limit_usd: the tenant''s budget.';
create trigger refuse_write instead of insert or update or delete on ballast.budget_alert_rules
  for each row execute function ballast_private.refuse_view_write();

create view ballast.end_user_paths with (security_invoker = true) as
  select u.pipeline, array_to_string(u.path, '.') as path, u.set_by, u.set_at from ballast_private.end_user_paths u;
comment on view ballast.end_user_paths is 'Where each pipeline''s job input names its end user (ballast.set_end_user_path).';
create trigger refuse_write instead of insert or update or delete on ballast.end_user_paths
  for each row execute function ballast_private.refuse_view_write();

-- The spend of every budget alert rule's scopes in the current period, and its ratio to the limit.
create view ballast.budget_spend with (security_invoker = true) as
  select s.rule_id, s.rule_name as rule, s.scope, s.scope_value, s.tenant_id, s.scope_key, s.period, s.period_start, s.spent_usd,
         s.limit_usd, round(s.spent_usd / s.limit_usd, 4) as ratio
    from ballast_private.budget_spend(ballast.now()) s;
comment on view ballast.budget_spend is 'Spend in the current period per budget alert rule and scope value with spend, and its ratio to the limit.';
create trigger refuse_write instead of insert or update or delete on ballast.budget_spend
  for each row execute function ballast_private.refuse_view_write();

grant select on ballast_private.alerts to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast.alerts to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast_private.drift_rules, ballast_private.budget_alert_rules, ballast_private.end_user_paths to ballast_operator, ballast_reporter;
grant select on ballast.drift_rules, ballast.budget_alert_rules, ballast.end_user_paths, ballast.budget_spend to ballast_operator, ballast_reporter;
grant execute on function ballast_private.budget_spend(timestamptz) to ballast_operator, ballast_reporter;
grant select on ballast_private.budget_spend_checked to ballast_operator, ballast_reporter;
grant execute on function ballast_private.drift_direction(text) to ballast_operator, ballast_reporter;
grant execute on function ballast.set_drift_rule(text, text, text, numeric, text, interval, interval, integer, text, text, integer, text, timestamptz, timestamptz, text) to ballast_operator;
grant execute on function ballast.set_budget_alert(text, text, text, numeric, text, integer[], text) to ballast_operator;
grant execute on function ballast.set_end_user_path(text, text, text) to ballast_operator;
grant execute on function ballast.delete_drift_rule(text) to ballast_operator;
grant execute on function ballast.delete_budget_alert(text) to ballast_operator;
grant execute on function ballast.check_alerts(interval) to ballast_operator;
grant execute on function ballast.ack_alert(bigint, text, text) to ballast_operator;

-- Down Migration
