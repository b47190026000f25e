-- Up Migration
--
-- 0005: executing steps: workers, claim, complete, fail, progress; and keeping them alive or recovering them: worker
-- liveness and crash recovery (heartbeats, leases, the reaper), graceful release, timeouts, waiting for external
-- events, and the side-effect ledger.
--
-- The protocol: a graphile-worker job is only a wake-up carrying a step id. The task calls
-- ballast.claim_step; if the step is runnable it gets an attempt with a lease, otherwise nothing (a duplicate or stale
-- wake-up ends there). The handler's result goes to ballast.complete_step or ballast.fail_step, each one transaction
-- that also queues or skips what follows and re-derives the job's status.
--
-- Round trips per step on the hot path: graphile-worker's own fetch and completion (2) plus claim_step and
-- complete_step (1 each) = 4. Statements inside claim_step: lock step, update step, insert attempt, lock job + count
-- steps (+ update job when its status changes); complete_step: lock attempt+step, update attempt, update step,
-- update dependants, one add_job per newly queued dependant, lock job + count steps (+ update job).
--
-- Lock order everywhere: the step row (an item of a map step before its map step), then its dependants' rows, then
-- the job row (refresh_job_status). Nothing locks a job row and then a step row, so these functions cannot deadlock
-- with each other.
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
-- Waiting: ballast.wait_for_event parks a running step (status 'waiting') until ballast.send_event (0007) delivers
-- the key it waits for, or until its deadline, which ballast.reap enforces. Side effects: ballast.record_effect keeps
-- the result of each effect(key, fn) of a step, and claim_step hands them to the next attempt.

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

-- heartbeat_worker(worker_id, running_attempt_ids, lease_ms) -> (alive, lost_attempt_ids)
-- The worker is alive: its heartbeat is stamped and the leases of the running attempts it names (running_attempt_ids)
-- extended to now + lease_ms.
-- Returns alive = false when the worker was declared stopped (it must stop working and register again), and the
-- attempts the worker believes it runs that are no longer running (cancelled, reclaimed, finished elsewhere): the
-- worker aborts those. This is the polling half of cancellation; NOTIFY ballast_cancel is the fast half.
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

-- step_claim: what a worker gets when it claims a step (claim_step, complete_step_and_claim).
create type ballast.step_claim as (
  attempt_id bigint, attempt_number integer, max_attempts integer, step_id bigint, step_name text,
  job_id bigint, tenant_id text, pipeline text, pipeline_version integer, input jsonb, dependencies jsonb,
  idempotency_key text, timeout_ms integer, lease_expires_at timestamptz, effects jsonb,
  definition_step text, item_index integer, item jsonb
);

-- claim_step(step_id, worker_id, lease_ms) -> one row when the step is now running under a new attempt, else none.
-- Returns none when the step is missing, locked by another transaction (SKIP LOCKED: whoever holds it decides),
-- not queued, a retry that is not due yet, or over its concurrency limit (then it waits its turn: no attempt is
-- used, and it is woken again when a slot frees or after a short delay).
-- Raises BA007 when the worker is not registered, or was declared stopped (a worker declared dead must register
-- again).
-- The row: the new attempt (its number as charged against max_attempts, attempts - attempt_offset; its lease, now +
-- lease_ms, at least 1 s, which heartbeat_worker extends), the step and its job, the outputs of the step's
-- dependencies (name -> output), the idempotency key 'ballast:<job id>:<step name>', the step's recorded side effects
-- (key -> result), so a retried attempt reuses them without a round trip per effect, and for an item of a map step
-- (0008) the map step's name (definition_step; otherwise the step's own name), the item's index and the item.
-- The concurrency check takes a transaction advisory lock on the group key, then counts running steps of the group:
-- two claims of the same group serialise on that lock, and the second one's count (a new snapshot) includes the
-- first. Groups never share a lock, so unrelated claims never wait.
create function ballast.claim_step(p_step_id bigint, p_worker_id text, p_lease_ms integer default 30000)
returns setof ballast.step_claim
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

