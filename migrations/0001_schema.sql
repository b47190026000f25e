-- Up Migration
--
-- 0001: the tables of ballast and the rules that protect them.
--
-- Map. Two schemas:
--   ballast_private  the tables (pipelines, jobs, steps, attempts, effects, signals, events, workers) and the lookup
--                    tables that drive the state machines (job_transitions, step_transitions) and the error catalogue.
--                    Nothing outside ballast's own SQL functions should write here.
--   ballast          the public surface: the clock (ballast.now), the functions every client calls (submit_job,
--                    claim_step, complete_step, fail_step, ...) and read-only views (0006). GraphQL, psql users and
--                    other systems see only this schema.
-- Lifecycle. A pipeline version is registered once (its definition hash is then fixed). A job is submitted against
-- the newest (or a named) version and pinned to it; its steps are created with it, roots `queued`, the rest
-- `pending`. Each claim of a step opens an attempt (with a lease); completing the attempt marks the step `succeeded`
-- and queues the dependants whose dependencies are all done; failing it either schedules a retry (`retrying`) or
-- fails the step for good, skipping its dependants. The job's status is derived from its steps' statuses in the same
-- transaction. Every status change of a job or step appends an event (append-only) and NOTIFYs `ballast_events`.
--
-- Forward-only: later changes are new numbered files.

create schema if not exists ballast_private;
create schema if not exists ballast;

comment on schema ballast is 'ballast public surface: functions and views. Tables live in ballast_private.';
comment on schema ballast_private is 'ballast internal tables: write only through the functions in schema ballast.';

-- ballast.now(): the clock every ballast function reads.
-- Takes nothing; returns the setting `ballast.now` when a session (a test, an operator rehearsing a schedule) has set
-- it, else clock_timestamp(). clock_timestamp rather than now(): leases and latencies must not be frozen at the start
-- of a long transaction. Volatile for that reason.
create function ballast.now() returns timestamptz
language sql volatile parallel safe
as $fn$
  select coalesce(nullif(current_setting('ballast.now', true), '')::timestamptz, clock_timestamp())
$fn$;

-- The catalogue of ballast's own SQLSTATEs (class BA). The TypeScript error mapping (src/errors.ts) and the GraphQL
-- error codes read the same names.
create table ballast_private.error_codes (
  sqlstate text primary key check (sqlstate ~ '^BA[0-9]{3}$'),
  name text not null unique check (name ~ '^[a-z_]+$'),
  meaning text not null
);

insert into ballast_private.error_codes (sqlstate, name, meaning) values
  ('BA001', 'invalid_transition', 'A job or step status change that the state machine does not allow.'),
  ('BA002', 'invalid_input', 'A job input (or another argument) does not satisfy its contract; the detail lists every problem by path.'),
  ('BA003', 'idempotency_conflict', 'The idempotency key was already used for a different request.'),
  ('BA004', 'unknown_pipeline', 'No pipeline (or pipeline version) with that name is registered.'),
  ('BA005', 'pipeline_version_conflict', 'The pipeline name and version are already registered with a different definition.'),
  ('BA006', 'invalid_pipeline', 'A pipeline definition is malformed (unknown dependency, cycle, bad name or number).'),
  ('BA007', 'not_found', 'The job, step, attempt or worker named does not exist.'),
  ('BA008', 'stale_attempt', 'The attempt is no longer the running attempt of its step; its result was not recorded.'),
  ('BA009', 'read_only', 'The relation is read-only; use the ballast functions to change it.'),
  ('BA010', 'job_finished', 'The job already finished (completed, failed or partially completed); it cannot be cancelled.'),
  ('BA011', 'step_busy', 'The step is not finished (queued, running, retrying, waiting or in review); it cannot be replayed now.');

create table ballast_private.pipelines (
  name text not null
    constraint pipeline_name_format check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  version integer not null
    constraint pipeline_version_positive check (version >= 1),
  -- {"steps": [{"name", "depends_on", "max_attempts", "backoff_base_ms", "backoff_cap_ms", "timeout_ms",
  --             "concurrency": {"key", "limit"} | null}]}; validated by ballast.register_pipeline.
  definition jsonb not null
    constraint pipeline_definition_object check (jsonb_typeof(definition) = 'object'),
  -- JSON Schema (draft 2020-12) of the job input, exported from the pipeline's zod contract.
  input_schema jsonb not null
    constraint pipeline_input_schema_shape check (jsonb_typeof(input_schema) in ('object', 'boolean')),
  definition_hash text not null
    constraint pipeline_hash_format check (definition_hash ~ '^[0-9a-f]{64}$'),
  registered_at timestamptz not null default ballast.now(),
  primary key (name, version)
);

