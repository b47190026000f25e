-- Up Migration
-- Child jobs (issue 15, item 4): a step starts jobs of any pipeline (ctx.startChildren) and waits for their results
-- (ctx.waitForChildren: all of them, or the first n to complete), with cancellation flowing down and results and
-- errors flowing up.
--
--  * ballast_private.jobs.parent_job_id / parent_step_id link a child to the job and the step that started it (null
--    for every other job). Jobs are never deleted (pruning keeps the rows), so the links stay; the foreign keys say
--    what they point at and set null should a step ever be deleted.
--  * ballast.start_child_jobs(attempt, children) submits them through ballast.submit_jobs (so validation, size limits,
--    dedupe and the queue wake-up are the usual ones), one call per pipeline named, in one statement, with the
--    idempotency key 'ballast-child:<parent step id>:<child key>' in the parent's tenant and at the parent's
--    priority: a retried, reclaimed or replayed step that starts the same children gets the same jobs back.
--  * ballast.wait_for_children(attempt, job ids, first) returns the children's results when the wait is satisfied;
--    otherwise the attempt ends 'parked' (uncharged, like a wait for an event or a sleep), the step is 'waiting' with
--    waiting_for 'children' (a new value of the generated column: wait_children holds the job ids, wait_first the n
--    of a first-n wait) and holds no worker slot; it runs again from the top when the wait is satisfied.
--    Satisfied: every child final (all); or n children 'completed', or so many ended otherwise that n can no longer
--    complete (first n: then the step sees the failures). A child's failure never fails the parent by itself.
--  * Results up, set-based: when jobs become final (jobs_changed, the statement trigger every job status change goes
--    through), the waiting parents of those that have one are checked and queued again, in the same transaction; a
--    job without a parent pays one look at the statement's transition rows.
--  * Cancellation down: cancel_job cancels the job's unfinished descendants with it (children, grandchildren), in the
--    same statements, audited as their own job_cancelled / step_cancelled events with the same actor and reason.
--    Cancelling a child does not cancel its parent: the parent step sees it as a cancelled result.

alter table ballast_private.jobs
  add column parent_job_id bigint,
  add column parent_step_id bigint;
alter table ballast_private.jobs
  add constraint job_parent_job_fk foreign key (parent_job_id) references ballast_private.jobs (id) on delete set null,
  add constraint job_parent_step_fk foreign key (parent_step_id) references ballast_private.steps (id) on delete set null,
  add constraint job_parent_pair check ((parent_job_id is null) = (parent_step_id is null));
create index jobs_parent_job_idx on ballast_private.jobs (parent_job_id) where parent_job_id is not null;
create index jobs_parent_step_idx on ballast_private.jobs (parent_step_id) where parent_step_id is not null;
comment on column ballast_private.jobs.parent_job_id is 'The job whose step started this one (ctx.startChildren, 0038); null for a job submitted otherwise.';
comment on column ballast_private.jobs.parent_step_id is 'The step that started this job (ctx.startChildren, 0038); null for a job submitted otherwise.';

alter table ballast_private.steps
  add column wait_children bigint[],
  add column wait_first integer;
alter table ballast_private.steps
  add constraint step_wait_first_positive check (wait_first >= 1);
comment on column ballast_private.steps.wait_children is 'The child jobs a step waiting for children waits for (ballast.wait_for_children, 0038); null otherwise.';
comment on column ballast_private.steps.wait_first is 'For a wait for the first n children to complete: n; null when it waits for all of them.';

-- waiting_for gains 'children' (wait_children set, nothing else). Dropped and added again as in 0034 (a rewrite of
-- steps). The constraints that read it are dropped with it and added again; the public steps view (0035) reads it,
-- so it shows a null in its place meanwhile (CREATE OR REPLACE VIEW keeps its grants, trigger and comments).
create or replace view ballast.steps with (security_invoker = true) as
 select steps.id, steps.job_id, steps.name, steps.status, steps.depends_on, steps.attempts, steps.max_attempts,
        steps.output, steps.error, steps.progress, steps.next_run_at, steps.concurrency_key, steps.concurrency_limit,
        steps.timeout_ms, steps.created_at, steps.queued_at, steps.started_at, steps.finished_at, steps.updated_at,
        steps.attempt_offset, steps.wait_key, steps.wait_deadline, steps.wait_on_timeout, steps.input_tokens,
        steps.output_tokens, steps.cost_usd, steps.review, null::text as waiting_for
   from ballast_private.steps;
