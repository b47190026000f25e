-- Up Migration
--
-- Baseline, file 1 of 11: the map of the whole schema, then the foundations every other file stands on: the two
-- schemas, the privilege rule, the roles, the clock (ballast.now) and tenancy (who the caller is and which tenant it
-- acts for).
--
-- This baseline (0001_foundations .. 0011_reports) is the fold of the numbered migrations 0001_schema ..
-- 0030_api_descriptions (0011 was never used) that ballast ran up to git commit db4e03d: a database migrated from it
-- equals one migrated through those 29 files (docs/schema.sql is the same). Each object appears once, with its
-- current definition; its SECURITY DEFINER, search_path, grants, row-level security and comments are written where it
-- is defined. A database that ran the old files is adopted by src/db/migrate.ts (src/db/legacy-migrations.ts): its
-- 29 history rows are replaced by these names, nothing is run again. The old files, with the history of every
-- decision, are in git at db4e03d.
--
-- Map. Two schemas:
--   ballast_private  the tables (pipelines, jobs, steps, attempts, effects, effect intents, signals, events,
--                    workers, the model tables) and the lookup tables that drive the state machines
--                    (job_transitions, step_transitions) and the error catalogue. Nothing outside ballast's own SQL
--                    functions should write here.
--   ballast          the public surface: the clock (ballast.now), the functions every client calls (submit_job,
--                    claim_steps, settle_and_claim, ...) and the views (0010_public_views). GraphQL, psql users and
--                    other systems see only this schema.
-- Files, by concern, in dependency order:
--   0001_foundations           schemas, privileges, roles, ballast.now, tenancy (role_tenants, caller_*,
--                              bind_role_tenant)
--   0002_tables                every other table, with its indexes, row-level security, grants and comments; the
--                              error catalogue and the transition tables
--   0003_json_schema           JSON Schema validation in SQL (ballast.json_schema_errors)
--   0004_state_machines        status guards, audit events and NOTIFY, the job counters and derived job status
--   0005_pipelines_and_submit  register_pipeline, submit_job, submit_jobs; key and size limits
--   0006_execution             workers, liveness, claim, settle, leases, reap, map steps, claim gates
--   0007_effects_and_signals   the side-effect ledger and intents, waiting for and sending external events
--   0008_operator_verbs        cancel, replay, replay_dead_letters, recount_job
--   0009_model_steps_and_budgets           prompts, prices, budgets, cooldowns, model calls, reviews
--   0010_public_views          the views of schema ballast and INSERT INTO ballast.jobs
--   0011_reports               reports, stuck work, retention (prune_history), the oldest transactions
-- Lifecycle. A pipeline version is registered once (its definition hash is then fixed). A job is submitted against
-- the newest (or a named) version and pinned to it; its steps are created with it, roots `queued`, the rest
-- `pending`. The step rows are the queue: ballast.claim_steps takes runnable steps (FOR UPDATE SKIP LOCKED) and opens
-- an attempt with a lease for each; settling an attempt marks the step `succeeded` and queues the dependants whose
-- dependencies are all done, or schedules a retry (`retrying`), or fails the step for good, skipping its dependants.
-- The job's status is derived from counters of its steps by status, kept by statement-level triggers in the same
-- transaction. Every status change of a job or step appends an event (append-only) and each statement that appends
-- events NOTIFYs `ballast_events` once.
--
-- New migrations: numbered from 0031, forward-only (never edit a file that was released; change things with a new
-- file), each with a header comment that says what it changes and why, and docs/schema.sql regenerated with it.

create schema if not exists ballast_private;
create schema if not exists ballast;

comment on schema ballast is 'ballast public surface: functions and views. Tables live in ballast_private.';
comment on schema ballast_private is 'ballast internal tables: write only through the functions in schema ballast.';

-- Privileges. Nothing for PUBLIC: EXECUTE on functions is a default privilege of PUBLIC, revoked here for every
-- function the user running migrations creates (the global form, since per-schema default privileges can only add to
-- the global ones), so each function below grants what its callers need, next to its definition.
alter default privileges revoke execute on functions from public;

