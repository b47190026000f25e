-- Up Migration
--
-- Baseline, file 2 of 11: the tables of ballast_private and the rules that protect them (checks, keys, indexes,
-- row-level security), then the rows ballast ships: the error catalogue (SQLSTATE class BA) and the transitions of
-- the job and step state machines.
--
-- Row-level security: a table a tenant may read has a policy tenant_rows that shows the rows of the caller's tenant
-- (ballast_private.caller_tenant, 0001_foundations) unless the caller is unrestricted (an operator, a reporter or the
-- owner). The views of 0010_public_views are security_invoker, so the policies apply to whoever reads them; workers
-- and migrations run as the owner. Some key checks are NOT VALID: they were added after rows existed (old 0029) and
-- are kept that way so that this baseline gives the same catalogs as the migrations it folds.
-- Folded from the old 0001, 0009, 0010, 0012, 0013, 0016, 0017, 0018, 0020, 0022, 0024, 0025, 0028 and 0029.

-- The catalogue of ballast's own SQLSTATEs (class BA). The TypeScript error mapping (src/errors.ts) and the GraphQL
-- error codes read the same names.
create table ballast_private.error_codes (
  sqlstate text not null,
  name text not null,
  meaning text not null,
  constraint error_codes_name_key unique (name),
  constraint error_codes_pkey primary key (sqlstate),
  constraint error_codes_name_check check ((name ~ '^[a-z_]+$'::text)),
  constraint error_codes_sqlstate_check check ((sqlstate ~ '^BA[0-9]{3}$'::text))
);
grant select on ballast_private.error_codes to ballast_client, ballast_operator, ballast_reporter;

-- A pipeline version: its definition (steps, dependencies, retry, timeouts, concurrency, map and model settings) and
-- input contract, registered once by ballast.register_pipeline and fixed by its hash; jobs are pinned to one.
create table ballast_private.pipelines (
  name text not null,
  version integer not null,
  -- {"steps": [{"name", "depends_on", "max_attempts", "backoff_base_ms", "backoff_cap_ms", "timeout_ms",
  --             "concurrency": {"key", "limit"} | null}]}; validated by ballast.register_pipeline.
  definition jsonb not null,
  -- JSON Schema (draft 2020-12) of the job input, exported from the pipeline's zod contract.
  input_schema jsonb not null,
  definition_hash text not null,
  registered_at timestamp with time zone default ballast.now() not null,
  constraint pipelines_pkey primary key (name, version),
  constraint pipeline_definition_object check (jsonb_typeof(definition) = 'object'),
  constraint pipeline_hash_format check (definition_hash ~ '^[0-9a-f]{64}$'),
  constraint pipeline_input_schema_shape check (jsonb_typeof(input_schema) in ('object', 'boolean')),
  constraint pipeline_max_input_bytes check (definition -> 'max_input_bytes' is null or (jsonb_typeof(definition -> 'max_input_bytes') = 'number' and (definition ->> 'max_input_bytes')::numeric between 1 and 67108864 and (definition ->> 'max_input_bytes')::numeric % 1 = 0)),
  constraint pipeline_name_format check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  constraint pipeline_version_positive check (version >= 1)
);
grant select on ballast_private.pipelines to ballast_client, ballast_operator, ballast_reporter;

