-- Up Migration
-- Paid once (issue 16, item 6): a model answer already paid for is not bought again.
--
-- What: every model call row carries its request key (a SHA-256 of what was asked: provider:model, system prompt,
-- messages, output JSON Schema, temperature, max output tokens, structured mode; computed by src/model/reuse.ts)
-- and whether raw_output holds the whole answer exactly as received (output_complete). Before a provider call the
-- worker asks ballast.reusable_model_call for a stored usable answer to the same request:
--   - of the same step, from any earlier attempt (a retry after a crash or after code that threw once the call had
--     returned; the attempts of a replay), unless the step was replayed with p_fresh_calls since that answer;
--   - with the cache of the job's pipeline on (ballast.set_model_cache(pipeline, ttl)), of any job of that pipeline
--     and the same tenant (never another tenant's), at most ttl old.
-- Usable: not itself a reuse, the whole text stored (not cut, not pruned), and no error other than a failed quality
-- check (the contract and the quality checks run again on it as on a fresh answer). The reuse is a row too
-- (reused_from, reuse_kind retry | replay | cache, cost 0, no tokens, cost_saved_usd = the original's cost), with no
-- budget reserved; ballast.model_call_savings sums what was saved.
--
-- Why: an attempt that made a paid call and then died (SIGKILL, a lost lease) or threw (a quality score function,
-- a database error) used to call the provider again on retry, and paid again. The call row is now written as soon
-- as the answer arrives, before any user code (quality checks) runs: ballast.record_call_quality adds their verdict
-- after.
--
-- Cost: plain steps nothing. A model call: one lookup before it (an index probe on request_key, partial: only
-- complete original answers), and for steps with quality checks one more statement after it. replay_step and
-- replay_job get a defaulted p_fresh_calls (dropped and created again: an overload would make calls that omit it
-- ambiguous), and note the replayed steps' model call watermark in step_call_marks (one row a replayed step).

alter table ballast_private.model_calls
  add column request_key text,
  add column output_complete boolean not null default false,
  add column reused_from bigint,
  add column reuse_kind text,
  add column cost_saved_usd numeric(14,8),
  add constraint call_reuse_kind_known check (reuse_kind in ('retry', 'replay', 'cache'));
-- One probe finds a step's own earlier answer and a cached one (request_key is a SHA-256: a few rows per key at most).
create index model_calls_request_key on ballast_private.model_calls (request_key, tenant_id)
  where request_key is not null and reused_from is null and output_complete;

create table ballast_private.step_call_marks (
  step_id bigint primary key references ballast_private.steps (id) on delete cascade,
  -- The highest model call id when the step was last replayed: an answer up to it reused by the step is a replay's.
  replayed_through bigint not null,
  -- The same at its last replay with p_fresh_calls: answers up to it are never reused for this step.
  fresh_through bigint
);
comment on table ballast_private.step_call_marks is 'Paid once (0042): model call watermarks of replayed steps (replay_step).';

create table ballast_private.model_cache (
  pipeline text primary key,
  ttl interval not null,
  set_by text,
  set_at timestamptz not null default ballast.now(),
  constraint model_cache_ttl_range check (ttl > interval '0' and ttl <= interval '366 days')
);
comment on table ballast_private.model_cache is 'Paid once (0042): pipelines whose model answers are reused across their jobs (same tenant), and for how long.';

-- reuse_kind(step_id, call) -> 'cache' when the call is another step's, 'replay' when it was made before the step's
-- last replay, else 'retry'.
create function ballast_private.reuse_kind(p_step_id bigint, p_call ballast_private.model_calls) returns text
language sql stable
as $fn$
  select case when p_call.step_id <> p_step_id then 'cache'
              when p_call.id <= coalesce((select m.replayed_through from ballast_private.step_call_marks m
                                           where m.step_id = p_step_id), 0) then 'replay'
              else 'retry' end
$fn$;

-- mark_replayed_calls(job_id, step_ids, fresh) -> void
-- Called by replay_step for the steps it starts over: notes the highest model call id so far (replayed_through),
-- and with fresh also as fresh_through, after which those steps reuse no answer from before. Without fresh, only
-- steps that made model calls get a row.
create function ballast_private.mark_replayed_calls(p_job_id bigint, p_step_ids bigint[], p_fresh boolean) returns void
language plpgsql volatile
as $fn$
declare
  v_last bigint := coalesce((select max(c.id) from ballast_private.model_calls c), 0);
begin
  insert into ballast_private.step_call_marks as m (step_id, replayed_through, fresh_through)
  select s.id, v_last, case when p_fresh then v_last end
    from unnest(p_step_ids) s(id)
   where p_fresh or exists (select 1 from ballast_private.model_calls c where c.job_id = p_job_id and c.step_id = s.id)
  on conflict (step_id) do update
    set replayed_through = excluded.replayed_through, fresh_through = coalesce(excluded.fresh_through, m.fresh_through);
end
$fn$;

-- reusable_model_call(attempt_id, request_key) -> (call_id, reuse_kind, raw_output, finish_reason_raw, finish_reason,
--   returned_model, provider_kind, cost_usd); no row when nothing can be reused.
-- The stored answer the attempt may use instead of calling its provider with this request (see the header): the
-- step's own latest first (retry or replay), else, with the pipeline's cache on, the latest of its tenant's jobs of
-- that pipeline younger than the cache's ttl by ballast.now(). Never an answer of the attempt itself (a fallback to the
-- same model asks again on purpose), never one from before a replay with fresh calls. The worker parses and checks it
-- as if it had just arrived. BA002 for an empty key, BA007 for an unknown attempt.
create function ballast.reusable_model_call(p_attempt_id bigint, p_request_key text)
returns table(call_id bigint, reuse_kind text, raw_output text, finish_reason_raw text, finish_reason text,
              returned_model text, provider_kind text, cost_usd numeric)
language plpgsql stable
as $fn$
declare
  v_attempt ballast_private.attempts;
  v_tenant text;
  v_pipeline text;
  v_ttl interval;
  v_fresh bigint;
  v_call ballast_private.model_calls;
begin
  if coalesce(p_request_key, '') = '' then
    perform ballast_private.bad_argument('request_key', 'is empty', 'Pass the request key src/model/reuse.ts computes.');
  end if;
  select a.* into v_attempt from ballast_private.attempts a where a.id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  select j.tenant_id, j.pipeline into v_tenant, v_pipeline from ballast_private.jobs j where j.id = v_attempt.job_id;
  select m.ttl into v_ttl from ballast_private.model_cache m where m.pipeline = v_pipeline;
  v_fresh := coalesce((select m.fresh_through from ballast_private.step_call_marks m where m.step_id = v_attempt.step_id), 0);
  select c.* into v_call
    from ballast_private.model_calls c
   where c.request_key = p_request_key and c.tenant_id = v_tenant
     and c.reused_from is null and c.output_complete and c.raw_output is not null
     and (c.error_class is null or c.error_class = 'quality')
     and c.id > v_fresh and c.attempt_id <> p_attempt_id
     and (c.step_id = v_attempt.step_id
          or (v_ttl is not null and c.created_at > ballast.now() - v_ttl
              and exists (select 1 from ballast_private.jobs j where j.id = c.job_id and j.pipeline = v_pipeline)))
   order by c.step_id = v_attempt.step_id desc, c.id desc
   limit 1;
  if v_call.id is not null then
    return query select v_call.id, ballast_private.reuse_kind(v_attempt.step_id, v_call), v_call.raw_output,
                        v_call.finish_reason_raw, v_call.finish_reason, v_call.returned_model, v_call.provider_kind,
                        v_call.cost_usd;
  end if;
end
$fn$;

-- record_call_quality(call_id, score, quality, miss) -> void
-- The verdict of a step's quality checks on an answer already recorded (the call is stored before they run, so
-- that an answer survives a check that throws or a worker that dies meanwhile): score, the rules' results, and
-- when the checks failed the miss {class, code, message} as the call's error. BA007 for an unknown call,
-- BA007/BA008 as running_attempt for an attempt that is no longer running.
create function ballast.record_call_quality(p_call_id bigint, p_score numeric, p_quality jsonb, p_miss jsonb)
returns void
language plpgsql volatile
as $fn$
declare
  v_attempt_id bigint;
