-- Up Migration
-- Fair sharing between tenants (issue 15, item 7): one tenant's burst of 10,000 jobs does not starve another's single
-- job, and tenants can have weights.
--
-- How: start-time fair queuing, decided at submit so that the claim stays one index scan. While fair sharing is on
-- (a row '*' in ballast_private.fair_shares: ballast.set_fair_share('*', weight)), every job gets a fair key when its
-- steps are inserted: its tenant's start tag max(V, the tenant's last finish tag), where V is the fair key at the
-- head of the queue (the virtual time the workers have reached), and the tenant's finish tag moves on by 1 / its
-- weight per job. Steps are claimed in (priority, fair_key, ...) order: a tenant that submits 10,000 jobs at once gets
-- keys V, V+1, ..., V+9,999; another tenant's single job submitted a moment later gets about V' (the head then), so it
-- is claimed with the next claim, not after the burst. A tenant of weight 3 advances a third as fast: it gets three
-- times the share while both have queued work. An idle tenant earns no credit (its start is V, never before).
-- All steps of a job share its key (dependants queued later go ahead of newer jobs: started work finishes first);
-- a map's items take their map step's key.
--
-- Cost: fair_key is a column of steps (default 0) and the second column of steps_queue_idx; with fair sharing off
-- every key is 0 and the order is the old one (priority, steps that already ran first, id). The statement trigger that
-- counts inserted steps probes ballast_private.fair_shares once per statement; the keys are written only while fair
-- sharing is on (one upsert per tenant of the statement and one update of its steps). Concurrent submissions of one
-- tenant serialize on its fair_shares row until they commit (only while fair sharing is on).

create table ballast_private.fair_shares (
  tenant_id text primary key,
  weight float8 not null default 1,
  vfinish float8 not null default 0,
  set_by text,
  set_at timestamptz not null default ballast.now(),
  constraint fair_weight_range check (weight > 0 and weight <= 1000000)
);
comment on table ballast_private.fair_shares is 'Fair sharing (0040): the row ''*'' turns it on and holds the default weight; a tenant''s row its weight and last finish tag.';

alter table ballast_private.steps add column fair_key float8 not null default 0;
-- The queue index gains fair_key as its second column (built anew: on a large live queue this locks the steps table
-- for writes while it builds).
drop index ballast_private.steps_queue_idx;
create index steps_queue_idx on ballast_private.steps (priority, fair_key, (attempts = 0), id)
  where status = 'queued' and concurrency_key is null;

-- Gives the new steps p_ids their fair keys (see the header); called by steps_inserted while fair sharing is on.
-- Tenants in tenant order (two statements of several tenants lock their rows in the same order).
create function ballast_private.assign_fair_keys(p_ids bigint[])
returns void
language plpgsql volatile
as $fn$
declare
  v_head float8;
  v_default float8;
  v_t record;
  v_end float8;
  v_weight float8;
begin
  select f.weight into v_default from ballast_private.fair_shares f where f.tenant_id = '*';
  -- V: the key at the head of the queue, new steps left out (they are at key 0 until this runs).
  select s.fair_key into v_head from ballast_private.steps s
   where s.status = 'queued' and s.concurrency_key is null and s.id <> all(p_ids)
   order by s.priority, s.fair_key, (s.attempts = 0), s.id limit 1;
  if v_head is null then
    select coalesce(max(f.vfinish), 0) into v_head from ballast_private.fair_shares f where f.tenant_id <> '*';
  end if;
  for v_t in
    select j.tenant_id, array_agg(j.id order by j.id) as jobs
      from ballast_private.jobs j
     where j.id in (select s.job_id from ballast_private.steps s where s.id = any(p_ids) and s.parent_step_id is null)
     group by j.tenant_id order by j.tenant_id
  loop
    insert into ballast_private.fair_shares as f (tenant_id, weight, vfinish)
    values (v_t.tenant_id, v_default, v_head + cardinality(v_t.jobs) / v_default)
    on conflict (tenant_id) do update set vfinish = greatest(f.vfinish, v_head) + cardinality(v_t.jobs) / f.weight
    returning f.vfinish, f.weight into v_end, v_weight;
    update ballast_private.steps s
       set fair_key = v_end - (cardinality(v_t.jobs) - x.n + 1) / v_weight
      from unnest(v_t.jobs) with ordinality x(job_id, n)
     where s.job_id = x.job_id and s.id = any(p_ids);
  end loop;
  -- A map's items: their map step's key.
  update ballast_private.steps s set fair_key = p.fair_key
    from ballast_private.steps p
   where s.id = any(p_ids) and s.parent_step_id = p.id and p.fair_key <> s.fair_key;
