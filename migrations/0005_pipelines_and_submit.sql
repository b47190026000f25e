-- Up Migration
--
-- Baseline, file 5 of 11: pipeline registration and job submission (ballast.register_pipeline, ballast.submit_job,
-- ballast.submit_jobs), and the limits on keys and sizes they enforce.
--
-- A pipeline version's definition and input contract are stored once; the same name and version with another
-- definition is refused, so a job pinned to a version always meets the code it was submitted for. Submission
-- validates the input against the stored JSON Schema (0003_json_schema) and its size against the pipeline's limit,
-- dedupes on (tenant, idempotency key) by request hash, and creates the step rows (the queue), all in the caller's
-- transaction: a rolled-back submit leaves nothing behind. submit_jobs does the same for many inputs with one
-- INSERT per table; INSERT INTO ballast.jobs (0010_public_views) shares its parts (checked_pipeline, request_hash,
-- new_steps). Tenants, idempotency keys, effect keys and event keys are bounded in bytes (check_key_text, short_key).
-- Folded from the old 0004, 0015, 0021, 0023 and 0029.

-- task_identifier(pipeline, version): the graphile-worker task that executes steps of that pipeline version.
-- One task per version: a worker that does not have a version's code never fetches its wake-ups (graphile-worker
-- only fetches tasks it knows), so a job pinned to version 1 waits for a worker that runs version 1.
create function ballast.task_identifier(p_pipeline text, p_version integer) returns text
language sql immutable parallel safe
as $fn$
  select 'ballast_step:' || p_pipeline || '@' || p_version
$fn$;
grant execute on function ballast.task_identifier(text,integer) to ballast_client, ballast_operator, ballast_reporter;

-- wake_step(step, run_at): a no-op since execution core v2 (the step row is the queue; claim_steps finds it when it
-- is queued or its retry is due). Kept because several functions still call it.
create function ballast_private.wake_step(
  p_step_id bigint,
  p_run_at timestamp with time zone default null::timestamp with time zone
) returns void
language plpgsql volatile
as $fn$
begin
  return;
end
$fn$;

