-- Up Migration
--
-- 0026: three holes in tenancy and trust found by an adversarial review (issue 13, "Tenancy and trust"), and
-- Retry-After without jitter.
--
-- 1. No tenant, no access. require_tenant (0010) compared the row's tenant with the caller's: for a login that has
--    ballast_client but is bound to no tenant (between the README's create-role and bind steps, or after unbinding),
--    the comparison was null, the IF did not fire, and the verb went on: such a login could cancel any tenant's job,
--    and learn other tenants' job statuses from the errors that followed. Now a restricted caller without a tenant is
--    refused first (BA014, naming the missing binding), and a restricted caller of another tenant gets BA007 as before.
-- 2. Who the audit trail names. caller_actor (0010) let any restricted login name itself through the setting
--    ballast.actor. Only the API's login (a member of ballast_authenticator, which sets it from the verified token)
--    may; any other restricted login is named by its own login name.
-- 3. The controllable clock. ballast.now() honoured the setting ballast.now for every session, so any SQL client
--    could forge audit timestamps (created in 2100, finished in 1999), escape retention and move jobs out of report
--    windows. The setting is now honoured only for members of the schema's owner (tests, an operator rehearsing a
--    schedule as the owner); for anyone else the clock is clock_timestamp(). The check runs only when the setting is
--    set, so the engine's own calls (setting unset) cost what they did.

-- require_tenant(tenant, what): raises BA014 when a restricted caller acts for no tenant, BA007 (as if the row did
-- not exist; the message names `what`) when it may not see `tenant`. Unrestricted callers pass.
create or replace function ballast_private.require_tenant(p_tenant text, p_what text) returns void
language plpgsql
stable
as $fn$
declare
  v_caller_tenant text;
begin
  if ballast_private.caller_unrestricted() then
    return;
  end if;
  v_caller_tenant := ballast_private.caller_tenant();
  if v_caller_tenant is null then
    raise exception using errcode = 'BA014',
      message = format('role %s acts for no tenant: it can see and change nothing', ballast_private.caller_role()),
      hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
  end if;
  if p_tenant is null or p_tenant <> v_caller_tenant then
    raise exception using errcode = 'BA007', message = format('%s does not exist', p_what);
  end if;
end
$fn$;

-- caller_actor(actor): who the audit trail names. Unrestricted callers may name anyone (an operator tool passing its
-- user); the API's login (ballast_authenticator) is named by the token's identity it set in ballast.actor; any other
-- restricted login by its own name, whatever it sets.
create or replace function ballast_private.caller_actor(p_actor text) returns text
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $fn$
  select case when ballast_private.caller_unrestricted()
              then coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''))
              when pg_has_role(session_user, 'ballast_authenticator', 'member')
              then coalesce(nullif(current_setting('ballast.actor', true), ''), session_user::text)
              else session_user::text end
$fn$;

-- ballast.now(): the clock every ballast function reads.
-- Takes nothing; returns clock_timestamp(), or the setting `ballast.now` when the session's login is a member of the
-- owner of schema ballast_private (tests, an operator rehearsing a schedule as the owner). clock_timestamp rather
-- than now(): leases and latencies must not be frozen at the start of a long transaction. Volatile for that reason.
create or replace function ballast.now() returns timestamptz
language sql volatile parallel safe
as $fn$
  select case when coalesce(current_setting('ballast.now', true), '') = '' then clock_timestamp()
              when pg_has_role(session_user, (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'ballast_private'), 'member')
              then current_setting('ballast.now', true)::timestamptz
              else clock_timestamp() end
$fn$;

-- 4. Retry-After without jitter: steps that a provider refused together (a 429 to a burst) all came back at the same
--    instant and were refused together again. settle_failure (0005) again, with a bounded jitter added on top of a
--    Retry-After above 0 (never shortening it): uniform in [0, min(max(retry_after / 4, 250 ms), 60 s)). A delay of
--    0 (a release on shutdown: runnable again at once) gets none.
--
-- settle_failure(step, error, retryable, retry_after_ms, now): the decision after an attempt ended badly (failed,
-- crashed, timed out, released). The caller has locked the step row and closed the attempt. Retryable with charged
-- attempts left -> 'retrying' at now + delay (retry_after_ms plus the jitter above when given, else full-jitter
-- backoff); otherwise 'failed' and every pending step depending on it, directly or not, 'skipped'. Frees the step's
-- concurrency slot. Does not re-derive the job: the caller does, once. Returns the step's new status.
create or replace function ballast_private.settle_failure(
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
