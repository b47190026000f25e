-- Up Migration
--
-- 0014: one NOTIFY per statement that appends events, carrying ids only (issue 11, item 3).
--
-- Until now a row trigger (notify_event, 0003 and 0010) sent one NOTIFY ballast_events per event, and its payload
-- named the tenant, the step and the time. Two problems:
--   - Any Postgres login may LISTEN on any channel: there are no privileges on channels. A payload is therefore
--     public to the whole cluster, and a tenant's ids, step names and progress values leaked to every other tenant
--     (and to any role at all). Ids alone say nothing a reader could not be told anyway; the rows behind them are
--     read under the reader's own role, so row-level security (0010) decides what each reader sees.
--   - One NOTIFY per event costs a statement per event, and every notifying transaction takes the cluster-wide lock
--     that orders notifying commits: more notifications, more serialised commits.
--
-- The payload contract of channel ballast_events, from this migration on:
--   {"ids":[3,4,5]}                          the ids of the events one INSERT statement appended, ascending, as
--                                            long as the payload stays under 7,500 bytes (NOTIFY's limit: 8,000);
--   {"min_id":3,"max_id":2900,"count":1800}  otherwise: the statement's events lie within [min_id, max_id], and
--                                            there are count of them. The range may also hold ids of other
--                                            transactions (an identity is allocated before commit); those are
--                                            announced by their own transactions' notifications, so a reader of a
--                                            range drops the ids it has already delivered;
--   {"progress":{"job_id":7,"step_id":9}}    ballast.report_progress stored a new progress value on that step; read
--                                            it from ballast.steps.progress (not an event: it has no id).
-- Nothing else: no tenant, no step name, no status, no progress value. A reader resolves a notification with one
-- query (select ... from ballast.events where id = any(ids), or where id between min_id and max_id), under its own
-- role. Notifications arrive in commit order, only for committed transactions, at most one per statement (and
-- Postgres folds identical payloads within a transaction into one).
--
-- Why per statement, not per transaction: a statement-level trigger with a transition table sees exactly the rows
-- its statement inserted, and needs no state kept across statements. With the statement-level triggers on steps and
-- jobs (0013), one statement appends the events of many rows, so one notification covers them.

drop trigger if exists notify_event on ballast_private.events;
drop function if exists ballast_private.notify_event();

-- notify_events: AFTER INSERT ... FOR EACH STATEMENT on events. Takes the statement's new rows (transition table
-- new_events); sends one pg_notify('ballast_events', ...) with their ids, or with their id range and count when the
-- list would not fit in 7,500 bytes (the length is bounded before the list is built: count * (digits of the largest
-- id + 1)). Sends nothing for a statement that inserted no row. Raises nothing of its own; takes no lock beyond
-- NOTIFY's own (taken at commit).
create function ballast_private.notify_events() returns trigger
language plpgsql
as $fn$
declare
  v_min bigint;
  v_max bigint;
  v_count bigint;
  v_payload text;
begin
  select min(e.id), max(e.id), count(*) into v_min, v_max, v_count from new_events e;
  if v_count = 0 then
    return null;
  end if;
  -- Inside a worker's batch (0013's settle_and_claim sets ballast.collect_events), the ids are collected and the
  -- batch sends one notification at its end (ballast_private.flush_events_notice, 0013): one per transaction, not one per
  -- statement.
  if current_setting('ballast.collect_events', true) = 'on' then
    perform set_config('ballast.batch_event_ids',
      coalesce(nullif(current_setting('ballast.batch_event_ids', true), '') || ',', '')
        || (select string_agg(e.id::text, ',' order by e.id) from new_events e), true);
    return null;
  end if;
  if v_count * (length(v_max::text) + 1) + 10 <= 7500 then
    select '{"ids":[' || string_agg(e.id::text, ',' order by e.id) || ']}' into v_payload from new_events e;
  else
    v_payload := json_build_object('min_id', v_min, 'max_id', v_max, 'count', v_count)::text;
  end if;
  perform pg_notify('ballast_events', v_payload);
  return null;
end
$fn$;

create trigger notify_events
  after insert on ballast_private.events
  referencing new table as new_events
  for each statement execute function ballast_private.notify_events();

-- report_progress(attempt_id, progress) (0005) again: stores the step's latest progress (any JSON) and NOTIFYs
-- ballast_events with {"progress":{"job_id":..,"step_id":..}}: ids only, the value stays in ballast.steps.progress
-- (readers fetch it under their role; a value of any size fits). Not stored as an event: progress may be frequent.
-- Returns false, changing nothing, when the attempt is no longer running. Raises nothing of its own; locks the step
-- row (the update) and nothing else.
create or replace function ballast.report_progress(p_attempt_id bigint, p_progress jsonb) returns boolean
language plpgsql
as $fn$
declare
  v_step_id bigint;
  v_job_id bigint;
begin
  update ballast_private.steps s set progress = p_progress
    from ballast_private.attempts a
   where a.id = p_attempt_id and a.outcome = 'running' and s.id = a.step_id and s.status = 'running'
     and s.attempts = a.number
  returning s.id, s.job_id into v_step_id, v_job_id;
  if v_step_id is null then
    return false;
  end if;
  perform pg_notify('ballast_events',
    json_build_object('progress', json_build_object('job_id', v_job_id, 'step_id', v_step_id))::text);
  return true;
end
$fn$;