-- register_pipeline(name, version, definition, input_schema) -> (created, definition_hash)
-- Stores a pipeline version. Idempotent for an identical definition (created = false). Raises BA005 when the version
-- exists with another definition, BA006 when the definition is malformed: steps missing or empty, a name that is not
-- lower_snake_case, a duplicate name, a dependency on an unknown step, on itself or listed twice, a cycle, a number
-- out of range (each number must fit the column it is copied into at submit).
-- definition: {"steps": [{"name": text, "depends_on": [text], "max_attempts": int, "backoff_base_ms": int,
--              "backoff_cap_ms": int, "timeout_ms": int|null,
--              "concurrency": null | {"group": text, "key": "global"|"tenant"|"input.<path>", "limit": int}}]}
create function ballast.register_pipeline(
  p_name text,
  p_version integer,
  p_definition jsonb,
  p_input_schema jsonb default '{}'::jsonb
) returns table(created boolean, definition_hash text)
language plpgsql volatile
as $fn$
declare
  v_hash text;
  v_existing text;
  v_step jsonb;
  v_names text[] := '{}';
  v_name text;
  v_dep text;
  v_remaining jsonb;
  v_ready text[];
  v_conc jsonb;
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    raise exception using errcode = 'BA006',
      message = format('pipeline name %L is not valid', p_name),
      hint = 'Use 1-63 characters: a lower-case letter, then lower-case letters, digits, "_", "." or "-".';
  end if;
  if p_version is null or p_version < 1 then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s: version %s is not valid', p_name, coalesce(p_version::text, 'null')),
      hint = 'Versions are integers starting at 1; bump the version whenever the steps or contracts change.';
  end if;
  if p_input_schema is null or jsonb_typeof(p_input_schema) not in ('object', 'boolean') then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s@%s: input_schema must be a JSON Schema object', p_name, p_version);
  end if;
  if p_definition is null or jsonb_typeof(p_definition -> 'steps') is distinct from 'array'
     or jsonb_array_length(p_definition -> 'steps') = 0 then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s@%s: definition.steps must be a non-empty array', p_name, p_version);
  end if;

  for v_step in select value from jsonb_array_elements(p_definition -> 'steps') loop
    v_name := v_step ->> 'name';
    if v_name is null or v_name !~ '^[a-z][a-z0-9_]{0,62}$' then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step name %L is not valid', p_name, p_version, v_name),
        hint = 'Step names are lower_snake_case, 1-63 characters, starting with a letter.';
    end if;
    if v_name = any(v_names) then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %L is defined twice', p_name, p_version, v_name);
    end if;
    v_names := v_names || v_name;
    if jsonb_typeof(v_step -> 'depends_on') is distinct from 'array' then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: depends_on must be an array of step names', p_name, p_version,
                         v_name);
    end if;
    -- A repeated dependency would be counted twice in deps_remaining but decremented once: the step would never run.
    select d into v_dep from jsonb_array_elements_text(v_step -> 'depends_on') d group by d having count(*) > 1 limit 1;
    if found then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s lists %L twice in depends_on', p_name, p_version, v_name, v_dep),
        hint = 'Name each dependency once.';
    end if;
    if jsonb_typeof(v_step -> 'max_attempts') is distinct from 'number'
       or (v_step ->> 'max_attempts')::numeric not between 1 and 1000
       or (v_step ->> 'max_attempts')::numeric % 1 <> 0 then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: max_attempts %s must be an integer from 1 to 1000', p_name,
                         p_version, v_name, coalesce(v_step ->> 'max_attempts', 'null'));
    end if;
    if jsonb_typeof(v_step -> 'backoff_base_ms') is distinct from 'number'
       or jsonb_typeof(v_step -> 'backoff_cap_ms') is distinct from 'number'
       or (v_step ->> 'backoff_base_ms')::numeric not between 0 and 86400000
       or (v_step ->> 'backoff_cap_ms')::numeric not between 0 and 604800000 then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: backoff_base_ms (0 to 1 day) and backoff_cap_ms (0 to 7 days) must be numbers of milliseconds',
                         p_name, p_version, v_name);
    end if;
    -- Numbers are checked against the integer columns they are copied into at submit: a definition that registers
    -- must never make every submission fail with "integer out of range".
    if (v_step -> 'timeout_ms') is not null and jsonb_typeof(v_step -> 'timeout_ms') <> 'null'
       and (jsonb_typeof(v_step -> 'timeout_ms') <> 'number'
            or (v_step ->> 'timeout_ms')::numeric not between 1 and 2147483647
            or (v_step ->> 'timeout_ms')::numeric % 1 <> 0) then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: timeout_ms must be a positive integer of milliseconds up to 2147483647 (about 24 days), or null; got %s',
                         p_name, p_version, v_name, v_step -> 'timeout_ms');
    end if;
    v_conc := v_step -> 'concurrency';
    if v_conc is not null and jsonb_typeof(v_conc) <> 'null' then
      if jsonb_typeof(v_conc -> 'limit') is distinct from 'number'
         or (v_conc ->> 'limit')::numeric not between 1 and 100000 or (v_conc ->> 'limit')::numeric % 1 <> 0
         or coalesce(v_conc ->> 'group', '') = ''
         or coalesce(v_conc ->> 'key', '') !~ '^(global|tenant|input(\.[A-Za-z0-9_-]+)+)$' then
        raise exception using errcode = 'BA006',
          message = format('pipeline %s@%s: step %s: concurrency %s is not valid', p_name, p_version, v_name, v_conc),
          hint = 'Use {"group": "<name>", "key": "global" | "tenant" | "input.<field>[.<field>...]", "limit": <integer from 1 to 100000>}.';
      end if;
    end if;
  end loop;

  -- Dependencies exist, are not the step itself, and form no cycle (Kahn's algorithm: peel off steps whose
  -- dependencies are all peeled; whatever remains is on a cycle).
  for v_step in select value from jsonb_array_elements(p_definition -> 'steps') loop
    for v_dep in select jsonb_array_elements_text(v_step -> 'depends_on') loop
      if not v_dep = any(v_names) or v_dep = v_step ->> 'name' then
        raise exception using errcode = 'BA006',
          message = format('pipeline %s@%s: step %s depends on %L, which is %s', p_name, p_version,
                           v_step ->> 'name', v_dep,
                           case when v_dep = v_step ->> 'name' then 'itself' else 'not a step of this pipeline' end),
          hint = format('Steps of this pipeline: %s.', array_to_string(v_names, ', '));
      end if;
    end loop;
  end loop;
  v_remaining := p_definition -> 'steps';
  v_ready := '{}';
  loop
    select coalesce(array_agg(value ->> 'name'), '{}') into v_names
      from jsonb_array_elements(v_remaining)
     where not exists (select 1 from jsonb_array_elements_text(value -> 'depends_on') d
                        where not d = any(v_ready));
    exit when cardinality(v_names) = 0;
    v_ready := v_ready || v_names;
    select coalesce(jsonb_agg(value), '[]') into v_remaining
      from jsonb_array_elements(v_remaining) where not (value ->> 'name') = any(v_names);
  end loop;
  if jsonb_array_length(v_remaining) > 0 then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s@%s: steps %s depend on each other in a cycle', p_name, p_version,
                       (select string_agg(value ->> 'name', ', ') from jsonb_array_elements(v_remaining)));
  end if;

  v_hash := encode(sha256(convert_to(jsonb_build_array(p_definition, p_input_schema)::text, 'UTF8')), 'hex');
  insert into ballast_private.pipelines (name, version, definition, input_schema, definition_hash)
  values (p_name, p_version, p_definition, p_input_schema, v_hash)
  on conflict (name, version) do nothing;
  if found then
    return query select true, v_hash;
    return;
  end if;
  select p.definition_hash into v_existing from ballast_private.pipelines p
   where p.name = p_name and p.version = p_version;
  if v_existing <> v_hash then
    raise exception using errcode = 'BA005',
      message = format('pipeline %s version %s is already registered with a different definition', p_name, p_version),
      detail = format('registered hash %s, new hash %s', v_existing, v_hash),
      hint = format('Give the changed pipeline a new version (%s); jobs already submitted stay pinned to version %s.',
                    p_version + 1, p_version);
  end if;
  return query select false, v_hash;