-- A submitted job: its pipeline version, tenant, input and idempotency key; status, result and error derived from
-- its steps (the n_* counters, kept by the triggers of 0004_state_machines); tokens and cost summed from its model
-- calls; pruned_at once retention cleared its payloads.
create table ballast_private.jobs (
  id bigint generated always as identity not null,
  tenant_id text default 'default'::text not null,
  pipeline text not null,
  pipeline_version integer not null,
  idempotency_key text,
  -- sha256 of the request (pipeline, requested version, input): same key + another hash is a conflict.
  request_hash text not null,
  input jsonb not null,
  status text default 'queued'::text not null,
  -- Lower runs first, as in graphile-worker and Oban.
  priority smallint default 0 not null,
  result jsonb,
  error jsonb,
  created_at timestamp with time zone default ballast.now() not null,
  started_at timestamp with time zone,
  finished_at timestamp with time zone,
  updated_at timestamp with time zone default ballast.now() not null,
  input_tokens bigint default 0 not null,
  output_tokens bigint default 0 not null,
  cost_usd numeric(14,8) default 0 not null,
  pruned_at timestamp with time zone,
  n_total integer default 0 not null,
  n_final integer default 0 not null,
  n_running integer default 0 not null,
  n_review integer default 0 not null,
  n_waiting integer default 0 not null,
  n_retrying integer default 0 not null,
  n_failed integer default 0 not null,
  n_cancelled integer default 0 not null,
  n_started integer default 0 not null,
  n_item_bad integer default 0 not null,
  constraint job_idempotency_unique unique (tenant_id, idempotency_key),
  constraint jobs_pkey primary key (id),
  constraint job_pipeline_fk foreign key (pipeline, pipeline_version) references ballast_private.pipelines (name, version),
  constraint job_finished_when_terminal check ((status in ('completed', 'partially_completed', 'failed', 'cancelled')) = (finished_at is not null)),
  constraint job_priority_range check (priority between -1000 and 1000),
  constraint job_status_known check (status in ('queued', 'running', 'waiting', 'retrying', 'needs_review', 'completed', 'partially_completed', 'failed', 'cancelled'))
) with (fillfactor = 70);
alter table ballast_private.jobs add constraint job_idempotency_key_format check (idempotency_key <> '' and octet_length(idempotency_key) <= 500) not valid;
alter table ballast_private.jobs add constraint job_tenant_format check (tenant_id <> '' and octet_length(tenant_id) <= 200) not valid;
-- The reports select the jobs submitted in a window, across pipelines and tenants: jobs_pipeline_created_idx and
-- jobs_tenant_created_idx lead with another column, so a range on created_at alone could only scan one of them
-- whole (Postgres 15 has no skip scan): on 800,000 jobs of one pipeline, report_pipelines('1 hour') took 21 ms
-- that way and 7 ms with this index; with many pipelines or tenants the difference grows with the history.
create index jobs_created_idx on ballast_private.jobs (created_at);
-- Live jobs only: the hot path never scans finished history.
create index jobs_live_idx on ballast_private.jobs (status, created_at)
  where status not in ('completed', 'partially_completed', 'failed', 'cancelled');
create index jobs_pipeline_created_idx on ballast_private.jobs (pipeline, created_at desc);
-- The jobs retention may prune: finished and not pruned yet. Partial, so it holds only the finished jobs younger than
-- the retention period plus the backlog; prune_history reads it oldest first and stops after one batch.
create index jobs_prunable_idx on ballast_private.jobs (finished_at) where pruned_at is null and finished_at is not null;
create index jobs_tenant_created_idx on ballast_private.jobs (tenant_id, created_at desc);
alter table ballast_private.jobs enable row level security;
create policy tenant_rows on ballast_private.jobs for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.jobs to ballast_client, ballast_operator, ballast_reporter;
comment on column ballast_private.jobs.n_total is 'Counters of the job''s steps by status (n_*), kept by the statement triggers of 0013; the job status is derived from them.';

