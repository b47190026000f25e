-- Up Migration
--
-- Baseline, file 10 of 11: the public read surface, and INSERT INTO ballast.jobs for other systems.
--
-- Views in schema ballast over the private tables. They are what psql users, reports and GraphQL read; the tables
-- behind them may change shape without breaking those readers. security_invoker: row-level security on the tables
-- (tenants) applies to whoever reads the view. Their comments are the descriptions the GraphQL API shows.
--
-- ballast.jobs also accepts INSERT: a system that can only write rows does
--   insert into ballast.jobs (pipeline, input, idempotency_key) values ('demo.wordstats', '{"text": "hi"}', 'k-1')
-- and gets exactly what ballast.submit_job does (validation, idempotency, steps), a multi-row INSERT with one INSERT
-- per table; RETURNING shows the job, the existing one when the key was used before with the same request. UPDATE
-- and DELETE through the views are refused (BA009): status changes go through the functions.
-- Folded from the old 0006, 0008, 0009, 0010, 0012, 0017, 0023, 0029 and 0030.

-- refuse_view_write(): INSTEAD OF UPDATE/DELETE on the views.
create function ballast_private.refuse_view_write() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA009',
    message = format('ballast.%s is read-only: %s is not allowed', tg_table_name, lower(tg_op)),
    hint = 'Change state through the ballast functions (submit_job, claim_step, complete_step, fail_step, ...).';
end
$fn$;

create view ballast.pipelines with (security_invoker = true) as
select name, version, definition, input_schema, definition_hash, registered_at
  from ballast_private.pipelines;
grant select on ballast.pipelines to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.pipelines is 'The registered pipelines, one row per version (workers register theirs when they start). Submit a job with its name.';
comment on column ballast.pipelines.name is 'The pipeline name, e.g. demo.wordstats (what submitJob takes).';
comment on column ballast.pipelines.version is 'Its version, from 1 (a new version is registered when the steps or contracts change).';
comment on column ballast.pipelines.definition is 'Its steps: name, dependencies, retries, timeout, concurrency, contracts; and its limits (e.g. max_input_bytes).';
comment on column ballast.pipelines.input_schema is 'The JSON Schema every job input must satisfy (checked in Postgres at submission).';
comment on column ballast.pipelines.definition_hash is 'The SHA-256 of the definition (hex): registering the same version with another definition is refused.';
comment on column ballast.pipelines.registered_at is 'When this version was first registered.';
create trigger refuse_write instead of insert or update or delete on ballast.pipelines
  for each row execute function ballast_private.refuse_view_write();

-- insert_job(): INSTEAD OF INSERT on ballast.jobs, per row (see the header).
create function ballast_private.insert_job() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
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

-- The public job view shows pruned_at (the columns of 0009_model_steps_and_budgets, then this one).
create view ballast.jobs with (security_invoker = true) as
select id, tenant_id, pipeline, pipeline_version, idempotency_key, input, status, priority, result, error,
       created_at, started_at, finished_at, updated_at, input_tokens, output_tokens, cost_usd, pruned_at
  from ballast_private.jobs;
