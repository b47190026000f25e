-- Up Migration
-- The arms of a prompt canary compared on production traffic (issue 16, item 5's last clause: "the comparison of
-- item 2 works on production traffic split that way"). 0041 split a label's jobs into a stable arm (the label's
-- version) and a canary arm (the candidate) and summarised each (prompt_arms); this puts the two arms side by side in
-- one row, with the deltas, their 95 % intervals and a verdict a CI job or an operator can act on, like
-- eval_run_comparison (0044) does for two eval runs.
--
-- Map:
--   ballast.compare_prompt_arms(name, label, since, until, threshold, min_samples, resamples)
--                                               one row: candidate (canary arm) against base (stable arm).
--   ballast_private.bootstrap_mean_delta_ci     95 % bootstrap interval of mean(candidate) - mean(base) for two
--                                               independent samples (each resampled on its own), deterministic.
--   ballast_private.rate_delta_ci               95 % interval of a difference of two proportions (Newcombe's hybrid
--                                               score interval, from each arm's Wilson interval).
--
-- Why unpaired: an eval run scores the same cases twice, so 0044 resamples paired deltas. The arms of a canary see
-- different jobs, so each arm is resampled on its own and the interval is that of the difference of the means.
-- Why hashes and not random(): as in 0044, the i-th draw of resample r is picked by hashtextextended of
-- (arm, r, i), so the same traffic gives the same interval on every call and a CI gate does not flap.
-- Why Newcombe for rates: a first-pass rate is often 1.0 in the stable arm, where the normal approximation's
-- interval has no width and calls any dip in the candidate significant; Wilson-based intervals stay honest at 0 and 1.
--
-- Cost: nothing for plain steps or model calls (no trigger, no index). A comparison reads the label's pins in the
-- window (index job_prompts_label_idx), their attempts and calls. The bootstrap makes resamples x (scored calls of
-- both arms) hash lookups: measured on the shared 2-core machine, 1,000 resamples over 200 scores take ~0.1 s, over
-- 2,000 scores ~0.5 s, linear beyond; lower p_resamples (or the window) for arms with tens of thousands of calls.

-- bootstrap_mean_delta_ci(base, candidate, resamples, seed) -> (ci_low, ci_high): the 2.5th and 97.5th percentiles
-- of mean(candidate resample) - mean(base resample) over `resamples` resamples, each arm resampled with replacement
-- to its own size. Draw i of resample r of an arm is element 1 + |hashtextextended(arm:r:i, seed)| mod n of that
-- arm's array, so the result depends only on the arrays (in their order), resamples and seed. Nulls when either
-- array is empty. Raises nothing.
create function ballast_private.bootstrap_mean_delta_ci(p_base float8[], p_candidate float8[], p_resamples integer,
                                                        p_seed bigint default 46)
returns table(ci_low float8, ci_high float8)
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

-- rate_delta_ci(base_k, base_n, candidate_k, candidate_n) -> (ci_low, ci_high): the 95 % interval of
-- candidate_k/candidate_n - base_k/base_n by Newcombe's hybrid score method: with each rate's Wilson interval
-- [l, u], low = d - sqrt((p_k - l_k)^2 + (u_b - p_b)^2) and high = d + sqrt((u_k - p_k)^2 + (p_b - l_b)^2).
-- No row when either n is 0. Raises nothing.
create function ballast_private.rate_delta_ci(p_base_k bigint, p_base_n bigint, p_candidate_k bigint, p_candidate_n bigint)
returns table(ci_low float8, ci_high float8)
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

-- compare_prompt_arms(name, label, since, until, threshold, min_samples, resamples) -> one row comparing the canary
-- arm (the candidate) with the stable arm (the base) of a label, over the jobs pinned under it in [since, until)
-- (defaults: 7 days before ballast.now(), and ballast.now()). Per arm: the versions it used (a label or canary that
-- moved in the window gives an arm several), jobs, attempts of their model steps with that version that have a
-- contract outcome, scored calls; the first-pass (valid_first_try), fallback (fell_back), review and rejection rates
-- of those attempts; the mean quality score of the calls (model_calls.score); cost per success (the calls' cost over
-- attempts accepted: valid_first_try, repaired or fell_back) and the calls' latency p50 and p95 (calls skipped for a
-- cooldown or budget left out, as in prompt_arms). Deltas are candidate minus base.
-- Intervals (95 %): the first-pass rate delta by Newcombe's method (rate_delta_ci); the score delta by a
-- deterministic bootstrap of the two independent samples (bootstrap_mean_delta_ci, `resamples` times, default 1000).
-- enough_data: both arms have at least `min_samples` attempts with an outcome (default 20).
-- The rule: regressed when enough_data and the candidate is worse beyond the threshold with 95 % confidence: the
-- score delta's interval lies entirely below -threshold (its high end < -threshold), or the first-pass rate delta's
-- does. It is eval_run_comparison's rule (the mean drop below -threshold) with the interval's high end in place of
-- the mean, since unpaired traffic has no case to call regressed; without enough data it is false.
-- Always one row: without traffic, counts are 0 and the rest null. Read as the caller (row-level security: rows of
-- jobs the caller cannot see are left out). Raises BA002 naming the parameter for a bad name or label, until not
-- after since, a threshold outside 0..1, min_samples below 1 or resamples outside 1..100000. Operators and reporters.
create function ballast.compare_prompt_arms(
  p_name text,
  p_label text default 'production',
  p_since timestamptz default null,
  p_until timestamptz default null,
  p_threshold numeric default 0,
  p_min_samples integer default 20,
  p_resamples integer default 1000
) returns table(
  prompt_name text, label text, since timestamptz, until timestamptz,
  base_versions integer[], candidate_versions integer[], base_jobs bigint, candidate_jobs bigint,
  base_attempts bigint, candidate_attempts bigint, base_scored_calls bigint, candidate_scored_calls bigint,
  base_first_pass_rate numeric, candidate_first_pass_rate numeric, first_pass_delta numeric,
  first_pass_delta_ci_low numeric, first_pass_delta_ci_high numeric,
  base_fallback_rate numeric, candidate_fallback_rate numeric, fallback_delta numeric,
  base_review_rate numeric, candidate_review_rate numeric, review_delta numeric,
  base_rejection_rate numeric, candidate_rejection_rate numeric, rejection_delta numeric,
  base_mean_score numeric, candidate_mean_score numeric, score_delta numeric, score_delta_ci_low numeric,
  score_delta_ci_high numeric,
  base_cost_per_success numeric, candidate_cost_per_success numeric, cost_per_success_delta numeric,
  base_latency_p50_ms numeric, candidate_latency_p50_ms numeric, latency_p50_delta_ms numeric,
  base_latency_p95_ms numeric, candidate_latency_p95_ms numeric, latency_p95_delta_ms numeric,
  enough_data boolean, regressed boolean)
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

grant execute on function ballast_private.bootstrap_mean_delta_ci(float8[], float8[], integer, bigint),
  ballast_private.rate_delta_ci(bigint, bigint, bigint, bigint) to ballast_operator, ballast_reporter;
grant execute on function ballast.compare_prompt_arms(text, text, timestamptz, timestamptz, numeric, integer, integer)
  to ballast_operator, ballast_reporter;
comment on function ballast.compare_prompt_arms(text, text, timestamptz, timestamptz, numeric, integer, integer) is
  'A prompt canary''s arms on production traffic in one row: candidate (canary) against base (stable): rates, score, cost and latency with deltas, 95 % intervals, enough_data and whether the candidate regressed. Operators and reporters.';