alter table ballast_private.steps drop constraint step_items_wait_has_no_deadline;
alter table ballast_private.steps drop constraint step_sleep_has_deadline;
alter table ballast_private.steps disable trigger steps_changed;
alter table ballast_private.steps drop column waiting_for;
alter table ballast_private.steps
  add column waiting_for text generated always as (
    case when status = 'waiting' then
      case when wait_key is not null then 'event' when wait_on_timeout = 'resume' then 'time'
           when wait_children is not null then 'children' else 'items' end
    end) stored;
alter table ballast_private.steps enable trigger steps_changed;
alter table ballast_private.steps
  add constraint step_items_wait_has_no_deadline
  check (waiting_for is distinct from 'items' or (wait_deadline is null and wait_on_timeout is null));
alter table ballast_private.steps
  add constraint step_sleep_has_deadline check (waiting_for is distinct from 'time' or wait_deadline is not null);
comment on column ballast_private.steps.waiting_for is 'Null unless the step is waiting: ''event'' (for the event wait_key names), ''time'' (a sleep until wait_deadline), ''children'' (for the child jobs in wait_children) or ''items'' (a map step, for its items). Generated from status, wait_key, wait_on_timeout and wait_children.';
create or replace view ballast.steps with (security_invoker = true) as
 select steps.id, steps.job_id, steps.name, steps.status, steps.depends_on, steps.attempts, steps.max_attempts,
        steps.output, steps.error, steps.progress, steps.next_run_at, steps.concurrency_key, steps.concurrency_limit,
        steps.timeout_ms, steps.created_at, steps.queued_at, steps.started_at, steps.finished_at, steps.updated_at,
        steps.attempt_offset, steps.wait_key, steps.wait_deadline, steps.wait_on_timeout, steps.input_tokens,
        steps.output_tokens, steps.cost_usd, steps.review, steps.waiting_for
   from ballast_private.steps;

-- child_results(job_ids) -> jsonb: the children's results, in the order of job_ids: per child its key (the one
-- start_child_jobs was given), job id, pipeline, status, result and error.
create function ballast_private.child_results(p_job_ids bigint[]) returns jsonb
language sql stable
as $fn$
  select coalesce(jsonb_agg(jsonb_build_object(
           'key', substr(j.idempotency_key, length('ballast-child:' || j.parent_step_id || ':') + 1),
           'job_id', j.id::text, 'pipeline', j.pipeline, 'status', j.status, 'result', j.result, 'error', j.error)
           order by u.n), '[]'::jsonb)
    from unnest(p_job_ids) with ordinality u(id, n)
    join ballast_private.jobs j on j.id = u.id
$fn$;

-- children_done(job_ids, first) -> boolean: whether a wait for these children is satisfied. first null: every one
-- is final. first n: n of them completed, or fewer than n can still complete (the completed ones plus the
-- unfinished ones are fewer than n).
create function ballast_private.children_done(p_job_ids bigint[], p_first integer) returns boolean
language sql stable
as $fn$
  select case when p_first is null then count(*) filter (where j.finished_at is null) = 0
              else count(*) filter (where j.status = 'completed') >= p_first
                   or count(*) filter (where j.status = 'completed' or j.finished_at is null) < p_first end
    from ballast_private.jobs j
   where j.id = any(p_job_ids)
$fn$;

-- start_child_jobs(attempt_id, children) -> (ord, key, job_id, created, pipeline, status): starts the child jobs of
-- the attempt's step, idempotently. children: a JSON array (1 to 1000) of {key, pipeline, version?, input?}: key
-- names the child within the step (1 to 400 bytes, unique in the array, the same on every run), version defaults
-- to the pipeline's newest, input to {}. Each child is submitted by ballast.submit_jobs in the parent's tenant, at
-- its priority (one call per pipeline and version named), with the idempotency key 'ballast-child:<step id>:<key>': a second call with the same keys (a retry,
-- a crash, a replay) returns the same jobs (created false); the same key with another pipeline or input raises
-- BA003 as any reused key does (BA004 for an unknown pipeline). One row per child, in the array's order. Raises BA002 for a bad array, key,
-- pipeline, version or input (the field names the child: children[i]), BA007/BA008 as running_attempt.
create function ballast.start_child_jobs(p_attempt_id bigint, p_children jsonb)
returns table (ord integer, key text, job_id bigint, created boolean, pipeline text, status text)
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_step ballast_private.steps;
  v_parent ballast_private.jobs;
  v_bad record;
  v_n integer;
  v_idx integer[];
  v_jobs bigint[];
  v_created boolean[];
  v_group record;
  v_msg text;
  v_detail text;
  v_hint text;
  v_k integer;