grant insert, select on ballast.jobs to ballast_client, ballast_operator;
grant select on ballast.jobs to ballast_reporter;
comment on view ballast.jobs is 'A job: one run of a pipeline on one input, made of steps. Clients see the jobs of their own tenant; operators and reporters see every tenant.';
comment on column ballast.jobs.id is 'The job id (a BigInt, sent as a string in GraphQL: "42").';
comment on column ballast.jobs.tenant_id is 'The tenant the job belongs to (1 to 200 bytes; "default" when none was named).';
comment on column ballast.jobs.pipeline is 'The pipeline it runs, e.g. demo.wordstats.';
comment on column ballast.jobs.pipeline_version is 'The version of the pipeline it runs (fixed at submission: the newest then, or the one asked for).';
comment on column ballast.jobs.idempotency_key is 'The key it was submitted with (1 to 500 bytes, unique per tenant): submitting again with it returns this job. Null: submitted without a key.';
comment on column ballast.jobs.input is 'The job input, as submitted (checked against the input contract of the pipeline). JSON null after retention pruned the job (see prunedAt).';
comment on column ballast.jobs.status is 'queued (no step has run yet), running, waiting (for an event), retrying (a step waits for its next attempt), needs_review (a step waits for a person), then one of the final statuses: completed, partially_completed (only items of a map step that allows it failed), failed or cancelled. Derived from the statuses of its steps.';
comment on column ballast.jobs.priority is 'From -1000 to 1000; lower runs first. 0 unless given at submission.';
comment on column ballast.jobs.result is 'The output of its final step (with several final steps, an object of their outputs by step name). Null until the job completes, and after retention pruned it.';
comment on column ballast.jobs.error is 'Why the job failed: the error of the failed step (class, code, message, retryable) with the step name and id. Null unless the job failed.';
comment on column ballast.jobs.created_at is 'When it was submitted.';
comment on column ballast.jobs.started_at is 'When its first step started running. Null: nothing has run yet.';
comment on column ballast.jobs.finished_at is 'When it reached a final status (completed, partially_completed, failed, cancelled). Null while it is not finished.';
comment on column ballast.jobs.updated_at is 'When its status or counters last changed.';
comment on column ballast.jobs.input_tokens is 'Model input tokens used by all its steps, summed over every model call. Null: no model call was made.';
comment on column ballast.jobs.output_tokens is 'Model output tokens used by all its steps, summed over every model call. Null: no model call was made.';
comment on column ballast.jobs.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.jobs.pruned_at is 'When retention cleared its payloads (input, result, step outputs; statuses, errors and costs stay). A pruned job cannot be replayed. Null: not pruned.';
create trigger insert_job
  instead of insert on ballast.jobs
  for each row execute function ballast_private.insert_job();
create trigger refuse_write instead of update or delete on ballast.jobs
  for each row execute function ballast_private.refuse_view_write();
create trigger insert_jobs_flush
  after insert on ballast.jobs
  for each statement execute function ballast_private.insert_jobs_flush();

create view ballast.steps with (security_invoker = true) as
select id, job_id, name, status, depends_on, attempts, max_attempts, output, error, progress, next_run_at,
       concurrency_key, concurrency_limit, timeout_ms, created_at, queued_at, started_at, finished_at, updated_at,
       attempt_offset, wait_key, wait_deadline, wait_on_timeout, input_tokens, output_tokens, cost_usd, review
  from ballast_private.steps;
grant select on ballast.steps to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.steps is 'A step of a job: one unit of work of the pipeline (or one item of a map step), run and retried on its own.';
comment on column ballast.steps.id is 'The step id (a BigInt).';
comment on column ballast.steps.job_id is 'The job it belongs to.';
comment on column ballast.steps.name is 'Its name in the pipeline, e.g. count (unique within the job).';
comment on column ballast.steps.status is 'pending (waits for the steps it depends on), queued, running, retrying (waits for its next attempt, at nextRunAt), waiting (for an event, see waitKey), needs_review (waits for a person), then one of the final statuses: succeeded, failed, cancelled or skipped (a step it depends on failed).';
comment on column ballast.steps.depends_on is 'The names of the steps that must succeed before it runs (empty: it runs first).';
comment on column ballast.steps.attempts is 'How many times a worker has started it, every start counted (also those that do not count against maxAttempts, see attemptOffset).';
comment on column ballast.steps.max_attempts is 'How many attempts it may use before it fails for good (1 to 1000).';
comment on column ballast.steps.output is 'What it returned, checked against its output contract. Null until it succeeds, and after retention pruned the job.';
comment on column ballast.steps.error is 'Its last error: class, code, message and retryable (true when another attempt may succeed). Null when its last attempt did not fail.';
comment on column ballast.steps.progress is 'The latest progress value the running step reported (any JSON). Null: none reported.';
comment on column ballast.steps.next_run_at is 'When a retrying step is due to run again. Null unless it is retrying.';
comment on column ballast.steps.concurrency_key is 'Its concurrency group: at most concurrencyLimit steps with the same key run at once. Null: no limit.';
comment on column ballast.steps.concurrency_limit is 'At most this many steps of its concurrency group run at once. Null: no limit.';
comment on column ballast.steps.timeout_ms is 'How long one attempt may run, in milliseconds, before it is aborted as timed_out. Null: no timeout.';
comment on column ballast.steps.created_at is 'When it was created (with its job).';
comment on column ballast.steps.queued_at is 'When it last became queued (ready to run). Null: never queued yet.';
comment on column ballast.steps.started_at is 'When its latest attempt started. Null: it has not run.';
comment on column ballast.steps.finished_at is 'When it reached a final status. Null while it is not finished.';
comment on column ballast.steps.updated_at is 'When it last changed.';
comment on column ballast.steps.attempt_offset is 'Attempts that do not count against maxAttempts: given back at a worker shutdown, parked for an event or a cooldown, or made before a replay. Attempts counted: attemptCount minus this.';
comment on column ballast.steps.wait_key is 'The event key a waiting step waits for (sendEvent delivers it). Null unless it waits or has waited.';
comment on column ballast.steps.wait_deadline is 'When a waiting step stops waiting (then waitOnTimeout applies). Null: it waits without a deadline.';
comment on column ballast.steps.wait_on_timeout is 'What the wait deadline does: fail (the step fails) or retry (it runs again). Null unless it waits or has waited.';
comment on column ballast.steps.input_tokens is 'Model input tokens of all its attempts. Null: no model call was made.';
comment on column ballast.steps.output_tokens is 'Model output tokens of all its attempts. Null: no model call was made.';
comment on column ballast.steps.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.steps.review is 'The human review of a model step: reason, proposed output, detail and requested_at; once decided also decision (approve, edit or reject), reviewer and note. Null: never sent to review.';
create trigger refuse_write instead of insert or update or delete on ballast.steps
  for each row execute function ballast_private.refuse_view_write();

