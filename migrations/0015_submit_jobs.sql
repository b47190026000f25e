-- Up Migration
--
-- 0015: set-based submission, ballast.submit_jobs (issue 11, item 9).
--
-- Why: submitting many jobs at once was no faster than one by one (about 250 jobs/s against about 38,000 for
-- graphile_worker.add_jobs), because every path went through ballast_private.submit (0004), which does everything
-- per job: the argument checks, the pipeline lookup, one job insert, one steps insert and one wake-up per root step.
-- submit_jobs takes the whole batch and does each of those once: one statement validates every input, one INSERT
-- writes every job, one reads back the jobs of keys used before, one INSERT writes every step, one statement wakes
-- the root steps.
--
-- Same semantics as ballast.submit_job (0004, checked for tenancy in 0010), per input: the same request hash
-- (pipeline, requested version, input), so a key given to submit_job and then to submit_jobs (or the other way
-- round) with the same request returns the same job; the same step rows; the same tenancy checks and grants.
-- INSERT INTO ballast.jobs (0006/0010) stays row by row through its INSTEAD OF trigger (and so through submit_job);
-- a multi-row INSERT therefore has per-row semantics too.

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

revoke execute on function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer) from public;
grant execute on function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer)
  to ballast_client, ballast_operator;
