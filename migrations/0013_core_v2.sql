-- Up Migration
--
-- 0013: execution core v2. The step rows are the queue; bookkeeping is set-based.
--
-- Why. Under v1 a step's truth lived in two places (its row here and a graphile-worker wake-up row) joined by
-- per-row triggers: a lost or deleted wake-up stranded a `retrying` step for ever, and every step paid two
-- transactions, ~40 statements inside functions and row triggers and a recount of its job's steps twice
-- (0.13-0.18 x bare graphile-worker). v2:
--
--  1. The queue is the steps table. A step is runnable when it is `queued`, or `retrying` with next_run_at due.
--     ballast.claim_steps takes up to n of them with FOR UPDATE SKIP LOCKED over partial indexes, only for the
--     pipeline versions (steps.task) the worker has code for, lower priority first, and within a priority steps that
--     already ran (retries, reclaimed or released steps: attempts > 0) before new ones. Concurrency groups are
--     applied in the same claim. Nothing else can strand a step: a lost notification delays it by one poll.
--     ballast_private.wake_step, which added a graphile-worker job per step, is now a no-op kept for the verbs that
--     call it; graphile-worker still runs cron (retention) and maintenance.
--  2. Batched claim and settlement: ballast.settle_and_claim records many finished attempts (successes set-based,
--     failures per row inside a subtransaction each) and claims the next steps in one transaction. A stale attempt
--     is answered per id ('stale'), never fails the batch.
--  3. Statement-level triggers over transition tables replace the row triggers of 0003: one statement checks every
--     status change against the transition tables (BA001, whatever wrote it: a verb, an operator's UPDATE in psql),
--     one INSERT ... SELECT appends the audit events, and the job rows keep counters of their steps by status,
--     updated once per statement from the deltas (no recount: ballast_private.refresh_job_status now only reads the
--     job). A job's status is derived from its counters with the rules of 0003; result and error are computed on the
--     transition into a final status only. A map step keeps the number of its items that are not final
--     (steps.items_open), so finishing an item is O(1) instead of a count of all items.
--  4. Hot rows: jobs get fillfactor 70 so counter-only updates stay HOT; events lose their foreign keys (each one
--     took a key-share lock on the job, step and attempt row per event; events are written only by these triggers
--     from rows of the same transaction); attempts.worker_id loses its foreign key (a key-share lock on the one
--     worker row per claim, a MultiXact when two connections of a worker claim at once). Deleting a job that has
--     events stays refused (a statement trigger, BA009).
--
-- Lock order (all paths): step rows (in id order where several), then map parents (id order), then job rows (id
-- order), so two batches touching the same jobs cannot deadlock.
--
-- Migrating a busy database: the counter backfill reads every step once and updates every job row (a table
-- rewrite's worth of WAL on a large history); run it in a quiet period.

-- 1. Columns -----------------------------------------------------------------------------------------------------

alter table ballast_private.jobs
  add column n_total integer not null default 0,
  add column n_final integer not null default 0,
  add column n_running integer not null default 0,
  add column n_review integer not null default 0,
  add column n_waiting integer not null default 0,
  add column n_retrying integer not null default 0,
  add column n_failed integer not null default 0,
  add column n_cancelled integer not null default 0,
  add column n_started integer not null default 0,
  add column n_item_bad integer not null default 0;
alter table ballast_private.jobs set (fillfactor = 70);

comment on column ballast_private.jobs.n_total is
  'Counters of the job''s steps by status (n_*), kept by the statement triggers of 0013; the job status is derived from them.';

-- task: ballast.task_identifier(pipeline, version) of the step's job, and priority: the job's, copied onto the step
-- so the claim can filter and order on one table. Filled by the insert paths, or by fill_step_queue_columns.
alter table ballast_private.steps
  add column task text,
  add column priority smallint not null default 0,
  add column items_open integer not null default 0
    constraint step_items_open_nonnegative check (items_open >= 0);

comment on column ballast_private.steps.items_open is
  'A map step: how many of its items are not final yet (kept by the statement triggers of 0013).';

-- fill_step_queue_columns: BEFORE INSERT (and before a step becomes queued) when task is missing: copies the job's
-- task and priority. The WHEN clause is checked in C, so paths that set task pay nothing.
create function ballast_private.fill_step_queue_columns() returns trigger
language plpgsql
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

-- 2. Backfill -----------------------------------------------------------------------------------------------------

update ballast_private.steps s
   set task = ballast.task_identifier(j.pipeline, j.pipeline_version), priority = j.priority
  from ballast_private.jobs j
 where j.id = s.job_id;

update ballast_private.steps p
   set items_open = c.n
  from (select parent_step_id, count(*)::int as n from ballast_private.steps
         where parent_step_id is not null and status not in ('succeeded', 'failed', 'cancelled', 'skipped')
         group by parent_step_id) c
 where p.id = c.parent_step_id;

update ballast_private.jobs j
   set n_total = c.t, n_final = c.f, n_running = c.ru, n_review = c.rv, n_waiting = c.wa, n_retrying = c.re,
       n_failed = c.fa, n_cancelled = c.ca, n_started = c.st, n_item_bad = c.ib
  from (select job_id, count(*)::int as t,
               count(*) filter (where status in ('succeeded', 'failed', 'cancelled', 'skipped'))::int as f,
               count(*) filter (where status = 'running')::int as ru,
               count(*) filter (where status = 'needs_review')::int as rv,
               count(*) filter (where status = 'waiting' and wait_key not like 'ballast:items:%')::int as wa,
               count(*) filter (where status = 'retrying')::int as re,
               count(*) filter (where status = 'failed' and parent_step_id is null)::int as fa,
               count(*) filter (where status = 'cancelled' and parent_step_id is null)::int as ca,
               count(*) filter (where attempts > 0)::int as st,
               count(*) filter (where status in ('failed', 'cancelled', 'skipped') and parent_step_id is not null)::int as ib
          from ballast_private.steps group by job_id) c
 where j.id = c.job_id;

-- The per-step wake-ups of v1 are not needed any more: the step rows are the queue.
delete from graphile_worker._private_jobs
 where task_id in (select id from graphile_worker._private_tasks where identifier like 'ballast_step:%')
   and locked_at is null;

-- 3. The queue's indexes ------------------------------------------------------------------------------------------

-- Runnable steps outside concurrency groups, in claim order: priority, then steps that already ran (attempts > 0:
-- retries, reclaimed or released steps run before new work of the same priority), then age.
create index steps_queue_idx on ballast_private.steps (priority, (attempts = 0), id)
  where status = 'queued' and concurrency_key is null;
-- Retries by due time (the claim promotes the due ones to queued).
create index steps_retry_due_idx on ballast_private.steps (next_run_at) where status = 'retrying';
-- Concurrency groups with queued steps: steps_queued_concurrency_idx (0001).

-- 4. Statement-level triggers -------------------------------------------------------------------------------------

drop trigger step_status_guard on ballast_private.steps;
drop trigger record_step_event on ballast_private.steps;
drop trigger record_job_event on ballast_private.jobs;
drop trigger record_job_submitted on ballast_private.jobs;
drop function ballast_private.step_status_guard();
drop function ballast_private.record_step_event();
drop function ballast_private.record_job_event();

alter table ballast_private.events
  drop constraint events_job_id_fkey,
  drop constraint events_step_id_fkey,
  drop constraint events_attempt_id_fkey;
alter table ballast_private.attempts drop constraint attempts_worker_id_fkey;

-- stamp_updated_at: BEFORE UPDATE of a step whose status changes while the statement did not set
-- updated_at itself (the hot-path verbs do; an operator's UPDATE in psql does not).
create function ballast_private.stamp_updated_at() returns trigger
language plpgsql
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
-- first, so two transactions touching the same jobs cannot deadlock), and the status derived from the new counters
-- (rules of 0003, first match wins: all final -> cancelled if a step (not an item) was cancelled, failed if one
-- failed, partially_completed if an item failed/was cancelled/skipped, else completed; then running, needs_review,
-- waiting (not for items), retrying; else queued until a step has started, then running). started_at, finished_at,
-- updated_at, result and error change only with the status; result (completed) is the final step's output, or an
-- object of the final steps' outputs by name; error (failed) is the first failed step's error with its name and id.
-- PL/pgSQL, not LANGUAGE sql: the statement's plan is cached for the session.
create function ballast_private.update_job_counters(
  p_job bigint[], p_total integer[], p_final integer[], p_running integer[], p_review integer[], p_waiting integer[],
  p_retrying integer[], p_failed integer[], p_cancelled integer[], p_started integer[], p_item_bad integer[]
) returns void
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_ids bigint[];
  v_from text[];
  v_to text[];
  v_bad record;
  v_allowed text;
begin
  -- The transition check of these derived changes is done below, once for all rows; the row guard of 0003
  -- (job_status_guard) skips them (its WHEN reads this setting).
  perform set_config('ballast.deriving_jobs', 'on', true);
  with changed as (
    select * from unnest(p_job, p_total, p_final, p_running, p_review, p_waiting, p_retrying, p_failed, p_cancelled,
                         p_started, p_item_bad)
           as t(job_id, d_total, d_final, d_running, d_review, d_waiting, d_retrying, d_failed, d_cancelled, d_started,
                d_item_bad)
     where d_total <> 0 or d_final <> 0 or d_running <> 0 or d_review <> 0 or d_waiting <> 0 or d_retrying <> 0
        or d_failed <> 0 or d_cancelled <> 0 or d_started <> 0 or d_item_bad <> 0),
  locked as (
    select j.id from ballast_private.jobs j where j.id in (select job_id from changed) order by j.id for no key update),
  nxt as (
    select j.id, j.status as old_status,
           j.n_total + c.d_total as t, j.n_final + c.d_final as f, j.n_running + c.d_running as ru,
           j.n_review + c.d_review as rv, j.n_waiting + c.d_waiting as wa, j.n_retrying + c.d_retrying as re,
           j.n_failed + c.d_failed as fa, j.n_cancelled + c.d_cancelled as ca, j.n_started + c.d_started as st,
           j.n_item_bad + c.d_item_bad as ib
      from locked l join ballast_private.jobs j on j.id = l.id join changed c on c.job_id = l.id),
  derived as (
    select n.*, case
        when n.f = n.t and n.ca > 0 then 'cancelled'
        when n.f = n.t and n.fa > 0 then 'failed'
        when n.f = n.t and n.ib > 0 then 'partially_completed'
        when n.f = n.t then 'completed'
        when n.ru > 0 then 'running'
        when n.rv > 0 then 'needs_review'
        when n.wa > 0 then 'waiting'
        when n.re > 0 then 'retrying'
        when n.st > 0 then 'running'
        else 'queued' end as status
      from nxt n),
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
    from derived d
   where j.id = d.id
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
  p_job bigint[], p_sgn integer[], p_status text[], p_items_wait boolean[], p_parent bigint[], p_started boolean[]
) returns void
language plpgsql
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
language plpgsql
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
language plpgsql
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

-- announce_queued(): a statement queued steps: NOTIFY ballast_queue (empty payload; idle workers claim). Inside a
-- batch (settle_and_claim: ballast.defer_counters on) it only notes it (ballast.queued_in_batch): the batch claims
-- in the same transaction, and NOTIFYs at its end only if it may have left some (flush_queue_notice). A NOTIFY costs
-- a lock at commit and wakes every worker's listener, the batch's own included.
create function ballast_private.announce_queued() returns void
language plpgsql
as $fn$
begin
  if current_setting('ballast.defer_counters', true) = 'on' then
    perform set_config('ballast.queued_in_batch', 'on', true);
  else
    perform pg_notify('ballast_queue', '');
  end if;
end
$fn$;

-- steps_changed: AFTER UPDATE of steps, once per statement, over its transition tables.
--  1. Every status change must be an edge of ballast_private.step_transitions (a via_replay edge only with the
--     setting ballast.replay = on, as ballast.replay_step sets it). The first offending row raises BA001 (message:
--     step, both statuses; hint: the ordinary statuses allowed from the old one), and the whole statement with it.
--  2. One INSERT ... SELECT appends one event per status change (step_<status>; data as in 0003), in step id order.
--  3. Counters (apply_step_deltas), when a column they read changed.
--  4. NOTIFY ballast_queue (empty payload) when a step became queued: idle workers claim.
-- Statements that change no status, no wait_key, no attempts and no parent (progress, counters) return at step 1's
-- cheap test.
create function ballast_private.steps_changed() returns trigger
language plpgsql
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
-- one is queued. (Creating a step is not a status change: no event, as in 0003.)
create function ballast_private.steps_inserted() returns trigger
language plpgsql
as $fn$
begin
  perform ballast_private.apply_step_deltas(array_agg(n.job_id), array_agg(1), array_agg(n.status),
                                            array_agg(coalesce(n.wait_key like 'ballast:items:%', false)),
                                            array_agg(n.parent_step_id), array_agg(n.attempts > 0))
     from new_t n;
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
language plpgsql
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

-- job_status_guard (0003) stays for status changes written directly (an operator's UPDATE in psql, cancel): it must
-- raise BA001 before the table's check constraints see the row. Changes derived from the counters are checked by
-- update_job_counters itself, once per statement, and skip it.
drop trigger job_status_guard on ballast_private.jobs;
create trigger job_status_guard
  before update of status on ballast_private.jobs
  for each row when (old.status is distinct from new.status
                     and current_setting('ballast.deriving_jobs', true) is distinct from 'on')
  execute function ballast_private.job_status_guard();

-- jobs_changed: AFTER UPDATE of jobs, once per statement: one event per status change (job_<status>; a failed job's
-- event carries its error), in id order. The transition check stays a BEFORE row trigger (job_status_guard, 0003):
-- jobs change status two or three times in their life, and a refused change must raise BA001 before the table's
-- check constraints (job_finished_when_terminal) see the row.
create function ballast_private.jobs_changed() returns trigger
language plpgsql
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
language plpgsql
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

-- Truncating jobs (with cascade) used to reach the events through their foreign key and be refused there; it is
-- refused here now, with the events' own message (BA009).
create trigger jobs_no_truncate
  before truncate on ballast_private.jobs
  for each statement execute function ballast_private.events_append_only();

-- 5. What the counters replace ------------------------------------------------------------------------------------

-- refresh_job_status(job_id): the job's status. The counters keep it current at the end of every statement that
-- changes a step, so this only reads it (the verbs of 0005-0012 still call it for their result). Raises BA007 for
-- an unknown job.
create or replace function ballast_private.refresh_job_status(p_job_id bigint) returns text
language plpgsql
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

-- recount_job(job_id) -> boolean: recomputes a job's counters from its steps and says whether they had drifted
-- (they should never; a test compares them after mixed workloads, and an operator can run it after manual surgery).
create function ballast.recount_job(p_job_id bigint) returns boolean
language plpgsql
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
                 count(*) filter (where status = 'waiting' and wait_key not like 'ballast:items:%')::int as wa,
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

-- wake_step(step, run_at): a no-op since v2 (the step row is the queue; claim_steps finds it when it is queued or
-- its retry is due). Kept because the verbs of 0004-0012 call it.
create or replace function ballast_private.wake_step(p_step_id bigint, p_run_at timestamptz default null) returns void
language plpgsql
as $fn$
begin
  return;
end
$fn$;

-- wake_concurrency_group(key, limit): a no-op since v2 (claim_steps applies the group limits whenever it claims).
create or replace function ballast_private.wake_concurrency_group(p_key text, p_limit integer) returns void
language plpgsql
as $fn$
begin
  return;
end
$fn$;

-- finish_map(parent_step_id): as in 0008, but O(1) while items are still open (steps.items_open > 0), so finishing
-- each of n items costs a constant, not a count of all n. When the last item is final: the parent's output lists
-- every item's outcome; then succeeded, or failed by the map's partial/min_succeeded policy. The caller holds the
-- lock of the item that just finished; the parent row is locked here (items before their map step).
create or replace function ballast_private.finish_map(p_parent_id bigint) returns void
language plpgsql
as $fn$
declare
  v_parent ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_def jsonb;
  v_ok int; v_bad int;
  v_output jsonb;
  v_acceptable boolean;
begin
  select * into v_parent from ballast_private.steps where id = p_parent_id for update;
  if v_parent.status <> 'waiting' or v_parent.items_open > 0 then
    return;
  end if;
  select d into v_def
    from ballast_private.jobs j
    join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
    cross join lateral jsonb_array_elements(p.definition -> 'steps') d
   where j.id = v_parent.job_id and d ->> 'name' = v_parent.name;
  select jsonb_build_object(
           'items', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                      'index', c.item_index, 'status', c.status, 'output', c.output, 'error', c.error))
                    order by c.item_index), '[]'::jsonb),
           'succeeded', count(*) filter (where c.status = 'succeeded'),
           'failed', count(*) filter (where c.status <> 'succeeded')),
         count(*) filter (where c.status = 'succeeded'), count(*) filter (where c.status <> 'succeeded')
    into v_output, v_ok, v_bad
    from ballast_private.steps c where c.parent_step_id = p_parent_id;
  v_acceptable := v_bad = 0
    or (coalesce((v_def -> 'map' ->> 'partial')::boolean, false)
        and v_ok >= coalesce((v_def -> 'map' ->> 'min_succeeded')::int, 1));

  if v_acceptable then
    update ballast_private.steps
       set status = 'succeeded', output = v_output, error = null, finished_at = v_now, wait_key = null
     where id = p_parent_id;
    perform ballast_private.queue_dependants(v_parent.job_id, v_parent.name, v_now);
  else
    update ballast_private.steps set output = v_output where id = p_parent_id;
    select * into v_parent from ballast_private.steps where id = p_parent_id;
    perform ballast_private.settle_failure(v_parent,
      jsonb_build_object('class', 'items_failed', 'retryable', false, 'attempt', v_parent.attempts,
                         'message', format('%s of %s items failed%s', v_bad, v_ok + v_bad,
                                           case when coalesce((v_def -> 'map' ->> 'partial')::boolean, false)
                                                then format(' (at least %s had to succeed)', coalesce((v_def -> 'map' ->> 'min_succeeded')::int, 1))
                                                else ' and the step does not accept partial success' end)),
      false, null, v_now);
  end if;
