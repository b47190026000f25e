-- Up Migration
--
-- 0031: what a waiting step waits for is a column of its own (issue 14, item 1).
--
-- A map step (0008) whose items run waits with status 'waiting' like a step waiting for an event, and until now it
-- said so with a made-up event key, 'ballast:items:<its id>', which the counters, the reaper and replay_step
-- recognised with `wait_key like ...`. A key that looks like an event key but is none: an event sent with that
-- key would have woken the map step too early. Now:
--  * ballast_private.steps.waiting_for (generated from status and wait_key, stored): null unless the step is
--    waiting; 'event' when it waits for the event named by wait_key (wait_for_event, 0005); 'items' when it waits
--    for its items (a map step: expand_items, or replay_step of one of its items). Being generated, it cannot
--    disagree with status and wait_key, and no statement that ends a wait has to clear it.
--  * wait_key holds event keys only: a map step waiting for its items has wait_key null. The check
--    step_waiting_has_key (a waiting step has a key) goes; in its place step_items_wait_has_no_deadline (a wait for
--    items has no deadline and no wait_on_timeout: it ends when its items are final, through finish_map, or with
--    cancel_job).
--  * Existing rows: keys 'ballast:items:%' become null (the counters are unchanged: those steps were counted as
--    waiting for items before and are now; the trigger steps_changed is disabled for that one update so that it
--    does not count the conversion as a change).
--  * Redefined with the column instead of the prefix (same signatures, properties and grants): expand_items,
--    reap, recount_job, replay_step, and the triggers' functions steps_changed and steps_inserted.
--  * Cost of the migration: a stored generated column rewrites ballast_private.steps and its indexes under an ACCESS
--    EXCLUSIVE lock, so workers and submissions wait for it: about 4 s per million steps (measured on a copy of the
--    table's shape with its eight indexes, 1,000,000 rows, PostgreSQL 15, load 1.5).
--  * The view ballast.steps keeps its columns (src/db/schema.ts and the GraphQL Step type describe them): a waiting
--    step there waits for an event when wait_key is set and for its items (a map step) when it is null, as its
--    comments now say. Showing waiting_for there is a later change of the view and of StepsView together.

alter table ballast_private.steps drop constraint step_waiting_has_key;

alter table ballast_private.steps disable trigger steps_changed;
update ballast_private.steps
   set wait_key = null, wait_deadline = null, wait_on_timeout = null
 where wait_key like 'ballast:items:%';
alter table ballast_private.steps enable trigger steps_changed;

alter table ballast_private.steps
  add column waiting_for text generated always as (
    case when status = 'waiting' then case when wait_key is null then 'items' else 'event' end end) stored;
alter table ballast_private.steps
  add constraint step_items_wait_has_no_deadline
  check (waiting_for is distinct from 'items' or (wait_deadline is null and wait_on_timeout is null));

-- expand_items(attempt_id, items) -> number of items: as in 0008. Creates one child step per item (queued, with the
-- parent's dependencies, retry, timeout and concurrency settings) and wakes them; the parent's attempt ends
-- 'succeeded' and the parent waits for its children (waiting_for 'items', wait_key null). An empty array completes
-- the parent at once. Raises BA002 when items is not an array or the step is not declared as a map step, BA007/BA008
-- as running_attempt.
create or replace function ballast.expand_items(p_attempt_id bigint, p_items jsonb) returns integer
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_def jsonb;
  v_count int;
  v_id bigint;
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    perform ballast_private.bad_argument('items', format('must be a JSON array, got %s', coalesce(jsonb_typeof(p_items), 'null')),
      'Return an array of the items to process from the map step''s items function.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  select d into v_def
    from ballast_private.jobs j
    join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
    cross join lateral jsonb_array_elements(p.definition -> 'steps') d
   where j.id = v_step.job_id and d ->> 'name' = v_step.name;
  if jsonb_typeof(v_def -> 'map') is distinct from 'object' then
    perform ballast_private.bad_argument('step', format('step %s ("%s") is not a map step', v_step.id, v_step.name),
      'Declare it with .map(...) in the pipeline.');
  end if;
  if length(v_step.name) + 2 + length((jsonb_array_length(p_items))::text) > 63 then
    perform ballast_private.bad_argument('step', format('map step name "%s" is too long to name %s items', v_step.name, jsonb_array_length(p_items)),
      'Use a map step name of at most 50 characters.');
  end if;

  update ballast_private.attempts set outcome = 'succeeded', finished_at = v_now where id = p_attempt_id;
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, parent_step_id, item_index, item)
  select v_step.job_id, v_step.name || '__' || (e.ordinality - 1), 'queued', v_step.depends_on, 0,
         v_step.max_attempts, v_step.backoff_base_ms, v_step.backoff_cap_ms, v_step.timeout_ms,
         v_step.concurrency_key, v_step.concurrency_limit, v_now, v_now, v_now, v_step.id, e.ordinality - 1, e.value
    from jsonb_array_elements(p_items) with ordinality e;
  get diagnostics v_count = row_count;

  update ballast_private.steps
     set status = 'waiting', wait_key = null, wait_deadline = null, wait_on_timeout = null
   where id = v_step.id;
  for v_id in select id from ballast_private.steps where parent_step_id = v_step.id order by item_index loop
    perform ballast_private.wake_step(v_id);
  end loop;
  if v_count = 0 then
    perform ballast_private.finish_map(v_step.id);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return v_count;
end
$fn$;

-- reap(dead_after_ms, lost_after_ms): as in 0016 (four jobs, each at most 500 per round; lock order worker rows,
-- then step rows, then job rows); its fourth job finds the map steps left waiting for items that are all final by
-- waiting_for = 'items'.
create or replace function ballast.reap(p_dead_after_ms integer DEFAULT 10000, p_lost_after_ms integer DEFAULT 2000) returns TABLE(dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_batch constant integer := 500;
  v_trusted_from timestamptz;
  v_locks_trusted boolean;
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
  v_trusted_from := ballast_private.server_epoch() + ballast_private.restart_grace();
  -- Compared with the real clock: the server's age is real time even when a test sets ballast.now.
  v_locks_trusted := clock_timestamp() > v_trusted_from;

  with candidates as (
    select w.id from ballast_private.workers w
     where w.stopped_at is null
       and (greatest(w.heartbeat_at, v_trusted_from) < v_now - make_interval(secs => p_dead_after_ms / 1000.0)
            or (v_locks_trusted
                and w.heartbeat_at < v_now - make_interval(secs => p_lost_after_ms / 1000.0)
                and not exists (
                  select 1 from pg_locks l
                   where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database where datname = current_database())
                     and l.classid::bigint = 1650551916 and l.objid::bigint = (hashtext(w.id)::bigint & 4294967295)
                     and l.objsubid = 2)))
     order by w.heartbeat_at
     limit v_batch
       for update skip locked),
  dead as (
    update ballast_private.workers w set stopped_at = v_now
      from candidates c
     where w.id = c.id
    returning w.id, w.pool_id)
  select coalesce(array_agg(id), '{}'), array_remove(array_agg(pool_id), null) into v_dead, v_pools from dead;
  if cardinality(v_pools) > 0 then
    perform graphile_worker.force_unlock_workers(v_pools);
  end if;

  for v_attempt in
    select x.id, x.step_id, x.worker_id,
           case when x.past_timeout then 'timed_out' else 'crashed' end as outcome,
           case when x.worker_stopped then format('worker %s stopped while running it (process gone or stopped heartbeating)', x.worker_id)
                when x.past_timeout then format('ran past its timeout of %s ms and its worker did not stop it', x.timeout_ms)
                else format('lease expired at %s without a heartbeat from worker %s', x.lease_expires_at, x.worker_id) end as why
      from (
        select a.id, a.step_id, a.worker_id, a.lease_expires_at, s.timeout_ms,
               w.stopped_at is not null as worker_stopped,
               (s.timeout_ms is not null
                and greatest(a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0), v_trusted_from) < v_now) as past_timeout
          from ballast_private.attempts a
          join ballast_private.steps s on s.id = a.step_id
          left join ballast_private.workers w on w.id = a.worker_id
         where a.outcome = 'running'
           and (w.stopped_at is not null or a.worker_id is null
                or greatest(a.lease_expires_at, v_trusted_from) < v_now
                or (s.timeout_ms is not null
                    and greatest(a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0), v_trusted_from) < v_now))
         order by a.step_id
         limit v_batch) x
     order by x.step_id
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
     limit v_batch
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
  -- its map step, e.g. a crash between the two): finish them now. items_open (0013) counts their live items.
  for v_step in
    select p.* from ballast_private.steps p
     where p.status = 'waiting' and p.waiting_for = 'items' and p.items_open = 0
     order by p.id
     limit v_batch
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