end
$fn$;

-- As in 0039, plus: fair keys while fair sharing is on.
create or replace function ballast_private.steps_inserted() returns trigger
language plpgsql volatile
as $fn$
begin
  if current_setting('ballast.steps_counted', true) is distinct from 'on' then
    perform ballast_private.apply_step_deltas(array_agg(n.job_id), array_agg(1), array_agg(n.status),
                                              array_agg(coalesce(n.waiting_for = 'items', false)),
                                              array_agg(n.parent_step_id), array_agg(n.attempts > 0))
       from new_t n;
  end if;
  if exists (select 1 from ballast_private.fair_shares f where f.tenant_id = '*') then
    perform ballast_private.assign_fair_keys(array(select n.id from new_t n));
  end if;
  -- (A scheduled step, 0039, too: idle workers learn when it falls due from settle_and_claim's next_due_ms.)
  if exists (select 1 from new_t n where n.status in ('queued', 'scheduled')) then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

-- As in 0037 with the probes and promotions of 0039 (retries due, deadlines and expiry, scheduled steps due), and
-- the ungrouped pick takes fair keys into account: (priority, fair_key, attempts = 0, id).
create or replace function ballast.claim_steps(p_worker_id text, p_tasks text[], p_n integer, p_lease_ms integer default 30000)
returns setof ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_lease timestamptz;
  v_n int := least(greatest(coalesce(p_n, 0), 0), 1000);
  v_ids bigint[] := '{}';
  v_pick bigint[];
  v_picked int;
  v_round int := 0;
  v_model_gate boolean;
  v_key_gate boolean;
  v_retries_due boolean;
  v_limits_due boolean;
  v_starts_due boolean;
begin
  if v_n = 0 then
    return;
  end if;
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  -- (Probed first: an UPDATE fires the statement triggers of steps even when it changes no row.) One statement for
  -- the probes of retries due, jobs past their deadline or expiry, and scheduled steps due (0039): each one index
  -- probe. Jobs past their deadline or expiry fail before anything is queued or claimed (expire_jobs).
  select exists (select 1 from ballast_private.steps r where r.status = 'retrying' and r.next_run_at <= v_now),
         exists (select 1 from ballast_private.jobs l where l.deadline <= v_now and l.deadline is not null and l.finished_at is null)
         or exists (select 1 from ballast_private.jobs l
                     where l.expires_at <= v_now and l.expires_at is not null and l.status in ('scheduled', 'queued')),
         exists (select 1 from ballast_private.steps r where r.status = 'scheduled' and r.next_run_at <= v_now)
    into v_retries_due, v_limits_due, v_starts_due;
  if v_retries_due then
    perform ballast_private.requeue_due_retries(p_tasks, v_n, v_now);
  end if;
  if v_limits_due then
    perform ballast_private.expire_jobs(v_now, 100);
  end if;
  if v_starts_due then
    perform ballast_private.start_due_steps(p_tasks, v_n, v_now);
  end if;

  loop
    v_round := v_round + 1;
    -- Steps of concurrency groups first (a part, called only when a probe finds one queued), then the others from
    -- steps_queue_idx, inline: every claim runs it, and a function call for it cost ~0.03 ms per claim (see above).
    -- (A second round takes no group steps: the ones picked still hold status queued, so it would get them again.)
    if v_round = 1 and exists (select 1 from ballast_private.steps g
                                where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)) then
      v_pick := ballast_private.pick_grouped_steps(p_tasks, v_n - cardinality(v_ids));
    else
      v_pick := '{}';
    end if;
    if cardinality(v_pick) < v_n - cardinality(v_ids) then
      v_pick := v_pick || array(
        select s.id from ballast_private.steps s
         where s.status = 'queued' and s.concurrency_key is null and s.task = any(p_tasks) and s.id <> all(v_ids)
         order by s.priority, s.fair_key, (s.attempts = 0), s.id limit v_n - cardinality(v_ids) - cardinality(v_pick)
         for update skip locked);
    end if;
    v_picked := cardinality(v_pick);
    exit when v_picked = 0;

    if v_model_gate is null then
      -- Model steps whose gate is closed are parked instead of claimed (claim_gate); keys paused or over a limit
      -- likewise (gate_steps). Probes of small tables, once per claim, so that claims pay nothing while no cooldown
      -- is in force, no pausing budget is used up, no key is paused and no limit is set.
      v_model_gate := exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
        or exists (select 1 from ballast_private.budgets b
                     left join ballast_private.budget_usage u
                       on u.tenant_id = b.tenant_id and u.period_start = ballast_private.budget_period_start(b.period, v_now)
                    where b.on_exhausted = 'pause' and coalesce(u.spent_usd, 0) + coalesce(u.reserved_usd, 0) >= b.limit_usd);
      v_key_gate := exists (select 1 from ballast_private.pauses z where z.until is null or z.until > v_now)
        or exists (select 1 from ballast_private.limits);
    end if;
    if v_model_gate then
      v_pick := ballast_private.park_gated_steps(v_pick, v_now);
    end if;
    if v_key_gate and cardinality(v_pick) > 0 then
      v_pick := ballast_private.gate_steps(v_pick, v_now, v_ids);
    end if;
    v_ids := v_ids || v_pick;
    -- Again only when a gate parked some of a pick that filled its places (more may be waiting behind them).
    exit when cardinality(v_pick) = v_picked or cardinality(v_ids) >= v_n or v_round >= 4;
  end loop;
  if cardinality(v_ids) = 0 then
    return;
  end if;

  -- The attempts start now (a group lock may have been waited for).
  v_now := ballast.now();
  v_lease := v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0);
  return query
  with upd as (
    update ballast_private.steps s
       set status = 'running', attempts = s.attempts + 1, started_at = coalesce(s.started_at, v_now),
           next_run_at = null, updated_at = v_now
     where s.id = any(v_ids)
    returning s.*),
  att as (
    insert into ballast_private.attempts (step_id, job_id, number, worker_id, started_at, lease_expires_at)
    select u.id, u.job_id, u.attempts, p_worker_id, v_now, v_lease from upd u
     order by u.priority, (u.attempts = 1), u.id
    returning id, step_id)
  select att.id, u.attempts - u.attempt_offset, u.max_attempts, u.id, u.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         case when cardinality(u.depends_on) = 0 then '{}'::jsonb else
           coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                      where d.job_id = u.job_id and d.name = any(u.depends_on)), '{}'::jsonb) end,
         'ballast:' || j.id || ':' || u.name, u.timeout_ms, v_lease,
         case when u.attempts = 1 then '{}'::jsonb else
           coalesce((select jsonb_object_agg(e.key, e.result) from ballast_private.effects e where e.step_id = u.id),
                    '{}'::jsonb) end,
         case when u.parent_step_id is null then u.name
              else (select p.name from ballast_private.steps p where p.id = u.parent_step_id) end,
         u.item_index, u.item
    from upd u join att on att.step_id = u.id join ballast_private.jobs j on j.id = u.job_id
   order by u.priority, (u.attempts = 1), u.id;
