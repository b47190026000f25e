-- Up Migration
--
-- 0023: INSERT INTO ballast.jobs is set-based: a multi-row INSERT writes its jobs with one INSERT, their steps with
-- one INSERT and their events with one INSERT, whatever the number of rows (issue 11, item 9).
--
-- Why: the view's INSTEAD OF trigger (0006, 0010) submitted each row on its own, through submit_job: per row, an
-- INSERT of the job and one of its steps, each firing the statement triggers (events, counters, NOTIFY) again.
-- Postgres calls INSTEAD OF triggers row by row; it also fires the view's statement-level AFTER triggers once per
-- statement when an INSTEAD OF trigger handled its rows, which is where the writing now happens.
--
-- How:
--  - per row (insert_job, INSTEAD OF): the tenancy checks of submit_job (0010), the argument checks and the input
--    checked against the pipeline's contract (checked_pipeline, 0021), then the idempotency key: a transaction
--    advisory lock on (tenant, key) (lock_idempotency_key, 0021) serialises submissions of one key through this path
--    and submit_job (which takes the same lock), so a concurrent duplicate waits for the first and then finds its job; a key used before, by a
--    stored job or by an earlier row of this statement, returns that job (BA003 when the request differs); otherwise
--    the row gets a job id of its own (nextval of the jobs' identity) and is noted in the session's temporary table
--    ballast_job_inserts. The row returned to RETURNING is the job as it will be stored: queued, with the defaults
--    of the jobs table.
--  - per statement (insert_jobs_flush, AFTER INSERT ... FOR EACH STATEMENT on the view): one INSERT of all noted
--    jobs (with their ids, counted: n_total set), one INSERT of all their steps (new_steps, 0021), then the notes are
--    deleted. If a noted key was taken meanwhile by a path that does not take the advisory lock (submit_jobs), the
--    statement fails with 40001 (retry with the same keys: the retry returns that job), since its RETURNING already
--    named ids that will not exist; nothing is written.
-- Semantics are those of 0006/0010 otherwise: the same rows, events and errors as submit_job per row, in the
-- statement's transaction; an error in any row fails the whole statement.

-- job_inserts_ready() -> whether this session's note table pg_temp.ballast_job_inserts exists. Called only inside
-- the SECURITY DEFINER functions below, as their owner: a table of that name created by the session's own role (any
-- login may create temporary tables) would let it slip rows past every check into the jobs the owner writes, so a
-- table not owned by the owner raises 42501 instead of being used.
create function ballast_private.job_inserts_ready() returns boolean
language plpgsql
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

-- insert_job(): INSTEAD OF INSERT on ballast.jobs, per row (see the header).
create or replace function ballast_private.insert_job() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := coalesce(new.tenant_id, 'default');
  v_input jsonb := coalesce(new.input, '{}'::jsonb);
  v_priority integer := coalesce(new.priority, 0);
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_prior record;
  v_id bigint;
  v_now timestamptz := ballast.now();
begin
  if not ballast_private.caller_unrestricted() then
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot submit jobs', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if new.tenant_id is not null and new.tenant_id not in ('default', v_tenant) then
      raise exception using errcode = 'BA014', message = format('tenant %s cannot submit jobs for tenant %s', v_tenant, new.tenant_id),
        hint = 'Leave the tenant out: jobs are submitted for your own tenant.';
    end if;
    perform set_config('ballast.actor', ballast_private.caller_actor(null), true);
  end if;
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql_insert', true);
  end if;

  v_pipeline := ballast_private.checked_pipeline(new.pipeline, v_input, new.idempotency_key, v_tenant, v_priority,
                                                 new.pipeline_version);
  v_hash := ballast_private.request_hash(new.pipeline, new.pipeline_version, v_input);

  if not ballast_private.job_inserts_ready() then
    create temporary table ballast_job_inserts (
      id bigint primary key, tenant_id text not null, pipeline text not null, pipeline_version integer not null,
      idempotency_key text, request_hash text not null, input jsonb not null, priority integer not null,
      created_at timestamptz not null, steps integer not null) on commit delete rows;
  end if;

  if new.idempotency_key is not null then
    perform ballast_private.lock_idempotency_key(v_tenant, new.idempotency_key);
    -- An earlier row of this statement with the key: the same job (it is noted, not stored yet).
    select i.id, i.request_hash into v_prior from pg_temp.ballast_job_inserts i
     where i.tenant_id = v_tenant and i.idempotency_key = new.idempotency_key;
    if found then
      if v_prior.request_hash <> v_hash then
        perform ballast_private.raise_key_conflict(new.idempotency_key, v_prior.id);
      end if;
      v_id := v_prior.id;
    else
      -- A stored job with the key (committed: the lock above waited for any submission of it still running).
      select j.id, j.request_hash into v_prior from ballast_private.jobs j
       where j.tenant_id = v_tenant and j.idempotency_key = new.idempotency_key;
      if found then
        if v_prior.request_hash <> v_hash then
          perform ballast_private.raise_key_conflict(new.idempotency_key, v_prior.id);
        end if;
        select v.* into new from ballast.jobs v where v.id = v_prior.id;
        return new;
      end if;
    end if;
  end if;

  if v_id is null then
    v_id := nextval('ballast_private.jobs_id_seq');
    insert into pg_temp.ballast_job_inserts (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                             input, priority, created_at, steps)
    values (v_id, v_tenant, v_pipeline.name, v_pipeline.version, new.idempotency_key, v_hash, v_input, v_priority,
            v_now, jsonb_array_length(v_pipeline.definition -> 'steps'));
  end if;
  select i.id, i.tenant_id, i.pipeline, i.pipeline_version, i.idempotency_key, i.input, 'queued', i.priority,
         null::jsonb, null::jsonb, i.created_at, null::timestamptz, null::timestamptz, i.created_at, 0, 0, 0,
         null::timestamptz
    into new.id, new.tenant_id, new.pipeline, new.pipeline_version, new.idempotency_key, new.input, new.status,
         new.priority, new.result, new.error, new.created_at, new.started_at, new.finished_at, new.updated_at,
         new.input_tokens, new.output_tokens, new.cost_usd, new.pruned_at
    from pg_temp.ballast_job_inserts i where i.id = v_id;
  return new;
end
$fn$;

-- insert_jobs_flush(): AFTER INSERT ... FOR EACH STATEMENT on ballast.jobs: writes the jobs insert_job noted (see the
-- header). Raises 40001 when a noted key was taken meanwhile by another path; nothing is written then.
create function ballast_private.insert_jobs_flush() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
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

create trigger insert_jobs_flush
  after insert on ballast.jobs
  for each statement execute function ballast_private.insert_jobs_flush();
