-- Up Migration
--
-- 0005: executing steps: workers, claim, complete, fail, progress.
--
-- The protocol (DESIGN §4): a graphile-worker job is only a wake-up carrying a step id. The task calls
-- ballast.claim_step; if the step is runnable it gets an attempt with a lease, otherwise nothing (a duplicate or stale
-- wake-up ends there). The handler's result goes to ballast.complete_step or ballast.fail_step, each one transaction
-- that also queues or skips what follows and re-derives the job's status.
--
-- Round trips per step on the hot path: graphile-worker's own fetch and completion (2) plus claim_step and
-- complete_step (1 each) = 4. Statements inside claim_step: lock step, update step, insert attempt, lock job + count
-- steps (+ update job when its status changes); complete_step: lock attempt+step, update attempt, update step,
-- update dependants, one add_job per newly queued dependant, lock job + count steps (+ update job).
--
-- Lock order everywhere: the step row, then its dependants' rows, then the job row (refresh_job_status). Nothing
-- locks a job row and then a step row, so these functions cannot deadlock with each other.

-- register_worker(id, hostname, pid, concurrency, pipelines): records a live worker process (upsert).
create function ballast.register_worker(
  p_worker_id text, p_hostname text, p_pid integer, p_concurrency integer, p_pipelines text[] default '{}'
) returns void
language plpgsql
as $fn$
begin
  if p_worker_id is null or p_worker_id = '' then
    perform ballast_private.bad_argument('worker_id', 'is missing', 'Pass a unique id for this worker process.');
  end if;
  if p_concurrency is null or p_concurrency < 1 then
    perform ballast_private.bad_argument('concurrency', format('%s is not a positive integer', p_concurrency),
      'Run at least one step at a time.');
  end if;
  insert into ballast_private.workers (id, hostname, pid, concurrency, pipelines)
  values (p_worker_id, coalesce(p_hostname, 'unknown'), coalesce(p_pid, 0), p_concurrency, coalesce(p_pipelines, '{}'))
  on conflict (id) do update
     set hostname = excluded.hostname, pid = excluded.pid, concurrency = excluded.concurrency,
         pipelines = excluded.pipelines, heartbeat_at = ballast.now(), stopped_at = null;
end
$fn$;

-- set_worker_pool(id, pool_id): records the graphile-worker pool id (locked_by) of a worker once its pool exists.
create function ballast.set_worker_pool(p_worker_id text, p_pool_id text) returns void
language plpgsql
as $fn$
begin
  update ballast_private.workers set pool_id = p_pool_id, heartbeat_at = ballast.now() where id = p_worker_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered', p_worker_id),
      hint = 'Call ballast.register_worker first.';
  end if;
end
$fn$;

-- heartbeat_worker(id): the worker is alive. Returns false when the row is gone or marked stopped, so a worker
-- that was declared dead learns it.
create function ballast.heartbeat_worker(p_worker_id text) returns boolean
language sql
as $fn$
  with u as (
    update ballast_private.workers set heartbeat_at = ballast.now()
     where id = p_worker_id and stopped_at is null
    returning 1)
  select exists (select 1 from u)
$fn$;

-- stop_worker(id): marks a worker stopped (graceful exit) and unlocks any graphile-worker job its pool still holds:
-- graphile-worker can leave a just-finished job locked when its pool shuts down, and would keep it locked for hours.
create function ballast.stop_worker(p_worker_id text) returns void
language plpgsql
as $fn$
declare
  v_pool_id text;
begin
  update ballast_private.workers set stopped_at = ballast.now()
   where id = p_worker_id and stopped_at is null
  returning pool_id into v_pool_id;
  if v_pool_id is not null then
    perform graphile_worker.force_unlock_workers(array[v_pool_id]);
  end if;
end
$fn$;

-- wake_concurrency_group(key): a slot of a concurrency group was freed; wake the oldest queued steps of the group
-- (as many as the group's limit, so one lost wake-up cannot strand the rest). Claims that find the group full still
-- re-wake themselves a little later, so this is the fast path, not the only one.
create function ballast_private.wake_concurrency_group(p_key text, p_limit integer) returns void
language plpgsql
as $fn$
declare
  v_step_id bigint;
begin
  for v_step_id in
    select id from ballast_private.steps
     where concurrency_key = p_key and status = 'queued'
     order by id limit least(p_limit, 10)
  loop
    perform ballast_private.wake_step(v_step_id);
  end loop;
end
$fn$;

-- claim_step(step_id, worker_id, lease_ms) -> one row when the step is now running under a new attempt, else none.
-- Returns none when the step is missing, locked by another transaction (SKIP LOCKED: whoever holds it decides),
-- not queued, a retry that is not due yet, or over its concurrency limit (then it waits its turn: no attempt is
-- used, and it is woken again when a slot frees or after a short delay).
-- Raises BA007 when the worker is not registered.
-- The concurrency check takes a transaction advisory lock on the group key, then counts running steps of the group:
-- two claims of the same group serialise on that lock, and the second one's count (a new snapshot) includes the
-- first. Groups never share a lock, so unrelated claims never wait.
create function ballast.claim_step(p_step_id bigint, p_worker_id text, p_lease_ms integer default 60000)
returns table (
  attempt_id bigint, attempt_number integer, max_attempts integer, step_id bigint, step_name text,
  job_id bigint, tenant_id text, pipeline text, pipeline_version integer, input jsonb, dependencies jsonb,
  idempotency_key text, timeout_ms integer, lease_expires_at timestamptz
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
  perform 1 from ballast_private.workers w where w.id = p_worker_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps.';
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
  select v_attempt_id, v_step.attempts, v_step.max_attempts, v_step.id, v_step.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                    where d.job_id = v_step.job_id and d.name = any(v_step.depends_on)), '{}'::jsonb),
         'ballast:' || j.id || ':' || v_step.name,
         v_step.timeout_ms, v_lease
    from ballast_private.jobs j where j.id = v_step.job_id;
