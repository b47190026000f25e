-- Up Migration
--
-- Baseline, file 6 of 11: executing steps: workers and their liveness, claiming, settling, leases, the reaper, map
-- steps, and the gates of the claim.
--
-- The protocol: the step rows are the queue. A worker registers (register_worker), holds a session advisory lock
-- (ballast.worker_lock: namespace 1650551916, key hashtext(worker id)) on a dedicated connection and heartbeats
-- (heartbeat_worker, watchdog_heartbeat), which extends the leases of its running attempts. ballast.claim_steps takes
-- up to n runnable steps (`queued`, or `retrying` with next_run_at due) with FOR UPDATE SKIP LOCKED over partial
-- indexes, only for the pipeline versions (steps.task) the worker has code for, lower priority first, applying
-- concurrency groups, budgets and provider cooldowns (claim_gate) in the same statement; each claimed step gets an
-- attempt with a lease (ballast.step_claim). ballast.settle_and_claim records many finished attempts and claims the
-- next steps in one transaction; a stale attempt is answered per id ('stale'), never fails the batch.
--
-- Recovery: ballast.reap, run every second by every live worker, declares a worker dead when its lock is gone and its
-- heartbeat is old, or its heartbeat is very old whatever the lock says; a dead worker's running attempts become
-- `crashed` and are retried, as are expired leases. Evidence older than the server's last start plus a grace
-- (server_epoch, restart_grace) is not trusted, so a Postgres restart does not kill live workers. Steps that block
-- or crash their worker are counted (report_worker_fault, steps.crashes) and quarantined.
--
-- Map steps: a map step lists its items (expand_items); each becomes a child step (parent_step_id, item_index) that
-- runs through the same machinery; the parent waits until every child is final (finish_map).
--
-- Attempts charged: steps.attempts counts every claim; steps.attempt_offset counts the claims that are not charged
-- against max_attempts (released at shutdown, parked, or made before a replay).
-- Folded from the old 0005, 0008, 0013, 0016, 0020 and 0022.

-- register_worker(id, hostname, pid, concurrency, pipelines): records a live worker process (upsert).
create function ballast.register_worker(
  p_worker_id text,
  p_hostname text,
  p_pid integer,
  p_concurrency integer,
  p_pipelines text[] default '{}'::text[]
) returns void
language plpgsql volatile
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
language plpgsql volatile
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
  p_worker_id text,
  p_running bigint[] default '{}'::bigint[],
  p_lease_ms integer default 30000
) returns table(alive boolean, lost_attempt_ids bigint[])
language plpgsql volatile
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
create function ballast.worker_lock(p_worker_id text) returns table(namespace integer, key integer)
language sql immutable parallel safe
as $fn$
  select 1650551916, hashtext(p_worker_id)
$fn$;

-- stop_worker(id): marks a worker stopped (graceful exit) and unlocks any graphile-worker job its pool still holds:
-- graphile-worker can leave a just-finished job locked when its pool shuts down, and would keep it locked for hours.
create function ballast.stop_worker(p_worker_id text) returns void
language plpgsql volatile
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

-- wake_concurrency_group(key, limit): a no-op since v2 (claim_steps applies the group limits whenever it claims).
create function ballast_private.wake_concurrency_group(p_key text, p_limit integer) returns void
language plpgsql volatile
as $fn$
begin
  return;
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
-- (0006_execution) the map step's name (definition_step; otherwise the step's own name), the item's index and the item.
-- The concurrency check takes a transaction advisory lock on the group key, then counts running steps of the group:
-- two claims of the same group serialise on that lock, and the second one's count (a new snapshot) includes the
-- first. Groups never share a lock, so unrelated claims never wait.
create function ballast.claim_step(
  p_step_id bigint,
  p_worker_id text,
  p_lease_ms integer default 30000
) returns setof ballast.step_claim
language plpgsql volatile
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
language plpgsql volatile
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
  p_job_id bigint,
  p_step_name text,
  p_now timestamp with time zone,
  p_wake_first boolean default true
) returns bigint[]
language plpgsql volatile
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
-- concurrency slot, lets the map step of an item finish when this was its last live item (finish_map), and
-- re-derives the job. Raises BA007/BA008 as running_attempt.
create function ballast_private.complete(
  p_attempt_id bigint,
  p_output jsonb,
  p_wake_first boolean
) returns table(job_status text, queued_step_ids bigint[])
language plpgsql volatile
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
create function ballast.complete_step(
  p_attempt_id bigint,
  p_output jsonb
) returns table(step_status text, job_status text, queued_step_ids bigint[])
language sql volatile
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
  p_attempt_id bigint,
  p_output jsonb,
  p_worker_id text,
  p_lease_ms integer default 30000
) returns setof ballast.step_claim
language plpgsql volatile
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