-- A step of a job, and the queue: a step is runnable when `queued`, or `retrying` with next_run_at due
-- (ballast.claim_steps). Items of a map step are steps too (parent_step_id, item_index, item).
create table ballast_private.steps (
  id bigint generated always as identity not null,
  job_id bigint not null,
  name text not null,
  status text not null,
  depends_on text[] default '{}'::text[] not null,
  -- Dependencies not yet succeeded; the step is queued when it reaches 0. Kept as a counter so completing a step
  -- touches only its direct dependants instead of re-reading every sibling.
  deps_remaining integer not null,
  attempts integer default 0 not null,
  max_attempts integer not null,
  backoff_base_ms integer not null,
  backoff_cap_ms integer not null,
  timeout_ms integer,
  -- Concurrency group: at most concurrency_limit steps with the same key run at once (checked at claim).
  concurrency_key text,
  concurrency_limit integer,
  output jsonb,
  error jsonb,
  progress jsonb,
  next_run_at timestamp with time zone,
  created_at timestamp with time zone default ballast.now() not null,
  queued_at timestamp with time zone,
  started_at timestamp with time zone,
  finished_at timestamp with time zone,
  updated_at timestamp with time zone default ballast.now() not null,
  -- attempts counts every claim; attempt_offset counts the claims that are not charged against max_attempts
  -- (released at shutdown, parked waiting for an event, or made before a replay). The retry decision uses
  -- attempts - attempt_offset.
  attempt_offset integer default 0 not null,
  -- A waiting step: the signal it waits for (ballast.wait_for_event; a map step waits for its items under
  -- 'ballast:items:<id>'), its deadline (null: none), and what the deadline does: 'fail' the step or 'retry' it.
  wait_key text,
  wait_deadline timestamp with time zone,
  wait_on_timeout text,
  -- An item of a map step (0006_execution): the map step it belongs to, its index in the items, and the item itself.
  parent_step_id bigint,
  item_index integer,
  item jsonb,
  input_tokens bigint default 0 not null,
  output_tokens bigint default 0 not null,
  cost_usd numeric(14,8) default 0 not null,
  -- A step in needs_review: {"reason", "proposed" (output or null), "detail", "requested_at", "attempt_id"};
  -- after the decision also {"decision", "reviewer", "note", "resolved_at"}.
  review jsonb,
  task text,
  priority smallint default 0 not null,
  items_open integer default 0 not null,
  crashes integer default 0 not null,
  constraint step_name_unique unique (job_id, name),
  constraint steps_pkey primary key (id),
  constraint steps_job_id_fkey foreign key (job_id) references ballast_private.jobs(id) on delete cascade,
  constraint steps_parent_step_id_fkey foreign key (parent_step_id) references ballast_private.steps(id) on delete cascade,
  constraint step_attempt_offset_range check (attempt_offset >= 0 and attempt_offset <= attempts),
  constraint step_attempts_nonnegative check (attempts >= 0),
  constraint step_attempts_within_max check (attempts - attempt_offset <= max_attempts),
  constraint step_backoff_base_range check (backoff_base_ms between 0 and 86400000),
  constraint step_backoff_cap_range check (backoff_cap_ms between 0 and 604800000),
  constraint step_concurrency_limit_positive check (concurrency_limit >= 1),
  constraint step_concurrency_pair check ((concurrency_key is null) = (concurrency_limit is null)),
  constraint step_crashes_nonnegative check (crashes >= 0),
  constraint step_deps_remaining_range check (deps_remaining >= 0),
  constraint step_item_index_range check (item_index >= 0),
  constraint step_item_pair check ((parent_step_id is null) = (item_index is null)),
  constraint step_items_open_nonnegative check (items_open >= 0),
  constraint step_max_attempts_range check (max_attempts between 1 and 1000),
  constraint step_name_format check (name ~ '^[a-z][a-z0-9_]{0,62}$'),
  constraint step_ready_when_no_deps check (status <> 'pending' or deps_remaining > 0),
  constraint step_retry_has_time check (status <> 'retrying' or next_run_at is not null),
  constraint step_status_known check (status in ('pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review', 'succeeded', 'failed', 'cancelled', 'skipped')),
  constraint step_timeout_positive check (timeout_ms > 0),
  constraint step_wait_on_timeout_known check (wait_on_timeout in ('fail', 'retry')),
  constraint step_waiting_has_key check (status <> 'waiting' or wait_key is not null)
);
create index steps_failed_idx on ballast_private.steps (finished_at desc) where status = 'failed';
create index steps_live_idx on ballast_private.steps (status, next_run_at)
  where status in ('queued', 'running', 'retrying', 'waiting', 'needs_review');
-- The items of a map step, in order.
create index steps_parent_idx on ballast_private.steps (parent_step_id, item_index) where parent_step_id is not null;
create index steps_pending_idx on ballast_private.steps (job_id) where status = 'pending';
comment on index ballast_private.steps_pending_idx is 'The pending steps of a job: finding the dependants of finished steps reads what the job has pending, not all its steps (map steps of many items).';
-- Runnable steps outside concurrency groups, in claim order: priority, then steps that already ran (attempts > 0:
-- retries, reclaimed or released steps run before new work of the same priority), then age.
create index steps_queue_idx on ballast_private.steps (priority, (attempts = 0), id)
  where status = 'queued' and concurrency_key is null;
-- Finding the next throttled step of a group to wake when a slot frees up.
create index steps_queued_concurrency_idx on ballast_private.steps (concurrency_key, id)
  where status = 'queued' and concurrency_key is not null;
-- Counting running steps of a concurrency group at claim time.
create index steps_running_concurrency_idx on ballast_private.steps (concurrency_key)
  where status = 'running' and concurrency_key is not null;