-- Roles (NOLOGIN group roles, cluster-wide, created once):
--   ballast_anonymous      nothing at all (a request without a token).
--   ballast_client         its own tenant's jobs, steps, attempts, events, model calls, reviews and budget: read,
--                          submit, cancel. (The "submitter" of other systems' SQL sessions.)
--   ballast_operator       every tenant: read, submit, cancel, replay, send events, resolve reviews, set budgets
--                          and prices.
--   ballast_reporter       every tenant, read only (the views).
--   ballast_authenticator  a login that connects for an API (PostGraphile) and switches to one of the above per
--                          request (SET ROLE); only such sessions (and the owner's) are trusted to say their tenant
--                          through the setting ballast.tenant_id.
-- Workers and migrations run as the owner of the schemas, which row-level security does not restrict.
do $do$
declare
  v_role text;
begin
  foreach v_role in array array['ballast_anonymous', 'ballast_client', 'ballast_operator', 'ballast_reporter',
                                'ballast_authenticator'] loop
    if not exists (select 1 from pg_roles where rolname = v_role) then
      execute format('create role %I nologin', v_role);
    end if;
  end loop;
  -- The user running the migrations (the owner) may switch to the API roles, e.g. when it serves GraphQL itself.
  if not (select rolsuper from pg_roles where rolname = current_user) then
    execute format('grant ballast_anonymous, ballast_client, ballast_operator, ballast_reporter to %I', current_user);
  end if;
end
$do$;

grant usage on schema ballast_private to ballast_client, ballast_operator, ballast_reporter;
grant usage on schema ballast to ballast_client, ballast_operator, ballast_reporter;

-- ballast.now(): the clock every ballast function reads.
-- Takes nothing; returns clock_timestamp(), or the setting `ballast.now` when the session's login is a member of the
-- owner of schema ballast_private (tests, an operator rehearsing a schedule as the owner). clock_timestamp rather
-- than now(): leases and latencies must not be frozen at the start of a long transaction. Volatile for that reason.
create function ballast.now() returns timestamp with time zone
language sql volatile parallel safe
as $fn$
  select case when coalesce(current_setting('ballast.now', true), '') = '' then clock_timestamp()
              when pg_has_role(session_user, (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'ballast_private'), 'member')
              then current_setting('ballast.now', true)::timestamptz
              else clock_timestamp() end
$fn$;
grant execute on function ballast.now() to ballast_client, ballast_operator, ballast_reporter;

-- bad_argument(field, problem, fix): raises BA002 with a message naming the field, what is wrong and what to do.
create function ballast_private.bad_argument(p_field text, p_problem text, p_fix text) returns void
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA002',
    message = format('%s: %s', p_field, p_problem),
    hint = p_fix,
    detail = jsonb_build_array(jsonb_build_object('path', p_field, 'message', p_problem))::text;
end
$fn$;
grant execute on function ballast_private.bad_argument(text,text,text) to ballast_client, ballast_operator, ballast_reporter;

-- Logins bound to a tenant (other systems' SQL sessions).
create table ballast_private.role_tenants (
  role_name name not null,
  tenant_id text not null,
  bound_at timestamp with time zone default ballast.now() not null,
  constraint role_tenants_pkey primary key (role_name)
);
alter table ballast_private.role_tenants add constraint role_tenant_format check (tenant_id <> '' and octet_length(tenant_id) <= 200) not valid;
grant select on ballast_private.role_tenants to ballast_operator, ballast_reporter;

-- caller_role(): the role the caller acts as: the SET ROLE role (the API's per-request role), else the login.
-- Read inside SECURITY DEFINER functions too: they change current_user, not the role setting or session_user.
create function ballast_private.caller_role() returns name
language sql stable
as $fn$
  select case when current_setting('role') in ('none', '') then session_user else current_setting('role')::name end
$fn$;
grant execute on function ballast_private.caller_role() to ballast_client, ballast_operator, ballast_reporter;

-- caller_unrestricted(): true for the owner of the schemas (workers, migrations), operators and reporters
-- (superusers are members of every role), false for clients and anyone else.
create function ballast_private.caller_unrestricted() returns boolean
language sql stable
as $fn$
  select pg_has_role(r, 'ballast_operator', 'member') or pg_has_role(r, 'ballast_reporter', 'member')
         or pg_has_role(r, (select nspowner from pg_namespace where nspname = 'ballast_private'), 'member')
    from ballast_private.caller_role() r
$fn$;
grant execute on function ballast_private.caller_unrestricted() to ballast_client, ballast_operator, ballast_reporter;

-- caller_tenant(): the tenant a restricted caller acts for, or null (then it sees nothing and may do nothing).
-- SECURITY DEFINER: it reads role_tenants, which callers may not read; it returns only the caller's own binding.
create function ballast_private.caller_tenant() returns text
language sql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
  select coalesce(
    (select t.tenant_id from ballast_private.role_tenants t where t.role_name = session_user),
    case when pg_has_role(session_user, 'ballast_authenticator', 'member')
              or pg_has_role(session_user, (select nspowner from pg_namespace where nspname = 'ballast_private'), 'member')
         then nullif(current_setting('ballast.tenant_id', true), '') end)
$fn$;
grant execute on function ballast_private.caller_tenant() to ballast_client, ballast_operator, ballast_reporter;

-- caller_actor(actor): who the audit trail names. Unrestricted callers may name anyone (an operator tool passing its
-- user); the API's login (ballast_authenticator) is named by the token's identity it set in ballast.actor; any other
-- restricted login by its own name, whatever it sets.
create function ballast_private.caller_actor(p_actor text) returns text
language sql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
  select case when ballast_private.caller_unrestricted()
              then coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''))
              when pg_has_role(session_user, 'ballast_authenticator', 'member')
              then coalesce(nullif(current_setting('ballast.actor', true), ''), session_user::text)
              else session_user::text end
$fn$;

-- require_tenant(tenant, what): raises BA014 when a restricted caller acts for no tenant, BA007 (as if the row did
-- not exist; the message names `what`) when it may not see `tenant`. Unrestricted callers pass.
create function ballast_private.require_tenant(p_tenant text, p_what text) returns void
language plpgsql stable
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

-- bind_role_tenant: the tenant id in bytes (BA002), as everywhere else.
create function ballast.bind_role_tenant(p_role name, p_tenant_id text) returns void
language plpgsql volatile
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
grant execute on function ballast.bind_role_tenant(name,text) to ballast_operator;
