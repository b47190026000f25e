-- Up Migration
--
-- 0012: operating ballast from psql (issue 7): reports, and retention of a large history.
--
-- Map.
--   Reports over a window of history: set-returning functions with the window as a parameter, one row per period:
--     ballast.report_pipelines(since, period)  per pipeline version: jobs by outcome, success, retry, fallback,
--                                              first-pass, degraded and review rates, queue wait, run time and job
--                                              duration p50/p95, cost and tokens.
--     ballast.report_steps(since, period)      the same per step name (items of a map step under its name).
--     ballast.report_models(since, period)     per provider and model: calls, errors by class, latency p50/p95,
--                                              tokens, cost.
--     ballast.report_quality(since, period)    quality score by prompt version and model per day (drift).
--   Reports of the present state: views, cheap because they read only live rows through partial indexes:
--     ballast.queue_depth                      per pipeline: queued, retrying (due or later), running, waiting,
--                                              in review, and the oldest runnable step's wait.
--     ballast.stuck_work / ballast.report_stuck(queued_for, overdue_by)
--                                              waits past their deadline, expired leases, overdue retries, steps
--                                              queued too long: what a missing reaper or worker leaves behind.
--     ballast.dead_letters (0006, extended)    with the last attempt, every attempt's error, and pruned_at.
--   Verbs: ballast.replay_dead_letters(...)   replays the dead letters matching a filter, in one transaction;
--          ballast.prune_history(older_than, batch)
--                                              retention: clears the payloads of jobs finished long ago, in batches.
--
-- Why functions with a window rather than views over all history: a view cannot take the window, so a reader who
-- forgets a where clause aggregates the whole history, and a fixed "last N days" view is the wrong N for someone. A
-- function always has a window (default 24 hours). It selects the jobs submitted in it through jobs_created_idx
-- (below) and reaches their steps and attempts one job (step) at a time through the (job_id, name) and
-- (step_id, number) unique indexes, so its cost follows the window, not the history. Measured on Postgres 15, 2
-- cores, 200,000 jobs of 3 steps (600,000 steps, 600,000 attempts) over 20 days: report_pipelines('1 hour') 7 ms,
-- ('24 hours', 10,000 jobs) 200 ms, ('7 days') 2 s; 600,000 older jobs more left the day at 200 ms. Windows are
-- cohorts: a job and all its steps, attempts and costs count in the period the job was submitted in (UTC), so the
-- rows of a period add up, and recent periods show their unfinished jobs. Model reports count calls by the time each
-- call started (index model_calls_started, 0009).
-- Row-level security applies (the functions and views are security invoker): a client reads its own tenant's
-- numbers, operators and reporters everyone's.
--
-- Retention. ballast.prune_history clears what a finished job no longer needs and keeps what reports and the audit
-- trail need: inputs, results, step outputs, progress, map items, review proposals, effect results, raw model
-- outputs and validation issues go; statuses, timings, attempts, errors, tokens, costs, scores and every event stay
-- (events are append-only and untouched). A pruned job is marked (jobs.pruned_at) and can no longer run again: its
-- upstream outputs are gone, so a replay of it is refused (BA001). Each call prunes one batch, never waits for a lock
-- (SKIP LOCKED; a job with a step locked by someone else is left for the next round) and says whether more remain;
-- src/retention.ts loops over batches with a pause (BALLAST_RETENTION).

-- 1. Columns and indexes ------------------------------------------------------------------------------------------

-- When retention cleared the job's payloads (null: never).
alter table ballast_private.jobs add column pruned_at timestamptz;

-- The reports select the jobs submitted in a window, across pipelines and tenants: jobs_pipeline_created_idx and
-- jobs_tenant_created_idx lead with another column, so a range on created_at alone could only scan one of them
-- whole (Postgres 15 has no skip scan): on 800,000 jobs of one pipeline, report_pipelines('1 hour') took 21 ms
-- that way and 7 ms with this index; with many pipelines or tenants the difference grows with the history.
create index jobs_created_idx on ballast_private.jobs (created_at);

