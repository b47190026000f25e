-- Up Migration
--
-- 0010: tenants and roles. Who may read and do what is decided in Postgres, so GraphQL (PostGraphile), other
-- systems' SQL sessions and psql get the same isolation.
--
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
--
-- Whose tenant: a login bound to a tenant with ballast.bind_role_tenant (ballast_private.role_tenants) acts for
-- that tenant whatever it sets; an API session (member of ballast_authenticator, or the owner) acts for the tenant
-- in its setting ballast.tenant_id, which the API takes from the verified token. Anyone else restricted has no
-- tenant and sees nothing.
--
-- Enforcement: row-level security on the private tables behind the views (the views are security_invoker, so it
-- applies to whoever reads them); the verbs are SECURITY DEFINER functions that check the caller's tenant
-- themselves (they run as the owner, which bypasses RLS) and are executable only by the roles allowed to use them.
-- EXECUTE on every other function is revoked from PUBLIC.

insert into ballast_private.error_codes (sqlstate, name, meaning) values
  ('BA014', 'forbidden', 'The caller''s role or tenant does not allow this action.');

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

-- Logins bound to a tenant (other systems' SQL sessions).
create table ballast_private.role_tenants (
  role_name name primary key,
  tenant_id text not null
    constraint role_tenant_format check (tenant_id <> '' and length(tenant_id) <= 200),
  bound_at timestamptz not null default ballast.now()
);

-- caller_role(): the role the caller acts as: the SET ROLE role (the API's per-request role), else the login.
-- Read inside SECURITY DEFINER functions too: they change current_user, not the role setting or session_user.
create function ballast_private.caller_role() returns name
language sql
stable
as $fn$
  select case when current_setting('role') in ('none', '') then session_user else current_setting('role')::name end
$fn$;

-- caller_unrestricted(): true for the owner of the schemas (workers, migrations), operators and reporters
-- (superusers are members of every role), false for clients and anyone else.
create function ballast_private.caller_unrestricted() returns boolean
language sql
stable
as $fn$
  select pg_has_role(r, 'ballast_operator', 'member') or pg_has_role(r, 'ballast_reporter', 'member')
         or pg_has_role(r, (select nspowner from pg_namespace where nspname = 'ballast_private'), 'member')
    from ballast_private.caller_role() r
$fn$;

-- caller_tenant(): the tenant a restricted caller acts for, or null (then it sees nothing and may do nothing).
-- SECURITY DEFINER: it reads role_tenants, which callers may not read; it returns only the caller's own binding.
create function ballast_private.caller_tenant() returns text
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $fn$
  select coalesce(
    (select t.tenant_id from ballast_private.role_tenants t where t.role_name = session_user),
    case when pg_has_role(session_user, 'ballast_authenticator', 'member')
              or pg_has_role(session_user, (select nspowner from pg_namespace where nspname = 'ballast_private'), 'member')
         then nullif(current_setting('ballast.tenant_id', true), '') end)
$fn$;

-- caller_actor(actor): who the audit trail names. Unrestricted callers may name anyone (an operator tool passing
-- its user); a restricted caller is named by its API identity (ballast.actor, set from the token) or its login.
create function ballast_private.caller_actor(p_actor text) returns text
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $fn$
  select case when ballast_private.caller_unrestricted()
              then coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''))
              when exists (select 1 from ballast_private.role_tenants t where t.role_name = session_user)
              then session_user::text
              else coalesce(nullif(current_setting('ballast.actor', true), ''), session_user::text) end
$fn$;

-- require_tenant(tenant, what): raises BA007 (as if the row did not exist) when a restricted caller may not see
-- `tenant`; the message names `what`. Unrestricted callers pass.
create function ballast_private.require_tenant(p_tenant text, p_what text) returns void
language plpgsql
stable
as $fn$
begin
  if p_tenant is null or not (ballast_private.caller_unrestricted() or p_tenant = ballast_private.caller_tenant()) then
    raise exception using errcode = 'BA007', message = format('%s does not exist', p_what);
  end if;
end
$fn$;