end
$fn$;

-- short_key(value): value itself when it is at most 1,000 bytes, else 'sha256:' || hex of its SHA-256.
create function ballast_private.short_key(p_value text) returns text
language sql immutable strict parallel safe
as $fn$
  select case when octet_length(p_value) <= 1000 then p_value
              else 'sha256:' || encode(sha256(convert_to(p_value, 'UTF8')), 'hex') end
$fn$;

-- concurrency_value(key, tenant, input): what splits a concurrency group (0005_pipelines_and_submit), now at most 1,000
-- bytes: a longer value becomes 'sha256:' and the hex SHA-256 of its UTF-8 bytes (see 3.).
create function ballast_private.concurrency_value(p_key text, p_tenant_id text, p_input jsonb) returns text
language sql immutable parallel safe
as $fn$
  select ballast_private.short_key(case
    when p_key = 'global' then '*'
    when p_key = 'tenant' then p_tenant_id
    else coalesce(p_input #>> string_to_array(substr(p_key, 7), '.'), '(none)')
  end)
$fn$;

-- submit(...): the body of submit_job and of INSERT INTO ballast.jobs. Returns (job_id, created).
-- Errors: BA004 unknown pipeline/version; BA002 invalid input (detail: JSON array of {path, message}, every
-- violation); BA003 same idempotency key with a different request; 40001 when a concurrent submission with the same
-- key is not yet visible (only under REPEATABLE READ / SERIALIZABLE): retry with the same key.
-- Idempotency: insert ... on conflict do nothing. A concurrent insert with the same key makes this one wait for the
-- other transaction; if it commits, ours inserts nothing and the next statement (a new snapshot under read committed)
-- reads the winner. 100 concurrent submissions therefore create exactly one job and all return its id.
-- The key's transaction lock is taken first (ballast_private.lock_idempotency_key).
create function ballast_private.submit(
  p_pipeline text,
  p_input jsonb,
  p_idempotency_key text,
  p_tenant_id text,
  p_priority integer,
  p_pipeline_version integer
) returns table(job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_job_id bigint;
  v_existing_hash text;
  v_now timestamptz := ballast.now();
begin
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, p_idempotency_key, p_tenant_id, p_priority,
                                                 p_pipeline_version);
  v_hash := ballast_private.request_hash(p_pipeline, p_pipeline_version, p_input);
  perform ballast_private.lock_idempotency_key(p_tenant_id, p_idempotency_key);

  -- n_total is the number of steps the insert below creates (none of them final, running, waiting or started: every
  -- other counter is 0), so the job is counted here and the steps' insert trigger skips it (ballast.steps_counted).
  insert into ballast_private.jobs (tenant_id, pipeline, pipeline_version, idempotency_key, request_hash, input,
                                    priority, created_at, updated_at, n_total)
  values (p_tenant_id, v_pipeline.name, v_pipeline.version, p_idempotency_key, v_hash, p_input, p_priority, v_now, v_now,
          jsonb_array_length(v_pipeline.definition -> 'steps'))
  on conflict (tenant_id, idempotency_key) do nothing
  returning id into v_job_id;

  if v_job_id is null then
    select j.id, j.request_hash into v_job_id, v_existing_hash
      from ballast_private.jobs j
     where j.tenant_id = p_tenant_id and j.idempotency_key = p_idempotency_key;
    if v_job_id is null then
      raise exception using errcode = '40001',
        message = format('a concurrent submission with idempotency key %L is not visible yet', p_idempotency_key),
        hint = 'Retry the transaction with the same key; it will return that job.';
    end if;
    if v_existing_hash <> v_hash then
      perform ballast_private.raise_key_conflict(p_idempotency_key, v_job_id);
    end if;
    return query select v_job_id, false;
    return;
  end if;

  perform set_config('ballast.steps_counted', 'on', true);
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, task, priority)
  select * from ballast_private.new_steps(v_job_id, v_pipeline.name, v_pipeline.version, v_pipeline.definition,
                                          p_tenant_id, p_input, p_priority, v_now);
  perform set_config('ballast.steps_counted', 'off', true);

  return query select v_job_id, true;
end
$fn$;

-- submit_job, checked: a restricted caller submits for its own tenant (p_tenant_id may be left at
-- 'default' or name it); naming another raises BA014; without a tenant, BA014 too.
create function ballast.submit_job(
  p_pipeline text,
  p_input jsonb default '{}'::jsonb,
  p_idempotency_key text default null::text,
  p_tenant_id text default 'default'::text,
  p_priority integer default 0,
  p_pipeline_version integer default null::integer
) returns table(job_id bigint, created boolean, status text, pipeline_version integer)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_job_id bigint;
  v_created boolean;
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
  select s.job_id, s.created into v_job_id, v_created
    from ballast_private.submit(p_pipeline, p_input, p_idempotency_key, v_tenant, p_priority, p_pipeline_version) s;
  return query select j.id, v_created, j.status, j.pipeline_version from ballast_private.jobs j where j.id = v_job_id;