begin
  select c.attempt_id into v_attempt_id from ballast_private.model_calls c where c.id = p_call_id;
  if v_attempt_id is null then
    raise exception using errcode = 'BA007', message = format('model call %s does not exist', p_call_id);
  end if;
  perform ballast_private.running_attempt(v_attempt_id);
  update ballast_private.model_calls c
     set score = p_score, quality = p_quality, error_class = coalesce(p_miss ->> 'class', c.error_class),
         error_code = coalesce(p_miss ->> 'code', c.error_code), error_message = coalesce(p_miss ->> 'message', c.error_message)
   where c.id = p_call_id;
end
$fn$;

-- set_model_cache(pipeline, ttl, actor) -> (pipeline, ttl)
-- Turns on (or changes) the exact-match answer cache of a pipeline (every version): a model step of its jobs reuses
-- an answer its tenant's jobs of that pipeline got to the same request within ttl, instead of calling the provider.
-- Raises BA004 for a pipeline not registered, BA002 for a ttl not above 0 or over 366 days. Operators only.
create function ballast.set_model_cache(p_pipeline text, p_ttl interval, p_actor text default null)
returns table(pipeline text, ttl interval)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
begin
  if not exists (select 1 from ballast_private.pipelines p where p.name = p_pipeline) then
    raise exception using errcode = 'BA004', message = format('pipeline %L is not registered', p_pipeline),
      hint = 'A pipeline is registered when a worker that defines it starts; ballast.pipelines lists them.';
  end if;
  if p_ttl is null or not (p_ttl > interval '0' and p_ttl <= interval '366 days') then
    perform ballast_private.bad_argument('ttl', format('%s is not above 0 and at most 366 days', coalesce(p_ttl::text, 'null')),
      'Pass how long an answer may be reused, e.g. ''1 day''; ballast.stop_model_cache turns the cache off.');
  end if;
  insert into ballast_private.model_cache as m (pipeline, ttl, set_by, set_at)
  values (p_pipeline, p_ttl, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (pipeline) do update set ttl = excluded.ttl, set_by = excluded.set_by, set_at = excluded.set_at;
  return query select m.pipeline, m.ttl from ballast_private.model_cache m where m.pipeline = p_pipeline;
end
$fn$;

-- stop_model_cache(pipeline) -> whether it was on. A retry still reuses its step's own answers. Operators only.
create function ballast.stop_model_cache(p_pipeline text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  delete from ballast_private.model_cache m where m.pipeline = p_pipeline;
  return found;
end
$fn$;

-- record_model_call(attempt_id, reservation_id, call) -> (call_id, cost_usd, cooldown_until, cooldown_ms, usage_missing)
-- After a provider call (or a call not made because of a cooldown or budget): stores the trace row, prices it with
-- the price in force at its start (cost null when the model has no price), settles the reservation (reserved minus
-- the estimate, spent plus the actual), adds tokens and cost to the attempt, step and job, and after a rate limit
-- or overload (error_code rate_limited / overloaded) sets the provider/model's shared cooldown to the retry-after
-- the provider sent (call.retry_after_ms), or 2 s without one. Recorded whatever the attempt's state (a call made
-- by an attempt cancelled meanwhile still cost money). call: the JSON of a ModelCallRecord as src/model/ladder.ts
-- writes it; provider, requested_model, rung, started_at and ended_at are required; request_key and
-- output_complete (0042) are stored as given. With call.reused_from (0042; a call ballast.reusable_model_call found):
-- the answer was not bought: cost 0, no tokens, no price, reuse_kind from ballast_private.reuse_kind and
-- cost_saved_usd the original's cost. Raises BA007 for an unknown attempt, BA002 for a call without those fields or
-- a reused_from that is not an original answer of the same tenant to the same request key.
create or replace function ballast.record_model_call(p_attempt_id bigint, p_reservation_id bigint, p_call jsonb) returns TABLE(call_id bigint, cost_usd numeric, cooldown_until timestamp with time zone, cooldown_ms integer, usage_missing boolean)
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
  v_reused ballast_private.model_calls;
  v_kind text;
  v_saved numeric;
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
  if p_call ->> 'reused_from' is not null then
    -- A stored answer used again (ballast.reusable_model_call): nothing was bought, so nothing is charged or
    -- counted; the row says what it saved. Only an answer of the same tenant and request can be named.
    select c.* into v_reused from ballast_private.model_calls c where c.id = (p_call ->> 'reused_from')::bigint;
    if v_reused.id is null or v_reused.tenant_id <> v_tenant or v_reused.request_key is distinct from p_call ->> 'request_key'
       or v_reused.reused_from is not null then
      perform ballast_private.bad_argument('call', format('reused_from %s is not a stored answer of tenant %s to this request',
                                                          p_call ->> 'reused_from', v_tenant),
        'Pass a call that ballast.reusable_model_call found for this attempt and request key.');
    end if;
    v_kind := ballast_private.reuse_kind(v_attempt.step_id, v_reused);
    v_saved := v_reused.cost_usd;
    v_cost := 0;
    v_in := null;
    v_out := null;
    v_usage_missing := false;
  else
    select * into v_price from ballast.model_price(p_call ->> 'provider', p_call ->> 'requested_model', v_started);
    if v_price.provider is null then
      select * into v_price from ballast.model_price(p_call ->> 'provider', v_model, v_started);
    end if;
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
    usage_missing, request_key, output_complete, reused_from, reuse_kind, cost_saved_usd)
  values (
    p_attempt_id, v_attempt.step_id, v_attempt.job_id, v_tenant, p_call ->> 'rung',
    coalesce((p_call ->> 'model_index')::int, 0), p_call ->> 'provider', p_call ->> 'provider_kind',
    p_call ->> 'requested_model', p_call ->> 'returned_model', p_call ->> 'prompt_name',
    (p_call ->> 'prompt_version')::int, p_call ->> 'prompt_hash', p_call -> 'parameters', v_started,
    (p_call ->> 'first_token_at')::timestamptz, (p_call ->> 'ended_at')::timestamptz,
    (p_call ->> 'latency_ms')::numeric, p_call ->> 'finish_reason_raw', p_call ->> 'finish_reason', v_in, v_out,
    case when v_kind is null then (p_call ->> 'cached_input_tokens')::int end,
    case when v_kind is null then (p_call ->> 'cache_write_tokens')::int end,
    case when v_kind is null then (p_call ->> 'reasoning_tokens')::int end, v_cost, v_price.valid_from, p_call ->> 'error_class',
    p_call ->> 'error_code', p_call ->> 'error_message', (p_call ->> 'retryable')::boolean,
    (p_call ->> 'http_status')::int, p_call ->> 'request_id', p_call ->> 'response_id', p_call ->> 'raw_output',
    p_call -> 'validation_issues', p_call ->> 'repair_method', (p_call ->> 'score')::numeric, p_call -> 'quality',
    v_usage_missing, p_call ->> 'request_key', coalesce((p_call ->> 'output_complete')::boolean, false), v_reused.id,
    v_kind, v_saved)
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