-- The jobs retention may prune: finished and not pruned yet. Partial, so it holds only the finished jobs younger than
-- the retention period plus the backlog; prune_history reads it oldest first and stops after one batch.
create index jobs_prunable_idx on ballast_private.jobs (finished_at) where pruned_at is null and finished_at is not null;

-- pruned_job_guard: BEFORE UPDATE OF status on jobs when the job was pruned. A replay of a pruned job would run steps
-- whose inputs and upstream outputs are gone; it is refused with BA001 (the replay's whole transaction rolls back).
create function ballast_private.pruned_job_guard() returns trigger
language plpgsql
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

-- The public job view shows pruned_at (the columns of 0009, then this one).
create or replace view ballast.jobs with (security_invoker = true) as
select id, tenant_id, pipeline, pipeline_version, idempotency_key, input, status, priority, result, error,
       created_at, started_at, finished_at, updated_at, input_tokens, output_tokens, cost_usd, pruned_at
  from ballast_private.jobs;

-- 2. Windows -----------------------------------------------------------------------------------------------------

-- report_window(since, period) -> the start of the window: ballast.now() - since.
-- Raises BA002 for a window that is null, zero or negative, and for a period other than minute, hour, day, week or
-- month. Each report calls it once, before its query, and bounds its scan by the result: ballast.now() itself is
-- volatile, and a volatile expression cannot bound an index scan.
create function ballast_private.report_window(p_since interval, p_period text) returns timestamptz
language plpgsql
stable
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

-- report_period(period, at) -> the start of the UTC period holding `at`.
create function ballast_private.report_period(p_period text, p_at timestamptz) returns timestamptz
language sql
immutable
parallel safe
as $fn$
  select date_trunc(p_period, p_at at time zone 'UTC') at time zone 'UTC'
$fn$;

-- 3. Pipelines and steps -----------------------------------------------------------------------------------------
--
-- Definitions shared by report_pipelines and report_steps:
--   success_rate     completed / (completed + partially completed + failed) jobs; succeeded / (succeeded + failed)
--                    steps. Cancelled work is an operator's decision, not an outcome, and is left out.
--   retry_rate       jobs (steps) in which an attempt that failed, crashed or timed out was followed by another
--                    attempt of the same step (a retry, or a replay), among the jobs (steps) that ran at all.
--   model rates      among attempts of model steps (contract_outcome set): first_pass_rate (valid_first_try),
--                    fallback_rate (fallback_used), degraded_rate (degraded), review_rate (review).
--   queue wait       from the moment a step could run to the start of its first attempt: the step's queued_at when
--                    it ran once, its created_at for a step without dependencies or an item of a map step (both are
--                    runnable from creation). A dependant that ran more than once has lost that moment (queued_at is
--                    overwritten by each retry or resume) and is left out.
--   run time         finished_at - started_at of attempts that ran their course (succeeded, failed, timed_out,
--                    needs_review); crashed, released, parked and cancelled attempts say nothing about run time.
--   duration         job finished_at - created_at, of jobs that completed, partially completed or failed.
--   cost, tokens     the totals of the jobs (steps): every provider call, including those of failed attempts.

-- How both read the history: the window's jobs by jobs_created_idx, then each job's steps and each step's attempts
-- through a lateral subquery with `offset 0`, which keeps the planner from turning the lookups into hash joins over
-- the whole steps and attempts tables. It made that choice at 200,000 jobs (random_page_cost 4 prices 30,000 index
-- probes above two sequential scans): 900 ms for a day instead of 200 ms, and growing with the history. `jit = off`:
-- the estimated cost of those probes passes jit_above_cost, and compiling took 70 ms of a 200 ms report.

-- report_pipelines(since, period) -> one row per period (UTC), pipeline and version, for the jobs submitted since
-- ballast.now() - since; oldest period first. See the definitions above. Raises BA002 for a bad window or period.
create function ballast.report_pipelines(p_since interval default '24 hours', p_period text default 'hour')
returns table (
  period_start timestamptz, pipeline text, pipeline_version integer,
  jobs bigint, completed bigint, partially_completed bigint, failed bigint, cancelled bigint, unfinished bigint,
  pruned bigint, success_rate numeric, retry_rate numeric,
  model_attempts bigint, first_pass_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric,
  queue_wait_p50_ms numeric, queue_wait_p95_ms numeric, run_p50_ms numeric, run_p95_ms numeric,
  duration_p50_ms numeric, duration_p95_ms numeric,
  cost_usd numeric, input_tokens bigint, output_tokens bigint)
language plpgsql
stable
set jit = off
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

-- report_steps(since, period) -> one row per period (UTC), pipeline, version and step name, for the jobs submitted
-- since ballast.now() - since. The items of a map step count under the map step's name with is_item = true (the map
-- step itself has its own row). See the definitions above report_pipelines. Raises BA002 for a bad window or period.
create function ballast.report_steps(p_since interval default '24 hours', p_period text default 'hour')
returns table (
  period_start timestamptz, pipeline text, pipeline_version integer, step_name text, is_item boolean,
  steps bigint, succeeded bigint, failed bigint, skipped bigint, cancelled bigint, unfinished bigint,
  success_rate numeric, retry_rate numeric, attempts bigint,
  model_attempts bigint, first_pass_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric,
  queue_wait_p50_ms numeric, queue_wait_p95_ms numeric, run_p50_ms numeric, run_p95_ms numeric,
  cost_usd numeric, input_tokens bigint, output_tokens bigint)
