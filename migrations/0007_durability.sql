-- Up Migration
--
-- 0007: durability under faults: worker liveness and crash recovery, graceful release, timeouts, cancellation,
-- waiting for external events, the side-effect ledger, and audited replay.
--
-- Liveness. Each worker process holds a session advisory lock (namespace 1650551916, 'ball', key hashtext(worker
-- id)) on a dedicated connection and heartbeats through ballast.heartbeat_worker, which also extends the leases of
-- its running attempts. A SIGKILLed process loses its connection, so its lock disappears at once; ballast.reap, run
-- every second by every live worker, declares a worker dead when its lock is gone and its heartbeat is older than
-- 2 s, or when its heartbeat is older than 10 s whatever the lock says (machine gone, network cut). A dead worker's
-- running attempts become `crashed` (retryable, counted), its graphile-worker jobs are unlocked
-- (force_unlock_workers), and the steps are retried. A lease that expires (a worker alive but stuck) is reclaimed
-- the same way. Recovery time is therefore about lost_after + one reaper period + the retry backoff.
--
-- Attempts charged: steps.attempts counts every claim; steps.attempt_offset counts the claims that are not charged
-- against max_attempts (released at shutdown, parked waiting for an event, or made before a replay). The retry
-- decision uses attempts - attempt_offset.
--
-- Replay edges of the state machines (a finished step or job running again) are allowed only inside
-- ballast.replay_step / replay_job, which set the transaction-local setting ballast.replay = on.

insert into ballast_private.error_codes (sqlstate, name, meaning) values
  ('BA010', 'job_finished', 'The job already finished (completed, failed or partially completed); it cannot be cancelled.'),
  ('BA011', 'step_busy', 'The step is not finished (queued, running, retrying, waiting or in review); it cannot be replayed now.');

alter table ballast_private.steps
  add column attempt_offset integer not null default 0,
  add column wait_key text,
  add column wait_deadline timestamptz,
  add column wait_on_timeout text,
  add constraint step_attempt_offset_range check (attempt_offset >= 0 and attempt_offset <= attempts),
  add constraint step_wait_on_timeout_known check (wait_on_timeout in ('fail', 'retry')),
  add constraint step_waiting_has_key check (status <> 'waiting' or wait_key is not null),
  drop constraint step_attempts_within_max,
  add constraint step_attempts_within_max check (attempts - attempt_offset <= max_attempts);

create index steps_waiting_key_idx on ballast_private.steps (wait_key) where status = 'waiting';
create index steps_waiting_deadline_idx on ballast_private.steps (wait_deadline) where status = 'waiting';

alter table ballast_private.attempts
  drop constraint attempt_outcome_known,
  add constraint attempt_outcome_known check (outcome in ('running', 'succeeded', 'failed', 'crashed', 'timed_out',
                                                          'cancelled', 'released', 'parked')),
  drop constraint attempt_error_when_failed,
  add constraint attempt_error_when_failed check (
    outcome in ('running', 'succeeded', 'parked') or (error_class is not null and error_message is not null));

-- Signals received by ballast.send_event, keyed: a second send of the same key is a no-op. A step that starts
-- waiting for a key already received gets the payload at once.
create table ballast_private.signals (
  key text primary key
    constraint signal_key_format check (key <> '' and length(key) <= 500),
  payload jsonb,
  actor text not null default 'system',
  received_at timestamptz not null default ballast.now()
);

alter table ballast_private.step_transitions add column via_replay boolean not null default false;
alter table ballast_private.job_transitions add column via_replay boolean not null default false;

insert into ballast_private.step_transitions (from_status, to_status, why, via_replay) values
  ('succeeded', 'queued', 'an operator replayed it', true),
  ('failed', 'queued', 'an operator replayed it', true),
  ('cancelled', 'queued', 'an operator replayed it', true),
  ('succeeded', 'pending', 'a step it depends on was replayed', true),
  ('failed', 'pending', 'a step it depends on was replayed', true),
  ('cancelled', 'pending', 'a step it depends on was replayed', true),
  ('skipped', 'pending', 'a step it depends on was replayed', true),
  ('running', 'retrying', 'released at shutdown, crashed or timed out (also a plain retryable failure)', false),
  ('waiting', 'retrying', 'the deadline passed and the step retries', false)
on conflict (from_status, to_status) do nothing;

insert into ballast_private.job_transitions (from_status, to_status, via_replay)
select f, t, true
  from unnest(array['completed', 'partially_completed', 'failed', 'cancelled']) as f,
       unnest(array['running', 'queued']) as t;

-- Guards again, now aware of replay edges.
-- step_status_guard / job_status_guard: raise BA001 for an edge not in the table, and for a replay edge outside a
-- replay (ballast.replay not 'on').
create or replace function ballast_private.step_status_guard() returns trigger
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

create or replace function ballast_private.job_status_guard() returns trigger
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

-- refresh_job_status: as in 0003, but a job that leaves completed/failed (replay) also drops its stale result/error,
-- and items of map steps (0008) count through their map step: a failed item that its map step accepted makes the job
-- 'partially_completed' instead of 'failed'; items are not final steps (result) and a map step waiting for its items
-- is not a job waiting for an event.
create or replace function ballast_private.refresh_job_status(p_job_id bigint) returns text
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