end
$fn$;
grant execute on function ballast.submit_job(text,jsonb,text,text,integer,integer) to ballast_client, ballast_operator;
comment on function ballast.submit_job(text,jsonb,text,text,integer,integer) is 'Start a job of a pipeline on an input (checked against the input contract). The same idempotency key with the same request returns the existing job (created = false). Restricted callers (clients) submit for their own tenant only.';

-- submit_jobs_checked_v15: the body of ballast.submit_jobs once its arguments' byte and size limits are checked
-- (the contract is that of ballast.submit_jobs). Not executable by clients: only ballast.submit_jobs calls it.
-- submit_jobs(pipeline, inputs, idempotency_keys, tenant_id, priority, pipeline_version)
--   -> one row per input, in input order: (ord, job_id, created, status)
-- Submits one job per element of p_inputs, all of one pipeline version, tenant and priority, in one transaction:
-- either every job is submitted or nothing is written. ord is the position of the input in p_inputs, counted
-- from 1 as SQL subscripts are (p_inputs[ord]); error messages and paths number inputs the same way (inputs[3]).
-- p_idempotency_keys: null (no deduplication), or one key or null per input, in the order of p_inputs.
-- At most 1000 inputs per call (c_max_inputs): a batch is one transaction holding its keys' locks until it ends.
-- An empty array submits nothing and returns no rows.
-- Idempotency, per input, as submit_job: a key used before with the same request returns that job (created =
-- false); the same key twice in one call with the same request returns one job twice (created = true for the first
-- use only); with another request, either way, BA003 naming the key and the input (detail: {job_id (when the key
-- belongs to a stored job), idempotency_key, ord}); a key being inserted by a concurrent transaction: this call
-- waits for it, then returns its job (40001 when it is not visible: REPEATABLE READ or SERIALIZABLE; retry).
-- Errors (nothing written): BA014 as submit_job (restricted callers submit for their own tenant); BA002 for a bad
-- argument, naming it (pipeline, tenant_id, priority, inputs, idempotency_keys, idempotency_keys[n]: a length
-- that differs from inputs, an empty or too long key), and for inputs that do not match the pipeline's input
-- contract: the message and detail (JSON array of {path, message}, paths like inputs[3].customer.zip) list the
-- first 20 problems (c_max_problems) in input order; validation stops there, so a batch of bad inputs costs no more
-- than the inputs up to its 21st problem; BA004 unknown pipeline or version.
-- Locks: jobs are inserted in the order of their keys (collation "C"), not of the inputs, so two calls with
-- overlapping keys wait for each other instead of deadlocking (each takes its keys in one global order). Job ids
-- are reserved in input order first (nextval, then inserted with OVERRIDING SYSTEM VALUE), so ids still grow with
-- ord, which is also how each returned job is matched to its input.
-- Steps and wake-ups: exactly the rows ballast_private.submit creates (roots 'queued' with queued_at, the others
-- 'pending' with their dependency count, concurrency keys from ballast_private.concurrency_value); the root steps
-- are woken with ballast_private.wake_step, one statement for the batch.
-- Audit: the actor of the job_submitted events is the restricted caller's identity, else ballast.actor, else 'sql'.
create function ballast_private.submit_jobs_checked_v15(
  p_pipeline text,
  p_inputs jsonb[],
  p_idempotency_keys text[] default null::text[],
  p_tenant_id text default 'default'::text,
  p_priority integer default 0,
  p_pipeline_version integer default null::integer
) returns table(ord integer, job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  c_max_inputs constant integer := 1000;
  c_max_problems constant integer := 20;
  v_tenant text := p_tenant_id;
  v_pipeline ballast_private.pipelines;
  v_n integer;
  v_keys text[];          -- per input: its idempotency key or null
  v_hashes text[];        -- per input: its request hash (as ballast_private.submit computes it)
  v_ids bigint[];         -- per input: the id reserved for it (inputs without a key, and the first use of a key)
  v_inserted bigint[];    -- the ids actually inserted (a key already stored inserts nothing)
  v_job_ids bigint[];     -- per input: the job returned
  v_created boolean[];
  v_queued bigint[];
  v_errors jsonb;
  v_count integer;
  v_ord integer;
  v_other integer;
  v_key text;
  v_job bigint;
  v_missing integer;
  v_conflict integer;
  v_now timestamptz := ballast.now();
  v_seq regclass := pg_get_serial_sequence('ballast_private.jobs', 'id')::regclass;
begin
  -- Tenancy, exactly as submit_job (0010).
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

  -- Arguments, as ballast_private.submit checks them, then the arrays.
  if p_pipeline is null or p_pipeline = '' then
    perform ballast_private.bad_argument('pipeline', 'is missing', 'Name a registered pipeline, e.g. ''demo.wordstats''.');
  end if;
  if v_tenant is null or v_tenant = '' or length(v_tenant) > 200 then
    perform ballast_private.bad_argument('tenant_id', format('%L is not a tenant id', v_tenant),
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
  if v_n = 0 then
    return;
  end if;

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
                from ballast.json_schema_errors(v_pipeline.input_schema, i.input) with ordinality x(path, message, k)
               where i.input is not null) e
           limit c_max_problems + 1) p;
  if v_count > c_max_problems then
    v_errors := v_errors - c_max_problems;  -- drops the extra one (0-based index): it only said "there are more"
  end if;
  if v_count > 0 then
    raise exception using
      errcode = 'BA002',
      message = format('inputs do not match the contract of pipeline %s@%s (%s): %s',
                       v_pipeline.name, v_pipeline.version,
                       case when v_count > c_max_problems then format('more than %s problems, the first %s listed', c_max_problems, c_max_problems)
                            when v_count > 1 then format('%s problems', v_count) else '1 problem' end,
                       (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ' order by e.o)
                          from jsonb_array_elements(v_errors) with ordinality e(e, o))),
      detail = v_errors::text,
      hint = 'Fix the listed inputs (numbered from 1, as p_inputs[n]) and submit the batch again; nothing was written.';
  end if;

  -- Keys and request hashes, per input; a key given twice in this call must be given for the same request.
  select array_agg(encode(sha256(convert_to(jsonb_build_array(p_pipeline, p_pipeline_version, u.input)::text, 'UTF8')), 'hex')
                   order by u.n)
    into v_hashes from unnest(p_inputs) with ordinality u(input, n);
  if p_idempotency_keys is null then
    v_keys := array_fill(null::text, array[v_n]);
  else
    select array_agg(k.key order by k.n) into v_keys from unnest(p_idempotency_keys) with ordinality k(key, n);
  end if;
  select r.n, r.first_n, r.key into v_ord, v_other, v_key
    from (select u.n, u.key, u.hash, first_value(u.n) over w as first_n, first_value(u.hash) over w as first_hash
            from unnest(v_keys, v_hashes) with ordinality u(key, hash, n)
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

  -- Ids reserved in input order (the subquery is sorted before nextval runs: Postgres evaluates volatile output
  -- expressions after ORDER BY), for the inputs that may create a job: those without a key, and a key's first use.
  select array_agg(r.id order by r.n) into v_ids
    from (select f.n, case when f.first then nextval(v_seq) end as id
            from (select u.n, u.key is null or u.n = min(u.n) over (partition by u.key) as first
                    from unnest(v_keys) with ordinality u(key, n)) f
           order by f.n) r;

  -- One INSERT for every job, in key order (see Locks above). A key stored before (or by a concurrent transaction,
  -- which this waits for) inserts nothing.
  with ins as (
    insert into ballast_private.jobs as j (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                           input, priority, created_at, updated_at)
    overriding system value
    select v_ids[u.n], v_tenant, v_pipeline.name, v_pipeline.version, u.key, v_hashes[u.n], u.input, p_priority, v_now, v_now
      from unnest(p_inputs, v_keys) with ordinality u(input, key, n)
     where v_ids[u.n] is not null
     order by u.key collate "C" nulls last, u.n
    on conflict (tenant_id, idempotency_key) do nothing
    returning j.id)
  select coalesce(array_agg(ins.id), '{}') into v_inserted from ins;

  -- One statement (a new snapshot: it sees what a concurrent transaction committed while the insert waited) reads
  -- the jobs of the keys that inserted nothing, and decides each input's job and created flag.
  with u as (select u.n, u.key, u.hash, u.id from unnest(v_keys, v_hashes, v_ids) with ordinality u(key, hash, id, n)),
       mine as (select i.id from unnest(v_inserted) i(id)),
       firsts as (select u.key, u.id, m.id is not null as inserted
                    from u left join mine m on m.id = u.id
                   where u.key is not null and u.id is not null),
       existing as (select j.idempotency_key as key, j.id, j.request_hash
                      from ballast_private.jobs j
                     where j.tenant_id = v_tenant
                       and j.idempotency_key in (select f.key from firsts f where not f.inserted)),
       r as (select u.n,
                    case when u.key is null then u.id when f.inserted then f.id else e.id end as job,
                    u.key is null or (f.inserted and u.id is not null) as created,
                    u.key is not null and not f.inserted and e.request_hash <> u.hash as conflict
               from u left join firsts f on f.key = u.key left join existing e on e.key = u.key)
  select array_agg(r.job order by r.n), array_agg(r.created order by r.n),
         min(r.n) filter (where r.job is null), min(r.n) filter (where r.conflict)
    into v_job_ids, v_created, v_missing, v_conflict
    from r;
  if v_missing is not null then
    raise exception using errcode = '40001',
      message = format('inputs[%s]: a concurrent submission with idempotency key %L is not visible yet',
                       v_missing, v_keys[v_missing]),
      hint = 'Retry the transaction with the same keys; it will return those jobs.';
  end if;
  if v_conflict is not null then
    v_key := v_keys[v_conflict];
    v_job := v_job_ids[v_conflict];
    raise exception using errcode = 'BA003',
      message = format('inputs[%s]: idempotency key %L was already used by job %s for a different request',
                       v_conflict, v_key, v_job),
      detail = jsonb_build_object('job_id', v_job, 'idempotency_key', v_key, 'ord', v_conflict)::text,
      hint = 'Use a new key for a new request, or resend exactly the same pipeline and input to get job '
             || v_job || ' back.';
  end if;

  -- One INSERT for every step of every new job: the definition is read once, then repeated per job.
  with defs as materialized (
         select d.k, d.s ->> 'name' as name, jsonb_array_length(d.s -> 'depends_on') = 0 as root,
                array(select jsonb_array_elements_text(d.s -> 'depends_on')) as depends_on,
                jsonb_array_length(d.s -> 'depends_on') as deps,
                (d.s ->> 'max_attempts')::int as max_attempts, (d.s ->> 'backoff_base_ms')::int as backoff_base_ms,
                (d.s ->> 'backoff_cap_ms')::int as backoff_cap_ms, (d.s ->> 'timeout_ms')::int as timeout_ms,
                case when jsonb_typeof(d.s -> 'concurrency') = 'object' then d.s -> 'concurrency' end as conc
           from jsonb_array_elements(v_pipeline.definition -> 'steps') with ordinality d(s, k)),
       new_jobs as (
         select u.id, u.input, u.n
           from unnest(v_ids, p_inputs) with ordinality u(id, input, n)
           join unnest(v_inserted) i(id) on i.id = u.id),
       ins as (
         insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts,
                                            backoff_base_ms, backoff_cap_ms, timeout_ms, concurrency_key,
                                            concurrency_limit, queued_at, created_at, updated_at, task, priority)
         select j.id, d.name, case when d.root then 'queued' else 'pending' end, d.depends_on, d.deps,
                d.max_attempts, d.backoff_base_ms, d.backoff_cap_ms, d.timeout_ms,
                case when d.conc is not null then
                  (d.conc ->> 'group') || '/' || ballast_private.concurrency_value(d.conc ->> 'key', v_tenant, j.input) end,
                (d.conc ->> 'limit')::int,
                case when d.root then v_now end, v_now, v_now,
                ballast.task_identifier(v_pipeline.name, v_pipeline.version), p_priority
           from new_jobs j cross join defs d
          order by j.n, d.k
         returning id, status)
  select coalesce(array_agg(ins.id order by ins.id) filter (where ins.status = 'queued'), '{}') into v_queued from ins;

  -- No wake-up per step: the step rows are the queue (0013), and the steps' insert NOTIFYs ballast_queue once.

  return query
    select u.n::int, u.job, u.created, j.status
      from unnest(v_job_ids, v_created) with ordinality u(job, created, n)
      join ballast_private.jobs j on j.id = u.job
     order by u.n;
