-- Up Migration
--
-- 0004: pipeline registration and job submission (ballast.register_pipeline, ballast.submit_job).
--
-- A pipeline version's definition and input contract are stored once; the same name and version with another
-- definition is refused, so a job pinned to a version always meets the code it was submitted for. Submission
-- validates the input against the stored JSON Schema (0002), dedupes on (tenant, idempotency key) by request hash,
-- creates the step rows and enqueues the wake-ups of the root steps with graphile_worker.add_job, all in the caller's
-- transaction: a rolled-back submit leaves nothing behind, not even a wake-up.

-- bad_argument(field, problem, fix): raises BA002 with a message naming the field, what is wrong and what to do.
create function ballast_private.bad_argument(p_field text, p_problem text, p_fix text) returns void
language plpgsql
as $fn$
begin
  raise exception using
    errcode = 'BA002',
    message = format('%s: %s', p_field, p_problem),
    hint = p_fix,
    detail = jsonb_build_array(jsonb_build_object('path', p_field, 'message', p_problem))::text;
end
$fn$;

-- task_identifier(pipeline, version): the graphile-worker task that executes steps of that pipeline version.
-- One task per version: a worker that does not have a version's code never fetches its wake-ups (graphile-worker
-- only fetches tasks it knows), so a job pinned to version 1 waits for a worker that runs version 1.
create function ballast.task_identifier(p_pipeline text, p_version integer) returns text
language sql immutable parallel safe
as $fn$
  select 'ballast_step:' || p_pipeline || '@' || p_version
$fn$;

-- wake_step(step, run_at): enqueues the graphile-worker wake-up of a step. The job key 'ballast_step:<id>' makes
-- repeated wake-ups of one step collapse into one pending job (mode 'replace': the newest run_at wins). queue_name,
-- priority and max_attempts are passed every time because 'replace' resets omitted ones to their defaults.
-- max_attempts 25 covers a task that dies before ballast decides (connection lost during claim); ballast's own retry
-- policy lives in the step row, not here.
create function ballast_private.wake_step(p_step_id bigint, p_run_at timestamptz default null) returns void
language plpgsql
as $fn$
declare
  v_task text;
  v_priority smallint;
begin
  select ballast.task_identifier(j.pipeline, j.pipeline_version), j.priority
    into v_task, v_priority
    from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
   where s.id = p_step_id;
  perform graphile_worker.add_job(
    identifier => v_task,
    payload => json_build_object('step_id', p_step_id),
    queue_name => null,
    run_at => p_run_at,
    max_attempts => 25,
    job_key => 'ballast_step:' || p_step_id,
    priority => v_priority,
    job_key_mode => 'replace');
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
  p_name text, p_version integer, p_definition jsonb, p_input_schema jsonb default '{}'::jsonb
) returns table (created boolean, definition_hash text)
language plpgsql
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

