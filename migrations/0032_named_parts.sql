-- Up Migration
--
-- 0032: the longest functions of the hot path in named parts (issue 14). ballast.reap did four jobs in one body of
-- 135 lines; submit_jobs_checked_v15 was 260 lines, claim_steps 120, update_job_counters and settle_steps 95 each:
-- too long to read, review or test a part of. Each is now a short function that calls its parts, each part with a
-- contract comment (what it takes, returns and raises, and its lock order) and called once per batch, never per
-- row (arrays in, arrays out). Signatures, results, errors, lock order and properties (security definer, search
-- path, grants) of the five functions are unchanged; the parts live in ballast_private with EXECUTE revoked from
-- PUBLIC like their siblings, and run with their caller's rights and search path.
--  * ballast.reap = reap_dead_workers + reclaim_lost_attempts + expire_waits + finish_orphaned_maps, each with its
--    limit of 500 per round, then one refresh per job touched. The parts are private: they take the clock and the
--    restart grace computed once by reap; an operator calls ballast.reap.
--  * submit_jobs_checked_v15 = batch_tenant + checked_batch_pipeline + check_batch_inputs + batch_keys_and_hashes +
--    insert_batch_jobs + insert_batch_steps.
--  * claim_steps = requeue_due_retries + pick_grouped_steps + park_gated_steps, each called only when a probe finds
--    it work. What every claim does stays inline (the pick of ungrouped steps, the start of the attempts): a part
--    called on every claim cost 0.03 ms per claim (+1 %, measured); as it is, a claim costs what it did.
--  * update_job_counters: its transition check is check_job_transitions, called only when a job status changed.
--  * settle_steps = settle_succeeded + release_dependants (called only when a probe finds a pending dependant),
--    then finish_map and fail_step as before.
-- Measured with `npm run bench -- --quick --only graphile-worker,ballast,submit --rounds 3 --no-profile` before and
-- after (figures in the commit message): no change beyond that bench's noise on this shared machine; and with the
-- pre-0032 functions and these called alternately on one database (server-side time per call, pg_stat_user_functions,
-- load 2 to 3): claim_steps no difference (3 runs of 402 claims of 10); settle_steps +0.06 ms of 5 ms (-0.01 to
-- +0.18, 3 runs of 400); submit_jobs of 100 inputs +0.0 and +0.1 ms of 18 to 19 ms (2 runs of 60); an idle reap
-- round about +0.2 ms of 4 to 6 ms (-0.08 to +0.33 over 5 runs of 20 to 60: four calls instead of one, once a second
-- per worker, not per step).

-- reap_dead_workers(dead_after_ms, lost_after_ms, now, trusted_from, locks_trusted, batch) -> text[]: the first of
-- the reaper's four jobs (ballast.reap). Workers not stopped whose heartbeat, counted from greatest(heartbeat_at,
-- trusted_from), is older than dead_after_ms, or older than lost_after_ms while their liveness lock
-- (ballast.worker_lock) is held by no session and locks_trusted (the server has been up past the grace), are marked
-- stopped, oldest heartbeat first, at most `batch`, each locked with SKIP LOCKED (a worker row being written now is
-- left for the next round); their graphile-worker pools are unlocked. Returns the ids of the workers marked
-- stopped ('{}' when none). Raises nothing of its own. Locks worker rows only: it runs first, before any step row.
create function ballast_private.reap_dead_workers(p_dead_after_ms integer, p_lost_after_ms integer, p_now timestamptz,
                                                  p_trusted_from timestamptz, p_locks_trusted boolean,
                                                  p_batch integer) returns text[]
language plpgsql volatile
as $fn$
declare
  v_dead text[];
  v_pools text[];
begin
  with candidates as (
    select w.id from ballast_private.workers w
     where w.stopped_at is null
       and (greatest(w.heartbeat_at, p_trusted_from) < p_now - make_interval(secs => p_dead_after_ms / 1000.0)
            or (p_locks_trusted
                and w.heartbeat_at < p_now - make_interval(secs => p_lost_after_ms / 1000.0)
                and not exists (
                  select 1 from pg_locks l
                   where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database where datname = current_database())
                     and l.classid::bigint = 1650551916 and l.objid::bigint = (hashtext(w.id)::bigint & 4294967295)
                     and l.objsubid = 2)))
     order by w.heartbeat_at
     limit p_batch
       for update skip locked),
  dead as (
    update ballast_private.workers w set stopped_at = p_now
      from candidates c
     where w.id = c.id
    returning w.id, w.pool_id)
  select coalesce(array_agg(id), '{}'), array_remove(array_agg(pool_id), null) into v_dead, v_pools from dead;
  if cardinality(v_pools) > 0 then
    perform graphile_worker.force_unlock_workers(v_pools);
  end if;

  return v_dead;
end
$fn$;

