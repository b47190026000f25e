-- stuck.sql: work that should have moved and has not (ballast.report_stuck), oldest first: waits past their deadline
-- and expired leases (no reaper ran: is any worker alive?), overdue retries and steps queued too long (no worker for
-- the pipeline version, no free slot, or a full concurrency group). Then the workers and their last heartbeat
-- (operators and reporters), and the oldest open transactions (a long one holds vacuum back and slows the queue).
-- Read-only.
--
-- Variables (optional):
--   queued_for  a queued step is stuck after this long (default '5 minutes')
--   overdue_by  a deadline, lease or retry is stuck this long after it passed (default '1 minute')
--
-- Examples:
--   psql "$DATABASE_URL" -f sql/stuck.sql
--   psql "$DATABASE_URL" -v queued_for='30 seconds' -v overdue_by='10 seconds' -f sql/stuck.sql
\set ON_ERROR_STOP on
\pset null '-'
\if :{?queued_for}
\else
  \set queued_for '5 minutes'
\endif
\if :{?overdue_by}
\else
  \set overdue_by '1 minute'
\endif

\echo '== stuck work (queued for more than' :queued_for', overdue by more than' :overdue_by')'
select s.kind, s.since, date_trunc('second', s.overdue) as overdue, s.job_id, s.step_id,
       s.pipeline || '@' || s.pipeline_version as pipeline, s.step_name, s.tenant_id, s.detail
  from ballast.report_stuck(:'queued_for'::interval, :'overdue_by'::interval) s;

\echo '== workers'
select w.id, w.hostname, w.pid, w.concurrency, w.heartbeat_at,
       date_trunc('second', ballast.now() - w.heartbeat_at) as silent_for, w.stopped_at
  from ballast.workers w
 where w.stopped_at is null or w.stopped_at > ballast.now() - interval '1 hour'
 order by w.stopped_at nulls first, w.heartbeat_at desc;

\echo '== oldest open transactions (a long one slows the queue: end it, or fix its client)'
select t.pid, t.role, t.application_name, t.state, t.open_for, t.xmin_age, t.query
  from ballast.oldest_transactions t
 limit 5;
