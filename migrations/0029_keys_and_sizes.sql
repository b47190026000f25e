-- Up Migration
--
-- 0029: keys and tenants limited in bytes, a maximum input size per pipeline, long concurrency keys, and event keys
-- scoped by tenant (issue 13, "Every cost bounded" and "Tenancy and trust").
--
-- 1. Keys and tenants in bytes. Tenant ids were limited to 200 characters and keys to 500, but a btree index row holds
--    at most 2,704 bytes: a tenant and an idempotency key at their maxima in 4-byte characters (800 + 2,000 bytes) made
--    the unique index (tenant_id, idempotency_key) fail with SQLSTATE 54000 ("index row size exceeds maximum") instead
--    of a BA002 naming the argument. The limits are now in bytes of UTF-8: tenant ids 1 to 200 bytes, idempotency
--    keys, event keys and effect keys 1 to 500 bytes (for ASCII, the same numbers as before). Keys and tenant ids are
--    compared byte for byte: Postgres does not normalise Unicode, so 'é' as one code point (NFC) and as 'e' plus a
--    combining accent (NFD) are two different keys. The table checks are added NOT VALID: rows written before keep
--    their longer values (they fit their indexes, or they could not have been written); new rows are checked.
-- 2. A maximum input size per pipeline. Validation costs grow with the input, and a 20 MB input held a backend for
--    minutes. Every submission path (submit_job, INSERT INTO ballast.jobs, submit_jobs) now measures the input first:
--    octet_length(input::text), the size of its JSON text as Postgres prints it, against the pipeline's
--    max_input_bytes (its definition's "max_input_bytes", set with pipeline({ maxInputBytes }), 1 to 67,108,864;
--    default 1,048,576 = 1 MiB). Too large: BA002 naming the input, before any validation. Numbers beyond the range
--    of a 64-bit float are refused too: Postgres prints numbers in full, so '1e131071' (8 bytes) prints as 131,072
--    digits, and 1,000 of them (16 kB) made a 131 MB text for every later print (the request hash, the worker's read). submit_jobs also refuses
--    a batch whose inputs add up to more than 16 MiB (or one input's maximum, when that is larger). Measured
--    (PostgreSQL 15, load 1.5): refusing a 20 MB input takes ~0.1 s (printing it to measure it); the size check adds
--    ~1 us to a 200-byte submit.
-- 3. Long concurrency keys. A step's concurrency key 'input.<path>' copies that input value into an indexed column
--    (steps_queued_concurrency_idx): a value over ~2.7 kB failed the submission with 54000. Values longer than 1,000
--    bytes are now replaced by 'sha256:' and their hash (equal values still share a group).
-- 4. Event keys by tenant. ballast_private.signals was keyed by the key alone: a step of tenant A waiting for
--    'order:1' was woken by the event meant for tenant B, with B's payload. Signals are now keyed by (tenant_id,
--    key); send_event delivers to the steps of one tenant: a restricted caller's own (clients may now send events
--    for their own tenant), or for unrestricted callers the tenant named by p_tenant_id, else the caller's bound
--    tenant, else 'default'. wait_for_event reads the signals of the step's own tenant. Signals received before this
--    migration belong to the tenant 'default'.

-- check_key_text(field, value, max_bytes, fix): raises BA002 naming `field` unless `value` is 1 to max_bytes bytes
-- of UTF-8 (null passes: the caller decides whether null is allowed). The problem states the size in bytes and in
-- characters, so a key of 4-byte characters explains itself.
create function ballast_private.check_key_text(p_field text, p_value text, p_max_bytes integer, p_fix text)
returns void
language plpgsql
immutable
as $fn$
begin
  if p_value = '' then
    perform ballast_private.bad_argument(p_field, format('is empty; it must be 1 to %s bytes of UTF-8', p_max_bytes), p_fix);
  elsif octet_length(p_value) > p_max_bytes then
    perform ballast_private.bad_argument(p_field,
      format('is %s bytes of UTF-8 (%s characters); at most %s bytes are allowed', octet_length(p_value),
             char_length(p_value), p_max_bytes), p_fix);
  end if;
end
$fn$;

-- input_size_limit(pipeline): the most bytes of JSON text an input of that pipeline version may have.
create function ballast_private.input_size_limit(p_pipeline ballast_private.pipelines) returns bigint
language sql
immutable
as $fn$
  select coalesce((p_pipeline.definition ->> 'max_input_bytes')::bigint, 1048576)
$fn$;