-- bind_role_tenant(role, tenant): the login `role` acts for `tenant` (null: unbinds). For other systems' SQL
-- sessions: create a login, grant it ballast_client, bind it. Raises BA002 for an unknown role.
create function ballast.bind_role_tenant(p_role name, p_tenant_id text) returns void
language plpgsql
as $fn$
begin
  if not exists (select 1 from pg_roles where rolname = p_role) then
    perform ballast_private.bad_argument('role', format('%L is not a role of this server', p_role), 'Create the login first (create role ... login).');
  end if;
  if p_tenant_id is null then
    delete from ballast_private.role_tenants where role_name = p_role;
  else
    insert into ballast_private.role_tenants (role_name, tenant_id) values (p_role, p_tenant_id)
    on conflict (role_name) do update set tenant_id = excluded.tenant_id, bound_at = ballast.now();
  end if;
end
$fn$;

-- The verbs clients may call, checked. ballast_private.cancel_job is the unchecked body from 0007.
alter function ballast.cancel_job(bigint, text, text) set schema ballast_private;

-- submit_job (0004) again, checked: a restricted caller submits for its own tenant (p_tenant_id may be left at
-- 'default' or name it); naming another raises BA014; without a tenant, BA014 too.
create or replace function ballast.submit_job(
  p_pipeline text,
  p_input jsonb default '{}'::jsonb,
  p_idempotency_key text default null,
  p_tenant_id text default 'default',
  p_priority integer default 0,
  p_pipeline_version integer default null
) returns table (job_id bigint, created boolean, status text, pipeline_version integer)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
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