-- reclaim_lost_attempts(now, trusted_from, batch) -> (reclaimed_ids, touched_jobs): the second job of the reaper.
-- Running attempts of stopped workers, attempts whose lease expired (greatest(lease_expires_at, trusted_from)
-- passed), and attempts running longer than their step's timeout plus 5 s (not within the grace after a restart)
-- end 'crashed' / 'timed_out' (retryable, counted) and their steps are retried or failed by settle_failure. At most
-- `batch` attempts, oldest steps first; each step is locked with SKIP LOCKED (one being completed at this moment is
-- left for the next round) and skipped unless it still runs that attempt. Returns the attempts ended and the jobs
-- of their steps (with repeats; the caller refreshes each job once). Lock order: step rows in id order, each with its
-- attempt; it does not refresh jobs (the caller does, after every part: job rows come last).
create function ballast_private.reclaim_lost_attempts(p_now timestamptz, p_trusted_from timestamptz, p_batch integer)
returns table (reclaimed_ids bigint[], touched_jobs bigint[])
language plpgsql volatile
as $fn$
declare
  v_attempt record;
  v_step ballast_private.steps;
  v_error jsonb;
begin
  reclaimed_ids := '{}';
  touched_jobs := '{}';
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
                and greatest(a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0), p_trusted_from) < p_now) as past_timeout
          from ballast_private.attempts a
          join ballast_private.steps s on s.id = a.step_id
          left join ballast_private.workers w on w.id = a.worker_id
         where a.outcome = 'running'
           and (w.stopped_at is not null or a.worker_id is null
                or greatest(a.lease_expires_at, p_trusted_from) < p_now
                or (s.timeout_ms is not null
                    and greatest(a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0), p_trusted_from) < p_now))
         order by a.step_id
         limit p_batch) x
     order by x.step_id
  loop
    select * into v_step from ballast_private.steps where id = v_attempt.step_id for update skip locked;
    continue when not found;
    continue when v_step.status <> 'running' or v_step.attempts <> (select number from ballast_private.attempts where id = v_attempt.id);
    update ballast_private.attempts
       set outcome = v_attempt.outcome, finished_at = p_now,
           error_class = case when v_attempt.outcome = 'timed_out' then 'timeout' else 'worker_lost' end,
           error_message = v_attempt.why, error_retryable = true
     where id = v_attempt.id and outcome = 'running';
    v_error := jsonb_build_object('class', case when v_attempt.outcome = 'timed_out' then 'timeout' else 'worker_lost' end,
                                  'message', v_attempt.why, 'retryable', true, 'attempt', v_step.attempts);
    perform ballast_private.settle_failure(v_step, v_error, true, null, p_now);
    reclaimed_ids := reclaimed_ids || v_attempt.id;
    touched_jobs := touched_jobs || v_step.job_id;
  end loop;

  return next;
end
$fn$;

-- expire_waits(now, batch) -> (expired_ids, touched_jobs): the third job of the reaper. Steps waiting for an event
-- past their deadline fail (wait_on_timeout 'fail', or no attempt left) or are queued to run again ('retry'),
-- at most `batch`, in id order, locked with SKIP LOCKED. A wait for items (waiting_for 'items', 0031) has no
-- deadline and is never expired here. Returns the steps expired and their jobs (with repeats). Lock order: step
-- rows in id order; jobs are refreshed by the caller.
create function ballast_private.expire_waits(p_now timestamptz, p_batch integer)
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
    -- The attempt that waited in vain is charged now (wait_for_event un-charged it when it parked): otherwise a step
    -- whose event never comes would wait and retry forever instead of ending in the dead-letter set.
    if v_step.wait_on_timeout = 'retry' and v_step.attempts - v_step.attempt_offset + 1 < v_step.max_attempts then
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

-- finish_orphaned_maps(batch) -> bigint[]: the fourth job of the reaper. Map steps waiting for their items
-- (waiting_for 'items') whose items are all final (items_open = 0) but that still wait, because the item that
-- finished last could not finish its map step (e.g. a crash between the two), are finished by finish_map, at most
-- `batch`, in id order. Returns the jobs of those map steps (the caller refreshes them). Lock order: finish_map
-- locks the map step, then (finishing it) its dependants; jobs come last, in the caller.
create function ballast_private.finish_orphaned_maps(p_batch integer) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_jobs bigint[] := '{}';
begin
  -- items_open (0013) counts a map step's live items.
  for v_step in
    select p.* from ballast_private.steps p
     where p.status = 'waiting' and p.waiting_for = 'items' and p.items_open = 0
     order by p.id
     limit p_batch
  loop
    perform ballast_private.finish_map(v_step.id);
    v_jobs := v_jobs || v_step.job_id;
  end loop;

  return v_jobs;
end
$fn$;