-- input_size_problem(input, max_bytes): null when `input` may be submitted for its size, else what is wrong with it.
-- In order, each step bounding the cost of the next: (a) its stored size (pg_column_size, O(1)) over 8 times the
-- limit: too large, without printing it (jsonb takes at most ~6 times the bytes of compact JSON: 1.2 MB for
-- '[1,1,...]' of 200 kB); (b) a number outside the range of a double: refused, because Postgres prints numbers in
-- full ('1e131071' is 131,072 digits: 1,000 of them, a 16 kB value, print as 131 MB) and JavaScript cannot read it
-- anyway; (c) the bytes of its JSON text as Postgres prints it over the limit.
create function ballast_private.input_size_problem(p_input jsonb, p_max_bytes bigint) returns text
language plpgsql
immutable
as $fn$
declare
  v_size bigint;
begin
  if pg_column_size(p_input) > 8 * p_max_bytes then
    return format('is more than %s bytes of JSON; at most %s are accepted', p_max_bytes, p_max_bytes);
  end if;
  if jsonb_path_exists(p_input, 'strict $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308 || (@ != 0 && @ < 1e-307 && @ > -1e-307)))') then
    return 'holds a number outside the range of a 64-bit float (beyond ±1.8e308, or nearer to 0 than ±1e-307, but not 0)';
  end if;
  v_size := octet_length(p_input::text);
  if v_size > p_max_bytes then
    return format('is %s bytes of JSON; at most %s are accepted', v_size, p_max_bytes);
  end if;
  return null;
end
$fn$;

-- Tables: byte limits (see 1.), the range of max_input_bytes.
alter table ballast_private.jobs
  drop constraint job_tenant_format,
  add constraint job_tenant_format check (tenant_id <> '' and octet_length(tenant_id) <= 200) not valid,
  drop constraint job_idempotency_key_format,
  add constraint job_idempotency_key_format check (idempotency_key <> '' and octet_length(idempotency_key) <= 500) not valid;
alter table ballast_private.role_tenants
  drop constraint role_tenant_format,
  add constraint role_tenant_format check (tenant_id <> '' and octet_length(tenant_id) <= 200) not valid;
alter table ballast_private.effects
  drop constraint effect_key_format,
  add constraint effect_key_format check (key <> '' and octet_length(key) <= 500) not valid;
alter table ballast_private.effect_intents
  drop constraint effect_intent_key_format,
  add constraint effect_intent_key_format check (key <> '' and octet_length(key) <= 500) not valid;
alter table ballast_private.pipelines
  add constraint pipeline_max_input_bytes check (
    definition -> 'max_input_bytes' is null
    or (jsonb_typeof(definition -> 'max_input_bytes') = 'number'
        and (definition ->> 'max_input_bytes')::numeric between 1 and 67108864
        and (definition ->> 'max_input_bytes')::numeric % 1 = 0));

-- Signals by tenant (see 4.).
alter table ballast_private.signals add column tenant_id text not null default 'default';
alter table ballast_private.signals alter column tenant_id drop default;
alter table ballast_private.signals
  drop constraint signals_pkey,
  add primary key (tenant_id, key),
  drop constraint signal_key_format,
  add constraint signal_key_format check (key <> '' and octet_length(key) <= 500) not valid,
  add constraint signal_tenant_format check (tenant_id <> '' and octet_length(tenant_id) <= 200);

create or replace view ballast.signals with (security_invoker = true) as
select key, payload, actor, received_at, tenant_id from ballast_private.signals;

alter table ballast_private.signals enable row level security;
create policy tenant_rows on ballast_private.signals for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.signals, ballast.signals to ballast_client;

-- checked_pipeline (0021) again: the same checks, with tenant and key limits in bytes (BA002, see 1.), the input's
-- size against the pipeline's max_input_bytes before it is validated (BA002, see 2.), and the validator's cap: when
-- ballast.json_schema_errors stops early it returns one row more than it lists (the marker of 0027), so more than
-- 100 rows reads "more than 100 problems, the first 100 listed" and the detail keeps those 100.
-- checked_pipeline(pipeline, input, idempotency_key, tenant_id, priority, pipeline_version) -> the pipeline version
-- to run. Raises BA002 naming the argument, BA004 for an unknown pipeline or version. Reads only.
create or replace function ballast_private.checked_pipeline(
  p_pipeline text, p_input jsonb, p_idempotency_key text, p_tenant_id text, p_priority integer,
  p_pipeline_version integer
) returns ballast_private.pipelines
language plpgsql
stable
as $fn$
declare
  c_listed constant integer := 100;
  v_pipeline ballast_private.pipelines;
  v_errors jsonb;
  v_count int;
  v_problem text;