end
$fn$;

-- submit_jobs(pipeline, inputs, idempotency_keys, tenant_id, priority, pipeline_version)
--   -> one row per input, in input order: (ord, job_id, created, status)
-- Submits one job per element of p_inputs, all of one pipeline version, tenant and priority, in one transaction:
-- either every job is submitted or nothing is written. ord is the position of the input in p_inputs, counted
-- from 1 as SQL subscripts are (p_inputs[ord]); error messages and paths number inputs the same way (inputs[3]).
-- p_idempotency_keys: null (no deduplication), or one key or null per input, in the order of p_inputs.
-- At most 1000 inputs per call (c_max_inputs): a batch is one transaction holding its keys' locks until it ends.
-- An empty array submits nothing and returns no rows.
-- Idempotency, per input, as submit_job: a key used before with the same request returns that job (created =
-- false); the same key twice in one call with the same request returns one job twice (created = true for the first
-- use only); with another request, either way, BA003 naming the key and the input (detail: {job_id (when the key
-- belongs to a stored job), idempotency_key, ord}); a key being inserted by a concurrent transaction: this call
-- waits for it, then returns its job (40001 when it is not visible: REPEATABLE READ or SERIALIZABLE; retry).
-- Errors (nothing written): BA014 as submit_job (restricted callers submit for their own tenant); BA002 for a bad
-- argument, naming it (pipeline, tenant_id, priority, inputs, idempotency_keys, idempotency_keys[n]: a length
-- that differs from inputs, an empty or too long key), and for inputs that do not match the pipeline's input
-- contract: the message and detail (JSON array of {path, message}, paths like inputs[3].customer.zip) list the
-- first 20 problems (c_max_problems) in input order; validation stops there, so a batch of bad inputs costs no more
-- than the inputs up to its 21st problem; BA004 unknown pipeline or version.
-- Locks: jobs are inserted in the order of their keys (collation "C"), not of the inputs, so two calls with
-- overlapping keys wait for each other instead of deadlocking (each takes its keys in one global order). Job ids
-- are reserved in input order first (nextval, then inserted with OVERRIDING SYSTEM VALUE), so ids still grow with
-- ord, which is also how each returned job is matched to its input.
-- Steps and wake-ups: exactly the rows ballast_private.submit creates (roots 'queued' with queued_at, the others
-- 'pending' with their dependency count, concurrency keys from ballast_private.concurrency_value); the root steps
-- are woken with ballast_private.wake_step, one statement for the batch.
-- Audit: the actor of the job_submitted events is the restricted caller's identity, else ballast.actor, else 'sql'.
-- Limits: BA002 also for a tenant or key over its byte limit and for inputs over their size limits; then the
-- submission itself is ballast_private.submit_jobs_checked_v15. Nothing is written on error.
create function ballast.submit_jobs(
  p_pipeline text,
  p_inputs jsonb[],
  p_idempotency_keys text[] default null::text[],
  p_tenant_id text default 'default'::text,
  p_priority integer default 0,
  p_pipeline_version integer default null::integer
) returns table(ord integer, job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
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
grant execute on function ballast.submit_jobs(text,jsonb[],text[],text,integer,integer) to ballast_client, ballast_operator;
comment on function ballast.submit_jobs(text,jsonb[],text[],text,integer,integer) is 'Start many jobs of one pipeline in one statement, all or nothing (at most 1000), one result per input in input order (ord from 1).';

-- checked_pipeline: tenant and key limits in bytes (BA002), the input's
-- size against the pipeline's max_input_bytes before it is validated (BA002), and the validator's cap: when
-- ballast.json_schema_errors stops early it returns one row more than it lists (its marker row), so more than
-- 100 rows reads "more than 100 problems, the first 100 listed" and the detail keeps those 100.
-- checked_pipeline(pipeline, input, idempotency_key, tenant_id, priority, pipeline_version) -> the pipeline version
-- to run. Raises BA002 naming the argument, BA004 for an unknown pipeline or version. Reads only.
create function ballast_private.checked_pipeline(
  p_pipeline text,
  p_input jsonb,
  p_idempotency_key text,
  p_tenant_id text,
  p_priority integer,
  p_pipeline_version integer
) returns ballast_private.pipelines
language plpgsql stable
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

-- request_hash(pipeline as requested, version as requested, input): what an idempotency key is bound to.
create function ballast_private.request_hash(p_pipeline text, p_pipeline_version integer, p_input jsonb) returns text
language sql immutable parallel safe
as $fn$
  select encode(sha256(convert_to(jsonb_build_array(p_pipeline, p_pipeline_version, p_input)::text, 'UTF8')), 'hex')
$fn$;

-- new_steps(job_id, definition, tenant_id, input, priority, now): the step rows of a new job of that pipeline
-- definition, in definition order: roots queued (queued_at = now), the others pending with their dependency count;
-- concurrency keys from concurrency_value; task and priority for the queue. An inlinable SQL function: an INSERT ...
-- SELECT over many jobs (0005_pipelines_and_submit) plans it as one query.
create function ballast_private.new_steps(
  p_job_id bigint,
  p_pipeline text,
  p_pipeline_version integer,
  p_definition jsonb,
  p_tenant_id text,
  p_input jsonb,
  p_priority integer,
  p_now timestamp with time zone
) returns table(job_id bigint, name text, status text, depends_on text[], deps_remaining integer, max_attempts integer, backoff_base_ms integer, backoff_cap_ms integer, timeout_ms integer, concurrency_key text, concurrency_limit integer, queued_at timestamp with time zone, created_at timestamp with time zone, updated_at timestamp with time zone, task text, priority smallint)
language sql stable
as $fn$
  select p_job_id,
         s ->> 'name',
         case when jsonb_array_length(s -> 'depends_on') = 0 then 'queued' else 'pending' end,
         array(select jsonb_array_elements_text(s -> 'depends_on')),
         jsonb_array_length(s -> 'depends_on'),
         (s ->> 'max_attempts')::int,
         (s ->> 'backoff_base_ms')::int,
         (s ->> 'backoff_cap_ms')::int,
         (s ->> 'timeout_ms')::int,
         case when jsonb_typeof(s -> 'concurrency') = 'object' then
           (s -> 'concurrency' ->> 'group') || '/'
           || ballast_private.concurrency_value(s -> 'concurrency' ->> 'key', p_tenant_id, p_input) end,
         case when jsonb_typeof(s -> 'concurrency') = 'object' then (s -> 'concurrency' ->> 'limit')::int end,
         case when jsonb_array_length(s -> 'depends_on') = 0 then p_now end,
         p_now, p_now, ballast.task_identifier(p_pipeline, p_pipeline_version), p_priority::smallint
    from jsonb_array_elements(p_definition -> 'steps') with ordinality as d(s, k)
   order by d.k
$fn$;

-- lock_idempotency_key(tenant_id, key): a transaction advisory lock on one key of one tenant (nothing for a null
-- key). submit takes it before its INSERT, and INSERT INTO ballast.jobs (0010_public_views) before it looks the key up,
-- so the two paths wait for each other on the same key instead of racing.
create function ballast_private.lock_idempotency_key(p_tenant_id text, p_idempotency_key text) returns void
language sql volatile
as $fn$
  select pg_advisory_xact_lock(hashtextextended('ballast.key/' || p_tenant_id || '/' || p_idempotency_key, 0))
   where p_idempotency_key is not null
$fn$;
comment on function ballast_private.lock_idempotency_key(text,text) is 'A transaction lock on one idempotency key of one tenant: submissions of that key through submit_job and INSERT INTO ballast.jobs wait for each other.';

-- raise_key_conflict(key, job_id): BA003, the idempotency key was used by that job for a different request.
create function ballast_private.raise_key_conflict(p_idempotency_key text, p_job_id bigint) returns void
language plpgsql volatile
as $fn$
begin
  raise exception using errcode = 'BA003',
    message = format('idempotency key %L was already used by job %s for a different request', p_idempotency_key, p_job_id),
    detail = jsonb_build_object('job_id', p_job_id, 'idempotency_key', p_idempotency_key)::text,
    hint = 'Use a new key for a new request, or resend exactly the same pipeline and input to get job '
           || p_job_id || ' back.';
end
$fn$;

-- job_inserts_ready() -> whether this session's note table pg_temp.ballast_job_inserts exists. Called only inside
-- the SECURITY DEFINER functions below, as their owner: a table of that name created by the session's own role (any
-- login may create temporary tables) would let it slip rows past every check into the jobs the owner writes, so a
-- table not owned by the owner raises 42501 instead of being used.
create function ballast_private.job_inserts_ready() returns boolean
language plpgsql volatile
as $fn$
declare
  v_owner oid;
