-- Up Migration
-- Delayed start (issue 15, item 1): a job submitted with a start time (run_at) or a delay (delay_ms) is 'scheduled'
-- until then, a status of both state machines, audited like the others.
--
--  * At submission, a start time later than ballast.now() makes the job 'scheduled' (jobs.run_at keeps the time) and
--    its root steps 'scheduled' with next_run_at the start time; the steps that depend on them are 'pending' as
--    usual. A start time now or in the past, or none, submits a plain queued job: nothing else changes and nothing
--    costs more. More than ten years ahead, or both a time and a delay, is refused (BA002 naming the field).
--  * The job's status is set, not derived, while it is scheduled: no step of it counts in the job counters (a
--    scheduled step is neither started nor running, waiting, retrying, in review or final), so the counters of a
--    scheduled job are those of a queued one. The promotion below moves it to 'queued' when its last scheduled step
--    is queued; from then on its status is derived as before (claiming a step in the same round trip takes it on
--    to 'running').
--  * Promotion: ballast.claim_steps promotes the due scheduled steps of its tasks (ballast_private.start_due_steps,
--    one set-based UPDATE) behind one probe of steps_scheduled_idx, as it does for the retries that fell due: a
--    worker that claims nothing scheduled pays one probe of an empty index.
--  * On time: ballast.settle_and_claim answers, when its claim came back short, in how many milliseconds the next
--    scheduled step of its tasks falls due (next_due_ms, one probe of the same index); the worker sets a timer for it
--    instead of waiting for its next poll. A scheduled step inserted NOTIFYs ballast_queue like a queued one, so idle
--    workers learn of it at once.
--  * cancel_job cancels scheduled steps like queued ones (the job goes scheduled -> cancelled, audited).
--
-- Deadlines (issue 15, item 10): a job may be given a deadline (it must finish by then) and an expiry time for queued
-- work (expires_at: it must start by then).
--  * At the deadline the job fails: its live steps fail with the error class 'deadline_exceeded' (running attempts
--    are cancelled and their workers told on ballast_cancel, as cancel_job does), its pending steps are skipped.
--  * At expires_at, a job that has not started (scheduled or queued) fails the same way with the class 'expired'.
--  * Enforced set-based per job, by a bounded part of the reaper (ballast_private.expire_jobs, like expire_waits,
--    from two partial indexes), and at claim: claim_steps runs the same part first when a probe of those indexes finds
--    a job past its time, so no step of such a job is claimed after it. Unused, the probe reads two empty indexes.
--  * Everything is audited as usual: step_failed / step_skipped events with the error, job_failed with the job's
--    error (the class and time), the events' reason saying which limit passed.
--
-- Debounce and throttle (issue 15, item 9), by a key per tenant and pipeline, on submit_job:
--  * debounce {key, quiet_ms, max_wait_ms}: the first submission of a key makes a job scheduled quiet_ms later; each
--    later one while that job is still scheduled replaces its input with the newest and pushes its start to now +
--    quiet_ms (never past max_wait_ms after the first), returning the same job (created false) and appending a
--    'job_debounced' event (the previous and new start, the number of submissions merged). Once the job started, the
--    next submission makes a new job. So a burst of updates to one document runs once, with the last input, after a
--    quiet period.
--  * throttle {key, period_ms}: at most one job per key per period: a submission within period_ms of the last job's
--    creation is dropped, returning that job (created false) and appending a 'job_throttled' event; later ones make a
--    new job.
--  * Concurrency: both take a transaction lock on (tenant, pipeline, key) first (as idempotency keys do), and the
--    debounced job's steps before its row (the lock order of the engine: steps, then jobs), so a promotion racing a
--    replacement either runs first (the replacement then makes a new job) or after (with the new input and time).

-- ==================== statuses ====================================================================================

alter table ballast_private.jobs drop constraint job_status_known;
alter table ballast_private.jobs add constraint job_status_known check (status in ('scheduled', 'queued', 'running', 'waiting', 'retrying', 'needs_review', 'completed', 'partially_completed', 'failed', 'cancelled'));
alter table ballast_private.steps drop constraint step_status_known;
alter table ballast_private.steps add constraint step_status_known check (status in ('scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review', 'succeeded', 'failed', 'cancelled', 'skipped'));
alter table ballast_private.steps add constraint step_scheduled_has_time check (status <> 'scheduled' or next_run_at is not null);

insert into ballast_private.step_transitions (from_status, to_status, why) values
  ('scheduled', 'queued', 'its job''s start time (run_at) came'),
  ('scheduled', 'cancelled', 'the job was cancelled before it started');
-- A scheduled job is left when its steps are queued (promotion), claimed (promotion and claim in one round trip), or
-- cancelled. Nothing goes back to scheduled.
insert into ballast_private.job_transitions (from_status, to_status) values
  ('scheduled', 'queued'), ('scheduled', 'running'), ('scheduled', 'cancelled');
-- A job's deadline or expiry fails steps that never ran, or wait for their retry, and a scheduled job.
insert into ballast_private.step_transitions (from_status, to_status, why) values
  ('scheduled', 'failed', 'its job''s deadline passed, or its job expired before it started'),
  ('queued', 'failed', 'its job''s deadline passed, or its job expired before it started'),
  ('retrying', 'failed', 'its job''s deadline passed');
insert into ballast_private.job_transitions (from_status, to_status) values ('scheduled', 'failed');

alter table ballast_private.jobs add column run_at timestamptz;
comment on column ballast_private.jobs.run_at is 'The start time it was submitted with (run_at, or now + delay_ms), when that was later than its submission; null: it was queued at once.';

-- The scheduled steps by start time: the promotion's probe and the next_due_ms of settle_and_claim.
create index steps_scheduled_idx on ballast_private.steps (next_run_at) where status = 'scheduled';

alter table ballast_private.jobs add column deadline timestamptz;
alter table ballast_private.jobs add column expires_at timestamptz;
comment on column ballast_private.jobs.deadline is 'When it must have finished: then its live steps fail (deadline_exceeded) and so does the job. Null: no deadline.';
comment on column ballast_private.jobs.expires_at is 'When it must have started: then, if it is still scheduled or queued, it fails (expired). Null: it waits as long as it takes.';
alter table ballast_private.jobs add column debounce_key text;
alter table ballast_private.jobs add column debounce_until timestamptz;
alter table ballast_private.jobs add column throttle_key text;
comment on column ballast_private.jobs.debounce_key is 'The debounce key it was submitted with: later submissions of the key (same tenant and pipeline) replace its input while it is scheduled.';
comment on column ballast_private.jobs.debounce_until is 'The latest start a debounced job may be pushed to (its first submission + max_wait_ms); null: no limit.';
comment on column ballast_private.jobs.throttle_key is 'The throttle key it was submitted with: submissions of the key (same tenant and pipeline) within the period after it return it.';
create index jobs_debounce_idx on ballast_private.jobs (tenant_id, pipeline, debounce_key) where debounce_key is not null and status = 'scheduled';
create index jobs_throttle_idx on ballast_private.jobs (tenant_id, pipeline, throttle_key, created_at) where throttle_key is not null;

-- The jobs with a limit still to enforce (expire_jobs and the probe of claim_steps).
create index jobs_deadline_idx on ballast_private.jobs (deadline) where deadline is not null and finished_at is null;
create index jobs_expiry_idx on ballast_private.jobs (expires_at) where expires_at is not null and status in ('scheduled', 'queued');

-- ==================== submission ==================================================================================

-- checked_run_at(run_at, delay_ms, now) -> the start time, or null to start now: a time and a delay cannot both be
-- given; the delay is from 0 to ten years in milliseconds; a start time more than ten years ahead is refused (BA002
-- naming the field). A time now or past (or -infinity) starts now.
create function ballast_private.checked_run_at(p_run_at timestamptz, p_delay_ms double precision, p_now timestamptz)
returns timestamptz
language plpgsql stable
as $fn$
declare
  v_at timestamptz;