-- settle_failure(step, error, retryable, retry_after_ms, now): the decision after an attempt ended badly (failed,
-- crashed, timed out, released). The caller has locked the step row and closed the attempt. Retryable with charged
-- attempts left -> 'retrying' at now + delay (retry_after_ms when given, else full-jitter backoff) and a wake-up;
-- otherwise 'failed' and every pending step depending on it, directly or not, 'skipped'. `now` is the caller's
-- clock reading, so next_run_at is exactly the attempt's end plus the delay. Frees the step's concurrency
-- slot. Does not re-derive the job: the caller does, once. Returns the step's new status.
create function ballast_private.settle_failure(
  p_step ballast_private.steps, p_error jsonb, p_retryable boolean, p_retry_after_ms double precision,
  p_now timestamptz
) returns text
language plpgsql
as $fn$
declare
  v_now timestamptz := p_now;
  v_charged int := p_step.attempts - p_step.attempt_offset;
  v_delay_ms double precision;
  v_next timestamptz;
  v_status text;
begin
  if p_retryable and v_charged < p_step.max_attempts then
    v_delay_ms := coalesce(p_retry_after_ms,
                           floor(random() * least(p_step.backoff_cap_ms::double precision,
                                                  p_step.backoff_base_ms * power(2, least(greatest(v_charged, 1) - 1, 40)))));
    v_next := v_now + make_interval(secs => v_delay_ms / 1000.0);
    update ballast_private.steps set status = 'retrying', next_run_at = v_next, error = p_error,
           wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = p_step.id;
    perform ballast_private.wake_step(p_step.id, v_next);
    v_status := 'retrying';
  else
    update ballast_private.steps set status = 'failed', error = p_error, finished_at = v_now,
           wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = p_step.id;
    with recursive dependants(name) as (
      select p_step.name
      union
      select d.name from ballast_private.steps d join dependants p on p.name = any(d.depends_on)
       where d.job_id = p_step.job_id)
    update ballast_private.steps s set status = 'skipped', finished_at = v_now
     where s.job_id = p_step.job_id and s.status = 'pending'
       and s.name in (select name from dependants);
    v_status := 'failed';
  end if;
  if p_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(p_step.concurrency_key, p_step.concurrency_limit);
  end if;
  if v_status = 'failed' and p_step.parent_step_id is not null then
    perform ballast_private.finish_map(p_step.parent_step_id);
  end if;
  return v_status;
end
$fn$;

-- fail_step(attempt_id, error) -> (step_status, next_run_at, job_status)
-- error: {"class": text (required), "message": text (required), "code": text or number, "retryable": boolean
--         (default true), "retry_after_ms": number from 0 to 604800000 (7 days), "outcome": "failed" (default) or
--         "timed_out"}. Raises BA002, before touching anything, when the error object is malformed (a missing or
-- non-text class or message, a retryable that is not a boolean, a retry_after_ms out of range): a typo must not turn
-- into a retry decision (the text 'no' casts to false). BA007/BA008 as running_attempt.
-- Then ballast_private.settle_failure decides: retry with backoff, or fail and skip dependants.
create or replace function ballast.fail_step(p_attempt_id bigint, p_error jsonb)
returns table (step_status text, next_run_at timestamptz, job_status text)
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_retryable boolean;
  v_status text;
  v_error jsonb;