revoke execute on function ballast_private.reap_dead_workers(integer, integer, timestamptz, timestamptz, boolean, integer),
                           ballast_private.reclaim_lost_attempts(timestamptz, timestamptz, integer),
                           ballast_private.expire_waits(timestamptz, integer),
                           ballast_private.finish_orphaned_maps(integer)
  from public;

-- reap(dead_after_ms, lost_after_ms) -> (dead_workers, reclaimed_attempts, expired_waits): as in 0016 and 0031, in
-- four named parts, each called once per round with its own limit of 500: reap_dead_workers, reclaim_lost_attempts,
-- expire_waits, finish_orphaned_maps (see each above); then every job they touched is refreshed once. One reaper at
-- a time: a round that finds the transaction lock (1650551916, 0) taken returns three empty arrays at once. Lock
-- order, as everywhere else: worker rows, then step rows (each with its attempt), then job rows. Raises BA002 only
-- when the setting ballast.restart_grace_ms is malformed. The parts are private (they take the reaper's clock and
-- trust window, computed once here); operators call ballast.reap.
create or replace function ballast.reap(p_dead_after_ms integer default 10000, p_lost_after_ms integer default 2000)
returns table (dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
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

  foreach v_job in array (select coalesce(array_agg(distinct j), '{}') from unnest(v_jobs) j) loop
    perform ballast_private.refresh_job_status(v_job);
  end loop;
  return query select v_dead, v_reclaimed, v_expired;
end
$fn$;

-- batch_tenant(tenant_id) -> text: the first part of submit_jobs (submit_jobs_checked_v15): the tenant a batch is
-- submitted for, exactly as submit_job decides it (0010). An unrestricted caller gets the tenant it names; a
-- restricted caller (a client) its own tenant, and BA014 when it acts for none or names another one than 'default'
-- or its own; the setting ballast.actor becomes the client's actor, or 'sql' when none is set. Takes no lock.
create function ballast_private.batch_tenant(p_tenant_id text) returns text
language plpgsql volatile
as $fn$
declare
  v_tenant text := p_tenant_id;
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
  return v_tenant;
end
$fn$;

-- checked_batch_pipeline(pipeline, inputs, idempotency_keys, tenant, priority, pipeline_version) -> pipelines row:
-- the second part of submit_jobs. Checks the arguments as ballast_private.submit does, then the arrays (BA002 naming
-- the argument: pipeline missing, tenant not 1 to 200 characters, priority outside -1000..1000, inputs null, not
-- one-dimensional or more than 1,000; idempotency_keys not one per input, or a key not 1 to 500 characters), and
-- returns the pipeline version (the newest when pipeline_version is null); BA004 when there is none. Takes no lock.
create function ballast_private.checked_batch_pipeline(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[],
                                                       p_tenant text, p_priority integer, p_pipeline_version integer)
returns ballast_private.pipelines
language plpgsql volatile
as $fn$
declare
  c_max_inputs constant integer := 1000;
  v_pipeline ballast_private.pipelines;
  v_n integer;
  v_ord integer;
begin
  -- Arguments, as ballast_private.submit checks them, then the arrays.
  if p_pipeline is null or p_pipeline = '' then
    perform ballast_private.bad_argument('pipeline', 'is missing', 'Name a registered pipeline, e.g. ''demo.wordstats''.');
  end if;
  if p_tenant is null or p_tenant = '' or length(p_tenant) > 200 then
    perform ballast_private.bad_argument('tenant_id', format('%L is not a tenant id', p_tenant),
      'Pass a non-empty text of at most 200 characters, or leave it out for the tenant ''default''.');
  end if;
  if p_priority is null or p_priority not between -1000 and 1000 then
    perform ballast_private.bad_argument('priority', format('%s is out of range', coalesce(p_priority::text, 'null')),
      'Use an integer from -1000 to 1000; lower runs first, 0 is the default.');
  end if;
  if p_inputs is null then
    perform ballast_private.bad_argument('inputs', 'is null',
      'Pass an array with one job input per job, e.g. array[''{"text": "a"}'', ''{"text": "b"}'']::jsonb[].');
  end if;
  if array_ndims(p_inputs) > 1 then
    perform ballast_private.bad_argument('inputs', format('has %s dimensions', array_ndims(p_inputs)),
      'Pass a one-dimensional array: one element per job.');
  end if;
  v_n := cardinality(p_inputs);
  if v_n > c_max_inputs then
    perform ballast_private.bad_argument('inputs', format('holds %s inputs, more than %s per call', v_n, c_max_inputs),
      format('Split the batch into calls of at most %s inputs (each call is one transaction).', c_max_inputs));
  end if;
  if p_idempotency_keys is not null then
    if array_ndims(p_idempotency_keys) > 1 or cardinality(p_idempotency_keys) <> v_n then
      perform ballast_private.bad_argument('idempotency_keys',
        format('has %s entries for %s inputs', cardinality(p_idempotency_keys), v_n),
        'Pass one key (or null) per input, in the order of the inputs, or leave idempotency_keys out.');
    end if;
    select k.n into v_ord
      from unnest(p_idempotency_keys) with ordinality k(key, n)
     where k.key = '' or length(k.key) > 500
     order by k.n limit 1;
    if found then
      perform ballast_private.bad_argument(format('idempotency_keys[%s]', v_ord), 'must be 1 to 500 characters',
        'Pass null for no deduplication of that input, or a key unique to its request (an order id, a webhook delivery id).');
    end if;
  end if;

  if p_pipeline_version is null then
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline order by p.version desc limit 1;
  else
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline and p.version = p_pipeline_version;
  end if;
  if v_pipeline.name is null then
    raise exception using errcode = 'BA004',
      message = case when p_pipeline_version is null then format('pipeline %L is not registered', p_pipeline)
                     else format('pipeline %L has no version %s', p_pipeline, p_pipeline_version) end,
      hint = coalesce('Registered pipelines: ' || (select string_agg(distinct p.name || '@' || p.version, ', ')
                                                     from ballast_private.pipelines p) || '. ', '')
             || 'A pipeline is registered when a worker that defines it starts.';
  end if;
  return v_pipeline;
end
$fn$;

-- check_batch_inputs(pipeline, inputs): the third part of submit_jobs. Every input against the pipeline's input
-- contract in one statement; BA002 listing at most 20 problems (path inputs[n]..., message; the detail holds them as
-- JSON) when any input is null or does not match. Returns nothing otherwise. Takes no lock.
create function ballast_private.check_batch_inputs(p_pipeline ballast_private.pipelines, p_inputs jsonb[]) returns void
language plpgsql volatile
as $fn$
declare
  c_max_problems constant integer := 20;
  v_errors jsonb;
  v_count integer;
begin
  -- Every input against the contract, in one statement, stopping after c_max_problems + 1 problems (the lateral
  -- validation runs input by input in order, so LIMIT stops it early).
  select coalesce(jsonb_agg(p.issue order by p.n, p.k), '[]'::jsonb), count(*)::int
    into v_errors, v_count
    from (select i.n, e.k,
                 jsonb_build_object(
                   'path', format('inputs[%s]', i.n) || case when e.path = '' then ''
                                                             when left(e.path, 1) = '[' then e.path
                                                             else '.' || e.path end,
                   'message', e.message) as issue
            from unnest(p_inputs) with ordinality i(input, n)
            cross join lateral (
              select 0::bigint as k, ''::text as path, 'is null (use ''{}'' for an empty object)'::text as message
               where i.input is null
              union all
              select x.k, x.path, x.message
                from ballast.json_schema_errors(p_pipeline.input_schema, i.input) with ordinality x(path, message, k)
               where i.input is not null) e
           limit c_max_problems + 1) p;
  if v_count > c_max_problems then
    v_errors := v_errors - c_max_problems;  -- drops the extra one (0-based index): it only said "there are more"
  end if;
  if v_count > 0 then
    raise exception using
      errcode = 'BA002',
      message = format('inputs do not match the contract of pipeline %s@%s (%s): %s',
                       p_pipeline.name, p_pipeline.version,
                       case when v_count > c_max_problems then format('more than %s problems, the first %s listed', c_max_problems, c_max_problems)
                            when v_count > 1 then format('%s problems', v_count) else '1 problem' end,
                       (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ' order by e.o)
                          from jsonb_array_elements(v_errors) with ordinality e(e, o))),
      detail = v_errors::text,
      hint = 'Fix the listed inputs (numbered from 1, as p_inputs[n]) and submit the batch again; nothing was written.';
  end if;
end
$fn$;

-- batch_keys_and_hashes(pipeline, pipeline_version, inputs, idempotency_keys) -> (keys, hashes): the fourth part of
-- submit_jobs. Per input, its idempotency key (all null when idempotency_keys is null) and its request hash (as
-- ballast_private.submit computes it, from the pipeline name and version as given). BA003 when a key is given twice
-- in the batch for different requests (the first such input named). Takes no lock.
create function ballast_private.batch_keys_and_hashes(p_pipeline text, p_pipeline_version integer, p_inputs jsonb[],
                                                      p_idempotency_keys text[])
returns table (keys text[], hashes text[])
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_ord integer;
  v_other integer;
  v_key text;
begin
  -- Keys and request hashes, per input; a key given twice in this call must be given for the same request.
  select array_agg(encode(sha256(convert_to(jsonb_build_array(p_pipeline, p_pipeline_version, u.input)::text, 'UTF8')), 'hex')
                   order by u.n)
    into hashes from unnest(p_inputs) with ordinality u(input, n);
  if p_idempotency_keys is null then
    keys := array_fill(null::text, array[cardinality(p_inputs)]);
  else
    select array_agg(k.key order by k.n) into keys from unnest(p_idempotency_keys) with ordinality k(key, n);
  end if;
  select r.n, r.first_n, r.key into v_ord, v_other, v_key
    from (select u.n, u.key, u.hash, first_value(u.n) over w as first_n, first_value(u.hash) over w as first_hash
            from unnest(keys, hashes) with ordinality u(key, hash, n)
           where u.key is not null
          window w as (partition by u.key order by u.n)) r
   where r.hash <> r.first_hash
   order by r.n limit 1;
  if found then
    raise exception using errcode = 'BA003',
      message = format('inputs[%s]: idempotency key %L is also given to inputs[%s] of this call, for a different request',
                       v_ord, v_key, v_other),
      detail = jsonb_build_object('idempotency_key', v_key, 'ord', v_ord, 'other_ord', v_other)::text,
      hint = 'Give each distinct request its own key; repeat a key only for the same pipeline and input.';
  end if;
  return next;
end
$fn$;

-- insert_batch_jobs(tenant, pipeline, inputs, keys, hashes, priority, now) -> (ids, inserted, job_ids, created):
-- the fifth part of submit_jobs. Reserves ids in input order for the inputs that may create a job (no key, or a
-- key's first use in the batch), inserts those jobs in one statement in key order (COLLATE "C", keyless last: the
-- lock order of keys between concurrent batches), a key stored before inserting nothing, then decides each input's
-- job and created flag. Returns, per input, the id reserved (ids, null for a repeated key), the ids inserted, and
-- per input the job returned and whether it was created. Raises 40001 when a concurrent submission of a key is not
-- visible yet (retry the transaction), BA003 when a stored key was used for a different request. Lock order: the
-- jobs' unique index entries in key order (an insert waits for a concurrent transaction holding the same key).
create function ballast_private.insert_batch_jobs(p_tenant text, p_pipeline ballast_private.pipelines,
                                                  p_inputs jsonb[], p_keys text[], p_hashes text[],
                                                  p_priority integer, p_now timestamptz)
returns table (ids bigint[], inserted bigint[], job_ids bigint[], created boolean[])
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
                                           input, priority, created_at, updated_at)
    overriding system value
    select ids[u.n], p_tenant, p_pipeline.name, p_pipeline.version, u.key, p_hashes[u.n], u.input, p_priority, p_now, p_now
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