begin
  if p_children is null or jsonb_typeof(p_children) <> 'array' or jsonb_array_length(p_children) = 0 then
    perform ballast_private.bad_argument('children', 'is not a non-empty JSON array',
      'Pass an array of {key, pipeline, version?, input?}, one per child job.');
  end if;
  v_n := jsonb_array_length(p_children);
  if v_n > 1000 then
    perform ballast_private.bad_argument('children', format('has %s children; one call starts at most 1000', v_n),
      'Start them in several calls, each with its own keys.');
  end if;
  select x.n, x.problem into v_bad
    from (select c.n, case
                   when jsonb_typeof(c.v) <> 'object' then 'is not an object {key, pipeline, version?, input?}'
                   when jsonb_typeof(c.v -> 'key') is distinct from 'string' or c.v ->> 'key' = ''
                     or octet_length(c.v ->> 'key') > 400 then 'key is not a string of 1 to 400 bytes'
                   when jsonb_typeof(c.v -> 'pipeline') is distinct from 'string' then 'pipeline is not a string'
                   when coalesce(jsonb_typeof(c.v -> 'version'), 'null') not in ('null', 'number')
                     or (jsonb_typeof(c.v -> 'version') = 'number' and (c.v ->> 'version') !~ '^[1-9][0-9]{0,8}$')
                     then 'version is not a positive integer'
                   when row_number() over (partition by c.v ->> 'key' order by c.n) > 1 then format('key %L is given twice', c.v ->> 'key')
                 end as problem
            from jsonb_array_elements(p_children) with ordinality c(v, n)) x
   where x.problem is not null
   order by x.n limit 1;
  if found then
    perform ballast_private.bad_argument(format('children[%s]', v_bad.n - 1), v_bad.problem,
      'Give each child a key unique within the step (the same on every run), the name of a registered pipeline, '
      || 'optionally its version, and its input.');
  end if;

  v_step := ballast_private.running_attempt(p_attempt_id);
  select * into v_parent from ballast_private.jobs j where j.id = v_step.job_id;
  perform ballast_private.set_actor(format('job %s', v_parent.id));

  -- One submit_jobs call per (pipeline, version) named (most calls name one). A problem with an input is reported
  -- as the child's (children[i].input...), not as submit_jobs' inputs[k] of its group.
  v_idx := '{}';
  v_jobs := '{}';
  v_created := '{}';
  for v_group in
    select c.pipeline, c.version, array_agg(c.i order by c.i) as idx, array_agg(c.input order by c.i) as inputs,
           array_agg(format('ballast-child:%s:%s', v_step.id, c.key) order by c.i) as keys
      from (select (x.n - 1)::int as i, x.v ->> 'key' as key, x.v ->> 'pipeline' as pipeline,
                   (x.v ->> 'version')::int as version, coalesce(x.v -> 'input', '{}'::jsonb) as input
              from jsonb_array_elements(p_children) with ordinality x(v, n)) c
     group by c.pipeline, c.version
     order by min(c.i)
  loop
    begin
      select v_idx || array_agg(v_group.idx[r.ord] order by r.ord), v_jobs || array_agg(r.job_id order by r.ord),
             v_created || array_agg(r.created order by r.ord)
        into v_idx, v_jobs, v_created
        from ballast.submit_jobs(v_group.pipeline, v_group.inputs, v_group.keys, v_parent.tenant_id, v_parent.priority,
                                 v_group.version) r;
    exception when sqlstate 'BA002' then
      get stacked diagnostics v_msg = message_text, v_detail = pg_exception_detail, v_hint = pg_exception_hint;
      for v_k in select distinct m[1]::int from regexp_matches(v_msg || ' ' || coalesce(v_detail, ''), 'inputs\[(\d+)\]', 'g') m loop
        v_msg := replace(v_msg, format('inputs[%s]', v_k), format('children[%s].input', v_group.idx[v_k]));
        v_detail := replace(v_detail, format('inputs[%s]', v_k), format('children[%s].input', v_group.idx[v_k]));
      end loop;
      raise exception using errcode = 'BA002', message = v_msg, detail = coalesce(v_detail, ''), hint = coalesce(v_hint, '');
    end;
  end loop;
  -- The new jobs are linked to the step (no worker sees them before this transaction commits); a job already
  -- linked (a second call) stays as it is.
  update ballast_private.jobs j set parent_job_id = v_parent.id, parent_step_id = v_step.id
   where j.id = any(v_jobs) and j.parent_step_id is null;

  return query
  select u.i + 1, x.v ->> 'key', u.job_id, u.created, j.pipeline, j.status
    from unnest(v_idx, v_jobs, v_created) u(i, job_id, created)
    join ballast_private.jobs j on j.id = u.job_id
    cross join lateral (select p_children -> u.i as v) x
   order by u.i;
