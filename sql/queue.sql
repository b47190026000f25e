-- queue.sql: queue depth and age by pipeline (ballast.queue_depth): live steps by status, and how long the oldest
-- runnable one (queued, or retrying and due) has waited; then the oldest runnable steps themselves. Read-only (a
-- client sees its own tenant only).
--
-- Variables (optional):
--   limit  how many of the oldest runnable steps to list (default 10)
--
-- Example:
--   psql "$DATABASE_URL" -f sql/queue.sql
\set ON_ERROR_STOP on
\pset null '-'
\if :{?limit}
\else
  \set limit 10
\endif

\echo '== queue by pipeline'
select q.pipeline, q.queued, q.retrying_due, q.retrying_later, q.running, q.waiting, q.needs_review,
       q.oldest_runnable_since, date_trunc('second', q.oldest_wait) as oldest_wait
  from ballast.queue_depth q
 order by q.oldest_wait desc nulls last, q.pipeline;

\echo '== oldest runnable steps'
select coalesce(s.next_run_at, s.queued_at) as runnable_since, s.job_id, s.id as step_id,
       j.pipeline || '@' || j.pipeline_version as pipeline, s.name, s.status, s.attempts, s.concurrency_key
  from ballast.steps s join ballast.jobs j on j.id = s.job_id
 where s.status = 'queued' or (s.status = 'retrying' and s.next_run_at <= ballast.now())
 order by coalesce(s.next_run_at, s.queued_at), s.id
 limit :'limit'::int;
