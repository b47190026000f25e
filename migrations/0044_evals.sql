-- Up Migration
-- Evals as data (issue 16, items 1 to 3 and the scheduled runs of item 4): datasets of cases, eval runs that are
-- ballast jobs, per-case results, two runs compared side by side, and production steps promoted into datasets.
--
-- Why in Postgres: an eval run is a job of the built-in pipeline `ballast.eval` (registered here, so an eval run can
-- be started from SQL with no worker up; a worker started with `evals` runs it). Its map step has one item per
-- case, each item runs the target pipeline's model step through the contract ladder (traces, budgets, cooldowns,
-- retries, as any model step), scores the answer and writes one row of eval_results. Comparing two runs is then a
-- join of two sets of rows, done here, so SQL, GraphQL and the CLI give the same verdict.
--
-- Tables (ballast_private; read through the views of schema ballast, operators and reporters only: cases copy
-- production inputs and outputs of any tenant, so clients see none of it):
--   eval_datasets          a dataset: name, description, current version (0: no case yet)
--   eval_cases             a case: key, input (the variables a model step renders its prompt with: {input, deps}
--                          and for a map item {item}), reference output, per-case checks, tags, source (manual,
--                          review, fallback, rejection, degraded, production: the step it came from). A version
--                          of a dataset is an immutable set of cases: every change (cases added, a case replaced
--                          or removed) bumps the version; a case is in version v when added_in_version <= v and
--                          removed_in_version is null or > v. A run records the version it used.
--   eval_runs              a run: dataset version, target (pipeline, version, step, prompt version, model),
--                          scorers, pass threshold, the job that runs it, status, summary
--   eval_results           one per run and case: output, per-scorer scores, score, passed, cost, latency, error
--   eval_auto_promotions   (pipeline, step) -> dataset: resolve_review adds the reviewed output as a case
-- Nothing here is on the path of plain steps: claim and settle do not read these tables; resolve_review reads
-- eval_auto_promotions (one primary-key lookup) after a decision.

-- ==================== tables ====================================================================================

create table ballast_private.eval_datasets (
  name text primary key,
  description text,
  version integer not null default 0,
  created_by text,
  created_at timestamptz not null default ballast.now(),
  updated_at timestamptz not null default ballast.now(),
  constraint eval_dataset_name_format check (name ~ '^[a-z][a-z0-9_.-]{0,62}$')
);
comment on table ballast_private.eval_datasets is 'Eval datasets (0044): a name and its current version; every change to its cases bumps the version.';

create table ballast_private.eval_cases (
  id bigint generated always as identity primary key,
  dataset text not null references ballast_private.eval_datasets (name) on delete cascade,
  case_key text not null,
  input jsonb not null,
  reference jsonb,
  checks jsonb not null default '[]',
  tags text[] not null default '{}',
  source jsonb not null default '{"kind": "manual"}',
  added_in_version integer not null,
  removed_in_version integer,
  added_by text,
  added_at timestamptz not null default ballast.now(),
  constraint eval_case_key_format check (case_key <> '' and octet_length(case_key) <= 200),
  constraint eval_case_input_object check (jsonb_typeof(input) = 'object'),
  constraint eval_case_checks_array check (jsonb_typeof(checks) = 'array'),
  constraint eval_case_versions check (removed_in_version is null or removed_in_version > added_in_version)
);
create unique index eval_cases_live_key on ballast_private.eval_cases (dataset, case_key) where removed_in_version is null;
create index eval_cases_dataset on ballast_private.eval_cases (dataset, added_in_version);
comment on table ballast_private.eval_cases is 'Eval cases (0044): in version v of their dataset when added_in_version <= v < coalesce(removed_in_version, infinity).';

create table ballast_private.eval_runs (
  id bigint generated always as identity primary key,
  dataset text not null references ballast_private.eval_datasets (name) on delete cascade,
  dataset_version integer not null,
  pipeline text not null,
  pipeline_version integer,
  step text not null,
  prompt_name text,
  prompt_version integer,
  model text,
  scorers jsonb not null default '[{"kind": "exact"}]',
  threshold numeric not null default 0.5,
  label text,
  job_id bigint unique,
  tenant_id text,
  status text not null default 'queued',
  created_by text,
  created_at timestamptz not null default ballast.now(),
  finished_at timestamptz,
  summary jsonb,
  constraint eval_run_status check (status in ('queued', 'running', 'completed', 'imported'))
);
create index eval_runs_dataset on ballast_private.eval_runs (dataset, created_at);
comment on table ballast_private.eval_runs is 'Eval runs (0044): a dataset version against a pipeline step, prompt version and model; job_id is the ballast.eval job (null for an imported run).';