end
$fn$;
revoke execute on function ballast.start_child_jobs(bigint, jsonb) from public;
comment on function ballast.start_child_jobs(bigint, jsonb) is 'A step starts child jobs (ctx.startChildren): one job per {key, pipeline, version?, input?}, idempotent per (step, key); workers call it.';

-- wait_for_children(attempt_id, job_ids, first) -> (done, children): waits for child jobs of the attempt's step:
-- job_ids (null: every child the step started), all of them (first null) or the first `first` to complete. When
-- the wait is satisfied (children_done): done true and the children's results (child_results), nothing changes.
-- Otherwise the attempt ends 'parked' (uncharged), the step waits (waiting_for 'children') and jobs_changed queues
-- it again when its children satisfy the wait: done false. The children are locked (for share) before the step,
-- in the order a child's own end takes them (its job, then its parent's step), so a child that ends meanwhile
-- either is seen ended here or sees the step waiting. Raises BA002 for ids that are not children of the step or a
-- bad first, BA007/BA008 as running_attempt.
create function ballast.wait_for_children(p_attempt_id bigint, p_job_ids bigint[] default null,
  p_first integer default null)
returns table (done boolean, children jsonb)
language plpgsql volatile
as $fn$
declare
  v_step_id bigint;
  v_step ballast_private.steps;
  v_ids bigint[];
  v_bad bigint;
  v_now timestamptz := ballast.now();