create view ballast.attempts with (security_invoker = true) as
select id, step_id, job_id, number, worker_id, outcome, started_at, lease_expires_at, finished_at,
       error_class, error_code, error_message, error_retryable,
       extract(epoch from (finished_at - started_at)) * 1000 as duration_ms,
       contract_outcome, contract_detail, model, prompt_ref, fallback_used, quality_score, model_calls,
       input_tokens, output_tokens, cost_usd
  from ballast_private.attempts;
grant select on ballast.attempts to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.attempts is 'One run of a step by a worker: every start of a step, with how it ended.';
comment on column ballast.attempts.id is 'The attempt id (a BigInt).';
comment on column ballast.attempts.step_id is 'The step it ran.';
comment on column ballast.attempts.job_id is 'The job of that step.';
comment on column ballast.attempts.number is 'Its number among the attempts of the step, from 1.';
comment on column ballast.attempts.worker_id is 'The worker that ran it (see ballast.workers in SQL). Null: that worker row was deleted.';
comment on column ballast.attempts.outcome is 'running, or how it ended: succeeded, failed, crashed (its worker died), timed_out, cancelled, released (given back at a worker shutdown, not counted), parked (the step waits for an event or a cooldown, not counted) or needs_review.';
comment on column ballast.attempts.started_at is 'When the worker claimed the step.';
comment on column ballast.attempts.lease_expires_at is 'Until when the worker holds the step: extended by its heartbeats; an expired lease of a running attempt makes it crashed.';
comment on column ballast.attempts.finished_at is 'When it ended. Null while it runs.';
comment on column ballast.attempts.error_class is 'The kind of error it ended with: permanent, retryable, timeout, worker_lost, blocked_worker, crashed_worker, output_contract, budget_exhausted, cooldown, a model failure class, or the class the step gave. Null when it did not fail.';
comment on column ballast.attempts.error_code is 'The code the step gave its error, if any. Null: none given, or no error.';
comment on column ballast.attempts.error_message is 'The error message. Null when it did not fail.';
comment on column ballast.attempts.error_retryable is 'True when the error allows another attempt. Null when it did not fail.';
comment on column ballast.attempts.duration_ms is 'How long it ran, in milliseconds. Null while it runs.';
comment on column ballast.attempts.contract_outcome is 'Model steps: how the answer met the output contract: valid_first_try, repaired (after a local repair or a re-ask), fell_back (a fallback model answered), degraded (the declared default), review or rejected. Null: not a model step, or not finished.';
comment on column ballast.attempts.contract_detail is 'Model steps: the details of that verdict (prompt, calls, re-asks, score, reason). Null: not a model step.';
comment on column ballast.attempts.model is 'Model steps: the model whose answer was used (provider:model). Null: not a model step, or no answer used.';
comment on column ballast.attempts.prompt_ref is 'Model steps: the prompt used, as name@version. Null: not a model step.';
comment on column ballast.attempts.fallback_used is 'Model steps: true when a fallback model gave the answer. Null: not a model step.';
comment on column ballast.attempts.quality_score is 'Model steps: the quality score of the answer, 0 to 1. Null: not scored.';
comment on column ballast.attempts.model_calls is 'How many model calls it made (each one is a modelCalls row). Null: not a model step.';
comment on column ballast.attempts.input_tokens is 'Model input tokens of its calls. Null: no model call was made.';
comment on column ballast.attempts.output_tokens is 'Model output tokens of its calls. Null: no model call was made.';
comment on column ballast.attempts.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
create trigger refuse_write instead of insert or update or delete on ballast.attempts
  for each row execute function ballast_private.refuse_view_write();