begin
  select c.relowner into v_owner from pg_class c where c.oid = to_regclass('pg_temp.ballast_job_inserts');
  if not found then
    return false;
  end if;
  if v_owner is distinct from (select r.oid from pg_roles r where r.rolname = current_user) then
    raise exception using errcode = '42501',
      message = 'the temporary table ballast_job_inserts of this session was not created by ballast',
      hint = 'Drop it (drop table pg_temp.ballast_job_inserts): ballast uses that name while rows are inserted into ballast.jobs.';
  end if;
  return true;
end
$fn$;

-- insert_jobs_flush(): AFTER INSERT ... FOR EACH STATEMENT on ballast.jobs: writes the jobs insert_job noted (see the
-- header). Raises 40001 when a noted key was taken meanwhile by another path; nothing is written then.
create function ballast_private.insert_jobs_flush() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_noted integer;
  v_inserted integer;
  v_lost record;
begin
  if not ballast_private.job_inserts_ready() then
    return null;
  end if;
  select count(*) into v_noted from pg_temp.ballast_job_inserts;
  if v_noted = 0 then
    return null;
  end if;
  with ins as (
    insert into ballast_private.jobs as j (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                           input, priority, created_at, updated_at, n_total)
    overriding system value
    select i.id, i.tenant_id, i.pipeline, i.pipeline_version, i.idempotency_key, i.request_hash, i.input, i.priority,
           i.created_at, i.created_at, i.steps
      from pg_temp.ballast_job_inserts i
     order by i.id
    on conflict (tenant_id, idempotency_key) do nothing
    returning j.id)
  select count(*) into v_inserted from ins;
  if v_inserted < v_noted then
    select i.id, i.idempotency_key into v_lost from pg_temp.ballast_job_inserts i
     where not exists (select 1 from ballast_private.jobs j where j.id = i.id) order by i.id limit 1;
    raise exception using errcode = '40001',
      message = format('a concurrent submission took idempotency key %L while this INSERT ran', v_lost.idempotency_key),
      hint = 'Retry the statement with the same keys; it will return that job.';
  end if;

  perform set_config('ballast.steps_counted', 'on', true);
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, task, priority)
  select s.*
    from pg_temp.ballast_job_inserts i
    join ballast_private.pipelines p on p.name = i.pipeline and p.version = i.pipeline_version
   cross join lateral ballast_private.new_steps(i.id, p.name, p.version, p.definition, i.tenant_id, i.input,
                                                i.priority, i.created_at) s
   order by i.id;
  perform set_config('ballast.steps_counted', 'off', true);
  delete from pg_temp.ballast_job_inserts;
  return null;
end
$fn$;

-- check_key_text(field, value, max_bytes, fix): raises BA002 naming `field` unless `value` is 1 to max_bytes bytes
-- of UTF-8 (null passes: the caller decides whether null is allowed). The problem states the size in bytes and in
-- characters, so a key of 4-byte characters explains itself.
create function ballast_private.check_key_text(
  p_field text,
  p_value text,
  p_max_bytes integer,
  p_fix text
) returns void
language plpgsql immutable
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
language sql immutable
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
language plpgsql immutable
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