begin
  if p_pipeline is null or p_pipeline = '' then
    perform ballast_private.bad_argument('pipeline', 'is missing', 'Name a registered pipeline, e.g. ''demo.wordstats''.');
  end if;
  if p_tenant_id is null then
    perform ballast_private.bad_argument('tenant_id', 'is null',
      'Pass a tenant id of 1 to 200 bytes, or leave it out for the tenant ''default''.');
  end if;
  perform ballast_private.check_key_text('tenant_id', p_tenant_id, 200,
    'Pass a tenant id of 1 to 200 bytes, or leave it out for the tenant ''default''.');
  if p_priority is null or p_priority not between -1000 and 1000 then
    perform ballast_private.bad_argument('priority', format('%s is out of range', coalesce(p_priority::text, 'null')),
      'Use an integer from -1000 to 1000; lower runs first, 0 is the default.');
  end if;
  perform ballast_private.check_key_text('idempotency_key', p_idempotency_key, 500,
    'Pass null for no deduplication, or a key of 1 to 500 bytes unique to this request (an order id, a webhook delivery id).');

  if p_pipeline_version is null then
    select * into v_pipeline from ballast_private.pipelines
     where name = p_pipeline order by version desc limit 1;
  else
    select * into v_pipeline from ballast_private.pipelines
     where name = p_pipeline and version = p_pipeline_version;
  end if;
  if v_pipeline.name is null then
    raise exception using errcode = 'BA004',
      message = case when p_pipeline_version is null then format('pipeline %L is not registered', p_pipeline)
                     else format('pipeline %L has no version %s', p_pipeline, p_pipeline_version) end,
      hint = coalesce('Registered pipelines: ' || (select string_agg(distinct name || '@' || version, ', ')
                                                     from ballast_private.pipelines) || '. ', '')
             || 'A pipeline is registered when a worker that defines it starts.';
  end if;

  if p_input is null then
    perform ballast_private.bad_argument('input', 'is null',
      format('Pass a JSON value matching the input contract of %s@%s (ballast.pipelines.input_schema).',
             v_pipeline.name, v_pipeline.version));
  end if;
  v_problem := ballast_private.input_size_problem(p_input, ballast_private.input_size_limit(v_pipeline));
  if v_problem is not null then
    perform ballast_private.bad_argument('input', format('%s (pipeline %s@%s)', v_problem, v_pipeline.name, v_pipeline.version),
      'Send less per job (keep large documents elsewhere and pass a reference: a URL, an object key, an id), or '
      || 'give the pipeline a larger maxInputBytes (up to 64 MiB) in a new version; numbers must fit a 64-bit float.');
  end if;
  select jsonb_agg(jsonb_build_object('path', 'input' || case when e.path = '' then ''
                                                              when left(e.path, 1) = '[' then e.path
                                                              else '.' || e.path end,
                                      'message', e.message) order by e.k) filter (where e.k <= c_listed),
         count(*)
    into v_errors, v_count
    from ballast.json_schema_errors(v_pipeline.input_schema, p_input) with ordinality e(path, message, k);
  if v_count > 0 then
    raise exception using
      errcode = 'BA002',
      message = format('input does not match the contract of pipeline %s@%s (%s): %s',
                       v_pipeline.name, v_pipeline.version,
                       case when v_count > c_listed then format('more than %s problems, the first %s listed', c_listed, c_listed)
                            when v_count > 1 then format('%s problems', v_count) else '1 problem' end,
                       (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ' order by o)
                          from jsonb_array_elements(v_errors) with ordinality x(e, o))),
      detail = v_errors::text,
      hint = 'Fix the listed fields and submit again; nothing was written.';
  end if;
  return v_pipeline;
end
$fn$;

-- submit_jobs (0015) keeps its body, moved to ballast_private as submit_jobs_checked_v15 (as 0010 did with
-- cancel_job); ballast.submit_jobs is now a wrapper that first applies the limits above to the whole batch, then
-- calls it. The wrapper's own checks, in order: the effective tenant (the restricted caller's, else p_tenant_id) and
-- every key in bytes; then, when the pipeline exists (otherwise the body raises BA004), each input's size against
-- max_input_bytes (the first too large is named, inputs[n]) and the batch's total against 16 MiB (or one input's
-- maximum, when larger). Everything else (tenancy, arguments, validation, idempotency, locks) is the body's, unchanged.
alter function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer) set schema ballast_private;
alter function ballast_private.submit_jobs(text, jsonb[], text[], text, integer, integer) rename to submit_jobs_checked_v15;
revoke execute on function ballast_private.submit_jobs_checked_v15(text, jsonb[], text[], text, integer, integer)
  from ballast_client, ballast_operator;

