-- Up Migration
--
-- Baseline, file 7 of 11: side effects with an honest promise, and external events.
--
-- Effects: begin_effect(attempt, key) records the intent to run a side effect before it runs
-- (ballast_private.effect_intents) and hands back its recorded result when an earlier attempt finished it;
-- record_effect records the result (ballast_private.effects). An intent without a result says the effect may have
-- happened without ballast knowing its outcome. begin_transactional_effect is the form for effects written in the
-- same database transaction.
-- Signals: a step parks itself waiting for a key (wait_for_event, with a deadline and what to do on timeout);
-- send_event delivers a payload to the waiting steps of the caller's tenant (ballast_private.signals).
-- Folded from the old 0005, 0007, 0017 and 0029.

-- record_effect(attempt_id, key, result) -> the stored result
-- The side-effect ledger: after effect(key, fn) ran fn, the worker stores its result under (step, key). If the key
-- is already recorded (a concurrent duplicate), the first result wins and is returned. Raises BA007/BA008 as
-- running_attempt: an attempt that lost its step must not record effects for it.
create function ballast.record_effect(p_attempt_id bigint, p_key text, p_result jsonb) returns jsonb
language plpgsql volatile
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

-- wait_for_event(attempt_id, key, timeout_ms, on_timeout) -> (received, payload): as before, with the key in bytes
-- (BA002 unless 1 to 500 bytes) and the signal looked up among the step's own tenant's (see 4.), under the same
-- advisory lock of (tenant, key) as send_event.
create function ballast.wait_for_event(
  p_attempt_id bigint,
  p_key text,
  p_timeout_ms integer default null::integer,
  p_on_timeout text default 'fail'::text
) returns table(received boolean, payload jsonb)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_signal ballast_private.signals;
  v_tenant text;
begin
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Use the key the sender will pass to ballast.send_event.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500,
    'Use the key the sender will pass to ballast.send_event (at most 500 bytes).');
  if p_on_timeout not in ('fail', 'retry') then
    perform ballast_private.bad_argument('on_timeout', format('%L is not "fail" or "retry"', p_on_timeout), 'Pass ''fail'' or ''retry''.');
  end if;
  if p_timeout_ms is not null and p_timeout_ms <= 0 then
    perform ballast_private.bad_argument('timeout_ms', format('%s is not a positive number of milliseconds', p_timeout_ms),
      'Pass how long to wait, or null to wait without a deadline.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  select j.tenant_id into v_tenant from ballast_private.jobs j where j.id = v_step.job_id;
  perform pg_advisory_xact_lock(1650551917, hashtext(v_tenant || '/' || p_key));
  select * into v_signal from ballast_private.signals s where s.tenant_id = v_tenant and s.key = p_key;
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

-- send_event(key, payload, actor) -> (accepted, resumed_step_ids)
-- Delivers the signal `key` once: stores it and queues every step waiting for it. A second send of the same key
-- is a no-op (accepted = false, nothing resumed): webhooks delivered twice do no harm.
create function ballast.send_event(
  p_key text,
  p_payload jsonb default null::jsonb,
  p_actor text default null::text,
  p_tenant_id text default null::text
) returns table(accepted boolean, resumed_step_ids bigint[])
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_resumed bigint[] := '{}';
  v_step ballast_private.steps;
  v_tenant text;
begin
  if ballast_private.caller_unrestricted() then
    v_tenant := coalesce(p_tenant_id, ballast_private.caller_tenant(), 'default');
  else
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014',
        message = format('role %s acts for no tenant: it cannot send events', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if p_tenant_id is not null and p_tenant_id <> v_tenant then
      raise exception using errcode = 'BA014',
        message = format('tenant %s cannot send events to tenant %s', v_tenant, p_tenant_id),
        hint = 'Leave the tenant out: events go to your own tenant''s steps.';
    end if;
  end if;
  perform ballast_private.check_key_text('tenant_id', v_tenant, 200, 'Name a tenant id of 1 to 200 bytes.');
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Pass the key the waiting step named.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500, 'Pass the key the waiting step named (at most 500 bytes).');
  perform ballast_private.set_actor(ballast_private.caller_actor(p_actor));
  perform pg_advisory_xact_lock(1650551917, hashtext(v_tenant || '/' || p_key));
  insert into ballast_private.signals (tenant_id, key, payload, actor)
  values (v_tenant, p_key, p_payload, current_setting('ballast.actor', true))
  on conflict (tenant_id, key) do nothing;
  if not found then
    return query select false, v_resumed;
    return;
  end if;
  for v_step in
    select s.* from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'waiting' and s.wait_key = p_key and j.tenant_id = v_tenant
     order by s.id for update of s
  loop
    update ballast_private.steps
       set status = 'queued', queued_at = v_now, wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = v_step.id;
    perform ballast_private.wake_step(v_step.id);
    perform ballast_private.refresh_job_status(v_step.job_id);
    v_resumed := v_resumed || v_step.id;
  end loop;
  return query select true, v_resumed;
end
$fn$;
grant execute on function ballast.send_event(text,jsonb,text,text) to ballast_client, ballast_operator;
comment on function ballast.send_event(text,jsonb,text,text) is 'Deliver an event to the steps of one tenant waiting for its key (and to those that will wait for it). A key is delivered once (accepted = false the second time).';

-- check_effect_key: 1 to 500 bytes.
create function ballast_private.check_effect_key(p_key text) returns void
language plpgsql volatile
as $fn$
begin
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Name the effect after what it does and to whom, e.g. ''email:welcome:user-42''.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500,
    'Name the effect after what it does and to whom, in at most 500 bytes, e.g. ''email:welcome:user-42''.');
