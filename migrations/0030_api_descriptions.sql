-- Up Migration
--
-- 0030: what the public views, their columns and the verbs mean, written down where every client reads it.
--
-- Why: PostGraphile 5 turns COMMENT ON of a view and of its columns into the description of the GraphQL type and
-- fields (Ruru's docs, codegen), and psql shows the same text (\d+ ballast.jobs, \df+ ballast.submit_job). Until
-- now the API's types and fields had no description at all: a newcomer had to guess what `attemptOffset` counts,
-- in which unit `latencyMs` is, which values `status` takes and what a null `finishedAt` means. Each comment says
-- what the thing is, its unit, its values and what null means, in the words of a user of the API (not of the
-- implementation). test/graphql-descriptions.test.ts fails when a field of the GraphQL schema has no description,
-- so a view or column added later needs its comment too.
--
-- Rules for later migrations: a view recreated with DROP VIEW + CREATE VIEW loses these comments (CREATE OR REPLACE
-- keeps them): restate them in the same migration. A comment whose line starts with @ is a PostGraphile smart tag,
-- not text; none of the views here had a comment or a smart tag before (their smart tags live in
-- src/server/surface.ts). The GraphQL names are camelCase (`tenant_id` is `tenantId`); `steps.attempts` is
-- `attemptCount` and `attempts.model_calls` is `modelCallCount` in GraphQL.

-- jobs ------------------------------------------------------------------------------------------------------------

comment on view ballast.jobs is
  'A job: one run of a pipeline on one input, made of steps. Clients see the jobs of their own tenant; operators and reporters see every tenant.';
comment on column ballast.jobs.id is 'The job id (a BigInt, sent as a string in GraphQL: "42").';
comment on column ballast.jobs.tenant_id is 'The tenant the job belongs to (1 to 200 bytes; "default" when none was named).';
comment on column ballast.jobs.pipeline is 'The pipeline it runs, e.g. demo.wordstats.';
comment on column ballast.jobs.pipeline_version is 'The version of the pipeline it runs (fixed at submission: the newest then, or the one asked for).';
comment on column ballast.jobs.idempotency_key is
  'The key it was submitted with (1 to 500 bytes, unique per tenant): submitting again with it returns this job. Null: submitted without a key.';
comment on column ballast.jobs.input is 'The job input, as submitted (checked against the input contract of the pipeline). JSON null after retention pruned the job (see prunedAt).';
comment on column ballast.jobs.status is
  'queued (no step has run yet), running, waiting (for an event), retrying (a step waits for its next attempt), needs_review (a step waits for a person), then one of the final statuses: completed, partially_completed (only items of a map step that allows it failed), failed or cancelled. Derived from the statuses of its steps.';
comment on column ballast.jobs.priority is 'From -1000 to 1000; lower runs first. 0 unless given at submission.';
comment on column ballast.jobs.result is
  'The output of its final step (with several final steps, an object of their outputs by step name). Null until the job completes, and after retention pruned it.';
comment on column ballast.jobs.error is
  'Why the job failed: the error of the failed step (class, code, message, retryable) with the step name and id. Null unless the job failed.';
comment on column ballast.jobs.created_at is 'When it was submitted.';
comment on column ballast.jobs.started_at is 'When its first step started running. Null: nothing has run yet.';
comment on column ballast.jobs.finished_at is 'When it reached a final status (completed, partially_completed, failed, cancelled). Null while it is not finished.';
comment on column ballast.jobs.updated_at is 'When its status or counters last changed.';
comment on column ballast.jobs.input_tokens is 'Model input tokens used by all its steps, summed over every model call. Null: no model call was made.';
comment on column ballast.jobs.output_tokens is 'Model output tokens used by all its steps, summed over every model call. Null: no model call was made.';
comment on column ballast.jobs.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.jobs.pruned_at is
  'When retention cleared its payloads (input, result, step outputs; statuses, errors and costs stay). A pruned job cannot be replayed. Null: not pruned.';

-- steps -----------------------------------------------------------------------------------------------------------

comment on view ballast.steps is
  'A step of a job: one unit of work of the pipeline (or one item of a map step), run and retried on its own.';
comment on column ballast.steps.id is 'The step id (a BigInt).';
comment on column ballast.steps.job_id is 'The job it belongs to.';
comment on column ballast.steps.name is 'Its name in the pipeline, e.g. count (unique within the job).';
comment on column ballast.steps.status is
  'pending (waits for the steps it depends on), queued, running, retrying (waits for its next attempt, at nextRunAt), waiting (for an event, see waitKey), needs_review (waits for a person), then one of the final statuses: succeeded, failed, cancelled or skipped (a step it depends on failed).';
comment on column ballast.steps.depends_on is 'The names of the steps that must succeed before it runs (empty: it runs first).';
comment on column ballast.steps.attempts is
  'How many times a worker has started it, every start counted (also those that do not count against maxAttempts, see attemptOffset).';
comment on column ballast.steps.max_attempts is 'How many attempts it may use before it fails for good (1 to 1000).';
comment on column ballast.steps.output is
  'What it returned, checked against its output contract. Null until it succeeds, and after retention pruned the job.';
comment on column ballast.steps.error is
  'Its last error: class, code, message and retryable (true when another attempt may succeed). Null when its last attempt did not fail.';
comment on column ballast.steps.progress is 'The latest progress value the running step reported (any JSON). Null: none reported.';
comment on column ballast.steps.next_run_at is 'When a retrying step is due to run again. Null unless it is retrying.';
comment on column ballast.steps.concurrency_key is
  'Its concurrency group: at most concurrencyLimit steps with the same key run at once. Null: no limit.';
comment on column ballast.steps.concurrency_limit is 'At most this many steps of its concurrency group run at once. Null: no limit.';
comment on column ballast.steps.timeout_ms is 'How long one attempt may run, in milliseconds, before it is aborted as timed_out. Null: no timeout.';
comment on column ballast.steps.created_at is 'When it was created (with its job).';
comment on column ballast.steps.queued_at is 'When it last became queued (ready to run). Null: never queued yet.';
comment on column ballast.steps.started_at is 'When its latest attempt started. Null: it has not run.';
comment on column ballast.steps.finished_at is 'When it reached a final status. Null while it is not finished.';
comment on column ballast.steps.updated_at is 'When it last changed.';
comment on column ballast.steps.attempt_offset is
  'Attempts that do not count against maxAttempts: given back at a worker shutdown, parked for an event or a cooldown, or made before a replay. Attempts counted: attemptCount minus this.';
comment on column ballast.steps.wait_key is 'The event key a waiting step waits for (sendEvent delivers it). Null unless it waits or has waited.';
comment on column ballast.steps.wait_deadline is 'When a waiting step stops waiting (then waitOnTimeout applies). Null: it waits without a deadline.';
comment on column ballast.steps.wait_on_timeout is 'What the wait deadline does: fail (the step fails) or retry (it runs again). Null unless it waits or has waited.';
comment on column ballast.steps.input_tokens is 'Model input tokens of all its attempts. Null: no model call was made.';
comment on column ballast.steps.output_tokens is 'Model output tokens of all its attempts. Null: no model call was made.';
comment on column ballast.steps.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.steps.review is
  'The human review of a model step: reason, proposed output, detail and requested_at; once decided also decision (approve, edit or reject), reviewer and note. Null: never sent to review.';

-- attempts --------------------------------------------------------------------------------------------------------

comment on view ballast.attempts is 'One run of a step by a worker: every start of a step, with how it ended.';
comment on column ballast.attempts.id is 'The attempt id (a BigInt).';
comment on column ballast.attempts.step_id is 'The step it ran.';
comment on column ballast.attempts.job_id is 'The job of that step.';
comment on column ballast.attempts.number is 'Its number among the attempts of the step, from 1.';
comment on column ballast.attempts.worker_id is 'The worker that ran it (see ballast.workers in SQL). Null: that worker row was deleted.';
comment on column ballast.attempts.outcome is
  'running, or how it ended: succeeded, failed, crashed (its worker died), timed_out, cancelled, released (given back at a worker shutdown, not counted), parked (the step waits for an event or a cooldown, not counted) or needs_review.';
comment on column ballast.attempts.started_at is 'When the worker claimed the step.';
comment on column ballast.attempts.lease_expires_at is 'Until when the worker holds the step: extended by its heartbeats; an expired lease of a running attempt makes it crashed.';
comment on column ballast.attempts.finished_at is 'When it ended. Null while it runs.';
comment on column ballast.attempts.error_class is 'The kind of error it ended with: permanent, retryable, timeout, worker_lost, blocked_worker, crashed_worker, output_contract, budget_exhausted, cooldown, a model failure class, or the class the step gave. Null when it did not fail.';
comment on column ballast.attempts.error_code is 'The code the step gave its error, if any. Null: none given, or no error.';
comment on column ballast.attempts.error_message is 'The error message. Null when it did not fail.';
comment on column ballast.attempts.error_retryable is 'True when the error allows another attempt. Null when it did not fail.';
comment on column ballast.attempts.duration_ms is 'How long it ran, in milliseconds. Null while it runs.';
comment on column ballast.attempts.contract_outcome is
  'Model steps: how the answer met the output contract: valid_first_try, repaired (after a local repair or a re-ask), fell_back (a fallback model answered), degraded (the declared default), review or rejected. Null: not a model step, or not finished.';
comment on column ballast.attempts.contract_detail is 'Model steps: the details of that verdict (prompt, calls, re-asks, score, reason). Null: not a model step.';
comment on column ballast.attempts.model is 'Model steps: the model whose answer was used (provider:model). Null: not a model step, or no answer used.';
comment on column ballast.attempts.prompt_ref is 'Model steps: the prompt used, as name@version. Null: not a model step.';
comment on column ballast.attempts.fallback_used is 'Model steps: true when a fallback model gave the answer. Null: not a model step.';
comment on column ballast.attempts.quality_score is 'Model steps: the quality score of the answer, 0 to 1. Null: not scored.';
comment on column ballast.attempts.model_calls is 'How many model calls it made (each one is a modelCalls row). Null: not a model step.';
comment on column ballast.attempts.input_tokens is 'Model input tokens of its calls. Null: no model call was made.';
comment on column ballast.attempts.output_tokens is 'Model output tokens of its calls. Null: no model call was made.';
comment on column ballast.attempts.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';

-- events ----------------------------------------------------------------------------------------------------------

comment on view ballast.events is
  'The audit trail: one event per status change of a job or step and per operator action, never changed or deleted.';
comment on column ballast.events.id is
  'The event id (a BigInt). Events are delivered in the order of the transactions that wrote them, so ids are not always increasing: resume a subscription after the last id you processed.';
comment on column ballast.events.job_id is 'The job it is about.';
comment on column ballast.events.step_id is 'The step it is about. Null: an event of the job as a whole.';
comment on column ballast.events.attempt_id is 'The attempt it is about. Null: not about one attempt.';
comment on column ballast.events.type is
  'What happened: job_submitted, job_<status> (job_running, job_completed, ...), step_<status> (step_running, step_succeeded, step_retrying, ...), step_replayed, review_resolved, ...';
comment on column ballast.events.status is 'The new status of the job or step. Null: the event changed no status.';
comment on column ballast.events.actor is
  'Who did it: system (ballast and its workers), reaper, watchdog or supervisor (recovery), jwt:<sub> (an API caller, from its token), reviewer:<name>, sql (a change made in psql), or the actor named in a call of a SQL function.';
comment on column ballast.events.reason is 'The reason given (e.g. to cancelJob or replayJob). Null: none given.';
comment on column ballast.events.data is 'Details of the event (e.g. the attempt number, the error, the next run time). Null: none.';
comment on column ballast.events.at is 'When it happened (the time of the transaction that wrote it).';

-- model_calls -----------------------------------------------------------------------------------------------------

comment on view ballast.model_calls is
  'One call of a model step to a model provider (its trace): who answered, how long it took, tokens, cost, and what was wrong with the answer. Calls skipped for a cooldown or an exhausted budget are recorded too.';
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
comment on column ballast.model_calls.cost_usd is
  'What the call cost, in US dollars, at the price in force when it started; with usageMissing, the estimate reserved for it. Null: no price known (see priceMissing), or the call was not made.';
comment on column ballast.model_calls.price_valid_from is 'Since when the price used was in force (ballast.model_prices). Null: no price found.';
comment on column ballast.model_calls.price_missing is 'True when the call should have a cost but no price was found for its provider and model.';
comment on column ballast.model_calls.error_class is
  'What went wrong: unparsable, schema, truncated, refusal, quota, transport, client, quality, cooldown (skipped: the model was cooling down), budget (skipped: budget exhausted), ... Null: the answer was accepted.';
comment on column ballast.model_calls.error_code is 'The provider error code, if it gave one. Null: none.';
comment on column ballast.model_calls.error_message is 'The error message. Null: no error.';
comment on column ballast.model_calls.retryable is 'True when the error may pass on a later attempt (e.g. 429, 5xx, timeout). Null: no error.';
comment on column ballast.model_calls.http_status is 'The HTTP status of the provider response. Null: no HTTP response (local model, or no connection).';
comment on column ballast.model_calls.request_id is 'The request id the provider returned (quote it to the provider). Null: none.';
comment on column ballast.model_calls.response_id is 'The response id the provider returned. Null: none.';
comment on column ballast.model_calls.raw_output is
  'The answer as received, at most 65,536 characters (a longer one is cut, ending with its length and SHA-256). Null: no answer, or pruned by retention.';
comment on column ballast.model_calls.validation_issues is 'Why the answer failed the output contract: a list of {path, message}. Null: it passed, or pruned by retention.';
comment on column ballast.model_calls.repair_method is 'How an invalid answer was repaired locally (e.g. a JSON repair). Null: no repair.';
comment on column ballast.model_calls.score is 'The quality score of the answer, 0 to 1. Null: not scored.';
comment on column ballast.model_calls.quality is 'The quality verdict: the rules checked and their results. Null: no quality checks.';
comment on column ballast.model_calls.usage_missing is
  'True when the provider answered without token counts: costUsd is then the estimate reserved for the call.';

-- reviews ---------------------------------------------------------------------------------------------------------

comment on view ballast.reviews is
  'The steps waiting for a person (status needs_review), with the proposed output: decide with resolveReview (operators).';
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

-- dead_letters ----------------------------------------------------------------------------------------------------

comment on view ballast.dead_letters is
  'The steps that failed for good (status failed), with their last attempt and every attempt error: what to fix or replay (replayStep, replayJob: operators).';
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
comment on column ballast.dead_letters.error_retryable is
  'Whether its final error was retryable (true: it ran out of attempts; false: a permanent error). Null: not recorded.';
comment on column ballast.dead_letters.job_status is 'The status of the job now (failed, or cancelled, or running again after a replay of another step).';
comment on column ballast.dead_letters.pruned_at is 'When retention pruned the job (it can no longer be replayed). Null: not pruned.';
comment on column ballast.dead_letters.last_attempt_id is 'Its last attempt. Null: it failed without an attempt (e.g. an exhausted budget at claim).';
comment on column ballast.dead_letters.last_attempt_outcome is 'How its last attempt ended (failed, crashed, timed_out, ...). Null: no attempt.';
comment on column ballast.dead_letters.last_worker_id is 'The worker of its last attempt. Null: no attempt, or the worker row was deleted.';
comment on column ballast.dead_letters.last_attempt_started_at is 'When its last attempt started. Null: no attempt.';
comment on column ballast.dead_letters.last_attempt_finished_at is 'When its last attempt ended. Null: no attempt.';
comment on column ballast.dead_letters.attempt_errors is
  'Every attempt, in order: number, outcome, error_class, error_message, started_at, finished_at. Null: no attempt.';
comment on column ballast.dead_letters.is_map_step is 'True for a map step (its items are steps of their own; a failed item can be replayed alone).';

-- pipelines -------------------------------------------------------------------------------------------------------

comment on view ballast.pipelines is
  'The registered pipelines, one row per version (workers register theirs when they start). Submit a job with its name.';
comment on column ballast.pipelines.name is 'The pipeline name, e.g. demo.wordstats (what submitJob takes).';
comment on column ballast.pipelines.version is 'Its version, from 1 (a new version is registered when the steps or contracts change).';
comment on column ballast.pipelines.definition is
  'Its steps: name, dependencies, retries, timeout, concurrency, contracts; and its limits (e.g. max_input_bytes).';
comment on column ballast.pipelines.input_schema is 'The JSON Schema every job input must satisfy (checked in Postgres at submission).';
comment on column ballast.pipelines.definition_hash is 'The SHA-256 of the definition (hex): registering the same version with another definition is refused.';
comment on column ballast.pipelines.registered_at is 'When this version was first registered.';

-- budgets ---------------------------------------------------------------------------------------------------------

comment on view ballast.budgets is
  'The model spend limit of a tenant per UTC day, week or month, and what is spent and reserved in the current period. Tenants without a row have no limit.';
comment on column ballast.budgets.tenant_id is 'The tenant.';
comment on column ballast.budgets.limit_usd is 'The most its model calls may cost per period, in US dollars.';
comment on column ballast.budgets.period is 'The period of the limit: day, week or month (UTC).';
comment on column ballast.budgets.on_exhausted is
  'What happens to a model step once the limit is reached: pause (it waits until the next period, or until the limit is raised) or fail (error class budget_exhausted).';
comment on column ballast.budgets.updated_at is 'When the budget was last set.';
comment on column ballast.budgets.period_start is 'When the current period started (UTC).';
comment on column ballast.budgets.spent_usd is 'What model calls cost in the current period, in US dollars.';
comment on column ballast.budgets.reserved_usd is 'What calls in flight have reserved (their highest possible cost), in US dollars.';
comment on column ballast.budgets.remaining_usd is 'The limit minus spent and reserved, in US dollars (negative when overspent by calls that reported more than reserved).';

-- SQL-only views (not in the GraphQL API) ---------------------------------------------------------------------------

comment on view ballast.effects is 'The side-effect ledger: the recorded result of every ctx.effect / ctx.transaction of a step, reused by later attempts.';
comment on view ballast.effect_intents is
  'Every start of a side effect and whether its result was recorded: rows with recorded = false may have happened without ballast knowing the result.';
comment on view ballast.error_codes is 'The SQLSTATEs ballast raises (class BA) with their name and meaning.';
comment on view ballast.job_transitions is 'The allowed changes of a job status; via_replay ones only through replay_step / replay_job.';
comment on view ballast.step_transitions is 'The allowed changes of a step status, with why each happens; via_replay ones only through replay_step / replay_job.';
comment on view ballast.model_prices is 'Model prices in US dollars per million tokens (input, output, cached input), each valid from a date.';
comment on view ballast.prompts is 'Every registered version of every prompt, with its template and hash.';
comment on view ballast.provider_cooldowns is 'Providers and models that refused calls (429, 529): no worker calls them until the cooldown ends.';
comment on view ballast.queue_depth is 'Per pipeline, the live steps by status and how long the oldest runnable one has waited.';
comment on view ballast.signals is 'The events delivered by send_event, per tenant and key (a key is delivered once).';
comment on view ballast.step_items is 'The items of map steps: each item with its status, attempts, output and error.';
comment on view ballast.stuck_work is 'Work that is not moving, with the default thresholds: steps queued for 5 minutes; leases, retries and wait deadlines overdue by a minute.';
comment on view ballast.workers is 'The worker processes: host, pid, concurrency, pipelines, last heartbeat; stopped_at once they stopped.';

-- The verbs (GraphQL: the mutations of the same names in camelCase) --------------------------------------------------

comment on function ballast.submit_job(text, jsonb, text, text, integer, integer) is
  'Start a job of a pipeline on an input (checked against the input contract). The same idempotency key with the same request returns the existing job (created = false). Restricted callers (clients) submit for their own tenant only.';
comment on function ballast.submit_jobs(text, jsonb[], text[], text, integer, integer) is
  'Start many jobs of one pipeline in one statement, all or nothing (at most 1000), one result per input in input order (ord from 1).';
comment on function ballast.cancel_job(bigint, text, text) is
  'Cancel a job and its unfinished steps. Cancelling a cancelled job changes nothing (already_cancelled). Clients: jobs of their own tenant.';
comment on function ballast.replay_step(bigint, text, boolean, text) is
  'Run a finished step again, and the steps that depend on it. A succeeded step needs force. Operators only.';
comment on function ballast.replay_job(bigint, text, text, text) is
  'Run the failed or cancelled steps of a job again, or everything from a named step on. Operators only.';
comment on function ballast.send_event(text, jsonb, text, text) is
  'Deliver an event to the steps of one tenant waiting for its key (and to those that will wait for it). A key is delivered once (accepted = false the second time).';
comment on function ballast.resolve_review(bigint, text, jsonb, text, text) is
  'Decide a step in needs_review: approve (keep the proposed output), edit (use the output given, checked against the contract) or reject (fail the step). Operators only.';