begin
  if p_error is null or jsonb_typeof(p_error) <> 'object'
     or jsonb_typeof(p_error -> 'class') is distinct from 'string' or p_error ->> 'class' = ''
     or jsonb_typeof(p_error -> 'message') is distinct from 'string' or p_error ->> 'message' = '' then
    perform ballast_private.bad_argument('error', 'must be an object with non-empty text "class" and "message"',
      'Pass e.g. {"class": "timeout", "message": "upstream took longer than 30s", "retryable": true}.');
  end if;
  if coalesce(jsonb_typeof(p_error -> 'code'), 'null') not in ('null', 'string', 'number') then
    perform ballast_private.bad_argument('error.code', format('%s is not a text', p_error -> 'code'),
      'Pass the provider''s error code as text (e.g. "ETIMEDOUT", "429"), or leave it out.');
  end if;
  if coalesce(jsonb_typeof(p_error -> 'retryable'), 'null') not in ('null', 'boolean') then
    perform ballast_private.bad_argument('error.retryable', format('%s is not a boolean', p_error -> 'retryable'),
      'Pass true or false (JSON booleans, not text), or leave it out for true.');
  end if;
  if coalesce(jsonb_typeof(p_error -> 'retry_after_ms'), 'null') <> 'null'
     and (jsonb_typeof(p_error -> 'retry_after_ms') <> 'number'
          or (p_error ->> 'retry_after_ms')::numeric not between 0 and 604800000) then
    perform ballast_private.bad_argument('error.retry_after_ms',
      format('%s is not a number of milliseconds from 0 to 604800000 (7 days)', p_error -> 'retry_after_ms'),
      'Pass the delay in milliseconds, or leave it out to use the step''s backoff.');
  end if;
  if coalesce(p_error ->> 'outcome', 'failed') not in ('failed', 'timed_out') then
    perform ballast_private.bad_argument('error.outcome', format('%s is not "failed" or "timed_out"', p_error -> 'outcome'),
      'Leave it out, or pass "timed_out" for an attempt stopped by its timeout.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  v_retryable := coalesce((p_error ->> 'retryable')::boolean, true);
  v_error := jsonb_build_object('class', p_error ->> 'class', 'code', p_error ->> 'code',
                                'message', p_error ->> 'message', 'retryable', v_retryable,
                                'attempt', v_step.attempts);

  update ballast_private.attempts
     set outcome = coalesce(p_error ->> 'outcome', 'failed'), finished_at = v_now,
         error_class = p_error ->> 'class', error_code = p_error ->> 'code',
         error_message = p_error ->> 'message', error_retryable = v_retryable
   where id = p_attempt_id;

  v_status := ballast_private.settle_failure(v_step, v_error, v_retryable,
                                             (p_error ->> 'retry_after_ms')::double precision, v_now);
  return query
  select v_status, s.next_run_at, ballast_private.refresh_job_status(v_step.job_id)
    from ballast_private.steps s where s.id = v_step.id;
end
$fn$;

-- release_attempt(attempt_id, reason) -> step_status
-- Graceful shutdown: the worker gives a running attempt back without it counting against max_attempts. The
-- attempt ends 'released'; the step is retried at once (retrying with next_run_at = now) by any worker. Raises
-- BA007/BA008 as running_attempt (a step that finished or was reclaimed meanwhile is not touched).
create function ballast.release_attempt(p_attempt_id bigint, p_reason text default 'worker shutting down')
returns text
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_status text;
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts
     set outcome = 'released', finished_at = v_now, error_class = 'released',
         error_message = coalesce(nullif(p_reason, ''), 'released'), error_retryable = true
   where id = p_attempt_id;
  update ballast_private.steps set attempt_offset = attempt_offset + 1 where id = v_step.id
  returning * into v_step;
  v_status := ballast_private.settle_failure(v_step,
    jsonb_build_object('class', 'released', 'message', coalesce(nullif(p_reason, ''), 'released'),
                       'retryable', true, 'attempt', v_step.attempts),
    true, 0, v_now);
  perform ballast_private.refresh_job_status(v_step.job_id);
  return v_status;
end
$fn$;

-- claim_step: as in 0005 (see its contract), and also returns the step's recorded side effects (key -> result), so
-- a retried attempt reuses them without a round trip per effect, and for an item of a map step (0008) the map
-- step's name (definition_step), the item's index and the item.
drop function ballast.claim_step(bigint, text, integer);
create function ballast.claim_step(p_step_id bigint, p_worker_id text, p_lease_ms integer default 30000)
returns table (
  attempt_id bigint, attempt_number integer, max_attempts integer, step_id bigint, step_name text,
  job_id bigint, tenant_id text, pipeline text, pipeline_version integer, input jsonb, dependencies jsonb,
  idempotency_key text, timeout_ms integer, lease_expires_at timestamptz, effects jsonb,
  definition_step text, item_index integer, item jsonb
)
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_running int;
  v_attempt_id bigint;
  v_lease timestamptz;
begin
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  select * into v_step from ballast_private.steps s where s.id = p_step_id for update skip locked;
  if not found then
    return;
  end if;
  if v_step.status = 'retrying' then
    if v_step.next_run_at > v_now then
      return;
    end if;
    update ballast_private.steps s set status = 'queued', queued_at = v_now, next_run_at = null
     where s.id = p_step_id;
  elsif v_step.status <> 'queued' then
    return;
  end if;

  if v_step.concurrency_key is not null then
    perform pg_advisory_xact_lock(hashtextextended(v_step.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_step.concurrency_key and s.status = 'running';
    if v_running >= v_step.concurrency_limit then
      perform ballast_private.wake_step(p_step_id, v_now + make_interval(secs => 1 + random()));
      return;
    end if;
    -- The attempt starts now, not when this call began: the wait for the group lock can outlast the completion of
    -- the step whose slot this claim takes, and an earlier started_at would show a third step overlapping two.
    v_now := ballast.now();
  end if;

  v_lease := v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0);
  update ballast_private.steps s
     set status = 'running', attempts = s.attempts + 1, started_at = coalesce(s.started_at, v_now),
         next_run_at = null
   where s.id = p_step_id
  returning * into v_step;
  insert into ballast_private.attempts (step_id, job_id, number, worker_id, started_at, lease_expires_at)
  values (v_step.id, v_step.job_id, v_step.attempts, p_worker_id, v_now, v_lease)
  returning id into v_attempt_id;
  perform ballast_private.refresh_job_status(v_step.job_id);

  return query
  select v_attempt_id, v_step.attempts - v_step.attempt_offset, v_step.max_attempts, v_step.id, v_step.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                    where d.job_id = v_step.job_id and d.name = any(v_step.depends_on)), '{}'::jsonb),
         'ballast:' || j.id || ':' || v_step.name,
         v_step.timeout_ms, v_lease,
         coalesce((select jsonb_object_agg(e.key, e.result) from ballast_private.effects e
                    where e.step_id = v_step.id), '{}'::jsonb),
         coalesce((select p.name from ballast_private.steps p where p.id = v_step.parent_step_id), v_step.name),
         v_step.item_index, v_step.item
    from ballast_private.jobs j where j.id = v_step.job_id;
end
$fn$;

