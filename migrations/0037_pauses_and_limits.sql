-- Up Migration
-- Pausable keys, rate limits and layered limits (issue 15, items 5, 6 and 8), enforced at claim time in SQL so that
-- any number of workers together respect them.
--
-- Keys. Every step belongs to a set of keys, derived at claim from its job and its definition:
--   global                       every step
--   tenant:<tenant id>           the job's tenant
--   pipeline:<name>              the job's pipeline
--   step:<pipeline>.<step>       this step of that pipeline (a map's items: the map step's name)
--   provider:<p>, model:<p>:<m>  a model step's first model
--   and the keys its definition declares (`keys: ['queue:emails', 'customer:{input.customerId}']`): `{tenant}`,
--   `{input.<path>}` and `{item.<path>}` (a map's item) are replaced by those values.
-- A step may also declare a weight (a number, or `input.<path>` / `item.<path>`: e.g. the tokens it will spend),
-- which the `weight` limits count instead of 1.
--
-- Pauses (ballast.pause_key, ballast.resume_key; ctx.pauseKey from a step): a key closed until a time (or until
-- resumed). A step with a paused key is not claimed: the claim parks it (status retrying, next_run_at = the end of
-- the pause, error class 'paused'; no attempt is spent) and a resume wakes it at once. Every pause and resume is
-- kept in ballast.gate_history (append-only), with who and why. A pause notifies `ballast_gates`: workers return
-- the steps they claimed and have not started yet, so a paused key stops every worker within a second.
--
-- Limits (ballast.set_limit, ballast.delete_limit) on a key pattern: an exact key, or a prefix ending in '*' (one
-- limit per matching key: 'tenant:*' is "per tenant"):
--   requests  at most `amount` steps per `per`, spaced by GCRA (generic cell rate algorithm): a step is admitted
--             when the key's theoretical arrival time is at most (burst - 1) x per/amount ahead of now, which then
--             moves on by per/amount. In any window of length `per`, at most amount + burst - 1 + 1 steps start
--             (burst 1, the default: within one step of the limit).
--   weight    the same, counting each step's weight (e.g. 10000 tokens per minute per provider).
--   running   at most `amount` steps with the key running at once (a step admitted through a limit records its
--             keys in steps.gate_keys, and running steps are counted from those).
-- Several limits on one step are all honoured: a step is admitted only when every limit of every key of it admits
-- it, and a step refused by one consumes nothing of the others. A refused step is parked (no attempt spent) until
-- the limit would admit it (error class 'rate_limited' or 'concurrency_limited').
--
-- Cost when unused: claim_steps probes two small tables (pauses in force, limits) once per claim; nothing else runs.
-- Limit state is one row per matching key (ballast_private.limit_buckets), locked by the claims that use it, in key
-- order (so claims of several workers serialize on a key, never deadlock).

-- ==================== tables ====================================================================================

create table ballast_private.pauses (
  key text primary key,
  until timestamptz,
  reason text not null,
  paused_by text,
  paused_at timestamptz not null default ballast.now(),
  step_id bigint,
  constraint pause_key_format check (key ~ '^[a-z][a-z0-9_-]*(:.+)?$' and octet_length(key) <= 300)
);
comment on table ballast_private.pauses is 'Keys closed to claims (0037): a step with one of these keys is parked until the pause ends or is resumed.';

create table ballast_private.limits (
  pattern text not null,
  kind text not null,
  amount bigint not null,
  per interval,
  burst bigint not null default 1,
  note text,
  set_by text,
  set_at timestamptz not null default ballast.now(),
  primary key (pattern, kind),
  constraint limit_kind_known check (kind in ('requests', 'weight', 'running')),
  constraint limit_pattern_format check (pattern ~ '^[a-z][a-z0-9_-]*(:.*)?$' and octet_length(pattern) <= 300),
  constraint limit_amount_range check (amount between 1 and 1000000000000),
  constraint limit_burst_range check (burst between 1 and 1000000000000),
  constraint limit_per_for_rates check ((kind = 'running') = (per is null)),
  constraint limit_per_range check (per is null or (per >= interval '1 millisecond' and per <= interval '31 days'))
);
comment on table ballast_private.limits is 'Rate and concurrency limits on keys (0037), enforced by claim_steps (gate_steps).';

create table ballast_private.limit_buckets (
  pattern text not null,
  kind text not null,
  key text not null,
  tat timestamptz,
  primary key (pattern, kind, key),
  foreign key (pattern, kind) references ballast_private.limits (pattern, kind) on delete cascade
);
comment on table ballast_private.limit_buckets is 'One row per key a limit applies to: the lock claims take, and for rates the GCRA theoretical arrival time.';

create table ballast_private.gate_history (
  id bigint generated always as identity primary key,
  action text not null,
  key text not null,
  until timestamptz,
  reason text,
  data jsonb,
  actor text,
  step_id bigint,
  at timestamptz not null default ballast.now(),
  constraint gate_action_known check (action in ('pause', 'resume', 'set_limit', 'delete_limit'))
);
create index gate_history_key_idx on ballast_private.gate_history (key, id);
comment on table ballast_private.gate_history is 'Every pause, resume and limit change (append-only).';

create function ballast_private.gate_history_append_only() returns trigger
language plpgsql
as $fn$
begin
  raise exception using errcode = 'BA009',
    message = format('ballast.gate_history is append-only: %s is not allowed', lower(tg_op)),
    hint = 'The history keeps every pause, resume and limit change; a new action is a new row.';
end
$fn$;
create trigger append_only before update or delete on ballast_private.gate_history
  for each row execute function ballast_private.gate_history_append_only();

-- A job none of whose steps has started goes back from retrying to queued when its parked steps are queued again
-- (a step parked at claim by a pause, a limit or a model gate spends no attempt, so the job has not started).
insert into ballast_private.job_transitions (from_status, to_status) values ('retrying', 'queued');

-- Keys a step holds while running (set when a limit admitted it); null for steps claimed while no limit applied.
alter table ballast_private.steps add column gate_keys text[];

-- ==================== keys of a step ============================================================================

-- The keys of one step (see the header): p_def is the step's entry of its pipeline definition (a map item: the map
-- step's entry), p_item the item (null for other steps). Stable and cheap; called by gate_steps only.
create function ballast_private.step_keys(p_pipeline text, p_step text, p_tenant text, p_def jsonb, p_input jsonb, p_item jsonb)
returns text[]
language plpgsql stable
as $fn$
declare
  v_keys text[] := array['global', 'tenant:' || p_tenant, 'pipeline:' || p_pipeline, 'step:' || p_pipeline || '.' || p_step];
  v_model text := p_def -> 'model' ->> 'model';
  v_tpl text;
  v_key text;
  v_m text[];
  v_value text;
begin
  if v_model is not null then
    v_keys := v_keys || ('provider:' || split_part(v_model, ':', 1)) || ('model:' || v_model);
  end if;
  for v_tpl in select jsonb_array_elements_text(coalesce(p_def -> 'keys', '[]')) loop
    v_key := v_tpl;
    for v_m in select regexp_matches(v_tpl, '\{([^{}]*)\}', 'g') loop
      v_value := case when v_m[1] = 'tenant' then p_tenant
                      when v_m[1] like 'input.%' then p_input #>> string_to_array(substr(v_m[1], 7), '.')
                      when v_m[1] like 'item.%' then p_item #>> string_to_array(substr(v_m[1], 6), '.')
                      when v_m[1] = 'item' then p_item #>> '{}' end;
      v_key := replace(v_key, '{' || v_m[1] || '}', coalesce(v_value, ''));
    end loop;
    v_keys := v_keys || v_key;
  end loop;
  return v_keys;
end
$fn$;

-- A step's weight for `weight` limits: its definition's `weight` (a number, or 'input.<path>' / 'item.<path>'
-- read from the job's input or the map item); 1 when absent, 0 when the path holds no number.
create function ballast_private.step_weight(p_def jsonb, p_input jsonb, p_item jsonb)
returns numeric
language sql stable
as $fn$
  select case jsonb_typeof(p_def -> 'weight')
           when 'number' then greatest((p_def ->> 'weight')::numeric, 0)
           when 'string' then coalesce((select greatest(x.v::text::numeric, 0)
                                          from (select case when p_def ->> 'weight' like 'input.%'
                                                            then p_input #> string_to_array(substr(p_def ->> 'weight', 7), '.')
                                                            else p_item #> string_to_array(substr(p_def ->> 'weight', 6), '.') end) x(v)
                                         where jsonb_typeof(x.v) = 'number'), 0)
           else 1 end
$fn$;

-- ==================== the gate at claim =========================================================================

-- Given steps a claim picked (ids, in claim order; locked by the claim), parks those a pause or a limit holds back
-- and returns the rest, in order. p_held: the steps an earlier round of the same claim admitted (not running yet,
-- but counted by running limits). Called by claim_steps only while a pause is in force or a limit exists.
-- Pauses: one set-based update. Limits: the buckets of every (step, key, limit) are created if missing and locked in
-- key order (claims of several workers serialize on a bucket, never deadlock), running steps are counted per
-- bucket once, then the candidates are taken in order in memory (a refused step consumes nothing), and the buckets,
-- the parked steps and the admitted steps' gate_keys are written with one statement each.
create function ballast_private.gate_steps(p_ids bigint[], p_now timestamptz, p_held bigint[] default '{}')
returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_ids bigint[];
  v_keys jsonb;
  v_weights numeric[];
  b_pattern text[] := '{}';
  b_kind text[] := '{}';
  b_key text[] := '{}';
  b_amount numeric[] := '{}';
  b_t_ms float8[] := '{}';
  b_tau_ms float8[] := '{}';
  b_tat float8[] := '{}';
  b_next float8[] := '{}';
  b_tat0 float8[];
  b_refused int[];
  b_run bigint[] := '{}';
  m_cand int[];
  m_bucket int[];
  v_now_ms float8 := extract(epoch from p_now) * 1000;
  v_i int;
  v_j int;
  v_k int;
  v_end int;
  v_p int := 1;
  v_ok boolean;
  v_wait float8;
  v_why text;
  v_cost float8;
  v_admit bigint[] := '{}';
  v_park bigint[] := '{}';
  v_park_at float8[] := '{}';
  v_park_why text[] := '{}';
  v_park_bucket int[] := '{}';
begin
  -- Paused keys first: park every candidate holding one (until the latest pause among its keys ends).
  with cand as (
    select u.id, u.ord, ballast_private.step_keys(j.pipeline, coalesce(ps.name, s.name), j.tenant_id, d.def, j.input, s.item) as keys,
           ballast_private.step_weight(d.def, j.input, s.item) as weight
      from unnest(p_ids) with ordinality u(id, ord)
      join ballast_private.steps s on s.id = u.id
      join ballast_private.jobs j on j.id = s.job_id
      join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
      left join ballast_private.steps ps on ps.id = s.parent_step_id
      left join lateral (select e as def from jsonb_array_elements(p.definition -> 'steps') e
                          where e ->> 'name' = coalesce(ps.name, s.name) limit 1) d on true),
  held as (
    select c.id, pz.key, pz.until, pz.reason,
           row_number() over (partition by c.id order by coalesce(pz.until, 'infinity') desc) as n
      from cand c join ballast_private.pauses pz on pz.key = any(c.keys)
     where pz.until is null or pz.until > p_now),
  parked as (
    update ballast_private.steps s
       set status = 'retrying', updated_at = p_now,
           -- An open-ended pause parks for an hour at a time (a resume wakes the step at once).
           next_run_at = coalesce(h.until, p_now + interval '1 hour'),
           error = jsonb_build_object('class', 'paused', 'code', 'paused', 'retryable', true, 'attempt', s.attempts,
                                      'key', h.key,
                                      'message', format('key %s is paused %s (%s); the step waits', h.key,
                                                        coalesce('until ' || h.until, 'until resumed'), h.reason))
      from held h where h.n = 1 and s.id = h.id
    returning s.id)
  select array(select c.id from cand c where c.id not in (select id from parked) order by c.ord),
         coalesce(jsonb_agg(to_jsonb(c.keys) order by c.ord) filter (where c.id not in (select id from parked)), '[]'),
         array(select c.weight from cand c where c.id not in (select id from parked) order by c.ord)
    into v_ids, v_keys, v_weights
    from cand c;
  if cardinality(v_ids) = 0 or not exists (select 1 from ballast_private.limits) then
    return v_ids;
  end if;

  -- The (candidate, bucket) pairs, and the buckets in key order.
  with pairs as (
    select c.ord::int as cand, l.pattern, l.kind, k.key, l.amount, l.per, l.burst,
           dense_rank() over (order by l.pattern, l.kind, k.key)::int as bucket
      from jsonb_array_elements(v_keys) with ordinality c(keys, ord)
      cross join lateral jsonb_array_elements_text(c.keys) k(key)
      join ballast_private.limits l
        on l.pattern = k.key or (right(l.pattern, 1) = '*' and starts_with(k.key, left(l.pattern, -1)))),
  buckets as (
    select distinct on (p.bucket) p.* from pairs p order by p.bucket)
  select (select array_agg(p.cand order by p.cand, p.bucket) from pairs p),
         (select array_agg(p.bucket order by p.cand, p.bucket) from pairs p),
         array_agg(b.pattern order by b.bucket), array_agg(b.kind order by b.bucket), array_agg(b.key order by b.bucket),
         array_agg(b.amount::numeric order by b.bucket),
         array_agg(coalesce(extract(epoch from b.per) * 1000 / b.amount, 0)::float8 order by b.bucket),
         array_agg(coalesce(extract(epoch from b.per) * 1000 / b.amount * (b.burst - 1), 0)::float8 order by b.bucket)
    into m_cand, m_bucket, b_pattern, b_kind, b_key, b_amount, b_t_ms, b_tau_ms
    from buckets b;
  if m_cand is null then
    return v_ids;
  end if;
  -- Buckets created if missing, then locked, both in key order: two claims wanting the same buckets take them in
  -- the same order (one waits, neither deadlocks).
  insert into ballast_private.limit_buckets (pattern, kind, key)
  select x.pattern, x.kind, x.key from unnest(b_pattern, b_kind, b_key) with ordinality x(pattern, kind, key, n)
   order by x.n
  on conflict do nothing;
  perform 1 from ballast_private.limit_buckets b
   where (b.pattern, b.kind, b.key) in (select * from unnest(b_pattern, b_kind, b_key))
   order by b.pattern, b.kind, b.key
   for update;
  -- Admission time: now, after the locks (the claim records its attempts' started_at a moment later, so the spacing a
  -- rate limit makes is the spacing of started_at, whatever the lock wait was).
  v_now_ms := extract(epoch from ballast.now()) * 1000;
  -- Bucket state after the locks (a claim that waited for a lock reads what the one before it committed).
  select array_agg(coalesce(extract(epoch from b.tat) * 1000, 0)::float8 order by x.n),
         array_agg(case when x.kind = 'running' then
                     (select count(*) from ballast_private.steps r
                       where (r.status = 'running' or r.id = any(p_held)) and r.gate_keys is not null
                         and x.key = any(r.gate_keys)) else 0 end
                   order by x.n)
    into b_tat, b_run
    from unnest(b_pattern, b_kind, b_key) with ordinality x(pattern, kind, key, n)
    join ballast_private.limit_buckets b on (b.pattern, b.kind, b.key) = (x.pattern, x.kind, x.key);
  b_next := b_tat;
  b_tat0 := b_tat;
  b_refused := array_fill(0, array[cardinality(b_key)]);

  for v_i in 1 .. cardinality(v_ids) loop
    -- Does every limit of every key admit it? (The wait of a refused one: its longest, from the in-memory queue.)
    v_ok := true;
    v_wait := 0;
    v_why := null;
    v_j := v_p;
    while v_j <= cardinality(m_cand) and m_cand[v_j] = v_i loop
      v_k := m_bucket[v_j];
      if b_kind[v_k] = 'running' then
        if b_run[v_k] + 1 > b_amount[v_k] then
          -- Nothing says when a running step ends: look again in 250 ms, the ones refused later in this claim a
          -- little later each (250 ms more per `amount` of them, at most 2 s), so a backlog comes back in turns.
          v_ok := false;
          if v_wait < least(2000, 250 * (1 + floor(b_refused[v_k] / b_amount[v_k]))) then
            v_wait := least(2000, 250 * (1 + floor(b_refused[v_k] / b_amount[v_k])));
            v_why := 'concurrency_limited:' || v_k;
          end if;
          b_refused[v_k] := b_refused[v_k] + 1;
        end if;
      elsif b_tat[v_k] > v_now_ms + b_tau_ms[v_k] then
        v_ok := false;
        if greatest(b_tat[v_k], b_next[v_k]) - b_tau_ms[v_k] - v_now_ms > v_wait then
          v_wait := greatest(b_tat[v_k], b_next[v_k]) - b_tau_ms[v_k] - v_now_ms;
          v_why := 'rate_limited:' || v_k;
        end if;
      end if;
      v_j := v_j + 1;
    end loop;
    v_end := v_j - 1;
    -- Admitted: each of its buckets moves on. Refused: it consumes nothing, but the buckets that refused it move
    -- their in-memory queue on, so that the refused steps of one claim come back spread out, not all at once.
    for v_j in v_p .. v_end loop
      v_k := m_bucket[v_j];
      v_cost := case b_kind[v_k] when 'weight' then v_weights[v_i] when 'requests' then 1 else 0 end;
      if v_ok then
        if b_kind[v_k] = 'running' then
          b_run[v_k] := b_run[v_k] + 1;
        else
          b_tat[v_k] := greatest(b_tat[v_k], v_now_ms) + v_cost * b_t_ms[v_k];
          b_next[v_k] := greatest(b_next[v_k], b_tat[v_k]);
        end if;
      elsif b_kind[v_k] <> 'running' and b_tat[v_k] > v_now_ms + b_tau_ms[v_k] then
        b_next[v_k] := greatest(b_next[v_k], b_tat[v_k], v_now_ms) + v_cost * b_t_ms[v_k];
      end if;
    end loop;
    v_p := v_end + 1;
    if v_ok then
      v_admit := v_admit || v_ids[v_i];
    else
      v_park := v_park || v_ids[v_i];
      v_park_at := v_park_at || (v_now_ms + v_wait);
      v_park_why := v_park_why || split_part(v_why, ':', 1);
      v_park_bucket := v_park_bucket || split_part(v_why, ':', 2)::int;
    end if;
  end loop;

  update ballast_private.limit_buckets b set tat = to_timestamp(x.tat / 1000)
    from unnest(b_pattern, b_kind, b_key, b_tat, b_tat0) x(pattern, kind, key, tat, tat0)
   where (b.pattern, b.kind, b.key) = (x.pattern, x.kind, x.key) and x.tat <> x.tat0;
  if cardinality(v_park) > 0 then
    update ballast_private.steps s
       set status = 'retrying', updated_at = p_now, next_run_at = to_timestamp(x.at / 1000),
           error = jsonb_build_object('class', x.why, 'code', x.why, 'retryable', true, 'attempt', s.attempts,
                                      'key', b_key[x.bucket], 'limit', b_pattern[x.bucket] || ' (' || b_kind[x.bucket] || ')',
                                      'message', format('%s limit %s on key %s holds the step back; it waits until %s',
                                                        b_kind[x.bucket], b_pattern[x.bucket], b_key[x.bucket],
                                                        to_timestamp(x.at / 1000)))
      from unnest(v_park, v_park_at, v_park_why, v_park_bucket) x(id, at, why, bucket)
     where s.id = x.id;
  end if;
  if cardinality(v_admit) > 0 and 'running' = any(b_kind) then
    update ballast_private.steps s set gate_keys = array(select jsonb_array_elements_text(v_keys -> (x.n - 1)::int))
      from unnest(v_ids) with ordinality x(id, n)
     where s.id = x.id and x.id = any(v_admit);
  end if;
  return v_admit;
end
$fn$;

-- ==================== the claim ==================================================================================

-- As in 0032, plus the gate: while a pause is in force or a limit exists, picked steps go through gate_steps, and
-- when the gates (model or key) parked some of a full pick, the claim picks again for the places left (at most four
-- rounds), so that a paused or limited burst at the head of the queue does not leave the workers idle until the
-- next poll. When no gate applies, one more probe of two small tables is all it costs.
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
    perform ballast_private.requeue_due_retries(p_tasks, v_n, v_now);
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
         order by s.priority, (s.attempts = 0), s.id limit v_n - cardinality(v_ids) - cardinality(v_pick)
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

-- ==================== operator verbs ============================================================================

create function ballast_private.check_gate_key(p_field text, p_key text, p_pattern boolean default false)
returns void
language plpgsql immutable
as $fn$
declare
  -- (A pattern may end in ':*' or ':<prefix>*'; a key needs a value after its colon.)
  v_format text := case when p_pattern then '^[a-z][a-z0-9_-]*(:.*)?$' else '^[a-z][a-z0-9_-]*(:.+)?$' end;
begin
  if p_key is null or p_key !~ v_format or octet_length(p_key) > 300 then
    perform ballast_private.bad_argument(p_field, format('%L is not a key%s', p_key, case when p_pattern then ' pattern' else '' end),
      case when p_pattern
           then 'Use a key such as tenant:acme or provider:openai, or a prefix ending in * for one limit per key (tenant:*).'
           else 'Use a key such as global, tenant:acme, pipeline:summarize, step:summarize.call, provider:openai or one a step declares (queue:emails): a lower-case kind, a colon, a value (at most 300 bytes).' end);
  end if;
end
$fn$;

-- Closes p_key until p_until (or for p_for; neither: until resumed). A key already paused stays paused until the
-- later of the two ends (an open-ended pause wins). Workers are notified (ballast_gates). Recorded in gate_history
-- with the actor, the reason and, from a step (ctx.pauseKey), the step. Returns the pause in force.
-- Raises BA002 (a bad key, an empty reason, a time in the past, both until and for).
create function ballast.pause_key(p_key text, p_reason text, p_until timestamptz default null, p_for interval default null,
  p_actor text default null, p_step_id bigint default null)
returns table (key text, until timestamptz, reason text, paused_by text, paused_at timestamptz)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_now timestamptz := ballast.now();
  v_until timestamptz := coalesce(p_until, v_now + p_for);
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  perform ballast_private.check_gate_key('key', p_key);
  if coalesce(btrim(p_reason), '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why the key is paused (e.g. ''429 from the provider'', ''maintenance''); it is kept in the history.');
  end if;
  if p_until is not null and p_for is not null then
    perform ballast_private.bad_argument('until', 'is given together with for', 'Pass either an end time (until) or a duration (for), not both.');
  end if;
  if v_until is not null and v_until <= v_now then
    perform ballast_private.bad_argument(case when p_for is null then 'until' else 'for' end,
      format('ends at %s, which is not after now (%s)', v_until, v_now), 'Pass a time in the future, or a positive duration.');
  end if;
  insert into ballast_private.pauses as z (key, until, reason, paused_by, paused_at, step_id)
  values (p_key, v_until, p_reason, v_actor, v_now, p_step_id)
  on conflict on constraint pauses_pkey do update
    -- The later end wins: an open-ended pause (null) outlasts any, an ended one is replaced.
    set until = case when z.until is not null and z.until <= v_now then excluded.until
                     when z.until is null or excluded.until is null then null
                     else greatest(z.until, excluded.until) end,
        reason = excluded.reason, paused_by = excluded.paused_by, paused_at = excluded.paused_at, step_id = excluded.step_id;
  insert into ballast_private.gate_history (action, key, until, reason, actor, step_id, at)
  select 'pause', z.key, z.until, p_reason, v_actor, p_step_id, v_now from ballast_private.pauses z where z.key = p_key;
  perform pg_notify('ballast_gates', '');
  return query select z.key, z.until, z.reason, z.paused_by, z.paused_at from ballast_private.pauses z where z.key = p_key;
end
$fn$;

-- Opens p_key again: removes its pause and wakes the steps it parked (they are queued at once). Recorded in
-- gate_history. Returns whether a pause was in force. Raises BA002 (a bad key).
create function ballast.resume_key(p_key text, p_reason text default null, p_actor text default null)
returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_was boolean;
begin
  perform ballast_private.check_gate_key('key', p_key);
  delete from ballast_private.pauses z where z.key = p_key returning (z.until is null or z.until > v_now) into v_was;
  insert into ballast_private.gate_history (action, key, reason, actor, at)
  values ('resume', p_key, p_reason, ballast_private.caller_actor(p_actor), v_now);
  update ballast_private.steps s set next_run_at = v_now, updated_at = v_now
   where s.status = 'retrying' and s.next_run_at > v_now and s.error ->> 'class' = 'paused' and s.error ->> 'key' = p_key;
  if found then
    perform pg_notify('ballast_queue', '');
  end if;
  return coalesce(v_was, false);
end
$fn$;

-- Creates or replaces the limit of p_kind on p_pattern (see the header). requests/weight: p_amount per p_per, with a
-- burst (default 1); running: p_amount at once (no per). Recorded in gate_history. Raises BA002 (naming the field).
create function ballast.set_limit(p_pattern text, p_kind text, p_amount bigint, p_per interval default null,
  p_burst bigint default 1, p_note text default null, p_actor text default null)
returns table (pattern text, kind text, amount bigint, per interval, burst bigint, note text, set_by text, set_at timestamptz)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  perform ballast_private.check_gate_key('pattern', p_pattern, true);
  if p_kind is null or p_kind not in ('requests', 'weight', 'running') then
    perform ballast_private.bad_argument('kind', format('%L is not requests, weight or running', p_kind),
      'Pass ''requests'' (steps per period), ''weight'' (step weights, e.g. tokens, per period) or ''running'' (steps at once).');
  end if;
  if p_amount is null or p_amount not between 1 and 1000000000000 then
    perform ballast_private.bad_argument('amount', format('%s is not between 1 and 10^12', coalesce(p_amount::text, 'null')),
      'Pass how many steps (or how much weight) the limit lets through.');
  end if;
  if p_kind = 'running' and p_per is not null then
    perform ballast_private.bad_argument('per', 'is given for a running limit', 'A running limit counts steps at once: leave per out.');
  end if;
  if p_kind <> 'running' and (p_per is null or p_per < interval '1 millisecond' or p_per > interval '31 days') then
    perform ballast_private.bad_argument('per', format('%s is not between 1 millisecond and 31 days', coalesce(p_per::text, 'null')),
      'Pass the period of the rate, e.g. ''1 minute''.');
  end if;
  if p_burst is null or p_burst not between 1 and 1000000000000 then
    perform ballast_private.bad_argument('burst', format('%s is not between 1 and 10^12', coalesce(p_burst::text, 'null')),
      'Pass 1 (evenly spaced, the default) or how many may start at once after a quiet time.');
  end if;
  insert into ballast_private.limits as l (pattern, kind, amount, per, burst, note, set_by, set_at)
  values (p_pattern, p_kind, p_amount, p_per, p_burst, p_note, v_actor, ballast.now())
  on conflict on constraint limits_pkey do update
    set amount = excluded.amount, per = excluded.per, burst = excluded.burst, note = excluded.note,
        set_by = excluded.set_by, set_at = excluded.set_at;
  insert into ballast_private.gate_history (action, key, reason, data, actor)
  values ('set_limit', p_pattern, p_note,
          jsonb_build_object('kind', p_kind, 'amount', p_amount, 'per', p_per::text, 'burst', p_burst), v_actor);
  perform pg_notify('ballast_gates', '');
  return query select l.pattern, l.kind, l.amount, l.per, l.burst, l.note, l.set_by, l.set_at
                 from ballast_private.limits l where l.pattern = p_pattern and l.kind = p_kind;
end
$fn$;

-- Removes the limit of p_kind on p_pattern (and its per-key state); steps it parked wait out their time. Recorded
-- in gate_history. Returns whether there was one.
create function ballast.delete_limit(p_pattern text, p_kind text, p_actor text default null)
returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  delete from ballast_private.limits l where l.pattern = p_pattern and l.kind = p_kind;
  if not found then
    return false;
  end if;
  insert into ballast_private.gate_history (action, key, data, actor)
  values ('delete_limit', p_pattern, jsonb_build_object('kind', p_kind), ballast_private.caller_actor(p_actor));
  return true;
end
$fn$;

-- ==================== views =====================================================================================

create view ballast.pauses with (security_invoker = true) as
  select z.key, z.until, z.reason, z.paused_by, z.paused_at, z.step_id,
         (z.until is null or z.until > ballast.now()) as in_force
    from ballast_private.pauses z;
comment on view ballast.pauses is 'Paused keys (ballast.pause_key): a step with one of these keys is not started while the pause is in force.';
comment on column ballast.pauses.key is 'The key (e.g. tenant:acme, pipeline:summarize, provider:openai).';
comment on column ballast.pauses.until is 'When the pause ends; null: until resumed.';
comment on column ballast.pauses.reason is 'Why, as given.';
comment on column ballast.pauses.paused_by is 'Who paused it (the actor).';
comment on column ballast.pauses.paused_at is 'When it was paused (or extended) last.';
comment on column ballast.pauses.step_id is 'The step that paused it (ctx.pauseKey), if a step did.';
comment on column ballast.pauses.in_force is 'Whether it holds steps back now (false: its time has passed).';

create view ballast.limits with (security_invoker = true) as
  select l.pattern, l.kind, l.amount, l.per, l.burst, l.note, l.set_by, l.set_at,
         (select count(*) from ballast_private.limit_buckets b where b.pattern = l.pattern and b.kind = l.kind) as keys_seen
    from ballast_private.limits l;
comment on view ballast.limits is 'Rate and concurrency limits on keys (ballast.set_limit), enforced at claim by every worker.';
comment on column ballast.limits.pattern is 'An exact key, or a prefix ending in * (one limit per matching key).';
comment on column ballast.limits.kind is 'requests (steps per period), weight (step weights per period) or running (steps at once).';
comment on column ballast.limits.amount is 'How many steps (or how much weight) per period, or at once.';
comment on column ballast.limits.per is 'The period of a rate; null for running.';
comment on column ballast.limits.burst is 'How many may start at once after a quiet time (1: evenly spaced).';
comment on column ballast.limits.note is 'Why the limit exists, as given.';
comment on column ballast.limits.set_by is 'Who set it last.';
comment on column ballast.limits.set_at is 'When it was set last.';
comment on column ballast.limits.keys_seen is 'How many distinct keys it has applied to so far.';

create view ballast.gate_history with (security_invoker = true) as
  select h.id, h.action, h.key, h.until, h.reason, h.data, h.actor, h.step_id, h.at from ballast_private.gate_history h;
comment on view ballast.gate_history is 'Every pause, resume and limit change, oldest first by id (append-only).';
comment on column ballast.gate_history.id is 'Its position in the history (ascending).';
comment on column ballast.gate_history.action is 'pause, resume, set_limit or delete_limit.';
comment on column ballast.gate_history.key is 'The key paused or resumed, or the pattern of the limit.';
comment on column ballast.gate_history.until is 'For a pause: when it ends (null: until resumed).';
comment on column ballast.gate_history.reason is 'Why, as given.';
comment on column ballast.gate_history.data is 'For a limit: its kind, amount, per and burst.';
comment on column ballast.gate_history.actor is 'Who did it.';
comment on column ballast.gate_history.step_id is 'The step that paused the key (ctx.pauseKey), if a step did.';
comment on column ballast.gate_history.at is 'When.';

create trigger refuse_write instead of insert or update or delete on ballast.pauses
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.limits
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.gate_history
  for each row execute function ballast_private.refuse_view_write();

-- ==================== privileges ================================================================================

grant select on ballast_private.pauses, ballast_private.limits, ballast_private.limit_buckets, ballast_private.gate_history
  to ballast_operator, ballast_reporter;
grant select on ballast.pauses, ballast.limits, ballast.gate_history to ballast_operator, ballast_reporter;
revoke execute on function ballast_private.step_keys(text, text, text, jsonb, jsonb, jsonb) from public;
revoke execute on function ballast_private.step_weight(jsonb, jsonb, jsonb) from public;
revoke execute on function ballast_private.gate_steps(bigint[], timestamptz, bigint[]) from public;
revoke execute on function ballast_private.check_gate_key(text, text, boolean) from public;
revoke execute on function ballast_private.gate_history_append_only() from public;
revoke execute on function ballast.pause_key(text, text, timestamptz, interval, text, bigint) from public;
revoke execute on function ballast.resume_key(text, text, text) from public;
revoke execute on function ballast.set_limit(text, text, bigint, interval, bigint, text, text) from public;
revoke execute on function ballast.delete_limit(text, text, text) from public;
grant execute on function ballast.pause_key(text, text, timestamptz, interval, text, bigint) to ballast_operator;
grant execute on function ballast.resume_key(text, text, text) to ballast_operator;
grant execute on function ballast.set_limit(text, text, bigint, interval, bigint, text, text) to ballast_operator;
grant execute on function ballast.delete_limit(text, text, text) to ballast_operator;

-- Down Migration
