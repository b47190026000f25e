-- Up Migration
-- report_models counts the calls charged at their estimate (usage_missing): an answer that came back without token
-- usage is billed the reservation's estimate (0028), and an operator reading the cost wants to know how much of it is
-- estimated. A new last column changes the function's result type, so it is dropped and created again with its grant
-- and comment (sql/report_models.sql shows the column).

drop function ballast.report_models(interval, text);

-- report_models(since, period): per period (UTC), provider and model: calls made, errors (made and failed) and their
-- rate, errors by class (also the calls not made: cooldown, budget), not_made, latency p50/p95 of the calls made,
-- tokens, cost, unpriced (calls made without a price) and usage_missing (calls made whose answer reported no usage,
-- charged their estimate). Counts calls by their start. BA002 for a bad window or period (report_window).
create function ballast.report_models(p_since interval default '24 hours', p_period text default 'hour')
returns table(period_start timestamptz, provider text, model text, calls bigint, errors bigint, error_rate numeric,
  errors_by_class jsonb, not_made bigint, latency_p50_ms numeric, latency_p95_ms numeric, input_tokens bigint,
  output_tokens bigint, cached_input_tokens bigint, cost_usd numeric, unpriced bigint, usage_missing bigint)
language plpgsql stable
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with c as materialized (
    select ballast_private.report_period(p_period, c.started_at) as period_start, c.provider,
           c.requested_model as model, c.error_class, c.latency_ms, c.input_tokens, c.output_tokens,
           c.cached_input_tokens, c.cost_usd, c.usage_missing,
           coalesce(c.error_class not in ('cooldown', 'budget'), true) as made
      from ballast_private.model_calls c
     where c.started_at >= v_from),
  by_class as (
    select c.period_start, c.provider, c.model, jsonb_object_agg(c.error_class, c.n order by c.error_class) as classes
      from (select c.period_start, c.provider, c.model, c.error_class, count(*) as n
              from c where c.error_class is not null group by 1, 2, 3, 4) c
     group by 1, 2, 3)
  select c.period_start, c.provider, c.model,
         count(*) filter (where c.made),
         count(*) filter (where c.made and c.error_class is not null),
         round((count(*) filter (where c.made and c.error_class is not null))::numeric
               / nullif(count(*) filter (where c.made), 0), 4),
         coalesce(b.classes, '{}'::jsonb),
         count(*) filter (where not c.made),
         round((percentile_cont(0.5) within group (order by c.latency_ms) filter (where c.made))::numeric, 1),
         round((percentile_cont(0.95) within group (order by c.latency_ms) filter (where c.made))::numeric, 1),
         coalesce(sum(c.input_tokens), 0)::bigint, coalesce(sum(c.output_tokens), 0)::bigint,
         coalesce(sum(c.cached_input_tokens), 0)::bigint, coalesce(sum(c.cost_usd), 0),
         count(*) filter (where c.made and c.cost_usd is null),
         count(*) filter (where c.made and c.usage_missing)
    from c
    left join by_class b on (b.period_start, b.provider, b.model) = (c.period_start, c.provider, c.model)
   group by c.period_start, c.provider, c.model, b.classes
   order by c.period_start, c.provider, c.model;
end
$fn$;
revoke execute on function ballast.report_models(interval, text) from public;
grant execute on function ballast.report_models(interval, text) to ballast_client, ballast_operator, ballast_reporter;

-- Down Migration
