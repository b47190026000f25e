// What the eval pipeline's steps do (docs/evals.md), called by the eval kind (src/pipeline/kinds/eval.ts):
//   listCases     the `cases` step's first run: the run's cases become items (a scheduled job gets its run here);
//   runCase       one item: the target model step, with the run's prompt version and model, rendered with the
//                 case's variables and taken through the contract ladder (runModelLadder: traced, priced, budgeted,
//                 cooling down and retried like any model step, on this item's attempt), then scored and recorded;
//   summarizeRun  the `summary` step: the run's figures.
// A step that fails for good (every model rejected, a budget that fails) is a result with score 0 and its error, not
// a failed item; a transport failure is thrown, so the item is retried; a park (budget, cooldown) is passed on.
import { z } from 'zod';
import { runModelLadder } from '../model/ladder.ts';
import { Prompt, promptRef } from '../model/prompt.ts';
import type { ModelStepSpec } from '../model/spec.ts';
import { PermanentError } from '../errors.ts';
import type { EvalTargets } from '../pipeline/definition.ts';
import type { AttemptRun, StepEnd } from '../pipeline/protocol.ts';
import * as evals from '../db/evals.ts';
import { scoreCase } from './scorers.ts';

/** A prompt version as ballast.prompts stores it: registered again by the ladder with exactly that template. */
class StoredPrompt extends Prompt {
  readonly #stored: { system: string | null; user: string };
  constructor(name: string, version: number, stored: { system: string | null; user: string }) {
    super({ name, version, user: stored.user, ...(stored.system ? { system: stored.system } : {}) });
    this.#stored = stored;
  }

  override template(): { system: string | null; user: string } {
    return this.#stored;
  }
}

async function loadPrompt(a: AttemptRun, name: string, version: number, what: string): Promise<Prompt> {
  const stored = await evals.storedPrompt(a.db.pool, name, version);
  if (!stored) {
    throw new PermanentError(`${what} ${name}@${version} is not in ballast.prompts: register it (ballast.register_prompt) before the run`,
      { errorClass: 'eval', code: 'unknown_prompt' });
  }
  return new StoredPrompt(name, version, stored);
}

const JudgeVerdict = z.object({ score: z.number().min(0).max(1), reason: z.string() });

export async function listCases(a: AttemptRun): Promise<StepEnd> {
  const cases = await evals.evalRunCases(a.db.pool, a.ctx.jobId);
  a.ctx.log.info({ run_id: cases[0]?.runId, cases: cases.length }, 'eval run: cases listed');
  return { kind: 'items', items: cases.map((c) => ({ run_id: c.runId, case_id: c.caseId })) };
}

export async function summarizeRun(a: AttemptRun): Promise<StepEnd> {
  const runId = await evals.runOfJob(a.db.pool, a.ctx.jobId);
  if (!runId) throw new PermanentError(`job ${a.ctx.jobId} has no eval run`, { errorClass: 'eval', code: 'no_run' });
  return { kind: 'output', value: await evals.finishEvalRun(a.db.pool, runId) };
}

/** The target step's spec for this run and case: the run's prompt version and model, the case's variables, no review. */
async function targetSpec(a: AttemptRun, spec: ModelStepSpec<unknown>, data: evals.EvalItemData): Promise<ModelStepSpec<unknown>> {
  const { run } = data;
  const vars = data.case.input;
  // The step's prompt may be a version in code, a stored version or a label (prompts.md): the run names the version.
  const ref = promptRef(spec.prompt);
  const prompt = run.prompt_version !== null && !(ref instanceof Prompt && ref.version === run.prompt_version)
    ? await loadPrompt(a, ref.name, run.prompt_version, 'prompt') : spec.prompt;
  const own = spec.vars;
  return {
    ...spec, prompt, review: false,
    // A person is not asked during an eval: a failed quality check goes to the next model, then fails the case.
    ...(spec.quality ? { quality: { ...spec.quality, onFail: 'fallback' as const } } : {}),
    ...(run.model ? { model: run.model, fallbacks: [] } : {}),
    vars: own ? (ctx) => own({ ...ctx, input: vars.input, deps: vars.deps ?? {}, ...(Object.hasOwn(vars, 'item') ? { item: vars.item } : {}) }) : () => vars,
  };
}

