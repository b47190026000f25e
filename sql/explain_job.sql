-- explain_job.sql: everything Postgres knows about one job, in time order: the job, its steps, then one timeline of
-- its events, attempts (start and end) and model calls. Read-only; any role that can see the job (a client sees its
-- own tenant's jobs only).
--
-- Variables:
--   job_id   the job's id (required)
--
-- Example:
--   psql "$DATABASE_URL" -v job_id=42 -f sql/explain_job.sql
\set ON_ERROR_STOP on
\pset null '-'

\if :{?job_id}
\else
  \warn 'explain_job.sql: set job_id, e.g. psql -v job_id=42 -f sql/explain_job.sql'
  do $$ begin raise exception 'missing psql variable job_id'; end $$;
\endif

select count(*) = 1 as job_found from ballast.jobs where id = :'job_id'::bigint \gset
\if :job_found
\else
  \warn 'explain_job.sql: job' :job_id 'does not exist (or this role may not see it)'
  do $$ begin raise exception 'job not found'; end $$;
\endif

\echo
\echo '== job' :job_id
\x on
select j.id, j.tenant_id, j.pipeline || '@' || j.pipeline_version as pipeline, j.status, j.priority,
       j.idempotency_key, j.created_at, j.started_at, j.finished_at, j.finished_at - j.created_at as duration,
       j.cost_usd, j.input_tokens, j.output_tokens, j.pruned_at, j.error, j.input, j.result
  from ballast.jobs j where j.id = :'job_id'::bigint;
\x off

\echo '== steps'
select s.id, s.name, s.status, s.attempts || '/' || s.max_attempts as attempts, s.depends_on, s.queued_at,
       s.started_at, s.finished_at, s.error ->> 'class' as error_class, s.error ->> 'message' as error_message,
       s.wait_key, s.wait_deadline, s.next_run_at, s.cost_usd
  from ballast.steps s where s.job_id = :'job_id'::bigint
 order by s.id;

\echo '== timeline (events, attempts, model calls)'
select t.at, t.step, t.what, t.detail
  from (
    select e.at, 0 as ord, e.id as seq, s.name as step,
           'event ' || e.type || coalesce(' -> ' || e.status, '') as what,
           concat_ws('; ', 'actor ' || e.actor, 'reason: ' || e.reason, e.data::text) as detail
      from ballast.events e left join ballast.steps s on s.id = e.step_id
     where e.job_id = :'job_id'::bigint
    union all
    select a.started_at, 1, a.id, s.name, 'attempt ' || a.number || ' started',
           concat_ws('; ', 'worker ' || a.worker_id, 'lease until ' || a.lease_expires_at)
      from ballast.attempts a join ballast.steps s on s.id = a.step_id
     where a.job_id = :'job_id'::bigint
    union all
    select c.started_at, 2, c.id, s.name, 'model call ' || c.rung || ' ' || c.provider || ':' || c.requested_model,
           concat_ws('; ', round(c.latency_ms) || ' ms', 'tokens ' || c.input_tokens || '/' || c.output_tokens,
                     'cost ' || c.cost_usd, 'error ' || c.error_class || coalesce(': ' || c.error_message, ''), 'score ' || c.score,
                     'prompt ' || c.prompt_name || '@' || c.prompt_version)
      from ballast.model_calls c join ballast.steps s on s.id = c.step_id
     where c.job_id = :'job_id'::bigint
    union all
    select a.finished_at, 3, a.id, s.name, 'attempt ' || a.number || ' ' || a.outcome,
           concat_ws('; ', round(a.duration_ms) || ' ms', 'error ' || a.error_class || coalesce(': ' || a.error_message, ''),
                     'contract ' || a.contract_outcome, 'model ' || a.model, 'cost ' || nullif(a.cost_usd, 0))
      from ballast.attempts a join ballast.steps s on s.id = a.step_id
     where a.job_id = :'job_id'::bigint and a.finished_at is not null
  ) t
 order by t.at, t.ord, t.seq;
