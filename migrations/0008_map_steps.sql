-- Up Migration
--
-- 0008: map steps: one step fanned out over an array of items, items failing independently, partial completion.
--
-- A map step runs once to list its items (ballast.expand_items); each item becomes a child step row named
-- '<step>__<index>' with parent_step_id set, which then goes through the ordinary machinery (claim, retries with
-- backoff, timeouts, leases, cancellation, effects), so items fail and retry independently. Nothing depends on a
-- child by name; the parent waits (status 'waiting', wait_key 'ballast:items:<id>') until every child is final, then
-- succeeds with the per-item outcomes as its output, or fails when items failed and the pipeline does not accept
-- partial success ("map": {"partial": false}) or fewer succeeded than "min_succeeded". A job whose map accepted
-- failed items ends 'partially_completed'. Per-item outcomes are in the view ballast.step_items.
--
-- The item columns of ballast_private.steps (parent_step_id, item_index, item), their checks and index, and the
-- transitions of map steps are in 0001. refresh_job_status (0003), claim_step, complete_step, settle_failure and reap
-- (0005), cancel_job and replay_step (0007) take items into account.

-- expand_items(attempt_id, items) -> number of items
-- Called by the worker on the first run of a map step with the items to process (a JSON array). Creates one child
-- step per item (queued, with the parent's dependencies, retry, timeout and concurrency settings) and wakes them;
-- the parent's attempt ends 'succeeded' (its work, listing the items, is done) and the parent waits for its
-- children. An empty array completes the parent at once. Raises BA002 when items is not an array or the step is
-- not declared as a map step, BA007/BA008 as running_attempt.
create function ballast.expand_items(p_attempt_id bigint, p_items jsonb) returns integer
language plpgsql
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_def jsonb;
  v_count int;
  v_id bigint;
begin
  if p_items is null or jsonb_typeof(p_items) <> 'array' then
    perform ballast_private.bad_argument('items', format('must be a JSON array, got %s', coalesce(jsonb_typeof(p_items), 'null')),
      'Return an array of the items to process from the map step''s items function.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  select d into v_def
    from ballast_private.jobs j
    join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
    cross join lateral jsonb_array_elements(p.definition -> 'steps') d
   where j.id = v_step.job_id and d ->> 'name' = v_step.name;
  if jsonb_typeof(v_def -> 'map') is distinct from 'object' then
    perform ballast_private.bad_argument('step', format('step %s ("%s") is not a map step', v_step.id, v_step.name),
      'Declare it with .map(...) in the pipeline.');
  end if;
  if length(v_step.name) + 2 + length((jsonb_array_length(p_items))::text) > 63 then
    perform ballast_private.bad_argument('step', format('map step name "%s" is too long to name %s items', v_step.name, jsonb_array_length(p_items)),
      'Use a map step name of at most 50 characters.');
  end if;

  update ballast_private.attempts set outcome = 'succeeded', finished_at = v_now where id = p_attempt_id;
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, parent_step_id, item_index, item)
  select v_step.job_id, v_step.name || '__' || (e.ordinality - 1), 'queued', v_step.depends_on, 0,
         v_step.max_attempts, v_step.backoff_base_ms, v_step.backoff_cap_ms, v_step.timeout_ms,
         v_step.concurrency_key, v_step.concurrency_limit, v_now, v_now, v_now, v_step.id, e.ordinality - 1, e.value
    from jsonb_array_elements(p_items) with ordinality e;
  get diagnostics v_count = row_count;

  update ballast_private.steps
     set status = 'waiting', wait_key = 'ballast:items:' || v_step.id, wait_deadline = null, wait_on_timeout = null
   where id = v_step.id;
  for v_id in select id from ballast_private.steps where parent_step_id = v_step.id order by item_index loop
    perform ballast_private.wake_step(v_id);
  end loop;
  if v_count = 0 then
    perform ballast_private.finish_map(v_step.id);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return v_count;
end
$fn$;

-- finish_map(parent_step_id): when every item of a waiting map step is final, completes the parent: output
-- {"items": [{"index", "status", "output" | "error"}], "succeeded": n, "failed": n}, then 'succeeded' when no item
-- failed, or when the definition says {"partial": true} and at least min_succeeded items succeeded; else 'failed'
-- (dependants skipped). Queues the parent's dependants like complete_step. A no-op while items are still live.
-- The caller holds the lock of the item that just finished; the parent row is locked here.
create function ballast_private.finish_map(p_parent_id bigint) returns void
language plpgsql
as $fn$
declare
  v_parent ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_def jsonb;
  v_live int; v_ok int; v_bad int;
  v_output jsonb;
  v_acceptable boolean;
begin
  select * into v_parent from ballast_private.steps where id = p_parent_id for update;
  if v_parent.status <> 'waiting' then
    return;
  end if;
  select count(*) filter (where status not in ('succeeded', 'failed', 'cancelled', 'skipped')),
         count(*) filter (where status = 'succeeded'),
         count(*) filter (where status in ('failed', 'cancelled', 'skipped'))
    into v_live, v_ok, v_bad
    from ballast_private.steps where parent_step_id = p_parent_id;
  if v_live > 0 then
    return;
  end if;
  select d into v_def
    from ballast_private.jobs j
    join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
    cross join lateral jsonb_array_elements(p.definition -> 'steps') d
   where j.id = v_parent.job_id and d ->> 'name' = v_parent.name;
  select jsonb_build_object(
           'items', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                      'index', c.item_index, 'status', c.status, 'output', c.output, 'error', c.error))
                    order by c.item_index), '[]'::jsonb),
           'succeeded', v_ok, 'failed', v_bad)
    into v_output
    from ballast_private.steps c where c.parent_step_id = p_parent_id;
  v_acceptable := v_bad = 0
    or (coalesce((v_def -> 'map' ->> 'partial')::boolean, false)
        and v_ok >= coalesce((v_def -> 'map' ->> 'min_succeeded')::int, 1));

  if v_acceptable then
    update ballast_private.steps
       set status = 'succeeded', output = v_output, error = null, finished_at = v_now, wait_key = null
     where id = p_parent_id;
    perform ballast_private.queue_dependants(v_parent.job_id, v_parent.name, v_now);
  else
    update ballast_private.steps set output = v_output where id = p_parent_id;
    select * into v_parent from ballast_private.steps where id = p_parent_id;
    perform ballast_private.settle_failure(v_parent,
      jsonb_build_object('class', 'items_failed', 'retryable', false, 'attempt', v_parent.attempts,
                         'message', format('%s of %s items failed%s', v_bad, v_ok + v_bad,
                                           case when coalesce((v_def -> 'map' ->> 'partial')::boolean, false)
                                                then format(' (at least %s had to succeed)', coalesce((v_def -> 'map' ->> 'min_succeeded')::int, 1))
                                                else ' and the step does not accept partial success' end)),
      false, null, v_now);
  end if;
end
$fn$;

-- Per-item outcomes of map steps.
create view ballast.step_items with (security_invoker = true) as
select c.parent_step_id as step_id, p.name as step_name, c.job_id, c.item_index, c.id as item_step_id, c.item,
       c.status, c.attempts, c.output, c.error, c.started_at, c.finished_at
  from ballast_private.steps c join ballast_private.steps p on p.id = c.parent_step_id;

create trigger refuse_write instead of insert or update or delete on ballast.step_items
  for each row execute function ballast_private.refuse_view_write();
