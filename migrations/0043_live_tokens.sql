-- Up Migration
-- Live tokens (issue 16, item 7): a model step with `stream: true` streams its answer's text to GraphQL subscribers
-- (modelTokens) and to `ballast watch --tokens` while the call runs; a late subscriber gets what was streamed so far,
-- and a subscriber can resume from an offset.
--
-- What: ballast_private.token_chunks, an UNLOGGED table of the text streamed per step, in batches. Not the durable
-- record: the final output stays where it always was (steps.output, model_calls.raw_output). Unlogged, because a
-- batch of tokens is worth nothing after a crash of Postgres (an unlogged table is emptied by crash recovery) and its
-- writes skip the WAL. One row per flush of a worker (every ~100 ms or 2,000 characters of a running call, whichever
-- comes first), never one per token; each flush is one call of ballast_private.append_tokens: one INSERT and one
-- NOTIFY ballast_tokens {"step_id", "job_id"} (a hint; readers read the rows).
--
-- The token log of a step: its rows in `seq` order. `start_offset` / `end_offset` count characters (as Postgres
-- counts them) from the first character the step ever streamed, across calls and attempts, so one number says where
-- a reader is. A row starts a new segment (`first`) when a new call's text begins: a re-ask, a fallback model or a
-- new attempt; `attempt_id`, `segment` (the call's number in its attempt), `rung` and `model` say which. The end of an
-- attempt's streaming is a row with `done` and no text.
--
-- Pruning: ballast.prune_token_chunks deletes the log of a step whose last row is older than p_keep (a minute) once
-- the step is final, or older than p_max_age (an hour) whatever its status (a worker that died mid-stream). A worker
-- calls it p_keep after its last stream ended, and the retention service on each run: nothing here touches plain
-- steps, their claims or their settlements.

create unlogged table ballast_private.token_chunks (
  step_id bigint not null,
  seq bigint generated always as identity,
  job_id bigint not null,
  tenant_id text not null,
  attempt_id bigint not null,
  segment integer not null,
  rung text,
  model text,
  start_offset integer not null,
  end_offset integer not null,
  text text not null,
  first boolean not null default false,
  done boolean not null default false,
  at timestamptz not null default ballast.now(),
  constraint token_chunks_pkey primary key (step_id, seq),
  constraint token_chunk_offsets check (start_offset >= 0 and end_offset = start_offset + char_length(text)),
  constraint token_chunk_done_empty check (not done or text = '')
);
comment on table ballast_private.token_chunks is 'Live tokens (0043): the text model steps stream, batch by batch, until shortly after the step is final. Unlogged; not the durable record (steps.output, model_calls.raw_output).';
alter table ballast_private.token_chunks enable row level security;
create policy tenant_rows on ballast_private.token_chunks for select
  using ((select ballast_private.caller_unrestricted()) or tenant_id = (select ballast_private.caller_tenant()));
grant select on ballast_private.token_chunks to ballast_client, ballast_operator, ballast_reporter;

create view ballast.model_tokens with (security_invoker = true) as
select step_id, seq, job_id, tenant_id, attempt_id, segment, rung, model, start_offset, end_offset, text, first, done, at
  from ballast_private.token_chunks;
grant select on ballast.model_tokens to ballast_client, ballast_operator, ballast_reporter;
comment on view ballast.model_tokens is 'Live tokens: the text streaming model steps sent, in batches (seq order per step), kept until shortly after the step is final. The durable record is ballast.model_calls.raw_output.';
comment on column ballast.model_tokens.step_id is 'The model step that streamed.';
comment on column ballast.model_tokens.seq is 'The order of the batches (of one step: ascending).';
comment on column ballast.model_tokens.job_id is 'The job of that step.';
comment on column ballast.model_tokens.tenant_id is 'The tenant of that job.';
comment on column ballast.model_tokens.attempt_id is 'The attempt whose call streamed this text.';
comment on column ballast.model_tokens.segment is 'The call within that attempt, from 1 (a re-ask or a fallback model is a new call).';
comment on column ballast.model_tokens.rung is 'primary, reask or fallback (as in ballast.model_calls). Null on a done row.';
comment on column ballast.model_tokens.model is 'The model called (provider:model). Null on a done row.';
comment on column ballast.model_tokens.start_offset is 'Where the text starts in the step''s token log, in characters from the first one the step streamed.';
comment on column ballast.model_tokens.end_offset is 'start_offset plus the length of the text.';
comment on column ballast.model_tokens.text is 'The text of this batch (empty on a done row).';
comment on column ballast.model_tokens.first is 'True on the first batch of a call: the text before it belongs to another answer.';
comment on column ballast.model_tokens.done is 'True on the row that ends an attempt''s streaming.';
comment on column ballast.model_tokens.at is 'When the batch was written.';
create trigger refuse_write instead of insert or update or delete on ballast.model_tokens
  for each row execute function ballast_private.refuse_view_write();

-- append_tokens(attempt_id, segment, rung, model, text, first, done) -> the new end offset of the step's token log,
-- or null, writing nothing, when the attempt is no longer running (it lost its step: its late batches are dropped).
-- One flush of a worker's token stream: one INSERT and one NOTIFY ballast_tokens. The offset continues the step's
-- log (its last row's end; 0 for the first); only the attempt that owns the step writes, one flush at a time, so
-- reading the last row is enough (the primary key's order). Raises nothing of its own; locks nothing beyond the row
-- it inserts.
create function ballast_private.append_tokens(p_attempt_id bigint, p_segment integer, p_rung text, p_model text,
  p_text text, p_first boolean, p_done boolean) returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
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

-- prune_token_chunks(keep, max_age) -> rows deleted. Deletes the token log of every step whose last row is older
-- than p_keep and whose step is final (or gone), and of every step whose last row is older than p_max_age whatever
-- its status (a stream whose worker died). The token logs are small (a few hundred rows per streamed call) and the
-- table holds only recent ones, so the scan by step is cheap; runs outside every claim and settlement.
create function ballast.prune_token_chunks(p_keep interval default '1 minute', p_max_age interval default '1 hour')
returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
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
