-- Up Migration
--
-- 0025: events get a total order that a live reader and a resuming reader see alike (issue 12, item 1).
--
-- Event ids come from a sequence when a row is inserted, but transactions commit in another order: a worker's batch
-- can take ids 100..120 and commit after another batch that took 121..130. A live reader that delivered 121..130 and
-- then 100..120 gave a client `after: 130` as its last id, and a resume "after 130" skipped 100..120 for ever.
--
-- The order now is (tx, id): tx is the id of the transaction that wrote the event (pg_current_xact_id(), the
-- top-level transaction even inside a subtransaction), id breaks ties within it. An event is *final* once its tx is
-- below the watermark pg_snapshot_xmin(pg_current_snapshot()), the oldest transaction still in progress: every
-- transaction below it has committed or rolled back, so no event can appear later before a final one. Readers
-- deliver only final events, in (tx, id) order, and remember the position of the last one; a resume from any event
-- returns exactly what followed it. The price: an event waits until every writing transaction that started before
-- its own has ended (a few ms for the engine's own transactions; a long-running write holds live updates back,
-- see docs/live-updates.md and ballast.oldest_transactions()).
--
-- Existing events keep tx = 1 (older than every real transaction, in id order among themselves: the add column
-- stores the constant without rewriting the table); new rows take the writer's transaction id.
--
-- Cost on the hot path: one more index entry per event (events_tx_idx), about 3.3 per step.
--
-- tx stays out of the view ballast.events (PostGraphile has no codec for xid8, and the order is read through
-- ballast.events_after); readers that need it read ballast_private.events, whose row-level security policies are the
-- view's (0010), so a tenant-bound role sees only its tenant's rows either way.

alter table ballast_private.events add column tx xid8 not null default '1'::xid8;
alter table ballast_private.events alter column tx set default pg_current_xact_id();
comment on column ballast_private.events.tx is
  'The writing transaction (pg_current_xact_id()). Events are delivered in (tx, id) order once tx is below pg_snapshot_xmin(pg_current_snapshot()).';

create index events_tx_idx on ballast_private.events (tx, id);


-- ballast.events_after(after, tenant_id, job_id, limit): the events that followed event `after` in delivery order
-- ((tx, id), see above), final ones only, at most `limit` (default 1000); of one tenant and/or one job when given.
-- `after` 0 (or null) starts from the first event. What a live subscriber receives after `after` is exactly this
-- sequence (and what comes after it). Each row carries the event with its job's tenant and its step's name, and
-- `watermark`, the transaction below which events were final when this ran (tx and watermark as bigint).
-- Reads under the caller's role: row-level security hides other tenants' events, so an `after` the caller cannot
-- see is unknown. Raises BA007 (not_found) when `after` names no event the caller can see (never written, another
-- tenant's, or pruned by retention): read the current state instead and follow from there.
create function ballast.events_after(p_after bigint, p_tenant_id text default null, p_job_id bigint default null,
                                     p_limit integer default 1000)
returns table (id bigint, tx bigint, job_id bigint, step_id bigint, tenant_id text, step_name text, type text,
               status text, at timestamptz, watermark bigint)
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

grant execute on function ballast.events_after(bigint, text, bigint, integer)
  to ballast_client, ballast_operator, ballast_reporter;
