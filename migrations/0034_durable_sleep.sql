-- Up Migration
-- Durable sleep (issue 15, item 3): ctx.sleep(key, duration) and sleep steps.
--
-- A step that sleeps parks like one that waits for an event: its attempt ends 'parked' (not charged against
-- max_attempts), the step is 'waiting' and holds no worker slot, and it runs again from the top when it wakes; this
-- time ctx.sleep(key) returns at once. What it waits for is a time, so:
--  * ballast_private.step_sleeps keeps the wake time of each (step, key) from the first call, so a retry, a crash or a
--    restart of every worker keeps it (a later call with another duration does not move it);
--  * the step waits with wait_key null, wait_deadline the wake time and wait_on_timeout 'resume': at the deadline the
--    reaper (expire_waits) queues it again, uncharged (a wait for an event charges the attempt that waited in vain;
--    a sleep that ends is no failure). The reaper runs about once a second, so a step wakes within about a second of
--    its time;
--  * waiting_for (0031) tells the three waits apart: 'event' (wait_key set), 'time' (wait_on_timeout 'resume'),
--    'items' (a map step). A sleeping step counts as waiting (the job is 'waiting'), like one waiting for an event.

alter table ballast_private.steps drop constraint step_wait_on_timeout_known;
alter table ballast_private.steps add constraint step_wait_on_timeout_known check (wait_on_timeout in ('fail', 'retry', 'resume'));

