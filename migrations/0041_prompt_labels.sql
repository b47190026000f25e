-- Up Migration
-- Prompts rolled out like code (issue 16, item 5): prompt versions made from SQL as well as from code, labels
-- (production, staging, any name) that point at a version and move without a deploy, canaries that send a share of
-- a label's traffic to a candidate version, and the version each job got pinned for the rest of its life.
--
-- Map:
--   ballast_private.prompts               (0002) one row per name@version, immutable. create_prompt_version adds the
--                                         next version of a name (code-defined versions share the numbering).
--   ballast_private.prompt_labels         (name, label) -> version, with an optional canary: a candidate version
--                                         and the share of jobs (0 < share <= 1) that get it.
--   ballast_private.prompt_label_history  every move of a label or canary: who, when, from, to, why. Append-only.
--   ballast_private.job_prompts           (job, name, label) -> the version the job got and its arm (stable or
--                                         canary), written the first time a step of the job resolves the label.
-- Verbs: create_prompt_version, set_prompt_label, set_prompt_canary, clear_prompt_canary (operators), resolve_prompt
-- (workers: resolve and pin in one statement), prompt_arms (reporting: traffic per version and arm).
--
-- Why pin per job: a job's steps, retries and replays must see the same words, or a comparison of versions mixes
-- them and a replay does not reproduce what happened. The pin is written once (insert ... on conflict do nothing,
-- then read), so concurrent steps of one job agree on the row that won.
--
-- Why the canary is a hash and not random(): the arm of a job is a function of (job id, prompt name) compared with
-- the share, so a job resolves to the same arm on every worker, the split over n jobs is the share within sampling
-- error (about 1 % at 1,000 jobs for 10 %), and raising the share keeps every job that was already in the canary in
-- it (the buckets below the old share are below the new one).
--
-- Cost: nothing for steps with a fixed prompt version (they never call resolve_prompt). A step naming a label makes
-- one call per attempt: a primary-key probe of job_prompts, and on the first attempt of the job one probe of
-- prompt_labels and one insert.

-- ==================== tables ====================================================================================

-- Who created a version from SQL, GraphQL or the CLI (create_prompt_version); null for versions defined in code.
alter table ballast_private.prompts add column created_by text;