-- cancel_job(job_id, reason, actor): as ballast_private.cancel_job (0007), for a job the caller may see (else BA007).
create function ballast.cancel_job(p_job_id bigint, p_reason text default null, p_actor text default null)
returns table (job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
begin
  perform ballast_private.require_tenant((select j.tenant_id from ballast_private.jobs j where j.id = p_job_id),
                                         format('job %s', p_job_id));
  return query select * from ballast_private.cancel_job(p_job_id, p_reason, ballast_private.caller_actor(p_actor));
end
$fn$;

-- insert_job (0006) again: INSERT INTO ballast.jobs goes through the checked submit_job, as its caller, and
-- RETURNING reads the whole view row (columns added to the view, like the totals of 0009, come back filled).
create or replace function ballast_private.insert_job() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_job_id bigint;
begin
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql_insert', true);
  end if;
  select s.job_id into v_job_id
    from ballast.submit_job(new.pipeline, coalesce(new.input, '{}'::jsonb), new.idempotency_key,
                            coalesce(new.tenant_id, 'default'), coalesce(new.priority, 0), new.pipeline_version) s;
  select v.* into new from ballast.jobs v where v.id = v_job_id;
  return new;
end
$fn$;

-- Operator verbs run as the owner (operators have no write privilege on the tables); only operators may call them.
alter function ballast.replay_step(bigint, text, boolean, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.replay_job(bigint, text, text, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.send_event(text, jsonb, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.resolve_review(bigint, text, jsonb, text, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.set_budget(text, numeric, text, text, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.set_model_price(text, text, numeric, numeric, numeric, timestamptz, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.set_provider_cooldown(text, text, timestamptz, text) security definer set search_path = pg_catalog, pg_temp;
alter function ballast.bind_role_tenant(name, text) security definer set search_path = pg_catalog, pg_temp;

-- notify_event (0003) again: the payload also names the tenant (so a server can route it to the tenant's
-- subscribers without a query), the step and the time.
create or replace function ballast_private.notify_event() returns trigger
language plpgsql
as $fn$
begin
  perform pg_notify('ballast_events', json_build_object(
    'id', new.id, 'job_id', new.job_id, 'step_id', new.step_id, 'type', new.type, 'status', new.status,
    'tenant_id', (select j.tenant_id from ballast_private.jobs j where j.id = new.job_id),
    'step_name', (select s.name from ballast_private.steps s where s.id = new.step_id),
    'at', new.at)::text);
  return null;
end
$fn$;

-- Row-level security. The policies read caller_unrestricted() and caller_tenant() once per statement (as
-- subqueries: init plans), not once per row. Child tables see rows of the jobs the caller can see.
alter table ballast_private.jobs enable row level security;
create policy tenant_rows on ballast_private.jobs for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
alter table ballast_private.steps enable row level security;
create policy tenant_rows on ballast_private.steps for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
alter table ballast_private.attempts enable row level security;
create policy tenant_rows on ballast_private.attempts for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
alter table ballast_private.events enable row level security;
create policy tenant_rows on ballast_private.events for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
alter table ballast_private.effects enable row level security;
create policy tenant_rows on ballast_private.effects for select
  using ((select ballast_private.caller_unrestricted()) or step_id in (select s.id from ballast_private.steps s));
alter table ballast_private.model_calls enable row level security;
create policy tenant_rows on ballast_private.model_calls for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
alter table ballast_private.budgets enable row level security;
create policy tenant_rows on ballast_private.budgets for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
alter table ballast_private.budget_usage enable row level security;
create policy tenant_rows on ballast_private.budget_usage for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));

-- Privileges. Nothing for PUBLIC; each role gets what its part needs.
revoke execute on all functions in schema ballast, ballast_private from public;
-- And for functions later migrations create (as the user running migrations): the global form, since per-schema
-- default privileges can only add to the global ones. Every later migration grants what its functions need.
alter default privileges revoke execute on functions from public;
grant usage on schema ballast, ballast_private to ballast_client, ballast_operator, ballast_reporter;

-- What the views and policies call, as their reader; json_schema_errors and its helpers are pure.
grant execute on function ballast.now(), ballast_private.caller_role(), ballast_private.caller_unrestricted(),
  ballast_private.caller_tenant(), ballast_private.budget_period_start(text, timestamptz),
  ballast.json_schema_errors(jsonb, jsonb), ballast.model_price(text, text, timestamptz),
  ballast.task_identifier(text, integer)
  to ballast_client, ballast_operator, ballast_reporter;
do $do$
declare
  v_fn regprocedure;
begin
  for v_fn in select p.oid::regprocedure from pg_proc p join pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'ballast' and p.proname like '\_json\_schema\_%' loop
    execute format('grant execute on function %s to ballast_client, ballast_operator, ballast_reporter', v_fn);
  end loop;
end
$do$;

grant execute on function ballast.submit_job(text, jsonb, text, text, integer, integer),
  ballast.cancel_job(bigint, text, text)
  to ballast_client, ballast_operator;
grant execute on function ballast.replay_step(bigint, text, boolean, text), ballast.replay_job(bigint, text, text, text),
  ballast.send_event(text, jsonb, text), ballast.resolve_review(bigint, text, jsonb, text, text),
  ballast.set_budget(text, numeric, text, text, text),
  ballast.set_model_price(text, text, numeric, numeric, numeric, timestamptz, text),
  ballast.set_provider_cooldown(text, text, timestamptz, text), ballast.bind_role_tenant(name, text)
  to ballast_operator;

-- Tables behind the views a role reads (security_invoker views need them), filtered by the policies above.
grant select on ballast_private.jobs, ballast_private.steps, ballast_private.attempts, ballast_private.events,
  ballast_private.effects, ballast_private.model_calls, ballast_private.budgets, ballast_private.budget_usage,
  ballast_private.pipelines, ballast_private.error_codes, ballast_private.step_transitions,
  ballast_private.job_transitions, ballast_private.prompts, ballast_private.model_prices
  to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast_private.signals, ballast_private.workers, ballast_private.provider_cooldowns,
  ballast_private.budget_reservations, ballast_private.role_tenants
  to ballast_operator, ballast_reporter;

grant select on ballast.jobs, ballast.steps, ballast.attempts, ballast.events, ballast.effects, ballast.model_calls,
  ballast.reviews, ballast.dead_letters, ballast.step_items, ballast.budgets, ballast.pipelines, ballast.error_codes,
  ballast.step_transitions, ballast.job_transitions, ballast.prompts, ballast.model_prices
  to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast.signals, ballast.workers, ballast.provider_cooldowns
  to ballast_operator, ballast_reporter;
grant insert on ballast.jobs to ballast_client, ballast_operator;
