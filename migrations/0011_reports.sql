-- Up Migration
--
-- Baseline, file 11 of 11: operating ballast from psql: reports, stuck work, retention of a large history, and the
-- oldest open transactions.
--
-- Reports over a window of history are set-returning functions with the window as a parameter, one row per period
-- (report_pipelines, report_steps, report_models, report_quality); reports of the present state are views that read
-- only live rows through partial indexes (queue_depth, stuck_work, oldest_transactions).
--
-- Retention. ballast.prune_history clears what a finished job no longer needs and keeps what reports and the audit
-- trail need: inputs, results, step outputs, progress, map items, review proposals, effect results, raw model
-- outputs and validation issues go; statuses, timings, attempts, errors, tokens, costs, scores and every event stay
-- (events are append-only and untouched). A pruned job is marked (jobs.pruned_at) and can no longer run again
-- (pruned_job_guard: a replay of it is refused, BA001). Each call prunes one batch, never waits for a lock and says
-- whether more remain; src/retention.ts loops over batches with a pause (BALLAST_RETENTION).
-- Folded from the old 0012 and 0019.

-- pruned_job_guard: BEFORE UPDATE OF status on jobs when the job was pruned. A replay of a pruned job would run steps
-- whose inputs and upstream outputs are gone; it is refused with BA001 (the replay's whole transaction rolls back).
create function ballast_private.pruned_job_guard() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA001',
    message = format('job %s cannot go from %s to %s: its history was pruned at %s (input and outputs are gone)',
                     old.id, old.status, new.status, old.pruned_at),
    hint = 'Submit a new job with the input instead; retention (BALLAST_RETENTION) prunes finished jobs after its period.';
end
$fn$;

create trigger pruned_job_guard
  before update of status on ballast_private.jobs
  for each row when (old.pruned_at is not null and old.status is distinct from new.status)
  execute function ballast_private.pruned_job_guard();

-- report_window(since, period) -> the start of the window: ballast.now() - since.
-- Raises BA002 for a window that is null, zero or negative, and for a period other than minute, hour, day, week or
-- month. Each report calls it once, before its query, and bounds its scan by the result: ballast.now() itself is
-- volatile, and a volatile expression cannot bound an index scan.
create function ballast_private.report_window(p_since interval, p_period text) returns timestamp with time zone
language plpgsql stable
as $fn$
begin
  if p_since is null or p_since <= interval '0' then
    perform ballast_private.bad_argument('since', format('%s is not a positive interval', coalesce(p_since::text, 'null')),
      'Pass how far back to look, e.g. ''24 hours'' or ''7 days''.');
  end if;
  if p_period is null or p_period not in ('minute', 'hour', 'day', 'week', 'month') then
    perform ballast_private.bad_argument('period', format('%L is not minute, hour, day, week or month', p_period),
      'Pass ''hour'' or ''day'' (periods are UTC).');
  end if;
  return ballast.now() - p_since;
end
$fn$;
grant execute on function ballast_private.report_window(interval,text) to ballast_client, ballast_operator, ballast_reporter;

-- report_period(period, at) -> the start of the UTC period holding `at`.
create function ballast_private.report_period(
  p_period text,
  p_at timestamp with time zone
) returns timestamp with time zone
language sql immutable parallel safe
as $fn$
  select date_trunc(p_period, p_at at time zone 'UTC') at time zone 'UTC'
$fn$;
grant execute on function ballast_private.report_period(text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;

-- report_pipelines(since, period) -> one row per period (UTC), pipeline and version, for the jobs submitted since
-- ballast.now() - since; oldest period first. See the definitions above. Raises BA002 for a bad window or period.
create function ballast.report_pipelines(
  p_since interval default '24:00:00'::interval,
  p_period text default 'hour'::text
) returns table(period_start timestamp with time zone, pipeline text, pipeline_version integer, jobs bigint, completed bigint, partially_completed bigint, failed bigint, cancelled bigint, unfinished bigint, pruned bigint, success_rate numeric, retry_rate numeric, model_attempts bigint, first_pass_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric, queue_wait_p50_ms numeric, queue_wait_p95_ms numeric, run_p50_ms numeric, run_p95_ms numeric, duration_p50_ms numeric, duration_p95_ms numeric, cost_usd numeric, input_tokens bigint, output_tokens bigint)
language plpgsql stable set jit = off
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with win as materialized (
    select j.id, j.pipeline, j.pipeline_version, j.status, j.pruned_at, j.cost_usd, j.input_tokens, j.output_tokens,
           ballast_private.report_period(p_period, j.created_at) as period_start,
           case when j.status in ('completed', 'partially_completed', 'failed')
                then extract(epoch from j.finished_at - j.created_at) * 1000 end as duration_ms
      from ballast_private.jobs j
     where j.created_at >= v_from),
  st as materialized (
    select w.period_start, w.pipeline, w.pipeline_version, s.id, s.job_id,
           extract(epoch from s.started_at - case when s.attempts = 1 then s.queued_at
                                                  when s.parent_step_id is not null or cardinality(s.depends_on) = 0
                                                  then s.created_at end) * 1000 as wait_ms
      from win w
      cross join lateral (select s.* from ballast_private.steps s where s.job_id = w.id offset 0) s),
  att as materialized (
    select s.period_start, s.pipeline, s.pipeline_version, s.job_id, a.step_id, a.number, a.outcome,
           a.contract_outcome, a.fallback_used,
           case when a.outcome in ('succeeded', 'failed', 'timed_out', 'needs_review')
                then extract(epoch from a.finished_at - a.started_at) * 1000 end as run_ms
      from st s
      cross join lateral (select a.* from ballast_private.attempts a where a.step_id = s.id offset 0) a),
  job_agg as (
    select w.period_start, w.pipeline, w.pipeline_version, count(*) as jobs,
           count(*) filter (where w.status = 'completed') as completed,
           count(*) filter (where w.status = 'partially_completed') as partially_completed,
           count(*) filter (where w.status = 'failed') as failed,
           count(*) filter (where w.status = 'cancelled') as cancelled,
           count(*) filter (where w.status not in ('completed', 'partially_completed', 'failed', 'cancelled')) as unfinished,
           count(*) filter (where w.pruned_at is not null) as pruned,
           percentile_cont(0.5) within group (order by w.duration_ms) as duration_p50,
           percentile_cont(0.95) within group (order by w.duration_ms) as duration_p95,
           sum(w.cost_usd) as cost_usd, sum(w.input_tokens)::bigint as input_tokens,
           sum(w.output_tokens)::bigint as output_tokens
      from win w group by 1, 2, 3),
  retry_agg as (
    select r.period_start, r.pipeline, r.pipeline_version, count(distinct r.job_id) as jobs_ran,
           count(distinct r.job_id) filter (where r.retried) as jobs_retried
      from (select a.period_start, a.pipeline, a.pipeline_version, a.job_id,
                   coalesce(min(a.number) filter (where a.outcome in ('failed', 'crashed', 'timed_out')) < max(a.number),
                            false) as retried
              from att a group by 1, 2, 3, 4, a.step_id) r
     group by 1, 2, 3),
  attempt_agg as (
    select a.period_start, a.pipeline, a.pipeline_version,
           count(*) filter (where a.contract_outcome is not null) as model_attempts,
           count(*) filter (where a.contract_outcome = 'valid_first_try') as first_pass,
           count(*) filter (where a.contract_outcome is not null and a.fallback_used) as fell_back,
           count(*) filter (where a.contract_outcome = 'degraded') as degraded,
           count(*) filter (where a.contract_outcome = 'review') as review,
           percentile_cont(0.5) within group (order by a.run_ms) as run_p50,
           percentile_cont(0.95) within group (order by a.run_ms) as run_p95
      from att a group by 1, 2, 3),
  step_agg as (
    select s.period_start, s.pipeline, s.pipeline_version,
           percentile_cont(0.5) within group (order by s.wait_ms) as wait_p50,
           percentile_cont(0.95) within group (order by s.wait_ms) as wait_p95
      from st s group by 1, 2, 3)
  select j.period_start, j.pipeline, j.pipeline_version, j.jobs, j.completed, j.partially_completed, j.failed,
         j.cancelled, j.unfinished, j.pruned,
         round(j.completed::numeric / nullif(j.completed + j.partially_completed + j.failed, 0), 4),
         round(r.jobs_retried::numeric / nullif(r.jobs_ran, 0), 4),
         coalesce(a.model_attempts, 0),
         round(a.first_pass::numeric / nullif(a.model_attempts, 0), 4),
         round(a.fell_back::numeric / nullif(a.model_attempts, 0), 4),
         round(a.degraded::numeric / nullif(a.model_attempts, 0), 4),
         round(a.review::numeric / nullif(a.model_attempts, 0), 4),
         round(s.wait_p50::numeric, 1), round(s.wait_p95::numeric, 1),
         round(a.run_p50::numeric, 1), round(a.run_p95::numeric, 1),
         round(j.duration_p50::numeric, 1), round(j.duration_p95::numeric, 1),
         j.cost_usd, j.input_tokens, j.output_tokens
    from job_agg j
    left join retry_agg r on (r.period_start, r.pipeline, r.pipeline_version) = (j.period_start, j.pipeline, j.pipeline_version)
    left join attempt_agg a on (a.period_start, a.pipeline, a.pipeline_version) = (j.period_start, j.pipeline, j.pipeline_version)
    left join step_agg s on (s.period_start, s.pipeline, s.pipeline_version) = (j.period_start, j.pipeline, j.pipeline_version)
   order by j.period_start, j.pipeline, j.pipeline_version;
end
$fn$;
grant execute on function ballast.report_pipelines(interval,text) to ballast_client, ballast_operator, ballast_reporter;

-- report_steps(since, period) -> one row per period (UTC), pipeline, version and step name, for the jobs submitted
-- since ballast.now() - since. The items of a map step count under the map step's name with is_item = true (the map
-- step itself has its own row). See the definitions above report_pipelines. Raises BA002 for a bad window or period.
create function ballast.report_steps(
  p_since interval default '24:00:00'::interval,
  p_period text default 'hour'::text
) returns table(period_start timestamp with time zone, pipeline text, pipeline_version integer, step_name text, is_item boolean, steps bigint, succeeded bigint, failed bigint, skipped bigint, cancelled bigint, unfinished bigint, success_rate numeric, retry_rate numeric, attempts bigint, model_attempts bigint, first_pass_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric, queue_wait_p50_ms numeric, queue_wait_p95_ms numeric, run_p50_ms numeric, run_p95_ms numeric, cost_usd numeric, input_tokens bigint, output_tokens bigint)
language plpgsql stable set jit = off
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with st as materialized (
    select ballast_private.report_period(p_period, j.created_at) as period_start, j.pipeline, j.pipeline_version,
           -- items are named '<map step>__<index>' (0008)
           case when s.parent_step_id is null then s.name else regexp_replace(s.name, '__[0-9]+$', '') end as step_name,
           s.parent_step_id is not null as is_item, s.id, s.status, s.cost_usd, s.input_tokens, s.output_tokens,
           extract(epoch from s.started_at - case when s.attempts = 1 then s.queued_at
                                                  when s.parent_step_id is not null or cardinality(s.depends_on) = 0
                                                  then s.created_at end) * 1000 as wait_ms
      from ballast_private.jobs j
      cross join lateral (select s.* from ballast_private.steps s where s.job_id = j.id offset 0) s
     where j.created_at >= v_from),
  att as materialized (
    select s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item, a.step_id, a.number, a.outcome,
           a.contract_outcome, a.fallback_used,
           case when a.outcome in ('succeeded', 'failed', 'timed_out', 'needs_review')
                then extract(epoch from a.finished_at - a.started_at) * 1000 end as run_ms
      from st s
      cross join lateral (select a.* from ballast_private.attempts a where a.step_id = s.id offset 0) a),
  step_agg as (
    select s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item, count(*) as steps,
           count(*) filter (where s.status = 'succeeded') as succeeded,
           count(*) filter (where s.status = 'failed') as failed,
           count(*) filter (where s.status = 'skipped') as skipped,
           count(*) filter (where s.status = 'cancelled') as cancelled,
           count(*) filter (where s.status not in ('succeeded', 'failed', 'skipped', 'cancelled')) as unfinished,
           percentile_cont(0.5) within group (order by s.wait_ms) as wait_p50,
           percentile_cont(0.95) within group (order by s.wait_ms) as wait_p95,
           sum(s.cost_usd) as cost_usd, sum(s.input_tokens)::bigint as input_tokens,
           sum(s.output_tokens)::bigint as output_tokens
      from st s group by 1, 2, 3, 4, 5),
  retry_agg as (
    select r.period_start, r.pipeline, r.pipeline_version, r.step_name, r.is_item, count(*) as steps_ran,
           count(*) filter (where r.retried) as steps_retried
      from (select a.period_start, a.pipeline, a.pipeline_version, a.step_name, a.is_item,
                   coalesce(min(a.number) filter (where a.outcome in ('failed', 'crashed', 'timed_out')) < max(a.number),
                            false) as retried
              from att a group by 1, 2, 3, 4, 5, a.step_id) r
     group by 1, 2, 3, 4, 5),
  attempt_agg as (
    select a.period_start, a.pipeline, a.pipeline_version, a.step_name, a.is_item, count(*) as attempts,
           count(*) filter (where a.contract_outcome is not null) as model_attempts,
           count(*) filter (where a.contract_outcome = 'valid_first_try') as first_pass,
           count(*) filter (where a.contract_outcome is not null and a.fallback_used) as fell_back,
           count(*) filter (where a.contract_outcome = 'degraded') as degraded,
           count(*) filter (where a.contract_outcome = 'review') as review,
           percentile_cont(0.5) within group (order by a.run_ms) as run_p50,
           percentile_cont(0.95) within group (order by a.run_ms) as run_p95
      from att a group by 1, 2, 3, 4, 5)
  select s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item, s.steps, s.succeeded, s.failed,
         s.skipped, s.cancelled, s.unfinished,
         round(s.succeeded::numeric / nullif(s.succeeded + s.failed, 0), 4),
         round(r.steps_retried::numeric / nullif(r.steps_ran, 0), 4),
         coalesce(a.attempts, 0), coalesce(a.model_attempts, 0),
         round(a.first_pass::numeric / nullif(a.model_attempts, 0), 4),
         round(a.fell_back::numeric / nullif(a.model_attempts, 0), 4),
         round(a.degraded::numeric / nullif(a.model_attempts, 0), 4),
         round(a.review::numeric / nullif(a.model_attempts, 0), 4),
         round(s.wait_p50::numeric, 1), round(s.wait_p95::numeric, 1),
         round(a.run_p50::numeric, 1), round(a.run_p95::numeric, 1),
         s.cost_usd, s.input_tokens, s.output_tokens
    from step_agg s
    left join retry_agg r
      on (r.period_start, r.pipeline, r.pipeline_version, r.step_name, r.is_item)
       = (s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item)
    left join attempt_agg a
      on (a.period_start, a.pipeline, a.pipeline_version, a.step_name, a.is_item)
       = (s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item)
   order by s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item;
end
$fn$;
grant execute on function ballast.report_steps(interval,text) to ballast_client, ballast_operator, ballast_reporter;

-- report_models(since, period) -> one row per period (UTC), provider and requested model, for the calls started
-- since ballast.now() - since (index model_calls_started, 0009_model_steps_and_budgets):
--   calls            calls made (not counting the ones a cooldown or an exhausted budget stopped: not_made);
--   errors           calls made that failed (any error class, content failures included), and error_rate;
--   errors_by_class  {"class": count} of every failed or stopped call, e.g. {"schema": 3, "transport": 1, "budget": 2};
--   latency          p50/p95 of latency_ms of the calls made; tokens and cost summed; unpriced: calls made without a
--                    known price (cost null).
-- Raises BA002 for a bad window or period.
create function ballast.report_models(
  p_since interval default '24:00:00'::interval,
  p_period text default 'hour'::text
) returns table(period_start timestamp with time zone, provider text, model text, calls bigint, errors bigint, error_rate numeric, errors_by_class jsonb, not_made bigint, latency_p50_ms numeric, latency_p95_ms numeric, input_tokens bigint, output_tokens bigint, cached_input_tokens bigint, cost_usd numeric, unpriced bigint)
language plpgsql stable
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with c as materialized (
    select ballast_private.report_period(p_period, c.started_at) as period_start, c.provider,
           c.requested_model as model, c.error_class, c.latency_ms, c.input_tokens, c.output_tokens,
           c.cached_input_tokens, c.cost_usd,
           coalesce(c.error_class not in ('cooldown', 'budget'), true) as made
      from ballast_private.model_calls c
     where c.started_at >= v_from),
  by_class as (
    select c.period_start, c.provider, c.model, jsonb_object_agg(c.error_class, c.n order by c.error_class) as classes
      from (select c.period_start, c.provider, c.model, c.error_class, count(*) as n
              from c where c.error_class is not null group by 1, 2, 3, 4) c
     group by 1, 2, 3)
  select c.period_start, c.provider, c.model,
         count(*) filter (where c.made),
         count(*) filter (where c.made and c.error_class is not null),
         round((count(*) filter (where c.made and c.error_class is not null))::numeric
               / nullif(count(*) filter (where c.made), 0), 4),
         coalesce(b.classes, '{}'::jsonb),
         count(*) filter (where not c.made),
         round((percentile_cont(0.5) within group (order by c.latency_ms) filter (where c.made))::numeric, 1),
         round((percentile_cont(0.95) within group (order by c.latency_ms) filter (where c.made))::numeric, 1),
         coalesce(sum(c.input_tokens), 0)::bigint, coalesce(sum(c.output_tokens), 0)::bigint,
         coalesce(sum(c.cached_input_tokens), 0)::bigint, coalesce(sum(c.cost_usd), 0),
         count(*) filter (where c.made and c.cost_usd is null)
    from c
    left join by_class b on (b.period_start, b.provider, b.model) = (c.period_start, c.provider, c.model)
   group by c.period_start, c.provider, c.model, b.classes
   order by c.period_start, c.provider, c.model;
end
$fn$;
grant execute on function ballast.report_models(interval,text) to ballast_client, ballast_operator, ballast_reporter;

-- report_quality(since, period) -> one row per period (UTC, default a day), prompt name and version, provider and
-- requested model: the quality scores of the calls started since ballast.now() - since (calls whose output was
-- scored by the step's quality check): count, average, minimum, maximum, and how many scored below the threshold
-- (error class quality). A falling average for one prompt version and model is drift. Raises BA002 for a bad
-- window or period.
create function ballast.report_quality(
  p_since interval default '30 days'::interval,
  p_period text default 'day'::text
) returns table(period_start timestamp with time zone, prompt_name text, prompt_version integer, provider text, model text, scored_calls bigint, avg_score numeric, min_score numeric, max_score numeric, below_threshold bigint)
language plpgsql stable
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  select ballast_private.report_period(p_period, c.started_at), c.prompt_name, c.prompt_version, c.provider,
         c.requested_model, count(*), round(avg(c.score), 4), min(c.score), max(c.score),
         count(*) filter (where c.error_class = 'quality')
    from ballast_private.model_calls c
   where c.started_at >= v_from and c.score is not null
   group by 1, 2, 3, 4, 5
   order by 1, 2, 3, 4, 5;
end
$fn$;
grant execute on function ballast.report_quality(interval,text) to ballast_client, ballast_operator, ballast_reporter;

-- Per pipeline, the live steps by status (pending steps, waiting for their dependencies, are not in the queue), and
-- the oldest runnable one: queued since queued_at, or retrying and due since next_run_at. Reads only live steps
-- through steps_live_idx (0002_tables), so its cost follows the queue, not the history.
create view ballast.queue_depth with (security_invoker = true) as
select j.pipeline,
       count(*) filter (where s.status = 'queued') as queued,
       count(*) filter (where s.status = 'retrying' and s.next_run_at <= n.now) as retrying_due,
       count(*) filter (where s.status = 'retrying' and s.next_run_at > n.now) as retrying_later,
       count(*) filter (where s.status = 'running') as running,
       count(*) filter (where s.status = 'waiting') as waiting,
       count(*) filter (where s.status = 'needs_review') as needs_review,
       min(case when s.status = 'queued' then s.queued_at
                when s.status = 'retrying' and s.next_run_at <= n.now then s.next_run_at end) as oldest_runnable_since,
       n.now - min(case when s.status = 'queued' then s.queued_at
                        when s.status = 'retrying' and s.next_run_at <= n.now then s.next_run_at end) as oldest_wait
  from (select ballast.now() as now) n
  cross join ballast_private.steps s
  join ballast_private.jobs j on j.id = s.job_id
 where s.status in ('queued', 'running', 'retrying', 'waiting', 'needs_review')
 group by j.pipeline, n.now;
grant select on ballast.queue_depth to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.queue_depth is 'Per pipeline, the live steps by status and how long the oldest runnable one has waited.';
create trigger refuse_write instead of insert or update or delete on ballast.queue_depth
  for each row execute function ballast_private.refuse_view_write();

-- report_stuck(queued_for, overdue_by) -> work that should have moved and has not, oldest first:
--   wait_past_deadline  a step waiting for an event past its deadline by more than overdue_by (the reaper fails or
--                       retries it within a second: no worker is running its reaper);
--   lease_expired       a running attempt whose lease expired more than overdue_by ago (the reaper reclaims it);
--   retry_overdue       a retrying step due more than overdue_by ago (no worker picks up its pipeline version);
--   queued_too_long     a step queued for more than queued_for (no capacity, a full concurrency group, or no worker
--                       for its pipeline version).
-- Each reads its live rows through a partial index (steps_waiting_deadline_idx, attempts_running_lease_idx,
-- steps_live_idx).
create function ballast.report_stuck(
  p_queued_for interval default '00:05:00'::interval,
  p_overdue_by interval default '00:01:00'::interval
) returns table(kind text, job_id bigint, step_id bigint, attempt_id bigint, tenant_id text, pipeline text, pipeline_version integer, step_name text, since timestamp with time zone, overdue interval, detail text)
language sql stable
as $fn$
  with n as materialized (select ballast.now() as now)
  select * from (
    select 'wait_past_deadline'::text as kind, s.job_id, s.id, null::bigint, j.tenant_id, j.pipeline,
           j.pipeline_version, s.name, s.wait_deadline as since, (select now from n) - s.wait_deadline,
           format('waiting for event %L; its deadline passed and no reaper acted on it (is a worker running?)', s.wait_key)
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'waiting' and s.wait_deadline < (select now from n) - p_overdue_by
    union all
    select 'lease_expired', a.job_id, a.step_id, a.id, j.tenant_id, j.pipeline, j.pipeline_version, s.name,
           a.lease_expires_at, (select now from n) - a.lease_expires_at,
           format('attempt %s on worker %s: lease expired and not reclaimed (is a worker running its reaper?)',
                  a.number, coalesce(a.worker_id, '(gone)'))
      from ballast_private.attempts a
      join ballast_private.steps s on s.id = a.step_id
      join ballast_private.jobs j on j.id = a.job_id
     where a.outcome = 'running' and a.lease_expires_at < (select now from n) - p_overdue_by
    union all
    select 'retry_overdue', s.job_id, s.id, null, j.tenant_id, j.pipeline, j.pipeline_version, s.name, s.next_run_at,
           (select now from n) - s.next_run_at,
           format('retry due since %s and not picked up (is a worker running %s@%s?); last error: %s',
                  s.next_run_at, j.pipeline, j.pipeline_version, coalesce(s.error ->> 'message', '-'))
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'retrying' and s.next_run_at < (select now from n) - p_overdue_by
    union all
    select 'queued_too_long', s.job_id, s.id, null, j.tenant_id, j.pipeline, j.pipeline_version, s.name, s.queued_at,
           (select now from n) - s.queued_at,
           case when s.concurrency_key is not null
                then format('queued; concurrency group %s allows %s at once', s.concurrency_key, s.concurrency_limit)
                else format('queued and not picked up (are workers for %s@%s running and free?)', j.pipeline, j.pipeline_version) end
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'queued' and s.queued_at < (select now from n) - p_queued_for) w
  order by w.since, w.kind
$fn$;
grant execute on function ballast.report_stuck(interval,interval) to ballast_client, ballast_operator, ballast_reporter;

-- The stuck work with the default thresholds (queued for 5 minutes, overdue by a minute).
create view ballast.stuck_work with (security_invoker = true) as
select * from ballast.report_stuck();
grant select on ballast.stuck_work to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.stuck_work is 'Work that is not moving, with the default thresholds: steps queued for 5 minutes; leases, retries and wait deadlines overdue by a minute.';
create trigger refuse_write instead of insert or update or delete on ballast.stuck_work
  for each row execute function ballast_private.refuse_view_write();

-- prune_history(older_than, batch) -> (jobs_pruned, steps_pruned, attempts_pruned, effects_pruned,
--                                      model_calls_pruned, bytes_freed_estimate, jobs_busy, more)
-- One batch of retention: up to `batch` jobs that finished before ballast.now() - older_than and are not pruned yet,
-- oldest first. For each: jobs.input becomes {"pruned": true} (the column is NOT NULL) and jobs.result null; steps'
-- output, progress and item null and review keeps the decision without the proposal ('proposed', 'detail');
-- effects' result null; attempts' contract_detail null (outcome, model, prompt, fallback and score stay in their
-- columns); model calls' raw_output and validation_issues null. Statuses, timings, errors, tokens, costs, scores and
-- the events (append-only) stay, so every report gives the same numbers before and after. jobs.pruned_at is set.
-- Returns the rows changed per table, bytes_freed_estimate (the stored size of what was cleared, pg_column_size:
-- compressed size; VACUUM makes the space reusable, the files do not shrink), jobs_busy (jobs left for the next round
-- because a step of theirs was locked) and more (the batch was full: call again).
-- Locks: the job rows first, then their steps, both FOR NO KEY UPDATE SKIP LOCKED (no key: inserting an event takes
-- a key-share lock on its job, which this must not block): it never waits for a row another transaction holds, so
-- it cannot deadlock with the verbs that lock steps before their job (0006_execution). The attempts, effects and model
-- calls of a locked step are written only by functions that lock the step first, so they are free. lock_timeout bounds
-- any wait that reasoning missed. Raises BA002 for an older_than that is not positive or a batch outside 1..100000.
create function ballast.prune_history(
  p_older_than interval,
  p_batch integer default 1000
) returns table(jobs_pruned integer, steps_pruned integer, attempts_pruned integer, effects_pruned integer, model_calls_pruned integer, bytes_freed_estimate bigint, jobs_busy integer, more boolean)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp set lock_timeout = '5s'
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_jobs bigint[];
  v_steps bigint[];
  v_busy bigint[];
  v_more boolean;
  v_n_jobs int := 0; v_n_steps int := 0; v_n_attempts int := 0; v_n_effects int := 0; v_n_calls int := 0;
  v_bytes bigint := 0;
  v_b bigint;
begin
  if p_older_than is null or p_older_than <= interval '0' then
    perform ballast_private.bad_argument('older_than', format('%s is not a positive interval', coalesce(p_older_than::text, 'null')),
      'Pass how long finished jobs keep their payloads, e.g. ''30 days''.');
  end if;
  if p_batch is null or p_batch not between 1 and 100000 then
    perform ballast_private.bad_argument('batch', format('%s is not between 1 and 100000', coalesce(p_batch::text, 'null')),
      'Pass the number of jobs per batch, e.g. 1000.');
  end if;

  -- Oldest first through jobs_prunable_idx; a job row locked by someone (a replay or cancel about to change it) is
  -- skipped and found again next time.
  select coalesce(array_agg(c.id), '{}') into v_jobs
    from (select j.id from ballast_private.jobs j
           where j.pruned_at is null and j.finished_at < v_now - p_older_than
           order by j.finished_at
           limit p_batch
             for no key update skip locked) c;
  v_more := cardinality(v_jobs) = p_batch;
  if cardinality(v_jobs) = 0 then
    return query select 0, 0, 0, 0, 0, 0::bigint, 0, false;
    return;
  end if;

  select coalesce(array_agg(s.id), '{}') into v_steps
    from (select s.id from ballast_private.steps s where s.job_id = any(v_jobs)
             for no key update skip locked) s;
  -- A job with a step we could not lock is busy (someone is replaying or inspecting it for update): all of it waits.
  select coalesce(array_agg(distinct s.job_id), '{}') into v_busy
    from ballast_private.steps s where s.job_id = any(v_jobs) and not s.id = any(v_steps);
  if cardinality(v_busy) > 0 then
    v_jobs := array(select x from unnest(v_jobs) x where not x = any(v_busy));
    v_steps := array(select s.id from ballast_private.steps s where s.id = any(v_steps) and not s.job_id = any(v_busy));
  end if;

  with old as (
    select s.id, coalesce(pg_column_size(s.output), 0) + coalesce(pg_column_size(s.progress), 0)
                 + coalesce(pg_column_size(s.item), 0) + coalesce(pg_column_size(s.review), 0) as size
      from ballast_private.steps s
     where s.id = any(v_steps)
       and (s.output is not null or s.progress is not null or s.item is not null or s.review ? 'proposed' or s.review ? 'detail')),
  u as (
    update ballast_private.steps s
       set output = null, progress = null, item = null, review = s.review - 'proposed' - 'detail'
      from old where s.id = old.id
    returning old.size - coalesce(pg_column_size(s.review), 0) as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_steps, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select e.step_id, e.key, pg_column_size(e.result) as size
      from ballast_private.effects e where e.step_id = any(v_steps) and e.result is not null),
  u as (
    update ballast_private.effects e set result = null
      from old where (e.step_id, e.key) = (old.step_id, old.key)
    returning old.size as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_effects, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select a.id, pg_column_size(a.contract_detail) as size
      from ballast_private.attempts a where a.step_id = any(v_steps) and a.contract_detail is not null),
  u as (
    update ballast_private.attempts a set contract_detail = null
      from old where a.id = old.id
    returning old.size as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_attempts, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select c.id, coalesce(pg_column_size(c.raw_output), 0) + coalesce(pg_column_size(c.validation_issues), 0) as size
      from ballast_private.model_calls c
     where c.job_id = any(v_jobs) and (c.raw_output is not null or c.validation_issues is not null)),
  u as (
    update ballast_private.model_calls c set raw_output = null, validation_issues = null
      from old where c.id = old.id
    returning old.size as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_calls, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select j.id, pg_column_size(j.input) + coalesce(pg_column_size(j.result), 0) as size
      from ballast_private.jobs j where j.id = any(v_jobs)),
  u as (
    update ballast_private.jobs j set input = '{"pruned": true}'::jsonb, result = null, pruned_at = v_now
      from old where j.id = old.id
    returning old.size - pg_column_size(j.input) as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_jobs, v_b from u;
  v_bytes := v_bytes + v_b;

  return query select v_n_jobs, v_n_steps, v_n_attempts, v_n_effects, v_n_calls, v_bytes, cardinality(v_busy), v_more;
end
$fn$;
grant execute on function ballast.prune_history(interval,integer) to ballast_operator;

-- ballast.oldest_transactions: every session of this database with an open transaction or a snapshot (backend_xmin),
-- oldest first: who (pid, role, application, client address), what state (active, idle in transaction, ...), since
-- when (xact_start) and for how long, how many transactions old its snapshot is (xmin_age: vacuum cannot clean
-- anything newer than it), and the start of its current or last statement. Read with the owner's rights, so an
-- operator sees every session, as pg_stat_activity shows it to a superuser.
create view ballast.oldest_transactions as
select a.pid, a.usename as role, a.application_name, a.client_addr, a.state, a.xact_start,
       date_trunc('second', ballast.now() - a.xact_start) as open_for,
       age(a.backend_xmin) as xmin_age,
       a.wait_event_type, a.wait_event,
       left(a.query, 200) as query
  from pg_stat_activity a
 where a.datname = current_database()
   and (a.xact_start is not null or a.backend_xmin is not null)
   and a.pid <> pg_backend_pid()
 order by a.xact_start nulls last;
grant select on ballast.oldest_transactions to ballast_operator, ballast_reporter;
comment on view ballast.oldest_transactions is 'Open transactions of this database, oldest first: a long one holds vacuum back and slows the queue (see README, Guarantees).';
