-- Up Migration
--
-- 0022: budgets and provider cooldowns apply in the claim (issue 11, item 1: "priority, concurrency limits, budgets
-- and cooldowns apply in the claim").
--
-- Why: a model step of a tenant whose budget is used up, or whose models are all cooling down after a 429, was
-- claimed, started and only then stopped by the ladder (ballast.begin_model_call): a round trip and an attempt row
-- per step, and for a cooldown longer than the ladder waits, a retry charged as an attempt. With a backlog of such
-- steps the workers kept taking them one after another.
--
-- What: claim_steps checks the model steps among the steps it has just locked against claim_gate (below) and parks
-- those whose gate is closed, as pause_for_budget (0009) does at run time: status retrying (a new edge, queued ->
-- retrying, "parked at claim"), next_run_at when the gate reopens, error {class budget_exhausted | cooldown, message},
-- no attempt opened or charged. The claim goes on with the others. When the retry falls due the step is queued again
-- and checked again; ballast.set_budget (0009) wakes budget-parked steps at once when a limit is raised. The check
-- costs two probes of small tables per claim while no cooldown is in force and no pausing budget is used up, and
-- nothing per step; map items and plain steps are never gated.

insert into ballast_private.step_transitions (from_status, to_status, why)
values ('queued', 'retrying', 'parked at claim: its tenant''s budget is used up or all its models are cooling down (no attempt)');

-- claim_gate(tenant_id, model spec of the step definition {model, fallbacks, ...}, now)
--   -> no row when the step may run, else one row (until, class, message): when to look again and why not now.
--  - budget_exhausted: the tenant has a 'pause' budget whose spending and open reservations reach its limit in the
--    current period, and the step's model is priced (unpriced calls do not spend); until = the period's end.
--  - cooldown: every model the step may call (its model and its fallbacks) is cooling down (provider_cooldowns, for
--    the model or the provider's '*'); until = the earliest end among them.
-- A 'fail' budget is left to the ladder, which fails the step with a message naming the figures. Reads only.
create function ballast_private.claim_gate(p_tenant_id text, p_model jsonb, p_now timestamptz)
returns table (until timestamptz, class text, message text)
language plpgsql
stable
as $fn$
declare
  v_models text[] := array[p_model ->> 'model']
                     || coalesce(array(select jsonb_array_elements_text(p_model -> 'fallbacks')), '{}');
  v_budget ballast_private.budgets;
  v_start timestamptz;
  v_spent numeric;
  v_cool record;
begin
  select * into v_budget from ballast_private.budgets b where b.tenant_id = p_tenant_id and b.on_exhausted = 'pause';
  if found and exists (select 1 from ballast.model_price(split_part(v_models[1], ':', 1),
                                                          substr(v_models[1], strpos(v_models[1], ':') + 1), p_now)) then
    v_start := ballast_private.budget_period_start(v_budget.period, p_now);
    select coalesce(sum(u.spent_usd + u.reserved_usd), 0) into v_spent
      from ballast_private.budget_usage u where u.tenant_id = p_tenant_id and u.period_start = v_start;
    if v_spent >= v_budget.limit_usd then
      until := v_start + ('1 ' || v_budget.period)::interval;
      class := 'budget_exhausted';
      message := format('tenant %L has used its budget of %s USD per %s (%s USD spent or reserved); the step waits '
                        'until %s or a raised limit (ballast.set_budget)', p_tenant_id, v_budget.limit_usd,
                        v_budget.period, round(v_spent, 6), until);
      return next;
      return;
    end if;
  end if;

  select min(x.until) as until, string_agg(x.model || ' until ' || x.until, ', ' order by x.model) as what
    into v_cool
    from (select m as model, (select max(c.until) from ballast_private.provider_cooldowns c
                               where c.provider = split_part(m, ':', 1)
                                 and c.model in (substr(m, strpos(m, ':') + 1), '*') and c.until > p_now) as until
            from unnest(v_models) m) x
   having count(*) = count(x.until);
  if found then
    until := v_cool.until;
    class := 'cooldown';
    message := format('every model of the step is cooling down (%s); the step waits until %s', v_cool.what, v_cool.until);
    return next;
  end if;
end
$fn$;

-- claim_steps: as in 0013 (its contract comment holds), and model steps whose claim_gate is closed are parked
-- (retrying until the gate reopens, no attempt) instead of claimed; the claim returns the others.
create or replace function ballast.claim_steps(p_worker_id text, p_tasks text[], p_n integer, p_lease_ms integer default 30000)
returns setof ballast.step_claim
language plpgsql
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_lease timestamptz;
  v_n int := least(greatest(coalesce(p_n, 0), 0), 1000);
  v_ids bigint[] := '{}';
  v_group record;
  v_running int;
  v_free int;
begin
  if v_n = 0 then
    return;
  end if;
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  -- (Probed first: an UPDATE fires the statement triggers of steps even when it changes no row.)
  if exists (select 1 from ballast_private.steps r where r.status = 'retrying' and r.next_run_at <= v_now) then
    update ballast_private.steps s set status = 'queued', queued_at = v_now, next_run_at = null, updated_at = v_now
     where s.id in (select r.id from ballast_private.steps r
                     where r.status = 'retrying' and r.next_run_at <= v_now and r.task = any(p_tasks)
                     order by r.next_run_at limit v_n
                     for update skip locked);
  end if;

  for v_group in
    select q.concurrency_key, max(q.concurrency_limit) as lim
      from (select g.concurrency_key, g.concurrency_limit from ballast_private.steps g
             where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)
             order by g.concurrency_key, g.id limit 500) q
     group by q.concurrency_key
  loop
    exit when cardinality(v_ids) >= v_n;
    perform pg_advisory_xact_lock(hashtextextended(v_group.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_group.concurrency_key and s.status = 'running';
    v_free := least(v_group.lim - v_running, v_n - cardinality(v_ids));
    continue when v_free <= 0;
    v_ids := v_ids || array(
      select s.id from ballast_private.steps s
       where s.concurrency_key = v_group.concurrency_key and s.status = 'queued' and s.task = any(p_tasks)
       order by s.priority, (s.attempts = 0), s.id limit v_free
       for update skip locked);
  end loop;

  if cardinality(v_ids) < v_n then
    v_ids := v_ids || array(
      select s.id from ballast_private.steps s
       where s.status = 'queued' and s.concurrency_key is null and s.task = any(p_tasks)
       order by s.priority, (s.attempts = 0), s.id limit v_n - cardinality(v_ids)
       for update skip locked);
  end if;
  if cardinality(v_ids) = 0 then
    return;
  end if;

  -- Model steps whose gate is closed are parked instead of claimed (claim_gate). Two probes of small tables first,
  -- so that claims pay nothing while no cooldown is in force and no pausing budget is used up.
  if exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
     or exists (select 1 from ballast_private.budgets b
                  left join ballast_private.budget_usage u
                    on u.tenant_id = b.tenant_id and u.period_start = ballast_private.budget_period_start(b.period, v_now)
                 where b.on_exhausted = 'pause' and coalesce(u.spent_usd, 0) + coalesce(u.reserved_usd, 0) >= b.limit_usd) then
    with gated as (
      select s.id, g.until, g.class, g.message
        from ballast_private.steps s
        join ballast_private.jobs j on j.id = s.job_id
        join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
        cross join lateral (select e -> 'model' as model from jsonb_array_elements(p.definition -> 'steps') e
                             where e ->> 'name' = s.name and e ? 'model') d
        cross join lateral ballast_private.claim_gate(j.tenant_id, d.model, v_now) g
       where s.id = any(v_ids) and s.parent_step_id is null),
    parked as (
      update ballast_private.steps s
         set status = 'retrying', next_run_at = g.until, updated_at = v_now,
             error = jsonb_build_object('class', g.class, 'code', g.class, 'message', g.message, 'retryable', true,
                                        'attempt', s.attempts)
        from gated g where s.id = g.id
      returning s.id)
    select array(select i from unnest(v_ids) i where i not in (select id from parked)) into v_ids;
    if cardinality(v_ids) = 0 then
      return;
    end if;
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
