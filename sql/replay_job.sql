-- replay_job.sql: runs a finished job's failed or cancelled steps again (or, with from_step, that step and every step
-- after it, even if it succeeded), reusing the outputs upstream; audited as step_replayed events with the reason and
-- actor. One transaction (ballast.replay_job). Operators only.
--
-- Variables:
--   job_id     the job's id (required)
--   reason     why it runs again; kept in the audit trail (required)
--   from_step  a step name: replay it and what depends on it (optional; default: the failed and cancelled steps)
--   actor      who is replaying (optional; default psql:<database user>)
--
-- Examples:
--   psql "$DATABASE_URL" -v job_id=42 -v reason='provider outage over' -f sql/replay_job.sql
--   psql "$DATABASE_URL" -v job_id=42 -v reason='template fixed' -v from_step=report -f sql/replay_job.sql
\set ON_ERROR_STOP on
\pset null '-'

\if :{?job_id}
\else
  \warn 'replay_job.sql: set job_id and reason, e.g. psql -v job_id=42 -v reason=''outage over'' -f sql/replay_job.sql'
  do $$ begin raise exception 'missing psql variable job_id'; end $$;
\endif
\if :{?reason}
\else
  \warn 'replay_job.sql: set reason (it goes into the audit trail), e.g. -v reason=''outage over'''
  do $$ begin raise exception 'missing psql variable reason'; end $$;
\endif
\if :{?from_step}
\else
  \set from_step ''
\endif
\if :{?actor}
\else
  \set actor 'psql:' :USER
\endif

\echo '== replayed'
select r.job_id, r.replayed_step_ids, r.job_status
  from ballast.replay_job(:'job_id'::bigint, nullif(:'from_step', ''), :'reason', :'actor') r;

\echo '== steps now'
select s.id, s.name, s.status, s.attempts || '/' || s.max_attempts as attempts
  from ballast.steps s where s.job_id = :'job_id'::bigint
 order by s.id;