begin
  if p_run_at is null and p_delay_ms is null then
    return null;
  end if;
  if p_run_at is not null and p_delay_ms is not null then
    perform ballast_private.bad_argument('run_at', 'is given with delay_ms',
      'Pass one of them: a start time (run_at) or milliseconds from now (delay_ms).');
  end if;
  if p_delay_ms is not null and not (p_delay_ms >= 0 and p_delay_ms <= 315576000000) then
    perform ballast_private.bad_argument('delay_ms', format('%s ms is not from 0 to ten years', p_delay_ms),
      'Pass a number of milliseconds from now, or a start time (run_at).');
  end if;
  v_at := coalesce(p_run_at, p_now + make_interval(secs => p_delay_ms / 1000.0));
  if v_at > p_now + interval '10 years' then
    perform ballast_private.bad_argument('run_at', format('%s is more than ten years ahead', v_at),
      'Pass a nearer start time (or use a schedule, ballast.set_schedule, for recurring work).');
  end if;
  return case when v_at > p_now then v_at end;
end
$fn$;

-- check_time_limits(run_at, deadline, expires_at, now): a deadline or expiry time must be later than now and than
-- the start time (run_at, null: now), and at most ten years ahead; BA002 naming the field otherwise.
create function ballast_private.check_time_limits(p_run_at timestamptz, p_deadline timestamptz, p_expires_at timestamptz, p_now timestamptz)
returns void
language plpgsql stable
as $fn$
declare
  v_field text;
  v_at timestamptz;
begin
  foreach v_field in array array['deadline', 'expires_at'] loop
    v_at := case v_field when 'deadline' then p_deadline else p_expires_at end;
    continue when v_at is null;
    if v_at <= coalesce(p_run_at, p_now) then
      perform ballast_private.bad_argument(v_field,
        format('%s is not later than %s', v_at, case when p_run_at is null then 'now' else 'run_at ' || p_run_at end),
        case v_field when 'deadline' then 'Give the time by which the job must have finished, after it starts.'
             else 'Give the time by which the job must have started, after run_at (or now).' end);
    end if;
    if v_at > p_now + interval '10 years' then
      perform ballast_private.bad_argument(v_field, format('%s is more than ten years ahead', v_at),
        'Pass a nearer time, or none for no limit.');
    end if;
  end loop;
end
$fn$;

-- new_steps(job, pipeline, version, definition, tenant, input, priority, now, run_at): as in 0032, and with a start
-- time the root steps are 'scheduled' (next_run_at the time, no queued_at) instead of 'queued'.
drop function ballast_private.new_steps(bigint, text, integer, jsonb, text, jsonb, integer, timestamptz);
create function ballast_private.new_steps(p_job_id bigint, p_pipeline text, p_pipeline_version integer, p_definition jsonb, p_tenant_id text, p_input jsonb, p_priority integer, p_now timestamp with time zone, p_run_at timestamptz default null) returns TABLE(job_id bigint, name text, status text, depends_on text[], deps_remaining integer, max_attempts integer, backoff_base_ms integer, backoff_cap_ms integer, timeout_ms integer, concurrency_key text, concurrency_limit integer, queued_at timestamp with time zone, created_at timestamp with time zone, updated_at timestamp with time zone, task text, priority smallint, next_run_at timestamptz)
language sql stable
as $fn$
  select p_job_id,
         s ->> 'name',
         case when jsonb_array_length(s -> 'depends_on') > 0 then 'pending'
              when p_run_at is not null then 'scheduled' else 'queued' end,
         array(select jsonb_array_elements_text(s -> 'depends_on')),
         jsonb_array_length(s -> 'depends_on'),
         (s ->> 'max_attempts')::int,
         (s ->> 'backoff_base_ms')::int,
         (s ->> 'backoff_cap_ms')::int,
         (s ->> 'timeout_ms')::int,
         case when jsonb_typeof(s -> 'concurrency') = 'object' then
           (s -> 'concurrency' ->> 'group') || '/'
           || ballast_private.concurrency_value(s -> 'concurrency' ->> 'key', p_tenant_id, p_input) end,
         case when jsonb_typeof(s -> 'concurrency') = 'object' then (s -> 'concurrency' ->> 'limit')::int end,
         case when jsonb_array_length(s -> 'depends_on') = 0 and p_run_at is null then p_now end,
         p_now, p_now, ballast.task_identifier(p_pipeline, p_pipeline_version), p_priority::smallint,
         case when jsonb_array_length(s -> 'depends_on') = 0 then p_run_at end
    from jsonb_array_elements(p_definition -> 'steps') with ordinality as d(s, k)
   order by d.k
$fn$;

-- submit(pipeline, input, key, tenant, priority, version, run_at, deadline, expires_at): as in 0032; run_at
-- (checked, later than now: see checked_run_at) makes the job and its root steps 'scheduled'; deadline and
-- expires_at (checked: check_time_limits) are stored with the job. Callers with six arguments (fire_schedules) are
-- unchanged.
drop function ballast_private.submit(text, jsonb, text, text, integer, integer);
create function ballast_private.submit(p_pipeline text, p_input jsonb, p_idempotency_key text, p_tenant_id text, p_priority integer, p_pipeline_version integer, p_run_at timestamptz default null, p_deadline timestamptz default null, p_expires_at timestamptz default null) returns TABLE(job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_job_id bigint;
  v_existing_hash text;
  v_now timestamptz := ballast.now();
begin
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, p_idempotency_key, p_tenant_id, p_priority,
                                                 p_pipeline_version);
  v_hash := ballast_private.request_hash(p_pipeline, p_pipeline_version, p_input);
  perform ballast_private.lock_idempotency_key(p_tenant_id, p_idempotency_key);

  -- n_total is the number of steps the insert below creates (none of them final, running, waiting or started: every
  -- other counter is 0), so the job is counted here and the steps' insert trigger skips it (ballast.steps_counted).
  insert into ballast_private.jobs (tenant_id, pipeline, pipeline_version, idempotency_key, request_hash, input,
                                    priority, created_at, updated_at, n_total, status, run_at, deadline, expires_at)
  values (p_tenant_id, v_pipeline.name, v_pipeline.version, p_idempotency_key, v_hash, p_input, p_priority, v_now, v_now,
          jsonb_array_length(v_pipeline.definition -> 'steps'),
          case when p_run_at is not null then 'scheduled' else 'queued' end, p_run_at, p_deadline, p_expires_at)
  on conflict (tenant_id, idempotency_key) do nothing
  returning id into v_job_id;

  if v_job_id is null then
    select j.id, j.request_hash into v_job_id, v_existing_hash
      from ballast_private.jobs j
     where j.tenant_id = p_tenant_id and j.idempotency_key = p_idempotency_key;
    if v_job_id is null then
      raise exception using errcode = '40001',
        message = format('a concurrent submission with idempotency key %L is not visible yet', p_idempotency_key),
        hint = 'Retry the transaction with the same key; it will return that job.';
    end if;
    if v_existing_hash <> v_hash then
      perform ballast_private.raise_key_conflict(p_idempotency_key, v_job_id);
    end if;
    return query select v_job_id, false;
    return;
  end if;

  perform set_config('ballast.steps_counted', 'on', true);
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, task, priority, next_run_at)
  select * from ballast_private.new_steps(v_job_id, v_pipeline.name, v_pipeline.version, v_pipeline.definition,
                                          p_tenant_id, p_input, p_priority, v_now, p_run_at);
  perform set_config('ballast.steps_counted', 'off', true);

  return query select v_job_id, true;
end
$fn$;

-- submit_job(pipeline, input, key, tenant, priority, version, run_at, delay_ms, deadline, expires_at, debounce,
-- throttle): as in 0001; run_at or delay_ms (not both) start the job later: it is 'scheduled' until then
-- (checked_run_at: BA002 for a bad value); deadline: it must finish by then; expires_at: it must start by then
-- (check_time_limits); debounce or throttle (not both, nor with an idempotency key; debounce not with a start time):
-- submit_debounced, submit_throttled.
drop function ballast.submit_job(text, jsonb, text, text, integer, integer);
create function ballast.submit_job(p_pipeline text, p_input jsonb DEFAULT '{}'::jsonb, p_idempotency_key text DEFAULT NULL::text, p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer, p_run_at timestamptz DEFAULT NULL, p_delay_ms double precision DEFAULT NULL, p_deadline timestamptz DEFAULT NULL, p_expires_at timestamptz DEFAULT NULL, p_debounce jsonb DEFAULT NULL, p_throttle jsonb DEFAULT NULL) returns TABLE(job_id bigint, created boolean, status text, pipeline_version integer)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_job_id bigint;
  v_created boolean;
  v_tenant text := p_tenant_id;
  v_run_at timestamptz;