end
$fn$;

-- 6. The batched verbs --------------------------------------------------------------------------------------------

-- claim_steps(worker_id, tasks, n, lease_ms) -> up to n claims (ballast.step_claim rows, in claim order)
-- Takes runnable steps of the pipeline versions `tasks` (ballast.task_identifier values: the worker's code) for the
-- worker, each with a new attempt (lease now + lease_ms, at least 1 s), in one transaction:
--  1. retries that are due (next_run_at <= now) become queued (at most n, oldest due first, SKIP LOCKED);
--  2. steps of concurrency groups: for each group with queued steps (among the first 500 queued grouped steps), a
--     transaction advisory lock on the group serialises claims of that group, the running steps are counted (a new
--     snapshot: it sees the claims committed before the lock was granted), and at most limit - running are taken;
--  3. the rest from the queue index (steps_queue_idx): priority, then steps that already ran, then id, SKIP LOCKED;
--  4. one UPDATE marks them running (attempts + 1), one INSERT opens their attempts, and the claims are returned
--     with their job, dependency outputs, recorded effects and map item.
-- Steps locked by another transaction are skipped, never waited for. n is capped at 1000. Raises BA007 when the
-- worker is not registered or was declared stopped (it must register again).
create function ballast.claim_steps(p_worker_id text, p_tasks text[], p_n integer, p_lease_ms integer default 30000)
returns setof ballast.step_claim
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_lease timestamptz;
  v_n int := least(greatest(coalesce(p_n, 0), 0), 1000);
  v_ids bigint[] := '{}';
  v_group record;
  v_running int;
  v_free int;
begin
  if v_n = 0 then
    return;
  end if;
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  -- (Probed first: an UPDATE fires the statement triggers of steps even when it changes no row.)
  if exists (select 1 from ballast_private.steps r where r.status = 'retrying' and r.next_run_at <= v_now) then
    update ballast_private.steps s set status = 'queued', queued_at = v_now, next_run_at = null, updated_at = v_now
     where s.id in (select r.id from ballast_private.steps r
                     where r.status = 'retrying' and r.next_run_at <= v_now and r.task = any(p_tasks)
                     order by r.next_run_at limit v_n
                     for update skip locked);
  end if;

  for v_group in
    select q.concurrency_key, max(q.concurrency_limit) as lim
      from (select g.concurrency_key, g.concurrency_limit from ballast_private.steps g
             where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)
             order by g.concurrency_key, g.id limit 500) q
     group by q.concurrency_key
  loop
    exit when cardinality(v_ids) >= v_n;
    perform pg_advisory_xact_lock(hashtextextended(v_group.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_group.concurrency_key and s.status = 'running';
    v_free := least(v_group.lim - v_running, v_n - cardinality(v_ids));
    continue when v_free <= 0;
    v_ids := v_ids || array(
      select s.id from ballast_private.steps s
       where s.concurrency_key = v_group.concurrency_key and s.status = 'queued' and s.task = any(p_tasks)
       order by s.priority, (s.attempts = 0), s.id limit v_free
       for update skip locked);
  end loop;

  if cardinality(v_ids) < v_n then
    v_ids := v_ids || array(
      select s.id from ballast_private.steps s
       where s.status = 'queued' and s.concurrency_key is null and s.task = any(p_tasks)
       order by s.priority, (s.attempts = 0), s.id limit v_n - cardinality(v_ids)
       for update skip locked);
  end if;
  if cardinality(v_ids) = 0 then
    return;
  end if;

  -- The attempts start now (a group lock may have been waited for).
  v_now := ballast.now();
  v_lease := v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0);
  return query
  with upd as (
    update ballast_private.steps s
       set status = 'running', attempts = s.attempts + 1, started_at = coalesce(s.started_at, v_now),
           next_run_at = null, updated_at = v_now
     where s.id = any(v_ids)
    returning s.*),
  att as (
    insert into ballast_private.attempts (step_id, job_id, number, worker_id, started_at, lease_expires_at)
    select u.id, u.job_id, u.attempts, p_worker_id, v_now, v_lease from upd u
     order by u.priority, (u.attempts = 1), u.id
    returning id, step_id)
  select att.id, u.attempts - u.attempt_offset, u.max_attempts, u.id, u.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         case when cardinality(u.depends_on) = 0 then '{}'::jsonb else
           coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                      where d.job_id = u.job_id and d.name = any(u.depends_on)), '{}'::jsonb) end,
         'ballast:' || j.id || ':' || u.name, u.timeout_ms, v_lease,
         case when u.attempts = 1 then '{}'::jsonb else
           coalesce((select jsonb_object_agg(e.key, e.result) from ballast_private.effects e where e.step_id = u.id),
                    '{}'::jsonb) end,
         case when u.parent_step_id is null then u.name
              else (select p.name from ballast_private.steps p where p.id = u.parent_step_id) end,
         u.item_index, u.item
    from upd u join att on att.step_id = u.id join ballast_private.jobs j on j.id = u.job_id
   order by u.priority, (u.attempts = 1), u.id;