-- insert_batch_steps(pipeline, tenant, ids, inputs, inserted, priority, now): the last part of submit_jobs. One
-- INSERT for every step of every job inserted (ids[i] of inputs[i], when in `inserted`), in job order then
-- definition order: root steps queued, the others pending; concurrency keys computed from each input. Returns
-- nothing (the steps' insert trigger counts them and NOTIFYs ballast_queue once). Raises nothing of its own.
create function ballast_private.insert_batch_steps(p_pipeline ballast_private.pipelines, p_tenant text, p_ids bigint[],
                                                   p_inputs jsonb[], p_inserted bigint[], p_priority integer,
                                                   p_now timestamptz) returns void
language plpgsql volatile
as $fn$
begin
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
                                     concurrency_limit, queued_at, created_at, updated_at, task, priority)
  select j.id, d.name, case when d.root then 'queued' else 'pending' end, d.depends_on, d.deps,
         d.max_attempts, d.backoff_base_ms, d.backoff_cap_ms, d.timeout_ms,
         case when d.conc is not null then
           (d.conc ->> 'group') || '/' || ballast_private.concurrency_value(d.conc ->> 'key', p_tenant, j.input) end,
         (d.conc ->> 'limit')::int,
         case when d.root then p_now end, p_now, p_now,
         ballast.task_identifier(p_pipeline.name, p_pipeline.version), p_priority
    from new_jobs j cross join defs d
   order by j.n, d.k;