begin
  if not ballast_private.caller_unrestricted() then
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot submit jobs', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if p_tenant_id is not null and p_tenant_id not in ('default', v_tenant) then
      raise exception using errcode = 'BA014', message = format('tenant %s cannot submit jobs for tenant %s', v_tenant, p_tenant_id),
        hint = 'Leave the tenant out: jobs are submitted for your own tenant.';
    end if;
    perform set_config('ballast.actor', ballast_private.caller_actor(null), true);
  end if;
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql', true);
  end if;
  if p_run_at is not null or p_delay_ms is not null then
    v_run_at := ballast_private.checked_run_at(p_run_at, p_delay_ms, ballast.now());
  end if;
  if p_debounce is not null or p_throttle is not null then
    if p_debounce is not null and p_throttle is not null then
      perform ballast_private.bad_argument('debounce', 'is given with throttle', 'Pass one of them.');
    end if;
    if p_idempotency_key is not null then
      perform ballast_private.bad_argument(case when p_debounce is not null then 'debounce' else 'throttle' end,
        'is given with idempotency_key',
        'Pass one of them: the key of a debounce or throttle already says which submissions make one job.');
    end if;
    if p_debounce is not null and v_run_at is not null then
      perform ballast_private.bad_argument('debounce', 'is given with run_at or delay_ms',
        'Leave the start out: a debounced job starts quiet_ms after the last submission of its burst.');
    end if;
  end if;
  if p_deadline is not null or p_expires_at is not null then
    perform ballast_private.check_time_limits(v_run_at, p_deadline, p_expires_at, ballast.now());
  end if;
  if p_debounce is not null then
    select s.job_id, s.created into v_job_id, v_created
      from ballast_private.submit_debounced(p_pipeline, p_input, v_tenant, p_priority, p_pipeline_version, p_debounce,
                                            p_deadline, p_expires_at) s;
  elsif p_throttle is not null then
    select s.job_id, s.created into v_job_id, v_created
      from ballast_private.submit_throttled(p_pipeline, p_input, v_tenant, p_priority, p_pipeline_version, p_throttle,
                                            v_run_at, p_deadline, p_expires_at) s;
  else
    select s.job_id, s.created into v_job_id, v_created
      from ballast_private.submit(p_pipeline, p_input, p_idempotency_key, v_tenant, p_priority, p_pipeline_version,
                                  v_run_at, p_deadline, p_expires_at) s;
  end if;
  return query select j.id, v_created, j.status, j.pipeline_version from ballast_private.jobs j where j.id = v_job_id;
end
$fn$;
grant execute on function ballast.submit_job(text, jsonb, text, text, integer, integer, timestamptz, double precision, timestamptz, timestamptz, jsonb, jsonb) to ballast_client, ballast_operator;
comment on function ballast.submit_job(text, jsonb, text, text, integer, integer, timestamptz, double precision, timestamptz, timestamptz, jsonb, jsonb) is 'Start a job of a pipeline on an input (checked against the input contract). The same idempotency key with the same request returns the existing job (created = false). Restricted callers (clients) submit for their own tenant only. run_at or delay_ms (not both): the job is scheduled until then; deadline: it fails unless finished by then; expires_at: it fails unless started by then; debounce {key, quiet_ms, max_wait_ms} or throttle {key, period_ms}: one job per burst, or per period, of submissions with the key.';

-- submit_jobs(pipeline, inputs, keys, tenant, priority, version, run_at, delay_ms, deadline, expires_at): as in 0032;
-- every job of the batch starts at the same time (run_at or delay_ms) and has the same limits, as submit_job.
drop function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer);
create function ballast.submit_jobs(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[] DEFAULT NULL::text[], p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer, p_run_at timestamptz DEFAULT NULL, p_delay_ms double precision DEFAULT NULL, p_deadline timestamptz DEFAULT NULL, p_expires_at timestamptz DEFAULT NULL) returns TABLE(ord integer, job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  c_max_batch_bytes constant bigint := 16777216;
  v_tenant text := case when ballast_private.caller_unrestricted() then p_tenant_id else ballast_private.caller_tenant() end;
  v_pipeline ballast_private.pipelines;
  v_limit bigint;
  v_ord integer;
  v_problem text;
  v_total bigint;
  v_key text;
  v_run_at timestamptz;
begin
  perform ballast_private.check_key_text('tenant_id', v_tenant, 200,
    'Pass a tenant id of 1 to 200 bytes, or leave it out for the tenant ''default''.');
  select k.n, k.key into v_ord, v_key
    from unnest(p_idempotency_keys) with ordinality k(key, n)
   where k.key = '' or octet_length(k.key) > 500
   order by k.n limit 1;
  if found then
    perform ballast_private.check_key_text(format('idempotency_keys[%s]', v_ord), v_key, 500,
      'Pass null for no deduplication of that input, or a key of 1 to 500 bytes unique to its request (an order id, a webhook delivery id).');
  end if;
  if p_run_at is not null or p_delay_ms is not null then
    v_run_at := ballast_private.checked_run_at(p_run_at, p_delay_ms, ballast.now());
  end if;
  if p_deadline is not null or p_expires_at is not null then
    perform ballast_private.check_time_limits(v_run_at, p_deadline, p_expires_at, ballast.now());
  end if;

  if p_pipeline_version is null then
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline order by p.version desc limit 1;
  else
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline and p.version = p_pipeline_version;
  end if;
  if v_pipeline.name is not null and p_inputs is not null then
    v_limit := ballast_private.input_size_limit(v_pipeline);
    select s.n, s.problem into v_ord, v_problem
      from (select i.n, ballast_private.input_size_problem(i.input, v_limit) as problem
              from unnest(p_inputs) with ordinality i(input, n)) s
     where s.problem is not null
     order by s.n
     limit 1;
    if found then
      perform ballast_private.bad_argument(format('inputs[%s]', v_ord),
        format('%s (pipeline %s@%s)', v_problem, v_pipeline.name, v_pipeline.version),
        'Send less per job (keep large documents elsewhere and pass a reference: a URL, an object key, an id), or '
        || 'give the pipeline a larger maxInputBytes (up to 64 MiB) in a new version; numbers must fit a 64-bit float.');
    end if;
    select sum(octet_length(i.input::text)) into v_total from unnest(p_inputs) i(input);
    if v_total > greatest(c_max_batch_bytes, v_limit) then
      perform ballast_private.bad_argument('inputs',
        format('hold %s bytes of JSON in all; one call accepts at most %s', v_total, greatest(c_max_batch_bytes, v_limit)),
        'Split the batch into smaller calls (each call is one transaction).');
    end if;
  end if;

  return query select * from ballast_private.submit_jobs_checked_v15(p_pipeline, p_inputs, p_idempotency_keys,
                                                                     p_tenant_id, p_priority, p_pipeline_version,
                                                                     v_run_at, p_deadline, p_expires_at);
end
$fn$;
grant execute on function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer, timestamptz, double precision, timestamptz, timestamptz) to ballast_client, ballast_operator;
comment on function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer, timestamptz, double precision, timestamptz, timestamptz) is 'Start many jobs of one pipeline in one statement, all or nothing (at most 1000), one result per input in input order (ord from 1). run_at or delay_ms (not both): every job is scheduled until then; deadline and expires_at: as submit_job, for every job.';