-- 4. Retry-After without jitter: steps that a provider refused together (a 429 to a burst) all came back at the same
--    instant and were refused together again. settle_failure, with a bounded jitter added on top of a
--    Retry-After above 0 (never shortening it): uniform in [0, min(max(retry_after / 4, 250 ms), 60 s)). A delay of
--    0 (a release on shutdown: runnable again at once) gets none.
--
-- settle_failure(step, error, retryable, retry_after_ms, now): the decision after an attempt ended badly (failed,
-- crashed, timed out, released). The caller has locked the step row and closed the attempt. Retryable with charged
-- attempts left -> 'retrying' at now + delay (retry_after_ms plus the jitter above when given, else full-jitter
-- backoff); otherwise 'failed' and every pending step depending on it, directly or not, 'skipped'. Frees the step's
-- concurrency slot. Does not re-derive the job: the caller does, once. Returns the step's new status.
create function ballast_private.settle_failure(
  p_step ballast_private.steps,
  p_error jsonb,
  p_retryable boolean,
  p_retry_after_ms double precision,
  p_now timestamp with time zone
) returns text
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := p_now;
  v_charged int := p_step.attempts - p_step.attempt_offset;
  v_delay_ms double precision;
  v_next timestamptz;
  v_status text;
begin
  if p_retryable and v_charged < p_step.max_attempts then
    -- Retry-After is a floor, never shortened; a bounded jitter on top (a quarter of it, at least 250 ms, at most
    -- 60 s) spreads the steps that a provider turned away together, so they do not all come back at once.
    -- 0 stays 0: "at once" (a release on shutdown, a provider's Retry-After: 0).
    v_delay_ms := coalesce(case when p_retry_after_ms > 0
                                then p_retry_after_ms + floor(random() * least(greatest(p_retry_after_ms * 0.25, 250), 60000))
                                else p_retry_after_ms end,
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
create function ballast.fail_step(
  p_attempt_id bigint,
  p_error jsonb
) returns table(step_status text, next_run_at timestamp with time zone, job_status text)
language plpgsql volatile
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
create function ballast.release_attempt(
  p_attempt_id bigint,
  p_reason text default 'worker shutting down'::text
) returns text
language plpgsql volatile
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

-- report_progress(attempt_id, progress): stores the step's latest progress (any JSON) and NOTIFYs
-- ballast_events with {"progress":{"job_id":..,"step_id":..}}: ids only, the value stays in ballast.steps.progress
-- (readers fetch it under their role; a value of any size fits). Not stored as an event: progress may be frequent.
-- Returns false, changing nothing, when the attempt is no longer running. Raises nothing of its own; locks the step
-- row (the update) and nothing else.
create function ballast.report_progress(p_attempt_id bigint, p_progress jsonb) returns boolean
language plpgsql volatile
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
  perform pg_notify('ballast_events',
    json_build_object('progress', json_build_object('job_id', v_job_id, 'step_id', v_step_id))::text);
  return true;
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
create function ballast.reap(
  p_dead_after_ms integer default 10000,
  p_lost_after_ms integer default 2000
) returns table(dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
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

-- expand_items(attempt_id, items) -> number of items
-- Called by the worker on the first run of a map step with the items to process (a JSON array). Creates one child
-- step per item (queued, with the parent's dependencies, retry, timeout and concurrency settings) and wakes them;
-- the parent's attempt ends 'succeeded' (its work, listing the items, is done) and the parent waits for its
-- children. An empty array completes the parent at once. Raises BA002 when items is not an array or the step is
-- not declared as a map step, BA007/BA008 as running_attempt.
create function ballast.expand_items(p_attempt_id bigint, p_items jsonb) returns integer
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
     set status = 'waiting', wait_key = 'ballast:items:' || v_step.id, wait_deadline = null, wait_on_timeout = null
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

-- finish_map(parent_step_id): completes a waiting map step when its last item is final.
-- O(1) while items are still open (steps.items_open > 0), so finishing
-- each of n items costs a constant, not a count of all n. When the last item is final: the parent's output lists
-- every item's outcome; then succeeded, or failed by the map's partial/min_succeeded policy. The caller holds the
-- lock of the item that just finished; the parent row is locked here (items before their map step).
-- The parent's output: {"items": [{"index", "status", "output" | "error"}], "succeeded": n, "failed": n}; 'succeeded'
-- when no item failed, or when the definition says {"partial": true} and at least min_succeeded items succeeded; else
-- 'failed' (dependants skipped). Queues the parent's dependants like complete_step.
create function ballast_private.finish_map(p_parent_id bigint) returns void
language plpgsql volatile
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

-- announce_queued(): a statement queued steps: NOTIFY ballast_queue (empty payload; idle workers claim). Inside a
-- batch (settle_and_claim: ballast.defer_counters on) it only notes it (ballast.queued_in_batch): the batch claims
-- in the same transaction, and NOTIFYs at its end only if it may have left some (flush_queue_notice). A NOTIFY costs
-- a lock at commit and wakes every worker's listener, the batch's own included.
create function ballast_private.announce_queued() returns void
language plpgsql volatile
as $fn$
begin
  if current_setting('ballast.defer_counters', true) = 'on' then
    perform set_config('ballast.queued_in_batch', 'on', true);
  else
    perform pg_notify('ballast_queue', '');
  end if;
end
$fn$;

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
-- Model steps whose claim_gate is closed (budget used up, all models cooling down) are parked instead of claimed:
-- retrying until the gate reopens, no attempt; the claim returns the others.
create function ballast.claim_steps(
  p_worker_id text,
  p_tasks text[],
  p_n integer,
  p_lease_ms integer default 30000
) returns setof ballast.step_claim
language plpgsql volatile
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

  -- Model steps whose gate is closed are parked instead of claimed (claim_gate). Two probes of small tables first,
  -- so that claims pay nothing while no cooldown is in force and no pausing budget is used up.
  if exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
     or exists (select 1 from ballast_private.budgets b
                  left join ballast_private.budget_usage u
                    on u.tenant_id = b.tenant_id and u.period_start = ballast_private.budget_period_start(b.period, v_now)
                 where b.on_exhausted = 'pause' and coalesce(u.spent_usd, 0) + coalesce(u.reserved_usd, 0) >= b.limit_usd) then
    with gated as (
      select s.id, g.until, g.class, g.message
        from ballast_private.steps s
        join ballast_private.jobs j on j.id = s.job_id
        join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
        cross join lateral (select e -> 'model' as model from jsonb_array_elements(p.definition -> 'steps') e
                             where e ->> 'name' = s.name and e ? 'model') d
        cross join lateral ballast_private.claim_gate(j.tenant_id, d.model, v_now) g
       where s.id = any(v_ids) and s.parent_step_id is null),
    parked as (
      update ballast_private.steps s
         set status = 'retrying', next_run_at = g.until, updated_at = v_now,
             error = jsonb_build_object('class', g.class, 'code', g.class, 'message', g.message, 'retryable', true,
                                        'attempt', s.attempts)
        from gated g where s.id = g.id
      returning s.id)
    select array(select i from unnest(v_ids) i where i not in (select id from parked)) into v_ids;
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
-- The owning check runs on the attempts fetched by primary key and locked in id order, so its plan stays linear in
-- the batch size.
create function ballast.settle_steps(
  p_worker_id text,
  p_ok bigint[],
  p_outputs jsonb[],
  p_failed bigint[] default '{}'::bigint[],
  p_errors jsonb[] default '{}'::jsonb[]
) returns table(attempt_id bigint, step_status text)
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_ok bigint[] := coalesce(p_ok, '{}');
  v_failed bigint[] := coalesce(p_failed, '{}');
  v_done bigint[];
  v_steps bigint[];
  v_outputs jsonb[];
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
    -- The steps of the attempts, locked in id order (the lock order of every verb), read by primary key; an attempt
    -- owns its step when both are still running and it is the step's latest attempt. OFFSET 0 keeps that filter
    -- out of the locking scan (see the header).
    select array_agg(x.aid order by x.sid), array_agg(x.sid order by x.sid), array_agg(x.output order by x.sid)
      into v_done, v_steps, v_outputs
      from (select a.id as aid, s.id as sid, s.status, s.attempts, a.number, a.outcome, inp.output
              from unnest(v_ok, p_outputs) as inp(attempt_id, output)
              join ballast_private.attempts a on a.id = inp.attempt_id
              join ballast_private.steps s on s.id = a.step_id
             order by s.id
               for update of s
            offset 0) x
     where x.status = 'running' and x.outcome = 'running' and x.attempts = x.number;

    if v_done is not null then
      update ballast_private.attempts a set outcome = 'succeeded', finished_at = v_now
       where a.id = any(v_done);
      with s as (
        update ballast_private.steps s
           set status = 'succeeded', output = coalesce(o.output, 'null'::jsonb), error = null, finished_at = v_now,
               wait_key = null, wait_deadline = null, wait_on_timeout = null, updated_at = v_now
          from unnest(v_steps, v_outputs) as o(step_id, output)
         where s.id = o.step_id
        returning s.job_id, s.name, s.parent_step_id)
      select array_agg(s.job_id), array_agg(s.name), array_agg(s.parent_step_id) into v_jobs, v_names, v_parents from s;
    end if;

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

-- settle_and_claim(worker_id, ok_attempt_ids, outputs, failed_attempt_ids, errors, tasks, n, lease_ms)
--   -> one row (settled, claims)
-- The worker's one round trip per batch: settle_steps, then claim_steps, in one transaction, with the job counters
-- deferred to its end (defer_job_counters / flush_job_counters: one job UPDATE per batch). settled: a JSON array
-- of [attempt_id, step_status]; claims: a JSON array of ballast.step_claim objects (empty when n = 0 or the worker
-- was declared stopped: it may finish what it holds, but takes nothing new until it registers again).
create function ballast.settle_and_claim(
  p_worker_id text,
  p_ok bigint[],
  p_outputs jsonb[],
  p_failed bigint[],
  p_errors jsonb[],
  p_tasks text[],
  p_n integer,
  p_lease_ms integer default 30000
) returns table(settled jsonb, claims jsonb)
language plpgsql volatile
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
create function ballast.release_attempts(
  p_worker_id text,
  p_attempt_ids bigint[],
  p_reason text default 'worker shutting down'::text
) returns integer
language plpgsql volatile
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

-- server_epoch() -> when the running server (and so every session and session lock on it) began: the postmaster's
-- start, or the checkpointer's when a backend crash made the postmaster reinitialise in place. Raises nothing.
create function ballast_private.server_epoch() returns timestamp with time zone
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

-- watchdog_heartbeat(worker_id, lease_ms) -> (alive, db_now, running)
-- The heartbeat of a worker's watchdog thread (src/watchdog.ts) while the worker's main thread is stalled (a step
-- blocking the event loop) and cannot heartbeat itself: stamps the worker and extends the lease of EVERY running
-- attempt of the worker to now + lease_ms (at least 1 s), since the stalled thread cannot say which it still tracks.
-- Returns alive = false, changing nothing, when the worker is unknown or was declared stopped; db_now (ballast.now());
-- and running: the worker's running attempts as a JSON array of {attempt_id, step_id, started_at, timeout_ms}
-- (timeout_ms null: the step has none), from which the watchdog decides whether the stall outlasted a timeout.
-- Locks the worker row, then the attempts (the order of heartbeat_worker). Raises nothing.
create function ballast.watchdog_heartbeat(
  p_worker_id text,
  p_lease_ms integer default 30000
) returns table(alive boolean, db_now timestamp with time zone, running jsonb)
language plpgsql volatile
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
  p_worker_id text,
  p_error_class text,
  p_blamed_attempt_ids bigint[] default null::bigint[],
  p_message text default null::text,
  p_quarantine_after integer default 2
) returns table(attempt_id bigint, step_id bigint, step_status text, crashes integer, blamed boolean)
language plpgsql volatile
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

-- claim_gate(tenant_id, model spec of the step definition {model, fallbacks, ...}, now)
--   -> no row when the step may run, else one row (until, class, message): when to look again and why not now.
--  - budget_exhausted: the tenant has a 'pause' budget whose spending and open reservations reach its limit in the
--    current period, and the step's model is priced (unpriced calls do not spend); until = the period's end.
--  - cooldown: every model the step may call (its model and its fallbacks) is cooling down (provider_cooldowns, for
--    the model or the provider's '*'); until = the earliest end among them.
-- A 'fail' budget is left to the ladder, which fails the step with a message naming the figures. Reads only.
create function ballast_private.claim_gate(
  p_tenant_id text,
  p_model jsonb,
  p_now timestamp with time zone
) returns table(until timestamp with time zone, class text, message text)
language plpgsql stable
as $fn$
declare
  v_models text[] := array[p_model ->> 'model']
                     || coalesce(array(select jsonb_array_elements_text(p_model -> 'fallbacks')), '{}');
  v_budget ballast_private.budgets;
  v_start timestamptz;
  v_spent numeric;
  v_cool record;
begin
  select * into v_budget from ballast_private.budgets b where b.tenant_id = p_tenant_id and b.on_exhausted = 'pause';
  if found and exists (select 1 from ballast.model_price(split_part(v_models[1], ':', 1),
                                                          substr(v_models[1], strpos(v_models[1], ':') + 1), p_now)) then
    v_start := ballast_private.budget_period_start(v_budget.period, p_now);
    select coalesce(sum(u.spent_usd + u.reserved_usd), 0) into v_spent
      from ballast_private.budget_usage u where u.tenant_id = p_tenant_id and u.period_start = v_start;
    if v_spent >= v_budget.limit_usd then
      until := v_start + ('1 ' || v_budget.period)::interval;
      class := 'budget_exhausted';
      message := format('tenant %L has used its budget of %s USD per %s (%s USD spent or reserved); the step waits '
                        'until %s or a raised limit (ballast.set_budget)', p_tenant_id, v_budget.limit_usd,
                        v_budget.period, round(v_spent, 6), until);
      return next;
      return;
    end if;
  end if;

  select min(x.until) as until, string_agg(x.model || ' until ' || x.until, ', ' order by x.model) as what
    into v_cool
    from (select m as model, (select max(c.until) from ballast_private.provider_cooldowns c
                               where c.provider = split_part(m, ':', 1)
                                 and c.model in (substr(m, strpos(m, ':') + 1), '*') and c.until > p_now) as until
            from unnest(v_models) m) x
   having count(*) = count(x.until);
  if found then
    until := v_cool.until;
    class := 'cooldown';
    message := format('every model of the step is cooling down (%s); the step waits until %s', v_cool.what, v_cool.until);
    return next;
  end if;
end
$fn$;