create table ballast_private.jobs (
  id bigint generated always as identity primary key,
  tenant_id text not null default 'default'
    constraint job_tenant_format check (tenant_id <> '' and length(tenant_id) <= 200),
  pipeline text not null,
  pipeline_version integer not null,
  idempotency_key text
    constraint job_idempotency_key_format check (idempotency_key <> '' and length(idempotency_key) <= 500),
  -- sha256 of the request (pipeline, requested version, input): same key + another hash is a conflict.
  request_hash text not null,
  input jsonb not null,
  status text not null default 'queued'
    constraint job_status_known check (status in ('queued', 'running', 'waiting', 'retrying', 'needs_review',
                                                 'completed', 'partially_completed', 'failed', 'cancelled')),
  -- Lower runs first, as in graphile-worker and Oban.
  priority smallint not null default 0
    constraint job_priority_range check (priority between -1000 and 1000),
  result jsonb,
  error jsonb,
  created_at timestamptz not null default ballast.now(),
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default ballast.now(),
  constraint job_pipeline_fk foreign key (pipeline, pipeline_version) references ballast_private.pipelines (name, version),
  constraint job_finished_when_terminal check (
    (status in ('completed', 'partially_completed', 'failed', 'cancelled')) = (finished_at is not null)),
  constraint job_idempotency_unique unique (tenant_id, idempotency_key)
);

-- Live jobs only: the hot path never scans finished history.
create index jobs_live_idx on ballast_private.jobs (status, created_at)
  where status not in ('completed', 'partially_completed', 'failed', 'cancelled');
create index jobs_tenant_created_idx on ballast_private.jobs (tenant_id, created_at desc);
create index jobs_pipeline_created_idx on ballast_private.jobs (pipeline, created_at desc);

create table ballast_private.steps (
  id bigint generated always as identity primary key,
  job_id bigint not null references ballast_private.jobs (id) on delete cascade,
  name text not null
    constraint step_name_format check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  status text not null
    constraint step_status_known check (status in ('pending', 'queued', 'running', 'retrying', 'waiting',
                                                   'needs_review', 'succeeded', 'failed', 'cancelled', 'skipped')),
  depends_on text[] not null default '{}',
  -- Dependencies not yet succeeded; the step is queued when it reaches 0. Kept as a counter so completing a step
  -- touches only its direct dependants instead of re-reading every sibling.
  deps_remaining integer not null
    constraint step_deps_remaining_range check (deps_remaining >= 0),
  attempts integer not null default 0
    constraint step_attempts_nonnegative check (attempts >= 0),
  max_attempts integer not null
    constraint step_max_attempts_range check (max_attempts between 1 and 1000),
  backoff_base_ms integer not null
    constraint step_backoff_base_range check (backoff_base_ms between 0 and 86400000),
  backoff_cap_ms integer not null
    constraint step_backoff_cap_range check (backoff_cap_ms between 0 and 604800000),
  timeout_ms integer
    constraint step_timeout_positive check (timeout_ms > 0),
  -- Concurrency group: at most concurrency_limit steps with the same key run at once (checked at claim).
  concurrency_key text,
  concurrency_limit integer
    constraint step_concurrency_limit_positive check (concurrency_limit >= 1),
  output jsonb,
  error jsonb,
  progress jsonb,
  next_run_at timestamptz,
  created_at timestamptz not null default ballast.now(),
  queued_at timestamptz,
  started_at timestamptz,
  finished_at timestamptz,
  updated_at timestamptz not null default ballast.now(),
  -- attempts counts every claim; attempt_offset counts the claims that are not charged against max_attempts
  -- (released at shutdown, parked waiting for an event, or made before a replay). The retry decision uses
  -- attempts - attempt_offset.
  attempt_offset integer not null default 0,
  -- A waiting step: the signal it waits for (ballast.wait_for_event; a map step waits for its items under
  -- 'ballast:items:<id>'), its deadline (null: none), and what the deadline does: 'fail' the step or 'retry' it.
  wait_key text,
  wait_deadline timestamptz,
  wait_on_timeout text
    constraint step_wait_on_timeout_known check (wait_on_timeout in ('fail', 'retry')),
  -- An item of a map step (0008): the map step it belongs to, its index in the items, and the item itself.
  parent_step_id bigint references ballast_private.steps (id) on delete cascade,
  item_index integer
    constraint step_item_index_range check (item_index >= 0),
  item jsonb,
  constraint step_name_unique unique (job_id, name),
  constraint step_concurrency_pair check ((concurrency_key is null) = (concurrency_limit is null)),
  constraint step_attempts_within_max check (attempts - attempt_offset <= max_attempts),
  constraint step_attempt_offset_range check (attempt_offset >= 0 and attempt_offset <= attempts),
  constraint step_ready_when_no_deps check (status <> 'pending' or deps_remaining > 0),
  constraint step_retry_has_time check (status <> 'retrying' or next_run_at is not null),
  constraint step_waiting_has_key check (status <> 'waiting' or wait_key is not null),
  constraint step_item_pair check ((parent_step_id is null) = (item_index is null))
);

