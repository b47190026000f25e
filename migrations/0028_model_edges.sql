-- Up Migration
--
-- 0028: two edges of model steps found by an adversarial review (issue 13, "Model steps").
--
-- 1. Cooldowns and retries. A 429 or 529 without Retry-After sets a 2 s shared cooldown (record_model_call, 0009),
--    but the ladder retried the step with an empty delay (it dropped the cooldown record_model_call returned), met its
--    own cooldown, recorded a skipped call and was charged an attempt for it: on its last attempt the step failed for
--    good although the provider was ready 2 s later. Now:
--     - begin_model_call and record_model_call also return cooldown_ms, the time left of the cooldown in force by the
--       database's clock (ballast.now()), so the worker never compares a database time with its own clock; the
--       ladder retries a rate-limited or overloaded call after the later of Retry-After and the cooldown's end
--       (settle_failure, 0026, adds its bounded jitter on top);
--     - pause_for_cooldown (new) parks a step whose attempt met a cooldown before making any provider call and has
--       no other model left to try (a free fallback is tried at once, src/model/ladder.ts): the attempt ends 'parked' (error class cooldown, not charged against max_attempts, as pause_for_budget does for a
--       budget) and the step is 'retrying' until the cooldown ends, plus the same bounded jitter. It cannot loop for
--       ever: each park lasts until a cooldown ends (at most 7 days, the longest Retry-After fail_step accepts), a
--       cooldown only exists because a provider refused a real call (or an operator set one), and an attempt that
--       made a call is always charged (src/model/ladder.ts).
-- 2. Calls without usage. A provider answer carrying no token counts was priced at $0 and not flagged, so such calls
--    spent nothing against the budget. model_calls.usage_missing (new, shown in ballast.model_calls) marks them, and
--    record_model_call charges them the reservation's estimate (the most the call could cost, reserved by
--    begin_model_call; without a budget, the estimate the worker passes as call.estimate_usd), so budgets stay
--    bounded.
--
-- Plain steps are not touched: settle_failure and the claim functions are unchanged.

-- 1. The flag ------------------------------------------------------------------------------------------------------