create table ballast_private.eval_results (
  run_id bigint not null references ballast_private.eval_runs (id) on delete cascade,
  case_id bigint not null references ballast_private.eval_cases (id) on delete cascade,
  output jsonb,
  scores jsonb not null default '{}',
  score numeric not null,
  passed boolean not null,
  cost_usd numeric(14,8) not null default 0,
  judge_cost_usd numeric(14,8) not null default 0,
  latency_ms integer,
  contract_outcome text,
  error jsonb,
  model_call_ids bigint[] not null default '{}',
  attempt_id bigint,
  recorded_at timestamptz not null default ballast.now(),
  primary key (run_id, case_id),
  constraint eval_result_score_range check (score >= 0 and score <= 1)
);
comment on table ballast_private.eval_results is 'Eval results (0044): one per run and case (a retried item replaces its row).';

create table ballast_private.eval_auto_promotions (
  pipeline text not null,
  step text not null,
  dataset text not null references ballast_private.eval_datasets (name) on delete cascade,
  decisions text[] not null default '{approve,edit}',
  set_by text,
  set_at timestamptz not null default ballast.now(),
  primary key (pipeline, step),
  constraint eval_auto_promotion_decisions check (decisions <@ array['approve', 'edit', 'reject'] and cardinality(decisions) > 0)
);
comment on table ballast_private.eval_auto_promotions is 'Auto-promotion (0044): a review of this pipeline step resolved with one of these decisions adds a case to the dataset.';

grant select on ballast_private.eval_datasets, ballast_private.eval_cases, ballast_private.eval_runs,
  ballast_private.eval_results, ballast_private.eval_auto_promotions to ballast_operator, ballast_reporter;

-- ==================== the eval pipeline =========================================================================

-- The pipeline every eval run is a job of. Its definition is exactly what src/eval/pipeline.ts builds (a worker
-- started with `evals` registers it again and finds it unchanged; a drift fails that start with BA005).
select ballast.register_pipeline('ballast.eval', 1,
  $def${"steps": [{"name": "cases", "depends_on": [], "max_attempts": 3, "backoff_base_ms": 1000, "backoff_cap_ms": 60000, "timeout_ms": null, "concurrency": null, "output_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {"case_id": {"type": "string"}, "score": {"type": "number"}, "passed": {"type": "boolean"}}, "required": ["case_id", "score", "passed"], "additionalProperties": false}, "map": {"partial": true, "min_succeeded": 0}, "eval": {"role": "cases"}}, {"name": "summary", "depends_on": ["cases"], "max_attempts": 3, "backoff_base_ms": 1000, "backoff_cap_ms": 60000, "timeout_ms": null, "concurrency": null, "output_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "propertyNames": {"type": "string"}, "additionalProperties": {}}, "eval": {"role": "summary"}}]}$def$::jsonb,
  $schema${"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object", "properties": {"dataset": {"type": "string"}, "dataset_version": {"type": "integer", "minimum": -9007199254740991, "maximum": 9007199254740991}, "pipeline": {"type": "string"}, "pipeline_version": {"type": "integer", "minimum": -9007199254740991, "maximum": 9007199254740991}, "step": {"type": "string"}, "prompt_version": {"type": "integer", "minimum": -9007199254740991, "maximum": 9007199254740991}, "model": {"type": "string"}, "scorers": {"type": "array", "items": {"type": "object", "propertyNames": {"type": "string"}, "additionalProperties": {}}}, "threshold": {"type": "number"}, "label": {"type": "string"}}, "required": ["dataset", "pipeline", "step"], "additionalProperties": false}$schema$::jsonb);

-- ==================== datasets and cases ========================================================================

-- dataset_row(name, lock) -> the dataset, or BA007 naming it with the way to create one.
create function ballast_private.eval_dataset(p_name text, p_lock boolean default false) returns ballast_private.eval_datasets
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