end
$fn$;

revoke execute on function ballast_private.batch_tenant(text),
                           ballast_private.checked_batch_pipeline(text, jsonb[], text[], text, integer, integer),
                           ballast_private.check_batch_inputs(ballast_private.pipelines, jsonb[]),
                           ballast_private.batch_keys_and_hashes(text, integer, jsonb[], text[]),
                           ballast_private.insert_batch_jobs(text, ballast_private.pipelines, jsonb[], text[], text[], integer, timestamptz),
                           ballast_private.insert_batch_steps(ballast_private.pipelines, text, bigint[], jsonb[], bigint[], integer, timestamptz)
  from public;

-- submit_jobs_checked_v15(pipeline, inputs, idempotency_keys, tenant_id, priority, pipeline_version) -> (ord, job_id,
-- created, status) per input in input order: as in 0015 (its contract comment holds, and ballast.submit_jobs of 0029
-- still checks keys and sizes in bytes before calling it), in named parts each called once per batch: batch_tenant,
-- checked_batch_pipeline, check_batch_inputs, batch_keys_and_hashes, insert_batch_jobs, insert_batch_steps (see each
-- above). Security definer with a fixed search_path as before; the parts run inside it and qualify every name.
create or replace function ballast_private.submit_jobs_checked_v15(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[] DEFAULT NULL::text[], p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer) returns TABLE(ord integer, job_id bigint, created boolean, status text)
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
    from ballast_private.insert_batch_jobs(v_tenant, v_pipeline, p_inputs, v_keys, v_hashes, p_priority, v_now) b;
  perform ballast_private.insert_batch_steps(v_pipeline, v_tenant, v_ids, p_inputs, v_inserted, p_priority, v_now);

  -- No wake-up per step: the step rows are the queue (0013), and the steps' insert NOTIFYs ballast_queue once.
  return query
    select u.n::int, u.job, u.created, j.status
      from unnest(v_job_ids, v_created) with ordinality u(job, created, n)
      join ballast_private.jobs j on j.id = u.job
     order by u.n;