-- concurrency_value(key, tenant, input): the value a concurrency key selects for one job.
create function ballast_private.concurrency_value(p_key text, p_tenant_id text, p_input jsonb) returns text
language sql immutable parallel safe
as $fn$
  select case
    when p_key = 'global' then '*'
    when p_key = 'tenant' then p_tenant_id
    else coalesce(p_input #>> string_to_array(substr(p_key, 7), '.'), '(none)')
  end
$fn$;

-- submit(...): the body of submit_job and of INSERT INTO ballast.jobs. Returns (job_id, created).
-- Errors: BA004 unknown pipeline/version; BA002 invalid input (detail: JSON array of {path, message}, every
-- violation); BA003 same idempotency key with a different request; 40001 when a concurrent submission with the same
-- key is not yet visible (only under REPEATABLE READ / SERIALIZABLE): retry with the same key.
-- Idempotency: insert ... on conflict do nothing. A concurrent insert with the same key makes this one wait for the
-- other transaction; if it commits, ours inserts nothing and the next statement (a new snapshot under read committed)
-- reads the winner. 100 concurrent submissions therefore create exactly one job and all return its id.
create function ballast_private.submit(
  p_pipeline text, p_input jsonb, p_idempotency_key text, p_tenant_id text, p_priority integer,
  p_pipeline_version integer
) returns table (job_id bigint, created boolean)
language plpgsql
as $fn$
declare
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_job_id bigint;
  v_existing_hash text;
  v_errors jsonb;
  v_count int;
  v_step_id bigint;
  v_now timestamptz := ballast.now();
begin
  if p_pipeline is null or p_pipeline = '' then
    perform ballast_private.bad_argument('pipeline', 'is missing', 'Name a registered pipeline, e.g. ''demo.wordstats''.');
  end if;
  if p_tenant_id is null or p_tenant_id = '' or length(p_tenant_id) > 200 then
    perform ballast_private.bad_argument('tenant_id', format('%L is not a tenant id', p_tenant_id),
      'Pass a non-empty text of at most 200 characters, or leave it out for the tenant ''default''.');
  end if;
  if p_priority is null or p_priority not between -1000 and 1000 then
    perform ballast_private.bad_argument('priority', format('%s is out of range', coalesce(p_priority::text, 'null')),
      'Use an integer from -1000 to 1000; lower runs first, 0 is the default.');
  end if;
  if p_idempotency_key = '' or length(p_idempotency_key) > 500 then
    perform ballast_private.bad_argument('idempotency_key', 'must be 1 to 500 characters',
      'Pass null for no deduplication, or a key unique to this request (an order id, a webhook delivery id).');
  end if;

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
  select jsonb_agg(jsonb_build_object('path', 'input' || case when e.path = '' then ''
                                                              when left(e.path, 1) = '[' then e.path
                                                              else '.' || e.path end,
                                      'message', e.message)), count(*)
    into v_errors, v_count
    from ballast.json_schema_errors(v_pipeline.input_schema, p_input) e;
  if v_count > 0 then
    raise exception using
      errcode = 'BA002',
      message = format('input does not match the contract of pipeline %s@%s (%s problem%s): %s',
                       v_pipeline.name, v_pipeline.version, v_count, case when v_count > 1 then 's' else '' end,
                       (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ')
                          from jsonb_array_elements(v_errors) e)),
      detail = v_errors::text,
      hint = 'Fix the listed fields and submit again; nothing was written.';
  end if;

  v_hash := encode(sha256(convert_to(
    jsonb_build_array(p_pipeline, p_pipeline_version, p_input)::text, 'UTF8')), 'hex');

  insert into ballast_private.jobs (tenant_id, pipeline, pipeline_version, idempotency_key, request_hash, input,
                                    priority, created_at, updated_at)
  values (p_tenant_id, v_pipeline.name, v_pipeline.version, p_idempotency_key, v_hash, p_input, p_priority, v_now, v_now)
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
      raise exception using errcode = 'BA003',
        message = format('idempotency key %L was already used by job %s for a different request',
                         p_idempotency_key, v_job_id),
        detail = jsonb_build_object('job_id', v_job_id, 'idempotency_key', p_idempotency_key)::text,
        hint = 'Use a new key for a new request, or resend exactly the same pipeline and input to get job '
               || v_job_id || ' back.';
    end if;
    return query select v_job_id, false;
    return;
  end if;

  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at)
  select v_job_id,
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
         case when jsonb_array_length(s -> 'depends_on') = 0 then v_now end,
         v_now, v_now
    from jsonb_array_elements(v_pipeline.definition -> 'steps') s;

  for v_step_id in select id from ballast_private.steps where steps.job_id = v_job_id and status = 'queued' loop
    perform ballast_private.wake_step(v_step_id);
  end loop;

  return query select v_job_id, true;
end
$fn$;

-- submit_job(pipeline, input, idempotency_key, tenant_id, priority, pipeline_version)
--   -> (job_id, created, status, pipeline_version)
-- The public way to start a job from SQL. Same input and key twice returns the first job with created = false.
-- Errors as ballast_private.submit. Sets the audit actor 'sql' unless the caller set ballast.actor.
create function ballast.submit_job(
  p_pipeline text,
  p_input jsonb default '{}'::jsonb,
  p_idempotency_key text default null,
  p_tenant_id text default 'default',
  p_priority integer default 0,
  p_pipeline_version integer default null
) returns table (job_id bigint, created boolean, status text, pipeline_version integer)
language plpgsql
as $fn$
declare
  v_job_id bigint;
  v_created boolean;
begin
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql', true);
  end if;
  select s.job_id, s.created into v_job_id, v_created
    from ballast_private.submit(p_pipeline, p_input, p_idempotency_key, p_tenant_id, p_priority,
                                p_pipeline_version) s;
  return query select j.id, v_created, j.status, j.pipeline_version from ballast_private.jobs j where j.id = v_job_id;
end
$fn$;