create index steps_waiting_deadline_idx on ballast_private.steps (wait_deadline) where status = 'waiting';
-- send_event finds the steps waiting for its key; the reaper finds waits past their deadline.
create index steps_waiting_key_idx on ballast_private.steps (wait_key) where status = 'waiting';
alter table ballast_private.steps enable row level security;
create policy tenant_rows on ballast_private.steps for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
grant select on ballast_private.steps to ballast_client, ballast_operator, ballast_reporter;
comment on column ballast_private.steps.items_open is 'A map step: how many of its items are not final yet (kept by the statement triggers of 0013).';
comment on column ballast_private.steps.crashes is 'Attempts ended by a blocked (blocked_worker) or crashed (crashed_worker) worker; the step is quarantined (failed) at the limit.';

-- A worker process: registered at start, heartbeating while alive, stopped_at once it stopped or was declared dead.
create table ballast_private.workers (
  id text not null,
  -- graphile-worker pool id (locked_by of the jobs this process holds); known once its pool has started.
  pool_id text,
  hostname text not null,
  pid integer not null,
  concurrency integer not null,
  pipelines text[] default '{}'::text[] not null,
  started_at timestamp with time zone default ballast.now() not null,
  heartbeat_at timestamp with time zone default ballast.now() not null,
  stopped_at timestamp with time zone,
  constraint workers_pkey primary key (id),
  constraint worker_concurrency_positive check (concurrency >= 1),
  constraint worker_id_format check (id <> '' and length(id) <= 200)
);
grant select on ballast_private.workers to ballast_operator, ballast_reporter;

-- One claim of a step: who ran it, its lease, its outcome and error, and for model steps the contract outcome,
-- model, tokens and cost.
create table ballast_private.attempts (
  id bigint generated always as identity not null,
  step_id bigint not null,
  job_id bigint not null,
  number integer not null,
  worker_id text,
  -- crashed / timed_out: reclaimed by ballast.reap (worker gone, lease expired, timeout not enforced); released:
  -- given back at shutdown; parked: the step went waiting for an event (ballast.wait_for_event).
  outcome text default 'running'::text not null,
  started_at timestamp with time zone default ballast.now() not null,
  lease_expires_at timestamp with time zone not null,
  finished_at timestamp with time zone,
  error_class text,
  error_code text,
  error_message text,
  error_retryable boolean,
  -- The contract ladder's verdict on this attempt (model steps only).
  contract_outcome text,
  contract_detail jsonb,
  model text,
  prompt_ref text,
  fallback_used boolean,
  quality_score numeric(6,5),
  model_calls integer default 0 not null,
  input_tokens bigint default 0 not null,
  output_tokens bigint default 0 not null,
  cost_usd numeric(14,8) default 0 not null,
  constraint attempt_number_unique unique (step_id, number),
  constraint attempts_pkey primary key (id),
  constraint attempt_contract_outcome_known check (contract_outcome in ('valid_first_try', 'repaired', 'fell_back', 'degraded', 'rejected', 'review')),
  constraint attempt_error_when_failed check (outcome in ('running', 'succeeded', 'parked', 'needs_review') or (error_class is not null and error_message is not null)),
  constraint attempt_finished_when_done check ((outcome = 'running') = (finished_at is null)),
  constraint attempt_number_positive check (number >= 1),
  constraint attempt_outcome_known check (outcome in ('running', 'succeeded', 'failed', 'crashed', 'timed_out', 'cancelled', 'released', 'parked', 'needs_review'))
);
create index attempts_running_lease_idx on ballast_private.attempts (lease_expires_at) where outcome = 'running';
alter table ballast_private.attempts enable row level security;
create policy tenant_rows on ballast_private.attempts for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
grant select on ballast_private.attempts to ballast_client, ballast_operator, ballast_reporter;

-- The side-effect ledger: effect(key, fn) in a step stores its result here so a retried attempt reuses it.
create table ballast_private.effects (
  step_id bigint not null,
  key text not null,
  attempt_id bigint not null,
  result jsonb,
  created_at timestamp with time zone default ballast.now() not null,
  constraint effects_pkey primary key (step_id, key),
  constraint effects_attempt_id_fkey foreign key (attempt_id) references ballast_private.attempts(id) on delete cascade,
  constraint effects_step_id_fkey foreign key (step_id) references ballast_private.steps(id) on delete cascade
);
alter table ballast_private.effects add constraint effect_key_format check (key <> '' and octet_length(key) <= 500) not valid;
alter table ballast_private.effects enable row level security;
create policy tenant_rows on ballast_private.effects for select
  using ((select ballast_private.caller_unrestricted()) or step_id in (select s.id from ballast_private.steps s));