end
$fn$;

-- running_attempt(attempt_id): locks and returns the attempt's step, or raises BA007 (no such attempt) / BA008 (the
-- attempt is not the step's running attempt any more: crashed and reclaimed, cancelled, or already finished).
create function ballast_private.running_attempt(p_attempt_id bigint) returns ballast_private.steps
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_attempt ballast_private.attempts;
begin
  select * into v_attempt from ballast_private.attempts where id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  select * into v_step from ballast_private.steps where id = v_attempt.step_id for update;
  select * into v_attempt from ballast_private.attempts where id = p_attempt_id;
  if v_attempt.outcome <> 'running' or v_step.status <> 'running' or v_step.attempts <> v_attempt.number then
    raise exception using errcode = 'BA008',
      message = format('attempt %s of step %s is no longer running (attempt outcome %s, step status %s): its result was not recorded',
                       p_attempt_id, v_step.id, v_attempt.outcome, v_step.status),
      hint = 'Another attempt owns the step now; discard this result.';
  end if;
  return v_step;
end
$fn$;

-- complete_step(attempt_id, output) -> (step_status, job_status, queued_step_ids)
-- Marks the attempt and step succeeded with the output (already checked against the step's contract by the worker),
-- queues and wakes the dependants whose dependencies are now all succeeded, frees a concurrency slot, and re-derives
-- the job. Raises BA007/BA008 as running_attempt.
create function ballast.complete_step(p_attempt_id bigint, p_output jsonb)
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
     set status = 'succeeded', output = coalesce(p_output, 'null'::jsonb), error = null, finished_at = v_now
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
  v_job_status := ballast_private.refresh_job_status(v_step.job_id);
  return query select 'succeeded'::text, v_job_status, v_queued;
end
$fn$;

-- fail_step(attempt_id, error) -> (step_status, next_run_at, job_status)
-- error: {"class": text (required), "message": text (required), "code": text or number, "retryable": boolean
--         (default true), "retry_after_ms": number from 0 to 604800000 (7 days)}. Raises BA002, before touching
-- anything, when the error object is malformed (a missing or non-text class or message, a retryable that is not a
-- boolean, a retry_after_ms out of range): a typo must not turn into a retry decision (the text 'no' casts to false).
-- Retryable with attempts left -> 'retrying', next_run_at = now + delay: retry_after_ms when given (a provider's
-- Retry-After wins), else full jitter, random(0, min(cap, base * 2^(attempt-1))). Otherwise -> 'failed' (the
-- dead-letter set) and every step that depends on it, directly or not, -> 'skipped'.
create function ballast.fail_step(p_attempt_id bigint, p_error jsonb)
returns table (step_status text, next_run_at timestamptz, job_status text)
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_retryable boolean;
  v_delay_ms double precision;
  v_next timestamptz;
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
  v_step := ballast_private.running_attempt(p_attempt_id);
  v_retryable := coalesce((p_error ->> 'retryable')::boolean, true);
  v_error := jsonb_build_object('class', p_error ->> 'class', 'code', p_error ->> 'code',
                                'message', p_error ->> 'message', 'retryable', v_retryable,
                                'attempt', v_step.attempts);

  update ballast_private.attempts
     set outcome = 'failed', finished_at = v_now, error_class = p_error ->> 'class', error_code = p_error ->> 'code',
         error_message = p_error ->> 'message', error_retryable = v_retryable
   where id = p_attempt_id;

  if v_retryable and v_step.attempts < v_step.max_attempts then
    v_delay_ms := coalesce((p_error ->> 'retry_after_ms')::double precision,
                           floor(random() * least(v_step.backoff_cap_ms::double precision,
                                                  v_step.backoff_base_ms * power(2, least(v_step.attempts - 1, 40)))));
    v_next := v_now + make_interval(secs => v_delay_ms / 1000.0);
    update ballast_private.steps set status = 'retrying', next_run_at = v_next, error = v_error
     where id = v_step.id;
    perform ballast_private.wake_step(v_step.id, v_next);
    v_status := 'retrying';
  else
    update ballast_private.steps set status = 'failed', error = v_error, finished_at = v_now
     where id = v_step.id;
    with recursive dependants(name) as (
      select v_step.name
      union
      select d.name from ballast_private.steps d join dependants p on p.name = any(d.depends_on)
       where d.job_id = v_step.job_id)
    update ballast_private.steps s set status = 'skipped', finished_at = v_now
     where s.job_id = v_step.job_id and s.status = 'pending'
       and s.name in (select name from dependants);
    v_status := 'failed';
  end if;

  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  return query select v_status, v_next, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;

-- report_progress(attempt_id, progress): stores the step's latest progress (any JSON) and NOTIFYs it on
-- ballast_events as type step_progress (not stored as an event: progress may be frequent; a progress value over 6000
-- bytes is left out of the payload, NOTIFY's limit being 8000, and is read from the step). Returns false, changing
-- nothing, when the attempt is no longer running.
create function ballast.report_progress(p_attempt_id bigint, p_progress jsonb) returns boolean
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
  perform pg_notify('ballast_events', json_build_object(
    'job_id', v_job_id, 'step_id', v_step_id, 'type', 'step_progress', 'status', 'running',
    'progress', case when octet_length(p_progress::text) < 6000 then p_progress end)::text);
  return true;
end
$fn$;