-- create_dataset(name, description, actor) -> the dataset (ballast.eval_datasets).
-- Creates the dataset at version 0, or, when it exists, sets its description (when one is given) and returns it.
-- BA002 for a bad name. Operators.
create function ballast.create_dataset(p_name text, p_description text default null, p_actor text default null)
returns setof ballast_private.eval_datasets
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

-- add_eval_cases(dataset, cases, actor) -> (case_id, case_key, dataset_version), one row per case in input order.
-- `cases`: a JSON array of {"key", "input", "reference", "checks", "tags", "source"}; key and input (an object: the
-- prompt's variables, {"input": ..., "deps": ...}) are required. All of them make one new version of the dataset
-- (created when missing); a key that is already in the dataset replaces that case (the old one leaves the dataset at
-- this version). BA002 names the first bad case and field. Operators.
-- Locks the dataset row first: two concurrent changes to one dataset make two versions, one after the other.
create function ballast.add_eval_cases(p_dataset text, p_cases jsonb, p_actor text default null)
returns table(case_id bigint, case_key text, dataset_version integer)
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

-- add_eval_case(dataset, key, input, reference, checks, tags, source, actor) -> (case_id, case_key, dataset_version)
-- One case (add_eval_cases with one element).
create function ballast.add_eval_case(p_dataset text, p_key text, p_input jsonb, p_reference jsonb default null,
  p_checks jsonb default '[]', p_tags text[] default '{}', p_source jsonb default null, p_actor text default null)
returns table(case_id bigint, case_key text, dataset_version integer)
language sql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
  select * from ballast.add_eval_cases(p_dataset,
    jsonb_build_array(jsonb_build_object('key', p_key, 'input', p_input, 'reference', p_reference,
                                         'checks', coalesce(p_checks, '[]'), 'tags', to_jsonb(coalesce(p_tags, '{}')))
                      || case when p_source is null then '{}'::jsonb else jsonb_build_object('source', p_source) end),
    p_actor)
$fn$;

-- remove_eval_case(dataset, key) -> the dataset's new version. BA007 when the key is not in the dataset. Operators.
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

-- ==================== scorers ===================================================================================

-- check_scorers(scorers, field): BA002 unless `scorers` is an array of known scorers with their options:
--   {"kind": "schema"}                               the output satisfies the step's output contract: 1 or 0
--   {"kind": "exact"}                                the output equals the reference (as JSON values): 1 or 0
--   {"kind": "fields", "fields": ["a", "b"]}         the fraction of the fields (default: the reference's) equal
--   {"kind": "numeric", "path": "a.b", "tolerance": 0.1}   |output.path - reference.path| <= tolerance: 1 or 0
--   {"kind": "function", "name": "n"}                a TypeScript function registered in the worker (0 to 1)
--   {"kind": "judge", "prompt": "p", "version": 1, "model": "provider:model"}   a model grades it (0 to 1)
-- each with an optional "weight" (> 0, default 1) and "name" (default: its kind, or the function's name).
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

-- ==================== runs ======================================================================================

-- new_eval_run(job_id, params, tenant, actor) -> the run. Checks the parameters of an eval run (the eval job's
-- input: dataset, dataset_version, pipeline, pipeline_version, step, prompt_version, model, scorers, threshold,
-- label) against what exists, resolves the defaults (the dataset's current version, the pipeline's newest version,
-- the step's own prompt version) and inserts the run. BA002 / BA007 name the parameter.
create function ballast_private.new_eval_run(p_job_id bigint, p_params jsonb, p_tenant text, p_actor text)
returns ballast_private.eval_runs
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

-- start_eval_run(dataset, pipeline, step, ...) -> (run_id, job_id)
-- Checks the run's parameters, submits a job of ballast.eval with them as input and records the run, in one
-- transaction: the run starts when a worker with evals takes the job. Defaults: the dataset's current version, the
-- pipeline's newest version, the step's own prompt version and models, scorers [{"kind": "exact"}], threshold 0.5,
-- tenant 'evals' (its budget pays the calls). BA002/BA004/BA007 name the parameter. Operators.
create function ballast.start_eval_run(
  p_dataset text, p_pipeline text, p_step text,
  p_prompt_version integer default null, p_model text default null, p_scorers jsonb default null,
  p_threshold numeric default null, p_label text default null, p_pipeline_version integer default null,
  p_dataset_version integer default null, p_tenant_id text default 'evals', p_actor text default null
) returns table(run_id bigint, job_id bigint)
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

-- eval_run_cases(job_id) -> (run_id, case_id): the cases of the eval job's run, in key order. Called by the eval
-- job's map step on its first run: a job submitted by start_eval_run has its run; one submitted another way (a
-- schedule of ballast.eval, a plain submit_job) gets its run here, from its input. Marks the run running. Worker.
create function ballast_private.eval_run_cases(p_job_id bigint) returns table(run_id bigint, case_id bigint)
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

-- eval_item(run_id, case_id) -> the run and the case an item evaluates, as JSON. Worker.
create function ballast_private.eval_item(p_run_id bigint, p_case_id bigint) returns jsonb
language sql stable
as $fn$
  select jsonb_build_object('run', to_jsonb(r), 'case', to_jsonb(c))
    from ballast_private.eval_runs r, ballast_private.eval_cases c
   where r.id = p_run_id and c.id = p_case_id
$fn$;

-- attempt_contract(attempt_id) -> {outcome, detail}: what the ladder recorded on an attempt (read before a judge
-- runs on the same attempt, and put back by record_eval_result). Worker.
create function ballast_private.attempt_contract(p_attempt_id bigint) returns jsonb
language sql stable
as $fn$
  select jsonb_build_object('outcome', a.contract_outcome, 'detail', a.contract_detail)
    from ballast_private.attempts a where a.id = p_attempt_id
$fn$;

-- record_eval_result(run_id, case_id, attempt_id, result) -> void. The worker's verdict on one case: `result` has
-- output, scores, score, passed, error and the target's contract outcome and detail (put back on the attempt: a
-- judge's ladder ran on it after the target's). The cost and latency are the attempt's model calls of the run's
-- prompt (the target), the judge's calls counted apart; an answer reused from an earlier attempt of the item (paid
-- once, 0042: the item retried after its judge was parked) counts what the original call cost and took, so a retry
-- does not make a case look free. A retried item replaces its row. Worker.
create function ballast_private.record_eval_result(p_run_id bigint, p_case_id bigint, p_attempt_id bigint, p_result jsonb)
returns void
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

-- run_summary(run_id) -> {cases, scored, passed, pass_rate, mean_score, cost_usd, judge_cost_usd, latency_ms_p50,
-- latency_ms_p95, errors, by_scorer: {name: mean}}: the figures of a run, from its results.
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

-- finish_eval_run(run_id) -> the summary: the eval job's last step. Worker.
create function ballast_private.finish_eval_run(p_run_id bigint) returns jsonb
language sql volatile
as $fn$
  update ballast_private.eval_runs r
     set status = 'completed', finished_at = ballast.now(), summary = ballast_private.eval_run_summary(r.id)
   where r.id = p_run_id
  returning r.summary
$fn$;

-- import_eval_run(dataset, results, label, pipeline, step, prompt_version, model, actor) -> run_id
-- A run scored outside ballast (another harness, a CI job), so it can be compared with ballast's runs: `results` is
-- an array of {"key", "score" (0 to 1), "passed" (default score >= 0.5), "output", "cost_usd", "latency_ms"} for
-- cases of the dataset's current version. BA002 names a bad result, BA007 an unknown dataset or key. Operators.
create function ballast.import_eval_run(p_dataset text, p_results jsonb, p_label text default null,
  p_pipeline text default 'external', p_step text default 'external', p_prompt_version integer default null,
  p_model text default null, p_actor text default null)
returns bigint
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

-- ==================== compare ===================================================================================

-- compare_eval_runs(base_run, candidate_run, threshold) -> one row per case of either run, by case key:
-- base and candidate score, delta (candidate - base), change: 'regression' (delta < -threshold), 'improvement'
-- (delta > threshold), 'same', 'new' (only the candidate scored it), 'missing' (only the base did); pass flags,
-- cost and latency deltas, the outputs and the reference. Regressions first, worst first. BA007 for an unknown run.
-- Cases pair by key, so a case replaced in a later dataset version (same key, new reference) still pairs.
create function ballast.compare_eval_runs(p_base_run bigint, p_candidate_run bigint, p_threshold numeric default 0)
returns table(case_key text, base_score numeric, candidate_score numeric, delta numeric, change text,
              base_passed boolean, candidate_passed boolean, cost_delta_usd numeric, latency_delta_ms integer,
              base_output jsonb, candidate_output jsonb, reference jsonb)
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

-- eval_run_comparison(base_run, candidate_run, threshold, resamples) -> one row: the paired cases, mean scores and
-- the mean delta with a 95 % bootstrap interval, counts of regressions, improvements, new and missing cases, pass
-- rates, cost and latency deltas, and the verdict `regressed`.
-- The rule: regressed when the mean delta is below -threshold, or any case regressed (its delta below -threshold).
-- With the default threshold 0, any case that scores lower fails the candidate.
-- The interval resamples the paired deltas `resamples` times (default 1000), each draw picked by a hash of
-- (resample, draw), so the interval is the same on every call (no random state): resamples x cases hash lookups,
-- 90 to 120 ms for 1,000 x 100 cases on a busy 2-core machine (linear in cases: lower p_resamples for thousands).
create function ballast.eval_run_comparison(p_base_run bigint, p_candidate_run bigint, p_threshold numeric default 0,
  p_resamples integer default 1000)
returns table(base_run bigint, candidate_run bigint, paired_cases integer, base_mean numeric, candidate_mean numeric,
              mean_delta numeric, delta_ci_low numeric, delta_ci_high numeric, regressions integer, improvements integer,
              unchanged integer, new_cases integer, missing_cases integer, base_pass_rate numeric,
              candidate_pass_rate numeric, cost_delta_usd numeric, latency_delta_ms numeric, regressed boolean)
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

-- ==================== production feeds evals ====================================================================

-- promote_to_dataset(step_id, dataset, key, reference, tags, actor) -> (case_id, case_key, dataset_version, source_kind)
-- A production step becomes a case: its input is the step's real variables (the job's input, the outputs of the
-- steps it ran after, and for a map item its item); its reference is `reference` when given, else the output a
-- reviewer approved or edited, else the step's output (none for a rejected step). The source records where it came
-- from: kind 'review' (a person decided), 'fallback' (a fallback model answered), 'degraded' (the default value),
-- 'rejection' (every model failed), else 'production'; with the job, step, pipeline and tenant. The key defaults to
-- '<pipeline>.<step>:<step id>'. BA007 for an unknown step or dataset; BA002 for a step with nothing to promote.
-- Operators.
create function ballast.promote_to_dataset(p_step_id bigint, p_dataset text, p_key text default null,
  p_reference jsonb default null, p_tags text[] default '{}', p_actor text default null)