export async function runCase(targets: EvalTargets, a: AttemptRun): Promise<StepEnd> {
  const { run_id: runId, case_id: caseId } = a.item!.value as { run_id: string; case_id: string };
  const data = await evals.evalItem(a.db.pool, runId, caseId);
  if (!data) throw new PermanentError(`eval run ${runId} or its case ${caseId} no longer exists`, { errorClass: 'eval', code: 'not_found' });
  const { run } = data;
  const target = targets.modelStep(run.pipeline, run.pipeline_version, run.step);
  if (!target) {
    throw new PermanentError(`this worker does not run model step "${run.step}" of ${run.pipeline}@${run.pipeline_version}: ` +
      'run evals on workers that define the pipelines they evaluate', { errorClass: 'eval', code: 'unknown_target' });
  }
  let output: unknown = null;
  let error: evals.EvalResultInput['error'] = null;
  try {
    const end = await runModelLadder(a, await targetSpec(a, target.spec, data));
    if (end.kind === 'settled') return end; // parked for a budget or a cooldown: the item runs again later
    output = end.kind === 'output' ? end.value : null;
  } catch (err) {
    if (!(err instanceof PermanentError)) throw err;
    error = { class: err.errorClass, ...(err.errorCode ? { code: err.errorCode } : {}), message: err.message };
  }
  const contract = await evals.attemptContract(a.db.pool, a.attemptId);
  let scored: { scores: Record<string, number | string>; score: number } = { scores: {}, score: 0 };
  try {
    if (!error) {
      scored = await scoreCase([...run.scorers, ...data.case.checks], {
        output, reference: data.case.reference ?? undefined, input: data.case.input, key: data.case.case_key, tags: data.case.tags,
        contract: target.output, functions: targets.scorers, judge: (s) => judge(a, s, data, output),
      });
    }
  } catch (err) {
    if (err instanceof JudgeParked) return err.end;
    throw err;
  }
  const passed = error === null && scored.score >= Number(run.threshold);
  await evals.recordEvalResult(a.db.pool, runId, caseId, a.attemptId, {
    output, scores: scored.scores, score: scored.score, passed, error,
    contract_outcome: contract.outcome, contract_detail: contract.detail,
  });
  a.ctx.log.info({ run_id: runId, case: data.case.case_key, score: scored.score, passed }, 'eval case scored');
  return { kind: 'output', value: { case_id: caseId, score: scored.score, passed } };
}

/** A judge scorer: its prompt (rendered with input, output and reference) through the ladder on this attempt. */
async function judge(a: AttemptRun, s: evals.ScorerSpec, data: evals.EvalItemData, output: unknown): Promise<{ score: number; reason: string }> {
  const prompt = await loadPrompt(a, s.prompt!, s.version!, 'judge prompt');
  const spec: ModelStepSpec<z.infer<typeof JudgeVerdict>> = {
    prompt, model: s.model!, output: JudgeVerdict, reasks: 1, maxOutputTokens: 512,
    vars: () => ({ ...data.case.input, output, reference: data.case.reference }),
  };
  const end = await runModelLadder(a, spec);
  if (end.kind === 'settled') throw new JudgeParked(end);
  if (end.kind !== 'output') throw new PermanentError(`the judge ${prompt.ref} gave no output`, { errorClass: 'eval', code: 'judge_failed' });
  return end.value as { score: number; reason: string };
}

/** The judge's ladder parked the attempt (a budget, a cooldown): the item runs again later; its step's answer is
 *  then reused from this attempt (paid once), not bought again. */
class JudgeParked extends Error {
  readonly end: StepEnd;
  constructor(end: Extract<StepEnd, { kind: 'settled' }>) {
    super(end.message);
    this.end = end;
  }
}
