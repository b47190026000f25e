-- Up Migration
--
-- 0018: an index of the pending steps of each job, so that finding a finished step's dependants costs what the job
-- has pending, not what the job has (issue 11: a map step's items/s must not fall with its number of items).
--
-- Why. ballast.settle_steps (0013) looks for the dependants of the steps it just marked succeeded with
--   join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on) where d2.status = 'pending'
-- twice per batch (to lock them, then to update them), and queue_dependants and settle_failure look for them the
-- same way. No index served "pending steps of this job": Postgres read every step of the job, through
-- step_name_unique (job_id, name) or a sequential scan. For a job of 3 steps that is nothing; for a map step every
-- settled batch of items read all the job's item steps, so a map of n items cost O(n^2 / batch): measured by
-- `npm run bench -- --only map`, 10,000 items ran at 0.6-0.7 x the items/s of 1,000 items (561 against 837 items/s),
-- and EXPLAIN ANALYZE of the lookup for 20 finished items of a 10,001-step job read all 10,001 rows (2.2 ms) where
-- this index reads one page (0.07 ms). With the index (tried first with the bench's --template-sql): 1,020 items/s
-- at 10,000 items, 787 at 1,000.
--
-- What. A partial index on job_id of the steps that are pending (waiting for dependencies): a job's pending steps
-- are few (the steps after the running ones), and a step leaves the index when it is queued. No function changes:
-- the planner uses it for the lookups above (the generic plans of the PL/pgSQL functions included).
--
-- Cost. One more index entry per step created pending (steps with dependencies), removed when it is queued; those
-- status updates are not HOT already (steps_live_idx's predicate reads status). Building it reads the steps table
-- once (not concurrently: migrations run in a transaction); it holds only the pending rows.

create index steps_pending_idx on ballast_private.steps (job_id) where status = 'pending';
comment on index ballast_private.steps_pending_idx is
  'The pending steps of a job: finding the dependants of finished steps reads what the job has pending, not all its steps (map steps of many items).';
