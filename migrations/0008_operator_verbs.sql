-- Up Migration
--
-- Baseline, file 8 of 11: operator verbs: cancelling a job (cancel_job), audited replay of finished steps and jobs
-- (replay_step, replay_job, replay_dead_letters), and recount_job, which rebuilds a job's step counters.
--
-- Each takes an optional actor (else the setting ballast.actor, else 'sql'); cancel and replay also take a reason,
-- and both end up in the audit events. Cancelling ends running attempts 'cancelled' and NOTIFYs ballast_cancel so
-- their workers abort the handlers. Replay edges of the state machines are allowed only inside replay_step /
-- replay_job, which set ballast.replay = on. The verbs a tenant may call are SECURITY DEFINER and check the caller's
-- tenant themselves (ballast_private.require_tenant, 0001_foundations).
-- Folded from the old 0007, 0010, 0012 and 0013.

-- set_actor(actor): the audit actor of this transaction's events: the one passed, else one the session already set
-- (ballast.actor), else 'sql'.
create function ballast_private.set_actor(p_actor text) returns void
language sql volatile
as $fn$
  select set_config('ballast.actor', coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''), 'sql'), true)
$fn$;

-- cancel_job(job_id, reason, actor) -> (job_id, status, cancelled_step_ids, already_cancelled)
-- Cancels every unfinished step at once (pending, queued, retrying, waiting, needs_review, and running: the running
-- attempt ends 'cancelled' and NOTIFY ballast_cancel tells its worker to fire the handler's AbortSignal; a worker
-- that misses the notification learns it from its next heartbeat). The job ends 'cancelled'. Cancelling a
-- cancelled job is a no-op (already_cancelled = true); a completed, failed or partially completed job raises BA010;
-- an unknown job BA007. Locks the job's steps in id order, then the job (the same order as claim and complete).
create function ballast_private.cancel_job(
  p_job_id bigint,
  p_reason text default null::text,
  p_actor text default null::text
) returns table(job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql volatile
as $fn$
declare
  v_job ballast_private.jobs;
  v_now timestamptz := ballast.now();
  v_steps bigint[];
  v_attempts jsonb;
begin
  perform ballast_private.set_actor(p_actor);
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

-- cancel_job(job_id, reason, actor): as ballast_private.cancel_job, for a job the caller may see (else BA007).
create function ballast.cancel_job(
  p_job_id bigint,
  p_reason text default null::text,
  p_actor text default null::text
) returns table(job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  perform ballast_private.require_tenant((select j.tenant_id from ballast_private.jobs j where j.id = p_job_id),
                                         format('job %s', p_job_id));
  return query select * from ballast_private.cancel_job(p_job_id, p_reason, ballast_private.caller_actor(p_actor));
end
$fn$;
grant execute on function ballast.cancel_job(bigint,text,text) to ballast_client, ballast_operator;
comment on function ballast.cancel_job(bigint,text,text) is 'Cancel a job and its unfinished steps. Cancelling a cancelled job changes nothing (already_cancelled). Clients: jobs of their own tenant.';

-- replay_step(step_id, reason, force, actor) -> (job_id, replayed_step_ids, job_status)
-- Runs a finished step again, and after it every step that depends on it; the outputs of everything upstream are
-- reused. The step must be failed or cancelled, or succeeded with force => true (re-running finished work is a
-- decision, not a default). Each replayed step gets a fresh attempt budget; its earlier attempts stay in history.
-- Writes a 'step_replayed' event with actor and reason. Raises BA011 for a step that is not finished (replaying a
-- running step would run it twice at once), BA002 for a succeeded step without force or a skipped step (replay the
-- failed step it depends on), BA007 for an unknown step.
create function ballast.replay_step(
  p_step_id bigint,
  p_reason text default null::text,
  p_force boolean default false,
  p_actor text default null::text
) returns table(job_id bigint, replayed_step_ids bigint[], job_status text)
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
grant execute on function ballast.replay_step(bigint,text,boolean,text) to ballast_operator;
comment on function ballast.replay_step(bigint,text,boolean,text) is 'Run a finished step again, and the steps that depend on it. A succeeded step needs force. Operators only.';

-- replay_job(job_id, from_step, reason, actor) -> (job_id, replayed_step_ids, job_status)
-- With from_step: replays that step (forced if it succeeded) and what depends on it. Without: replays every failed
-- or cancelled step (and, through them, their skipped or cancelled dependants). Raises BA007 for an unknown job or
-- step name, BA011 when the job has nothing finished to replay (nothing failed or cancelled).
create function ballast.replay_job(
  p_job_id bigint,
  p_from_step text default null::text,
  p_reason text default null::text,
  p_actor text default null::text
) returns table(job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
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
grant execute on function ballast.replay_job(bigint,text,text,text) to ballast_operator;
comment on function ballast.replay_job(bigint,text,text,text) is 'Run the failed or cancelled steps of a job again, or everything from a named step on. Operators only.';

-- replay_dead_letters(reason, pipeline, error_class, since, step_name, limit, dry_run, actor)
--   -> one row per dead letter matched: (step_id, job_id, pipeline, step_name, error_class, failed_at, replayed,
--      replayed_step_ids, job_status)
-- Replays the failed steps (ballast.dead_letters) that match every filter given (null: any): pipeline, error class,
-- step name, failed within `since` (default 7 days); oldest failure first, at most `limit` (default 100). Each one
-- goes through ballast.replay_step with the reason and actor (so each is audited as a step_replayed event); all of
-- them in the caller's transaction: one that cannot be replayed (BA011: something of its job is running) undoes
-- them all. Left out: map steps (their failed items are dead letters of their own and are replayed instead) and
-- jobs whose history was pruned. dry_run => true lists the matches and replays nothing (replayed = false).
-- Raises BA002 without a reason or with a limit outside 1..10000.
create function ballast.replay_dead_letters(
  p_reason text,
  p_pipeline text default null::text,
  p_error_class text default null::text,
  p_since interval default '7 days'::interval,
  p_step_name text default null::text,
  p_limit integer default 100,
  p_dry_run boolean default false,
  p_actor text default null::text
) returns table(step_id bigint, job_id bigint, pipeline text, step_name text, error_class text, failed_at timestamp with time zone, replayed boolean, replayed_step_ids bigint[], job_status text)
language plpgsql volatile
as $fn$
declare
  v_from timestamptz;
  v_dead record;
  v_replay record;
begin
  if coalesce(p_reason, '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty',
      'Say why these steps run again (e.g. ''provider outage over''); it is kept in the audit trail.');
  end if;
  if p_limit is null or p_limit not between 1 and 10000 then
    perform ballast_private.bad_argument('limit', format('%s is not between 1 and 10000', coalesce(p_limit::text, 'null')),
      'Replay in batches of at most 10000.');
  end if;
  v_from := ballast_private.report_window(coalesce(p_since, interval '7 days'), 'day');
  for v_dead in
    select d.step_id, d.job_id, d.pipeline, d.step_name, d.error_class, d.failed_at
      from ballast.dead_letters d
     where d.failed_at >= v_from and d.pruned_at is null and not d.is_map_step
       and (p_pipeline is null or d.pipeline = p_pipeline)
       and (p_error_class is null or d.error_class = p_error_class)
       and (p_step_name is null or d.step_name = p_step_name)
     order by d.failed_at, d.step_id
     limit p_limit
  loop
    if p_dry_run then
      return query select v_dead.step_id, v_dead.job_id, v_dead.pipeline, v_dead.step_name, v_dead.error_class,
                          v_dead.failed_at, false, '{}'::bigint[],
                          (select j.status from ballast_private.jobs j where j.id = v_dead.job_id);
      continue;
    end if;
    -- An earlier replay in this loop may have reset this step already (a dependant of the step it replayed).
    continue when (select s.status from ballast_private.steps s where s.id = v_dead.step_id) <> 'failed';
    select * into v_replay from ballast.replay_step(v_dead.step_id, p_reason, false, p_actor);
    return query select v_dead.step_id, v_dead.job_id, v_dead.pipeline, v_dead.step_name, v_dead.error_class,
                        v_dead.failed_at, true, v_replay.replayed_step_ids, v_replay.job_status;
  end loop;
end
$fn$;
grant execute on function ballast.replay_dead_letters(text,text,text,interval,text,integer,boolean,text) to ballast_operator;

-- recount_job(job_id) -> boolean: recomputes a job's counters from its steps and says whether they had drifted
-- (they should never; a test compares them after mixed workloads, and an operator can run it after manual surgery).
create function ballast.recount_job(p_job_id bigint) returns boolean
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
