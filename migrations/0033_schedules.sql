-- Up Migration
-- Recurring pipelines (issue 15, item 2): cron schedules stored in Postgres, each firing an idempotent submission.
--
-- A schedule names a pipeline, an input, a five-field cron expression and a time zone. Its next fire time is computed
-- here, in SQL (ballast_private.cron_next), so a schedule created from psql is checked and shown like one created
-- from TypeScript, GraphQL or the CLI. Workers fire due schedules (ballast.fire_schedules, every second by default):
-- each slot becomes ballast_private.submit with the idempotency key 'schedule:<id>:<slot as epoch seconds>', so two
-- workers firing at once, a worker that dies between submitting and committing, or a restart never submit a slot
-- twice (the second submission finds the first job). Rows are taken FOR UPDATE SKIP LOCKED: a second scheduler skips
-- what the first is firing.
--
-- Missed slots (no worker ran while they passed, the schedule was paused): `on_missed` says what to do.
--   skip      (default) a slot is fired only while it is at most one minute late; older slots are counted as skipped.
--   catch_up  every missed slot is fired, oldest first, at most max_catch_up of them (the most recent ones); older
--             ones are counted as skipped.
-- A paused schedule fires nothing; on resume its next slot is computed from the time of the resume (the slots passed
-- while paused are not caught up).
--
-- Time zones: the expression is evaluated in local time of time_zone (any name of pg_timezone_names). A local time
-- that does not exist (the hour skipped when clocks go forward) fires at the instant Postgres maps it to (an hour
-- later); a local time that exists twice (clocks go back) fires once.

-- ==================== cron expressions ===========================================================================

-- The values one field of a cron expression allows, sorted. p_field: '*', 'a', 'a-b', '*/n', 'a-b/n', 'a/n', or a
-- comma-separated list of those; p_names: names for the values from p_min (jan..dec, sun..sat), case-insensitive.
-- Raises BA002 naming the field and what is wrong. Sunday is 0 or 7 in the day-of-week field (7 becomes 0).
create function ballast_private.cron_field(p_field text, p_what text, p_min int, p_max int, p_names text[] default null)
returns int[]
language plpgsql immutable
as $fn$
declare
  v_part text;
  v_range text;
  v_step int;
  v_lo int;
  v_hi int;
  v_values int[] := '{}';
  v_m text[];
begin
  foreach v_part in array string_to_array(lower(p_field), ',') loop
    v_m := regexp_match(v_part, '^([^/]+)(?:/([0-9]{1,4}))?$');
    if v_m is null then
      raise exception using errcode = 'BA002', message = format('cron: the %s field %L is not valid', p_what, p_field),
        hint = 'Use *, a value, a range a-b, a step */n or a-b/n, or a list of those separated by commas.',
        detail = jsonb_build_array(jsonb_build_object('path', 'cron', 'message', format('the %s field %L is not valid', p_what, p_field)))::text;
    end if;
    v_range := v_m[1];
    v_step := coalesce(v_m[2]::int, 1);
    if v_range = '*' then
      v_lo := p_min;
      v_hi := p_max;
    else
      v_m := regexp_match(v_range, '^([a-z]{3}|[0-9]{1,4})(?:-([a-z]{3}|[0-9]{1,4}))?$');
      if v_m is null then
        v_lo := null;
      else
        v_lo := case when v_m[1] ~ '^[0-9]+$' then v_m[1]::int else array_position(p_names, v_m[1]) - 1 + p_min end;
        v_hi := case when v_m[2] is null then (case when v_step > 1 or v_part ~ '/' then p_max else v_lo end)
                     when v_m[2] ~ '^[0-9]+$' then v_m[2]::int else array_position(p_names, v_m[2]) - 1 + p_min end;
      end if;
    end if;
    if v_lo is null or v_hi is null or v_step < 1 or v_lo < p_min or v_hi > (case when p_what = 'day-of-week' then 7 else p_max end) or v_lo > v_hi then
      raise exception using errcode = 'BA002',
        message = format('cron: the %s field %L is out of range or unknown (allowed: %s to %s%s)', p_what, p_field, p_min,
                         case when p_what = 'day-of-week' then 7 else p_max end,
                         case when p_names is not null then format(', or %s', array_to_string(p_names, ' ')) else '' end),
        hint = 'Fix that field of the expression: minute hour day-of-month month day-of-week.',
        detail = jsonb_build_array(jsonb_build_object('path', 'cron', 'message', format('the %s field %L is out of range', p_what, p_field)))::text;
    end if;
    v_values := v_values || array(select case when p_what = 'day-of-week' and g = 7 then 0 else g end
                                    from generate_series(v_lo, v_hi, v_step) g);
  end loop;
  return array(select distinct v from unnest(v_values) v order by v);
