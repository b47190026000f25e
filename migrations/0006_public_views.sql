-- Up Migration
--
-- 0006: the public read surface, and INSERT INTO ballast.jobs for other systems.
--
-- Views in schema ballast over the private tables. They are what psql users, reports and (later) GraphQL read;
-- the tables behind them may change shape without breaking those readers. security_invoker: row-level security on
-- the tables (tenants) applies to whoever reads the view. (ballast.step_items, the items of map steps, is in 0008.)
--
-- ballast.jobs also accepts INSERT: a system that can only write rows does
--   insert into ballast.jobs (pipeline, input, idempotency_key) values ('demo.wordstats', '{"text": "hi"}', 'k-1')
-- and gets exactly what ballast.submit_job does (validation, idempotency, steps, wake-ups) in its own transaction;
-- RETURNING shows the job, the existing one when the key was used before with the same request. UPDATE and DELETE
-- through the views are refused (BA009): status changes go through the functions.

create view ballast.pipelines with (security_invoker = true) as
select name, version, definition, input_schema, definition_hash, registered_at
  from ballast_private.pipelines;

create view ballast.jobs with (security_invoker = true) as
select id, tenant_id, pipeline, pipeline_version, idempotency_key, input, status, priority, result, error,
       created_at, started_at, finished_at, updated_at
  from ballast_private.jobs;

create view ballast.steps with (security_invoker = true) as
select id, job_id, name, status, depends_on, attempts, max_attempts, output, error, progress, next_run_at,
       concurrency_key, concurrency_limit, timeout_ms, created_at, queued_at, started_at, finished_at, updated_at,
       attempt_offset, wait_key, wait_deadline, wait_on_timeout
  from ballast_private.steps;

create view ballast.attempts with (security_invoker = true) as
select id, step_id, job_id, number, worker_id, outcome, started_at, lease_expires_at, finished_at,
       error_class, error_code, error_message, error_retryable,
       extract(epoch from (finished_at - started_at)) * 1000 as duration_ms
  from ballast_private.attempts;

create view ballast.events with (security_invoker = true) as
select id, job_id, step_id, attempt_id, type, status, actor, reason, data, at
  from ballast_private.events;

create view ballast.workers with (security_invoker = true) as
select id, pool_id, hostname, pid, concurrency, pipelines, started_at, heartbeat_at, stopped_at
  from ballast_private.workers;

create view ballast.error_codes with (security_invoker = true) as
select sqlstate, name, meaning from ballast_private.error_codes;

create view ballast.step_transitions with (security_invoker = true) as
select from_status, to_status, why, via_replay from ballast_private.step_transitions;

create view ballast.job_transitions with (security_invoker = true) as
select from_status, to_status, via_replay from ballast_private.job_transitions;

-- Signals received by ballast.send_event, and the side-effect ledger (one row per recorded effect of a step).
create view ballast.signals with (security_invoker = true) as
select key, payload, actor, received_at from ballast_private.signals;

create view ballast.effects with (security_invoker = true) as
select e.step_id, s.job_id, e.key, e.attempt_id, e.result, e.created_at
  from ballast_private.effects e join ballast_private.steps s on s.id = e.step_id;

-- Dead letters: steps that failed for good, with their last error. The set an operator replays from.
create view ballast.dead_letters with (security_invoker = true) as
select s.id as step_id, s.job_id, j.tenant_id, j.pipeline, j.pipeline_version, s.name as step_name, s.attempts,
       s.max_attempts, s.error ->> 'class' as error_class, s.error ->> 'code' as error_code,
       s.error ->> 'message' as error_message, s.finished_at as failed_at
  from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
 where s.status = 'failed';

-- insert_job(): INSTEAD OF INSERT on ballast.jobs. Reads pipeline, input, idempotency_key, tenant_id, priority and
-- pipeline_version from the new row (other columns are ignored), submits, and returns the job as stored.
create function ballast_private.insert_job() returns trigger
language plpgsql
as $fn$
declare
  v_job_id bigint;
begin
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql_insert', true);
  end if;
  select s.job_id into v_job_id
    from ballast_private.submit(new.pipeline, coalesce(new.input, '{}'::jsonb), new.idempotency_key,
                                coalesce(new.tenant_id, 'default'), coalesce(new.priority, 0),
                                new.pipeline_version) s;
  select j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.idempotency_key, j.input, j.status, j.priority,
         j.result, j.error, j.created_at, j.started_at, j.finished_at, j.updated_at
    into new.id, new.tenant_id, new.pipeline, new.pipeline_version, new.idempotency_key, new.input, new.status,
         new.priority, new.result, new.error, new.created_at, new.started_at, new.finished_at, new.updated_at
    from ballast_private.jobs j where j.id = v_job_id;
  return new;
end
$fn$;

create trigger insert_job
  instead of insert on ballast.jobs
  for each row execute function ballast_private.insert_job();

-- refuse_view_write(): INSTEAD OF UPDATE/DELETE on the views.
create function ballast_private.refuse_view_write() returns trigger
language plpgsql
as $fn$
begin
  raise exception using
    errcode = 'BA009',
    message = format('ballast.%s is read-only: %s is not allowed', tg_table_name, lower(tg_op)),
    hint = 'Change state through the ballast functions (submit_job, claim_step, complete_step, fail_step, ...).';
end
$fn$;

create trigger refuse_write instead of update or delete on ballast.jobs
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.steps
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.attempts
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.events
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.pipelines
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.workers
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.effects
  for each row execute function ballast_private.refuse_view_write();
-- These four are simple views, so without a trigger Postgres would write through them into their tables: an INSERT
-- into ballast.step_transitions would add an edge to the state machine, one into ballast.signals would store a signal
-- without resuming the steps waiting for it.
create trigger refuse_write instead of insert or update or delete on ballast.error_codes
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.step_transitions
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.job_transitions
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.signals
  for each row execute function ballast_private.refuse_view_write();