create view ballast.events with (security_invoker = true) as
select id, job_id, step_id, attempt_id, type, status, actor, reason, data, at
  from ballast_private.events;
grant select on ballast.events to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.events is 'The audit trail: one event per status change of a job or step and per operator action, never changed or deleted.';
comment on column ballast.events.id is 'The event id (a BigInt). Events are delivered in the order of the transactions that wrote them, so ids are not always increasing: resume a subscription after the last id you processed.';
comment on column ballast.events.job_id is 'The job it is about.';
comment on column ballast.events.step_id is 'The step it is about. Null: an event of the job as a whole.';
comment on column ballast.events.attempt_id is 'The attempt it is about. Null: not about one attempt.';
comment on column ballast.events.type is 'What happened: job_submitted, job_<status> (job_running, job_completed, ...), step_<status> (step_running, step_succeeded, step_retrying, ...), step_replayed, review_resolved, ...';
comment on column ballast.events.status is 'The new status of the job or step. Null: the event changed no status.';
comment on column ballast.events.actor is 'Who did it: system (ballast and its workers), reaper, watchdog or supervisor (recovery), jwt:<sub> (an API caller, from its token), reviewer:<name>, sql (a change made in psql), or the actor named in a call of a SQL function.';
comment on column ballast.events.reason is 'The reason given (e.g. to cancelJob or replayJob). Null: none given.';
comment on column ballast.events.data is 'Details of the event (e.g. the attempt number, the error, the next run time). Null: none.';
comment on column ballast.events.at is 'When it happened (the time of the transaction that wrote it).';
create trigger refuse_write instead of insert or update or delete on ballast.events
  for each row execute function ballast_private.refuse_view_write();

create view ballast.workers with (security_invoker = true) as
select id, pool_id, hostname, pid, concurrency, pipelines, started_at, heartbeat_at, stopped_at
  from ballast_private.workers;
grant select on ballast.workers to ballast_operator, ballast_reporter;
comment on view ballast.workers is 'The worker processes: host, pid, concurrency, pipelines, last heartbeat; stopped_at once they stopped.';
create trigger refuse_write instead of insert or update or delete on ballast.workers
  for each row execute function ballast_private.refuse_view_write();

create view ballast.error_codes with (security_invoker = true) as
select sqlstate, name, meaning from ballast_private.error_codes;
grant select on ballast.error_codes to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.error_codes is 'The SQLSTATEs ballast raises (class BA) with their name and meaning.';
-- These four are simple views, so without a trigger Postgres would write through them into their tables: an INSERT
-- into ballast.step_transitions would add an edge to the state machine, one into ballast.signals would store a signal
-- without resuming the steps waiting for it.
create trigger refuse_write instead of insert or update or delete on ballast.error_codes
  for each row execute function ballast_private.refuse_view_write();

create view ballast.step_transitions with (security_invoker = true) as
select from_status, to_status, why, via_replay from ballast_private.step_transitions;
grant select on ballast.step_transitions to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.step_transitions is 'The allowed changes of a step status, with why each happens; via_replay ones only through replay_step / replay_job.';
create trigger refuse_write instead of insert or update or delete on ballast.step_transitions
  for each row execute function ballast_private.refuse_view_write();

create view ballast.job_transitions with (security_invoker = true) as
select from_status, to_status, via_replay from ballast_private.job_transitions;
grant select on ballast.job_transitions to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.job_transitions is 'The allowed changes of a job status; via_replay ones only through replay_step / replay_job.';
create trigger refuse_write instead of insert or update or delete on ballast.job_transitions
  for each row execute function ballast_private.refuse_view_write();