-- complete_step: as in 0005 (see its contract); also clears the step's wait fields.
create or replace function ballast.complete_step(p_attempt_id bigint, p_output jsonb)
returns table (step_status text, job_status text, queued_step_ids bigint[])
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_queued bigint[];
  v_id bigint;
  v_job_status text;
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'succeeded', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'succeeded', output = coalesce(p_output, 'null'::jsonb), error = null, finished_at = v_now,
         wait_key = null, wait_deadline = null, wait_on_timeout = null
   where id = v_step.id;

  with d as (
    update ballast_private.steps s
       set deps_remaining = s.deps_remaining - 1,
           status = case when s.deps_remaining = 1 then 'queued' else s.status end,
           queued_at = case when s.deps_remaining = 1 then v_now else s.queued_at end
     where s.job_id = v_step.job_id and v_step.name = any(s.depends_on) and s.status = 'pending'
    returning s.id, s.status)
  select coalesce(array_agg(d.id order by d.id) filter (where d.status = 'queued'), '{}') into v_queued from d;
  foreach v_id in array v_queued loop
    perform ballast_private.wake_step(v_id);
  end loop;

  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  if v_step.parent_step_id is not null then
    perform ballast_private.finish_map(v_step.parent_step_id);
  end if;
  v_job_status := ballast_private.refresh_job_status(v_step.job_id);
  return query select 'succeeded'::text, v_job_status, v_queued;
end
$fn$;

-- heartbeat_worker(worker_id, running_attempt_ids, lease_ms) -> (alive, lost_attempt_ids)
-- The worker is alive: its heartbeat is stamped and the leases of the running attempts it names (running_attempt_ids)
-- extended to now + lease_ms.
-- Returns alive = false when the worker was declared stopped (it must stop working and register again), and the
-- attempts the worker believes it runs that are no longer running (cancelled, reclaimed, finished elsewhere): the
-- worker aborts those. This is the polling half of cancellation; NOTIFY ballast_cancel is the fast half.
drop function ballast.heartbeat_worker(text);
create function ballast.heartbeat_worker(
  p_worker_id text, p_running bigint[] default '{}', p_lease_ms integer default 30000
) returns table (alive boolean, lost_attempt_ids bigint[])
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_alive boolean;
begin
  update ballast_private.workers set heartbeat_at = v_now
   where id = p_worker_id and stopped_at is null;
  v_alive := found;
  if v_alive then
    -- Only the attempts the worker names: one it lost track of (its outcome could not be recorded, or its claim's
    -- reply never arrived) must let its lease run out and be reclaimed, not be kept alive for as long as the process.
    update ballast_private.attempts
       set lease_expires_at = v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0)
     where worker_id = p_worker_id and outcome = 'running' and id = any(coalesce(p_running, '{}'));
  end if;
  return query
  select v_alive,
         coalesce((select array_agg(r.id order by r.id)
                     from unnest(coalesce(p_running, '{}')) as r(id)
                     left join ballast_private.attempts a on a.id = r.id
                    where a.id is null or a.outcome <> 'running' or a.worker_id is distinct from p_worker_id
                       or not v_alive), '{}');
end
$fn$;

-- worker_lock(worker_id) -> (namespace, key): the session advisory lock a worker holds while its process lives.
create function ballast.worker_lock(p_worker_id text) returns table (namespace integer, key integer)
language sql immutable parallel safe
as $fn$
  select 1650551916, hashtext(p_worker_id)
$fn$;