end
$fn$;

-- claim_step (one given step: complete_step_and_claim's hand-off, tests): as in 0006, and the gates of claim_steps
-- apply to it as well (it took a step with a paused key or over a limit, and a model step behind a closed gate).
create or replace function ballast.claim_step(p_step_id bigint, p_worker_id text, p_lease_ms integer DEFAULT 30000) returns SETOF ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_running int;
  v_attempt_id bigint;
  v_lease timestamptz;
begin
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  select * into v_step from ballast_private.steps s where s.id = p_step_id for update skip locked;
  if not found then
    return;
  end if;
  if v_step.status = 'retrying' then
    if v_step.next_run_at > v_now then
      return;
    end if;
    update ballast_private.steps s set status = 'queued', queued_at = v_now, next_run_at = null
     where s.id = p_step_id;
  elsif v_step.status <> 'queued' then
    return;
  end if;

  -- The gates of claim_steps hold this step back too (a paused key, a limit, a closed model gate): parked, not claimed.
  if exists (select 1 from ballast_private.pauses z where z.until is null or z.until > v_now)
     or exists (select 1 from ballast_private.limits) then
    if cardinality(ballast_private.gate_steps(array[p_step_id], v_now)) = 0 then
      return;
    end if;
  end if;
  if exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
     or exists (select 1 from ballast_private.budgets b where b.on_exhausted = 'pause') then
    if cardinality(ballast_private.park_gated_steps(array[p_step_id], v_now)) = 0 then
      return;
    end if;
  end if;

  if v_step.concurrency_key is not null then
    perform pg_advisory_xact_lock(hashtextextended(v_step.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_step.concurrency_key and s.status = 'running';
    if v_running >= v_step.concurrency_limit then
      perform ballast_private.wake_step(p_step_id, v_now + make_interval(secs => 1 + random()));
      return;
    end if;
    -- The attempt starts now, not when this call began: the wait for the group lock can outlast the completion of
    -- the step whose slot this claim takes, and an earlier started_at would show a third step overlapping two.
    v_now := ballast.now();
  end if;

  v_lease := v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0);
  update ballast_private.steps s
     set status = 'running', attempts = s.attempts + 1, started_at = coalesce(s.started_at, v_now),
         next_run_at = null
   where s.id = p_step_id
  returning * into v_step;
  insert into ballast_private.attempts (step_id, job_id, number, worker_id, started_at, lease_expires_at)
  values (v_step.id, v_step.job_id, v_step.attempts, p_worker_id, v_now, v_lease)
  returning id into v_attempt_id;
  perform ballast_private.refresh_job_status(v_step.job_id);

  return query
  select v_attempt_id, v_step.attempts - v_step.attempt_offset, v_step.max_attempts, v_step.id, v_step.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                    where d.job_id = v_step.job_id and d.name = any(v_step.depends_on)), '{}'::jsonb),
         'ballast:' || j.id || ':' || v_step.name,
         v_step.timeout_ms, v_lease,
         coalesce((select jsonb_object_agg(e.key, e.result) from ballast_private.effects e
                    where e.step_id = v_step.id), '{}'::jsonb),
         coalesce((select p.name from ballast_private.steps p where p.id = v_step.parent_step_id), v_step.name),
         v_step.item_index, v_step.item
    from ballast_private.jobs j where j.id = v_step.job_id;
