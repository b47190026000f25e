-- dead_letters.sql: the steps that failed for good (ballast.dead_letters), newest first, with their last error and
-- how each attempt ended; then a count by pipeline, step and error class. Read-only. Replay them with
-- sql/requeue_dead_letters.sql.
--
-- Variables (all optional):
--   pipeline     only this pipeline
--   error_class  only this error class (e.g. transport, client, schema, timeout, worker_lost)
--   since        failed within (default '7 days')
--   limit        at most this many rows listed (default 50)
--
-- Examples:
--   psql "$DATABASE_URL" -f sql/dead_letters.sql
--   psql "$DATABASE_URL" -v pipeline=demo.triage -v error_class=transport -v since='1 day' -f sql/dead_letters.sql
\set ON_ERROR_STOP on
\pset null '-'
\if :{?pipeline}
\else
  \set pipeline ''
\endif
\if :{?error_class}
\else
  \set error_class ''
\endif
\if :{?since}
\else
  \set since '7 days'
\endif
\if :{?limit}
\else
  \set limit 50
\endif

\echo '== dead letters, failed in the last' :since
select d.failed_at, d.job_id, d.step_id, d.pipeline || '@' || d.pipeline_version as pipeline, d.step_name,
       d.tenant_id, d.attempts || '/' || d.max_attempts as attempts, d.error_class, d.error_code,
       left(d.error_message, 120) as error_message, d.error_retryable as retryable, d.job_status,
       (select string_agg(a ->> 'number' || ':' || (a ->> 'outcome') || coalesce('(' || (a ->> 'error_class') || ')', ''), ' ')
          from jsonb_array_elements(d.attempt_errors) a) as attempt_outcomes,
       case when d.is_map_step then 'replay its items' when d.pruned_at is not null then 'pruned' end as note
  from ballast.dead_letters d
 where d.failed_at >= ballast.now() - :'since'::interval
   and (nullif(:'pipeline', '') is null or d.pipeline = :'pipeline')
   and (nullif(:'error_class', '') is null or d.error_class = :'error_class')
 order by d.failed_at desc, d.step_id desc
 limit :'limit'::int;

\echo '== by pipeline, step and error class'
select d.pipeline, d.step_name, d.error_class, count(*) as dead, min(d.failed_at) as first, max(d.failed_at) as last
  from ballast.dead_letters d
 where d.failed_at >= ballast.now() - :'since'::interval
   and (nullif(:'pipeline', '') is null or d.pipeline = :'pipeline')
   and (nullif(:'error_class', '') is null or d.error_class = :'error_class')
 group by 1, 2, 3
 order by count(*) desc, 1, 2, 3;