-- reap(dead_after_ms, lost_after_ms) -> (dead_workers, reclaimed_attempts, expired_waits)
-- Run by every live worker about once a second; one at a time (a transaction advisory lock; a concurrent call
-- returns empty arrays at once).
--  1. Workers not stopped whose heartbeat is older than dead_after_ms, or older than lost_after_ms while their
--     liveness lock (ballast.worker_lock) is not held by any session, are marked stopped; their graphile-worker
--     pools are unlocked (graphile_worker.force_unlock_workers).
--  2. Running attempts of stopped workers, attempts whose lease expired, and attempts running longer than their
--     step's timeout plus 5 s (a worker too busy to enforce it) end 'crashed' / 'timed_out' (retryable, counted)
--     and their steps are retried or failed by settle_failure.
--  3. Steps waiting past their deadline fail ('fail') or run again ('retry').
-- Each step is locked with SKIP LOCKED: one being completed at this moment is left for the next round.
create function ballast.reap(p_dead_after_ms integer default 10000, p_lost_after_ms integer default 2000)
returns table (dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_dead text[] := '{}';
  v_pools text[];
  v_reclaimed bigint[] := '{}';
  v_expired bigint[] := '{}';
  v_attempt record;
  v_step ballast_private.steps;
  v_jobs bigint[] := '{}';
  v_job bigint;
  v_error jsonb;
begin
  if not pg_try_advisory_xact_lock(1650551916, 0) then
    return query select v_dead, v_reclaimed, v_expired;
    return;
  end if;
  perform set_config('ballast.actor', 'reaper', true);

  with dead as (
    update ballast_private.workers w set stopped_at = v_now
     where w.stopped_at is null
       and (w.heartbeat_at < v_now - make_interval(secs => p_dead_after_ms / 1000.0)
            or (w.heartbeat_at < v_now - make_interval(secs => p_lost_after_ms / 1000.0)
                and not exists (
                  select 1 from pg_locks l
                   where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database where datname = current_database())
                     and l.classid::bigint = 1650551916 and l.objid::bigint = (hashtext(w.id)::bigint & 4294967295)
                     and l.objsubid = 2)))
    returning w.id, w.pool_id)
  select coalesce(array_agg(id), '{}'), array_remove(array_agg(pool_id), null) into v_dead, v_pools from dead;
  if cardinality(v_pools) > 0 then
    perform graphile_worker.force_unlock_workers(v_pools);
  end if;

  for v_attempt in
    select a.id, a.step_id, a.worker_id,
           case when s.timeout_ms is not null
                     and a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0) < v_now then 'timed_out'
                else 'crashed' end as outcome,
           case when w.stopped_at is not null then format('worker %s stopped while running it (process gone or stopped heartbeating)', a.worker_id)
                when s.timeout_ms is not null
                     and a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0) < v_now
                  then format('ran past its timeout of %s ms and its worker did not stop it', s.timeout_ms)
                else format('lease expired at %s without a heartbeat from worker %s', a.lease_expires_at, a.worker_id) end as why
      from ballast_private.attempts a
      join ballast_private.steps s on s.id = a.step_id
      left join ballast_private.workers w on w.id = a.worker_id
     where a.outcome = 'running'
       and (w.stopped_at is not null or a.worker_id is null or a.lease_expires_at < v_now
            or (s.timeout_ms is not null
                and a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0) < v_now))
     order by a.step_id
  loop
    select * into v_step from ballast_private.steps where id = v_attempt.step_id for update skip locked;
    continue when not found;
    continue when v_step.status <> 'running' or v_step.attempts <> (select number from ballast_private.attempts where id = v_attempt.id);
    update ballast_private.attempts
       set outcome = v_attempt.outcome, finished_at = v_now,
           error_class = case when v_attempt.outcome = 'timed_out' then 'timeout' else 'worker_lost' end,
           error_message = v_attempt.why, error_retryable = true
     where id = v_attempt.id and outcome = 'running';
    v_error := jsonb_build_object('class', case when v_attempt.outcome = 'timed_out' then 'timeout' else 'worker_lost' end,
                                  'message', v_attempt.why, 'retryable', true, 'attempt', v_step.attempts);
    perform ballast_private.settle_failure(v_step, v_error, true, null, v_now);
    v_reclaimed := v_reclaimed || v_attempt.id;
    v_jobs := v_jobs || v_step.job_id;
  end loop;

  for v_step in
    select * from ballast_private.steps
     where status = 'waiting' and wait_deadline < v_now
     order by id
     for update skip locked
  loop
    -- The attempt that waited in vain is charged now (wait_for_event un-charged it when it parked): otherwise a step
    -- whose event never comes would wait and retry forever instead of ending in the dead-letter set.
    if v_step.wait_on_timeout = 'retry' and v_step.attempts - v_step.attempt_offset + 1 < v_step.max_attempts then
      update ballast_private.steps
         set status = 'queued', queued_at = v_now, wait_key = null, wait_deadline = null, wait_on_timeout = null,
             attempt_offset = attempt_offset - 1,
             error = jsonb_build_object('class', 'deadline_exceeded', 'message',
                                        format('no event %L arrived by %s; running the step again', v_step.wait_key, v_step.wait_deadline),
                                        'retryable', true, 'attempt', v_step.attempts)
       where id = v_step.id;
      perform ballast_private.wake_step(v_step.id);
    else
      perform ballast_private.settle_failure(v_step,
        jsonb_build_object('class', 'deadline_exceeded', 'message',
                           format('no event %L arrived by %s', v_step.wait_key, v_step.wait_deadline),
                           'retryable', false, 'attempt', v_step.attempts),
        false, null, v_now);
    end if;
    v_expired := v_expired || v_step.id;
    v_jobs := v_jobs || v_step.job_id;
  end loop;

  -- Map steps (0008) whose items are all final but that still wait (the item that finished last could not finish
  -- its map step, e.g. a crash between the two): finish them now.
  for v_step in
    select p.* from ballast_private.steps p
     where p.status = 'waiting' and p.wait_key like 'ballast:items:%'
       and not exists (select 1 from ballast_private.steps c
                        where c.parent_step_id = p.id
                          and c.status not in ('succeeded', 'failed', 'cancelled', 'skipped'))
  loop
    perform ballast_private.finish_map(v_step.id);
    v_jobs := v_jobs || v_step.job_id;
  end loop;

  foreach v_job in array (select coalesce(array_agg(distinct j), '{}') from unnest(v_jobs) j) loop
    perform ballast_private.refresh_job_status(v_job);
  end loop;
  return query select v_dead, v_reclaimed, v_expired;
end
$fn$;