-- The generated column cannot change its expression in place before PostgreSQL 17: drop it and add it again (a
-- rewrite of steps, as 0031's was).
alter table ballast_private.steps drop constraint step_items_wait_has_no_deadline;
alter table ballast_private.steps disable trigger steps_changed;
alter table ballast_private.steps drop column waiting_for;
alter table ballast_private.steps
  add column waiting_for text generated always as (
    case when status = 'waiting' then
      case when wait_key is not null then 'event' when wait_on_timeout = 'resume' then 'time' else 'items' end
    end) stored;
alter table ballast_private.steps enable trigger steps_changed;
alter table ballast_private.steps
  add constraint step_items_wait_has_no_deadline
  check (waiting_for is distinct from 'items' or (wait_deadline is null and wait_on_timeout is null));
alter table ballast_private.steps
  add constraint step_sleep_has_deadline check (waiting_for is distinct from 'time' or wait_deadline is not null);
comment on column ballast_private.steps.waiting_for is 'Null unless the step is waiting: ''event'' (for the event wait_key names), ''time'' (a sleep until wait_deadline) or ''items'' (a map step, for its items). Generated from status, wait_key and wait_on_timeout.';

create table ballast_private.step_sleeps (
  step_id bigint not null references ballast_private.steps (id) on delete cascade,
  key text not null,
  until timestamptz not null,
  attempt_id bigint not null,
  created_at timestamptz not null default ballast.now(),
  constraint step_sleeps_pkey primary key (step_id, key),
  constraint step_sleep_key_format check (key <> '' and octet_length(key) <= 500)
);
comment on table ballast_private.step_sleeps is 'The wake time of each sleep of a step (ctx.sleep(key, ...)), recorded by its first call (0034).';

-- sleep_step(attempt_id, key, ms, until) -> (slept, until): the sleep `key` of the attempt's step. The first call
-- records the wake time (ms from ballast.now(), or `until`; exactly one of them); later calls read it. When it has
-- passed: slept true, nothing changes. Otherwise the attempt ends 'parked' (uncharged), the step waits for the time
-- (waiting_for 'time') and the reaper queues it again at `until`: slept false. Raises BA002 for a bad key, duration
-- or time (at most ten years ahead), BA007/BA008 as running_attempt. Locks the step row (running_attempt) first.
create function ballast.sleep_step(p_attempt_id bigint, p_key text, p_ms double precision default null,
  p_until timestamptz default null)
returns table (slept boolean, until timestamptz)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_until timestamptz;
begin
  perform ballast_private.check_key_text('key', p_key, 500, 'Name the sleep with a key of 1 to 500 bytes, the same on every run.');
  if (p_ms is null) = (p_until is null) then
    perform ballast_private.bad_argument('duration', 'give either milliseconds or a time, not both and not neither',
      'Pass a number of milliseconds or a Date.');
  end if;
  if p_ms is not null and not (p_ms >= 0 and p_ms <= 315576000000) then
    perform ballast_private.bad_argument('duration', format('%s ms is not from 0 to ten years', p_ms), 'Pass a number of milliseconds.');
  end if;
  if p_until is not null and p_until > v_now + interval '10 years' then
    perform ballast_private.bad_argument('duration', format('%s is more than ten years ahead', p_until), 'Pass a nearer time.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  select s.until into v_until from ballast_private.step_sleeps s where s.step_id = v_step.id and s.key = p_key;
  if not found then
    v_until := coalesce(p_until, v_now + make_interval(secs => p_ms / 1000.0));
    insert into ballast_private.step_sleeps (step_id, key, until, attempt_id) values (v_step.id, p_key, v_until, p_attempt_id);
  end if;
  if v_until <= v_now then
    return query select true, v_until;
    return;
  end if;
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'waiting', wait_key = null, wait_deadline = v_until, wait_on_timeout = 'resume',
         attempt_offset = attempt_offset + 1
   where id = v_step.id;
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select false, v_until;
end
$fn$;
revoke execute on function ballast.sleep_step(bigint, text, double precision, timestamptz) from public;
comment on function ballast.sleep_step(bigint, text, double precision, timestamptz) is 'A step''s durable sleep (ctx.sleep): records the wake time of (step, key) once; parks the step until then (workers call it).';

-- expire_waits(now, batch): as in 0032, and a sleep whose time came (wait_on_timeout 'resume') is queued again,
-- uncharged, without an error: waking up is not a failure.
create or replace function ballast_private.expire_waits(p_now timestamptz, p_batch integer)
returns table (expired_ids bigint[], touched_jobs bigint[])
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
begin
  expired_ids := '{}';
  touched_jobs := '{}';
  for v_step in
    select * from ballast_private.steps
     where status = 'waiting' and wait_deadline < p_now
     order by id
     limit p_batch
     for update skip locked
  loop
    if v_step.wait_on_timeout = 'resume' then
      update ballast_private.steps
         set status = 'queued', queued_at = p_now, wait_deadline = null, wait_on_timeout = null
       where id = v_step.id;
      perform ballast_private.wake_step(v_step.id);
    -- The attempt that waited in vain is charged now (wait_for_event un-charged it when it parked): otherwise a step
    -- whose event never comes would wait and retry forever instead of ending in the dead-letter set.
    elsif v_step.wait_on_timeout = 'retry' and v_step.attempts - v_step.attempt_offset + 1 < v_step.max_attempts then
      update ballast_private.steps
         set status = 'queued', queued_at = p_now, wait_key = null, wait_deadline = null, wait_on_timeout = null,
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
        false, null, p_now);
    end if;
    expired_ids := expired_ids || v_step.id;
    touched_jobs := touched_jobs || v_step.job_id;
  end loop;

  return next;
end
$fn$;

-- recount_job(job_id) -> boolean: as in 0031; n_waiting counts the steps waiting for an event or a time, not the map
-- steps waiting for their items (the statement triggers count them the same way).
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
                 count(*) filter (where waiting_for in ('event', 'time'))::int as wa,
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

comment on column ballast.steps.wait_key is 'The event key a waiting step waits for (sendEvent delivers it). Null when it sleeps, waits for its items (a map step), or never waited.';
comment on column ballast.steps.wait_deadline is 'When a waiting step stops waiting (then waitOnTimeout applies); for a sleeping step, when it wakes. Null: it waits without a deadline.';
comment on column ballast.steps.wait_on_timeout is 'What the wait deadline does: fail (the step fails), retry (it runs again, charged) or resume (a sleep ends: it runs again, uncharged). Null unless it waits or has waited.';

-- Down Migration
