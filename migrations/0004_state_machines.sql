-- Up Migration
--
-- Baseline, file 4 of 11: the state machines, the audit trail and the job-status derivation.
--
-- Why triggers: every path that changes a status (ballast's functions, an operator's UPDATE in psql, a future
-- migration) goes through the same checks. A status change not listed in ballast_private.step_transitions /
-- job_transitions raises BA001 (steps: a statement-level trigger over the statement's transition tables; jobs: a row
-- trigger for changes written directly, update_job_counters for derived ones), and so is a replay edge (via_replay:
-- a finished step or job running again) outside ballast.replay_step / replay_job, which set the transaction-local
-- setting ballast.replay = on. One INSERT ... SELECT per statement appends the audit events; the job rows keep counters
-- of their steps by status, updated once per statement from the deltas, and a job's status is derived from them
-- (derive_job_status). Events cannot be updated, deleted or truncated; they carry the writer's transaction id (tx) so
-- that ballast.events_after gives live and resuming readers one order; each statement that appends events sends one
-- NOTIFY ballast_events with ids only.
--
-- Actor and reason of an event come from the transaction-local settings `ballast.actor` and `ballast.reason`, which the
-- ballast functions set (set_config(..., true)) before they change anything. Lock order (all paths): step rows (in id
-- order where several), then map parents (id order), then job rows.
-- Folded from the old 0003, 0013, 0014, 0020 and 0025.