-- submit_jobs_checked_v15(..., run_at, deadline, expires_at): as in 0032, passing the start time and the limits
-- (checked by submit_jobs) on.
drop function ballast_private.submit_jobs_checked_v15(text, jsonb[], text[], text, integer, integer);
create function ballast_private.submit_jobs_checked_v15(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[] DEFAULT NULL::text[], p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer, p_run_at timestamptz DEFAULT NULL, p_deadline timestamptz DEFAULT NULL, p_expires_at timestamptz DEFAULT NULL) returns TABLE(ord integer, job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_tenant text;
  v_pipeline ballast_private.pipelines;
  v_keys text[];          -- per input: its idempotency key or null
  v_hashes text[];        -- per input: its request hash (as ballast_private.submit computes it)
  v_ids bigint[];         -- per input: the id reserved for it (inputs without a key, and the first use of a key)
  v_inserted bigint[];    -- the ids actually inserted (a key already stored inserts nothing)
  v_job_ids bigint[];     -- per input: the job returned
  v_created boolean[];
  v_now timestamptz := ballast.now();
begin
  v_tenant := ballast_private.batch_tenant(p_tenant_id);
  v_pipeline := ballast_private.checked_batch_pipeline(p_pipeline, p_inputs, p_idempotency_keys, v_tenant, p_priority,
                                                       p_pipeline_version);
  if cardinality(p_inputs) = 0 then
    return;
  end if;
  perform ballast_private.check_batch_inputs(v_pipeline, p_inputs);
  select k.keys, k.hashes into v_keys, v_hashes
    from ballast_private.batch_keys_and_hashes(p_pipeline, p_pipeline_version, p_inputs, p_idempotency_keys) k;
  select b.ids, b.inserted, b.job_ids, b.created into v_ids, v_inserted, v_job_ids, v_created
    from ballast_private.insert_batch_jobs(v_tenant, v_pipeline, p_inputs, v_keys, v_hashes, p_priority, v_now, p_run_at,
                                           p_deadline, p_expires_at) b;
  perform ballast_private.insert_batch_steps(v_pipeline, v_tenant, v_ids, p_inputs, v_inserted, p_priority, v_now,
                                             p_run_at);

  -- No wake-up per step: the step rows are the queue (0013), and the steps' insert NOTIFYs ballast_queue once.
  return query
    select u.n::int, u.job, u.created, j.status
      from unnest(v_job_ids, v_created) with ordinality u(job, created, n)
      join ballast_private.jobs j on j.id = u.job
     order by u.n;
end
$fn$;

-- insert_batch_jobs(..., run_at, deadline, expires_at): as in 0032; with a start time the new jobs are 'scheduled'
-- (run_at stored); the limits are stored. The
-- jobs are inserted counted (n_total: their steps), as submit does, and insert_batch_steps skips the counters: a
-- scheduled job's status is set, not derived (the counters would derive 'queued').
drop function ballast_private.insert_batch_jobs(text, ballast_private.pipelines, jsonb[], text[], text[], integer, timestamptz);
create function ballast_private.insert_batch_jobs(p_tenant text, p_pipeline ballast_private.pipelines, p_inputs jsonb[], p_keys text[], p_hashes text[], p_priority integer, p_now timestamp with time zone, p_run_at timestamptz default null, p_deadline timestamptz default null, p_expires_at timestamptz default null) returns TABLE(ids bigint[], inserted bigint[], job_ids bigint[], created boolean[])
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_seq regclass := pg_get_serial_sequence('ballast_private.jobs', 'id')::regclass;
  v_missing integer;
  v_conflict integer;
  v_key text;
  v_job bigint;
begin
  -- Ids reserved in input order (the subquery is sorted before nextval runs: Postgres evaluates volatile output
  -- expressions after ORDER BY), for the inputs that may create a job: those without a key, and a key's first use.
  select array_agg(r.id order by r.n) into ids
    from (select f.n, case when f.first then nextval(v_seq) end as id
            from (select u.n, u.key is null or u.n = min(u.n) over (partition by u.key) as first
                    from unnest(p_keys) with ordinality u(key, n)) f
           order by f.n) r;

  -- One INSERT for every job, in key order (see Locks above). A key stored before (or by a concurrent transaction,
  -- which this waits for) inserts nothing.
  with ins as (
    insert into ballast_private.jobs as j (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                           input, priority, created_at, updated_at, status, run_at, n_total,
                                           deadline, expires_at)
    overriding system value
    select ids[u.n], p_tenant, p_pipeline.name, p_pipeline.version, u.key, p_hashes[u.n], u.input, p_priority, p_now, p_now,
           case when p_run_at is not null then 'scheduled' else 'queued' end, p_run_at,
           jsonb_array_length(p_pipeline.definition -> 'steps'), p_deadline, p_expires_at
      from unnest(p_inputs, p_keys) with ordinality u(input, key, n)
     where ids[u.n] is not null
     order by u.key collate "C" nulls last, u.n
    on conflict (tenant_id, idempotency_key) do nothing
    returning j.id)
  select coalesce(array_agg(ins.id), '{}') into inserted from ins;

  -- One statement (a new snapshot: it sees what a concurrent transaction committed while the insert waited) reads
  -- the jobs of the keys that inserted nothing, and decides each input's job and created flag.
  with u as (select u.n, u.key, u.hash, u.id from unnest(p_keys, p_hashes, ids) with ordinality u(key, hash, id, n)),
       mine as (select i.id from unnest(inserted) i(id)),
       firsts as (select u.key, u.id, m.id is not null as inserted
                    from u left join mine m on m.id = u.id
                   where u.key is not null and u.id is not null),
       existing as (select j.idempotency_key as key, j.id, j.request_hash
                      from ballast_private.jobs j
                     where j.tenant_id = p_tenant
                       and j.idempotency_key in (select f.key from firsts f where not f.inserted)),
       r as (select u.n,
                    case when u.key is null then u.id when f.inserted then f.id else e.id end as job,
                    u.key is null or (f.inserted and u.id is not null) as created,
                    u.key is not null and not f.inserted and e.request_hash <> u.hash as conflict
               from u left join firsts f on f.key = u.key left join existing e on e.key = u.key)
  select array_agg(r.job order by r.n), array_agg(r.created order by r.n),
         min(r.n) filter (where r.job is null), min(r.n) filter (where r.conflict)
    into job_ids, created, v_missing, v_conflict
    from r;
  if v_missing is not null then
    raise exception using errcode = '40001',
      message = format('inputs[%s]: a concurrent submission with idempotency key %L is not visible yet',
                       v_missing, p_keys[v_missing]),
      hint = 'Retry the transaction with the same keys; it will return those jobs.';
  end if;
  if v_conflict is not null then
    v_key := p_keys[v_conflict];
    v_job := job_ids[v_conflict];
    raise exception using errcode = 'BA003',
      message = format('inputs[%s]: idempotency key %L was already used by job %s for a different request',
                       v_conflict, v_key, v_job),
      detail = jsonb_build_object('job_id', v_job, 'idempotency_key', v_key, 'ord', v_conflict)::text,
      hint = 'Use a new key for a new request, or resend exactly the same pipeline and input to get job '
             || v_job || ' back.';
  end if;
  return next;
end
$fn$;

-- insert_batch_steps(..., run_at): as in 0032; with a start time the root steps are 'scheduled' (as new_steps). The
-- jobs were inserted counted (insert_batch_jobs): the steps' insert trigger skips them (ballast.steps_counted).
drop function ballast_private.insert_batch_steps(ballast_private.pipelines, text, bigint[], jsonb[], bigint[], integer, timestamptz);
create function ballast_private.insert_batch_steps(p_pipeline ballast_private.pipelines, p_tenant text, p_ids bigint[], p_inputs jsonb[], p_inserted bigint[], p_priority integer, p_now timestamp with time zone, p_run_at timestamptz default null) returns void
language plpgsql volatile
as $fn$
begin
  perform set_config('ballast.steps_counted', 'on', true);
  -- One INSERT for every step of every new job: the definition is read once, then repeated per job.
  with defs as materialized (
         select d.k, d.s ->> 'name' as name, jsonb_array_length(d.s -> 'depends_on') = 0 as root,
                array(select jsonb_array_elements_text(d.s -> 'depends_on')) as depends_on,
                jsonb_array_length(d.s -> 'depends_on') as deps,
                (d.s ->> 'max_attempts')::int as max_attempts, (d.s ->> 'backoff_base_ms')::int as backoff_base_ms,
                (d.s ->> 'backoff_cap_ms')::int as backoff_cap_ms, (d.s ->> 'timeout_ms')::int as timeout_ms,
                case when jsonb_typeof(d.s -> 'concurrency') = 'object' then d.s -> 'concurrency' end as conc
           from jsonb_array_elements(p_pipeline.definition -> 'steps') with ordinality d(s, k)),
       new_jobs as (
         select u.id, u.input, u.n
           from unnest(p_ids, p_inputs) with ordinality u(id, input, n)
           join unnest(p_inserted) i(id) on i.id = u.id)
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts,
                                     backoff_base_ms, backoff_cap_ms, timeout_ms, concurrency_key,
                                     concurrency_limit, queued_at, created_at, updated_at, task, priority, next_run_at)
  select j.id, d.name,
         case when not d.root then 'pending' when p_run_at is not null then 'scheduled' else 'queued' end,
         d.depends_on, d.deps,
         d.max_attempts, d.backoff_base_ms, d.backoff_cap_ms, d.timeout_ms,
         case when d.conc is not null then
           (d.conc ->> 'group') || '/' || ballast_private.concurrency_value(d.conc ->> 'key', p_tenant, j.input) end,
         (d.conc ->> 'limit')::int,
         case when d.root and p_run_at is null then p_now end, p_now, p_now,
         ballast.task_identifier(p_pipeline.name, p_pipeline.version), p_priority,
         case when d.root then p_run_at end
    from new_jobs j cross join defs d
   order by j.n, d.k;
  perform set_config('ballast.steps_counted', 'off', true);