-- Signals received by ballast.send_event, and the side-effect ledger (one row per recorded effect of a step).
create view ballast.signals with (security_invoker = true) as
select key, payload, actor, received_at, tenant_id from ballast_private.signals;
grant select on ballast.signals to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.signals is 'The events delivered by send_event, per tenant and key (a key is delivered once).';
create trigger refuse_write instead of insert or update or delete on ballast.signals
  for each row execute function ballast_private.refuse_view_write();

create view ballast.effects with (security_invoker = true) as
select e.step_id, s.job_id, e.key, e.attempt_id, e.result, e.created_at
  from ballast_private.effects e join ballast_private.steps s on s.id = e.step_id;
grant select on ballast.effects to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.effects is 'The side-effect ledger: the recorded result of every ctx.effect / ctx.transaction of a step, reused by later attempts.';
create trigger refuse_write instead of insert or update or delete on ballast.effects
  for each row execute function ballast_private.refuse_view_write();

-- dead_letters, with what an operator asks next: the job's status and whether it was pruned, whether
-- the error was retryable, the last attempt (id, outcome, worker, when), every attempt's outcome and error in order,
-- and whether the step is a map step (replayed through its failed items, which are dead letters of their own).
create view ballast.dead_letters with (security_invoker = true) as
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
grant select on ballast.dead_letters to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.dead_letters is 'The steps that failed for good (status failed), with their last attempt and every attempt error: what to fix or replay (replayStep, replayJob: operators).';
comment on column ballast.dead_letters.step_id is 'The failed step.';
comment on column ballast.dead_letters.job_id is 'Its job.';
comment on column ballast.dead_letters.tenant_id is 'The tenant of the job.';
comment on column ballast.dead_letters.pipeline is 'The pipeline of the job.';
comment on column ballast.dead_letters.pipeline_version is 'The version of that pipeline.';
comment on column ballast.dead_letters.step_name is 'The name of the step.';
comment on column ballast.dead_letters.attempts is 'How many times it was started.';
comment on column ballast.dead_letters.max_attempts is 'How many attempts it was allowed.';
comment on column ballast.dead_letters.error_class is 'The kind of its final error (e.g. permanent, timeout, blocked_worker, budget_exhausted). Null: none recorded.';
comment on column ballast.dead_letters.error_code is 'The code of its final error. Null: none given.';
comment on column ballast.dead_letters.error_message is 'The message of its final error. Null: none recorded.';
comment on column ballast.dead_letters.failed_at is 'When it failed.';
comment on column ballast.dead_letters.error_retryable is 'Whether its final error was retryable (true: it ran out of attempts; false: a permanent error). Null: not recorded.';
comment on column ballast.dead_letters.job_status is 'The status of the job now (failed, or cancelled, or running again after a replay of another step).';
comment on column ballast.dead_letters.pruned_at is 'When retention pruned the job (it can no longer be replayed). Null: not pruned.';
comment on column ballast.dead_letters.last_attempt_id is 'Its last attempt. Null: it failed without an attempt (e.g. an exhausted budget at claim).';
comment on column ballast.dead_letters.last_attempt_outcome is 'How its last attempt ended (failed, crashed, timed_out, ...). Null: no attempt.';
comment on column ballast.dead_letters.last_worker_id is 'The worker of its last attempt. Null: no attempt, or the worker row was deleted.';
comment on column ballast.dead_letters.last_attempt_started_at is 'When its last attempt started. Null: no attempt.';
comment on column ballast.dead_letters.last_attempt_finished_at is 'When its last attempt ended. Null: no attempt.';
comment on column ballast.dead_letters.attempt_errors is 'Every attempt, in order: number, outcome, error_class, error_message, started_at, finished_at. Null: no attempt.';
comment on column ballast.dead_letters.is_map_step is 'True for a map step (its items are steps of their own; a failed item can be replayed alone).';

-- Per-item outcomes of map steps.
create view ballast.step_items with (security_invoker = true) as
select c.parent_step_id as step_id, p.name as step_name, c.job_id, c.item_index, c.id as item_step_id, c.item,
       c.status, c.attempts, c.output, c.error, c.started_at, c.finished_at
  from ballast_private.steps c join ballast_private.steps p on p.id = c.parent_step_id;