-- record_effect(attempt_id, key, result) -> the stored result
-- The side-effect ledger: after effect(key, fn) ran fn, the worker stores its result under (step, key). If the key
-- is already recorded (a concurrent duplicate), the first result wins and is returned. Raises BA007/BA008 as
-- running_attempt: an attempt that lost its step must not record effects for it.
create function ballast.record_effect(p_attempt_id bigint, p_key text, p_result jsonb) returns jsonb
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_result jsonb;
begin
  if p_key is null or p_key = '' or length(p_key) > 500 then
    perform ballast_private.bad_argument('key', 'must be 1 to 500 characters',
      'Name the effect after what it does and to whom, e.g. ''email:welcome:user-42''.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  insert into ballast_private.effects (step_id, key, attempt_id, result)
  values (v_step.id, p_key, p_attempt_id, coalesce(p_result, 'null'::jsonb))
  on conflict (step_id, key) do nothing;
  select e.result into v_result from ballast_private.effects e where e.step_id = v_step.id and e.key = p_key;
  return v_result;
end
$fn$;

-- wait_for_event(attempt_id, key, timeout_ms, on_timeout) -> (received, payload)
-- A running step asks for the signal `key`. When ballast.send_event already delivered it, returns (true, payload)
-- and the step carries on. Otherwise the step parks: attempt 'parked' (not charged against max_attempts), step
-- 'waiting' with the key and a deadline (now + timeout_ms), and (false, null) is returned; the worker ends the
-- attempt there. send_event queues the step again and the handler, run from the top, gets the payload.
-- on_timeout: 'fail' (default) fails the step at the deadline; 'retry' runs it again (charged).
-- Signal and wait serialise on a transaction advisory lock of the key, so a send racing a wait is never missed.
create function ballast.wait_for_event(
  p_attempt_id bigint, p_key text, p_timeout_ms integer default null, p_on_timeout text default 'fail'
) returns table (received boolean, payload jsonb)
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_signal ballast_private.signals;
begin
  if p_key is null or p_key = '' or length(p_key) > 500 then
    perform ballast_private.bad_argument('key', 'must be 1 to 500 characters', 'Use the key the sender will pass to ballast.send_event.');
  end if;
  if p_on_timeout not in ('fail', 'retry') then
    perform ballast_private.bad_argument('on_timeout', format('%L is not "fail" or "retry"', p_on_timeout), 'Pass ''fail'' or ''retry''.');
  end if;
  if p_timeout_ms is not null and p_timeout_ms <= 0 then
    perform ballast_private.bad_argument('timeout_ms', format('%s is not a positive number of milliseconds', p_timeout_ms),
      'Pass how long to wait, or null to wait without a deadline.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  perform pg_advisory_xact_lock(1650551917, hashtext(p_key));
  select * into v_signal from ballast_private.signals s where s.key = p_key;
  if found then
    return query select true, v_signal.payload;
    return;
  end if;
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'waiting', wait_key = p_key, attempt_offset = attempt_offset + 1,
         wait_deadline = case when p_timeout_ms is null then null else v_now + make_interval(secs => p_timeout_ms / 1000.0) end,
         wait_on_timeout = p_on_timeout
   where id = v_step.id;
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select false, null::jsonb;
end
$fn$;

-- send_event(key, payload, actor) -> (accepted, resumed_step_ids)
-- Delivers the signal `key` once: stores it and queues every step waiting for it. A second send of the same key
-- is a no-op (accepted = false, nothing resumed): webhooks delivered twice do no harm.
create function ballast.send_event(p_key text, p_payload jsonb default null, p_actor text default null)
returns table (accepted boolean, resumed_step_ids bigint[])
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_resumed bigint[] := '{}';
  v_step ballast_private.steps;
begin
  if p_key is null or p_key = '' or length(p_key) > 500 then
    perform ballast_private.bad_argument('key', 'must be 1 to 500 characters', 'Pass the key the waiting step named.');
  end if;
  perform set_config('ballast.actor', coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''), 'sql'), true);
  perform pg_advisory_xact_lock(1650551917, hashtext(p_key));
  insert into ballast_private.signals (key, payload, actor)
  values (p_key, p_payload, current_setting('ballast.actor', true))
  on conflict (key) do nothing;
  if not found then
    return query select false, v_resumed;
    return;
  end if;
  for v_step in
    select * from ballast_private.steps where status = 'waiting' and wait_key = p_key order by id for update
  loop
    update ballast_private.steps
       set status = 'queued', queued_at = v_now, wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = v_step.id;
    perform ballast_private.wake_step(v_step.id);
    perform ballast_private.refresh_job_status(v_step.job_id);
    v_resumed := v_resumed || v_step.id;
  end loop;
  return query select true, v_resumed;
end
$fn$;