returns table(case_id bigint, case_key text, dataset_version integer, source_kind text)
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

-- set_auto_promotion(pipeline, step, dataset, decisions, actor) -> void. From now on a review of that pipeline's step
-- resolved with one of `decisions` (default approve and edit) becomes a case of the dataset, in the transaction of
-- the decision (ballast.resolve_review). A null dataset turns it off. BA007 for an unknown dataset. Operators.
create function ballast.set_auto_promotion(p_pipeline text, p_step text, p_dataset text,
  p_decisions text[] default '{approve,edit}', p_actor text default null) returns void
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

-- resolve_review: 0009's, plus the auto-promotion at its end (one primary-key lookup): a matching rule adds the
-- step as a case of its dataset in the same transaction as the decision.
create or replace function ballast.resolve_review(
  p_step_id bigint,
  p_decision text,
  p_output jsonb default null::jsonb,
  p_reviewer text default null::text,
  p_note text default null::text
) returns table(step_status text, job_status text, queued_step_ids bigint[])
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
grant execute on function ballast.resolve_review(bigint,text,jsonb,text,text) to ballast_operator;
comment on function ballast.resolve_review(bigint,text,jsonb,text,text) is 'Decide a step in needs_review: approve (keep the proposed output), edit (use the output given, checked against the contract) or reject (fail the step). Operators only.';

