-- report_pipelines.sql: how pipelines and their steps did over a window: jobs by outcome, success, retry, fallback,
-- first-pass, degraded and review rates, queue wait and run time p50/p95, cost. Jobs count in the period they were
-- submitted in (UTC). Reads ballast.report_pipelines and ballast.report_steps (a client sees its own tenant only).
--
-- Variables:
--   since     how far back (optional; default '24 hours')
--   period    minute, hour, day, week or month (optional; default hour)
--   pipeline  only this pipeline (optional)
--
-- Examples:
--   psql "$DATABASE_URL" -f sql/report_pipelines.sql
--   psql "$DATABASE_URL" -v since='7 days' -v period=day -v pipeline=demo.triage -f sql/report_pipelines.sql
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
\if :{?pipeline}
\else
  \set pipeline ''
\endif

\echo '== pipelines, jobs submitted in the last' :since 'by' :period
select r.period_start, r.pipeline || '@' || r.pipeline_version as pipeline, r.jobs, r.completed, r.failed,
       r.partially_completed as partial, r.cancelled, r.unfinished,
       round(100 * r.success_rate, 1) as "success %", round(100 * r.retry_rate, 1) as "retry %",
       r.model_attempts as model_att, round(100 * r.first_pass_rate, 1) as "1st pass %",
       round(100 * r.fallback_rate, 1) as "fallback %", round(100 * r.degraded_rate, 1) as "degraded %",
       round(100 * r.review_rate, 1) as "review %", r.queue_wait_p50_ms as wait_p50, r.queue_wait_p95_ms as wait_p95,
       r.run_p50_ms as run_p50, r.run_p95_ms as run_p95, r.duration_p50_ms as job_p50, r.duration_p95_ms as job_p95,
       round(r.cost_usd, 4) as cost_usd, r.input_tokens as tokens_in, r.output_tokens as tokens_out
  from ballast.report_pipelines(:'since'::interval, :'period') r
 where nullif(:'pipeline', '') is null or r.pipeline = :'pipeline'
 order by r.period_start, r.pipeline, r.pipeline_version;

\echo '== steps (items of a map step under its name, item = t)'
select r.period_start, r.pipeline || '@' || r.pipeline_version as pipeline, r.step_name as step, r.is_item as item,
       r.steps, r.succeeded, r.failed, r.skipped, r.cancelled, r.unfinished, r.attempts,
       round(100 * r.success_rate, 1) as "success %", round(100 * r.retry_rate, 1) as "retry %",
       round(100 * r.first_pass_rate, 1) as "1st pass %", round(100 * r.fallback_rate, 1) as "fallback %",
       r.queue_wait_p50_ms as wait_p50, r.queue_wait_p95_ms as wait_p95, r.run_p50_ms as run_p50,
       r.run_p95_ms as run_p95, round(r.cost_usd, 4) as cost_usd
  from ballast.report_steps(:'since'::interval, :'period') r
 where nullif(:'pipeline', '') is null or r.pipeline = :'pipeline'
 order by r.period_start, r.pipeline, r.pipeline_version, r.step_name, r.is_item;
