-- report_models.sql: provider calls per model over a window (calls, errors by class, latency p50/p95, tokens, cost),
-- then the quality score per day by prompt version and model (a falling average is drift). Reads
-- ballast.report_models and ballast.report_quality (a client sees its own tenant only).
--
-- Variables:
--   since          how far back for calls (optional; default '24 hours')
--   period         minute, hour, day, week or month (optional; default hour)
--   quality_since  how far back for quality, per day (optional; default '30 days')
--
-- Examples:
--   psql "$DATABASE_URL" -f sql/report_models.sql
--   psql "$DATABASE_URL" -v since='7 days' -v period=day -f sql/report_models.sql
\set ON_ERROR_STOP on
\pset null '-'
\if :{?since}
\else
  \set since '24 hours'
\endif
\if :{?period}
\else
  \set period hour
\endif
\if :{?quality_since}
\else
  \set quality_since '30 days'
\endif

\echo '== model calls in the last' :since 'by' :period
select r.period_start, r.provider || ':' || r.model as model, r.calls, r.errors, round(100 * r.error_rate, 1) as "error %",
       r.errors_by_class, r.not_made, r.latency_p50_ms as p50_ms, r.latency_p95_ms as p95_ms,
       r.input_tokens as tokens_in, r.output_tokens as tokens_out, r.cached_input_tokens as cached_in,
       round(r.cost_usd, 4) as cost_usd, r.unpriced, r.usage_missing
  from ballast.report_models(:'since'::interval, :'period') r
 order by r.period_start, r.provider, r.model;

\echo '== quality score per day in the last' :quality_since
select r.period_start::date as day, r.prompt_name || '@' || r.prompt_version as prompt, r.provider || ':' || r.model as model,
       r.scored_calls, r.avg_score, r.min_score, r.max_score, r.below_threshold
  from ballast.report_quality(:'quality_since'::interval, 'day') r
 order by r.prompt_name, r.prompt_version, r.provider, r.model, r.period_start;