-- A provider answer (HTTP 2xx, or an in-process provider's text) that did not report input and output tokens: its
-- cost_usd is the reservation's estimate, not a price times tokens.
alter table ballast_private.model_calls add column usage_missing boolean not null default false;

-- ballast.model_calls (0009) again, with usage_missing at the end (a view keeps its columns in order).
create or replace view ballast.model_calls with (security_invoker = true) as
select c.id, c.attempt_id, c.step_id, c.job_id, c.tenant_id, c.rung, c.model_index, c.provider, c.provider_kind,
       c.requested_model, c.returned_model, c.prompt_name, c.prompt_version, c.prompt_hash, c.parameters,
       c.started_at, c.first_token_at, c.ended_at, c.latency_ms,
       extract(epoch from (c.first_token_at - c.started_at)) * 1000 as first_token_ms,
       c.finish_reason_raw, c.finish_reason, c.input_tokens, c.output_tokens, c.cached_input_tokens,
       c.cache_write_tokens, c.reasoning_tokens, c.cost_usd, c.price_valid_from,
       c.cost_usd is null and c.error_class is distinct from 'cooldown' and c.error_class is distinct from 'budget'
         as price_missing,
       c.error_class, c.error_code, c.error_message, c.retryable, c.http_status, c.request_id, c.response_id,
       c.raw_output, c.validation_issues, c.repair_method, c.score, c.quality, c.usage_missing
  from ballast_private.model_calls c;

-- 2. Before a call: the cooldown's time left --------------------------------------------------------------------------

-- cooldown_left_ms(until, now) -> the milliseconds from now to until (0 when past), capped at 7 days (an operator's
-- cooldown may end at 'infinity'); null for a null until.
create function ballast_private.cooldown_left_ms(p_until timestamptz, p_now timestamptz) returns integer
language sql
immutable
as $fn$
  select case when p_until is null then null
              else ceil(greatest(extract(epoch from (least(p_until, p_now + interval '7 days') - p_now)), 0) * 1000)::integer
         end
$fn$;

-- begin_model_call(attempt_id, provider, model, input_tokens_estimate, max_output_tokens)
--   -> (cooldown_until, cooldown_reason, reservation_id, estimate_usd, budget_exhausted, budget_message, resume_at,
--       on_exhausted, cooldown_ms)
-- As in 0009 (its contract comment holds), and cooldown_ms: with a cooldown in force, the milliseconds left of it by
-- ballast.now() (at most 7 days), else null. The result type changed, hence drop and create (no role was granted
-- it: the worker runs as the owner).
drop function ballast.begin_model_call(bigint, text, text, integer, integer);
create function ballast.begin_model_call(
  p_attempt_id bigint, p_provider text, p_model text, p_input_tokens_estimate integer, p_max_output_tokens integer
) returns table (cooldown_until timestamptz, cooldown_reason text, reservation_id bigint, estimate_usd numeric,
                 budget_exhausted boolean, budget_message text, resume_at timestamptz, on_exhausted text,
                 cooldown_ms integer)
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_tenant text;
  v_cool ballast_private.provider_cooldowns;
  v_price ballast_private.model_prices;
  v_estimate numeric;
  v_budget ballast_private.budgets;
  v_start timestamptz;
  v_end timestamptz;
  v_usage ballast_private.budget_usage;
  v_reservation bigint;
begin
  if p_input_tokens_estimate < 0 or p_max_output_tokens < 0 then
    perform ballast_private.bad_argument('estimate', format('input %s, output %s: token counts must be >= 0',
      p_input_tokens_estimate, p_max_output_tokens), 'Pass the prompt''s estimated tokens and the call''s max output tokens.');
  end if;
  select j.tenant_id into v_tenant
    from ballast_private.attempts a join ballast_private.jobs j on j.id = a.job_id where a.id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  select * into v_cool from ballast_private.provider_cooldowns c
   where c.provider = p_provider and c.model in (p_model, '*') and c.until > v_now
   order by c.until desc limit 1;
  if found then
    return query select v_cool.until, v_cool.reason, null::bigint, null::numeric, false, null::text, null::timestamptz,
                        null::text, ballast_private.cooldown_left_ms(v_cool.until, v_now);
    return;
  end if;
  select * into v_price from ballast.model_price(p_provider, p_model, v_now);
  v_estimate := round((coalesce(p_input_tokens_estimate, 0) * coalesce(v_price.input_per_mtok, 0)
                       + coalesce(p_max_output_tokens, 0) * coalesce(v_price.output_per_mtok, 0)) / 1000000.0, 8);
  select * into v_budget from ballast_private.budgets b where b.tenant_id = v_tenant;
  if not found then
    return query select null::timestamptz, null::text, null::bigint, v_estimate, false, null::text, null::timestamptz,
                        null::text, null::integer;
    return;
  end if;
  v_start := ballast_private.budget_period_start(v_budget.period, v_now);
  v_end := v_start + ('1 ' || v_budget.period)::interval;
  insert into ballast_private.budget_usage (tenant_id, period_start) values (v_tenant, v_start)
  on conflict do nothing;
  -- Reservations whose attempt is over without having settled them (the worker died during the call) would hold
  -- budget for ever: expire them, counting their estimate as spent (the call may have been made and billed).
  with stale as (
    update ballast_private.budget_reservations r
       set status = 'expired', actual_usd = r.estimate_usd, settled_at = v_now
     where r.tenant_id = v_tenant and r.period_start = v_start and r.status = 'open'
       and not exists (select 1 from ballast_private.attempts a where a.id = r.attempt_id and a.outcome = 'running')
    returning r.estimate_usd as stale_estimate)
  update ballast_private.budget_usage u
     set reserved_usd = greatest(u.reserved_usd - s.total, 0), spent_usd = u.spent_usd + s.total
    from (select sum(st.stale_estimate) as total from stale st) s
   where s.total is not null and u.tenant_id = v_tenant and u.period_start = v_start;
  update ballast_private.budget_usage u set reserved_usd = u.reserved_usd + v_estimate
   where u.tenant_id = v_tenant and u.period_start = v_start
     and u.spent_usd + u.reserved_usd + v_estimate <= v_budget.limit_usd
  returning * into v_usage;
  if not found then
    select * into v_usage from ballast_private.budget_usage u where u.tenant_id = v_tenant and u.period_start = v_start;
    return query select null::timestamptz, null::text, null::bigint, v_estimate, true,
      format('budget of tenant %s exhausted: %s USD spent and %s USD reserved of %s USD for the %s starting %s; this call could cost up to %s USD',
             v_tenant, trim_scale(round(v_usage.spent_usd, 6)), trim_scale(round(v_usage.reserved_usd, 6)),
             trim_scale(v_budget.limit_usd), v_budget.period, to_char(v_start at time zone 'UTC', 'YYYY-MM-DD'),
             trim_scale(round(v_estimate, 6))),
      v_end, v_budget.on_exhausted, null::integer;
    return;
  end if;
  insert into ballast_private.budget_reservations (tenant_id, period_start, attempt_id, estimate_usd)
  values (v_tenant, v_start, p_attempt_id, v_estimate)
  returning id into v_reservation;
  return query select null::timestamptz, null::text, v_reservation, v_estimate, false, null::text, null::timestamptz,
                      null::text, null::integer;
end
$fn$;

-- 3. After a call: missing usage charged, the cooldown's time left ----------------------------------------------------

-- record_model_call(attempt_id, reservation_id, call) -> (call_id, cost_usd, cooldown_until, cooldown_ms, usage_missing)
-- After a provider call (or a call not made because of a cooldown or budget): stores the trace row, prices it with
-- the price in force at its start (cost null when the model has no price), settles the reservation (reserved minus
-- the estimate, spent plus the actual), adds tokens and cost to the attempt, step and job, and after a rate limit
-- or overload (error_code rate_limited / overloaded) sets the provider/model's shared cooldown to the retry-after
-- the provider sent (call.retry_after_ms), or 2 s without one; cooldown_until is then the latest cooldown in force
-- for the provider/model or the whole provider ('*'), and cooldown_ms its time left by ballast.now() (at most 7
-- days); both null otherwise. Missing usage: call.usage_missing (boolean; when absent: an HTTP 2xx answer,
-- call.http_status, without input_tokens or output_tokens) marks an answer that did not say what it used; a priced
-- call so marked costs the reservation's estimate (or call.estimate_usd without a reservation), at least what its
-- known tokens cost, so it counts against the budget as the most it could have cost. Recorded whatever the
-- attempt's state (a call made by an attempt cancelled meanwhile still cost money). call: the JSON of a
-- ModelCallRecord as src/model/ladder.ts writes it; provider, requested_model, rung, started_at and ended_at are
-- required. Raises BA007 for an unknown attempt, BA002 for a call without those fields. The result type changed
-- from 0009, hence drop and create (no role was granted it: the worker runs as the owner).
drop function ballast.record_model_call(bigint, bigint, jsonb);
create function ballast.record_model_call(p_attempt_id bigint, p_reservation_id bigint, p_call jsonb)
returns table (call_id bigint, cost_usd numeric, cooldown_until timestamptz, cooldown_ms integer, usage_missing boolean)
language plpgsql
as $fn$
declare
  v_attempt ballast_private.attempts;
  v_tenant text;
  v_price ballast_private.model_prices;
  v_cost numeric;
  v_in int := (p_call ->> 'input_tokens')::int;
  v_out int := (p_call ->> 'output_tokens')::int;
  v_cached int := coalesce((p_call ->> 'cached_input_tokens')::int, 0);
  v_usage_missing boolean;
  v_estimate numeric;
  v_started timestamptz;
  v_id bigint;
  v_until timestamptz;
  v_model text;
begin
  if jsonb_typeof(p_call) is distinct from 'object' or coalesce(p_call ->> 'provider', '') = ''
     or coalesce(p_call ->> 'requested_model', '') = '' or p_call ->> 'rung' is null
     or p_call ->> 'started_at' is null or p_call ->> 'ended_at' is null then
    perform ballast_private.bad_argument('call', 'must be an object with provider, requested_model, rung, started_at and ended_at',
      'Pass the call record as src/model/ladder.ts builds it.');
  end if;
  select a.* into v_attempt from ballast_private.attempts a where a.id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  -- Lock order: step, attempt, job.
  perform 1 from ballast_private.steps s where s.id = v_attempt.step_id for update;
  select j.tenant_id into v_tenant from ballast_private.jobs j where j.id = v_attempt.job_id;
  v_started := (p_call ->> 'started_at')::timestamptz;
  v_model := coalesce(p_call ->> 'returned_model', p_call ->> 'requested_model');
  v_usage_missing := coalesce((p_call ->> 'usage_missing')::boolean,
                              coalesce((p_call ->> 'http_status')::int between 200 and 299, false)
                              and (v_in is null or v_out is null));
  select * into v_price from ballast.model_price(p_call ->> 'provider', p_call ->> 'requested_model', v_started);
  if v_price.provider is null then
    select * into v_price from ballast.model_price(p_call ->> 'provider', v_model, v_started);
  end if;
  if v_price.provider is not null then
    v_cost := round((greatest(coalesce(v_in, 0) - v_cached, 0) * v_price.input_per_mtok
                     + v_cached * coalesce(v_price.cached_input_per_mtok, v_price.input_per_mtok)
                     + coalesce(v_out, 0) * v_price.output_per_mtok) / 1000000.0, 8);
    if v_usage_missing then
      select r.estimate_usd into v_estimate from ballast_private.budget_reservations r where r.id = p_reservation_id;
      v_cost := greatest(v_cost, coalesce(v_estimate, (p_call ->> 'estimate_usd')::numeric, 0));
    end if;
  end if;

  insert into ballast_private.model_calls (
    attempt_id, step_id, job_id, tenant_id, rung, model_index, provider, provider_kind, requested_model,
    returned_model, prompt_name, prompt_version, prompt_hash, parameters, started_at, first_token_at, ended_at,
    latency_ms, finish_reason_raw, finish_reason, input_tokens, output_tokens, cached_input_tokens,
    cache_write_tokens, reasoning_tokens, cost_usd, price_valid_from, error_class, error_code, error_message,
    retryable, http_status, request_id, response_id, raw_output, validation_issues, repair_method, score, quality,
    usage_missing)
  values (
    p_attempt_id, v_attempt.step_id, v_attempt.job_id, v_tenant, p_call ->> 'rung',
    coalesce((p_call ->> 'model_index')::int, 0), p_call ->> 'provider', p_call ->> 'provider_kind',
    p_call ->> 'requested_model', p_call ->> 'returned_model', p_call ->> 'prompt_name',
    (p_call ->> 'prompt_version')::int, p_call ->> 'prompt_hash', p_call -> 'parameters', v_started,
    (p_call ->> 'first_token_at')::timestamptz, (p_call ->> 'ended_at')::timestamptz,
    (p_call ->> 'latency_ms')::numeric, p_call ->> 'finish_reason_raw', p_call ->> 'finish_reason', v_in, v_out,
    (p_call ->> 'cached_input_tokens')::int, (p_call ->> 'cache_write_tokens')::int,
    (p_call ->> 'reasoning_tokens')::int, v_cost, v_price.valid_from, p_call ->> 'error_class',
    p_call ->> 'error_code', p_call ->> 'error_message', (p_call ->> 'retryable')::boolean,
    (p_call ->> 'http_status')::int, p_call ->> 'request_id', p_call ->> 'response_id', p_call ->> 'raw_output',
    p_call -> 'validation_issues', p_call ->> 'repair_method', (p_call ->> 'score')::numeric, p_call -> 'quality',
    v_usage_missing)
  returning id into v_id;

  if p_reservation_id is not null then
    with r as (
      update ballast_private.budget_reservations r
         set status = 'settled', actual_usd = coalesce(v_cost, 0), settled_at = ballast.now()
       where r.id = p_reservation_id and r.status = 'open'
      returning r.tenant_id, r.period_start, r.estimate_usd)
    update ballast_private.budget_usage u
       set reserved_usd = greatest(u.reserved_usd - r.estimate_usd, 0), spent_usd = u.spent_usd + coalesce(v_cost, 0)
      from r where u.tenant_id = r.tenant_id and u.period_start = r.period_start;
  end if;

  update ballast_private.steps s
     set input_tokens = s.input_tokens + coalesce(v_in, 0), output_tokens = s.output_tokens + coalesce(v_out, 0),
         cost_usd = s.cost_usd + coalesce(v_cost, 0)
   where s.id = v_attempt.step_id;
  update ballast_private.attempts a
     set model_calls = a.model_calls + 1, input_tokens = a.input_tokens + coalesce(v_in, 0),
         output_tokens = a.output_tokens + coalesce(v_out, 0), cost_usd = a.cost_usd + coalesce(v_cost, 0)
   where a.id = p_attempt_id;
  update ballast_private.jobs j
     set input_tokens = j.input_tokens + coalesce(v_in, 0), output_tokens = j.output_tokens + coalesce(v_out, 0),
         cost_usd = j.cost_usd + coalesce(v_cost, 0)
   where j.id = v_attempt.job_id;

  if p_call ->> 'error_code' in ('rate_limited', 'overloaded') then
    perform ballast.set_provider_cooldown(p_call ->> 'provider', p_call ->> 'requested_model',
      ballast.now() + make_interval(secs => coalesce((p_call ->> 'retry_after_ms')::double precision, 2000) / 1000.0),
      format('%s from %s:%s (HTTP %s)', p_call ->> 'error_code', p_call ->> 'provider', p_call ->> 'requested_model',
             coalesce(p_call ->> 'http_status', '?')));
    select max(c.until) into v_until from ballast_private.provider_cooldowns c
     where c.provider = p_call ->> 'provider' and c.model in (p_call ->> 'requested_model', '*');
  end if;
  return query select v_id, v_cost, v_until, ballast_private.cooldown_left_ms(v_until, ballast.now()), v_usage_missing;
end
$fn$;

-- 4. Parking for a cooldown ------------------------------------------------------------------------------------------

-- pause_for_cooldown(attempt_id, provider, model, message) -> (step_status, next_run_at)
-- The attempt met a cooldown of provider/model before it made any provider call (src/model/ladder.ts): the attempt
-- ends 'parked' with error class and code 'cooldown' and the message (not charged against max_attempts: the
-- step's attempt_offset grows by one, as pause_for_budget does), and the step is 'retrying' (error class cooldown)
-- until the latest cooldown in force for provider/model or the whole provider ('*') ends, at most 7 days from now,
-- plus a bounded jitter as settle_failure (0026) adds to a Retry-After (uniform in [0, min(max(wait / 4, 250 ms),
-- 60 s))), so the steps a cooldown stopped together do not all call again at the same instant. A cooldown that has
-- ended meanwhile: due at once, no jitter. Returns 'retrying' and the step's next_run_at. BA007/BA008 as
-- running_attempt.
create function ballast.pause_for_cooldown(p_attempt_id bigint, p_provider text, p_model text, p_message text)
returns table (step_status text, next_run_at timestamptz)
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_until timestamptz;
  v_wait_ms double precision;
  v_next timestamptz;
  v_message text := coalesce(nullif(p_message, ''), format('%s:%s is cooling down', p_provider, p_model));
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  select max(c.until) into v_until from ballast_private.provider_cooldowns c
   where c.provider = p_provider and c.model in (p_model, '*') and c.until > v_now;
  v_wait_ms := coalesce(ballast_private.cooldown_left_ms(v_until, v_now), 0);
  v_next := v_now + make_interval(secs => (case when v_wait_ms > 0
                                                then v_wait_ms + floor(random() * least(greatest(v_wait_ms * 0.25, 250), 60000))
                                                else 0 end) / 1000.0);
  update ballast_private.attempts
     set outcome = 'parked', finished_at = v_now, error_class = 'cooldown', error_code = 'cooldown',
         error_message = v_message, error_retryable = true
   where id = p_attempt_id;
  update ballast_private.steps
     set status = 'retrying', next_run_at = v_next, attempt_offset = attempt_offset + 1,
         error = jsonb_build_object('class', 'cooldown', 'code', 'cooldown', 'message', v_message,
                                    'retryable', true, 'attempt', v_step.attempts)
   where id = v_step.id;
  perform ballast_private.wake_step(v_step.id, v_next);
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select 'retrying'::text, v_next;
end
$fn$;

-- Nothing for PUBLIC (0010's default privileges see to it for functions the migrating user creates; repeated for
-- another user). No role is granted these: the worker calls them as the owner.
revoke execute on function ballast.begin_model_call(bigint, text, text, integer, integer),
  ballast.record_model_call(bigint, bigint, jsonb), ballast.pause_for_cooldown(bigint, text, text, text),
  ballast_private.cooldown_left_ms(timestamptz, timestamptz)
  from public;