end
$fn$;

-- A cron expression parsed (ballast_private.cron_parse): the allowed values of each field, sorted, and whether the
-- two day fields were left open ('*').
create type ballast_private.cron_spec as (minutes int[], hours int[], days int[], months int[], weekdays int[],
  days_any boolean, weekdays_any boolean);

-- A cron expression parsed: the allowed minutes, hours, days of the month, months and days of the week, and whether
-- the two day fields were restricted (cron's rule: when both are, a day matches if either matches). Macros: @yearly
-- (@annually), @monthly, @weekly, @daily (@midnight), @hourly. Raises BA002 for anything else it cannot read.
create function ballast_private.cron_parse(p_cron text)
returns ballast_private.cron_spec
language plpgsql immutable
as $fn$
declare
  v_expr text := btrim(coalesce(p_cron, ''));
  v_fields text[];
  c ballast_private.cron_spec;
begin
  v_expr := case lower(v_expr)
    when '@yearly' then '0 0 1 1 *' when '@annually' then '0 0 1 1 *' when '@monthly' then '0 0 1 * *'
    when '@weekly' then '0 0 * * 0' when '@daily' then '0 0 * * *' when '@midnight' then '0 0 * * *'
    when '@hourly' then '0 * * * *' else v_expr end;
  v_fields := regexp_split_to_array(v_expr, '\s+');
  if v_expr = '' or cardinality(v_fields) <> 5 then
    raise exception using errcode = 'BA002',
      message = format('cron: %L has %s fields, not 5', p_cron, case when v_expr = '' then 0 else cardinality(v_fields) end),
      hint = 'Write minute hour day-of-month month day-of-week, e.g. ''*/15 9-17 * * mon-fri'', or a macro such as @daily.',
      detail = jsonb_build_array(jsonb_build_object('path', 'cron', 'message', 'not five fields'))::text;
  end if;
  c.minutes := ballast_private.cron_field(v_fields[1], 'minute', 0, 59);
  c.hours := ballast_private.cron_field(v_fields[2], 'hour', 0, 23);
  c.days := ballast_private.cron_field(v_fields[3], 'day-of-month', 1, 31);
  c.months := ballast_private.cron_field(v_fields[4], 'month', 1, 12,
    array['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']);
  c.weekdays := ballast_private.cron_field(v_fields[5], 'day-of-week', 0, 6, array['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']);
  c.days_any := v_fields[3] in ('*', '?');
  c.weekdays_any := v_fields[5] in ('*', '?');
  return c;
end
$fn$;

-- The first instant after p_after at which the expression fires in time zone p_tz, or null if it never does within
-- eight years (e.g. '0 0 30 2 *'). Walks local time coarse to fine: a month that is not allowed jumps to the next
-- month, a day to the next day, an hour to the next hour, a minute to the next allowed minute, so a yearly schedule
-- takes a few dozen iterations, not a minute-by-minute scan (measured: under 1 ms for '0 0 29 2 *' from any date).
-- (cron_next_of takes the expression parsed, so a walk over many slots parses it once: parsing takes ~0.3 ms.)
create function ballast_private.cron_next_of(c ballast_private.cron_spec, p_tz text, p_after timestamptz)
returns timestamptz
language plpgsql stable
as $fn$
declare
  v_local timestamp := date_trunc('minute', p_after at time zone p_tz) + interval '1 minute';
  v_end timestamp := v_local + interval '8 years';
  v_day_ok boolean;
  v_minute int;
  v_at timestamptz;
begin
  while v_local < v_end loop
    if not extract(month from v_local)::int = any (c.months) then
      v_local := date_trunc('month', v_local) + interval '1 month';
      continue;
    end if;
    v_day_ok := case
      when c.days_any and c.weekdays_any then true
      when c.days_any then extract(dow from v_local)::int = any (c.weekdays)
      when c.weekdays_any then extract(day from v_local)::int = any (c.days)
      else extract(day from v_local)::int = any (c.days) or extract(dow from v_local)::int = any (c.weekdays) end;
    if not v_day_ok then
      v_local := date_trunc('day', v_local) + interval '1 day';
      continue;
    end if;
    if not extract(hour from v_local)::int = any (c.hours) then
      v_local := date_trunc('hour', v_local) + interval '1 hour';
      continue;
    end if;
    select min(m) into v_minute from unnest(c.minutes) m where m >= extract(minute from v_local)::int;
    if v_minute is null then
      v_local := date_trunc('hour', v_local) + interval '1 hour';
      continue;
    end if;
    v_local := date_trunc('hour', v_local) + make_interval(mins => v_minute);
    v_at := v_local at time zone p_tz;
    if v_at > p_after then
      return v_at;
    end if;
    v_local := v_local + interval '1 minute';
  end loop;
  return null;
end
$fn$;

-- cron_next_of of the expression text.
create function ballast_private.cron_next(p_cron text, p_tz text, p_after timestamptz)
returns timestamptz
language sql stable
as $fn$
  select ballast_private.cron_next_of(ballast_private.cron_parse(p_cron), p_tz, p_after)
$fn$;

-- ==================== schedules ==================================================================================

create table ballast_private.schedules (
  id bigint generated always as identity primary key,
  tenant_id text not null default 'default',
  name text not null,
  pipeline text not null,
  pipeline_version integer,
  input jsonb not null default '{}',
  priority integer not null default 0,
  cron text not null,
  time_zone text not null default 'UTC',
  on_missed text not null default 'skip',
  max_catch_up integer not null default 10,
  paused boolean not null default false,
  paused_reason text,
  next_fire_at timestamptz,
  last_fired_at timestamptz,
  last_slot timestamptz,
  last_job_id bigint,
  last_error text,
  fired_count bigint not null default 0,
  skipped_count bigint not null default 0,
  created_at timestamptz not null default ballast.now(),
  updated_at timestamptz not null default ballast.now(),
  created_by text,
  updated_by text,
  constraint schedule_name_unique unique (tenant_id, name),
  constraint schedule_name_format check (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
  constraint schedule_on_missed_known check (on_missed in ('skip', 'catch_up')),
  constraint schedule_max_catch_up_range check (max_catch_up between 1 and 1000),
  constraint schedule_tenant_bytes check (octet_length(tenant_id) between 1 and 200)
);
create index schedules_due_idx on ballast_private.schedules (next_fire_at) where not paused and next_fire_at is not null;
alter table ballast_private.schedules enable row level security;
create policy tenant_rows on ballast_private.schedules as permissive for select to public
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on table ballast_private.schedules to ballast_client, ballast_operator, ballast_reporter;
comment on table ballast_private.schedules is 'Cron schedules (0033): each fires an idempotent submission of its pipeline per slot; see ballast.fire_schedules.';

create view ballast.schedules with (security_invoker = true) as
  select s.id, s.tenant_id, s.name, s.pipeline, s.pipeline_version, s.input, s.priority, s.cron, s.time_zone,
         s.on_missed, s.max_catch_up, s.paused, s.paused_reason, s.next_fire_at, s.last_fired_at, s.last_slot,
         s.last_job_id, s.last_error, s.fired_count, s.skipped_count, s.created_at, s.updated_at, s.created_by, s.updated_by
    from ballast_private.schedules s;
create trigger refuse_write instead of insert or update or delete on ballast.schedules
  for each row execute function ballast_private.refuse_view_write();
grant select on ballast.schedules to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.schedules is 'Cron schedules: each fires a job of its pipeline per slot of its cron expression in its time zone (create with ballast.set_schedule).';
comment on column ballast.schedules.id is 'The schedule''s id.';
comment on column ballast.schedules.tenant_id is 'The tenant its jobs belong to.';
comment on column ballast.schedules.name is 'Its name, unique per tenant (letters, digits, _ . : -).';
comment on column ballast.schedules.pipeline is 'The pipeline each fire submits a job of.';
comment on column ballast.schedules.pipeline_version is 'The version submitted; null: the latest registered version at each fire.';
comment on column ballast.schedules.input is 'The input of every job it submits (checked against the pipeline''s input contract at each fire).';
comment on column ballast.schedules.priority is 'The priority of the jobs it submits.';
comment on column ballast.schedules.cron is 'Five fields, minute hour day-of-month month day-of-week (e.g. */15 9-17 * * mon-fri), or @hourly, @daily, @weekly, @monthly, @yearly.';
comment on column ballast.schedules.time_zone is 'The time zone the expression is read in (e.g. Europe/Paris; default UTC).';
comment on column ballast.schedules.on_missed is 'Slots missed while no worker fired them: skip (fire only a slot at most a minute late) or catch_up (fire each, at most maxCatchUp).';
comment on column ballast.schedules.max_catch_up is 'With catch_up: the most missed slots fired at once (the most recent ones).';
comment on column ballast.schedules.paused is 'True: it fires nothing until resumed (slots passed meanwhile are not caught up).';
comment on column ballast.schedules.paused_reason is 'Why it was paused, as given.';
comment on column ballast.schedules.next_fire_at is 'Its next slot. Null: paused, or the expression never fires again.';
comment on column ballast.schedules.last_fired_at is 'When it last submitted a job (by the database clock).';
comment on column ballast.schedules.last_slot is 'The slot of its last submitted job.';
comment on column ballast.schedules.last_job_id is 'The job its last fire submitted (or found: a slot submitted before).';
comment on column ballast.schedules.last_error is 'Why its last fire could not submit a slot (e.g. the input no longer satisfies the pipeline''s contract); null after a fire that submitted every slot.';
comment on column ballast.schedules.fired_count is 'Slots fired since it was created.';
comment on column ballast.schedules.skipped_count is 'Slots missed and not fired (on_missed skip, or beyond maxCatchUp).';
comment on column ballast.schedules.created_at is 'When it was created.';
comment on column ballast.schedules.updated_at is 'When it was last changed (created, edited, paused, resumed).';
comment on column ballast.schedules.created_by is 'Who created it.';
comment on column ballast.schedules.updated_by is 'Who changed it last.';

-- Creates or replaces the schedule p_name of a tenant (clients: their own tenant; operators: any, default
-- 'default'), checks the cron expression, time zone and pipeline, and computes the next slot from now. Replacing keeps
-- its id, counts and paused state. Returns the schedule. Raises BA002 (a bad argument, naming it), BA004 (unknown
-- pipeline), BA014 (another tenant).
create function ballast.set_schedule(p_name text, p_pipeline text, p_cron text, p_input jsonb default '{}',
  p_time_zone text default 'UTC', p_tenant_id text default null, p_pipeline_version integer default null,
  p_priority integer default 0, p_on_missed text default 'skip', p_max_catch_up integer default 10, p_actor text default null)
returns setof ballast.schedules
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := ballast_private.schedule_tenant(p_tenant_id);
  v_next timestamptz;
  v_id bigint;
begin
  if coalesce(p_name, '') !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' then
    perform ballast_private.bad_argument('name', format('%L is not a schedule name', p_name),
      'Use 1 to 128 letters, digits, "_", ".", ":" or "-", starting with a letter or digit.');
  end if;
  if not exists (select 1 from pg_catalog.pg_timezone_names where name = p_time_zone) then
    perform ballast_private.bad_argument('time_zone', format('%L is not a time zone Postgres knows', p_time_zone),
      'Use a name such as UTC, Europe/Paris or America/New_York (select name from pg_timezone_names).');
  end if;
  if p_on_missed is null or p_on_missed not in ('skip', 'catch_up') then
    perform ballast_private.bad_argument('on_missed', format('%L is not skip or catch_up', p_on_missed),
      'Pass ''skip'' (fire only slots at most a minute late) or ''catch_up'' (fire each missed slot, at most max_catch_up).');
  end if;
  if p_max_catch_up is null or p_max_catch_up not between 1 and 1000 then
    perform ballast_private.bad_argument('max_catch_up', format('%s is not between 1 and 1000', coalesce(p_max_catch_up::text, 'null')),
      'Pass how many missed slots may be fired at once.');
  end if;
  if not exists (select 1 from ballast_private.pipelines p where p.name = p_pipeline
                    and (p_pipeline_version is null or p.version = p_pipeline_version)) then
    raise exception using errcode = 'BA004',
      message = format('pipeline %s%s is not registered', p_pipeline, coalesce('@' || p_pipeline_version, '')),
      hint = 'Start a worker that serves it (it registers its pipelines), or fix the name.';
  end if;
  v_next := ballast_private.cron_next(p_cron, p_time_zone, ballast.now());
  if v_next is null then
    perform ballast_private.bad_argument('cron', format('%L never fires (no such date within eight years)', p_cron),
      'Check the day of the month against the month, e.g. there is no 30 February.');
  end if;
  perform ballast_private.set_actor(ballast_private.caller_actor(p_actor));
  insert into ballast_private.schedules as s (tenant_id, name, pipeline, pipeline_version, input, priority, cron, time_zone,
                                             on_missed, max_catch_up, next_fire_at, created_by, updated_by)
  values (v_tenant, p_name, p_pipeline, p_pipeline_version, coalesce(p_input, '{}'), coalesce(p_priority, 0), btrim(p_cron),
          p_time_zone, p_on_missed, p_max_catch_up, v_next, current_setting('ballast.actor'), current_setting('ballast.actor'))
  on conflict (tenant_id, name) do update
    set pipeline = excluded.pipeline, pipeline_version = excluded.pipeline_version, input = excluded.input,
        priority = excluded.priority, cron = excluded.cron, time_zone = excluded.time_zone,
        on_missed = excluded.on_missed, max_catch_up = excluded.max_catch_up,
        next_fire_at = case when s.paused then null else excluded.next_fire_at end,
        updated_at = ballast.now(), updated_by = excluded.updated_by
  returning s.id into v_id;
  return query select * from ballast.schedules where id = v_id;
end
$fn$;

-- The tenant a schedule verb acts for: a restricted caller (client) its own (BA014 for another); an unrestricted one
-- the one named, else 'default'.
create function ballast_private.schedule_tenant(p_tenant_id text)
returns text
language plpgsql stable
as $fn$
declare
  v_own text;
begin
  if ballast_private.caller_unrestricted() then
    return coalesce(nullif(p_tenant_id, ''), 'default');
  end if;
  v_own := ballast_private.caller_tenant();
  if v_own is null then
    raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot manage schedules', ballast_private.caller_role()),
      hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
  end if;
  if p_tenant_id is not null and p_tenant_id not in ('default', v_own) then
    raise exception using errcode = 'BA014', message = format('tenant %s cannot manage the schedules of tenant %s', v_own, p_tenant_id),
      hint = 'Leave the tenant out: your own tenant''s schedules are meant.';
  end if;
  return v_own;
end
$fn$;

-- Pauses (p_paused true, with an optional reason) or resumes a schedule; a resumed one fires next at its first slot
-- after now. Deleting: ballast.delete_schedule. Returns the schedule; BA003 when the tenant has no schedule of that name.
create function ballast.pause_schedule(p_name text, p_paused boolean default true, p_reason text default null,
  p_tenant_id text default null, p_actor text default null)
returns setof ballast.schedules
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := ballast_private.schedule_tenant(p_tenant_id);
  v_id bigint;
begin
  if p_paused is null then
    perform ballast_private.bad_argument('paused', 'is null', 'Pass true to pause or false to resume.');
  end if;
  perform ballast_private.set_actor(ballast_private.caller_actor(p_actor));
  update ballast_private.schedules s
     set paused = p_paused, paused_reason = case when p_paused then nullif(p_reason, '') end,
         next_fire_at = case when p_paused then null else ballast_private.cron_next(s.cron, s.time_zone, ballast.now()) end,
         updated_at = ballast.now(), updated_by = current_setting('ballast.actor')
   where s.tenant_id = v_tenant and s.name = p_name
  returning s.id into v_id;
  if v_id is null then
    raise exception using errcode = 'BA003', message = format('tenant %s has no schedule %L', v_tenant, p_name),
      hint = 'ballast.schedules lists the schedules.';
  end if;
  return query select * from ballast.schedules where id = v_id;
end
$fn$;

-- Deletes a schedule (the jobs it submitted stay). Returns whether one was deleted.
create function ballast.delete_schedule(p_name text, p_tenant_id text default null)
returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := ballast_private.schedule_tenant(p_tenant_id);
begin
  delete from ballast_private.schedules where tenant_id = v_tenant and name = p_name;
  return found;
end
$fn$;

-- Fires the due schedules, at most p_limit of them per call (the most overdue first), each in this transaction:
-- the slots due by now are listed (ballast_private.due_slots), the ones the schedule's on_missed policy keeps are
-- submitted with the idempotency key 'schedule:<id>:<slot epoch seconds>' (a slot submitted before returns its job:
-- nothing twice), and the schedule moves to its first slot after now. Rows are locked FOR UPDATE SKIP LOCKED: two
-- workers firing at once take different schedules. A submission that fails (the input no longer satisfies the
-- pipeline's contract, the pipeline version is gone) is recorded on the schedule as its last error and the slot is
-- skipped; the other schedules fire. Returns one row per schedule handled.
create function ballast.fire_schedules(p_limit integer default 100)
returns table(schedule_id bigint, schedule_name text, fired integer, skipped integer, next_slot timestamptz, error text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_now timestamptz := ballast.now();
  v_s ballast_private.schedules;
  v_due record;
  v_fire timestamptz[];
  v_fired timestamptz[];
  v_slot timestamptz;
  v_job bigint;
  v_next timestamptz;
  v_error text;
begin
  for v_s in
    select * from ballast_private.schedules s
     where not s.paused and s.next_fire_at <= v_now
     order by s.next_fire_at, s.id limit greatest(coalesce(p_limit, 100), 1)
     for update skip locked
  loop
    select * into v_due from ballast_private.due_slots(v_s.cron, v_s.time_zone, v_s.next_fire_at, v_now, v_s.max_catch_up);
    v_fire := case when v_s.on_missed = 'catch_up' then v_due.slots
                   else array(select t from unnest(v_due.slots) t where t >= v_now - interval '1 minute' order by t desc limit 1) end;
    v_fired := '{}';
    v_error := null;
    v_job := v_s.last_job_id;
    perform set_config('ballast.actor', 'schedule:' || v_s.name, true);
    foreach v_slot in array v_fire loop
      begin
        select sub.job_id into v_job
          from ballast_private.submit(v_s.pipeline, v_s.input, format('schedule:%s:%s', v_s.id, extract(epoch from v_slot)::bigint),
                                      v_s.tenant_id, v_s.priority, v_s.pipeline_version) sub;
        v_fired := v_fired || v_slot;
      exception when others then
        -- This slot's submission is undone (its own subtransaction); the schedule says why and moves on.
        v_error := format('slot %s: %s', v_slot, sqlerrm);
      end;
    end loop;
    v_next := ballast_private.cron_next(v_s.cron, v_s.time_zone, greatest(v_now, v_due.slots[cardinality(v_due.slots)]));
    update ballast_private.schedules s
       set next_fire_at = v_next, last_job_id = v_job, last_error = v_error,
           last_fired_at = case when cardinality(v_fired) > 0 then v_now else s.last_fired_at end,
           last_slot = coalesce(v_fired[cardinality(v_fired)], s.last_slot),
           fired_count = s.fired_count + cardinality(v_fired),
           skipped_count = s.skipped_count + v_due.total - cardinality(v_fired)
     where s.id = v_s.id;
    return query select v_s.id, v_s.name, cardinality(v_fired), v_due.total - cardinality(v_fired), v_next, v_error;
  end loop;
end
$fn$;

-- The slots of an expression from p_first (a slot) up to p_now: how many (total) and the latest p_keep of them,
-- oldest first. A schedule that was down for long walks its missed slots once, at most 10,000 of them (about a week
-- of a once-a-minute schedule; 1,000 slots take ~40 ms, 10,000 ~0.45 s); slots past that are skipped uncounted.
create function ballast_private.due_slots(p_cron text, p_tz text, p_first timestamptz, p_now timestamptz, p_keep integer,
  out slots timestamptz[], out total integer)
language plpgsql stable
as $fn$
declare
  c ballast_private.cron_spec := ballast_private.cron_parse(p_cron);
  v_at timestamptz := p_first;
begin
  slots := '{}';
  total := 0;
  while v_at is not null and v_at <= p_now and total < 10000 loop
    total := total + 1;
    slots := (slots || v_at)[greatest(cardinality(slots) + 2 - p_keep, 1):];
    v_at := ballast_private.cron_next_of(c, p_tz, v_at);
  end loop;
end
$fn$;

revoke execute on function ballast_private.cron_field(text, text, int, int, text[]) from public;
revoke execute on function ballast_private.cron_parse(text) from public;
revoke execute on function ballast_private.cron_next(text, text, timestamptz) from public;
revoke execute on function ballast_private.cron_next_of(ballast_private.cron_spec, text, timestamptz) from public;
revoke execute on function ballast_private.schedule_tenant(text) from public;
revoke execute on function ballast_private.due_slots(text, text, timestamptz, timestamptz, integer) from public;
revoke execute on function ballast.set_schedule(text, text, text, jsonb, text, text, integer, integer, text, integer, text) from public;
revoke execute on function ballast.pause_schedule(text, boolean, text, text, text) from public;
revoke execute on function ballast.delete_schedule(text, text) from public;
revoke execute on function ballast.fire_schedules(integer) from public;
grant execute on function ballast.set_schedule(text, text, text, jsonb, text, text, integer, integer, text, integer, text) to ballast_client, ballast_operator;
grant execute on function ballast.pause_schedule(text, boolean, text, text, text) to ballast_client, ballast_operator;
grant execute on function ballast.delete_schedule(text, text) to ballast_client, ballast_operator;
grant execute on function ballast.fire_schedules(integer) to ballast_operator;
comment on function ballast.set_schedule(text, text, text, jsonb, text, text, integer, integer, text, integer, text) is 'Create or replace a cron schedule of a tenant (clients: their own): each slot of the expression in the time zone submits a job of the pipeline with the input, once.';
comment on function ballast.pause_schedule(text, boolean, text, text, text) is 'Pause a schedule (paused true) or resume it (false): a resumed schedule fires next at its first slot after now.';
comment on function ballast.delete_schedule(text, text) is 'Delete a schedule; the jobs it submitted stay. Returns whether one was deleted.';
comment on function ballast.fire_schedules(integer) is 'Fire the due schedules (workers call it every second): each due slot submits its job once, keyed schedule:<id>:<slot>.';

-- Down Migration
