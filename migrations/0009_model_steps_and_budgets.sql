-- Up Migration
--
-- Baseline, file 9 of 11: model steps: the rows behind the contract ladder, tracing, cost, budgets and provider
-- backpressure. The ladder itself runs in the worker (src/model/ladder.ts); every crossing of it is recorded here.
--
-- The protocol per provider call, two round trips around the HTTP call:
--   begin_model_call  cooldown check, then budget reservation (one row update that cannot overshoot: the check
--                     and the increment are one statement on the period row, so concurrent workers serialise on it);
--   record_model_call the trace row, the cost from the price in force at the call's start, settling the
--                     reservation, the totals of attempt, step and job, and a shared cooldown after a 429/529.
-- A step whose budget is used up or whose models are cooling down is parked (pause_for_budget, pause_for_cooldown);
-- one whose output fails its contract may go to a human review (request_review, resolve_review). Prices are
-- versioned by date (model_prices, seeded below; set_model_price adds one).
-- Folded from the old 0009, 0010 and 0028.

-- register_prompt(name, version, template) -> (created, content_hash)
-- Stores a prompt version. Idempotent for identical content (created = false). Raises BA012 when the version exists
-- with other content (a prompt version is immutable: its calls' traces point at it), BA002 for a bad name, version
-- or template.
create function ballast.register_prompt(
  p_name text,
  p_version integer,
  p_template jsonb
) returns table(created boolean, content_hash text)
language plpgsql volatile
as $fn$
declare
  v_hash text;
  v_existing ballast_private.prompts;
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    perform ballast_private.bad_argument('name', format('%L is not a valid prompt name', p_name),
      'Use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".');
  end if;
  if p_version is null or p_version < 1 then
    perform ballast_private.bad_argument('version', format('%s is not a positive integer', coalesce(p_version::text, 'null')),
      'Number prompt versions 1, 2, 3...');
  end if;
  if jsonb_typeof(p_template) is distinct from 'object' or jsonb_typeof(p_template -> 'user') is distinct from 'string'
     or coalesce(jsonb_typeof(p_template -> 'system'), 'null') not in ('null', 'string') then
    perform ballast_private.bad_argument('template', 'must be an object with a text "user" and an optional text "system"',
      'Pass e.g. {"system": "You extract invoices.", "user": "Extract: {{input.text}}"}.');
  end if;
  v_hash := encode(sha256(convert_to(p_template::text, 'UTF8')), 'hex');
  insert into ballast_private.prompts (name, version, template, content_hash)
  values (p_name, p_version, p_template, v_hash)
  on conflict (name, version) do nothing;
  if found then
    return query select true, v_hash;
    return;
  end if;
  select * into v_existing from ballast_private.prompts p where p.name = p_name and p.version = p_version;
  if v_existing.content_hash <> v_hash then
    raise exception using errcode = 'BA012',
      message = format('prompt %s@%s is already registered with other content (hash %s, this one %s)', p_name,
                       p_version, left(v_existing.content_hash, 12), left(v_hash, 12)),
      hint = 'A prompt version is immutable once used: give the changed prompt a new version number.';
  end if;
  return query select false, v_hash;
end
$fn$;

-- List prices in USD per 1M tokens as the vendors published them; override with ballast.set_model_price (a later
-- valid_from wins from that date on). The local provider is free.
insert into ballast_private.model_prices (provider, model, valid_from, input_per_mtok, output_per_mtok, cached_input_per_mtok, source) values
  ('openai', 'gpt-4o', '2024-10-01', 2.50, 10.00, 1.25, 'seed: vendor list price'),
  ('openai', 'gpt-4o-mini', '2024-07-18', 0.15, 0.60, 0.075, 'seed: vendor list price'),
  ('openai', 'gpt-4.1', '2025-04-14', 2.00, 8.00, 0.50, 'seed: vendor list price'),
  ('openai', 'gpt-4.1-mini', '2025-04-14', 0.40, 1.60, 0.10, 'seed: vendor list price'),
  ('openai', 'gpt-4.1-nano', '2025-04-14', 0.10, 0.40, 0.025, 'seed: vendor list price'),
  ('openai', 'o3-mini', '2025-01-31', 1.10, 4.40, 0.55, 'seed: vendor list price'),
  ('anthropic', 'claude-3-5-haiku', '2024-11-04', 0.80, 4.00, 0.08, 'seed: vendor list price'),
  ('anthropic', 'claude-3-5-sonnet', '2024-10-22', 3.00, 15.00, 0.30, 'seed: vendor list price'),
  ('anthropic', 'claude-3-7-sonnet', '2025-02-24', 3.00, 15.00, 0.30, 'seed: vendor list price'),
  ('anthropic', 'claude-sonnet-4', '2025-05-22', 3.00, 15.00, 0.30, 'seed: vendor list price'),
  ('anthropic', 'claude-opus-4', '2025-05-22', 15.00, 75.00, 1.50, 'seed: vendor list price'),
  ('local', '*', '2020-01-01', 0, 0, 0, 'seed: runs in the worker, no charge');

-- model_price(provider, model, at) -> the price row in force at `at`, or none.
-- The model matches exactly, else the longest priced model id that is a prefix of it followed by '-' (a dated
-- snapshot such as gpt-4o-mini-2024-07-18 takes gpt-4o-mini's price), else the provider's '*' row.
create function ballast.model_price(
  p_provider text,
  p_model text,
  p_at timestamp with time zone default ballast.now()
) returns setof ballast_private.model_prices
language sql stable
as $fn$
  select p.* from ballast_private.model_prices p
   where p.provider = p_provider and p.valid_from <= p_at
     and (p.model = p_model or p_model like p.model || '-%' or p.model = '*')
   order by (p.model = p_model) desc, (p.model <> '*') desc, length(p.model) desc, p.valid_from desc
   limit 1
$fn$;
grant execute on function ballast.model_price(text,text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;

-- set_model_price(provider, model, input, output, cached_input, valid_from, source) -> void
-- Adds (or corrects, for the same valid_from) a price. Raises BA002 for a negative price or an empty name.
create function ballast.set_model_price(
  p_provider text,
  p_model text,
  p_input_per_mtok numeric,
  p_output_per_mtok numeric,
  p_cached_input_per_mtok numeric default null::numeric,
  p_valid_from timestamp with time zone default ballast.now(),
  p_source text default 'operator'::text
) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if coalesce(p_provider, '') = '' or coalesce(p_model, '') = '' then
    perform ballast_private.bad_argument(case when coalesce(p_provider, '') = '' then 'provider' else 'model' end,
      'is empty', 'Name the provider as in "provider:model" (e.g. openai) and the model id (e.g. gpt-4o-mini, or * for all).');
  end if;
  if p_input_per_mtok is null or p_input_per_mtok < 0 or p_output_per_mtok is null or p_output_per_mtok < 0
     or p_cached_input_per_mtok < 0 then
    perform ballast_private.bad_argument('price', format('input %s, output %s, cached %s: prices must be numbers >= 0',
      coalesce(p_input_per_mtok::text, 'null'), coalesce(p_output_per_mtok::text, 'null'), coalesce(p_cached_input_per_mtok::text, 'null')),
      'Pass USD per 1M tokens, e.g. 0.15 and 0.60.');
  end if;
  insert into ballast_private.model_prices (provider, model, valid_from, input_per_mtok, output_per_mtok, cached_input_per_mtok, source)
  values (p_provider, p_model, coalesce(p_valid_from, ballast.now()), p_input_per_mtok, p_output_per_mtok, p_cached_input_per_mtok, coalesce(p_source, 'operator'))
  on conflict (provider, model, valid_from) do update
    set input_per_mtok = excluded.input_per_mtok, output_per_mtok = excluded.output_per_mtok,
        cached_input_per_mtok = excluded.cached_input_per_mtok, source = excluded.source;
end
$fn$;
grant execute on function ballast.set_model_price(text,text,numeric,numeric,numeric,timestamp with time zone,text) to ballast_operator;

-- budget_period_start(period, at): the start of the UTC day, ISO week or month holding `at`.
create function ballast_private.budget_period_start(
  p_period text,
  p_at timestamp with time zone
) returns timestamp with time zone
language sql immutable
as $fn$
  select date_trunc(p_period, p_at at time zone 'UTC') at time zone 'UTC'
$fn$;
grant execute on function ballast_private.budget_period_start(text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;

-- set_budget(tenant_id, limit_usd, period, on_exhausted, actor) -> void
-- Sets a tenant's spend limit (null limit: removes it, spending unlimited). Steps paused by the old limit are
-- woken at once (they reserve again and pause again if the new limit is spent too). Raises BA002 for a bad value.
create function ballast.set_budget(
  p_tenant_id text,
  p_limit_usd numeric,
  p_period text default 'month'::text,
  p_on_exhausted text default 'pause'::text,
  p_actor text default null::text
) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step record;
begin
  if coalesce(p_tenant_id, '') = '' then
    perform ballast_private.bad_argument('tenant_id', 'is empty', 'Name the tenant whose spending is limited.');
  end if;
  if p_limit_usd < 0 then
    perform ballast_private.bad_argument('limit_usd', format('%s is negative', p_limit_usd),
      'Pass the limit in USD (0 stops all priced calls), or null to remove the limit.');
  end if;
  if p_period is null or p_period not in ('day', 'week', 'month') then
    perform ballast_private.bad_argument('period', format('%L is not day, week or month', p_period), 'Pass ''day'', ''week'' or ''month''.');
  end if;
  if p_on_exhausted is null or p_on_exhausted not in ('pause', 'fail') then
    perform ballast_private.bad_argument('on_exhausted', format('%L is not pause or fail', p_on_exhausted),
      'Pass ''pause'' (the step waits for the next period or a raised limit) or ''fail''.');
  end if;
  perform ballast_private.set_actor(p_actor);
  if p_limit_usd is null then
    delete from ballast_private.budgets where tenant_id = p_tenant_id;
  else
    insert into ballast_private.budgets (tenant_id, limit_usd, period, on_exhausted)
    values (p_tenant_id, p_limit_usd, p_period, p_on_exhausted)
    on conflict (tenant_id) do update
      set limit_usd = excluded.limit_usd, period = excluded.period, on_exhausted = excluded.on_exhausted,
          updated_at = ballast.now();
  end if;
  -- Wake the steps the old limit paused (status retrying, error class budget_exhausted, due later).
  for v_step in
    select s.id, s.job_id from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where j.tenant_id = p_tenant_id and s.status = 'retrying' and s.error ->> 'class' = 'budget_exhausted'
     order by s.id for update of s
  loop
    update ballast_private.steps set next_run_at = ballast.now() where id = v_step.id;
    perform ballast_private.wake_step(v_step.id);
  end loop;
end
$fn$;
grant execute on function ballast.set_budget(text,numeric,text,text,text) to ballast_operator;

-- set_provider_cooldown(provider, model, until, reason): no call to provider/model before `until` (the later of
-- the existing and the new one wins). Used by record_model_call after a 429/529; callable by operators.
create function ballast.set_provider_cooldown(
  p_provider text,
  p_model text,
  p_until timestamp with time zone,
  p_reason text
) returns timestamp with time zone
language sql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
  insert into ballast_private.provider_cooldowns as c (provider, model, until, reason)
  values (p_provider, coalesce(p_model, '*'), p_until, coalesce(p_reason, 'operator'))
  on conflict (provider, model) do update
    set until = greatest(c.until, excluded.until),
        reason = case when excluded.until > c.until then excluded.reason else c.reason end,
        set_at = ballast.now(), hits = c.hits + 1
  returning until
$fn$;
grant execute on function ballast.set_provider_cooldown(text,text,timestamp with time zone,text) to ballast_operator;

-- begin_model_call(attempt_id, provider, model, input_tokens_estimate, max_output_tokens)
--   -> (cooldown_until, cooldown_reason, reservation_id, estimate_usd, budget_exhausted, budget_message, resume_at,
--       on_exhausted)
-- Before a provider call. 1. A cooldown in force for provider/model (or provider/'*'): returns cooldown_until and
-- reserves nothing; the caller must not call. 2. Prices the call at most: input estimate x input price + max output
-- tokens x output price. 3. With a budget for the job's tenant: reserves the estimate in the current period in one
-- statement (`spent + reserved + estimate <= limit`, under the period row's lock), so concurrent workers cannot
-- together pass the limit as long as each call costs at most its estimate (the worker passes an upper bound of the
-- input tokens: src/model/ladder.ts inputTokenBound); when it does not fit, budget_exhausted with a message naming
-- the tenant, the figures and resume_at (the next period).
-- Raises BA007 for an unknown attempt, BA002 for negative estimates.
create function ballast.begin_model_call(
  p_attempt_id bigint,
  p_provider text,
  p_model text,
  p_input_tokens_estimate integer,
  p_max_output_tokens integer
) returns table(cooldown_until timestamp with time zone, cooldown_reason text, reservation_id bigint, estimate_usd numeric, budget_exhausted boolean, budget_message text, resume_at timestamp with time zone, on_exhausted text, cooldown_ms integer)
language plpgsql volatile
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

-- record_model_call(attempt_id, reservation_id, call) -> (call_id, cost_usd, cooldown_until)
-- After a provider call (or a call not made because of a cooldown or budget): stores the trace row, prices it with
-- the price in force at its start (cost null when the model has no price), settles the reservation (reserved minus
-- the estimate, spent plus the actual), adds tokens and cost to the attempt, step and job, and after a rate limit
-- or overload (error_code rate_limited / overloaded) sets the provider/model's shared cooldown to the retry-after
-- the provider sent (call.retry_after_ms), or 2 s without one. Recorded whatever the attempt's state (a call made
-- by an attempt cancelled meanwhile still cost money). call: the JSON of a ModelCallRecord as src/model/ladder.ts
-- writes it; provider, requested_model, rung, started_at and ended_at are required. Raises BA007 for an unknown
-- attempt, BA002 for a call without those fields.
create function ballast.record_model_call(
  p_attempt_id bigint,
  p_reservation_id bigint,
  p_call jsonb
) returns table(call_id bigint, cost_usd numeric, cooldown_until timestamp with time zone, cooldown_ms integer, usage_missing boolean)
language plpgsql volatile
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

-- record_contract_outcome(attempt_id, outcome, detail) -> void
-- The ladder's verdict on a model step's attempt, written before the attempt is completed, failed or sent to
-- review: outcome valid_first_try | repaired | fell_back | degraded | rejected | review; detail: {"model",
-- "prompt", "fallback_used", "score", "calls", "reasks", "reason"}. Raises BA002 for an unknown outcome, BA007/BA008
-- as running_attempt.
create function ballast.record_contract_outcome(
  p_attempt_id bigint,
  p_outcome text,
  p_detail jsonb default '{}'::jsonb
) returns void
language plpgsql volatile
as $fn$
begin
  if p_outcome is null or p_outcome not in ('valid_first_try', 'repaired', 'fell_back', 'degraded', 'rejected', 'review') then
    perform ballast_private.bad_argument('outcome', format('%L is not a contract outcome', p_outcome),
      'Pass valid_first_try, repaired, fell_back, degraded, rejected or review.');
  end if;
  perform ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts a
     set contract_outcome = p_outcome, contract_detail = p_detail, model = p_detail ->> 'model',
         prompt_ref = p_detail ->> 'prompt', fallback_used = (p_detail ->> 'fallback_used')::boolean,
         quality_score = (p_detail ->> 'score')::numeric
   where a.id = p_attempt_id;
end
$fn$;

-- pause_for_budget(attempt_id, resume_at, message) -> step_status
-- The tenant's budget is spent and its policy is 'pause': the attempt ends 'parked' (not charged against
-- max_attempts) and the step is 'retrying' until resume_at (the next period), error class budget_exhausted with the
-- message; ballast.set_budget wakes it earlier when the limit changes. BA007/BA008 as running_attempt.
create function ballast.pause_for_budget(
  p_attempt_id bigint,
  p_resume_at timestamp with time zone,
  p_message text
) returns text
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'retrying', next_run_at = greatest(p_resume_at, v_now), attempt_offset = attempt_offset + 1,
         error = jsonb_build_object('class', 'budget_exhausted', 'code', 'budget_exhausted', 'message', p_message,
                                    'retryable', true, 'attempt', v_step.attempts)
   where id = v_step.id;
  perform ballast_private.wake_step(v_step.id, greatest(p_resume_at, v_now));
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return 'retrying';
end
$fn$;

-- request_review(attempt_id, proposed, reason, detail) -> (step_status, job_status)
-- A model step whose blast radius is high could not produce output it trusts (or its quality check routes to a
-- person): the attempt ends 'needs_review', the step waits in 'needs_review' with the proposed output (null when
-- there is none) and the reason; the job shows needs_review. A reviewer decides with ballast.resolve_review.
-- BA007/BA008 as running_attempt.
create function ballast.request_review(
  p_attempt_id bigint,
  p_proposed jsonb,
  p_reason text,
  p_detail jsonb default null::jsonb
) returns table(step_status text, job_status text)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
begin
  if coalesce(p_reason, '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why a person must decide (e.g. "quality score 0.41 below 0.7").');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'needs_review', finished_at = v_now where id = p_attempt_id;
  perform set_config('ballast.reason', p_reason, true);
  update ballast_private.steps
     set status = 'needs_review',
         review = jsonb_build_object('reason', p_reason, 'proposed', p_proposed, 'detail', p_detail,
                                     'requested_at', v_now, 'attempt_id', p_attempt_id)
   where id = v_step.id;
  perform set_config('ballast.reason', '', true);
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  return query select 'needs_review'::text, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;

-- output_contract(step) -> the JSON Schema of the step's output contract, from its pipeline version's definition
-- (for an item of a map step, the map step's).
create function ballast_private.output_contract(p_step ballast_private.steps) returns jsonb
language sql stable
as $fn$
  select d -> 'output_schema'
    from ballast_private.jobs j
    join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
    cross join lateral jsonb_array_elements(p.definition -> 'steps') d
   where j.id = p_step.job_id
     and d ->> 'name' = coalesce((select s.name from ballast_private.steps s where s.id = p_step.parent_step_id), p_step.name)
$fn$;

-- resolve_review(step_id, decision, output, reviewer, note) -> (step_status, job_status, queued_step_ids)
-- A person's decision on a step in needs_review:
--   'approve': the proposed output becomes the step's output (there must be one);
--   'edit':    `output` becomes the step's output;
--   'reject':  the step fails (error class review_rejected, the note as message) and its dependants are skipped.
-- An approved or edited output must satisfy the step's output contract (its JSON Schema): otherwise BA002 lists the
-- violations by path and nothing changes. The decision, reviewer and note are kept on the step (review) and in a
-- 'review_resolved' event with the reviewer as actor. Raises BA013 when the step is not in needs_review, BA002 for
-- a missing reviewer or an unknown decision, BA007 for an unknown step.
create function ballast.resolve_review(
  p_step_id bigint,
  p_decision text,
  p_output jsonb default null::jsonb,
  p_reviewer text default null::text,
  p_note text default null::text
) returns table(step_status text, job_status text, queued_step_ids bigint[])
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_output jsonb;
  v_errors jsonb;
  v_count int;
  v_queued bigint[] := '{}';
  v_status text;
begin
  if p_decision is null or p_decision not in ('approve', 'edit', 'reject') then
    perform ballast_private.bad_argument('decision', format('%L is not approve, edit or reject', p_decision),
      'Pass ''approve'' (keep the proposed output), ''edit'' (with p_output) or ''reject''.');
  end if;
  if coalesce(p_reviewer, '') = '' then
    perform ballast_private.bad_argument('reviewer', 'is empty', 'Name the person deciding; it is kept in the audit trail.');
  end if;
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('step %s does not exist', p_step_id);
  end if;
  -- Lock order: an item before its map step (finish_map), then the step.
  select * into v_step from ballast_private.steps s where s.id = p_step_id for update;
  if v_step.status <> 'needs_review' then
    raise exception using errcode = 'BA013',
      message = format('step %s ("%s" of job %s) is %s, not needs_review: there is nothing to decide', v_step.id,
                       v_step.name, v_step.job_id, v_step.status),
      hint = 'ballast.reviews lists the steps waiting for a decision.';
  end if;
  perform set_config('ballast.actor', 'reviewer:' || p_reviewer, true);
  perform set_config('ballast.reason', coalesce(p_note, ''), true);

  if p_decision = 'reject' then
    update ballast_private.steps
       set review = v_step.review || jsonb_build_object('decision', p_decision, 'reviewer', p_reviewer, 'note', p_note,
                                                        'resolved_at', v_now)
     where id = v_step.id;
    select * into v_step from ballast_private.steps s where s.id = p_step_id;
    v_status := ballast_private.settle_failure(v_step,
      jsonb_build_object('class', 'review_rejected', 'code', 'review_rejected', 'retryable', false,
                         'message', coalesce('rejected by ' || p_reviewer || ': ' || nullif(p_note, ''), 'rejected by ' || p_reviewer),
                         'attempt', v_step.attempts),
      false, null, v_now);
  else
    v_output := case when p_decision = 'approve' then v_step.review -> 'proposed' else p_output end;
    if p_decision = 'approve' and (v_output is null or v_output = 'null'::jsonb) then
      perform ballast_private.bad_argument('decision', 'approve needs a proposed output and this review has none',
        'Pass decision ''edit'' with the output to use, or ''reject''.');
    end if;
    if p_decision = 'edit' and p_output is null then
      perform ballast_private.bad_argument('output', 'is null', 'Pass the corrected output (JSON) with decision ''edit''.');
    end if;
    select jsonb_agg(jsonb_build_object('path', 'output' || case when e.path = '' then ''
                                                                 when left(e.path, 1) = '[' then e.path
                                                                 else '.' || e.path end,
                                        'message', e.message)), count(*)
      into v_errors, v_count
      from ballast.json_schema_errors(ballast_private.output_contract(v_step), v_output) e;
    if v_count > 0 then
      raise exception using
        errcode = 'BA002',
        message = format('output does not satisfy the contract of step "%s" (%s problem%s): %s', v_step.name, v_count,
                         case when v_count > 1 then 's' else '' end,
                         (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ')
                            from jsonb_array_elements(v_errors) e)),
        detail = v_errors::text,
        hint = 'Correct the listed fields and resolve again; nothing was changed.';
    end if;
    update ballast_private.steps
       set status = 'succeeded', output = v_output, error = null, finished_at = v_now,
           review = v_step.review || jsonb_build_object('decision', p_decision, 'reviewer', p_reviewer, 'note', p_note,
                                                        'resolved_at', v_now)
     where id = v_step.id;
    v_queued := ballast_private.queue_dependants(v_step.job_id, v_step.name, v_now, true);
    if v_step.parent_step_id is not null then
      perform ballast_private.finish_map(v_step.parent_step_id);
    end if;
    v_status := 'succeeded';
  end if;
  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data)
  values (v_step.job_id, v_step.id, 'review_resolved', v_status, 'reviewer:' || p_reviewer, nullif(p_note, ''),
          jsonb_build_object('decision', p_decision, 'reviewer', p_reviewer,
                             'edited', p_decision = 'edit' and p_output is distinct from v_step.review -> 'proposed'));
  return query select v_status, ballast_private.refresh_job_status(v_step.job_id), coalesce(v_queued, '{}'::bigint[]);
end
$fn$;
grant execute on function ballast.resolve_review(bigint,text,jsonb,text,text) to ballast_operator;
comment on function ballast.resolve_review(bigint,text,jsonb,text,text) is 'Decide a step in needs_review: approve (keep the proposed output), edit (use the output given, checked against the contract) or reject (fail the step). Operators only.';

-- cooldown_left_ms(until, now) -> the milliseconds from now to until (0 when past), capped at 7 days (an operator's
-- cooldown may end at 'infinity'); null for a null until.
create function ballast_private.cooldown_left_ms(
  p_until timestamp with time zone,
  p_now timestamp with time zone
) returns integer
language sql immutable
as $fn$
  select case when p_until is null then null
              else ceil(greatest(extract(epoch from (least(p_until, p_now + interval '7 days') - p_now)), 0) * 1000)::integer
         end
$fn$;

-- pause_for_cooldown(attempt_id, provider, model, message) -> (step_status, next_run_at)
-- The attempt met a cooldown of provider/model before it made any provider call (src/model/ladder.ts): the attempt
-- ends 'parked' with error class and code 'cooldown' and the message (not charged against max_attempts: the
-- step's attempt_offset grows by one, as pause_for_budget does), and the step is 'retrying' (error class cooldown)
-- until the latest cooldown in force for provider/model or the whole provider ('*') ends, at most 7 days from now,
-- plus a bounded jitter as settle_failure (0006_execution) adds to a Retry-After (uniform in [0, min(max(wait / 4, 250
-- ms), 60 s))), so the steps a cooldown stopped together do not all call again at the same instant. A cooldown that has
-- ended meanwhile: due at once, no jitter. Returns 'retrying' and the step's next_run_at. BA007/BA008 as
-- running_attempt.
create function ballast.pause_for_cooldown(
  p_attempt_id bigint,
  p_provider text,
  p_model text,
  p_message text
) returns table(step_status text, next_run_at timestamp with time zone)
language plpgsql volatile
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
