-- Up Migration
--
-- 0003: the state machines, the audit trail and the job-status derivation.
--
-- Why triggers: every path that changes a status (ballast's functions, an operator's UPDATE in psql, a future
-- migration) goes through the same checks. A status change not listed in ballast_private.step_transitions /
-- job_transitions raises BA001, and so does a replay edge (via_replay: a finished step or job running again)
-- outside ballast.replay_step / replay_job (0007), which set the transaction-local setting ballast.replay = on.
-- Every accepted change appends an event, and every event NOTIFYs `ballast_events` with a small JSON payload (id,
-- job_id, step_id, type, status) for live consumers. Events cannot be updated, deleted or truncated.
--
-- Actor and reason of an event come from the transaction-local settings `ballast.actor` and `ballast.reason`, which
-- the ballast functions set (set_config(..., true)) before they change anything.

-- step_status_guard: BEFORE UPDATE on steps when the status changes; stamps updated_at.
-- Raises BA001 (invalid_transition) for an edge not in ballast_private.step_transitions, and for a replay edge
-- (via_replay) outside a replay (the setting ballast.replay not 'on'). The message names the step and both
-- statuses; the hint lists the ordinary statuses allowed from the old one (and, for a replay edge, points to
-- ballast.replay_step).
create function ballast_private.step_status_guard() returns trigger
language plpgsql
as $fn$
declare
  v_via_replay boolean;
  v_allowed text;
begin
  select via_replay into v_via_replay from ballast_private.step_transitions
   where from_status = old.status and to_status = new.status;
  if not found or (v_via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on') then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)')
      into v_allowed
      from ballast_private.step_transitions where from_status = old.status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('step %s ("%s" of job %s) cannot go from %s to %s', old.id, old.name, old.job_id,
                       old.status, new.status),
      hint = format('From %s a step may go to: %s%s.', old.status, v_allowed,
                    case when v_via_replay then '; running it again takes ballast.replay_step' else '' end);
  end if;
  new.updated_at := ballast.now();
  return new;
end
$fn$;

create trigger step_status_guard
  before update of status on ballast_private.steps
  for each row when (old.status is distinct from new.status)
  execute function ballast_private.step_status_guard();

-- job_status_guard: the same for jobs (a replay edge points to ballast.replay_job).
create function ballast_private.job_status_guard() returns trigger
language plpgsql
as $fn$
declare
  v_via_replay boolean;
  v_allowed text;
begin
  select via_replay into v_via_replay from ballast_private.job_transitions
   where from_status = old.status and to_status = new.status;
  if not found or (v_via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on') then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)')
      into v_allowed
      from ballast_private.job_transitions where from_status = old.status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('job %s cannot go from %s to %s', old.id, old.status, new.status),
      hint = format('From %s a job may go to: %s%s.', old.status, v_allowed,
                    case when v_via_replay then '; running it again takes ballast.replay_job' else '' end);
  end if;
  new.updated_at := ballast.now();
  return new;
end
$fn$;

create trigger job_status_guard
  before update of status on ballast_private.jobs
  for each row when (old.status is distinct from new.status)
  execute function ballast_private.job_status_guard();

-- record_step_event / record_job_event: AFTER triggers that append the audit event of a status change.
create function ballast_private.record_step_event() returns trigger
language plpgsql
as $fn$
begin
  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data)
  values (new.job_id, new.id, 'step_' || new.status, new.status,
          coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
          nullif(current_setting('ballast.reason', true), ''),
          case
            when new.status = 'running' then jsonb_build_object('attempt', new.attempts)
            when new.status = 'retrying' then jsonb_build_object('attempt', new.attempts, 'next_run_at', new.next_run_at,
                                                                  'error', new.error)
            when new.status = 'failed' then jsonb_build_object('attempt', new.attempts, 'error', new.error)
            else null
          end);
  return null;
end
$fn$;

create trigger record_step_event
  after update of status on ballast_private.steps
  for each row when (old.status is distinct from new.status)
  execute function ballast_private.record_step_event();

create function ballast_private.record_job_event() returns trigger
language plpgsql
as $fn$
begin
  insert into ballast_private.events (job_id, type, status, actor, reason, data)
  values (new.id,
          case when tg_op = 'INSERT' then 'job_submitted' else 'job_' || new.status end,
          new.status,
          coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
          nullif(current_setting('ballast.reason', true), ''),
          case
            when tg_op = 'INSERT' then jsonb_build_object('pipeline', new.pipeline, 'version', new.pipeline_version,
                                                          'tenant_id', new.tenant_id, 'priority', new.priority)
            when new.status = 'failed' then jsonb_build_object('error', new.error)
            else null
          end);
  return null;
end
$fn$;

create trigger record_job_submitted
  after insert on ballast_private.jobs
  for each row execute function ballast_private.record_job_event();

create trigger record_job_event
  after update of status on ballast_private.jobs
  for each row when (old.status is distinct from new.status)
  execute function ballast_private.record_job_event();

-- events_append_only: refuses UPDATE and DELETE row by row, and TRUNCATE, with BA009.
create function ballast_private.events_append_only() returns trigger
language plpgsql
as $fn$
begin
  raise exception using
    errcode = 'BA009',
    message = format('ballast events are append-only: %s is not allowed', lower(tg_op)),
    hint = 'The audit trail keeps every event; record a correction as a new event instead.';
end
$fn$;

create trigger events_append_only
  before update or delete on ballast_private.events
  for each row execute function ballast_private.events_append_only();

create trigger events_no_truncate
  before truncate on ballast_private.events
  for each statement execute function ballast_private.events_append_only();