create table ballast_private.prompt_labels (
  prompt_name text not null,
  label text not null,
  version integer not null,
  canary_version integer,
  canary_share float8,
  updated_by text,
  updated_at timestamptz not null default ballast.now(),
  constraint prompt_labels_pkey primary key (prompt_name, label),
  constraint prompt_label_format check (label ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  constraint prompt_label_version_fkey foreign key (prompt_name, version) references ballast_private.prompts (name, version),
  constraint prompt_label_canary_fkey foreign key (prompt_name, canary_version) references ballast_private.prompts (name, version),
  constraint prompt_canary_whole check ((canary_version is null) = (canary_share is null)),
  constraint prompt_canary_share_range check (canary_share > 0 and canary_share <= 1),
  constraint prompt_canary_differs check (canary_version <> version)
);
comment on table ballast_private.prompt_labels is 'Prompt labels (0041): (name, label) -> version, with an optional canary version and share.';

create table ballast_private.prompt_label_history (
  id bigint generated always as identity primary key,
  prompt_name text not null,
  label text not null,
  -- set (the label moved or was created), canary (a canary set or changed), clear_canary (a canary ended).
  action text not null,
  from_version integer,
  to_version integer,
  -- The canary after the action (null: none); for clear_canary, the one that ended.
  canary_version integer,
  canary_share float8,
  actor text,
  reason text not null,
  at timestamptz not null default ballast.now(),
  constraint prompt_label_action_known check (action in ('set', 'canary', 'clear_canary'))
);
create index prompt_label_history_label_idx on ballast_private.prompt_label_history (prompt_name, label, id);
comment on table ballast_private.prompt_label_history is 'Every move of a prompt label or canary (0041), append-only.';

create function ballast_private.prompt_label_history_append_only() returns trigger
language plpgsql
as $fn$
begin
  raise exception using errcode = 'BA009',
    message = format('ballast.prompt_label_history is append-only: %s is not allowed', lower(tg_op)),
    hint = 'The history keeps every label and canary move; a new move is a new row.';
end
$fn$;
create trigger append_only before update or delete on ballast_private.prompt_label_history
  for each row execute function ballast_private.prompt_label_history_append_only();

create table ballast_private.job_prompts (
  job_id bigint not null,
  prompt_name text not null,
  label text not null,
  version integer not null,
  -- stable: the label's version; canary: the canary's candidate.
  arm text not null,
  pinned_at timestamptz not null default ballast.now(),
  constraint job_prompts_pkey primary key (job_id, prompt_name, label),
  constraint job_prompts_job_fkey foreign key (job_id) references ballast_private.jobs (id) on delete cascade,
  constraint job_prompts_version_fkey foreign key (prompt_name, version) references ballast_private.prompts (name, version),
  constraint job_prompt_arm_known check (arm in ('stable', 'canary'))
);
-- prompt_arms reads the pins of one name and label since a time.
create index job_prompts_label_idx on ballast_private.job_prompts (prompt_name, label, pinned_at);
alter table ballast_private.job_prompts enable row level security;
create policy tenant_rows on ballast_private.job_prompts for select
  using ((select ballast_private.caller_unrestricted()) or job_id in (select j.id from ballast_private.jobs j));
comment on table ballast_private.job_prompts is 'The prompt version each job got for a label (0041): pinned at its first resolution, used by every later step, retry and replay.';

-- ==================== helpers ===================================================================================

-- The canary bucket of a job for a prompt name: a number in [0, 1) from the first 32 bits of sha256(job:name).
-- The job is in the canary when its bucket is below the share.
create function ballast_private.prompt_bucket(p_job_id bigint, p_name text) returns float8
language sql immutable parallel safe
as $fn$
  select ('x' || substr(encode(sha256(convert_to(p_job_id::text || ':' || p_name, 'UTF8')), 'hex'), 1, 8))::bit(32)::bigint
         / 4294967296.0::float8
$fn$;

-- Raises BA002 naming the field unless p_name and p_label are well-formed (p_with_label false: the name alone).
create function ballast_private.check_prompt_label_args(p_name text, p_label text, p_with_label boolean default true) returns void
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

-- Raises BA002 naming p_field unless p_name@p_version is a registered prompt version.
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

-- ==================== verbs =====================================================================================

-- create_prompt_version(name, system, user, actor) -> (version, content_hash, created)
-- Adds the next version of a prompt (1 for a new name) with these templates; versions are immutable. Creating the
-- same templates as the newest version again returns that version (created = false), so a retried call does not
-- add a copy. Concurrent calls for one name take turns (a transaction-scoped advisory lock on the name). Raises
-- BA002 for a bad name or an empty user template. Operators.
create function ballast.create_prompt_version(p_name text, p_system text, p_user text, p_actor text default null)
returns table(version integer, content_hash text, created boolean)
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

-- set_prompt_label(name, label, version, reason, actor) -> the label's row
-- Points a label at a version (creating the label), audited in prompt_label_history with the version it pointed at
-- before. Moving the label to the canary's candidate promotes it: the canary ends (recorded in the same row).
-- Moving it elsewhere keeps the canary. Setting the version it already has is recorded too (a statement that the
-- label is right). Serialised per label by a transaction-scoped advisory lock, so from/to in the history are exact
-- under concurrent moves. Raises BA002 for a bad name or label, an unknown version, or an empty reason. Operators.
create function ballast.set_prompt_label(p_name text, p_label text, p_version integer, p_reason text, p_actor text default null)
returns table(prompt_name text, label text, version integer, canary_version integer, canary_share float8)
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

-- set_prompt_canary(name, label, candidate_version, share, reason, actor) -> the label's row
-- Sends `share` (more than 0, at most 1) of the label's new jobs to the candidate version; jobs already pinned keep
-- their version. Audited. Raises BA002 for a bad name or label, a label that does not exist yet, an unknown
-- candidate, a candidate equal to the label's version, a share out of range or an empty reason. Operators.
create function ballast.set_prompt_canary(p_name text, p_label text, p_candidate_version integer, p_share float8,
                                          p_reason text, p_actor text default null)
returns table(prompt_name text, label text, version integer, canary_version integer, canary_share float8)
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

-- clear_prompt_canary(name, label, reason, actor) -> whether a canary was in force
-- Ends the label's canary: new jobs get the label's version; jobs pinned to the candidate keep it. Audited when
-- there was one. Raises BA002 for a bad name or label or an empty reason. Operators.
create function ballast.clear_prompt_canary(p_name text, p_label text, p_reason text, p_actor text default null)
returns boolean
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

-- resolve_prompt(job_id, name, label) -> (version, template, content_hash, arm, pinned_at)
-- The prompt version job `job_id` uses for `name` under `label`: the one pinned for it, else the label's version or,
-- when the job's bucket (prompt_bucket) is below the canary's share, the canary's candidate, pinned now. Called by
-- the worker before a model step that names a label; every later step, retry and replay of the job gets the same
-- row. Race-safe: concurrent steps of one job both insert with on conflict do nothing, then read the row that won
-- (the second insert waits for the first to commit, and the read after it is a new statement: it sees it).
-- Raises BA007 for an unknown job, BA002 for a bad name or label or a label that does not exist. Operators (workers
-- run as the owner).
create function ballast.resolve_prompt(p_job_id bigint, p_name text, p_label text)
returns table(version integer, template jsonb, content_hash text, arm text, pinned_at timestamptz)
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

-- ==================== views =====================================================================================

create view ballast.prompt_labels with (security_invoker = true) as
  select l.prompt_name, l.label, l.version, l.canary_version, l.canary_share, l.updated_by, l.updated_at
    from ballast_private.prompt_labels l;
comment on view ballast.prompt_labels is 'Prompt labels: the version each (prompt, label) points at, and its canary if one is in force.';
comment on column ballast.prompt_labels.prompt_name is 'The prompt.';
comment on column ballast.prompt_labels.label is 'The label, e.g. production or staging.';
comment on column ballast.prompt_labels.version is 'The version new jobs get (outside the canary).';
comment on column ballast.prompt_labels.canary_version is 'The candidate version of a canary in force; null: no canary.';
comment on column ballast.prompt_labels.canary_share is 'The fraction of new jobs that get the candidate (more than 0, at most 1); null: no canary.';
comment on column ballast.prompt_labels.updated_by is 'Who moved the label or its canary last.';
comment on column ballast.prompt_labels.updated_at is 'When.';

create view ballast.prompt_label_history with (security_invoker = true) as
  select h.id, h.prompt_name, h.label, h.action, h.from_version, h.to_version, h.canary_version, h.canary_share, h.actor,
         h.reason, h.at
    from ballast_private.prompt_label_history h;
comment on view ballast.prompt_label_history is 'Every move of a prompt label or canary, oldest first by id (append-only).';
comment on column ballast.prompt_label_history.id is 'Its position in the history (ascending).';
comment on column ballast.prompt_label_history.prompt_name is 'The prompt.';
comment on column ballast.prompt_label_history.label is 'The label.';
comment on column ballast.prompt_label_history.action is 'set (the label moved or was created), canary (a canary set or changed) or clear_canary.';
comment on column ballast.prompt_label_history.from_version is 'The version the label pointed at before; null when the label was created.';
comment on column ballast.prompt_label_history.to_version is 'The version it points at after.';
comment on column ballast.prompt_label_history.canary_version is 'The canary candidate after the move (for clear_canary: the one that ended); null: none.';
comment on column ballast.prompt_label_history.canary_share is 'Its share of new jobs.';
comment on column ballast.prompt_label_history.actor is 'Who did it.';
comment on column ballast.prompt_label_history.reason is 'Why, as given.';
comment on column ballast.prompt_label_history.at is 'When.';

create view ballast.job_prompts with (security_invoker = true) as
  select jp.job_id, j.tenant_id, jp.prompt_name, jp.label, jp.version, jp.arm, jp.pinned_at
    from ballast_private.job_prompts jp join ballast_private.jobs j on j.id = jp.job_id;
comment on view ballast.job_prompts is 'The prompt version each job got for a label, pinned at its first model step: its later steps, retries and replays use it.';
comment on column ballast.job_prompts.job_id is 'The job.';
comment on column ballast.job_prompts.tenant_id is 'Its tenant.';
comment on column ballast.job_prompts.prompt_name is 'The prompt.';
comment on column ballast.job_prompts.label is 'The label its steps named.';
comment on column ballast.job_prompts.version is 'The version it got (model_calls.prompt_version of its calls).';
comment on column ballast.job_prompts.arm is 'stable (the label''s version) or canary (the canary''s candidate).';
comment on column ballast.job_prompts.pinned_at is 'When the version was chosen.';

create trigger refuse_write instead of insert or update or delete on ballast.prompt_labels
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.prompt_label_history
  for each row execute function ballast_private.refuse_view_write();
create trigger refuse_write instead of insert or update or delete on ballast.job_prompts
  for each row execute function ballast_private.refuse_view_write();

-- ==================== reporting =================================================================================

-- prompt_arms(name, label, since) -> one row per version and arm of the label's traffic: the jobs pinned since
-- `since` (default: 7 days before ballast.now()), their model attempts with that prompt version and how the
-- contract ladder ended them (first-pass validity, fallback, review, rejection and degraded rates over the attempts
-- with an outcome), the mean quality score and latency of their calls (calls skipped for a cooldown or budget left
-- out), their cost, and the cost per accepted output (valid_first_try, repaired or fell_back). Rates are null
-- without attempts. Row-level security applies (a client sees its tenant's jobs). Raises BA002 for a bad name or
-- label.
create function ballast.prompt_arms(p_name text, p_label text default 'production', p_since timestamptz default null)
returns table(prompt_name text, label text, version integer, arm text, jobs bigint, attempts bigint,
              first_pass_rate numeric, fallback_rate numeric, review_rate numeric, rejection_rate numeric,
              degraded_rate numeric, mean_score numeric, calls bigint, cost_usd numeric, cost_per_success numeric,
              mean_latency_ms numeric, p95_latency_ms numeric)
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

-- ==================== privileges ================================================================================

grant select on ballast_private.prompt_labels, ballast_private.prompt_label_history to ballast_operator, ballast_reporter;
grant select on ballast_private.job_prompts to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast.prompt_labels, ballast.prompt_label_history to ballast_operator, ballast_reporter;
grant select on ballast.job_prompts to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.check_prompt_label_args(text, text, boolean) to ballast_client, ballast_operator, ballast_reporter;
grant execute on function ballast_private.check_prompt_version(text, text, integer) to ballast_operator;
grant execute on function ballast_private.prompt_bucket(bigint, text) to ballast_operator, ballast_reporter;
grant execute on function ballast.create_prompt_version(text, text, text, text) to ballast_operator;
grant execute on function ballast.set_prompt_label(text, text, integer, text, text) to ballast_operator;
grant execute on function ballast.set_prompt_canary(text, text, integer, float8, text, text) to ballast_operator;
grant execute on function ballast.clear_prompt_canary(text, text, text, text) to ballast_operator;
grant execute on function ballast.resolve_prompt(bigint, text, text) to ballast_operator;
grant execute on function ballast.prompt_arms(text, text, timestamptz) to ballast_client, ballast_operator, ballast_reporter;