begin
  select a.step_id into v_step_id from ballast_private.attempts a where a.id = p_attempt_id;
  if p_job_ids is null then
    select coalesce(array_agg(j.id order by j.id), '{}') into v_ids
      from (select j.id from ballast_private.jobs j where j.parent_step_id = v_step_id order by j.id for share) j;
  else
    select array_agg(distinct u.id order by u.id) filter (where u.id is not null) into v_ids from unnest(p_job_ids) u(id);
    perform 1 from ballast_private.jobs j where j.id = any(v_ids) order by j.id for share;
    select u.id into v_bad from unnest(p_job_ids) u(id)
     where not exists (select 1 from ballast_private.jobs j where j.id = u.id and j.parent_step_id = v_step_id)
     limit 1;
    if found then
      perform ballast_private.bad_argument('job_ids', format('job %s is not a child job of step %s', v_bad, v_step_id),
        'Wait for the jobs this step started (ctx.startChildren returns their ids), or leave the ids out for all of them.');
    end if;
    -- In the order given, without repeats.
    select array_agg(x.id order by x.n) into v_ids
      from (select u.id, min(u.n) as n from unnest(p_job_ids) with ordinality u(id, n) group by u.id) x;
  end if;
  v_ids := coalesce(v_ids, '{}');
  if p_first is not null and (p_first < 1 or p_first > cardinality(v_ids)) then
    perform ballast_private.bad_argument('first', format('%s is not from 1 to the %s children waited for', p_first, cardinality(v_ids)),
      'Wait for the first n of the children (n at least 1 and at most their number), or for all of them.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  if cardinality(v_ids) = 0 or ballast_private.children_done(v_ids, p_first) then
    return query select true, ballast_private.child_results(v_ids);
    return;
  end if;
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'waiting', wait_key = null, wait_deadline = null, wait_on_timeout = null,
         wait_children = v_ids, wait_first = p_first, attempt_offset = attempt_offset + 1
   where id = v_step.id;
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select false, null::jsonb;
end
$fn$;
revoke execute on function ballast.wait_for_children(bigint, bigint[], integer) from public;
comment on function ballast.wait_for_children(bigint, bigint[], integer) is 'A step waits for its child jobs (ctx.waitForChildren): all, or the first n to complete; parks the step until then (workers call it).';

-- wake_child_waits(step_ids): the steps among step_ids that wait for children whose wait is now satisfied go back
-- to 'queued' (steps_changed announces them). The steps are locked first, in id order, and the check reads the
-- children in a later statement: two children ending at once in two transactions are serialized on the step, and
-- the second sees the first's end.
create function ballast_private.wake_child_waits(p_step_ids bigint[]) returns void
language plpgsql volatile
as $fn$
begin
  perform 1 from ballast_private.steps s
   where s.id = any(p_step_ids) and s.status = 'waiting' and s.wait_children is not null
   order by s.id for update;
  if not found then
    return;
  end if;
  update ballast_private.steps s
     set status = 'queued', queued_at = ballast.now(), wait_children = null, wait_first = null
   where s.id = any(p_step_ids) and s.status = 'waiting' and s.wait_children is not null
     and ballast_private.children_done(s.wait_children, s.wait_first);
end
$fn$;

-- jobs_changed: as in 0010 (an audit event per status change), and the parents of jobs that became final are looked
-- at (wake_child_waits). A statement whose jobs have no parent stops at the probe.
create or replace function ballast_private.jobs_changed() returns trigger
language plpgsql volatile
as $fn$
begin
  insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
  select n.id, 'job_' || n.status, n.status, coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
         nullif(current_setting('ballast.reason', true), ''),
         case when n.status = 'failed' then jsonb_build_object('error', n.error) end,
         ballast.now()
    from new_t n join old_t o on o.id = n.id
   where o.status <> n.status
   order by n.id;
  if exists (select 1 from new_t n where n.parent_step_id is not null and n.finished_at is not null) then
    perform ballast_private.wake_child_waits(array(
      select distinct n.parent_step_id from new_t n join old_t o on o.id = n.id
       where n.parent_step_id is not null and n.finished_at is not null and o.finished_at is null));
  end if;
  return null;
end
$fn$;

-- cancel_job(job_id, reason, actor): as in 0008, and the job's unfinished descendants (child jobs, theirs, ...) are
-- cancelled with it, by the same statements: their running attempts end, their unfinished steps are cancelled, a
-- ballast_cancel notice goes out per job with running attempts. The steps are locked deepest job first (a child's end
-- locks the child, then its parent's step). cancelled_step_ids stays the job's own steps.
create or replace function ballast_private.cancel_job(p_job_id bigint, p_reason text default null, p_actor text default null)
returns table (job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql volatile
as $fn$
declare
  v_job ballast_private.jobs;
  v_now timestamptz := ballast.now();
  v_steps bigint[];
  v_jobs bigint[];
begin
  perform ballast_private.set_actor(p_actor);
  perform set_config('ballast.reason', coalesce(p_reason, ''), true);
  -- The job and its unfinished descendants, deepest first (a finished child's unfinished children count too).
  with recursive t(id, depth, finished) as (
    select p_job_id, 0, false
    union all
    select c.id, t.depth + 1, c.finished_at is not null
      from t join ballast_private.jobs c on c.parent_job_id = t.id
     where t.depth < 1000)
  select array_agg(t.id order by t.depth desc, t.id) into v_jobs from t where not t.finished;
  -- Items of map steps first, then the other steps, each by id: an item finishing locks itself, then its map step.
  perform 1 from ballast_private.steps s join unnest(v_jobs) with ordinality u(id, n) on u.id = s.job_id
   order by u.n, s.parent_step_id is null, s.id for update of s;
  select * into v_job from ballast_private.jobs j where j.id = p_job_id for no key update;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  if v_job.status = 'cancelled' then
    return query select v_job.id, v_job.status, '{}'::bigint[], true;
    return;
  end if;
  if v_job.status in ('completed', 'failed', 'partially_completed') then
    raise exception using errcode = 'BA010',
      message = format('job %s already %s; there is nothing to cancel', p_job_id, v_job.status),
      hint = 'To run it again use ballast.replay_job.';
  end if;

  perform pg_notify('ballast_cancel', jsonb_build_object('job_id', r.job_id, 'attempts', r.attempts)::text)
     from (select a.job_id, jsonb_agg(jsonb_build_object('attempt_id', a.id, 'worker_id', a.worker_id)) as attempts
             from ballast_private.attempts a where a.job_id = any(v_jobs) and a.outcome = 'running'
            group by a.job_id order by a.job_id) r;
  update ballast_private.attempts a
     set outcome = 'cancelled', finished_at = v_now, error_class = 'cancelled',
         error_message = case when a.job_id = p_job_id then coalesce('job cancelled: ' || nullif(p_reason, ''), 'job cancelled')
                              else format('job cancelled with its parent job %s', p_job_id)
                                   || coalesce(': ' || nullif(p_reason, ''), '') end,
         error_retryable = false
   where a.job_id = any(v_jobs) and a.outcome = 'running';
  with c as (
    update ballast_private.steps s
       set status = 'cancelled', finished_at = v_now, next_run_at = null,
           wait_key = null, wait_deadline = null, wait_on_timeout = null, wait_children = null, wait_first = null
     where s.job_id = any(v_jobs)
       and s.status in ('pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review')
    returning s.id, s.job_id)
  select coalesce(array_agg(c.id order by c.id) filter (where c.job_id = p_job_id), '{}') into v_steps from c;
  return query select p_job_id, ballast_private.refresh_job_status(p_job_id), v_steps, false;
end
$fn$;

comment on function ballast.cancel_job(bigint,text,text) is 'Cancel a job, its unfinished steps and its unfinished child jobs (recursively). Cancelling a cancelled job changes nothing (already_cancelled). Clients: jobs of their own tenant.';

-- recount_job(job_id) -> boolean: as in 0034; n_waiting counts the steps waiting for children too.
create or replace function ballast.recount_job(p_job_id bigint) returns boolean
language plpgsql volatile
as $fn$
declare
  v_before ballast_private.jobs;
  v_after ballast_private.jobs;
begin
  select * into v_before from ballast_private.jobs where id = p_job_id for no key update;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  update ballast_private.jobs j
     set n_total = c.t, n_final = c.f, n_running = c.ru, n_review = c.rv, n_waiting = c.wa, n_retrying = c.re,
         n_failed = c.fa, n_cancelled = c.ca, n_started = c.st, n_item_bad = c.ib
    from (select count(*)::int as t,
                 count(*) filter (where status in ('succeeded', 'failed', 'cancelled', 'skipped'))::int as f,
                 count(*) filter (where status = 'running')::int as ru,
                 count(*) filter (where status = 'needs_review')::int as rv,
                 count(*) filter (where waiting_for in ('event', 'time', 'children'))::int as wa,
                 count(*) filter (where status = 'retrying')::int as re,
                 count(*) filter (where status = 'failed' and parent_step_id is null)::int as fa,
                 count(*) filter (where status = 'cancelled' and parent_step_id is null)::int as ca,
                 count(*) filter (where attempts > 0)::int as st,
                 count(*) filter (where status in ('failed', 'cancelled', 'skipped') and parent_step_id is not null)::int as ib
            from ballast_private.steps where job_id = p_job_id) c
   where j.id = p_job_id
  returning j.* into v_after;
  return (v_before.n_total, v_before.n_final, v_before.n_running, v_before.n_review, v_before.n_waiting,
          v_before.n_retrying, v_before.n_failed, v_before.n_cancelled, v_before.n_started, v_before.n_item_bad)
         is distinct from
         (v_after.n_total, v_after.n_final, v_after.n_running, v_after.n_review, v_after.n_waiting,
          v_after.n_retrying, v_after.n_failed, v_after.n_cancelled, v_after.n_started, v_after.n_item_bad);
end
$fn$;

-- The public views show the links: jobs.parent_job_id / parent_step_id (GraphQL: parentJob, parentStep, childJobs),
-- appended as the views' last columns (CREATE OR REPLACE VIEW keeps grants, triggers and comments).
create or replace view ballast.jobs with (security_invoker = true) as
 select jobs.id, jobs.tenant_id, jobs.pipeline, jobs.pipeline_version, jobs.idempotency_key, jobs.input, jobs.status,
        jobs.priority, jobs.result, jobs.error, jobs.created_at, jobs.started_at, jobs.finished_at, jobs.updated_at,
        jobs.input_tokens, jobs.output_tokens, jobs.cost_usd, jobs.pruned_at, jobs.parent_job_id, jobs.parent_step_id
   from ballast_private.jobs;
comment on column ballast.jobs.parent_job_id is 'The job whose step started this one as a child job (ctx.startChildren); null for a job submitted otherwise.';
comment on column ballast.jobs.parent_step_id is 'The step that started this job as a child job; null for a job submitted otherwise.';
comment on column ballast.steps.waiting_for is 'What a waiting step waits for: event (the key in waitKey), time (a sleep until waitDeadline), children (its child jobs) or items (a map step, for its items to finish). Null unless it is waiting.';

-- Down Migration