-- recount_job(job_id) -> boolean: as in 0013; n_waiting counts the steps waiting for an event (waiting_for 'event'),
-- not the map steps waiting for their items.
create or replace function ballast.recount_job(p_job_id bigint) returns boolean
language plpgsql volatile
as $fn$
declare
  v_before ballast_private.jobs;
  v_after ballast_private.jobs;
begin
  select * into v_before from ballast_private.jobs where id = p_job_id for no key update;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  update ballast_private.jobs j
     set n_total = c.t, n_final = c.f, n_running = c.ru, n_review = c.rv, n_waiting = c.wa, n_retrying = c.re,
         n_failed = c.fa, n_cancelled = c.ca, n_started = c.st, n_item_bad = c.ib
    from (select count(*)::int as t,
                 count(*) filter (where status in ('succeeded', 'failed', 'cancelled', 'skipped'))::int as f,
                 count(*) filter (where status = 'running')::int as ru,
                 count(*) filter (where status = 'needs_review')::int as rv,
                 count(*) filter (where waiting_for = 'event')::int as wa,
                 count(*) filter (where status = 'retrying')::int as re,
                 count(*) filter (where status = 'failed' and parent_step_id is null)::int as fa,
                 count(*) filter (where status = 'cancelled' and parent_step_id is null)::int as ca,
                 count(*) filter (where attempts > 0)::int as st,
                 count(*) filter (where status in ('failed', 'cancelled', 'skipped') and parent_step_id is not null)::int as ib
            from ballast_private.steps where job_id = p_job_id) c
   where j.id = p_job_id
  returning j.* into v_after;
  return (v_before.n_total, v_before.n_final, v_before.n_running, v_before.n_review, v_before.n_waiting,
          v_before.n_retrying, v_before.n_failed, v_before.n_cancelled, v_before.n_started, v_before.n_item_bad)
         is distinct from
         (v_after.n_total, v_after.n_final, v_after.n_running, v_after.n_review, v_after.n_waiting,
          v_after.n_retrying, v_after.n_failed, v_after.n_cancelled, v_after.n_started, v_after.n_item_bad);