end
$fn$;

-- ballast.jobs: as in 0038, with run_at, deadline and expires_at, which an INSERT INTO ballast.jobs may set (as
-- submit_job's parameters).
create or replace view ballast.jobs with (security_invoker = true) as
select id, tenant_id, pipeline, pipeline_version, idempotency_key, input, status, priority, result, error, created_at,
       started_at, finished_at, updated_at, input_tokens, output_tokens, cost_usd, pruned_at, parent_job_id,
       parent_step_id, run_at, deadline, expires_at
  from ballast_private.jobs;
comment on column ballast.jobs.run_at is 'When it was submitted to start, if later than its submission (run_at or delay_ms): it is scheduled until then. Null: it was queued at once. An INSERT may set it.';
comment on column ballast.jobs.deadline is 'When it must have finished: then its unfinished steps fail (deadline_exceeded) and so does the job. Null: no deadline. An INSERT may set it.';
comment on column ballast.jobs.expires_at is 'When it must have started: if it is still scheduled or queued then, it fails (expired). Null: no limit. An INSERT may set it.';

-- insert_job(): as in 0032; new.run_at, new.deadline and new.expires_at (checked as submit_job's) are noted with the
-- row.
create or replace function ballast_private.insert_job() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := coalesce(new.tenant_id, 'default');
  v_input jsonb := coalesce(new.input, '{}'::jsonb);
  v_priority integer := coalesce(new.priority, 0);
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_prior record;
  v_id bigint;
  v_now timestamptz := ballast.now();
  v_run_at timestamptz;
begin
  if not ballast_private.caller_unrestricted() then
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot submit jobs', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if new.tenant_id is not null and new.tenant_id not in ('default', v_tenant) then
      raise exception using errcode = 'BA014', message = format('tenant %s cannot submit jobs for tenant %s', v_tenant, new.tenant_id),
        hint = 'Leave the tenant out: jobs are submitted for your own tenant.';
    end if;
    perform set_config('ballast.actor', ballast_private.caller_actor(null), true);
  end if;
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql_insert', true);
  end if;

  v_pipeline := ballast_private.checked_pipeline(new.pipeline, v_input, new.idempotency_key, v_tenant, v_priority,
                                                 new.pipeline_version);
  v_hash := ballast_private.request_hash(new.pipeline, new.pipeline_version, v_input);
  if new.run_at is not null then
    v_run_at := ballast_private.checked_run_at(new.run_at, null, v_now);
  end if;
  if new.deadline is not null or new.expires_at is not null then
    perform ballast_private.check_time_limits(v_run_at, new.deadline, new.expires_at, v_now);
  end if;

  if not ballast_private.job_inserts_ready() then
    create temporary table ballast_job_inserts (
      id bigint primary key, tenant_id text not null, pipeline text not null, pipeline_version integer not null,
      idempotency_key text, request_hash text not null, input jsonb not null, priority integer not null,
      created_at timestamptz not null, steps integer not null, run_at timestamptz, deadline timestamptz,
      expires_at timestamptz) on commit delete rows;
  end if;

  if new.idempotency_key is not null then
    perform ballast_private.lock_idempotency_key(v_tenant, new.idempotency_key);
    -- An earlier row of this statement with the key: the same job (it is noted, not stored yet).
    select i.id, i.request_hash into v_prior from pg_temp.ballast_job_inserts i
     where i.tenant_id = v_tenant and i.idempotency_key = new.idempotency_key;
    if found then
      if v_prior.request_hash <> v_hash then
        perform ballast_private.raise_key_conflict(new.idempotency_key, v_prior.id);
      end if;
      v_id := v_prior.id;
    else
      -- A stored job with the key (committed: the lock above waited for any submission of it still running).
      select j.id, j.request_hash into v_prior from ballast_private.jobs j
       where j.tenant_id = v_tenant and j.idempotency_key = new.idempotency_key;
      if found then
        if v_prior.request_hash <> v_hash then
          perform ballast_private.raise_key_conflict(new.idempotency_key, v_prior.id);
        end if;
        select v.* into new from ballast.jobs v where v.id = v_prior.id;
        return new;
      end if;
    end if;
  end if;

  if v_id is null then
    v_id := nextval('ballast_private.jobs_id_seq');
    insert into pg_temp.ballast_job_inserts (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                             input, priority, created_at, steps, run_at, deadline, expires_at)
    values (v_id, v_tenant, v_pipeline.name, v_pipeline.version, new.idempotency_key, v_hash, v_input, v_priority,
            v_now, jsonb_array_length(v_pipeline.definition -> 'steps'), v_run_at, new.deadline, new.expires_at);
  end if;
  select i.id, i.tenant_id, i.pipeline, i.pipeline_version, i.idempotency_key, i.input,
         case when i.run_at is not null then 'scheduled' else 'queued' end, i.priority,
         null::jsonb, null::jsonb, i.created_at, null::timestamptz, null::timestamptz, i.created_at, 0, 0, 0,
         null::timestamptz, i.run_at, i.deadline, i.expires_at
    into new.id, new.tenant_id, new.pipeline, new.pipeline_version, new.idempotency_key, new.input, new.status,
         new.priority, new.result, new.error, new.created_at, new.started_at, new.finished_at, new.updated_at,
         new.input_tokens, new.output_tokens, new.cost_usd, new.pruned_at, new.run_at, new.deadline, new.expires_at
    from pg_temp.ballast_job_inserts i where i.id = v_id;
  return new;
end
$fn$;

-- insert_jobs_flush(): as in 0032; the noted start time makes the job and its root steps 'scheduled'; the limits are
-- stored.
create or replace function ballast_private.insert_jobs_flush() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_noted integer;
  v_inserted integer;
  v_lost record;
begin
  if not ballast_private.job_inserts_ready() then
    return null;
  end if;
  select count(*) into v_noted from pg_temp.ballast_job_inserts;
  if v_noted = 0 then
    return null;
  end if;
  with ins as (
    insert into ballast_private.jobs as j (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                           input, priority, created_at, updated_at, n_total, status, run_at,
                                           deadline, expires_at)
    overriding system value
    select i.id, i.tenant_id, i.pipeline, i.pipeline_version, i.idempotency_key, i.request_hash, i.input, i.priority,
           i.created_at, i.created_at, i.steps, case when i.run_at is not null then 'scheduled' else 'queued' end,
           i.run_at, i.deadline, i.expires_at
      from pg_temp.ballast_job_inserts i
     order by i.id
    on conflict (tenant_id, idempotency_key) do nothing
    returning j.id)
  select count(*) into v_inserted from ins;
  if v_inserted < v_noted then
    select i.id, i.idempotency_key into v_lost from pg_temp.ballast_job_inserts i
     where not exists (select 1 from ballast_private.jobs j where j.id = i.id) order by i.id limit 1;
    raise exception using errcode = '40001',
      message = format('a concurrent submission took idempotency key %L while this INSERT ran', v_lost.idempotency_key),
      hint = 'Retry the statement with the same keys; it will return that job.';
  end if;

  perform set_config('ballast.steps_counted', 'on', true);
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, task, priority, next_run_at)
  select s.*
    from pg_temp.ballast_job_inserts i
    join ballast_private.pipelines p on p.name = i.pipeline and p.version = i.pipeline_version
   cross join lateral ballast_private.new_steps(i.id, p.name, p.version, p.definition, i.tenant_id, i.input,
                                                i.priority, i.created_at, i.run_at) s
   order by i.id;
  perform set_config('ballast.steps_counted', 'off', true);
  delete from pg_temp.ballast_job_inserts;
  return null;
end
$fn$;

-- steps_inserted(): as in 0032, and a scheduled step NOTIFYs ballast_queue too: idle workers learn when it falls due
-- (settle_and_claim's next_due_ms) instead of at their next poll.
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
  if exists (select 1 from new_t n where n.status in ('queued', 'scheduled')) then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

-- ==================== debounce and throttle ======================================================================

-- checked_keyed_option(field, value, ms field) -> (key, ms, max_ms): the key and milliseconds of a debounce
-- ({key, quiet_ms, max_wait_ms}) or throttle ({key, period_ms}) option, checked (BA002 naming the field: debounce.key,
-- debounce.quiet_ms, ...). The key is 1 to 500 bytes; times from 0 to a day (max_wait_ms: quiet_ms to thirty days).
create function ballast_private.checked_keyed_option(p_field text, p_value jsonb, p_ms_field text,
  out key text, out ms double precision, out max_ms double precision)
language plpgsql immutable
as $fn$
declare
  v_unknown text;
begin
  if jsonb_typeof(p_value) is distinct from 'object' then
    perform ballast_private.bad_argument(p_field, format('is %s, not an object', coalesce(jsonb_typeof(p_value), 'missing')),
      format('Pass {"key": "...", "%s": <ms>%s}.', p_ms_field, case when p_field = 'debounce' then ', "max_wait_ms": <ms>' else '' end));
  end if;
  select k into v_unknown from jsonb_object_keys(p_value) k
   where k not in ('key', p_ms_field) and (p_field <> 'debounce' or k <> 'max_wait_ms') limit 1;
  if found then
    perform ballast_private.bad_argument(p_field || '.' || v_unknown, 'is not an option of ' || p_field,
      format('Pass key and %s%s only.', p_ms_field, case when p_field = 'debounce' then ' (and max_wait_ms)' else '' end));
  end if;
  if jsonb_typeof(p_value -> 'key') is distinct from 'string' then
    perform ballast_private.bad_argument(p_field || '.key', 'is missing or not a string',
      'Name what the submissions are about, e.g. ''document:42''.');
  end if;
  key := p_value ->> 'key';
  perform ballast_private.check_key_text(p_field || '.key', key, 500, 'Name what the submissions are about, e.g. ''document:42''.');
  if jsonb_typeof(p_value -> p_ms_field) is distinct from 'number' or not ((p_value ->> p_ms_field)::numeric between 0 and 86400000) then
    perform ballast_private.bad_argument(p_field || '.' || p_ms_field,
      format('%s is not a number of milliseconds from 0 to a day', coalesce(p_value ->> p_ms_field, 'null')),
      'Pass milliseconds, e.g. 5000.');
  end if;
  ms := (p_value ->> p_ms_field)::double precision;
  if jsonb_typeof(p_value -> 'max_wait_ms') is distinct from 'null' and p_value ? 'max_wait_ms' then
    if jsonb_typeof(p_value -> 'max_wait_ms') <> 'number'
       or not ((p_value ->> 'max_wait_ms')::numeric between ms::numeric and 2592000000) then
      perform ballast_private.bad_argument(p_field || '.max_wait_ms',
        format('%s is not a number of milliseconds from quiet_ms (%s) to thirty days', p_value ->> 'max_wait_ms', ms),
        'Pass the longest a job may wait after the first submission of a burst, or leave it out for no limit.');
    end if;
    max_ms := (p_value ->> 'max_wait_ms')::double precision;
  end if;
end
$fn$;

-- submit_debounced(pipeline, input, tenant, priority, version, debounce, deadline, expires_at) -> (job, created): see
-- the header. The caller (submit_job) checked the tenant and the limits; the debounce option is checked here. Raises
-- as submit does (BA002, BA004).
create function ballast_private.submit_debounced(p_pipeline text, p_input jsonb, p_tenant_id text, p_priority integer,
  p_pipeline_version integer, p_debounce jsonb, p_deadline timestamptz, p_expires_at timestamptz)
returns table (job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_opt record;
  v_pipeline ballast_private.pipelines;
  v_now timestamptz := ballast.now();
  v_job ballast_private.jobs;
  v_run_at timestamptz;
  v_id bigint;
begin
  select * into v_opt from ballast_private.checked_keyed_option('debounce', p_debounce, 'quiet_ms') o;
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version);
  perform pg_advisory_xact_lock(hashtextextended('ballast.debounce/' || p_tenant_id || '/' || v_pipeline.name || '/' || v_opt.key, 0));
  select j.id into v_id from ballast_private.jobs j
   where j.tenant_id = p_tenant_id and j.pipeline = v_pipeline.name and j.debounce_key = v_opt.key and j.status = 'scheduled'
   order by j.id desc limit 1;
  if v_id is not null then
    -- The steps first, then the job (the engine's lock order); then look again: a claim may have started it.
    perform 1 from ballast_private.steps s where s.job_id = v_id order by s.id for update;
    select * into v_job from ballast_private.jobs j where j.id = v_id for no key update;
    if v_job.status = 'scheduled' and v_job.pipeline_version = v_pipeline.version then
      v_run_at := v_now + make_interval(secs => v_opt.ms / 1000.0);
      if v_job.debounce_until is not null and v_run_at > v_job.debounce_until then
        v_run_at := v_job.debounce_until;
      end if;
      update ballast_private.jobs j
         set input = p_input, request_hash = ballast_private.request_hash(p_pipeline, p_pipeline_version, p_input),
             run_at = v_run_at, priority = p_priority, updated_at = v_now
       where j.id = v_id;
      update ballast_private.steps s set next_run_at = v_run_at, priority = p_priority
       where s.job_id = v_id and s.status = 'scheduled';
      insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
      values (v_id, 'job_debounced', 'scheduled', coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
              nullif(current_setting('ballast.reason', true), ''),
              jsonb_build_object('debounce_key', v_opt.key, 'previous_run_at', v_job.run_at, 'run_at', v_run_at,
                                 'submissions', 2 + (select count(*) from ballast_private.events e
                                                      where e.job_id = v_id and e.type = 'job_debounced')),
              v_now);
      -- Workers that set a timer for the earlier start look again when it fires; wake them for a sooner one.
      perform pg_notify('ballast_queue', '');
      return query select v_id, false;
      return;
    end if;
  end if;
  select s.job_id into v_id
    from ballast_private.submit(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version,
                                ballast_private.checked_run_at(null, v_opt.ms, v_now), p_deadline, p_expires_at) s;
  update ballast_private.jobs j
     set debounce_key = v_opt.key,
         debounce_until = case when v_opt.max_ms is not null then v_now + make_interval(secs => v_opt.max_ms / 1000.0) end
   where j.id = v_id;
  return query select v_id, true;
end
$fn$;

-- submit_throttled(pipeline, input, tenant, priority, version, throttle, run_at, deadline, expires_at) -> (job,
-- created): see the header. A submission within period_ms of the newest job of its key returns that job (and is
-- recorded as a 'job_throttled' event of it); otherwise a new job with the key.
create function ballast_private.submit_throttled(p_pipeline text, p_input jsonb, p_tenant_id text, p_priority integer,
  p_pipeline_version integer, p_throttle jsonb, p_run_at timestamptz, p_deadline timestamptz, p_expires_at timestamptz)
returns table (job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_opt record;
  v_pipeline ballast_private.pipelines;
  v_now timestamptz := ballast.now();
  v_last record;
  v_id bigint;
begin
  select * into v_opt from ballast_private.checked_keyed_option('throttle', p_throttle, 'period_ms') o;
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version);
  perform pg_advisory_xact_lock(hashtextextended('ballast.throttle/' || p_tenant_id || '/' || v_pipeline.name || '/' || v_opt.key, 0));
  select j.id, j.created_at into v_last from ballast_private.jobs j
   where j.tenant_id = p_tenant_id and j.pipeline = v_pipeline.name and j.throttle_key = v_opt.key
   order by j.created_at desc limit 1;
  if v_last.id is not null and v_last.created_at > v_now - make_interval(secs => v_opt.ms / 1000.0) then
    insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
    values (v_last.id, 'job_throttled', (select j.status from ballast_private.jobs j where j.id = v_last.id),
            coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
            nullif(current_setting('ballast.reason', true), ''),
            jsonb_build_object('throttle_key', v_opt.key, 'period_ms', v_opt.ms,
                               'next_allowed_at', v_last.created_at + make_interval(secs => v_opt.ms / 1000.0)),
            v_now);
    return query select v_last.id, false;
    return;
  end if;
  select s.job_id into v_id
    from ballast_private.submit(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version, p_run_at,
                                p_deadline, p_expires_at) s;
  update ballast_private.jobs j set throttle_key = v_opt.key where j.id = v_id;
  return query select v_id, true;
end
$fn$;

-- ==================== promotion and claim =========================================================================

-- start_due_steps(tasks, n, now): queues at most n scheduled steps of these tasks whose time came (earliest first;
-- rows another claim holds are skipped), and moves their jobs from 'scheduled' to 'queued' once no step of theirs is
-- scheduled any more. Set-based: one UPDATE of steps, one of jobs (locked in id order, after the steps).
create function ballast_private.start_due_steps(p_tasks text[], p_n integer, p_now timestamptz)
returns void
language plpgsql volatile
as $fn$
declare
  v_jobs bigint[];
begin
  with due as (
    select s.id from ballast_private.steps s
     where s.status = 'scheduled' and s.next_run_at <= p_now and s.task = any(p_tasks)
     order by s.next_run_at limit p_n
       for update skip locked),
  upd as (
    update ballast_private.steps s set status = 'queued', queued_at = p_now, next_run_at = null, updated_at = p_now
      from due where s.id = due.id
    returning s.job_id)
  select array_agg(distinct upd.job_id) into v_jobs from upd;
  if v_jobs is null then
    return;
  end if;
  perform 1 from ballast_private.jobs j where j.id = any(v_jobs) and j.status = 'scheduled' order by j.id for no key update;
  update ballast_private.jobs j set status = 'queued'
   where j.id = any(v_jobs) and j.status = 'scheduled'
     and not exists (select 1 from ballast_private.steps s where s.job_id = j.id and s.status = 'scheduled');
end
$fn$;

-- claim_steps(worker, tasks, n, lease): as in 0032, and the scheduled steps whose time came are queued first
-- (start_due_steps), behind one probe of steps_scheduled_idx; jobs past their deadline or expiry fail first
-- (expire_jobs), behind one probe each of jobs_deadline_idx and jobs_expiry_idx. The probes, and that of the retries
-- due, are one statement.
create or replace function ballast.claim_steps(p_worker_id text, p_tasks text[], p_n integer, p_lease_ms integer DEFAULT 30000) returns SETOF ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_lease timestamptz;
  v_n int := least(greatest(coalesce(p_n, 0), 0), 1000);
  v_ids bigint[];
  v_retries_due boolean;
  v_limits_due boolean;
  v_starts_due boolean;
begin
  if v_n = 0 then
    return;
  end if;
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  -- (Probed first: an UPDATE fires the statement triggers of steps even when it changes no row.) One statement for
  -- the probes of retries due, jobs past their deadline or expiry, and scheduled steps due: each one index probe.
  select exists (select 1 from ballast_private.steps r where r.status = 'retrying' and r.next_run_at <= v_now),
         exists (select 1 from ballast_private.jobs l where l.deadline <= v_now and l.deadline is not null and l.finished_at is null)
         or exists (select 1 from ballast_private.jobs l
                     where l.expires_at <= v_now and l.expires_at is not null and l.status in ('scheduled', 'queued')),
         exists (select 1 from ballast_private.steps r where r.status = 'scheduled' and r.next_run_at <= v_now)
    into v_retries_due, v_limits_due, v_starts_due;
  if v_retries_due then
    perform ballast_private.requeue_due_retries(p_tasks, v_n, v_now);
  end if;
  -- Jobs past their deadline or expiry fail before anything is queued or claimed (expire_jobs: none of their steps
  -- is taken).
  if v_limits_due then
    perform ballast_private.expire_jobs(v_now, 100);
  end if;
  if v_starts_due then
    perform ballast_private.start_due_steps(p_tasks, v_n, v_now);
  end if;

  -- Steps of concurrency groups first (a part, called only when a probe finds one queued), then the others from
  -- steps_queue_idx, inline: every claim runs it, and a function call for it cost ~0.03 ms per claim (see above).
  if exists (select 1 from ballast_private.steps g
              where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)) then
    v_ids := ballast_private.pick_grouped_steps(p_tasks, v_n);
  else
    v_ids := '{}';
  end if;
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

  -- Model steps whose gate is closed are parked instead of claimed (claim_gate). Two probes of small tables first,
  -- so that claims pay nothing while no cooldown is in force and no pausing budget is used up.
  if exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
     or exists (select 1 from ballast_private.budgets b
                  left join ballast_private.budget_usage u
                    on u.tenant_id = b.tenant_id and u.period_start = ballast_private.budget_period_start(b.period, v_now)
                 where b.on_exhausted = 'pause' and coalesce(u.spent_usd, 0) + coalesce(u.reserved_usd, 0) >= b.limit_usd) then
    v_ids := ballast_private.park_gated_steps(v_ids, v_now);
    if cardinality(v_ids) = 0 then
      return;
    end if;
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

-- settle_and_claim(...) -> (settled, claims, next_due_ms): as in 0032, and when the claim came back short (fewer
-- than p_n), in how many milliseconds the next scheduled step of these tasks falls due (null: none; one probe of
-- steps_scheduled_idx), so that the worker wakes for it on time.
drop function ballast.settle_and_claim(text, bigint[], jsonb[], bigint[], jsonb[], text[], integer, integer);
create function ballast.settle_and_claim(p_worker_id text, p_ok bigint[], p_outputs jsonb[], p_failed bigint[], p_errors jsonb[], p_tasks text[], p_n integer, p_lease_ms integer DEFAULT 30000) returns TABLE(settled jsonb, claims jsonb, next_due_ms double precision)
language plpgsql volatile
as $fn$
declare
  v_settled jsonb;
  v_claims jsonb;
  v_next_due double precision;
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
  -- Last, so that the time it gives is as fresh as can be when the worker reads it.
  if coalesce(p_n, 0) > 0 and coalesce(jsonb_array_length(v_claims), 0) < p_n then
    select extract(epoch from (s.next_run_at - ballast.now())) * 1000 into v_next_due
      from ballast_private.steps s
     where s.status = 'scheduled' and s.task = any(p_tasks)
     order by s.next_run_at limit 1;
  end if;
  return query select coalesce(v_settled, '[]'::jsonb), coalesce(v_claims, '[]'::jsonb), v_next_due;
end
$fn$;

-- ==================== deadlines and expiry ========================================================================

-- expire_jobs(now, batch) -> the jobs it failed: at most `batch` jobs past their deadline (unfinished) or their expiry
-- time (still scheduled or queued), earliest first. Each fails, in one pass over its steps: running attempts are
-- cancelled (their workers told on ballast_cancel), live steps fail with the error class 'deadline_exceeded' or
-- 'expired' and the time in the message, pending steps are skipped; the job's status follows (failed). A job whose
-- steps another transaction holds is left to the next pass (its steps are locked NOWAIT: claims never wait here).
-- Events: step_failed / step_skipped / job_failed, actor as the caller set it (reaper, or the claiming worker's
-- transaction), reason 'deadline passed' or 'expired before it started'.
create function ballast_private.expire_jobs(p_now timestamptz, p_batch integer)
returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_job record;
  v_class text;
  v_message text;
  v_attempts jsonb;
  v_done bigint[] := '{}';
  v_reason text := current_setting('ballast.reason', true);
begin
  for v_job in
    select l.id, l.deadline, l.expires_at, l.deadline is not null and l.deadline <= p_now as late
      from (select j.id, j.deadline, j.expires_at from ballast_private.jobs j
             where j.deadline <= p_now and j.deadline is not null and j.finished_at is null
            union
            select j.id, j.deadline, j.expires_at from ballast_private.jobs j
             where j.expires_at <= p_now and j.expires_at is not null and j.status in ('scheduled', 'queued')) l
     order by least(l.deadline, l.expires_at), l.id
     limit p_batch
  loop
    begin
      perform 1 from ballast_private.steps s where s.job_id = v_job.id
       order by s.parent_step_id is null, s.id for update nowait;
    exception when lock_not_available then
      continue;
    end;
    -- Read again under the step locks: the job may have finished or started meanwhile.
    continue when not exists (select 1 from ballast_private.jobs j where j.id = v_job.id and j.finished_at is null
                                 and (v_job.late or j.status in ('scheduled', 'queued')));
    if v_job.late then
      v_class := 'deadline_exceeded';
      v_message := format('the job did not finish by its deadline %s', v_job.deadline);
      perform set_config('ballast.reason', 'deadline passed', true);
    else
      v_class := 'expired';
      v_message := format('the job did not start by its expiry time %s', v_job.expires_at);
      perform set_config('ballast.reason', 'expired before it started', true);
    end if;
    select coalesce(jsonb_agg(jsonb_build_object('attempt_id', a.id, 'worker_id', a.worker_id)), '[]') into v_attempts
      from ballast_private.attempts a where a.job_id = v_job.id and a.outcome = 'running';
    update ballast_private.attempts a
       set outcome = 'cancelled', finished_at = p_now, error_class = v_class, error_message = v_message,
           error_retryable = false
     where a.job_id = v_job.id and a.outcome = 'running';
    update ballast_private.steps s
       set status = case when s.status = 'pending' then 'skipped' else 'failed' end,
           finished_at = p_now, next_run_at = null, wait_key = null, wait_deadline = null, wait_on_timeout = null,
           error = case when s.status = 'pending' then s.error
                        else jsonb_build_object('class', v_class, 'message', v_message, 'retryable', false,
                                                'attempt', s.attempts) end
     where s.job_id = v_job.id
       and s.status in ('scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review');
    if jsonb_array_length(v_attempts) > 0 then
      perform pg_notify('ballast_cancel', jsonb_build_object('job_id', v_job.id, 'attempts', v_attempts)::text);
    end if;
    v_done := v_done || v_job.id;
  end loop;
  -- In a batch whose job counters are deferred (settle_and_claim), the jobs' statuses are written now, so that their
  -- job_failed events carry the reason too.
  if cardinality(v_done) > 0 and current_setting('ballast.defer_counters', true) = 'on' then
    perform ballast_private.flush_job_counters();
    perform set_config('ballast.defer_counters', 'on', true);
  end if;
  perform set_config('ballast.reason', coalesce(v_reason, ''), true);
  return v_done;
end
$fn$;

-- reap(dead_after, lost_after): as in 0032, and one more bounded part: jobs past their deadline or expiry time fail
-- (expire_jobs).
create or replace function ballast.reap(p_dead_after_ms integer DEFAULT 10000, p_lost_after_ms integer DEFAULT 2000) returns TABLE(dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_batch constant integer := 500;
  v_trusted_from timestamptz;
  v_locks_trusted boolean;
  v_dead text[] := '{}';
  v_reclaimed bigint[] := '{}';
  v_expired bigint[] := '{}';
  v_jobs bigint[];
  v_more bigint[];
  v_job bigint;
begin
  if not pg_try_advisory_xact_lock(1650551916, 0) then
    return query select v_dead, v_reclaimed, v_expired;
    return;
  end if;
  perform set_config('ballast.actor', 'reaper', true);
  v_trusted_from := ballast_private.server_epoch() + ballast_private.restart_grace();
  -- Compared with the real clock: the server's age is real time even when a test sets ballast.now.
  v_locks_trusted := clock_timestamp() > v_trusted_from;

  v_dead := ballast_private.reap_dead_workers(p_dead_after_ms, p_lost_after_ms, v_now, v_trusted_from,
                                              v_locks_trusted, v_batch);
  select r.reclaimed_ids, r.touched_jobs into v_reclaimed, v_jobs
    from ballast_private.reclaim_lost_attempts(v_now, v_trusted_from, v_batch) r;
  select e.expired_ids, e.touched_jobs into v_expired, v_more from ballast_private.expire_waits(v_now, v_batch) e;
  v_jobs := v_jobs || v_more || ballast_private.finish_orphaned_maps(v_batch);
  if exists (select 1 from ballast_private.jobs l where l.deadline <= v_now and l.deadline is not null and l.finished_at is null)
     or exists (select 1 from ballast_private.jobs l
                 where l.expires_at <= v_now and l.expires_at is not null and l.status in ('scheduled', 'queued')) then
    v_jobs := v_jobs || ballast_private.expire_jobs(v_now, v_batch);
  end if;

  foreach v_job in array (select coalesce(array_agg(distinct j), '{}') from unnest(v_jobs) j) loop
    perform ballast_private.refresh_job_status(v_job);
  end loop;
  return query select v_dead, v_reclaimed, v_expired;
end
$fn$;

-- ==================== cancel ======================================================================================

-- cancel_job(job, reason, actor): as in 0038 (with its child jobs), and scheduled steps are cancelled with the others.
create or replace function ballast_private.cancel_job(p_job_id bigint, p_reason text default null, p_actor text default null)
returns table (job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql volatile
as $fn$
declare
  v_job ballast_private.jobs;
  v_now timestamptz := ballast.now();
  v_steps bigint[];
  v_jobs bigint[];
begin
  perform ballast_private.set_actor(p_actor);
  perform set_config('ballast.reason', coalesce(p_reason, ''), true);
  -- The job and its unfinished descendants, deepest first (a finished child's unfinished children count too).
  with recursive t(id, depth, finished) as (
    select p_job_id, 0, false
    union all
    select c.id, t.depth + 1, c.finished_at is not null
      from t join ballast_private.jobs c on c.parent_job_id = t.id
     where t.depth < 1000)
  select array_agg(t.id order by t.depth desc, t.id) into v_jobs from t where not t.finished;
  -- Items of map steps first, then the other steps, each by id: an item finishing locks itself, then its map step.
  perform 1 from ballast_private.steps s join unnest(v_jobs) with ordinality u(id, n) on u.id = s.job_id
   order by u.n, s.parent_step_id is null, s.id for update of s;
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

  perform pg_notify('ballast_cancel', jsonb_build_object('job_id', r.job_id, 'attempts', r.attempts)::text)
     from (select a.job_id, jsonb_agg(jsonb_build_object('attempt_id', a.id, 'worker_id', a.worker_id)) as attempts
             from ballast_private.attempts a where a.job_id = any(v_jobs) and a.outcome = 'running'
            group by a.job_id order by a.job_id) r;
  update ballast_private.attempts a
     set outcome = 'cancelled', finished_at = v_now, error_class = 'cancelled',
         error_message = case when a.job_id = p_job_id then coalesce('job cancelled: ' || nullif(p_reason, ''), 'job cancelled')
                              else format('job cancelled with its parent job %s', p_job_id)
                                   || coalesce(': ' || nullif(p_reason, ''), '') end,
         error_retryable = false
   where a.job_id = any(v_jobs) and a.outcome = 'running';
  with c as (
    update ballast_private.steps s
       set status = 'cancelled', finished_at = v_now, next_run_at = null,
           wait_key = null, wait_deadline = null, wait_on_timeout = null, wait_children = null, wait_first = null
     where s.job_id = any(v_jobs)
       and s.status in ('scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review')
    returning s.id, s.job_id)
  select coalesce(array_agg(c.id order by c.id) filter (where c.job_id = p_job_id), '{}') into v_steps from c;
  return query select p_job_id, ballast_private.refresh_job_status(p_job_id), v_steps, false;
end
$fn$;

-- Down Migration
