-- Up Migration
-- Inbound webhooks (issue 17, item 1): endpoints configured in Postgres that submit a job per delivery, verified by
-- the API server per the Standard Webhooks specification. docs/webhooks.md is the user's page.
--
-- Map:
--   ballast_private.webhook_endpoints       path (unique), pipeline, tenant, secrets (several active at once, so a
--                                           secret can be rotated without a gap), input_path (where the job input
--                                           is in the body; null = the whole body), enabled.
--   ballast_private.webhook_refusals        append-only log of refused deliveries: when, path, webhook id, reason,
--                                           detail, remote address. Never the body or a secret.
--   ballast.set_webhook_endpoint / rotate_webhook_secret / remove_webhook_secret / delete_webhook_endpoint
--                                           the operator's verbs.
--   ballast.webhook_endpoints               the endpoints without their secrets (a count and sha256 fingerprints).
--   ballast.webhook_refusals                the refusal log.
--   ballast_private.webhook_endpoint_for    the server's lookup of one endpoint, secrets included (SECURITY DEFINER).
--   ballast_private.submit_webhook          derives the input and submits through ballast.submit_job with the
--                                           idempotency key 'webhook:' || path || ':' || webhook id.
--   ballast_private.refuse_webhook          appends a refusal row.
--
-- Why the key: a provider retries a delivery with the same webhook id, so its retries (even 50 at once) find the
-- same job (submit_job: same key and request = that job, created false); the same id with another input is a replay
-- and submit_job raises BA003. Verification (HMAC-SHA256 of id.timestamp.body, 5-minute tolerance, several
-- signatures, constant-time compare) is done by the server with the standardwebhooks library, not in SQL.
--
-- Cost: nothing for plain steps; one extra statement per delivery (the endpoint lookup).

create table ballast_private.webhook_endpoints (
  path text not null,
  pipeline text not null,
  tenant_id text not null default 'default',
  secrets text[] not null,
  input_path text[],
  enabled boolean not null default true,
  created_at timestamptz not null default ballast.now(),
  updated_at timestamptz not null default ballast.now(),
  constraint webhook_endpoints_pkey primary key (path),
  constraint webhook_endpoints_path_format check (path ~ '^[A-Za-z0-9._-]{1,200}$'),
  constraint webhook_endpoints_has_secret check (cardinality(secrets) >= 1)
);

create table ballast_private.webhook_refusals (
  id bigint generated always as identity,
  at timestamptz not null default ballast.now(),
  path text not null,
  webhook_id text,
  reason text not null,
  detail text,
  remote_address text,
  constraint webhook_refusals_pkey primary key (id),
  constraint webhook_refusals_reason check (reason in ('bad_signature', 'old_timestamp', 'missing_headers', 'replay',
    'invalid_input', 'too_large', 'unknown_endpoint', 'disabled', 'unknown_pipeline'))
);
create index webhook_refusals_at on ballast_private.webhook_refusals (at);

-- check_webhook_secret(secret): a Standard Webhooks secret is 'whsec_' then base64 of 24 to 64 bytes. BA002 otherwise.
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

-- ballast.set_webhook_endpoint(path, pipeline, secrets, input_path, tenant_id, enabled) -> the endpoint's path.
-- Creates or replaces the endpoint (secrets replaced too). path: 1-200 of [A-Za-z0-9._-], served at
-- POST /webhooks/<path>. input_path: keys into the JSON body (null = the whole body). BA002 on a bad argument,
-- BA004 when the pipeline is not registered. Operator only.
create function ballast.set_webhook_endpoint(
  p_path text, p_pipeline text, p_secrets text[], p_input_path text[] default null, p_tenant_id text default 'default',
  p_enabled boolean default true
) returns text
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

-- ballast.rotate_webhook_secret(path, secret) -> the number of active secrets. Adds a secret; the old ones stay
-- valid until removed with ballast.remove_webhook_secret. BA007 for an unknown endpoint, BA002 for a bad secret.
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

-- ballast.remove_webhook_secret(path, fingerprint) -> the number of active secrets left. fingerprint: as shown by
-- ballast.webhook_endpoints (or the secret itself). BA007 for an unknown endpoint or secret; BA002 when it is the
-- last one (an endpoint without a secret would accept nothing: delete it instead).
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

