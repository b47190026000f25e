-- Up Migration
--
-- 0017: side effects with an honest promise (issue 11, item 6).
--
-- Why. effect(key, fn) ran fn and then recorded its result (ballast.record_effect, 0005). A process that died between
-- the two left no trace: the next attempt ran fn again without knowing it may already have happened. Under a SIGKILL
-- storm about 1% of effects ran twice. An effect outside Postgres cannot be made exactly-once by a ledger in
-- Postgres; what ballast can do is say so, and give fn what it needs to be idempotent on the other side. An effect
-- inside the same Postgres can be exactly-once: its SQL and its ledger row commit in one transaction.
--
-- What.
--   ballast_private.effect_intents   one row per (step, key, attempt) that started an effect: written before fn
--                                    runs, so a crash between fn and its record leaves evidence. The ledger of
--                                    completed effects stays ballast_private.effects (0001), unchanged in meaning:
--                                    the claim functions still hand its rows to retried attempts as key -> result.
--   ballast.effect_intents           the read view: every start, and whether the effect was recorded.
--   ballast.begin_effect             records the intent (fenced) and says whether the effect is already done, and
--                                    whether earlier attempts started it without recording it.
--   ballast.begin_transactional_effect
--                                    inside the caller's transaction: locks the step, fences the attempt, and
--                                    returns the recorded result if any. The caller then runs its SQL and
--                                    ballast.record_effect in the same transaction and commits.
--
-- Lock order: both verbs lock only the step row (ballast_private.running_attempt), like record_effect; a
-- transactional effect holds that lock until its transaction ends, so every verb that ends an attempt (complete,
-- fail, release, reap, cancel) waits for it or skips the step (the reaper's SKIP LOCKED) meanwhile: the attempt
-- cannot lose its step between the fence and the commit.

create table ballast_private.effect_intents (
  step_id bigint not null references ballast_private.steps (id) on delete cascade,
  key text not null
    constraint effect_intent_key_format check (key <> '' and length(key) <= 500),
  attempt_id bigint not null references ballast_private.attempts (id) on delete cascade,
  started_at timestamptz not null default ballast.now(),
  primary key (step_id, key, attempt_id)
);

comment on table ballast_private.effect_intents is
  'Effects started (ballast.begin_effect) before fn ran: one row per step, key and attempt. An intent without a row '
  'in ballast_private.effects for the same step and key is an effect that may or may not have happened.';

alter table ballast_private.effect_intents enable row level security;
create policy tenant_rows on ballast_private.effect_intents for select
  using ((select ballast_private.caller_unrestricted()) or step_id in (select s.id from ballast_private.steps s));

-- Every start of an effect, and whether it was recorded: `select * from ballast.effect_intents where not recorded`
-- lists the effects that may have happened without ballast knowing their result.
create view ballast.effect_intents with (security_invoker = true) as
select i.step_id, s.job_id, i.key, i.attempt_id, a.number as attempt_number, i.started_at,
       exists (select 1 from ballast_private.effects e where e.step_id = i.step_id and e.key = i.key) as recorded
  from ballast_private.effect_intents i
  join ballast_private.steps s on s.id = i.step_id
  join ballast_private.attempts a on a.id = i.attempt_id;

create trigger refuse_write instead of insert or update or delete on ballast.effect_intents
  for each row execute function ballast_private.refuse_view_write();

-- check_effect_key(key): raises BA002 unless key is 1 to 500 characters (the ledger's own check, with a hint).
create function ballast_private.check_effect_key(p_key text) returns void
language plpgsql
as $fn$
begin
  if p_key is null or p_key = '' or length(p_key) > 500 then
    perform ballast_private.bad_argument('key', 'must be 1 to 500 characters',
      'Name the effect after what it does and to whom, e.g. ''email:welcome:user-42''.');
  end if;
end
$fn$;

-- begin_effect(attempt_id, key) -> (done, result, earlier_attempts, idempotency_key)
-- Called by effect(key, fn) before fn runs. When the step already recorded `key` (ballast_private.effects), returns
-- done = true with the recorded result: the caller returns it and does not run fn. Otherwise records the intent
-- (step, key, attempt; a second call by the same attempt is a no-op, so a retry after a lost connection is safe) and
-- returns done = false. earlier_attempts counts the other attempts of the step that started this effect and did not
-- record it: each of them ran fn, or began to, and never recorded a result (crashed, lost its step, or fn threw),
-- so with done = false the effect may already have happened. idempotency_key is 'ballast:<job id>:<step name>:<key>', the same for every attempt (for
-- an item of a map step, the item's step name): pass it to the external API.
-- Raises BA002 for a key that is empty or over 500 characters, BA007/BA008 as ballast_private.running_attempt (an
-- attempt that lost its step starts nothing). Locks only the step row (running_attempt), as record_effect does.
create function ballast.begin_effect(p_attempt_id bigint, p_key text)
returns table (done boolean, result jsonb, earlier_attempts integer, idempotency_key text)
language plpgsql
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

-- begin_transactional_effect(attempt_id, key) -> (done, result)
-- The first statement of a transactional effect, inside the caller's transaction (BEGIN ... COMMIT on one
-- connection): locks the step row and checks that the attempt still owns the step (ballast_private.running_attempt:
-- BA007/BA008), then returns done = true with the recorded result when the step already recorded `key`. Otherwise
-- (done = false) the caller runs its own SQL, then ballast.record_effect(attempt_id, key, result), then commits: the
-- SQL and the ledger row commit together or not at all, so the effect happens exactly once. The step lock is held
-- to the end of the transaction: the attempt cannot be reclaimed, completed or cancelled in between (those verbs
-- wait, the reaper skips the step), so keep the transaction short. Called outside a transaction block the lock ends
-- with the statement and the fence means nothing.
-- Raises BA002 for a key that is empty or over 500 characters.
create function ballast.begin_transactional_effect(p_attempt_id bigint, p_key text)
returns table (done boolean, result jsonb)
language plpgsql
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

-- Workers run as the owner of the schemas; readers see the new view like ballast.effects.
revoke execute on all functions in schema ballast, ballast_private from public;
grant select on ballast_private.effect_intents to ballast_client, ballast_operator, ballast_reporter;
grant select on ballast.effect_intents to ballast_client, ballast_operator, ballast_reporter;