-- job_status_guard: BEFORE UPDATE of status on jobs, for status changes written directly (an operator's UPDATE in
-- psql, cancel): it must raise BA001 before the table's check constraints see the row; stamps updated_at.
-- Changes derived from the counters are checked by update_job_counters itself, once per statement, and skip it
-- (the trigger's WHEN reads the setting ballast.deriving_jobs).
-- Raises BA001 (invalid_transition) for an edge not in ballast_private.job_transitions, and for a replay edge
-- (via_replay) outside a replay (the setting ballast.replay not 'on'). The message names the job and both
-- statuses; the hint lists the ordinary statuses allowed from the old one (and, for a replay edge, points to
-- ballast.replay_job).
create function ballast_private.job_status_guard() returns trigger
language plpgsql volatile
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
  for each row when (old.status is distinct from new.status
                     and current_setting('ballast.deriving_jobs', true) is distinct from 'on')
  execute function ballast_private.job_status_guard();

-- events_append_only: refuses UPDATE and DELETE row by row, and TRUNCATE, with BA009.
create function ballast_private.events_append_only() returns trigger
language plpgsql volatile
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

-- Truncating jobs (with cascade) used to reach the events through their foreign key and be refused there; it is
-- refused here now, with the events' own message (BA009).
create trigger jobs_no_truncate
  before truncate on ballast_private.jobs
  for each statement execute function ballast_private.events_append_only();

-- refresh_job_status(job_id): the job's status. The counters keep it current at the end of every statement that
-- changes a step, so this only reads it (the verbs still call it for their result). Raises BA007 for
-- an unknown job.
create function ballast_private.refresh_job_status(p_job_id bigint) returns text
language plpgsql volatile
as $fn$
declare
  v_status text;
begin
  select j.status into v_status from ballast_private.jobs j where j.id = p_job_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  return v_status;
end
$fn$;

-- fill_step_queue_columns: BEFORE INSERT (and before a step becomes queued) when task is missing: copies the job's
-- task and priority. The WHEN clause is checked in C, so paths that set task pay nothing.
create function ballast_private.fill_step_queue_columns() returns trigger
language plpgsql volatile
as $fn$
begin
  select ballast.task_identifier(j.pipeline, j.pipeline_version), j.priority into new.task, new.priority
    from ballast_private.jobs j where j.id = new.job_id;
  return new;
end
$fn$;

create trigger fill_step_queue_columns
  before insert or update on ballast_private.steps
  for each row when (new.task is null)
  execute function ballast_private.fill_step_queue_columns();

-- stamp_updated_at: BEFORE UPDATE of a step whose status changes while the statement did not set
-- updated_at itself (the hot-path verbs do; an operator's UPDATE in psql does not).
create function ballast_private.stamp_updated_at() returns trigger
language plpgsql volatile
as $fn$
begin
  new.updated_at := ballast.now();
  return new;
end
$fn$;

create trigger stamp_updated_at
  before update on ballast_private.steps
  for each row when (old.status is distinct from new.status and old.updated_at is not distinct from new.updated_at)
  execute function ballast_private.stamp_updated_at();

-- update_job_counters(job ids, per-job deltas of the counters): applies the deltas to the jobs (locked in id order
-- first, so two transactions touching the same jobs cannot deadlock), and the status derived from the new
-- counters (ballast_private.derive_job_status, first match wins:
-- all final -> cancelled if a step (not an item) was cancelled, failed if one
-- failed, partially_completed if an item failed/was cancelled/skipped, else completed; then running, needs_review,
-- waiting (not for items), retrying; else queued until a step has started, then running). started_at, finished_at,
-- updated_at, result and error change only with the status; result (completed) is the final step's output, or an
-- object of the final steps' outputs by name; error (failed) is the first failed step's error with its name and id.
-- PL/pgSQL, not LANGUAGE sql: the statement's plan is cached for the session.
-- Two statements, not one, for two reasons:
--  - correctness: locking the jobs in a CTE and read their counters in another CTE of the same statement, from
--    the statement's snapshot. When a concurrent batch had updated a job after that snapshot, the lock waited for
--    it but the counters were read as they were before it, and its deltas were lost (two workers settling steps
--    of one job at once). The locking read below returns the newest version of each row it locks, and the UPDATE
--    runs after it (PL/pgSQL takes a new snapshot per statement) while the locks are held.
--  - cost: the jobs were read twice, and for a batch the planner preferred a sequential scan of jobs (a hash join)
--    for each; both reads are now one index scan (id = any(array)).
create function ballast_private.update_job_counters(
  p_job bigint[],
  p_total integer[],
  p_final integer[],
  p_running integer[],
  p_review integer[],
  p_waiting integer[],
  p_retrying integer[],
  p_failed integer[],
  p_cancelled integer[],
  p_started integer[],
  p_item_bad integer[]
) returns void
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  n record;
  v_ids bigint[];
  v_from text[];
  v_to text[];
  v_bad record;
  v_allowed text;
begin
  -- 1. Lock the jobs with a change (id order) and read their newest counters plus the deltas.
  with changed as (
    select * from unnest(p_job, p_total, p_final, p_running, p_review, p_waiting, p_retrying, p_failed, p_cancelled,
                         p_started, p_item_bad)
           as t(job_id, d_total, d_final, d_running, d_review, d_waiting, d_retrying, d_failed, d_cancelled, d_started,
                d_item_bad)
     where d_total <> 0 or d_final <> 0 or d_running <> 0 or d_review <> 0 or d_waiting <> 0 or d_retrying <> 0
        or d_failed <> 0 or d_cancelled <> 0 or d_started <> 0 or d_item_bad <> 0)
  select array_agg(x.id order by x.id) as id, array_agg(x.status order by x.id) as old_status,
         array_agg(x.t order by x.id) as t, array_agg(x.f order by x.id) as f, array_agg(x.ru order by x.id) as ru,
         array_agg(x.rv order by x.id) as rv, array_agg(x.wa order by x.id) as wa, array_agg(x.re order by x.id) as re,
         array_agg(x.fa order by x.id) as fa, array_agg(x.ca order by x.id) as ca, array_agg(x.st order by x.id) as st,
         array_agg(x.ib order by x.id) as ib
    into n
    from (select j.id, j.status,
                 j.n_total + c.d_total as t, j.n_final + c.d_final as f, j.n_running + c.d_running as ru,
                 j.n_review + c.d_review as rv, j.n_waiting + c.d_waiting as wa, j.n_retrying + c.d_retrying as re,
                 j.n_failed + c.d_failed as fa, j.n_cancelled + c.d_cancelled as ca, j.n_started + c.d_started as st,
                 j.n_item_bad + c.d_item_bad as ib
            from ballast_private.jobs j join changed c on c.job_id = j.id
           where j.id = any(array(select job_id from changed))
           order by j.id
             for no key update of j
          offset 0) x;
  if n.id is null then
    return;
  end if;

  -- 2. Write the counters and the status derived from them. The transition check of these derived changes is done
  -- below, once for all rows; the row guard of 0003 (job_status_guard) skips them (its WHEN reads this setting).
  perform set_config('ballast.deriving_jobs', 'on', true);
  with d as (
    select x.*, ballast_private.derive_job_status(x.t, x.f, x.ru, x.rv, x.wa, x.re, x.fa, x.ca, x.st, x.ib) as status
      from unnest(n.id, n.old_status, n.t, n.f, n.ru, n.rv, n.wa, n.re, n.fa, n.ca, n.st, n.ib)
           as x(id, old_status, t, f, ru, rv, wa, re, fa, ca, st, ib)),
  u as (
  update ballast_private.jobs j
     set n_total = d.t, n_final = d.f, n_running = d.ru, n_review = d.rv, n_waiting = d.wa, n_retrying = d.re,
         n_failed = d.fa, n_cancelled = d.ca, n_started = d.st, n_item_bad = d.ib,
         status = d.status,
         updated_at = case when d.status <> d.old_status then v_now else j.updated_at end,
         started_at = case when d.status <> d.old_status
                           then coalesce(j.started_at, case when d.status <> 'queued' then v_now end)
                           else j.started_at end,
         finished_at = case when d.status = d.old_status then j.finished_at
                            when d.status in ('completed', 'partially_completed', 'failed', 'cancelled') then v_now end,
         result = case when d.status = d.old_status then j.result
                       when d.status in ('completed', 'partially_completed') then (
                    select case when count(*) = 1 then (array_agg(s.output))[1] else jsonb_object_agg(s.name, s.output) end
                      from ballast_private.steps s
                     where s.job_id = j.id and s.parent_step_id is null
                       and not exists (select 1 from ballast_private.steps x
                                        where x.job_id = j.id and s.name = any(x.depends_on))) end,
         error = case when d.status = d.old_status then j.error
                      when d.status = 'failed' then (
                   select jsonb_build_object('step', s.name, 'step_id', s.id) || coalesce(s.error, '{}')
                     from ballast_private.steps s
                    where s.job_id = j.id and s.status = 'failed' and s.parent_step_id is null
                    order by s.finished_at, s.id limit 1) end
    from d
   where j.id = d.id and j.id = any(n.id)
  returning j.id, d.old_status, d.status as new_status)
  select array_agg(u.id), array_agg(u.old_status), array_agg(u.new_status) into v_ids, v_from, v_to
    from u where u.old_status <> u.new_status;
  perform set_config('ballast.deriving_jobs', 'off', true);

  -- Every status change must be an edge of job_transitions (a via_replay edge only within a replay): BA001 for the
  -- first offending job, and the whole statement with it.
  select c.id, c.from_status, c.to_status, t.via_replay into v_bad
    from unnest(v_ids, v_from, v_to) as c(id, from_status, to_status)
    left join ballast_private.job_transitions t on t.from_status = c.from_status and t.to_status = c.to_status
   where t.from_status is null or (t.via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on')
   order by c.id limit 1;
  if found then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)') into v_allowed
      from ballast_private.job_transitions where from_status = v_bad.from_status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('job %s cannot go from %s to %s', v_bad.id, v_bad.from_status, v_bad.to_status),
      hint = format('From %s a job may go to: %s%s.', v_bad.from_status, v_allowed,
                    case when v_bad.via_replay then '; running it again takes ballast.replay_job' else '' end);
  end if;
end
$fn$;

-- apply_step_deltas(rows): the counter deltas of a set of step rows (sign +1 for a new row image, -1 for an old one),
-- once per statement:
--  - map parents (id order): items_open += the change in their items that are not final, at once (finish_map reads
--    it in the same transaction);
--  - jobs: the per-job deltas go to update_job_counters at once, or, inside a batch that deferred them
--    (defer_job_counters: the setting ballast.defer_counters is on), into the session's temporary table
--    ballast_job_deltas, which flush_job_counters applies once at the end of the batch: a batch then updates each
--    of its jobs once instead of once per statement.
create function ballast_private.apply_step_deltas(
  p_job bigint[],
  p_sgn integer[],
  p_status text[],
  p_items_wait boolean[],
  p_parent bigint[],
  p_started boolean[]
) returns void
language plpgsql volatile
as $fn$
declare
  v_d record;
begin
  -- Map parents first (steps before jobs), and only when items are among the rows: an UPDATE of steps fires the
  -- statement triggers of steps again even when it changes no row.
  if exists (select 1 from unnest(p_parent) p where p is not null) then
    with r as (select * from unnest(p_parent, p_sgn, p_status) as t(parent_step_id, sgn, status)
                where parent_step_id is not null),
    d as (select parent_step_id, sum(sgn * (status not in ('succeeded', 'failed', 'cancelled', 'skipped'))::int) as n
            from r group by parent_step_id),
    locked as (select p.id from ballast_private.steps p
                where p.id in (select parent_step_id from d where n <> 0) order by p.id for no key update)
    update ballast_private.steps p set items_open = p.items_open + d.n
      from d join locked l on l.id = d.parent_step_id
     where p.id = d.parent_step_id;
  end if;

  with r as (select * from unnest(p_job, p_sgn, p_status, p_items_wait, p_parent, p_started)
                             as t(job_id, sgn, status, items_wait, parent_step_id, started)),
  delta as (
    select job_id,
           sum(sgn)::int as d_total,
           sum(sgn * (status in ('succeeded', 'failed', 'cancelled', 'skipped'))::int)::int as d_final,
           sum(sgn * (status = 'running')::int)::int as d_running,
           sum(sgn * (status = 'needs_review')::int)::int as d_review,
           sum(sgn * (status = 'waiting' and not items_wait)::int)::int as d_waiting,
           sum(sgn * (status = 'retrying')::int)::int as d_retrying,
           sum(sgn * (status = 'failed' and parent_step_id is null)::int)::int as d_failed,
           sum(sgn * (status = 'cancelled' and parent_step_id is null)::int)::int as d_cancelled,
           sum(sgn * started::int)::int as d_started,
           sum(sgn * (status in ('failed', 'cancelled', 'skipped') and parent_step_id is not null)::int)::int as d_item_bad
      from r group by job_id)
  select array_agg(job_id order by job_id) as job, array_agg(d_total order by job_id) as total,
         array_agg(d_final order by job_id) as final, array_agg(d_running order by job_id) as running,
         array_agg(d_review order by job_id) as review, array_agg(d_waiting order by job_id) as waiting,
         array_agg(d_retrying order by job_id) as retrying, array_agg(d_failed order by job_id) as failed,
         array_agg(d_cancelled order by job_id) as cancelled, array_agg(d_started order by job_id) as started,
         array_agg(d_item_bad order by job_id) as item_bad
    into v_d from delta;
  if v_d.job is null then
    return;
  end if;
  if current_setting('ballast.defer_counters', true) = 'on' then
    insert into pg_temp.ballast_job_deltas
    select * from unnest(v_d.job, v_d.total, v_d.final, v_d.running, v_d.review, v_d.waiting, v_d.retrying, v_d.failed,
                         v_d.cancelled, v_d.started, v_d.item_bad);
  else
    perform ballast_private.update_job_counters(v_d.job, v_d.total, v_d.final, v_d.running, v_d.review, v_d.waiting,
                                                v_d.retrying, v_d.failed, v_d.cancelled, v_d.started, v_d.item_bad);
  end if;
end
$fn$;

-- defer_job_counters(): from now until flush_job_counters in this transaction, the job counters' deltas collect in
-- the session's temporary table ballast_job_deltas (created on first use, rows deleted at commit) instead of
-- updating the jobs after every statement. Only the batch verbs use it, and they flush before they return.
create function ballast_private.defer_job_counters() returns void
language plpgsql volatile
as $fn$
begin
  if to_regclass('pg_temp.ballast_job_deltas') is null then
    create temporary table ballast_job_deltas (
      job_id bigint, d_total int, d_final int, d_running int, d_review int, d_waiting int, d_retrying int,
      d_failed int, d_cancelled int, d_started int, d_item_bad int) on commit delete rows;
  end if;
  perform set_config('ballast.defer_counters', 'on', true);
  -- And the audit events' ids, for one ballast_events notification at the end (flush_events_notice).
  perform set_config('ballast.collect_events', 'on', true);
end
$fn$;

-- flush_job_counters(): applies the deltas collected since defer_job_counters, one UPDATE for all their jobs, and
-- stops deferring.
create function ballast_private.flush_job_counters() returns void
language plpgsql volatile
as $fn$
declare
  v_d record;
begin
  perform set_config('ballast.defer_counters', 'off', true);
  select array_agg(job_id order by job_id) as job, array_agg(t order by job_id) as total, array_agg(f order by job_id) as final,
         array_agg(ru order by job_id) as running, array_agg(rv order by job_id) as review,
         array_agg(wa order by job_id) as waiting, array_agg(re order by job_id) as retrying,
         array_agg(fa order by job_id) as failed, array_agg(ca order by job_id) as cancelled,
         array_agg(st order by job_id) as started, array_agg(ib order by job_id) as item_bad
    into v_d
    from (select job_id, sum(d_total)::int as t, sum(d_final)::int as f, sum(d_running)::int as ru,
                 sum(d_review)::int as rv, sum(d_waiting)::int as wa, sum(d_retrying)::int as re,
                 sum(d_failed)::int as fa, sum(d_cancelled)::int as ca, sum(d_started)::int as st,
                 sum(d_item_bad)::int as ib
            from pg_temp.ballast_job_deltas group by job_id) x;
  delete from pg_temp.ballast_job_deltas;
  if v_d.job is not null then
    perform ballast_private.update_job_counters(v_d.job, v_d.total, v_d.final, v_d.running, v_d.review, v_d.waiting,
                                                v_d.retrying, v_d.failed, v_d.cancelled, v_d.started, v_d.item_bad);
  end if;
end
$fn$;

-- steps_changed: AFTER UPDATE of steps, once per statement, over its transition tables.
--  1. Every status change must be an edge of ballast_private.step_transitions (a via_replay edge only with the
--     setting ballast.replay = on, as ballast.replay_step sets it). The first offending row raises BA001 (message:
--     step, both statuses; hint: the ordinary statuses allowed from the old one), and the whole statement with it.
--  2. One INSERT ... SELECT appends one event per status change (step_<status>; data as before), in step id order.
--  3. Counters (apply_step_deltas), when a column they read changed.
--  4. NOTIFY ballast_queue (empty payload) when a step became queued: idle workers claim.
-- Statements that change no status, no wait_key, no attempts and no parent (progress, counters) return at step 1's
-- cheap test.
create function ballast_private.steps_changed() returns trigger
language plpgsql volatile
as $fn$
declare
  v_bad record;
  v_allowed text;
begin
  if not exists (select 1 from old_t o join new_t n on n.id = o.id
                  where o.status <> n.status or (o.attempts > 0) <> (n.attempts > 0)
                     or o.wait_key is distinct from n.wait_key or o.job_id <> n.job_id
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
     from (select n.job_id, 1 as sgn, n.status, coalesce(n.wait_key like 'ballast:items:%', false) as items_wait,
                  n.parent_step_id, n.attempts > 0 as started
             from new_t n
           union all
           select o.job_id, -1, o.status, coalesce(o.wait_key like 'ballast:items:%', false), o.parent_step_id,
                  o.attempts > 0
             from old_t o) r;

  if exists (select 1 from new_t n join old_t o on o.id = n.id where n.status = 'queued' and o.status <> 'queued') then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

create trigger steps_changed
  after update on ballast_private.steps
  referencing old table as old_t new table as new_t
  for each statement execute function ballast_private.steps_changed();

-- steps_inserted: AFTER INSERT of steps, once per statement: counters of the new rows, NOTIFY ballast_queue when
-- one is queued. (Creating a step is not a status change: no event.)
-- An INSERT whose jobs were counted when they were inserted (the set-based submission) adds no counters again.
create function ballast_private.steps_inserted() returns trigger
language plpgsql volatile
as $fn$
begin
  if current_setting('ballast.steps_counted', true) is distinct from 'on' then
    perform ballast_private.apply_step_deltas(array_agg(n.job_id), array_agg(1), array_agg(n.status),
                                              array_agg(coalesce(n.wait_key like 'ballast:items:%', false)),
                                              array_agg(n.parent_step_id), array_agg(n.attempts > 0))
       from new_t n;
  end if;
  if exists (select 1 from new_t n where n.status = 'queued') then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

create trigger steps_inserted
  after insert on ballast_private.steps
  referencing new table as new_t
  for each statement execute function ballast_private.steps_inserted();

-- jobs_inserted: AFTER INSERT of jobs, once per statement: one job_submitted event per new job (data: pipeline,
-- version, tenant, priority), in id order.
create function ballast_private.jobs_inserted() returns trigger
language plpgsql volatile
as $fn$
begin
  insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
  select n.id, 'job_submitted', n.status, coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
         nullif(current_setting('ballast.reason', true), ''),
         jsonb_build_object('pipeline', n.pipeline, 'version', n.pipeline_version, 'tenant_id', n.tenant_id,
                            'priority', n.priority),
         ballast.now()
    from new_t n order by n.id;
  return null;
end
$fn$;

create trigger jobs_inserted
  after insert on ballast_private.jobs
  referencing new table as new_t
  for each statement execute function ballast_private.jobs_inserted();

-- jobs_changed: AFTER UPDATE of jobs, once per statement: one event per status change (job_<status>; a failed job's
-- event carries its error), in id order. The transition check stays a BEFORE row trigger (job_status_guard):
-- jobs change status two or three times in their life, and a refused change must raise BA001 before the table's
-- check constraints (job_finished_when_terminal) see the row.
create function ballast_private.jobs_changed() returns trigger
language plpgsql volatile
as $fn$
begin
  insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
  select n.id, 'job_' || n.status, n.status, coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
         nullif(current_setting('ballast.reason', true), ''),
         case when n.status = 'failed' then jsonb_build_object('error', n.error) end,
         ballast.now()
    from new_t n join old_t o on o.id = n.id
   where o.status <> n.status
   order by n.id;
  return null;
end
$fn$;

create trigger jobs_changed
  after update on ballast_private.jobs
  referencing old table as old_t new table as new_t
  for each statement execute function ballast_private.jobs_changed();

-- jobs_deleted: the guarantee the events' foreign key gave: a job with audit events cannot be deleted (BA009).
create function ballast_private.jobs_deleted() returns trigger
language plpgsql volatile
as $fn$
begin
  if exists (select 1 from old_t o join ballast_private.events e on e.job_id = o.id) then
    raise exception using errcode = 'BA009', message = 'a job with audit events cannot be deleted',
      hint = 'The audit trail keeps every job it mentions; prune payloads with ballast.prune_history instead.';
  end if;
  return null;
end
$fn$;

create trigger jobs_deleted
  after delete on ballast_private.jobs
  referencing old table as old_t
  for each statement execute function ballast_private.jobs_deleted();

-- flush_events_notice(): the one ballast_events notification of a worker's batch: the ids its statements collected
-- (ballast_private.notify_events, 0004_state_machines, collects them while ballast.defer_counters is on), as {"ids":[...]} while that stays under 7,500 bytes, else {"min_id","max_id","count"}.
create function ballast_private.flush_events_notice() returns void
language plpgsql volatile
as $fn$
declare
  v_ids text := nullif(current_setting('ballast.batch_event_ids', true), '');
  v_list bigint[];
begin
  perform set_config('ballast.collect_events', 'off', true);
  if v_ids is null then
    return;
  end if;
  perform set_config('ballast.batch_event_ids', '', true);
  if length(v_ids) + 10 <= 7500 then
    perform pg_notify('ballast_events', '{"ids":[' || v_ids || ']}');
  else
    v_list := string_to_array(v_ids, ',')::bigint[];
    perform pg_notify('ballast_events', json_build_object('min_id', (select min(x) from unnest(v_list) x),
      'max_id', (select max(x) from unnest(v_list) x), 'count', cardinality(v_list))::text);
  end if;
end
$fn$;

-- notify_events: AFTER INSERT ... FOR EACH STATEMENT on events. Takes the statement's new rows (transition table
-- new_events); sends one pg_notify('ballast_events', ...) with their ids, or with their id range and count when the
-- list would not fit in 7,500 bytes (the length is bounded before the list is built: count * (digits of the largest
-- id + 1)). Sends nothing for a statement that inserted no row. Raises nothing of its own; takes no lock beyond
-- NOTIFY's own (taken at commit).
create function ballast_private.notify_events() returns trigger
language plpgsql volatile
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

-- steps_deleted: AFTER DELETE of steps, once per statement: their attempts go with them (what ON DELETE CASCADE of
-- attempts.step_id did). Attempts of a job go with its steps, which go with the job (steps.job_id cascades).
create function ballast_private.steps_deleted() returns trigger
language plpgsql volatile
as $fn$
begin
  delete from ballast_private.attempts a where a.step_id in (select o.id from old_t o);
  return null;
end
$fn$;

create trigger steps_deleted
  after delete on ballast_private.steps
  referencing old table as old_t
  for each statement execute function ballast_private.steps_deleted();

-- derive_job_status(counters of a job's steps by status) -> the job's status, by the rules in the contract of
-- update_job_counters (first match wins). Immutable; update_job_counters calls it for each job it changes.
create function ballast_private.derive_job_status(
  p_total integer,
  p_final integer,
  p_running integer,
  p_review integer,
  p_waiting integer,
  p_retrying integer,
  p_failed integer,
  p_cancelled integer,
  p_started integer,
  p_item_bad integer
) returns text
language sql immutable parallel safe
as $fn$
  select case
    when p_final = p_total and p_cancelled > 0 then 'cancelled'
    when p_final = p_total and p_failed > 0 then 'failed'
    when p_final = p_total and p_item_bad > 0 then 'partially_completed'
    when p_final = p_total then 'completed'
    when p_running > 0 then 'running'
    when p_review > 0 then 'needs_review'
    when p_waiting > 0 then 'waiting'
    when p_retrying > 0 then 'retrying'
    when p_started > 0 then 'running'
    else 'queued' end
$fn$;
comment on function ballast_private.derive_job_status(integer,integer,integer,integer,integer,integer,integer,integer,integer,integer) is 'A job''s status from its step counters (rules of 0003, first match wins); used by update_job_counters.';

-- ballast.events_after(after, tenant_id, job_id, limit): the events that followed event `after` in delivery order
-- ((tx, id), see above), final ones only, at most `limit` (default 1000); of one tenant and/or one job when given.
-- `after` 0 (or null) starts from the first event. What a live subscriber receives after `after` is exactly this
-- sequence (and what comes after it). Each row carries the event with its job's tenant and its step's name, and
-- `watermark`, the transaction below which events were final when this ran (tx and watermark as bigint).
-- Reads under the caller's role: row-level security hides other tenants' events, so an `after` the caller cannot
-- see is unknown. Raises BA007 (not_found) when `after` names no event the caller can see (never written, another
-- tenant's, or pruned by retention): read the current state instead and follow from there.
create function ballast.events_after(
  p_after bigint,
  p_tenant_id text default null::text,
  p_job_id bigint default null::bigint,
  p_limit integer default 1000
) returns table(id bigint, tx bigint, job_id bigint, step_id bigint, tenant_id text, step_name text, type text, status text, at timestamp with time zone, watermark bigint)
language plpgsql stable
as $fn$
declare
  v_tx xid8 := '0'::xid8;
  v_id bigint := 0;
  v_watermark xid8 := pg_snapshot_xmin(pg_current_snapshot());
begin
  if p_limit is null or p_limit < 1 or p_limit > 10000 then
    raise exception 'limit must be between 1 and 10000, got %', p_limit using errcode = '22023',
      hint = 'read a long history in pages: pass the last id of one page as `after` of the next';
  end if;
  if coalesce(p_after, 0) <> 0 then
    select e.tx, e.id into v_tx, v_id from ballast_private.events e where e.id = p_after;
    if not found then
      raise exception 'event % does not exist (never written, pruned by retention, or not visible to you)', p_after
        using errcode = 'BA007', hint = 'read the current state (the job, or the events query) and follow from its newest event';
    end if;
  end if;
  -- xid8 as bigint for the caller (transaction ids stay far below 2^63).
  return query
    select e.id, e.tx::text::bigint, e.job_id, e.step_id, j.tenant_id, s.name, e.type, e.status, e.at,
           v_watermark::text::bigint
      from ballast_private.events e
      join ballast.jobs j on j.id = e.job_id
      left join ballast.steps s on s.id = e.step_id
     where (e.tx, e.id) > (v_tx, v_id) and e.tx < v_watermark
       and (p_tenant_id is null or j.tenant_id = p_tenant_id)
       and (p_job_id is null or e.job_id = p_job_id)
     order by e.tx, e.id
     limit p_limit;
end
$fn$;
grant execute on function ballast.events_after(bigint,text,bigint,integer) to ballast_client, ballast_operator, ballast_reporter;