-- ==================== views =====================================================================================

create view ballast.eval_datasets with (security_invoker = true) as
select d.name, d.description, d.version,
       (select count(*) from ballast_private.eval_cases c where c.dataset = d.name and c.removed_in_version is null) as cases,
       d.created_by, d.created_at, d.updated_at
  from ballast_private.eval_datasets d;
comment on view ballast.eval_datasets is 'Eval datasets: each version is an immutable set of cases; every change bumps the version.';
comment on column ballast.eval_datasets.name is 'The dataset name, e.g. support.triage.';
comment on column ballast.eval_datasets.description is 'What the dataset covers. Null: none given.';
comment on column ballast.eval_datasets.version is 'The current version (0: no case yet).';
comment on column ballast.eval_datasets.cases is 'How many cases the current version has.';
comment on column ballast.eval_datasets.created_by is 'Who created it. Null: unknown.';
comment on column ballast.eval_datasets.created_at is 'When it was created.';
comment on column ballast.eval_datasets.updated_at is 'When its cases last changed.';

create view ballast.eval_cases with (security_invoker = true) as
select c.id, c.dataset, c.case_key, c.input, c.reference, c.checks, c.tags, c.source, c.source ->> 'kind' as source_kind,
       c.added_in_version, c.removed_in_version, c.removed_in_version is null as in_current_version, c.added_by, c.added_at
  from ballast_private.eval_cases c;
