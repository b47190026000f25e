-- ballast: the current schema, as the migrations in migrations/ leave it. Generated from a migrated database by
-- test/support/schema-snapshot.ts and checked by test/schema-snapshot.test.ts: edit the migrations, never this file,
-- then regenerate it with  BALLAST_UPDATE_SNAPSHOT=1 npm test -- test/schema-snapshot.test.ts
-- Order: tables (with constraints, indexes, row-level security and policies), functions, views (each after the
-- views it reads), triggers, comments, privileges. It is a map to read, not a script to run: function bodies refer to
-- objects by name, in any order.

-- ==================== tables ===================================================================================

create table ballast_private.alert_checks (
  id integer default 1 not null,
  last_at timestamp with time zone not null
);
alter table ballast_private.alert_checks add constraint alert_checks_one_row CHECK ((id = 1));
alter table ballast_private.alert_checks add constraint alert_checks_pkey PRIMARY KEY (id);

create table ballast_private.alerts (
  id bigint generated always as identity not null,
  kind text not null,
  rule_id bigint not null,
  rule_name text not null,
  group_key text not null,
  group_value jsonb not null,
  tenant_id text,
  metric text not null,
  value numeric,
  baseline numeric,
  threshold numeric,
  samples bigint,
  baseline_samples bigint,
  period_start timestamp with time zone,
  percent integer,
  raised_at timestamp with time zone default ballast.now() not null,
  resolved_at timestamp with time zone,
  acked_by text,
  acked_at timestamp with time zone,
  ack_note text
);
alter table ballast_private.alerts add constraint alert_budget_period CHECK (((kind = 'budget'::text) = ((period_start IS NOT NULL) AND (percent IS NOT NULL))));
alter table ballast_private.alerts add constraint alert_kind_known CHECK ((kind = ANY (ARRAY['drift'::text, 'budget'::text])));
alter table ballast_private.alerts add constraint alerts_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX alerts_budget_once ON ballast_private.alerts USING btree (rule_id, group_key, period_start, percent) WHERE (kind = 'budget'::text);
CREATE UNIQUE INDEX alerts_drift_open ON ballast_private.alerts USING btree (rule_id, group_key) WHERE ((kind = 'drift'::text) AND (resolved_at IS NULL));
CREATE INDEX alerts_open ON ballast_private.alerts USING btree (kind, rule_id) WHERE (resolved_at IS NULL);
CREATE INDEX alerts_raised ON ballast_private.alerts USING btree (raised_at);
alter table ballast_private.alerts enable row level security;
create policy tenant_rows on ballast_private.alerts as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR ((kind = 'budget'::text) AND (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant)))));

create table ballast_private.attempts (
  id bigint generated always as identity not null,
  step_id bigint not null,
  job_id bigint not null,
  number integer not null,
  worker_id text,
  outcome text default 'running'::text not null,
  started_at timestamp with time zone default ballast.now() not null,
  lease_expires_at timestamp with time zone not null,
  finished_at timestamp with time zone,
  error_class text,
  error_code text,
  error_message text,
  error_retryable boolean,
  contract_outcome text,
  contract_detail jsonb,
  model text,
  prompt_ref text,
  fallback_used boolean,
  quality_score numeric(6,5),
  model_calls integer default 0 not null,
  input_tokens bigint default 0 not null,
  output_tokens bigint default 0 not null,
  cost_usd numeric(14,8) default 0 not null
);
alter table ballast_private.attempts add constraint attempt_contract_outcome_known CHECK ((contract_outcome = ANY (ARRAY['valid_first_try'::text, 'repaired'::text, 'fell_back'::text, 'degraded'::text, 'rejected'::text, 'review'::text])));
alter table ballast_private.attempts add constraint attempt_error_when_failed CHECK (((outcome = ANY (ARRAY['running'::text, 'succeeded'::text, 'parked'::text, 'needs_review'::text])) OR ((error_class IS NOT NULL) AND (error_message IS NOT NULL))));
alter table ballast_private.attempts add constraint attempt_finished_when_done CHECK (((outcome = 'running'::text) = (finished_at IS NULL)));
alter table ballast_private.attempts add constraint attempt_number_positive CHECK ((number >= 1));
alter table ballast_private.attempts add constraint attempt_number_unique UNIQUE (step_id, number);
alter table ballast_private.attempts add constraint attempt_outcome_known CHECK ((outcome = ANY (ARRAY['running'::text, 'succeeded'::text, 'failed'::text, 'crashed'::text, 'timed_out'::text, 'cancelled'::text, 'released'::text, 'parked'::text, 'needs_review'::text])));
alter table ballast_private.attempts add constraint attempts_pkey PRIMARY KEY (id);
CREATE INDEX attempts_running_lease_idx ON ballast_private.attempts USING btree (lease_expires_at) WHERE (outcome = 'running'::text);
alter table ballast_private.attempts enable row level security;
create policy tenant_rows on ballast_private.attempts as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (job_id IN ( SELECT j.id
   FROM ballast_private.jobs j))));

create table ballast_private.budget_alert_rules (
  id bigint generated always as identity not null,
  name text not null,
  scope text not null,
  scope_value text,
  limit_usd numeric(14,6),
  period text,
  percents integer[] default '{50,80,100}'::integer[] not null,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.budget_alert_rules add constraint budget_alert_limit CHECK (((limit_usd > (0)::numeric) OR ((limit_usd IS NULL) AND (scope = 'tenant'::text) AND (period IS NULL))));
alter table ballast_private.budget_alert_rules add constraint budget_alert_percents CHECK ((((cardinality(percents) >= 1) AND (cardinality(percents) <= 20)) AND (1 <= ALL (percents)) AND (1000 >= ALL (percents))));
alter table ballast_private.budget_alert_rules add constraint budget_alert_period_given CHECK (((period IS NOT NULL) OR (limit_usd IS NULL)));
alter table ballast_private.budget_alert_rules add constraint budget_alert_period_known CHECK ((period = ANY (ARRAY['day'::text, 'week'::text, 'month'::text])));
alter table ballast_private.budget_alert_rules add constraint budget_alert_rules_name_key UNIQUE (name);
alter table ballast_private.budget_alert_rules add constraint budget_alert_rules_pkey PRIMARY KEY (id);
alter table ballast_private.budget_alert_rules add constraint budget_alert_scope_known CHECK ((scope = ANY (ARRAY['tenant'::text, 'pipeline'::text, 'model'::text, 'end_user'::text])));

create table ballast_private.budget_reservations (
  id bigint generated always as identity not null,
  tenant_id text not null,
  period_start timestamp with time zone not null,
  attempt_id bigint,
  estimate_usd numeric(14,8) not null,
  actual_usd numeric(14,8),
  status text default 'open'::text not null,
  created_at timestamp with time zone default ballast.now() not null,
  settled_at timestamp with time zone
);
alter table ballast_private.budget_reservations add constraint budget_reservations_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES ballast_private.attempts(id) ON DELETE SET NULL;
alter table ballast_private.budget_reservations add constraint budget_reservations_pkey PRIMARY KEY (id);
alter table ballast_private.budget_reservations add constraint reservation_status_known CHECK ((status = ANY (ARRAY['open'::text, 'settled'::text, 'expired'::text])));
CREATE INDEX budget_reservations_open ON ballast_private.budget_reservations USING btree (tenant_id, period_start) WHERE (status = 'open'::text);

create table ballast_private.budget_spend_checked (
  rule_id bigint not null,
  rule_name text not null,
  scope text not null,
  scope_key text not null,
  tenant_id text,
  period_start timestamp with time zone not null,
  spent_usd numeric not null,
  limit_usd numeric not null,
  checked_at timestamp with time zone not null
);
alter table ballast_private.budget_spend_checked add constraint budget_spend_checked_pkey PRIMARY KEY (rule_id, scope_key);

create table ballast_private.budget_usage (
  tenant_id text not null,
  period_start timestamp with time zone not null,
  reserved_usd numeric(14,8) default 0 not null,
  spent_usd numeric(14,8) default 0 not null
);
alter table ballast_private.budget_usage add constraint budget_usage_pkey PRIMARY KEY (tenant_id, period_start);
alter table ballast_private.budget_usage add constraint usage_reserved_nonnegative CHECK ((reserved_usd >= (0)::numeric));
alter table ballast_private.budget_usage enable row level security;
create policy tenant_rows on ballast_private.budget_usage as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.budgets (
  tenant_id text not null,
  limit_usd numeric(14,6) not null,
  period text not null,
  on_exhausted text default 'pause'::text not null,
  updated_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.budgets add constraint budget_limit_nonnegative CHECK ((limit_usd >= (0)::numeric));
alter table ballast_private.budgets add constraint budget_on_exhausted_known CHECK ((on_exhausted = ANY (ARRAY['pause'::text, 'fail'::text])));
alter table ballast_private.budgets add constraint budget_period_known CHECK ((period = ANY (ARRAY['day'::text, 'week'::text, 'month'::text])));
alter table ballast_private.budgets add constraint budgets_pkey PRIMARY KEY (tenant_id);
alter table ballast_private.budgets enable row level security;
create policy tenant_rows on ballast_private.budgets as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.drift_rules (
  id bigint generated always as identity not null,
  name text not null,
  pipeline text not null,
  step_name text,
  prompt_name text,
  prompt_version integer,
  model text,
  metric text not null,
  direction text not null,
  change text default 'absolute'::text not null,
  threshold numeric not null,
  window_size interval default '01:00:00'::interval not null,
  baseline_size interval,
  baseline_from timestamp with time zone,
  baseline_until timestamp with time zone,
  min_samples integer default 30 not null,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.drift_rules add constraint drift_baseline_one CHECK ((((baseline_size IS NOT NULL) <> ((baseline_from IS NOT NULL) AND (baseline_until IS NOT NULL))) AND ((baseline_from IS NULL) = (baseline_until IS NULL))));
alter table ballast_private.drift_rules add constraint drift_baseline_positive CHECK (((baseline_size > '00:00:00'::interval) OR (baseline_until > baseline_from)));
alter table ballast_private.drift_rules add constraint drift_change_known CHECK ((change = ANY (ARRAY['absolute'::text, 'relative'::text])));
alter table ballast_private.drift_rules add constraint drift_direction_matches CHECK ((direction = ballast_private.drift_direction(metric)));
alter table ballast_private.drift_rules add constraint drift_metric_known CHECK ((ballast_private.drift_direction(metric) IS NOT NULL));
alter table ballast_private.drift_rules add constraint drift_min_samples_positive CHECK ((min_samples >= 1));
alter table ballast_private.drift_rules add constraint drift_rules_name_key UNIQUE (name);
alter table ballast_private.drift_rules add constraint drift_rules_pkey PRIMARY KEY (id);
alter table ballast_private.drift_rules add constraint drift_threshold_positive CHECK ((threshold > (0)::numeric));
alter table ballast_private.drift_rules add constraint drift_window_positive CHECK ((window_size > '00:00:00'::interval));

create table ballast_private.effect_intents (
  step_id bigint not null,
  key text not null,
  attempt_id bigint not null,
  started_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.effect_intents add constraint effect_intent_key_format CHECK (((key <> ''::text) AND (octet_length(key) <= 500))) NOT VALID;
alter table ballast_private.effect_intents add constraint effect_intents_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES ballast_private.attempts(id) ON DELETE CASCADE;
alter table ballast_private.effect_intents add constraint effect_intents_pkey PRIMARY KEY (step_id, key, attempt_id);
alter table ballast_private.effect_intents add constraint effect_intents_step_id_fkey FOREIGN KEY (step_id) REFERENCES ballast_private.steps(id) ON DELETE CASCADE;
alter table ballast_private.effect_intents enable row level security;
create policy tenant_rows on ballast_private.effect_intents as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (step_id IN ( SELECT s.id
   FROM ballast_private.steps s))));

create table ballast_private.effects (
  step_id bigint not null,
  key text not null,
  attempt_id bigint not null,
  result jsonb,
  created_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.effects add constraint effect_key_format CHECK (((key <> ''::text) AND (octet_length(key) <= 500))) NOT VALID;
alter table ballast_private.effects add constraint effects_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES ballast_private.attempts(id) ON DELETE CASCADE;
alter table ballast_private.effects add constraint effects_pkey PRIMARY KEY (step_id, key);
alter table ballast_private.effects add constraint effects_step_id_fkey FOREIGN KEY (step_id) REFERENCES ballast_private.steps(id) ON DELETE CASCADE;
alter table ballast_private.effects enable row level security;
create policy tenant_rows on ballast_private.effects as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (step_id IN ( SELECT s.id
   FROM ballast_private.steps s))));

create table ballast_private.end_user_paths (
  pipeline text not null,
  path text[] not null,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.end_user_paths add constraint end_user_path_nonempty CHECK (((cardinality(path) >= 1) AND (cardinality(path) <= 20)));
alter table ballast_private.end_user_paths add constraint end_user_paths_pkey PRIMARY KEY (pipeline);

create table ballast_private.error_codes (
  sqlstate text not null,
  name text not null,
  meaning text not null
);
alter table ballast_private.error_codes add constraint error_codes_name_check CHECK ((name ~ '^[a-z_]+$'::text));
alter table ballast_private.error_codes add constraint error_codes_name_key UNIQUE (name);
alter table ballast_private.error_codes add constraint error_codes_pkey PRIMARY KEY (sqlstate);
alter table ballast_private.error_codes add constraint error_codes_sqlstate_check CHECK ((sqlstate ~ '^BA[0-9]{3}$'::text));

create table ballast_private.eval_auto_promotions (
  pipeline text not null,
  step text not null,
  dataset text not null,
  decisions text[] default '{approve,edit}'::text[] not null,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.eval_auto_promotions add constraint eval_auto_promotion_decisions CHECK (((decisions <@ ARRAY['approve'::text, 'edit'::text, 'reject'::text]) AND (cardinality(decisions) > 0)));
alter table ballast_private.eval_auto_promotions add constraint eval_auto_promotions_dataset_fkey FOREIGN KEY (dataset) REFERENCES ballast_private.eval_datasets(name) ON DELETE CASCADE;
alter table ballast_private.eval_auto_promotions add constraint eval_auto_promotions_pkey PRIMARY KEY (pipeline, step);

create table ballast_private.eval_cases (
  id bigint generated always as identity not null,
  dataset text not null,
  case_key text not null,
  input jsonb not null,
  reference jsonb,
  checks jsonb default '[]'::jsonb not null,
  tags text[] default '{}'::text[] not null,
  source jsonb default '{"kind": "manual"}'::jsonb not null,
  added_in_version integer not null,
  removed_in_version integer,
  added_by text,
  added_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.eval_cases add constraint eval_case_checks_array CHECK ((jsonb_typeof(checks) = 'array'::text));
alter table ballast_private.eval_cases add constraint eval_case_input_object CHECK ((jsonb_typeof(input) = 'object'::text));
alter table ballast_private.eval_cases add constraint eval_case_key_format CHECK (((case_key <> ''::text) AND (octet_length(case_key) <= 200)));
alter table ballast_private.eval_cases add constraint eval_case_versions CHECK (((removed_in_version IS NULL) OR (removed_in_version > added_in_version)));
alter table ballast_private.eval_cases add constraint eval_cases_dataset_fkey FOREIGN KEY (dataset) REFERENCES ballast_private.eval_datasets(name) ON DELETE CASCADE;
alter table ballast_private.eval_cases add constraint eval_cases_pkey PRIMARY KEY (id);
CREATE INDEX eval_cases_dataset ON ballast_private.eval_cases USING btree (dataset, added_in_version);
CREATE UNIQUE INDEX eval_cases_live_key ON ballast_private.eval_cases USING btree (dataset, case_key) WHERE (removed_in_version IS NULL);

create table ballast_private.eval_datasets (
  name text not null,
  description text,
  version integer default 0 not null,
  created_by text,
  created_at timestamp with time zone default ballast.now() not null,
  updated_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.eval_datasets add constraint eval_dataset_name_format CHECK ((name ~ '^[a-z][a-z0-9_.-]{0,62}$'::text));
alter table ballast_private.eval_datasets add constraint eval_datasets_pkey PRIMARY KEY (name);

create table ballast_private.eval_results (
  run_id bigint not null,
  case_id bigint not null,
  output jsonb,
  scores jsonb default '{}'::jsonb not null,
  score numeric not null,
  passed boolean not null,
  cost_usd numeric(14,8) default 0 not null,
  judge_cost_usd numeric(14,8) default 0 not null,
  latency_ms integer,
  contract_outcome text,
  error jsonb,
  model_call_ids bigint[] default '{}'::bigint[] not null,
  attempt_id bigint,
  recorded_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.eval_results add constraint eval_result_score_range CHECK (((score >= (0)::numeric) AND (score <= (1)::numeric)));
alter table ballast_private.eval_results add constraint eval_results_case_id_fkey FOREIGN KEY (case_id) REFERENCES ballast_private.eval_cases(id) ON DELETE CASCADE;
alter table ballast_private.eval_results add constraint eval_results_pkey PRIMARY KEY (run_id, case_id);
alter table ballast_private.eval_results add constraint eval_results_run_id_fkey FOREIGN KEY (run_id) REFERENCES ballast_private.eval_runs(id) ON DELETE CASCADE;

create table ballast_private.eval_runs (
  id bigint generated always as identity not null,
  dataset text not null,
  dataset_version integer not null,
  pipeline text not null,
  pipeline_version integer,
  step text not null,
  prompt_name text,
  prompt_version integer,
  model text,
  scorers jsonb default '[{"kind": "exact"}]'::jsonb not null,
  threshold numeric default 0.5 not null,
  label text,
  job_id bigint,
  tenant_id text,
  status text default 'queued'::text not null,
  created_by text,
  created_at timestamp with time zone default ballast.now() not null,
  finished_at timestamp with time zone,
  summary jsonb
);
alter table ballast_private.eval_runs add constraint eval_run_status CHECK ((status = ANY (ARRAY['queued'::text, 'running'::text, 'completed'::text, 'imported'::text])));
alter table ballast_private.eval_runs add constraint eval_runs_dataset_fkey FOREIGN KEY (dataset) REFERENCES ballast_private.eval_datasets(name) ON DELETE CASCADE;
alter table ballast_private.eval_runs add constraint eval_runs_job_id_key UNIQUE (job_id);
alter table ballast_private.eval_runs add constraint eval_runs_pkey PRIMARY KEY (id);
CREATE INDEX eval_runs_dataset ON ballast_private.eval_runs USING btree (dataset, created_at);

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
  tx xid8 default pg_current_xact_id() not null
);
alter table ballast_private.events add constraint event_type_format CHECK ((type ~ '^[a-z][a-z_]*$'::text));
alter table ballast_private.events add constraint events_pkey PRIMARY KEY (id);
CREATE INDEX events_job_idx ON ballast_private.events USING btree (job_id, id);
CREATE INDEX events_tx_idx ON ballast_private.events USING btree (tx, id);
alter table ballast_private.events enable row level security;
create policy tenant_rows on ballast_private.events as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (job_id IN ( SELECT j.id
   FROM ballast_private.jobs j))));

create table ballast_private.fair_shares (
  tenant_id text not null,
  weight double precision default 1 not null,
  vfinish double precision default 0 not null,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.fair_shares add constraint fair_shares_pkey PRIMARY KEY (tenant_id);
alter table ballast_private.fair_shares add constraint fair_weight_range CHECK (((weight > (0)::double precision) AND (weight <= (1000000)::double precision)));

create table ballast_private.gate_history (
  id bigint generated always as identity not null,
  action text not null,
  key text not null,
  until timestamp with time zone,
  reason text,
  data jsonb,
  actor text,
  step_id bigint,
  at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.gate_history add constraint gate_action_known CHECK ((action = ANY (ARRAY['pause'::text, 'resume'::text, 'set_limit'::text, 'delete_limit'::text])));
alter table ballast_private.gate_history add constraint gate_history_pkey PRIMARY KEY (id);
CREATE INDEX gate_history_key_idx ON ballast_private.gate_history USING btree (key, id);

create table ballast_private.job_prompts (
  job_id bigint not null,
  prompt_name text not null,
  label text not null,
  version integer not null,
  arm text not null,
  pinned_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.job_prompts add constraint job_prompt_arm_known CHECK ((arm = ANY (ARRAY['stable'::text, 'canary'::text])));
alter table ballast_private.job_prompts add constraint job_prompts_job_fkey FOREIGN KEY (job_id) REFERENCES ballast_private.jobs(id) ON DELETE CASCADE;
alter table ballast_private.job_prompts add constraint job_prompts_pkey PRIMARY KEY (job_id, prompt_name, label);
alter table ballast_private.job_prompts add constraint job_prompts_version_fkey FOREIGN KEY (prompt_name, version) REFERENCES ballast_private.prompts(name, version);
CREATE INDEX job_prompts_label_idx ON ballast_private.job_prompts USING btree (prompt_name, label, pinned_at);
alter table ballast_private.job_prompts enable row level security;
create policy tenant_rows on ballast_private.job_prompts as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (job_id IN ( SELECT j.id
   FROM ballast_private.jobs j))));

create table ballast_private.job_transitions (
  from_status text not null,
  to_status text not null,
  via_replay boolean default false not null
);
alter table ballast_private.job_transitions add constraint job_transitions_pkey PRIMARY KEY (from_status, to_status);

create table ballast_private.jobs (
  id bigint generated always as identity not null,
  tenant_id text default 'default'::text not null,
  pipeline text not null,
  pipeline_version integer not null,
  idempotency_key text,
  request_hash text not null,
  input jsonb not null,
  status text default 'queued'::text not null,
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
  parent_job_id bigint,
  parent_step_id bigint,
  run_at timestamp with time zone,
  deadline timestamp with time zone,
  expires_at timestamp with time zone,
  debounce_key text,
  debounce_until timestamp with time zone,
  throttle_key text
);
alter table ballast_private.jobs add constraint job_finished_when_terminal CHECK (((status = ANY (ARRAY['completed'::text, 'partially_completed'::text, 'failed'::text, 'cancelled'::text])) = (finished_at IS NOT NULL)));
alter table ballast_private.jobs add constraint job_idempotency_key_format CHECK (((idempotency_key <> ''::text) AND (octet_length(idempotency_key) <= 500))) NOT VALID;
alter table ballast_private.jobs add constraint job_idempotency_unique UNIQUE (tenant_id, idempotency_key);
alter table ballast_private.jobs add constraint job_parent_job_fk FOREIGN KEY (parent_job_id) REFERENCES ballast_private.jobs(id) ON DELETE SET NULL;
alter table ballast_private.jobs add constraint job_parent_pair CHECK (((parent_job_id IS NULL) = (parent_step_id IS NULL)));
alter table ballast_private.jobs add constraint job_parent_step_fk FOREIGN KEY (parent_step_id) REFERENCES ballast_private.steps(id) ON DELETE SET NULL;
alter table ballast_private.jobs add constraint job_pipeline_fk FOREIGN KEY (pipeline, pipeline_version) REFERENCES ballast_private.pipelines(name, version);
alter table ballast_private.jobs add constraint job_priority_range CHECK (((priority >= '-1000'::integer) AND (priority <= 1000)));
alter table ballast_private.jobs add constraint job_status_known CHECK ((status = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'waiting'::text, 'retrying'::text, 'needs_review'::text, 'completed'::text, 'partially_completed'::text, 'failed'::text, 'cancelled'::text])));
alter table ballast_private.jobs add constraint job_tenant_format CHECK (((tenant_id <> ''::text) AND (octet_length(tenant_id) <= 200))) NOT VALID;
alter table ballast_private.jobs add constraint jobs_pkey PRIMARY KEY (id);
CREATE INDEX jobs_created_idx ON ballast_private.jobs USING btree (created_at);
CREATE INDEX jobs_deadline_idx ON ballast_private.jobs USING btree (deadline) WHERE ((deadline IS NOT NULL) AND (finished_at IS NULL));
CREATE INDEX jobs_debounce_idx ON ballast_private.jobs USING btree (tenant_id, pipeline, debounce_key) WHERE ((debounce_key IS NOT NULL) AND (status = 'scheduled'::text));
CREATE INDEX jobs_expiry_idx ON ballast_private.jobs USING btree (expires_at) WHERE ((expires_at IS NOT NULL) AND (status = ANY (ARRAY['scheduled'::text, 'queued'::text])));
CREATE INDEX jobs_live_idx ON ballast_private.jobs USING btree (status, created_at) WHERE (status <> ALL (ARRAY['completed'::text, 'partially_completed'::text, 'failed'::text, 'cancelled'::text]));
CREATE INDEX jobs_parent_job_idx ON ballast_private.jobs USING btree (parent_job_id) WHERE (parent_job_id IS NOT NULL);
CREATE INDEX jobs_parent_step_idx ON ballast_private.jobs USING btree (parent_step_id) WHERE (parent_step_id IS NOT NULL);
CREATE INDEX jobs_pipeline_created_idx ON ballast_private.jobs USING btree (pipeline, created_at DESC);
CREATE INDEX jobs_prunable_idx ON ballast_private.jobs USING btree (finished_at) WHERE ((pruned_at IS NULL) AND (finished_at IS NOT NULL));
CREATE INDEX jobs_tenant_created_idx ON ballast_private.jobs USING btree (tenant_id, created_at DESC);
CREATE INDEX jobs_throttle_idx ON ballast_private.jobs USING btree (tenant_id, pipeline, throttle_key, created_at) WHERE (throttle_key IS NOT NULL);
alter table ballast_private.jobs enable row level security;
create policy tenant_rows on ballast_private.jobs as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.limit_buckets (
  pattern text not null,
  kind text not null,
  key text not null,
  tat timestamp with time zone
);
alter table ballast_private.limit_buckets add constraint limit_buckets_pattern_kind_fkey FOREIGN KEY (pattern, kind) REFERENCES ballast_private.limits(pattern, kind) ON DELETE CASCADE;
alter table ballast_private.limit_buckets add constraint limit_buckets_pkey PRIMARY KEY (pattern, kind, key);

create table ballast_private.limits (
  pattern text not null,
  kind text not null,
  amount bigint not null,
  per interval,
  burst bigint default 1 not null,
  note text,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.limits add constraint limit_amount_range CHECK (((amount >= 1) AND (amount <= '1000000000000'::bigint)));
alter table ballast_private.limits add constraint limit_burst_range CHECK (((burst >= 1) AND (burst <= '1000000000000'::bigint)));
alter table ballast_private.limits add constraint limit_kind_known CHECK ((kind = ANY (ARRAY['requests'::text, 'weight'::text, 'running'::text])));
alter table ballast_private.limits add constraint limit_pattern_format CHECK (((pattern ~ '^[a-z][a-z0-9_-]*(:.*)?$'::text) AND (octet_length(pattern) <= 300)));
alter table ballast_private.limits add constraint limit_per_for_rates CHECK (((kind = 'running'::text) = (per IS NULL)));
alter table ballast_private.limits add constraint limit_per_range CHECK (((per IS NULL) OR ((per >= '00:00:00.001'::interval) AND (per <= '31 days'::interval))));
alter table ballast_private.limits add constraint limits_pkey PRIMARY KEY (pattern, kind);

create table ballast_private.migrations (
  id integer default nextval('ballast_private.migrations_id_seq'::regclass) not null,
  name character varying(255) not null,
  run_on timestamp without time zone not null
);
alter table ballast_private.migrations add constraint migrations_pkey PRIMARY KEY (id);

create table ballast_private.model_cache (
  pipeline text not null,
  ttl interval not null,
  set_by text,
  set_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.model_cache add constraint model_cache_pkey PRIMARY KEY (pipeline);
alter table ballast_private.model_cache add constraint model_cache_ttl_range CHECK (((ttl > '00:00:00'::interval) AND (ttl <= '366 days'::interval)));

create table ballast_private.model_calls (
  id bigint generated always as identity not null,
  attempt_id bigint not null,
  step_id bigint not null,
  job_id bigint not null,
  tenant_id text not null,
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
  finish_reason text,
  input_tokens integer,
  output_tokens integer,
  cached_input_tokens integer,
  cache_write_tokens integer,
  reasoning_tokens integer,
  cost_usd numeric(14,8),
  price_valid_from timestamp with time zone,
  error_class text,
  error_code text,
  error_message text,
  retryable boolean,
  http_status integer,
  request_id text,
  response_id text,
  raw_output text,
  validation_issues jsonb,
  repair_method text,
  score numeric(6,5),
  quality jsonb,
  created_at timestamp with time zone default ballast.now() not null,
  usage_missing boolean default false not null,
  request_key text,
  output_complete boolean default false not null,
  reused_from bigint,
  reuse_kind text,
  cost_saved_usd numeric(14,8)
);
alter table ballast_private.model_calls add constraint call_reuse_kind_known CHECK ((reuse_kind = ANY (ARRAY['retry'::text, 'replay'::text, 'cache'::text])));
alter table ballast_private.model_calls add constraint call_rung_known CHECK ((rung = ANY (ARRAY['primary'::text, 'reask'::text, 'fallback'::text])));
alter table ballast_private.model_calls add constraint model_calls_attempt_id_fkey FOREIGN KEY (attempt_id) REFERENCES ballast_private.attempts(id) ON DELETE CASCADE;
alter table ballast_private.model_calls add constraint model_calls_job_id_fkey FOREIGN KEY (job_id) REFERENCES ballast_private.jobs(id) ON DELETE CASCADE;
alter table ballast_private.model_calls add constraint model_calls_pkey PRIMARY KEY (id);
alter table ballast_private.model_calls add constraint model_calls_step_id_fkey FOREIGN KEY (step_id) REFERENCES ballast_private.steps(id) ON DELETE CASCADE;
CREATE INDEX model_calls_attempt ON ballast_private.model_calls USING btree (attempt_id);
CREATE INDEX model_calls_job ON ballast_private.model_calls USING btree (job_id);
CREATE INDEX model_calls_request_key ON ballast_private.model_calls USING btree (request_key, tenant_id) WHERE ((request_key IS NOT NULL) AND (reused_from IS NULL) AND output_complete);
CREATE INDEX model_calls_started ON ballast_private.model_calls USING btree (started_at);
alter table ballast_private.model_calls enable row level security;
create policy tenant_rows on ballast_private.model_calls as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.model_prices (
  provider text not null,
  model text not null,
  valid_from timestamp with time zone not null,
  input_per_mtok numeric(12,6) not null,
  output_per_mtok numeric(12,6) not null,
  cached_input_per_mtok numeric(12,6),
  source text default 'operator'::text not null
);
alter table ballast_private.model_prices add constraint model_prices_pkey PRIMARY KEY (provider, model, valid_from);
alter table ballast_private.model_prices add constraint price_cached_nonnegative CHECK ((cached_input_per_mtok >= (0)::numeric));
alter table ballast_private.model_prices add constraint price_input_nonnegative CHECK ((input_per_mtok >= (0)::numeric));
alter table ballast_private.model_prices add constraint price_output_nonnegative CHECK ((output_per_mtok >= (0)::numeric));

create table ballast_private.pauses (
  key text not null,
  until timestamp with time zone,
  reason text not null,
  paused_by text,
  paused_at timestamp with time zone default ballast.now() not null,
  step_id bigint
);
alter table ballast_private.pauses add constraint pause_key_format CHECK (((key ~ '^[a-z][a-z0-9_-]*(:.+)?$'::text) AND (octet_length(key) <= 300)));
alter table ballast_private.pauses add constraint pauses_pkey PRIMARY KEY (key);

create table ballast_private.pipelines (
  name text not null,
  version integer not null,
  definition jsonb not null,
  input_schema jsonb not null,
  definition_hash text not null,
  registered_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.pipelines add constraint pipeline_definition_object CHECK ((jsonb_typeof(definition) = 'object'::text));
alter table ballast_private.pipelines add constraint pipeline_hash_format CHECK ((definition_hash ~ '^[0-9a-f]{64}$'::text));
alter table ballast_private.pipelines add constraint pipeline_input_schema_shape CHECK ((jsonb_typeof(input_schema) = ANY (ARRAY['object'::text, 'boolean'::text])));
alter table ballast_private.pipelines add constraint pipeline_max_input_bytes CHECK ((((definition -> 'max_input_bytes'::text) IS NULL) OR ((jsonb_typeof((definition -> 'max_input_bytes'::text)) = 'number'::text) AND ((((definition ->> 'max_input_bytes'::text))::numeric >= (1)::numeric) AND (((definition ->> 'max_input_bytes'::text))::numeric <= (67108864)::numeric)) AND ((((definition ->> 'max_input_bytes'::text))::numeric % (1)::numeric) = (0)::numeric))));
alter table ballast_private.pipelines add constraint pipeline_name_format CHECK ((name ~ '^[a-z][a-z0-9_.-]{0,62}$'::text));
alter table ballast_private.pipelines add constraint pipeline_version_positive CHECK ((version >= 1));
alter table ballast_private.pipelines add constraint pipelines_pkey PRIMARY KEY (name, version);

create table ballast_private.prompt_label_history (
  id bigint generated always as identity not null,
  prompt_name text not null,
  label text not null,
  action text not null,
  from_version integer,
  to_version integer,
  canary_version integer,
  canary_share double precision,
  actor text,
  reason text not null,
  at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.prompt_label_history add constraint prompt_label_action_known CHECK ((action = ANY (ARRAY['set'::text, 'canary'::text, 'clear_canary'::text])));
alter table ballast_private.prompt_label_history add constraint prompt_label_history_pkey PRIMARY KEY (id);
CREATE INDEX prompt_label_history_label_idx ON ballast_private.prompt_label_history USING btree (prompt_name, label, id);

create table ballast_private.prompt_labels (
  prompt_name text not null,
  label text not null,
  version integer not null,
  canary_version integer,
  canary_share double precision,
  updated_by text,
  updated_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.prompt_labels add constraint prompt_canary_differs CHECK ((canary_version <> version));
alter table ballast_private.prompt_labels add constraint prompt_canary_share_range CHECK (((canary_share > (0)::double precision) AND (canary_share <= (1)::double precision)));
alter table ballast_private.prompt_labels add constraint prompt_canary_whole CHECK (((canary_version IS NULL) = (canary_share IS NULL)));
alter table ballast_private.prompt_labels add constraint prompt_label_canary_fkey FOREIGN KEY (prompt_name, canary_version) REFERENCES ballast_private.prompts(name, version);
alter table ballast_private.prompt_labels add constraint prompt_label_format CHECK ((label ~ '^[a-z][a-z0-9_.-]{0,62}$'::text));
alter table ballast_private.prompt_labels add constraint prompt_label_version_fkey FOREIGN KEY (prompt_name, version) REFERENCES ballast_private.prompts(name, version);
alter table ballast_private.prompt_labels add constraint prompt_labels_pkey PRIMARY KEY (prompt_name, label);

create table ballast_private.prompts (
  name text not null,
  version integer not null,
  template jsonb not null,
  content_hash text not null,
  registered_at timestamp with time zone default ballast.now() not null,
  created_by text
);
alter table ballast_private.prompts add constraint prompt_name_format CHECK ((name ~ '^[a-z][a-z0-9_.-]{0,62}$'::text));
alter table ballast_private.prompts add constraint prompt_version_positive CHECK ((version >= 1));
alter table ballast_private.prompts add constraint prompts_pkey PRIMARY KEY (name, version);

create table ballast_private.provider_cooldowns (
  provider text not null,
  model text not null,
  until timestamp with time zone not null,
  reason text not null,
  set_at timestamp with time zone default ballast.now() not null,
  hits integer default 1 not null
);
alter table ballast_private.provider_cooldowns add constraint provider_cooldowns_pkey PRIMARY KEY (provider, model);

create table ballast_private.role_tenants (
  role_name name not null,
  tenant_id text not null,
  bound_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.role_tenants add constraint role_tenant_format CHECK (((tenant_id <> ''::text) AND (octet_length(tenant_id) <= 200))) NOT VALID;
alter table ballast_private.role_tenants add constraint role_tenants_pkey PRIMARY KEY (role_name);

create table ballast_private.schedules (
  id bigint generated always as identity not null,
  tenant_id text default 'default'::text not null,
  name text not null,
  pipeline text not null,
  pipeline_version integer,
  input jsonb default '{}'::jsonb not null,
  priority integer default 0 not null,
  cron text not null,
  time_zone text default 'UTC'::text not null,
  on_missed text default 'skip'::text not null,
  max_catch_up integer default 10 not null,
  paused boolean default false not null,
  paused_reason text,
  next_fire_at timestamp with time zone,
  last_fired_at timestamp with time zone,
  last_slot timestamp with time zone,
  last_job_id bigint,
  last_error text,
  fired_count bigint default 0 not null,
  skipped_count bigint default 0 not null,
  created_at timestamp with time zone default ballast.now() not null,
  updated_at timestamp with time zone default ballast.now() not null,
  created_by text,
  updated_by text
);
alter table ballast_private.schedules add constraint schedule_max_catch_up_range CHECK (((max_catch_up >= 1) AND (max_catch_up <= 1000)));
alter table ballast_private.schedules add constraint schedule_name_format CHECK ((name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'::text));
alter table ballast_private.schedules add constraint schedule_name_unique UNIQUE (tenant_id, name);
alter table ballast_private.schedules add constraint schedule_on_missed_known CHECK ((on_missed = ANY (ARRAY['skip'::text, 'catch_up'::text])));
alter table ballast_private.schedules add constraint schedule_tenant_bytes CHECK (((octet_length(tenant_id) >= 1) AND (octet_length(tenant_id) <= 200)));
alter table ballast_private.schedules add constraint schedules_pkey PRIMARY KEY (id);
CREATE INDEX schedules_due_idx ON ballast_private.schedules USING btree (next_fire_at) WHERE ((NOT paused) AND (next_fire_at IS NOT NULL));
alter table ballast_private.schedules enable row level security;
create policy tenant_rows on ballast_private.schedules as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.signals (
  key text not null,
  payload jsonb,
  actor text default 'system'::text not null,
  received_at timestamp with time zone default ballast.now() not null,
  tenant_id text not null
);
alter table ballast_private.signals add constraint signal_key_format CHECK (((key <> ''::text) AND (octet_length(key) <= 500))) NOT VALID;
alter table ballast_private.signals add constraint signal_tenant_format CHECK (((tenant_id <> ''::text) AND (octet_length(tenant_id) <= 200)));
alter table ballast_private.signals add constraint signals_pkey PRIMARY KEY (tenant_id, key);
alter table ballast_private.signals enable row level security;
create policy tenant_rows on ballast_private.signals as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.step_call_marks (
  step_id bigint not null,
  replayed_through bigint not null,
  fresh_through bigint
);
alter table ballast_private.step_call_marks add constraint step_call_marks_pkey PRIMARY KEY (step_id);
alter table ballast_private.step_call_marks add constraint step_call_marks_step_id_fkey FOREIGN KEY (step_id) REFERENCES ballast_private.steps(id) ON DELETE CASCADE;

create table ballast_private.step_sleeps (
  step_id bigint not null,
  key text not null,
  until timestamp with time zone not null,
  attempt_id bigint not null,
  created_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.step_sleeps add constraint step_sleep_key_format CHECK (((key <> ''::text) AND (octet_length(key) <= 500)));
alter table ballast_private.step_sleeps add constraint step_sleeps_pkey PRIMARY KEY (step_id, key);
alter table ballast_private.step_sleeps add constraint step_sleeps_step_id_fkey FOREIGN KEY (step_id) REFERENCES ballast_private.steps(id) ON DELETE CASCADE;

create table ballast_private.step_transitions (
  from_status text not null,
  to_status text not null,
  why text not null,
  via_replay boolean default false not null
);
alter table ballast_private.step_transitions add constraint step_transitions_pkey PRIMARY KEY (from_status, to_status);

create table ballast_private.steps (
  id bigint generated always as identity not null,
  job_id bigint not null,
  name text not null,
  status text not null,
  depends_on text[] default '{}'::text[] not null,
  deps_remaining integer not null,
  attempts integer default 0 not null,
  max_attempts integer not null,
  backoff_base_ms integer not null,
  backoff_cap_ms integer not null,
  timeout_ms integer,
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
  attempt_offset integer default 0 not null,
  wait_key text,
  wait_deadline timestamp with time zone,
  wait_on_timeout text,
  parent_step_id bigint,
  item_index integer,
  item jsonb,
  input_tokens bigint default 0 not null,
  output_tokens bigint default 0 not null,
  cost_usd numeric(14,8) default 0 not null,
  review jsonb,
  task text,
  priority smallint default 0 not null,
  items_open integer default 0 not null,
  crashes integer default 0 not null,
  gate_keys text[],
  wait_children bigint[],
  wait_first integer,
  waiting_for text default 
CASE
    WHEN (status = 'waiting'::text) THEN
    CASE
        WHEN (wait_key IS NOT NULL) THEN 'event'::text
        WHEN (wait_on_timeout = 'resume'::text) THEN 'time'::text
        WHEN (wait_children IS NOT NULL) THEN 'children'::text
        ELSE 'items'::text
    END
    ELSE NULL::text
END,
  fair_key double precision default 0 not null
);
alter table ballast_private.steps add constraint step_attempt_offset_range CHECK (((attempt_offset >= 0) AND (attempt_offset <= attempts)));
alter table ballast_private.steps add constraint step_attempts_nonnegative CHECK ((attempts >= 0));
alter table ballast_private.steps add constraint step_attempts_within_max CHECK (((attempts - attempt_offset) <= max_attempts));
alter table ballast_private.steps add constraint step_backoff_base_range CHECK (((backoff_base_ms >= 0) AND (backoff_base_ms <= 86400000)));
alter table ballast_private.steps add constraint step_backoff_cap_range CHECK (((backoff_cap_ms >= 0) AND (backoff_cap_ms <= 604800000)));
alter table ballast_private.steps add constraint step_concurrency_limit_positive CHECK ((concurrency_limit >= 1));
alter table ballast_private.steps add constraint step_concurrency_pair CHECK (((concurrency_key IS NULL) = (concurrency_limit IS NULL)));
alter table ballast_private.steps add constraint step_crashes_nonnegative CHECK ((crashes >= 0));
alter table ballast_private.steps add constraint step_deps_remaining_range CHECK ((deps_remaining >= 0));
alter table ballast_private.steps add constraint step_item_index_range CHECK ((item_index >= 0));
alter table ballast_private.steps add constraint step_item_pair CHECK (((parent_step_id IS NULL) = (item_index IS NULL)));
alter table ballast_private.steps add constraint step_items_open_nonnegative CHECK ((items_open >= 0));
alter table ballast_private.steps add constraint step_items_wait_has_no_deadline CHECK (((waiting_for IS DISTINCT FROM 'items'::text) OR ((wait_deadline IS NULL) AND (wait_on_timeout IS NULL))));
alter table ballast_private.steps add constraint step_max_attempts_range CHECK (((max_attempts >= 1) AND (max_attempts <= 1000)));
alter table ballast_private.steps add constraint step_name_format CHECK ((name ~ '^[a-z][a-z0-9_]{0,62}$'::text));
alter table ballast_private.steps add constraint step_name_unique UNIQUE (job_id, name);
alter table ballast_private.steps add constraint step_ready_when_no_deps CHECK (((status <> 'pending'::text) OR (deps_remaining > 0)));
alter table ballast_private.steps add constraint step_retry_has_time CHECK (((status <> 'retrying'::text) OR (next_run_at IS NOT NULL)));
alter table ballast_private.steps add constraint step_scheduled_has_time CHECK (((status <> 'scheduled'::text) OR (next_run_at IS NOT NULL)));
alter table ballast_private.steps add constraint step_sleep_has_deadline CHECK (((waiting_for IS DISTINCT FROM 'time'::text) OR (wait_deadline IS NOT NULL)));
alter table ballast_private.steps add constraint step_status_known CHECK ((status = ANY (ARRAY['scheduled'::text, 'pending'::text, 'queued'::text, 'running'::text, 'retrying'::text, 'waiting'::text, 'needs_review'::text, 'succeeded'::text, 'failed'::text, 'cancelled'::text, 'skipped'::text])));
alter table ballast_private.steps add constraint step_timeout_positive CHECK ((timeout_ms > 0));
alter table ballast_private.steps add constraint step_wait_first_positive CHECK ((wait_first >= 1));
alter table ballast_private.steps add constraint step_wait_on_timeout_known CHECK ((wait_on_timeout = ANY (ARRAY['fail'::text, 'retry'::text, 'resume'::text])));
alter table ballast_private.steps add constraint steps_job_id_fkey FOREIGN KEY (job_id) REFERENCES ballast_private.jobs(id) ON DELETE CASCADE;
alter table ballast_private.steps add constraint steps_parent_step_id_fkey FOREIGN KEY (parent_step_id) REFERENCES ballast_private.steps(id) ON DELETE CASCADE;
alter table ballast_private.steps add constraint steps_pkey PRIMARY KEY (id);
CREATE INDEX steps_failed_idx ON ballast_private.steps USING btree (finished_at DESC) WHERE (status = 'failed'::text);
CREATE INDEX steps_live_idx ON ballast_private.steps USING btree (status, next_run_at) WHERE (status = ANY (ARRAY['queued'::text, 'running'::text, 'retrying'::text, 'waiting'::text, 'needs_review'::text]));
CREATE INDEX steps_parent_idx ON ballast_private.steps USING btree (parent_step_id, item_index) WHERE (parent_step_id IS NOT NULL);
CREATE INDEX steps_pending_idx ON ballast_private.steps USING btree (job_id) WHERE (status = 'pending'::text);
CREATE INDEX steps_queue_idx ON ballast_private.steps USING btree (priority, fair_key, ((attempts = 0)), id) WHERE ((status = 'queued'::text) AND (concurrency_key IS NULL));
CREATE INDEX steps_queued_concurrency_idx ON ballast_private.steps USING btree (concurrency_key, id) WHERE ((status = 'queued'::text) AND (concurrency_key IS NOT NULL));
CREATE INDEX steps_running_concurrency_idx ON ballast_private.steps USING btree (concurrency_key) WHERE ((status = 'running'::text) AND (concurrency_key IS NOT NULL));
CREATE INDEX steps_scheduled_idx ON ballast_private.steps USING btree (next_run_at) WHERE (status = 'scheduled'::text);
CREATE INDEX steps_waiting_deadline_idx ON ballast_private.steps USING btree (wait_deadline) WHERE (status = 'waiting'::text);
CREATE INDEX steps_waiting_key_idx ON ballast_private.steps USING btree (wait_key) WHERE (status = 'waiting'::text);
alter table ballast_private.steps enable row level security;
create policy tenant_rows on ballast_private.steps as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (job_id IN ( SELECT j.id
   FROM ballast_private.jobs j))));

create table ballast_private.token_chunks (
  step_id bigint not null,
  seq bigint generated always as identity not null,
  job_id bigint not null,
  tenant_id text not null,
  attempt_id bigint not null,
  segment integer not null,
  rung text,
  model text,
  start_offset integer not null,
  end_offset integer not null,
  text text not null,
  first boolean default false not null,
  done boolean default false not null,
  at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.token_chunks add constraint token_chunk_done_empty CHECK (((NOT done) OR (text = ''::text)));
alter table ballast_private.token_chunks add constraint token_chunk_offsets CHECK (((start_offset >= 0) AND (end_offset = (start_offset + char_length(text)))));
alter table ballast_private.token_chunks add constraint token_chunks_pkey PRIMARY KEY (step_id, seq);
alter table ballast_private.token_chunks enable row level security;
create policy tenant_rows on ballast_private.token_chunks as permissive for select to public using ((( SELECT ballast_private.caller_unrestricted() AS caller_unrestricted) OR (tenant_id = ( SELECT ballast_private.caller_tenant() AS caller_tenant))));

create table ballast_private.webhook_endpoints (
  path text not null,
  pipeline text not null,
  tenant_id text default 'default'::text not null,
  secrets text[] not null,
  input_path text[],
  enabled boolean default true not null,
  created_at timestamp with time zone default ballast.now() not null,
  updated_at timestamp with time zone default ballast.now() not null
);
alter table ballast_private.webhook_endpoints add constraint webhook_endpoints_has_secret CHECK ((cardinality(secrets) >= 1));
alter table ballast_private.webhook_endpoints add constraint webhook_endpoints_path_format CHECK ((path ~ '^[A-Za-z0-9._-]{1,200}$'::text));
alter table ballast_private.webhook_endpoints add constraint webhook_endpoints_pkey PRIMARY KEY (path);

create table ballast_private.webhook_refusals (
  id bigint generated always as identity not null,
  at timestamp with time zone default ballast.now() not null,
  path text not null,
  webhook_id text,
  reason text not null,
  detail text,
  remote_address text
);
alter table ballast_private.webhook_refusals add constraint webhook_refusals_pkey PRIMARY KEY (id);
alter table ballast_private.webhook_refusals add constraint webhook_refusals_reason CHECK ((reason = ANY (ARRAY['bad_signature'::text, 'old_timestamp'::text, 'missing_headers'::text, 'replay'::text, 'invalid_input'::text, 'too_large'::text, 'unknown_endpoint'::text, 'disabled'::text, 'unknown_pipeline'::text])));
CREATE INDEX webhook_refusals_at ON ballast_private.webhook_refusals USING btree (at);

create table ballast_private.workers (
  id text not null,
  pool_id text,
  hostname text not null,
  pid integer not null,
  concurrency integer not null,
  pipelines text[] default '{}'::text[] not null,
  started_at timestamp with time zone default ballast.now() not null,
  heartbeat_at timestamp with time zone default ballast.now() not null,
  stopped_at timestamp with time zone
);
alter table ballast_private.workers add constraint worker_concurrency_positive CHECK ((concurrency >= 1));
alter table ballast_private.workers add constraint worker_id_format CHECK (((id <> ''::text) AND (length(id) <= 200)));
alter table ballast_private.workers add constraint workers_pkey PRIMARY KEY (id);

-- ==================== functions ================================================================================

create function ballast._json_schema_alternatives(p_root jsonb, p_branches jsonb, p_value jsonb, p_path text, p_depth integer, p_exactly_one boolean, p_budget integer, p_regexes jsonb) returns TABLE(path text, message text)
language plpgsql immutable parallel safe
as $fn$
#variable_conflict use_column
declare
  v_value_type text := jsonb_typeof(p_value);
  v_count integer := jsonb_array_length(p_branches);
  v_errors jsonb[] := '{}';
  v_matched integer[] := '{}';
  v_all_types text[] := '{}';
  v_types text[];
  v_any_type boolean := false;
  v_all_values jsonb := '[]';
  v_values jsonb;
  v_candidates integer[] := '{}';
  v_narrowed integer[];
  v_first jsonb;
  v_branch jsonb;
  v_key text;
  v_disc_key text;
  v_allowed jsonb;
  v_best integer;
  v_i integer;
begin
  if p_budget <= 0 then
    return;
  end if;

  -- evaluate every branch
  for v_i in 1 .. v_count loop
    v_errors := v_errors || ballast._json_schema_collect(
      p_root, p_branches->(v_i - 1), p_value, p_path, p_depth + 1, p_budget, p_regexes);
    if v_errors[v_i] = '[]'::jsonb then
      v_matched := v_matched || v_i;
      if not p_exactly_one then
        return;
      end if;
    end if;
  end loop;

  if cardinality(v_matched) = 1 then
    return;
  elsif cardinality(v_matched) > 1 then
    path := p_path;
    message := 'matches more than one allowed shape (options '
      || array_to_string(v_matched[1:10], ', ')
      || case when cardinality(v_matched) > 10 then ', ...' else '' end
      || '); it must match exactly one';
    return next;
    return;
  end if;

  -- no branch accepts the type of the value: one plain type error
  for v_i in 1 .. v_count loop
    v_types := ballast._json_schema_declared_types(p_root, p_branches->(v_i - 1));
    if v_types is null then
      v_any_type := true;
    else
      v_all_types := v_all_types || v_types;
      if v_value_type = any(v_types) or (v_value_type = 'number' and 'integer' = any(v_types)) then
        v_candidates := v_candidates || v_i;
      end if;
    end if;
    if v_all_values is not null then
      v_values := ballast._json_schema_declared_values(p_root, p_branches->(v_i - 1));
      v_all_values := case when v_values is null then null else v_all_values || v_values end;
    end if;
  end loop;
  if v_any_type then
    v_candidates := array(select generate_series(1, v_count));
  elsif cardinality(v_candidates) = 0 then
    path := p_path;
    message := 'expected ' || ballast._json_schema_cut(ballast._json_schema_type_list(v_all_types))
      || ', got ' || v_value_type;
    return next;
    return;
  end if;

  -- a union of literals: list the allowed values
  if v_all_values is not null and jsonb_array_length(v_all_values) > 0 then
    path := p_path;
    message := ballast._json_schema_one_of_values(v_all_values, p_value);
    return next;
    return;
  end if;

  -- objects: look for a discriminator property (a literal in every candidate)
  if v_value_type = 'object' and cardinality(v_candidates) > 1 then
    v_first := ballast._json_schema_deref(p_root, p_branches->(v_candidates[1] - 1));
    for v_key in
      select k from jsonb_object_keys(
        case when jsonb_typeof(v_first->'properties') = 'object' then v_first->'properties' else '{}' end
      ) as t(k)
    loop
      v_disc_key := v_key;
      foreach v_i in array v_candidates loop
        v_branch := ballast._json_schema_deref(p_root, p_branches->(v_i - 1));
        if ballast._json_schema_declared_values(p_root, v_branch #> array['properties', v_key]) is null then
          v_disc_key := null;
          exit;
        end if;
      end loop;
      exit when v_disc_key is not null;
    end loop;

    if v_disc_key is not null then
      v_narrowed := '{}';
      v_allowed := '[]';
      foreach v_i in array v_candidates loop
        v_branch := ballast._json_schema_deref(p_root, p_branches->(v_i - 1));
        v_values := ballast._json_schema_declared_values(p_root, v_branch #> array['properties', v_disc_key]);
        v_allowed := v_allowed || v_values;
        if p_value ? v_disc_key and v_values @> jsonb_build_array(p_value->v_disc_key) then
          v_narrowed := v_narrowed || v_i;
        end if;
      end loop;
      if cardinality(v_narrowed) = 0 then
        path := ballast._json_schema_path_key(p_path, v_disc_key);
        if p_value ? v_disc_key then
          message := ballast._json_schema_one_of_values(v_allowed, p_value->v_disc_key);
        else
          message := 'required property is missing (must be one of '
            || ballast._json_schema_value_list(v_allowed) || ')';
        end if;
        return next;
        return;
      end if;
      v_candidates := v_narrowed;
    end if;
  end if;

  -- a single plausible branch: its errors are the explanation
  if cardinality(v_candidates) = 1 then
    return query
      select e->>0, e->>1
      from jsonb_array_elements(v_errors[v_candidates[1]]) with ordinality as t(e, ord)
      order by ord
      limit p_budget;
    return;
  end if;

  -- otherwise report the mismatch and the errors of the closest branch: the
  -- fewest errors, counting each property of the value that the branch
  -- declares as one error less (it is probably the shape that was meant)
  select c.i into v_best
  from unnest(v_candidates) with ordinality as c(i, ord)
  order by jsonb_array_length(v_errors[c.i]) - (
      select count(*)
      from jsonb_object_keys(
        case when v_value_type = 'object'
             and jsonb_typeof(ballast._json_schema_deref(p_root, p_branches->(c.i - 1))->'properties') = 'object'
          then ballast._json_schema_deref(p_root, p_branches->(c.i - 1))->'properties'
          else '{}'::jsonb end
      ) as k(key)
      where p_value ? k.key
    ),
    c.ord
  limit 1;
  path := p_path;
  message := 'does not match any of the ' || v_count
    || ' allowed shapes (closest: option ' || v_best || ', whose errors follow)';
  return next;
  return query
    select e->>0, e->>1
    from jsonb_array_elements(v_errors[v_best]) with ordinality as t(e, ord)
    order by ord
    limit p_budget - 1;
end
$fn$;

create function ballast._json_schema_collect(p_root jsonb, p_schema jsonb, p_value jsonb, p_path text, p_depth integer, p_budget integer, p_regexes jsonb) returns jsonb
language sql immutable parallel safe
as $fn$
  select coalesce(jsonb_agg(jsonb_build_array(w.path, w.message) order by w.ord), '[]'::jsonb)
  from ballast._json_schema_walk(p_root, p_schema, p_value, p_path, p_depth, p_budget, p_regexes)
    with ordinality as w(path, message, ord)
$fn$;

create function ballast._json_schema_cut(p_text text) returns text
language sql immutable parallel safe
as $fn$
  select case when char_length(p_text) > 60 then left(p_text, 57) || '...' else p_text end
$fn$;

create function ballast._json_schema_declared_types(p_root jsonb, p_schema jsonb, p_depth integer DEFAULT 0) returns text[]
language plpgsql immutable parallel safe
as $fn$
declare
  v_types text[] := '{}';
  v_branch jsonb;
  v_branch_types text[];
begin
  if p_depth > 32 then
    return null;
  end if;
  if jsonb_typeof(p_schema) = 'boolean' then
    return case when p_schema = 'false'::jsonb then '{}'::text[] else null end;
  end if;
  if jsonb_typeof(p_schema) is distinct from 'object' then
    return null;
  end if;
  if p_schema ? 'type' then
    if jsonb_typeof(p_schema->'type') = 'array' then
      v_types := array(select jsonb_array_elements_text(p_schema->'type'));
    else
      v_types := array[p_schema->>'type'];
    end if;
    if p_schema->'nullable' = 'true'::jsonb then
      v_types := v_types || 'null'::text;
    end if;
    return v_types;
  end if;
  if p_schema ? 'const' then
    return array[jsonb_typeof(p_schema->'const')];
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array' then
    return array(
      select distinct jsonb_typeof(v_item)
      from jsonb_array_elements(p_schema->'enum') as t(v_item)
      order by 1
    );
  end if;
  if p_schema ? '$ref' then
    return ballast._json_schema_declared_types(
      p_root, ballast._json_schema_resolve(p_root, p_schema->>'$ref'), p_depth + 1);
  end if;
  if jsonb_typeof(coalesce(p_schema->'anyOf', p_schema->'oneOf')) = 'array' then
    for v_branch in select jsonb_array_elements(coalesce(p_schema->'anyOf', p_schema->'oneOf')) loop
      v_branch_types := ballast._json_schema_declared_types(p_root, v_branch, p_depth + 1);
      if v_branch_types is null then
        return null;
      end if;
      v_types := v_types || v_branch_types;
    end loop;
    return v_types;
  end if;
  return null;
end
$fn$;

create function ballast._json_schema_declared_values(p_root jsonb, p_schema jsonb, p_depth integer DEFAULT 0) returns jsonb
language plpgsql immutable parallel safe
as $fn$
declare
  v_values jsonb := '[]';
  v_branch jsonb;
  v_branch_values jsonb;
begin
  if p_depth > 32 or jsonb_typeof(p_schema) is distinct from 'object' then
    return null;
  end if;
  if p_schema ? 'const' then
    return jsonb_build_array(p_schema->'const');
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array' then
    return p_schema->'enum';
  end if;
  if p_schema ? '$ref' then
    return ballast._json_schema_declared_values(
      p_root, ballast._json_schema_resolve(p_root, p_schema->>'$ref'), p_depth + 1);
  end if;
  if jsonb_typeof(coalesce(p_schema->'anyOf', p_schema->'oneOf')) = 'array' then
    for v_branch in select jsonb_array_elements(coalesce(p_schema->'anyOf', p_schema->'oneOf')) loop
      v_branch_values := ballast._json_schema_declared_values(p_root, v_branch, p_depth + 1);
      if v_branch_values is null then
        return null;
      end if;
      v_values := v_values || v_branch_values;
    end loop;
    return v_values;
  end if;
  return null;
end
$fn$;

create function ballast._json_schema_deref(p_root jsonb, p_schema jsonb) returns jsonb
language plpgsql immutable parallel safe
as $fn$
declare
  v_schema jsonb := p_schema;
  v_hops integer := 0;
begin
  while jsonb_typeof(v_schema) = 'object' and v_schema ? '$ref' and v_hops < 32 loop
    v_schema := ballast._json_schema_resolve(p_root, v_schema->>'$ref');
    v_hops := v_hops + 1;
  end loop;
  return v_schema;
end
$fn$;

create function ballast._json_schema_js_regex(p_pattern text) returns text
language plpgsql immutable parallel safe
as $fn$
declare
  v_out text[] := '{}';
  v_tok text;
  v_in_class boolean := false;
begin
  if strpos(p_pattern, '\') = 0 and strpos(p_pattern, '.') = 0 then
    return p_pattern;
  end if;
  -- tokens: a run of characters that never need translation, an \xHH escape, any other escape, one character
  for v_tok in
    select v_m[1] from regexp_matches(p_pattern, '[^][\\.]+|\\x[0-9A-Fa-f]{2}|\\.|.', 'g') as t(v_m)
  loop
    if left(v_tok, 1) = '\' and char_length(v_tok) > 1 then
      v_tok := case
        when char_length(v_tok) = 4 then '\u00' || substr(v_tok, 3)  -- only \xHH tokens are that long
        when v_tok = '\d' then case when v_in_class then '0-9' else '[0-9]' end
        when v_tok = '\w' then case when v_in_class then 'A-Za-z0-9_' else '[A-Za-z0-9_]' end
        when v_in_class then case when v_tok in ('\A', '\Z', '\m', '\M', '\y', '\Y') then substr(v_tok, 2) else v_tok end
        when v_tok = '\D' then '[^0-9]'
        when v_tok = '\W' then '[^A-Za-z0-9_]'
        when v_tok = '\b' then '\y'
        when v_tok = '\B' then '\Y'
        when v_tok in ('\A', '\Z', '\m', '\M', '\y', '\Y') then substr(v_tok, 2)
        else v_tok
      end;
    elsif v_in_class then
      if v_tok = ']' then
        v_in_class := false;
      end if;
    elsif v_tok = '[' then
      v_in_class := true;
    elsif v_tok = '.' then
      v_tok := '[^\n\r\u2028\u2029]';
    end if;
    v_out := v_out || v_tok;
  end loop;
  return array_to_string(v_out, '');
end
$fn$;

create function ballast._json_schema_match(p_string text, p_pattern text, p_regexes jsonb) returns boolean
language plpgsql immutable parallel safe
as $fn$
declare
  v_regex jsonb := p_regexes -> p_pattern;
begin
  if v_regex is null then
    v_regex := to_jsonb(ballast._json_schema_js_regex(p_pattern));
  elsif jsonb_typeof(v_regex) <> 'string' then
    return null;
  end if;
  return p_string ~ (v_regex #>> '{}');
exception
  when invalid_regular_expression or program_limit_exceeded then
    return null;
end
$fn$;

create function ballast._json_schema_matches(p_string text, p_pattern text) returns boolean
language plpgsql immutable parallel safe
as $fn$
begin
  return p_string ~ ballast._json_schema_js_regex(p_pattern);
exception
  when invalid_regular_expression or program_limit_exceeded then
    return null;
end
$fn$;

create function ballast._json_schema_one_of_values(p_allowed jsonb, p_value jsonb) returns text
language sql immutable parallel safe
as $fn$
  select case when jsonb_array_length(p_allowed) = 1 then 'must be ' else 'must be one of ' end
    || ballast._json_schema_value_list(p_allowed)
    || '; got ' || ballast._json_schema_show(p_value)
$fn$;

create function ballast._json_schema_path_key(p_path text, p_key text) returns text
language sql immutable parallel safe
as $fn$
  select case
    when char_length(p_key) > 60 then p_path || '[' || to_jsonb(left(p_key, 57) || '...')::text || ']'
    when p_key ~ '^[A-Za-z_$][A-Za-z0-9_$]*$' then
      case when p_path = '' then p_key else p_path || '.' || p_key end
    else p_path || '[' || to_jsonb(p_key)::text || ']'
  end
$fn$;

create function ballast._json_schema_regexes(p_schema jsonb) returns jsonb
language plpgsql immutable parallel safe
as $fn$
declare
  v_map jsonb := '{}';
  v_pattern text;
  v_regex text;
begin
  for v_pattern in
    select distinct v_found #>> '{}'
    from jsonb_path_query(p_schema, 'lax $.**.pattern ? (@.type() == "string")') as t(v_found)
    union
    select v_found #>> '{}'
    from jsonb_path_query(p_schema, 'lax $.**.patternProperties.keyvalue().key') as t(v_found)
  loop
    v_regex := ballast._json_schema_js_regex(v_pattern);
    begin
      perform '' ~ v_regex;
      v_map := v_map || jsonb_build_object(v_pattern, v_regex);
    exception
      when invalid_regular_expression or program_limit_exceeded then
        v_map := v_map || jsonb_build_object(v_pattern, null);
    end;
  end loop;
  return v_map;
end
$fn$;

create function ballast._json_schema_resolve(p_root jsonb, p_ref text) returns jsonb
language sql immutable parallel safe
as $fn$
  select case
    when p_ref in ('#', '') then p_root
    when p_ref like '#/%' then
      p_root #> array(
        select replace(replace(replace(v_part, '%25', '%'), '~1', '/'), '~0', '~')
        from unnest(string_to_array(substr(p_ref, 3), '/')) with ordinality as t(v_part, v_ord)
        order by v_ord
      )
    else null
  end
$fn$;

create function ballast._json_schema_show(p_value jsonb) returns text
language sql immutable parallel safe
as $fn$
  select case
    when char_length(p_value::text) > 60 then left(p_value::text, 57) || '...'
    else p_value::text
  end
$fn$;

create function ballast._json_schema_type_list(p_types text[]) returns text
language plpgsql immutable parallel safe
as $fn$
declare
  v_list text[] := '{}';
  v_type text;
  v_count integer;
begin
  foreach v_type in array coalesce(p_types, '{}') loop
    if v_type = any(v_list) then
      continue;
    end if;
    if v_type = 'integer' and 'number' = any(p_types) then
      continue;
    end if;
    v_list := v_list || v_type;
  end loop;
  v_count := coalesce(array_length(v_list, 1), 0);
  if v_count = 0 then
    return 'nothing';
  elsif v_count = 1 then
    return v_list[1];
  end if;
  return array_to_string(v_list[1:v_count - 1], ', ') || ' or ' || v_list[v_count];
end
$fn$;

create function ballast._json_schema_valid(p_root jsonb, p_schema jsonb, p_value jsonb, p_depth integer, p_regexes jsonb) returns boolean
language sql immutable parallel safe
as $fn$
  select not exists (
    select 1 from ballast._json_schema_walk(p_root, p_schema, p_value, '', p_depth, 1, p_regexes)
  )
$fn$;

create function ballast._json_schema_value_list(p_values jsonb) returns text
language sql immutable parallel safe
as $fn$
  with v_shown as (
    select v_i, ballast._json_schema_show(p_values -> v_i) as v_text
    from generate_series(0, least(jsonb_array_length(p_values), 10) - 1) as g(v_i)
  ), v_listed as (
    select v_i, v_text
    from (select v_i, v_text, sum(char_length(v_text) + 2) over (order by v_i) - char_length(v_text) - 2 as v_before
          from v_shown) as r
    where v_before < 240 or v_i = 0
  )
  select coalesce((select string_agg(v_text, ', ' order by v_i) from v_listed), '')
    || case when jsonb_array_length(p_values) > (select count(*) from v_listed)
         then ', ... (' || (jsonb_array_length(p_values) - (select count(*) from v_listed)) || ' more)' else '' end
$fn$;

create function ballast._json_schema_walk(p_root jsonb, p_schema jsonb, p_value jsonb, p_path text, p_depth integer, p_budget integer, p_regexes jsonb) returns TABLE(path text, message text)
language plpgsql immutable parallel safe
as $fn$
#variable_conflict use_column
declare
  v_left integer := p_budget;
  v_got bigint;
  v_type text := jsonb_typeof(p_value);
  v_types text[];
  v_limit jsonb;
  v_max jsonb;
  v_num numeric;
  v_str text;
  v_len integer;
  v_count integer;
  v_key text;
  v_sub jsonb;
  v_item jsonb;
  v_prefix jsonb;
  v_prefix_len integer := 0;
  v_rest jsonb;
  v_required text[];
  v_matched boolean;
  v_pattern text;
  v_i integer;
  v_j integer;
  v_child_path text;
  v_format text;
begin
  if v_left <= 0 then
    return;
  end if;
  if p_depth > 256 then
    raise exception 'JSON Schema validation nested too deeply at "%"', p_path
      using detail = 'The value is nested too deeply, or the schema has a $ref cycle that never descends into the value.',
            errcode = 'program_limit_exceeded';
  end if;

  -- boolean schemas
  if jsonb_typeof(p_schema) = 'boolean' then
    if p_schema = 'false'::jsonb then
      path := p_path;
      message := 'no value is allowed here';
      return next;
    end if;
    return;
  end if;
  if jsonb_typeof(p_schema) is distinct from 'object' then
    return;
  end if;

  -- OpenAPI 3.0 style nullable
  if v_type = 'null' and p_schema->'nullable' = 'true'::jsonb then
    return;
  end if;

  -- $ref (siblings still apply, as in draft 2020-12)
  if p_schema ? '$ref' then
    v_sub := ballast._json_schema_resolve(p_root, p_schema->>'$ref');
    if v_sub is null then
      path := p_path;
      message := 'contract error: cannot resolve $ref ' || ballast._json_schema_show(p_schema->'$ref');
      return next;
      v_left := v_left - 1;
    else
      return query select * from ballast._json_schema_walk(
        p_root, v_sub, p_value, p_path, p_depth + 1, v_left, p_regexes);
      get diagnostics v_got = row_count;
      v_left := v_left - v_got;
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- type: on a mismatch nothing else at this level is worth reporting
  if p_schema ? 'type' then
    if jsonb_typeof(p_schema->'type') = 'array' then
      v_types := array(select jsonb_array_elements_text(p_schema->'type'));
    else
      v_types := array[p_schema->>'type'];
    end if;
    if not (
      v_type = any(v_types)
      or (v_type = 'number' and 'integer' = any(v_types) and (p_value::numeric % 1) = 0)
    ) then
      path := p_path;
      if v_type = 'number' and 'integer' = any(v_types) then
        message := 'must be an integer; got ' || ballast._json_schema_show(p_value);
      else
        message := 'expected ' || ballast._json_schema_cut(ballast._json_schema_type_list(v_types))
          || ', got ' || v_type;
      end if;
      return next;
      return;
    end if;
  end if;

  -- const / enum
  if p_schema ? 'const' and p_value is distinct from p_schema->'const' then
    path := p_path;
    message := ballast._json_schema_one_of_values(jsonb_build_array(p_schema->'const'), p_value);
    return next;
    v_left := v_left - 1;
    if v_left <= 0 then
      return;
    end if;
  end if;
  if jsonb_typeof(p_schema->'enum') = 'array'
    and not exists (select 1 from jsonb_array_elements(p_schema->'enum') as t(v_e) where v_e = p_value) then
    path := p_path;
    message := ballast._json_schema_one_of_values(p_schema->'enum', p_value);
    return next;
    v_left := v_left - 1;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- numbers (a draft 4 boolean exclusiveMinimum/exclusiveMaximum modifies minimum/maximum)
  if v_type = 'number' then
    v_num := p_value::numeric;
    v_limit := p_schema->'minimum';
    if jsonb_typeof(v_limit) = 'number' then
      if p_schema->'exclusiveMinimum' = 'true'::jsonb then
        if v_num <= v_limit::numeric then
          path := p_path;
          message := 'must be > ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
          return next;
          v_left := v_left - 1;
        end if;
      elsif v_num < v_limit::numeric then
        path := p_path;
        message := 'must be >= ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
        return next;
        v_left := v_left - 1;
      end if;
    end if;
    v_limit := p_schema->'exclusiveMinimum';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_num <= v_limit::numeric then
      path := p_path;
      message := 'must be > ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'maximum';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' then
      if p_schema->'exclusiveMaximum' = 'true'::jsonb then
        if v_num >= v_limit::numeric then
          path := p_path;
          message := 'must be < ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
          return next;
          v_left := v_left - 1;
        end if;
      elsif v_num > v_limit::numeric then
        path := p_path;
        message := 'must be <= ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
        return next;
        v_left := v_left - 1;
      end if;
    end if;
    v_limit := p_schema->'exclusiveMaximum';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_num >= v_limit::numeric then
      path := p_path;
      message := 'must be < ' || ballast._json_schema_show(v_limit) || '; got ' || ballast._json_schema_show(p_value);
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'multipleOf';
    -- the quotient may miss an integer by binary floating-point noise, as
    -- JavaScript computes 0.1 * 3 = 0.30000000000000004; zod accepts that too
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_limit::numeric > 0
      and v_num % v_limit::numeric <> 0
      and abs(v_num / v_limit::numeric - round(v_num / v_limit::numeric))
          > 1e-9 * greatest(1, abs(v_num / v_limit::numeric)) then
      path := p_path;
      message := 'must be a multiple of ' || ballast._json_schema_show(v_limit)
        || '; got ' || ballast._json_schema_show(p_value);
      return next;
      v_left := v_left - 1;
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- strings
  if v_type = 'string' then
    v_str := p_value #>> '{}';
    v_len := char_length(v_str);
    v_limit := p_schema->'minLength';
    if jsonb_typeof(v_limit) = 'number' and v_len < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || ballast._json_schema_show(v_limit)
        || case when v_limit::numeric = 1 then ' character' else ' characters' end
        || '; got ' || v_len;
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'maxLength';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_len > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || ballast._json_schema_show(v_limit)
        || case when v_limit::numeric = 1 then ' character' else ' characters' end
        || '; got ' || v_len;
      return next;
      v_left := v_left - 1;
    end if;
    if v_left > 0 and jsonb_typeof(p_schema->'pattern') = 'string' then
      v_pattern := p_schema->>'pattern';
      if ballast._json_schema_match(v_str, v_pattern, p_regexes) = false then
        path := p_path;
        v_format := p_schema->>'format';
        message := case v_format
          when 'email' then 'must be a valid email address'
          when 'uuid' then 'must be a valid UUID'
          when 'guid' then 'must be a valid GUID'
          when 'date-time' then 'must be an ISO 8601 date-time (e.g. 2024-01-31T12:00:00Z)'
          when 'date' then 'must be an ISO 8601 date (YYYY-MM-DD)'
          when 'time' then 'must be an ISO 8601 time (HH:MM[:SS])'
          when 'duration' then 'must be an ISO 8601 duration (e.g. P1DT2H)'
          when 'ipv4' then 'must be a valid IPv4 address'
          when 'ipv6' then 'must be a valid IPv6 address'
          when 'cidrv4' then 'must be a valid IPv4 CIDR range'
          when 'cidrv6' then 'must be a valid IPv6 CIDR range'
          when 'e164' then 'must be an E.164 phone number (e.g. +14155552671)'
          when 'base64' then 'must be base64-encoded'
          when 'base64url' then 'must be base64url-encoded'
          when 'hex' then 'must be a hexadecimal string'
          when 'hostname' then 'must be a valid hostname'
          when 'emoji' then 'must consist of emoji'
          when 'jwt' then 'must be a JWT'
          when 'nanoid' then 'must be a valid nanoid'
          when 'ulid' then 'must be a valid ULID'
          when 'cuid' then 'must be a valid CUID'
          when 'cuid2' then 'must be a valid CUID2'
          when 'ksuid' then 'must be a valid KSUID'
          when 'lowercase' then 'must not contain upper-case letters'
          when 'uppercase' then 'must not contain lower-case letters'
          else 'must match pattern ' || ballast._json_schema_cut(v_pattern)
        end || '; got ' || ballast._json_schema_show(p_value);
        return next;
        v_left := v_left - 1;
      end if;
    end if;
    if v_left <= 0 then
      return;
    end if;
  end if;

  -- arrays
  if v_type = 'array' then
    v_count := jsonb_array_length(p_value);
    v_limit := p_schema->'minItems';
    if jsonb_typeof(v_limit) = 'number' and v_count < v_limit::numeric then
      path := p_path;
      message := 'must have at least ' || ballast._json_schema_show(v_limit) || ' item(s); got ' || v_count;
      return next;
      v_left := v_left - 1;
    end if;
    v_limit := p_schema->'maxItems';
    if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_count > v_limit::numeric then
      path := p_path;
      message := 'must have at most ' || ballast._json_schema_show(v_limit) || ' item(s); got ' || v_count;
      return next;
      v_left := v_left - 1;
    end if;
    if v_left <= 0 then
      return;
    end if;

    -- tuple part: prefixItems (2020-12) or an items array (draft 7)
    if jsonb_typeof(p_schema->'prefixItems') = 'array' then
      v_prefix := p_schema->'prefixItems';
      v_rest := p_schema->'items';
    elsif jsonb_typeof(p_schema->'items') = 'array' then
      v_prefix := p_schema->'items';
      v_rest := p_schema->'additionalItems';
    else
      v_prefix := '[]';
      v_rest := p_schema->'items';
    end if;
    v_prefix_len := jsonb_array_length(v_prefix);
    if v_prefix_len > 0 or v_rest is not null then
      for v_i in 0 .. v_count - 1 loop
        v_child_path := p_path || '[' || v_i || ']';
        if v_i < v_prefix_len then
          return query select * from ballast._json_schema_walk(
            p_root, v_prefix->v_i, p_value->v_i, v_child_path, p_depth + 1, v_left, p_regexes);
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
        elsif v_rest is null then
          exit;
        elsif v_rest = 'false'::jsonb then
          -- zod's tuples also set maxItems, which has already reported this
          exit when jsonb_typeof(p_schema->'maxItems') = 'number'
            and (p_schema->'maxItems')::numeric <= v_prefix_len;
          path := v_child_path;
          message := 'unexpected item (not allowed by the contract, which allows at most '
            || v_prefix_len || ' item(s))';
          return next;
          v_left := v_left - 1;
        else
          return query select * from ballast._json_schema_walk(
            p_root, v_rest, p_value->v_i, v_child_path, p_depth + 1, v_left, p_regexes);
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
        end if;
        if v_left <= 0 then
          return;
        end if;
      end loop;
    end if;

    -- one sort finds every repeated item and its first occurrence (jsonb equality: 1 = 1.0, key order ignored)
    if p_schema->'uniqueItems' = 'true'::jsonb then
      for v_i, v_j in
        select d.ord - 1, d.first_ord - 1
        from (
          select e.ord, min(e.ord) over (partition by e.item) as first_ord
          from jsonb_array_elements(p_value) with ordinality as e(item, ord)
        ) as d
        where d.ord > d.first_ord
        order by d.ord
        limit v_left
      loop
        path := p_path || '[' || v_i || ']';
        message := 'duplicate item (same as item ' || v_j || '); items must be unique';
        return next;
        v_left := v_left - 1;
      end loop;
      if v_left <= 0 then
        return;
      end if;
    end if;

    if p_schema ? 'contains' then
      v_limit := coalesce(p_schema->'minContains', '1'::jsonb);
      v_max := p_schema->'maxContains';
      if jsonb_typeof(v_limit) <> 'number' then
        v_limit := '1'::jsonb;
      end if;
      if jsonb_typeof(v_max) <> 'number' then
        v_max := null;
      end if;
      v_len := 0;
      v_matched := false;
      for v_item in select jsonb_array_elements(p_value) loop
        if ballast._json_schema_valid(p_root, p_schema->'contains', v_item, p_depth + 1, p_regexes) then
          v_len := v_len + 1;
          -- the answer is known once the minimum is reached and the maximum is either absent or exceeded
          v_matched := v_len >= v_limit::numeric and (v_max is null or v_len > v_max::numeric);
          exit when v_matched;
        end if;
      end loop;
      if v_len < v_limit::numeric then
        path := p_path;
        message := 'must contain at least ' || ballast._json_schema_show(v_limit)
          || ' item(s) of the required shape; got ' || v_len;
        return next;
        v_left := v_left - 1;
      end if;
      if v_left > 0 and v_max is not null and v_len > v_max::numeric then
        path := p_path;
        message := 'must contain at most ' || ballast._json_schema_show(v_max)
          || ' item(s) of the given shape; got ' || v_len || case when v_matched then ' or more' else '' end;
        return next;
        v_left := v_left - 1;
      end if;
      if v_left <= 0 then
        return;
      end if;
    end if;
  end if;

  -- objects
  if v_type = 'object' then
    if p_schema ? 'minProperties' or p_schema ? 'maxProperties' then
      v_count := (select count(*) from jsonb_object_keys(p_value));
      v_limit := p_schema->'minProperties';
      if jsonb_typeof(v_limit) = 'number' and v_count < v_limit::numeric then
        path := p_path;
        message := 'must have at least ' || ballast._json_schema_show(v_limit) || ' property(ies); got ' || v_count;
        return next;
        v_left := v_left - 1;
      end if;
      v_limit := p_schema->'maxProperties';
      if v_left > 0 and jsonb_typeof(v_limit) = 'number' and v_count > v_limit::numeric then
        path := p_path;
        message := 'must have at most ' || ballast._json_schema_show(v_limit) || ' property(ies); got ' || v_count;
        return next;
        v_left := v_left - 1;
      end if;
      if v_left <= 0 then
        return;
      end if;
    end if;

    if jsonb_typeof(p_schema->'required') = 'array' then
      v_required := array(select jsonb_array_elements_text(p_schema->'required'));
    else
      v_required := '{}';
    end if;

    -- declared properties, reporting missing required ones in the same pass
    if jsonb_typeof(p_schema->'properties') = 'object' then
      for v_key, v_sub in select * from jsonb_each(p_schema->'properties') loop
        v_child_path := ballast._json_schema_path_key(p_path, v_key);
        if p_value ? v_key then
          return query select * from ballast._json_schema_walk(
            p_root, v_sub, p_value->v_key, v_child_path, p_depth + 1, v_left, p_regexes);
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
        elsif v_key = any(v_required) then
          path := v_child_path;
          message := 'required property is missing';
          return next;
          v_left := v_left - 1;
        end if;
        if v_left <= 0 then
          return;
        end if;
      end loop;
    end if;
    -- required properties that are not declared in properties
    foreach v_key in array v_required loop
      if not (p_value ? v_key)
        and not coalesce((p_schema->'properties') ? v_key, false) then
        path := ballast._json_schema_path_key(p_path, v_key);
        message := 'required property is missing';
        return next;
        v_left := v_left - 1;
        if v_left <= 0 then
          return;
        end if;
      end if;
    end loop;

    -- every present key: propertyNames, patternProperties, additionalProperties
    if p_schema ? 'propertyNames' or p_schema ? 'patternProperties' or p_schema ? 'additionalProperties' then
      for v_key, v_item in select * from jsonb_each(p_value) loop
        v_child_path := ballast._json_schema_path_key(p_path, v_key);
        if p_schema ? 'propertyNames' then
          return query
            select v_child_path, 'invalid property name: ' || w.message
            from ballast._json_schema_walk(p_root, p_schema->'propertyNames', to_jsonb(v_key), v_child_path,
                                           p_depth + 1, v_left, p_regexes)
              with ordinality as w(path, message, ord)
            order by w.ord;
          get diagnostics v_got = row_count;
          v_left := v_left - v_got;
          if v_left <= 0 then
            return;
          end if;
        end if;
        v_matched := coalesce((p_schema->'properties') ? v_key, false);
        if jsonb_typeof(p_schema->'patternProperties') = 'object' then
          for v_pattern, v_sub in select * from jsonb_each(p_schema->'patternProperties') loop
            if ballast._json_schema_match(v_key, v_pattern, p_regexes) then
              v_matched := true;
              return query select * from ballast._json_schema_walk(
                p_root, v_sub, v_item, v_child_path, p_depth + 1, v_left, p_regexes);
              get diagnostics v_got = row_count;
              v_left := v_left - v_got;
              if v_left <= 0 then
                return;
              end if;
            end if;
          end loop;
        end if;
        if not v_matched and p_schema ? 'additionalProperties' then
          if p_schema->'additionalProperties' = 'false'::jsonb then
            path := v_child_path;
            message := 'unknown property (not allowed by the contract)';
            return next;
            v_left := v_left - 1;
          else
            return query select * from ballast._json_schema_walk(
              p_root, p_schema->'additionalProperties', v_item, v_child_path, p_depth + 1, v_left, p_regexes);
            get diagnostics v_got = row_count;
            v_left := v_left - v_got;
          end if;
          if v_left <= 0 then
            return;
          end if;
        end if;
      end loop;
    end if;
  end if;

  -- combinators
  if jsonb_typeof(p_schema->'allOf') = 'array' then
    for v_sub in select jsonb_array_elements(p_schema->'allOf') loop
      return query select * from ballast._json_schema_walk(
        p_root, v_sub, p_value, p_path, p_depth + 1, v_left, p_regexes);
      get diagnostics v_got = row_count;
      v_left := v_left - v_got;
      if v_left <= 0 then
        return;
      end if;
    end loop;
  end if;
  if jsonb_typeof(p_schema->'anyOf') = 'array' then
    return query select * from ballast._json_schema_alternatives(
      p_root, p_schema->'anyOf', p_value, p_path, p_depth, false, v_left, p_regexes);
    get diagnostics v_got = row_count;
    v_left := v_left - v_got;
    if v_left <= 0 then
      return;
    end if;
  end if;
  if jsonb_typeof(p_schema->'oneOf') = 'array' then
    return query select * from ballast._json_schema_alternatives(
      p_root, p_schema->'oneOf', p_value, p_path, p_depth, true, v_left, p_regexes);
    get diagnostics v_got = row_count;
    v_left := v_left - v_got;
    if v_left <= 0 then
      return;
    end if;
  end if;
  if p_schema ? 'not' then
    if ballast._json_schema_valid(p_root, p_schema->'not', p_value, p_depth + 1, p_regexes) then
      path := p_path;
      message := case
        when p_schema->'not' in ('{}'::jsonb, 'true'::jsonb) then 'no value is allowed here'
        else 'must not match the excluded shape'
      end;
      return next;
      v_left := v_left - 1;
      if v_left <= 0 then
        return;
      end if;
    end if;
  end if;
  if p_schema ? 'if' then
    if ballast._json_schema_valid(p_root, p_schema->'if', p_value, p_depth + 1, p_regexes) then
      if p_schema ? 'then' then
        return query select * from ballast._json_schema_walk(
          p_root, p_schema->'then', p_value, p_path, p_depth + 1, v_left, p_regexes);
      end if;
    elsif p_schema ? 'else' then
      return query select * from ballast._json_schema_walk(
        p_root, p_schema->'else', p_value, p_path, p_depth + 1, v_left, p_regexes);
    end if;
  end if;
end
$fn$;

create function ballast.ack_alert(p_id bigint, p_actor text DEFAULT NULL::text, p_note text DEFAULT NULL::text) returns TABLE(alert_id bigint, acked_by text, acked_at timestamp with time zone)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
begin
  return query
  update ballast_private.alerts a set acked_by = coalesce(ballast_private.caller_actor(p_actor), session_user::text),
         acked_at = ballast.now(), ack_note = p_note
   where a.id = p_id
  returning a.id, a.acked_by, a.acked_at;
  if not found then
    raise exception using errcode = 'BA007', message = format('alert %s does not exist', coalesce(p_id::text, 'null')),
      hint = 'List the alerts with select * from ballast.alerts.';
  end if;
end
$fn$;

create function ballast.add_eval_case(p_dataset text, p_key text, p_input jsonb, p_reference jsonb DEFAULT NULL::jsonb, p_checks jsonb DEFAULT '[]'::jsonb, p_tags text[] DEFAULT '{}'::text[], p_source jsonb DEFAULT NULL::jsonb, p_actor text DEFAULT NULL::text) returns TABLE(case_id bigint, case_key text, dataset_version integer)
language sql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
  select * from ballast.add_eval_cases(p_dataset,
    jsonb_build_array(jsonb_build_object('key', p_key, 'input', p_input, 'reference', p_reference,
                                         'checks', coalesce(p_checks, '[]'), 'tags', to_jsonb(coalesce(p_tags, '{}')))
                      || case when p_source is null then '{}'::jsonb else jsonb_build_object('source', p_source) end),
    p_actor)
$fn$;

create function ballast.add_eval_cases(p_dataset text, p_cases jsonb, p_actor text DEFAULT NULL::text) returns TABLE(case_id bigint, case_key text, dataset_version integer)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_version integer;
  v_case jsonb;
  v_i integer := 0;
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  if p_cases is null or jsonb_typeof(p_cases) <> 'array' or jsonb_array_length(p_cases) = 0 then
    perform ballast_private.bad_argument('cases', 'is not a non-empty JSON array',
      'Pass [{"key": "c1", "input": {"input": {...}}, "reference": {...}}, ...].');
  end if;
  if jsonb_array_length(p_cases) > 10000 then
    perform ballast_private.bad_argument('cases', format('has %s cases, more than 10000 in one call', jsonb_array_length(p_cases)),
      'Add them in batches of at most 10000.');
  end if;
  for v_case in select e from jsonb_array_elements(p_cases) e loop
    v_i := v_i + 1;
    if jsonb_typeof(v_case) <> 'object' then
      perform ballast_private.bad_argument(format('cases[%s]', v_i), 'is not an object', 'Give each case as {"key", "input", "reference", ...}.');
    end if;
    if jsonb_typeof(v_case -> 'key') is distinct from 'string' or v_case ->> 'key' = '' or octet_length(v_case ->> 'key') > 200 then
      perform ballast_private.bad_argument(format('cases[%s].key', v_i), 'is missing, not a string, empty or longer than 200 bytes',
        'Name each case with a key unique in the dataset, e.g. "refund-angry-1".');
    end if;
    if jsonb_typeof(v_case -> 'input') is distinct from 'object' then
      perform ballast_private.bad_argument(format('cases[%s].input', v_i), 'is missing or not an object',
        'Give the variables the step renders its prompt with, e.g. {"input": {"text": "..."}}.');
    end if;
    if v_case ? 'checks' and jsonb_typeof(v_case -> 'checks') <> 'array' then
      perform ballast_private.bad_argument(format('cases[%s].checks', v_i), 'is not an array', 'Give per-case scorers as [{"kind": "numeric", "path": "score", "tolerance": 0.1}].');
    end if;
    if v_case ? 'checks' then
      perform ballast_private.check_scorers(v_case -> 'checks', format('cases[%s].checks', v_i));
    end if;
    if v_case ? 'tags' and (jsonb_typeof(v_case -> 'tags') <> 'array'
                            or exists (select 1 from jsonb_array_elements(v_case -> 'tags') t where jsonb_typeof(t) <> 'string')) then
      perform ballast_private.bad_argument(format('cases[%s].tags', v_i), 'is not an array of strings', 'e.g. ["refunds", "angry"].');
    end if;
  end loop;
  if (select count(distinct e ->> 'key') from jsonb_array_elements(p_cases) e) < jsonb_array_length(p_cases) then
    perform ballast_private.bad_argument('cases', 'names a key twice', 'Give each case of one call its own key.');
  end if;

  perform * from ballast.create_dataset(p_dataset, null, v_actor);
  update ballast_private.eval_datasets d set version = d.version + 1, updated_at = ballast.now()
   where d.name = p_dataset returning d.version into v_version;
  update ballast_private.eval_cases c set removed_in_version = v_version
   where c.dataset = p_dataset and c.removed_in_version is null
     and c.case_key in (select e ->> 'key' from jsonb_array_elements(p_cases) e);
  return query
  insert into ballast_private.eval_cases as c (dataset, case_key, input, reference, checks, tags, source, added_in_version, added_by)
  select p_dataset, e ->> 'key', e -> 'input', nullif(e -> 'reference', 'null'::jsonb), coalesce(e -> 'checks', '[]'),
         coalesce((select array_agg(t) from jsonb_array_elements_text(e -> 'tags') t), '{}'),
         coalesce(nullif(e -> 'source', 'null'::jsonb), '{"kind": "manual"}'), v_version, v_actor
    from jsonb_array_elements(p_cases) with ordinality as x(e, ord)
   order by ord
  returning c.id, c.case_key, v_version;
end
$fn$;

create function ballast.begin_effect(p_attempt_id bigint, p_key text) returns TABLE(done boolean, result jsonb, earlier_attempts integer, idempotency_key text)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_effect ballast_private.effects;
  v_earlier integer;
begin
  perform ballast_private.check_effect_key(p_key);
  v_step := ballast_private.running_attempt(p_attempt_id);
  select * into v_effect from ballast_private.effects e where e.step_id = v_step.id and e.key = p_key;
  if v_effect.step_id is null then
    insert into ballast_private.effect_intents (step_id, key, attempt_id)
    values (v_step.id, p_key, p_attempt_id)
    on conflict do nothing;
  end if;
  select count(*) into v_earlier from ballast_private.effect_intents i
   where i.step_id = v_step.id and i.key = p_key and i.attempt_id <> p_attempt_id
     and i.attempt_id is distinct from v_effect.attempt_id;
  return query
  select v_effect.step_id is not null, v_effect.result, v_earlier,
         'ballast:' || v_step.job_id || ':' || v_step.name || ':' || p_key;
end
$fn$;

create function ballast.begin_model_call(p_attempt_id bigint, p_provider text, p_model text, p_input_tokens_estimate integer, p_max_output_tokens integer) returns TABLE(cooldown_until timestamp with time zone, cooldown_reason text, reservation_id bigint, estimate_usd numeric, budget_exhausted boolean, budget_message text, resume_at timestamp with time zone, on_exhausted text, cooldown_ms integer)
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_tenant text;
  v_cool ballast_private.provider_cooldowns;
  v_price ballast_private.model_prices;
  v_estimate numeric;
  v_budget ballast_private.budgets;
  v_start timestamptz;
  v_end timestamptz;
  v_usage ballast_private.budget_usage;
  v_reservation bigint;
begin
  if p_input_tokens_estimate < 0 or p_max_output_tokens < 0 then
    perform ballast_private.bad_argument('estimate', format('input %s, output %s: token counts must be >= 0',
      p_input_tokens_estimate, p_max_output_tokens), 'Pass the prompt''s estimated tokens and the call''s max output tokens.');
  end if;
  select j.tenant_id into v_tenant
    from ballast_private.attempts a join ballast_private.jobs j on j.id = a.job_id where a.id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  select * into v_cool from ballast_private.provider_cooldowns c
   where c.provider = p_provider and c.model in (p_model, '*') and c.until > v_now
   order by c.until desc limit 1;
  if found then
    return query select v_cool.until, v_cool.reason, null::bigint, null::numeric, false, null::text, null::timestamptz,
                        null::text, ballast_private.cooldown_left_ms(v_cool.until, v_now);
    return;
  end if;
  select * into v_price from ballast.model_price(p_provider, p_model, v_now);
  v_estimate := round((coalesce(p_input_tokens_estimate, 0) * coalesce(v_price.input_per_mtok, 0)
                       + coalesce(p_max_output_tokens, 0) * coalesce(v_price.output_per_mtok, 0)) / 1000000.0, 8);
  select * into v_budget from ballast_private.budgets b where b.tenant_id = v_tenant;
  if not found then
    return query select null::timestamptz, null::text, null::bigint, v_estimate, false, null::text, null::timestamptz,
                        null::text, null::integer;
    return;
  end if;
  v_start := ballast_private.budget_period_start(v_budget.period, v_now);
  v_end := v_start + ('1 ' || v_budget.period)::interval;
  insert into ballast_private.budget_usage (tenant_id, period_start) values (v_tenant, v_start)
  on conflict do nothing;
  -- Reservations whose attempt is over without having settled them (the worker died during the call) would hold
  -- budget for ever: expire them, counting their estimate as spent (the call may have been made and billed).
  with stale as (
    update ballast_private.budget_reservations r
       set status = 'expired', actual_usd = r.estimate_usd, settled_at = v_now
     where r.tenant_id = v_tenant and r.period_start = v_start and r.status = 'open'
       and not exists (select 1 from ballast_private.attempts a where a.id = r.attempt_id and a.outcome = 'running')
    returning r.estimate_usd as stale_estimate)
  update ballast_private.budget_usage u
     set reserved_usd = greatest(u.reserved_usd - s.total, 0), spent_usd = u.spent_usd + s.total
    from (select sum(st.stale_estimate) as total from stale st) s
   where s.total is not null and u.tenant_id = v_tenant and u.period_start = v_start;
  update ballast_private.budget_usage u set reserved_usd = u.reserved_usd + v_estimate
   where u.tenant_id = v_tenant and u.period_start = v_start
     and u.spent_usd + u.reserved_usd + v_estimate <= v_budget.limit_usd
  returning * into v_usage;
  if not found then
    select * into v_usage from ballast_private.budget_usage u where u.tenant_id = v_tenant and u.period_start = v_start;
    return query select null::timestamptz, null::text, null::bigint, v_estimate, true,
      format('budget of tenant %s exhausted: %s USD spent and %s USD reserved of %s USD for the %s starting %s; this call could cost up to %s USD',
             v_tenant, trim_scale(round(v_usage.spent_usd, 6)), trim_scale(round(v_usage.reserved_usd, 6)),
             trim_scale(v_budget.limit_usd), v_budget.period, to_char(v_start at time zone 'UTC', 'YYYY-MM-DD'),
             trim_scale(round(v_estimate, 6))),
      v_end, v_budget.on_exhausted, null::integer;
    return;
  end if;
  insert into ballast_private.budget_reservations (tenant_id, period_start, attempt_id, estimate_usd)
  values (v_tenant, v_start, p_attempt_id, v_estimate)
  returning id into v_reservation;
  return query select null::timestamptz, null::text, v_reservation, v_estimate, false, null::text, null::timestamptz,
                      null::text, null::integer;
end
$fn$;

create function ballast.begin_transactional_effect(p_attempt_id bigint, p_key text) returns TABLE(done boolean, result jsonb)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_effect ballast_private.effects;
begin
  perform ballast_private.check_effect_key(p_key);
  v_step := ballast_private.running_attempt(p_attempt_id);
  select * into v_effect from ballast_private.effects e where e.step_id = v_step.id and e.key = p_key;
  return query select v_effect.step_id is not null, v_effect.result;
end
$fn$;

create function ballast.bind_role_tenant(p_role name, p_tenant_id text) returns void
language plpgsql volatile
as $fn$
begin
  if not exists (select 1 from pg_roles where rolname = p_role) then
    perform ballast_private.bad_argument('role', format('%L is not a role of this server', p_role), 'Create the login first (create role ... login).');
  end if;
  if p_tenant_id is null then
    delete from ballast_private.role_tenants where role_name = p_role;
  else
    perform ballast_private.check_key_text('tenant_id', p_tenant_id, 200, 'Pass a tenant id of 1 to 200 bytes.');
    insert into ballast_private.role_tenants (role_name, tenant_id) values (p_role, p_tenant_id)
    on conflict (role_name) do update set tenant_id = excluded.tenant_id, bound_at = ballast.now();
  end if;
end
$fn$;

create function ballast.cancel_job(p_job_id bigint, p_reason text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns TABLE(job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  perform ballast_private.require_tenant((select j.tenant_id from ballast_private.jobs j where j.id = p_job_id),
                                         format('job %s', p_job_id));
  return query select * from ballast_private.cancel_job(p_job_id, p_reason, ballast_private.caller_actor(p_actor));
end
$fn$;

create function ballast.check_alerts(p_min_interval interval DEFAULT NULL::interval) returns TABLE(alert_id bigint, kind text, change text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_now timestamptz := ballast.now();
  v_drift_raised bigint[] := '{}';
  v_drift_resolved bigint[] := '{}';
  v_budget_raised bigint[] := '{}';
  v_budget_resolved bigint[] := '{}';
begin
  if not pg_try_advisory_xact_lock(hashtextextended('ballast.check_alerts', 0)) then
    return;
  end if;
  if p_min_interval is not null
     and exists (select 1 from ballast_private.alert_checks c where c.last_at > v_now - p_min_interval and c.last_at <= v_now) then
    return;
  end if;
  insert into ballast_private.alert_checks as c (id, last_at) values (1, v_now)
  on conflict (id) do update set last_at = excluded.last_at;

  if exists (select 1 from ballast_private.drift_rules) then
    with rules as (
      select r.*, v_now - r.window_size as w_from,
             coalesce(r.baseline_from, v_now - r.window_size - r.baseline_size) as b_from,
             coalesce(r.baseline_until, v_now - r.window_size) as b_until
        from ballast_private.drift_rules r
    ), win as (
      select r.id as rule_id, s.pipeline, s.step_name, s.prompt_name, s.prompt_version, s.model, s.attempts,
             (to_jsonb(s) ->> r.metric)::numeric as value
        from rules r cross join lateral ballast.quality_stats(r.w_from, v_now, r.pipeline) s
       where (r.step_name is null or s.step_name = r.step_name) and (r.prompt_name is null or s.prompt_name = r.prompt_name)
         and (r.prompt_version is null or s.prompt_version = r.prompt_version) and (r.model is null or s.model = r.model)
    ), base as (
      select r.id as rule_id, s.step_name, s.prompt_name, s.prompt_version, s.model, s.attempts,
             (to_jsonb(s) ->> r.metric)::numeric as value
        from rules r cross join lateral ballast.quality_stats(r.b_from, r.b_until, r.pipeline) s
       where (r.step_name is null or s.step_name = r.step_name) and (r.prompt_name is null or s.prompt_name = r.prompt_name)
         and (r.prompt_version is null or s.prompt_version = r.prompt_version) and (r.model is null or s.model = r.model)
    ), eval as (
      select r.id as rule_id, r.name, r.metric, r.threshold, w.attempts, b.attempts as b_attempts, w.value, b.value as baseline,
             w.pipeline || '/' || w.step_name || '/' || coalesce(w.prompt_name || '@' || w.prompt_version, '-') || '/' || w.model as group_key,
             jsonb_build_object('pipeline', w.pipeline, 'step', w.step_name, 'prompt_name', w.prompt_name,
                                'prompt_version', w.prompt_version, 'model', w.model) as group_value,
             ballast_private.drift_breached(r.direction, r.change, r.threshold, w.value, b.value) as breached
        from rules r
        join win w on w.rule_id = r.id
        join base b on b.rule_id = r.id and b.step_name = w.step_name and b.model = w.model
                   and b.prompt_name is not distinct from w.prompt_name and b.prompt_version is not distinct from w.prompt_version
       where w.attempts >= r.min_samples and b.attempts >= r.min_samples
    ), raised as (
      insert into ballast_private.alerts as a (kind, rule_id, rule_name, group_key, group_value, metric, value, baseline,
                                               threshold, samples, baseline_samples, raised_at)
      select 'drift', e.rule_id, e.name, e.group_key, e.group_value, e.metric, e.value, e.baseline, e.threshold,
             e.attempts, e.b_attempts, v_now
        from eval e where e.breached
      on conflict (rule_id, group_key) where kind = 'drift' and resolved_at is null do nothing
      returning a.id
    ), resolved as (
      update ballast_private.alerts a set resolved_at = v_now
        from eval e
       where a.kind = 'drift' and a.resolved_at is null and a.rule_id = e.rule_id and a.group_key = e.group_key
         and e.breached = false
      returning a.id
    )
    select array(select id from raised order by id), array(select id from resolved order by id)
      into v_drift_raised, v_drift_resolved;
  end if;

  if exists (select 1 from ballast_private.budget_alert_rules)
     or exists (select 1 from ballast_private.alerts a where a.kind = 'budget' and a.resolved_at is null) then
    -- (Its own statement: the CTEs of one statement run in no set order, and the inserts below would meet these rows.)
    delete from ballast_private.budget_spend_checked;
    with spend as materialized (
      select * from ballast_private.budget_spend(v_now)
    ), seen as (
      insert into ballast_private.budget_spend_checked (rule_id, rule_name, scope, scope_key, tenant_id, period_start,
                                                        spent_usd, limit_usd, checked_at)
      select s.rule_id, s.rule_name, s.scope, s.scope_key, s.tenant_id, s.period_start, s.spent_usd, s.limit_usd, v_now
        from spend s
    ), raised as (
      insert into ballast_private.alerts as a (kind, rule_id, rule_name, group_key, group_value, tenant_id, metric, value,
                                               threshold, period_start, percent, raised_at)
      select 'budget', s.rule_id, s.rule_name, s.scope_key,
             jsonb_build_object('scope', s.scope, 'value', s.scope_value, 'tenant_id', s.tenant_id, 'period', s.period,
                                'limit_usd', s.limit_usd),
             s.tenant_id, 'spend_usd', s.spent_usd, round(s.limit_usd * p.pct / 100.0, 8), s.period_start, p.pct, v_now
        from spend s cross join lateral unnest(s.percents) p(pct)
       where s.spent_usd >= s.limit_usd * p.pct / 100.0
      on conflict (rule_id, group_key, period_start, percent) where kind = 'budget' do nothing
      returning a.id
    ), ended as (
      update ballast_private.alerts a set resolved_at = v_now
       where a.kind = 'budget' and a.resolved_at is null
         and a.period_start + ('1 ' || (a.group_value ->> 'period'))::interval <= v_now
      returning a.id
    )
    select array(select id from raised order by id), array(select id from ended order by id)
      into v_budget_raised, v_budget_resolved;
  end if;

  if cardinality(v_drift_raised || v_drift_resolved || v_budget_raised || v_budget_resolved) > 0 then
    perform pg_notify('ballast_alerts', json_build_object(
      'raised', to_json(array(select x from unnest(v_drift_raised || v_budget_raised) x order by x)),
      'resolved', to_json(array(select x from unnest(v_drift_resolved || v_budget_resolved) x order by x)))::text);
  end if;
  return query
  select x, 'drift', 'raised' from unnest(v_drift_raised) x
  union all select x, 'drift', 'resolved' from unnest(v_drift_resolved) x
  union all select x, 'budget', 'raised' from unnest(v_budget_raised) x
  union all select x, 'budget', 'resolved' from unnest(v_budget_resolved) x;
end
$fn$;

create function ballast.claim_step(p_step_id bigint, p_worker_id text, p_lease_ms integer DEFAULT 30000) returns SETOF ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_running int;
  v_attempt_id bigint;
  v_lease timestamptz;
begin
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  select * into v_step from ballast_private.steps s where s.id = p_step_id for update skip locked;
  if not found then
    return;
  end if;
  if v_step.status = 'retrying' then
    if v_step.next_run_at > v_now then
      return;
    end if;
    update ballast_private.steps s set status = 'queued', queued_at = v_now, next_run_at = null
     where s.id = p_step_id;
  elsif v_step.status <> 'queued' then
    return;
  end if;

  -- The gates of claim_steps hold this step back too (a paused key, a limit, a closed model gate): parked, not claimed.
  if exists (select 1 from ballast_private.pauses z where z.until is null or z.until > v_now)
     or exists (select 1 from ballast_private.limits) then
    if cardinality(ballast_private.gate_steps(array[p_step_id], v_now)) = 0 then
      return;
    end if;
  end if;
  if exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
     or exists (select 1 from ballast_private.budgets b where b.on_exhausted = 'pause') then
    if cardinality(ballast_private.park_gated_steps(array[p_step_id], v_now)) = 0 then
      return;
    end if;
  end if;

  if v_step.concurrency_key is not null then
    perform pg_advisory_xact_lock(hashtextextended(v_step.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_step.concurrency_key and s.status = 'running';
    if v_running >= v_step.concurrency_limit then
      perform ballast_private.wake_step(p_step_id, v_now + make_interval(secs => 1 + random()));
      return;
    end if;
    -- The attempt starts now, not when this call began: the wait for the group lock can outlast the completion of
    -- the step whose slot this claim takes, and an earlier started_at would show a third step overlapping two.
    v_now := ballast.now();
  end if;

  v_lease := v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0);
  update ballast_private.steps s
     set status = 'running', attempts = s.attempts + 1, started_at = coalesce(s.started_at, v_now),
         next_run_at = null
   where s.id = p_step_id
  returning * into v_step;
  insert into ballast_private.attempts (step_id, job_id, number, worker_id, started_at, lease_expires_at)
  values (v_step.id, v_step.job_id, v_step.attempts, p_worker_id, v_now, v_lease)
  returning id into v_attempt_id;
  perform ballast_private.refresh_job_status(v_step.job_id);

  return query
  select v_attempt_id, v_step.attempts - v_step.attempt_offset, v_step.max_attempts, v_step.id, v_step.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                    where d.job_id = v_step.job_id and d.name = any(v_step.depends_on)), '{}'::jsonb),
         'ballast:' || j.id || ':' || v_step.name,
         v_step.timeout_ms, v_lease,
         coalesce((select jsonb_object_agg(e.key, e.result) from ballast_private.effects e
                    where e.step_id = v_step.id), '{}'::jsonb),
         coalesce((select p.name from ballast_private.steps p where p.id = v_step.parent_step_id), v_step.name),
         v_step.item_index, v_step.item
    from ballast_private.jobs j where j.id = v_step.job_id;
end
$fn$;

create function ballast.claim_steps(p_worker_id text, p_tasks text[], p_n integer, p_lease_ms integer DEFAULT 30000) returns SETOF ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_lease timestamptz;
  v_n int := least(greatest(coalesce(p_n, 0), 0), 1000);
  v_ids bigint[] := '{}';
  v_pick bigint[];
  v_picked int;
  v_round int := 0;
  v_model_gate boolean;
  v_key_gate boolean;
  v_retries_due boolean;
  v_limits_due boolean;
  v_starts_due boolean;
begin
  if v_n = 0 then
    return;
  end if;
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered or was declared stopped', p_worker_id),
      hint = 'Call ballast.register_worker before claiming steps (a worker declared dead must register again).';
  end if;

  -- (Probed first: an UPDATE fires the statement triggers of steps even when it changes no row.) One statement for
  -- the probes of retries due, jobs past their deadline or expiry, and scheduled steps due (0039): each one index
  -- probe. Jobs past their deadline or expiry fail before anything is queued or claimed (expire_jobs).
  select exists (select 1 from ballast_private.steps r where r.status = 'retrying' and r.next_run_at <= v_now),
         exists (select 1 from ballast_private.jobs l where l.deadline <= v_now and l.deadline is not null and l.finished_at is null)
         or exists (select 1 from ballast_private.jobs l
                     where l.expires_at <= v_now and l.expires_at is not null and l.status in ('scheduled', 'queued')),
         exists (select 1 from ballast_private.steps r where r.status = 'scheduled' and r.next_run_at <= v_now)
    into v_retries_due, v_limits_due, v_starts_due;
  if v_retries_due then
    perform ballast_private.requeue_due_retries(p_tasks, v_n, v_now);
  end if;
  if v_limits_due then
    perform ballast_private.expire_jobs(v_now, 100);
  end if;
  if v_starts_due then
    perform ballast_private.start_due_steps(p_tasks, v_n, v_now);
  end if;

  loop
    v_round := v_round + 1;
    -- Steps of concurrency groups first (a part, called only when a probe finds one queued), then the others from
    -- steps_queue_idx, inline: every claim runs it, and a function call for it cost ~0.03 ms per claim (see above).
    -- (A second round takes no group steps: the ones picked still hold status queued, so it would get them again.)
    if v_round = 1 and exists (select 1 from ballast_private.steps g
                                where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)) then
      v_pick := ballast_private.pick_grouped_steps(p_tasks, v_n - cardinality(v_ids));
    else
      v_pick := '{}';
    end if;
    if cardinality(v_pick) < v_n - cardinality(v_ids) then
      v_pick := v_pick || array(
        select s.id from ballast_private.steps s
         where s.status = 'queued' and s.concurrency_key is null and s.task = any(p_tasks) and s.id <> all(v_ids)
         order by s.priority, s.fair_key, (s.attempts = 0), s.id limit v_n - cardinality(v_ids) - cardinality(v_pick)
         for update skip locked);
    end if;
    v_picked := cardinality(v_pick);
    exit when v_picked = 0;

    if v_model_gate is null then
      -- Model steps whose gate is closed are parked instead of claimed (claim_gate); keys paused or over a limit
      -- likewise (gate_steps). Probes of small tables, once per claim, so that claims pay nothing while no cooldown
      -- is in force, no pausing budget is used up, no key is paused and no limit is set.
      v_model_gate := exists (select 1 from ballast_private.provider_cooldowns c where c.until > v_now)
        or exists (select 1 from ballast_private.budgets b
                     left join ballast_private.budget_usage u
                       on u.tenant_id = b.tenant_id and u.period_start = ballast_private.budget_period_start(b.period, v_now)
                    where b.on_exhausted = 'pause' and coalesce(u.spent_usd, 0) + coalesce(u.reserved_usd, 0) >= b.limit_usd);
      v_key_gate := exists (select 1 from ballast_private.pauses z where z.until is null or z.until > v_now)
        or exists (select 1 from ballast_private.limits);
    end if;
    if v_model_gate then
      v_pick := ballast_private.park_gated_steps(v_pick, v_now);
    end if;
    if v_key_gate and cardinality(v_pick) > 0 then
      v_pick := ballast_private.gate_steps(v_pick, v_now, v_ids);
    end if;
    v_ids := v_ids || v_pick;
    -- Again only when a gate parked some of a pick that filled its places (more may be waiting behind them).
    exit when cardinality(v_pick) = v_picked or cardinality(v_ids) >= v_n or v_round >= 4;
  end loop;
  if cardinality(v_ids) = 0 then
    return;
  end if;

  -- The attempts start now (a group lock may have been waited for).
  v_now := ballast.now();
  v_lease := v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0);
  return query
  with upd as (
    update ballast_private.steps s
       set status = 'running', attempts = s.attempts + 1, started_at = coalesce(s.started_at, v_now),
           next_run_at = null, updated_at = v_now
     where s.id = any(v_ids)
    returning s.*),
  att as (
    insert into ballast_private.attempts (step_id, job_id, number, worker_id, started_at, lease_expires_at)
    select u.id, u.job_id, u.attempts, p_worker_id, v_now, v_lease from upd u
     order by u.priority, (u.attempts = 1), u.id
    returning id, step_id)
  select att.id, u.attempts - u.attempt_offset, u.max_attempts, u.id, u.name,
         j.id, j.tenant_id, j.pipeline, j.pipeline_version, j.input,
         case when cardinality(u.depends_on) = 0 then '{}'::jsonb else
           coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                      where d.job_id = u.job_id and d.name = any(u.depends_on)), '{}'::jsonb) end,
         'ballast:' || j.id || ':' || u.name, u.timeout_ms, v_lease,
         case when u.attempts = 1 then '{}'::jsonb else
           coalesce((select jsonb_object_agg(e.key, e.result) from ballast_private.effects e where e.step_id = u.id),
                    '{}'::jsonb) end,
         case when u.parent_step_id is null then u.name
              else (select p.name from ballast_private.steps p where p.id = u.parent_step_id) end,
         u.item_index, u.item
    from upd u join att on att.step_id = u.id join ballast_private.jobs j on j.id = u.job_id
   order by u.priority, (u.attempts = 1), u.id;
end
$fn$;

create function ballast.clear_prompt_canary(p_name text, p_label text, p_reason text, p_actor text DEFAULT NULL::text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_old ballast_private.prompt_labels;
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  perform ballast_private.check_prompt_label_args(p_name, p_label);
  if p_reason is null or btrim(p_reason) = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why the canary ends (kept in ballast.prompt_label_history).');
  end if;
  perform pg_advisory_xact_lock(hashtextextended('ballast.prompt_label:' || p_name || '@' || p_label, 0));
  select * into v_old from ballast_private.prompt_labels l where l.prompt_name = p_name and l.label = p_label;
  if not found or v_old.canary_version is null then
    return false;
  end if;
  update ballast_private.prompt_labels l
     set canary_version = null, canary_share = null, updated_by = v_actor, updated_at = ballast.now()
   where l.prompt_name = p_name and l.label = p_label;
  insert into ballast_private.prompt_label_history (prompt_name, label, action, from_version, to_version, canary_version, canary_share, actor, reason)
  values (p_name, p_label, 'clear_canary', v_old.version, v_old.version, v_old.canary_version, v_old.canary_share, v_actor, p_reason);
  return true;
end
$fn$;

create function ballast.compare_eval_runs(p_base_run bigint, p_candidate_run bigint, p_threshold numeric DEFAULT 0) returns TABLE(case_key text, base_score numeric, candidate_score numeric, delta numeric, change text, base_passed boolean, candidate_passed boolean, cost_delta_usd numeric, latency_delta_ms integer, base_output jsonb, candidate_output jsonb, reference jsonb)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  perform ballast_private.eval_run_exists(p_base_run, 'base run');
  perform ballast_private.eval_run_exists(p_candidate_run, 'candidate run');
  if p_threshold is null or p_threshold < 0 or p_threshold > 1 then
    perform ballast_private.bad_argument('threshold', format('%s is not from 0 to 1', coalesce(p_threshold::text, 'null')),
      'The score drop a case may have before it counts as a regression, e.g. 0.05 (default 0: any drop).');
  end if;
  return query
  with b as (select c.case_key, e.* from ballast_private.eval_results e join ballast_private.eval_cases c on c.id = e.case_id where e.run_id = p_base_run),
       k as (select c.case_key, c.reference, e.* from ballast_private.eval_results e join ballast_private.eval_cases c on c.id = e.case_id where e.run_id = p_candidate_run),
       j as (
    select coalesce(k.case_key, b.case_key) as case_key, b.score as bs, k.score as ks, k.score - b.score as d,
           b.passed as bp, k.passed as kp, k.cost_usd - b.cost_usd as dc, k.latency_ms - b.latency_ms as dl,
           b.output as bo, k.output as ko, k.reference as ref
      from b full join k on k.case_key = b.case_key)
  select j.case_key, j.bs, j.ks, j.d,
         case when j.bs is null then 'new' when j.ks is null then 'missing'
              when j.d < -p_threshold then 'regression' when j.d > p_threshold then 'improvement' else 'same' end,
         j.bp, j.kp, j.dc, j.dl, j.bo, j.ko, j.ref
    from j
   order by case when j.d < -p_threshold then 0 else 1 end, j.d nulls last, j.case_key;
end
$fn$;

create function ballast.compare_prompt_arms(p_name text, p_label text DEFAULT 'production'::text, p_since timestamp with time zone DEFAULT NULL::timestamp with time zone, p_until timestamp with time zone DEFAULT NULL::timestamp with time zone, p_threshold numeric DEFAULT 0, p_min_samples integer DEFAULT 20, p_resamples integer DEFAULT 1000) returns TABLE(prompt_name text, label text, since timestamp with time zone, until timestamp with time zone, base_versions integer[], candidate_versions integer[], base_jobs bigint, candidate_jobs bigint, base_attempts bigint, candidate_attempts bigint, base_scored_calls bigint, candidate_scored_calls bigint, base_first_pass_rate numeric, candidate_first_pass_rate numeric, first_pass_delta numeric, first_pass_delta_ci_low numeric, first_pass_delta_ci_high numeric, base_fallback_rate numeric, candidate_fallback_rate numeric, fallback_delta numeric, base_review_rate numeric, candidate_review_rate numeric, review_delta numeric, base_rejection_rate numeric, candidate_rejection_rate numeric, rejection_delta numeric, base_mean_score numeric, candidate_mean_score numeric, score_delta numeric, score_delta_ci_low numeric, score_delta_ci_high numeric, base_cost_per_success numeric, candidate_cost_per_success numeric, cost_per_success_delta numeric, base_latency_p50_ms numeric, candidate_latency_p50_ms numeric, latency_p50_delta_ms numeric, base_latency_p95_ms numeric, candidate_latency_p95_ms numeric, latency_p95_delta_ms numeric, enough_data boolean, regressed boolean)
language plpgsql stable
as $fn$
declare
  v_since timestamptz := coalesce(p_since, ballast.now() - interval '7 days');
  v_until timestamptz := coalesce(p_until, ballast.now());
begin
  perform ballast_private.check_prompt_label_args(p_name, p_label);
  if v_until <= v_since then
    perform ballast_private.bad_argument('until', format('%s is not after since (%s)', v_until, v_since),
      'Give a window that ends after it starts, e.g. since 2026-12-01T00:00:00Z with until left out (now).');
  end if;
  if p_threshold is null or p_threshold < 0 or p_threshold > 1 then
    perform ballast_private.bad_argument('threshold', format('%s is not from 0 to 1', coalesce(p_threshold::text, 'null')),
      'The drop in score or first-pass rate the candidate may have before it counts as a regression, e.g. 0.05 (default 0).');
  end if;
  if p_min_samples is null or p_min_samples < 1 then
    perform ballast_private.bad_argument('min_samples', format('%s is not a positive number', coalesce(p_min_samples::text, 'null')),
      'The attempts each arm needs before a verdict is given, e.g. 20 (the default).');
  end if;
  if p_resamples is null or p_resamples < 1 or p_resamples > 100000 then
    perform ballast_private.bad_argument('resamples', format('%s is not from 1 to 100000', coalesce(p_resamples::text, 'null')), 'Leave it at 1000.');
  end if;
  return query
  with pins as (
    select jp.job_id, jp.version, jp.arm
      from ballast_private.job_prompts jp
     where jp.prompt_name = p_name and jp.label = p_label and jp.pinned_at >= v_since and jp.pinned_at < v_until),
  arms(arm) as (values ('stable'), ('canary')),
  jobs as (
    select p.arm, array_agg(distinct p.version order by p.version) as versions, count(*) as n from pins p group by p.arm),
  att as (
    select p.arm,
           count(*) as n,
           count(*) filter (where a.contract_outcome = 'valid_first_try') as first_pass,
           count(*) filter (where a.contract_outcome = 'fell_back') as fell_back,
           count(*) filter (where a.contract_outcome = 'review') as review,
           count(*) filter (where a.contract_outcome = 'rejected') as rejected,
           count(*) filter (where a.contract_outcome in ('valid_first_try', 'repaired', 'fell_back')) as accepted
      from pins p join ballast_private.attempts a on a.job_id = p.job_id and a.prompt_ref = p_name || '@' || p.version
     where a.contract_outcome is not null
     group by p.arm),
  calls as (
    select p.arm, c.id, c.score::float8 as score, c.cost_usd, c.latency_ms
      from pins p join ballast_private.model_calls c
        on c.job_id = p.job_id and c.prompt_name = p_name and c.prompt_version = p.version
     where c.error_class is distinct from 'cooldown' and c.error_class is distinct from 'budget'),
  cl as (
    select c.arm, count(c.score) as scored, avg(c.score) as score, sum(c.cost_usd) as cost,
           array_agg(c.score order by c.id) filter (where c.score is not null) as scores,
           percentile_cont(0.5) within group (order by c.latency_ms) as p50,
           percentile_cont(0.95) within group (order by c.latency_ms) as p95
      from calls c group by c.arm),
  per_arm as (
    select x.arm, j.versions, coalesce(j.n, 0) as jobs, coalesce(a.n, 0) as attempts, coalesce(c.scored, 0) as scored,
           a.first_pass, a.accepted,
           round(a.first_pass::numeric / nullif(a.n, 0), 4) as first_pass_rate,
           round(a.fell_back::numeric / nullif(a.n, 0), 4) as fallback_rate,
           round(a.review::numeric / nullif(a.n, 0), 4) as review_rate,
           round(a.rejected::numeric / nullif(a.n, 0), 4) as rejection_rate,
           round(c.score::numeric, 4) as score, c.scores,
           round(c.cost / nullif(a.accepted, 0), 8) as cost_per_success,
           round(c.p50::numeric, 1) as p50, round(c.p95::numeric, 1) as p95
      from arms x
      left join jobs j on j.arm = x.arm
      left join att a on a.arm = x.arm
      left join cl c on c.arm = x.arm),
  b as (select * from per_arm where arm = 'stable'),
  k as (select * from per_arm where arm = 'canary'),
  ci as (
    -- One call of each interval function (lateral), not one per column: the bootstrap is the costly part.
    select round(fp.ci_low::numeric, 4) as fp_lo, round(fp.ci_high::numeric, 4) as fp_hi,
           round(sc.ci_low::numeric, 4) as s_lo, round(sc.ci_high::numeric, 4) as s_hi,
           b.attempts >= p_min_samples and k.attempts >= p_min_samples as enough
      from b cross join k
      left join lateral ballast_private.rate_delta_ci(b.first_pass, b.attempts, k.first_pass, k.attempts) fp on true
      left join lateral ballast_private.bootstrap_mean_delta_ci(b.scores, k.scores, p_resamples) sc on true)
  select p_name, p_label, v_since, v_until, coalesce(b.versions, '{}'), coalesce(k.versions, '{}'), b.jobs, k.jobs,
         b.attempts, k.attempts, b.scored, k.scored,
         b.first_pass_rate, k.first_pass_rate, k.first_pass_rate - b.first_pass_rate, ci.fp_lo, ci.fp_hi,
         b.fallback_rate, k.fallback_rate, k.fallback_rate - b.fallback_rate,
         b.review_rate, k.review_rate, k.review_rate - b.review_rate,
         b.rejection_rate, k.rejection_rate, k.rejection_rate - b.rejection_rate,
         b.score, k.score, k.score - b.score, ci.s_lo, ci.s_hi,
         b.cost_per_success, k.cost_per_success, k.cost_per_success - b.cost_per_success,
         b.p50, k.p50, k.p50 - b.p50, b.p95, k.p95, k.p95 - b.p95,
         ci.enough,
         ci.enough and (coalesce(ci.s_hi < -p_threshold, false) or coalesce(ci.fp_hi < -p_threshold, false))
    from b, k, ci;
end
$fn$;

create function ballast.complete_step(p_attempt_id bigint, p_output jsonb) returns TABLE(step_status text, job_status text, queued_step_ids bigint[])
language sql volatile
as $fn$
  select 'succeeded'::text, c.job_status, c.queued_step_ids from ballast_private.complete(p_attempt_id, p_output, true) c
$fn$;

create function ballast.complete_step_and_claim(p_attempt_id bigint, p_output jsonb, p_worker_id text, p_lease_ms integer DEFAULT 30000) returns SETOF ballast.step_claim
language plpgsql volatile
as $fn$
declare
  v_queued bigint[];
begin
  perform 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null;
  if not found then
    -- A worker declared stopped may still finish what it holds, but takes nothing new.
    perform ballast_private.complete(p_attempt_id, p_output, true);
    return;
  end if;
  select c.queued_step_ids into v_queued from ballast_private.complete(p_attempt_id, p_output, false) c;
  if cardinality(v_queued) = 0 then
    return;
  end if;
  return query select * from ballast.claim_step(v_queued[1], p_worker_id, p_lease_ms);
end
$fn$;

create function ballast.create_dataset(p_name text, p_description text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns SETOF ballast_private.eval_datasets
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    perform ballast_private.bad_argument('name', format('%L is not a valid dataset name', p_name),
      'Use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-" (e.g. support.triage).');
  end if;
  insert into ballast_private.eval_datasets (name, description, created_by)
  values (p_name, p_description, ballast_private.caller_actor(p_actor))
  on conflict (name) do update set description = coalesce(excluded.description, ballast_private.eval_datasets.description),
                                   updated_at = ballast.now();
  return query select * from ballast_private.eval_datasets d where d.name = p_name;
end
$fn$;

create function ballast.create_prompt_version(p_name text, p_system text, p_user text, p_actor text DEFAULT NULL::text) returns TABLE(version integer, content_hash text, created boolean)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_template jsonb;
  v_hash text;
  v_latest ballast_private.prompts;
begin
  perform ballast_private.check_prompt_label_args(p_name, null, false);
  if p_user is null or btrim(p_user) = '' then
    perform ballast_private.bad_argument('user', 'is empty', 'Give the user message template, e.g. ''Rate this review: {{input.text}}''.');
  end if;
  v_template := jsonb_build_object('system', p_system, 'user', p_user);
  v_hash := encode(sha256(convert_to(v_template::text, 'UTF8')), 'hex');
  perform pg_advisory_xact_lock(hashtextextended('ballast.prompt:' || p_name, 0));
  select * into v_latest from ballast_private.prompts p where p.name = p_name order by p.version desc limit 1;
  if found and v_latest.content_hash = v_hash then
    return query select v_latest.version, v_hash, false;
    return;
  end if;
  insert into ballast_private.prompts (name, version, template, content_hash, created_by)
  values (p_name, coalesce(v_latest.version, 0) + 1, v_template, v_hash, ballast_private.caller_actor(p_actor));
  return query select coalesce(v_latest.version, 0) + 1, v_hash, true;
end
$fn$;

create function ballast.delete_budget_alert(p_name text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
begin
  delete from ballast_private.budget_alert_rules r where r.name = p_name returning r.id into v_id;
  delete from ballast_private.budget_spend_checked c where c.rule_id = v_id;
  update ballast_private.alerts a set resolved_at = ballast.now()
   where a.kind = 'budget' and a.rule_id = v_id and a.resolved_at is null;
  return v_id is not null;
end
$fn$;

create function ballast.delete_drift_rule(p_name text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
begin
  delete from ballast_private.drift_rules r where r.name = p_name returning r.id into v_id;
  update ballast_private.alerts a set resolved_at = ballast.now()
   where a.kind = 'drift' and a.rule_id = v_id and a.resolved_at is null;
  return v_id is not null;
end
$fn$;

create function ballast.delete_limit(p_pattern text, p_kind text, p_actor text DEFAULT NULL::text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  delete from ballast_private.limits l where l.pattern = p_pattern and l.kind = p_kind;
  if not found then
    return false;
  end if;
  insert into ballast_private.gate_history (action, key, data, actor)
  values ('delete_limit', p_pattern, jsonb_build_object('kind', p_kind), ballast_private.caller_actor(p_actor));
  return true;
end
$fn$;

create function ballast.delete_schedule(p_name text, p_tenant_id text DEFAULT NULL::text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := ballast_private.schedule_tenant(p_tenant_id);
begin
  delete from ballast_private.schedules where tenant_id = v_tenant and name = p_name;
  return found;
end
$fn$;

create function ballast.delete_webhook_endpoint(p_path text) returns boolean
language sql volatile
as $fn$
  with d as (delete from ballast_private.webhook_endpoints where path = p_path returning 1)
  select exists (select 1 from d)
$fn$;

create function ballast.eval_run_comparison(p_base_run bigint, p_candidate_run bigint, p_threshold numeric DEFAULT 0, p_resamples integer DEFAULT 1000) returns TABLE(base_run bigint, candidate_run bigint, paired_cases integer, base_mean numeric, candidate_mean numeric, mean_delta numeric, delta_ci_low numeric, delta_ci_high numeric, regressions integer, improvements integer, unchanged integer, new_cases integer, missing_cases integer, base_pass_rate numeric, candidate_pass_rate numeric, cost_delta_usd numeric, latency_delta_ms numeric, regressed boolean)
language plpgsql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if p_resamples is null or p_resamples < 1 or p_resamples > 100000 then
    perform ballast_private.bad_argument('resamples', format('%s is not from 1 to 100000', coalesce(p_resamples::text, 'null')), 'Leave it at 1000.');
  end if;
  return query
  with c as (select * from ballast.compare_eval_runs(p_base_run, p_candidate_run, p_threshold)),
       p as (select row_number() over (order by c.case_key) as i, c.delta from c where c.delta is not null),
       n as (select count(*) as n from p),
       boot as (
    select r, avg(p.delta) as m
      from generate_series(1, p_resamples) r
      cross join n
      cross join lateral generate_series(1, n.n) j
      join p on p.i = 1 + abs(hashtextextended(r || ':' || j, 44)) % n.n
     group by r),
       ci as (select percentile_cont(0.025) within group (order by boot.m) as lo,
                     percentile_cont(0.975) within group (order by boot.m) as hi from boot)
  select p_base_run, p_candidate_run, (select count(*) from p)::integer,
         round(avg(c.base_score) filter (where c.delta is not null), 4), round(avg(c.candidate_score) filter (where c.delta is not null), 4),
         round(avg(c.delta), 4), round((select lo from ci)::numeric, 4), round((select hi from ci)::numeric, 4),
         (count(*) filter (where c.change = 'regression'))::integer, (count(*) filter (where c.change = 'improvement'))::integer,
         (count(*) filter (where c.change = 'same'))::integer, (count(*) filter (where c.change = 'new'))::integer,
         (count(*) filter (where c.change = 'missing'))::integer,
         round(avg(case when c.base_passed then 1 else 0 end) filter (where c.base_score is not null), 4),
         round(avg(case when c.candidate_passed then 1 else 0 end) filter (where c.candidate_score is not null), 4),
         sum(c.cost_delta_usd), round(avg(c.latency_delta_ms), 1),
         coalesce(avg(c.delta) < -p_threshold, false) or count(*) filter (where c.change = 'regression') > 0
    from c;
end
$fn$;

create function ballast.events_after(p_after bigint, p_tenant_id text DEFAULT NULL::text, p_job_id bigint DEFAULT NULL::bigint, p_limit integer DEFAULT 1000) returns TABLE(id bigint, tx bigint, job_id bigint, step_id bigint, tenant_id text, step_name text, type text, status text, at timestamp with time zone, watermark bigint)
language plpgsql stable
as $fn$
declare
  v_tx xid8 := '0'::xid8;
  v_id bigint := 0;
  v_watermark xid8 := pg_snapshot_xmin(pg_current_snapshot());
begin
  if p_limit is null or p_limit < 1 or p_limit > 10000 then
    raise exception 'limit must be between 1 and 10000, got %', p_limit using errcode = '22023',
      hint = 'read a long history in pages: pass the last id of one page as `after` of the next';
  end if;
  if coalesce(p_after, 0) <> 0 then
    select e.tx, e.id into v_tx, v_id from ballast_private.events e where e.id = p_after;
    if not found then
      raise exception 'event % does not exist (never written, pruned by retention, or not visible to you)', p_after
        using errcode = 'BA007', hint = 'read the current state (the job, or the events query) and follow from its newest event';
    end if;
  end if;
  -- xid8 as bigint for the caller (transaction ids stay far below 2^63).
  return query
    select e.id, e.tx::text::bigint, e.job_id, e.step_id, j.tenant_id, s.name, e.type, e.status, e.at,
           v_watermark::text::bigint
      from ballast_private.events e
      join ballast.jobs j on j.id = e.job_id
      left join ballast.steps s on s.id = e.step_id
     where (e.tx, e.id) > (v_tx, v_id) and e.tx < v_watermark
       and (p_tenant_id is null or j.tenant_id = p_tenant_id)
       and (p_job_id is null or e.job_id = p_job_id)
     order by e.tx, e.id
     limit p_limit;
end
$fn$;

create function ballast.expand_items(p_attempt_id bigint, p_items jsonb) returns integer
language plpgsql volatile
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
     set status = 'waiting', wait_key = null, wait_deadline = null, wait_on_timeout = null
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

create function ballast.fail_step(p_attempt_id bigint, p_error jsonb) returns TABLE(step_status text, next_run_at timestamp with time zone, job_status text)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_retryable boolean;
  v_status text;
  v_error jsonb;
begin
  if p_error is null or jsonb_typeof(p_error) <> 'object'
     or jsonb_typeof(p_error -> 'class') is distinct from 'string' or p_error ->> 'class' = ''
     or jsonb_typeof(p_error -> 'message') is distinct from 'string' or p_error ->> 'message' = '' then
    perform ballast_private.bad_argument('error', 'must be an object with non-empty text "class" and "message"',
      'Pass e.g. {"class": "timeout", "message": "upstream took longer than 30s", "retryable": true}.');
  end if;
  if coalesce(jsonb_typeof(p_error -> 'code'), 'null') not in ('null', 'string', 'number') then
    perform ballast_private.bad_argument('error.code', format('%s is not a text', p_error -> 'code'),
      'Pass the provider''s error code as text (e.g. "ETIMEDOUT", "429"), or leave it out.');
  end if;
  if coalesce(jsonb_typeof(p_error -> 'retryable'), 'null') not in ('null', 'boolean') then
    perform ballast_private.bad_argument('error.retryable', format('%s is not a boolean', p_error -> 'retryable'),
      'Pass true or false (JSON booleans, not text), or leave it out for true.');
  end if;
  if coalesce(jsonb_typeof(p_error -> 'retry_after_ms'), 'null') <> 'null'
     and (jsonb_typeof(p_error -> 'retry_after_ms') <> 'number'
          or (p_error ->> 'retry_after_ms')::numeric not between 0 and 604800000) then
    perform ballast_private.bad_argument('error.retry_after_ms',
      format('%s is not a number of milliseconds from 0 to 604800000 (7 days)', p_error -> 'retry_after_ms'),
      'Pass the delay in milliseconds, or leave it out to use the step''s backoff.');
  end if;
  if coalesce(p_error ->> 'outcome', 'failed') not in ('failed', 'timed_out') then
    perform ballast_private.bad_argument('error.outcome', format('%s is not "failed" or "timed_out"', p_error -> 'outcome'),
      'Leave it out, or pass "timed_out" for an attempt stopped by its timeout.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  v_retryable := coalesce((p_error ->> 'retryable')::boolean, true);
  v_error := jsonb_build_object('class', p_error ->> 'class', 'code', p_error ->> 'code',
                                'message', p_error ->> 'message', 'retryable', v_retryable,
                                'attempt', v_step.attempts);

  update ballast_private.attempts
     set outcome = coalesce(p_error ->> 'outcome', 'failed'), finished_at = v_now,
         error_class = p_error ->> 'class', error_code = p_error ->> 'code',
         error_message = p_error ->> 'message', error_retryable = v_retryable
   where id = p_attempt_id;

  v_status := ballast_private.settle_failure(v_step, v_error, v_retryable,
                                             (p_error ->> 'retry_after_ms')::double precision, v_now);
  return query
  select v_status, s.next_run_at, ballast_private.refresh_job_status(v_step.job_id)
    from ballast_private.steps s where s.id = v_step.id;
end
$fn$;

create function ballast.fire_schedules(p_limit integer DEFAULT 100) returns TABLE(schedule_id bigint, schedule_name text, fired integer, skipped integer, next_slot timestamp with time zone, error text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_now timestamptz := ballast.now();
  v_s ballast_private.schedules;
  v_due record;
  v_fire timestamptz[];
  v_fired timestamptz[];
  v_slot timestamptz;
  v_job bigint;
  v_next timestamptz;
  v_error text;
begin
  for v_s in
    select * from ballast_private.schedules s
     where not s.paused and s.next_fire_at <= v_now
     order by s.next_fire_at, s.id limit greatest(coalesce(p_limit, 100), 1)
     for update skip locked
  loop
    select * into v_due from ballast_private.due_slots(v_s.cron, v_s.time_zone, v_s.next_fire_at, v_now, v_s.max_catch_up);
    v_fire := case when v_s.on_missed = 'catch_up' then v_due.slots
                   else array(select t from unnest(v_due.slots) t where t >= v_now - interval '1 minute' order by t desc limit 1) end;
    v_fired := '{}';
    v_error := null;
    v_job := v_s.last_job_id;
    perform set_config('ballast.actor', 'schedule:' || v_s.name, true);
    foreach v_slot in array v_fire loop
      begin
        select sub.job_id into v_job
          from ballast_private.submit(v_s.pipeline, v_s.input, format('schedule:%s:%s', v_s.id, extract(epoch from v_slot)::bigint),
                                      v_s.tenant_id, v_s.priority, v_s.pipeline_version) sub;
        v_fired := v_fired || v_slot;
      exception when others then
        -- This slot's submission is undone (its own subtransaction); the schedule says why and moves on.
        v_error := format('slot %s: %s', v_slot, sqlerrm);
      end;
    end loop;
    v_next := ballast_private.cron_next(v_s.cron, v_s.time_zone, greatest(v_now, v_due.slots[cardinality(v_due.slots)]));
    update ballast_private.schedules s
       set next_fire_at = v_next, last_job_id = v_job, last_error = v_error,
           last_fired_at = case when cardinality(v_fired) > 0 then v_now else s.last_fired_at end,
           last_slot = coalesce(v_fired[cardinality(v_fired)], s.last_slot),
           fired_count = s.fired_count + cardinality(v_fired),
           skipped_count = s.skipped_count + v_due.total - cardinality(v_fired)
     where s.id = v_s.id;
    return query select v_s.id, v_s.name, cardinality(v_fired), v_due.total - cardinality(v_fired), v_next, v_error;
  end loop;
end
$fn$;

create function ballast.heartbeat_worker(p_worker_id text, p_running bigint[] DEFAULT '{}'::bigint[], p_lease_ms integer DEFAULT 30000) returns TABLE(alive boolean, lost_attempt_ids bigint[])
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_alive boolean;
begin
  update ballast_private.workers set heartbeat_at = v_now
   where id = p_worker_id and stopped_at is null;
  v_alive := found;
  if v_alive then
    -- Only the attempts the worker names: one it lost track of (its outcome could not be recorded, or its claim's
    -- reply never arrived) must let its lease run out and be reclaimed, not be kept alive for as long as the process.
    update ballast_private.attempts
       set lease_expires_at = v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0)
     where worker_id = p_worker_id and outcome = 'running' and id = any(coalesce(p_running, '{}'));
  end if;
  return query
  select v_alive,
         coalesce((select array_agg(r.id order by r.id)
                     from unnest(coalesce(p_running, '{}')) as r(id)
                     left join ballast_private.attempts a on a.id = r.id
                    where a.id is null or a.outcome <> 'running' or a.worker_id is distinct from p_worker_id
                       or not v_alive), '{}');
end
$fn$;

create function ballast.import_eval_run(p_dataset text, p_results jsonb, p_label text DEFAULT NULL::text, p_pipeline text DEFAULT 'external'::text, p_step text DEFAULT 'external'::text, p_prompt_version integer DEFAULT NULL::integer, p_model text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_ds ballast_private.eval_datasets := ballast_private.eval_dataset(p_dataset);
  v_run bigint;
  v_bad text;
begin
  if p_results is null or jsonb_typeof(p_results) <> 'array' then
    perform ballast_private.bad_argument('results', 'is not a JSON array', 'Pass [{"key": "c1", "score": 1}, ...].');
  end if;
  select format('results[%s]', ord) into v_bad from jsonb_array_elements(p_results) with ordinality x(e, ord)
   where jsonb_typeof(e -> 'score') is distinct from 'number' or (e ->> 'score')::numeric not between 0 and 1 limit 1;
  if v_bad is not null then
    perform ballast_private.bad_argument(v_bad || '.score', 'is missing or not a number from 0 to 1', 'Give each case''s score, e.g. "score": 0.75.');
  end if;
  select e ->> 'key' into v_bad from jsonb_array_elements(p_results) e
   where not exists (select 1 from ballast_private.eval_cases c where c.dataset = p_dataset and c.case_key = e ->> 'key' and c.removed_in_version is null)
   limit 1;
  if v_bad is not null or exists (select 1 from jsonb_array_elements(p_results) e where e ->> 'key' is null) then
    raise exception using errcode = 'BA007', message = format('case %L is not in dataset %L', coalesce(v_bad, 'null'), p_dataset),
      hint = 'Give the keys of the dataset''s current cases (ballast.eval_cases where in_current_version).';
  end if;
  insert into ballast_private.eval_runs (dataset, dataset_version, pipeline, step, prompt_version, model, scorers, label, status, created_by, finished_at)
  values (p_dataset, v_ds.version, p_pipeline, p_step, p_prompt_version, p_model, '[]', p_label, 'imported', ballast_private.caller_actor(p_actor), ballast.now())
  returning id into v_run;
  insert into ballast_private.eval_results (run_id, case_id, output, score, passed, cost_usd, latency_ms)
  select v_run, c.id, e -> 'output', (e ->> 'score')::numeric, coalesce((e ->> 'passed')::boolean, (e ->> 'score')::numeric >= 0.5),
         coalesce((e ->> 'cost_usd')::numeric, 0), (e ->> 'latency_ms')::integer
    from jsonb_array_elements(p_results) e
    join ballast_private.eval_cases c on c.dataset = p_dataset and c.case_key = e ->> 'key' and c.removed_in_version is null
  on conflict do nothing;
  update ballast_private.eval_runs set summary = ballast_private.eval_run_summary(v_run) where id = v_run;
  return v_run;
end
$fn$;

create function ballast.json_schema_errors(p_schema jsonb, p_value jsonb) returns TABLE(path text, message text)
language plpgsql immutable parallel safe
as $fn$
#variable_conflict use_column
declare
  c_max_violations constant integer := 100;
  v_rows integer := 0;
  -- translating every pattern of the schema up front pays off only when the value has many strings to check
  v_regexes jsonb := case when pg_column_size(p_value) > 4096 then ballast._json_schema_regexes(p_schema)
                          else '{}'::jsonb end;
begin
  for path, message in
    select w.path, w.message
    from ballast._json_schema_walk(p_schema, p_schema, coalesce(p_value, 'null'::jsonb), '', 0,
                                   c_max_violations + 1, v_regexes)
      with ordinality as w(path, message, ord)
    order by w.ord
  loop
    v_rows := v_rows + 1;
    if v_rows > c_max_violations then
      path := '';
      message := 'stopped after ' || c_max_violations || ' violations; the value may have more';
    elsif char_length(message) > 500 then
      message := left(message, 497) || '...';
    end if;
    return next;
  end loop;
end
$fn$;

create function ballast.model_price(p_provider text, p_model text, p_at timestamp with time zone DEFAULT ballast.now()) returns SETOF ballast_private.model_prices
language sql stable
as $fn$
  select p.* from ballast_private.model_prices p
   where p.provider = p_provider and p.valid_from <= p_at
     and (p.model = p_model or p_model like p.model || '-%' or p.model = '*')
   order by (p.model = p_model) desc, (p.model <> '*') desc, length(p.model) desc, p.valid_from desc
   limit 1
$fn$;

create function ballast.now() returns timestamp with time zone
language sql volatile parallel safe
as $fn$
  select case when coalesce(current_setting('ballast.now', true), '') = '' then clock_timestamp()
              when pg_has_role(session_user, (select n.nspowner from pg_catalog.pg_namespace n where n.nspname = 'ballast_private'), 'member')
              then current_setting('ballast.now', true)::timestamptz
              else clock_timestamp() end
$fn$;

create function ballast.pause_for_budget(p_attempt_id bigint, p_resume_at timestamp with time zone, p_message text) returns text
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'retrying', next_run_at = greatest(p_resume_at, v_now), attempt_offset = attempt_offset + 1,
         error = jsonb_build_object('class', 'budget_exhausted', 'code', 'budget_exhausted', 'message', p_message,
                                    'retryable', true, 'attempt', v_step.attempts)
   where id = v_step.id;
  perform ballast_private.wake_step(v_step.id, greatest(p_resume_at, v_now));
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return 'retrying';
end
$fn$;

create function ballast.pause_for_cooldown(p_attempt_id bigint, p_provider text, p_model text, p_message text) returns TABLE(step_status text, next_run_at timestamp with time zone)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_until timestamptz;
  v_wait_ms double precision;
  v_next timestamptz;
  v_message text := coalesce(nullif(p_message, ''), format('%s:%s is cooling down', p_provider, p_model));
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  select max(c.until) into v_until from ballast_private.provider_cooldowns c
   where c.provider = p_provider and c.model in (p_model, '*') and c.until > v_now;
  v_wait_ms := coalesce(ballast_private.cooldown_left_ms(v_until, v_now), 0);
  v_next := v_now + make_interval(secs => (case when v_wait_ms > 0
                                                then v_wait_ms + floor(random() * least(greatest(v_wait_ms * 0.25, 250), 60000))
                                                else 0 end) / 1000.0);
  update ballast_private.attempts
     set outcome = 'parked', finished_at = v_now, error_class = 'cooldown', error_code = 'cooldown',
         error_message = v_message, error_retryable = true
   where id = p_attempt_id;
  update ballast_private.steps
     set status = 'retrying', next_run_at = v_next, attempt_offset = attempt_offset + 1,
         error = jsonb_build_object('class', 'cooldown', 'code', 'cooldown', 'message', v_message,
                                    'retryable', true, 'attempt', v_step.attempts)
   where id = v_step.id;
  perform ballast_private.wake_step(v_step.id, v_next);
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select 'retrying'::text, v_next;
end
$fn$;

create function ballast.pause_key(p_key text, p_reason text, p_until timestamp with time zone DEFAULT NULL::timestamp with time zone, p_for interval DEFAULT NULL::interval, p_actor text DEFAULT NULL::text, p_step_id bigint DEFAULT NULL::bigint) returns TABLE(key text, until timestamp with time zone, reason text, paused_by text, paused_at timestamp with time zone)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_now timestamptz := ballast.now();
  v_until timestamptz := coalesce(p_until, v_now + p_for);
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  perform ballast_private.check_gate_key('key', p_key);
  if coalesce(btrim(p_reason), '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why the key is paused (e.g. ''429 from the provider'', ''maintenance''); it is kept in the history.');
  end if;
  if p_until is not null and p_for is not null then
    perform ballast_private.bad_argument('until', 'is given together with for', 'Pass either an end time (until) or a duration (for), not both.');
  end if;
  if v_until is not null and v_until <= v_now then
    perform ballast_private.bad_argument(case when p_for is null then 'until' else 'for' end,
      format('ends at %s, which is not after now (%s)', v_until, v_now), 'Pass a time in the future, or a positive duration.');
  end if;
  insert into ballast_private.pauses as z (key, until, reason, paused_by, paused_at, step_id)
  values (p_key, v_until, p_reason, v_actor, v_now, p_step_id)
  on conflict on constraint pauses_pkey do update
    -- The later end wins: an open-ended pause (null) outlasts any, an ended one is replaced.
    set until = case when z.until is not null and z.until <= v_now then excluded.until
                     when z.until is null or excluded.until is null then null
                     else greatest(z.until, excluded.until) end,
        reason = excluded.reason, paused_by = excluded.paused_by, paused_at = excluded.paused_at, step_id = excluded.step_id;
  insert into ballast_private.gate_history (action, key, until, reason, actor, step_id, at)
  select 'pause', z.key, z.until, p_reason, v_actor, p_step_id, v_now from ballast_private.pauses z where z.key = p_key;
  perform pg_notify('ballast_gates', '');
  return query select z.key, z.until, z.reason, z.paused_by, z.paused_at from ballast_private.pauses z where z.key = p_key;
end
$fn$;

create function ballast.pause_schedule(p_name text, p_paused boolean DEFAULT true, p_reason text DEFAULT NULL::text, p_tenant_id text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns SETOF ballast.schedules
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := ballast_private.schedule_tenant(p_tenant_id);
  v_id bigint;
begin
  if p_paused is null then
    perform ballast_private.bad_argument('paused', 'is null', 'Pass true to pause or false to resume.');
  end if;
  perform ballast_private.set_actor(ballast_private.caller_actor(p_actor));
  update ballast_private.schedules s
     set paused = p_paused, paused_reason = case when p_paused then nullif(p_reason, '') end,
         next_fire_at = case when p_paused then null else ballast_private.cron_next(s.cron, s.time_zone, ballast.now()) end,
         updated_at = ballast.now(), updated_by = current_setting('ballast.actor')
   where s.tenant_id = v_tenant and s.name = p_name
  returning s.id into v_id;
  if v_id is null then
    raise exception using errcode = 'BA003', message = format('tenant %s has no schedule %L', v_tenant, p_name),
      hint = 'ballast.schedules lists the schedules.';
  end if;
  return query select * from ballast.schedules where id = v_id;
end
$fn$;

create function ballast.promote_to_dataset(p_step_id bigint, p_dataset text, p_key text DEFAULT NULL::text, p_reference jsonb DEFAULT NULL::jsonb, p_tags text[] DEFAULT '{}'::text[], p_actor text DEFAULT NULL::text) returns TABLE(case_id bigint, case_key text, dataset_version integer, source_kind text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step ballast_private.steps;
  v_job ballast_private.jobs;
  v_name text;
  v_outcome text;
  v_kind text;
  v_reference jsonb;
  v_input jsonb;
begin
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('step %s does not exist', coalesce(p_step_id::text, 'null'));
  end if;
  perform ballast_private.eval_dataset(p_dataset);
  select * into v_job from ballast_private.jobs j where j.id = v_step.job_id;
  v_name := coalesce((select s.name from ballast_private.steps s where s.id = v_step.parent_step_id), v_step.name);
  select a.contract_outcome into v_outcome from ballast_private.attempts a
   where a.step_id = v_step.id and a.contract_outcome is not null order by a.number desc limit 1;
  v_kind := case when v_step.review ? 'decision' then 'review'
                 when v_outcome = 'fell_back' then 'fallback'
                 when v_outcome = 'degraded' then 'degraded'
                 when v_outcome = 'rejected' or v_step.status = 'failed' then 'rejection'
                 else 'production' end;
  v_reference := coalesce(p_reference,
    case when v_step.review ->> 'decision' = 'reject' then null
         when v_step.status = 'succeeded' then v_step.output
         else v_step.review -> 'proposed' end);
  if v_reference = 'null'::jsonb then v_reference := null; end if;
  v_input := jsonb_build_object('input', v_job.input,
    'deps', coalesce((select jsonb_object_agg(d.name, d.output) from ballast_private.steps d
                       where d.job_id = v_step.job_id and d.parent_step_id is null
                         and d.name = any (coalesce((select s.depends_on from ballast_private.steps s where s.id = v_step.parent_step_id), v_step.depends_on))), '{}'));
  if v_step.parent_step_id is not null then
    v_input := v_input || jsonb_build_object('item', v_step.item);
  end if;
  return query
  select a.case_id, a.case_key, a.dataset_version, v_kind
    from ballast.add_eval_cases(p_dataset, jsonb_build_array(jsonb_build_object(
      'key', coalesce(p_key, format('%s.%s:%s', v_job.pipeline, v_name, v_step.id)),
      'input', v_input, 'reference', v_reference, 'tags', to_jsonb(coalesce(p_tags, '{}')),
      'source', jsonb_strip_nulls(jsonb_build_object('kind', v_kind, 'job_id', v_job.id, 'step_id', v_step.id,
        'pipeline', v_job.pipeline, 'pipeline_version', v_job.pipeline_version, 'step', v_name, 'tenant_id', v_job.tenant_id,
        'contract_outcome', v_outcome, 'decision', v_step.review ->> 'decision', 'reviewer', v_step.review ->> 'reviewer')))),
      p_actor) a;
end
$fn$;

create function ballast.prompt_arms(p_name text, p_label text DEFAULT 'production'::text, p_since timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(prompt_name text, label text, version integer, arm text, jobs bigint, attempts bigint, first_pass_rate numeric, fallback_rate numeric, review_rate numeric, rejection_rate numeric, degraded_rate numeric, mean_score numeric, calls bigint, cost_usd numeric, cost_per_success numeric, mean_latency_ms numeric, p95_latency_ms numeric)
language plpgsql stable
as $fn$
begin
  perform ballast_private.check_prompt_label_args(p_name, p_label);
  return query
  with pins as (
    select jp.job_id, jp.version, jp.arm
      from ballast_private.job_prompts jp
     where jp.prompt_name = p_name and jp.label = p_label
       and jp.pinned_at >= coalesce(p_since, ballast.now() - interval '7 days')),
  att as (
    select p.version, p.arm,
           count(*) filter (where a.contract_outcome is not null) as n,
           count(*) filter (where a.contract_outcome = 'valid_first_try') as first_pass,
           count(*) filter (where a.contract_outcome = 'fell_back') as fell_back,
           count(*) filter (where a.contract_outcome = 'review') as review,
           count(*) filter (where a.contract_outcome = 'rejected') as rejected,
           count(*) filter (where a.contract_outcome = 'degraded') as degraded,
           count(*) filter (where a.contract_outcome in ('valid_first_try', 'repaired', 'fell_back')) as accepted
      from pins p join ballast_private.attempts a on a.job_id = p.job_id and a.prompt_ref = p_name || '@' || p.version
     group by p.version, p.arm),
  cl as (
    select p.version, p.arm, count(*) as n, avg(c.score) as score, sum(c.cost_usd) as cost,
           avg(c.latency_ms) as latency, percentile_cont(0.95) within group (order by c.latency_ms) as p95
      from pins p join ballast_private.model_calls c
        on c.job_id = p.job_id and c.prompt_name = p_name and c.prompt_version = p.version
     where c.error_class is distinct from 'cooldown' and c.error_class is distinct from 'budget'
     group by p.version, p.arm),
  arms as (
    select p.version, p.arm, count(distinct p.job_id) as jobs from pins p group by p.version, p.arm)
  select p_name, p_label, x.version, x.arm, x.jobs, coalesce(a.n, 0),
         round(a.first_pass::numeric / nullif(a.n, 0), 4), round(a.fell_back::numeric / nullif(a.n, 0), 4),
         round(a.review::numeric / nullif(a.n, 0), 4), round(a.rejected::numeric / nullif(a.n, 0), 4),
         round(a.degraded::numeric / nullif(a.n, 0), 4), round(c.score, 4), coalesce(c.n, 0), coalesce(c.cost, 0),
         round(c.cost / nullif(a.accepted, 0), 8), round(c.latency, 1), round(c.p95::numeric, 1)
    from arms x
    left join att a on a.version = x.version and a.arm = x.arm
    left join cl c on c.version = x.version and c.arm = x.arm
   order by x.arm desc, x.version;
end
$fn$;

create function ballast.prune_history(p_older_than interval, p_batch integer DEFAULT 1000) returns TABLE(jobs_pruned integer, steps_pruned integer, attempts_pruned integer, effects_pruned integer, model_calls_pruned integer, bytes_freed_estimate bigint, jobs_busy integer, more boolean)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp set lock_timeout = 5s
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_jobs bigint[];
  v_steps bigint[];
  v_busy bigint[];
  v_more boolean;
  v_n_jobs int := 0; v_n_steps int := 0; v_n_attempts int := 0; v_n_effects int := 0; v_n_calls int := 0;
  v_bytes bigint := 0;
  v_b bigint;
begin
  if p_older_than is null or p_older_than <= interval '0' then
    perform ballast_private.bad_argument('older_than', format('%s is not a positive interval', coalesce(p_older_than::text, 'null')),
      'Pass how long finished jobs keep their payloads, e.g. ''30 days''.');
  end if;
  if p_batch is null or p_batch not between 1 and 100000 then
    perform ballast_private.bad_argument('batch', format('%s is not between 1 and 100000', coalesce(p_batch::text, 'null')),
      'Pass the number of jobs per batch, e.g. 1000.');
  end if;

  -- Oldest first through jobs_prunable_idx; a job row locked by someone (a replay or cancel about to change it) is
  -- skipped and found again next time.
  select coalesce(array_agg(c.id), '{}') into v_jobs
    from (select j.id from ballast_private.jobs j
           where j.pruned_at is null and j.finished_at < v_now - p_older_than
           order by j.finished_at
           limit p_batch
             for no key update skip locked) c;
  v_more := cardinality(v_jobs) = p_batch;
  if cardinality(v_jobs) = 0 then
    return query select 0, 0, 0, 0, 0, 0::bigint, 0, false;
    return;
  end if;

  select coalesce(array_agg(s.id), '{}') into v_steps
    from (select s.id from ballast_private.steps s where s.job_id = any(v_jobs)
             for no key update skip locked) s;
  -- A job with a step we could not lock is busy (someone is replaying or inspecting it for update): all of it waits.
  select coalesce(array_agg(distinct s.job_id), '{}') into v_busy
    from ballast_private.steps s where s.job_id = any(v_jobs) and not s.id = any(v_steps);
  if cardinality(v_busy) > 0 then
    v_jobs := array(select x from unnest(v_jobs) x where not x = any(v_busy));
    v_steps := array(select s.id from ballast_private.steps s where s.id = any(v_steps) and not s.job_id = any(v_busy));
  end if;

  with old as (
    select s.id, coalesce(pg_column_size(s.output), 0) + coalesce(pg_column_size(s.progress), 0)
                 + coalesce(pg_column_size(s.item), 0) + coalesce(pg_column_size(s.review), 0) as size
      from ballast_private.steps s
     where s.id = any(v_steps)
       and (s.output is not null or s.progress is not null or s.item is not null or s.review ? 'proposed' or s.review ? 'detail')),
  u as (
    update ballast_private.steps s
       set output = null, progress = null, item = null, review = s.review - 'proposed' - 'detail'
      from old where s.id = old.id
    returning old.size - coalesce(pg_column_size(s.review), 0) as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_steps, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select e.step_id, e.key, pg_column_size(e.result) as size
      from ballast_private.effects e where e.step_id = any(v_steps) and e.result is not null),
  u as (
    update ballast_private.effects e set result = null
      from old where (e.step_id, e.key) = (old.step_id, old.key)
    returning old.size as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_effects, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select a.id, pg_column_size(a.contract_detail) as size
      from ballast_private.attempts a where a.step_id = any(v_steps) and a.contract_detail is not null),
  u as (
    update ballast_private.attempts a set contract_detail = null
      from old where a.id = old.id
    returning old.size as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_attempts, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select c.id, coalesce(pg_column_size(c.raw_output), 0) + coalesce(pg_column_size(c.validation_issues), 0) as size
      from ballast_private.model_calls c
     where c.job_id = any(v_jobs) and (c.raw_output is not null or c.validation_issues is not null)),
  u as (
    update ballast_private.model_calls c set raw_output = null, validation_issues = null
      from old where c.id = old.id
    returning old.size as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_calls, v_b from u;
  v_bytes := v_bytes + v_b;

  with old as (
    select j.id, pg_column_size(j.input) + coalesce(pg_column_size(j.result), 0) as size
      from ballast_private.jobs j where j.id = any(v_jobs)),
  u as (
    update ballast_private.jobs j set input = '{"pruned": true}'::jsonb, result = null, pruned_at = v_now
      from old where j.id = old.id
    returning old.size - pg_column_size(j.input) as freed)
  select count(*), coalesce(sum(u.freed), 0) into v_n_jobs, v_b from u;
  v_bytes := v_bytes + v_b;

  return query select v_n_jobs, v_n_steps, v_n_attempts, v_n_effects, v_n_calls, v_bytes, cardinality(v_busy), v_more;
end
$fn$;

create function ballast.prune_token_chunks(p_keep interval DEFAULT '00:01:00'::interval, p_max_age interval DEFAULT '01:00:00'::interval) returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_n integer;
begin
  with last as (
    select c.step_id, max(c.at) as at from ballast_private.token_chunks c group by c.step_id
  ), stale as (
    select l.step_id from last l left join ballast_private.steps s on s.id = l.step_id
     where l.at < ballast.now() - p_keep
       and (s.id is null or s.status in ('succeeded', 'failed', 'cancelled', 'skipped') or l.at < ballast.now() - p_max_age)
  )
  delete from ballast_private.token_chunks c using stale where c.step_id = stale.step_id;
  get diagnostics v_n = row_count;
  return v_n;
end
$fn$;

create function ballast.quality_stats(p_since timestamp with time zone, p_until timestamp with time zone DEFAULT 'infinity'::timestamp with time zone, p_pipeline text DEFAULT NULL::text) returns TABLE(pipeline text, step_name text, prompt_name text, prompt_version integer, model text, attempts bigint, first_pass_rate numeric, repair_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric, rejection_rate numeric, score_mean numeric, score_p10 numeric, score_p50 numeric, score_p90 numeric, successes bigint, cost_usd numeric, cost_per_success numeric, latency_p50_ms numeric, latency_p95_ms numeric)
language sql stable
as $fn$
  with firsts as (
    select distinct on (c.attempt_id) c.attempt_id, c.step_id, c.job_id, c.provider || ':' || c.requested_model as model,
           c.prompt_name, c.prompt_version, c.latency_ms
      from ballast_private.model_calls c
     where c.started_at >= p_since and c.started_at < p_until and c.rung = 'primary' and c.model_index = 0
     order by c.attempt_id, c.id
  )
  select j.pipeline,
         case when s.parent_step_id is null then s.name
              else (select p.name from ballast_private.steps p where p.id = s.parent_step_id) end,
         f.prompt_name, f.prompt_version, f.model, count(*),
         round(count(*) filter (where a.contract_outcome = 'valid_first_try')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'repaired')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'fell_back')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'degraded')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'review')::numeric / count(*), 4),
         round(count(*) filter (where a.contract_outcome = 'rejected')::numeric / count(*), 4),
         round(avg(a.quality_score), 4),
         round((percentile_cont(0.1) within group (order by a.quality_score))::numeric, 4),
         round((percentile_cont(0.5) within group (order by a.quality_score))::numeric, 4),
         round((percentile_cont(0.9) within group (order by a.quality_score))::numeric, 4),
         count(*) filter (where a.contract_outcome in ('valid_first_try', 'repaired', 'fell_back')),
         sum(a.cost_usd),
         round(sum(a.cost_usd) / nullif(count(*) filter (where a.contract_outcome in ('valid_first_try', 'repaired', 'fell_back')), 0), 8),
         round((percentile_cont(0.5) within group (order by f.latency_ms))::numeric, 1),
         round((percentile_cont(0.95) within group (order by f.latency_ms))::numeric, 1)
    from firsts f
    join ballast_private.attempts a on a.id = f.attempt_id
    join ballast_private.steps s on s.id = f.step_id
    join ballast_private.jobs j on j.id = f.job_id
   where a.contract_outcome is not null and (p_pipeline is null or j.pipeline = p_pipeline)
   group by 1, 2, 3, 4, 5
   order by 1, 2, 3, 4, 5
$fn$;

create function ballast.reap(p_dead_after_ms integer DEFAULT 10000, p_lost_after_ms integer DEFAULT 2000) returns TABLE(dead_workers text[], reclaimed_attempts bigint[], expired_waits bigint[])
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_batch constant integer := 500;
  v_trusted_from timestamptz;
  v_locks_trusted boolean;
  v_dead text[] := '{}';
  v_reclaimed bigint[] := '{}';
  v_expired bigint[] := '{}';
  v_jobs bigint[];
  v_more bigint[];
  v_job bigint;
begin
  if not pg_try_advisory_xact_lock(1650551916, 0) then
    return query select v_dead, v_reclaimed, v_expired;
    return;
  end if;
  perform set_config('ballast.actor', 'reaper', true);
  v_trusted_from := ballast_private.server_epoch() + ballast_private.restart_grace();
  -- Compared with the real clock: the server's age is real time even when a test sets ballast.now.
  v_locks_trusted := clock_timestamp() > v_trusted_from;

  v_dead := ballast_private.reap_dead_workers(p_dead_after_ms, p_lost_after_ms, v_now, v_trusted_from,
                                              v_locks_trusted, v_batch);
  select r.reclaimed_ids, r.touched_jobs into v_reclaimed, v_jobs
    from ballast_private.reclaim_lost_attempts(v_now, v_trusted_from, v_batch) r;
  select e.expired_ids, e.touched_jobs into v_expired, v_more from ballast_private.expire_waits(v_now, v_batch) e;
  v_jobs := v_jobs || v_more || ballast_private.finish_orphaned_maps(v_batch);
  if exists (select 1 from ballast_private.jobs l where l.deadline <= v_now and l.deadline is not null and l.finished_at is null)
     or exists (select 1 from ballast_private.jobs l
                 where l.expires_at <= v_now and l.expires_at is not null and l.status in ('scheduled', 'queued')) then
    v_jobs := v_jobs || ballast_private.expire_jobs(v_now, v_batch);
  end if;

  foreach v_job in array (select coalesce(array_agg(distinct j), '{}') from unnest(v_jobs) j) loop
    perform ballast_private.refresh_job_status(v_job);
  end loop;
  return query select v_dead, v_reclaimed, v_expired;
end
$fn$;

create function ballast.record_call_quality(p_call_id bigint, p_score numeric, p_quality jsonb, p_miss jsonb) returns void
language plpgsql volatile
as $fn$
declare
  v_attempt_id bigint;
begin
  select c.attempt_id into v_attempt_id from ballast_private.model_calls c where c.id = p_call_id;
  if v_attempt_id is null then
    raise exception using errcode = 'BA007', message = format('model call %s does not exist', p_call_id);
  end if;
  perform ballast_private.running_attempt(v_attempt_id);
  update ballast_private.model_calls c
     set score = p_score, quality = p_quality, error_class = coalesce(p_miss ->> 'class', c.error_class),
         error_code = coalesce(p_miss ->> 'code', c.error_code), error_message = coalesce(p_miss ->> 'message', c.error_message)
   where c.id = p_call_id;
end
$fn$;

create function ballast.record_contract_outcome(p_attempt_id bigint, p_outcome text, p_detail jsonb DEFAULT '{}'::jsonb) returns void
language plpgsql volatile
as $fn$
begin
  if p_outcome is null or p_outcome not in ('valid_first_try', 'repaired', 'fell_back', 'degraded', 'rejected', 'review') then
    perform ballast_private.bad_argument('outcome', format('%L is not a contract outcome', p_outcome),
      'Pass valid_first_try, repaired, fell_back, degraded, rejected or review.');
  end if;
  perform ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts a
     set contract_outcome = p_outcome, contract_detail = p_detail, model = p_detail ->> 'model',
         prompt_ref = p_detail ->> 'prompt', fallback_used = (p_detail ->> 'fallback_used')::boolean,
         quality_score = (p_detail ->> 'score')::numeric
   where a.id = p_attempt_id;
end
$fn$;

create function ballast.record_effect(p_attempt_id bigint, p_key text, p_result jsonb) returns jsonb
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_result jsonb;
begin
  if p_key is null or p_key = '' or length(p_key) > 500 then
    perform ballast_private.bad_argument('key', 'must be 1 to 500 characters',
      'Name the effect after what it does and to whom, e.g. ''email:welcome:user-42''.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  insert into ballast_private.effects (step_id, key, attempt_id, result)
  values (v_step.id, p_key, p_attempt_id, coalesce(p_result, 'null'::jsonb))
  on conflict (step_id, key) do nothing;
  select e.result into v_result from ballast_private.effects e where e.step_id = v_step.id and e.key = p_key;
  return v_result;
end
$fn$;

create function ballast.record_model_call(p_attempt_id bigint, p_reservation_id bigint, p_call jsonb) returns TABLE(call_id bigint, cost_usd numeric, cooldown_until timestamp with time zone, cooldown_ms integer, usage_missing boolean)
language plpgsql volatile
as $fn$
declare
  v_attempt ballast_private.attempts;
  v_tenant text;
  v_price ballast_private.model_prices;
  v_cost numeric;
  v_in int := (p_call ->> 'input_tokens')::int;
  v_out int := (p_call ->> 'output_tokens')::int;
  v_cached int := coalesce((p_call ->> 'cached_input_tokens')::int, 0);
  v_usage_missing boolean;
  v_estimate numeric;
  v_started timestamptz;
  v_id bigint;
  v_until timestamptz;
  v_model text;
  v_reused ballast_private.model_calls;
  v_kind text;
  v_saved numeric;
begin
  if jsonb_typeof(p_call) is distinct from 'object' or coalesce(p_call ->> 'provider', '') = ''
     or coalesce(p_call ->> 'requested_model', '') = '' or p_call ->> 'rung' is null
     or p_call ->> 'started_at' is null or p_call ->> 'ended_at' is null then
    perform ballast_private.bad_argument('call', 'must be an object with provider, requested_model, rung, started_at and ended_at',
      'Pass the call record as src/model/ladder.ts builds it.');
  end if;
  select a.* into v_attempt from ballast_private.attempts a where a.id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  -- Lock order: step, attempt, job.
  perform 1 from ballast_private.steps s where s.id = v_attempt.step_id for update;
  select j.tenant_id into v_tenant from ballast_private.jobs j where j.id = v_attempt.job_id;
  v_started := (p_call ->> 'started_at')::timestamptz;
  v_model := coalesce(p_call ->> 'returned_model', p_call ->> 'requested_model');
  v_usage_missing := coalesce((p_call ->> 'usage_missing')::boolean,
                              coalesce((p_call ->> 'http_status')::int between 200 and 299, false)
                              and (v_in is null or v_out is null));
  if p_call ->> 'reused_from' is not null then
    -- A stored answer used again (ballast.reusable_model_call): nothing was bought, so nothing is charged or
    -- counted; the row says what it saved. Only an answer of the same tenant and request can be named.
    select c.* into v_reused from ballast_private.model_calls c where c.id = (p_call ->> 'reused_from')::bigint;
    if v_reused.id is null or v_reused.tenant_id <> v_tenant or v_reused.request_key is distinct from p_call ->> 'request_key'
       or v_reused.reused_from is not null then
      perform ballast_private.bad_argument('call', format('reused_from %s is not a stored answer of tenant %s to this request',
                                                          p_call ->> 'reused_from', v_tenant),
        'Pass a call that ballast.reusable_model_call found for this attempt and request key.');
    end if;
    v_kind := ballast_private.reuse_kind(v_attempt.step_id, v_reused);
    v_saved := v_reused.cost_usd;
    v_cost := 0;
    v_in := null;
    v_out := null;
    v_usage_missing := false;
  else
    select * into v_price from ballast.model_price(p_call ->> 'provider', p_call ->> 'requested_model', v_started);
    if v_price.provider is null then
      select * into v_price from ballast.model_price(p_call ->> 'provider', v_model, v_started);
    end if;
  end if;
  if v_price.provider is not null then
    v_cost := round((greatest(coalesce(v_in, 0) - v_cached, 0) * v_price.input_per_mtok
                     + v_cached * coalesce(v_price.cached_input_per_mtok, v_price.input_per_mtok)
                     + coalesce(v_out, 0) * v_price.output_per_mtok) / 1000000.0, 8);
    if v_usage_missing then
      select r.estimate_usd into v_estimate from ballast_private.budget_reservations r where r.id = p_reservation_id;
      v_cost := greatest(v_cost, coalesce(v_estimate, (p_call ->> 'estimate_usd')::numeric, 0));
    end if;
  end if;

  insert into ballast_private.model_calls (
    attempt_id, step_id, job_id, tenant_id, rung, model_index, provider, provider_kind, requested_model,
    returned_model, prompt_name, prompt_version, prompt_hash, parameters, started_at, first_token_at, ended_at,
    latency_ms, finish_reason_raw, finish_reason, input_tokens, output_tokens, cached_input_tokens,
    cache_write_tokens, reasoning_tokens, cost_usd, price_valid_from, error_class, error_code, error_message,
    retryable, http_status, request_id, response_id, raw_output, validation_issues, repair_method, score, quality,
    usage_missing, request_key, output_complete, reused_from, reuse_kind, cost_saved_usd)
  values (
    p_attempt_id, v_attempt.step_id, v_attempt.job_id, v_tenant, p_call ->> 'rung',
    coalesce((p_call ->> 'model_index')::int, 0), p_call ->> 'provider', p_call ->> 'provider_kind',
    p_call ->> 'requested_model', p_call ->> 'returned_model', p_call ->> 'prompt_name',
    (p_call ->> 'prompt_version')::int, p_call ->> 'prompt_hash', p_call -> 'parameters', v_started,
    (p_call ->> 'first_token_at')::timestamptz, (p_call ->> 'ended_at')::timestamptz,
    (p_call ->> 'latency_ms')::numeric, p_call ->> 'finish_reason_raw', p_call ->> 'finish_reason', v_in, v_out,
    case when v_kind is null then (p_call ->> 'cached_input_tokens')::int end,
    case when v_kind is null then (p_call ->> 'cache_write_tokens')::int end,
    case when v_kind is null then (p_call ->> 'reasoning_tokens')::int end, v_cost, v_price.valid_from, p_call ->> 'error_class',
    p_call ->> 'error_code', p_call ->> 'error_message', (p_call ->> 'retryable')::boolean,
    (p_call ->> 'http_status')::int, p_call ->> 'request_id', p_call ->> 'response_id', p_call ->> 'raw_output',
    p_call -> 'validation_issues', p_call ->> 'repair_method', (p_call ->> 'score')::numeric, p_call -> 'quality',
    v_usage_missing, p_call ->> 'request_key', coalesce((p_call ->> 'output_complete')::boolean, false), v_reused.id,
    v_kind, v_saved)
  returning id into v_id;

  if p_reservation_id is not null then
    with r as (
      update ballast_private.budget_reservations r
         set status = 'settled', actual_usd = coalesce(v_cost, 0), settled_at = ballast.now()
       where r.id = p_reservation_id and r.status = 'open'
      returning r.tenant_id, r.period_start, r.estimate_usd)
    update ballast_private.budget_usage u
       set reserved_usd = greatest(u.reserved_usd - r.estimate_usd, 0), spent_usd = u.spent_usd + coalesce(v_cost, 0)
      from r where u.tenant_id = r.tenant_id and u.period_start = r.period_start;
  end if;

  update ballast_private.steps s
     set input_tokens = s.input_tokens + coalesce(v_in, 0), output_tokens = s.output_tokens + coalesce(v_out, 0),
         cost_usd = s.cost_usd + coalesce(v_cost, 0)
   where s.id = v_attempt.step_id;
  update ballast_private.attempts a
     set model_calls = a.model_calls + 1, input_tokens = a.input_tokens + coalesce(v_in, 0),
         output_tokens = a.output_tokens + coalesce(v_out, 0), cost_usd = a.cost_usd + coalesce(v_cost, 0)
   where a.id = p_attempt_id;
  update ballast_private.jobs j
     set input_tokens = j.input_tokens + coalesce(v_in, 0), output_tokens = j.output_tokens + coalesce(v_out, 0),
         cost_usd = j.cost_usd + coalesce(v_cost, 0)
   where j.id = v_attempt.job_id;

  if p_call ->> 'error_code' in ('rate_limited', 'overloaded') then
    perform ballast.set_provider_cooldown(p_call ->> 'provider', p_call ->> 'requested_model',
      ballast.now() + make_interval(secs => coalesce((p_call ->> 'retry_after_ms')::double precision, 2000) / 1000.0),
      format('%s from %s:%s (HTTP %s)', p_call ->> 'error_code', p_call ->> 'provider', p_call ->> 'requested_model',
             coalesce(p_call ->> 'http_status', '?')));
    select max(c.until) into v_until from ballast_private.provider_cooldowns c
     where c.provider = p_call ->> 'provider' and c.model in (p_call ->> 'requested_model', '*');
  end if;
  return query select v_id, v_cost, v_until, ballast_private.cooldown_left_ms(v_until, ballast.now()), v_usage_missing;
end
$fn$;

create function ballast.recount_job(p_job_id bigint) returns boolean
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

create function ballast.register_pipeline(p_name text, p_version integer, p_definition jsonb, p_input_schema jsonb DEFAULT '{}'::jsonb) returns TABLE(created boolean, definition_hash text)
language plpgsql volatile
as $fn$
declare
  v_hash text;
  v_existing text;
  v_step jsonb;
  v_names text[] := '{}';
  v_name text;
  v_dep text;
  v_remaining jsonb;
  v_ready text[];
  v_conc jsonb;
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    raise exception using errcode = 'BA006',
      message = format('pipeline name %L is not valid', p_name),
      hint = 'Use 1-63 characters: a lower-case letter, then lower-case letters, digits, "_", "." or "-".';
  end if;
  if p_version is null or p_version < 1 then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s: version %s is not valid', p_name, coalesce(p_version::text, 'null')),
      hint = 'Versions are integers starting at 1; bump the version whenever the steps or contracts change.';
  end if;
  if p_input_schema is null or jsonb_typeof(p_input_schema) not in ('object', 'boolean') then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s@%s: input_schema must be a JSON Schema object', p_name, p_version);
  end if;
  if p_definition is null or jsonb_typeof(p_definition -> 'steps') is distinct from 'array'
     or jsonb_array_length(p_definition -> 'steps') = 0 then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s@%s: definition.steps must be a non-empty array', p_name, p_version);
  end if;

  for v_step in select value from jsonb_array_elements(p_definition -> 'steps') loop
    v_name := v_step ->> 'name';
    if v_name is null or v_name !~ '^[a-z][a-z0-9_]{0,62}$' then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step name %L is not valid', p_name, p_version, v_name),
        hint = 'Step names are lower_snake_case, 1-63 characters, starting with a letter.';
    end if;
    if v_name = any(v_names) then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %L is defined twice', p_name, p_version, v_name);
    end if;
    v_names := v_names || v_name;
    if jsonb_typeof(v_step -> 'depends_on') is distinct from 'array' then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: depends_on must be an array of step names', p_name, p_version,
                         v_name);
    end if;
    -- A repeated dependency would be counted twice in deps_remaining but decremented once: the step would never run.
    select d into v_dep from jsonb_array_elements_text(v_step -> 'depends_on') d group by d having count(*) > 1 limit 1;
    if found then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s lists %L twice in depends_on', p_name, p_version, v_name, v_dep),
        hint = 'Name each dependency once.';
    end if;
    if jsonb_typeof(v_step -> 'max_attempts') is distinct from 'number'
       or (v_step ->> 'max_attempts')::numeric not between 1 and 1000
       or (v_step ->> 'max_attempts')::numeric % 1 <> 0 then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: max_attempts %s must be an integer from 1 to 1000', p_name,
                         p_version, v_name, coalesce(v_step ->> 'max_attempts', 'null'));
    end if;
    if jsonb_typeof(v_step -> 'backoff_base_ms') is distinct from 'number'
       or jsonb_typeof(v_step -> 'backoff_cap_ms') is distinct from 'number'
       or (v_step ->> 'backoff_base_ms')::numeric not between 0 and 86400000
       or (v_step ->> 'backoff_cap_ms')::numeric not between 0 and 604800000 then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: backoff_base_ms (0 to 1 day) and backoff_cap_ms (0 to 7 days) must be numbers of milliseconds',
                         p_name, p_version, v_name);
    end if;
    -- Numbers are checked against the integer columns they are copied into at submit: a definition that registers
    -- must never make every submission fail with "integer out of range".
    if (v_step -> 'timeout_ms') is not null and jsonb_typeof(v_step -> 'timeout_ms') <> 'null'
       and (jsonb_typeof(v_step -> 'timeout_ms') <> 'number'
            or (v_step ->> 'timeout_ms')::numeric not between 1 and 2147483647
            or (v_step ->> 'timeout_ms')::numeric % 1 <> 0) then
      raise exception using errcode = 'BA006',
        message = format('pipeline %s@%s: step %s: timeout_ms must be a positive integer of milliseconds up to 2147483647 (about 24 days), or null; got %s',
                         p_name, p_version, v_name, v_step -> 'timeout_ms');
    end if;
    v_conc := v_step -> 'concurrency';
    if v_conc is not null and jsonb_typeof(v_conc) <> 'null' then
      if jsonb_typeof(v_conc -> 'limit') is distinct from 'number'
         or (v_conc ->> 'limit')::numeric not between 1 and 100000 or (v_conc ->> 'limit')::numeric % 1 <> 0
         or coalesce(v_conc ->> 'group', '') = ''
         or coalesce(v_conc ->> 'key', '') !~ '^(global|tenant|input(\.[A-Za-z0-9_-]+)+)$' then
        raise exception using errcode = 'BA006',
          message = format('pipeline %s@%s: step %s: concurrency %s is not valid', p_name, p_version, v_name, v_conc),
          hint = 'Use {"group": "<name>", "key": "global" | "tenant" | "input.<field>[.<field>...]", "limit": <integer from 1 to 100000>}.';
      end if;
    end if;
  end loop;

  -- Dependencies exist, are not the step itself, and form no cycle (Kahn's algorithm: peel off steps whose
  -- dependencies are all peeled; whatever remains is on a cycle).
  for v_step in select value from jsonb_array_elements(p_definition -> 'steps') loop
    for v_dep in select jsonb_array_elements_text(v_step -> 'depends_on') loop
      if not v_dep = any(v_names) or v_dep = v_step ->> 'name' then
        raise exception using errcode = 'BA006',
          message = format('pipeline %s@%s: step %s depends on %L, which is %s', p_name, p_version,
                           v_step ->> 'name', v_dep,
                           case when v_dep = v_step ->> 'name' then 'itself' else 'not a step of this pipeline' end),
          hint = format('Steps of this pipeline: %s.', array_to_string(v_names, ', '));
      end if;
    end loop;
  end loop;
  v_remaining := p_definition -> 'steps';
  v_ready := '{}';
  loop
    select coalesce(array_agg(value ->> 'name'), '{}') into v_names
      from jsonb_array_elements(v_remaining)
     where not exists (select 1 from jsonb_array_elements_text(value -> 'depends_on') d
                        where not d = any(v_ready));
    exit when cardinality(v_names) = 0;
    v_ready := v_ready || v_names;
    select coalesce(jsonb_agg(value), '[]') into v_remaining
      from jsonb_array_elements(v_remaining) where not (value ->> 'name') = any(v_names);
  end loop;
  if jsonb_array_length(v_remaining) > 0 then
    raise exception using errcode = 'BA006',
      message = format('pipeline %s@%s: steps %s depend on each other in a cycle', p_name, p_version,
                       (select string_agg(value ->> 'name', ', ') from jsonb_array_elements(v_remaining)));
  end if;

  v_hash := encode(sha256(convert_to(jsonb_build_array(p_definition, p_input_schema)::text, 'UTF8')), 'hex');
  insert into ballast_private.pipelines (name, version, definition, input_schema, definition_hash)
  values (p_name, p_version, p_definition, p_input_schema, v_hash)
  on conflict (name, version) do nothing;
  if found then
    return query select true, v_hash;
    return;
  end if;
  select p.definition_hash into v_existing from ballast_private.pipelines p
   where p.name = p_name and p.version = p_version;
  if v_existing <> v_hash then
    raise exception using errcode = 'BA005',
      message = format('pipeline %s version %s is already registered with a different definition', p_name, p_version),
      detail = format('registered hash %s, new hash %s', v_existing, v_hash),
      hint = format('Give the changed pipeline a new version (%s); jobs already submitted stay pinned to version %s.',
                    p_version + 1, p_version);
  end if;
  return query select false, v_hash;
end
$fn$;

create function ballast.register_prompt(p_name text, p_version integer, p_template jsonb) returns TABLE(created boolean, content_hash text)
language plpgsql volatile
as $fn$
declare
  v_hash text;
  v_existing ballast_private.prompts;
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    perform ballast_private.bad_argument('name', format('%L is not a valid prompt name', p_name),
      'Use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".');
  end if;
  if p_version is null or p_version < 1 then
    perform ballast_private.bad_argument('version', format('%s is not a positive integer', coalesce(p_version::text, 'null')),
      'Number prompt versions 1, 2, 3...');
  end if;
  if jsonb_typeof(p_template) is distinct from 'object' or jsonb_typeof(p_template -> 'user') is distinct from 'string'
     or coalesce(jsonb_typeof(p_template -> 'system'), 'null') not in ('null', 'string') then
    perform ballast_private.bad_argument('template', 'must be an object with a text "user" and an optional text "system"',
      'Pass e.g. {"system": "You extract invoices.", "user": "Extract: {{input.text}}"}.');
  end if;
  v_hash := encode(sha256(convert_to(p_template::text, 'UTF8')), 'hex');
  insert into ballast_private.prompts (name, version, template, content_hash)
  values (p_name, p_version, p_template, v_hash)
  on conflict (name, version) do nothing;
  if found then
    return query select true, v_hash;
    return;
  end if;
  select * into v_existing from ballast_private.prompts p where p.name = p_name and p.version = p_version;
  if v_existing.content_hash <> v_hash then
    raise exception using errcode = 'BA012',
      message = format('prompt %s@%s is already registered with other content (hash %s, this one %s)', p_name,
                       p_version, left(v_existing.content_hash, 12), left(v_hash, 12)),
      hint = 'A prompt version is immutable once used: give the changed prompt a new version number.';
  end if;
  return query select false, v_hash;
end
$fn$;

create function ballast.register_worker(p_worker_id text, p_hostname text, p_pid integer, p_concurrency integer, p_pipelines text[] DEFAULT '{}'::text[]) returns void
language plpgsql volatile
as $fn$
begin
  if p_worker_id is null or p_worker_id = '' then
    perform ballast_private.bad_argument('worker_id', 'is missing', 'Pass a unique id for this worker process.');
  end if;
  if p_concurrency is null or p_concurrency < 1 then
    perform ballast_private.bad_argument('concurrency', format('%s is not a positive integer', p_concurrency),
      'Run at least one step at a time.');
  end if;
  insert into ballast_private.workers (id, hostname, pid, concurrency, pipelines)
  values (p_worker_id, coalesce(p_hostname, 'unknown'), coalesce(p_pid, 0), p_concurrency, coalesce(p_pipelines, '{}'))
  on conflict (id) do update
     set hostname = excluded.hostname, pid = excluded.pid, concurrency = excluded.concurrency,
         pipelines = excluded.pipelines, heartbeat_at = ballast.now(), stopped_at = null;
end
$fn$;

create function ballast.release_attempt(p_attempt_id bigint, p_reason text DEFAULT 'worker shutting down'::text) returns text
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_status text;
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts
     set outcome = 'released', finished_at = v_now, error_class = 'released',
         error_message = coalesce(nullif(p_reason, ''), 'released'), error_retryable = true
   where id = p_attempt_id;
  update ballast_private.steps set attempt_offset = attempt_offset + 1 where id = v_step.id
  returning * into v_step;
  v_status := ballast_private.settle_failure(v_step,
    jsonb_build_object('class', 'released', 'message', coalesce(nullif(p_reason, ''), 'released'),
                       'retryable', true, 'attempt', v_step.attempts),
    true, 0, v_now);
  perform ballast_private.refresh_job_status(v_step.job_id);
  return v_status;
end
$fn$;

create function ballast.release_attempts(p_worker_id text, p_attempt_ids bigint[], p_reason text DEFAULT 'worker shutting down'::text) returns integer
language plpgsql volatile
as $fn$
declare
  v_id bigint;
  v_n int := 0;
begin
  foreach v_id in array coalesce(p_attempt_ids, '{}') loop
    begin
      perform ballast.release_attempt(v_id, p_reason);
      v_n := v_n + 1;
    exception when sqlstate 'BA008' or sqlstate 'BA007' then
      null;
    end;
  end loop;
  return v_n;
end
$fn$;

create function ballast.remove_eval_case(p_dataset text, p_key text) returns integer
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_version integer;
begin
  perform ballast_private.eval_dataset(p_dataset, true);
  if not exists (select 1 from ballast_private.eval_cases c where c.dataset = p_dataset and c.case_key = p_key and c.removed_in_version is null) then
    raise exception using errcode = 'BA007', message = format('case %L is not in dataset %L', p_key, p_dataset),
      hint = 'ballast.eval_cases lists the cases of each version (in_current_version).';
  end if;
  update ballast_private.eval_datasets d set version = d.version + 1, updated_at = ballast.now()
   where d.name = p_dataset returning d.version into v_version;
  update ballast_private.eval_cases c set removed_in_version = v_version
   where c.dataset = p_dataset and c.case_key = p_key and c.removed_in_version is null;
  return v_version;
end
$fn$;

create function ballast.remove_webhook_secret(p_path text, p_fingerprint text) returns integer
language plpgsql volatile
as $fn$
declare
  v_secrets text[];
  v_left text[];
begin
  select e.secrets into v_secrets from ballast_private.webhook_endpoints e where e.path = p_path for update;
  if not found then
    raise exception using errcode = 'BA007', message = format('webhook endpoint %s does not exist', coalesce(p_path, 'null'));
  end if;
  select coalesce(array_agg(s order by n), '{}') into v_left from unnest(v_secrets) with ordinality u(s, n)
   where s <> p_fingerprint and ballast_private.webhook_secret_fingerprint(s) <> p_fingerprint;
  if cardinality(v_left) = cardinality(v_secrets) then
    raise exception using errcode = 'BA007', message = format('webhook endpoint %s has no secret %s', p_path, p_fingerprint),
      hint = 'Pass a fingerprint shown by ballast.webhook_endpoints.';
  end if;
  if cardinality(v_left) = 0 then
    perform ballast_private.bad_argument('fingerprint', 'names the last secret of the endpoint',
      'Add the new secret first (ballast.rotate_webhook_secret), or delete the endpoint.');
  end if;
  update ballast_private.webhook_endpoints set secrets = v_left, updated_at = ballast.now() where path = p_path;
  return cardinality(v_left);
end
$fn$;

create function ballast.replay_dead_letters(p_reason text, p_pipeline text DEFAULT NULL::text, p_error_class text DEFAULT NULL::text, p_since interval DEFAULT '7 days'::interval, p_step_name text DEFAULT NULL::text, p_limit integer DEFAULT 100, p_dry_run boolean DEFAULT false, p_actor text DEFAULT NULL::text) returns TABLE(step_id bigint, job_id bigint, pipeline text, step_name text, error_class text, failed_at timestamp with time zone, replayed boolean, replayed_step_ids bigint[], job_status text)
language plpgsql volatile
as $fn$
declare
  v_from timestamptz;
  v_dead record;
  v_replay record;
begin
  if coalesce(p_reason, '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty',
      'Say why these steps run again (e.g. ''provider outage over''); it is kept in the audit trail.');
  end if;
  if p_limit is null or p_limit not between 1 and 10000 then
    perform ballast_private.bad_argument('limit', format('%s is not between 1 and 10000', coalesce(p_limit::text, 'null')),
      'Replay in batches of at most 10000.');
  end if;
  v_from := ballast_private.report_window(coalesce(p_since, interval '7 days'), 'day');
  for v_dead in
    select d.step_id, d.job_id, d.pipeline, d.step_name, d.error_class, d.failed_at
      from ballast.dead_letters d
     where d.failed_at >= v_from and d.pruned_at is null and not d.is_map_step
       and (p_pipeline is null or d.pipeline = p_pipeline)
       and (p_error_class is null or d.error_class = p_error_class)
       and (p_step_name is null or d.step_name = p_step_name)
     order by d.failed_at, d.step_id
     limit p_limit
  loop
    if p_dry_run then
      return query select v_dead.step_id, v_dead.job_id, v_dead.pipeline, v_dead.step_name, v_dead.error_class,
                          v_dead.failed_at, false, '{}'::bigint[],
                          (select j.status from ballast_private.jobs j where j.id = v_dead.job_id);
      continue;
    end if;
    -- An earlier replay in this loop may have reset this step already (a dependant of the step it replayed).
    continue when (select s.status from ballast_private.steps s where s.id = v_dead.step_id) <> 'failed';
    select * into v_replay from ballast.replay_step(v_dead.step_id, p_reason, false, p_actor);
    return query select v_dead.step_id, v_dead.job_id, v_dead.pipeline, v_dead.step_name, v_dead.error_class,
                        v_dead.failed_at, true, v_replay.replayed_step_ids, v_replay.job_status;
  end loop;
end
$fn$;

create function ballast.replay_job(p_job_id bigint, p_from_step text DEFAULT NULL::text, p_reason text DEFAULT NULL::text, p_actor text DEFAULT NULL::text, p_fresh_calls boolean DEFAULT false) returns TABLE(job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step_id bigint;
  v_all bigint[] := '{}';
  v_r record;
begin
  perform 1 from ballast_private.jobs j where j.id = p_job_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  if p_from_step is not null then
    select s.id into v_step_id from ballast_private.steps s where s.job_id = p_job_id and s.name = p_from_step;
    if v_step_id is null then
      raise exception using errcode = 'BA007', message = format('job %s has no step %L', p_job_id, p_from_step),
        hint = 'Steps: ' || (select string_agg(name, ', ' order by id) from ballast_private.steps where steps.job_id = p_job_id);
    end if;
    return query select * from ballast.replay_step(v_step_id, p_reason, true, p_actor, p_fresh_calls);
    return;
  end if;
  for v_step_id in
    -- Map steps are replayed through their failed items (their own failure is the items').
    select s.id from ballast_private.steps s
     where s.job_id = p_job_id and s.status in ('failed', 'cancelled')
       and not exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id)
     order by s.id
  loop
    -- A cancelled step may already have been reset as a dependant of an earlier one in this loop.
    continue when (select status from ballast_private.steps where id = v_step_id) not in ('failed', 'cancelled');
    select * into v_r from ballast.replay_step(v_step_id, p_reason, false, p_actor, p_fresh_calls);
    v_all := v_all || v_r.replayed_step_ids;
  end loop;
  if cardinality(v_all) = 0 then
    raise exception using errcode = 'BA011', message = format('job %s has no failed or cancelled step to replay', p_job_id),
      hint = 'Name a step (p_from_step) to run it and what follows again.';
  end if;
  return query select p_job_id, v_all, (select j.status from ballast_private.jobs j where j.id = p_job_id);
end
$fn$;

create function ballast.replay_step(p_step_id bigint, p_reason text DEFAULT NULL::text, p_force boolean DEFAULT false, p_actor text DEFAULT NULL::text, p_fresh_calls boolean DEFAULT false) returns TABLE(job_id bigint, replayed_step_ids bigint[], job_status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_ids bigint[];
  v_id bigint;
  v_r record;
  v_parent ballast_private.steps;
begin
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('step %s does not exist', p_step_id);
  end if;
  perform ballast_private.set_actor(p_actor);
  perform set_config('ballast.reason', coalesce(p_reason, ''), true);
  -- Items of map steps first, then the other steps, each by id (the order cancel_job and finish_map use).
  perform 1 from ballast_private.steps s where s.job_id = v_step.job_id order by s.parent_step_id is null, s.id for update;
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if v_step.status in ('pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review') then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s" of job %s) is %s: only a finished step can be replayed', v_step.id, v_step.name,
                       v_step.job_id, v_step.status),
      hint = case when v_step.status = 'running' then 'Wait for it to finish, or cancel the job first.'
                  else 'It will run by itself; replay it once it has finished.' end;
  end if;
  if v_step.status = 'succeeded' and not p_force then
    perform ballast_private.bad_argument('force', format('step %s ("%s") succeeded; replaying it repeats its work', v_step.id, v_step.name),
      'Pass p_force => true to run it again anyway.');
  end if;
  if v_step.status = 'skipped' then
    perform ballast_private.bad_argument('step_id', format('step %s ("%s") was skipped because a step it depends on failed', v_step.id, v_step.name),
      'Replay the failed step it depends on; this one follows.');
  end if;

  perform set_config('ballast.replay', 'on', true);
  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data)
  values (v_step.job_id, v_step.id, 'step_replayed', v_step.status, current_setting('ballast.actor', true),
          nullif(p_reason, ''), jsonb_build_object('previous_status', v_step.status, 'attempts', v_step.attempts,
                                                   'force', p_force)
                             || case when p_fresh_calls then '{"fresh_calls": true}'::jsonb else '{}'::jsonb end);

  -- An item of a map step (0008) is replayed alone; its map step waits for it again and what follows the map
  -- step runs again. Otherwise the step and everything depending on it, directly or not.
  select p.* into v_parent from ballast_private.steps p where p.id = v_step.parent_step_id;
  with recursive dependants(name) as (
    select coalesce(v_parent.name, v_step.name)
    union
    select d.name from ballast_private.steps d join dependants p on p.name = any(d.depends_on)
     where d.job_id = v_step.job_id)
  select array_agg(s.id order by s.id) into v_ids
    from ballast_private.steps s
   where s.job_id = v_step.job_id and s.parent_step_id is null and s.name in (select name from dependants);
  if v_parent.id is not null then
    v_ids := v_ids || v_step.id;
  end if;
  select s.id, s.name into v_r from ballast_private.steps s
   where s.id = any(v_ids) and (v_parent.id is null or s.id <> v_parent.id)
     and exists (select 1 from ballast_private.steps c where c.parent_step_id = s.id)
   order by s.id limit 1;
  if found then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s") is a map step that already ran its items: replaying it, or a step before it, is not supported yet',
                       v_r.id, v_r.name),
      hint = 'Replay its failed items instead (ballast.step_items lists them).';
  end if;

  select s.id, s.name, s.status into v_r from ballast_private.steps s
   where s.id = any(v_ids) and s.id <> v_step.id
     and s.status in ('queued', 'running', 'retrying', 'waiting', 'needs_review')
     and (v_parent.id is null or s.id <> v_parent.id or s.status <> 'waiting')
   order by s.id limit 1;
  if found then
    raise exception using errcode = 'BA011',
      message = format('step %s ("%s") depends on step %s and is %s: replaying now would run it twice', v_r.id,
                       v_r.name, v_step.id, v_r.status),
      hint = 'Wait until it has finished, or cancel the job first.';
  end if;

  -- Paid once (0042): how far the model calls of the replayed steps go, so that an answer reused from before now
  -- counts as a replay's (reuse_kind), and, with p_fresh_calls, is not reused at all.
  perform ballast_private.mark_replayed_calls(v_step.job_id, v_ids, p_fresh_calls);

  -- The replayed step and its dependants start over: outputs and errors cleared, attempts budget renewed, the
  -- dependency counter recomputed from the statuses upstream (only the replayed set changes).
  update ballast_private.steps s
     set deps_remaining = (select count(*) from ballast_private.steps d
                            where d.job_id = s.job_id and d.name = any(s.depends_on)
                              and (d.status <> 'succeeded' or d.id = any(v_ids))),
         attempt_offset = s.attempts, output = null, error = null, progress = null, next_run_at = null,
         finished_at = null, wait_key = null, wait_deadline = null, wait_on_timeout = null
   where s.id = any(v_ids);
  update ballast_private.steps s
     set status = case when s.deps_remaining = 0 then 'queued' else 'pending' end,
         queued_at = case when s.deps_remaining = 0 then v_now else s.queued_at end
   where s.id = any(v_ids) and s.id is distinct from v_parent.id;
  if v_parent.id is not null then
    -- The map step keeps its attempts and waits for the replayed item (its output is rebuilt when all are final).
    update ballast_private.steps s
       set status = 'waiting', wait_key = null, attempt_offset = v_parent.attempt_offset,
           deps_remaining = 0
     where s.id = v_parent.id and s.status <> 'waiting';
  end if;
  for v_id in select s.id from ballast_private.steps s where s.id = any(v_ids) and s.status = 'queued' loop
    perform ballast_private.wake_step(v_id);
  end loop;
  return query select v_step.job_id, v_ids, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;

create function ballast.report_models(p_since interval DEFAULT '24:00:00'::interval, p_period text DEFAULT 'hour'::text) returns TABLE(period_start timestamp with time zone, provider text, model text, calls bigint, errors bigint, error_rate numeric, errors_by_class jsonb, not_made bigint, latency_p50_ms numeric, latency_p95_ms numeric, input_tokens bigint, output_tokens bigint, cached_input_tokens bigint, cost_usd numeric, unpriced bigint, usage_missing bigint)
language plpgsql stable
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with c as materialized (
    select ballast_private.report_period(p_period, c.started_at) as period_start, c.provider,
           c.requested_model as model, c.error_class, c.latency_ms, c.input_tokens, c.output_tokens,
           c.cached_input_tokens, c.cost_usd, c.usage_missing,
           coalesce(c.error_class not in ('cooldown', 'budget'), true) as made
      from ballast_private.model_calls c
     where c.started_at >= v_from),
  by_class as (
    select c.period_start, c.provider, c.model, jsonb_object_agg(c.error_class, c.n order by c.error_class) as classes
      from (select c.period_start, c.provider, c.model, c.error_class, count(*) as n
              from c where c.error_class is not null group by 1, 2, 3, 4) c
     group by 1, 2, 3)
  select c.period_start, c.provider, c.model,
         count(*) filter (where c.made),
         count(*) filter (where c.made and c.error_class is not null),
         round((count(*) filter (where c.made and c.error_class is not null))::numeric
               / nullif(count(*) filter (where c.made), 0), 4),
         coalesce(b.classes, '{}'::jsonb),
         count(*) filter (where not c.made),
         round((percentile_cont(0.5) within group (order by c.latency_ms) filter (where c.made))::numeric, 1),
         round((percentile_cont(0.95) within group (order by c.latency_ms) filter (where c.made))::numeric, 1),
         coalesce(sum(c.input_tokens), 0)::bigint, coalesce(sum(c.output_tokens), 0)::bigint,
         coalesce(sum(c.cached_input_tokens), 0)::bigint, coalesce(sum(c.cost_usd), 0),
         count(*) filter (where c.made and c.cost_usd is null),
         count(*) filter (where c.made and c.usage_missing)
    from c
    left join by_class b on (b.period_start, b.provider, b.model) = (c.period_start, c.provider, c.model)
   group by c.period_start, c.provider, c.model, b.classes
   order by c.period_start, c.provider, c.model;
end
$fn$;

create function ballast.report_pipelines(p_since interval DEFAULT '24:00:00'::interval, p_period text DEFAULT 'hour'::text) returns TABLE(period_start timestamp with time zone, pipeline text, pipeline_version integer, jobs bigint, completed bigint, partially_completed bigint, failed bigint, cancelled bigint, unfinished bigint, pruned bigint, success_rate numeric, retry_rate numeric, model_attempts bigint, first_pass_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric, queue_wait_p50_ms numeric, queue_wait_p95_ms numeric, run_p50_ms numeric, run_p95_ms numeric, duration_p50_ms numeric, duration_p95_ms numeric, cost_usd numeric, input_tokens bigint, output_tokens bigint)
language plpgsql stable set jit = off
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with win as materialized (
    select j.id, j.pipeline, j.pipeline_version, j.status, j.pruned_at, j.cost_usd, j.input_tokens, j.output_tokens,
           ballast_private.report_period(p_period, j.created_at) as period_start,
           case when j.status in ('completed', 'partially_completed', 'failed')
                then extract(epoch from j.finished_at - j.created_at) * 1000 end as duration_ms
      from ballast_private.jobs j
     where j.created_at >= v_from),
  st as materialized (
    select w.period_start, w.pipeline, w.pipeline_version, s.id, s.job_id,
           extract(epoch from s.started_at - case when s.attempts = 1 then s.queued_at
                                                  when s.parent_step_id is not null or cardinality(s.depends_on) = 0
                                                  then s.created_at end) * 1000 as wait_ms
      from win w
      cross join lateral (select s.* from ballast_private.steps s where s.job_id = w.id offset 0) s),
  att as materialized (
    select s.period_start, s.pipeline, s.pipeline_version, s.job_id, a.step_id, a.number, a.outcome,
           a.contract_outcome, a.fallback_used,
           case when a.outcome in ('succeeded', 'failed', 'timed_out', 'needs_review')
                then extract(epoch from a.finished_at - a.started_at) * 1000 end as run_ms
      from st s
      cross join lateral (select a.* from ballast_private.attempts a where a.step_id = s.id offset 0) a),
  job_agg as (
    select w.period_start, w.pipeline, w.pipeline_version, count(*) as jobs,
           count(*) filter (where w.status = 'completed') as completed,
           count(*) filter (where w.status = 'partially_completed') as partially_completed,
           count(*) filter (where w.status = 'failed') as failed,
           count(*) filter (where w.status = 'cancelled') as cancelled,
           count(*) filter (where w.status not in ('completed', 'partially_completed', 'failed', 'cancelled')) as unfinished,
           count(*) filter (where w.pruned_at is not null) as pruned,
           percentile_cont(0.5) within group (order by w.duration_ms) as duration_p50,
           percentile_cont(0.95) within group (order by w.duration_ms) as duration_p95,
           sum(w.cost_usd) as cost_usd, sum(w.input_tokens)::bigint as input_tokens,
           sum(w.output_tokens)::bigint as output_tokens
      from win w group by 1, 2, 3),
  retry_agg as (
    select r.period_start, r.pipeline, r.pipeline_version, count(distinct r.job_id) as jobs_ran,
           count(distinct r.job_id) filter (where r.retried) as jobs_retried
      from (select a.period_start, a.pipeline, a.pipeline_version, a.job_id,
                   coalesce(min(a.number) filter (where a.outcome in ('failed', 'crashed', 'timed_out')) < max(a.number),
                            false) as retried
              from att a group by 1, 2, 3, 4, a.step_id) r
     group by 1, 2, 3),
  attempt_agg as (
    select a.period_start, a.pipeline, a.pipeline_version,
           count(*) filter (where a.contract_outcome is not null) as model_attempts,
           count(*) filter (where a.contract_outcome = 'valid_first_try') as first_pass,
           count(*) filter (where a.contract_outcome is not null and a.fallback_used) as fell_back,
           count(*) filter (where a.contract_outcome = 'degraded') as degraded,
           count(*) filter (where a.contract_outcome = 'review') as review,
           percentile_cont(0.5) within group (order by a.run_ms) as run_p50,
           percentile_cont(0.95) within group (order by a.run_ms) as run_p95
      from att a group by 1, 2, 3),
  step_agg as (
    select s.period_start, s.pipeline, s.pipeline_version,
           percentile_cont(0.5) within group (order by s.wait_ms) as wait_p50,
           percentile_cont(0.95) within group (order by s.wait_ms) as wait_p95
      from st s group by 1, 2, 3)
  select j.period_start, j.pipeline, j.pipeline_version, j.jobs, j.completed, j.partially_completed, j.failed,
         j.cancelled, j.unfinished, j.pruned,
         round(j.completed::numeric / nullif(j.completed + j.partially_completed + j.failed, 0), 4),
         round(r.jobs_retried::numeric / nullif(r.jobs_ran, 0), 4),
         coalesce(a.model_attempts, 0),
         round(a.first_pass::numeric / nullif(a.model_attempts, 0), 4),
         round(a.fell_back::numeric / nullif(a.model_attempts, 0), 4),
         round(a.degraded::numeric / nullif(a.model_attempts, 0), 4),
         round(a.review::numeric / nullif(a.model_attempts, 0), 4),
         round(s.wait_p50::numeric, 1), round(s.wait_p95::numeric, 1),
         round(a.run_p50::numeric, 1), round(a.run_p95::numeric, 1),
         round(j.duration_p50::numeric, 1), round(j.duration_p95::numeric, 1),
         j.cost_usd, j.input_tokens, j.output_tokens
    from job_agg j
    left join retry_agg r on (r.period_start, r.pipeline, r.pipeline_version) = (j.period_start, j.pipeline, j.pipeline_version)
    left join attempt_agg a on (a.period_start, a.pipeline, a.pipeline_version) = (j.period_start, j.pipeline, j.pipeline_version)
    left join step_agg s on (s.period_start, s.pipeline, s.pipeline_version) = (j.period_start, j.pipeline, j.pipeline_version)
   order by j.period_start, j.pipeline, j.pipeline_version;
end
$fn$;

create function ballast.report_progress(p_attempt_id bigint, p_progress jsonb) returns boolean
language plpgsql volatile
as $fn$
declare
  v_step_id bigint;
  v_job_id bigint;
begin
  update ballast_private.steps s set progress = p_progress
    from ballast_private.attempts a
   where a.id = p_attempt_id and a.outcome = 'running' and s.id = a.step_id and s.status = 'running'
     and s.attempts = a.number
  returning s.id, s.job_id into v_step_id, v_job_id;
  if v_step_id is null then
    return false;
  end if;
  perform pg_notify('ballast_events',
    json_build_object('progress', json_build_object('job_id', v_job_id, 'step_id', v_step_id))::text);
  return true;
end
$fn$;

create function ballast.report_quality(p_since interval DEFAULT '30 days'::interval, p_period text DEFAULT 'day'::text) returns TABLE(period_start timestamp with time zone, prompt_name text, prompt_version integer, provider text, model text, scored_calls bigint, avg_score numeric, min_score numeric, max_score numeric, below_threshold bigint)
language plpgsql stable
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  select ballast_private.report_period(p_period, c.started_at), c.prompt_name, c.prompt_version, c.provider,
         c.requested_model, count(*), round(avg(c.score), 4), min(c.score), max(c.score),
         count(*) filter (where c.error_class = 'quality')
    from ballast_private.model_calls c
   where c.started_at >= v_from and c.score is not null
   group by 1, 2, 3, 4, 5
   order by 1, 2, 3, 4, 5;
end
$fn$;

create function ballast.report_steps(p_since interval DEFAULT '24:00:00'::interval, p_period text DEFAULT 'hour'::text) returns TABLE(period_start timestamp with time zone, pipeline text, pipeline_version integer, step_name text, is_item boolean, steps bigint, succeeded bigint, failed bigint, skipped bigint, cancelled bigint, unfinished bigint, success_rate numeric, retry_rate numeric, attempts bigint, model_attempts bigint, first_pass_rate numeric, fallback_rate numeric, degraded_rate numeric, review_rate numeric, queue_wait_p50_ms numeric, queue_wait_p95_ms numeric, run_p50_ms numeric, run_p95_ms numeric, cost_usd numeric, input_tokens bigint, output_tokens bigint)
language plpgsql stable set jit = off
as $fn$
#variable_conflict use_column
declare
  v_from timestamptz := ballast_private.report_window(p_since, p_period);
begin
  return query
  with st as materialized (
    select ballast_private.report_period(p_period, j.created_at) as period_start, j.pipeline, j.pipeline_version,
           -- items are named '<map step>__<index>' (0008)
           case when s.parent_step_id is null then s.name else regexp_replace(s.name, '__[0-9]+$', '') end as step_name,
           s.parent_step_id is not null as is_item, s.id, s.status, s.cost_usd, s.input_tokens, s.output_tokens,
           extract(epoch from s.started_at - case when s.attempts = 1 then s.queued_at
                                                  when s.parent_step_id is not null or cardinality(s.depends_on) = 0
                                                  then s.created_at end) * 1000 as wait_ms
      from ballast_private.jobs j
      cross join lateral (select s.* from ballast_private.steps s where s.job_id = j.id offset 0) s
     where j.created_at >= v_from),
  att as materialized (
    select s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item, a.step_id, a.number, a.outcome,
           a.contract_outcome, a.fallback_used,
           case when a.outcome in ('succeeded', 'failed', 'timed_out', 'needs_review')
                then extract(epoch from a.finished_at - a.started_at) * 1000 end as run_ms
      from st s
      cross join lateral (select a.* from ballast_private.attempts a where a.step_id = s.id offset 0) a),
  step_agg as (
    select s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item, count(*) as steps,
           count(*) filter (where s.status = 'succeeded') as succeeded,
           count(*) filter (where s.status = 'failed') as failed,
           count(*) filter (where s.status = 'skipped') as skipped,
           count(*) filter (where s.status = 'cancelled') as cancelled,
           count(*) filter (where s.status not in ('succeeded', 'failed', 'skipped', 'cancelled')) as unfinished,
           percentile_cont(0.5) within group (order by s.wait_ms) as wait_p50,
           percentile_cont(0.95) within group (order by s.wait_ms) as wait_p95,
           sum(s.cost_usd) as cost_usd, sum(s.input_tokens)::bigint as input_tokens,
           sum(s.output_tokens)::bigint as output_tokens
      from st s group by 1, 2, 3, 4, 5),
  retry_agg as (
    select r.period_start, r.pipeline, r.pipeline_version, r.step_name, r.is_item, count(*) as steps_ran,
           count(*) filter (where r.retried) as steps_retried
      from (select a.period_start, a.pipeline, a.pipeline_version, a.step_name, a.is_item,
                   coalesce(min(a.number) filter (where a.outcome in ('failed', 'crashed', 'timed_out')) < max(a.number),
                            false) as retried
              from att a group by 1, 2, 3, 4, 5, a.step_id) r
     group by 1, 2, 3, 4, 5),
  attempt_agg as (
    select a.period_start, a.pipeline, a.pipeline_version, a.step_name, a.is_item, count(*) as attempts,
           count(*) filter (where a.contract_outcome is not null) as model_attempts,
           count(*) filter (where a.contract_outcome = 'valid_first_try') as first_pass,
           count(*) filter (where a.contract_outcome is not null and a.fallback_used) as fell_back,
           count(*) filter (where a.contract_outcome = 'degraded') as degraded,
           count(*) filter (where a.contract_outcome = 'review') as review,
           percentile_cont(0.5) within group (order by a.run_ms) as run_p50,
           percentile_cont(0.95) within group (order by a.run_ms) as run_p95
      from att a group by 1, 2, 3, 4, 5)
  select s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item, s.steps, s.succeeded, s.failed,
         s.skipped, s.cancelled, s.unfinished,
         round(s.succeeded::numeric / nullif(s.succeeded + s.failed, 0), 4),
         round(r.steps_retried::numeric / nullif(r.steps_ran, 0), 4),
         coalesce(a.attempts, 0), coalesce(a.model_attempts, 0),
         round(a.first_pass::numeric / nullif(a.model_attempts, 0), 4),
         round(a.fell_back::numeric / nullif(a.model_attempts, 0), 4),
         round(a.degraded::numeric / nullif(a.model_attempts, 0), 4),
         round(a.review::numeric / nullif(a.model_attempts, 0), 4),
         round(s.wait_p50::numeric, 1), round(s.wait_p95::numeric, 1),
         round(a.run_p50::numeric, 1), round(a.run_p95::numeric, 1),
         s.cost_usd, s.input_tokens, s.output_tokens
    from step_agg s
    left join retry_agg r
      on (r.period_start, r.pipeline, r.pipeline_version, r.step_name, r.is_item)
       = (s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item)
    left join attempt_agg a
      on (a.period_start, a.pipeline, a.pipeline_version, a.step_name, a.is_item)
       = (s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item)
   order by s.period_start, s.pipeline, s.pipeline_version, s.step_name, s.is_item;
end
$fn$;

create function ballast.report_stuck(p_queued_for interval DEFAULT '00:05:00'::interval, p_overdue_by interval DEFAULT '00:01:00'::interval) returns TABLE(kind text, job_id bigint, step_id bigint, attempt_id bigint, tenant_id text, pipeline text, pipeline_version integer, step_name text, since timestamp with time zone, overdue interval, detail text)
language sql stable
as $fn$
  with n as materialized (select ballast.now() as now)
  select * from (
    select 'wait_past_deadline'::text as kind, s.job_id, s.id, null::bigint, j.tenant_id, j.pipeline,
           j.pipeline_version, s.name, s.wait_deadline as since, (select now from n) - s.wait_deadline,
           format('waiting for event %L; its deadline passed and no reaper acted on it (is a worker running?)', s.wait_key)
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'waiting' and s.wait_deadline < (select now from n) - p_overdue_by
    union all
    select 'lease_expired', a.job_id, a.step_id, a.id, j.tenant_id, j.pipeline, j.pipeline_version, s.name,
           a.lease_expires_at, (select now from n) - a.lease_expires_at,
           format('attempt %s on worker %s: lease expired and not reclaimed (is a worker running its reaper?)',
                  a.number, coalesce(a.worker_id, '(gone)'))
      from ballast_private.attempts a
      join ballast_private.steps s on s.id = a.step_id
      join ballast_private.jobs j on j.id = a.job_id
     where a.outcome = 'running' and a.lease_expires_at < (select now from n) - p_overdue_by
    union all
    select 'retry_overdue', s.job_id, s.id, null, j.tenant_id, j.pipeline, j.pipeline_version, s.name, s.next_run_at,
           (select now from n) - s.next_run_at,
           format('retry due since %s and not picked up (is a worker running %s@%s?); last error: %s',
                  s.next_run_at, j.pipeline, j.pipeline_version, coalesce(s.error ->> 'message', '-'))
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'retrying' and s.next_run_at < (select now from n) - p_overdue_by
    union all
    select 'queued_too_long', s.job_id, s.id, null, j.tenant_id, j.pipeline, j.pipeline_version, s.name, s.queued_at,
           (select now from n) - s.queued_at,
           case when s.concurrency_key is not null
                then format('queued; concurrency group %s allows %s at once', s.concurrency_key, s.concurrency_limit)
                else format('queued and not picked up (are workers for %s@%s running and free?)', j.pipeline, j.pipeline_version) end
      from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'queued' and s.queued_at < (select now from n) - p_queued_for) w
  order by w.since, w.kind
$fn$;

create function ballast.report_worker_fault(p_worker_id text, p_error_class text, p_blamed_attempt_ids bigint[] DEFAULT NULL::bigint[], p_message text DEFAULT NULL::text, p_quarantine_after integer DEFAULT 2) returns TABLE(attempt_id bigint, step_id bigint, step_status text, crashes integer, blamed boolean)
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_pool_id text;
  v_attempt record;
  v_step ballast_private.steps;
  v_blamed boolean;
  v_class text;
  v_message text;
  v_error jsonb;
  v_status text;
  v_jobs bigint[] := '{}';
  v_job bigint;
begin
  if p_worker_id is null or p_worker_id = '' then
    perform ballast_private.bad_argument('worker_id', 'is missing', 'Pass the id of the worker that blocked or crashed.');
  end if;
  if p_error_class is null or p_error_class not in ('blocked_worker', 'crashed_worker') then
    perform ballast_private.bad_argument('error_class', format('%L is not ''blocked_worker'' or ''crashed_worker''', p_error_class),
      'Pass ''blocked_worker'' (event loop stalled past a timeout) or ''crashed_worker'' (process died abnormally).');
  end if;
  if p_quarantine_after is null or p_quarantine_after not between 1 and 1000 then
    perform ballast_private.bad_argument('quarantine_after', format('%s is not from 1 to 1000', p_quarantine_after),
      'Pass after how many blocked or crashed attempts a step is quarantined, e.g. 2.');
  end if;
  perform set_config('ballast.actor', case when p_error_class = 'blocked_worker' then 'watchdog' else 'supervisor' end, true);

  select w.pool_id into v_pool_id from ballast_private.workers w where w.id = p_worker_id for update;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered', p_worker_id),
      hint = 'Pass the id the worker registered with (ballast.workers).';
  end if;
  update ballast_private.workers w set stopped_at = coalesce(w.stopped_at, v_now) where w.id = p_worker_id;
  if v_pool_id is not null then
    perform graphile_worker.force_unlock_workers(array[v_pool_id]);
  end if;

  for v_attempt in
    select a.id, a.step_id, a.number from ballast_private.attempts a
     where a.worker_id = p_worker_id and a.outcome = 'running'
     order by a.step_id
  loop
    select * into v_step from ballast_private.steps s where s.id = v_attempt.step_id for update;
    continue when v_step.status <> 'running' or v_step.attempts <> v_attempt.number;
    v_blamed := p_blamed_attempt_ids is null or v_attempt.id = any(p_blamed_attempt_ids);
    v_class := case when v_blamed then p_error_class else 'worker_lost' end;
    v_message := case
      when not v_blamed then format('worker %s was stopped while running this step: another step %s it', p_worker_id,
                                    case when p_error_class = 'blocked_worker' then 'blocked' else 'crashed' end)
      when coalesce(p_message, '') <> '' then p_message
      when p_error_class = 'blocked_worker'
        then format('worker %s was blocked (its event loop stalled) while running this step; the process was killed', p_worker_id)
      else format('worker %s crashed while running this step', p_worker_id) end;
    update ballast_private.attempts a
       set outcome = 'crashed', finished_at = v_now, error_class = v_class, error_message = v_message,
           error_retryable = true
     where a.id = v_attempt.id;
    if v_blamed then
      update ballast_private.steps s set crashes = s.crashes + 1 where s.id = v_step.id
      returning * into v_step;
    end if;
    if v_blamed and v_step.crashes >= p_quarantine_after then
      v_error := jsonb_build_object('class', v_class, 'retryable', false, 'attempt', v_step.attempts, 'quarantined', true,
        'message', format('quarantined after %s blocked or crashed workers: %s', v_step.crashes, v_message));
      v_status := ballast_private.settle_failure(v_step, v_error, false, null, v_now);
    else
      v_error := jsonb_build_object('class', v_class, 'message', v_message, 'retryable', true, 'attempt', v_step.attempts);
      v_status := ballast_private.settle_failure(v_step, v_error, true, null, v_now);
    end if;
    v_jobs := v_jobs || v_step.job_id;
    attempt_id := v_attempt.id;
    step_id := v_step.id;
    step_status := v_status;
    crashes := v_step.crashes;
    blamed := v_blamed;
    return next;
  end loop;

  foreach v_job in array (select coalesce(array_agg(distinct j), '{}') from unnest(v_jobs) j) loop
    perform ballast_private.refresh_job_status(v_job);
  end loop;
end
$fn$;

create function ballast.request_review(p_attempt_id bigint, p_proposed jsonb, p_reason text, p_detail jsonb DEFAULT NULL::jsonb) returns TABLE(step_status text, job_status text)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
begin
  if coalesce(p_reason, '') = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why a person must decide (e.g. "quality score 0.41 below 0.7").');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'needs_review', finished_at = v_now where id = p_attempt_id;
  perform set_config('ballast.reason', p_reason, true);
  update ballast_private.steps
     set status = 'needs_review',
         review = jsonb_build_object('reason', p_reason, 'proposed', p_proposed, 'detail', p_detail,
                                     'requested_at', v_now, 'attempt_id', p_attempt_id)
   where id = v_step.id;
  perform set_config('ballast.reason', '', true);
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  return query select 'needs_review'::text, ballast_private.refresh_job_status(v_step.job_id);
end
$fn$;

create function ballast.resolve_prompt(p_job_id bigint, p_name text, p_label text) returns TABLE(version integer, template jsonb, content_hash text, arm text, pinned_at timestamp with time zone)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_label ballast_private.prompt_labels;
  v_version integer;
  v_arm text;
begin
  if not exists (select 1 from ballast_private.job_prompts jp where jp.job_id = p_job_id and jp.prompt_name = p_name and jp.label = p_label) then
    perform ballast_private.check_prompt_label_args(p_name, p_label);
    if not exists (select 1 from ballast_private.jobs j where j.id = p_job_id) then
      raise exception using errcode = 'BA007', message = format('job %s does not exist', coalesce(p_job_id::text, 'null')),
        hint = 'Pass the id of the job whose step resolves the prompt.';
    end if;
    select * into v_label from ballast_private.prompt_labels l where l.prompt_name = p_name and l.label = p_label;
    if not found then
      perform ballast_private.bad_argument('label', format('prompt %s has no label %s', p_name, p_label),
        format('Point it at a version: select ballast.set_prompt_label(%L, %L, <version>, <reason>).', p_name, p_label));
    end if;
    if v_label.canary_version is not null and ballast_private.prompt_bucket(p_job_id, p_name) < v_label.canary_share then
      v_version := v_label.canary_version;
      v_arm := 'canary';
    else
      v_version := v_label.version;
      v_arm := 'stable';
    end if;
    insert into ballast_private.job_prompts (job_id, prompt_name, label, version, arm)
    values (p_job_id, p_name, p_label, v_version, v_arm)
    on conflict on constraint job_prompts_pkey do nothing;
  end if;
  return query
  select jp.version, p.template, p.content_hash, jp.arm, jp.pinned_at
    from ballast_private.job_prompts jp
    join ballast_private.prompts p on p.name = jp.prompt_name and p.version = jp.version
   where jp.job_id = p_job_id and jp.prompt_name = p_name and jp.label = p_label;
end
$fn$;

create function ballast.resolve_review(p_step_id bigint, p_decision text, p_output jsonb DEFAULT NULL::jsonb, p_reviewer text DEFAULT NULL::text, p_note text DEFAULT NULL::text) returns TABLE(step_status text, job_status text, queued_step_ids bigint[])
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_output jsonb;
  v_errors jsonb;
  v_count int;
  v_queued bigint[] := '{}';
  v_status text;
  v_promote text;
begin
  if p_decision is null or p_decision not in ('approve', 'edit', 'reject') then
    perform ballast_private.bad_argument('decision', format('%L is not approve, edit or reject', p_decision),
      'Pass ''approve'' (keep the proposed output), ''edit'' (with p_output) or ''reject''.');
  end if;
  if coalesce(p_reviewer, '') = '' then
    perform ballast_private.bad_argument('reviewer', 'is empty', 'Name the person deciding; it is kept in the audit trail.');
  end if;
  select * into v_step from ballast_private.steps s where s.id = p_step_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('step %s does not exist', p_step_id);
  end if;
  -- Lock order: an item before its map step (finish_map), then the step.
  select * into v_step from ballast_private.steps s where s.id = p_step_id for update;
  if v_step.status <> 'needs_review' then
    raise exception using errcode = 'BA013',
      message = format('step %s ("%s" of job %s) is %s, not needs_review: there is nothing to decide', v_step.id,
                       v_step.name, v_step.job_id, v_step.status),
      hint = 'ballast.reviews lists the steps waiting for a decision.';
  end if;
  perform set_config('ballast.actor', 'reviewer:' || p_reviewer, true);
  perform set_config('ballast.reason', coalesce(p_note, ''), true);

  if p_decision = 'reject' then
    update ballast_private.steps
       set review = v_step.review || jsonb_build_object('decision', p_decision, 'reviewer', p_reviewer, 'note', p_note,
                                                        'resolved_at', v_now)
     where id = v_step.id;
    select * into v_step from ballast_private.steps s where s.id = p_step_id;
    v_status := ballast_private.settle_failure(v_step,
      jsonb_build_object('class', 'review_rejected', 'code', 'review_rejected', 'retryable', false,
                         'message', coalesce('rejected by ' || p_reviewer || ': ' || nullif(p_note, ''), 'rejected by ' || p_reviewer),
                         'attempt', v_step.attempts),
      false, null, v_now);
  else
    v_output := case when p_decision = 'approve' then v_step.review -> 'proposed' else p_output end;
    if p_decision = 'approve' and (v_output is null or v_output = 'null'::jsonb) then
      perform ballast_private.bad_argument('decision', 'approve needs a proposed output and this review has none',
        'Pass decision ''edit'' with the output to use, or ''reject''.');
    end if;
    if p_decision = 'edit' and p_output is null then
      perform ballast_private.bad_argument('output', 'is null', 'Pass the corrected output (JSON) with decision ''edit''.');
    end if;
    select jsonb_agg(jsonb_build_object('path', 'output' || case when e.path = '' then ''
                                                                 when left(e.path, 1) = '[' then e.path
                                                                 else '.' || e.path end,
                                        'message', e.message)), count(*)
      into v_errors, v_count
      from ballast.json_schema_errors(ballast_private.output_contract(v_step), v_output) e;
    if v_count > 0 then
      raise exception using
        errcode = 'BA002',
        message = format('output does not satisfy the contract of step "%s" (%s problem%s): %s', v_step.name, v_count,
                         case when v_count > 1 then 's' else '' end,
                         (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ')
                            from jsonb_array_elements(v_errors) e)),
        detail = v_errors::text,
        hint = 'Correct the listed fields and resolve again; nothing was changed.';
    end if;
    update ballast_private.steps
       set status = 'succeeded', output = v_output, error = null, finished_at = v_now,
           review = v_step.review || jsonb_build_object('decision', p_decision, 'reviewer', p_reviewer, 'note', p_note,
                                                        'resolved_at', v_now)
     where id = v_step.id;
    v_queued := ballast_private.queue_dependants(v_step.job_id, v_step.name, v_now, true);
    if v_step.parent_step_id is not null then
      perform ballast_private.finish_map(v_step.parent_step_id);
    end if;
    v_status := 'succeeded';
  end if;
  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data)
  values (v_step.job_id, v_step.id, 'review_resolved', v_status, 'reviewer:' || p_reviewer, nullif(p_note, ''),
          jsonb_build_object('decision', p_decision, 'reviewer', p_reviewer,
                             'edited', p_decision = 'edit' and p_output is distinct from v_step.review -> 'proposed'));
  -- Auto-promotion (0044): the reviewed step becomes a case of the dataset its (pipeline, step) names.
  select a.dataset into v_promote from ballast_private.eval_auto_promotions a
    join ballast_private.jobs j on j.id = v_step.job_id
   where a.pipeline = j.pipeline
     and a.step = coalesce((select s.name from ballast_private.steps s where s.id = v_step.parent_step_id), v_step.name)
     and p_decision = any (a.decisions);
  if v_promote is not null then
    perform ballast.promote_to_dataset(v_step.id, v_promote, p_actor => 'reviewer:' || p_reviewer);
  end if;
  return query select v_status, ballast_private.refresh_job_status(v_step.job_id), coalesce(v_queued, '{}'::bigint[]);
end
$fn$;

create function ballast.resume_key(p_key text, p_reason text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_was boolean;
begin
  perform ballast_private.check_gate_key('key', p_key);
  delete from ballast_private.pauses z where z.key = p_key returning (z.until is null or z.until > v_now) into v_was;
  insert into ballast_private.gate_history (action, key, reason, actor, at)
  values ('resume', p_key, p_reason, ballast_private.caller_actor(p_actor), v_now);
  update ballast_private.steps s set next_run_at = v_now, updated_at = v_now
   where s.status = 'retrying' and s.next_run_at > v_now and s.error ->> 'class' = 'paused' and s.error ->> 'key' = p_key;
  if found then
    perform pg_notify('ballast_queue', '');
  end if;
  return coalesce(v_was, false);
end
$fn$;

create function ballast.reusable_model_call(p_attempt_id bigint, p_request_key text) returns TABLE(call_id bigint, reuse_kind text, raw_output text, finish_reason_raw text, finish_reason text, returned_model text, provider_kind text, cost_usd numeric)
language plpgsql stable
as $fn$
declare
  v_attempt ballast_private.attempts;
  v_tenant text;
  v_pipeline text;
  v_ttl interval;
  v_fresh bigint;
  v_call ballast_private.model_calls;
begin
  if coalesce(p_request_key, '') = '' then
    perform ballast_private.bad_argument('request_key', 'is empty', 'Pass the request key src/model/reuse.ts computes.');
  end if;
  select a.* into v_attempt from ballast_private.attempts a where a.id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  select j.tenant_id, j.pipeline into v_tenant, v_pipeline from ballast_private.jobs j where j.id = v_attempt.job_id;
  select m.ttl into v_ttl from ballast_private.model_cache m where m.pipeline = v_pipeline;
  v_fresh := coalesce((select m.fresh_through from ballast_private.step_call_marks m where m.step_id = v_attempt.step_id), 0);
  select c.* into v_call
    from ballast_private.model_calls c
   where c.request_key = p_request_key and c.tenant_id = v_tenant
     and c.reused_from is null and c.output_complete and c.raw_output is not null
     and (c.error_class is null or c.error_class = 'quality'
          or (c.error_class in ('schema', 'unparsable', 'truncated', 'refusal') and c.step_id = v_attempt.step_id))
     and c.id > v_fresh and c.attempt_id <> p_attempt_id
     and (c.step_id = v_attempt.step_id
          or (v_ttl is not null and (c.error_class is null or c.error_class = 'quality') and c.created_at > ballast.now() - v_ttl
              and exists (select 1 from ballast_private.jobs j where j.id = c.job_id and j.pipeline = v_pipeline)))
   order by c.step_id = v_attempt.step_id desc, c.id desc
   limit 1;
  if v_call.id is not null then
    return query select v_call.id, ballast_private.reuse_kind(v_attempt.step_id, v_call), v_call.raw_output,
                        v_call.finish_reason_raw, v_call.finish_reason, v_call.returned_model, v_call.provider_kind,
                        v_call.cost_usd;
  end if;
end
$fn$;

create function ballast.rotate_webhook_secret(p_path text, p_secret text) returns integer
language plpgsql volatile
as $fn$
declare
  v_count integer;
begin
  perform ballast_private.check_webhook_secret(p_secret);
  update ballast_private.webhook_endpoints
     set secrets = case when p_secret = any(secrets) then secrets else secrets || p_secret end, updated_at = ballast.now()
   where path = p_path
  returning cardinality(secrets) into v_count;
  if not found then
    raise exception using errcode = 'BA007', message = format('webhook endpoint %s does not exist', coalesce(p_path, 'null')),
      hint = 'See ballast.webhook_endpoints; create one with ballast.set_webhook_endpoint.';
  end if;
  return v_count;
end
$fn$;

create function ballast.send_event(p_key text, p_payload jsonb DEFAULT NULL::jsonb, p_actor text DEFAULT NULL::text, p_tenant_id text DEFAULT NULL::text) returns TABLE(accepted boolean, resumed_step_ids bigint[])
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_resumed bigint[] := '{}';
  v_step ballast_private.steps;
  v_tenant text;
begin
  if ballast_private.caller_unrestricted() then
    v_tenant := coalesce(p_tenant_id, ballast_private.caller_tenant(), 'default');
  else
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014',
        message = format('role %s acts for no tenant: it cannot send events', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if p_tenant_id is not null and p_tenant_id <> v_tenant then
      raise exception using errcode = 'BA014',
        message = format('tenant %s cannot send events to tenant %s', v_tenant, p_tenant_id),
        hint = 'Leave the tenant out: events go to your own tenant''s steps.';
    end if;
  end if;
  perform ballast_private.check_key_text('tenant_id', v_tenant, 200, 'Name a tenant id of 1 to 200 bytes.');
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Pass the key the waiting step named.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500, 'Pass the key the waiting step named (at most 500 bytes).');
  perform ballast_private.set_actor(ballast_private.caller_actor(p_actor));
  perform pg_advisory_xact_lock(1650551917, hashtext(v_tenant || '/' || p_key));
  insert into ballast_private.signals (tenant_id, key, payload, actor)
  values (v_tenant, p_key, p_payload, current_setting('ballast.actor', true))
  on conflict (tenant_id, key) do nothing;
  if not found then
    return query select false, v_resumed;
    return;
  end if;
  for v_step in
    select s.* from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where s.status = 'waiting' and s.wait_key = p_key and j.tenant_id = v_tenant
     order by s.id for update of s
  loop
    update ballast_private.steps
       set status = 'queued', queued_at = v_now, wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = v_step.id;
    perform ballast_private.wake_step(v_step.id);
    perform ballast_private.refresh_job_status(v_step.job_id);
    v_resumed := v_resumed || v_step.id;
  end loop;
  return query select true, v_resumed;
end
$fn$;

create function ballast.set_auto_promotion(p_pipeline text, p_step text, p_dataset text, p_decisions text[] DEFAULT '{approve,edit}'::text[], p_actor text DEFAULT NULL::text) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if p_dataset is null then
    delete from ballast_private.eval_auto_promotions a where a.pipeline = p_pipeline and a.step = p_step;
    return;
  end if;
  perform ballast_private.eval_dataset(p_dataset);
  if p_decisions is null or cardinality(p_decisions) = 0 or not (p_decisions <@ array['approve', 'edit', 'reject']) then
    perform ballast_private.bad_argument('decisions', format('%s is not a non-empty list of approve, edit, reject', coalesce(p_decisions::text, 'null')),
      'e.g. ''{approve,edit}'' (the default).');
  end if;
  insert into ballast_private.eval_auto_promotions (pipeline, step, dataset, decisions, set_by)
  values (p_pipeline, p_step, p_dataset, p_decisions, ballast_private.caller_actor(p_actor))
  on conflict (pipeline, step) do update set dataset = excluded.dataset, decisions = excluded.decisions,
                                             set_by = excluded.set_by, set_at = ballast.now();
end
$fn$;

create function ballast.set_budget(p_tenant_id text, p_limit_usd numeric, p_period text DEFAULT 'month'::text, p_on_exhausted text DEFAULT 'pause'::text, p_actor text DEFAULT NULL::text) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step record;
begin
  if coalesce(p_tenant_id, '') = '' then
    perform ballast_private.bad_argument('tenant_id', 'is empty', 'Name the tenant whose spending is limited.');
  end if;
  if p_limit_usd < 0 then
    perform ballast_private.bad_argument('limit_usd', format('%s is negative', p_limit_usd),
      'Pass the limit in USD (0 stops all priced calls), or null to remove the limit.');
  end if;
  if p_period is null or p_period not in ('day', 'week', 'month') then
    perform ballast_private.bad_argument('period', format('%L is not day, week or month', p_period), 'Pass ''day'', ''week'' or ''month''.');
  end if;
  if p_on_exhausted is null or p_on_exhausted not in ('pause', 'fail') then
    perform ballast_private.bad_argument('on_exhausted', format('%L is not pause or fail', p_on_exhausted),
      'Pass ''pause'' (the step waits for the next period or a raised limit) or ''fail''.');
  end if;
  perform ballast_private.set_actor(p_actor);
  if p_limit_usd is null then
    delete from ballast_private.budgets where tenant_id = p_tenant_id;
  else
    insert into ballast_private.budgets (tenant_id, limit_usd, period, on_exhausted)
    values (p_tenant_id, p_limit_usd, p_period, p_on_exhausted)
    on conflict (tenant_id) do update
      set limit_usd = excluded.limit_usd, period = excluded.period, on_exhausted = excluded.on_exhausted,
          updated_at = ballast.now();
  end if;
  -- Wake the steps the old limit paused (status retrying, error class budget_exhausted, due later).
  for v_step in
    select s.id, s.job_id from ballast_private.steps s join ballast_private.jobs j on j.id = s.job_id
     where j.tenant_id = p_tenant_id and s.status = 'retrying' and s.error ->> 'class' = 'budget_exhausted'
     order by s.id for update of s
  loop
    update ballast_private.steps set next_run_at = ballast.now() where id = v_step.id;
    perform ballast_private.wake_step(v_step.id);
  end loop;
end
$fn$;

create function ballast.set_budget_alert(p_name text, p_scope text, p_scope_value text DEFAULT NULL::text, p_limit_usd numeric DEFAULT NULL::numeric, p_period text DEFAULT NULL::text, p_percents integer[] DEFAULT '{50,80,100}'::integer[], p_actor text DEFAULT NULL::text) returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
  v_percents integer[] := array(select distinct x from unnest(p_percents) x order by x);
begin
  perform ballast_private.check_rule_name(p_name);
  if p_scope is null or p_scope not in ('tenant', 'pipeline', 'model', 'end_user') then
    perform ballast_private.bad_argument('scope', format('%s is not a scope', coalesce(quote_literal(p_scope), 'null')),
      'Pass tenant, pipeline, model or end_user.');
  end if;
  if p_scope_value = '' then
    perform ballast_private.bad_argument('scope_value', 'is empty', 'Pass one tenant, pipeline, model (provider:model) or end user, or null for each of them.');
  end if;
  if p_limit_usd is null and p_scope <> 'tenant' then
    perform ballast_private.bad_argument('limit_usd', 'is missing', 'Pass the spend limit in USD; only scope tenant may use the tenant''s budget instead.');
  end if;
  if p_limit_usd <= 0 then
    perform ballast_private.bad_argument('limit_usd', format('%s is not above 0', p_limit_usd), 'Pass the spend limit in USD, e.g. 100.');
  end if;
  if p_period is not null and p_period not in ('day', 'week', 'month') or p_period is null and p_limit_usd is not null then
    perform ballast_private.bad_argument('period', format('%s is not day, week or month', coalesce(quote_literal(p_period), 'null')),
      'Pass day, week or month (UTC), the period the limit is for; leave both limit_usd and period out to use the tenant''s budget.');
  end if;
  if p_limit_usd is null and p_period is not null then
    perform ballast_private.bad_argument('period', 'is given without limit_usd', 'Leave it out: the tenant''s budget gives the period too.');
  end if;
  if coalesce(cardinality(v_percents), 0) not between 1 and 20 or exists (select 1 from unnest(p_percents) x where x is null or x < 1 or x > 1000) then
    perform ballast_private.bad_argument('percents', format('%s is not 1 to 20 percentages from 1 to 1000', coalesce(p_percents::text, 'null')),
      'Pass e.g. {50,80,100}.');
  end if;
  insert into ballast_private.budget_alert_rules as r (name, scope, scope_value, limit_usd, period, percents, set_by, set_at)
  values (p_name, p_scope, p_scope_value, p_limit_usd, p_period, v_percents, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (name) do update set scope = excluded.scope, scope_value = excluded.scope_value, limit_usd = excluded.limit_usd,
    period = excluded.period, percents = excluded.percents, set_by = excluded.set_by, set_at = excluded.set_at
  returning r.id into v_id;
  return v_id;
end
$fn$;

create function ballast.set_drift_rule(p_name text, p_pipeline text, p_metric text, p_threshold numeric, p_change text DEFAULT 'absolute'::text, p_window interval DEFAULT '01:00:00'::interval, p_baseline interval DEFAULT '7 days'::interval, p_min_samples integer DEFAULT 30, p_step_name text DEFAULT NULL::text, p_prompt_name text DEFAULT NULL::text, p_prompt_version integer DEFAULT NULL::integer, p_model text DEFAULT NULL::text, p_baseline_from timestamp with time zone DEFAULT NULL::timestamp with time zone, p_baseline_until timestamp with time zone DEFAULT NULL::timestamp with time zone, p_actor text DEFAULT NULL::text) returns bigint
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_id bigint;
  v_fixed boolean := p_baseline_from is not null or p_baseline_until is not null;
begin
  perform ballast_private.check_rule_name(p_name);
  if coalesce(p_pipeline, '') = '' then
    perform ballast_private.bad_argument('pipeline', 'is empty', 'Name the pipeline whose model steps the rule watches.');
  end if;
  if ballast_private.drift_direction(p_metric) is null then
    perform ballast_private.bad_argument('metric', format('%s is not a metric', coalesce(quote_literal(p_metric), 'null')),
      'Pass first_pass_rate, repair_rate, fallback_rate, degraded_rate, review_rate, rejection_rate, score_mean, score_p10, score_p50, cost_per_success, latency_p50_ms or latency_p95_ms.');
  end if;
  if p_change is null or p_change not in ('absolute', 'relative') then
    perform ballast_private.bad_argument('change', format('%s is not absolute or relative', coalesce(quote_literal(p_change), 'null')),
      'Pass absolute (the threshold in the metric''s unit) or relative (a fraction of the baseline).');
  end if;
  if p_threshold is null or p_threshold <= 0 then
    perform ballast_private.bad_argument('threshold', format('%s is not above 0', coalesce(p_threshold::text, 'null')),
      'Pass how far the metric may move in the bad direction before it alerts, e.g. 0.2 (20 points of a rate).');
  end if;
  if p_window is null or p_window <= '0'::interval then
    perform ballast_private.bad_argument('window', format('%s is not a positive interval', coalesce(p_window::text, 'null')), 'Pass e.g. ''1 hour''.');
  end if;
  if v_fixed and (p_baseline_from is null or p_baseline_until is null or p_baseline_until <= p_baseline_from) then
    perform ballast_private.bad_argument('baseline_until', 'a fixed baseline needs baseline_from before baseline_until',
      'Pass both ends of the baseline period, or neither and a baseline interval before the window.');
  end if;
  if not v_fixed and (p_baseline is null or p_baseline <= '0'::interval) then
    perform ballast_private.bad_argument('baseline', format('%s is not a positive interval', coalesce(p_baseline::text, 'null')),
      'Pass the period before the window to compare with, e.g. ''7 days'', or a fixed baseline_from and baseline_until.');
  end if;
  if p_min_samples is null or p_min_samples < 1 then
    perform ballast_private.bad_argument('min_samples', format('%s is not at least 1', coalesce(p_min_samples::text, 'null')),
      'Pass how many attempts the window and the baseline need before the rule may alert, e.g. 30.');
  end if;
  insert into ballast_private.drift_rules as r (name, pipeline, step_name, prompt_name, prompt_version, model, metric, direction,
    change, threshold, window_size, baseline_size, baseline_from, baseline_until, min_samples, set_by, set_at)
  values (p_name, p_pipeline, p_step_name, p_prompt_name, p_prompt_version, p_model, p_metric,
    ballast_private.drift_direction(p_metric), p_change, p_threshold, p_window, case when v_fixed then null else p_baseline end,
    p_baseline_from, p_baseline_until, p_min_samples, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (name) do update set pipeline = excluded.pipeline, step_name = excluded.step_name,
    prompt_name = excluded.prompt_name, prompt_version = excluded.prompt_version, model = excluded.model,
    metric = excluded.metric, direction = excluded.direction, change = excluded.change, threshold = excluded.threshold,
    window_size = excluded.window_size, baseline_size = excluded.baseline_size, baseline_from = excluded.baseline_from,
    baseline_until = excluded.baseline_until, min_samples = excluded.min_samples, set_by = excluded.set_by, set_at = excluded.set_at
  returning r.id into v_id;
  return v_id;
end
$fn$;

create function ballast.set_end_user_path(p_pipeline text, p_path text, p_actor text DEFAULT NULL::text) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if coalesce(p_pipeline, '') = '' then
    perform ballast_private.bad_argument('pipeline', 'is empty', 'Name the pipeline whose inputs name their end user.');
  end if;
  if p_path is null then
    delete from ballast_private.end_user_paths where pipeline = p_pipeline;
    return;
  end if;
  if p_path !~ '^[^.]+(\.[^.]+){0,19}$' then
    perform ballast_private.bad_argument('path', format('%L is not a dotted path of 1 to 20 keys', p_path), 'Pass e.g. ''user.id'' for input.user.id.');
  end if;
  insert into ballast_private.end_user_paths as u (pipeline, path, set_by, set_at)
  values (p_pipeline, string_to_array(p_path, '.'), ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (pipeline) do update set path = excluded.path, set_by = excluded.set_by, set_at = excluded.set_at;
end
$fn$;

create function ballast.set_fair_share(p_tenant_id text, p_weight double precision DEFAULT 1, p_actor text DEFAULT NULL::text) returns TABLE(tenant_id text, weight double precision)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
begin
  if p_weight is null or not (p_weight > 0 and p_weight <= 1000000) then
    perform ballast_private.bad_argument('weight', format('%s is not above 0 and at most 1000000', coalesce(p_weight::text, 'null')),
      'Pass a relative share: 1 is the default, 3 gets three times the share of 1.');
  end if;
  if coalesce(p_tenant_id, '') = '' then
    perform ballast_private.bad_argument('tenant_id', 'is empty', 'Pass a tenant id, or ''*'' to turn fair sharing on with a default weight.');
  end if;
  if p_tenant_id <> '*' and not exists (select 1 from ballast_private.fair_shares f where f.tenant_id = '*') then
    insert into ballast_private.fair_shares (tenant_id, weight, set_by) values ('*', 1, ballast_private.caller_actor(p_actor))
    on conflict on constraint fair_shares_pkey do nothing;
  end if;
  insert into ballast_private.fair_shares as f (tenant_id, weight, set_by, set_at)
  values (p_tenant_id, p_weight, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict on constraint fair_shares_pkey do update set weight = excluded.weight, set_by = excluded.set_by, set_at = excluded.set_at;
  return query select f.tenant_id, f.weight from ballast_private.fair_shares f where f.tenant_id = p_tenant_id;
end
$fn$;

create function ballast.set_limit(p_pattern text, p_kind text, p_amount bigint, p_per interval DEFAULT NULL::interval, p_burst bigint DEFAULT 1, p_note text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns TABLE(pattern text, kind text, amount bigint, per interval, burst bigint, note text, set_by text, set_at timestamp with time zone)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  perform ballast_private.check_gate_key('pattern', p_pattern, true);
  if p_kind is null or p_kind not in ('requests', 'weight', 'running') then
    perform ballast_private.bad_argument('kind', format('%L is not requests, weight or running', p_kind),
      'Pass ''requests'' (steps per period), ''weight'' (step weights, e.g. tokens, per period) or ''running'' (steps at once).');
  end if;
  if p_amount is null or p_amount not between 1 and 1000000000000 then
    perform ballast_private.bad_argument('amount', format('%s is not between 1 and 10^12', coalesce(p_amount::text, 'null')),
      'Pass how many steps (or how much weight) the limit lets through.');
  end if;
  if p_kind = 'running' and p_per is not null then
    perform ballast_private.bad_argument('per', 'is given for a running limit', 'A running limit counts steps at once: leave per out.');
  end if;
  if p_kind <> 'running' and (p_per is null or p_per < interval '1 millisecond' or p_per > interval '31 days') then
    perform ballast_private.bad_argument('per', format('%s is not between 1 millisecond and 31 days', coalesce(p_per::text, 'null')),
      'Pass the period of the rate, e.g. ''1 minute''.');
  end if;
  if p_burst is null or p_burst not between 1 and 1000000000000 then
    perform ballast_private.bad_argument('burst', format('%s is not between 1 and 10^12', coalesce(p_burst::text, 'null')),
      'Pass 1 (evenly spaced, the default) or how many may start at once after a quiet time.');
  end if;
  insert into ballast_private.limits as l (pattern, kind, amount, per, burst, note, set_by, set_at)
  values (p_pattern, p_kind, p_amount, p_per, p_burst, p_note, v_actor, ballast.now())
  on conflict on constraint limits_pkey do update
    set amount = excluded.amount, per = excluded.per, burst = excluded.burst, note = excluded.note,
        set_by = excluded.set_by, set_at = excluded.set_at;
  insert into ballast_private.gate_history (action, key, reason, data, actor)
  values ('set_limit', p_pattern, p_note,
          jsonb_build_object('kind', p_kind, 'amount', p_amount, 'per', p_per::text, 'burst', p_burst), v_actor);
  perform pg_notify('ballast_gates', '');
  return query select l.pattern, l.kind, l.amount, l.per, l.burst, l.note, l.set_by, l.set_at
                 from ballast_private.limits l where l.pattern = p_pattern and l.kind = p_kind;
end
$fn$;

create function ballast.set_model_cache(p_pipeline text, p_ttl interval, p_actor text DEFAULT NULL::text) returns TABLE(pipeline text, ttl interval)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
begin
  if not exists (select 1 from ballast_private.pipelines p where p.name = p_pipeline) then
    raise exception using errcode = 'BA004', message = format('pipeline %L is not registered', p_pipeline),
      hint = 'A pipeline is registered when a worker that defines it starts; ballast.pipelines lists them.';
  end if;
  if p_ttl is null or not (p_ttl > interval '0' and p_ttl <= interval '366 days') then
    perform ballast_private.bad_argument('ttl', format('%s is not above 0 and at most 366 days', coalesce(p_ttl::text, 'null')),
      'Pass how long an answer may be reused, e.g. ''1 day''; ballast.stop_model_cache turns the cache off.');
  end if;
  insert into ballast_private.model_cache as m (pipeline, ttl, set_by, set_at)
  values (p_pipeline, p_ttl, ballast_private.caller_actor(p_actor), ballast.now())
  on conflict (pipeline) do update set ttl = excluded.ttl, set_by = excluded.set_by, set_at = excluded.set_at;
  return query select m.pipeline, m.ttl from ballast_private.model_cache m where m.pipeline = p_pipeline;
end
$fn$;

create function ballast.set_model_price(p_provider text, p_model text, p_input_per_mtok numeric, p_output_per_mtok numeric, p_cached_input_per_mtok numeric DEFAULT NULL::numeric, p_valid_from timestamp with time zone DEFAULT ballast.now(), p_source text DEFAULT 'operator'::text) returns void
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  if coalesce(p_provider, '') = '' or coalesce(p_model, '') = '' then
    perform ballast_private.bad_argument(case when coalesce(p_provider, '') = '' then 'provider' else 'model' end,
      'is empty', 'Name the provider as in "provider:model" (e.g. openai) and the model id (e.g. gpt-4o-mini, or * for all).');
  end if;
  if p_input_per_mtok is null or p_input_per_mtok < 0 or p_output_per_mtok is null or p_output_per_mtok < 0
     or p_cached_input_per_mtok < 0 then
    perform ballast_private.bad_argument('price', format('input %s, output %s, cached %s: prices must be numbers >= 0',
      coalesce(p_input_per_mtok::text, 'null'), coalesce(p_output_per_mtok::text, 'null'), coalesce(p_cached_input_per_mtok::text, 'null')),
      'Pass USD per 1M tokens, e.g. 0.15 and 0.60.');
  end if;
  insert into ballast_private.model_prices (provider, model, valid_from, input_per_mtok, output_per_mtok, cached_input_per_mtok, source)
  values (p_provider, p_model, coalesce(p_valid_from, ballast.now()), p_input_per_mtok, p_output_per_mtok, p_cached_input_per_mtok, coalesce(p_source, 'operator'))
  on conflict (provider, model, valid_from) do update
    set input_per_mtok = excluded.input_per_mtok, output_per_mtok = excluded.output_per_mtok,
        cached_input_per_mtok = excluded.cached_input_per_mtok, source = excluded.source;
end
$fn$;

create function ballast.set_prompt_canary(p_name text, p_label text, p_candidate_version integer, p_share double precision, p_reason text, p_actor text DEFAULT NULL::text) returns TABLE(prompt_name text, label text, version integer, canary_version integer, canary_share double precision)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_old ballast_private.prompt_labels;
  v_actor text := ballast_private.caller_actor(p_actor);
begin
  perform ballast_private.check_prompt_label_args(p_name, p_label);
  perform pg_advisory_xact_lock(hashtextextended('ballast.prompt_label:' || p_name || '@' || p_label, 0));
  select * into v_old from ballast_private.prompt_labels l where l.prompt_name = p_name and l.label = p_label;
  if not found then
    perform ballast_private.bad_argument('label', format('prompt %s has no label %s', p_name, p_label),
      format('Point the label at its stable version first: select ballast.set_prompt_label(%L, %L, <version>, <reason>).', p_name, p_label));
  end if;
  perform ballast_private.check_prompt_version('candidate_version', p_name, p_candidate_version);
  if p_candidate_version = v_old.version then
    perform ballast_private.bad_argument('candidate_version', format('%s is the version the label already points at', p_candidate_version),
      'Name another version as the candidate; to send all traffic to it, move the label (ballast.set_prompt_label).');
  end if;
  if p_share is null or p_share = 'NaN'::float8 or not (p_share > 0 and p_share <= 1) then
    perform ballast_private.bad_argument('share', format('%s is not more than 0 and at most 1', coalesce(p_share::text, 'null')),
      'Give the fraction of new jobs for the candidate, e.g. 0.1 for 10 %; to end a canary use ballast.clear_prompt_canary.');
  end if;
  if p_reason is null or btrim(p_reason) = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why (kept in ballast.prompt_label_history), e.g. ''try v3 on 10 % of production''.');
  end if;
  update ballast_private.prompt_labels l
     set canary_version = p_candidate_version, canary_share = p_share, updated_by = v_actor, updated_at = ballast.now()
   where l.prompt_name = p_name and l.label = p_label;
  insert into ballast_private.prompt_label_history (prompt_name, label, action, from_version, to_version, canary_version, canary_share, actor, reason)
  values (p_name, p_label, 'canary', v_old.version, v_old.version, p_candidate_version, p_share, v_actor, p_reason);
  return query select l.prompt_name, l.label, l.version, l.canary_version, l.canary_share
                 from ballast_private.prompt_labels l where l.prompt_name = p_name and l.label = p_label;
end
$fn$;

create function ballast.set_prompt_label(p_name text, p_label text, p_version integer, p_reason text, p_actor text DEFAULT NULL::text) returns TABLE(prompt_name text, label text, version integer, canary_version integer, canary_share double precision)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_old ballast_private.prompt_labels;
  v_actor text := ballast_private.caller_actor(p_actor);
  v_promoted boolean;
begin
  perform ballast_private.check_prompt_label_args(p_name, p_label);
  perform ballast_private.check_prompt_version('version', p_name, p_version);
  if p_reason is null or btrim(p_reason) = '' then
    perform ballast_private.bad_argument('reason', 'is empty', 'Say why the label moves (kept in ballast.prompt_label_history), e.g. ''eval run 42 passed''.');
  end if;
  perform pg_advisory_xact_lock(hashtextextended('ballast.prompt_label:' || p_name || '@' || p_label, 0));
  select * into v_old from ballast_private.prompt_labels l where l.prompt_name = p_name and l.label = p_label;
  v_promoted := v_old.canary_version is not distinct from p_version;
  insert into ballast_private.prompt_labels as l (prompt_name, label, version, updated_by, updated_at)
  values (p_name, p_label, p_version, v_actor, ballast.now())
  on conflict on constraint prompt_labels_pkey do update
    set version = excluded.version, updated_by = excluded.updated_by, updated_at = excluded.updated_at,
        canary_version = case when v_promoted then null else l.canary_version end,
        canary_share = case when v_promoted then null else l.canary_share end;
  insert into ballast_private.prompt_label_history (prompt_name, label, action, from_version, to_version, canary_version, canary_share, actor, reason)
  values (p_name, p_label, 'set', v_old.version, p_version,
          case when v_promoted then null else v_old.canary_version end, case when v_promoted then null else v_old.canary_share end,
          v_actor, p_reason);
  return query select l.prompt_name, l.label, l.version, l.canary_version, l.canary_share
                 from ballast_private.prompt_labels l where l.prompt_name = p_name and l.label = p_label;
end
$fn$;

create function ballast.set_provider_cooldown(p_provider text, p_model text, p_until timestamp with time zone, p_reason text) returns timestamp with time zone
language sql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
  insert into ballast_private.provider_cooldowns as c (provider, model, until, reason)
  values (p_provider, coalesce(p_model, '*'), p_until, coalesce(p_reason, 'operator'))
  on conflict (provider, model) do update
    set until = greatest(c.until, excluded.until),
        reason = case when excluded.until > c.until then excluded.reason else c.reason end,
        set_at = ballast.now(), hits = c.hits + 1
  returning until
$fn$;

create function ballast.set_schedule(p_name text, p_pipeline text, p_cron text, p_input jsonb DEFAULT '{}'::jsonb, p_time_zone text DEFAULT 'UTC'::text, p_tenant_id text DEFAULT NULL::text, p_pipeline_version integer DEFAULT NULL::integer, p_priority integer DEFAULT 0, p_on_missed text DEFAULT 'skip'::text, p_max_catch_up integer DEFAULT 10, p_actor text DEFAULT NULL::text) returns SETOF ballast.schedules
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := ballast_private.schedule_tenant(p_tenant_id);
  v_next timestamptz;
  v_id bigint;
begin
  if coalesce(p_name, '') !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$' then
    perform ballast_private.bad_argument('name', format('%L is not a schedule name', p_name),
      'Use 1 to 128 letters, digits, "_", ".", ":" or "-", starting with a letter or digit.');
  end if;
  if not exists (select 1 from pg_catalog.pg_timezone_names where name = p_time_zone) then
    perform ballast_private.bad_argument('time_zone', format('%L is not a time zone Postgres knows', p_time_zone),
      'Use a name such as UTC, Europe/Paris or America/New_York (select name from pg_timezone_names).');
  end if;
  if p_on_missed is null or p_on_missed not in ('skip', 'catch_up') then
    perform ballast_private.bad_argument('on_missed', format('%L is not skip or catch_up', p_on_missed),
      'Pass ''skip'' (fire only slots at most a minute late) or ''catch_up'' (fire each missed slot, at most max_catch_up).');
  end if;
  if p_max_catch_up is null or p_max_catch_up not between 1 and 1000 then
    perform ballast_private.bad_argument('max_catch_up', format('%s is not between 1 and 1000', coalesce(p_max_catch_up::text, 'null')),
      'Pass how many missed slots may be fired at once.');
  end if;
  if not exists (select 1 from ballast_private.pipelines p where p.name = p_pipeline
                    and (p_pipeline_version is null or p.version = p_pipeline_version)) then
    raise exception using errcode = 'BA004',
      message = format('pipeline %s%s is not registered', p_pipeline, coalesce('@' || p_pipeline_version, '')),
      hint = 'Start a worker that serves it (it registers its pipelines), or fix the name.';
  end if;
  v_next := ballast_private.cron_next(p_cron, p_time_zone, ballast.now());
  if v_next is null then
    perform ballast_private.bad_argument('cron', format('%L never fires (no such date within eight years)', p_cron),
      'Check the day of the month against the month, e.g. there is no 30 February.');
  end if;
  perform ballast_private.set_actor(ballast_private.caller_actor(p_actor));
  insert into ballast_private.schedules as s (tenant_id, name, pipeline, pipeline_version, input, priority, cron, time_zone,
                                             on_missed, max_catch_up, next_fire_at, created_by, updated_by)
  values (v_tenant, p_name, p_pipeline, p_pipeline_version, coalesce(p_input, '{}'), coalesce(p_priority, 0), btrim(p_cron),
          p_time_zone, p_on_missed, p_max_catch_up, v_next, current_setting('ballast.actor'), current_setting('ballast.actor'))
  on conflict (tenant_id, name) do update
    set pipeline = excluded.pipeline, pipeline_version = excluded.pipeline_version, input = excluded.input,
        priority = excluded.priority, cron = excluded.cron, time_zone = excluded.time_zone,
        on_missed = excluded.on_missed, max_catch_up = excluded.max_catch_up,
        next_fire_at = case when s.paused then null else excluded.next_fire_at end,
        updated_at = ballast.now(), updated_by = excluded.updated_by
  returning s.id into v_id;
  return query select * from ballast.schedules where id = v_id;
end
$fn$;

create function ballast.set_webhook_endpoint(p_path text, p_pipeline text, p_secrets text[], p_input_path text[] DEFAULT NULL::text[], p_tenant_id text DEFAULT 'default'::text, p_enabled boolean DEFAULT true) returns text
language plpgsql volatile
as $fn$
begin
  if p_path is null or p_path !~ '^[A-Za-z0-9._-]{1,200}$' then
    perform ballast_private.bad_argument('path', format('%s is not 1 to 200 letters, digits, dots, dashes or underscores', coalesce(p_path, 'null')),
      'Name the endpoint like github-push; it is served at POST /webhooks/<path>.');
  end if;
  if not exists (select 1 from ballast_private.pipelines p where p.name = p_pipeline) then
    raise exception using errcode = 'BA004', message = format('pipeline %s is not registered', coalesce(p_pipeline, 'null')),
      hint = 'Register the pipeline (start a worker that has it) before pointing a webhook at it.';
  end if;
  if coalesce(cardinality(p_secrets), 0) = 0 then
    perform ballast_private.bad_argument('secrets', 'is empty', 'Pass at least one whsec_ secret.');
  end if;
  perform ballast_private.check_webhook_secret(s) from unnest(p_secrets) s;
  perform ballast_private.check_key_text('tenant_id', p_tenant_id, 200, 'Pass a tenant id of 1 to 200 bytes.');
  insert into ballast_private.webhook_endpoints (path, pipeline, tenant_id, secrets, input_path, enabled)
  values (p_path, p_pipeline, p_tenant_id, p_secrets, p_input_path, coalesce(p_enabled, true))
  on conflict (path) do update set pipeline = excluded.pipeline, tenant_id = excluded.tenant_id,
    secrets = excluded.secrets, input_path = excluded.input_path, enabled = excluded.enabled, updated_at = ballast.now();
  return p_path;
end
$fn$;

create function ballast.set_worker_pool(p_worker_id text, p_pool_id text) returns void
language plpgsql volatile
as $fn$
begin
  update ballast_private.workers set pool_id = p_pool_id, heartbeat_at = ballast.now() where id = p_worker_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('worker %L is not registered', p_worker_id),
      hint = 'Call ballast.register_worker first.';
  end if;
end
$fn$;

create function ballast.settle_and_claim(p_worker_id text, p_ok bigint[], p_outputs jsonb[], p_failed bigint[], p_errors jsonb[], p_tasks text[], p_n integer, p_lease_ms integer DEFAULT 30000) returns TABLE(settled jsonb, claims jsonb, next_due_ms double precision)
language plpgsql volatile
as $fn$
declare
  v_settled jsonb;
  v_claims jsonb;
  v_next_due double precision;
begin
  perform ballast_private.defer_job_counters();
  if coalesce(cardinality(p_ok), 0) + coalesce(cardinality(p_failed), 0) > 0 then
    select jsonb_agg(jsonb_build_array(s.attempt_id, s.step_status)) into v_settled
      from ballast.settle_steps(p_worker_id, p_ok, p_outputs, p_failed, p_errors) s;
  end if;
  if coalesce(p_n, 0) > 0
     and exists (select 1 from ballast_private.workers w where w.id = p_worker_id and w.stopped_at is null) then
    select jsonb_agg(to_jsonb(c)) into v_claims from ballast.claim_steps(p_worker_id, p_tasks, p_n, p_lease_ms) c;
  end if;
  -- Every job the batch touched is updated once, here, after all its step rows (the lock order: steps, then jobs).
  perform ballast_private.flush_job_counters();
  -- Steps the batch queued (dependants, retries due, map items: steps of the jobs this worker runs, so of its own
  -- pipeline versions): the claim above took them unless it was full; only then tell the other workers.
  if current_setting('ballast.queued_in_batch', true) = 'on' then
    perform set_config('ballast.queued_in_batch', 'off', true);
    if coalesce(jsonb_array_length(v_claims), 0) >= coalesce(p_n, 0) then
      perform pg_notify('ballast_queue', '');
    end if;
  end if;
  perform ballast_private.flush_events_notice();
  -- Last, so that the time it gives is as fresh as can be when the worker reads it.
  if coalesce(p_n, 0) > 0 and coalesce(jsonb_array_length(v_claims), 0) < p_n then
    select extract(epoch from (s.next_run_at - ballast.now())) * 1000 into v_next_due
      from ballast_private.steps s
     where s.status = 'scheduled' and s.task = any(p_tasks)
     order by s.next_run_at limit 1;
  end if;
  return query select coalesce(v_settled, '[]'::jsonb), coalesce(v_claims, '[]'::jsonb), v_next_due;
end
$fn$;

create function ballast.settle_steps(p_worker_id text, p_ok bigint[], p_outputs jsonb[], p_failed bigint[] DEFAULT '{}'::bigint[], p_errors jsonb[] DEFAULT '{}'::jsonb[]) returns TABLE(attempt_id bigint, step_status text)
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_ok bigint[] := coalesce(p_ok, '{}');
  v_failed bigint[] := coalesce(p_failed, '{}');
  v_done bigint[];
  v_jobs bigint[];
  v_names text[];
  v_parents bigint[];
  v_status text;
  v_parent bigint;
begin
  if cardinality(v_ok) <> cardinality(coalesce(p_outputs, '{}')) then
    perform ballast_private.bad_argument('outputs', format('has %s entries for %s succeeded attempts',
      cardinality(coalesce(p_outputs, '{}')), cardinality(v_ok)), 'Pass one output per attempt id, in the same order.');
  end if;
  if cardinality(v_failed) <> cardinality(coalesce(p_errors, '{}')) then
    perform ballast_private.bad_argument('errors', format('has %s entries for %s failed attempts',
      cardinality(coalesce(p_errors, '{}')), cardinality(v_failed)), 'Pass one error per attempt id, in the same order.');
  end if;

  if cardinality(v_ok) > 0 then
    select r.done_attempts, r.job_ids, r.step_names, r.parent_ids into v_done, v_jobs, v_names, v_parents
      from ballast_private.settle_succeeded(v_ok, p_outputs, v_now) r;
    if v_done is not null and exists (select 1 from unnest(v_jobs, v_names) as f(job_id, name)
                                        join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
                                       where d2.status = 'pending') then
      perform ballast_private.release_dependants(v_jobs, v_names, v_now);
    end if;
    for v_parent in select distinct p from unnest(v_parents) p where p is not null order by p loop
      perform ballast_private.finish_map(v_parent);
    end loop;
    return query
    select i.id, case when i.id = any(coalesce(v_done, '{}')) then 'succeeded' else 'stale' end
      from unnest(v_ok) as i(id);
  end if;

  for i in 1 .. cardinality(v_failed) loop
    begin
      select f.step_status into v_status from ballast.fail_step(v_failed[i], p_errors[i]) f;
    exception
      when sqlstate 'BA008' or sqlstate 'BA007' then
        v_status := 'stale';
      when sqlstate 'BA002' then
        v_status := 'refused: ' || sqlerrm;
    end;
    attempt_id := v_failed[i];
    step_status := v_status;
    return next;
  end loop;
end
$fn$;

create function ballast.sleep_step(p_attempt_id bigint, p_key text, p_ms double precision DEFAULT NULL::double precision, p_until timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(slept boolean, until timestamp with time zone)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_until timestamptz;
begin
  perform ballast_private.check_key_text('key', p_key, 500, 'Name the sleep with a key of 1 to 500 bytes, the same on every run.');
  if (p_ms is null) = (p_until is null) then
    perform ballast_private.bad_argument('duration', 'give either milliseconds or a time, not both and not neither',
      'Pass a number of milliseconds or a Date.');
  end if;
  if p_ms is not null and not (p_ms >= 0 and p_ms <= 315576000000) then
    perform ballast_private.bad_argument('duration', format('%s ms is not from 0 to ten years', p_ms), 'Pass a number of milliseconds.');
  end if;
  if p_until is not null and p_until > v_now + interval '10 years' then
    perform ballast_private.bad_argument('duration', format('%s is more than ten years ahead', p_until), 'Pass a nearer time.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  select s.until into v_until from ballast_private.step_sleeps s where s.step_id = v_step.id and s.key = p_key;
  if not found then
    v_until := coalesce(p_until, v_now + make_interval(secs => p_ms / 1000.0));
    insert into ballast_private.step_sleeps (step_id, key, until, attempt_id) values (v_step.id, p_key, v_until, p_attempt_id);
  end if;
  if v_until <= v_now then
    return query select true, v_until;
    return;
  end if;
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'waiting', wait_key = null, wait_deadline = v_until, wait_on_timeout = 'resume',
         attempt_offset = attempt_offset + 1
   where id = v_step.id;
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select false, v_until;
end
$fn$;

create function ballast.start_child_jobs(p_attempt_id bigint, p_children jsonb) returns TABLE(ord integer, key text, job_id bigint, created boolean, pipeline text, status text)
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

create function ballast.start_eval_run(p_dataset text, p_pipeline text, p_step text, p_prompt_version integer DEFAULT NULL::integer, p_model text DEFAULT NULL::text, p_scorers jsonb DEFAULT NULL::jsonb, p_threshold numeric DEFAULT NULL::numeric, p_label text DEFAULT NULL::text, p_pipeline_version integer DEFAULT NULL::integer, p_dataset_version integer DEFAULT NULL::integer, p_tenant_id text DEFAULT 'evals'::text, p_actor text DEFAULT NULL::text) returns TABLE(run_id bigint, job_id bigint)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  -- The parameters given (a null one is left out, so the eval pipeline's input contract and the defaults apply).
  v_params jsonb := (select jsonb_object_agg(k, v) from jsonb_each(jsonb_build_object('dataset', p_dataset,
    'pipeline', p_pipeline, 'step', p_step, 'prompt_version', p_prompt_version, 'model', p_model, 'scorers', p_scorers,
    'threshold', p_threshold, 'label', p_label, 'pipeline_version', p_pipeline_version,
    'dataset_version', p_dataset_version)) x(k, v) where v <> 'null'::jsonb);
  v_job bigint;
  v_run ballast_private.eval_runs;
begin
  select s.job_id into v_job from ballast.submit_job('ballast.eval', v_params, p_tenant_id => coalesce(p_tenant_id, 'evals')) s;
  v_run := ballast_private.new_eval_run(v_job, v_params, coalesce(p_tenant_id, 'evals'), ballast_private.caller_actor(p_actor));
  return query select v_run.id, v_job;
end
$fn$;

create function ballast.stop_fair_sharing() returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  delete from ballast_private.fair_shares;
  return found;
end
$fn$;

create function ballast.stop_model_cache(p_pipeline text) returns boolean
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
begin
  delete from ballast_private.model_cache m where m.pipeline = p_pipeline;
  return found;
end
$fn$;

create function ballast.stop_worker(p_worker_id text) returns void
language plpgsql volatile
as $fn$
declare
  v_pool_id text;
begin
  update ballast_private.workers set stopped_at = ballast.now()
   where id = p_worker_id and stopped_at is null
  returning pool_id into v_pool_id;
  if v_pool_id is not null then
    perform graphile_worker.force_unlock_workers(array[v_pool_id]);
  end if;
end
$fn$;

create function ballast.submit_job(p_pipeline text, p_input jsonb DEFAULT '{}'::jsonb, p_idempotency_key text DEFAULT NULL::text, p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_delay_ms double precision DEFAULT NULL::double precision, p_deadline timestamp with time zone DEFAULT NULL::timestamp with time zone, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_debounce jsonb DEFAULT NULL::jsonb, p_throttle jsonb DEFAULT NULL::jsonb) returns TABLE(job_id bigint, created boolean, status text, pipeline_version integer)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_job_id bigint;
  v_created boolean;
  v_tenant text := p_tenant_id;
  v_run_at timestamptz;
begin
  if not ballast_private.caller_unrestricted() then
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot submit jobs', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if p_tenant_id is not null and p_tenant_id not in ('default', v_tenant) then
      raise exception using errcode = 'BA014', message = format('tenant %s cannot submit jobs for tenant %s', v_tenant, p_tenant_id),
        hint = 'Leave the tenant out: jobs are submitted for your own tenant.';
    end if;
    perform set_config('ballast.actor', ballast_private.caller_actor(null), true);
  end if;
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql', true);
  end if;
  if p_run_at is not null or p_delay_ms is not null then
    v_run_at := ballast_private.checked_run_at(p_run_at, p_delay_ms, ballast.now());
  end if;
  if p_debounce is not null or p_throttle is not null then
    if p_debounce is not null and p_throttle is not null then
      perform ballast_private.bad_argument('debounce', 'is given with throttle', 'Pass one of them.');
    end if;
    if p_idempotency_key is not null then
      perform ballast_private.bad_argument(case when p_debounce is not null then 'debounce' else 'throttle' end,
        'is given with idempotency_key',
        'Pass one of them: the key of a debounce or throttle already says which submissions make one job.');
    end if;
    if p_debounce is not null and v_run_at is not null then
      perform ballast_private.bad_argument('debounce', 'is given with run_at or delay_ms',
        'Leave the start out: a debounced job starts quiet_ms after the last submission of its burst.');
    end if;
  end if;
  if p_deadline is not null or p_expires_at is not null then
    perform ballast_private.check_time_limits(v_run_at, p_deadline, p_expires_at, ballast.now());
  end if;
  if p_debounce is not null then
    select s.job_id, s.created into v_job_id, v_created
      from ballast_private.submit_debounced(p_pipeline, p_input, v_tenant, p_priority, p_pipeline_version, p_debounce,
                                            p_deadline, p_expires_at) s;
  elsif p_throttle is not null then
    select s.job_id, s.created into v_job_id, v_created
      from ballast_private.submit_throttled(p_pipeline, p_input, v_tenant, p_priority, p_pipeline_version, p_throttle,
                                            v_run_at, p_deadline, p_expires_at) s;
  else
    select s.job_id, s.created into v_job_id, v_created
      from ballast_private.submit(p_pipeline, p_input, p_idempotency_key, v_tenant, p_priority, p_pipeline_version,
                                  v_run_at, p_deadline, p_expires_at) s;
  end if;
  return query select j.id, v_created, j.status, j.pipeline_version from ballast_private.jobs j where j.id = v_job_id;
end
$fn$;

create function ballast.submit_jobs(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[] DEFAULT NULL::text[], p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_delay_ms double precision DEFAULT NULL::double precision, p_deadline timestamp with time zone DEFAULT NULL::timestamp with time zone, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(ord integer, job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  c_max_batch_bytes constant bigint := 16777216;
  v_tenant text := case when ballast_private.caller_unrestricted() then p_tenant_id else ballast_private.caller_tenant() end;
  v_pipeline ballast_private.pipelines;
  v_limit bigint;
  v_ord integer;
  v_problem text;
  v_total bigint;
  v_key text;
  v_run_at timestamptz;
begin
  perform ballast_private.check_key_text('tenant_id', v_tenant, 200,
    'Pass a tenant id of 1 to 200 bytes, or leave it out for the tenant ''default''.');
  select k.n, k.key into v_ord, v_key
    from unnest(p_idempotency_keys) with ordinality k(key, n)
   where k.key = '' or octet_length(k.key) > 500
   order by k.n limit 1;
  if found then
    perform ballast_private.check_key_text(format('idempotency_keys[%s]', v_ord), v_key, 500,
      'Pass null for no deduplication of that input, or a key of 1 to 500 bytes unique to its request (an order id, a webhook delivery id).');
  end if;
  if p_run_at is not null or p_delay_ms is not null then
    v_run_at := ballast_private.checked_run_at(p_run_at, p_delay_ms, ballast.now());
  end if;
  if p_deadline is not null or p_expires_at is not null then
    perform ballast_private.check_time_limits(v_run_at, p_deadline, p_expires_at, ballast.now());
  end if;

  if p_pipeline_version is null then
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline order by p.version desc limit 1;
  else
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline and p.version = p_pipeline_version;
  end if;
  if v_pipeline.name is not null and p_inputs is not null then
    v_limit := ballast_private.input_size_limit(v_pipeline);
    select s.n, s.problem into v_ord, v_problem
      from (select i.n, ballast_private.input_size_problem(i.input, v_limit) as problem
              from unnest(p_inputs) with ordinality i(input, n)) s
     where s.problem is not null
     order by s.n
     limit 1;
    if found then
      perform ballast_private.bad_argument(format('inputs[%s]', v_ord),
        format('%s (pipeline %s@%s)', v_problem, v_pipeline.name, v_pipeline.version),
        'Send less per job (keep large documents elsewhere and pass a reference: a URL, an object key, an id), or '
        || 'give the pipeline a larger maxInputBytes (up to 64 MiB) in a new version; numbers must fit a 64-bit float.');
    end if;
    select sum(octet_length(i.input::text)) into v_total from unnest(p_inputs) i(input);
    if v_total > greatest(c_max_batch_bytes, v_limit) then
      perform ballast_private.bad_argument('inputs',
        format('hold %s bytes of JSON in all; one call accepts at most %s', v_total, greatest(c_max_batch_bytes, v_limit)),
        'Split the batch into smaller calls (each call is one transaction).');
    end if;
  end if;

  return query select * from ballast_private.submit_jobs_checked_v15(p_pipeline, p_inputs, p_idempotency_keys,
                                                                     p_tenant_id, p_priority, p_pipeline_version,
                                                                     v_run_at, p_deadline, p_expires_at);
end
$fn$;

create function ballast.task_identifier(p_pipeline text, p_version integer) returns text
language sql immutable parallel safe
as $fn$
  select 'ballast_step:' || p_pipeline || '@' || p_version
$fn$;

create function ballast.wait_for_children(p_attempt_id bigint, p_job_ids bigint[] DEFAULT NULL::bigint[], p_first integer DEFAULT NULL::integer) returns TABLE(done boolean, children jsonb)
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

create function ballast.wait_for_event(p_attempt_id bigint, p_key text, p_timeout_ms integer DEFAULT NULL::integer, p_on_timeout text DEFAULT 'fail'::text) returns TABLE(received boolean, payload jsonb)
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_signal ballast_private.signals;
  v_tenant text;
begin
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Use the key the sender will pass to ballast.send_event.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500,
    'Use the key the sender will pass to ballast.send_event (at most 500 bytes).');
  if p_on_timeout not in ('fail', 'retry') then
    perform ballast_private.bad_argument('on_timeout', format('%L is not "fail" or "retry"', p_on_timeout), 'Pass ''fail'' or ''retry''.');
  end if;
  if p_timeout_ms is not null and p_timeout_ms <= 0 then
    perform ballast_private.bad_argument('timeout_ms', format('%s is not a positive number of milliseconds', p_timeout_ms),
      'Pass how long to wait, or null to wait without a deadline.');
  end if;
  v_step := ballast_private.running_attempt(p_attempt_id);
  select j.tenant_id into v_tenant from ballast_private.jobs j where j.id = v_step.job_id;
  perform pg_advisory_xact_lock(1650551917, hashtext(v_tenant || '/' || p_key));
  select * into v_signal from ballast_private.signals s where s.tenant_id = v_tenant and s.key = p_key;
  if found then
    return query select true, v_signal.payload;
    return;
  end if;
  update ballast_private.attempts set outcome = 'parked', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'waiting', wait_key = p_key, attempt_offset = attempt_offset + 1,
         wait_deadline = case when p_timeout_ms is null then null else v_now + make_interval(secs => p_timeout_ms / 1000.0) end,
         wait_on_timeout = p_on_timeout
   where id = v_step.id;
  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  perform ballast_private.refresh_job_status(v_step.job_id);
  return query select false, null::jsonb;
end
$fn$;

create function ballast.watchdog_heartbeat(p_worker_id text, p_lease_ms integer DEFAULT 30000) returns TABLE(alive boolean, db_now timestamp with time zone, running jsonb)
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  v_alive boolean;
begin
  update ballast_private.workers set heartbeat_at = v_now
   where id = p_worker_id and stopped_at is null;
  v_alive := found;
  if v_alive then
    update ballast_private.attempts
       set lease_expires_at = greatest(lease_expires_at, v_now + make_interval(secs => greatest(p_lease_ms, 1000) / 1000.0))
     where worker_id = p_worker_id and outcome = 'running';
  end if;
  return query
  select v_alive, v_now,
         coalesce((select jsonb_agg(jsonb_build_object('attempt_id', a.id, 'step_id', a.step_id,
                                                       'started_at', a.started_at, 'timeout_ms', s.timeout_ms)
                                    order by a.id)
                     from ballast_private.attempts a
                     join ballast_private.steps s on s.id = a.step_id
                    where a.worker_id = p_worker_id and a.outcome = 'running'), '[]'::jsonb);
end
$fn$;

create function ballast.worker_lock(p_worker_id text) returns TABLE(namespace integer, key integer)
language sql immutable parallel safe
as $fn$
  select 1650551916, hashtext(p_worker_id)
$fn$;

create function ballast_private.announce_queued() returns void
language plpgsql volatile
as $fn$
begin
  if current_setting('ballast.defer_counters', true) = 'on' then
    perform set_config('ballast.queued_in_batch', 'on', true);
  else
    perform pg_notify('ballast_queue', '');
  end if;
end
$fn$;

create function ballast_private.append_tokens(p_attempt_id bigint, p_segment integer, p_rung text, p_model text, p_text text, p_first boolean, p_done boolean) returns integer
language plpgsql volatile set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_step_id bigint;
  v_job_id bigint;
  v_tenant text;
  v_start integer;
begin
  select a.step_id, a.job_id, j.tenant_id into v_step_id, v_job_id, v_tenant
    from ballast_private.attempts a join ballast_private.jobs j on j.id = a.job_id
   where a.id = p_attempt_id and a.outcome = 'running';
  if v_step_id is null then
    return null;
  end if;
  select c.end_offset into v_start from ballast_private.token_chunks c
   where c.step_id = v_step_id order by c.seq desc limit 1;
  insert into ballast_private.token_chunks (step_id, job_id, tenant_id, attempt_id, segment, rung, model, start_offset,
                                            end_offset, text, first, done)
  values (v_step_id, v_job_id, v_tenant, p_attempt_id, p_segment, p_rung, p_model, coalesce(v_start, 0),
          coalesce(v_start, 0) + char_length(p_text), p_text, p_first, p_done);
  perform pg_notify('ballast_tokens', json_build_object('step_id', v_step_id, 'job_id', v_job_id)::text);
  return coalesce(v_start, 0) + char_length(p_text);
end
$fn$;

create function ballast_private.apply_step_deltas(p_job bigint[], p_sgn integer[], p_status text[], p_items_wait boolean[], p_parent bigint[], p_started boolean[]) returns void
language plpgsql volatile
as $fn$
declare
  v_d record;
begin
  -- Map parents first (steps before jobs), and only when items are among the rows: an UPDATE of steps fires the
  -- statement triggers of steps again even when it changes no row.
  if exists (select 1 from unnest(p_parent) p where p is not null) then
    with r as (select * from unnest(p_parent, p_sgn, p_status) as t(parent_step_id, sgn, status)
                where parent_step_id is not null),
    d as (select parent_step_id, sum(sgn * (status not in ('succeeded', 'failed', 'cancelled', 'skipped'))::int) as n
            from r group by parent_step_id),
    locked as (select p.id from ballast_private.steps p
                where p.id in (select parent_step_id from d where n <> 0) order by p.id for no key update)
    update ballast_private.steps p set items_open = p.items_open + d.n
      from d join locked l on l.id = d.parent_step_id
     where p.id = d.parent_step_id;
  end if;

  with r as (select * from unnest(p_job, p_sgn, p_status, p_items_wait, p_parent, p_started)
                             as t(job_id, sgn, status, items_wait, parent_step_id, started)),
  delta as (
    select job_id,
           sum(sgn)::int as d_total,
           sum(sgn * (status in ('succeeded', 'failed', 'cancelled', 'skipped'))::int)::int as d_final,
           sum(sgn * (status = 'running')::int)::int as d_running,
           sum(sgn * (status = 'needs_review')::int)::int as d_review,
           sum(sgn * (status = 'waiting' and not items_wait)::int)::int as d_waiting,
           sum(sgn * (status = 'retrying')::int)::int as d_retrying,
           sum(sgn * (status = 'failed' and parent_step_id is null)::int)::int as d_failed,
           sum(sgn * (status = 'cancelled' and parent_step_id is null)::int)::int as d_cancelled,
           sum(sgn * started::int)::int as d_started,
           sum(sgn * (status in ('failed', 'cancelled', 'skipped') and parent_step_id is not null)::int)::int as d_item_bad
      from r group by job_id)
  select array_agg(job_id order by job_id) as job, array_agg(d_total order by job_id) as total,
         array_agg(d_final order by job_id) as final, array_agg(d_running order by job_id) as running,
         array_agg(d_review order by job_id) as review, array_agg(d_waiting order by job_id) as waiting,
         array_agg(d_retrying order by job_id) as retrying, array_agg(d_failed order by job_id) as failed,
         array_agg(d_cancelled order by job_id) as cancelled, array_agg(d_started order by job_id) as started,
         array_agg(d_item_bad order by job_id) as item_bad
    into v_d from delta;
  if v_d.job is null then
    return;
  end if;
  if current_setting('ballast.defer_counters', true) = 'on' then
    insert into pg_temp.ballast_job_deltas
    select * from unnest(v_d.job, v_d.total, v_d.final, v_d.running, v_d.review, v_d.waiting, v_d.retrying, v_d.failed,
                         v_d.cancelled, v_d.started, v_d.item_bad);
  else
    perform ballast_private.update_job_counters(v_d.job, v_d.total, v_d.final, v_d.running, v_d.review, v_d.waiting,
                                                v_d.retrying, v_d.failed, v_d.cancelled, v_d.started, v_d.item_bad);
  end if;
end
$fn$;

create function ballast_private.assign_fair_keys(p_ids bigint[]) returns void
language plpgsql volatile
as $fn$
declare
  v_head float8;
  v_default float8;
  v_t record;
  v_end float8;
  v_weight float8;
begin
  select f.weight into v_default from ballast_private.fair_shares f where f.tenant_id = '*';
  -- V: the key at the head of the queue, new steps left out (they are at key 0 until this runs).
  select s.fair_key into v_head from ballast_private.steps s
   where s.status = 'queued' and s.concurrency_key is null and s.id <> all(p_ids)
   order by s.priority, s.fair_key, (s.attempts = 0), s.id limit 1;
  if v_head is null then
    select coalesce(max(f.vfinish), 0) into v_head from ballast_private.fair_shares f where f.tenant_id <> '*';
  end if;
  for v_t in
    select j.tenant_id, array_agg(j.id order by j.id) as jobs
      from ballast_private.jobs j
     where j.id in (select s.job_id from ballast_private.steps s where s.id = any(p_ids) and s.parent_step_id is null)
     group by j.tenant_id order by j.tenant_id
  loop
    insert into ballast_private.fair_shares as f (tenant_id, weight, vfinish)
    values (v_t.tenant_id, v_default, v_head + cardinality(v_t.jobs) / v_default)
    on conflict (tenant_id) do update set vfinish = greatest(f.vfinish, v_head) + cardinality(v_t.jobs) / f.weight
    returning f.vfinish, f.weight into v_end, v_weight;
    update ballast_private.steps s
       set fair_key = v_end - (cardinality(v_t.jobs) - x.n + 1) / v_weight
      from unnest(v_t.jobs) with ordinality x(job_id, n)
     where s.job_id = x.job_id and s.id = any(p_ids);
  end loop;
  -- A map's items: their map step's key.
  update ballast_private.steps s set fair_key = p.fair_key
    from ballast_private.steps p
   where s.id = any(p_ids) and s.parent_step_id = p.id and p.fair_key <> s.fair_key;
end
$fn$;

create function ballast_private.attempt_contract(p_attempt_id bigint) returns jsonb
language sql stable
as $fn$
  select jsonb_build_object('outcome', a.contract_outcome, 'detail', a.contract_detail)
    from ballast_private.attempts a where a.id = p_attempt_id
$fn$;

create function ballast_private.bad_argument(p_field text, p_problem text, p_fix text) returns void
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA002',
    message = format('%s: %s', p_field, p_problem),
    hint = p_fix,
    detail = jsonb_build_array(jsonb_build_object('path', p_field, 'message', p_problem))::text;
end
$fn$;

create function ballast_private.batch_keys_and_hashes(p_pipeline text, p_pipeline_version integer, p_inputs jsonb[], p_idempotency_keys text[]) returns TABLE(keys text[], hashes text[])
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_ord integer;
  v_other integer;
  v_key text;
begin
  -- Keys and request hashes, per input; a key given twice in this call must be given for the same request.
  select array_agg(encode(sha256(convert_to(jsonb_build_array(p_pipeline, p_pipeline_version, u.input)::text, 'UTF8')), 'hex')
                   order by u.n)
    into hashes from unnest(p_inputs) with ordinality u(input, n);
  if p_idempotency_keys is null then
    keys := array_fill(null::text, array[cardinality(p_inputs)]);
  else
    select array_agg(k.key order by k.n) into keys from unnest(p_idempotency_keys) with ordinality k(key, n);
  end if;
  select r.n, r.first_n, r.key into v_ord, v_other, v_key
    from (select u.n, u.key, u.hash, first_value(u.n) over w as first_n, first_value(u.hash) over w as first_hash
            from unnest(keys, hashes) with ordinality u(key, hash, n)
           where u.key is not null
          window w as (partition by u.key order by u.n)) r
   where r.hash <> r.first_hash
   order by r.n limit 1;
  if found then
    raise exception using errcode = 'BA003',
      message = format('inputs[%s]: idempotency key %L is also given to inputs[%s] of this call, for a different request',
                       v_ord, v_key, v_other),
      detail = jsonb_build_object('idempotency_key', v_key, 'ord', v_ord, 'other_ord', v_other)::text,
      hint = 'Give each distinct request its own key; repeat a key only for the same pipeline and input.';
  end if;
  return next;
end
$fn$;

create function ballast_private.batch_tenant(p_tenant_id text) returns text
language plpgsql volatile
as $fn$
declare
  v_tenant text := p_tenant_id;
begin
  if not ballast_private.caller_unrestricted() then
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot submit jobs', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if p_tenant_id is not null and p_tenant_id not in ('default', v_tenant) then
      raise exception using errcode = 'BA014', message = format('tenant %s cannot submit jobs for tenant %s', v_tenant, p_tenant_id),
        hint = 'Leave the tenant out: jobs are submitted for your own tenant.';
    end if;
    perform set_config('ballast.actor', ballast_private.caller_actor(null), true);
  end if;
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql', true);
  end if;
  return v_tenant;
end
$fn$;

create function ballast_private.bootstrap_mean_delta_ci(p_base double precision[], p_candidate double precision[], p_resamples integer, p_seed bigint DEFAULT 46) returns TABLE(ci_low double precision, ci_high double precision)
language sql immutable parallel safe
as $fn$
  with b as (
    select r, avg(p_base[1 + abs(hashtextextended('b:' || r || ':' || i, p_seed)) % cardinality(p_base)]) as m
      from generate_series(1, p_resamples) r cross join generate_series(1, cardinality(p_base)) i
     group by r),
  k as (
    select r, avg(p_candidate[1 + abs(hashtextextended('k:' || r || ':' || i, p_seed)) % cardinality(p_candidate)]) as m
      from generate_series(1, p_resamples) r cross join generate_series(1, cardinality(p_candidate)) i
     group by r)
  select percentile_cont(0.025) within group (order by k.m - b.m), percentile_cont(0.975) within group (order by k.m - b.m)
    from b join k using (r)
   where cardinality(p_base) > 0 and cardinality(p_candidate) > 0
$fn$;

create function ballast_private.budget_period_start(p_period text, p_at timestamp with time zone) returns timestamp with time zone
language sql immutable
as $fn$
  select date_trunc(p_period, p_at at time zone 'UTC') at time zone 'UTC'
$fn$;

create function ballast_private.budget_spend(p_at timestamp with time zone) returns TABLE(rule_id bigint, rule_name text, scope text, scope_value text, tenant_id text, scope_key text, period text, period_start timestamp with time zone, spent_usd numeric, limit_usd numeric, percents integer[])
language sql stable
as $fn$
  with calls as (
    select c.started_at, c.cost_usd, c.tenant_id, c.provider || ':' || c.requested_model as model, j.pipeline,
           j.input #>> u.path as end_user
      from ballast_private.model_calls c
      join ballast_private.jobs j on j.id = c.job_id
      left join ballast_private.end_user_paths u on u.pipeline = j.pipeline
     where c.started_at >= least(ballast_private.budget_period_start('month', p_at), ballast_private.budget_period_start('week', p_at))
       and c.cost_usd > 0
       and exists (select 1 from ballast_private.budget_alert_rules)
  ), matched as (
    select r.id, r.name, r.scope, v.value, v.tenant, coalesce(r.period, b.period) as period,
           coalesce(r.limit_usd, b.limit_usd) as limit_usd, r.percents, c.started_at, c.cost_usd
      from ballast_private.budget_alert_rules r
      join calls c on true
      cross join lateral (select case r.scope when 'tenant' then c.tenant_id when 'pipeline' then c.pipeline
                                              when 'model' then c.model else c.end_user end as value,
                                 case when r.scope in ('tenant', 'end_user') then c.tenant_id end as tenant) v
      left join ballast_private.budgets b on r.limit_usd is null and b.tenant_id = v.value
     where v.value is not null and (r.scope_value is null or v.value = r.scope_value)
  )
  select m.id, m.name, m.scope, m.value, m.tenant, coalesce(case when m.scope = 'end_user' then m.tenant || '/' end, '') || m.value,
         m.period, ballast_private.budget_period_start(m.period, p_at),
         sum(m.cost_usd), m.limit_usd, m.percents
    from matched m
   where m.limit_usd is not null
     and m.started_at >= ballast_private.budget_period_start(m.period, p_at)
     and m.started_at < ballast_private.budget_period_start(m.period, p_at) + ('1 ' || m.period)::interval
   group by m.id, m.name, m.scope, m.value, m.tenant, m.period, m.limit_usd, m.percents
$fn$;

create function ballast_private.caller_actor(p_actor text) returns text
language sql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
  select case when ballast_private.caller_unrestricted()
              then coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''))
              when pg_has_role(session_user, 'ballast_authenticator', 'member')
              then coalesce(nullif(current_setting('ballast.actor', true), ''), session_user::text)
              else session_user::text end
$fn$;

create function ballast_private.caller_role() returns name
language sql stable
as $fn$
  select case when current_setting('role') in ('none', '') then session_user else current_setting('role')::name end
$fn$;

create function ballast_private.caller_tenant() returns text
language sql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
  select coalesce(
    (select t.tenant_id from ballast_private.role_tenants t where t.role_name = session_user),
    case when pg_has_role(session_user, 'ballast_authenticator', 'member')
              or pg_has_role(session_user, (select nspowner from pg_namespace where nspname = 'ballast_private'), 'member')
         then nullif(current_setting('ballast.tenant_id', true), '') end)
$fn$;

create function ballast_private.caller_unrestricted() returns boolean
language sql stable
as $fn$
  select pg_has_role(r, 'ballast_operator', 'member') or pg_has_role(r, 'ballast_reporter', 'member')
         or pg_has_role(r, (select nspowner from pg_namespace where nspname = 'ballast_private'), 'member')
    from ballast_private.caller_role() r
$fn$;

create function ballast_private.cancel_job(p_job_id bigint, p_reason text DEFAULT NULL::text, p_actor text DEFAULT NULL::text) returns TABLE(job_id bigint, status text, cancelled_step_ids bigint[], already_cancelled boolean)
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
       and s.status in ('scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review')
    returning s.id, s.job_id)
  select coalesce(array_agg(c.id order by c.id) filter (where c.job_id = p_job_id), '{}') into v_steps from c;
  return query select p_job_id, ballast_private.refresh_job_status(p_job_id), v_steps, false;
end
$fn$;

create function ballast_private.check_batch_inputs(p_pipeline ballast_private.pipelines, p_inputs jsonb[]) returns void
language plpgsql volatile
as $fn$
declare
  c_max_problems constant integer := 20;
  v_errors jsonb;
  v_count integer;
begin
  -- Every input against the contract, in one statement, stopping after c_max_problems + 1 problems (the lateral
  -- validation runs input by input in order, so LIMIT stops it early).
  select coalesce(jsonb_agg(p.issue order by p.n, p.k), '[]'::jsonb), count(*)::int
    into v_errors, v_count
    from (select i.n, e.k,
                 jsonb_build_object(
                   'path', format('inputs[%s]', i.n) || case when e.path = '' then ''
                                                             when left(e.path, 1) = '[' then e.path
                                                             else '.' || e.path end,
                   'message', e.message) as issue
            from unnest(p_inputs) with ordinality i(input, n)
            cross join lateral (
              select 0::bigint as k, ''::text as path, 'is null (use ''{}'' for an empty object)'::text as message
               where i.input is null
              union all
              select x.k, x.path, x.message
                from ballast.json_schema_errors(p_pipeline.input_schema, i.input) with ordinality x(path, message, k)
               where i.input is not null) e
           limit c_max_problems + 1) p;
  if v_count > c_max_problems then
    v_errors := v_errors - c_max_problems;  -- drops the extra one (0-based index): it only said "there are more"
  end if;
  if v_count > 0 then
    raise exception using
      errcode = 'BA002',
      message = format('inputs do not match the contract of pipeline %s@%s (%s): %s',
                       p_pipeline.name, p_pipeline.version,
                       case when v_count > c_max_problems then format('more than %s problems, the first %s listed', c_max_problems, c_max_problems)
                            when v_count > 1 then format('%s problems', v_count) else '1 problem' end,
                       (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ' order by e.o)
                          from jsonb_array_elements(v_errors) with ordinality e(e, o))),
      detail = v_errors::text,
      hint = 'Fix the listed inputs (numbered from 1, as p_inputs[n]) and submit the batch again; nothing was written.';
  end if;
end
$fn$;

create function ballast_private.check_effect_key(p_key text) returns void
language plpgsql volatile
as $fn$
begin
  if p_key is null then
    perform ballast_private.bad_argument('key', 'is null', 'Name the effect after what it does and to whom, e.g. ''email:welcome:user-42''.');
  end if;
  perform ballast_private.check_key_text('key', p_key, 500,
    'Name the effect after what it does and to whom, in at most 500 bytes, e.g. ''email:welcome:user-42''.');
end
$fn$;

create function ballast_private.check_gate_key(p_field text, p_key text, p_pattern boolean DEFAULT false) returns void
language plpgsql immutable
as $fn$
declare
  -- (A pattern may end in ':*' or ':<prefix>*'; a key needs a value after its colon.)
  v_format text := case when p_pattern then '^[a-z][a-z0-9_-]*(:.*)?$' else '^[a-z][a-z0-9_-]*(:.+)?$' end;
begin
  if p_key is null or p_key !~ v_format or octet_length(p_key) > 300 then
    perform ballast_private.bad_argument(p_field, format('%L is not a key%s', p_key, case when p_pattern then ' pattern' else '' end),
      case when p_pattern
           then 'Use a key such as tenant:acme or provider:openai, or a prefix ending in * for one limit per key (tenant:*).'
           else 'Use a key such as global, tenant:acme, pipeline:summarize, step:summarize.call, provider:openai or one a step declares (queue:emails): a lower-case kind, a colon, a value (at most 300 bytes).' end);
  end if;
end
$fn$;

create function ballast_private.check_job_transitions(p_ids bigint[], p_from text[], p_to text[]) returns void
language plpgsql stable
as $fn$
declare
  v_bad record;
  v_allowed text;
begin
  -- Every status change must be an edge of job_transitions (a via_replay edge only within a replay): BA001 for the
  -- first offending job, and the whole statement with it.
  select c.id, c.from_status, c.to_status, t.via_replay into v_bad
    from unnest(p_ids, p_from, p_to) as c(id, from_status, to_status)
    left join ballast_private.job_transitions t on t.from_status = c.from_status and t.to_status = c.to_status
   where t.from_status is null or (t.via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on')
   order by c.id limit 1;
  if found then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)') into v_allowed
      from ballast_private.job_transitions where from_status = v_bad.from_status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('job %s cannot go from %s to %s', v_bad.id, v_bad.from_status, v_bad.to_status),
      hint = format('From %s a job may go to: %s%s.', v_bad.from_status, v_allowed,
                    case when v_bad.via_replay then '; running it again takes ballast.replay_job' else '' end);
  end if;
end
$fn$;

create function ballast_private.check_key_text(p_field text, p_value text, p_max_bytes integer, p_fix text) returns void
language plpgsql immutable
as $fn$
begin
  if p_value = '' then
    perform ballast_private.bad_argument(p_field, format('is empty; it must be 1 to %s bytes of UTF-8', p_max_bytes), p_fix);
  elsif octet_length(p_value) > p_max_bytes then
    perform ballast_private.bad_argument(p_field,
      format('is %s bytes of UTF-8 (%s characters); at most %s bytes are allowed', octet_length(p_value),
             char_length(p_value), p_max_bytes), p_fix);
  end if;
end
$fn$;

create function ballast_private.check_prompt_label_args(p_name text, p_label text, p_with_label boolean DEFAULT true) returns void
language plpgsql stable
as $fn$
begin
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    perform ballast_private.bad_argument('name', format('%s is not a valid prompt name', coalesce(quote_literal(p_name), 'null')),
      'Use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-".');
  end if;
  if p_with_label and (p_label is null or p_label !~ '^[a-z][a-z0-9_.-]{0,62}$') then
    perform ballast_private.bad_argument('label', format('%s is not a valid label', coalesce(quote_literal(p_label), 'null')),
      'Use a lower-case letter, then up to 62 lower-case letters, digits, "_", "." or "-", e.g. production or staging.');
  end if;
end
$fn$;

create function ballast_private.check_prompt_version(p_field text, p_name text, p_version integer) returns void
language plpgsql stable
as $fn$
declare
  v_versions text;
begin
  if p_version is not null and exists (select 1 from ballast_private.prompts p where p.name = p_name and p.version = p_version) then
    return;
  end if;
  select string_agg(p.version::text, ', ' order by p.version) into v_versions from ballast_private.prompts p where p.name = p_name;
  perform ballast_private.bad_argument(p_field,
    case when v_versions is null then format('prompt %s has no versions', p_name)
         else format('prompt %s has no version %s (its versions: %s)', p_name, coalesce(p_version::text, 'null'), v_versions) end,
    'Create the version first (ballast.create_prompt_version, or a prompt() in code that has run once), or name an existing one.');
end
$fn$;

create function ballast_private.check_rule_name(p_name text) returns void
language plpgsql immutable
as $fn$
begin
  if p_name is null or p_name !~ '^[A-Za-z0-9_.:-]{1,128}$' then
    perform ballast_private.bad_argument('name', format('%s is not 1 to 128 letters, digits, _ . : or -', coalesce(quote_literal(p_name), 'null')),
      'Name the rule, e.g. ''triage-first-pass''.');
  end if;
end
$fn$;

create function ballast_private.check_scorers(p_scorers jsonb, p_field text) returns void
language plpgsql stable
as $fn$
declare
  v jsonb;
  v_i integer := 0;
  v_at text;
begin
  if jsonb_typeof(p_scorers) is distinct from 'array' then
    perform ballast_private.bad_argument(p_field, 'is not a JSON array', 'Pass e.g. [{"kind": "exact"}, {"kind": "schema"}].');
  end if;
  for v in select e from jsonb_array_elements(p_scorers) e loop
    v_i := v_i + 1;
    v_at := format('%s[%s]', p_field, v_i);
    if jsonb_typeof(v) <> 'object' or coalesce(v ->> 'kind', '') not in ('schema', 'exact', 'fields', 'numeric', 'function', 'judge') then
      perform ballast_private.bad_argument(v_at || '.kind', format('%s is not a scorer kind', coalesce(v ->> 'kind', 'null')),
        'Use schema, exact, fields, numeric, function or judge.');
    end if;
    if v ? 'weight' and (jsonb_typeof(v -> 'weight') <> 'number' or (v ->> 'weight')::numeric <= 0) then
      perform ballast_private.bad_argument(v_at || '.weight', 'is not a number above 0', 'e.g. "weight": 2 (default 1).');
    end if;
    if v ->> 'kind' = 'numeric' and (jsonb_typeof(v -> 'path') is distinct from 'string' or jsonb_typeof(v -> 'tolerance') is distinct from 'number'
                                     or (v ->> 'tolerance')::numeric < 0) then
      perform ballast_private.bad_argument(v_at, 'a numeric scorer needs "path" (e.g. "score") and "tolerance" (a number >= 0)',
        'e.g. {"kind": "numeric", "path": "total", "tolerance": 0.01}.');
    end if;
    if v ->> 'kind' = 'fields' and v ? 'fields' and jsonb_typeof(v -> 'fields') <> 'array' then
      perform ballast_private.bad_argument(v_at || '.fields', 'is not an array of field names', 'e.g. "fields": ["sentiment", "topic"], or leave it out for every field of the reference.');
    end if;
    if v ->> 'kind' = 'function' and coalesce(v ->> 'name', '') = '' then
      perform ballast_private.bad_argument(v_at || '.name', 'is missing', 'Name a scorer registered in the worker (startWorker({ evals: { scorers: { name: fn } } })).');
    end if;
    if v ->> 'kind' = 'judge' then
      if coalesce(v ->> 'model', '') !~ '^[a-z][a-z0-9_-]*:.+$' then
        perform ballast_private.bad_argument(v_at || '.model', format('%s is not provider:model', coalesce(v ->> 'model', 'null')), 'e.g. "model": "openai:gpt-4o-mini".');
      end if;
      if jsonb_typeof(v -> 'version') is distinct from 'number'
         or not exists (select 1 from ballast_private.prompts p where p.name = v ->> 'prompt' and p.version = (v ->> 'version')::integer) then
        perform ballast_private.bad_argument(v_at || '.prompt', format('prompt %s@%s is not in ballast.prompts', coalesce(v ->> 'prompt', 'null'), coalesce(v ->> 'version', 'null')),
          'Register the judge prompt first (ballast.register_prompt(name, version, {"system", "user"})); it is rendered with {{input}}, {{output}} and {{reference}}.');
      end if;
    end if;
  end loop;
end
$fn$;

create function ballast_private.check_time_limits(p_run_at timestamp with time zone, p_deadline timestamp with time zone, p_expires_at timestamp with time zone, p_now timestamp with time zone) returns void
language plpgsql stable
as $fn$
declare
  v_field text;
  v_at timestamptz;
begin
  foreach v_field in array array['deadline', 'expires_at'] loop
    v_at := case v_field when 'deadline' then p_deadline else p_expires_at end;
    continue when v_at is null;
    if v_at <= coalesce(p_run_at, p_now) then
      perform ballast_private.bad_argument(v_field,
        format('%s is not later than %s', v_at, case when p_run_at is null then 'now' else 'run_at ' || p_run_at end),
        case v_field when 'deadline' then 'Give the time by which the job must have finished, after it starts.'
             else 'Give the time by which the job must have started, after run_at (or now).' end);
    end if;
    if v_at > p_now + interval '10 years' then
      perform ballast_private.bad_argument(v_field, format('%s is more than ten years ahead', v_at),
        'Pass a nearer time, or none for no limit.');
    end if;
  end loop;
end
$fn$;

create function ballast_private.check_webhook_secret(p_secret text) returns void
language plpgsql immutable
as $fn$
declare
  v_len integer;
begin
  if p_secret is null or p_secret !~ '^whsec_[A-Za-z0-9+/]+={0,2}$' then
    perform ballast_private.bad_argument('secret', 'is not whsec_ followed by base64',
      'Pass a Standard Webhooks secret: whsec_ and the base64 of 24 to 64 random bytes (e.g. ''whsec_'' || encode(gen_random_bytes(32), ''base64'')).');
  end if;
  v_len := octet_length(decode(substr(p_secret, 7), 'base64'));
  if v_len < 24 or v_len > 64 then
    perform ballast_private.bad_argument('secret', format('is %s bytes long', v_len), 'Use 24 to 64 random bytes.');
  end if;
end
$fn$;

create function ballast_private.checked_batch_pipeline(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[], p_tenant text, p_priority integer, p_pipeline_version integer) returns ballast_private.pipelines
language plpgsql volatile
as $fn$
declare
  c_max_inputs constant integer := 1000;
  v_pipeline ballast_private.pipelines;
  v_n integer;
  v_ord integer;
begin
  -- Arguments, as ballast_private.submit checks them, then the arrays.
  if p_pipeline is null or p_pipeline = '' then
    perform ballast_private.bad_argument('pipeline', 'is missing', 'Name a registered pipeline, e.g. ''demo.wordstats''.');
  end if;
  if p_tenant is null or p_tenant = '' or length(p_tenant) > 200 then
    perform ballast_private.bad_argument('tenant_id', format('%L is not a tenant id', p_tenant),
      'Pass a non-empty text of at most 200 characters, or leave it out for the tenant ''default''.');
  end if;
  if p_priority is null or p_priority not between -1000 and 1000 then
    perform ballast_private.bad_argument('priority', format('%s is out of range', coalesce(p_priority::text, 'null')),
      'Use an integer from -1000 to 1000; lower runs first, 0 is the default.');
  end if;
  if p_inputs is null then
    perform ballast_private.bad_argument('inputs', 'is null',
      'Pass an array with one job input per job, e.g. array[''{"text": "a"}'', ''{"text": "b"}'']::jsonb[].');
  end if;
  if array_ndims(p_inputs) > 1 then
    perform ballast_private.bad_argument('inputs', format('has %s dimensions', array_ndims(p_inputs)),
      'Pass a one-dimensional array: one element per job.');
  end if;
  v_n := cardinality(p_inputs);
  if v_n > c_max_inputs then
    perform ballast_private.bad_argument('inputs', format('holds %s inputs, more than %s per call', v_n, c_max_inputs),
      format('Split the batch into calls of at most %s inputs (each call is one transaction).', c_max_inputs));
  end if;
  if p_idempotency_keys is not null then
    if array_ndims(p_idempotency_keys) > 1 or cardinality(p_idempotency_keys) <> v_n then
      perform ballast_private.bad_argument('idempotency_keys',
        format('has %s entries for %s inputs', cardinality(p_idempotency_keys), v_n),
        'Pass one key (or null) per input, in the order of the inputs, or leave idempotency_keys out.');
    end if;
    select k.n into v_ord
      from unnest(p_idempotency_keys) with ordinality k(key, n)
     where k.key = '' or length(k.key) > 500
     order by k.n limit 1;
    if found then
      perform ballast_private.bad_argument(format('idempotency_keys[%s]', v_ord), 'must be 1 to 500 characters',
        'Pass null for no deduplication of that input, or a key unique to its request (an order id, a webhook delivery id).');
    end if;
  end if;

  if p_pipeline_version is null then
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline order by p.version desc limit 1;
  else
    select * into v_pipeline from ballast_private.pipelines p
     where p.name = p_pipeline and p.version = p_pipeline_version;
  end if;
  if v_pipeline.name is null then
    raise exception using errcode = 'BA004',
      message = case when p_pipeline_version is null then format('pipeline %L is not registered', p_pipeline)
                     else format('pipeline %L has no version %s', p_pipeline, p_pipeline_version) end,
      hint = coalesce('Registered pipelines: ' || (select string_agg(distinct p.name || '@' || p.version, ', ')
                                                     from ballast_private.pipelines p) || '. ', '')
             || 'A pipeline is registered when a worker that defines it starts.';
  end if;
  return v_pipeline;
end
$fn$;

create function ballast_private.checked_keyed_option(p_field text, p_value jsonb, p_ms_field text, OUT key text, OUT ms double precision, OUT max_ms double precision) returns record
language plpgsql immutable
as $fn$
declare
  v_unknown text;
begin
  if jsonb_typeof(p_value) is distinct from 'object' then
    perform ballast_private.bad_argument(p_field, format('is %s, not an object', coalesce(jsonb_typeof(p_value), 'missing')),
      format('Pass {"key": "...", "%s": <ms>%s}.', p_ms_field, case when p_field = 'debounce' then ', "max_wait_ms": <ms>' else '' end));
  end if;
  select k into v_unknown from jsonb_object_keys(p_value) k
   where k not in ('key', p_ms_field) and (p_field <> 'debounce' or k <> 'max_wait_ms') limit 1;
  if found then
    perform ballast_private.bad_argument(p_field || '.' || v_unknown, 'is not an option of ' || p_field,
      format('Pass key and %s%s only.', p_ms_field, case when p_field = 'debounce' then ' (and max_wait_ms)' else '' end));
  end if;
  if jsonb_typeof(p_value -> 'key') is distinct from 'string' then
    perform ballast_private.bad_argument(p_field || '.key', 'is missing or not a string',
      'Name what the submissions are about, e.g. ''document:42''.');
  end if;
  key := p_value ->> 'key';
  perform ballast_private.check_key_text(p_field || '.key', key, 500, 'Name what the submissions are about, e.g. ''document:42''.');
  if jsonb_typeof(p_value -> p_ms_field) is distinct from 'number' or not ((p_value ->> p_ms_field)::numeric between 0 and 86400000) then
    perform ballast_private.bad_argument(p_field || '.' || p_ms_field,
      format('%s is not a number of milliseconds from 0 to a day', coalesce(p_value ->> p_ms_field, 'null')),
      'Pass milliseconds, e.g. 5000.');
  end if;
  ms := (p_value ->> p_ms_field)::double precision;
  if jsonb_typeof(p_value -> 'max_wait_ms') is distinct from 'null' and p_value ? 'max_wait_ms' then
    if jsonb_typeof(p_value -> 'max_wait_ms') <> 'number'
       or not ((p_value ->> 'max_wait_ms')::numeric between ms::numeric and 2592000000) then
      perform ballast_private.bad_argument(p_field || '.max_wait_ms',
        format('%s is not a number of milliseconds from quiet_ms (%s) to thirty days', p_value ->> 'max_wait_ms', ms),
        'Pass the longest a job may wait after the first submission of a burst, or leave it out for no limit.');
    end if;
    max_ms := (p_value ->> 'max_wait_ms')::double precision;
  end if;
end
$fn$;

create function ballast_private.checked_pipeline(p_pipeline text, p_input jsonb, p_idempotency_key text, p_tenant_id text, p_priority integer, p_pipeline_version integer) returns ballast_private.pipelines
language plpgsql stable
as $fn$
declare
  c_listed constant integer := 100;
  v_pipeline ballast_private.pipelines;
  v_errors jsonb;
  v_count int;
  v_problem text;
begin
  if p_pipeline is null or p_pipeline = '' then
    perform ballast_private.bad_argument('pipeline', 'is missing', 'Name a registered pipeline, e.g. ''demo.wordstats''.');
  end if;
  if p_tenant_id is null then
    perform ballast_private.bad_argument('tenant_id', 'is null',
      'Pass a tenant id of 1 to 200 bytes, or leave it out for the tenant ''default''.');
  end if;
  perform ballast_private.check_key_text('tenant_id', p_tenant_id, 200,
    'Pass a tenant id of 1 to 200 bytes, or leave it out for the tenant ''default''.');
  if p_priority is null or p_priority not between -1000 and 1000 then
    perform ballast_private.bad_argument('priority', format('%s is out of range', coalesce(p_priority::text, 'null')),
      'Use an integer from -1000 to 1000; lower runs first, 0 is the default.');
  end if;
  perform ballast_private.check_key_text('idempotency_key', p_idempotency_key, 500,
    'Pass null for no deduplication, or a key of 1 to 500 bytes unique to this request (an order id, a webhook delivery id).');

  if p_pipeline_version is null then
    select * into v_pipeline from ballast_private.pipelines
     where name = p_pipeline order by version desc limit 1;
  else
    select * into v_pipeline from ballast_private.pipelines
     where name = p_pipeline and version = p_pipeline_version;
  end if;
  if v_pipeline.name is null then
    raise exception using errcode = 'BA004',
      message = case when p_pipeline_version is null then format('pipeline %L is not registered', p_pipeline)
                     else format('pipeline %L has no version %s', p_pipeline, p_pipeline_version) end,
      hint = coalesce('Registered pipelines: ' || (select string_agg(distinct name || '@' || version, ', ')
                                                     from ballast_private.pipelines) || '. ', '')
             || 'A pipeline is registered when a worker that defines it starts.';
  end if;

  if p_input is null then
    perform ballast_private.bad_argument('input', 'is null',
      format('Pass a JSON value matching the input contract of %s@%s (ballast.pipelines.input_schema).',
             v_pipeline.name, v_pipeline.version));
  end if;
  v_problem := ballast_private.input_size_problem(p_input, ballast_private.input_size_limit(v_pipeline));
  if v_problem is not null then
    perform ballast_private.bad_argument('input', format('%s (pipeline %s@%s)', v_problem, v_pipeline.name, v_pipeline.version),
      'Send less per job (keep large documents elsewhere and pass a reference: a URL, an object key, an id), or '
      || 'give the pipeline a larger maxInputBytes (up to 64 MiB) in a new version; numbers must fit a 64-bit float.');
  end if;
  select jsonb_agg(jsonb_build_object('path', 'input' || case when e.path = '' then ''
                                                              when left(e.path, 1) = '[' then e.path
                                                              else '.' || e.path end,
                                      'message', e.message) order by e.k) filter (where e.k <= c_listed),
         count(*)
    into v_errors, v_count
    from ballast.json_schema_errors(v_pipeline.input_schema, p_input) with ordinality e(path, message, k);
  if v_count > 0 then
    raise exception using
      errcode = 'BA002',
      message = format('input does not match the contract of pipeline %s@%s (%s): %s',
                       v_pipeline.name, v_pipeline.version,
                       case when v_count > c_listed then format('more than %s problems, the first %s listed', c_listed, c_listed)
                            when v_count > 1 then format('%s problems', v_count) else '1 problem' end,
                       (select string_agg((e ->> 'path') || ': ' || (e ->> 'message'), '; ' order by o)
                          from jsonb_array_elements(v_errors) with ordinality x(e, o))),
      detail = v_errors::text,
      hint = 'Fix the listed fields and submit again; nothing was written.';
  end if;
  return v_pipeline;
end
$fn$;

create function ballast_private.checked_run_at(p_run_at timestamp with time zone, p_delay_ms double precision, p_now timestamp with time zone) returns timestamp with time zone
language plpgsql stable
as $fn$
declare
  v_at timestamptz;
begin
  if p_run_at is null and p_delay_ms is null then
    return null;
  end if;
  if p_run_at is not null and p_delay_ms is not null then
    perform ballast_private.bad_argument('run_at', 'is given with delay_ms',
      'Pass one of them: a start time (run_at) or milliseconds from now (delay_ms).');
  end if;
  if p_delay_ms is not null and not (p_delay_ms >= 0 and p_delay_ms <= 315576000000) then
    perform ballast_private.bad_argument('delay_ms', format('%s ms is not from 0 to ten years', p_delay_ms),
      'Pass a number of milliseconds from now, or a start time (run_at).');
  end if;
  v_at := coalesce(p_run_at, p_now + make_interval(secs => p_delay_ms / 1000.0));
  if v_at > p_now + interval '10 years' then
    perform ballast_private.bad_argument('run_at', format('%s is more than ten years ahead', v_at),
      'Pass a nearer start time (or use a schedule, ballast.set_schedule, for recurring work).');
  end if;
  return case when v_at > p_now then v_at end;
end
$fn$;

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

create function ballast_private.children_done(p_job_ids bigint[], p_first integer) returns boolean
language sql stable
as $fn$
  select case when p_first is null then count(*) filter (where j.finished_at is null) = 0
              else count(*) filter (where j.status = 'completed') >= p_first
                   or count(*) filter (where j.status = 'completed' or j.finished_at is null) < p_first end
    from ballast_private.jobs j
   where j.id = any(p_job_ids)
$fn$;

create function ballast_private.claim_gate(p_tenant_id text, p_model jsonb, p_now timestamp with time zone) returns TABLE(until timestamp with time zone, class text, message text)
language plpgsql stable
as $fn$
declare
  v_models text[] := array[p_model ->> 'model']
                     || coalesce(array(select jsonb_array_elements_text(p_model -> 'fallbacks')), '{}');
  v_budget ballast_private.budgets;
  v_start timestamptz;
  v_spent numeric;
  v_cool record;
begin
  select * into v_budget from ballast_private.budgets b where b.tenant_id = p_tenant_id and b.on_exhausted = 'pause';
  if found and exists (select 1 from ballast.model_price(split_part(v_models[1], ':', 1),
                                                          substr(v_models[1], strpos(v_models[1], ':') + 1), p_now)) then
    v_start := ballast_private.budget_period_start(v_budget.period, p_now);
    select coalesce(sum(u.spent_usd + u.reserved_usd), 0) into v_spent
      from ballast_private.budget_usage u where u.tenant_id = p_tenant_id and u.period_start = v_start;
    if v_spent >= v_budget.limit_usd then
      until := v_start + ('1 ' || v_budget.period)::interval;
      class := 'budget_exhausted';
      message := format('tenant %L has used its budget of %s USD per %s (%s USD spent or reserved); the step waits '
                        'until %s or a raised limit (ballast.set_budget)', p_tenant_id, v_budget.limit_usd,
                        v_budget.period, round(v_spent, 6), until);
      return next;
      return;
    end if;
  end if;

  select min(x.until) as until, string_agg(x.model || ' until ' || x.until, ', ' order by x.model) as what
    into v_cool
    from (select m as model, (select max(c.until) from ballast_private.provider_cooldowns c
                               where c.provider = split_part(m, ':', 1)
                                 and c.model in (substr(m, strpos(m, ':') + 1), '*') and c.until > p_now) as until
            from unnest(v_models) m) x
   having count(*) = count(x.until);
  if found then
    until := v_cool.until;
    class := 'cooldown';
    message := format('every model of the step is cooling down (%s); the step waits until %s', v_cool.what, v_cool.until);
    return next;
  end if;
end
$fn$;

create function ballast_private.complete(p_attempt_id bigint, p_output jsonb, p_wake_first boolean) returns TABLE(job_status text, queued_step_ids bigint[])
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_queued bigint[];
begin
  v_step := ballast_private.running_attempt(p_attempt_id);
  update ballast_private.attempts set outcome = 'succeeded', finished_at = v_now where id = p_attempt_id;
  update ballast_private.steps
     set status = 'succeeded', output = coalesce(p_output, 'null'::jsonb), error = null, finished_at = v_now,
         wait_key = null, wait_deadline = null, wait_on_timeout = null
   where id = v_step.id;

  v_queued := ballast_private.queue_dependants(v_step.job_id, v_step.name, v_now, p_wake_first);

  if v_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(v_step.concurrency_key, v_step.concurrency_limit);
  end if;
  if v_step.parent_step_id is not null then
    perform ballast_private.finish_map(v_step.parent_step_id);
  end if;
  return query select ballast_private.refresh_job_status(v_step.job_id), v_queued;
end
$fn$;

create function ballast_private.concurrency_value(p_key text, p_tenant_id text, p_input jsonb) returns text
language sql immutable parallel safe
as $fn$
  select ballast_private.short_key(case
    when p_key = 'global' then '*'
    when p_key = 'tenant' then p_tenant_id
    else coalesce(p_input #>> string_to_array(substr(p_key, 7), '.'), '(none)')
  end)
$fn$;

create function ballast_private.cooldown_left_ms(p_until timestamp with time zone, p_now timestamp with time zone) returns integer
language sql immutable
as $fn$
  select case when p_until is null then null
              else ceil(greatest(extract(epoch from (least(p_until, p_now + interval '7 days') - p_now)), 0) * 1000)::integer
         end
$fn$;

create function ballast_private.cron_field(p_field text, p_what text, p_min integer, p_max integer, p_names text[] DEFAULT NULL::text[]) returns integer[]
language plpgsql immutable
as $fn$
declare
  v_part text;
  v_range text;
  v_step int;
  v_lo int;
  v_hi int;
  v_values int[] := '{}';
  v_m text[];
begin
  foreach v_part in array string_to_array(lower(p_field), ',') loop
    v_m := regexp_match(v_part, '^([^/]+)(?:/([0-9]{1,4}))?$');
    if v_m is null then
      raise exception using errcode = 'BA002', message = format('cron: the %s field %L is not valid', p_what, p_field),
        hint = 'Use *, a value, a range a-b, a step */n or a-b/n, or a list of those separated by commas.',
        detail = jsonb_build_array(jsonb_build_object('path', 'cron', 'message', format('the %s field %L is not valid', p_what, p_field)))::text;
    end if;
    v_range := v_m[1];
    v_step := coalesce(v_m[2]::int, 1);
    if v_range = '*' then
      v_lo := p_min;
      v_hi := p_max;
    else
      v_m := regexp_match(v_range, '^([a-z]{3}|[0-9]{1,4})(?:-([a-z]{3}|[0-9]{1,4}))?$');
      if v_m is null then
        v_lo := null;
      else
        v_lo := case when v_m[1] ~ '^[0-9]+$' then v_m[1]::int else array_position(p_names, v_m[1]) - 1 + p_min end;
        v_hi := case when v_m[2] is null then (case when v_step > 1 or v_part ~ '/' then p_max else v_lo end)
                     when v_m[2] ~ '^[0-9]+$' then v_m[2]::int else array_position(p_names, v_m[2]) - 1 + p_min end;
      end if;
    end if;
    if v_lo is null or v_hi is null or v_step < 1 or v_lo < p_min or v_hi > (case when p_what = 'day-of-week' then 7 else p_max end) or v_lo > v_hi then
      raise exception using errcode = 'BA002',
        message = format('cron: the %s field %L is out of range or unknown (allowed: %s to %s%s)', p_what, p_field, p_min,
                         case when p_what = 'day-of-week' then 7 else p_max end,
                         case when p_names is not null then format(', or %s', array_to_string(p_names, ' ')) else '' end),
        hint = 'Fix that field of the expression: minute hour day-of-month month day-of-week.',
        detail = jsonb_build_array(jsonb_build_object('path', 'cron', 'message', format('the %s field %L is out of range', p_what, p_field)))::text;
    end if;
    v_values := v_values || array(select case when p_what = 'day-of-week' and g = 7 then 0 else g end
                                    from generate_series(v_lo, v_hi, v_step) g);
  end loop;
  return array(select distinct v from unnest(v_values) v order by v);
end
$fn$;

create function ballast_private.cron_next(p_cron text, p_tz text, p_after timestamp with time zone) returns timestamp with time zone
language sql stable
as $fn$
  select ballast_private.cron_next_of(ballast_private.cron_parse(p_cron), p_tz, p_after)
$fn$;

create function ballast_private.cron_next_of(c ballast_private.cron_spec, p_tz text, p_after timestamp with time zone) returns timestamp with time zone
language plpgsql stable
as $fn$
declare
  v_local timestamp := date_trunc('minute', p_after at time zone p_tz) + interval '1 minute';
  v_end timestamp := v_local + interval '8 years';
  v_day_ok boolean;
  v_minute int;
  v_at timestamptz;
begin
  while v_local < v_end loop
    if not extract(month from v_local)::int = any (c.months) then
      v_local := date_trunc('month', v_local) + interval '1 month';
      continue;
    end if;
    v_day_ok := case
      when c.days_any and c.weekdays_any then true
      when c.days_any then extract(dow from v_local)::int = any (c.weekdays)
      when c.weekdays_any then extract(day from v_local)::int = any (c.days)
      else extract(day from v_local)::int = any (c.days) or extract(dow from v_local)::int = any (c.weekdays) end;
    if not v_day_ok then
      v_local := date_trunc('day', v_local) + interval '1 day';
      continue;
    end if;
    if not extract(hour from v_local)::int = any (c.hours) then
      v_local := date_trunc('hour', v_local) + interval '1 hour';
      continue;
    end if;
    select min(m) into v_minute from unnest(c.minutes) m where m >= extract(minute from v_local)::int;
    if v_minute is null then
      v_local := date_trunc('hour', v_local) + interval '1 hour';
      continue;
    end if;
    v_local := date_trunc('hour', v_local) + make_interval(mins => v_minute);
    v_at := v_local at time zone p_tz;
    if v_at > p_after then
      return v_at;
    end if;
    v_local := v_local + interval '1 minute';
  end loop;
  return null;
end
$fn$;

create function ballast_private.cron_parse(p_cron text) returns ballast_private.cron_spec
language plpgsql immutable
as $fn$
declare
  v_expr text := btrim(coalesce(p_cron, ''));
  v_fields text[];
  c ballast_private.cron_spec;
begin
  v_expr := case lower(v_expr)
    when '@yearly' then '0 0 1 1 *' when '@annually' then '0 0 1 1 *' when '@monthly' then '0 0 1 * *'
    when '@weekly' then '0 0 * * 0' when '@daily' then '0 0 * * *' when '@midnight' then '0 0 * * *'
    when '@hourly' then '0 * * * *' else v_expr end;
  v_fields := regexp_split_to_array(v_expr, '\s+');
  if v_expr = '' or cardinality(v_fields) <> 5 then
    raise exception using errcode = 'BA002',
      message = format('cron: %L has %s fields, not 5', p_cron, case when v_expr = '' then 0 else cardinality(v_fields) end),
      hint = 'Write minute hour day-of-month month day-of-week, e.g. ''*/15 9-17 * * mon-fri'', or a macro such as @daily.',
      detail = jsonb_build_array(jsonb_build_object('path', 'cron', 'message', 'not five fields'))::text;
  end if;
  c.minutes := ballast_private.cron_field(v_fields[1], 'minute', 0, 59);
  c.hours := ballast_private.cron_field(v_fields[2], 'hour', 0, 23);
  c.days := ballast_private.cron_field(v_fields[3], 'day-of-month', 1, 31);
  c.months := ballast_private.cron_field(v_fields[4], 'month', 1, 12,
    array['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']);
  c.weekdays := ballast_private.cron_field(v_fields[5], 'day-of-week', 0, 6, array['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']);
  c.days_any := v_fields[3] in ('*', '?');
  c.weekdays_any := v_fields[5] in ('*', '?');
  return c;
end
$fn$;

create function ballast_private.defer_job_counters() returns void
language plpgsql volatile
as $fn$
begin
  if to_regclass('pg_temp.ballast_job_deltas') is null then
    create temporary table ballast_job_deltas (
      job_id bigint, d_total int, d_final int, d_running int, d_review int, d_waiting int, d_retrying int,
      d_failed int, d_cancelled int, d_started int, d_item_bad int) on commit delete rows;
  end if;
  perform set_config('ballast.defer_counters', 'on', true);
  -- And the audit events' ids, for one ballast_events notification at the end (flush_events_notice).
  perform set_config('ballast.collect_events', 'on', true);
end
$fn$;

create function ballast_private.derive_job_status(p_total integer, p_final integer, p_running integer, p_review integer, p_waiting integer, p_retrying integer, p_failed integer, p_cancelled integer, p_started integer, p_item_bad integer) returns text
language sql immutable parallel safe
as $fn$
  select case
    when p_final = p_total and p_cancelled > 0 then 'cancelled'
    when p_final = p_total and p_failed > 0 then 'failed'
    when p_final = p_total and p_item_bad > 0 then 'partially_completed'
    when p_final = p_total then 'completed'
    when p_running > 0 then 'running'
    when p_review > 0 then 'needs_review'
    when p_waiting > 0 then 'waiting'
    when p_retrying > 0 then 'retrying'
    when p_started > 0 then 'running'
    else 'queued' end
$fn$;

create function ballast_private.drift_breached(p_direction text, p_change text, p_threshold numeric, p_value numeric, p_baseline numeric) returns boolean
language sql immutable
as $fn$
  select case when p_value is null or p_baseline is null then null
              when p_change = 'absolute' then
                (case when p_direction = 'drop' then p_baseline - p_value else p_value - p_baseline end) >= p_threshold
              when p_baseline = 0 then (case when p_direction = 'drop' then p_value < 0 else p_value > 0 end)
              else (case when p_direction = 'drop' then p_baseline - p_value else p_value - p_baseline end) / abs(p_baseline) >= p_threshold end
$fn$;

create function ballast_private.drift_direction(p_metric text) returns text
language sql immutable
as $fn$
  select case when p_metric in ('first_pass_rate', 'score_mean', 'score_p10', 'score_p50') then 'drop'
              when p_metric in ('repair_rate', 'fallback_rate', 'degraded_rate', 'review_rate', 'rejection_rate',
                                'cost_per_success', 'latency_p50_ms', 'latency_p95_ms') then 'rise' end
$fn$;

create function ballast_private.due_slots(p_cron text, p_tz text, p_first timestamp with time zone, p_now timestamp with time zone, p_keep integer, OUT slots timestamp with time zone[], OUT total integer) returns record
language plpgsql stable
as $fn$
declare
  c ballast_private.cron_spec := ballast_private.cron_parse(p_cron);
  v_at timestamptz := p_first;
begin
  slots := '{}';
  total := 0;
  while v_at is not null and v_at <= p_now and total < 10000 loop
    total := total + 1;
    slots := (slots || v_at)[greatest(cardinality(slots) + 2 - p_keep, 1):];
    v_at := ballast_private.cron_next_of(c, p_tz, v_at);
  end loop;
end
$fn$;

create function ballast_private.eval_dataset(p_name text, p_lock boolean DEFAULT false) returns ballast_private.eval_datasets
language plpgsql volatile
as $fn$
declare
  v ballast_private.eval_datasets;
begin
  if p_lock then
    select * into v from ballast_private.eval_datasets d where d.name = p_name for update;
  else
    select * into v from ballast_private.eval_datasets d where d.name = p_name;
  end if;
  if not found then
    raise exception using errcode = 'BA007', message = format('dataset %L does not exist', p_name),
      hint = 'Create it with ballast.create_dataset(name, description), or add cases with ballast.add_eval_cases (which creates it).';
  end if;
  return v;
end
$fn$;

create function ballast_private.eval_item(p_run_id bigint, p_case_id bigint) returns jsonb
language sql stable
as $fn$
  select jsonb_build_object('run', to_jsonb(r), 'case', to_jsonb(c))
    from ballast_private.eval_runs r, ballast_private.eval_cases c
   where r.id = p_run_id and c.id = p_case_id
$fn$;

create function ballast_private.eval_run_cases(p_job_id bigint) returns TABLE(run_id bigint, case_id bigint)
language plpgsql volatile
as $fn$
declare
  v_run ballast_private.eval_runs;
  v_job ballast_private.jobs;
begin
  select * into v_run from ballast_private.eval_runs r where r.job_id = p_job_id for update;
  if not found then
    select * into v_job from ballast_private.jobs j where j.id = p_job_id;
    v_run := ballast_private.new_eval_run(p_job_id, v_job.input, v_job.tenant_id, 'job:' || p_job_id);
  end if;
  update ballast_private.eval_runs r set status = 'running' where r.id = v_run.id and r.status = 'queued';
  return query select v_run.id, c.id from ballast_private.eval_cases c
   where c.dataset = v_run.dataset and c.added_in_version <= v_run.dataset_version
     and (c.removed_in_version is null or c.removed_in_version > v_run.dataset_version)
   order by c.case_key;
end
$fn$;

create function ballast_private.eval_run_exists(p_run bigint, p_what text) returns void
language plpgsql stable
as $fn$
begin
  if not exists (select 1 from ballast_private.eval_runs r where r.id = p_run) then
    raise exception using errcode = 'BA007', message = format('%s %s does not exist', p_what, coalesce(p_run::text, 'null')),
      hint = 'ballast.eval_runs lists the runs.';
  end if;
end
$fn$;

create function ballast_private.eval_run_summary(p_run_id bigint) returns jsonb
language sql stable
as $fn$
  select jsonb_build_object(
    'cases', (select count(*) from ballast_private.eval_runs r join ballast_private.eval_cases c on c.dataset = r.dataset
               and c.added_in_version <= r.dataset_version and (c.removed_in_version is null or c.removed_in_version > r.dataset_version)
              where r.id = p_run_id),
    'scored', count(*), 'passed', count(*) filter (where e.passed),
    'pass_rate', round(avg(case when e.passed then 1 else 0 end), 4), 'mean_score', round(avg(e.score), 4),
    'cost_usd', coalesce(sum(e.cost_usd), 0), 'judge_cost_usd', coalesce(sum(e.judge_cost_usd), 0),
    'latency_ms_p50', percentile_cont(0.5) within group (order by e.latency_ms),
    'latency_ms_p95', percentile_cont(0.95) within group (order by e.latency_ms),
    'errors', count(*) filter (where e.error is not null),
    'by_scorer', (select coalesce(jsonb_object_agg(k, round(m, 4)), '{}') from (
                    select s.key as k, avg((s.value)::numeric) as m
                      from ballast_private.eval_results e2, jsonb_each(e2.scores) s
                     where e2.run_id = p_run_id and jsonb_typeof(s.value) = 'number' group by s.key) x))
    from ballast_private.eval_results e where e.run_id = p_run_id
$fn$;

create function ballast_private.events_append_only() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA009',
    message = format('ballast events are append-only: %s is not allowed', lower(tg_op)),
    hint = 'The audit trail keeps every event; record a correction as a new event instead.';
end
$fn$;

create function ballast_private.expire_jobs(p_now timestamp with time zone, p_batch integer) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_job record;
  v_class text;
  v_message text;
  v_attempts jsonb;
  v_done bigint[] := '{}';
  v_reason text := current_setting('ballast.reason', true);
begin
  for v_job in
    select l.id, l.deadline, l.expires_at, l.deadline is not null and l.deadline <= p_now as late
      from (select j.id, j.deadline, j.expires_at from ballast_private.jobs j
             where j.deadline <= p_now and j.deadline is not null and j.finished_at is null
            union
            select j.id, j.deadline, j.expires_at from ballast_private.jobs j
             where j.expires_at <= p_now and j.expires_at is not null and j.status in ('scheduled', 'queued')) l
     order by least(l.deadline, l.expires_at), l.id
     limit p_batch
  loop
    begin
      perform 1 from ballast_private.steps s where s.job_id = v_job.id
       order by s.parent_step_id is null, s.id for update nowait;
    exception when lock_not_available then
      continue;
    end;
    -- Read again under the step locks: the job may have finished or started meanwhile.
    continue when not exists (select 1 from ballast_private.jobs j where j.id = v_job.id and j.finished_at is null
                                 and (v_job.late or j.status in ('scheduled', 'queued')));
    if v_job.late then
      v_class := 'deadline_exceeded';
      v_message := format('the job did not finish by its deadline %s', v_job.deadline);
      perform set_config('ballast.reason', 'deadline passed', true);
    else
      v_class := 'expired';
      v_message := format('the job did not start by its expiry time %s', v_job.expires_at);
      perform set_config('ballast.reason', 'expired before it started', true);
    end if;
    select coalesce(jsonb_agg(jsonb_build_object('attempt_id', a.id, 'worker_id', a.worker_id)), '[]') into v_attempts
      from ballast_private.attempts a where a.job_id = v_job.id and a.outcome = 'running';
    update ballast_private.attempts a
       set outcome = 'cancelled', finished_at = p_now, error_class = v_class, error_message = v_message,
           error_retryable = false
     where a.job_id = v_job.id and a.outcome = 'running';
    update ballast_private.steps s
       set status = case when s.status = 'pending' then 'skipped' else 'failed' end,
           finished_at = p_now, next_run_at = null, wait_key = null, wait_deadline = null, wait_on_timeout = null,
           error = case when s.status = 'pending' then s.error
                        else jsonb_build_object('class', v_class, 'message', v_message, 'retryable', false,
                                                'attempt', s.attempts) end
     where s.job_id = v_job.id
       and s.status in ('scheduled', 'pending', 'queued', 'running', 'retrying', 'waiting', 'needs_review');
    if jsonb_array_length(v_attempts) > 0 then
      perform pg_notify('ballast_cancel', jsonb_build_object('job_id', v_job.id, 'attempts', v_attempts)::text);
    end if;
    v_done := v_done || v_job.id;
  end loop;
  -- In a batch whose job counters are deferred (settle_and_claim), the jobs' statuses are written now, so that their
  -- job_failed events carry the reason too.
  if cardinality(v_done) > 0 and current_setting('ballast.defer_counters', true) = 'on' then
    perform ballast_private.flush_job_counters();
    perform set_config('ballast.defer_counters', 'on', true);
  end if;
  perform set_config('ballast.reason', coalesce(v_reason, ''), true);
  return v_done;
end
$fn$;

create function ballast_private.expire_waits(p_now timestamp with time zone, p_batch integer) returns TABLE(expired_ids bigint[], touched_jobs bigint[])
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
begin
  expired_ids := '{}';
  touched_jobs := '{}';
  for v_step in
    select * from ballast_private.steps
     where status = 'waiting' and wait_deadline < p_now
     order by id
     limit p_batch
     for update skip locked
  loop
    if v_step.wait_on_timeout = 'resume' then
      update ballast_private.steps
         set status = 'queued', queued_at = p_now, wait_deadline = null, wait_on_timeout = null
       where id = v_step.id;
      perform ballast_private.wake_step(v_step.id);
    -- The attempt that waited in vain is charged now (wait_for_event un-charged it when it parked): otherwise a step
    -- whose event never comes would wait and retry forever instead of ending in the dead-letter set.
    elsif v_step.wait_on_timeout = 'retry' and v_step.attempts - v_step.attempt_offset + 1 < v_step.max_attempts then
      update ballast_private.steps
         set status = 'queued', queued_at = p_now, wait_key = null, wait_deadline = null, wait_on_timeout = null,
             attempt_offset = attempt_offset - 1,
             error = jsonb_build_object('class', 'deadline_exceeded', 'message',
                                        format('no event %L arrived by %s; running the step again', v_step.wait_key, v_step.wait_deadline),
                                        'retryable', true, 'attempt', v_step.attempts)
       where id = v_step.id;
      perform ballast_private.wake_step(v_step.id);
    else
      perform ballast_private.settle_failure(v_step,
        jsonb_build_object('class', 'deadline_exceeded', 'message',
                           format('no event %L arrived by %s', v_step.wait_key, v_step.wait_deadline),
                           'retryable', false, 'attempt', v_step.attempts),
        false, null, p_now);
    end if;
    expired_ids := expired_ids || v_step.id;
    touched_jobs := touched_jobs || v_step.job_id;
  end loop;

  return next;
end
$fn$;

create function ballast_private.fill_step_queue_columns() returns trigger
language plpgsql volatile
as $fn$
begin
  select ballast.task_identifier(j.pipeline, j.pipeline_version), j.priority into new.task, new.priority
    from ballast_private.jobs j where j.id = new.job_id;
  return new;
end
$fn$;

create function ballast_private.finish_eval_run(p_run_id bigint) returns jsonb
language sql volatile
as $fn$
  update ballast_private.eval_runs r
     set status = 'completed', finished_at = ballast.now(), summary = ballast_private.eval_run_summary(r.id)
   where r.id = p_run_id
  returning r.summary
$fn$;

create function ballast_private.finish_map(p_parent_id bigint) returns void
language plpgsql volatile
as $fn$
declare
  v_parent ballast_private.steps;
  v_now timestamptz := ballast.now();
  v_def jsonb;
  v_ok int; v_bad int;
  v_output jsonb;
  v_acceptable boolean;
begin
  select * into v_parent from ballast_private.steps where id = p_parent_id for update;
  if v_parent.status <> 'waiting' or v_parent.items_open > 0 then
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
           'succeeded', count(*) filter (where c.status = 'succeeded'),
           'failed', count(*) filter (where c.status <> 'succeeded')),
         count(*) filter (where c.status = 'succeeded'), count(*) filter (where c.status <> 'succeeded')
    into v_output, v_ok, v_bad
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

create function ballast_private.finish_orphaned_maps(p_batch integer) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_jobs bigint[] := '{}';
begin
  -- items_open (0013) counts a map step's live items.
  for v_step in
    select p.* from ballast_private.steps p
     where p.status = 'waiting' and p.waiting_for = 'items' and p.items_open = 0
     order by p.id
     limit p_batch
  loop
    perform ballast_private.finish_map(v_step.id);
    v_jobs := v_jobs || v_step.job_id;
  end loop;

  return v_jobs;
end
$fn$;

create function ballast_private.flush_events_notice() returns void
language plpgsql volatile
as $fn$
declare
  v_ids text := nullif(current_setting('ballast.batch_event_ids', true), '');
  v_list bigint[];
begin
  perform set_config('ballast.collect_events', 'off', true);
  if v_ids is null then
    return;
  end if;
  perform set_config('ballast.batch_event_ids', '', true);
  if length(v_ids) + 10 <= 7500 then
    perform pg_notify('ballast_events', '{"ids":[' || v_ids || ']}');
  else
    v_list := string_to_array(v_ids, ',')::bigint[];
    perform pg_notify('ballast_events', json_build_object('min_id', (select min(x) from unnest(v_list) x),
      'max_id', (select max(x) from unnest(v_list) x), 'count', cardinality(v_list))::text);
  end if;
end
$fn$;

create function ballast_private.flush_job_counters() returns void
language plpgsql volatile
as $fn$
declare
  v_d record;
begin
  perform set_config('ballast.defer_counters', 'off', true);
  select array_agg(job_id order by job_id) as job, array_agg(t order by job_id) as total, array_agg(f order by job_id) as final,
         array_agg(ru order by job_id) as running, array_agg(rv order by job_id) as review,
         array_agg(wa order by job_id) as waiting, array_agg(re order by job_id) as retrying,
         array_agg(fa order by job_id) as failed, array_agg(ca order by job_id) as cancelled,
         array_agg(st order by job_id) as started, array_agg(ib order by job_id) as item_bad
    into v_d
    from (select job_id, sum(d_total)::int as t, sum(d_final)::int as f, sum(d_running)::int as ru,
                 sum(d_review)::int as rv, sum(d_waiting)::int as wa, sum(d_retrying)::int as re,
                 sum(d_failed)::int as fa, sum(d_cancelled)::int as ca, sum(d_started)::int as st,
                 sum(d_item_bad)::int as ib
            from pg_temp.ballast_job_deltas group by job_id) x;
  delete from pg_temp.ballast_job_deltas;
  if v_d.job is not null then
    perform ballast_private.update_job_counters(v_d.job, v_d.total, v_d.final, v_d.running, v_d.review, v_d.waiting,
                                                v_d.retrying, v_d.failed, v_d.cancelled, v_d.started, v_d.item_bad);
  end if;
end
$fn$;

create function ballast_private.gate_history_append_only() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using errcode = 'BA009',
    message = format('ballast.gate_history is append-only: %s is not allowed', lower(tg_op)),
    hint = 'The history keeps every pause, resume and limit change; a new action is a new row.';
end
$fn$;

create function ballast_private.gate_steps(p_ids bigint[], p_now timestamp with time zone, p_held bigint[] DEFAULT '{}'::bigint[]) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_ids bigint[];
  v_keys jsonb;
  v_weights numeric[];
  b_pattern text[] := '{}';
  b_kind text[] := '{}';
  b_key text[] := '{}';
  b_amount numeric[] := '{}';
  b_t_ms float8[] := '{}';
  b_tau_ms float8[] := '{}';
  b_tat float8[] := '{}';
  b_next float8[] := '{}';
  b_tat0 float8[];
  b_refused int[];
  b_run bigint[] := '{}';
  m_cand int[];
  m_bucket int[];
  v_now_ms float8 := extract(epoch from p_now) * 1000;
  v_i int;
  v_j int;
  v_k int;
  v_end int;
  v_p int := 1;
  v_ok boolean;
  v_wait float8;
  v_why text;
  v_cost float8;
  v_admit bigint[] := '{}';
  v_park bigint[] := '{}';
  v_park_at float8[] := '{}';
  v_park_why text[] := '{}';
  v_park_bucket int[] := '{}';
begin
  -- Paused keys first: park every candidate holding one (until the latest pause among its keys ends).
  with cand as (
    select u.id, u.ord, ballast_private.step_keys(j.pipeline, coalesce(ps.name, s.name), j.tenant_id, d.def, j.input, s.item) as keys,
           ballast_private.step_weight(d.def, j.input, s.item) as weight
      from unnest(p_ids) with ordinality u(id, ord)
      join ballast_private.steps s on s.id = u.id
      join ballast_private.jobs j on j.id = s.job_id
      join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
      left join ballast_private.steps ps on ps.id = s.parent_step_id
      left join lateral (select e as def from jsonb_array_elements(p.definition -> 'steps') e
                          where e ->> 'name' = coalesce(ps.name, s.name) limit 1) d on true),
  held as (
    select c.id, pz.key, pz.until, pz.reason,
           row_number() over (partition by c.id order by coalesce(pz.until, 'infinity') desc) as n
      from cand c join ballast_private.pauses pz on pz.key = any(c.keys)
     where pz.until is null or pz.until > p_now),
  parked as (
    update ballast_private.steps s
       set status = 'retrying', updated_at = p_now,
           -- An open-ended pause parks for an hour at a time (a resume wakes the step at once).
           next_run_at = coalesce(h.until, p_now + interval '1 hour'),
           error = jsonb_build_object('class', 'paused', 'code', 'paused', 'retryable', true, 'attempt', s.attempts,
                                      'key', h.key,
                                      'message', format('key %s is paused %s (%s); the step waits', h.key,
                                                        coalesce('until ' || h.until, 'until resumed'), h.reason))
      from held h where h.n = 1 and s.id = h.id
    returning s.id)
  select array(select c.id from cand c where c.id not in (select id from parked) order by c.ord),
         coalesce(jsonb_agg(to_jsonb(c.keys) order by c.ord) filter (where c.id not in (select id from parked)), '[]'),
         array(select c.weight from cand c where c.id not in (select id from parked) order by c.ord)
    into v_ids, v_keys, v_weights
    from cand c;
  if cardinality(v_ids) = 0 or not exists (select 1 from ballast_private.limits) then
    return v_ids;
  end if;

  -- The (candidate, bucket) pairs, and the buckets in key order.
  with pairs as (
    select c.ord::int as cand, l.pattern, l.kind, k.key, l.amount, l.per, l.burst,
           dense_rank() over (order by l.pattern, l.kind, k.key)::int as bucket
      from jsonb_array_elements(v_keys) with ordinality c(keys, ord)
      cross join lateral jsonb_array_elements_text(c.keys) k(key)
      join ballast_private.limits l
        on l.pattern = k.key or (right(l.pattern, 1) = '*' and starts_with(k.key, left(l.pattern, -1)))),
  buckets as (
    select distinct on (p.bucket) p.* from pairs p order by p.bucket)
  select (select array_agg(p.cand order by p.cand, p.bucket) from pairs p),
         (select array_agg(p.bucket order by p.cand, p.bucket) from pairs p),
         array_agg(b.pattern order by b.bucket), array_agg(b.kind order by b.bucket), array_agg(b.key order by b.bucket),
         array_agg(b.amount::numeric order by b.bucket),
         array_agg(coalesce(extract(epoch from b.per) * 1000 / b.amount, 0)::float8 order by b.bucket),
         array_agg(coalesce(extract(epoch from b.per) * 1000 / b.amount * (b.burst - 1), 0)::float8 order by b.bucket)
    into m_cand, m_bucket, b_pattern, b_kind, b_key, b_amount, b_t_ms, b_tau_ms
    from buckets b;
  if m_cand is null then
    return v_ids;
  end if;
  -- Buckets created if missing, then locked, both in key order: two claims wanting the same buckets take them in
  -- the same order (one waits, neither deadlocks).
  insert into ballast_private.limit_buckets (pattern, kind, key)
  select x.pattern, x.kind, x.key from unnest(b_pattern, b_kind, b_key) with ordinality x(pattern, kind, key, n)
   order by x.n
  on conflict do nothing;
  perform 1 from ballast_private.limit_buckets b
   where (b.pattern, b.kind, b.key) in (select * from unnest(b_pattern, b_kind, b_key))
   order by b.pattern, b.kind, b.key
   for update;
  -- Admission time: now, after the locks (the claim records its attempts' started_at a moment later, so the spacing a
  -- rate limit makes is the spacing of started_at, whatever the lock wait was).
  v_now_ms := extract(epoch from ballast.now()) * 1000;
  -- Bucket state after the locks (a claim that waited for a lock reads what the one before it committed).
  select array_agg(coalesce(extract(epoch from b.tat) * 1000, 0)::float8 order by x.n),
         array_agg(case when x.kind = 'running' then
                     (select count(*) from ballast_private.steps r
                       where (r.status = 'running' or r.id = any(p_held)) and r.gate_keys is not null
                         and x.key = any(r.gate_keys)) else 0 end
                   order by x.n)
    into b_tat, b_run
    from unnest(b_pattern, b_kind, b_key) with ordinality x(pattern, kind, key, n)
    join ballast_private.limit_buckets b on (b.pattern, b.kind, b.key) = (x.pattern, x.kind, x.key);
  b_next := b_tat;
  b_tat0 := b_tat;
  b_refused := array_fill(0, array[cardinality(b_key)]);

  for v_i in 1 .. cardinality(v_ids) loop
    -- Does every limit of every key admit it? (The wait of a refused one: its longest, from the in-memory queue.)
    v_ok := true;
    v_wait := 0;
    v_why := null;
    v_j := v_p;
    while v_j <= cardinality(m_cand) and m_cand[v_j] = v_i loop
      v_k := m_bucket[v_j];
      if b_kind[v_k] = 'running' then
        if b_run[v_k] + 1 > b_amount[v_k] then
          -- Nothing says when a running step ends: look again in 250 ms, the ones refused later in this claim a
          -- little later each (250 ms more per `amount` of them, at most 2 s), so a backlog comes back in turns.
          v_ok := false;
          if v_wait < least(2000, 250 * (1 + floor(b_refused[v_k] / b_amount[v_k]))) then
            v_wait := least(2000, 250 * (1 + floor(b_refused[v_k] / b_amount[v_k])));
            v_why := 'concurrency_limited:' || v_k;
          end if;
          b_refused[v_k] := b_refused[v_k] + 1;
        end if;
      elsif b_tat[v_k] > v_now_ms + b_tau_ms[v_k] then
        v_ok := false;
        if greatest(b_tat[v_k], b_next[v_k]) - b_tau_ms[v_k] - v_now_ms > v_wait then
          v_wait := greatest(b_tat[v_k], b_next[v_k]) - b_tau_ms[v_k] - v_now_ms;
          v_why := 'rate_limited:' || v_k;
        end if;
      end if;
      v_j := v_j + 1;
    end loop;
    v_end := v_j - 1;
    -- Admitted: each of its buckets moves on. Refused: it consumes nothing, but the buckets that refused it move
    -- their in-memory queue on, so that the refused steps of one claim come back spread out, not all at once.
    for v_j in v_p .. v_end loop
      v_k := m_bucket[v_j];
      v_cost := case b_kind[v_k] when 'weight' then v_weights[v_i] when 'requests' then 1 else 0 end;
      if v_ok then
        if b_kind[v_k] = 'running' then
          b_run[v_k] := b_run[v_k] + 1;
        else
          b_tat[v_k] := greatest(b_tat[v_k], v_now_ms) + v_cost * b_t_ms[v_k];
          b_next[v_k] := greatest(b_next[v_k], b_tat[v_k]);
        end if;
      elsif b_kind[v_k] <> 'running' and b_tat[v_k] > v_now_ms + b_tau_ms[v_k] then
        b_next[v_k] := greatest(b_next[v_k], b_tat[v_k], v_now_ms) + v_cost * b_t_ms[v_k];
      end if;
    end loop;
    v_p := v_end + 1;
    if v_ok then
      v_admit := v_admit || v_ids[v_i];
    else
      v_park := v_park || v_ids[v_i];
      v_park_at := v_park_at || (v_now_ms + v_wait);
      v_park_why := v_park_why || split_part(v_why, ':', 1);
      v_park_bucket := v_park_bucket || split_part(v_why, ':', 2)::int;
    end if;
  end loop;

  update ballast_private.limit_buckets b set tat = to_timestamp(x.tat / 1000)
    from unnest(b_pattern, b_kind, b_key, b_tat, b_tat0) x(pattern, kind, key, tat, tat0)
   where (b.pattern, b.kind, b.key) = (x.pattern, x.kind, x.key) and x.tat <> x.tat0;
  if cardinality(v_park) > 0 then
    update ballast_private.steps s
       set status = 'retrying', updated_at = p_now, next_run_at = to_timestamp(x.at / 1000),
           error = jsonb_build_object('class', x.why, 'code', x.why, 'retryable', true, 'attempt', s.attempts,
                                      'key', b_key[x.bucket], 'limit', b_pattern[x.bucket] || ' (' || b_kind[x.bucket] || ')',
                                      'message', format('%s limit %s on key %s holds the step back; it waits until %s',
                                                        b_kind[x.bucket], b_pattern[x.bucket], b_key[x.bucket],
                                                        to_timestamp(x.at / 1000)))
      from unnest(v_park, v_park_at, v_park_why, v_park_bucket) x(id, at, why, bucket)
     where s.id = x.id;
  end if;
  if cardinality(v_admit) > 0 and 'running' = any(b_kind) then
    update ballast_private.steps s set gate_keys = array(select jsonb_array_elements_text(v_keys -> (x.n - 1)::int))
      from unnest(v_ids) with ordinality x(id, n)
     where s.id = x.id and x.id = any(v_admit);
  end if;
  return v_admit;
end
$fn$;

create function ballast_private.input_size_limit(p_pipeline ballast_private.pipelines) returns bigint
language sql immutable
as $fn$
  select coalesce((p_pipeline.definition ->> 'max_input_bytes')::bigint, 1048576)
$fn$;

create function ballast_private.input_size_problem(p_input jsonb, p_max_bytes bigint) returns text
language plpgsql immutable
as $fn$
declare
  v_size bigint;
begin
  if pg_column_size(p_input) > 8 * p_max_bytes then
    return format('is more than %s bytes of JSON; at most %s are accepted', p_max_bytes, p_max_bytes);
  end if;
  if jsonb_path_exists(p_input, 'strict $.** ? (@.type() == "number" && (@ > 1.7976931348623157e308 || @ < -1.7976931348623157e308 || (@ != 0 && @ < 1e-307 && @ > -1e-307)))') then
    return 'holds a number outside the range of a 64-bit float (beyond ±1.8e308, or nearer to 0 than ±1e-307, but not 0)';
  end if;
  v_size := octet_length(p_input::text);
  if v_size > p_max_bytes then
    return format('is %s bytes of JSON; at most %s are accepted', v_size, p_max_bytes);
  end if;
  return null;
end
$fn$;

create function ballast_private.insert_batch_jobs(p_tenant text, p_pipeline ballast_private.pipelines, p_inputs jsonb[], p_keys text[], p_hashes text[], p_priority integer, p_now timestamp with time zone, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_deadline timestamp with time zone DEFAULT NULL::timestamp with time zone, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(ids bigint[], inserted bigint[], job_ids bigint[], created boolean[])
language plpgsql volatile
as $fn$
#variable_conflict use_column
declare
  v_seq regclass := pg_get_serial_sequence('ballast_private.jobs', 'id')::regclass;
  v_missing integer;
  v_conflict integer;
  v_key text;
  v_job bigint;
begin
  -- Ids reserved in input order (the subquery is sorted before nextval runs: Postgres evaluates volatile output
  -- expressions after ORDER BY), for the inputs that may create a job: those without a key, and a key's first use.
  select array_agg(r.id order by r.n) into ids
    from (select f.n, case when f.first then nextval(v_seq) end as id
            from (select u.n, u.key is null or u.n = min(u.n) over (partition by u.key) as first
                    from unnest(p_keys) with ordinality u(key, n)) f
           order by f.n) r;

  -- One INSERT for every job, in key order (see Locks above). A key stored before (or by a concurrent transaction,
  -- which this waits for) inserts nothing.
  with ins as (
    insert into ballast_private.jobs as j (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                           input, priority, created_at, updated_at, status, run_at, n_total,
                                           deadline, expires_at)
    overriding system value
    select ids[u.n], p_tenant, p_pipeline.name, p_pipeline.version, u.key, p_hashes[u.n], u.input, p_priority, p_now, p_now,
           case when p_run_at is not null then 'scheduled' else 'queued' end, p_run_at,
           jsonb_array_length(p_pipeline.definition -> 'steps'), p_deadline, p_expires_at
      from unnest(p_inputs, p_keys) with ordinality u(input, key, n)
     where ids[u.n] is not null
     order by u.key collate "C" nulls last, u.n
    on conflict (tenant_id, idempotency_key) do nothing
    returning j.id)
  select coalesce(array_agg(ins.id), '{}') into inserted from ins;

  -- One statement (a new snapshot: it sees what a concurrent transaction committed while the insert waited) reads
  -- the jobs of the keys that inserted nothing, and decides each input's job and created flag.
  with u as (select u.n, u.key, u.hash, u.id from unnest(p_keys, p_hashes, ids) with ordinality u(key, hash, id, n)),
       mine as (select i.id from unnest(inserted) i(id)),
       firsts as (select u.key, u.id, m.id is not null as inserted
                    from u left join mine m on m.id = u.id
                   where u.key is not null and u.id is not null),
       existing as (select j.idempotency_key as key, j.id, j.request_hash
                      from ballast_private.jobs j
                     where j.tenant_id = p_tenant
                       and j.idempotency_key in (select f.key from firsts f where not f.inserted)),
       r as (select u.n,
                    case when u.key is null then u.id when f.inserted then f.id else e.id end as job,
                    u.key is null or (f.inserted and u.id is not null) as created,
                    u.key is not null and not f.inserted and e.request_hash <> u.hash as conflict
               from u left join firsts f on f.key = u.key left join existing e on e.key = u.key)
  select array_agg(r.job order by r.n), array_agg(r.created order by r.n),
         min(r.n) filter (where r.job is null), min(r.n) filter (where r.conflict)
    into job_ids, created, v_missing, v_conflict
    from r;
  if v_missing is not null then
    raise exception using errcode = '40001',
      message = format('inputs[%s]: a concurrent submission with idempotency key %L is not visible yet',
                       v_missing, p_keys[v_missing]),
      hint = 'Retry the transaction with the same keys; it will return those jobs.';
  end if;
  if v_conflict is not null then
    v_key := p_keys[v_conflict];
    v_job := job_ids[v_conflict];
    raise exception using errcode = 'BA003',
      message = format('inputs[%s]: idempotency key %L was already used by job %s for a different request',
                       v_conflict, v_key, v_job),
      detail = jsonb_build_object('job_id', v_job, 'idempotency_key', v_key, 'ord', v_conflict)::text,
      hint = 'Use a new key for a new request, or resend exactly the same pipeline and input to get job '
             || v_job || ' back.';
  end if;
  return next;
end
$fn$;

create function ballast_private.insert_batch_steps(p_pipeline ballast_private.pipelines, p_tenant text, p_ids bigint[], p_inputs jsonb[], p_inserted bigint[], p_priority integer, p_now timestamp with time zone, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns void
language plpgsql volatile
as $fn$
begin
  perform set_config('ballast.steps_counted', 'on', true);
  -- One INSERT for every step of every new job: the definition is read once, then repeated per job.
  with defs as materialized (
         select d.k, d.s ->> 'name' as name, jsonb_array_length(d.s -> 'depends_on') = 0 as root,
                array(select jsonb_array_elements_text(d.s -> 'depends_on')) as depends_on,
                jsonb_array_length(d.s -> 'depends_on') as deps,
                (d.s ->> 'max_attempts')::int as max_attempts, (d.s ->> 'backoff_base_ms')::int as backoff_base_ms,
                (d.s ->> 'backoff_cap_ms')::int as backoff_cap_ms, (d.s ->> 'timeout_ms')::int as timeout_ms,
                case when jsonb_typeof(d.s -> 'concurrency') = 'object' then d.s -> 'concurrency' end as conc
           from jsonb_array_elements(p_pipeline.definition -> 'steps') with ordinality d(s, k)),
       new_jobs as (
         select u.id, u.input, u.n
           from unnest(p_ids, p_inputs) with ordinality u(id, input, n)
           join unnest(p_inserted) i(id) on i.id = u.id)
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts,
                                     backoff_base_ms, backoff_cap_ms, timeout_ms, concurrency_key,
                                     concurrency_limit, queued_at, created_at, updated_at, task, priority, next_run_at)
  select j.id, d.name,
         case when not d.root then 'pending' when p_run_at is not null then 'scheduled' else 'queued' end,
         d.depends_on, d.deps,
         d.max_attempts, d.backoff_base_ms, d.backoff_cap_ms, d.timeout_ms,
         case when d.conc is not null then
           (d.conc ->> 'group') || '/' || ballast_private.concurrency_value(d.conc ->> 'key', p_tenant, j.input) end,
         (d.conc ->> 'limit')::int,
         case when d.root and p_run_at is null then p_now end, p_now, p_now,
         ballast.task_identifier(p_pipeline.name, p_pipeline.version), p_priority,
         case when d.root then p_run_at end
    from new_jobs j cross join defs d
   order by j.n, d.k;
  perform set_config('ballast.steps_counted', 'off', true);
end
$fn$;

create function ballast_private.insert_job() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_tenant text := coalesce(new.tenant_id, 'default');
  v_input jsonb := coalesce(new.input, '{}'::jsonb);
  v_priority integer := coalesce(new.priority, 0);
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_prior record;
  v_id bigint;
  v_now timestamptz := ballast.now();
  v_run_at timestamptz;
begin
  if not ballast_private.caller_unrestricted() then
    v_tenant := ballast_private.caller_tenant();
    if v_tenant is null then
      raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot submit jobs', ballast_private.caller_role()),
        hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
    end if;
    if new.tenant_id is not null and new.tenant_id not in ('default', v_tenant) then
      raise exception using errcode = 'BA014', message = format('tenant %s cannot submit jobs for tenant %s', v_tenant, new.tenant_id),
        hint = 'Leave the tenant out: jobs are submitted for your own tenant.';
    end if;
    perform set_config('ballast.actor', ballast_private.caller_actor(null), true);
  end if;
  if coalesce(current_setting('ballast.actor', true), '') = '' then
    perform set_config('ballast.actor', 'sql_insert', true);
  end if;

  v_pipeline := ballast_private.checked_pipeline(new.pipeline, v_input, new.idempotency_key, v_tenant, v_priority,
                                                 new.pipeline_version);
  v_hash := ballast_private.request_hash(new.pipeline, new.pipeline_version, v_input);
  if new.run_at is not null then
    v_run_at := ballast_private.checked_run_at(new.run_at, null, v_now);
  end if;
  if new.deadline is not null or new.expires_at is not null then
    perform ballast_private.check_time_limits(v_run_at, new.deadline, new.expires_at, v_now);
  end if;

  if not ballast_private.job_inserts_ready() then
    create temporary table ballast_job_inserts (
      id bigint primary key, tenant_id text not null, pipeline text not null, pipeline_version integer not null,
      idempotency_key text, request_hash text not null, input jsonb not null, priority integer not null,
      created_at timestamptz not null, steps integer not null, run_at timestamptz, deadline timestamptz,
      expires_at timestamptz) on commit delete rows;
  end if;

  if new.idempotency_key is not null then
    perform ballast_private.lock_idempotency_key(v_tenant, new.idempotency_key);
    -- An earlier row of this statement with the key: the same job (it is noted, not stored yet).
    select i.id, i.request_hash into v_prior from pg_temp.ballast_job_inserts i
     where i.tenant_id = v_tenant and i.idempotency_key = new.idempotency_key;
    if found then
      if v_prior.request_hash <> v_hash then
        perform ballast_private.raise_key_conflict(new.idempotency_key, v_prior.id);
      end if;
      v_id := v_prior.id;
    else
      -- A stored job with the key (committed: the lock above waited for any submission of it still running).
      select j.id, j.request_hash into v_prior from ballast_private.jobs j
       where j.tenant_id = v_tenant and j.idempotency_key = new.idempotency_key;
      if found then
        if v_prior.request_hash <> v_hash then
          perform ballast_private.raise_key_conflict(new.idempotency_key, v_prior.id);
        end if;
        select v.* into new from ballast.jobs v where v.id = v_prior.id;
        return new;
      end if;
    end if;
  end if;

  if v_id is null then
    v_id := nextval('ballast_private.jobs_id_seq');
    insert into pg_temp.ballast_job_inserts (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                             input, priority, created_at, steps, run_at, deadline, expires_at)
    values (v_id, v_tenant, v_pipeline.name, v_pipeline.version, new.idempotency_key, v_hash, v_input, v_priority,
            v_now, jsonb_array_length(v_pipeline.definition -> 'steps'), v_run_at, new.deadline, new.expires_at);
  end if;
  select i.id, i.tenant_id, i.pipeline, i.pipeline_version, i.idempotency_key, i.input,
         case when i.run_at is not null then 'scheduled' else 'queued' end, i.priority,
         null::jsonb, null::jsonb, i.created_at, null::timestamptz, null::timestamptz, i.created_at, 0, 0, 0,
         null::timestamptz, i.run_at, i.deadline, i.expires_at
    into new.id, new.tenant_id, new.pipeline, new.pipeline_version, new.idempotency_key, new.input, new.status,
         new.priority, new.result, new.error, new.created_at, new.started_at, new.finished_at, new.updated_at,
         new.input_tokens, new.output_tokens, new.cost_usd, new.pruned_at, new.run_at, new.deadline, new.expires_at
    from pg_temp.ballast_job_inserts i where i.id = v_id;
  return new;
end
$fn$;

create function ballast_private.insert_jobs_flush() returns trigger
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_noted integer;
  v_inserted integer;
  v_lost record;
begin
  if not ballast_private.job_inserts_ready() then
    return null;
  end if;
  select count(*) into v_noted from pg_temp.ballast_job_inserts;
  if v_noted = 0 then
    return null;
  end if;
  with ins as (
    insert into ballast_private.jobs as j (id, tenant_id, pipeline, pipeline_version, idempotency_key, request_hash,
                                           input, priority, created_at, updated_at, n_total, status, run_at,
                                           deadline, expires_at)
    overriding system value
    select i.id, i.tenant_id, i.pipeline, i.pipeline_version, i.idempotency_key, i.request_hash, i.input, i.priority,
           i.created_at, i.created_at, i.steps, case when i.run_at is not null then 'scheduled' else 'queued' end,
           i.run_at, i.deadline, i.expires_at
      from pg_temp.ballast_job_inserts i
     order by i.id
    on conflict (tenant_id, idempotency_key) do nothing
    returning j.id)
  select count(*) into v_inserted from ins;
  if v_inserted < v_noted then
    select i.id, i.idempotency_key into v_lost from pg_temp.ballast_job_inserts i
     where not exists (select 1 from ballast_private.jobs j where j.id = i.id) order by i.id limit 1;
    raise exception using errcode = '40001',
      message = format('a concurrent submission took idempotency key %L while this INSERT ran', v_lost.idempotency_key),
      hint = 'Retry the statement with the same keys; it will return that job.';
  end if;

  perform set_config('ballast.steps_counted', 'on', true);
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, task, priority, next_run_at)
  select s.*
    from pg_temp.ballast_job_inserts i
    join ballast_private.pipelines p on p.name = i.pipeline and p.version = i.pipeline_version
   cross join lateral ballast_private.new_steps(i.id, p.name, p.version, p.definition, i.tenant_id, i.input,
                                                i.priority, i.created_at, i.run_at) s
   order by i.id;
  perform set_config('ballast.steps_counted', 'off', true);
  delete from pg_temp.ballast_job_inserts;
  return null;
end
$fn$;

create function ballast_private.job_inserts_ready() returns boolean
language plpgsql volatile
as $fn$
declare
  v_owner oid;
begin
  select c.relowner into v_owner from pg_class c where c.oid = to_regclass('pg_temp.ballast_job_inserts');
  if not found then
    return false;
  end if;
  if v_owner is distinct from (select r.oid from pg_roles r where r.rolname = current_user) then
    raise exception using errcode = '42501',
      message = 'the temporary table ballast_job_inserts of this session was not created by ballast',
      hint = 'Drop it (drop table pg_temp.ballast_job_inserts): ballast uses that name while rows are inserted into ballast.jobs.';
  end if;
  return true;
end
$fn$;

create function ballast_private.job_status_guard() returns trigger
language plpgsql volatile
as $fn$
declare
  v_via_replay boolean;
  v_allowed text;
begin
  select via_replay into v_via_replay from ballast_private.job_transitions
   where from_status = old.status and to_status = new.status;
  if not found or (v_via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on') then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)')
      into v_allowed
      from ballast_private.job_transitions where from_status = old.status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('job %s cannot go from %s to %s', old.id, old.status, new.status),
      hint = format('From %s a job may go to: %s%s.', old.status, v_allowed,
                    case when v_via_replay then '; running it again takes ballast.replay_job' else '' end);
  end if;
  new.updated_at := ballast.now();
  return new;
end
$fn$;

create function ballast_private.jobs_changed() returns trigger
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

create function ballast_private.jobs_deleted() returns trigger
language plpgsql volatile
as $fn$
begin
  if exists (select 1 from old_t o join ballast_private.events e on e.job_id = o.id) then
    raise exception using errcode = 'BA009', message = 'a job with audit events cannot be deleted',
      hint = 'The audit trail keeps every job it mentions; prune payloads with ballast.prune_history instead.';
  end if;
  return null;
end
$fn$;

create function ballast_private.jobs_inserted() returns trigger
language plpgsql volatile
as $fn$
begin
  insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
  select n.id, 'job_submitted', n.status, coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
         nullif(current_setting('ballast.reason', true), ''),
         jsonb_build_object('pipeline', n.pipeline, 'version', n.pipeline_version, 'tenant_id', n.tenant_id,
                            'priority', n.priority),
         ballast.now()
    from new_t n order by n.id;
  return null;
end
$fn$;

create function ballast_private.lock_idempotency_key(p_tenant_id text, p_idempotency_key text) returns void
language sql volatile
as $fn$
  select pg_advisory_xact_lock(hashtextextended('ballast.key/' || p_tenant_id || '/' || p_idempotency_key, 0))
   where p_idempotency_key is not null
$fn$;

create function ballast_private.mark_replayed_calls(p_job_id bigint, p_step_ids bigint[], p_fresh boolean) returns void
language plpgsql volatile
as $fn$
declare
  v_last bigint := coalesce((select max(c.id) from ballast_private.model_calls c), 0);
begin
  insert into ballast_private.step_call_marks as m (step_id, replayed_through, fresh_through)
  select s.id, v_last, case when p_fresh then v_last end
    from unnest(p_step_ids) s(id)
   where p_fresh or exists (select 1 from ballast_private.model_calls c where c.job_id = p_job_id and c.step_id = s.id)
  on conflict (step_id) do update
    set replayed_through = excluded.replayed_through, fresh_through = coalesce(excluded.fresh_through, m.fresh_through);
end
$fn$;

create function ballast_private.new_eval_run(p_job_id bigint, p_params jsonb, p_tenant text, p_actor text) returns ballast_private.eval_runs
language plpgsql volatile
as $fn$
declare
  v_ds ballast_private.eval_datasets;
  v_version integer;
  v_pipeline ballast_private.pipelines;
  v_step jsonb;
  v_prompt text;
  v_prompt_version integer;
  v_scorers jsonb := coalesce(p_params -> 'scorers', '[{"kind": "exact"}]');
  v_run ballast_private.eval_runs;
begin
  v_ds := ballast_private.eval_dataset(p_params ->> 'dataset');
  v_version := coalesce((p_params ->> 'dataset_version')::integer, v_ds.version);
  if v_version < 1 or v_version > v_ds.version then
    perform ballast_private.bad_argument('dataset_version', format('%s is not a version of dataset %s (1 to %s)', v_version, v_ds.name, v_ds.version),
      case when v_ds.version = 0 then 'Add cases first (ballast.add_eval_cases).' else 'Leave it out for the current version.' end);
  end if;
  select * into v_pipeline from ballast_private.pipelines p
   where p.name = p_params ->> 'pipeline' and (p_params ->> 'pipeline_version' is null or p.version = (p_params ->> 'pipeline_version')::integer)
   order by p.version desc limit 1;
  if not found then
    raise exception using errcode = 'BA004', message = format('pipeline %s%s is not registered', p_params ->> 'pipeline',
      coalesce('@' || (p_params ->> 'pipeline_version'), '')), hint = 'Start a worker that defines it (ballast.pipelines lists the registered ones).';
  end if;
  select d into v_step from jsonb_array_elements(v_pipeline.definition -> 'steps') d where d ->> 'name' = p_params ->> 'step';
  if v_step is null then
    perform ballast_private.bad_argument('step', format('%L is not a step of %s@%s', p_params ->> 'step', v_pipeline.name, v_pipeline.version),
      format('Use one of: %s.', (select string_agg(d ->> 'name', ', ') from jsonb_array_elements(v_pipeline.definition -> 'steps') d)));
  end if;
  if jsonb_typeof(v_step -> 'model') is distinct from 'object' then
    perform ballast_private.bad_argument('step', format('%s of %s@%s is not a model step', v_step ->> 'name', v_pipeline.name, v_pipeline.version),
      'Evaluate a step defined with .modelStep(...).');
  end if;
  v_prompt := split_part(v_step -> 'model' ->> 'prompt', '@', 1);
  -- The step names name@version, or name@label (0041): a label runs the version it points at now (its stable arm).
  v_prompt_version := coalesce((p_params ->> 'prompt_version')::integer,
    case when split_part(v_step -> 'model' ->> 'prompt', '@', 2) ~ '^[0-9]+$' then split_part(v_step -> 'model' ->> 'prompt', '@', 2)::integer
         else (select l.version from ballast_private.prompt_labels l
                where l.prompt_name = v_prompt and l.label = split_part(v_step -> 'model' ->> 'prompt', '@', 2)) end);
  if v_prompt_version is null then
    perform ballast_private.bad_argument('prompt_version', format('step %s names the prompt label %s, which points at no version',
      v_step ->> 'name', v_step -> 'model' ->> 'prompt'), 'Set the label (ballast.set_prompt_label) or pass prompt_version.');
  end if;
  if p_params ? 'prompt_version' and not exists (select 1 from ballast_private.prompts p where p.name = v_prompt and p.version = v_prompt_version) then
    perform ballast_private.bad_argument('prompt_version', format('prompt %s@%s is not in ballast.prompts', v_prompt, v_prompt_version),
      format('Register it first (ballast.register_prompt(%L, %s, ''{"system": ..., "user": ...}'')), or use a version listed in ballast.prompts.', v_prompt, v_prompt_version));
  end if;
  if p_params ? 'model' and coalesce(p_params ->> 'model', '') !~ '^[a-z][a-z0-9_-]*:.+$' then
    perform ballast_private.bad_argument('model', format('%L is not provider:model', p_params ->> 'model'), 'e.g. openai:gpt-4o-mini or local:wink; leave it out for the step''s own models.');
  end if;
  perform ballast_private.check_scorers(v_scorers, 'scorers');
  if p_params ? 'threshold' and not ((p_params ->> 'threshold')::numeric between 0 and 1) then
    perform ballast_private.bad_argument('threshold', format('%s is not from 0 to 1', p_params ->> 'threshold'), 'The score a case needs to pass, e.g. 0.5 (the default).');
  end if;
  insert into ballast_private.eval_runs (dataset, dataset_version, pipeline, pipeline_version, step, prompt_name, prompt_version,
                                         model, scorers, threshold, label, job_id, tenant_id, created_by)
  values (v_ds.name, v_version, v_pipeline.name, v_pipeline.version, v_step ->> 'name', v_prompt, v_prompt_version,
          p_params ->> 'model', v_scorers, coalesce((p_params ->> 'threshold')::numeric, 0.5), p_params ->> 'label',
          p_job_id, p_tenant, p_actor)
  returning * into v_run;
  return v_run;
end
$fn$;

create function ballast_private.new_steps(p_job_id bigint, p_pipeline text, p_pipeline_version integer, p_definition jsonb, p_tenant_id text, p_input jsonb, p_priority integer, p_now timestamp with time zone, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(job_id bigint, name text, status text, depends_on text[], deps_remaining integer, max_attempts integer, backoff_base_ms integer, backoff_cap_ms integer, timeout_ms integer, concurrency_key text, concurrency_limit integer, queued_at timestamp with time zone, created_at timestamp with time zone, updated_at timestamp with time zone, task text, priority smallint, next_run_at timestamp with time zone)
language sql stable
as $fn$
  select p_job_id,
         s ->> 'name',
         case when jsonb_array_length(s -> 'depends_on') > 0 then 'pending'
              when p_run_at is not null then 'scheduled' else 'queued' end,
         array(select jsonb_array_elements_text(s -> 'depends_on')),
         jsonb_array_length(s -> 'depends_on'),
         (s ->> 'max_attempts')::int,
         (s ->> 'backoff_base_ms')::int,
         (s ->> 'backoff_cap_ms')::int,
         (s ->> 'timeout_ms')::int,
         case when jsonb_typeof(s -> 'concurrency') = 'object' then
           (s -> 'concurrency' ->> 'group') || '/'
           || ballast_private.concurrency_value(s -> 'concurrency' ->> 'key', p_tenant_id, p_input) end,
         case when jsonb_typeof(s -> 'concurrency') = 'object' then (s -> 'concurrency' ->> 'limit')::int end,
         case when jsonb_array_length(s -> 'depends_on') = 0 and p_run_at is null then p_now end,
         p_now, p_now, ballast.task_identifier(p_pipeline, p_pipeline_version), p_priority::smallint,
         case when jsonb_array_length(s -> 'depends_on') = 0 then p_run_at end
    from jsonb_array_elements(p_definition -> 'steps') with ordinality as d(s, k)
   order by d.k
$fn$;

create function ballast_private.notify_events() returns trigger
language plpgsql volatile
as $fn$
declare
  v_min bigint;
  v_max bigint;
  v_count bigint;
  v_payload text;
begin
  select min(e.id), max(e.id), count(*) into v_min, v_max, v_count from new_events e;
  if v_count = 0 then
    return null;
  end if;
  -- Inside a worker's batch (0013's settle_and_claim sets ballast.collect_events), the ids are collected and the
  -- batch sends one notification at its end (ballast_private.flush_events_notice, 0013): one per transaction, not one per
  -- statement.
  if current_setting('ballast.collect_events', true) = 'on' then
    perform set_config('ballast.batch_event_ids',
      coalesce(nullif(current_setting('ballast.batch_event_ids', true), '') || ',', '')
        || (select string_agg(e.id::text, ',' order by e.id) from new_events e), true);
    return null;
  end if;
  if v_count * (length(v_max::text) + 1) + 10 <= 7500 then
    select '{"ids":[' || string_agg(e.id::text, ',' order by e.id) || ']}' into v_payload from new_events e;
  else
    v_payload := json_build_object('min_id', v_min, 'max_id', v_max, 'count', v_count)::text;
  end if;
  perform pg_notify('ballast_events', v_payload);
  return null;
end
$fn$;

create function ballast_private.output_contract(p_step ballast_private.steps) returns jsonb
language sql stable
as $fn$
  select d -> 'output_schema'
    from ballast_private.jobs j
    join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
    cross join lateral jsonb_array_elements(p.definition -> 'steps') d
   where j.id = p_step.job_id
     and d ->> 'name' = coalesce((select s.name from ballast_private.steps s where s.id = p_step.parent_step_id), p_step.name)
$fn$;

create function ballast_private.park_gated_steps(p_ids bigint[], p_now timestamp with time zone) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_left bigint[];
begin
  with gated as (
    select s.id, g.until, g.class, g.message
      from ballast_private.steps s
      join ballast_private.jobs j on j.id = s.job_id
      join ballast_private.pipelines p on p.name = j.pipeline and p.version = j.pipeline_version
      cross join lateral (select e -> 'model' as model from jsonb_array_elements(p.definition -> 'steps') e
                           where e ->> 'name' = s.name and e ? 'model') d
      cross join lateral ballast_private.claim_gate(j.tenant_id, d.model, p_now) g
     where s.id = any(p_ids) and s.parent_step_id is null),
  parked as (
    update ballast_private.steps s
       set status = 'retrying', next_run_at = g.until, updated_at = p_now,
           error = jsonb_build_object('class', g.class, 'code', g.class, 'message', g.message, 'retryable', true,
                                      'attempt', s.attempts)
      from gated g where s.id = g.id
    returning s.id)
  select array(select i from unnest(p_ids) i where i not in (select id from parked)) into v_left;
  return v_left;
end
$fn$;

create function ballast_private.pick_grouped_steps(p_tasks text[], p_n integer) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_ids bigint[] := '{}';
  v_group record;
  v_running int;
  v_free int;
begin
  for v_group in
    select q.concurrency_key, max(q.concurrency_limit) as lim
      from (select g.concurrency_key, g.concurrency_limit from ballast_private.steps g
             where g.status = 'queued' and g.concurrency_key is not null and g.task = any(p_tasks)
             order by g.concurrency_key, g.id limit 500) q
     group by q.concurrency_key
  loop
    exit when cardinality(v_ids) >= p_n;
    perform pg_advisory_xact_lock(hashtextextended(v_group.concurrency_key, 0));
    select count(*) into v_running from ballast_private.steps s
     where s.concurrency_key = v_group.concurrency_key and s.status = 'running';
    v_free := least(v_group.lim - v_running, p_n - cardinality(v_ids));
    continue when v_free <= 0;
    v_ids := v_ids || array(
      select s.id from ballast_private.steps s
       where s.concurrency_key = v_group.concurrency_key and s.status = 'queued' and s.task = any(p_tasks)
       order by s.priority, (s.attempts = 0), s.id limit v_free
       for update skip locked);
  end loop;
  return v_ids;
end
$fn$;

create function ballast_private.prompt_bucket(p_job_id bigint, p_name text) returns double precision
language sql immutable parallel safe
as $fn$
  select ('x' || substr(encode(sha256(convert_to(p_job_id::text || ':' || p_name, 'UTF8')), 'hex'), 1, 8))::bit(32)::bigint
         / 4294967296.0::float8
$fn$;

create function ballast_private.prompt_label_history_append_only() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using errcode = 'BA009',
    message = format('ballast.prompt_label_history is append-only: %s is not allowed', lower(tg_op)),
    hint = 'The history keeps every label and canary move; a new move is a new row.';
end
$fn$;

create function ballast_private.pruned_job_guard() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA001',
    message = format('job %s cannot go from %s to %s: its history was pruned at %s (input and outputs are gone)',
                     old.id, old.status, new.status, old.pruned_at),
    hint = 'Submit a new job with the input instead; retention (BALLAST_RETENTION) prunes finished jobs after its period.';
end
$fn$;

create function ballast_private.queue_dependants(p_job_id bigint, p_step_name text, p_now timestamp with time zone, p_wake_first boolean DEFAULT true) returns bigint[]
language plpgsql volatile
as $fn$
declare
  v_queued bigint[];
  v_id bigint;
begin
  with d as (
    update ballast_private.steps s
       set deps_remaining = s.deps_remaining - 1,
           status = case when s.deps_remaining = 1 then 'queued' else s.status end,
           queued_at = case when s.deps_remaining = 1 then p_now else s.queued_at end
     where s.job_id = p_job_id and p_step_name = any(s.depends_on) and s.status = 'pending'
    returning s.id, s.status)
  select coalesce(array_agg(d.id order by d.id) filter (where d.status = 'queued'), '{}') into v_queued from d;
  foreach v_id in array v_queued loop
    -- Without p_wake_first the caller runs the first queued dependant itself (eager hand-off) or wakes it.
    continue when not p_wake_first and v_id = v_queued[1];
    perform ballast_private.wake_step(v_id);
  end loop;
  return v_queued;
end
$fn$;

create function ballast_private.raise_key_conflict(p_idempotency_key text, p_job_id bigint) returns void
language plpgsql volatile
as $fn$
begin
  raise exception using errcode = 'BA003',
    message = format('idempotency key %L was already used by job %s for a different request', p_idempotency_key, p_job_id),
    detail = jsonb_build_object('job_id', p_job_id, 'idempotency_key', p_idempotency_key)::text,
    hint = 'Use a new key for a new request, or resend exactly the same pipeline and input to get job '
           || p_job_id || ' back.';
end
$fn$;

create function ballast_private.rate_delta_ci(p_base_k bigint, p_base_n bigint, p_candidate_k bigint, p_candidate_n bigint) returns TABLE(ci_low double precision, ci_high double precision)
language sql immutable parallel safe
as $fn$
  with w as (
    select x.arm, x.p,
           (x.p + z * z / (2 * x.n) - z * sqrt(x.p * (1 - x.p) / x.n + z * z / (4 * x.n * x.n))) / (1 + z * z / x.n) as l,
           (x.p + z * z / (2 * x.n) + z * sqrt(x.p * (1 - x.p) / x.n + z * z / (4 * x.n * x.n))) / (1 + z * z / x.n) as u
      from (values ('b', p_base_k::float8 / nullif(p_base_n, 0), p_base_n::float8),
                   ('k', p_candidate_k::float8 / nullif(p_candidate_n, 0), p_candidate_n::float8)) x(arm, p, n),
           (values (1.959963984540054::float8)) c(z)),
  b as (select * from w where arm = 'b'), k as (select * from w where arm = 'k')
  select k.p - b.p - sqrt(power(k.p - k.l, 2) + power(b.u - b.p, 2)),
         k.p - b.p + sqrt(power(k.u - k.p, 2) + power(b.p - b.l, 2))
    from b, k
   where p_base_n > 0 and p_candidate_n > 0
$fn$;

create function ballast_private.reap_dead_workers(p_dead_after_ms integer, p_lost_after_ms integer, p_now timestamp with time zone, p_trusted_from timestamp with time zone, p_locks_trusted boolean, p_batch integer) returns text[]
language plpgsql volatile
as $fn$
declare
  v_dead text[];
  v_pools text[];
begin
  with candidates as (
    select w.id from ballast_private.workers w
     where w.stopped_at is null
       and (greatest(w.heartbeat_at, p_trusted_from) < p_now - make_interval(secs => p_dead_after_ms / 1000.0)
            or (p_locks_trusted
                and w.heartbeat_at < p_now - make_interval(secs => p_lost_after_ms / 1000.0)
                and not exists (
                  select 1 from pg_locks l
                   where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_database where datname = current_database())
                     and l.classid::bigint = 1650551916 and l.objid::bigint = (hashtext(w.id)::bigint & 4294967295)
                     and l.objsubid = 2)))
     order by w.heartbeat_at
     limit p_batch
       for update skip locked),
  dead as (
    update ballast_private.workers w set stopped_at = p_now
      from candidates c
     where w.id = c.id
    returning w.id, w.pool_id)
  select coalesce(array_agg(id), '{}'), array_remove(array_agg(pool_id), null) into v_dead, v_pools from dead;
  if cardinality(v_pools) > 0 then
    perform graphile_worker.force_unlock_workers(v_pools);
  end if;

  return v_dead;
end
$fn$;

create function ballast_private.reclaim_lost_attempts(p_now timestamp with time zone, p_trusted_from timestamp with time zone, p_batch integer) returns TABLE(reclaimed_ids bigint[], touched_jobs bigint[])
language plpgsql volatile
as $fn$
declare
  v_attempt record;
  v_step ballast_private.steps;
  v_error jsonb;
begin
  reclaimed_ids := '{}';
  touched_jobs := '{}';
  for v_attempt in
    select x.id, x.step_id, x.worker_id,
           case when x.past_timeout then 'timed_out' else 'crashed' end as outcome,
           case when x.worker_stopped then format('worker %s stopped while running it (process gone or stopped heartbeating)', x.worker_id)
                when x.past_timeout then format('ran past its timeout of %s ms and its worker did not stop it', x.timeout_ms)
                else format('lease expired at %s without a heartbeat from worker %s', x.lease_expires_at, x.worker_id) end as why
      from (
        select a.id, a.step_id, a.worker_id, a.lease_expires_at, s.timeout_ms,
               w.stopped_at is not null as worker_stopped,
               (s.timeout_ms is not null
                and greatest(a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0), p_trusted_from) < p_now) as past_timeout
          from ballast_private.attempts a
          join ballast_private.steps s on s.id = a.step_id
          left join ballast_private.workers w on w.id = a.worker_id
         where a.outcome = 'running'
           and (w.stopped_at is not null or a.worker_id is null
                or greatest(a.lease_expires_at, p_trusted_from) < p_now
                or (s.timeout_ms is not null
                    and greatest(a.started_at + make_interval(secs => (s.timeout_ms + 5000) / 1000.0), p_trusted_from) < p_now))
         order by a.step_id
         limit p_batch) x
     order by x.step_id
  loop
    select * into v_step from ballast_private.steps where id = v_attempt.step_id for update skip locked;
    continue when not found;
    continue when v_step.status <> 'running' or v_step.attempts <> (select number from ballast_private.attempts where id = v_attempt.id);
    update ballast_private.attempts
       set outcome = v_attempt.outcome, finished_at = p_now,
           error_class = case when v_attempt.outcome = 'timed_out' then 'timeout' else 'worker_lost' end,
           error_message = v_attempt.why, error_retryable = true
     where id = v_attempt.id and outcome = 'running';
    v_error := jsonb_build_object('class', case when v_attempt.outcome = 'timed_out' then 'timeout' else 'worker_lost' end,
                                  'message', v_attempt.why, 'retryable', true, 'attempt', v_step.attempts);
    perform ballast_private.settle_failure(v_step, v_error, true, null, p_now);
    reclaimed_ids := reclaimed_ids || v_attempt.id;
    touched_jobs := touched_jobs || v_step.job_id;
  end loop;

  return next;
end
$fn$;

create function ballast_private.record_eval_result(p_run_id bigint, p_case_id bigint, p_attempt_id bigint, p_result jsonb) returns void
language plpgsql volatile
as $fn$
declare
  v_prompt text;
begin
  select r.prompt_name into v_prompt from ballast_private.eval_runs r where r.id = p_run_id;
  if p_result ->> 'contract_outcome' is not null then
    perform ballast.record_contract_outcome(p_attempt_id, p_result ->> 'contract_outcome', coalesce(p_result -> 'contract_detail', '{}'));
  end if;
  insert into ballast_private.eval_results as e (run_id, case_id, output, scores, score, passed, cost_usd, judge_cost_usd,
                                                 latency_ms, contract_outcome, error, model_call_ids, attempt_id)
  select p_run_id, p_case_id, p_result -> 'output', coalesce(p_result -> 'scores', '{}'), (p_result ->> 'score')::numeric,
         (p_result ->> 'passed')::boolean,
         coalesce(sum(m.cost_usd + coalesce(m.cost_saved_usd, 0)) filter (where m.prompt_name = v_prompt), 0),
         coalesce(sum(m.cost_usd + coalesce(m.cost_saved_usd, 0)) filter (where m.prompt_name is distinct from v_prompt), 0),
         coalesce(sum(coalesce(o.latency_ms, m.latency_ms)) filter (where m.prompt_name = v_prompt), 0)::integer,
         p_result ->> 'contract_outcome', p_result -> 'error',
         coalesce(array_agg(m.id order by m.id) filter (where m.id is not null), '{}'), p_attempt_id
    from (select 1) one
    left join ballast_private.model_calls m on m.attempt_id = p_attempt_id
    left join ballast_private.model_calls o on o.id = m.reused_from
  on conflict (run_id, case_id) do update
     set output = excluded.output, scores = excluded.scores, score = excluded.score, passed = excluded.passed,
         cost_usd = excluded.cost_usd, judge_cost_usd = excluded.judge_cost_usd, latency_ms = excluded.latency_ms,
         contract_outcome = excluded.contract_outcome, error = excluded.error, model_call_ids = excluded.model_call_ids,
         attempt_id = excluded.attempt_id, recorded_at = ballast.now();
end
$fn$;

create function ballast_private.refresh_job_status(p_job_id bigint) returns text
language plpgsql volatile
as $fn$
declare
  v_status text;
begin
  select j.status into v_status from ballast_private.jobs j where j.id = p_job_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('job %s does not exist', p_job_id);
  end if;
  return v_status;
end
$fn$;

create function ballast_private.refuse_view_write() returns trigger
language plpgsql volatile
as $fn$
begin
  raise exception using
    errcode = 'BA009',
    message = format('ballast.%s is read-only: %s is not allowed', tg_table_name, lower(tg_op)),
    hint = 'Change state through the ballast functions (submit_job, claim_step, complete_step, fail_step, ...).';
end
$fn$;

create function ballast_private.refuse_webhook(p_path text, p_webhook_id text, p_reason text, p_detail text, p_remote text) returns void
language sql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
  insert into ballast_private.webhook_refusals (path, webhook_id, reason, detail, remote_address)
  values (left(p_path, 200), left(p_webhook_id, 500), p_reason, left(p_detail, 2000), left(p_remote, 100))
$fn$;

create function ballast_private.release_dependants(p_jobs bigint[], p_names text[], p_now timestamp with time zone) returns void
language plpgsql volatile
as $fn$
begin
  perform 1 from ballast_private.steps d
   where d.id in (select d2.id from unnest(p_jobs, p_names) as f(job_id, name)
                    join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
                   where d2.status = 'pending')
   order by d.id for update;
  update ballast_private.steps d
     set deps_remaining = d.deps_remaining - x.n,
         status = case when d.deps_remaining = x.n then 'queued' else d.status end,
         queued_at = case when d.deps_remaining = x.n then p_now else d.queued_at end,
         updated_at = p_now
    from (select d2.id, count(*)::int as n
            from unnest(p_jobs, p_names) as f(job_id, name)
            join ballast_private.steps d2 on d2.job_id = f.job_id and f.name = any(d2.depends_on)
           where d2.status = 'pending'
           group by d2.id) x
   where d.id = x.id;
end
$fn$;

create function ballast_private.report_period(p_period text, p_at timestamp with time zone) returns timestamp with time zone
language sql immutable parallel safe
as $fn$
  select date_trunc(p_period, p_at at time zone 'UTC') at time zone 'UTC'
$fn$;

create function ballast_private.report_window(p_since interval, p_period text) returns timestamp with time zone
language plpgsql stable
as $fn$
begin
  if p_since is null or p_since <= interval '0' then
    perform ballast_private.bad_argument('since', format('%s is not a positive interval', coalesce(p_since::text, 'null')),
      'Pass how far back to look, e.g. ''24 hours'' or ''7 days''.');
  end if;
  if p_period is null or p_period not in ('minute', 'hour', 'day', 'week', 'month') then
    perform ballast_private.bad_argument('period', format('%L is not minute, hour, day, week or month', p_period),
      'Pass ''hour'' or ''day'' (periods are UTC).');
  end if;
  return ballast.now() - p_since;
end
$fn$;

create function ballast_private.request_hash(p_pipeline text, p_pipeline_version integer, p_input jsonb) returns text
language sql immutable parallel safe
as $fn$
  select encode(sha256(convert_to(jsonb_build_array(p_pipeline, p_pipeline_version, p_input)::text, 'UTF8')), 'hex')
$fn$;

create function ballast_private.requeue_due_retries(p_tasks text[], p_n integer, p_now timestamp with time zone) returns void
language plpgsql volatile
as $fn$
begin
  update ballast_private.steps s set status = 'queued', queued_at = p_now, next_run_at = null, updated_at = p_now
   where s.id in (select r.id from ballast_private.steps r
                   where r.status = 'retrying' and r.next_run_at <= p_now and r.task = any(p_tasks)
                   order by r.next_run_at limit p_n
                   for update skip locked);
end
$fn$;

create function ballast_private.require_tenant(p_tenant text, p_what text) returns void
language plpgsql stable
as $fn$
declare
  v_caller_tenant text;
begin
  if ballast_private.caller_unrestricted() then
    return;
  end if;
  v_caller_tenant := ballast_private.caller_tenant();
  if v_caller_tenant is null then
    raise exception using errcode = 'BA014',
      message = format('role %s acts for no tenant: it can see and change nothing', ballast_private.caller_role()),
      hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
  end if;
  if p_tenant is null or p_tenant <> v_caller_tenant then
    raise exception using errcode = 'BA007', message = format('%s does not exist', p_what);
  end if;
end
$fn$;

create function ballast_private.restart_grace() returns interval
language plpgsql stable
as $fn$
declare
  v_raw text := nullif(current_setting('ballast.restart_grace_ms', true), '');
begin
  if v_raw is null then
    return interval '20 seconds';
  end if;
  if v_raw !~ '^\d{1,6}$' or v_raw::integer > 600000 then
    perform ballast_private.bad_argument('ballast.restart_grace_ms', format('%L is not a number of milliseconds from 0 to 600000', v_raw),
      'Set it to how long workers may take to reconnect after a restart, e.g. 20000, or reset it.');
  end if;
  return make_interval(secs => v_raw::integer / 1000.0);
end
$fn$;

create function ballast_private.reuse_kind(p_step_id bigint, p_call ballast_private.model_calls) returns text
language sql stable
as $fn$
  select case when p_call.step_id <> p_step_id then 'cache'
              when p_call.id <= coalesce((select m.replayed_through from ballast_private.step_call_marks m
                                           where m.step_id = p_step_id), 0) then 'replay'
              else 'retry' end
$fn$;

create function ballast_private.running_attempt(p_attempt_id bigint) returns ballast_private.steps
language plpgsql volatile
as $fn$
declare
  v_step ballast_private.steps;
  v_attempt ballast_private.attempts;
begin
  select * into v_attempt from ballast_private.attempts where id = p_attempt_id;
  if not found then
    raise exception using errcode = 'BA007', message = format('attempt %s does not exist', p_attempt_id);
  end if;
  select * into v_step from ballast_private.steps where id = v_attempt.step_id for update;
  select * into v_attempt from ballast_private.attempts where id = p_attempt_id;
  if v_attempt.outcome <> 'running' or v_step.status <> 'running' or v_step.attempts <> v_attempt.number then
    raise exception using errcode = 'BA008',
      message = format('attempt %s of step %s is no longer running (attempt outcome %s, step status %s): its result was not recorded',
                       p_attempt_id, v_step.id, v_attempt.outcome, v_step.status),
      hint = 'Another attempt owns the step now; discard this result.';
  end if;
  return v_step;
end
$fn$;

create function ballast_private.schedule_tenant(p_tenant_id text) returns text
language plpgsql stable
as $fn$
declare
  v_own text;
begin
  if ballast_private.caller_unrestricted() then
    return coalesce(nullif(p_tenant_id, ''), 'default');
  end if;
  v_own := ballast_private.caller_tenant();
  if v_own is null then
    raise exception using errcode = 'BA014', message = format('role %s acts for no tenant: it cannot manage schedules', ballast_private.caller_role()),
      hint = 'Bind the login to a tenant (ballast.bind_role_tenant), or send a token with a tenant_id claim.';
  end if;
  if p_tenant_id is not null and p_tenant_id not in ('default', v_own) then
    raise exception using errcode = 'BA014', message = format('tenant %s cannot manage the schedules of tenant %s', v_own, p_tenant_id),
      hint = 'Leave the tenant out: your own tenant''s schedules are meant.';
  end if;
  return v_own;
end
$fn$;

create function ballast_private.server_epoch() returns timestamp with time zone
language sql stable
as $fn$
  select greatest(pg_postmaster_start_time(),
                  (select max(a.backend_start) from pg_stat_activity a where a.backend_type = 'checkpointer'))
$fn$;

create function ballast_private.set_actor(p_actor text) returns void
language sql volatile
as $fn$
  select set_config('ballast.actor', coalesce(nullif(p_actor, ''), nullif(current_setting('ballast.actor', true), ''), 'sql'), true)
$fn$;

create function ballast_private.settle_failure(p_step ballast_private.steps, p_error jsonb, p_retryable boolean, p_retry_after_ms double precision, p_now timestamp with time zone) returns text
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := p_now;
  v_charged int := p_step.attempts - p_step.attempt_offset;
  v_delay_ms double precision;
  v_next timestamptz;
  v_status text;
begin
  if p_retryable and v_charged < p_step.max_attempts then
    -- Retry-After is a floor, never shortened; a bounded jitter on top (a quarter of it, at least 250 ms, at most
    -- 60 s) spreads the steps that a provider turned away together, so they do not all come back at once.
    -- 0 stays 0: "at once" (a release on shutdown, a provider's Retry-After: 0).
    v_delay_ms := coalesce(case when p_retry_after_ms > 0
                                then p_retry_after_ms + floor(random() * least(greatest(p_retry_after_ms * 0.25, 250), 60000))
                                else p_retry_after_ms end,
                           floor(random() * least(p_step.backoff_cap_ms::double precision,
                                                  p_step.backoff_base_ms * power(2, least(greatest(v_charged, 1) - 1, 40)))));
    v_next := v_now + make_interval(secs => v_delay_ms / 1000.0);
    update ballast_private.steps set status = 'retrying', next_run_at = v_next, error = p_error,
           wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = p_step.id;
    perform ballast_private.wake_step(p_step.id, v_next);
    v_status := 'retrying';
  else
    update ballast_private.steps set status = 'failed', error = p_error, finished_at = v_now,
           wait_key = null, wait_deadline = null, wait_on_timeout = null
     where id = p_step.id;
    with recursive dependants(name) as (
      select p_step.name
      union
      select d.name from ballast_private.steps d join dependants p on p.name = any(d.depends_on)
       where d.job_id = p_step.job_id)
    update ballast_private.steps s set status = 'skipped', finished_at = v_now
     where s.job_id = p_step.job_id and s.status = 'pending'
       and s.name in (select name from dependants);
    v_status := 'failed';
  end if;
  if p_step.concurrency_key is not null then
    perform ballast_private.wake_concurrency_group(p_step.concurrency_key, p_step.concurrency_limit);
  end if;
  if v_status = 'failed' and p_step.parent_step_id is not null then
    perform ballast_private.finish_map(p_step.parent_step_id);
  end if;
  return v_status;
end
$fn$;

create function ballast_private.settle_succeeded(p_ok bigint[], p_outputs jsonb[], p_now timestamp with time zone) returns TABLE(done_attempts bigint[], job_ids bigint[], step_names text[], parent_ids bigint[])
language plpgsql volatile
as $fn$
declare
  v_steps bigint[];
  v_outputs jsonb[];
begin
  -- The steps of the attempts, locked in id order (the lock order of every verb), read by primary key; an attempt
  -- owns its step when both are still running and it is the step's latest attempt. OFFSET 0 keeps that filter
  -- out of the locking scan (see 0020).
  select array_agg(x.aid order by x.sid), array_agg(x.sid order by x.sid), array_agg(x.output order by x.sid)
    into done_attempts, v_steps, v_outputs
    from (select a.id as aid, s.id as sid, s.status, s.attempts, a.number, a.outcome, inp.output
            from unnest(p_ok, p_outputs) as inp(attempt_id, output)
            join ballast_private.attempts a on a.id = inp.attempt_id
            join ballast_private.steps s on s.id = a.step_id
           order by s.id
             for update of s
          offset 0) x
   where x.status = 'running' and x.outcome = 'running' and x.attempts = x.number;

  if done_attempts is not null then
    update ballast_private.attempts a set outcome = 'succeeded', finished_at = p_now
     where a.id = any(done_attempts);
    with s as (
      update ballast_private.steps s
         set status = 'succeeded', output = coalesce(o.output, 'null'::jsonb), error = null, finished_at = p_now,
             wait_key = null, wait_deadline = null, wait_on_timeout = null, updated_at = p_now
        from unnest(v_steps, v_outputs) as o(step_id, output)
       where s.id = o.step_id
      returning s.job_id, s.name, s.parent_step_id)
    select array_agg(s.job_id), array_agg(s.name), array_agg(s.parent_step_id) into job_ids, step_names, parent_ids from s;
  end if;

  return next;
end
$fn$;

create function ballast_private.short_key(p_value text) returns text
language sql immutable strict parallel safe
as $fn$
  select case when octet_length(p_value) <= 1000 then p_value
              else 'sha256:' || encode(sha256(convert_to(p_value, 'UTF8')), 'hex') end
$fn$;

create function ballast_private.stamp_updated_at() returns trigger
language plpgsql volatile
as $fn$
begin
  new.updated_at := ballast.now();
  return new;
end
$fn$;

create function ballast_private.start_due_steps(p_tasks text[], p_n integer, p_now timestamp with time zone) returns void
language plpgsql volatile
as $fn$
declare
  v_jobs bigint[];
begin
  with due as (
    select s.id from ballast_private.steps s
     where s.status = 'scheduled' and s.next_run_at <= p_now and s.task = any(p_tasks)
     order by s.next_run_at limit p_n
       for update skip locked),
  upd as (
    update ballast_private.steps s set status = 'queued', queued_at = p_now, next_run_at = null, updated_at = p_now
      from due where s.id = due.id
    returning s.job_id)
  select array_agg(distinct upd.job_id) into v_jobs from upd;
  if v_jobs is null then
    return;
  end if;
  perform 1 from ballast_private.jobs j where j.id = any(v_jobs) and j.status = 'scheduled' order by j.id for no key update;
  update ballast_private.jobs j set status = 'queued'
   where j.id = any(v_jobs) and j.status = 'scheduled'
     and not exists (select 1 from ballast_private.steps s where s.job_id = j.id and s.status = 'scheduled');
end
$fn$;

create function ballast_private.step_keys(p_pipeline text, p_step text, p_tenant text, p_def jsonb, p_input jsonb, p_item jsonb) returns text[]
language plpgsql stable
as $fn$
declare
  v_keys text[] := array['global', 'tenant:' || p_tenant, 'pipeline:' || p_pipeline, 'step:' || p_pipeline || '.' || p_step];
  v_model text := p_def -> 'model' ->> 'model';
  v_tpl text;
  v_key text;
  v_m text[];
  v_value text;
begin
  if v_model is not null then
    v_keys := v_keys || ('provider:' || split_part(v_model, ':', 1)) || ('model:' || v_model);
  end if;
  for v_tpl in select jsonb_array_elements_text(coalesce(p_def -> 'keys', '[]')) loop
    v_key := v_tpl;
    for v_m in select regexp_matches(v_tpl, '\{([^{}]*)\}', 'g') loop
      v_value := case when v_m[1] = 'tenant' then p_tenant
                      when v_m[1] like 'input.%' then p_input #>> string_to_array(substr(v_m[1], 7), '.')
                      when v_m[1] like 'item.%' then p_item #>> string_to_array(substr(v_m[1], 6), '.')
                      when v_m[1] = 'item' then p_item #>> '{}' end;
      v_key := replace(v_key, '{' || v_m[1] || '}', coalesce(v_value, ''));
    end loop;
    v_keys := v_keys || v_key;
  end loop;
  return v_keys;
end
$fn$;

create function ballast_private.step_weight(p_def jsonb, p_input jsonb, p_item jsonb) returns numeric
language sql stable
as $fn$
  select case jsonb_typeof(p_def -> 'weight')
           when 'number' then greatest((p_def ->> 'weight')::numeric, 0)
           when 'string' then coalesce((select greatest(x.v::text::numeric, 0)
                                          from (select case when p_def ->> 'weight' like 'input.%'
                                                            then p_input #> string_to_array(substr(p_def ->> 'weight', 7), '.')
                                                            else p_item #> string_to_array(substr(p_def ->> 'weight', 6), '.') end) x(v)
                                         where jsonb_typeof(x.v) = 'number'), 0)
           else 1 end
$fn$;

create function ballast_private.steps_changed() returns trigger
language plpgsql volatile
as $fn$
declare
  v_bad record;
  v_allowed text;
begin
  if not exists (select 1 from old_t o join new_t n on n.id = o.id
                  where o.status <> n.status or (o.attempts > 0) <> (n.attempts > 0)
                     or o.waiting_for is distinct from n.waiting_for or o.job_id <> n.job_id
                     or o.parent_step_id is distinct from n.parent_step_id) then
    return null;
  end if;

  select o.id, o.name, o.job_id, o.status as from_status, n.status as to_status, t.via_replay into v_bad
    from old_t o join new_t n on n.id = o.id
    left join ballast_private.step_transitions t on t.from_status = o.status and t.to_status = n.status
   where o.status <> n.status
     and (t.from_status is null or (t.via_replay and coalesce(current_setting('ballast.replay', true), '') <> 'on'))
   order by o.id limit 1;
  if found then
    select coalesce(string_agg(to_status, ', ' order by to_status), 'nothing (it is final)') into v_allowed
      from ballast_private.step_transitions where from_status = v_bad.from_status and not via_replay;
    raise exception using
      errcode = 'BA001',
      message = format('step %s ("%s" of job %s) cannot go from %s to %s', v_bad.id, v_bad.name, v_bad.job_id,
                       v_bad.from_status, v_bad.to_status),
      hint = format('From %s a step may go to: %s%s.', v_bad.from_status, v_allowed,
                    case when v_bad.via_replay then '; running it again takes ballast.replay_step' else '' end);
  end if;

  insert into ballast_private.events (job_id, step_id, type, status, actor, reason, data, at)
  select n.job_id, n.id, 'step_' || n.status, n.status,
         coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
         nullif(current_setting('ballast.reason', true), ''),
         case when n.status = 'running' then jsonb_build_object('attempt', n.attempts)
              when n.status = 'retrying' then jsonb_build_object('attempt', n.attempts, 'next_run_at', n.next_run_at,
                                                                 'error', n.error)
              when n.status = 'failed' then jsonb_build_object('attempt', n.attempts, 'error', n.error) end,
         ballast.now()
    from new_t n join old_t o on o.id = n.id
   where o.status <> n.status
   order by n.id;

  perform ballast_private.apply_step_deltas(array_agg(r.job_id), array_agg(r.sgn), array_agg(r.status),
                                            array_agg(r.items_wait), array_agg(r.parent_step_id), array_agg(r.started))
     from (select n.job_id, 1 as sgn, n.status, coalesce(n.waiting_for = 'items', false) as items_wait,
                  n.parent_step_id, n.attempts > 0 as started
             from new_t n
           union all
           select o.job_id, -1, o.status, coalesce(o.waiting_for = 'items', false), o.parent_step_id,
                  o.attempts > 0
             from old_t o) r;

  if exists (select 1 from new_t n join old_t o on o.id = n.id where n.status = 'queued' and o.status <> 'queued') then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

create function ballast_private.steps_deleted() returns trigger
language plpgsql volatile
as $fn$
begin
  delete from ballast_private.attempts a where a.step_id in (select o.id from old_t o);
  return null;
end
$fn$;

create function ballast_private.steps_inserted() returns trigger
language plpgsql volatile
as $fn$
begin
  if current_setting('ballast.steps_counted', true) is distinct from 'on' then
    perform ballast_private.apply_step_deltas(array_agg(n.job_id), array_agg(1), array_agg(n.status),
                                              array_agg(coalesce(n.waiting_for = 'items', false)),
                                              array_agg(n.parent_step_id), array_agg(n.attempts > 0))
       from new_t n;
  end if;
  if exists (select 1 from ballast_private.fair_shares f where f.tenant_id = '*') then
    perform ballast_private.assign_fair_keys(array(select n.id from new_t n));
  end if;
  -- (A scheduled step, 0039, too: idle workers learn when it falls due from settle_and_claim's next_due_ms.)
  if exists (select 1 from new_t n where n.status in ('queued', 'scheduled')) then
    perform ballast_private.announce_queued();
  end if;
  return null;
end
$fn$;

create function ballast_private.submit(p_pipeline text, p_input jsonb, p_idempotency_key text, p_tenant_id text, p_priority integer, p_pipeline_version integer, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_deadline timestamp with time zone DEFAULT NULL::timestamp with time zone, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_pipeline ballast_private.pipelines;
  v_hash text;
  v_job_id bigint;
  v_existing_hash text;
  v_now timestamptz := ballast.now();
begin
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, p_idempotency_key, p_tenant_id, p_priority,
                                                 p_pipeline_version);
  v_hash := ballast_private.request_hash(p_pipeline, p_pipeline_version, p_input);
  perform ballast_private.lock_idempotency_key(p_tenant_id, p_idempotency_key);

  -- n_total is the number of steps the insert below creates (none of them final, running, waiting or started: every
  -- other counter is 0), so the job is counted here and the steps' insert trigger skips it (ballast.steps_counted).
  insert into ballast_private.jobs (tenant_id, pipeline, pipeline_version, idempotency_key, request_hash, input,
                                    priority, created_at, updated_at, n_total, status, run_at, deadline, expires_at)
  values (p_tenant_id, v_pipeline.name, v_pipeline.version, p_idempotency_key, v_hash, p_input, p_priority, v_now, v_now,
          jsonb_array_length(v_pipeline.definition -> 'steps'),
          case when p_run_at is not null then 'scheduled' else 'queued' end, p_run_at, p_deadline, p_expires_at)
  on conflict (tenant_id, idempotency_key) do nothing
  returning id into v_job_id;

  if v_job_id is null then
    select j.id, j.request_hash into v_job_id, v_existing_hash
      from ballast_private.jobs j
     where j.tenant_id = p_tenant_id and j.idempotency_key = p_idempotency_key;
    if v_job_id is null then
      raise exception using errcode = '40001',
        message = format('a concurrent submission with idempotency key %L is not visible yet', p_idempotency_key),
        hint = 'Retry the transaction with the same key; it will return that job.';
    end if;
    if v_existing_hash <> v_hash then
      perform ballast_private.raise_key_conflict(p_idempotency_key, v_job_id);
    end if;
    return query select v_job_id, false;
    return;
  end if;

  perform set_config('ballast.steps_counted', 'on', true);
  insert into ballast_private.steps (job_id, name, status, depends_on, deps_remaining, max_attempts, backoff_base_ms,
                                     backoff_cap_ms, timeout_ms, concurrency_key, concurrency_limit, queued_at,
                                     created_at, updated_at, task, priority, next_run_at)
  select * from ballast_private.new_steps(v_job_id, v_pipeline.name, v_pipeline.version, v_pipeline.definition,
                                          p_tenant_id, p_input, p_priority, v_now, p_run_at);
  perform set_config('ballast.steps_counted', 'off', true);

  return query select v_job_id, true;
end
$fn$;

create function ballast_private.submit_debounced(p_pipeline text, p_input jsonb, p_tenant_id text, p_priority integer, p_pipeline_version integer, p_debounce jsonb, p_deadline timestamp with time zone, p_expires_at timestamp with time zone) returns TABLE(job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_opt record;
  v_pipeline ballast_private.pipelines;
  v_now timestamptz := ballast.now();
  v_job ballast_private.jobs;
  v_run_at timestamptz;
  v_id bigint;
begin
  select * into v_opt from ballast_private.checked_keyed_option('debounce', p_debounce, 'quiet_ms') o;
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version);
  perform pg_advisory_xact_lock(hashtextextended('ballast.debounce/' || p_tenant_id || '/' || v_pipeline.name || '/' || v_opt.key, 0));
  select j.id into v_id from ballast_private.jobs j
   where j.tenant_id = p_tenant_id and j.pipeline = v_pipeline.name and j.debounce_key = v_opt.key and j.status = 'scheduled'
   order by j.id desc limit 1;
  if v_id is not null then
    -- The steps first, then the job (the engine's lock order); then look again: a claim may have started it.
    perform 1 from ballast_private.steps s where s.job_id = v_id order by s.id for update;
    select * into v_job from ballast_private.jobs j where j.id = v_id for no key update;
    if v_job.status = 'scheduled' and v_job.pipeline_version = v_pipeline.version then
      v_run_at := v_now + make_interval(secs => v_opt.ms / 1000.0);
      if v_job.debounce_until is not null and v_run_at > v_job.debounce_until then
        v_run_at := v_job.debounce_until;
      end if;
      update ballast_private.jobs j
         set input = p_input, request_hash = ballast_private.request_hash(p_pipeline, p_pipeline_version, p_input),
             run_at = v_run_at, priority = p_priority, updated_at = v_now
       where j.id = v_id;
      update ballast_private.steps s set next_run_at = v_run_at, priority = p_priority
       where s.job_id = v_id and s.status = 'scheduled';
      insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
      values (v_id, 'job_debounced', 'scheduled', coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
              nullif(current_setting('ballast.reason', true), ''),
              jsonb_build_object('debounce_key', v_opt.key, 'previous_run_at', v_job.run_at, 'run_at', v_run_at,
                                 'submissions', 2 + (select count(*) from ballast_private.events e
                                                      where e.job_id = v_id and e.type = 'job_debounced')),
              v_now);
      -- Workers that set a timer for the earlier start look again when it fires; wake them for a sooner one.
      perform pg_notify('ballast_queue', '');
      return query select v_id, false;
      return;
    end if;
  end if;
  select s.job_id into v_id
    from ballast_private.submit(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version,
                                ballast_private.checked_run_at(null, v_opt.ms, v_now), p_deadline, p_expires_at) s;
  update ballast_private.jobs j
     set debounce_key = v_opt.key,
         debounce_until = case when v_opt.max_ms is not null then v_now + make_interval(secs => v_opt.max_ms / 1000.0) end
   where j.id = v_id;
  return query select v_id, true;
end
$fn$;

create function ballast_private.submit_jobs_checked_v15(p_pipeline text, p_inputs jsonb[], p_idempotency_keys text[] DEFAULT NULL::text[], p_tenant_id text DEFAULT 'default'::text, p_priority integer DEFAULT 0, p_pipeline_version integer DEFAULT NULL::integer, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, p_deadline timestamp with time zone DEFAULT NULL::timestamp with time zone, p_expires_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns TABLE(ord integer, job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
#variable_conflict use_column
declare
  v_tenant text;
  v_pipeline ballast_private.pipelines;
  v_keys text[];          -- per input: its idempotency key or null
  v_hashes text[];        -- per input: its request hash (as ballast_private.submit computes it)
  v_ids bigint[];         -- per input: the id reserved for it (inputs without a key, and the first use of a key)
  v_inserted bigint[];    -- the ids actually inserted (a key already stored inserts nothing)
  v_job_ids bigint[];     -- per input: the job returned
  v_created boolean[];
  v_now timestamptz := ballast.now();
begin
  v_tenant := ballast_private.batch_tenant(p_tenant_id);
  v_pipeline := ballast_private.checked_batch_pipeline(p_pipeline, p_inputs, p_idempotency_keys, v_tenant, p_priority,
                                                       p_pipeline_version);
  if cardinality(p_inputs) = 0 then
    return;
  end if;
  perform ballast_private.check_batch_inputs(v_pipeline, p_inputs);
  select k.keys, k.hashes into v_keys, v_hashes
    from ballast_private.batch_keys_and_hashes(p_pipeline, p_pipeline_version, p_inputs, p_idempotency_keys) k;
  select b.ids, b.inserted, b.job_ids, b.created into v_ids, v_inserted, v_job_ids, v_created
    from ballast_private.insert_batch_jobs(v_tenant, v_pipeline, p_inputs, v_keys, v_hashes, p_priority, v_now, p_run_at,
                                           p_deadline, p_expires_at) b;
  perform ballast_private.insert_batch_steps(v_pipeline, v_tenant, v_ids, p_inputs, v_inserted, p_priority, v_now,
                                             p_run_at);

  -- No wake-up per step: the step rows are the queue (0013), and the steps' insert NOTIFYs ballast_queue once.
  return query
    select u.n::int, u.job, u.created, j.status
      from unnest(v_job_ids, v_created) with ordinality u(job, created, n)
      join ballast_private.jobs j on j.id = u.job
     order by u.n;
end
$fn$;

create function ballast_private.submit_throttled(p_pipeline text, p_input jsonb, p_tenant_id text, p_priority integer, p_pipeline_version integer, p_throttle jsonb, p_run_at timestamp with time zone, p_deadline timestamp with time zone, p_expires_at timestamp with time zone) returns TABLE(job_id bigint, created boolean)
language plpgsql volatile
as $fn$
declare
  v_opt record;
  v_pipeline ballast_private.pipelines;
  v_now timestamptz := ballast.now();
  v_last record;
  v_id bigint;
begin
  select * into v_opt from ballast_private.checked_keyed_option('throttle', p_throttle, 'period_ms') o;
  v_pipeline := ballast_private.checked_pipeline(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version);
  perform pg_advisory_xact_lock(hashtextextended('ballast.throttle/' || p_tenant_id || '/' || v_pipeline.name || '/' || v_opt.key, 0));
  select j.id, j.created_at into v_last from ballast_private.jobs j
   where j.tenant_id = p_tenant_id and j.pipeline = v_pipeline.name and j.throttle_key = v_opt.key
   order by j.created_at desc limit 1;
  if v_last.id is not null and v_last.created_at > v_now - make_interval(secs => v_opt.ms / 1000.0) then
    insert into ballast_private.events (job_id, type, status, actor, reason, data, at)
    values (v_last.id, 'job_throttled', (select j.status from ballast_private.jobs j where j.id = v_last.id),
            coalesce(nullif(current_setting('ballast.actor', true), ''), 'system'),
            nullif(current_setting('ballast.reason', true), ''),
            jsonb_build_object('throttle_key', v_opt.key, 'period_ms', v_opt.ms,
                               'next_allowed_at', v_last.created_at + make_interval(secs => v_opt.ms / 1000.0)),
            v_now);
    return query select v_last.id, false;
    return;
  end if;
  select s.job_id into v_id
    from ballast_private.submit(p_pipeline, p_input, null, p_tenant_id, p_priority, p_pipeline_version, p_run_at,
                                p_deadline, p_expires_at) s;
  update ballast_private.jobs j set throttle_key = v_opt.key where j.id = v_id;
  return query select v_id, true;
end
$fn$;

create function ballast_private.submit_webhook(p_path text, p_webhook_id text, p_body jsonb) returns TABLE(job_id bigint, created boolean, status text)
language plpgsql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
declare
  v_endpoint ballast_private.webhook_endpoints;
  v_input jsonb;
begin
  select e.* into v_endpoint from ballast_private.webhook_endpoints e where e.path = p_path;
  if not found then
    raise exception using errcode = 'BA007', message = format('webhook endpoint %s does not exist', p_path);
  end if;
  v_input := case when v_endpoint.input_path is null then p_body else p_body #> v_endpoint.input_path end;
  if v_input is null then
    perform ballast_private.bad_argument(array_to_string(v_endpoint.input_path, '.'), 'is missing from the body',
      'Send the job input at that place in the body, or change the endpoint''s input_path.');
  end if;
  perform set_config('ballast.actor', 'webhook:' || p_path, true);
  return query select s.job_id, s.created, s.status
    from ballast.submit_job(v_endpoint.pipeline, v_input, 'webhook:' || p_path || ':' || p_webhook_id, v_endpoint.tenant_id) s;
end
$fn$;

create function ballast_private.update_job_counters(p_job bigint[], p_total integer[], p_final integer[], p_running integer[], p_review integer[], p_waiting integer[], p_retrying integer[], p_failed integer[], p_cancelled integer[], p_started integer[], p_item_bad integer[]) returns void
language plpgsql volatile
as $fn$
declare
  v_now timestamptz := ballast.now();
  n record;
  v_ids bigint[];
  v_from text[];
  v_to text[];
begin
  -- 1. Lock the jobs with a change (id order) and read their newest counters plus the deltas.
  with changed as (
    select * from unnest(p_job, p_total, p_final, p_running, p_review, p_waiting, p_retrying, p_failed, p_cancelled,
                         p_started, p_item_bad)
           as t(job_id, d_total, d_final, d_running, d_review, d_waiting, d_retrying, d_failed, d_cancelled, d_started,
                d_item_bad)
     where d_total <> 0 or d_final <> 0 or d_running <> 0 or d_review <> 0 or d_waiting <> 0 or d_retrying <> 0
        or d_failed <> 0 or d_cancelled <> 0 or d_started <> 0 or d_item_bad <> 0)
  select array_agg(x.id order by x.id) as id, array_agg(x.status order by x.id) as old_status,
         array_agg(x.t order by x.id) as t, array_agg(x.f order by x.id) as f, array_agg(x.ru order by x.id) as ru,
         array_agg(x.rv order by x.id) as rv, array_agg(x.wa order by x.id) as wa, array_agg(x.re order by x.id) as re,
         array_agg(x.fa order by x.id) as fa, array_agg(x.ca order by x.id) as ca, array_agg(x.st order by x.id) as st,
         array_agg(x.ib order by x.id) as ib
    into n
    from (select j.id, j.status,
                 j.n_total + c.d_total as t, j.n_final + c.d_final as f, j.n_running + c.d_running as ru,
                 j.n_review + c.d_review as rv, j.n_waiting + c.d_waiting as wa, j.n_retrying + c.d_retrying as re,
                 j.n_failed + c.d_failed as fa, j.n_cancelled + c.d_cancelled as ca, j.n_started + c.d_started as st,
                 j.n_item_bad + c.d_item_bad as ib
            from ballast_private.jobs j join changed c on c.job_id = j.id
           where j.id = any(array(select job_id from changed))
           order by j.id
             for no key update of j
          offset 0) x;
  if n.id is null then
    return;
  end if;

  -- 2. Write the counters and the status derived from them. The transition check of these derived changes is done
  -- below, once for all rows; the row guard of 0003 (job_status_guard) skips them (its WHEN reads this setting).
  perform set_config('ballast.deriving_jobs', 'on', true);
  with d as (
    select x.*, ballast_private.derive_job_status(x.t, x.f, x.ru, x.rv, x.wa, x.re, x.fa, x.ca, x.st, x.ib) as status
      from unnest(n.id, n.old_status, n.t, n.f, n.ru, n.rv, n.wa, n.re, n.fa, n.ca, n.st, n.ib)
           as x(id, old_status, t, f, ru, rv, wa, re, fa, ca, st, ib)),
  u as (
  update ballast_private.jobs j
     set n_total = d.t, n_final = d.f, n_running = d.ru, n_review = d.rv, n_waiting = d.wa, n_retrying = d.re,
         n_failed = d.fa, n_cancelled = d.ca, n_started = d.st, n_item_bad = d.ib,
         status = d.status,
         updated_at = case when d.status <> d.old_status then v_now else j.updated_at end,
         started_at = case when d.status <> d.old_status
                           then coalesce(j.started_at, case when d.status <> 'queued' then v_now end)
                           else j.started_at end,
         finished_at = case when d.status = d.old_status then j.finished_at
                            when d.status in ('completed', 'partially_completed', 'failed', 'cancelled') then v_now end,
         result = case when d.status = d.old_status then j.result
                       when d.status in ('completed', 'partially_completed') then (
                    select case when count(*) = 1 then (array_agg(s.output))[1] else jsonb_object_agg(s.name, s.output) end
                      from ballast_private.steps s
                     where s.job_id = j.id and s.parent_step_id is null
                       and not exists (select 1 from ballast_private.steps x
                                        where x.job_id = j.id and s.name = any(x.depends_on))) end,
         error = case when d.status = d.old_status then j.error
                      when d.status = 'failed' then (
                   select jsonb_build_object('step', s.name, 'step_id', s.id) || coalesce(s.error, '{}')
                     from ballast_private.steps s
                    where s.job_id = j.id and s.status = 'failed' and s.parent_step_id is null
                    order by s.finished_at, s.id limit 1) end
    from d
   where j.id = d.id and j.id = any(n.id)
  returning j.id, d.old_status, d.status as new_status)
  select array_agg(u.id), array_agg(u.old_status), array_agg(u.new_status) into v_ids, v_from, v_to
    from u where u.old_status <> u.new_status;
  perform set_config('ballast.deriving_jobs', 'off', true);

  if v_ids is not null then
    perform ballast_private.check_job_transitions(v_ids, v_from, v_to);
  end if;
end
$fn$;

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

create function ballast_private.wake_concurrency_group(p_key text, p_limit integer) returns void
language plpgsql volatile
as $fn$
begin
  return;
end
$fn$;

create function ballast_private.wake_step(p_step_id bigint, p_run_at timestamp with time zone DEFAULT NULL::timestamp with time zone) returns void
language plpgsql volatile
as $fn$
begin
  return;
end
$fn$;

create function ballast_private.webhook_endpoint_for(p_path text) returns TABLE(path text, pipeline text, tenant_id text, secrets text[], enabled boolean)
language sql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
  select e.path, e.pipeline, e.tenant_id, e.secrets, e.enabled from ballast_private.webhook_endpoints e where e.path = p_path
$fn$;

create function ballast_private.webhook_secret_fingerprint(p_secret text) returns text
language sql immutable
as $fn$ select left(encode(sha256(convert_to(p_secret, 'UTF8')), 'hex'), 12) $fn$;

-- ==================== views ====================================================================================

create view ballast.alerts with (security_invoker=true) as
 SELECT a.id,
    a.kind,
    a.rule_name AS rule,
    a.rule_id,
    a.group_key,
    a.group_value AS "group",
    a.tenant_id,
    a.metric,
    a.value,
    a.baseline,
    a.threshold,
    a.samples,
    a.baseline_samples,
    a.period_start,
    a.percent,
    a.raised_at,
    a.resolved_at,
    (a.resolved_at IS NULL) AS open,
    a.acked_by,
    a.acked_at,
    a.ack_note
   FROM ballast_private.alerts a;

create view ballast.attempts with (security_invoker=true) as
 SELECT attempts.id,
    attempts.step_id,
    attempts.job_id,
    attempts.number,
    attempts.worker_id,
    attempts.outcome,
    attempts.started_at,
    attempts.lease_expires_at,
    attempts.finished_at,
    attempts.error_class,
    attempts.error_code,
    attempts.error_message,
    attempts.error_retryable,
    (EXTRACT(epoch FROM (attempts.finished_at - attempts.started_at)) * (1000)::numeric) AS duration_ms,
    attempts.contract_outcome,
    attempts.contract_detail,
    attempts.model,
    attempts.prompt_ref,
    attempts.fallback_used,
    attempts.quality_score,
    attempts.model_calls,
    attempts.input_tokens,
    attempts.output_tokens,
    attempts.cost_usd
   FROM ballast_private.attempts;

create view ballast.budget_alert_rules with (security_invoker=true) as
 SELECT r.id,
    r.name,
    r.scope,
    r.scope_value,
    r.limit_usd,
    r.period,
    r.percents,
    r.set_by,
    r.set_at
   FROM ballast_private.budget_alert_rules r;

create view ballast.budget_spend with (security_invoker=true) as
 SELECT s.rule_id,
    s.rule_name AS rule,
    s.scope,
    s.scope_value,
    s.tenant_id,
    s.scope_key,
    s.period,
    s.period_start,
    s.spent_usd,
    s.limit_usd,
    round((s.spent_usd / s.limit_usd), 4) AS ratio
   FROM ballast_private.budget_spend(ballast.now()) s(rule_id, rule_name, scope, scope_value, tenant_id, scope_key, period, period_start, spent_usd, limit_usd, percents);

create view ballast.budgets with (security_invoker=true) as
 SELECT b.tenant_id,
    b.limit_usd,
    b.period,
    b.on_exhausted,
    b.updated_at,
    ballast_private.budget_period_start(b.period, ballast.now()) AS period_start,
    COALESCE(u.spent_usd, (0)::numeric) AS spent_usd,
    COALESCE(u.reserved_usd, (0)::numeric) AS reserved_usd,
    ((b.limit_usd - COALESCE(u.spent_usd, (0)::numeric)) - COALESCE(u.reserved_usd, (0)::numeric)) AS remaining_usd
   FROM (ballast_private.budgets b
     LEFT JOIN ballast_private.budget_usage u ON (((u.tenant_id = b.tenant_id) AND (u.period_start = ballast_private.budget_period_start(b.period, ballast.now())))));

create view ballast.dead_letters with (security_invoker=true) as
 SELECT s.id AS step_id,
    s.job_id,
    j.tenant_id,
    j.pipeline,
    j.pipeline_version,
    s.name AS step_name,
    s.attempts,
    s.max_attempts,
    (s.error ->> 'class'::text) AS error_class,
    (s.error ->> 'code'::text) AS error_code,
    (s.error ->> 'message'::text) AS error_message,
    s.finished_at AS failed_at,
    ((s.error ->> 'retryable'::text))::boolean AS error_retryable,
    j.status AS job_status,
    j.pruned_at,
    last.id AS last_attempt_id,
    last.outcome AS last_attempt_outcome,
    last.worker_id AS last_worker_id,
    last.started_at AS last_attempt_started_at,
    last.finished_at AS last_attempt_finished_at,
    ( SELECT jsonb_agg(jsonb_build_object('number', a.number, 'outcome', a.outcome, 'error_class', a.error_class, 'error_message', a.error_message, 'started_at', a.started_at, 'finished_at', a.finished_at) ORDER BY a.number) AS jsonb_agg
           FROM ballast_private.attempts a
          WHERE (a.step_id = s.id)) AS attempt_errors,
    (EXISTS ( SELECT 1
           FROM ballast_private.steps c
          WHERE (c.parent_step_id = s.id))) AS is_map_step
   FROM ((ballast_private.steps s
     JOIN ballast_private.jobs j ON ((j.id = s.job_id)))
     LEFT JOIN LATERAL ( SELECT a.id,
            a.outcome,
            a.worker_id,
            a.started_at,
            a.finished_at
           FROM ballast_private.attempts a
          WHERE (a.step_id = s.id)
          ORDER BY a.number DESC
         LIMIT 1) last ON (true))
  WHERE (s.status = 'failed'::text);

create view ballast.drift_rules with (security_invoker=true) as
 SELECT r.id,
    r.name,
    r.pipeline,
    r.step_name,
    r.prompt_name,
    r.prompt_version,
    r.model,
    r.metric,
    r.direction,
    r.change,
    r.threshold,
    r.window_size,
    r.baseline_size,
    r.baseline_from,
    r.baseline_until,
    r.min_samples,
    r.set_by,
    r.set_at
   FROM ballast_private.drift_rules r;

create view ballast.effect_intents with (security_invoker=true) as
 SELECT i.step_id,
    s.job_id,
    i.key,
    i.attempt_id,
    a.number AS attempt_number,
    i.started_at,
    (EXISTS ( SELECT 1
           FROM ballast_private.effects e
          WHERE ((e.step_id = i.step_id) AND (e.key = i.key)))) AS recorded
   FROM ((ballast_private.effect_intents i
     JOIN ballast_private.steps s ON ((s.id = i.step_id)))
     JOIN ballast_private.attempts a ON ((a.id = i.attempt_id)));

create view ballast.effects with (security_invoker=true) as
 SELECT e.step_id,
    s.job_id,
    e.key,
    e.attempt_id,
    e.result,
    e.created_at
   FROM (ballast_private.effects e
     JOIN ballast_private.steps s ON ((s.id = e.step_id)));

create view ballast.end_user_paths with (security_invoker=true) as
 SELECT u.pipeline,
    array_to_string(u.path, '.'::text) AS path,
    u.set_by,
    u.set_at
   FROM ballast_private.end_user_paths u;

create view ballast.error_codes with (security_invoker=true) as
 SELECT error_codes.sqlstate,
    error_codes.name,
    error_codes.meaning
   FROM ballast_private.error_codes;

create view ballast.eval_cases with (security_invoker=true) as
 SELECT c.id,
    c.dataset,
    c.case_key,
    c.input,
    c.reference,
    c.checks,
    c.tags,
    c.source,
    (c.source ->> 'kind'::text) AS source_kind,
    c.added_in_version,
    c.removed_in_version,
    (c.removed_in_version IS NULL) AS in_current_version,
    c.added_by,
    c.added_at
   FROM ballast_private.eval_cases c;

create view ballast.eval_datasets with (security_invoker=true) as
 SELECT d.name,
    d.description,
    d.version,
    ( SELECT count(*) AS count
           FROM ballast_private.eval_cases c
          WHERE ((c.dataset = d.name) AND (c.removed_in_version IS NULL))) AS cases,
    d.created_by,
    d.created_at,
    d.updated_at
   FROM ballast_private.eval_datasets d;

create view ballast.eval_results with (security_invoker=true) as
 SELECT e.run_id,
    e.case_id,
    c.case_key,
    e.output,
    c.reference,
    e.scores,
    e.score,
    e.passed,
    e.cost_usd,
    e.judge_cost_usd,
    e.latency_ms,
    e.contract_outcome,
    e.error,
    e.model_call_ids,
    e.attempt_id,
    e.recorded_at
   FROM (ballast_private.eval_results e
     JOIN ballast_private.eval_cases c ON ((c.id = e.case_id)));

create view ballast.eval_runs with (security_invoker=true) as
 SELECT r.id,
    r.dataset,
    r.dataset_version,
    r.pipeline,
    r.pipeline_version,
    r.step,
    r.prompt_name,
    r.prompt_version,
    r.model,
    r.scorers,
    r.threshold,
    r.label,
    r.job_id,
    r.tenant_id,
        CASE
            WHEN ((r.finished_at IS NULL) AND ((j.status = 'failed'::text) OR (j.status = 'cancelled'::text))) THEN j.status
            ELSE r.status
        END AS status,
    r.created_by,
    r.created_at,
    r.finished_at,
    r.summary,
    ((r.summary ->> 'mean_score'::text))::numeric AS mean_score,
    ((r.summary ->> 'pass_rate'::text))::numeric AS pass_rate
   FROM (ballast_private.eval_runs r
     LEFT JOIN ballast_private.jobs j ON ((j.id = r.job_id)));

create view ballast.eval_trend with (security_invoker=true) as
 SELECT r.dataset,
    r.pipeline,
    r.step,
    r.id AS run_id,
    r.created_at,
    r.dataset_version,
    r.prompt_version,
    r.model,
    r.label,
    ((r.summary ->> 'mean_score'::text))::numeric AS mean_score,
    ((r.summary ->> 'pass_rate'::text))::numeric AS pass_rate,
    ((r.summary ->> 'cost_usd'::text))::numeric AS cost_usd,
    ((r.summary ->> 'latency_ms_p50'::text))::numeric AS latency_ms_p50,
    (((r.summary ->> 'mean_score'::text))::numeric - lag(((r.summary ->> 'mean_score'::text))::numeric) OVER (PARTITION BY r.dataset, r.pipeline, r.step, r.dataset_version ORDER BY r.created_at, r.id)) AS delta_vs_previous,
    ( SELECT array_agg(DISTINCT ((m.provider || ':'::text) || COALESCE(m.returned_model, m.requested_model))) AS array_agg
           FROM (ballast_private.eval_results e
             JOIN ballast_private.model_calls m ON ((m.id = ANY (e.model_call_ids))))
          WHERE ((e.run_id = r.id) AND (m.prompt_name = r.prompt_name) AND (m.error_class IS NULL))) AS returned_models
   FROM ballast_private.eval_runs r
  WHERE (r.status = ANY (ARRAY['completed'::text, 'imported'::text]));

create view ballast.events with (security_invoker=true) as
 SELECT events.id,
    events.job_id,
    events.step_id,
    events.attempt_id,
    events.type,
    events.status,
    events.actor,
    events.reason,
    events.data,
    events.at
   FROM ballast_private.events;

create view ballast.fair_shares with (security_invoker=true) as
 SELECT f.tenant_id,
    f.weight,
    f.vfinish AS finish_tag,
    f.set_by,
    f.set_at
   FROM ballast_private.fair_shares f;

create view ballast.gate_history with (security_invoker=true) as
 SELECT h.id,
    h.action,
    h.key,
    h.until,
    h.reason,
    h.data,
    h.actor,
    h.step_id,
    h.at
   FROM ballast_private.gate_history h;

create view ballast.job_prompts with (security_invoker=true) as
 SELECT jp.job_id,
    j.tenant_id,
    jp.prompt_name,
    jp.label,
    jp.version,
    jp.arm,
    jp.pinned_at
   FROM (ballast_private.job_prompts jp
     JOIN ballast_private.jobs j ON ((j.id = jp.job_id)));

create view ballast.job_transitions with (security_invoker=true) as
 SELECT job_transitions.from_status,
    job_transitions.to_status,
    job_transitions.via_replay
   FROM ballast_private.job_transitions;

create view ballast.jobs with (security_invoker=true) as
 SELECT jobs.id,
    jobs.tenant_id,
    jobs.pipeline,
    jobs.pipeline_version,
    jobs.idempotency_key,
    jobs.input,
    jobs.status,
    jobs.priority,
    jobs.result,
    jobs.error,
    jobs.created_at,
    jobs.started_at,
    jobs.finished_at,
    jobs.updated_at,
    jobs.input_tokens,
    jobs.output_tokens,
    jobs.cost_usd,
    jobs.pruned_at,
    jobs.parent_job_id,
    jobs.parent_step_id,
    jobs.run_at,
    jobs.deadline,
    jobs.expires_at
   FROM ballast_private.jobs;

create view ballast.limits with (security_invoker=true) as
 SELECT l.pattern,
    l.kind,
    l.amount,
    l.per,
    l.burst,
    l.note,
    l.set_by,
    l.set_at,
    ( SELECT count(*) AS count
           FROM ballast_private.limit_buckets b
          WHERE ((b.pattern = l.pattern) AND (b.kind = l.kind))) AS keys_seen
   FROM ballast_private.limits l;

create view ballast.model_cache_settings with (security_invoker=true) as
 SELECT m.pipeline,
    m.ttl,
    m.set_by,
    m.set_at
   FROM ballast_private.model_cache m;

create view ballast.model_call_savings with (security_invoker=true) as
 SELECT j.pipeline,
    c.tenant_id,
    c.provider,
    c.requested_model AS model,
    c.reuse_kind,
    count(*) AS reused_calls,
    COALESCE(sum(c.cost_saved_usd), (0)::numeric) AS cost_saved_usd,
    min(c.started_at) AS first_at,
    max(c.started_at) AS last_at
   FROM (ballast_private.model_calls c
     JOIN ballast_private.jobs j ON ((j.id = c.job_id)))
  WHERE (c.reused_from IS NOT NULL)
  GROUP BY j.pipeline, c.tenant_id, c.provider, c.requested_model, c.reuse_kind;

create view ballast.model_calls with (security_invoker=true) as
 SELECT c.id,
    c.attempt_id,
    c.step_id,
    c.job_id,
    c.tenant_id,
    c.rung,
    c.model_index,
    c.provider,
    c.provider_kind,
    c.requested_model,
    c.returned_model,
    c.prompt_name,
    c.prompt_version,
    c.prompt_hash,
    c.parameters,
    c.started_at,
    c.first_token_at,
    c.ended_at,
    c.latency_ms,
    (EXTRACT(epoch FROM (c.first_token_at - c.started_at)) * (1000)::numeric) AS first_token_ms,
    c.finish_reason_raw,
    c.finish_reason,
    c.input_tokens,
    c.output_tokens,
    c.cached_input_tokens,
    c.cache_write_tokens,
    c.reasoning_tokens,
    c.cost_usd,
    c.price_valid_from,
    ((c.cost_usd IS NULL) AND (c.error_class IS DISTINCT FROM 'cooldown'::text) AND (c.error_class IS DISTINCT FROM 'budget'::text)) AS price_missing,
    c.error_class,
    c.error_code,
    c.error_message,
    c.retryable,
    c.http_status,
    c.request_id,
    c.response_id,
    c.raw_output,
    c.validation_issues,
    c.repair_method,
    c.score,
    c.quality,
    c.usage_missing,
    c.request_key,
    c.output_complete,
    c.reused_from,
    c.reuse_kind,
    c.cost_saved_usd
   FROM ballast_private.model_calls c;

create view ballast.model_prices with (security_invoker=true) as
 SELECT model_prices.provider,
    model_prices.model,
    model_prices.valid_from,
    model_prices.input_per_mtok,
    model_prices.output_per_mtok,
    model_prices.cached_input_per_mtok,
    model_prices.source
   FROM ballast_private.model_prices;

create view ballast.model_tokens with (security_invoker=true) as
 SELECT token_chunks.step_id,
    token_chunks.seq,
    token_chunks.job_id,
    token_chunks.tenant_id,
    token_chunks.attempt_id,
    token_chunks.segment,
    token_chunks.rung,
    token_chunks.model,
    token_chunks.start_offset,
    token_chunks.end_offset,
    token_chunks.text,
    token_chunks.first,
    token_chunks.done,
    token_chunks.at
   FROM ballast_private.token_chunks;

create view ballast.oldest_transactions as
 SELECT a.pid,
    a.usename AS role,
    a.application_name,
    a.client_addr,
    a.state,
    a.xact_start,
    date_trunc('second'::text, (ballast.now() - a.xact_start)) AS open_for,
    age(a.backend_xmin) AS xmin_age,
    a.wait_event_type,
    a.wait_event,
    "left"(a.query, 200) AS query
   FROM pg_stat_activity a
  WHERE ((a.datname = current_database()) AND ((a.xact_start IS NOT NULL) OR (a.backend_xmin IS NOT NULL)) AND (a.pid <> pg_backend_pid()))
  ORDER BY a.xact_start;

create view ballast.pauses with (security_invoker=true) as
 SELECT z.key,
    z.until,
    z.reason,
    z.paused_by,
    z.paused_at,
    z.step_id,
    ((z.until IS NULL) OR (z.until > ballast.now())) AS in_force
   FROM ballast_private.pauses z;

create view ballast.pipelines with (security_invoker=true) as
 SELECT pipelines.name,
    pipelines.version,
    pipelines.definition,
    pipelines.input_schema,
    pipelines.definition_hash,
    pipelines.registered_at
   FROM ballast_private.pipelines;

create view ballast.prompt_label_history with (security_invoker=true) as
 SELECT h.id,
    h.prompt_name,
    h.label,
    h.action,
    h.from_version,
    h.to_version,
    h.canary_version,
    h.canary_share,
    h.actor,
    h.reason,
    h.at
   FROM ballast_private.prompt_label_history h;

create view ballast.prompt_labels with (security_invoker=true) as
 SELECT l.prompt_name,
    l.label,
    l.version,
    l.canary_version,
    l.canary_share,
    l.updated_by,
    l.updated_at
   FROM ballast_private.prompt_labels l;

create view ballast.prompts with (security_invoker=true) as
 SELECT prompts.name,
    prompts.version,
    prompts.template,
    prompts.content_hash,
    prompts.registered_at
   FROM ballast_private.prompts;

create view ballast.provider_cooldowns with (security_invoker=true) as
 SELECT provider_cooldowns.provider,
    provider_cooldowns.model,
    provider_cooldowns.until,
    provider_cooldowns.reason,
    provider_cooldowns.set_at,
    provider_cooldowns.hits,
    (provider_cooldowns.until > ballast.now()) AS active
   FROM ballast_private.provider_cooldowns;

create view ballast.queue_depth with (security_invoker=true) as
 SELECT j.pipeline,
    count(*) FILTER (WHERE (s.status = 'queued'::text)) AS queued,
    count(*) FILTER (WHERE ((s.status = 'retrying'::text) AND (s.next_run_at <= n.now))) AS retrying_due,
    count(*) FILTER (WHERE ((s.status = 'retrying'::text) AND (s.next_run_at > n.now))) AS retrying_later,
    count(*) FILTER (WHERE (s.status = 'running'::text)) AS running,
    count(*) FILTER (WHERE (s.status = 'waiting'::text)) AS waiting,
    count(*) FILTER (WHERE (s.status = 'needs_review'::text)) AS needs_review,
    min(
        CASE
            WHEN (s.status = 'queued'::text) THEN s.queued_at
            WHEN ((s.status = 'retrying'::text) AND (s.next_run_at <= n.now)) THEN s.next_run_at
            ELSE NULL::timestamp with time zone
        END) AS oldest_runnable_since,
    (n.now - min(
        CASE
            WHEN (s.status = 'queued'::text) THEN s.queued_at
            WHEN ((s.status = 'retrying'::text) AND (s.next_run_at <= n.now)) THEN s.next_run_at
            ELSE NULL::timestamp with time zone
        END)) AS oldest_wait
   FROM ((( SELECT ballast.now() AS now) n
     CROSS JOIN ballast_private.steps s)
     JOIN ballast_private.jobs j ON ((j.id = s.job_id)))
  WHERE (s.status = ANY (ARRAY['queued'::text, 'running'::text, 'retrying'::text, 'waiting'::text, 'needs_review'::text]))
  GROUP BY j.pipeline, n.now;

create view ballast.reviews with (security_invoker=true) as
 SELECT s.id AS step_id,
    s.job_id,
    j.tenant_id,
    j.pipeline,
    j.pipeline_version,
    s.name AS step_name,
    (s.review ->> 'reason'::text) AS reason,
    (s.review -> 'proposed'::text) AS proposed_output,
    (s.review -> 'detail'::text) AS detail,
    ((s.review ->> 'requested_at'::text))::timestamp with time zone AS requested_at
   FROM (ballast_private.steps s
     JOIN ballast_private.jobs j ON ((j.id = s.job_id)))
  WHERE (s.status = 'needs_review'::text);

create view ballast.schedules with (security_invoker=true) as
 SELECT s.id,
    s.tenant_id,
    s.name,
    s.pipeline,
    s.pipeline_version,
    s.input,
    s.priority,
    s.cron,
    s.time_zone,
    s.on_missed,
    s.max_catch_up,
    s.paused,
    s.paused_reason,
    s.next_fire_at,
    s.last_fired_at,
    s.last_slot,
    s.last_job_id,
    s.last_error,
    s.fired_count,
    s.skipped_count,
    s.created_at,
    s.updated_at,
    s.created_by,
    s.updated_by
   FROM ballast_private.schedules s;

create view ballast.signals with (security_invoker=true) as
 SELECT signals.key,
    signals.payload,
    signals.actor,
    signals.received_at,
    signals.tenant_id
   FROM ballast_private.signals;

create view ballast.step_items with (security_invoker=true) as
 SELECT c.parent_step_id AS step_id,
    p.name AS step_name,
    c.job_id,
    c.item_index,
    c.id AS item_step_id,
    c.item,
    c.status,
    c.attempts,
    c.output,
    c.error,
    c.started_at,
    c.finished_at
   FROM (ballast_private.steps c
     JOIN ballast_private.steps p ON ((p.id = c.parent_step_id)));

create view ballast.step_transitions with (security_invoker=true) as
 SELECT step_transitions.from_status,
    step_transitions.to_status,
    step_transitions.why,
    step_transitions.via_replay
   FROM ballast_private.step_transitions;

create view ballast.steps with (security_invoker=true) as
 SELECT steps.id,
    steps.job_id,
    steps.name,
    steps.status,
    steps.depends_on,
    steps.attempts,
    steps.max_attempts,
    steps.output,
    steps.error,
    steps.progress,
    steps.next_run_at,
    steps.concurrency_key,
    steps.concurrency_limit,
    steps.timeout_ms,
    steps.created_at,
    steps.queued_at,
    steps.started_at,
    steps.finished_at,
    steps.updated_at,
    steps.attempt_offset,
    steps.wait_key,
    steps.wait_deadline,
    steps.wait_on_timeout,
    steps.input_tokens,
    steps.output_tokens,
    steps.cost_usd,
    steps.review,
    steps.waiting_for
   FROM ballast_private.steps;

create view ballast.stuck_work with (security_invoker=true) as
 SELECT report_stuck.kind,
    report_stuck.job_id,
    report_stuck.step_id,
    report_stuck.attempt_id,
    report_stuck.tenant_id,
    report_stuck.pipeline,
    report_stuck.pipeline_version,
    report_stuck.step_name,
    report_stuck.since,
    report_stuck.overdue,
    report_stuck.detail
   FROM ballast.report_stuck() report_stuck(kind, job_id, step_id, attempt_id, tenant_id, pipeline, pipeline_version, step_name, since, overdue, detail);

create view ballast.webhook_endpoints with (security_invoker=true) as
 SELECT e.path,
    e.pipeline,
    e.tenant_id,
    cardinality(e.secrets) AS secret_count,
    ARRAY( SELECT ballast_private.webhook_secret_fingerprint(u.s) AS webhook_secret_fingerprint
           FROM unnest(e.secrets) WITH ORDINALITY u(s, n)
          ORDER BY u.n) AS secret_fingerprints,
    e.input_path,
    e.enabled,
    e.created_at,
    e.updated_at
   FROM ballast_private.webhook_endpoints e;

create view ballast.webhook_refusals with (security_invoker=true) as
 SELECT r.id,
    r.at,
    r.path,
    r.webhook_id,
    r.reason,
    r.detail,
    r.remote_address
   FROM ballast_private.webhook_refusals r;

create view ballast.workers with (security_invoker=true) as
 SELECT workers.id,
    workers.pool_id,
    workers.hostname,
    workers.pid,
    workers.concurrency,
    workers.pipelines,
    workers.started_at,
    workers.heartbeat_at,
    workers.stopped_at
   FROM ballast_private.workers;

-- ==================== triggers =================================================================================

CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.alerts FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.attempts FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.budget_alert_rules FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.budget_spend FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.budgets FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.drift_rules FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.effect_intents FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.effects FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.end_user_paths FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.error_codes FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.eval_cases FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.eval_datasets FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.eval_results FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.eval_runs FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.eval_trend FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.events FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.fair_shares FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.gate_history FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.job_prompts FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.job_transitions FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER insert_job INSTEAD OF INSERT ON ballast.jobs FOR EACH ROW EXECUTE FUNCTION ballast_private.insert_job();
CREATE TRIGGER insert_jobs_flush AFTER INSERT ON ballast.jobs FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.insert_jobs_flush();
CREATE TRIGGER refuse_write INSTEAD OF DELETE OR UPDATE ON ballast.jobs FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.limits FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.model_cache_settings FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.model_call_savings FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.model_calls FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.model_prices FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.model_tokens FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.pauses FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.pipelines FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.prompt_label_history FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.prompt_labels FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.prompts FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.provider_cooldowns FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.queue_depth FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.reviews FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.schedules FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.signals FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.step_items FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.step_transitions FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.steps FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.stuck_work FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER refuse_write INSTEAD OF INSERT OR DELETE OR UPDATE ON ballast.workers FOR EACH ROW EXECUTE FUNCTION ballast_private.refuse_view_write();
CREATE TRIGGER events_append_only BEFORE DELETE OR UPDATE ON ballast_private.events FOR EACH ROW EXECUTE FUNCTION ballast_private.events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON ballast_private.events FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.events_append_only();
CREATE TRIGGER notify_events AFTER INSERT ON ballast_private.events REFERENCING NEW TABLE AS new_events FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.notify_events();
CREATE TRIGGER append_only BEFORE DELETE OR UPDATE ON ballast_private.gate_history FOR EACH ROW EXECUTE FUNCTION ballast_private.gate_history_append_only();
CREATE TRIGGER job_status_guard BEFORE UPDATE OF status ON ballast_private.jobs FOR EACH ROW WHEN (((old.status IS DISTINCT FROM new.status) AND (current_setting('ballast.deriving_jobs'::text, true) IS DISTINCT FROM 'on'::text))) EXECUTE FUNCTION ballast_private.job_status_guard();
CREATE TRIGGER jobs_changed AFTER UPDATE ON ballast_private.jobs REFERENCING OLD TABLE AS old_t NEW TABLE AS new_t FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.jobs_changed();
CREATE TRIGGER jobs_deleted AFTER DELETE ON ballast_private.jobs REFERENCING OLD TABLE AS old_t FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.jobs_deleted();
CREATE TRIGGER jobs_inserted AFTER INSERT ON ballast_private.jobs REFERENCING NEW TABLE AS new_t FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.jobs_inserted();
CREATE TRIGGER jobs_no_truncate BEFORE TRUNCATE ON ballast_private.jobs FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.events_append_only();
CREATE TRIGGER pruned_job_guard BEFORE UPDATE OF status ON ballast_private.jobs FOR EACH ROW WHEN (((old.pruned_at IS NOT NULL) AND (old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION ballast_private.pruned_job_guard();
CREATE TRIGGER append_only BEFORE DELETE OR UPDATE ON ballast_private.prompt_label_history FOR EACH ROW EXECUTE FUNCTION ballast_private.prompt_label_history_append_only();
CREATE TRIGGER fill_step_queue_columns BEFORE INSERT OR UPDATE ON ballast_private.steps FOR EACH ROW WHEN ((new.task IS NULL)) EXECUTE FUNCTION ballast_private.fill_step_queue_columns();
CREATE TRIGGER stamp_updated_at BEFORE UPDATE ON ballast_private.steps FOR EACH ROW WHEN (((old.status IS DISTINCT FROM new.status) AND (NOT (old.updated_at IS DISTINCT FROM new.updated_at)))) EXECUTE FUNCTION ballast_private.stamp_updated_at();
CREATE TRIGGER steps_changed AFTER UPDATE ON ballast_private.steps REFERENCING OLD TABLE AS old_t NEW TABLE AS new_t FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.steps_changed();
CREATE TRIGGER steps_deleted AFTER DELETE ON ballast_private.steps REFERENCING OLD TABLE AS old_t FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.steps_deleted();
CREATE TRIGGER steps_inserted AFTER INSERT ON ballast_private.steps REFERENCING NEW TABLE AS new_t FOR EACH STATEMENT EXECUTE FUNCTION ballast_private.steps_inserted();

-- ==================== comments =================================================================================

comment on function ballast.add_eval_case(text,text,jsonb,jsonb,jsonb,text[],jsonb,text) is 'Add one case to a dataset (a new version). Operators.';
comment on function ballast.add_eval_cases(text,jsonb,text) is 'Add cases [{key, input, reference, checks, tags, source}] to a dataset as one new version (a key already there is replaced). Operators.';
comment on view ballast.alerts is 'Drift and budget alerts raised by ballast.check_alerts (docs/quality-alerts.md). Clients see their tenant''s budget alerts; operators and reporters see all.';
comment on column ballast.alerts.id is 'The alert''s id (ballast.ack_alert takes it).';
comment on column ballast.alerts.baseline is 'The metric in the baseline when raised (drift).';
comment on column ballast.alerts.threshold is 'The rule''s threshold (drift), or the USD amount of the percentage (budget).';
comment on column ballast.alerts.samples is 'Attempts in the window when raised (drift).';
comment on column ballast.alerts.baseline_samples is 'Attempts in the baseline when raised (drift).';
comment on column ballast.alerts.period_start is 'The start of the budget period (UTC).';
comment on column ballast.alerts.percent is 'The percentage of the limit reached (budget).';
comment on column ballast.alerts.raised_at is 'When it was raised.';
comment on column ballast.alerts.resolved_at is 'When it was resolved: the metric back within the threshold, the period over, or the rule deleted; null while open.';
comment on column ballast.alerts.open is 'Not resolved yet.';
comment on column ballast.alerts.acked_by is 'Who acknowledged it (ballast.ack_alert), if anyone.';
comment on column ballast.alerts.kind is 'drift or budget.';
comment on column ballast.alerts.acked_at is 'When.';
comment on column ballast.alerts.ack_note is 'Their note.';
comment on column ballast.alerts.rule is 'The name of the rule that raised it.';
comment on column ballast.alerts.rule_id is 'The id of that rule (a rule deleted and set again gets a new one).';
comment on column ballast.alerts.group_key is 'What it is about, as text: pipeline/step/prompt@version/provider:model (drift), [tenant/]scope value (budget).';
comment on column ballast.alerts.group is 'What it is about, as JSON: pipeline, step, prompt_name, prompt_version, model (drift); scope, value, tenant_id, period, limit_usd (budget).';
comment on column ballast.alerts.tenant_id is 'The tenant of a budget alert of scope tenant or end_user (its clients see it); null otherwise.';
comment on column ballast.alerts.metric is 'The metric watched (a column of ballast.quality_stats), or spend_usd.';
comment on column ballast.alerts.value is 'The metric in the window when raised, or the period''s spend in USD.';
comment on view ballast.attempts is 'One run of a step by a worker: every start of a step, with how it ended.';
comment on column ballast.attempts.id is 'The attempt id (a BigInt).';
comment on column ballast.attempts.error_class is 'The kind of error it ended with: permanent, retryable, timeout, worker_lost, blocked_worker, crashed_worker, output_contract, budget_exhausted, cooldown, a model failure class, or the class the step gave. Null when it did not fail.';
comment on column ballast.attempts.error_code is 'The code the step gave its error, if any. Null: none given, or no error.';
comment on column ballast.attempts.error_message is 'The error message. Null when it did not fail.';
comment on column ballast.attempts.error_retryable is 'True when the error allows another attempt. Null when it did not fail.';
comment on column ballast.attempts.duration_ms is 'How long it ran, in milliseconds. Null while it runs.';
comment on column ballast.attempts.contract_outcome is 'Model steps: how the answer met the output contract: valid_first_try, repaired (after a local repair or a re-ask), fell_back (a fallback model answered), degraded (the declared default), review or rejected. Null: not a model step, or not finished.';
comment on column ballast.attempts.contract_detail is 'Model steps: the details of that verdict (prompt, calls, re-asks, score, reason). Null: not a model step.';
comment on column ballast.attempts.model is 'Model steps: the model whose answer was used (provider:model). Null: not a model step, or no answer used.';
comment on column ballast.attempts.prompt_ref is 'Model steps: the prompt used, as name@version. Null: not a model step.';
comment on column ballast.attempts.fallback_used is 'Model steps: true when a fallback model gave the answer. Null: not a model step.';
comment on column ballast.attempts.step_id is 'The step it ran.';
comment on column ballast.attempts.quality_score is 'Model steps: the quality score of the answer, 0 to 1. Null: not scored.';
comment on column ballast.attempts.model_calls is 'How many model calls it made (each one is a modelCalls row). Null: not a model step.';
comment on column ballast.attempts.input_tokens is 'Model input tokens of its calls. Null: no model call was made.';
comment on column ballast.attempts.output_tokens is 'Model output tokens of its calls. Null: no model call was made.';
comment on column ballast.attempts.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.attempts.job_id is 'The job of that step.';
comment on column ballast.attempts.number is 'Its number among the attempts of the step, from 1.';
comment on column ballast.attempts.worker_id is 'The worker that ran it (see ballast.workers in SQL). Null: that worker row was deleted.';
comment on column ballast.attempts.outcome is 'running, or how it ended: succeeded, failed, crashed (its worker died), timed_out, cancelled, released (given back at a worker shutdown, not counted), parked (the step waits for an event or a cooldown, not counted) or needs_review.';
comment on column ballast.attempts.started_at is 'When the worker claimed the step.';
comment on column ballast.attempts.lease_expires_at is 'Until when the worker holds the step: extended by its heartbeats; an expired lease of a running attempt makes it crashed.';
comment on column ballast.attempts.finished_at is 'When it ended. Null while it runs.';
comment on view ballast.budget_alert_rules is 'Budget alert rules (ballast.set_budget_alert); null limit_usd: the tenant''s budget.';
comment on view ballast.budget_spend is 'Spend in the current period per budget alert rule and scope value with spend, and its ratio to the limit.';
comment on view ballast.budgets is 'The model spend limit of a tenant per UTC day, week or month, and what is spent and reserved in the current period. Tenants without a row have no limit.';
comment on column ballast.budgets.tenant_id is 'The tenant.';
comment on column ballast.budgets.limit_usd is 'The most its model calls may cost per period, in US dollars.';
comment on column ballast.budgets.period is 'The period of the limit: day, week or month (UTC).';
comment on column ballast.budgets.on_exhausted is 'What happens to a model step once the limit is reached: pause (it waits until the next period, or until the limit is raised) or fail (error class budget_exhausted).';
comment on column ballast.budgets.updated_at is 'When the budget was last set.';
comment on column ballast.budgets.period_start is 'When the current period started (UTC).';
comment on column ballast.budgets.spent_usd is 'What model calls cost in the current period, in US dollars.';
comment on column ballast.budgets.reserved_usd is 'What calls in flight have reserved (their highest possible cost), in US dollars.';
comment on column ballast.budgets.remaining_usd is 'The limit minus spent and reserved, in US dollars (negative when overspent by calls that reported more than reserved).';
comment on function ballast.cancel_job(bigint,text,text) is 'Cancel a job, its unfinished steps and its unfinished child jobs (recursively). Cancelling a cancelled job changes nothing (already_cancelled). Clients: jobs of their own tenant.';
comment on function ballast.compare_eval_runs(bigint,bigint,numeric) is 'Two eval runs case by case: scores, delta, regression / improvement / same / new / missing, cost and latency deltas.';
comment on function ballast.compare_prompt_arms(text,text,timestamp with time zone,timestamp with time zone,numeric,integer,integer) is 'A prompt canary''s arms on production traffic in one row: candidate (canary) against base (stable): rates, score, cost and latency with deltas, 95 % intervals, enough_data and whether the candidate regressed. Operators and reporters.';
comment on function ballast.create_dataset(text,text,text) is 'Create an eval dataset (version 0), or set its description. Operators.';
comment on view ballast.dead_letters is 'The steps that failed for good (status failed), with their last attempt and every attempt error: what to fix or replay (replayStep, replayJob: operators).';
comment on column ballast.dead_letters.step_id is 'The failed step.';
comment on column ballast.dead_letters.error_code is 'The code of its final error. Null: none given.';
comment on column ballast.dead_letters.error_message is 'The message of its final error. Null: none recorded.';
comment on column ballast.dead_letters.failed_at is 'When it failed.';
comment on column ballast.dead_letters.error_retryable is 'Whether its final error was retryable (true: it ran out of attempts; false: a permanent error). Null: not recorded.';
comment on column ballast.dead_letters.job_status is 'The status of the job now (failed, or cancelled, or running again after a replay of another step).';
comment on column ballast.dead_letters.pruned_at is 'When retention pruned the job (it can no longer be replayed). Null: not pruned.';
comment on column ballast.dead_letters.last_attempt_id is 'Its last attempt. Null: it failed without an attempt (e.g. an exhausted budget at claim).';
comment on column ballast.dead_letters.last_attempt_outcome is 'How its last attempt ended (failed, crashed, timed_out, ...). Null: no attempt.';
comment on column ballast.dead_letters.last_worker_id is 'The worker of its last attempt. Null: no attempt, or the worker row was deleted.';
comment on column ballast.dead_letters.last_attempt_started_at is 'When its last attempt started. Null: no attempt.';
comment on column ballast.dead_letters.job_id is 'Its job.';
comment on column ballast.dead_letters.last_attempt_finished_at is 'When its last attempt ended. Null: no attempt.';
comment on column ballast.dead_letters.attempt_errors is 'Every attempt, in order: number, outcome, error_class, error_message, started_at, finished_at. Null: no attempt.';
comment on column ballast.dead_letters.is_map_step is 'True for a map step (its items are steps of their own; a failed item can be replayed alone).';
comment on column ballast.dead_letters.tenant_id is 'The tenant of the job.';
comment on column ballast.dead_letters.pipeline is 'The pipeline of the job.';
comment on column ballast.dead_letters.pipeline_version is 'The version of that pipeline.';
comment on column ballast.dead_letters.step_name is 'The name of the step.';
comment on column ballast.dead_letters.attempts is 'How many times it was started.';
comment on column ballast.dead_letters.max_attempts is 'How many attempts it was allowed.';
comment on column ballast.dead_letters.error_class is 'The kind of its final error (e.g. permanent, timeout, blocked_worker, budget_exhausted). Null: none recorded.';
comment on function ballast.delete_schedule(text,text) is 'Delete a schedule; the jobs it submitted stay. Returns whether one was deleted.';
comment on view ballast.drift_rules is 'Drift rules (ballast.set_drift_rule).';
comment on view ballast.effect_intents is 'Every start of a side effect and whether its result was recorded: rows with recorded = false may have happened without ballast knowing the result.';
comment on view ballast.effects is 'The side-effect ledger: the recorded result of every ctx.effect / ctx.transaction of a step, reused by later attempts.';
comment on view ballast.end_user_paths is 'Where each pipeline''s job input names its end user (ballast.set_end_user_path).';
comment on view ballast.error_codes is 'The SQLSTATEs ballast raises (class BA) with their name and meaning.';
comment on view ballast.eval_cases is 'Eval cases of every version: a case is in version v when added_in_version <= v and (removed_in_version is null or > v).';
comment on column ballast.eval_cases.id is 'The case id (results name it).';
comment on column ballast.eval_cases.added_in_version is 'The dataset version that added it.';
comment on column ballast.eval_cases.removed_in_version is 'The dataset version that removed or replaced it. Null: still in.';
comment on column ballast.eval_cases.in_current_version is 'Whether the dataset''s current version has it.';
comment on column ballast.eval_cases.added_by is 'Who added it. Null: unknown.';
comment on column ballast.eval_cases.added_at is 'When it was added.';
comment on column ballast.eval_cases.dataset is 'Its dataset.';
comment on column ballast.eval_cases.case_key is 'Its key, unique among the cases of a version; runs are compared case by case on it.';
comment on column ballast.eval_cases.input is 'The variables the step renders its prompt with: {"input": job input, "deps": outputs of earlier steps} (and "item" for a map item).';
comment on column ballast.eval_cases.reference is 'The expected output (what exact, fields and numeric scorers compare with). Null: none.';
comment on column ballast.eval_cases.checks is 'Scorers for this case only, added to the run''s (same form as the run''s scorers).';
comment on column ballast.eval_cases.tags is 'Labels for slicing results.';
comment on column ballast.eval_cases.source is 'Where it came from: {"kind": manual | review | fallback | degraded | rejection | production, job_id, step_id, ...}.';
comment on column ballast.eval_cases.source_kind is 'source.kind.';
comment on view ballast.eval_datasets is 'Eval datasets: each version is an immutable set of cases; every change bumps the version.';
comment on column ballast.eval_datasets.name is 'The dataset name, e.g. support.triage.';
comment on column ballast.eval_datasets.description is 'What the dataset covers. Null: none given.';
comment on column ballast.eval_datasets.version is 'The current version (0: no case yet).';
comment on column ballast.eval_datasets.cases is 'How many cases the current version has.';
comment on column ballast.eval_datasets.created_by is 'Who created it. Null: unknown.';
comment on column ballast.eval_datasets.created_at is 'When it was created.';
comment on column ballast.eval_datasets.updated_at is 'When its cases last changed.';
comment on view ballast.eval_results is 'One row per run and case: the output, each scorer''s score, the case''s score and verdict, cost and latency.';
comment on column ballast.eval_results.run_id is 'The run.';
comment on column ballast.eval_results.judge_cost_usd is 'What a judge''s calls cost.';
comment on column ballast.eval_results.latency_ms is 'The step''s model calls'' latency, summed. Null: unknown (imported).';
comment on column ballast.eval_results.contract_outcome is 'The ladder''s verdict (valid_first_try, repaired, fell_back, degraded, rejected). Null: none.';
comment on column ballast.eval_results.error is 'Why the step failed ({class, code, message}). Null: it answered.';
comment on column ballast.eval_results.model_call_ids is 'The traces (ballast.model_calls) of this case''s calls, the judge''s included.';
comment on column ballast.eval_results.attempt_id is 'The attempt of the eval item that produced it. Null: imported.';
comment on column ballast.eval_results.recorded_at is 'When it was recorded.';
comment on column ballast.eval_results.case_id is 'The case.';
comment on column ballast.eval_results.case_key is 'The case key.';
comment on column ballast.eval_results.output is 'What the step answered. Null: it failed (see error).';
comment on column ballast.eval_results.reference is 'The case''s reference output. Null: none.';
comment on column ballast.eval_results.scores is 'Each scorer''s score (0 to 1) by scorer name, and a judge''s reasons.';
comment on column ballast.eval_results.score is 'The case''s score: the weighted mean of its scorers (0 when the step failed).';
comment on column ballast.eval_results.passed is 'score >= the run''s threshold.';
comment on column ballast.eval_results.cost_usd is 'What the step''s model calls cost.';
comment on function ballast.eval_run_comparison(bigint,bigint,numeric,integer) is 'Two eval runs in one row: mean delta with a 95 % bootstrap interval, counts, pass rates, cost and latency deltas, and whether the candidate regressed.';
comment on view ballast.eval_runs is 'Eval runs: a dataset version against a pipeline step, a prompt version and a model.';
comment on column ballast.eval_runs.id is 'The run id (compare_eval_runs takes two).';
comment on column ballast.eval_runs.scorers is 'The scorers applied to every case.';
comment on column ballast.eval_runs.threshold is 'The score a case needs to pass.';
comment on column ballast.eval_runs.label is 'A free label (e.g. a commit or a PR). Null: none.';
comment on column ballast.eval_runs.job_id is 'The ballast.eval job that runs it. Null: an imported run.';
comment on column ballast.eval_runs.tenant_id is 'The tenant the job runs as (its budget pays). Null: imported.';
comment on column ballast.eval_runs.status is 'queued, running, completed, imported, or failed / cancelled (its job).';
comment on column ballast.eval_runs.created_by is 'Who started it (job:<id> for a scheduled one). Null: unknown.';
comment on column ballast.eval_runs.created_at is 'When it was started.';
comment on column ballast.eval_runs.finished_at is 'When it finished. Null: not yet.';
comment on column ballast.eval_runs.summary is 'Its figures: cases, scored, passed, pass_rate, mean_score, cost_usd, latency_ms_p50/p95, errors, by_scorer. Null: not finished.';
comment on column ballast.eval_runs.dataset is 'The dataset.';
comment on column ballast.eval_runs.mean_score is 'summary.mean_score. Null: not finished.';
comment on column ballast.eval_runs.pass_rate is 'summary.pass_rate. Null: not finished.';
comment on column ballast.eval_runs.dataset_version is 'The dataset version it ran (fixed when it was started).';
comment on column ballast.eval_runs.pipeline is 'The pipeline whose step it evaluates.';
comment on column ballast.eval_runs.pipeline_version is 'Its version. Null: an imported run.';
comment on column ballast.eval_runs.step is 'The model step evaluated.';
comment on column ballast.eval_runs.prompt_name is 'The step''s prompt. Null: an imported run.';
comment on column ballast.eval_runs.prompt_version is 'The prompt version it ran. Null: unknown (imported).';
comment on column ballast.eval_runs.model is 'The model it ran (provider:model). Null: the step''s own models.';
comment on view ballast.eval_trend is 'Finished eval runs of each dataset over time, with the change of mean score since the previous run on the same dataset version: scheduled runs on a fixed dataset tell model drift from input drift.';
comment on column ballast.eval_trend.dataset is 'The dataset.';
comment on column ballast.eval_trend.mean_score is 'Its mean score.';
comment on column ballast.eval_trend.pass_rate is 'The fraction of cases that passed.';
comment on column ballast.eval_trend.cost_usd is 'What its step calls cost.';
comment on column ballast.eval_trend.latency_ms_p50 is 'The median latency per case.';
comment on column ballast.eval_trend.delta_vs_previous is 'mean_score minus the previous run''s on the same dataset version. Null: the first.';
comment on column ballast.eval_trend.returned_models is 'The models that answered (provider:returned model): a new snapshot behind the same name shows here. Null: no call.';
comment on column ballast.eval_trend.pipeline is 'The pipeline evaluated.';
comment on column ballast.eval_trend.step is 'The step evaluated.';
comment on column ballast.eval_trend.run_id is 'The run.';
comment on column ballast.eval_trend.created_at is 'When it started.';
comment on column ballast.eval_trend.dataset_version is 'The dataset version it ran.';
comment on column ballast.eval_trend.prompt_version is 'The prompt version. Null: unknown.';
comment on column ballast.eval_trend.model is 'The model asked for. Null: the step''s own.';
comment on column ballast.eval_trend.label is 'Its label. Null: none.';
comment on view ballast.events is 'The audit trail: one event per status change of a job or step and per operator action, never changed or deleted.';
comment on column ballast.events.id is 'The event id (a BigInt). Events are delivered in the order of the transactions that wrote them, so ids are not always increasing: resume a subscription after the last id you processed.';
comment on column ballast.events.at is 'When it happened (the time of the transaction that wrote it).';
comment on column ballast.events.job_id is 'The job it is about.';
comment on column ballast.events.step_id is 'The step it is about. Null: an event of the job as a whole.';
comment on column ballast.events.attempt_id is 'The attempt it is about. Null: not about one attempt.';
comment on column ballast.events.type is 'What happened: job_submitted, job_<status> (job_running, job_completed, ...), step_<status> (step_running, step_succeeded, step_retrying, ...), step_replayed, review_resolved, ...';
comment on column ballast.events.status is 'The new status of the job or step. Null: the event changed no status.';
comment on column ballast.events.actor is 'Who did it: system (ballast and its workers), reaper, watchdog or supervisor (recovery), jwt:<sub> (an API caller, from its token), reviewer:<name>, sql (a change made in psql), or the actor named in a call of a SQL function.';
comment on column ballast.events.reason is 'The reason given (e.g. to cancelJob or replayJob). Null: none given.';
comment on column ballast.events.data is 'Details of the event (e.g. the attempt number, the error, the next run time). Null: none.';
comment on view ballast.fair_shares is 'Fair sharing between tenants: on while the row ''*'' exists (ballast.set_fair_share); weights per tenant.';
comment on column ballast.fair_shares.tenant_id is 'A tenant, or * (the switch, with the default weight).';
comment on column ballast.fair_shares.weight is 'Its relative share while several tenants have queued work.';
comment on column ballast.fair_shares.finish_tag is 'The fair key its next job starts from at the earliest (virtual time).';
comment on column ballast.fair_shares.set_by is 'Who set its weight.';
comment on column ballast.fair_shares.set_at is 'When.';
comment on function ballast.fire_schedules(integer) is 'Fire the due schedules (workers call it every second): each due slot submits its job once, keyed schedule:<id>:<slot>.';
comment on view ballast.gate_history is 'Every pause, resume and limit change, oldest first by id (append-only).';
comment on column ballast.gate_history.id is 'Its position in the history (ascending).';
comment on column ballast.gate_history.action is 'pause, resume, set_limit or delete_limit.';
comment on column ballast.gate_history.key is 'The key paused or resumed, or the pattern of the limit.';
comment on column ballast.gate_history.until is 'For a pause: when it ends (null: until resumed).';
comment on column ballast.gate_history.reason is 'Why, as given.';
comment on column ballast.gate_history.data is 'For a limit: its kind, amount, per and burst.';
comment on column ballast.gate_history.actor is 'Who did it.';
comment on column ballast.gate_history.step_id is 'The step that paused the key (ctx.pauseKey), if a step did.';
comment on column ballast.gate_history.at is 'When.';
comment on function ballast.import_eval_run(text,jsonb,text,text,text,integer,text,text) is 'Record a run scored outside ballast, to compare it. Operators.';
comment on view ballast.job_prompts is 'The prompt version each job got for a label, pinned at its first model step: its later steps, retries and replays use it.';
comment on column ballast.job_prompts.job_id is 'The job.';
comment on column ballast.job_prompts.tenant_id is 'Its tenant.';
comment on column ballast.job_prompts.prompt_name is 'The prompt.';
comment on column ballast.job_prompts.label is 'The label its steps named.';
comment on column ballast.job_prompts.version is 'The version it got (model_calls.prompt_version of its calls).';
comment on column ballast.job_prompts.arm is 'stable (the label''s version) or canary (the canary''s candidate).';
comment on column ballast.job_prompts.pinned_at is 'When the version was chosen.';
comment on view ballast.job_transitions is 'The allowed changes of a job status; via_replay ones only through replay_step / replay_job.';
comment on view ballast.jobs is 'A job: one run of a pipeline on one input, made of steps. Clients see the jobs of their own tenant; operators and reporters see every tenant.';
comment on column ballast.jobs.id is 'The job id (a BigInt, sent as a string in GraphQL: "42").';
comment on column ballast.jobs.error is 'Why the job failed: the error of the failed step (class, code, message, retryable) with the step name and id. Null unless the job failed.';
comment on column ballast.jobs.created_at is 'When it was submitted.';
comment on column ballast.jobs.started_at is 'When its first step started running. Null: nothing has run yet.';
comment on column ballast.jobs.finished_at is 'When it reached a final status (completed, partially_completed, failed, cancelled). Null while it is not finished.';
comment on column ballast.jobs.updated_at is 'When its status or counters last changed.';
comment on column ballast.jobs.input_tokens is 'Model input tokens used by all its steps, summed over every model call. Null: no model call was made.';
comment on column ballast.jobs.output_tokens is 'Model output tokens used by all its steps, summed over every model call. Null: no model call was made.';
comment on column ballast.jobs.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.jobs.pruned_at is 'When retention cleared its payloads (input, result, step outputs; statuses, errors and costs stay). A pruned job cannot be replayed. Null: not pruned.';
comment on column ballast.jobs.parent_job_id is 'The job whose step started this one as a child job (ctx.startChildren); null for a job submitted otherwise.';
comment on column ballast.jobs.tenant_id is 'The tenant the job belongs to (1 to 200 bytes; "default" when none was named).';
comment on column ballast.jobs.parent_step_id is 'The step that started this job as a child job; null for a job submitted otherwise.';
comment on column ballast.jobs.run_at is 'When it was submitted to start, if later than its submission (run_at or delay_ms): it is scheduled until then. Null: it was queued at once. An INSERT may set it.';
comment on column ballast.jobs.deadline is 'When it must have finished: then its unfinished steps fail (deadline_exceeded) and so does the job. Null: no deadline. An INSERT may set it.';
comment on column ballast.jobs.expires_at is 'When it must have started: if it is still scheduled or queued then, it fails (expired). Null: no limit. An INSERT may set it.';
comment on column ballast.jobs.pipeline is 'The pipeline it runs, e.g. demo.wordstats.';
comment on column ballast.jobs.pipeline_version is 'The version of the pipeline it runs (fixed at submission: the newest then, or the one asked for).';
comment on column ballast.jobs.idempotency_key is 'The key it was submitted with (1 to 500 bytes, unique per tenant): submitting again with it returns this job. Null: submitted without a key.';
comment on column ballast.jobs.input is 'The job input, as submitted (checked against the input contract of the pipeline). JSON null after retention pruned the job (see prunedAt).';
comment on column ballast.jobs.status is 'queued (no step has run yet), running, waiting (for an event), retrying (a step waits for its next attempt), needs_review (a step waits for a person), then one of the final statuses: completed, partially_completed (only items of a map step that allows it failed), failed or cancelled. Derived from the statuses of its steps.';
comment on column ballast.jobs.priority is 'From -1000 to 1000; lower runs first. 0 unless given at submission.';
comment on column ballast.jobs.result is 'The output of its final step (with several final steps, an object of their outputs by step name). Null until the job completes, and after retention pruned it.';
comment on view ballast.limits is 'Rate and concurrency limits on keys (ballast.set_limit), enforced at claim by every worker.';
comment on column ballast.limits.pattern is 'An exact key, or a prefix ending in * (one limit per matching key).';
comment on column ballast.limits.kind is 'requests (steps per period), weight (step weights per period) or running (steps at once).';
comment on column ballast.limits.amount is 'How many steps (or how much weight) per period, or at once.';
comment on column ballast.limits.per is 'The period of a rate; null for running.';
comment on column ballast.limits.burst is 'How many may start at once after a quiet time (1: evenly spaced).';
comment on column ballast.limits.note is 'Why the limit exists, as given.';
comment on column ballast.limits.set_by is 'Who set it last.';
comment on column ballast.limits.set_at is 'When it was set last.';
comment on column ballast.limits.keys_seen is 'How many distinct keys it has applied to so far.';
comment on view ballast.model_cache_settings is 'Pipelines whose model answers are reused across their jobs of the same tenant (ballast.set_model_cache).';
comment on column ballast.model_cache_settings.pipeline is 'The pipeline (every version).';
comment on column ballast.model_cache_settings.ttl is 'How old a stored answer may be to be reused.';
comment on column ballast.model_cache_settings.set_by is 'Who turned it on or set the ttl.';
comment on column ballast.model_cache_settings.set_at is 'When.';
comment on view ballast.model_call_savings is 'Model answers reused instead of bought again (paid once), and what that saved, by pipeline, tenant, model and reuse kind.';
comment on column ballast.model_call_savings.pipeline is 'The pipeline of the jobs that reused answers.';
comment on column ballast.model_call_savings.tenant_id is 'Their tenant.';
comment on column ballast.model_call_savings.provider is 'The provider not called again.';
comment on column ballast.model_call_savings.model is 'The model not called again.';
comment on column ballast.model_call_savings.reuse_kind is 'retry, replay or cache (see ballast.model_calls.reuse_kind).';
comment on column ballast.model_call_savings.reused_calls is 'How many calls were not made.';
comment on column ballast.model_call_savings.cost_saved_usd is 'What they would have cost, in US dollars (the originals'' cost).';
comment on column ballast.model_call_savings.first_at is 'The first reuse.';
comment on column ballast.model_call_savings.last_at is 'The latest reuse.';
comment on view ballast.model_calls is 'One call of a model step to a model provider (its trace): who answered, how long it took, tokens, cost, and what was wrong with the answer. Calls skipped for a cooldown or an exhausted budget are recorded too.';
comment on column ballast.model_calls.id is 'The call id (a BigInt).';
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
comment on column ballast.model_calls.attempt_id is 'The attempt that made the call.';
comment on column ballast.model_calls.first_token_ms is 'Time to the first token, in milliseconds (streamed calls). Null: not streamed, or no answer.';
comment on column ballast.model_calls.finish_reason_raw is 'Why the model stopped, as the provider said it. Null: no answer.';
comment on column ballast.model_calls.finish_reason is 'Why the model stopped, normalised: stop, length, content_filter, refusal, tool_calls, error, other. Null: no answer.';
comment on column ballast.model_calls.input_tokens is 'Input tokens charged. Null: not reported (see usageMissing) or no answer.';
comment on column ballast.model_calls.output_tokens is 'Output tokens charged. Null: not reported (see usageMissing) or no answer.';
comment on column ballast.model_calls.cached_input_tokens is 'Input tokens read from the provider cache (cheaper). Null: not reported.';
comment on column ballast.model_calls.cache_write_tokens is 'Input tokens written to the provider cache. Null: not reported.';
comment on column ballast.model_calls.reasoning_tokens is 'Output tokens spent on reasoning (already in outputTokens). Null: not reported.';
comment on column ballast.model_calls.cost_usd is 'What the call cost, in US dollars, at the price in force when it started; with usageMissing, the estimate reserved for it. Null: no price known (see priceMissing), or the call was not made.';
comment on column ballast.model_calls.price_valid_from is 'Since when the price used was in force (ballast.model_prices). Null: no price found.';
comment on column ballast.model_calls.step_id is 'The step of that attempt.';
comment on column ballast.model_calls.price_missing is 'True when the call should have a cost but no price was found for its provider and model.';
comment on column ballast.model_calls.error_class is 'What went wrong: unparsable, schema, truncated, refusal, quota, transport, client, quality, cooldown (skipped: the model was cooling down), budget (skipped: budget exhausted), ... Null: the answer was accepted.';
comment on column ballast.model_calls.error_code is 'The provider error code, if it gave one. Null: none.';
comment on column ballast.model_calls.error_message is 'The error message. Null: no error.';
comment on column ballast.model_calls.retryable is 'True when the error may pass on a later attempt (e.g. 429, 5xx, timeout). Null: no error.';
comment on column ballast.model_calls.http_status is 'The HTTP status of the provider response. Null: no HTTP response (local model, or no connection).';
comment on column ballast.model_calls.request_id is 'The request id the provider returned (quote it to the provider). Null: none.';
comment on column ballast.model_calls.response_id is 'The response id the provider returned. Null: none.';
comment on column ballast.model_calls.raw_output is 'The answer as received, at most 65,536 characters (a longer one is cut, ending with its length and SHA-256). Null: no answer, or pruned by retention.';
comment on column ballast.model_calls.validation_issues is 'Why the answer failed the output contract: a list of {path, message}. Null: it passed, or pruned by retention.';
comment on column ballast.model_calls.job_id is 'The job of that step.';
comment on column ballast.model_calls.repair_method is 'How an invalid answer was repaired locally (e.g. a JSON repair). Null: no repair.';
comment on column ballast.model_calls.score is 'The quality score of the answer, 0 to 1. Null: not scored.';
comment on column ballast.model_calls.quality is 'The quality verdict: the rules checked and their results. Null: no quality checks.';
comment on column ballast.model_calls.usage_missing is 'True when the provider answered without token counts: costUsd is then the estimate reserved for the call.';
comment on column ballast.model_calls.request_key is 'The SHA-256 of what was asked (model, system prompt, messages, output schema, temperature, max output tokens, structured mode): calls with the same key asked the same. Null: not recorded (a call before 0042).';
comment on column ballast.model_calls.output_complete is 'True when rawOutput holds the whole answer exactly as received (not cut, nothing escaped), so it can be reused.';
comment on column ballast.model_calls.reused_from is 'The call whose stored answer this one used instead of calling the provider (it may have been pruned since). Null: a real call.';
comment on column ballast.model_calls.reuse_kind is 'Why a stored answer was used: retry (an earlier attempt of the step got it), replay (it was got before the step was replayed) or cache (another job of the pipeline got it; ballast.set_model_cache). Null: a real call.';
comment on column ballast.model_calls.cost_saved_usd is 'For a reused answer: what the original call cost, in US dollars, not spent again. Null: a real call, or an unpriced original.';
comment on column ballast.model_calls.tenant_id is 'The tenant of that job (whose budget paid).';
comment on column ballast.model_calls.rung is 'Where in the ladder: primary (the first model), reask (the same model asked again with the problems listed) or fallback.';
comment on column ballast.model_calls.model_index is 'Which model of the step: 0 is its model, 1 and up its fallbacks in order.';
comment on column ballast.model_calls.provider is 'The provider called, e.g. openai, anthropic, ollama, local.';
comment on column ballast.model_calls.provider_kind is 'The protocol of that provider (e.g. openai, anthropic, openai-compatible, local). Null: not known.';
comment on view ballast.model_prices is 'Model prices in US dollars per million tokens (input, output, cached input), each valid from a date.';
comment on view ballast.model_tokens is 'Live tokens: the text streaming model steps sent, in batches (seq order per step), kept until shortly after the step is final. The durable record is ballast.model_calls.raw_output.';
comment on column ballast.model_tokens.step_id is 'The model step that streamed.';
comment on column ballast.model_tokens.end_offset is 'start_offset plus the length of the text.';
comment on column ballast.model_tokens.text is 'The text of this batch (empty on a done row).';
comment on column ballast.model_tokens.first is 'True on the first batch of a call: the text before it belongs to another answer.';
comment on column ballast.model_tokens.done is 'True on the row that ends an attempt''s streaming.';
comment on column ballast.model_tokens.at is 'When the batch was written.';
comment on column ballast.model_tokens.seq is 'The order of the batches (of one step: ascending).';
comment on column ballast.model_tokens.job_id is 'The job of that step.';
comment on column ballast.model_tokens.tenant_id is 'The tenant of that job.';
comment on column ballast.model_tokens.attempt_id is 'The attempt whose call streamed this text.';
comment on column ballast.model_tokens.segment is 'The call within that attempt, from 1 (a re-ask or a fallback model is a new call).';
comment on column ballast.model_tokens.rung is 'primary, reask or fallback (as in ballast.model_calls). Null on a done row.';
comment on column ballast.model_tokens.model is 'The model called (provider:model). Null on a done row.';
comment on column ballast.model_tokens.start_offset is 'Where the text starts in the step''s token log, in characters from the first one the step streamed.';
comment on view ballast.oldest_transactions is 'Open transactions of this database, oldest first: a long one holds vacuum back and slows the queue (see README, Guarantees).';
comment on function ballast.pause_schedule(text,boolean,text,text,text) is 'Pause a schedule (paused true) or resume it (false): a resumed schedule fires next at its first slot after now.';
comment on view ballast.pauses is 'Paused keys (ballast.pause_key): a step with one of these keys is not started while the pause is in force.';
comment on column ballast.pauses.key is 'The key (e.g. tenant:acme, pipeline:summarize, provider:openai).';
comment on column ballast.pauses.until is 'When the pause ends; null: until resumed.';
comment on column ballast.pauses.reason is 'Why, as given.';
comment on column ballast.pauses.paused_by is 'Who paused it (the actor).';
comment on column ballast.pauses.paused_at is 'When it was paused (or extended) last.';
comment on column ballast.pauses.step_id is 'The step that paused it (ctx.pauseKey), if a step did.';
comment on column ballast.pauses.in_force is 'Whether it holds steps back now (false: its time has passed).';
comment on view ballast.pipelines is 'The registered pipelines, one row per version (workers register theirs when they start). Submit a job with its name.';
comment on column ballast.pipelines.name is 'The pipeline name, e.g. demo.wordstats (what submitJob takes).';
comment on column ballast.pipelines.version is 'Its version, from 1 (a new version is registered when the steps or contracts change).';
comment on column ballast.pipelines.definition is 'Its steps: name, dependencies, retries, timeout, concurrency, contracts; and its limits (e.g. max_input_bytes).';
comment on column ballast.pipelines.input_schema is 'The JSON Schema every job input must satisfy (checked in Postgres at submission).';
comment on column ballast.pipelines.definition_hash is 'The SHA-256 of the definition (hex): registering the same version with another definition is refused.';
comment on column ballast.pipelines.registered_at is 'When this version was first registered.';
comment on function ballast.promote_to_dataset(bigint,text,text,jsonb,text[],text) is 'Make a production step a case of a dataset: its real variables as input, the approved or edited output (else its output) as reference. Operators.';
comment on view ballast.prompt_label_history is 'Every move of a prompt label or canary, oldest first by id (append-only).';
comment on column ballast.prompt_label_history.id is 'Its position in the history (ascending).';
comment on column ballast.prompt_label_history.reason is 'Why, as given.';
comment on column ballast.prompt_label_history.at is 'When.';
comment on column ballast.prompt_label_history.prompt_name is 'The prompt.';
comment on column ballast.prompt_label_history.label is 'The label.';
comment on column ballast.prompt_label_history.action is 'set (the label moved or was created), canary (a canary set or changed) or clear_canary.';
comment on column ballast.prompt_label_history.from_version is 'The version the label pointed at before; null when the label was created.';
comment on column ballast.prompt_label_history.to_version is 'The version it points at after.';
comment on column ballast.prompt_label_history.canary_version is 'The canary candidate after the move (for clear_canary: the one that ended); null: none.';
comment on column ballast.prompt_label_history.canary_share is 'Its share of new jobs.';
comment on column ballast.prompt_label_history.actor is 'Who did it.';
comment on view ballast.prompt_labels is 'Prompt labels: the version each (prompt, label) points at, and its canary if one is in force.';
comment on column ballast.prompt_labels.prompt_name is 'The prompt.';
comment on column ballast.prompt_labels.label is 'The label, e.g. production or staging.';
comment on column ballast.prompt_labels.version is 'The version new jobs get (outside the canary).';
comment on column ballast.prompt_labels.canary_version is 'The candidate version of a canary in force; null: no canary.';
comment on column ballast.prompt_labels.canary_share is 'The fraction of new jobs that get the candidate (more than 0, at most 1); null: no canary.';
comment on column ballast.prompt_labels.updated_by is 'Who moved the label or its canary last.';
comment on column ballast.prompt_labels.updated_at is 'When.';
comment on view ballast.prompts is 'Every registered version of every prompt, with its template and hash.';
comment on view ballast.provider_cooldowns is 'Providers and models that refused calls (429, 529): no worker calls them until the cooldown ends.';
comment on view ballast.queue_depth is 'Per pipeline, the live steps by status and how long the oldest runnable one has waited.';
comment on function ballast.remove_eval_case(text,text) is 'Remove a case from a dataset (a new version; earlier versions keep it). Operators.';
comment on function ballast.replay_job(bigint,text,text,text,boolean) is 'Run the failed or cancelled steps of a job again, or everything from a named step on; model answers got before are reused unless fresh_calls. Operators only.';
comment on function ballast.replay_step(bigint,text,boolean,text,boolean) is 'Run a finished step again, and the steps that depend on it. A succeeded step needs force; model answers got before are reused unless fresh_calls. Operators only.';
comment on function ballast.resolve_review(bigint,text,jsonb,text,text) is 'Decide a step in needs_review: approve (keep the proposed output), edit (use the output given, checked against the contract) or reject (fail the step). Operators only.';
comment on view ballast.reviews is 'The steps waiting for a person (status needs_review), with the proposed output: decide with resolveReview (operators).';
comment on column ballast.reviews.step_id is 'The step waiting for a decision.';
comment on column ballast.reviews.requested_at is 'When the step asked for review.';
comment on column ballast.reviews.job_id is 'Its job.';
comment on column ballast.reviews.tenant_id is 'The tenant of the job.';
comment on column ballast.reviews.pipeline is 'The pipeline of the job.';
comment on column ballast.reviews.pipeline_version is 'The version of that pipeline.';
comment on column ballast.reviews.step_name is 'The name of the step.';
comment on column ballast.reviews.reason is 'Why it needs a person (e.g. the quality rule that failed). Null: no reason given.';
comment on column ballast.reviews.proposed_output is 'The output the step proposes (APPROVE keeps it). Null: none (then only EDIT or REJECT).';
comment on column ballast.reviews.detail is 'More about the request (e.g. the answers of the models tried). Null: none.';
comment on view ballast.schedules is 'Cron schedules: each fires a job of its pipeline per slot of its cron expression in its time zone (create with ballast.set_schedule).';
comment on column ballast.schedules.id is 'The schedule''s id.';
comment on column ballast.schedules.on_missed is 'Slots missed while no worker fired them: skip (fire only a slot at most a minute late) or catch_up (fire each, at most maxCatchUp).';
comment on column ballast.schedules.max_catch_up is 'With catch_up: the most missed slots fired at once (the most recent ones).';
comment on column ballast.schedules.paused is 'True: it fires nothing until resumed (slots passed meanwhile are not caught up).';
comment on column ballast.schedules.paused_reason is 'Why it was paused, as given.';
comment on column ballast.schedules.next_fire_at is 'Its next slot. Null: paused, or the expression never fires again.';
comment on column ballast.schedules.last_fired_at is 'When it last submitted a job (by the database clock).';
comment on column ballast.schedules.last_slot is 'The slot of its last submitted job.';
comment on column ballast.schedules.last_job_id is 'The job its last fire submitted (or found: a slot submitted before).';
comment on column ballast.schedules.last_error is 'Why its last fire could not submit a slot (e.g. the input no longer satisfies the pipeline''s contract); null after a fire that submitted every slot.';
comment on column ballast.schedules.fired_count is 'Slots fired since it was created.';
comment on column ballast.schedules.tenant_id is 'The tenant its jobs belong to.';
comment on column ballast.schedules.skipped_count is 'Slots missed and not fired (on_missed skip, or beyond maxCatchUp).';
comment on column ballast.schedules.created_at is 'When it was created.';
comment on column ballast.schedules.updated_at is 'When it was last changed (created, edited, paused, resumed).';
comment on column ballast.schedules.created_by is 'Who created it.';
comment on column ballast.schedules.updated_by is 'Who changed it last.';
comment on column ballast.schedules.name is 'Its name, unique per tenant (letters, digits, _ . : -).';
comment on column ballast.schedules.pipeline is 'The pipeline each fire submits a job of.';
comment on column ballast.schedules.pipeline_version is 'The version submitted; null: the latest registered version at each fire.';
comment on column ballast.schedules.input is 'The input of every job it submits (checked against the pipeline''s input contract at each fire).';
comment on column ballast.schedules.priority is 'The priority of the jobs it submits.';
comment on column ballast.schedules.cron is 'Five fields, minute hour day-of-month month day-of-week (e.g. */15 9-17 * * mon-fri), or @hourly, @daily, @weekly, @monthly, @yearly.';
comment on column ballast.schedules.time_zone is 'The time zone the expression is read in (e.g. Europe/Paris; default UTC).';
comment on function ballast.send_event(text,jsonb,text,text) is 'Deliver an event to the steps of one tenant waiting for its key (and to those that will wait for it). A key is delivered once (accepted = false the second time).';
comment on function ballast.set_auto_promotion(text,text,text,text[],text) is 'Resolved reviews of a pipeline step become cases of a dataset (null dataset: off). Operators.';
comment on function ballast.set_model_cache(text,interval,text) is 'Reuse model answers across the jobs of a pipeline (same tenant) for ttl. Operators only.';
comment on function ballast.set_schedule(text,text,text,jsonb,text,text,integer,integer,text,integer,text) is 'Create or replace a cron schedule of a tenant (clients: their own): each slot of the expression in the time zone submits a job of the pipeline with the input, once.';
comment on view ballast.signals is 'The events delivered by send_event, per tenant and key (a key is delivered once).';
comment on function ballast.sleep_step(bigint,text,double precision,timestamp with time zone) is 'A step''s durable sleep (ctx.sleep): records the wake time of (step, key) once; parks the step until then (workers call it).';
comment on function ballast.start_child_jobs(bigint,jsonb) is 'A step starts child jobs (ctx.startChildren): one job per {key, pipeline, version?, input?}, idempotent per (step, key); workers call it.';
comment on function ballast.start_eval_run(text,text,text,integer,text,jsonb,numeric,text,integer,integer,text,text) is 'Start an eval run: a job of ballast.eval over the dataset''s cases against a pipeline''s model step, prompt version and model. Operators.';
comment on view ballast.step_items is 'The items of map steps: each item with its status, attempts, output and error.';
comment on view ballast.step_transitions is 'The allowed changes of a step status, with why each happens; via_replay ones only through replay_step / replay_job.';
comment on view ballast.steps is 'A step of a job: one unit of work of the pipeline (or one item of a map step), run and retried on its own.';
comment on column ballast.steps.id is 'The step id (a BigInt).';
comment on column ballast.steps.progress is 'The latest progress value the running step reported (any JSON). Null: none reported.';
comment on column ballast.steps.next_run_at is 'When a retrying step is due to run again. Null unless it is retrying.';
comment on column ballast.steps.concurrency_key is 'Its concurrency group: at most concurrencyLimit steps with the same key run at once. Null: no limit.';
comment on column ballast.steps.concurrency_limit is 'At most this many steps of its concurrency group run at once. Null: no limit.';
comment on column ballast.steps.timeout_ms is 'How long one attempt may run, in milliseconds, before it is aborted as timed_out. Null: no timeout.';
comment on column ballast.steps.created_at is 'When it was created (with its job).';
comment on column ballast.steps.queued_at is 'When it last became queued (ready to run). Null: never queued yet.';
comment on column ballast.steps.started_at is 'When its latest attempt started. Null: it has not run.';
comment on column ballast.steps.finished_at is 'When it reached a final status. Null while it is not finished.';
comment on column ballast.steps.updated_at is 'When it last changed.';
comment on column ballast.steps.job_id is 'The job it belongs to.';
comment on column ballast.steps.attempt_offset is 'Attempts that do not count against maxAttempts: given back at a worker shutdown, parked for an event or a cooldown, or made before a replay. Attempts counted: attemptCount minus this.';
comment on column ballast.steps.wait_key is 'The event key a waiting step waits for (sendEvent delivers it). Null when it sleeps, waits for its items (a map step), or never waited.';
comment on column ballast.steps.wait_deadline is 'When a waiting step stops waiting (then waitOnTimeout applies); for a sleeping step, when it wakes. Null: it waits without a deadline.';
comment on column ballast.steps.wait_on_timeout is 'What the wait deadline does: fail (the step fails), retry (it runs again, charged) or resume (a sleep ends: it runs again, uncharged). Null unless it waits or has waited.';
comment on column ballast.steps.input_tokens is 'Model input tokens of all its attempts. Null: no model call was made.';
comment on column ballast.steps.output_tokens is 'Model output tokens of all its attempts. Null: no model call was made.';
comment on column ballast.steps.cost_usd is 'What its model calls cost, in US dollars. Null: no model call was made.';
comment on column ballast.steps.review is 'The human review of a model step: reason, proposed output, detail and requested_at; once decided also decision (approve, edit or reject), reviewer and note. Null: never sent to review.';
comment on column ballast.steps.waiting_for is 'What a waiting step waits for: event (the key in waitKey), time (a sleep until waitDeadline), children (its child jobs) or items (a map step, for its items to finish). Null unless it is waiting.';
comment on column ballast.steps.name is 'Its name in the pipeline, e.g. count (unique within the job).';
comment on column ballast.steps.status is 'pending (waits for the steps it depends on), queued, running, retrying (waits for its next attempt, at nextRunAt), waiting (for the event named by waitKey, or a map step with no waitKey for its items), needs_review (waits for a person), then one of the final statuses: succeeded, failed, cancelled or skipped (a step it depends on failed).';
comment on column ballast.steps.depends_on is 'The names of the steps that must succeed before it runs (empty: it runs first).';
comment on column ballast.steps.attempts is 'How many times a worker has started it, every start counted (also those that do not count against maxAttempts, see attemptOffset).';
comment on column ballast.steps.max_attempts is 'How many attempts it may use before it fails for good (1 to 1000).';
comment on column ballast.steps.output is 'What it returned, checked against its output contract. Null until it succeeds, and after retention pruned the job.';
comment on column ballast.steps.error is 'Its last error: class, code, message and retryable (true when another attempt may succeed). Null when its last attempt did not fail.';
comment on function ballast.stop_model_cache(text) is 'Stop reusing model answers across the jobs of a pipeline. Operators only.';
comment on view ballast.stuck_work is 'Work that is not moving, with the default thresholds: steps queued for 5 minutes; leases, retries and wait deadlines overdue by a minute.';
comment on function ballast.submit_job(text,jsonb,text,text,integer,integer,timestamp with time zone,double precision,timestamp with time zone,timestamp with time zone,jsonb,jsonb) is 'Start a job of a pipeline on an input (checked against the input contract). The same idempotency key with the same request returns the existing job (created = false). Restricted callers (clients) submit for their own tenant only. run_at or delay_ms (not both): the job is scheduled until then; deadline: it fails unless finished by then; expires_at: it fails unless started by then; debounce {key, quiet_ms, max_wait_ms} or throttle {key, period_ms}: one job per burst, or per period, of submissions with the key.';
comment on function ballast.submit_jobs(text,jsonb[],text[],text,integer,integer,timestamp with time zone,double precision,timestamp with time zone,timestamp with time zone) is 'Start many jobs of one pipeline in one statement, all or nothing (at most 1000), one result per input in input order (ord from 1). run_at or delay_ms (not both): every job is scheduled until then; deadline and expires_at: as submit_job, for every job.';
comment on function ballast.wait_for_children(bigint,bigint[],integer) is 'A step waits for its child jobs (ctx.waitForChildren): all, or the first n to complete; parks the step until then (workers call it).';
comment on view ballast.workers is 'The worker processes: host, pid, concurrency, pipelines, last heartbeat; stopped_at once they stopped.';
comment on table ballast_private.alerts is 'Alerts raised by ballast.check_alerts (0045).';
comment on table ballast_private.budget_alert_rules is 'Budget alerts (0045): spend thresholds per scope and period.';
comment on function ballast_private.derive_job_status(integer,integer,integer,integer,integer,integer,integer,integer,integer,integer) is 'A job''s status from its step counters (rules of 0003, first match wins); used by update_job_counters.';
comment on table ballast_private.drift_rules is 'Drift rules (0045): a metric of quality_stats watched per group of a pipeline against a baseline.';
comment on table ballast_private.effect_intents is 'Effects started (ballast.begin_effect) before fn ran: one row per step, key and attempt. An intent without a row in ballast_private.effects for the same step and key is an effect that may or may not have happened.';
comment on table ballast_private.end_user_paths is 'Per pipeline, where its job input names the end user (0045); read by end_user budget alerts.';
comment on table ballast_private.eval_auto_promotions is 'Auto-promotion (0044): a review of this pipeline step resolved with one of these decisions adds a case to the dataset.';
comment on table ballast_private.eval_cases is 'Eval cases (0044): in version v of their dataset when added_in_version <= v < coalesce(removed_in_version, infinity).';
comment on table ballast_private.eval_datasets is 'Eval datasets (0044): a name and its current version; every change to its cases bumps the version.';
comment on table ballast_private.eval_results is 'Eval results (0044): one per run and case (a retried item replaces its row).';
comment on table ballast_private.eval_runs is 'Eval runs (0044): a dataset version against a pipeline step, prompt version and model; job_id is the ballast.eval job (null for an imported run).';
comment on column ballast_private.events.tx is 'The writing transaction (pg_current_xact_id()). Events are delivered in (tx, id) order once tx is below pg_snapshot_xmin(pg_current_snapshot()).';
comment on table ballast_private.fair_shares is 'Fair sharing (0040): the row ''*'' turns it on and holds the default weight; a tenant''s row its weight and last finish tag.';
comment on table ballast_private.gate_history is 'Every pause, resume and limit change (append-only).';
comment on table ballast_private.job_prompts is 'The prompt version each job got for a label (0041): pinned at its first resolution, used by every later step, retry and replay.';
comment on column ballast_private.jobs.n_total is 'Counters of the job''s steps by status (n_*), kept by the statement triggers of 0013; the job status is derived from them.';
comment on column ballast_private.jobs.parent_job_id is 'The job whose step started this one (ctx.startChildren, 0038); null for a job submitted otherwise.';
comment on column ballast_private.jobs.parent_step_id is 'The step that started this job (ctx.startChildren, 0038); null for a job submitted otherwise.';
comment on column ballast_private.jobs.run_at is 'The start time it was submitted with (run_at, or now + delay_ms), when that was later than its submission; null: it was queued at once.';
comment on column ballast_private.jobs.deadline is 'When it must have finished: then its live steps fail (deadline_exceeded) and so does the job. Null: no deadline.';
comment on column ballast_private.jobs.expires_at is 'When it must have started: then, if it is still scheduled or queued, it fails (expired). Null: it waits as long as it takes.';
comment on column ballast_private.jobs.debounce_key is 'The debounce key it was submitted with: later submissions of the key (same tenant and pipeline) replace its input while it is scheduled.';
comment on column ballast_private.jobs.debounce_until is 'The latest start a debounced job may be pushed to (its first submission + max_wait_ms); null: no limit.';
comment on column ballast_private.jobs.throttle_key is 'The throttle key it was submitted with: submissions of the key (same tenant and pipeline) within the period after it return it.';
comment on table ballast_private.limit_buckets is 'One row per key a limit applies to: the lock claims take, and for rates the GCRA theoretical arrival time.';
comment on table ballast_private.limits is 'Rate and concurrency limits on keys (0037), enforced by claim_steps (gate_steps).';
comment on function ballast_private.lock_idempotency_key(text,text) is 'A transaction lock on one idempotency key of one tenant: submissions of that key through submit_job and INSERT INTO ballast.jobs wait for each other.';
comment on table ballast_private.model_cache is 'Paid once (0042): pipelines whose model answers are reused across their jobs (same tenant), and for how long.';
comment on table ballast_private.pauses is 'Keys closed to claims (0037): a step with one of these keys is parked until the pause ends or is resumed.';
comment on table ballast_private.prompt_label_history is 'Every move of a prompt label or canary (0041), append-only.';
comment on table ballast_private.prompt_labels is 'Prompt labels (0041): (name, label) -> version, with an optional canary version and share.';
comment on table ballast_private.schedules is 'Cron schedules (0033): each fires an idempotent submission of its pipeline per slot; see ballast.fire_schedules.';
comment on table ballast_private.step_call_marks is 'Paid once (0042): model call watermarks of replayed steps (replay_step).';
comment on table ballast_private.step_sleeps is 'The wake time of each sleep of a step (ctx.sleep(key, ...)), recorded by its first call (0034).';
comment on column ballast_private.steps.items_open is 'A map step: how many of its items are not final yet (kept by the statement triggers of 0013).';
comment on column ballast_private.steps.crashes is 'Attempts ended by a blocked (blocked_worker) or crashed (crashed_worker) worker; the step is quarantined (failed) at the limit.';
comment on column ballast_private.steps.wait_children is 'The child jobs a step waiting for children waits for (ballast.wait_for_children, 0038); null otherwise.';
comment on column ballast_private.steps.wait_first is 'For a wait for the first n children to complete: n; null when it waits for all of them.';
comment on column ballast_private.steps.waiting_for is 'Null unless the step is waiting: ''event'' (for the event wait_key names), ''time'' (a sleep until wait_deadline), ''children'' (for the child jobs in wait_children) or ''items'' (a map step, for its items). Generated from status, wait_key, wait_on_timeout and wait_children.';
comment on table ballast_private.steps_pending_idx is 'The pending steps of a job: finding the dependants of finished steps reads what the job has pending, not all its steps (map steps of many items).';
comment on table ballast_private.token_chunks is 'Live tokens (0043): the text model steps stream, batch by batch, until shortly after the step is final. Unlogged; not the durable record (steps.output, model_calls.raw_output).';

-- ==================== privileges ===============================================================================

grant execute on function ballast._json_schema_alternatives(jsonb,jsonb,jsonb,text,integer,boolean,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_collect(jsonb,jsonb,jsonb,text,integer,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_cut(text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_declared_types(jsonb,jsonb,integer) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_declared_values(jsonb,jsonb,integer) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_deref(jsonb,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_js_regex(text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_match(text,text,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_matches(text,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_one_of_values(jsonb,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_path_key(text,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_regexes(jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_resolve(jsonb,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_show(jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_type_list(text[]) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_valid(jsonb,jsonb,jsonb,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_value_list(jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast._json_schema_walk(jsonb,jsonb,jsonb,text,integer,integer,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.ack_alert(bigint,text,text) to ballast_operator;
grant execute on function ballast.add_eval_case(text,text,jsonb,jsonb,jsonb,text[],jsonb,text) to ballast_operator;
grant execute on function ballast.add_eval_cases(text,jsonb,text) to ballast_operator;
grant execute on function ballast.bind_role_tenant(name,text) to ballast_operator;
grant execute on function ballast.cancel_job(bigint,text,text) to ballast_client, ballast_operator;
grant execute on function ballast.check_alerts(interval) to ballast_operator;
grant execute on function ballast.clear_prompt_canary(text,text,text,text) to ballast_operator;
grant execute on function ballast.compare_eval_runs(bigint,bigint,numeric) to ballast_operator, ballast_reporter;
grant execute on function ballast.compare_prompt_arms(text,text,timestamp with time zone,timestamp with time zone,numeric,integer,integer) to ballast_operator, ballast_reporter;
grant execute on function ballast.create_dataset(text,text,text) to ballast_operator;
grant execute on function ballast.create_prompt_version(text,text,text,text) to ballast_operator;
grant execute on function ballast.delete_budget_alert(text) to ballast_operator;
grant execute on function ballast.delete_drift_rule(text) to ballast_operator;
grant execute on function ballast.delete_limit(text,text,text) to ballast_operator;
grant execute on function ballast.delete_schedule(text,text) to ballast_client, ballast_operator;
grant execute on function ballast.delete_webhook_endpoint(text) to ballast_operator;
grant execute on function ballast.eval_run_comparison(bigint,bigint,numeric,integer) to ballast_operator, ballast_reporter;
grant execute on function ballast.events_after(bigint,text,bigint,integer) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.fire_schedules(integer) to ballast_operator;
grant execute on function ballast.import_eval_run(text,jsonb,text,text,text,integer,text,text) to ballast_operator;
grant execute on function ballast.json_schema_errors(jsonb,jsonb) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.model_price(text,text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.now() to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.pause_key(text,text,timestamp with time zone,interval,text,bigint) to ballast_operator;
grant execute on function ballast.pause_schedule(text,boolean,text,text,text) to ballast_client, ballast_operator;
grant execute on function ballast.promote_to_dataset(bigint,text,text,jsonb,text[],text) to ballast_operator;
grant execute on function ballast.prompt_arms(text,text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.prune_history(interval,integer) to ballast_operator;
grant execute on function ballast.quality_stats(timestamp with time zone,timestamp with time zone,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.remove_eval_case(text,text) to ballast_operator;
grant execute on function ballast.remove_webhook_secret(text,text) to ballast_operator;
grant execute on function ballast.replay_dead_letters(text,text,text,interval,text,integer,boolean,text) to ballast_operator;
grant execute on function ballast.replay_job(bigint,text,text,text,boolean) to ballast_operator;
grant execute on function ballast.replay_step(bigint,text,boolean,text,boolean) to ballast_operator;
grant execute on function ballast.report_models(interval,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.report_pipelines(interval,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.report_quality(interval,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.report_steps(interval,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.report_stuck(interval,interval) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast.resolve_prompt(bigint,text,text) to ballast_operator;
grant execute on function ballast.resolve_review(bigint,text,jsonb,text,text) to ballast_operator;
grant execute on function ballast.resume_key(text,text,text) to ballast_operator;
grant execute on function ballast.rotate_webhook_secret(text,text) to ballast_operator;
grant execute on function ballast.send_event(text,jsonb,text,text) to ballast_client, ballast_operator;
grant execute on function ballast.set_auto_promotion(text,text,text,text[],text) to ballast_operator;
grant execute on function ballast.set_budget(text,numeric,text,text,text) to ballast_operator;
grant execute on function ballast.set_budget_alert(text,text,text,numeric,text,integer[],text) to ballast_operator;
grant execute on function ballast.set_drift_rule(text,text,text,numeric,text,interval,interval,integer,text,text,integer,text,timestamp with time zone,timestamp with time zone,text) to ballast_operator;
grant execute on function ballast.set_end_user_path(text,text,text) to ballast_operator;
grant execute on function ballast.set_fair_share(text,double precision,text) to ballast_operator;
grant execute on function ballast.set_limit(text,text,bigint,interval,bigint,text,text) to ballast_operator;
grant execute on function ballast.set_model_cache(text,interval,text) to ballast_operator;
grant execute on function ballast.set_model_price(text,text,numeric,numeric,numeric,timestamp with time zone,text) to ballast_operator;
grant execute on function ballast.set_prompt_canary(text,text,integer,double precision,text,text) to ballast_operator;
grant execute on function ballast.set_prompt_label(text,text,integer,text,text) to ballast_operator;
grant execute on function ballast.set_provider_cooldown(text,text,timestamp with time zone,text) to ballast_operator;
grant execute on function ballast.set_schedule(text,text,text,jsonb,text,text,integer,integer,text,integer,text) to ballast_client, ballast_operator;
grant execute on function ballast.set_webhook_endpoint(text,text,text[],text[],text,boolean) to ballast_operator;
grant execute on function ballast.start_eval_run(text,text,text,integer,text,jsonb,numeric,text,integer,integer,text,text) to ballast_operator;
grant execute on function ballast.stop_fair_sharing() to ballast_operator;
grant execute on function ballast.stop_model_cache(text) to ballast_operator;
grant execute on function ballast.submit_job(text,jsonb,text,text,integer,integer,timestamp with time zone,double precision,timestamp with time zone,timestamp with time zone,jsonb,jsonb) to ballast_client, ballast_operator;
grant execute on function ballast.submit_jobs(text,jsonb[],text[],text,integer,integer,timestamp with time zone,double precision,timestamp with time zone,timestamp with time zone) to ballast_client, ballast_operator;
grant execute on function ballast.task_identifier(text,integer) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.bad_argument(text,text,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.bootstrap_mean_delta_ci(double precision[],double precision[],integer,bigint) to ballast_operator, ballast_reporter;
grant execute on function ballast_private.budget_period_start(text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.budget_spend(timestamp with time zone) to ballast_operator, ballast_reporter;
grant execute on function ballast_private.caller_role() to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.caller_tenant() to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.caller_unrestricted() to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.check_prompt_label_args(text,text,boolean) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.check_prompt_version(text,text,integer) to ballast_operator;
grant execute on function ballast_private.check_webhook_secret(text) to ballast_operator;
grant execute on function ballast_private.drift_direction(text) to ballast_operator, ballast_reporter;
grant execute on function ballast_private.prompt_bucket(bigint,text) to ballast_operator, ballast_reporter;
grant execute on function ballast_private.rate_delta_ci(bigint,bigint,bigint,bigint) to ballast_operator, ballast_reporter;
grant execute on function ballast_private.refuse_webhook(text,text,text,text,text) to ballast_operator;
grant execute on function ballast_private.report_period(text,timestamp with time zone) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.report_window(interval,text) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.submit_webhook(text,text,jsonb) to ballast_operator;
grant execute on function ballast_private.webhook_endpoint_for(text) to ballast_operator;
grant execute on function ballast_private.webhook_secret_fingerprint(text) to ballast_operator, ballast_reporter;
grant usage on schema ballast to ballast_client, ballast_operator, ballast_reporter;
grant usage on schema ballast_private to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.alerts to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.attempts to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.budget_alert_rules to ballast_operator, ballast_reporter;
grant select on table ballast_private.budget_reservations to ballast_operator, ballast_reporter;
grant select on table ballast_private.budget_spend_checked to ballast_operator, ballast_reporter;
grant select on table ballast_private.budget_usage to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.budgets to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.drift_rules to ballast_operator, ballast_reporter;
grant select on table ballast_private.effect_intents to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.effects to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.end_user_paths to ballast_operator, ballast_reporter;
grant select on table ballast_private.error_codes to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.eval_auto_promotions to ballast_operator, ballast_reporter;
grant select on table ballast_private.eval_cases to ballast_operator, ballast_reporter;
grant select on table ballast_private.eval_datasets to ballast_operator, ballast_reporter;
grant select on table ballast_private.eval_results to ballast_operator, ballast_reporter;
grant select on table ballast_private.eval_runs to ballast_operator, ballast_reporter;
grant select on table ballast_private.events to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.fair_shares to ballast_operator, ballast_reporter;
grant select on table ballast_private.gate_history to ballast_operator, ballast_reporter;
grant select on table ballast_private.job_prompts to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.job_transitions to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.jobs to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.limit_buckets to ballast_operator, ballast_reporter;
grant select on table ballast_private.limits to ballast_operator, ballast_reporter;
grant select on table ballast_private.model_cache to ballast_operator, ballast_reporter;
grant select on table ballast_private.model_calls to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.model_prices to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.pauses to ballast_operator, ballast_reporter;
grant select on table ballast_private.pipelines to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.prompt_label_history to ballast_operator, ballast_reporter;
grant select on table ballast_private.prompt_labels to ballast_operator, ballast_reporter;
grant select on table ballast_private.prompts to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.provider_cooldowns to ballast_operator, ballast_reporter;
grant select on table ballast_private.role_tenants to ballast_operator, ballast_reporter;
grant select on table ballast_private.schedules to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.signals to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.step_transitions to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.steps to ballast_client, ballast_operator, ballast_reporter;
grant select on table ballast_private.token_chunks to ballast_client, ballast_operator, ballast_reporter;
grant delete, insert, update on table ballast_private.webhook_endpoints to ballast_operator;
grant select on table ballast_private.webhook_refusals to ballast_operator, ballast_reporter;
grant select on table ballast_private.workers to ballast_operator, ballast_reporter;
grant select on view ballast.alerts to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.attempts to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.budget_alert_rules to ballast_operator, ballast_reporter;
grant select on view ballast.budget_spend to ballast_operator, ballast_reporter;
grant select on view ballast.budgets to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.dead_letters to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.drift_rules to ballast_operator, ballast_reporter;
grant select on view ballast.effect_intents to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.effects to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.end_user_paths to ballast_operator, ballast_reporter;
grant select on view ballast.error_codes to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.eval_cases to ballast_operator, ballast_reporter;
grant select on view ballast.eval_datasets to ballast_operator, ballast_reporter;
grant select on view ballast.eval_results to ballast_operator, ballast_reporter;
grant select on view ballast.eval_runs to ballast_operator, ballast_reporter;
grant select on view ballast.eval_trend to ballast_operator, ballast_reporter;
grant select on view ballast.events to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.fair_shares to ballast_operator, ballast_reporter;
grant select on view ballast.gate_history to ballast_operator, ballast_reporter;
grant select on view ballast.job_prompts to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.job_transitions to ballast_client, ballast_operator, ballast_reporter;
grant insert, select on view ballast.jobs to ballast_client, ballast_operator;
grant select on view ballast.jobs to ballast_reporter;
grant select on view ballast.limits to ballast_operator, ballast_reporter;
grant select on view ballast.model_cache_settings to ballast_operator, ballast_reporter;
grant select on view ballast.model_call_savings to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.model_calls to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.model_prices to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.model_tokens to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.oldest_transactions to ballast_operator, ballast_reporter;
grant select on view ballast.pauses to ballast_operator, ballast_reporter;
grant select on view ballast.pipelines to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.prompt_label_history to ballast_operator, ballast_reporter;
grant select on view ballast.prompt_labels to ballast_operator, ballast_reporter;
grant select on view ballast.prompts to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.provider_cooldowns to ballast_operator, ballast_reporter;
grant select on view ballast.queue_depth to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.reviews to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.schedules to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.signals to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.step_items to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.step_transitions to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.steps to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.stuck_work to ballast_client, ballast_operator, ballast_reporter;
grant select on view ballast.webhook_endpoints to ballast_operator;
grant select on view ballast.webhook_refusals to ballast_operator, ballast_reporter;
grant select on view ballast.workers to ballast_operator, ballast_reporter;
