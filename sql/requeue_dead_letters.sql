-- requeue_dead_letters.sql: replays the dead letters that match the filters (ballast.replay_dead_letters), oldest
-- failure first, each audited as a step_replayed event with the reason and actor, all in one transaction: if one
-- cannot be replayed, none is. Prints what it replayed. Map steps are left out (their failed items are replayed),
-- and so are pruned jobs. Operators only.
--
-- Variables:
--   reason       why they run again (required)
--   pipeline     only this pipeline (optional)
--   error_class  only this error class (optional)
--   step         only this step name (optional)
--   since        failed within (optional; default '7 days')
--   limit        at most this many (optional; default 100)
--   dry_run      1: list what would be replayed and change nothing (optional; default 0)
--   actor        who is replaying (optional; default psql:<database user>)
--
-- Examples:
--   psql "$DATABASE_URL" -v pipeline=demo.triage -v error_class=transport -v since='6 hours' \
--        -v reason='provider outage over' -v dry_run=1 -f sql/requeue_dead_letters.sql
--   psql "$DATABASE_URL" -v pipeline=demo.triage -v error_class=transport -v since='6 hours' \
--        -v reason='provider outage over' -f sql/requeue_dead_letters.sql
\set ON_ERROR_STOP on
\pset null '-'
\if :{?reason}
\else
  \warn 'requeue_dead_letters.sql: set reason (it goes into the audit trail), e.g. -v reason=''provider outage over'''
  do $$ begin raise exception 'missing psql variable reason'; end $$;
\endif
\if :{?pipeline}
\else
  \set pipeline ''
\endif
\if :{?error_class}
\else
  \set error_class ''
\endif
\if :{?step}
\else
  \set step ''
\endif
\if :{?since}
\else
  \set since '7 days'
\endif
\if :{?limit}
\else
  \set limit 100
\endif
\if :{?dry_run}
\else
  \set dry_run 0
\endif
\if :{?actor}
\else
  \set actor 'psql:' :USER
\endif

\if :dry_run
  \echo '== dry run: these would be replayed (nothing changed)'
\else
  \echo '== replayed'
\endif
select r.job_id, r.step_id, r.pipeline, r.step_name, r.error_class, r.failed_at, r.replayed,
       r.replayed_step_ids, r.job_status
  from ballast.replay_dead_letters(
         p_reason => :'reason', p_pipeline => nullif(:'pipeline', ''), p_error_class => nullif(:'error_class', ''),
         p_since => :'since'::interval, p_step_name => nullif(:'step', ''), p_limit => :'limit'::int,
         p_dry_run => :'dry_run'::boolean, p_actor => :'actor') r;