end
$fn$;

-- replay_step(step_id, reason, force, actor): as in 0010; a replayed item's map step waits for its items again
-- (waiting_for 'items', wait_key null).
create or replace function ballast.replay_step(p_step_id bigint, p_reason text DEFAULT NULL::text, p_force boolean DEFAULT false, p_actor text DEFAULT NULL::text) returns TABLE(job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
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
  perform ballast_private.set_actor(p_actor);
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
       set status = 'waiting', wait_key = null, attempt_offset = v_parent.attempt_offset,
           deps_remaining = 0
     where s.id = v_parent.id and s.status <> 'waiting';
  end if;
  for v_id in select s.id from ballast_private.steps s where s.id = any(v_ids) and s.status = 'queued' loop
    perform ballast_private.wake_step(v_id);
  end loop;
  return query select v_step.job_id, v_ids, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;

-- steps_changed: as in 0013; the counters' items_wait is waiting_for = 'items', and a statement is looked at further
-- when a status, waiting_for, attempts (0 or not), job or parent changed.
create or replace function ballast_private.steps_changed() returns trigger
language plpgsql volatile
as $fn$
declare
  v_bad record;
  v_allowed text;
begin
  if not exists (select 1 from old_t o join new_t n on n.id = o.id
                  where o.status <> n.status or (o.attempts > 0) <> (n.attempts > 0)
                     or o.waiting_for is distinct from n.waiting_for or o.job_id <> n.job_id
                     or o.parent_step_id is distinct from n.parent_step_id) then
    return null;
  end if;

  select o.id, o.name, o.job_id, o.status as from_status, n.status as to_status, t.via_replay into v_bad
    from old_t o join new_t n on n.id = o.id
    left join ballast_private.step_transitions t on t.from_status = o.status and t.to_status = n.status
   where o.status <> n.status
     and (t.from_status is null or (t.via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on'))
   order by o.id limit 1;
  if found then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)') into v_allowed
      from ballast_private.step_transitions where from_status = v_bad.from_status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('step %s ("%s" of job %s) cannot go from %s to %s', v_bad.id, v_bad.name, v_bad.job_id,
                       v_bad.from_status, v_bad.to_status),
      hint = format('From %s a step may go to: %s%s.', v_bad.from_status, v_allowed,
                    case when v_bad.via_replay then '; running it again takes ballast.replay_step' else '' end);
  end if;

  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data, at)
  select n.job_id, n.id, 'step_' || n.status, n.status,
         coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
         nullif(current_setting('ballast.reason', true), ''),
         case when n.status = 'running' then jsonb_build_object('attempt', n.attempts)
              when n.status = 'retrying' then jsonb_build_object('attempt', n.attempts, 'next_run_at', n.next_run_at,
                                                                 'error', n.error)
              when n.status = 'failed' then jsonb_build_object('attempt', n.attempts, 'error', n.error) end,
         ballast.now()
    from new_t n join old_t o on o.id = n.id
   where o.status <> n.status
   order by n.id;

  perform ballast_private.apply_step_deltas(array_agg(r.job_id), array_agg(r.sgn), array_agg(r.status),
                                            array_agg(r.items_wait), array_agg(r.parent_step_id), array_agg(r.started))
     from (select n.job_id, 1 as sgn, n.status, coalesce(n.waiting_for = 'items', false) as items_wait,
                  n.parent_step_id, n.attempts > 0 as started
             from new_t n
           union all
           select o.job_id, -1, o.status, coalesce(o.waiting_for = 'items', false), o.parent_step_id,
                  o.attempts > 0
             from old_t o) r;

  if exists (select 1 from new_t n join old_t o on o.id = n.id where n.status = 'queued' and o.status <> 'queued') then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

-- steps_inserted: as in 0021, with items_wait from waiting_for.
create or replace function ballast_private.steps_inserted() returns trigger
language plpgsql volatile
as $fn$
begin
  if current_setting('ballast.steps_counted', true) is distinct from 'on' then
    perform ballast_private.apply_step_deltas(array_agg(n.job_id), array_agg(1), array_agg(n.status),
                                              array_agg(coalesce(n.waiting_for = 'items', false)),
                                              array_agg(n.parent_step_id), array_agg(n.attempts > 0))
       from new_t n;
  end if;
  if exists (select 1 from new_t n where n.status = 'queued') then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

comment on column ballast.steps.wait_key is
  'The event key a waiting step waits for (sendEvent delivers it). Null when a waiting map step waits for its items, and unless it waits for an event or has waited for one.';
comment on column ballast.steps.status is
  'pending (waits for the steps it depends on), queued, running, retrying (waits for its next attempt, at nextRunAt), waiting (for the event named by waitKey, or a map step with no waitKey for its items), needs_review (waits for a person), then one of the final statuses: succeeded, failed, cancelled or skipped (a step it depends on failed).';