language plpgsql
stable
set jit = off
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

-- 4. Models ------------------------------------------------------------------------------------------------------

-- report_models(since, period) -> one row per period (UTC), provider and requested model, for the calls started
-- since ballast.now() - since (index model_calls_started, 0009):
--   calls            calls made (not counting the ones a cooldown or an exhausted budget stopped: not_made);
--   errors           calls made that failed (any error class, content failures included), and error_rate;
--   errors_by_class  {"class": count} of every failed or stopped call, e.g. {"schema": 3, "transport": 1, "budget": 2};
--   latency          p50/p95 of latency_ms of the calls made; tokens and cost summed; unpriced: calls made without a
--                    known price (cost null).
-- Raises BA002 for a bad window or period.
create function ballast.report_models(p_since interval default '24 hours', p_period text default 'hour')
returns table (
  period_start timestamptz, provider text, model text, calls bigint, errors bigint, error_rate numeric,
  errors_by_class jsonb, not_made bigint, latency_p50_ms numeric, latency_p95_ms numeric,
  input_tokens bigint, output_tokens bigint, cached_input_tokens bigint, cost_usd numeric, unpriced bigint)
language plpgsql
stable
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

-- report_quality(since, period) -> one row per period (UTC, default a day), prompt name and version, provider and
-- requested model: the quality scores of the calls started since ballast.now() - since (calls whose output was
-- scored by the step's quality check): count, average, minimum, maximum, and how many scored below the threshold
-- (error class quality). A falling average for one prompt version and model is drift. Raises BA002 for a bad
-- window or period.
create function ballast.report_quality(p_since interval default '30 days', p_period text default 'day')
returns table (
  period_start timestamptz, prompt_name text, prompt_version integer, provider text, model text,
  scored_calls bigint, avg_score numeric, min_score numeric, max_score numeric, below_threshold bigint)
language plpgsql
stable
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

-- 5. The present: queue, stuck work, dead letters -----------------------------------------------------------------

-- Per pipeline, the live steps by status (pending steps, waiting for their dependencies, are not in the queue), and
-- the oldest runnable one: queued since queued_at, or retrying and due since next_run_at. Reads only live steps
-- through steps_live_idx (0001), so its cost follows the queue, not the history.
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

-- report_stuck(queued_for, overdue_by) -> work that should have moved and has not, oldest first:
--   wait_past_deadline  a step waiting for an event past its deadline by more than overdue_by (the reaper fails or
--                       retries it within a second: no worker is running its reaper);
--   lease_expired       a running attempt whose lease expired more than overdue_by ago (the reaper reclaims it);
--   retry_overdue       a retrying step due more than overdue_by ago (no worker picks up its pipeline version);
--   queued_too_long     a step queued for more than queued_for (no capacity, a full concurrency group, or no worker
--                       for its pipeline version).
-- Each reads its live rows through a partial index (steps_waiting_deadline_idx, attempts_running_lease_idx,
-- steps_live_idx).
create function ballast.report_stuck(p_queued_for interval default '5 minutes', p_overdue_by interval default '1 minute')
returns table (
  kind text, job_id bigint, step_id bigint, attempt_id bigint, tenant_id text, pipeline text, pipeline_version integer,
  step_name text, since timestamptz, overdue interval, detail text)
language sql
stable
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

-- The stuck work with the default thresholds (queued for 5 minutes, overdue by a minute).
create view ballast.stuck_work with (security_invoker = true) as
select * from ballast.report_stuck();

-- dead_letters (0006) again, with what an operator asks next: the job's status and whether it was pruned, whether
-- the error was retryable, the last attempt (id, outcome, worker, when), every attempt's outcome and error in order,
-- and whether the step is a map step (replayed through its failed items, which are dead letters of their own).
create or replace view ballast.dead_letters with (security_invoker = true) as
select s.id as step_id, s.job_id, j.tenant_id, j.pipeline, j.pipeline_version, s.name as step_name, s.attempts,
       s.max_attempts, s.error ->> 'class' as error_class, s.error ->> 'code' as error_code,
       s.error ->> 'message' as error_message, s.finished_at as failed_at,
       (s.error ->> 'retryable')::boolean as error_retryable, j.status as job_status, j.pruned_at,
       last.id as last_attempt_id, last.outcome as last_attempt_outcome, last.worker_id as last_worker_id,
       last.started_at as last_attempt_started_at, last.finished_at as last_attempt_finished_at,
       (select jsonb_agg(jsonb_build_object('number', a.number, 'outcome', a.outcome, 'error_class', a.error_class,
                                            'error_message', a.error_message, 'started_at', a.started_at,
                                            'finished_at', a.finished_at) order by a.number)
          from ballast_private.attempts a where a.step_id = s.id) as attempt_errors,
       exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id) as is_map_step
  from ballast_private.steps s
  join ballast_private.jobs j on j.id = s.job_id
  left join lateral (select a.id, a.outcome, a.worker_id, a.started_at, a.finished_at
                       from ballast_private.attempts a where a.step_id = s.id
                      order by a.number desc limit 1) last on true
 where s.status = 'failed';