end
$fn$;

-- settle_steps(worker_id, ok_attempt_ids, outputs, failed_attempt_ids, errors) -> (attempt_id, step_status) per id
-- Records many finished attempts in one transaction:
--  - successes, set-based: the steps of all the attempts are locked in id order; one UPDATE closes the attempts that
--    still own their step, one UPDATE marks those steps succeeded with their outputs (already checked against the
--    step's contract by the worker), then the pending dependants (locked in id order) lose one dependency per
--    succeeded step they wait for, and those with none left become queued, in one UPDATE; map steps whose last
--    item just finished are finished (finish_map);
--  - failures, one by one as ballast.fail_step (retry with backoff or fail and skip dependants), each inside its own
--    subtransaction so that one bad entry cannot fail the batch.
-- step_status per attempt: succeeded | retrying | failed (the step's status after this attempt), or stale (the
-- attempt no longer owned its step: reclaimed, cancelled, finished; nothing was recorded), or refused: <message>
-- (fail_step refused the error object, BA002; the attempt stays running and is reclaimed when its lease runs out).
-- worker_id names the caller for the audit; a worker declared stopped may still settle what it holds.
create function ballast.settle_steps(
  p_worker_id text, p_ok bigint[], p_outputs jsonb[], p_failed bigint[] default '{}', p_errors jsonb[] default '{}'
) returns table (attempt_id bigint, step_status text)
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_ok bigint[] := coalesce(p_ok, '{}');
  v_failed bigint[] := coalesce(p_failed, '{}');
  v_done bigint[];
  v_jobs bigint[];
  v_names text[];
  v_parents bigint[];
  v_status text;
  v_parent bigint;
begin
  if cardinality(v_ok) <> cardinality(coalesce(p_outputs, '{}')) then
    perform ballast_private.bad_argument('outputs', format('has %s entries for %s succeeded attempts',
      cardinality(coalesce(p_outputs, '{}')), cardinality(v_ok)), 'Pass one output per attempt id, in the same order.');
  end if;
  if cardinality(v_failed) <> cardinality(coalesce(p_errors, '{}')) then
    perform ballast_private.bad_argument('errors', format('has %s entries for %s failed attempts',
      cardinality(coalesce(p_errors, '{}')), cardinality(v_failed)), 'Pass one error per attempt id, in the same order.');
  end if;

  if cardinality(v_ok) > 0 then
    perform 1 from ballast_private.steps s
     where s.id in (select a.step_id from ballast_private.attempts a where a.id = any(v_ok))
     order by s.id for update;
    with inp as (select * from unnest(v_ok, p_outputs) as t(attempt_id, output)),
    a as (
      update ballast_private.attempts a set outcome = 'succeeded', finished_at = v_now
        from inp, ballast_private.steps s
       where a.id = inp.attempt_id and a.outcome = 'running'
         and s.id = a.step_id and s.status = 'running' and s.attempts = a.number
      returning a.id, a.step_id, inp.output),
    s as (
      update ballast_private.steps s
         set status = 'succeeded', output = coalesce(a.output, 'null'::jsonb), error = null, finished_at = v_now,
             wait_key = null, wait_deadline = null, wait_on_timeout = null, updated_at = v_now
        from a where s.id = a.step_id
      returning a.id as attempt_id, s.job_id, s.name, s.parent_step_id)
    select array_agg(s.attempt_id), array_agg(s.job_id), array_agg(s.name), array_agg(s.parent_step_id)
      into v_done, v_jobs, v_names, v_parents from s;

    if v_done is not null and exists (select 1 from unnest(v_jobs, v_names) as f(job_id, name)
                                        join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
                                       where d2.status = 'pending') then
      perform 1 from ballast_private.steps d
       where d.id in (select d2.id from unnest(v_jobs, v_names) as f(job_id, name)
                        join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
                       where d2.status = 'pending')
       order by d.id for update;
      update ballast_private.steps d
         set deps_remaining = d.deps_remaining - x.n,
             status = case when d.deps_remaining = x.n then 'queued' else d.status end,
             queued_at = case when d.deps_remaining = x.n then v_now else d.queued_at end,
             updated_at = v_now
        from (select d2.id, count(*)::int as n
                from unnest(v_jobs, v_names) as f(job_id, name)
                join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
               where d2.status = 'pending'
               group by d2.id) x
       where d.id = x.id;
    end if;
    for v_parent in select distinct p from unnest(v_parents) p where p is not null order by p loop
      perform ballast_private.finish_map(v_parent);
    end loop;
    return query
    select i.id, case when i.id = any(coalesce(v_done, '{}')) then 'succeeded' else 'stale' end
      from unnest(v_ok) as i(id);
  end if;

  for i in 1 .. cardinality(v_failed) loop
    begin
      select f.step_status into v_status from ballast.fail_step(v_failed[i], p_errors[i]) f;
    exception
      when sqlstate 'BA008' or sqlstate 'BA007' then
        v_status := 'stale';
      when sqlstate 'BA002' then
        v_status := 'refused: ' || sqlerrm;
    end;
    attempt_id := v_failed[i];
    step_status := v_status;
    return next;
  end loop;
end
$fn$;

-- flush_events_notice(): the one ballast_events notification of a worker's batch: the ids its statements collected
-- (ballast_private.notify_events, 0014, collects them while ballast.defer_counters is on), as {"ids":[...]} while that stays under 7,500 bytes, else {"min_id","max_id","count"}.
create function ballast_private.flush_events_notice() returns void
language plpgsql
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

-- settle_and_claim(worker_id, ok_attempt_ids, outputs, failed_attempt_ids, errors, tasks, n, lease_ms)
--   -> one row (settled, claims)
-- The worker's one round trip per batch: settle_steps, then claim_steps, in one transaction, with the job counters
-- deferred to its end (defer_job_counters / flush_job_counters: one job UPDATE per batch). settled: a JSON array
-- of [attempt_id, step_status]; claims: a JSON array of ballast.step_claim objects (empty when n = 0 or the worker
-- was declared stopped: it may finish what it holds, but takes nothing new until it registers again).
create function ballast.settle_and_claim(
  p_worker_id text, p_ok bigint[], p_outputs jsonb[], p_failed bigint[], p_errors jsonb[],
  p_tasks text[], p_n integer, p_lease_ms integer default 30000
) returns table (settled jsonb, claims jsonb)
language plpgsql
as $fn$
declare
  v_settled jsonb;
  v_claims jsonb;
begin
  perform ballast_private.defer_job_counters();
  if coalesce(cardinality(p_ok), 0) + coalesce(cardinality(p_failed), 0) > 0 then
    select jsonb_agg(jsonb_build_array(s.attempt_id, s.step_status)) into v_settled
      from ballast.settle_steps(p_worker_id, p_ok, p_outputs, p_failed, p_errors) s;
  end if;
  if coalesce(p_n, 0) > 0
     and exists (select 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null) then
    select jsonb_agg(to_jsonb(c)) into v_claims from ballast.claim_steps(p_worker_id, p_tasks, p_n, p_lease_ms) c;
  end if;
  -- Every job the batch touched is updated once, here, after all its step rows (the lock order: steps, then jobs).
  perform ballast_private.flush_job_counters();
  -- Steps the batch queued (dependants, retries due, map items: steps of the jobs this worker runs, so of its own
  -- pipeline versions): the claim above took them unless it was full; only then tell the other workers.
  if current_setting('ballast.queued_in_batch', true) = 'on' then
    perform set_config('ballast.queued_in_batch', 'off', true);
    if coalesce(jsonb_array_length(v_claims), 0) >= coalesce(p_n, 0) then
      perform pg_notify('ballast_queue', '');
    end if;
  end if;
  perform ballast_private.flush_events_notice();
  return query select coalesce(v_settled, '[]'::jsonb), coalesce(v_claims, '[]'::jsonb);
end
$fn$;

-- release_attempts(worker_id, attempt_ids, reason) -> number released: graceful shutdown of claims a worker holds
-- but has not started (its local queue) or must give back; each as ballast.release_attempt (uncharged, retried at
-- once by any worker); attempts that no longer own their step are skipped.
create function ballast.release_attempts(p_worker_id text, p_attempt_ids bigint[], p_reason text default 'worker shutting down')
returns integer
language plpgsql
as $fn$
declare
  v_id bigint;
  v_n int := 0;
begin
  foreach v_id in array coalesce(p_attempt_ids, '{}') loop
    begin
      perform ballast.release_attempt(v_id, p_reason);
      v_n := v_n + 1;
    exception when sqlstate 'BA008' or sqlstate 'BA007' then
      null;
    end;
  end loop;
  return v_n;
end
$fn$;