comment on view ballast.eval_cases is 'Eval cases of every version: a case is in version v when added_in_version <= v and (removed_in_version is null or > v).';
comment on column ballast.eval_cases.id is 'The case id (results name it).';
comment on column ballast.eval_cases.dataset is 'Its dataset.';
comment on column ballast.eval_cases.case_key is 'Its key, unique among the cases of a version; runs are compared case by case on it.';
comment on column ballast.eval_cases.input is 'The variables the step renders its prompt with: {"input": job input, "deps": outputs of earlier steps} (and "item" for a map item).';
comment on column ballast.eval_cases.reference is 'The expected output (what exact, fields and numeric scorers compare with). Null: none.';
comment on column ballast.eval_cases.checks is 'Scorers for this case only, added to the run''s (same form as the run''s scorers).';
comment on column ballast.eval_cases.tags is 'Labels for slicing results.';
comment on column ballast.eval_cases.source is 'Where it came from: {"kind": manual | review | fallback | degraded | rejection | production, job_id, step_id, ...}.';
comment on column ballast.eval_cases.source_kind is 'source.kind.';
comment on column ballast.eval_cases.added_in_version is 'The dataset version that added it.';
comment on column ballast.eval_cases.removed_in_version is 'The dataset version that removed or replaced it. Null: still in.';
comment on column ballast.eval_cases.in_current_version is 'Whether the dataset''s current version has it.';
comment on column ballast.eval_cases.added_by is 'Who added it. Null: unknown.';
comment on column ballast.eval_cases.added_at is 'When it was added.';

create view ballast.eval_runs with (security_invoker = true) as
select r.id, r.dataset, r.dataset_version, r.pipeline, r.pipeline_version, r.step, r.prompt_name, r.prompt_version,
       r.model, r.scorers, r.threshold, r.label, r.job_id, r.tenant_id,
       -- An unfinished run whose job failed or was cancelled shows its job's status.
       case when r.finished_at is null and (j.status = 'failed' or j.status = 'cancelled') then j.status else r.status end as status,
       r.created_by, r.created_at, r.finished_at, r.summary,
       (r.summary ->> 'mean_score')::numeric as mean_score, (r.summary ->> 'pass_rate')::numeric as pass_rate
  from ballast_private.eval_runs r left join ballast_private.jobs j on j.id = r.job_id;
comment on view ballast.eval_runs is 'Eval runs: a dataset version against a pipeline step, a prompt version and a model.';
comment on column ballast.eval_runs.id is 'The run id (compare_eval_runs takes two).';
comment on column ballast.eval_runs.dataset is 'The dataset.';
comment on column ballast.eval_runs.dataset_version is 'The dataset version it ran (fixed when it was started).';
comment on column ballast.eval_runs.pipeline is 'The pipeline whose step it evaluates.';
comment on column ballast.eval_runs.pipeline_version is 'Its version. Null: an imported run.';
comment on column ballast.eval_runs.step is 'The model step evaluated.';
comment on column ballast.eval_runs.prompt_name is 'The step''s prompt. Null: an imported run.';
comment on column ballast.eval_runs.prompt_version is 'The prompt version it ran. Null: unknown (imported).';
comment on column ballast.eval_runs.model is 'The model it ran (provider:model). Null: the step''s own models.';
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
comment on column ballast.eval_runs.mean_score is 'summary.mean_score. Null: not finished.';
comment on column ballast.eval_runs.pass_rate is 'summary.pass_rate. Null: not finished.';