end
$fn$;

-- requeue_due_retries(tasks, n, now): the first part of claim_steps. At most n steps of the given tasks that are
-- retrying and due (next_run_at <= now), earliest first, locked with SKIP LOCKED, become queued, so that this very
-- claim can take them. Raises nothing. Called only after a probe found a due retry (an UPDATE fires the statement
-- triggers of steps even when it changes no row). Lock order: step rows only.
create function ballast_private.requeue_due_retries(p_tasks text[], p_n integer, p_now timestamptz) returns void
language plpgsql volatile
as $fn$
begin
  update ballast_private.steps s set status = 'queued', queued_at = p_now, next_run_at = null, updated_at = p_now
   where s.id in (select r.id from ballast_private.steps r
                   where r.status = 'retrying' and r.next_run_at <= p_now and r.task = any(p_tasks)
                   order by r.next_run_at limit p_n
                   for update skip locked);
end
$fn$;

-- pick_grouped_steps(tasks, n) -> bigint[]: the second part of claim_steps: the ids of at most n queued steps of
-- concurrency groups, of the given tasks, locked FOR UPDATE SKIP LOCKED: the groups with queued steps (those of the
-- first 500 such queued steps, by key), each under its group's transaction lock
-- (pg_advisory_xact_lock(hashtextextended(key, 0))), as many as its limit leaves free given its running steps, each
-- group in the order its steps are to run (priority, retries first, id). Returns '{}' when none. Raises nothing.
-- Lock order: group locks in key order, each before its step rows. Called only when a probe in claim_steps found a
-- queued step with a concurrency key: most queues have none, and those claims pay no call for it.
create function ballast_private.pick_grouped_steps(p_tasks text[], p_n integer) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_ids bigint[] := '{}';
  v_group record;
  v_running int;
  v_free int;