-- Counting running steps of a concurrency group at claim time.
create index steps_running_concurrency_idx on ballast_private.steps (concurrency_key)
  where status = 'running' and concurrency_key is not null;
-- Finding the next throttled step of a group to wake when a slot frees up.
create index steps_queued_concurrency_idx on ballast_private.steps (concurrency_key, id)
  where status = 'queued' and concurrency_key is not null;
create index steps_live_idx on ballast_private.steps (status, next_run_at)
  where status in ('queued', 'running', 'retrying', 'waiting', 'needs_review');
create index steps_failed_idx on ballast_private.steps (finished_at desc) where status = 'failed';
-- send_event finds the steps waiting for its key; the reaper finds waits past their deadline.
create index steps_waiting_key_idx on ballast_private.steps (wait_key) where status = 'waiting';
create index steps_waiting_deadline_idx on ballast_private.steps (wait_deadline) where status = 'waiting';
-- The items of a map step, in order.
create index steps_parent_idx on ballast_private.steps (parent_step_id, item_index) where parent_step_id is not null;

create table ballast_private.workers (
  id text primary key
    constraint worker_id_format check (id <> '' and length(id) <= 200),
  -- graphile-worker pool id (locked_by of the jobs this process holds); known once its pool has started.
  pool_id text,
  hostname text not null,
  pid integer not null,
  concurrency integer not null
    constraint worker_concurrency_positive check (concurrency >= 1),
  pipelines text[] not null default '{}',
  started_at timestamptz not null default ballast.now(),
  heartbeat_at timestamptz not null default ballast.now(),
  stopped_at timestamptz
);

create table ballast_private.attempts (
  id bigint generated always as identity primary key,
  step_id bigint not null references ballast_private.steps (id) on delete cascade,
  job_id bigint not null references ballast_private.jobs (id) on delete cascade,
  number integer not null
    constraint attempt_number_positive check (number >= 1),
  worker_id text references ballast_private.workers (id) on delete set null,
  -- crashed / timed_out: reclaimed by ballast.reap (worker gone, lease expired, timeout not enforced); released:
  -- given back at shutdown; parked: the step went waiting for an event (ballast.wait_for_event).
  outcome text not null default 'running'
    constraint attempt_outcome_known check (outcome in ('running', 'succeeded', 'failed', 'crashed', 'timed_out',
                                                       'cancelled', 'released', 'parked')),
  started_at timestamptz not null default ballast.now(),
  lease_expires_at timestamptz not null,
  finished_at timestamptz,
  error_class text,
  error_code text,
  error_message text,
  error_retryable boolean,
  constraint attempt_number_unique unique (step_id, number),
  constraint attempt_finished_when_done check ((outcome = 'running') = (finished_at is null)),
  constraint attempt_error_when_failed check (
    outcome in ('running', 'succeeded', 'parked') or (error_class is not null and error_message is not null))
);

create index attempts_running_lease_idx on ballast_private.attempts (lease_expires_at) where outcome = 'running';

-- The side-effect ledger: effect(key, fn) in a step stores its result here so a retried attempt reuses it.
create table ballast_private.effects (
  step_id bigint not null references ballast_private.steps (id) on delete cascade,
  key text not null
    constraint effect_key_format check (key <> '' and length(key) <= 500),
  attempt_id bigint not null references ballast_private.attempts (id) on delete cascade,
  result jsonb,
  created_at timestamptz not null default ballast.now(),
  primary key (step_id, key)
);

-- Signals received by ballast.send_event, keyed: a second send of the same key is a no-op. A step that starts
-- waiting for a key already received gets the payload at once.
create table ballast_private.signals (
  key text primary key
    constraint signal_key_format check (key <> '' and length(key) <= 500),
  payload jsonb,
  actor text not null default 'system',
  received_at timestamptz not null default ballast.now()
);