-- replay_dead_letters(reason, pipeline, error_class, since, step_name, limit, dry_run, actor)
--   -> one row per dead letter matched: (step_id, job_id, pipeline, step_name, error_class, failed_at, replayed,
--      replayed_step_ids, job_status)
-- Replays the failed steps (ballast.dead_letters) that match every filter given (null: any): pipeline, error class,
-- step name, failed within `since` (default 7 days); oldest failure first, at most `limit` (default 100). Each one
-- goes through ballast.replay_step with the reason and actor (so each is audited as a step_replayed event); all of
-- them in the caller's transaction: one that cannot be replayed (BA011: something of its job is running) undoes
-- them all. Left out: map steps (their failed items are dead letters of their own and are replayed instead) and
-- jobs whose history was pruned. dry_run => true lists the matches and replays nothing (replayed = false).
-- Raises BA002 without a reason or with a limit outside 1..10000.
create function ballast.replay_dead_letters(
  p_reason text, p_pipeline text default null, p_error_class text default null, p_since interval default '7 days',
  p_step_name text default null, p_limit integer default 100, p_dry_run boolean default false,
  p_actor text default null
) returns table (step_id bigint, job_id bigint, pipeline text, step_name text, error_class text,
                 failed_at timestamptz, replayed boolean, replayed_step_ids bigint[], job_status text)