grant select on ballast_private.effects to ballast_client, ballast_operator, ballast_reporter;

-- Signals received by ballast.send_event, keyed: a second send of the same key is a no-op. A step that starts
-- waiting for a key already received gets the payload at once.
create table ballast_private.signals (
  key text not null,
  payload jsonb,
  actor text default 'system'::text not null,
  received_at timestamp with time zone default ballast.now() not null,
  tenant_id text not null,
  constraint signals_pkey primary key (tenant_id, key),
  constraint signal_tenant_format check (tenant_id <> '' and octet_length(tenant_id) <= 200)
);
alter table ballast_private.signals add constraint signal_key_format check (key <> '' and octet_length(key) <= 500) not valid;
alter table ballast_private.signals enable row level security;
create policy tenant_rows on ballast_private.signals for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.signals to ballast_client, ballast_operator, ballast_reporter;

-- Append-only audit trail. No foreign keys with cascade: an event outlives nothing it describes being deleted
-- quietly; deleting a job that has events is refused by the foreign key.
create table ballast_private.events (
  id bigint generated always as identity not null,
  job_id bigint not null,
  step_id bigint,
  attempt_id bigint,
  type text not null,
  status text,
  actor text default 'system'::text not null,
  reason text,
  data jsonb,
  at timestamp with time zone default ballast.now() not null,
  tx xid8 default pg_current_xact_id() not null,
  constraint events_pkey primary key (id),
  constraint event_type_format check (type ~ '^[a-z][a-z_]*$')
);
create index events_job_idx on ballast_private.events (job_id, id);
create index events_tx_idx on ballast_private.events (tx, id);
alter table ballast_private.events enable row level security;
create policy tenant_rows on ballast_private.events for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
grant select on ballast_private.events to ballast_client, ballast_operator, ballast_reporter;
comment on column ballast_private.events.tx is 'The writing transaction (pg_current_xact_id()). Events are delivered in (tx, id) order once tx is below pg_snapshot_xmin(pg_current_snapshot()).';

-- The state machines as data: a status change not listed here is refused (BA001) by the triggers in
-- 0004_state_machines. Edges with via_replay (a finished step or job running again) are allowed only inside
-- ballast.replay_step / replay_job (0008_operator_verbs), which set the transaction-local setting ballast.replay = on.
create table ballast_private.job_transitions (
  from_status text not null,
  to_status text not null,
  via_replay boolean default false not null,
  constraint job_transitions_pkey primary key (from_status, to_status)
);
grant select on ballast_private.job_transitions to ballast_client, ballast_operator, ballast_reporter;

-- The step state machine as data (see job_transitions above): each allowed edge and why it happens.
create table ballast_private.step_transitions (
  from_status text not null,
  to_status text not null,
  why text not null,
  via_replay boolean default false not null,
  constraint step_transitions_pkey primary key (from_status, to_status)
);
grant select on ballast_private.step_transitions to ballast_client, ballast_operator, ballast_reporter;

-- One row per prompt name@version: its templates and their sha256 (a version is immutable).
create table ballast_private.prompts (
  name text not null,
  version integer not null,
  -- {"system": text or null, "user": text}: templates with {{path}} placeholders.
  template jsonb not null,
  content_hash text not null,
  registered_at timestamp with time zone default ballast.now() not null,
  constraint prompts_pkey primary key (name, version),
  constraint prompt_name_format check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  constraint prompt_version_positive check (version >= 1)
);
grant select on ballast_private.prompts to ballast_client, ballast_operator, ballast_reporter;