-- cancel_job(job_id, reason, actor) -> (job_id, status, cancelled_step_ids, already_cancelled)
-- Cancels every unfinished step at once (pending, queued, retrying, waiting, needs_review, and running: the running
-- attempt ends 'cancelled' and NOTIFY ballast_cancel tells its worker to fire the handler's AbortSignal; a worker
-- that misses the notification learns it from its next heartbeat). The job ends 'cancelled'. Cancelling a
-- cancelled job is a no-op (already_cancelled = true); a completed, failed or partially completed job raises BA010;
-- an unknown job BA007. Locks the job's steps in id order, then the job (the same order as claim and complete).
create function ballast.cancel_job(p_job_id bigint, p_reason text default null, p_actor text default null)
returns table (job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql
as $fn$
declare
  v_job ballast_private.jobs;
  v_now timestamptz := ballast.now();
  v_steps bigint[];
  v_attempts jsonb;
begin
  perform set_config('ballast.actor', coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''), 'sql'), true);
  perform set_config('ballast.reason', coalesce(p_reason, ''), true);
  -- Items of map steps first, then the other steps, each by id: an item finishing locks itself, then its map step.
  perform 1 from ballast_private.steps s where s.job_id = p_job_id order by s.parent_step_id is null, s.id for update;
  select * into v_job from ballast_private.jobs j where j.id = p_job_id for no key update;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  if v_job.status = 'cancelled' then
    return query select v_job.id, v_job.status, '{}'::bigint[], true;
    return;
  end if;
  if v_job.status in ('completed', 'failed', 'partially_completed') then
    raise exception using errcode = 'BA010',
      message = format('job %s already %s; there is nothing to cancel', p_job_id, v_job.status),
      hint = 'To run it again use ballast.replay_job.';
  end if;

  select coalesce(jsonb_agg(jsonb_build_object('attempt_id', a.id, 'worker_id', a.worker_id)), '[]')
    into v_attempts
    from ballast_private.attempts a where a.job_id = p_job_id and a.outcome = 'running';
  update ballast_private.attempts a
     set outcome = 'cancelled', finished_at = v_now, error_class = 'cancelled',
         error_message = coalesce('job cancelled: ' || nullif(p_reason, ''), 'job cancelled'), error_retryable = false
   where a.job_id = p_job_id and a.outcome = 'running';
  with c as (
    update ballast_private.steps s
       set status = 'cancelled', finished_at = v_now, next_run_at = null,
           wait_key = null, wait_deadline = null, wait_on_timeout = null
     where s.job_id = p_job_id
       and s.status in ('pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review')
    returning s.id)
  select coalesce(array_agg(c.id order by c.id), '{}') into v_steps from c;
  if jsonb_array_length(v_attempts) > 0 then
    perform pg_notify('ballast_cancel', jsonb_build_object('job_id', p_job_id, 'attempts', v_attempts)::text);
  end if;
  return query select p_job_id, ballast_private.refresh_job_status(p_job_id), v_steps, false;
end
$fn$;

-- replay_step(step_id, reason, force, actor) -> (job_id, replayed_step_ids, job_status)
-- Runs a finished step again, and after it every step that depends on it; the outputs of everything upstream are
-- reused. The step must be failed or cancelled, or succeeded with force => true (re-running finished work is a
-- decision, not a default). Each replayed step gets a fresh attempt budget; its earlier attempts stay in history.
-- Writes a 'step_replayed' event with actor and reason. Raises BA011 for a step that is not finished (replaying a
-- running step would run it twice at once), BA002 for a succeeded step without force or a skipped step (replay the
-- failed step it depends on), BA007 for an unknown step.
create function ballast.replay_step(
  p_step_id bigint, p_reason text default null, p_force boolean default false, p_actor text default null
) returns table (job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_ids bigint[];
  v_id bigint;
  v_r record;
  v_parent ballast_private.steps;
begin
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('step %s does not exist', p_step_id);
  end if;
  perform set_config('ballast.actor', coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''), 'sql'), true);
  perform set_config('ballast.reason', coalesce(p_reason, ''), true);
  -- Items of map steps first, then the other steps, each by id (the order cancel_job and finish_map use).
  perform 1 from ballast_private.steps s where s.job_id = v_step.job_id order by s.parent_step_id is null, s.id for update;
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if v_step.status in ('pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review') then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s" of job %s) is %s: only a finished step can be replayed', v_step.id, v_step.name,
                       v_step.job_id, v_step.status),
      hint = case when v_step.status = 'running' then 'Wait for it to finish, or cancel the job first.'
                  else 'It will run by itself; replay it once it has finished.' end;
  end if;
  if v_step.status = 'succeeded' and not p_force then
    perform ballast_private.bad_argument('force', format('step %s ("%s") succeeded; replaying it repeats its work', v_step.id, v_step.name),
      'Pass p_force => true to run it again anyway.');
  end if;
  if v_step.status = 'skipped' then
    perform ballast_private.bad_argument('step_id', format('step %s ("%s") was skipped because a step it depends on failed', v_step.id, v_step.name),
      'Replay the failed step it depends on; this one follows.');
  end if;

  perform set_config('ballast.replay', 'on', true);
  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data)
  values (v_step.job_id, v_step.id, 'step_replayed', v_step.status, current_setting('ballast.actor', true),
          nullif(p_reason, ''), jsonb_build_object('previous_status', v_step.status, 'attempts', v_step.attempts,
                                                   'force', p_force));

  -- An item of a map step (0008) is replayed alone; its map step waits for it again and what follows the map
  -- step runs again. Otherwise the step and everything depending on it, directly or not.
  select p.* into v_parent from ballast_private.steps p where p.id = v_step.parent_step_id;
  with recursive dependants(name) as (
    select coalesce(v_parent.name, v_step.name)
    union
    select d.name from ballast_private.steps d join dependants p on p.name = any(d.depends_on)
     where d.job_id = v_step.job_id)
  select array_agg(s.id order by s.id) into v_ids
    from ballast_private.steps s
   where s.job_id = v_step.job_id and s.parent_step_id is null and s.name in (select name from dependants);
  if v_parent.id is not null then
    v_ids := v_ids || v_step.id;
  end if;
  select s.id, s.name into v_r from ballast_private.steps s
   where s.id = any(v_ids) and (v_parent.id is null or s.id <> v_parent.id)
     and exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id)
   order by s.id limit 1;
  if found then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s") is a map step that already ran its items: replaying it, or a step before it, is not supported yet',
                       v_r.id, v_r.name),
      hint = 'Replay its failed items instead (ballast.step_items lists them).';
  end if;

  select s.id, s.name, s.status into v_r from ballast_private.steps s
   where s.id = any(v_ids) and s.id <> v_step.id
     and s.status in ('queued', 'running', 'retrying', 'waiting', 'needs_review')
     and (v_parent.id is null or s.id <> v_parent.id or s.status <> 'waiting')
   order by s.id limit 1;
  if found then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s") depends on step %s and is %s: replaying now would run it twice', v_r.id,
                       v_r.name, v_step.id, v_r.status),
      hint = 'Wait until it has finished, or cancel the job first.';
  end if;

  -- The replayed step and its dependants start over: outputs and errors cleared, attempts budget renewed, the
  -- dependency counter recomputed from the statuses upstream (only the replayed set changes).
  update ballast_private.steps s
     set deps_remaining = (select count(*) from ballast_private.steps d
                            where d.job_id = s.job_id and d.name = any(s.depends_on)
                              and (d.status <> 'succeeded' or d.id = any(v_ids))),
         attempt_offset = s.attempts, output = null, error = null, progress = null, next_run_at = null,
         finished_at = null, wait_key = null, wait_deadline = null, wait_on_timeout = null
   where s.id = any(v_ids);
  update ballast_private.steps s
     set status = case when s.deps_remaining = 0 then 'queued' else 'pending' end,
         queued_at = case when s.deps_remaining = 0 then v_now else s.queued_at end
   where s.id = any(v_ids) and s.id is distinct from v_parent.id;
  if v_parent.id is not null then
    -- The map step keeps its attempts and waits for the replayed item (its output is rebuilt when all are final).
    update ballast_private.steps s
       set status = 'waiting', wait_key = 'ballast:items:' || s.id, attempt_offset = v_parent.attempt_offset,
           deps_remaining = 0
     where s.id = v_parent.id and s.status <> 'waiting';
  end if;
  for v_id in select s.id from ballast_private.steps s where s.id = any(v_ids) and s.status = 'queued' loop
    perform ballast_private.wake_step(v_id);
  end loop;
  return query select v_step.job_id, v_ids, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;

