-- Up Migration
-- The public steps view shows what a waiting step waits for (issue 15, item 3): waiting_for, 'event' (wait_key names
-- it), 'time' (a sleep until wait_deadline) or 'items' (a map step), null unless the step is waiting. Appended as the
-- view's last column (CREATE OR REPLACE VIEW keeps its grants, trigger and comments); GraphQL shows it as waitingFor.

create or replace view ballast.steps with (security_invoker = true) as
 select steps.id, steps.job_id, steps.name, steps.status, steps.depends_on, steps.attempts, steps.max_attempts,
        steps.output, steps.error, steps.progress, steps.next_run_at, steps.concurrency_key, steps.concurrency_limit,
        steps.timeout_ms, steps.created_at, steps.queued_at, steps.started_at, steps.finished_at, steps.updated_at,
        steps.attempt_offset, steps.wait_key, steps.wait_deadline, steps.wait_on_timeout, steps.input_tokens,
        steps.output_tokens, steps.cost_usd, steps.review, steps.waiting_for
   from ballast_private.steps;
comment on column ballast.steps.waiting_for is 'What a waiting step waits for: event (the key in waitKey), time (a sleep until waitDeadline) or items (a map step, for its items to finish). Null unless it is waiting.';

-- Down Migration