create view ballast.eval_results with (security_invoker = true) as
select e.run_id, e.case_id, c.case_key, e.output, c.reference, e.scores, e.score, e.passed, e.cost_usd, e.judge_cost_usd,
       e.latency_ms, e.contract_outcome, e.error, e.model_call_ids, e.attempt_id, e.recorded_at
  from ballast_private.eval_results e join ballast_private.eval_cases c on c.id = e.case_id;
comment on view ballast.eval_results is 'One row per run and case: the output, each scorer''s score, the case''s score and verdict, cost and latency.';
comment on column ballast.eval_results.run_id is 'The run.';
comment on column ballast.eval_results.case_id is 'The case.';
comment on column ballast.eval_results.case_key is 'The case key.';
comment on column ballast.eval_results.output is 'What the step answered. Null: it failed (see error).';
comment on column ballast.eval_results.reference is 'The case''s reference output. Null: none.';
comment on column ballast.eval_results.scores is 'Each scorer''s score (0 to 1) by scorer name, and a judge''s reasons.';
comment on column ballast.eval_results.score is 'The case''s score: the weighted mean of its scorers (0 when the step failed).';
comment on column ballast.eval_results.passed is 'score >= the run''s threshold.';
comment on column ballast.eval_results.cost_usd is 'What the step''s model calls cost.';
comment on column ballast.eval_results.judge_cost_usd is 'What a judge''s calls cost.';
comment on column ballast.eval_results.latency_ms is 'The step''s model calls'' latency, summed. Null: unknown (imported).';
comment on column ballast.eval_results.contract_outcome is 'The ladder''s verdict (valid_first_try, repaired, fell_back, degraded, rejected). Null: none.';
comment on column ballast.eval_results.error is 'Why the step failed ({class, code, message}). Null: it answered.';
comment on column ballast.eval_results.model_call_ids is 'The traces (ballast.model_calls) of this case''s calls, the judge''s included.';
comment on column ballast.eval_results.attempt_id is 'The attempt of the eval item that produced it. Null: imported.';
comment on column ballast.eval_results.recorded_at is 'When it was recorded.';