-- USD per 1M tokens (input, output, cached input) per provider/model from a date: a price change is a new row, so
-- old calls keep the price they were made at. Seeded in 0009_model_steps_and_budgets.
create table ballast_private.model_prices (
  provider text not null,
  model text not null,
  valid_from timestamp with time zone not null,
  input_per_mtok numeric(12,6) not null,
  output_per_mtok numeric(12,6) not null,
  -- Cached input tokens (prompt cache reads); null: charged as ordinary input.
  cached_input_per_mtok numeric(12,6),
  source text default 'operator'::text not null,
  constraint model_prices_pkey primary key (provider, model, valid_from),
  constraint price_cached_nonnegative check (cached_input_per_mtok >= 0),
  constraint price_input_nonnegative check (input_per_mtok >= 0),
  constraint price_output_nonnegative check (output_per_mtok >= 0)
);
grant select on ballast_private.model_prices to ballast_client, ballast_operator, ballast_reporter;

-- Per tenant: a spend limit per period (day, week, month; UTC) and what an exhausted budget does to a step ('fail'
-- it, or 'pause' it until the next period or a raised limit).
create table ballast_private.budgets (
  tenant_id text not null,
  limit_usd numeric(14,6) not null,
  period text not null,
  on_exhausted text default 'pause'::text not null,
  updated_at timestamp with time zone default ballast.now() not null,
  constraint budgets_pkey primary key (tenant_id),
  constraint budget_limit_nonnegative check (limit_usd >= 0),
  constraint budget_on_exhausted_known check (on_exhausted in ('pause', 'fail')),
  constraint budget_period_known check (period in ('day', 'week', 'month'))
);
alter table ballast_private.budgets enable row level security;
create policy tenant_rows on ballast_private.budgets for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.budgets to ballast_client, ballast_operator, ballast_reporter;

-- Per tenant and period: reserved (calls in flight) and spent (settled) USD.
create table ballast_private.budget_usage (
  tenant_id text not null,
  period_start timestamp with time zone not null,
  reserved_usd numeric(14,8) default 0 not null,
  spent_usd numeric(14,8) default 0 not null,
  constraint budget_usage_pkey primary key (tenant_id, period_start),
  constraint usage_reserved_nonnegative check (reserved_usd >= 0)
);
alter table ballast_private.budget_usage enable row level security;
create policy tenant_rows on ballast_private.budget_usage for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.budget_usage to ballast_client, ballast_operator, ballast_reporter;

-- One per priced call: the estimate reserved before the call, the actual settled after (or the estimate, when the
-- attempt ended without settling: expired).
create table ballast_private.budget_reservations (
  id bigint generated always as identity not null,
  tenant_id text not null,
  period_start timestamp with time zone not null,
  attempt_id bigint,
  estimate_usd numeric(14,8) not null,
  actual_usd numeric(14,8),
  status text default 'open'::text not null,
  created_at timestamp with time zone default ballast.now() not null,
  settled_at timestamp with time zone,
  constraint budget_reservations_pkey primary key (id),
  constraint budget_reservations_attempt_id_fkey foreign key (attempt_id) references ballast_private.attempts(id) on delete set null,
  -- expired: its attempt ended without settling it (worker died mid-call); the estimate counts as spent.
  constraint reservation_status_known check (status in ('open', 'settled', 'expired'))
);
create index budget_reservations_open on ballast_private.budget_reservations (tenant_id, period_start) where status = 'open';
grant select on ballast_private.budget_reservations to ballast_operator, ballast_reporter;

-- Per provider/model ('*': the whole provider): calls wait until `until` (a 429/529 with a retry-after, seen by any
-- worker).
create table ballast_private.provider_cooldowns (
  provider text not null,
  -- '*': every model of the provider.
  model text not null,
  until timestamp with time zone not null,
  reason text not null,
  set_at timestamp with time zone default ballast.now() not null,
  hits integer default 1 not null,
  constraint provider_cooldowns_pkey primary key (provider, model)
);
grant select on ballast_private.provider_cooldowns to ballast_operator, ballast_reporter;