-- queue_dependants(job_id, step_name, now) -> ids of the steps queued
-- The step `step_name` succeeded: each pending step of the job that depends on it has one dependency fewer to wait
-- for; those with none left become 'queued' and get their wake-up. The caller holds the succeeded step's lock.
create function ballast_private.queue_dependants(
  p_job_id bigint, p_step_name text, p_now timestamptz, p_wake_first boolean default true
) returns bigint[]
language plpgsql
as $fn$
declare
  v_queued bigint[];
  v_id bigint;
begin
  with d as (
    update ballast_private.steps s
       set deps_remaining = s.deps_remaining - 1,
           status = case when s.deps_remaining = 1 then 'queued' else s.status end,
           queued_at = case when s.deps_remaining = 1 then p_now else s.queued_at end
     where s.job_id = p_job_id and p_step_name = any(s.depends_on) and s.status = 'pending'
    returning s.id, s.status)
  select coalesce(array_agg(d.id order by d.id) filter (where d.status = 'queued'), '{}') into v_queued from d;
  foreach v_id in array v_queued loop
    -- Without p_wake_first the caller runs the first queued dependant itself (eager hand-off) or wakes it.
    continue when not p_wake_first and v_id = v_queued[1];
    perform ballast_private.wake_step(v_id);
  end loop;
  return v_queued;
end
$fn$;

-- complete(attempt_id, output, wake_first) -> (job_status, queued_step_ids): the body of complete_step and
-- complete_step_and_claim.
-- Marks the attempt and step succeeded with the output (already checked against the step's contract by the worker),
-- clears the step's wait fields, queues and wakes the dependants whose dependencies are now all succeeded, frees a
-- concurrency slot, lets the map step of an item finish when this was its last live item (finish_map, 0008), and
-- re-derives the job. Raises BA007/BA008 as running_attempt.
create function ballast_private.complete(p_attempt_id bigint, p_output jsonb, p_wake_first boolean)
returns table (job_status text, queued_step_ids bigint[])
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_queued bigint[];
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'succeeded', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'succeeded', output = coalesce(p_output, 'null'::jsonb), error = null, finished_at = v_now,
         wait_key = null, wait_deadline = null, wait_on_timeout = null
   where id = v_step.id;

  v_queued := ballast_private.queue_dependants(v_step.job_id, v_step.name, v_now, p_wake_first);

  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  if v_step.parent_step_id is not null then
    perform ballast_private.finish_map(v_step.parent_step_id);
  end if;
  return query select ballast_private.refresh_job_status(v_step.job_id), v_queued;
end
$fn$;

-- complete_step(attempt_id, output) -> (step_status, job_status, queued_step_ids)
-- The attempt succeeded: see ballast_private.complete. Every dependant that became runnable gets a wake-up.
create function ballast.complete_step(p_attempt_id bigint, p_output jsonb)
returns table (step_status text, job_status text, queued_step_ids bigint[])
language sql
as $fn$
  select 'succeeded'::text, c.job_status, c.queued_step_ids from ballast_private.complete(p_attempt_id, p_output, true) c
$fn$;

-- complete_step_and_claim(attempt_id, output, worker_id, lease_ms) -> the claim of the next step, or no row
-- Eager hand-off: completes the attempt like complete_step, and when a dependant became runnable, claims the first
-- one for the same worker in the same transaction instead of waking it through graphile-worker; the worker runs it
-- at once in the slot it already holds. This saves, per hand-off, an add_job, a graphile-worker fetch and completion
-- and a claim round trip (benchmarked in docs/benchmarks.md). The other runnable dependants are woken as usual; one
-- the claim refuses (over its concurrency limit) is woken by claim_step itself. Raises as complete_step/claim_step.
create function ballast.complete_step_and_claim(
  p_attempt_id bigint, p_output jsonb, p_worker_id text, p_lease_ms integer default 30000
) returns setof ballast.step_claim
language plpgsql
as $fn$
declare
  v_queued bigint[];
begin
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    -- A worker declared stopped may still finish what it holds, but takes nothing new.
    perform ballast_private.complete(p_attempt_id, p_output, true);
    return;
  end if;
  select c.queued_step_ids into v_queued from ballast_private.complete(p_attempt_id, p_output, false) c;
  if cardinality(v_queued) = 0 then
    return;
  end if;
  return query select * from ballast.claim_step(v_queued[1], p_worker_id, p_lease_ms);
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
create function ballast.fail_step(p_attempt_id bigint, p_error jsonb)
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