-- ballast.delete_webhook_endpoint(path) -> true when it existed. Refusals stay in the log.
create function ballast.delete_webhook_endpoint(p_path text) returns boolean
language sql volatile
as $fn$
  with d as (delete from ballast_private.webhook_endpoints where path = p_path returning 1)
  select exists (select 1 from d)
$fn$;

-- webhook_secret_fingerprint(secret): the first 12 hex digits of its sha256, enough to tell secrets apart.
create function ballast_private.webhook_secret_fingerprint(p_secret text) returns text
language sql immutable
as $fn$ select left(encode(sha256(convert_to(p_secret, 'UTF8')), 'hex'), 12) $fn$;

create view ballast.webhook_endpoints with (security_invoker = true) as
  select e.path, e.pipeline, e.tenant_id, cardinality(e.secrets) as secret_count,
         array(select ballast_private.webhook_secret_fingerprint(s) from unnest(e.secrets) with ordinality u(s, n) order by n)
           as secret_fingerprints,
         e.input_path, e.enabled, e.created_at, e.updated_at
    from ballast_private.webhook_endpoints e;

create view ballast.webhook_refusals with (security_invoker = true) as
  select r.id, r.at, r.path, r.webhook_id, r.reason, r.detail, r.remote_address from ballast_private.webhook_refusals r;

-- webhook_endpoint_for(path) -> the endpoint with its secrets, or no row. SECURITY DEFINER: the API server's login
-- reads secrets no view shows. Granted to ballast_operator (the server's login is a member of it).
create function ballast_private.webhook_endpoint_for(p_path text)
returns table (path text, pipeline text, tenant_id text, secrets text[], enabled boolean)
language sql stable security definer set search_path = pg_catalog, pg_temp
as $fn$
  select e.path, e.pipeline, e.tenant_id, e.secrets, e.enabled from ballast_private.webhook_endpoints e where e.path = p_path
$fn$;

-- submit_webhook(path, webhook_id, body) -> submit_job's row. The input is body #> input_path (the whole body when
-- null); the idempotency key 'webhook:' || path || ':' || webhook_id. Raises what submit_job raises: BA002 for an
-- input that fails the pipeline's contract (nothing written), BA003 for a replay (the id seen with another input),
-- BA007 when the endpoint is gone, BA002 when the input path finds nothing.
create function ballast_private.submit_webhook(p_path text, p_webhook_id text, p_body jsonb)
returns table (job_id bigint, created boolean, status text)
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

-- refuse_webhook(path, webhook_id, reason, detail, remote_address): appends a refusal row (reason: see the check).
create function ballast_private.refuse_webhook(p_path text, p_webhook_id text, p_reason text, p_detail text, p_remote text)
returns void
language sql volatile security definer set search_path = pg_catalog, pg_temp
as $fn$
  insert into ballast_private.webhook_refusals (path, webhook_id, reason, detail, remote_address)
  values (left(p_path, 200), left(p_webhook_id, 500), p_reason, left(p_detail, 2000), left(p_remote, 100))
$fn$;

grant select on ballast_private.webhook_refusals to ballast_operator, ballast_reporter;
grant select on ballast.webhook_refusals to ballast_operator, ballast_reporter;
grant select on ballast.webhook_endpoints to ballast_operator;
grant select (path, pipeline, tenant_id, secrets, input_path, enabled, created_at, updated_at)
  on ballast_private.webhook_endpoints to ballast_operator;
grant insert, update, delete on ballast_private.webhook_endpoints to ballast_operator;
grant execute on function ballast_private.check_webhook_secret(text) to ballast_operator;
grant execute on function ballast_private.webhook_secret_fingerprint(text) to ballast_operator, ballast_reporter;
grant execute on function ballast.set_webhook_endpoint(text, text, text[], text[], text, boolean) to ballast_operator;
grant execute on function ballast.rotate_webhook_secret(text, text) to ballast_operator;
grant execute on function ballast.remove_webhook_secret(text, text) to ballast_operator;
grant execute on function ballast.delete_webhook_endpoint(text) to ballast_operator;
grant execute on function ballast_private.webhook_endpoint_for(text) to ballast_operator;
grant execute on function ballast_private.submit_webhook(text, text, jsonb) to ballast_operator;
grant execute on function ballast_private.refuse_webhook(text, text, text, text, text) to ballast_operator;