-- replay_step(step_id, reason, force, actor, fresh_calls) -> (job_id, replayed_step_ids, job_status)
-- Runs a finished step again, and after it every step that depends on it; the outputs of everything upstream are
-- reused. The step must be failed or cancelled, or succeeded with force => true (re-running finished work is a
-- decision, not a default). Each replayed step gets a fresh attempt budget; its earlier attempts stay in history.
-- Model answers the replayed steps got before are reused (reuse_kind 'replay'; 0042) unless p_fresh_calls => true,
-- which makes them call their providers again. Writes a 'step_replayed' event with actor and reason (and
-- fresh_calls: true when asked). Raises BA011 for a step that is not finished (replaying a running step would run it
-- twice at once), BA002 for a succeeded step without force or a skipped step (replay the failed step it depends
-- on), BA007 for an unknown step.
drop function ballast.replay_step(bigint, text, boolean, text);
create function ballast.replay_step(p_step_id bigint, p_reason text DEFAULT NULL::text, p_force boolean DEFAULT false, p_actor text DEFAULT NULL::text,
                                    p_fresh_calls boolean DEFAULT false) returns TABLE(job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_ids bigint[];
  v_id bigint;
  v_r record;
  v_parent ballast_private.steps;
begin
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('step %s does not exist', p_step_id);
  end if;
  perform ballast_private.set_actor(p_actor);
  perform set_config('ballast.reason', coalesce(p_reason, ''), true);
  -- Items of map steps first, then the other steps, each by id (the order cancel_job and finish_map use).
  perform 1 from ballast_private.steps s where s.job_id = v_step.job_id order by s.parent_step_id is null, s.id for update;
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if v_step.status in ('pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review') then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s" of job %s) is %s: only a finished step can be replayed', v_step.id, v_step.name,
                       v_step.job_id, v_step.status),
      hint = case when v_step.status = 'running' then 'Wait for it to finish, or cancel the job first.'
                  else 'It will run by itself; replay it once it has finished.' end;
  end if;
  if v_step.status = 'succeeded' and not p_force then
    perform ballast_private.bad_argument('force', format('step %s ("%s") succeeded; replaying it repeats its work', v_step.id, v_step.name),
      'Pass p_force => true to run it again anyway.');
  end if;
  if v_step.status = 'skipped' then
    perform ballast_private.bad_argument('step_id', format('step %s ("%s") was skipped because a step it depends on failed', v_step.id, v_step.name),
      'Replay the failed step it depends on; this one follows.');
  end if;

  perform set_config('ballast.replay', 'on', true);
  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data)
  values (v_step.job_id, v_step.id, 'step_replayed', v_step.status, current_setting('ballast.actor', true),
          nullif(p_reason, ''), jsonb_build_object('previous_status', v_step.status, 'attempts', v_step.attempts,
                                                   'force', p_force)
                             || case when p_fresh_calls then '{"fresh_calls": true}'::jsonb else '{}'::jsonb end);

  -- An item of a map step (0008) is replayed alone; its map step waits for it again and what follows the map
  -- step runs again. Otherwise the step and everything depending on it, directly or not.
  select p.* into v_parent from ballast_private.steps p where p.id = v_step.parent_step_id;
  with recursive dependants(name) as (
    select coalesce(v_parent.name, v_step.name)
    union
    select d.name from ballast_private.steps d join dependants p on p.name = any(d.depends_on)
     where d.job_id = v_step.job_id)
  select array_agg(s.id order by s.id) into v_ids
    from ballast_private.steps s
   where s.job_id = v_step.job_id and s.parent_step_id is null and s.name in (select name from dependants);
  if v_parent.id is not null then
    v_ids := v_ids || v_step.id;
  end if;
  select s.id, s.name into v_r from ballast_private.steps s
   where s.id = any(v_ids) and (v_parent.id is null or s.id <> v_parent.id)
     and exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id)
   order by s.id limit 1;
  if found then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s") is a map step that already ran its items: replaying it, or a step before it, is not supported yet',
                       v_r.id, v_r.name),
      hint = 'Replay its failed items instead (ballast.step_items lists them).';
  end if;

  select s.id, s.name, s.status into v_r from ballast_private.steps s
   where s.id = any(v_ids) and s.id <> v_step.id
     and s.status in ('queued', 'running', 'retrying', 'waiting', 'needs_review')
     and (v_parent.id is null or s.id <> v_parent.id or s.status <> 'waiting')
   order by s.id limit 1;
  if found then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s") depends on step %s and is %s: replaying now would run it twice', v_r.id,
                       v_r.name, v_step.id, v_r.status),
      hint = 'Wait until it has finished, or cancel the job first.';
  end if;

  -- Paid once (0042): how far the model calls of the replayed steps go, so that an answer reused from before now
  -- counts as a replay's (reuse_kind), and, with p_fresh_calls, is not reused at all.
  perform ballast_private.mark_replayed_calls(v_step.job_id, v_ids, p_fresh_calls);

  -- The replayed step and its dependants start over: outputs and errors cleared, attempts budget renewed, the
  -- dependency counter recomputed from the statuses upstream (only the replayed set changes).
  update ballast_private.steps s
     set deps_remaining = (select count(*) from ballast_private.steps d
                            where d.job_id = s.job_id and d.name = any(s.depends_on)
                              and (d.status <> 'succeeded' or d.id = any(v_ids))),
         attempt_offset = s.attempts, output = null, error = null, progress = null, next_run_at = null,
         finished_at = null, wait_key = null, wait_deadline = null, wait_on_timeout = null
   where s.id = any(v_ids);
  update ballast_private.steps s
     set status = case when s.deps_remaining = 0 then 'queued' else 'pending' end,
         queued_at = case when s.deps_remaining = 0 then v_now else s.queued_at end
   where s.id = any(v_ids) and s.id is distinct from v_parent.id;
  if v_parent.id is not null then
    -- The map step keeps its attempts and waits for the replayed item (its output is rebuilt when all are final).
    update ballast_private.steps s
       set status = 'waiting', wait_key = null, attempt_offset = v_parent.attempt_offset,
           deps_remaining = 0
     where s.id = v_parent.id and s.status <> 'waiting';
  end if;
  for v_id in select s.id from ballast_private.steps s where s.id = any(v_ids) and s.status = 'queued' loop
    perform ballast_private.wake_step(v_id);
  end loop;
  return query select v_step.job_id, v_ids, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;