end
$fn$;

-- Turns fair sharing on (p_tenant_id '*': with that default weight) or sets one tenant's weight (on first use a
-- tenant gets the default). A weight of 3 gets three times the share of a weight of 1 while both have queued work.
-- Operators only. Raises BA002 (a weight out of range).
create function ballast.set_fair_share(p_tenant_id text, p_weight float8 default 1, p_actor text default null)
returns table (tenant_id text, weight float8)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
begin
  if p_weight is null or not (p_weight > 0 and p_weight <= 1000000) then
    perform ballast_private.bad_argument('weight', format('%s is not above 0 and at most 1000000', coalesce(p_weight::text, 'null')),
      'Pass a relative share: 1 is the default, 3 gets three times the share of 1.');
  end if;
  if coalesce(p_tenant_id, '') = '' then
    perform ballast_private.bad_argument('tenant_id', 'is empty', 'Pass a tenant id, or ''*'' to turn fair sharing on with a default weight.');
  end if;
  if p_tenant_id <> '*' and not exists (select 1 from ballast_private.fair_shares f where f.tenant_id = '*') then
    insert into ballast_private.fair_shares (tenant_id, weight, set_by) values ('*', 1, ballast_private.caller_actor(p_actor))
    on conflict on constraint fair_shares_pkey do nothing;
  end if;
  insert into ballast_private.fair_shares as f (tenant_id, weight, set_by, set_at)
  values (p_tenant_id, p_weight, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict on constraint fair_shares_pkey do update set weight = excluded.weight, set_by = excluded.set_by, set_at = excluded.set_at;
  return query select f.tenant_id, f.weight from ballast_private.fair_shares f where f.tenant_id = p_tenant_id;
end
$fn$;

-- Turns fair sharing off (weights and finish tags forgotten; new jobs get key 0, the old order). Returns whether it
-- was on. Operators only.
create function ballast.stop_fair_sharing()
returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  delete from ballast_private.fair_shares;
  return found;
end
$fn$;

create view ballast.fair_shares with (security_invoker = true) as
  select f.tenant_id, f.weight, f.vfinish as finish_tag, f.set_by, f.set_at from ballast_private.fair_shares f;
comment on view ballast.fair_shares is 'Fair sharing between tenants: on while the row ''*'' exists (ballast.set_fair_share); weights per tenant.';
comment on column ballast.fair_shares.tenant_id is 'A tenant, or * (the switch, with the default weight).';
comment on column ballast.fair_shares.weight is 'Its relative share while several tenants have queued work.';
comment on column ballast.fair_shares.finish_tag is 'The fair key its next job starts from at the earliest (virtual time).';
comment on column ballast.fair_shares.set_by is 'Who set its weight.';
comment on column ballast.fair_shares.set_at is 'When.';
create trigger refuse_write instead of insert or update or delete on ballast.fair_shares
  for each row execute function ballast_private.refuse_view_write();

grant select on ballast_private.fair_shares to ballast_operator, ballast_reporter;
grant select on ballast.fair_shares to ballast_operator, ballast_reporter;
revoke execute on function ballast_private.assign_fair_keys(bigint[]) from public;
revoke execute on function ballast.set_fair_share(text, float8, text) from public;
revoke execute on function ballast.stop_fair_sharing() from public;
grant execute on function ballast.set_fair_share(text, float8, text) to ballast_operator;
grant execute on function ballast.stop_fair_sharing() to ballast_operator;

-- Down Migration