-- replay_job(job_id, from_step, reason, actor) -> (job_id, replayed_step_ids, job_status)
-- With from_step: replays that step (forced if it succeeded) and what depends on it. Without: replays every failed
-- or cancelled step (and, through them, their skipped or cancelled dependants). Raises BA007 for an unknown job or
-- step name, BA011 when the job has nothing finished to replay (nothing failed or cancelled).
create function ballast.replay_job(
  p_job_id bigint, p_from_step text default null, p_reason text default null, p_actor text default null
) returns table (job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql
as $fn$
declare
  v_step_id bigint;
  v_all bigint[] := '{}';
  v_r record;
begin
  perform 1 from ballast_private.jobs j where j.id = p_job_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  if p_from_step is not null then
    select s.id into v_step_id from ballast_private.steps s where s.job_id = p_job_id and s.name = p_from_step;
    if v_step_id is null then
      raise exception using errcode = 'BA007', message = format('job %s has no step %L', p_job_id, p_from_step),
        hint = 'Steps: ' || (select string_agg(name, ', ' order by id) from ballast_private.steps where steps.job_id = p_job_id);
    end if;
    return query select * from ballast.replay_step(v_step_id, p_reason, true, p_actor);
    return;
  end if;
  for v_step_id in
    -- Map steps are replayed through their failed items (their own failure is the items').
    select s.id from ballast_private.steps s
     where s.job_id = p_job_id and s.status in ('failed', 'cancelled')
       and not exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id)
     order by s.id
  loop
    -- A cancelled step may already have been reset as a dependant of an earlier one in this loop.
    continue when (select status from ballast_private.steps where id = v_step_id) not in ('failed', 'cancelled');
    select * into v_r from ballast.replay_step(v_step_id, p_reason, false, p_actor);
    v_all := v_all || v_r.replayed_step_ids;
  end loop;
  if cardinality(v_all) = 0 then
    raise exception using errcode = 'BA011', message = format('job %s has no failed or cancelled step to replay', p_job_id),
      hint = 'Name a step (p_from_step) to run it and what follows again.';
  end if;
  return query select p_job_id, v_all, (select j.status from ballast_private.jobs j where j.id = p_job_id);
end
$fn$;

-- Public views, extended (columns appended).
create or replace view ballast.steps with (security_invoker = true) as
select id, job_id, name, status, depends_on, attempts, max_attempts, output, error, progress, next_run_at,
       concurrency_key, concurrency_limit, timeout_ms, created_at, queued_at, started_at, finished_at, updated_at,
       attempt_offset, wait_key, wait_deadline, wait_on_timeout
  from ballast_private.steps;

create or replace view ballast.step_transitions with (security_invoker = true) as
select from_status, to_status, why, via_replay from ballast_private.step_transitions;

create or replace view ballast.job_transitions with (security_invoker = true) as
select from_status, to_status, via_replay from ballast_private.job_transitions;

create view ballast.signals with (security_invoker = true) as
select key, payload, actor, received_at from ballast_private.signals;

create view ballast.effects with (security_invoker = true) as
select e.step_id, s.job_id, e.key, e.attempt_id, e.result, e.created_at
  from ballast_private.effects e join ballast_private.steps s on s.id = e.step_id;

create trigger refuse_write instead of insert or update or delete on ballast.signals
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.effects
  for each row execute function ballast_private.refuse_view_write();