-- notify_event: every event is announced on channel ballast_events. The payload carries the new status so a
-- listener need not re-read the row (and stays far below NOTIFY's 8000-byte limit).
create function ballast_private.notify_event() returns trigger
language plpgsql
as $fn$
begin
  perform pg_notify('ballast_events', json_build_object(
    'id', new.id, 'job_id', new.job_id, 'step_id', new.step_id, 'type', new.type, 'status', new.status)::text);
  return null;
end
$fn$;

create trigger notify_event
  after insert on ballast_private.events
  for each row execute function ballast_private.notify_event();

-- refresh_job_status(p_job_id): derives the job's status from its steps and writes it (with result, error and
-- timestamps) when it changed. Returns the job's status. Raises BA007 for an unknown job.
-- Locks the job row (no key update) first, then reads the steps: two transactions finishing sibling steps at once
-- serialise on the job row, and the second one (read committed: a new snapshot per statement) counts the first
-- one's change. Reading before locking would let the second writer store a status computed from a stale count.
-- For no key update, not for update: inserting an event or an attempt of this job took a key-share lock on the job
-- row (foreign key check) earlier in the same transaction, in each of two sibling claims; two FOR UPDATE requests
-- would then wait on each other's key-share lock (a deadlock seen with fan-out steps). NO KEY UPDATE does not
-- conflict with KEY SHARE, yet still serialises the two derivations.
-- Items of map steps (parent_step_id set, 0008) count through their map step: a failed, cancelled or skipped item
-- does not fail or cancel the job by itself (its map step fails when it cannot accept it), items are never final
-- steps for the result, and a map step waiting for its items (wait_key 'ballast:items:<id>') is not a job waiting
-- for an event.
-- Derivation, first match wins:
--   every step final  -> cancelled if any step other than an item cancelled, failed if any step other than an
--                        item failed, partially_completed if an item failed, was cancelled or skipped (its map step
--                        accepted it), else completed
--   any running       -> running
--   any needs_review  -> needs_review;  any waiting (not for items) -> waiting;  any retrying -> retrying
--   otherwise (queued/pending only) -> queued until some step has started, then running
-- result: when completed or partially completed, the output of the pipeline's final step (a step nothing depends
-- on, not an item); with several final steps an object of their outputs keyed by step name. error: when failed,
-- the error of the first step (not an item) that failed, with its name and id. Otherwise both are null, so a job
-- that leaves completed or failed (a replay) drops its stale result or error.
create function ballast_private.refresh_job_status(p_job_id bigint) returns text
language plpgsql
as $fn$
declare
  v_job ballast_private.jobs;
  v_total int; v_final int; v_running int; v_review int; v_waiting int; v_retrying int;
  v_failed int; v_cancelled int; v_started int; v_item_failed int;
  v_status text;
  v_now timestamptz := ballast.now();
begin
  -- for no key update: see 0003 (two sibling claims each hold a key-share lock on the job from their foreign keys).
  select * into v_job from ballast_private.jobs where id = p_job_id for no key update;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;

  select count(*),
         count(*) filter (where status in ('succeeded', 'failed', 'cancelled', 'skipped')),
         count(*) filter (where status = 'running'),
         count(*) filter (where status = 'needs_review'),
         count(*) filter (where status = 'waiting' and wait_key not like 'ballast:items:%'),
         count(*) filter (where status = 'retrying'),
         count(*) filter (where status = 'failed' and parent_step_id is null),
         count(*) filter (where status = 'cancelled' and parent_step_id is null),
         count(*) filter (where attempts > 0),
         count(*) filter (where status in ('failed', 'cancelled', 'skipped') and parent_step_id is not null)
    into v_total, v_final, v_running, v_review, v_waiting, v_retrying, v_failed, v_cancelled, v_started,
         v_item_failed
    from ballast_private.steps where job_id = p_job_id;

  v_status := case
    when v_final = v_total and v_cancelled > 0 then 'cancelled'
    when v_final = v_total and v_failed > 0 then 'failed'
    when v_final = v_total and v_item_failed > 0 then 'partially_completed'
    when v_final = v_total then 'completed'
    when v_running > 0 then 'running'
    when v_review > 0 then 'needs_review'
    when v_waiting > 0 then 'waiting'
    when v_retrying > 0 then 'retrying'
    when v_started > 0 then 'running'
    else 'queued'
  end;

  if v_status = v_job.status then
    return v_status;
  end if;

  update ballast_private.jobs j
     set status = v_status,
         started_at = coalesce(j.started_at, case when v_status <> 'queued' then v_now end),
         finished_at = case when v_status in ('completed', 'partially_completed', 'failed', 'cancelled')
                            then v_now end,
         result = case when v_status in ('completed', 'partially_completed') then (
                    select case when count(*) = 1 then (array_agg(s.output))[1]
                                else jsonb_object_agg(s.name, s.output) end
                      from ballast_private.steps s
                     where s.job_id = p_job_id and s.parent_step_id is null
                       and not exists (select 1 from ballast_private.steps d
                                        where d.job_id = p_job_id and s.name = any(d.depends_on)))
                  end,
         error = case when v_status = 'failed' then (
                   select jsonb_build_object('step', s.name, 'step_id', s.id) || coalesce(s.error, '{}')
                     from ballast_private.steps s
                    where s.job_id = p_job_id and s.status = 'failed' and s.parent_step_id is null
                    order by s.finished_at, s.id limit 1)
                 end
   where j.id = p_job_id;
  return v_status;
end
$fn$;