grant select on ballast.step_items to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.step_items is 'The items of map steps: each item with its status, attempts, output and error.';
create trigger refuse_write instead of insert or update or delete on ballast.step_items
  for each row execute function ballast_private.refuse_view_write();

-- ballast.model_calls, with usage_missing at the end (a view keeps its columns in order).
create view ballast.model_calls with (security_invoker = true) as
select c.id, c.attempt_id, c.step_id, c.job_id, c.tenant_id, c.rung, c.model_index, c.provider, c.provider_kind,
       c.requested_model, c.returned_model, c.prompt_name, c.prompt_version, c.prompt_hash, c.parameters,
       c.started_at, c.first_token_at, c.ended_at, c.latency_ms,
       extract(epoch from (c.first_token_at - c.started_at)) * 1000 as first_token_ms,
       c.finish_reason_raw, c.finish_reason, c.input_tokens, c.output_tokens, c.cached_input_tokens,
       c.cache_write_tokens, c.reasoning_tokens, c.cost_usd, c.price_valid_from,
       c.cost_usd is null and c.error_class is distinct from 'cooldown' and c.error_class is distinct from 'budget'
         as price_missing,
       c.error_class, c.error_code, c.error_message, c.retryable, c.http_status, c.request_id, c.response_id,
       c.raw_output, c.validation_issues, c.repair_method, c.score, c.quality, c.usage_missing
  from ballast_private.model_calls c;
grant select on ballast.model_calls to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.model_calls is 'One call of a model step to a model provider (its trace): who answered, how long it took, tokens, cost, and what was wrong with the answer. Calls skipped for a cooldown or an exhausted budget are recorded too.';
comment on column ballast.model_calls.id is 'The call id (a BigInt).';
comment on column ballast.model_calls.attempt_id is 'The attempt that made the call.';
comment on column ballast.model_calls.step_id is 'The step of that attempt.';
comment on column ballast.model_calls.job_id is 'The job of that step.';
comment on column ballast.model_calls.tenant_id is 'The tenant of that job (whose budget paid).';
comment on column ballast.model_calls.rung is 'Where in the ladder: primary (the first model), reask (the same model asked again with the problems listed) or fallback.';
comment on column ballast.model_calls.model_index is 'Which model of the step: 0 is its model, 1 and up its fallbacks in order.';
comment on column ballast.model_calls.provider is 'The provider called, e.g. openai, anthropic, ollama, local.';
comment on column ballast.model_calls.provider_kind is 'The protocol of that provider (e.g. openai, anthropic, openai-compatible, local). Null: not known.';
comment on column ballast.model_calls.requested_model is 'The model asked for, e.g. gpt-4o-mini.';
comment on column ballast.model_calls.returned_model is 'The model that answered, as the provider named it (e.g. gpt-4o-mini-2024-07-18). Null: no answer.';
comment on column ballast.model_calls.prompt_name is 'The prompt used (its text is kept in ballast.prompts). Null: no registered prompt.';
comment on column ballast.model_calls.prompt_version is 'The version of that prompt. Null: no registered prompt.';
comment on column ballast.model_calls.prompt_hash is 'The SHA-256 of that prompt version. Null: no registered prompt.';
comment on column ballast.model_calls.parameters is 'The call parameters: temperature, max output tokens, timeout, streaming, structured output. Null: none recorded.';
comment on column ballast.model_calls.started_at is 'When the call started.';
comment on column ballast.model_calls.first_token_at is 'When the first token arrived (streamed calls). Null: not streamed, or no answer.';
comment on column ballast.model_calls.ended_at is 'When the call ended. Null: it did not end normally (its worker died during it).';
comment on column ballast.model_calls.latency_ms is 'How long the call took, in milliseconds. Null: it did not end normally.';
comment on column ballast.model_calls.first_token_ms is 'Time to the first token, in milliseconds (streamed calls). Null: not streamed, or no answer.';
comment on column ballast.model_calls.finish_reason_raw is 'Why the model stopped, as the provider said it. Null: no answer.';
comment on column ballast.model_calls.finish_reason is 'Why the model stopped, normalised: stop, length, content_filter, refusal, tool_calls, error, other. Null: no answer.';
comment on column ballast.model_calls.input_tokens is 'Input tokens charged. Null: not reported (see usageMissing) or no answer.';
comment on column ballast.model_calls.output_tokens is 'Output tokens charged. Null: not reported (see usageMissing) or no answer.';
comment on column ballast.model_calls.cached_input_tokens is 'Input tokens read from the provider cache (cheaper). Null: not reported.';
comment on column ballast.model_calls.cache_write_tokens is 'Input tokens written to the provider cache. Null: not reported.';
comment on column ballast.model_calls.reasoning_tokens is 'Output tokens spent on reasoning (already in outputTokens). Null: not reported.';
comment on column ballast.model_calls.cost_usd is 'What the call cost, in US dollars, at the price in force when it started; with usageMissing, the estimate reserved for it. Null: no price known (see priceMissing), or the call was not made.';
comment on column ballast.model_calls.price_valid_from is 'Since when the price used was in force (ballast.model_prices). Null: no price found.';
comment on column ballast.model_calls.price_missing is 'True when the call should have a cost but no price was found for its provider and model.';
comment on column ballast.model_calls.error_class is 'What went wrong: unparsable, schema, truncated, refusal, quota, transport, client, quality, cooldown (skipped: the model was cooling down), budget (skipped: budget exhausted), ... Null: the answer was accepted.';
comment on column ballast.model_calls.error_code is 'The provider error code, if it gave one. Null: none.';
comment on column ballast.model_calls.error_message is 'The error message. Null: no error.';
comment on column ballast.model_calls.retryable is 'True when the error may pass on a later attempt (e.g. 429, 5xx, timeout). Null: no error.';
comment on column ballast.model_calls.http_status is 'The HTTP status of the provider response. Null: no HTTP response (local model, or no connection).';
comment on column ballast.model_calls.request_id is 'The request id the provider returned (quote it to the provider). Null: none.';
comment on column ballast.model_calls.response_id is 'The response id the provider returned. Null: none.';
comment on column ballast.model_calls.raw_output is 'The answer as received, at most 65,536 characters (a longer one is cut, ending with its length and SHA-256). Null: no answer, or pruned by retention.';
comment on column ballast.model_calls.validation_issues is 'Why the answer failed the output contract: a list of {path, message}. Null: it passed, or pruned by retention.';
comment on column ballast.model_calls.repair_method is 'How an invalid answer was repaired locally (e.g. a JSON repair). Null: no repair.';
comment on column ballast.model_calls.score is 'The quality score of the answer, 0 to 1. Null: not scored.';
comment on column ballast.model_calls.quality is 'The quality verdict: the rules checked and their results. Null: no quality checks.';
comment on column ballast.model_calls.usage_missing is 'True when the provider answered without token counts: costUsd is then the estimate reserved for the call.';
create trigger refuse_write instead of insert or update or delete on ballast.model_calls
  for each row execute function ballast_private.refuse_view_write();