begin
  for v_group in
    select q.concurrency_key, max(q.concurrency_limit) as lim
      from (select g.concurrency_key, g.concurrency_limit from ballast_private.steps g
             where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)
             order by g.concurrency_key, g.id limit 500) q
     group by q.concurrency_key
  loop
    exit when cardinality(v_ids) >= p_n;
    perform pg_advisory_xact_lock(hashtextextended(v_group.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_group.concurrency_key and s.status = 'running';
    v_free := least(v_group.lim - v_running, p_n - cardinality(v_ids));
    continue when v_free <= 0;
    v_ids := v_ids || array(
      select s.id from ballast_private.steps s
       where s.concurrency_key = v_group.concurrency_key and s.status = 'queued' and s.task = any(p_tasks)
       order by s.priority, (s.attempts = 0), s.id limit v_free
       for update skip locked);
  end loop;
  return v_ids;
end
$fn$;

-- park_gated_steps(ids, now) -> bigint[]: the third part of claim_steps. Of the steps `ids` (locked by the caller),
-- the model steps (not items) whose gate is closed (claim_gate: a provider cooldown in force, or a pausing budget of
-- their tenant used up) are parked instead of claimed: retrying until the gate opens, with the gate's error (class
-- and code the gate's class, retryable). Returns the ids left to claim, in their order. Called only after a probe
-- found a cooldown in force or a pausing budget used up. Raises nothing of its own. Lock order: the step rows are
-- locked already; it reads jobs, pipelines, budgets and cooldowns without locking them.
create function ballast_private.park_gated_steps(p_ids bigint[], p_now timestamptz) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_left bigint[];
begin
  with gated as (
    select s.id, g.until, g.class, g.message
      from ballast_private.steps s
      join ballast_private.jobs j on j.id = s.job_id
      join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
      cross join lateral (select e -> 'model' as model from jsonb_array_elements(p.definition -> 'steps') e
                           where e ->> 'name' = s.name and e ? 'model') d
      cross join lateral ballast_private.claim_gate(j.tenant_id, d.model, p_now) g
     where s.id = any(p_ids) and s.parent_step_id is null),
  parked as (
    update ballast_private.steps s
       set status = 'retrying', next_run_at = g.until, updated_at = p_now,
           error = jsonb_build_object('class', g.class, 'code', g.class, 'message', g.message, 'retryable', true,
                                      'attempt', s.attempts)
      from gated g where s.id = g.id
    returning s.id)
  select array(select i from unnest(p_ids) i where i not in (select id from parked)) into v_left;
  return v_left;
end
$fn$;

revoke execute on function ballast_private.requeue_due_retries(text[], integer, timestamptz),
                           ballast_private.pick_grouped_steps(text[], integer),
                           ballast_private.park_gated_steps(bigint[], timestamptz)
  from public;

-- claim_steps(worker_id, tasks, n, lease_ms) -> step_claim rows: as in 0022 (its contract comment holds), with three
-- named parts, each called once per claim and only when a probe here says it has work: requeue_due_retries (a
-- retry is due), pick_grouped_steps (a step of a concurrency group is queued), park_gated_steps (a gate is closed).
-- What every claim does stays inline: the pick of ungrouped steps from steps_queue_idx, and the statement that
-- starts the attempts and returns the claims. Measured (server-side time, pg_stat_user_functions, the pre-0032
-- claim_steps and this one called alternately on one queue, 3 runs of 402 claims of 10, load ~3): with the
-- ungrouped pick in a part of its own called every time, a claim took 0.03 ms more (+1 %); as here, no difference
-- (-0.17 to +0.05 ms).
create or replace function ballast.claim_steps(p_worker_id text, p_tasks text[], p_n integer, p_lease_ms integer DEFAULT 30000) returns SETOF ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_lease timestamptz;
  v_n int := least(greatest(coalesce(p_n, 0), 0), 1000);
  v_ids bigint[];
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
    perform ballast_private.requeue_due_retries(p_tasks, v_n, v_now);
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

-- check_job_transitions(ids, from, to): raises BA001 for the first job (by id) whose status change from[i] -> to[i]
-- is not an edge of ballast_private.job_transitions, or is a via_replay edge outside a replay (the setting
-- ballast.replay = on, as replay_step and replay_job set it): message the job and both statuses, hint the ordinary
-- statuses allowed from the old one. Returns nothing otherwise. Reads only job_transitions and takes no lock: the
-- caller (update_job_counters) has written the statuses and holds the job rows.
create function ballast_private.check_job_transitions(p_ids bigint[], p_from text[], p_to text[]) returns void
language plpgsql stable
as $fn$
declare
  v_bad record;
  v_allowed text;
begin
  -- Every status change must be an edge of job_transitions (a via_replay edge only within a replay): BA001 for the
  -- first offending job, and the whole statement with it.
  select c.id, c.from_status, c.to_status, t.via_replay into v_bad
    from unnest(p_ids, p_from, p_to) as c(id, from_status, to_status)
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

revoke execute on function ballast_private.check_job_transitions(bigint[], text[], text[]) from public;

-- update_job_counters(job, deltas of each counter...): as in 0020, with its last part, the transition check of the
-- derived statuses, named check_job_transitions (above) and called once for all the changed jobs.
--  1. Locks the jobs with a change in id order (FOR NO KEY UPDATE) and reads their newest counters plus the deltas.
--  2. Writes the counters and the status derived from them (derive_job_status), with started_at, finished_at, result
--     and error when the status changed; the row guard job_status_guard is skipped for these (ballast.deriving_jobs).
--  3. check_job_transitions: BA001 for the first job whose derived change is not an allowed edge.
create or replace function ballast_private.update_job_counters(p_job bigint[], p_total integer[], p_final integer[], p_running integer[], p_review integer[], p_waiting integer[], p_retrying integer[], p_failed integer[], p_cancelled integer[], p_started integer[], p_item_bad integer[]) returns void
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  n record;
  v_ids bigint[];
  v_from text[];
  v_to text[];
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

  if v_ids is not null then
    perform ballast_private.check_job_transitions(v_ids, v_from, v_to);
  end if;
end
$fn$;

-- settle_succeeded(ok, outputs, now) -> (done_attempts, job_ids, step_names, parent_ids): the first part of
-- settle_steps. Locks the steps of the attempts `ok` in id order (the lock order of every verb) and keeps those
-- whose attempt still owns its step (both running, the step's latest attempt; the check sits above an OFFSET 0
-- fence, see 0020); those attempts end 'succeeded' and their steps 'succeeded' with the output given (outputs[i]
-- for ok[i]; SQL null is JSON null), wait and error cleared. Returns the attempts settled (null when none) and, per
-- step settled, its job, name and map step (parent_ids, null for a step that is no item). Raises nothing of its
-- own; the step statement's triggers count, log and notify as usual.
create function ballast_private.settle_succeeded(p_ok bigint[], p_outputs jsonb[], p_now timestamptz)
returns table (done_attempts bigint[], job_ids bigint[], step_names text[], parent_ids bigint[])
language plpgsql volatile
as $fn$
declare
  v_steps bigint[];
  v_outputs jsonb[];
begin
  -- The steps of the attempts, locked in id order (the lock order of every verb), read by primary key; an attempt
  -- owns its step when both are still running and it is the step's latest attempt. OFFSET 0 keeps that filter
  -- out of the locking scan (see 0020).
  select array_agg(x.aid order by x.sid), array_agg(x.sid order by x.sid), array_agg(x.output order by x.sid)
    into done_attempts, v_steps, v_outputs
    from (select a.id as aid, s.id as sid, s.status, s.attempts, a.number, a.outcome, inp.output
            from unnest(p_ok, p_outputs) as inp(attempt_id, output)
            join ballast_private.attempts a on a.id = inp.attempt_id
            join ballast_private.steps s on s.id = a.step_id
           order by s.id
             for update of s
          offset 0) x
   where x.status = 'running' and x.outcome = 'running' and x.attempts = x.number;

  if done_attempts is not null then
    update ballast_private.attempts a set outcome = 'succeeded', finished_at = p_now
     where a.id = any(done_attempts);
    with s as (
      update ballast_private.steps s
         set status = 'succeeded', output = coalesce(o.output, 'null'::jsonb), error = null, finished_at = p_now,
             wait_key = null, wait_deadline = null, wait_on_timeout = null, updated_at = p_now
        from unnest(v_steps, v_outputs) as o(step_id, output)
       where s.id = o.step_id
      returning s.job_id, s.name, s.parent_step_id)
    select array_agg(s.job_id), array_agg(s.name), array_agg(s.parent_step_id) into job_ids, step_names, parent_ids from s;
  end if;

  return next;
end
$fn$;

-- release_dependants(jobs, names, now): the second part of settle_steps. The pending steps that depend on the
-- named steps (names[i] of job jobs[i], just succeeded) are locked in id order, their deps_remaining lowered by the
-- number of those steps they depend on, and queued when it reaches 0. Raises nothing of its own. Called only when
-- a probe in settle_steps found such a pending step: a batch of last steps (no dependant) pays no call and, since
-- an UPDATE fires the statement triggers of steps even when it changes no row, no empty UPDATE either.
create function ballast_private.release_dependants(p_jobs bigint[], p_names text[], p_now timestamptz) returns void
language plpgsql volatile
as $fn$
begin
  perform 1 from ballast_private.steps d
   where d.id in (select d2.id from unnest(p_jobs, p_names) as f(job_id, name)
                    join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
                   where d2.status = 'pending')
   order by d.id for update;
  update ballast_private.steps d
     set deps_remaining = d.deps_remaining - x.n,
         status = case when d.deps_remaining = x.n then 'queued' else d.status end,
         queued_at = case when d.deps_remaining = x.n then p_now else d.queued_at end,
         updated_at = p_now
    from (select d2.id, count(*)::int as n
            from unnest(p_jobs, p_names) as f(job_id, name)
            join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
           where d2.status = 'pending'
           group by d2.id) x
   where d.id = x.id;
end
$fn$;

revoke execute on function ballast_private.settle_succeeded(bigint[], jsonb[], timestamptz),
                           ballast_private.release_dependants(bigint[], text[], timestamptz)
  from public;

-- settle_steps(worker_id, ok, outputs, failed, errors) -> (attempt_id, step_status) per attempt: as in 0020 (its
-- contract comment holds: BA002 when outputs or errors do not pair with their ids; each succeeded attempt
-- 'succeeded' or 'stale', each failed one as fail_step says, 'stale' or 'refused: <why>'), in named parts called
-- once per batch: settle_succeeded (lock the steps in id order, settle the owning attempts), release_dependants (queue
-- what they released), then finish_map per map step whose item finished and fail_step per failed attempt, as before.
create or replace function ballast.settle_steps(p_worker_id text, p_ok bigint[], p_outputs jsonb[], p_failed bigint[] DEFAULT '{}'::bigint[], p_errors jsonb[] DEFAULT '{}'::jsonb[]) returns TABLE(attempt_id bigint, step_status text)
language plpgsql volatile
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
    select r.done_attempts, r.job_ids, r.step_names, r.parent_ids into v_done, v_jobs, v_names, v_parents
      from ballast_private.settle_succeeded(v_ok, p_outputs, v_now) r;
    if v_done is not null and exists (select 1 from unnest(v_jobs, v_names) as f(job_id, name)
                                        join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
                                       where d2.status = 'pending') then
      perform ballast_private.release_dependants(v_jobs, v_names, v_now);
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