-- submit_jobs(pipeline, inputs, idempotency_keys, tenant_id, priority, pipeline_version)
--   -> one row per input, in input order: (ord, job_id, created, status). See 0015 for the whole contract; this adds
-- BA002 for a tenant or key over its byte limit and for inputs over their size limits. Nothing is written on error.
create function ballast.submit_jobs(
  p_pipeline text,
  p_inputs jsonb[],
  p_idempotency_keys text[] default null,
  p_tenant_id text default 'default',
  p_priority integer default 0,
  p_pipeline_version integer default null
) returns table (ord integer, job_id bigint, created boolean, status text)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
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
                                                                     p_tenant_id, p_priority, p_pipeline_version);
end
$fn$;
grant execute on function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer)
  to ballast_client, ballast_operator;

-- short_key(value): value itself when it is at most 1,000 bytes, else 'sha256:' || hex of its SHA-256.
create function ballast_private.short_key(p_value text) returns text
language sql immutable parallel safe strict
as $fn$
  select case when octet_length(p_value) <= 1000 then p_value
              else 'sha256:' || encode(sha256(convert_to(p_value, 'UTF8')), 'hex') end
$fn$;

-- concurrency_value(key, tenant, input): what splits a concurrency group (0004), now at most 1,000 bytes: a longer
-- value becomes 'sha256:' and the hex SHA-256 of its UTF-8 bytes (see 3.).
create or replace function ballast_private.concurrency_value(p_key text, p_tenant_id text, p_input jsonb) returns text
language sql immutable parallel safe
as $fn$
  select ballast_private.short_key(case
    when p_key = 'global' then '*'
    when p_key = 'tenant' then p_tenant_id
    else coalesce(p_input #>> string_to_array(substr(p_key, 7), '.'), '(none)')
  end)
$fn$;

-- bind_role_tenant (0010) again: the tenant id in bytes (BA002), as everywhere else.
create or replace function ballast.bind_role_tenant(p_role name, p_tenant_id text) returns void
language plpgsql
as $fn$
begin
  if not exists (select 1 from pg_roles where rolname = p_role) then
    perform ballast_private.bad_argument('role', format('%L is not a role of this server', p_role), 'Create the login first (create role ... login).');
  end if;
  if p_tenant_id is null then
    delete from ballast_private.role_tenants where role_name = p_role;
  else
    perform ballast_private.check_key_text('tenant_id', p_tenant_id, 200, 'Pass a tenant id of 1 to 200 bytes.');
    insert into ballast_private.role_tenants (role_name, tenant_id) values (p_role, p_tenant_id)
    on conflict (role_name) do update set tenant_id = excluded.tenant_id, bound_at = ballast.now();
  end if;
end
$fn$;

-- check_effect_key (0017) again: 1 to 500 bytes.
create or replace function ballast_private.check_effect_key(p_key text) returns void
language plpgsql
as $fn$
begin
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Name the effect after what it does and to whom, e.g. ''email:welcome:user-42''.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500,
    'Name the effect after what it does and to whom, in at most 500 bytes, e.g. ''email:welcome:user-42''.');
end
$fn$;

-- send_event(key, payload, actor, tenant_id) -> (accepted, resumed_step_ids)
-- Delivers the signal `key` of one tenant once: stores it and queues every step of that tenant's jobs waiting for
-- it. A second send of the same key to the same tenant is a no-op (accepted = false, nothing resumed): webhooks
-- delivered twice do no harm. The tenant: a restricted caller's own (naming another raises BA014; a caller bound
-- to none, BA014); for unrestricted callers (operators, the owner) p_tenant_id, else their bound tenant, else
-- 'default'. Raises BA002 for a key that is not 1 to 500 bytes. Serialises with wait_for_event on a transaction
-- advisory lock of (tenant, key), so a send racing a wait is never missed. Runs as the owner.
drop function ballast.send_event(text, jsonb, text);
create function ballast.send_event(p_key text, p_payload jsonb default null, p_actor text default null,
                                   p_tenant_id text default null)
returns table (accepted boolean, resumed_step_ids bigint[])
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
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
grant execute on function ballast.send_event(text, jsonb, text, text) to ballast_client, ballast_operator;

-- wait_for_event(attempt_id, key, timeout_ms, on_timeout) -> (received, payload): as 0005, with the key in bytes
-- (BA002 unless 1 to 500 bytes) and the signal looked up among the step's own tenant's (see 4.), under the same
-- advisory lock of (tenant, key) as send_event.
create or replace function ballast.wait_for_event(
  p_attempt_id bigint, p_key text, p_timeout_ms integer default null, p_on_timeout text default 'fail'
) returns table (received boolean, payload jsonb)
language plpgsql
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