-- Append-only audit trail. No foreign keys with cascade: an event outlives nothing it describes being deleted
-- quietly; deleting a job that has events is refused by the foreign key.
create table ballast_private.events (
  id bigint generated always as identity primary key,
  job_id bigint not null references ballast_private.jobs (id),
  step_id bigint references ballast_private.steps (id),
  attempt_id bigint references ballast_private.attempts (id),
  type text not null
    constraint event_type_format check (type ~ '^[a-z][a-z_]*$'),
  status text,
  actor text not null default 'system',
  reason text,
  data jsonb,
  at timestamptz not null default ballast.now()
);

create index events_job_idx on ballast_private.events (job_id, id);

-- The state machines as data: a status change not listed here is refused (BA001) by the triggers in 0003. Edges
-- with via_replay (a finished step or job running again) are allowed only inside ballast.replay_step / replay_job
-- (0007), which set the transaction-local setting ballast.replay = on.
create table ballast_private.job_transitions (
  from_status text not null,
  to_status text not null,
  via_replay boolean not null default false,
  primary key (from_status, to_status)
);

create table ballast_private.step_transitions (
  from_status text not null,
  to_status text not null,
  why text not null,
  via_replay boolean not null default false,
  primary key (from_status, to_status)
);

insert into ballast_private.step_transitions (from_status, to_status, why) values
  ('pending', 'queued', 'all dependencies succeeded'),
  ('pending', 'skipped', 'a dependency failed or was skipped'),
  ('pending', 'cancelled', 'the job was cancelled'),
  ('queued', 'running', 'a worker claimed it'),
  ('queued', 'cancelled', 'the job was cancelled'),
  ('running', 'succeeded', 'the attempt returned output that passed the contract'),
  ('running', 'retrying', 'the attempt failed with a retryable error and attempts remain'),
  ('running', 'failed', 'the attempt failed permanently, or attempts are exhausted (dead letter)'),
  ('running', 'waiting', 'the step parked itself until an external event or a deadline'),
  ('running', 'needs_review', 'the step asked for a human decision'),
  ('running', 'cancelled', 'the job was cancelled while the step ran'),
  ('retrying', 'queued', 'the retry is due'),
  ('retrying', 'cancelled', 'the job was cancelled'),
  ('waiting', 'queued', 'the awaited event arrived'),
  ('waiting', 'failed', 'the deadline passed'),
  ('waiting', 'cancelled', 'the job was cancelled'),
  ('needs_review', 'succeeded', 'a reviewer accepted or edited the output'),
  ('needs_review', 'failed', 'a reviewer rejected the output'),
  ('needs_review', 'cancelled', 'the job was cancelled');

-- Replay edges (via_replay), a deadline that runs the step again, and the edges of map steps (0008): a map step
-- waits for its items and succeeds when they are done; replaying one of its items makes it wait again.
insert into ballast_private.step_transitions (from_status, to_status, why, via_replay) values
  ('succeeded', 'queued', 'an operator replayed it', true),
  ('failed', 'queued', 'an operator replayed it', true),
  ('cancelled', 'queued', 'an operator replayed it', true),
  ('succeeded', 'pending', 'a step it depends on was replayed', true),
  ('failed', 'pending', 'a step it depends on was replayed', true),
  ('cancelled', 'pending', 'a step it depends on was replayed', true),
  ('skipped', 'pending', 'a step it depends on was replayed', true),
  ('waiting', 'retrying', 'the deadline passed and the step retries', false),
  ('waiting', 'succeeded', 'every item of a map step finished and the outcome is acceptable', false),
  ('succeeded', 'waiting', 'an item of this map step was replayed', true),
  ('failed', 'waiting', 'an item of this map step was replayed', true),
  ('cancelled', 'waiting', 'an item of this map step was replayed', true);

-- Job statuses are derived from step statuses; a live job may move between any two live statuses, and to any
-- terminal one. Terminal statuses are final, except through an audited replay (the via_replay edges below).
insert into ballast_private.job_transitions (from_status, to_status)
select f, t
from unnest(array['queued', 'running', 'waiting', 'retrying', 'needs_review']) as f,
     unnest(array['queued', 'running', 'waiting', 'retrying', 'needs_review',
                  'completed', 'partially_completed', 'failed', 'cancelled']) as t
where f <> t and t <> 'queued';

insert into ballast_private.job_transitions (from_status, to_status, via_replay)
select f, t, true
  from unnest(array['completed', 'partially_completed', 'failed', 'cancelled']) as f,
       unnest(array['running', 'queued']) as t;