create view ballast.prompts with (security_invoker = true) as
select name, version, template, content_hash, registered_at from ballast_private.prompts;
grant select on ballast.prompts to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.prompts is 'Every registered version of every prompt, with its template and hash.';
create trigger refuse_write instead of insert or update or delete on ballast.prompts
  for each row execute function ballast_private.refuse_view_write();

create view ballast.model_prices with (security_invoker = true) as
select provider, model, valid_from, input_per_mtok, output_per_mtok, cached_input_per_mtok, source
  from ballast_private.model_prices;
grant select on ballast.model_prices to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.model_prices is 'Model prices in US dollars per million tokens (input, output, cached input), each valid from a date.';
create trigger refuse_write instead of insert or update or delete on ballast.model_prices
  for each row execute function ballast_private.refuse_view_write();

-- Budgets with the current period's usage.
create view ballast.budgets with (security_invoker = true) as
select b.tenant_id, b.limit_usd, b.period, b.on_exhausted, b.updated_at,
       ballast_private.budget_period_start(b.period, ballast.now()) as period_start,
       coalesce(u.spent_usd, 0) as spent_usd, coalesce(u.reserved_usd, 0) as reserved_usd,
       b.limit_usd - coalesce(u.spent_usd, 0) - coalesce(u.reserved_usd, 0) as remaining_usd
  from ballast_private.budgets b
  left join ballast_private.budget_usage u
    on u.tenant_id = b.tenant_id and u.period_start = ballast_private.budget_period_start(b.period, ballast.now());
