-- Up Migration
--
-- 0016: liveness that survives a Postgres restart, a watchdog's heartbeat, and quarantine of steps that block or
-- crash their worker (issue 11, "Execution core v2", items 1, 2 and 8).
--
-- Why. A restart of Postgres (pg_ctl restart -m fast or -m immediate) drops every session, so every worker's session
-- advisory lock (ballast.worker_lock) is gone at once, and the heartbeats stop for as long as the server is down.
-- ballast.reap (0005) took "lock gone and heartbeat older than lost_after (2 s)" as proof of death, so the first
-- round after a restart declared every worker dead, its own included, and reclaimed attempts whose handlers still
-- ran. Leases had the same flaw: a restart longer than the lease (30 s) expired every lease.
--
-- What changes.
--  * ballast_private.server_epoch(): when the server last began (pg_postmaster_start_time(), or the start of its
--    checkpointer when a crash of a backend made the postmaster reinitialise without restarting; that process is
--    visible only to superusers and members of pg_read_all_stats, otherwise the postmaster's start is used). Every
--    session lock predates it; every heartbeat and lease stamped before it says nothing about a worker's health.
--  * ballast_private.restart_grace(): how long after server_epoch missing evidence is not trusted. 20 s by default;
--    the setting ballast.restart_grace_ms overrides it (alter database ... set ballast.restart_grace_ms = 30000).
--    20 s covers a worker's liveness connection (which retries after 50 ms, then doubles up to 2 s: src/liveness.ts)
--    and its heartbeat (every 1 s) on a loaded machine.
--  * ballast.reap is redefined (same signature and result):
--      - heartbeat age counts from greatest(heartbeat_at, server_epoch + grace): after a restart a worker has
--        grace + dead_after (20 + 10 s by default) to heartbeat again before it is declared dead;
--      - a missing liveness lock is evidence only once the server has been up longer than the grace;
--      - a lease counts as expired only when greatest(lease_expires_at, server_epoch + grace) has passed;
--      - the timeout rule (timeout + 5 s) likewise waits for the grace after a restart, so that the worker, whose
--        outcome writes retry across the restart, records its own timeout;
--      - every loop is bounded: at most 500 workers, 500 attempts, 500 expired waits and 500 map steps per round
--        (the rest are left for the next round, a second later).
--  * steps.crashes counts the attempts of a step that ended because their worker was blocked (its event loop
--    stalled past the step's timeout: 'blocked_worker', reported by the worker's watchdog thread, src/watchdog.ts) or
--    crashed (the process died abnormally: 'crashed_worker', reported by the supervisor, src/supervisor.ts). A step
--    whose crashes reach the limit (default 2) is quarantined: failed permanently, in the dead-letter set, instead of
--    freezing or crashing worker after worker. An external SIGKILL is not counted: it stays 'worker_lost' (reap).
--  * ballast.watchdog_heartbeat: the watchdog's heartbeat while the worker's main thread is stalled.
--  * ballast.report_worker_fault: the watchdog's and the supervisor's report of a blocked or crashed worker.
-- The blocked and crashed attempts end with outcome 'crashed' (as the reaper's), told apart by their error_class.

alter table ballast_private.steps
  add column crashes integer not null default 0
    constraint step_crashes_nonnegative check (crashes >= 0);
comment on column ballast_private.steps.crashes is
  'Attempts ended by a blocked (blocked_worker) or crashed (crashed_worker) worker; the step is quarantined (failed) at the limit.';

-- server_epoch() -> when the running server (and so every session and session lock on it) began: the postmaster's
-- start, or the checkpointer's when a backend crash made the postmaster reinitialise in place. Raises nothing.
create function ballast_private.server_epoch() returns timestamptz
language sql stable
as $fn$
  select greatest(pg_postmaster_start_time(),
                  (select max(a.backend_start) from pg_stat_activity a where a.backend_type = 'checkpointer'))
$fn$;

-- restart_grace() -> how long after server_epoch() a missing lock, an old heartbeat or an expired lease are not taken
-- as a worker's death: the setting ballast.restart_grace_ms (milliseconds, 0 to 600000), else 20 s. Raises BA002
-- when the setting is not a number of milliseconds in that range.
create function ballast_private.restart_grace() returns interval
language plpgsql stable
as $fn$
declare
  v_raw text := nullif(current_setting('ballast.restart_grace_ms', true), '');
begin
  if v_raw is null then
    return interval '20 seconds';
  end if;
  if v_raw !~ '^\d{1,6}$' or v_raw::integer > 600000 then
    perform ballast_private.bad_argument('ballast.restart_grace_ms', format('%L is not a number of milliseconds from 0 to 600000', v_raw),
      'Set it to how long workers may take to reconnect after a restart, e.g. 20000, or reset it.');
  end if;
  return make_interval(secs => v_raw::integer / 1000.0);
end
$fn$;

-- reap(dead_after_ms, lost_after_ms) -> (dead_workers, reclaimed_attempts, expired_waits)
-- Run by every live worker about once a second; one at a time (a transaction advisory lock; a concurrent call
-- returns empty arrays at once). "Trusted from" below is server_epoch() + restart_grace() (20 s after the server
-- started by default): evidence older than that server's start says nothing about a worker.
--  1. Workers not stopped whose heartbeat, counted from greatest(heartbeat_at, trusted from), is older than
--     dead_after_ms, or older than lost_after_ms while their liveness lock (ballast.worker_lock) is not held by any
--     session and the server has been up past the grace, are marked stopped; their graphile-worker pools are
--     unlocked (graphile_worker.force_unlock_workers). At most 500 per round.
--  2. Running attempts of stopped workers, attempts whose lease expired (greatest(lease_expires_at, trusted from)
--     passed), and attempts running longer than their step's timeout plus 5 s (a worker too busy to enforce it; not
--     within the grace after a restart) end 'crashed' / 'timed_out' (retryable, counted) and their steps are retried
--     or failed by settle_failure. At most 500 per round, oldest steps first.
--  3. Steps waiting past their deadline fail ('fail') or run again ('retry'). At most 500 per round.
--  4. Map steps whose items are all final but that still wait are finished. At most 500 per round.
-- Each step is locked with SKIP LOCKED: one being completed at this moment is left for the next round. Lock order:
-- worker rows, then step rows (each with its attempt), then job rows (refresh_job_status), as everywhere else.
-- Raises BA002 only when the setting ballast.restart_grace_ms is malformed.
create or replace function ballast.reap(p_dead_after_ms integer default 10000, p_lost_after_ms integer default 2000)
returns table (dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
language plpgsql
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
     where p.status = 'waiting' and p.wait_key like 'ballast:items:%' and p.items_open = 0
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

-- watchdog_heartbeat(worker_id, lease_ms) -> (alive, db_now, running)
-- The heartbeat of a worker's watchdog thread (src/watchdog.ts) while the worker's main thread is stalled (a step
-- blocking the event loop) and cannot heartbeat itself: stamps the worker and extends the lease of EVERY running
-- attempt of the worker to now + lease_ms (at least 1 s), since the stalled thread cannot say which it still tracks.
-- Returns alive = false, changing nothing, when the worker is unknown or was declared stopped; db_now (ballast.now());
-- and running: the worker's running attempts as a JSON array of {attempt_id, step_id, started_at, timeout_ms}
-- (timeout_ms null: the step has none), from which the watchdog decides whether the stall outlasted a timeout.
-- Locks the worker row, then the attempts (the order of heartbeat_worker). Raises nothing.
create function ballast.watchdog_heartbeat(p_worker_id text, p_lease_ms integer default 30000)
returns table (alive boolean, db_now timestamptz, running jsonb)
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
    update ballast_private.attempts
       set lease_expires_at = greatest(lease_expires_at, v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0))
     where worker_id = p_worker_id and outcome = 'running';
  end if;
  return query
  select v_alive, v_now,
         coalesce((select jsonb_agg(jsonb_build_object('attempt_id', a.id, 'step_id', a.step_id,
                                                       'started_at', a.started_at, 'timeout_ms', s.timeout_ms)
                                    order by a.id)
                     from ballast_private.attempts a
                     join ballast_private.steps s on s.id = a.step_id
                    where a.worker_id = p_worker_id and a.outcome = 'running'), '[]'::jsonb);
end
$fn$;

-- report_worker_fault(worker_id, error_class, blamed_attempt_ids, message, quarantine_after)
--   -> one row per attempt ended: (attempt_id, step_id, step_status, crashes, blamed)
-- A worker process is blocked (error_class 'blocked_worker': its watchdog found its event loop stalled past a running
-- step's timeout, and kills the process right after this call) or crashed (error_class 'crashed_worker': its
-- supervisor saw it die abnormally: an uncaught exception, an out-of-memory abort). The worker is marked stopped (its
-- graphile-worker pool unlocked) and every running attempt of it ends 'crashed':
--  - a blamed one (in blamed_attempt_ids; all of them when it is null) with error_class: its step's crashes count
--    goes up by one, and when it reaches quarantine_after (default 2, 1 to 1000) the step is quarantined: failed
--    permanently with that class (the dead-letter set; dependants skipped; error.quarantined = true); otherwise it
--    is retried as after any failure (the attempt is charged, so a step out of attempts fails too);
--  - the others with class 'worker_lost', retried, not counted: bystanders of the step that blocked the worker.
-- The watchdog blames the attempt whose handler held the event loop when it knows it, else all; the supervisor
-- cannot tell and blames all. An attempt that is no longer its step's running attempt is skipped.
-- Raises BA002 for an unknown error_class, a missing worker_id or quarantine_after out of range; BA007 when the
-- worker is not registered.
-- Lock order: the worker row, then each step row (ascending id, waiting: a report is rare and must not skip one),
-- then the job rows (refresh_job_status): the order of reap.
create function ballast.report_worker_fault(
  p_worker_id text, p_error_class text, p_blamed_attempt_ids bigint[] default null, p_message text default null,
  p_quarantine_after integer default 2
) returns table (attempt_id bigint, step_id bigint, step_status text, crashes integer, blamed boolean)
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_pool_id text;
  v_attempt record;
  v_step ballast_private.steps;
  v_blamed boolean;
  v_class text;
  v_message text;
  v_error jsonb;
  v_status text;
  v_jobs bigint[] := '{}';
  v_job bigint;
begin
  if p_worker_id is null or p_worker_id = '' then
    perform ballast_private.bad_argument('worker_id', 'is missing', 'Pass the id of the worker that blocked or crashed.');
  end if;
  if p_error_class is null or p_error_class not in ('blocked_worker', 'crashed_worker') then
    perform ballast_private.bad_argument('error_class', format('%L is not ''blocked_worker'' or ''crashed_worker''', p_error_class),
      'Pass ''blocked_worker'' (event loop stalled past a timeout) or ''crashed_worker'' (process died abnormally).');
  end if;
  if p_quarantine_after is null or p_quarantine_after not between 1 and 1000 then
    perform ballast_private.bad_argument('quarantine_after', format('%s is not from 1 to 1000', p_quarantine_after),
      'Pass after how many blocked or crashed attempts a step is quarantined, e.g. 2.');
  end if;
  perform set_config('ballast.actor', case when p_error_class = 'blocked_worker' then 'watchdog' else 'supervisor' end, true);

  select w.pool_id into v_pool_id from ballast_private.workers w where w.id = p_worker_id for update;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered', p_worker_id),
      hint = 'Pass the id the worker registered with (ballast.workers).';
  end if;
  update ballast_private.workers w set stopped_at = coalesce(w.stopped_at, v_now) where w.id = p_worker_id;
  if v_pool_id is not null then
    perform graphile_worker.force_unlock_workers(array[v_pool_id]);
  end if;

  for v_attempt in
    select a.id, a.step_id, a.number from ballast_private.attempts a
     where a.worker_id = p_worker_id and a.outcome = 'running'
     order by a.step_id
  loop
    select * into v_step from ballast_private.steps s where s.id = v_attempt.step_id for update;
    continue when v_step.status <> 'running' or v_step.attempts <> v_attempt.number;
    v_blamed := p_blamed_attempt_ids is null or v_attempt.id = any(p_blamed_attempt_ids);
    v_class := case when v_blamed then p_error_class else 'worker_lost' end;
    v_message := case
      when not v_blamed then format('worker %s was stopped while running this step: another step %s it', p_worker_id,
                                    case when p_error_class = 'blocked_worker' then 'blocked' else 'crashed' end)
      when coalesce(p_message, '') <> '' then p_message
      when p_error_class = 'blocked_worker'
        then format('worker %s was blocked (its event loop stalled) while running this step; the process was killed', p_worker_id)
      else format('worker %s crashed while running this step', p_worker_id) end;
    update ballast_private.attempts a
       set outcome = 'crashed', finished_at = v_now, error_class = v_class, error_message = v_message,
           error_retryable = true
     where a.id = v_attempt.id;
    if v_blamed then
      update ballast_private.steps s set crashes = s.crashes + 1 where s.id = v_step.id
      returning * into v_step;
    end if;
    if v_blamed and v_step.crashes >= p_quarantine_after then
      v_error := jsonb_build_object('class', v_class, 'retryable', false, 'attempt', v_step.attempts, 'quarantined', true,
        'message', format('quarantined after %s blocked or crashed workers: %s', v_step.crashes, v_message));
      v_status := ballast_private.settle_failure(v_step, v_error, false, null, v_now);
    else
      v_error := jsonb_build_object('class', v_class, 'message', v_message, 'retryable', true, 'attempt', v_step.attempts);
      v_status := ballast_private.settle_failure(v_step, v_error, true, null, v_now);
    end if;
    v_jobs := v_jobs || v_step.job_id;
    attempt_id := v_attempt.id;
    step_id := v_step.id;
    step_status := v_status;
    crashes := v_step.crashes;
    blamed := v_blamed;
    return next;
  end loop;

  foreach v_job in array (select coalesce(array_agg(distinct j), '{}') from unnest(v_jobs) j) loop
    perform ballast_private.refresh_job_status(v_job);
  end loop;
end
$fn$;