-- replay_job(job_id, from_step, reason, actor, fresh_calls) -> (job_id, replayed_step_ids, job_status)
-- With from_step: replays that step (forced if it succeeded) and what depends on it. Without: replays every failed
-- or cancelled step (and, through them, their skipped or cancelled dependants). p_fresh_calls as replay_step's.
-- Raises BA007 for an unknown job or step name, BA011 when the job has nothing finished to replay (nothing failed or
-- cancelled).
drop function ballast.replay_job(bigint, text, text, text);
create function ballast.replay_job(p_job_id bigint, p_from_step text DEFAULT NULL::text, p_reason text DEFAULT NULL::text, p_actor text DEFAULT NULL::text,
                                   p_fresh_calls boolean DEFAULT false) returns TABLE(job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step_id bigint;
  v_all bigint[] := '{}';
  v_r record;
begin
  perform 1 from ballast_private.jobs j where j.id = p_job_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  if p_from_step is not null then
    select s.id into v_step_id from ballast_private.steps s where s.job_id = p_job_id and s.name = p_from_step;
    if v_step_id is null then
      raise exception using errcode = 'BA007', message = format('job %s has no step %L', p_job_id, p_from_step),
        hint = 'Steps: ' || (select string_agg(name, ', ' order by id) from ballast_private.steps where steps.job_id = p_job_id);
    end if;
    return query select * from ballast.replay_step(v_step_id, p_reason, true, p_actor, p_fresh_calls);
    return;
  end if;
  for v_step_id in
    -- Map steps are replayed through their failed items (their own failure is the items').
    select s.id from ballast_private.steps s
     where s.job_id = p_job_id and s.status in ('failed', 'cancelled')
       and not exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id)
     order by s.id
  loop
    -- A cancelled step may already have been reset as a dependant of an earlier one in this loop.
    continue when (select status from ballast_private.steps where id = v_step_id) not in ('failed', 'cancelled');
    select * into v_r from ballast.replay_step(v_step_id, p_reason, false, p_actor, p_fresh_calls);
    v_all := v_all || v_r.replayed_step_ids;
  end loop;
  if cardinality(v_all) = 0 then
    raise exception using errcode = 'BA011', message = format('job %s has no failed or cancelled step to replay', p_job_id),
      hint = 'Name a step (p_from_step) to run it and what follows again.';
  end if;
  return query select p_job_id, v_all, (select j.status from ballast_private.jobs j where j.id = p_job_id);
end
$fn$;


-- ballast.model_calls with the columns of 0042 at the end (a view keeps its columns in order).
create or replace view ballast.model_calls with (security_invoker = true) as
 select c.id, c.attempt_id, c.step_id, c.job_id, c.tenant_id, c.rung, c.model_index, c.provider, c.provider_kind,
        c.requested_model, c.returned_model, c.prompt_name, c.prompt_version, c.prompt_hash, c.parameters,
        c.started_at, c.first_token_at, c.ended_at, c.latency_ms,
        (extract(epoch from (c.first_token_at - c.started_at)) * (1000)::numeric) as first_token_ms,
        c.finish_reason_raw, c.finish_reason, c.input_tokens, c.output_tokens, c.cached_input_tokens,
        c.cache_write_tokens, c.reasoning_tokens, c.cost_usd, c.price_valid_from,
        ((c.cost_usd is null) and (c.error_class is distinct from 'cooldown') and (c.error_class is distinct from 'budget')) as price_missing,
        c.error_class, c.error_code, c.error_message, c.retryable, c.http_status, c.request_id, c.response_id,
        c.raw_output, c.validation_issues, c.repair_method, c.score, c.quality, c.usage_missing,
        c.request_key, c.output_complete, c.reused_from, c.reuse_kind, c.cost_saved_usd
   from ballast_private.model_calls c;
comment on column ballast.model_calls.request_key is 'The SHA-256 of what was asked (model, system prompt, messages, output schema, temperature, max output tokens, structured mode): calls with the same key asked the same. Null: not recorded (a call before 0042).';
comment on column ballast.model_calls.output_complete is 'True when rawOutput holds the whole answer exactly as received (not cut, nothing escaped), so it can be reused.';
comment on column ballast.model_calls.reused_from is 'The call whose stored answer this one used instead of calling the provider (it may have been pruned since). Null: a real call.';
comment on column ballast.model_calls.reuse_kind is 'Why a stored answer was used: retry (an earlier attempt of the step got it), replay (it was got before the step was replayed) or cache (another job of the pipeline got it; ballast.set_model_cache). Null: a real call.';
comment on column ballast.model_calls.cost_saved_usd is 'For a reused answer: what the original call cost, in US dollars, not spent again. Null: a real call, or an unpriced original.';

create view ballast.model_call_savings with (security_invoker = true) as
  select j.pipeline, c.tenant_id, c.provider, c.requested_model as model, c.reuse_kind,
         count(*) as reused_calls, coalesce(sum(c.cost_saved_usd), 0) as cost_saved_usd,
         min(c.started_at) as first_at, max(c.started_at) as last_at
    from ballast_private.model_calls c
    join ballast_private.jobs j on j.id = c.job_id
   where c.reused_from is not null
   group by j.pipeline, c.tenant_id, c.provider, c.requested_model, c.reuse_kind;
comment on view ballast.model_call_savings is 'Model answers reused instead of bought again (paid once), and what that saved, by pipeline, tenant, model and reuse kind.';
comment on column ballast.model_call_savings.pipeline is 'The pipeline of the jobs that reused answers.';
comment on column ballast.model_call_savings.tenant_id is 'Their tenant.';
comment on column ballast.model_call_savings.provider is 'The provider not called again.';
comment on column ballast.model_call_savings.model is 'The model not called again.';
comment on column ballast.model_call_savings.reuse_kind is 'retry, replay or cache (see ballast.model_calls.reuse_kind).';
comment on column ballast.model_call_savings.reused_calls is 'How many calls were not made.';
comment on column ballast.model_call_savings.cost_saved_usd is 'What they would have cost, in US dollars (the originals'' cost).';
comment on column ballast.model_call_savings.first_at is 'The first reuse.';
comment on column ballast.model_call_savings.last_at is 'The latest reuse.';
create trigger refuse_write instead of insert or update or delete on ballast.model_call_savings
  for each row execute function ballast_private.refuse_view_write();

create view ballast.model_cache_settings with (security_invoker = true) as
  select m.pipeline, m.ttl, m.set_by, m.set_at from ballast_private.model_cache m;
comment on view ballast.model_cache_settings is 'Pipelines whose model answers are reused across their jobs of the same tenant (ballast.set_model_cache).';
comment on column ballast.model_cache_settings.pipeline is 'The pipeline (every version).';
comment on column ballast.model_cache_settings.ttl is 'How old a stored answer may be to be reused.';
comment on column ballast.model_cache_settings.set_by is 'Who turned it on or set the ttl.';
comment on column ballast.model_cache_settings.set_at is 'When.';
create trigger refuse_write instead of insert or update or delete on ballast.model_cache_settings
  for each row execute function ballast_private.refuse_view_write();

grant select on ballast.model_call_savings to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast_private.model_cache to ballast_operator, ballast_reporter;
grant select on ballast.model_cache_settings to ballast_operator, ballast_reporter;
revoke execute on function ballast.set_model_cache(text, interval, text) from public;
revoke execute on function ballast.stop_model_cache(text) from public;
grant execute on function ballast.set_model_cache(text, interval, text) to ballast_operator;
grant execute on function ballast.stop_model_cache(text) to ballast_operator;
grant execute on function ballast.replay_job(bigint, text, text, text, boolean) to ballast_operator;
grant execute on function ballast.replay_step(bigint, text, boolean, text, boolean) to ballast_operator;
comment on function ballast.replay_job(bigint, text, text, text, boolean) is 'Run the failed or cancelled steps of a job again, or everything from a named step on; model answers got before are reused unless fresh_calls. Operators only.';
comment on function ballast.replay_step(bigint, text, boolean, text, boolean) is 'Run a finished step again, and the steps that depend on it. A succeeded step needs force; model answers got before are reused unless fresh_calls. Operators only.';
comment on function ballast.set_model_cache(text, interval, text) is 'Reuse model answers across the jobs of a pipeline (same tenant) for ttl. Operators only.';
comment on function ballast.stop_model_cache(text) is 'Stop reusing model answers across the jobs of a pipeline. Operators only.';

-- Down Migration