grant select on ballast.budgets to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.budgets is 'The model spend limit of a tenant per UTC day, week or month, and what is spent and reserved in the current period. Tenants without a row have no limit.';
comment on column ballast.budgets.tenant_id is 'The tenant.';
comment on column ballast.budgets.limit_usd is 'The most its model calls may cost per period, in US dollars.';
comment on column ballast.budgets.period is 'The period of the limit: day, week or month (UTC).';
comment on column ballast.budgets.on_exhausted is 'What happens to a model step once the limit is reached: pause (it waits until the next period, or until the limit is raised) or fail (error class budget_exhausted).';
comment on column ballast.budgets.updated_at is 'When the budget was last set.';
comment on column ballast.budgets.period_start is 'When the current period started (UTC).';
comment on column ballast.budgets.spent_usd is 'What model calls cost in the current period, in US dollars.';
comment on column ballast.budgets.reserved_usd is 'What calls in flight have reserved (their highest possible cost), in US dollars.';
comment on column ballast.budgets.remaining_usd is 'The limit minus spent and reserved, in US dollars (negative when overspent by calls that reported more than reserved).';
create trigger refuse_write instead of insert or update or delete on ballast.budgets
  for each row execute function ballast_private.refuse_view_write();

create view ballast.provider_cooldowns with (security_invoker = true) as
select provider, model, until, reason, set_at, hits, until > ballast.now() as active
  from ballast_private.provider_cooldowns;
grant select on ballast.provider_cooldowns to ballast_operator, ballast_reporter;
comment on view ballast.provider_cooldowns is 'Providers and models that refused calls (429, 529): no worker calls them until the cooldown ends.';
create trigger refuse_write instead of insert or update or delete on ballast.provider_cooldowns
  for each row execute function ballast_private.refuse_view_write();

-- Steps waiting for a human decision: what was proposed and why.
create view ballast.reviews with (security_invoker = true) as
select s.id as step_id, s.job_id, j.tenant_id, j.pipeline, j.pipeline_version, s.name as step_name,
       s.review ->> 'reason' as reason, s.review -> 'proposed' as proposed_output, s.review -> 'detail' as detail,
       (s.review ->> 'requested_at')::timestamptz as requested_at
  from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
 where s.status = 'needs_review';
grant select on ballast.reviews to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.reviews is 'The steps waiting for a person (status needs_review), with the proposed output: decide with resolveReview (operators).';
comment on column ballast.reviews.step_id is 'The step waiting for a decision.';
comment on column ballast.reviews.job_id is 'Its job.';
comment on column ballast.reviews.tenant_id is 'The tenant of the job.';
comment on column ballast.reviews.pipeline is 'The pipeline of the job.';
comment on column ballast.reviews.pipeline_version is 'The version of that pipeline.';
comment on column ballast.reviews.step_name is 'The name of the step.';
comment on column ballast.reviews.reason is 'Why it needs a person (e.g. the quality rule that failed). Null: no reason given.';
comment on column ballast.reviews.proposed_output is 'The output the step proposes (APPROVE keeps it). Null: none (then only EDIT or REJECT).';
comment on column ballast.reviews.detail is 'More about the request (e.g. the answers of the models tried). Null: none.';
comment on column ballast.reviews.requested_at is 'When the step asked for review.';
create trigger refuse_write instead of insert or update or delete on ballast.reviews
  for each row execute function ballast_private.refuse_view_write();

-- Every start of an effect, and whether it was recorded: `select * from ballast.effect_intents where not recorded`
-- lists the effects that may have happened without ballast knowing their result.
create view ballast.effect_intents with (security_invoker = true) as
select i.step_id, s.job_id, i.key, i.attempt_id, a.number as attempt_number, i.started_at,
       exists (select 1 from ballast_private.effects e where e.step_id = i.step_id and e.key = i.key) as recorded
  from ballast_private.effect_intents i
  join ballast_private.steps s on s.id = i.step_id
  join ballast_private.attempts a on a.id = i.attempt_id;
grant select on ballast.effect_intents to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.effect_intents is 'Every start of a side effect and whether its result was recorded: rows with recorded = false may have happened without ballast knowing the result.';
create trigger refuse_write instead of insert or update or delete on ballast.effect_intents
  for each row execute function ballast_private.refuse_view_write();