-- A dataset's runs over time, for scheduled runs: the same dataset version, step and prompt scored again and again.
-- A score that moves while prompt, model and dataset version stay is the model drifting (returned_models shows a
-- provider's new snapshot); production metrics moving while this stays flat is the input drifting.
create view ballast.eval_trend with (security_invoker = true) as
select r.dataset, r.pipeline, r.step, r.id as run_id, r.created_at, r.dataset_version, r.prompt_version, r.model, r.label,
       (r.summary ->> 'mean_score')::numeric as mean_score, (r.summary ->> 'pass_rate')::numeric as pass_rate,
       (r.summary ->> 'cost_usd')::numeric as cost_usd, (r.summary ->> 'latency_ms_p50')::numeric as latency_ms_p50,
       (r.summary ->> 'mean_score')::numeric - lag((r.summary ->> 'mean_score')::numeric)
         over (partition by r.dataset, r.pipeline, r.step, r.dataset_version order by r.created_at, r.id) as delta_vs_previous,
       (select array_agg(distinct m.provider || ':' || coalesce(m.returned_model, m.requested_model))
          from ballast_private.eval_results e join ballast_private.model_calls m on m.id = any (e.model_call_ids)
         where e.run_id = r.id and m.prompt_name = r.prompt_name and m.error_class is null) as returned_models
  from ballast_private.eval_runs r
 where r.status in ('completed', 'imported');
comment on view ballast.eval_trend is 'Finished eval runs of each dataset over time, with the change of mean score since the previous run on the same dataset version: scheduled runs on a fixed dataset tell model drift from input drift.';
comment on column ballast.eval_trend.dataset is 'The dataset.';
comment on column ballast.eval_trend.pipeline is 'The pipeline evaluated.';
comment on column ballast.eval_trend.step is 'The step evaluated.';
comment on column ballast.eval_trend.run_id is 'The run.';
comment on column ballast.eval_trend.created_at is 'When it started.';
comment on column ballast.eval_trend.dataset_version is 'The dataset version it ran.';
comment on column ballast.eval_trend.prompt_version is 'The prompt version. Null: unknown.';
comment on column ballast.eval_trend.model is 'The model asked for. Null: the step''s own.';
comment on column ballast.eval_trend.label is 'Its label. Null: none.';
comment on column ballast.eval_trend.mean_score is 'Its mean score.';
comment on column ballast.eval_trend.pass_rate is 'The fraction of cases that passed.';
comment on column ballast.eval_trend.cost_usd is 'What its step calls cost.';
comment on column ballast.eval_trend.latency_ms_p50 is 'The median latency per case.';
comment on column ballast.eval_trend.delta_vs_previous is 'mean_score minus the previous run''s on the same dataset version. Null: the first.';
comment on column ballast.eval_trend.returned_models is 'The models that answered (provider:returned model): a new snapshot behind the same name shows here. Null: no call.';

grant select on ballast.eval_datasets, ballast.eval_cases, ballast.eval_runs, ballast.eval_results, ballast.eval_trend
  to ballast_operator, ballast_reporter;
create trigger refuse_write instead of insert or update or delete on ballast.eval_datasets for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.eval_cases for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.eval_runs for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.eval_results for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.eval_trend for each row execute function ballast_private.refuse_view_write();

grant execute on function ballast.create_dataset(text, text, text), ballast.add_eval_cases(text, jsonb, text),
  ballast.add_eval_case(text, text, jsonb, jsonb, jsonb, text[], jsonb, text), ballast.remove_eval_case(text, text),
  ballast.start_eval_run(text, text, text, integer, text, jsonb, numeric, text, integer, integer, text, text),
  ballast.import_eval_run(text, jsonb, text, text, text, integer, text, text),
  ballast.promote_to_dataset(bigint, text, text, jsonb, text[], text), ballast.set_auto_promotion(text, text, text, text[], text)
  to ballast_operator;
grant execute on function ballast.compare_eval_runs(bigint, bigint, numeric), ballast.eval_run_comparison(bigint, bigint, numeric, integer)
  to ballast_operator, ballast_reporter;
comment on function ballast.create_dataset(text, text, text) is 'Create an eval dataset (version 0), or set its description. Operators.';
comment on function ballast.add_eval_cases(text, jsonb, text) is 'Add cases [{key, input, reference, checks, tags, source}] to a dataset as one new version (a key already there is replaced). Operators.';
comment on function ballast.add_eval_case(text, text, jsonb, jsonb, jsonb, text[], jsonb, text) is 'Add one case to a dataset (a new version). Operators.';
comment on function ballast.remove_eval_case(text, text) is 'Remove a case from a dataset (a new version; earlier versions keep it). Operators.';
comment on function ballast.start_eval_run(text, text, text, integer, text, jsonb, numeric, text, integer, integer, text, text) is 'Start an eval run: a job of ballast.eval over the dataset''s cases against a pipeline''s model step, prompt version and model. Operators.';
comment on function ballast.import_eval_run(text, jsonb, text, text, text, integer, text, text) is 'Record a run scored outside ballast, to compare it. Operators.';
comment on function ballast.compare_eval_runs(bigint, bigint, numeric) is 'Two eval runs case by case: scores, delta, regression / improvement / same / new / missing, cost and latency deltas.';
comment on function ballast.eval_run_comparison(bigint, bigint, numeric, integer) is 'Two eval runs in one row: mean delta with a 95 % bootstrap interval, counts, pass rates, cost and latency deltas, and whether the candidate regressed.';
comment on function ballast.promote_to_dataset(bigint, text, text, jsonb, text[], text) is 'Make a production step a case of a dataset: its real variables as input, the approved or edited output (else its output) as reference. Operators.';
comment on function ballast.set_auto_promotion(text, text, text, text[], text) is 'Resolved reviews of a pipeline step become cases of a dataset (null dataset: off). Operators.';