-- One row per provider call (the trace): models, prompt, parameters, timings, finish reason, tokens, cost, error
-- class, HTTP status, request id, raw output, validation issues, repair, score, the rung of the ladder it was on.
create table ballast_private.model_calls (
  id bigint generated always as identity not null,
  attempt_id bigint not null,
  step_id bigint not null,
  job_id bigint not null,
  tenant_id text not null,
  -- The ladder: 'primary' (first call on the step's model), 'reask' (again with the contract violations),
  -- 'fallback' (a fallback model); model_index: 0 for the step's model, 1.. for the fallbacks in order.
  rung text not null,
  model_index integer default 0 not null,
  provider text not null,
  provider_kind text,
  requested_model text not null,
  returned_model text,
  prompt_name text,
  prompt_version integer,
  prompt_hash text,
  parameters jsonb,
  started_at timestamp with time zone not null,
  first_token_at timestamp with time zone,
  ended_at timestamp with time zone not null,
  latency_ms numeric(12,1),
  finish_reason_raw text,
  -- stop, length, content_filter, tool_calls, refusal, error, other.
  finish_reason text,
  input_tokens integer,
  output_tokens integer,
  cached_input_tokens integer,
  cache_write_tokens integer,
  reasoning_tokens integer,
  -- null when no price is known for the model (see price_missing in ballast.model_calls).
  cost_usd numeric(14,8),
  price_valid_from timestamp with time zone,
  -- The failure class (transport, quota, client, truncated, refusal, unparsable, schema, aborted, quality,
  -- cooldown, budget) and code; null for a usable answer.
  error_class text,
  error_code text,
  error_message text,
  retryable boolean,
  http_status integer,
  request_id text,
  response_id text,
  raw_output text,
  validation_issues jsonb,
  -- json_repair when the output only parsed after local repair.
  repair_method text,
  score numeric(6,5),
  quality jsonb,
  created_at timestamp with time zone default ballast.now() not null,
  usage_missing boolean default false not null,
  constraint model_calls_pkey primary key (id),
  constraint model_calls_attempt_id_fkey foreign key (attempt_id) references ballast_private.attempts(id) on delete cascade,
  constraint model_calls_job_id_fkey foreign key (job_id) references ballast_private.jobs(id) on delete cascade,
  constraint model_calls_step_id_fkey foreign key (step_id) references ballast_private.steps(id) on delete cascade,
  constraint call_rung_known check (rung in ('primary', 'reask', 'fallback'))
);
create index model_calls_attempt on ballast_private.model_calls (attempt_id);
create index model_calls_job on ballast_private.model_calls (job_id);
create index model_calls_started on ballast_private.model_calls (started_at);
alter table ballast_private.model_calls enable row level security;
create policy tenant_rows on ballast_private.model_calls for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.model_calls to ballast_client, ballast_operator, ballast_reporter;

-- One row per (step, key, attempt) that started an effect: written before fn runs, so a crash between fn and its
-- record leaves evidence. The ledger of completed effects is ballast_private.effects.
create table ballast_private.effect_intents (
  step_id bigint not null,
  key text not null,
  attempt_id bigint not null,
  started_at timestamp with time zone default ballast.now() not null,
  constraint effect_intents_pkey primary key (step_id, key, attempt_id),
  constraint effect_intents_attempt_id_fkey foreign key (attempt_id) references ballast_private.attempts(id) on delete cascade,
  constraint effect_intents_step_id_fkey foreign key (step_id) references ballast_private.steps(id) on delete cascade
);
alter table ballast_private.effect_intents add constraint effect_intent_key_format check (key <> '' and octet_length(key) <= 500) not valid;
alter table ballast_private.effect_intents enable row level security;
create policy tenant_rows on ballast_private.effect_intents for select
  using ((select ballast_private.caller_unrestricted()) or step_id in (select s.id from ballast_private.steps s));
grant select on ballast_private.effect_intents to ballast_client, ballast_operator, ballast_reporter;
comment on table ballast_private.effect_intents is 'Effects started (ballast.begin_effect) before fn ran: one row per step, key and attempt. An intent without a row in ballast_private.effects for the same step and key is an effect that may or may not have happened.';

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

-- Replay edges (via_replay), a deadline that runs the step again, and the edges of map steps (0006_execution): a map
-- step waits for its items and succeeds when they are done; replaying one of its items makes it wait again.
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

-- Error codes of this migration.
insert into ballast_private.error_codes (sqlstate, name, meaning) values
  ('BA012', 'prompt_version_conflict', 'The prompt name and version are already registered with other content.'),
  ('BA013', 'not_in_review', 'The step is not waiting for a review decision.');

insert into ballast_private.error_codes (sqlstate, name, meaning) values
  ('BA014', 'forbidden', 'The caller''s role or tenant does not allow this action.');

insert into ballast_private.step_transitions (from_status, to_status, why)
values ('queued', 'retrying', 'parked at claim: its tenant''s budget is used up or all its models are cooling down (no attempt)');