end
$fn$;

-- begin_effect(attempt_id, key) -> (done, result, earlier_attempts, idempotency_key)
-- Called by effect(key, fn) before fn runs. When the step already recorded `key` (ballast_private.effects), returns
-- done = true with the recorded result: the caller returns it and does not run fn. Otherwise records the intent
-- (step, key, attempt; a second call by the same attempt is a no-op, so a retry after a lost connection is safe) and
-- returns done = false. earlier_attempts counts the other attempts of the step that started this effect and did not
-- record it: each of them ran fn, or began to, and never recorded a result (crashed, lost its step, or fn threw),
-- so with done = false the effect may already have happened. idempotency_key is 'ballast:<job id>:<step name>:<key>', the same for every attempt (for
-- an item of a map step, the item's step name): pass it to the external API.
-- Raises BA002 for a key that is empty or over 500 characters, BA007/BA008 as ballast_private.running_attempt (an
-- attempt that lost its step starts nothing). Locks only the step row (running_attempt), as record_effect does.
create function ballast.begin_effect(
  p_attempt_id bigint,
  p_key text
) returns table(done boolean, result jsonb, earlier_attempts integer, idempotency_key text)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_effect ballast_private.effects;
  v_earlier integer;
begin
  perform ballast_private.check_effect_key(p_key);
  v_step := ballast_private.running_attempt(p_attempt_id);
  select * into v_effect from ballast_private.effects e where e.step_id = v_step.id and e.key = p_key;
  if v_effect.step_id is null then
    insert into ballast_private.effect_intents (step_id, key, attempt_id)
    values (v_step.id, p_key, p_attempt_id)
    on conflict do nothing;
  end if;
  select count(*) into v_earlier from ballast_private.effect_intents i
   where i.step_id = v_step.id and i.key = p_key and i.attempt_id <> p_attempt_id
     and i.attempt_id is distinct from v_effect.attempt_id;
  return query
  select v_effect.step_id is not null, v_effect.result, v_earlier,
         'ballast:' || v_step.job_id || ':' || v_step.name || ':' || p_key;
end
$fn$;

-- begin_transactional_effect(attempt_id, key) -> (done, result)
-- The first statement of a transactional effect, inside the caller's transaction (BEGIN ... COMMIT on one
-- connection): locks the step row and checks that the attempt still owns the step (ballast_private.running_attempt:
-- BA007/BA008), then returns done = true with the recorded result when the step already recorded `key`. Otherwise
-- (done = false) the caller runs its own SQL, then ballast.record_effect(attempt_id, key, result), then commits: the
-- SQL and the ledger row commit together or not at all, so the effect happens exactly once. The step lock is held
-- to the end of the transaction: the attempt cannot be reclaimed, completed or cancelled in between (those verbs
-- wait, the reaper skips the step), so keep the transaction short. Called outside a transaction block the lock ends
-- with the statement and the fence means nothing.
-- Raises BA002 for a key that is empty or over 500 characters.
create function ballast.begin_transactional_effect(
  p_attempt_id bigint,
  p_key text
) returns table(done boolean, result jsonb)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_effect ballast_private.effects;
begin
  perform ballast_private.check_effect_key(p_key);
  v_step := ballast_private.running_attempt(p_attempt_id);
  select * into v_effect from ballast_private.effects e where e.step_id = v_step.id and e.key = p_key;
  return query select v_effect.step_id is not null, v_effect.result;
end
$fn$;