language plpgsql
as $fn$
declare
  v_from timestamptz;
  v_dead record;
  v_replay record;
begin
  if coalesce(p_reason, '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty',
      'Say why these steps run again (e.g. ''provider outage over''); it is kept in the audit trail.');
  end if;
  if p_limit is null or p_limit not between 1 and 10000 then
    perform ballast_private.bad_argument('limit', format('%s is not between 1 and 10000', coalesce(p_limit::text, 'null')),
      'Replay in batches of at most 10000.');
  end if;
  v_from := ballast_private.report_window(coalesce(p_since, interval '7 days'), 'day');
  for v_dead in
    select d.step_id, d.job_id, d.pipeline, d.step_name, d.error_class, d.failed_at
      from ballast.dead_letters d
     where d.failed_at >= v_from and d.pruned_at is null and not d.is_map_step
       and (p_pipeline is null or d.pipeline = p_pipeline)
       and (p_error_class is null or d.error_class = p_error_class)
       and (p_step_name is null or d.step_name = p_step_name)
     order by d.failed_at, d.step_id
     limit p_limit
  loop
    if p_dry_run then
      return query select v_dead.step_id, v_dead.job_id, v_dead.pipeline, v_dead.step_name, v_dead.error_class,
                          v_dead.failed_at, false, '{}'::bigint[],
                          (select j.status from ballast_private.jobs j where j.id = v_dead.job_id);
      continue;
    end if;
    -- An earlier replay in this loop may have reset this step already (a dependant of the step it replayed).
    continue when (select s.status from ballast_private.steps s where s.id = v_dead.step_id) <> 'failed';
    select * into v_replay from ballast.replay_step(v_dead.step_id, p_reason, false, p_actor);
    return query select v_dead.step_id, v_dead.job_id, v_dead.pipeline, v_dead.step_name, v_dead.error_class,
                        v_dead.failed_at, true, v_replay.replayed_step_ids, v_replay.job_status;
  end loop;
end
$fn$;

-- 6. Retention ---------------------------------------------------------------------------------------------------

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
-- it cannot deadlock with the verbs that lock steps before their job (0005). The attempts, effects and model calls
-- of a locked step are written only by functions that lock the step first, so they are free. lock_timeout bounds any
-- wait that reasoning missed. Raises BA002 for an older_than that is not positive or a batch outside 1..100000.
create function ballast.prune_history(p_older_than interval, p_batch integer default 1000)
returns table (jobs_pruned integer, steps_pruned integer, attempts_pruned integer, effects_pruned integer,
               model_calls_pruned integer, bytes_freed_estimate bigint, jobs_busy integer, more boolean)
language plpgsql
security definer
set search_path = pg_catalog, pg_temp
set lock_timeout = '5s'
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

-- 7. Privileges --------------------------------------------------------------------------------------------------
-- The reports read the private tables as their caller (security invoker), so row-level security (0010) limits a
-- client to its own tenant: clients may read them too. Replaying dead letters and pruning are operator verbs.

create trigger refuse_write instead of insert or update or delete on ballast.queue_depth
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.stuck_work
  for each row execute function ballast_private.refuse_view_write();

-- Nothing for PUBLIC (0010's default privileges already see to that for functions created by the migrating user;
-- repeated here in case another user created some).
revoke execute on all functions in schema ballast, ballast_private from public;
-- bad_argument only raises BA002: a reader's bad window gets that error, not "permission denied".
grant execute on function ballast_private.bad_argument(text, text, text), ballast_private.report_window(interval, text),
  ballast_private.report_period(text, timestamptz),
  ballast.report_pipelines(interval, text), ballast.report_steps(interval, text),
  ballast.report_models(interval, text), ballast.report_quality(interval, text),
  ballast.report_stuck(interval, interval)
  to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast.queue_depth, ballast.stuck_work to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.replay_dead_letters(text, text, text, interval, text, integer, boolean, text),
  ballast.prune_history(interval, integer)
  to ballast_operator;
