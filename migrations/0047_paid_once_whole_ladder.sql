-- Up Migration
-- Paid once, the whole ladder (issue 16, item 6): a step's earlier answers that failed the contract are reused too.
--
-- What: ballast.reusable_model_call also returns, for the same step only, a stored answer whose content failed
-- (error class schema, unparsable, truncated or refusal: the provider answered, 2xx, and billed it). The worker checks
-- it again, finds the same failure and moves down the ladder as the first attempt did: a re-ask sends the same
-- messages (the bad answer and the problems listed), so its request key is the stored re-ask's, and that answer is
-- reused in turn; a fallback model likewise. The cross-job cache still reuses only answers that passed the contract
-- (another job may well get a good answer; a cache of bad ones would only spread them).
--
-- Why: with 0042 alone, an attempt whose first answer violated the contract and whose re-ask succeeded, then died
-- (SIGKILL) or threw after the call, paid for the first answer again on retry: the retry asked the model afresh,
-- got a new answer (paid), and re-asked again if that one failed too. Content failures move an attempt down the
-- ladder and never retry the step by themselves, so a retry after them only happens for a crash, a throw or a
-- transport failure further down: replaying the stored chain is what was already paid for. A replay with
-- p_fresh_calls (or a changed prompt, which changes the key) still asks afresh.
--
-- Cost: none added: the same single index probe (model_calls_request_key covers every complete original answer).

create or replace function ballast.reusable_model_call(p_attempt_id bigint, p_request_key text)
returns table(call_id bigint, reuse_kind text, raw_output text, finish_reason_raw text, finish_reason text,
              returned_model text, provider_kind text, cost_usd numeric)
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
